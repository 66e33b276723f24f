"""The one place where exceptions become HTTP answers.

Errors are ``{"message": "..."}`` with ``Content-Type: application/json``
exactly (the docker CLI compares the header with ``==``); the status comes
from the :class:`~engine.errors.EngineError` class.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon

from engine.errors import EngineError

LOG = logging.getLogger("engine.api")

JSON = "application/json"


def _set_error(resp: Any, status: int, message: str) -> None:
    resp.status = status
    if status == 304:
        resp.data = b""
        return
    resp.content_type = JSON
    resp.data = json.dumps({"message": message}).encode() + b"\n"


def handle_engine_error(req: Any, resp: Any, ex: EngineError, params: Any) -> None:  # noqa: ARG001
    if ex.http_status == 500:
        LOG.error("%s %s: %s", req.method, req.path, ex)
    _set_error(resp, ex.http_status, ex.message)


def handle_http_error(req: Any, resp: Any, ex: falcon.HTTPError, params: Any) -> None:  # noqa: ARG001
    message = ex.description or ex.title or "error"
    if ex.status_code == 404 and ex.description is None:
        message = "page not found"
    for name, value in dict(ex.headers or {}).items():
        resp.set_header(name, value)
    _set_error(resp, ex.status_code, message)


def handle_unexpected(req: Any, resp: Any, ex: Exception, params: Any) -> None:  # noqa: ARG001
    LOG.error("%s %s failed", req.method, req.path, exc_info=ex)
    _set_error(resp, 500, f"{type(ex).__name__}: {ex}")


def install(app: falcon.App) -> None:
    """Register the handlers; the most specific class wins in Falcon."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(EngineError, handle_engine_error)
