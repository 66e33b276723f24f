"""The daemon's job handlers, registered through the ``engine_register_jobs`` hook
(seed ch. 3 §5.5.2, ``daemon.Install``)."""

from __future__ import annotations

from typing import Any

from engine import apiversion
from engine.daemon.info import build_info
from engine.daemon.reload import job_reload
from engine.hookspecs import hookimpl


def job_info(job: Any) -> None:
    """Write the Info document (``GET /info``) as JSON."""
    job.write_json(apiversion.info(apiversion.of_job(job), build_info(job.engine.daemon)))


@hookimpl
def engine_register_jobs(engine: Any, daemon: Any) -> None:
    if daemon is None:
        return
    engine.register("info", job_info)
    engine.register("reload", job_reload)
