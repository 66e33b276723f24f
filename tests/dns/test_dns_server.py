"""The resolver process (engine.dns.server) over its control socket: sockets handed over, answers over UDP and
TCP, forwarding to an upstream server, detach and stop. Root in the test sandbox (it binds port 53 on
127.0.0.2 for the stand-in upstream server); the process and the servers are stopped afterwards."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from engine.dns import control

pytestmark = pytest.mark.root("network namespaces", sandbox=True)

CID = "e" * 64
UPSTREAM = "127.0.0.2"


class Upstream:
    """A stand-in DNS server on 127.0.0.2:53 (UDP and TCP) that knows ``example.test``; counts the queries."""

    def __init__(self) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((UPSTREAM, 53))
        self.tcp = socket.socket()
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((UPSTREAM, 53))
        self.tcp.listen(4)
        self.queries = 0
        self.stopping = False
        for target in (self._serve_udp, self._serve_tcp):
            threading.Thread(target=target, daemon=True).start()

    def _answer(self, raw: bytes) -> bytes:
        self.queries += 1
        query = DNSRecord.parse(raw)
        reply = query.reply()
        if str(query.q.qname) == "example.test.":
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("192.0.2.7"), ttl=30))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply.pack()

    def _serve_udp(self) -> None:
        while not self.stopping:
            try:
                raw, peer = self.udp.recvfrom(4096)
            except OSError:
                return
            self.udp.sendto(self._answer(raw), peer)

    def _serve_tcp(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                size = struct.unpack("!H", conn.recv(2))[0]
                data = self._answer(conn.recv(size))
                conn.sendall(struct.pack("!H", len(data)) + data)

    def close(self) -> None:
        self.stopping = True
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def resolver(tmp_path) -> Iterator[str]:
    """A resolver process on a temporary home; stopped (SIGKILL if need be) afterwards. Yields the home."""
    home = str(tmp_path / "dns")
    os.makedirs(home)
    with open(os.path.join(home, control.RECORDS), "w") as fh:
        json.dump(
            {
                "networks": {
                    "n": {"name": "front", "endpoints": [{"container": CID, "name": "web", "ipv4": "10.1.0.2"}]}
                },
                "containers": {CID: {"networks": ["n"], "upstream": [UPSTREAM]}},
            },
            fh,
        )
    with open(os.path.join(home, control.LOGFILE), "ab") as log:
        # stderr is its log: a pipe would stay open with the resolver.
        out = subprocess.run(
            [sys.executable, "-m", "engine.dns.server", "--home", home, "--daemon"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            timeout=30,
            check=True,
        )
    pid = int(out.stdout.strip())
    yield home
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def _attach(home: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """Hand a UDP and a TCP socket on 127.0.0.1 to the resolver as the container's; their addresses."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    client = control.Client(home)
    try:
        assert client.request({"op": "attach", "container": CID}, [udp.fileno(), tcp.fileno()]) == {"ok": True}
    finally:
        client.close()
    addresses = udp.getsockname(), tcp.getsockname()
    udp.close()
    tcp.close()
    return addresses


def _udp(address: tuple[str, int], name: str, qtype: str = "A", timeout: float = 5.0) -> DNSRecord:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(DNSRecord.question(name, qtype).pack(), address)
        return DNSRecord.parse(s.recvfrom(4096)[0])


def _tcp(address: tuple[str, int], name: str) -> DNSRecord:
    raw = DNSRecord.question(name, "A").pack()
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(struct.pack("!H", len(raw)) + raw)
        size = struct.unpack("!H", s.recv(2))[0]
        data = b""
        while len(data) < size:
            data += s.recv(size - len(data))
    return DNSRecord.parse(data)


def test_answers_and_forwards_over_udp_and_tcp(resolver):
    upstream = Upstream()
    try:
        udp, tcp = _attach(resolver)
        web = _udp(udp, "web")
        assert [str(rr.rdata) for rr in web.rr] == ["10.1.0.2"] and web.header.rcode == RCODE.NOERROR
        assert [str(rr.rdata) for rr in _tcp(tcp, "web.front").rr] == ["10.1.0.2"]
        assert _udp(udp, "nosuch").header.rcode == RCODE.NXDOMAIN
        assert upstream.queries == 0, "a name of ours or a single label went upstream"
        forwarded = _udp(udp, "example.test")
        assert [str(rr.rdata) for rr in forwarded.rr] == ["192.0.2.7"] and upstream.queries == 1
        assert [str(rr.rdata) for rr in _tcp(tcp, "example.test").rr] == ["192.0.2.7"]
        assert _udp(udp, "other.test").header.rcode == RCODE.NXDOMAIN
        # The records change: the resolver reads them again when told.
        with open(os.path.join(resolver, control.RECORDS), "w") as fh:
            json.dump({"networks": {}, "containers": {CID: {"networks": [], "upstream": []}}}, fh)
        client = control.Client(resolver)
        try:
            assert client.request({"op": "reload"})["ok"]
            assert client.request({"op": "list"})["containers"] == [CID]
            assert _udp(udp, "web").header.rcode == RCODE.NXDOMAIN
            # No upstream server: SERVFAIL at once.
            assert _udp(udp, "example.test").header.rcode == RCODE.SERVFAIL
            with pytest.raises(RuntimeError, match="unknown request"):
                client.request({"op": "dance"})
            assert client.request({"op": "detach", "container": CID})["ok"]
            assert client.request({"op": "list"})["containers"] == []
        finally:
            client.close()
        with pytest.raises(OSError):
            _udp(udp, "web", timeout=0.5)
    finally:
        upstream.close()


def test_an_upstream_that_does_not_answer_gives_servfail(resolver):
    with open(os.path.join(resolver, control.RECORDS), "w") as fh:
        # 127.0.0.3:53: nobody listens, the query is refused (ICMP) or lost.
        json.dump({"containers": {CID: {"networks": [], "upstream": ["127.0.0.3"]}}}, fh)
    client = control.Client(resolver)
    try:
        client.request({"op": "reload"})
    finally:
        client.close()
    udp, _tcp_address = _attach(resolver)
    start = time.monotonic()
    assert _udp(udp, "example.test").header.rcode == RCODE.SERVFAIL
    assert time.monotonic() - start < 4.5


def test_stop_removes_the_control_socket(resolver):
    client = control.Client(resolver)
    try:
        assert client.request({"op": "stop"})["ok"]
    finally:
        client.close()
    deadline = time.monotonic() + 10
    while os.path.exists(control.control_path(resolver)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(control.control_path(resolver))
    assert not os.path.exists(os.path.join(resolver, control.PIDFILE))
    with pytest.raises(OSError):
        control.Client(resolver)
