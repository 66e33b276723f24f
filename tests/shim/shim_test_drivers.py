"""Exec drivers that misbehave on purpose, loaded by shims under test (not a test module).

The shim imports this module by name (``shim.json``'s ``driver.module``),
with this directory on its ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from engine.drivers.exec import Command, Pipes
from engine.testing.hostexec import HostProcessDriver


class FailsAfterStart(HostProcessDriver):
    """Starts the process, reports it, then loses it and raises: an internal error after start."""

    def run(self, command: Command, pipes: Pipes, start_callback: Callable[[int], Any] | None = None) -> int:
        pid = self._spawn(command.process, pipes)
        self._groups[command.id] = pid
        if start_callback is not None:
            start_callback(pid)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise RuntimeError("lost track of the container")


class SlowStart(HostProcessDriver):
    """Takes 1.5 s before it starts anything: longer than a test's start timeout."""

    def run(self, command: Command, pipes: Pipes, start_callback: Callable[[int], Any] | None = None) -> int:
        time.sleep(1.5)
        return super().run(command, pipes, start_callback)


class Noisy(HostProcessDriver):
    """Warns on stderr when it is built, in the launcher, before the start result."""

    def __init__(self, home: str = "", options: Any = None) -> None:
        import sys

        sys.stderr.write("Noisy: a warning on the launcher's stderr\n")
        sys.stderr.flush()
        super().__init__(home, options)


def report_helper(args: list[Any], fds: dict[int, int]) -> int:
    """A fork-server helper (``ForkServer.spawn``): writes its args, PID and parent to the first fd; exits 3."""
    import json

    out = fds[args[0]]
    os.write(out, json.dumps({"args": args, "pid": os.getpid(), "ppid": os.getppid(), "fds": len(fds)}).encode())
    os.close(out)
    return 3


def failing_helper(args: list[Any], fds: dict[int, int]) -> int:
    """A fork-server helper that raises: its traceback goes to its stderr."""
    raise RuntimeError(f"helper failed with {args!r}")
