"""The markers of the whole suite (``tests/`` and every plugin's ``tests/``): ``root`` and ``slow``.

* ``@pytest.mark.root`` marks a test that needs root and the kernel
  (namespaces, mounts, cgroups, iptables, a daemon). Without root it is
  skipped, with the reason: ``root("cgroups")`` says which part needs it,
  and ``root(sandbox=True)`` also skips it outside the test sandbox
  (:mod:`engine.testing.sandbox`: its own network namespace). A test that
  uses one of :data:`ROOT_FIXTURES` is a root test without saying so.
* ``@pytest.mark.slow`` marks a test that takes seconds even on an idle
  machine: it waits out a timeout, runs many real processes, or builds a
  virtualenv (a test that uses one of :data:`SLOW_FIXTURES`).

``pytest -m "not root"`` is the fast loop: it runs everything that needs
neither root nor a daemon.
"""

from __future__ import annotations

import os

import pytest

from engine.testing.sandbox import in_sandbox

#: Fixtures that need root, and why (a test using one is marked ``root``).
ROOT_FIXTURES = {
    "daemon": "a daemon",
    "client_daemon": "a daemon",
    "cgroup_parent": "cgroups",
    "rig": "layers keep their owners",
}

#: Fixtures that take seconds to make (a test using one is marked ``slow``).
SLOW_FIXTURES = ("venv",)  # tests/admin: a virtualenv with a third-party driver, built with pip


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:  # noqa: ARG001
    """Mark the tests that use a root or a slow fixture, and skip every root test that cannot run here."""
    is_root = os.geteuid() == 0
    for item in items:
        if any(name in item.fixturenames for name in SLOW_FIXTURES):
            item.add_marker(pytest.mark.slow)
        uses = next((why for name, why in ROOT_FIXTURES.items() if name in item.fixturenames), None)
        if uses is not None and item.get_closest_marker("root") is None:
            item.add_marker(pytest.mark.root(uses))
        marker = item.get_closest_marker("root")
        if marker is None:
            continue
        why = marker.args[0] if marker.args else "namespaces, mounts"
        if not is_root:
            item.add_marker(pytest.mark.skip(reason=f"needs root ({why})"))
        elif marker.kwargs.get("sandbox") and not in_sandbox():
            item.add_marker(pytest.mark.skip(reason=f"needs root inside the test sandbox ({why})"))
