"""``engine -d``: build the configuration, check the host, create the pidfile,
bind the sockets and run the ``serveapi`` job (seed ch. 3 §5.7), which runs
gunicorn until shutdown."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

import engine as engine_pkg
from engine.daemon.config import Config, ConfigError, build_config, check_host, parse_host, validate
from engine.errors import EngineError
from engine.hookspecs import hookimpl
from engine.server.pidfile import create_pidfile, remove_pidfile
from engine.utils.logs import setup_logging

LOG = logging.getLogger("engine.server")

INSECURE_TCP_WARNING = (
    "Binding to IP address without --tlsverify is insecure and gives root access on this machine "
    "to everyone who has access to your network."
)


def tls_settings(cfg: Config) -> tuple[str, str, str | None] | None:
    """(cert, key, CA or None) when TLS is on; missing files are a clear error."""
    if not (cfg.tls or cfg.tlsverify):
        return None
    files = [("--tlscert", cfg.tlscert), ("--tlskey", cfg.tlskey)]
    if cfg.tlsverify:
        files.append(("--tlscacert", cfg.tlscacert))
    for flag, path in files:
        if not os.path.isfile(path):
            raise ConfigError(f"TLS: {flag} {path}: no such file")
    return cfg.tlscert, cfg.tlskey, cfg.tlscacert if cfg.tlsverify else None


def job_serveapi(job: Any) -> None:
    """Serve the API on every address in ``job.args`` until shutdown.

    Env: ``Config`` (the daemon configuration as JSON), ``GroupExplicit``.
    """
    from engine.server.app import EngineApplication
    from engine.server.listeners import close_listeners, open_listeners, open_metrics_listener

    if not job.args:
        raise ConfigError("usage: serveapi PROTO://ADDR [PROTO://ADDR ...]")
    cfg: Config = job.engine.config
    tls = tls_settings(cfg)
    addresses = [parse_host(h, tls=tls is not None) for h in job.args]
    for addr in addresses:
        if addr.proto == "tcp":
            if not cfg.tlsverify:
                LOG.warning("%s", INSECURE_TCP_WARNING)
            if tls is None:
                LOG.warning("API listening on tcp://%s without TLS", addr.address)
    listeners = open_listeners(addresses, cfg.group, job.env.get_bool("GroupExplicit"))
    metrics_sock = None
    try:
        if cfg.metrics_addr:
            # Bound here with the API's sockets, served by the worker (engine.server.metrics).
            metrics_sock = open_metrics_listener(cfg.metrics_addr)
        app = EngineApplication(cfg, listeners, tls, metrics_sock)
    except BaseException:
        close_listeners(listeners)
        raise
    try:
        app.run()
    finally:
        app.close()


@hookimpl
def engine_register_jobs(engine: Any, daemon: Any) -> None:
    if daemon is None:
        engine.register("serveapi", job_serveapi)


class _Terminated(BaseException):
    """SIGTERM or SIGINT before gunicorn took over the signals."""


def _terminate(signum: int, _frame: Any) -> None:
    raise _Terminated(signum)


def _ignore(signum: int, _frame: Any) -> None:
    """A handler that does nothing (unlike SIG_IGN, it is not inherited across exec)."""


#: Layer data moves in chunks of about 1 MiB (reads of a tar, of a spool, of a member's data).
#: With glibc's defaults each chunk above 128 KiB is a fresh mmap until the threshold adapts,
#: and a free at the heap's top is given back at once: every chunk faults its pages in again.
#: That kernel time was half of a 100 MB commit (0.35-0.8 s, now about 0.2 s). The heap keeps
#: at most MALLOC_TRIM_THRESHOLD free at its top per arena.
MALLOC_MMAP_THRESHOLD = 4 << 20
MALLOC_TRIM_THRESHOLD = 16 << 20


def tune_malloc() -> None:
    """Set the thresholds above in this process (the worker and the fork server inherit them),
    unless the environment sets glibc's own (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``)."""
    from engine.sys import libc

    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        libc.mallopt(libc.M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        libc.mallopt(libc.M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)


def run_daemon(args: argparse.Namespace) -> int:
    """The daemon's main: returns the process exit status."""
    # Until gunicorn installs its own handlers, a stop signal must still
    # unwind through the clean-up below (socket, pidfile).
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    # A reload asked for before the daemon runs has nothing to reload; by
    # default SIGHUP would end the process.
    signal.signal(signal.SIGHUP, _ignore)
    try:
        cfg = build_config(args)
        setup_logging(cfg.debug)
        validate(cfg)
        check_host()
        tune_malloc()
    except EngineError as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return 1
    except _Terminated:
        return 0
    from engine.core import Engine
    from engine.plugins import make_plugin_manager

    status = 0
    try:
        try:
            create_pidfile(cfg.pidfile)
        except OSError as exc:
            raise ConfigError(f"cannot create the pid file {cfg.pidfile}: {exc.strerror}") from None
        # The master only serves the API's sockets: of the built-in plugins it
        # needs just this module's serveapi job. The worker loads them all.
        plugins = make_plugin_manager(builtins=("engine.server.main",), entrypoints=False)
        eng = Engine()
        eng.config = cfg
        plugins.hook.engine_register_jobs(engine=eng, daemon=None)
        LOG.info("engine daemon %s starting (root %s)", engine_pkg.__version__, cfg.root)
        job = eng.job("serveapi", *cfg.hosts)
        job.env.set_bool("GroupExplicit", getattr(args, "group", None) is not None)
        job.run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        if code != 0:
            LOG.error("engine daemon stopped: start-up failed (see above)")
            status = 1
    except EngineError as exc:
        LOG.error("%s", exc)
        status = 1
    except _Terminated:
        LOG.info("engine daemon stopped during start-up")
    finally:
        remove_pidfile(cfg.pidfile)
    return status
