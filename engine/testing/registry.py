"""Start and stop a real registry (Debian's ``docker-registry``, distribution 2.8) for tests and benches.

:class:`LocalRegistry` runs ``/usr/bin/docker-registry serve config.yml`` on
``127.0.0.1`` and a free port, with its storage in a directory of the
caller's choice and a generated ``config.yml``; with ``users`` it also writes
an htpasswd file (bcrypt, the only scheme distribution accepts) and turns
basic auth on. Nothing it starts listens anywhere but on loopback.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping

REGISTRY = "/usr/bin/docker-registry"


def available() -> bool:
    """Whether Debian's ``docker-registry`` is installed."""
    return os.access(REGISTRY, os.X_OK)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for an htpasswd line (the ``bcrypt`` package, else libxcrypt through ``crypt``)."""
    try:
        import bcrypt
    except ImportError:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # deprecated, but libxcrypt's $2b$ is what we need here

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 5))
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()


class LocalRegistry:
    """A distribution registry on ``127.0.0.1:<port>``.

    :param workdir: where ``config.yml``, ``htpasswd`` and the log go.
    :param storage: the storage root; default ``<workdir>/storage``. Two
        registries may share one (a bench serves the same blobs to two
        network namespaces).
    :param users: ``{user: password}`` for htpasswd basic auth; None: open.
    :param port: default: a free one.
    :param netns: run inside this network namespace (a ``/proc/PID/ns/net``
        path) with ``nsenter``, so ``127.0.0.1`` is that namespace's loopback.
    """

    def __init__(
        self,
        workdir: str,
        storage: str | None = None,
        users: Mapping[str, str] | None = None,
        port: int | None = None,
        netns: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.storage = storage or os.path.join(workdir, "storage")
        self.users = dict(users or {})
        self.port = port or free_port()
        self.netns = netns
        self.log_path = os.path.join(workdir, "registry.log")
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``: the registry part of image names."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def _config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage}",
            "  delete:",
            "    enabled: true",
            "  cache:",
            # No blob descriptor cache: a test that corrupts a blob on disk
            # must see the registry serve what is on disk.
            "    blobdescriptor: ''",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            "  headers:",
            "    X-Content-Type-Options: [nosniff]",
        ]
        if self.users:
            htpasswd = os.path.join(self.workdir, "htpasswd")
            with open(htpasswd, "w") as fh:
                for user, password in self.users.items():
                    fh.write(f"{user}:{bcrypt_hash(password)}\n")
            lines += ["auth:", "  htpasswd:", "    realm: test-registry", f"    path: {htpasswd}"]
        path = os.path.join(self.workdir, "config.yml")
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 20.0) -> LocalRegistry:
        """Start it and wait until ``GET /v2/`` answers."""
        os.makedirs(self.workdir, exist_ok=True)
        os.makedirs(self.storage, exist_ok=True)
        argv = [REGISTRY, "serve", self._config()]
        if self.netns:
            argv = [shutil.which("nsenter") or "nsenter", f"--net={self.netns}", *argv]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self.proc.returncode}:\n{self.log()}")
            if self.netns or self._answers():
                if self.netns:
                    time.sleep(0.5)  # not reachable from here: give it the time it needs
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"docker-registry not ready after {timeout}s:\n{self.log()}")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # 401 with auth on: it is up
        except OSError:
            return False

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read().decode(errors="replace")[-6000:]
        except OSError:
            return ""

    def blob_path(self, digest: str) -> str:
        """Where the filesystem driver keeps a blob's bytes."""
        hex_part = digest.split(":", 1)[1]
        return os.path.join(self.storage, "docker", "registry", "v2", "blobs", "sha256", hex_part[:2], hex_part, "data")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
