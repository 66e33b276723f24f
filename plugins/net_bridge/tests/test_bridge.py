"""The bridge driver on the real kernel, inside the test session's network namespace.

"Containers" are network namespaces made as the daemon makes them; traffic
goes between them, the session namespace and its loopback only. Every test
ends with :func:`conftest.host_clean`'s check: the same iptables rules,
links and proxies as before it.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
from netbridge_helpers import (
    BUSYBOX,
    count_rules,
    free_port,
    http_get,
    in_ns,
    in_own_netns,
    link_names,
    proxy_pids,
    read_sysctl,
    rules_snapshot,
    write_sysctl,
)
from pyroute2 import IPRoute

from engine.errors import Conflict, HostError, InvalidParameter, NotFound, PrerequisitesNotMet
from engine_net_bridge.driver import BridgeNotFound
from engine_net_bridge.iptables import CHAIN, FORWARD_CHAIN, ISOLATION_1, ISOLATION_2

pytestmark = in_own_netns

A, B, C = "a" * 64, "b" * 64, "c" * 64


def link_info(name: str, path: str | None = None) -> dict:
    """Kind, MTU, MAC, state, master and IPv4 addresses of a link (in a namespace, if given)."""
    from engine_net_bridge.netlink import iproute_in

    with iproute_in(path) if path else IPRoute() as ipr:
        index = ipr.link_lookup(ifname=name)[0]
        msg = ipr.get_links(index)[0]
        info = msg.get_attr("IFLA_LINKINFO")
        addrs = [
            f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(family=socket.AF_INET, index=index)
        ]
        routes = [
            (r["dst_len"], r.get_attr("RTA_GATEWAY"))
            for r in ipr.get_routes(family=socket.AF_INET)
            if r.get_attr("RTA_TABLE") == 254
        ]
        return {
            "kind": info.get_attr("IFLA_INFO_KIND") if info else None,
            "mtu": msg.get_attr("IFLA_MTU"),
            "mac": msg.get_attr("IFLA_ADDRESS"),
            "up": bool(msg["flags"] & 1),
            "master": msg.get_attr("IFLA_MASTER"),
            "addrs": addrs,
            "routes": routes,
            "index": index,
        }


def ping(path: str, ip: str) -> bool:
    return in_ns(path, BUSYBOX, "ping", "-c1", "-W1", ip).returncode == 0


def wget_in(path: str, ip: str, port: int = 80) -> str:
    proc = in_ns(path, "timeout", "-s", "KILL", "2", BUSYBOX, "wget", "-q", "-O-", f"http://{ip}:{port}/")
    return proc.stdout if proc.returncode == 0 else ""


def udp_ask(host: str, port: int, payload: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(payload, (host, port))
        return s.recvfrom(65535)[0]


def dnat_packets(host_port: int) -> int:
    """Packets counted on the DNAT rule of ``host_port``."""
    out = subprocess.run(["iptables-save", "-c", "-t", "nat"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if f"-A {CHAIN} " in line and f"--dport {host_port} " in line and "DNAT" in line:
            return int(line[1:].split(":", 1)[0])
    raise AssertionError(f"no DNAT rule for {host_port}:\n{out}")


# init: the bridge and its address
def test_creates_the_default_bridge(make_driver):
    driver = make_driver()
    facts = driver.init()
    assert facts["Bridge"] == "engine0" and facts["Subnet"] == "172.17.0.0/16"
    assert facts["Gateway"] == facts["IPAddress"] == "172.17.42.1" and facts["IPPrefixLen"] == 16
    br = link_info("engine0")
    assert br["kind"] == "bridge" and br["up"] and br["addrs"] == ["172.17.42.1/16"]
    # No default route in the sandbox: MTU falls back to 1500.
    assert br["mtu"] == facts["Mtu"] == 1500
    first = int(br["mac"].split(":")[0], 16)
    assert br["mac"] == facts["MacAddress"] and first & 2 and not first & 1
    assert read_sysctl("ip_forward") == "1"
    rules = rules_snapshot()
    for expected in (
        "nat -A POSTROUTING -s 172.17.0.0/16 ! -o engine0 -j MASQUERADE",
        f"nat -A PREROUTING -m addrtype --dst-type LOCAL -j {CHAIN}",
        f"nat -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j {CHAIN}",
        f"filter -A FORWARD -j {ISOLATION_1}",
        f"filter -A FORWARD -j {FORWARD_CHAIN}",
        f"filter -A {FORWARD_CHAIN} -o engine0 -j {CHAIN}",
        f"filter -A {FORWARD_CHAIN} -o engine0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"filter -A {FORWARD_CHAIN} -i engine0 ! -o engine0 -j ACCEPT",
        f"filter -A {FORWARD_CHAIN} -i engine0 -o engine0 -j ACCEPT",
        f"filter -A {ISOLATION_1} -i engine0 ! -o engine0 -j {ISOLATION_2}",
        f"filter -A {ISOLATION_2} -o engine0 -j DROP",
        f"nat :{CHAIN}",
        f"filter :{CHAIN}",
    ):
        assert expected in rules
    doc = json.load(open(os.path.join(driver.home, "bridge.json")))
    assert doc["CreatedBridge"] and doc["Subnet"] == "172.17.0.0/16"
    # A second init (a restart) keeps the bridge and its address.
    again = make_driver(home=driver.home)
    assert again.init()["NetworkID"] == facts["NetworkID"]
    assert link_info("engine0")["mac"] == br["mac"]


def test_address_avoids_routes_and_nameservers(make_driver, dummy, tmp_path):
    dummy("ovl0", "172.17.9.1/16")  # its route covers the first candidate
    assert make_driver().init()["IPAddress"] == "10.0.42.1"
    make_driver().shutdown()
    from netbridge_helpers import delete_link

    delete_link("engine0")
    resolv = tmp_path / "resolv-ns"
    resolv.write_text("nameserver 10.0.0.2\n")
    assert make_driver(resolv=str(resolv)).init()["Subnet"] == "10.1.0.0/16"


def test_mtu_from_default_route_or_flag(make_driver, dummy, container):
    dummy("up0", "192.0.2.1/24", mtu=1400, default_route=True)
    driver = make_driver()
    assert driver.init()["Mtu"] == 1400
    settings = driver.allocate_interface(A, {"NetnsPath": container("a")})
    assert settings["Mtu"] == 1400
    assert link_info(settings["HostVeth"])["mtu"] == 1400
    assert link_info("eth0", settings["SandboxKey"])["mtu"] == 1400
    driver.release_interface(A)
    assert make_driver(mtu=1450).init()["Mtu"] == 1450


def test_bip_and_fixed_cidr(make_driver, container):
    driver = make_driver(bip="10.55.0.1/16", fixed_cidr="10.55.7.0/24")
    facts = driver.init()
    assert facts["Subnet"] == "10.55.0.0/16" and facts["FixedCIDR"] == "10.55.7.0/24"
    assert link_info("engine0")["addrs"] == ["10.55.0.1/16"]
    settings = driver.allocate_interface(A, {"NetnsPath": container("a")})
    assert IPv4Address(settings["IPAddress"]) in IPv4Network("10.55.7.0/24")
    assert settings["IPPrefixLen"] == 16 and settings["Gateway"] == "10.55.0.1"
    driver.release_interface(A)
    with pytest.raises(InvalidParameter, match="not inside the bridge's subnet"):
        make_driver(bip="10.55.0.1/16", fixed_cidr="10.56.0.0/24").init()


def test_existing_bridge_and_its_errors(make_driver, dummy, container):
    with IPRoute() as ipr:
        ipr.link("add", ifname="brtest", kind="bridge")
        index = ipr.link_lookup(ifname="brtest")[0]
        ipr.addr("add", index=index, address="10.66.0.1", prefixlen=24)
    driver = make_driver(bridge="brtest")
    facts = driver.init()
    assert facts["Bridge"] == "brtest" and facts["Subnet"] == "10.66.0.0/24"
    assert link_info("brtest")["up"]
    settings = driver.allocate_interface(A, {"NetnsPath": container("a")})
    assert settings["Bridge"] == "brtest" and link_info(settings["HostVeth"])["master"] == index
    assert ping(settings["SandboxKey"], "10.66.0.1")
    driver.release_interface(A)
    driver.shutdown()
    assert "brtest" in link_names("bridge")  # an operator's bridge is never deleted

    with pytest.raises(BridgeNotFound, match="bridge not found: nosuch"):
        make_driver(bridge="nosuch").init()
    with IPRoute() as ipr:
        ipr.link("add", ifname="vnot0", kind="veth", peer="vnot1")
    with pytest.raises(InvalidParameter, match="vnot0 is not a bridge"):
        make_driver(bridge="vnot0").init()
    # The default bridge exists with another address: --bip must match it (seed ch. 6 §3.3.4).
    with IPRoute() as ipr:
        ipr.link("add", ifname="engine0", kind="bridge")
        ipr.addr("add", index=ipr.link_lookup(ifname="engine0")[0], address="10.77.0.1", prefixlen=24)
    with pytest.raises(
        InvalidParameter,
        match=r"bridge ip \(10.77.0.1\) does not match existing bridge "
        r"configuration 10.88.0.1",
    ):
        make_driver(bip="10.88.0.1/24").init()
    assert make_driver(bip="10.77.0.1/24").init()["Subnet"] == "10.77.0.0/24"
    assert rules_snapshot()  # sanity: the failed inits left the later one working


# interfaces
def test_two_containers_ping_each_other(make_driver, container):
    driver = make_driver()
    driver.init()
    a = driver.allocate_interface(A, {"NetnsPath": container("a"), "Name": "/web"})
    b = driver.allocate_interface(B, {"NetnsPath": container("b"), "Name": "db"})
    assert a["IPAddress"] == "172.17.0.2" and b["IPAddress"] == "172.17.0.3"
    assert a["MacAddress"] == "02:42:ac:11:00:02" and len(a["EndpointID"]) == 64
    eth0 = link_info("eth0", a["SandboxKey"])
    assert eth0["up"] and eth0["addrs"] == ["172.17.0.2/16"] and eth0["mac"] == a["MacAddress"]
    assert (0, "172.17.42.1") in eth0["routes"]
    assert link_info("lo", a["SandboxKey"])["up"]
    veth = link_info(a["HostVeth"])
    assert veth["kind"] == "veth" and veth["up"] and veth["master"] == link_info("engine0")["index"]
    assert a["HostVeth"].startswith("veth") and len(a["HostVeth"]) == 11
    assert ping(a["SandboxKey"], b["IPAddress"]) and ping(b["SandboxKey"], a["IPAddress"])
    assert ping(a["SandboxKey"], "172.17.42.1")
    (network,) = driver.networks()
    assert network["Name"] == "bridge" and network["Driver"] == "bridge" and network["Scope"] == "local"
    assert network["IPAM"]["Config"] == [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.42.1"}]
    assert network["Options"]["com.docker.network.bridge.name"] == "engine0"
    assert network["Containers"][A] == {
        "Name": "web",
        "EndpointID": a["EndpointID"],
        "MacAddress": a["MacAddress"],
        "IPv4Address": "172.17.0.2/16",
        "IPv6Address": "",
    }
    driver.release_interface(A)
    driver.release_interface(A)  # twice is fine
    assert a["HostVeth"] not in link_names()
    assert not os.path.exists(os.path.join(driver.home, "endpoints", A + ".json"))
    assert driver.settings(A) is None and driver.settings(B)["IPAddress"] == b["IPAddress"]


def test_interface_errors_leave_nothing(make_driver, container, tmp_path):
    driver = make_driver()
    driver.init()
    with pytest.raises(InvalidParameter, match="does not exist"):
        driver.allocate_interface(A, {"NetnsPath": str(tmp_path / "nope")})
    path = container("a")
    driver.allocate_interface(A, {"NetnsPath": path, "RequestedIP": "172.17.3.3"})
    assert driver.settings(A)["IPAddress"] == "172.17.3.3"
    with pytest.raises(Conflict, match="Address already in use"):
        driver.allocate_interface(B, {"NetnsPath": container("b"), "RequestedIP": "172.17.3.3"})
    # The namespace already has an eth0: the new pair is taken back.
    with pytest.raises(Conflict, match="already has an eth0"):
        driver.allocate_interface(C, {"NetnsPath": path})
    assert driver.settings(B) is None and driver.settings(C) is None
    assert len(link_names("veth")) == 1
    assert sorted(os.listdir(os.path.join(driver.home, "endpoints"))) == [A + ".json"]
    driver.release_interface(A)


def test_icc_false_blocks_and_link_allows(make_driver, container, servers):
    driver = make_driver(icc=False)
    driver.init()
    assert f"filter -A {FORWARD_CHAIN} -i engine0 -o engine0 -j DROP" in rules_snapshot()
    web = driver.allocate_interface(A, {"NetnsPath": container("web")})
    db = driver.allocate_interface(B, {"NetnsPath": container("db")})
    servers.httpd(db["SandboxKey"], 80, "from db\n")
    assert not ping(web["SandboxKey"], db["IPAddress"])
    assert wget_in(web["SandboxKey"], db["IPAddress"]) == ""
    driver.link(A, B, ["80/tcp"], True)
    assert wget_in(web["SandboxKey"], db["IPAddress"]) == "from db\n"
    assert not ping(web["SandboxKey"], db["IPAddress"])  # only the linked port
    driver.link(A, B, ["80/tcp"], True)  # idempotent
    rules = rules_snapshot()
    assert len([r for r in rules if "-s 172.17.0.2/32 -d 172.17.0.3/32" in r and "--dport 80" in r]) == 1
    driver.link({"IPAddress": web["IPAddress"]}, {"IPAddress": db["IPAddress"]}, ["80/tcp"], False)
    assert wget_in(web["SandboxKey"], db["IPAddress"]) == ""
    # Released containers take their link rules with them.
    driver.link(A, B, ["80/tcp", "443/tcp"], True)
    before = rules_snapshot()
    driver.release_interface(B)
    assert not any(db["IPAddress"] in r for r in rules_snapshot())
    assert len(before - rules_snapshot()) == 4  # a pair of rules per linked port
    with pytest.raises(NotFound):
        driver.link(A, B, ["80/tcp"], True)
    driver.release_interface(A)


BR_NF = "/proc/sys/net/bridge/bridge-nf-call-iptables"


@pytest.fixture
def bridged_traffic_unfiltered() -> Iterator[None]:
    """``bridge-nf-call-iptables`` at 0 (the kernel's default is 1), as on a host that never needed it.

    The switch is per network namespace: this changes the test session's
    only. Put back afterwards.
    """
    with open(BR_NF) as fh:
        saved = fh.read().strip()
    with open(BR_NF, "w") as fh:
        fh.write("0\n")
    yield
    with open(BR_NF, "w") as fh:
        fh.write(saved + "\n")


def br_nf() -> str:
    with open(BR_NF) as fh:
        return fh.read().strip()


def test_icc_false_makes_bridged_traffic_pass_iptables(make_driver, container, bridged_traffic_unfiltered):
    """Without br_netfilter's switch the icc DROP never sees traffic that stays on the bridge."""
    driver = make_driver(icc=False)
    driver.init()
    assert br_nf() == "1"
    a = driver.allocate_interface(A, {"NetnsPath": container("a")})
    b = driver.allocate_interface(B, {"NetnsPath": container("b")})
    assert not ping(a["SandboxKey"], b["IPAddress"])
    assert json.load(open(os.path.join(driver.home, "bridge.json")))["Sysctls"] == {BR_NF: "0"}
    driver.close()
    again = make_driver(home=driver.home, icc=False)  # a restart keeps it on, and the old value recorded
    again.init()
    assert br_nf() == "1"
    assert json.load(open(os.path.join(driver.home, "bridge.json")))["Sysctls"] == {BR_NF: "0"}
    again.restore(A)
    again.restore(B)
    assert not ping(a["SandboxKey"], b["IPAddress"])
    again.shutdown()
    assert br_nf() == "0"  # as it was


def test_no_userland_proxy_makes_bridged_traffic_pass_iptables(
    make_driver, container, servers, dummy, bridged_traffic_unfiltered
):
    """A container reaching another's published port: the reply must be un-DNATed, which it is only if the
    bridged packet passes conntrack."""
    dummy("pub2", "10.125.0.1/24")
    driver = make_driver(userland_proxy=False)
    driver.init()
    assert br_nf() == "1"
    web = driver.allocate_interface(A, {"NetnsPath": container("web")})
    other = driver.allocate_interface(B, {"NetnsPath": container("other")})
    servers.httpd(web["SandboxKey"], 80, "bridged\n")
    port = free_port()
    driver.allocate_ports(A, {"80/tcp": [{"HostPort": str(port)}]})
    assert wget_in(other["SandboxKey"], "10.125.0.1", port) == "bridged\n"
    driver.shutdown()
    assert br_nf() == "0"


def test_icc_true_with_the_proxy_leaves_br_netfilter_alone(make_driver, bridged_traffic_unfiltered):
    driver = make_driver()
    driver.init()
    assert br_nf() == "0"
    assert json.load(open(os.path.join(driver.home, "bridge.json")))["Sysctls"] == {}


def test_missing_br_netfilter_fails_init_clearly(make_driver, tmp_path):
    """A kernel without the module cannot be made here: a fake /proc/sys without net/bridge, and a fake modprobe."""
    proc_sys = tmp_path / "proc-sys"
    (proc_sys / "net" / "ipv4").mkdir(parents=True)
    modprobe = tmp_path / "modprobe"
    calls = tmp_path / "calls"
    modprobe.write_text(
        f"#!/bin/sh\necho \"$@\" >> {calls}\necho 'modprobe: FATAL: Module br_netfilter not found' >&2\nexit 1\n"
    )
    modprobe.chmod(0o755)
    driver = make_driver(icc=False, driver_args={"proc_sys": str(proc_sys), "modprobe": str(modprobe)})
    before = link_names()
    with pytest.raises(PrerequisitesNotMet) as info:
        driver.init()
    assert calls.read_text() == "br_netfilter\n"
    message = str(info.value)
    assert "Module br_netfilter not found" in message and "--icc=false needs the br_netfilter kernel module" in message
    assert link_names() == before  # refused before the bridge was made
    # The module loads: init goes on and turns the switch on.
    modprobe.write_text(
        f"#!/bin/sh\nmkdir -p {proc_sys}/net/bridge\necho 0 > {proc_sys}/net/bridge/bridge-nf-call-iptables\n"
    )
    driver = make_driver(userland_proxy=False, driver_args={"proc_sys": str(proc_sys), "modprobe": str(modprobe)})
    driver.init()
    assert (proc_sys / "net" / "bridge" / "bridge-nf-call-iptables").read_text() == "1\n"
    driver.shutdown()
    assert (proc_sys / "net" / "bridge" / "bridge-nf-call-iptables").read_text() == "0\n"


def test_icc_true_needs_no_link_rules(make_driver, container):
    driver = make_driver()
    driver.init()
    driver.allocate_interface(A, {"NetnsPath": container("a")})
    driver.allocate_interface(B, {"NetnsPath": container("b")})
    before = rules_snapshot()
    driver.link(A, B, ["80/tcp"], True)
    assert rules_snapshot() == before
    assert json.load(open(os.path.join(driver.home, "links.json")))[0]["Port"] == "80/tcp"


def test_concurrent_allocations_get_distinct_addresses_and_ports(make_driver, container):
    from concurrent.futures import ThreadPoolExecutor

    driver = make_driver()
    driver.init()
    ids = [f"{n:064x}" for n in range(8)]
    paths = {cid: container(f"c{n}") for n, cid in enumerate(ids)}

    def start(cid: str) -> tuple[str, str]:
        settings = driver.allocate_interface(cid, {"NetnsPath": paths[cid]})
        made = driver.allocate_ports(cid, {"80/tcp": [{}]})
        return settings["IPAddress"], made["80/tcp"][0]["HostPort"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(start, ids))
    assert len({ip for ip, _ in results}) == 8 and len({port for _, port in results}) == 8
    assert ping(paths[ids[0]], results[-1][0])
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(driver.release_interface, ids))
    assert link_names("veth") == set() and proxy_pids() == set()


def test_without_iptables(make_driver, container, servers):
    before = rules_snapshot()
    driver = make_driver(iptables=False, ip_forward=False)
    driver.init()
    assert rules_snapshot() == before
    web = driver.allocate_interface(A, {"NetnsPath": container("web")})
    servers.httpd(web["SandboxKey"], 80, "proxied\n")
    port = free_port()
    driver.allocate_ports(A, {"80/tcp": [{"HostPort": str(port)}]})
    assert rules_snapshot() == before
    assert http_get("127.0.0.1", port) == "proxied\n"  # the proxy alone
    driver.link(A, {"IPAddress": "172.17.0.9"}, ["80/tcp"], True)
    assert rules_snapshot() == before
    driver.release_interface(A)


# published ports
def test_published_tcp_port_via_proxy_and_dnat(make_driver, container, servers, dummy):
    dummy("pub0", "10.123.0.1/24")  # the session namespace's "own" address
    driver = make_driver()
    driver.init()
    web = driver.allocate_interface(A, {"NetnsPath": container("web"), "Name": "web"})
    servers.httpd(web["SandboxKey"], 80, "hello\n")
    port = free_port()
    made = driver.allocate_ports(A, {"80/tcp": [{"HostIp": "", "HostPort": str(port)}]})
    assert made == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}
    assert driver.settings(A)["Ports"] == made
    assert http_get("127.0.0.1", port) == "hello\n"  # loopback: the userland proxy
    before = dnat_packets(port)
    assert http_get("10.123.0.1", port) == "hello\n"  # the host's own address: DNAT in OUTPUT
    assert dnat_packets(port) > before
    # A container reaching a published port goes through the proxy too.
    other = driver.allocate_interface(B, {"NetnsPath": container("other")})
    assert wget_in(other["SandboxKey"], "10.123.0.1", port) == "hello\n"
    proxies = proxy_pids()
    assert len(proxies) == 1
    record = json.load(open(os.path.join(driver.home, "endpoints", A + ".json")))["Proxies"][0]
    assert record["Pid"] in proxies and record["Ports"] == [f"0.0.0.0:{port}/tcp"]
    with open(f"/proc/{record['Pid']}/cmdline", "rb") as fh:
        assert b"-S" in fh.read().split(b"\0")  # no site-packages: lean
    driver.release_ports(A)  # unpublished, still attached
    assert proxy_pids() == set() and http_get("127.0.0.1", port, timeout=1) == ""
    assert not any(f"--dport {port} " in r for r in rules_snapshot())
    assert driver.settings(A)["Ports"] == {} and web["HostVeth"] in link_names("veth")
    driver.release_interface(A)
    driver.release_interface(B)


def test_proxy_relays_large_streams_with_half_close(make_driver, container, servers):
    driver = make_driver()
    driver.init()
    path = container("a")
    driver.allocate_interface(A, {"NetnsPath": path})
    servers.tcp_digest(path, 9000)
    made = driver.allocate_ports(A, {"9000/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]})
    port = int(made["9000/tcp"][0]["HostPort"])
    import hashlib

    payload = os.urandom(3 * 1024 * 1024 + 17)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)  # the server answers only after our EOF
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.decode() == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"
    driver.release_interface(A)


def test_published_udp_port(make_driver, container, servers):
    driver = make_driver()
    driver.init()
    path = container("dns")
    driver.allocate_interface(A, {"NetnsPath": path})
    servers.udp_echo(path, 5353)
    made = driver.allocate_port(A, {"Port": "5353/udp", "HostPort": "15353"})  # the seed's single-port job
    assert made == {"Port": "5353/udp", "HostIp": "0.0.0.0", "HostPort": "15353"}
    assert udp_ask("127.0.0.1", 15353, b"ping") == b"echo:ping"
    assert udp_ask("127.0.0.1", 15353, b"again") == b"echo:again"
    assert (
        "nat -A ENGINE ! -i engine0 -p udp -m udp --dport 15353 -j DNAT --to-destination "
        f"{driver.settings(A)['IPAddress']}:5353" in rules_snapshot()
    )
    driver.release_interface(A)


def test_publishing_without_userland_proxy(make_driver, container, servers, dummy):
    dummy("pub1", "10.124.0.1/24")
    driver = make_driver(userland_proxy=False)
    driver.init()
    assert read_sysctl("conf/engine0/route_localnet") == "1"
    web = driver.allocate_interface(A, {"NetnsPath": container("web")})
    servers.httpd(web["SandboxKey"], 80, "direct\n")
    port = free_port()
    driver.allocate_ports(A, {"80/tcp": [{"HostPort": str(port)}]})
    assert len(proxy_pids()) == 1  # it only holds the port (see below)
    assert http_get("127.0.0.1", port) == "direct\n"  # DNAT of loopback, route_localnet
    assert dnat_packets(port) > 0
    # The container reaches its own published port: DNAT back out of its
    # bridge port (hairpin mode) with the source masqueraded.
    assert wget_in(web["SandboxKey"], "10.124.0.1", port) == "direct\n"
    # The port is still ours: a second container cannot take it.
    driver.allocate_interface(B, {"NetnsPath": container("b")})
    with pytest.raises(Conflict, match="port is already allocated"):
        driver.allocate_ports(B, {"80/tcp": [{"HostPort": str(port)}]})
    # Another program's port: moby's dummy proxy says it, without "userland proxy".
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        taken = foreign.getsockname()[1]
        with pytest.raises(Conflict, match=rf"\): listen tcp4 127.0.0.1:{taken}: bind: address already in use$"):
            driver.allocate_ports(B, {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(taken)}]})
    # An address this host does not have: the kernel's words, a 500 as in moby.
    with pytest.raises(
        HostError, match=r"listen tcp4 10.255.255.1:18089: bind: cannot assign requested address$"
    ) as err:
        driver.allocate_ports(B, {"80/tcp": [{"HostIp": "10.255.255.1", "HostPort": "18089"}]})
    assert err.value.http_status == 500
    driver.shutdown()
    assert read_sysctl("conf/engine0/route_localnet") == "0"


def cannot_bind(proto: str, host: str, port: int) -> bool:
    """Whether another program (with SO_REUSEADDR, and listening for TCP) is refused ``host:port``."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            if proto == "tcp":
                s.listen()
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE
            return True
    return False


def test_without_userland_proxy_the_host_ports_stay_held(make_driver, container, servers):
    """Docker's dummy proxy: another program must not bind a published port and lose its traffic to DNAT."""
    first = make_driver(userland_proxy=False)
    first.init()
    web = first.allocate_interface(A, {"NetnsPath": container("web")})
    servers.httpd(web["SandboxKey"], 80, "held\n")
    tcp, udp = free_port(), free_port()
    first.allocate_ports(A, {"80/tcp": [{"HostPort": str(tcp)}], "53/udp": [{"HostPort": str(udp)}]})

    def held() -> bool:
        return all(
            cannot_bind(proto, host, port)
            for proto, port in (("tcp", tcp), ("udp", udp))
            for host in ("0.0.0.0", "127.0.0.1")
        )

    assert held()
    (holder,) = proxy_pids()
    record = json.load(open(os.path.join(first.home, "endpoints", A + ".json")))["Proxies"][0]
    assert record["Pid"] == holder and record["Hold"] is True
    with open(f"/proc/{holder}/cmdline", "rb") as fh:
        assert b"--hold" in fh.read().split(b"\0")
    assert http_get("127.0.0.1", tcp) == "held\n"  # DNAT serves it, not the holder
    first.close()
    assert held()  # the daemon is away: still held
    second = make_driver(home=first.home, userland_proxy=False)
    second.init()
    second.restore(A)
    assert proxy_pids() == {holder} and held()
    second.close()
    os.kill(holder, signal.SIGKILL)  # it died while the daemon was away: restore holds the ports again
    deadline = time.monotonic() + 5
    while holder in proxy_pids() and time.monotonic() < deadline:
        time.sleep(0.02)
    third = make_driver(home=first.home, userland_proxy=False)
    third.init()
    third.restore(A)
    assert len(proxy_pids()) == 1 and proxy_pids() != {holder} and held()
    assert http_get("127.0.0.1", tcp) == "held\n"
    third.release_interface(A)
    assert proxy_pids() == set() and not cannot_bind("tcp", "0.0.0.0", tcp)


def test_a_restart_with_the_other_userland_proxy_setting_swaps_the_proxy(make_driver, container, servers):
    first = make_driver(userland_proxy=False)
    first.init()
    web = first.allocate_interface(A, {"NetnsPath": container("web")})
    servers.httpd(web["SandboxKey"], 80, "swapped\n")
    port = free_port()
    first.allocate_ports(A, {"80/tcp": [{"HostPort": str(port)}]})
    (holder,) = proxy_pids()
    first.close()
    second = make_driver(home=first.home)  # the proxy is on now: 127.0.0.1 is no longer DNATed
    second.init()
    second.restore(A)
    (relay,) = proxy_pids()
    assert relay != holder
    assert json.load(open(os.path.join(first.home, "endpoints", A + ".json")))["Proxies"][0]["Hold"] is False
    assert http_get("127.0.0.1", port) == "swapped\n"
    second.close()
    third = make_driver(home=first.home, userland_proxy=False)
    third.init()
    third.restore(A)
    assert proxy_pids() != {relay} and len(proxy_pids()) == 1 and cannot_bind("tcp", "0.0.0.0", port)
    assert http_get("127.0.0.1", port) == "swapped\n"
    third.release_interface(A)


def test_ephemeral_ports_and_ranges(make_driver, container):
    saved = read_sysctl("ip_local_port_range")
    write_sysctl("ip_local_port_range", "41000 41003")
    blocker = socket.socket()
    try:
        blocker.bind(("0.0.0.0", 41001))
        blocker.listen()
        driver = make_driver()
        driver.init()
        driver.allocate_interface(A, {"NetnsPath": container("a")})
        made = driver.allocate_ports(A, {"80/tcp": [{}], "81/tcp": [{"HostPort": ""}], "53/udp": [{}]})
        # 41001 is taken by a foreign listener; udp has its own space.
        assert made == {
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "41000"}],
            "81/tcp": [{"HostIp": "0.0.0.0", "HostPort": "41002"}],
            "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "41000"}],
        }
        driver.allocate_interface(B, {"NetnsPath": container("b")})
        assert driver.allocate_ports(B, {"80/tcp": [{}]})["80/tcp"][0]["HostPort"] == "41003"
        with pytest.raises(Conflict, match="all ports are allocated"):
            driver.allocate_ports(B, {"82/tcp": [{}]})
        base = free_port()
        ranged = {"90/tcp": [{"HostPort": f"{base}-{base + 5}"}]}
        assert driver.allocate_ports(B, ranged)["90/tcp"][0]["HostPort"] == str(base)
        assert driver.allocate_ports(A, ranged)["90/tcp"][0]["HostPort"] == str(base + 1)
        driver.release_interface(A)
        driver.release_interface(B)
    finally:
        blocker.close()
        write_sysctl("ip_local_port_range", saved.replace("\t", " "))


def test_port_already_allocated_leaves_nothing(make_driver, container):
    driver = make_driver()
    driver.init()
    driver.allocate_interface(A, {"NetnsPath": container("web")})
    driver.allocate_interface(B, {"NetnsPath": container("web2"), "Name": "web2"})
    port = free_port()
    driver.allocate_ports(A, {"80/tcp": [{"HostPort": str(port)}]})
    rules, proxies = rules_snapshot(), proxy_pids()
    endpoint_id = driver.settings(B)["EndpointID"]
    # Taken by another container (on 0.0.0.0, so 127.0.0.1 collides too).
    for host_ip in ("", "127.0.0.1"):
        with pytest.raises(Conflict) as info:
            driver.allocate_ports(B, {"80/tcp": [{"HostIp": host_ip, "HostPort": str(port)}]})
    assert str(info.value) == (
        f"driver failed programming external connectivity on endpoint web2 ({endpoint_id}): "
        f"Bind for 127.0.0.1:{port} failed: port is already allocated"
    )
    assert info.value.http_status == 500  # as moby answers the start request
    # Taken by some other program: docker-proxy's words (not "already
    # allocated"); all or nothing, the free one is not kept.
    other, spare = free_port(), None
    with socket.socket() as foreign, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as foreign_udp:
        foreign.bind(("0.0.0.0", other))
        foreign.listen()
        foreign_udp.bind(("127.0.0.1", other))
        spare = other + 1 if other + 1 != port else other + 2
        with pytest.raises(Conflict) as info:
            driver.allocate_ports(B, {"81/tcp": [{"HostPort": str(spare)}], "82/tcp": [{"HostPort": str(other)}]})
        assert str(info.value) == (
            f"driver failed programming external connectivity on endpoint web2 "
            f"({endpoint_id}): Error starting userland proxy: listen tcp4 0.0.0.0:{other}: "
            f"bind: address already in use"
        )
        assert info.value.http_status == 500
        with pytest.raises(
            Conflict,
            match=rf"Error starting userland proxy: listen udp4 0.0.0.0:{other}: "
            rf"bind: address already in use$",
        ):
            driver.allocate_ports(B, {"53/udp": [{"HostPort": str(other)}]})
        # In a range, a port held elsewhere is skipped.
        made = driver.allocate_ports(B, {"83/tcp": [{"HostPort": f"{other}-{spare}"}]})
        assert made == {"83/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(spare)}]}
        driver.release_ports(B)
    assert rules_snapshot() == rules and proxy_pids() == proxies
    assert driver.settings(B)["Ports"] == {}
    saved = json.load(open(os.path.join(driver.home, "endpoints", B + ".json")))
    assert saved["Ports"] == [] and saved["Rules"] == [] and saved["Proxies"] == []
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", spare))  # really free again
    with pytest.raises(InvalidParameter):
        driver.allocate_ports(B, {"80/tcp": [{"HostPort": "nope"}]})
    with pytest.raises(NotFound):
        driver.allocate_ports(C, {"80/tcp": [{}]})
    driver.release_interface(A)
    driver.release_interface(B)


# restarts
def test_restart_keeps_allocations_and_proxies(make_driver, container, servers):
    first = make_driver()
    first.init()
    web = first.allocate_interface(A, {"NetnsPath": container("web"), "Name": "web"})
    servers.httpd(web["SandboxKey"], 80, "still here\n")
    port = free_port()
    first.allocate_ports(A, {"80/tcp": [{"HostPort": str(port)}]})
    first.link(A, {"IPAddress": "172.17.99.99"}, ["80/tcp"], True)
    (proxy,) = proxy_pids()
    first.close()  # the daemon stops; the container keeps running

    second = make_driver(home=first.home)
    ran: list[str] = []  # what each iptables program run was asked to do
    run = second._ipt._run

    def spy(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
        lines = (kw.get("input") or b"").decode().splitlines() if argv[0].endswith("-restore") else [" ".join(argv)]
        ran.extend(line.split()[0] for line in lines if not line.startswith(("*", "COMMIT")))
        return run(argv, **kw)

    second._ipt._run = spy
    second.init()
    # The rules are in place as recorded: init only checks them (-C lines in one iptables-restore
    # per IP family) and the published port's NAT is never gone, even before restore.
    assert ran and set(ran) == {"-C"}
    assert any(f"--dport {port} " in r for r in rules_snapshot())
    assert http_get("127.0.0.1", port) == "still here\n"  # the proxy never stopped
    restored = second.restore(A)
    assert restored["IPAddress"] == web["IPAddress"] and restored["HostVeth"] == web["HostVeth"]
    assert restored["EndpointID"] == web["EndpointID"] and restored["MacAddress"] == web["MacAddress"]
    assert restored["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}
    assert proxy_pids() == {proxy}
    assert set(ran) == {"-C"}  # restore added none
    assert sum(f"--dport {port} " in r for r in rules_snapshot()) == 1
    # The address in use is never handed out again, nor the port.
    b = second.allocate_interface(B, {"NetnsPath": container("b")})
    assert b["IPAddress"] != web["IPAddress"]
    with pytest.raises(Conflict):
        second.allocate_ports(B, {"80/tcp": [{"HostPort": str(port)}]})
    assert second.prune({A, B}) == []
    second.close()

    # The proxy died while the daemon was away: restore starts a new one.
    os.kill(proxy, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while proxy in proxy_pids() and time.monotonic() < deadline:
        time.sleep(0.02)
    third = make_driver(home=first.home)
    third.init()
    third.restore(A)
    third.restore(B)
    (new_proxy,) = proxy_pids()
    assert new_proxy != proxy
    assert http_get("127.0.0.1", port) == "still here\n"
    third.release_interface(A)
    third.release_interface(B)


def test_a_restart_keeps_the_rules_unless_the_configuration_changed(make_driver, container):
    first = make_driver(icc=False)
    first.init()
    a, b = (first.allocate_interface(cid, {"NetnsPath": container(cid[:8])})["IPAddress"] for cid in (A, B))
    first.allocate_ports(A, {"80/tcp": [{}]})
    first.link(B, A, ["80/tcp"], True)
    before = rules_snapshot()
    assert any(f"-s {b}/32 -d {a}/32" in r for r in before)  # the link's ACCEPT
    first.close()
    second = make_driver(home=first.home, icc=False)
    second.init()
    assert rules_snapshot() == before
    second.restore(A)
    second.restore(B)
    assert rules_snapshot() == before
    second.close()
    # icc on now: every rule is made again for it, and a link needs none.
    third = make_driver(home=first.home)
    third.init()
    third.restore(A)
    third.restore(B)
    rules = rules_snapshot()
    assert not any(f"-s {b}/32 -d {a}/32" in r or r.endswith("-i engine0 -o engine0 -j DROP") for r in rules)
    assert sum(r.endswith("-i engine0 -o engine0 -j ACCEPT") for r in rules) == 1
    assert sum("DNAT" in r for r in rules) == 1
    third.release_interface(A)
    third.release_interface(B)


def test_init_stops_a_proxy_the_killed_daemon_never_recorded(make_driver, container, servers, tmp_path):
    """Killed between the proxy's start and the endpoint file naming it: the next init stops that proxy
    (it would hold the port for good), and no proxy of another daemon (another root)."""
    from engine_net_bridge.portmapper import start_proxy, stop_proxy

    first = make_driver()
    first.init()
    web = first.allocate_interface(A, {"NetnsPath": container("web")})
    servers.httpd(web["SandboxKey"], 80, "one proxy\n")
    port = free_port()
    first.allocate_ports(A, {"80/tcp": [{"HostPort": str(port)}]})
    (orphan,) = proxy_pids()
    with open(f"/proc/{orphan}/cmdline", "rb") as fh:
        argv = fh.read().split(b"\0")
    assert argv[argv.index(b"--home") + 1] == os.path.realpath(first.home).encode()
    # The state that crash leaves: ports and rules recorded, the proxy not.
    path = os.path.join(first.home, "endpoints", A + ".json")
    doc = json.load(open(path))
    doc["Proxies"] = []
    with open(path, "w") as fh:
        json.dump(doc, fh)
    other_home = tmp_path / "other-root" / "network"
    other_home.mkdir(parents=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        foreign = start_proxy(B, [(sock, "tcp", "127.0.0.1", 9)], str(other_home / "proxy.log"), home=str(other_home))
    try:
        second = make_driver(home=first.home)  # no close(): the first one was killed
        second.init()
        assert proxy_pids() == {foreign.pid}
        second.restore(A)  # binds the port again, free now, for a new proxy
        (proxy,) = proxy_pids() - {foreign.pid}
        assert json.load(open(path))["Proxies"][0]["Pid"] == proxy
        assert http_get("127.0.0.1", port) == "one proxy\n"
        second.close()
        third = make_driver(home=first.home)  # a recorded proxy is no orphan
        third.init()
        assert proxy_pids() == {foreign.pid, proxy}
        third.release_interface(A)
        assert proxy_pids() == {foreign.pid}
    finally:
        stop_proxy(foreign)


def test_one_container_port_on_several_host_ports_has_its_shared_rules_once(make_driver, container):
    """The hairpin MASQUERADE and the FORWARD accept name the container port only: one copy, through restarts."""
    first = make_driver()
    first.init()
    ip = first.allocate_interface(A, {"NetnsPath": container("web")})["IPAddress"]
    p1 = free_port()
    first.allocate_ports(A, {"80/tcp": [{"HostPort": str(p1)}, {"HostPort": str(p1 + 1)}]})
    first.allocate_ports(A, {"80/tcp": [{"HostPort": str(p1 + 2)}]})  # one more, in a later call
    hairpin = (f"-A POSTROUTING -s {ip}/32 -d {ip}/32 ", "--dport 80 ", "MASQUERADE")
    accept = (f"-A {CHAIN} -d {ip}/32 ", "--dport 80 ", "ACCEPT")

    def counts() -> tuple[int, int, int]:
        return count_rules(*hairpin), count_rules(*accept), count_rules("DNAT", f"{ip}:80")

    assert counts() == (1, 1, 3)
    recorded = json.load(open(os.path.join(first.home, "endpoints", A + ".json")))["Rules"]
    assert len(recorded) == len({tuple(r) for r in recorded}) == 5
    first.close()

    def restart(after_init: tuple[int, int, int]) -> None:
        again = make_driver(home=first.home)
        again.init()
        assert counts() == after_init
        again.restore(A)
        assert counts() == (1, 1, 3)
        again.close()

    for _restart in range(2):  # in place and as recorded: init keeps them, restore adds none
        restart(after_init=(1, 1, 3))
    # One went while the daemon was away: init takes the rest out, restore puts all back, once each.
    hairpin_rule = ["-t", "nat", "POSTROUTING", "-s", f"{ip}/32", "-d", f"{ip}/32", "-p", "tcp", "-m", "tcp"]
    hairpin_rule += ["--dport", "80", "-j", "MASQUERADE"]
    subprocess.run(["iptables", *hairpin_rule[:2], "-D", *hairpin_rule[2:]], check=True)
    restart(after_init=(0, 0, 0))
    # An endpoint file of an earlier version recorded them twice, and they
    # were added twice: init takes every copy out.
    path = os.path.join(first.home, "endpoints", A + ".json")
    doc = json.load(open(path))
    doc["Rules"] += [r for r in doc["Rules"] if "MASQUERADE" in r]
    with open(path, "w") as fh:
        json.dump(doc, fh)
    subprocess.run(["iptables", *hairpin_rule[:2], "-A", *hairpin_rule[2:]], check=True)
    assert count_rules(*hairpin) == 2
    last = make_driver(home=first.home)
    last.init()
    assert counts() == (0, 0, 0)
    last.restore(A)
    assert counts() == (1, 1, 3)
    last.release_interface(A)
    assert counts() == (0, 0, 0)


def test_restore_remakes_a_lost_interface_and_prune_releases_the_dead(make_driver, container):
    first = make_driver()
    first.init()
    a = first.allocate_interface(A, {"NetnsPath": container("a")})
    b = first.allocate_interface(B, {"NetnsPath": container("b")})
    first.close()
    from netbridge_helpers import delete_link

    delete_link(a["HostVeth"])  # A lost its pair (its namespace lives on)
    second = make_driver(home=first.home)
    second.init()
    assert second.restore(A)["IPAddress"] == a["IPAddress"]
    assert a["HostVeth"] in link_names("veth")
    assert ping(a["SandboxKey"], "172.17.42.1")
    assert second.restore(C) is None
    assert second.prune({A}) == [B]  # B died while the daemon was away
    assert b["HostVeth"] not in link_names()
    # B's address is free again, A's is not.
    taken = {second.allocate_interface(C, {"NetnsPath": container("c"), "RequestedIP": b["IPAddress"]})["IPAddress"]}
    assert taken == {b["IPAddress"]}
    second.release_interface(A)
    second.release_interface(C)


def test_crash_leftovers_are_cleaned(make_driver, container):
    """A daemon killed between the endpoint file and the veth: the next one cleans both up."""
    first = make_driver(icc=False)
    first.init()
    ips = [first.allocate_interface(cid, {"NetnsPath": container(cid[:8])})["IPAddress"] for cid in (A, B)]
    first.allocate_ports(A, {"80/tcp": [{}]})
    first.link(B, A, ["80/tcp"], True)
    # Killed: no close(), no shutdown(); its proxy and rules are still there.
    second = make_driver(home=first.home, icc=False)
    second.init()
    assert second.prune(set()) == [A, B]
    # The dead containers' rules went with them; the base ones are there once.
    rules = rules_snapshot()
    assert not any("DNAT" in r or any(f"{ip}/32" in r for ip in ips) for r in rules)
    assert sum(1 for r in rules if r.endswith("-i engine0 -o engine0 -j DROP")) == 1
    assert link_names("veth") == set() and proxy_pids() == set()
    assert os.listdir(os.path.join(second.home, "endpoints")) == []


def test_init_survives_a_lost_state_directory(make_driver, tmp_path):
    make_driver(icc=False).init()
    # The daemon's root was wiped, the host kept the rules: no "chain in use".
    second = make_driver(home=str(tmp_path / "fresh"), icc=False)
    second.init()
    rules = rules_snapshot()
    assert sum(1 for r in rules if r.endswith("-i engine0 -o engine0 -j DROP")) == 1
    assert sum(1 for r in rules if r.endswith(f"--dst-type LOCAL -j {CHAIN}") and "PREROUTING" in r) == 1


def test_shutdown_leaves_nothing(make_driver, container, servers):
    before = rules_snapshot()
    driver = make_driver(icc=False)
    driver.init()
    for cid, name in ((A, "a"), (B, "b")):
        driver.allocate_interface(cid, {"NetnsPath": container(name)})
        driver.allocate_ports(cid, {"80/tcp": [{}], "53/udp": [{}]})
    driver.link(A, B, ["80/tcp"], True)
    assert len(proxy_pids()) == 2 and len(link_names("veth")) == 2
    driver.shutdown()
    assert link_names("veth") == set()
    assert proxy_pids() == set()
    after = rules_snapshot()
    assert after == before and not any(CHAIN in r for r in after)
    assert os.listdir(os.path.join(driver.home, "endpoints")) == []
    assert "engine0" in link_names("bridge")  # kept for the next start, as docker0
