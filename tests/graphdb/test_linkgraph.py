"""Tests for :mod:`engine.graphdb.linkgraph` against real SQLite files."""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from engine.errors import Conflict, InvalidParameter, NotFound, Unavailable
from engine.graphdb import (
    ROOT_ID,
    Edge,
    Entity,
    LinkGraph,
    normalize_path,
    paths_by_depth,
    validate_name,
)

# Docker 1.2's own DDL (pkg/graphdb/graphdb.go), to check we open its files.
DOCKER_SCHEMA = """
CREATE TABLE IF NOT EXISTS entity (
    id text NOT NULL PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS edge (
    "entity_id" text NOT NULL,
    "parent_id" text NULL,
    "name" text NOT NULL,
    CONSTRAINT "parent_fk" FOREIGN KEY ("parent_id") REFERENCES "entity" ("id"),
    CONSTRAINT "entity_fk" FOREIGN KEY ("entity_id") REFERENCES "entity" ("id")
);
CREATE UNIQUE INDEX IF NOT EXISTS "name_parent_ix" ON "edge" (parent_id, name);
"""


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The path of a ``linkgraph.db`` in the test's temporary directory."""
    return tmp_path / "linkgraph.db"


@pytest.fixture
def graph(db_path: Path) -> Iterator[LinkGraph]:
    """A fresh :class:`LinkGraph` on ``db_path``; closed after the test."""
    g = LinkGraph(db_path)
    try:
        yield g
    finally:
        g.close()


@pytest.fixture
def linked(graph: LinkGraph) -> LinkGraph:
    """``graph`` holding ``/web``, ``/db``, ``/cache`` and the links
    ``/web/db`` and ``/web/cache`` (``docker run --link db:db --link cache:cache``)."""
    graph.set("/web", "W")
    graph.set("/db", "D")
    graph.set("/cache", "C")
    graph.set("/web/db", "D")
    graph.set("/web/cache", "C")
    return graph


def edge_rows(db_path: Path) -> list[tuple[str, str | None, str]]:
    with sqlite3.connect(db_path) as raw:
        return sorted(
            raw.execute("SELECT entity_id, parent_id, name FROM edge").fetchall(),
            key=lambda row: (row[0], row[1] or "", row[2]),
        )


# -- opening, schema and connection settings ---------------------------------


def test_first_open_creates_root(graph: LinkGraph, db_path: Path) -> None:
    assert db_path.exists()
    assert graph.get("/") == Entity(ROOT_ID, "/")
    assert graph.exists("/")
    assert edge_rows(db_path) == [(ROOT_ID, None, "/")]
    assert graph.list("/", -1) == {}


def test_reopen_keeps_data_and_one_root(db_path: Path) -> None:
    with LinkGraph(db_path) as first:
        first.set("/web", "W")
        first.set("/db", "D")
        first.set("/web/db", "D")
    with LinkGraph(db_path) as second:
        assert second.get("/web/db") == Entity("D", "/web/db")
        assert set(second.list("/", -1)) == {"/web", "/db", "/web/db"}
    roots = [row for row in edge_rows(db_path) if row[0] == ROOT_ID]
    assert roots == [(ROOT_ID, None, "/")]


def test_wal_mode_is_on(graph: LinkGraph, db_path: Path) -> None:
    graph.set("/web", "W")
    with graph.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    # journal_mode=WAL is persistent: a plain sqlite3 connection sees it too.
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert (db_path.parent / (db_path.name + "-wal")).exists()


def test_foreign_keys_on_for_every_pooled_connection(graph: LinkGraph) -> None:
    # Hold several connections at once so the pool has to open new ones.
    conns = [graph.engine.connect() for _ in range(4)]
    try:
        for conn in conns:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        for conn in conns:
            conn.close()


def test_foreign_keys_are_enforced(graph: LinkGraph) -> None:
    with pytest.raises(IntegrityError), graph.engine.connect() as conn, conn.begin():
        conn.exec_driver_sql("INSERT INTO edge (entity_id, parent_id, name) VALUES ('ghost', '0', 'ghost')")
    assert not graph.exists("/ghost")


def test_opens_a_docker_created_database(db_path: Path) -> None:
    with sqlite3.connect(db_path) as raw:
        raw.executescript(DOCKER_SCHEMA)
        raw.execute("INSERT INTO entity (id) VALUES ('0'), ('W'), ('D')")
        raw.execute("INSERT INTO edge (entity_id, name) VALUES ('0', '/')")
        raw.executemany(
            "INSERT INTO edge (entity_id, parent_id, name) VALUES (?, ?, ?)",
            [("W", "0", "web"), ("D", "0", "db"), ("D", "W", "db")],
        )
    with LinkGraph(db_path) as graph:
        assert graph.get("/web/db") == Entity("D", "/web/db")
        assert graph.refs("D") == 2
        with pytest.raises(Conflict):
            graph.set("/web/db", "X")
    roots = [row for row in edge_rows(db_path) if row[0] == ROOT_ID]
    assert roots == [(ROOT_ID, None, "/")]


def test_closed_graph_refuses_work(db_path: Path) -> None:
    graph = LinkGraph(db_path)
    graph.close()
    graph.close()
    with pytest.raises(Unavailable):
        graph.get("/web")
    with pytest.raises(Unavailable):
        graph.set("/web", "W")


# -- paths and names -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [("/", "/"), ("//", "/"), ("/web/", "/web"), ("//web//db/", "/web/db"), ("/a.b/c-d", "/a.b/c-d")],
)
def test_normalize_path(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


@pytest.mark.parametrize("bad", ["", "web", "web/db", "/web/../db", "/./web", "/we\x00b", None, 3])
def test_normalize_path_rejects(bad: object) -> None:
    with pytest.raises(InvalidParameter):
        normalize_path(bad)  # type: ignore[arg-type]


def test_methods_normalise_and_reject_paths(linked: LinkGraph) -> None:
    assert linked.get("//web//db/") == Entity("D", "/web/db")
    assert linked.exists("/web/")
    with pytest.raises(InvalidParameter):
        linked.get("web")
    with pytest.raises(InvalidParameter):
        linked.set("/web/../x", "X")
    with pytest.raises(InvalidParameter):
        linked.exists("")


@pytest.mark.parametrize("name", ["web", "/web", "a1", "web_1.prod-2", "/0x", "Ab"])
def test_validate_name_accepts(name: str) -> None:
    assert validate_name(name) == "/" + name.lstrip("/")


@pytest.mark.parametrize(
    "name", ["", "/", "a", "/a", "_web", "-web", ".web", "we b", "web/db", "wéb", "web\n", "//web"]
)
def test_validate_name_rejects_with_dockers_message(name: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        validate_name(name)
    assert str(info.value) == (f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")


def test_paths_by_depth() -> None:
    paths = ["/web/db/x", "/web", "/db", "/web/db", "/"]
    assert paths_by_depth(paths) == ["/", "/db", "/web", "/web/db", "/web/db/x"]


# -- set / get / exists -----------------------------------------------------------


def test_set_and_get(graph: LinkGraph) -> None:
    assert graph.set("/web", "W") == Entity("W", "/web")
    assert graph.get("/web") == Entity("W", "/web")
    assert graph.get("/missing") is None
    assert graph.get("/web/missing") is None
    assert graph.exists("/web")
    assert not graph.exists("/missing")


def test_set_reuses_an_existing_entity(graph: LinkGraph, db_path: Path) -> None:
    graph.set("/web", "W")
    graph.set("/db", "D")
    graph.set("/web/db", "D")
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT id FROM entity ORDER BY id").fetchall() == [("0",), ("D",), ("W",)]


def test_set_duplicate_name_is_conflict(linked: LinkGraph) -> None:
    with pytest.raises(Conflict):
        linked.set("/web", "OTHER")
    with pytest.raises(Conflict):
        linked.set("/web/db", "D")
    assert linked.get("/web") == Entity("W", "/web")
    # The failed transaction left no stray entity behind.
    assert linked.refs("OTHER") == 0
    assert linked.purge("OTHER") == 0


def test_same_name_under_different_parents(linked: LinkGraph) -> None:
    linked.set("/api", "A")
    linked.set("/api/db", "D")
    assert linked.get("/api/db") == Entity("D", "/api/db")
    assert linked.get("/web/db") == Entity("D", "/web/db")


def test_set_needs_an_existing_parent(graph: LinkGraph) -> None:
    with pytest.raises(NotFound):
        graph.set("/web/db", "D")
    assert not graph.exists("/web")


def test_set_refuses_root_self_and_bad_ids(linked: LinkGraph) -> None:
    with pytest.raises(InvalidParameter):
        linked.set("/", "X")
    with pytest.raises(InvalidParameter):
        linked.set("/web/me", "W")
    with pytest.raises(InvalidParameter):
        linked.set("/x", "")
    with pytest.raises(InvalidParameter):
        linked.set("/x", ROOT_ID)


def test_multi_level_paths(linked: LinkGraph) -> None:
    linked.set("/db/store", "S")
    assert linked.get("/web/db/store") == Entity("S", "/web/db/store")


# -- list / children / walk ------------------------------------------------------


def test_list_depths(linked: LinkGraph) -> None:
    linked.set("/db/store", "S")
    assert linked.list("/", 0) == {
        "/web": Entity("W", "/web"),
        "/db": Entity("D", "/db"),
        "/cache": Entity("C", "/cache"),
    }
    assert set(linked.list("/", 1)) == {"/web", "/db", "/cache", "/web/db", "/web/cache", "/db/store"}
    assert set(linked.list("/", -1)) == {
        "/web",
        "/db",
        "/cache",
        "/web/db",
        "/web/cache",
        "/db/store",
        "/web/db/store",
    }
    assert linked.list("/web", 0) == {"/web/db": Entity("D", "/web/db"), "/web/cache": Entity("C", "/web/cache")}
    assert linked.list("/missing", -1) == {}
    with pytest.raises(InvalidParameter):
        linked.list("/", -2)


def test_children_order_and_meta(linked: LinkGraph) -> None:
    steps = linked.children("/web", 0)
    assert [step.full_path for step in steps] == ["/web/cache", "/web/db"]
    first = steps[0]
    assert first.parent == Entity("W", "/web")
    assert first.entity == Entity("C", "/web/cache")
    assert first.edge == Edge("C", "W", "cache")
    # Depth first: each container is followed by its links.
    assert [step.full_path for step in linked.children("/", -1)] == [
        "/cache",
        "/db",
        "/web",
        "/web/cache",
        "/web/db",
    ]
    with pytest.raises(NotFound):
        linked.children("/missing", 0)


def test_walk_survives_link_cycles(graph: LinkGraph) -> None:
    graph.set("/a", "A")
    graph.set("/b", "B")
    graph.set("/a/b", "B")
    graph.set("/b/a", "A")
    # Each cycle edge is reported once, then not followed again.
    assert set(graph.list("/", -1)) == {"/a", "/b", "/a/b", "/a/b/a", "/b/a", "/b/a/b"}
    assert set(graph.list("/a", -1)) == {"/a/b", "/a/b/a"}


def test_walk_calls_back_in_order(linked: LinkGraph) -> None:
    seen: list[tuple[str, str]] = []
    linked.walk("/", lambda path, entity: seen.append((path, entity.id)), 0)
    assert seen == [("/cache", "C"), ("/db", "D"), ("/web", "W")]


def test_walk_callback_may_use_the_graph(linked: LinkGraph) -> None:
    # The daemon looks up and even edits the graph from walk callbacks.
    def callback(path: str, entity: Entity) -> None:
        assert linked.get(path) == entity
        linked.set(f"/seen-{entity.id}", entity.id)

    linked.walk("/web", callback, 0)
    assert linked.exists("/seen-D") and linked.exists("/seen-C")


def test_walk_stops_on_callback_error(linked: LinkGraph) -> None:
    calls: list[str] = []

    def callback(path: str, entity: Entity) -> None:
        calls.append(path)
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        linked.walk("/", callback, -1)
    assert calls == ["/cache"]
    with pytest.raises(NotFound):
        linked.walk("/missing", callback, 0)


# -- parents / refs / ref_paths ----------------------------------------------------


def test_parents(linked: LinkGraph) -> None:
    assert linked.parents("/db") == ["/", "/web"]
    assert linked.parents("/web/db") == ["/", "/web"]
    assert linked.parents("/web") == ["/"]
    assert linked.parents("/") == []
    with pytest.raises(NotFound):
        linked.parents("/missing")


def test_refs_and_ref_paths(linked: LinkGraph) -> None:
    assert linked.refs("D") == 2
    assert linked.refs("W") == 1
    assert linked.refs("nobody") == 0
    assert linked.ref_paths("D") == {"/db": Entity("D", "/db"), "/web/db": Entity("D", "/web/db")}
    assert linked.ref_paths("nobody") == {}
    assert linked.ref_paths(ROOT_ID) == {"/": Entity(ROOT_ID, "/")}


def test_ref_paths_use_the_shortest_parent_path(linked: LinkGraph) -> None:
    linked.set("/db/store", "S")
    linked.set("/web/store", "S")
    # D is reachable as /db and /web/db; its child edge is reported under /db.
    assert set(linked.ref_paths("S")) == {"/db/store", "/web/store"}


def test_ref_paths_skip_edges_without_a_path(linked: LinkGraph) -> None:
    # delete() keeps the entity, so W's link to D stays but has no path.
    linked.delete("/web")
    assert linked.refs("D") == 2
    assert set(linked.ref_paths("D")) == {"/db"}
    assert linked.parents("/db") == ["/"]


# -- delete / purge / rename -------------------------------------------------------


def test_delete_removes_one_edge(linked: LinkGraph) -> None:
    linked.delete("/web/db")
    assert not linked.exists("/web/db")
    assert linked.get("/db") == Entity("D", "/db")
    assert linked.refs("D") == 1
    with pytest.raises(NotFound):
        linked.delete("/web/db")
    with pytest.raises(NotFound):
        linked.delete("/missing/db")


def test_delete_refuses_root(linked: LinkGraph) -> None:
    with pytest.raises(InvalidParameter):
        linked.delete("/")
    with pytest.raises(InvalidParameter):
        linked.delete("//")
    assert linked.exists("/")


def test_purge_removes_entity_and_every_edge(linked: LinkGraph, db_path: Path) -> None:
    # W has one edge to it (/web) and two from it (its links).
    assert linked.purge("W") == 3
    assert linked.refs("W") == 0
    assert set(linked.list("/", -1)) == {"/db", "/cache"}
    assert linked.purge("D") == 1
    assert linked.purge("D") == 0
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT id FROM entity ORDER BY id").fetchall() == [("0",), ("C",)]
    with pytest.raises(InvalidParameter):
        linked.purge(ROOT_ID)


def test_rename(linked: LinkGraph) -> None:
    linked.rename("/web", "/frontend")
    assert linked.get("/frontend") == Entity("W", "/frontend")
    assert not linked.exists("/web")
    # Links hang off the entity, so they follow the new name.
    assert linked.get("/frontend/db") == Entity("D", "/frontend/db")
    linked.rename("/frontend/db", "/frontend/database")
    assert linked.get("/frontend/database") == Entity("D", "/frontend/database")


def test_rename_errors(linked: LinkGraph) -> None:
    with pytest.raises(Conflict):
        linked.rename("/web", "/db")
    assert linked.get("/web") == Entity("W", "/web")
    with pytest.raises(InvalidParameter):
        linked.rename("/web/db", "/db2")
    with pytest.raises(InvalidParameter):
        linked.rename("/", "/root")
    with pytest.raises(NotFound):
        linked.rename("/missing", "/other")
    with pytest.raises(NotFound):
        linked.rename("/missing/db", "/missing/db2")


# -- concurrency -------------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_set_get_delete(graph: LinkGraph, db_path: Path) -> None:
    threads_count, rounds = 16, 40
    errors: list[BaseException] = []
    shared_wins: list[tuple[int, int]] = []
    start = threading.Barrier(threads_count)

    def worker(n: int) -> None:
        rng = random.Random(n)
        try:
            start.wait()
            for i in range(rounds):
                name = f"/t{n}-{i}"
                entity = graph.set(name, f"id-{n}-{i}")
                assert graph.get(name) == entity
                graph.set(f"{name}/peer", f"id-{rng.randrange(threads_count)}-0")
                assert graph.exists(f"{name}/peer")
                # Every thread races for the same shared names: one wins each.
                try:
                    graph.set(f"/shared-{i}", f"id-{n}-{i}")
                    shared_wins.append((n, i))
                except Conflict:
                    pass
                graph.list("/", 0)
                if i % 2:
                    graph.delete(f"{name}/peer")
                    graph.delete(name)
                    assert graph.get(name) is None
        except BaseException as exc:  # collected, so that every failure shows
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads_count)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in workers)
    assert errors == []

    assert sorted(i for _, i in shared_wins) == list(range(rounds))
    expected = {f"/t{n}-{i}" for n in range(threads_count) for i in range(rounds) if i % 2 == 0}
    expected |= {f"/shared-{i}" for i in range(rounds)}
    assert set(graph.list("/", 0)) == expected
    for n in range(threads_count):
        for i in range(0, rounds, 2):
            assert graph.exists(f"/t{n}-{i}/peer")
    for n, i in shared_wins:
        assert graph.get(f"/shared-{i}") == Entity(f"id-{n}-{i}", f"/shared-{i}")

    # The same state is on disk for a fresh connection.
    graph.close()
    with LinkGraph(db_path) as reopened:
        assert set(reopened.list("/", 0)) == expected


def test_two_graphs_on_one_file_write_concurrently(db_path: Path) -> None:
    # Two LinkGraph objects stand in for two processes: they share no lock,
    # so only BEGIN IMMEDIATE and the busy timeout keep their writers apart.
    first, second = LinkGraph(db_path), LinkGraph(db_path)
    errors: list[BaseException] = []

    def worker(graph: LinkGraph, n: int) -> None:
        try:
            for i in range(25):
                graph.set(f"/p{n}-{i}", f"id-{n}-{i}")
                graph.set(f"/p{n}-{i}/self-link", f"id-{n}-0" if i else "other")
        except BaseException as exc:  # collected, so that every failure shows
            errors.append(exc)

    try:
        workers = [threading.Thread(target=worker, args=(first if n % 2 else second, n)) for n in range(8)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(timeout=120)
        assert errors == []
        assert len(first.list("/", 0)) == 8 * 25
        assert second.refs("id-3-0") == 1 + 24
    finally:
        first.close()
        second.close()


def test_the_sole_writer_keeps_all_paths_until_it_writes(db_path: Path) -> None:
    sole = LinkGraph(db_path, sole_writer=True)
    other = LinkGraph(db_path)
    try:
        sole.set("/a", "1")
        first = sole.all_ref_paths()
        assert first == {"1": ["/a"]} and sole.all_ref_paths() is first
        for change, expected in (
            (lambda: sole.set("/b", "2"), {"1": ["/a"], "2": ["/b"]}),
            (lambda: sole.rename("/b", "/c"), {"1": ["/a"], "2": ["/c"]}),
            (lambda: sole.delete("/a"), {"2": ["/c"]}),
            (lambda: sole.purge("2"), {}),
        ):
            change()
            assert sole.all_ref_paths() == expected
        # A failed write changes nothing and is answered afresh all the same.
        sole.set("/x", "3")
        with pytest.raises(Conflict):
            sole.set("/x", "4")
        assert sole.all_ref_paths() == {"3": ["/x"]}
        # Without sole_writer every call reads: another instance's write is seen at once.
        other.set("/y", "5")
        assert other.all_ref_paths() == {"3": ["/x"], "5": ["/y"]}
        other.delete("/y")
        assert other.all_ref_paths() == {"3": ["/x"]}
    finally:
        sole.close()
        other.close()


def test_kept_paths_are_never_older_than_the_last_write_under_concurrency(db_path: Path) -> None:
    sole = LinkGraph(db_path, sole_writer=True)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(40):
                sole.set(f"/w{n}-{i}", f"{n}-{i}")
                if i % 2:
                    sole.delete(f"/w{n}-{i - 1}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(200):
                sole.all_ref_paths()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    threads += [threading.Thread(target=reader) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        fresh = LinkGraph(db_path)
        try:
            assert sole.all_ref_paths() == fresh.all_ref_paths()
            assert len(fresh.all_ref_paths()) == 3 * 20
        finally:
            fresh.close()
    finally:
        sole.close()
