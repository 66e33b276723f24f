"""What a container on user-defined networks may resolve, and the answers (libnetwork's ``ResolveName``,
``ResolveIP`` and the resolver's replies), in DNS's wire format through dnslib.

The daemon writes the records document (``records.json``) whenever a
container joins or leaves a user-defined network, is renamed or stops::

    {"networks":   {"<network id>": {"name": "front",
                                     "endpoints": [{"container": "<id>", "name": "web",
                                                    "aliases": ["www", "3f2a1b0c9d8e"],
                                                    "ipv4": "172.18.0.2", "ipv6": ""}]}},
     "containers": {"<container id>": {"networks": ["<network id>", ...],   # its endpoints' order
                                       "links": {"db": "postgres-1"},      # --link on those networks
                                       "upstream": ["192.0.2.53"]}}}        # --dns, or the host's

A query from a container is answered from the networks it is on, in order
(:func:`resolve_name`): ``NAME`` is a container name, a network alias or a
``--link`` alias (the link's target, looked up by name) on one of them, and
``NAME.NETWORK`` looks on that network only; every address of the first
network that knows the name is returned, shuffled (round robin for a shared
alias). A name that is known but has no address of the asked family gets an
empty answer; a PTR query for an address on one of its networks gets
``container.network``. Everything else is forwarded to the container's
upstream servers, but for names of one label (``nosuch``), which get
NXDOMAIN at once: no upstream server has them, and asking would only make
the client wait; a name it knows asked for another type (MX...) gets an
empty answer. Answers carry a TTL of 600 s and are not authoritative, as
Docker's.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dnslib import AAAA, PTR, QTYPE, RCODE, RR, A, DNSRecord

#: Docker's TTL for the names it knows.
TTL = 600
#: Answers over UDP are cut at this size unless the query's EDNS says more (Docker's ``defaultRespSize``).
UDP_SIZE = 512


@dataclass
class Endpoint:
    container: str
    name: str
    aliases: list[str] = field(default_factory=list)
    ipv4: str = ""
    ipv6: str = ""


@dataclass
class Network:
    id: str
    name: str
    endpoints: list[Endpoint] = field(default_factory=list)


@dataclass
class View:
    """One container's view: its networks in order, its link aliases, its upstream servers."""

    networks: list[Network]
    links: dict[str, str]
    upstream: list[str]


class Records:
    """The records document, indexed.

    :param doc: the document (see the module's docstring); malformed parts are skipped.
    """

    def __init__(self, doc: Mapping[str, Any] | None = None) -> None:
        doc = doc or {}
        self.networks: dict[str, Network] = {}
        for nid, ndoc in (doc.get("networks") or {}).items():
            eps = [
                Endpoint(
                    str(e.get("container") or ""),
                    str(e.get("name") or ""),
                    [str(a) for a in e.get("aliases") or []],
                    str(e.get("ipv4") or ""),
                    str(e.get("ipv6") or ""),
                )
                for e in ndoc.get("endpoints") or []
            ]
            self.networks[nid] = Network(nid, str(ndoc.get("name") or ""), eps)
        self.containers: dict[str, View] = {}
        for cid, cdoc in (doc.get("containers") or {}).items():
            nets = [self.networks[n] for n in cdoc.get("networks") or [] if n in self.networks]
            links = {str(k).lower(): str(v) for k, v in (cdoc.get("links") or {}).items()}
            upstream = [str(u) for u in cdoc.get("upstream") or []]
            self.containers[cid] = View(nets, links, upstream)

    def view(self, container: str) -> View | None:
        return self.containers.get(container)


def _split_candidates(name: str) -> list[tuple[str, str]]:
    """(name, network) pairs to try for ``a.b.c``: ``(a.b.c, "")``, ``(a.b, c)``, ``(a, b.c)`` (libnetwork's order)."""
    out = [(name, "")]
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        out.append((".".join(parts[:i]), ".".join(parts[i:])))
    return out


def resolve_name(view: View, name: str, family: int) -> tuple[list[str], bool]:
    """The addresses of ``name`` (family 4 or 6) as the container sees them, and whether the name is known.

    ``([], True)`` is a name known without an address of that family.
    """
    name = name.rstrip(".").lower()
    for req, network in _split_candidates(name):
        nets = [n for n in view.networks if not network or n.name.lower() == network]
        if not nets:
            continue
        target = view.links.get(req)
        wanted = [target.lower()] if target else []
        wanted.append(req)
        for who in wanted:
            for net in nets:
                found = [ep for ep in net.endpoints if ep.name.lower() == who or who in (a.lower() for a in ep.aliases)]
                if not found:
                    continue
                addrs = [ep.ipv4 if family == 4 else ep.ipv6 for ep in found]
                addrs = [a for a in addrs if a]
                return list(dict.fromkeys(addrs)), True
    return [], False


def resolve_address(view: View, address: str) -> str:
    """``container.network`` for an address on one of the container's networks, or ""."""
    for net in view.networks:
        for ep in net.endpoints:
            if address in (ep.ipv4, ep.ipv6):
                return f"{ep.name}.{net.name}"
    return ""


def _ptr_address(qname: str) -> str:
    """The address a PTR name (``4.3.2.1.in-addr.arpa``, nibbles of ``ip6.arpa``) asks about, or ""."""
    name = qname.rstrip(".").lower()
    if name.endswith(".in-addr.arpa"):
        parts = name[: -len(".in-addr.arpa")].split(".")
        if len(parts) == 4 and all(p.isdigit() for p in parts):
            return ".".join(reversed(parts))
    elif name.endswith(".ip6.arpa"):
        nibbles = name[: -len(".ip6.arpa")].split(".")
        if len(nibbles) == 32:
            hexes = "".join(reversed(nibbles))
            try:
                return str(ipaddress.IPv6Address(int(hexes, 16)))
            except ValueError:
                return ""
    return ""


def answer(records: Records, container: str, query: DNSRecord, max_size: int = UDP_SIZE) -> DNSRecord | None:
    """The reply to ``query`` from ``container``, or None when it is to be forwarded upstream."""
    if not query.questions:
        reply = query.reply()
        reply.header.rcode = RCODE.FORMERR
        return reply
    view = records.view(container) or View([], {}, [])
    question = query.questions[0]
    qname = str(question.qname)
    qtype = question.qtype
    if qtype in (QTYPE.A, QTYPE.AAAA):
        family = 4 if qtype == QTYPE.A else 6
        addrs, known = resolve_name(view, qname, family)
        if known:
            reply = _reply(query)
            random.shuffle(addrs)
            for addr in addrs:
                rdata = A(addr) if family == 4 else AAAA(addr)
                reply.add_answer(RR(question.qname, qtype, rdata=rdata, ttl=TTL))
            return _truncated(reply, max_size)
    elif qtype == QTYPE.PTR:
        address = _ptr_address(qname)
        host = resolve_address(view, address) if address else ""
        if host:
            reply = _reply(query)
            reply.add_answer(RR(question.qname, QTYPE.PTR, rdata=PTR(host + "."), ttl=TTL))
            return reply
    if qtype not in (QTYPE.A, QTYPE.AAAA, QTYPE.PTR) and any(resolve_name(view, qname, f)[1] for f in (4, 6)):
        # A name of ours has no record of other types: an empty answer, not a forward.
        return _reply(query)
    name = qname.rstrip(".")
    if "." not in name and qtype != QTYPE.PTR:
        reply = _reply(query)
        reply.header.rcode = RCODE.NXDOMAIN
        return reply
    return None


def _reply(query: DNSRecord) -> DNSRecord:
    """An empty reply: recursion available, not authoritative (as Docker's)."""
    reply = query.reply()
    reply.header.aa = 0
    return reply


def _truncated(reply: DNSRecord, max_size: int) -> DNSRecord:
    """Drop answers until the reply fits (and say so with TC), as Docker's ``truncateResp``."""
    while reply.rr and len(reply.pack()) > max_size:
        reply.rr.pop()
        reply.header.tc = 1
    return reply


def failure(query: DNSRecord) -> DNSRecord:
    """SERVFAIL for ``query`` (no upstream server answered)."""
    reply = _reply(query)
    reply.header.rcode = RCODE.SERVFAIL
    return reply


def max_udp_size(query: DNSRecord) -> int:
    """What the client takes over UDP: its EDNS size, at least 512."""
    for rr in query.ar:
        if rr.rtype == QTYPE.OPT:
            return max(UDP_SIZE, int(rr.rclass))
    return UDP_SIZE


#: The header flags of our answers: QR, RA (and RD copied from the query).
_QR, _RD, _RA = 0x8000, 0x0100, 0x0080
_TYPES = {QTYPE.A: 4, QTYPE.AAAA: 6}


def parse_question(raw: bytes) -> tuple[str, int, int] | None:
    """(lower-case name, qtype, end of the question) of a plain query (one question, class IN, no answers), or None.

    The fast path's parser: anything unusual (compression, several
    questions, another class, a response) is left to dnslib.
    """
    if len(raw) < 17:
        return None
    flags, qdcount, ancount, nscount = struct.unpack_from("!HHHH", raw, 2)
    if flags & 0xF800 or qdcount != 1 or ancount or nscount:  # a response, or not opcode QUERY
        return None
    labels = []
    pos = 12
    while True:
        if pos >= len(raw):
            return None
        size = raw[pos]
        if size == 0:
            pos += 1
            break
        if size & 0xC0 or pos + 1 + size > len(raw):
            return None
        labels.append(raw[pos + 1 : pos + 1 + size])
        pos += 1 + size
    if pos + 4 > len(raw):
        return None
    qtype, qclass = struct.unpack_from("!HH", raw, pos)
    if qclass != 1:
        return None
    try:
        name = b".".join(labels).decode("ascii").lower()
    except UnicodeDecodeError:
        return None
    return name, qtype, pos + 4


class AnswerCache:
    """Answers to plain A and AAAA queries, computed once per (container, name, type) from the records
    and sent by patching the query's ID and question in: a lookup costs a dict access, not a parse and a
    pack (the resolver's fast path). Cleared whenever the records change.

    :param records: the records the answers come from.
    """

    def __init__(self, records: Records) -> None:
        self.records = records
        #: (container, name, qtype) -> (rcode, [answer RRs, packed with a pointer to the question's name]),
        #: or None: not ours to answer (forwarded).
        self._cache: dict[tuple[str, str, int], tuple[int, list[bytes]] | None] = {}

    def _entry(self, container: str, name: str, qtype: int) -> tuple[int, list[bytes]] | None:
        key = (container, name, qtype)
        try:
            return self._cache[key]
        except KeyError:
            pass
        view = self.records.view(container) or View([], {}, [])
        family = _TYPES[qtype]
        addrs, known = resolve_name(view, name, family)
        entry: tuple[int, list[bytes]] | None
        if known:
            rrs = []
            for addr in addrs:
                rdata = ipaddress.ip_address(addr).packed
                rrs.append(b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, TTL, len(rdata)) + rdata)
            entry = (RCODE.NOERROR, rrs)
        elif "." not in name:
            entry = (RCODE.NXDOMAIN, [])
        else:
            entry = None
        self._cache[key] = entry
        return entry

    def answer(self, container: str, raw: bytes, max_size: int = UDP_SIZE) -> bytes | None:
        """The answer to ``raw``, or None when the slow path (:func:`answer` or a forward) must decide."""
        parsed = parse_question(raw)
        if parsed is None or parsed[1] not in _TYPES:
            return None
        name, qtype, end = parsed
        entry = self._entry(container, name, qtype)
        if entry is None:
            return None
        rcode, rrs = entry
        if len(rrs) > 1:
            rrs = random.sample(rrs, len(rrs))
        flags = _QR | _RA | (struct.unpack_from("!H", raw, 2)[0] & _RD) | rcode
        header = raw[:2] + struct.pack("!HHHHH", flags, 1, len(rrs), 0, 0)
        reply = header + raw[12:end] + b"".join(rrs)
        return reply if len(reply) <= max_size else None
