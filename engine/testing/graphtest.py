"""The graph driver conformance suite.

Every graph driver (vfs, overlay, aufs, btrfs, devmapper, third-party ones)
proves itself against the same tests, as moby's ``graphtest`` does. A
driver's own test module is a few lines::

    from engine.testing.graphtest import GraphDriverConformance

    class TestVfs(GraphDriverConformance):
        driver_name = "vfs"

The suite loads the driver through its entry point (so it tests what is
installed), probes it in a temporary root and skips every test with the
probe's reason when the driver cannot run here.

The contract it checks, beyond :class:`engine.drivers.graph.GraphDriver`'s
docstrings:

* IDs are validated (:func:`engine.drivers.graph.validate_id`):
  ``InvalidParameter``; creating an existing ID is ``Conflict``; a missing
  parent, and get/remove/metadata of a missing layer, are ``NotFound``;
* a layer sees its parent's tree with full fidelity (owners, modes with
  setuid, xattrs including ``trusted.*`` and ``security.capability``, hard
  links, symlinks, fifos, sockets, device nodes, nanosecond mtimes), and
  writes to a layer never show in its parent;
* ``diff`` of a layer applied with ``apply_diff`` onto a fresh layer on the
  same parent gives an identical tree (times to the second, as tars carry);
  whiteouts and opaque directories in applied tars hide lower content;
* removing a layer others are based on either refuses (``Conflict``) or
  leaves them intact; never a dangling child.

The layer tars and trees it works with come from
:mod:`engine.testing.layertar`, which other tests share.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import pytest

from engine.archive import ChangeKind
from engine.drivers.discovery import load_drivers
from engine.drivers.graph import GraphDriver
from engine.errors import Conflict, InvalidParameter, NotFound, NotSupported
from engine.sys import fs
from engine.testing.layertar import (
    CAP_NET_BIND_SERVICE,
    Entry,
    build_rich_tree,
    make_layer_tar,
    short_digest,
    tree_manifest,
)

# --------------------------------------------------------------------------
# the suite


def new_id() -> str:
    """A random layer ID (64 hex digits)."""
    return secrets.token_hex(32)


class GraphDriverConformance:
    """Tests every graph driver must pass; subclass it with ``driver_name`` set.

    Tests run as root in the session sandbox (private mount namespace) on a
    fresh driver home below ``tmp_path``; they are ``root`` tests.
    """

    pytestmark: ClassVar[list[Any]] = [pytest.mark.root("mounts, owners")]

    #: The entry-point name of the driver under test.
    driver_name: ClassVar[str] = ""
    #: ``--storage-opt`` values to construct it with.
    driver_options: ClassVar[Sequence[str]] = ()

    @pytest.fixture
    def driver(self, tmp_path: Any) -> Iterator[GraphDriver]:
        """The driver, constructed on ``<tmp_path>/root/<name>``.

        Skips with the probe's reason when the driver cannot run here. At
        the end: ``cleanup()``, then the home is unmounted and removed.
        """
        if not self.driver_name:
            pytest.fail("set driver_name on the GraphDriverConformance subclass")
        entries = load_drivers("graph")
        entry = entries.get(self.driver_name)
        if entry is None:
            pytest.fail(f"graph driver {self.driver_name!r} is not installed (installed: {', '.join(entries)})")
        if not entry.loaded:
            pytest.fail(f"graph driver {self.driver_name!r} failed to load: {entry.error}")
        home = os.path.join(str(tmp_path), "root", self.driver_name)
        try:
            entry.cls.probe(home, self.driver_options)
        except NotSupported as exc:
            pytest.skip(f"graph driver {self.driver_name} not supported here: {exc}")
        drv = entry.cls(home, self.driver_options)
        try:
            yield drv
        finally:
            drv.cleanup()
            fs.safe_rmtree(os.path.join(str(tmp_path), "root"))

    # ---- helpers

    @staticmethod
    def layer(driver: GraphDriver, parent: str | None = None, fill: Callable[[str], None] | None = None) -> str:
        """Create a layer on ``parent``, let ``fill`` write into its tree, return its ID."""
        id = new_id()
        driver.create(id, parent)
        if fill is not None:
            path = driver.get(id)
            try:
                fill(path)
            finally:
                driver.put(id)
        return id

    @staticmethod
    def manifest(driver: GraphDriver, id: str, **kw: Any) -> dict[str, dict[str, Any]]:
        """:func:`tree_manifest` of a layer's full tree."""
        path = driver.get(id)
        try:
            return tree_manifest(path, **kw)
        finally:
            driver.put(id)

    # ---- lifecycle

    def test_create_exists_remove(self, driver: GraphDriver) -> None:
        id = new_id()
        assert not driver.exists(id)
        driver.create(id)
        assert driver.exists(id)
        path = driver.get(id)
        try:
            assert os.path.isdir(path)
            assert os.listdir(path) == []
        finally:
            driver.put(id)
        driver.remove(id)
        assert not driver.exists(id)
        with pytest.raises(NotFound):
            driver.get(id)

    def test_create_existing_conflicts(self, driver: GraphDriver) -> None:
        id = self.layer(driver)
        with pytest.raises(Conflict):
            driver.create(id)

    def test_create_missing_parent(self, driver: GraphDriver) -> None:
        id = new_id()
        with pytest.raises(NotFound):
            driver.create(id, new_id())
        assert not driver.exists(id)

    def test_missing_layer(self, driver: GraphDriver) -> None:
        id = new_id()
        with pytest.raises(NotFound):
            driver.remove(id)
        with pytest.raises(NotFound):
            driver.get(id)
        with pytest.raises(NotFound):
            driver.metadata(id)

    @pytest.mark.parametrize(
        "bad",
        [
            "",
            ".",
            "..",
            "../" + "a" * 61,
            "a/b",
            "/etc",
            "A" * 64,
            "a" * 63,
            "a" * 64 + "/..",
            "a" * 64 + "-init/..",
            "a" * 64 + "\n",
        ],
    )
    def test_invalid_ids(self, driver: GraphDriver, bad: str) -> None:
        for call in (driver.create, driver.get, driver.remove, driver.exists):
            with pytest.raises(InvalidParameter):
                call(bad)
        with pytest.raises(InvalidParameter):
            driver.create(new_id(), bad)

    def test_init_layer_id(self, driver: GraphDriver) -> None:
        base = self.layer(driver)
        init = new_id() + "-init"
        driver.create(init, base)
        assert driver.exists(init)
        driver.remove(init)

    def test_get_put_refcount(self, driver: GraphDriver) -> None:
        id = self.layer(driver)
        first = driver.get(id)
        second = driver.get(id)
        assert first == second
        with open(os.path.join(first, "f"), "w") as f:
            f.write("x")
        driver.put(id)
        # Still referenced once: still usable.
        with open(os.path.join(second, "f")) as f:
            assert f.read() == "x"
        driver.put(id)
        again = driver.get(id)
        try:
            with open(os.path.join(again, "f")) as f:
                assert f.read() == "x"
        finally:
            driver.put(id)
        driver.remove(id)

    def test_get_put_concurrent(self, driver: GraphDriver) -> None:
        id = self.layer(driver, fill=lambda p: open(os.path.join(p, "f"), "w").close())
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                for _ in range(50):
                    path = driver.get(id)
                    try:
                        assert os.path.exists(os.path.join(path, "f"))
                    finally:
                        driver.put(id)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        driver.remove(id)  # balanced: nothing is left referenced
        assert not driver.exists(id)

    def test_status_and_metadata(self, driver: GraphDriver) -> None:
        id = self.layer(driver)
        status = driver.status()
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in status)
        meta = driver.metadata(id)
        assert meta and all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())

    # ---- content

    def test_parent_chain(self, driver: GraphDriver) -> None:
        def base(p: str) -> None:
            os.makedirs(os.path.join(p, "a/b"))
            with open(os.path.join(p, "a/b/one"), "w") as f:
                f.write("1")
            with open(os.path.join(p, "gone"), "w") as f:
                f.write("bye")

        def middle(p: str) -> None:
            with open(os.path.join(p, "a/b/two"), "w") as f:
                f.write("2")
            os.unlink(os.path.join(p, "gone"))

        def upper(p: str) -> None:
            with open(os.path.join(p, "a/b/one"), "w") as f:
                f.write("one")
            os.mkdir(os.path.join(p, "c"))

        def top(p: str) -> None:
            with open(os.path.join(p, "c/four"), "w") as f:
                f.write("4")

        l1 = self.layer(driver, None, base)
        l2 = self.layer(driver, l1, middle)
        l3 = self.layer(driver, l2, upper)
        l4 = self.layer(driver, l3, top)

        def files(id: str) -> dict[str, str]:
            return {k: v.get("sha256", v["type"]) for k, v in self.manifest(driver, id).items()}

        def sha(text: str) -> str:
            return hashlib.sha256(text.encode()).hexdigest()

        assert files(l1) == {".": "dir", "a": "dir", "a/b": "dir", "a/b/one": sha("1"), "gone": sha("bye")}
        assert files(l2) == {".": "dir", "a": "dir", "a/b": "dir", "a/b/one": sha("1"), "a/b/two": sha("2")}
        assert files(l3) == {
            ".": "dir",
            "a": "dir",
            "a/b": "dir",
            "a/b/one": sha("one"),
            "a/b/two": sha("2"),
            "c": "dir",
        }
        assert files(l4) == {**files(l3), "c/four": sha("4")}

    def test_child_writes_do_not_reach_parent(self, driver: GraphDriver) -> None:
        base = self.layer(driver, fill=build_rich_tree)
        before = self.manifest(driver, base, mtime="ns")

        def vandalize(p: str) -> None:
            with open(os.path.join(p, "etc/passwd"), "a") as f:
                f.write("evil\n")
            os.chmod(os.path.join(p, "bin/su"), 0o755)
            os.chown(os.path.join(p, "home/user/notes"), 0, 0)
            os.setxattr(os.path.join(p, "home/user/notes"), "user.comment", b"changed")
            os.unlink(os.path.join(p, "bin/ping"))
            fs.safe_rmtree(os.path.join(p, "home/user"))
            os.rename(os.path.join(p, "etc/localtime"), os.path.join(p, "etc/lt"))

        self.layer(driver, base, vandalize)
        assert self.manifest(driver, base, mtime="ns") == before

    def test_full_fidelity_inheritance(self, driver: GraphDriver) -> None:
        base = self.layer(driver, fill=build_rich_tree)
        expected = self.manifest(driver, base, mtime="ns")
        # Everything build_rich_tree promises is really there.
        assert expected["bin/su"]["mode"] == oct(0o4755)
        assert expected["bin/su"]["xattrs"]["security.capability"] == CAP_NET_BIND_SERVICE.hex()
        assert expected["home/user/notes"]["xattrs"]["trusted.md5"] == b"\x00\xff binary".hex()
        assert expected["bin/ping"]["hardlink"] == expected["bin/ping6"]["hardlink"] == "bin/ping"
        assert expected["dev/null"]["rdev"] == (1, 3) and expected["dev/loop0"]["type"] == "block"
        assert expected["run/socket"]["type"] == "socket" and expected["run/fifo"]["type"] == "fifo"
        assert expected["tmp"]["mode"] == oct(0o1777)
        assert expected["opt/nanos"]["mtime_ns"] == 1_600_000_000_987_654_321

        child = self.layer(driver, base)
        grandchild = self.layer(driver, child)
        assert self.manifest(driver, child, mtime="ns") == expected
        assert self.manifest(driver, grandchild, mtime="ns") == expected

    # ---- the differ

    @staticmethod
    def _modify(p: str) -> None:
        """Changes of every kind on top of :func:`build_rich_tree`."""
        j = lambda *parts: os.path.join(p, *parts)  # noqa: E731
        with open(j("etc/passwd"), "a") as f:  # content
            f.write("user:x:1000:1000::/home/user:/bin/sh\n")
        os.chmod(j("etc/passwd"), 0o600)  # mode
        os.chown(j("bin/ping6"), 0, 1)  # owner (of both links)
        os.setxattr(j("home/user/notes"), "user.comment", b"changed")  # xattr
        os.unlink(j("etc/dangling"))  # delete a file
        fs.safe_rmtree(j("var/empty"))  # delete a directory
        os.unlink(j("etc/localtime"))  # retarget a symlink
        os.symlink("/usr/share/zoneinfo/Europe/Paris", j("etc/localtime"))
        fs.safe_rmtree(j("opt"))  # a directory becomes a file
        with open(j("opt"), "wb") as f:
            f.write(b"now a file")
        os.makedirs(j("srv/app/data"))  # new tree, new owner and modes
        os.chown(j("srv/app"), 1000, 1000)
        os.chmod(j("srv/app/data"), 0o700)
        with open(j("srv/app/run"), "wb") as f:
            f.write(b"#!/bin/sh\n")
        os.chmod(j("srv/app/run"), 0o6755)
        os.setxattr(j("srv/app/run"), "security.capability", CAP_NET_BIND_SERVICE)
        os.setxattr(j("srv/app/run"), "trusted.app", b"t")
        os.setxattr(j("srv/app/run"), "user.app", b"u")
        os.link(j("srv/app/run"), j("srv/app/run-again"))  # a new hard link pair
        os.symlink("run", j("srv/app/start"))
        os.mkfifo(j("srv/app/pipe"))
        os.mknod(j("srv/app/zero"), stat.S_IFCHR | 0o666, os.makedev(1, 5))
        with open(j("srv/app/big"), "wb") as f:
            f.write(os.urandom(3 << 20))
        os.utime(j("srv/app/run"), ns=(1_700_000_000_555_000_000, 1_700_000_000_555_000_000))

    def test_changes(self, driver: GraphDriver) -> None:
        base = self.layer(driver, fill=build_rich_tree)
        child = self.layer(driver, base, self._modify)
        found = {c.path: c.kind for c in driver.changes(child, base)}
        A, C, D = ChangeKind.ADD, ChangeKind.MODIFY, ChangeKind.DELETE  # noqa: N806 (a legend for the table below)
        expected = {
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
        assert found == expected
        everything = {c.path for c in driver.changes(base, None)}
        assert {"/bin", "/bin/su", "/run/socket", "/var/sparse"} <= everything
        assert all(c.kind == ChangeKind.ADD for c in driver.changes(base, None))
        assert driver.changes(self.layer(driver, base), base) == []

    def test_diff_apply_roundtrip(self, driver: GraphDriver) -> None:
        base = self.layer(driver, fill=build_rich_tree)
        child = self.layer(driver, base, self._modify)
        diff = driver.diff(child, base)
        try:
            data = diff.read()
        finally:
            diff.close()
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = {m.name: m for m in tar}
        assert members["etc/.wh.dangling"].size == 0 and members["var/.wh.empty"].size == 0
        assert members["srv/app/run-again"].islnk() or members["srv/app/run"].islnk()
        content = sum(m.size for m in members.values() if m.isreg())

        copy = self.layer(driver, base)
        applied = driver.apply_diff(copy, base, io.BytesIO(data))
        assert applied == content
        assert self.manifest(driver, copy, mtime="s") == self.manifest(driver, child, mtime="s")
        # The same tree diffs to the same bytes.
        again = driver.diff(copy, base)
        try:
            assert again.read() == data
        finally:
            again.close()
        assert driver.diff_size(child, base) == driver.diff_size(copy, base) > 3 << 20

    def test_diff_of_base_layer(self, driver: GraphDriver) -> None:
        base = self.layer(driver, fill=build_rich_tree)
        stream = driver.diff(base, None)
        try:
            data = stream.read()
        finally:
            stream.close()
        copy = self.layer(driver)
        driver.apply_diff(copy, None, io.BytesIO(data))
        assert self.manifest(driver, copy, mtime="s", sockets=False) == self.manifest(
            driver, base, mtime="s", sockets=False
        )

    def test_diff_stream_releases_layer(self, driver: GraphDriver) -> None:
        base = self.layer(driver, fill=build_rich_tree)
        child = self.layer(driver, base, self._modify)
        stream = driver.diff(child, base)
        stream.read(100)
        stream.close()  # closed early: the layer must be released
        driver.remove(child)
        assert not driver.exists(child)

    def test_apply_diff_whiteouts_three_layers(self, driver: GraphDriver) -> None:
        layer1 = make_layer_tar(
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
            ]
        )
        layer2 = make_layer_tar(
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
            ]
        )
        layer3 = make_layer_tar(
            [
                Entry.file("etc/a", b"again"),
                Entry.whiteout("usr"),
                Entry.dir("opt/x"),
                Entry.file("opt/x/fresh", b"f"),
                Entry.whiteout("var/cache/new"),
            ]
        )
        l1 = self.layer(driver)
        assert driver.apply_diff(l1, None, io.BytesIO(layer1)) == 6
        l2 = self.layer(driver, l1)
        driver.apply_diff(l2, l1, io.BytesIO(layer2))
        l3 = self.layer(driver, l2)
        driver.apply_diff(l3, l2, io.BytesIO(layer3))

        def files(id: str) -> dict[str, str]:
            return {k: v.get("sha256", v["type"])[:8] for k, v in self.manifest(driver, id).items() if k != "."}

        h = short_digest
        assert files(l1) == {
            "etc": "dir",
            "etc/a": h(b"a"),
            "etc/b": h(b"b"),
            "opt": "dir",
            "opt/x": "dir",
            "opt/x/y": h(b"y"),
            "usr": "dir",
            "usr/lib": "dir",
            "usr/lib/z": h(b"z"),
            "var": "dir",
            "var/cache": "dir",
            "var/cache/c1": h(b"1"),
            "var/cache/sub": "dir",
            "var/cache/sub/c2": h(b"2"),
        }
        assert files(l2) == {
            "etc": "dir",
            "etc/b": h(b"b"),
            "etc/c": h(b"c"),
            "opt": "dir",
            "usr": "dir",
            "usr/lib": "dir",
            "usr/lib/z": h(b"z"),
            "var": "dir",
            "var/cache": "dir",
            "var/cache/early": h(b"e"),
            "var/cache/new": h(b"n"),
        }
        assert self.manifest(driver, l2)["var/cache"]["mode"] == oct(0o700)
        assert files(l3) == {
            "etc": "dir",
            "etc/a": h(b"again"),
            "etc/b": h(b"b"),
            "etc/c": h(b"c"),
            "opt": "dir",
            "opt/x": "dir",
            "opt/x/fresh": h(b"f"),
            "var": "dir",
            "var/cache": "dir",
            "var/cache/early": h(b"e"),
        }

    def test_apply_diff_refuses_hostile_layer(self, driver: GraphDriver, tmp_path: Any) -> None:
        canary = os.path.join(str(tmp_path), "canary")
        os.mkdir(canary)
        id = self.layer(driver)
        evil = make_layer_tar([Entry.file("../../../../../../../../" + canary.lstrip("/") + "/pwned", b"x")])
        with pytest.raises(InvalidParameter, match="outside of"):
            driver.apply_diff(id, None, io.BytesIO(evil))
        assert os.listdir(canary) == []

    # ---- removal

    def test_remove_layer_with_children(self, driver: GraphDriver) -> None:
        base = self.layer(driver, fill=build_rich_tree)
        child = self.layer(driver, base, lambda p: open(os.path.join(p, "mine"), "w").close())
        expected = self.manifest(driver, child, mtime="ns")
        try:
            driver.remove(base)
        except Conflict:
            assert driver.exists(base)  # the driver refuses: fine
        else:
            assert not driver.exists(base)
        assert self.manifest(driver, child, mtime="ns") == expected

    def test_removed_layer_is_gone_at_once_and_its_files_after_wait_removed(self, driver: GraphDriver) -> None:
        ids = [self.layer(driver, fill=build_rich_tree) for _ in range(3)]
        for id in ids:
            driver.remove(id)
            assert not driver.exists(id)
            with pytest.raises(NotFound):
                driver.get(id)
        assert driver.wait_removed(30)
        left = [os.path.join(top, name) for top, dirs, files in os.walk(driver.home) for name in dirs + files]
        assert not [path for path in left if any(id in path for id in ids)]

    def test_remove_after_cleanup(self, driver: GraphDriver) -> None:
        id = self.layer(driver, fill=build_rich_tree)
        driver.get(id)
        driver.cleanup()  # releases what is still held (daemon shutdown)
        driver.remove(id)
        assert not driver.exists(id)

    def test_running_root_after_cleanup_live(self, driver: GraphDriver) -> None:
        """A shutdown that leaves containers running (``cleanup_live``) keeps their roots or
        releases them, as the driver can; either way the next get() shows the same tree, written
        to while it ran, and the layer can be put and removed."""
        id = self.layer(driver, self.layer(driver, fill=build_rich_tree))
        path = driver.get(id)
        with open(os.path.join(path, "written-while-running"), "w") as f:
            f.write("kept\n")
        expected = tree_manifest(path)
        driver.cleanup_live([id])
        try:
            assert tree_manifest(driver.get(id)) == expected
        finally:
            driver.put(id)
        driver.remove(id)
        assert not driver.exists(id)
