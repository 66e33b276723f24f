"""CPU and memory-node lists in the kernel's syntax (``0-3,8``): ``cpuset.cpus``, ``--cpuset-cpus``."""

from __future__ import annotations

import re

__all__ = ["MAX_ID", "is_subset", "online", "parse"]

#: The highest CPU or node number a list may name (moby's bound; the kernel's ``NR_CPUS`` is 8192 at most).
MAX_ID = 8192
_PART = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse(value: str) -> list[tuple[int, int]]:
    """``0-3,8`` -> ``[(0, 3), (8, 8)]`` (moby ``parsers.ParseUintList``), without expanding the ranges.

    :raises ValueError: a malformed list, a reversed range, a number over :data:`MAX_ID`.
    """
    ranges = []
    for part in value.split(","):
        m = _PART.match(part)
        if m is None:
            raise ValueError(f"invalid format: {value}")
        low = int(m.group(1))
        high = int(m.group(2)) if m.group(2) is not None else low
        if high < low:
            raise ValueError(f"invalid range: {part}")
        if high > MAX_ID:
            raise ValueError(f"value of out range, maximum is {MAX_ID}")
        ranges.append((low, high))
    return ranges


def is_subset(requested: str, available: str) -> bool:
    """Whether every CPU (node) of ``requested`` is in ``available``; both in the list syntax.

    :raises ValueError: ``requested`` is malformed.
    """
    have = parse(available) if available.strip() else []
    return all(any(lo <= low and high <= hi for lo, hi in have) for low, high in _merged(parse(requested)))


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if out and low <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


def online(kind: str = "cpu") -> str:
    """The online CPUs (``kind`` ``cpu``) or memory nodes (``node``) of this host, as the kernel lists them.

    A kernel without NUMA has no ``/sys/devices/system/node``: node 0 is then the only one.
    """
    try:
        with open(f"/sys/devices/system/{kind}/online", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return "0"
