"""The monitor: a shim's exit (here a child process standing in for it, and the exit record it writes)
reaches ``on_exit`` once, and the shim's end releases whoever waits for it."""

from __future__ import annotations

import os
import queue
import resource
import subprocess
from collections.abc import Callable, Iterator

import pytest

from engine.daemon.container import Container
from engine.daemon.monitor import Monitor
from engine.shim import protocol
from engine.utils.sockets import readable


def container(n: int) -> Container:
    return Container(id=f"{n:064x}", name=f"/c{n}", created=0.0, image_id="", config={}, host_config={})


@pytest.fixture
def exits() -> Iterator[tuple[Monitor, queue.Queue]]:
    seen: queue.Queue = queue.Queue()

    def on_exit(c: Container) -> None:
        if c.name == "/fails":
            raise RuntimeError("a handler that fails")
        seen.put(c)

    monitor = Monitor(on_exit)
    yield monitor, seen
    monitor.stop()


@pytest.fixture
def stand_in() -> Iterator[Callable[[], subprocess.Popen]]:
    """Starts sleeping child processes that stand in for shims; kills what is left of them."""
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        procs.append(subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL))
        return procs[-1]

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_each_exit_is_reported_once_for_its_container(exits, stand_in):
    monitor, seen = exits
    procs = {n: stand_in() for n in (1, 2, 3)}
    containers = {n: container(n) for n in procs}
    for n, proc in procs.items():
        monitor.watch(containers[n], proc.pid)
    for n in (2, 3, 1):
        procs[n].kill()
        procs[n].wait()
        assert seen.get(timeout=10) is containers[n]
    with pytest.raises(queue.Empty):
        seen.get(timeout=0.2)


def test_a_shim_gone_already_is_reported_at_once(exits, stand_in):
    monitor, seen = exits
    proc = stand_in()
    proc.kill()
    proc.wait()  # reaped: its PID names nothing
    c = container(4)
    monitor.watch(c, proc.pid)
    assert seen.get(timeout=10) is c


def test_a_failing_handler_does_not_stop_the_monitor(exits, stand_in):
    monitor, seen = exits
    bad, good = stand_in(), stand_in()
    failing = container(5)
    failing.name = "/fails"
    monitor.watch(failing, bad.pid)
    bad.kill()
    bad.wait()
    c = container(6)
    monitor.watch(c, good.pid)
    good.kill()
    good.wait()
    assert seen.get(timeout=10) is c


def container_in(tmp_path, n: int) -> Container:
    """A container with a directory, as the monitor watches one."""
    c = container(n)
    c.root = str(tmp_path / c.id)
    os.mkdir(c.root)
    return c


def record_exit(c: Container, shim_pid: int, code: int = 0) -> None:
    """What a shim writes when its container exited (before it releases the cgroups and ends)."""
    record = {"ExitCode": code, "FinishedAt": "", "OOMKilled": False, "Error": "", "ShimPid": shim_pid}
    protocol.write_json_atomic(os.path.join(c.root, protocol.EXIT_FILE), record)


def test_a_recorded_exit_is_reported_before_the_shim_ends_and_once(exits, stand_in, tmp_path):
    monitor, seen = exits
    proc = stand_in()
    c = container_in(tmp_path, 8)
    monitor.watch(c, proc.pid)
    assert not monitor.wait_gone(c.id, 0.1)
    record_exit(c, proc.pid)
    assert seen.get(timeout=10) is c
    assert proc.poll() is None and not monitor.wait_gone(c.id, 0.1)  # the shim still runs
    proc.kill()
    proc.wait()
    assert monitor.wait_gone(c.id, 10)
    with pytest.raises(queue.Empty):
        seen.get(timeout=0.2)


def test_an_exit_recorded_before_the_watch_began_is_reported_at_once(exits, stand_in, tmp_path):
    monitor, seen = exits
    proc = stand_in()
    c = container_in(tmp_path, 9)
    record_exit(c, proc.pid)
    monitor.watch(c, proc.pid)
    assert seen.get(timeout=10) is c and proc.poll() is None


def test_a_record_another_shim_wrote_is_not_this_run_s_exit(exits, stand_in, tmp_path):
    monitor, seen = exits
    proc, other = stand_in(), stand_in()
    c = container_in(tmp_path, 10)
    record_exit(c, other.pid, code=1)  # left by an earlier run
    monitor.watch(c, proc.pid)
    record_exit(c, other.pid, code=2)
    with pytest.raises(queue.Empty):
        seen.get(timeout=0.3)
    proc.kill()  # this run's shim dies without a record of its own: its end tells
    proc.wait()
    assert seen.get(timeout=10) is c
    with pytest.raises(queue.Empty):
        seen.get(timeout=0.2)


def test_wait_gone_and_track_end(exits, stand_in, tmp_path):
    monitor, seen = exits
    assert monitor.wait_gone("f" * 64, 0)  # no shim known: nothing to wait for
    proc = stand_in()
    c = container_in(tmp_path, 11)
    monitor.track_end(c.id, proc.pid)  # a shim whose exit a daemon before this one handled
    assert not monitor.wait_gone(c.id, 0.1)
    proc.kill()
    proc.wait()
    assert monitor.wait_gone(c.id, 10)
    with pytest.raises(queue.Empty):
        seen.get(timeout=0.2)  # its exit is not reported again


def test_stop_releases_whoever_waits_for_a_shim_s_end(stand_in, tmp_path):
    monitor = Monitor(lambda c: None)
    proc = stand_in()
    c = container_in(tmp_path, 12)
    monitor.watch(c, proc.pid)
    monitor.stop()  # the daemon shuts down: nobody is kept waiting for the shims it leaves
    assert monitor.wait_gone(c.id, 0) and proc.poll() is None


@pytest.fixture
def past_fd_setsize() -> Iterator[None]:
    """Descriptors up to about 1,100 taken (the soft limit raised for it), so that what is opened
    next gets a number past select(2)'s FD_SETSIZE (1024), as in a daemon with a thousand
    containers; all given back afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the open-files hard limit ({hard}) is too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    taken = []
    try:
        while not taken or taken[-1] < 1100:
            taken.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_exits_are_reported_past_fd_setsize(past_fd_setsize, exits, stand_in):
    monitor, seen = exits
    proc = stand_in()
    c = container(7)
    monitor.watch(c, proc.pid)
    proc.kill()
    proc.wait()
    assert seen.get(timeout=10) is c


def test_readable_past_fd_setsize(past_fd_setsize):
    r, w = os.pipe()
    try:
        assert r > 1024
        assert readable([r], 0) == []
        os.write(w, b"x")
        assert readable([r], 1) == [r]
    finally:
        os.close(r)
        os.close(w)


def test_no_exit_is_reported_after_stop(stand_in):
    """stop() returns with the thread gone: a shim that exits from then on is the next daemon's
    to restore, even when its exit and the stop wake the thread together. It gives back its
    descriptors (epoll, wake pipe, pidfds)."""
    seen: queue.Queue = queue.Queue()
    fds = len(os.listdir("/proc/self/fd"))
    for n in range(30):
        monitor = Monitor(seen.put)
        proc = stand_in()
        monitor.watch(container(n), proc.pid)
        monitor.stop()
        proc.kill()
        proc.wait()
    assert len(os.listdir("/proc/self/fd")) == fds
    with pytest.raises(queue.Empty):
        seen.get(timeout=0.2)
