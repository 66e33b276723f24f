"""libseccomp (Debian ``libseccomp2``) through ctypes: a resolved seccomp profile -> a BPF program.

The engine compiles filters with libseccomp and loads the result itself
(:func:`engine.sys.libc.seccomp_set_filter`): a container's init runs
after pivot_root(2), where the host's shared libraries are out of reach,
and one compiled program serves the container's first process and every
``exec`` into it.

:func:`compile_filter` takes the runtime-spec shape that
:func:`engine.security.seccomp.resolve` produces (``defaultAction``,
``defaultErrnoRet``, ``architectures``, ``syscalls`` with ``names``,
``action``, ``errnoRet`` and ``args``) and follows runc's rules
(``libcontainer/seccomp``): a rule whose action is the default action is
left out; a system call libseccomp does not know is skipped (it does not
exist on this kernel's architecture); conditions on the same argument
become one rule each; the binary-tree optimisation is on for long lists.
The constants are libseccomp's ABI (``seccomp.h``), stable since 2.3.

Every binding declares ``argtypes`` and ``restype``; libseccomp returns
``-errno`` on failure, which :func:`_check` turns into an :class:`OSError`.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Any

from engine.errors import InvalidParameter, NotSupported

__all__ = ["ACTIONS", "OPERATORS", "available", "compile_filter", "resolve_syscall", "unsupported", "version"]

#: Actions by their profile names -> the libseccomp value (the errno or trace
#: code goes in the low 16 bits of ERRNO and TRACE).
ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": 0x00000000,  # = KILL_THREAD, as runc maps it
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
    "SCMP_ACT_NOTIFY": 0x7FC00000,
}
_WITH_CODE = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")

#: Comparison operators (``enum scmp_compare``).
OPERATORS: dict[str, int] = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

_SECCOMP_MODE_FILTER = 2

# enum scmp_filter_attr
_ATTR_CTL_NNP = 3
_ATTR_CTL_OPTIMIZE = 8

#: runc turns the binary-tree optimisation on past this many rules
#: (libseccomp up to 2.5.4 misbehaves with it on and no rules).
_OPTIMIZE_FROM = 32


class _ArgCmp(ctypes.Structure):
    """``struct scmp_arg_cmp``."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _Version(ctypes.Structure):
    """``struct scmp_version``."""

    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


_lib: Any = None
_load_error = ""


def _load() -> Any:
    """The library, bound once; None (with the reason kept) where it cannot be loaded."""
    global _lib, _load_error
    if _lib is not None or _load_error:
        return _lib
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError as exc:
        _load_error = f"libseccomp.so.2 cannot be loaded ({exc}): install Debian's libseccomp2"
        return None
    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    lib.seccomp_version.argtypes = []
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.restype = None
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_add.restype = ctypes.c_int
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_attr_set.restype = ctypes.c_int
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_export_bpf.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    _lib = lib
    return lib


def available() -> str | None:
    """None when libseccomp can be used, else why not."""
    return None if _load() is not None else _load_error


def unsupported() -> str | None:
    """None when filters can be compiled and loaded here, else why not.

    The kernel must have filter mode: ``PR_SET_SECCOMP`` with a NULL
    program fails with EFAULT there and EINVAL without it (how moby probes
    it); and libseccomp must load.
    """
    from engine.sys import libc

    try:
        libc.prctl(libc.PR_GET_SECCOMP)
    except OSError:
        return "the kernel has no seccomp (CONFIG_SECCOMP)"
    try:
        libc.prctl(libc.PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, 0)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return "the kernel has no seccomp filters (CONFIG_SECCOMP_FILTER)"
    else:  # cannot happen: a NULL program is never loaded
        return "the kernel accepted an empty seccomp filter"
    return available()


def version() -> tuple[int, int, int] | None:
    """libseccomp's version, or None without it."""
    lib = _load()
    if lib is None:
        return None
    v = lib.seccomp_version().contents
    return v.major, v.minor, v.micro


def resolve_syscall(name: str) -> int | None:
    """The system call's number on this machine (libseccomp's pseudo number for
    one that only exists on another architecture of the filter), None if unknown."""
    lib = _require()
    number = lib.seccomp_syscall_resolve_name(name.encode())
    return None if number == -1 else number  # __NR_SCMP_ERROR


def _require() -> Any:
    lib = _load()
    if lib is None:
        raise NotSupported(f"seccomp: {_load_error}")
    return lib


def _check(result: int, what: str) -> int:
    if result < 0:
        raise OSError(-result, f"seccomp: {what} failed: {os.strerror(-result)}")
    return result


def action_value(name: str, code: int | None) -> int:
    """A profile action (and its errno/trace code) -> libseccomp's value; ERRNO
    and TRACE without a code return EPERM, as runc does."""
    try:
        value = ACTIONS[name]
    except KeyError:
        raise InvalidParameter(f"seccomp: unknown action {name!r}") from None
    if name in _WITH_CODE:
        value |= (1 if code is None else code) & 0xFFFF
    return value


def arch_token(name: str) -> int:
    """``SCMP_ARCH_X86_64`` -> libseccomp's token (0 when it does not know the architecture)."""
    lib = _require()
    short = name[len("SCMP_ARCH_") :] if name.startswith("SCMP_ARCH_") else name
    return lib.seccomp_arch_resolve_name(short.lower().encode())


def _conditions(args: list[dict[str, Any]]) -> list[list[_ArgCmp]]:
    """One rule's conditions; several on the same argument become one rule each (runc's rule)."""
    conds = [_ArgCmp(arg["index"], OPERATORS[arg["op"]], arg.get("value", 0), arg.get("valueTwo", 0)) for arg in args]
    indexes = [arg["index"] for arg in args]
    if len(set(indexes)) != len(indexes):
        return [[cond] for cond in conds]
    return [conds]


def compile_filter(resolved: dict[str, Any]) -> bytes:
    """The BPF program (``struct sock_filter`` array) for a resolved profile.

    :raises NotSupported: libseccomp is not installed.
    :raises InvalidParameter: an action, architecture or rule libseccomp refuses.
    """
    lib = _require()
    default = action_value(resolved["defaultAction"], resolved.get("defaultErrnoRet"))
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise InvalidParameter(f"seccomp: invalid default action {resolved['defaultAction']!r}")
    try:
        # The engine sets no_new_privs itself, only when asked (--security-opt
        # no-new-privileges); the exported program does not depend on this,
        # but a filter loaded by libseccomp itself would set it.
        _check(lib.seccomp_attr_set(ctx, _ATTR_CTL_NNP, 0), "clearing no_new_privs")
        for arch in resolved.get("architectures") or []:
            token = arch_token(arch)
            if not token:
                raise InvalidParameter(f"seccomp: architecture {arch} is unknown to libseccomp {version()}")
            result = lib.seccomp_arch_add(ctx, token)
            if result < 0 and -result != 17:  # EEXIST: the native one is there already
                _check(result, f"adding architecture {arch}")
        rules = resolved.get("syscalls") or []
        if len(rules) > _OPTIMIZE_FROM:
            lib.seccomp_attr_set(ctx, _ATTR_CTL_OPTIMIZE, 2)  # older libseccomp: a linear filter, as good
        for rule in rules:
            _add_rule(lib, ctx, rule, default)
        with os.fdopen(os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC), "w+b") as fh:
            _check(lib.seccomp_export_bpf(ctx, fh.fileno()), "exporting the filter")
            fh.seek(0)
            return fh.read()
    finally:
        lib.seccomp_release(ctx)


def _add_rule(lib: Any, ctx: Any, rule: dict[str, Any], default: int) -> None:
    action = action_value(rule["action"], rule.get("errnoRet"))
    if action == default:
        return  # libseccomp refuses a rule that changes nothing
    for name in rule["names"]:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number == -1:
            continue  # not a system call of this libseccomp's architectures (runc skips it too)
        for conds in _conditions(rule.get("args") or []) if rule.get("args") else [[]]:
            array = (_ArgCmp * len(conds))(*conds) if conds else None
            result = lib.seccomp_rule_add_array(ctx, action, number, len(conds), array)
            if result < 0:
                raise InvalidParameter(
                    f"seccomp: adding the rule for {name} failed: {os.strerror(-result)} "
                    f"(action {rule['action']}, arguments {rule.get('args') or []})"
                )
