"""Checks of values that the API description types only as strings, with dockerd's words.

Each is a function ``check(value, where)`` raising
:class:`~engine.errors.InvalidParameter`. The body fields they apply to are
registered in :data:`engine.api.validation.schema.FIELD_CHECKS`, the query
parameters in :data:`QUERY_CHECKS` (by parameter name, on every route that
has it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from engine.api.validation.schema import FIELD_CHECKS
from engine.errors import InvalidParameter
from engine.utils import cpuset as cpusets

__all__ = ["QUERY_CHECKS", "absolute_path", "cpuset", "platform", "timestamp"]

#: containerd's ``platforms.Parse``: each of ``os[/arch[/variant]]`` matches this.
_PLATFORM_PART = re.compile(r"^[A-Za-z0-9_-]+$")
#: moby's ``timetypes.ParseTimestamps`` input once a date has been converted: seconds[.nanoseconds].
_TIMESTAMP = re.compile(r"^-?\d+(?:\.\d{1,9})?$")


def absolute_path(value: str, where: str) -> None:
    """``WorkingDir``: empty (the image's) or absolute (moby ``verifyContainerSettings``)."""
    if value and not value.startswith("/"):
        raise InvalidParameter(f"the working directory '{value}' is invalid, it needs to be an absolute path")


def cpuset(field: str) -> Callable[[str, str], None]:
    """The check of ``CpusetCpus`` (``field`` ``cpus``) or ``CpusetMems`` (``mems``): moby's message."""

    def check(value: str, where: str) -> None:  # noqa: ARG001
        if not value:
            return
        try:
            cpusets.parse(value)
        except ValueError as exc:
            raise InvalidParameter(f"Invalid value {value} for cpuset {field}: {exc}") from None

    return check


def platform(value: str, where: str) -> None:  # noqa: ARG001
    """A ``platform`` parameter: ``os[/arch[/variant]]`` in containerd's syntax (so no ``..``, no ``/`` at the ends)."""
    if not value:
        return
    parts = value.split("/")
    if len(parts) > 3:
        raise InvalidParameter(f'"{value}": unknown operating system or architecture: invalid argument')
    for part in parts:
        if not _PLATFORM_PART.match(part):
            raise InvalidParameter(
                f'"{part}" is an invalid component of "{value}": platform specifier component must match '
                f'"{_PLATFORM_PART.pattern}": invalid argument'
            )


def timestamp(value: str, where: str) -> None:
    """``since``/``until`` of logs: seconds with an optional fraction, as the clients send them."""
    if value and not _TIMESTAMP.match(value):
        raise InvalidParameter(f"invalid value for {where}: {value!r} is not a timestamp (seconds[.nanoseconds])")


def _integer(value: str, where: str) -> None:
    """A query integer as Go's ``strconv.Atoi`` reads it, within ``int64``."""
    if not re.fullmatch(r"[+-]?\d{1,19}", value) or not -(2**63) <= int(value) < 2**63:
        raise InvalidParameter(f"invalid value for {where}: {value!r} is not an integer")


#: Query parameters by name: the check for a value of that parameter, whatever its type in
#: the description says (the logs' ``since``/``until`` are typed integer there, but the CLI
#: sends fractions).
QUERY_CHECKS: dict[str, Callable[[str, str], None]] = {
    "platform": platform,
}
#: Per route: ``(method, template, parameter) -> check``, before :data:`QUERY_CHECKS`.
ROUTE_QUERY_CHECKS: dict[tuple[str, str, str], Callable[[str, str], None]] = {
    ("GET", "/containers/{id}/logs", "since"): timestamp,
    ("GET", "/containers/{id}/logs", "until"): timestamp,
}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
#: Query parameters that carry JSON (the description types them as strings): their schema, in
#: the description's terms, as moby's handlers decode them (``map[string]*string`` for build args).
JSON_QUERY: dict[tuple[str, str, str], dict[str, Any]] = {
    ("POST", "/build", "buildargs"): {
        "type": "object",
        "additionalProperties": {"type": "string", "x-nullable": True},
    },
    ("POST", "/build", "labels"): _STRINGS,
    ("POST", "/build", "cachefrom"): {"type": "array", "items": {"type": "string"}},
    ("POST", "/build", "ulimits"): {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"Name": {"type": "string"}, "Soft": {"type": "integer"}, "Hard": {"type": "integer"}},
        },
    },
}
#: How a query parameter of a described type is checked.
TYPE_CHECKS: dict[str, Callable[[str, str], None]] = {"integer": _integer}


def _register() -> None:
    checks: dict[tuple[str, str], Callable[[Any, str], None]] = {
        ("ContainerConfig", "WorkingDir"): absolute_path,
        ("Resources", "CpusetCpus"): cpuset("cpus"),
        ("Resources", "CpusetMems"): cpuset("mems"),
    }
    FIELD_CHECKS.update(checks)


_register()
