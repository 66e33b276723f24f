"""Tests for the shim's json-file log (engine.shim.jsonlog) and protocol helpers, in tmp_path."""

from __future__ import annotations

import json
import os
import socket

import pytest

from engine.shim import protocol
from engine.shim.jsonlog import MAX_PARTIAL, JSONLogFile, LogStream, utf8_boundary


def entries(path) -> list[dict]:
    with open(path, "rb") as f:
        return [json.loads(line) for line in f.read().splitlines()]


def test_lines_are_split_at_newlines_and_partials_kept_until_eof(tmp_path):
    log = JSONLogFile(str(tmp_path / "x-json.log"))
    out = LogStream(log, "stdout")
    out.feed(b"one\ntw", "T1")
    out.feed(b"o\nthree", "T2")
    assert [e["log"] for e in entries(log.path)] == ["one\n", "two\n"]
    out.flush("T3")
    out.flush("T4")  # nothing left: no empty entry
    assert entries(log.path)[-1] == {"log": "three", "stream": "stdout", "time": "T3"}
    with open(log.path, "rb") as f:
        assert f.read().splitlines()[0] == b'{"log":"one\\n","stream":"stdout","time":"T1"}'


def test_long_lines_become_16k_partials_whatever_the_reads(tmp_path):
    log = JSONLogFile(str(tmp_path / "x-json.log"))
    err = LogStream(log, "stderr")
    err.feed(b"a" * (MAX_PARTIAL + 10) + b"\nb\n", "T")
    assert [e["log"] for e in entries(log.path)] == ["a" * MAX_PARTIAL, "a" * 10 + "\n", "b\n"]
    assert {e["stream"] for e in entries(log.path)} == {"stderr"}


def test_partials_do_not_split_utf8_characters(tmp_path):
    log = JSONLogFile(str(tmp_path / "x-json.log"))
    out = LogStream(log, "stdout")
    data = b"a" * (MAX_PARTIAL - 1) + "é".encode() + b"z\n"  # é straddles the 16 KiB mark
    out.feed(data, "T")
    logs = [e["log"] for e in entries(log.path)]
    assert logs == ["a" * (MAX_PARTIAL - 1), "éz\n"]
    out.feed(b"\xff\xfebad\n", "T")  # invalid UTF-8 is replaced, as Go does
    assert entries(log.path)[-1]["log"] == "\ufffd\ufffdbad\n"


@pytest.mark.parametrize(
    "data,end,cut",
    [
        (b"abc", 3, 3),
        ("aé".encode(), 3, 3),
        ("aé".encode(), 2, 1),
        ("a€".encode(), 3, 1),
        ("a€".encode(), 4, 4),
        ("a😀".encode(), 4, 1),
        ("a😀".encode(), 5, 5),
        (b"\x80\x80\x80\x80", 4, 4),
    ],
)
def test_utf8_boundary(data, end, cut):
    assert utf8_boundary(data, end) == cut


def test_rotation_keeps_max_file_files(tmp_path):
    path = str(tmp_path / "x-json.log")
    log = JSONLogFile(path, max_size=300, max_file=3)
    out = LogStream(log, "stdout")
    for i in range(100):
        out.feed(f"line {i}\n".encode(), "2026-11-30T06:03:41.123456789Z")
    names = sorted(os.listdir(tmp_path))
    assert names == ["x-json.log", "x-json.log.1", "x-json.log.2"]
    kept = entries(path + ".2") + entries(path + ".1") + entries(path)
    assert kept[-1]["log"] == "line 99\n"
    numbers = [int(e["log"].split()[1]) for e in kept]
    assert numbers == list(range(numbers[0], 100))
    for name in names:
        # Rotated before the entry that would start past max_size: at most one entry over.
        assert os.path.getsize(tmp_path / name) < 300 + 80


def test_rotation_with_one_file_truncates(tmp_path):
    path = str(tmp_path / "x-json.log")
    log = JSONLogFile(path, max_size=200, max_file=1)
    out = LogStream(log, "stdout")
    for i in range(50):
        out.feed(f"line {i}\n".encode(), "T")
    assert os.listdir(tmp_path) == ["x-json.log"]
    assert entries(path)[-1]["log"] == "line 49\n"
    assert os.path.getsize(path) < 200 + 60


def test_existing_log_is_appended_and_counted(tmp_path):
    path = tmp_path / "x-json.log"
    path.write_bytes(b"x" * 500 + b"\n")
    log = JSONLogFile(str(path), max_size=400, max_file=2)
    assert log.size == 501
    LogStream(log, "stdout").feed(b"new\n", "T")
    assert (tmp_path / "x-json.log.1").read_bytes() == b"x" * 500 + b"\n"
    assert entries(path) == [{"log": "new\n", "stream": "stdout", "time": "T"}]
    assert os.stat(path).st_mode & 0o777 == 0o640 & ~_umask()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_atomic_json_and_long_socket_paths(tmp_path):
    path = tmp_path / "state.json"
    protocol.write_json_atomic(str(path), {"Pid": 1})
    assert protocol.read_json(str(path)) == {"Pid": 1}
    assert protocol.read_json(str(tmp_path / "missing.json")) is None
    assert os.listdir(tmp_path) == ["state.json"]

    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    sock_path = str(deep / "shim.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        protocol.bind_unix(server, sock_path)
        server.listen(1)
        assert os.path.exists(sock_path)
        protocol.connect_unix(client, sock_path)
        conn, _ = server.accept()
        conn.close()
    finally:
        server.close()
        client.close()
