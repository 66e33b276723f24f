"""engine.utils.timefmt and engine.utils.units: Go's time format and go-units, shared by the client, the daemon and the shim."""

from __future__ import annotations

import io

import pytest

from engine.utils import stdcopy, timefmt, units


def test_rfc3339nano_ns():
    assert timefmt.rfc3339nano_ns(0) == "1970-01-01T00:00:00Z"
    assert timefmt.rfc3339nano_ns(1_500_000_000) == "1970-01-01T00:00:01.5Z"
    assert timefmt.rfc3339nano_ns(1_796_018_621_123_456_789) == "2026-11-30T06:03:41.123456789Z"


def test_rfc3339nano_of_seconds_and_the_zero_time():
    assert timefmt.rfc3339nano(None) == timefmt.rfc3339nano(0) == "0001-01-01T00:00:00Z"
    assert timefmt.rfc3339nano(1_796_018_621.5) == "2026-11-30T06:03:41.5Z"
    assert timefmt.rfc3339nano(1_796_018_621.0) == "2026-11-30T06:03:41Z"
    # A fraction that rounds up to a whole second carries into the seconds.
    assert timefmt.rfc3339nano(1_796_018_621.9999999999) == "2026-11-30T06:03:42Z"


def test_parse_rfc3339_reads_what_rfc3339nano_writes():
    for ts in (1_796_018_621.5, 1_700_000_000.0, 1_700_000_000.123456):
        assert timefmt.parse_rfc3339(timefmt.rfc3339nano(ts)) == pytest.approx(ts, abs=1e-6)
    assert timefmt.parse_rfc3339("2024-01-02T03:04:05+01:00") == timefmt.parse_rfc3339("2024-01-02T02:04:05Z")
    for bad in ("", None, 17, "yesterday"):
        assert timefmt.parse_rfc3339(bad) == 0.0


@pytest.mark.parametrize(
    ("value", "binary", "decimal"),
    [
        ("4096", 4096, 4096),
        ("10k", 10 << 10, 10_000),
        ("1m", 1 << 20, 1_000_000),
        ("1.5g", 3 << 29, 1_500_000_000),
        ("2MB", 2 << 20, 2_000_000),
        ("2MiB", 2 << 20, 2_000_000),
    ],
)
def test_ram_in_bytes_is_binary_and_from_human_size_decimal(value, binary, decimal):
    assert units.ram_in_bytes(value) == binary
    assert units.from_human_size(value) == decimal


@pytest.mark.parametrize(
    ("value", "message"), [("ten", "invalid size"), ("1x", "invalid suffix"), ("1.2.3m", "ParseFloat")]
)
def test_size_parsers_refuse(value, message):
    with pytest.raises(ValueError, match=message):
        units.ram_in_bytes(value)
    with pytest.raises(ValueError, match=message):
        units.from_human_size(value)


def test_human_sizes_and_durations():
    assert units.human_size(1_234_567) == "1.23MB"
    assert units.human_size(1_234_567, 4) == "1.235MB"
    assert units.bytes_size(1.5 * (1 << 30)) == "1.5GiB"
    assert units.human_duration(0.5) == "Less than a second"
    assert units.human_duration(150) == "2 minutes"
    assert units.human_duration(3600 * 50) == "2 days"


def test_parse_ulimit_says_why_in_go_units_words():
    assert units.parse_ulimit("nofile=1024:2048") == {"Name": "nofile", "Hard": 2048, "Soft": 1024}
    for bad, message in (
        ("nofile", "invalid ulimit argument: nofile"),
        ("bogus=1", "invalid ulimit type: bogus"),
        ("nofile=2:1", "must be less than or equal to hard limit: 2 > 1"),
        ("nofile=x", 'strconv.ParseInt: parsing "x": invalid syntax'),
    ):
        with pytest.raises(ValueError, match=message):
            units.parse_ulimit(bad)


def test_stdcopy_frames_round_trip():
    data = stdcopy.frame(stdcopy.STDOUT, b"out") + stdcopy.frame(stdcopy.STDERR, b"err") + stdcopy.frame(1, b"!")
    out, err = io.BytesIO(), io.BytesIO()
    stdcopy.demux(io.BytesIO(data).read, out, err)
    assert (out.getvalue(), err.getvalue()) == (b"out!", b"err")
    assert stdcopy.frame(stdcopy.STDERR, b"raw", tty=True) == b"raw"
    with pytest.raises(stdcopy.StreamError, match="Unrecognized input header: 7"):
        stdcopy.demux(io.BytesIO(stdcopy.frame(7, b"?")).read, out, err)
