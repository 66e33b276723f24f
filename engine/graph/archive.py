"""Layer archives: apply layer tars safely, compute a layer's changes, export them as tars.

This is the seed's "Differ" (moby's ``pkg/archive``), used by every graph
driver without a native differ (:class:`engine.drivers.graph.NaiveDiffDriver`):

* :func:`apply_layer` extracts a layer tar (plain, gzip, bzip2, xz or zstd)
  into a directory in one streaming pass, with AUFS/OCI whiteouts either
  applied (``whiteouts="aufs"``: deletions) or translated to overlayfs' own
  form (``whiteouts="overlay"``: 0/0 character devices and
  ``trusted.overlay.opaque=y``) for an overlay upper directory, or kept as
  the files they are (``whiteouts="keep"``) for an aufs branch, where aufs
  itself applies them when the branches are mounted;
* :func:`changes` compares a layer's tree with its parent's (moby's
  ``ChangesDirs``), :func:`changes_size` sums what they add, and
  :func:`entry_differs` is its rule for one entry;
* :func:`export_changes` and :func:`tar_tree` stream those changes, or a
  whole tree, as a tar with AUFS whiteout files for deletions; ``tar_tree``
  reads an overlay upper directory's whiteouts and opaque directories back
  into that form with ``whiteouts="overlay"``, and an aufs branch's (leaving
  aufs' own bookkeeping out) with ``whiteouts="keep"``.

Safety of extraction. A layer is untrusted input and is applied by root, so
nothing it contains may make us write outside ``dest``:

* names are cleaned; a name whose cleaned form climbs out with ``..`` is
  refused, an absolute name is taken relative to ``dest`` (as Docker does);
* symlinks are content and are extracted as they are (``/etc/localtime ->
  /usr/share/zoneinfo/UTC`` must stay absolute), but every *parent directory*
  of an entry is opened with openat2(2) ``RESOLVE_IN_ROOT``: the kernel
  resolves it as if ``dest`` were ``/``, so a symlink component is followed
  but clamped to ``dest`` -- exactly what Docker's chrooted extraction gives
  (merged-usr ``lib -> usr/lib`` puts ``lib/x`` in ``dest/usr/lib/x``; a
  symlink to ``/etc`` sends ``etc/passwd`` to ``dest/etc/passwd``, never to
  the host). The last component is then created relative to that directory
  fd with ``*at`` calls and ``O_NOFOLLOW``, so it is never followed either;
* a hard link's target is cleaned and resolved inside ``dest`` the same way;
  a target that climbs out is refused, because a link to a host file would
  let the container read and write it;
* like Docker, a *relative* symlink whose target climbs out of ``dest`` is
  refused: it would be harmless to us, but it points at host files for any
  tool that later follows it outside a chroot, and Docker refuses such layers;
* xattrs in ``trusted.overlay.*`` are overlayfs' private state (redirects,
  metacopy): a layer may not set them.

Exported tars are Docker-compatible: times are whole seconds (moby truncates
them so that identical trees give identical layer digests), owners are
numeric only, entries come in a fixed order (directories depth first, names
sorted), a hard link's second name is a ``LNKTYPE`` entry, sockets are
skipped, and xattrs travel as PAX ``SCHILY.xattr.*`` records.
"""

from __future__ import annotations

import base64
import bz2
import errno
import gzip
import io
import json
import logging
import lzma
import os
import posixpath
import stat
import tarfile
import tempfile
import threading
import urllib.parse
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import zstandard

from engine.drivers.graph import Change, ChangeKind
from engine.errors import HostError, InvalidParameter
from engine.sys import fs, libc

LOG = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
#: Names below the layer root starting with this are AUFS metadata, not content.
WHITEOUT_META_PREFIX = ".wh..wh."
#: AUFS keeps the targets of hard links across layers here.
WHITEOUT_LINK_DIR = ".wh..wh.plnk"
#: In a directory: "hide everything the lower layers have in me".
WHITEOUT_OPAQUE = ".wh..wh..opq"
#: overlayfs' private xattrs; never layer content.
OVERLAY_XATTR_PREFIX = "trusted.overlay."
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"

WHITEOUT_FORMATS = ("aufs", "overlay", "keep")

_CHUNK = 1 << 20
#: tarfile's stream buffer. Every small read copies what is left of it, so a
#: big one makes layers of many small files slow; 64 KiB measured best.
_TAR_BUFFER = 64 << 10
_BLOCK = tarfile.BLOCKSIZE
_ZEROS = bytes(_CHUNK)

_IN_ROOT = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def _quote(text: str) -> str:
    """Go's ``%q``, near enough, so messages read like Docker's."""
    return json.dumps(text, ensure_ascii=False)


# --------------------------------------------------------------------------
# decompression


_MAGIC = (
    (b"\x1f\x8b\x08", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


def detect_compression(head: bytes) -> str:
    """The compression of a stream starting with ``head``: gzip, bzip2, xz, zstd or none."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    # A zstd stream may open with a skippable frame (magic 0x184D2A50-5F).
    if len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50:
        return "zstd"
    return "none"


class _ZstdFrames:
    """Follows the frame and block headers of a zstd stream to tell a complete stream from a cut one.

    The zstd decoder returns end-of-data for a stream cut between blocks, and
    blocks hold 128 KiB, a multiple of the tar block: the tar would look
    complete too. Go's decoder (and so Docker) calls that "unexpected EOF";
    this walker, fed every compressed byte, lets us say the same. It only
    reads headers (RFC 8878 §3.1) and skips block contents.
    """

    MAGIC = b"\x28\xb5\x2f\xfd"

    def __init__(self) -> None:
        self._want = 4
        self._buf = b""
        self._skip = 0
        self._handler: Callable[[bytes], None] = self._magic
        self._checksum = False
        #: Not a zstd stream we understand: the decoder will say what is wrong.
        self.lost = False

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end and not self.lost:
            if self._skip:
                take = min(self._skip, end - pos)
                self._skip -= take
                pos += take
                continue
            take = min(self._want - len(self._buf), end - pos)
            self._buf += data[pos : pos + take]
            pos += take
            if len(self._buf) == self._want:
                header, self._buf = self._buf, b""
                self._handler(header)

    def complete(self) -> bool:
        """Whether the bytes so far end exactly between two frames."""
        return self.lost or (self._handler == self._magic and not self._buf and not self._skip)

    def _expect(self, size: int, handler: Callable[[bytes], None]) -> None:
        self._want, self._handler = size, handler

    def _magic(self, header: bytes) -> None:
        if header == self.MAGIC:
            self._expect(1, self._descriptor)
        elif header[1:4] == b"\x2a\x4d\x18" and header[0] & 0xF0 == 0x50:
            self._expect(4, self._skippable)
        else:
            self.lost = True

    def _skippable(self, header: bytes) -> None:
        self._skip = int.from_bytes(header, "little")
        self._expect(4, self._magic)

    def _descriptor(self, header: bytes) -> None:
        flags = header[0]
        single_segment = bool(flags & 0x20)
        self._checksum = bool(flags & 0x04)
        window = 0 if single_segment else 1
        dictionary = (0, 1, 2, 4)[flags & 0x03]
        content_size = ((1 if single_segment else 0), 2, 4, 8)[flags >> 6]
        self._skip = window + dictionary + content_size
        self._expect(3, self._block)

    def _block(self, header: bytes) -> None:
        value = int.from_bytes(header, "little")
        last, kind, size = value & 1, (value >> 1) & 3, value >> 3
        self._skip = 1 if kind == 1 else size  # an RLE block holds one byte
        if last:
            self._skip += 4 if self._checksum else 0
            self._expect(4, self._magic)
        else:
            self._expect(3, self._block)


class _Source(io.RawIOBase):
    """The caller's stream with the bytes already read for magic detection put back."""

    def __init__(self, stream: IO[bytes], head: bytes, tap: Callable[[bytes], None] | None = None) -> None:
        self._stream = stream
        self._head = head
        self._tap = tap
        #: Set when the caller's stream itself raised, so its errors are never
        #: mistaken for corrupt compressed data.
        self.failed = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            data, self._head = self._head[: len(buffer)], self._head[len(buffer) :]
        else:
            try:
                data = self._stream.read(len(buffer))
            except BaseException:
                self.failed = True
                raise
        n = len(data)
        buffer[:n] = data
        if self._tap is not None and n:
            self._tap(data)
        return n


_CORRUPT = (EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError, gzip.BadGzipFile)


class LayerStream(io.RawIOBase):
    """The decompressed bytes of a layer, counted, with codec errors as :class:`InvalidParameter`."""

    def __init__(self, stream: IO[bytes]) -> None:
        head = b""
        while len(head) < 6:
            more = stream.read(6 - len(head))
            if not more:
                break
            head += more
        self.compression = detect_compression(head)
        self._frames = _ZstdFrames() if self.compression == "zstd" else None
        self._source = _Source(stream, head, self._frames.feed if self._frames is not None else None)
        source: Any = self._source
        reader: Any
        if self.compression == "gzip":
            reader = gzip.GzipFile(fileobj=source, mode="rb")
        elif self.compression == "bzip2":
            reader = bz2.BZ2File(source)
        elif self.compression == "xz":
            reader = lzma.LZMAFile(source)
        elif self.compression == "zstd":
            reader = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True, closefd=False)
        else:
            reader = source
        self._reader = reader
        #: Bytes of tar delivered so far.
        self.count = 0
        self.eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data = self._reader.read(len(buffer))
        except _CORRUPT as exc:
            if isinstance(exc, EOFError):
                raise InvalidParameter(f"unexpected EOF in {self.compression} layer stream") from exc
            raise InvalidParameter(f"corrupt {self.compression} layer stream: {exc}") from exc
        except OSError as exc:
            # bz2 reports bad data as a bare OSError; the caller's own
            # stream failing (a broken connection) must stay what it is.
            if self._source.failed or exc.errno is not None:
                raise
            raise InvalidParameter(f"corrupt {self.compression} layer stream: {exc}") from exc
        n = len(data)
        buffer[:n] = data
        self.count += n
        if n == 0:
            if self._frames is not None and not self._frames.complete():
                raise InvalidParameter("unexpected EOF in zstd layer stream")
            self.eof = True
        return n

    def drain(self) -> None:
        """Read to the end, so that the codec checks its trailer (gzip's CRC)."""
        while self.read(_CHUNK):
            pass


def decompress_stream(stream: IO[bytes]) -> IO[bytes]:
    """Wrap a possibly compressed layer stream into a reader of its tar bytes.

    :raises InvalidParameter: while reading, when the compressed data is corrupt.
    """
    return io.BufferedReader(LayerStream(stream), _CHUNK)


# --------------------------------------------------------------------------
# reading tar headers


# tarfile's header errors: undocumented but unchanged since Python 3.2; they
# are how tarfile itself tells a clean end from a cut or garbled header.
_EmptyHeader: type[Exception] = tarfile.EmptyHeaderError  # type: ignore[attr-defined]
_TruncatedHeader: type[Exception] = tarfile.TruncatedHeaderError  # type: ignore[attr-defined]
_InvalidHeader: type[Exception] = tarfile.InvalidHeaderError  # type: ignore[attr-defined]


class _EndWatchingTarInfo(tarfile.TarInfo):
    """A TarInfo that records why tarfile stopped, which tarfile itself forgets.

    tarfile ends iteration silently both at a clean end (zero block, or EOF
    on a header boundary) and at a truncated or garbled header; Go's
    archive/tar, and so Docker, calls the latter "unexpected EOF" or
    "invalid tar header". The reason is left on the TarFile as ``_end``.
    """

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.HeaderError as exc:
            tarfile_._end = exc  # type: ignore[attr-defined]
            raise


def _pax_time_ns(text: str | None) -> int | None:
    """A PAX time (``1700000000.123456789``) in nanoseconds, exactly (a float would round)."""
    if not text:
        return None
    try:
        negative = text.startswith("-")
        seconds, _, fraction = text.lstrip("-").partition(".")
        value = int(seconds or "0") * 1_000_000_000 + int((fraction + "000000000")[:9])
    except ValueError:
        return None
    return -value if negative else value


def _member_times(member: tarfile.TarInfo) -> tuple[int, int]:
    """(atime, mtime) in ns; like Docker, an atime before the mtime becomes the mtime."""
    mtime = _pax_time_ns(member.pax_headers.get("mtime"))
    if mtime is None:
        mtime = int(member.mtime * 1_000_000_000)
    atime = _pax_time_ns(member.pax_headers.get("atime"))
    if atime is None or atime < mtime:
        atime = mtime
    return atime, mtime


def _member_xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    """Extended attributes from PAX records (GNU/star ``SCHILY.xattr.*``, bsdtar ``LIBARCHIVE.xattr.*``)."""
    found: dict[str, bytes] = {}
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            found[key[len("SCHILY.xattr.") :]] = value.encode("utf-8", "surrogateescape")
        elif key.startswith("LIBARCHIVE.xattr."):
            name = urllib.parse.unquote(key[len("LIBARCHIVE.xattr.") :])
            try:
                found[name] = base64.b64decode(value + "=" * (-len(value) % 4))
            except ValueError:
                LOG.warning("ignoring undecodable xattr %s on %s", name, member.name)
    return found


# --------------------------------------------------------------------------
# apply


def clean_name(name: str, dest: str) -> str:
    """The path of a tar entry relative to the layer root ("" for the root itself).

    :raises InvalidParameter: if the cleaned name climbs out with ``..``.
    """
    cleaned = posixpath.normpath(name) if name else "."
    if cleaned == ".." or cleaned.startswith("../"):
        raise InvalidParameter(f"invalid layer: {_quote(name)} is outside of {_quote(dest)}")
    cleaned = cleaned.lstrip("/")
    return "" if cleaned == "." else cleaned


class _Applier:
    """One :func:`apply_layer` run: the root fd, what was unpacked, deferred times."""

    def __init__(
        self, dest: str, whiteouts: str, no_overwrite_dir_non_dir: bool = False, shown_as: str | None = None
    ) -> None:
        self.dest = os.path.abspath(dest)
        #: ``dest`` as error messages name it.
        self.shown = shown_as or self.dest
        self.no_overwrite_dir_non_dir = no_overwrite_dir_non_dir
        self.overlay = whiteouts == "overlay"
        #: An aufs branch: whiteouts and opaque markers are written as entries.
        self.keep = whiteouts == "keep"
        self.root_fd = os.open(dest, _PATH_DIR)
        #: Paths (relative) extracted from this layer: an opaque marker keeps them.
        self.unpacked: set[str] = set()
        #: Directories whose times are set at the end, after their contents.
        self.dirs: list[tuple[str, int, int]] = []
        self.size = 0
        # Tars list a directory's entries together: keep the last parent open.
        self._cached: str | None = None
        self._cached_fd = -1
        self._plnk_dir: str | None = None
        self._plnk: dict[str, tarfile.TarInfo] = {}

    def close(self) -> None:
        self._drop_cache()
        os.close(self.root_fd)
        if self._plnk_dir is not None:
            fs.safe_rmtree(self._plnk_dir)

    # ---- errors and resolution

    def _bad(self, name: str, why: str) -> InvalidParameter:
        return InvalidParameter(f"invalid layer entry {_quote(name)}: {why}")

    def _drop_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached_fd)
            self._cached, self._cached_fd = None, -1

    def _open_in_root(self, rel: str, flags: int, name: str) -> int:
        """openat2 ``rel`` with ``RESOLVE_IN_ROOT`` below the layer root; errors name the entry."""
        try:
            return libc.openat2(self.root_fd, rel or ".", flags, resolve=_IN_ROOT)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise self._bad(name, f"{_quote(rel)} is not a directory inside the layer") from exc
            raise

    def parent(self, rel_dir: str, name: str, create: bool = True) -> int | None:
        """An ``O_PATH`` fd of the directory ``rel_dir``, resolved inside the root (borrowed).

        Missing directories are created with mode 0755, as Docker does for
        directories a tar implies but does not list.

        :returns: None if ``create`` is false and the directory is missing.
        """
        if not rel_dir:
            return self.root_fd
        if rel_dir == self._cached:
            return self._cached_fd
        try:
            fd = self._open_in_root(rel_dir, _PATH_DIR, name)
        except FileNotFoundError:
            if not create:
                return None
            fd = self._make_dirs(rel_dir, name)
        self._drop_cache()
        self._cached, self._cached_fd = rel_dir, fd
        return fd

    def _make_dirs(self, rel_dir: str, name: str) -> int:
        parts = rel_dir.split("/")
        fd = self.root_fd
        try:
            for i, part in enumerate(parts):
                prefix = "/".join(parts[: i + 1])
                try:
                    child = self._open_in_root(prefix, _PATH_DIR, name)
                except FileNotFoundError:
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        raise self._bad(name, f"{_quote(prefix)} is a symlink to a missing directory") from None
                    os.chmod(part, 0o755, dir_fd=fd, follow_symlinks=False)  # whatever the umask
                    child = self._open_in_root(prefix, _PATH_DIR, name)
                if fd != self.root_fd:
                    os.close(fd)
                fd = child
        except BaseException:
            if fd != self.root_fd:
                os.close(fd)
            raise
        return fd

    def remove(self, parent_fd: int, base: str, rel: str) -> None:
        """Remove an existing entry, never following it.

        The cached parent may have been reached through what goes (``lib``
        symlinked into a ``usr`` being removed), so it is forgotten, unless
        it is the very directory the entry is removed from: that one the
        caller holds and goes on using.
        """
        if parent_fd != self._cached_fd:
            self._drop_cache()
        fs.remove_at(parent_fd, base, shown=os.path.join(self.shown, rel))

    # ---- entries

    def apply(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        name = member.name
        rel = clean_name(name, self.shown)

        if rel.startswith(WHITEOUT_META_PREFIX):
            # AUFS metadata at the root. Files in the hard link directory are
            # kept aside: later entries of this layer may link to them.
            if rel.startswith(WHITEOUT_LINK_DIR + "/") and member.isreg():
                self._save_plnk(member, tar)
            if rel != WHITEOUT_OPAQUE:
                return

        rel_dir, base = posixpath.split(rel)
        if base.startswith(WHITEOUT_PREFIX) and not self.keep:
            if base == WHITEOUT_OPAQUE:
                self._opaque(rel_dir, name)
            else:
                self._whiteout(rel_dir, base[len(WHITEOUT_PREFIX) :], name, member)
            return

        if not rel:
            self._root(member)
            return

        parent = self.parent(rel_dir, name)
        assert parent is not None
        try:
            existing = os.stat(base, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None and self.no_overwrite_dir_non_dir and stat.S_ISDIR(existing.st_mode) != member.isdir():
            # moby's words, which name the extraction point as the other side.
            shown, into = _quote(os.path.join(self.shown, rel)), _quote(self.shown)
            if member.isdir():
                raise InvalidParameter(f"cannot overwrite non-directory {shown} with directory {into}")
            raise InvalidParameter(f"cannot overwrite directory {shown} with non-directory {into}")
        if existing is not None and not (stat.S_ISDIR(existing.st_mode) and member.isdir()):
            # Replace, whatever the old type; only dir-onto-dir merges.
            self.remove(parent, base, rel)

        if member.isdir():
            self._dir(parent, base, rel, member, existing is not None and stat.S_ISDIR(existing.st_mode))
        elif member.isreg():
            self._file(parent, base, member, tar.extractfile(member))
        elif member.issym():
            self._symlink(parent, base, rel, member)
        elif member.islnk():
            self._hardlink(parent, base, member)
        elif member.ischr() or member.isblk() or member.isfifo():
            self._node(parent, base, member)
        else:
            raise self._bad(name, f"unsupported tar entry type {member.type!r}")
        self.unpacked.add(rel)

    def _root(self, member: tarfile.TarInfo) -> None:
        if not member.isdir():
            raise self._bad(member.name, "the root of a layer must be a directory")
        fd = os.open(".", _DIR_FLAGS, dir_fd=self.root_fd)
        try:
            self._set_metadata_fd(fd, member)
        finally:
            os.close(fd)
        self.dirs.append(("", *_member_times(member)))

    def _dir(self, parent: int, base: str, rel: str, member: tarfile.TarInfo, exists: bool) -> None:
        if not exists:
            os.mkdir(base, 0o700, dir_fd=parent)
        fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
        try:
            self._set_metadata_fd(fd, member)
        finally:
            os.close(fd)
        self.dirs.append((rel, *_member_times(member)))

    def _file(
        self, parent: int, base: str, member: tarfile.TarInfo, data: IO[bytes] | None, copy_from: str | None = None
    ) -> None:
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
        try:
            if copy_from is not None:
                src = os.open(copy_from, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    fs.copy_file_data(src, fd, member.size, reflink=False)
                finally:
                    os.close(src)
            elif data is not None:
                self._write_data(fd, data, member)
            self.size += member.size
            # After the data: writing drops setuid and security.capability.
            self._set_metadata_fd(fd, member)
            os.utime(fd, ns=_member_times(member))
        finally:
            os.close(fd)

    def _write_data(self, fd: int, data: IO[bytes], member: tarfile.TarInfo) -> None:
        """Copy the entry's data; whole chunks of zeros become holes (sparse files stay sparse)."""
        remaining = member.size
        sparse = False
        try:
            while remaining:
                chunk = data.read(min(_CHUNK, remaining))
                if not chunk:
                    raise InvalidParameter(f"unexpected EOF in layer tar (in {_quote(member.name)})")
                remaining -= len(chunk)
                if len(chunk) == _CHUNK and chunk[0] == 0 and chunk[-1] == 0 and chunk == _ZEROS:
                    os.lseek(fd, _CHUNK, os.SEEK_CUR)
                    sparse = True
                    continue
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        except tarfile.ReadError as exc:
            raise InvalidParameter(f"unexpected EOF in layer tar (in {_quote(member.name)})") from exc
        if sparse:
            os.ftruncate(fd, member.size)

    def _symlink(self, parent: int, base: str, rel: str, member: tarfile.TarInfo) -> None:
        target = member.linkname
        if not target.startswith("/"):
            # Docker's check (lexical, from the link's directory).
            joined = posixpath.normpath(posixpath.join(self.dest, posixpath.dirname(rel), target))
            if joined != self.dest and not joined.startswith(self.dest.rstrip("/") + "/"):
                raise InvalidParameter(f"invalid symlink {_quote(os.path.join(self.shown, rel))} -> {_quote(target)}")
        os.symlink(target, base, dir_fd=parent)
        os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        self._set_xattrs(fs.at_path(parent, base), member)
        os.utime(base, ns=_member_times(member), dir_fd=parent, follow_symlinks=False)

    def _hardlink(self, parent: int, base: str, member: tarfile.TarInfo) -> None:
        target = posixpath.normpath("/" + member.linkname).lstrip("/") if member.linkname else ""
        # Joined like Go's filepath.Join: an absolute target is still below dest.
        lexical = posixpath.normpath(self.dest + "/" + member.linkname)
        if not target or (lexical != self.dest and not lexical.startswith(self.dest.rstrip("/") + "/")):
            raise InvalidParameter(f"invalid hardlink {_quote(member.name)} -> {_quote(member.linkname)}")
        if target.startswith(WHITEOUT_LINK_DIR + "/"):
            self._plnk_link(parent, base, member, target)
            return
        target_dir, target_base = posixpath.split(target)
        try:
            tparent = self._open_in_root(target_dir, _PATH_DIR, member.name)
        except FileNotFoundError:
            raise self._bad(member.name, f"hard link target {_quote(member.linkname)} does not exist") from None
        try:
            try:
                os.link(target_base, base, src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                raise self._bad(member.name, f"hard link target {_quote(member.linkname)} does not exist") from None
            except PermissionError as exc:
                raise self._bad(member.name, f"cannot hard link to {_quote(member.linkname)}: {exc.strerror}") from exc
            tst = os.stat(base, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(tparent)
        # Docker applies the link header's owner, mode and times to the
        # shared inode, except mode and times when it is a symlink.
        os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        self._set_xattrs(fs.at_path(parent, base), member)
        if not stat.S_ISLNK(tst.st_mode):
            os.chmod(base, member.mode & 0o7777, dir_fd=parent, follow_symlinks=False)
            os.utime(base, ns=_member_times(member), dir_fd=parent, follow_symlinks=False)

    def _node(self, parent: int, base: str, member: tarfile.TarInfo) -> None:
        if member.ischr():
            kind = stat.S_IFCHR
        elif member.isblk():
            kind = stat.S_IFBLK
        else:
            kind = stat.S_IFIFO
        device = os.makedev(member.devmajor, member.devminor) if kind != stat.S_IFIFO else 0
        try:
            os.mknod(base, kind | 0o600, device, dir_fd=parent)
        except PermissionError:
            if kind == stat.S_IFIFO:
                raise
            # In a user namespace devices cannot be made; Docker skips them too.
            LOG.warning("skipping device node %s: not permitted here", member.name)
            return
        os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        self._set_xattrs(fs.at_path(parent, base), member)
        os.chmod(base, member.mode & 0o7777, dir_fd=parent, follow_symlinks=False)
        os.utime(base, ns=_member_times(member), dir_fd=parent, follow_symlinks=False)

    # ---- metadata

    def _set_metadata_fd(self, fd: int, member: tarfile.TarInfo) -> None:
        # chown first: it clears setuid bits and security.capability.
        os.fchown(fd, member.uid, member.gid)
        self._set_xattrs(fd, member)
        os.fchmod(fd, member.mode & 0o7777)

    def _set_xattrs(self, target: int | str, member: tarfile.TarInfo) -> None:
        follow = isinstance(target, int)
        for key, value in _member_xattrs(member).items():
            if key.startswith(OVERLAY_XATTR_PREFIX):
                LOG.warning("ignoring overlayfs xattr %s on %s", key, member.name)
                continue
            try:
                os.setxattr(target, key, value, follow_symlinks=follow)
            except OSError as exc:
                # Docker's rule: a file system without (this kind of) xattrs
                # is not a reason to fail the pull.
                if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise
                LOG.warning("cannot set xattr %s on %s: %s", key, member.name, exc.strerror)

    def finish(self) -> None:
        """Set directory times, now that nothing more is created in them."""
        self._drop_cache()
        for rel, atime, mtime in self.dirs:
            try:
                fd = libc.openat2(self.root_fd, rel or ".", _DIR_FLAGS, resolve=_IN_ROOT)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    continue  # replaced or removed later in the layer
                raise
            try:
                os.utime(fd, ns=(atime, mtime))
            finally:
                os.close(fd)

    # ---- whiteouts

    def _whiteout(self, rel_dir: str, original: str, name: str, member: tarfile.TarInfo) -> None:
        if original in ("", ".", ".."):
            raise self._bad(name, "invalid whiteout")
        rel = posixpath.join(rel_dir, original)
        parent = self.parent(rel_dir, name, create=self.overlay)
        if parent is None:
            return  # nothing there to delete
        self.remove(parent, original, rel)
        if self.overlay:
            # overlayfs' whiteout: a 0/0 character device hides the lower entry.
            os.mknod(original, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
            os.chown(original, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)

    def _opaque(self, rel_dir: str, name: str) -> None:
        if self.overlay:
            self.parent(rel_dir, name)  # create it if the layer did not list it
        try:
            fd = self._open_in_root(rel_dir, _DIR_FLAGS & ~os.O_NOFOLLOW, name)
        except FileNotFoundError:
            return
        try:
            if self.overlay:
                os.setxattr(fd, OVERLAY_OPAQUE_XATTR, b"y")
                return
            # Everything the lower layers put here goes; what this layer
            # already unpacked here stays.
            for child in sorted(os.listdir(fd)):
                rel = posixpath.join(rel_dir, child)
                if rel not in self.unpacked:
                    self.remove(fd, child, rel)
        finally:
            os.close(fd)

    # ---- AUFS hard link directory

    def _save_plnk(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        if self._plnk_dir is None:
            self._plnk_dir = tempfile.mkdtemp(prefix="engine-plnk-")
        key = posixpath.basename(member.name)
        data = tar.extractfile(member)
        fd = os.open(os.path.join(self._plnk_dir, key), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            if data is not None:
                self._write_data(fd, data, member)
        finally:
            os.close(fd)
        self._plnk[key] = member

    def _plnk_link(self, parent: int, base: str, member: tarfile.TarInfo, target: str) -> None:
        # AUFS links across layers through .wh..wh.plnk, which is not
        # extracted; the link becomes a copy of the saved file (as in Docker).
        key = posixpath.basename(target)
        saved = self._plnk.get(key)
        if saved is None or self._plnk_dir is None:
            raise self._bad(member.name, f"hard link target {_quote(member.linkname)} does not exist")
        self._file(parent, base, saved, None, copy_from=os.path.join(self._plnk_dir, key))


def apply_layer(
    dest: str,
    stream: IO[bytes],
    whiteouts: str = "aufs",
    no_overwrite_dir_non_dir: bool = False,
    shown_as: str | None = None,
) -> int:
    """Apply a layer tar to the directory ``dest`` in one streaming pass.

    The tar may be plain or compressed with gzip, bzip2, xz or zstd (detected
    from its first bytes); it is read sequentially and never held in memory.
    Owners, modes, times (nanoseconds from PAX records), xattrs, hard links,
    symlinks, fifos and device nodes are kept; directory times are set last.
    An entry replaces an existing one of another type; a directory entry onto
    an existing directory only updates its metadata. See the module
    docstring for whiteouts and for how ``dest`` is protected.

    :param dest: an existing directory (the layer's tree, or an overlay upper
        directory with ``whiteouts="overlay"``).
    :param stream: the layer; it is read up to its end but not closed.
    :param whiteouts: ``"aufs"`` to apply whiteouts as deletions,
        ``"overlay"`` to store them as overlayfs whiteouts and opaque xattrs,
        ``"keep"`` to write ``.wh.<name>`` and ``.wh..wh..opq`` entries as the
        ordinary entries they are (an aufs branch: aufs applies them at mount
        time). Every safety check applies in every mode, and the layer's own
        root-level aufs metadata (``.wh..wh.plnk``, ...) is never written.
    :param no_overwrite_dir_non_dir: refuse (``InvalidParameter``) to replace
        an existing directory with a non-directory or the other way round, as
        ``docker cp`` asks (``noOverwriteDirNonDir``).
    :param shown_as: the name of ``dest`` in error messages (the path a
        container sees, for ``docker cp``), instead of ``dest`` itself.
    :returns: the number of bytes of file content applied.
    :raises InvalidParameter: for a hostile or invalid entry ("... is outside
        of ..."), a corrupt or truncated tar ("unexpected EOF in layer tar").
    """
    if whiteouts not in WHITEOUT_FORMATS:
        raise InvalidParameter(f"unknown whiteout format {whiteouts!r} (one of {', '.join(WHITEOUT_FORMATS)})")
    layer = LayerStream(stream)
    applier = _Applier(dest, whiteouts, no_overwrite_dir_non_dir, shown_as)
    tar: tarfile.TarFile | None = None
    last_end = 0
    try:
        try:
            tar = tarfile.open(
                fileobj=layer,
                mode="r|",
                bufsize=_TAR_BUFFER,
                tarinfo=_EndWatchingTarInfo,
                encoding="utf-8",
                errors="surrogateescape",
            )
        except tarfile.ReadError as exc:
            if layer.eof and layer.count == 0:
                return 0  # an empty stream is an empty layer, as for Go's archive/tar
            raise _tar_error(exc, layer, getattr(exc, "__context__", None)) from exc
        while True:
            try:
                member = tar.next()
            except tarfile.ReadError as exc:
                raise _tar_error(exc, layer, getattr(tar, "_end", None)) from exc
            if member is None:
                break
            # Streaming: do not keep every header in memory (TarFile.members
            # is how tarfile remembers them; nothing here looks them up).
            tar.members.clear()  # type: ignore[attr-defined]
            if member.isreg() or member.type not in tarfile.SUPPORTED_TYPES:
                last_end = member.offset_data + member.size
            applier.apply(member, tar)
        end = getattr(tar, "_end", None)
        if isinstance(end, _TruncatedHeader) or (isinstance(end, _EmptyHeader) and layer.count < last_end):
            raise InvalidParameter("unexpected EOF in layer tar")
        if isinstance(end, _InvalidHeader):
            raise InvalidParameter(f"invalid tar header in layer at offset {tar.offset}")
        applier.finish()
        layer.drain()
        return applier.size
    finally:
        applier.close()


def _tar_error(exc: tarfile.ReadError, layer: LayerStream, end: object) -> InvalidParameter:
    """The error for tarfile giving up: cut short (the data ended) or not a tar."""
    if isinstance(end, _InvalidHeader):
        return InvalidParameter(f"invalid layer tar: {exc}")
    if isinstance(end, (_TruncatedHeader, _EmptyHeader)) or layer.eof:
        return InvalidParameter("unexpected EOF in layer tar")
    return InvalidParameter(f"invalid layer tar: {exc}")


# --------------------------------------------------------------------------
# changes


class _Node:
    """What :func:`changes` compares of one entry (moby's ``FileInfo``)."""

    __slots__ = ("children", "gid", "mode", "mtime", "rdev", "size", "target", "uid", "xattrs")

    def __init__(self, st: os.stat_result, target: str | None, xattrs: dict[str, bytes]) -> None:
        self.mode = st.st_mode
        self.uid = st.st_uid
        self.gid = st.st_gid
        self.rdev = st.st_rdev
        self.size = st.st_size
        self.mtime = st.st_mtime_ns
        self.target = target
        self.xattrs = xattrs
        self.children: dict[str, _Node] | None = {} if stat.S_ISDIR(st.st_mode) else None


def content_xattrs(target: int | str) -> dict[str, bytes]:
    """The xattrs of an entry that belong to its content (overlayfs' own are left out)."""
    return {k: v for k, v in fs.read_xattrs(target).items() if not k.startswith(OVERLAY_XATTR_PREFIX)}


def _scan(root: str) -> _Node:
    """The tree below ``root`` as :class:`_Node` objects, read through directory fds.

    Depth first with one open fd per level, so wide directories cost no fds.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    top = _Node(os.fstat(fd), None, content_xattrs(fd))
    stack: list[tuple[int, Iterator[str], _Node]] = [(fd, iter(os.listdir(fd)), top)]
    try:
        while stack:
            dir_fd, names, node = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                os.close(dir_fd)
                continue
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            target = os.readlink(name, dir_fd=dir_fd) if stat.S_ISLNK(st.st_mode) else None
            child = _Node(st, target, content_xattrs(fs.at_path(dir_fd, name)))
            assert node.children is not None
            node.children[name] = child
            if child.children is not None:
                child_fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                stack.append((child_fd, iter(os.listdir(child_fd)), child))
    finally:
        for dir_fd, _, _ in stack:
            os.close(dir_fd)
    return top


def _same_time(a: int, b: int) -> bool:
    """moby's ``sameFsTime``: equal, or equal seconds when one side has no nanoseconds.

    Tars carry whole seconds and some file systems do too; such a file is
    not "modified" only because its twin has nanoseconds.
    """
    if a == b:
        return True
    sa, na = divmod(a, 1_000_000_000)
    sb, nb = divmod(b, 1_000_000_000)
    return sa == sb and (na == 0 or nb == 0)


def _differs(old: _Node, new: _Node) -> bool:
    if (old.mode, old.uid, old.gid, old.rdev, old.target, old.xattrs) != (
        new.mode,
        new.uid,
        new.gid,
        new.rdev,
        new.target,
        new.xattrs,
    ):
        return True
    # A directory's size and mtime change whenever an entry is added; they
    # say nothing (moby#9874).
    if stat.S_ISDIR(new.mode):
        return False
    return old.size != new.size or not _same_time(old.mtime, new.mtime)


def _path_key(path: str) -> list[str]:
    """Sort key giving depth-first order with sorted names (a directory before its entries)."""
    return path.split("/")


def entry_differs(old: str, new: str) -> bool:
    """Whether the entry ``new`` is modified relative to ``old``, by the rule of :func:`changes`.

    Neither path is followed if it is a symlink. For drivers that find a
    layer's changes without comparing whole trees (an aufs branch against
    the branches below it).
    """
    nodes = []
    for path in (old, new):
        st = os.lstat(path)
        target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
        nodes.append(_Node(st, target, content_xattrs(path)))
    return _differs(nodes[0], nodes[1])


def changes(layer_dir: str, parent_dir: str | None) -> list[Change]:
    """What ``layer_dir`` adds, modifies and deletes relative to ``parent_dir`` (moby's ``ChangesDirs``).

    An entry is modified when its type, mode, owner, device number, symlink
    target or xattrs differ, or, for non-directories, its size or mtime. A
    directory holding changes is reported modified too (so that its metadata
    travels with them); an entry replaced by a non-directory takes its old
    contents with it silently. With no parent everything is added. The root
    is never reported.

    :returns: changes with paths like ``/etc/passwd``, sorted depth first.
    """
    new_root = _scan(layer_dir)
    old_root = _scan(parent_dir) if parent_dir is not None else None
    found: dict[str, ChangeKind] = {}
    stack: list[tuple[_Node, _Node | None, str]] = [(new_root, old_root, "")]
    while stack:
        new, old, path = stack.pop()
        if new.children is None:
            continue
        old_children = old.children if old is not None and old.children is not None else {}
        for name, child in new.children.items():
            child_path = f"{path}/{name}"
            before = old_children.get(name)
            if before is None:
                found[child_path] = ChangeKind.ADD
            elif _differs(before, child):
                found[child_path] = ChangeKind.MODIFY
            stack.append((child, before, child_path))
        for name in old_children.keys() - new.children.keys():
            found[f"{path}/{name}"] = ChangeKind.DELETE
    for path in list(found):
        parent = posixpath.dirname(path)
        while parent != "/" and parent not in found:
            found[parent] = ChangeKind.MODIFY
            parent = posixpath.dirname(parent)
    return [Change(path, found[path]) for path in sorted(found, key=_path_key)]


def changes_size(layer_dir: str, changes: Iterable[Change]) -> int:
    """Bytes that added and modified non-directories take in ``layer_dir`` (moby's ``ChangesSize``).

    A file with several hard links among the changes counts once.
    """
    size = 0
    seen: set[tuple[int, int]] = set()
    for change in changes:
        if change.kind == ChangeKind.DELETE:
            continue
        try:
            st = os.lstat(os.path.join(layer_dir, change.path.lstrip("/")))
        except OSError as exc:
            LOG.error("cannot stat %s: %s", change.path, exc)
            continue
        if stat.S_ISDIR(st.st_mode):
            continue
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
        size += st.st_size
    return size


# --------------------------------------------------------------------------
# export


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
    return io.BufferedReader(_ChunkStream(chunks, release), _CHUNK)  # type: ignore[return-value]


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


def is_aufs_metadata(name: str) -> bool:
    """Whether a name in an aufs branch is aufs' own bookkeeping rather than layer content.

    aufs keeps ``.wh..wh.aufs`` (the file its whiteouts are hard links of),
    ``.wh..wh.plnk`` (pseudo-links) and ``.wh..wh.orph`` at a branch's root,
    and renames a directory it is removing to ``.wh..wh.<hex>`` first. Only
    ``.wh..wh..opq``, a directory's opaque marker, is content.
    """
    return name.startswith(WHITEOUT_META_PREFIX) and name != WHITEOUT_OPAQUE


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
        :func:`apply_layer` with ``whiteouts="overlay"``): 0/0 character
        devices become ``.wh.<name>`` entries and a directory with
        ``trusted.overlay.opaque=y`` is followed by its ``.wh..wh..opq``
        marker, both shaped like :func:`export_changes`' whiteouts;
        ``"keep"`` reads it as an aufs branch (the inverse of
        :func:`apply_layer` with ``whiteouts="keep"``): ``.wh.<name>`` files
        and ``.wh..wh..opq`` markers are written in that same shape, and
        aufs' bookkeeping (:func:`is_aufs_metadata`) is left out.
    """
    if whiteouts not in WHITEOUT_FORMATS:
        raise InvalidParameter(f"unknown whiteout format {whiteouts!r} (one of {', '.join(WHITEOUT_FORMATS)})")
    return _stream(_tree_chunks(directory, overlay=whiteouts == "overlay", keep=whiteouts == "keep"), release)


def _changes_chunks(layer_dir: str, changes: list[Change]) -> Iterator[bytes]:
    root = os.open(layer_dir, _PATH_DIR)
    writer = _TarWriter()
    cached: tuple[str, int] | None = None
    try:
        for change in sorted(changes, key=lambda c: _path_key(c.path)):
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
