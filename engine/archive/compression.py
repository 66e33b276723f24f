"""Compressed layer streams: detect gzip, bzip2, xz or zstd and read the tar inside.

A layer arrives compressed or not; :class:`LayerStream` finds out from its
first bytes and delivers the tar's bytes, counted, with a corrupt or cut
stream reported as :class:`~engine.errors.InvalidParameter` in Go's words
("unexpected EOF", "corrupt ... layer stream"), while a failure of the
caller's own stream (a broken connection) stays what it is.
:func:`decompress_stream` wraps it in a buffered reader for callers that only
want the bytes (the image loader, registry pulls).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Callable
from typing import IO, Any

import zstandard

from engine.errors import InvalidParameter, TruncatedArchive

_CHUNK = 1 << 20


_MAGIC = (
    (b"\x1f\x8b\x08", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


def detect_compression(head: bytes) -> str:
    """The compression of a stream starting with ``head``: gzip, bzip2, xz, zstd or none."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    # A zstd stream may open with a skippable frame (magic 0x184D2A50-5F).
    if len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50:
        return "zstd"
    return "none"


class _ZstdFrames:
    """Follows the frame and block headers of a zstd stream to tell a complete stream from a cut one.

    The zstd decoder returns end-of-data for a stream cut between blocks, and
    blocks hold 128 KiB, a multiple of the tar block: the tar would look
    complete too. Go's decoder (and so Docker) calls that "unexpected EOF";
    this walker, fed every compressed byte, lets us say the same. It only
    reads headers (RFC 8878 §3.1) and skips block contents.
    """

    MAGIC = b"\x28\xb5\x2f\xfd"

    def __init__(self) -> None:
        self._want = 4
        self._buf = b""
        self._skip = 0
        self._handler: Callable[[bytes], None] = self._magic
        self._checksum = False
        #: Not a zstd stream we understand: the decoder will say what is wrong.
        self.lost = False

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end and not self.lost:
            if self._skip:
                take = min(self._skip, end - pos)
                self._skip -= take
                pos += take
                continue
            take = min(self._want - len(self._buf), end - pos)
            self._buf += data[pos : pos + take]
            pos += take
            if len(self._buf) == self._want:
                header, self._buf = self._buf, b""
                self._handler(header)

    def complete(self) -> bool:
        """Whether the bytes so far end exactly between two frames."""
        return self.lost or (self._handler == self._magic and not self._buf and not self._skip)

    def _expect(self, size: int, handler: Callable[[bytes], None]) -> None:
        self._want, self._handler = size, handler

    def _magic(self, header: bytes) -> None:
        if header == self.MAGIC:
            self._expect(1, self._descriptor)
        elif header[1:4] == b"\x2a\x4d\x18" and header[0] & 0xF0 == 0x50:
            self._expect(4, self._skippable)
        else:
            self.lost = True

    def _skippable(self, header: bytes) -> None:
        self._skip = int.from_bytes(header, "little")
        self._expect(4, self._magic)

    def _descriptor(self, header: bytes) -> None:
        flags = header[0]
        single_segment = bool(flags & 0x20)
        self._checksum = bool(flags & 0x04)
        window = 0 if single_segment else 1
        dictionary = (0, 1, 2, 4)[flags & 0x03]
        content_size = ((1 if single_segment else 0), 2, 4, 8)[flags >> 6]
        self._skip = window + dictionary + content_size
        self._expect(3, self._block)

    def _block(self, header: bytes) -> None:
        value = int.from_bytes(header, "little")
        last, kind, size = value & 1, (value >> 1) & 3, value >> 3
        self._skip = 1 if kind == 1 else size  # an RLE block holds one byte
        if last:
            self._skip += 4 if self._checksum else 0
            self._expect(4, self._magic)
        else:
            self._expect(3, self._block)


class _Source(io.RawIOBase):
    """The caller's stream with the bytes already read for magic detection put back."""

    def __init__(self, stream: IO[bytes], head: bytes, tap: Callable[[bytes], None] | None = None) -> None:
        self._stream = stream
        self._head = head
        self._tap = tap
        #: Set when the caller's stream itself raised, so its errors are never
        #: mistaken for corrupt compressed data.
        self.failed = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            data, self._head = self._head[: len(buffer)], self._head[len(buffer) :]
        else:
            try:
                data = self._stream.read(len(buffer))
            except BaseException:
                self.failed = True
                raise
        n = len(data)
        buffer[:n] = data
        if self._tap is not None and n:
            self._tap(data)
        return n


_CORRUPT = (EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError, gzip.BadGzipFile)


class LayerStream(io.RawIOBase):
    """The decompressed bytes of a layer, counted, with codec errors as :class:`InvalidParameter`."""

    def __init__(self, stream: IO[bytes]) -> None:
        head = b""
        while len(head) < 6:
            more = stream.read(6 - len(head))
            if not more:
                break
            head += more
        self.compression = detect_compression(head)
        self._frames = _ZstdFrames() if self.compression == "zstd" else None
        self._source = _Source(stream, head, self._frames.feed if self._frames is not None else None)
        source: Any = self._source
        reader: Any
        if self.compression == "gzip":
            reader = gzip.GzipFile(fileobj=source, mode="rb")
        elif self.compression == "bzip2":
            reader = bz2.BZ2File(source)
        elif self.compression == "xz":
            reader = lzma.LZMAFile(source)
        elif self.compression == "zstd":
            reader = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True, closefd=False)
        else:
            reader = source
        self._reader = reader
        #: Bytes of tar delivered so far.
        self.count = 0
        self.eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data = self._reader.read(len(buffer))
        except _CORRUPT as exc:
            if isinstance(exc, EOFError):
                raise TruncatedArchive(f"unexpected EOF in {self.compression} layer stream") from exc
            raise InvalidParameter(f"corrupt {self.compression} layer stream: {exc}") from exc
        except OSError as exc:
            # bz2 reports bad data as a bare OSError; the caller's own
            # stream failing (a broken connection) must stay what it is.
            if self._source.failed or exc.errno is not None:
                raise
            raise InvalidParameter(f"corrupt {self.compression} layer stream: {exc}") from exc
        n = len(data)
        buffer[:n] = data
        self.count += n
        if n == 0:
            if self._frames is not None and not self._frames.complete():
                raise InvalidParameter("unexpected EOF in zstd layer stream")
            self.eof = True
        return n

    def drain(self) -> None:
        """Read to the end, so that the codec checks its trailer (gzip's CRC)."""
        while self.read(_CHUNK):
            pass


def decompress_stream(stream: IO[bytes]) -> IO[bytes]:
    """Wrap a possibly compressed layer stream into a reader of its tar bytes.

    :raises InvalidParameter: while reading, when the compressed data is corrupt.
    """
    return io.BufferedReader(LayerStream(stream), _CHUNK)
