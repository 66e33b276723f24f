"""The Engine and its Jobs (seed ch. 3 §5.2 and §5.5.3).

The Engine is a table of named handlers. Every action of the daemon is a job
run through it: a job has a name, arguments, a typed environment, stdin,
stdout and stderr, and ends with a status, like a Unix process. Handlers
raise :class:`~engine.errors.EngineError` subclasses; the status is derived
from what they raise.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from engine.core.env import Env
from engine.core.streams import Input, Output
from engine.errors import Conflict, EngineError, NoSuchJob, ShuttingDown

LOG = logging.getLogger("engine.job")

Handler = Callable[["Job"], Any]

#: How long :meth:`Engine.shutdown` waits for running jobs (seed ch. 3 §5.3).
SHUTDOWN_JOB_TIMEOUT = 15.0


class Status(enum.IntEnum):
    """A job's exit status, as in the seed (``engine.Status``)."""

    OK = 0
    ERR = 1
    NOTFOUND = 127


class Job:
    """One run of a handler: name, args, env, streams and, once run, status.

    Create jobs with :meth:`Engine.job`; :meth:`run` may be called once.
    """

    def __init__(
        self,
        engine: Engine,
        name: str,
        args: tuple[str, ...],
        handler: Handler | None,
        env: Mapping[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.name = name
        self.args = list(args)
        self.env = Env(env)
        self.stdin = Input()
        self.stdout = Output()
        self.stderr = Output()
        self.status: Status | None = None
        self.error: EngineError | None = None
        self._handler = handler
        self._ran = False

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(self.args)})"

    def run(self) -> Status:
        """Run the handler, block until it returns, and return the status.

        :raises EngineError: what the handler raised (the status is set
            first); an unexpected exception becomes a plain EngineError
            (HTTP 500) chained to the original.
        """
        if self._ran:
            raise EngineError(f"{self.name}: job has already completed")
        self._ran = True
        eng = self.engine
        if not eng._enter_job():
            self.status = Status.ERR
            self.error = ShuttingDown()
            raise self.error
        started = time.monotonic()
        try:
            LOG.debug("+job %r", self)
            if self._handler is None:
                self.status = Status.NOTFOUND
                self.error = NoSuchJob(name=self.name)
                raise self.error
            try:
                self._handler(self)
            except EngineError as exc:
                self.status = Status.ERR
                self.error = exc
                raise
            except Exception as exc:  # a bug or an unexpected host error
                LOG.exception("job %r failed", self)
                self.status = Status.ERR
                self.error = EngineError(f"{self.name}: {exc}")
                raise self.error from exc
            self.status = Status.OK
            return self.status
        finally:
            elapsed = time.monotonic() - started
            LOG.debug(
                "-job %r = %s (%d) %.1fms%s",
                self,
                self.status.name if self.status is not None else "ERR",
                int(self.status) if self.status is not None else 1,
                elapsed * 1000,
                f": {self.error}" if self.error else "",
            )
            observer = eng.observer
            if observer is not None:
                observer(self.name, elapsed, self.status)
            self.stdout.flush()
            eng._leave_job()

    # small conveniences used by handlers
    def printf(self, fmt: str, *args: object) -> None:
        self.stdout.printf(fmt, *args)

    def write_json(self, obj: Any) -> None:
        self.stdout.write_json(obj)

    def getenv(self, key: str, default: str = "") -> str:
        return self.env.get(key, default)


class Engine:
    """The handler table, the job factory and the shutdown sequence."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._catchall: Handler | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = 0
        self._shutting_down = False
        self._shutdown_done = threading.Event()
        self._on_shutdown: list[Callable[[], Any]] = []
        #: Set when shutdown starts; long-running jobs (events, logs, attach)
        #: wait on it so they end promptly.
        self.stopping = threading.Event()
        #: The daemon this engine serves, once it exists (seed's "hack" var).
        self.daemon: Any = None
        #: The daemon's configuration, in the master, which has no daemon (engine.server.main).
        self.config: Any = None
        #: Called once the daemon accepts connections (the server tells systemd; acceptconnections).
        self.on_ready: Callable[[], Any] | None = None
        #: ``fn(name, seconds, status)``, called as each job ends (the
        #: metrics set it); None costs the job nothing.
        self.observer: Callable[[str, float, Status | None], Any] | None = None
        self.register("commands", self._job_commands)

    # the handler table
    def register(self, name: str, handler: Handler) -> None:
        """Register ``handler`` for jobs called ``name``.

        :raises Conflict: a handler is already registered under that name.
        """
        with self._lock:
            if name in self._handlers:
                raise Conflict(f"Can't overwrite handler for command {name}")
            self._handlers[name] = handler

    def register_catchall(self, handler: Handler) -> None:
        """Run ``handler`` for any job name that has no handler of its own."""
        self._catchall = handler

    def has(self, name: str) -> bool:
        return name in self._handlers

    def commands(self) -> list[str]:
        return sorted(self._handlers)

    def job(self, name: str, *args: str, env: Mapping[str, Any] | None = None) -> Job:
        """Make a job for ``name``; run it with :meth:`Job.run`."""
        handler = self._handlers.get(name)
        if handler is None and name and self._catchall is not None:
            handler = self._catchall
        return Job(self, name, tuple(str(a) for a in args), handler, env)

    def _job_commands(self, job: Job) -> None:
        for name in self.commands():
            job.printf("%s\n", name)

    # running jobs and shutdown
    def _enter_job(self) -> bool:
        with self._lock:
            if self._shutting_down:
                return False
            self._running += 1
            return True

    def _leave_job(self) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0:
                self._idle.notify_all()

    @property
    def running_jobs(self) -> int:
        return self._running

    @property
    def is_shutdown(self) -> bool:
        return self._shutting_down

    def on_shutdown(self, handler: Callable[[], Any]) -> None:
        """Run ``handler`` at shutdown, after the running jobs (in order added)."""
        self._on_shutdown.append(handler)

    def shutdown(self, timeout: float = SHUTDOWN_JOB_TIMEOUT) -> None:
        """Refuse new jobs, wait for running ones, then run shutdown handlers.

        Waits at most ``timeout`` seconds for the running jobs (seed: 15 s).
        A second call waits for the first to finish.
        """
        with self._lock:
            if self._shutting_down:
                first = False
            else:
                self._shutting_down = True
                first = True
        if not first:
            self._shutdown_done.wait()
            return
        self.stopping.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._running > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    LOG.warning("shutdown: %d jobs still running after %.0fs", self._running, timeout)
                    break
                self._idle.wait(left)
        for handler in self._on_shutdown:
            try:
                handler()
            except Exception:
                LOG.exception("shutdown handler %r failed", handler)
        self._shutdown_done.set()
