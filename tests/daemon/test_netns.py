"""Network namespaces bound to files, and the spares made ahead for the starts (real namespaces:
root, in the test sandbox's own network and mount namespaces)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from engine.daemon import netns
from engine.testing.procs import wait_for

pytestmark = pytest.mark.root("network namespaces")


@pytest.fixture
def spares() -> Iterator[netns.Spares]:
    pool = netns.Spares(delay=0.01)
    yield pool
    pool.close()


def loopback_up(path: str) -> bool:
    """Whether ``lo`` is up in the namespace bound at ``path`` (a connection to it works)."""

    def probe() -> bool:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            with socket.create_connection(server.getsockname(), timeout=2):
                return True

    try:
        return netns.in_namespace(path, probe)
    except OSError:
        return False


def test_a_spare_is_made_after_a_create_and_bound_by_the_next(spares, tmp_path):
    first, second, third = (str(tmp_path / name) for name in ("a", "b", "c"))
    host = os.stat("/proc/self/ns/net").st_ino
    spares.create(first)  # none ready yet: made on the spot, and a spare is made after it
    wait_for(lambda: spares._ready, what="a spare namespace")
    held = os.fstat(spares._ready[0]).st_ino
    spares.create(second)
    assert netns.inode(second) == held
    spares.create(third)  # taken before the next spare was ready: made on the spot
    inodes = {host, netns.inode(first), netns.inode(second), netns.inode(third)}
    assert len(inodes) == 4  # each its own namespace
    for path in (first, second, third):
        assert loopback_up(path)
        netns.remove(path)
        assert not os.path.exists(path)


def test_close_lets_go_of_the_spares(tmp_path):
    fds = len(os.listdir("/proc/self/fd"))
    pool = netns.Spares(count=2, delay=0)
    pool.create(str(tmp_path / "a"))
    wait_for(lambda: len(pool._ready) == 2, what="two spare namespaces")
    pool.close()
    netns.remove(str(tmp_path / "a"))
    assert pool._ready == [] and len(os.listdir("/proc/self/fd")) == fds
    pool.create(str(tmp_path / "b"))  # closed: made on the spot, as without a pool
    assert loopback_up(str(tmp_path / "b"))
    netns.remove(str(tmp_path / "b"))
