"""``docker import``: an image from a root file system tarball, with Dockerfile
``--change`` instructions applied to its config (moby ``daemon/images/image_import.go``
and ``builder/dockerfile.BuildFromConfig``)."""

from __future__ import annotations

import json
import posixpath
import shlex
import time
from typing import IO, Any

from engine import archive
from engine import reference as refs
from engine.errors import InvalidParameter
from engine.graph.graph import Graph
from engine.graph.images import Image
from engine.utils import strictjson
from engine.utils.host import goarch
from engine.utils.timefmt import rfc3339nano

#: Dockerfile instructions ``--change`` may use (moby's list).
ALLOWED_CHANGES = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")


def _json_or_shell(rest: str) -> list[str]:
    """``["a", "b"]`` (exec form) or ``a b`` (shell form, run by /bin/sh -c)."""
    text = rest.strip()
    if text.startswith("["):
        try:
            value = strictjson.loads(text)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", text]


def _pairs(rest: str, instruction: str) -> list[tuple[str, str]]:
    """``k=v k2="v 2"``, or the legacy ``k v`` form of ENV and LABEL."""
    try:
        words = shlex.split(rest, posix=True)
    except ValueError as exc:
        raise InvalidParameter(f"{instruction}: {exc}") from None
    if not words:
        raise InvalidParameter(f"{instruction} requires at least one argument")
    if "=" not in words[0]:
        key, _, value = rest.strip().partition(" ")
        if not value.strip():
            raise InvalidParameter(f"{instruction} must have two arguments")
        return [(key, value.strip())]
    out = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise InvalidParameter(
                f"{instruction}: syntax error - can't find = in {word!r}. Must be of the form: name=value"
            )
        out.append((key, value))
    return out


def apply_changes(config: dict, changes: list[str]) -> dict:
    """Apply ``--change`` instructions to a container config (in place)."""
    for change in changes:
        line = change.strip()
        if not line:
            continue
        word, _, rest = line.partition(" ")
        instruction = word.upper()
        if instruction not in ALLOWED_CHANGES:
            raise InvalidParameter(f"{word} is not a valid change command")
        rest = rest.strip()
        if instruction == "CMD":
            config["Cmd"] = _json_or_shell(rest)
        elif instruction == "ENTRYPOINT":
            config["Entrypoint"] = _json_or_shell(rest) if rest else None
        elif instruction == "ENV":
            env = list(config.get("Env") or [])
            for key, value in _pairs(rest, "ENV"):
                env = [e for e in env if e.split("=", 1)[0] != key] + [f"{key}={value}"]
            config["Env"] = env
        elif instruction == "LABEL":
            labels = dict(config.get("Labels") or {})
            labels.update(_pairs(rest, "LABEL"))
            config["Labels"] = labels
        elif instruction == "EXPOSE":
            ports = dict(config.get("ExposedPorts") or {})
            for spec in rest.split():
                port, _, proto = spec.partition("/")
                if not port.split("-")[0].isdigit():
                    raise InvalidParameter(f"invalid port {spec!r} in EXPOSE")
                ports[f"{port}/{(proto or 'tcp').lower()}"] = {}
            config["ExposedPorts"] = ports
        elif instruction == "USER":
            if not rest:
                raise InvalidParameter("USER requires exactly one argument")
            config["User"] = rest
        elif instruction == "VOLUME":
            vols = dict(config.get("Volumes") or {})
            if rest.startswith("["):
                try:
                    paths = strictjson.loads(rest)
                except ValueError:
                    paths = None
                if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                    raise InvalidParameter(f"VOLUME: invalid JSON array: {rest}")
            else:
                paths = rest.split()
            if not paths:
                raise InvalidParameter("VOLUME requires at least one argument")
            for path in paths:
                vols[path] = {}
            config["Volumes"] = vols
        elif instruction == "WORKDIR":
            if not rest:
                raise InvalidParameter("WORKDIR requires exactly one argument")
            config["WorkingDir"] = posixpath.join(config.get("WorkingDir") or "/", rest)
        elif instruction == "STOPSIGNAL":
            config["StopSignal"] = rest
        elif instruction == "ONBUILD":
            config["OnBuild"] = list(config.get("OnBuild") or []) + [rest]
    return config


def import_rootfs(
    graph: Graph,
    stream: IO[bytes],
    changes: list[str],
    message: str = "",
    source: str = "-",
    platform_os: str = "linux",
) -> Image:
    """Register ``stream`` (a root file system tar, maybe compressed) as a
    one-layer image; the caller tags it."""
    config_part: dict[str, Any] = apply_changes({}, changes)
    with graph.pinned() as pin:
        try:
            layer, _ = graph.register_layer(archive.decompress_stream(stream), None, None, pin)
        except BaseException:
            graph.gc()
            raise
        created = rfc3339nano(time.time())
        config = {
            "architecture": goarch(),
            "config": config_part,
            "created": created,
            "history": [{"created": created, "comment": message or f"Imported from {source}"}],
            "os": platform_os,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
        if message:
            config["comment"] = message
        raw = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
        image, _ = graph.create_image(raw)
    graph.on_event("import", image.id, {"name": image.id})
    return image


def tag_after_import(graph: Graph, image: Image, repo: str, tag: str) -> None:
    if not repo:
        return
    ref = refs.parse(repo)
    if tag:
        ref = ref.with_tag(refs.validate_tag(tag))
    elif ref.tag is None and ref.digest is None:
        ref = ref.with_tag(refs.DEFAULT_TAG)
    graph.set_tag(ref, image)
