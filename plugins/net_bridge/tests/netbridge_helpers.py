"""Helpers shared by the bridge driver's kernel tests: rule snapshots, links, proxies, servers' clients.

A module of its own (not conftest) so that test modules can import it
whatever other conftest.py files the session loads.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from typing import Any

import pytest
from pyroute2 import IPRoute, NetlinkError

BUSYBOX = shutil.which("busybox") or "/bin/busybox"

#: Outside the sandbox these tests would reconfigure the real host's network.
in_own_netns = pytest.mark.root("its own network namespace", sandbox=True)


def rules_snapshot() -> set[str]:
    """Every rule and user chain of the filter and nat tables (no counters, no policies)."""
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    lines = set()
    table = ""
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A "):
            lines.add(f"{table} {line}")
        elif line.startswith(":") and line.split()[1] == "-":
            lines.add(f"{table} {line.split()[0]}")
    return lines


def count_rules(*fragments: str) -> int:
    """How many rules of ``iptables-save`` hold every fragment (copies counted, unlike :func:`rules_snapshot`)."""
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if line.startswith("-A ") and all(f in line for f in fragments))


def link_names(kind: str | None = None) -> set[str]:
    """Names of the session namespace's links (of one kind, if given)."""
    names = set()
    with IPRoute() as ipr:
        for msg in ipr.get_links():
            info = msg.get_attr("IFLA_LINKINFO")
            link_kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            if kind is None or link_kind == kind:
                names.add(msg.get_attr("IFLA_IFNAME"))
    return names


def proxy_pids() -> set[int]:
    """PIDs of running userland proxies (zombies excluded)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if b"engine_net_bridge.proxy" in cmdline and state != b"Z":
            found.add(int(entry))
    return found


def delete_link(name: str) -> None:
    with IPRoute() as ipr:
        try:
            ipr.link("del", ifname=name)
        except NetlinkError:
            pass


def read_sysctl(name: str) -> str:
    with open(f"/proc/sys/net/ipv4/{name}") as fh:
        return fh.read().strip()


def write_sysctl(name: str, value: str) -> None:
    with open(f"/proc/sys/net/ipv4/{name}", "w") as fh:
        fh.write(value + "\n")


def http_get(host: str, port: int, timeout: float = 3) -> str:
    """GET / with busybox wget; the body, or "" if it failed."""
    # timeout(1), not wget -T: Debian's busybox 1.35 wget crashes on -T.
    proc = subprocess.run(
        ["timeout", "-s", "KILL", str(timeout), BUSYBOX, "wget", "-q", "-O-", f"http://{host}:{port}/"],
        capture_output=True,
        text=True,
        timeout=timeout + 5,
    )
    return proc.stdout if proc.returncode == 0 else ""


def free_port() -> int:
    """A TCP port nothing listens on now (outside the ephemeral range)."""
    for port in range(20000, 30000):
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port")


def in_ns(path: str, *argv: str, timeout: float = 10, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a command in a container's network namespace (``nsenter --net``)."""
    return subprocess.run(
        ["nsenter", f"--net={path}", *argv], capture_output=True, text=True, timeout=timeout, **kwargs
    )
