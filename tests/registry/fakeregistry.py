"""A small fake registry on 127.0.0.1 whose misbehaviour a test can script.

It serves the read side of the v2 API (ping, manifests, blobs with ``Range``,
paginated tag lists) and a token endpoint, and can: require a bearer token
(or basic credentials), drop a connection in the middle of a blob, ignore
``Range``, answer 503 a number of times, serve a blob shorter than its
descriptor. Every request is logged for the test to look at.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import socketserver
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "good-token"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Script:
    """What the fake does wrong, consumed as it happens."""

    #: digest -> list of byte counts: each GET of the blob sends its full
    #: Content-Length but closes the connection after that many bytes.
    drop_after: dict[str, list[int]] = field(default_factory=dict)
    #: Answer ranged GETs with the whole blob (200).
    ignore_range: bool = False
    #: Answer the next N requests with 503.
    unavailable: int = 0
    #: Require ``Authorization: Bearer <TOKEN>`` (from ``/token``).
    bearer: bool = False
    #: Require basic auth with these credentials (user, password).
    basic: tuple[str, str] | None = None
    #: Credentials the token endpoint wants (None: anonymous tokens).
    token_user: tuple[str, str] | None = None
    #: Tags per page of ``tags/list`` (pagination with ``Link``).
    page: int = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeRegistry

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(
        self, code: int, body: bytes = b"", headers: dict[str, str] | None = None, ctype: str = "application/json"
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, code: int, err: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._reply(code, json.dumps({"errors": [{"code": err, "message": message}]}).encode(), headers)

    def _authorized(self) -> bool:
        script = self.server.script
        value = self.headers.get("Authorization", "")
        host = f"127.0.0.1:{self.server.server_address[1]}"
        if script.bearer and value != f"Bearer {TOKEN}":
            self._error(
                401,
                "UNAUTHORIZED",
                "authentication required",
                {"WWW-Authenticate": f'Bearer realm="http://{host}/token",service="fake",scope="x"'},
            )
            return False
        if script.basic is not None:
            expected = "Basic " + base64.b64encode(":".join(script.basic).encode()).decode()
            if value != expected:
                self._error(401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": 'Basic realm="fake"'})
                return False
        return True

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        server = self.server
        parts = urlsplit(self.path)
        server.log.append((self.command, self.path, dict(self.headers)))
        if server.script.unavailable > 0:
            server.script.unavailable -= 1
            self._error(503, "UNAVAILABLE", "try later", {"Retry-After": "0"})
            return
        if parts.path == "/token":
            self._token(parse_qs(parts.query))
            return
        if not self._authorized():
            return
        if parts.path == "/v2/":
            self._reply(200, b"{}")
            return
        path = parts.path[len("/v2/") :]
        if "/manifests/" in path:
            repo, ref = path.split("/manifests/", 1)
            entry = server.manifests.get((repo, ref))
            if entry is None:
                self._error(404, "MANIFEST_UNKNOWN", "manifest unknown")
                return
            media_type, body = entry
            self._reply(200, body, {"Docker-Content-Digest": digest_of(body)}, ctype=media_type)
            return
        if "/blobs/" in path:
            self._blob(path.split("/blobs/", 1)[1])
            return
        if path.endswith("/tags/list"):
            self._tags(path[: -len("/tags/list")], parse_qs(parts.query))
            return
        self._error(404, "NOT_FOUND", "no route")

    def _token(self, query: dict[str, list[str]]) -> None:
        script = self.server.script
        if script.token_user is not None:
            expected = "Basic " + base64.b64encode(":".join(script.token_user).encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._error(401, "UNAUTHORIZED", "incorrect username or password")
                return
        self.server.token_requests.append(query)
        doc = {"token": TOKEN, "expires_in": 300}
        if "offline_token" in query:
            doc["refresh_token"] = "refresh-" + TOKEN
        self._reply(200, json.dumps(doc).encode())

    def _blob(self, digest: str) -> None:
        server = self.server
        data = server.blobs.get(digest)
        if data is None:
            self._error(404, "BLOB_UNKNOWN", "blob unknown to registry")
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and not server.script.ignore_range and self.command == "GET":
            start = int(rng.split("=", 1)[1].split("-", 1)[0])
        drops = server.script.drop_after.get(digest)
        cut = drops.pop(0) if drops and self.command == "GET" else None
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if self.command == "HEAD":
            return
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def _tags(self, repo: str, query: dict[str, list[str]]) -> None:
        tags = sorted(tag for (r, tag) in self.server.manifests if r == repo and not tag.startswith("sha256:"))
        if not tags:
            self._error(404, "NAME_UNKNOWN", "repository name not known to registry")
            return
        last = (query.get("last") or [""])[0]
        tags = [t for t in tags if t > last]
        headers = {}
        page = self.server.script.page
        if page and len(tags) > page:
            tags = tags[:page]
            headers["Link"] = f'</v2/{repo}/tags/list?n={page}&last={tags[-1]}>; rel="next"'
        self._reply(200, json.dumps({"name": repo, "tags": tags}).encode(), headers)


class FakeRegistry(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """Start with :meth:`start`; ``host`` is ``127.0.0.1:<port>``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = Script()
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.blobs: dict[str, bytes] = {}
        self.log: list[tuple[str, str, dict]] = []
        self.token_requests: list[dict] = []
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def start(self) -> FakeRegistry:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def add_blob(self, data: bytes) -> str:
        digest = digest_of(data)
        self.blobs[digest] = data
        return digest

    def add_manifest(self, repo: str, tag: str, media_type: str, body: bytes) -> str:
        digest = digest_of(body)
        self.manifests[(repo, tag)] = (media_type, body)
        self.manifests[(repo, digest)] = (media_type, body)
        return digest

    def blob_gets(self, digest: str) -> list[dict]:
        """Headers of every GET of a blob."""
        return [h for (m, p, h) in self.log if m == "GET" and p.endswith(f"/blobs/{digest}")]
