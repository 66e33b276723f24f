"""User-defined networks, several networks per container and the embedded DNS server, through the real docker
CLI (issue 11). Everything runs in the test sandbox's network namespace: the bridges, the containers'
namespaces, the resolver process, the stand-in upstream DNS server and all traffic stay there; daemons and
containers are removed by the fixtures."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from engine.testing.daemon import DaemonProcess
from engine.testing.images import busybox_archive
from engine.testing.nettest import iptables_rules

pytestmark = pytest.mark.root("daemons, bridges")


@pytest.fixture
def busybox(docker, tmp_path):
    path = tmp_path / "busybox.tar"
    path.write_bytes(busybox_archive())
    docker("load", "-i", str(path))


def out(proc) -> str:
    return proc.stdout.decode()


def inspect(docker, name: str) -> dict:
    return json.loads(docker("inspect", name).stdout)[0]


def net_inspect(docker, name: str) -> dict:
    return json.loads(docker("network", "inspect", name).stdout)[0]


def links() -> list[str]:
    lines = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
    return [line.split(":")[1].strip().split("@")[0] for line in lines]


def nslookup(docker, network: str, name: str, *extra: str) -> tuple[int, str]:
    """busybox nslookup from a new container on ``network``: (status, the addresses answered)."""
    proc = docker("run", "--rm", "--network", network, *extra, "busybox", "nslookup", name, check=False)
    text = out(proc)
    # Skip the server's own address (the first "Address:" line).
    addresses = re.findall(r"^Address(?: \d+)?:\s+(\S+)$", text, re.M)[1:]
    return proc.returncode, " ".join(a for a in addresses if "#" not in a and a != "127.0.0.11:53")


def dig(pid: int, name: str, qtype: str = "A", timeout: float = 3.0) -> DNSRecord:
    """Ask 127.0.0.11 from inside the namespace of process ``pid`` (no docker exec: the daemon may be down)."""
    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(float(sys.argv[2]))\n"
        "s.sendto(bytes.fromhex(sys.argv[1]), ('127.0.0.11', 53))\n"
        "sys.stdout.write(s.recvfrom(4096)[0].hex())\n"
    )
    query = DNSRecord.question(name, qtype).pack().hex()
    proc = subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-S", "-c", code, query, str(timeout)],
        capture_output=True,
        text=True,
        timeout=timeout + 30,
    )
    assert proc.returncode == 0, proc.stderr
    return DNSRecord.parse(bytes.fromhex(proc.stdout))


def answers(reply: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr)


def test_network_verbs_and_their_refusals(docker, busybox):
    created = out(docker("network", "create", "--label", "tier=web", "front")).strip()
    assert re.fullmatch(r"[0-9a-f]{64}", created)
    net = net_inspect(docker, "front")
    assert net["Id"] == created and net["Driver"] == "bridge" and net["Scope"] == "local"
    assert net["Labels"] == {"tier": "web"} and net["Containers"] == {} and not net["Internal"]
    (config,) = net["IPAM"]["Config"]
    assert config["Subnet"] == "172.18.0.0/16" and config["Gateway"] == "172.18.0.1"
    assert f"br-{created[:12]}" in links()
    docker(
        "network",
        "create",
        "--subnet",
        "10.77.0.0/16",
        "--ip-range",
        "10.77.5.0/24",
        "--gateway",
        "10.77.5.254",
        "--aux-address",
        "a=10.77.5.1",
        "--internal",
        "-o",
        "com.docker.network.bridge.name=tst-back",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "back",
    )
    back = net_inspect(docker, "back")
    assert back["IPAM"]["Config"] == [
        {
            "Subnet": "10.77.0.0/16",
            "IPRange": "10.77.5.0/24",
            "Gateway": "10.77.5.254",
            "AuxiliaryAddresses": {"a": "10.77.5.1"},
        }
    ]
    assert back["Internal"] and "tst-back" in links()
    # Names and ID prefixes resolve like containers'.
    assert net_inspect(docker, created[:6])["Name"] == "front"
    listed = out(docker("network", "ls", "--format", "{{.Name}} {{.Driver}}")).split("\n")
    assert {"bridge bridge", "host host", "none null", "front bridge", "back bridge"} <= set(listed)
    custom = out(docker("network", "ls", "-q", "--filter", "type=custom", "--no-trunc")).split()
    assert sorted(custom) == sorted([created, back["Id"]])
    assert out(docker("network", "ls", "-q", "--filter", "label=tier=web", "--no-trunc")).split() == [created]
    # Bad input: dockerd's words and codes, and nothing made.
    before = (out(docker("network", "ls", "-q")), iptables_rules(), links())
    refusals = [
        (["front"], "network with name front already exists"),
        (["--subnet", "10.77.128.0/17", "x"], "Pool overlaps with other one on this address space"),
        (["--subnet", "10.78.0.1/16", "x"], "invalid subnet 10.78.0.1/16: it should be 10.78.0.0/16"),
        (["--subnet", "10.78.0.0/16", "--ip-range", "10.79.0.0/24", "x"], "no matching subnet for range"),  # the CLI's
        (["-d", "host", "x"], 'only one instance of "host" network is allowed'),
        (["-d", "nosuch", "x"], 'plugin "nosuch" not found'),
        (["bridge"], "operation is not permitted on predefined bridge network"),
        (["-o", "com.docker.network.bridge.enable_icc=perhaps", "x"], "failed to parse"),
    ]
    for args, message in refusals:
        proc = docker("network", "create", *args, check=False)
        assert proc.returncode == 1 and message in proc.stderr.decode(), (args, proc.stderr)
    assert (out(docker("network", "ls", "-q")), iptables_rules(), links()) == before
    proc = docker("network", "rm", "bridge", check=False)
    assert b"bridge is a pre-defined network and cannot be removed" in proc.stderr
    proc = docker("network", "inspect", "nosuch", check=False)
    assert proc.returncode == 1 and b"network nosuch not found" in proc.stderr
    # In use: refused, with dockerd's message; pruned only when unused.
    docker("run", "-d", "--name", "user", "--network", "front", "busybox", "sleep", "300")
    proc = docker("network", "rm", "front", check=False)
    assert b"error while removing network: network front id" in proc.stderr and b"has active endpoints" in proc.stderr
    pruned = out(docker("network", "prune", "-f"))
    assert "back" in pruned and "front" not in pruned
    assert "tst-back" not in links()
    docker("rm", "-f", "user")
    docker("network", "rm", "front")
    assert not any(name.startswith("br-") for name in links())
    assert "ENGINE-ISOLATION-STAGE-2 -o br-" not in iptables_rules()
    events = out(
        docker(
            "events",
            "--since",
            "0",
            "--until",
            str(int(time.time()) + 1),
            "--filter",
            "type=network",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        )
    ).splitlines()
    for expected in (
        "create front",
        "create back",
        "connect front",
        "disconnect front",
        "destroy back",
        "destroy front",
    ):
        assert expected in events, events


def test_containers_by_name_alias_link_and_address(docker, busybox):
    docker("network", "create", "app")
    docker("network", "create", "other")
    web = out(
        docker("run", "-d", "--name", "web", "--network", "app", "--network-alias", "svc", "busybox", "sleep", "300")
    ).strip()
    docker("run", "-d", "--name", "web2", "--network", "app", "--network-alias", "svc", "busybox", "sleep", "300")
    docker("run", "-d", "--name", "stranger", "--network", "other", "busybox", "sleep", "300")
    ip = inspect(docker, "web")["NetworkSettings"]["Networks"]["app"]["IPAddress"]
    ip2 = inspect(docker, "web2")["NetworkSettings"]["Networks"]["app"]["IPAddress"]
    stranger = inspect(docker, "stranger")["NetworkSettings"]["Networks"]["other"]["IPAddress"]
    assert nslookup(docker, "app", "web") == (0, ip)
    assert nslookup(docker, "app", "web.app") == (0, ip)
    assert nslookup(docker, "app", web[:12]) == (0, ip)
    status, both = nslookup(docker, "app", "svc")
    assert status == 0 and sorted(both.split()) == sorted([ip, ip2])
    assert nslookup(docker, "app", "stranger")[0] != 0, "a container on another network resolves"
    assert nslookup(docker, "app", "nosuch")[0] != 0
    assert nslookup(docker, "app", "lnk", "--link", "web:lnk") == (0, ip)
    resolv = out(docker("run", "--rm", "--network", "app", "busybox", "cat", "/etc/resolv.conf"))
    assert resolv.startswith("nameserver 127.0.0.11\n") and "options ndots:0" in resolv
    # Reverse lookups name the container on the network.
    ptr = out(docker("run", "--rm", "--network", "app", "busybox", "nslookup", ip, check=False))
    assert "web.app" in ptr
    # Containers of one network reach each other; networks are isolated.
    proc = docker("run", "--rm", "--network", "app", "busybox", "ping", "-c", "1", "-W", "2", ip, check=False)
    assert proc.returncode == 0, proc.stdout
    proc = docker("run", "--rm", "--network", "app", "busybox", "ping", "-c", "1", "-W", "2", stranger, check=False)
    assert proc.returncode != 0, "networks are not isolated"
    # Inspect: Docker's shape, aliases with the short ID.
    settings = inspect(docker, "web")["NetworkSettings"]
    assert list(settings["Networks"]) == ["app"] and settings["IPAddress"] == ""
    assert settings["Networks"]["app"]["Aliases"] == ["svc", web[:12]]
    assert settings["Networks"]["app"]["NetworkID"] == net_inspect(docker, "app")["Id"]
    assert net_inspect(docker, "app")["Containers"][web]["IPv4Address"] == f"{ip}/16"
    # A rename resolves at once.
    docker("rename", "web2", "renamed")
    assert nslookup(docker, "app", "renamed") == (0, ip2)
    docker("rm", "-f", "web", "renamed", "stranger")
    docker("network", "rm", "app", "other")


def test_connect_and_disconnect(docker, busybox):
    docker("network", "create", "--subnet", "10.55.0.0/24", "alpha")
    docker("network", "create", "zulu")
    cid = out(docker("run", "-d", "--name", "box", "busybox", "sleep", "300")).strip()
    docker("network", "connect", "--alias", "boxy", "--ip", "10.55.0.50", "alpha", "box")
    addresses = out(docker("exec", "box", "ip", "-o", "-4", "addr"))
    assert re.search(r"eth1\s+inet 10\.55\.0\.50/24", addresses), addresses
    # "alpha" sorts before "bridge": libnetwork's gateway choice moves the default route.
    assert "default via 10.55.0.1 dev eth1" in out(docker("exec", "box", "ip", "route"))
    networks = inspect(docker, "box")["NetworkSettings"]["Networks"]
    assert sorted(networks) == ["alpha", "bridge"] and networks["alpha"]["IPAddress"] == "10.55.0.50"
    assert networks["alpha"]["Aliases"] == ["boxy", cid[:12]]
    assert networks["alpha"]["IPAMConfig"]["IPv4Address"] == "10.55.0.50"
    # Started on the default bridge, it now resolves names through the embedded DNS server.
    assert out(docker("exec", "box", "cat", "/etc/resolv.conf")).startswith("nameserver 127.0.0.11\n")
    assert "10.55.0.50" in out(docker("exec", "box", "nslookup", "boxy"))
    proc = docker("network", "connect", "alpha", "box", check=False)
    assert b"endpoint with name box already exists in network alpha" in proc.stderr
    proc = docker("network", "connect", "--ip", "10.55.0.50", "zulu", "box", check=False)
    assert (
        b"user specified IP address is supported only when connecting to networks with user configured subnets"
        in proc.stderr
    )
    proc = docker("network", "connect", "host", "box", check=False)
    assert b"container cannot be disconnected from host network or connected to host network" in proc.stderr
    docker("network", "connect", "zulu", "box")
    assert "eth2" in out(docker("exec", "box", "ip", "-o", "link"))
    docker("network", "disconnect", "alpha", "box")
    route = out(docker("exec", "box", "ip", "route"))
    assert "eth1" not in out(docker("exec", "box", "ip", "-o", "link")) and "default via 172.17.42.1 dev eth0" in route
    proc = docker("network", "disconnect", "alpha", "box", check=False)
    assert f"container {cid} is not connected to network alpha".encode() in proc.stderr
    # A stopped container: its configuration changes, and the next start joins.
    docker("stop", "-t", "0", "box")
    docker("network", "connect", "alpha", "box")
    docker("network", "connect", "alpha", "box")  # twice: nothing to do, as in dockerd
    docker("network", "disconnect", "zulu", "box")
    docker("start", "box")
    assert sorted(inspect(docker, "box")["NetworkSettings"]["Networks"]) == ["alpha", "bridge"]
    assert sorted(net_inspect(docker, "alpha")["Containers"]) == [cid]
    assert net_inspect(docker, "zulu")["Containers"] == {}
    # A network removed meanwhile: the start fails with dockerd's words.
    docker("stop", "-t", "0", "box")
    docker("network", "connect", "zulu", "box")
    docker("network", "rm", "zulu")
    proc = docker("start", "box", check=False)
    assert proc.returncode != 0 and b"network zulu not found" in proc.stderr
    assert not any(name.startswith("veth") for name in links()), "a failed start left an interface"
    proc = docker("run", "--network", "nosuch", "busybox", "true", check=False)
    assert proc.returncode == 125 and b"network nosuch not found" in proc.stderr
    docker("rm", "-f", "box")
    docker("network", "rm", "alpha")


def test_published_port_on_a_user_network(docker, busybox, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("from a user network\n")
    docker("network", "create", "pub")
    docker(
        "run",
        "-d",
        "--name",
        "site",
        "--network",
        "pub",
        "-p",
        "18081:80",
        "-v",
        f"{www}:/www",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", 18081), timeout=3) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = s.recv(65536)
            if b"from a user network" in data:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the published port does not answer"
        time.sleep(0.2)
    assert out(docker("port", "site")).strip() == "80/tcp -> 0.0.0.0:18081"
    # Hairpin: a container of the network reaches the published port through the host. (This busybox's
    # wget crashes with -T, and resolves a service name like "http" through NSS: explicit ports only.)
    gateway = net_inspect(docker, "pub")["IPAM"]["Config"][0]["Gateway"]
    proc = docker(
        "run",
        "--rm",
        "--network",
        "pub",
        "busybox",
        "wget",
        "-q",
        "-O-",
        f"http://{gateway}:18081/",
        check=False,
    )
    assert b"from a user network" in proc.stdout, proc.stderr
    docker("rm", "-f", "site")
    docker("network", "rm", "pub")


class Upstream:
    """A stand-in upstream DNS server on 127.0.0.1:53 of the sandbox, knowing ``example.test``."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 53))
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                raw, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = DNSRecord.parse(raw)
            reply = query.reply()
            if str(query.q.qname) == "example.test.":
                reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("192.0.2.7"), ttl=30))
            else:
                reply.header.rcode = 3
            self.sock.sendto(reply.pack(), peer)

    def close(self) -> None:
        self.sock.close()


def test_dns_forwards_and_keeps_answering_across_restarts(workdir, docker_config):
    upstream = Upstream()
    d = DaemonProcess(os.path.join(workdir, "d"), ["-s", "vfs", "--dns", "127.0.0.1"]).start()
    env = dict(os.environ, DOCKER_HOST=d.host, DOCKER_CONFIG=docker_config)

    def docker(*args: str, check: bool = True):
        proc = subprocess.run(["docker", *args], capture_output=True, env=env, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {args}: {proc.stderr.decode()}\n{d.log()[-3000:]}")
        return proc

    try:
        archive = os.path.join(workdir, "busybox.tar")
        with open(archive, "wb") as fh:
            fh.write(busybox_archive())
        docker("load", "-i", archive)
        docker("network", "create", "live")
        docker("run", "-d", "--name", "db", "--network", "live", "busybox", "sleep", "600")
        docker("run", "-d", "--name", "client", "--network", "live", "busybox", "sleep", "600")
        db_ip = inspect(docker, "db")["NetworkSettings"]["Networks"]["live"]["IPAddress"]
        pid = inspect(docker, "client")["State"]["Pid"]
        assert answers(dig(pid, "db")) == [db_ip]
        # Forwarded to --dns, from the host's namespace (the daemon's 127.0.0.1 is reachable).
        assert answers(dig(pid, "example.test")) == ["192.0.2.7"]
        docker("run", "-d", "--name", "doomed", "--network", "live", "busybox", "sleep", "600")
        doomed = inspect(docker, "doomed")
        doomed_ip = doomed["NetworkSettings"]["Networks"]["live"]["IPAddress"]
        assert answers(dig(pid, "doomed")) == [doomed_ip]
        # The daemon goes away: the resolver keeps answering.
        d.kill()
        assert answers(dig(pid, "db")) == [db_ip]
        # A container dies meanwhile: the next daemon releases its endpoint and its name.
        os.kill(doomed["State"]["Pid"], 9)
        d = DaemonProcess(os.path.join(workdir, "d"), ["-s", "vfs", "--dns", "127.0.0.1"]).start()
        env["DOCKER_HOST"] = d.host
        assert answers(dig(pid, "db")) == [db_ip]
        assert dig(pid, "doomed").header.rcode == 3
        assert doomed["Id"] not in net_inspect(docker, "live")["Containers"]
        assert inspect(docker, "doomed")["State"]["Status"] == "exited"
        docker("run", "-d", "--name", "late", "--network", "live", "busybox", "sleep", "600")
        late_ip = inspect(docker, "late")["NetworkSettings"]["Networks"]["live"]["IPAddress"]
        assert answers(dig(pid, "late")) == [late_ip]
        # The resolver dies: the next change starts a new one, on the same ports for every container.
        resolver = int(open(os.path.join(d.root, "network", "dns", "resolver.pid")).read())
        os.kill(resolver, 9)
        docker("run", "-d", "--name", "later", "--network", "live", "busybox", "sleep", "600")
        assert answers(dig(pid, "db")) == [db_ip]
        assert answers(dig(pid, "later")) == [
            inspect(docker, "later")["NetworkSettings"]["Networks"]["live"]["IPAddress"]
        ]
        docker("stop", "-t", "0", "late")
        reply = dig(pid, "late")
        assert reply.header.rcode == 3 and not reply.rr
        docker("rm", "-f", "db", "client", "late", "later", "doomed")
        docker("network", "rm", "live")
        d.stop()
        # No container runs: the resolver stopped with the daemon.
        assert not os.path.exists(os.path.join(d.root, "network", "dns", "control.sock"))
        assert not any(name.startswith(("veth", "br-")) for name in links())
    finally:
        d.stop()
        upstream.close()


def test_ipv6_on_the_default_bridge_and_a_user_network(workdir, docker_config, tmp_path):
    if not os.path.exists("/proc/sys/net/ipv6"):
        pytest.skip("no IPv6 in this kernel")
    d = DaemonProcess(os.path.join(workdir, "d6"), ["-s", "vfs", "--ipv6", "--fixed-cidr-v6", "fd00:1::/64"]).start()
    env = dict(os.environ, DOCKER_HOST=d.host, DOCKER_CONFIG=docker_config)

    def docker(*args: str, check: bool = True):
        proc = subprocess.run(["docker", *args], capture_output=True, env=env, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {args}: {proc.stderr.decode()}\n{d.log()[-3000:]}")
        return proc

    # An IPv6 address of this namespace besides ::1 (published ports are DNATed from it).
    subprocess.run(["ip", "link", "add", "tst6a", "type", "veth", "peer", "name", "tst6b"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "fd00:99::1/64", "dev", "tst6a", "nodad"], check=True)
        subprocess.run(["ip", "link", "set", "tst6a", "up"], check=True)
        archive = tmp_path / "busybox.tar"
        archive.write_bytes(busybox_archive())
        docker("load", "-i", str(archive))
        www = tmp_path / "www"
        www.mkdir()
        (www / "index.html").write_text("over ipv6\n")
        docker(
            "run",
            "-d",
            "--name",
            "six",
            "-p",
            "18082:80",
            "-v",
            f"{www}:/www",
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        )
        settings = inspect(docker, "six")["NetworkSettings"]
        address = settings["GlobalIPv6Address"]
        assert address.startswith("fd00:1::") and settings["GlobalIPv6PrefixLen"] == 64
        assert settings["IPv6Gateway"] == "fd00:1::1" and settings["Networks"]["bridge"]["GlobalIPv6Address"] == address
        bridge = net_inspect(docker, "bridge")
        assert bridge["EnableIPv6"] and {"Subnet": "fd00:1::/64", "Gateway": "fd00:1::1"} in bridge["IPAM"]["Config"]
        routes = out(docker("run", "--rm", "busybox", "ip", "-6", "route"))
        assert "default via fd00:1::1 dev eth0" in routes
        proc = docker("run", "--rm", "busybox", "ping", "-6", "-c", "1", "-W", "2", address, check=False)
        assert proc.returncode == 0, proc.stdout
        # ip6tables DNATs the published port to the container's IPv6 address.
        assert (
            f"--to-destination [{address}]:80"
            in subprocess.run(["ip6tables-save", "-t", "nat"], capture_output=True, text=True).stdout
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("fd00:99::1", 18082), timeout=3) as s:
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    if b"over ipv6" in s.recv(65536):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the published port does not answer over IPv6"
            time.sleep(0.2)
        # A user-defined network with IPv6, and an address asked for.
        docker("network", "create", "--ipv6", "--subnet", "fd00:2::/64", "six2")
        docker("run", "-d", "--name", "peer", "--network", "six2", "--ip6", "fd00:2::42", "busybox", "sleep", "300")
        peer = inspect(docker, "peer")["NetworkSettings"]["Networks"]["six2"]
        assert peer["GlobalIPv6Address"] == "fd00:2::42" and peer["IPv6Gateway"] == "fd00:2::1"
        assert (
            net_inspect(docker, "six2")["Containers"][inspect(docker, "peer")["Id"]]["IPv6Address"] == "fd00:2::42/64"
        )
        looked_up = out(docker("run", "--rm", "--network", "six2", "busybox", "nslookup", "-type=aaaa", "peer"))
        assert "fd00:2::42" in looked_up
        docker("rm", "-f", "six", "peer")
        docker("network", "rm", "six2")
        assert f"[{address}]" not in subprocess.run(["ip6tables-save"], capture_output=True, text=True).stdout
    finally:
        d.stop()
        subprocess.run(["ip", "link", "del", "tst6a"], capture_output=True)
