"""The vfs driver against the shared graph driver conformance suite, plus what is vfs's own."""

from __future__ import annotations

import os

import pytest

from engine.errors import Conflict, InvalidParameter
from engine.testing.graphtest import GraphDriverConformance, new_id
from engine_graph_vfs.driver import VfsDriver


class TestVfs(GraphDriverConformance):
    driver_name = "vfs"

    def test_layout(self, driver: VfsDriver) -> None:
        id = self.layer(driver)
        assert driver.metadata(id) == {"Dir": os.path.join(driver.home, "dir", id)}
        assert os.stat(os.path.join(driver.home, "dir")).st_mode & 0o777 == 0o700
        assert dict(driver.status())["Layers"] == "1"

    def test_references_and_remove_in_use(self, driver: VfsDriver) -> None:
        id = self.layer(driver)
        driver.get(id)
        driver.get(id)
        assert driver.references(id) == 2
        with pytest.raises(Conflict):
            driver.remove(id)
        driver.put(id)
        driver.put(id)
        driver.put(id)  # one too many: logged, not fatal
        assert driver.references(id) == 0
        driver.remove(id)

    def test_leftovers_swept_at_start(self, driver: VfsDriver) -> None:
        for name in (f".tmp-{new_id()}-x", f".rm-{new_id()}-y"):
            os.makedirs(os.path.join(driver.home, "dir", name, "sub"))
        VfsDriver(driver.home)
        assert os.listdir(os.path.join(driver.home, "dir")) == []

    def test_options_refused(self, tmp_path) -> None:
        with pytest.raises(InvalidParameter):
            VfsDriver.probe(str(tmp_path / "vfs"), ["size=10G"])
