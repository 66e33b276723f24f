"""Starting, finding and stopping userland proxies (the daemon's side of :mod:`engine_net_bridge.proxy`).

A proxy is known by its PID *and* its start time (field 22 of
``/proc/<pid>/stat``, in clock ticks since boot): after a daemon restart the
PID in the state file may belong to another process by now, and killing that
one would be a disaster. A zombie counts as gone.

Its command line names the driver's home (``--home <root>/network``): a
proxy started just before the daemon was killed, and never recorded, is
found by it (:func:`find_proxies`) and stopped by the next ``init``, while
the proxies of another daemon on the same host (another root) are not
touched.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import HostError
from engine.sys.proc import start_time, stat_fields

LOG = logging.getLogger(__name__)

#: How long the launcher may take to print the proxy's PID.
START_TIMEOUT = 10.0
#: How long a proxy gets to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT = 2.0
_MARK = b"engine_net_bridge.proxy"


@dataclass
class ProxyRecord:
    """A running proxy: its identity, the ports it serves (``"0.0.0.0:18080/tcp"``), whether it only holds them."""

    pid: int
    start_time: int
    ports: list[str] = field(default_factory=list)
    hold: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"Pid": self.pid, "StartTime": self.start_time, "Ports": list(self.ports), "Hold": self.hold}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ProxyRecord:
        return cls(
            int(doc["Pid"]), int(doc["StartTime"]), [str(p) for p in doc.get("Ports", [])], bool(doc.get("Hold", False))
        )


def _package_root() -> str:
    """The directory holding ``engine_net_bridge``, for the proxy's ``python -S``."""
    import engine_net_bridge

    return os.path.dirname(os.path.dirname(os.path.abspath(engine_net_bridge.__file__)))


def proxy_alive(record: ProxyRecord) -> bool:
    """Whether ``record`` still names a live proxy of ours."""
    fields = stat_fields(record.pid)
    if not fields or fields[0] in (b"Z", b"X") or int(fields[19]) != record.start_time:
        return False
    try:
        with open(f"/proc/{record.pid}/cmdline", "rb") as fh:
            return _MARK in fh.read()
    except OSError:
        return False


def find_proxies(home: str) -> list[ProxyRecord]:
    """The live proxies started for the driver whose home is ``home`` (recorded or not)."""
    want = os.path.realpath(home).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if _MARK not in argv or b"--home" not in argv:
            continue
        at = argv.index(b"--home") + 1
        if at < len(argv) and argv[at] == want:
            fields = stat_fields(int(entry))
            if fields and fields[0] not in (b"Z", b"X"):
                found.append(ProxyRecord(int(entry), int(fields[19])))
    return found


def start_proxy(
    container_id: str,
    maps: Sequence[tuple[socket.socket, str, str, int]],
    log_path: str,
    python: str = sys.executable,
    hold: bool = False,
    home: str = "",
) -> ProxyRecord:
    """Start a proxy serving ``maps``: (bound host socket, proto, container IP, container port).

    The sockets stay open here; the caller closes its copies afterwards.

    :param hold: relay nothing, only keep the sockets (``--userland-proxy=false``).
    :param home: the driver's home, in the command line (see :func:`find_proxies`).
    :raises HostError: the proxy could not be started.
    """
    argv = [
        python,
        "-S",
        "-P",
        "-m",
        "engine_net_bridge.proxy",
        *(["--hold"] if hold else []),
        *(["--home", os.path.realpath(home)] if home else []),
        "--container",
        container_id[:12],
    ]
    ports = []
    for sock, proto, ip, port in maps:
        argv.append(f"{sock.fileno()}:{proto}:{ip}:{port}")
        host, host_port = sock.getsockname()[:2]
        ports.append(f"{host}:{host_port}/{proto}")
    env = {"PYTHONPATH": _package_root(), "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd="/",
                close_fds=True,
                pass_fds=[s.fileno() for s, *_ in maps],
                start_new_session=True,
            )
    except OSError as exc:
        raise HostError(f"cannot start the userland proxy ({python}): {exc.strerror}") from exc
    try:
        out, _ = proc.communicate(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise HostError(f"the userland proxy did not start within {START_TIMEOUT:g}s; see {log_path}") from None
    text = out.decode(errors="replace").strip()
    if proc.returncode != 0 or not text.isdigit():
        raise HostError(f"the userland proxy failed to start (status {proc.returncode}); see {log_path}")
    pid = int(text)
    started = start_time(pid)
    if started is None:
        raise HostError(f"the userland proxy (pid {pid}) exited at once; see {log_path}")
    LOG.debug("proxy %d for %s %s %s", pid, container_id[:12], "holds" if hold else "serves", ", ".join(ports))
    return ProxyRecord(pid, started, ports, hold)


def stop_proxy(record: ProxyRecord, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the proxy, SIGKILL it if it lingers; nothing if it is gone already.

    Through a pidfd, opened before the check that the PID is still our
    proxy: no signal can reach a process that reused the PID, and the wait
    ends as soon as the proxy exits.
    """
    try:
        pidfd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        return
    try:
        if not proxy_alive(record):
            return
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        except ProcessLookupError:
            return
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if poller.poll(int(timeout * 1000)):
            return
        LOG.warning("userland proxy %d ignored SIGTERM; killing it", record.pid)
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
    finally:
        os.close(pidfd)
