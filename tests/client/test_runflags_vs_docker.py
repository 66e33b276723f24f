"""``engine create`` sends the body the real docker CLI sends, for the same flags.

The docker CLI (28.x, when installed) and ``engine`` both talk to a fake
daemon (:mod:`tests.client.fakedaemon`) that records the
``POST /containers/create`` request; the two bodies and queries must be
equal, key order included. The CLI builds a few lists from Go maps (``Env``
after its proxy merge, ``Binds``, ``Ulimits``), whose order is random, so
those are compared sorted. A flag docker refuses must be refused by
``engine`` too, with the same message and exit status 125.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.client.fakedaemon import FakeDaemon

DOCKER = shutil.which("docker")
pytestmark = [
    pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed"),
    pytest.mark.slow,  # two programs started per case, about a second
]

CASES = [
    [],
    ["-it"],
    ["-i"],
    ["-a", "stdout", "-a", "stderr"],
    ["--rm", "--name", "web"],
    [
        "-e",
        "A=1",
        "-e",
        "B=2",
        "-l",
        "z=1",
        "-l",
        "a=2",
        "-u",
        "1000:1000",
        "-w",
        "/tmp",
        "-h",
        "hn",
        "--domainname",
        "dn",
    ],
    ["--entrypoint", "/bin/sh"],
    ["--entrypoint="],
    ["-p", "80"],
    ["-p", "8080:80"],
    ["-p", "127.0.0.1:8080:80/udp"],
    ["-p", "127.0.0.1::80"],
    ["-p", "[::1]:8080:80"],
    ["-p", "8000-8001:80-81"],
    ["-p", "8000-8010:80"],
    ["-p", "90-91"],
    ["-p", "published=8080,target=80"],
    ["-P", "--expose", "7000-7001", "--expose", "53/udp"],
    ["-v", "/tmp:/host:ro", "-v", "/data"],
    ["-v", "vol:/v"],
    ["--mount", "type=bind,src=/a,dst=/b,readonly"],
    ["--mount", "type=volume,src=v,dst=/d,volume-label=a=b,volume-nocopy"],
    ["--mount", "type=volume,dst=/d,volume-driver=local,volume-opt=type=tmpfs"],
    ["--mount", "type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-mode=1777"],
    ["--mount", "type=bind,source=/a,target=/b,bind-propagation=rshared"],
    ["--tmpfs", "/run:size=1m", "--tmpfs", "/x", "--volumes-from", "other:ro"],
    [
        "--link",
        "other:al",
        "--dns",
        "1.1.1.1",
        "--dns-search",
        "example.com",
        "--dns-option",
        "ndots:2",
        "--add-host",
        "h:1.2.3.4",
        "--add-host",
        "g=::1",
    ],
    ["--network", "host"],
    ["--network", "none"],
    ["--net", "mynet", "--network-alias", "a", "--ip", "10.1.2.3"],
    ["--network", "name=mynet,alias=x,alias=y"],
    ["--network", "mynet", "--link", "db"],
    ["--restart", "on-failure:3"],
    ["--restart", "always"],
    ["--restart", "unless-stopped"],
    ["-m", "32m", "--memory-swap", "64m", "--memory-reservation", "16m", "--kernel-memory", "8m"],
    ["-m", "1g", "--memory-swap", "-1"],
    [
        "--cpus",
        "1.5",
        "-c",
        "512",
        "--cpu-period",
        "100000",
        "--cpu-quota",
        "50000",
        "--cpuset-cpus",
        "0",
        "--cpuset-mems",
        "0",
        "--cpu-rt-period",
        "1000",
        "--cpu-rt-runtime",
        "500",
    ],
    [
        "--pids-limit",
        "100",
        "--blkio-weight",
        "300",
        "--oom-kill-disable",
        "--oom-score-adj",
        "-100",
        "--memory-swappiness",
        "0",
    ],
    [
        "--blkio-weight-device",
        "/dev/sda:200",
        "--device-read-bps",
        "/dev/sda:1mb",
        "--device-write-bps",
        "/dev/sda:2m",
        "--device-read-iops",
        "/dev/sda:10",
        "--device-write-iops",
        "/dev/sda:20",
    ],
    ["--cap-add", "net_admin", "--cap-add", "ALL", "--cap-drop", "mknod", "--privileged"],
    ["--security-opt", "no-new-privileges", "--security-opt", "apparmor=unconfined", "--group-add", "10"],
    ["--security-opt", "systempaths=unconfined"],
    ["--read-only", "--shm-size", "64m", "--sysctl", "net.ipv4.ip_forward=1", "--sysctl", "kernel.shmmax=1"],
    ["--device", "/dev/null:/dev/nul2:rw", "--device", "/dev/zero", "--device-cgroup-rule", "c 1:3 rwm"],
    ["--ulimit", "nofile=1024:2048", "--ulimit", "nproc=10"],
    ["--init"],
    ["--init=false"],
    ["--rm=false"],
    ["--stop-signal", "SIGINT", "--stop-timeout", "5"],
    ["--log-driver", "json-file", "--log-opt", "max-size=1m", "--log-opt", "max-file=2"],
    ["--platform", "linux/amd64"],
    ["--ipc", "host", "--pid", "host", "--uts", "host", "--userns", "host", "--cgroupns", "private"],
    ["--pid", "container:other", "--ipc", "container:other", "--cgroup-parent", "/x", "--runtime", "runc"],
    [
        "--health-cmd",
        "true",
        "--health-interval",
        "1m30s",
        "--health-timeout",
        "5s",
        "--health-retries",
        "3",
        "--health-start-period",
        "10s",
    ],
    ["--no-healthcheck"],
    ["--storage-opt", "size=1G", "--isolation", "default", "--volume-driver", "local", "--cidfile", ""],
    ["--label", "a", "--label", "b="],
]

ERROR_CASES = [
    ["-p", "foo"],
    ["-p", "1:2:3:4"],
    ["-p", "80/xyz"],
    ["-p", "8000-8001:80-82"],
    ["-p", "8080:"],
    ["--expose", "1:2"],
    ["--restart", "on-failure:x"],
    ["--rm", "--restart", "always"],
    ["--memory-swappiness", "101"],
    ["--pid", "foo"],
    ["--uts", "container:x"],
    ["--security-opt", "label"],
    ["--no-healthcheck", "--health-cmd", "true"],
    ["--mount", "type=bind,src=/a"],
    ["--network-alias", "x"],
    ["--device", "/dev/a:rel"],
]

#: Lists the CLI fills from Go maps, in random order.
UNORDERED = {("Env",), ("HostConfig", "Binds"), ("HostConfig", "Ulimits")}


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fake") / "docker.sock")
    with FakeDaemon(path) as daemon:
        yield daemon


def _env(tmp_path_factory_dir: str) -> dict[str, str]:
    env = dict(os.environ, DOCKER_CONFIG=tmp_path_factory_dir)
    for key in (
        "DOCKER_HOST",
        "DOCKER_API_VERSION",
        "DOCKER_DEFAULT_PLATFORM",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    ):
        env.pop(key, None)
    return env


def _create(fake: FakeDaemon, argv: list[str], docker: bool, config_dir: str) -> tuple[int, str, object]:
    fake.clear()
    if docker:
        cmd = [DOCKER, "-H", fake.host, "create", *argv, "busybox"]
    else:
        cmd = [sys.executable, "-m", "engine.cli", "-H", fake.host, "create", *argv, "busybox"]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=_env(config_dir), timeout=60, stdin=subprocess.DEVNULL
    )
    creates = [r for r in fake.requests if r.path.split("?")[0].endswith("/containers/create")]
    request = (creates[0].path.split("/containers/create", 1)[1], creates[0].json()) if creates else None
    return proc.returncode, proc.stderr, request


def _normalise(body: dict) -> dict:
    for path in UNORDERED:
        node = body
        for key in path[:-1]:
            node = node[key]
        if node.get(path[-1]) is not None:
            node[path[-1]] = sorted(node[path[-1]], key=json.dumps)
    return body


def _ordered_keys(value: object) -> object:
    if isinstance(value, dict):
        return [(k, _ordered_keys(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_ordered_keys(v) for v in value]
    return value


@pytest.mark.parametrize("argv", CASES, ids=lambda a: " ".join(a) or "defaults")
def test_same_create_request(fake, argv, tmp_path):
    code, err, theirs = _create(fake, argv, docker=True, config_dir=str(tmp_path))
    assert code == 0, err
    code, err, ours = _create(fake, argv, docker=False, config_dir=str(tmp_path))
    assert code == 0, err
    assert ours is not None and theirs is not None
    assert ours[0] == theirs[0]
    assert _ordered_keys(_normalise(ours[1])) == _ordered_keys(_normalise(theirs[1]))


def test_mac_address_needs_api_1_44(fake, tmp_path):
    """At API 1.41 the CLI refuses --mac-address before calling the daemon (exit 1); so does engine."""
    argv = ["--mac-address", "92:d0:c6:0a:29:33"]
    code, docker_err, request = _create(fake, argv, docker=True, config_dir=str(tmp_path))
    assert code == 1 and request is None
    code, err, request = _create(fake, argv, docker=False, config_dir=str(tmp_path))
    assert code == 1 and request is None
    assert err.strip() == docker_err.strip()


@pytest.mark.parametrize("argv", ERROR_CASES, ids=lambda a: " ".join(a))
def test_same_refusals(fake, argv, tmp_path):
    code, err, request = _create(fake, argv, docker=True, config_dir=str(tmp_path))
    assert code == 125 and request is None
    docker_message = err.strip().splitlines()[0].removeprefix("docker: ")
    code, err, request = _create(fake, argv, docker=False, config_dir=str(tmp_path))
    assert code == 125 and request is None
    assert err.strip().splitlines()[0].removeprefix("engine: ") == docker_message
