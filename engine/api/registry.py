"""Registry resources: ``POST /auth`` (``docker login``).

Pull, push and search are image resources (:mod:`engine.api.images`); only
the login check has a route of its own. The body is the client's
``AuthConfig`` (``{"username","password","serveraddress"}``); the answer is
``{"Status":"Login Succeeded","IdentityToken":""}``, or a 401 with the
registry's reason (``unauthorized: authentication required``), which the
docker CLI prints.
"""

from __future__ import annotations

from typing import Any

import falcon

from engine.api.base import JSON, read_json, run_job
from engine.errors import InvalidParameter


class Auth:
    """``POST /auth``."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def on_post(self, req: Any, resp: Any) -> None:
        body = read_json(req)
        if not isinstance(body, dict):
            raise InvalidParameter("invalid auth configuration: want a JSON object")
        resp.content_type = JSON
        resp.data = run_job(self.engine, "auth", env={"AuthConfig": body})


def add_routes(app: falcon.App, engine: Any) -> None:
    app.add_route("/auth", Auth(engine))
