"""Exporting trees and changes as layer tars (moby's ``ExportChanges`` and ``TarWithOptions``).

* :func:`export_changes` streams a layer's changes (:mod:`engine.archive.changeset`)
  as a tar, deletions as AUFS whiteout files;
* :func:`tar_tree` streams a whole tree; it reads an overlay upper
  directory's whiteouts and opaque directories back into that form with
  ``whiteouts="overlay"``, and an aufs branch's (leaving aufs' own
  bookkeeping out) with ``whiteouts="keep"``;
* :func:`tar_entry` streams one entry and all below it under another name
  (``docker cp``).

Exported tars are Docker-compatible: times are whole seconds (moby truncates
them so that identical trees give identical layer digests), owners are
numeric only, entries come in a fixed order (directories depth first, names
sorted), a hard link's second name is a ``LNKTYPE`` entry, sockets are
skipped, and xattrs travel as PAX ``SCHILY.xattr.*`` records. The tars are
produced lazily while they are read, through directory fds: nothing is
followed, and a file replaced or cut short while it is archived is an error
rather than a silently wrong tar.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import posixpath
import stat
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import IO

from engine.archive.changeset import Change, ChangeKind, path_key
from engine.archive.whiteouts import (
    OVERLAY_OPAQUE_XATTR,
    WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
    check_format,
    content_xattrs,
    is_aufs_metadata,
)
from engine.errors import HostError
from engine.sys import fs, libc

LOG = logging.getLogger(__name__)

_CHUNK = 1 << 20
_BLOCK = tarfile.BLOCKSIZE

_IN_ROOT = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


class _TarWriter:
    """Builds tar entries from lstat results: Docker's ``tarAppender``."""

    def __init__(self) -> None:
        #: (st_dev, st_ino) of an inode with several links -> the first name written.
        self.links: dict[tuple[int, int], str] = {}

    def entry(self, dir_fd: int, name: str, rel: str, st: os.stat_result) -> Iterator[bytes]:
        """The header (and data) of ``name`` in ``dir_fd``, archived as ``rel``."""
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            return  # tar has no sockets
        info = tarfile.TarInfo(rel)
        info.mode = stat.S_IMODE(mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = st.st_mtime_ns // 1_000_000_000
        linked = False
        if not stat.S_ISDIR(mode) and st.st_nlink > 1:
            first = self.links.get((st.st_dev, st.st_ino))
            if first is not None:
                info.type, info.linkname, linked = tarfile.LNKTYPE, first, True
            else:
                self.links[(st.st_dev, st.st_ino)] = rel
        if not linked:
            if stat.S_ISREG(mode):
                info.type, info.size = tarfile.REGTYPE, st.st_size
            elif stat.S_ISDIR(mode):
                info.type = tarfile.DIRTYPE
            elif stat.S_ISLNK(mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dir_fd)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            elif stat.S_ISFIFO(mode):
                info.type = tarfile.FIFOTYPE
            else:
                LOG.warning("skipping %s: unknown file type %o", rel, stat.S_IFMT(mode))
                return
        xattrs = content_xattrs(fs.at_path(dir_fd, name))
        info.pax_headers = {
            f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape") for key, value in xattrs.items()
        }
        yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if info.type == tarfile.REGTYPE and info.size:
            yield from self._data(dir_fd, name, rel, st)

    def _data(self, dir_fd: int, name: str, rel: str, st: os.stat_result) -> Iterator[bytes]:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            fst = os.fstat(fd)
            if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                raise HostError(f"{rel} was replaced while being archived")
            remaining = st.st_size
            while remaining:
                data = os.read(fd, min(_CHUNK, remaining))
                if not data:
                    raise HostError(f"{rel} shrank while being archived")
                remaining -= len(data)
                yield data
        finally:
            os.close(fd)
        pad = -st.st_size % _BLOCK
        if pad:
            yield bytes(pad)

    @staticmethod
    def whiteout(rel: str) -> bytes:
        """An AUFS whiteout entry deleting ``rel`` (empty file, epoch time: deterministic)."""
        directory, base = posixpath.split(rel)
        return _TarWriter._marker(posixpath.join(directory, WHITEOUT_PREFIX + base))

    @staticmethod
    def opaque(rel: str) -> bytes:
        """The AUFS opaque marker of the directory ``rel`` (``.wh..wh..opq``), shaped like a whiteout."""
        return _TarWriter._marker(posixpath.join(rel, WHITEOUT_OPAQUE))

    @staticmethod
    def _marker(name: str) -> bytes:
        info = tarfile.TarInfo(name)
        info.mode = 0
        info.mtime = 0
        info.uname = info.gname = ""
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")

    @staticmethod
    def end() -> bytes:
        """End of archive: two zero blocks (no padding to a 10 KiB record, like Go)."""
        return bytes(2 * _BLOCK)


class _ChunkStream(io.RawIOBase):
    """A readable stream over an iterator of byte chunks, calling ``release`` once at the end."""

    def __init__(self, chunks: Iterator[bytes], release: Callable[[], None] | None) -> None:
        self._chunks = chunks
        self._view = memoryview(b"")
        self._release = release
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._view:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._finish()
                return 0
            self._view = memoryview(chunk)
        n = min(len(buffer), len(self._view))
        buffer[:n] = self._view[:n]
        self._view = self._view[n:]
        return n

    def _finish(self) -> None:
        with self._lock:
            release, self._release = self._release, None
        if release is not None:
            release()

    def close(self) -> None:
        if not self.closed:
            try:
                self._chunks.close()  # type: ignore[attr-defined]
            finally:
                self._finish()
        super().close()


def _stream(chunks: Iterator[bytes], release: Callable[[], None] | None) -> IO[bytes]:
    return io.BufferedReader(_ChunkStream(chunks, release), _CHUNK)


def _is_overlay_whiteout(st: os.stat_result) -> bool:
    """Whether ``st`` is overlayfs' whiteout: a character device with device number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_overlay_opaque(dir_fd: int) -> bool:
    try:
        return os.getxattr(dir_fd, OVERLAY_OPAQUE_XATTR) == b"y"
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            return False
        raise


def _has_aufs_opaque(dir_fd: int) -> bool:
    try:
        os.stat(WHITEOUT_OPAQUE, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _tree_chunks(directory: str, overlay: bool = False, keep: bool = False) -> Iterator[bytes]:
    root = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    writer = _TarWriter()
    if (overlay and _is_overlay_opaque(root)) or (keep and _has_aufs_opaque(root)):
        yield writer.opaque("")
    yield from _walk(writer, root, "", overlay, keep)
    yield writer.end()


def _walk(writer: _TarWriter, root: int, prefix: str, overlay: bool = False, keep: bool = False) -> Iterator[bytes]:
    """Entries below the directory ``root`` (an fd this takes over), named under ``prefix``."""
    stack: list[tuple[int, Iterator[str], str]] = [(root, iter(sorted(os.listdir(root))), prefix)]
    try:
        while stack:
            dir_fd, names, rel_dir = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                os.close(dir_fd)
                continue
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if keep and name.startswith(WHITEOUT_PREFIX):
                # Rewritten in the canonical form whatever aufs made of them
                # (hard links of .wh..wh.aufs), so the tar depends only on
                # what the layer deletes; the opaque marker was written
                # right after its directory, as for overlay.
                if name != WHITEOUT_OPAQUE and not is_aufs_metadata(name):
                    yield writer.whiteout(posixpath.join(rel_dir, name[len(WHITEOUT_PREFIX) :]))
                continue
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if overlay and _is_overlay_whiteout(st):
                # Before the hard link check: overlayfs links its whiteouts
                # to one shared inode (overlayfs docs, "whiteouts").
                yield writer.whiteout(rel)
                continue
            yield from writer.entry(dir_fd, name, rel, st)
            if stat.S_ISDIR(st.st_mode):
                child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                stack.append((child, iter(sorted(os.listdir(child))), rel))
                if (overlay and _is_overlay_opaque(child)) or (keep and _has_aufs_opaque(child)):
                    yield writer.opaque(rel)
    finally:
        for dir_fd, _, _ in stack:
            os.close(dir_fd)


def tar_entry(parent_fd: int, name: str, arcname: str, release: Callable[[], None] | None = None) -> IO[bytes]:
    """Stream one entry of ``parent_fd`` (and all below it, for a directory)
    as a tar whose top entry is called ``arcname`` (``docker cp``'s archives).

    Nothing is followed: a symlink is archived as a symlink.
    """

    def chunks() -> Iterator[bytes]:
        writer = _TarWriter()
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        yield from writer.entry(parent_fd, name, arcname, st)
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(writer, os.open(name, _DIR_FLAGS, dir_fd=parent_fd), arcname)
        yield writer.end()

    return _stream(chunks(), release)


def tar_tree(directory: str, release: Callable[[], None] | None = None, whiteouts: str = "aufs") -> IO[bytes]:
    """Stream the tree below ``directory`` as an uncompressed tar (the root itself is not an entry).

    The tar is produced lazily while it is read; entries come depth first
    with names sorted, so identical trees give identical tars.

    :param release: called once when the stream is exhausted or closed.
    :param whiteouts: ``"aufs"`` archives the tree as it is; ``"overlay"``
        reads it as an overlayfs upper directory (the inverse of
        :func:`~engine.archive.apply.apply_layer` with
        ``whiteouts="overlay"``): 0/0 character devices become ``.wh.<name>``
        entries and a directory with ``trusted.overlay.opaque=y`` is followed
        by its ``.wh..wh..opq`` marker, both shaped like
        :func:`export_changes`' whiteouts; ``"keep"`` reads it as an aufs
        branch (the inverse of :func:`~engine.archive.apply.apply_layer` with
        ``whiteouts="keep"``): ``.wh.<name>`` files and ``.wh..wh..opq``
        markers are written in that same shape, and aufs' bookkeeping
        (:func:`is_aufs_metadata`) is left out.
    :raises InvalidParameter: for another ``whiteouts``.
    """
    check_format(whiteouts)
    return _stream(_tree_chunks(directory, overlay=whiteouts == "overlay", keep=whiteouts == "keep"), release)


def _changes_chunks(layer_dir: str, changes: list[Change]) -> Iterator[bytes]:
    root = os.open(layer_dir, _PATH_DIR)
    writer = _TarWriter()
    cached: tuple[str, int] | None = None
    try:
        for change in sorted(changes, key=lambda c: path_key(c.path)):
            rel = change.path.strip("/")
            if not rel:
                continue
            if change.kind == ChangeKind.DELETE:
                yield writer.whiteout(rel)
                continue
            rel_dir, base = posixpath.split(rel)
            if cached is None or cached[0] != rel_dir:
                if cached is not None:
                    os.close(cached[1])
                    cached = None
                try:
                    # Inside the layer whatever the tree holds: a running
                    # container may swap a directory for a symlink.
                    cached = (rel_dir, libc.openat2(root, rel_dir or ".", _PATH_DIR, resolve=_IN_ROOT))
                except OSError as exc:
                    LOG.debug("cannot add %s to the tar: %s", change.path, exc)
                    continue
            try:
                st = os.stat(base, dir_fd=cached[1], follow_symlinks=False)
            except FileNotFoundError:
                LOG.debug("cannot add %s to the tar: it is gone", change.path)
                continue
            yield from writer.entry(cached[1], base, rel, st)
        yield writer.end()
    finally:
        if cached is not None:
            os.close(cached[1])
        os.close(root)


def export_changes(layer_dir: str, changes: Iterable[Change], release: Callable[[], None] | None = None) -> IO[bytes]:
    """Stream ``changes`` of ``layer_dir`` as a layer tar (moby's ``ExportChanges``).

    Added and modified entries are archived from ``layer_dir``; deleted ones
    become AUFS whiteout files ``.wh.<name>``. Produced lazily, in sorted
    order (see :func:`tar_tree`).

    :param release: called once when the stream is exhausted or closed.
    """
    return _stream(_changes_chunks(layer_dir, list(changes)), release)
