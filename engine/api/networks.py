"""Network resources: the built-in networks (list, inspect) and the refusals of
what this engine does not build (user-defined networks).
"""

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


def add_routes(app: falcon.App, engine: Any) -> None:
    app.add_route("/networks", Networks(engine))
    app.add_route("/networks/create", NetworkCreate(engine))
    app.add_route("/networks/prune", NetworksPrune(engine))
    app.add_route("/networks/{id}", Network(engine))
    connect = NetworkConnect(engine)
    app.add_route("/networks/{id}/connect", connect)
    app.add_route("/networks/{id}/disconnect", connect, suffix=None)
