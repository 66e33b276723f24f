"""The embedded DNS server's answers (engine.dns.records): names, aliases, links, networks, PTR, NXDOMAIN."""

from __future__ import annotations

from dnslib import QTYPE, RCODE, DNSRecord

from engine.dns.records import Records, answer, max_udp_size, resolve_address, resolve_name

WEB, DB, DB2, OTHER = "a" * 64, "b" * 64, "c" * 64, "d" * 64
DOC = {
    "networks": {
        "n1": {
            "name": "front",
            "endpoints": [
                {"container": WEB, "name": "web", "aliases": ["www", WEB[:12]], "ipv4": "172.18.0.2", "ipv6": ""},
                {"container": DB, "name": "db-1", "aliases": ["db"], "ipv4": "172.18.0.3", "ipv6": "fd00::3"},
                {"container": DB2, "name": "db-2", "aliases": ["db"], "ipv4": "172.18.0.4", "ipv6": ""},
            ],
        },
        "n2": {
            "name": "back",
            "endpoints": [
                {"container": WEB, "name": "web", "aliases": [], "ipv4": "172.19.0.2", "ipv6": ""},
                {"container": OTHER, "name": "hidden", "aliases": [], "ipv4": "172.19.0.9", "ipv6": ""},
            ],
        },
    },
    "containers": {
        WEB: {"networks": ["n1", "n2"], "links": {"pg": "db-2"}, "upstream": ["192.0.2.53"]},
        DB: {"networks": ["n1"], "links": {}, "upstream": []},
    },
}


def records() -> Records:
    return Records(DOC)


def test_names_aliases_and_shared_aliases():
    view = records().view(WEB)
    assert view is not None
    assert resolve_name(view, "web", 4) == (["172.18.0.2"], True)  # the first network that knows it
    assert resolve_name(view, "WWW.", 4) == (["172.18.0.2"], True)
    assert resolve_name(view, WEB[:12], 4) == (["172.18.0.2"], True)
    addrs, known = resolve_name(view, "db", 4)
    assert known and sorted(addrs) == ["172.18.0.3", "172.18.0.4"]
    assert resolve_name(view, "hidden", 4) == (["172.19.0.9"], True)
    assert resolve_name(view, "nosuch", 4) == ([], False)


def test_network_qualified_names_links_and_ipv6():
    view = records().view(WEB)
    assert view is not None
    assert resolve_name(view, "web.back", 4) == (["172.19.0.2"], True)
    assert resolve_name(view, "hidden.front", 4) == ([], False)
    assert resolve_name(view, "pg", 4) == (["172.18.0.4"], True)  # --link db-2:pg on a user network
    assert resolve_name(view, "db-1", 6) == (["fd00::3"], True)
    assert resolve_name(view, "db-2", 6) == ([], True)  # known, no IPv6 address
    # A container only sees the networks it is on.
    db_view = records().view(DB)
    assert db_view is not None and resolve_name(db_view, "hidden", 4) == ([], False)
    assert resolve_address(view, "172.19.0.9") == "hidden.back"


def _ask(name: str, qtype: str, container: str = WEB) -> DNSRecord | None:
    return answer(records(), container, DNSRecord.question(name, qtype))


def test_answers_in_the_wire_format():
    reply = _ask("db", "A")
    assert reply is not None and reply.header.rcode == RCODE.NOERROR and reply.header.ra
    assert sorted(str(rr.rdata) for rr in reply.rr) == ["172.18.0.3", "172.18.0.4"]
    assert all(rr.ttl == 600 for rr in reply.rr)
    empty = _ask("db-2", "AAAA")
    assert empty is not None and empty.header.rcode == RCODE.NOERROR and not empty.rr
    missing = _ask("nosuch", "A")
    assert missing is not None and missing.header.rcode == RCODE.NXDOMAIN
    # Names with dots that it does not know go upstream, whatever the type.
    assert _ask("example.com", "A") is None and _ask("example.com", "MX") is None
    mx = _ask("web", "MX")
    assert mx is not None and mx.header.rcode == RCODE.NOERROR and not mx.rr
    assert _ask("nosuch", "MX").header.rcode == RCODE.NXDOMAIN
    ptr = _ask("9.0.19.172.in-addr.arpa", "PTR")
    assert ptr is not None and str(ptr.rr[0].rdata) == "hidden.back."
    six = _ask("3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa", "PTR")
    assert six is not None and str(six.rr[0].rdata) == "db-1.front."
    assert _ask("9.9.9.9.in-addr.arpa", "PTR") is None
    # A container the records do not know resolves nothing of ours.
    stranger = answer(records(), "f" * 64, DNSRecord.question("web", "A"))
    assert stranger is not None and stranger.header.rcode == RCODE.NXDOMAIN


def test_round_robin_and_truncation():
    seen = set()
    for _ in range(50):
        reply = _ask("db", "A")
        assert reply is not None
        seen.add(str(reply.rr[0].rdata))
    assert seen == {"172.18.0.3", "172.18.0.4"}, "shared aliases are not shuffled"
    many = {
        "networks": {
            "n": {
                "name": "n",
                "endpoints": [
                    {"container": str(i), "name": f"c{i}", "aliases": ["all"], "ipv4": f"10.0.{i // 250}.{i % 250 + 1}"}
                    for i in range(100)
                ],
            }
        },
        "containers": {"0": {"networks": ["n"]}},
    }
    query = DNSRecord.question("all", "A")
    reply = answer(Records(many), "0", query, max_udp_size(query))
    assert reply is not None and reply.header.tc and len(reply.pack()) <= 512
    full = answer(Records(many), "0", query, 65535)
    assert full is not None and len(full.rr) == 100 and not full.header.tc
    assert full.rr[0].rtype == QTYPE.A


def test_malformed_documents_are_tolerated():
    assert Records(None).view(WEB) is None
    broken = Records({"networks": {"x": {"endpoints": [{}]}}, "containers": {WEB: {"networks": ["x", "gone"]}}})
    view = broken.view(WEB)
    assert view is not None and len(view.networks) == 1


def test_the_fast_path_answers_as_the_slow_one():
    from engine.dns.records import AnswerCache, parse_question

    cache = AnswerCache(records())
    for name, qtype in (
        ("db", "A"),
        ("WEB", "A"),
        ("db-1", "AAAA"),
        ("db-2", "AAAA"),
        ("nosuch", "A"),
        ("web.back", "A"),
    ):
        query = DNSRecord.question(name, qtype)
        raw = cache.answer(WEB, query.pack())
        assert raw is not None, (name, qtype)
        fast, slow = DNSRecord.parse(raw), answer(records(), WEB, query)
        assert fast.header.id == query.header.id and fast.header.rcode == slow.header.rcode
        assert fast.header.ra and not fast.header.aa and fast.header.rd == query.header.rd
        assert str(fast.q.qname) == str(query.q.qname) and fast.q.qtype == query.q.qtype
        assert sorted(str(rr.rdata) for rr in fast.rr) == sorted(str(rr.rdata) for rr in slow.rr)
        assert all(rr.ttl == 600 and str(rr.rname) == str(query.q.qname) for rr in fast.rr)
    # What it does not answer goes the slow way: a forward, another type, a malformed packet.
    assert cache.answer(WEB, DNSRecord.question("example.com", "A").pack()) is None
    assert cache.answer(WEB, DNSRecord.question("web", "MX").pack()) is None
    assert cache.answer(WEB, b"\x00" * 5) is None
    assert parse_question(DNSRecord.question("a.b", "A").reply().pack()) is None  # a response
