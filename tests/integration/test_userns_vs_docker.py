"""Issue 14 item 6: ``--userns-remap``, our daemon and dockerd 20.10 side by side.

Root in a remapped container is an unprivileged user of the host: a file it
creates in a bind mount belongs to the mapped user, ``/proc/self/uid_map``
shows the map, ``--userns=host`` opts out, ``--privileged`` is refused.

The subordinate IDs come from ``/etc/subuid`` and ``/etc/subgid``. The module
works on a copy of ``/etc`` bind-mounted over ``/etc`` in the test sandbox's
own mount namespace (so the host's files are never written, and
``--userns-remap default`` may create its ``dockremap`` user in the copy);
it is unmounted at the end. The map is ``nobody``'s: uids 200000-265535,
gids 300000-365535, values no process of the host uses.
"""

from __future__ import annotations

import grp
import io
import json
import os
import pwd
import shutil
import subprocess
import tarfile
import tempfile
from typing import Any

import pytest

from engine.sys import libc
from engine.sys.fs import safe_rmtree
from engine.testing import dockerd as reference
from engine.testing.daemon import DaemonProcess
from engine.testing.images import busybox_archive

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root("daemons"),
    pytest.mark.skipif(shutil.which("docker") is None, reason="needs docker"),
]

UID0, GID0 = 200000, 300000
NOBODY_GROUP = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
SPEC = f"nobody:{NOBODY_GROUP}"


@pytest.fixture(scope="module")
def etc(tmp_path_factory):
    """A copy of /etc with nobody's subordinate IDs, bind-mounted over /etc in the sandbox.

    Creates: the copy (removed afterwards) and the bind mount (unmounted afterwards).
    """
    if os.environ.get("ENGINE_TEST_SANDBOX") != "1":
        pytest.skip("needs the test sandbox's own mount namespace (the copy is mounted over /etc)")
    copy = str(tmp_path_factory.mktemp("etc") / "etc")
    shutil.copytree("/etc", copy, symlinks=True)
    with open(os.path.join(copy, "subuid"), "a") as fh:
        fh.write(f"nobody:{UID0}:65536\n")
    with open(os.path.join(copy, "subgid"), "a") as fh:
        fh.write(f"nobody:{GID0}:65536\n")
    libc.mount(copy, "/etc", None, libc.MS_BIND)
    try:
        yield copy
    finally:
        libc.umount2("/etc", libc.MNT_DETACH)
        shutil.rmtree(copy)


class Remapped:
    """A remapped daemon (ours or dockerd) and the docker CLI pointed at it."""

    def __init__(self, kind: str, workdir: str, spec: str = SPEC) -> None:
        self.kind = kind
        self.workdir = workdir
        if kind == "dockerd":
            self.process: Any = reference.ReferenceDockerd(os.path.join(workdir, "d"), args=("--userns-remap", spec))
        else:
            self.process = DaemonProcess(os.path.join(workdir, "e"), ["-s", "vfs", "--userns-remap", spec])
        self.process.start()
        self.config_dir = os.path.join(workdir, "docker-config")
        os.makedirs(self.config_dir, exist_ok=True)

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, DOCKER_CONFIG=self.config_dir, DOCKER_HOST=self.process.host)
        env.pop("DOCKER_API_VERSION", None)
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, env=env, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.kind}: docker {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc

    def load_busybox(self) -> None:
        archive = os.path.join(self.workdir, "busybox.tar")
        with open(archive, "wb") as fh:
            fh.write(busybox_archive())
        self.docker("load", "-i", archive)

    def stop(self) -> None:
        try:
            ids = self.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", "-v", *ids, check=False)
        finally:
            self.process.stop()


@pytest.fixture(scope="module", params=["engine", "dockerd"])
def daemon(request, etc, tmp_path_factory):
    """Our daemon or dockerd with ``--userns-remap nobody:<its group>``, busybox loaded.

    Creates: a work directory and the daemon's processes; every container is
    removed, the daemon stopped and the directory removed afterwards.
    """
    if request.param == "dockerd" and not reference.available():
        pytest.skip("dockerd is not installed")
    if request.param == "dockerd":
        # dockerd wants every directory above its root searchable by the remapped root (pytest's are 0700).
        workdir = tempfile.mkdtemp(prefix="userns-dockerd-", dir="/tmp")
        os.chmod(workdir, 0o711)
    else:
        workdir = str(tmp_path_factory.mktemp(f"userns-{request.param}"))
    d = Remapped(request.param, workdir)
    try:
        d.load_busybox()
        yield d
    finally:
        d.stop()
        safe_rmtree(workdir)


@pytest.fixture
def shared(daemon, tmp_path):
    """A directory every user may write, to bind into a container."""
    path = tmp_path / "shared"
    path.mkdir()
    path.chmod(0o777)
    return path


def test_root_in_the_container_is_the_mapped_user(daemon, shared):
    out = daemon.docker(
        "run", "--rm", "-v", f"{shared}:/x", "busybox", "sh", "-c", "id -u; touch /x/made; cat /proc/self/uid_map"
    ).stdout.split()
    assert out == ["0", "0", str(UID0), "65536"]
    st = os.stat(shared / "made")
    assert (st.st_uid, st.st_gid) == (UID0, GID0)


def test_userns_host_opts_out(daemon, shared):
    out = daemon.docker(
        "run",
        "--rm",
        "--userns=host",
        "-v",
        f"{shared}:/x",
        "busybox",
        "sh",
        "-c",
        "touch /x/host; cat /proc/self/uid_map",
    ).stdout.split()
    assert out == ["0", "0", "4294967295"]
    st = os.stat(shared / "host")
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_info_and_the_remapped_root(daemon):
    info = json.loads(daemon.docker("info", "--format", "{{json .}}").stdout)
    assert "name=userns" in info["SecurityOptions"]
    assert info["DockerRootDir"].endswith(f"/{UID0}.{GID0}")
    st = os.stat(info["DockerRootDir"])
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, GID0, 0o710)


def test_privileged_needs_the_host_namespace(daemon):
    proc = daemon.docker("run", "--rm", "--privileged", "busybox", "true", check=False)
    assert proc.returncode == 125
    assert "privileged mode is incompatible with user namespaces" in proc.stderr


def test_files_keep_the_containers_owners_in_and_out(daemon, tmp_path):
    """Image files are the container's root's; exec joins the namespace; cp, commit and export
    speak of the container's IDs, volumes belong to the mapped root."""
    name = f"userns-{daemon.kind}"
    daemon.docker("run", "-d", "--name", name, "-v", "uvol:/v", "busybox", "sleep", "300")
    try:
        out = daemon.docker("exec", name, "sh", "-c", "stat -c %u:%g /bin/busybox /root; cat /proc/self/uid_map")
        assert out.stdout.split() == ["0:0", "0:0", "0", str(UID0), "65536"]
        daemon.docker("exec", name, "sh", "-c", "touch /v/in-volume; mkdir /made; chown 7:8 /made")
        env = dict(os.environ, DOCKER_CONFIG=daemon.config_dir, DOCKER_HOST=daemon.process.host)
        copied = subprocess.run(["docker", "cp", f"{name}:/made", "-"], capture_output=True, env=env, timeout=60)
        with tarfile.open(fileobj=io.BytesIO(copied.stdout)) as tar:
            member = tar.getmember("made")
        # dockerd 20.10 sends the host's IDs out of a remapped container; ours the container's.
        expected = (7, 8) if daemon.kind == "engine" else (UID0 + 7, GID0 + 8)
        assert (member.uid, member.gid) == expected
        daemon.docker("commit", name, f"{name}-img")
        assert daemon.docker("run", "--rm", f"{name}-img", "stat", "-c", "%u:%g", "/made").stdout.strip() == "7:8"
        export = tmp_path / "export.tar"
        daemon.docker("export", "-o", str(export), name)
        listing = subprocess.run(["tar", "-tvf", str(export), "made", "bin/busybox"], capture_output=True, text=True)
        owners = sorted(line.split()[1] for line in listing.stdout.splitlines())
        assert owners == ["0/0", "7/8"], listing.stdout
        volume = json.loads(daemon.docker("volume", "inspect", "uvol").stdout)[0]["Mountpoint"]
        st = os.stat(os.path.join(volume, "in-volume"))
        assert (st.st_uid, st.st_gid) == (UID0, GID0)
    finally:
        daemon.docker("rm", "-f", "-v", name, check=False)
        daemon.docker("volume", "rm", "uvol", check=False)


def test_default_creates_dockremap(etc, tmp_path):
    """``--userns-remap default`` makes the dockremap user and its ranges (in the /etc copy)."""
    try:
        pwd.getpwnam("dockremap")
        pytest.skip("dockremap exists already")
    except KeyError:
        pass
    d = Remapped("engine", str(tmp_path), "default")
    try:
        entry = pwd.getpwnam("dockremap")
        with open(os.path.join(etc, "subuid")) as fh:
            ranges = [line.split(":") for line in fh.read().split()]
        start = next(int(r[1]) for r in ranges if r[0] == "dockremap")
        assert start >= 100000 and all(
            int(r[1]) + int(r[2]) <= start or start + 65536 <= int(r[1]) for r in ranges if r[0] != "dockremap"
        )
        d.load_busybox()
        out = d.docker("run", "--rm", "busybox", "cat", "/proc/self/uid_map").stdout.split()
        assert out == ["0", str(start), "65536"]
        assert entry.pw_shell == "/bin/false"
    finally:
        d.stop()
    with open("/proc/self/mountinfo") as fh:
        assert any(line.split()[4] == "/etc" for line in fh)  # still the copy: the host's /etc is untouched


def test_build_copies_and_runs_with_the_containers_owners(daemon, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "f").write_text("copied\n")
    (context / "Dockerfile").write_text(
        "FROM busybox\nCOPY f /f\nCOPY --chown=3:4 f /g\nRUN mkdir /r && chown 5:6 /r\n"
    )
    tag = f"userns-build-{daemon.kind}"
    env = dict(os.environ, DOCKER_CONFIG=daemon.config_dir, DOCKER_HOST=daemon.process.host, DOCKER_BUILDKIT="0")
    proc = subprocess.run(["docker", "build", "-q", "-t", tag, str(context)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    out = daemon.docker("run", "--rm", tag, "stat", "-c", "%u:%g", "/f", "/g", "/r").stdout.split()
    assert out == ["0:0", "3:4", "5:6"]
    daemon.docker("rmi", tag)


def test_root_binds_low_ports_in_its_own_network(daemon):
    # The network namespace is not the user namespace's own here (nor under dockerd with a
    # prepared netns): dockerd's net.ipv4.ip_unprivileged_port_start=0 is what lets root bind 80.
    script = "nc -l -p 80 & for i in $(seq 50); do netstat -ltn | grep -q ':80 ' && exit 0; sleep 0.1; done; exit 1"
    assert daemon.docker("run", "--rm", "busybox", "sh", "-c", script, check=False).returncode == 0
    kept = daemon.docker(
        "run",
        "--rm",
        "--sysctl",
        "net.ipv4.ip_unprivileged_port_start=1024",
        "busybox",
        "sh",
        "-c",
        script,
        check=False,
    )
    # Without it, root of our user namespace lacks CAP_NET_BIND_SERVICE over the host-owned network
    # namespace; runc makes dockerd's network namespace inside the user namespace.
    assert (kept.returncode == 0) == (daemon.kind == "dockerd")
