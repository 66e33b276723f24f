"""The aufs driver: the shared conformance suite, and everything of aufs' own that needs no aufs mount.

This kernel (like most today) has no aufs, so the conformance suite skips
with the probe's reason. Everything else runs for real on the file system as
root in the session sandbox: the layout, the layers files, the mount options,
the error of a real mount(2) without aufs, the native differ on the diff
directories (compared with the naive differ on materialized trees), the
probe's checks on real tmpfs and btrfs mounts. Only the aufs mount(2) and
umount2(2) themselves are replaced, in the reference counting tests, by
:class:`RecordingKernel`, because this kernel cannot make them.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from collections.abc import Iterator

import pytest

from engine import archive
from engine.archive import Change, ChangeKind
from engine.drivers.discovery import load_drivers
from engine.errors import (
    Conflict,
    HostError,
    IncompatibleFilesystem,
    InvalidParameter,
    NotFound,
    NotSupported,
    PrerequisitesNotMet,
)
from engine.sys import fs, libc, proc
from engine.testing.graphtest import GraphDriverConformance, new_id
from engine.testing.layertar import Entry, build_rich_tree, make_layer_tar, tree_listing, tree_manifest
from engine_graph_aufs import driver as aufs
from engine_graph_aufs.driver import AufsDriver, MountCall, mount_plan

pytestmark = pytest.mark.root("mounts, owners")

A, C, D = ChangeKind.ADD, ChangeKind.MODIFY, ChangeKind.DELETE

AUFS_HERE = aufs.aufs_supported()
needs_aufs = pytest.mark.skipif(not AUFS_HERE, reason=aufs.NOT_SUPPORTED_REASON)
without_aufs = pytest.mark.skipif(AUFS_HERE, reason="this kernel has aufs")


class TestAufsConformance(GraphDriverConformance):
    """The shared suite; on a kernel without aufs every test skips with the probe's reason."""

    driver_name = "aufs"


# --------------------------------------------------------------------------
# fixtures and helpers


class RecordingKernel:
    """Stands in for the aufs mount(2) and umount2(2) that this kernel cannot make: records the calls.

    ``mount_errors`` maps the index of a mount call (counted from 0 over the
    kernel's life) to the errno it fails with; ``unmount_errors`` lists the
    errnos the next unmount calls fail with.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, str]] = []
        self.mount_errors: dict[int, int] = {}
        self.unmount_errors: list[int] = []
        self._mounts = 0
        self._lock = threading.Lock()

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        with self._lock:
            assert (source, fstype) == ("none", "aufs")
            index, self._mounts = self._mounts, self._mounts + 1
            self.calls.append(("mount", target, flags, data))
            if index in self.mount_errors:
                code = self.mount_errors[index]
                raise OSError(code, os.strerror(code))

    def unmount(self, target: str, flags: int) -> None:
        with self._lock:
            self.calls.append(("unmount", target, flags, ""))
            if self.unmount_errors:
                code = self.unmount_errors.pop(0)
                raise OSError(code, os.strerror(code))

    def count(self, kind: str) -> int:
        return sum(1 for call in self.calls if call[0] == kind)


@pytest.fixture
def home(tmp_path) -> Iterator[str]:
    """``<tmp_path>/root/aufs``; everything below ``root`` is unmounted and removed afterwards."""
    yield str(tmp_path / "root" / "aufs")
    fs.safe_rmtree(str(tmp_path / "root"))


@pytest.fixture
def kernel() -> RecordingKernel:
    return RecordingKernel()


@pytest.fixture
def driver(home, kernel) -> Iterator[AufsDriver]:
    """An aufs driver on ``home`` whose mounts go to the recording kernel."""
    drv = AufsDriver(home, mount=kernel.mount, unmount=kernel.unmount)
    yield drv
    drv.cleanup()


@pytest.fixture
def real_driver(home) -> Iterator[AufsDriver]:
    """An aufs driver on ``home`` that mounts through the real mount(2)."""
    drv = AufsDriver(home)
    yield drv
    drv.cleanup()


def chain_of(driver: AufsDriver, depth: int) -> list[str]:
    """Create ``depth`` layers, each on the previous one; return their IDs, base first."""
    ids: list[str] = []
    for _ in range(depth):
        ids.append(new_id())
        driver.create(ids[-1], ids[-2] if len(ids) > 1 else None)
    return ids


def diff_dir(driver: AufsDriver, id: str) -> str:
    return os.path.join(driver.home, "diff", id)


def read_tar(stream) -> bytes:
    try:
        return stream.read()
    finally:
        stream.close()


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return list(tar)


def is_mount_point(path: str) -> bool:
    real = os.path.realpath(path)
    return any(m.mount_point == real for m in proc.mountinfo())


# --------------------------------------------------------------------------
# the entry point and the probe


def test_entry_point_and_summary():
    entry = load_drivers("graph")["aufs"]
    assert entry.cls is AufsDriver and entry.distribution == "engine-graph-aufs"
    assert entry.summary == "AUFS union mounts (Docker 1.2's default): needs the out-of-tree aufs kernel module."


@without_aufs
def test_probe_reason_without_aufs(tmp_path):
    """The reason the conformance suite skips with here is exactly the aufs one; the probe creates nothing."""
    home = str(tmp_path / "root" / "aufs")
    with pytest.raises(NotSupported) as info:
        load_drivers("graph")["aufs"].cls.probe(home, ())
    assert type(info.value) is NotSupported
    assert str(info.value) == "aufs is not supported by the kernel (not in /proc/filesystems)"
    assert not os.path.exists(tmp_path / "root")


def test_aufs_listed_in_filesystems(tmp_path):
    listed = tmp_path / "filesystems"
    absent = str(tmp_path / "no-modprobe")
    for text, expected in (
        ("nodev\tsysfs\n\text4\nnodev\taufs\n", True),
        ("nodev\tsysfs\n\text4\n", False),
        ("nodev\taufs2\nnodev\tnotaufs\n", False),
        ("", False),
    ):
        listed.write_text(text)
        assert aufs.aufs_supported(str(listed), absent) is expected, text
    assert aufs.aufs_supported(str(tmp_path / "missing"), absent) is False
    with open("/proc/filesystems") as f:
        assert any(line.split()[-1:] == ["aufs"] for line in f) == AUFS_HERE


def test_modprobe_tried_when_aufs_is_not_listed(tmp_path):
    """A stand-in for ``modprobe`` (loading aufs cannot happen here) that "loads" it into a test list.

    Runs as root as the real one would; a modprobe that fails is ignored.
    """
    listed = tmp_path / "filesystems"
    listed.write_text("nodev\tsysfs\n")
    modprobe = tmp_path / "modprobe"
    modprobe.write_text(f"#!/bin/sh\n[ \"$1\" = aufs ] && printf 'nodev\\taufs\\n' >> {listed}\n")
    modprobe.chmod(0o755)
    assert aufs.aufs_supported(str(listed), str(modprobe)) is True
    listed.write_text("nodev\tsysfs\n")
    assert aufs.aufs_supported(str(listed), "/bin/false") is False


def test_backing_filesystem_check_on_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    libc.mount("tmpfs", str(mnt), "tmpfs", 0, "size=1m")
    try:
        # A home that does not exist yet is judged by its nearest ancestor.
        assert aufs.check_backing_filesystem(str(mnt / "root" / "aufs")) == "tmpfs"
        assert not (mnt / "root").exists()
    finally:
        libc.umount2(str(mnt))


@pytest.fixture
def btrfs_mount(tmp_path) -> Iterator[str]:
    """A real btrfs on a loop device, mounted at ``<tmp_path>/btrfs``; unmounted and detached afterwards."""
    if shutil.which("mkfs.btrfs") is None or shutil.which("losetup") is None:
        pytest.skip("mkfs.btrfs or losetup is not installed")
    image = tmp_path / "btrfs.img"
    with open(image, "wb") as f:
        f.truncate(128 << 20)
    made = subprocess.run(["mkfs.btrfs", "-q", str(image)], capture_output=True)
    if made.returncode:
        pytest.skip(f"mkfs.btrfs failed: {made.stderr.decode(errors='replace')}")
    loop = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True)
    if loop.returncode:
        pytest.skip(f"no loop device: {loop.stderr.strip()}")
    device = loop.stdout.strip()
    mnt = tmp_path / "btrfs"
    mnt.mkdir()
    try:
        try:
            libc.mount(device, str(mnt), "btrfs")
        except OSError as exc:
            pytest.skip(f"btrfs cannot be mounted here: {exc}")
        try:
            yield str(mnt)
        finally:
            libc.umount2(str(mnt))
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def test_backing_filesystem_check_refuses_btrfs(btrfs_mount):
    with pytest.raises(IncompatibleFilesystem, match="aufs cannot run on top of btrfs"):
        aufs.check_backing_filesystem(os.path.join(btrfs_mount, "root", "aufs"))
    assert os.listdir(btrfs_mount) == []


def test_options_refused(tmp_path):
    with pytest.raises(InvalidParameter, match="aufs takes none"):
        AufsDriver.probe(str(tmp_path / "aufs"), ["size=10G"])
    with pytest.raises(InvalidParameter):
        AufsDriver(str(tmp_path / "aufs"), ["dirperm1"])


# --------------------------------------------------------------------------
# layout


def test_layout_of_a_four_layer_chain(driver):
    l1, l2, l3, l4 = chain_of(driver, 4)
    home = driver.home

    def layers_file(id: str) -> str:
        with open(os.path.join(home, "layers", id)) as f:
            return f.read()

    assert layers_file(l1) == ""
    assert layers_file(l2) == f"{l1}\n"
    assert layers_file(l3) == f"{l2}\n{l1}\n"
    assert layers_file(l4) == f"{l3}\n{l2}\n{l1}\n"
    for sub in ("layers", "diff", "mnt"):
        assert stat.S_IMODE(os.stat(os.path.join(home, sub)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    for id in (l1, l2, l3, l4):
        for sub in ("diff", "mnt"):
            st = os.lstat(os.path.join(home, sub, id))
            assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
            assert os.listdir(os.path.join(home, sub, id)) == []
        assert driver.exists(id)
    assert sorted(os.listdir(os.path.join(home, "layers"))) == sorted([l1, l2, l3, l4])
    assert dict(driver.status()) == {"Root Dir": home, "Backing Filesystem": fs.backing_filesystem(home), "Dirs": "4"}
    assert driver.metadata(l1) == {"DiffDir": f"{home}/diff/{l1}", "MountDir": f"{home}/diff/{l1}"}
    assert driver.metadata(l4) == {"DiffDir": f"{home}/diff/{l4}", "MountDir": f"{home}/mnt/{l4}"}

    # A layer others are based on stays, whole, until they are gone.
    for id in (l1, l2, l3):
        with pytest.raises(Conflict, match="child layers"):
            driver.remove(id)
        assert driver.exists(id) and os.path.isdir(os.path.join(home, "diff", id))
    for id in (l4, l3, l2, l1):
        driver.remove(id)
        assert not driver.exists(id)
        for sub in ("layers", "diff", "mnt"):
            assert not os.path.lexists(os.path.join(home, sub, id))
    for sub in ("layers", "diff", "mnt"):
        assert os.listdir(os.path.join(home, sub)) == []
    assert dict(driver.status())["Dirs"] == "0"


def test_create_errors(driver):
    base = new_id()
    driver.create(base)
    with pytest.raises(Conflict):
        driver.create(base)
    orphan = new_id()
    with pytest.raises(NotFound, match="parent layer"):
        driver.create(orphan, new_id())
    assert not driver.exists(orphan)
    assert not os.path.lexists(os.path.join(driver.home, "diff", orphan))
    with pytest.raises(NotFound):
        driver.remove(orphan)
    with pytest.raises(NotFound):
        driver.metadata(orphan)
    with pytest.raises(InvalidParameter):
        driver.create("../" + "a" * 61)


def test_leftovers_of_a_crash(home):
    """A remove cut short after the renames leaves ``.rm-*``; a create cut short leaves dirs without layers/<id>."""
    drv = AufsDriver(home)
    id, halfway = new_id(), new_id()
    drv.create(id)
    for sub in ("diff", "mnt"):
        os.makedirs(os.path.join(home, sub, f".rm-{new_id()}-abcd", "deep"))
        os.makedirs(os.path.join(home, sub, halfway, "stale"))
    drv = AufsDriver(home)  # the sweep at start
    assert sorted(os.listdir(os.path.join(home, "diff"))) == sorted([id, halfway])
    assert not drv.exists(halfway)
    drv.create(halfway)  # the half-made directories are replaced
    assert os.listdir(os.path.join(home, "diff", halfway)) == []
    # A remove cut short after its renames: layers/<id> is still there, the next remove finishes it.
    os.rename(os.path.join(home, "diff", id), os.path.join(home, "diff", f".rm-{id}-0000"))
    drv.remove(id)
    assert not drv.exists(id)


def test_corrupt_layers_file(driver):
    _base, child = chain_of(driver, 2)
    with open(os.path.join(driver.home, "layers", child), "w") as f:
        f.write("../../etc\n")
    with pytest.raises(HostError, match="corrupt"):
        driver.get(child)


# --------------------------------------------------------------------------
# mount options

HOME = "/var/lib/engine/aufs"
OPTS = "dio,xino=/dev/shm/aufs.xino"


def branches(n: int) -> list[str]:
    """``n`` diff directories below :data:`HOME` with IDs that show their position."""
    return [f"{HOME}/diff/{i:064x}" for i in range(n)]


def test_mount_plan_one_branch():
    (d0,) = branches(1)
    assert mount_plan([d0], page_size=4096) == [MountCall("none", "aufs", 0, f"br:{d0}=rw,{OPTS}")]


def test_mount_plan_three_branches():
    d0, d1, d2 = branches(3)
    assert mount_plan([d0, d1, d2], page_size=4096) == [
        MountCall("none", "aufs", 0, f"br:{d0}=rw:{d1}=ro+wh:{d2}=ro+wh,{OPTS}"),
    ]
    assert mount_plan([d0, d1, d2], mount_label="system_u:object_r:svirt_sandbox_file_t:s0:c1,c2", page_size=4096)[
        0
    ].data.endswith(f',{OPTS},context="system_u:object_r:svirt_sandbox_file_t:s0:c1,c2"')


def test_mount_plan_two_hundred_branches():
    dirs = branches(200)
    plan = mount_plan(dirs, page_size=4096)
    # Each path is 90 bytes: "br:<rw>=rw" takes 96, ",dio,xino=..." 28 and
    # each ":<dir>=ro+wh" 97, so 40 read-only branches fit in 4095 bytes;
    # an "append:<dir>=ro+wh" takes 103 (+1 for its comma): 39 per remount.
    assert [len(call.data.split(":")) - 2 if call.flags == 0 else call.data.count("append:") for call in plan] == [
        40,
        39,
        39,
        39,
        39,
        3,
    ]
    assert plan[0] == MountCall(
        "none", "aufs", 0, "br:" + f"{dirs[0]}=rw" + "".join(f":{d}=ro+wh" for d in dirs[1:41]) + f",{OPTS}"
    )
    assert plan[1] == MountCall("none", "aufs", libc.MS_REMOUNT, ",".join(f"append:{d}=ro+wh" for d in dirs[41:80]))
    assert plan[-1] == MountCall("none", "aufs", libc.MS_REMOUNT, ",".join(f"append:{d}=ro+wh" for d in dirs[197:200]))
    assert all(call.flags == libc.MS_REMOUNT and call.source == "none" and call.fstype == "aufs" for call in plan[1:])
    assert all(len(call.data) <= 4095 for call in plan)
    assert len(plan[0].data) == 96 + 40 * 97 + 28 == 4004
    assert len(plan[1].data) == 39 * 104 - 1 == 4055
    # Every branch once, in order.
    named = [part.split("=")[0] for part in plan[0].data[3:].split(",")[0].split(":")]
    for call in plan[1:]:
        named += [part[len("append:") :].split("=")[0] for part in call.data.split(",")]
    assert named == dirs


def test_mount_plan_exactly_at_the_page():
    d0, d1 = "/a", "/b"
    exact = len(f"br:{d0}=rw:{d1}=ro+wh,{OPTS}") + 1  # the NUL must fit too
    assert len(mount_plan([d0, d1], page_size=exact)) == 1
    assert [c.data for c in mount_plan([d0, d1], page_size=exact - 1)] == [f"br:{d0}=rw,{OPTS}", "append:/b=ro+wh"]


def test_mount_plan_refusals():
    with pytest.raises(InvalidParameter):
        mount_plan([])
    for bad in ("/srv/a:b", "/srv/a,b", "/srv/a=b"):
        with pytest.raises(InvalidParameter, match="separate aufs options"):
            mount_plan(["/rw", bad])
    with pytest.raises(InvalidParameter, match="too long"):
        mount_plan(["/" + "x" * 5000])
    with pytest.raises(InvalidParameter, match="too long"):
        mount_plan(["/rw", "/" + "x" * 4090], page_size=4096)


# --------------------------------------------------------------------------
# get and put


@without_aufs
def test_get_without_aufs_fails_cleanly(real_driver):
    """The real mount(2) on this kernel: ENODEV becomes a remedy; no mount, no reference stays."""
    base, child = chain_of(real_driver, 2)
    mnt = os.path.join(real_driver.home, "mnt", child)
    with pytest.raises(PrerequisitesNotMet) as info:
        real_driver.get(child)
    assert str(info.value) == (
        f"aufs: mount of {mnt} failed (ENODEV): the kernel has no aufs file system; "
        "load the aufs module (modprobe aufs) or choose another --storage-driver"
    )
    assert real_driver.references(child) == 0
    assert not is_mount_point(mnt)
    assert os.listdir(mnt) == []
    # A base layer is never mounted: its diff directory is its tree.
    assert real_driver.get(base) == diff_dir(real_driver, base)
    assert real_driver.references(base) == 1
    real_driver.put(base)
    real_driver.remove(child)
    real_driver.remove(base)


def test_refcount_mounts_once_and_unmounts_at_zero(driver, kernel):
    base, child = chain_of(driver, 2)
    mnt = os.path.join(driver.home, "mnt", child)
    assert driver.get(child) == mnt
    assert driver.get(child) == mnt
    assert kernel.calls == [
        ("mount", mnt, 0, f"br:{driver.home}/diff/{child}=rw:{driver.home}/diff/{base}=ro+wh,{OPTS}")
    ]
    assert driver.references(child) == 2
    driver.put(child)
    assert kernel.count("unmount") == 0
    with pytest.raises(Conflict, match="in use"):
        driver.remove(child)
    driver.put(child)
    assert kernel.calls[1:] == [("unmount", mnt, 0, "")]
    assert driver.references(child) == 0
    driver.put(child)  # one too many: logged, nothing called
    assert len(kernel.calls) == 2
    # The base layer: counted, never mounted.
    assert driver.get(base) == diff_dir(driver, base)
    driver.put(base)
    assert len(kernel.calls) == 2
    # Mounted again on the next get.
    driver.get(child, mount_label="system_u:object_r:svirt_sandbox_file_t:s0")
    assert kernel.calls[2][3].endswith(',context="system_u:object_r:svirt_sandbox_file_t:s0"')
    driver.put(child)
    driver.remove(child)


def test_long_chain_mounts_with_remounts(driver, kernel):
    ids = chain_of(driver, 60)
    top = ids[-1]
    driver.get(top)
    expected = mount_plan([diff_dir(driver, id) for id in reversed(ids)])
    assert len(expected) > 1
    assert kernel.calls == [("mount", os.path.join(driver.home, "mnt", top), c.flags, c.data) for c in expected]
    driver.put(top)


def test_failed_append_takes_the_mount_down(driver, kernel):
    ids = chain_of(driver, 60)
    top = ids[-1]
    mnt = os.path.join(driver.home, "mnt", top)
    kernel.mount_errors = {1: errno.EINVAL}  # the first remount
    with pytest.raises(HostError) as info:
        driver.get(top)
    assert str(info.value).startswith(f"aufs: remount (append branches) of {mnt} failed (EINVAL): aufs refused")
    assert "dmesg" in str(info.value)
    assert [c[0] for c in kernel.calls] == ["mount", "mount", "unmount"]
    assert kernel.calls[-1] == ("unmount", mnt, 0, "")
    assert driver.references(top) == 0
    # Nothing is left half done: the next get mounts from scratch.
    driver.get(top)
    assert kernel.calls[3][:3] == ("mount", mnt, 0)
    driver.put(top)


@pytest.mark.parametrize(
    "code, kind, remedy",
    [
        (errno.ENODEV, PrerequisitesNotMet, "modprobe aufs"),
        (errno.EPERM, HostError, "CAP_SYS_ADMIN"),
        (errno.ENOENT, HostError, "/dev/shm"),
        (errno.ENOMEM, HostError, "Cannot allocate memory"),
    ],
)
def test_mount_errors_become_remedies(driver, kernel, code, kind, remedy):
    _base, child = chain_of(driver, 2)
    kernel.mount_errors = {0: code}
    with pytest.raises(kind, match=remedy) as info:
        driver.get(child)
    assert f"({errno.errorcode[code]})" in str(info.value)
    assert kernel.count("unmount") == 0  # the first mount failed: nothing to take down
    assert driver.references(child) == 0


def test_busy_unmount_is_retried_then_detached(driver, kernel):
    _base, child = chain_of(driver, 2)
    mnt = os.path.join(driver.home, "mnt", child)
    driver.get(child)
    kernel.unmount_errors = [errno.EBUSY] * 5
    driver.put(child)
    assert [c[2] for c in kernel.calls if c[0] == "unmount"] == [0] * 5 + [libc.MNT_DETACH]
    driver.get(child)
    kernel.unmount_errors = [errno.EIO]
    with pytest.raises(HostError, match=f"cannot unmount {mnt}"):
        driver.put(child)
    assert driver.references(child) == 0  # released all the same


def test_concurrent_get_put_balance(driver, kernel):
    _base, child = chain_of(driver, 2)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(50):
                driver.get(child)
                driver.put(child)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert kernel.count("mount") == kernel.count("unmount") >= 1
    assert driver.references(child) == 0


def test_cleanup_unmounts_and_forgets(driver, kernel):
    ids = chain_of(driver, 3)
    driver.get(ids[1])
    driver.get(ids[2])
    driver.get(ids[2])
    driver.get(ids[0])
    driver.cleanup()
    unmounted = sorted(c[1] for c in kernel.calls if c[0] == "unmount")
    assert unmounted == sorted(os.path.join(driver.home, "mnt", id) for id in ids[1:])
    assert all(driver.references(id) == 0 for id in ids)
    driver.remove(ids[2])


# --------------------------------------------------------------------------
# the native differ, on the diff directories


def test_native_differ_against_the_naive_one(driver, tmp_path):
    """A layer applied with apply_diff behaves as the naive differ on the materialized trees says."""
    base = new_id()
    driver.create(base)
    fill = driver.get(base)  # a base layer's tree is its diff directory: no mount
    try:
        build_rich_tree(fill)
    finally:
        driver.put(base)
    base_tree, child_tree = str(tmp_path / "base-tree"), str(tmp_path / "child-tree")
    fs.copy_tree(diff_dir(driver, base), base_tree)
    fs.copy_tree(base_tree, child_tree)
    GraphDriverConformance._modify(child_tree)
    naive = archive.changes(child_tree, base_tree)
    assert {c.path: c.kind for c in naive} == {
        "/etc": C,
        "/etc/passwd": C,
        "/etc/dangling": D,
        "/etc/localtime": C,
        "/bin": C,
        "/bin/ping": C,
        "/bin/ping6": C,
        "/home": C,
        "/home/user": C,
        "/home/user/notes": C,
        "/var": C,
        "/var/empty": D,
        "/opt": C,
        "/srv": A,
        "/srv/app": A,
        "/srv/app/data": A,
        "/srv/app/run": A,
        "/srv/app/run-again": A,
        "/srv/app/start": A,
        "/srv/app/pipe": A,
        "/srv/app/zero": A,
        "/srv/app/big": A,
    }

    child = new_id()
    driver.create(child, base)
    layer = read_tar(archive.export_changes(child_tree, naive))
    content = sum(m.size for m in members(layer) if m.isreg())
    assert driver.apply_diff(child, base, io.BytesIO(layer)) == content

    # The whiteouts stay in the branch as files, for aufs to apply.
    branch = diff_dir(driver, child)
    for rel in ("etc/.wh.dangling", "var/.wh.empty"):
        st = os.lstat(os.path.join(branch, rel))
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    assert os.path.lexists(os.path.join(diff_dir(driver, base), "etc/dangling"))  # the parent is untouched

    assert driver.changes(child, base) == naive
    assert driver.diff_size(child, base) == archive.changes_size(child_tree, naive) > 3 << 20

    # The native diff applied on the parent's tree gives the child's tree.
    data = read_tar(driver.diff(child, base))
    assert read_tar(driver.diff(child, base)) == data
    names = {m.name: m for m in members(data)}
    assert names["etc/.wh.dangling"].mode == 0 and names["etc/.wh.dangling"].mtime == 0
    again = str(tmp_path / "again")
    fs.copy_tree(base_tree, again)
    archive.apply_layer(again, io.BytesIO(data))
    assert tree_manifest(again, mtime="s", sockets=False) == tree_manifest(child_tree, mtime="s", sockets=False)

    # The base layer's own diff is its whole tree.
    assert all(c.kind == A for c in driver.changes(base, None))
    assert {c.path for c in driver.changes(base, None)} == {c.path for c in archive.changes(base_tree, None)}
    empty = new_id()
    driver.create(empty, base)
    assert driver.changes(empty, base) == []
    assert driver.diff_size(empty, base) == 0


def test_branch_as_aufs_leaves_it(driver, tmp_path):
    """Whiteouts made as aufs makes them (hard links of .wh..wh.aufs), its bookkeeping, an opaque directory."""
    base = new_id()
    driver.create(base)
    lower = diff_dir(driver, base)
    for rel, data in (("a", b"a"), ("d/x", b"x"), ("d/y", b"y"), ("keep/k1", b"1"), ("keep/k2", b"2")):
        os.makedirs(os.path.join(lower, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(lower, rel), "wb") as f:
            f.write(data)
    child = new_id()
    driver.create(child, base)
    upper = diff_dir(driver, child)
    wh_base = os.path.join(upper, ".wh..wh.aufs")
    open(wh_base, "w").close()
    os.chmod(wh_base, 0o444)
    os.makedirs(os.path.join(upper, ".wh..wh.plnk"))
    with open(os.path.join(upper, ".wh..wh.plnk", "1234.5678"), "wb") as f:
        f.write(b"pseudo-link" * 100)
    os.makedirs(os.path.join(upper, ".wh..wh.orph"))
    os.link(wh_base, os.path.join(upper, ".wh.a"))
    os.link(wh_base, os.path.join(upper, ".wh.ghost"))  # hides nothing: no change
    os.mkdir(os.path.join(upper, "d"), 0o755)
    os.link(wh_base, os.path.join(upper, "d", ".wh.x"))
    os.mkdir(os.path.join(upper, "d", ".wh..wh.3f2a"))  # a directory aufs is removing
    os.mkdir(os.path.join(upper, "keep"), 0o755)
    open(os.path.join(upper, "keep", archive.WHITEOUT_OPAQUE), "w").close()
    with open(os.path.join(upper, "keep", "k3"), "wb") as f:
        f.write(b"333")
    with open(os.path.join(upper, "new"), "wb") as f:
        f.write(b"new!")

    expected = [
        Change("/a", D),
        Change("/d", C),
        Change("/d/x", D),
        Change("/keep", C),
        Change("/keep/k1", D),
        Change("/keep/k2", D),
        Change("/keep/k3", A),
        Change("/new", A),
    ]
    assert driver.changes(child, base) == expected
    # The same as the naive differ on the trees aufs would show.
    parent_tree, child_tree = str(tmp_path / "parent"), str(tmp_path / "child")
    fs.copy_tree(lower, parent_tree)
    fs.copy_tree(lower, child_tree)
    for rel in ("a", "d/x", "keep/k1", "keep/k2"):
        os.unlink(os.path.join(child_tree, rel))
    for rel in ("keep/k3", "new"):
        shutil.copy2(os.path.join(upper, rel), os.path.join(child_tree, rel))
    assert archive.changes(child_tree, parent_tree) == expected

    data = read_tar(driver.diff(child, base))
    found = members(data)
    assert [(m.name, m.type) for m in found] == [
        (".wh.a", tarfile.REGTYPE),
        (".wh.ghost", tarfile.REGTYPE),
        ("d", tarfile.DIRTYPE),
        ("d/.wh.x", tarfile.REGTYPE),
        ("keep", tarfile.DIRTYPE),
        ("keep/.wh..wh..opq", tarfile.REGTYPE),
        ("keep/k3", tarfile.REGTYPE),
        ("new", tarfile.REGTYPE),
    ]
    for m in found:
        if os.path.basename(m.name).startswith(".wh."):
            assert (m.mode, m.mtime, m.size, m.uname) == (0, 0, 0, "")
    assert driver.diff_size(child, base) == 3 + 4  # bookkeeping and whiteouts take nothing
    again = str(tmp_path / "again")
    fs.copy_tree(parent_tree, again)
    archive.apply_layer(again, io.BytesIO(data))
    assert tree_listing(again) == tree_listing(child_tree)


THREE_LAYERS = [
    [
        Entry.dir("etc"),
        Entry.file("etc/a", b"a"),
        Entry.file("etc/b", b"b"),
        Entry.dir("opt"),
        Entry.dir("opt/x"),
        Entry.file("opt/x/y", b"y"),
        Entry.dir("usr"),
        Entry.dir("usr/lib"),
        Entry.file("usr/lib/z", b"z"),
        Entry.dir("var"),
        Entry.dir("var/cache"),
        Entry.file("var/cache/c1", b"1"),
        Entry.dir("var/cache/sub"),
        Entry.file("var/cache/sub/c2", b"2"),
    ],
    [
        Entry.dir("etc"),
        Entry.whiteout("etc/a"),
        Entry.file("etc/c", b"c"),
        Entry.dir("opt"),
        Entry.whiteout("opt/x"),
        Entry.dir("var"),
        Entry.dir("var/cache", mode=0o700),
        Entry.file("var/cache/early", b"e"),
        Entry.opaque("var/cache"),
        Entry.file("var/cache/new", b"n"),
    ],
    [
        Entry.file("etc/a", b"again"),
        Entry.whiteout("usr"),
        Entry.dir("opt/x"),
        Entry.file("opt/x/fresh", b"f"),
        Entry.whiteout("var/cache/new"),
    ],
]


def test_three_layers_of_whiteouts(driver, tmp_path):
    """The conformance suite's whiteout layers, kept as files and read back through the lower branches."""
    ids = chain_of(driver, 3)
    trees: list[str] = []
    for n, (id, entries) in enumerate(zip(ids, THREE_LAYERS)):
        parent = ids[n - 1] if n else None
        driver.apply_diff(id, parent, io.BytesIO(make_layer_tar(entries)))
        # What aufs would show: every layer so far applied with whiteouts as deletions.
        tree = str(tmp_path / f"tree{n}")
        if trees:
            fs.copy_tree(trees[-1], tree)
        else:
            os.mkdir(tree)
        archive.apply_layer(tree, io.BytesIO(make_layer_tar(entries)))
        trees.append(tree)

    assert sorted(tree_listing(diff_dir(driver, ids[1]))) == [
        "etc",
        "etc/.wh.a",
        "etc/c",
        "opt",
        "opt/.wh.x",
        "var",
        "var/cache",
        "var/cache/.wh..wh..opq",
        "var/cache/early",
        "var/cache/new",
    ]
    assert tree_listing(diff_dir(driver, ids[0])) == tree_listing(trees[0])  # nothing applied to the parent
    assert driver.changes(ids[1], ids[0]) == archive.changes(trees[1], trees[0])
    assert driver.changes(ids[2], ids[1]) == archive.changes(trees[2], trees[1])
    assert {c.path: c.kind for c in driver.changes(ids[2], ids[1])} == {
        "/etc": C,
        "/etc/a": A,
        "/usr": D,
        "/opt": C,
        "/opt/x": A,
        "/opt/x/fresh": A,
        "/var": C,
        "/var/cache": C,
        "/var/cache/new": D,
    }
    # The middle layer's native diff rebuilds its tree on its parent's.
    again = str(tmp_path / "again")
    fs.copy_tree(trees[0], again)
    archive.apply_layer(again, driver.diff(ids[1], ids[0]))
    assert tree_manifest(again, mtime="s") == tree_manifest(trees[1], mtime="s")


@without_aufs
def test_differ_against_another_layer_needs_the_mount(real_driver):
    """Against its real parent the differ reads branches; against any other layer it compares mounted trees."""
    ids = chain_of(real_driver, 3)
    real_driver.apply_diff(ids[0], None, io.BytesIO(make_layer_tar(THREE_LAYERS[0])))
    assert read_tar(real_driver.diff(ids[2], ids[1])).endswith(bytes(1024))
    assert real_driver.changes(ids[2], ids[1]) == []
    for call in (
        lambda: real_driver.diff(ids[2], ids[0]),
        lambda: real_driver.changes(ids[2], None),
        lambda: real_driver.diff_size(ids[1], None),
        lambda: real_driver.apply_diff(ids[2], ids[0], io.BytesIO(make_layer_tar([]))),
    ):
        with pytest.raises(PrerequisitesNotMet, match="ENODEV"):
            call()
    assert all(real_driver.references(id) == 0 for id in ids)


# --------------------------------------------------------------------------
# with aufs


@needs_aufs
def test_real_aufs_mount(home):
    """Where the kernel has aufs: the union shows the chain, writes go to the top branch, put unmounts."""
    drv = AufsDriver(home)
    try:
        ids = chain_of(drv, 3)
        for id, parent, entries in zip(ids, [None, *ids], THREE_LAYERS):
            drv.apply_diff(id, parent, io.BytesIO(make_layer_tar(entries)))
        top = drv.get(ids[2])
        try:
            assert is_mount_point(top)
            assert sorted(tree_listing(top)) == [
                "etc",
                "etc/a",
                "etc/b",
                "etc/c",
                "opt",
                "opt/x",
                "opt/x/fresh",
                "var",
                "var/cache",
                "var/cache/early",
            ]
            with open(os.path.join(top, "etc/b"), "a") as f:
                f.write("more")
            os.unlink(os.path.join(top, "etc/c"))
        finally:
            drv.put(ids[2])
        assert not is_mount_point(top)
        assert os.path.exists(os.path.join(diff_dir(drv, ids[2]), "etc/.wh.c"))
        assert {c.path: c.kind for c in drv.changes(ids[2], ids[1])}["/etc/c"] == D
    finally:
        drv.cleanup()
