"""Build and commit resources: ``POST /build``, ``POST /build/prune``, ``POST /commit``.

``/build`` answers as dockerd 20.10 answers a client without BuildKit:
the context is the request body (chunked, read as a stream), the query
parameters are moby's (``newImageBuildOptions``), ``X-Registry-Config``
carries the registries' credentials for pulls of base images, and the
answer is the builder's JSON stream. An error found before the build
starts (the context, the Dockerfile, a tag) is the HTTP answer.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import falcon

from engine.api.base import JSON, body_stream, parse_filters, query_bool, query_int, read_json, run_job, stream_job
from engine.errors import InvalidParameter


def registry_config(header: str | None) -> dict[str, dict]:
    """``X-Registry-Config`` (base64url JSON): the CLI's ``{host: auth}`` map or docker-py's ``{"auths": {...}}``.

    Undecodable means no credentials, as dockerd's ``getAuthConfigs`` ignores decode errors.
    """
    if not header or not header.strip():
        return {}
    text = header.strip()
    text += "=" * (-len(text) % 4)
    for decode in (base64.urlsafe_b64decode, base64.b64decode):
        try:
            data = json.loads(decode(text.encode()))
        except (binascii.Error, ValueError):
            continue
        if isinstance(data, dict):
            if isinstance(data.get("auths"), dict):
                data = data["auths"]
            return {str(k): v for k, v in data.items() if isinstance(v, dict)}
    return {}


def _json_param(req: Any, name: str, what: str, kind: type) -> Any:
    value = req.get_param(name)
    if not value:
        return kind()
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise InvalidParameter(f"error reading {what}: {exc}") from None
    if data is None:
        return kind()
    if not isinstance(data, kind):
        raise InvalidParameter(f"error reading {what}: want a JSON {kind.__name__}")
    return data


def first(req: Any, name: str) -> str:
    """The first value of a query parameter, as Go's ``FormValue`` takes it ("" when absent).

    docker-py sends ``dockerfile`` twice for a Dockerfile from outside the
    context (its name in the tar, then its text): the first one counts.
    """
    values = req.get_param_as_list(name) or []
    return values[0] if values else ""


class Build:
    """``POST /build``."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def on_post(self, req: Any, resp: Any) -> None:
        if req.get_param("securityopt") is not None:
            raise InvalidParameter("The daemon on this platform does not support setting security options on build")
        version = req.get_param("version") or "1"
        if version not in ("1", "2"):
            raise InvalidParameter(f'invalid version "{version}"')
        if version == "2":
            raise InvalidParameter(
                "BuildKit is not supported by this daemon: build with the classic builder (version=1)"
            )
        if query_bool(req, "squash"):
            raise InvalidParameter("squash is only supported with experimental mode")
        isolation = req.get_param("isolation") or ""
        if isolation not in ("", "default"):
            raise InvalidParameter(f'Unsupported isolation: "{isolation}"')
        build_args = _json_param(req, "buildargs", "build args", dict)
        labels = _json_param(req, "labels", "labels", dict)
        cache_from = _json_param(req, "cachefrom", "cache from", list)
        ulimits = _json_param(req, "ulimits", "ulimit settings", list)
        force_rm = query_bool(req, "forcerm")
        rm = True if force_rm or req.get_param("rm") in (None, "") else query_bool(req, "rm")
        shm = req.get_param("shmsize")
        if shm not in (None, ""):
            try:
                int(shm)
            except ValueError:
                raise InvalidParameter(f'strconv.ParseInt: parsing "{shm}": invalid syntax') from None
        env = {
            "Tags": req.get_param_as_list("t") or [],
            "Quiet": query_bool(req, "q"),
            "NoCache": query_bool(req, "nocache"),
            "Remove": rm,
            "ForceRemove": force_rm,
            "Pull": query_bool(req, "pull"),
            "BuildArgs": build_args,
            "Labels": labels,
            "Target": first(req, "target"),
            "CacheFrom": cache_from,
            "NetworkMode": first(req, "networkmode"),
            "ShmSize": query_int(req, "shmsize"),
            "ExtraHosts": req.get_param_as_list("extrahosts") or [],
            "Memory": query_int(req, "memory"),
            "MemorySwap": query_int(req, "memswap"),
            "CpuShares": query_int(req, "cpushares"),
            "CpuPeriod": query_int(req, "cpuperiod"),
            "CpuQuota": query_int(req, "cpuquota"),
            "CpusetCpus": first(req, "cpusetcpus"),
            "CpusetMems": first(req, "cpusetmems"),
            "CgroupParent": first(req, "cgroupparent"),
            "Ulimits": ulimits,
            "Platform": first(req, "platform"),
            "Dockerfile": first(req, "dockerfile"),
            "Remote": first(req, "remote"),
            "AuthConfigs": registry_config(req.get_header("X-Registry-Config")),
        }
        resp.content_type = JSON
        resp.stream = stream_job(
            self.engine, "build", env=env, stdin=body_stream(req), client=req.env.get("gunicorn.socket")
        )


class BuildPrune:
    """``POST /build/prune``."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def on_post(self, req: Any, resp: Any) -> None:
        keep = req.get_param("keep-storage") or "0"
        try:
            int(keep)
        except ValueError:
            raise InvalidParameter(
                f'keep-storage is in bytes and expects an integer, got {keep}: strconv.Atoi: parsing "{keep}": '
                "invalid syntax"
            ) from None
        env = {"Filters": parse_filters(req.get_param("filters")), "All": query_bool(req, "all")}
        resp.content_type = JSON
        resp.data = run_job(self.engine, "build_prune", env=env)


class Commit:
    """``POST /commit?container=...``: 201 ``{"Id": ...}``."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def on_post(self, req: Any, resp: Any) -> None:
        config = read_json(req, required=False, default=None)
        if config is not None and not isinstance(config, dict):
            raise InvalidParameter("invalid JSON: the body must be a container config object")
        pause = req.get_param("pause")
        env = {
            "Repo": req.get_param("repo") or "",
            "Tag": req.get_param("tag") or "",
            "Author": req.get_param("author") or "",
            "Comment": req.get_param("comment") or "",
            "Pause": True if pause in (None, "") else query_bool(req, "pause"),
            "Changes": req.get_param_as_list("changes") or [],
            "Config": config,
        }
        resp.content_type = JSON
        resp.data = run_job(self.engine, "commit", req.get_param("container") or "", env=env)
        resp.status = falcon.HTTP_201


def add_routes(app: falcon.App, engine: Any) -> None:
    app.add_route("/build", Build(engine))
    app.add_route("/build/prune", BuildPrune(engine))
    app.add_route("/commit", Commit(engine))
