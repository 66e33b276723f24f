"""Processes for tests: looking at them through /proc (by PID; nothing here signals
anything), waiting for what they do, and running a piece of a test in a forked child."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first, then the parent)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != b"Z"


def cmdline(pid: int) -> str:
    """The command line, arguments joined by spaces ("" once it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def children_of(parents: list[int]) -> list[int]:
    """Live processes whose parent is one of ``parents``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields is not None and fields[0] != b"Z" and int(fields[1]) in parents:
                found.append(int(entry))
    return found


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait until ``pid`` exited (gone or a zombie); AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for process {pid} to exit")
        time.sleep(0.02)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something true, and return that; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def run_in_child(body: Callable[[], None]) -> None:
    """Run ``body`` in a forked child and fail with its exception's text if it raises.

    For calls that change the calling process for good (unshare, capset, a
    seccomp filter): the test process keeps its namespaces and privileges.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            body()
        except BaseException as exc:  # report anything, never return into pytest
            os.write(w, f"{type(exc).__name__}: {exc}".encode())
            os._exit(1)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        message = fh.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, message
