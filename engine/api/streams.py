"""A container's streams: logs, attach and stats.

``logs`` and ``stats`` hand the job's output to Falcon as it comes;
``attach`` takes the connection over (:func:`engine.api.app.request_hijack`)
once the request has been checked, so errors still come back as plain HTTP
answers.
"""

from __future__ import annotations

import json
from typing import Any

import falcon

from engine.api.app import request_hijack
from engine.api.base import JSON, JobResource, job_env, query_bool, stream_content_type, stream_job
from engine.errors import EngineError


class Logs(JobResource):
    def on_get(self, req: Any, resp: Any, id: str) -> None:
        env = {
            "Follow": query_bool(req, "follow"),
            "Stdout": query_bool(req, "stdout"),
            "Stderr": query_bool(req, "stderr"),
            "Since": req.get_param("since") or "",
            "Until": req.get_param("until") or "",
            "Timestamps": query_bool(req, "timestamps"),
            "Tail": req.get_param("tail") or "all",
        }
        tty = json.loads(self.job("container_tty", id))["Tty"]  # a 404 before the stream starts
        resp.content_type = stream_content_type(tty)
        resp.stream = stream_job(self.engine, "logs", id, env=env, client=req.env.get("gunicorn.socket"))


class Stats(JobResource):
    def on_get(self, req: Any, resp: Any, id: str) -> None:
        resp.content_type = JSON
        resp.stream = stream_job(
            self.engine,
            "stats",
            id,
            env={"Stream": query_bool(req, "stream", True), "OneShot": query_bool(req, "one-shot")},
            client=req.env.get("gunicorn.socket"),
        )


class Attach(JobResource):
    def on_post(self, req: Any, resp: Any, id: str) -> None:
        tty = json.loads(self.job("container_tty", id))["Tty"]  # a 404 before the connection is taken over
        env = {
            "Stdin": query_bool(req, "stdin"),
            "Stdout": query_bool(req, "stdout"),
            "Stderr": query_bool(req, "stderr"),
            "Stream": query_bool(req, "stream"),
            "Logs": query_bool(req, "logs"),
            "DetachKeys": req.get_param("detachKeys") or "",
        }
        engine = self.engine

        def run(sock: Any) -> None:
            job = engine.job("attach", id, env=job_env(env))
            job.stdin.add(sock)
            try:
                job.run()
            except EngineError:
                pass

        # The job answers 101 once the start will find it (docker run starts at the 101).
        request_hijack(req, run, stream_content_type(tty), announces=True)
        resp.status = falcon.HTTP_200


def add_routes(app: falcon.App, engine: Any) -> None:
    app.add_route("/containers/{id}/logs", Logs(engine))
    app.add_route("/containers/{id}/stats", Stats(engine))
    app.add_route("/containers/{id}/attach", Attach(engine))
