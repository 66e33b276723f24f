"""A fake daemon on a unix socket that records requests, for comparing clients.

It answers ``/_ping`` as a 1.41 daemon, ``POST /containers/create`` with a
fixed ID and everything else with a 404, and keeps every request
(method, path with query, body) so a test can look at what the real docker
CLI sent and compare it with what ``engine`` sends.
"""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import threading
from dataclasses import dataclass
from typing import Any

CONTAINER_ID = "0123456789ab" * 5 + "0123"


@dataclass
class Request:
    method: str
    path: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _send(self, code: int, body: bytes = b"", ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Api-Version", "1.41")
        self.send_header("Ostype", "linux")
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding") == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if not size:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(chunks)
        path = self.path
        if "/_ping" not in path:
            with self.server.lock:
                self.server.requests.append(Request(self.command, path, body))
        if "/_ping" in path:
            self._send(200, b"OK", "text/plain")
        elif path.split("?")[0].endswith("/containers/create"):
            self._send(201, json.dumps({"Id": CONTAINER_ID, "Warnings": []}).encode())
        else:
            self._send(404, b'{"message":"not implemented by the fake daemon"}')

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _any

    def log_message(self, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    requests: list[Request]
    lock: threading.Lock

    def get_request(self) -> Any:
        conn, _ = super().get_request()
        return conn, ("local", 0)


class FakeDaemon:
    """Serve on ``path`` in a thread; :attr:`requests` is what clients sent (pings left out)."""

    def __init__(self, path: str) -> None:
        if os.path.exists(path):
            os.unlink(path)
        self.path = path
        self.server = _Server(path, _Handler)
        self.server.requests = []
        self.server.lock = threading.Lock()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    @property
    def requests(self) -> list[Request]:
        return self.server.requests

    def clear(self) -> None:
        with self.server.lock:
            self.server.requests.clear()

    def __enter__(self) -> FakeDaemon:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
