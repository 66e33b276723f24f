"""Fixtures of the archive tests: a destination directory, and a parent tree with a layer copied from it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.sys import fs
from engine.testing.layertar import write_files


@pytest.fixture
def dest(tmp_path) -> str:
    """An empty directory ``<tmp_path>/dest`` to apply layers to."""
    path = tmp_path / "dest"
    path.mkdir()
    return str(path)


@pytest.fixture
def parent_and_layer(tmp_path) -> Callable[[dict[str, bytes]], tuple[str, str]]:
    """A factory: ``files`` written to ``<tmp_path>/parent``, copied exactly to ``<tmp_path>/layer``; both paths."""

    def make(files: dict[str, bytes]) -> tuple[str, str]:
        parent, layer = str(tmp_path / "parent"), str(tmp_path / "layer")
        (tmp_path / "parent").mkdir()
        write_files(parent, files)
        fs.copy_tree(parent, layer)
        return parent, layer

    return make
