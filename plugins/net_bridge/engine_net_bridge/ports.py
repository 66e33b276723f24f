"""Published ports: ``-p`` specs, PortBindings, choosing host ports and binding them.

A host port is free when no container of ours holds it (on the same
address, or either side on ``0.0.0.0``) and the kernel lets us bind it:
any other program may be listening there. The driver binds the socket
itself and hands it to the userland proxy, so nobody can take the port
between the check and the proxy's start.

Ephemeral ports (``-p 80``, ``-P``) come from the kernel's own range,
``/proc/sys/net/ipv4/ip_local_port_range``, round robin as Docker's port
allocator does, so that a port just given back is not reused at once.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidParameter

PROTOCOLS = ("tcp", "udp")
#: Docker's fallback when the kernel's range cannot be read.
DEFAULT_EPHEMERAL = (49153, 65535)
WILDCARD = "0.0.0.0"


def split_port(value: str) -> tuple[str, str]:
    """``"80/tcp"`` -> ``("80", "tcp")``; the protocol defaults to tcp."""
    port, _, proto = str(value).strip().partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOCOLS:
        raise InvalidParameter(f"invalid proto: {proto} (tcp or udp)")
    return port, proto


def parse_port_number(text: str, what: str = "port") -> int:
    """``"80"`` -> 80, or :class:`InvalidParameter` naming ``what``."""
    text = str(text).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidParameter(f"invalid {what}: {text!r} (1-65535)")
    return int(text)


def parse_range(text: str, what: str = "port") -> tuple[int, int]:
    """``"8000-8010"`` -> ``(8000, 8010)``; ``"80"`` -> ``(80, 80)``."""
    lo, sep, hi = str(text).strip().partition("-")
    first = parse_port_number(lo, what)
    last = parse_port_number(hi, what) if sep else first
    if last < first:
        raise InvalidParameter(f"invalid {what} range: {text!r}")
    return first, last


@dataclass(frozen=True)
class PortRequest:
    """One container port to publish; ``host_first == 0`` means ephemeral."""

    proto: str
    container_port: int
    host_ip: str
    host_first: int = 0
    host_last: int = 0

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"

    @property
    def host_spec(self) -> str:
        if self.host_first == 0:
            return ""
        if self.host_first == self.host_last:
            return str(self.host_first)
        return f"{self.host_first}-{self.host_last}"


@dataclass(frozen=True)
class PortMapping:
    """A published port: ``host_ip:host_port`` -> the container's port."""

    proto: str
    container_port: int
    host_ip: str
    host_port: int

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"

    def to_json(self) -> dict[str, Any]:
        return {"Port": self.key, "HostIp": self.host_ip, "HostPort": str(self.host_port)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PortMapping:
        port, proto = split_port(doc["Port"])
        return cls(proto, int(port), str(doc["HostIp"]), int(doc["HostPort"]))


def normalize_host_ip(value: str, default: str) -> str:
    """An empty HostIp is the daemon's ``--ip``; only IPv4 is published."""
    text = (value or "").strip() or (default or WILDCARD)
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidParameter(f"invalid host IP {value!r} for a published port") from None
    if addr.version != 4:
        # The bridge network is IPv4 only; "::" from a client meaning "every
        # address" is the IPv4 wildcard here.
        if addr == ipaddress.IPv6Address("::"):
            return WILDCARD
        raise InvalidParameter(f"cannot publish on {text}: the bridge network is IPv4 only")
    return str(addr)


def requests_from_bindings(
    port_bindings: Mapping[str, Sequence[Mapping[str, Any]] | None], default_ip: str
) -> list[PortRequest]:
    """Flatten ``HostConfig.PortBindings`` into :class:`PortRequest` s (validated)."""
    out: list[PortRequest] = []
    for key, bindings in (port_bindings or {}).items():
        port, proto = split_port(key)
        container_port = parse_port_number(port, "container port")
        # An empty list publishes nothing (Docker: only -P turns it into one
        # ephemeral binding, and the daemon passes that as [{}]).
        for binding in bindings or []:
            binding = binding or {}
            host_ip = normalize_host_ip(str(binding.get("HostIp") or ""), default_ip)
            host_port = str(binding.get("HostPort") or "").strip()
            first, last = parse_range(host_port, "host port") if host_port else (0, 0)
            out.append(PortRequest(proto, container_port, host_ip, first, last))
    seen: set[tuple[str, str, int]] = set()
    for req in out:
        if req.host_first and req.host_first == req.host_last:
            ident = (req.host_ip, req.proto, req.host_first)
            if ident in seen:
                raise InvalidParameter(f"host port {req.host_ip}:{req.host_first}/{req.proto} is published twice")
            seen.add(ident)
    return out


def parse_port_specs(specs: Iterable[str]) -> tuple[list[str], dict[str, list[dict[str, str]]]]:
    """Parse ``-p`` values into exposed ports and PortBindings (Docker's ``nat.ParsePortSpecs``).

    Accepts ``ip:hostPort:containerPort``, ``ip::containerPort``,
    ``hostPort:containerPort`` and ``containerPort``, each with an optional
    ``/tcp`` or ``/udp``, ranges on both sides (``8000-8002:80-82``), or a
    host range for one container port (``8000-8010:80``: the daemon picks).

    :returns: ``(["80/tcp", ...], {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]})``.
    """
    exposed: list[str] = []
    bindings: dict[str, list[dict[str, str]]] = {}
    for spec in specs:
        raw = spec.strip()
        host_ip = ""
        if raw.startswith("["):
            end = raw.find("]:")
            if end < 0:
                raise InvalidParameter(f"invalid port spec {spec!r}")
            host_ip, raw = raw[1:end], raw[end + 2 :]
            parts = [host_ip, *raw.split(":")]
        else:
            parts = raw.split(":")
        if len(parts) == 1:
            host_port, container = "", parts[0]
        elif len(parts) == 2:
            host_port, container = parts
        elif len(parts) == 3:
            host_ip, host_port, container = parts
        else:
            raise InvalidParameter(f"invalid port spec {spec!r}: want [[ip:]hostPort:]containerPort[/proto]")
        if host_ip:
            try:
                ipaddress.ip_address(host_ip)
            except ValueError:
                raise InvalidParameter(f"invalid IP address in port spec {spec!r}") from None
        port, proto = split_port(container)
        if not port:
            raise InvalidParameter(f"no port specified: {spec!r}")
        c_first, c_last = parse_range(port, "container port")
        h_first, h_last = parse_range(host_port, "host port") if host_port else (0, 0)
        if host_port and (c_last - c_first) != (h_last - h_first) and c_last != c_first:
            raise InvalidParameter(f"invalid ranges specified for container and host Ports: {port} and {host_port}")
        for offset in range(c_last - c_first + 1):
            key = f"{c_first + offset}/{proto}"
            if key not in exposed:
                exposed.append(key)
            if not host_port:
                hp = ""
            elif c_first == c_last and h_first != h_last:
                hp = f"{h_first}-{h_last}"
            else:
                hp = str(h_first + offset)
            bindings.setdefault(key, []).append({"HostIp": host_ip, "HostPort": hp})
    return exposed, bindings


def ephemeral_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The kernel's ephemeral port range (Docker's fallback if unreadable)."""
    try:
        with open(path, encoding="ascii") as fh:
            lo, hi = (int(v) for v in fh.read().split()[:2])
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
    if not 0 < lo <= hi < 65536:
        return DEFAULT_EPHEMERAL
    return lo, hi


def same_socket_space(ip_a: str, ip_b: str) -> bool:
    """Whether two bindings of one port collide (equal, or one is the wildcard)."""
    return ip_a == ip_b or WILDCARD in (ip_a, ip_b)


def bind_host_port(host_ip: str, proto: str, port: int) -> socket.socket:
    """Bind (and for TCP, listen on) ``host_ip:port``.

    :raises OSError: EADDRINUSE when something else holds it.
    """
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind | socket.SOCK_CLOEXEC)
    try:
        if proto == "tcp":
            # Lets us take a port whose last connection sits in TIME_WAIT;
            # a live listener still makes bind fail with EADDRINUSE.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host_ip, port))
        if proto == "tcp":
            sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return sock
