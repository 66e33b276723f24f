"""Tests for the graph driver contract's defaults (engine.drivers.graph.GraphDriver)."""

from __future__ import annotations

import pytest

from engine.errors import InvalidParameter
from engine.testing.graphtest import new_id
from engine_graph_vfs.driver import VfsDriver


def test_create_read_write_without_options_is_create(tmp_path):
    driver = VfsDriver(str(tmp_path / "vfs"))
    base, layer = new_id(), new_id()
    driver.create(base)
    driver.create_read_write(layer, base)
    driver.create_read_write(new_id(), base, storage_opt={})
    assert driver.exists(layer)


def test_create_read_write_refuses_storage_options_in_dockers_words(tmp_path):
    driver = VfsDriver(str(tmp_path / "vfs"))
    layer = new_id()
    with pytest.raises(InvalidParameter, match=r"^--storage-opt is not supported for vfs$"):
        driver.create_read_write(layer, None, storage_opt={"size": "10G"})
    assert not driver.exists(layer)
