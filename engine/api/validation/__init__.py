"""The API's one validation layer: every request checked against moby's API description before a job runs.

``swagger-v1.45.json`` beside this module is moby's ``api/swagger.yaml`` at
tag v26.1.5 (Docker Engine API 1.45; moby/moby, Apache License 2.0), with
its prose taken out by ``scripts/swagger-subset``. For the operation a
request is routed to, :func:`check_request` checks

* the query parameters the operation describes: integers as Go's
  ``strconv.Atoi`` reads them, enums, and per name the formats of
  :mod:`~engine.api.validation.formats` (``platform``...);
* its JSON body, decoded by :func:`engine.utils.strictjson.loads` (no
  NaN/Infinity, bounded nesting) and checked by
  :class:`~engine.api.validation.schema.Swagger` with Go's decoding rules and
  the field checks (``WorkingDir``, cpusets);
* that no path parameter, query value or body string holds a NUL character,
  which no name, path or argument can (the kernel's strings end there).

A request that fails is a 400 with a message that names the field; nothing
reaches a job. The decoded body is kept on the request, and
:func:`engine.api.base.read_json` hands it to the resource, so a body is
decoded once. :class:`RequestValidation` runs the check for every routed
resource (Falcon middleware, after the Content-Type check); a sink, which
middleware does not see, calls :func:`check_request` with its template.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.api.validation import formats
from engine.api.validation.schema import Swagger, load
from engine.errors import InvalidParameter
from engine.utils import strictjson

__all__ = ["NO_BODY", "RequestValidation", "check_request", "decode_body"]

#: What :func:`decode_body` keeps for a request that came without a body.
NO_BODY = object()
#: The request context attribute holding the decoded body.
BODY_ATTR = "json_body"


def _nul(where: str) -> InvalidParameter:
    return InvalidParameter(f"invalid {where}: a NUL character is not allowed")


def decode_body(req: Any) -> Any:
    """The request's JSON body, decoded strictly once and kept on ``req.context``; :data:`NO_BODY` if empty.

    :raises InvalidParameter: malformed JSON, NaN/Infinity, nesting too deep.
    """
    kept = getattr(req.context, BODY_ATTR, None)
    if kept is not None:
        return kept
    from engine.api.base import body_stream

    raw = body_stream(req).read()
    if not raw or not raw.strip():
        value: Any = NO_BODY
    else:
        try:
            value = strictjson.loads(raw)
        except strictjson.JSONError as exc:
            raise InvalidParameter(f"malformed JSON in request body: {exc}") from None
    setattr(req.context, BODY_ATTR, value)
    return value


def _query_values(req: Any, name: str) -> list[str]:
    value = req.params.get(name)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _check_query(req: Any, method: str, template: str, param: Mapping[str, Any]) -> None:
    """One described query parameter: JSON ones by their schema, the others by format, type and enum."""
    name = param["name"]
    check = formats.ROUTE_QUERY_CHECKS.get((method, template, name)) or formats.QUERY_CHECKS.get(name)
    kind = param.get("items", {}).get("type") if param.get("type") == "array" else param.get("type")
    enum = param.get("items", {}).get("enum") if param.get("type") == "array" else param.get("enum")
    json_schema = formats.JSON_QUERY.get((method, template, name))
    for value in _query_values(req, name):
        if value == "":
            continue  # dockerd reads an empty parameter as an absent one
        if json_schema is not None:
            try:
                decoded = strictjson.loads(value)
            except strictjson.JSONError as exc:
                raise InvalidParameter(f"invalid JSON in {name}: {exc}") from None
            load().check(decoded, json_schema, name)
            continue
        if check is not None:
            check(value, name)
            continue
        type_check = formats.TYPE_CHECKS.get(kind or "")
        if type_check is not None:
            type_check(value, name)
        if enum and value not in enum:
            raise InvalidParameter(f"invalid value for {name}: {value!r} is not one of {', '.join(map(str, enum))}")


def check_request(
    req: Any, template: str | None, params: Mapping[str, Any] | None = None, swagger: Swagger | None = None
) -> None:
    """Check ``req``, routed to ``template``, against the operation the description has there.

    :param params: the path parameters the router found.
    :param swagger: the description (the shipped one by default).
    :raises InvalidParameter: the first thing wrong, named.
    """
    for name, value in (params or {}).items():
        if isinstance(value, str) and "\x00" in value:
            raise _nul(name)
    for name in req.params:
        if any("\x00" in v for v in _query_values(req, name)):
            raise _nul(name)
    if not template:
        return
    swagger = swagger or load()
    op = swagger.operation(req.method, template)
    if op is None:
        return
    method = req.method.upper()
    described = {p.get("name") for p in op.get("parameters", ()) if p.get("in") == "query"}
    for m, t, name in formats.JSON_QUERY:
        if (m, t) == (method, template) and name not in described:  # moby reads it; the description omits it
            _check_query(req, method, template, {"name": name, "type": "string"})
    for param in op.get("parameters", ()):
        where = param.get("in")
        if where == "query":
            _check_query(req, method, template, param)
        elif where == "body":
            schema = param.get("schema") or {}
            if schema.get("type") == "string":
                continue  # a tar, a Dockerfile context, an image: not JSON
            body = decode_body(req)
            if body is not NO_BODY:
                swagger.check(body, schema)


class RequestValidation:
    """Falcon middleware running :func:`check_request` once the route is known.

    :param swagger: the description (the shipped one by default; tests pass their own).
    """

    def __init__(self, swagger: Swagger | None = None) -> None:
        self.swagger = swagger

    def process_resource(self, req: Any, resp: Any, resource: Any, params: Any) -> None:  # noqa: ARG002
        check_request(req, req.uri_template, params, self.swagger)
