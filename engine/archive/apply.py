"""Applying a layer tar to a directory, safely: whiteouts, devices, and nothing outside it.

:func:`apply_layer` is moby's ``ApplyLayer``: it extracts a layer tar (plain,
gzip, bzip2, xz or zstd) into a directory in one streaming pass, with
AUFS/OCI whiteouts either applied (``whiteouts="aufs"``: deletions) or
translated to overlayfs' own form (``whiteouts="overlay"``: 0/0 character
devices and ``trusted.overlay.opaque=y``) for an overlay upper directory, or
kept as the files they are (``whiteouts="keep"``) for an aufs branch, where
aufs itself applies them when the branches are mounted.

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
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import posixpath
import stat
import tarfile
import tempfile
import urllib.parse
from typing import IO

from engine.archive.compression import LayerStream
from engine.archive.whiteouts import (
    OVERLAY_OPAQUE_XATTR,
    OVERLAY_XATTR_PREFIX,
    WHITEOUT_LINK_DIR,
    WHITEOUT_META_PREFIX,
    WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
    check_format,
)
from engine.errors import InvalidParameter, TruncatedArchive
from engine.sys import fs, libc

LOG = logging.getLogger(__name__)

_CHUNK = 1 << 20
#: tarfile's stream buffer. Every small read copies what is left of it, so a
#: big one makes layers of many small files slow; 64 KiB measured best.
_TAR_BUFFER = 64 << 10
_ZEROS = bytes(_CHUNK)

_IN_ROOT = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def _quote(text: str) -> str:
    """Go's ``%q``, near enough, so messages read like Docker's."""
    return json.dumps(text, ensure_ascii=False)


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
                    raise TruncatedArchive(f"unexpected EOF in layer tar (in {_quote(member.name)})")
                remaining -= len(chunk)
                if len(chunk) == _CHUNK and chunk[0] == 0 and chunk[-1] == 0 and chunk == _ZEROS:
                    os.lseek(fd, _CHUNK, os.SEEK_CUR)
                    sparse = True
                    continue
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        except tarfile.ReadError as exc:
            raise TruncatedArchive(f"unexpected EOF in layer tar (in {_quote(member.name)})") from exc
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
    check_format(whiteouts)
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
            raise TruncatedArchive("unexpected EOF in layer tar")
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
        return TruncatedArchive("unexpected EOF in layer tar")
    return InvalidParameter(f"invalid layer tar: {exc}")
