"""Docker's JSON progress stream: the messages ``docker pull``/``load``/``push``
print, with the progress bar the daemon renders (moby ``jsonmessage``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from engine.utils.units import human_size

BAR_WIDTH = 50


def bar(current: int, total: int) -> str:
    """The ``progress`` string: ``[=====>      ]  1.2MB/5MB``."""
    if total <= 0:
        return f"{human_size(current)}"
    filled = min(BAR_WIDTH, int(BAR_WIDTH * current / total))
    arrow = ">" if filled < BAR_WIDTH else ""
    body = "=" * max(0, filled - (1 if arrow else 0)) + arrow
    return f"[{body.ljust(BAR_WIDTH)}] {human_size(current).rjust(8)}/{human_size(total)}"


def message(
    status: str | None = None,
    id: str | None = None,
    current: int | None = None,
    total: int | None = None,
    stream: str | None = None,
    aux: Any = None,
) -> dict:
    msg: dict[str, Any] = {}
    if status is not None:
        msg["status"] = status
    if stream is not None:
        msg["stream"] = stream
    if current is not None:
        detail = {"current": current}
        if total:
            detail["total"] = total
        msg["progressDetail"] = detail
        msg["progress"] = bar(current, total or 0)
    elif status is not None:
        msg["progressDetail"] = {}
    if id is not None:
        msg["id"] = id
    if aux is not None:
        msg["aux"] = aux
    return msg


def error(text: str) -> dict:
    return {"errorDetail": {"message": text}, "error": text}


class Progress:
    """Writes JSON progress lines to ``write``, rate-limiting updates per id.

    :param write: called with one encoded line at a time.
    :param interval: the least time between two progress updates of one id.
    """

    def __init__(self, write: Callable[[bytes], Any], interval: float = 0.1) -> None:
        self._write = write
        self._interval = interval
        self._last: dict[str, float] = {}

    def send(self, msg: dict) -> None:
        self._write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")

    def status(self, status: str, id: str | None = None) -> None:
        """A progress action (moby ``progress.Update``): ``{"status","progressDetail":{},"id"}``."""
        self.send(message(status, id))

    def message(self, text: str, id: str | None = None) -> None:
        """A plain message (moby ``progress.Message``): ``{"status","id"}``, no ``progressDetail``."""
        msg: dict[str, Any] = {"status": text}
        if id is not None:
            msg["id"] = id
        self.send(msg)

    def stream(self, text: str) -> None:
        self.send({"stream": text})

    def update(self, status: str, id: str, current: int, total: int | None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last.get(id, 0.0) < self._interval:
            return
        self._last[id] = now
        self.send(message(status, id, current, total))

    def error(self, text: str) -> None:
        self.send(error(text))
