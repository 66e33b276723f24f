"""Output helpers for the ``engine`` client: docker-style tables, sizes, durations."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence


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


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], out=None, gap: int = 3) -> None:
    """Print a left-aligned table like docker's tabwriter output."""
    out = out or sys.stdout
    rows = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        out.write((" " * gap).join(cells).rstrip() + "\n")


def tabwrite(lines: Iterable[str], out=None, minwidth: int = 10, padding: int = 3) -> None:
    """Go's ``tabwriter.NewWriter(out, minwidth, 1, padding, ' ', 0)`` on tab-separated lines.

    Every tab-terminated cell is padded to its column's width (the widest
    cell plus ``padding``, at least ``minwidth``); the text after the last tab
    of a line is not part of a column. The docker CLI prints its tables so.
    """
    out = out or sys.stdout
    rows = [line.split("\t") for line in lines]
    widths: list[int] = []
    for cells in rows:
        for i, cell in enumerate(cells[:-1]):
            if i == len(widths):
                widths.append(0)
            widths[i] = max(widths[i], len(cell) + padding, minwidth)
    for cells in rows:
        text = "".join(cell.ljust(widths[i]) for i, cell in enumerate(cells[:-1])) + cells[-1]
        out.write(text + "\n")
