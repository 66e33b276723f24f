"""Tar owners moved through a map as the stream is read (engine.archive.idshift)."""

from __future__ import annotations

import io
import tarfile

import pytest

from engine.archive.idshift import ShiftedTar
from engine.errors import InvalidParameter


def make(entries, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, uid, gid, data in entries:
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.size = uid, gid, len(data)
            info.uname = info.gname = "someone"
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def owners(data: bytes) -> list[tuple[str, int, int, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, m.uid, m.gid, tar.extractfile(m).read() if m.isfile() else b"") for m in tar]


def plus(n):
    return lambda value: value + n


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_owners_move_and_data_stays(fmt):
    entries = [("a", 0, 0, b"x" * 1000), ("dir/b", 1000, 1001, b""), ("c", 5, 6, b"y" * 513)]
    shifted = ShiftedTar(io.BytesIO(make(entries, fmt)), plus(100000), plus(200000)).read()
    assert owners(shifted) == [
        ("a", 100000, 200000, b"x" * 1000),
        ("dir/b", 101000, 201001, b""),
        ("c", 100005, 200006, b"y" * 513),
    ]
    back = ShiftedTar(io.BytesIO(shifted), plus(-100000), plus(-200000)).read()
    assert owners(back) == entries


def test_pax_records_and_large_ids():
    # A PAX header carries IDs too big for the ustar field, and a long name.
    entries = [("n" * 150, 3_000_000, 7, b"z"), ("small", 1, 2, b"")]
    shifted = ShiftedTar(io.BytesIO(make(entries)), plus(100000), plus(100000)).read()
    assert owners(shifted) == [("n" * 150, 3_100_000, 100007, b"z"), ("small", 100001, 100002, b"")]


def test_base256_headers_for_ids_the_octal_field_cannot_hold():
    shifted = ShiftedTar(io.BytesIO(make([("a", 2_097_000, 0, b"")], tarfile.GNU_FORMAT)), plus(1000), plus(0)).read()
    assert owners(shifted) == [("a", 2_098_000, 0, b"")]


def test_an_unmapped_owner_is_refused():
    def only_small(value):
        if value > 10:
            raise ValueError(f"uid {value} is not mapped")
        return value

    with pytest.raises(InvalidParameter, match="uid 70000 is not mapped"):
        ShiftedTar(io.BytesIO(make([("a", 70000, 0, b"")])), only_small, only_small).read()


def test_closing_closes_the_source():
    source = io.BytesIO(make([("a", 0, 0, b"")]))
    stream = ShiftedTar(source, plus(1), plus(1))
    stream.close()
    assert source.closed
