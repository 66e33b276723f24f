"""A reference dockerd (Debian's ``docker.io`` 20.10) for side-by-side tests.

Tests that compare our daemon with Docker (same tarball, same image IDs)
start one with :class:`ReferenceDockerd`. It runs in a mount namespace of its
own inside the test sandbox, with every path it writes redirected to a
temporary directory:

* ``--data-root``, ``--exec-root``, ``--pidfile``, the socket, and
  ``deprecated-key-path`` in a generated config file;
* ``/run``, ``/opt`` and ``/etc/docker`` covered by empty tmpfs mounts:
  dockerd would use a *system* containerd if ``/run/containerd`` had one,
  containerd's ``opt`` plugin writes ``/opt/containerd``;
* no networking of its own (``--bridge=none --iptables=false``) unless
  ``networking`` is set: then its default ``docker0`` bridge and iptables
  rules, in the sandbox's own network namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

from engine.testing.daemon import UnixHTTPConnection

DOCKERD = "/usr/sbin/dockerd"


def available() -> bool:
    return os.access(DOCKERD, os.X_OK) and shutil.which("unshare") is not None and os.geteuid() == 0


class ReferenceDockerd:
    """dockerd under test; ``host`` is its ``unix://`` address."""

    def __init__(
        self, workdir: str, storage_driver: str = "vfs", networking: bool = False, args: tuple[str, ...] = ()
    ) -> None:
        self.workdir = workdir
        self.networking = networking
        self.args = tuple(args)
        self.socket = os.path.join(workdir, "docker.sock")
        self.log_path = os.path.join(workdir, "dockerd.log")
        self.storage_driver = storage_driver
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 60.0) -> ReferenceDockerd:
        os.makedirs(self.workdir, exist_ok=True)
        config = os.path.join(self.workdir, "daemon.json")
        with open(config, "w") as fh:
            json.dump({"deprecated-key-path": os.path.join(self.workdir, "key.json")}, fh)
        argv = [
            DOCKERD,
            "--config-file",
            config,
            "--data-root",
            os.path.join(self.workdir, "data"),
            "--exec-root",
            os.path.join(self.workdir, "exec"),
            "--pidfile",
            os.path.join(self.workdir, "docker.pid"),
            "-H",
            self.host,
            f"--storage-driver={self.storage_driver}",
            *self.args,
        ]
        if not self.networking:
            argv += ["--bridge=none", "--iptables=false", "--ip-masq=false", "--ip6tables=false"]
        script = 'set -e; for d in /run /opt /etc/docker; do mkdir -p $d; mount -t tmpfs tmpfs $d; done; exec "$@"'
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                conn = UnixHTTPConnection(self.socket, timeout=5)
                conn.request("GET", "/_ping")
                if conn.getresponse().status == 200:
                    conn.close()
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"dockerd not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read().decode(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        # Its containerd and shims are in the same process group.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
