"""Start and stop a real daemon (``engine -d``) for integration tests.

The daemon runs as a child process with its own root, socket and pidfile
under a temporary directory; :meth:`DaemonProcess.stop` sends SIGTERM, waits,
and kills it if it hangs. Used inside the test sandbox
(:mod:`engine.testing.sandbox`), so nothing it does outlives the session.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import IO

from engine.testing.procs import wait_for


def settled_listdir(path: str, timeout: float = 30.0) -> list[str]:
    """The entries of a daemon's directory once none is on its way out: removed layers and
    removed containers' directories are renamed to ``.rm-*`` at once and deleted in the
    background (:class:`engine.sys.fs.Reaper`).

    :raises AssertionError: one is still there after ``timeout`` seconds.
    """

    def settled() -> tuple[list[str]] | None:
        names = os.listdir(path)
        return None if any(name.startswith(".rm-") for name in names) else (names,)

    return wait_for(settled, timeout, what=f"the deletions under way in {path}")[0]


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a unix socket."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class DaemonProcess:
    """A daemon under test.

    :param workdir: a fresh directory for root, socket, pidfile and log.
    :param args: extra daemon flags.
    """

    def __init__(self, workdir: str, args: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.root = os.path.join(workdir, "root")
        self.socket = os.path.join(workdir, "engine.sock")
        self.pidfile = os.path.join(workdir, "engine.pid")
        self.log_path = os.path.join(workdir, "daemon.log")
        self.config_file = os.path.join(workdir, "daemon.json")
        self.args = list(args)
        self.env = dict(os.environ, **(env or {}))
        self.proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def command(self) -> list[str]:
        base = [sys.executable, "-m", "engine.cli", "-d", "-H", self.host, "-g", self.root]
        if not any(a in ("-p", "--pidfile") for a in self.args):
            base += ["-p", self.pidfile]
        if not any(a.startswith("--config-file") for a in self.args):
            base += ["--config-file", self.config_file]
            if not os.path.exists(self.config_file):
                os.makedirs(self.workdir, exist_ok=True)
                with open(self.config_file, "w") as fh:
                    fh.write("{}\n")
        return base + self.args

    def start(self, wait: bool = True, timeout: float = 30.0) -> DaemonProcess:
        os.makedirs(self.workdir, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, body = self.request("GET", "/_ping", timeout=timeout)
                if status == 200 and body == b"OK":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"daemon not ready after {timeout}s:\n{self.log()}")

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        timeout: float = 30.0,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        conn = UnixHTTPConnection(self.socket, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def pids(self) -> list[int]:
        """The master's PID and its children's (the worker)."""
        if self.proc is None:
            return []
        out = [self.proc.pid]
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as fh:
                out += [int(p) for p in fh.read().split()]
        except OSError:
            pass
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int | None:
        """Signal the master and wait; SIGKILL the whole group if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9 of the master, its worker and the worker's read replica (containers must survive).

        The replica goes with the rest, as a crashed dockerd's sockets do: it would otherwise
        answer on the old socket for the moment its worker takes to die, and the next daemon
        would find the socket taken.
        """
        from engine.testing.procs import children_of, cmdline, wait_gone

        pids = self.pids()
        replicas = [p for p in children_of(pids[1:]) if "engine.server.replica" in cmdline(p)]
        for pid in replicas + pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait(10)
        for pid in replicas:
            wait_gone(pid)
