"""Tests for engine.archive.changeset: what a layer adds, modifies and deletes against its parent."""

from __future__ import annotations

import os

import pytest

from engine import archive
from engine.archive import Change, ChangeKind
from engine.sys import fs
from engine.testing.layertar import write_files

pytestmark = pytest.mark.root("trees with their owners")

A, C, D = ChangeKind.ADD, ChangeKind.MODIFY, ChangeKind.DELETE


def test_changes_none_when_identical(parent_and_layer):
    parent, layer = parent_and_layer({"a/b": b"1", "c": b"2"})
    assert archive.changes(layer, parent) == []


def test_changes_kinds_and_order(parent_and_layer):
    parent, layer = parent_and_layer({"a/b": b"1", "a/c": b"2", "d/e/f": b"3", "g": b"4", "h/i": b"5", "z": b"z"})
    os.unlink(os.path.join(layer, "a/b"))
    with open(os.path.join(layer, "a/c"), "ab") as f:
        f.write(b"more")
    fs.safe_rmtree(os.path.join(layer, "d"))
    os.mkdir(os.path.join(layer, "new"))
    open(os.path.join(layer, "new/file"), "w").close()
    os.unlink(os.path.join(layer, "g"))
    os.mkdir(os.path.join(layer, "g"))  # file -> dir: its entries are added
    open(os.path.join(layer, "g/in"), "w").close()
    fs.safe_rmtree(os.path.join(layer, "h"))
    open(os.path.join(layer, "h"), "w").close()  # dir -> file: old entries go silently
    assert archive.changes(layer, parent) == [
        Change("/a", C),
        Change("/a/b", D),
        Change("/a/c", C),
        Change("/d", D),
        Change("/g", C),
        Change("/g/in", A),
        Change("/h", C),
        Change("/new", A),
        Change("/new/file", A),
    ]


def test_changes_what_counts(parent_and_layer):
    parent, layer = parent_and_layer(
        {"mt": b"1", "mode": b"2", "own": b"3", "x": b"4", "ns": b"5", "dir/f": b"6", "dirmode/f": b"7"}
    )
    os.symlink("x", os.path.join(parent, "link"))
    os.symlink("x", os.path.join(layer, "link"))
    os.utime(os.path.join(layer, "mt"), ns=(0, 2_000_000_000_000_000_000))  # mtime only
    os.chmod(os.path.join(layer, "mode"), 0o600)
    os.chown(os.path.join(layer, "own"), 1, 1)
    os.setxattr(os.path.join(layer, "x"), "user.new", b"1")
    os.utime(os.path.join(layer, "ns"), ns=(0, 1_000_000_000_000_000_000 + 0))
    os.utime(os.path.join(parent, "ns"), ns=(0, 1_000_000_000_000_000_123))  # same second, one side no ns
    os.utime(os.path.join(layer, "dir"), ns=(0, 5))  # directory mtime alone: no change
    os.chmod(os.path.join(layer, "dirmode"), 0o700)  # directory metadata: a change
    os.unlink(os.path.join(layer, "link"))
    os.symlink("y", os.path.join(layer, "link"))  # same size, other target
    os.utime(
        os.path.join(layer, "link"), ns=(0, os.lstat(os.path.join(parent, "link")).st_mtime_ns), follow_symlinks=False
    )
    os.setxattr(os.path.join(layer, "dir/f"), "trusted.overlay.origin", b"ignored")
    assert archive.changes(layer, parent) == [
        Change("/dirmode", C),
        Change("/link", C),
        Change("/mode", C),
        Change("/mt", C),
        Change("/own", C),
        Change("/x", C),
    ]


def test_changes_without_parent_and_size(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    write_files(str(root), {"a/b": b"12345", "c": b"123"})
    os.link(root / "c", root / "c2")
    os.symlink("a/b", root / "s")
    found = archive.changes(str(root), None)
    assert found == [Change("/a", A), Change("/a/b", A), Change("/c", A), Change("/c2", A), Change("/s", A)]
    assert archive.changes_size(str(root), found) == 5 + 3 + len("a/b")  # c and c2 once
    assert archive.changes_size(str(root), [Change("/gone", A), Change("/a/b", D)]) == 0


def test_entry_differs(parent_and_layer):
    parent, layer = parent_and_layer({"same": b"1", "mode": b"2", "dir/f": b"3", "x": b"4"})
    os.chmod(os.path.join(layer, "mode"), 0o600)
    os.utime(os.path.join(layer, "dir"), ns=(0, 5))  # a directory's time alone is no change
    os.setxattr(os.path.join(layer, "x"), "user.new", b"1")
    os.symlink("a", os.path.join(parent, "link"))
    os.symlink("b", os.path.join(layer, "link"))
    differs = {
        rel: archive.entry_differs(os.path.join(parent, rel), os.path.join(layer, rel))
        for rel in ("same", "mode", "dir", "x", "link")
    }
    assert differs == {"same": False, "mode": True, "dir": False, "x": True, "link": True}
    assert archive.entry_differs(os.path.join(parent, "dir"), os.path.join(layer, "same"))
