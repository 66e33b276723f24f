"""The link graph: container names and links, stored in SQLite (seed ch. 4 §4.6).

Docker 1.2's ``pkg/graphdb`` is a tiny graph database: *entities* are ids
(container ids, plus the root ``"0"``) and *edges* give an entity a name
under a parent entity. A path is the chain of edge names from the root, so

::

    /                 root entity "0" (an edge with no parent, named "/")
    /web              edge(parent="0",  name="web", entity=<web id>)   the name
    /db               edge(parent="0",  name="db",  entity=<db id>)    the name
    /web/db           edge(parent=<web id>, name="db", entity=<db id>) a link

``docker run --name web --link db:db`` therefore stores two edges to the
``db`` container: its name ``/db`` and the link alias ``/web/db``. The
daemon keeps the database at ``<root>/linkgraph.db``; the schema is Docker's,
so a Docker 1.2 ``linkgraph.db`` opens unchanged.

Concurrency: the API server is threaded. Every thread gets its own pooled
SQLite connection; reads run in their own deferred transaction (WAL gives
each a consistent snapshot without blocking writers), and writes are
serialised by a lock in this process and by ``BEGIN IMMEDIATE`` plus a busy
timeout against other processes.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    URL,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Index,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy import (
    delete as sql_delete,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, OperationalError

from engine.errors import Conflict, HostError, InvalidParameter, NotFound, Unavailable

LOG = logging.getLogger(__name__)

#: The id of the root entity, reachable at path ``/``.
ROOT_ID = "0"
#: Docker's rule for container names (``daemon.validContainerNamePattern``).
NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
_NAME_RE = re.compile(rf"/?{NAME_CHARS}+")
# SQLite builds before 3.32 allow at most 999 bound parameters per statement.
_IN_CHUNK = 500
# Execution option that makes the "begin" listener take the write lock upfront.
_WRITE_OPTION = "linkgraph_write"

metadata = MetaData()

#: ``entity(id)``: one row per container id, plus the root ``"0"``.
entity_table = Table(
    "entity",
    metadata,
    Column("id", Text, primary_key=True),
)

#: ``edge(entity_id, parent_id, name)``: a name for an entity under a parent.
edge_table = Table(
    "edge",
    metadata,
    Column("entity_id", Text, ForeignKey("entity.id", name="entity_fk"), nullable=False),
    # NULL only for the root's own edge "/": the root has no parent.
    Column("parent_id", Text, ForeignKey("entity.id", name="parent_fk"), nullable=True),
    Column("name", Text, nullable=False),
    UniqueConstraint("parent_id", "name", name="name_parent_ix"),
    # refs(), ref_paths() and purge() look edges up by the entity they name.
    Index("edge_entity_ix", "entity_id"),
)


@dataclass(frozen=True, slots=True)
class Entity:
    """An entity of the graph and the path it was found at.

    :ivar id: the entity id (a container id, or ``"0"`` for the root).
    :ivar path: the normalised path this entity was reached through.
    """

    id: str
    path: str


@dataclass(frozen=True, slots=True)
class Edge:
    """One named edge from a parent entity to an entity.

    :ivar entity_id: the entity the edge names.
    :ivar parent_id: the parent entity, ``None`` only for the root edge.
    :ivar name: the edge's name, one path component.
    """

    entity_id: str
    parent_id: str | None
    name: str


@dataclass(frozen=True, slots=True)
class WalkMeta:
    """One step of a walk: the edge followed and both of its ends.

    :ivar parent: the entity the edge starts from.
    :ivar entity: the entity reached, with ``path == full_path``.
    :ivar full_path: the path of ``entity`` along this walk.
    :ivar edge: the edge followed.
    """

    parent: Entity
    entity: Entity
    full_path: str
    edge: Edge


def validate_name(name: str) -> str:
    """Check a container name against Docker's rules and return it as a path.

    A name is ``[a-zA-Z0-9][a-zA-Z0-9_.-]+`` with an optional leading ``/``.

    :param name: the name as the user gave it (``web`` or ``/web``).
    :returns: the name with its leading slash (``/web``), ready for :meth:`LinkGraph.set`.
    :raises InvalidParameter: with Docker's message when the name is not allowed.
    """
    # fullmatch, not "$": "$" would also accept a name ending in a newline.
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise InvalidParameter(f"Invalid container name ({name}), only {NAME_CHARS} are allowed")
    return name if name.startswith("/") else "/" + name


def normalize_path(path: str) -> str:
    """Return the canonical form of a graph path.

    Repeated slashes collapse and a trailing slash is dropped, so ``//web/``
    becomes ``/web``; the root is ``/``.

    :param path: an absolute path such as ``/web`` or ``/web/db``.
    :raises InvalidParameter: if the path is not a string, is not absolute,
        contains a NUL, or has a ``.`` or ``..`` component.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidParameter(f"invalid link graph path {path!r}: must start with '/'")
    if "\x00" in path:
        raise InvalidParameter(f"invalid link graph path {path!r}: contains NUL")
    parts = [part for part in path.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise InvalidParameter(f"invalid link graph path {path!r}: '.' and '..' are not names")
    return "/" + "/".join(parts)


def paths_by_depth(paths: Iterable[str]) -> list[str]:
    """Sort paths so that parents come before their children.

    The daemon registers containers in this order when it restores them, so
    that a container's links are registered after the containers they name
    (the seed's ``Entities.Paths``).

    :param paths: normalised paths, e.g. the keys of :meth:`LinkGraph.list`.
    :returns: the paths by number of components, then alphabetically.
    """
    return sorted(paths, key=lambda path: (_depth(path), path))


def _depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


def _split(path: str) -> tuple[str, str]:
    """Split a normalised, non-root path into its parent path and last name."""
    parent, _, name = path.rpartition("/")
    return parent or "/", name


def _join(parent: str, name: str) -> str:
    return parent + name if parent == "/" else f"{parent}/{name}"


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def _check_id(entity_id: str) -> None:
    if not isinstance(entity_id, str) or not entity_id:
        raise InvalidParameter(f"invalid entity id {entity_id!r}")


def _check_depth(depth: int) -> None:
    if not isinstance(depth, int) or depth < -1:
        raise InvalidParameter(f"invalid depth {depth!r}: use -1 (unlimited) or a count >= 0")


class LinkGraph:
    """Container names and links as a small graph database over SQLite.

    :param path: the database file (the daemon uses ``<root>/linkgraph.db``);
        it and the root entity are created on first open.
    :param busy_timeout: seconds a writer waits for another process's lock
        before failing with :class:`~engine.errors.HostError`.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0, sole_writer: bool = False) -> None:
        self.path = os.fspath(path)
        #: Only this instance writes the file (the daemon, which holds its root's lock): what
        #: :meth:`all_ref_paths` found stays true until this instance writes, and is kept.
        self._sole_writer = sole_writer
        #: Counts this instance's write transactions; it changes after each one's commit.
        self._generation = 0
        self._all_paths: tuple[int, dict[str, builtins.list[str]]] | None = None
        self._busy_timeout_ms = int(busy_timeout * 1000)
        # Serialises this process's writers; SQLite allows one writer at a
        # time anyway, and queueing here is cheaper than spinning on SQLITE_BUSY.
        self._write_lock = threading.Lock()
        self._closed = False
        self._engine = create_engine(URL.create("sqlite+pysqlite", database=self.path))
        event.listen(self._engine, "connect", self._on_connect)
        event.listen(self._engine, "begin", self._on_begin)
        try:
            self._initialize()
        except BaseException:
            self._engine.dispose()
            raise
        LOG.debug("link graph opened at %s", self.path)

    # -- connection set-up -------------------------------------------------

    def _on_connect(self, dbapi_connection: Any, connection_record: Any) -> None:
        """Configure every new SQLite connection the pool opens."""
        # Take BEGIN away from the sqlite3 module (it never begins before a
        # SELECT, so multi-query reads would see several snapshots); the
        # "begin" listener emits it instead. This must come first: PRAGMA
        # foreign_keys is silently ignored inside a transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            # In WAL mode, NORMAL syncs at checkpoints, not at each commit: a commit survives
            # the daemon's death (kill -9) but a power cut may take the last ones back. The
            # daemon's store rewrites names from the container records at start-up
            # (ContainerStore.reconcile_names), so nothing a record holds is lost.
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()
        if str(mode).lower() != "wal":
            # Some file systems (network mounts) cannot host WAL's shared
            # memory; SQLite then keeps the old journal and stays correct.
            LOG.warning("link graph %s: journal mode is %s, not wal", self.path, mode)

    def _on_begin(self, conn: Connection) -> None:
        """Emit BEGIN, taking the write lock upfront for write transactions."""
        # A deferred transaction that later writes cannot wait for the lock
        # in WAL mode (SQLITE_BUSY_SNAPSHOT); IMMEDIATE waits in busy_timeout.
        if conn.get_execution_options().get(_WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    def _initialize(self) -> None:
        """Create the tables and the root entity ``"0"`` at ``/`` if missing."""
        with self._write() as conn:
            metadata.create_all(conn)
            conn.execute(sqlite_insert(entity_table).values(id=ROOT_ID).on_conflict_do_nothing())
            # UNIQUE(parent_id, name) does not catch a second root edge, as
            # NULLs never compare equal, so look for it first.
            root_edge = conn.execute(
                select(func.count())
                .select_from(edge_table)
                .where(edge_table.c.entity_id == ROOT_ID, edge_table.c.parent_id.is_(None))
            ).scalar_one()
            if not root_edge:
                conn.execute(edge_table.insert().values(entity_id=ROOT_ID, parent_id=None, name="/"))

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        """Yield a connection inside a read transaction (one snapshot)."""
        self._check_open()
        try:
            with self._engine.connect() as conn, conn.begin():
                yield conn
        except OperationalError as exc:
            raise HostError(f"link graph {self.path}: {exc.orig}") from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """Yield a connection inside a write transaction, committed on success."""
        self._check_open()
        try:
            with self._write_lock, self._engine.connect() as conn:
                conn.execution_options(**{_WRITE_OPTION: True})
                try:
                    with conn.begin():
                        yield conn
                finally:
                    self._generation += 1  # after the commit (or the rollback), under the write lock
        except OperationalError as exc:
            raise HostError(f"link graph {self.path}: {exc.orig}") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(f"link graph {self.path} is closed")

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for diagnostics (``engine-admin``) and tests."""
        return self._engine

    # -- queries shared by the public methods --------------------------------

    def _resolve(self, conn: Connection, path: str) -> str | None:
        """Return the id at a normalised path, or ``None`` if a component is missing."""
        entity_id: str | None = ROOT_ID
        for name in _parts(path):
            entity_id = conn.execute(
                select(edge_table.c.entity_id).where(edge_table.c.parent_id == entity_id, edge_table.c.name == name)
            ).scalar_one_or_none()
            if entity_id is None:
                return None
        return entity_id

    def _children(self, conn: Connection, start: Entity, depth: int) -> builtins.list[WalkMeta]:
        """Walk down from ``start``, depth first, children in name order.

        Links can form cycles (``/a/b`` -> B and ``/b/a`` -> A); an edge back
        to an entity already on the current path is reported but not followed,
        so an unlimited walk always ends.
        """
        adjacency = self._adjacency(conn, start.id, depth)
        out: builtins.list[WalkMeta] = []
        # Explicit stack instead of recursion: a long link chain must not hit
        # Python's recursion limit.
        stack = [(start, iter(adjacency.get(start.id, ())), depth, frozenset({start.id}))]
        while stack:
            parent, pending, left, ancestors = stack[-1]
            step = next(pending, None)
            if step is None:
                stack.pop()
                continue
            name, child_id = step
            full_path = _join(parent.path, name)
            child = Entity(child_id, full_path)
            out.append(WalkMeta(parent, child, full_path, Edge(child_id, parent.id, name)))
            if left != 0 and child_id not in ancestors:
                stack.append(
                    (
                        child,
                        iter(adjacency.get(child_id, ())),
                        left - 1 if left > 0 else -1,
                        ancestors | {child_id},
                    )
                )
        return out

    def _adjacency(self, conn: Connection, start_id: str, depth: int) -> dict[str, list[tuple[str, str]]]:
        """Load ``parent id -> [(name, child id)]`` for the walk, one query per level."""
        adjacency: dict[str, list[tuple[str, str]]] = {}
        seen = {start_id}
        frontier = [start_id]
        level = 0
        while frontier and (depth == -1 or level <= depth):
            discovered: builtins.list[str] = []
            for chunk in _chunks(frontier):
                rows = conn.execute(
                    select(edge_table.c.parent_id, edge_table.c.name, edge_table.c.entity_id)
                    .where(edge_table.c.parent_id.in_(chunk))
                    .order_by(edge_table.c.parent_id, edge_table.c.name)
                )
                for parent_id, name, child_id in rows:
                    adjacency.setdefault(parent_id, []).append((name, child_id))
                    if child_id not in seen:
                        seen.add(child_id)
                        discovered.append(child_id)
            frontier = discovered
            level += 1
        return adjacency

    def _canonical_path(self, conn: Connection, entity_id: str) -> str | None:
        """Return the shortest path to an entity (ties: alphabetically first).

        Searches upward from the entity, one query per level; ``None`` if no
        chain of edges reaches the root.
        """
        if entity_id == ROOT_ID:
            return "/"
        # Best known names from each reached entity down to entity_id.
        suffixes: dict[str, tuple[str, ...]] = {entity_id: ()}
        frontier = [entity_id]
        while frontier:
            level: dict[str, tuple[str, ...]] = {}
            found: builtins.list[tuple[str, ...]] = []
            for chunk in _chunks(frontier):
                rows = conn.execute(
                    select(edge_table.c.entity_id, edge_table.c.parent_id, edge_table.c.name).where(
                        edge_table.c.entity_id.in_(chunk), edge_table.c.parent_id.is_not(None)
                    )
                )
                for child_id, parent_id, name in rows:
                    suffix = (name, *suffixes[child_id])
                    if parent_id == ROOT_ID:
                        found.append(suffix)
                    elif parent_id not in suffixes and (parent_id not in level or suffix < level[parent_id]):
                        level[parent_id] = suffix
            if found:
                return "/" + "/".join(min(found))
            suffixes.update(level)
            frontier = list(level)
        return None

    def _ref_paths(self, conn: Connection, entity_id: str) -> dict[str, Entity]:
        rows = conn.execute(
            select(edge_table.c.parent_id, edge_table.c.name).where(edge_table.c.entity_id == entity_id)
        )
        parent_paths: dict[str, str | None] = {}
        out: dict[str, Entity] = {}
        for parent_id, name in rows:
            if parent_id is None:
                out["/"] = Entity(entity_id, "/")
                continue
            if parent_id not in parent_paths:
                parent_paths[parent_id] = self._canonical_path(conn, parent_id)
            parent_path = parent_paths[parent_id]
            if parent_path is None:
                # The parent lost its own name (delete() keeps entities), so
                # this edge has no path left; refs() still counts it.
                continue
            full_path = _join(parent_path, name)
            out[full_path] = Entity(entity_id, full_path)
        return dict(sorted(out.items()))

    # -- public API ----------------------------------------------------------

    def set(self, path: str, entity_id: str) -> Entity:
        """Give an entity a name: create the entity if needed and the edge at ``path``.

        ``set("/web", id)`` names a container; ``set("/web/db", db_id)`` links
        ``db`` into ``web`` under the alias ``db``.

        :param path: the full path of the new edge; its parent must exist.
        :param entity_id: the id the path will lead to.
        :returns: the entity, with ``path`` set to the normalised path.
        :raises InvalidParameter: for the root path, an empty id, the root
            id, or an entity linked under itself.
        :raises NotFound: if the parent path does not exist.
        :raises Conflict: if the parent already has a child with that name.
        """
        path = normalize_path(path)
        _check_id(entity_id)
        if path == "/":
            raise InvalidParameter("cannot set the root path /")
        if entity_id == ROOT_ID:
            raise InvalidParameter(f"cannot give the root entity {ROOT_ID} another name")
        parent_path, name = _split(path)
        try:
            with self._write() as conn:
                parent_id = self._resolve(conn, parent_path)
                if parent_id is None:
                    raise NotFound(f"cannot set {path}: parent {parent_path} does not exist")
                if parent_id == entity_id:
                    raise InvalidParameter(f"cannot set {path}: an entity cannot be its own child")
                conn.execute(sqlite_insert(entity_table).values(id=entity_id).on_conflict_do_nothing())
                conn.execute(edge_table.insert().values(entity_id=entity_id, parent_id=parent_id, name=name))
        except IntegrityError as exc:
            raise Conflict(f"name {path} is already in use") from exc
        LOG.debug("link graph: set %s -> %s", path, entity_id)
        return Entity(entity_id, path)

    def get(self, path: str) -> Entity | None:
        """Return the entity at a path, or ``None`` if there is none.

        :param path: a full path such as ``/web`` or ``/web/db``.
        :raises InvalidParameter: if the path is malformed.
        """
        path = normalize_path(path)
        with self._read() as conn:
            entity_id = self._resolve(conn, path)
        return None if entity_id is None else Entity(entity_id, path)

    def exists(self, path: str) -> bool:
        """Return whether a path leads to an entity.

        :raises InvalidParameter: if the path is malformed.
        """
        return self.get(path) is not None

    def list(self, path: str, depth: int = -1) -> dict[str, Entity]:
        """Return every entity below a path, keyed by full path.

        :param path: where to start; a missing path gives an empty dict.
        :param depth: ``0`` for direct children only, ``n`` for ``n`` more
            levels, ``-1`` for no limit.
        :raises InvalidParameter: if the path or depth is malformed.
        """
        path = normalize_path(path)
        _check_depth(depth)
        with self._read() as conn:
            start_id = self._resolve(conn, path)
            if start_id is None:
                return {}
            return {meta.full_path: meta.entity for meta in self._children(conn, Entity(start_id, path), depth)}

    def children(self, path: str, depth: int = -1) -> builtins.list[WalkMeta]:
        """Return the walk below a path, depth first, children in name order.

        :param path: where to start.
        :param depth: as for :meth:`list`.
        :raises NotFound: if the path does not exist.
        :raises InvalidParameter: if the path or depth is malformed.
        """
        path = normalize_path(path)
        _check_depth(depth)
        with self._read() as conn:
            start_id = self._resolve(conn, path)
            if start_id is None:
                raise NotFound(f"no such path in the link graph: {path}")
            return self._children(conn, Entity(start_id, path), depth)

    def walk(self, path: str, fn: Callable[[str, Entity], object], depth: int = -1) -> None:
        """Call ``fn(full_path, entity)`` for each entity below a path.

        The walk is read in one snapshot first and ``fn`` runs outside any
        transaction, so it may call back into the graph, even to write. An
        exception from ``fn`` stops the walk and propagates.

        :param path: where to start.
        :param fn: called once per :meth:`children` step, in that order.
        :param depth: as for :meth:`list`.
        :raises NotFound: if the path does not exist.
        """
        for meta in self.children(path, depth):
            fn(meta.full_path, meta.entity)

    def parents(self, path: str) -> builtins.list[str]:
        """Return the names of the entities that have an edge to the entity at ``path``.

        For a container named ``/db`` and linked as ``/web/db`` this is
        ``["/", "/web"]``: the root (its name) and ``/web`` (the link). Each
        parent is given by its shortest path. The seed returned parent ids;
        ``get(name).id`` gives those.

        :raises NotFound: if the path does not exist.
        :raises InvalidParameter: if the path is malformed.
        """
        path = normalize_path(path)
        with self._read() as conn:
            entity_id = self._resolve(conn, path)
            if entity_id is None:
                raise NotFound(f"no such path in the link graph: {path}")
            ref_paths = self._ref_paths(conn, entity_id)
        names = {_split(ref)[0] for ref in ref_paths if ref != "/"}
        return sorted(names)

    def refs(self, entity_id: str) -> int:
        """Return how many edges lead to an entity (its names plus its links)."""
        with self._read() as conn:
            return conn.execute(
                select(func.count()).select_from(edge_table).where(edge_table.c.entity_id == entity_id)
            ).scalar_one()

    def ref_paths(self, entity_id: str) -> dict[str, Entity]:
        """Return one path per edge leading to an entity, keyed by that path.

        Each edge's path is its parent's shortest path plus the edge name, so
        a container named ``/db`` and linked as ``/web/db`` gives both. An
        edge whose parent no longer has any path is left out.
        """
        with self._read() as conn:
            return self._ref_paths(conn, entity_id)

    def all_ref_paths(self) -> dict[str, builtins.list[str]]:
        """Every entity's paths at once (one query): ``docker ps`` lists every
        container's names, and a query per container was most of its time.

        Paths are built like :meth:`ref_paths`: an edge's path is its parent's
        shortest path plus the edge's name. With ``sole_writer`` the answer is
        kept until this instance next writes, and shared: do not change it.
        """
        generation = self._generation
        kept = self._all_paths
        if kept is not None and kept[0] == generation:
            return kept[1]
        with self._read() as conn:
            rows = conn.execute(select(edge_table.c.entity_id, edge_table.c.parent_id, edge_table.c.name)).all()
        by_parent: dict[str | None, list[tuple[str, str]]] = {}
        for entity_id, parent_id, name in rows:
            by_parent.setdefault(parent_id, []).append((entity_id, name))
        shortest: dict[str, str] = {ROOT_ID: "/"}
        queue = [ROOT_ID]
        while queue:  # breadth first: the first path found to an entity is its shortest
            parent = queue.pop(0)
            base = shortest[parent].rstrip("/")
            for entity_id, name in by_parent.get(parent, []):
                if entity_id not in shortest:
                    shortest[entity_id] = f"{base}/{name}"
                    queue.append(entity_id)
        out: dict[str, list[str]] = {}
        for entity_id, parent_id, name in rows:
            if parent_id in shortest and entity_id != ROOT_ID:
                out.setdefault(entity_id, []).append(f"{shortest[parent_id].rstrip('/')}/{name}")
        if self._sole_writer:
            # Tagged with the generation seen before the read: a write that committed before
            # the read's snapshot, or after it, has changed the generation since (a write
            # counts only after its commit), and this answer is never used.
            self._all_paths = (generation, out)
        return out

    def delete(self, path: str) -> None:
        """Remove the edge at a path; the entity itself stays (see :meth:`purge`).

        :raises InvalidParameter: for ``/`` or a malformed path.
        :raises NotFound: if there is no edge at the path.
        """
        path = normalize_path(path)
        if path == "/":
            raise InvalidParameter("cannot delete the root entity")
        parent_path, name = _split(path)
        with self._write() as conn:
            parent_id = self._resolve(conn, parent_path)
            removed = 0
            if parent_id is not None:
                removed = conn.execute(
                    sql_delete(edge_table).where(edge_table.c.parent_id == parent_id, edge_table.c.name == name)
                ).rowcount
            if not removed:
                raise NotFound(f"no such path in the link graph: {path}")
        LOG.debug("link graph: deleted %s", path)

    def purge(self, entity_id: str) -> int:
        """Remove an entity with every edge to it (its names) and from it (its links).

        :returns: the number of edges removed; ``0`` for an unknown id.
        :raises InvalidParameter: for the root entity.
        """
        _check_id(entity_id)
        if entity_id == ROOT_ID:
            raise InvalidParameter("cannot purge the root entity")
        with self._write() as conn:
            removed = conn.execute(
                sql_delete(edge_table).where(
                    or_(edge_table.c.entity_id == entity_id, edge_table.c.parent_id == entity_id)
                )
            ).rowcount
            conn.execute(sql_delete(entity_table).where(entity_table.c.id == entity_id))
        LOG.debug("link graph: purged %s (%d edges)", entity_id, removed)
        return removed

    def rename(self, current_path: str, new_path: str) -> None:
        """Rename an edge; only its last name may change, as in the seed.

        :raises InvalidParameter: if the parents differ, either path is ``/``
            or a path is malformed.
        :raises NotFound: if nothing is at ``current_path``.
        :raises Conflict: if ``new_path`` is already in use.
        """
        current_path = normalize_path(current_path)
        new_path = normalize_path(new_path)
        if "/" in (current_path, new_path):
            raise InvalidParameter("cannot rename the root entity")
        parent_path, name = _split(current_path)
        new_parent_path, new_name = _split(new_path)
        if parent_path != new_parent_path:
            raise InvalidParameter(f"cannot rename when parent paths do not match: {parent_path} != {new_parent_path}")
        try:
            with self._write() as conn:
                parent_id = self._resolve(conn, parent_path)
                renamed = 0
                if parent_id is not None:
                    renamed = conn.execute(
                        update(edge_table)
                        .where(edge_table.c.parent_id == parent_id, edge_table.c.name == name)
                        .values(name=new_name)
                    ).rowcount
                if not renamed:
                    raise NotFound(f"no such path in the link graph: {current_path}")
        except IntegrityError as exc:
            raise Conflict(f"name {new_path} is already in use") from exc
        LOG.debug("link graph: renamed %s to %s", current_path, new_path)

    def close(self) -> None:
        """Close every connection; later calls raise :class:`~engine.errors.Unavailable`.

        Closing twice is harmless.
        """
        if self._closed:
            return
        # Take the write lock so that no write is cut off halfway.
        with self._write_lock:
            self._closed = True
            self._engine.dispose()
        LOG.debug("link graph %s closed", self.path)

    def __enter__(self) -> LinkGraph:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LinkGraph({self.path!r})"
