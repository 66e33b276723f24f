"""Volume resources: list, create, inspect, remove, prune."""

from __future__ import annotations

from typing import Any

import falcon

from engine.api.base import JSON, JobResource, parse_filters, query_bool, read_json


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


def add_routes(app: falcon.App, engine: Any) -> None:
    app.add_route("/volumes", Volumes(engine))
    app.add_route("/volumes/create", VolumeCreate(engine))
    app.add_route("/volumes/prune", VolumesPrune(engine))
    app.add_route("/volumes/{name}", Volume(engine))
