"""Layer tars and trees for tests: build a tar entry by entry, fill a tree with every kind of entry, compare trees.

Shared by the graph driver conformance suite (:mod:`engine.testing.graphtest`),
the archive tests, the drivers' own tests and the image tests:

* :class:`Entry` and :func:`make_layer_tar` build layer tars in PAX format,
  hostile ones included (names are written verbatim), with whiteouts, opaque
  markers, links, devices, xattrs and nanosecond times; :func:`compress`
  gives them the gzip, bzip2, xz or zstd a layer may come in;
* :func:`build_rich_tree` fills a directory with one of every kind of entry
  a layer must keep;
* :func:`write_files` writes files with fixed times; :func:`tree_manifest`
  describes a tree so that two trees compare with ``==``, and
  :func:`tree_listing` in short.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import zstandard

from engine.archive import WHITEOUT_OPAQUE, WHITEOUT_PREFIX
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
        return cls(os.path.join(directory, WHITEOUT_PREFIX + base), "file", mode=0)

    @classmethod
    def opaque(cls, directory: str) -> Entry:
        """The opaque marker of ``directory`` (``dir/.wh..wh..opq``)."""
        return cls(os.path.join(directory.rstrip("/"), WHITEOUT_OPAQUE), "file", mode=0)


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


def short_digest(data: bytes) -> str:
    """The first 8 hex digits of the sha256 of ``data``: how :func:`tree_listing` shows a file."""
    return hashlib.sha256(data).hexdigest()[:8]


def tree_listing(path: str) -> dict[str, str]:
    """A compact :func:`tree_manifest` for short assertions.

    Each relative path (the root left out) maps to its type, or for a file
    to :func:`short_digest` of its content.
    """
    return {k: v.get("sha256", v["type"])[:8] for k, v in tree_manifest(path).items() if k != "."}


def write_files(root: str, files: dict[str, bytes]) -> None:
    """Write ``files`` (relative path -> content) below ``root``, creating directories.

    Every file gets the same fixed atime and mtime (2001-09-09), so trees
    written alike compare equal.
    """
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))


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
