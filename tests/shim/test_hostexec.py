"""Tests for the shim's test double driver (engine.testing.hostexec), with real host processes.

Each test kills the processes it starts (by PID) in a finalizer.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
import time

import pytest

from engine.drivers.exec import Command, ExecStartError, Pipes, ProcessConfig
from engine.testing.hostexec import HostProcessDriver


def command(args: list[str], cwd: str = "/", env: list[str] | None = None) -> Command:
    return Command(id="h1", rootfs="/", process=ProcessConfig(args=args, cwd=cwd, env=env or []))


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0].decode()


@pytest.fixture
def runner():
    """Runs ``driver.run`` in a thread; the process groups it started are SIGKILLed at the end."""
    started: list[int] = []

    def run(driver: HostProcessDriver, cmd: Command, pipes: Pipes | None = None):
        result: dict = {}
        ready = threading.Event()

        def on_start(pid: int) -> None:
            started.append(pid)
            result["pid"] = pid
            ready.set()

        def target() -> None:
            try:
                result["code"] = driver.run(cmd, pipes or Pipes(), on_start)
            except BaseException as exc:
                result["error"] = exc
            ready.set()

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        assert ready.wait(10)
        return thread, result

    yield run
    for pid in started:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_exit_codes_stdio_env_and_cwd(tmp_path, runner):
    out_r, out_w = os.pipe()
    cmd = command(["sh", "-c", 'echo "$FOO $(pwd)"; exit 4'], cwd=str(tmp_path), env=["FOO=bar"])
    thread, result = runner(HostProcessDriver(), cmd, Pipes(stdout=out_w, stderr=out_w))
    os.close(out_w)
    thread.join(10)
    with os.fdopen(out_r, "rb") as f:
        assert f.read() == f"bar {tmp_path}\n".encode()
    assert result["code"] == 4


def test_signal_exit_codes_and_group_control(runner):
    driver = HostProcessDriver()
    cmd = command(["sh", "-c", "sleep 30 & wait"])
    thread, result = runner(driver, cmd)
    pid = result["pid"]
    assert os.getsid(pid) == pid
    deadline = time.monotonic() + 5
    while len(driver.get_pids(cmd)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    pids = driver.get_pids(cmd)
    assert pid in pids and len(pids) == 2  # the shell and its sleep
    driver.pause(cmd)
    time.sleep(0.2)
    assert {proc_state(p) for p in pids} == {"T"}
    driver.unpause(cmd)
    time.sleep(0.2)
    assert "T" not in {proc_state(p) for p in pids}
    driver.kill(cmd, signal.SIGTERM)
    thread.join(10)
    assert result["code"] == 128 + signal.SIGTERM
    driver.terminate(cmd)  # the orphaned sleep goes with the group
    deadline = time.monotonic() + 5
    while driver.get_pids(cmd) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.get_pids(cmd) == []
    assert driver.oom_killed(cmd) is False and driver.stats(cmd) == {}


def test_exec_errors_use_dockers_messages(tmp_path):
    driver = HostProcessDriver()
    with pytest.raises(ExecStartError, match=r'^exec: "nope-nope": executable file not found in \$PATH$'):
        driver.run(command(["nope-nope"]), Pipes())
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    os.chmod(script, stat.S_IRUSR)
    # Root may read it, but not execute a file without an x bit.
    with pytest.raises(ExecStartError, match=rf'^exec: "{script}": permission denied$'):
        driver.run(command([str(script)]), Pipes())
    with pytest.raises(ExecStartError, match=r'^chdir to cwd \("/no/such/dir"\) set in config.json failed'):
        driver.run(command(["true"], cwd="/no/such/dir"), Pipes())


def test_exec_runs_another_process():
    driver = HostProcessDriver()
    seen = []
    code = driver.exec(command(["sleep", "30"]), ProcessConfig(args=["sh", "-c", "exit 9"]), Pipes(), seen.append)
    assert code == 9 and len(seen) == 1


def test_run_kills_and_waits_when_the_start_callback_raises():
    """The contract's run(): start(), the callback, wait(); a callback that raises stops the process."""
    driver = HostProcessDriver()
    started = []

    def refuse(pid: int) -> None:
        started.append(pid)
        raise RuntimeError("cannot record it")

    with pytest.raises(RuntimeError, match="cannot record it"):
        driver.run(command(["sleep", "30"]), Pipes(), refuse)
    [pid] = started
    assert not os.path.exists(f"/proc/{pid}")  # killed and reaped, no zombie left
