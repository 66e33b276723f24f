"""The graph driver conformance suite, with helpers to build layer tars and compare trees.

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

Helpers for other tests: :class:`Entry` and :func:`make_layer_tar` build
layer tars (whiteouts, opaque markers, links, devices, hostile names);
:func:`tree_manifest` describes a tree so two trees compare with ``==``;
:func:`build_rich_tree` fills a directory with every kind of entry.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import secrets
import stat
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
import zstandard

from engine import archive
from engine.archive import ChangeKind
from engine.drivers.discovery import load_drivers
from engine.drivers.graph import GraphDriver
from engine.errors import Conflict, InvalidParameter, NotFound, NotSupported
from engine.sys import fs

# --------------------------------------------------------------------------
# layer tars


#: A fixed time for entries (2020-09-13), so built tars are reproducible.
DEFAULT_MTIME = 1_600_000_000


@dataclass
class Entry:
    """One entry of a test layer tar; build them with the class methods.

    ``name`` is written verbatim (``../x`` and ``/x`` included), so hostile
    layers can be built too. ``mtime`` may be a string such as
    ``"1600000000.123456789"`` to write a PAX time with nanoseconds.
    """

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int | str = DEFAULT_MTIME
    linkname: str = ""
    major: int = 0
    minor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def file(cls, name: str, data: bytes = b"", mode: int = 0o644, **kw: Any) -> Entry:
        return cls(name, "file", data, mode, **kw)

    @classmethod
    def dir(cls, name: str, mode: int = 0o755, **kw: Any) -> Entry:
        return cls(name, "dir", mode=mode, **kw)

    @classmethod
    def symlink(cls, name: str, target: str, **kw: Any) -> Entry:
        return cls(name, "symlink", mode=0o777, linkname=target, **kw)

    @classmethod
    def hardlink(cls, name: str, target: str, mode: int = 0o644, **kw: Any) -> Entry:
        return cls(name, "hardlink", mode=mode, linkname=target, **kw)

    @classmethod
    def char(cls, name: str, major: int, minor: int, mode: int = 0o666, **kw: Any) -> Entry:
        return cls(name, "char", mode=mode, major=major, minor=minor, **kw)

    @classmethod
    def block(cls, name: str, major: int, minor: int, mode: int = 0o660, **kw: Any) -> Entry:
        return cls(name, "block", mode=mode, major=major, minor=minor, **kw)

    @classmethod
    def fifo(cls, name: str, mode: int = 0o644, **kw: Any) -> Entry:
        return cls(name, "fifo", mode=mode, **kw)

    @classmethod
    def whiteout(cls, path: str) -> Entry:
        """The AUFS/OCI whiteout deleting ``path`` (``dir/.wh.name``)."""
        directory, base = os.path.split(path.rstrip("/"))
        return cls(os.path.join(directory, archive.WHITEOUT_PREFIX + base), "file", mode=0)

    @classmethod
    def opaque(cls, directory: str) -> Entry:
        """The opaque marker of ``directory`` (``dir/.wh..wh..opq``)."""
        return cls(os.path.join(directory.rstrip("/"), archive.WHITEOUT_OPAQUE), "file", mode=0)


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def _header(entry: Entry) -> bytes:
    info = tarfile.TarInfo(entry.name)
    info.type = _TYPES[entry.kind]
    info.mode = entry.mode
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    pax: dict[str, str] = {}
    if isinstance(entry.mtime, str):
        info.mtime = int(entry.mtime.split(".")[0])
        pax["mtime"] = entry.mtime
    else:
        info.mtime = entry.mtime
    info.linkname = entry.linkname
    info.devmajor, info.devminor = entry.major, entry.minor
    info.size = len(entry.data) if entry.kind == "file" else 0
    for key, value in entry.xattrs.items():
        pax[f"SCHILY.xattr.{key}"] = value.decode("utf-8", "surrogateescape")
    info.pax_headers = pax
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def layer_tar_chunks(entries: Iterable[Entry]) -> Iterator[bytes]:
    """The bytes of an uncompressed layer tar of ``entries``, in pieces."""
    for entry in entries:
        yield _header(entry)
        if entry.kind == "file" and entry.data:
            yield entry.data
            yield bytes(-len(entry.data) % tarfile.BLOCKSIZE)
    yield bytes(2 * tarfile.BLOCKSIZE)


def compress(data: bytes, compression: str) -> bytes:
    """``data`` compressed with ``none``, ``gzip``, ``bzip2``, ``xz`` or ``zstd``."""
    if compression == "none":
        return data
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "bzip2":
        return bz2.compress(data)
    if compression == "xz":
        return lzma.compress(data)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    raise ValueError(f"unknown compression {compression!r}")


def make_layer_tar(entries: Iterable[Entry], compression: str = "none") -> bytes:
    """A layer tar (PAX format) of ``entries``, in the given order, optionally compressed."""
    return compress(b"".join(layer_tar_chunks(entries)), compression)


# --------------------------------------------------------------------------
# comparing trees


_TYPE_NAMES = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def tree_manifest(path: str, *, mtime: str | None = None, sockets: bool = True) -> dict[str, dict[str, Any]]:
    """Describe the tree below ``path`` so that two trees compare with ``==``.

    Each entry (``"."`` for the root) maps to its type, mode (permission bits
    with setuid/setgid/sticky), uid, gid, xattrs (hex values; overlayfs'
    ``trusted.overlay.*`` left out), and per type: ``size`` and ``sha256``
    for files, ``target`` for symlinks, ``rdev`` (major, minor) for devices.
    Entries sharing an inode carry ``hardlink``: the first of their names in
    sorted order, so link groups compare across trees.

    :param mtime: ``None`` leaves times out; ``"s"`` adds whole seconds for
        non-directories (what a layer tar keeps); ``"ns"`` adds nanoseconds
        for every entry except the root.
    :param sockets: whether to list sockets (a tar cannot carry them).
    """
    manifest: dict[str, dict[str, Any]] = {}
    first_name: dict[tuple[int, int], str] = {}

    def describe(full: str, rel: str) -> None:
        st = os.lstat(full)
        kind = _TYPE_NAMES[stat.S_IFMT(st.st_mode)]
        if kind == "socket" and not sockets:
            return
        item: dict[str, Any] = {"type": kind, "mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid, "gid": st.st_gid}
        xattrs = {k: v.hex() for k, v in fs.read_xattrs(full).items() if not k.startswith("trusted.overlay.")}
        if xattrs:
            item["xattrs"] = xattrs
        if kind == "file":
            digest = hashlib.sha256()
            with open(full, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            item["size"] = st.st_size
            item["sha256"] = digest.hexdigest()
        elif kind == "symlink":
            item["target"] = os.readlink(full)
        elif kind in ("char", "block"):
            item["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        if kind != "dir" and st.st_nlink > 1:
            item["hardlink"] = first_name.setdefault((st.st_dev, st.st_ino), rel)
        if mtime == "ns" and rel != ".":
            item["mtime_ns"] = st.st_mtime_ns
        elif mtime == "s" and kind != "dir":
            item["mtime_s"] = st.st_mtime_ns // 1_000_000_000
        manifest[rel] = item

    def walk(full: str, rel: str) -> None:
        for name in sorted(os.listdir(full)):
            child_full = os.path.join(full, name)
            child_rel = name if rel == "." else f"{rel}/{name}"
            describe(child_full, child_rel)
            if stat.S_ISDIR(os.lstat(child_full).st_mode):
                walk(child_full, child_rel)

    describe(path, ".")
    walk(path, ".")
    return manifest


#: A version 2 ``security.capability`` value granting cap_net_bind_service.
CAP_NET_BIND_SERVICE = bytes.fromhex("0100000200040000000000000000000000000000")


def build_rich_tree(root: str) -> None:
    """Fill the directory ``root`` with one of every kind of entry a layer must keep.

    Creates (all below ``root``): ``bin/`` with a setuid root program
    (``su``, 04755) carrying ``security.capability``, ``bin/ping`` hard
    linked from ``bin/ping6``; ``etc/`` with ``passwd``, an absolute symlink
    ``localtime``, a relative ``mtab`` and a dangling ``dangling``;
    ``home/user`` owned by 1000:1000 with mode 0700 and a file with xattrs in
    ``user.*`` and ``trusted.*``; ``tmp`` with the sticky bit; ``dev/null``
    (character 1:3), ``dev/loop0`` (block 7:0), ``run/fifo`` and
    ``run/socket``; ``var/empty``; a sparse file ``var/sparse`` (16 MiB with
    data at both ends); ``opt/nanos`` with a nanosecond mtime.
    """

    def write(rel: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> str:
        full = os.path.join(root, rel)
        with open(full, "wb") as f:
            f.write(data)
        os.chown(full, uid, gid)
        os.chmod(full, mode)
        return full

    for rel, mode, uid in (
        ("bin", 0o755, 0),
        ("etc", 0o755, 0),
        ("home", 0o755, 0),
        ("home/user", 0o700, 1000),
        ("tmp", 0o1777, 0),
        ("dev", 0o755, 0),
        ("run", 0o755, 0),
        ("var", 0o755, 0),
        ("var/empty", 0o555, 0),
        ("opt", 0o750, 0),
        ("usr/share/zoneinfo", 0o755, 0),
    ):
        full = os.path.join(root, rel)
        os.makedirs(full, exist_ok=True)
        os.chown(full, uid, uid)
        os.chmod(full, mode)

    su = write("bin/su", b"\x7fELF-su" * 100, 0o4755)
    os.setxattr(su, "security.capability", CAP_NET_BIND_SERVICE)
    os.chmod(su, 0o4755)  # setting the capability keeps the mode; be explicit
    write("bin/ping6", b"ping", 0o755)
    os.link(os.path.join(root, "bin/ping6"), os.path.join(root, "bin/ping"))
    write("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    write("usr/share/zoneinfo/UTC", b"TZif2")
    os.symlink("/usr/share/zoneinfo/UTC", os.path.join(root, "etc/localtime"))
    os.symlink("../proc/self/mounts", os.path.join(root, "etc/mtab"))
    os.symlink("does-not-exist", os.path.join(root, "etc/dangling"))
    notes = write("home/user/notes", b"hello\n", 0o600, 1000, 1000)
    os.setxattr(notes, "user.comment", b"hi")
    os.setxattr(notes, "trusted.md5", b"\x00\xff binary")
    os.mknod(os.path.join(root, "dev/null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(os.path.join(root, "dev/null"), 0o666)
    os.mknod(os.path.join(root, "dev/loop0"), stat.S_IFBLK | 0o660, os.makedev(7, 0))
    os.chown(os.path.join(root, "dev/loop0"), 0, 6)
    os.mkfifo(os.path.join(root, "run/fifo"), 0o620)
    os.chmod(os.path.join(root, "run/fifo"), 0o620)
    # mknod(2) makes a socket inode too, with no sun_path length limit.
    os.mknod(os.path.join(root, "run/socket"), stat.S_IFSOCK | 0o755)
    with open(os.path.join(root, "var/sparse"), "wb") as f:
        f.write(b"head")
        f.seek(16 << 20)
        f.write(b"tail")
    nanos = write("opt/nanos", b"n")
    os.utime(nanos, ns=(1_500_000_000_123_456_789, 1_600_000_000_987_654_321))
    # Directory times last, as a layer would carry them.
    os.utime(os.path.join(root, "var/empty"), ns=(1_400_000_000_000_000_001, 1_400_000_000_000_000_001))


# --------------------------------------------------------------------------
# the suite


def new_id() -> str:
    """A random layer ID (64 hex digits)."""
    return secrets.token_hex(32)


class GraphDriverConformance:
    """Tests every graph driver must pass; subclass it with ``driver_name`` set.

    Tests run as root in the session sandbox (private mount namespace) on a
    fresh driver home below ``tmp_path``.
    """

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

        h = lambda s: hashlib.sha256(s).hexdigest()[:8]  # noqa: E731
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

    def test_remove_after_cleanup(self, driver: GraphDriver) -> None:
        id = self.layer(driver, fill=build_rich_tree)
        driver.get(id)
        driver.cleanup()  # releases what is still held (daemon shutdown)
        driver.remove(id)
        assert not driver.exists(id)
