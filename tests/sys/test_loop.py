"""Tests for engine.sys.loop: attach a file to a loop device, find it, autoclear, detach.

Root-level: each test attaches real loop devices in the session sandbox and
detaches what it attached in a finalizer, also when it fails.
"""

from __future__ import annotations

import os
import stat

import pytest

from engine.sys import loop

pytestmark = [
    pytest.mark.root("loop devices"),
    pytest.mark.skipif(not os.path.exists("/dev/loop-control"), reason="no loop driver (/dev/loop-control)"),
]


@pytest.fixture
def image(tmp_path):
    """A sparse 64 MiB file; any loop device still bound to it is detached afterwards."""
    path = str(tmp_path / "disk.img")
    with open(path, "wb") as f:
        f.truncate(64 << 20)
    yield path
    device = loop.find_attached(path)
    if device is not None:
        loop.detach(device)  # with users left, it goes at their last close


def test_attach_find_detach(image):
    with loop.attach(image, autoclear=False) as device:
        assert stat.S_ISBLK(os.stat(device.path).st_mode)
        assert loop.backing_file(device.path) == os.path.realpath(image)
        assert loop.find_attached(image) == device.path
        with open(f"/sys/block/{os.path.basename(device.path)}/size") as f:
            assert int(f.read()) * 512 == 64 << 20
        os.write(device.fd, b"through the device")
    # Without autoclear the device stays bound after our close.
    assert loop.find_attached(image) == device.path
    loop.detach(device.path)
    assert loop.find_attached(image) is None
    assert loop.backing_file(device.path) is None


def test_autoclear_detaches_at_the_last_close(image):
    device = loop.attach(image)
    user = os.open(device.path, os.O_RDONLY)  # another user, like a mount
    device.close()
    assert loop.find_attached(image) == device.path
    os.close(user)
    assert loop.find_attached(image) is None


def test_read_only(image):
    with (
        loop.attach(image, read_only=True, autoclear=True) as device,
        open(f"/sys/block/{os.path.basename(device.path)}/ro") as f,
    ):
        assert f.read().strip() == "1"


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        loop.attach(str(tmp_path / "nope.img"))
