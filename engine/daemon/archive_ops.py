"""``docker cp``: stat, read and write paths inside a container (moby ``daemon/archive.go``).

Paths are resolved with openat2(2) ``RESOLVE_IN_ROOT`` against the
container's root: for a running container its ``/proc/PID/root``, which is
its own mount namespace's view (volumes included); for a stopped one its
rootfs from the graph driver. Symlinks in the path resolve inside the
container, so nothing outside it can be read or written.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import posixpath
import stat
from typing import Any, Iterator

from engine.errors import InvalidParameter, NotFound
from engine.graph import archive
from engine.sys import libc

_RESOLVE = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS

# Go's os.FileMode type bits (what the CLI decodes from the stat header).
GO_DIR, GO_SYMLINK, GO_PIPE, GO_SOCKET, GO_DEVICE, GO_CHARDEV = 1 << 31, 1 << 27, 1 << 25, 1 << 24, 1 << 26, 1 << 21
GO_SETUID, GO_SETGID, GO_STICKY = 1 << 23, 1 << 22, 1 << 20


def go_mode(st: os.stat_result) -> int:
    mode = st.st_mode & 0o777
    kind = stat.S_IFMT(st.st_mode)
    mode |= {stat.S_IFDIR: GO_DIR, stat.S_IFLNK: GO_SYMLINK, stat.S_IFIFO: GO_PIPE, stat.S_IFSOCK: GO_SOCKET,
             stat.S_IFBLK: GO_DEVICE, stat.S_IFCHR: GO_DEVICE | GO_CHARDEV}.get(kind, 0)
    if st.st_mode & stat.S_ISUID:
        mode |= GO_SETUID
    if st.st_mode & stat.S_ISGID:
        mode |= GO_SETGID
    if st.st_mode & stat.S_ISVTX:
        mode |= GO_STICKY
    return mode


@contextlib.contextmanager
def container_root(svc: Any, c: Any) -> Iterator[int]:
    """An O_PATH fd of the container's root directory."""
    if c.state.running and c.state.pid:
        fd = os.open(f"/proc/{c.state.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)
        return
    driver = svc.daemon.graphdriver
    path = driver.get(c.id)
    try:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)
    finally:
        driver.put(c.id)


def _split(path: str) -> tuple[str, str]:
    if not path:
        raise InvalidParameter("path is required")
    clean = posixpath.normpath("/" + path)
    parent, name = posixpath.split(clean)
    return parent.lstrip("/") or ".", name


def _not_found(path: str, c: Any) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {c.name.lstrip('/')}")


def _open_parent(root: int, path: str, c: Any) -> tuple[int, str]:
    parent, name = _split(path)
    try:
        fd = libc.openat2(root, parent, os.O_PATH | os.O_DIRECTORY, resolve=_RESOLVE)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(path, c) from None
    return fd, name


def _stat_doc(st: os.stat_result, name: str, link: str) -> dict:
    from engine.daemon.container import rfc3339nano

    return {"name": name, "size": st.st_size, "mode": go_mode(st), "mtime": rfc3339nano(st.st_mtime),
            "linkTarget": link}


def stat_path(svc: Any, c: Any, path: str) -> dict:
    with container_root(svc, c) as root:
        parent, name = _open_parent(root, path, c)
        try:
            if name:
                try:
                    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                except FileNotFoundError:
                    raise _not_found(path, c) from None
                link = ""
                if stat.S_ISLNK(st.st_mode):
                    link = os.readlink(name, dir_fd=parent)
                    # A trailing symlink is followed for the stat, as Docker does.
                    rel = posixpath.normpath(posixpath.join(posixpath.dirname("/" + path.lstrip("/")), link))
                    try:
                        fd = libc.openat2(root, rel.lstrip("/") or ".", os.O_PATH, resolve=_RESOLVE)
                        st = os.fstat(fd)
                        os.close(fd)
                    except OSError:
                        pass
            else:
                st, link = os.fstat(parent), ""
            return _stat_doc(st, name or "/", link)
        finally:
            os.close(parent)


def stat_header(doc: dict) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


def get(svc: Any, c: Any, path: str, out: Any) -> None:
    """Write a tar of ``path`` (named by its base name) to ``out``."""
    with container_root(svc, c) as root:
        parent, name = _open_parent(root, path, c)
        try:
            if not name:
                name = "."
            try:
                os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                raise _not_found(path, c) from None
            if path.endswith("/.") or (path.endswith("/") and name):
                arcname = "."
            else:
                arcname = name if name != "." else "."
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


def put(svc: Any, c: Any, path: str, body: Any, no_overwrite_dir_non_dir: bool = False,
        copy_uid_gid: bool = False) -> None:
    """Extract the tar ``body`` into the directory ``path`` of the container.

    Owners are the tar's. ``copy_uid_gid`` (``docker cp -a``) is accepted
    and changes nothing: moby chowns to the container's configured user,
    looked up in the *host's* passwd file, which is not followed here.
    """
    if c.host_config.get("ReadonlyRootfs") and c.state.running:
        raise InvalidParameter("container rootfs is marked read-only")
    with container_root(svc, c) as root:
        rel = posixpath.normpath("/" + path).lstrip("/") or "."
        try:
            fd = libc.openat2(root, rel, os.O_PATH | os.O_DIRECTORY, resolve=_RESOLVE)
        except FileNotFoundError:
            raise _not_found(path, c) from None
        except NotADirectoryError:
            raise InvalidParameter("extraction point is not a directory") from None
        try:
            archive.apply_layer(f"/proc/self/fd/{fd}", body, whiteouts="keep",
                                no_overwrite_dir_non_dir=no_overwrite_dir_non_dir, shown_as="/" + rel.lstrip("."))
        finally:
            os.close(fd)
    svc.daemon.container_event(c, "extract-to-dir")
