"""The userland proxy on its own, on loopback: what happens when it runs out of descriptors.

Each test starts ``python -m engine_net_bridge.proxy`` itself with a small
``RLIMIT_NOFILE`` (set in the child before exec, as a daemon with a low
limit would pass it on) and backends in this process; the fixture kills
every proxy it started.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from engine.sys.proc import pid_alive
from engine_net_bridge.portmapper import _package_root

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system time of a process so far."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def open_fds(pid: int, below: int = 1 << 20) -> int:
    """The process's open descriptors numbered under ``below``.

    Only those take a slot under RLIMIT_NOFILE: a socket handed down with
    ``pass_fds`` keeps the parent's number, which in a long test run is past
    the proxy's limit.
    """
    return sum(1 for fd in os.listdir(f"/proc/{pid}/fd") if int(fd) < below)


@pytest.fixture
def start_proxy(tmp_path) -> Iterator[Callable[..., int]]:
    """``start_proxy([(socket, proto, backend_ip, backend_port)], nofile=(soft, hard))`` -> the proxy's PID.

    Creates: proxy processes (killed afterwards) logging to ``tmp_path/proxy.log``.
    """
    pidfds: list[int] = []

    def factory(maps: list[tuple[socket.socket, str, str, int]], nofile: tuple[int, int]) -> int:
        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        argv = [sys.executable, "-S", "-P", "-m", "engine_net_bridge.proxy", "--container", "test"]
        argv += [f"{s.fileno()}:{proto}:{ip}:{port}" for s, proto, ip, port in maps]
        with open(tmp_path / "proxy.log", "ab") as log:
            proc = subprocess.run(
                argv,
                pass_fds=[s.fileno() for s, *_ in maps],
                stdout=subprocess.PIPE,
                stderr=log,
                env={"PYTHONPATH": _package_root()},
                preexec_fn=limit,
                timeout=10,
            )
        pid = int(proc.stdout)
        pidfds.append(os.pidfd_open(pid))
        for s, *_ in maps:
            s.close()  # the proxy has its own copy
        # The PID is printed by the parent at the fork; the child is ready
        # (descriptors in place, every port logged) a moment later.
        log_path = tmp_path / "proxy.log"
        assert eventually(lambda: log_path.read_text().count(f"proxy {pid} ") >= len(maps)), log_path.read_text()
        return pid

    yield factory
    for pidfd in pidfds:
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(pidfd)


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def tcp_echo() -> Iterator[tuple[str, int]]:
    """A threaded TCP echo server on 127.0.0.1 that keeps every connection open until its client closes."""
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server.server_address
    server.shutdown()
    server.server_close()


@pytest.fixture
def udp_echo() -> Iterator[tuple[str, int]]:
    """A UDP server on 127.0.0.1 answering each datagram with ``echo:`` + the datagram."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            sock.sendto(b"echo:" + data, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()
    stop.set()
    thread.join()
    sock.close()


def listener() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock, sock.getsockname()[1]


def udp_front() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


def echo_once(port: int, payload: bytes = b"ping", timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(payload)
        return c.recv(100)


def udp_ask(sock: socket.socket, port: int, payload: bytes) -> bytes:
    sock.settimeout(3)
    sock.sendto(payload, ("127.0.0.1", port))
    return sock.recvfrom(65535)[0]


def eventually(check: Callable[[], Any], timeout: float = 5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def test_the_proxy_raises_its_soft_nofile_limit_to_the_hard_one(start_proxy, tcp_echo):
    sock, _port = listener()
    pid = start_proxy([(sock, "tcp", *tcp_echo)], nofile=(32, 96))
    with open(f"/proc/{pid}/limits") as fh:
        line = next(ln for ln in fh if ln.startswith("Max open files"))
    assert line.split()[3:5] == ["96", "96"]  # never above the hard limit


@pytest.mark.slow
def test_tcp_out_of_descriptors_costs_clients_not_the_proxy_nor_a_spinning_cpu(start_proxy, tcp_echo):
    sock, port = listener()
    pid = start_proxy([(sock, "tcp", *tcp_echo)], nofile=(24, 24))
    clients = []
    for _ in range(20):  # 2 descriptors a relayed connection: about 9 fit
        clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    served = 0
    for c in clients:
        c.settimeout(0.3)
        c.sendall(b"x")
        try:
            served += c.recv(10) == b"x"
        except (TimeoutError, ConnectionError):
            pass
    assert 0 < served < 20 and pid_alive(pid)
    # The rest wait in the backlog; the listener stays readable, yet the
    # proxy must not spin on it.
    before = cpu_seconds(pid)
    time.sleep(1)
    assert cpu_seconds(pid) - before < 0.3
    for c in clients:
        c.close()
    assert eventually(lambda: echo_once(port, b"again") == b"again")
    assert pid_alive(pid)


def test_udp_flows_are_capped(start_proxy, udp_echo):
    udp, udp_port = udp_front()
    pid = start_proxy([(udp, "udp", *udp_echo)], nofile=(48, 48))
    base = open_fds(pid)
    # More clients than descriptors: the least recently used flow makes room.
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(60)]
    try:
        for n, c in enumerate(clients):
            assert udp_ask(c, udp_port, b"%d" % n) == b"echo:%d" % n
        assert open_fds(pid) == base + 24  # half the limit
        assert udp_ask(clients[0], udp_port, b"back") == b"echo:back"  # its flow went, a new one serves it
        assert pid_alive(pid)
    finally:
        for c in clients:
            c.close()


@pytest.mark.slow
def test_udp_without_a_descriptor_drops_the_datagram_not_the_proxy(start_proxy, tcp_echo, udp_echo, tmp_path):
    tcp, tcp_port = listener()
    udp, udp_port = udp_front()
    pid = start_proxy([(tcp, "tcp", *tcp_echo), (udp, "udp", *udp_echo)], nofile=(40, 40))
    first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    newcomer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    conns: list[socket.socket] = []
    try:
        if (40 - open_fds(pid, below=40)) % 2:  # a flow takes one descriptor, a relayed connection two
            assert udp_ask(first, udp_port, b"1") == b"echo:1"
        while open_fds(pid, below=40) < 40:  # every descriptor taken, nobody waiting
            conns.append(socket.create_connection(("127.0.0.1", tcp_port), timeout=5))
            conns[-1].sendall(b"x")
            assert conns[-1].recv(1) == b"x"
        assert open_fds(pid, below=40) == 40
        try:
            answer = udp_ask(newcomer, udp_port, b"lost")
        except TimeoutError:
            answer = None
        # Answered only if a descriptor came free meanwhile (none should): say which.
        assert answer is None, f"answered {answer!r} with {open_fds(pid, below=40)} descriptors open"
        assert pid_alive(pid)
        assert "its datagrams are dropped" in (tmp_path / "proxy.log").read_text()
        conns.pop().close()
        assert eventually(lambda: udp_ask(newcomer, udp_port, b"found") == b"echo:found")
    finally:
        for c in [first, newcomer, *conns]:
            c.close()
