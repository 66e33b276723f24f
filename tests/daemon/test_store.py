"""The container store over a real link graph (SQLite) in a temporary root:
name reservation, lookups, renames, counts and loading the records back."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from engine.daemon.container import Container
from engine.daemon.store import ContainerStore, new_container_id
from engine.errors import Conflict, InvalidParameter, NoSuchContainer, NotFound
from engine.graphdb import LinkGraph


@pytest.fixture
def linkgraph(tmp_path) -> Iterator[LinkGraph]:
    graph = LinkGraph(str(tmp_path / "linkgraph.db"))
    yield graph
    graph.close()


def record(store: ContainerStore, cid: str, name: str, **fields) -> Container:
    """A container record in the store: its directory, its file, its name."""
    c = Container(
        id=cid,
        name=store.reserve_name(name, cid),
        created=1.0,
        image_id=fields.pop("image_id", "sha256:" + "1" * 64),
        config={},
        host_config={},
        root=store.path(cid),
        **fields,
    )
    os.makedirs(c.root)
    c.to_disk()
    store.add(c)
    return c


def test_new_ids_skip_the_ids_the_store_has(linkgraph, tmp_path):
    generated = iter(["a" * 64, "a" * 64, "b" * 64])
    store = ContainerStore(str(tmp_path), linkgraph, new_id=generated.__next__)
    record(store, store.new_id(), "/x")
    assert store.new_id() == "b" * 64


def test_generated_ids_never_look_like_numbers():
    for _ in range(200):
        cid = new_container_id()
        assert len(cid) == 64 and not cid[:12].isdigit()


def test_a_given_name_is_reserved_or_refused_with_docker_s_words(linkgraph, tmp_path):
    store = ContainerStore(str(tmp_path), linkgraph)
    assert store.reserve_name("/web", "a" * 64) == "/web"
    with pytest.raises(Conflict) as exc:
        store.reserve_name("/web", "b" * 64)
    assert str(exc.value) == (
        f'Conflict. The container name "/web" is already in use by container "{"a" * 64}". '
        "You have to remove (or rename) that container to be able to reuse that name."
    )
    store.release_names("a" * 64)
    assert store.reserve_name("/web", "b" * 64) == "/web"


def test_random_names_retry_then_fall_back_to_the_short_id(linkgraph, tmp_path):
    asked: list[int] = []

    def names(attempt: int) -> str:
        asked.append(attempt)
        return "busy_name"

    store = ContainerStore(str(tmp_path), linkgraph, names=names)
    assert store.reserve_name("", "a" * 64) == "/busy_name"
    assert store.reserve_name("", "b" * 64) == "/bbbbbbbbbbbb"
    assert asked == [0, 0, 1, 2, 3, 4, 5]


def test_lookups(linkgraph, tmp_path):
    store = ContainerStore(str(tmp_path), linkgraph)
    web = record(store, "ab" + "1" * 62, "/web")
    db = record(store, "ac" + "2" * 62, "/db")
    assert store.get(web.id) is web
    assert store.get("web") is web and store.get("/web") is web
    assert store.get("ab") is web and store.get("ac2") is db
    with pytest.raises(InvalidParameter):
        store.get("a")  # ambiguous prefix
    for name in ("nothere", "", "/web/db"):
        with pytest.raises(NoSuchContainer):
            store.get(name)
    assert sorted(c.id for c in store.all()) == sorted([web.id, db.id])


def test_a_name_wins_over_an_id_prefix(linkgraph, tmp_path):
    store = ContainerStore(str(tmp_path), linkgraph)
    named_like_prefix = record(store, "1" * 64, "/abc")
    prefixed = record(store, "abc" + "0" * 61, "/other")
    assert store.get("abc") is named_like_prefix
    assert store.get("abc0") is prefixed


def test_discard(linkgraph, tmp_path):
    store = ContainerStore(str(tmp_path), linkgraph)
    c = record(store, "e" * 64, "/web")
    store.discard(c)
    store.discard(c)  # twice is harmless
    with pytest.raises(NoSuchContainer):
        store.get(c.id[:6])


def test_rename(linkgraph, tmp_path):
    store = ContainerStore(str(tmp_path), linkgraph)
    web = record(store, "a" * 64, "/web")
    record(store, "b" * 64, "/db")
    assert store.rename(web, "/site") == "/web"
    assert store.get("site") is web and Container.from_disk(web.root).name == "/site"
    with pytest.raises(Conflict, match='The container name "/db" is already in use by container "b{64}"'):
        store.rename(web, "/db")
    with pytest.raises(InvalidParameter, match="same name as its current name"):
        store.rename(web, "/site")
    assert web.name == "/site"


def test_remove_link(linkgraph, tmp_path):
    store = ContainerStore(str(tmp_path), linkgraph)
    db = record(store, "b" * 64, "/db")
    db.host_config["Links"] = ["/cache:/db/alias", "/other:/db/other"]
    cache = record(store, "c" * 64, "/cache")
    linkgraph.set("/db/alias", cache.id)
    assert store.get("db/alias") is cache  # a link's path names the linked container
    assert store.remove_link("db/alias") == (db, "alias")
    assert linkgraph.get("/db/alias") is None and store.get("db") is db and store.get("cache") is cache
    assert db.host_config["Links"] == ["/other:/db/other"]
    assert Container.from_disk(db.root).host_config["Links"] == ["/other:/db/other"]
    with pytest.raises(InvalidParameter, match="cannot remove the default link name"):
        store.remove_link("db")
    with pytest.raises(NotFound):
        store.remove_link("db/alias")


def test_counts_and_users(linkgraph, tmp_path):
    store = ContainerStore(str(tmp_path), linkgraph)
    running = record(store, "a" * 64, "/a", image_id="sha256:img", top_layer="sha256:top")
    running.state.running = True
    paused = record(store, "b" * 64, "/b", mounts=[{"Name": "vol", "Destination": "/v"}])
    paused.state.running = paused.state.paused = True
    record(store, "c" * 64, "/c", image_id="sha256:img")
    assert store.counts() == {"total": 3, "running": 1, "paused": 1, "stopped": 1}
    assert sorted(store.image_users("sha256:img")) == [("a" * 64, True), ("c" * 64, False)]
    assert store.layer_tops() == ["sha256:top"]
    assert store.volume_users("vol") == ["b" * 64] and store.volume_users("other") == []


def test_load_reads_every_record_back(linkgraph, tmp_path):
    store = ContainerStore(str(tmp_path), linkgraph)
    web = record(store, "a" * 64, "/web")
    web.state.exit_code = 3
    web.to_disk()
    record(store, "b" * 64, "/db")
    os.makedirs(store.path("f" * 64))  # a create cut short: no record, a leftover
    linkgraph.purge("b" * 64)  # the name went meanwhile: it is given back

    again = ContainerStore(str(tmp_path), linkgraph)
    loaded = {c.id: c for c in again.load()}
    assert sorted(loaded) == ["a" * 64, "b" * 64]
    assert loaded["a" * 64].state.exit_code == 3
    assert again.get("db").id == "b" * 64 and again.get("web").id == "a" * 64


def test_dispose_takes_the_directory_out_of_sight_at_once_and_deletes_it_after(linkgraph, tmp_path):
    store = ContainerStore(str(tmp_path), linkgraph)
    c = record(store, "a" * 64, "/web")
    os.makedirs(os.path.join(c.root, "mounts", "shm"))
    store.dispose(c.id)
    assert not os.path.exists(c.root)
    assert all(name.startswith(".rm-" + c.id) for name in os.listdir(store.dir))
    assert store.wait_disposed(30)
    assert os.listdir(store.dir) == []


def test_load_sweeps_what_a_crash_left_on_its_way_out(linkgraph, tmp_path):
    store = ContainerStore(str(tmp_path), linkgraph)
    record(store, "a" * 64, "/web")
    os.makedirs(os.path.join(store.dir, ".rm-" + "b" * 64 + "-0000abcd", "deep", "er"))
    again = ContainerStore(str(tmp_path), linkgraph)
    assert [c.id for c in again.load()] == ["a" * 64]
    assert again.leftovers == []  # not a create cut short: nothing to undo but the deletion
    assert again.wait_disposed(30)
    assert os.listdir(store.dir) == ["a" * 64]


def test_load_keeps_a_record_whose_name_another_took(linkgraph, tmp_path):
    store = ContainerStore(str(tmp_path), linkgraph)
    record(store, "a" * 64, "/web")
    other = record(store, "b" * 64, "/db")
    other.name = "/web"  # a record whose name another record has (written by hand)
    other.to_disk()
    again = ContainerStore(str(tmp_path), linkgraph)
    loaded = {c.id: c for c in again.load()}
    assert sorted(loaded) == ["a" * 64, "b" * 64]
    assert again.get("web").id == "a" * 64 and again.get("b" * 5) is loaded["b" * 64]
    assert linkgraph.get("/db") is None


def test_load_reconciles_the_names_a_crash_left(linkgraph, tmp_path):
    store = ContainerStore(str(tmp_path), linkgraph)
    record(store, "a" * 64, "/web")
    renamed = record(store, "b" * 64, "/db")
    linkgraph.rename("/db", "/db2")  # a rename cut short: the record still says /db
    linkgraph.set("/gone", "c" * 64)  # a create cut short before its directory was made
    linkgraph.set("/web/alias", "c" * 64)
    again = ContainerStore(str(tmp_path), linkgraph)
    again.load()
    assert linkgraph.all_ref_paths() == {"a" * 64: ["/web"], "b" * 64: ["/db"]}
    assert again.get("db").id == renamed.id
    assert store.reserve_name("/gone", "d" * 64) == "/gone"
    assert store.reserve_name("/db2", "e" * 64) == "/db2"


def test_load_sets_aside_directories_without_a_record(linkgraph, tmp_path):
    store = ContainerStore(str(tmp_path), linkgraph)
    record(store, "a" * 64, "/web")
    os.makedirs(store.path("f" * 64))  # a create cut short before its record
    half = record(store, "e" * 64, "/half")
    os.unlink(os.path.join(half.root, "config.v2.json"))  # a remove cut short after its record
    os.makedirs(store.path("not-a-container"))
    again = ContainerStore(str(tmp_path), linkgraph)
    assert [c.id for c in again.load()] == ["a" * 64]
    assert again.leftovers == ["e" * 64, "f" * 64]
    assert linkgraph.get("/half").id == "e" * 64  # released with the rest of it by the life cycle


def test_load_of_a_root_without_containers(linkgraph, tmp_path):
    assert ContainerStore(str(tmp_path / "empty"), linkgraph).load() == []


def test_many_random_names_stay_distinct(linkgraph, tmp_path):
    store = ContainerStore(str(tmp_path), linkgraph)
    names = {store.reserve_name("", f"{n:064x}") for n in itertools.islice(itertools.count(1), 40)}
    assert len(names) == 40
