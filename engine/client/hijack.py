"""Hijacked streams: ``attach`` and ``exec start`` after the daemon's ``101 UPGRADED``.

The docker CLI's ``hijackedIOStreamer`` (``cli/command/container/hijack.go``)
in Python: one thread copies the connection to our stdout/stderr (stdcopy
frames demultiplexed by :mod:`engine.utils.stdcopy` unless the container
has a TTY), one copies our stdin
to the connection and half-closes it at EOF, the local terminal is put in
raw mode for ``-it`` and the detach keys (``ctrl-p,ctrl-q``) end the session
without stopping the container. Around it: terminal resizes (``SIGWINCH``)
and signal forwarding (``--sig-proxy``) as ``POST .../resize`` and
``POST .../kill`` calls, made from a worker thread because Python runs
signal handlers in the main thread, possibly in the middle of a request.
"""

from __future__ import annotations

import io
import os
import queue
import signal
import socket
import sys
import termios
import threading
import tty
from collections.abc import Callable
from typing import IO, Any

from engine.client.errors import ClientError
from engine.utils.stdcopy import StreamError, demux

#: ctrl-p ctrl-q, docker's default detach sequence.
DEFAULT_DETACH_KEYS = b"\x10\x11"


class HijackError(ClientError):
    """The daemon sent an error frame in the stream (stream type 3)."""


class Detached(Exception):
    """The user typed the detach sequence."""


class HijackedConnection:
    """The raw byte stream of a hijacked request.

    Reads go through the response's buffered reader, which may already
    hold bytes the daemon sent together with the ``101`` headers; writes
    and the half-close go to the socket itself.
    """

    def __init__(self, response: Any) -> None:
        self.response = response
        fp = response.raw._fp.fp
        self._reader: io.BufferedReader = fp
        raw = fp.raw
        self.sock: socket.socket = getattr(raw, "_sock", raw)
        self._closed = False
        try:
            self.sock.settimeout(None)
        except OSError:
            pass

    def read(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes; ``b""`` once the daemon has closed its side."""
        try:
            return self._reader.read1(n)
        except (OSError, ValueError):
            return b""

    def read_exact(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or fewer at EOF."""
        chunks = []
        while n > 0:
            chunk = self.read(n)
            if not chunk:
                break
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close_write(self) -> None:
        """Half-close: the daemon sees EOF on the container's stdin, output keeps flowing."""
        import ssl

        if isinstance(self.sock, ssl.SSLSocket):
            # shutdown() would tear down the TLS session, and with it our reading side.
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.response.close()
        except Exception:  # noqa: BLE001 - closing a dead connection may fail in any way
            pass


def hijack(
    client: Any,
    path: str,
    params: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
) -> HijackedConnection:
    """``POST path`` with ``Upgrade: tcp``; the connection once the daemon has answered ``101``.

    :raises docker.errors.APIError: for an error status.
    """
    headers = {"Connection": "Upgrade", "Upgrade": "tcp"}
    url = client._url(path) if not path.startswith("http") else path
    if body is not None:
        resp = client._post_json(url, body, params=params, headers=headers, stream=True)
    else:
        headers["Content-Type"] = "text/plain"
        resp = client._post(url, params=params, headers=headers, stream=True)
    client._raise_for_status(resp)
    return HijackedConnection(resp)


def stdcopy(read: Callable[[int], bytes], stdout: IO[bytes] | None, stderr: IO[bytes] | None) -> None:
    """moby's ``stdcopy.StdCopy`` (:func:`engine.utils.stdcopy.demux`) with the client's error.

    :param read: returns exactly the bytes asked for, fewer only at EOF.
    :raises HijackError: on a system-error frame (type 3), with its text.
    """
    try:
        demux(read, stdout, stderr)
    except StreamError as exc:
        raise HijackError(str(exc)) from None


def parse_detach_keys(keys: str) -> bytes:
    """moby/term ``ToBytes``: ``ctrl-p,ctrl-q`` -> ``b"\\x10\\x11"``; ``DEL`` and single characters too."""
    names = (
        ["ctrl-@"]
        + [f"ctrl-{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
        + ["ctrl-[", "ctrl-\\", "ctrl-]", "ctrl-^", "ctrl-_"]
    )
    out = bytearray()
    for key in keys.split(","):
        if len(key) == 1:
            out += key.encode()
        elif key in names:
            out.append(names.index(key))
        elif key == "DEL":
            out.append(127)
        else:
            raise ClientError(f"Unknown character: '{key}'")
    return bytes(out)


class EscapeProxy:
    """moby/term ``EscapeProxy``: hold back a partial detach sequence, report a complete one."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.pos = 0

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """``(bytes to forward, detached)``."""
        out = bytearray()
        for byte in data:
            if self.keys and byte == self.keys[self.pos]:
                self.pos += 1
                if self.pos == len(self.keys):
                    self.pos = 0
                    return bytes(out), True
                continue
            if self.pos:
                # Not the sequence after all: the held-back bytes were input.
                out += self.keys[: self.pos]
                self.pos = 0
                if self.keys and byte == self.keys[0]:
                    self.pos = 1
                    continue
            out.append(byte)
        return bytes(out), False


class RawTerminal:
    """Put a terminal in raw mode (``cfmakeraw``, as moby/term ``MakeRaw``); :meth:`restore` undoes it once."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved: list[Any] | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> RawTerminal:
        self.saved = termios.tcgetattr(self.fd)
        tty.setraw(self.fd, termios.TCSANOW)
        return self

    def restore(self) -> None:
        with self._lock:
            if self.saved is not None:
                try:
                    termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
                except termios.error:
                    pass
                self.saved = None

    def __exit__(self, *exc: object) -> None:
        self.restore()


class Streamer:
    """Copy between our standard streams and a hijacked connection (the CLI's ``hijackedIOStreamer``).

    :param stdin_fd: read input from this descriptor; None if stdin is not attached.
    :param stdout: where the container's stdout goes (None: not attached).
    :param stderr: where its stderr goes (None: not attached).
    :param tty: the container has a TTY: no frames, raw local terminal.
    :param detach_keys: the detach sequence, checked only with a TTY (as docker does;
        without one the daemon watches for it).
    """

    def __init__(
        self,
        conn: HijackedConnection,
        stdin_fd: int | None,
        stdout: IO[bytes] | None,
        stderr: IO[bytes] | None,
        tty: bool,
        detach_keys: bytes = DEFAULT_DETACH_KEYS,
    ) -> None:
        self.conn = conn
        self.stdin_fd = stdin_fd
        self.stdout = stdout
        self.stderr = stderr
        self.tty = tty
        self.detach_keys = detach_keys or DEFAULT_DETACH_KEYS
        self.raw: RawTerminal | None = None
        self._events: queue.SimpleQueue[tuple[str, BaseException | None]] = queue.SimpleQueue()

    def _restore(self) -> None:
        if self.raw is not None:
            self.raw.restore()

    def _output(self) -> None:
        err: BaseException | None = None
        try:
            if self.tty:
                while True:
                    chunk = self.conn.read()
                    if not chunk:
                        break
                    if self.stdout is not None:
                        self.stdout.write(chunk)
                        self.stdout.flush()
                # Restore the terminal as soon as the output ends, so what
                # follows is printed normally.
                self._restore()
            else:
                stdcopy(self.conn.read_exact, self.stdout, self.stderr)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            err = exc
        self._events.put(("output", err))

    def _input(self) -> None:
        proxy = EscapeProxy(self.detach_keys) if self.tty and self.stdin_fd is not None else None
        if self.stdin_fd is not None:
            try:
                while True:
                    try:
                        data = os.read(self.stdin_fd, 32 * 1024)
                    except InterruptedError:
                        continue
                    if not data:
                        break
                    if proxy is not None:
                        data, detached = proxy.feed(data)
                        if data:
                            self.conn.write(data)
                        if detached:
                            self._restore()
                            self._events.put(("detached", None))
                            return
                    else:
                        self.conn.write(data)
            except OSError:
                # The connection is gone; the output side reports why.
                pass
            self._restore()
        self.conn.close_write()
        self._events.put(("input", None))

    def run(self) -> None:
        """Stream until the output ends (or stdin ends with no output attached).

        :raises Detached: when the user typed the detach keys.
        :raises HijackError: for an error frame from the daemon.
        """
        if self.stdin_fd is not None and self.tty and os.isatty(self.stdin_fd):
            self.raw = RawTerminal(self.stdin_fd).__enter__()
        try:
            has_output = self.stdout is not None or self.stderr is not None
            if has_output:
                threading.Thread(target=self._output, name="hijack-out", daemon=True).start()
            threading.Thread(target=self._input, name="hijack-in", daemon=True).start()
            while True:
                kind, err = self._events.get()
                if kind == "output":
                    if err is not None:
                        raise err
                    return
                if kind == "detached":
                    raise Detached()
                if kind == "input" and not has_output:
                    return
        finally:
            self._restore()

    def stop(self) -> None:
        """End the session from outside (e.g. the container exited and no output is attached)."""
        self._events.put(("output", None))


def terminal_size(stream: IO[Any] | None = None) -> tuple[int, int]:
    """``(height, width)`` of the terminal on ``stream`` (our stdout), ``(0, 0)`` if it is none."""
    stream = stream or sys.stdout
    try:
        if not stream.isatty():
            return 0, 0
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return 0, 0
    return size.lines, size.columns


#: Signals forwarded by --sig-proxy. Go's CLI relays every signal but
#: SIGCHLD/SIGPIPE/SIGURG; the synchronous faults (SEGV, BUS...) and the
#: terminal-read ones (TTIN/TTOU) cannot be caught safely in Python, and
#: SIGWINCH becomes a resize instead.
PROXY_SIGNALS = tuple(
    getattr(signal, name)
    for name in (
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGUSR1",
        "SIGUSR2",
        "SIGTERM",
        "SIGALRM",
        "SIGTSTP",
        "SIGCONT",
        "SIGVTALRM",
        "SIGPROF",
        "SIGIO",
        "SIGPWR",
        "SIGXCPU",
        "SIGXFSZ",
    )
    if hasattr(signal, name)
)


class Forwarder:
    """Forward signals and terminal resizes to the daemon from a worker thread.

    Use as a context manager from the main thread; handlers are restored on exit.
    """

    def __init__(self, client: Any, ident: str, exec_resize: bool = False) -> None:
        self.client = client
        self.ident = ident
        self.exec_resize = exec_resize
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._saved: dict[int, Any] = {}
        self._thread = threading.Thread(target=self._work, name="forwarder", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            kind, value = self._queue.get()
            if kind == "stop":
                return
            try:
                if kind == "signal":
                    name = signal.Signals(value).name[3:]
                    self.client._raise_for_status(
                        self.client._post(self.client._url("/containers/{0}/kill", self.ident), params={"signal": name})
                    )
                elif kind == "resize":
                    self.resize_now()
            except Exception:  # noqa: BLE001 - like the CLI, a failed forward is only logged at debug level
                pass

    def resize_now(self) -> bool:
        """Send our terminal's size; False if there is none or the daemon refused."""
        height, width = terminal_size()
        if not height and not width:
            return True
        path = "/exec/{0}/resize" if self.exec_resize else "/containers/{0}/resize"
        try:
            resp = self.client._post(self.client._url(path, self.ident), params={"h": height, "w": width})
            self.client._raise_for_status(resp)
        except Exception:  # noqa: BLE001 - a resize failure is a warning at most
            return False
        return True

    def _install(self, signum: int, kind: str) -> None:
        try:
            self._saved[signum] = signal.signal(signum, lambda s, _f: self._queue.put((kind, s)))
        except (OSError, ValueError):
            pass

    def proxy_signals(self) -> None:
        """Forward :data:`PROXY_SIGNALS` to the container as ``POST /containers/{id}/kill``."""
        for signum in PROXY_SIGNALS:
            self._install(signum, "signal")

    def monitor_resize(self) -> None:
        """Resize now (retrying like the CLI's ``initTtySize``) and on every SIGWINCH."""

        def first() -> None:
            import time

            for attempt in range(11):
                if self.resize_now():
                    return
                time.sleep((attempt + 1) * 0.01)
            print("failed to resize tty, using default size", file=sys.stderr)

        threading.Thread(target=first, name="resize", daemon=True).start()
        self._install(signal.SIGWINCH, "resize")

    def close(self) -> None:
        for signum, handler in self._saved.items():
            try:
                signal.signal(signum, handler)
            except (OSError, ValueError, TypeError):
                pass
        self._saved.clear()
        self._queue.put(("stop", None))

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
