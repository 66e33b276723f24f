"""Fixtures for the side-by-side integration tests: one daemon of each kind per module."""

from __future__ import annotations

import os

import pytest

from engine.testing import dockerd as reference
from engine.testing.sidebyside import KINDS, running


@pytest.fixture(scope="module", params=KINDS)
def target(request, tmp_path_factory):
    """Our daemon (``-s vfs``) or the reference dockerd, with busybox loaded.

    Creates: a work directory (root, socket, log, a DOCKER_CONFIG); the daemon's processes.
    Every container and volume is removed and the daemon stopped afterwards
    (:func:`engine.testing.sidebyside.running`).
    """
    if os.geteuid() != 0:
        pytest.skip("the daemons need root")
    if request.param == "dockerd" and not reference.available():
        pytest.skip("dockerd is not installed")
    # A short directory: containerd's socket path below it must fit in sun_path (108 bytes).
    with running(request.param, str(tmp_path_factory.mktemp(request.param[:2]))) as t:
        yield t


@pytest.fixture
def clean(target):
    """Removes the containers a test leaves behind."""
    before = target.container_ids()
    yield target
    left = target.container_ids() - before
    if left:
        target.docker("rm", "-f", *left, check=False)
