"""Byte-exact layer tars without keeping a copy of them (Docker's tar-split).

A layer's diff ID is the sha256 of its tar, byte for byte. Re-creating a tar
from the files in a layer gives different bytes (header fields, order,
padding), so ``docker save`` and ``docker push`` would change every image
ID. Like Docker (vbatts/tar-split), we record while a layer is applied
everything in its tar *except* file contents: raw header and padding bytes
as they came, and for each file its name, size and CRC-32. To re-create the
tar, the raw bytes are replayed and each file's content is read back from the
layer (it is immutable once registered) and checked against its CRC.

The record is a gzip stream of JSON lines, one per segment:
``{"r": "<base64 raw bytes>"}`` or ``{"f": "<path>", "s": size, "c": crc32}``.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import posixpath
import zlib
from collections.abc import Callable, Iterator
from typing import IO

from engine.errors import HostError, InvalidParameter

BLOCK = 512

# Type flags whose payload is file content (tar(5)): regular files ("0",
# NUL, and "7" contiguous). Every other payload (PAX records, GNU long
# names) is metadata and is kept raw.
_CONTENT_TYPES = {b"0", b"\0", b"7"}
_NO_PAYLOAD_TYPES = {b"1", b"2", b"3", b"4", b"5", b"6"}


def _octal(field: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 when the top bit is set."""
    if field and field[0] & 0x80:
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = field.split(b"\0", 1)[0].strip(b" \0")
    return int(text, 8) if text else 0


def _pax_records(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            break
        record = data[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def clean(name: str) -> str:
    """A member name as the extractor places it, relative to the layer root."""
    path = posixpath.normpath("/" + name).lstrip("/")
    return "" if path == "." else path


class Recorder:
    """Fed the raw bytes of a tar stream (any chunking); writes the record.

    :param out: a binary file the gzip'd JSON lines go to.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self._gz = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0)
        self._raw = bytearray()
        self._buf = bytearray()
        self._state = "header"
        self._need = BLOCK
        self._file: tuple[str, int] | None = None
        self._crc = 0
        self._meta = bytearray()
        self._meta_type = b""
        self._pax_path: str | None = None
        self._gnu_name: str | None = None
        self._pad = 0
        self.closed = False

    # segments
    def _flush_raw(self) -> None:
        if self._raw:
            self._gz.write(json.dumps({"r": base64.b64encode(bytes(self._raw)).decode()}).encode() + b"\n")
            self._raw.clear()

    def _emit_file(self, path: str, size: int, crc: int) -> None:
        self._flush_raw()
        self._gz.write(json.dumps({"f": path, "s": size, "c": crc}).encode() + b"\n")

    # parser
    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._state == "content":
                take = min(self._need, len(view))
                self._crc = zlib.crc32(view[:take], self._crc)
                self._need -= take
                view = view[take:]
                if self._need == 0:
                    path, size = self._file  # type: ignore[misc]
                    self._emit_file(path, size, self._crc)
                    self._file = None
                    self._start_padding()
                continue
            take = min(self._need - len(self._buf), len(view))
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) < self._need:
                continue
            chunk = bytes(self._buf)
            self._buf.clear()
            if self._state == "header":
                self._raw += chunk
                self._header(chunk)
            elif self._state == "meta":
                self._raw += chunk
                self._meta += chunk
                self._finish_meta()
            elif self._state == "padding":
                self._raw += chunk
                self._state, self._need = "header", BLOCK
            elif self._state == "skip":
                self._raw += chunk
                self._start_padding()

    def _header(self, block: bytes) -> None:
        if block == b"\0" * BLOCK:
            return  # end-of-archive blocks and record padding: raw
        size = _octal(block[124:136])
        typeflag = block[156:157]
        if typeflag in (b"x", b"g", b"L", b"K"):
            self._meta.clear()
            self._meta_type = typeflag
            self._pad = (-size) % BLOCK
            self._state, self._need = "meta", size
            if size == 0:
                self._finish_meta()
            return
        name = block[0:100].split(b"\0", 1)[0]
        if block[257:262] == b"ustar":
            prefix = block[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        path = self._gnu_name or self._pax_path or name.decode("utf-8", "surrogateescape")
        self._gnu_name = self._pax_path = None
        if typeflag in _CONTENT_TYPES and size > 0:
            self._flush_raw()
            self._file = (clean(path), size)
            self._crc = 0
            self._pad = (-size) % BLOCK
            self._state, self._need = "content", size
        elif typeflag in _NO_PAYLOAD_TYPES or size == 0:
            self._state, self._need = "header", BLOCK
        else:
            # An unknown type: its payload is kept raw, like metadata.
            self._pad = (-size) % BLOCK
            self._state, self._need = "skip", size

    def _finish_meta(self) -> None:
        data = bytes(self._meta)
        if self._meta_type == b"x":
            path = _pax_records(data).get("path")
            if path is not None:
                self._pax_path = path
        elif self._meta_type == b"L":
            self._gnu_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        self._start_padding()

    def _start_padding(self) -> None:
        if self._pad:
            self._state, self._need = "padding", self._pad
            self._pad = 0
        else:
            self._state, self._need = "header", BLOCK

    def close(self) -> None:
        """Write what is left (trailing bytes of any kind are kept raw)."""
        if self.closed:
            return
        if self._state == "content":
            raise InvalidParameter("unexpected EOF in layer tar")
        self._raw += self._buf
        self._buf.clear()
        self._flush_raw()
        self._gz.close()
        self.closed = True


def segments(record: IO[bytes]) -> Iterator[dict]:
    with gzip.GzipFile(fileobj=record, mode="rb") as gz:
        for line in gz:
            yield json.loads(line)


def replay(record: IO[bytes], open_file: Callable[[str], int], chunk: int = 1 << 20) -> Iterator[bytes]:
    """Re-create the original tar from a record and the layer's files.

    :param open_file: ``fn(path) -> fd`` opening a file of the layer for
        reading (the caller confines it to the layer).
    :raises HostError: a file's content no longer matches the record.
    """
    for seg in segments(record):
        if "r" in seg:
            yield base64.b64decode(seg["r"])
            continue
        path, size, crc = seg["f"], seg["s"], seg["c"]
        fd = open_file(path)
        try:
            left = size
            got = 0
            while left:
                data = os.read(fd, min(chunk, left))
                if not data:
                    raise HostError(f"layer file {path} is shorter than when it was stored")
                got = zlib.crc32(data, got)
                left -= len(data)
                yield data
        finally:
            os.close(fd)
        if got != crc:
            raise HostError(f"layer file {path} changed since it was stored (checksum mismatch)")
