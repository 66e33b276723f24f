"""The native exec driver against the shared exec driver conformance suite.

Every container runs as root in the session sandbox on this host's kernel;
the suite's ``box`` fixture terminates each one and removes its cgroups.
"""

from __future__ import annotations

from engine.testing.exectest import ExecDriverConformance


class TestNative(ExecDriverConformance):
    driver_name = "native"
