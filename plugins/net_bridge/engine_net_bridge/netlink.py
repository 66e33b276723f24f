"""Netlink through pyroute2: the bridge, veth pairs and a container's ``eth0``.

Every function opens its own ``IPRoute`` (``with IPRoute() as ipr:``); one
costs well under a millisecond, and pyroute2 objects are not meant to be
shared between the daemon's threads.

For a container's namespace we need a netlink socket *inside* it. pyroute2's
own ``IPRoute(netns=...)`` forks a helper process for that (about 9 ms, and a
fork of a multi-threaded daemon); instead a short-lived thread enters the
namespace with setns(2), which changes only that thread's namespace, opens
the socket there and comes back. A netlink socket stays bound to the
namespace it was created in (netlink(7)), so ``IPRoute(fileno=...)`` on it
works from any thread.

The veth pair is made in one request with its peer created directly in the
container's namespace (``VETH_INFO_PEER`` carrying ``IFLA_NET_NS_FD``), named
``eth0`` and with its MAC and MTU: nothing is ever visible on the host under
a temporary name, and there is no move-and-rename step to undo.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface
from typing import Any

from pyroute2 import IPRoute, NetlinkError

from engine.sys import libc

LOG = logging.getLogger(__name__)

RT_TABLE_MAIN = 254
IFF_UP = 0x1
#: ``IFA_F_NODAD``: an IPv6 address usable at once, without duplicate
#: address detection (the driver's IPAM already made it unique; DAD would
#: hold it "tentative" for a second or more).
IFA_F_NODAD = 0x02
#: ``IFLA_BRPORT_MODE`` value that lets a frame leave by the port it came in
#: (a container reaching its own published port without the proxy).
BRIDGE_MODE_HAIRPIN = 1


def _netlink_socket_in(path: str) -> socket.socket:
    """A NETLINK_ROUTE socket created inside the namespace bound at ``path``."""
    result: list[socket.socket] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            errors.append(exc)
            return
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                libc.setns(target, libc.CLONE_NEWNET)
                try:
                    result.append(
                        socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
                    )
                finally:
                    libc.setns(home, libc.CLONE_NEWNET)
            finally:
                os.close(target)
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)
        finally:
            os.close(home)

    thread = threading.Thread(target=worker, name="netns-netlink")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def iproute_in(path: str) -> IPRoute:
    """An ``IPRoute`` working in the network namespace bound at ``path``."""
    sock = _netlink_socket_in(path)
    try:
        return IPRoute(fileno=sock.detach())
    except BaseException:
        sock.close()
        raise


def link_index(ipr: IPRoute, name: str) -> int | None:
    """The index of link ``name``, or None."""
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def link_exists(name: str) -> bool:
    """Whether the daemon's namespace has a link called ``name``."""
    with IPRoute() as ipr:
        return link_index(ipr, name) is not None


def link_kind(ipr: IPRoute, index: int) -> str:
    """``bridge``, ``veth``, ``dummy``... or "" for a device without a kind (eth0 of a NIC)."""
    msg = ipr.get_links(index)[0]
    info = msg.get_attr("IFLA_LINKINFO")
    return (info.get_attr("IFLA_INFO_KIND") if info is not None else None) or ""


def link_attrs(ipr: IPRoute, index: int) -> dict[str, Any]:
    """``ifname``, ``mtu``, ``address``, ``up`` and ``master`` of a link."""
    msg = ipr.get_links(index)[0]
    return {
        "ifname": msg.get_attr("IFLA_IFNAME"),
        "mtu": msg.get_attr("IFLA_MTU"),
        "address": msg.get_attr("IFLA_ADDRESS"),
        "up": bool(msg["flags"] & IFF_UP),
        "master": msg.get_attr("IFLA_MASTER"),
    }


def ipv4_addresses(ipr: IPRoute, index: int) -> list[IPv4Interface]:
    """The IPv4 addresses of a link, primary first."""
    out = []
    for msg in ipr.get_addr(family=socket.AF_INET, index=index):
        out.append(IPv4Interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}"))
    return out


def main_routes(ipr: IPRoute) -> list[IPv4Network]:
    """Destinations of the main table's IPv4 routes, the default route left out."""
    out = []
    for msg in ipr.get_routes(family=socket.AF_INET):
        table = msg.get_attr("RTA_TABLE") or msg["table"]
        if table != RT_TABLE_MAIN or msg["dst_len"] == 0:
            continue
        out.append(IPv4Network(f"{msg.get_attr('RTA_DST')}/{msg['dst_len']}", strict=False))
    return out


def default_route_mtu(ipr: IPRoute) -> int | None:
    """The MTU of the default route's interface (seed ch. 4 §4.1.1), if there is one."""
    for msg in ipr.get_routes(family=socket.AF_INET):
        table = msg.get_attr("RTA_TABLE") or msg["table"]
        if table != RT_TABLE_MAIN or msg["dst_len"] != 0:
            continue
        oif = msg.get_attr("RTA_OIF")
        if oif is None:
            multipath = msg.get_attr("RTA_MULTIPATH")
            oif = multipath[0]["oif"] if multipath else None
        if oif is None:
            continue
        return int(link_attrs(ipr, oif)["mtu"])
    return None


def create_bridge(
    ipr: IPRoute, name: str, address: IPv4Interface, mtu: int, mac: str, address6: IPv6Interface | None = None
) -> int:
    """Create bridge ``name`` with ``mac`` (fixed, or it would follow its ports), its address(es) and up.

    :returns: its index. The bridge is deleted again if a later step fails.
    """
    # A bridge without an explicit MAC takes the lowest MAC of its ports and
    # changes it as containers come and go, which flushes every neighbour's
    # ARP entry for the gateway; a set MAC stays (Docker's setBridgeMacAddress).
    ipr.link("add", ifname=name, kind="bridge", address=mac, mtu=mtu)
    index = link_index(ipr, name)
    assert index is not None
    try:
        add_address(ipr, index, address)
        if address6 is not None:
            add_address(ipr, index, address6)
        ipr.link("set", index=index, state="up")
    except BaseException:
        try:
            ipr.link("del", index=index)
        except NetlinkError:
            pass
        raise
    return index


def add_address(ipr: IPRoute, index: int, address: IPv4Interface | IPv6Interface) -> None:
    """Add ``address`` (an IPv4 one with its broadcast address) unless the link has it."""
    try:
        if isinstance(address, IPv6Interface):
            ipr.addr(
                "add",
                index=index,
                family=socket.AF_INET6,
                address=str(address.ip),
                prefixlen=address.network.prefixlen,
                flags=IFA_F_NODAD,
            )
        else:
            ipr.addr(
                "add",
                index=index,
                address=str(address.ip),
                prefixlen=address.network.prefixlen,
                broadcast=str(address.network.broadcast_address),
            )
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


def ipv6_addresses(ipr: IPRoute, index: int) -> list[IPv6Interface]:
    """The global IPv6 addresses of a link (link-local ones left out)."""
    out = []
    for msg in ipr.get_addr(family=socket.AF_INET6, index=index):
        iface = IPv6Interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
        if not iface.ip.is_link_local:
            out.append(iface)
    return out


def ensure_up(ipr: IPRoute, index: int) -> None:
    """Set a link up unless it is."""
    if not link_attrs(ipr, index)["up"]:
        ipr.link("set", index=index, state="up")


def create_veth(host_name: str, bridge: str, mtu: int, netns_path: str, mac: str, peer: str = "eth0") -> None:
    """Create ``host_name`` (on ``bridge``, MTU, up) and its peer ``peer`` in the namespace.

    :raises LookupError: ``bridge`` does not exist.
    :raises NetlinkError: EEXIST if ``host_name`` exists on the host or
        ``peer`` in the namespace.
    :raises OSError: the namespace file cannot be opened.
    """
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with IPRoute() as ipr:
            bridge_index = link_index(ipr, bridge)
            if bridge_index is None:
                raise LookupError(bridge)
            ipr.link(
                "add",
                ifname=host_name,
                kind="veth",
                mtu=mtu,
                master=bridge_index,
                state="up",
                peer={"ifname": peer, "net_ns_fd": fd, "address": mac, "mtu": mtu},
            )
    finally:
        os.close(fd)


def set_hairpin(host_name: str, on: bool = True) -> None:
    """Let frames go back out of the bridge port they came in by (a container to itself)."""
    with IPRoute() as ipr:
        index = link_index(ipr, host_name)
        if index is not None:
            ipr.brport("set", index=index, mode=BRIDGE_MODE_HAIRPIN if on else 0)


def configure_container(
    netns_path: str,
    address: IPv4Interface,
    gateway: IPv4Address | None,
    interface: str = "eth0",
    address6: IPv6Interface | None = None,
    gateway6: IPv6Address | None = None,
) -> None:
    """Inside the namespace: ``lo`` up, the interface's address(es) and up, default routes via the gateways given."""
    with iproute_in(netns_path) as ipr:
        lo = link_index(ipr, "lo")
        if lo is not None:
            ensure_up(ipr, lo)
        index = link_index(ipr, interface)
        if index is None:
            raise NetlinkError(errno.ENODEV, f"{interface} is not in the container's namespace")
        add_address(ipr, index, address)
        if address6 is not None:
            add_address(ipr, index, address6)
        ipr.link("set", index=index, state="up")
        _default_routes(ipr, index, gateway, gateway6)


def _default_routes(ipr: IPRoute, index: int, gateway: IPv4Address | None, gateway6: IPv6Address | None) -> None:
    for family, dst, via in ((socket.AF_INET, "0.0.0.0/0", gateway), (socket.AF_INET6, "::/0", gateway6)):
        if via is None:
            continue
        try:
            ipr.route("replace", family=family, dst=dst, gateway=str(via), oif=index)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise


def set_default_routes(
    netns_path: str, interface: str | None, gateway: IPv4Address | None, gateway6: IPv6Address | None
) -> None:
    """Point the namespace's default routes at ``interface``'s gateways; ``interface`` None: no default route."""
    with iproute_in(netns_path) as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in ipr.get_routes(family=family):
                table = msg.get_attr("RTA_TABLE") or msg["table"]
                if table == RT_TABLE_MAIN and msg["dst_len"] == 0 and msg.get_attr("RTA_GATEWAY"):
                    try:
                        ipr.route(
                            "del",
                            family=family,
                            dst="::/0" if family == socket.AF_INET6 else "0.0.0.0/0",
                            gateway=msg.get_attr("RTA_GATEWAY"),
                            oif=msg.get_attr("RTA_OIF"),
                        )
                    except NetlinkError as exc:
                        if exc.code != errno.ESRCH:
                            raise
        if interface is None:
            return
        index = link_index(ipr, interface)
        if index is None:
            raise NetlinkError(errno.ENODEV, f"{interface} is not in the container's namespace")
        _default_routes(ipr, index, gateway, gateway6)


def interfaces_of(netns_path: str) -> set[str]:
    """The names of the links in the namespace bound at ``netns_path``."""
    with iproute_in(netns_path) as ipr:
        return {msg.get_attr("IFLA_IFNAME") for msg in ipr.get_links()}


def container_has_eth0(netns_path: str) -> bool:
    """Whether the namespace bound at ``netns_path`` has an ``eth0``."""
    with iproute_in(netns_path) as ipr:
        return link_index(ipr, "eth0") is not None


def attach_to_bridge(host_name: str, bridge_index: int) -> bool:
    """Put an existing host veth on the bridge and up; False if it does not exist."""
    with IPRoute() as ipr:
        index = link_index(ipr, host_name)
        if index is None:
            return False
        attrs = link_attrs(ipr, index)
        if attrs["master"] != bridge_index:
            ipr.link("set", index=index, master=bridge_index)
        if not attrs["up"]:
            ipr.link("set", index=index, state="up")
        return True


def delete_link(name: str) -> bool:
    """Delete a link by name (a veth's peer goes with it); whether it existed."""
    with IPRoute() as ipr:
        try:
            ipr.link("del", ifname=name)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return False
            raise
    return True
