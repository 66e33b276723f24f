"""A job's typed environment (seed ch. 3 §5.5.3, ``engine/env.go``).

Values are stored as strings, as in the seed, and typed accessors convert on
the way in and out: strings, booleans (moby's rules), integers, JSON and lists.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

_FALSE = frozenset({"", "0", "no", "false", "none"})


def parse_bool(value: object) -> bool:
    """Docker's boolean rule (``httputils.BoolValue``, seed ``Env.GetBool``).

    ``""``, ``0``, ``no``, ``false`` and ``none`` (any case) are false; every
    other value is true.
    """
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    return str(value).strip().lower() not in _FALSE


class Env:
    """An ordered string map with typed getters and setters."""

    __slots__ = ("_data",)

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, str] = {}
        if initial:
            for key, value in initial.items():
                self.set_auto(key, value)

    # plain strings
    def get(self, key: str, default: str = "") -> str:
        return self._data.get(key, default)

    def set(self, key: str, value: str) -> None:
        self._data[key] = str(value)

    def exists(self, key: str) -> bool:
        return key in self._data

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    # booleans
    def get_bool(self, key: str, default: bool = False) -> bool:
        if key not in self._data:
            return default
        return parse_bool(self._data[key])

    def set_bool(self, key: str, value: bool) -> None:
        self._data[key] = "1" if value else "0"

    # integers
    def get_int(self, key: str, default: int = 0) -> int:
        value = self._data.get(key, "")
        if value == "":
            return default
        try:
            return int(value)
        except ValueError:
            from engine.errors import InvalidParameter

            raise InvalidParameter(f"invalid integer for {key}: {value!r}") from None

    def set_int(self, key: str, value: int) -> None:
        self._data[key] = str(int(value))

    # JSON
    def get_json(self, key: str, default: Any = None) -> Any:
        value = self._data.get(key, "")
        if value == "":
            return default
        try:
            return json.loads(value)
        except ValueError:
            from engine.errors import InvalidParameter

            raise InvalidParameter(f"invalid JSON for {key}") from None

    def set_json(self, key: str, value: Any) -> None:
        self._data[key] = json.dumps(value, separators=(",", ":"))

    # lists
    def get_list(self, key: str) -> list[str]:
        """A list stored as JSON; a plain value is a one-element list."""
        value = self._data.get(key, "")
        if value == "":
            return []
        try:
            decoded = json.loads(value)
        except ValueError:
            return [value]
        if isinstance(decoded, list):
            return [str(v) for v in decoded]
        return [value]

    def set_list(self, key: str, value: list[str]) -> None:
        self.set_json(key, list(value))

    def set_auto(self, key: str, value: Any) -> None:
        """Store any value with the setter its type calls for."""
        if isinstance(value, bool):
            self.set_bool(key, value)
        elif isinstance(value, int):
            self.set_int(key, value)
        elif isinstance(value, str):
            self.set(key, value)
        elif value is None:
            self._data[key] = ""
        else:
            self.set_json(key, value)

    # mapping helpers
    def keys(self) -> Iterator[str]:
        return iter(self._data)

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(self._data.items())

    def to_dict(self) -> dict[str, str]:
        return dict(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Env({self._data!r})"
