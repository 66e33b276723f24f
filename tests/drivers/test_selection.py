"""Graph driver selection (seed ch. 4 §4.4.1): environment, flag, existing
data, priority, skip-errors, other errors, load failures."""

from __future__ import annotations

import os

import pytest

from engine.drivers import graph
from engine.drivers.discovery import DriverEntry
from engine.drivers.graph import NaiveDiffDriver
from engine.drivers.selection import DriverConfig, DriverSelectionError
from engine.errors import IncompatibleFilesystem, NotSupported, PrerequisitesNotMet


def fake(name: str, probe_error: Exception | None = None) -> DriverEntry:
    """A fake graph driver class whose probe raises ``probe_error``."""

    class Fake(NaiveDiffDriver):
        """Fake driver for selection tests."""

        @classmethod
        def probe(cls, home, options=()):
            if probe_error is not None:
                raise probe_error

        def create(self, id, parent=None, mount_label=""): ...
        def remove(self, id): ...
        def get(self, id, mount_label=""):
            return ""

        def put(self, id): ...
        def exists(self, id):
            return False

    Fake.name = name
    return DriverEntry("graph", name, f"fake:{name}", Fake, None, "fake-dist", "1.0")


def broken(name: str) -> DriverEntry:
    return DriverEntry("graph", name, f"fake:{name}", None, "ImportError: no module named fakefs", "fake-dist", "1.0")


def plan(tmp_path, drivers, configured="", environ=None, priority=("aufs", "btrfs", "devmapper", "overlay", "vfs")):
    config = DriverConfig(str(tmp_path), graph_driver=configured, graph_priority=priority, environ=environ or {})
    return graph.plan(config, {d.name: d for d in drivers})


def test_priority_skips_the_three_not_supported_errors(tmp_path):
    drivers = [
        fake("aufs", NotSupported("aufs not in /proc/filesystems")),
        fake("btrfs", IncompatibleFilesystem("not btrfs")),
        fake("devmapper", PrerequisitesNotMet("no dmsetup")),
        fake("overlay"),
        fake("vfs"),
    ]
    result = plan(tmp_path, drivers)
    assert result.entry.name == "overlay"
    assert set(result.skipped) == {"aufs", "btrfs", "devmapper"}


def test_other_probe_errors_stop_selection(tmp_path):
    with pytest.raises(DriverSelectionError, match="overlay: disk on fire"):
        plan(tmp_path, [fake("overlay", OSError("disk on fire")), fake("vfs")])


def test_environment_then_flag(tmp_path):
    drivers = [fake("overlay"), fake("vfs")]
    assert plan(tmp_path, drivers, environ={"ENGINE_DRIVER": "vfs"}).entry.name == "vfs"
    assert plan(tmp_path, drivers, environ={"DOCKER_DRIVER": "vfs"}).entry.name == "vfs"
    assert plan(tmp_path, drivers, configured="vfs").entry.name == "vfs"
    assert plan(tmp_path, drivers, configured="vfs", environ={"ENGINE_DRIVER": "overlay"}).entry.name == "overlay"


def test_named_driver_must_exist_and_work(tmp_path):
    with pytest.raises(DriverSelectionError, match="'zfs' .* not installed; installed graph drivers: overlay, vfs"):
        plan(tmp_path, [fake("overlay"), fake("vfs")], configured="zfs")
    with pytest.raises(DriverSelectionError, match="cannot run here: no aufs"):
        plan(tmp_path, [fake("aufs", NotSupported("no aufs")), fake("vfs")], configured="aufs")


def test_load_failure_only_matters_when_asked_for(tmp_path):
    drivers = [broken("overlay"), fake("vfs")]
    result = plan(tmp_path, drivers)
    assert result.entry.name == "vfs" and "failed to load" in result.skipped["overlay"]
    with pytest.raises(DriverSelectionError, match="fake-dist 1.0 failed to load: ImportError"):
        plan(tmp_path, drivers, configured="overlay")


def test_existing_data_wins(tmp_path):
    os.makedirs(tmp_path / "vfs" / "dir" / "abc")
    assert plan(tmp_path, [fake("overlay"), fake("vfs")]).entry.name == "vfs"
    with pytest.raises(DriverSelectionError, match="holds images of graph driver vfs, which cannot run here"):
        plan(tmp_path, [fake("overlay"), fake("vfs", NotSupported("nope"))])
    os.makedirs(tmp_path / "overlay" / "l")
    with pytest.raises(DriverSelectionError, match="several graph drivers"):
        plan(tmp_path, [fake("overlay"), fake("vfs")])


def test_other_installed_drivers_after_priority(tmp_path):
    drivers = [fake("vfs", NotSupported("no")), fake("zfs")]
    assert plan(tmp_path, drivers).entry.name == "zfs"
    with pytest.raises(DriverSelectionError, match="no supported graph driver found"):
        plan(tmp_path, [fake("vfs", NotSupported("no"))])


def test_operator_priority(tmp_path):
    assert plan(tmp_path, [fake("overlay"), fake("vfs")], priority=("vfs", "overlay")).entry.name == "vfs"
