"""engine.daemon.resolvconf: the container's resolv.conf and hosts, as Docker writes them."""

from __future__ import annotations

import pytest

from engine.daemon import resolvconf
from engine.errors import InvalidParameter


@pytest.fixture
def host_files(tmp_path):
    def write(text: str, resolved: str = "") -> tuple[str, str]:
        host = tmp_path / "resolv.conf"
        host.write_text(text)
        upstream = tmp_path / "resolved.conf"
        upstream.write_text(resolved)
        return str(host), str(upstream)

    return write


def test_host_servers_search_and_options(host_files):
    host, resolved = host_files("nameserver 10.0.0.2\nsearch a.example b.example\noptions ndots:2\n")
    text, warnings = resolvconf.build([], [], [], host_file=host, resolved_file=resolved)
    assert text == "nameserver 10.0.0.2\nsearch a.example b.example\noptions ndots:2\n" and warnings == []


def test_local_host_servers_fall_back_to_public_ones_with_a_warning(host_files):
    host, resolved = host_files("nameserver 127.0.0.1\nnameserver ::1\n")
    text, warnings = resolvconf.build([], [], [], host_file=host, resolved_file=resolved)
    assert text == "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    assert warnings and "Local (127.0.0.1) DNS resolver" in warnings[0]
    # host mode shares the host's loopback: the servers stay
    text, _ = resolvconf.build([], [], [], host_mode=True, host_file=host, resolved_file=resolved)
    assert text == "nameserver 127.0.0.1\nnameserver ::1\n"


def test_systemd_resolved_stub_uses_its_upstream_servers(host_files):
    host, resolved = host_files(
        "nameserver 127.0.0.53\nsearch lan\noptions edns0 trust-ad\n",
        "nameserver 192.168.1.1\nnameserver 192.168.1.2\nsearch lan\n",
    )
    text, warnings = resolvconf.build([], [], [], host_file=host, resolved_file=resolved)
    assert text == "nameserver 192.168.1.1\nnameserver 192.168.1.2\nsearch lan\n" and warnings == []
    # without systemd-resolved's file: the fallback, as for any local server
    host, _ = host_files("nameserver 127.0.0.53\n")
    text, _ = resolvconf.build([], [], [], host_file=host, resolved_file=str(host) + ".missing")
    assert text.startswith("nameserver 8.8.8.8\n")


def test_given_servers_are_used_as_given(host_files):
    host, resolved = host_files("nameserver 10.0.0.2\nsearch lan\n")
    text, warnings = resolvconf.build(
        ["127.0.0.1", "1.1.1.1"], ["example.com"], ["ndots:1"], host_file=host, resolved_file=resolved
    )
    assert text == "nameserver 127.0.0.1\nnameserver 1.1.1.1\nsearch example.com\noptions ndots:1\n"
    assert warnings == []
    text, _ = resolvconf.build([], ["."], [], host_file=host, resolved_file=resolved)
    assert "search" not in text  # "--dns-search ." means none


@pytest.mark.parametrize(
    "entry, parsed",
    [
        ("db:10.0.0.5", ("db", "10.0.0.5")),
        ("v6:2001:db8::1", ("v6", "2001:db8::1")),
        ("gw:host-gateway", ("gw", "host-gateway")),
    ],
)
def test_parse_extra_host(entry, parsed):
    assert resolvconf.parse_extra_host(entry) == parsed


@pytest.mark.parametrize(
    "entry, message",
    [
        ("bogus", 'bad format for add-host: "bogus"'),
        (":1.2.3.4", 'bad format for add-host: ":1.2.3.4"'),
        ("h:not-an-ip", 'invalid IP address in add-host: "not-an-ip"'),
    ],
)
def test_parse_extra_host_errors(entry, message):
    with pytest.raises(InvalidParameter) as err:
        resolvconf.parse_extra_host(entry)
    assert str(err.value) == message


def test_hosts_like_docker():
    text = resolvconf.hosts(
        "abc123",
        "",
        "172.17.0.3",
        ["db:10.0.0.5", "gw:host-gateway"],
        [("172.17.0.2", resolvconf.link_names("database", "f00dfeed1234", "db"))],
        host_gateway="172.17.0.1",
    )
    assert text == resolvconf.HOSTS_HEADER + (
        "10.0.0.5\tdb\n172.17.0.1\tgw\n172.17.0.2\tdatabase f00dfeed1234 db\n172.17.0.3\tabc123\n"
    )
    assert resolvconf.link_names("db", "f00dfeed1234", "db") == "db f00dfeed1234"
    assert resolvconf.hosts("h", "example.com", "172.17.0.3").endswith("172.17.0.3\th.example.com h\n")
    with pytest.raises(InvalidParameter, match="unable to derive the IP value for host-gateway"):
        resolvconf.hosts("h", "", "", ["gw:host-gateway"])


def test_update_link_rewrites_in_place(tmp_path):
    path = tmp_path / "hosts"
    names = resolvconf.link_names("database", "f00dfeed1234", "db")
    path.write_text(resolvconf.hosts("me", "", "172.17.0.3", None, [("172.17.0.2", names)]) + "10.9.9.9\tmine\n")
    inode = path.stat().st_ino
    assert resolvconf.update_link(str(path), names, "172.17.0.7")
    text = path.read_text()
    assert "172.17.0.7\tdatabase f00dfeed1234 db\n" in text and "172.17.0.2" not in text
    assert text.endswith("172.17.0.3\tme\n10.9.9.9\tmine\n")  # everything else kept, the user's line too
    assert path.stat().st_ino == inode
    assert not resolvconf.update_link(str(path), names, "172.17.0.7")  # nothing to change
    assert not resolvconf.update_link(str(tmp_path / "gone"), names, "172.17.0.7")
