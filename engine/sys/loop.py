"""Loop devices through their ioctls (loop(4)): attach a file, find a file's device, detach.

A loop device makes a regular file look like a block device. The devmapper
graph driver backs its thin pool with two sparse files this way (as Docker's
``loopback`` package does), and tests put btrfs, ext4 or xfs on a file.

:func:`attach` asks ``/dev/loop-control`` for a free device
(``LOOP_CTL_GET_FREE``) and binds the file to it with one ``LOOP_CONFIGURE``
(Linux 5.8), falling back to ``LOOP_SET_FD`` + ``LOOP_SET_STATUS64`` on older
kernels. Another process may take the same free device between the two
calls; the kernel then answers ``EBUSY`` and we ask again.

With ``autoclear`` (``LO_FLAGS_AUTOCLEAR``) the kernel detaches the device by
itself when its last user closes it. :func:`attach` therefore hands back a
:class:`LoopDevice` that keeps the device open: mount it (or load it into a
device-mapper table), then close it. From then on the device lives exactly as
long as the mount or table that uses it, so a crash cannot leak it. Closing
it before anything else opened it detaches it at once.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
from types import TracebackType

__all__ = [
    "LO_FLAGS_AUTOCLEAR",
    "LO_FLAGS_DIRECT_IO",
    "LO_FLAGS_READ_ONLY",
    "LoopDevice",
    "attach",
    "backing_file",
    "detach",
    "find_attached",
]

# <linux/loop.h>
LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82

LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16

LO_NAME_SIZE = 64
LOOP_MAJOR = 7

_CONTROL = "/dev/loop-control"
#: How often to ask for another free device when someone else took ours.
_ATTEMPTS = 32


class LoopInfo64(ctypes.Structure):
    """``struct loop_info64``."""

    _fields_ = [
        ("lo_device", ctypes.c_uint64),
        ("lo_inode", ctypes.c_uint64),
        ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64),
        ("lo_sizelimit", ctypes.c_uint64),
        ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32),
        ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32),
        ("lo_file_name", ctypes.c_char * LO_NAME_SIZE),
        ("lo_crypt_name", ctypes.c_char * LO_NAME_SIZE),
        ("lo_encrypt_key", ctypes.c_uint8 * 32),
        ("lo_init", ctypes.c_uint64 * 2),
    ]


class LoopConfig(ctypes.Structure):
    """``struct loop_config`` of ``LOOP_CONFIGURE``."""

    _fields_ = [
        ("fd", ctypes.c_uint32),
        ("block_size", ctypes.c_uint32),
        ("info", LoopInfo64),
        ("reserved", ctypes.c_uint64 * 8),
    ]


def _device_path(number: int, dev_dir: str) -> str:
    path = os.path.join(dev_dir, f"loop{number}")
    if not os.path.exists(path):
        # devtmpfs makes the node; a /dev without it (a container's) needs
        # one by hand.
        os.mknod(path, stat.S_IFBLK | 0o660, os.makedev(LOOP_MAJOR, number))
    return path


def _info_for(file_fd: int, path: str, flags: int) -> LoopInfo64:
    info = LoopInfo64()
    info.lo_flags = flags
    # The name is informational (losetup shows it); the kernel keeps 63 bytes.
    info.lo_file_name = os.fsencode(path)[: LO_NAME_SIZE - 1]
    return info


def _bind(loop_fd: int, file_fd: int, info: LoopInfo64) -> None:
    config = LoopConfig()
    config.fd = file_fd
    config.info = info
    try:
        fcntl.ioctl(loop_fd, LOOP_CONFIGURE, config)
        return
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTTY):
            raise
    # Before Linux 5.8: two steps. The status cannot fail in a way the
    # configure path would not have; undo the binding if it does anyway.
    fcntl.ioctl(loop_fd, LOOP_SET_FD, file_fd)
    try:
        fcntl.ioctl(loop_fd, LOOP_SET_STATUS64, info)
    except OSError:
        fcntl.ioctl(loop_fd, LOOP_CLR_FD, 0)
        raise


class LoopDevice:
    """A loop device bound to a file, held open until :meth:`close` (see the module doc).

    :param path: the device node, ``/dev/loopN``.
    :param fd: an open descriptor of it, owned by this object.
    """

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    def close(self) -> None:
        """Close our descriptor; with autoclear and no other user, the kernel detaches the device."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> LoopDevice:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LoopDevice({self.path!r})"


def attach(path: str, *, read_only: bool = False, autoclear: bool = True, dev_dir: str = "/dev") -> LoopDevice:
    """Bind the file ``path`` to a free loop device; return it, held open.

    :param autoclear: detach by itself when the last user closes the device
        (see the module doc).
    :raises OSError: with the errno of the failing call (``ENOENT`` without
        ``/dev/loop-control``: no loop driver).
    """
    flags = (LO_FLAGS_READ_ONLY if read_only else 0) | (LO_FLAGS_AUTOCLEAR if autoclear else 0)
    file_fd = os.open(path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
    try:
        control = os.open(os.path.join(dev_dir, "loop-control"), os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(_ATTEMPTS):
                number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
                device = _device_path(number, dev_dir)
                loop_fd = os.open(device, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
                try:
                    _bind(loop_fd, file_fd, _info_for(file_fd, path, flags))
                except OSError as exc:
                    os.close(loop_fd)
                    if exc.errno != errno.EBUSY:
                        raise
                    continue
                except BaseException:
                    os.close(loop_fd)
                    raise
                return LoopDevice(device, loop_fd)
            raise OSError(errno.EBUSY, f"no free loop device for {path} after {_ATTEMPTS} attempts")
        finally:
            os.close(control)
    finally:
        os.close(file_fd)


def detach(device: str) -> None:
    """Unbind the loop device (``LOOP_CLR_FD``); with autoclear set and users left, at their last close.

    :raises OSError: ``ENXIO`` when nothing is bound to it.
    """
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD, 0)
    finally:
        os.close(fd)


def backing_file(device: str, sys_dir: str = "/sys/block") -> str | None:
    """The file bound to the loop device ``device``, or None when it is free.

    Reads ``/sys/block/loopN/loop/backing_file``, which holds the full path
    (``LOOP_GET_STATUS64`` only knows its first 63 bytes).
    """
    name = os.path.basename(device)
    try:
        with open(os.path.join(sys_dir, name, "loop", "backing_file")) as f:
            return f.read().rstrip("\n")
    except FileNotFoundError:
        return None


def find_attached(path: str, sys_dir: str = "/sys/block", dev_dir: str = "/dev") -> str | None:
    """The loop device bound to the file ``path`` (compared by device and inode), or None."""
    st = os.stat(path)
    try:
        names = sorted(n for n in os.listdir(sys_dir) if n.startswith("loop"))
    except FileNotFoundError:
        return None
    for name in names:
        base = os.path.join(sys_dir, name, "loop")
        try:
            with open(os.path.join(base, "backing_file")) as f:
                backing = f.read().rstrip("\n")
            with open(os.path.join(base, "offset")) as f:
                offset = int(f.read())
        except (FileNotFoundError, ValueError):
            continue
        try:
            bst = os.stat(backing)
        except OSError:
            continue
        if (bst.st_dev, bst.st_ino) == (st.st_dev, st.st_ino) and offset == 0:
            return os.path.join(dev_dir, name)
    return None
