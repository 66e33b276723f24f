"""A btrfs file system on a loop device for the btrfs driver's tests."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from engine.sys import fs
from engine.testing.loopfs import filesystem_supported, loop_filesystem, mkfs_available


def btrfs_unavailable() -> str | None:
    """Why a loop-mounted btrfs cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (loop devices, mounts)"
    if not mkfs_available("btrfs"):
        return "mkfs.btrfs is not installed (Debian: btrfs-progs)"
    if not filesystem_supported("btrfs"):
        return "the kernel has no btrfs"
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices (/dev/loop-control)"
    return None


@pytest.fixture(scope="module")
def btrfs_mount(tmp_path_factory: Any) -> Iterator[str]:
    """A fresh 4 GiB (sparse) btrfs, loop-mounted for the module.

    Creates: ``<tmp>/btrfs.img``, a loop device, the mount ``<tmp>/btrfs.mnt``;
    all undone afterwards, also when a test fails.
    """
    reason = btrfs_unavailable()
    if reason:
        pytest.skip(reason)
    with loop_filesystem(str(tmp_path_factory.mktemp("btrfs")), "btrfs", size=4 << 30) as point:
        yield point


@pytest.fixture
def tmp_path(btrfs_mount: str) -> Iterator[Any]:
    """A fresh directory on the module's btrfs, in place of pytest's own ``tmp_path``.

    The conformance suite's ``driver`` fixture builds the driver's root in
    ``tmp_path``: this puts it on btrfs. Removed afterwards (subvolumes too).
    """
    import pathlib

    path = os.path.join(btrfs_mount, secrets.token_hex(6))
    os.mkdir(path)
    try:
        yield pathlib.Path(path)
    finally:
        fs.safe_rmtree(path)
