"""Exec drivers that misbehave on purpose, loaded by shims under test (not a test module).

The shim imports this module by name (``shim.json``'s ``driver.module``),
with this directory on its ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from engine.drivers.exec import Command, Pipes
from engine.testing.hostexec import HostProcessDriver

#: The process that imported this module: a helper that finds another's number was forked warm.
IMPORTED_BY = os.getpid()


class FailsAfterStart(HostProcessDriver):
    """Starts the process, then, waiting for it, loses it and raises: an internal error after start."""

    def wait(self, command: Command) -> int:
        pid = self._pid(command)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise RuntimeError("lost track of the container")


class SlowStart(HostProcessDriver):
    """Takes 1.5 s before it starts anything: longer than a test's start timeout."""

    def start(self, command: Command, pipes: Pipes) -> int:
        time.sleep(1.5)
        return super().start(command, pipes)


class Noisy(HostProcessDriver):
    """Warns on stderr when it is built, in the launcher, before the start result."""

    def __init__(self, home: str = "", options: Any = None) -> None:
        import sys

        sys.stderr.write("Noisy: a warning on the launcher's stderr\n")
        sys.stderr.flush()
        super().__init__(home, options)


def report_helper(args: list[Any], fds: dict[int, int]) -> int:
    """A fork-server helper (``ForkServer.spawn``): writes its args, PID, parent, command line and
    who imported this module to the first fd; exits 3."""
    import json

    out = fds[args[0]]
    with open("/proc/self/cmdline", "rb") as fh:
        cmdline = fh.read().replace(b"\0", b" ").decode()
    report = {
        "args": args,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "fds": len(fds),
        "cmdline": cmdline,
        "imported_by": IMPORTED_BY,
    }
    os.write(out, json.dumps(report).encode())
    os.close(out)
    return 3


def failing_helper(args: list[Any], fds: dict[int, int]) -> int:
    """A fork-server helper that raises: its traceback goes to its stderr."""
    raise RuntimeError(f"helper failed with {args!r}")
