"""Kernel samepage merging (KSM): what this host offers, and a process's opt-in.

ksmd merges pages of identical content into one copy-on-write page. A
process opts in as a whole with ``prctl(PR_SET_MEMORY_MERGE)`` (Linux 6.4);
ksmd merges its pages only while it runs (``/sys/kernel/mm/ksm/run`` is 1),
which is the host's choice: scanning costs CPU, and merged pages are a
timing side channel between the processes whose pages can merge.

The shims opt in with ``--shim-memory-merge``: after the fork, most of a
shim's own pages hold the same bytes in every shim (the same Python objects,
touched the same way).
"""

from __future__ import annotations

import errno

from engine.sys import libc

RUN_FILE = "/sys/kernel/mm/ksm/run"


def unsupported() -> str | None:
    """Why this kernel cannot merge a whole process's pages; None if it can."""
    try:
        libc.prctl(libc.PR_GET_MEMORY_MERGE)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return "the kernel has no PR_SET_MEMORY_MERGE (Linux 6.4 and CONFIG_KSM)"
        return f"PR_GET_MEMORY_MERGE failed: {exc.strerror}"
    return None


def ksmd_running(run_file: str = RUN_FILE) -> bool:
    """Whether ksmd merges pages now (``run`` is 1; 0 stops it, 2 unmerges everything)."""
    try:
        with open(run_file) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def why_not_merging(run_file: str = RUN_FILE) -> str | None:
    """Why a process that opts in would not have its pages merged here; None if it would."""
    return unsupported() or (None if ksmd_running(run_file) else f"ksmd does not run ({run_file} is not 1)")


def merge_this_process() -> bool:
    """Opt this process in; False where the kernel cannot. Its children inherit it, across
    ``execve`` too: call it only in a process that forks nothing that must not be merged."""
    try:
        libc.prctl(libc.PR_SET_MEMORY_MERGE, 1)
    except OSError:
        return False
    return True


def merging(pid: int | str = "self") -> bool:
    """Whether the process opted in (``ksm_merge_any`` of ``/proc/PID/ksm_stat``)."""
    try:
        with open(f"/proc/{pid}/ksm_stat") as f:
            return any(line.split() == ["ksm_merge_any:", "yes"] for line in f)
    except OSError:
        return False
