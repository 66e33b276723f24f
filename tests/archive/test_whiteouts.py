"""Tests for engine.archive.whiteouts: the whiteout formats and what is aufs' bookkeeping."""

from __future__ import annotations

import io

import pytest

from engine import archive
from engine.errors import InvalidParameter


def test_unknown_whiteout_format(dest):
    with pytest.raises(InvalidParameter):
        archive.apply_layer(dest, io.BytesIO(b""), whiteouts="btrfs")
    with pytest.raises(InvalidParameter):
        archive.tar_tree(dest, whiteouts="btrfs")


def test_aufs_metadata_names():
    assert archive.is_aufs_metadata(".wh..wh.plnk") and archive.is_aufs_metadata(".wh..wh.aufs")
    assert archive.is_aufs_metadata(".wh..wh.orph") and archive.is_aufs_metadata(".wh..wh.1f2e")
    assert not archive.is_aufs_metadata(".wh..wh..opq") and not archive.is_aufs_metadata(".wh.etc")
    assert not archive.is_aufs_metadata("etc")
