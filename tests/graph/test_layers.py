"""The layer store on the real vfs driver: registration, chain IDs, byte-exact
tars (tar-split), crash recovery and garbage collection."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

import pytest

from engine.errors import InvalidParameter
from engine.graph.layers import LayerStore, chain_id, chain_ids
from engine.testing.layertar import Entry, make_layer_tar
from engine_graph_vfs.driver import VfsDriver

pytestmark = pytest.mark.root("layers keep their owners")


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path):
    driver = VfsDriver(str(tmp_path / "vfs"))
    yield LayerStore(str(tmp_path), driver)
    driver.cleanup()


def python_tar(members: list[tuple[str, bytes]], fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_chain_ids_follow_the_oci_rule():
    a, b = digest(b"a"), digest(b"b")
    assert chain_id(None, a) == a
    expected = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert chain_ids([a, b]) == [a, expected]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_register_and_replay_byte_exact(store, fmt):
    long_name = "deep/" + "x" * 150 + "/file.txt"
    members = [("etc/hostname", b"box\n"), ("empty", b""), ("big.bin", os.urandom(3 << 20)), ("odd", b"z" * 513)]
    if fmt != tarfile.USTAR_FORMAT:
        members.append((long_name, b"long\n"))
    data = python_tar(members, fmt)
    layer, created = store.register(io.BytesIO(data), None, digest(data))
    assert created and layer.chain_id == layer.diff_id == digest(data)
    again = b"".join(store.tar_stream(layer.chain_id))
    assert again == data


def test_register_rich_layer_and_child(store):
    base = make_layer_tar(
        [
            Entry.dir("etc"),
            Entry.file("etc/a", b"1"),
            Entry.symlink("lib", "usr/lib"),
            Entry.dir("usr"),
            Entry.dir("usr/lib"),
            Entry.file("usr/lib/x.so", b"elf"),
            Entry.hardlink("etc/a2", "etc/a"),
            Entry.fifo("run.fifo"),
            Entry.char("null", 1, 3),
        ]
    )
    child = make_layer_tar([Entry.whiteout("etc/a2"), Entry.file("etc/b", b"2" * 10000), Entry.opaque("usr/lib")])
    l1, _ = store.register(io.BytesIO(base), None, digest(base))
    l2, _ = store.register(io.BytesIO(child), l1.chain_id, digest(child))
    assert l2.chain_id == chain_id(l1.chain_id, digest(child)) and l2.parent == l1.chain_id
    assert b"".join(store.tar_stream(l1.chain_id)) == base
    assert b"".join(store.tar_stream(l2.chain_id)) == child
    assert [layer.chain_id for layer in store.chain(l2.chain_id)] == [l2.chain_id, l1.chain_id]
    # An existing layer is returned without reading the stream.
    same, created = store.register(io.BytesIO(b"ignored"), None, digest(base))
    assert same == l1 and not created


def test_unknown_diff_id_is_computed(store):
    data = python_tar([("a", b"hello")])
    layer, created = store.register(io.BytesIO(data), None)
    assert created and layer.diff_id == digest(data)


def test_wrong_diff_id_leaves_nothing(store, tmp_path):
    data = python_tar([("a", b"hello")])
    wrong = digest(b"something else")
    with pytest.raises(InvalidParameter, match="does not match its diff ID"):
        store.register(io.BytesIO(data), None, wrong)
    assert not store.exists(wrong)
    assert os.listdir(store.dir) == []
    assert not store.driver.exists(wrong.split(":")[1])


def test_truncated_tar_leaves_nothing(store):
    data = python_tar([("a", os.urandom(100000))])[:50000]
    with pytest.raises(InvalidParameter):
        store.register(io.BytesIO(data), None, digest(data))
    assert os.listdir(store.dir) == []
    assert store.driver.wait_removed(30)  # a removed layer's files go in the background
    assert os.listdir(os.path.join(store.driver.home, "dir")) == []


def test_recover_after_crash_and_reload(tmp_path):
    driver = VfsDriver(str(tmp_path / "vfs"))
    store = LayerStore(str(tmp_path), driver)
    data = python_tar([("a", b"x")])
    layer, _ = store.register(io.BytesIO(data), None, digest(data))
    # A crash in the middle of another registration: staging dir + driver layer.
    half = "ab" * 32
    os.makedirs(os.path.join(store.dir, "tmp-" + half))
    driver.create(half)
    reopened = LayerStore(str(tmp_path), VfsDriver(str(tmp_path / "vfs")))
    assert reopened.exists(layer.chain_id) and reopened.get(layer.chain_id).size == layer.size
    assert not reopened.driver.exists(half)
    assert sorted(os.listdir(reopened.dir)) == [layer.driver_id]


def test_gc_keeps_shared_chains(store):
    a = python_tar([("a", b"1")])
    b = python_tar([("b", b"2")])
    c = python_tar([("c", b"3")])
    la, _ = store.register(io.BytesIO(a), None, digest(a))
    lb, _ = store.register(io.BytesIO(b), la.chain_id, digest(b))
    lc, _ = store.register(io.BytesIO(c), la.chain_id, digest(c))
    removed = store.gc({la.chain_id, lc.chain_id})
    assert [layer.chain_id for layer in removed] == [lb.chain_id]
    assert store.exists(la.chain_id) and store.exists(lc.chain_id)
    removed = store.gc(set())
    assert [layer.chain_id for layer in removed] == [lc.chain_id, la.chain_id]
    assert os.listdir(store.dir) == []
