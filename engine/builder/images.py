"""New images from a container's changes: the layer, the config, the commit (moby ``image.NewChildImage``).

An image made by ``docker commit`` or by a build step is its parent's config
plus one history entry, and one layer unless nothing changed (an *empty
layer*: the history entry says so and ``rootfs.diff_ids`` stays as it was).
The config is serialised as dockerd serialises it (the top-level keys
sorted, ``container.Config`` in Go's field order with Go's ``omitempty``
rules, times in RFC 3339 with nanoseconds, Go's JSON escaping), so the
image ID, the sha256 of those bytes, is Docker's for the same content.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from engine.errors import HostError
from engine.graph.layers import DiffIDMismatch

if TYPE_CHECKING:
    from engine.graph.graph import Graph
    from engine.graph.images import Image

LOG = logging.getLogger(__name__)

#: The diff ID of a layer tar with no entries (two zero blocks): moby's ``DigestSHA256EmptyTar``.
EMPTY_LAYER = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"

#: Docker's version string in images this engine makes (``docker_version``).
DOCKER_VERSION = "20.10.24"

#: ``container.Config`` in Go's field order; True marks ``omitempty`` fields.
CONFIG_FIELDS: tuple[tuple[str, bool, Any], ...] = (
    ("Hostname", False, ""),
    ("Domainname", False, ""),
    ("User", False, ""),
    ("AttachStdin", False, False),
    ("AttachStdout", False, False),
    ("AttachStderr", False, False),
    ("ExposedPorts", True, None),
    ("Tty", False, False),
    ("OpenStdin", False, False),
    ("StdinOnce", False, False),
    ("Env", False, None),
    ("Cmd", False, None),
    ("Healthcheck", True, None),
    ("ArgsEscaped", True, False),
    ("Image", False, ""),
    ("Volumes", False, None),
    ("WorkingDir", False, ""),
    ("Entrypoint", False, None),
    ("NetworkDisabled", True, False),
    ("MacAddress", True, ""),
    ("OnBuild", False, None),
    ("Labels", False, None),
    ("StopSignal", True, ""),
    ("StopTimeout", True, None),
    ("Shell", True, None),
)
_HEALTH_FIELDS = ("Test", "Interval", "Timeout", "StartPeriod", "Retries")


def go_config(config: dict | None) -> dict:
    """``config`` as Go marshals a ``container.Config``: every field in order, empty ``omitempty`` ones left out."""
    config = config or {}
    out: dict[str, Any] = {}
    for name, omitempty, zero in CONFIG_FIELDS:
        value = config.get(name, zero)
        if value is None:
            value = zero
        if omitempty and not value:
            continue
        if name == "Healthcheck":
            value = {k: value[k] for k in _HEALTH_FIELDS if value.get(k)}
        elif name in ("ExposedPorts", "Volumes") and value:
            value = {k: {} for k in sorted(value)}
        elif name == "Labels" and value is not None:
            value = {k: value[k] for k in sorted(value)}
        out[name] = value
    return out


def copy_config(config: dict | None) -> dict:
    """A deep enough copy of a container config (lists and maps are new)."""
    out = {}
    for key, value in (config or {}).items():
        if isinstance(value, list):
            value = list(value)
        elif isinstance(value, dict):
            value = {
                k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in value.items()
            }
        out[key] = value
    return out


def go_json(value: Any) -> str:
    """JSON as Go's ``encoding/json`` writes it: compact, ``<``, ``>`` and ``&`` escaped, UTF-8 kept."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def go_time(ts: float | None = None) -> str:
    """RFC 3339 with nanoseconds and trailing zeros cut, as Go marshals a UTC ``time.Time``."""
    ns = int((ts if ts is not None else dt.datetime.now(dt.UTC).timestamp()) * 1_000_000_000)
    seconds, frac = divmod(ns, 1_000_000_000)
    base = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{frac:09d}".rstrip("0")
    return base + ("." + fraction if fraction else "") + "Z"


def serialize(doc: dict) -> bytes:
    """An image config as moby's ``Image.MarshalJSON``: top-level keys sorted, values as Go writes them."""
    return ("{" + ",".join(f"{go_json(key)}:{go_json(doc[key])}" for key in sorted(doc)) + "}").encode()


def child_config(
    parent: Image | None,
    config: dict,
    container_config: dict,
    diff_id: str | None,
    container_id: str = "",
    author: str = "",
    comment: str = "",
    created: float | None = None,
    platform: tuple[str, str, str] = ("", "linux", ""),
) -> bytes:
    """The config of a child of ``parent`` (None: ``scratch``) with one more history entry (moby ``NewChildImage``).

    :param diff_id: the new layer's diff ID, or None (or the empty tar's) for an empty layer.
    :param platform: architecture, OS and variant for a child of scratch.
    """
    empty = diff_id is None or diff_id == EMPTY_LAYER
    base = parent.config if parent is not None else {}
    diff_ids = list(parent.diff_ids) if parent is not None else []
    if diff_id is not None and not empty:
        diff_ids.append(diff_id)
    when = go_time(created)
    entry: dict[str, Any] = {"created": when}
    if author:
        entry["author"] = author
    created_by = " ".join(container_config.get("Cmd") or [])
    if created_by:
        entry["created_by"] = created_by
    if comment:
        entry["comment"] = comment
    if empty:
        entry["empty_layer"] = True
    doc: dict[str, Any] = {
        "created": when,
        "container_config": go_config(container_config),
        "docker_version": DOCKER_VERSION,
        "config": go_config(config),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": list(base.get("history") or []) + [entry],
    }
    arch = base.get("architecture") or platform[0]
    os_name = base.get("os") or platform[1]
    variant = base.get("variant") or platform[2]
    for key, value in (
        ("architecture", arch),
        ("os", os_name),
        ("variant", variant),
        ("container", container_id),
        ("author", author),
        ("comment", comment),
        ("os.version", base.get("os.version")),
        ("os.features", base.get("os.features")),
    ):
        if value:
            doc[key] = value
    return serialize(doc)


def spool_diff(stream: IO[bytes], tmpdir: str | None = None) -> tuple[IO[bytes], str]:
    """Copy a layer tar to a temporary file while hashing it; the file (at its start) and the diff ID.

    :raises HostError: the disk is full or unwritable (the file is gone).
    """
    spool = tempfile.TemporaryFile(dir=tmpdir or os.environ.get("TMPDIR"))
    hasher = hashlib.sha256()
    try:
        while True:
            chunk = stream.read(1 << 20)
            if not chunk:
                break
            hasher.update(chunk)
            spool.write(chunk)
        spool.flush()
        spool.seek(0)
    except OSError as exc:
        spool.close()
        raise HostError(f"failed to write the layer: {exc}") from exc
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return spool, "sha256:" + hasher.hexdigest()


def hash_diff(stream: IO[bytes]) -> str:
    """The diff ID of a layer tar, read to its end (and closed) without being stored."""
    hasher = hashlib.sha256()
    with contextlib.closing(stream):
        while chunk := stream.read(1 << 20):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def register_diff(
    graph: Graph, diff: Callable[[], IO[bytes]], parent: Image | None, pin: Callable[[str], None]
) -> str | None:
    """Register the layer tar ``diff()`` makes on top of ``parent``'s layers; its diff ID, or None
    when it is empty.

    The layer is named by its chain ID, so its diff ID must be known before
    it is applied: a first pass of ``diff()`` only hashes, a second one is
    applied (and hashed again, to check it). Spooling the tar instead would
    write the data twice, where a second pass reads it again from the page
    cache. Content that changed between the passes (a commit without pause)
    is registered from a spool. The layer is pinned with ``pin`` so that a
    garbage collection cannot take it before the image that holds it exists.
    """
    # The driver's diff has the host's owners; a layer speaks of the container's (--userns-remap).
    diff_id = hash_diff(graph.layers.to_container(diff()))
    if diff_id == EMPTY_LAYER:
        return None
    top = parent.top_layer if parent is not None else None
    stream = graph.layers.to_container(diff())
    try:
        graph.register_layer(stream, top, diff_id, pin)
        return diff_id
    except DiffIDMismatch as exc:
        LOG.info("the layer changed while it was read (%s); registering it from a spool", exc)
    finally:
        stream.close()
    spool, diff_id = spool_diff(graph.layers.to_container(diff()))
    try:
        if diff_id == EMPTY_LAYER:
            return None
        graph.register_layer(spool, top, diff_id, pin, verified=True)  # spool_diff hashed it
        return diff_id
    finally:
        spool.close()


def create_child(graph: Graph, raw: bytes, parent: Image | None) -> Image:
    """Store the config ``raw`` as an image whose parent is ``parent`` (the build cache walks these links)."""
    image, _ = graph.create_image(raw, parent.id if parent is not None else "")
    return image
