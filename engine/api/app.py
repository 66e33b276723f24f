"""The Falcon application: :func:`create_app` builds a pure app from its
services; :func:`get_app` adapts it for gunicorn (connection hijacking).

Routes are registered unversioned; :class:`~engine.api.middleware.VersionMiddleware`
strips ``/vX.Y`` before routing, so every route answers both ways.
"""

from __future__ import annotations

import fcntl
import importlib
import logging
import struct
import termios
import time
from collections.abc import Callable, Iterable
from typing import Any

import falcon

from engine.api import contenttype, errors, middleware, system, validation
from engine.utils import sockets

LOG = logging.getLogger("engine.api")

#: ``environ`` key a resource sets to take over the connection (attach, exec).
HIJACK_KEY = "engine.hijack"

#: Route modules; each has ``add_routes(app, engine, **options)``.
ROUTE_MODULES: tuple[str, ...] = (
    "engine.api.images",
    "engine.api.containers",
    "engine.api.streams",
    "engine.api.filesystem",
    "engine.api.execs",
    "engine.api.volumes",
    "engine.api.networks",
    "engine.api.registry",
    "engine.api.build",
)


def create_app(
    engine: Any, cors: bool = False, debug: bool = False, plugins: Any = None, extra_middleware: Iterable[Any] = ()
) -> falcon.App:
    """Build the API app (no I/O, no globals).

    :param engine: the engine whose jobs the resources run.
    :param cors: send CORS headers (``--api-enable-cors``).
    :param debug: add the ``/debug/*`` routes (``-D``).
    :param plugins: the pluggy manager; plugins add routes through
        ``engine_add_routes``.
    :param extra_middleware: more Falcon middleware after the version
        middleware (the metrics' request counter).
    """
    app = falcon.App(
        middleware=[
            middleware.VersionMiddleware(cors=cors),
            contenttype.JSONBodyMiddleware(),
            validation.RequestValidation(),
            *extra_middleware,
        ],
        cors_enable=False,
    )
    app.req_options.keep_blank_qs_values = True
    app.req_options.auto_parse_qs_csv = False
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)
    system.add_routes(app, engine, debug=debug)
    for modname in ROUTE_MODULES:
        importlib.import_module(modname).add_routes(app, engine)
    if plugins is not None:
        plugins.hook.engine_add_routes(app=app, engine=engine)
    return app


class Hijack:
    """What a resource hands over to take the raw connection.

    :param run: called with the connected socket once the ``101`` (or
        ``200``) header is written; it streams in both directions and returns
        when done. The connection is closed afterwards.
    :param content_type: ``application/vnd.docker.raw-stream`` or
        ``application/vnd.docker.multiplexed-stream``.
    :param announces: ``run`` gets a :class:`~engine.utils.sockets.Hijacked` instead
        and writes the header itself (``announce()``) when it is ready; if it
        returns without, the header is written then.
    """

    def __init__(
        self,
        run: Callable[[Any], None],
        content_type: str = "application/vnd.docker.raw-stream",
        announces: bool = False,
    ) -> None:
        self.run = run
        self.content_type = content_type
        self.announces = announces


def request_hijack(
    req: Any,
    run: Callable[[Any], None],
    content_type: str = "application/vnd.docker.raw-stream",
    announces: bool = False,
) -> None:
    """Called by a resource: after this request, hand the socket to ``run`` (see :class:`Hijack`)."""
    req.env[HIJACK_KEY] = Hijack(run, content_type, announces)


def _upgrade_requested(environ: dict) -> bool:
    return "upgrade" in environ.get("HTTP_CONNECTION", "").lower() and environ.get("HTTP_UPGRADE", "").lower() == "tcp"


def wait_consumed(sock: Any, timeout: float = 0.5) -> None:
    """Wait (a moment at most) until the client has read what was sent so far.

    docker-py reads the response's headers through a buffered file, then takes the raw
    socket: stream bytes that reached it together with the headers are lost in that
    buffer (an attach's logs, sent the instant the header is out, came back empty). On
    a unix socket SIOCOUTQ counts the bytes the peer has not read yet, so the stream can
    start once the headers are gone; on TCP it counts unacknowledged bytes, which is the
    best a server can know.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            pending = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except (OSError, ValueError):
            return
        if pending <= 0 or time.monotonic() > deadline:
            return
        time.sleep(0.001)


def get_app(app: falcon.App) -> Callable[[dict, Callable], Iterable[bytes]]:
    """Wrap ``app`` for gunicorn so that resources can hijack the connection.

    gunicorn drops ``Upgrade`` headers other than ``websocket`` and frames
    bodies itself, so a hijacked answer is written raw to
    ``environ["gunicorn.socket"]`` (COMPAT §0 item 2): the exact
    ``101 UPGRADED`` line in its own write, then the stream, then close; the
    gunicorn response object is marked as sent so it adds nothing.
    """
    headers_common = "".join(f"{k}: {v}\r\n" for k, v in middleware.COMMON_HEADERS.items())

    def wsgi(environ: dict, start_response: Callable) -> Iterable[bytes]:
        captured: list[Any] = []

        def capture(status: str, headers: list, exc_info: Any = None) -> Callable:  # noqa: ARG001
            captured[:] = [status, headers]
            return lambda data: None

        body = app(environ, capture)
        hijack = environ.get(HIJACK_KEY)
        if hijack is None or not captured or not captured[0].startswith("2"):
            start_response(*captured)
            return body
        if hasattr(body, "close"):
            body.close()
        sock = environ.get("gunicorn.socket")
        gresp = getattr(start_response, "__self__", None)
        if sock is None or gresp is None:
            start_response("500 Internal Server Error", [("Content-Type", "application/json")])
            return [b'{"message":"this server cannot hijack connections"}\n']
        if _upgrade_requested(environ):
            head = (
                "HTTP/1.1 101 UPGRADED\r\n"
                f"Content-Type: {hijack.content_type}\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\n"
            )
        else:
            head = f"HTTP/1.1 200 OK\r\nContent-Type: {hijack.content_type}\r\n"
        announced: list[bool] = []

        def announce() -> None:
            if not announced:
                announced.append(True)
                sock.sendall((head + headers_common + "\r\n").encode("latin-1"))
                wait_consumed(sock)

        # gunicorn must neither write headers nor a final chunk after us,
        # and must close the connection when we return.
        gresp.status = "101 UPGRADED"
        gresp.status_code = 101
        gresp.headers_sent = True
        gresp.chunked = False
        gresp.must_close = True
        try:
            if hijack.announces:
                hijack.run(sockets.Hijacked(sock, announce))
            else:
                announce()
                hijack.run(sock)
            announce()
        except OSError as exc:
            LOG.debug("hijacked connection ended: %s", exc)
        return []

    return wsgi
