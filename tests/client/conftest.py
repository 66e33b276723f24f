"""Fixtures for the ``engine`` client's end-to-end tests: a daemon (ours or dockerd) and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from engine.testing import dockerd as reference
from engine.testing.daemon import DaemonProcess
from engine.testing.images import busybox_archive
from engine.testing.tmux import Tmux, tmux_server
from engine.testing.tmux import available as tmux_available


@dataclass
class Daemon:
    """A running daemon the client tests talk to."""

    kind: str  # "engine" (ours) or "dockerd" (the reference)
    host: str
    process: object

    def api(self):
        import docker

        return docker.APIClient(base_url=self.host, version="1.41", timeout=60)

    def log(self) -> str:
        return self.process.log()[-4000:]  # type: ignore[attr-defined]


def _remove_all_containers(daemon: Daemon) -> None:
    api = daemon.api()
    try:
        for c in api.containers(all=True):
            try:
                api.remove_container(c["Id"], force=True, v=True)
            except Exception:
                pass
        for v in (api.volumes() or {}).get("Volumes") or []:
            try:
                api.remove_volume(v["Name"], force=True)
            except Exception:
                pass
    finally:
        api.close()


@pytest.fixture(scope="module", params=["engine", "dockerd"])
def client_daemon(request, tmp_path_factory):
    """A daemon with the busybox test image loaded: ours (``-s vfs``) and the reference dockerd.

    Creates: a work directory with the daemon's root, socket and log; the
    daemon's processes and containers. All containers and volumes are
    removed, the daemon stopped and its directory removed afterwards.
    """
    kind = request.param
    workdir = str(tmp_path_factory.mktemp(f"client-{kind}"))
    if kind == "dockerd":
        if not reference.available():
            pytest.skip("dockerd is not installed")
        process: object = reference.ReferenceDockerd(workdir).start()
        host = process.host  # type: ignore[attr-defined]
    else:
        process = DaemonProcess(workdir, ["-s", "vfs"]).start()
        host = process.host  # type: ignore[attr-defined]
    daemon = Daemon(kind, host, process)
    try:
        api = daemon.api()
        for _ in api.load_image(busybox_archive()):
            pass
        api.close()
        yield daemon
    finally:
        try:
            _remove_all_containers(daemon)
        except Exception:
            pass
        process.stop()  # type: ignore[attr-defined]
        from engine.sys.fs import safe_rmtree

        safe_rmtree(workdir)


@pytest.fixture
def engine(client_daemon, tmp_path):
    """Run ``engine -H <daemon> ARGS...``; containers and volumes left behind are removed after the test."""
    config = tmp_path / "docker-config"
    config.mkdir()
    env = dict(os.environ, DOCKER_CONFIG=str(config), PYTHONUNBUFFERED="1")
    for key in ("DOCKER_HOST", "DOCKER_DEFAULT_PLATFORM"):
        env.pop(key, None)

    def run(*args: str, input: str | bytes | None = None, timeout: float = 90, cwd: str | None = None):
        text = not isinstance(input, bytes)
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", "-H", client_daemon.host, *args],
            input=input,
            capture_output=True,
            text=text,
            env=env,
            timeout=timeout,
            cwd=cwd,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    run.daemon = client_daemon  # type: ignore[attr-defined]
    run.env = env  # type: ignore[attr-defined]
    yield run
    _remove_all_containers(client_daemon)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    """A private tmux server (:mod:`engine.testing.tmux`).

    Creates: a short temporary directory for its socket; the server is
    killed and the directory removed afterwards.
    """
    if not tmux_available():
        pytest.skip("tmux is not installed")
    with tmux_server("engine-test") as server:
        yield server
