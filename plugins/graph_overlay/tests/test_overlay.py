"""The overlay driver against the shared graph driver conformance suite, plus what is overlay's own.

Everything runs as root in the session sandbox on this host's kernel. Every
mount a test makes is undone by a fixture finalizer, also when the test
fails: the conformance ``driver`` fixture calls ``cleanup()`` and removes the
root (which unmounts first); ``vfs``, ``foreign_overlay`` and
``proc_filesystems_without_overlay`` below undo theirs.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import os
import re
import stat
import tarfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from engine.archive import ChangeKind
from engine.drivers.graph import NaiveDiffDriver
from engine.errors import Conflict, HostError, IncompatibleFilesystem, InvalidParameter, NotFound, NotSupported
from engine.sys import fs, libc, proc
from engine.testing import sandbox
from engine.testing.graphtest import GraphDriverConformance, new_id
from engine.testing.layertar import CAP_NET_BIND_SERVICE, Entry, build_rich_tree, make_layer_tar, tree_manifest
from engine_graph_overlay.driver import (
    OVL_MAX_STACK,
    OverlayDriver,
    mount_failure,
    supports_d_type,
    upper_changes,
)
from engine_graph_vfs.driver import VfsDriver

pytestmark = pytest.mark.root("overlay mounts, owners")

_LINK = re.compile(r"[A-Z2-7]{26}")


def _overlay_mounts(path: str) -> list[proc.Mount]:
    """The overlay mounts at exactly ``path``."""
    real = os.path.realpath(path)
    return [m for m in proc.mountinfo() if m.mount_point == real and m.fstype == "overlay"]


def _tar_entries(data: bytes) -> list[tuple[Any, ...]]:
    """Each entry of a tar with all its metadata and a digest of its content."""
    entries = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            content = tar.extractfile(m).read() if m.isreg() else b""  # type: ignore[union-attr]
            pax = tuple(sorted((k, v) for k, v in m.pax_headers.items() if k != "path"))
            entries.append(
                (
                    m.name,
                    m.type,
                    m.mode,
                    m.uid,
                    m.gid,
                    m.mtime,
                    m.size,
                    m.linkname,
                    m.devmajor,
                    m.devminor,
                    pax,
                    hashlib.sha256(content).hexdigest(),
                )
            )
    return entries


def _without_lone_links(manifest: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``manifest`` without ``hardlink`` marks of inodes that only one name in the tree has."""
    groups: dict[str, int] = {}
    for item in manifest.values():
        if "hardlink" in item:
            groups[item["hardlink"]] = groups.get(item["hardlink"], 0) + 1
    return {rel: {k: v for k, v in item.items() if k != "hardlink" or groups[v] > 1} for rel, item in manifest.items()}


def _read(stream: io.BufferedReader | Any) -> bytes:
    try:
        return stream.read()
    finally:
        stream.close()


@pytest.fixture
def vfs(tmp_path: Any) -> Iterator[VfsDriver]:
    """A vfs driver in ``<tmp_path>/vfs-root/vfs``, to compare trees with; removed afterwards."""
    root = os.path.join(str(tmp_path), "vfs-root")
    driver = VfsDriver(os.path.join(root, "vfs"))
    try:
        yield driver
    finally:
        driver.cleanup()
        fs.safe_rmtree(root)


#: Three layers as Docker writes them (every parent directory listed), with
#: every kind of entry, whiteouts of files and directories, opaque
#: directories, and type changes in both directions.
THREE_LAYERS = [
    [
        Entry.dir("etc"),
        Entry.file("etc/a", b"a"),
        Entry.file("etc/b", b"b"),
        Entry.hardlink("etc/a-again", "etc/a"),
        Entry.symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        Entry.dir("usr"),
        Entry.dir("usr/lib"),
        Entry.file("usr/lib/libz", b"z" * 5000, xattrs={"user.x": b"1"}),
        Entry.dir("usr/bin"),
        Entry.file("usr/bin/tool", b"tool", 0o4755, xattrs={"security.capability": CAP_NET_BIND_SERVICE}),
        Entry.dir("var"),
        Entry.dir("var/lib"),
        Entry.dir("var/lib/db"),
        Entry.file("var/lib/db/x", b"x"),
        Entry.file("var/lib/db/y", b"y"),
        Entry.dir("var/lib/db/sub"),
        Entry.file("var/lib/db/sub/z", b"z"),
        Entry.dir("opt"),
        Entry.dir("opt/app"),
        Entry.file("opt/app/conf", b"conf"),
        Entry.dir("srv"),
        Entry.file("srv/thing", b"thing"),
        Entry.dir("dev"),
        Entry.char("dev/null", 1, 3),
        Entry.block("dev/loop0", 7, 0),
        Entry.dir("run"),
        Entry.fifo("run/fifo"),
        Entry.dir("home", mtime="1600000000.123456789"),
        Entry.dir("home/u", 0o700, uid=1000, gid=1000),
        Entry.file("home/u/notes", b"n", 0o600, uid=1000, gid=1000, xattrs={"trusted.t": b"\x00\xff"}),
    ],
    [
        Entry.dir("etc"),
        Entry.whiteout("etc/b"),
        Entry.file("etc/c", b"c"),
        Entry.dir("var"),
        Entry.dir("var/lib"),
        Entry.dir("var/lib/db", 0o700),
        Entry.opaque("var/lib/db"),
        Entry.file("var/lib/db/new", b"new"),
        Entry.dir("var/lib/db/sub"),
        Entry.file("var/lib/db/sub/w", b"w"),
        Entry.dir("opt"),
        Entry.file("opt/app", b"now a file"),
        Entry.dir("srv"),
        Entry.dir("srv/thing", 0o750),
        Entry.file("srv/thing/inner", b"i"),
        Entry.dir("usr"),
        Entry.whiteout("usr/bin"),
        Entry.dir("home"),
        Entry.dir("home/u", 0o700, uid=1001, gid=1001),
    ],
    [
        Entry.dir("usr"),
        Entry.dir("usr/bin", 0o711),
        Entry.file("usr/bin/tool2", b"2", 0o755),
        Entry.dir("var"),
        Entry.dir("var/lib"),
        Entry.dir("var/lib/db", 0o700),
        Entry.whiteout("var/lib/db/new"),
        Entry.dir("etc"),
        Entry.file("etc/a", b"A2"),
        Entry.whiteout("etc/localtime"),
        Entry.dir("opt"),
        Entry.dir("opt/app"),
        Entry.file("opt/app/again", b"again"),
        Entry.dir("srv"),
        Entry.dir("srv/thing", 0o750),
        Entry.opaque("srv/thing"),
    ],
]


class TestOverlay(GraphDriverConformance):
    driver_name = "overlay"

    # ---- the conformance test overlayfs answers differently

    def test_changes(self, driver: OverlayDriver) -> None:
        """The suite's ``test_changes``, with overlayfs' documented hard link behaviour.

        With ``index=off`` (Docker's setting) a change to one name of a hard
        linked lower file copies up that name alone (overlayfs.rst, "Non-standard
        behavior"): ``chown bin/ping6`` leaves ``bin/ping`` as it was, and no
        longer linked. The mounted tree says so, and both differs report it.
        """
        base = self.layer(driver, fill=build_rich_tree)
        child = self.layer(driver, base, self._modify)
        found = {c.path: c.kind for c in driver.changes(child, base)}
        A, C, D = ChangeKind.ADD, ChangeKind.MODIFY, ChangeKind.DELETE
        expected = {
            "/etc": C,
            "/etc/passwd": C,
            "/etc/dangling": D,
            "/etc/localtime": C,
            "/bin": C,
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
        assert found == expected
        tree = self.manifest(driver, child)
        assert tree["bin/ping"]["gid"] == 0 and tree["bin/ping6"]["gid"] == 1
        assert "hardlink" not in tree["bin/ping6"]
        assert {c.path: c.kind for c in NaiveDiffDriver.changes(driver, child, base)} == expected
        everything = {c.path for c in driver.changes(base, None)}
        assert {"/bin", "/bin/su", "/run/socket", "/var/sparse"} <= everything
        assert all(c.kind == ChangeKind.ADD for c in driver.changes(base, None))
        assert driver.changes(self.layer(driver, base), base) == []

    # ---- layout

    def test_layout_links_and_lower_files(self, driver: OverlayDriver) -> None:
        base = self.layer(driver)
        child = self.layer(driver, base)
        grandchild = self.layer(driver, child)
        home = driver.home

        def link(id: str) -> str:
            with open(os.path.join(home, id, "link")) as f:
                return f.read()

        for id in (base, child, grandchild):
            assert _LINK.fullmatch(link(id))
            assert os.readlink(os.path.join(home, "l", link(id))) == f"../{id}/diff"
            assert os.path.samefile(os.path.join(home, "l", link(id)), os.path.join(home, id, "diff"))
        assert sorted(os.listdir(os.path.join(home, base))) == ["diff", "link"]
        assert sorted(os.listdir(os.path.join(home, child))) == ["diff", "link", "lower", "merged", "work"]
        with open(os.path.join(home, child, "lower")) as f:
            assert f.read() == f"l/{link(base)}"
        with open(os.path.join(home, grandchild, "lower")) as f:
            assert f.read() == f"l/{link(child)}:l/{link(base)}"
        assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(os.path.join(home, "l")).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(os.path.join(home, child, "work")).st_mode) == 0o700

        driver.remove(grandchild)
        assert sorted(os.listdir(os.path.join(home, "l"))) == sorted([link(base), link(child)])

    def test_metadata_and_status(self, driver: OverlayDriver) -> None:
        base = self.layer(driver)
        child = self.layer(driver, base)
        grandchild = self.layer(driver, child)
        d = lambda id, part: os.path.join(driver.home, id, part)  # noqa: E731
        assert driver.metadata(base) == {
            "MergedDir": d(base, "merged"),
            "UpperDir": d(base, "diff"),
            "WorkDir": d(base, "work"),
        }
        assert driver.metadata(grandchild) == {
            "LowerDir": f"{d(child, 'diff')}:{d(base, 'diff')}",
            "MergedDir": d(grandchild, "merged"),
            "UpperDir": d(grandchild, "diff"),
            "WorkDir": d(grandchild, "work"),
        }
        assert dict(driver.status()) == {
            "Backing Filesystem": fs.backing_filesystem(driver.home),
            "Supports d_type": "true",
            "Native Overlay Diff": "true",
            "Using metacopy": "false",
        }

    def test_metadata_is_remembered_until_removal(self, driver: OverlayDriver, monkeypatch: Any) -> None:
        """A layer's metadata is read from disk once; a removal forgets it, so an ID made again
        on another parent shows its new chain, and a removed one is NotFound."""
        base, other = self.layer(driver), self.layer(driver)
        child = self.layer(driver, base)
        first = driver.metadata(child)
        first["LowerDir"] = "changed by the caller"
        reads: list[str] = []
        real_lowers = OverlayDriver._lowers
        monkeypatch.setattr(OverlayDriver, "_lowers", lambda self, id: reads.append(id) or real_lowers(self, id))
        assert driver.metadata(child)["LowerDir"] == os.path.join(driver.home, base, "diff")
        assert reads == []  # remembered, and the caller's copy was its own
        driver.remove(child)
        with pytest.raises(NotFound):
            driver.metadata(child)
        driver.create(child, other)
        assert driver.metadata(child)["LowerDir"] == os.path.join(driver.home, other, "diff")
        assert reads.count(child) == 1  # read again once (create() also reads its parent's)

    def test_cleanup_live_leaves_running_roots_for_the_next_daemon(self, driver: OverlayDriver) -> None:
        """A shutdown with containers running (live restore) unmounts all but their roots; the
        next daemon's driver adopts those (no second mount on top), and its put() unmounts."""
        base = self.layer(driver, fill=lambda p: open(os.path.join(p, "from-base"), "w").close())
        running, stopped = self.layer(driver, base), self.layer(driver, base)
        root = driver.get(running)
        open(os.path.join(root, "written-while-running"), "w").close()
        driver.get(stopped)
        driver.cleanup_live([running])
        assert len(_overlay_mounts(root)) == 1
        assert _overlay_mounts(os.path.join(driver.home, stopped, "merged")) == []
        assert driver.references(running) == 0

        after = OverlayDriver(driver.home, driver.options)
        try:
            assert after.get(running) == root
            assert len(_overlay_mounts(root)) == 1  # adopted, not mounted again
            assert sorted(os.listdir(root)) == ["from-base", "written-while-running"]
            after.put(running)
            assert _overlay_mounts(root) == []
        finally:
            after.cleanup()

    def test_child_root_is_parents_root(self, driver: OverlayDriver) -> None:
        """A merged tree's root is its upper directory: a child starts with its parent's root metadata."""

        def odd_root(p: str) -> None:
            os.chmod(p, 0o750)
            os.chown(p, 1000, 1000)
            os.setxattr(p, "user.root", b"r")

        base = self.layer(driver, fill=odd_root)
        child = self.layer(driver, base)
        assert (
            self.manifest(driver, child)["."]
            == self.manifest(driver, base)["."]
            == {"type": "dir", "mode": oct(0o750), "uid": 1000, "gid": 1000, "xattrs": {"user.root": b"r".hex()}}
        )

    # ---- mounting

    def test_get_mounts_only_layers_with_parents(self, driver: OverlayDriver) -> None:
        base = self.layer(driver, fill=lambda p: open(os.path.join(p, "f"), "w").close())
        child = self.layer(driver, base)
        assert driver.get(base) == os.path.join(driver.home, base, "diff")
        try:
            assert fs.mounts_below(driver.home) == []
        finally:
            driver.put(base)
        merged = driver.get(child)
        try:
            assert merged == os.path.join(driver.home, child, "merged")
            assert os.path.exists(os.path.join(merged, "f"))
            (mount,) = _overlay_mounts(merged)
            assert f"lowerdir={driver.home}/l/" in mount.super_options  # short enough: absolute paths
            assert f"upperdir={driver.home}/{child}/diff" in mount.super_options
        finally:
            driver.put(child)
        assert fs.mounts_below(driver.home) == []

    def test_mounts_keep_the_diff_directory_complete(self, driver: OverlayDriver) -> None:
        """redirect_dir=off: renaming a lower directory is refused (EXDEV, rename(2)), never recorded as a redirect."""
        base = self.layer(driver, fill=lambda p: os.makedirs(os.path.join(p, "d/e")))
        child = self.layer(driver, base)
        merged = driver.get(child)
        try:
            with pytest.raises(OSError) as caught:
                os.rename(os.path.join(merged, "d"), os.path.join(merged, "moved"))
            assert caught.value.errno == errno.EXDEV
        finally:
            driver.put(child)

    def test_refcount_under_16_threads(self, driver: OverlayDriver) -> None:
        base = self.layer(driver, fill=lambda p: open(os.path.join(p, "f"), "w").close())
        child = self.layer(driver, base)
        merged = os.path.join(driver.home, child, "merged")
        start = threading.Barrier(16)
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                start.wait()
                for _ in range(25):
                    path = driver.get(child)
                    try:
                        assert path == merged
                        assert os.path.exists(os.path.join(path, "f"))
                        # Held by us: mounted, and exactly once (never stacked).
                        assert len(_overlay_mounts(merged)) == 1
                    finally:
                        driver.put(child)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        assert driver.references(child) == 0
        assert fs.mounts_below(driver.home) == []

    def test_get_put_leave_no_mounts(self, driver: OverlayDriver) -> None:
        chain = [self.layer(driver, fill=build_rich_tree)]
        for _ in range(4):
            chain.append(self.layer(driver, chain[-1], lambda p: open(os.path.join(p, new_id()[:8]), "w").close()))
        for id in chain:
            driver.get(id)
            driver.get(id)
        assert len(fs.mounts_below(driver.home)) == 4  # the base layer is not mounted
        for id in reversed(chain):
            driver.put(id)
            driver.put(id)
        assert fs.mounts_below(driver.home) == []
        assert not any(
            m.fstype == "overlay" and m.mount_point.startswith(os.path.realpath(driver.home)) for m in proc.mountinfo()
        )
        driver.put(chain[-1])  # one too many: logged, not fatal
        assert driver.references(chain[-1]) == 0

    def test_cleanup_unmounts_everything(self, driver: OverlayDriver) -> None:
        base = self.layer(driver)
        layers = [self.layer(driver, base) for _ in range(3)]
        for id in layers:
            driver.get(id)
        driver.get(layers[0])
        # A mount a daemon that died left behind, which this instance never made.
        stale = self.layer(driver, base)
        libc.mount("tmpfs", os.path.join(driver.home, stale, "merged"), "tmpfs", 0, "size=1m")
        assert len(fs.mounts_below(driver.home)) == 4
        driver.cleanup()
        assert fs.mounts_below(driver.home) == []
        assert all(driver.references(id) == 0 for id in layers)
        for id in [*layers, stale, base]:
            driver.remove(id)

    def test_stale_mount_is_replaced(self, driver: OverlayDriver) -> None:
        base = self.layer(driver, fill=lambda p: open(os.path.join(p, "f"), "w").close())
        child = self.layer(driver, base)
        merged = os.path.join(driver.home, child, "merged")
        libc.mount("tmpfs", merged, "tmpfs", 0, "size=1m")
        assert driver.get(child) == merged
        try:
            assert os.path.exists(os.path.join(merged, "f"))
            assert [m.fstype for m in proc.mountinfo() if m.mount_point == os.path.realpath(merged)] == ["overlay"]
        finally:
            driver.put(child)
        assert fs.mounts_below(driver.home) == []

    def test_live_mount_of_a_previous_daemon_is_adopted(self, driver: OverlayDriver) -> None:
        """A restarted daemon (a new driver on the same home) keeps the overlay a running
        container uses: same mount, what was written through it still there; the last put
        unmounts it."""
        base = self.layer(driver, fill=lambda p: open(os.path.join(p, "f"), "w").close())
        child = self.layer(driver, base)
        merged = driver.get(child)
        with open(os.path.join(merged, "written-before"), "w") as fh:
            fh.write("x")
        before = [m.mount_id for m in proc.mountinfo() if m.mount_point == os.path.realpath(merged)]
        again = OverlayDriver(driver.home)
        try:
            assert again.get(child) == merged
            after = [m.mount_id for m in proc.mountinfo() if m.mount_point == os.path.realpath(merged)]
            assert after == before and len(after) == 1
            assert os.path.exists(os.path.join(merged, "f"))
            assert os.path.exists(os.path.join(merged, "written-before"))
            again.put(child)
            assert fs.mounts_below(driver.home) == []
        finally:
            again.cleanup()
            driver.cleanup()

    def test_deep_chain_and_its_limit(self, driver: OverlayDriver) -> None:
        """130 layers mount (relative paths from the home); past what fits in a page, create refuses."""
        limit = driver.max_depth(new_id())
        assert 130 <= limit <= OVL_MAX_STACK
        chain: list[str] = []
        for i in range(limit + 1):
            id = new_id()
            driver.create(id, chain[-1] if chain else None)
            driver.apply_diff(
                id, chain[-1] if chain else None, io.BytesIO(make_layer_tar([Entry.file(f"f{i:03}", str(i).encode())]))
            )
            chain.append(id)

        for depth in (130, limit):
            top = chain[depth]
            merged = driver.get(top)
            try:
                assert sorted(os.listdir(merged)) == [f"f{i:03}" for i in range(depth + 1)]
                with open(os.path.join(merged, "f000")) as f:
                    assert f.read() == "0"
                (mount,) = _overlay_mounts(merged)
                assert "lowerdir=l/" in mount.super_options  # too long for absolute paths
            finally:
                driver.put(top)
        assert fs.mounts_below(driver.home) == []

        with pytest.raises(InvalidParameter, match=f"would have {limit + 1} lower layers.*flatten"):
            driver.create(new_id(), chain[-1])
        assert len(os.listdir(driver.home)) == len(chain) + 1  # nothing left of the refused layer (+ l/)

    def test_mount_failure_names_a_remedy(self, driver: OverlayDriver) -> None:
        base = self.layer(driver)
        child = self.layer(driver, base)
        with open(os.path.join(driver.home, base, "link")) as f:
            link = f.read()
        os.unlink(os.path.join(driver.home, "l", link))
        with pytest.raises(HostError, match=rf"overlay: mount failed \(ENOENT\): .*chain is broken.*l/{link}"):
            driver.get(child)
        assert driver.references(child) == 0
        assert fs.mounts_below(driver.home) == []

    def test_mount_failure_messages(self) -> None:
        assert mount_failure(OSError(errno.EINVAL, "Invalid argument")).startswith(
            "overlay: mount failed (EINVAL): is the backing fs overlay?"
        )
        assert "modprobe overlay" in mount_failure(OSError(errno.ENODEV, "No such device"))
        assert (
            mount_failure(OSError(errno.EIO, "Input/output error")) == "overlay: mount failed (EIO): Input/output error"
        )

    # ---- removal and restarts

    def test_remove_refuses_parents_and_layers_in_use(self, driver: OverlayDriver) -> None:
        base = self.layer(driver)
        child = self.layer(driver, base)
        with pytest.raises(Conflict, match="parent of 1 layers"):
            driver.remove(base)
        driver.get(child)
        with pytest.raises(Conflict, match="in use"):
            driver.remove(child)
        driver.put(child)
        driver.remove(child)
        driver.remove(base)
        assert driver.wait_removed(30)
        assert os.listdir(driver.home) == ["l"] and os.listdir(os.path.join(driver.home, "l")) == []

    def test_restart_relearns_parents_and_sweeps_leftovers(self, driver: OverlayDriver) -> None:
        base = self.layer(driver)
        child = self.layer(driver, base)
        for name in (f".tmp-{new_id()}-x", f".rm-{new_id()}-y", ".probe-z"):
            os.makedirs(os.path.join(driver.home, name, "diff"))
        os.symlink(f"../{new_id()}/diff", os.path.join(driver.home, "l", "A" * 26))
        again = OverlayDriver(driver.home)
        try:
            assert sorted(os.listdir(driver.home)) == sorted(["l", base, child])
            assert len(os.listdir(os.path.join(driver.home, "l"))) == 2
            with pytest.raises(Conflict):
                again.remove(base)
            assert again.changes(child, base) == []
        finally:
            again.cleanup()

    # ---- the differ

    def test_three_layers_match_vfs(self, driver: OverlayDriver, vfs: VfsDriver) -> None:
        trees = []
        for store in (driver, vfs):
            parent = None
            for layer in THREE_LAYERS:
                id = new_id()
                store.create(id, parent)
                store.apply_diff(id, parent, io.BytesIO(make_layer_tar(layer)))
                parent = id
            trees.append(self.manifest(store, parent, mtime="ns"))
        overlay_tree, vfs_tree = trees
        # Layer 3 replaced etc/a, the other name of etc/a-again: in vfs the
        # old inode is gone; overlayfs shows the lower inode, whose st_nlink
        # still counts the hidden name. Names, content and link groups agree.
        assert "hardlink" in overlay_tree["etc/a-again"] and "hardlink" not in vfs_tree["etc/a-again"]
        assert _without_lone_links(overlay_tree) == _without_lone_links(vfs_tree)
        # What the layers promise is really there.
        assert "etc/b" not in vfs_tree and "etc/localtime" not in vfs_tree and "usr/bin/tool" not in vfs_tree
        assert sorted(k for k in vfs_tree if k.startswith("var/lib/db/")) == ["var/lib/db/sub", "var/lib/db/sub/w"]
        assert sorted(k for k in vfs_tree if k.startswith("opt/")) == ["opt/app", "opt/app/again"]
        assert vfs_tree["srv/thing"]["type"] == "dir" and "srv/thing/inner" not in vfs_tree
        assert vfs_tree["etc/a"]["sha256"] == hashlib.sha256(b"A2").hexdigest()
        assert vfs_tree["home/u"]["uid"] == 1001

    def test_native_diff_equals_naive(self, driver: OverlayDriver) -> None:
        base = self.layer(driver, fill=build_rich_tree)
        child = self.layer(driver, base, self._modify)
        native = _read(driver.diff(child, base))
        naive = _read(NaiveDiffDriver.diff(driver, child, base))
        assert set(_tar_entries(native)) == set(_tar_entries(naive))
        assert native == naive  # same order too: both sort depth first
        assert driver.diff_size(child, base) == NaiveDiffDriver.diff_size(driver, child, base)
        assert fs.mounts_below(driver.home) == []  # the native differ never mounts

    def test_native_changes_with_opaque_directories_equal_naive(self, driver: OverlayDriver) -> None:
        layers = []
        for layer in THREE_LAYERS:
            id = new_id()
            driver.create(id, layers[-1] if layers else None)
            driver.apply_diff(id, layers[-1] if layers else None, io.BytesIO(make_layer_tar(layer)))
            layers.append(id)

        def recreate(p: str) -> None:
            # Through the mount: overlayfs makes the new directory opaque.
            fs.safe_rmtree(os.path.join(p, "usr/lib"))
            os.mkdir(os.path.join(p, "usr/lib"))
            with open(os.path.join(p, "usr/lib/libnew"), "w") as f:
                f.write("new")
            os.unlink(os.path.join(p, "etc/a-again"))

        top = self.layer(driver, layers[-1], recreate)
        assert os.getxattr(os.path.join(driver.home, top, "diff/usr/lib"), "trusted.overlay.opaque") == b"y"
        for id, parent in ((layers[1], layers[0]), (layers[2], layers[1]), (top, layers[2])):
            native = driver.changes(id, parent)
            assert native == NaiveDiffDriver.changes(driver, id, parent)
            assert driver.diff_size(id, parent) == NaiveDiffDriver.diff_size(driver, id, parent)
        assert {str(c) for c in driver.changes(layers[1], layers[0])} >= {
            "D /etc/b",
            "C /var/lib/db",
            "D /var/lib/db/x",
            "D /var/lib/db/y",
            "C /var/lib/db/sub",
            "D /var/lib/db/sub/z",
            "A /var/lib/db/sub/w",
            "D /usr/bin",
            "C /opt/app",
            "C /srv/thing",
        }
        assert {str(c) for c in driver.changes(top, layers[2])} == {
            "C /usr",
            "C /usr/lib",
            "D /usr/lib/libz",
            "A /usr/lib/libnew",
            "C /etc",
            "D /etc/a-again",
        }

    def test_native_diff_exports_whiteouts_and_opaque_markers(self, driver: OverlayDriver) -> None:
        l1 = new_id()
        driver.create(l1)
        driver.apply_diff(l1, None, io.BytesIO(make_layer_tar(THREE_LAYERS[0])))
        l2 = new_id()
        driver.create(l2, l1)
        assert driver.apply_diff(l2, l1, io.BytesIO(make_layer_tar(THREE_LAYERS[1]))) == 16
        upper = os.path.join(driver.home, l2, "diff")
        assert os.lstat(os.path.join(upper, "etc/b")).st_rdev == 0  # stored as overlayfs whiteouts
        entries = {e[0]: e for e in _tar_entries(_read(driver.diff(l2, l1)))}
        assert {"etc/.wh.b", "usr/.wh.bin", "var/lib/db/.wh..wh..opq"} <= set(entries)
        assert not any("trusted.overlay" in key for e in entries.values() for key, _ in e[10])
        names = list(entries)
        assert names.index("var/lib/db") < names.index("var/lib/db/.wh..wh..opq") < names.index("var/lib/db/new")
        # Round trip: the exported layer applied again gives the same upper directory.
        copy = new_id()
        driver.create(copy, l1)
        driver.apply_diff(copy, l1, io.BytesIO(_read(driver.diff(l2, l1))))
        assert tree_manifest(os.path.join(driver.home, copy, "diff")) == tree_manifest(upper)

    def test_other_parent_uses_the_naive_differ(self, driver: OverlayDriver) -> None:
        base = self.layer(driver, fill=lambda p: open(os.path.join(p, "a"), "w").close())
        child = self.layer(driver, base, lambda p: open(os.path.join(p, "b"), "w").close())
        grandchild = self.layer(driver, child, lambda p: os.unlink(os.path.join(p, "a")))
        assert [str(c) for c in driver.changes(grandchild, base)] == ["D /a", "A /b"]
        assert [str(c) for c in driver.changes(grandchild, child)] == ["D /a"]
        names = [e[0] for e in _tar_entries(_read(driver.diff(grandchild, None)))]
        assert names == ["b"]  # the whole tree, against nothing
        assert fs.mounts_below(driver.home) == []

    def test_apply_diff_to_a_mounted_layer_goes_through_the_mount(self, driver: OverlayDriver) -> None:
        base = self.layer(driver, fill=lambda p: open(os.path.join(p, "a"), "w").close())
        child = self.layer(driver, base)
        merged = driver.get(child)
        try:
            driver.apply_diff(child, base, io.BytesIO(make_layer_tar([Entry.whiteout("a"), Entry.file("b", b"b")])))
            assert os.listdir(merged) == ["b"]
        finally:
            driver.put(child)
        assert [str(c) for c in driver.changes(child, base)] == ["D /a", "A /b"]


def test_upper_changes_of_an_empty_upper(tmp_path: Any) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "d").mkdir(parents=True)
    upper.mkdir()
    assert upper_changes(str(upper), [str(lower)]) == []


# ---- probing


def test_probe_leaves_nothing_behind(tmp_path: Any) -> None:
    home = tmp_path / "root" / "overlay"
    OverlayDriver.probe(str(home))
    assert os.listdir(tmp_path) == []
    home.mkdir(parents=True)
    OverlayDriver.probe(str(home))
    assert os.listdir(home) == []


def test_probe_refuses_storage_options(tmp_path: Any) -> None:
    with pytest.raises(InvalidParameter, match="overlay takes none"):
        OverlayDriver.probe(str(tmp_path / "overlay"), ["overlay2.size=10G"])


def test_supports_d_type(tmp_path: Any) -> None:
    assert supports_d_type(str(tmp_path))
    assert os.listdir(tmp_path) == []


@pytest.fixture
def foreign_overlay(tmp_path: Any) -> Iterator[str]:
    """An overlay mounted on ``<tmp_path>/ovl/merged`` (unmounted and removed afterwards)."""
    base = tmp_path / "ovl"
    for d in ("lower", "upper", "work", "merged"):
        (base / d).mkdir(parents=True)
    merged = str(base / "merged")
    libc.mount(
        "overlay", merged, "overlay", 0, f"lowerdir={base / 'lower'},upperdir={base / 'upper'},workdir={base / 'work'}"
    )
    try:
        yield merged
    finally:
        fs.safe_rmtree(str(base))


def test_probe_refuses_overlay_on_overlay(foreign_overlay: str) -> None:
    home = os.path.join(foreign_overlay, "root", "overlay")
    with pytest.raises(IncompatibleFilesystem, match="is on overlay: overlayfs cannot use another overlay"):
        OverlayDriver.probe(home)
    assert os.listdir(foreign_overlay) == []
    os.makedirs(home)
    with pytest.raises(IncompatibleFilesystem):
        OverlayDriver(home)


@pytest.fixture
def proc_filesystems_without_overlay(tmp_path: Any) -> Iterator[None]:
    """/proc/filesystems without its overlay line, bind mounted over the real one (sandbox only)."""
    if not sandbox.in_sandbox():
        pytest.skip("bind mounts over /proc/filesystems only inside the test sandbox")
    with open("/proc/filesystems") as f:
        lines = [line for line in f if line.split()[-1:] != ["overlay"]]
    fake = tmp_path / "filesystems"
    fake.write_text("".join(lines))
    libc.mount(str(fake), "/proc/filesystems", None, libc.MS_BIND)
    try:
        yield
    finally:
        libc.umount2("/proc/filesystems")


def test_probe_without_kernel_support(proc_filesystems_without_overlay: None, tmp_path: Any) -> None:
    with pytest.raises(NotSupported, match=r"overlay is not supported by the kernel \(not in /proc/filesystems\)"):
        OverlayDriver.probe(str(tmp_path / "overlay"))


def test_link_names_are_overlay2_sized() -> None:
    assert len(base64.b32encode(bytes(16)).rstrip(b"=")) == 26
