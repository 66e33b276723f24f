"""Docker's seccomp profiles (JSON) translated into LXC's own policy format (version 2).

LXC 5 reads ``lxc.seccomp.profile`` as a text file and compiles it with the
libseccomp it links (seccomp.c, ``parse_config_v2``)::

    2
    allowlist errno 1          the style and the default action
    [all]                      the rules below hold for every architecture of the host
    read allow
    clone3 errno 38
    personality allow [0,0,SCMP_CMP_EQ]
    clone allow [0,2114060288,SCMP_CMP_MASKED_EQ,0]

The profile is first resolved against the container's capabilities, the
machine and the kernel (:func:`engine.security.seccomp.resolve`, the same
rules the native driver compiles), so what is left is a default action and
a list of rules. Each rule becomes one line per system call name; LXC skips
names its libseccomp does not know for an architecture, as runc does.

What LXC's format cannot say is refused with the reason rather than
approximated: the actions ``SCMP_ACT_TRACE``, ``SCMP_ACT_LOG`` and
``SCMP_ACT_KILL_PROCESS``, and filter flags (``SECCOMP_FILTER_FLAG_*``).
Architectures are LXC's choice: on x86_64 it always builds the x86_64, x86
and x32 filters, which is what Docker's profiles list there.

For ``SCMP_CMP_MASKED_EQ`` Docker's ``value`` is the mask and ``valueTwo``
the value; LXC's argument is ``[index,value,SCMP_CMP_MASKED_EQ,mask]``.
Several conditions on the same argument are split into one rule each
(libseccomp refuses two comparisons of one argument in a rule; runc splits
them the same way).
"""

from __future__ import annotations

from typing import Any

from engine.errors import InvalidParameter
from engine.security import seccomp as profiles

__all__ = ["policy", "translate"]

#: Docker's actions -> LXC's words (the errno is appended where it takes one).
_ACTIONS = {
    "SCMP_ACT_ALLOW": "allow",
    "SCMP_ACT_ERRNO": "errno",
    "SCMP_ACT_KILL": "kill",
    "SCMP_ACT_KILL_THREAD": "kill",
    "SCMP_ACT_TRAP": "trap",
    "SCMP_ACT_NOTIFY": "notify",
}

_OPERATORS = {
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
}


def _action(name: str, errno_ret: int | None) -> str:
    word = _ACTIONS.get(name)
    if word is None:
        raise InvalidParameter(f"seccomp: the lxc exec driver cannot express the action {name} (LXC's policy format)")
    if word == "errno":
        # runc's rule: ERRNO without a code is EPERM.
        return f"errno {1 if errno_ret is None else int(errno_ret)}"
    return word


def _arguments(args: list[dict[str, Any]]) -> list[list[str]]:
    """One rule's argument conditions in LXC's syntax; a list per rule line."""
    conditions = []
    for arg in args:
        op = arg["op"]
        if op not in _OPERATORS:
            raise InvalidParameter(f"seccomp: unknown comparison {op!r}")
        index, value, two = int(arg["index"]), int(arg.get("value", 0)), int(arg.get("valueTwo", 0))
        if op == "SCMP_CMP_MASKED_EQ":
            conditions.append(f"[{index},{two},{op},{value}]")
        else:
            conditions.append(f"[{index},{value},{op}]")
    indexes = [int(arg["index"]) for arg in args]
    if len(set(indexes)) != len(indexes):
        return [[c] for c in conditions]
    return [conditions]


def translate(resolved: dict[str, Any]) -> str:
    """A resolved profile (:func:`engine.security.seccomp.resolve`) -> LXC's policy text.

    :raises InvalidParameter: the profile uses what LXC's format cannot express.
    """
    if resolved.get("flags"):
        raise InvalidParameter(f"seccomp: the lxc exec driver cannot set filter flags ({', '.join(resolved['flags'])})")
    default = _action(resolved["defaultAction"], resolved.get("defaultErrnoRet"))
    lines = ["2", f"allowlist {default}", "[all]"]
    for rule in resolved.get("syscalls") or []:
        action = _action(rule["action"], rule.get("errnoRet"))
        if action == default:
            continue  # a rule that changes nothing (libseccomp would refuse it)
        variants = _arguments(rule.get("args") or []) if rule.get("args") else [[]]
        for name in rule["names"]:
            if not name or any(c.isspace() for c in name):
                raise InvalidParameter(f"seccomp: invalid system call name {name!r}")
            for conditions in variants:
                lines.append(" ".join([name, action, *conditions]))
    return "\n".join(lines) + "\n"


def policy(profile: str, capabilities: list[str]) -> str | None:
    """``Command.seccomp_profile`` -> LXC's policy text for a container with ``capabilities``; None: unconfined.

    :raises InvalidParameter: the profile is invalid or cannot be expressed.
    """
    if not profile:
        return None
    resolved = profiles.resolve(profiles.load_profile(profile), capabilities)
    if resolved is None:
        return None  # neither a default action nor rules: no seccomp (moby)
    return translate(resolved)
