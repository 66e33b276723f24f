"""The real daemon with ``-e lxc``, driven by the stock docker CLI: pull, run, exec, pause, stop, commit, a restart.

Creates: a daemon root, socket and log under the test's temporary
directory, a registry (Debian's ``docker-registry`` on 127.0.0.1) with its
storage; the daemon (and every container, through ``docker rm -f``) and the
registry are stopped and everything removed afterwards, also when the test
fails. Networking is the bridge driver's, inside the session sandbox.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from engine.drivers.discovery import load_drivers
from engine.errors import NotSupported
from engine.testing import registry as local_registry
from engine.testing.daemon import DaemonProcess
from engine.testing.images import busybox_archive

pytestmark = [
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
    pytest.mark.skipif(not local_registry.available(), reason="docker-registry (distribution) is not installed"),
]

Docker = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def daemon(tmp_path: Any) -> Iterator[DaemonProcess]:
    """A daemon with the lxc exec driver; skips with the driver's reason where it cannot run."""
    try:
        load_drivers("exec")["lxc"].cls.probe(str(tmp_path / "probe"))
    except NotSupported as exc:
        pytest.skip(f"the lxc exec driver cannot run here: {exc}")
    d = DaemonProcess(str(tmp_path / "daemon"), ["-e", "lxc"])
    d.start()
    try:
        yield d
    finally:
        try:
            ids = d.request("GET", "/containers/json?all=1")
            for container in ids if isinstance(ids, list) else []:
                d.request("DELETE", f"/containers/{container['Id']}?force=1")
        finally:
            d.stop()


@pytest.fixture
def registry(tmp_path: Any) -> Iterator[local_registry.LocalRegistry]:
    reg = local_registry.LocalRegistry(str(tmp_path / "registry")).start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def docker(daemon: DaemonProcess, tmp_path: Any) -> Docker:
    """``docker(*args, check=True)``: the stock CLI against the daemon, with an empty config."""
    config = tmp_path / "docker-config"
    config.mkdir()

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, DOCKER_CONFIG=str(config), DOCKER_HOST=daemon.host)
        env.pop("DOCKER_API_VERSION", None)
        proc = subprocess.run(["docker", *args], capture_output=True, env=env, timeout=180)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')}\n"
                f"daemon log:\n{daemon.log()[-4000:]}"
            )
        return proc

    return run


def test_lxc_daemon_with_the_stock_cli(daemon: DaemonProcess, registry: Any, docker: Docker, tmp_path: Any) -> None:
    # busybox into the registry, then pulled back from nothing.
    archive = tmp_path / "busybox.tar"
    archive.write_bytes(busybox_archive())
    docker("load", "-i", str(archive))
    image = f"{registry.host}/busybox:latest"
    docker("tag", "busybox", image)
    docker("push", image)
    docker("rmi", "busybox", image)
    pulled = docker("pull", image).stdout.decode()
    assert "Download complete" in pulled or "Pull complete" in pulled

    # run: output, exit codes, Docker's start errors and the CLI's 127 and 126.
    ran = docker("run", "--rm", "--hostname", "lxc-box", image, "sh", "-c", "hostname; echo $$; ls /sys/class/net")
    lines = ran.stdout.decode().split()
    assert lines[:2] == ["lxc-box", "1"] and "eth0" in lines[2:], lines  # the bridge driver's namespace
    assert docker("run", "--rm", image, "sh", "-c", "exit 3", check=False).returncode == 3
    missing = docker("run", "--rm", image, "nosuchcmd", check=False)
    assert missing.returncode == 127
    assert b'exec: "nosuchcmd": executable file not found in $PATH' in missing.stderr
    assert docker("run", "--rm", image, "/etc/passwd", check=False).returncode == 126
    tty = subprocess.run(
        ["script", "-qec", f"docker -H {daemon.host} run --rm -t {image} tty", "/dev/null"],
        capture_output=True,
        timeout=60,
        env=dict(os.environ, DOCKER_CONFIG=str(tmp_path / "docker-config")),
    )
    assert b"/dev/console" in tty.stdout, tty

    # A running container: exec, pause, logs.
    cid = (
        docker("run", "-d", "--name", "long", image, "sh", "-c", "echo started; exec sleep 1000")
        .stdout.decode()
        .strip()
    )
    assert docker("exec", "long", "cat", "/etc/hostname").stdout.decode().strip() == cid[:12]
    assert docker("exec", "-w", "/tmp", "-u", "www-data", "long", "sh", "-c", "pwd; id -u").stdout.decode().split() == [
        "/tmp",
        "33",
    ]
    assert docker("exec", "long", "sh", "-c", "exit 5", check=False).returncode == 5
    docker("pause", "long")
    state = json.loads(docker("inspect", "long").stdout)[0]["State"]
    assert state["Paused"] is True
    docker("unpause", "long")
    assert docker("logs", "long").stdout.decode() == "started\n"

    # The daemon restarts; the container keeps running in its shim and is adopted.
    pid = json.loads(docker("inspect", "long").stdout)[0]["State"]["Pid"]
    daemon.stop()
    os.kill(pid, 0)  # still alive while no daemon runs
    daemon.start()
    assert json.loads(docker("inspect", "long").stdout)[0]["State"]["Running"] is True
    assert docker("exec", "long", "echo", "again").stdout.decode() == "again\n"
    docker("stop", "-t", "1", "long")
    state = json.loads(docker("inspect", "long").stdout)[0]["State"]
    assert state["Running"] is False and state["ExitCode"] == 137
    docker("kill", "long", check=False)  # not running: Docker's error, nothing to do
    docker("rm", "long")

    # commit: a container's changes become an image that runs on lxc too.
    docker("run", "--name", "changed", image, "sh", "-c", "echo committed > /file")
    docker("commit", "changed", "lxc-committed:1")
    assert docker("run", "--rm", "lxc-committed:1", "cat", "/file").stdout.decode() == "committed\n"
    docker("rm", "changed")
