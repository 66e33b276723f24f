"""Tests for engine.sys.fs: copy_tree, safe_rmtree/remove_at, atomic_write; and engine.sys.proc.mountinfo.

They run as root in the session sandbox (private mount namespace), on real
file systems: the tmp_path file system (ext4 here) and tmpfs mounts made
and removed by the tests.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Iterator

import pytest

from engine.errors import HostError, InvalidParameter
from engine.sys import fs, libc, proc
from engine.testing.layertar import build_rich_tree, tree_manifest

pytestmark = pytest.mark.root("mounts, owners")


@pytest.fixture
def tmpfs(tmp_path) -> Iterator:
    """A factory mounting tmpfs on directories below tmp_path; all unmounted at the end."""
    mounted: list[str] = []

    def mount(path) -> str:
        os.makedirs(path, exist_ok=True)
        libc.mount("tmpfs", str(path), "tmpfs", 0, "mode=755")
        mounted.append(str(path))
        return str(path)

    yield mount
    for path in reversed(mounted):
        try:
            libc.umount2(path, libc.MNT_DETACH)
        except OSError:
            pass


def _bind(src, dst) -> None:
    libc.mount(str(src), str(dst), None, libc.MS_BIND)


# --------------------------------------------------------------------------
# copy_tree


def test_copy_tree_full_fidelity(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    build_rich_tree(str(src))
    os.chown(src, 1000, 1001)
    os.chmod(src, 0o750)
    os.utime(src, ns=(1_000_000_000_000_000_001, 1_100_000_000_000_000_002))
    fs.copy_tree(str(src), str(tmp_path / "dst"))
    assert tree_manifest(str(tmp_path / "dst"), mtime="ns") == tree_manifest(str(src), mtime="ns")
    # The root's own metadata and times are copied too.
    st, dst = os.stat(src), os.stat(tmp_path / "dst")
    assert (dst.st_uid, dst.st_gid, dst.st_mode, dst.st_mtime_ns) == (st.st_uid, st.st_gid, st.st_mode, st.st_mtime_ns)


def test_copy_tree_keeps_setuid_and_capability_order(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    prog = src / "prog"
    prog.write_bytes(b"x" * 100)
    os.chown(prog, 1000, 1000)
    os.setxattr(prog, "security.capability", bytes.fromhex("0100000200040000000000000000000000000000"))
    os.chmod(prog, 0o6755)
    fs.copy_tree(str(src), str(tmp_path / "dst"))
    copy = tmp_path / "dst" / "prog"
    assert stat.S_IMODE(os.stat(copy).st_mode) == 0o6755
    assert os.getxattr(copy, "security.capability") == os.getxattr(prog, "security.capability")
    assert (os.stat(copy).st_uid, os.stat(copy).st_gid) == (1000, 1000)


def test_copy_tree_atimes_and_hardlinks_across_directories(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    (src / "a" / "f").write_bytes(b"shared")
    os.link(src / "a" / "f", src / "b" / "g")
    os.symlink("a/f", src / "s")
    os.link(src / "s", src / "s2", follow_symlinks=False)  # a hard link to a symlink
    os.utime(src / "a" / "f", ns=(1_234_000_000_111, 1_500_000_000_222))
    fs.copy_tree(str(src), str(tmp_path / "dst"))
    dst = tmp_path / "dst"
    assert os.stat(dst / "a" / "f").st_ino == os.stat(dst / "b" / "g").st_ino
    assert os.stat(dst / "a" / "f").st_nlink == 2
    assert os.lstat(dst / "s").st_ino == os.lstat(dst / "s2").st_ino
    assert os.stat(dst / "a" / "f").st_atime_ns == 1_234_000_000_111
    assert os.stat(dst / "a" / "f").st_mtime_ns == 1_500_000_000_222


def test_copy_tree_keeps_holes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.write(b"a")
        f.seek(64 << 20)
        f.write(b"b")
        f.seek(128 << 20)
        f.truncate()
    fs.copy_tree(str(src), str(tmp_path / "dst"))
    copy = tmp_path / "dst" / "sparse"
    assert os.stat(copy).st_size == 128 << 20
    assert os.stat(copy).st_blocks * 512 < 1 << 20
    with open(copy, "rb") as f:
        assert f.read(1) == b"a"
        f.seek(64 << 20)
        assert f.read(2) == b"b\0"


def test_copy_tree_does_not_follow_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    src = tmp_path / "src"
    src.mkdir()
    os.symlink(str(outside), src / "link")
    os.symlink("/etc/passwd", src / "passwd")
    fs.copy_tree(str(src), str(tmp_path / "dst"))
    assert os.readlink(tmp_path / "dst" / "link") == str(outside)
    assert os.path.islink(tmp_path / "dst" / "passwd")
    assert sorted(os.listdir(tmp_path / "dst")) == ["link", "passwd"]


def _deep_tree(root, depth: int) -> None:
    """``root/d/d/.../d/bottom``, ``depth`` levels, made through fds (no path length limit)."""
    os.mkdir(root)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("bottom", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    os.close(fd)


def _deep_bottom_exists(root, depth: int) -> bool:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.path.exists(fs.at_path(fd, "bottom"))
    finally:
        os.close(fd)


def test_copy_tree_readonly_and_deep(tmp_path):
    """Deeper than Python's recursion limit and than PATH_MAX allows a path to name."""
    src, copy = tmp_path / "src", tmp_path / "dst"
    _deep_tree(src, 2500)
    os.chmod(src / "d", 0o555)
    fs.copy_tree(str(src), str(copy))
    assert stat.S_IMODE(os.stat(copy / "d").st_mode) == 0o555
    assert _deep_bottom_exists(copy, 2500)
    fs.safe_rmtree(str(copy))
    fs.safe_rmtree(str(src))
    assert not copy.exists() and not src.exists()


def test_copy_tree_destination_rules(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("f")
    empty = tmp_path / "empty"
    empty.mkdir()
    fs.copy_tree(str(src), str(empty))
    assert (empty / "f").read_text() == "f"
    with pytest.raises(InvalidParameter):
        fs.copy_tree(str(src), str(empty))  # not empty any more
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidParameter):
        fs.copy_tree(str(src), str(tmp_path / "file"))
    with pytest.raises(InvalidParameter, match="into itself"):
        fs.copy_tree(str(src), str(src / "inner"))
    assert sorted(os.listdir(src)) == ["f"]


def test_copy_tree_copies_what_is_mounted_below(tmp_path, tmpfs):
    src = tmp_path / "src"
    src.mkdir()
    tmpfs(src / "mnt")
    (src / "mnt" / "on-tmpfs").write_text("t")
    fs.copy_tree(str(src), str(tmp_path / "dst"))
    assert (tmp_path / "dst" / "mnt" / "on-tmpfs").read_text() == "t"
    assert fs.mounts_below(str(tmp_path / "dst")) == []


def test_copy_tree_to_another_file_system(tmp_path, tmpfs):
    src = tmp_path / "src"
    src.mkdir()
    build_rich_tree(str(src))
    dst = tmpfs(tmp_path / "other") + "/copy"
    fs.copy_tree(str(src), dst)
    assert tree_manifest(dst, mtime="ns") == tree_manifest(str(src), mtime="ns")


# --------------------------------------------------------------------------
# safe_rmtree / remove_at


def test_safe_rmtree_plain_tree(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    build_rich_tree(str(root))
    os.chmod(root / "var" / "empty", 0o000)
    fs.safe_rmtree(str(root))
    assert not root.exists()
    fs.safe_rmtree(str(root))  # missing: fine


def test_safe_rmtree_refuses_root():
    with pytest.raises(InvalidParameter):
        fs.safe_rmtree("/")
    with pytest.raises(InvalidParameter):
        fs.safe_rmtree("/tmp/..")


def test_safe_rmtree_never_follows_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("k")
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    os.symlink(str(outside), root / "d" / "link")
    os.symlink(str(outside / "keep"), root / "file-link")
    fs.safe_rmtree(str(root))
    assert not root.exists()
    assert (outside / "keep").read_text() == "k"


def test_safe_rmtree_on_a_symlink_removes_only_the_link(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("k")
    os.symlink(str(outside), tmp_path / "link")
    fs.safe_rmtree(str(tmp_path / "link"))
    assert not os.path.lexists(tmp_path / "link")
    assert (outside / "keep").read_text() == "k"


def test_safe_rmtree_unmounts_first(tmp_path, tmpfs):
    """The /dev/null story: a bind mount of a host directory left inside a tree."""
    host = tmp_path / "host-dev"
    host.mkdir()
    (host / "null").write_text("precious")
    root = tmp_path / "container"
    (root / "rootfs" / "dev").mkdir(parents=True)
    _bind(host, root / "rootfs" / "dev")
    tmpfs(root / "rootfs" / "tmp")
    (root / "rootfs" / "tmp" / "x").write_text("x")
    tmpfs(root / "rootfs" / "tmp" / "nested")
    tmpfs(root / "rootfs" / "tmp" / "nested")  # stacked twice
    tmpfs(root / "with space")
    assert len(fs.mounts_below(str(root))) == 5
    fs.safe_rmtree(str(root))
    assert not root.exists()
    assert (host / "null").read_text() == "precious"
    assert fs.mounts_below(str(tmp_path)) == []


def test_safe_rmtree_detaches_busy_mounts(tmp_path, tmpfs):
    root = tmp_path / "root"
    mnt = tmpfs(root / "busy")
    (root / "busy" / "open").write_text("o")
    fd = os.open(os.path.join(mnt, "open"), os.O_RDONLY)  # keeps the mount busy
    try:
        fs.safe_rmtree(str(root))
        assert not root.exists()
        assert os.read(fd, 1) == b"o"  # the detached mount lives on for its user
    finally:
        os.close(fd)


def test_remove_at_stops_at_a_mount_point(tmp_path, tmpfs):
    """Without unmounting first, deletion must refuse to cross, not delete through."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "null").write_text("precious")
    root = tmp_path / "root"
    (root / "a" / "dev").mkdir(parents=True)
    (root / "a" / "file").write_text("f")
    _bind(host, root / "a" / "dev")  # same file system: only the mount tells
    parent = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(HostError, match="mount point"):
            fs.remove_at(parent, "root")
    finally:
        os.close(parent)
    assert (host / "null").read_text() == "precious"
    assert (root / "a" / "dev" / "null").exists()
    libc.umount2(str(root / "a" / "dev"))


def test_remove_at_stops_at_another_file_system(tmp_path, tmpfs):
    root = tmp_path / "root"
    tmpfs(root / "t")
    (root / "t" / "keep").write_text("k")
    parent = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(HostError):
            fs.remove_at(parent, "t")
    finally:
        os.close(parent)
    assert (root / "t" / "keep").read_text() == "k"


def test_reaper_deletes_each_tree_and_goes_on_past_a_failure(tmp_path, caplog):
    reaper = fs.Reaper("test")
    trees = []
    for name in ("one", "two", "three"):
        tree = tmp_path / f".rm-{name}"
        build_rich_tree(str(tree))
        trees.append(tree)
    stuck = trees[1] / "stuck"
    stuck.write_text("immutable")
    subprocess.run(["chattr", "+i", str(stuck)], check=True)  # even root cannot unlink it
    try:
        for tree in trees:
            reaper.delete(str(tree))
        assert reaper.wait(30)
        assert not trees[0].exists() and trees[1].exists() and not trees[2].exists()
        assert "could not delete" in caplog.text and ".rm-two" in caplog.text
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    reaper.delete(str(trees[1]))  # the thread still serves
    assert reaper.wait(30) and not trees[1].exists()


def test_reaper_starts_a_deletion_its_delay_after_it_was_queued(tmp_path):
    reaper = fs.Reaper("test", delay=0.5)
    tree = tmp_path / ".rm-held"
    tree.mkdir()
    reaper.delete(str(tree))
    assert not reaper.wait(0.1) and tree.exists()
    assert reaper.wait(30) and not tree.exists()


def test_safe_rmtree_deletes_btrfs_subvolumes(tmp_path):
    """A btrfs subvolume has a device number of its own but is no mount: deleted like a directory.

    A tmpfs mounted inside one of the subvolumes still stops the deletion
    (deepest mounts are taken down first by safe_rmtree; remove_at alone refuses).
    """
    import fcntl

    from engine.testing.loopfs import filesystem_supported, loop_filesystem, mkfs_available

    if not (mkfs_available("btrfs") and filesystem_supported("btrfs")):
        pytest.skip("needs mkfs.btrfs and a kernel with btrfs")

    def subvolume(parent: str, name: str) -> str:
        args = bytearray(4096)  # struct btrfs_ioctl_vol_args: fd, then the name
        args[8 : 8 + len(name)] = name.encode()
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, 0x5000940E, args)  # BTRFS_IOC_SUBVOL_CREATE
        finally:
            os.close(fd)
        return os.path.join(parent, name)

    with loop_filesystem(str(tmp_path), "btrfs", size=512 << 20) as mnt:
        tree = os.path.join(mnt, "tree")
        os.makedirs(os.path.join(tree, "plain"))
        outer = subvolume(tree, "outer")
        os.makedirs(os.path.join(outer, "a/b"))
        inner = subvolume(os.path.join(outer, "a/b"), "inner")
        with open(os.path.join(inner, "f"), "w") as f:
            f.write("x")
        os.symlink("/etc/passwd", os.path.join(inner, "link"))
        assert os.stat(inner).st_dev != os.stat(tree).st_dev and os.stat(inner).st_ino == 256
        os.mkdir(os.path.join(inner, "mnt"))
        libc.mount("tmpfs", os.path.join(inner, "mnt"), "tmpfs", 0, None)
        parent = os.open(mnt, os.O_PATH | os.O_DIRECTORY)
        try:
            with pytest.raises(HostError, match="mount point"):
                fs.remove_at(parent, "tree")
        finally:
            os.close(parent)
        fs.safe_rmtree(tree)
        assert os.listdir(mnt) == []
        assert os.path.exists("/etc/passwd")


def test_remove_at_bind_mounted_file(tmp_path):
    host_file = tmp_path / "null"
    host_file.write_text("precious")
    root = tmp_path / "root"
    root.mkdir()
    (root / "null").write_text("")
    _bind(host_file, root / "null")
    parent = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as info:
            fs.remove_at(parent, "null")
        assert info.value.errno == errno.EBUSY
    finally:
        os.close(parent)
        libc.umount2(str(root / "null"))
    assert host_file.read_text() == "precious"


def test_remove_at_missing_and_kinds(tmp_path):
    (tmp_path / "f").write_text("f")
    os.mkfifo(tmp_path / "p")
    os.symlink("/", tmp_path / "l")
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        assert fs.remove_at(fd, "nothing") is False
        for name in ("f", "p", "l"):
            assert fs.remove_at(fd, name) is True
    finally:
        os.close(fd)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------
# atomic_write


def test_atomic_write(tmp_path):
    target = tmp_path / "state.json"
    old = os.umask(0o077)
    try:
        fs.atomic_write(str(target), b"one", mode=0o644)
    finally:
        os.umask(old)
    assert target.read_bytes() == b"one"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    fs.atomic_write(str(target), b"two" * 100000, mode=0o600)
    assert target.read_bytes() == b"two" * 100000
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["state.json"]


def test_atomic_write_not_durable_skips_every_fsync(tmp_path, monkeypatch):
    target = tmp_path / "hosts"
    fs.atomic_write(str(target), b"old", durable=False)
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    fs.atomic_write(str(target), b"new", durable=False)
    assert synced == []
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["hosts"]
    fs.atomic_write(str(target), b"durable")
    assert len(synced) == 2  # the file, then its directory


def test_atomic_write_failure_keeps_old(tmp_path):
    target = tmp_path / "state"
    fs.atomic_write(str(target), b"old")
    with pytest.raises(TypeError):
        fs.atomic_write(str(target), object())  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state"]


# --------------------------------------------------------------------------
# mountinfo


def test_mountinfo_and_backing_filesystem(tmp_path, tmpfs):
    odd = tmpfs(tmp_path / "a b\tc")
    mounts = {m.mount_point: m for m in proc.mountinfo()}
    assert mounts[odd].fstype == "tmpfs"
    assert fs.backing_filesystem(odd) == "tmpfs"
    os.mkdir(os.path.join(odd, "sub"))
    assert fs.backing_filesystem(os.path.join(odd, "sub")) == "tmpfs"
    assert fs.mounts_below(str(tmp_path)) == [odd]
    assert fs.backing_filesystem("/proc/self") == "proc"
