"""The daemon's PID file: created at start, refused if it names a live process,
removed at exit (seed ch. 4 §4.1.5, ``utils.CreatePidFile``).

A zombie's PID counts as free: the daemon it names has exited.
"""

from __future__ import annotations

import errno
import os

from engine.errors import Conflict
from engine.sys.proc import pid_alive


def create_pidfile(path: str, pid: int | None = None) -> None:
    """Write ``pid`` (default: ours) to ``path``.

    :raises Conflict: the file names a process that is still running.
    """
    pid = os.getpid() if pid is None else pid
    try:
        with open(path, encoding="ascii") as fh:
            old = fh.read().strip()
    except FileNotFoundError:
        old = ""
    if old.isdigit() and int(old) != pid and pid_alive(int(old)):
        raise Conflict(f"pid file found, ensure the engine daemon is not running or delete {path} (pid {old} is alive)")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{pid}.tmp"
    with open(tmp, "w", encoding="ascii") as fh:
        fh.write(f"{pid}\n")
    os.replace(tmp, path)


def remove_pidfile(path: str, pid: int | None = None) -> None:
    """Remove ``path`` if it still holds ``pid`` (default: ours)."""
    pid = os.getpid() if pid is None else pid
    try:
        with open(path, encoding="ascii") as fh:
            if fh.read().strip() != str(pid):
                return
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
