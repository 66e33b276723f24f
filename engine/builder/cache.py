"""The classic builder's cache: images are the cache (moby ``image/cache``).

A step is cached when the current image has a child whose
``container_config`` matches the step's (same command, which for COPY and
ADD carries the checksum of the files, same environment, labels, ports,
user, entrypoint and volumes: moby's ``compare``); the newest such child
is taken. After the first miss in a stage nothing more is probed
(``cacheBusted``). With ``cachefrom`` only images the given ones descend
from count, plus images made again from their history (moby ``ImageCache``
with sources: a pulled image has no parent links, so its history entries
are matched step by step).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engine.builder import images as imaging
from engine.errors import NotFound

if TYPE_CHECKING:
    from engine.graph.graph import Graph
    from engine.graph.images import Image

LOG = logging.getLogger(__name__)


def compare(a: dict | None, b: dict | None) -> bool:
    """moby's ``compare`` of two container configs (what makes a cache hit)."""
    if a is None or b is None or a.get("OpenStdin") or b.get("OpenStdin"):
        return False
    for key in ("AttachStdout", "AttachStderr", "OpenStdin", "Tty"):
        if bool(a.get(key)) != bool(b.get(key)):
            return False
    if (a.get("User") or "") != (b.get("User") or ""):
        return False
    for key in ("Cmd", "Env", "Entrypoint"):
        if list(a.get(key) or []) != list(b.get(key) or []):
            return False
    la, lb = a.get("Labels") or {}, b.get("Labels") or {}
    if len(la) != len(lb) or any(lb.get(k) != v for k, v in la.items()):
        return False
    for key in ("ExposedPorts", "Volumes"):
        ka, kb = set(a.get(key) or {}), set(b.get(key) or {})
        if ka != kb:
            return False
    return True


class ImageCache:
    """Probes for cached steps during one build.

    :param graph: the image store.
    :param cache_from: ``cachefrom`` image names (those that cannot be found are skipped).
    :param disabled: ``nocache``: never a hit.
    """

    def __init__(self, graph: Graph, cache_from: list[str] | None = None, disabled: bool = False) -> None:
        self.graph = graph
        self.disabled = disabled
        self.cache_from = list(cache_from or [])
        self.busted = False
        self.sources: list[Image] = []
        self.reset()

    def reset(self) -> None:
        """A new stage: probing starts again."""
        self.busted = False
        self.sources = []
        for name in self.cache_from:
            try:
                self.sources.append(self.graph.lookup(name))
            except NotFound:
                LOG.warning("Could not look up %s for cache resolution, skipping", name)

    def probe(self, parent_id: str, config: dict) -> str:
        """The ID of a cached image for the step ``config`` on ``parent_id``, or ""."""
        if self.disabled or self.busted:
            return ""
        found = self._local(parent_id, config)
        if self.cache_from:
            if found and not any(self._descends(src.id, found) for src in self.sources):
                found = ""
            if not found:
                found = self._from_sources(parent_id, config)
        if not found:
            self.busted = True
        return found

    def _local(self, parent_id: str, config: dict) -> str:
        match: Image | None = None
        for image in self.graph.images:
            if image.parent != parent_id:
                continue
            if compare(image.config.get("container_config"), config) and (
                match is None or match.created < image.created
            ):
                match = image
        return match.id if match is not None else ""

    def _descends(self, image_id: str, ancestor: str) -> bool:
        seen = set()
        current = image_id
        while current and current not in seen:
            seen.add(current)
            if current == ancestor:
                return True
            try:
                current = self.graph.images.get(current).parent
            except NotFound:
                return False
        return False

    def _from_sources(self, parent_id: str, config: dict) -> str:
        parent = self.graph.images.get(parent_id) if parent_id else None
        history = list(parent.config.get("history") or []) if parent is not None else []
        diff_ids = list(parent.diff_ids) if parent is not None else []
        created_by = " ".join(config.get("Cmd") or [])
        for target in self.sources:
            target_history = list(target.config.get("history") or [])
            if not _valid_parent(target, history, diff_ids) or len(target_history) <= len(history):
                continue
            if target_history[len(history)].get("created_by", "") != created_by:
                continue
            if len(target_history) - 1 == len(history):
                return target.id
            entry = target_history[len(history)]
            new_ids = list(diff_ids)
            if not entry.get("empty_layer"):
                index = sum(1 for h in target_history[: len(history)] if not h.get("empty_layer"))
                new_ids.append(target.diff_ids[index])
            doc = {
                "created": entry.get("created"),
                "docker_version": imaging.DOCKER_VERSION,
                "config": imaging.go_config(config),
                "container_config": imaging.go_config({}),
                "rootfs": {"type": "layers", "diff_ids": new_ids},
                "history": history + [entry],
            }
            for key in ("architecture", "os", "author", "os.version", "os.features"):
                if target.config.get(key):
                    doc[key] = target.config[key]
            image, _ = self.graph.create_image(imaging.serialize(doc), parent_id)
            self.sources = [target]
            return image.id
        return ""


def _valid_parent(target: Image, history: list[dict], diff_ids: list[str]) -> bool:
    target_history = list(target.config.get("history") or [])
    if not target_history:
        return False
    if not history and not diff_ids:
        return True
    if len(history) >= len(target_history) or len(diff_ids) > len(target.diff_ids):
        return False
    return target_history[: len(history)] == history and target.diff_ids[: len(diff_ids)] == diff_ids
