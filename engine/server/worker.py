"""The gunicorn worker the daemon runs in: gunicorn's threaded worker with
these changes.

* TLS applies to TCP listeners only; unix sockets stay plain, as in Docker
  (gunicorn's TLS settings are global to all listeners).
* SIGINT shuts down as gracefully as SIGTERM (gunicorn quits at once).
* SIGHUP (passed on by the master) reloads the daemon's configuration.
* A stop signal starts the engine's shutdown at once, so long streams
  (events, logs, attach) end and the worker can finish its connections.
* A busy keep-alive connection stays with its thread, and the per-request
  path makes fewer system calls: every one releases and re-acquires the GIL,
  which with many busy connections costs a thread switch each.
* Beside it runs the API's read replica (:mod:`engine.server.replica`): the
  connections it hands over are served here, and one whose request was an
  inspect, or its second ping in a row, goes back to it.
"""

from __future__ import annotations

import errno
import logging
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.http.body import LengthReader
from gunicorn.workers.gthread import TConn, ThreadWorker

from engine.server.replicalink import CONTAINER_PATH, INSPECT_PATH, PING_PATH, ReplicaLink
from engine.utils.sockets import readable

LOG = logging.getLogger(__name__)


#: How long a thread that just answered a kept-alive connection waits for the
#: client's next request before handing the connection back to the poller.
KEEPALIVE_LINGER = 0.002


class _FrozenConfig:
    """gunicorn's config read through a cache: a worker's settings never
    change (SIGHUP reloads the daemon's configuration, not gunicorn's), and
    each gunicorn lookup costs a dictionary walk and a call; a request makes
    some twenty.

    :param overrides: attributes that differ from ``cfg``.
    """

    def __init__(self, cfg: Any, **overrides: Any) -> None:
        self._cfg = cfg
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._cfg, name)
        setattr(self, name, value)
        return value


class _ConnSocket(socket.socket):
    """An accepted connection whose mode changes are skipped when they change
    nothing.

    gunicorn sets a connection blocking before every request and restores its
    timeout after every body drain; each call is an ``ioctl(FIONBIO)`` that
    releases the GIL. Whether the descriptor is non-blocking follows from the
    timeout alone (``None``: blocking, else non-blocking: CPython waits with
    ``poll``), so an unchanged timeout means an unchanged descriptor.
    """

    __slots__ = ()

    def settimeout(self, value: float | None) -> None:
        if value != self.gettimeout():
            super().settimeout(value)

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)


#: Response headers (name, value) gunicorn checked, and whether it passed
#: them on as they are (True) or dropped them (False, hop-by-hop ones); at
#: most ``_CHECKED_HEADERS_MAX``, then forgotten all at once.
_checked_headers: dict[tuple[str, str], bool] = {}
_CHECKED_HEADERS_MAX = 512
#: Headers that set something on the response besides being passed on.
_HEADERS_WITH_EFFECTS = ("content-length", "upgrade", "connection")


class _Response(wsgi.Response):
    """gunicorn's HTTP/1 response, sending its header together with the first
    body chunk: one ``send`` (and one wake-up of the client) instead of two.
    Streamed (chunked) and body-less responses go gunicorn's way."""

    headers_sent: bool

    def process_headers(self, headers: list) -> None:
        # gunicorn checks every header against two regular expressions, the
        # largest cost of a small response; mostly the same headers come
        # back each time, so the outcome for the plain ones is remembered.
        for pair in headers:
            known = _checked_headers.get(pair) if type(pair) is tuple else None
            if known is not None:
                if known:
                    self.headers.append(pair)
                continue
            count = len(self.headers)
            super().process_headers((pair,))
            if type(pair) is not tuple or pair[0].lower() in _HEADERS_WITH_EFFECTS:
                continue
            if len(self.headers) == count:
                known = False
            elif len(self.headers) == count + 1 and self.headers[-1] == pair:
                known = True
            else:
                continue
            if len(_checked_headers) >= _CHECKED_HEADERS_MAX:
                _checked_headers.clear()
            _checked_headers[pair] = known

    def write(self, arg: bytes) -> None:
        if self.headers_sent or self.chunked or self._omits_body or not arg or not isinstance(arg, bytes):
            super().write(arg)
            return
        if self.response_length is not None:
            arg = arg[: self.response_length]
        self.sent += len(arg)
        util.write(self.sock, self._head() + arg)
        self.headers_sent = True

    def send_headers(self) -> None:
        if not self.headers_sent:
            util.write(self.sock, self._head())
            self.headers_sent = True

    def _head(self) -> bytes:
        lines = self.default_headers()
        lines.extend(f"{k}: {v}\r\n" for k, v in self.headers)
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def default_headers(self) -> list[str]:
        # gunicorn's, with the Date line formatted once a second.
        if self.upgrade:
            connection = "upgrade"
        elif self.should_close():
            connection = "close"
        else:
            connection = "keep-alive"
        major, minor = self.req.version
        headers = [
            f"HTTP/{major}.{minor} {self.status}\r\n",
            f"Server: {self.version}\r\n",
            _date_line(),
            f"Connection: {connection}\r\n",
        ]
        if self.chunked:
            headers.append("Transfer-Encoding: chunked\r\n")
        return headers


#: (second, "Date: ...\r\n") of the last response; replaced whole, so
#: threads read a consistent pair.
_last_date: tuple[int, str] = (0, "")


def _date_line() -> str:
    global _last_date
    now = int(time.time())
    if _last_date[0] != now:
        _last_date = (now, f"Date: {util.http_date(now)}\r\n")
    return _last_date[1]


def _body_consumed(parser: Any) -> bool:
    """Whether the current request's body is known to be read to its end
    (nothing left to drain), without touching the socket."""
    body = getattr(parser.mesg, "body", None)
    reader = getattr(body, "reader", None)
    return (
        body is not None
        and isinstance(reader, LengthReader)
        and reader.length == 0
        and not body.failed
        and not body.buf.tell()
    )


#: Closing a connection whose request body the client is still sending: read
#: and drop up to this much, for at most this long, before the close, so
#: that the close does not reset the connection (RST) while the client has
#: yet to read the answer (an error that ended an upload, e.g. a full disk
#: during ``docker load``). gunicorn's own cap is 64 KiB.
LINGER_MAX_BYTES = 64 << 20
LINGER_SECONDS = 2.0


class _Conn(TConn):
    """gunicorn's connection, lingering longer on a graceful close (see ``LINGER_MAX_BYTES``),
    and one the read replica can hand over and take back."""

    #: Its listener's index in the worker's ``sockets`` (-1: unknown).
    index = -1
    #: Bytes the replica read from it before handing it over.
    pending = b""
    #: Its last request was one the replica can answer next: give it back after the answer.
    hand_back = False
    #: Its last request was a ping (a second one in a row gives the connection back).
    pinged = False
    #: The replica has it now: closing it here closes this process's descriptor only.
    handed_off = False

    def init(self) -> None:
        super().init()
        if self.pending:
            self.parser.unreader.unread(self.pending)
            self.pending = b""

    def close(self, graceful: bool = False) -> None:
        if self.handed_off:
            self.sock.close()
            return
        if not graceful:
            super().close()
            return
        self.sock.setblocking(True)
        util.close_graceful(self.sock, timeout=LINGER_SECONDS, max_drain=LINGER_MAX_BYTES)


class EngineWorker(ThreadWorker):
    """gunicorn's gthread worker, adapted for the daemon (see module doc)."""

    #: Set by the application once the daemon exists: starts its shutdown.
    on_stop: Callable[[], None] | None = None
    #: Set by the application once the daemon exists: reloads its configuration.
    on_reload: Callable[[], None] | None = None
    #: Set by the application once the daemon exists: the daemon, or None.
    daemon: Any = None
    #: Set by the application: whether a read replica may run (not with --metrics-addr, whose
    #: request counts would miss what it answers).
    replica_allowed = True

    def __init__(self, age: int, ppid: int, sockets: list, app: Any, timeout: int, cfg: Any, log: Any) -> None:
        super().__init__(age, ppid, sockets, app, timeout, _FrozenConfig(cfg), log)
        #: What a unix-socket connection sees: no TLS.
        self.plain_cfg = _FrozenConfig(cfg, is_ssl=False)

    def init_signals(self) -> None:
        super().init_signals()
        signal.signal(signal.SIGINT, self.handle_exit)
        # gunicorn leaves SIGHUP at its default (terminate) in workers: the
        # master passes it on for a configuration reload (engine.daemon.reload).
        signal.signal(signal.SIGHUP, self.handle_hup)

    def handle_hup(self, sig: int, frame: Any) -> None:  # noqa: ARG002
        reload = self.on_reload
        if reload is None or not self.alive:
            return  # still starting, or stopping: there is nothing to reload
        threading.Thread(target=reload, name="engine-reload", daemon=True).start()

    def handle_exit(self, sig: int, frame: Any) -> None:
        first = self.alive
        if self.replica is not None:
            self.replica.stop_serving()
        super().handle_exit(sig, frame)
        if first and self.on_stop is not None:
            threading.Thread(target=self.on_stop, name="engine-shutdown", daemon=True).start()

    def handle(self, conn: Any) -> Any:
        """Serve a connection; keep serving it here while the client keeps
        sending at once (a busy keep-alive client): handing it back to the
        poller costs two thread switches and a GIL hand-over per request."""
        result = super().handle(conn)
        while result is True and self.alive:
            if conn.hand_back and self._give_back(conn):
                return False
            if not (conn.parser.unreader.buf.getvalue() or _readable(conn.sock, KEEPALIVE_LINGER)):
                break
            result = super().handle(conn)
        return result

    # the read replica
    replica: ReplicaLink | None = None
    #: Listener file descriptor -> index in ``sockets``.
    _listener_index: dict[int, int] = {}

    def run(self) -> None:
        self._listener_index = {lst.fileno(): i for i, lst in enumerate(self.sockets)}
        self.replica = self._start_replica()
        try:
            super().run()
        finally:
            if self.replica is not None:
                self.replica.stop()
                self.replica = None

    def _start_replica(self) -> ReplicaLink | None:
        if self.daemon is None or not self.replica_allowed or not self.alive:
            return None
        # TLS is this worker's (gunicorn's) alone: the replica takes the plain listeners.
        plain = {i: lst for i, lst in enumerate(self.sockets) if lst.family == socket.AF_UNIX or not self.cfg.is_ssl}
        if not plain:
            return None
        link = ReplicaLink(self.daemon, plain, float(self.cfg.keepalive))
        try:
            link.start()
        except OSError as exc:
            self.log.warning("the read replica did not start, the worker serves every request: %s", exc)
            link.stop()
            return None
        assert link.channel is not None
        self.poller.register(link.channel, selectors.EVENT_READ, self._from_replica)
        return link

    def _from_replica(self, channel: Any) -> None:
        """The poller's callback (the worker's main thread): what the replica sent."""
        link = self.replica
        assert link is not None
        try:
            got = link.receive()
        except (EOFError, OSError):
            self.poller.unregister(channel)
            if link.ended():
                assert link.channel is not None
                self.poller.register(link.channel, selectors.EVENT_READ, self._from_replica)
            return
        if got is None:
            return
        fd, index, buf = got
        sock = _ConnSocket(fileno=fd)
        sock.setblocking(True)
        if index >= len(self.sockets):
            sock.close()
            return
        listener = self.sockets[index]
        try:
            client = sock.getpeername() if listener.family != socket.AF_UNIX else ""
        except OSError:
            sock.close()
            return
        conn = self._new_conn(sock, client, listener, index)
        conn.pending = buf
        conn.data_ready = True
        self.nr_conns += 1
        self.enqueue_req(conn)

    def _new_conn(self, sock: Any, client: Any, listener: Any, index: int) -> _Conn:
        cfg = self.plain_cfg if listener.family == socket.AF_UNIX else self.cfg
        conn = _Conn(cfg, sock, client, listener.getsockname())
        conn.index = index
        return conn

    def _give_back(self, conn: _Conn) -> bool:
        """Hand a kept-alive connection to the replica (with what was read of the next request)."""
        conn.hand_back = False
        link = self.replica
        if link is None or not link.hand_back(conn.sock.fileno(), conn.index, conn.parser.unreader.buf.getvalue()):
            return False
        conn.handed_off = True
        return True

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        # gunicorn drains the unread body under a deadline, which sets and
        # restores the socket's timeout (two ioctls) even when there is none.
        if keepalive and _body_consumed(conn.parser):
            return True
        return super()._keepalive_after(conn, keepalive)

    def handle_request(self, req: Any, conn: Any) -> bool:
        """Answer one request; whether the connection may be kept.

        The threaded worker's request step, built on :class:`_Response`
        (gunicorn has no setting for the response class). The daemon sets
        neither request hooks nor ``max_requests``, so neither is consulted.
        """
        resp, environ = wsgi.create(req, conn.sock, conn.client, conn.server, self.cfg, response_class=_Response)
        replica: ReplicaLink | None = getattr(self, "replica", None)
        inspect = ping = changing = None
        generation = 0
        if replica is not None:
            if req.method in ("GET", "HEAD"):
                if not req.query:
                    ping = PING_PATH.match(req.path)
                    inspect = INSPECT_PATH.match(req.path) if req.method == "GET" and ping is None else None
                    generation = replica.table.generation()
            else:
                changing = CONTAINER_PATH.match(req.path)
        pinged_before = getattr(conn, "pinged", False)
        if isinstance(conn, _Conn):
            conn.pinged = ping is not None
        environ["wsgi.multithread"] = True
        if not (self.alive and self.cfg.keepalive) or len(self.keepalived_conns) >= self.max_keepalived:
            resp.force_close()
        began = datetime.now()
        body: Any = None
        try:
            try:
                body = self.wsgi(environ, resp.start_response)
                if changing is not None and replica is not None:
                    replica.changed_by_request(changing.group(1))
                if replica is not None and resp.status_code == 200 and (inspect or ping) is not None:
                    status = f"HTTP/1.1 {resp.status}"
                    if inspect is not None:
                        replica.send_head(status, resp.headers, resp.version)
                    elif isinstance(body, (list, tuple)):
                        replica.send_ping(req.method, generation, status, resp.headers, resp.version, b"".join(body))
                    # The replica answers what an inspecting client asks next, and the pings of
                    # a connection that pings again and again (a health check). One ping is most
                    # often a CLI's first request, whose next one would only come back here.
                    conn.hand_back = (
                        (inspect is not None or (ping is not None and pinged_before))
                        and req.version == (1, 1)
                        and isinstance(conn, _Conn)
                    )
                if isinstance(body, environ["wsgi.file_wrapper"]):
                    resp.write_file(body)
                else:
                    for chunk in body:
                        resp.write(chunk)
                resp.close()
            finally:
                # Inside the outer try: a failing close() after a sent answer
                # must cut the connection, not have an error page follow it.
                self.log.access(resp, req, environ, datetime.now() - began)
                if hasattr(body, "close"):
                    body.close()
        except OSError:
            raise  # the client went away: gunicorn's handle() closes quietly
        except (Exception, SystemExit):
            if not resp.headers_sent:
                raise  # gunicorn's handle() answers 500
            # Part of the answer is out: an error page would corrupt it; cut the stream.
            self.log.exception("Error handling request")
            util.close_graceful(conn.sock)
            raise StopIteration() from None
        return not resp.should_close()

    def accept(self, listener: Any) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client_sock = _ConnSocket(client_sock.family, client_sock.type, client_sock.proto, client_sock.detach())
        client_sock.setblocking(True)
        self.enqueue_req(
            self._new_conn(client_sock, client_addr, listener, self._listener_index.get(listener.fileno(), -1))
        )


def _readable(sock: Any, timeout: float) -> bool:
    try:
        return bool(readable([sock], timeout))
    except (OSError, ValueError):
        return False
