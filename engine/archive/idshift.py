"""A tar stream with its owners moved through an ID map, header by header, as it is read.

With ``--userns-remap`` the files of layers and containers are owned on the
host by the remapped IDs (container root is, say, 100000), while every tar
that comes in or goes out speaks of the container's IDs (root is 0). dockerd
moves the IDs when it applies or makes a diff (``archive.TarOptions.IDMap``).
Here a stream is rewritten on the way instead, so that no graph driver needs
to know about maps: :class:`ShiftedTar` reads a tar and yields the same tar
with each header's uid and gid (and a PAX header's ``uid``/``gid`` records)
passed through the mapping functions; file data passes untouched.

An ID the map does not cover is refused (dockerd: "Container ID 70000 cannot
be mapped to a host ID"). Headers are rewritten in the ustar fields (octal,
or GNU's base-256 for IDs of 2**21 and more); PAX records are re-encoded with
their new lengths.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import IO

from engine.errors import InvalidParameter

__all__ = ["ShiftedTar"]

BLOCK = 512
_UID, _GID, _SIZE, _CHKSUM, _TYPE = (108, 8), (116, 8), (124, 12), (148, 8), 156


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or base-256 when the first byte has its high bit."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip(b" ")
    return int(text, 8) if text else 0


def _encode(value: int, width: int) -> bytes:
    if value < 8 ** (width - 1):
        return b"%0*o\0" % (width - 1, value)
    return b"\x80" + value.to_bytes(width - 1, "big")


def _checksum(header: bytearray) -> None:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)


def _pax(data: bytes, shift: Callable[[str, int], int]) -> bytes:
    """PAX records with ``uid``/``gid`` moved; the others as they were."""
    out = bytearray()
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        length = int(data[pos:space])
        record = data[space + 1 : pos + length]
        key, _, value = record.rstrip(b"\n").partition(b"=")
        if key in (b"uid", b"gid"):
            new = b"%s=%d\n" % (key, shift(key.decode(), int(value)))
            # The length counts its own digits: grow until it is stable.
            digits = 1
            while len(str(len(new) + 1 + digits)) != digits:
                digits += 1
            out += b"%d %s" % (len(new) + 1 + digits, new)
        else:
            out += data[pos : pos + length]
        pos += length
    return bytes(out) + data[pos:]


class ShiftedTar(io.RawIOBase):
    """``stream`` (a tar) with its owners mapped; read it like the original.

    :param uid: container -> host (or back) for user IDs; raises ValueError when unmapped.
    :param gid: the same for group IDs.
    """

    def __init__(self, stream: IO[bytes], uid: Callable[[int], int], gid: Callable[[int], int]) -> None:
        super().__init__()
        self._stream = stream
        self._maps = {"uid": uid, "gid": gid}
        self._chunks = self._generate()
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Close the stream read from too (a tree's tar releases its mount when closed)."""
        if not self.closed:
            close = getattr(self._stream, "close", None)
            if close is not None:
                close()
        super().close()

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._buffer))
        buffer[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def _shift(self, kind: str, value: int) -> int:
        try:
            return self._maps[kind](value)
        except ValueError as exc:
            raise InvalidParameter(f"cannot map the owner of a file through the user namespace: {exc}") from None

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self._stream.read(n - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def _generate(self) -> Iterator[bytes]:
        while True:
            header = self._exactly(BLOCK)
            if len(header) < BLOCK or header == b"\0" * BLOCK:
                # The end (two zero blocks, padding) or a truncated archive: pass the rest as it is,
                # the reader reports what is wrong with it.
                yield header
                while chunk := self._stream.read(1 << 16):
                    yield chunk
                return
            size = _number(header[_SIZE[0] : _SIZE[0] + _SIZE[1]])
            padded = -(-size // BLOCK) * BLOCK
            kind = header[_TYPE : _TYPE + 1]
            if kind in (b"x", b"g"):
                data = self._exactly(padded)[:size]
                data = _pax(data, self._shift)
                out = bytearray(header)
                out[_SIZE[0] : _SIZE[0] + _SIZE[1]] = _encode(len(data), _SIZE[1])
                _checksum(out)
                yield bytes(out) + data + b"\0" * (-len(data) % BLOCK)
                continue
            if kind not in (b"L", b"K"):  # GNU long names carry no owner
                out = bytearray(header)
                for name, (at, width) in (("uid", _UID), ("gid", _GID)):
                    out[at : at + width] = _encode(self._shift(name, _number(header[at : at + width])), width)
                _checksum(out)
                header = bytes(out)
            yield header
            left = padded
            while left:
                chunk = self._stream.read(min(left, 1 << 16))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk
