"""Network resources: list, inspect, create, remove, prune, and connect and disconnect containers
(:mod:`engine.daemon.networks` has what each means)."""

from __future__ import annotations

from typing import Any

import falcon

from engine.api.base import JSON, JobResource, parse_filters, read_json


class Networks(JobResource):
    def on_get(self, req: Any, resp: Any) -> None:
        resp.content_type = JSON
        resp.data = self.job("networks", Filters=parse_filters(req.get_param("filters")))


class NetworkCreate(JobResource):
    def on_post(self, req: Any, resp: Any) -> None:
        body = read_json(req, required=False) or {}
        resp.content_type = JSON
        resp.status = falcon.HTTP_201
        resp.data = self.job("network_create", Body=body)


class NetworksPrune(JobResource):
    def on_post(self, req: Any, resp: Any) -> None:
        resp.content_type = JSON
        resp.data = self.job("networks_prune", Filters=parse_filters(req.get_param("filters")))


class Network(JobResource):
    def on_get(self, req: Any, resp: Any, id: str) -> None:
        resp.content_type = JSON
        # ``verbose`` lists a swarm network's services: nothing to add here.
        resp.data = self.job("network_inspect", id, Scope=req.get_param("scope") or "")

    def on_delete(self, req: Any, resp: Any, id: str) -> None:
        self.job("network_rm", id)
        resp.status = falcon.HTTP_204


class NetworkConnect(JobResource):
    def on_post(self, req: Any, resp: Any, id: str) -> None:
        self.job("network_connect", id, Body=read_json(req, required=False) or {})


class NetworkDisconnect(JobResource):
    def on_post(self, req: Any, resp: Any, id: str) -> None:
        self.job("network_disconnect", id, Body=read_json(req, required=False) or {})


def add_routes(app: falcon.App, engine: Any) -> None:
    app.add_route("/networks", Networks(engine))
    app.add_route("/networks/create", NetworkCreate(engine))
    app.add_route("/networks/prune", NetworksPrune(engine))
    app.add_route("/networks/{id}", Network(engine))
    app.add_route("/networks/{id}/connect", NetworkConnect(engine))
    app.add_route("/networks/{id}/disconnect", NetworkDisconnect(engine))
