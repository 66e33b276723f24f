"""The daemon's gunicorn worker: its request step and response, on a real socket pair
(a parsed request, the worker's handle_request, the bytes the client reads)."""

from __future__ import annotations

import os
import socket
import types
from collections.abc import Callable
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.workers.gthread import TConn

from engine.server import worker as W


class _Log:
    def __init__(self) -> None:
        self.errors: list[tuple] = []

    def access(self, *args: Any) -> None:
        pass

    def debug(self, *args: Any) -> None:
        pass

    def exception(self, *args: Any) -> None:
        self.errors.append(args)


def serve(app: Callable, request: bytes) -> tuple[Any, bytes, Any]:
    """Run one request through EngineWorker.handle_request: (its return or exception, bytes sent, log)."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(request)
        cfg = W._FrozenConfig(Config())
        conn = TConn(cfg, ours, ("client", 0), ("server", 0))
        conn.init()
        req = next(conn.parser)
        log = _Log()
        worker = types.SimpleNamespace(cfg=cfg, alive=True, keepalived_conns=[], max_keepalived=10, wsgi=app, log=log)
        try:
            outcome: Any = W.EngineWorker.handle_request(worker, req, conn)
        except BaseException as exc:
            outcome = exc
        theirs.settimeout(0.2)
        data = b""
        try:
            while chunk := theirs.recv(65536):
                data += chunk
        except TimeoutError:
            pass
        return outcome, data, log


def ping(environ: dict, start_response: Callable) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"OK"]


def test_a_small_answer_goes_out_whole_and_keeps_the_connection():
    outcome, data, _ = serve(ping, b"GET /_ping HTTP/1.1\r\nHost: h\r\n\r\n")
    assert outcome is True
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: keep-alive" in head
    assert b"Content-Length: 2" in head and b"Date: " in head and body == b"OK"


def test_head_gets_no_body_and_connection_close_closes():
    outcome, data, _ = serve(ping, b"HEAD /_ping HTTP/1.1\r\nHost: h\r\n\r\n")
    assert outcome is True and data.endswith(b"\r\n\r\n")
    outcome, data, _ = serve(ping, b"GET /_ping HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert outcome is False and b"Connection: close" in data and data.endswith(b"OK")


@pytest.mark.slow
def test_a_body_whose_close_fails_after_the_answer_cuts_the_connection():
    class Body:
        def __iter__(self):
            return iter([b"OK"])

        def close(self) -> None:
            raise RuntimeError("close failed")

    def app(environ: dict, start_response: Callable) -> Body:
        start_response("200 OK", [("Content-Length", "2")])
        return Body()

    outcome, data, log = serve(app, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    # No error page after a complete answer: the stream ends instead.
    assert isinstance(outcome, StopIteration)
    assert data.count(b"HTTP/1.1") == 1 and data.endswith(b"OK") and log.errors


def test_an_error_before_the_answer_is_left_to_gunicorn_for_a_500():
    def app(environ: dict, start_response: Callable) -> list[bytes]:
        raise ValueError("broken")

    outcome, data, _ = serve(app, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert isinstance(outcome, ValueError) and data == b""


@pytest.mark.parametrize("length", ["5", None])
def test_content_length_truncates_and_chunked_streams(length):
    def app(environ: dict, start_response: Callable) -> list[bytes]:
        start_response("200 OK", [("Content-Length", length)] if length else [])
        return [b"hello", b" world"]

    outcome, data, _ = serve(app, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert outcome is True
    body = data.split(b"\r\n\r\n", 1)[1]
    assert body == (b"hello" if length else b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")


def test_the_daemon_parses_requests_with_gunicorns_c_parser():
    """gunicorn_h1c is a dependency and the daemon asks for it ("fast": fail at start rather
    than fall back to the pure-Python parser). The tests above parse with it too ("auto")."""
    from gunicorn.http import message

    from engine.daemon.config import Config as DaemonConfig
    from engine.server.app import EngineApplication

    app = EngineApplication(DaemonConfig(), [], None)
    try:
        assert app.cfg.http_parser == "fast"
        assert message._check_fast_parser(app.cfg) is True
    finally:
        os.close(app.ready_r)
        os.close(app.ready_w)
