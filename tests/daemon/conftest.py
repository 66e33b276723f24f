"""Fixtures for the tests of the daemon's services (see :mod:`tests.daemon.fakes`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.daemon.fakes import Rig


@pytest.fixture
def rig(tmp_path) -> Iterator[Rig]:
    """A :class:`~tests.daemon.fakes.Rig` over ``<tmp_path>/root`` with the tiny image loaded.

    Creates: the root's stores and layers, a monitor thread, and one sleeping
    stand-in process per started container; all end and are removed afterwards.
    """
    r = Rig(str(tmp_path / "root"))
    try:
        r.load_image()
        yield r
    finally:
        r.close()
