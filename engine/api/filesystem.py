"""A container's files: ``docker cp`` (``/containers/{id}/archive``), export and
changes (``docker diff``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import falcon

from engine.api.base import JSON, JobResource, body_stream, query_bool, run_job, stream_job
from engine.errors import InvalidParameter


class Changes(JobResource):
    def on_get(self, req: Any, resp: Any, id: str) -> None:
        resp.content_type = JSON
        resp.data = self.job("container_changes", id)


class Export(JobResource):
    def on_get(self, req: Any, resp: Any, id: str) -> None:
        resp.content_type = "application/x-tar"
        resp.stream = stream_job(self.engine, "export", id)


def stat_header(doc: dict) -> str:
    """``X-Docker-Container-Path-Stat``: the ``archive_stat`` document as base64 JSON."""
    return base64.b64encode(json.dumps(doc).encode()).decode()


class Archive(JobResource):
    def _path(self, req: Any) -> str:
        path = req.get_param("path")
        if not path:
            raise InvalidParameter("path is required")
        return path

    def on_head(self, req: Any, resp: Any, id: str) -> None:
        doc = json.loads(self.job("archive_stat", id, Path=self._path(req)))
        resp.set_header("X-Docker-Container-Path-Stat", stat_header(doc))
        resp.status = falcon.HTTP_200

    def on_get(self, req: Any, resp: Any, id: str) -> None:
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


def add_routes(app: falcon.App, engine: Any) -> None:
    app.add_route("/containers/{id}/changes", Changes(engine))
    app.add_route("/containers/{id}/export", Export(engine))
    app.add_route("/containers/{id}/archive", Archive(engine))
