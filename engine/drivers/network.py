"""The network driver contract (seed ch. 6): one driver is active.

The daemon registers the active driver's methods as the seed's jobs
``init_networkdriver`` (:meth:`NetworkDriver.init`), ``allocate_interface``,
``release_interface``, ``allocate_port``, ``release_port``
(:meth:`NetworkDriver.release_ports`) and ``link``. ``-b none`` means no
driver is loaded at all; ``host``, ``none`` and ``container:`` network modes
never reach the driver.

Life cycle, as the daemon drives it::

    probe(config)                     class method; NotSupported -> not loaded
    driver = Driver(home, config)     home = <root>/network
    driver.init()                     bridge, iptables, forwarding
    driver.restore(id) ...            each container still running (live shim)
    driver.prune(running_ids)         forget containers that died meanwhile
    allocate_interface / allocate_ports / link ...   container start
    release_interface                 container stop
    driver.close()                    daemon stops, containers keep running
    driver.shutdown()                 or: undo everything on the host

Every dict the driver returns uses the Docker Remote API's key spelling, so
the daemon can put it into ``NetworkSettings`` and ``GET /networks`` as is.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar

from engine.errors import NotSupported

__all__ = ["NetworkDriver", "NotSupported"]


class NetworkDriver(abc.ABC):
    """Gives containers their network: bridge, addresses, ports, links.

    :param home: the driver's state directory (``<root>/network``), where
        allocations are kept so that a restarted daemon reuses them.
    :param config: the daemon's configuration (:class:`engine.daemon.config.Config`).
    """

    name: ClassVar[str] = ""

    def __init__(self, home: str, config: Any) -> None:
        self.home = home
        self.config = config

    @classmethod
    def probe(cls, config: Any) -> None:
        """Raise :class:`NotSupported` with the reason if the host cannot run it."""

    @abc.abstractmethod
    def init(self) -> dict:
        """Set up the host side (bridge, iptables, forwarding).

        Rules a previous instance left (after a crash or :meth:`close`) are
        removed and made again; containers' own rules come back with
        :meth:`restore`.

        :returns: facts for ``/info`` and inspect: ``Bridge``, ``IPAddress``
            (the gateway), ``IPPrefixLen``, ``Subnet``, ``Gateway``,
            ``FixedCIDR``, ``Mtu``, ``MacAddress``, ``NetworkID``.
        """

    @abc.abstractmethod
    def allocate_interface(self, container_id: str, request: Mapping[str, Any]) -> dict:
        """Give a container an address and an ``eth0`` in its network namespace.

        :param request: ``NetnsPath`` (required: the file the namespace is
            bound to), ``Name`` (the container's name, for messages and
            ``/networks``), ``RequestedIP`` and ``RequestedMac`` (optional).
        :returns: ``IPAddress``, ``IPPrefixLen``, ``Gateway``, ``MacAddress``,
            ``Bridge``, ``Mtu``, ``EndpointID``, ``NetworkID``, ``HostVeth``,
            ``SandboxKey``.
        :raises Conflict: the requested address is in use.
        """

    @abc.abstractmethod
    def release_interface(self, container_id: str) -> None:
        """Give back the container's interface, address, ports, proxies and
        link rules. Safe to call twice, or for a container never allocated."""

    @abc.abstractmethod
    def allocate_ports(
        self, container_id: str, port_bindings: Mapping[str, Sequence[Mapping[str, Any]] | None]
    ) -> dict[str, list[dict]]:
        """Publish container ports, all or none.

        :param port_bindings: ``HostConfig.PortBindings``:
            ``{"80/tcp": [{"HostIp": "", "HostPort": "18080"}]}``. An empty
            ``HostPort`` picks an ephemeral port, ``"8000-8010"`` the first
            free one of the range, an empty ``HostIp`` the daemon's ``--ip``.
        :returns: what was bound, as ``NetworkSettings.Ports``:
            ``{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18080"}]}``.
        :raises Conflict: a host port is already allocated; nothing is left
            half-configured.
        """

    def allocate_port(self, container_id: str, binding: Mapping[str, Any]) -> dict:
        """Publish one container port (the seed's ``allocate_port`` job).

        :param binding: ``Port`` (``"80/tcp"``), ``HostIp``, ``HostPort``.
        :returns: ``Port``, ``HostIp``, ``HostPort`` as bound.
        """
        port = str(binding.get("Port") or "")
        made = self.allocate_ports(
            container_id, {port: [{"HostIp": binding.get("HostIp", ""), "HostPort": binding.get("HostPort", "")}]}
        )
        ((key, bound),) = made.items()
        return {"Port": key, **bound[0]}

    @abc.abstractmethod
    def release_ports(self, container_id: str) -> None:
        """Unpublish every port of a container, keeping its interface."""

    @abc.abstractmethod
    def link(
        self, parent: Mapping[str, Any] | str, child: Mapping[str, Any] | str, ports: Sequence[str], enable: bool
    ) -> None:
        """Allow (or stop allowing) ``parent`` to reach ``child``'s ports.

        :param parent: a container ID the driver allocated, or settings with
            at least ``IPAddress``.
        :param ports: ``"80/tcp"`` strings (the child's exposed ports).
        """

    def restore(self, container_id: str) -> dict | None:
        """Re-adopt a running container's allocations after a daemon restart.

        :returns: its settings (as :meth:`settings`), or None if the driver
            holds nothing for it.
        """
        return None

    def prune(self, keep: Collection[str]) -> list[str]:
        """Release every container not in ``keep``; return their IDs."""
        return []

    def settings(self, container_id: str) -> dict | None:
        """The container's current settings (as :meth:`allocate_interface`
        returns) plus ``Ports``, or None."""
        return None

    def networks(self) -> list[dict]:
        """The networks this driver provides, as ``GET /networks`` lists them (API 1.41)."""
        return []

    def close(self) -> None:
        """Let go without touching the host: the daemon stops, containers keep running."""

    def shutdown(self) -> None:
        """Undo everything the driver set up on the host (interfaces, rules, proxies)."""
