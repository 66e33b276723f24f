"""The container store: the daemon's container records, their names and IDs.

It keeps every :class:`~engine.daemon.container.Container` of the daemon by
ID, the :class:`~engine.utils.truncindex.TruncIndex` that resolves unique ID
prefixes, and the containers' names, which live in the link graph (seed ch.
4 §4.6): ``/name`` for a container, ``/parent/alias`` for a link. Each record
is persisted in ``<root>/containers/<id>/`` by
:meth:`Container.to_disk <engine.daemon.container.Container.to_disk>`; the
store reads them all back at start-up (:meth:`ContainerStore.load`).

Crash safety. A container exists once its ``config.v2.json`` does: a
create makes the directory first and writes that file last, and a remove
deletes it before the rest of the directory. A directory without it is what
a crash left of a create or a remove (:meth:`ContainerStore.load` reports
it in :attr:`ContainerStore.leftovers`; the life cycle removes the rest).
Two journals in the directory say what cannot be derived from the ID alone:
``create.json`` (the anonymous volumes a create is making) and
``removal.json`` (a remove under way and whether it takes the volumes).
Names live in the link graph, which a crash can leave ahead of or behind
the records; :meth:`ContainerStore.load` reconciles them, the records
winning.

The store knows nothing of running containers: their transitions are
:mod:`engine.daemon.lifecycle`'s.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.daemon.container import CONFIG_FILE, HOSTCONFIG_FILE, Container
from engine.daemon.names import random_name
from engine.errors import Conflict, InvalidParameter, NoSuchContainer, NotFound
from engine.sys.fs import Reaper, atomic_write
from engine.utils.truncindex import TruncIndex

if TYPE_CHECKING:
    from engine.graphdb import LinkGraph

LOG = logging.getLogger(__name__)

#: The journal of a create under way (the anonymous volumes it makes).
CREATE_JOURNAL = "create.json"
#: The journal of a remove under way (``{"RemoveVolumes": bool}``).
REMOVAL_JOURNAL = "removal.json"

_CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")
#: A removed container's directory on its way out (:meth:`ContainerStore.dispose`).
_RM_PREFIX = ".rm-"
#: How long a shutdown waits for those deletions (the next start sweeps the rest).
DISPOSAL_WAIT = 30.0


def new_container_id() -> str:
    """64 random hex digits whose short form is not all digits (it would read as a number)."""
    cid = secrets.token_hex(32)
    while cid[:12].isdigit():
        cid = secrets.token_hex(32)
    return cid


def link_alias(spec: str) -> str:
    """The alias a ``--link`` spec (``name:alias``, ``name``, ``/parent/name:alias``) names."""
    name, _, alias = spec.partition(":")
    return (alias or name).lstrip("/").split("/")[-1]


def name_in_use(name: str, other: str) -> Conflict:
    """Docker's words for a name another container holds."""
    return Conflict(
        f'Conflict. The container name "{name}" is already in use by container "{other}". '
        "You have to remove (or rename) that container to be able to reuse that name."
    )


class ContainerStore:
    """Every container of the daemon (the seed's ``daemon.containers``): records, names, lookups.

    :param root: the daemon's root; records live in ``<root>/containers/<id>``.
    :param linkgraph: the link graph, which holds the names.
    :param new_id: makes a container ID (injected by tests).
    :param names: ``names(attempt)`` makes a random name (``adjective_surname``,
        with a digit from the second attempt on).
    """

    def __init__(
        self,
        root: str,
        linkgraph: LinkGraph,
        new_id: Callable[[], str] = new_container_id,
        names: Callable[[int], str] = random_name,
    ) -> None:
        self.dir = os.path.join(root, "containers")
        self.linkgraph = linkgraph
        self._new_id = new_id
        self._names = names
        self._containers: dict[str, Container] = {}
        self.index = TruncIndex()
        self._lock = threading.RLock()
        #: IDs of directories :meth:`load` found without a record (a crash cut a create or a remove short).
        self.leftovers: list[str] = []
        #: Deletes the directories of removed containers (:meth:`dispose`).
        self._reaper = Reaper("containers")

    # lookups
    def all(self) -> list[Container]:
        """Every container, in no particular order."""
        with self._lock:
            return list(self._containers.values())

    def get(self, name: str) -> Container:
        """By full ID, name (with or without ``/``) or unique ID prefix (moby ``GetContainer``).

        :raises NoSuchContainer: nothing matches.
        :raises InvalidParameter: an ID prefix that matches several containers.
        """
        if not name:
            raise NoSuchContainer(name=name)
        c = self._containers.get(name)
        if c is not None:
            return c
        full = name if name.startswith("/") else "/" + name
        # A link's path (``/parent/alias``) names the linked container too, as in moby.
        entity = self.linkgraph.get(full)
        if entity is not None and entity.id in self._containers:
            return self._containers[entity.id]
        try:
            cid = self.index.get(name)
        except NotFound:
            raise NoSuchContainer(name=name) from None
        except InvalidParameter:
            raise
        return self._containers[cid]

    def counts(self) -> dict[str, int]:
        """``total``, ``running``, ``paused`` and ``stopped`` (``docker info``)."""
        out = {"total": 0, "running": 0, "paused": 0, "stopped": 0}
        for c in self.all():
            out["total"] += 1
            if c.state.running and c.state.paused:
                out["paused"] += 1
            elif c.state.running:
                out["running"] += 1
            else:
                out["stopped"] += 1
        return out

    def image_users(self, image_id: str) -> list[tuple[str, bool]]:
        """``(container ID, running)`` of the containers made from ``image_id`` (for ``rmi``)."""
        return [(c.id, c.state.running) for c in self.all() if c.image_id == image_id]

    def layer_tops(self) -> list[str]:
        """The image layers containers are made on (the graph keeps them)."""
        return [c.top_layer for c in self.all() if c.top_layer]

    def volume_users(self, name: str) -> list[str]:
        """IDs of the containers that mount volume ``name``."""
        return [c.id for c in self.all() if any(m.get("Name") == name for m in c.mounts)]

    # records
    def new_id(self) -> str:
        """An ID no container of the store has."""
        cid = self._new_id()
        while cid in self._containers:
            cid = self._new_id()
        return cid

    def path(self, cid: str) -> str:
        """The directory of container ``cid``."""
        return os.path.join(self.dir, cid)

    def add(self, c: Container) -> None:
        """Make ``c`` visible to lookups (its name is reserved already)."""
        with self._lock:
            self._containers[c.id] = c
            self.index.add(c.id)

    def discard(self, c: Container) -> None:
        """Forget ``c``: lookups no longer find it (its names are released with :meth:`release_names`)."""
        with self._lock:
            self._containers.pop(c.id, None)
            try:
                self.index.delete(c.id)
            except NotFound:
                pass

    def dispose(self, cid: str) -> None:
        """Delete the directory of container ``cid``, removed already (its record is gone): it
        is renamed out of sight at once and deleted in the background. A crash leaves it to
        the next :meth:`load`.
        """
        doomed = os.path.join(self.dir, f"{_RM_PREFIX}{cid}-{secrets.token_hex(4)}")
        os.rename(self.path(cid), doomed)
        self._reaper.delete(doomed)

    def wait_disposed(self, timeout: float | None = None) -> bool:
        """Wait until the directories given to :meth:`dispose` so far are deleted; whether that
        was within ``timeout`` seconds."""
        return self._reaper.wait(timeout)

    def close(self, timeout: float = DISPOSAL_WAIT) -> None:
        """Let the deletions of :meth:`dispose` finish (the daemon stops), for ``timeout`` s at most."""
        if not self.wait_disposed(timeout):
            LOG.warning("directories of removed containers are still being deleted; the next start sweeps them")

    def load(self) -> list[Container]:
        """Read every record under ``<root>/containers`` (daemon start-up, seed ch. 4 §4.10).

        A directory without a record goes to :attr:`leftovers`; a record
        that cannot be read is logged and skipped. The names are then
        reconciled with the records (:meth:`reconcile_names`).
        """
        self.leftovers = []
        if not os.path.isdir(self.dir):
            return []
        for cid in sorted(os.listdir(self.dir)):
            path = self.path(cid)
            if cid.startswith(_RM_PREFIX):  # a removal's directory a crash left on its way out
                self._reaper.delete(path)
                continue
            if not _CONTAINER_ID.match(cid) or not os.path.isdir(path):
                LOG.warning("%s is not a container's directory; leaving it", path)
                continue
            if not (
                os.path.exists(os.path.join(path, CONFIG_FILE)) and os.path.exists(os.path.join(path, HOSTCONFIG_FILE))
            ):
                self.leftovers.append(cid)
                continue
            try:
                c = Container.from_disk(path)
            except (OSError, ValueError, KeyError) as exc:
                LOG.error("container %s cannot be loaded: %s", cid[:12], exc)
                continue
            self.add(c)
        self.reconcile_names()
        return self.all()

    def reconcile_names(self) -> None:
        """Make the link graph agree with the records (after a crash, at start-up).

        A name or link of an ID no record has is what a create or a remove
        left: it goes. A container's own name (``/name``) other than its
        record's is what a rename left halfway: it goes too, and a record
        whose name is missing gets it back, unless another container has
        it meanwhile (then the record keeps the name but is found by ID).
        """
        known = self._containers
        for entity_id, paths in self.linkgraph.all_ref_paths().items():
            if entity_id not in known:
                # A leftover's names go with the rest of it (the life cycle's undo).
                if _CONTAINER_ID.match(entity_id) and entity_id not in self.leftovers:
                    LOG.warning(
                        "releasing the names %s of container %s, which does not exist", ", ".join(paths), entity_id[:12]
                    )
                    self.linkgraph.purge(entity_id)
                continue
            c = known[entity_id]
            for path in paths:
                if os.path.dirname(path) == "/" and path != c.name:
                    LOG.warning("container %s is %s: releasing the name %s a rename left", c.short_id, c.name, path)
                    self.linkgraph.delete(path)
        for c in known.values():
            entity = self.linkgraph.get(c.name)
            if entity is None:
                try:
                    self.linkgraph.set(c.name, c.id)
                except Conflict:
                    LOG.warning("container %s: name %s is taken", c.short_id, c.name)
            elif entity.id != c.id:
                LOG.warning("container %s: name %s is taken by %s", c.short_id, c.name, entity.id[:12])

    # journals
    def write_journal(self, cid: str, name: str, doc: dict[str, Any]) -> None:
        """Write journal ``name`` (:data:`CREATE_JOURNAL`, :data:`REMOVAL_JOURNAL`) of container ``cid``."""
        atomic_write(os.path.join(self.path(cid), name), json.dumps(doc).encode(), mode=0o600)

    def read_journal(self, cid: str, name: str) -> dict[str, Any] | None:
        """Journal ``name`` of container ``cid``, or None when there is none (or it cannot be read)."""
        try:
            with open(os.path.join(self.path(cid), name), "rb") as fh:
                doc = json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            LOG.warning("journal %s of container %s cannot be read: %s", name, cid[:12], exc)
            return {}
        return doc if isinstance(doc, dict) else {}

    def drop_journal(self, cid: str, name: str) -> None:
        """Remove journal ``name`` of container ``cid`` (its step is done)."""
        try:
            os.unlink(os.path.join(self.path(cid), name))
        except FileNotFoundError:
            pass

    # names
    def reserve_name(self, name: str, cid: str) -> str:
        """Give ``cid`` the name ``name`` (``/name``), or a random free one when ``name`` is "".

        Six random names are tried, then the short ID (moby ``reserveName``).

        :raises Conflict: ``name`` is another container's (Docker's words).
        """
        if name:
            try:
                self.linkgraph.set(name, cid)
            except Conflict:
                entity = self.linkgraph.get(name)
                raise name_in_use(name, entity.id if entity is not None else "?") from None
            return name
        for attempt in range(6):
            candidate = "/" + self._names(attempt)
            try:
                self.linkgraph.set(candidate, cid)
                return candidate
            except Conflict:
                continue
        candidate = "/" + cid[:12]
        self.linkgraph.set(candidate, cid)
        return candidate

    def release_names(self, cid: str) -> None:
        """Free every name and link of ``cid`` (removed, or a create that failed)."""
        self.linkgraph.purge(cid)

    def rename(self, c: Container, new: str) -> str:
        """Move ``c``'s name to ``new`` (validated, ``/name``); the old name.

        :raises InvalidParameter: ``new`` is its current name.
        :raises Conflict: ``new`` is another container's.
        """
        old = c.name
        if new == old:
            raise InvalidParameter("Renaming a container with the same name as its current name")
        try:
            self.linkgraph.rename(old, new)
        except Conflict:
            entity = self.linkgraph.get(new)
            raise name_in_use(new, entity.id if entity is not None else "?") from None
        with c.lock:
            c.name = new
            c.to_disk()
        return old

    def remove_link(self, path: str) -> tuple[Container, str]:
        """``docker rm --link``: drop the link ``/parent/alias`` from the link graph and from the
        parent's ``HostConfig.Links`` (its next start does not link again); the parent and the alias.

        :raises InvalidParameter: ``path`` is a container's own name, not a link (moby's words).
        :raises NoSuchContainer: there is no such link.
        """
        full = "/" + path.strip("/")
        parent_name, alias = os.path.split(full)
        if parent_name == "/":
            raise InvalidParameter("Conflict, cannot remove the default link name of the container")
        if self.linkgraph.get(full) is None:
            raise NoSuchContainer(name=path)
        try:
            parent = self.get(parent_name)
        except NotFound:
            raise InvalidParameter(f"Cannot get parent {parent_name} for link name {full}") from None
        self.linkgraph.delete(full)
        with parent.lock:
            kept = [s for s in parent.host_config.get("Links") or [] if link_alias(s) != alias]
            parent.host_config["Links"] = kept or None
            parent.to_disk()
        return parent, alias
