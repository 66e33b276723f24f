"""Docker's ``local`` log driver's file: protobuf entries with a length before and after.

The file is ``<container dir>/local-logs/container.log``; each entry is moby's
``logdriver.LogEntry`` (``api/types/plugins/logdriver/entry.proto``)::

    [size: 4 bytes, big-endian][LogEntry: size bytes][size: 4 bytes, big-endian]

    message LogEntry {
      string source = 1;                 // "stdout" or "stderr"
      int64 time_nano = 2;
      bytes line = 3;                    // without its newline
      bool partial = 4;
      PartialLogEntryMetadata partial_log_metadata = 5;
    }
    message PartialLogEntryMetadata { bool last = 1; string id = 2; int32 ordinal = 3; }

A line longer than 16 KiB is written as partial entries sharing an ID, the
last one (the one the newline ended) marked ``last``; what is left at EOF is
a partial entry that is not. Rotation and compression are json-file's; the
driver's defaults (20 MB, 5 files, compressed) are applied by the daemon.

The shim writes with :class:`LocalLogFile`; the daemon reads with
:func:`decode_entries`. Both use the standard library only.
"""

from __future__ import annotations

import calendar
import os
import struct
import time
from typing import Any

from engine.shim.jsonlog import JSONLogFile

__all__ = ["LocalLogFile", "decode_entries", "encode_entry"]

_SIZE = struct.Struct(">I")
#: moby's largest entry (``maxMsgLen``); a bigger size means a corrupt file.
MAX_ENTRY = 1 << 20


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 as protobuf writes a negative one: ten bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _field(number, 2) + _varint(len(data)) + data


def encode_entry(source: str, time_nano: int, line: bytes, partial: tuple[bool, str, int] | None = None) -> bytes:
    """One framed entry; ``partial`` is ``(last, id, ordinal)`` for a piece of a long line."""
    body = bytearray()
    if source:
        body += _bytes_field(1, source.encode())
    if time_nano:
        body += _field(2, 0) + _varint(time_nano)
    if line:
        body += _bytes_field(3, line)
    if partial is not None:
        last, pid, ordinal = partial
        meta = bytearray()
        if last:
            meta += _field(1, 0) + b"\x01"
        if pid:
            meta += _bytes_field(2, pid.encode())
        if ordinal:
            meta += _field(3, 0) + _varint(ordinal)
        body += _field(4, 0) + b"\x01" + _bytes_field(5, bytes(meta))
    size = _SIZE.pack(len(body))
    return size + bytes(body) + size


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> dict[int, Any]:
    """The fields of a protobuf message (the last of each number wins, as proto3 merges)."""
    out: dict[int, Any] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            out[number], pos = _read_varint(data, pos)
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            out[number], pos = data[pos : pos + size], pos + size
        elif wire == 1:
            out[number], pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            out[number], pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unknown wire type {wire}")
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def decode_entries(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The complete entries at the start of ``data``, and how many bytes they took.

    Each is ``{"source", "time_nano", "line", "partial", "last"}``.

    :raises ValueError: the data is not an entry stream (a size over 1 MiB, sizes
        that disagree, a malformed message).
    """
    entries: list[dict[str, Any]] = []
    pos = 0
    while len(data) - pos >= _SIZE.size:
        (size,) = _SIZE.unpack_from(data, pos)
        if size > MAX_ENTRY:
            raise ValueError(f"log message is too large ({size} > {MAX_ENTRY})")
        end = pos + _SIZE.size + size + _SIZE.size
        if end > len(data):
            break
        if _SIZE.unpack_from(data, end - _SIZE.size)[0] != size:
            raise ValueError("log entry sizes do not match")
        fields = _fields(data[pos + _SIZE.size : end - _SIZE.size])
        meta = _fields(fields.get(5, b""))
        entries.append(
            {
                "source": fields.get(1, b"").decode("utf-8", "replace"),
                "time_nano": _signed(fields.get(2, 0)),
                "line": bytes(fields.get(3, b"")),
                "partial": bool(fields.get(4, 0)),
                "last": bool(meta.get(1, 0)),
            }
        )
        pos = end
    return entries, pos


def parse_rfc3339nano(text: str) -> int:
    """``2026-11-30T06:03:41.123456789Z`` -> nanoseconds since the epoch (the shim's timestamps)."""
    base, _, fraction = text.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1_000_000_000 + int((fraction + "000000000")[:9])


class LocalLogFile(JSONLogFile):
    """The ``local`` driver's file: json-file's rotation, moby's protobuf entries."""

    def __init__(self, path: str, max_size: int = 0, max_file: int = 1, compress: bool = False) -> None:
        os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
        super().__init__(path, max_size, max_file, compress)
        #: The long line being written in pieces, per stream: (id, next ordinal).
        self._partials: dict[str, tuple[str, int]] = {}
        self._when = ("", 0)

    def _nanos(self, when: str) -> int:
        if self._when[0] != when:  # one parse per batch: the entries of a read share it
            self._when = (when, parse_rfc3339nano(when))
        return self._when[1]

    def encode(self, stream: str, data: bytes, when: str) -> bytes:
        """A piece that ends with a newline completes its line; any other is partial."""
        ongoing = self._partials.get(stream)
        if data.endswith(b"\n"):
            line = data[:-1]
            partial = None
            if ongoing is not None:
                partial = (True, ongoing[0], ongoing[1])
                del self._partials[stream]
        else:
            line = data
            pid, ordinal = ongoing if ongoing is not None else (os.urandom(32).hex(), 1)
            partial = (False, pid, ordinal)
            self._partials[stream] = (pid, ordinal + 1)
        return encode_entry(stream, self._nanos(when), line, partial)
