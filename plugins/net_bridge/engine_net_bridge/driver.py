"""The ``bridge`` network driver (seed ch. 6-8; libnetwork's bridge driver): Docker's default network and
user-defined networks, each made of a Linux bridge.

::

    host (the daemon's netns)                        container netns (<root>/netns/<id>)
    engine0 172.17.42.1/16, random MAC, up            eth0 172.17.0.2/16
      +-- veth1a2b3c4 (MTU, up) =====================  02:42:ac:11:00:02, MTU, up
      +-- veth5d6e7f8 === another container            default via 172.17.42.1, lo up
    br-0123456789ab 172.18.0.1/16 (a user network)
      +-- vethabcdef0 ================================ eth1 172.18.0.2/16 (same container)

    nat    POSTROUTING  -s 172.17.0.0/16 ! -o engine0 -j MASQUERADE          (each network: --ip-masq)
           PREROUTING, OUTPUT (local addresses) -j ENGINE
           ENGINE       ! -i engine0 --dport 18080 -j DNAT --to 172.17.0.2:80
    filter FORWARD      -j ENGINE-ISOLATION-STAGE-1; -j ENGINE-FORWARD
           ENGINE-ISOLATION-STAGE-1  -i <br> ! -o <br> -j ENGINE-ISOLATION-STAGE-2   (each network)
           ENGINE-ISOLATION-STAGE-2  -o <br> -j DROP                                  (each network)
           ENGINE-FORWARD  -o <br> -j ENGINE; RELATED,ESTABLISHED ACCEPT;
                           -i <br> ! -o <br> ACCEPT; -i <br> -o <br> ACCEPT|DROP (icc)  (each network)
           ENGINE       -d 172.17.0.2 --dport 80 ACCEPT
    proxy (python -S)  0.0.0.0:18080 -> 172.17.0.2:80, so that 127.0.0.1:18080 works too
                       (--userland-proxy=false: it only holds 0.0.0.0:18080, DNAT does the rest)

The default network. ``init`` finds or creates its bridge (``-b NAME`` must
exist, ``engine0`` is created: seed ch. 6 §3.3.3-3.3.5), picks its address
(``--bip`` or the first free candidate), sets ``ip_forward`` and the
iptables rules (seed ch. 4 §4.5.2), recreating our chains, and with
``--icc=false`` or ``--userland-proxy=false`` has br_netfilter pass bridged
traffic to iptables. With ``--ipv6`` it also gets the gateway of
``--fixed-cidr-v6`` and its containers an IPv6 address there.

User-defined networks (``create_network``) get a bridge each, ``br-`` and
the first 12 digits of their ID (or ``com.docker.network.bridge.name``),
with the gateway of each subnet: the subnet is the one asked for, or the
first free one of the default address pools (:mod:`engine.drivers.ipam`).
Their options are libnetwork's: ``com.docker.network.bridge.enable_icc``,
``.enable_ip_masquerade``, ``.host_binding_ipv4``, ``.name`` and
``com.docker.network.driver.mtu``. Networks are isolated from each other
(the ISOLATION chains); an ``--internal`` one has no way out (no
masquerade, and what leaves or enters its subnet is dropped).

Endpoints. ``join`` makes the veth pair (seed ch. 7 §3.1, ch. 8 §4.3.2) with
the container's side ``eth0``, ``eth1``... in the order of its networks,
an address from the network's pool (the lowest free one; round robin on
the default network, as Docker 1.2) and the MAC ``02:42:<address>``. One
endpoint of a container carries its default routes (``DefaultRoute``,
``set_gateway``): its published ports (``allocate_ports``: DNAT rules and a
userland proxy) are on that network. ``link`` adds the ACCEPT rules between
linked containers of the default network when ``--icc=false`` (seed ch. 6
§3.3.9). ``allocate_interface`` is ``join`` on the default network.

Containers survive daemon restarts, and so does their network: ``close``
leaves everything in place. The next instance's ``init`` keeps the rules
when every recorded one is what the configuration makes and is in place
(one ``iptables-restore`` of ``-C`` lines checks), and otherwise rebuilds
the host-wide rules and every network's rules; it makes missing bridges
again from the records (after a reboot). ``restore`` re-adds a running
container's rules if they went, restarts its proxy only if it died, and ``prune``
releases the containers that did not survive. ``shutdown`` undoes
everything but the bridges, which stay for the next start, as Docker's
``docker0`` and ``br-*`` do. See :mod:`engine_net_bridge.state` for the
files under ``<root>/network``.
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
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from typing import Any

from pyroute2 import IPRoute, NetlinkError

from engine.drivers import ipam as sdk_ipam
from engine.drivers.ipam import DEFAULT_POOLS, AddressPool, IPAMConfig
from engine.drivers.network import NetworkDriver, NetworkOptions, NetworkSpec, parse_link_ports, rfc3339nano
from engine.errors import (
    Conflict,
    EngineError,
    Forbidden,
    HostError,
    InvalidParameter,
    NotFound,
    NotSupported,
    PrerequisitesNotMet,
)
from engine_net_bridge import ipam, netlink
from engine_net_bridge.iptables import (
    CHAINS,
    IPTables,
    IptablesError,
    Rule,
    add_ops,
    link_rules,
    network_rules,
    port_rules,
    shared_rules,
)
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
from engine_net_bridge.state import NETWORK_FILE, Endpoint, NetworkRecord, Store

LOG = logging.getLogger(__name__)

#: Created when no ``-b`` is given (not docker0, so a real Docker can live
#: on the same host).
DEFAULT_BRIDGE = "engine0"
DEFAULT_MTU = 1500
NETWORK_NAME = "bridge"
BRIDGE_FILE = "bridge.json"
LINKS_FILE = "links.json"
#: libnetwork's bridge options (``docker network create -o``).
OPT_NAME = "com.docker.network.bridge.name"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
OPT_HOST_IP = "com.docker.network.bridge.host_binding_ipv4"
OPT_MTU = "com.docker.network.driver.mtu"
OPT_IPV6 = "com.docker.network.enable_ipv6"
#: Longest interface name the kernel takes (IFNAMSIZ - 1).
IFNAME_MAX = 15


class BridgeNotFound(NotFound):
    """``-b NAME`` names no existing interface."""


class PortUnavailable(Conflict):
    """A host port to publish is taken: by a container of ours or by another program.

    A conflict, but answered with 500 as moby does: libnetwork wraps every
    publishing error in ``types.InternalErrorf("driver failed programming
    external connectivity ...")``, and ``docker run -p`` clients see a 500.
    """

    http_status = 500


def _parse_bool_option(key: str, value: str) -> bool:
    """Go's ``strconv.ParseBool``, with libnetwork's message for a bad value."""
    text = str(value).strip()
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise InvalidParameter(
        f'failed to parse {key} value: {value} (strconv.ParseBool: parsing "{value}": invalid syntax)'
    )


@dataclass
class _Network:
    """One network at run time: its record, its files, its endpoints and address pools."""

    record: NetworkRecord
    store: Store
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    pool: AddressPool | None = None
    pool6: AddressPool | None = None

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def bridge(self) -> str:
        return self.record.bridge

    def subnets(self) -> list[IPv4Network | IPv6Network]:
        out: list[IPv4Network | IPv6Network] = []
        if self.record.subnet:
            out.append(ipaddress.ip_network(self.record.subnet, strict=False))
        if self.record.subnet6:
            out.append(ipaddress.ip_network(self.record.subnet6, strict=False))
        return out

    def make_pools(self) -> None:
        rec = self.record
        if rec.subnet:
            subnet = IPv4Network(rec.subnet, strict=False)
            fixed = IPv4Network(rec.ip_range, strict=False) if rec.ip_range else None
            if rec.default:
                self.pool = ipam.Pool(subnet, IPv4Address(rec.gateway), fixed)
            else:
                reserved = [ipaddress.ip_address(a) for a in rec.aux.values()]
                self.pool = AddressPool(subnet, IPv4Address(rec.gateway), fixed, reserved)
        self.pool6 = None
        if rec.enable_ipv6 and rec.subnet6:
            subnet6 = IPv6Network(rec.subnet6, strict=False)
            fixed6 = IPv6Network(rec.ip_range6, strict=False) if rec.ip_range6 else None
            reserved6 = [ipaddress.ip_address(a) for a in rec.aux6.values()]
            self.pool6 = AddressPool(subnet6, IPv6Address(rec.gateway6), fixed6, reserved6)


class BridgeDriver(NetworkDriver):
    """Linux bridges with veth pairs, IP allocation, iptables NAT, isolation and port publishing (Docker's
    default network and user-defined networks).

    :param home: ``<root>/network``.
    :param options: the daemon's network flags (every field of :class:`NetworkOptions` is used).
    :param resolv_conf: the host's resolver file (nameservers a network's range must not cover).
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
        #: Every network, by ID; the default one is also ``self._default``.
        self._networks: dict[str, _Network] = {}
        self._default: _Network | None = None
        self._links: list[dict[str, Any]] = []
        #: Containers allocated or restored by this instance (a link's rules
        #: come back once both of its ends are here).
        self._active: set[str] = set()
        self._next_ephemeral: dict[str, int] = {}

    # configuration
    @property
    def _use_iptables(self) -> bool:
        return self.options.iptables

    @property
    def _use_ip6tables(self) -> bool:
        return self.options.iptables and self.options.ip6tables and self._ipt.available(6)

    @property
    def _use_proxy(self) -> bool:
        return self.options.userland_proxy

    @property
    def _icc(self) -> bool:
        return self.options.icc

    @property
    def _bridge(self) -> str:
        return self._default.bridge if self._default is not None else ""

    def _needs_br_netfilter(self, icc: bool | None = None) -> bool:
        """Whether traffic between two ports of a bridge must pass iptables.

        The icc DROP and the link ACCEPTs judge it, and without the proxy a
        container's connection to a published port is DNATed back into the
        bridge; a bridge forwards in layer 2, out of iptables' sight, unless
        ``br_netfilter`` hands its frames to it (as dockerd arranges then).
        """
        icc = self._icc if icc is None else icc
        return self._use_iptables and (not icc or not self._use_proxy)

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
        """The default network, the user-defined ones, forwarding and iptables (``init_networkdriver``);
        see :meth:`NetworkDriver.init`."""
        with self._lock:
            self.store.ensure()
            previous = self.store.load(BRIDGE_FILE, {})
            self._networks = {}
            self._default = None
            default_endpoints = self.store.load_endpoints()
            users = self._load_user_networks()
            self._links = list(self.store.load(LINKS_FILE, []))
            self._active.clear()
            self._stop_orphan_proxies(
                [*default_endpoints.values(), *(ep for n in users for ep in n.endpoints.values())]
            )
            if self._needs_br_netfilter() or any(self._needs_br_netfilter(n.record.icc) for n in users):
                self._load_br_netfilter()
            name, address, mac, created, mtu = self._setup_bridge()
            record = self._default_record(previous, name, address, mac, created, mtu)
            default = _Network(record, self.store, default_endpoints)
            for ep in default_endpoints.values():
                ep.network_id = record.id
            self._default = default
            self._networks[record.id] = default
            for net in users:
                self._networks[net.id] = net
            # The rules this configuration adds go too, if they are there: the
            # state directory may be new while the host still has them.
            previous_record = NetworkRecord.from_json(previous) if previous.get("ID") else None
            kept = previous_record is not None and self._rules_intact(previous_record, record, users)
            if kept:
                # A live restore with the same configuration: the rules stay
                # as they are, so running containers' traffic never goes
                # without them (and the restart runs no iptables but the check).
                assert previous_record is not None
                record.rules = previous_record.rules
                record.sysctls = dict(previous_record.sysctls)
            else:
                self._remove_host_rules(
                    [r for r in (previous_record,) if r is not None] + [n.record for n in users],
                    [ep for net in self._networks.values() for ep in net.endpoints.values()],
                    extra=self._shared_rules() + self._network_rules(record),
                )
            default.make_pools()
            if self.options.ip_forward:
                self._enable_forwarding()
            if self.options.ip_forward and any(n.record.enable_ipv6 for n in self._networks.values()):
                self._enable_forwarding(6)
            for net in users:
                try:
                    self._make_bridge(net.record)
                except EngineError as exc:
                    LOG.error("network %s: cannot make bridge %s again: %s", net.record.name, net.bridge, exc)
                net.make_pools()
            if kept:
                self._keep_host_rules()
            elif self._use_iptables:
                self._add_host_rules()
            else:
                self._save_network(default)
            self._ready = True
            LOG.info(
                "bridge network: %s %s (containers from %s), MTU %d, iptables %s; %d user-defined networks",
                name,
                address,
                default.pool.range if default.pool else "-",
                mtu,
                "on" if self._use_iptables else "off",
                len(users),
            )
            return self._facts()

    def _load_user_networks(self) -> list[_Network]:
        out = []
        for network_id in self.store.network_ids():
            nstore = self.store.network_store(network_id)
            doc = nstore.load(NETWORK_FILE, None)
            if not doc:
                continue
            try:
                record = NetworkRecord.from_json(doc)
            except (KeyError, TypeError, ValueError) as exc:
                LOG.error("ignoring unreadable network record %s: %s", network_id, exc)
                continue
            endpoints = nstore.load_endpoints()
            for ep in endpoints.values():
                ep.network_id = record.id
            out.append(_Network(record, nstore, endpoints))
        return out

    def _default_record(
        self, previous: Mapping[str, Any], name: str, address: IPv4Interface, mac: str, created: bool, mtu: int
    ) -> NetworkRecord:
        fixed = self._fixed_cidr()
        subnet6, gateway6, fixed6 = self._default_ipv6()
        options = {
            "com.docker.network.bridge.default_bridge": "true",
            OPT_ICC: "true" if self._icc else "false",
            OPT_MASQ: "true" if self.options.ip_masq else "false",
            OPT_HOST_IP: self.options.default_ip or WILDCARD,
            OPT_NAME: name,
            OPT_MTU: str(mtu),
        }
        ipam_config: list[dict[str, Any]] = [{"Subnet": str(address.network), "Gateway": str(address.ip)}]
        if fixed:
            ipam_config[0]["IPRange"] = str(fixed)
        if subnet6:
            ipam_config.append({"Subnet": subnet6, "Gateway": gateway6})
        return NetworkRecord(
            id=str(previous.get("ID") or secrets.token_hex(32)),
            name=NETWORK_NAME,
            bridge=name,
            created=float(previous.get("Created") or time.time()),
            default=True,
            # Whether the engine made this bridge (in this run or an earlier one).
            created_bridge=created or (bool(previous.get("CreatedBridge")) and previous.get("Bridge") == name),
            subnet=str(address.network),
            gateway=str(address.ip),
            ip_range=str(fixed) if fixed else "",
            subnet6=subnet6,
            gateway6=gateway6,
            ip_range6=fixed6,
            mtu=mtu,
            mac=mac,
            icc=self._icc,
            masquerade=self.options.ip_masq,
            host_ip=self.options.default_ip or WILDCARD,
            enable_ipv6=bool(subnet6),
            options=options,
            ipam=ipam_config,
        )

    def _default_ipv6(self) -> tuple[str, str, str]:
        """(subnet, gateway, range) of the default network's IPv6 (``--ipv6 --fixed-cidr-v6``), or empty strings."""
        if not self.options.ipv6:
            return "", "", ""
        text = self.options.fixed_cidr_v6.strip()
        if not text:
            raise InvalidParameter(
                "--ipv6 needs --fixed-cidr-v6: the IPv6 subnet of the default bridge (e.g. fd00:dead:beef::/64)"
            )
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InvalidParameter(f"invalid --fixed-cidr-v6 {text!r}: want an IPv6 CIDR like fd00::/64") from None
        if not isinstance(net, IPv6Network):
            raise InvalidParameter(f"invalid --fixed-cidr-v6 {text!r}: it is not an IPv6 subnet")
        return str(net), str(net.network_address + 1), ""

    def _stop_orphan_proxies(self, endpoints: Sequence[Endpoint]) -> None:
        """Stop the proxies started for this home that no endpoint records.

        A daemon killed between a proxy's start and the endpoint file that
        records it leaves one holding the port for good; its ports are
        recorded (before it started), so ``restore`` binds them again.
        """
        recorded = {(p.pid, p.start_time) for ep in endpoints for p in ep.proxies}
        for found in find_proxies(self.home):
            if (found.pid, found.start_time) not in recorded:
                LOG.warning(
                    "stopping userland proxy %d: no container of this daemon records it (the daemon "
                    "was killed while it started)",
                    found.pid,
                )
                stop_proxy(found)

    def _facts(self) -> dict:
        assert self._default is not None
        rec = self._default.record
        return {
            "Bridge": rec.bridge,
            "IPAddress": rec.gateway,
            "IPPrefixLen": IPv4Network(rec.subnet).prefixlen,
            "Subnet": rec.subnet,
            "Gateway": rec.gateway,
            "FixedCIDR": rec.ip_range,
            "Mtu": rec.mtu,
            "MacAddress": rec.mac,
            "NetworkID": rec.id,
            "IPv6Subnet": rec.subnet6,
            "IPv6Gateway": rec.gateway6,
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

    def _setup_bridge(self) -> tuple[str, IPv4Interface, str, bool, int]:
        """Find or create the default bridge (seed ch. 6 §3.3.2-3.3.6): (name, address, MAC, created, MTU)."""
        wanted = self.options.bridge.strip()
        name = wanted or DEFAULT_BRIDGE
        using_default = not wanted
        bip_text = self.options.bip.strip()
        bip = ipam.parse_interface(bip_text, "--bip") if bip_text else None
        subnet6, gateway6, _ = self._default_ipv6()
        address6 = IPv6Interface(f"{gateway6}/{IPv6Network(subnet6).prefixlen}") if subnet6 else None
        with IPRoute() as ipr:
            mtu = self.options.mtu or netlink.default_route_mtu(ipr) or DEFAULT_MTU
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
                    netlink.create_bridge(ipr, name, address, mtu, mac, address6)
                except NetlinkError as exc:
                    raise HostError(
                        f"cannot create bridge {name}: {os.strerror(exc.code)}; is the bridge "
                        f"module available (modprobe bridge)?"
                    ) from exc
                return name, address, mac, True, mtu
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
            if address6 is not None:
                self._enable_ipv6_on(name)
                netlink.add_address(ipr, index, address6)
            netlink.ensure_up(ipr, index)
            mac = netlink.link_attrs(ipr, index)["address"] or ""
            return name, address, mac, False, mtu

    def _nameservers(self) -> list[IPv4Address]:
        nameservers = ipam.read_nameservers(self.resolv_conf)
        for extra in self.options.dns:
            try:
                addr = ipaddress.ip_address(str(extra))
            except ValueError:
                continue
            if isinstance(addr, IPv4Address):
                nameservers.append(addr)
        return nameservers

    def _choose_address(self, ipr: IPRoute, name: str) -> IPv4Interface:
        return ipam.choose_bridge_address(name, netlink.main_routes(ipr), self._nameservers())

    def _sysctl_path(self, *parts: str, family: int = 4) -> str:
        return os.path.join(self.proc_sys, "net", "ipv4" if family == 4 else "ipv6", *parts)

    def _enable_forwarding(self, family: int = 4) -> None:
        path = (
            self._sysctl_path("ip_forward") if family == 4 else self._sysctl_path("conf", "all", "forwarding", family=6)
        )
        try:
            with open(path, "w", encoding="ascii") as fh:
                fh.write("1\n")
        except OSError as exc:
            # The seed only warns: containers still reach each other and the host.
            LOG.warning("unable to enable IPv%d forwarding: %s", family, exc.strerror)

    def _enable_ipv6_on(self, interface: str) -> None:
        """IPv6 on for an interface (a host may have it off by default for new ones)."""
        path = self._sysctl_path("conf", interface, "disable_ipv6", family=6)
        if os.path.exists(path):
            self._set_sysctl(path, "0")

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

    # iptables
    def _shared_rules(self) -> list[Rule]:
        rules = shared_rules(localhost_dnat=not self._use_proxy)
        if self._use_ip6tables:
            rules += shared_rules(localhost_dnat=False, family=6)
        return rules

    def _network_rules(self, rec: NetworkRecord) -> list[Rule]:
        localhost_dnat = not self._use_proxy
        rules = network_rules(
            rec.bridge,
            rec.subnet,
            icc=rec.icc,
            masquerade=rec.masquerade,
            localhost_dnat=localhost_dnat,
            internal=rec.internal,
        )
        if rec.enable_ipv6 and rec.subnet6 and self._use_ip6tables:
            rules += network_rules(
                rec.bridge, rec.subnet6, icc=rec.icc, masquerade=rec.masquerade, internal=rec.internal, family=6
            )
        return rules

    def _setup_network_sysctls(self, rec: NetworkRecord) -> None:
        """br_netfilter's switch (icc off, or no proxy) and route_localnet (no proxy), the old values recorded."""
        if self._needs_br_netfilter(rec.icc):
            path = self._br_netfilter_path("bridge-nf-call-iptables")
            old = self._set_sysctl(path, "1")
            if old is None:
                raise PrerequisitesNotMet(f"cannot set {path} to 1; {self._br_netfilter_remedy()}")
            if old != "1":
                rec.sysctls[path] = old
        if not self._use_proxy:
            # Loopback-sourced packets may leave by the bridge once DNATed
            # (127.0.0.1:port without a proxy); the kernel drops them otherwise.
            path = self._sysctl_path("conf", rec.bridge, "route_localnet")
            old = self._set_sysctl(path, "1")
            if old is not None and old != "1":
                rec.sysctls[path] = old

    def _add_host_rules(self) -> None:
        """Our chains, the shared rules and every network's, each recorded before it is added."""
        assert self._default is not None
        if not self._ipt.available():
            raise PrerequisitesNotMet(
                "iptables is not installed: install it (apt-get install iptables) "
                "or run the daemon with --iptables=false"
            )
        families = [4, 6] if self._use_ip6tables else [4]
        shared = self._shared_rules()
        default = self._default.record
        default.rules = shared + self._network_rules(default)
        self._setup_network_sysctls(default)
        self._save_network(self._default)
        for family in families:
            for table, chains in CHAINS.items():
                for chain in chains:
                    self._ipt.new_chain(table, chain, family)
        # The shared rules at the top of FORWARD, PREROUTING and OUTPUT, in
        # the order given, before any rule of the host's own firewall.
        self._ipt.apply(add_ops(default.rules))
        for net in self._networks.values():
            if net is self._default:
                continue
            try:
                self._add_network_rules(net)
            except EngineError as exc:
                LOG.error("network %s: cannot add its rules: %s", net.record.name, exc)

    def _rules_intact(self, previous: NetworkRecord, record: NetworkRecord, users: Sequence[_Network]) -> bool:
        """Whether every rule the state records is the one this configuration makes, and is in place.

        A rule of a container's port or of a link may also be unrecorded
        (``restore`` adds it). One ``-C`` transaction checks them all; the
        answer is no whenever in doubt, and ``init`` then rebuilds.
        """
        if not self._use_iptables or previous.bridge != record.bridge:
            return False
        if previous.rules != self._shared_rules() + self._network_rules(record):
            return False
        rules = list(previous.rules)
        for net in users:
            if net.record.rules != self._network_rules(net.record):
                return False
            rules += net.record.rules
        for net in self._networks.values():
            for ep in net.endpoints.values():
                if ep.rules and ep.rules != self._port_rules(ep, ep.ports, []):
                    return False
                rules += ep.rules
        for link in self._links:
            recorded = [Rule.from_json(r) for r in link.get("Rules", [])]
            port, _, proto = link["Port"].partition("/")
            if recorded and (
                self._icc or recorded != link_rules(record.bridge, link["ParentIP"], link["ChildIP"], [(port, proto)])
            ):
                return False
            rules += recorded
        if any(r.family == 6 for r in rules) and not self._ipt.available(6):
            return False
        return self._ipt.available() and self._ipt.all_present(rules)

    def _keep_host_rules(self) -> None:
        """The networks' sysctls set again (their rules are in place), every record saved."""
        for net in self._networks.values():
            try:
                self._setup_network_sysctls(net.record)
            except EngineError as exc:
                if net is self._default:
                    raise
                LOG.error("network %s: %s", net.record.name, exc)
            self._save_network(net)

    def _add_network_rules(self, net: _Network) -> None:
        """One network's sysctls and rules, recorded first."""
        rec = net.record
        self._setup_network_sysctls(rec)
        rec.rules = self._network_rules(rec)
        self._save_network(net)
        self._ipt.apply(add_ops(rec.rules))

    def _remove_host_rules(
        self, records: Sequence[NetworkRecord], endpoints: Sequence[Endpoint], extra: Sequence[Rule] = ()
    ) -> None:
        """Take out every rule the networks, endpoints and links recorded, ``extra``, and our chains."""
        for rec in records:
            for path, old in rec.sysctls.items():
                self._set_sysctl(path, str(old))
            rec.sysctls = {}
        if not self._ipt.available():
            return
        rules = [r for rec in records for r in rec.rules]
        for ep in endpoints:
            rules.extend(ep.rules)
        for link in self._links:
            rules.extend(Rule.from_json(r) for r in link.get("Rules", []))
        rules.extend(extra)
        rules = [r for r in rules if r.family == 4 or self._ipt.available(6)]
        # Once each: the same rule twice would fail the one-transaction delete.
        self._ipt.delete_all(list(dict.fromkeys(rules)))
        # A rule recorded twice was added twice, by a version that recorded
        # a container port's shared rules once per host port: every copy goes.
        recorded = Counter(rules) - Counter(extra)
        for rule in [r for r, n in recorded.items() if n > 1]:
            self._ipt.delete(rule)
        for family in (4, 6) if self._ipt.available(6) else (4,):
            # Our chains jump to each other: all are flushed before any is
            # deleted (a chain still referenced cannot be).
            for table, chains in CHAINS.items():
                for chain in chains:
                    if self._ipt.chain_exists(table, chain, family):
                        self._ipt.run("-t", table, "-F", chain, family=family)
            for table, chains in CHAINS.items():
                for chain in chains:
                    self._ipt.remove_chain(table, chain, family)
        for ep in endpoints:
            if ep.rules:
                ep.rules = []
                self._save_endpoint(ep)
        if any(link.get("Rules") for link in self._links):
            for link in self._links:
                link["Rules"] = []
            self.store.save(LINKS_FILE, self._links)

    def _require_ready(self) -> None:
        if not self._ready:
            raise NotSupported("the bridge network driver is not initialized (init() first)")

    # networks
    def _save_network(self, net: _Network) -> None:
        if net.record.default:
            self.store.save(BRIDGE_FILE, net.record.to_json())
        else:
            net.store.save(NETWORK_FILE, net.record.to_json())

    def _net(self, network_id: str) -> _Network:
        net = self._networks.get(network_id)
        if net is None:
            raise NotFound(f"network {network_id} not found")
        return net

    def create_network(self, spec: NetworkSpec) -> dict:
        """A user-defined network: subnets, bridge, rules; see :meth:`NetworkDriver.create_network`."""
        self._require_ready()
        with self._lock:
            if spec.network_id in self._networks:
                raise Conflict(f"network {spec.network_id} exists")
            record = self._new_record(spec)
            net = _Network(record, self.store.network_store(record.id))
            # Recorded before anything exists on the host: a crash in between
            # leaves a record that the next init makes whole (or delete_network removes).
            self._save_network(net)
            self._networks[record.id] = net
            try:
                if record.enable_ipv6 and self.options.ip_forward:
                    self._enable_forwarding(6)
                self._make_bridge(record)
                self._save_network(net)
                net.make_pools()
                if self._use_iptables:
                    if self._needs_br_netfilter(record.icc):
                        self._load_br_netfilter()
                    self._add_network_rules(net)
            except BaseException:
                try:
                    self._destroy_network(net)
                except EngineError as exc:
                    LOG.error("cleaning up after a failed network %s: %s", record.name, exc)
                raise
            LOG.info("network %s (%s): %s %s", record.name, record.id[:12], record.bridge, record.subnet)
            return self._resource(net)

    def _new_record(self, spec: NetworkSpec) -> NetworkRecord:
        """Check the options and the IPAM configuration and choose what is left to choose (the lock is held)."""
        options = {str(k): str(v) for k, v in (spec.options or {}).items()}
        icc = _parse_bool_option(OPT_ICC, options[OPT_ICC]) if OPT_ICC in options else True
        masquerade = _parse_bool_option(OPT_MASQ, options[OPT_MASQ]) if OPT_MASQ in options else True
        enable_ipv6 = spec.enable_ipv6
        if OPT_IPV6 in options:
            enable_ipv6 = enable_ipv6 or _parse_bool_option(OPT_IPV6, options[OPT_IPV6])
        host_ip = options.get(OPT_HOST_IP, "") or self.options.default_ip or WILDCARD
        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise InvalidParameter(f"failed to parse {OPT_HOST_IP} value: {host_ip} (invalid IP address)") from None
        mtu = self._default.record.mtu if self._default is not None else DEFAULT_MTU
        if OPT_MTU in options:
            text = options[OPT_MTU]
            if not text.strip().lstrip("-").isdigit():
                raise InvalidParameter(
                    f'failed to parse {OPT_MTU} value: {text} (strconv.Atoi: parsing "{text}": invalid syntax)'
                )
            mtu = int(text)
            if mtu < 68 or mtu > 65535:
                raise InvalidParameter(f"invalid MTU number: {mtu}")
        bridge = options.get(OPT_NAME, "") or f"br-{spec.network_id[:12]}"
        if len(bridge) > IFNAME_MAX or "/" in bridge or not bridge.strip():
            raise InvalidParameter(f"invalid bridge name {bridge!r}: at most {IFNAME_MAX} characters, no '/'")
        for other in self._networks.values():
            if other.bridge == bridge:
                raise Forbidden(
                    f"cannot create network {spec.network_id} ({bridge}): conflicts with network "
                    f"{other.id} ({other.bridge}): networks have same bridge name"
                )
        configs = list(spec.ipam)
        sdk_ipam.validate_ipam(configs)
        v4 = [c for c in configs if c.version == 4]
        v6 = [c for c in configs if c.version == 6]
        if len(v4) > 1 or len(v6) > 1:
            raise Forbidden("bridge driver doesn't support multiple subnets")
        taken = [s for n in self._networks.values() for s in n.subnets()]
        cfg4 = v4[0] if v4 else IPAMConfig()
        if cfg4.subnet:
            subnet = ipaddress.ip_network(cfg4.subnet, strict=False)
            sdk_ipam.check_overlap(subnet, taken)
        else:
            subnet = sdk_ipam.choose_subnet(self._pools(), taken, self._host_routes(), 4)
        gateway = cfg4.gateway or str(subnet.network_address + 1)
        shown = [cfg.to_api() for cfg in configs if cfg.subnet]
        if not cfg4.subnet:
            # Chosen by the IPAM: shown with its gateway, as dockerd shows it.
            shown.insert(0, {"Subnet": str(subnet), "Gateway": gateway})
        subnet6 = gateway6 = range6 = ""
        aux6: dict[str, str] = {}
        if enable_ipv6:
            cfg6 = v6[0] if v6 else IPAMConfig()
            if cfg6.subnet:
                net6 = ipaddress.ip_network(cfg6.subnet, strict=False)
                sdk_ipam.check_overlap(net6, taken)
            else:
                net6 = sdk_ipam.choose_subnet(self._pools(), taken, (), 6)
                shown.append({"Subnet": str(net6), "Gateway": str(net6.network_address + 1)})
            subnet6, gateway6 = str(net6), cfg6.gateway or str(net6.network_address + 1)
            range6, aux6 = cfg6.ip_range, dict(cfg6.aux_addresses)
        return NetworkRecord(
            id=spec.network_id,
            name=spec.name,
            bridge=bridge,
            created=spec.created or time.time(),
            subnet=str(subnet),
            gateway=gateway,
            ip_range=cfg4.ip_range,
            aux=dict(cfg4.aux_addresses),
            subnet6=subnet6,
            gateway6=gateway6,
            ip_range6=range6,
            aux6=aux6,
            mtu=mtu,
            icc=icc,
            masquerade=masquerade,
            host_ip=host_ip,
            internal=spec.internal,
            enable_ipv6=enable_ipv6,
            attachable=spec.attachable,
            options=options,
            labels={str(k): str(v) for k, v in (spec.labels or {}).items()},
            ipam=shown,
            ipam_options=dict(spec.ipam_options) if spec.ipam_options is not None else None,
            configured=[cfg.subnet for cfg in configs if cfg.subnet],
        )

    def _pools(self) -> Sequence[sdk_ipam.PoolSpec]:
        return self.options.default_address_pools or DEFAULT_POOLS

    def _host_routes(self) -> list[IPv4Network | IPv6Network]:
        """What an IPAM-chosen subnet must not cover: the host's routes (ours aside) and nameservers."""
        out: list[IPv4Network | IPv6Network] = []
        with IPRoute() as ipr:
            # Our own bridges' routes are there too: their subnets are taken anyway.
            out += netlink.main_routes(ipr)
        out += [IPv4Network(f"{ns}/32") for ns in self._nameservers()]
        return out

    def _make_bridge(self, rec: NetworkRecord) -> None:
        """The network's bridge with its gateway addresses, up (made if missing; an existing bridge is used)."""
        address = IPv4Interface(f"{rec.gateway}/{IPv4Network(rec.subnet).prefixlen}")
        address6 = (
            IPv6Interface(f"{rec.gateway6}/{IPv6Network(rec.subnet6).prefixlen}")
            if rec.enable_ipv6 and rec.subnet6
            else None
        )
        with IPRoute() as ipr:
            index = netlink.link_index(ipr, rec.bridge)
            if index is None:
                if not rec.mac:
                    rec.mac = ipam.random_mac()
                try:
                    netlink.create_bridge(ipr, rec.bridge, address, rec.mtu, rec.mac, address6)
                except NetlinkError as exc:
                    raise HostError(f"cannot create bridge {rec.bridge}: {os.strerror(exc.code)}") from exc
                rec.created_bridge = True
            else:
                kind = netlink.link_kind(ipr, index)
                if kind != "bridge":
                    raise Forbidden(
                        f"cannot create network {rec.id} ({rec.bridge}): {rec.bridge} exists and is not a bridge "
                        f"(it is a {kind or 'physical'} interface)"
                    )
                netlink.add_address(ipr, index, address)
                if address6 is not None:
                    netlink.add_address(ipr, index, address6)
                netlink.ensure_up(ipr, index)
                rec.mac = netlink.link_attrs(ipr, index)["address"] or rec.mac
        if address6 is not None:
            self._enable_ipv6_on(rec.bridge)

    def delete_network(self, network_id: str) -> None:
        """Remove a user-defined network; see :meth:`NetworkDriver.delete_network`."""
        self._require_ready()
        with self._lock:
            net = self._net(network_id)
            if net.record.default:
                raise Forbidden(f"{net.record.name} is a pre-defined network and cannot be removed")
            if net.endpoints:
                raise Forbidden(f"network {net.record.name} id {net.id} has active endpoints")
            self._destroy_network(net)
            LOG.info("network %s (%s) removed", net.record.name, net.id[:12])

    def _destroy_network(self, net: _Network) -> None:
        """Rules, sysctls, the bridge (if ours), then the record (the lock is held)."""
        rec = net.record
        problems = []
        for path, old in rec.sysctls.items():
            self._set_sysctl(path, str(old))
        if rec.rules and self._ipt.available():
            try:
                self._ipt.delete_all([r for r in rec.rules if r.family == 4 or self._ipt.available(6)])
            except EngineError as exc:
                problems.append(str(exc))
            else:
                rec.rules = []
        if rec.created_bridge:
            try:
                netlink.delete_link(rec.bridge)
            except NetlinkError as exc:
                problems.append(f"cannot delete {rec.bridge}: {os.strerror(exc.code)}")
        if problems:
            self._save_network(net)
            raise HostError(f"removing network {rec.name}: " + "; ".join(problems))
        net.store.remove_home()
        self._networks.pop(net.id, None)

    def _resource(self, net: _Network) -> dict:
        """A network as ``GET /networks`` lists it (API 1.41)."""
        rec = net.record
        containers = {
            ep.container_id: {
                "Name": ep.name,
                "EndpointID": ep.endpoint_id,
                "MacAddress": ep.mac,
                "IPv4Address": f"{ep.ip}/{ep.prefixlen}",
                "IPv6Address": f"{ep.ip6}/{ep.prefixlen6}" if ep.ip6 else "",
            }
            for ep in net.endpoints.values()
        }
        return {
            "Name": rec.name,
            "Id": rec.id,
            "Created": rfc3339nano(float(rec.created)),
            "Scope": "local",
            "Driver": "bridge",
            "EnableIPv6": rec.enable_ipv6,
            "IPAM": {"Driver": "default", "Options": rec.ipam_options, "Config": [dict(c) for c in rec.ipam]},
            "Internal": rec.internal,
            "Attachable": rec.attachable,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Containers": containers,
            "Options": dict(rec.options),
            "Labels": dict(rec.labels),
        }

    def networks(self) -> list[dict]:
        """Every network as a NetworkResource (API 1.41): the default ``bridge`` first."""
        self._require_ready()
        with self._lock:
            ordered = sorted(self._networks.values(), key=lambda n: (not n.record.default, n.record.created))
            return [self._resource(net) for net in ordered]

    # endpoints
    def _container_endpoints(self, container_id: str) -> list[Endpoint]:
        return [net.endpoints[container_id] for net in self._networks.values() if container_id in net.endpoints]

    def _gateway_endpoint(self, container_id: str) -> Endpoint | None:
        eps = self._container_endpoints(container_id)
        for ep in eps:
            if ep.default_route:
                return ep
        return eps[0] if eps else None

    def _next_interface(self, container_id: str) -> str:
        used = {ep.interface for ep in self._container_endpoints(container_id)}
        n = 0
        while f"eth{n}" in used:
            n += 1
        return f"eth{n}"

    def allocate_interface(self, container_id: str, request: Mapping[str, Any]) -> dict:
        """An endpoint on the default network carrying the default routes; see
        :meth:`NetworkDriver.allocate_interface`."""
        self._require_ready()
        assert self._default is not None
        with self._lock:
            if container_id in self._default.endpoints:
                # A stop that never reached release (a crash in between):
                # the old pair must go before the namespace gets a new one.
                LOG.warning("container %s still had a network endpoint; releasing it first", container_id[:12])
                self._leave_locked(self._default, container_id)
        req = dict(request)
        req.setdefault("IPv4Address", request.get("RequestedIP") or "")
        req.setdefault("MacAddress", request.get("RequestedMac") or "")
        req.setdefault("DefaultRoute", True)
        return self.join(self._default.id, container_id, req)

    def join(self, network_id: str, container_id: str, request: Mapping[str, Any]) -> dict:
        """An endpoint for a container on a network; see :meth:`NetworkDriver.join`."""
        self._require_ready()
        netns_path = str(request.get("NetnsPath") or request.get("SandboxKey") or "")
        if not netns_path:
            raise InvalidParameter("join needs NetnsPath: the file the container's network namespace is bound to")
        if not os.path.exists(netns_path):
            raise InvalidParameter(f"network namespace {netns_path} does not exist")
        requested = self._parse_requested_ip(request.get("IPv4Address") or request.get("RequestedIP"), 4)
        requested6 = self._parse_requested_ip(request.get("IPv6Address"), 6)
        requested_mac = str(request.get("MacAddress") or request.get("RequestedMac") or "")
        mac_override = ipam.parse_mac(requested_mac) if requested_mac else ""
        name = str(request.get("Name") or "").lstrip("/") or container_id[:12]
        default_route = bool(request.get("DefaultRoute"))
        with self._lock:
            net = self._net(network_id)
            if container_id in net.endpoints:
                raise Forbidden(f"endpoint with name {name} already exists in network {net.record.name}")
            assert net.pool is not None
            ip = net.pool.allocate({IPv4Address(e.ip) for e in net.endpoints.values()}, requested)
            ip6 = None
            if net.pool6 is not None:
                ip6 = net.pool6.allocate({IPv6Address(e.ip6) for e in net.endpoints.values() if e.ip6}, requested6)
            if default_route:
                for other in self._container_endpoints(container_id):
                    if other.default_route:
                        other.default_route = False
                        self._save_endpoint(other)
            ep = Endpoint(
                container_id=container_id,
                name=name,
                endpoint_id=secrets.token_hex(32),
                ip=str(ip),
                prefixlen=net.pool.subnet.prefixlen,
                gateway=net.record.gateway,
                mac=mac_override or ipam.mac_for(IPv4Address(int(ip))),
                bridge=net.bridge,
                mtu=net.record.mtu,
                host_veth=self._new_veth_name(),
                netns_path=netns_path,
                network_id=net.id,
                interface=self._next_interface(container_id),
                default_route=default_route,
                ip6=str(ip6) if ip6 else "",
                prefixlen6=net.pool6.subnet.prefixlen if ip6 and net.pool6 else 0,
                gateway6=net.record.gateway6 if ip6 else "",
            )
            # Written first: a crash from here on leaves a file naming the
            # address and the veth, so neither is lost nor handed out twice.
            self._save_endpoint(ep)
            net.endpoints[container_id] = ep
            self._active.add(container_id)
        try:
            self._plumb(ep)
        except BaseException as exc:
            with self._lock:
                try:
                    self._leave_locked(net, container_id)
                except EngineError as cleanup:
                    LOG.error("cleaning up after a failed interface for %s: %s", name, cleanup)
            raise self._interface_error(ep, exc) from exc
        LOG.debug(
            "container %s: %s %s/%d on %s via %s", name, ep.interface, ep.ip, ep.prefixlen, net.bridge, ep.host_veth
        )
        return self._settings(ep)

    def _save_endpoint(self, ep: Endpoint) -> None:
        net = self._networks.get(ep.network_id)
        (net.store if net is not None else self.store).save_endpoint(ep)

    def _plumb(self, ep: Endpoint) -> None:
        """The veth pair and the container's side of it."""
        for _attempt in range(8):
            try:
                netlink.create_veth(ep.host_veth, ep.bridge, ep.mtu, ep.netns_path, ep.mac, ep.interface)
                break
            except LookupError:
                raise HostError(f"bridge {ep.bridge} is gone; restart the daemon to create it again") from None
            except NetlinkError as exc:
                # EEXIST is either our random host name (someone else's
                # interface: pick another) or the interface in the namespace (fatal).
                if exc.code != errno.EEXIST or not netlink.link_exists(ep.host_veth):
                    raise
                with self._lock:
                    ep.host_veth = self._new_veth_name()
                    self._save_endpoint(ep)
        else:
            raise HostError(f"cannot find a free name for the host side of {ep.name}'s interface")
        if not self._use_proxy:
            # Without the proxy a container's connection to its own published
            # port is DNATed straight back out of the port it came in by.
            netlink.set_hairpin(ep.host_veth)
        netlink.configure_container(
            ep.netns_path,
            IPv4Interface(f"{ep.ip}/{ep.prefixlen}"),
            IPv4Address(ep.gateway) if ep.default_route else None,
            ep.interface,
            IPv6Interface(f"{ep.ip6}/{ep.prefixlen6}") if ep.ip6 else None,
            IPv6Address(ep.gateway6) if ep.default_route and ep.ip6 and ep.gateway6 else None,
        )

    def _interface_error(self, ep: Endpoint, exc: BaseException) -> BaseException:
        if isinstance(exc, EngineError) or not isinstance(exc, (NetlinkError, OSError)):
            return exc
        code = exc.code if isinstance(exc, NetlinkError) else exc.errno
        what = f"cannot set up the network of {ep.name}"
        if code == errno.EEXIST:
            return Conflict(f"{what}: its network namespace already has an {ep.interface}")
        if isinstance(exc, OSError) and code == errno.ENOENT:
            return InvalidParameter(f"{what}: network namespace {ep.netns_path} does not exist")
        return HostError(f"{what}: {os.strerror(code) if code else exc}")

    @staticmethod
    def _parse_requested_ip(value: Any, family: int) -> IPv4Address | IPv6Address | None:
        if not value:
            return None
        try:
            addr = ipaddress.ip_address(str(value))
        except ValueError:
            addr = None
        if addr is None or addr.version != family:
            raise InvalidParameter(f"invalid requested IPv{family} address {value!r}")
        return addr

    def _new_veth_name(self) -> str:
        """Docker's naming: "veth" and 7 random hex digits (within IFNAMSIZ)."""
        taken = {ep.host_veth for net in self._networks.values() for ep in net.endpoints.values()}
        while True:
            # Collisions with interfaces that are not ours are caught by
            # EEXIST when the pair is made (see _plumb): no lookup here.
            candidate = "veth" + secrets.token_hex(4)[:7]
            if candidate not in taken:
                return candidate

    def leave(self, network_id: str, container_id: str) -> None:
        """Take a container's endpoint off a network; see :meth:`NetworkDriver.leave`."""
        self._require_ready()
        with self._lock:
            self._leave_locked(self._net(network_id), container_id)

    def set_gateway(self, container_id: str, network_id: str | None) -> None:
        """Default routes (and published ports) through the endpoint on ``network_id``; see
        :meth:`NetworkDriver.set_gateway`."""
        self._require_ready()
        with self._lock:
            eps = self._container_endpoints(container_id)
            target = None
            if network_id:
                target = self._net(network_id).endpoints.get(container_id)
                if target is None:
                    raise NotFound(f"container {container_id[:12]} is not connected to network {network_id}")
            old = next((ep for ep in eps if ep.default_route), None)
            if old is target and target is not None:
                return
            bindings = self._bindings_of(old) if old is not None else {}
            if old is not None and old.ports:
                self._unpublish(old)
            for ep in eps:
                ep.default_route = ep is target
                self._save_endpoint(ep)
            anchor = target or old or (eps[0] if eps else None)
            netns_path = anchor.netns_path if eps and anchor is not None else ""
            if netns_path and os.path.exists(netns_path):
                try:
                    netlink.set_default_routes(
                        netns_path,
                        target.interface if target is not None else None,
                        IPv4Address(target.gateway) if target is not None else None,
                        IPv6Address(target.gateway6) if target is not None and target.ip6 and target.gateway6 else None,
                    )
                except (NetlinkError, OSError) as exc:
                    raise HostError(f"cannot change the default route of {container_id[:12]}: {exc}") from exc
        if bindings and target is not None:
            self.allocate_ports(container_id, bindings)

    @staticmethod
    def _bindings_of(ep: Endpoint) -> dict[str, list[dict]]:
        """The endpoint's published ports as PortBindings with their host ports, to publish them elsewhere."""
        out: dict[str, list[dict]] = {}
        for m in ep.ports:
            out.setdefault(m.key, []).append({"HostIp": m.host_ip, "HostPort": str(m.host_port)})
        return out

    def release_interface(self, container_id: str) -> None:
        """Give back every endpoint of a container; see :meth:`NetworkDriver.release_interface`.

        :raises HostError: something could not be removed; the endpoint file
            stays (the address stays reserved) so that ``prune`` or the next
            ``init`` tries again.
        """
        self._require_ready()
        with self._lock:
            self._release_locked(container_id)

    def _release_locked(self, container_id: str) -> None:
        problems = []
        for net in list(self._networks.values()):
            try:
                self._leave_locked(net, container_id)
            except EngineError as exc:
                problems.append(str(exc))
        if problems:
            raise HostError("; ".join(problems))

    def _leave_locked(self, net: _Network, container_id: str) -> None:
        ep = net.endpoints.get(container_id)
        if ep is None:
            net.store.remove_endpoint(container_id)
            return
        problems: list[str] = []
        try:
            self._unpublish(ep)
        except EngineError as exc:
            problems.append(str(exc))
        if net is self._default:
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
        net.store.remove_endpoint(container_id)
        del net.endpoints[container_id]
        if not self._container_endpoints(container_id):
            self._active.discard(container_id)
        LOG.debug("container %s: released %s on %s", ep.name, ep.ip, net.record.name)

    # ports
    def allocate_ports(
        self, container_id: str, port_bindings: Mapping[str, Sequence[Mapping[str, Any]] | None]
    ) -> dict[str, list[dict]]:
        """Publish ports on the container's gateway endpoint, all or none; see :meth:`NetworkDriver.allocate_ports`."""
        self._require_ready()
        with self._lock:
            ep = self._endpoint(container_id)
            net = self._networks.get(ep.network_id)
            default_ip = (net.record.host_ip if net is not None else "") or self.options.default_ip or WILDCARD
        requests = requests_from_bindings(port_bindings, default_ip)
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
                self._save_endpoint(ep)
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
                self._save_endpoint(ep)
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
        """The rules ``mappings`` need that ``present`` lacks, each once (IPv6 ones too for an IPv6 endpoint).

        The FORWARD accept and the hairpin MASQUERADE name the container
        port only: a port published on two host ports shares them, and a
        rule added twice would outlive the one delete its record makes.
        """
        rules: list[Rule] = []
        for m in mappings:
            made = port_rules(
                ep.bridge, m.proto, m.host_ip, m.host_port, ep.ip, m.container_port, proxy=self._use_proxy
            )
            if ep.ip6 and self._use_ip6tables and m.host_ip in ("", WILDCARD):
                made += port_rules(
                    ep.bridge, m.proto, "::", m.host_port, ep.ip6, m.container_port, proxy=self._use_proxy, family=6
                )
            for rule in made:
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
            net = self._networks.get(ep.network_id)
            if net is not None and ep.container_id in net.endpoints:
                self._save_endpoint(ep)

    def _taken(self, host_ip: str, proto: str, port: int, pending: Sequence[PortMapping]) -> bool:
        held = (m for net in self._networks.values() for e in net.endpoints.values() for m in e.ports)
        for m in [*pending, *held]:
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
        """Unpublish every port of a container, keeping its interfaces."""
        self._require_ready()
        with self._lock:
            for ep in self._container_endpoints(container_id):
                if ep.ports or ep.proxies or ep.rules:
                    self._unpublish(ep)
                    self._save_endpoint(ep)

    def _unpublish(self, ep: Endpoint) -> None:
        """Proxies and rules of ``ep``'s ports gone, its port list emptied (the lock is held)."""
        for record in ep.proxies:
            stop_proxy(record)
        ep.proxies = []
        if ep.rules and self._ipt.available():
            self._ipt.delete_all([r for r in ep.rules if r.family == 4 or self._ipt.available(6)])
        ep.rules = []
        ep.ports = []

    def _endpoint(self, container_id: str) -> Endpoint:
        ep = self._gateway_endpoint(container_id)
        if ep is None:
            raise NotFound(
                f"container {container_id[:12]} has no network interface on the bridge: allocate_interface first"
            )
        return ep

    # links (the default network's, with --icc=false)
    def link(
        self, parent: Mapping[str, Any] | str, child: Mapping[str, Any] | str, ports: Sequence[str], enable: bool
    ) -> None:
        """Allow (or stop allowing) ``parent`` to reach ``child``'s ``ports`` on the default network.

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
        """(container ID or "", IPv4 address) of a link end on the default network."""
        assert self._default is not None
        if isinstance(who, str):
            ep = self._default.endpoints.get(who)
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

        Nothing is reallocated: addresses, MACs and host ports stay. Each
        host veth is put back on its bridge (and the pair made again if it
        vanished while the namespace lives on), the port rules are added
        again unless ``init`` found them in place, a proxy that still
        runs is kept and a dead one restarted, and the container's links
        get their rules once their other end is back too.
        """
        self._require_ready()
        with self._lock:
            eps = self._container_endpoints(container_id)
            if not eps:
                return None
            self._active.add(container_id)
            for ep in eps:
                net = self._networks[ep.network_id]
                ep.bridge = net.bridge
                self._readopt_interface(ep)
                self._republish(ep)
                self._save_endpoint(ep)
            for record in self._links:
                ends = {record["Parent"], record["Child"]}
                if container_id in ends and all(not cid or cid in self._active for cid in ends):
                    try:
                        self._apply_link(record)
                    except IptablesError as exc:
                        LOG.error(
                            "container %s: cannot restore the rules of link %s -> %s: %s",
                            eps[0].name,
                            record["ParentIP"],
                            record["ChildIP"],
                            exc,
                        )
            gateway = self._gateway_endpoint(container_id)
            return self._settings(gateway) if gateway is not None else None

    def _readopt_interface(self, ep: Endpoint) -> None:
        """Host veth back on the (maybe re-made) bridge, or the pair made again; errors only logged."""
        try:
            with IPRoute() as ipr:
                bridge_index = netlink.link_index(ipr, ep.bridge)
            if bridge_index is not None and netlink.attach_to_bridge(ep.host_veth, bridge_index):
                return
            if (
                bridge_index is not None
                and ep.netns_path
                and os.path.exists(ep.netns_path)
                and ep.interface not in netlink.interfaces_of(ep.netns_path)
            ):
                LOG.warning("container %s lost its interface; making %s again", ep.name, ep.host_veth)
                self._plumb(ep)
                return
            LOG.warning("container %s: interface %s is gone and cannot be made again", ep.name, ep.host_veth)
        except (NetlinkError, OSError, EngineError) as exc:
            LOG.error("container %s: cannot re-adopt interface %s: %s", ep.name, ep.host_veth, exc)

    def _republish(self, ep: Endpoint) -> None:
        """The rules of ``ep``'s ports again, and a proxy for those no live proxy serves."""
        if self._use_iptables and ep.ports and not ep.rules:  # kept by init when they are in place
            rules = self._port_rules(ep, ep.ports, [])
            ep.rules = rules
            self._save_endpoint(ep)
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
            doomed = {cid for net in self._networks.values() for cid in net.endpoints if cid not in keep}
            for container_id in sorted(doomed):
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
            "GlobalIPv6Address": ep.ip6,
            "GlobalIPv6PrefixLen": ep.prefixlen6,
            "IPv6Gateway": ep.gateway6,
            "MacAddress": ep.mac,
            "Bridge": ep.bridge,
            "Mtu": ep.mtu,
            "EndpointID": ep.endpoint_id,
            "NetworkID": ep.network_id,
            "Interface": ep.interface,
            "DefaultRoute": ep.default_route,
            "HostVeth": ep.host_veth,
            "SandboxKey": ep.netns_path,
            "Ports": ports,
        }

    def settings(self, container_id: str) -> dict | None:
        """The settings of the container's gateway endpoint (or its only one), or None."""
        with self._lock:
            ep = self._gateway_endpoint(container_id)
            return self._settings(ep) if ep is not None else None

    def configured_subnets(self, network_id: str) -> list[str]:
        with self._lock:
            net = self._networks.get(network_id)
            if net is None or net.record.default:
                return []
            return list(net.record.configured)

    def endpoints(self, container_id: str) -> dict[str, dict]:
        with self._lock:
            return {ep.network_id: self._settings(ep) for ep in self._container_endpoints(container_id)}

    # the end
    def close(self) -> None:
        """Stop serving without touching the host: running containers keep
        their interfaces, rules and proxies until the next ``init``/``restore``."""
        with self._lock:
            self._ready = False

    def shutdown(self) -> None:
        """Release every container, then the host rules, chains and sysctls (the bridges stay)."""
        with self._lock:
            problems: list[str] = []
            for container_id in sorted({cid for net in self._networks.values() for cid in net.endpoints}):
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
            if self._networks:
                records = [n.record for n in self._networks.values()]
                try:
                    self._remove_host_rules(records, [])
                except EngineError as exc:
                    problems.append(str(exc))
                else:
                    for net in self._networks.values():
                        net.record.rules = []
                        net.record.sysctls = {}
                        self._save_network(net)
            self._ready = False
            if problems:
                LOG.error("bridge driver shutdown: %s", "; ".join(problems))
