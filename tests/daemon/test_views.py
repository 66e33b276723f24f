"""``GET /containers/json`` entries as the daemon's views build them (real stores, see fakes.py)."""

from __future__ import annotations

from engine.daemon import views
from tests.daemon.fakes import IMAGE


def listed(rig) -> dict[str, dict]:
    return {doc["Id"]: doc for doc in views.list_containers(rig.daemon, all_=True)}


def test_image_is_the_name_while_it_names_the_containers_image_else_the_id(rig):
    image_id = rig.daemon.graph.lookup(IMAGE).id
    by_name = rig.create("by-name")
    by_id = rig.create("by-id", config={"Image": image_id})
    by_prefix = rig.create("by-prefix", config={"Image": image_id.removeprefix("sha256:")[:12]})
    docs = listed(rig)
    assert docs[by_name.id]["Image"] == IMAGE
    assert docs[by_id.id]["Image"] == image_id
    assert docs[by_prefix.id]["Image"] == image_id.removeprefix("sha256:")[:12]
    # The image goes (rmi -f; the containers keep their layers): its name and ID prefix no
    # longer name it.
    rig.daemon.graph.delete(IMAGE, force=True)
    docs = listed(rig)
    for c in (by_name, by_id, by_prefix):
        assert docs[c.id]["Image"] == image_id and docs[c.id]["ImageID"] == image_id


def test_names_follow_a_rename_at_once(rig):
    c = rig.create("first")
    assert listed(rig)[c.id]["Names"] == ["/first"]
    rig.lifecycle.rename(c, "second")
    assert listed(rig)[c.id]["Names"] == ["/second"]
