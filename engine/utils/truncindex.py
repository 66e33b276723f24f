"""TruncIndex: find a full id from any unique prefix of it (seed ch. 11 §6).

``docker run c35 ...`` works because the daemon keeps every image and
container id in a TruncIndex and resolves the short form the user typed to
the one id it starts with. The seed keeps a patricia trie; a sorted list does
the same job here with :mod:`bisect`: all ids starting with a prefix are
adjacent in sorted order, so a lookup is one binary search plus a look at
the neighbour, O(log n).
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterable, Iterator

from engine.errors import Conflict, InvalidParameter, NotFound

LOG = logging.getLogger(__name__)


class AmbiguousPrefix(InvalidParameter):
    """More than one id starts with the prefix the user gave (400)."""

    template = "multiple IDs found with provided prefix: {prefix}"


class TruncIndex:
    """A thread-safe set of ids that answers lookups by unique prefix.

    :param ids: ids to start with; each is checked as by :meth:`add`.
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._ids: list[str] = []
        # The set answers membership in O(1) and guards against duplicates
        # without a search; the list gives the prefix order.
        self._members: set[str] = set()
        for id_ in ids:
            self._check(id_)
            if id_ in self._members:
                raise Conflict(f"id already exists: '{id_}'")
            self._members.add(id_)
        self._ids = sorted(self._members)

    @staticmethod
    def _check(id_: str) -> None:
        if not isinstance(id_, str) or not id_:
            raise InvalidParameter("id can't be empty")
        # A space would make "docker ps" output and CLI arguments ambiguous.
        if any(char.isspace() for char in id_):
            raise InvalidParameter(f"illegal character in id {id_!r}: whitespace")

    def add(self, id_: str) -> None:
        """Add an id.

        :raises InvalidParameter: if the id is empty or contains whitespace.
        :raises Conflict: if the id is already present.
        """
        self._check(id_)
        with self._lock:
            if id_ in self._members:
                raise Conflict(f"id already exists: '{id_}'")
            self._members.add(id_)
            bisect.insort(self._ids, id_)

    def delete(self, id_: str) -> None:
        """Remove an id (the full id, not a prefix).

        :raises NotFound: if the id is not present.
        """
        with self._lock:
            if id_ not in self._members:
                raise NotFound(f"no such id: '{id_}'")
            self._members.remove(id_)
            del self._ids[bisect.bisect_left(self._ids, id_)]

    def get(self, prefix: str) -> str:
        """Return the one id that starts with ``prefix``.

        An id equal to ``prefix`` wins even when longer ids start with it, so
        every id stays reachable (the seed's trie reported those as ambiguous).

        :raises NotFound: ``no such id: <prefix>`` if the prefix is empty or
            no id starts with it.
        :raises AmbiguousPrefix: if several ids start with it.
        """
        if not prefix:
            raise NotFound(f"no such id: {prefix}")
        with self._lock:
            ids = self._ids
            at = bisect.bisect_left(ids, prefix)
            if at == len(ids) or not ids[at].startswith(prefix):
                raise NotFound(f"no such id: {prefix}")
            # Sorted order puts an exact match first among the ids it prefixes.
            if ids[at] != prefix and at + 1 < len(ids) and ids[at + 1].startswith(prefix):
                raise AmbiguousPrefix(prefix=prefix)
            return ids[at]

    def iterate(self) -> Iterator[str]:
        """Return an iterator over a snapshot of the ids, in sorted order.

        The snapshot lets the caller add or delete ids while iterating.
        """
        with self._lock:
            snapshot = list(self._ids)
        return iter(snapshot)

    def __iter__(self) -> Iterator[str]:
        return self.iterate()

    # len() and "in" on a set are single atomic operations under the GIL, so
    # they need no lock and never see a half-done add or delete.
    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._members

    def __repr__(self) -> str:
        return f"<TruncIndex of {len(self)} ids>"
