"""Go's time formats as the Docker API writes and reads them: RFC 3339 with nanoseconds, in UTC.

The daemon's documents (``State.StartedAt``, ``Created``, ``SystemTime``),
the json-file log lines the shim writes and the image configs all carry Go's
``time.RFC3339Nano``: ``2026-11-30T06:03:41.123456789Z``, the fraction's
trailing zeros dropped, and Go's zero time ``0001-01-01T00:00:00Z`` for
"never". Every container's shim imports this module: standard library only.
"""

from __future__ import annotations

import time

#: Go's zero ``time.Time`` as JSON: what moby writes for a time that never was.
ZERO_TIME = "0001-01-01T00:00:00Z"

_NANOS = 1_000_000_000


def rfc3339nano_ns(ns: int | None = None) -> str:
    """Go's ``time.RFC3339Nano`` in UTC of ``ns`` nanoseconds since the epoch; now when omitted."""
    if ns is None:
        ns = time.time_ns()
    seconds, nanos = divmod(ns, _NANOS)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if nanos:
        return f"{base}.{nanos:09d}".rstrip("0") + "Z"
    return base + "Z"


def rfc3339nano(ts: float | None) -> str:
    """Go's ``time.RFC3339Nano`` in UTC of a unix time in seconds; :data:`ZERO_TIME` for 0 or None.

    The whole seconds are split off before the fraction is rounded, so the
    nanoseconds are as exact as the float allows.
    """
    if not ts:
        return ZERO_TIME
    whole = int(ts)
    nanos = round((ts - whole) * 1e9)
    return rfc3339nano_ns(whole * _NANOS + nanos)


def parse_rfc3339(value: object) -> float:
    """RFC 3339 (``2024-01-02T03:04:05.123456789Z``, or with an offset) to a unix time in seconds.

    Anything else (not a string, empty, malformed) is 0.0: the callers read
    documents written by other programs and treat a bad time as none.
    """
    if not isinstance(value, str) or not value:
        return 0.0
    import datetime as dt

    text = value.strip()
    frac = ""
    tz = "+00:00"
    if text.endswith("Z"):
        text = text[:-1]
    elif len(text) > 6 and text[-6] in "+-" and text[-3] == ":":
        text, tz = text[:-6], text[-6:]
    if "." in text:
        text, frac = text.split(".", 1)
    try:
        base = dt.datetime.fromisoformat(text + tz)
    except ValueError:
        return 0.0
    return base.timestamp() + (float("0." + frac[:9]) if frac.isdigit() else 0.0)
