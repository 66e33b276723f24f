"""Container, exec, volume, event and system resources.

Each responder turns the request into a job; the streaming ones hand the
job's output to Falcon as it comes, and ``attach``/``exec start`` take the
connection over (:func:`engine.api.app.request_hijack`) once the request
has been checked, so errors still come back as plain HTTP answers.
"""

from __future__ import annotations

from typing import Any

import falcon

from engine.api.app import request_hijack
from engine.api.base import (
    JSON,
    MULTIPLEXED,
    RAW_STREAM,
    JobResource,
    body_stream,
    parse_filters,
    query_bool,
    query_int,
    read_json,
    run_job,
    stream_job,
)
from engine.errors import EngineError, InvalidParameter


class Create(JobResource):
    def on_post(self, req: Any, resp: Any) -> None:
        body = read_json(req)
        if not isinstance(body, dict):
            raise InvalidParameter("invalid container config: want a JSON object")
        resp.status = falcon.HTTP_201
        resp.content_type = JSON
        resp.data = self.job("create", Body=body, Name=req.get_param("name") or "")


class ListContainers(JobResource):
    def on_get(self, req: Any, resp: Any) -> None:
        resp.content_type = JSON
        resp.data = self.job(
            "containers",
            All=query_bool(req, "all"),
            Limit=query_int(req, "limit", -1),
            Size=query_bool(req, "size"),
            Filters=parse_filters(req.get_param("filters")),
        )


class Prune(JobResource):
    def on_post(self, req: Any, resp: Any) -> None:
        resp.content_type = JSON
        resp.data = self.job("containers_prune", Filters=parse_filters(req.get_param("filters")))


class Container(JobResource):
    """``/containers/{id}`` and ``/containers/{id}/json``."""

    def on_get(self, req: Any, resp: Any, id: str) -> None:
        resp.content_type = JSON
        resp.data = self.job("container_inspect", id, Size=query_bool(req, "size"))

    def on_delete(self, req: Any, resp: Any, id: str) -> None:
        self.job(
            "rm",
            id,
            Force=query_bool(req, "force"),
            RemoveVolume=query_bool(req, "v"),
            RemoveLink=query_bool(req, "link"),
        )
        resp.status = falcon.HTTP_204


class Action(JobResource):
    """``POST /containers/{id}/<action>`` without a body to speak of."""

    def __init__(self, engine: Any, action: str) -> None:
        super().__init__(engine)
        self.action = action

    def on_post(self, req: Any, resp: Any, id: str) -> None:
        a = self.action
        if a == "start":
            self.job("start", id)
        elif a in ("stop", "restart"):
            self.job(a, id, Timeout=req.get_param("t") or "", Signal=req.get_param("signal") or "")
        elif a == "kill":
            self.job("kill", id, Signal=req.get_param("signal") or "")
        elif a == "rename":
            name = req.get_param("name")
            if not name:
                raise InvalidParameter("name is required")
            self.job("rename", id, NewName=name)
        elif a in ("pause", "unpause"):
            self.job(a, id)
        elif a == "resize":
            self.job("resize", id, Height=query_int(req, "h"), Width=query_int(req, "w"))
            resp.status = falcon.HTTP_200
            return
        resp.status = falcon.HTTP_204


class Update(JobResource):
    def on_post(self, req: Any, resp: Any, id: str) -> None:
        resp.content_type = JSON
        resp.data = self.job("container_update", id, Body=read_json(req))


class Top(JobResource):
    def on_get(self, req: Any, resp: Any, id: str) -> None:
        resp.content_type = JSON
        resp.data = self.job("top", id, PsArgs=req.get_param("ps_args") or "")


class Changes(JobResource):
    def on_get(self, req: Any, resp: Any, id: str) -> None:
        resp.content_type = JSON
        resp.data = self.job("container_changes", id)


class Export(JobResource):
    def on_get(self, req: Any, resp: Any, id: str) -> None:
        resp.content_type = "application/x-tar"
        resp.stream = stream_job(self.engine, "export", id)


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
        resp.content_type = RAW_STREAM
        resp.stream = stream_job(self.engine, "logs", id, env=env, client=req.env.get("gunicorn.socket"))


class Wait(JobResource):
    def on_post(self, req: Any, resp: Any, id: str) -> None:
        resp.content_type = JSON
        resp.stream = stream_job(
            self.engine,
            "wait",
            id,
            env={"Condition": req.get_param("condition") or ""},
            client=req.env.get("gunicorn.socket"),
        )


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
        doc = self.job("container_inspect", id)  # 404 before the connection is taken over
        import json

        tty = bool(json.loads(doc)["Config"].get("Tty"))
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
            job = engine.job("attach", id, env=env)
            job.stdin.add(sock)
            try:
                job.run()
            except EngineError:
                pass

        request_hijack(req, run, RAW_STREAM if tty else MULTIPLEXED)
        resp.status = falcon.HTTP_200


class Archive(JobResource):
    def _path(self, req: Any) -> str:
        path = req.get_param("path")
        if not path:
            raise InvalidParameter("path is required")
        return path

    def on_head(self, req: Any, resp: Any, id: str) -> None:
        import json

        from engine.daemon.archive_ops import stat_header

        doc = json.loads(self.job("archive_stat", id, Path=self._path(req)))
        resp.set_header("X-Docker-Container-Path-Stat", stat_header(doc))
        resp.status = falcon.HTTP_200

    def on_get(self, req: Any, resp: Any, id: str) -> None:
        import json

        from engine.daemon.archive_ops import stat_header

        path = self._path(req)
        doc = json.loads(self.job("archive_stat", id, Path=path))
        resp.set_header("X-Docker-Container-Path-Stat", stat_header(doc))
        resp.content_type = "application/x-tar"
        resp.stream = stream_job(self.engine, "archive_get", id, env={"Path": path})

    def on_put(self, req: Any, resp: Any, id: str) -> None:
        run_job(
            self.engine,
            "archive_put",
            id,
            env={
                "Path": self._path(req),
                "NoOverwriteDirNonDir": query_bool(req, "noOverwriteDirNonDir"),
                "CopyUIDGID": query_bool(req, "copyUIDGID"),
            },
            stdin=body_stream(req),
        )
        resp.status = falcon.HTTP_200


class ExecCreate(JobResource):
    def on_post(self, req: Any, resp: Any, id: str) -> None:
        resp.status = falcon.HTTP_201
        resp.content_type = JSON
        resp.data = self.job("exec_create", id, Body=read_json(req))


class ExecStart(JobResource):
    def on_post(self, req: Any, resp: Any, id: str) -> None:
        import json

        body = read_json(req, required=False, default={}) or {}
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
        tty = bool(body.get("Tty")) or bool(info["ProcessConfig"]["tty"])

        def run(sock: Any) -> None:
            job = engine.job("exec_start", id, env={"Body": body})
            job.stdin.add(sock)
            try:
                job.run()
            except EngineError as exc:
                from engine.daemon.attach import close_client, send_all
                from engine.daemon.logs import frame

                # The stream is ours already: report in-band as moby does
                # (on stdout); the exit code (126/127) is in the exec's inspect.
                message = f"OCI runtime exec failed: {exc}: unknown\r\n".encode()
                send_all(sock, frame(1, message, tty))
                close_client(sock)

        request_hijack(req, run, RAW_STREAM if tty else MULTIPLEXED)
        resp.status = falcon.HTTP_200


class ExecInspect(JobResource):
    def on_get(self, req: Any, resp: Any, id: str) -> None:
        resp.content_type = JSON
        resp.data = self.job("exec_inspect", id)


class ExecResize(JobResource):
    def on_post(self, req: Any, resp: Any, id: str) -> None:
        self.job("exec_resize", id, Height=query_int(req, "h"), Width=query_int(req, "w"))
        resp.status = falcon.HTTP_200


class Volumes(JobResource):
    def on_get(self, req: Any, resp: Any) -> None:
        resp.content_type = JSON
        resp.data = self.job("volumes", Filters=parse_filters(req.get_param("filters")))


class VolumeCreate(JobResource):
    def on_post(self, req: Any, resp: Any) -> None:
        resp.status = falcon.HTTP_201
        resp.content_type = JSON
        resp.data = self.job("volume_create", Body=read_json(req, required=False, default={}) or {})


class Volume(JobResource):
    def on_get(self, req: Any, resp: Any, name: str) -> None:
        resp.content_type = JSON
        resp.data = self.job("volume_inspect", name)

    def on_delete(self, req: Any, resp: Any, name: str) -> None:
        self.job("volume_rm", name, Force=query_bool(req, "force"))
        resp.status = falcon.HTTP_204


class VolumesPrune(JobResource):
    def on_post(self, req: Any, resp: Any) -> None:
        resp.content_type = JSON
        resp.data = self.job("volumes_prune", Filters=parse_filters(req.get_param("filters")))


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
        resp.data = self.job("system_df")


def add_routes(app: falcon.App, engine: Any) -> None:
    app.add_route("/containers/create", Create(engine))
    app.add_route("/containers/json", ListContainers(engine))
    app.add_route("/containers/prune", Prune(engine))
    container = Container(engine)
    app.add_route("/containers/{id}", container)
    app.add_route("/containers/{id}/json", container, suffix=None)
    for action in ("start", "stop", "restart", "kill", "rename", "pause", "unpause", "resize"):
        app.add_route(f"/containers/{{id}}/{action}", Action(engine, action))
    app.add_route("/containers/{id}/update", Update(engine))
    app.add_route("/containers/{id}/top", Top(engine))
    app.add_route("/containers/{id}/changes", Changes(engine))
    app.add_route("/containers/{id}/export", Export(engine))
    app.add_route("/containers/{id}/logs", Logs(engine))
    app.add_route("/containers/{id}/wait", Wait(engine))
    app.add_route("/containers/{id}/stats", Stats(engine))
    app.add_route("/containers/{id}/attach", Attach(engine))
    app.add_route("/containers/{id}/archive", Archive(engine))
    app.add_route("/containers/{id}/exec", ExecCreate(engine))
    app.add_route("/exec/{id}/start", ExecStart(engine))
    app.add_route("/exec/{id}/resize", ExecResize(engine))
    app.add_route("/exec/{id}/json", ExecInspect(engine))
    app.add_route("/volumes", Volumes(engine))
    app.add_route("/volumes/create", VolumeCreate(engine))
    app.add_route("/volumes/prune", VolumesPrune(engine))
    app.add_route("/volumes/{name}", Volume(engine))
    app.add_route("/events", Events(engine))
    app.add_route("/system/df", SystemDf(engine))
    add_network_routes(app, engine)


class Networks(JobResource):
    def on_get(self, req: Any, resp: Any) -> None:
        resp.content_type = JSON
        resp.data = self.job("networks", Filters=parse_filters(req.get_param("filters")))


class NetworkCreate(JobResource):
    def on_post(self, req: Any, resp: Any) -> None:
        read_json(req, required=False)
        self.job("network_create")


class NetworksPrune(JobResource):
    def on_post(self, req: Any, resp: Any) -> None:
        resp.content_type = JSON
        resp.data = self.job("networks_prune")


class Network(JobResource):
    def on_get(self, req: Any, resp: Any, id: str) -> None:
        resp.content_type = JSON
        resp.data = self.job("network_inspect", id)

    def on_delete(self, req: Any, resp: Any, id: str) -> None:
        self.job("network_rm", id)


class NetworkConnect(JobResource):
    def on_post(self, req: Any, resp: Any, id: str) -> None:
        read_json(req, required=False)
        self.job("network_connect", id)


def add_network_routes(app: falcon.App, engine: Any) -> None:
    app.add_route("/networks", Networks(engine))
    app.add_route("/networks/create", NetworkCreate(engine))
    app.add_route("/networks/prune", NetworksPrune(engine))
    app.add_route("/networks/{id}", Network(engine))
    connect = NetworkConnect(engine)
    app.add_route("/networks/{id}/connect", connect)
    app.add_route("/networks/{id}/disconnect", connect, suffix=None)
