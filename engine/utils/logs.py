"""Logging set-up shared by the daemon's processes (master, worker, shim)."""

from __future__ import annotations

import logging
import sys
import time

FORMAT = "%(asctime)s %(levelname)-5s [%(name)s] %(message)s"


class UTCFormatter(logging.Formatter):
    """RFC 3339 UTC timestamps with milliseconds, like dockerd's logs."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: ARG002, N802
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{t}.{int(record.msecs):03d}Z"


def setup_logging(debug: bool = False, stream=None) -> None:
    """Send the engine's logs to stderr; ``debug`` shows job start/end lines."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_engine", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(UTCFormatter(FORMAT))
    handler._engine = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    set_debug(debug)


def set_debug(debug: bool) -> None:
    """Turn debug logging on or off (start-up, and a reload that changes ``debug``)."""
    logging.getLogger().setLevel(logging.DEBUG if debug else logging.INFO)
    # Libraries that are chatty at DEBUG.
    for name in ("stevedore", "urllib3", "pyroute2", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.INFO if debug else logging.WARNING)
    # gunicorn's own logger (engine.server.app.EngineLogger) has a level of its own.
    logging.getLogger("gunicorn.error").setLevel(logging.DEBUG if debug else logging.INFO)
