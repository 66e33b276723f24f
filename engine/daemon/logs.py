"""Reading a container's log for ``docker logs`` (moby ``jsonfilelog``, ``local``).

The shim writes ``<id>-json.log`` (json-file) or ``local-logs/container.log``
(local), rotated to ``.1``, ``.2``, ... (``.1.gz`` ... when compressed). A
json-file line is ``{"log": ..., "stream": "stdout"|"stderr", "time":
RFC3339Nano}``; a local entry is moby's framed protobuf
(:mod:`engine.shim.locallog`), turned into the same dict here. Reading
supports ``since``/``until``/``tail``/``timestamps`` and ``follow``, which
ends when the container stops (after its last line) or the client goes away.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import IO

from engine.shim.locallog import decode_entries
from engine.utils.timefmt import parse_rfc3339, rfc3339nano_ns

STREAMS = {"stdout": 1, "stderr": 2}


def _files(path: str) -> list[str]:
    """Rotated files oldest first (plain or gzipped), then the current one."""
    rotated = []
    n = 1
    while True:
        name = next((f for f in (f"{path}.{n}", f"{path}.{n}.gz") if os.path.exists(f)), None)
        if name is None:
            break
        rotated.append(name)
        n += 1
    return list(reversed(rotated)) + ([path] if os.path.exists(path) else [])


def _parse(line: bytes) -> dict | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and "log" in entry else None


def split_json(data: bytes) -> tuple[list[dict], bytes]:
    """The json-file entries of the complete lines of ``data``, and what is left."""
    *lines, rest = data.split(b"\n")
    return [e for e in map(_parse, lines) if e is not None], rest


def split_local(data: bytes) -> tuple[list[dict], bytes]:
    """The local driver's complete entries in ``data`` as json-file's dicts, and what is left.

    A line's newline comes back unless the entry is a piece of a longer line.
    """
    try:
        entries, used = decode_entries(data)
    except ValueError:
        return [], b""  # a corrupt file: nothing more can be read from it
    out = []
    for e in entries:
        line = e["line"] + (b"\n" if not e["partial"] or e["last"] else b"")
        out.append(
            {
                "log": line.decode("utf-8", "surrogateescape"),
                "stream": e["source"],
                "time": rfc3339nano_ns(e["time_nano"]),
            }
        )
    return out, data[used:]


#: The reader of each log format the shim writes (:func:`engine.daemon.logconfig.shim_log`).
FORMATS: dict[str, Callable[[bytes], tuple[list[dict], bytes]]] = {"json-file": split_json, "local": split_local}


def _open(name: str) -> IO[bytes]:
    if name.endswith(".gz"):
        return gzip.open(name, "rb")  # type: ignore[return-value]  # a GzipFile reads bytes
    return open(name, "rb")


def _entries(name: str, split: Callable[[bytes], tuple[list[dict], bytes]]) -> Iterator[dict]:
    """Every entry of one (rotated, maybe gzipped) file; a last entry without its end is dropped."""
    pending = b""
    with _open(name) as fh:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                return
            entries, pending = split(pending + chunk)
            yield from entries


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
    format: str = "json-file",
) -> Iterator[tuple[int, bytes]]:
    """Yield (stream, bytes) entries of a container's log.

    :param running: whether the container is still running (follow ends when not).
    :param stopped: whether to give up (daemon shutdown, client gone).
    :param format: ``json-file`` or ``local``, as the shim wrote it.
    """
    wanted = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
    split = FORMATS[format]

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
            for entry in _entries(f, split):
                if keep(entry):
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
            for entry in _entries(f, split):
                if keep(entry):
                    yield render(entry)
        offset_file = files[-1] if files else path
    if not follow and tail != -1:
        return
    yield from _follow(offset_file, offset, split, keep, render, follow, running, stopped, poll)


def _follow(
    path: str,
    offset: int,
    split: Callable[[bytes], tuple[list[dict], bytes]],
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
                    entries, pending = split(pending + chunk)
                    for entry in entries:
                        if keep(entry):
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
                    entries, _ = split(pending + fh.read() + (b"\n" if split is split_json else b""))
                    for entry in entries:
                        if keep(entry):
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
