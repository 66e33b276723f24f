"""Values checked against moby's API description, with the rules of Go's JSON decoder.

dockerd decodes each request body into Go structs; what the decoder refuses
is a 400 there, and what it accepts the handlers can rely on. This module
gives the same guarantee from the Swagger 2.0 schemas of
``swagger-v1.45.json`` (moby's own description of those structs):

* a JSON kind the field cannot hold is refused (a string for
  ``HostConfig.Memory``, a list for ``Labels``, a number in ``Cmd``, an
  object where a string belongs);
* integers are integers (``1.5`` and ``1e3`` are not, as in Go) within their
  Go type's range (``int64`` unless the schema's ``format`` says
  ``int32``/``uint16``/...), and within the schema's ``minimum``/``maximum``;
* strings of an ``enum`` are one of its values or empty (Go's zero value:
  "not set");
* ``null`` is accepted for an object's field (the Go zero value, as the
  decoder does) but not as an element of a list or a value of a map, where
  the handlers would meet ``None`` among strings;
* unknown fields are allowed (the decoder ignores them).

What the schemas do not say, and dockerd checks after decoding (an absolute
``WorkingDir``, the syntax of a cpuset, a platform), is added per field by
:mod:`engine.api.validation.formats`, through :data:`FIELD_CHECKS` here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from engine.errors import InvalidParameter

__all__ = ["FIELD_CHECKS", "Swagger", "check_value", "describe", "load"]

SWAGGER_FILE = os.path.join(os.path.dirname(__file__), "swagger-v1.45.json")

#: The range of each integer ``format`` (Go's types); no format is Go's ``int`` (64 bits here).
INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}

#: Where the description is narrower than dockerd, which these clients rely on:
#: ``(definition, field) -> schema keys to replace``. ``MemorySwappiness: -1``
#: is "unset" in dockerd and older CLIs send it; ``LogConfig.Type`` is any
#: logging driver the daemon has (``local`` is not in the enum), checked by
#: the daemon with its own words.
OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {
    ("Resources", "MemorySwappiness"): {"minimum": -1},
    ("HostConfig.LogConfig", "Type"): {"enum": None},
}

#: Checks beyond the schema: ``(definition, field) -> check(value, where)``,
#: filled by :mod:`engine.api.validation.formats`.
FIELD_CHECKS: dict[tuple[str, str], Callable[[Any, str], None]] = {}

_KIND_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}
_WANTED = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "boolean": "a boolean",
    "integer": "an integer",
    "number": "a number",
}


def describe(value: Any) -> str:
    """The JSON kind of ``value`` as an error message says it."""
    return _KIND_NAMES.get(type(value), type(value).__name__)


def _fail(where: str, message: str) -> InvalidParameter:
    return InvalidParameter(f"invalid {where}: {message}" if where else f"invalid request body: {message}")


class Swagger:
    """moby's API description: its operations and its definitions.

    :param doc: the Swagger 2.0 document.
    """

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        self.definitions: Mapping[str, Any] = doc.get("definitions", {})

    def operation(self, method: str, template: str) -> dict[str, Any] | None:
        """The operation object for ``method`` on the path ``template`` (``/containers/{id}/stop``)."""
        item = self.doc.get("paths", {}).get(template)
        if not item:
            return None
        return item.get(method.lower())

    def resolve(self, schema: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
        """``schema`` with its ``$ref`` followed; and the definition's name when there was one."""
        name = None
        while "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = self.definitions[name]
        return schema, name

    def check(self, value: Any, schema: Mapping[str, Any], where: str = "", owner: str = "") -> None:
        """Refuse ``value`` unless Go's decoder would take it into ``schema``'s type.

        :param where: the value's place in the request (``HostConfig.Memory``), for messages.
        :param owner: the definition (or ``definition.field`` for an inline
            object) whose field ``value`` is; keys :data:`OVERRIDES` and :data:`FIELD_CHECKS`.
        :raises InvalidParameter: with ``where`` and what was wrong.
        """
        schema, name = self.resolve(schema)
        if name is not None:
            owner = name
        if value is None:
            return
        for part in schema.get("allOf", ()):
            self.check(value, part, where, owner)
        kind = schema.get("type")
        if kind is None and "properties" in schema:
            kind = "object"
        if kind == "object":
            self._check_object(value, schema, where, owner)
        elif kind == "array":
            self._check_array(value, schema, where, owner)
        elif kind == "string":
            self._check_string(value, schema, where)
        elif kind == "integer":
            self._check_integer(value, schema, where)
        elif kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _fail(where, f"want a number, got {describe(value)}")
        elif kind == "boolean":
            if not isinstance(value, bool):
                raise _fail(where, f"want a boolean, got {describe(value)}")

    def _field_schema(self, owner: str, field: str, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        override = OVERRIDES.get((owner, field))
        if not override:
            return schema
        merged = dict(self.resolve(schema)[0])
        for key, replacement in override.items():
            if replacement is None:
                merged.pop(key, None)
            else:
                merged[key] = replacement
        return merged

    def _check_object(self, value: Any, schema: Mapping[str, Any], where: str, owner: str) -> None:
        if not isinstance(value, dict):
            raise _fail(where, f"want an object, got {describe(value)}")
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            field_where = f"{where}.{key}" if where else key
            sub = properties.get(key)
            if sub is not None:
                inline = "properties" in sub and "$ref" not in sub
                self.check(
                    item, self._field_schema(owner, key, sub), field_where, f"{owner}.{key}" if inline else owner
                )
                check = FIELD_CHECKS.get((owner, key))
                if check is not None and item is not None:
                    check(item, field_where)
            elif isinstance(extra, dict):
                entry_where = f"{where}[{json.dumps(key)}]" if where else json.dumps(key)
                if item is None and not self.resolve(extra)[0].get("x-nullable"):
                    raise _fail(entry_where, "want a value, got null")
                self.check(item, extra, entry_where, owner)

    def _check_array(self, value: Any, schema: Mapping[str, Any], where: str, owner: str) -> None:
        if not isinstance(value, list):
            raise _fail(where, f"want an array, got {describe(value)}")
        low, high = schema.get("minItems"), schema.get("maxItems")
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            wanted = f"{low}" if low == high else f"{low or 0} to {high if high is not None else 'any'}"
            raise _fail(where, f"want {wanted} elements, got {len(value)}")
        items = schema.get("items") or {}
        nullable = self.resolve(items)[0].get("x-nullable")
        for index, item in enumerate(value):
            if item is None and not nullable:
                raise _fail(f"{where}[{index}]", "want a value, got null")
            self.check(item, items, f"{where}[{index}]", owner)

    @staticmethod
    def _check_string(value: Any, schema: Mapping[str, Any], where: str) -> None:
        if not isinstance(value, str):
            raise _fail(where, f"want a string, got {describe(value)}")
        if "\x00" in value:
            raise _fail(where, "a string must not hold a NUL character")
        allowed = schema.get("enum")
        if allowed and value and all(isinstance(a, str) for a in allowed) and value not in allowed:
            raise _fail(where, f"{json.dumps(value)} is not one of {', '.join(json.dumps(a) for a in allowed if a)}")

    @staticmethod
    def _check_integer(value: Any, schema: Mapping[str, Any], where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            got = "a fraction" if isinstance(value, float) else describe(value)
            raise _fail(where, f"want an integer, got {got}")
        fmt = schema.get("format") or "int64"
        low, high = INT_RANGES.get(fmt, INT_RANGES["int64"])
        if not low <= value <= high:
            raise _fail(where, f"{value} is out of range for {fmt}")
        minimum, maximum = schema.get("minimum"), schema.get("maximum")
        if minimum is not None and value < minimum:
            raise _fail(where, f"{value} is less than the minimum, {minimum}")
        if maximum is not None and value > maximum:
            raise _fail(where, f"{value} is more than the maximum, {maximum}")


def check_value(value: Any, schema: Mapping[str, Any], where: str = "") -> None:
    """:meth:`Swagger.check` with the shipped description."""
    load().check(value, schema, where)


@cache
def load() -> Swagger:
    """The shipped description (``swagger-v1.45.json``), read once."""
    with open(SWAGGER_FILE, encoding="utf-8") as fh:
        return Swagger(json.load(fh))
