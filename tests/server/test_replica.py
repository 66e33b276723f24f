"""The read replica's process (engine.server.replica), run for real: a listening unix socket,
the SOCK_SEQPACKET pair and the memfd table it shares with the worker; this test plays the
worker's side of the pair."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from engine import API_VERSION, apiversion
from engine.server import replica as rp
from engine.utils.jsonout import encode

CID = "ab12" + "c" * 60
VIEW = {
    "Id": CID,
    "Name": "/web",
    "Config": {"Hostname": "web", "Labels": {"a": "b"}},
    "HostConfig": {"Annotations": {"x": "y"}},
    "NetworkSettings": {"Networks": {"front": {"Aliases": ["web"], "DNSNames": ["web", "ab12cccccccc"]}}},
}
HEAD = b"HTTP/1.1 200 OK\r\nServer: test\r\n\r\nApi-Version: 1.47\r\nContent-Type: application/json\r\n"


class Worker:
    """The worker's end: the replica process, its listener, the pair and the table."""

    def __init__(self, tmp_path) -> None:
        self.path = str(tmp_path / "api.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(16)
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.channel.settimeout(10)
        self.table = rp.VersionTable()
        self.table.set_generation(1)
        fds = [theirs.fileno(), self.table.fd, self.listener.fileno()]
        argv = [sys.executable, "-m", "engine.server.replica", "--channel", str(fds[0]), "--table", str(fds[1])]
        argv += ["--listener", f"3:{fds[2]}", "--keepalive", "30"]
        self.proc = subprocess.Popen(argv, pass_fds=fds, stderr=subprocess.PIPE)
        theirs.close()
        self.inbox = bytearray(rp.MAX_MESSAGE)

    def stop(self) -> str:
        """Its log (stderr)."""
        self.channel.close()
        try:
            self.proc.wait(timeout=10)
            assert self.proc.stderr is not None
            return self.proc.stderr.read().decode()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.listener.close()
            self.table.close()

    def send(self, message: bytes) -> None:
        self.channel.send(message)

    def view(self, cid: str = CID, name: str = "/web", doc: dict | None = None) -> None:
        slot = rp.slot_of(cid)
        self.send(
            rp.entry_message(cid, name, self.table.generation(), slot, self.table.version(slot), encode(doc or VIEW))
        )

    def receive(self) -> tuple[bytes, object]:
        data, fds = rp.recv_message(self.channel, self.inbox)
        return rp.parse_message(data, fds)

    def handed_over(self) -> tuple[socket.socket, int, bytes]:
        """The next connection the replica gives up (skipping its hints)."""
        while True:
            kind, what = self.receive()
            if kind == rp.MSG_CONN:
                fd, index, buf = what  # type: ignore[misc]
                return socket.socket(fileno=fd), index, buf

    def client(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(self.path)
        return sock


@pytest.fixture
def worker(tmp_path):
    w = Worker(tmp_path)
    yield w
    w.stop()


def ready(worker: Worker) -> None:
    """Head and view sent; returns once the replica answers (it reads the pair between requests)."""
    worker.send(rp.MSG_HEAD + HEAD)
    worker.view()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with worker.client() as c:
            c.sendall(b"GET /containers/web/json HTTP/1.1\r\nHost: x\r\n\r\n")
            c.settimeout(0.3)
            try:
                if c.recv(12).startswith(b"HTTP/1.1 200"):
                    return
            except TimeoutError:
                pass
        conn, _, _ = worker.handed_over()
        conn.close()
    raise AssertionError("the replica never answered")


_leftover: dict[int, bytes] = {}


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response (head, body); bytes after it are kept for the next call on ``sock``."""
    buf = _leftover.pop(sock.fileno(), b"")
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, body = buf.split(b"\r\n\r\n", 1)
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(body) < length:
        body += sock.recv(65536)
    if len(body) > length:
        _leftover[sock.fileno()] = body[length:]
    return head, body[:length]


def shaped(version: str) -> bytes:
    return encode(apiversion.container_json(version, json.loads(json.dumps(VIEW)))) + b"\n"


def test_a_request_it_cannot_answer_is_handed_over_with_its_bytes(worker):
    request = b"POST /containers/web/start HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    with worker.client() as c:
        c.sendall(request)
        conn, index, buf = worker.handed_over()
        with conn:
            assert index == 3
            assert buf == request
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
            assert c.recv(100) == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_a_current_view_is_answered_by_id_and_by_name_as_each_version_shows_it(worker):
    ready(worker)
    with worker.client() as c:
        for path, version in (
            (f"/containers/{CID}/json", API_VERSION),
            ("/v1.41/containers/web/json", "1.41"),
            ("/v1.45/containers/web/json", "1.45"),
        ):
            c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n".encode())
            head, body = read_response(c)
            assert head.startswith(b"HTTP/1.1 200 OK\r\nServer: test\r\nDate: ")
            assert b"\r\nConnection: keep-alive\r\nApi-Version: 1.47\r\nContent-Type: application/json\r\n" in head
            assert body == shaped(version)
        # 1.41 shows no annotations and adds the short ID and host name to the aliases; 1.45 does not.
        assert "Annotations" not in json.loads(shaped("1.41"))["HostConfig"]
        old = json.loads(shaped("1.41"))["NetworkSettings"]["Networks"]["front"]
        assert old["Aliases"] == ["web", CID[:12]]
        assert "DNSNames" not in old


def test_two_requests_sent_at_once_get_two_answers(worker):
    ready(worker)
    with worker.client() as c:
        c.sendall(b"GET /containers/web/json HTTP/1.1\r\n\r\n" * 2)
        assert read_response(c)[1] == read_response(c)[1] == shaped(API_VERSION)


def test_a_changed_container_goes_to_the_worker_and_its_key_is_asked_for(worker):
    ready(worker)
    worker.table.bump(rp.slot_of(CID))
    with worker.client() as c:
        c.sendall(b"GET /containers/web/json HTTP/1.1\r\n\r\n")
        kinds = []
        while True:
            kind, what = worker.receive()
            kinds.append((kind, what))
            if kind == rp.MSG_CONN:
                os.close(what[0])  # type: ignore[index]
                break
    assert (rp.MSG_WANTED, b"web") in kinds
    # Sent again at the new version, it is answered.
    worker.view()
    deadline = time.monotonic() + 10
    while True:
        with worker.client() as c:
            c.sendall(b"GET /containers/web/json HTTP/1.1\r\n\r\n")
            c.settimeout(0.3)
            try:
                if c.recv(12) == b"HTTP/1.1 200":
                    break
            except TimeoutError:
                pass
        worker.handed_over()[0].close()
        assert time.monotonic() < deadline


def test_generation_zero_answers_nothing(worker):
    ready(worker)
    worker.table.set_generation(0)
    with worker.client() as c:
        c.sendall(b"GET /containers/web/json HTTP/1.1\r\n\r\n")
        conn, _, buf = worker.handed_over()
        conn.close()
        assert buf == b"GET /containers/web/json HTTP/1.1\r\n\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /containers/web/json?size=1 HTTP/1.1\r\n\r\n",
        b"GET /containers/web/json HTTP/1.0\r\n\r\n",
        b"GET /containers/web/json HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /containers/web/json HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        b"GET /containers/web/json HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /containers/ab12/json HTTP/1.1\r\n\r\n",  # an ID prefix: the worker knows every ID
        b"GET /containers/w%65b/json HTTP/1.1\r\n\r\n",
        b"GET /v1.99/containers/web/json HTTP/1.1\r\n\r\n",  # too new: the worker says so
        b"GET /v1.11/containers/web/json HTTP/1.1\r\n\r\n",  # too old
        b"HEAD /containers/web/json HTTP/1.1\r\n\r\n",
        b"GET /containers/other/json HTTP/1.1\r\n\r\n",
        b"GET /containers/json HTTP/1.1\r\n\r\n",
        b"GET /containers/web/json HTTP/1.1\r\nbroken header line\r\n\r\n",
    ],
)
def test_what_it_leaves_to_the_worker(worker, request_bytes):
    ready(worker)
    with worker.client() as c:
        c.sendall(request_bytes)
        conn, _, buf = worker.handed_over()
        conn.close()
    assert buf == request_bytes


def test_a_renamed_container_is_not_found_under_its_old_name(worker):
    ready(worker)
    worker.table.bump(rp.slot_of(CID))
    worker.view(name="/api", doc={**VIEW, "Name": "/api"})
    with worker.client() as c:
        c.sendall(b"GET /containers/web/json HTTP/1.1\r\n\r\n")
        conn, _, _ = worker.handed_over()
        conn.close()


def test_a_forgotten_container_goes_to_the_worker(worker):
    ready(worker)
    worker.send(rp.MSG_FORGET + CID.encode())
    with worker.client() as c:
        c.sendall(f"GET /containers/{CID}/json HTTP/1.1\r\n\r\n".encode())
        conn, _, _ = worker.handed_over()
        conn.close()


def test_a_connection_handed_back_is_served_from_the_bytes_sent_with_it(worker):
    ready(worker)
    client, server = socket.socketpair()
    with client, server:
        client.settimeout(10)
        first = b"GET /containers/web/json HTTP/1.1\r\n\r\n"
        rp.send_fd(worker.channel, rp.MSG_CONN + bytes([3]) + first, server.fileno())
        assert read_response(client)[1] == shaped(API_VERSION)
        client.sendall(first)
        assert read_response(client)[1] == shaped(API_VERSION)


def test_it_ends_when_the_worker_closes_its_end(tmp_path):
    w = Worker(tmp_path)
    w.channel.close()
    assert w.proc.wait(timeout=10) == 0
    w.listener.close()
    w.table.close()


def test_each_answer_is_logged_while_the_daemon_logs_at_debug_level(tmp_path):
    w = Worker(tmp_path)
    try:
        ready(w)  # answered with the flag off
        w.table.set_flags(rp.FLAG_DEBUG)
        with w.client() as c:
            c.sendall(b"GET /v1.41/containers/web/json HTTP/1.1\r\n\r\n")
            read_response(c)
    finally:
        log = w.stop()
    assert log.count("[engine.replica] GET") == 1
    assert "[engine.replica] GET /v1.41/containers/web/json -> 200 OK" in log


PING = b"HTTP/1.1 200 OK\r\nServer: test\r\n\r\nPragma: no-cache\r\nContent-Length: 2\r\n\r\nOK"
PING_HEAD = b"HTTP/1.1 200 OK\r\nServer: test\r\n\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n"


def test_ping_is_answered_as_the_worker_answered_it_in_the_same_generation(worker):
    ready(worker)
    worker.send(rp.ping_message(b"GET", 1, PING))
    worker.send(rp.ping_message(b"HEAD", 1, PING_HEAD))
    worker.view()  # an entry after the pings: once it is answered, the pings were read
    ready(worker)
    with worker.client() as c:
        c.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = read_response(c)
        assert body == b"OK"
        assert head.startswith(b"HTTP/1.1 200 OK\r\nServer: test\r\nDate: ")
        assert head.endswith(b"\r\nConnection: keep-alive\r\nPragma: no-cache\r\nContent-Length: 2")
        c.sendall(b"HEAD /v1.41/_ping HTTP/1.1\r\n\r\n")
        head, body = read_response(c)  # Content-Length: 0
        assert body == b""
        assert head.endswith(b"\r\nPragma: no-cache\r\nContent-Length: 0")
    # A new generation (a reload): the worker answers until it sends its answer again.
    worker.table.set_generation(2)
    with worker.client() as c:
        c.sendall(b"GET /_ping HTTP/1.1\r\n\r\n")
        conn, _, buf = worker.handed_over()
        conn.close()
    assert buf == b"GET /_ping HTTP/1.1\r\n\r\n"
