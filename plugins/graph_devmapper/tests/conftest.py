"""Fixtures for the devicemapper driver's tests: small pool sizes, and the VM's rule that nothing may skip.

On a host without device-mapper (this one) the tests that need it skip with
the probe's reason. ``vmtest/run`` boots a kernel that has it and sets
``ENGINE_DEVMAPPER_VM=1``: there a skip would hide a broken driver, so the
probe's refusal fails the test instead.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from engine.errors import NotSupported
from engine_graph_devmapper.driver import DevmapperDriver

IN_VM = os.environ.get("ENGINE_DEVMAPPER_VM") == "1"


def devmapper_unavailable(options: tuple[str, ...] = ()) -> str | None:
    """Why the driver cannot run here (the probe's reason), or None."""
    if os.geteuid() != 0:
        return "needs root (device-mapper, loop devices, mounts)"
    try:
        DevmapperDriver.probe("/nonexistent/devicemapper", options)
    except NotSupported as exc:
        return str(exc)
    return None


@pytest.fixture
def needs_devmapper() -> None:
    """Skip (fail in the VM) with the probe's reason where device-mapper cannot run."""
    reason = devmapper_unavailable()
    if reason:
        if IN_VM:
            pytest.fail(f"devmapper must run in the VM but cannot: {reason}")
        pytest.skip(reason)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:
    report = yield
    if IN_VM and report.when == "setup" and report.skipped:
        # Turn the skip into a failure where device-mapper must work.
        report.outcome = "failed"
        report.longrepr = f"skipped in the devmapper VM, which must run it: {report.longrepr}"
    return report
