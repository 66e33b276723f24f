"""IP address management for network drivers: address pools, subnets and addresses (libnetwork's default IPAM).

A network driver that provides user-defined networks (``docker network
create``) gives each network a subnet per address family and each endpoint
an address in it. This module is the part of that any driver can share; it
keeps no state of its own: the driver passes what is in use, read back from
its own records, so a restarted daemon never hands out twice what a running
container holds.

Subnets. ``--subnet`` (``IPAM.Config[].Subnet``) is used as given once it is
valid (:func:`validate_ipam`, with moby's words) and overlaps no other
network's subnet ("Pool overlaps with other one on this address space",
403). Without one, :func:`choose_subnet` takes the first subnet of the
daemon's *default address pools* that overlaps neither another network nor a
route of the host (a network that shadows a route would cut the host off
from what the route leads to). The pools are Docker's, in order::

    172.17.0.0/16 ... 172.31.0.0/16      the /16s of 172.16.0.0/12 past 172.16
    192.168.0.0/20 ... 192.168.240.0/20  192.168.0.0/16 split in /20s

or ``default-address-pools`` in daemon.json (``--default-address-pool
base=10.10.0.0/16,size=24``), which replaces them (:func:`parse_pools`).

Addresses. :class:`AddressPool` hands out addresses of one subnet: the
gateway (the subnet's first host address unless ``Gateway`` says
otherwise), the network and broadcast addresses and the ``AuxiliaryAddresses``
are never given to a container; addresses come from ``IPRange`` when it is
set, else from the whole subnet; a requested address (``--ip``) may be
anywhere in the subnet. Dynamic allocation takes the lowest free address, as
libnetwork's default IPAM; ``serial`` pools go round robin from the last one
handed out instead (Docker 1.2's allocator, which the default bridge keeps).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from engine.errors import Conflict, Forbidden, InvalidParameter, Unavailable

__all__ = [
    "DEFAULT_POOLS",
    "AddressInUse",
    "AddressPool",
    "AddressesExhausted",
    "IPAMConfig",
    "NoFreePool",
    "PoolOverlap",
    "PoolSpec",
    "choose_subnet",
    "parse_pools",
    "pool_from_config",
    "validate_ipam",
]

LOG = logging.getLogger(__name__)

IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True)
class PoolSpec:
    """One default address pool: ``base`` split into subnets of prefix length ``size``."""

    base: str
    size: int

    def network(self) -> IPNetwork:
        return ipaddress.ip_network(self.base, strict=False)

    def subnets(self) -> Iterator[IPNetwork]:
        net = self.network()
        if self.size <= net.prefixlen:
            yield net
            return
        yield from net.subnets(new_prefix=self.size)


#: Docker's default address pools for local networks (libnetwork ``ipamutils``).
DEFAULT_POOLS: tuple[PoolSpec, ...] = (
    PoolSpec("172.17.0.0/16", 16),
    PoolSpec("172.18.0.0/16", 16),
    PoolSpec("172.19.0.0/16", 16),
    PoolSpec("172.20.0.0/14", 16),
    PoolSpec("172.24.0.0/14", 16),
    PoolSpec("172.28.0.0/14", 16),
    PoolSpec("192.168.0.0/16", 20),
)


class PoolOverlap(Forbidden):
    """A requested subnet overlaps another network's."""


class NoFreePool(Unavailable):
    """Every subnet of the default address pools is taken."""


class AddressInUse(Conflict, Forbidden):
    """A requested address is taken: a conflict, which libnetwork answers with 403 (``ErrIPAlreadyAllocated``)."""

    http_status = 403


class AddressesExhausted(Unavailable):
    """Every address of a pool is in use."""


@dataclass(frozen=True)
class IPAMConfig:
    """One entry of a network's ``IPAM.Config``, as asked for (empty strings: the IPAM chooses)."""

    subnet: str = ""
    ip_range: str = ""
    gateway: str = ""
    aux_addresses: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_api(cls, doc: Mapping[str, Any]) -> IPAMConfig:
        """From the API's ``{"Subnet", "IPRange", "Gateway", "AuxiliaryAddresses"}`` (``AuxAddress`` too)."""
        aux = doc.get("AuxiliaryAddresses") or doc.get("AuxAddress") or {}
        if not isinstance(aux, Mapping):
            raise InvalidParameter("invalid network config: AuxiliaryAddresses must be an object of name: address")
        return cls(
            subnet=str(doc.get("Subnet") or ""),
            ip_range=str(doc.get("IPRange") or ""),
            gateway=str(doc.get("Gateway") or ""),
            aux_addresses={str(k): str(v) for k, v in aux.items()},
        )

    def to_api(self) -> dict[str, Any]:
        """Docker's spelling; empty fields left out, as dockerd lists them."""
        out: dict[str, Any] = {"Subnet": self.subnet}
        if self.ip_range:
            out["IPRange"] = self.ip_range
        if self.gateway:
            out["Gateway"] = self.gateway
        if self.aux_addresses:
            out["AuxiliaryAddresses"] = dict(self.aux_addresses)
        return out

    @property
    def version(self) -> int:
        """4 or 6 by the subnet (4 when the subnet is left to the IPAM)."""
        return ipaddress.ip_network(self.subnet, strict=False).version if self.subnet else 4


def parse_pools(value: Any) -> tuple[PoolSpec, ...]:
    """``default-address-pools``: ``[{"base": "10.10.0.0/16", "size": 24}, ...]`` (daemon.json) or
    ``["base=10.10.0.0/16,size=24", ...]`` (``--default-address-pool`` flags).

    :raises InvalidParameter: with dockerd's words for a malformed entry.
    """
    if value in (None, "", []):
        return ()
    if isinstance(value, (str, Mapping)):
        value = [value]
    out = []
    for item in value:
        if isinstance(item, str):
            doc: dict[str, Any] = {}
            for part in item.split(","):
                key, sep, val = part.partition("=")
                if not sep:
                    raise InvalidParameter(f"invalid field '{part}' must be a key=value pair")
                key = key.strip().lower()
                if key not in ("base", "size"):
                    raise InvalidParameter(f"unexpected key '{key}' in '{part}'")
                doc[key] = val.strip()
        elif isinstance(item, Mapping):
            doc = {str(k).lower(): v for k, v in item.items()}
        else:
            raise InvalidParameter(f'invalid default address pool {item!r}: want {{"base": CIDR, "size": N}}')
        base, size = str(doc.get("base") or ""), doc.get("size")
        try:
            net = ipaddress.ip_network(base, strict=False)
        except ValueError:
            raise InvalidParameter(f"invalid base pool {base!r}: want a CIDR like 10.10.0.0/16") from None
        try:
            size = int(size if size is not None else "")
        except (TypeError, ValueError):
            raise InvalidParameter(f"invalid size value: {size!r} (must be integer)") from None
        if not net.prefixlen <= size <= net.max_prefixlen:
            raise InvalidParameter(f"invalid pools size: {size} (the base {base} is a /{net.prefixlen})")
        out.append(PoolSpec(str(net), size))
    return tuple(out)


def _net(text: str, what: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidParameter(f"invalid {what} {text}: invalid CIDR block notation") from None


def validate_ipam(configs: Sequence[IPAMConfig]) -> None:
    """Check ``IPAM.Config`` as moby does (``api/types/network.ValidateIPAM``); nothing is allocated.

    :raises InvalidParameter: ``invalid network config:`` and one line per problem.
    """
    errors: list[str] = []
    for cfg in configs:
        if not cfg.subnet:
            if cfg.ip_range or cfg.gateway or cfg.aux_addresses:
                errors.append("invalid network config: an ip-range, gateway or auxiliary address needs a subnet")
            continue
        try:
            iface = ipaddress.ip_interface(cfg.subnet)
        except ValueError:
            errors.append(f"invalid subnet {cfg.subnet}: invalid CIDR block notation")
            continue
        subnet = iface.network
        family = f"IPv{subnet.version}"
        if iface.ip != subnet.network_address:
            errors.append(f"invalid subnet {cfg.subnet}: it should be {subnet}")
        if cfg.ip_range:
            try:
                rng = ipaddress.ip_interface(cfg.ip_range)
            except ValueError:
                errors.append(f"invalid ip-range {cfg.ip_range}: invalid CIDR block notation")
            else:
                if rng.version != subnet.version:
                    errors.append(f"invalid ip-range {cfg.ip_range}: parent subnet is an {family} block")
                elif rng.network.prefixlen < subnet.prefixlen:
                    errors.append(
                        f"invalid ip-range {cfg.ip_range}: CIDR block is bigger than its parent subnet {subnet}"
                    )
                elif rng.ip != rng.network.network_address:
                    errors.append(f"invalid ip-range {cfg.ip_range}: it should be {rng.network}")
                elif not rng.network.subnet_of(subnet):  # type: ignore[arg-type]
                    errors.append(f"invalid ip-range {cfg.ip_range}: parent subnet {subnet} doesn't contain ip-range")
        named = [("gateway", cfg.gateway)] if cfg.gateway else []
        named += [(f"auxiliary address {name}", addr) for name, addr in cfg.aux_addresses.items()]
        for what, text in named:
            problem = _address_problem(text, subnet, family)
            if problem:
                errors.append(f"invalid {what} {text}: {problem}")
    if errors:
        raise InvalidParameter("invalid network config:\n" + "\n".join(errors))


def _address_problem(text: str, subnet: IPNetwork, family: str) -> str:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return "invalid address"
    if addr.version != subnet.version:
        return f"parent subnet is an {family} block"
    if addr not in subnet:
        return f"parent subnet {subnet} doesn't contain this address"
    return ""


def check_overlap(subnet: IPNetwork, taken: Iterable[IPNetwork]) -> None:
    """Refuse a requested subnet that overlaps another network's (libnetwork's ``ErrPoolOverlap``).

    :raises PoolOverlap: 403, in libnetwork's words.
    """
    for other in taken:
        if other.version == subnet.version and other.overlaps(subnet):
            raise PoolOverlap("Pool overlaps with other one on this address space")


def choose_subnet(
    pools: Sequence[PoolSpec], taken: Iterable[IPNetwork], avoid: Iterable[IPNetwork] = (), version: int = 4
) -> IPNetwork:
    """The first subnet of ``pools`` of this IP ``version`` that overlaps nothing in ``taken`` or ``avoid``.

    :param taken: the subnets of the other networks.
    :param avoid: the host's routes (and nameservers as /32s).
    :raises NoFreePool: with moby's words.
    """
    blocked = [n for n in [*taken, *avoid] if n.version == version]
    for spec in pools:
        if spec.network().version != version:
            continue
        for candidate in spec.subnets():
            if not any(candidate.overlaps(b) for b in blocked):
                return candidate
    family = "IPv4" if version == 4 else "IPv6"
    raise NoFreePool(
        f"could not find an available, non-overlapping {family} address pool among the defaults to assign to the "
        f"network"
    )


class AddressPool:
    """Addresses of one subnet: the gateway, reserved ones, an optional range to hand out from.

    :param subnet: the network.
    :param gateway: the network's own address (never handed out).
    :param ip_range: hand out addresses from this part only (``--ip-range``, ``--fixed-cidr``).
    :param reserved: more addresses never handed out (``--aux-address``).
    :param serial: round robin from the last address handed out instead of the lowest free one.
    """

    def __init__(
        self,
        subnet: IPNetwork,
        gateway: IPAddress | None = None,
        ip_range: IPNetwork | None = None,
        reserved: Collection[IPAddress] = (),
        serial: bool = False,
    ) -> None:
        if ip_range is not None and not ip_range.subnet_of(subnet):  # type: ignore[arg-type]
            raise InvalidParameter(f"invalid ip-range {ip_range}: parent subnet {subnet} doesn't contain ip-range")
        self.subnet = subnet
        self.gateway = gateway
        self.range = ip_range if ip_range is not None else subnet
        self.reserved = frozenset(reserved)
        self.serial = serial
        # The first pass starts at the range's second host address (a
        # gateway usually sits at the first).
        self._last = int(self.range.network_address) + 1

    def usable(self, addr: IPAddress) -> bool:
        """Whether ``addr`` may be given to a container (in the subnet, not a reserved address)."""
        if addr not in self.subnet or addr == self.gateway or addr in self.reserved:
            return False
        if addr == self.subnet.network_address:
            return False
        # IPv6 has no broadcast address; a /31 or /32 (/127, /128) has no network/broadcast pair either.
        return not (self.subnet.version == 4 and self.subnet.prefixlen < 31 and addr == self.subnet.broadcast_address)

    def allocate(self, in_use: Collection[IPAddress], requested: IPAddress | None = None) -> IPAddress:
        """A free address, or ``requested`` checked.

        :raises InvalidParameter: ``requested`` is outside the subnet or reserved
            ("Requested address is out of range", libnetwork's words).
        :raises AddressInUse: ``requested`` is taken.
        :raises AddressesExhausted: nothing is left.
        """
        if requested is not None:
            if requested.version != self.subnet.version or not self.usable(requested):
                raise InvalidParameter(
                    f"Requested address is out of range: {requested} is not a usable address of {self.subnet}"
                )
            if requested in in_use:
                raise AddressInUse(f"Address already in use: {requested}")
            return requested
        first, last = int(self.range.network_address), int(self.range.broadcast_address)
        size = last - first + 1
        start = self._last + 1 if self.serial else first
        # A /64 has 2**64 addresses: any window of this many holds a free
        # one unless the range is smaller (at most the network, gateway and
        # broadcast addresses are unusable besides those in use or reserved).
        limit = min(size, len(in_use) + len(self.reserved) + 4)
        make = type(self.subnet.network_address)
        for step in range(limit):
            value = first + (start - first + step) % size
            addr = make(value)
            if self.usable(addr) and addr not in in_use:
                self._last = value
                return addr
        raise AddressesExhausted(f"No available addresses on this pool: every address of {self.range} is in use")


def pool_from_config(
    cfg: IPAMConfig, default_gateway: bool = True, serial: bool = False
) -> tuple[AddressPool, IPAddress | None]:
    """The :class:`AddressPool` of a validated, complete ``IPAM.Config`` entry, and its gateway.

    :param default_gateway: without ``Gateway``, use the subnet's first host address.
    """
    subnet = ipaddress.ip_network(cfg.subnet, strict=False)
    if cfg.gateway:
        gateway: IPAddress | None = ipaddress.ip_address(cfg.gateway)
    elif default_gateway:
        gateway = subnet.network_address + 1
    else:
        gateway = None
    ip_range = ipaddress.ip_network(cfg.ip_range, strict=False) if cfg.ip_range else None
    reserved = [ipaddress.ip_address(a) for a in cfg.aux_addresses.values()]
    return AddressPool(subnet, gateway, ip_range, reserved, serial=serial), gateway
