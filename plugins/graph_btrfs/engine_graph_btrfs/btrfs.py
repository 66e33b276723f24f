"""The btrfs ioctls the driver uses, through :func:`fcntl.ioctl` (``<linux/btrfs.h>``).

Each call works on directory file descriptors, never by shelling out to
``btrfs``: creating a subvolume (``BTRFS_IOC_SUBVOL_CREATE``), snapshotting
one (``BTRFS_IOC_SNAP_CREATE_V2``), destroying one (``SNAP_DESTROY_V2``, or
the older ``SNAP_DESTROY`` before Linux 5.7), its read-only flag
(``SUBVOL_GETFLAGS``/``SETFLAGS``), its id (``INO_LOOKUP``), the subvolumes
nested in it (``GET_SUBVOL_ROOTREF`` + ``INO_LOOKUP_USER``, Linux 4.18), and
quotas: turning them on (``QUOTA_CTL``), limiting a subvolume's qgroup
(``QGROUP_LIMIT``) and destroying a qgroup (``QGROUP_CREATE`` with
``create=0``). The structures are the kernel's, field for field; the request
numbers are computed as ``<asm-generic/ioctl.h>`` does.

Errors are :class:`OSError` with the kernel's errno (``EEXIST``, ``ENOTEMPTY``,
``EDQUOT``, ...); the driver turns them into the engine's errors.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from collections.abc import Iterator

#: ``f_type`` of a btrfs file system (statfs(2)).
BTRFS_SUPER_MAGIC = 0x9123683E
#: The inode number of every subvolume's root directory.
FIRST_FREE_OBJECTID = 256

_MAGIC = 0x94
_WRITE, _READ = 1, 2


def _ioc(direction: int, number: int, struct: type[ctypes.Structure] | type[ctypes.c_uint64]) -> int:
    """``_IOC(dir, BTRFS_IOCTL_MAGIC, nr, sizeof(struct))`` of ``<asm-generic/ioctl.h>``."""
    return (direction << 30) | (ctypes.sizeof(struct) << 16) | (_MAGIC << 8) | number


class VolArgs(ctypes.Structure):
    """``struct btrfs_ioctl_vol_args``."""

    _fields_ = [("fd", ctypes.c_int64), ("name", ctypes.c_char * 4088)]


class VolArgsV2(ctypes.Structure):
    """``struct btrfs_ioctl_vol_args_v2`` (the name variant of its last union)."""

    _fields_ = [
        ("fd", ctypes.c_int64),
        ("transid", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("unused", ctypes.c_uint64 * 4),
        ("name", ctypes.c_char * 4040),
    ]


class InoLookupArgs(ctypes.Structure):
    """``struct btrfs_ioctl_ino_lookup_args``."""

    _fields_ = [("treeid", ctypes.c_uint64), ("objectid", ctypes.c_uint64), ("name", ctypes.c_char * 4080)]


class _RootRef(ctypes.Structure):
    _fields_ = [("treeid", ctypes.c_uint64), ("dirid", ctypes.c_uint64)]


class SubvolRootrefArgs(ctypes.Structure):
    """``struct btrfs_ioctl_get_subvol_rootref_args``."""

    _fields_ = [
        ("min_treeid", ctypes.c_uint64),
        ("rootref", _RootRef * 255),
        ("num_items", ctypes.c_uint8),
        ("align", ctypes.c_uint8 * 7),
    ]


class InoLookupUserArgs(ctypes.Structure):
    """``struct btrfs_ioctl_ino_lookup_user_args``."""

    _fields_ = [
        ("dirid", ctypes.c_uint64),
        ("treeid", ctypes.c_uint64),
        ("name", ctypes.c_char * 256),
        ("path", ctypes.c_char * (4080 - 256)),
    ]


class QuotaCtlArgs(ctypes.Structure):
    """``struct btrfs_ioctl_quota_ctl_args``."""

    _fields_ = [("cmd", ctypes.c_uint64), ("status", ctypes.c_uint64)]


class QgroupCreateArgs(ctypes.Structure):
    """``struct btrfs_ioctl_qgroup_create_args``."""

    _fields_ = [("create", ctypes.c_uint64), ("qgroupid", ctypes.c_uint64)]


class QgroupLimit(ctypes.Structure):
    """``struct btrfs_qgroup_limit``."""

    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("max_rfer", ctypes.c_uint64),
        ("max_excl", ctypes.c_uint64),
        ("rsv_rfer", ctypes.c_uint64),
        ("rsv_excl", ctypes.c_uint64),
    ]


class QgroupLimitArgs(ctypes.Structure):
    """``struct btrfs_ioctl_qgroup_limit_args``."""

    _fields_ = [("qgroupid", ctypes.c_uint64), ("lim", QgroupLimit)]


class FsInfoArgs(ctypes.Structure):
    """``struct btrfs_ioctl_fs_info_args``."""

    _fields_ = [
        ("max_id", ctypes.c_uint64),
        ("num_devices", ctypes.c_uint64),
        ("fsid", ctypes.c_uint8 * 16),
        ("nodesize", ctypes.c_uint32),
        ("sectorsize", ctypes.c_uint32),
        ("clone_alignment", ctypes.c_uint32),
        ("csum_type", ctypes.c_uint16),
        ("csum_size", ctypes.c_uint16),
        ("flags", ctypes.c_uint64),
        ("generation", ctypes.c_uint64),
        ("metadata_uuid", ctypes.c_uint8 * 16),
        ("reserved", ctypes.c_uint8 * 944),
    ]


IOC_SUBVOL_CREATE = _ioc(_WRITE, 14, VolArgs)
IOC_SNAP_DESTROY = _ioc(_WRITE, 15, VolArgs)
IOC_INO_LOOKUP = _ioc(_READ | _WRITE, 18, InoLookupArgs)
IOC_SNAP_CREATE_V2 = _ioc(_WRITE, 23, VolArgsV2)
IOC_SUBVOL_GETFLAGS = _ioc(_READ, 25, ctypes.c_uint64)
IOC_SUBVOL_SETFLAGS = _ioc(_WRITE, 26, ctypes.c_uint64)
IOC_FS_INFO = _ioc(_READ, 31, FsInfoArgs)
IOC_QUOTA_CTL = _ioc(_READ | _WRITE, 40, QuotaCtlArgs)
IOC_QGROUP_CREATE = _ioc(_WRITE, 42, QgroupCreateArgs)
IOC_QGROUP_LIMIT = _ioc(_READ, 43, QgroupLimitArgs)  # _IOR in the header, though it writes
IOC_GET_SUBVOL_ROOTREF = _ioc(_READ | _WRITE, 61, SubvolRootrefArgs)
IOC_INO_LOOKUP_USER = _ioc(_READ | _WRITE, 62, InoLookupUserArgs)
IOC_SNAP_DESTROY_V2 = _ioc(_WRITE, 63, VolArgsV2)

SUBVOL_RDONLY = 1 << 1
QUOTA_CTL_ENABLE = 1
QUOTA_CTL_DISABLE = 2
QGROUP_LIMIT_MAX_RFER = 1 << 0

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _name(name: str, limit: int) -> bytes:
    raw = os.fsencode(name)
    if not raw or b"/" in raw or raw in (b".", b"..") or len(raw) >= limit:
        raise ValueError(f"invalid subvolume name {name!r}")
    return raw


def open_dir(path: str, dir_fd: int | None = None) -> int:
    """A directory descriptor for ioctls (never through a symlink at the last component)."""
    return os.open(path, _DIR_FLAGS, dir_fd=dir_fd)


def create_subvolume(parent_fd: int, name: str) -> None:
    """Create an empty subvolume ``name`` in the directory ``parent_fd``."""
    args = VolArgs()
    args.name = _name(name, 4088)
    fcntl.ioctl(parent_fd, IOC_SUBVOL_CREATE, args)


def snapshot(source_fd: int, parent_fd: int, name: str, readonly: bool = False) -> None:
    """Snapshot the subvolume open as ``source_fd`` to ``name`` in the directory ``parent_fd``.

    The snapshot shares every extent with its source (copy on write) and is
    made in one transaction: it exists whole or not at all.
    """
    args = VolArgsV2()
    args.fd = source_fd
    args.flags = SUBVOL_RDONLY if readonly else 0
    args.name = _name(name, 4040)
    fcntl.ioctl(parent_fd, IOC_SNAP_CREATE_V2, args)


def destroy_subvolume(parent_fd: int, name: str) -> None:
    """Delete the subvolume ``name`` in the directory ``parent_fd``, with all it holds.

    :raises OSError: ``ENOTEMPTY`` while other subvolumes are nested in it
        (:func:`delete_subvolume_tree` removes those first).
    """
    args = VolArgsV2()
    args.name = _name(name, 4040)
    try:
        fcntl.ioctl(parent_fd, IOC_SNAP_DESTROY_V2, args)
        return
    except OSError as exc:
        if exc.errno != errno.ENOTTY:
            raise
    old = VolArgs()  # before Linux 5.7
    old.name = args.name
    fcntl.ioctl(parent_fd, IOC_SNAP_DESTROY, old)


def subvolume_flags(fd: int) -> int:
    """The subvolume's flags (``SUBVOL_RDONLY``)."""
    flags = ctypes.c_uint64()
    fcntl.ioctl(fd, IOC_SUBVOL_GETFLAGS, flags)
    return flags.value


def set_subvolume_flags(fd: int, flags: int) -> None:
    fcntl.ioctl(fd, IOC_SUBVOL_SETFLAGS, ctypes.c_uint64(flags))


def subvolume_id(fd: int) -> int:
    """The id (tree id, and so qgroup ``0/<id>``) of the subvolume holding the directory ``fd``."""
    args = InoLookupArgs()
    args.treeid = 0
    args.objectid = FIRST_FREE_OBJECTID
    fcntl.ioctl(fd, IOC_INO_LOOKUP, args)
    return int(args.treeid)


def is_subvolume(st: os.stat_result) -> bool:
    """Whether a stat of a directory on btrfs is a subvolume's root (inode 256)."""
    return st.st_ino == FIRST_FREE_OBJECTID and (st.st_mode & 0o170000) == 0o040000


def nested_subvolumes(fd: int) -> Iterator[str]:
    """Paths (relative to the subvolume root ``fd``) of the subvolumes directly nested in it."""
    args = SubvolRootrefArgs()
    args.min_treeid = 0
    while True:
        try:
            fcntl.ioctl(fd, IOC_GET_SUBVOL_ROOTREF, args)
            more = False
        except OSError as exc:
            if exc.errno != errno.EOVERFLOW:  # a full buffer: more to come
                raise
            more = True
        refs = [(int(args.rootref[i].treeid), int(args.rootref[i].dirid)) for i in range(args.num_items)]
        for treeid, dirid in refs:
            lookup = InoLookupUserArgs()
            lookup.dirid = dirid
            lookup.treeid = treeid
            fcntl.ioctl(fd, IOC_INO_LOOKUP_USER, lookup)
            yield os.fsdecode(lookup.path) + os.fsdecode(lookup.name)
        if not more or not refs:
            return
        args.min_treeid = refs[-1][0] + 1


def delete_subvolume_tree(parent_fd: int, name: str) -> None:
    """Delete the subvolume ``name`` and every subvolume nested in it, the deepest first.

    A read-only subvolume that holds nested ones is made writable first (its
    directory must change as they go).
    """
    fd = open_dir(name, dir_fd=parent_fd)
    try:
        children = list(nested_subvolumes(fd))
        if children:
            flags = subvolume_flags(fd)
            if flags & SUBVOL_RDONLY:
                set_subvolume_flags(fd, flags & ~SUBVOL_RDONLY)
        for child in children:
            directory, base = os.path.split(child)
            child_parent = open_dir(directory, dir_fd=fd) if directory else os.dup(fd)
            try:
                delete_subvolume_tree(child_parent, base)
            finally:
                os.close(child_parent)
    finally:
        os.close(fd)
    destroy_subvolume(parent_fd, name)


def quota_enable(fd: int) -> None:
    """Turn quotas on for the whole file system (a no-op when they are on)."""
    args = QuotaCtlArgs()
    args.cmd = QUOTA_CTL_ENABLE
    fcntl.ioctl(fd, IOC_QUOTA_CTL, args)


def qgroup_limit(fd: int, max_referenced: int) -> None:
    """Limit the referenced bytes of the qgroup of the subvolume holding ``fd`` (0 lifts the limit)."""
    args = QgroupLimitArgs()
    args.qgroupid = 0  # the fd's own subvolume
    args.lim.flags = QGROUP_LIMIT_MAX_RFER
    args.lim.max_rfer = max_referenced
    fcntl.ioctl(fd, IOC_QGROUP_LIMIT, args)


def qgroup_destroy(fd: int, subvolid: int) -> None:
    """Destroy the qgroup ``0/<subvolid>`` (of a subvolume already deleted)."""
    args = QgroupCreateArgs()
    args.create = 0
    args.qgroupid = subvolid
    fcntl.ioctl(fd, IOC_QGROUP_CREATE, args)


def fsid(fd: int) -> str:
    """The file system's UUID, as in ``/sys/fs/btrfs/<uuid>``."""
    args = FsInfoArgs()
    fcntl.ioctl(fd, IOC_FS_INFO, args)
    raw = bytes(args.fsid).hex()
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


def quotas_enabled(fd: int, sys_dir: str = "/sys/fs/btrfs") -> bool:
    """Whether quotas are on for the file system holding ``fd`` (``/sys/fs/btrfs/<uuid>/qgroups`` exists)."""
    return os.path.isdir(os.path.join(sys_dir, fsid(fd), "qgroups"))


def statfs_type(path: str) -> int:
    """``f_type`` of statfs(2) for ``path``."""
    buf = (ctypes.c_long * 16)()  # struct statfs is 120 bytes on 64-bit Linux; f_type comes first
    if _statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"statfs({path!r}) failed: {os.strerror(err)}")
    return buf[0] & 0xFFFFFFFF


_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_statfs = _libc.statfs
_statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
_statfs.restype = ctypes.c_int
