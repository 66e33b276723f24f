"""Unit tests of the bridge driver's pure parts: addresses, port specs, rules, state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from engine.errors import Conflict, InvalidParameter
from engine_net_bridge import ipam
from engine_net_bridge.iptables import (
    CHAIN,
    FORWARD_CHAIN,
    ISOLATION_1,
    ISOLATION_2,
    IPTables,
    IptablesError,
    Rule,
    add_ops,
    link_rules,
    network_rules,
    port_rules,
    shared_rules,
)
from engine_net_bridge.portmapper import ProxyRecord
from engine_net_bridge.ports import (
    PortMapping,
    ephemeral_range,
    normalize_host_ip,
    parse_port_specs,
    requests_from_bindings,
    same_socket_space,
)
from engine_net_bridge.proxy import parse as parse_proxy_args
from engine_net_bridge.state import Endpoint, Store


# addresses
def test_first_candidate_when_nothing_overlaps():
    assert ipam.choose_bridge_address("engine0", [], []) == IPv4Interface("172.17.42.1/16")


def test_candidates_skip_routes_and_nameservers():
    routes = [IPv4Network("172.17.0.0/16")]
    assert ipam.choose_bridge_address("engine0", routes, []) == IPv4Interface("10.0.42.1/16")
    # 10.0.0.2 lies in 10.0.0.0/16: that range would hide the DNS server.
    assert ipam.choose_bridge_address("engine0", routes, [IPv4Address("10.0.0.2")]) == IPv4Interface("10.1.42.1/16")
    # A wider route covering a candidate counts too.
    assert ipam.choose_bridge_address(
        "engine0", [IPv4Network("172.16.0.0/12"), IPv4Network("10.0.0.0/8")], []
    ) == IPv4Interface("192.168.42.1/24")


def test_no_free_range_names_the_remedy():
    everything = [IPv4Network("0.0.0.0/1"), IPv4Network("128.0.0.0/1")]
    with pytest.raises(ipam.NoFreeRange, match=r"engine -d -b engine0"):
        ipam.choose_bridge_address("engine0", everything, [])


def test_read_nameservers(tmp_path):
    path = tmp_path / "resolv.conf"
    path.write_text(
        "# comment\nnameserver 10.9.8.7\nnameserver ::1\nnameserver fe80::1%eth0\n"
        "nameserver bogus\nsearch x\n  nameserver   192.0.2.53  # trailing\n"
    )
    assert ipam.read_nameservers(str(path)) == [IPv4Address("10.9.8.7"), IPv4Address("192.0.2.53")]
    assert ipam.read_nameservers(str(tmp_path / "missing")) == []


@pytest.mark.parametrize("value", ["172.17.42.1", "bogus", "::1/64", "10.0.0.1/31", "10.0.0.0/24", "10.0.0.255/24"])
def test_bad_bip(value):
    with pytest.raises(InvalidParameter):
        ipam.parse_interface(value, "--bip")


def test_mac_addresses():
    assert ipam.mac_for(IPv4Address("172.17.0.2")) == "02:42:ac:11:00:02"
    mac = ipam.random_mac()
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01  # locally administered, unicast
    assert ipam.parse_mac("02:42:AC:11:0:2") == "02:42:ac:11:00:02"
    for bad in ("01:00:5e:00:00:01", "02:42:ac", "zz:42:ac:11:00:02"):
        with pytest.raises(InvalidParameter):
            ipam.parse_mac(bad)


def test_pool_skips_reserved_and_used_addresses():
    pool = ipam.Pool(IPv4Network("10.0.0.0/29"), IPv4Address("10.0.0.1"))
    used: set[IPv4Address] = set()
    for _ in range(5):
        used.add(pool.allocate(used))
    # .0 network, .1 gateway, .7 broadcast: five usable addresses.
    assert used == {IPv4Address(f"10.0.0.{n}") for n in range(2, 7)}
    with pytest.raises(ipam.AddressesExhausted):
        pool.allocate(used)


def test_pool_is_round_robin():
    pool = ipam.Pool(IPv4Network("10.0.0.0/24"), IPv4Address("10.0.0.1"))
    first = pool.allocate(set())
    # Released at once, but the next allocation moves on.
    assert pool.allocate(set()) == first + 1


def test_pool_fixed_cidr_and_requests():
    pool = ipam.Pool(IPv4Network("172.17.0.0/16"), IPv4Address("172.17.42.1"), IPv4Network("172.17.5.0/24"))
    assert pool.allocate(set()) in IPv4Network("172.17.5.0/24")
    assert pool.allocate(set(), IPv4Address("172.17.9.9")) == IPv4Address("172.17.9.9")
    with pytest.raises(Conflict, match="Address already in use"):
        pool.allocate({IPv4Address("172.17.9.9")}, IPv4Address("172.17.9.9"))
    for bad in ("172.17.42.1", "172.17.255.255", "10.0.0.5"):
        with pytest.raises(InvalidParameter):
            pool.allocate(set(), IPv4Address(bad))
    with pytest.raises(InvalidParameter, match="not inside the bridge's subnet"):
        ipam.Pool(IPv4Network("172.17.0.0/16"), IPv4Address("172.17.42.1"), IPv4Network("10.0.0.0/24"))


# ports
def test_parse_port_specs_forms():
    exposed, bindings = parse_port_specs(
        ["80", "8080:81", "127.0.0.1:8081:82/udp", "127.0.0.1::83", "9000-9001:90-91", "7000-7010:70", "[::1]:5000:50"]
    )
    assert exposed == ["80/tcp", "81/tcp", "82/udp", "83/tcp", "90/tcp", "91/tcp", "70/tcp", "50/tcp"]
    assert bindings["80/tcp"] == [{"HostIp": "", "HostPort": ""}]
    assert bindings["81/tcp"] == [{"HostIp": "", "HostPort": "8080"}]
    assert bindings["82/udp"] == [{"HostIp": "127.0.0.1", "HostPort": "8081"}]
    assert bindings["83/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": ""}]
    assert bindings["90/tcp"] == [{"HostIp": "", "HostPort": "9000"}]
    assert bindings["91/tcp"] == [{"HostIp": "", "HostPort": "9001"}]
    assert bindings["70/tcp"] == [{"HostIp": "", "HostPort": "7000-7010"}]
    assert bindings["50/tcp"] == [{"HostIp": "::1", "HostPort": "5000"}]


@pytest.mark.parametrize(
    "spec", ["", "a:b:c:d", "80/sctp", "0", "65536", "x:80", "9000-9002:90-91", "300.1.1.1:80:80", "90-80"]
)
def test_parse_port_specs_rejects(spec):
    with pytest.raises(InvalidParameter):
        parse_port_specs([spec])


def test_requests_from_bindings():
    reqs = requests_from_bindings(
        {
            "80/tcp": [{"HostIp": "", "HostPort": "18080"}, {"HostPort": "8000-8010"}],
            "53/udp": [{}],
            "443/tcp": None,
            "444": [],
        },
        "0.0.0.0",
    )
    assert [(r.key, r.host_ip, r.host_spec) for r in reqs] == [
        ("80/tcp", "0.0.0.0", "18080"),
        ("80/tcp", "0.0.0.0", "8000-8010"),
        ("53/udp", "0.0.0.0", ""),
    ]
    assert requests_from_bindings({"80/tcp": [{"HostIp": "", "HostPort": ""}]}, "127.0.0.1")[0].host_ip == "127.0.0.1"
    with pytest.raises(InvalidParameter, match="published twice"):
        requests_from_bindings({"80/tcp": [{"HostPort": "1"}], "81/tcp": [{"HostPort": "1"}]}, "0.0.0.0")
    with pytest.raises(InvalidParameter):
        requests_from_bindings({"80/tcp": [{"HostIp": "2001:db8::1"}]}, "0.0.0.0")
    assert normalize_host_ip("::", "0.0.0.0") == "0.0.0.0"


def test_port_collisions_and_range(tmp_path):
    assert same_socket_space("0.0.0.0", "127.0.0.1") and same_socket_space("127.0.0.1", "0.0.0.0")
    assert not same_socket_space("127.0.0.1", "127.0.0.2")
    path = tmp_path / "range"
    path.write_text("40000\t40010\n")
    assert ephemeral_range(str(path)) == (40000, 40010)
    path.write_text("nonsense")
    assert ephemeral_range(str(path)) == (49153, 65535)


# rules
def test_shared_and_network_rules():
    assert [str(r) for r in shared_rules(localhost_dnat=False)] == [
        f"-t nat -A PREROUTING -m addrtype --dst-type LOCAL -j {CHAIN}",
        f"-t nat -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j {CHAIN}",
        f"-t filter -A FORWARD -j {ISOLATION_1}",
        f"-t filter -A FORWARD -j {FORWARD_CHAIN}",
    ]
    rules = network_rules("engine0", "172.17.0.0/16", icc=False, masquerade=True)
    assert [str(r) for r in rules] == [
        "-t nat -A POSTROUTING -s 172.17.0.0/16 ! -o engine0 -j MASQUERADE",
        f"-t filter -A {FORWARD_CHAIN} -o engine0 -j {CHAIN}",
        f"-t filter -A {FORWARD_CHAIN} -o engine0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-t filter -A {FORWARD_CHAIN} -i engine0 ! -o engine0 -j ACCEPT",
        f"-t filter -A {FORWARD_CHAIN} -i engine0 -o engine0 -j DROP",
        f"-t filter -A {ISOLATION_1} -i engine0 ! -o engine0 -j {ISOLATION_2}",
        f"-t filter -A {ISOLATION_2} -o engine0 -j DROP",
    ]
    # Built-in chains: inserted at the top in reverse, so they keep their order; ours appended.
    ops = add_ops(shared_rules(localhost_dnat=False) + rules)
    assert [op for op, _ in ops][:5] == ["-I"] * 5 and all(op == "-A" for op, _ in ops[5:])
    assert ops[0][1].chain == "POSTROUTING" and ops[-1][1].chain == ISOLATION_2
    no_proxy = [str(r) for r in network_rules("b", "10.0.0.0/24", icc=True, masquerade=False, localhost_dnat=True)]
    assert "-t nat -A POSTROUTING -m addrtype --src-type LOCAL -o b -j MASQUERADE" in no_proxy
    assert f"-t nat -A OUTPUT -m addrtype --dst-type LOCAL -j {CHAIN}" in [
        str(r) for r in shared_rules(localhost_dnat=True)
    ]
    assert f"-t filter -A {FORWARD_CHAIN} -i b -o b -j ACCEPT" in no_proxy
    assert not any("-s 10.0.0.0/24" in r for r in no_proxy)
    internal = [str(r) for r in network_rules("b", "10.0.0.0/24", icc=True, masquerade=True, internal=True)]
    assert internal == [
        f"-t filter -A {FORWARD_CHAIN} -i b -o b -j ACCEPT",
        f"-t filter -A {ISOLATION_1} -i b ! -d 10.0.0.0/24 -j DROP",
        f"-t filter -A {ISOLATION_1} -o b ! -s 10.0.0.0/24 -j DROP",
    ]
    six = network_rules("b", "fd00::/64", icc=True, masquerade=True, family=6)
    assert all(r.family == 6 for r in six) and Rule.from_json(six[0].to_json()) == six[0]
    assert six[0].to_json()[0] == "ip6:nat"


def test_port_and_link_rules():
    dnat, accept, hairpin = port_rules("engine0", "tcp", "127.0.0.1", 18080, "172.17.0.2", 80, proxy=True)
    assert str(dnat) == (
        f"-t nat -A {CHAIN} -d 127.0.0.1/32 ! -i engine0 -p tcp -m tcp --dport 18080 "
        f"-j DNAT --to-destination 172.17.0.2:80"
    )
    assert str(accept) == (
        f"-t filter -A {CHAIN} -d 172.17.0.2/32 ! -i engine0 -o engine0 -p tcp -m tcp --dport 80 -j ACCEPT"
    )
    assert str(hairpin) == (
        "-t nat -A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE"
    )
    bare = port_rules("engine0", "udp", "0.0.0.0", 53, "172.17.0.2", 53, proxy=False)[0]
    assert str(bare) == f"-t nat -A {CHAIN} -p udp -m udp --dport 53 -j DNAT --to-destination 172.17.0.2:53"
    there, back = link_rules("engine0", "172.17.0.2", "172.17.0.3", [("8000-8002", "tcp")])
    assert "-s 172.17.0.2 -d 172.17.0.3 --dport 8000:8002 -j ACCEPT" in str(there)
    assert "-s 172.17.0.3 -d 172.17.0.2 --sport 8000:8002 -j ACCEPT" in str(back)


class FakeRunner:
    """Records iptables invocations; fails those whose argv contains ``fail_on``."""

    def __init__(self, fail_on: str = "") -> None:
        self.calls: list[tuple[list[str], bytes | None]] = []
        self.fail_on = fail_on

    def __call__(self, argv, input=None, capture_output=True):  # noqa: A002 - subprocess.run's name
        self.calls.append((list(argv), input))
        failed = bool(self.fail_on) and (self.fail_on in argv or (input and self.fail_on.encode() in input))
        return subprocess.CompletedProcess(argv, 1 if failed else 0, b"", b"Bad rule" if failed else b"")


def test_apply_is_one_restore_run_grouped_by_table():
    runner = FakeRunner()
    ipt = IPTables(runner=runner)
    ipt.apply(
        [
            ("-A", Rule("nat", "ENGINE", ("-p", "tcp", "--dport", "1", "-m", "comment", "--comment", "a b"))),
            ("-I", Rule("filter", "FORWARD", ("-j", "ACCEPT"))),
            ("-D", Rule("nat", "POSTROUTING", ("-j", "MASQUERADE"))),
        ]
    )
    ((argv, stdin),) = runner.calls
    assert os.path.basename(argv[0]) == "iptables-restore" and argv[1:] == ["--noflush", "--wait"]
    assert stdin.decode() == (
        '*nat\n-A ENGINE -p tcp --dport 1 -m comment --comment "a b"\n'
        "-D POSTROUTING -j MASQUERADE\nCOMMIT\n*filter\n-I FORWARD -j ACCEPT\nCOMMIT\n"
    )


def test_all_present_is_one_check_per_family():
    runner = FakeRunner()
    rules = [Rule("nat", "ENGINE", ("-j", "RETURN")), Rule("filter", "FORWARD", ("-j", "DROP"), 6)]
    assert IPTables(runner=runner).all_present(rules)
    assert [(os.path.basename(argv[0]), stdin.decode()) for argv, stdin in runner.calls] == [
        ("iptables-restore", "*nat\n-C ENGINE -j RETURN\nCOMMIT\n"),
        ("ip6tables-restore", "*filter\n-C FORWARD -j DROP\nCOMMIT\n"),
    ]
    assert not IPTables(runner=FakeRunner(fail_on="DROP")).all_present(rules)


def test_delete_all_falls_back_to_one_by_one():
    runner = FakeRunner(fail_on="-D")
    ipt = IPTables(runner=runner)
    rules = [Rule("nat", "ENGINE", ("-j", "RETURN")), Rule("filter", "FORWARD", ("-j", "DROP"))]
    ipt.delete_all(rules)
    # The batch failed (a rule was missing); each rule was then tried alone.
    assert os.path.basename(runner.calls[0][0][0]) == "iptables-restore"
    assert [[os.path.basename(c[0][0]), *c[0][1:5]] for c in runner.calls[1:]] == [
        ["iptables", "--wait", "-t", "nat", "-D"],
        ["iptables", "--wait", "-t", "filter", "-D"],
    ]
    with pytest.raises(IptablesError, match="--iptables=false"):
        IPTables(runner=FakeRunner(fail_on="-N")).run("-t", "nat", "-N", "X")


def test_probe_refuses_disabled_networking(tmp_path):
    from engine.drivers.network import NetworkOptions
    from engine.errors import NotSupported
    from engine_net_bridge.driver import BridgeDriver

    with pytest.raises(NotSupported, match="disabled"):
        BridgeDriver.probe(str(tmp_path / "network"), NetworkOptions(bridge="none"))


def test_methods_need_init(tmp_path):
    from engine.drivers.network import NetworkOptions
    from engine.errors import NotSupported
    from engine_net_bridge.driver import BridgeDriver

    driver = BridgeDriver(str(tmp_path / "network"), NetworkOptions())
    with pytest.raises(NotSupported, match="init"):
        driver.allocate_interface("x" * 64, {"NetnsPath": "/proc/self/ns/net"})
    with pytest.raises(NotSupported, match="init"):
        driver.release_interface("x" * 64)
    assert driver.settings("x" * 64) is None


# state
def test_endpoint_files_round_trip(tmp_path):
    store = Store(str(tmp_path / "network"))
    ep = Endpoint(
        "c" * 64,
        "web",
        "e" * 64,
        "172.17.0.2",
        16,
        "172.17.42.1",
        "02:42:ac:11:00:02",
        "engine0",
        1500,
        "veth1234567",
        "/run/netns/x",
        [PortMapping("tcp", 80, "0.0.0.0", 18080)],
        [ProxyRecord(42, 1234, ["0.0.0.0:18080/tcp"])],
        [Rule("nat", "ENGINE", ("-j", "RETURN"))],
    )
    store.save_endpoint(ep)
    (tmp_path / "network" / "endpoints" / ".junk.json.tmp").write_text("{")
    (tmp_path / "network" / "endpoints" / "broken.json").write_text("{")
    assert store.load_endpoints() == {ep.container_id: ep}
    store.remove_endpoint(ep.container_id)
    store.remove_endpoint(ep.container_id)
    assert store.load_endpoints() == {}
    with pytest.raises(ValueError):
        store.save_endpoint(Endpoint("../x", "", "", "", 0, "", "", "", 0, "", ""))


def test_proxy_arguments():
    assert parse_proxy_args(["--container", "abc", "3:tcp:172.17.0.2:80", "4:udp:172.17.0.2:53"]) == (
        "abc",
        [(3, "tcp", "172.17.0.2", 80), (4, "udp", "172.17.0.2", 53)],
        False,
    )
    assert parse_proxy_args(
        ["--hold", "--home", "/var/lib/engine/network", "--container", "abc", "3:tcp:172.17.0.2:80"]
    ) == ("abc", [(3, "tcp", "172.17.0.2", 80)], True)
    for bad in ([], ["3:sctp:1.2.3.4:5"], ["nonsense"]):
        with pytest.raises(ValueError):
            parse_proxy_args(bad)


@pytest.mark.parametrize("ignores_term", [False, True])
def test_stop_proxy_waits_for_the_exit_and_kills_a_stubborn_one(ignores_term):
    from engine.sys.proc import start_time
    from engine_net_bridge.portmapper import proxy_alive, stop_proxy

    script = (
        "import signal, sys, time\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignores_term else "")
        + "print('ready', flush=True)\ntime.sleep(60)\n"
    )
    # The mark in its command line makes proxy_alive take it for a proxy.
    proc = subprocess.Popen([sys.executable, "-c", script, "engine_net_bridge.proxy"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        record = ProxyRecord(proc.pid, start_time(proc.pid), [])
        assert proxy_alive(record)
        t0 = time.monotonic()
        stop_proxy(record, timeout=0.5)
        elapsed = time.monotonic() - t0
        code = proc.wait(timeout=5)
        assert code == (-signal.SIGKILL if ignores_term else -signal.SIGTERM)
        assert elapsed >= 0.5 if ignores_term else elapsed < 0.5
        stop_proxy(record)  # gone: nothing to do, no error
        assert not proxy_alive(record)
    finally:
        proc.kill()
        proc.wait()


def test_stop_proxy_leaves_other_processes_alone():
    """A PID that is not our proxy (no mark in its command line) gets no signal."""
    from engine.sys.proc import start_time
    from engine_net_bridge.portmapper import stop_proxy

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stop_proxy(ProxyRecord(proc.pid, start_time(proc.pid) or 0, []))
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
