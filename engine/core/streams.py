"""Job streams: an :class:`Output` fans writes out to several writers, an
:class:`Input` reads from one source (seed ch. 3 §5.5.3, ``engine/streams.go``).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import IO, Any

from engine.utils.jsonout import encode


class Output:
    """A write-only stream that copies every write to all its writers.

    Writers are anything with ``write(bytes)``; ``flush()`` and ``close()`` are
    called when they exist. A writer that raises is dropped (a client that went
    away must not stop the job), and the first error is kept in
    :attr:`error`.
    """

    def __init__(self) -> None:
        self._writers: list[Any] = []
        self._lock = threading.Lock()
        self.closed = False
        self.error: BaseException | None = None

    def add(self, writer: Any) -> Any:
        """Add a writer and return it (handy for ``buf = out.add(BytesIO())``)."""
        with self._lock:
            self._writers.append(writer)
        return writer

    def add_buffer(self) -> io.BytesIO:
        """Add and return an in-memory buffer that collects everything written."""
        return self.add(io.BytesIO())

    def add_callback(self, fn: Callable[[bytes], Any]) -> None:
        """Call ``fn(data)`` for every write."""
        self.add(_CallbackWriter(fn))

    @property
    def used(self) -> bool:
        return bool(self._writers)

    def write(self, data: bytes | str) -> int:
        if isinstance(data, str):
            data = data.encode()
        with self._lock:
            writers = list(self._writers)
        for w in writers:
            try:
                w.write(data)
                flush = getattr(w, "flush", None)
                if flush is not None:
                    flush()
            except (OSError, ValueError) as exc:
                # The reader went away (a closed socket, a closed pipe).
                if self.error is None:
                    self.error = exc
                with self._lock:
                    if w in self._writers:
                        self._writers.remove(w)
        return len(data)

    def write_json(self, obj: Any) -> None:
        """Write ``obj`` as one line of JSON (the API's stream framing)."""
        self.write(encode(obj) + b"\n")

    def printf(self, fmt: str, *args: object) -> None:
        self.write((fmt % args) if args else fmt)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            writers, self._writers = self._writers, []
            self.closed = True
        for w in writers:
            close = getattr(w, "close", None)
            if close is not None and not isinstance(w, io.BytesIO):
                try:
                    close()
                except OSError:
                    pass


class _CallbackWriter:
    def __init__(self, fn: Callable[[bytes], Any]) -> None:
        self.fn = fn

    def write(self, data: bytes) -> int:
        self.fn(data)
        return len(data)


class Input:
    """A read-only stream with one source, set with :meth:`add`.

    Reading before a source is set returns EOF, as the seed's Input does.
    """

    def __init__(self, source: IO[bytes] | None = None) -> None:
        self._src = source
        self._lock = threading.Lock()

    def add(self, source: IO[bytes]) -> None:
        with self._lock:
            self._src = source

    @property
    def source(self) -> IO[bytes] | None:
        return self._src

    def read(self, n: int = -1) -> bytes:
        src = self._src
        if src is None:
            return b""
        return src.read(n)

    def read1(self, n: int = 65536) -> bytes:
        src = self._src
        if src is None:
            return b""
        read1 = getattr(src, "read1", None)
        return read1(n) if read1 is not None else src.read(n)

    def close(self) -> None:
        src = self._src
        if src is not None and hasattr(src, "close"):
            src.close()
