"""Linux capabilities for containers: names, Docker's default set and its cap-add/cap-drop rules.

Pure functions over names and 64-bit masks (bit ``n`` is capability ``n`` of
capabilities(7)); the one impure helper reads this process's bounding set,
which caps what a container can be given (moby takes "all capabilities" from
the daemon's own bounding set too, so a daemon without CAP_SYS_RESOURCE runs
privileged containers without it).
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.errors import InvalidParameter

__all__ = [
    "CAPABILITIES",
    "DEFAULT_CAPABILITIES",
    "bounding_set",
    "from_mask",
    "last_cap",
    "normalize",
    "to_mask",
    "tweak",
]

#: Every capability name, indexed by its number (<linux/capability.h>, Linux 5.9+).
CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
_NUMBERS = {name: number for number, name in enumerate(CAPABILITIES)}

#: Docker's default set (moby ``oci/caps/defaults.go``): CapEff ``00000000a80425fb`` for root.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

ALL = "ALL"


def last_cap(path: str = "/proc/sys/kernel/cap_last_cap") -> int:
    """The highest capability number the running kernel knows."""
    try:
        with open(path) as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return len(CAPABILITIES) - 1


def bounding_set(status: str = "/proc/self/status") -> int:
    """This process's bounding set (``CapBnd``) as a mask."""
    with open(status) as fh:
        for line in fh:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return (1 << (last_cap() + 1)) - 1


def normalize(names: Iterable[str]) -> list[str]:
    """Upper-case the names and add ``CAP_`` where missing; ``ALL`` stays ``ALL``; duplicates go.

    :raises InvalidParameter: ``unknown capability: "CAP_FOO"`` (moby's message).
    """
    out: list[str] = []
    for raw in names:
        name = raw.strip().upper()
        if name == ALL:
            normalized = ALL
        else:
            normalized = name if name.startswith("CAP_") else "CAP_" + name
            if normalized not in _NUMBERS:
                raise InvalidParameter(f'unknown capability: "{normalized}"')
        if normalized not in out:
            out.append(normalized)
    return out


def tweak(
    basics: Iterable[str], adds: Iterable[str], drops: Iterable[str], privileged: bool, available: Iterable[str]
) -> list[str]:
    """The capabilities a container gets, by moby's ``TweakCapabilities`` rules.

    * privileged: every available capability;
    * ``--cap-add ALL``: every available capability except the dropped ones;
    * ``--cap-drop ALL``: only the added ones;
    * otherwise the basics minus the dropped ones plus the added ones.

    :param available: "all capabilities" here (the kernel's, within the bounding set).
    """
    available = list(available)
    if privileged:
        return available
    add, drop = normalize(adds), normalize(drops)
    if not add and not drop:
        return list(basics)
    if ALL in add:
        return [c for c in available if c not in drop]
    if ALL in drop:
        return [c for c in add if c != ALL]
    caps = [c for c in basics if c not in drop]
    caps += [c for c in add if c not in caps]
    return caps


def to_mask(names: Iterable[str]) -> int:
    """Names -> the mask with their bits set (``ALL`` is not a name here)."""
    mask = 0
    for name in names:
        mask |= 1 << _NUMBERS[name]
    return mask


def from_mask(mask: int) -> list[str]:
    """A mask -> the names of its bits, in number order."""
    return [name for number, name in enumerate(CAPABILITIES) if mask >> number & 1]


def available(bounding: int | None = None, kernel_last: int | None = None) -> list[str]:
    """ "All capabilities" for a container: the kernel's, within this process's bounding set."""
    bounding = bounding_set() if bounding is None else bounding
    top = last_cap() if kernel_last is None else kernel_last
    return [name for number, name in enumerate(CAPABILITIES) if number <= top and bounding >> number & 1]
