"""The gunicorn worker the daemon runs in: gunicorn's threaded worker with
three changes.

* TLS applies to TCP listeners only; unix sockets stay plain, as in Docker
  (gunicorn's TLS settings are global to all listeners).
* SIGINT shuts down as gracefully as SIGTERM (gunicorn quits at once).
* A stop signal starts the engine's shutdown at once, so long streams
  (events, logs, attach) end and the worker can finish its connections.
"""

from __future__ import annotations

import errno
import logging
import select
import signal
import socket
import threading
from typing import Any, Callable

from gunicorn.workers.gthread import TConn, ThreadWorker

LOG = logging.getLogger(__name__)


#: How long a thread that just answered a kept-alive connection waits for the
#: client's next request before handing the connection back to the poller.
KEEPALIVE_LINGER = 0.002


class _PlainConfig:
    """gunicorn's config as seen by a unix-socket connection: no TLS."""

    is_ssl = False

    def __init__(self, cfg: Any) -> None:
        self._cfg = cfg

    def __getattr__(self, name: str) -> Any:
        # Settings never change after boot: cache each on first use.
        value = getattr(self._cfg, name)
        setattr(self, name, value)
        return value


class EngineWorker(ThreadWorker):
    """gunicorn's gthread worker, adapted for the daemon (see module doc)."""

    #: Set by the application once the daemon exists: starts its shutdown.
    on_stop: Callable[[], None] | None = None

    def init_signals(self) -> None:
        super().init_signals()
        signal.signal(signal.SIGINT, self.handle_exit)

    def handle_exit(self, sig: int, frame: Any) -> None:
        first = self.alive
        super().handle_exit(sig, frame)
        if first and self.on_stop is not None:
            threading.Thread(target=self.on_stop, name="engine-shutdown", daemon=True).start()

    def handle(self, conn: Any) -> Any:
        """Serve a connection; keep serving it here while the client keeps
        sending at once (a busy keep-alive client): handing it back to the
        poller costs two thread switches and a GIL hand-over per request."""
        result = super().handle(conn)
        while result is True and self.alive:
            if not (conn.parser.unreader.buf.getvalue() or _readable(conn.sock, KEEPALIVE_LINGER)):
                break
            result = super().handle(conn)
        return result

    def accept(self, listener: Any) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client_sock.setblocking(True)
        cfg = _PlainConfig(self.cfg) if listener.family == socket.AF_UNIX else self.cfg
        self.enqueue_req(TConn(cfg, client_sock, client_addr, listener.getsockname()))


def _readable(sock: Any, timeout: float) -> bool:
    try:
        ready, _, _ = select.select([sock], [], [], timeout)
    except (OSError, ValueError):
        return False
    return bool(ready)
