"""The Graph: images, layers and tags together (seed ch. 4 §4.4 and ch. 11).

It resolves what users type (IDs, ID prefixes, references) to images,
registers images with their layers, deletes them with Docker's rules
(moby ``daemon/images/image_delete.go``), and builds the API's image
documents (summary, inspect, history).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from engine import reference as refs
from engine.drivers.graph import GraphDriver
from engine.errors import Conflict, InvalidParameter, NoSuchImage
from engine.graph.images import Image, ImageStore
from engine.graph.layers import Layer, LayerStore
from engine.graph.pools import Pool
from engine.graph.tagstore import TagStore
from engine.reference import Reference
from engine.utils.idmap import IDMap
from engine.utils.timefmt import ZERO_TIME, parse_rfc3339, rfc3339nano

LOG = logging.getLogger(__name__)

#: The container.Config fields, in Go's order, with their zero values: moby
#: always marshals the whole struct, and clients index into it.
CONTAINER_CONFIG_ZERO: dict[str, Any] = {
    "Hostname": "",
    "Domainname": "",
    "User": "",
    "AttachStdin": False,
    "AttachStdout": False,
    "AttachStderr": False,
    "Tty": False,
    "OpenStdin": False,
    "StdinOnce": False,
    "Env": None,
    "Cmd": None,
    "Image": "",
    "Volumes": None,
    "WorkingDir": "",
    "Entrypoint": None,
    "OnBuild": None,
    "Labels": None,
}


def short_id(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:12]


def full_container_config(config: dict | None) -> dict:
    out = dict(CONTAINER_CONFIG_ZERO)
    if config:
        out.update(config)
    return out


class ImageDeleteConflict(Conflict):
    """moby's imageDeleteConflict, with its exact messages."""

    def __init__(
        self, image_id: str, message: str, hard: bool = False, used: bool = False, reference: str | None = None
    ) -> None:
        self.hard = hard
        self.used = used
        if reference is not None:
            text = f"conflict: unable to remove repository reference {reference!r} (must force) - {message}"
        else:
            how = "cannot be forced" if hard else "must be forced"
            text = f"conflict: unable to delete {short_id(image_id)} ({how}) - {message}"
        super().__init__(text)


class Graph:
    """Images, layers and tags over one graph driver.

    :param root: the daemon's root directory.
    :param driver: the selected graph driver.
    :param on_event: ``fn(action, image_id, attributes)`` for image events.
    """

    def __init__(
        self,
        root: str,
        driver: GraphDriver,
        on_event: Callable[[str, str, dict], None] | None = None,
        idmap: IDMap | None = None,
    ) -> None:
        self.root = root
        self.driver = driver
        self.layers = LayerStore(root, driver, idmap)
        self.images = ImageStore(root, self.chain_size)
        self.tags = TagStore(os.path.join(root, f"repositories-{driver.name}"))
        self.pulls = Pool("pull")
        self.pushes = Pool("push")
        self.on_event = on_event or (lambda action, image_id, attrs: None)
        #: ``fn(image_id) -> [(container_id, running)]``, set by the daemon.
        self.container_users: Callable[[str], list[tuple[str, bool]]] = lambda image_id: []
        #: ``fn() -> iterable of top chain IDs`` the containers' layers sit on.
        self.container_layers: Callable[[], Iterable[str]] = lambda: ()
        self._lock = threading.RLock()
        self._pinned: dict[str, int] = {}
        #: ``fn(layer, seconds)`` for each layer applied through the driver
        #: (the metrics set it); None: nothing is timed.
        self.on_layer: Callable[[Layer, float], None] | None = None

    # sizes and lookups
    def chain_size(self, chains: Iterable[str]) -> int:
        total = 0
        for chain in chains:
            if self.layers.exists(chain):
                total += self.layers.get(chain).size
        return total

    def lookup(self, name: str) -> Image:
        """Resolve an ID, an ID prefix or a reference (moby ``GetImage``).

        :raises NoSuchImage: (404) when nothing matches, also for names that
            are not valid references: ``docker inspect`` walks object kinds
            and needs a 404 to go on.
        """
        if not name:
            raise NoSuchImage(name=name)
        if refs.is_image_id(name):
            image_id = refs.parse_image_id(name)
            if self.images.exists(image_id):
                return self.images.get(image_id)
            raise NoSuchImage(name=name)
        ref = self._parse(name)
        if ref is not None:
            tagged = self.tags.get(ref)
            if tagged is not None and self.images.exists(tagged):
                return self.images.get(tagged)
        image = self.images.lookup_id(name)
        if image is not None:
            return image
        raise NoSuchImage(name=ref.familiar() if ref is not None else name)

    @staticmethod
    def _parse(name: str) -> Reference | None:
        try:
            return refs.parse_normalized(name)
        except InvalidParameter:
            return None

    def __iter__(self) -> Iterator[Image]:
        return iter(self.images)

    # pins: layers an operation is registering must survive a concurrent gc
    @contextlib.contextmanager
    def pinned(self) -> Iterator[Callable[[str], None]]:
        held: list[str] = []

        def pin(chain: str) -> None:
            with self._lock:
                self._pinned[chain] = self._pinned.get(chain, 0) + 1
            held.append(chain)

        try:
            yield pin
        finally:
            with self._lock:
                for chain in held:
                    self._pinned[chain] -= 1
                    if not self._pinned[chain]:
                        del self._pinned[chain]

    # registration
    def register_layer(
        self,
        stream: Any,
        parent: str | None,
        diff_id: str | None,
        pin: Callable[[str], None] | None = None,
        verified: bool = False,
    ) -> tuple[Layer, bool]:
        """Register a layer tar (:meth:`~engine.graph.layers.LayerStore.register`; ``verified``:
        the caller hashed this very stream for ``diff_id``), pinned with ``pin``."""
        observer = self.on_layer
        started = time.monotonic() if observer is not None else 0.0
        layer, created = self.layers.register(stream, parent, diff_id, verified=verified)
        if pin is not None:
            pin(layer.chain_id)
        if created and observer is not None:
            observer(layer, time.monotonic() - started)
        return layer, created

    def create_image(self, raw: bytes, parent: str = "") -> tuple[Image, bool]:
        return self.images.create(raw, parent, layers_exist=self.layers.exists)

    def set_tag(self, ref: Reference, image: Image, force: bool = True) -> str | None:
        """Point ``ref`` at ``image``; returns the image it pointed at before."""
        previous = self.tags.get(ref)
        self.tags.set(ref, image.id, force=force)
        if previous != image.id:
            self.on_event("tag", image.id, {"name": ref.familiar()})
        return previous if previous != image.id else None

    def tag(self, name: str, repo: str, tag: str | None) -> Reference:
        """``docker tag``: resolve ``name`` and point ``repo[:tag]`` at it."""
        image = self.lookup(name)
        if not repo:
            raise InvalidParameter("repository name must have at least one component")
        ref = refs.parse(repo)
        if ref.digest:
            raise InvalidParameter("refusing to create a tag with a digest reference")
        if tag:
            ref = ref.with_tag(refs.validate_tag(tag))
        elif ref.tag is None:
            ref = ref.with_tag(refs.DEFAULT_TAG)
        self.set_tag(ref, image)
        return ref

    # in-use layers and garbage collection
    def layers_in_use(self) -> set[str]:
        tops = {img.top_layer for img in self.images if img.top_layer}
        tops.update(c for c in self.container_layers() if c)
        with self._lock:
            tops.update(self._pinned)
        used: set[str] = set()
        for top in tops:
            if top in used or not self.layers.exists(top):
                continue
            used.update(layer.chain_id for layer in self.layers.chain(top))
        return used

    def gc(self) -> list[Layer]:
        """Remove layers no image, container or running operation holds."""
        with self._lock:
            return self.layers.gc(self.layers_in_use())

    # deletion (moby image_delete.go)
    def delete(self, name: str, force: bool = False, prune: bool = True) -> list[dict]:
        with self._lock:
            return self._delete(name, force, prune)

    def _delete(self, name: str, force: bool, prune: bool) -> list[dict]:
        image = self.lookup(name)
        records: list[dict] = []
        repo_refs = self.tags.references(image.id)
        by_id = refs.is_image_id(name) or self._is_id_prefix(image, name)
        removed_repository_ref = False
        if not by_id:
            users = self.container_users(image.id)
            if users and len(repo_refs) == 1 and not force:
                raise ImageDeleteConflict(
                    image.id,
                    f"container {users[0][0][:12]} is using its referenced image {short_id(image.id)}",
                    used=True,
                    reference=name,
                )
            ref = refs.parse_normalized(name)
            self.tags.delete(ref)
            records.append({"Untagged": ref.familiar()})
            self.on_event("untag", image.id, {"name": ref.familiar()})
            repo_refs = self.tags.references(image.id)
            if ref.digest is None and not any(r.digest is None and r.name == ref.name for r in repo_refs):
                remaining = []
                for other in repo_refs:
                    if other.digest is not None and other.name == ref.name:
                        self.tags.delete(other)
                        records.append({"Untagged": other.familiar()})
                    else:
                        remaining.append(other)
                repo_refs = remaining
            if repo_refs:
                return records
            removed_repository_ref = True
        elif self._single_reference(repo_refs):
            self._check_conflict(image, hard_only=force, soft_ok_active=not force)
            for other in repo_refs:
                self.tags.delete(other)
                records.append({"Untagged": other.familiar()})
                self.on_event("untag", image.id, {"name": other.familiar()})
        self._delete_helper(image, records, force, prune, quiet=removed_repository_ref)
        return records

    @staticmethod
    def _is_id_prefix(image: Image, name: str) -> bool:
        text = name[7:] if name.startswith("sha256:") else name
        return bool(text) and image.hex.startswith(text)

    @staticmethod
    def _single_reference(repo_refs: list[Reference]) -> bool:
        tags = [r for r in repo_refs if r.digest is None]
        return len(tags) <= 1 and len({r.name for r in repo_refs}) <= 1

    def _check_conflict(self, image: Image, hard_only: bool, soft_ok_active: bool = False) -> None:
        """moby's checkImageDeleteConflict: hard conflicts always, soft ones unless forced."""
        if self.images.children(image.id):
            raise ImageDeleteConflict(image.id, "image has dependent child images", hard=True)
        users = self.container_users(image.id)
        running = [cid for cid, is_running in users if is_running]
        if running:
            raise ImageDeleteConflict(
                image.id, f"image is being used by running container {running[0][:12]}", hard=True, used=True
            )
        if hard_only:
            return
        if not soft_ok_active and self.tags.references(image.id):
            raise ImageDeleteConflict(image.id, "image is referenced in multiple repositories")
        stopped = [cid for cid, is_running in users if not is_running]
        if stopped:
            raise ImageDeleteConflict(
                image.id, f"image is being used by stopped container {stopped[0][:12]}", used=True
            )

    def _delete_helper(self, image: Image, records: list[dict], force: bool, prune: bool, quiet: bool) -> None:
        try:
            self._check_conflict(image, hard_only=force)
        except ImageDeleteConflict as conflict:
            dangling = not self.tags.references(image.id) and not self.images.children(image.id)
            if quiet and (not dangling or conflict.used):
                return
            raise
        parent = image.parent
        for ref in self.tags.delete_image(image.id):
            records.append({"Untagged": ref.familiar()})
        self.images.delete(image.id)
        self.on_event("delete", image.id, {"name": image.id})
        records.append({"Deleted": image.id})
        for layer in self.gc():
            records.append({"Deleted": layer.chain_id})
        if prune and parent and self.images.exists(parent):
            parent_image = self.images.get(parent)
            if not self.tags.references(parent) and not self.images.children(parent):
                self._delete_helper(parent_image, records, False, True, quiet=True)

    # documents for the API
    def summary(self, image: Image) -> dict:
        tags = self.tags.repo_tags(image.id)
        digests = self.tags.repo_digests(image.id)
        if not tags and not digests:
            tags, digests = ["<none>:<none>"], ["<none>@<none>"]
        return {
            "Containers": -1,
            "Created": int(image.created),
            "Id": image.id,
            "Labels": image.container_config.get("Labels") or {},
            "ParentId": image.parent,
            "RepoDigests": digests,
            "RepoTags": tags,
            "SharedSize": -1,
            "Size": image.size,
            "VirtualSize": image.size,
        }

    def inspect(self, image: Image) -> dict:
        cfg = image.config
        top = image.top_layer
        data: dict = {}
        if top is not None:
            try:
                data = self.driver.metadata(top.split(":", 1)[1])
            except Exception as exc:  # metadata is informative only
                LOG.debug("metadata of %s: %s", top, exc)
        doc = {
            "Id": image.id,
            "RepoTags": self.tags.repo_tags(image.id),
            "RepoDigests": self.tags.repo_digests(image.id),
            "Parent": image.parent,
            "Comment": cfg.get("comment", ""),
            "Created": cfg.get("created", ZERO_TIME),
            "Container": cfg.get("container", ""),
            "ContainerConfig": full_container_config(cfg.get("container_config")),
            "DockerVersion": cfg.get("docker_version", ""),
            "Author": cfg.get("author", ""),
            "Config": full_container_config(cfg.get("config")),
            "Architecture": cfg.get("architecture", ""),
            "Os": cfg.get("os", ""),
            "Size": image.size,
            "VirtualSize": image.size,
            "GraphDriver": {"Name": self.driver.name, "Data": data or None},
            "RootFS": {"Type": "layers", "Layers": list(image.diff_ids)},
            "Metadata": {"LastTagTime": rfc3339nano(self.tags.last_tag_time(image.id))},
        }
        if cfg.get("variant"):
            doc["Variant"] = cfg["variant"]
        if cfg.get("os.version"):
            doc["OsVersion"] = cfg["os.version"]
        return doc

    def history(self, image: Image) -> list[dict]:
        items: list[dict] = []
        chains = image.chain_ids
        counter = 0
        for entry in image.config.get("history") or []:
            size = 0
            if not entry.get("empty_layer"):
                if counter >= len(chains):
                    raise InvalidParameter("too many non-empty layers in History section")
                size = self.layers.get(chains[counter]).size if self.layers.exists(chains[counter]) else 0
                counter += 1
            items.insert(
                0,
                {
                    "Id": "<missing>",
                    "Created": int(parse_rfc3339(entry.get("created"))),
                    "CreatedBy": entry.get("created_by", ""),
                    "Tags": None,
                    "Size": size,
                    "Comment": entry.get("comment", ""),
                },
            )
        if not items:
            items.append(
                {
                    "Id": "<missing>",
                    "Created": int(image.created),
                    "CreatedBy": "",
                    "Tags": None,
                    "Size": image.size,
                    "Comment": "",
                }
            )
        current: Image | None = image
        for item in items:
            if current is None:
                break
            item["Id"] = current.id
            item["Tags"] = self.tags.repo_tags(current.id) or None
            current = self.images.get(current.parent) if current.parent and self.images.exists(current.parent) else None
        return items
