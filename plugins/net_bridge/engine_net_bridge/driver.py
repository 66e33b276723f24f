"""The ``bridge`` network driver (seed ch. 6-8): Docker's default network, made of a Linux bridge.

::

    host (the daemon's netns)                        container netns (<root>/netns/<id>)
    engine0 172.17.42.1/16, random MAC, up            eth0 172.17.0.2/16
      +-- veth1a2b3c4 (MTU, up) =====================  02:42:ac:11:00:02, MTU, up
      +-- veth5d6e7f8 === another container            default via 172.17.42.1, lo up

    nat   POSTROUTING  -s 172.17.0.0/16 ! -o engine0 -j MASQUERADE         (--ip-masq)
          PREROUTING, OUTPUT (local addresses) -j ENGINE
          ENGINE       ! -i engine0 --dport 18080 -j DNAT --to 172.17.0.2:80
    filter FORWARD     -o engine0 -j ENGINE; RELATED,ESTABLISHED ACCEPT;
                       -i engine0 ! -o engine0 ACCEPT; -i engine0 -o engine0 ACCEPT|DROP (--icc)
          ENGINE       -d 172.17.0.2 --dport 80 ACCEPT
    proxy (python -S)  0.0.0.0:18080 -> 172.17.0.2:80, so that 127.0.0.1:18080 works too
                       (--userland-proxy=false: it only holds 0.0.0.0:18080, DNAT does the rest)

``init`` finds or creates the bridge (``-b NAME`` must exist, ``engine0`` is
created: seed ch. 6 §3.3.3-3.3.5), picks its address (``--bip`` or the first
free candidate), sets ``ip_forward`` and the iptables rules (seed ch. 4
§4.5.2), recreating the ``ENGINE`` chains, and with ``--icc=false`` or
``--userland-proxy=false`` has br_netfilter pass bridged traffic to iptables. ``allocate_interface`` makes the
veth pair (seed ch. 7 §3.1, ch. 8 §4.3.2), ``allocate_ports`` the DNAT rules
and a userland proxy, ``link`` the ACCEPT rules between linked containers
when ``--icc=false`` (seed ch. 6 §3.3.9).

Containers survive daemon restarts, and so does their network: ``close``
leaves everything in place, the next instance's ``init`` rebuilds the
host-wide rules, ``restore`` re-adds each running container's rules and
restarts its proxy only if it died, and ``prune`` releases the containers
that did not survive. ``shutdown`` undoes everything but the bridge, which
stays for the next start, as Docker's ``docker0`` does. See
:mod:`engine_net_bridge.state` for the files under ``<root>/network``.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from pyroute2 import IPRoute, NetlinkError

from engine.drivers.network import NetworkDriver, NetworkOptions, parse_link_ports
from engine.errors import (
    Conflict,
    EngineError,
    HostError,
    InvalidParameter,
    NotFound,
    NotSupported,
    PrerequisitesNotMet,
)
from engine_net_bridge import ipam, netlink
from engine_net_bridge.iptables import CHAIN, IPTables, IptablesError, Rule, base_rules, link_rules, port_rules
from engine_net_bridge.portmapper import ProxyRecord, find_proxies, proxy_alive, start_proxy, stop_proxy
from engine_net_bridge.ports import (
    WILDCARD,
    PortMapping,
    PortRequest,
    bind_host_port,
    ephemeral_range,
    requests_from_bindings,
    same_socket_space,
)
from engine_net_bridge.state import Endpoint, Store

LOG = logging.getLogger(__name__)

#: Created when no ``-b`` is given (not docker0, so a real Docker can live
#: on the same host).
DEFAULT_BRIDGE = "engine0"
DEFAULT_MTU = 1500
NETWORK_NAME = "bridge"
BRIDGE_FILE = "bridge.json"
LINKS_FILE = "links.json"


class BridgeNotFound(NotFound):
    """``-b NAME`` names no existing interface."""


class PortUnavailable(Conflict):
    """A host port to publish is taken: by a container of ours or by another program.

    A conflict, but answered with 500 as moby does: libnetwork wraps every
    publishing error in ``types.InternalErrorf("driver failed programming
    external connectivity ...")``, and ``docker run -p`` clients see a 500.
    """

    http_status = 500


class BridgeDriver(NetworkDriver):
    """Linux bridge with veth pairs, IP allocation, iptables NAT and port publishing (Docker's default network).

    :param home: ``<root>/network``.
    :param options: the daemon's network flags (every field of :class:`NetworkOptions` is used).
    :param resolv_conf: the host's resolver file (nameservers the bridge
        range must not cover).
    :param proc_sys: where ``/proc/sys`` is (forwarding, route_localnet,
        br_netfilter's switches, the ephemeral port range).
    :param iptables: the iptables wrapper (a fake in unit tests).
    :param modprobe: the program that loads ``br_netfilter``.
    """

    name = "bridge"

    def __init__(
        self,
        home: str,
        options: NetworkOptions,
        *,
        resolv_conf: str = "/etc/resolv.conf",
        proc_sys: str = "/proc/sys",
        iptables: IPTables | None = None,
        modprobe: str = "modprobe",
    ) -> None:
        super().__init__(home, options)
        self.resolv_conf = resolv_conf
        self.proc_sys = proc_sys
        self.modprobe = modprobe
        self.store = Store(home)
        self._ipt = iptables or IPTables()
        self._lock = threading.RLock()
        self._ready = False
        self._endpoints: dict[str, Endpoint] = {}
        self._links: list[dict[str, Any]] = []
        #: Containers allocated or restored by this instance (a link's rules
        #: come back once both of its ends are here).
        self._active: set[str] = set()
        self._doc: dict[str, Any] = {}
        self._bridge = ""
        self._address = IPv4Interface("0.0.0.0/32")
        self._pool: ipam.Pool | None = None
        self._mtu = DEFAULT_MTU
        self._next_ephemeral: dict[str, int] = {}

    # configuration
    @property
    def _use_iptables(self) -> bool:
        return self.options.iptables

    @property
    def _use_proxy(self) -> bool:
        return self.options.userland_proxy

    @property
    def _icc(self) -> bool:
        return self.options.icc

    @property
    def _needs_br_netfilter(self) -> bool:
        """Whether traffic between two ports of the bridge must pass iptables.

        The icc DROP and the link ACCEPTs judge it, and without the proxy a
        container's connection to a published port is DNATed back into the
        bridge; a bridge forwards in layer 2, out of iptables' sight, unless
        ``br_netfilter`` hands its frames to it (as dockerd arranges then).
        """
        return self._use_iptables and (not self._icc or not self._use_proxy)

    @classmethod
    def probe(cls, home: str, options: NetworkOptions) -> None:
        """Refuse ``-b none``, a host without IPv4 sysctls, non-root, or missing iptables.

        :raises NotSupported: networking is disabled.
        :raises PrerequisitesNotMet: with what is missing.
        """
        if options.bridge == "none":
            raise NotSupported("networking is disabled (--bridge=none)")
        if not os.path.isdir("/proc/sys/net/ipv4"):
            raise PrerequisitesNotMet("/proc/sys/net/ipv4 is missing: is /proc mounted, and IPv4 in the kernel?")
        if os.geteuid() != 0:
            raise PrerequisitesNotMet("the bridge driver needs root (CAP_NET_ADMIN)")
        if options.iptables and not IPTables().available():
            raise PrerequisitesNotMet(
                "iptables is not installed: install it (apt-get install iptables) "
                "or run the daemon with --iptables=false"
            )

    # init
    def init(self) -> dict:
        """Bridge, forwarding and iptables (``init_networkdriver``); see :meth:`NetworkDriver.init`."""
        with self._lock:
            self.store.ensure()
            previous = self.store.load(BRIDGE_FILE, {})
            self._endpoints = self.store.load_endpoints()
            self._links = list(self.store.load(LINKS_FILE, []))
            self._active.clear()
            self._stop_orphan_proxies()
            if self._needs_br_netfilter:
                self._load_br_netfilter()
            name, address, mac, created = self._setup_bridge()
            self._bridge, self._address = name, address
            # The rules this configuration adds go too, if they are there: the
            # state directory may be new while the host still has them.
            self._remove_host_rules(previous, extra=self._base_rules())
            fixed = self._fixed_cidr()
            self._pool = ipam.Pool(address.network, address.ip, fixed)
            if self.options.ip_forward:
                self._enable_forwarding()
            now = time.time()
            self._doc = {
                "ID": previous.get("ID") or secrets.token_hex(32),
                "Created": previous.get("Created") or now,
                "Bridge": name,
                # Whether the engine made this bridge (in this run or an earlier one).
                "CreatedBridge": created or (bool(previous.get("CreatedBridge")) and previous.get("Bridge") == name),
                "Subnet": str(address.network),
                "Gateway": str(address.ip),
                "FixedCIDR": str(fixed) if fixed else "",
                "Mtu": self._mtu,
                "MacAddress": mac,
                "Rules": [],
                "Sysctls": {},
            }
            if self._use_iptables:
                self._add_host_rules()
            else:
                self.store.save(BRIDGE_FILE, self._doc)
            self._ready = True
            LOG.info(
                "bridge network: %s %s (containers from %s), MTU %d, iptables %s",
                name,
                address,
                self._pool.range,
                self._mtu,
                "on" if self._use_iptables else "off",
            )
            return self._facts()

    def _stop_orphan_proxies(self) -> None:
        """Stop the proxies started for this home that no endpoint records.

        A daemon killed between a proxy's start and the endpoint file that
        records it leaves one holding the port for good; its ports are
        recorded (before it started), so ``restore`` binds them again.
        """
        recorded = {(p.pid, p.start_time) for ep in self._endpoints.values() for p in ep.proxies}
        for found in find_proxies(self.home):
            if (found.pid, found.start_time) not in recorded:
                LOG.warning(
                    "stopping userland proxy %d: no container of this daemon records it (the daemon "
                    "was killed while it started)",
                    found.pid,
                )
                stop_proxy(found)

    def _facts(self) -> dict:
        return {
            "Bridge": self._bridge,
            "IPAddress": str(self._address.ip),
            "IPPrefixLen": self._address.network.prefixlen,
            "Subnet": str(self._address.network),
            "Gateway": str(self._address.ip),
            "FixedCIDR": self._doc.get("FixedCIDR", ""),
            "Mtu": self._mtu,
            "MacAddress": self._doc.get("MacAddress", ""),
            "NetworkID": self._doc["ID"],
        }

    def _fixed_cidr(self) -> IPv4Network | None:
        text = self.options.fixed_cidr.strip()
        if not text:
            return None
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InvalidParameter(f"invalid --fixed-cidr {text!r}: want an IPv4 CIDR like 172.17.1.0/24") from None
        if not isinstance(net, IPv4Network):
            raise InvalidParameter(f"invalid --fixed-cidr {text!r}: the bridge network is IPv4 only")
        return net

    def _setup_bridge(self) -> tuple[str, IPv4Interface, str, bool]:
        """Find or create the bridge (seed ch. 6 §3.3.2-3.3.6): (name, address, MAC, created)."""
        wanted = self.options.bridge.strip()
        name = wanted or DEFAULT_BRIDGE
        using_default = not wanted
        bip_text = self.options.bip.strip()
        bip = ipam.parse_interface(bip_text, "--bip") if bip_text else None
        with IPRoute() as ipr:
            self._mtu = self.options.mtu or netlink.default_route_mtu(ipr) or DEFAULT_MTU
            index = netlink.link_index(ipr, name)
            if index is None:
                if not using_default:
                    LOG.error("bridge not found: %s", name)
                    raise BridgeNotFound(
                        f"bridge not found: {name}: create it first (ip link add {name} type "
                        f"bridge) or leave out -b to let the engine create {DEFAULT_BRIDGE}"
                    )
                address = bip or self._choose_address(ipr, name)
                mac = ipam.random_mac()
                LOG.info("creating bridge %s with %s", name, address)
                try:
                    netlink.create_bridge(ipr, name, address, self._mtu, mac)
                except NetlinkError as exc:
                    raise HostError(
                        f"cannot create bridge {name}: {os.strerror(exc.code)}; is the bridge "
                        f"module available (modprobe bridge)?"
                    ) from exc
                return name, address, mac, True
            kind = netlink.link_kind(ipr, index)
            if kind != "bridge":
                raise InvalidParameter(
                    f"{name} is not a bridge (it is a {kind or 'physical'} interface): give -b an existing bridge"
                )
            addresses = netlink.ipv4_addresses(ipr, index)
            if bip is not None:
                match = [a for a in addresses if a.ip == bip.ip]
                if match:
                    address = match[0]
                elif addresses:
                    # The seed's check (ch. 6 §3.3.4), with its message.
                    raise InvalidParameter(
                        f"bridge ip ({addresses[0].ip}) does not match existing bridge "
                        f"configuration {bip.ip}: drop --bip, or delete the bridge "
                        f"(ip link del {name}) so it is made again with the new address"
                    )
                else:
                    netlink.add_address(ipr, index, bip)
                    address = bip
            elif addresses:
                address = addresses[0]
            elif using_default:
                address = self._choose_address(ipr, name)
                netlink.add_address(ipr, index, address)
            else:
                raise InvalidParameter(
                    f"bridge {name} has no IPv4 address: give it one (ip addr add 172.17.42.1/16 dev {name})"
                )
            netlink.ensure_up(ipr, index)
            mac = netlink.link_attrs(ipr, index)["address"] or ""
            return name, address, mac, False

    def _choose_address(self, ipr: IPRoute, name: str) -> IPv4Interface:
        nameservers = ipam.read_nameservers(self.resolv_conf)
        for extra in self.options.dns:
            try:
                addr = ipaddress.ip_address(str(extra))
            except ValueError:
                continue
            if isinstance(addr, IPv4Address):
                nameservers.append(addr)
        return ipam.choose_bridge_address(name, netlink.main_routes(ipr), nameservers)

    def _sysctl_path(self, *parts: str) -> str:
        return os.path.join(self.proc_sys, "net", "ipv4", *parts)

    def _enable_forwarding(self) -> None:
        try:
            with open(self._sysctl_path("ip_forward"), "w", encoding="ascii") as fh:
                fh.write("1\n")
        except OSError as exc:
            # The seed only warns: containers still reach each other and the host.
            LOG.warning("unable to enable IPv4 forwarding: %s", exc.strerror)

    def _br_netfilter_path(self, *parts: str) -> str:
        return os.path.join(self.proc_sys, "net", "bridge", *parts)

    def _br_netfilter_remedy(self) -> str:
        why = "--icc=false" if not self._icc else "--userland-proxy=false"
        return (
            f"{why} needs the br_netfilter kernel module, so that traffic between containers passes "
            f"iptables: load it (modprobe br_netfilter), or run the daemon without {why}"
        )

    def _load_br_netfilter(self) -> None:
        """``modprobe br_netfilter`` unless its sysctls are there (they are per network namespace)."""
        if os.path.isdir(self._br_netfilter_path()):
            return
        program = shutil.which(self.modprobe) or shutil.which(self.modprobe, path="/usr/sbin:/sbin") or self.modprobe
        try:
            proc = subprocess.run([program, "br_netfilter"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PrerequisitesNotMet(f"cannot run {program}: {exc}; {self._br_netfilter_remedy()}") from exc
        if not os.path.isdir(self._br_netfilter_path()):
            said = proc.stderr.decode(errors="replace").strip() or f"status {proc.returncode}"
            raise PrerequisitesNotMet(
                f"{self._br_netfilter_path()} is missing and modprobe br_netfilter "
                f"failed ({said}); {self._br_netfilter_remedy()}"
            )
        LOG.info("loaded the br_netfilter kernel module")

    def _set_sysctl(self, path: str, value: str) -> str | None:
        """Write a sysctl, returning its old value (None if it cannot be read)."""
        try:
            with open(path, encoding="ascii") as fh:
                old = fh.read().strip()
            with open(path, "w", encoding="ascii") as fh:
                fh.write(value + "\n")
        except OSError as exc:
            LOG.warning("cannot set %s: %s", path, exc.strerror)
            return None
        return old

    def _add_host_rules(self) -> None:
        """The ENGINE chains and the base rules, recorded before they are added."""
        if not self._ipt.available():
            raise PrerequisitesNotMet(
                "iptables is not installed: install it (apt-get install iptables) "
                "or run the daemon with --iptables=false"
            )
        rules = self._base_rules()
        self._doc["Rules"] = [r.to_json() for r in rules]
        if self._needs_br_netfilter:
            path = self._br_netfilter_path("bridge-nf-call-iptables")
            old = self._set_sysctl(path, "1")
            if old is None:
                raise PrerequisitesNotMet(f"cannot set {path} to 1; {self._br_netfilter_remedy()}")
            if old != "1":
                self._doc["Sysctls"][path] = old
        if not self._use_proxy:
            # Loopback-sourced packets may leave by the bridge once DNATed
            # (127.0.0.1:port without a proxy); the kernel drops them otherwise.
            path = self._sysctl_path("conf", self._bridge, "route_localnet")
            old = self._set_sysctl(path, "1")
            if old is not None and old != "1":
                self._doc["Sysctls"][path] = old
        self.store.save(BRIDGE_FILE, self._doc)
        for table in ("nat", "filter"):
            self._ipt.new_chain(table, CHAIN)
        # Inserted at the top in reverse, so they end up in the order given,
        # before any rule of the host's own firewall; link rules, inserted
        # later, come before the icc rule.
        self._ipt.apply([("-I", rule) for rule in reversed(rules)])

    def _base_rules(self) -> list[Rule]:
        return base_rules(
            self._bridge,
            str(self._address.network),
            icc=self._icc,
            masquerade=self.options.ip_masq,
            localhost_dnat=not self._use_proxy,
        )

    def _remove_host_rules(self, doc: Mapping[str, Any], extra: Sequence[Rule] = ()) -> None:
        """Take out every rule a previous instance (or this one) recorded, ``extra``, and the ENGINE chains."""
        for path, old in (doc.get("Sysctls") or {}).items():
            self._set_sysctl(path, str(old))
        if not self._ipt.available():
            return
        rules = [Rule.from_json(r) for r in doc.get("Rules", [])]
        for ep in self._endpoints.values():
            rules.extend(ep.rules)
        for link in self._links:
            rules.extend(Rule.from_json(r) for r in link.get("Rules", []))
        rules.extend(extra)
        # Once each: the same rule twice would fail the one-transaction delete.
        self._ipt.delete_all(list(dict.fromkeys(rules)))
        # A rule recorded twice was added twice, by a version that recorded
        # a container port's shared rules once per host port: every copy goes.
        recorded = Counter(rules) - Counter(extra)
        for rule in [r for r, n in recorded.items() if n > 1]:
            self._ipt.delete(rule)
        for table in ("nat", "filter"):
            self._ipt.remove_chain(table, CHAIN)
        for ep in self._endpoints.values():
            if ep.rules:
                ep.rules = []
                self.store.save_endpoint(ep)
        if any(link.get("Rules") for link in self._links):
            for link in self._links:
                link["Rules"] = []
            self.store.save(LINKS_FILE, self._links)

    def _require_ready(self) -> None:
        if not self._ready:
            raise NotSupported("the bridge network driver is not initialized (init() first)")

    # interfaces
    def allocate_interface(self, container_id: str, request: Mapping[str, Any]) -> dict:
        """Address and ``eth0`` for a container; see :meth:`NetworkDriver.allocate_interface`."""
        self._require_ready()
        assert self._pool is not None
        netns_path = str(request.get("NetnsPath") or request.get("SandboxKey") or "")
        if not netns_path:
            raise InvalidParameter(
                "allocate_interface needs NetnsPath: the file the container's network namespace is bound to"
            )
        if not os.path.exists(netns_path):
            raise InvalidParameter(f"network namespace {netns_path} does not exist")
        requested_ip = self._parse_requested_ip(request.get("RequestedIP"))
        requested_mac = str(request.get("RequestedMac") or request.get("MacAddress") or "")
        mac_override = ipam.parse_mac(requested_mac) if requested_mac else ""
        name = str(request.get("Name") or "").lstrip("/") or container_id[:12]
        with self._lock:
            if container_id in self._endpoints:
                # A stop that never reached release (a crash in between):
                # the old pair must go before the namespace gets a new eth0.
                LOG.warning("container %s still had a network endpoint; releasing it first", container_id[:12])
                self._release_locked(container_id)
            ip = self._pool.allocate(self._ips_in_use(), requested_ip)
            ep = Endpoint(
                container_id=container_id,
                name=name,
                endpoint_id=secrets.token_hex(32),
                ip=str(ip),
                prefixlen=self._address.network.prefixlen,
                gateway=str(self._address.ip),
                mac=mac_override or ipam.mac_for(ip),
                bridge=self._bridge,
                mtu=self._mtu,
                host_veth=self._new_veth_name(),
                netns_path=netns_path,
            )
            # Written first: a crash from here on leaves a file naming the
            # address and the veth, so neither is lost nor handed out twice.
            self.store.save_endpoint(ep)
            self._endpoints[container_id] = ep
            self._active.add(container_id)
        try:
            self._plumb(ep)
        except BaseException as exc:
            with self._lock:
                try:
                    self._release_locked(container_id)
                except EngineError as cleanup:
                    LOG.error("cleaning up after a failed interface for %s: %s", name, cleanup)
            raise self._interface_error(ep, exc) from exc
        LOG.debug("container %s: %s/%d on %s via %s", name, ep.ip, ep.prefixlen, self._bridge, ep.host_veth)
        return self._settings(ep)

    def _plumb(self, ep: Endpoint) -> None:
        """The veth pair and the container's side of it."""
        for _attempt in range(8):
            try:
                netlink.create_veth(ep.host_veth, self._bridge, ep.mtu, ep.netns_path, ep.mac)
                break
            except LookupError:
                raise HostError(f"bridge {self._bridge} is gone; restart the daemon to create it again") from None
            except NetlinkError as exc:
                # EEXIST is either our random host name (someone else's
                # interface: pick another) or eth0 in the namespace (fatal).
                if exc.code != errno.EEXIST or not netlink.link_exists(ep.host_veth):
                    raise
                with self._lock:
                    ep.host_veth = self._new_veth_name()
                    self.store.save_endpoint(ep)
        else:
            raise HostError(f"cannot find a free name for the host side of {ep.name}'s interface")
        if not self._use_proxy:
            # Without the proxy a container's connection to its own published
            # port is DNATed straight back out of the port it came in by.
            netlink.set_hairpin(ep.host_veth)
        netlink.configure_container(ep.netns_path, IPv4Interface(f"{ep.ip}/{ep.prefixlen}"), IPv4Address(ep.gateway))

    def _interface_error(self, ep: Endpoint, exc: BaseException) -> BaseException:
        if isinstance(exc, EngineError) or not isinstance(exc, (NetlinkError, OSError)):
            return exc
        code = exc.code if isinstance(exc, NetlinkError) else exc.errno
        what = f"cannot set up the network of {ep.name}"
        if code == errno.EEXIST:
            return Conflict(f"{what}: its network namespace already has an eth0")
        if isinstance(exc, OSError) and code == errno.ENOENT:
            return InvalidParameter(f"{what}: network namespace {ep.netns_path} does not exist")
        return HostError(f"{what}: {os.strerror(code) if code else exc}")

    def _parse_requested_ip(self, value: Any) -> IPv4Address | None:
        if not value:
            return None
        try:
            return IPv4Address(str(value))
        except ValueError:
            raise InvalidParameter(f"invalid requested IPv4 address {value!r}") from None

    def _ips_in_use(self) -> set[IPv4Address]:
        return {IPv4Address(ep.ip) for ep in self._endpoints.values()}

    def _new_veth_name(self) -> str:
        """Docker's naming: "veth" and 7 random hex digits (within IFNAMSIZ)."""
        taken = {ep.host_veth for ep in self._endpoints.values()}
        while True:
            # Collisions with interfaces that are not ours are caught by
            # EEXIST when the pair is made (see _plumb): no lookup here.
            candidate = "veth" + secrets.token_hex(4)[:7]
            if candidate not in taken:
                return candidate

    def release_interface(self, container_id: str) -> None:
        """Give everything of a container back; see :meth:`NetworkDriver.release_interface`.

        :raises HostError: something could not be removed; the endpoint file
            stays (the address stays reserved) so that ``prune`` or the next
            ``init`` tries again.
        """
        self._require_ready()
        with self._lock:
            self._release_locked(container_id)

    def _release_locked(self, container_id: str) -> None:
        ep = self._endpoints.get(container_id)
        if ep is None:
            self.store.remove_endpoint(container_id)
            return
        problems: list[str] = []
        try:
            self._unpublish(ep)
        except EngineError as exc:
            problems.append(str(exc))
        try:
            self._drop_links_of(ep.ip)
        except EngineError as exc:
            problems.append(str(exc))
        try:
            # Deleting one end deletes the pair; gone already if the
            # namespace died with the container.
            netlink.delete_link(ep.host_veth)
        except NetlinkError as exc:
            problems.append(f"cannot delete {ep.host_veth}: {os.strerror(exc.code)}")
        if problems:
            raise HostError(f"releasing the network of {ep.name}: " + "; ".join(problems))
        self.store.remove_endpoint(container_id)
        del self._endpoints[container_id]
        self._active.discard(container_id)
        LOG.debug("container %s: released %s", ep.name, ep.ip)

    # ports
    def allocate_ports(
        self, container_id: str, port_bindings: Mapping[str, Sequence[Mapping[str, Any]] | None]
    ) -> dict[str, list[dict]]:
        """Publish ports, all or none; see :meth:`NetworkDriver.allocate_ports`."""
        self._require_ready()
        requests = requests_from_bindings(port_bindings, self.options.default_ip or WILDCARD)
        with self._lock:
            ep = self._endpoint(container_id)
        if not requests:
            return {}
        made: list[PortMapping] = []
        socks: list[socket.socket] = []
        rules: list[Rule] = []
        applied = False
        record: ProxyRecord | None = None
        try:
            with self._lock:
                for req in requests:
                    mapping, sock = self._reserve(ep, req, made)
                    made.append(mapping)
                    socks.append(sock)
                if self._use_iptables:
                    rules = self._port_rules(ep, made, ep.rules)
                ep.ports.extend(made)
                ep.rules.extend(rules)
                # Recorded before the rules and the proxy exist (see state.py).
                self.store.save_endpoint(ep)
            if rules:
                self._ipt.apply([("-A", r) for r in rules])
                applied = True
            # Without the userland proxy one that only holds the ports, so
            # that no other program binds them (and loses its traffic to DNAT).
            record = start_proxy(
                container_id,
                [(s, m.proto, ep.ip, m.container_port) for s, m in zip(socks, made)],
                self.store.proxy_log,
                hold=not self._use_proxy,
                home=self.home,
            )
            with self._lock:
                ep.proxies.append(record)
                self.store.save_endpoint(ep)
        except BaseException:
            self._undo_ports(ep, made, rules, applied, record)
            raise
        finally:
            for sock in socks:
                sock.close()  # the proxy has its own copies
        out: dict[str, list[dict]] = {}
        for m in made:
            out.setdefault(m.key, []).append({"HostIp": m.host_ip, "HostPort": str(m.host_port)})
        LOG.debug("container %s: published %s", ep.name, ", ".join(f"{m.host_ip}:{m.host_port}->{m.key}" for m in made))
        return out

    def _port_rules(self, ep: Endpoint, mappings: Sequence[PortMapping], present: Sequence[Rule]) -> list[Rule]:
        """The rules ``mappings`` need that ``present`` lacks, each once.

        The FORWARD accept and the hairpin MASQUERADE name the container
        port only: a port published on two host ports shares them, and a
        rule added twice would outlive the one delete its record makes.
        """
        rules: list[Rule] = []
        for m in mappings:
            for rule in port_rules(
                self._bridge, m.proto, m.host_ip, m.host_port, ep.ip, m.container_port, proxy=self._use_proxy
            ):
                if rule not in rules and rule not in present:
                    rules.append(rule)
        return rules

    def _undo_ports(
        self, ep: Endpoint, made: list[PortMapping], rules: list[Rule], applied: bool, record: ProxyRecord | None
    ) -> None:
        """Roll a failed :meth:`allocate_ports` back: proxy, rules, then the record."""
        if record is not None:
            stop_proxy(record)
        if applied:
            try:
                self._ipt.delete_all(rules)
            except IptablesError as exc:
                LOG.error("container %s: cannot take back the rules of a failed publication: %s", ep.name, exc)
                return  # they stay recorded, so release or the next init removes them
        with self._lock:
            ep.ports = [m for m in ep.ports if m not in made]
            ep.rules = [r for r in ep.rules if r not in rules]
            ep.proxies = [p for p in ep.proxies if p is not record]
            if ep.container_id in self._endpoints:
                self.store.save_endpoint(ep)

    def _taken(self, host_ip: str, proto: str, port: int, pending: Sequence[PortMapping]) -> bool:
        for m in [*pending, *(m for e in self._endpoints.values() for m in e.ports)]:
            if m.proto == proto and m.host_port == port and same_socket_space(m.host_ip, host_ip):
                return True
        return False

    def _programming_failed(self, ep: Endpoint, detail: str, kind: type[EngineError] = PortUnavailable) -> EngineError:
        """Moby's wrapper of every error of publishing (libnetwork's ``ProgramExternalConnectivity``)."""
        return kind(
            f"driver failed programming external connectivity on endpoint {ep.name} ({ep.endpoint_id}): {detail}"
        )

    def _bind_failed(
        self, ep: Endpoint, req: PortRequest, port: int, code: int, kind: type[EngineError] = PortUnavailable
    ) -> EngineError:
        """The kernel refused the bind: docker-proxy's words, or without the proxy its dummy proxy's (no prefix)."""
        detail = f"listen {req.proto}4 {req.host_ip}:{port}: bind: {os.strerror(code).lower()}"
        if self._use_proxy:
            detail = f"Error starting userland proxy: {detail}"
        return self._programming_failed(ep, detail, kind)

    def _candidates(self, req: PortRequest) -> Iterator[int]:
        if req.host_first:
            yield from range(req.host_first, req.host_last + 1)
            return
        lo, hi = ephemeral_range(self._sysctl_path("ip_local_port_range"))
        size = hi - lo + 1
        start = self._next_ephemeral.get(req.proto, lo)
        for step in range(size):
            port = lo + (start - lo + step) % size
            self._next_ephemeral[req.proto] = lo + (port - lo + 1) % size
            yield port

    def _reserve(
        self, ep: Endpoint, req: PortRequest, pending: Sequence[PortMapping]
    ) -> tuple[PortMapping, socket.socket]:
        """Choose and bind a host port for ``req`` (the lock is held)."""
        single = req.host_first != 0 and req.host_first == req.host_last
        for port in self._candidates(req):
            if self._taken(req.host_ip, req.proto, port, pending):
                if single:
                    break
                continue
            try:
                sock = bind_host_port(req.host_ip, req.proto, port)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    # Another program's: not "already allocated", which
                    # says that a container of ours has it.
                    if single:
                        raise self._bind_failed(ep, req, port, exc.errno) from None
                    continue
                if exc.errno == errno.EADDRNOTAVAIL:  # a host IP that is not the host's: 500 in moby too
                    raise self._bind_failed(ep, req, port, exc.errno, HostError) from None
                raise HostError(f"cannot bind {req.host_ip}:{port}/{req.proto}: {exc.strerror}") from exc
            return PortMapping(req.proto, req.container_port, req.host_ip, port), sock
        if req.host_first == 0:
            raise self._programming_failed(ep, "all ports are allocated")
        raise self._programming_failed(ep, f"Bind for {req.host_ip}:{req.host_spec} failed: port is already allocated")

    def release_ports(self, container_id: str) -> None:
        """Unpublish every port of a container, keeping its interface."""
        self._require_ready()
        with self._lock:
            ep = self._endpoints.get(container_id)
            if ep is None:
                return
            self._unpublish(ep)
            self.store.save_endpoint(ep)

    def _unpublish(self, ep: Endpoint) -> None:
        """Proxies and rules of ``ep``'s ports gone, its port list emptied (the lock is held)."""
        for record in ep.proxies:
            stop_proxy(record)
        ep.proxies = []
        if ep.rules and self._ipt.available():
            self._ipt.delete_all(ep.rules)
        ep.rules = []
        ep.ports = []

    def _endpoint(self, container_id: str) -> Endpoint:
        ep = self._endpoints.get(container_id)
        if ep is None:
            raise NotFound(
                f"container {container_id[:12]} has no network interface on the bridge: allocate_interface first"
            )
        return ep

    # links
    def link(
        self, parent: Mapping[str, Any] | str, child: Mapping[str, Any] | str, ports: Sequence[str], enable: bool
    ) -> None:
        """Allow (or stop allowing) ``parent`` to reach ``child``'s ``ports``.

        The pair of ACCEPT rules per port (seed ch. 6 §3.3.9) is only needed,
        and only added, with ``--icc=false``; the link is recorded either
        way, so its rules come back after a restart with a new setting. The
        rules go when either container's interface is released.
        """
        self._require_ready()
        parsed = parse_link_ports(ports)
        with self._lock:
            parent_id, parent_ip = self._resolve(parent)
            child_id, child_ip = self._resolve(child)
            for first, last, proto in parsed:
                spec = f"{first}-{last}/{proto}" if first != last else f"{first}/{proto}"
                existing = next(
                    (
                        lk
                        for lk in self._links
                        if lk["ParentIP"] == parent_ip and lk["ChildIP"] == child_ip and lk["Port"] == spec
                    ),
                    None,
                )
                if enable:
                    if existing is not None:
                        continue
                    record: dict[str, Any] = {
                        "Parent": parent_id,
                        "Child": child_id,
                        "ParentIP": parent_ip,
                        "ChildIP": child_ip,
                        "Port": spec,
                        "Rules": [],
                    }
                    self._links.append(record)
                    self._apply_link(record)
                elif existing is not None:
                    self._remove_link(existing)
            self.store.save(LINKS_FILE, self._links)

    def _apply_link(self, record: dict[str, Any]) -> None:
        """Add a link's ACCEPT pair if icc is off and it is not there yet (recorded first)."""
        if self._icc or not self._use_iptables or record["Rules"]:
            return
        port, _, proto = record["Port"].partition("/")
        rules = link_rules(self._bridge, record["ParentIP"], record["ChildIP"], [(port, proto)])
        record["Rules"] = [r.to_json() for r in rules]
        self.store.save(LINKS_FILE, self._links)
        self._ipt.apply([("-I", r) for r in rules])

    def _remove_link(self, record: dict[str, Any]) -> None:
        """Take a link's rules out and forget it (the caller saves links.json)."""
        rules = [Rule.from_json(r) for r in record.get("Rules", [])]
        if rules and self._ipt.available():
            self._ipt.delete_all(rules)
        self._links.remove(record)

    def _drop_links_of(self, ip: str) -> None:
        """Every link to or from ``ip`` goes: the address may be a new container's next."""
        doomed = [lk for lk in self._links if ip in (lk["ParentIP"], lk["ChildIP"])]
        for record in doomed:
            self._remove_link(record)
        if doomed:
            self.store.save(LINKS_FILE, self._links)

    def _resolve(self, who: Mapping[str, Any] | str) -> tuple[str, str]:
        """(container ID or "", IPv4 address) of a link end."""
        if isinstance(who, str):
            ep = self._endpoints.get(who)
            if ep is None:
                raise NotFound(f"cannot link container {who[:12]}: it has no network interface on the bridge")
            return who, ep.ip
        ip = str(who.get("IPAddress") or "")
        try:
            IPv4Address(ip)
        except ValueError:
            raise InvalidParameter(f"cannot link: {ip!r} is not an IPv4 address") from None
        cid = str(who.get("ContainerID") or who.get("ID") or "")
        return cid, ip

    # restart
    def restore(self, container_id: str) -> dict | None:
        """Re-adopt a running container after a restart; see :meth:`NetworkDriver.restore`.

        Nothing is reallocated: the address, MAC and host ports stay. The
        host veth is put back on the bridge (and the pair made again if it
        vanished while the namespace lives on), the port rules are added
        again (``init`` removed them with the ENGINE chains), a proxy that
        still runs is kept and a dead one restarted, and the container's
        links get their rules once their other end is back too.
        """
        self._require_ready()
        with self._lock:
            ep = self._endpoints.get(container_id)
            if ep is None:
                return None
            self._active.add(container_id)
            ep.bridge = self._bridge
            self._readopt_interface(ep)
            self._republish(ep)
            self.store.save_endpoint(ep)
            for record in self._links:
                ends = {record["Parent"], record["Child"]}
                if container_id in ends and all(not cid or cid in self._active for cid in ends):
                    try:
                        self._apply_link(record)
                    except IptablesError as exc:
                        LOG.error(
                            "container %s: cannot restore the rules of link %s -> %s: %s",
                            ep.name,
                            record["ParentIP"],
                            record["ChildIP"],
                            exc,
                        )
            return self._settings(ep)

    def _readopt_interface(self, ep: Endpoint) -> None:
        """Host veth back on the (maybe re-made) bridge, or the pair made again; errors only logged."""
        try:
            with IPRoute() as ipr:
                bridge_index = netlink.link_index(ipr, self._bridge)
            if bridge_index is not None and netlink.attach_to_bridge(ep.host_veth, bridge_index):
                return
            if (
                bridge_index is not None
                and ep.netns_path
                and os.path.exists(ep.netns_path)
                and not netlink.container_has_eth0(ep.netns_path)
            ):
                LOG.warning("container %s lost its interface; making %s again", ep.name, ep.host_veth)
                self._plumb(ep)
                return
            LOG.warning("container %s: interface %s is gone and cannot be made again", ep.name, ep.host_veth)
        except (NetlinkError, OSError, EngineError) as exc:
            LOG.error("container %s: cannot re-adopt interface %s: %s", ep.name, ep.host_veth, exc)

    def _republish(self, ep: Endpoint) -> None:
        """The rules of ``ep``'s ports again, and a proxy for those no live proxy serves."""
        if self._use_iptables and ep.ports:
            rules = self._port_rules(ep, ep.ports, [])
            ep.rules = rules
            self.store.save_endpoint(ep)
            try:
                self._ipt.apply([("-A", r) for r in rules])
            except IptablesError as exc:
                LOG.error("container %s: cannot restore the rules of its published ports: %s", ep.name, exc)
        hold = not self._use_proxy
        kept = []
        for record in ep.proxies:
            if record.hold == hold and proxy_alive(record):
                kept.append(record)
            else:
                # Dead (nothing to do), or of the other kind since the
                # daemon's --userland-proxy changed: made again below.
                stop_proxy(record)
        served = {port for p in kept for port in p.ports}
        missing = [m for m in ep.ports if f"{m.host_ip}:{m.host_port}/{m.proto}" not in served]
        ep.proxies = kept
        if not missing:
            return
        socks: list[tuple[socket.socket, PortMapping]] = []
        try:
            for m in missing:
                try:
                    socks.append((bind_host_port(m.host_ip, m.proto, m.host_port), m))
                except OSError as exc:
                    LOG.error(
                        "container %s: cannot listen on %s:%d/%s again (%s); only DNAT serves it now",
                        ep.name,
                        m.host_ip,
                        m.host_port,
                        m.proto,
                        exc.strerror,
                    )
            if socks:
                record = start_proxy(
                    ep.container_id,
                    [(s, m.proto, ep.ip, m.container_port) for s, m in socks],
                    self.store.proxy_log,
                    hold=hold,
                    home=self.home,
                )
                ep.proxies.append(record)
                LOG.info(
                    "container %s: restarted the userland proxy (pid %d%s)",
                    ep.name,
                    record.pid,
                    ", holding its ports only" if hold else "",
                )
        except HostError as exc:
            LOG.error("container %s: %s", ep.name, exc)
        finally:
            for s, _m in socks:
                s.close()

    def prune(self, keep: Collection[str]) -> list[str]:
        """Release every container not in ``keep`` (they died while the daemon was away)."""
        self._require_ready()
        released = []
        with self._lock:
            for container_id in [cid for cid in self._endpoints if cid not in keep]:
                try:
                    self._release_locked(container_id)
                    released.append(container_id)
                except EngineError as exc:
                    LOG.error("pruning the network of %s: %s", container_id[:12], exc)
        return released

    # inspection
    def _settings(self, ep: Endpoint) -> dict:
        ports: dict[str, list[dict]] = {}
        for m in ep.ports:
            ports.setdefault(m.key, []).append({"HostIp": m.host_ip, "HostPort": str(m.host_port)})
        return {
            "IPAddress": ep.ip,
            "IPPrefixLen": ep.prefixlen,
            "Gateway": ep.gateway,
            "MacAddress": ep.mac,
            "Bridge": ep.bridge,
            "Mtu": ep.mtu,
            "EndpointID": ep.endpoint_id,
            "NetworkID": self._doc.get("ID", ""),
            "HostVeth": ep.host_veth,
            "SandboxKey": ep.netns_path,
            "Ports": ports,
        }

    def settings(self, container_id: str) -> dict | None:
        with self._lock:
            ep = self._endpoints.get(container_id)
            return self._settings(ep) if ep is not None else None

    def networks(self) -> list[dict]:
        """The built-in ``bridge`` network as a NetworkResource (API 1.41)."""
        self._require_ready()
        from engine.drivers.network import rfc3339nano

        with self._lock:
            containers = {
                ep.container_id: {
                    "Name": ep.name,
                    "EndpointID": ep.endpoint_id,
                    "MacAddress": ep.mac,
                    "IPv4Address": f"{ep.ip}/{ep.prefixlen}",
                    "IPv6Address": "",
                }
                for ep in self._endpoints.values()
            }
        ipam_config: dict[str, str] = {"Subnet": str(self._address.network), "Gateway": str(self._address.ip)}
        if self._doc.get("FixedCIDR"):
            ipam_config["IPRange"] = self._doc["FixedCIDR"]
        return [
            {
                "Name": NETWORK_NAME,
                "Id": self._doc["ID"],
                "Created": rfc3339nano(float(self._doc["Created"])),
                "Scope": "local",
                "Driver": "bridge",
                "EnableIPv6": False,
                "IPAM": {"Driver": "default", "Options": None, "Config": [ipam_config]},
                "Internal": False,
                "Attachable": False,
                "Ingress": False,
                "ConfigFrom": {"Network": ""},
                "ConfigOnly": False,
                "Containers": containers,
                "Options": {
                    "com.docker.network.bridge.default_bridge": "true",
                    "com.docker.network.bridge.enable_icc": "true" if self._icc else "false",
                    "com.docker.network.bridge.enable_ip_masquerade": "true" if self.options.ip_masq else "false",
                    "com.docker.network.bridge.host_binding_ipv4": self.options.default_ip or WILDCARD,
                    "com.docker.network.bridge.name": self._bridge,
                    "com.docker.network.driver.mtu": str(self._mtu),
                },
                "Labels": {},
            }
        ]

    # the end
    def close(self) -> None:
        """Stop serving without touching the host: running containers keep
        their interfaces, rules and proxies until the next ``init``/``restore``."""
        with self._lock:
            self._ready = False

    def shutdown(self) -> None:
        """Release every container, then the host rules, chains and sysctls (the bridge stays)."""
        with self._lock:
            problems: list[str] = []
            for container_id in list(self._endpoints):
                try:
                    self._release_locked(container_id)
                except EngineError as exc:
                    problems.append(str(exc))
            for record in list(self._links):
                try:
                    self._remove_link(record)
                except EngineError as exc:
                    problems.append(str(exc))
            self.store.save(LINKS_FILE, self._links)
            if self._doc:
                try:
                    self._remove_host_rules(self._doc)
                except EngineError as exc:
                    problems.append(str(exc))
                else:
                    self._doc["Rules"] = []
                    self._doc["Sysctls"] = {}
                    self.store.save(BRIDGE_FILE, self._doc)
            self._ready = False
            if problems:
                LOG.error("bridge driver shutdown: %s", "; ".join(problems))
