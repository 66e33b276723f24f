"""Container networking with the bridge driver, through the real docker CLI
(issue 5's "done when"). Everything runs in the test sandbox's network
namespace: the bridge, the containers' namespaces and all traffic stay there."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from engine.testing.daemon import DaemonProcess
from engine.testing.images import busybox_archive

pytestmark = pytest.mark.root


@pytest.fixture
def busybox(docker, tmp_path):
    path = tmp_path / "busybox.tar"
    path.write_bytes(busybox_archive())
    docker("load", "-i", str(path))


def out(proc) -> str:
    return proc.stdout.decode()


def ip_of(docker, name: str) -> str:
    return json.loads(docker("inspect", name).stdout)[0]["NetworkSettings"]["IPAddress"]


def http_get(host: str, port: int, timeout: float = 5.0) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


def wait_http(host: str, port: int, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return http_get(host, port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def iptables_save() -> str:
    return subprocess.run(["iptables-save"], capture_output=True, text=True).stdout


def veths() -> list[str]:
    """veth interfaces of this namespace (/sys/class/net shows the host's here)."""
    lines = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
    return [line.split(":")[1].strip().split("@")[0] for line in lines if "veth" in line]


@pytest.fixture
def www(tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    (d / "index.html").write_text("hello from the container\n")
    return str(d)


def test_containers_ping_each_other_and_inspect(docker, busybox):
    docker("run", "-d", "--name", "one", "busybox", "sleep", "60")
    docker("run", "-d", "--name", "two", "busybox", "sleep", "60")
    ip1, ip2 = ip_of(docker, "one"), ip_of(docker, "two")
    assert ip1.startswith("172.17.") and ip1 != ip2
    docker("exec", "one", "ping", "-c", "1", "-W", "2", ip2)
    doc = json.loads(docker("inspect", "one").stdout)[0]["NetworkSettings"]
    nets = json.loads(docker("network", "inspect", "bridge").stdout)[0]
    gateway = nets["IPAM"]["Config"][0]["Gateway"]
    assert doc["Gateway"] == gateway and doc["IPPrefixLen"] == 16 and doc["Bridge"] == "engine0"
    assert doc["MacAddress"].startswith("02:42:")
    assert doc["Networks"]["bridge"]["IPAddress"] == ip1
    nets = json.loads(docker("network", "inspect", "bridge").stdout)[0]
    assert {c["Name"] for c in nets["Containers"].values()} >= {"one", "two"}
    assert nets["IPAM"]["Config"][0]["Subnet"] == "172.17.0.0/16"
    docker("rm", "-f", "one", "two")


def test_publish_reaches_loopback_and_own_address(docker, busybox, www):
    # An address of this namespace besides lo: one end of a veth pair.
    subprocess.run(["ip", "link", "add", "tst0", "type", "veth", "peer", "name", "tst1"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.99.0.1/24", "dev", "tst0"], check=True)
        subprocess.run(["ip", "link", "set", "tst0", "up"], check=True)
        docker(
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            "18080:80",
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
        assert b"hello from the container" in wait_http("127.0.0.1", 18080)
        assert b"hello from the container" in wait_http("10.99.0.1", 18080)
        assert out(docker("port", "web")).strip() == "80/tcp -> 0.0.0.0:18080"
        proc = docker("run", "-d", "-p", "18080:80", "busybox", "sleep", "60", check=False)
        assert proc.returncode != 0 and b"port is already allocated" in proc.stderr
        docker("rm", "-f", "web")
    finally:
        subprocess.run(["ip", "link", "del", "tst0"], capture_output=True)


def test_publish_all_and_udp(docker, busybox, www, tmp_path):
    docker(
        "run",
        "-d",
        "--name",
        "pall",
        "--expose",
        "80",
        "-P",
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
    mapping = out(docker("port", "pall", "80/tcp")).strip()
    host_port = int(mapping.rsplit(":", 1)[1])
    assert b"hello from the container" in wait_http("127.0.0.1", host_port)
    docker("rm", "-f", "pall")
    # UDP: this busybox has no UDP server applet, so the echo server runs in
    # the container's network namespace from the host (nsenter).
    docker("run", "-d", "--name", "udp", "-p", "15353:53/udp", "busybox", "sleep", "60")
    pid = json.loads(docker("inspect", "udp").stdout)[0]["State"]["Pid"]
    server = subprocess.Popen(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", UDP_ECHO])
    try:
        time.sleep(0.5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(b"ping", ("127.0.0.1", 15353))
            data, _ = s.recvfrom(1024)
        assert data == b"pong:ping"
    finally:
        server.kill()
        server.wait()
    docker("rm", "-f", "udp")


UDP_ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 53))
while True:
    data, addr = s.recvfrom(1024)
    s.sendto(b"pong:" + data, addr)
"""


def test_links_env_and_hosts(docker, busybox, www):
    docker("run", "-d", "--name", "db", "--expose", "5432", "-e", "SECRET=x", "busybox", "sleep", "60")
    env = out(docker("run", "--rm", "--name", "app", "--link", "db:database", "busybox", "env"))
    ip = ip_of(docker, "db")
    assert f"DATABASE_PORT=tcp://{ip}:5432" in env
    assert f"DATABASE_PORT_5432_TCP_ADDR={ip}" in env and "DATABASE_PORT_5432_TCP_PORT=5432" in env
    assert "DATABASE_NAME=/app/database" in env and "DATABASE_ENV_SECRET=x" in env
    hosts = out(docker("run", "--rm", "--link", "db:database", "busybox", "cat", "/etc/hosts"))
    db_hostname = json.loads(docker("inspect", "db").stdout)[0]["Config"]["Hostname"]
    assert f"{ip}\tdatabase {db_hostname} db\n" in hosts  # alias, hostname, name: as moby writes it
    proc = docker("run", "--rm", "--link", "nosuch:x", "busybox", "true", check=False)
    assert proc.returncode != 0
    docker("stop", "-t", "0", "db")
    proc = docker("run", "--rm", "--link", "db:database", "busybox", "true", check=False)
    assert proc.returncode != 0 and b"Cannot link to a non running container" in proc.stderr
    docker("rm", "-f", "db")


def test_icc_false_only_linked_pairs_talk(workdir, docker_config, tmp_path, www):
    d = DaemonProcess(os.path.join(workdir, "icc"), ["-s", "vfs", "--icc=false"]).start()
    env = dict(os.environ, DOCKER_HOST=d.host, DOCKER_CONFIG=docker_config)

    def docker(*args, check=True):
        proc = subprocess.run(["docker", *args], env=env, capture_output=True, timeout=120)
        if check:
            assert proc.returncode == 0, (args, proc.stderr, d.log()[-3000:])
        return proc

    try:
        archive = tmp_path / "bb.tar"
        archive.write_bytes(busybox_archive())
        docker("load", "-i", str(archive))
        docker(
            "run",
            "-d",
            "--name",
            "srv",
            "--expose",
            "80",
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
        ip = ip_of(docker, "srv")
        time.sleep(0.5)
        # Not the last command of sh -c, or sh would exec it as PID 1, which
        # ignores the SIGTERM busybox timeout sends.
        fetch = f"timeout 3 wget -q -O- http://{ip}/; echo status=$?"
        blocked = docker("run", "--rm", "busybox", "sh", "-c", fetch)
        assert b"hello" not in blocked.stdout and b"status=0" not in blocked.stdout
        linked = docker("run", "--rm", "--link", "srv:srv", "busybox", "sh", "-c", fetch)
        assert b"hello from the container" in linked.stdout and b"status=0" in linked.stdout, linked.stderr
    finally:
        docker("rm", "-f", "srv", check=False)
        d.stop()


def test_net_none_host_container_modes(docker, busybox):
    assert out(docker("run", "--rm", "--net", "none", "busybox", "ls", "/sys/class/net")).split() == ["lo"]
    docker("run", "-d", "--name", "owner", "busybox", "sleep", "60")
    mine = out(docker("exec", "owner", "cat", "/etc/hostname")).strip()
    joined = out(
        docker("run", "--rm", "--net", "container:owner", "busybox", "sh", "-c", "hostname; ip -4 -o addr show eth0")
    ).split("\n")
    assert joined[0] == mine and ip_of(docker, "owner") in joined[1]
    docker("stop", "-t", "0", "owner")
    proc = docker("run", "--rm", "--net", "container:owner", "busybox", "true", check=False)
    assert proc.returncode != 0 and b"cannot join network of a non running container" in proc.stderr
    docker("rm", "owner")


def test_restart_keeps_addresses_and_ports_then_cleans_up(workdir, docker_config, tmp_path, www):
    root = os.path.join(workdir, "d")
    d = DaemonProcess(root, ["-s", "vfs"]).start()
    env = dict(os.environ, DOCKER_HOST=d.host, DOCKER_CONFIG=docker_config)

    def docker(*args, check=True):
        proc = subprocess.run(["docker", *args], env=env, capture_output=True, timeout=120)
        if check:
            assert proc.returncode == 0, (args, proc.stderr)
        return proc

    archive = tmp_path / "bb.tar"
    archive.write_bytes(busybox_archive())
    docker("load", "-i", str(archive))
    veths_before = veths()
    docker(
        "run",
        "-d",
        "--name",
        "keep",
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
    ip_before = ip_of(docker, "keep")
    assert b"hello" in wait_http("127.0.0.1", 18081)
    d.kill()
    assert b"hello" in wait_http("127.0.0.1", 18081)  # the proxy and rules outlive the daemon
    d2 = DaemonProcess(root, ["-s", "vfs"]).start()
    try:
        assert ip_of(docker, "keep") == ip_before
        assert b"hello" in wait_http("127.0.0.1", 18081)
        docker("run", "-d", "--name", "newer", "busybox", "sleep", "60")
        assert ip_of(docker, "newer") != ip_before  # no address handed out twice
        docker("rm", "-f", "keep", "newer")
        assert veths() == veths_before
        assert "-A ENGINE" not in iptables_save() or "DNAT" not in iptables_save()
        assert (
            "engine_net_bridge.proxy"
            not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        )
    finally:
        d2.stop()
    assert ":ENGINE" not in iptables_save()  # no container left: the daemon removed its chains


def test_daemon_start_restarts_linked_children_before_parents(workdir, docker_config, tmp_path):
    """Both died while the daemon was down; the parent (always) links to the child (always): the child
    starts first, whatever order their IDs sort in, and the parent's link resolves to its new address."""
    root = os.path.join(workdir, "d")
    d = DaemonProcess(root, ["-s", "vfs"]).start()
    env = dict(os.environ, DOCKER_HOST=d.host, DOCKER_CONFIG=docker_config)

    def docker(*args, check=True):
        proc = subprocess.run(["docker", *args], env=env, capture_output=True, timeout=120)
        if check:
            assert proc.returncode == 0, (args, proc.stderr)
        return proc

    archive = tmp_path / "bb.tar"
    archive.write_bytes(busybox_archive())
    docker("load", "-i", str(archive))
    for _ in range(20):  # the parent's ID must sort first, so that ID order would start it first
        child = out(docker("run", "-d", "--restart", "always", "--name", "child", "busybox", "sleep", "600")).strip()
        parent = out(
            docker(
                "run", "-d", "--restart", "always", "--name", "parent", "--link", "child:db", "busybox", "sleep", "600"
            )
        ).strip()
        if parent < child:
            break
        docker("rm", "-f", "parent", "child")
    assert parent < child
    pids = [json.loads(docker("inspect", name).stdout)[0]["State"]["Pid"] for name in ("parent", "child")]
    d.kill()
    for pid in pids:  # the containers die while no daemon runs: their shims record the exits
        os.kill(pid, 9)
    time.sleep(1)
    d2 = DaemonProcess(root, ["-s", "vfs"]).start()
    try:
        states = {name: json.loads(docker("inspect", name).stdout)[0]["State"] for name in ("parent", "child")}
        assert states["child"]["Running"] and states["parent"]["Running"], (states, d2.log()[-3000:])
        hosts = out(docker("exec", "parent", "cat", "/etc/hosts"))
        assert f"{ip_of(docker, 'child')}\tdb " in hosts
        docker("rm", "-f", "parent", "child")
    finally:
        d2.stop()


def test_parents_follow_a_restarted_child_and_host_gateway(docker, busybox):
    docker("run", "-d", "--name", "kid", "busybox", "sleep", "600")
    docker("run", "-d", "--name", "holder", "busybox", "sleep", "600")  # takes kid's address once it is free
    docker("run", "-d", "--name", "mum", "--link", "kid:k", "--add-host", "gw:host-gateway", "busybox", "sleep", "600")
    old = ip_of(docker, "kid")
    gateway = json.loads(docker("network", "inspect", "bridge").stdout)[0]["IPAM"]["Config"][0]["Gateway"]
    hosts = out(docker("exec", "mum", "cat", "/etc/hosts"))
    assert f"{gateway}\tgw\n" in hosts and f"{old}\tk " in hosts
    docker("stop", "-t", "0", "kid")
    docker("run", "-d", "--name", "squatter", "busybox", "sleep", "600")
    docker("start", "kid")
    new = ip_of(docker, "kid")
    assert new != old  # addresses go round-robin
    hosts = out(docker("exec", "mum", "cat", "/etc/hosts"))
    assert f"{new}\tk " in hosts and f"{old}\tk " not in hosts
    docker("rm", "-f", "kid", "holder", "mum", "squatter")


def test_bad_extra_hosts_are_refused_at_create(daemon, busybox):
    import docker as dockerpy

    api = dockerpy.APIClient(base_url=daemon.host, version="1.41")
    try:
        with pytest.raises(dockerpy.errors.APIError) as err:
            api.create_container("busybox", "true", host_config={"ExtraHosts": ["bogus"]})
        assert err.value.status_code == 400 and 'bad format for add-host: "bogus"' in str(err.value)
        assert not api.containers(all=True)
    finally:
        api.close()
