"""go-units (sizes, durations, ulimits) and the Go ``strconv`` integers they parse with, ported with their messages.

The docker CLI and dockerd share github.com/docker/go-units, so the engine's
client and daemon share this module: ``RAMInBytes`` for ``--memory``, the
``FromHumanSize`` of the json-file log's ``max-size``, the ``HumanSize`` of
``docker images`` and of the progress bars, ``HumanDuration`` of ``Up 2
minutes``, ``ParseUlimit`` of ``--ulimit`` and ``default-ulimits``. Parsers
raise :class:`ValueError` with Go's text; each caller words the error for
its side (a flag error in the client, a configuration error in the daemon).
"""

from __future__ import annotations

import re
from typing import Any

#: The resource names ``ParseUlimit`` knows (go-units ``ulimitNameMapping``).
ULIMIT_NAMES = (
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
)


def parse_uint(text: str, bits: int = 64, base: int = 10) -> int:
    """Go's ``strconv.ParseUint``, with its error text."""
    if not text or not all(c in "0123456789abcdefABCDEF"[: base if base <= 10 else 22] for c in text):
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    value = int(text, base)
    if value >= 1 << bits:
        raise ValueError(f'strconv.ParseUint: parsing "{text}": value out of range')
    return value


def parse_int(text: str, bits: int = 64) -> int:
    """Go's ``strconv.ParseInt`` (base 10), with its error text."""
    if not re.fullmatch(r"[+-]?[0-9]+", text or ""):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    value = int(text)
    if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": value out of range')
    return value


def _parse_size(text: str, binary: bool) -> int:
    sep = max(text.rfind(c) for c in "01234567890. ")
    if sep == -1:
        raise ValueError(f"invalid size: '{text}'")
    if text[sep] != " ":
        num, sfx = text[: sep + 1], text[sep + 1 :]
    else:
        num, sfx = text[:sep], text[sep + 1 :]
    try:
        size = float(num)
    except ValueError:
        raise ValueError(f'strconv.ParseFloat: parsing "{num}": invalid syntax') from None
    if size < 0:
        raise ValueError(f"invalid size: '{text}'")
    if not sfx:
        return int(size)
    bad = ValueError(f"invalid suffix: '{sfx.lower() if len(sfx) <= 3 else sfx}'")
    if len(sfx) > 3:
        raise bad
    sfx = sfx.lower()
    if sfx[0] == "b":
        if len(sfx) > 1:
            raise bad
        return int(size)
    base = 1024 if binary else 1000
    powers = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
    if sfx[0] not in powers:
        raise bad
    size *= base ** powers[sfx[0]]
    if (len(sfx) == 2 and sfx[1] != "b") or (len(sfx) == 3 and sfx[1:] != "ib"):
        raise bad
    return int(size)


def ram_in_bytes(text: str) -> int:
    """go-units ``RAMInBytes``: ``32m`` is 32 MiB, ``1g`` 1 GiB, a bare number bytes."""
    return _parse_size(text, binary=True)


def from_human_size(text: str) -> int:
    """go-units ``FromHumanSize``: decimal units (``1k`` is 1000)."""
    return _parse_size(text, binary=False)


def parse_ulimit(value: str) -> dict[str, Any]:
    """go-units ``ParseUlimit``: ``nofile=1024[:2048]`` as ``{Name, Hard, Soft}``.

    :raises ValueError: go-units' reason (``invalid ulimit type: x``, ...).
    """
    name, sep, limits = value.partition("=")
    if not sep:
        raise ValueError(f"invalid ulimit argument: {value}")
    if name not in ULIMIT_NAMES:
        raise ValueError(f"invalid ulimit type: {name}")
    parts = limits.split(":")
    if len(parts) > 2:
        raise ValueError(f"too many limit value arguments - {limits}, can only have up to two, `soft[:hard]`")
    soft = parse_int(parts[0])
    hard = parse_int(parts[1]) if len(parts) == 2 else soft
    if hard != -1:
        if soft == -1:
            raise ValueError(
                f"ulimit soft limit must be less than or equal to hard limit: soft: -1 (unlimited), hard: {hard}"
            )
        if soft > hard:
            raise ValueError(f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")
    return {"Name": name, "Hard": hard, "Soft": soft}


def human_size(n: float, precision: int = 3) -> str:
    """go-units ``HumanSizeWithPrecision`` (decimal units): ``1.23MB``."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000.0
        i += 1
    text = f"{n:.{precision}g}"
    return f"{text}{units[i]}"


def bytes_size(n: float) -> str:
    """go-units ``BytesSize`` (binary units): ``1.5GiB``."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024.0
        i += 1
    return f"{n:.4g}{units[i]}"


def human_duration(seconds: float) -> str:
    """go-units ``HumanDuration``: ``Less than a second``, ``About a minute``..."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"
