"""Registering a container's changes as a layer (:func:`engine.builder.images.register_diff`): a
first pass hashes, a second one is applied; content that changed between them is registered from
a spool, and an empty diff is no layer."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

import pytest

from engine.builder.images import EMPTY_LAYER, register_diff
from engine.graph.graph import Graph
from engine.graph.layers import chain_id
from engine.testing.layertar import Entry, make_layer_tar
from engine_graph_vfs.driver import VfsDriver


@pytest.fixture
def graph(tmp_path) -> Iterator[Graph]:
    driver = VfsDriver(str(tmp_path / "vfs"))
    yield Graph(str(tmp_path), driver)
    driver.cleanup()


def layer(content: bytes) -> bytes:
    return make_layer_tar([Entry.file("f", content, mtime=0)])


def diff_id(tar: bytes) -> str:
    return "sha256:" + hashlib.sha256(tar).hexdigest()


def test_two_passes_of_the_same_content(graph):
    tar = layer(b"same")
    calls = []

    def diff() -> io.BytesIO:
        calls.append(1)
        return io.BytesIO(tar)

    assert register_diff(graph, diff, None, lambda chain: None) == diff_id(tar)
    assert len(calls) == 2  # a hashing pass and the applied one, no spool
    assert graph.layers.exists(chain_id(None, diff_id(tar)))


def test_content_that_changes_between_the_passes_is_spooled(graph):
    tars = [layer(b"first"), layer(b"second"), layer(b"third")]

    def diff() -> io.BytesIO:
        return io.BytesIO(tars.pop(0))

    # The third read (the spool's) is what is registered, under its own diff ID.
    assert register_diff(graph, diff, None, lambda chain: None) == diff_id(layer(b"third"))
    assert not tars
    assert graph.layers.exists(chain_id(None, diff_id(layer(b"third"))))
    assert not graph.layers.exists(chain_id(None, diff_id(layer(b"first"))))


def test_an_empty_diff_is_no_layer(graph):
    empty = make_layer_tar([])
    assert diff_id(empty) == EMPTY_LAYER
    assert register_diff(graph, lambda: io.BytesIO(empty), None, lambda chain: None) is None
