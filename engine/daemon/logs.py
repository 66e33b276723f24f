"""Reading a container's json-file log for ``docker logs`` (moby ``jsonfilelog``).

The shim writes ``<id>-json.log`` (rotated to ``.1``, ``.2``, ...); each line
is ``{"log": ..., "stream": "stdout"|"stderr", "time": RFC3339Nano}``. Reading
supports ``since``/``until``/``tail``/``timestamps`` and ``follow``, which
ends when the container stops (after its last line) or the client goes away.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator

from engine.utils.timefmt import parse_rfc3339

STREAMS = {"stdout": 1, "stderr": 2}


def _files(path: str) -> list[str]:
    """Rotated files oldest first, then the current one."""
    rotated = []
    n = 1
    while os.path.exists(f"{path}.{n}"):
        rotated.append(f"{path}.{n}")
        n += 1
    return list(reversed(rotated)) + ([path] if os.path.exists(path) else [])


def _parse(line: bytes) -> dict | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and "log" in entry else None


def read(
    path: str,
    stdout: bool = True,
    stderr: bool = True,
    since: float = 0.0,
    until: float = 0.0,
    tail: int = -1,
    timestamps: bool = False,
    follow: bool = False,
    running: Callable[[], bool] = lambda: False,
    stopped: Callable[[], bool] = lambda: False,
    poll: float = 0.1,
) -> Iterator[tuple[int, bytes]]:
    """Yield (stream, bytes) entries of a container's log.

    :param running: whether the container is still running (follow ends when not).
    :param stopped: whether to give up (daemon shutdown, client gone).
    """
    wanted = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}

    def keep(entry: dict) -> bool:
        if entry.get("stream", "stdout") not in wanted:
            return False
        if since or until:
            ts = parse_rfc3339(entry.get("time"))
            if since and ts < since:
                return False
            if until and ts > until:
                return False
        return True

    def render(entry: dict) -> tuple[int, bytes]:
        data = entry["log"].encode("utf-8", "surrogateescape")
        if timestamps:
            data = entry.get("time", "").encode() + b" " + data
        return STREAMS.get(entry.get("stream", "stdout"), 1), data

    files = _files(path)
    if tail == 0 and not follow:
        return
    if tail > 0:
        entries: list[dict] = []
        for f in files:
            with open(f, "rb") as fh:
                for line in fh:
                    entry = _parse(line)
                    if entry is not None and keep(entry):
                        entries.append(entry)
                        if len(entries) > tail * 2:
                            entries = entries[-tail:]
        for entry in entries[-tail:]:
            yield render(entry)
        offset_file, offset = (files[-1], os.path.getsize(files[-1])) if files else (path, 0)
    elif tail == 0:
        offset_file, offset = (files[-1], os.path.getsize(files[-1])) if files else (path, 0)
    else:
        offset_file, offset = path, 0
        for f in files[:-1]:
            with open(f, "rb") as fh:
                for line in fh:
                    entry = _parse(line)
                    if entry is not None and keep(entry):
                        yield render(entry)
        offset_file = files[-1] if files else path
    if not follow and tail != -1:
        return
    yield from _follow(offset_file, offset, keep, render, follow, running, stopped, poll)


def _follow(
    path: str,
    offset: int,
    keep: Callable[[dict], bool],
    render: Callable[[dict], tuple[int, bytes]],
    follow: bool,
    running: Callable[[], bool],
    stopped: Callable[[], bool],
    poll: float,
) -> Iterator[tuple[int, bytes]]:
    fh = None
    inode = None
    pending = b""
    try:
        while True:
            if fh is None and os.path.exists(path):
                fh = open(path, "rb")
                inode = os.fstat(fh.fileno()).st_ino
                fh.seek(offset)
            progressed = False
            if fh is not None:
                chunk = fh.read(1 << 20)
                if chunk:
                    progressed = True
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        entry = _parse(line)
                        if entry is not None and keep(entry):
                            yield render(entry)
            if progressed:
                continue
            if not follow:
                return
            # Rotation: the path now names a new file; finish the old one first.
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if fh is not None and current is not None and current != inode:
                fh.close()
                fh, offset, pending = None, 0, b""
                continue
            if stopped():
                return
            if not running():
                # One last read: the shim writes the last lines before it exits.
                time.sleep(poll)
                if fh is not None:
                    rest = pending + fh.read()
                    for line in rest.split(b"\n"):
                        entry = _parse(line)
                        if entry is not None and keep(entry):
                            yield render(entry)
                return
            time.sleep(poll)
    finally:
        if fh is not None:
            fh.close()


def parse_time(value: str | None) -> float:
    """``since``/``until``: unix seconds with optional fraction (``1700000000.5``)."""
    if not value:
        return 0.0
    try:
        return float(value)
    except ValueError:
        return parse_rfc3339(value)
