"""The engine's ctypes bindings to the C library and to raw system calls.

Only what the standard library lacks lives here: ``mount(2)``, ``umount2(2)``,
``renameat2(2)`` and ``openat2(2)`` so far; namespaces and capabilities
(``pivot_root``, ``unshare``, ``setns``, ``capset``) belong here as well.

Every binding declares ``argtypes`` and ``restype`` and has an ``errcheck``
that turns the C convention (``-1`` and ``errno``) into an :class:`OSError`
carrying that errno, so callers branch on ``exc.errno`` and never on text
(the shape of BenchExec's ``libc.py``). Strings are passed as bytes
(:func:`os.fsencode`), so any file name the kernel accepts works.
"""

from __future__ import annotations

import ctypes
import errno
import ctypes.util
import functools
import os
import platform
from typing import Any, Callable

from engine.errors import NotSupported

__all__ = [
    "MS_RDONLY", "MS_NOSUID", "MS_NODEV", "MS_NOEXEC", "MS_REMOUNT", "MS_BIND",
    "MS_MOVE", "MS_REC", "MS_PRIVATE", "MS_SLAVE", "MS_SHARED",
    "MNT_FORCE", "MNT_DETACH", "MNT_EXPIRE", "UMOUNT_NOFOLLOW",
    "RENAME_NOREPLACE", "RENAME_EXCHANGE",
    "RESOLVE_NO_XDEV", "RESOLVE_NO_MAGICLINKS", "RESOLVE_NO_SYMLINKS",
    "RESOLVE_BENEATH", "RESOLVE_IN_ROOT",
    "mount", "umount2", "renameat2", "openat2", "openat2_supported",
    "CLONE_NEWNS", "CLONE_NEWUTS", "CLONE_NEWIPC", "CLONE_NEWPID", "CLONE_NEWNET", "CLONE_NEWUSER",
    "CLONE_NEWCGROUP", "unshare", "setns",
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
_SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    machine: {"openat2": 437}
    for machine in ("x86_64", "aarch64", "arm64", "armv7l", "armv8l", "i386", "i686",
                    "ppc64le", "ppc64", "s390x", "riscv64", "loongarch64")
}

AT_FDCWD = -100

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


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


def _bind_syscall(name: str, argtypes: list[Any]) -> Callable[..., Any] | None:
    """A checked binding of ``syscall(2)`` for the call ``name`` on this machine."""
    number = _SYSCALL_NUMBERS.get(platform.machine(), {}).get(name)
    if number is None:
        return None
    func = _libc["syscall"]
    func.restype = ctypes.c_long
    func.argtypes = [ctypes.c_long, *argtypes]
    func.errcheck = _errcheck(name, hidden=1)  # type: ignore[assignment]
    return functools.partial(func, number)


_mount = _bind("mount", ctypes.c_int,
               [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p])
_umount2 = _bind("umount2", ctypes.c_int, [ctypes.c_char_p, ctypes.c_int])
_unshare = _bind("unshare", ctypes.c_int, [ctypes.c_int])
_setns = _bind("setns", ctypes.c_int, [ctypes.c_int, ctypes.c_int])
_renameat2 = _bind("renameat2", ctypes.c_int,
                   [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint])


class OpenHow(ctypes.Structure):
    """``struct open_how`` of openat2(2)."""

    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_openat2 = _bind_syscall(
    "openat2", [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(OpenHow), ctypes.c_size_t]
)


def _path(value: str | bytes | os.PathLike | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(source: str | bytes | None, target: str | bytes | os.PathLike, fstype: str | bytes | None = None,
          flags: int = 0, data: str | bytes | None = None) -> None:
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


def renameat2(src: str | bytes | os.PathLike, dst: str | bytes | os.PathLike, flags: int = 0,
              src_dir_fd: int | None = None, dst_dir_fd: int | None = None) -> None:
    """Rename like :func:`os.rename`, with renameat2(2) flags such as ``RENAME_NOREPLACE``.

    Plain rename(2) silently replaces an empty directory; ``RENAME_NOREPLACE``
    makes publishing a directory atomic and exclusive.

    :raises OSError: ``EEXIST`` when ``RENAME_NOREPLACE`` finds ``dst``.
    """
    _renameat2(AT_FDCWD if src_dir_fd is None else src_dir_fd, _path(src),
               AT_FDCWD if dst_dir_fd is None else dst_dir_fd, _path(dst), flags)


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
        raise NotSupported(f"openat2 is not available on {platform.machine()}")
    how = OpenHow(flags=flags | os.O_CLOEXEC, mode=mode, resolve=resolve)
    try:
        return _openat2(dir_fd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    except OSError as exc:
        if exc.errno == errno.ENOSYS:  # a kernel older than 5.6
            raise NotSupported("openat2(2) is not supported by this kernel (Linux 5.6 or later is needed)") from exc
        raise


@functools.lru_cache(maxsize=None)
def openat2_supported() -> bool:
    """Whether openat2(2) with ``RESOLVE_IN_ROOT`` works here (probes once)."""
    try:
        fd = openat2(AT_FDCWD, "/", os.O_PATH | os.O_DIRECTORY, resolve=RESOLVE_IN_ROOT)
    except (NotSupported, OSError):
        return False
    os.close(fd)
    return True
