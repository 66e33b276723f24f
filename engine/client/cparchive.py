"""``cp``: tar streams to and from ``/containers/{id}/archive`` with moby's copy rules.

The rules are those of moby's ``pkg/archive/copy.go`` (which the docker CLI
runs on its side): a source ``dir`` copies the directory, ``dir/.`` its
contents; a destination that exists as a directory receives the source
inside it, one that does not exist is created under the source's new name
(``RebaseArchiveEntries``); ``dst/`` asserts a directory; a directory never
replaces a file nor a file a directory. Extraction never follows a path
outside the destination and, like ``docker cp``, does not chown.
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
import stat as statmod
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from engine.client.errors import ClientError

#: Go's os.FileMode type bits, as the daemon's path-stat header encodes them.
MODE_DIR = 1 << 31
MODE_SYMLINK = 1 << 27
MODE_DEVICE = 1 << 26
MODE_NAMED_PIPE = 1 << 25
MODE_SOCKET = 1 << 24
MODE_CHAR_DEVICE = 1 << 21
MODE_IRREGULAR = 1 << 19


@dataclass
class CopyInfo:
    """moby ``archive.CopyInfo``: a path, whether it exists and is a directory, a rebase name."""

    path: str
    exists: bool = False
    is_dir: bool = False
    rebase_name: str = ""


def split_cp_arg(arg: str) -> tuple[str, str]:
    """``CONTAINER:PATH`` -> ``(container, path)``; a local path -> ``("", path)``.

    An absolute path or one starting with ``.`` is local even with a colon in it.
    """
    if arg.startswith("/"):
        return "", arg
    ctr, sep, path = arg.partition(":")
    if not sep or ctr.startswith("."):
        return "", arg
    return ctr, path


def go_base(path: str) -> str:
    """Go's ``filepath.Base``: the last element, trailing slashes ignored."""
    if not path:
        return "."
    path = path.rstrip("/")
    return "/" if not path else path.rsplit("/", 1)[-1]


def has_trailing_separator(path: str) -> bool:
    return path.endswith("/")


def specifies_current_dir(path: str) -> bool:
    return posixpath.basename(path) == "."


def asserts_directory(path: str) -> bool:
    return has_trailing_separator(path) or specifies_current_dir(path)


def _clean(path: str) -> str:
    cleaned = posixpath.normpath(path) if path else "."
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def split_dir_entry(path: str) -> tuple[str, str]:
    """moby ``SplitPathDirEntry``: ``/a/b/`` -> ``("/a", "b")``; ``/a/b/.`` -> ``("/a/b", ".")``."""
    cleaned = _clean(path)
    if specifies_current_dir(path):
        cleaned += "/."
    return posixpath.dirname(cleaned) or ".", posixpath.basename(cleaned)


def preserve_trailing(cleaned: str, original: str) -> str:
    """moby ``PreserveTrailingDotOrSeparator``: put back a ``/.`` or ``/`` that cleaning removed."""
    if not specifies_current_dir(cleaned) and specifies_current_dir(original):
        if not has_trailing_separator(cleaned):
            cleaned += "/"
        cleaned += "."
    if not has_trailing_separator(cleaned) and has_trailing_separator(original):
        cleaned += "/"
    return cleaned


def resolve_local_path(path: str) -> str:
    return preserve_trailing(os.path.abspath(path), path)


def decode_path_stat(header: str | None) -> dict[str, Any] | None:
    """The ``X-Docker-Container-Path-Stat`` header: base64 JSON ``{name,size,mode,mtime,linkTarget}``."""
    if not header:
        return None
    try:
        return json.loads(base64.b64decode(header))
    except (ValueError, TypeError):
        raise ClientError("unable to decode container path stat header") from None


def stat_path(client: Any, container: str, path: str) -> dict[str, Any] | None:
    """``HEAD /containers/{id}/archive?path=``: the path's stat, None if it does not exist.

    :raises docker.errors.APIError: for other errors (no such container answers 404 too,
        which the following copy reports).
    """
    resp = client.head(client._url("/containers/{0}/archive", container), params={"path": path})
    if resp.status_code == 404:
        return None
    client._raise_for_status(resp)
    return decode_path_stat(resp.headers.get("X-Docker-Container-Path-Stat"))


def rebase_name(name: str, old: str, new: str) -> str:
    """moby's ``strings.Replace(name, oldBase, newBase, 1)`` (``/`` as old base means the root)."""
    if old == "/":
        old = ""
    return name.replace(old, new, 1)


def prepare_copy(src: CopyInfo, dst: CopyInfo) -> tuple[str, tuple[str, str] | None]:
    """moby ``PrepareArchiveCopy``: where to extract, and the ``(old, new)`` rename of the entries.

    :raises ClientError: ``cannot copy directory`` / ``no such directory``.
    """
    dst_dir, dst_base = split_dir_entry(dst.path)
    _, src_base = split_dir_entry(src.path)
    if dst.exists and dst.is_dir:
        return dst.path, None
    if dst.exists and src.is_dir:
        raise ClientError("cannot copy directory")
    if not dst.exists and not src.is_dir and asserts_directory(dst.path):
        raise ClientError("no such directory")
    return dst_dir, (src.rebase_name or src_base, dst_base)


# -- container -> local -------------------------------------------------------------------------------------


def destination_info(path: str) -> CopyInfo:
    """moby ``CopyInfoDestinationPath``: follow symlinks at ``path``; its parent must exist."""

    def lstat(path: str) -> os.stat_result | None:
        try:
            return os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ClientError(f"lstat {path}: {(exc.strerror or str(exc)).lower()}") from None

    original = path
    st = lstat(path)
    hops = 0
    while st is not None and statmod.S_ISLNK(st.st_mode):
        hops += 1
        if hops > 11:
            raise ClientError("too many symlinks in " + original)
        target = os.readlink(path)
        if not target.startswith("/"):
            target = posixpath.join(split_dir_entry(path)[0], target)
        path = target
        st = lstat(path)
    if st is None:
        parent = split_dir_entry(path)[0]
        try:
            parent_st = os.stat(parent)
        except OSError as exc:
            raise ClientError(f"stat {parent}: {(exc.strerror or str(exc)).lower()}") from None
        if not statmod.S_ISDIR(parent_st.st_mode):
            raise ClientError("not a directory")
        return CopyInfo(path)
    return CopyInfo(path, exists=True, is_dir=statmod.S_ISDIR(st.st_mode))


def validate_output_path(path: str) -> None:
    """The CLI's ``ValidateOutputPath``: the parent must exist, an existing path must be a file or directory."""
    parent = os.path.dirname(os.path.normpath(path))
    if parent not in ("", ".") and not os.path.exists(parent):
        raise ClientError(f'invalid output path: directory "{parent}" does not exist')
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if statmod.S_ISDIR(st.st_mode) or statmod.S_ISREG(st.st_mode):
        return
    kind = "got a device" if statmod.S_ISBLK(st.st_mode) or statmod.S_ISCHR(st.st_mode) else "got an irregular file"
    raise ClientError(f'invalid output path: "{path}" must be a directory or a regular file: {kind}')


class _NoChownTarFile(tarfile.TarFile):
    """``docker cp`` extracts with ``NoLchown``: files belong to whoever runs it."""

    def chown(self, tarinfo: tarfile.TarInfo, targetpath: Any, numeric_owner: bool) -> None:  # noqa: ARG002
        return


def _inside(root: str, path: str) -> bool:
    root = os.path.realpath(root)
    return os.path.commonpath([root, path]) == root


def extract(stream: IO[bytes], dst_dir: str, rename: tuple[str, str] | None) -> None:
    """Untar ``stream`` into ``dst_dir``, renaming entries; moby's ``NoOverwriteDirNonDir`` rules.

    :raises ClientError: for an entry outside ``dst_dir`` or a file/directory clash.
    """
    root = os.path.realpath(dst_dir)

    def check(member: tarfile.TarInfo, _dest: str) -> tarfile.TarInfo:
        if rename is not None:
            member.name = rebase_name(member.name, *rename)
            if member.islnk():
                member.linkname = rebase_name(member.linkname, *rename)
        name = member.name.lstrip("/")
        if not name or name == ".":
            name = "."
        parent = os.path.realpath(os.path.join(root, os.path.dirname(name)))
        target = os.path.join(parent, os.path.basename(name)) if name != "." else root
        if not _inside(root, parent) or not _inside(root, target if name != "." else root):
            raise ClientError(f"{member.name!r} is outside of {dst_dir!r}")
        if member.islnk() and not _inside(root, os.path.realpath(os.path.join(root, member.linkname.lstrip("/")))):
            raise ClientError(f"invalid hardlink {member.linkname!r} -> {member.name!r}")
        member.name = os.path.relpath(target, root)
        if os.path.lexists(target):
            existing_dir = os.path.isdir(target) and not os.path.islink(target)
            if existing_dir and not member.isdir():
                raise ClientError(f'cannot overwrite directory "{target}" with non-directory "{member.name}"')
            if not existing_dir and member.isdir():
                raise ClientError(f'cannot overwrite non-directory "{target}" with directory "{member.name}"')
            if not existing_dir:
                # Never write through an existing symlink: replace it.
                os.unlink(target)
        member.mode &= 0o7777
        return member

    with _NoChownTarFile.open(fileobj=stream, mode="r|") as tar:
        tar.extractall(root, numeric_owner=True, filter=check)


# -- local -> container -------------------------------------------------------------------------------------


def source_info(path: str, follow_link: bool) -> CopyInfo:
    """moby ``CopyInfoSourcePath``: resolve symlinks in the parent (or all, with ``-L``)."""
    if follow_link:
        try:
            resolved = os.path.realpath(path, strict=True)
        except OSError as exc:
            raise ClientError(f"lstat {path}: {(exc.strerror or str(exc)).lower()}") from None
        if specifies_current_dir(path) and not specifies_current_dir(resolved):
            resolved += "/."
        if has_trailing_separator(path) and not has_trailing_separator(resolved):
            resolved += "/"
        rebase = go_base(path) if go_base(path) != go_base(resolved) else ""
    else:
        parent, base = posixpath.split(path)
        resolved = os.path.realpath(parent or ".").rstrip("/") + "/" + base
        rebase = go_base(path) if has_trailing_separator(path) and go_base(path) != go_base(resolved) else ""
    try:
        st = os.lstat(resolved)
    except OSError as exc:
        raise ClientError(f"lstat {resolved}: {(exc.strerror or str(exc)).lower()}") from None
    return CopyInfo(resolved, exists=True, is_dir=statmod.S_ISDIR(st.st_mode), rebase_name=rebase)


def _walk_entries(src: CopyInfo) -> Iterator[tuple[str, str]]:
    """``(archive name, local path)`` of moby ``TarResource``: entries relative to the source's parent."""
    src_dir, src_base = split_dir_entry(src.path)
    top = posixpath.join(src_dir, src_base)

    def name_for(rel: str) -> str:
        name = src_base if rel == "." else (f"./{rel}" if src_base == "." else posixpath.join(src_base, rel))
        if src.rebase_name:
            name = rebase_name(name, src_base, "" if src.rebase_name == "/" else src.rebase_name)
        return name

    yield name_for("."), top
    if os.path.isdir(top) and not os.path.islink(top):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, top)
            for entry in sorted(dirnames + filenames):
                rel = entry if rel_dir == "." else posixpath.join(rel_dir, entry)
                yield name_for(rel), os.path.join(dirpath, entry)


def tar_stream(src: CopyInfo, rename: tuple[str, str] | None, counter: list[int] | None = None) -> Iterator[bytes]:
    """The tar of ``src`` (PAX), entries renamed, as chunks for a chunked request body."""
    read_fd, write_fd = os.pipe()
    error: list[BaseException] = []

    def produce() -> None:
        try:
            with (
                os.fdopen(write_fd, "wb") as out,
                tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar,
            ):
                for name, path in _walk_entries(src):
                    if rename is not None:
                        name = rebase_name(name, *rename)
                    info = tar.gettarinfo(path, arcname=name)
                    if info.isreg():
                        with open(path, "rb") as fh:
                            tar.addfile(info, fh)
                    else:
                        tar.addfile(info)
        except BaseException as exc:  # noqa: BLE001 - reported by the consumer
            error.append(exc)

    thread = threading.Thread(target=produce, name="cp-tar", daemon=True)
    thread.start()
    with os.fdopen(read_fd, "rb") as fh:
        while True:
            chunk = fh.read(1 << 16)
            if not chunk:
                break
            if counter is not None:
                counter[0] += len(chunk)
            yield chunk
    thread.join()
    if error:
        raise ClientError(str(error[0]))
