"""Exec resources: create, start (which takes the connection over unless
detached), inspect and resize.
"""

from __future__ import annotations

from typing import Any

import falcon

from engine.api.app import request_hijack
from engine.api.base import JSON, JobResource, job_env, query_int, read_json, run_job, stream_content_type
from engine.drivers.exec import ExecStartError
from engine.errors import EngineError
from engine.utils.gojson import fold_keys


class ExecCreate(JobResource):
    def on_post(self, req: Any, resp: Any, id: str) -> None:
        resp.status = falcon.HTTP_201
        resp.content_type = JSON
        resp.data = self.job("exec_create", id, Body=read_json(req))


class ExecStart(JobResource):
    def on_post(self, req: Any, resp: Any, id: str) -> None:
        import json

        body = fold_keys(read_json(req, required=False, default={}) or {}, ("Detach", "Tty"))
        info = json.loads(self.job("exec_inspect", id))
        if info["Running"] or info["ExitCode"] is not None:
            raise falcon.HTTPConflict(description=f"Error: Exec command {id} has already run")
        engine = self.engine
        if body.get("Detach"):
            run_job(engine, "exec_start", id, env={"Body": body})
            resp.status = falcon.HTTP_200
            resp.content_type = JSON
            resp.data = b""
            return
        # moby frames the output by the start request's Tty, whatever the exec was created with.
        tty = bool(body.get("Tty"))
        env = job_env({"Body": body})

        def run(sock: Any) -> None:
            job = engine.job("exec_start", id, env=env)
            job.stdin.add(sock)
            try:
                job.run()
            except EngineError as exc:
                from engine.utils.sockets import close_client, send_all
                from engine.utils.stdcopy import frame

                # The stream is ours already: report in-band as moby does
                # (on stdout); the exit code (126) is in the exec's inspect.
                if isinstance(exc, ExecStartError):
                    text = f"OCI runtime exec failed: exec failed: unable to start container process: {exc}: unknown"
                else:
                    text = str(exc)
                send_all(sock, frame(1, text.encode() + b"\r\n", tty))
                close_client(sock)

        request_hijack(req, run, stream_content_type(tty))
        resp.status = falcon.HTTP_200


class ExecInspect(JobResource):
    def on_get(self, req: Any, resp: Any, id: str) -> None:
        resp.content_type = JSON
        resp.data = self.job("exec_inspect", id)


class ExecResize(JobResource):
    def on_post(self, req: Any, resp: Any, id: str) -> None:
        self.job("exec_resize", id, Height=query_int(req, "h"), Width=query_int(req, "w"))
        resp.status = falcon.HTTP_200


def add_routes(app: falcon.App, engine: Any) -> None:
    app.add_route("/containers/{id}/exec", ExecCreate(engine))
    app.add_route("/exec/{id}/start", ExecStart(engine))
    app.add_route("/exec/{id}/resize", ExecResize(engine))
    app.add_route("/exec/{id}/json", ExecInspect(engine))
