"""Image resources: ``/images/...``.

Image names contain ``/`` and ``:`` (``localhost:5000/a/b:tag``,
``sha256:<hex>``), which Falcon's ``{field}`` cannot match, so the per-image
routes are one regex sink (moby routes them as ``{name:.*}``); fixed routes
such as ``/images/json`` are matched first.
"""

from __future__ import annotations

import re
from typing import Any

import falcon

from engine.api.base import JSON, body_stream, parse_filters, query_bool, run_job, stream_job
from engine.api.validation import check_request
from engine.errors import InvalidParameter


class ImageList:
    """``GET /images/json``."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def on_get(self, req: Any, resp: Any) -> None:
        filters = parse_filters(req.get_param("filters"))
        legacy = req.get_param("filter")  # API < 1.28: a reference pattern
        if legacy:
            filters.setdefault("reference", []).append(legacy)
        resp.content_type = JSON
        env = {"All": query_bool(req, "all"), "Filters": filters, "SharedSize": query_bool(req, "shared-size")}
        resp.data = run_job(self.engine, "images", env=env)


class ImageLoad:
    """``POST /images/load``: a docker save archive or an OCI layout in the body."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def on_post(self, req: Any, resp: Any) -> None:
        resp.content_type = JSON
        resp.stream = stream_job(self.engine, "load", env={"Quiet": query_bool(req, "quiet")}, stdin=body_stream(req))


class ImageSaveMany:
    """``GET /images/get?names=a&names=b``."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def on_get(self, req: Any, resp: Any) -> None:
        names = req.get_param_as_list("names") or []
        if not names:
            raise InvalidParameter("names is required: GET /images/get?names=IMAGE")
        resp.content_type = "application/x-tar"
        resp.stream = stream_job(self.engine, "image_export", *names)


class ImageCreate:
    """``POST /images/create``: import (``fromSrc``) or pull (``fromImage``)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def on_post(self, req: Any, resp: Any) -> None:
        resp.content_type = JSON
        src = req.get_param("fromSrc")
        if src is not None:
            env = {
                "Source": src,
                "Repo": req.get_param("repo") or "",
                "Tag": req.get_param("tag") or "",
                "Message": req.get_param("message") or "",
                "Changes": req.get_param_as_list("changes") or [],
                "Platform": req.get_param("platform") or "",
            }
            resp.stream = stream_job(self.engine, "import", env=env, stdin=body_stream(req))
            return
        image = req.get_param("fromImage")
        if not image:
            raise InvalidParameter("fromImage or fromSrc is required")
        env = {
            "Tag": req.get_param("tag") or "",
            "Platform": req.get_param("platform") or "",
            "AuthConfig": req.get_header("X-Registry-Auth") or "",
        }
        resp.stream = stream_job(self.engine, "pull", image, env=env)


class ImagePrune:
    """``POST /images/prune``."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def on_post(self, req: Any, resp: Any) -> None:
        resp.content_type = JSON
        resp.data = run_job(self.engine, "image_prune", env={"Filters": parse_filters(req.get_param("filters"))})


class ImageSearch:
    """``GET /images/search``."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def on_get(self, req: Any, resp: Any) -> None:
        term = req.get_param("term")
        if not term:
            raise InvalidParameter("term is required")
        env = {
            "Limit": req.get_param_as_int("limit") or 25,
            "Filters": parse_filters(req.get_param("filters")),
            "AuthConfig": req.get_header("X-Registry-Auth") or "",
        }
        resp.content_type = JSON
        resp.data = run_job(self.engine, "search", term, env=env)


_PER_IMAGE = re.compile(r"^/images/(?P<name>.+?)(?:/(?P<action>json|history|push|tag|get))?$")


class PerImage:
    """The sink for ``/images/{name}[/json|history|push|tag|get]``."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def __call__(self, req: Any, resp: Any, **_: Any) -> None:
        m = _PER_IMAGE.match(req.path)
        if m is None:
            raise falcon.HTTPNotFound()
        name, action = m.group("name"), m.group("action")
        method = req.method
        handler = {
            ("GET", "json"): self.inspect,
            ("GET", "history"): self.history,
            ("POST", "tag"): self.tag,
            ("POST", "push"): self.push,
            ("GET", "get"): self.save,
            ("DELETE", None): self.delete,
        }.get((method, action))
        if handler is None:
            if (method, action) == ("HEAD", "json"):
                raise falcon.HTTPMethodNotAllowed(["GET"])
            raise falcon.HTTPNotFound()
        # Middleware does not see sinks: the route family's one call to the validation layer.
        check_request(req, "/images/{name}" + (f"/{action}" if action else ""), {"name": name})
        handler(req, resp, name)

    def inspect(self, req: Any, resp: Any, name: str) -> None:
        resp.content_type = JSON
        resp.data = run_job(self.engine, "image_inspect", name)

    def history(self, req: Any, resp: Any, name: str) -> None:
        resp.content_type = JSON
        resp.data = run_job(self.engine, "image_history", name)

    def tag(self, req: Any, resp: Any, name: str) -> None:
        run_job(self.engine, "tag", name, env={"Repo": req.get_param("repo") or "", "Tag": req.get_param("tag") or ""})
        resp.status = falcon.HTTP_201

    def push(self, req: Any, resp: Any, name: str) -> None:
        env = {"Tag": req.get_param("tag") or "", "AuthConfig": req.get_header("X-Registry-Auth") or ""}
        resp.content_type = JSON
        resp.stream = stream_job(self.engine, "push", name, env=env)

    def save(self, req: Any, resp: Any, name: str) -> None:
        resp.content_type = "application/x-tar"
        resp.stream = stream_job(self.engine, "image_export", name)

    def delete(self, req: Any, resp: Any, name: str) -> None:
        env = {"Force": query_bool(req, "force"), "NoPrune": query_bool(req, "noprune")}
        resp.content_type = JSON
        resp.data = run_job(self.engine, "image_delete", name, env=env)


def add_routes(app: falcon.App, engine: Any) -> None:
    app.add_route("/images/json", ImageList(engine))
    app.add_route("/images/load", ImageLoad(engine))
    app.add_route("/images/get", ImageSaveMany(engine))
    app.add_route("/images/create", ImageCreate(engine))
    app.add_route("/images/prune", ImagePrune(engine))
    app.add_route("/images/search", ImageSearch(engine))
    app.add_sink(PerImage(engine), prefix=re.compile(r"^/images/.+"))
