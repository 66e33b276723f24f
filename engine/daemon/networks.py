"""The daemon's networks (libnetwork's controller): the ``docker network`` verbs and their jobs.

The networks ``GET /networks`` lists are the network driver's (its default
network, named ``bridge``, and the user-defined ones it keeps, see
:mod:`engine.drivers.network`) and two the daemon makes up itself, ``host``
(driver ``host``) and ``none`` (driver ``null``), whose IDs are derived from
the daemon's ID so that they stay the same across restarts. With ``-b none``
there is no driver: only ``host`` and ``none`` exist, and creating a network
is refused.

A network is named as a container is (:meth:`Networks.find`, moby's
``FindNetwork``): its full ID first, then its exact name, then a unique ID
prefix. The daemon owns the names: ``create`` refuses a name in use (even
without ``CheckDuplicate``: API 1.44's rule, which 1.41 clients get too),
the pre-defined ones, and what no driver here provides, in dockerd's words;
the driver owns everything else (subnets, the data path, the records).

Containers join networks through the network service
(:class:`engine.daemon.network.NetworkService`); ``connect`` and
``disconnect`` are its, and so are the endpoints a network lists: only
running containers have one.

Events, as dockerd sends them: ``network create``, ``connect``,
``disconnect``, ``destroy``, ``prune`` (Type ``network``, the network's ID,
its ``name`` and ``type``, and ``container`` for connect and disconnect).
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.drivers.ipam import IPAMConfig
from engine.drivers.network import NetworkSpec
from engine.errors import EngineError, Forbidden, InvalidParameter, NotFound, NotSupported
from engine.utils.timefmt import parse_rfc3339

if TYPE_CHECKING:
    from engine.daemon.daemon import Daemon
    from engine.drivers.network import NetworkDriver

LOG = logging.getLogger(__name__)

#: The networks every daemon has (moby ``runconfig.IsPreDefinedNetwork``; ``default`` means ``bridge``).
PREDEFINED = ("bridge", "host", "none", "default")
#: ``GET /networks`` filters (moby ``network/filter.go``).
LIST_FILTERS = ("driver", "id", "label", "name", "scope", "type", "dangling")
PRUNE_FILTERS = ("until", "label", "label!")
#: Drivers dockerd has that this engine does not (a clear refusal instead of "not found").
MISSING_DRIVERS = ("macvlan", "ipvlan")
NOT_A_SWARM_MANAGER = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to '
    "swarm and try again."
)


def is_user_defined(name: str) -> bool:
    """Whether a network mode or name is a user-defined network (moby ``NetworkMode.IsUserDefined``)."""
    return bool(name) and name not in PREDEFINED and not name.startswith("container:")


class Networks:
    """The daemon's networks: lookups, create, remove, list, prune.

    :param daemon: the daemon (its ID, containers, events).
    :param driver: the network driver, or None when networking is off.
    """

    def __init__(self, daemon: Daemon, driver: NetworkDriver | None) -> None:
        self.daemon = daemon
        self.driver = driver
        #: Names are checked and the driver called under it (no two creates of one name).
        self._lock = threading.RLock()

    # the list
    def _builtin_id(self, name: str) -> str:
        return hashlib.sha256(f"{self.daemon.id}/{name}".encode()).hexdigest()

    def _builtin(self, name: str, driver: str) -> dict:
        from engine.daemon.info import rfc3339nano

        containers = {}
        for c in self.daemon.containers.all() if self.daemon.containers is not None else []:
            if c.state.running and (c.host_config.get("NetworkMode") or "default") == name:
                containers[c.id] = {
                    "Name": c.name.lstrip("/"),
                    "EndpointID": "",
                    "MacAddress": "",
                    "IPv4Address": "",
                    "IPv6Address": "",
                }
        return {
            "Name": name,
            "Id": self._builtin_id(name),
            "Created": rfc3339nano(self.daemon.started_at),
            "Scope": "local",
            "Driver": driver,
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None, "Config": []},
            "Internal": False,
            "Attachable": False,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Containers": containers,
            "Options": {},
            "Labels": {},
        }

    def all(self) -> list[dict]:
        """Every network, with its running containers (``Containers``), the driver's first."""
        out = list(self.driver.networks()) if self.driver is not None else []
        containers = self.daemon.containers
        for net in out:
            # The driver knows a container's name from when it joined; a rename since is the store's.
            for cid, entry in (net.get("Containers") or {}).items():
                try:
                    entry["Name"] = containers.get(cid).name.lstrip("/") if containers is not None else entry["Name"]
                except NotFound:
                    pass
        return [*out, self._builtin("host", "host"), self._builtin("none", "null")]

    def find(self, ref: str) -> dict:
        """The network ``ref`` names: its full ID, its name, or a unique prefix of its ID (moby ``FindNetwork``).

        :raises NotFound: ``network REF not found``.
        :raises InvalidParameter: the name or the prefix is ambiguous.
        """
        nets = self.all()
        if ref:
            for net in nets:
                if net["Id"] == ref:
                    return net
        by_name = [n for n in nets if n["Name"] == ref]
        by_prefix = [n for n in nets if ref and n["Id"].startswith(ref)]
        if len(by_name) == 1:
            return by_name[0]
        if len(by_name) > 1:
            raise InvalidParameter(f"network {ref} is ambiguous ({len(by_name)} matches found on name)")
        if len(by_prefix) == 1:
            return by_prefix[0]
        if len(by_prefix) > 1:
            raise InvalidParameter(f"network {ref} is ambiguous ({len(by_prefix)} matches found based on ID prefix)")
        raise NotFound(f"network {ref} not found")

    def default_network(self) -> dict | None:
        """The driver's default network (``bridge``), or None without a driver."""
        if self.driver is None:
            return None
        for net in self.driver.networks():
            if net["Name"] == "bridge":
                return net
        return None

    def list(self, filters: Mapping[str, list[str]]) -> list[dict]:
        """``GET /networks``: the networks ``filters`` let through, without their containers (API >= 1.28)."""
        for key in filters:
            if key not in LIST_FILTERS:
                raise InvalidParameter(f"Invalid filter '{key}'")
        for value in filters.get("type", []):
            if value not in ("custom", "builtin"):
                raise InvalidParameter(f"invalid filter: 'type'='{value}'")
        dangling = filters.get("dangling", [])
        for value in dangling:
            if value.lower() not in ("true", "false", "1", "0"):
                raise InvalidParameter(f"invalid filter 'dangling={value}'")
        out = []
        for net in self.all():
            if not self._passes(net, filters):
                continue
            if dangling:
                want = dangling[0].lower() in ("true", "1")
                unused = net["Name"] not in PREDEFINED and not net["Containers"]
                if unused != want:
                    continue
            out.append({**net, "Containers": {}})
        return out

    @staticmethod
    def _passes(net: dict, filters: Mapping[str, builtins.list[str]]) -> bool:
        """moby's ``filters.Match`` (a value is a regular expression searched in the field) and the others."""

        def match(values: list[str], text: str) -> bool:
            for value in values:
                try:
                    if re.search(value, text):
                        return True
                except re.error:
                    if value in text:
                        return True
            return False

        if filters.get("name") and not match(filters["name"], net["Name"]):
            return False
        if filters.get("id") and not match(filters["id"], net["Id"]):
            return False
        if filters.get("driver") and net["Driver"] not in filters["driver"]:
            return False
        if filters.get("scope") and net["Scope"] not in filters["scope"]:
            return False
        if filters.get("type"):
            kind = "builtin" if net["Name"] in PREDEFINED else "custom"
            if kind not in filters["type"]:
                return False
        labels = net.get("Labels") or {}
        for item in filters.get("label", []):
            key, sep, value = item.partition("=")
            if key not in labels or (sep and labels[key] != value):
                return False
        return True

    def inspect(self, ref: str, scope: str = "") -> dict:
        """``GET /networks/{id}`` (``scope``: only a network of that scope is found)."""
        net = self.find(ref)
        if scope and scope != net["Scope"]:
            raise NotFound(f"network {ref} not found")
        return net

    # create, remove, prune
    def create(self, body: Mapping[str, Any]) -> dict:
        """``POST /networks/create``: ``{"Id", "Warning"}``, after dockerd's checks.

        :raises InvalidParameter: no name, a malformed field, or a bad IPAM configuration.
        :raises Forbidden: a pre-defined name, a name in use, a second ``host``/``null``,
            swarm-only options, or a subnet another network has.
        :raises NotFound: an unknown driver (``plugin "x" not found``).
        :raises NotSupported: networking is off, or a driver dockerd has and this engine lacks.
        """
        name = str(body.get("Name") or "")
        if not name:
            raise InvalidParameter("invalid name: ")
        if name in PREDEFINED:
            raise Forbidden(f"operation is not permitted on predefined {name} network ")
        driver_name = str(body.get("Driver") or "bridge")
        if driver_name in ("host", "null"):
            raise Forbidden(f'only one instance of "{driver_name}" network is allowed')
        if driver_name == "overlay":
            raise EngineError(NOT_A_SWARM_MANAGER)
        if body.get("Ingress"):
            raise Forbidden("Ingress network can only be global scope network")
        scope = str(body.get("Scope") or "local")
        if scope in ("swarm", "global"):
            raise Forbidden(f"cannot create a {scope} scoped network when swarm is not active")
        if scope != "local":
            raise InvalidParameter(f"invalid scope {scope!r}: local, global or swarm")
        if body.get("ConfigOnly") or (body.get("ConfigFrom") or {}).get("Network"):
            raise NotSupported("config-only networks are for swarm services, which this engine does not run")
        if driver_name in MISSING_DRIVERS:
            raise NotSupported(f"the {driver_name} network driver is not available in this engine; use bridge")
        if self.driver is None:
            raise NotSupported("networking is disabled (-b none): no network can be created")
        if driver_name != self.driver.name:
            raise NotFound(f'plugin "{driver_name}" not found')
        labels = _string_map(body.get("Labels"), "Labels")
        options = _string_map(body.get("Options"), "Options")
        ipam = body.get("IPAM") or {}
        if not isinstance(ipam, Mapping):
            raise InvalidParameter("invalid IPAM: want an object")
        ipam_driver = str(ipam.get("Driver") or "default")
        if ipam_driver != "default":
            raise NotFound(f'plugin "{ipam_driver}" not found')
        configs = ipam.get("Config") or []
        if not isinstance(configs, list) or not all(isinstance(c, Mapping) for c in configs):
            raise InvalidParameter("invalid IPAM config: want a list of objects")
        ipam_options = ipam.get("Options")
        with self._lock:
            for net in self.all():
                if net["Name"] == name:
                    raise Forbidden(f"network with name {name} already exists")
            spec = NetworkSpec(
                network_id=self._new_id(),
                name=name,
                ipam=tuple(IPAMConfig.from_api(c) for c in configs),
                ipam_options=_string_map(ipam_options, "IPAM.Options") if ipam_options is not None else None,
                options=options,
                internal=bool(body.get("Internal")),
                enable_ipv6=bool(body.get("EnableIPv6")),
                attachable=bool(body.get("Attachable")),
                labels=labels,
                created=time.time(),
            )
            made = self.driver.create_network(spec)
        self.event(made, "create")
        return {"Id": made["Id"], "Warning": ""}

    def _new_id(self) -> str:
        taken = {n["Id"] for n in self.all()}
        while True:
            candidate = secrets.token_hex(32)
            # As container IDs: never all digits in the short form (a name, a number?).
            if candidate not in taken and not candidate[:12].isdigit():
                return candidate

    def remove(self, ref: str) -> None:
        """``DELETE /networks/{id}``.

        :raises Forbidden: a pre-defined network, or one with running containers on it.
        """
        net = self.find(ref)
        if net["Name"] in PREDEFINED:
            raise Forbidden(f"{net['Name']} is a pre-defined network and cannot be removed")
        assert self.driver is not None
        with self._lock:
            try:
                self.driver.delete_network(net["Id"])
            except Forbidden as exc:
                raise Forbidden(f"error while removing network: {exc}") from exc
        self.event(net, "destroy")

    def prune(self, filters: Mapping[str, builtins.list[str]]) -> builtins.list[str]:
        """``POST /networks/prune``: remove the user-defined networks no running container is on; their names."""
        from engine.daemon.views import _label_ok
        from engine.graph.jobs import parse_until

        for key in filters:
            if key not in PRUNE_FILTERS:
                raise InvalidParameter(f"Invalid filter '{key}'")
        until = min((parse_until(v) for v in filters.get("until", [])), default=None)
        deleted = []
        for net in self.all():
            if net["Name"] in PREDEFINED or net["Containers"]:
                continue
            if until is not None and parse_rfc3339(net["Created"]) >= until:
                continue
            labels = net.get("Labels") or {}
            if filters.get("label") and not _label_ok(labels, filters["label"]):
                continue
            if filters.get("label!") and any(_label_ok(labels, [v]) for v in filters["label!"]):
                continue
            try:
                self.remove(net["Id"])
            except EngineError as exc:
                LOG.warning("prune: not removing network %s: %s", net["Name"], exc)
                continue
            deleted.append(net["Name"])
        self.daemon.events.log("network", "prune", "", {"reclaimed": "0"})
        return deleted

    def event(self, net: Mapping[str, Any], action: str, container_id: str = "") -> None:
        attrs = {"name": net["Name"], "type": net["Driver"]}
        if container_id:
            attrs["container"] = container_id
        self.daemon.events.log("network", action, net["Id"], attrs)


def _string_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidParameter(f"invalid {what}: want an object of strings")
    return {str(k): str(v) for k, v in value.items()}


# the jobs
def job_networks(job: Any) -> None:
    job.write_json(job.engine.daemon.network.networks.list(job.env.get_json("Filters", {}) or {}))


def job_network_inspect(job: Any) -> None:
    job.write_json(job.engine.daemon.network.networks.inspect(job.args[0], job.env.get("Scope") or ""))


def job_network_create(job: Any) -> None:
    body = job.env.get_json("Body", {}) or {}
    if not isinstance(body, dict):
        raise InvalidParameter("invalid network config: not a JSON object")
    job.write_json(job.engine.daemon.network.networks.create(body))


def job_network_rm(job: Any) -> None:
    job.engine.daemon.network.networks.remove(job.args[0])


def job_network_connect(job: Any) -> None:
    body = job.env.get_json("Body", {}) or {}
    if not isinstance(body, dict):
        raise InvalidParameter("invalid request: not a JSON object")
    job.engine.daemon.network.connect(job.args[0], str(body.get("Container") or ""), body.get("EndpointConfig"))


def job_network_disconnect(job: Any) -> None:
    body = job.env.get_json("Body", {}) or {}
    if not isinstance(body, dict):
        raise InvalidParameter("invalid request: not a JSON object")
    job.engine.daemon.network.disconnect(job.args[0], str(body.get("Container") or ""), bool(body.get("Force")))


def job_networks_prune(job: Any) -> None:
    deleted = job.engine.daemon.network.networks.prune(job.env.get_json("Filters", {}) or {})
    job.write_json({"NetworksDeleted": deleted or None})


JOBS = (
    ("networks", job_networks),
    ("network_inspect", job_network_inspect),
    ("network_create", job_network_create),
    ("network_rm", job_network_rm),
    ("network_connect", job_network_connect),
    ("network_disconnect", job_network_disconnect),
    ("networks_prune", job_networks_prune),
)
