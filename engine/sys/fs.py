"""File-system helpers for layer storage: copy, delete and write safely.

* :func:`copy_tree` copies a directory with everything a layer needs to keep
  (moby's ``copy.DirCopy``): owners, modes, nanosecond times, xattrs of every
  namespace, hard links, sparse files, device nodes, fifos and sockets.
* :func:`safe_rmtree` and :func:`remove_at` delete trees without ever
  following a symlink or crossing into another mount: a bind mount left behind
  inside a container directory once made Docker's ``RemoveAll`` walk into the
  host's ``/dev`` and delete ``/dev/null``. A :class:`Reaper` runs them in a
  thread for trees already renamed out of sight.
* :func:`atomic_write` is the write-to-temp, fsync, rename, fsync-directory
  dance every crash-safe state file goes through (ARCHITECTURE §6).
* :func:`mounts_below`, :func:`unmount_all` and :func:`backing_filesystem` read the
  mount table (:func:`engine.sys.proc.mountinfo`).

The walkers work on directory file descriptors (``*at`` calls) rather than
path strings, so a concurrent rename or symlink swap inside the tree cannot
redirect them. Where Linux offers no ``*at`` variant (the xattr calls) they
name the entry through ``/proc/self/fd/<dirfd>/<name>``, which pins the parent
directory just as well; ``/proc`` must therefore be mounted.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from engine.errors import HostError, InvalidParameter
from engine.sys import libc
from engine.sys.proc import Mount, mountinfo

LOG = logging.getLogger(__name__)

#: ioctl(2) request that makes ``dst`` share ``src``'s extents (btrfs, xfs): a
#: copy in O(1) where the file system supports it, <linux/fs.h>.
FICLONE = 0x40049409

_CHUNK = 1 << 20

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Opening a child directory during deletion: never through a symlink, never
#: into another mount (openat2 fails with EXDEV), never via /proc magic links.
_NO_ESCAPE = libc.RESOLVE_NO_XDEV | libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_NO_MAGICLINKS


def at_path(dir_fd: int, name: str) -> str:
    """A path naming ``name`` inside the directory open as ``dir_fd``.

    For the calls that have no ``*at`` form (``lgetxattr``, ``lsetxattr``):
    the ``/proc/self/fd`` magic link pins the directory, only ``name`` itself
    is looked up, and the ``l*`` calls do not follow it.
    """
    return f"/proc/self/fd/{dir_fd}/{name}"


def read_xattrs(target: int | str) -> dict[str, bytes]:
    """All extended attributes of an fd or (unfollowed) path, every namespace.

    :returns: name -> value; empty when the file system has no xattrs.
    """
    follow = isinstance(target, int)
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.ENODATA):
            return {}
        raise
    found: dict[str, bytes] = {}
    for name in sorted(names):
        try:
            found[name] = os.getxattr(target, name, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno == errno.ENODATA:  # removed since listxattr
                continue
            raise
    return found


def write_xattrs(target: int | str, xattrs: dict[str, bytes]) -> None:
    """Set every attribute of ``xattrs`` on an fd or (unfollowed) path."""
    follow = isinstance(target, int)
    for name, value in xattrs.items():
        os.setxattr(target, name, value, follow_symlinks=follow)


# --------------------------------------------------------------------------
# copy_tree


def copy_file_data(src_fd: int, dst_fd: int, size: int, reflink: bool = True) -> bool:
    """Copy ``size`` bytes of file content from ``src_fd`` to ``dst_fd``, keeping holes.

    Tries a reflink (``FICLONE``) first when ``reflink`` is set, then copies
    the data segments found with ``SEEK_DATA``/``SEEK_HOLE`` with
    copy_file_range(2) (in-kernel, no user-space buffers), falling back to
    sendfile(2) and then to read/write across file systems that refuse those.

    :returns: whether a reflink was made, so callers can stop trying when the
        file system cannot.
    """
    if reflink and size:
        try:
            fcntl.ioctl(dst_fd, FICLONE, src_fd)
            return True
        except OSError:
            pass
    for start, end in _data_segments(src_fd, size):
        _copy_range(src_fd, dst_fd, start, end - start)
    os.ftruncate(dst_fd, size)  # holes at the end and a file that shrank
    return False


def _data_segments(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The ``(start, end)`` ranges of ``fd`` that hold data (all of it if not sparse)."""
    st = os.fstat(fd)
    if st.st_blocks * 512 >= size:
        if size:
            yield 0, size
        return
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                return
            if exc.errno == errno.EINVAL:  # no SEEK_DATA support: copy it all
                yield pos, size
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if start >= end:
            return
        yield start, end
        pos = end


def _copy_range(src_fd: int, dst_fd: int, offset: int, count: int) -> None:
    end = offset + count
    pos = offset
    while pos < end:
        try:
            done = os.copy_file_range(src_fd, dst_fd, end - pos, pos, pos)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                raise
            _copy_range_slow(src_fd, dst_fd, pos, end - pos)
            return
        if done == 0:  # the source shrank under us
            return
        pos += done


def _copy_range_slow(src_fd: int, dst_fd: int, offset: int, count: int) -> None:
    os.lseek(dst_fd, offset, os.SEEK_SET)
    pos, end = offset, offset + count
    while pos < end:
        try:
            done = os.sendfile(dst_fd, src_fd, pos, min(_CHUNK, end - pos))
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
            data = os.pread(src_fd, min(_CHUNK, end - pos), pos)
            done = len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(dst_fd, view) :]
        if done == 0:
            return
        pos += done


@dataclass
class _Frame:
    """One directory being copied: its fds and the entries still to do."""

    src_fd: int
    dst_fd: int
    names: Iterator[str]
    st: os.stat_result
    rel: str


class _TreeCopier:
    """State of one :func:`copy_tree` run (hard links seen, reflink support)."""

    def __init__(self, dst_root_fd: int) -> None:
        self.dst_root_fd = dst_root_fd
        #: (st_dev, st_ino) of a multiply linked source inode -> its first copy.
        self.links: dict[tuple[int, int], str] = {}
        self.reflink = True

    def run(self, src_fd: int, dst_fd: int, st: os.stat_result) -> None:
        stack = [_Frame(src_fd, dst_fd, iter(sorted(os.listdir(src_fd))), st, "")]
        try:
            while stack:
                frame = stack[-1]
                name = next(frame.names, None)
                if name is None:
                    stack.pop()
                    # After the contents: creating entries changes a
                    # directory's mtime, and a read-only mode would stop us.
                    self._finish_dir(frame)
                    if stack:
                        os.close(frame.src_fd)
                        os.close(frame.dst_fd)
                    continue
                child = self._copy_entry(frame, name)
                if child is not None:
                    stack.append(child)
        finally:
            for frame in stack[1:]:
                os.close(frame.src_fd)
                os.close(frame.dst_fd)

    def _copy_entry(self, frame: _Frame, name: str) -> _Frame | None:
        st = os.stat(name, dir_fd=frame.src_fd, follow_symlinks=False)
        rel = f"{frame.rel}/{name}" if frame.rel else name
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(name, 0o700, dir_fd=frame.dst_fd)
            src_fd = os.open(name, _DIR_FLAGS, dir_fd=frame.src_fd)
            try:
                dst_fd = os.open(name, _DIR_FLAGS, dir_fd=frame.dst_fd)
            except BaseException:
                os.close(src_fd)
                raise
            return _Frame(src_fd, dst_fd, iter(sorted(os.listdir(src_fd))), st, rel)

        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1:
            first = self.links.get(key)
            if first is not None:
                os.link(first, name, src_dir_fd=self.dst_root_fd, dst_dir_fd=frame.dst_fd, follow_symlinks=False)
                return None
            self.links[key] = rel

        if stat.S_ISREG(st.st_mode):
            self._copy_file(frame, name, st)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=frame.src_fd), name, dir_fd=frame.dst_fd)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=frame.dst_fd, follow_symlinks=False)
            write_xattrs(at_path(frame.dst_fd, name), read_xattrs(at_path(frame.src_fd, name)))
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=frame.dst_fd, follow_symlinks=False)
        else:
            # fifo, socket, character or block device: mknod(2) makes them
            # all, the file type bits of st_mode say which.
            os.mknod(name, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev, dir_fd=frame.dst_fd)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=frame.dst_fd, follow_symlinks=False)
            write_xattrs(at_path(frame.dst_fd, name), read_xattrs(at_path(frame.src_fd, name)))
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=frame.dst_fd, follow_symlinks=False)
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=frame.dst_fd, follow_symlinks=False)
        return None

    def _copy_file(self, frame: _Frame, name: str, st: os.stat_result) -> None:
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=frame.src_fd)
        try:
            dst = os.open(
                name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=frame.dst_fd
            )
            try:
                if not copy_file_data(src, dst, st.st_size, self.reflink):
                    self.reflink = False
                # Metadata after the data: a write drops setuid bits and
                # security.capability; chown drops them too, so chmod is last.
                _set_metadata_fd(dst, st, read_xattrs(src))
            finally:
                os.close(dst)
        finally:
            os.close(src)

    def _finish_dir(self, frame: _Frame) -> None:
        _set_metadata_fd(frame.dst_fd, frame.st, read_xattrs(frame.src_fd))


def _set_metadata_fd(fd: int, st: os.stat_result, xattrs: dict[str, bytes]) -> None:
    """Owner, xattrs, mode and times of ``st`` onto ``fd``, in the order that keeps them all."""
    os.fchown(fd, st.st_uid, st.st_gid)
    write_xattrs(fd, xattrs)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def copy_tree(src: str, dst: str) -> None:
    """Copy the directory ``src`` to ``dst`` with full fidelity.

    Kept: regular files (reflinked or copied in the kernel, sparse holes
    preserved), directories, symlinks (never followed), hard links (source
    entries sharing an inode share one in ``dst``), fifos, sockets and
    character/block devices, owners, modes including setuid/setgid/sticky,
    access and modification times in nanoseconds, and extended attributes of
    every namespace (``user``, ``trusted``, ``security.capability``, ACLs).
    Directory metadata is applied after its contents.

    Mounts below ``src`` are not special: their visible contents are copied
    like any other directory (as moby's ``DirCopy`` does); callers that must
    not copy them unmount first. ``src`` itself may be a symlink to a directory.

    :param src: an existing directory.
    :param dst: a path that does not exist yet, or an empty directory; it gets
        ``src``'s owner, mode, xattrs and times.
    :raises InvalidParameter: if ``dst`` exists and is not an empty directory,
        or lies inside ``src`` (the copy would copy itself without end).
    :raises OSError: from the file system (``ENOSPC``, ...); ``dst`` is then
        left partially copied for the caller to remove.
    """
    real_src, real_dst = os.path.realpath(src), os.path.realpath(dst)
    if real_dst == real_src or real_dst.startswith(real_src.rstrip("/") + "/"):
        raise InvalidParameter(f"cannot copy {src} into itself ({dst})")
    src_fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(src_fd)
        try:
            os.mkdir(dst, 0o700)
        except FileExistsError:
            if not os.path.isdir(dst) or os.path.islink(dst) or os.listdir(dst):
                raise InvalidParameter(f"copy destination {dst} exists and is not an empty directory") from None
        dst_fd = os.open(dst, _DIR_FLAGS)
        try:
            _TreeCopier(dst_fd).run(src_fd, dst_fd, st)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


# --------------------------------------------------------------------------
# mounts


def _real(path: str) -> str:
    """``path`` absolute with its parent's symlinks resolved, the last component kept."""
    path = os.path.abspath(path)
    if path == "/":
        return path
    parent, name = os.path.split(path)
    return os.path.join(os.path.realpath(parent), name)


def mounts_below(path: str) -> list[str]:
    """Mount points at or below ``path``, in mount order (a stacked mount repeats)."""
    root = _real(path)
    prefix = root.rstrip("/") + "/"
    return [m.mount_point for m in mountinfo() if m.mount_point == root or m.mount_point.startswith(prefix)]


def unmount_all(path: str, attempts: int = 16) -> None:
    """Unmount every mount at or below ``path``, the deepest first.

    A mount that is busy is detached (``MNT_DETACH``): it disappears from the
    tree now and is released by the kernel when its last user goes.

    :raises HostError: if mounts remain after ``attempts`` rounds (a mount
        propagated back from another namespace, for instance).
    """
    for _ in range(attempts):
        points = mounts_below(path)
        if not points:
            return
        # Deepest first; for one mount point stacked several times, the
        # latest mount (the visible one) first.
        order = sorted(range(len(points)), key=lambda i: (points[i].count("/"), i), reverse=True)
        for i in order:
            point = points[i]
            try:
                libc.umount2(point, libc.UMOUNT_NOFOLLOW)
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOENT):  # gone with a parent
                    continue
                if exc.errno != errno.EBUSY:
                    raise HostError(f"cannot unmount {point}: {exc.strerror}") from exc
                LOG.info("%s is busy; detaching it", point)
                try:
                    libc.umount2(point, libc.MNT_DETACH | libc.UMOUNT_NOFOLLOW)
                except OSError as exc2:
                    if exc2.errno not in (errno.EINVAL, errno.ENOENT):
                        raise HostError(f"cannot detach {point}: {exc2.strerror}") from exc2
    left = mounts_below(path)
    if left:
        raise HostError(f"cannot unmount everything below {path}; still mounted: {', '.join(left)}")


#: Names the kernel reports in mountinfo -> Docker's "Backing Filesystem" names.
_BACKING_NAMES = {"ext2": "extfs", "ext3": "extfs", "ext4": "extfs"}


def backing_filesystem(path: str) -> str:
    """The type of the file system holding ``path`` (``extfs``, ``xfs``, ``tmpfs``, ...).

    Names follow Docker's ``Backing Filesystem`` in ``docker info``.
    """
    st = os.stat(path)
    real = os.path.realpath(path)
    best: tuple[tuple[bool, int], Mount] | None = None
    for m in mountinfo():
        if not (m.mount_point == "/" or real == m.mount_point or real.startswith(m.mount_point + "/")):
            continue
        # The mount whose device is the file's wins (btrfs subvolumes have
        # devices of their own and then the deepest mount point decides);
        # among equals the later mount, the one on top.
        key = (os.makedev(m.major, m.minor) == st.st_dev, len(m.mount_point))
        if best is None or key >= best[0]:
            best = (key, m)
    if best is None:
        return "unknown"
    fstype = best[1].fstype
    return _BACKING_NAMES.get(fstype, fstype)


# --------------------------------------------------------------------------
# deletion


@dataclass
class _RmFrame:
    fd: int
    names: Iterator[str]
    name: str
    shown: str
    device: int


#: The inode number of a btrfs subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID).
_BTRFS_SUBVOLUME_INO = 256


def _nested_subvolume(fd: int) -> bool:
    """Whether the directory ``fd``, reached without crossing a mount, is a btrfs subvolume.

    A subvolume has a device number of its own but is not a mount: the
    openat2(2) with ``RESOLVE_NO_XDEV`` that opened it proved that. Its root
    is inode 256. rmdir(2) deletes an empty subvolume (Linux 4.18).
    """
    return os.fstat(fd).st_ino == _BTRFS_SUBVOLUME_INO


def _foreign(path: str, top: str) -> HostError:
    return HostError(f"refusing to delete {path}: it is on another file system than {top} (a mount left behind?)")


def _open_child_dir(dir_fd: int, name: str, shown: str) -> int:
    try:
        return libc.openat2(dir_fd, name, _DIR_FLAGS, resolve=_NO_ESCAPE)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise HostError(f"refusing to delete {shown}: it is a mount point (a mount left behind?)") from exc
        raise


def remove_at(dir_fd: int, name: str, shown: str | None = None) -> bool:
    """Remove ``name`` (of any type, with all it contains) from the directory ``dir_fd``.

    Never follows a symlink (a symlink is removed, not its target) and never
    crosses into another file system: a mount point or an entry with another
    ``st_dev`` below ``name`` stops the deletion with an error, leaving what
    is on the other side untouched. Callers unmount first (:func:`unmount_all`).
    The one exception is a btrfs subvolume, which has a device number of its
    own without being a mount: it is emptied and deleted like a directory.

    :param dir_fd: the parent directory (may be an ``O_PATH`` fd).
    :param shown: how to name the path in errors (defaults to ``name``).
    :returns: False if ``name`` did not exist.
    :raises HostError: on a mount point or another file system below ``name``.
    """
    shown = shown or name
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return True

    top = _open_child_dir(dir_fd, name, shown)
    stack = [_RmFrame(top, iter(os.listdir(top)), name, shown, os.fstat(top).st_dev)]
    try:
        while stack:
            frame = stack[-1]
            child = next(frame.names, None)
            if child is None:
                stack.pop()
                os.close(frame.fd)
                os.rmdir(frame.name, dir_fd=stack[-1].fd if stack else dir_fd)
                continue
            child_shown = f"{frame.shown}/{child}"
            try:
                cst = os.stat(child, dir_fd=frame.fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if cst.st_dev != frame.device and not stat.S_ISDIR(cst.st_mode):
                raise _foreign(child_shown, shown)
            if stat.S_ISDIR(cst.st_mode):
                fd = _open_child_dir(frame.fd, child, child_shown)
                if cst.st_dev != frame.device and not _nested_subvolume(fd):
                    os.close(fd)
                    raise _foreign(child_shown, shown)
                stack.append(_RmFrame(fd, iter(os.listdir(fd)), child, child_shown, cst.st_dev))
            else:
                os.unlink(child, dir_fd=frame.fd)
    finally:
        for frame in stack:
            os.close(frame.fd)
    return True


def safe_rmtree(path: str) -> None:
    """Delete ``path`` and everything below it, safely.

    First every mount at or below ``path`` is unmounted (deepest first,
    detached if busy), then the tree is deleted through directory fds with
    :func:`remove_at`: symlinks are removed, never followed, and an entry on
    another file system stops the deletion with an error instead of deleting
    into it. A missing ``path`` is not an error.

    :raises InvalidParameter: for ``/``.
    :raises HostError: if a mount cannot be removed or another file system
        shows up below ``path``.
    """
    real = _real(path)
    if real == "/":
        raise InvalidParameter("refusing to delete /")
    unmount_all(real)
    parent, name = os.path.split(real)
    try:
        parent_fd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        remove_at(parent_fd, name, shown=real)
    finally:
        os.close(parent_fd)


#: Seconds a :class:`Reaper` waits before it starts a deletion.
REAP_DELAY = 0.05


class Reaper:
    """Deletes, in a thread of its own, trees that were renamed out of sight first.

    A removal that renames a tree to a ``.rm-`` name and hands it here answers
    as soon as the rename is done: most of a deletion is the kernel's work per
    entry (rmdir(2) of an ext4 directory costs tens of microseconds), and it
    then runs beside whatever comes next, mostly without the GIL, on another
    core. Each tree goes through :func:`safe_rmtree`, in the order given. What
    is still queued when the process dies keeps its ``.rm-`` name, for its
    owner's sweep at the next start; a tree that cannot be deleted is logged
    and left so as well.

    Each deletion starts ``delay`` seconds after it was queued: the removal
    that queued it has answered by then, and its last steps do not share the
    GIL with the deletion's.

    :param name: what the log and the thread's name call it.
    :param delay: seconds from :meth:`delete` to the deletion's start.
    """

    def __init__(self, name: str, delay: float = REAP_DELAY) -> None:
        self.name = name
        self.delay = delay
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[float, str]] = collections.deque()
        self._pending = 0  # queued or being deleted
        self._thread: threading.Thread | None = None

    def delete(self, path: str) -> None:
        """Queue ``path`` (already renamed out of sight) for deletion."""
        with self._cond:
            self._queue.append((time.monotonic() + self.delay, path))
            self._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=f"reaper-{self.name}", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every tree queued so far is deleted (or given up); whether that was
        within ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue))
                due, path = self._queue.popleft()
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                safe_rmtree(path)
            except Exception as exc:  # noqa: BLE001 - the thread must go on; the sweep retries
                LOG.warning("%s: could not delete %s (left for the next start): %s", self.name, path, exc)
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()


# --------------------------------------------------------------------------
# atomic writes


def write_synced(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write a new file in a staging directory and fsync it.

    For files that become visible only when their directory is renamed into
    place (the layer and image stores): no temporary name is needed, only the
    data on disk before the rename (and one :func:`fsync_dir` of the staging
    directory).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """fsync(2) a directory, making renames and creations in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_write_leftovers(directory: str, base: str = "") -> list[str]:
    """Remove what interrupted :func:`atomic_write` calls left in ``directory``: their temporary
    files never replaced anything, so they hold nothing.

    :param base: only those of this file name (all of them when empty).
    :returns: the names removed.
    :raises FileNotFoundError: ``directory`` does not exist.
    """
    prefix = f".{base}." if base else "."
    removed = []
    for name in os.listdir(directory):
        if name.startswith(prefix) and name.endswith(".tmp"):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            removed.append(name)
    return removed


def atomic_write(path: str, data: bytes, mode: int = 0o644, sync_dir: bool = True, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that readers and crashes see old or new, never half.

    Writes a temporary file in the same directory, fsyncs it, renames it over
    ``path`` and fsyncs the directory so the rename itself survives a crash.

    :param mode: permission bits of the new file (the umask does not apply).
    :param sync_dir: False leaves the directory's fsync to the caller's next write in the same
        directory (one fsync makes both renames durable; journaling file systems keep their order).
    :param durable: False for a file made again from other state whenever it is needed (a
        container's ``hosts``, written at each start): readers still see old or new, but nothing
        is fsynced, and a power cut may leave it empty.
    """
    directory, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if sync_dir and durable:
        fsync_dir(directory)
