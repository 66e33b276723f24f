"""Tables as the docker CLI prints them, for the engine's command-line programs (``engine``, ``engine-admin``)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], out=None, gap: int = 3) -> None:
    """Print a left-aligned table like docker's tabwriter output."""
    out = out or sys.stdout
    text = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    for row in [list(headers), *text]:
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
