"""The image store: image configs addressed by their sha256 (seed ch. 11).

An image is its config JSON (OCI image config / Docker's ``image.Image``);
its ID is the sha256 of those exact bytes, so the same tarball gives the same
IDs here as in Docker. Layers are referenced by the config's
``rootfs.diff_ids`` and live in the :class:`~engine.graph.layers.LayerStore`.

On disk::

    <root>/graph/
        <image hex>/
            json         the config, byte for byte as received
            layersize    bytes of content the image's layers hold (seed: layersize)
            parent       the local parent image ID (built or committed images)
        tmp-<image hex>/ a registration under way; renamed into place when complete
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidParameter, NotFound
from engine.graph.layers import chain_ids, check_digest
from engine.sys.fs import fsync_dir, safe_rmtree, write_synced
from engine.utils.timefmt import parse_rfc3339
from engine.utils.truncindex import TruncIndex

LOG = logging.getLogger(__name__)


@dataclass
class Image:
    """A registered image: its config and what is derived from it."""

    id: str
    raw: bytes
    config: dict
    size: int = 0
    parent: str = ""
    diff_ids: list[str] = field(default_factory=list)
    chain_ids: list[str] = field(default_factory=list)
    created: float = 0.0

    @property
    def hex(self) -> str:
        return self.id.split(":", 1)[1]

    @property
    def top_layer(self) -> str | None:
        return self.chain_ids[-1] if self.chain_ids else None

    @property
    def container_config(self) -> dict:
        return self.config.get("config") or {}


def parse_config(raw: bytes) -> dict:
    """Decode and check an image config."""
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise InvalidParameter(f"invalid image config: {exc}") from None
    if not isinstance(config, dict):
        raise InvalidParameter("invalid image config: not a JSON object")
    rootfs = config.get("rootfs") or {}
    if rootfs.get("type", "layers") != "layers":
        raise InvalidParameter(f"invalid image config: unsupported rootfs type {rootfs.get('type')!r}")
    diff_ids = rootfs.get("diff_ids") or []
    if not isinstance(diff_ids, list):
        raise InvalidParameter("invalid image config: rootfs.diff_ids is not a list")
    for d in diff_ids:
        check_digest(d, "diff ID")
    return config


class ImageStore:
    """Image configs under ``<root>/graph``, indexed for prefix lookups.

    :param root: the daemon root.
    :param layer_size: ``fn(chain_ids) -> int`` giving the bytes of a chain.
    """

    def __init__(self, root: str, layer_size: Any) -> None:
        self.dir = os.path.join(root, "graph")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self._layer_size = layer_size
        self._images: dict[str, Image] = {}
        self.index = TruncIndex()
        self._lock = threading.RLock()
        self._load()

    def _load(self) -> None:
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            if name.startswith("tmp-"):
                safe_rmtree(path)  # an interrupted registration
                continue
            if len(name) != 64:
                continue
            try:
                image = self._read(name)
            except (OSError, ValueError, InvalidParameter) as exc:
                LOG.error("image %s is unreadable (%s); ignoring it", name[:12], exc)
                continue
            self._images[image.id] = image
            self.index.add(image.hex)

    def _read(self, hex_id: str) -> Image:
        base = os.path.join(self.dir, hex_id)
        with open(os.path.join(base, "json"), "rb") as fh:
            raw = fh.read()
        if hashlib.sha256(raw).hexdigest() != hex_id:
            raise ValueError("config does not match its ID")
        parent = ""
        try:
            with open(os.path.join(base, "parent"), encoding="ascii") as fh:
                parent = fh.read().strip()
        except FileNotFoundError:
            pass
        return self._make(raw, parse_config(raw), parent)

    def _make(self, raw: bytes, config: dict, parent: str) -> Image:
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        chains = chain_ids(diff_ids)
        image = Image(
            id="sha256:" + hashlib.sha256(raw).hexdigest(),
            raw=raw,
            config=config,
            parent=parent,
            diff_ids=diff_ids,
            chain_ids=chains,
            created=parse_rfc3339(config.get("created")),
        )
        image.size = self._layer_size(chains)
        return image

    # queries
    def get(self, image_id: str) -> Image:
        """By full ID (``sha256:<hex>`` or ``<hex>``)."""
        key = image_id if image_id.startswith("sha256:") else "sha256:" + image_id
        try:
            return self._images[key]
        except KeyError:
            raise NotFound(f"No such image: {image_id}") from None

    def lookup_id(self, prefix: str) -> Image | None:
        """By ID or unique ID prefix (with or without ``sha256:``); None if none."""
        text = prefix[7:] if prefix.startswith("sha256:") else prefix
        if not text or any(c not in "0123456789abcdef" for c in text):
            return None
        try:
            full = self.index.get(text)
        except NotFound:
            return None
        return self._images.get("sha256:" + full)

    def exists(self, image_id: str) -> bool:
        return image_id in self._images

    def __iter__(self) -> Iterator[Image]:
        with self._lock:
            return iter(list(self._images.values()))

    def __len__(self) -> int:
        return len(self._images)

    def children(self, image_id: str) -> list[Image]:
        return [img for img in self if img.parent == image_id]

    # changes
    def create(self, raw: bytes, parent: str = "", layers_exist: Any = None) -> tuple[Image, bool]:
        """Register a config; returns (image, created now).

        :param layers_exist: ``fn(chain_id) -> bool``; every layer must exist.
        """
        config = parse_config(raw)
        image = self._make(raw, config, parent)
        if layers_exist is not None:
            for chain in image.chain_ids:
                if not layers_exist(chain):
                    raise NotFound(f"layer {chain} of image {image.id} is not registered")
        with self._lock:
            if image.id in self._images:
                return self._images[image.id], False
            staging = os.path.join(self.dir, "tmp-" + image.hex)
            os.makedirs(staging, mode=0o700, exist_ok=True)
            try:
                write_synced(os.path.join(staging, "json"), raw, mode=0o600)
                write_synced(os.path.join(staging, "layersize"), str(image.size).encode(), mode=0o600)
                if parent:
                    write_synced(os.path.join(staging, "parent"), parent.encode(), mode=0o600)
                fsync_dir(staging)
                os.rename(staging, os.path.join(self.dir, image.hex))
                fsync_dir(self.dir)
            except BaseException:
                safe_rmtree(staging)
                raise
            self._images[image.id] = image
            self.index.add(image.hex)
        return image, True

    def delete(self, image_id: str) -> Image:
        with self._lock:
            image = self.get(image_id)
            base = os.path.join(self.dir, image.hex)
            doomed = os.path.join(self.dir, "tmp-" + image.hex)
            os.rename(base, doomed)
            safe_rmtree(doomed)
            del self._images[image.id]
            self.index.delete(image.hex)
            return image
