"""Start-up after a crash (kill -9 of the daemon): what a create, a remove or
a rename cut short is found and finished or undone, so that nothing is half
there, nothing leaks and every name can be used again.

Each test makes by hand the state a crash at one step would leave (the
steps are those of :meth:`~engine.daemon.lifecycle.LifeCycle.create` and
:meth:`~engine.daemon.lifecycle.LifeCycle.remove`), then restarts the life
cycle over the same root (:meth:`~tests.daemon.fakes.Rig.restart_daemon`).
"""

from __future__ import annotations

import logging
import os

import pytest

from engine.daemon.store import CREATE_JOURNAL, REMOVAL_JOURNAL
from engine.errors import NoSuchContainer
from tests.daemon.fakes import Rig, layers_of

CID = "c0ffee" + "0" * 58


def volume_names(rig: Rig) -> set[str]:
    return {v["Name"] for v in rig.daemon.volumes.list()}


def volume_layers(rig: Rig) -> set[str]:
    return set(os.listdir(os.path.join(rig.root, "volumes", "vfs", "dir")))


def half_made(rig: Rig, steps: int) -> None:
    """The first ``steps`` steps of a create of ``/half`` (container CID), as a crash leaves them."""
    store, driver = rig.store, rig.daemon.graphdriver
    image = rig.daemon.graph.lookup("tiny:latest")
    os.makedirs(store.path(CID), mode=0o700)
    if steps >= 2:
        store.reserve_name("/half", CID)
    if steps >= 3:
        driver.create(CID + "-init", image.top_layer.split(":", 1)[1])
        driver.create(CID, CID + "-init")
    if steps >= 4:
        store.write_journal(CID, CREATE_JOURNAL, {"Volumes": ["a" * 64, "b" * 64]})
        rig.daemon.volumes.create("a" * 64, anonymous=True)  # made; "b"*64 not yet
    if steps >= 5:  # the host config written, the record not yet
        with open(os.path.join(store.path(CID), "hostconfig.json"), "w") as fh:
            fh.write("{}")


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5])
def test_a_create_cut_short_is_undone_at_start_up(rig: Rig, steps, caplog):
    keep = rig.create("keep")
    volumes, vlayers = volume_names(rig), volume_layers(rig)
    half_made(rig, steps)
    with caplog.at_level(logging.WARNING, logger="engine.daemon"):
        rig.restart_daemon()
    assert [c.id for c in rig.store.all()] == [keep.id]
    rig.settle()
    assert os.listdir(rig.store.dir) == [keep.id]
    assert layers_of(rig, CID) == []
    assert volume_names(rig) == volumes and volume_layers(rig) == vlayers
    assert rig.daemon.linkgraph.all_ref_paths() == {keep.id: ["/keep"]}
    assert rig.create("half").name == "/half"  # the name is free
    said = [r.getMessage() for r in caplog.records if CID[:12] in r.getMessage()]
    assert len(said) == 1 and "half made or half removed" in said[0]


def test_a_finished_create_keeps_its_container_and_drops_its_journal(rig: Rig):
    c = rig.create("web")
    rig.store.write_journal(c.id, CREATE_JOURNAL, {"Volumes": [c.mounts[0]["Name"]]})  # crash before it went
    rig.restart_daemon()
    again = rig.store.get("web")
    assert again.id == c.id and rig.daemon.volumes.exists(c.mounts[0]["Name"])


@pytest.mark.parametrize("volumes", [True, False])
def test_a_remove_cut_short_is_finished_at_start_up(rig: Rig, volumes):
    c = rig.create("gone")
    anonymous = c.mounts[0]["Name"]
    rig.lifecycle.start(c)
    rig.lifecycle.monitor.stop()  # the daemon dies...
    rig.store.write_journal(c.id, REMOVAL_JOURNAL, {"RemoveVolumes": volumes})  # ...once the remove began
    rig.driver.exit(c.id, 137)
    rig.restart_daemon()
    with pytest.raises(NoSuchContainer):
        rig.store.get("gone")
    rig.settle()
    assert os.listdir(rig.store.dir) == [] and layers_of(rig, c.id) == []
    assert rig.daemon.volumes.exists(anonymous) is not volumes
    assert rig.create("gone").name == "/gone"


def test_a_remove_cut_short_after_its_record_went_is_finished(rig: Rig):
    c = rig.create("gone")
    os.unlink(os.path.join(c.root, "config.v2.json"))  # the crash came right after
    rig.restart_daemon()
    rig.settle()
    assert os.listdir(rig.store.dir) == [] and layers_of(rig, c.id) == []
    assert rig.create("gone").name == "/gone"


def test_a_removal_in_progress_recorded_by_an_older_daemon_is_finished(rig: Rig):
    c = rig.create("old")
    c.state.removal_in_progress = True
    c.to_disk()
    rig.restart_daemon()
    rig.settle()
    assert os.listdir(rig.store.dir) == [] and rig.create("old").name == "/old"


def test_a_rename_cut_short_keeps_the_record_s_name_and_frees_the_other(rig: Rig):
    c = rig.create("before")
    rig.daemon.linkgraph.rename("/before", "/after")  # the record was not written yet
    rig.restart_daemon()
    assert rig.store.get("before").id == c.id
    with pytest.raises(NoSuchContainer):
        rig.store.get("after")
    assert rig.create("after").name == "/after"


def test_a_volume_removal_cut_short_is_finished(rig: Rig):
    volumes = rig.daemon.volumes
    volumes.create("named")
    layer = volumes.layer_id("named")
    os.rename(os.path.join(volumes.dir, "named.json"), os.path.join(volumes.dir, ".named.removing"))
    assert layer in volume_layers(rig)
    rig.restart_daemon()
    from engine.daemon.volumes import VolumeStore

    again = VolumeStore(rig.root, volumes.driver)
    assert not again.exists("named") and layer not in volume_layers(rig)
    assert os.listdir(volumes.dir) == ["vfs"]
