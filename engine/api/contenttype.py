"""Requests that must say they carry JSON: dockerd's ``CheckForJSON``, route by route.

A web page can make a browser POST to any address it likes, but only with a
"simple" body type (``text/plain``, a form) unless the server agrees first
(CORS). A daemon listening on TCP that decoded such a body as JSON would let
any page create a container that binds the host's root. dockerd refuses a
body whose ``Content-Type`` is not ``application/json`` on the routes that
decode one (moby 20.10 ``api/server/httputils.CheckForJSON`` and its
callers), and so does this middleware, with dockerd's message::

    400 {"message": "Content-Type specified (text/plain) must be 'application/json'"}

The rule is dockerd's exactly: no ``Content-Type`` is fine when there is no
body (``Content-Length: 0`` or none, and not chunked); otherwise the media
type, parsed as Go's ``mime.ParseMediaType`` does (case-insensitive,
parameters allowed), must be ``application/json``. Which routes check:

* always: ``POST /containers/create``, ``/containers/{id}/update``,
  ``/containers/{id}/exec``, ``/commit``, ``/networks/create``,
  ``/networks/{id}/connect`` and ``/disconnect``, ``/volumes/create``;
* ``POST /exec/{id}/start`` from API 1.22 on;
* ``POST /containers/{id}/copy`` below API 1.24 (gone after);
* ``POST /containers/{id}/start`` only with a body of more than 7 bytes
  (the smallest JSON object with a field): below API 1.24 it must be JSON;
  from 1.24 on a body is refused outright, as dockerd does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from engine.errors import InvalidParameter

__all__ = ["JSON_ROUTES", "JSONBodyMiddleware", "check_json", "media_type"]

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return (0, 0)


def _always(version: tuple[int, int], length: int) -> bool:  # noqa: ARG001
    return True


#: Route template -> whether the check applies, given the API version and
#: the body's length (-1: chunked, unknown).
JSON_ROUTES: dict[str, Callable[[tuple[int, int], int], bool]] = {
    "/containers/create": _always,
    "/containers/{id}/update": _always,
    "/containers/{id}/exec": _always,
    "/commit": _always,
    "/networks/create": _always,
    "/networks/{id}/connect": _always,
    "/networks/{id}/disconnect": _always,
    "/volumes/create": _always,
    "/exec/{id}/start": lambda version, length: version > (1, 21),  # noqa: ARG005
    "/containers/{id}/copy": lambda version, length: version < (1, 24),  # noqa: ARG005
    "/containers/{id}/start": lambda version, length: length > 7 or length == -1,  # noqa: ARG005
}


def media_type(value: str) -> str | None:
    """The lower-cased ``type/subtype`` of a Content-Type, or None when it is malformed
    (what Go's ``mime.ParseMediaType`` refuses: no slash, bad characters, a
    parameter without ``=``)."""
    head, *params = value.split(";")
    mediatype = head.strip().lower()
    kind, slash, sub = mediatype.partition("/")
    if not slash or not _TOKEN.match(kind) or not _TOKEN.match(sub):
        return None
    for param in params:
        if not param.strip():
            continue
        key, eq, val = param.partition("=")
        val = val.strip()
        if not eq or not _TOKEN.match(key.strip()):
            return None
        if not (_TOKEN.match(val) or (len(val) >= 2 and val[0] == val[-1] == '"')):
            return None
    return mediatype


def check_json(content_type: str, length: int) -> None:
    """dockerd's ``CheckForJSON``.

    :param length: the body's Content-Length; -1 when it is chunked.
    :raises InvalidParameter: ``Content-Type specified (text/plain) must be 'application/json'``.
    """
    if not content_type and length == 0:
        return
    if media_type(content_type) != "application/json":
        raise InvalidParameter(f"Content-Type specified ({content_type}) must be 'application/json'")


def body_length(req: Any) -> int:
    """The body's length as Go's ``Request.ContentLength`` has it: -1 when chunked, 0 without a body."""
    if req.content_length is not None:
        return req.content_length
    return -1 if "chunked" in (req.get_header("Transfer-Encoding") or "").lower() else 0


class JSONBodyMiddleware:
    """Falcon middleware applying :data:`JSON_ROUTES` once the route is known."""

    def process_resource(self, req: Any, resp: Any, resource: Any, params: Any) -> None:  # noqa: ARG002
        if req.method != "POST":
            return
        applies = JSON_ROUTES.get(req.uri_template or "")
        if applies is None:
            return
        version = _version(getattr(req.context, "api_version", "") or "")
        length = body_length(req)
        if not applies(version, length):
            return
        if req.uri_template == "/containers/{id}/start" and version >= (1, 24):
            raise InvalidParameter(
                "starting container with non-empty request body was deprecated since API v1.22 and removed in v1.24"
            )
        check_json(req.get_header("Content-Type") or "", length)
