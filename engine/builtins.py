"""The engine's built-in jobs that need no daemon: ``version`` and
``acceptconnections`` (seed ch. 3 §5.4), registered through the same pluggy
hook as any third-party plugin's jobs."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from typing import Any

import engine
from engine.hookspecs import hookimpl
from engine.utils import host


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the source tree the engine runs from, if it is a git checkout."""
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isdir(os.path.join(top, ".git")):
        return ""
    try:
        out = subprocess.run(
            ["git", "-C", top, "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def version_info() -> dict[str, Any]:
    """The ``GET /version`` answer (API 1.41 shape)."""
    py = "python" + platform.python_version()
    details = {
        "ApiVersion": engine.API_VERSION,
        "Arch": host.goarch(),
        "BuildTime": "",
        "Experimental": "false",
        "GitCommit": git_commit(),
        "GoVersion": py,
        "KernelVersion": host.kernel_release(),
        "MinAPIVersion": engine.MIN_API_VERSION,
        "Os": "linux",
    }
    return {
        "Platform": {"Name": "engine"},
        "Components": [{"Name": "Engine", "Version": engine.__version__, "Details": details}],
        "Version": engine.__version__,
        "ApiVersion": engine.API_VERSION,
        "MinAPIVersion": engine.MIN_API_VERSION,
        "GitCommit": git_commit(),
        "GoVersion": py,
        "Os": "linux",
        "Arch": host.goarch(),
        "KernelVersion": host.kernel_release(),
        "BuildTime": "",
    }


def job_version(job: Any) -> None:
    """Write the version document as JSON."""
    job.write_json(version_info())


def job_acceptconnections(job: Any) -> None:
    """Tell whoever supervises us that the daemon accepts requests.

    ``job.engine.on_ready`` is set by the server (it signals the gunicorn
    master, which sends ``READY=1`` to systemd as the main PID).
    """
    notify = getattr(job.engine, "on_ready", None)
    if notify is not None:
        notify()
    daemon = job.engine.daemon
    if daemon is not None:
        daemon.ready.set()
        if daemon.plugins is not None:
            daemon.plugins.hook.engine_daemon_started(daemon=daemon)


@hookimpl
def engine_register_jobs(engine: Any, daemon: Any) -> None:  # noqa: ARG001
    engine.register("version", job_version)
    engine.register("acceptconnections", job_acceptconnections)


__all__ = ["engine_register_jobs", "git_commit", "version_info"]
