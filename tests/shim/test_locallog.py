"""The local log driver's file (engine.shim.locallog), rotation with compression
(engine.shim.jsonlog), and reading both back (engine.daemon.logs), in tmp_path."""

from __future__ import annotations

import gzip
import os

from engine.daemon import logs
from engine.shim.jsonlog import MAX_PARTIAL, JSONLogFile, LogStream
from engine.shim.locallog import LocalLogFile, decode_entries, encode_entry, parse_rfc3339nano

T1 = "2026-11-30T06:03:41.123456789Z"


def test_entry_round_trip_and_moby_framing():
    data = encode_entry("stdout", 1_700_000_000_123_456_789, b"hello")
    size = int.from_bytes(data[:4], "big")
    assert len(data) == size + 8 and data[-4:] == data[:4]
    # source (1), time_nano (2), line (3): protobuf's tags and lengths
    assert data[4:12] == b"\x0a\x06stdout" and b"\x1a\x05hello" in data
    entries, used = decode_entries(data + data[:6])  # a second entry cut short is left
    assert used == len(data)
    assert entries == [
        {"source": "stdout", "time_nano": 1_700_000_000_123_456_789, "line": b"hello", "partial": False, "last": False}
    ]


def test_timestamps():
    assert parse_rfc3339nano(T1) == 1_796_018_621_123_456_789
    assert parse_rfc3339nano("2026-11-30T06:03:41Z") == 1_796_018_621_000_000_000


def test_local_file_lines_and_partials_read_back(tmp_path):
    path = str(tmp_path / "local-logs" / "container.log")
    log = LocalLogFile(path)
    out, err = LogStream(log, "stdout"), LogStream(log, "stderr")
    out.feed(b"one\n" + b"x" * (MAX_PARTIAL + 3) + b"\n", T1)
    err.feed(b"oops\n", T1)
    out.feed(b"tail without newline", T1)
    out.flush(T1)
    log.close()
    with open(path, "rb") as fh:
        raw, _ = decode_entries(fh.read())
    assert [(e["partial"], e["last"]) for e in raw] == [
        (False, False),
        (True, False),
        (True, True),
        (False, False),
        (True, False),
    ]
    got = list(logs.read(path, format="local"))
    assert got == [
        (1, b"one\n"),
        (1, b"x" * MAX_PARTIAL),
        (1, b"xxx\n"),
        (2, b"oops\n"),
        (1, b"tail without newline"),
    ]
    assert list(logs.read(path, stdout=False, timestamps=True, format="local")) == [(2, T1.encode() + b" oops\n")]
    assert list(logs.read(path, tail=1, format="local")) == [(1, b"tail without newline")]


def test_rotation_with_compression_and_reading_across_files(tmp_path):
    path = str(tmp_path / "x-json.log")
    log = JSONLogFile(path, max_size=200, max_file=3, compress=True)
    out = LogStream(log, "stdout")
    for i in range(30):
        out.feed(f"line {i:02d}\n".encode(), T1)
    log.close()
    names = sorted(os.listdir(tmp_path))
    assert names == ["x-json.log", "x-json.log.1.gz", "x-json.log.2.gz"]
    with gzip.open(path + ".1.gz") as fh:
        assert b'"log":"line' in fh.read()
    lines = [data for _, data in logs.read(path)]
    # Oldest first, gaps nowhere: the last three files hold a contiguous run that ends with 29.
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(numbers[0], 30)) and numbers[0] > 0


def test_local_rotation_keeps_max_file(tmp_path):
    path = str(tmp_path / "local-logs" / "container.log")
    log = LocalLogFile(path, max_size=300, max_file=2, compress=False)
    out = LogStream(log, "stdout")
    for i in range(40):
        out.feed(f"entry {i}\n".encode(), T1)
    log.close()
    assert sorted(os.listdir(tmp_path / "local-logs")) == ["container.log", "container.log.1"]
    got = [data for _, data in logs.read(path, format="local")]
    assert got[-1] == b"entry 39\n" and len(got) < 40
