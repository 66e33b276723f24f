"""The daemon's side of networking: the network driver's jobs, a container's
network at start (its namespace, interface, ports, links, and the hostname,
hosts and resolv.conf files that go with them), and the built-in networks
(seed ch. 6).

The active driver's methods are registered as the seed's jobs
(``init_networkdriver``, ``allocate_interface``, ``release_interface``,
``allocate_port``, ``release_port``, ``link``); :class:`NetworkService` runs
them for the container service. ``-b none`` loads no driver: containers then
get a network namespace with only ``lo``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import TYPE_CHECKING, Any

from engine.daemon import netns, resolvconf, views
from engine.daemon.store import link_alias
from engine.errors import Conflict, EngineError, Forbidden, InvalidParameter, NotFound, NotSupported
from engine.sys.fs import atomic_write

if TYPE_CHECKING:
    from engine.daemon.container import Container

LOG = logging.getLogger(__name__)

BUILTIN = ("bridge", "host", "none")


def port_key(spec: str) -> str:
    return spec if "/" in spec else spec + "/tcp"


def stopped_settings() -> dict:
    """``NetworkSettings`` of a container that does not run: no address, no published ports."""
    return {
        "Bridge": "",
        "Ports": {},
        "IPAddress": "",
        "IPPrefixLen": 0,
        "Gateway": "",
        "MacAddress": "",
        "Networks": {},
    }


class NetworkService:
    """Networking of the daemon's containers over one network driver (or none).

    :param daemon: the daemon (engine, config, containers, linkgraph).
    :param driver: the network driver, or None when networking is off.
    """

    def __init__(self, daemon: Any, driver: Any) -> None:
        self.daemon = daemon
        self.driver = driver
        self.facts: dict = {}
        #: The containers' persistent network namespaces, ``<root>/netns/<id>``.
        self.netns_dir = os.path.join(daemon.root, "netns")

    # the seed's jobs, bound to the driver
    def register_jobs(self, engine: Any) -> None:
        driver = self.driver

        def init(job: Any) -> None:
            job.write_json(driver.init())

        def allocate_interface(job: Any) -> None:
            job.write_json(driver.allocate_interface(job.args[0], job.env.get_json("Request", {}) or {}))

        def release_interface(job: Any) -> None:
            driver.release_interface(job.args[0])

        def allocate_port(job: Any) -> None:
            job.write_json(driver.allocate_ports(job.args[0], job.env.get_json("PortBindings", {}) or {}))

        def release_port(job: Any) -> None:
            driver.release_ports(job.args[0])

        def link(job: Any) -> None:
            driver.link(job.args[0], job.args[1], job.env.get_list("Ports"), job.env.get_bool("Enable"))

        for name, handler in (
            ("init_networkdriver", init),
            ("allocate_interface", allocate_interface),
            ("release_interface", release_interface),
            ("allocate_port", allocate_port),
            ("release_port", release_port),
            ("link", link),
        ):
            engine.register(name, handler)

    def _job(self, name: str, *args: str, **env: Any) -> Any:
        job = self.daemon.engine.job(name, *args, env=env)
        buf = job.stdout.add_buffer()
        job.run()
        data = buf.getvalue()
        return json.loads(data) if data.strip() else None

    def init(self) -> None:
        self.facts = self._job("init_networkdriver") or {}
        LOG.info(
            "network: bridge %s, %s/%s",
            self.facts.get("Bridge"),
            self.facts.get("IPAddress"),
            self.facts.get("IPPrefixLen"),
        )

    # a container's network at start and at exit (the modes of issue 4; the
    # bridge driver serves "default" and "bridge" when it is installed)
    def setup(self, c: Container) -> dict:
        """Make ``c``'s network as it starts; all or nothing.

        Writes its ``hostname``, ``hosts`` and ``resolv.conf``; for the
        ``none``, ``default`` and ``bridge`` modes makes its namespace
        (``<root>/netns/<id>``) and, with a driver, its interface, ports and
        links.

        :returns: ``{"mode": "host"}``; ``{"mode": "container", "path":
            the other's /proc/PID/ns/net, "container": its ID}``; or
            ``{"mode": "none"|"bridge", "path", "settings": the driver's}``.
        :raises Conflict: the container it joins (or links to) does not run.
        """
        hc = c.host_config
        mode = hc.get("NetworkMode") or "default"
        cfg = c.config
        daemon_cfg = self.daemon.config
        if mode.startswith("container:"):
            other = self.daemon.containers.get(mode.split(":", 1)[1])
            if not other.state.running:
                raise Conflict(f"cannot join network of a non running container: {other.id}")
            # The seed (ch. 8 §2.2.1): it shares the other's hostname and files.
            cfg["Hostname"] = other.config.get("Hostname", "")
            cfg["Domainname"] = other.config.get("Domainname", "")
            for name in ("hostname", "hosts", "resolv.conf"):
                src = other.path_of(name)
                if os.path.exists(src):
                    with open(src, "rb") as fh:
                        atomic_write(c.path_of(name), fh.read())
            return {"mode": "container", "path": f"/proc/{other.state.pid}/ns/net", "container": other.id}
        host_mode = mode == "host"
        hostname = cfg.get("Hostname") or c.id[:12]
        gateway = self.host_gateway() if self.driver is not None else ""
        resolv, _warnings = resolvconf.build(
            list(hc.get("Dns") or daemon_cfg.dns),
            list(hc.get("DnsSearch") or daemon_cfg.dns_search),
            list(hc.get("DnsOptions") or daemon_cfg.dns_opts),
            host_mode=host_mode,
        )
        atomic_write(c.resolv_conf_path, resolv.encode())
        atomic_write(c.hostname_path, (hostname + "\n").encode())
        if host_mode:
            with open("/etc/hosts", "rb") as fh:
                base = fh.read()
            extra = resolvconf.hosts("", "", "", hc.get("ExtraHosts"), host_gateway=gateway)[
                len(resolvconf.HOSTS_HEADER) :
            ]
            atomic_write(c.hosts_path, base + extra.encode())
            return {"mode": "host"}
        path = os.path.join(self.netns_dir, c.id)
        netns.remove(path)
        netns.create(path)
        settings: dict = {}
        allocated = False
        try:
            if mode in ("default", "bridge") and self.driver is not None:
                settings = self.allocate(c, path)
                allocated = True
            ip = settings.get("IPAddress", "")
            links = self.links_for(c)
            atomic_write(
                c.hosts_path,
                resolvconf.hosts(
                    hostname, cfg.get("Domainname") or "", ip, hc.get("ExtraHosts"), links, host_gateway=gateway
                ).encode(),
            )
        except BaseException:
            if allocated:
                try:
                    self.release(c)
                except Exception:
                    LOG.exception("releasing the network of %s after a failed set-up", c.short_id)
            netns.remove(path)
            raise
        kind = "none" if mode == "none" else "bridge"
        # Every container with a namespace of its own has a sandbox (its key is the
        # namespace's file), "none" and a bridge-less daemon's included, as in dockerd.
        settings.setdefault("SandboxKey", path)
        return {"mode": kind, "path": path, "settings": settings}

    def teardown(self, c: Container) -> None:
        """Release what :meth:`setup` made for ``c`` (it exited, or its start failed)."""
        mode = c.host_config.get("NetworkMode") or "default"
        if mode in ("default", "bridge"):
            try:
                self.release(c)
            except Exception:
                LOG.exception("releasing the network of %s", c.short_id)
        self.remove_namespace(c)
        with c.lock:
            # A stopped container has no address or published ports (as in Docker).
            c.network_settings = stopped_settings()

    def remove_namespace(self, c: Container) -> None:
        """Remove ``c``'s network namespace file, if it has one."""
        netns.remove(os.path.join(self.netns_dir, c.id))

    # containers
    def links(self, c: Any) -> list[tuple[Any, str]]:
        """(child container, alias) of every ``--link`` of ``c``."""
        out = []
        for spec in c.host_config.get("Links") or []:
            child = self.daemon.containers.get(spec.partition(":")[0].lstrip("/"))
            out.append((child, link_alias(spec)))
        return out

    def unlink(self, parent: Any, child: Any) -> None:
        """A link of a running ``parent`` was removed (``docker rm --link``): its rules go."""
        if self.driver is None or not parent.state.running:
            return
        ports = list((child.config.get("ExposedPorts") or {}).keys())
        try:
            self._job("link", parent.id, child.id, Ports=ports, Enable=False)
        except EngineError as exc:
            LOG.warning("removing the link rules of %s to %s: %s", parent.short_id, child.short_id, exc)

    def register_links(self, c: Any) -> None:
        """At create: check the ``--link`` targets and record ``/parent/alias`` in the link graph."""
        for spec in c.host_config.get("Links") or []:
            name, _, alias = spec.partition(":")
            alias = (alias or name).lstrip("/").split("/")[-1]
            try:
                child = self.daemon.containers.get(name.lstrip("/"))
            except NotFound:
                raise InvalidParameter(f"could not get container for {name.lstrip('/')}") from None
            if (child.host_config.get("NetworkMode") or "default") == "host":
                raise InvalidParameter(
                    "conflicting options: host type networking can't be used with links. "
                    "This would result in undefined behavior"
                )
            try:
                self.daemon.linkgraph.set(f"{c.name}/{alias}", child.id)
            except Conflict:
                raise Conflict(f'Conflict. The link name "{c.name}/{alias}" is already in use') from None

    def allocate(self, c: Any, netns_path: str) -> dict:
        """Interface, published ports and links for ``c`` at start; all or nothing."""
        if self.driver is None:
            return {}
        links = self.links(c)
        for child, alias in links:
            if not child.state.running:
                raise Conflict(f"Cannot link to a non running container: {child.name} AS {c.name}/{alias}")
        request = {"NetnsPath": netns_path, "Name": c.name.lstrip("/")}
        mac = c.config.get("MacAddress")
        if mac:
            request["RequestedMac"] = mac
        settings = self._job("allocate_interface", c.id, Request=request)
        try:
            bindings = {port_key(k): v for k, v in (c.host_config.get("PortBindings") or {}).items()}
            if c.host_config.get("PublishAllPorts"):
                for port in c.config.get("ExposedPorts") or {}:
                    bindings.setdefault(port_key(port), [{}])
            ports = self._job("allocate_port", c.id, PortBindings=bindings) if bindings else {}
            exposed = {port_key(p): None for p in c.config.get("ExposedPorts") or {}}
            exposed.update(ports or {})
            settings["Ports"] = exposed
            for child, _alias in links:
                child_ports = list((child.config.get("ExposedPorts") or {}).keys())
                self._job("link", c.id, child.id, Ports=child_ports, Enable=True)
        except BaseException:
            try:
                self._job("release_interface", c.id)
            except EngineError:
                LOG.exception("releasing the interface of %s after a failed start", c.short_id)
            raise
        return settings

    def release(self, c: Any) -> None:
        if self.driver is not None:
            self._job("release_interface", c.id)

    def restore(self, c: Any) -> None:
        if self.driver is not None:
            settings = self.driver.restore(c.id)
            if settings is None:
                LOG.warning("container %s runs but the network driver has no record of it", c.short_id)

    def prune(self, running: list[str]) -> None:
        if self.driver is not None:
            gone = self.driver.prune(running)
            if gone:
                LOG.info("network: released %d endpoints of containers that died meanwhile", len(gone))

    def links_for(self, c: Any) -> list[tuple[str, str]]:
        """(IP, names) of the linked containers, for /etc/hosts."""
        out = []
        for child, alias in self.links(c):
            ip = (child.network_settings or {}).get("IPAddress", "")
            if ip:
                out.append((ip, self._link_names(child, alias)))
        return out

    @staticmethod
    def _link_names(child: Any, alias: str) -> str:
        from engine.daemon.resolvconf import link_names

        return link_names(alias, child.config.get("Hostname") or child.id[:12], child.name.lstrip("/"))

    def update_parents(self, child: Any) -> None:
        """A linked child started (again): running parents' /etc/hosts point at its new address."""
        from engine.daemon.resolvconf import update_link

        ip = (child.network_settings or {}).get("IPAddress", "")
        if not ip:
            return
        for parent in self.daemon.containers.all():
            if parent.id == child.id or not parent.state.running or not parent.host_config.get("Links"):
                continue
            try:
                links = self.links(parent)
            except EngineError:  # another of its children is gone
                continue
            for linked, alias in links:
                if linked.id == child.id:
                    update_link(parent.hosts_path, self._link_names(child, alias), ip)

    def host_gateway(self) -> str:
        """The address ``--add-host NAME:host-gateway`` stands for: the default bridge's gateway ("" without one)."""
        for net in self.networks():
            for conf in (net.get("IPAM") or {}).get("Config") or []:
                if conf.get("Gateway"):
                    return conf["Gateway"]
        return ""

    def link_env(self, c: Any) -> list[str]:
        """Docker's link variables (``ALIAS_PORT_80_TCP=tcp://ip:80`` ...)."""
        if self.driver is None:
            return []
        env: list[str] = []
        for child, alias in self.links(c):
            ip = (child.network_settings or {}).get("IPAddress", "")
            if not ip:
                continue
            ports = list((child.config.get("ExposedPorts") or {}).keys())
            env += self.driver.link_env(f"{c.name}/{alias}", ip, ports, child.config.get("Env") or [])
        return env

    def inspect_settings(self, c: Any, settings: dict) -> dict:
        """``NetworkSettings`` of a started container with a network namespace of its own."""
        if not settings.get("IPAddress"):
            # No interface but lo ("none", or no bridge driver): a sandbox and no endpoint.
            mode = c.host_config.get("NetworkMode") or "default"
            name = "none" if mode == "none" else "bridge"
            return {
                **stopped_settings(),
                "SandboxID": hashlib.sha256(settings["SandboxKey"].encode()).hexdigest(),
                "SandboxKey": settings["SandboxKey"],
                "Ports": settings.get("Ports") or {},
                "Networks": {name: views.endpoint()},
            }
        endpoint = views.endpoint(
            NetworkID=settings.get("NetworkID", ""),
            EndpointID=settings.get("EndpointID", ""),
            Gateway=settings.get("Gateway", ""),
            IPAddress=settings.get("IPAddress", ""),
            IPPrefixLen=settings.get("IPPrefixLen", 0),
            MacAddress=settings.get("MacAddress", ""),
            Links=[f"{child.name}:{c.name}/{alias}" for child, alias in self.links(c)] or None,
        )
        return {
            "Bridge": settings.get("Bridge", ""),
            "SandboxID": hashlib.sha256(settings.get("SandboxKey", c.id).encode()).hexdigest(),
            "SandboxKey": settings.get("SandboxKey", ""),
            "Ports": settings.get("Ports") or {},
            "EndpointID": settings.get("EndpointID", ""),
            "Gateway": settings.get("Gateway", ""),
            "IPAddress": settings.get("IPAddress", ""),
            "IPPrefixLen": settings.get("IPPrefixLen", 0),
            "MacAddress": settings.get("MacAddress", ""),
            "Networks": {"bridge": endpoint},
        }

    # /networks
    def _builtin_id(self, name: str) -> str:
        return hashlib.sha256(f"{self.daemon.id}/{name}".encode()).hexdigest()

    def _resource(self, name: str, driver: str) -> dict:
        from engine.utils.timefmt import rfc3339nano

        containers = {}
        for c in self.daemon.containers.all():
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

    def networks(self) -> list[dict]:
        out = list(self.driver.networks()) if self.driver is not None else []
        out += [self._resource("host", "host"), self._resource("none", "null")]
        return out

    def find(self, name_or_id: str) -> dict:
        nets = self.networks()
        for net in nets:
            if name_or_id in (net["Name"], net["Id"]):
                return net
        matches = [net for net in nets if net["Id"].startswith(name_or_id)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidParameter(
                f"network {name_or_id} is ambiguous ({len(matches)} matches found based on ID prefix)"
            )
        raise NotFound(f"network {name_or_id} not found")


def job_networks(job: Any) -> None:
    svc = job.engine.daemon.network
    filters = job.env.get_json("Filters", {}) or {}
    for key in filters:
        if key not in ("name", "id", "driver", "type", "label", "scope", "dangling"):
            raise InvalidParameter(f"Invalid filter '{key}'")
    out = []
    for net in svc.networks():
        if filters.get("name") and not any(n in net["Name"] for n in filters["name"]):
            continue
        if filters.get("id") and not any(net["Id"].startswith(i) for i in filters["id"]):
            continue
        if filters.get("driver") and net["Driver"] not in filters["driver"]:
            continue
        if filters.get("type") and "builtin" not in filters["type"]:
            continue
        if filters.get("label"):
            continue
        out.append(net)
    job.write_json(out)


def job_network_inspect(job: Any) -> None:
    job.write_json(job.engine.daemon.network.find(job.args[0]))


def job_network_create(job: Any) -> None:
    raise NotSupported(
        "user-defined networks are not supported by this engine; use the built-in bridge, host or none networks"
    )


def job_network_rm(job: Any) -> None:
    net = job.engine.daemon.network.find(job.args[0])
    raise Forbidden(f"{net['Name']} is a pre-defined network and cannot be removed")


def job_network_connect(job: Any) -> None:
    net = job.engine.daemon.network.find(job.args[0])
    raise Forbidden(f"operation is not permitted on the pre-defined {net['Name']} network")


def job_networks_prune(job: Any) -> None:
    job.write_json({"NetworksDeleted": None})


JOBS = (
    ("networks", job_networks),
    ("network_inspect", job_network_inspect),
    ("network_create", job_network_create),
    ("network_rm", job_network_rm),
    ("network_connect", job_network_connect),
    ("networks_prune", job_networks_prune),
)
