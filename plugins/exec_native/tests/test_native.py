"""The native exec driver against the shared exec driver conformance suite.

Every container runs as root in the session sandbox on this host's kernel;
the suite's ``box`` fixture terminates each one and removes its cgroups.
"""

from __future__ import annotations

import os

from engine.drivers.exec import Pipes, ProcessConfig
from engine.sys.proc import stat_fields
from engine.testing.exectest import ExecDriverConformance
from engine.testing.images import PATH_ENV


class TestNative(ExecDriverConformance):
    driver_name = "native"

    def test_exec_helper_is_a_fork_of_the_fork_server(self, box, driver, helpers):
        """With ``helpers`` (as the daemon sets them) the exec helper starts no interpreter."""
        command = box.command(["sleep", "1000"])
        box.start(command).wait_started()
        helpers_seen: list[tuple[int | None, str]] = []

        def started(pid: int) -> None:  # the exec'd process -> the helper: who forked it, what it runs
            helper = ppid(pid)
            helpers_seen.append((ppid(helper) if helper else None, cmdline(helper) if helper else ""))

        code = driver.exec(command, ProcessConfig(args=["sleep", "0.2"], env=[PATH_ENV]), Pipes(), started)
        assert code == 0
        [(parent, line)] = helpers_seen
        if helpers is None:
            assert parent == os.getpid()  # a new interpreter, our child
        else:
            # A copy of the warm fork server (forked through its template), not our child.
            assert "engine.shim.forkserver" in line and parent != os.getpid()


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().replace(b"\0", b" ").decode()


def ppid(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[1]) if fields else None
