"""The network driver conformance suite: real network namespaces, interfaces and ports on this host's kernel.

Every network driver (``bridge``, third-party ones) proves itself against
the same tests. A driver's own test module is a few lines::

    from engine.testing.nettest import NetworkDriverConformance

    class TestBridge(NetworkDriverConformance):
        driver_name = "bridge"

The suite loads the driver through its entry point (so it tests what is
installed), probes it and skips every test with the probe's reason when the
driver cannot run here; a test whose options :meth:`NetworkDriver.init`
refuses with :class:`~engine.errors.NotSupported` (``icc`` off without
``br_netfilter``) skips with that reason too.

Tests run as root in the session sandbox (:mod:`engine.testing.sandbox`:
its own network namespace, where only ``lo`` exists), so nothing they do
reaches the host's network. "Containers" are network namespaces bound to
files, as the daemon makes them; traffic goes between them, the sandbox's
namespace and its loopback only. The :class:`Harness` undoes everything:
it shuts down the drivers still running, and then checks that the
sandbox's links, iptables rules and processes are what they were before
the test (the bridge a driver reported in ``init`` may stay, as ``docker0``
does), removing what was left before it fails the test.

What the suite checks, beyond :class:`engine.drivers.network.NetworkDriver`'s
docstrings: ``init``'s facts; ``eth0`` in the container's namespace with
the address, MAC and MTU given, a default route via the gateway, and two
containers reaching each other; requested addresses and their conflicts,
with nothing left half-made; release twice; published ports held on the
host and reaching the container, released, ephemeral, all or none on a
conflict; links (and with ``icc`` off, that only a link lets traffic
through); a daemon restart (``close``, a new instance on the same home,
``restore``, ``prune``); ``close`` leaving the host as it is and
``shutdown`` undoing it; ``networks()`` listing the containers. For a
driver with user-defined networks (skipped for one whose
``create_network`` says NotSupported): subnets from the default address
pools or as asked for, with moby's refusals (overlap, bad IPAM config) and
nothing half-made; the IPAM (ranges, gateways, auxiliary addresses,
requested and taken addresses); a container on two networks (``eth0``,
``eth1``, the default route moved by ``set_gateway``, ports following it);
isolation between networks and ``internal`` ones; removal refused while
containers are joined; networks surviving a restart; IPv6 subnets.

Helpers for other tests: :func:`host_links`, :func:`iptables_rules`,
:func:`live_processes` (what a driver may change on the host),
:func:`netns_view` (a namespace's interfaces and routes, through
pyroute2), :func:`free_port`, :func:`can_bind` (is a host port held?),
:func:`fetch` and :func:`fetch_in` (connect and read a server's token).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_interface
from typing import Any, ClassVar

import pytest
from pyroute2 import IPRoute, NetlinkError, NetNS

from engine.daemon import netns
from engine.drivers.discovery import load_drivers
from engine.drivers.ipam import IPAMConfig, PoolSpec
from engine.drivers.network import NetworkDriver, NetworkOptions, NetworkSpec, link_env
from engine.errors import Conflict, Forbidden, InvalidParameter, NotFound, NotSupported, Unavailable
from engine.testing.sandbox import in_sandbox

__all__ = [
    "Harness",
    "HostState",
    "NetnsView",
    "NetworkDriverConformance",
    "fetch",
    "fetch_in",
    "free_port",
    "host_links",
    "iptables_rules",
    "live_processes",
    "netns_view",
]

#: What ``init`` must report (``NetworkDriver.init``).
FACTS = ("Bridge", "IPAddress", "IPPrefixLen", "Subnet", "Gateway", "FixedCIDR", "Mtu", "MacAddress", "NetworkID")
#: What ``allocate_interface`` must return.
SETTINGS = (
    "IPAddress",
    "IPPrefixLen",
    "Gateway",
    "MacAddress",
    "Bridge",
    "Mtu",
    "EndpointID",
    "NetworkID",
    "HostVeth",
    "SandboxKey",
)
#: The connect timeout of the reachability checks: a dropped packet is
#: the expected answer in some of them, so it is waited for this long.
CONNECT_TIMEOUT = 2.0
RT_TABLE_MAIN = 254


# --------------------------------------------------------------------------
# what a network driver changes on the host


def host_links() -> set[str]:
    """Names of the links of the calling thread's network namespace."""
    with IPRoute() as ipr:
        return {msg.get_attr("IFLA_IFNAME") for msg in ipr.get_links()}


def iptables_rules() -> str:
    """``iptables-save`` of the filter and nat tables without counters ("" without iptables)."""
    if shutil.which("iptables-save") is None:
        return ""
    out = []
    for table in ("filter", "nat"):
        text = subprocess.run(
            ["iptables-save", "-t", table], capture_output=True, text=True, check=True, timeout=60
        ).stdout
        # Comments carry dates and chain lines carry counters: neither is state.
        out += [line.split(" [", 1)[0] for line in text.splitlines() if not line.startswith("#")]
    return "\n".join(out)


def live_processes() -> set[int]:
    """PIDs of the processes that run (zombies left out: they hold nothing)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != b"Z":
            found.add(int(entry))
    return found


@dataclass(frozen=True)
class HostState:
    """What a network driver may change on the host: links, iptables rules, processes."""

    links: frozenset[str]
    rules: str
    processes: frozenset[int]

    @classmethod
    def now(cls) -> HostState:
        return cls(frozenset(host_links()), iptables_rules(), frozenset(live_processes()))

    def differences(
        self, other: HostState, allowed_links: Collection[str] = (), allowed_processes: Collection[int] = ()
    ) -> list[str]:
        """How ``other`` differs from this state (new links and processes that are allowed aside), in words."""
        found = []
        links = other.links - self.links - set(allowed_links)
        if links or self.links - other.links:
            found.append(f"links: {sorted(links)} added, {sorted(self.links - other.links)} removed")
        if other.rules != self.rules:
            before, after = set(self.rules.splitlines()), set(other.rules.splitlines())
            found.append(f"iptables: {sorted(after - before)} added, {sorted(before - after)} removed")
        processes = other.processes - self.processes - set(allowed_processes)
        if processes:
            found.append(f"processes: {sorted(processes)}")
        return found


# --------------------------------------------------------------------------
# inside a container's namespace


@dataclass
class NetnsView:
    """A network namespace's interfaces and main routing table, as pyroute2 reads them.

    ``eth0`` and ``addresses`` describe ``eth0`` (IPv4); ``interfaces`` has
    every link but ``lo``: name -> ``mac``, ``mtu``, ``up``, ``addresses``
    (IPv4 then global IPv6, ``ip/prefix``). ``default_via`` and
    ``default_dev`` are the IPv4 default route's, ``default_via6`` the IPv6 one's.
    """

    links: set[str]
    eth0: dict[str, Any] | None = None
    addresses: list[str] = field(default_factory=list)
    default_via: str | None = None
    default_dev: str | None = None
    default_via6: str | None = None
    interfaces: dict[str, dict[str, Any]] = field(default_factory=dict)


def netns_view(path: str) -> NetnsView:
    """Read the namespace bound at ``path`` (each interface's MAC, MTU, state and addresses; the default routes)."""
    with NetNS(path) as ns:
        links = {msg.get_attr("IFLA_IFNAME"): msg for msg in ns.get_links()}
        names = {msg["index"]: name for name, msg in links.items()}
        view = NetnsView(set(links))
        for name, msg in links.items():
            if name == "lo":
                continue
            v4 = [
                f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                for a in ns.get_addr(family=socket.AF_INET, index=msg["index"])
            ]
            v6 = [
                f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                for a in ns.get_addr(family=socket.AF_INET6, index=msg["index"])
                if not a.get_attr("IFA_ADDRESS").startswith("fe80:")
            ]
            view.interfaces[name] = {
                "mac": msg.get_attr("IFLA_ADDRESS"),
                "mtu": msg.get_attr("IFLA_MTU"),
                "up": bool(msg["flags"] & 1),
                "addresses": v4 + v6,
            }
            if name == "eth0":
                view.eth0 = {key: view.interfaces[name][key] for key in ("mac", "mtu", "up")}
                view.addresses = v4
        for route in ns.get_routes(family=socket.AF_INET):
            if route.get_attr("RTA_TABLE") == RT_TABLE_MAIN and route["dst_len"] == 0:
                view.default_via = route.get_attr("RTA_GATEWAY")
                view.default_dev = names.get(route.get_attr("RTA_OIF"))
        for route in ns.get_routes(family=socket.AF_INET6):
            if route.get_attr("RTA_TABLE") == RT_TABLE_MAIN and route["dst_len"] == 0 and route.get_attr("RTA_GATEWAY"):
                view.default_via6 = route.get_attr("RTA_GATEWAY")
        return view


def free_port(proto: str = "tcp") -> int:
    """A port nothing listens on now, outside the usual ephemeral range (drivers hand those out)."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    for _attempt in range(200):
        port = 20000 + secrets.randbelow(10000)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port between 20000 and 30000")


def can_bind(port: int, proto: str = "tcp", host: str = "0.0.0.0") -> bool:
    """Whether a server could bind ``host:port`` now (no one holds it)."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        if proto == "tcp":
            # As servers do: connections the proxy served linger in TIME_WAIT
            # on the port, and only a listening socket really holds it.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            return False
    return True


_CLIENT = """
import socket, sys
proto, host, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
try:
    if proto == "tcp":
        with socket.create_connection((host, port), timeout=timeout) as s:
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    else:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(b"?", (host, port))
            data = s.recvfrom(4096)[0]
except OSError:
    data = b""
sys.stdout.write(data.decode())
"""

_SERVER = """
import socket, sys
proto, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
try:
    # Both IPv4 and IPv6 where the namespace has IPv6.
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
except OSError:
    s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
if proto == "tcp":
    s.listen(16)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        c.sendall(token)
        c.close()
else:
    print("ready", flush=True)
    while True:
        _, peer = s.recvfrom(65535)
        s.sendto(token, peer)
"""


def fetch(host: str, port: int, proto: str = "tcp", timeout: float = CONNECT_TIMEOUT) -> str:
    """Connect from the sandbox's namespace and return what the server sent ("" if nothing came)."""
    return subprocess.run(
        [sys.executable, "-S", "-c", _CLIENT, proto, host, str(port), str(timeout)],
        capture_output=True,
        text=True,
        timeout=timeout + 30,
    ).stdout


def fetch_in(path: str, host: str, port: int, proto: str = "tcp", timeout: float = CONNECT_TIMEOUT) -> str:
    """As :func:`fetch`, from inside the namespace bound at ``path``."""
    return subprocess.run(
        ["nsenter", f"--net={path}", sys.executable, "-S", "-c", _CLIENT, proto, host, str(port), str(timeout)],
        capture_output=True,
        text=True,
        timeout=timeout + 30,
    ).stdout


# --------------------------------------------------------------------------
# the harness


def container_id() -> str:
    """A random container ID (64 hex digits)."""
    return secrets.token_hex(32)


class Harness:
    """Drivers, "containers" and servers for one test; :meth:`cleanup` undoes them all.

    :param entry_cls: the driver class under test.
    :param name: its entry-point name.
    :param options: the options it is constructed with (tests change some).
    :param tmp: a directory for homes and namespace files.
    """

    def __init__(self, entry_cls: type[NetworkDriver], name: str, options: NetworkOptions, tmp: str) -> None:
        self.cls = entry_cls
        self.name = name
        self.options = options
        self.tmp = tmp
        self.baseline = HostState.now()
        self.forward = _read("/proc/sys/net/ipv4/ip_forward")
        #: Drivers initialized and neither shut down nor closed.
        self.live: list[NetworkDriver] = []
        #: Bridges the drivers reported: they may stay after shutdown, as docker0 does.
        self.bridges: set[str] = set()
        self.namespaces: list[str] = []
        self.servers: list[subprocess.Popen] = []
        #: User-defined networks made through :meth:`network` (deleted by :meth:`cleanup` if still there).
        self.networks: list[tuple[NetworkDriver, str]] = []

    # drivers
    def start(self, home: str | None = None, **changes: Any) -> tuple[NetworkDriver, dict]:
        """A new driver on ``home`` (default: a fresh one) with ``changes`` to the options, initialized.

        Skips the test when the probe or ``init`` says the driver cannot run
        here with these options.
        """
        options = dataclasses.replace(self.options, **changes)
        home = home or os.path.join(self.tmp, f"home-{secrets.token_hex(4)}")
        try:
            self.cls.probe(home, options)
        except NotSupported as exc:
            pytest.skip(f"network driver {self.name} not supported here with {changes or 'its options'}: {exc}")
        os.makedirs(home, mode=0o700, exist_ok=True)
        driver = self.cls(home, options)
        try:
            facts = driver.init()
        except NotSupported as exc:
            driver.shutdown()
            pytest.skip(f"network driver {self.name} cannot init here with {changes or 'its options'}: {exc}")
        self.live.append(driver)
        self.bridges.add(str(facts.get("Bridge") or ""))
        return driver, facts

    def restart(self, driver: NetworkDriver) -> tuple[NetworkDriver, dict]:
        """What a daemon restart does: ``close()``, then a new instance on the same home and options, initialized."""
        self.close(driver)
        options = driver.options
        changes = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
        return self.start(driver.home, **changes)

    def close(self, driver: NetworkDriver) -> None:
        driver.close()
        self.live.remove(driver)

    def shutdown(self, driver: NetworkDriver) -> None:
        driver.shutdown()
        self.live.remove(driver)

    def network(self, driver: NetworkDriver, name: str, **spec: Any) -> dict:
        """``driver.create_network`` with a new ID; skips the test when the driver has no user-defined networks.

        :param spec: fields of :class:`~engine.drivers.network.NetworkSpec`
            (``ipam`` as a list of API dicts or :class:`IPAMConfig`).
        """
        ipam = tuple(c if isinstance(c, IPAMConfig) else IPAMConfig.from_api(c) for c in spec.pop("ipam", ()))
        network_id = secrets.token_hex(32)
        try:
            made = driver.create_network(NetworkSpec(network_id, name, ipam=ipam, **spec))
        except NotSupported as exc:
            if "not initialized" in str(exc):
                raise
            pytest.skip(f"network driver {self.name} has no user-defined networks: {exc}")
        self.networks.append((driver, network_id))
        return made

    # containers
    def container(self, name: str) -> str:
        """A new network namespace bound to a file (``lo`` up), as the daemon makes one for a container."""
        path = os.path.join(self.tmp, "netns", f"{name}-{secrets.token_hex(4)}")
        netns.create(path)
        self.namespaces.append(path)
        return path

    def server(self, path: str, port: int, token: str, proto: str = "tcp") -> None:
        """A server in the namespace at ``path`` answering every connection (or datagram) with ``token``."""
        proc = subprocess.Popen(
            ["nsenter", f"--net={path}", sys.executable, "-S", "-c", _SERVER, proto, str(port), token],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.servers.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise AssertionError(f"the {proto} server on port {port} in {path} did not start")

    def changes_since(self, before: HostState) -> list[str]:
        """What changed on the host since ``before``, but for the drivers' bridges and the test's servers."""
        return before.differences(HostState.now(), self.bridges, {proc.pid for proc in self.servers})

    # the end
    def cleanup(self) -> list[str]:
        """Shut down, stop and remove everything; return what the drivers left on the host."""
        problems: list[str] = []
        # A network lives on in the driver that restarted on its home.
        for driver in reversed(self.live):
            for _maker, network_id in reversed(self.networks):
                try:
                    driver.prune([])
                    driver.delete_network(network_id)
                except NotFound:
                    pass  # deleted by the test, or another home's
                except Exception as exc:  # reported below, the rest still cleaned
                    problems.append(f"delete_network raised {type(exc).__name__}: {exc}")
        for driver in reversed(self.live):
            try:
                driver.shutdown()
            except Exception as exc:  # reported below, the rest still cleaned
                problems.append(f"shutdown raised {type(exc).__name__}: {exc}")
        self.live.clear()
        for proc in self.servers:
            proc.kill()
            proc.wait()
        left = self.baseline.differences(HostState.now(), allowed_links=self.bridges)
        # Whatever was left goes, so the next test starts clean.
        for pid in HostState.now().processes - self.baseline.processes:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for path in self.namespaces:
            netns.remove(path)
        with IPRoute() as ipr:
            for name in host_links() - self.baseline.links:
                try:
                    ipr.link("del", ifname=name)
                except NetlinkError:
                    pass  # a veth whose peer went first
        if iptables_rules() != self.baseline.rules:
            _restore_iptables(self.baseline.rules)
        _write("/proc/sys/net/ipv4/ip_forward", self.forward)
        return problems + left


def _read(path: str) -> str:
    with open(path, encoding="ascii") as fh:
        return fh.read().strip()


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(value + "\n")


def _restore_iptables(saved: str) -> None:
    """Put the filter and nat tables back as :func:`iptables_rules` saw them."""
    subprocess.run(["iptables-restore"], input=saved + "\n", text=True, check=True, timeout=60)


# --------------------------------------------------------------------------
# the suite


class NetworkDriverConformance:
    """Tests every network driver must pass; subclass it with ``driver_name`` set."""

    pytestmark: ClassVar[list[Any]] = [pytest.mark.root("its own network namespace", sandbox=True)]

    #: The entry-point name of the driver under test.
    driver_name: ClassVar[str] = ""
    #: The options it is constructed with (each test may change some).
    driver_options: ClassVar[NetworkOptions] = NetworkOptions()

    @pytest.fixture
    def net(self, tmp_path: Any) -> Iterator[Harness]:
        """The :class:`Harness` for the driver under test; fails the test if the host is not left as found."""
        if not self.driver_name:
            pytest.fail("set driver_name on the NetworkDriverConformance subclass")
        if os.geteuid() != 0 or not in_sandbox():
            pytest.skip("needs root inside the test sandbox (its own network namespace)")
        entries = load_drivers("network")
        entry = entries.get(self.driver_name)
        if entry is None:
            pytest.fail(f"network driver {self.driver_name!r} is not installed (installed: {', '.join(entries)})")
        if not entry.loaded:
            pytest.fail(f"network driver {self.driver_name!r} failed to load: {entry.error}")
        harness = Harness(entry.cls, self.driver_name, self.driver_options, str(tmp_path))
        try:
            yield harness
        finally:
            left = harness.cleanup()
        if left:
            pytest.fail("the driver left host state behind: " + "; ".join(left))

    # ---- init

    def test_init_reports_its_network(self, net: Harness) -> None:
        _driver, facts = net.start()
        assert set(FACTS) <= set(facts), f"missing: {set(FACTS) - set(facts)}"
        gateway = IPv4Interface(f"{facts['Gateway']}/{facts['IPPrefixLen']}")
        assert str(gateway.network) == facts["Subnet"]
        assert facts["IPAddress"] == facts["Gateway"]
        assert int(facts["Mtu"]) > 0 and facts["NetworkID"]

    def test_methods_need_init(self, net: Harness) -> None:
        driver = net.cls(os.path.join(net.tmp, "uninitialized"), net.options)
        with pytest.raises(NotSupported):
            driver.allocate_interface(container_id(), {"NetnsPath": net.container("early")})
        assert driver.settings(container_id()) is None

    # ---- interfaces

    def test_interface_in_a_real_namespace(self, net: Harness) -> None:
        driver, facts = net.start()
        cid = container_id()
        path = net.container("web")
        settings = driver.allocate_interface(cid, {"NetnsPath": path, "Name": "web"})
        assert set(SETTINGS) <= set(settings), f"missing: {set(SETTINGS) - set(settings)}"
        assert settings["SandboxKey"] == path and settings["Gateway"] == facts["Gateway"]
        assert settings["NetworkID"] == facts["NetworkID"] and settings["Bridge"] == facts["Bridge"]
        address = IPv4Interface(f"{settings['IPAddress']}/{settings['IPPrefixLen']}")
        assert str(address.network) == facts["Subnet"] and address.ip != IPv4Address(facts["Gateway"])
        view = netns_view(path)
        assert view.eth0 is not None, f"no eth0 in the container's namespace: {view.links}"
        assert view.eth0["up"] and view.addresses == [str(address)]
        assert view.eth0["mac"] == settings["MacAddress"].lower() and view.eth0["mtu"] == settings["Mtu"]
        assert view.default_via == facts["Gateway"]
        assert settings["HostVeth"] in host_links()
        current = driver.settings(cid)
        assert current is not None and {k: current[k] for k in SETTINGS} == {k: settings[k] for k in SETTINGS}

    def test_two_containers_reach_each_other(self, net: Harness) -> None:
        driver, _facts = net.start()
        a, b = container_id(), container_id()
        web = driver.allocate_interface(a, {"NetnsPath": net.container("web")})
        db = driver.allocate_interface(b, {"NetnsPath": net.container("db")})
        assert web["IPAddress"] != db["IPAddress"] and web["MacAddress"] != db["MacAddress"]
        net.server(db["SandboxKey"], 5432, "from db")
        assert fetch_in(web["SandboxKey"], db["IPAddress"], 5432) == "from db"

    def test_requested_address_and_mac(self, net: Harness) -> None:
        driver, facts = net.start()
        subnet = IPv4Interface(f"{facts['Gateway']}/{facts['IPPrefixLen']}").network
        wanted = str(subnet.network_address + 77)
        mac = "02:42:0a:0b:0c:0d"
        settings = driver.allocate_interface(
            container_id(), {"NetnsPath": net.container("a"), "RequestedIP": wanted, "RequestedMac": mac}
        )
        assert settings["IPAddress"] == wanted and settings["MacAddress"] == mac
        view = netns_view(settings["SandboxKey"])
        assert view.eth0 is not None and view.eth0["mac"] == mac

    def test_conflicts_leave_nothing(self, net: Harness) -> None:
        driver, _facts = net.start()
        first = driver.allocate_interface(container_id(), {"NetnsPath": net.container("a")})
        before = host_links()
        other, path = container_id(), net.container("b")
        with pytest.raises(Conflict):
            driver.allocate_interface(other, {"NetnsPath": path, "RequestedIP": first["IPAddress"]})
        with pytest.raises(Conflict):
            driver.allocate_interface(container_id(), {"NetnsPath": first["SandboxKey"]})  # it has an eth0
        assert driver.settings(other) is None and netns_view(path).eth0 is None
        assert host_links() == before
        with pytest.raises(InvalidParameter):
            driver.allocate_interface(other, {"Name": "no-namespace"})
        with pytest.raises(InvalidParameter):
            driver.allocate_interface(other, {"NetnsPath": os.path.join(net.tmp, "no-such-namespace")})
        assert driver.settings(other) is None and host_links() == before

    def test_release_twice(self, net: Harness) -> None:
        driver, _facts = net.start()
        cid = container_id()
        settings = driver.allocate_interface(cid, {"NetnsPath": net.container("a")})
        driver.allocate_ports(cid, {"80/tcp": [{}]})
        driver.release_interface(cid)
        driver.release_interface(cid)
        driver.release_interface(container_id())  # never allocated
        assert driver.settings(cid) is None
        assert settings["HostVeth"] not in host_links()
        assert netns_view(settings["SandboxKey"]).eth0 is None
        # The address is free again.
        again = driver.allocate_interface(
            container_id(), {"NetnsPath": net.container("b"), "RequestedIP": settings["IPAddress"]}
        )
        assert again["IPAddress"] == settings["IPAddress"]

    # ---- ports

    def test_published_port_is_held_and_reaches_the_container(self, net: Harness) -> None:
        driver, _facts = net.start()
        cid = container_id()
        settings = driver.allocate_interface(cid, {"NetnsPath": net.container("web")})
        net.server(settings["SandboxKey"], 80, "hello from web")
        tcp, udp = free_port("tcp"), free_port("udp")
        bound = driver.allocate_ports(cid, {"80/tcp": [{"HostPort": str(tcp)}], "53/udp": [{"HostPort": str(udp)}]})
        assert bound == {
            "80/tcp": [{"HostIp": net.options.default_ip, "HostPort": str(tcp)}],
            "53/udp": [{"HostIp": net.options.default_ip, "HostPort": str(udp)}],
        }
        current = driver.settings(cid)
        assert current is not None and current["Ports"] == bound
        assert not can_bind(tcp) and not can_bind(udp, "udp")
        assert fetch("127.0.0.1", tcp) == "hello from web"
        driver.release_ports(cid)
        assert can_bind(tcp) and can_bind(udp, "udp")
        assert fetch("127.0.0.1", tcp) == ""
        current = driver.settings(cid)
        assert current is not None and not current["Ports"]
        assert netns_view(settings["SandboxKey"]).eth0 is not None, "release_ports took the interface"
        driver.release_ports(cid)  # nothing left to release

    def test_ephemeral_port_and_one_port_helper(self, net: Harness) -> None:
        driver, _facts = net.start()
        cid = container_id()
        driver.allocate_interface(cid, {"NetnsPath": net.container("a")})
        bound = driver.allocate_ports(cid, {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]})
        ((binding,),) = bound.values()
        port = int(binding["HostPort"])
        assert binding["HostIp"] == "127.0.0.1" and 0 < port < 65536
        assert not can_bind(port, host="127.0.0.1")
        tcp = free_port()
        assert driver.allocate_port(cid, {"Port": "9000/tcp", "HostPort": str(tcp)}) == {
            "Port": "9000/tcp",
            "HostIp": net.options.default_ip,
            "HostPort": str(tcp),
        }
        assert not can_bind(tcp)

    def test_port_conflicts_leave_nothing(self, net: Harness) -> None:
        driver, _facts = net.start()
        a, b = container_id(), container_id()
        web = driver.allocate_interface(a, {"NetnsPath": net.container("a")})
        driver.allocate_interface(b, {"NetnsPath": net.container("b")})
        net.server(web["SandboxKey"], 80, "still a")
        taken, free = free_port(), free_port()
        driver.allocate_ports(a, {"80/tcp": [{"HostPort": str(taken)}]})
        with pytest.raises(Conflict):
            driver.allocate_ports(b, {"81/tcp": [{"HostPort": str(free)}], "80/tcp": [{"HostPort": str(taken)}]})
        current = driver.settings(b)
        assert current is not None and not current["Ports"]
        assert can_bind(free), "a port of the failed publication stayed held"
        assert fetch("127.0.0.1", taken) == "still a"
        # A port another program holds.
        with socket.socket() as holder:
            holder.bind(("0.0.0.0", free))
            holder.listen(1)
            with pytest.raises(Conflict):
                driver.allocate_ports(b, {"81/tcp": [{"HostPort": str(free)}]})
        with pytest.raises(NotFound):
            driver.allocate_ports(container_id(), {"80/tcp": [{}]})

    # ---- links

    def test_link_enable_disable(self, net: Harness) -> None:
        driver, _facts = net.start()
        a, b = container_id(), container_id()
        web = driver.allocate_interface(a, {"NetnsPath": net.container("web")})
        db = driver.allocate_interface(b, {"NetnsPath": net.container("db")})
        driver.link(a, b, ["5432/tcp"], True)
        driver.link(a, b, ["5432/tcp"], True)  # twice changes nothing
        driver.link({"IPAddress": web["IPAddress"]}, {"IPAddress": db["IPAddress"]}, ["5432/tcp"], False)
        driver.link(a, b, ["5432/tcp"], False)  # a link that is not there
        with pytest.raises(NotFound):
            driver.link(a, container_id(), ["5432/tcp"], True)
        with pytest.raises(InvalidParameter):
            driver.link(a, b, ["not-a-port"], True)
        assert driver.link_env("/web/db", db["IPAddress"], ["5432/tcp"]) == link_env(
            "/web/db", db["IPAddress"], ["5432/tcp"]
        )

    def test_without_icc_only_a_link_lets_traffic_through(self, net: Harness) -> None:
        before = HostState.now()
        driver, _facts = net.start(icc=False)
        a, b = container_id(), container_id()
        web = driver.allocate_interface(a, {"NetnsPath": net.container("web")})
        db = driver.allocate_interface(b, {"NetnsPath": net.container("db")})
        net.server(db["SandboxKey"], 5432, "from db")
        assert fetch_in(web["SandboxKey"], db["IPAddress"], 5432) == ""
        driver.link(a, b, ["5432/tcp"], True)
        assert fetch_in(web["SandboxKey"], db["IPAddress"], 5432) == "from db"
        driver.link(a, b, ["5432/tcp"], False)
        assert fetch_in(web["SandboxKey"], db["IPAddress"], 5432) == ""
        # What icc off and a link add to the host goes with shutdown.
        driver.link(a, b, ["5432/tcp"], True)
        net.shutdown(driver)
        assert net.changes_since(before) == []

    # ---- a daemon restart

    def test_restart_restores_and_prunes(self, net: Harness) -> None:
        first, _facts = net.start()
        alive, dead = container_id(), container_id()
        web = first.allocate_interface(alive, {"NetnsPath": net.container("web"), "Name": "web"})
        gone = first.allocate_interface(dead, {"NetnsPath": net.container("gone"), "Name": "gone"})
        net.server(web["SandboxKey"], 80, "survived")
        port, lost = free_port(), free_port()
        first.allocate_ports(alive, {"80/tcp": [{"HostPort": str(port)}]})
        first.allocate_ports(dead, {"80/tcp": [{"HostPort": str(lost)}]})
        before = first.settings(alive)

        second, _facts = net.restart(first)
        restored = second.restore(alive)
        assert restored is not None and before is not None
        for key in ("IPAddress", "MacAddress", "EndpointID", "HostVeth", "Ports"):
            assert restored[key] == before[key], key
        assert second.restore(container_id()) is None
        assert second.prune([alive]) == [dead]
        assert second.settings(dead) is None and second.settings(alive) is not None
        assert netns_view(gone["SandboxKey"]).eth0 is None and gone["HostVeth"] not in host_links()
        assert can_bind(lost) and not can_bind(port)
        assert fetch("127.0.0.1", port) == "survived"
        # The restored address stays taken.
        other = second.allocate_interface(container_id(), {"NetnsPath": net.container("new")})
        assert other["IPAddress"] != web["IPAddress"]

    def test_close_leaves_the_host_as_it_is(self, net: Harness) -> None:
        driver, _facts = net.start()
        cid = container_id()
        settings = driver.allocate_interface(cid, {"NetnsPath": net.container("web")})
        net.server(settings["SandboxKey"], 80, "running on")
        port = free_port()
        driver.allocate_ports(cid, {"80/tcp": [{"HostPort": str(port)}]})
        state = HostState.now()
        net.close(driver)
        assert net.changes_since(state) == []
        assert netns_view(settings["SandboxKey"]).eth0 is not None
        assert fetch("127.0.0.1", port) == "running on"
        # The next daemon adopts the container (and the harness shuts it down).
        again, _facts = net.start(driver.home)
        assert again.restore(cid) is not None

    def test_shutdown_undoes_everything(self, net: Harness) -> None:
        before = HostState.now()
        driver, _facts = net.start()
        a, b = container_id(), container_id()
        web = driver.allocate_interface(a, {"NetnsPath": net.container("a")})
        db = driver.allocate_interface(b, {"NetnsPath": net.container("b")})
        driver.allocate_ports(a, {"80/tcp": [{}], "53/udp": [{}]})
        driver.allocate_ports(b, {"80/tcp": [{"HostPort": str(free_port())}]})
        driver.link(a, b, ["80/tcp"], True)
        net.shutdown(driver)
        assert net.changes_since(before) == []
        assert netns_view(web["SandboxKey"]).eth0 is None and netns_view(db["SandboxKey"]).eth0 is None

    # ---- /networks

    def test_networks_list_the_containers(self, net: Harness) -> None:
        driver, facts = net.start()
        cid = container_id()
        settings = driver.allocate_interface(cid, {"NetnsPath": net.container("web"), "Name": "/web"})
        networks = driver.networks()
        assert networks, "a network driver provides at least one network"
        (mine,) = [n for n in networks if cid in (n.get("Containers") or {})]
        for key in ("Name", "Id", "Driver", "Scope", "IPAM", "Containers", "Options"):
            assert key in mine, key
        assert {"Subnet": facts["Subnet"], "Gateway": facts["Gateway"]}.items() <= mine["IPAM"]["Config"][0].items()
        assert mine["Containers"][cid] == {
            "Name": "web",
            "EndpointID": settings["EndpointID"],
            "MacAddress": settings["MacAddress"],
            "IPv4Address": f"{settings['IPAddress']}/{settings['IPPrefixLen']}",
            "IPv6Address": "",
        }
        driver.release_interface(cid)
        assert not any(cid in (n.get("Containers") or {}) for n in driver.networks())

    # ---- user-defined networks (libnetwork's model)

    def test_network_from_the_default_pools(self, net: Harness) -> None:
        before = HostState.now()
        driver, facts = net.start()
        made = net.network(driver, "front", labels={"tier": "web"}, options={"custom.option": "x"})
        assert made["Name"] == "front" and made["Scope"] == "local" and made["Containers"] == {}
        assert made["Labels"] == {"tier": "web"} and made["Options"] == {"custom.option": "x"}
        (config,) = made["IPAM"]["Config"]
        subnet = IPv4Network(config["Subnet"])
        assert not subnet.overlaps(IPv4Network(facts["Subnet"])), "the default network's subnet was handed out"
        assert subnet.subnet_of(IPv4Network("172.16.0.0/12")) or subnet.subnet_of(IPv4Network("192.168.0.0/16"))
        assert IPv4Address(config["Gateway"]) in subnet
        second = net.network(driver, "back")
        assert not IPv4Network(second["IPAM"]["Config"][0]["Subnet"]).overlaps(subnet)
        listed = {n["Id"]: n for n in driver.networks()}
        assert made["Id"] in listed and second["Id"] in listed and facts["NetworkID"] in listed
        assert listed[facts["NetworkID"]]["Name"] == "bridge"
        with pytest.raises(Forbidden):
            driver.delete_network(facts["NetworkID"])
        driver.delete_network(made["Id"])
        driver.delete_network(second["Id"])
        with pytest.raises(NotFound):
            driver.delete_network(made["Id"])
        assert {n["Id"] for n in driver.networks()} == {facts["NetworkID"]}
        net.shutdown(driver)
        assert net.changes_since(before) == []

    def test_network_default_address_pools_option(self, net: Harness) -> None:
        driver, _facts = net.start(default_address_pools=(PoolSpec("10.99.0.0/16", 24),))
        first = net.network(driver, "one")
        second = net.network(driver, "two")
        assert [n["IPAM"]["Config"][0]["Subnet"] for n in (first, second)] == ["10.99.0.0/24", "10.99.1.0/24"]
        for made in (first, second):
            driver.delete_network(made["Id"])
        net.shutdown(driver)
        small, _facts = net.start(default_address_pools=(PoolSpec("10.98.0.0/24", 24),))
        net.network(small, "only")
        with pytest.raises(Unavailable):
            net.network(small, "none-left")

    def test_network_ipam_config_and_addresses(self, net: Harness) -> None:
        driver, _facts = net.start()
        config = {
            "Subnet": "10.77.0.0/16",
            "IPRange": "10.77.5.0/24",
            "Gateway": "10.77.5.254",
            "AuxiliaryAddresses": {"a": "10.77.5.1", "b": "10.77.5.2"},
        }
        made = net.network(driver, "ipam", ipam=[config])
        assert made["IPAM"]["Config"] == [config] and made["IPAM"]["Driver"] == "default"
        a, b, c = container_id(), container_id(), container_id()
        first = driver.join(made["Id"], a, {"NetnsPath": net.container("a"), "Name": "a"})
        assert IPv4Address(first["IPAddress"]) in IPv4Network("10.77.5.0/24")
        assert first["IPAddress"] not in ("10.77.5.1", "10.77.5.2", "10.77.5.254")
        assert first["Gateway"] == "10.77.5.254" and first["NetworkID"] == made["Id"] and first["Interface"] == "eth0"
        # A requested address may be anywhere in the subnet, outside the range too.
        second = driver.join(made["Id"], b, {"NetnsPath": net.container("b"), "IPv4Address": "10.77.9.9"})
        assert second["IPAddress"] == "10.77.9.9"
        path = net.container("c")
        with pytest.raises(Forbidden):  # taken: libnetwork's 403
            driver.join(made["Id"], c, {"NetnsPath": path, "IPv4Address": "10.77.9.9"})
        for outside in ("10.78.0.1", "10.77.5.254", "10.77.5.1"):
            with pytest.raises(InvalidParameter):
                driver.join(made["Id"], c, {"NetnsPath": path, "IPv4Address": outside})
        assert netns_view(path).interfaces == {}, "a refused join left an interface"
        with pytest.raises(Forbidden):
            driver.join(made["Id"], a, {"NetnsPath": first["SandboxKey"]})
        with pytest.raises(NotFound):
            driver.join(secrets.token_hex(32), c, {"NetnsPath": path})
        listed = next(n for n in driver.networks() if n["Id"] == made["Id"])
        assert listed["Containers"][a]["IPv4Address"] == f"{first['IPAddress']}/16"
        assert set(listed["Containers"]) == {a, b}

    def test_network_bad_input_leaves_nothing(self, net: Harness) -> None:
        driver, facts = net.start()
        made = net.network(driver, "taken", ipam=[{"Subnet": "10.66.0.0/16"}])
        state, networks = HostState.now(), driver.networks()
        bad = [
            [{"Subnet": "10.66.128.0/17"}],  # overlaps
            [{"Subnet": facts["Subnet"]}],  # the default network's
            [{"Subnet": "10.67.0.0/33"}],
            [{"Subnet": "10.67.0.1/16"}],  # not the network address
            [{"Subnet": "10.67.0.0/16", "Gateway": "10.68.0.1"}],
            [{"Subnet": "10.67.0.0/16", "IPRange": "10.68.0.0/24"}],
            [{"Subnet": "10.67.0.0/16", "AuxiliaryAddresses": {"x": "bogus"}}],
        ]
        for ipam in bad:
            with pytest.raises((InvalidParameter, Forbidden)):
                net.network(driver, "bad", ipam=ipam)
        with pytest.raises(InvalidParameter):
            net.network(driver, "bad", options={"com.docker.network.bridge.enable_icc": "perhaps"})
        assert driver.networks() == networks and net.changes_since(state) == []
        driver.delete_network(made["Id"])

    def test_container_on_two_networks(self, net: Harness) -> None:
        driver, facts = net.start()
        made = net.network(driver, "second", ipam=[{"Subnet": "10.55.0.0/24"}])
        a, b = container_id(), container_id()
        path = net.container("a")
        on_default = driver.allocate_interface(a, {"NetnsPath": path, "Name": "a"})
        on_second = driver.join(made["Id"], a, {"NetnsPath": path, "Name": "a"})
        assert (on_default["Interface"], on_second["Interface"]) == ("eth0", "eth1")
        view = netns_view(path)
        assert view.interfaces["eth1"]["addresses"] == [f"{on_second['IPAddress']}/24"]
        assert view.default_via == facts["Gateway"] and view.default_dev == "eth0"
        peer = driver.join(made["Id"], b, {"NetnsPath": net.container("b"), "DefaultRoute": True})
        net.server(peer["SandboxKey"], 7000, "second network")
        assert fetch_in(path, peer["IPAddress"], 7000) == "second network"
        # The default route (and published ports) move to the other network.
        net.server(path, 80, "a on the second network")
        port = free_port()
        driver.allocate_ports(a, {"80/tcp": [{"HostPort": str(port)}]})
        driver.set_gateway(a, made["Id"])
        view = netns_view(path)
        assert view.default_via == "10.55.0.1" and view.default_dev == "eth1"
        assert driver.endpoints(a)[made["Id"]]["Ports"] == {
            "80/tcp": [{"HostIp": net.options.default_ip, "HostPort": str(port)}]
        }
        assert not driver.endpoints(a)[facts["NetworkID"]]["Ports"]
        assert fetch("127.0.0.1", port) == "a on the second network"
        assert set(driver.endpoints(a)) == {facts["NetworkID"], made["Id"]}
        driver.leave(made["Id"], a)
        driver.set_gateway(a, facts["NetworkID"])
        view = netns_view(path)
        assert "eth1" not in view.interfaces and view.default_dev == "eth0"
        assert set(driver.endpoints(a)) == {facts["NetworkID"]}
        driver.leave(made["Id"], a)  # twice is fine
        with pytest.raises(Forbidden):
            driver.delete_network(made["Id"])  # b is on it
        driver.leave(made["Id"], b)
        driver.delete_network(made["Id"])

    def test_networks_are_isolated(self, net: Harness) -> None:
        driver, _facts = net.start()
        one = net.network(driver, "one", ipam=[{"Subnet": "10.44.1.0/24"}])
        two = net.network(driver, "two", ipam=[{"Subnet": "10.44.2.0/24"}])
        closed = net.network(driver, "closed", internal=True, ipam=[{"Subnet": "10.44.3.0/24"}])
        a, b, both, c, d = (container_id() for _ in range(5))
        on_one = driver.join(one["Id"], a, {"NetnsPath": net.container("a"), "DefaultRoute": True})
        on_two = driver.join(two["Id"], b, {"NetnsPath": net.container("b"), "DefaultRoute": True})
        path = net.container("both")
        driver.join(one["Id"], both, {"NetnsPath": path, "DefaultRoute": True})
        driver.join(two["Id"], both, {"NetnsPath": path})
        in_closed = driver.join(closed["Id"], c, {"NetnsPath": net.container("c"), "DefaultRoute": True})
        peer = driver.join(closed["Id"], d, {"NetnsPath": net.container("d"), "DefaultRoute": True})
        assert closed["Internal"] is True
        net.server(on_two["SandboxKey"], 7000, "two")
        net.server(peer["SandboxKey"], 7000, "closed peer")
        assert fetch_in(path, on_two["IPAddress"], 7000) == "two"
        if net.options.iptables:
            assert fetch_in(on_one["SandboxKey"], on_two["IPAddress"], 7000) == "", "networks are not isolated"
            assert fetch_in(in_closed["SandboxKey"], on_two["IPAddress"], 7000) == "", "an internal network leaks"
            assert fetch_in(on_one["SandboxKey"], peer["IPAddress"], 7000) == ""
        assert fetch_in(in_closed["SandboxKey"], peer["IPAddress"], 7000) == "closed peer"

    def test_networks_survive_a_restart(self, net: Harness) -> None:
        first, _facts = net.start()
        made = net.network(first, "kept", ipam=[{"Subnet": "10.33.0.0/24"}], labels={"k": "v"})
        alive, dead = container_id(), container_id()
        path = net.container("alive")
        first.allocate_interface(alive, {"NetnsPath": path})
        joined = first.join(made["Id"], alive, {"NetnsPath": path})
        first.join(made["Id"], dead, {"NetnsPath": net.container("dead")})
        second, _facts = net.restart(first)
        listed = next(n for n in second.networks() if n["Id"] == made["Id"])
        assert listed["Labels"] == {"k": "v"} and listed["IPAM"]["Config"] == made["IPAM"]["Config"]
        assert second.restore(alive) is not None
        assert second.endpoints(alive)[made["Id"]]["IPAddress"] == joined["IPAddress"]
        assert second.prune([alive]) == [dead]
        assert set(next(n for n in second.networks() if n["Id"] == made["Id"])["Containers"]) == {alive}
        # Its address stays taken, and the network takes new containers.
        other = second.join(made["Id"], container_id(), {"NetnsPath": net.container("new")})
        assert other["IPAddress"] != joined["IPAddress"]

    def test_ipv6_network(self, net: Harness) -> None:
        driver, _facts = net.start()
        if not os.path.exists("/proc/sys/net/ipv6"):
            pytest.skip("this kernel has no IPv6")
        made = net.network(driver, "six", enable_ipv6=True, ipam=[{"Subnet": "fd00:77::/64"}])
        assert made["EnableIPv6"] is True
        subnets = {c["Subnet"] for c in made["IPAM"]["Config"]}
        assert "fd00:77::/64" in subnets and len(subnets) == 2  # an IPv4 subnet from the pools too
        a, b = container_id(), container_id()
        one = driver.join(made["Id"], a, {"NetnsPath": net.container("a"), "DefaultRoute": True})
        two = driver.join(made["Id"], b, {"NetnsPath": net.container("b"), "IPv6Address": "fd00:77::42"})
        assert ip_interface(f"{one['GlobalIPv6Address']}/64").network == ip_interface("fd00:77::/64").network
        assert one["IPv6Gateway"] == "fd00:77::1" and two["GlobalIPv6Address"] == "fd00:77::42"
        view = netns_view(one["SandboxKey"])
        assert f"{one['GlobalIPv6Address']}/64" in view.interfaces["eth0"]["addresses"]
        assert view.default_via6 == "fd00:77::1"
        net.server(two["SandboxKey"], 7000, "over ipv6")
        assert fetch_in(one["SandboxKey"], "fd00:77::42", 7000) == "over ipv6"
        listed = next(n for n in driver.networks() if n["Id"] == made["Id"])
        assert listed["Containers"][b]["IPv6Address"] == "fd00:77::42/64"
