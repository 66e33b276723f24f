"""The API's read replica (engine.server.replica) in a real daemon: it answers inspects with the
worker's bytes, never a stale view, and the daemon serves without it.

Which process answered is read from the daemon's debug log (the replica logs each answer).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest

from engine.testing.procs import children_of, cmdline
from engine.testing.sidebyside import running, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the daemon needs root")


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    # Debug from daemon.json, not -D: a reload can then turn it off (a flag would win over the file).
    workdir = str(tmp_path_factory.mktemp("rr"))
    os.makedirs(os.path.join(workdir, "e"))
    with open(os.path.join(workdir, "e", "daemon.json"), "w") as fh:
        json.dump({"debug": True}, fh)
    with running("engine", workdir) as t:
        yield t


class Client:
    """One keep-alive HTTP/1.1 connection, read by hand: (status, headers, body) per request."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return self.call("GET", path)

    def call(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: docker\r\n"
        if body or method == "POST":
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + body)
        while b"\r\n\r\n" not in self.buf:
            self._more()
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            length = int(headers["content-length"])
            while len(self.buf) < length:
                self._more()
            data, self.buf = self.buf[:length], self.buf[length:]
        elif headers.get("transfer-encoding") != "chunked":
            data = b""  # 204, 304
        else:
            data = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._more()
                size_line, self.buf = self.buf.split(b"\r\n", 1)
                size = int(size_line, 16)
                while len(self.buf) < size + 2:
                    self._more()
                data += self.buf[:size]
                self.buf = self.buf[size + 2 :]
                if size == 0:
                    break
        return status, headers, data

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        self.buf += chunk


def replica_answers(target) -> int:
    log = target.process.log()
    return log.count("[engine.replica] GET ") + log.count("[engine.replica] HEAD ")


def replica_pid(target) -> int:
    """The replica: the worker's child running engine.server.replica (the worker: the master's child)."""
    for pid in children_of(children_of([target.process.proc.pid])):
        if "engine.server.replica" in cmdline(pid):
            return pid
    raise AssertionError("no replica process")


def run_busybox(target, *args: str) -> str:
    return target.docker("run", "-d", *args, "busybox", "sleep", "300").stdout.strip()


def answered_by_replica(target, client: Client, path: str, tries: int = 50) -> tuple[int, dict, bytes]:
    """GET ``path`` until the replica answers it (its view is sent shortly after a change)."""
    for _ in range(tries):
        before = replica_answers(target)
        got = client.get(path)
        deadline = time.monotonic() + 0.5
        while got[0] == 200 and time.monotonic() < deadline:
            if replica_answers(target) > before:  # its log line may trail the answer
                return got
            time.sleep(0.02)
        time.sleep(0.05)
    raise AssertionError(f"the replica never answered {path}:\n{target.process.log()[-3000:]}")


def test_the_replica_answers_with_the_workers_bytes(target):
    cid = run_busybox(target, "--name", "rr-same", "--label", "a=b")
    client = Client(target.socket)
    try:
        for path in (f"/containers/{cid}/json", "/v1.41/containers/rr-same/json", "/v1.43/containers/rr-same/json"):
            status, headers, body = answered_by_replica(target, client, path)
            # ?size=false is a query: the worker answers it, the same document without sizes.
            status2, headers2, body2 = client.get(path + "?size=false")
            assert status == status2 == 200
            assert body == body2
            headers.pop("date")
            headers2.pop("date")
            assert headers == headers2
        assert json.loads(body)["Config"]["Labels"] == {"a": "b"}
        # /_ping, GET and HEAD: ?x=1 is a query, so the worker's answer.
        for method in ("GET", "HEAD"):
            for _ in range(50):
                before = replica_answers(target)
                fresh = Client(target.socket)  # the worker keeps a connection it answered a ping on
                status, headers, body = fresh.call(method, "/_ping")
                fresh.close()
                if wait_for(lambda n=before: replica_answers(target) > n, timeout=0.5, step=0.02):
                    break
            else:
                raise AssertionError(f"the replica never answered {method} /_ping")
            status2, headers2, body2 = client.call(method, "/_ping?x=1")
            assert status == status2 == 200 and body == body2 == (b"OK" if method == "GET" else b"")
            headers.pop("date")
            headers2.pop("date")
            assert headers == headers2
    finally:
        client.close()


def test_a_connection_that_pings_again_and_again_goes_to_the_replica(target):
    """A health check's connection: the worker answers a ping or two, then the replica the rest."""
    client = Client(target.socket)
    try:
        for _ in range(2):
            assert client.call("GET", "/_ping")[:3:2] == (200, b"OK")
        before = replica_answers(target)
        for _ in range(3):
            assert client.call("GET", "/_ping")[:3:2] == (200, b"OK")
        assert wait_for(lambda: replica_answers(target) >= before + 3, timeout=5, step=0.02), target.process.log()[
            -3000:
        ]
    finally:
        client.close()


def test_a_change_is_seen_at_once(target):
    """Every answer after a change shows it, on a connection the replica holds and on new ones."""
    cid = run_busybox(target, "--name", "rr-fresh")
    client = Client(target.socket)
    path = f"/containers/{cid}/json"
    try:
        answered_by_replica(target, client, path)
        for i in range(5):
            assert client.call("POST", f"/containers/{cid}/stop?t=0")[0] == 204
            assert json.loads(client.get(path)[2])["State"]["Running"] is False
            fresh = Client(target.socket)
            assert json.loads(fresh.get(path)[2])["State"]["Running"] is False
            fresh.close()
            assert client.call("POST", f"/containers/{cid}/start")[0] == 204
            doc = json.loads(client.get(path)[2])
            assert doc["State"]["Running"] is True
            assert doc["State"]["Pid"] > 0
            name = f"rr-fresh-{i}"
            assert client.call("POST", f"/containers/{cid}/rename?name={name}")[0] == 204
            assert json.loads(client.get(path)[2])["Name"] == "/" + name
            assert client.get(f"/containers/{name}/json")[0] == 200
            assert client.get(f"/containers/rr-fresh-{i - 1 if i else 'x'}/json")[0] == 404
            # An exec is listed while it runs, and not once it ended.
            status, _, body = client.call("POST", f"/containers/{cid}/exec", json.dumps({"Cmd": ["true"]}).encode())
            assert status == 201
            exec_id = json.loads(body)["Id"]
            assert exec_id in json.loads(client.get(path)[2])["ExecIDs"]
            assert client.get(path)[2] == client.get(path + "?size=false")[2]  # the worker's view
            _, _, body = answered_by_replica(target, client, path)
            assert body == client.get(path + "?size=false")[2]
        # An exit the container makes itself (no request) shows too.
        assert client.call("POST", f"/containers/{cid}/kill?signal=KILL")[0] == 204
        status, _, body = client.call("POST", f"/containers/{cid}/wait")
        assert json.loads(body)["StatusCode"] == 137
        doc = json.loads(client.get(path)[2])
        assert doc["State"]["Running"] is False
        assert doc["State"]["ExitCode"] == 137
        assert client.call("DELETE", f"/containers/{cid}")[0] == 204
        assert client.get(path)[0] == 404
    finally:
        client.close()


def reload(target, config: dict) -> None:
    with open(target.process.config_file, "w") as fh:
        json.dump(config, fh)
    os.kill(target.process.proc.pid, signal.SIGHUP)
    assert wait_for(lambda: target.request("GET", "/info")[1]["Debug"] is config["debug"], timeout=30)


def test_its_debug_log_follows_a_reload(target):
    cid = run_busybox(target, "--name", "rr-debug")
    client = Client(target.socket)
    path = f"/containers/{cid}/json"
    try:
        answered_by_replica(target, client, path)
        reload(target, {"debug": False})
        before = replica_answers(target)
        for _ in range(20):
            assert client.get(path)[0] == 200
        time.sleep(0.5)
        assert replica_answers(target) == before
        reload(target, {"debug": True})
        answered_by_replica(target, client, path)
    finally:
        client.close()


def test_the_daemon_serves_without_its_replica(target):
    cid = run_busybox(target, "--name", "rr-alone")
    client = Client(target.socket)
    try:
        answered_by_replica(target, client, f"/containers/{cid}/json")
        pid = replica_pid(target)
        os.kill(pid, signal.SIGKILL)
        # Reaped once the worker saw its end of the pair close; from then on the worker keeps every
        # connection. (One it handed back in between is lost with the replica.)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10)  # a zombie until reaped
        # The connection the replica held is gone with it; new ones are the worker's.
        for _ in range(3):
            fresh = Client(target.socket)
            assert fresh.get(f"/containers/{cid}/json")[0] == 200
            assert fresh.get("/containers/json")[0] == 200
            fresh.close()
    finally:
        client.close()
