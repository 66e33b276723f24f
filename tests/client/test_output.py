"""Output helpers that must print what the docker CLI prints: ports, ``ps`` fields, stats, events, JSON,
timestamps, tables; and the stream helpers (stdcopy frames, detach keys)."""

from __future__ import annotations

import io
import json

import pytest

from engine.client.apihelp import ellipsis, filters_json, get_timestamp, go_quote, indent_json
from engine.client.commands.container_info import PsRow, StatsRow, cpu_percent, displayable_ports, memory_usage
from engine.client.commands.system import disk_usage_rows, format_event
from engine.client.hijack import EscapeProxy, HijackError, parse_detach_keys, stdcopy
from engine.utils.stdcopy import frame
from engine.utils.tables import tabwrite


def P(private, kind="tcp", ip="", public=0):
    return (
        {"IP": ip, "PrivatePort": private, "PublicPort": public, "Type": kind}
        if ip
        else {"PrivatePort": private, "PublicPort": public, "Type": kind}
    )


# The cases of the docker CLI's TestDisplayablePorts (cli/command/formatter/container_test.go).
@pytest.mark.parametrize(
    "ports, expected",
    [
        ([P(9988)], "9988/tcp"),
        ([P(9988, "udp")], "9988/udp"),
        ([P(9988, ip="0.0.0.0")], "0.0.0.0:0->9988/tcp"),
        ([P(9988, ip="::")], "[::]:0->9988/tcp"),
        ([P(9988, public=8899)], "9988/tcp"),
        ([P(9988, ip="4.3.2.1", public=8899)], "4.3.2.1:8899->9988/tcp"),
        ([P(9988, ip="::1", public=8899)], "[::1]:8899->9988/tcp"),
        ([P(9988, ip="4.3.2.1", public=9988)], "4.3.2.1:9988->9988/tcp"),
        ([P(9988, ip="::1", public=9988)], "[::1]:9988->9988/tcp"),
        ([P(9988, "udp"), P(9988, "udp")], "9988/udp, 9988/udp"),
        ([P(9998, "udp", "1.2.3.4", 9998), P(9999, "udp", "1.2.3.4", 9999)], "1.2.3.4:9998-9999->9998-9999/udp"),
        ([P(9998, "udp", "::1", 9998), P(9999, "udp", "::1", 9999)], "[::1]:9998-9999->9998-9999/udp"),
        (
            [P(9998, "udp", "1.2.3.4", 8887), P(9999, "udp", "1.2.3.4", 8888)],
            "1.2.3.4:8887->9998/udp, 1.2.3.4:8888->9999/udp",
        ),
        ([P(9998, "udp"), P(9999, "udp")], "9998-9999/udp"),
        ([P(6677, "tcp", "1.2.3.4", 7766), P(9988, "udp", public=8899)], "9988/udp, 1.2.3.4:7766->6677/tcp"),
        (
            [
                P(9988, "udp", "1.2.3.4", 8899),
                P(9988, "tcp", "1.2.3.4", 8899),
                P(2233, "tcp", "4.3.2.1", 3322),
                P(2233, "tcp", "::1", 3322),
            ],
            "4.3.2.1:3322->2233/tcp, [::1]:3322->2233/tcp, 1.2.3.4:8899->9988/tcp, 1.2.3.4:8899->9988/udp",
        ),
        (
            [
                P(80),
                P(1024),
                P(80, "udp"),
                P(1024, "udp"),
                P(1024, "tcp", "1.1.1.1", 80),
                P(1024, "udp", "1.1.1.1", 80),
                P(80, "tcp", "1.1.1.1", 1024),
                P(80, "udp", "1.1.1.1", 1024),
                P(1024, "tcp", "2.1.1.1", 80),
                P(1024, "udp", "2.1.1.1", 80),
                P(80, "tcp", "2.1.1.1", 1024),
                P(80, "udp", "2.1.1.1", 1024),
                P(12345, "sctp"),
            ],
            "80/tcp, 80/udp, 1024/tcp, 1024/udp, 12345/sctp, 1.1.1.1:1024->80/tcp, 1.1.1.1:1024->80/udp, "
            "2.1.1.1:1024->80/tcp, 2.1.1.1:1024->80/udp, 1.1.1.1:80->1024/tcp, 1.1.1.1:80->1024/udp, "
            "2.1.1.1:80->1024/tcp, 2.1.1.1:80->1024/udp",
        ),
        ([P(80, ip="0.0.0.0", public=8080), P(80, ip="::", public=8080)], "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp"),
    ],
)
def test_displayable_ports(ports, expected):
    assert displayable_ports(ports) == expected


SUMMARY = {
    "Id": "b49c029db5002b33b681e95a31685f22143dfd8e4a1f892475b0b35c0a8511c9",
    "Names": ["/web", "/other/alias"],
    "Image": "busybox",
    "ImageID": "sha256:c5779a749cb1ed7e9b7d5c9b8e1c6a8b4fbd1e4b9e8c25d6f3e1cf8f00d3c9a1",
    "Command": "sh -c 'echo started; while true; do sleep 1; done'",
    "Created": 1000,
    "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}],
    "Labels": {"b": "2", "a": "1"},
    "State": "running",
    "Status": "Up 2 seconds",
    "SizeRw": 10,
    "SizeRootFs": 1983000,
    "NetworkSettings": {"Networks": {"bridge": {}, "alpha": {}}},
    "Mounts": [{"Name": "a-very-long-volume-name", "Source": "/x", "Driver": "local"}, {"Source": "/host/dir"}],
}


def test_ps_row_fields():
    row = PsRow(SUMMARY, trunc=True, now=1005)
    assert row.ID() == "b49c029db500"
    assert row.Names() == "web"
    assert row.Image() == "busybox"
    assert row.Command() == '"sh -c \'echo started…"'
    assert row.RunningFor() == "5 seconds ago"
    assert row.Ports() == "0.0.0.0:8080->80/tcp"
    assert row.Size() == "10B (virtual 1.98MB)"
    assert row.Labels() == "a=1,b=2" and row.Label("b") == "2"
    assert row.Mounts() == "a-very-long-vo…,/host/dir" and row.LocalVolumes() == "1"
    assert row.Networks() == "alpha,bridge"
    full = PsRow(SUMMARY, trunc=False, now=1005)
    assert full.ID() == SUMMARY["Id"] and full.Names() == "web,other/alias"
    assert full.Command() == json.dumps(SUMMARY["Command"])
    assert sorted(row.to_json()) == [
        "Command",
        "CreatedAt",
        "ID",
        "Image",
        "Labels",
        "LocalVolumes",
        "Mounts",
        "Names",
        "Networks",
        "Platform",
        "Ports",
        "RunningFor",
        "Size",
        "State",
        "Status",
    ]


@pytest.mark.parametrize(
    "image, image_id, expected",
    [
        ("docker.io/library/busybox:latest", "sha256:aa", "busybox:latest"),
        ("localhost:5000/team/app", "sha256:aa", "localhost:5000/team/app"),
        ("busybox@sha256:" + "a" * 64, "sha256:bb", "busybox"),
        ("sha256:c5779a749cb1ed7e", "sha256:c5779a749cb1ed7e9b7d", "c5779a749cb1"),
        ("", "sha256:aa", "<no image>"),
    ],
)
def test_ps_image_column(image, image_id, expected):
    assert PsRow(dict(SUMMARY, Image=image, ImageID=image_id), trunc=True).Image() == expected


STATS = {
    "name": "/web",
    "id": "b49c029db5002b33b681e95a31685f22143dfd8e4a1f892475b0b35c0a8511c9",
    "cpu_stats": {"cpu_usage": {"total_usage": 300_000_000}, "system_cpu_usage": 20_000_000_000, "online_cpus": 4},
    "precpu_stats": {"cpu_usage": {"total_usage": 100_000_000}, "system_cpu_usage": 10_000_000_000},
    "memory_stats": {"usage": 10 << 20, "limit": 1 << 30, "stats": {"inactive_file": 2 << 20}},
    "networks": {"eth0": {"rx_bytes": 1500, "tx_bytes": 2_500_000}},
    "blkio_stats": {
        "io_service_bytes_recursive": [
            {"op": "Read", "value": 4096},
            {"op": "write", "value": 1000},
            {"op": "Total", "value": 5096},
        ]
    },
    "pids_stats": {"current": 3},
}


def test_stats_computation():
    # (200M / 10G) * 4 CPUs * 100
    assert cpu_percent(STATS) == pytest.approx(8.0)
    assert memory_usage(STATS) == 8 << 20
    v1 = dict(STATS, memory_stats={"usage": 10 << 20, "stats": {"total_inactive_file": 1 << 20, "inactive_file": 5}})
    assert memory_usage(v1) == 9 << 20
    row = StatsRow("web", STATS)
    assert (row.ID(), row.Name(), row.CPUPerc(), row.MemUsage(), row.MemPerc()) == (
        "b49c029db500",
        "web",
        "8.00%",
        "8MiB / 1GiB",
        "0.78%",
    )
    assert (row.NetIO(), row.BlockIO(), row.PIDs()) == ("1.5kB / 2.5MB", "4.1kB / 1kB", "3")
    missing = StatsRow("gone", None)
    assert (missing.Name(), missing.CPUPerc(), missing.MemUsage(), missing.PIDs()) == ("--", "--", "-- / --", "--")
    assert cpu_percent(
        {
            "cpu_stats": {"cpu_usage": {"total_usage": 5, "percpu_usage": [1, 2]}, "system_cpu_usage": 10},
            "precpu_stats": {},
        }
    ) == pytest.approx(100.0)


def test_indent_json_keeps_the_daemon_text():
    raw = b'[{"A":[],"B":{},"C":"x\\u003cy","D":[1,{"E":null}],"F":true}]'
    assert indent_json(raw) == (
        '[\n    {\n        "A": [],\n        "B": {},\n        "C": "x\\u003cy",\n'
        '        "D": [\n            1,\n            {\n                "E": null\n'
        '            }\n        ],\n        "F": true\n    }\n]'
    )
    assert indent_json(b"[]") == "[]"
    doc = [{"a": "b: c, d", "e": [1.5, -2, "[{"]}]
    assert indent_json(json.dumps(doc)) == json.dumps(doc, indent=4)


def test_quote_ellipsis_filters():
    assert go_quote("sh -c 'x'") == "\"sh -c 'x'\""
    assert go_quote('a"b\\c\n\x01é') == '"a\\"b\\\\c\\n\\x01é"'
    assert ellipsis("0123456789abcdefghijXYZ", 20) == "0123456789abcdefghi…"
    assert ellipsis("short", 20) == "short"
    assert (
        filters_json(["name=web", "status=exited", "name=db"])
        == '{"name":{"web":true,"db":true},"status":{"exited":true}}'
    )
    assert filters_json([]) is None


def test_timestamps():
    assert get_timestamp("10m", now=10_000) == "9400"
    assert get_timestamp("1h30m", now=10_000) == "4600"
    assert get_timestamp("2024-01-01T00:00:00Z") == "1704067200.000000000"
    assert get_timestamp("2024-01-01T10:00:00.5+01:00") == "1704099600.500000000"
    assert get_timestamp("1700000000") == "1700000000"
    assert get_timestamp("1700000000.123") == "1700000000.123"
    with pytest.raises(Exception, match="failed to parse value as time or duration"):
        get_timestamp("yesterday")


def test_tabwriter_like_go():
    out = io.StringIO()
    tabwrite(["TYPE\tTOTAL\tSIZE", "Images\t1\t1.983MB", "Local Volumes\t0\t0B"], out)
    assert out.getvalue() == (
        "TYPE            TOTAL     SIZE\nImages          1         1.983MB\nLocal Volumes   0         0B\n"
    )


def test_event_lines():
    event = {
        "Type": "container",
        "Action": "die",
        "Actor": {"ID": "abc", "Attributes": {"name": "web", "exitCode": "0", "image": "busybox"}},
        "time": 1704067200,
        "timeNano": 1704067200123456789,
    }
    assert format_event(event).endswith("container die abc (exitCode=0, image=busybox, name=web)")
    assert format_event(event)[19:29] == ".123456789"
    assert format_event({"Type": "volume", "Action": "create", "Actor": {"ID": "v"}}) == "volume create v"


def test_disk_usage_rows():
    du = {
        "LayersSize": 2000,
        "Images": [{"Containers": 1, "Size": 1500, "SharedSize": 0}, {"Containers": 0, "Size": 500, "SharedSize": 0}],
        "Containers": [{"State": "running", "SizeRw": 10}, {"State": "exited", "SizeRw": 30}],
        "Volumes": [{"UsageData": {"Size": 100, "RefCount": 0}}, {"UsageData": {"Size": -1, "RefCount": 1}}],
        "BuildCache": [],
    }
    rows = [(r.Type(), r.TotalCount(), r.Active(), r.Size(), r.Reclaimable()) for r in disk_usage_rows(du)]
    assert rows == [
        ("Images", "2", "1", "2kB", "500B (25%)"),
        ("Containers", "2", "1", "40B", "30B (75%)"),
        ("Local Volumes", "2", "1", "100B", "100B (100%)"),
        ("Build Cache", "0", "0", "0B", "0B"),
    ]


def test_stdcopy_demultiplexes():
    stream = io.BytesIO(frame(1, b"out1\n") + frame(2, b"err\n") + frame(1, b"") + frame(1, b"out2\n"))
    out, err = io.BytesIO(), io.BytesIO()
    stdcopy(stream.read, out, err)
    assert (out.getvalue(), err.getvalue()) == (b"out1\nout2\n", b"err\n")
    with pytest.raises(HijackError, match="error from daemon in stream: boom"):
        stdcopy(io.BytesIO(frame(1, b"x") + frame(3, b"boom")).read, io.BytesIO(), None)
    stdcopy(io.BytesIO(frame(1, b"x") + b"\x01\x00").read, io.BytesIO(), None)  # a torn header is EOF


def test_detach_keys():
    assert parse_detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert parse_detach_keys("ctrl-@,a,DEL,ctrl-\\") == b"\x00a\x7f\x1c"
    with pytest.raises(Exception, match="Unknown character: 'ctrl-1'"):
        parse_detach_keys("ctrl-1")
    proxy = EscapeProxy(b"\x10\x11")
    assert proxy.feed(b"ab") == (b"ab", False)
    assert proxy.feed(b"\x10") == (b"", False)
    assert proxy.feed(b"x") == (b"\x10x", False)
    assert proxy.feed(b"\x10") == (b"", False)
    assert proxy.feed(b"\x11") == (b"", True)
    assert EscapeProxy(b"\x10\x11").feed(b"ls\x10\x11more") == (b"ls", True)
    assert EscapeProxy(b"\x10\x11").feed(b"\x10\x10\x11") == (b"\x10", True)
