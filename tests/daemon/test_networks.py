"""The daemon's networks and a container's endpoint configuration, over a network driver stand-in (no
kernel): names and lookups, dockerd's refusals, list filters, prune, events, NetworkingConfig at create,
connect and disconnect of a stopped container, inspect's Networks."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
from fakes import IMAGE, Rig

from engine.daemon.network import NetworkService, endpoint_config, gateway_order
from engine.daemon.views import network_settings
from engine.drivers.network import NetworkDriver, NetworkOptions, NetworkSpec
from engine.errors import EngineError, Forbidden, InvalidParameter, NotFound, NotSupported


class MemoryNetworks(NetworkDriver):
    """A network driver that keeps networks in memory and plumbs nothing (a stand-in: no kernel here)."""

    name = "bridge"

    def __init__(self) -> None:
        super().__init__("/nonexistent", NetworkOptions())
        self.nets: dict[str, dict] = {}
        self.specs: dict[str, NetworkSpec] = {}
        self.deleted: list[str] = []
        self.nets["d" * 64] = self._resource(
            "d" * 64, "bridge", [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.42.1"}]
        )

    @staticmethod
    def _resource(nid: str, name: str, config: list[dict], **extra: Any) -> dict:
        return {
            "Name": name,
            "Id": nid,
            "Created": "2026-01-01T00:00:00Z",
            "Scope": "local",
            "Driver": "bridge",
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None, "Config": config},
            "Internal": False,
            "Attachable": False,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Containers": {},
            "Options": {},
            "Labels": {},
            **extra,
        }

    def init(self) -> dict:
        return {}

    def create_network(self, spec: NetworkSpec) -> dict:
        config = [c.to_api() for c in spec.ipam] or [{"Subnet": f"172.{18 + len(self.nets)}.0.0/16"}]
        self.specs[spec.network_id] = spec
        self.nets[spec.network_id] = self._resource(
            spec.network_id, spec.name, config, Labels=dict(spec.labels), Internal=spec.internal
        )
        return self.nets[spec.network_id]

    def delete_network(self, network_id: str) -> None:
        net = self.nets[network_id]
        if net["Containers"]:
            raise Forbidden(f"network {net['Name']} id {network_id} has active endpoints")
        self.deleted.append(network_id)
        del self.nets[network_id]

    def configured_subnets(self, network_id: str) -> list[str]:
        return [c.subnet for c in self.specs[network_id].ipam if c.subnet] if network_id in self.specs else []

    def networks(self) -> list[dict]:
        return [dict(n) for n in self.nets.values()]

    def endpoints(self, container_id: str) -> dict[str, dict]:
        return {}

    def allocate_interface(self, container_id: str, request: Any) -> dict:
        raise NotSupported("no kernel here")

    def release_interface(self, container_id: str) -> None:
        pass

    def allocate_ports(self, container_id: str, port_bindings: Any) -> dict:
        return {}

    def release_ports(self, container_id: str) -> None:
        pass

    def link(self, parent: Any, child: Any, ports: Any, enable: bool) -> None:
        pass


@pytest.fixture
def rig(tmp_path):
    rig = Rig(str(tmp_path))
    driver = MemoryNetworks()
    rig.daemon.network = rig.lifecycle.network = NetworkService(rig.daemon, driver)
    rig.daemon.id = "TEST-DAEMON"
    rig.load_image()
    yield rig
    rig.close()


def network_events(rig: Rig) -> list[tuple[str, str]]:
    return [
        (e["Action"], e["Actor"]["Attributes"].get("name", ""))
        for e in rig.daemon.events.past(0)
        if e["Type"] == "network"
    ]


def test_create_find_list_remove(rig):
    nets = rig.daemon.network.networks
    made = nets.create({"Name": "front", "Labels": {"tier": "web"}})
    assert made["Warning"] == "" and len(made["Id"]) == 64
    assert nets.find("front")["Id"] == made["Id"] == nets.find(made["Id"][:5])["Id"]
    assert nets.find("bridge")["Id"] == "d" * 64
    assert {n["Name"] for n in nets.all()} == {"bridge", "front", "host", "none"}
    host, none = nets.find("host"), nets.find("none")
    assert host["Driver"] == "host" and none["Driver"] == "null" and len(host["Id"]) == 64
    with pytest.raises(NotFound, match="^network nosuch not found$"):
        nets.find("nosuch")
    with pytest.raises(NotFound):
        nets.find("")
    assert [n["Name"] for n in nets.list({"label": ["tier=web"]})] == ["front"]
    assert {n["Name"] for n in nets.list({"type": ["builtin"]})} == {"bridge", "host", "none"}
    assert [n["Name"] for n in nets.list({"type": ["custom"], "name": ["fro"]})] == ["front"]
    assert [n["Name"] for n in nets.list({"dangling": ["true"]})] == ["front"]
    assert all(n["Containers"] == {} for n in nets.list({}))
    with pytest.raises(InvalidParameter, match="Invalid filter 'color'"):
        nets.list({"color": ["red"]})
    with pytest.raises(InvalidParameter):
        nets.list({"type": ["weird"]})
    with pytest.raises(NotFound):
        nets.inspect("front", scope="swarm")
    with pytest.raises(Forbidden, match="^bridge is a pre-defined network and cannot be removed$"):
        nets.remove("bridge")
    nets.remove("front")
    assert network_events(rig) == [("create", "front"), ("destroy", "front")]


def test_create_refusals_in_dockerds_words(rig):
    nets = rig.daemon.network.networks
    nets.create({"Name": "taken"})
    cases = [
        ({"Name": ""}, InvalidParameter, "invalid name: "),
        ({"Name": "bridge"}, Forbidden, "operation is not permitted on predefined bridge network "),
        ({"Name": "default"}, Forbidden, "operation is not permitted on predefined default network "),
        ({"Name": "taken"}, Forbidden, "network with name taken already exists"),
        ({"Name": "x", "Driver": "host"}, Forbidden, 'only one instance of "host" network is allowed'),
        ({"Name": "x", "Driver": "null"}, Forbidden, 'only one instance of "null" network is allowed'),
        ({"Name": "x", "Driver": "nosuch"}, NotFound, 'plugin "nosuch" not found'),
        ({"Name": "x", "Driver": "overlay"}, EngineError, "This node is not a swarm manager"),
        ({"Name": "x", "Ingress": True}, Forbidden, "Ingress network can only be global scope network"),
        ({"Name": "x", "Scope": "swarm"}, Forbidden, "cannot create a swarm scoped network when swarm is not active"),
        ({"Name": "x", "Driver": "macvlan"}, NotSupported, "macvlan network driver is not available"),
        ({"Name": "x", "IPAM": {"Driver": "other"}}, NotFound, 'plugin "other" not found'),
        ({"Name": "x", "IPAM": {"Config": "nope"}}, InvalidParameter, "invalid IPAM config"),
        ({"Name": "x", "Labels": ["a=b"]}, InvalidParameter, "invalid Labels"),
    ]
    for body, kind, message in cases:
        with pytest.raises(kind) as info:
            nets.create(body)
        assert message in str(info.value), body
    assert {n["Name"] for n in nets.all()} == {"bridge", "host", "none", "taken"}
    without = NetworkService(rig.daemon, None).networks
    with pytest.raises(NotSupported, match="-b none"):
        without.create({"Name": "y"})
    assert {n["Name"] for n in without.all()} == {"host", "none"}


def test_prune_and_its_filters(rig):
    nets = rig.daemon.network.networks
    nets.create({"Name": "keep", "Labels": {"keep": "yes"}})
    nets.create({"Name": "old"})
    assert nets.prune({"label!": ["keep=yes"], "until": [str(time.time() + 60)]}) == ["old"]
    assert nets.prune({"until": ["1000"]}) == []
    assert nets.prune({}) == ["keep"]
    with pytest.raises(InvalidParameter):
        nets.prune({"dangling": ["true"]})
    assert ("prune", "") in network_events(rig)


def test_endpoint_configuration_at_create(rig):
    nets = rig.daemon.network.networks
    front = nets.create({"Name": "front", "IPAM": {"Config": [{"Subnet": "10.5.0.0/16"}]}})
    nets.create({"Name": "auto"})
    c = rig.create(
        "web",
        NetworkMode="front",
        config={"Hostname": "web"},
    )
    view = network_settings(c)["Networks"]
    assert list(view) == ["front"] and view["front"]["NetworkID"] == "" and view["front"]["IPAddress"] == ""
    # By ID, with an endpoint config keyed by the ID: stored under the name.
    c2, _ = rig.lifecycle.create(
        {"Image": IMAGE},
        {"NetworkMode": front["Id"]},
        "",
        {"EndpointsConfig": {front["Id"]: {"Aliases": ["db"], "IPAMConfig": {"IPv4Address": "10.5.0.9"}}}},
    )
    view = network_settings(c2)["Networks"]
    assert list(view) == ["front"] and view["front"]["Aliases"] == ["db"]
    assert view["front"]["IPAMConfig"] == {"IPv4Address": "10.5.0.9"}
    # A network that does not exist yet: accepted (the start will say), as dockerd.
    later = rig.lifecycle.create({"Image": IMAGE}, {"NetworkMode": "later"}, "")[0]
    assert list(network_settings(later)["Networks"]) == ["later"]
    # The default network, by either of its names.
    default = rig.lifecycle.create(
        {"Image": IMAGE}, {"NetworkMode": "default"}, "", {"EndpointsConfig": {"default": {}}}
    )[0]
    assert list(network_settings(default)["Networks"]) == ["bridge"]
    refused = [
        (
            {"NetworkMode": "front"},
            {"front": {}, "auto": {}},
            "Container cannot be connected to network endpoints: front, auto",
        ),
        ({"NetworkMode": "bridge"}, {"bridge": {"Aliases": ["x"]}}, "network-scoped alias is supported only"),
        (
            {"NetworkMode": "bridge"},
            {"bridge": {"IPAMConfig": {"IPv4Address": "172.17.0.9"}}},
            "user defined networks only",
        ),
        ({"NetworkMode": "auto"}, {"auto": {"IPAMConfig": {"IPv4Address": "172.19.0.9"}}}, "user configured subnets"),
        ({"NetworkMode": "front"}, {"front": {"IPAMConfig": {"IPv4Address": "10.6.0.9"}}}, "does not belong to any"),
        (
            {"NetworkMode": "front"},
            {"front": {"IPAMConfig": {"IPv4Address": "10.5.0.300"}}},
            "Invalid IPv4 address: 10.5.0.300)",
        ),
    ]
    before = len(rig.store.all())
    for hc, endpoints, message in refused:
        with pytest.raises(InvalidParameter, match=message.replace("(", r"\(").replace(")", r"\)")):
            rig.lifecycle.create({"Image": IMAGE}, hc, "", {"EndpointsConfig": endpoints})
    assert len(rig.store.all()) == before, "a refused create left a container"


def test_connect_and_disconnect_a_stopped_container(rig):
    service = rig.daemon.network
    service.networks.create({"Name": "front"})
    c = rig.lifecycle.create({"Image": IMAGE}, {"NetworkMode": "default"}, "box")[0]
    service.connect("front", "box", {"Aliases": ["boxy"], "MacAddress": "02:42:0a:00:00:09"})
    service.connect("front", "box", None)  # twice: nothing to do, as dockerd
    view = network_settings(c)["Networks"]
    assert sorted(view) == ["bridge", "front"]
    assert view["front"]["Aliases"] == ["boxy", c.id[:12]]  # the hostname is the short ID
    assert view["front"]["MacAddress"] == "02:42:0a:00:00:09"
    with pytest.raises(EngineError, match=f"container {c.id} is not connected to the network host"):
        service.disconnect("host", "box")
    for net, message in (
        ("host", "container cannot be disconnected from host network or connected to host network"),
        ("none", "container cannot be connected to multiple networks with one of the networks in private (none)"),
    ):
        with pytest.raises(InvalidParameter, match=message.replace("(", r"\(").replace(")", r"\)")):
            service.connect(net, "box", None)
    with pytest.raises(NotFound):
        service.connect("nosuch", "box", None)
    with pytest.raises(NotFound):
        service.connect("front", "nosuch", None)
    service.disconnect("front", "box")
    assert list(network_settings(c)["Networks"]) == ["bridge"]
    with pytest.raises(EngineError, match="is not connected to the network front"):
        service.disconnect("front", "box")
    # Persisted with the container.
    with open(os.path.join(c.root, "config.v2.json")) as fh:
        assert list(json.load(fh)["NetworkSettings"]["EndpointsConfig"]) == ["bridge"]


def test_endpoint_config_and_gateway_order():
    cfg = endpoint_config({"Aliases": ["a"], "IPAMConfig": {"IPv6Address": "fd00::1"}, "DriverOpts": {"k": 1}})
    assert cfg["Aliases"] == ["a"] and cfg["DriverOpts"] == {"k": "1"} and cfg["NetworkID"] == ""
    assert endpoint_config(None)["IPAMConfig"] is None
    with pytest.raises(InvalidParameter, match=r"Invalid IPv6 address: 10.0.0.1\)"):
        endpoint_config({"IPAMConfig": {"IPv6Address": "10.0.0.1"}})
    with pytest.raises(InvalidParameter):
        endpoint_config({"Aliases": "a"})

    def net(name: str, internal: bool = False, v6: bool = False) -> dict:
        config = [{"Subnet": "10.0.0.0/24"}] + ([{"Subnet": "fd00::/64"}] if v6 else [])
        return {"Name": name, "Internal": internal, "EnableIPv6": v6, "IPAM": {"Config": config}}

    ordered = sorted([net("zulu"), net("alpha", internal=True), net("mike", v6=True), net("bravo")], key=gateway_order)
    assert [n["Name"] for n in ordered] == ["mike", "bravo", "zulu", "alpha"]
