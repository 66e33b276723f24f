"""The network driver contract (seed ch. 6): one driver is active.

The daemon registers the active driver's methods as the seed's jobs
``init_networkdriver``, ``allocate_interface``, ``release_interface``,
``allocate_port``, ``release_port`` and ``link``.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Mapping

from engine.errors import NotSupported

__all__ = ["NetworkDriver", "NotSupported"]


class NetworkDriver(abc.ABC):
    """Gives containers their network: bridge, addresses, ports, links.

    :param home: the driver's state directory (``<root>/network``), where
        allocations are kept so that a restarted daemon reuses them.
    :param config: the daemon's configuration.
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
        """Set up the host side (bridge, iptables, forwarding); return facts
        about it (bridge name, address) for ``/info`` and inspect."""

    @abc.abstractmethod
    def allocate_interface(self, container_id: str, request: Mapping[str, Any]) -> dict:
        """Reserve an address for a container and return its settings.

        :param request: ``RequestedIP``, ``RequestedMac``, ``NetnsPath``...
        :returns: ``IPAddress``, ``IPPrefixLen``, ``Gateway``, ``MacAddress``,
            ``Bridge``, ``Mtu``.
        """

    @abc.abstractmethod
    def release_interface(self, container_id: str) -> None:
        """Give back the container's address, ports and interface."""

    @abc.abstractmethod
    def allocate_port(self, container_id: str, binding: Mapping[str, Any]) -> dict:
        """Publish a container port; returns the binding actually made
        (``HostIp``, ``HostPort``).

        :raises Conflict: the host port is already allocated.
        """

    @abc.abstractmethod
    def link(self, parent: Mapping[str, Any], child: Mapping[str, Any], ports: list[str], enable: bool) -> None:
        """Allow (or stop allowing) ``parent`` to reach ``child``'s ports."""

    def shutdown(self) -> None:
        """Release host resources the driver set up (rules, proxies)."""
