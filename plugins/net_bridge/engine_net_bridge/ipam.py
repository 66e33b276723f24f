"""Addresses: the bridge's network, container addresses within it, MAC addresses.

The bridge's address is ``--bip``, or the first of Docker 1.2's candidate
ranges (seed ch. 6 §3.3.5) that overlaps neither a route of the main table
nor a nameserver: a container network that shadows the way to the DNS
server or to another network of the host would cut the host off.

Container addresses come from the bridge's subnet, or from ``--fixed-cidr``
inside it, never the network or broadcast address nor the gateway
(:class:`engine.drivers.ipam.AddressPool`, round robin here). The allocator
itself keeps no state: the driver passes the set of addresses in use, which
it reads back from its endpoint files, so a restarted daemon cannot hand out
an address that a running container holds. User-defined networks get their
subnets and addresses from :mod:`engine.drivers.ipam` (the default address
pools).
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from engine.drivers.ipam import AddressesExhausted, AddressPool
from engine.errors import HostError, InvalidParameter

__all__ = [
    "CANDIDATES",
    "AddressesExhausted",
    "NoFreeRange",
    "Pool",
    "choose_bridge_address",
    "mac_for",
    "parse_interface",
    "parse_mac",
    "random_mac",
    "read_nameservers",
]

LOG = logging.getLogger(__name__)

#: Docker 1.2's candidates for the bridge (``bridge/driver.go``). The
#: gateway is .42.1 rather than .1 so that the /16 ranges keep the gateway
#: addresses of the /24 ranges they replaced. (The seed's copy of this list
#: is garbled at the end: "190.168.42.1" and a repeated "192.168.44.1".)
CANDIDATES: tuple[str, ...] = (
    "172.17.42.1/16",  # not 172.16.0.0/16: it holds EC2's DNS server 172.16.0.23
    "10.0.42.1/16",  # not the whole of 10/8, that would be too intrusive
    "10.1.42.1/16",
    "10.42.42.1/16",
    "172.16.42.1/24",
    "172.16.43.1/24",
    "172.16.44.1/24",
    "10.0.42.1/24",
    "10.0.43.1/24",
    "192.168.42.1/24",
    "192.168.43.1/24",
    "192.168.44.1/24",
)


class NoFreeRange(HostError):
    """Every candidate range overlaps a route or a nameserver."""


def read_nameservers(path: str) -> list[IPv4Address]:
    """The IPv4 ``nameserver`` entries of a resolv.conf (none if it is missing)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return []
    found: list[IPv4Address] = []
    for line in lines:
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(fields[1].split("%", 1)[0])
            except ValueError:
                continue
            if isinstance(addr, IPv4Address):
                found.append(addr)
    return found


def parse_interface(value: str, what: str) -> IPv4Interface:
    """Parse ``172.17.42.1/16`` (an address with its prefix length, as ``--bip`` takes).

    :raises InvalidParameter: naming ``what`` (``--bip``).
    """
    try:
        iface = ipaddress.ip_interface(value.strip())
    except ValueError:
        raise InvalidParameter(
            f"invalid {what} {value!r}: want an IPv4 address with a prefix length, like 172.17.42.1/16"
        ) from None
    if not isinstance(iface, IPv4Interface) or "/" not in value:
        raise InvalidParameter(
            f"invalid {what} {value!r}: want an IPv4 address with a prefix length, like 172.17.42.1/16"
        )
    if iface.network.prefixlen > 30:
        raise InvalidParameter(
            f"invalid {what} {value!r}: a /{iface.network.prefixlen} leaves no address for containers; use /30 or wider"
        )
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise InvalidParameter(
            f"invalid {what} {value!r}: that is the network's "
            f"{'network' if iface.ip == iface.network.network_address else 'broadcast'} "
            f"address; pick a host address"
        )
    return iface


def choose_bridge_address(
    bridge: str,
    routes: Iterable[IPv4Network],
    nameservers: Iterable[IPv4Address],
    candidates: Iterable[str] = CANDIDATES,
) -> IPv4Interface:
    """The first candidate that overlaps neither a route nor a nameserver.

    :raises NoFreeRange: with Docker's remedy (give an address, run with ``-b``).
    """
    routes = list(routes)
    nameservers = list(nameservers)
    for text in candidates:
        candidate = IPv4Interface(text)
        net = candidate.network
        clash_ns = next((ns for ns in nameservers if ns in net), None)
        if clash_ns is not None:
            LOG.debug("bridge range %s overlaps nameserver %s", text, clash_ns)
            continue
        clash_route = next((r for r in routes if r.overlaps(net)), None)
        if clash_route is not None:
            LOG.debug("bridge range %s overlaps route %s", text, clash_route)
            continue
        return candidate
    raise NoFreeRange(
        f"Could not find a free IP address range for interface '{bridge}'. Please configure "
        f"its address manually and run 'engine -d -b {bridge}' (or give one with --bip)"
    )


def mac_for(ip: IPv4Address) -> str:
    """Docker's container MAC: ``02:42`` then the four bytes of the address.

    Locally administered and unicast, and unique on the bridge because the
    address is.
    """
    return ":".join(f"{b:02x}" for b in (0x02, 0x42, *ip.packed))


def random_mac() -> str:
    """A random locally administered unicast MAC (for the bridge itself)."""
    raw = bytearray(secrets.token_bytes(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def parse_mac(value: str) -> str:
    """Normalize ``02:42:AC:11:00:02``; refuse multicast and malformed ones."""
    parts = value.strip().replace("-", ":").split(":")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raw = b""
    if len(parts) != 6 or len(raw) != 6 or any(len(p) not in (1, 2) for p in parts):
        raise InvalidParameter(f"invalid MAC address {value!r}")
    if raw[0] & 1:
        raise InvalidParameter(f"invalid MAC address {value!r}: it is a multicast address")
    return ":".join(f"{b:02x}" for b in raw)


class Pool(AddressPool):
    """Container addresses of the default bridge network, round robin (Docker 1.2's allocator).

    :param subnet: the bridge's network.
    :param gateway: the bridge's own address.
    :param fixed: ``--fixed-cidr``: hand out addresses from this part only.
    """

    def __init__(self, subnet: IPv4Network, gateway: IPv4Address, fixed: IPv4Network | None = None) -> None:
        if fixed is not None and not fixed.subnet_of(subnet):
            raise InvalidParameter(
                f"fixed-cidr {fixed} is not inside the bridge's subnet {subnet}: "
                f"choose a range inside it or change --bip"
            )
        # Round robin from the last address handed out, as Docker's
        # ipallocator: a released address is not reused at once, so a stale
        # connection or ARP entry does not reach the next container.
        super().__init__(subnet, gateway, fixed, serial=True)
