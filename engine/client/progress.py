"""Render the daemon's JSON progress stream like the docker CLI does.

On a terminal every ``id`` (a layer) keeps one line that is redrawn in place
(ANSI cursor movement, as moby's ``jsonmessage.DisplayJSONMessagesStream``)
and an overall line sums the bytes of every layer; elsewhere each message is
printed once, without bars.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import IO, Any

from engine.utils.progress import bar
from engine.utils.units import human_size


class StreamError(Exception):
    """The stream carried an error message."""


def _decode(chunks: Iterable[Any]) -> Iterable[dict]:
    buf = b""
    for chunk in chunks:
        if isinstance(chunk, dict):
            yield chunk
            continue
        if isinstance(chunk, str):
            chunk = chunk.encode()
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)
    if buf.strip():
        yield json.loads(buf)


class Renderer:
    """Draw progress messages on ``out``."""

    def __init__(self, out: IO[str] | None = None, tty: bool | None = None, overall: bool = True) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.overall = overall
        self.ids: list[str] = []
        self.lines: dict[str, str] = {}
        self.totals: dict[str, tuple[int, int]] = {}
        self._overall_drawn = False
        self.aux: list[Any] = []

    def _line(self, msg: dict) -> str:
        text = msg.get("status", "")
        if msg.get("id"):
            text = f"{msg['id']}: {text}"
        detail = msg.get("progressDetail") or {}
        if detail.get("current") is not None:
            progress = bar(detail["current"], detail.get("total") or 0) if self.tty else msg.get("progress", "")
            text = f"{text} {progress}".rstrip()
        return text

    def _overall_text(self) -> str:
        current = sum(c for c, _ in self.totals.values())
        total = sum(t for _, t in self.totals.values())
        return f"Total: {bar(current, total)}" if total else f"Total: {human_size(current)}"

    def handle(self, msg: dict) -> None:
        if "errorDetail" in msg or "error" in msg:
            raise StreamError((msg.get("errorDetail") or {}).get("message") or msg.get("error"))
        if "aux" in msg:
            self.aux.append(msg["aux"])
            return
        if "stream" in msg:
            self._clear_overall()
            self.out.write(msg["stream"])
            self.out.flush()
            return
        ident = msg.get("id")
        detail = msg.get("progressDetail") or {}
        if ident and detail.get("current") is not None:
            self.totals[ident] = (detail["current"], detail.get("total") or 0)
        elif ident and msg.get("status") in (
            "Pull complete",
            "Download complete",
            "Pushed",
            "Already exists",
            "Layer already exists",
            "Loading layer",
        ):
            cur, tot = self.totals.get(ident, (0, 0))
            self.totals[ident] = (max(cur, tot), tot)
        text = self._line(msg)
        if not self.tty:
            if detail.get("current") is None or not ident:
                self.out.write(text + "\n")
                self.out.flush()
            return
        if not ident:
            self._clear_overall()
            self.out.write(text + "\n")
        elif ident in self.lines:
            self._clear_overall()
            up = len(self.ids) - self.ids.index(ident)
            self.out.write(f"\x1b[{up}A\r\x1b[2K{text}\r\x1b[{up}B")
            self.lines[ident] = text
        else:
            self._clear_overall()
            self.ids.append(ident)
            self.lines[ident] = text
            self.out.write(text + "\n")
        if self.overall and self.totals:
            self.out.write("\x1b[2K" + self._overall_text() + "\r")
            self._overall_drawn = True
        self.out.flush()

    def _clear_overall(self) -> None:
        if self._overall_drawn:
            self.out.write("\r\x1b[2K")
            self._overall_drawn = False

    def finish(self) -> None:
        if self._overall_drawn:
            self.out.write("\n")
            self.out.flush()
            self._overall_drawn = False


def display(chunks: Iterable[Any], out: IO[str] | None = None, tty: bool | None = None) -> list[Any]:
    """Render a whole stream; returns its ``aux`` payloads.

    :raises StreamError: with the message of an error in the stream.
    """
    renderer = Renderer(out, tty)
    try:
        for msg in _decode(chunks):
            renderer.handle(msg)
    finally:
        renderer.finish()
    return renderer.aux
