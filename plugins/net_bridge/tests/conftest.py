"""Fixtures for the bridge driver's kernel tests.

Everything happens in the test session's own network namespace (see
:mod:`engine.testing.sandbox`: only ``lo`` exists there and no packet can
leave it), plus one namespace per "container", made with
:func:`engine.daemon.netns.create` in a temp directory. Every fixture undoes
what it made: drivers are shut down, bridges and dummy interfaces deleted,
namespaces unbound, servers and proxies killed, sysctls put back; and
:func:`host_clean` checks that the ruleset, the links and the processes are
what they were before the test.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from netbridge_helpers import (
    BUSYBOX,
    delete_link,
    in_ns,
    link_names,
    proxy_pids,
    read_sysctl,
    rules_snapshot,
    write_sysctl,
)
from pyroute2 import IPRoute

from engine.daemon import netns
from engine.drivers.network import NetworkOptions


@pytest.fixture
def host_clean() -> Iterator[None]:
    """Asserts that the test left the ruleset, links and proxies as it found them.

    Creates nothing; it runs last among the fixtures below (they depend on
    it), after they removed what they made.
    """
    rules, links, pids = rules_snapshot(), link_names(), proxy_pids()
    forward = read_sysctl("ip_forward")
    yield
    write_sysctl("ip_forward", forward)
    assert rules_snapshot() == rules, "iptables rules left behind"
    assert link_names() == links, "interfaces left behind"
    assert proxy_pids() == pids, "userland proxies left behind"


@pytest.fixture
def resolv_conf(tmp_path) -> str:
    """A resolv.conf with no nameserver, so address choice depends on routes only."""
    path = tmp_path / "resolv.conf"
    path.write_text("search example.test\n")
    return str(path)


@pytest.fixture
def make_driver(tmp_path, resolv_conf, host_clean) -> Iterator[Callable[..., Any]]:
    """``make_driver(home=None, resolv=None, driver_args=None, **options)`` -> a new :class:`BridgeDriver`.

    ``options`` are fields of :class:`~engine.drivers.network.NetworkOptions`.

    Not initialized yet. ``driver_args`` are more keyword arguments of the
    class (``proc_sys``, ``modprobe``...).

    Creates: the driver's home under ``tmp_path`` (or the given one) and
    whatever its ``init`` makes. Afterwards every driver is shut down and
    the bridge ``engine0`` (if the test made it) is deleted.
    """
    from engine_net_bridge.driver import BridgeDriver

    made: list[BridgeDriver] = []
    existed = link_names()

    def factory(
        home: str | None = None, resolv: str | None = None, driver_args: dict | None = None, **options: Any
    ) -> BridgeDriver:
        driver = BridgeDriver(
            home or str(tmp_path / "root" / "network"),
            NetworkOptions(**options),
            resolv_conf=resolv or resolv_conf,
            **(driver_args or {}),
        )
        made.append(driver)
        return driver

    yield factory
    for driver in reversed(made):
        if driver._networks:
            driver._ready = True
            driver.shutdown()
    for name in link_names() - existed:
        delete_link(name)


@pytest.fixture
def container(tmp_path, host_clean) -> Iterator[Callable[[str], str]]:
    """``container(name)`` -> the path of a new network namespace (lo up), as the daemon makes.

    Creates: ``<tmp>/netns/<name>``, unbound and removed afterwards (its
    interfaces die with it).
    """
    paths: list[str] = []

    def factory(name: str) -> str:
        path = str(tmp_path / "netns" / name)
        netns.create(path)
        paths.append(path)
        return path

    yield factory
    for path in paths:
        netns.remove(path)


@pytest.fixture
def servers(tmp_path, host_clean) -> Iterator[Any]:
    """Starts servers inside container namespaces; kills them afterwards.

    ``servers.httpd(ns, port, text)`` runs ``busybox httpd`` serving
    ``text``; ``servers.udp_echo(ns, port)`` and ``servers.tcp_digest(ns,
    port)`` run small Python servers. Each returns once the server listens.
    """

    class Servers:
        procs: list[subprocess.Popen] = []

        def _wait_port(self, ns: str, port: int, proto: str = "tcp") -> None:
            flag = "-tln" if proto == "tcp" else "-uln"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                out = in_ns(ns, BUSYBOX, "netstat", flag).stdout
                if f":{port} " in out:
                    return
                time.sleep(0.05)
            raise AssertionError(f"nothing listens on {port}/{proto} in {ns}")

        def httpd(self, ns: str, port: int, text: str) -> None:
            root = tmp_path / f"www-{len(self.procs)}"
            root.mkdir()
            (root / "index.html").write_text(text)
            self.procs.append(
                subprocess.Popen(["nsenter", f"--net={ns}", BUSYBOX, "httpd", "-f", "-p", str(port), "-h", str(root)])
            )
            self._wait_port(ns, port)

        def _python(self, ns: str, port: int, proto: str, code: str) -> None:
            self.procs.append(subprocess.Popen(["nsenter", f"--net={ns}", sys.executable, "-c", code, str(port)]))
            self._wait_port(ns, port, proto)

        def udp_echo(self, ns: str, port: int) -> None:
            """Answers each datagram with ``echo:`` + the datagram."""
            self._python(
                ns,
                port,
                "udp",
                (
                    "import socket, sys\n"
                    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                    "s.bind(('0.0.0.0', int(sys.argv[1])))\n"
                    "while True:\n"
                    "    data, peer = s.recvfrom(65535)\n"
                    "    s.sendto(b'echo:' + data, peer)\n"
                ),
            )

        def tcp_digest(self, ns: str, port: int) -> None:
            """Reads a connection to EOF, then answers ``<length> <sha256>``."""
            self._python(
                ns,
                port,
                "tcp",
                (
                    "import hashlib, socket, sys\n"
                    "s = socket.socket()\n"
                    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                    "s.bind(('0.0.0.0', int(sys.argv[1])))\n"
                    "s.listen(8)\n"
                    "while True:\n"
                    "    c, _ = s.accept()\n"
                    "    h, n = hashlib.sha256(), 0\n"
                    "    while True:\n"
                    "        data = c.recv(65536)\n"
                    "        if not data:\n"
                    "            break\n"
                    "        h.update(data); n += len(data)\n"
                    "    c.sendall(f'{n} {h.hexdigest()}'.encode())\n"
                    "    c.close()\n"
                ),
            )

    s = Servers()
    s.procs = []
    yield s
    for proc in s.procs:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.fixture
def dummy(host_clean) -> Iterator[Callable[..., str]]:
    """``dummy(name, address=None, mtu=None, default_route=False)`` -> a stand-in host interface, up.

    It is an empty bridge: this kernel may lack the ``dummy`` module, and an
    interface without ports still carries addresses and routes.
    Creates: the interface (and its address and routes); deleted afterwards.
    """
    names: list[str] = []

    def factory(name: str, address: str | None = None, mtu: int | None = None, default_route: bool = False) -> str:
        with IPRoute() as ipr:
            kwargs: dict[str, Any] = {"mtu": mtu} if mtu else {}
            ipr.link("add", ifname=name, kind="bridge", **kwargs)
            names.append(name)
            index = ipr.link_lookup(ifname=name)[0]
            ipr.link("set", index=index, state="up")
            if address:
                ip, prefix = address.split("/")
                ipr.addr("add", index=index, address=ip, prefixlen=int(prefix))
            if default_route:
                ipr.route("add", dst="0.0.0.0/0", oif=index)
        return name

    yield factory
    for name in names:
        delete_link(name)


@pytest.fixture(autouse=True)
def no_stale_default_bridge() -> Iterator[None]:
    """Start without an ``engine0`` another test's daemon left in this session's namespace.

    Daemons keep their bridge when they stop (as dockerd keeps docker0); these
    tests make their own and expect the default name to be free.
    """
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname="engine0"):
            ipr.link("del", index=index)
    yield
