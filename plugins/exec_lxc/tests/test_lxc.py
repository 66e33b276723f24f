"""The lxc exec driver against the shared exec driver conformance suite.

Every container runs as root in the session sandbox, started by LXC 5's
``lxc-start``; the suite's ``box`` fixture terminates each one and removes
its cgroups (LXC's own below the engine's, and its monitor's).
"""

from __future__ import annotations

from engine.testing.exectest import ExecDriverConformance


class TestLxc(ExecDriverConformance):
    driver_name = "lxc"
    ptmx_is_bind_mount = True
