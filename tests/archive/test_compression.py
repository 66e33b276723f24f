"""Tests for engine.archive.compression: gzip, bzip2, xz and zstd detected, and cut or corrupt streams refused.

The streams are read through :func:`engine.archive.apply_layer`, as layers are.
"""

from __future__ import annotations

import io
import os

import pytest

from engine import archive
from engine.errors import InvalidParameter
from engine.testing.layertar import Entry, compress, make_layer_tar


def test_detect_compression():
    assert archive.detect_compression(b"\x1f\x8b\x08\x00") == "gzip"
    assert archive.detect_compression(b"BZh91") == "bzip2"
    assert archive.detect_compression(b"\xfd7zXZ\x00") == "xz"
    assert archive.detect_compression(b"\x28\xb5\x2f\xfd") == "zstd"
    assert archive.detect_compression(b"\x50\x2a\x4d\x18") == "zstd"  # skippable frame
    assert archive.detect_compression(b"etc/") == "none"


@pytest.mark.root("layers keep their owners")
def test_multi_frame_zstd_and_multi_member_gzip(dest):
    tar = make_layer_tar([Entry.file("a", b"a" * 5000), Entry.file("b", b"b")])
    gz = compress(tar[:2048], "gzip") + compress(tar[2048:], "gzip")
    assert archive.apply_layer(dest, io.BytesIO(gz)) == 5001
    zst = compress(tar[:1000], "zstd") + compress(tar[1000:], "zstd")
    other = os.path.join(dest, "..", "other")
    os.mkdir(other)
    assert archive.apply_layer(other, io.BytesIO(zst)) == 5001


def test_truncated_and_corrupt_compression(dest):
    tar = make_layer_tar([Entry.file("a", os.urandom(50000))])
    for kind in ("gzip", "bzip2", "xz", "zstd"):
        data = compress(tar, kind)
        with pytest.raises(InvalidParameter):
            archive.apply_layer(dest, io.BytesIO(data[: len(data) // 2]))
        corrupt = bytearray(data)
        for i in range(40, len(corrupt) - 40, 97):
            corrupt[i] ^= 0x55
        with pytest.raises(InvalidParameter):
            archive.apply_layer(dest, io.BytesIO(bytes(corrupt)))


@pytest.mark.root("layers keep their owners")
def test_zstd_cut_between_blocks(dest):
    """Cut where the decoder sees a clean end and the tar looks complete: still an error."""
    import zstandard

    tar = make_layer_tar([Entry.file("a", os.urandom(300000))])
    data = zstandard.ZstdCompressor(write_checksum=True).compress(tar)
    with pytest.raises(InvalidParameter, match="unexpected EOF in zstd"):
        archive.apply_layer(dest, io.BytesIO(data[:-4]))  # only the checksum is missing
    assert archive.apply_layer(dest, io.BytesIO(data)) == 300000


def test_source_errors_are_not_corruption(dest):
    class Broken(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, b):
            raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):
        archive.apply_layer(dest, Broken())
