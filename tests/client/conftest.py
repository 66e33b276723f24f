"""Fixtures for the ``engine`` client's end-to-end tests: a daemon (ours or dockerd) and a CLI runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import pytest

from engine.testing import dockerd as reference
from engine.testing.daemon import DaemonProcess
from engine.testing.images import busybox_archive


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


class Tmux:
    """A private tmux server (``-L``, its socket in ``tmpdir``) running one command in a detached session."""

    def __init__(self, name: str, tmpdir: str) -> None:
        self.name = name
        self.env = dict(os.environ, TERM=os.environ.get("TERM", "xterm"), TMUX_TMPDIR=tmpdir)
        self.env.pop("TMUX", None)

    def _tmux(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["tmux", "-L", self.name, *args], capture_output=True, text=True, timeout=30, env=self.env
        )

    def start(self, command: str, env: dict[str, str], width: int = 100, height: int = 30) -> None:
        env_args = [f"{k}={v}" for k, v in env.items() if k in ("DOCKER_CONFIG", "PYTHONPATH", "PYTHONUNBUFFERED")]
        prefix = "env " + " ".join(env_args) + " " if env_args else ""
        for _ in range(50):
            proc = self._tmux("new-session", "-d", "-s", "main", "-x", str(width), "-y", str(height), prefix + command)
            # A server killed a moment ago may still hold the socket.
            if proc.returncode == 0 or "server exited unexpectedly" not in proc.stderr:
                break
            time.sleep(0.1)
        assert proc.returncode == 0, proc.stderr

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "main", *keys)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "main").stdout

    def resize(self, width: int, height: int) -> None:
        self._tmux("resize-window", "-t", "main", "-x", str(width), "-y", str(height))

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} did not appear on the screen:\n{screen}")

    def kill(self) -> None:
        self._tmux("kill-server")


@pytest.fixture
def tmux(request):
    """A private tmux server.

    Creates: a short temporary directory for its socket (unix socket paths
    are limited to 108 bytes); the server is killed and the directory
    removed in a finalizer.
    """
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    tmpdir = tempfile.mkdtemp(prefix="etmux")
    server = Tmux("engine-test", tmpdir)

    def finish() -> None:
        server.kill()
        shutil.rmtree(tmpdir, ignore_errors=True)

    request.addfinalizer(finish)
    return server
