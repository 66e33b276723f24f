"""Readers of ``/proc``: the mount table (``mountinfo``) and whether a process lives; and
:func:`default_signals`, for a child about to exec.

Standard library only, and no ctypes: every container's shim imports this
module through the cgroup manager (:mod:`engine.sys.cgroups`), and the
shim's memory is counted per container.
"""

from __future__ import annotations

import os
import re
import signal
from typing import NamedTuple


class Mount(NamedTuple):
    """One line of ``/proc/self/mountinfo`` (proc(5)), escapes undone."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    #: The path inside the mounted file system that is mounted here (field 4: ``/``
    #: normally; a sub-path for a bind mount of a sub-tree or inside a cgroup namespace).
    root: str
    mount_point: str
    options: str
    fstype: str
    source: str
    super_options: str


_OCTAL = re.compile(rb"\\([0-7]{3})")


def _unescape(field: bytes) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for a space, ...)."""
    return os.fsdecode(_OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), field))


def mountinfo(path: str = "/proc/self/mountinfo") -> list[Mount]:
    """The mounts of this process's mount namespace, in mount order (lines that do not parse are skipped)."""
    with open(path, "rb") as f:
        data = f.read()
    mounts = []
    for line in data.splitlines():
        fields = line.split(b" ")
        # Optional fields (``shared:1``, ...) stand between field 6 and the "-" separator.
        try:
            sep = fields.index(b"-", 6)
            major, minor = fields[2].split(b":")
            mounts.append(
                Mount(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    major=int(major),
                    minor=int(minor),
                    root=_unescape(fields[3]),
                    mount_point=_unescape(fields[4]),
                    options=fields[5].decode(),
                    fstype=fields[sep + 1].decode(),
                    source=_unescape(fields[sep + 2]),
                    super_options=fields[sep + 3].decode() if len(fields) > sep + 3 else "",
                )
            )
        except (ValueError, IndexError):
            continue
    return mounts


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (the state first, then the parent); None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (field 22 of ``/proc/<pid>/stat``): with the
    PID, it names one process, never a later one that got the PID again. None when gone."""
    fields = stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def boot_time() -> float:
    """When the machine booted, in seconds since the epoch (``btime`` of ``/proc/stat``)."""
    with open("/proc/stat", "rb") as fh:
        for line in fh:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def started_at(pid: int) -> float | None:
    """When ``pid`` started, in seconds since the epoch (to the clock tick); None when gone."""
    ticks = start_time(pid)
    if ticks is None:
        return None
    return boot_time() + ticks / os.sysconf("SC_CLK_TCK")


def reap(pid: int) -> None:
    """Wait for our child ``pid``; nothing if it is not, or no longer, ours (another waiter took it)."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a zombie is dead, merely not reaped yet)."""
    if pid <= 0:
        # kill(0, ...) and kill(-1, ...) address groups, not a process.
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = stat_fields(pid)
    return bool(fields and fields[0] != b"Z")


def default_signals() -> None:
    """Every signal at its default disposition and an empty signal mask, in a child about to exec:
    an ignored signal survives execve(2) (signal(7)), and Python ignores SIGPIPE and SIGXFSZ.

    Only the signals whose disposition is not known to be the default are set: Python records
    each signal's disposition at its start and follows every change made through it
    (``getsignal`` is None for one it did not set), so the sixty others cost no system call (a
    quarter of a millisecond of each exec).
    """
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            if signal.getsignal(sig) is not signal.SIG_DFL:
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):  # signals reserved by the C library
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
