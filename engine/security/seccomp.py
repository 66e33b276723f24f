"""Docker's seccomp profiles: the JSON of ``--security-opt seccomp=<file>``, checked and resolved.

The format is moby's (``github.com/moby/profiles/seccomp``), a superset of
the runtime-spec's ``LinuxSeccomp``::

    {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
     "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
     "syscalls": [{"names": ["accept", ...], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}],
                   "includes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["amd64"], "minKernel": "4.8"},
                   "excludes": {...}}]}

:func:`load_profile` checks a profile completely (every rule, whatever its
conditions) so that a bad one is refused at create with a clear message
rather than at start; field names match case-insensitively, and unknown
ones are ignored, as Go's JSON decoder does for dockerd. :func:`resolve`
turns it into the runtime-spec shape for one container, by moby's rules
(``setupSeccomp``): ``archMap`` keeps the native architecture and its
sub-architectures; a rule is dropped when an ``excludes`` condition holds
(the architecture is listed, a listed capability is in the container's
bounding set, the kernel is at least ``minKernel``) or an ``includes`` one
does not.

``seccomp_default.json`` beside this module is Docker's default profile
(moby/profiles, 2025): every system call a program needs is allowed, the
rest fails with EPERM; namespaces, mounts, keyrings, ``perf_event_open``,
``bpf``, module loading and the like need the matching capability.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from engine.errors import InvalidParameter

__all__ = [
    "ACTIONS",
    "ARCHITECTURES",
    "DEFAULT_PROFILE_PATH",
    "FLAGS",
    "OPERATORS",
    "default_profile",
    "kernel_version",
    "load_profile",
    "native_arch",
    "resolve",
]

DEFAULT_PROFILE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seccomp_default.json")

ACTIONS = frozenset(
    {
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
    }
)
OPERATORS = frozenset(
    {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"}
)
ARCHITECTURES = frozenset(
    "SCMP_ARCH_" + a
    for a in [
        "X86",
        "X86_64",
        "X32",
        "ARM",
        "AARCH64",
        "MIPS",
        "MIPS64",
        "MIPS64N32",
        "MIPSEL",
        "MIPSEL64",
        "MIPSEL64N32",
        "PPC",
        "PPC64",
        "PPC64LE",
        "S390",
        "S390X",
        "PARISC",
        "PARISC64",
        "RISCV64",
        "LOONGARCH64",
        "M68K",
        "SH",
        "SHEB",
    ]
)
#: seccomp(2) flags a profile may ask for, by name -> value (SECCOMP_FILTER_FLAG_*).
FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}

#: ``uname -m`` -> the architecture names of ``includes``/``excludes``
#: (Go's GOARCH as moby spells it) and the libseccomp architecture of the machine.
_MACHINES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "i386": ("x86", "SCMP_ARCH_X86"),
    "i686": ("x86", "SCMP_ARCH_X86"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "arm64": ("arm64", "SCMP_ARCH_AARCH64"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "armv8l": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "ppc64": ("ppc64", "SCMP_ARCH_PPC64"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
    "loongarch64": ("loongarch64", "SCMP_ARCH_LOONGARCH64"),
    "mips64": ("mips64", "SCMP_ARCH_MIPS64"),
}

_UINT64 = (1 << 64) - 1


class _Bad(Exception):
    """One problem in a profile, with where it is."""


def native_arch(machine: str | None = None) -> tuple[str, str]:
    """(the name ``includes``/``excludes`` use, the SCMP_ARCH name) for ``machine`` (default: this one)."""
    machine = machine or os.uname().machine
    return _MACHINES.get(machine, (machine, "SCMP_ARCH_" + machine.upper()))


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """``6.1.0-18-amd64`` -> (6, 1): minor revisions and suffixes do not count (moby's rule)."""
    release = release or os.uname().release
    parts = release.split(".")
    try:
        major = int(parts[0])
        minor = int("".join(ch for ch in (parts[1] if len(parts) > 1 else "0").split("-")[0] if ch.isdigit()) or 0)
    except ValueError:
        return (0, 0)
    return major, minor


# --------------------------------------------------------------------------
# checking


def _fields(obj: Any, where: str, known: tuple[str, ...]) -> dict[str, Any]:
    """The known fields of a JSON object by their canonical names (matched case-insensitively)."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise _Bad(f"{where}: want an object, got {_kind(obj)}")
    lower = {k.lower(): k for k in known}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        canonical = lower.get(key.lower())
        if canonical is not None:
            out[canonical] = value
    return out


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {json.dumps(value)}"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _string(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Bad(f"{where}: want a string, got {_kind(value)}")
    return value


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Bad(f"{where}: want a list of strings, got {_kind(value)}")
    return [_string(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _uint(value: Any, where: str, top: int = _UINT64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise _Bad(f"{where}: want a whole number from 0 to {top}, got {_kind(value)}")
    return value


def _action(value: Any, where: str) -> str:
    name = _string(value, where)
    if name not in ACTIONS:
        usable = sorted(ACTIONS - {"SCMP_ACT_NOTIFY"})
        raise _Bad(f"{where}: unknown action {json.dumps(name)} (one of {', '.join(usable)})")
    if name == "SCMP_ACT_NOTIFY":
        raise _Bad(f"{where}: SCMP_ACT_NOTIFY needs a seccomp agent, which this engine does not support")
    return name


def _arch(value: Any, where: str) -> str:
    name = _string(value, where)
    if name not in ARCHITECTURES:
        raise _Bad(f"{where}: unknown architecture {json.dumps(name)}")
    return name


def _min_kernel(value: Any, where: str) -> tuple[int, int] | None:
    text = _string(value, where)
    if not text:
        return None
    parts = text.split(".")
    if len(parts) != 2 or not all(p.isdigit() and int(p) < 256 for p in parts) or parts == ["0", "0"]:
        raise _Bad(f'{where}: invalid kernel version {json.dumps(text)}, expected "<kernel>.<major>"')
    return int(parts[0]), int(parts[1])


def _filter(value: Any, where: str) -> dict[str, Any]:
    f = _fields(value, where, ("caps", "arches", "minKernel"))
    return {
        "caps": _strings(f.get("caps"), f"{where}.caps"),
        "arches": _strings(f.get("arches"), f"{where}.arches"),
        "minKernel": _min_kernel(f.get("minKernel"), f"{where}.minKernel"),
    }


def _arg(value: Any, where: str) -> dict[str, Any]:
    f = _fields(value, where, ("index", "value", "valueTwo", "op"))
    op = _string(f.get("op"), f"{where}.op")
    if op not in OPERATORS:
        raise _Bad(f"{where}.op: unknown operator {json.dumps(op)} (one of {', '.join(sorted(OPERATORS))})")
    return {
        "index": _uint(f.get("index", 0), f"{where}.index", 5),
        "value": _uint(f.get("value", 0), f"{where}.value"),
        "valueTwo": _uint(f.get("valueTwo", 0), f"{where}.valueTwo"),
        "op": op,
    }


def _rule(value: Any, where: str) -> dict[str, Any]:
    f = _fields(value, where, ("name", "names", "action", "errnoRet", "args", "comment", "includes", "excludes"))
    name = _string(f.get("name"), f"{where}.name")
    names = _strings(f.get("names"), f"{where}.names")
    if name and names:
        raise _Bad(
            f"{where}: both 'name' and 'names' are specified in the seccomp profile, use either 'name' or 'names'"
        )
    names = [name] if name else names
    if any(not n for n in names):
        raise _Bad(f"{where}.names: empty string is not a valid syscall")
    args = f.get("args")
    if args is not None and not isinstance(args, list):
        raise _Bad(f"{where}.args: want a list, got {_kind(args)}")
    errno_ret = f.get("errnoRet")
    return {
        "names": names,
        "action": _action(f.get("action"), f"{where}.action"),
        "errnoRet": None if errno_ret is None else _uint(errno_ret, f"{where}.errnoRet", 0xFFFF),
        "args": [_arg(a, f"{where}.args[{i}]") for i, a in enumerate(args or [])],
        "includes": _filter(f.get("includes"), f"{where}.includes"),
        "excludes": _filter(f.get("excludes"), f"{where}.excludes"),
    }


def _check_profile(data: Any) -> dict[str, Any] | None:
    f = _fields(
        data,
        "profile",
        ("defaultAction", "defaultErrnoRet", "architectures", "archMap", "syscalls", "flags", "listenerPath"),
    )
    if _string(f.get("listenerPath"), "listenerPath"):
        raise _Bad("listenerPath: a seccomp agent is not supported by this engine")
    syscalls = f.get("syscalls")
    if syscalls is not None and not isinstance(syscalls, list):
        raise _Bad(f"syscalls: want a list, got {_kind(syscalls)}")
    default = _string(f.get("defaultAction"), "defaultAction")
    if not default and not syscalls:
        return None  # moby: no default action and no rules is no seccomp at all
    if not default:
        raise _Bad("defaultAction: missing (SCMP_ACT_ERRNO, SCMP_ACT_ALLOW, ...)")
    architectures = [
        _arch(a, f"architectures[{i}]") for i, a in enumerate(_strings(f.get("architectures"), "architectures"))
    ]
    arch_map = f.get("archMap")
    if arch_map is not None and not isinstance(arch_map, list):
        raise _Bad(f"archMap: want a list, got {_kind(arch_map)}")
    archs = []
    for i, entry in enumerate(arch_map or []):
        e = _fields(entry, f"archMap[{i}]", ("architecture", "subArchitectures"))
        archs.append(
            {
                "architecture": _arch(e.get("architecture"), f"archMap[{i}].architecture"),
                "subArchitectures": [
                    _arch(a, f"archMap[{i}].subArchitectures[{j}]")
                    for j, a in enumerate(_strings(e.get("subArchitectures"), f"archMap[{i}].subArchitectures"))
                ],
            }
        )
    if architectures and archs:
        raise _Bad(
            "both 'architectures' and 'archMap' are specified in the seccomp profile, "
            "use either 'architectures' or 'archMap'"
        )
    flags = _strings(f.get("flags"), "flags")
    for i, flag in enumerate(flags):
        if flag not in FLAGS:
            raise _Bad(f"flags[{i}]: seccomp flag {flag} is not known (one of {', '.join(FLAGS)})")
    default_errno = f.get("defaultErrnoRet")
    return {
        "defaultAction": _action(default, "defaultAction"),
        "defaultErrnoRet": None if default_errno is None else _uint(default_errno, "defaultErrnoRet", 0xFFFF),
        "architectures": architectures,
        "archMap": archs,
        "flags": flags,
        "syscalls": [_rule(r, f"syscalls[{i}]") for i, r in enumerate(syscalls or [])],
    }


def load_profile(text: str | bytes) -> dict[str, Any] | None:
    """Parse and check a profile; None when it asks for no seccomp at all (no default action, no rules).

    :raises InvalidParameter: ``Decoding seccomp profile failed: <where>: <what>``.
    """
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidParameter(f"Decoding seccomp profile failed: {exc}") from None
    try:
        return _check_profile(data)
    except _Bad as exc:
        raise InvalidParameter(f"Decoding seccomp profile failed: {exc}") from None


@functools.lru_cache(maxsize=1)
def _default_text() -> str:
    with open(DEFAULT_PROFILE_PATH) as fh:
        return fh.read()


def default_profile() -> str:
    """Docker's default profile, as JSON text."""
    return _default_text()


# --------------------------------------------------------------------------
# resolving


def _holds(f: dict[str, Any], arch: str, caps: frozenset[str], kernel: tuple[int, int], *, every: bool) -> bool:
    """Whether the conditions of ``f`` hold: all of them (``includes``) or any (``excludes``)."""
    tests = []
    if f["arches"]:
        tests.append(arch in f["arches"])
    if f["caps"]:
        tests.append(all(c in caps for c in f["caps"]) if every else any(c in caps for c in f["caps"]))
    if f["minKernel"] is not None:
        tests.append(kernel >= f["minKernel"])
    return all(tests) if every else any(tests)


def resolve(
    profile: dict[str, Any] | None,
    caps: list[str],
    machine: str | None = None,
    kernel: tuple[int, int] | None = None,
) -> dict[str, Any] | None:
    """The runtime-spec seccomp configuration of one container (None: unconfined).

    :param profile: from :func:`load_profile`.
    :param caps: the container's bounding set (``CAP_SYS_ADMIN``, ...).
    :param machine: ``uname -m`` (default: this machine's).
    :param kernel: (major, minor) (default: the running kernel's).
    """
    if profile is None:
        return None
    arch, scmp_arch = native_arch(machine)
    kernel = kernel or kernel_version()
    cap_set = frozenset(caps)
    architectures = list(profile["architectures"])
    for entry in profile["archMap"]:
        if entry["architecture"] == scmp_arch:
            architectures += [entry["architecture"], *entry["subArchitectures"]]
            break
    rules = []
    for rule in profile["syscalls"]:
        if _holds(rule["excludes"], arch, cap_set, kernel, every=False):
            continue
        if not _holds(rule["includes"], arch, cap_set, kernel, every=True):
            continue
        rules.append({k: rule[k] for k in ("names", "action", "errnoRet", "args")})
    return {
        "defaultAction": profile["defaultAction"],
        "defaultErrnoRet": profile["defaultErrnoRet"],
        "architectures": architectures,
        "flags": list(profile["flags"]),
        "syscalls": rules,
    }
