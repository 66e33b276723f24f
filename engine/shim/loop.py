"""The shim's I/O loop: container output to the log and to clients, stdin back in.

One thread, one epoll loop, every descriptor non-blocking:

* the container's output (the stdout and stderr pipes, or the pty master)
  is read as it comes, split into json-file log entries and sent to every
  attached client as frames (:mod:`engine.shim.protocol`);
* ``shim.sock`` is accepted and each connection's request served
  (``attach``, ``state``, ``wait``, ``resize``);
* stdin frames from attached clients are written to the container's stdin.

Nothing here ever blocks on a peer: a client that does not read gets up to
:data:`CLIENT_BUFFER` bytes queued and is then dropped; stdin that the
container does not read is queued up to :data:`STDIN_HIGH` bytes, after
which the loop stops reading from clients that attached stdin (they block in
``send``; the container and the log go on).

The main thread talks to the loop through :meth:`IOLoop.notify_exited` and
:meth:`IOLoop.finish` (a command queue and a wake-up pipe) and learns that
the output is drained from :attr:`IOLoop.drained`.
"""

from __future__ import annotations

import _thread
import collections
import errno
import fcntl
import functools
import json
import logging
import os
import select
import socket
import struct
import termios
import time
from collections.abc import Callable
from typing import Any

from engine.shim import protocol
from engine.shim.jsonlog import LogStream
from engine.utils.timefmt import rfc3339nano_ns

LOG = logging.getLogger(__name__)

#: Output queued for one client before it is dropped as too slow.
CLIENT_BUFFER = 4 * 1024 * 1024
#: Stdin queued for the container before clients attached to stdin are paused.
STDIN_HIGH = 1024 * 1024
#: Connections served at once; more are closed at accept.
MAX_CLIENTS = 256
#: Bytes read from the container's output per read(2).
READ_SIZE = 64 * 1024

#: The events a handler is called with (as :mod:`selectors` has them; epoll's directly, without
#: that module's objects: the shim keeps every page it writes).
_READ = 1
_WRITE = 2


class Flag:
    """A flag that threads set and wait for: :class:`threading.Event`'s use here, on bare locks
    (the shim builds no :mod:`threading` machinery: every page it writes is its own)."""

    def __init__(self) -> None:
        self._set = False
        self._mutex = _thread.allocate_lock()
        self._gate = _thread.allocate_lock()
        self._gate.acquire()  # released once, by set()

    def set(self) -> None:
        with self._mutex:
            if not self._set:
                self._set = True
                self._gate.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the flag is set, waiting up to ``timeout`` seconds (None: for ever)."""
        if self._set:
            return True
        if self._gate.acquire(True, -1 if timeout is None else max(0.0, timeout)):
            self._gate.release()
            return True
        return self._set


class Output:
    """One output of the container: a descriptor, its frame kind, its log stream.

    :param fd: the shim's (read) end of the stdout or stderr pipe, or the pty master.
    :param kind: :data:`~engine.shim.protocol.STREAM_STDOUT` or ``STREAM_STDERR``.
    :param log: where its lines are logged; None when logging is off.
    """

    def __init__(self, fd: int, kind: int, log: LogStream | None) -> None:
        self.fd = fd
        self.kind = kind
        self.log = log
        self.eof = False


class Client:
    """One connection on ``shim.sock`` (or one attached before start)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        #: None until the request line arrived; then "attach", "wait" or "answered".
        self.kind: str | None = None
        self.stdout = False
        self.stderr = False
        #: Whether stdin frames from this client still go to the container.
        self.stdin_open = False
        #: An attach made before start (:meth:`IOLoop.add_attached`) that sends stdin.
        self.wants_stdin = False
        self.reading = True
        #: Close once ``outbuf`` is sent.
        self.closing = False
        self.closed = False


class IOLoop:
    """Pumps a container's stdio; see the module docstring.

    :param outputs: the container's outputs.
    :param stdin_fd: the shim's end of the container's stdin (a pipe's write
        end, or ``console_fd``), None when stdin is not open.
    :param tty: whether the container has a pty (its stdin then cannot be
        closed on its own).
    :param console_fd: with a tty, a duplicate of the pty master for writing
        and resizing (the master itself is an output and is closed at its EOF).
    :param stdin_once: close the container's stdin when a client attached to
        it closes its stdin or goes away (Docker's ``StdinOnce``).
    :param listener: the listening ``shim.sock``.
    :param socket_path: its path, unlinked when the loop ends.
    :param state: the ``state`` answer's fields (``Pid``, ``ShimPid``, ``StartedAt``).
    :param drain_timeout: how long output is still read after the container's
        first process exited, for processes that outlive it and keep the
        pipes open (outside the container's PID namespace).
    :param finish_timeout: how long clients get to read the exit frame.
    """

    def __init__(
        self,
        outputs: list[Output],
        stdin_fd: int | None,
        tty: bool,
        stdin_once: bool,
        listener: socket.socket,
        socket_path: str,
        state: dict[str, Any],
        console_fd: int | None = None,
        drain_timeout: float = 2.0,
        finish_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outputs = outputs
        self.tty = tty
        self.stdin_once = stdin_once
        self.listener = listener
        self.socket_path = socket_path
        self.state = state
        self.drain_timeout = drain_timeout
        self.finish_timeout = finish_timeout
        self.clock = clock
        #: Set when the output has been read to its end (or the drain timed out).
        self.drained = Flag()
        #: Why the loop failed, "" while it has not.
        self.error = ""
        #: Called (in the loop's thread) if the loop fails, to stop the container.
        self.on_crash: Callable[[], Any] = lambda: None
        self.exit_info: dict[str, Any] | None = None

        self._stdin_fd = stdin_fd
        self._console_fd = console_fd
        self._stdin_buf = bytearray()
        self._stdin_closing = False
        self._stdin_full = False
        self._epoll = select.epoll()
        self._handlers: dict[int, Callable[[int], Any]] = {}
        self._events: dict[int, int] = {}
        self._clients: dict[int, Client] = {}
        self._commands: collections.deque[tuple[str, Any]] = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._exited = False
        self._drain_deadline: float | None = None
        self._finish_deadline: float | None = None
        #: Set when the loop's thread has ended; None until it started.
        self._ended: Flag | None = None
        self._closed = False

    # ------------------------------------------------------------------
    # the main thread's side

    def add_attached(self, sock: socket.socket, stdin: bool, stdout: bool, stderr: bool) -> None:
        """Serve a connection that is attached already (passed in by the daemon), before :meth:`start`."""
        sock.setblocking(False)
        client = Client(sock)
        client.wants_stdin = stdin
        self._clients[client.fd] = client
        self._attach(client, stdin, stdout, stderr)

    def set_console(self, master: int, log: LogStream | None, open_stdin: bool) -> None:
        """The container's pty master, once the driver made it inside the container; before :meth:`start`.

        Attaches made before start that asked for stdin get it now.
        """
        self.outputs.append(Output(master, protocol.STREAM_STDOUT, log))
        # The master is closed at its EOF; writes and resizes use a duplicate.
        self._console_fd = os.dup(master)
        if open_stdin:
            self._stdin_fd = self._console_fd
            for client in self._clients.values():
                if client.wants_stdin:
                    client.stdin_open = True

    def start(self) -> None:
        """Start the loop's thread (a bare one: see :class:`Flag`)."""
        ended = self._ended = Flag()

        def run() -> None:
            try:
                self._run()
            finally:
                ended.set()

        _thread.start_new_thread(run, ())

    def notify_exited(self) -> None:
        """The container's first process exited: drain the output, then set :attr:`drained`."""
        self._command("exited", None)

    def finish(self, exit_info: dict[str, Any]) -> None:
        """Send the exit to every client, close them, and end the loop."""
        self._command("finish", exit_info)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the loop's thread to end."""
        if self._ended is not None:
            self._ended.wait(timeout)

    @property
    def started(self) -> bool:
        """Whether :meth:`start` was called."""
        return self._ended is not None

    def is_alive(self) -> bool:
        """Whether the loop's thread runs."""
        return self._ended is not None and not self._ended.is_set()

    def close(self) -> None:
        """Release everything, once the loop's thread has ended (or if it never started).

        The wake-up pipe is closed here, by the main thread that writes it: the
        loop closing it could let a late :meth:`finish` write into a
        descriptor number already reused.
        """
        if self.is_alive():
            raise RuntimeError("the I/O loop is still running")
        self._close_everything()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _command(self, name: str, arg: Any) -> None:
        self._commands.append((name, arg))
        if self._wake_w < 0:
            return
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:  # the pipe is full of wake-ups already
            pass

    # ------------------------------------------------------------------
    # the loop

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            LOG.exception("the shim's I/O loop failed")
            self.error = f"shim I/O loop failed: {exc.__class__.__name__}: {exc}"
            self.drained.set()
            try:
                self.on_crash()
            except Exception:
                LOG.exception("cannot stop the container after the I/O loop failed")
        finally:
            self._close_everything()

    def _loop(self) -> None:
        self._watch(self._wake_r, _READ, self._on_wake)
        self.listener.setblocking(False)
        self._watch(self.listener.fileno(), _READ, self._on_accept)
        for out in self.outputs:
            os.set_blocking(out.fd, False)
            self._watch(out.fd, _READ, functools.partial(self._on_output, out))
        for fd in (self._stdin_fd, self._console_fd):
            if fd is not None:
                os.set_blocking(fd, False)
        for client in list(self._clients.values()):
            self._update(client)
        while True:
            now = self.clock()
            timeout = None
            if self._drain_deadline is not None and not self.drained.is_set():
                timeout = max(0.0, self._drain_deadline - now)
            if self._finish_deadline is not None:
                # Done once every client that asked for something has it; one
                # that connected without a request yet gets EOF and exit.json.
                if now >= self._finish_deadline or all(c.kind is None for c in self._clients.values()):
                    return
                left = max(0.0, self._finish_deadline - now)
                timeout = left if timeout is None else min(timeout, left)
            # Every handler of the round is taken first, as selectors does: one that an earlier
            # handler of the round unregistered still runs (each checks whether its fd is closed).
            ready = []
            for fd, event in self._epoll.poll(timeout):
                handler = self._handlers.get(fd)
                if handler is not None:
                    mask = (_WRITE if event & ~select.EPOLLIN else 0) | (_READ if event & ~select.EPOLLOUT else 0)
                    ready.append((handler, mask & self._events.get(fd, 0)))
            for handler, mask in ready:
                handler(mask)
            self._check_drained()

    def _watch(self, fd: int, events: int, handler: Callable[[int], Any] | None = None) -> None:
        """Make the loop call ``handler(mask)`` for ``events`` on ``fd`` (0: stop watching it)."""
        old = self._events.get(fd, 0)
        if events == old:
            return
        if not events:
            self._epoll.unregister(fd)
            del self._events[fd]
            del self._handlers[fd]
            return
        wanted = (select.EPOLLIN if events & _READ else 0) | (select.EPOLLOUT if events & _WRITE else 0)
        if old:
            self._epoll.modify(fd, wanted)
        else:
            self._epoll.register(fd, wanted)
        self._events[fd] = events
        assert handler is not None
        self._handlers[fd] = handler

    def _on_wake(self, _mask: int) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass
        while self._commands:
            name, arg = self._commands.popleft()
            if name == "exited":
                self._exited = True
                self._drain_deadline = self.clock() + self.drain_timeout
            elif name == "finish":
                self._finish(arg)

    # ------------------------------------------------------------------
    # container output

    def _on_output(self, out: Output, _mask: int) -> None:
        if out.eof:  # closed earlier in this round of events; the number may be reused
            return
        try:
            data = os.read(out.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            # EIO: every holder of the pty slave closed it, the pty's EOF.
            if exc.errno != errno.EIO:
                LOG.warning("reading the container's output failed: %s", exc)
            data = b""
        if not data:
            self._end_output(out)
            return
        if out.log is not None:
            out.log.feed(data, rfc3339nano_ns())
        packet = protocol.frame(out.kind, data)
        wanted = "stdout" if out.kind == protocol.STREAM_STDOUT else "stderr"
        for client in list(self._clients.values()):
            if client.kind == "attach" and getattr(client, wanted) and not client.closing:
                self._send(client, packet)

    def _end_output(self, out: Output) -> None:
        if out.eof:
            return
        out.eof = True
        self._watch(out.fd, 0)
        os.close(out.fd)
        if out.log is not None:
            out.log.flush(rfc3339nano_ns())

    def _check_drained(self) -> None:
        if not self._exited or self.drained.is_set():
            return
        if all(out.eof for out in self.outputs):
            self.drained.set()
        elif self._drain_deadline is not None and self.clock() >= self._drain_deadline:
            LOG.info(
                "output still open %.1fs after the container exited (processes outside its "
                "PID namespace hold it); not waiting for more",
                self.drain_timeout,
            )
            for out in self.outputs:
                self._end_output(out)
            self.drained.set()

    # ------------------------------------------------------------------
    # clients

    def _on_accept(self, _mask: int) -> None:
        for _ in range(64):
            try:
                sock, _addr = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # EMFILE and friends: try again on the next event
                LOG.warning("accept on %s failed: %s", self.socket_path, exc)
                return
            if len(self._clients) >= MAX_CLIENTS:
                LOG.warning("too many connections on %s; refusing one", self.socket_path)
                sock.close()
                continue
            sock.setblocking(False)
            client = Client(sock)
            self._clients[client.fd] = client
            self._update(client)

    def _update(self, client: Client) -> None:
        """Watch ``client`` for what it needs now: reading unless paused, writing if output is queued."""
        if client.closed:
            return
        events = 0
        if client.reading and not (self._stdin_full and client.stdin_open):
            events |= _READ
        if client.outbuf:
            events |= _WRITE
        self._watch(client.fd, events, functools.partial(self._on_client, client))

    def _on_client(self, client: Client, mask: int) -> None:
        if client.closed:  # dropped earlier in this round of events
            return
        if mask & _WRITE:
            self._flush(client)
        if mask & _READ and not client.closed:
            self._read(client)

    def _flush(self, client: Client) -> None:
        try:
            sent = client.sock.send(client.outbuf)
        except BlockingIOError:
            return
        except OSError:  # EPIPE, ECONNRESET: the client went away
            self._drop(client)
            return
        del client.outbuf[:sent]
        if not client.outbuf and client.closing:
            self._drop(client)
        else:
            self._update(client)

    def _send(self, client: Client, data: bytes, force: bool = False) -> None:
        """Queue ``data`` for ``client``, dropping it if it is too far behind (unless ``force``)."""
        if client.closed:
            return
        if not client.outbuf:
            try:
                sent = client.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._drop(client)
                return
            if sent == len(data):
                return
            data = data[sent:]
        if not force and len(client.outbuf) + len(data) > CLIENT_BUFFER:
            LOG.warning("a client of %s is more than %d bytes behind; dropping it", self.socket_path, CLIENT_BUFFER)
            self._drop(client)
            return
        client.outbuf += data
        self._update(client)

    def _answer(self, client: Client, obj: dict[str, Any]) -> None:
        """Send one JSON line and close."""
        client.kind = "answered"
        client.reading = False
        client.closing = True
        self._send(client, protocol.encode_line(obj), force=True)
        if not client.closed and not client.outbuf:
            self._drop(client)

    def _drop(self, client: Client) -> None:
        if client.closed:
            return
        client.closed = True
        self._watch(client.fd, 0)
        self._clients.pop(client.fd, None)
        client.sock.close()
        # A client that goes away closes its stdin (what matters for StdinOnce).
        self._client_stdin_closed(client)

    def _read(self, client: Client) -> None:
        try:
            data = client.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self._drop(client)
            return
        if not data:
            self._client_eof(client)
            return
        client.inbuf += data
        if client.kind is None:
            self._request(client)
        if client.closed:
            return
        if client.kind == "attach":
            self._frames(client)
        elif client.kind is not None:
            client.inbuf.clear()  # nothing is expected after the request

    def _client_eof(self, client: Client) -> None:
        if client.kind is None or _peer_gone(client.fd):
            self._drop(client)
        else:
            # A half-close (shutdown(SHUT_WR)): the client still reads its
            # output, its exit frame or its answer.
            client.reading = False
            self._client_stdin_closed(client)
            self._update(client)

    def _request(self, client: Client) -> None:
        nl = client.inbuf.find(b"\n")
        if nl < 0:
            if len(client.inbuf) > protocol.MAX_REQUEST:
                self._answer(client, {"Error": "request line too long"})
            return
        line = bytes(client.inbuf[:nl])
        del client.inbuf[: nl + 1]
        try:
            request = json.loads(line)
            op = request["op"]
        except (ValueError, TypeError, KeyError):
            self._answer(client, {"Error": 'bad request: expected one JSON object with an "op"'})
            return
        if op == "attach":
            # Acknowledged first, so that the client's attach() returns only
            # once every later byte of output will reach it.
            self._send(client, protocol.frame(protocol.STREAM_ATTACHED, b""), force=True)
            if not client.closed:
                self._attach(
                    client, bool(request.get("stdin")), bool(request.get("stdout")), bool(request.get("stderr"))
                )
        elif op == "state":
            self._answer(client, self._state())
        elif op == "wait":
            if self.exit_info is not None:
                self._answer(client, self.exit_info)
            else:
                client.kind = "wait"  # answered by _finish; reading on to see it leave
        elif op == "resize":
            error = self._resize(request.get("h"), request.get("w"))
            self._answer(client, {"ok": True} if error is None else {"ok": False, "Error": error})
        else:
            self._answer(client, {"Error": f"unknown op {op!r}"})

    def _state(self) -> dict[str, Any]:
        state = dict(self.state, Running=self.exit_info is None)
        if self.exit_info is not None:
            state.update(self.exit_info)
        return state

    def _attach(self, client: Client, stdin: bool, stdout: bool, stderr: bool) -> None:
        client.kind = "attach"
        client.stdout = stdout
        client.stderr = stderr
        client.stdin_open = stdin and self._stdin_fd is not None and not self._stdin_closing
        if self.exit_info is not None:
            client.closing = True
            client.reading = False
            self._send(client, protocol.frame(protocol.STREAM_EXIT, _dumps(self.exit_info)), force=True)
            if not client.closed and not client.outbuf:
                self._drop(client)

    def _frames(self, client: Client) -> None:
        buf = client.inbuf
        while len(buf) >= protocol.HEADER.size:
            kind, length = protocol.HEADER.unpack_from(buf)
            if length > protocol.MAX_INPUT_FRAME:
                LOG.warning("a client of %s sent a %d-byte frame; dropping it", self.socket_path, length)
                self._drop(client)
                return
            end = protocol.HEADER.size + length
            if len(buf) < end:
                return
            payload = bytes(buf[protocol.HEADER.size : end])
            del buf[:end]
            if kind == protocol.INPUT_STDIN:
                if client.stdin_open:
                    self._stdin_write(payload)
            elif kind == protocol.INPUT_CLOSE_STDIN:
                self._client_stdin_closed(client)
                self._update(client)
            elif kind == protocol.INPUT_RESIZE:
                try:
                    size = json.loads(payload)
                    error = self._resize(size.get("h"), size.get("w"))
                except (ValueError, AttributeError):
                    error = "bad resize frame"
                if error is not None:
                    LOG.info("resize from an attached client refused: %s", error)
            # Unknown kinds are skipped: newer clients may send more.

    def _resize(self, height: Any, width: Any) -> str | None:
        """Set the pty's window size (the kernel sends SIGWINCH); an error message or None."""
        if not self.tty or self._console_fd is None:
            return "the container has no tty to resize"
        if not (isinstance(height, int) and isinstance(width, int) and 0 <= height <= 0xFFFF and 0 <= width <= 0xFFFF):
            return f"bad console size {height!r}x{width!r}"
        try:
            fcntl.ioctl(self._console_fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        except OSError as exc:
            return f"cannot resize the tty: {exc.strerror}"
        return None

    # ------------------------------------------------------------------
    # the container's stdin

    def _stdin_write(self, data: bytes) -> None:
        fd = self._stdin_fd
        if fd is None or self._stdin_closing:
            return
        if not self._stdin_buf:
            try:
                written = os.write(fd, data)
            except BlockingIOError:
                written = 0
            except OSError as exc:  # EPIPE: nobody reads it any more; EIO: the pty is gone
                LOG.debug("the container's stdin is gone: %s", exc)
                return
            data = data[written:]
            if not data:
                return
        self._stdin_buf += data
        self._watch(fd, _WRITE, self._on_stdin_writable)
        self._set_stdin_full(len(self._stdin_buf) >= STDIN_HIGH)

    def _on_stdin_writable(self, _mask: int) -> None:
        fd = self._stdin_fd
        if fd is None or not self._stdin_buf:  # closed or emptied earlier in this round of events
            return
        try:
            written = os.write(fd, self._stdin_buf)
        except BlockingIOError:
            return
        except OSError as exc:
            LOG.debug("the container's stdin is gone: %s", exc)
            written = len(self._stdin_buf)
        del self._stdin_buf[:written]
        if not self._stdin_buf:
            self._watch(fd, 0)
            if self._stdin_closing:
                self._close_stdin_now()
        self._set_stdin_full(len(self._stdin_buf) >= STDIN_HIGH)

    def _set_stdin_full(self, full: bool) -> None:
        if full == self._stdin_full:
            return
        self._stdin_full = full
        for client in list(self._clients.values()):
            if client.stdin_open:
                self._update(client)

    def _client_stdin_closed(self, client: Client) -> None:
        if not client.stdin_open:
            return
        client.stdin_open = False
        # A pty has no half-close: with a tty the container's stdin stays
        # open, as in Docker (the shell would otherwise lose its terminal).
        if self.stdin_once and not self.tty:
            self._close_stdin()

    def _close_stdin(self) -> None:
        """Close the container's stdin once what is queued for it is written."""
        if self._stdin_fd is None or self._stdin_closing:
            return
        self._stdin_closing = True
        for client in self._clients.values():
            client.stdin_open = False
        if not self._stdin_buf:
            self._close_stdin_now()

    def _close_stdin_now(self) -> None:
        if self._stdin_fd is None:
            return
        self._watch(self._stdin_fd, 0)
        if self._stdin_fd != self._console_fd:
            os.close(self._stdin_fd)
        self._stdin_fd = None
        self._stdin_buf.clear()
        self._set_stdin_full(False)

    # ------------------------------------------------------------------
    # the end

    def _finish(self, exit_info: dict[str, Any]) -> None:
        self.exit_info = exit_info
        payload = _dumps(exit_info)
        for client in list(self._clients.values()):
            if client.kind == "attach":
                client.closing = True
                client.reading = False
                self._send(client, protocol.frame(protocol.STREAM_EXIT, payload), force=True)
                if not client.closed and not client.outbuf:
                    self._drop(client)
            elif client.kind == "wait":
                self._answer(client, exit_info)
        self._finish_deadline = self.clock() + self.finish_timeout

    def _close_everything(self) -> None:
        """Unlink the socket and close every descriptor the loop owns (once)."""
        if self._closed:
            return
        self._closed = True
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            LOG.warning("cannot remove %s: %s", self.socket_path, exc)
        for client in list(self._clients.values()):
            if not client.closed:
                client.closed = True
                client.sock.close()
        self._clients.clear()
        self.listener.close()
        for out in self.outputs:
            if not out.eof:
                out.eof = True
                os.close(out.fd)
        if self._stdin_fd is not None and self._stdin_fd != self._console_fd:
            os.close(self._stdin_fd)
        self._stdin_fd = None
        if self._console_fd is not None:
            os.close(self._console_fd)
            self._console_fd = None
        self._epoll.close()


def _peer_gone(fd: int) -> bool:
    """Whether the peer of a unix stream socket closed it, rather than only shut down its writing.

    Both read as EOF; but the kernel reports POLLHUP only once both
    directions are shut (``unix_poll``), so a client that has gone can be
    dropped at once and one that half-closed still served.
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(events & select.POLLHUP for _fd, events in poller.poll(0))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
