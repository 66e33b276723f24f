"""Docker's json-file log driver, as the shim writes it.

One JSON object per line, in the file ``<container dir>/<id>-json.log``::

    {"log":"hi\\n","stream":"stdout","time":"2026-11-30T06:03:41.123456789Z"}

Output is split at newlines (each entry keeps its ``\\n``); a line longer
than 16 KiB is written as several entries without one (moby's partial
messages), and what is left at EOF is flushed as is. Rotation follows
moby's ``loggerutils.LogFile``: before an entry is written, if the file has
reached ``max_size`` it is renamed to ``<path>.1`` (``.1`` to ``.2``, ...,
keeping ``max_file - 1`` old files) and a new file is started; with
``max_file == 1`` the file is simply truncated. With ``compress`` the
rotated files are gzipped (``<path>.1.gz``, ...), the newest in a thread
of its own so that the container's output is not held up; the next
rotation waits for it.

The ``local`` driver's file differs only in how an entry is encoded
(:mod:`engine.shim.locallog`), so it subclasses :class:`JSONLogFile`.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import threading

LOG = logging.getLogger(__name__)

#: Longest entry written without a newline (moby's copier buffer).
MAX_PARTIAL = 16 * 1024


def utf8_boundary(data: bytes | bytearray, end: int) -> int:
    """The largest cut ``<= end`` that does not split a UTF-8 sequence of ``data``.

    Used for partial entries only, so that a character straddling the 16 KiB
    mark is logged whole in the next entry instead of as two replacement
    characters. Invalid data (no lead byte within 3 bytes) is cut at ``end``.
    """
    for back in range(min(3, end)):
        byte = data[end - 1 - back]
        if byte < 0x80:
            return end
        if byte >= 0xC0:  # a lead byte: is its sequence complete before end?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return end if back + 1 >= need else end - 1 - back
    return end


class JSONLogFile:
    """The log file with rotation; entries are appended with :meth:`write`.

    Write errors (a full disk) are logged once and otherwise ignored: the
    container must never block or die because its log cannot be written.

    :param path: the log file (created 0640, appended to if it exists).
    :param max_size: rotate once the file holds this many bytes; 0 = never.
    :param max_file: how many files exist at most, the current one included.
    :param compress: gzip the rotated files.
    """

    def __init__(self, path: str, max_size: int = 0, max_file: int = 1, compress: bool = False) -> None:
        self.path = path
        self.max_size = max(0, int(max_size))
        self.max_file = max(1, int(max_file))
        self.compress = bool(compress) and self.max_file > 1
        self.fd = self._open(os.O_APPEND)
        self.size = os.fstat(self.fd).st_size
        self._failed = False
        self._compressing: threading.Thread | None = None

    def encode(self, stream: str, data: bytes, when: str) -> bytes:
        """One entry as it is written to the file (a json-file line)."""
        return (
            json.dumps(
                {"log": data.decode("utf-8", "replace"), "stream": stream, "time": when},
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode()
            + b"\n"
        )

    def _open(self, extra: int) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | extra, 0o640)

    def write(self, entries: list[tuple[str, bytes, str]]) -> None:
        """Append entries ``(stream, data, time)``, rotating between them when full."""
        batch = bytearray()
        for stream, data, when in entries:
            if self.max_size and self.size >= self.max_size:
                self._flush(batch)
                batch.clear()
                self._rotate()
            line = self.encode(stream, data, when)
            batch += line
            self.size += len(line)
        self._flush(batch)

    def _flush(self, batch: bytearray) -> None:
        if not batch or self.fd < 0:
            return
        view = memoryview(batch)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            if not self._failed:
                LOG.error("cannot write the container log %s: %s; output is being lost", self.path, exc)
                self._failed = True
        else:
            self._failed = False

    def _rotate(self) -> None:
        os.close(self.fd)
        self.fd = -1
        self._wait_compression()
        ext = ".gz" if self.compress else ""
        try:
            if self.max_file > 1:
                # .{n-2} -> .{n-1} (replacing the oldest), ..., .1 -> .2, then the file -> .1
                for i in range(self.max_file - 1, 1, -1):
                    try:
                        os.rename(f"{self.path}.{i - 1}{ext}", f"{self.path}.{i}{ext}")
                    except FileNotFoundError:
                        pass
                os.rename(self.path, f"{self.path}.1")
                if self.compress:
                    self._compressing = threading.Thread(
                        target=_gzip_file, args=(f"{self.path}.1",), name="log-compress", daemon=True
                    )
                    self._compressing.start()
        except OSError as exc:
            LOG.warning("cannot rotate %s: %s; truncating it", self.path, exc)
        try:
            self.fd = self._open(os.O_TRUNC | os.O_APPEND)
        except OSError as exc:
            LOG.error("cannot reopen the container log %s: %s; output is being lost", self.path, exc)
        self.size = 0

    def _wait_compression(self) -> None:
        if self._compressing is not None:
            self._compressing.join()
            self._compressing = None

    def close(self) -> None:
        """Close the file (later writes are dropped), once a compression under way is done."""
        self._wait_compression()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _gzip_file(path: str) -> None:
    """``path`` -> ``path.gz`` (written aside, then renamed over), then ``path`` goes."""
    tmp = f"{path}.gz.tmp"
    try:
        with open(path, "rb") as src, gzip.open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.rename(tmp, f"{path}.gz")
        os.unlink(path)
    except OSError as exc:
        LOG.warning("cannot compress the rotated log %s: %s; it stays as it is", path, exc)
        try:
            os.unlink(tmp)
        except OSError:
            pass


class LogStream:
    """Splits one output stream into log entries.

    :param log: where the entries go.
    :param name: ``stdout`` or ``stderr``.
    """

    def __init__(self, log: JSONLogFile, name: str) -> None:
        self.log = log
        self.name = name
        self.partial = bytearray()

    def feed(self, data: bytes, when: str) -> None:
        """Log every complete line of ``data`` (with what came before it) stamped ``when``."""
        buf = self.partial
        buf += data
        entries = []
        start = 0
        while True:
            # Only a newline within 16 KiB ends an entry: longer lines are
            # split however the output happened to be read.
            nl = buf.find(b"\n", start, start + MAX_PARTIAL)
            if nl >= 0:
                entries.append((self.name, bytes(buf[start : nl + 1]), when))
                start = nl + 1
            elif len(buf) - start >= MAX_PARTIAL:
                cut = utf8_boundary(buf, start + MAX_PARTIAL)
                entries.append((self.name, bytes(buf[start:cut]), when))
                start = cut
            else:
                break
        del buf[:start]
        if entries:
            self.log.write(entries)

    def flush(self, when: str) -> None:
        """Log what is left without a newline (at EOF)."""
        if self.partial:
            self.log.write([(self.name, bytes(self.partial), when)])
            self.partial.clear()
