"""Tests for engine.archive.export: trees and changes as Docker-compatible tars, produced lazily."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tracemalloc

import pytest

from engine import archive
from engine.archive import Change, ChangeKind
from engine.errors import HostError
from engine.sys import fs
from engine.testing.layertar import build_rich_tree, short_digest, tree_listing, tree_manifest, write_files

A, C, D = ChangeKind.ADD, ChangeKind.MODIFY, ChangeKind.DELETE


def _members(stream) -> list[tarfile.TarInfo]:
    try:
        data = stream.read()
    finally:
        stream.close()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return list(tar)


@pytest.mark.root("trees with their owners")
def test_tar_tree_roundtrip_and_determinism(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    build_rich_tree(str(src))
    copy = tmp_path / "copy"
    fs.copy_tree(str(src), str(copy))
    first = archive.tar_tree(str(src)).read()
    assert archive.tar_tree(str(copy)).read() == first
    out = tmp_path / "out"
    out.mkdir()
    archive.apply_layer(str(out), io.BytesIO(first))
    assert tree_manifest(str(out), mtime="s", sockets=False) == tree_manifest(str(src), mtime="s", sockets=False)
    names = [m.name for m in tarfile.open(fileobj=io.BytesIO(first))]
    assert "run/socket" not in names
    assert names.index("bin") < names.index("bin/ping") < names.index("bin/ping6") < names.index("dev")
    members = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(first))}
    assert members["bin/ping6"].islnk() and members["bin/ping6"].linkname == "bin/ping"
    assert members["dev/null"].ischr() and (members["dev/null"].devmajor, members["dev/null"].devminor) == (1, 3)
    assert (
        members["home/user/notes"].pax_headers["SCHILY.xattr.trusted.md5"].encode("utf-8", "surrogateescape")
        == b"\x00\xff binary"
    )
    assert members["bin/su"].mode == 0o4755 and members["opt/nanos"].mtime == 1_600_000_000
    assert first.endswith(bytes(1024)) and len(first) % 512 == 0


@pytest.mark.root("trees with their owners")
def test_export_changes_with_whiteouts(tmp_path, parent_and_layer):
    parent, layer = parent_and_layer({"etc/a": b"a", "etc/b": b"b", "var/lib/x": b"x"})
    os.unlink(os.path.join(layer, "etc/a"))
    fs.safe_rmtree(os.path.join(layer, "var/lib"))
    with open(os.path.join(layer, "etc/c"), "wb") as f:
        f.write(b"c")
    os.link(os.path.join(layer, "etc/c"), os.path.join(layer, "etc/d"))
    os.mknod(os.path.join(layer, "sock"), stat.S_IFSOCK | 0o644)
    found = archive.changes(layer, parent)
    members = _members(archive.export_changes(layer, found))
    assert [(m.name, m.type) for m in members] == [
        ("etc", tarfile.DIRTYPE),
        ("etc/.wh.a", tarfile.REGTYPE),
        ("etc/c", tarfile.REGTYPE),
        ("etc/d", tarfile.LNKTYPE),
        ("var", tarfile.DIRTYPE),
        ("var/.wh.lib", tarfile.REGTYPE),
    ]
    assert members[1].mtime == 0 and members[1].size == 0
    # Applied on a copy of the parent it gives the layer (sockets aside).
    again = tmp_path / "again"
    fs.copy_tree(parent, str(again))
    archive.apply_layer(str(again), archive.export_changes(layer, found))
    assert tree_manifest(str(again), mtime="s", sockets=False) == tree_manifest(layer, mtime="s", sockets=False)
    # And as an overlay upper directory.
    upper = tmp_path / "upper"
    upper.mkdir()
    archive.apply_layer(str(upper), archive.export_changes(layer, found), whiteouts="overlay")
    assert stat.S_ISCHR(os.lstat(upper / "etc" / "a").st_mode)
    assert stat.S_ISCHR(os.lstat(upper / "var" / "lib").st_mode)


@pytest.mark.root("trees with their owners")
def test_tar_tree_keep_reads_an_aufs_branch(tmp_path):
    """An aufs branch as aufs leaves it: bookkeeping out, whiteouts (hard links of .wh..wh.aufs) canonical."""
    branch = tmp_path / "branch"
    branch.mkdir()
    (branch / ".wh..wh.aufs").write_bytes(b"")
    (branch / ".wh..wh.aufs").chmod(0o444)
    (branch / ".wh..wh.plnk").mkdir()
    (branch / ".wh..wh.plnk" / "12.34").write_bytes(b"pseudo")
    (branch / ".wh..wh.orph").mkdir()
    (branch / "a").mkdir()
    os.link(branch / ".wh..wh.aufs", branch / "a" / ".wh.b")
    os.link(branch / ".wh..wh.aufs", branch / ".wh.top")
    (branch / "a" / ".wh..wh.1f2e").mkdir()  # a directory aufs is removing
    (branch / "a" / "c").write_bytes(b"c")
    (branch / "d").mkdir()
    (branch / "d" / "-early").write_bytes(b"e")
    (branch / "d" / archive.WHITEOUT_OPAQUE).write_bytes(b"")
    (branch / "d" / "e").write_bytes(b"e")
    data = archive.tar_tree(str(branch), whiteouts="keep").read()
    found = _members(io.BytesIO(data))
    assert [(m.name, m.type) for m in found] == [
        (".wh.top", tarfile.REGTYPE),
        ("a", tarfile.DIRTYPE),
        ("a/.wh.b", tarfile.REGTYPE),
        ("a/c", tarfile.REGTYPE),
        ("d", tarfile.DIRTYPE),
        ("d/.wh..wh..opq", tarfile.REGTYPE),
        ("d/-early", tarfile.REGTYPE),
        ("d/e", tarfile.REGTYPE),
    ]
    for m in found:
        if os.path.basename(m.name).startswith(".wh."):
            assert (m.mode, m.mtime, m.size, m.uid, m.gid) == (0, 0, 0, 0, 0)
    # Unpacked as a branch again and read back: the same bytes.
    copy = tmp_path / "copy"
    copy.mkdir()
    archive.apply_layer(str(copy), io.BytesIO(data), whiteouts="keep")
    assert archive.tar_tree(str(copy), whiteouts="keep").read() == data
    # Applied on a tree, it deletes what the branch hides.
    lower = tmp_path / "lower"
    lower.mkdir()
    write_files(str(lower), {"top": b"t", "a/b": b"b", "a/kept": b"k", "d/old": b"o"})
    archive.apply_layer(str(lower), io.BytesIO(data))
    assert tree_listing(str(lower)) == {
        "a": "dir",
        "a/kept": short_digest(b"k"),
        "a/c": short_digest(b"c"),
        "d": "dir",
        "d/-early": short_digest(b"e"),
        "d/e": short_digest(b"e"),
    }


def test_export_skips_vanished_entries(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "here").write_text("h")
    members = _members(
        archive.export_changes(str(root), [Change("/gone", A), Change("/gone/deeper", A), Change("/here", C)])
    )
    assert [m.name for m in members] == ["here"]


def test_release_called_once(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_bytes(os.urandom(3 << 20))
    calls: list[int] = []
    stream = archive.tar_tree(str(root), release=lambda: calls.append(1))
    while stream.read(65536):
        pass
    assert calls == [1]
    stream.close()
    assert calls == [1]
    early = archive.export_changes(str(root), [Change("/f", A)], release=lambda: calls.append(2))
    early.read(10)
    assert calls == [1]
    early.close()
    assert calls == [1, 2]


def test_export_is_lazy_and_bounded(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with open(root / "big", "wb") as f:
        f.write(os.urandom(1 << 20) * 48)
    tracemalloc.start()
    try:
        stream = archive.tar_tree(str(root))
        total = 0
        while True:
            chunk = stream.read(1 << 20)
            if not chunk:
                break
            total += len(chunk)
        stream.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 512 + (48 << 20) + 1024
    assert peak < 12 << 20


def test_export_detects_file_replaced_or_shrunk(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").write_bytes(b"x" * 100000)
    stream = archive.export_changes(str(root), [Change("/a", A)])
    assert stream.read(1)  # the header is out, with the size from lstat
    (root / "a").write_bytes(b"short")  # same inode, now smaller
    with pytest.raises(HostError, match="shrank"):
        stream.read()
    stream.close()
