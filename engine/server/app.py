"""The daemon as a gunicorn application (ARCHITECTURE §5).

The master (the process ``engine -d`` started, whose PID is in the pidfile)
binds every ``-H`` address, supervises one threaded worker and tells systemd
when the daemon is ready. The worker builds the engine and the daemon (the
seed's start-up steps), runs the ``acceptconnections`` job, and only then
accepts requests: the ones that arrive meanwhile wait in the listen backlog,
as with the seed's listenbuffer.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from engine.daemon.config import DEFAULT_SHUTDOWN_TIMEOUT, Config, config_from
from engine.errors import EngineError
from engine.server.listeners import Listener, close_listeners
from engine.utils.logs import FORMAT, UTCFormatter, set_debug

LOG = logging.getLogger("engine.server")

#: Threads of the one worker: each long request (attach, wait, logs -f,
#: events) holds one for its whole life.
WORKER_THREADS = 128
#: What the worker writes to the master on its ready pipe: the daemon is up;
#: a configuration reload is done (either way, systemd hears READY=1).
READY = b"R"
RELOADED = b"r"


def graceful_timeout(cfg: Config) -> int:
    """How long the master lets the worker shut down before killing it: the
    ``shutdown-timeout`` for running jobs, plus time for the shutdown handlers."""
    return max(25, cfg.shutdown_timeout + 10)


class EngineLogger(glogging.Logger):
    """gunicorn's logger with the engine's log format."""

    error_fmt = FORMAT.replace("%(name)s", "gunicorn")
    datefmt = None

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(UTCFormatter(self.error_fmt))
        self.error_log.propagate = False


class EngineArbiter(Arbiter):
    """gunicorn's master, with SIGINT as graceful as SIGTERM and SIGHUP as dockerd's.

    The listening sockets belong to :mod:`engine.server.listeners`, which
    removes the socket files itself; gunicorn unlinks by the bound name and
    must not (it does not when it believes systemd owns them).
    """

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.systemd = True

    def handle_int(self) -> None:
        raise StopIteration

    def handle_hup(self) -> None:
        """Reload the daemon's configuration in the worker (engine.daemon.reload).

        gunicorn's own SIGHUP starts a new worker and stops the old one: a
        daemon restart that ends every attach and stream, and runs two
        daemons on one root for a while. The worker stays; only the signal
        goes on to it.
        """
        if not self.app.ready.is_set():
            # Nothing to reload yet; systemd, told RELOADING=1, would wait for a READY=1 that never came.
            self.log.info("SIGHUP ignored: the daemon is still starting")
            return
        self.log.info("reloading the daemon's configuration (SIGHUP)")
        self.app.reload_master()
        self.kill_workers(signal.SIGHUP)


def sd_notify(state: str, address: str | None) -> None:
    """Send ``state`` to systemd's notify socket (sd_notify(3)); no-op without one."""
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError as exc:
            LOG.warning("sd_notify(%s) failed: %s", state.split("\n")[0], exc)


class EngineApplication(BaseApplication):
    """gunicorn application whose worker runs the daemon.

    :param config: the validated daemon configuration.
    :param listeners: sockets the master bound (``fd://N`` binds for gunicorn).
    :param tls: (certfile, keyfile, cafile or None) for TCP listeners, or None.
    :param metrics_sock: the listening socket of ``--metrics-addr``, or None.
    """

    def __init__(
        self,
        config: Config,
        listeners: list[Listener],
        tls: tuple[str, str, str | None] | None,
        metrics_sock: socket.socket | None = None,
    ) -> None:
        self.config = config
        self.listeners = listeners
        self.tls = tls
        self.metrics_sock = metrics_sock
        self.engine: Any = None
        self.shutdown_thread: threading.Thread | None = None
        # gunicorn itself would say READY=1 as soon as the master booted;
        # we say it when the worker's daemon is up (acceptconnections).
        self.notify_socket = os.environ.pop("NOTIFY_SOCKET", None)
        #: Set in the master once the worker's daemon said it is ready.
        self.ready = threading.Event()
        self.ready_r, self.ready_w = os.pipe()
        super().__init__()

    # configuration (master)
    def load_config(self) -> None:
        cfg = self.config
        settings: dict[str, Any] = {
            "bind": [f"fd://{lst.fd}" for lst in self.listeners],
            "workers": 1,
            "worker_class": "engine.server.worker.EngineWorker",
            "threads": WORKER_THREADS,
            "worker_connections": 4096,
            "keepalive": 60,
            "timeout": 120,
            "graceful_timeout": graceful_timeout(cfg),
            "control_socket_disable": True,
            "limit_request_line": 0,
            "limit_request_field_size": 0,
            # gunicorn_h1c (a dependency) parses the request head in C: a sixth less server time
            # for a small request than the pure-Python parser (an inspect: 258 -> 214 us of CPU).
            "http_parser": "fast",
            "errorlog": "-",
            "accesslog": None,
            "loglevel": "debug" if cfg.debug else "info",
            "logger_class": "engine.server.app.EngineLogger",
            "proc_name": "engine",
            "post_fork": self._post_fork,
            "worker_exit": self._worker_exit,
            "when_ready": self._when_ready,
            "child_exit": self._child_exit,
        }
        if self.tls is not None:
            certfile, keyfile, cafile = self.tls
            settings.update(certfile=certfile, keyfile=keyfile)
            if cafile:
                settings.update(ca_certs=cafile, cert_reqs=ssl.CERT_REQUIRED)
        for key, value in settings.items():
            self.cfg.set(key, value)

    def run(self) -> None:
        master = os.getpid()
        try:
            EngineArbiter(self).run()
        except BaseException as exc:
            if os.getpid() != master:
                # The worker is a fork of the master: its exit must not unwind
                # through the master's frames (which close the listeners and
                # remove the pidfile). gunicorn already ran worker_exit.
                code = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 1
                logging.shutdown()
                os._exit(code)
            raise

    # master hooks
    def _when_ready(self, server: Any) -> None:  # noqa: ARG002
        threading.Thread(target=self._wait_ready, name="ready-pipe", daemon=True).start()

    def _wait_ready(self) -> None:
        while True:
            try:
                data = os.read(self.ready_r, 64)
            except OSError:
                return
            if not data:
                return
            for byte in data:
                if byte == RELOADED[0]:
                    sd_notify("READY=1\nSTATUS=configuration reloaded", self.notify_socket)
                    continue
                LOG.info("daemon ready; API listening on %s", ", ".join(str(lst.address) for lst in self.listeners))
                sd_notify(f"READY=1\nMAINPID={os.getpid()}", self.notify_socket)
                self.ready.set()

    def reload_master(self) -> None:
        """SIGHUP in the master: tell systemd a reload started, and take the
        master's own settings (log level, grace at shutdown) from the file."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={usec}", self.notify_socket)
        try:
            new = config_from(self.config.flags, self.config.config_file)
        except EngineError:
            return  # the worker reports it
        set_debug(new.debug)
        self.cfg.set("graceful_timeout", graceful_timeout(new))

    def _child_exit(self, server: Any, worker: Any) -> None:  # noqa: ARG002
        self.ready.clear()  # a new worker will say when its daemon is up

    def _post_fork(self, server: Any, worker: Any) -> None:  # noqa: ARG002
        os.close(self.ready_r)

    # worker side
    def load(self) -> Any:
        """Build engine and daemon, run the start-up steps, return the WSGI app."""
        from engine.api.app import create_app, get_app
        from engine.core import Engine
        from engine.daemon.daemon import Daemon
        from engine.plugins import make_plugin_manager

        try:
            plugins = make_plugin_manager()
            engine = Engine()
            daemon = Daemon(self.config, engine, plugins)
            plugins.hook.engine_register_jobs(engine=engine, daemon=daemon)
            daemon.start()
            metrics_server = self._metrics(daemon) if self.metrics_sock is not None else None
            app = create_app(
                engine,
                cors=self.config.api_enable_cors,
                debug=self.config.debug,
                plugins=plugins,
                extra_middleware=[daemon.metrics.middleware] if metrics_server is not None else (),
            )
        except Exception as exc:
            LOG.error("start-up failed: %s", exc, exc_info=LOG.isEnabledFor(logging.DEBUG))
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        self.engine = engine
        from engine.server.worker import EngineWorker

        EngineWorker.on_stop = self._start_shutdown
        EngineWorker.on_reload = self._reload
        EngineWorker.daemon = engine.daemon
        EngineWorker.replica_allowed = metrics_server is None
        engine.on_ready = self._signal_ready
        if metrics_server is not None:
            metrics_server.start()
        engine.job("acceptconnections").run()
        return get_app(app)

    def _metrics(self, daemon: Any) -> Any:
        """Wire the metrics to the daemon; the server that will serve them (worker side)."""
        from engine.server.metrics import Metrics, MetricsServer

        assert self.metrics_sock is not None
        metrics = Metrics(daemon)
        server = MetricsServer(metrics, self.metrics_sock)

        def stop() -> None:
            server.stop()
            metrics.close()

        daemon.engine.on_shutdown(stop)
        return server

    def _signal_ready(self, what: bytes = READY) -> None:
        try:
            os.write(self.ready_w, what)
        except OSError as exc:
            LOG.warning("could not tell the master we are ready: %s", exc)

    def _reload(self) -> None:
        """SIGHUP in the worker (a thread of its own): run the ``reload`` job."""
        try:
            self.engine.job("reload").run()
        except EngineError as exc:
            LOG.error("reload failed, the configuration is unchanged: %s", exc)
        finally:
            self._signal_ready(RELOADED)

    def _shutdown_timeout(self) -> float:
        daemon = self.engine.daemon
        return float(daemon.config.shutdown_timeout if daemon is not None else DEFAULT_SHUTDOWN_TIMEOUT)

    def _start_shutdown(self) -> None:
        if self.engine is not None:
            LOG.info("shutting down: waiting for running jobs")
            self.engine.shutdown(self._shutdown_timeout())

    def _worker_exit(self, server: Any, worker: Any) -> None:  # noqa: ARG002
        if self.engine is not None:
            self.engine.shutdown(self._shutdown_timeout())
            LOG.info("engine shut down")

    def close(self) -> None:
        close_listeners(self.listeners)
        if self.metrics_sock is not None:
            self.metrics_sock.close()
