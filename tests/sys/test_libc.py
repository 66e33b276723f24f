"""The namespace, capability and prctl bindings of ``engine.sys.libc``, against the kernel.

Calls that change the calling process (unshare, capset, pivot_root,
sethostname) run in a forked child that reports back through its exit
status, so the test process keeps its namespaces and capabilities.
"""

from __future__ import annotations

import errno
import os

import pytest

from engine.sys import libc
from engine.testing.procs import run_in_child

pytestmark = pytest.mark.root


def _status(field: str) -> str:
    with open("/proc/self/status") as fh:
        return next(line.split()[1] for line in fh if line.startswith(field + ":"))


def test_capget_matches_proc() -> None:
    sets = libc.capget()
    assert f"{sets.effective:016x}" == _status("CapEff")
    assert f"{sets.permitted:016x}" == _status("CapPrm")
    assert f"{sets.inheritable:016x}" == _status("CapInh")


def test_capset_and_bounding_set() -> None:
    mask = 0xA80425FB

    def body() -> None:
        for number in range(int(open("/proc/sys/kernel/cap_last_cap").read()) + 1):
            if not mask >> number & 1 and libc.prctl(libc.PR_CAPBSET_READ, number):
                libc.prctl(libc.PR_CAPBSET_DROP, number)
        libc.capset(mask, mask, mask)
        assert _status("CapEff") == f"{mask:016x}", _status("CapEff")
        assert _status("CapBnd") == f"{mask:016x}", _status("CapBnd")
        assert libc.prctl(libc.PR_CAPBSET_READ, 21) == 0  # CAP_SYS_ADMIN is gone
        try:
            libc.capset(mask | 1 << 21, mask | 1 << 21, 0)  # cannot raise what is no longer permitted
        except OSError as exc:
            assert exc.errno == errno.EPERM
        else:
            raise AssertionError("capset raised a dropped capability")

    run_in_child(body)


def test_no_new_privs() -> None:
    def body() -> None:
        assert libc.prctl(libc.PR_GET_NO_NEW_PRIVS) == 0
        libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
        assert libc.prctl(libc.PR_GET_NO_NEW_PRIVS) == 1

    run_in_child(body)


def test_prctl_errors_carry_errno() -> None:
    with pytest.raises(OSError) as info:
        libc.prctl(libc.PR_CAPBSET_READ, 999)
    assert info.value.errno == errno.EINVAL


def test_sethostname_in_new_uts_namespace() -> None:
    def body() -> None:
        libc.unshare(libc.CLONE_NEWUTS)
        libc.sethostname("libc-test")
        libc.setdomainname("example.test")
        assert os.uname().nodename == "libc-test"
        assert open("/proc/sys/kernel/domainname").read().strip() == "example.test"
        try:
            libc.sethostname("x" * 65)
        except OSError as exc:
            assert exc.errno == errno.EINVAL
        else:
            raise AssertionError("a 65-byte host name was accepted")

    host = os.uname().nodename
    run_in_child(body)
    assert os.uname().nodename == host


def test_pivot_root(tmp_path) -> None:
    new_root = str(tmp_path / "root")
    os.mkdir(new_root)

    def body() -> None:
        libc.unshare(libc.CLONE_NEWNS)
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_SLAVE)
        libc.mount("tmpfs", new_root, "tmpfs", 0, "size=1m")
        os.mkdir(os.path.join(new_root, "marker"))
        os.chdir(new_root)
        libc.pivot_root(".", ".")
        libc.umount2(".", libc.MNT_DETACH)
        os.chdir("/")
        assert os.listdir("/") == ["marker"], os.listdir("/")

    run_in_child(body)


def test_pivot_root_needs_a_mount_point(tmp_path) -> None:
    plain = str(tmp_path / "plain")
    os.mkdir(plain)

    def body() -> None:
        libc.unshare(libc.CLONE_NEWNS)
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
        try:
            libc.pivot_root(plain, plain)
        except OSError as exc:
            # pivot_root(2): EINVAL for a new_root that is no mount point, EBUSY
            # when it is on the current root's mount, which is checked first.
            assert exc.errno in (errno.EINVAL, errno.EBUSY), exc
        else:
            raise AssertionError("pivot_root onto a plain directory succeeded")

    run_in_child(body)
    assert libc.has_syscall("pivot_root")


@pytest.fixture
def v2_cgroup():
    """A fresh cgroup in this host's v2 hierarchy (a hybrid host's controller-less one too); removed after."""
    from engine.sys.cgroups import read_layout

    layout = read_layout()
    if layout.v2 is None:
        pytest.skip("no cgroup v2 hierarchy is mounted")
    path = os.path.join(layout.v2.mount_point, f"engine-test-clone3-{os.getpid()}")
    os.mkdir(path)
    try:
        yield path
    finally:
        os.rmdir(path)


def _v2_line() -> str:
    with open("/proc/self/cgroup") as fh:
        return next(line.strip() for line in fh if line.startswith("0::"))


def test_fork_into_cgroup_starts_the_child_there(v2_cgroup: str) -> None:
    name = os.path.basename(v2_cgroup)
    fd = os.open(v2_cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        pid = libc.fork_into_cgroup(fd)
        assert pid is not None  # this kernel has CLONE_INTO_CGROUP
        if pid == 0:
            os._exit(0 if _v2_line().endswith("/" + name) else 3)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not _v2_line().endswith("/" + name)  # the parent stays where it was
    not_a_cgroup = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with pytest.raises(OSError) as info:
            libc.fork_into_cgroup(not_a_cgroup)  # nothing forked
    finally:
        os.close(not_a_cgroup)
    assert info.value.errno == errno.EBADF


def test_exec_helper_without_clone_into_cgroup_joins_by_cgroup_procs(v2_cgroup: str, monkeypatch) -> None:
    """A kernel without CLONE_INTO_CGROUP (before 5.7): the helper joins the v2 cgroup itself, then forks."""
    from engine_exec_native import nsenter

    def unsupported(fd: int) -> None:
        return None  # what the call answers on a kernel without CLONE_INTO_CGROUP (not this one)

    def body() -> None:  # in a child: the helper's join moves the process
        monkeypatch.setattr(libc, "fork_into_cgroup", unsupported)
        v2 = nsenter.V2Cgroup(os.path.join(v2_cgroup, "cgroup.procs"))
        pid = v2.fork()
        if pid == 0:
            os._exit(0 if _v2_line().endswith("/" + os.path.basename(v2_cgroup)) else 3)
        v2.close()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0

    run_in_child(body)


@pytest.mark.parametrize("supported", [True, False])
def test_container_init_fork_is_born_in_the_v2_cgroup_where_it_can(v2_cgroup: str, monkeypatch, supported) -> None:
    """The native driver forks the init into the v2 cgroup, or says it did not (the driver then
    moves it by cgroup.procs, as on kernels before 5.7)."""
    from engine_exec_native import driver

    if not supported:

        def unsupported(fd: int) -> None:
            return None  # what the call answers on a kernel without CLONE_INTO_CGROUP (not this one)

        monkeypatch.setattr(libc, "fork_into_cgroup", unsupported)
    name = os.path.basename(v2_cgroup)
    pid, born_there = driver._fork_into(v2_cgroup)
    if pid == 0:
        os._exit(0 if _v2_line().endswith("/" + name) == supported else 3)
    _, status = os.waitpid(pid, 0)
    assert born_there is supported
    assert os.waitstatus_to_exitcode(status) == 0
