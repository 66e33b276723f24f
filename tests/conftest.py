"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from engine.testing.daemon import DaemonProcess


def _links() -> dict[str, int]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return {link.get_attr("IFLA_IFNAME"): link["index"] for link in ipr.get_links()}


@pytest.fixture(autouse=True)
def no_leftover_interfaces():
    """Remove interfaces a test left in the sandbox's network namespace.

    Daemons keep their bridge when they stop (as dockerd keeps docker0) and
    live-restore keeps the veths of containers still running; the next test
    must start from a namespace with only what it had before.
    """
    from engine.testing.sandbox import in_sandbox

    if not in_sandbox() or os.geteuid() != 0:
        yield
        return
    before = set(_links())
    yield
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    for name, index in _links().items():
        if name not in before:
            with IPRoute() as ipr:
                try:
                    ipr.link("del", index=index)
                except NetlinkError:
                    pass  # a veth whose peer went first


@pytest.fixture
def workdir(tmp_path_factory):
    """A scratch directory for a daemon; mounts below it are removed first."""
    path = tmp_path_factory.mktemp("engine")
    yield str(path)
    from engine.sys.fs import safe_rmtree

    safe_rmtree(str(path))


@pytest.fixture
def daemon(workdir):
    """A running daemon (vfs, no network) with its own root and socket (a test using it is a ``root`` test).

    Creates: ``<workdir>/{root,engine.sock,engine.pid,daemon.log}`` and the
    daemon's processes; all are stopped and removed afterwards.
    """
    d = DaemonProcess(workdir, ["-s", "vfs"])
    d.start()
    yield d
    d.stop()


@pytest.fixture
def docker_config(tmp_path):
    """An empty DOCKER_CONFIG so the real CLI ignores the user's config."""
    path = tmp_path / "docker-config"
    path.mkdir()
    return str(path)


@pytest.fixture
def docker(daemon, docker_config):
    """Run the real docker CLI against the test daemon: ``docker("ps", "-a")``."""
    binary = shutil.which("docker")
    if binary is None:
        pytest.skip("docker CLI not installed")

    def run(*args: str, input: bytes | None = None, check: bool = True, timeout: float = 120):
        env = dict(os.environ, DOCKER_CONFIG=docker_config, DOCKER_HOST=daemon.host)
        env.pop("DOCKER_API_VERSION", None)
        proc = subprocess.run([binary, *args], input=input, capture_output=True, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {proc.returncode}:\n"
                f"stdout: {proc.stdout.decode(errors='replace')}\n"
                f"stderr: {proc.stderr.decode(errors='replace')}\n"
                f"daemon log:\n{daemon.log()[-4000:]}"
            )
        return proc

    return run
