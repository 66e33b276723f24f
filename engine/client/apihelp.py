"""Small helpers the container, volume and system commands share.

Requests are made through the ``APIClient``'s private ``_get``/``_post``
methods when the docker CLI's exact query matters (filters as a map of
booleans, ``all=1``), and errors are printed as the CLI prints them
(``Error response from daemon: <message>``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

from engine.client.errors import ClientError
from engine.client.runflags import parse_go_duration


def api_error_text(exc: BaseException) -> str:
    """What the CLI prints for a failed call: ``Error response from daemon: <message>``."""
    explanation = getattr(exc, "explanation", None)
    if explanation is None and getattr(exc, "response", None) is None:
        return str(exc)
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return f"Error response from daemon: {explanation or exc}"


def is_not_found(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    return response is not None and getattr(response, "status_code", None) == 404


def filters_json(values: Iterable[str] | None) -> str | None:
    """``-f key=value`` flags as the CLI encodes them: ``{"key":{"value":true}}``.

    :raises ClientError: ``bad format of filter (expected name=value)``.
    """
    out: dict[str, dict[str, bool]] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ClientError(f"bad format of filter (expected name=value): {item}")
        out.setdefault(key.strip().lower(), {})[value.strip()] = True
    return json.dumps(out, separators=(",", ":")) if out else None


def short_id(ident: str, no_trunc: bool = False) -> str:
    """``stringid.TruncateID``: drop ``sha256:``, keep 12 characters."""
    if no_trunc:
        return ident
    return ident.split(":", 1)[-1][:12]


def ellipsis(text: str, width: int) -> str:
    """The CLI's ``formatter.Ellipsis`` (for ASCII-width text): cut to ``width`` with ``…``."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width == 1:
        return text[0]
    return text[: width - 1] + "…"


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote``: double quotes, ``\\"`` and ``\\\\``, control characters escaped."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not ch.isprintable():
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def get_timestamp(value: str, now: float | None = None) -> str:
    """moby's ``timetypes.GetTimestamp``: what ``--since``/``--until`` send.

    ``10m`` (a Go duration) is that long before now, in unix seconds; an
    RFC 3339 date or time (``2024-01-01``, ``2024-01-01T10:00``, with or
    without a zone) becomes ``seconds.nanoseconds``; a unix timestamp is
    passed through.

    :raises ClientError: for anything else.
    """
    now = time.time() if now is None else now
    if value != "0":
        try:
            return str(int(now - parse_go_duration(value) / 1e9))
        except ValueError:
            pass
    parsed = _parse_time(value)
    if parsed is not None:
        whole = int(parsed.timestamp() // 1)
        return f"{whole}.{parsed.microsecond * 1000:09d}"
    if "-" in value:
        raise ClientError(f'parsing time "{value}": cannot parse "{value}" as a timestamp')
    if not re.fullmatch(r"\d+(\.\d{1,9})?", value):
        raise ClientError(f'failed to parse value as time or duration: "{value}"')
    return value


def _parse_time(value: str) -> dt.datetime | None:
    if not re.match(r"\d{4}-\d{2}-\d{2}", value):
        return None
    text = value.replace("z", "Z")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(\.\d+)?)?)?)?([+-]\d{2}:\d{2})?", text)
    if m is None:
        return None
    date, hh, mm, ss, frac, zone = m.groups()
    micro = int((frac or ".0")[1:7].ljust(6, "0"))
    stamp = dt.datetime.fromisoformat(f"{date}T{hh or '00'}:{mm or '00'}:{ss or '00'}")
    stamp = stamp.replace(microsecond=micro)
    if zone:
        stamp = stamp.replace(tzinfo=dt.datetime.fromisoformat("2000-01-01T00:00:00" + zone).tzinfo)
    else:
        stamp = stamp.astimezone()
    return stamp


def go_time_string(ts: float) -> str:
    """Go's ``time.Unix(ts, 0).String()`` in local time: ``2024-01-01 10:00:00 +0100 CET``."""
    local = dt.datetime.fromtimestamp(int(ts)).astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S %z ") + (local.tzname() or "")


def print_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def request_json(
    client: Any, method: str, path: str, *args: str, params: dict[str, Any] | None = None, body: Any = None
) -> Any:
    """One API call with the CLI's query; the decoded JSON body (None when empty)."""
    url = client._url(path, *args)
    if method == "GET":
        resp = client._get(url, params=params)
    elif method == "DELETE":
        resp = client._delete(url, params=params)
    elif body is not None:
        resp = client._post_json(url, body, params=params)
    else:
        resp = client._post(url, params=params)
    client._raise_for_status(resp)
    if not resp.content:
        return None
    return resp.json()


def inspect_container(client: Any, ident: str, size: bool = False) -> dict[str, Any]:
    """``GET /containers/{id}/json``; APIError (NotFound) when there is none."""
    return request_json(client, "GET", "/containers/{0}/json", ident, params={"size": 1} if size else None)


def indent_json(raw: bytes | str, indent: str = "    ") -> str:
    """Go's ``json.Indent`` on raw JSON: only whitespace changes, escapes are kept as the daemon wrote them."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    out: list[str] = []
    depth = 0
    pending = False  # a newline and indentation are due before the next value
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        if c in "]}":
            depth -= 1
            if pending:
                pending = False  # "{}" and "[]" stay on one line
            else:
                out.append("\n" + indent * depth)
            out.append(c)
            i += 1
            continue
        if c == ",":
            out.append(",")
            pending = True
            i += 1
            continue
        if c == ":":
            out.append(": ")
            i += 1
            continue
        if pending:
            out.append("\n" + indent * depth)
            pending = False
        if c in "{[":
            out.append(c)
            depth += 1
            pending = True
            i += 1
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in " \t\r\n,:]}":
                j += 1
            out.append(text[i:j])
            i = j
    return "".join(out)
