"""The daemon's side of networking: the network driver's jobs, a container's networks from create to exit
(its namespace, its endpoints, ports, links, and the hostname, hosts and resolv.conf files that go with
them), and ``docker network connect``/``disconnect`` (seed ch. 6; libnetwork's sandbox).

The active driver's methods are registered as the seed's jobs
(``init_networkdriver``, ``allocate_interface``, ``release_interface``,
``allocate_port``, ``release_port``, ``link``); :class:`NetworkService` runs
the driver for the life cycle. ``-b none`` loads no driver: containers then
get a network namespace with only ``lo``. The networks themselves, their
names and the ``docker network`` verbs are :mod:`engine.daemon.networks`'.

A container's networks. At create, the network mode (``default``/``bridge``,
a user-defined network's name or ID, ``host``, ``none``,
``container:NAME``) and ``NetworkingConfig.EndpointsConfig`` become its
endpoint configuration, ``NetworkSettings.EndpointsConfig`` in its record:
network name -> ``IPAMConfig``, ``Aliases``, ``Links``, ``MacAddress``,
``DriverOpts`` (moby keeps them in ``NetworkSettings.Networks`` itself).
``connect`` and ``disconnect`` change it, on a stopped container only
that. At start the container gets a namespace (``<root>/netns/<id>``) and
an endpoint on each of its networks, its mode's network first (``eth0``),
then the others by name; the endpoint that carries the default routes and
the published ports is libnetwork's choice: a network that is not internal
before one that is, one with an IPv6 gateway too before one without, then
by name. ``NetworkSettings.Networks`` then holds what each endpoint got
(``EndpointID``, ``IPAddress``...), and the top-level fields the ``bridge``
network's endpoint (empty for a container on user-defined networks only, as
in Docker). At exit every endpoint goes; the configuration stays.

On a user-defined network a container is known by name: its name, its
aliases (``--network-alias``, compose's service names), its short ID and
its hostname resolve to its address there, through the embedded DNS server
(:class:`engine.daemon.dns.DnsService`), and ``--link`` on such a network
is a DNS alias of the container's own, not an ``/etc/hosts`` line.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from engine.daemon import netns, resolvconf
from engine.daemon.networks import Networks, is_user_defined
from engine.daemon.store import link_alias
from engine.errors import Conflict, EngineError, Forbidden, InvalidParameter, NotFound
from engine.sys.fs import atomic_write

if TYPE_CHECKING:
    from engine.daemon.container import Container

LOG = logging.getLogger(__name__)

BUILTIN = ("bridge", "host", "none")
#: What a join gives an endpoint, as ``NetworkSettings.Networks[name]`` shows it.
RUNTIME_KEYS = (
    "NetworkID",
    "EndpointID",
    "Gateway",
    "IPAddress",
    "IPPrefixLen",
    "IPv6Gateway",
    "GlobalIPv6Address",
    "GlobalIPv6PrefixLen",
    "MacAddress",
)
#: runconfig's errors (moby ``runconfig/errors.go``).
ERR_HOST_NETWORK = "container cannot be disconnected from host network or connected to host network"
ERR_SHARED_NETWORK = (
    "container sharing network namespace with another container or host cannot be connected to any other network"
)
ERR_NO_NETWORK = "container cannot be connected to multiple networks with one of the networks in private (none) mode"
ERR_IP_ON_BUILTIN = "user specified IP address is supported on user defined networks only"
ERR_IP_NO_SUBNET = (
    "user specified IP address is supported only when connecting to networks with user configured subnets"
)
ERR_ALIAS_ON_BUILTIN = "network-scoped alias is supported only for containers in user defined networks"


def port_key(spec: str) -> str:
    return spec if "/" in spec else spec + "/tcp"


def stopped_settings(endpoints: dict | None = None) -> dict:
    """``NetworkSettings`` of a container that does not run: no address, no published ports.

    :param endpoints: its endpoint configuration (``EndpointsConfig``), kept.
    """
    out: dict[str, Any] = {
        "Bridge": "",
        "Ports": {},
        "IPAddress": "",
        "IPPrefixLen": 0,
        "Gateway": "",
        "MacAddress": "",
        "Networks": {},
    }
    if endpoints is not None:
        out["EndpointsConfig"] = endpoints
    return out


def endpoint_config(body: Any) -> dict:
    """An ``EndpointSettings`` of a request reduced to its configuration, checked as moby checks it.

    :raises InvalidParameter: malformed addresses (moby's words, their typo included).
    """
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidParameter("invalid endpoint config: want an object")
    ipam = body.get("IPAMConfig")
    if ipam is not None and not isinstance(ipam, dict):
        raise InvalidParameter("invalid IPAMConfig: want an object")
    for key, version in (("IPv4Address", 4), ("IPv6Address", 6)):
        value = (ipam or {}).get(key) or ""
        if value:
            try:
                ok = ipaddress.ip_address(value).version == version
            except ValueError:
                ok = False
            if not ok:
                raise InvalidParameter(f"Invalid IPv{version} address: {value})")
    for value in (ipam or {}).get("LinkLocalIPs") or []:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise InvalidParameter(f"Invalid link-local IP address: {value}") from None
    aliases = body.get("Aliases")
    links = body.get("Links")
    for what, value in (("Aliases", aliases), ("Links", links)):
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise InvalidParameter(f"invalid {what}: want a list of strings")
    opts = body.get("DriverOpts")
    if opts is not None and not isinstance(opts, dict):
        raise InvalidParameter("invalid DriverOpts: want an object of strings")
    return {
        "IPAMConfig": ipam,
        "Links": list(links) if links else None,
        "Aliases": list(aliases) if aliases else None,
        "MacAddress": str(body.get("MacAddress") or ""),
        "DriverOpts": {str(k): str(v) for k, v in opts.items()} if opts is not None else None,
        "NetworkID": "",
    }


def gateway_order(net: dict) -> tuple:
    """libnetwork's endpoint order (``endpoint.Less``): the first one with a gateway carries the default routes."""
    has_v6 = bool(net.get("EnableIPv6")) and any(":" in (c.get("Subnet") or "") for c in net["IPAM"]["Config"])
    return (bool(net.get("Internal")), -(1 + (2 if has_v6 else 0)), net["Name"])


class NetworkService:
    """Networking of the daemon's containers over one network driver (or none).

    :param daemon: the daemon (engine, config, containers, linkgraph).
    :param driver: the network driver, or None when networking is off.
    """

    def __init__(self, daemon: Any, driver: Any) -> None:
        self.daemon = daemon
        self.driver = driver
        self.networks = Networks(daemon, driver)
        self.facts: dict = {}
        #: The containers' persistent network namespaces, ``<root>/netns/<id>``.
        self.netns_dir = os.path.join(daemon.root, "netns")
        #: Namespaces made ahead for the starts.
        self._spares = netns.Spares()
        #: The embedded DNS server, once :meth:`init` made it (None without a driver).
        self.dns: Any = None
        self._locks: dict[str, threading.RLock] = {}
        self._locks_lock = threading.Lock()

    def _lock_of(self, c: Container) -> threading.RLock:
        """One container's network changes, one at a time (start, exit, connect, disconnect)."""
        with self._locks_lock:
            return self._locks.setdefault(c.id, threading.RLock())

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
        from engine.daemon.dns import DnsService

        self.dns = DnsService(self.daemon, os.path.join(self.daemon.root, "network", "dns"))
        self.dns.start()

    def close(self, live: bool) -> None:
        """The daemon stops: the embedded DNS server keeps serving running containers (``live``) or stops;
        the spare namespaces go."""
        self._spares.close()
        if self.dns is not None:
            self.dns.close(stop=not live)

    # create: the endpoint configuration
    def create_settings(self, c: Container, networking: dict | None) -> dict:
        """``NetworkSettings`` of a new container: its endpoint configuration from the network mode and
        ``NetworkingConfig``, checked.

        A network that does not exist (yet) is not an error here, as in moby:
        the start fails if it still does not.

        :raises InvalidParameter: more than one endpoint configuration (API 1.41), or one that does
            not fit its network (moby's words).
        """
        mode = c.host_config.get("NetworkMode") or "default"
        given = (networking or {}).get("EndpointsConfig") or {}
        if not isinstance(given, dict):
            raise InvalidParameter("invalid NetworkingConfig: EndpointsConfig must be an object")
        if len(given) > 1:
            raise InvalidParameter(f"Container cannot be connected to network endpoints: {', '.join(given)}")
        configs: dict[str, dict] = {}
        if mode in ("host", "none") or mode.startswith("container:"):
            return stopped_settings(configs)
        if mode in ("default", "bridge"):
            net = self.networks.default_network()
            name = "bridge"
        else:
            # As moby: the network may not exist yet (it must by the start).
            try:
                net = self.networks.find(mode)
                name = net["Name"]
            except NotFound:
                net, name = None, mode
        keys = {mode, name, "default" if name == "bridge" else name, *([net["Id"]] if net else [])}
        for key, body in given.items():
            cfg = endpoint_config(body)
            if key in keys:
                if net is not None:
                    self._check_endpoint(net, cfg)
                configs[name] = cfg
            else:
                try:
                    other = self.networks.find(key)
                except NotFound:
                    configs[key] = cfg
                    continue
                self._check_endpoint(other, cfg)
                configs[other["Name"]] = cfg
        configs.setdefault(name, endpoint_config(None))
        return stopped_settings(configs)

    def _check_endpoint(self, net: dict, cfg: dict) -> None:
        """moby's ``validateNetworkingConfig``: IPs and aliases only on user-defined networks, IPs only on
        networks created with a subnet, and in it."""
        ipam = cfg.get("IPAMConfig") or {}
        wanted = [a for a in (ipam.get("IPv4Address"), ipam.get("IPv6Address")) if a]
        if not is_user_defined(net["Name"]):
            if wanted:
                raise InvalidParameter(ERR_IP_ON_BUILTIN)
            if cfg.get("Aliases"):
                raise InvalidParameter(ERR_ALIAS_ON_BUILTIN)
            return
        if not wanted:
            return
        configured = self.driver.configured_subnets(net["Id"]) if self.driver is not None else []
        for addr in wanted:
            ip = ipaddress.ip_address(addr)
            subnets = [ipaddress.ip_network(s, strict=False) for s in configured]
            subnets = [s for s in subnets if s.version == ip.version]
            if not subnets:
                raise InvalidParameter(ERR_IP_NO_SUBNET)
            if not any(ip in s for s in subnets):
                raise InvalidParameter(f"Invalid address {addr}: It does not belong to any of this network's subnets")

    # start and exit
    def setup(self, c: Container) -> dict:
        """Make ``c``'s network as it starts; all or nothing.

        Writes its ``hostname``, ``hosts`` and ``resolv.conf``; for the
        ``none``, ``default``, ``bridge`` and user-defined modes makes its
        namespace (``<root>/netns/<id>``) and, with a driver, its endpoints,
        ports and links.

        :returns: ``{"mode": "host"}``; ``{"mode": "container", "path":
            the other's /proc/PID/ns/net, "container": its ID}``; or
            ``{"mode": "none"|"bridge", "path", "settings"}``.
        :raises Conflict: the container it joins (or links to) does not run.
        :raises NotFound: one of its networks is gone.
        """
        hc = c.host_config
        mode = hc.get("NetworkMode") or "default"
        cfg = c.config
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
                        atomic_write(c.path_of(name), fh.read(), durable=False)
            return {"mode": "container", "path": f"/proc/{other.state.pid}/ns/net", "container": other.id}
        host_mode = mode == "host"
        hostname = cfg.get("Hostname") or c.id[:12]
        gateway = self.host_gateway() if self.driver is not None else ""
        configs = self._configs(c)
        embedded = self.driver is not None and any(is_user_defined(name) for name in configs)
        # These three files are made again at every start: atomic for readers, not fsynced
        # (dockerd's libnetwork writes hosts and hostname without a sync either).
        self.write_resolv_conf(c, embedded, host_mode)
        atomic_write(c.hostname_path, (hostname + "\n").encode(), durable=False)
        if host_mode:
            with open("/etc/hosts", "rb") as fh:
                base = fh.read()
            extra = resolvconf.hosts("", "", "", hc.get("ExtraHosts"), host_gateway=gateway)[
                len(resolvconf.HOSTS_HEADER) :
            ]
            atomic_write(c.hosts_path, base + extra.encode(), durable=False)
            return {"mode": "host"}
        path = os.path.join(self.netns_dir, c.id)
        with self._lock_of(c):
            netns.remove(path)
            self._spares.create(path)
            settings: dict = {}
            try:
                if mode != "none" and self.driver is not None:
                    settings = self.allocate(c, path)
                primary = settings.get("Primary", {})
                links = self.links_for(c)
                atomic_write(
                    c.hosts_path,
                    resolvconf.hosts(
                        hostname,
                        cfg.get("Domainname") or "",
                        primary.get("IPAddress", ""),
                        hc.get("ExtraHosts"),
                        links,
                        host_gateway=gateway,
                    ).encode(),
                    durable=False,
                )
                if embedded and self.dns is not None:
                    self.dns.attach(c, path)
                    self.dns.update()
            except BaseException:
                if settings:
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

    def write_resolv_conf(self, c: Container, embedded: bool, host_mode: bool = False, in_place: bool = False) -> None:
        """The container's resolv.conf: the embedded DNS server's (``nameserver 127.0.0.11``, ``ndots:0``) on
        user-defined networks, else the host's or ``--dns``'s.

        :param in_place: rewrite the file the running container has bind-mounted (no rename).
        """
        hc = c.host_config
        daemon_cfg = self.daemon.config
        dns = list(hc.get("Dns") or daemon_cfg.dns)
        search = list(hc.get("DnsSearch") or daemon_cfg.dns_search)
        options = list(hc.get("DnsOptions") or daemon_cfg.dns_opts)
        if embedded:
            text = resolvconf.embedded(search, options)
        else:
            text, _warnings = resolvconf.build(dns, search, options, host_mode=host_mode)
        if in_place:
            try:
                with open(c.resolv_conf_path, "r+", encoding="utf-8") as fh:
                    fh.write(text)
                    fh.truncate()
                return
            except FileNotFoundError:
                pass
        atomic_write(c.resolv_conf_path, text.encode(), durable=False)

    @staticmethod
    def _uses_embedded_dns(c: Container) -> bool:
        try:
            with open(c.resolv_conf_path, encoding="utf-8", errors="replace") as fh:
                return any(line.split()[:2] == ["nameserver", resolvconf.EMBEDDED_DNS] for line in fh if line.strip())
        except OSError:
            return False

    def upstream_servers(self, c: Container) -> list[str]:
        """The servers the embedded DNS server forwards ``c``'s other queries to: ``--dns``, else the host's."""
        dns = list(c.host_config.get("Dns") or self.daemon.config.dns)
        if dns:
            return dns
        return resolvconf.host_nameservers()

    def _configs(self, c: Container) -> dict[str, dict]:
        """``c``'s endpoint configuration (made from its mode for a record that predates it)."""
        ns = c.network_settings if c.network_settings is not None else {}
        configs = ns.get("EndpointsConfig")
        if configs is None:
            mode = c.host_config.get("NetworkMode") or "default"
            configs = {}
            if mode in ("default", "bridge"):
                configs["bridge"] = endpoint_config(None)
            elif is_user_defined(mode):
                configs[mode] = endpoint_config(None)
            ns["EndpointsConfig"] = configs
            c.network_settings = ns
        return configs

    def _resolve_networks(self, c: Container, configs: dict[str, dict]) -> list[tuple[str, dict]]:
        """(name, network) of each configured network, the mode's first, then by name.

        :raises NotFound: a network is gone (``network NAME not found``).
        """
        mode = c.host_config.get("NetworkMode") or "default"
        primary = "bridge" if mode in ("default", "bridge") else mode
        if primary not in configs:  # the mode names the network by its ID
            primary = next((n for n, cfg in configs.items() if cfg.get("NetworkID") == mode), primary)
            if primary not in configs:
                try:
                    primary = self.networks.find(mode)["Name"]
                except NotFound:
                    pass
        out = []
        for name in sorted(configs, key=lambda n: (n != primary, n)):
            if name == "bridge":
                net = self.networks.default_network()
                if net is None:  # -b none: no default network
                    continue
            else:
                net = None
                if configs[name].get("NetworkID"):
                    try:
                        net = self.networks.find(configs[name]["NetworkID"])
                    except NotFound:
                        net = None
                if net is None:
                    net = self.networks.find(name)
            out.append((name, net))
        return out

    def _aliases(self, c: Container, name: str, cfg: dict) -> None:
        """moby's ``updateNetworkConfig``: on a user-defined network the short ID and the hostname are aliases too."""
        if not is_user_defined(name):
            return
        aliases = list(cfg.get("Aliases") or [])
        for extra in (c.id[:12], c.config.get("Hostname") or ""):
            if extra and extra not in aliases:
                aliases.append(extra)
        cfg["Aliases"] = aliases

    def allocate(self, c: Container, netns_path: str) -> dict:
        """The endpoints, published ports and links of ``c`` at start; all or nothing.

        :returns: ``{"Endpoints": {name: join result}, "Gateway": name, "Primary": the first
            endpoint's result, "Ports": NetworkSettings.Ports, "SandboxKey"}``.
        """
        if self.driver is None:
            return {}
        links = self.links(c)
        for child, alias in links:
            if not child.state.running:
                raise Conflict(f"Cannot link to a non running container: {child.name} AS {c.name}/{alias}")
        configs = self._configs(c)
        nets = self._resolve_networks(c, configs)
        if not nets:
            return {}
        best = min(nets, key=lambda item: gateway_order(item[1]))[0]
        if self.driver.endpoints(c.id):
            # A stop that never reached the release (the daemon died in
            # between, and prune has not run yet): the old endpoints go first.
            LOG.warning("container %s still had network endpoints; releasing them first", c.short_id)
            self.driver.release_interface(c.id)
        joined: list[tuple[str, dict]] = []
        results: dict[str, dict] = {}
        try:
            for i, (name, net) in enumerate(nets):
                cfg = configs[name]
                self._aliases(c, name, cfg)
                ipam = cfg.get("IPAMConfig") or {}
                request = {
                    "NetnsPath": netns_path,
                    "Name": c.name.lstrip("/"),
                    "IPv4Address": ipam.get("IPv4Address") or "",
                    "IPv6Address": ipam.get("IPv6Address") or "",
                    "MacAddress": cfg.get("MacAddress") or (c.config.get("MacAddress") if i == 0 else "") or "",
                    "DefaultRoute": name == best,
                }
                results[name] = self.driver.join(net["Id"], c.id, request)
                joined.append((name, net))
                cfg["NetworkID"] = net["Id"]
            bindings = {port_key(k): v for k, v in (c.host_config.get("PortBindings") or {}).items()}
            if c.host_config.get("PublishAllPorts"):
                for port in c.config.get("ExposedPorts") or {}:
                    bindings.setdefault(port_key(port), [{}])
            ports = self._job("allocate_port", c.id, PortBindings=bindings) if bindings else {}
            exposed = {port_key(p): None for p in c.config.get("ExposedPorts") or {}}
            exposed.update(ports or {})
            for child, _alias in links:
                child_ports = list((child.config.get("ExposedPorts") or {}).keys())
                self._job("link", c.id, child.id, Ports=child_ports, Enable=True)
        except BaseException:
            try:
                self.driver.release_interface(c.id)
            except EngineError:
                LOG.exception("releasing the interfaces of %s after a failed start", c.short_id)
            raise
        for _name, net in joined:
            self.networks.event(net, "connect", c.id)
        return {
            "Endpoints": results,
            "Gateway": best,
            "Primary": results[nets[0][0]],
            "Ports": exposed,
            "SandboxKey": netns_path,
        }

    def release(self, c: Any) -> None:
        if self.driver is not None:
            self._job("release_interface", c.id)

    def teardown(self, c: Container) -> None:
        """Release what :meth:`setup` made for ``c`` (it exited, or its start failed)."""
        mode = c.host_config.get("NetworkMode") or "default"
        with self._lock_of(c):
            joined = self._joined_networks(c)
            if self.dns is not None:
                self.dns.detach(c)
            if mode not in ("host", "none") and not mode.startswith("container:"):
                try:
                    self.release(c)
                except Exception:
                    LOG.exception("releasing the network of %s", c.short_id)
            self.remove_namespace(c)
            with c.lock:
                # A stopped container has no address or published ports (as in Docker).
                c.network_settings = stopped_settings(self._configs(c))
        for net in joined:
            self.networks.event(net, "disconnect", c.id)
        if self.dns is not None and any(is_user_defined(net["Name"]) for net in joined):
            self.dns.update()

    def _joined_networks(self, c: Container) -> list[dict]:
        """The networks ``c`` has an endpoint on now."""
        if self.driver is None:
            return []
        ids = set(self.driver.endpoints(c.id))
        return [n for n in self.driver.networks() if n["Id"] in ids] if ids else []

    def remove_namespace(self, c: Container) -> None:
        """Remove ``c``'s network namespace file, if it has one (and, as it is being removed, its lock)."""
        netns.remove(os.path.join(self.netns_dir, c.id))
        if c.state.removal_in_progress or c.removed:
            with self._locks_lock:
                self._locks.pop(c.id, None)

    # connect and disconnect
    def connect(self, net_ref: str, container_ref: str, body: Any) -> None:
        """``POST /networks/{id}/connect``: on a running container a new endpoint now, on another its configuration.

        :raises NotFound: the network or the container.
        :raises InvalidParameter: host, none or container network modes; a configuration that does not fit.
        :raises Forbidden: the container is on the network already (a running one).
        """
        net = self.networks.find(net_ref)
        c = self.daemon.containers.get(container_ref)
        cfg = endpoint_config(body)
        mode = c.host_config.get("NetworkMode") or "default"
        if mode.startswith("container:"):
            raise InvalidParameter(ERR_SHARED_NETWORK)
        if net["Name"] == "host" or mode == "host":
            raise InvalidParameter(ERR_HOST_NETWORK)
        if net["Name"] == "none" or mode == "none":
            raise InvalidParameter(ERR_NO_NETWORK)
        self._check_endpoint(net, cfg)
        name = net["Name"]
        with self._lock_of(c):
            if c.state.removal_in_progress or c.state.dead or c.removed:
                raise Conflict(
                    f"Container {c.id} is marked for removal and cannot be connected or disconnected to the network"
                )
            configs = self._configs(c)
            running = c.state.running and not c.exiting and not c.state.restarting
            if not running:
                if name not in configs:
                    self._aliases(c, name, cfg)
                    with c.lock:
                        configs[name] = cfg
                        c.to_disk()
                return
            if self.driver is None:
                raise Forbidden("networking is disabled (-b none)")
            if net["Id"] in self.driver.endpoints(c.id):
                raise Forbidden(f"endpoint with name {c.name.lstrip('/')} already exists in network {name}")
            self._aliases(c, name, cfg)
            ipam = cfg.get("IPAMConfig") or {}
            path = os.path.join(self.netns_dir, c.id)
            result = self.driver.join(
                net["Id"],
                c.id,
                {
                    "NetnsPath": path,
                    "Name": c.name.lstrip("/"),
                    "IPv4Address": ipam.get("IPv4Address") or "",
                    "IPv6Address": ipam.get("IPv6Address") or "",
                    "MacAddress": cfg.get("MacAddress") or "",
                },
            )
            cfg["NetworkID"] = net["Id"]
            with c.lock:
                configs[name] = cfg
                c.network_settings.setdefault("Networks", {})[name] = self._runtime(result)
                c.to_disk()
            try:
                self._update_gateway(c)
            except EngineError:
                LOG.exception("moving the default route of %s", c.short_id)
            if is_user_defined(name) and self.dns is not None:
                self.dns.attach(c, path)
                if not self._uses_embedded_dns(c):
                    # Now on a user-defined network: its names resolve through the embedded server (as
                    # libnetwork rebuilds the sandbox's resolv.conf), written into the file it has mounted.
                    self.write_resolv_conf(c, embedded=True, in_place=True)
        self.networks.event(net, "connect", c.id)
        if self.dns is not None and is_user_defined(name):
            self.dns.update()

    def disconnect(self, net_ref: str, container_ref: str, force: bool = False) -> None:  # noqa: ARG002 (force: see below)
        """``POST /networks/{id}/disconnect`` (``Force`` changes nothing for a container that exists, as in dockerd).

        :raises NotFound: the network or the container.
        :raises EngineError: the container is not on the network (500, moby's words).
        """
        net = self.networks.find(net_ref)
        c = self.daemon.containers.get(container_ref)
        mode = c.host_config.get("NetworkMode") or "default"
        if mode == "host" and net["Name"] == "host":
            raise InvalidParameter(ERR_HOST_NETWORK)
        name = net["Name"]
        with self._lock_of(c):
            if c.state.removal_in_progress or c.state.dead or c.removed:
                raise Conflict(
                    f"Container {c.id} is marked for removal and cannot be connected or disconnected to the network"
                )
            configs = self._configs(c)
            running = c.state.running and not c.exiting
            on_it = self.driver is not None and net["Id"] in self.driver.endpoints(c.id)
            if not running or not on_it:
                if running and not on_it:
                    raise EngineError(f"container {c.id} is not connected to network {name}")
                if name not in configs:
                    raise EngineError(f"container {c.id} is not connected to the network {name}")
                with c.lock:
                    del configs[name]
                    c.to_disk()
                return
            self.driver.leave(net["Id"], c.id)
            with c.lock:
                configs.pop(name, None)
                (c.network_settings.get("Networks") or {}).pop(name, None)
                if name == "bridge":
                    for key, value in stopped_settings().items():
                        if key not in ("Networks", "Ports"):
                            c.network_settings[key] = value
                c.to_disk()
            try:
                self._update_gateway(c)
            except EngineError:
                LOG.exception("moving the default route of %s", c.short_id)
        self.networks.event(net, "disconnect", c.id)
        if self.dns is not None and is_user_defined(name):
            self.dns.update()

    def _update_gateway(self, c: Container) -> None:
        """The default routes (and published ports) through libnetwork's choice of ``c``'s endpoints."""
        assert self.driver is not None
        endpoints = self.driver.endpoints(c.id)
        nets = [n for n in self.networks.all() if n["Id"] in endpoints]
        best = min(nets, key=gateway_order) if nets else None
        current = next((nid for nid, s in endpoints.items() if s.get("DefaultRoute")), None)
        if (best["Id"] if best else None) != current:
            self.driver.set_gateway(c.id, best["Id"] if best else None)
        settings = self.driver.settings(c.id) or {}
        with c.lock:
            exposed = {port_key(p): None for p in c.config.get("ExposedPorts") or {}}
            exposed.update(settings.get("Ports") or {})
            c.network_settings["Ports"] = exposed
            c.to_disk()

    # restart of the daemon
    def restore(self, c: Any) -> None:
        if self.driver is not None:
            settings = self.driver.restore(c.id)
            if settings is None and self._configs(c):
                LOG.warning("container %s runs but the network driver has no record of it", c.short_id)
        if self.dns is not None and any(is_user_defined(n) for n in self._configs(c)):
            self.dns.attach(c, os.path.join(self.netns_dir, c.id), restored=True)

    def prune(self, running: list[str]) -> None:
        if self.driver is not None:
            gone = self.driver.prune(running)
            if gone:
                LOG.info("network: released %d endpoints of containers that died meanwhile", len(gone))
        if self.dns is not None:
            self.dns.prune(running)
            self.dns.update()

    def container_renamed(self, c: Container) -> None:
        """Its name resolves on its networks from now on."""
        if self.dns is not None:
            self.dns.update()

    # links (the default network's)
    def links(self, c: Any) -> list[tuple[Any, str]]:
        """(child container, alias) of every ``--link`` of ``c`` on the default network (on a user-defined
        network a link is a DNS alias: see :mod:`engine.daemon.dns`)."""
        if is_user_defined(c.host_config.get("NetworkMode") or "default"):
            return []
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
        """At create: check the ``--link`` targets and record ``/parent/alias`` in the link graph (not on a
        user-defined network, as moby's ``registerLinks``)."""
        if is_user_defined(c.host_config.get("NetworkMode") or "default"):
            return
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
        net = self.networks.default_network()
        for conf in (net or {}).get("IPAM", {}).get("Config") or []:
            if conf.get("Gateway") and ":" not in conf["Gateway"]:
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

    # inspect
    @staticmethod
    def _runtime(result: dict) -> dict:
        return {
            key: result.get(key, "" if key not in ("IPPrefixLen", "GlobalIPv6PrefixLen") else 0) for key in RUNTIME_KEYS
        }

    def inspect_settings(self, c: Any, settings: dict) -> dict:
        """``NetworkSettings`` of a started container (what :meth:`allocate` returned)."""
        endpoints = settings.get("Endpoints") or {}
        runtime = {name: self._runtime(result) for name, result in endpoints.items()}
        bridge = endpoints.get("bridge") or {}
        sandbox_key = settings.get("SandboxKey", "")
        configs = self._configs(c)
        if "bridge" in configs:
            links = [f"{child.name}:{c.name}/{alias}" for child, alias in self.links(c)]
            configs["bridge"]["Links"] = links or None
        return {
            "Bridge": bridge.get("Bridge", ""),
            "SandboxID": hashlib.sha256((sandbox_key or c.id).encode()).hexdigest(),
            "SandboxKey": sandbox_key,
            "Ports": settings.get("Ports") or {},
            "EndpointID": bridge.get("EndpointID", ""),
            "Gateway": bridge.get("Gateway", ""),
            "IPAddress": bridge.get("IPAddress", ""),
            "IPPrefixLen": bridge.get("IPPrefixLen", 0),
            "GlobalIPv6Address": bridge.get("GlobalIPv6Address", ""),
            "GlobalIPv6PrefixLen": bridge.get("GlobalIPv6PrefixLen", 0),
            "IPv6Gateway": bridge.get("IPv6Gateway", ""),
            "MacAddress": bridge.get("MacAddress", ""),
            "Networks": runtime,
            "EndpointsConfig": configs,
        }
