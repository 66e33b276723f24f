"""The real daemon on devicemapper, driven by the stock docker CLI: load, run, a larger container layer, rmi.

Needs device-mapper (skips here with the probe's reason; runs in the VM of
``vmtest/run``). Creates ``<tmp_path>/daemon`` (root, socket, log) and the
daemon's processes and devices; the daemon is stopped (which unmounts its
layers and removes its pool) and everything removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from typing import Any

import pytest

from engine.testing.daemon import DaemonProcess
from engine.testing.images import busybox_archive
from engine_graph_devmapper.driver import DELETION_INTERVAL

pytestmark = pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")

POOL = ("dm.loopdatasize=3G", "dm.loopmetadatasize=64M", "dm.basesize=256M", "dm.fs=ext4")
#: Everything is slow under TCG emulation: Python starts alone take 10-20 s.
SLOW = 900


def test_docker_run_on_devicemapper(tmp_path: Any, needs_devmapper: None) -> None:
    flags = ["-s", "devmapper", "-b", "none", *(f"--storage-opt={o}" for o in POOL)]
    daemon = DaemonProcess(str(tmp_path / "daemon"), flags)
    config = tmp_path / "docker-config"
    config.mkdir()

    def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, DOCKER_CONFIG=str(config), DOCKER_HOST=daemon.host)
        env.pop("DOCKER_API_VERSION", None)
        proc = subprocess.run(["docker", *args], capture_output=True, env=env, timeout=SLOW)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')}\n"
                f"daemon log:\n{daemon.log()[-4000:]}"
            )
        return proc

    daemon.start(timeout=SLOW)
    try:
        info = json.loads(docker("info", "--format", "{{json .}}").stdout)
        assert info["Driver"] == "devmapper"
        status = dict(info["DriverStatus"])
        assert status["Pool Name"].endswith("-pool") and status["Backing Filesystem"] == "ext4"

        archive = tmp_path / "busybox.tar"
        archive.write_bytes(busybox_archive())
        docker("load", "-i", str(archive))
        # Output is read back from the container's log: under TCG the attach
        # stream of a container this short can lose it (see the README).
        docker("run", "--name", "c1", "busybox", "sh", "-c", "echo written > /f && cat /f")
        assert docker("logs", "c1").stdout == b"written\n"
        # commit: c1's changes become a thin snapshot of the image's device, and run.
        docker("commit", "-c", "CMD cat /f", "-m", "on devmapper", "c1", "committed:dm")
        docker("rm", "c1")
        failed = docker("run", "--rm", "busybox", "sh", "-c", "test -f /f", check=False)
        assert failed.returncode == 1  # a new container's layer does not have c1's file
        docker("run", "--name", "c2", "committed:dm")
        assert docker("logs", "c2").stdout == b"written\n"
        docker("rm", "c2")
        history = docker("history", "--format", "{{.Comment}}", "committed:dm").stdout.decode()
        assert history.splitlines()[0] == "on devmapper"
        docker("rmi", "committed:dm")

        docker("run", "--name", "big", "--storage-opt", "size=600M", "busybox", "df", "-P", "-k", "/")
        size_kib = int(docker("logs", "big").stdout.decode().splitlines()[1].split()[1])  # -P: one line each
        assert size_kib * 1024 > 500 << 20
        docker("rm", "big")
        small = docker("run", "--rm", "--storage-opt", "size=64M", "busybox", "true", check=False)
        assert small.returncode != 0 and b"Container size cannot be smaller than 268MB" in small.stderr

        docker("rmi", "busybox")
        # A device still busy after the driver's retries (udev and blkid open each new device
        # for a moment, for longer under TCG) is marked deleted and goes at the deferred
        # deletion worker's next round, as in moby: wait for two rounds.
        metadata = os.path.join(daemon.root, "devmapper", "metadata")
        expected = ["base", "deviceset-metadata", "transaction-metadata"]
        deadline = time.monotonic() + 2 * DELETION_INTERVAL + 30
        records = sorted(os.listdir(metadata))
        while records != expected and time.monotonic() < deadline:
            for name in set(records) - set(expected):
                with open(os.path.join(metadata, name)) as fh:
                    assert json.load(fh).get("deleted") is True, f"{name} is left and not marked deleted"
            time.sleep(1)
            records = sorted(os.listdir(metadata))
        assert records == expected
    finally:
        daemon.stop(timeout=SLOW)
