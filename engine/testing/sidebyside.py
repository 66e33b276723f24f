"""Our daemon and the reference dockerd 20.10 under the same test, through the stock CLI,
docker-py and raw HTTP.

:func:`running` starts one of them (``engine``: ours with ``-s vfs``; ``dockerd``: Debian's,
:class:`~engine.testing.dockerd.ReferenceDockerd`) in a work directory with the busybox test
image loaded, and yields a :class:`Target`; on the way out every container and volume is
removed, the daemon stopped and the directory deleted. Tests parametrize a module-scoped
fixture over both kinds and compare what each answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from engine.sys.fs import safe_rmtree
from engine.testing import dockerd as reference
from engine.testing.daemon import DaemonProcess, UnixHTTPConnection
from engine.testing.images import busybox_archive

__all__ = ["KINDS", "Target", "running", "wait_for"]

KINDS = ("engine", "dockerd")


@dataclass
class Target:
    """One daemon under test.

    :param kind: ``engine`` or ``dockerd``.
    :param socket: its unix socket.
    :param config_dir: a ``DOCKER_CONFIG`` of its own (the CLI's detach keys live there).
    """

    kind: str
    socket: str
    config_dir: str
    process: Any
    workdir: str

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """The stock CLI (it negotiates the API version from ``/_ping``)."""
        env = dict(os.environ, DOCKER_CONFIG=self.config_dir, DOCKER_HOST=self.host)
        env.pop("DOCKER_API_VERSION", None)
        proc = subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{self.kind}: docker {' '.join(args)} exited {proc.returncode}: {proc.stderr}\n"
                f"{self.process.log()[-3000:]}"
            )
        return proc

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """Raw HTTP; a ``dict``/``list`` body is sent as JSON. Returns (status, decoded JSON or bytes)."""
        headers = dict(headers or {})
        data = body
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        conn = UnixHTTPConnection(self.socket)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw

    def api(self, version: str = "auto") -> Any:
        """A docker-py ``APIClient`` (``auto``: the version the daemon reports)."""
        import docker

        return docker.APIClient(base_url=self.host, version=version, timeout=120)

    def inspect(self, name: str) -> dict:
        return json.loads(self.docker("inspect", name).stdout)[0]

    def container_ids(self) -> set[str]:
        return set(self.docker("ps", "-aq", "--no-trunc").stdout.split())


@contextmanager
def running(
    kind: str, workdir: str, engine_args: Sequence[str] = (), dockerd_args: Sequence[str] = ()
) -> Iterator[Target]:
    """Start ``kind`` in ``workdir`` with busybox loaded; clean everything up afterwards.

    Creates: ``workdir`` (the daemon's root, socket and log, a DOCKER_CONFIG), the daemon's
    processes and what the test makes in it; all removed on the way out.
    """
    if kind == "dockerd":
        process: Any = reference.ReferenceDockerd(os.path.join(workdir, "d"), args=tuple(dockerd_args)).start()
    else:
        process = DaemonProcess(os.path.join(workdir, "e"), ["-s", "vfs", *engine_args]).start()
    config_dir = os.path.join(workdir, "docker-config")
    os.makedirs(config_dir, exist_ok=True)
    target = Target(kind, process.socket, config_dir, process, workdir)
    try:
        archive = os.path.join(workdir, "busybox.tar")
        with open(archive, "wb") as fh:
            fh.write(busybox_archive())
        target.docker("load", "-i", archive)
        yield target
    finally:
        try:
            ids = target.container_ids()
            if ids:
                target.docker("rm", "-f", "-v", *ids, check=False)
            volumes = target.docker("volume", "ls", "-q", check=False).stdout.split()
            if volumes:
                target.docker("volume", "rm", "-f", *volumes, check=False)
        finally:
            process.stop()
            safe_rmtree(workdir)


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, step: float = 0.2) -> Any:
    """Poll ``predicate`` until it is true or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)
