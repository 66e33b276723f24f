"""The worker's side of the API's read replica (:mod:`engine.server.replica`):
the process, the versions it checks, the views it is sent, and the
connections that go back and forth.

The views are rendered by a thread of their own (the checkpointer), after a
change, in batches: a container's start sets a dozen attributes, and each
one marks it; one render follows. A render is sent with the version read
before it began, so a change made while it ran leaves it stale, never
wrong.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from engine.daemon import changes
from engine.server import replica as rp

LOG = logging.getLogger(__name__)

#: ``GET`` paths the replica answers (once the worker sent it the view).
INSPECT_PATH = re.compile(r"(?:/v\d+\.\d+)?/containers/([^/]+)/json\Z")
#: ``GET`` and ``HEAD`` of ``/_ping``: the replica answers as the worker did in the same generation.
PING_PATH = re.compile(r"(?:/v\d+\.\d+)?/_ping\Z")
#: Any request below a container's path: a change to it is marked changed once answered.
CONTAINER_PATH = re.compile(r"(?:/v\d+\.\d+)?/containers/([^/]+)/")

#: Changes this close together are rendered once.
COALESCE = 0.01
#: Seconds after the replica's start before every view is sent.
INITIAL_DELAY = 1.0
#: A replica that ended sooner than this after its start is not started again.
MIN_LIFETIME = 10.0
#: Kernel buffer of each end of the pair (SO_SNDBUFFORCE; root): room for a burst of views.
CHANNEL_BUFFER = 4 << 20
#: <asm-generic/socket.h> (Python's socket module does not name them).
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33


class ReplicaLink:
    """The read replica as the worker sees it.

    :param daemon: the running daemon (its containers, graph driver and configuration).
    :param listeners: the plain listening sockets the replica may accept on, by index.
    :param keepalive: seconds an idle connection is kept (the worker's setting).
    """

    def __init__(self, daemon: Any, listeners: dict[int, Any], keepalive: float) -> None:
        self.daemon = daemon
        self.listeners = listeners
        self.keepalive = keepalive
        self.table = rp.VersionTable()
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.dirty: set[str] = set()
        self.wanted: set[str] = set()
        self.head_sent = False
        #: Method -> the generation in which its ``/_ping`` answer was sent.
        self.pings_sent: dict[str, int] = {}
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.channel: socket.socket | None = None
        #: Ends of replicas that ended, closed at stop().
        self.closed: list[socket.socket] = []
        self.running = False
        self.thread: threading.Thread | None = None
        self.inbox = bytearray(rp.MAX_MESSAGE)

    # the process
    def start(self) -> None:
        self.running = True
        self._spawn()
        changes.subscribe(self.container_changed, self.everything_changed)
        with self.lock:
            self._set_flags()
            self.table.set_generation(1)
        self.thread = threading.Thread(target=self._checkpointer, name="replica-views", daemon=True)
        self.thread.start()

    def _spawn(self) -> None:
        """Start a replica; from the worker's main thread only (the replica ends with the thread
        that started it: PR_SET_PDEATHSIG)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (ours, theirs):
            for opt in (SO_SNDBUFFORCE, SO_RCVBUFFORCE):
                try:
                    end.setsockopt(socket.SOL_SOCKET, opt, CHANNEL_BUFFER)
                except OSError:
                    pass  # the default buffer: fewer views in flight
        fds = [theirs.fileno(), self.table.fd, *(lst.fileno() for lst in self.listeners.values())]
        argv = [
            sys.executable,
            "-m",
            "engine.server.replica",
            "--channel",
            str(theirs.fileno()),
            "--table",
            str(self.table.fd),
            "--keepalive",
            str(self.keepalive),
            "--parent",
            str(os.getpid()),
        ]
        for index, lst in self.listeners.items():
            argv += ["--listener", f"{index}:{lst.fileno()}"]
        try:
            self.proc = subprocess.Popen(argv, pass_fds=fds, stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            theirs.close()
        self.channel = ours
        self.head_sent = False
        self.pings_sent = {}
        self.started = time.monotonic()
        # A new replica knows no view: send every one, once the daemon's start is over (a
        # thousand renders would compete with the first requests); meanwhile it asks for those
        # it is asked about.
        timer = threading.Timer(INITIAL_DELAY, self._render_all)
        timer.daemon = True
        timer.start()
        LOG.debug("read replica started (pid %d)", self.proc.pid)

    def stop_serving(self) -> None:
        """Nothing more is answered by the replica (safe in a signal handler)."""
        self.table.set_generation(0)
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        changes.unsubscribe()
        self.running = False
        with self.lock:
            self.wake.notify()
        self.stop_serving()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.channel is not None:
            self.closed.append(self.channel)
            self.channel = None
        if self.thread is not None:
            self.thread.join(timeout=5)
        for channel in self.closed:
            channel.close()
        self.table.close()

    def ended(self) -> bool:
        """The replica's end of the pair closed: start another, unless it ended young (then the
        worker serves everything). Whether there is a replica now."""
        assert self.proc is not None and self.channel is not None
        generation = self.table.generation()
        self.table.set_generation(0)
        # Closed at stop(), not now: a request thread may be handing a connection back over it, and
        # a descriptor number freed now could be a new connection's by the time its send runs.
        self.closed.append(self.channel)
        self.channel = None
        code = self.proc.wait()
        if not self.running or not generation:
            return False
        if time.monotonic() - self.started < MIN_LIFETIME:
            LOG.error("the read replica ended (status %s) soon after its start: not started again", code)
            self.running = False
            return False
        LOG.warning("the read replica ended (status %s): starting another", code)
        self._spawn()
        with self.lock:
            self.table.set_generation(generation + 1)
        return True

    # changes
    def container_changed(self, container_id: str) -> None:
        with self.lock:
            self.table.bump(rp.slot_of(container_id))
            if container_id not in self.dirty:
                self.dirty.add(container_id)
                self.wake.notify()

    def _set_flags(self) -> None:
        debug = logging.getLogger().isEnabledFor(logging.DEBUG)
        self.table.set_flags(rp.FLAG_DEBUG if debug else 0)

    def everything_changed(self) -> None:
        with self.lock:
            self._set_flags()  # a reload may have turned debug on or off
            gen = self.table.generation()
            if gen:
                self.table.set_generation(gen + 1)
            self.dirty.update(self._ids())
            self.wake.notify()

    def _render_all(self) -> None:
        with self.lock:
            self.dirty.update(self._ids())
            self.wake.notify()

    def _ids(self) -> list[str]:
        containers = getattr(self.daemon, "containers", None)
        return [c.id for c in containers.all()] if containers is not None else []

    # views
    def _checkpointer(self) -> None:
        while True:
            with self.lock:
                while self.running and not self.dirty and not self.wanted:
                    self.wake.wait()
                if not self.running:
                    return
            time.sleep(COALESCE)
            with self.lock:
                batch, self.dirty = self.dirty, set()
                wanted, self.wanted = self.wanted, set()
            for key in wanted:
                batch.add(self._resolve(key) or "")
            batch.discard("")
            for cid in batch:
                if not self.running:
                    return
                try:
                    self._render(cid)
                except Exception:
                    LOG.exception("rendering the view of %s for the read replica", cid[:12])
                time.sleep(0)  # let requests in between renders

    def _resolve(self, key: str) -> str | None:
        try:
            return str(self.daemon.containers.get(key).id)
        except Exception:
            return None

    def _render(self, cid: str) -> None:
        from engine.daemon import views
        from engine.utils.jsonout import encode

        channel = self.channel
        if channel is None:
            return
        slot = rp.slot_of(cid)
        try:
            c = self.daemon.containers.get(cid)
        except Exception:
            c = None
        if c is None or c.id != cid or c.removed:
            self._send(rp.MSG_FORGET + cid.encode())
            return
        with self.lock:
            gen, version = self.table.generation(), self.table.version(slot)
        if not gen:
            return
        view = encode(views.inspect(self.daemon, c))
        message = rp.entry_message(cid, c.name, gen, slot, version, view)
        if len(message) > rp.MAX_MESSAGE:
            return  # the worker answers for this one
        if not self._send(message):
            with self.lock:
                self.dirty.add(cid)  # the replica is behind: again later

    def _send(self, message: bytes) -> bool:
        channel = self.channel
        if channel is None:
            return False
        try:
            channel.send(message, socket.MSG_DONTWAIT)
        except OSError:
            return False
        return True

    def send_head(self, status_line: str, headers: list[tuple[str, str]], server: str) -> None:
        """The head of an inspect the worker answered, for the replica's answers (once)."""
        if self.head_sent:
            return
        lines = [status_line, f"Server: {server}"]
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("content-length", "date", "connection")]
        first = "\r\n".join(lines[:2]).encode("latin-1")
        rest = "".join(f"{line}\r\n" for line in lines[2:]).encode("latin-1")
        self.head_sent = self._send(rp.MSG_HEAD + first + b"\r\n\r\n" + rest)

    def send_ping(
        self, method: str, generation: int, status_line: str, headers: list[tuple[str, str]], server: str, body: bytes
    ) -> None:
        """A ``/_ping`` answer the worker gave (read at ``generation``, before it was made), for the
        replica's answers to the same method in that generation (once per generation)."""
        if not generation or self.pings_sent.get(method) == generation or self.table.generation() != generation:
            return
        first = f"{status_line}\r\nServer: {server}".encode("latin-1")
        rest = "".join(f"{k}: {v}\r\n" for k, v in headers if k.lower() not in ("date", "connection"))
        answer = first + b"\r\n\r\n" + rest.encode("latin-1") + b"\r\n" + body
        if self._send(rp.ping_message(method.encode(), generation, answer)):
            self.pings_sent[method] = generation

    # connections
    def receive(self) -> Any:
        """A message from the replica (the worker's loop): a connection handed over (descriptor,
        listener index, bytes read), or None. Raises EOFError when the replica is gone."""
        assert self.channel is not None
        data, fds = rp.recv_message(self.channel, self.inbox)
        if not data and not fds:
            raise EOFError
        kind, what = rp.parse_message(data, fds)
        if kind == rp.MSG_CONN:
            return what
        if kind == rp.MSG_WANTED:
            with self.lock:
                self.wanted.add(what.decode("latin-1"))
                self.wake.notify()
        return None

    def hand_back(self, fd: int, index: int, buf: bytes) -> bool:
        """Give a connection to the replica; False if it cannot take it now."""
        if index not in self.listeners or not self.table.generation() or len(buf) + 2 > rp.MAX_MESSAGE:
            return False
        channel = self.channel
        if channel is None:
            return False
        try:
            rp.send_fd(channel, rp.MSG_CONN + bytes([index]) + buf, fd, socket.MSG_DONTWAIT)
        except OSError:
            return False
        return True

    def changed_by_request(self, key: str) -> None:
        """A request below ``/containers/<key>/`` other than a read was answered: mark the container
        changed (a net under the hooks of :mod:`engine.daemon.changes`)."""
        cid = self._resolve(key)
        if cid is not None:
            self.container_changed(cid)
