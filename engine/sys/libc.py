"""The engine's ctypes bindings to the C library and to raw system calls.

Only what the standard library lacks lives here: ``mount(2)``, ``umount2(2)``,
``renameat2(2)``, ``openat2(2)``, the namespace calls ``unshare(2)``,
``setns(2)`` and ``pivot_root(2)``, ``prctl(2)``, ``capget(2)``/``capset(2)``
``seccomp(2)`` (loading a compiled filter) and
``sethostname(2)``/``setdomainname(2)`` (Python 3.11 has none of the
latter in :mod:`os`; ``socket.sethostname`` exists but importing ``socket``
for one call is heavy in the exec driver's small processes).

Every binding declares ``argtypes`` and ``restype`` and has an ``errcheck``
that turns the C convention (``-1`` and ``errno``) into an :class:`OSError`
carrying that errno, so callers branch on ``exc.errno`` and never on text
(the shape of BenchExec's ``libc.py``). Strings are passed as bytes
(:func:`os.fsencode`), so any file name the kernel accepts works.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import signal
import struct
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from engine.errors import NotSupported

__all__ = [
    "CLONE_INTO_CGROUP",
    "CLONE_NEWCGROUP",
    "CLONE_NEWIPC",
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWUSER",
    "CLONE_NEWUTS",
    "MNT_DETACH",
    "MNT_EXPIRE",
    "MNT_FORCE",
    "MS_BIND",
    "MS_MOVE",
    "MS_NOATIME",
    "MS_NODEV",
    "MS_NODIRATIME",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_RDONLY",
    "MS_REC",
    "MS_RELATIME",
    "MS_REMOUNT",
    "MS_SHARED",
    "MS_SLAVE",
    "MS_STRICTATIME",
    "OVERLAYFS_SUPER_MAGIC",
    "PR_CAPBSET_DROP",
    "PR_CAPBSET_READ",
    "PR_CAP_AMBIENT",
    "PR_CAP_AMBIENT_CLEAR_ALL",
    "PR_CAP_AMBIENT_IS_SET",
    "PR_CAP_AMBIENT_LOWER",
    "PR_CAP_AMBIENT_RAISE",
    "PR_GET_MEMORY_MERGE",
    "PR_GET_NO_NEW_PRIVS",
    "PR_SET_CHILD_SUBREAPER",
    "PR_SET_KEEPCAPS",
    "PR_SET_MEMORY_MERGE",
    "PR_SET_NO_NEW_PRIVS",
    "PR_SET_PDEATHSIG",
    "RENAME_EXCHANGE",
    "RENAME_NOREPLACE",
    "RESOLVE_BENEATH",
    "RESOLVE_IN_ROOT",
    "RESOLVE_NO_MAGICLINKS",
    "RESOLVE_NO_SYMLINKS",
    "RESOLVE_NO_XDEV",
    "UMOUNT_NOFOLLOW",
    "CapabilitySets",
    "capget",
    "capset",
    "fork_into_cgroup",
    "fs_type",
    "has_syscall",
    "make_readonly_recursive",
    "mount",
    "openat2",
    "openat2_supported",
    "pivot_root",
    "prctl",
    "renameat2",
    "seccomp_set_filter",
    "setdomainname",
    "sethostname",
    "setns",
    "umount2",
    "unshare",
]

# mount(2) flags, <linux/mount.h>.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20

# Namespace flags for unshare(2), setns(2) and clone(2), <linux/sched.h>.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# More mount(2) flags (for remounts that must keep what is already set).
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

# prctl(2) options, <linux/prctl.h>.
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
# Kernel samepage merging of the whole process (Linux 6.4): inherited by fork(2) children
# and kept across execve(2).
PR_SET_MEMORY_MERGE = 67
PR_GET_MEMORY_MERGE = 68
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

# capget(2)/capset(2): version 3 carries 64 capability bits in two 32-bit words.
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# umount2(2) flags.
MNT_FORCE = 0x1
MNT_DETACH = 0x2
MNT_EXPIRE = 0x4
UMOUNT_NOFOLLOW = 0x8

# renameat2(2) flags.
RENAME_NOREPLACE = 0x1
RENAME_EXCHANGE = 0x2

# openat2(2) ``resolve`` flags, <linux/openat2.h>.
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

#: System calls without a glibc wrapper, by machine. Since Linux 5.1 new system
#: calls have one number on every architecture except alpha and mips, so the
#: table is short; a machine missing here gets NotSupported, never a wrong call.
#: pivot_root(2) predates that unification, so its number differs per
#: architecture (asm/unistd tables); glibc has no wrapper for it.
_SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    # clone3(2), openat2(2) and mount_setattr(2) came after the tables were unified (Linux 5.3,
    # 5.6, 5.12).
    machine: {"clone3": 435, "openat2": 437, "mount_setattr": 442}
    for machine in (
        "x86_64",
        "aarch64",
        "arm64",
        "armv7l",
        "armv8l",
        "i386",
        "i686",
        "ppc64le",
        "ppc64",
        "s390x",
        "riscv64",
        "loongarch64",
    )
}
for _machine, _number in (
    ("x86_64", 155),
    ("aarch64", 41),
    ("arm64", 41),
    ("riscv64", 41),
    ("loongarch64", 41),
    ("armv7l", 218),
    ("armv8l", 218),
    ("i386", 217),
    ("i686", 217),
    ("s390x", 217),
    ("ppc64le", 203),
    ("ppc64", 203),
):
    _SYSCALL_NUMBERS[_machine]["pivot_root"] = _number
# seccomp(2) too predates the unified numbers (asm/unistd tables).
for _machine, _number in (
    ("x86_64", 317),
    ("aarch64", 277),
    ("arm64", 277),
    ("riscv64", 277),
    ("loongarch64", 277),
    ("armv7l", 383),
    ("armv8l", 383),
    ("i386", 354),
    ("i686", 354),
    ("s390x", 348),
    ("ppc64le", 358),
    ("ppc64", 358),
):
    _SYSCALL_NUMBERS[_machine]["seccomp"] = _number
del _machine, _number

AT_FDCWD = -100

#: ``uname -m`` (what :func:`platform.machine` returns, without importing ``platform``).
_MACHINE = os.uname().machine


def _load_libc() -> ctypes.CDLL:
    """glibc by its soname; ``ctypes.util`` (which imports subprocess, shutil
    and tempfile, several MB in the exec driver's small processes) only when
    that fails, as on musl."""
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes import util

        return ctypes.CDLL(util.find_library("c") or "libc.so", use_errno=True)


_libc = _load_libc()


def _show(argument: Any) -> str:
    if isinstance(argument, bytes):
        return repr(os.fsdecode(argument))
    if isinstance(argument, int) or argument is None:
        return repr(argument)
    return "..."


def _errcheck(name: str, hidden: int = 0) -> Callable[[int, Any, tuple], int]:
    """An ``errcheck`` for calls that return -1 and set errno on failure.

    :param hidden: leading arguments not to show (a syscall's number).
    """

    def check(result: int, func: Any, arguments: tuple) -> int:
        if result == -1:
            err = ctypes.get_errno()
            shown = ", ".join(_show(a) for a in arguments[hidden:])
            raise OSError(err, f"{name}({shown}) failed: {os.strerror(err)}")
        return result

    return check


def _bind(name: str, restype: Any, argtypes: list[Any]) -> Callable[..., Any]:
    """A checked binding of the libc function ``name``.

    ``_libc[name]`` makes a new function object, so two bindings of the same
    symbol (``syscall`` for different calls) keep separate ``argtypes``.
    """
    func = _libc[name]
    func.restype = restype
    func.argtypes = argtypes
    func.errcheck = _errcheck(name)  # type: ignore[assignment]
    return func


def has_syscall(name: str) -> bool:
    """Whether the raw system call ``name`` has a known number on this machine."""
    return _SYSCALL_NUMBERS.get(_MACHINE, {}).get(name) is not None


def _bind_syscall(name: str, argtypes: list[Any]) -> Callable[..., Any] | None:
    """A checked binding of ``syscall(2)`` for the call ``name`` on this machine."""
    number = _SYSCALL_NUMBERS.get(_MACHINE, {}).get(name)
    if number is None:
        return None
    func = _libc["syscall"]
    func.restype = ctypes.c_long
    func.argtypes = [ctypes.c_long, *argtypes]
    func.errcheck = _errcheck(name, hidden=1)  # type: ignore[assignment]
    return functools.partial(func, number)


_mount = _bind(
    "mount", ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
)
_umount2 = _bind("umount2", ctypes.c_int, [ctypes.c_char_p, ctypes.c_int])
_statfs = _bind("statfs", ctypes.c_int, [ctypes.c_char_p, ctypes.c_void_p])
_unshare = _bind("unshare", ctypes.c_int, [ctypes.c_int])
_setns = _bind("setns", ctypes.c_int, [ctypes.c_int, ctypes.c_int])
_renameat2 = _bind(
    "renameat2", ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
)
# prctl(2) is variadic in C; every option used here takes at most four
# unsigned long arguments, so a fixed five-argument prototype is exact.
_prctl = _bind("prctl", ctypes.c_int, [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong])
_sethostname = _bind("sethostname", ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t])
_setdomainname = _bind("setdomainname", ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t])
_pivot_root = _bind_syscall("pivot_root", [ctypes.c_char_p, ctypes.c_char_p])
_seccomp = _bind_syscall("seccomp", [ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p])


class _CapHeader(ctypes.Structure):
    """``struct __user_cap_header_struct`` of capget(2)."""

    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    """``struct __user_cap_data_struct`` of capget(2): one 32-bit word of each set."""

    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_capget = _bind("capget", ctypes.c_int, [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)])
_capset = _bind("capset", ctypes.c_int, [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)])


class OpenHow(ctypes.Structure):
    """``struct open_how`` of openat2(2)."""

    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_openat2 = _bind_syscall("openat2", [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(OpenHow), ctypes.c_size_t])


class MountAttr(ctypes.Structure):
    """``struct mount_attr`` of mount_setattr(2)."""

    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


_mount_setattr = _bind_syscall(
    "mount_setattr", [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.POINTER(MountAttr), ctypes.c_size_t]
)
#: mount_setattr(2): the attribute that makes a mount read-only, and the flag that reaches every
#: mount below the path (linux/mount.h).
MOUNT_ATTR_RDONLY = 0x1
AT_RECURSIVE = 0x8000


def make_readonly_recursive(path: str | bytes | os.PathLike) -> None:
    """Make the mount at ``path`` and every mount below it read-only (mount_setattr(2),
    Linux 5.12+), what a bind remount cannot do for submounts.

    :raises NotSupported: the kernel or machine has no mount_setattr.
    :raises OSError: with the errno of the failed call.
    """
    if _mount_setattr is None:
        raise NotSupported(f"mount_setattr is not available on {_MACHINE}")
    attr = MountAttr(attr_set=MOUNT_ATTR_RDONLY)
    try:
        _mount_setattr(AT_FDCWD, _path(path), AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr))
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            raise NotSupported("mount_setattr(2) is not supported by this kernel (Linux 5.12 or later)") from exc
        raise


def _path(value: str | bytes | os.PathLike | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(
    source: str | bytes | None,
    target: str | bytes | os.PathLike,
    fstype: str | bytes | None = None,
    flags: int = 0,
    data: str | bytes | None = None,
) -> None:
    """Mount ``source`` on ``target`` (mount(2)).

    :raises OSError: with the errno of the failed call.
    """
    raw = _path(data)
    _mount(_path(source), _path(target), _path(fstype), flags, raw)


def umount2(target: str | bytes | os.PathLike, flags: int = 0) -> None:
    """Unmount ``target`` (umount2(2)); ``MNT_DETACH`` for a lazy unmount.

    :raises OSError: ``EINVAL`` if ``target`` is not a mount point, ``EBUSY``
        if it is in use, and so on.
    """
    _umount2(_path(target), flags)


#: ``f_type`` of statfs(2) for an overlay file system (linux/magic.h).
OVERLAYFS_SUPER_MAGIC = 0x794C7630


def fs_type(path: str | bytes | os.PathLike) -> int:
    """The ``f_type`` (the file system's magic number) of the file system ``path`` is on.

    :raises OSError: from statfs(2).
    """
    # struct statfs is at most 120 bytes on Linux; f_type, a long, comes first on every architecture.
    buf = ctypes.create_string_buffer(256)
    _statfs(_path(path), buf)
    return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF


#: inotify(7): the events and flags used here (linux/inotify.h).
IN_MOVED_TO = 0x00000080
IN_Q_OVERFLOW = 0x00004000
IN_ONLYDIR = 0x01000000
_INOTIFY_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name

_inotify_init1 = _bind("inotify_init1", ctypes.c_int, [ctypes.c_int])
_inotify_add_watch = _bind("inotify_add_watch", ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32])
_inotify_rm_watch = _bind("inotify_rm_watch", ctypes.c_int, [ctypes.c_int, ctypes.c_int])


def inotify_init() -> int:
    """A new inotify instance, non-blocking and close-on-exec (inotify_init1(2))."""
    return int(_inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))


def inotify_add_watch(fd: int, path: str | bytes | os.PathLike, mask: int) -> int:
    """Watch ``path`` for the events in ``mask``; the watch descriptor (the same one again for
    a path already watched, whose mask is then replaced)."""
    return int(_inotify_add_watch(fd, _path(path), mask))


def inotify_rm_watch(fd: int, wd: int) -> None:
    """Stop watch ``wd`` (EINVAL: the kernel removed it already, as when its directory went)."""
    _inotify_rm_watch(fd, wd)


def inotify_events(data: bytes) -> Iterator[tuple[int, int, str]]:
    """``(wd, mask, name)`` of each event in ``data`` (what a read(2) of the instance returned)."""
    pos = 0
    while pos + _INOTIFY_EVENT.size <= len(data):
        wd, mask, _cookie, length = _INOTIFY_EVENT.unpack_from(data, pos)
        pos += _INOTIFY_EVENT.size
        name = data[pos : pos + length].split(b"\0", 1)[0].decode(errors="surrogateescape")
        pos += length
        yield wd, mask, name


def unshare(flags: int) -> None:
    """Move this process (this thread, for some flags) into new namespaces (unshare(2)).

    ``os.unshare`` only exists from Python 3.12.

    :raises OSError: ``EPERM`` without CAP_SYS_ADMIN, ``EINVAL`` for
        ``CLONE_NEWUSER`` in a threaded process, and so on.
    """
    _unshare(flags)


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace ``fd`` refers to (an open ``/proc/PID/ns/*`` file) (setns(2)).

    :param nstype: one ``CLONE_NEW*`` flag to check the kind, or 0 for any.
    """
    _setns(fd, nstype)


def renameat2(
    src: str | bytes | os.PathLike,
    dst: str | bytes | os.PathLike,
    flags: int = 0,
    src_dir_fd: int | None = None,
    dst_dir_fd: int | None = None,
) -> None:
    """Rename like :func:`os.rename`, with renameat2(2) flags such as ``RENAME_NOREPLACE``.

    Plain rename(2) silently replaces an empty directory; ``RENAME_NOREPLACE``
    makes publishing a directory atomic and exclusive.

    :raises OSError: ``EEXIST`` when ``RENAME_NOREPLACE`` finds ``dst``.
    """
    _renameat2(
        AT_FDCWD if src_dir_fd is None else src_dir_fd,
        _path(src),
        AT_FDCWD if dst_dir_fd is None else dst_dir_fd,
        _path(dst),
        flags,
    )


def openat2(dir_fd: int, path: str | bytes | os.PathLike, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """Open ``path`` relative to ``dir_fd`` with openat2(2) ``resolve`` rules; return the fd.

    ``RESOLVE_IN_ROOT`` treats ``dir_fd`` as the root of the lookup: ``..``
    and absolute symlinks are clamped to it, as if the process were chrooted
    there, which is what safe layer extraction needs (Linux 5.6+). The new
    fd is always close-on-exec.

    :raises NotSupported: when the kernel or machine has no openat2.
    :raises OSError: with the errno of the failed call (``EXDEV`` from
        ``RESOLVE_NO_XDEV``, ``ELOOP`` from ``RESOLVE_NO_SYMLINKS``, ...).
    """
    if _openat2 is None:
        raise NotSupported(f"openat2 is not available on {_MACHINE}")
    how = OpenHow(flags=flags | os.O_CLOEXEC, mode=mode, resolve=resolve)
    try:
        return _openat2(dir_fd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    except OSError as exc:
        if exc.errno == errno.ENOSYS:  # a kernel older than 5.6
            raise NotSupported("openat2(2) is not supported by this kernel (Linux 5.6 or later is needed)") from exc
        raise


@functools.cache
def openat2_supported() -> bool:
    """Whether openat2(2) with ``RESOLVE_IN_ROOT`` works here (probes once)."""
    try:
        fd = openat2(AT_FDCWD, "/", os.O_PATH | os.O_DIRECTORY, resolve=RESOLVE_IN_ROOT)
    except (NotSupported, OSError):
        return False
    os.close(fd)
    return True


def pivot_root(new_root: str | bytes | os.PathLike, put_old: str | bytes | os.PathLike) -> None:
    """Make ``new_root`` the root mount of this mount namespace (pivot_root(2)).

    With ``pivot_root(".", ".")`` after ``chdir(new_root)`` the old root ends
    up stacked on ``.``, to be detached with ``umount2(".", MNT_DETACH)``
    (the trick pivot_root(2)'s NOTES describe), so no ``put_old`` directory
    is needed inside the container's root.

    :raises NotSupported: on a machine without a known system call number.
    :raises OSError: ``EINVAL`` if ``new_root`` is not a mount point or a
        parent mount is shared, ``EBUSY``, ``EPERM`` and so on.
    """
    if _pivot_root is None:
        raise NotSupported(f"pivot_root is not available on {_MACHINE}")
    _pivot_root(os.fsencode(new_root), os.fsencode(put_old))


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """Call prctl(2) and return its (non-negative) result.

    :raises OSError: ``EINVAL`` for an unknown option or capability, ``EPERM``
        for ``PR_CAPBSET_DROP`` without CAP_SETPCAP, and so on.
    """
    return _prctl(option, arg2, arg3, arg4, arg5)


class _SockFprog(ctypes.Structure):
    """``struct sock_fprog`` of seccomp(2): the length in instructions and the program."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_MODE_FILTER = 2
#: One ``struct sock_filter``: u16 code, u8 jt, u8 jf, u32 k.
SOCK_FILTER_SIZE = 8


#: clone3(2): the child starts in the cgroup (v2) whose directory ``clone_args.cgroup`` is.
CLONE_INTO_CGROUP = 0x200000000
#: What clone3(2) fails with where the kernel has no clone3 (ENOSYS) or no CLONE_INTO_CGROUP.
_CLONE_INTO_CGROUP_UNSUPPORTED = frozenset({errno.ENOSYS, errno.E2BIG, errno.EINVAL})


class _CloneArgs(ctypes.Structure):
    """``struct clone_args`` up to ``cgroup`` (CLONE_ARGS_SIZE_VER2, <linux/sched.h>)."""

    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "flags",
            "pidfd",
            "child_tid",
            "parent_tid",
            "exit_signal",
            "stack",
            "stack_size",
            "tls",
            "set_tid",
            "set_tid_size",
            "cgroup",
        )
    ]


def _bind_clone3() -> Callable[..., int] | None:
    """clone3(2) through ``syscall(2)``, called with the GIL held (a PyDLL function), as os.fork
    calls fork(2): no other thread of the interpreter runs while the process is copied."""
    number = _SYSCALL_NUMBERS.get(_MACHINE, {}).get("clone3")
    if number is None:
        return None
    func = ctypes.PyDLL(None, use_errno=True)["syscall"]
    func.restype = ctypes.c_long
    func.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_size_t]
    return functools.partial(func, number)


_clone3 = _bind_clone3()


def fork_into_cgroup(cgroup_fd: int) -> int | None:
    """fork(2), with the child starting in the cgroup v2 directory open as ``cgroup_fd``
    (clone3(2) with CLONE_INTO_CGROUP, Linux 5.7); the child gets 0, the parent its PID, and
    None means the kernel cannot do it (nothing was forked): the caller forks and moves.

    Moving a process by a write to ``cgroup.procs`` write-locks a lock every fork(2) on the
    machine reads, and that lock waits for an RCU grace period, several milliseconds; a child
    born in the cgroup takes no such lock. The interpreter is prepared and restored around the
    call as :func:`os.fork` does it (``PyOS_BeforeFork`` and the ``PyOS_AfterFork_*`` pair).
    glibc's own fork handlers do not run: the child must be single-threaded code that execs or
    exits soon, as an exec helper's child is.

    :raises OSError: nothing was forked: ``EBADF`` for a descriptor that is not a cgroup v2
        directory, ``EAGAIN`` and the like as fork(2).
    """
    if _clone3 is None:
        return None
    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=signal.SIGCHLD, cgroup=cgroup_fd)
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = _clone3(ctypes.byref(args), ctypes.sizeof(args))
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if pid >= 0:
        return int(pid)
    if err in _CLONE_INTO_CGROUP_UNSUPPORTED:
        return None
    raise OSError(err, f"clone3(CLONE_INTO_CGROUP) failed: {os.strerror(err)}")


def seccomp_set_filter(program: bytes, flags: int = 0) -> None:
    """Load a compiled BPF filter for this thread and its future children (seccomp(2)).

    Without no_new_privs set first, the caller needs CAP_SYS_ADMIN; a
    filter stays for the life of the process and crosses execve(2).

    :param program: ``struct sock_filter`` instructions, as libseccomp exports them.
    :param flags: ``SECCOMP_FILTER_FLAG_*`` (LOG, SPEC_ALLOW); 0 falls back to
        prctl(2) where seccomp(2) has no known number.
    :raises OSError: ``EACCES`` without the capability and without
        no_new_privs, ``EINVAL`` for a malformed program or an unknown flag.
    """
    if not program or len(program) % SOCK_FILTER_SIZE:
        raise OSError(errno.EINVAL, f"seccomp: a BPF program of {len(program)} bytes is malformed")
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // SOCK_FILTER_SIZE, ctypes.cast(buffer, ctypes.c_void_p))
    if _seccomp is not None:
        _seccomp(_SECCOMP_SET_MODE_FILTER, flags, ctypes.addressof(prog))
    elif flags:
        raise NotSupported(f"seccomp(2) has no known number on {_MACHINE}: filter flags cannot be set")
    else:
        _prctl(PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0)


class CapabilitySets(NamedTuple):
    """The effective, permitted and inheritable capability sets, as 64-bit masks."""

    effective: int
    permitted: int
    inheritable: int


def capget(pid: int = 0) -> CapabilitySets:
    """The capability sets of ``pid`` (0: this thread) (capget(2))."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    _capget(ctypes.byref(header), data)
    return CapabilitySets(
        data[0].effective | data[1].effective << 32,
        data[0].permitted | data[1].permitted << 32,
        data[0].inheritable | data[1].inheritable << 32,
    )


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets from 64-bit masks (capset(2)).

    capabilities(7): the new permitted set must be a subset of the old one,
    the effective set a subset of the new permitted set, and the inheritable
    set a subset of the bounding set.

    :raises OSError: ``EPERM`` when a rule above is broken.
    """
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for index, shift in ((0, 0), (1, 32)):
        data[index].effective = (effective >> shift) & 0xFFFFFFFF
        data[index].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[index].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _capset(ctypes.byref(header), data)


#: mallopt(3) parameters.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def mallopt(param: int, value: int) -> bool:
    """Tune glibc's malloc (mallopt(3)); whether it took the value (False on another libc)."""
    fn = getattr(_libc, "mallopt", None)
    if fn is None:
        return False
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(fn(param, value) == 1)


def sethostname(name: str) -> None:
    """Set the host name of this UTS namespace (sethostname(2)).

    :raises OSError: ``EINVAL`` for a name longer than 64 bytes, ``EPERM``
        without CAP_SYS_ADMIN.
    """
    raw = name.encode()
    _sethostname(raw, len(raw))


def setdomainname(name: str) -> None:
    """Set the NIS domain name of this UTS namespace (setdomainname(2))."""
    raw = name.encode()
    _setdomainname(raw, len(raw))
