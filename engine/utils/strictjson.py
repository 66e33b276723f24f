"""JSON from outside the daemon, decoded as Go's ``encoding/json`` would accept it.

Python's :func:`json.loads` is more liberal than the Go decoder that clients
expect, in ways that hurt a server:

* it takes ``NaN``, ``Infinity`` and ``-Infinity``, and reads ``1e400`` as
  an infinite float, which then reaches ``int()`` (a crash) or is stored;
* it recurses once per nesting level, so ``[[[[...]]]]`` a few thousand deep
  raises :class:`RecursionError` from deep inside the decoder;
* it keeps a lone UTF-16 surrogate (``"\\ud800"``) in the string, which
  cannot be encoded again (writing it to disk fails); Go puts U+FFFD there.

:func:`loads` refuses the first two with :class:`JSONError` (a
:class:`ValueError`, so callers that catch malformed JSON catch these too)
and repairs the third as Go does. The nesting bound is checked by a scan of
the text before decoding, so nothing deep is ever built.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["MAX_DEPTH", "JSONError", "loads"]

#: Deepest nesting of arrays and objects accepted. Docker's own bodies nest
#: about six levels (a create's NetworkingConfig.EndpointsConfig.NAME.IPAMConfig.LinkLocalIPs),
#: a service spec about ten; Python's decoder recurses per level.
MAX_DEPTH = 100

#: A JSON string (escapes included) or one bracket; everything else is skipped by the scan.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class JSONError(ValueError):
    """The text is not JSON that Go's decoder would take, or is nested too deep."""


def _constant(name: str) -> Any:
    raise JSONError(f"invalid character {name[0]!r} looking for beginning of value ({name} is not JSON)")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JSONError(f"number {text} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_finite)


def check_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Refuse ``text`` when its arrays and objects nest deeper than ``max_depth``.

    :raises JSONError: with the depth limit in the message.
    """
    if text.count("[") + text.count("{") <= max_depth:
        return
    depth = 0
    for m in _TOKENS.finditer(text):
        token = m.group()
        if token in "[{":
            depth += 1
            if depth > max_depth:
                raise JSONError(f"exceeded max depth: arrays and objects nest deeper than {max_depth} levels")
        elif token in "]}":
            depth -= 1


def _repair(value: Any) -> Any:
    """``value`` with each lone surrogate in its strings replaced by U+FFFD."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_repair(v) for v in value]
    if isinstance(value, dict):
        return {_repair(k): _repair(v) for k, v in value.items()}
    return value


def loads(data: str | bytes | bytearray, max_depth: int = MAX_DEPTH) -> Any:
    """Decode ``data`` (UTF-8 when bytes) as Go's decoder would.

    :raises JSONError: malformed JSON, NaN/Infinity, a number out of a
        float's range, nesting deeper than ``max_depth``, bytes that are not UTF-8.
    """
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONError(f"invalid UTF-8 at byte {exc.start}") from None
    else:
        text = data
    check_depth(text, max_depth)
    try:
        value = _DECODER.decode(text)
    except JSONError:
        raise
    except (ValueError, RecursionError) as exc:
        raise JSONError(str(exc)) from None
    if _SURROGATE_ESCAPE.search(text):
        value = _repair(value)
    return value
