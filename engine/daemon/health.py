"""Healthchecks: the daemon probes a running container with execs (moby ``daemon/health.go``).

``Config.Healthcheck`` (from ``docker run --health-*``, or the image's
``HEALTHCHECK``) is ``{"Test", "Interval", "Timeout", "StartPeriod",
"StartInterval", "Retries"}``, durations in nanoseconds, 0 meaning the
default. ``Test`` is ``["NONE"]`` (no check), ``["CMD", arg...]`` (run as
it is) or ``["CMD-SHELL", command]`` (run with ``/bin/sh -c``, or the
container's ``Shell``).

While the container runs (and is not paused), one thread of the
:class:`HealthMonitor` per container runs the probe every ``Interval``
(every ``StartInterval`` while still starting inside ``StartPeriod``) as an
exec of the container (``exec_create``/``exec_start``/``exec_die`` events,
as dockerd's), keeps at most 4096 bytes of its output, and records the
result in ``State.Health``::

    {"Status": "starting"|"healthy"|"unhealthy", "FailingStreak": n,
     "Log": [{"Start", "End", "ExitCode", "Output"}, ...]}   # the last five

Exit code 0 is healthy; anything else (a probe that cannot start or runs
past ``Timeout`` is -1) counts a failure, except while the container is
still starting inside ``StartPeriod``; ``Retries`` failures in a row make it
unhealthy. A change of status is a ``health_status: <status>`` event.

The monitor follows the life cycle through the daemon's container events
(:meth:`HealthMonitor.on_event`, called by
:meth:`Daemon.container_event <engine.daemon.daemon.Daemon.container_event>`):
``start`` resets the status to ``starting`` and begins probing (a restart
by policy too), ``pause`` and ``die`` stop it, ``unpause`` resumes it. At
daemon start the containers that kept running resume where they were
(:meth:`HealthMonitor.resume`). Health is stored with the container's state,
so it survives the daemon.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.drivers.exec import ExecStartError
from engine.errors import EngineError, InvalidParameter

if TYPE_CHECKING:
    from engine.daemon.container import Container
    from engine.daemon.daemon import Daemon

LOG = logging.getLogger(__name__)

__all__ = [
    "HEALTHY",
    "NO_HEALTHCHECK",
    "STARTING",
    "UNHEALTHY",
    "HealthMonitor",
    "describe",
    "merge_healthcheck",
    "probe_command",
    "validate",
]

STARTING, HEALTHY, UNHEALTHY, NO_HEALTHCHECK = "starting", "healthy", "unhealthy", "none"
NANOS = 1_000_000_000
#: moby's defaults and limits, in seconds.
DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_START_PERIOD = 0.0
DEFAULT_START_INTERVAL = 5.0
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096
#: The shortest duration a healthcheck may set (moby's ``MinimumDuration``): 1 ms.
MINIMUM_DURATION = 1_000_000


# ---------------------------------------------------------------------------
# configuration (pure)


def validate(healthcheck: dict | None) -> None:
    """moby's ``validateHealthCheck``, at create.

    :raises InvalidParameter: a duration under 1 ms, negative retries.
    """
    if not healthcheck:
        return
    for key in ("Interval", "Timeout", "StartPeriod", "StartInterval"):
        value = int(healthcheck.get(key) or 0)
        if value and value < MINIMUM_DURATION:
            raise InvalidParameter(f"{key} in Healthcheck cannot be less than 1ms")
    if int(healthcheck.get("Retries") or 0) < 0:
        raise InvalidParameter("Retries in Healthcheck cannot be negative")


def merge_healthcheck(user: dict | None, image: dict | None) -> dict | None:
    """The container's healthcheck: the user's, with what it leaves unset from the image's
    (moby's ``merge`` of a create with the image's config)."""
    if user is None:
        return dict(image) if image else None
    out = dict(user)
    if image:
        if not out.get("Test"):
            out["Test"] = image.get("Test")
        for key in ("Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"):
            if not out.get(key) and image.get(key):
                out[key] = image[key]
    return out


def probe_command(config: dict) -> list[str] | None:
    """The argv of the container's probe; None when it has none (no healthcheck, ``NONE``, or a
    type moby does not know, which it logs and ignores)."""
    test = list((config.get("Healthcheck") or {}).get("Test") or [])
    if not test:
        return None
    if test[0] == "CMD":
        return test[1:] or None
    if test[0] == "CMD-SHELL":
        shell = list(config.get("Shell") or ["/bin/sh", "-c"])
        return [*shell, *test[1:]]
    if test[0] != "NONE":
        LOG.warning("unknown healthcheck type %r (expected CMD or CMD-SHELL)", test[0])
    return None


def describe(health: dict | None) -> str:
    """How ``docker ps`` shows a health (``health: starting``, ``healthy``, ``unhealthy``); "" for none."""
    if not health:
        return ""
    status = health.get("Status") or STARTING
    return "health: starting" if status == STARTING else status


def status_of(health: dict | None) -> str:
    """``--filter health=`` matches this: the status, or ``none`` without a healthcheck."""
    return (health or {}).get("Status") or NO_HEALTHCHECK


def _seconds(config: dict, key: str, default: float) -> float:
    value = int(config.get(key) or 0)
    return value / NANOS if value > 0 else default


# ---------------------------------------------------------------------------
# the probes


class _Output:
    """Collects a probe's output, up to :data:`MAX_OUTPUT` bytes ("..." marks a cut)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = bytearray()
        self.truncated = False
        self.thread = threading.Thread(target=self._read, name="health-output", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                room = MAX_OUTPUT - len(self.data)
                self.data += chunk[: max(room, 0)]
                if len(chunk) > room:
                    self.truncated = True
        except OSError:
            return
        finally:
            self.sock.close()

    def text(self) -> str:
        self.thread.join(5)
        out = self.data.decode("utf-8", "replace")
        return out + "..." if self.truncated else out


class HealthMonitor:
    """Runs the healthchecks of a daemon's containers.

    :param daemon: the daemon (its exec service, the events, its clock for times).
    :param now: the wall clock (injected by tests).
    """

    def __init__(self, daemon: Daemon, now: Callable[[], float] = time.time) -> None:
        self.daemon = daemon
        self.now = now
        self._probers: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    # the life cycle's side
    def on_event(self, c: Container, action: str) -> None:
        """Follow container ``c`` through the life cycle's event ``action``."""
        if action == "start":
            self._begin(c, reset=True)
        elif action == "unpause":
            self._begin(c, reset=False)
        elif action in ("die", "pause", "destroy"):
            self.stop(c)

    def resume(self, c: Container) -> None:
        """Resume probing a container that kept running through a daemon restart."""
        with c.lock:
            running = c.state.running and not c.state.paused and not c.state.restarting
        if running:
            self._begin(c, reset=False)

    def stop(self, c: Container) -> None:
        """Stop probing ``c`` (a probe under way is killed); its health stays as it was."""
        with self._lock:
            stop = self._probers.pop(c.id, None)
        if stop is not None:
            stop.set()

    def close(self) -> None:
        """Stop every prober (the daemon shuts down; the containers go on)."""
        with self._lock:
            probers = list(self._probers.values())
            self._probers.clear()
        for stop in probers:
            stop.set()

    def _begin(self, c: Container, reset: bool) -> None:
        argv = probe_command(c.config)
        if argv is None:
            return
        with c.lock:
            if reset or c.state.health is None:
                health = dict(c.state.health or {})
                health.update(Status=STARTING, FailingStreak=0)
                health.setdefault("Log", [])
                c.state.health = health
                c.to_disk()
        stop = threading.Event()
        with self._lock:
            old = self._probers.pop(c.id, None)
            self._probers[c.id] = stop
        if old is not None:
            old.set()
        threading.Thread(target=self._run, args=(c, argv, stop), name=f"health-{c.short_id}", daemon=True).start()

    # the prober
    def _interval(self, c: Container, config: dict) -> float:
        interval = _seconds(config, "Interval", DEFAULT_INTERVAL)
        start_period = _seconds(config, "StartPeriod", DEFAULT_START_PERIOD)
        with c.lock:
            started_at = c.state.started_at
            status = status_of(c.state.health)
        if self.now() - started_at < start_period and status == STARTING:
            return _seconds(config, "StartInterval", DEFAULT_START_INTERVAL)
        return interval

    def _run(self, c: Container, argv: list[str], stop: threading.Event) -> None:
        config = c.config.get("Healthcheck") or {}
        timeout = _seconds(config, "Timeout", DEFAULT_TIMEOUT)
        while not stop.wait(self._interval(c, config)):
            started = self.now()
            result = self._probe(c, argv, timeout, stop, started)
            if result is None or stop.is_set():
                return
            self._record(c, result, config, started)

    def _probe(
        self, c: Container, argv: list[str], timeout: float, stop: threading.Event, started: float
    ) -> dict | None:
        """Run the probe once as an exec; its result (None: stopped while it ran)."""
        from engine.daemon.daemon import require
        from engine.utils.timefmt import rfc3339nano

        execs = require(self.daemon.execs, "exec service")
        body = {
            "Cmd": argv,
            "AttachStdout": True,
            "AttachStderr": True,
            "User": c.config.get("User") or "",
            "WorkingDir": c.config.get("WorkingDir") or "",
        }
        ours, theirs = socket.socketpair()
        output = _Output(theirs)
        outcome: dict[str, Any] = {}
        try:
            e = execs.create(c, body)

            def run() -> None:
                try:
                    execs.start(e, ours, multiplexed=False)
                except ExecStartError as exc:
                    outcome["error"] = (
                        f"OCI runtime exec failed: exec failed: unable to start container process: {exc}: unknown"
                    )
                except EngineError as exc:
                    outcome["error"] = str(exc)
                finally:
                    ours.close()

            runner = threading.Thread(target=run, name=f"health-exec-{c.short_id}", daemon=True)
            runner.start()
            deadline = time.monotonic() + timeout
            while runner.is_alive() and not stop.is_set() and time.monotonic() < deadline:
                runner.join(0.1)
            if runner.is_alive():
                # Timed out or stopped: kill the probe (dockerd sends it SIGKILL) and wait for it.
                if e.running and e.pid:
                    try:
                        os.kill(e.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                runner.join(30)
                if stop.is_set():
                    return None
                code, text = -1, f"Health check exceeded timeout ({_go_duration(timeout)})"
            elif "error" in outcome:
                code, text = -1, outcome["error"]
            else:
                code = e.exit_code if e.exit_code is not None else -1
                text = output.text()
        except EngineError as exc:
            ours.close()
            code, text = -1, str(exc)
        return {"Start": rfc3339nano(started), "End": rfc3339nano(self.now()), "ExitCode": code, "Output": text}

    def _record(self, c: Container, result: dict, config: dict, started: float) -> None:
        """moby's ``handleProbeResult``: the log, the streak and the status; an event if it changed."""
        retries = int(config.get("Retries") or 0) or DEFAULT_RETRIES
        start_period = _seconds(config, "StartPeriod", DEFAULT_START_PERIOD)
        with c.lock:
            if not c.state.running or c.state.health is None:
                return
            health = dict(c.state.health)
            old = health.get("Status") or STARTING
            health["Log"] = (list(health.get("Log") or []) + [result])[-MAX_LOG_ENTRIES:]
            if result["ExitCode"] == 0:
                health["FailingStreak"] = 0
                health["Status"] = HEALTHY
            else:
                # While it has never been healthy, failures inside the start period do not count.
                if not (old == STARTING and started - c.state.started_at < start_period):
                    health["FailingStreak"] = int(health.get("FailingStreak") or 0) + 1
                    if health["FailingStreak"] >= retries:
                        health["Status"] = UNHEALTHY
            c.state.health = health
            c.to_disk()
        if health["Status"] != old:
            self.daemon.container_event(c, f"health_status: {health['Status']}")


def _go_duration(seconds: float) -> str:
    """A duration as Go prints it (``30s``, ``1.5s``, ``500ms``, ``1m0s``)."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{rest:g}s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)}h{int(minutes)}m{rest:g}s"
