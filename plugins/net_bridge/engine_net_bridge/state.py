"""The driver's state on disk, under its home (``<root>/network``)::

    network/
      bridge.json            the network: ID, creation time, bridge, subnet,
                             and the iptables rules and sysctls init applied
      links.json             links made with link(): IDs, addresses, port,
                             and their iptables rules
      endpoints/<id>.json    one per container: address, MAC, host veth,
                             namespace path, published ports, their
                             iptables rules, the proxies' PIDs
      proxy.log              what the userland proxies say

Every file is replaced atomically (write, fsync, rename), so a crash leaves
the old or the new version. An endpoint file is written *before* its veth,
rules or proxy exist, and removed only after they are gone: whatever a crash
interrupts, the file still names it, and the next ``init``/``release`` takes
it away. The addresses in use are exactly those of the endpoint files, which
is how a restarted daemon never hands out a running container's address.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from engine.sys.fs import atomic_write
from engine_net_bridge.iptables import Rule
from engine_net_bridge.portmapper import ProxyRecord
from engine_net_bridge.ports import PortMapping

LOG = logging.getLogger(__name__)


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
        )


class Store:
    """Reads and writes the files of :mod:`engine_net_bridge.state`.

    :param home: the driver's home directory (created on first write).
    """

    def __init__(self, home: str) -> None:
        self.home = home
        self.endpoints_dir = os.path.join(home, "endpoints")
        self.proxy_log = os.path.join(home, "proxy.log")

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
