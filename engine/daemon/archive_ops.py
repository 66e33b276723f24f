"""``docker cp``: stat, read and write paths inside a container (moby ``daemon/archive.go``).

Paths are resolved with openat2(2) ``RESOLVE_IN_ROOT`` against the
container's root: for a running container its ``/proc/PID/root``, which is
its own mount namespace's view (volumes included); for a stopped one its
rootfs from the graph driver, except below the destination of a volume or a
bind-mounted directory, which is looked up in the mount's source (Docker
mounts them for ``cp`` into a stopped container). Symlinks in the path
resolve inside the container (or inside that source), so nothing outside it
can be read or written.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import posixpath
import stat
from collections.abc import Iterator
from typing import Any

from engine import archive
from engine.errors import InvalidParameter, NotFound
from engine.sys import libc

_RESOLVE = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS

# Go's os.FileMode type bits (what the CLI decodes from the stat header).
GO_DIR, GO_SYMLINK, GO_PIPE, GO_SOCKET, GO_DEVICE, GO_CHARDEV = 1 << 31, 1 << 27, 1 << 25, 1 << 24, 1 << 26, 1 << 21
GO_SETUID, GO_SETGID, GO_STICKY = 1 << 23, 1 << 22, 1 << 20


def go_mode(st: os.stat_result) -> int:
    mode = st.st_mode & 0o777
    kind = stat.S_IFMT(st.st_mode)
    mode |= {
        stat.S_IFDIR: GO_DIR,
        stat.S_IFLNK: GO_SYMLINK,
        stat.S_IFIFO: GO_PIPE,
        stat.S_IFSOCK: GO_SOCKET,
        stat.S_IFBLK: GO_DEVICE,
        stat.S_IFCHR: GO_DEVICE | GO_CHARDEV,
    }.get(kind, 0)
    if st.st_mode & stat.S_ISUID:
        mode |= GO_SETUID
    if st.st_mode & stat.S_ISGID:
        mode |= GO_SETGID
    if st.st_mode & stat.S_ISVTX:
        mode |= GO_STICKY
    return mode


@contextlib.contextmanager
def _at(path: str) -> Iterator[int]:
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _abs(path: str) -> str:
    """``path`` as a clean absolute path (``normpath`` keeps a leading ``//``; this does not)."""
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def _mount_source(svc: Any, c: Any, path: str) -> tuple[str, str] | None:
    """For a stopped container: the host directory of the innermost volume or
    directory bind mount holding ``path``, and ``path`` relative to it."""
    clean = _abs(path)
    best: tuple[str, dict] | None = None
    for m in c.mounts:
        if m.get("Type") not in ("volume", "bind"):
            continue
        dest = _abs(m["Destination"])
        if (clean == dest or clean.startswith(dest.rstrip("/") + "/")) and (best is None or len(dest) > len(best[0])):
            best = (dest, m)
    if best is None:
        return None
    dest, m = best
    source = m["Source"] if m["Type"] == "bind" else svc.volumes.path(m["Name"])
    if not os.path.isdir(source):
        return None  # a bind-mounted file: the rootfs's placeholder stands in
    inner = "/" + clean[len(dest) :].lstrip("/")
    # A trailing "/." or "/" says "follow it" (see _split): keep it.
    trailing = "/." if path.endswith("/.") else "/" if path.endswith("/") else ""
    return source, (inner.rstrip("/") + trailing) or "/"


@contextlib.contextmanager
def resolve(svc: Any, c: Any, path: str) -> Iterator[tuple[int, str]]:
    """An O_PATH fd of the directory ``path`` is to be resolved in, and ``path`` relative to it.

    For a stopped container the directory part is first resolved in its
    rootfs, so that a symlink of the image leading into a volume
    (``/link -> /data`` with a volume on ``/data``) reaches the volume, as
    it does in a running container.
    """
    running = bool(c.state.running and c.state.pid)
    with container_root(svc, c) as root:
        if not running:
            parent, entry = _split(path)
            real = resolve_link(root, "/" + parent).rstrip("/")
            found = _mount_source(svc, c, real + ("/." if entry == "." else "/" + entry))
            if found is not None:
                with _at(found[0]) as fd:
                    yield fd, found[1]
                return
        yield root, path


@contextlib.contextmanager
def container_root(svc: Any, c: Any) -> Iterator[int]:
    """An O_PATH fd of the container's root directory."""
    if c.state.running and c.state.pid:
        with _at(f"/proc/{c.state.pid}/root") as fd:
            yield fd
        return
    driver = svc.daemon.graphdriver
    path = driver.get(c.id)
    try:
        with _at(path) as fd:
            yield fd
    finally:
        driver.put(c.id)


def _split(path: str) -> tuple[str, str]:
    """``path`` -> (its directory, relative to the root, to resolve *whole*; the entry in it).

    moby's ``ResolvePath``: the path is made absolute with a trailing ``/``
    or ``/.`` kept, and split after its last slash. Every component of the
    directory is followed, the last one too, so ``/link/.`` and ``/link/``
    name the directory a symlink ``/link`` points to (inside the
    container), while ``/link`` names the link itself. The entry is ``.``
    for the directory itself.
    """
    if not path:
        raise InvalidParameter("path is required")
    clean = _abs(path)
    if clean == "/":
        return ".", "."
    if path.endswith(("/.", "/")) or path == ".":
        return clean.lstrip("/"), "."
    parent, name = posixpath.split(clean)
    return parent.lstrip("/") or ".", name


def _not_found(path: str, c: Any) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {c.name.lstrip('/')}")


def _open_parent(root: int, path: str, c: Any, shown: str) -> tuple[int, str]:
    parent, name = _split(path)
    try:
        fd = libc.openat2(root, parent, os.O_PATH | os.O_DIRECTORY, resolve=_RESOLVE)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(shown, c) from None
    return fd, name


def resolve_link(root: int, path: str) -> str:
    """The path ``path`` leads to in the container, every symlink followed inside
    ``root`` (moby's ``GetResourcePath``, for a stat's ``linkTarget``); parts
    that do not exist are kept as they are.

    :raises InvalidParameter: for a symlink loop.
    """
    pending = [p for p in path.split("/") if p][::-1]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part in (".", ""):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        target = None
        try:
            # ``resolved`` holds no symlinks, so this opens exactly that directory.
            fd = libc.openat2(root, "/".join(resolved) or ".", os.O_PATH | os.O_DIRECTORY, resolve=_RESOLVE)
        except OSError:
            fd = None
        if fd is not None:
            try:
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    target = os.readlink(part, dir_fd=fd)
            except OSError:
                pass
            finally:
                os.close(fd)
        if target is None:
            resolved.append(part)
            continue
        links += 1
        if links > 255:
            raise InvalidParameter(f"resolving {path} in the container: too many levels of symbolic links")
        if target.startswith("/"):
            resolved = []
        pending.extend(p for p in target.split("/")[::-1] if p)
    return "/" + "/".join(resolved)


def _stat_doc(st: os.stat_result, name: str, link: str) -> dict:
    from engine.daemon.container import rfc3339nano

    return {
        "name": name,
        "size": st.st_size,
        "mode": go_mode(st),
        "mtime": rfc3339nano(st.st_mtime),
        "linkTarget": link,
    }


def _go_base(path: str) -> str:
    """Go's ``filepath.Base`` of an absolute path: trailing slashes do not count; ``/`` for the root."""
    stripped = path.rstrip("/")
    return posixpath.basename(stripped) if stripped else "/"


def stat_path(svc: Any, c: Any, path: str) -> dict:
    """moby's ``StatPath``: the entry itself (a symlink stays one), named by the path's base
    name, and for a symlink the container path it finally leads to."""
    shown = path
    with resolve(svc, c, path) as (root, path):
        parent, name = _open_parent(root, path, c, shown)
        try:
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                raise _not_found(shown, c) from None
            link = ""
            if stat.S_ISLNK(st.st_mode):
                link = resolve_link(root, _abs(path))
            clean = _abs(shown)
            shown_name = "." if shown.endswith("/.") and clean != "/" else _go_base(clean)
            return _stat_doc(st, shown_name, link)
        finally:
            os.close(parent)


def stat_header(doc: dict) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


def get(svc: Any, c: Any, path: str, out: Any) -> None:
    """Write a tar of ``path`` (named by its base name) to ``out``."""
    shown = path
    with resolve(svc, c, path) as (root, rel):
        parent, name = _open_parent(root, rel, c, shown)
        try:
            try:
                os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                raise _not_found(shown, c) from None
            # Named by the base name of the path asked for (moby rebases the
            # entries to it): a symlink followed by "/link/" is called "link",
            # the root of a mount's source is named as its destination;
            # "/dir/." means the directory's contents.
            clean = _abs(path)
            arcname = "." if path.endswith("/.") or clean == "/" else _go_base(clean)
            stream = archive.tar_entry(parent, name, arcname)
            try:
                while True:
                    chunk = stream.read(1 << 20)
                    if not chunk or getattr(out, "closed", False):
                        break
                    out.write(chunk)
            finally:
                stream.close()
        finally:
            os.close(parent)


def put(
    svc: Any, c: Any, path: str, body: Any, no_overwrite_dir_non_dir: bool = False, copy_uid_gid: bool = False
) -> None:
    """Extract the tar ``body`` into the directory ``path`` of the container.

    Owners are the tar's. ``copy_uid_gid`` (``docker cp -a``) is accepted
    and changes nothing: moby chowns to the container's configured user,
    looked up in the *host's* passwd file, which is not followed here.
    """
    if c.host_config.get("ReadonlyRootfs") and c.state.running:
        raise InvalidParameter("container rootfs is marked read-only")
    shown = _abs(path)
    with resolve(svc, c, path) as (root, inner):
        rel = _abs(inner).lstrip("/") or "."
        try:
            fd = libc.openat2(root, rel, os.O_PATH | os.O_DIRECTORY, resolve=_RESOLVE)
        except FileNotFoundError:
            raise _not_found(path, c) from None
        except NotADirectoryError:
            raise InvalidParameter("extraction point is not a directory") from None
        try:
            archive.apply_layer(
                f"/proc/self/fd/{fd}",
                body,
                whiteouts="keep",
                no_overwrite_dir_non_dir=no_overwrite_dir_non_dir,
                shown_as=shown,
            )
        finally:
            os.close(fd)
    svc.daemon.container_event(c, "extract-to-dir")
