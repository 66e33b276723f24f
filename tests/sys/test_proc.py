"""engine.sys.proc: the mount table and whether a process lives, read from /proc (no root needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from engine.errors import Conflict
from engine.server.pidfile import create_pidfile, remove_pidfile
from engine.sys.proc import Mount, mountinfo, pid_alive, start_time, stat_fields
from engine.testing.procs import wait_for

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime shared:12 - proc proc rw
35 31 0:32 /docker/abc /sys/fs/cgroup/my\\040memory ro,relatime - cgroup cgroup rw,memory
a line that is not a mount
40 1 8:1 / /mnt/- rw master:1 propagate_from:2 - ext4 /dev/sda1 rw,errors=remount-ro
"""


def test_mountinfo_fields_escapes_and_optional_fields(tmp_path):
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    proc_, cgroup, ext4 = mountinfo(str(path))
    assert proc_ == Mount(22, 27, 0, 21, "/", "/proc", "rw,relatime", "proc", "proc", "rw")
    assert (cgroup.root, cgroup.mount_point, cgroup.super_options) == (
        "/docker/abc",
        "/sys/fs/cgroup/my memory",
        "rw,memory",
    )
    assert (ext4.mount_point, ext4.fstype, ext4.source, ext4.major) == ("/mnt/-", "ext4", "/dev/sda1", 8)


def test_mountinfo_of_this_process_has_the_root():
    assert any(m.mount_point == "/" for m in mountinfo())


def _zombie() -> subprocess.Popen:
    """A child that exited and is not reaped yet (the caller reaps it)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_for(lambda: (stat_fields(child.pid) or [b"?"])[0] == b"Z", what="the child to become a zombie")
    return child


def test_pid_alive_and_zombies():
    assert pid_alive(os.getpid())
    assert not pid_alive(0) and not pid_alive(-1)
    child = _zombie()
    try:
        assert not pid_alive(child.pid)
    finally:
        child.wait()
    assert not pid_alive(child.pid) and stat_fields(child.pid) is None


def test_start_time_names_one_process(tmp_path):
    """Field 22 of /proc/<pid>/stat, read past a command name with spaces and parentheses."""
    odd = tmp_path / "sl) (e ep"
    odd.symlink_to(shutil.which("sleep") or "/bin/sleep")
    child = subprocess.Popen([str(odd), "60"])
    try:
        wait_for(lambda: (stat_fields(child.pid) or [b"?"])[0] == b"S", what="the child to sleep")
        with open(f"/proc/{child.pid}/stat", "rb") as fh:
            assert b"(sl) (e ep)" in fh.read()
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        started = start_time(child.pid)
        assert started is not None and abs(started / os.sysconf("SC_CLK_TCK") - uptime) < 10
        mine = start_time(os.getpid())
        assert mine is not None and mine <= started
    finally:
        child.kill()
        child.wait()
    assert start_time(child.pid) is None


def test_pidfile_refuses_a_live_daemon_and_takes_over_a_dead_one(tmp_path):
    path = str(tmp_path / "run" / "engine.pid")
    create_pidfile(path, pid=os.getppid())
    with pytest.raises(Conflict, match="pid file found"):
        create_pidfile(path)
    child = _zombie()
    try:
        with open(path, "w") as fh:
            fh.write(f"{child.pid}\n")
        create_pidfile(path)  # a zombie's daemon has exited
    finally:
        child.wait()
    with open(path) as fh:
        assert fh.read() == f"{os.getpid()}\n"
    remove_pidfile(path, pid=os.getpid() + 1)  # not ours: kept
    assert os.path.exists(path)
    remove_pidfile(path)
    assert not os.path.exists(path)
