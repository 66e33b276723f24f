"""The driver's state on disk, under its home (``<root>/network``)::

    network/
      bridge.json            the default network (``bridge``): ID, creation
                             time, bridge, subnet, and the iptables rules
                             and sysctls init applied (the rules every
                             network shares are recorded here too)
      links.json             links made with link(): IDs, addresses, port,
                             and their iptables rules
      endpoints/<id>.json    one per container on the default network:
                             address, MAC, host veth, namespace path,
                             published ports, their iptables rules, the
                             proxies' PIDs
      networks/<net-id>/     one per user-defined network
        network.json         its record: name, options, labels, IPAM as
                             asked for and as allocated, bridge, rules
        endpoints/<id>.json  its containers, as above
      proxy.log              what the userland proxies say

Every file is replaced atomically (write, fsync, rename), so a crash leaves
the old or the new version. An endpoint file is written *before* its veth,
rules or proxy exist, and removed only after they are gone: whatever a crash
interrupts, the file still names it, and the next ``init``/``release`` takes
it away. The addresses in use on a network are exactly those of its
endpoint files, which is how a restarted daemon never hands out a running
container's address. A network's record is written before its bridge and
rules are made and removed after they are gone, for the same reason.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from engine.sys.fs import atomic_write
from engine_net_bridge.iptables import Rule
from engine_net_bridge.portmapper import ProxyRecord
from engine_net_bridge.ports import PortMapping

LOG = logging.getLogger(__name__)

#: A user-defined network's record, in its directory.
NETWORK_FILE = "network.json"


@dataclass
class Endpoint:
    """A container's attachment to the bridge."""

    container_id: str
    name: str
    endpoint_id: str
    ip: str
    prefixlen: int
    gateway: str
    mac: str
    bridge: str
    mtu: int
    host_veth: str
    netns_path: str
    ports: list[PortMapping] = field(default_factory=list)
    proxies: list[ProxyRecord] = field(default_factory=list)
    #: The iptables rules of the published ports, exactly as added.
    rules: list[Rule] = field(default_factory=list)
    #: The network it is on ("" in files of versions without user networks: the default one).
    network_id: str = ""
    #: Its name in the container's namespace.
    interface: str = "eth0"
    #: Whether the namespace's default routes go through this endpoint (and its ports are published here).
    default_route: bool = True
    ip6: str = ""
    prefixlen6: int = 0
    gateway6: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "ContainerID": self.container_id,
            "Name": self.name,
            "EndpointID": self.endpoint_id,
            "IPAddress": self.ip,
            "IPPrefixLen": self.prefixlen,
            "Gateway": self.gateway,
            "MacAddress": self.mac,
            "Bridge": self.bridge,
            "Mtu": self.mtu,
            "HostVeth": self.host_veth,
            "SandboxKey": self.netns_path,
            "Ports": [p.to_json() for p in self.ports],
            "Proxies": [p.to_json() for p in self.proxies],
            "Rules": [r.to_json() for r in self.rules],
            "NetworkID": self.network_id,
            "Interface": self.interface,
            "DefaultRoute": self.default_route,
            "GlobalIPv6Address": self.ip6,
            "GlobalIPv6PrefixLen": self.prefixlen6,
            "IPv6Gateway": self.gateway6,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Endpoint:
        return cls(
            container_id=doc["ContainerID"],
            name=doc.get("Name", ""),
            endpoint_id=doc["EndpointID"],
            ip=doc["IPAddress"],
            prefixlen=int(doc["IPPrefixLen"]),
            gateway=doc["Gateway"],
            mac=doc["MacAddress"],
            bridge=doc["Bridge"],
            mtu=int(doc["Mtu"]),
            host_veth=doc["HostVeth"],
            netns_path=doc.get("SandboxKey", ""),
            ports=[PortMapping.from_json(p) for p in doc.get("Ports", [])],
            proxies=[ProxyRecord.from_json(p) for p in doc.get("Proxies", [])],
            rules=[Rule.from_json(r) for r in doc.get("Rules", [])],
            network_id=str(doc.get("NetworkID") or ""),
            interface=str(doc.get("Interface") or "eth0"),
            default_route=bool(doc.get("DefaultRoute", True)),
            ip6=str(doc.get("GlobalIPv6Address") or ""),
            prefixlen6=int(doc.get("GlobalIPv6PrefixLen") or 0),
            gateway6=str(doc.get("IPv6Gateway") or ""),
        )


@dataclass
class NetworkRecord:
    """One network of the driver: the default ``bridge`` network or a user-defined one.

    ``ipam`` is the ``IPAM.Config`` as ``GET /networks`` shows it (what was
    asked for, or the subnet and gateway the IPAM chose); ``subnet``,
    ``gateway``, ``ip_range`` and ``aux`` (and their IPv6 twins) are what
    is in force.
    """

    id: str
    name: str
    bridge: str
    created: float
    default: bool = False
    #: Whether the driver made the bridge (it deletes it with the network).
    created_bridge: bool = False
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    aux: dict[str, str] = field(default_factory=dict)
    subnet6: str = ""
    gateway6: str = ""
    ip_range6: str = ""
    aux6: dict[str, str] = field(default_factory=dict)
    mtu: int = 1500
    mac: str = ""
    icc: bool = True
    masquerade: bool = True
    host_ip: str = ""
    internal: bool = False
    enable_ipv6: bool = False
    attachable: bool = False
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    ipam: list[dict[str, Any]] = field(default_factory=list)
    ipam_options: dict[str, str] | None = None
    #: The subnets asked for at create (not chosen by the IPAM).
    configured: list[str] = field(default_factory=list)
    #: The iptables rules made for the network (and, on the default one, those all networks share).
    rules: list[Rule] = field(default_factory=list)
    #: Sysctls changed, path -> the value to put back.
    sysctls: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Name": self.name,
            "Bridge": self.bridge,
            "Created": self.created,
            "Default": self.default,
            "CreatedBridge": self.created_bridge,
            "Subnet": self.subnet,
            "Gateway": self.gateway,
            "FixedCIDR": self.ip_range,
            "AuxAddresses": dict(self.aux),
            "Subnet6": self.subnet6,
            "Gateway6": self.gateway6,
            "FixedCIDRv6": self.ip_range6,
            "AuxAddresses6": dict(self.aux6),
            "Mtu": self.mtu,
            "MacAddress": self.mac,
            "Icc": self.icc,
            "Masquerade": self.masquerade,
            "HostIP": self.host_ip,
            "Internal": self.internal,
            "EnableIPv6": self.enable_ipv6,
            "Attachable": self.attachable,
            "Options": dict(self.options),
            "Labels": dict(self.labels),
            "IPAM": list(self.ipam),
            "IPAMOptions": self.ipam_options,
            "ConfiguredSubnets": list(self.configured),
            "Rules": [r.to_json() for r in self.rules],
            "Sysctls": dict(self.sysctls),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> NetworkRecord:
        """Read a record; ``bridge.json`` of versions before user networks has only some of the keys."""
        return cls(
            id=str(doc["ID"]),
            name=str(doc.get("Name") or "bridge"),
            bridge=str(doc.get("Bridge") or ""),
            created=float(doc.get("Created") or 0.0),
            default=bool(doc.get("Default", "Name" not in doc)),
            created_bridge=bool(doc.get("CreatedBridge")),
            subnet=str(doc.get("Subnet") or ""),
            gateway=str(doc.get("Gateway") or ""),
            ip_range=str(doc.get("FixedCIDR") or ""),
            aux={str(k): str(v) for k, v in (doc.get("AuxAddresses") or {}).items()},
            subnet6=str(doc.get("Subnet6") or ""),
            gateway6=str(doc.get("Gateway6") or ""),
            ip_range6=str(doc.get("FixedCIDRv6") or ""),
            aux6={str(k): str(v) for k, v in (doc.get("AuxAddresses6") or {}).items()},
            mtu=int(doc.get("Mtu") or 1500),
            mac=str(doc.get("MacAddress") or ""),
            icc=bool(doc.get("Icc", True)),
            masquerade=bool(doc.get("Masquerade", True)),
            host_ip=str(doc.get("HostIP") or ""),
            internal=bool(doc.get("Internal")),
            enable_ipv6=bool(doc.get("EnableIPv6")),
            attachable=bool(doc.get("Attachable")),
            options={str(k): str(v) for k, v in (doc.get("Options") or {}).items()},
            labels={str(k): str(v) for k, v in (doc.get("Labels") or {}).items()},
            ipam=list(doc.get("IPAM") or []),
            ipam_options=doc.get("IPAMOptions"),
            configured=[str(x) for x in doc.get("ConfiguredSubnets") or []],
            rules=[Rule.from_json(r) for r in doc.get("Rules", [])],
            sysctls={str(k): str(v) for k, v in (doc.get("Sysctls") or {}).items()},
        )


class Store:
    """Reads and writes the files of :mod:`engine_net_bridge.state`.

    :param home: the driver's home directory (created on first write).
    """

    def __init__(self, home: str) -> None:
        self.home = home
        self.endpoints_dir = os.path.join(home, "endpoints")
        self.proxy_log = os.path.join(home, "proxy.log")
        self.networks_dir = os.path.join(home, "networks")

    def network_store(self, network_id: str) -> Store:
        """The store of a user-defined network (``networks/<id>``)."""
        if not network_id or "/" in network_id or network_id.startswith("."):
            raise ValueError(f"bad network id {network_id!r}")
        return Store(os.path.join(self.networks_dir, network_id))

    def network_ids(self) -> list[str]:
        """The user-defined networks with a record on disk."""
        try:
            names = sorted(os.listdir(self.networks_dir))
        except FileNotFoundError:
            return []
        return [
            n
            for n in names
            if not n.startswith(".") and os.path.isfile(os.path.join(self.networks_dir, n, NETWORK_FILE))
        ]

    def remove_home(self) -> None:
        """Delete this (user network's) directory with its files."""
        shutil.rmtree(self.home, ignore_errors=True)

    def ensure(self) -> None:
        os.makedirs(self.endpoints_dir, mode=0o700, exist_ok=True)

    def _endpoint_path(self, container_id: str) -> str:
        if not container_id or "/" in container_id or container_id.startswith("."):
            raise ValueError(f"bad container id {container_id!r}")
        return os.path.join(self.endpoints_dir, container_id + ".json")

    def load_endpoints(self) -> dict[str, Endpoint]:
        out: dict[str, Endpoint] = {}
        try:
            names = sorted(os.listdir(self.endpoints_dir))
        except FileNotFoundError:
            return out
        for entry in names:
            if entry.startswith(".") or not entry.endswith(".json"):
                continue  # a temporary file of an interrupted atomic write
            path = os.path.join(self.endpoints_dir, entry)
            try:
                with open(path, "rb") as fh:
                    ep = Endpoint.from_json(json.load(fh))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # Written atomically, so this is damage from outside; keeping
                # the daemon up matters more than one container's network.
                LOG.error("ignoring unreadable network endpoint file %s: %s", path, exc)
                continue
            out[ep.container_id] = ep
        return out

    def save_endpoint(self, ep: Endpoint) -> None:
        self.ensure()
        atomic_write(self._endpoint_path(ep.container_id), json.dumps(ep.to_json(), indent=1).encode(), mode=0o600)

    def remove_endpoint(self, container_id: str) -> None:
        try:
            os.unlink(self._endpoint_path(container_id))
        except FileNotFoundError:
            pass

    def load(self, name: str, default: Any) -> Any:
        """A whole-file JSON document (``bridge.json``, ``links.json``), or ``default``."""
        path = os.path.join(self.home, name)
        try:
            with open(path, "rb") as fh:
                return json.load(fh)
        except FileNotFoundError:
            return default
        except (OSError, ValueError) as exc:
            LOG.error("ignoring unreadable %s: %s", path, exc)
            return default

    def save(self, name: str, doc: Any) -> None:
        self.ensure()
        atomic_write(os.path.join(self.home, name), json.dumps(doc, indent=1).encode(), mode=0o600)
