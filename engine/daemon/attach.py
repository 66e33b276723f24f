"""Streams between a hijacked client connection and a container's stdio.

For ``attach`` the other end is the container's shim (:mod:`engine.shim`);
for ``exec`` it is the pipes or pty of the exec process. Output goes to the
client in stdcopy frames (``[stream, 0, 0, 0, size BE32]``) or raw with a
TTY; stdin flows the other way, a client half-close (EOF) closes the
process's stdin, and the detach keys (default ctrl-p ctrl-q) end the attach
without stopping anything.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from engine.errors import InvalidParameter
from engine.utils.sockets import readable, send_all
from engine.utils.stdcopy import frame

LOG = logging.getLogger(__name__)

DEFAULT_DETACH_KEYS = b"\x10\x11"  # ctrl-p, ctrl-q


def parse_detach_keys(spec: str | None) -> bytes:
    """``ctrl-p,ctrl-q`` -> ``b"\\x10\\x11"`` (moby ``term.ToBytes``)."""
    if not spec:
        return DEFAULT_DETACH_KEYS
    out = bytearray()
    for key in spec.split(","):
        key = key.strip()
        if len(key) == 1:
            out.append(ord(key))
        elif key.lower().startswith("ctrl-") and len(key) == 6:
            ch = key[5].lower()
            if "a" <= ch <= "z":
                out.append(ord(ch) - ord("a") + 1)
            elif ch in "@[\\]^_":
                out.append({"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}[ch])
            else:
                raise InvalidParameter(f"Invalid escape keys ({spec}) provided")
        else:
            raise InvalidParameter(f"Invalid escape keys ({spec}) provided")
    return bytes(out)


class _DetachScanner:
    """Finds the detach sequence in stdin, holding back a partial match."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        buf = self.held + data
        self.held = b""
        idx = buf.find(self.keys) if self.keys else -1
        if idx >= 0:
            return buf[:idx], True
        for n in range(min(len(self.keys) - 1, len(buf)), 0, -1):
            if buf.endswith(self.keys[:n]):
                self.held = buf[-n:]
                return buf[:-n], False
        return buf, False


class StdinPump(threading.Thread):
    """Client socket -> ``write``; EOF -> ``close``; detach keys -> ``detach``."""

    def __init__(
        self,
        sock: Any,
        write: Callable[[bytes], None],
        close: Callable[[], None],
        detach_keys: bytes | None,
        on_detach: Callable[[], None],
    ) -> None:
        super().__init__(name="attach-stdin", daemon=True)
        self.sock = sock
        self.write = write
        self.close = close
        self.scanner = _DetachScanner(detach_keys) if detach_keys else None
        self.on_detach = on_detach
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            while True:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.close()
                    return
                if self.scanner is not None:
                    data, detach = self.scanner.feed(data)
                    if data:
                        self.write(data)
                    if detach:
                        self.on_detach()
                        return
                else:
                    self.write(data)
        except OSError as exc:
            LOG.debug("stdin pump ended: %s", exc)
        finally:
            self.finished.set()


def pump_frames(
    sock: Any,
    frames: Iterable[tuple[int, bytes]],
    tty: bool,
    stdout: bool,
    stderr: bool,
    stop: threading.Event | None = None,
) -> bytes | None:
    """Forward output frames to the client until the exit frame; returns its payload."""
    for stream, data in frames:
        if stop is not None and stop.is_set():
            return None
        if stream == 3:
            return data
        if (stream == 1 and not stdout) or (stream == 2 and not stderr):
            continue
        if not send_all(sock, frame(stream if not tty else 1, data, tty)):
            return None
    return None


def pump_fds(sock: Any, fds: dict[int, int], tty: bool, stdout: bool, stderr: bool, done: Callable[[], bool]) -> None:
    """Forward what exec process fds (fd -> stream) produce until they all reach EOF."""
    open_fds = dict(fds)
    client_ok = True
    finished_at = None
    while open_fds:
        if finished_at is None and done():
            finished_at = time.monotonic()
        # Processes the exec left behind may hold its pipes open: once it
        # exited, drain for a moment, then let the stream end.
        if finished_at is not None and time.monotonic() - finished_at > 1.0:
            break
        ready = readable(list(open_fds), 0.2)
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                del open_fds[fd]
                continue
            stream = open_fds[fd]
            if client_ok and ((stream == 1 and stdout) or (stream == 2 and stderr)):
                client_ok = send_all(sock, frame(stream, data, tty))
