"""API middleware: the ``/vX.Y`` prefix and version check, the headers every
response carries, CORS, and request logging (seed ch. 5 §5.1)."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import engine
from engine import apiversion
from engine.api.base import REQUEST_VERSION
from engine.errors import InvalidParameter

LOG = logging.getLogger("engine.api")

_VERSIONED = re.compile(r"^/v(\d+)\.(\d+)(/.*)$")


MIN_VERSION = apiversion.parse(engine.MIN_API_VERSION)
MAX_ACCEPTED = apiversion.parse(engine.MAX_ACCEPTED_API_VERSION)

#: Headers moby sends on every response (``api/server/middleware/version.go``).
COMMON_HEADERS = {
    "Api-Version": engine.API_VERSION,
    "Ostype": "linux",
    "Docker-Experimental": "false",
    "Server": f"Engine/{engine.__version__} (linux)",
}

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Origin, X-Requested-With, Content-Type, Accept, X-Registry-Auth",
    "Access-Control-Allow-Methods": "HEAD, GET, POST, DELETE, PUT, OPTIONS",
}


def split_version(path: str) -> tuple[str | None, str]:
    """``/v1.41/containers/json`` -> ``("1.41", "/containers/json")``."""
    m = _VERSIONED.match(path)
    if m is None:
        return None, path
    return f"{m.group(1)}.{m.group(2)}", m.group(3)


def check_version(version: str) -> None:
    """Refuse versions this daemon cannot answer, with moby's messages."""
    v = apiversion.parse(version)
    if v > MAX_ACCEPTED:
        raise InvalidParameter(
            f"client version {version} is too new. Maximum supported API version is {engine.API_VERSION}"
        )
    if v < MIN_VERSION:
        raise InvalidParameter(
            f"client version {version} is too old. Minimum supported API version is "
            f"{engine.MIN_API_VERSION}, please upgrade your client to a newer version"
        )


class VersionMiddleware:
    """Strip ``/vX.Y``, check it, remember it in ``req.context.api_version`` (and for the jobs the
    request runs, :data:`~engine.api.base.REQUEST_VERSION`), and put the common headers on every
    response."""

    def __init__(self, cors: bool = False) -> None:
        self.headers = dict(COMMON_HEADERS)
        if cors:
            self.headers.update(CORS_HEADERS)

    def process_request(self, req: Any, resp: Any) -> None:
        resp.set_headers(self.headers)
        req.context.started = time.monotonic()
        version, path = split_version(req.path)
        req.context.api_version = version or engine.API_VERSION
        if version is not None:
            req.path = path
            check_version(version)
        REQUEST_VERSION.set(req.context.api_version)

    def process_response(self, req: Any, resp: Any, resource: Any, req_succeeded: bool) -> None:  # noqa: ARG002
        if LOG.isEnabledFor(logging.DEBUG):
            started = getattr(req.context, "started", None)
            took = (time.monotonic() - started) * 1000 if started else 0.0
            LOG.debug("%s %s -> %s (%.1fms)", req.method, req.relative_uri, resp.status, took)
