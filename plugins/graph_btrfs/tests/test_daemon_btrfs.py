"""The real daemon on a btrfs root, driven by the stock docker CLI: pull from a local registry, run, quotas, commit.

Creates, on the module's loop-mounted btrfs (conftest.py): a daemon root,
socket and log, a registry (Debian's ``docker-registry`` on 127.0.0.1) with
its storage; the daemon and the registry are stopped and everything removed
afterwards, also when the test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

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
    """A daemon whose root is on btrfs, with no --storage-driver: btrfs is selected by the priority list."""
    d = DaemonProcess(str(tmp_path / "daemon"), ["-b", "none"])
    d.start()
    try:
        yield d
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


def subvolumes(daemon: DaemonProcess) -> list[str]:
    return sorted(os.listdir(os.path.join(daemon.root, "btrfs", "subvolumes")))


def test_pull_and_run_on_btrfs(daemon: DaemonProcess, registry: Any, docker: Docker, tmp_path: Any) -> None:
    info = json.loads(docker("info", "--format", "{{json .}}").stdout)
    assert info["Driver"] == "btrfs"
    status = dict(info["DriverStatus"])
    assert status["Build Version"].startswith("engine-graph-btrfs ")
    assert status["Library Version"].startswith("Linux ")

    # Put busybox in the registry, then start from nothing and pull it.
    archive = tmp_path / "busybox.tar"
    archive.write_bytes(busybox_archive())
    docker("load", "-i", str(archive))
    image = f"{registry.host}/busybox:latest"
    docker("tag", "busybox", image)
    docker("push", image)
    docker("rmi", "busybox", image)
    assert subvolumes(daemon) == []
    pulled = docker("pull", image).stdout.decode()
    assert "Download complete" in pulled or "Pull complete" in pulled
    layers = subvolumes(daemon)
    assert len(layers) == 1

    ran = docker("run", "--rm", image, "sh", "-c", "echo written > /f && cat /f && cat /etc/hostname")
    assert ran.stdout.decode().splitlines()[0] == "written"
    assert subvolumes(daemon) == layers  # the container's two layers went with --rm

    # --storage-opt size= is a qgroup limit on the container's layer.
    limited = docker(
        "run",
        "--rm",
        "--storage-opt",
        "size=16M",
        image,
        "dd",
        "if=/dev/urandom",
        "of=/big",
        "bs=1M",
        "count=64",
        check=False,
    )
    assert limited.returncode != 0
    assert b"Disk quota exceeded" in limited.stderr
    fits = docker("run", "--rm", "--storage-opt", "size=64M", image, "sh", "-c", "head -c 1048576 /dev/urandom > /f")
    assert fits.returncode == 0
    bad = docker("run", "--rm", "--storage-opt", "inodes=10", image, "true", check=False)
    assert bad.returncode != 0 and b"Unknown option inodes" in bad.stderr
    assert subvolumes(daemon) == layers

    # commit: the container's changes become a layer, a snapshot of the image's, and run.
    docker("run", "--name", "tocommit", image, "sh", "-c", "echo committed > /c && rm /bin/ls")
    docker("commit", "-c", "CMD cat /c", "-m", "on btrfs", "tocommit", "committed:btrfs")
    docker("rm", "tocommit")
    assert len(subvolumes(daemon)) == 2
    assert docker("run", "--rm", "committed:btrfs").stdout == b"committed\n"
    gone = docker("run", "--rm", "committed:btrfs", "ls", "/", check=False)
    assert gone.returncode != 0  # the whiteout of /bin/ls is in the new layer
    history = docker("history", "--format", "{{.Comment}}", "committed:btrfs").stdout.decode()
    assert history.splitlines()[0] == "on btrfs"
    docker("rmi", "committed:btrfs")
    assert subvolumes(daemon) == layers

    docker("rmi", image)
    assert subvolumes(daemon) == []
