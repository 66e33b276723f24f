"""Container resources: create, list, inspect, remove, prune, the life-cycle
actions (start, stop, restart, kill, pause, unpause, rename, resize), update,
top and wait.

Each responder turns the request into a job (``/containers/{id}/wait``
streams the job's answer as it comes). A container's streams are in
:mod:`engine.api.streams`, its files in :mod:`engine.api.filesystem`, its
execs in :mod:`engine.api.execs`.
"""

from __future__ import annotations

from typing import Any

import falcon

from engine.api.base import JSON, JobResource, parse_filters, query_bool, query_int, read_json, stream_job
from engine.errors import InvalidParameter, NotFound


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


class Inspect(JobResource):
    """``GET /containers/{id}/json``; any other method there is dockerd's 404 ("page not found"),
    not a removal."""

    def on_get(self, req: Any, resp: Any, id: str) -> None:
        resp.content_type = JSON
        resp.data = self.job("container_inspect", id, Size=query_bool(req, "size"))

    def _not_found(self, req: Any, resp: Any, id: str) -> None:  # noqa: ARG002
        raise falcon.HTTPNotFound()

    on_delete = on_post = on_put = on_patch = on_head = _not_found


class Container(Inspect):
    """``/containers/{id}``: inspect (GET, as ``/json``) and remove (DELETE)."""

    def on_delete(self, req: Any, resp: Any, id: str) -> None:
        self.job(
            "rm",
            id,
            Force=query_bool(req, "force"),
            RemoveVolume=query_bool(req, "v"),
            RemoveLink=query_bool(req, "link"),
        )
        resp.status = falcon.HTTP_204


class LinkPath(JobResource):
    """``/containers/{parent}/{alias}``: a link's path names the linked container, and moby's
    ``DELETE /containers/{name:.*}`` takes one (``docker rm --link``); nothing else is routed here."""

    def on_delete(self, req: Any, resp: Any, id: str, alias: str) -> None:
        Container.on_delete(self, req, resp, f"{id}/{alias}")  # type: ignore[arg-type]

    def _no_route(self, req: Any, resp: Any, id: str, alias: str) -> None:  # noqa: ARG002
        raise NotFound("page not found")

    on_get = on_post = on_put = on_head = _no_route


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


def add_routes(app: falcon.App, engine: Any) -> None:
    app.add_route("/containers/create", Create(engine))
    app.add_route("/containers/json", ListContainers(engine))
    app.add_route("/containers/prune", Prune(engine))
    app.add_route("/containers/{id}", Container(engine))
    app.add_route("/containers/{id}/json", Inspect(engine))
    for action in ("start", "stop", "restart", "kill", "rename", "pause", "unpause", "resize"):
        app.add_route(f"/containers/{{id}}/{action}", Action(engine, action))
    app.add_route("/containers/{id}/update", Update(engine))
    app.add_route("/containers/{id}/{alias}", LinkPath(engine))
    app.add_route("/containers/{id}/top", Top(engine))
    app.add_route("/containers/{id}/wait", Wait(engine))
