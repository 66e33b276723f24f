"""User and group ID maps of a user namespace, and the subordinate ID files they come from.

A map is a list of ranges ``(container_id, host_id, size)``, as
``/proc/PID/uid_map`` has them (user_namespaces(7)). ``--userns-remap``
(:mod:`engine.daemon.userns`) builds one from the ranges ``/etc/subuid`` and
``/etc/subgid`` give a user (subuid(5): ``name-or-uid:start:count`` per line),
laid end to end from container ID 0 as dockerd lays them: the first range's
start is the host ID of the container's root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["OVERFLOW_ID", "IDMap", "Range", "read_subids"]

Range = tuple[int, int, int]
#: What an unmapped ID looks like inside a user namespace (``/proc/sys/kernel/overflowuid``).
OVERFLOW_ID = 65534


@dataclass(frozen=True)
class IDMap:
    """The uid and gid maps of the remapped containers.

    :param uids: ``(container, host, size)`` ranges for user IDs.
    :param gids: the same for group IDs.
    """

    uids: tuple[Range, ...]
    gids: tuple[Range, ...]

    @classmethod
    def from_subids(cls, uid_ranges: list[tuple[int, int]], gid_ranges: list[tuple[int, int]]) -> IDMap:
        """Lay ``(host_start, count)`` ranges end to end from container ID 0 (dockerd's order)."""
        return cls(_laid(uid_ranges), _laid(gid_ranges))

    @property
    def root_uid(self) -> int:
        """The host user ID of the container's root."""
        return self.to_host_uid(0)

    @property
    def root_gid(self) -> int:
        """The host group ID of the container's root."""
        return self.to_host_gid(0)

    def to_host_uid(self, uid: int) -> int:
        return _map(self.uids, uid, forward=True, what="uid")

    def to_host_gid(self, gid: int) -> int:
        return _map(self.gids, gid, forward=True, what="gid")

    def to_container_uid(self, uid: int, unmapped: int | None = None) -> int:
        """``uid`` of the host as the container sees it; ``unmapped`` (or ValueError) when outside the map."""
        try:
            return _map(self.uids, uid, forward=False, what="uid")
        except ValueError:
            if unmapped is None:
                raise
            return unmapped

    def to_container_gid(self, gid: int, unmapped: int | None = None) -> int:
        try:
            return _map(self.gids, gid, forward=False, what="gid")
        except ValueError:
            if unmapped is None:
                raise
            return unmapped

    @staticmethod
    def proc_text(ranges: tuple[Range, ...]) -> str:
        """The ranges as ``/proc/PID/uid_map`` takes them (one write, one line each)."""
        return "".join(f"{c} {h} {n}\n" for c, h, n in ranges)

    def to_json(self) -> dict[str, list[list[int]]]:
        return {"uids": [list(r) for r in self.uids], "gids": [list(r) for r in self.gids]}

    @classmethod
    def from_json(cls, doc: dict[str, list[list[int]]]) -> IDMap:
        return cls(tuple(tuple(r) for r in doc["uids"]), tuple(tuple(r) for r in doc["gids"]))  # type: ignore[misc]


def _laid(ranges: list[tuple[int, int]]) -> tuple[Range, ...]:
    out: list[Range] = []
    next_id = 0
    for start, count in ranges:
        out.append((next_id, start, count))
        next_id += count
    return tuple(out)


def _map(ranges: tuple[Range, ...], value: int, forward: bool, what: str) -> int:
    for container, host, size in ranges:
        low = container if forward else host
        if low <= value < low + size:
            return value - low + (host if forward else container)
    side = "container" if forward else "host"
    raise ValueError(f"{what} {value} is not mapped ({side} side of the user namespace)")


def read_subids(path: str, names: tuple[str, ...]) -> list[tuple[int, int]]:
    """The ``(start, count)`` ranges that ``path`` (``/etc/subuid``, ``/etc/subgid``) gives any of ``names``.

    ``names`` are a user's name and numeric ID (subuid(5) allows either). A
    missing file gives no ranges; malformed lines are skipped, as shadow's
    tools skip them.
    """
    ranges = []
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in names:
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start >= 0 and count > 0:
            ranges.append((start, count))
    return ranges


def etc_path(etc: str, name: str) -> str:
    """``<etc>/<name>`` (``etc`` is ``/etc`` on a host; tests and images pass another)."""
    return os.path.join(etc, name)
