"""System resources: ``/_ping``, ``/version``, ``/info``, ``/events``,
``/system/df``, swarm stubs' 503s and, with ``-D``, ``/debug/*`` introspection."""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import traceback
from typing import Any

import falcon

from engine.api.base import JSON, JobResource, parse_filters, run_job, stream_job
from engine.errors import Unavailable

PING_HEADERS = {
    "Builder-Version": "1",
    "Swarm": "inactive",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
}


class Ping:
    """``GET|HEAD /_ping``: ``OK``, with the headers the CLI reads."""

    def on_get(self, req: Any, resp: Any) -> None:  # noqa: ARG002
        resp.set_headers(PING_HEADERS)
        resp.content_type = "text/plain; charset=utf-8"
        resp.data = b"OK"

    def on_head(self, req: Any, resp: Any) -> None:  # noqa: ARG002
        resp.set_headers(PING_HEADERS)
        resp.content_type = "text/plain; charset=utf-8"
        resp.content_length = 0


class JobDocument:
    """A resource whose body is what one job writes (``version``, ``info``)."""

    def __init__(self, engine: Any, job: str) -> None:
        self.engine = engine
        self.job = job

    def on_get(self, req: Any, resp: Any) -> None:  # noqa: ARG002
        resp.content_type = JSON
        resp.data = run_job(self.engine, self.job)


class NotInSwarm:
    """Swarm endpoints answer as dockerd does outside a swarm (503)."""

    def _refuse(self, req: Any, resp: Any, **_: Any) -> None:  # noqa: ARG002
        raise Unavailable("This node is not part of a swarm")

    on_get = on_post = on_delete = on_put = _refuse


class DebugVars:
    """``/debug/vars``: process facts, like Go's expvar."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def on_get(self, req: Any, resp: Any) -> None:  # noqa: ARG002
        status = {}
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "VmSize", "Threads"):
                    status[key] = value.strip()
        doc = {
            "cmdline": sys.argv,
            "pid": os.getpid(),
            "python": sys.version,
            "threads": threading.active_count(),
            "running_jobs": self.engine.running_jobs,
            "gc": {"counts": gc.get_count(), "stats": gc.get_stats(), "objects": len(gc.get_objects())},
            "memory": status,
            "fds": len(os.listdir("/proc/self/fd")),
        }
        resp.content_type = JSON
        resp.data = json.dumps(doc).encode()


class DebugStacks:
    """``/debug/stacks``: every thread's stack (Go's goroutine dump)."""

    def on_get(self, req: Any, resp: Any) -> None:  # noqa: ARG002
        names = {t.ident: t.name for t in threading.enumerate()}
        out = []
        for ident, frame in sys._current_frames().items():
            out.append(f"thread {names.get(ident, '?')} ({ident}):\n")
            out.extend(traceback.format_stack(frame))
            out.append("\n")
        resp.content_type = "text/plain; charset=utf-8"
        resp.data = "".join(out).encode()


class DebugGC:
    """``POST /debug/gc``: run a full collection and say what it freed."""

    def on_post(self, req: Any, resp: Any) -> None:  # noqa: ARG002
        freed = gc.collect()
        resp.content_type = JSON
        resp.data = json.dumps({"collected": freed, "objects": len(gc.get_objects())}).encode()


class DebugMemory:
    """``/debug/memory``: the most numerous object types."""

    def on_get(self, req: Any, resp: Any) -> None:  # noqa: ARG002
        counts: dict[str, int] = {}
        for obj in gc.get_objects():
            name = type(obj).__name__
            counts[name] = counts.get(name, 0) + 1
        top = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)[:50]
        resp.content_type = JSON
        resp.data = json.dumps({"types": top}).encode()


class Events(JobResource):
    def on_get(self, req: Any, resp: Any) -> None:
        env = {
            "Since": req.get_param("since") or "",
            "Until": req.get_param("until") or "",
            "Filters": parse_filters(req.get_param("filters")),
        }
        resp.content_type = JSON
        resp.stream = stream_job(self.engine, "events", env=env, client=req.env.get("gunicorn.socket"))


class SystemDf(JobResource):
    def on_get(self, req: Any, resp: Any) -> None:
        resp.content_type = JSON
        types = req.get_param_as_list("type") or []
        resp.data = self.job("system_df", Types=types)


def add_routes(app: falcon.App, engine: Any, debug: bool = False) -> None:
    app.add_route("/_ping", Ping())
    app.add_route("/version", JobDocument(engine, "version"))
    app.add_route("/info", JobDocument(engine, "info"))
    app.add_route("/events", Events(engine))
    app.add_route("/system/df", SystemDf(engine))
    swarm = NotInSwarm()
    for path in (
        "/swarm",
        "/swarm/init",
        "/swarm/join",
        "/swarm/leave",
        "/swarm/update",
        "/swarm/unlockkey",
        "/swarm/unlock",
        "/nodes",
        "/services",
        "/services/create",
        "/tasks",
        "/secrets",
        "/secrets/create",
        "/configs",
        "/configs/create",
    ):
        app.add_route(path, swarm)
    for path in (
        "/nodes/{id}",
        "/services/{id}",
        "/services/{id}/update",
        "/services/{id}/logs",
        "/tasks/{id}",
        "/tasks/{id}/logs",
        "/secrets/{id}",
        "/secrets/{id}/update",
        "/configs/{id}",
        "/configs/{id}/update",
    ):
        app.add_route(path, swarm)
    if debug:
        app.add_route("/debug/vars", DebugVars(engine))
        app.add_route("/debug/stacks", DebugStacks())
        app.add_route("/debug/gc", DebugGC())
        app.add_route("/debug/memory", DebugMemory())
