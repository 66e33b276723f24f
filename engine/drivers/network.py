"""The network driver contract (seed ch. 6; libnetwork's driver API for networks), its options and how the one
network driver is chosen.

The daemon registers the active driver's methods as the seed's jobs
``init_networkdriver`` (:meth:`NetworkDriver.init`), ``allocate_interface``,
``release_interface``, ``allocate_port``, ``release_port``
(:meth:`NetworkDriver.release_ports`) and ``link``. ``-b none`` means no
driver is loaded at all; ``host``, ``none`` and ``container:`` network modes
never reach the driver.

Life cycle, as the daemon drives it::

    probe(home, options)              class method; NotSupported -> start-up fails
    driver = Driver(home, options)    home = <root>/network
    driver.init()                     the default network: bridge, iptables, forwarding;
                                      the user-defined networks it holds, made again
    driver.restore(id) ...            each container still running (live shim)
    driver.prune(running_ids)         forget containers that died meanwhile
    create_network / delete_network   docker network create / rm
    join / leave / set_gateway        a container's endpoints on networks (start, connect,
                                      disconnect, exit); allocate_interface is join on the
                                      default network
    allocate_ports / link ...         container start
    release_interface                 container stop: every endpoint of the container
    driver.close()                    daemon stops, containers keep running
    driver.shutdown()                 or: undo everything on the host

Networks (libnetwork's model). A driver provides the default network (the
one :meth:`~NetworkDriver.init` reports, ``bridge`` in ``GET /networks``)
and, if it can, user-defined ones: the daemon checks names and gives each
a 64-hex ID, and the driver owns the rest, since it is the only network
driver: it keeps the records (name, options, labels, ``IPAM.Config``),
chooses and checks subnets and addresses (:mod:`engine.drivers.ipam`, the
default address pools of :class:`NetworkOptions`), makes the data path and
persists it all under its home so that :meth:`~NetworkDriver.init` brings
it back after a restart or a reboot. A container has one endpoint per
network it is on: an interface (``eth0``, ``eth1``... in the order they
were joined) with an address on that network; exactly one of them (chosen
by the daemon, as libnetwork's sandbox chooses it) carries the default
routes and the published ports. A driver without user-defined networks
keeps the defaults of :meth:`~NetworkDriver.create_network` and friends,
which refuse with :class:`~engine.errors.NotSupported`.

Every dict the driver returns uses the Docker Remote API's key spelling, so
the daemon can put it into ``NetworkSettings`` and ``GET /networks`` as is;
its times are Go's RFC 3339 with nanoseconds (:func:`rfc3339nano`, exported
here for drivers from :mod:`engine.utils.timefmt`).
The driver gets :class:`NetworkOptions`, built by the daemon from its own
configuration; it never sees the daemon's configuration object.

:func:`plan` chooses the driver: ``bridge`` unless networking is off (see
:mod:`engine.drivers.selection`). :mod:`engine.testing.nettest` is the
conformance suite every network driver runs. A third-party network driver
needs only :mod:`engine.drivers`, :mod:`engine.errors` and :mod:`engine.sys`
(namespaces); :mod:`engine.archive` has nothing for it.
"""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from engine.drivers.ipam import IPAMConfig, PoolSpec
from engine.drivers.selection import DriverConfig, Selection, named, probe_entry
from engine.errors import InvalidParameter, NotSupported
from engine.utils.timefmt import rfc3339nano

if TYPE_CHECKING:
    from engine.drivers.discovery import DriverEntry

__all__ = [
    "NetworkDriver",
    "NetworkOptions",
    "NetworkSpec",
    "NotSupported",
    "home",
    "link_env",
    "parse_link_ports",
    "plan",
    "probe",
    "rfc3339nano",
]

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkOptions:
    """What a network driver is told by the daemon's flags (Docker's names in parentheses)."""

    #: An existing bridge to attach containers to (``-b``); "" lets the
    #: driver make its own; ``none`` means networking is off.
    bridge: str = ""
    #: The bridge's address and prefix, ``172.17.42.1/16`` (``--bip``).
    bip: str = ""
    #: The part of the bridge's subnet containers get addresses from (``--fixed-cidr``).
    fixed_cidr: str = ""
    #: The containers' MTU; 0: the default route's interface's, else 1500 (``--mtu``).
    mtu: int = 0
    #: Whether containers on the bridge may reach each other (``--icc``).
    icc: bool = True
    #: Whether the driver adds iptables rules (``--iptables``).
    iptables: bool = True
    #: Whether the driver turns on ``net.ipv4.ip_forward`` (``--ip-forward``).
    ip_forward: bool = True
    #: Whether traffic leaving the bridge's subnet is masqueraded (``--ip-masq``).
    ip_masq: bool = True
    #: Whether a userland proxy serves published ports too (``--userland-proxy``).
    userland_proxy: bool = True
    #: The host address ports are published on when a binding names none (``--ip``).
    default_ip: str = "0.0.0.0"
    #: The containers' DNS servers (``--dns``): the bridge's subnet must not cover them.
    dns: tuple[str, ...] = ()
    #: Where user-defined networks get their subnets (``default-address-pools``); empty: Docker's.
    default_address_pools: tuple[PoolSpec, ...] = ()
    #: IPv6 on the default network (``--ipv6``), with addresses from ``fixed_cidr_v6``.
    ipv6: bool = False
    #: The default network's IPv6 subnet (``--fixed-cidr-v6``).
    fixed_cidr_v6: str = ""
    #: Whether the driver adds ip6tables rules for IPv6 networks (``--ip6tables``).
    ip6tables: bool = True


@dataclass(frozen=True)
class NetworkSpec:
    """A user-defined network as ``POST /networks/create`` asks for it (the daemon has checked the name).

    ``options`` are the driver's (``com.docker.network.bridge.name``...),
    ``ipam`` the ``IPAM.Config`` entries as given (IPv4 and IPv6 mixed;
    empty: the driver chooses a subnet from the default address pools).
    """

    network_id: str
    name: str
    ipam: tuple[IPAMConfig, ...] = ()
    ipam_options: Mapping[str, str] | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    internal: bool = False
    enable_ipv6: bool = False
    attachable: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    #: When it was created (seconds since the epoch).
    created: float = 0.0


class NetworkDriver(abc.ABC):
    """Gives containers their network: bridge, addresses, ports, links.

    :param home: the driver's state directory (``<root>/network``), where
        allocations are kept so that a restarted daemon reuses them.
    :param options: what the daemon's flags say (:class:`NetworkOptions`).
    """

    name: ClassVar[str] = ""

    def __init__(self, home: str, options: NetworkOptions) -> None:
        self.home = home
        self.options = options

    @classmethod
    def probe(cls, home: str, options: NetworkOptions) -> None:
        """Check that the driver can run here, without changing anything.

        :raises NotSupported: (or ``PrerequisitesNotMet``) with the reason;
            the daemon then refuses to start, suggesting ``-b none``.
        """

    @abc.abstractmethod
    def init(self) -> dict:
        """Set up the host side (bridge, iptables, forwarding).

        Rules a previous instance left (after a crash or :meth:`close`) are
        removed and made again; containers' own rules come back with
        :meth:`restore`.

        :returns: facts for ``/info`` and inspect: ``Bridge``, ``IPAddress``
            (the gateway), ``IPPrefixLen``, ``Subnet``, ``Gateway``,
            ``FixedCIDR``, ``Mtu``, ``MacAddress``, ``NetworkID``.
        :raises NotFound: the bridge the options name does not exist.
        :raises InvalidParameter: the options contradict each other or the
            host (an address that does not match the existing bridge).
        :raises PrerequisitesNotMet: a tool or kernel module the options
            need is missing.
        :raises HostError: the host refused a change.
        """

    @abc.abstractmethod
    def allocate_interface(self, container_id: str, request: Mapping[str, Any]) -> dict:
        """Give a container an address and an ``eth0`` in its network namespace, on the default network.

        ``eth0`` is up with the address, the MAC and the MTU returned, and
        the namespace has a default route via ``Gateway``. A container that
        still holds an interface on the default network (a stop that never
        reached :meth:`release_interface`) gets a new one. For a driver with
        user-defined networks it is :meth:`join` of the default network with
        ``DefaultRoute``.

        :param request: ``NetnsPath`` (required: the file the namespace is
            bound to), ``Name`` (the container's name, for messages and
            ``/networks``), ``RequestedIP`` and ``RequestedMac`` (optional).
        :returns: ``IPAddress``, ``IPPrefixLen``, ``Gateway``, ``MacAddress``,
            ``Bridge``, ``Mtu``, ``EndpointID``, ``NetworkID``, ``HostVeth``,
            ``SandboxKey``.
        :raises InvalidParameter: no ``NetnsPath``, a namespace that does not
            exist, or a malformed address.
        :raises Conflict: the requested address is in use, or the namespace
            already has an ``eth0``; nothing is left half-made.
        :raises HostError: the host refused (no free address, no bridge).
        :raises NotSupported: :meth:`init` did not run.
        """

    @abc.abstractmethod
    def release_interface(self, container_id: str) -> None:
        """Give back the container's interfaces, addresses, ports, proxies and link rules: every endpoint
        it has, on every network.

        Safe to call twice, or for a container never allocated.

        :raises HostError: something could not be removed; the driver keeps
            its record so that :meth:`prune` or the next :meth:`init` tries again.
        :raises NotSupported: :meth:`init` did not run.
        """

    @abc.abstractmethod
    def allocate_ports(
        self, container_id: str, port_bindings: Mapping[str, Sequence[Mapping[str, Any]] | None]
    ) -> dict[str, list[dict]]:
        """Publish container ports, all or none, on the endpoint that carries its default routes.

        While a port is published its host port is held: no other program
        can bind it, and connections to it reach the container.

        :param port_bindings: ``HostConfig.PortBindings``:
            ``{"80/tcp": [{"HostIp": "", "HostPort": "18080"}]}``. An empty
            ``HostPort`` picks an ephemeral port, ``"8000-8010"`` the first
            free one of the range, an empty ``HostIp`` the default IP of
            :class:`NetworkOptions`.
        :returns: what was bound, as ``NetworkSettings.Ports``:
            ``{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18080"}]}``.
        :raises Conflict: a host port is already allocated (by a container
            or another program); nothing is left half-configured.
        :raises InvalidParameter: a malformed port or address.
        :raises NotFound: the container has no interface (allocate it first).
        :raises HostError: the host refused (rules, the proxy).
        :raises NotSupported: :meth:`init` did not run.
        """

    def allocate_port(self, container_id: str, binding: Mapping[str, Any]) -> dict:
        """Publish one container port (the seed's ``allocate_port`` job).

        :param binding: ``Port`` (``"80/tcp"``), ``HostIp``, ``HostPort``.
        :returns: ``Port``, ``HostIp``, ``HostPort`` as bound.
        :raises: as :meth:`allocate_ports`.
        """
        port = str(binding.get("Port") or "")
        made = self.allocate_ports(
            container_id, {port: [{"HostIp": binding.get("HostIp", ""), "HostPort": binding.get("HostPort", "")}]}
        )
        ((key, bound),) = made.items()
        return {"Port": key, **bound[0]}

    @abc.abstractmethod
    def release_ports(self, container_id: str) -> None:
        """Unpublish every port of a container, keeping its interface; the host ports are free again.

        Safe for a container without ports or without an interface.

        :raises HostError: a rule or a proxy could not be removed.
        :raises NotSupported: :meth:`init` did not run.
        """

    @abc.abstractmethod
    def link(
        self, parent: Mapping[str, Any] | str, child: Mapping[str, Any] | str, ports: Sequence[str], enable: bool
    ) -> None:
        """Allow (or stop allowing) ``parent`` to reach ``child``'s ports.

        Only needed when containers may not reach each other otherwise
        (``icc`` off); enabling twice, or disabling a link that does not
        exist, changes nothing.

        :param parent: a container ID the driver allocated, or settings with
            at least ``IPAddress``.
        :param ports: ``"80/tcp"`` strings (the child's exposed ports).
        :raises NotFound: a container ID the driver holds no interface for.
        :raises InvalidParameter: a malformed port or address.
        :raises HostError: the host refused a rule.
        :raises NotSupported: :meth:`init` did not run.
        """

    # user-defined networks and endpoints (libnetwork's model); the defaults refuse
    def create_network(self, spec: NetworkSpec) -> dict:
        """Create a user-defined network: its subnets (checked, or chosen from the default address pools),
        its data path and its rules, recorded so that :meth:`init` makes them again after a restart.

        :returns: the network as ``GET /networks`` lists it (NetworkResource, API 1.41; ``Containers`` empty).
        :raises InvalidParameter: malformed IPAM configuration or options (moby's words).
        :raises Forbidden: the subnet overlaps another network's (``PoolOverlap``), the data path
            (bridge name) is another network's, or more subnets of a family than the driver supports.
        :raises Unavailable: no subnet of the default address pools is free (``NoFreePool``).
        :raises Conflict: a network with this ID exists.
        :raises NotSupported: the driver has only its default network, or :meth:`init` did not run.
        :raises HostError: the host refused; nothing is left half-made.
        """
        raise NotSupported(f"the {self.name} network driver does not support user-defined networks")

    def delete_network(self, network_id: str) -> None:
        """Remove a user-defined network and everything the driver made for it.

        :raises NotFound: no such network.
        :raises Forbidden: containers are still joined to it ("has active endpoints"), or it is the
            default network.
        :raises HostError: something could not be removed; the record stays for another try.
        :raises NotSupported: no user-defined networks, or :meth:`init` did not run.
        """
        raise NotSupported(f"the {self.name} network driver does not support user-defined networks")

    def join(self, network_id: str, container_id: str, request: Mapping[str, Any]) -> dict:
        """Give a container an endpoint on a network: an interface in its namespace with an address there.

        The interface is the lowest ``ethN`` the container has no endpoint
        with; it is up with the address(es), MAC and MTU returned.

        :param request: ``NetnsPath`` (required), ``Name`` (the container's, for messages and
            ``/networks``), ``IPv4Address`` and ``IPv6Address`` (requested; an IPv6 address on a
            network without IPv6 is ignored, as libnetwork does), ``MacAddress``, ``DefaultRoute``
            (the namespace's default routes go via this network's gateways, and ports published
            with :meth:`allocate_ports` are published here).
        :returns: ``NetworkID``, ``EndpointID``, ``IPAddress``, ``IPPrefixLen``, ``Gateway``,
            ``GlobalIPv6Address``, ``GlobalIPv6PrefixLen``, ``IPv6Gateway``, ``MacAddress``,
            ``Interface``, ``HostVeth``, ``SandboxKey``, ``Bridge``, ``Mtu``.
        :raises NotFound: no such network.
        :raises Forbidden: the container is on the network already, or the requested address is taken.
        :raises InvalidParameter: no namespace, a malformed address or MAC, an address outside the subnet.
        :raises Unavailable: no address is left.
        :raises HostError: the host refused; nothing is left half-made.
        :raises NotSupported: no user-defined networks, or :meth:`init` did not run.
        """
        raise NotSupported(f"the {self.name} network driver does not support user-defined networks")

    def leave(self, network_id: str, container_id: str) -> None:
        """Take a container's endpoint off a network (its interface, address, ports and link rules).

        Safe for a container that is not on the network. When the endpoint
        carried the default routes, the namespace has none until
        :meth:`set_gateway` names another.

        :raises NotFound: no such network.
        :raises HostError: something could not be removed (the record stays for another try).
        :raises NotSupported: no user-defined networks, or :meth:`init` did not run.
        """
        raise NotSupported(f"the {self.name} network driver does not support user-defined networks")

    def set_gateway(self, container_id: str, network_id: str | None) -> None:
        """Route the container's default traffic through its endpoint on ``network_id`` (None: no default route).

        Ports published with :meth:`allocate_ports` move along with the
        same host ports.

        :raises NotFound: the container has no endpoint on that network.
        :raises HostError: the host refused.
        :raises NotSupported: no user-defined networks, or :meth:`init` did not run.
        """
        raise NotSupported(f"the {self.name} network driver does not support user-defined networks")

    def configured_subnets(self, network_id: str) -> list[str]:
        """The subnets the network was created with (``IPAM.Config[].Subnet`` as asked for, not chosen by the
        IPAM): a container may ask for an address only on such a network (moby's rule).

        Raises nothing: an unknown network has none.
        """
        for net in self.networks():
            if net.get("Id") == network_id:
                return [c["Subnet"] for c in (net.get("IPAM") or {}).get("Config") or [] if c.get("Subnet")]
        return []

    def endpoints(self, container_id: str) -> dict[str, dict]:
        """The container's endpoints: network ID -> settings (as :meth:`join` returns, plus ``Ports``).

        Raises nothing.
        """
        settings = self.settings(container_id)
        return {settings.get("NetworkID", ""): settings} if settings else {}

    def link_env(self, name: str, child_ip: str, ports: Iterable[str], child_env: Iterable[str] = ()) -> list[str]:
        """The environment a linked container gets for one link (Docker's, see :func:`link_env`).

        :raises InvalidParameter: a malformed port.
        """
        return link_env(name, child_ip, ports, child_env)

    def restore(self, container_id: str) -> dict | None:
        """Re-adopt a running container's allocations (every endpoint) after a daemon restart.

        Nothing is reallocated: the addresses, MACs and host ports stay, and
        the container's ports are published again.

        :returns: its settings (as :meth:`settings`), or None if the driver
            holds nothing for it.
        :raises NotSupported: :meth:`init` did not run. Problems with one
            container's parts are logged, not raised.
        """
        return None

    def prune(self, keep: Collection[str]) -> list[str]:
        """Release every container not in ``keep``; return their IDs.

        :raises NotSupported: :meth:`init` did not run. A container that
            cannot be released is logged and kept for the next try.
        """
        return []

    def settings(self, container_id: str) -> dict | None:
        """The settings of the container's endpoint with the default routes (as :meth:`allocate_interface`
        returns) plus ``Ports``, or None.

        Raises nothing.
        """
        return None

    def networks(self) -> list[dict]:
        """The networks this driver provides, as ``GET /networks`` lists them (API 1.41): the default
        network (named ``bridge``) first, then the user-defined ones.

        Each lists its containers under ``Containers`` (ID -> ``Name``,
        ``EndpointID``, ``MacAddress``, ``IPv4Address`` and ``IPv6Address``
        as ``ip/prefix``).

        :raises NotSupported: :meth:`init` did not run.
        """
        return []

    def close(self) -> None:
        """Let go without touching the host: the daemon stops, containers keep running.

        Raises nothing.
        """

    def shutdown(self) -> None:
        """Undo everything the driver set up on the host (interfaces, rules, proxies).

        Raises nothing: what cannot be undone is logged.
        """


def parse_link_ports(ports: Iterable[str]) -> list[tuple[int, int, str]]:
    """``["80/tcp", "8000-8002/udp", "53"]`` -> ``[(80, 80, "tcp"), (8000, 8002, "udp"), (53, 53, "tcp")]``.

    :raises InvalidParameter: a port that is not a number or a range of them in 1-65535.
    """
    out = []
    for text in ports:
        port, _, proto = str(text).strip().partition("/")
        proto = (proto or "tcp").lower()
        lo, sep, hi = port.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise InvalidParameter(f"invalid port {text!r} for a link")
        first, last = int(lo), int(hi) if sep else int(lo)
        if not 0 < first <= last < 65536:
            raise InvalidParameter(f"invalid port {text!r} for a link")
        out.append((first, last, proto))
    return out


def _sorted_ports(ports: Iterable[str]) -> list[tuple[int, str]]:
    """Single ports, tcp before other protocols, then by number (moby's withTCPPriority)."""
    singles = {(n, proto) for first, last, proto in parse_link_ports(ports) for n in range(first, last + 1)}
    return sorted(singles, key=lambda p: (p[1] != "tcp", p[1], p[0]))


def link_env(name: str, child_ip: str, ports: Iterable[str], child_env: Iterable[str] = ()) -> list[str]:
    """Docker's environment variables for one container link (seed ch. 6 §3.3.9).

    ``docker run --link db:db web`` gives ``web`` variables describing ``db``::

        DB_NAME=/web/db
        DB_PORT=tcp://172.17.0.2:5432                 the lowest port, tcp first
        DB_PORT_5432_TCP=tcp://172.17.0.2:5432        for every exposed port
        DB_PORT_5432_TCP_ADDR=172.17.0.2
        DB_PORT_5432_TCP_PORT=5432
        DB_PORT_5432_TCP_PROTO=tcp
        DB_PORT_8000_TCP_START=tcp://...:8000         a run of consecutive ports also
        DB_PORT_8000_TCP_PORT_START=8000              gets _START/_END (and _PORT_START,
        DB_PORT_8000_TCP_END=tcp://...:8002           _PORT_END) under its first port
        DB_PORT_8000_TCP_PORT_END=8002
        DB_ENV_POSTGRES_USER=app                      the child's own env, HOME and PATH left out

    The alias is upper-cased with ``-`` turned into ``_``.

    :param name: the link's full name, ``/parent/alias``; the alias is its
        last element.
    :param child_ip: the linked (child) container's address.
    :param ports: the child's exposed ports, ``"80/tcp"``.
    :param child_env: the child's ``Config.Env`` (``KEY=value``).
    :raises InvalidParameter: a malformed port.
    """
    alias = name.rstrip("/").rsplit("/", 1)[-1].upper().replace("-", "_")
    ordered = _sorted_ports(ports)
    env: list[str] = []
    if ordered:
        n, proto = ordered[0]
        env.append(f"{alias}_PORT={proto}://{child_ip}:{n}")
    run_start: tuple[int, str] | None = None
    run_end: tuple[int, str] | None = None

    def close_run() -> None:
        if run_start is not None and run_end is not None and run_start != run_end:
            prefix = f"{alias}_PORT_{run_start[0]}_{run_start[1].upper()}"
            env.append(f"{prefix}_START={run_start[1]}://{child_ip}:{run_start[0]}")
            env.append(f"{prefix}_PORT_START={run_start[0]}")
            env.append(f"{prefix}_END={run_end[1]}://{child_ip}:{run_end[0]}")
            env.append(f"{prefix}_PORT_END={run_end[0]}")

    for n, proto in ordered:
        prefix = f"{alias}_PORT_{n}_{proto.upper()}"
        env.append(f"{prefix}={proto}://{child_ip}:{n}")
        env.append(f"{prefix}_ADDR={child_ip}")
        env.append(f"{prefix}_PORT={n}")
        env.append(f"{prefix}_PROTO={proto}")
        if run_end is not None and proto == run_end[1] and n == run_end[0] + 1:
            run_end = (n, proto)
            continue
        close_run()
        run_start = run_end = (n, proto)
    close_run()
    env.append(f"{alias}_NAME={name}")
    for item in child_env:
        key, sep, value = str(item).partition("=")
        # Set by image builds for the child's own use; meaningless in the parent.
        if not sep or key in ("HOME", "PATH"):
            continue
        env.append(f"{alias}_ENV_{key}={value}")
    return env


def home(root: str, name: str) -> str:  # noqa: ARG001 (the same shape for every kind)
    """The network driver's state directory: ``<root>/network``, whatever its name."""
    return os.path.join(root, "network")


def probe(entry: DriverEntry, config: DriverConfig) -> None:
    """Probe an installed network driver in its home with the network options.

    :raises DriverSelectionError: it failed to load.
    :raises NotSupported: (or a subclass) it cannot run here.
    """
    probe_entry(entry, home(config.root, entry.name), config.network_options or NetworkOptions())


def plan(config: DriverConfig, drivers: Mapping[str, DriverEntry]) -> Selection:
    """The network driver, or none: ``-b none``, or the default driver is not installed.

    :returns: a selection whose ``entry`` is None when no driver runs
        (containers then get only ``lo``).
    :raises DriverSelectionError: the driver failed to load or cannot run here.
    """
    name = config.network_driver
    if not name:
        return Selection("network", None, "networking disabled (-b none)")
    if name not in drivers:
        LOG.warning("no %s network driver is installed: containers get only lo", name)
        return Selection("network", None, f"no {name} network driver is installed: containers get only lo")
    options = config.network_options or NetworkOptions()
    return named(
        "network",
        name,
        "default",
        drivers,
        home(config.root, name),
        options,
        remedy=" (use -b none to run without networking)",
    )
