"""Tests for the container shim (engine.shim) with real processes.

Every shim here runs :class:`engine.testing.hostexec.HostProcessDriver`: the
"container" is a plain host process, so the shim's own behaviour (start
reporting, stdio, the json-file log, the socket protocol, the exit record,
detachment from the daemon) is tested without namespaces or cgroups. The
tests run in the session sandbox, whose init adopts the detached shims.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import engine
from engine.drivers.exec import Command, ExecStartError, ProcessConfig
from engine.errors import Conflict, HostError
from engine.shim import protocol
from engine.shim.client import (
    AttachConnection,
    ShimClient,
    ShimUnavailable,
    prepare_attach,
    read_exit,
    read_state,
    shim_alive,
)
from engine.shim.launcher import ForkServer, start_shim
from engine.shim.loop import Flag
from engine.shim.shim import warm_up as warm_up_the_shims
from engine.sys import ksm
from engine.sys.proc import pid_alive, stat_fields
from engine.testing.hostexec import HostProcessDriver
from engine.testing.procs import children_of, cmdline, wait_for, wait_gone

REPO = os.path.dirname(os.path.dirname(os.path.abspath(engine.__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
PYTHONPATH = [REPO, HERE]
HOSTEXEC = {"module": "engine.testing.hostexec", "class": "HostProcessDriver"}
RFC3339NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
LOOP = "while :; do echo tick; sleep 0.05; done"


# ----------------------------------------------------------------------
# helpers


def holds_files_in(pid: int, directory: str) -> bool:
    """Whether ``pid`` has a file below ``directory`` open (a fork server's shim names no directory)."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}").startswith(directory + "/"):
                return True
        except OSError:
            continue
    return False


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line names ``text`` or that hold a file below it open."""
    return [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and (text in cmdline(int(p)) or holds_files_in(int(p), text)) and pid_alive(int(p))
    ]


def read_log(path: str) -> list[dict[str, Any]]:
    with open(path, "rb") as f:
        return [json.loads(line) for line in f.read().splitlines()]


def vm_status(pid: int) -> dict[str, int]:
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                found[key] = int(rest.split()[0])
    return found


class Output:
    """Reads an attached connection's frames, collecting them per stream."""

    def __init__(self, conn: AttachConnection, timeout: float = 15.0) -> None:
        conn.sock.settimeout(timeout)  # a hang fails the test instead of blocking it
        self.frames = conn.frames()
        self.data = {protocol.STREAM_STDOUT: b"", protocol.STREAM_STDERR: b""}
        self.exit: dict[str, Any] | None = None

    def _next(self) -> bool:
        frame = next(self.frames, None)
        if frame is None:
            return False
        stream, payload = frame
        if stream == protocol.STREAM_EXIT:
            self.exit = json.loads(payload)
        else:
            self.data[stream] += payload
        return True

    def until(self, pattern: bytes, stream: int = protocol.STREAM_STDOUT) -> bytes:
        """Read until ``pattern`` (a regex) shows up in ``stream``."""
        while not re.search(pattern, self.data[stream]):
            if not self._next():
                raise AssertionError(f"connection ended before {pattern!r}; got {self.data!r}")
        return self.data[stream]

    def to_exit(self) -> dict[str, Any]:
        while self.exit is None:
            if not self._next():
                raise AssertionError(f"connection ended without an exit frame; got {self.data!r}")
        return self.exit


@dataclass
class Started:
    """One shim started by the ``shim`` fixture."""

    dir: str
    command: Command
    result: dict[str, Any]

    @property
    def log(self) -> str:
        return os.path.join(self.dir, f"{self.command.id}-json.log")

    @property
    def client(self) -> ShimClient:
        return ShimClient(self.dir)


def make_spec(
    container_dir: str,
    args: list[str],
    *,
    tty: bool = False,
    open_stdin: bool = False,
    stdin_once: bool = False,
    max_size: int = 0,
    max_file: int = 1,
    console_size: tuple[int, int] | None = None,
    driver: dict[str, str] | None = None,
    memory_merge: bool = False,
) -> tuple[Command, dict[str, Any]]:
    cid = os.path.basename(container_dir)
    command = Command(
        id=cid,
        rootfs="/",
        container_dir=container_dir,
        process=ProcessConfig(
            args=args,
            env=["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root", "TERM=xterm"],
            cwd="/",
            tty=tty,
            console_size=console_size,
        ),
    )
    spec = {
        "command": command.to_json(),
        "driver": dict(driver or HOSTEXEC, home=os.path.join(container_dir, "driver-home")),
        "tty": tty,
        "open_stdin": open_stdin,
        "stdin_once": stdin_once,
        "log": {"path": os.path.join(container_dir, f"{cid}-json.log"), "max_size": max_size, "max_file": max_file},
        "memory_merge": memory_merge,
    }
    return command, spec


def kill_started(container_dir: str, result: dict[str, Any] | None) -> None:
    """SIGKILL a test's container (its process group) and shim, by PID, if they are still ours."""
    state = result or read_state(container_dir) or {}
    pid, shim_pid = state.get("Pid"), state.get("ShimPid")
    if (
        shim_pid
        and pid_alive(shim_pid)
        and (container_dir in cmdline(shim_pid) or holds_files_in(shim_pid, container_dir))
    ):
        os.kill(shim_pid, signal.SIGKILL)
    if pid and pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module", params=["direct", "forkserver"])
def forkserver(request) -> Iterator[ForkServer | None]:
    """How tests launch shims: a new interpreter each (None), or one fork server for the module.

    Creates: the fork server process, closed (it exits at EOF) after the module's tests.
    """
    if request.param == "direct":
        yield None
        return
    server = ForkServer(pythonpath=PYTHONPATH, preload=["engine.testing.hostexec"])
    yield server
    server.close()


@pytest.fixture
def shim(tmp_path, forkserver) -> Iterator[Callable[..., Started]]:
    """Start shims in fresh container directories below tmp_path.

    Creates: ``<tmp_path>/<name>/`` per shim and the shim and container
    processes; both are SIGKILLed by PID at the end if still running, and
    attach connections made through the factory are closed.
    """
    started: list[tuple[str, dict[str, Any] | None]] = []
    conns: list[AttachConnection] = []

    def start(args: list[str], name: str = "c1", attachers: tuple[Any, ...] = (), **options: Any) -> Started:
        container_dir = str(tmp_path / name)
        os.mkdir(container_dir)
        command, spec = make_spec(container_dir, args, **options)
        conns.extend(a for a in attachers if isinstance(a, AttachConnection))
        entry: tuple[str, dict[str, Any] | None] = (container_dir, None)
        started.append(entry)
        result = start_shim(
            container_dir, spec, pythonpath=PYTHONPATH, attachers=attachers, timeout=30, forkserver=forkserver
        )
        started[-1] = (container_dir, result)
        return Started(container_dir, command, result)

    yield start
    for conn in conns:
        conn.close()
    for container_dir, result in started:
        kill_started(container_dir, result)


@pytest.fixture
def container_dir(tmp_path) -> Iterator[str]:
    """A fresh container directory for tests that run the launcher themselves.

    Creates: ``<tmp_path>/c1``; at the end its container and any process
    whose command line names the directory (a shim left behind) are
    SIGKILLed by PID.
    """
    path = str(tmp_path / "c1")
    os.mkdir(path)
    yield path
    kill_started(path, None)
    for pid in processes_mentioning(path):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # a shim that was on its way out when listed
            pass


def run_launcher(
    container_dir: str,
    spec: dict[str, Any],
    pass_fds: tuple[int, ...] = (),
    acknowledge: bool = True,
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Write shim.json and run the launcher by hand; its result and stdout lines (after its ACK).

    :param acknowledge: confirm a start as the daemon does, on a socket (else the socket is at EOF at once).
    """
    with open(os.path.join(container_dir, protocol.CONFIG_FILE), "w") as f:
        json.dump(spec, f)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        if acknowledge:
            ours.sendall(protocol.ACK)
        else:
            ours.shutdown(socket.SHUT_WR)
        proc = subprocess.run(
            [sys.executable, "-S", "-m", "engine.shim", container_dir],
            capture_output=True,
            env={"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(PYTHONPATH)},
            timeout=30,
            cwd="/",
            pass_fds=pass_fds,
            stdin=theirs,
        )
    assert proc.stdout.startswith(protocol.ACK), proc.stdout
    return proc, proc.stdout[1:].decode().splitlines()


# ----------------------------------------------------------------------
# start, log, exit


def test_exit_code_log_and_cleanup(container_dir):
    _, spec = make_spec(container_dir, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    proc, lines = run_launcher(container_dir, spec)
    assert proc.returncode == 0, proc.stderr
    assert len(lines) == 1, lines
    result = json.loads(lines[0])
    assert set(result) == {"ShimPid", "Pid", "StartedAt"}
    assert result["ShimPid"] != result["Pid"]
    assert RFC3339NANO.match(result["StartedAt"])

    wait_gone(result["ShimPid"])
    exit_record = read_exit(container_dir)
    assert exit_record is not None
    assert exit_record["ExitCode"] == 3
    assert exit_record["OOMKilled"] is False and exit_record["Error"] == ""
    assert RFC3339NANO.match(exit_record["FinishedAt"])
    assert read_state(container_dir) == result

    entries = read_log(os.path.join(container_dir, "c1-json.log"))
    assert sorted((e["log"], e["stream"]) for e in entries) == [("err\n", "stderr"), ("out\n", "stdout")]
    for e in entries:
        assert list(e) == ["log", "stream", "time"]
        assert RFC3339NANO.match(e["time"])
    with open(os.path.join(container_dir, "c1-json.log"), "rb") as f:
        assert re.search(rb'^\{"log":"out\\n","stream":"stdout","time":"[^"]+"\}$', f.read(), re.M)
    assert not os.path.exists(os.path.join(container_dir, protocol.SOCKET_FILE))
    with pytest.raises(ShimUnavailable):
        ShimClient(container_dir).state()
    # wait() after the fact comes from exit.json.
    assert ShimClient(container_dir).wait(timeout=1) == exit_record
    assert not shim_alive(container_dir)


def test_a_shim_that_exits_while_a_client_connects_is_unavailable(tmp_path, monkeypatch):
    """The client's connection queued on a shim that closes its socket as it exits: the send
    fails with EPIPE, which means the shim went away; wait() then reads exit.json."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / protocol.SOCKET_FILE))
    listener.listen(1)
    real_connect = protocol.connect_unix

    def connect_then_exit(sock: socket.socket, path: str) -> None:
        real_connect(sock, path)
        listener.close()

    monkeypatch.setattr(protocol, "connect_unix", connect_then_exit)
    with pytest.raises(ShimUnavailable, match="went away"):
        ShimClient(str(tmp_path)).state()
    record = {"ExitCode": 0, "FinishedAt": "2026-12-08T00:00:00Z", "OOMKilled": False, "Error": ""}
    protocol.write_json_atomic(str(tmp_path / protocol.EXIT_FILE), record)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    os.unlink(tmp_path / protocol.SOCKET_FILE)
    listener.bind(str(tmp_path / protocol.SOCKET_FILE))
    listener.listen(1)
    assert ShimClient(str(tmp_path)).wait(timeout=5) == record


def test_inherited_descriptors_are_closed(container_dir):
    _, spec = make_spec(container_dir, ["sleep", "30"])
    read_fd, write_fd = os.pipe()
    try:
        _proc, lines = run_launcher(container_dir, spec, pass_fds=(write_fd,))
        result = json.loads(lines[0])
        os.close(write_fd)
        write_fd = -1
        assert pid_alive(result["ShimPid"]) and pid_alive(result["Pid"])
        # Neither the shim nor the container holds the launcher's inherited pipe: EOF.
        readable, _, _ = select.select([read_fd], [], [], 10)
        assert readable and os.read(read_fd, 1) == b""
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def test_state_wait_and_kill_from_another_process(shim):
    s = shim(["sleep", "30"])
    state = s.client.state()
    assert state == dict(s.result, Running=True)
    assert shim_alive(s.dir)
    st = os.stat(os.path.join(s.dir, protocol.SOCKET_FILE))
    assert st.st_mode & 0o777 == 0o600
    with pytest.raises(TimeoutError):
        s.client.wait(timeout=0.3)
    with pytest.raises(HostError, match="no tty"):
        s.client.resize(10, 10)
    # The daemon's driver instance is not the shim's: it finds the PID in state.json.
    HostProcessDriver().kill(s.command, signal.SIGTERM)
    record = s.client.wait(timeout=10)
    assert record["ExitCode"] == 128 + signal.SIGTERM
    assert read_exit(s.dir) == dict(record, ShimPid=s.result["ShimPid"])  # the file also names its shim
    wait_gone(s.result["ShimPid"])


def test_the_shim_adopts_the_container_its_starter_started(shim):
    s = shim(["sleep", "30"])
    shim_pid, pid = s.result["ShimPid"], s.result["Pid"]
    # Once the starter that forked it has exited (just after the start was confirmed), the init
    # is the shim's only child, and the shim has one thread besides its own, the I/O loop's.
    wait_for(lambda: int(stat_fields(pid)[1]) == shim_pid, what="the shim to adopt the init")
    assert len(os.listdir(f"/proc/{shim_pid}/task")) == 2
    with open(f"/proc/{shim_pid}/task/{shim_pid}/children") as fh:
        assert fh.read().split() == [str(pid)]
    HostProcessDriver().kill(s.command, signal.SIGKILL)
    assert s.client.wait(timeout=10)["ExitCode"] == 128 + signal.SIGKILL


@pytest.mark.skipif(ksm.unsupported() is not None, reason=str(ksm.unsupported()))
def test_a_shim_opts_in_to_memory_merging_when_asked_and_its_container_never_does(shim):
    plain = shim(["sleep", "30"], name="plain")
    merged = shim(["sleep", "30"], name="merged", memory_merge=True)
    wait_for(lambda: ksm.merging(merged.result["ShimPid"]), what="the shim to opt in")
    # The setting passes to children and through execve: the container, forked by the
    # starter before the shim opted in, must not have it.
    assert not ksm.merging(merged.result["Pid"])
    assert not ksm.merging(plain.result["ShimPid"])
    assert not ksm.merging(plain.result["Pid"])
    for s in (plain, merged):
        HostProcessDriver().kill(s.command, signal.SIGKILL)
        assert s.client.wait(timeout=10)["ExitCode"] == 128 + signal.SIGKILL


def test_second_shim_for_a_running_container_is_refused(shim, forkserver):
    s = shim(["sleep", "30"])
    _, spec = make_spec(s.dir, ["sleep", "1"])
    with pytest.raises(Conflict):
        start_shim(s.dir, spec, pythonpath=PYTHONPATH, forkserver=forkserver)
    # Even past start_shim's check, the launcher refuses while the socket answers.
    proc, lines = run_launcher(s.dir, spec)
    assert proc.returncode == 0 and len(lines) == 1
    assert "already running" in json.loads(lines[0])["Error"]
    assert s.client.state()["Running"] is True


def test_missing_command_reports_docker_error_and_leaves_nothing(container_dir, forkserver):
    _, spec = make_spec(container_dir, ["no-such-command-here", "arg"])
    proc, lines = run_launcher(container_dir, spec)
    assert proc.returncode == 0, proc.stderr
    assert lines == ['{"Error":"exec: \\"no-such-command-here\\": executable file not found in $PATH"}']
    wait_for(lambda: not processes_mentioning(container_dir), what="the shim to go away")
    assert not os.path.exists(os.path.join(container_dir, protocol.SOCKET_FILE))
    assert read_state(container_dir) is None and read_exit(container_dir) is None

    with pytest.raises(ExecStartError, match=r'^exec: "no-such-command-here": executable file not found in \$PATH$'):
        start_shim(container_dir, spec, pythonpath=PYTHONPATH, forkserver=forkserver)
    _, spec = make_spec(container_dir, ["/no/such/binary"])
    with pytest.raises(ExecStartError, match=r"stat /no/such/binary: no such file or directory"):
        start_shim(container_dir, spec, pythonpath=PYTHONPATH, forkserver=forkserver)
    wait_for(lambda: not processes_mentioning(container_dir), what="the shims to go away")


def test_warnings_on_the_launchers_stderr_are_not_the_answer(shim):
    s = shim(["sh", "-c", "echo hi"], driver={"module": "shim_test_drivers", "class": "Noisy"})
    assert s.client.wait(timeout=10)["ExitCode"] == 0


def test_a_start_the_daemon_never_acknowledged_is_stopped(container_dir):
    # The daemon read nothing (it timed out or died at that moment): no
    # container may run on that it does not know of.
    _, spec = make_spec(container_dir, ["sleep", "30"])
    proc, lines = run_launcher(container_dir, spec, acknowledge=False)
    result = json.loads(lines[0])
    assert result["Pid"] and proc.returncode == 0
    record = wait_for(lambda: read_exit(container_dir), what="exit.json")
    assert record["ExitCode"] == 128 + signal.SIGKILL and "abandoned" in record["Error"]
    wait_gone(result["Pid"])
    wait_for(lambda: not processes_mentioning(container_dir), what="the shim to go away")


def test_a_launcher_run_by_hand_confirms_its_own_start(container_dir):
    _, spec = make_spec(container_dir, ["sleep", "30"])
    with open(os.path.join(container_dir, protocol.CONFIG_FILE), "w") as f:
        json.dump(spec, f)
    proc = subprocess.run(
        [sys.executable, "-S", "-m", "engine.shim", container_dir],
        capture_output=True,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(PYTHONPATH)},
        timeout=30,
        cwd="/",
        stdin=subprocess.DEVNULL,
    )
    result = json.loads(proc.stdout[1:].splitlines()[0])
    try:
        time.sleep(0.5)
        assert ShimClient(container_dir).state()["Running"] is True
    finally:
        kill_started(container_dir, result)


def test_bad_driver_is_reported(container_dir, forkserver):
    _, spec = make_spec(container_dir, ["true"], driver={"module": "no_such_driver_module", "class": "X"})
    with pytest.raises(ExecStartError, match="ModuleNotFoundError"):
        start_shim(container_dir, spec, pythonpath=PYTHONPATH, forkserver=forkserver)


@pytest.mark.slow
def test_start_timeout_stops_the_container_nobody_waits_for(container_dir, forkserver):
    _, spec = make_spec(container_dir, ["sleep", "30"], driver={"module": "shim_test_drivers", "class": "SlowStart"})
    with pytest.raises(HostError, match="did not report a start within 0.5s"):
        start_shim(container_dir, spec, pythonpath=PYTHONPATH, forkserver=forkserver, timeout=0.5)
    # The shim starts the container later, finds the launcher gone, and stops it.
    record = wait_for(lambda: read_exit(container_dir), what="exit.json")
    assert record["ExitCode"] == 128 + signal.SIGKILL
    assert "abandoned" in record["Error"]
    wait_gone(read_state(container_dir)["Pid"])
    wait_for(lambda: not processes_mentioning(container_dir), what="the shim to go away")


def test_internal_error_after_start_is_recorded(shim):
    # The shim calls the driver's wait() once the process has exited.
    s = shim(["sleep", "0.5"], driver={"module": "shim_test_drivers", "class": "FailsAfterStart"})
    record = s.client.wait(timeout=15)
    assert record["ExitCode"] == protocol.UNKNOWN_EXIT_CODE
    assert record["Error"] == "exec driver failed: RuntimeError: lost track of the container"
    wait_gone(s.result["ShimPid"])
    assert read_exit(s.dir) == dict(record, ShimPid=s.result["ShimPid"])  # the file also names its shim


def test_without_a_log_output_still_reaches_clients(container_dir, forkserver):
    _, spec = make_spec(container_dir, ["sh", "-c", "echo unlogged"])
    spec["log"] = None
    conn = prepare_attach(stdin=False, stdout=True, stderr=True)
    try:
        start_shim(container_dir, spec, pythonpath=PYTHONPATH, forkserver=forkserver, attachers=(conn,))
        out = Output(conn)
        assert out.to_exit()["ExitCode"] == 0
        assert out.data[protocol.STREAM_STDOUT] == b"unlogged\n"
    finally:
        conn.close()
    assert not [n for n in os.listdir(container_dir) if "json.log" in n]


def test_partial_lines_and_eof(shim):
    s = shim(["sh", "-c", "head -c 20000 /dev/zero | tr '\\0' a; printf '\\nend'"])
    s.client.wait(timeout=15)
    wait_gone(s.result["ShimPid"])
    logs = [e["log"] for e in read_log(s.log)]
    assert logs == ["a" * 16384, "a" * (20000 - 16384) + "\n", "end"]


# ----------------------------------------------------------------------
# attach


def test_attach_stdin_roundtrip_and_stdin_once(shim):
    s = shim(["cat"], open_stdin=True, stdin_once=True)
    with s.client.attach(stdin=True, stdout=True, stderr=True) as conn:
        out = Output(conn)
        conn.send_stdin(b"hello\n")
        assert out.until(rb"hello\n") == b"hello\n"
        conn.send_stdin(b"big" * 100000 + b"\n")  # more than a pipe holds at once
        out.until(rb"(big){100000}\n")
        conn.close_stdin()  # stdin_once: cat's stdin closes, cat exits 0
        record = out.to_exit()
    assert record["ExitCode"] == 0 and record["Error"] == ""
    assert read_exit(s.dir) == dict(record, ShimPid=s.result["ShimPid"])  # the file also names its shim
    wait_gone(s.result["ShimPid"])
    logged = "".join(e["log"] for e in read_log(s.log))
    assert logged == "hello\n" + "big" * 100000 + "\n"


def test_socket_half_close_is_stdin_eof_and_the_answers_still_come(shim):
    s = shim(["cat"], open_stdin=True, stdin_once=True, name="d" * 100)  # a socket path past sun_path's 108
    waiter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    waiter.settimeout(15)
    try:
        protocol.connect_unix(waiter, os.path.join(s.dir, protocol.SOCKET_FILE))
        waiter.sendall(b'{"op": "wait"}\n')
        waiter.shutdown(socket.SHUT_WR)
        with s.client.attach(stdin=True, stdout=True, stderr=True) as conn:
            out = Output(conn)
            conn.send_stdin(b"last words\n")
            out.until(rb"last words\n")
            conn.sock.shutdown(socket.SHUT_WR)  # like a client whose stdin hit EOF
            record = out.to_exit()
        assert record["ExitCode"] == 0
        answer = b""
        while chunk := waiter.recv(4096):
            answer += chunk
        assert json.loads(answer) == record
    finally:
        waiter.close()
    wait_gone(s.result["ShimPid"])


def test_preattached_connection_sees_a_fast_container_from_its_first_byte(shim):
    conn = prepare_attach(stdin=False, stdout=True, stderr=True)
    s = shim(["sh", "-c", "echo fast; echo err >&2; exit 7"], attachers=(conn,))
    out = Output(conn)
    record = out.to_exit()
    assert out.data == {1: b"fast\n", 2: b"err\n"}
    assert record["ExitCode"] == 7
    wait_gone(s.result["ShimPid"])


class WaitingAttach:
    """Like the daemon's pending attach: ``connect(client)`` is called before the container starts."""

    def __init__(self, stdin: bool, stdout: bool, stderr: bool) -> None:
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.connection: AttachConnection | None = None

    def connect(self, client: Any) -> None:
        self.connection = client.attach(self.stdin, self.stdout, self.stderr)


def test_waiting_attach_is_connected_before_the_container_starts(shim, container_dir, forkserver):
    waiting = WaitingAttach(stdin=True, stdout=True, stderr=True)
    s = shim(
        ["sh", "-c", "echo early; read line; echo got $line"],
        open_stdin=True,
        stdin_once=True,
        attachers=(waiting,),
        name="c0",
    )
    assert waiting.connection is not None
    with waiting.connection as conn:
        out = Output(conn)
        assert out.until(rb"early\n") == b"early\n"
        conn.send_stdin(b"x\n")
        out.until(rb"got x\n")
        assert out.to_exit()["ExitCode"] == 0
    wait_gone(s.result["ShimPid"])

    # A start that fails ends the waiting attach (EOF, no exit frame).
    _, spec = make_spec(container_dir, ["no-such-command-here"])
    waiting = WaitingAttach(stdin=False, stdout=True, stderr=True)
    with pytest.raises(ExecStartError):
        start_shim(container_dir, spec, pythonpath=PYTHONPATH, forkserver=forkserver, attachers=(waiting,))
    assert waiting.connection is not None
    with waiting.connection as conn:
        conn.sock.settimeout(10)
        assert list(conn.frames()) == []


def test_preattached_connection_gets_eof_when_start_fails(container_dir, forkserver):
    _, spec = make_spec(container_dir, ["no-such-command-here"])
    conn = prepare_attach(stdin=True, stdout=True, stderr=True)
    try:
        with pytest.raises(ExecStartError):
            start_shim(container_dir, spec, pythonpath=PYTHONPATH, forkserver=forkserver, attachers=(conn,))
        conn.sock.settimeout(10)
        assert list(conn.frames()) == []
    finally:
        conn.close()


def test_multiple_clients_get_the_same_output(shim):
    s = shim(["cat"], open_stdin=True)
    with (
        s.client.attach(stdin=True, stdout=True, stderr=False) as a,
        s.client.attach(stdin=False, stdout=True, stderr=True) as b,
    ):
        out_a, out_b = Output(a), Output(b)
        a.send_stdin(b"one\n")
        assert out_a.until(rb"one\n") == b"one\n"
        assert out_b.until(rb"one\n") == b"one\n"
        # Without stdin_once a half-close only ends this client's input.
        a.close_stdin()
        a.send_stdin(b"ignored\n")
        with s.client.attach(stdin=True, stdout=True, stderr=False) as c:
            out_c = Output(c)
            c.send_stdin(b"two\n")
            assert out_c.until(rb"two\n") == b"two\n"
            assert out_b.until(rb"two\n") == b"one\ntwo\n"
            assert out_a.until(rb"two\n") == b"one\ntwo\n"
            HostProcessDriver().kill(s.command, signal.SIGKILL)
            records = [out.to_exit() for out in (out_a, out_b, out_c)]
    assert records[0] == records[1] == records[2]
    assert records[0]["ExitCode"] == 128 + signal.SIGKILL
    assert "ignored" not in "".join(e["log"] for e in read_log(s.log))


def test_client_that_disconnects_midway_does_not_stop_the_container(shim):
    s = shim(["cat"], open_stdin=True)
    a = s.client.attach(stdin=True, stdout=True, stderr=True)
    out_a = Output(a)
    a.send_stdin(b"a\n")
    out_a.until(rb"a\n")
    a.send_stdin(b"x" * 70000)  # unread output queued for it, then gone without a word
    a.sock.close()
    time.sleep(0.3)
    assert s.client.state()["Running"] is True
    with s.client.attach(stdin=True, stdout=True, stderr=True) as b:
        out_b = Output(b)
        b.send_stdin(b"b\n")
        assert out_b.until(rb"b\n").endswith(b"b\n")
        HostProcessDriver().kill(s.command, signal.SIGTERM)
        assert out_b.to_exit()["ExitCode"] == 128 + signal.SIGTERM

    # A client that never sends its request does not hold the shim either.
    s2 = shim(["sh", "-c", LOOP], name="c2")
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        protocol.connect_unix(idle, os.path.join(s2.dir, protocol.SOCKET_FILE))
        size = os.path.getsize(s2.log)
        wait_for(lambda: os.path.getsize(s2.log) > size + 200, what="the log to grow")
    finally:
        idle.close()
    HostProcessDriver().kill(s2.command, signal.SIGKILL)
    s2.client.wait(timeout=10)
    wait_gone(s2.result["ShimPid"])


def test_slow_client_is_dropped_and_never_blocks_the_container(shim):
    total = 16 * 1024 * 1024
    s = shim(["sh", "-c", f"head -c {total} /dev/zero | tr '\\0' x; echo; echo done"], max_size=1024 * 1024, max_file=2)
    # Attached before the output starts? Not needed: it only has to fall behind.
    slow = s.client.attach(stdin=False, stdout=True, stderr=True)
    try:
        record = s.client.wait(timeout=60)
        assert record["ExitCode"] == 0
        slow.sock.settimeout(10)
        received = 0
        frames = b""
        while True:
            try:
                chunk = slow.sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += len(chunk)
            frames = (frames + chunk)[-64:]
        # Dropped: at most its 4 MiB allowance plus what the socket buffers held.
        assert received < total / 2
        assert b'"ExitCode"' not in frames
    finally:
        slow.close()
    wait_gone(s.result["ShimPid"])
    assert read_log(s.log)[-1]["log"] == "done\n"


# ----------------------------------------------------------------------
# tty


def test_tty_size_resize_and_exit(shim):
    s = shim(["sh"], tty=True, open_stdin=True, console_size=(24, 80))
    with s.client.attach(stdin=True, stdout=True, stderr=True) as conn:
        out = Output(conn)
        conn.send_stdin(b"stty size\n")
        out.until(rb"\b24 80\r\n")
        s.client.resize(30, 100)
        conn.send_stdin(b"stty size\n")
        out.until(rb"\b30 100\r\n")
        conn.resize(40, 120)  # the attach connection's own resize frame
        conn.send_stdin(b"stty size\n")
        out.until(rb"\b40 120\r\n")
        conn.send_stdin(b"tty; echo to-stderr >&2\n")
        out.until(rb"/dev/pts/\d+\r\n")
        out.until(rb"to-stderr\r\n")  # a tty's output is all stream 1
        conn.send_stdin(b"exit 5\n")
        record = out.to_exit()
    assert record["ExitCode"] == 5
    assert out.data[protocol.STREAM_STDERR] == b""
    wait_gone(s.result["ShimPid"])
    entries = read_log(s.log)
    assert {e["stream"] for e in entries} == {"stdout"}
    assert "40 120\r\n" in "".join(e["log"] for e in entries)


# ----------------------------------------------------------------------
# log rotation


@pytest.mark.parametrize("max_file", [1, 3])
def test_log_rotation(shim, max_file):
    max_size = 2000
    s = shim(
        ["sh", "-c", 'i=0; while [ $i -lt 300 ]; do echo "line $i"; i=$((i+1)); done'],
        max_size=max_size,
        max_file=max_file,
    )
    assert s.client.wait(timeout=15)["ExitCode"] == 0
    wait_gone(s.result["ShimPid"])
    names = sorted(n for n in os.listdir(s.dir) if n.startswith("c1-json.log"))
    expected = ["c1-json.log"] + [f"c1-json.log.{i}" for i in range(1, max_file)]
    assert names == expected
    longest = max(len(json.dumps(e, separators=(",", ":"))) + 1 for e in read_log(s.log))
    lines = []
    for name in reversed(expected):  # oldest first
        path = os.path.join(s.dir, name)
        assert os.path.getsize(path) <= max_size + longest
        lines += [e["log"] for e in read_log(path)]
    # What is kept is the newest output, contiguous and in order.
    assert lines[-1] == "line 299\n"
    first = int(lines[0].split()[1])
    assert lines == [f"line {i}\n" for i in range(first, 300)]
    assert first > 0


# ----------------------------------------------------------------------
# detachment and footprint


def test_shim_survives_the_death_of_the_process_that_started_it(container_dir):
    command, spec = make_spec(container_dir, ["sh", "-c", LOOP])
    starter = textwrap.dedent(f"""
        import json, sys
        from engine.shim.launcher import start_shim
        print(json.dumps(start_shim({container_dir!r}, json.loads(sys.argv[1]), pythonpath={PYTHONPATH!r})))
    """)
    result = None
    daemon = None
    try:
        proc = subprocess.Popen([sys.executable, "-c", starter, json.dumps(spec)], stdout=subprocess.PIPE)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        result = json.loads(out)
        shim_pid = result["ShimPid"]
        assert pid_alive(shim_pid) and pid_alive(result["Pid"])
        # Detached: its own session, and adopted by init, neither the starter's nor the launcher's.
        assert os.getsid(shim_pid) == shim_pid
        parent = int(stat_fields(shim_pid)[1])
        assert parent != proc.pid and "engine.shim" not in cmdline(parent)
        size = os.path.getsize(os.path.join(container_dir, "c1-json.log"))
        wait_for(
            lambda: os.path.getsize(os.path.join(container_dir, "c1-json.log")) > size + 200,
            what="the log to grow after the starter exited",
        )

        # A daemon-side process attached to it, then killed with SIGKILL.
        attacher = textwrap.dedent(f"""
            import sys, time
            from engine.shim.client import ShimClient
            conn = ShimClient({container_dir!r}).attach(stdin=False, stdout=True, stderr=True)
            next(conn.frames())
            print("attached", flush=True)
            time.sleep(60)
        """)
        daemon = subprocess.Popen([sys.executable, "-c", attacher], stdout=subprocess.PIPE)
        assert daemon.stdout.readline() == b"attached\n"
        daemon.kill()
        daemon.wait()
        size = os.path.getsize(os.path.join(container_dir, "c1-json.log"))
        wait_for(
            lambda: os.path.getsize(os.path.join(container_dir, "c1-json.log")) > size + 200,
            what="the log to grow after the attached process died",
        )
        assert shim_alive(container_dir)
        assert ShimClient(container_dir).state()["Running"] is True

        HostProcessDriver().kill(command, signal.SIGKILL)
        assert ShimClient(container_dir).wait(timeout=10)["ExitCode"] == 128 + signal.SIGKILL
        wait_gone(shim_pid)
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        kill_started(container_dir, result)


def test_shim_rss_while_idle(shim):
    s = shim(["sleep", "60"])
    with s.client.attach(stdin=False, stdout=True, stderr=True):
        time.sleep(0.5)
        s.client.state()
        status = vm_status(s.result["ShimPid"])
    print(
        f"\nshim RSS while idle: {status['VmRSS'] / 1024:.1f} MB "
        f"(anon {status['RssAnon'] / 1024:.1f} MB, file {status['RssFile'] / 1024:.1f} MB); target < 12 MB"
    )
    # The target is 12 MB; the assertion only catches regressions.
    assert status["VmRSS"] < 16 * 1024


# ----------------------------------------------------------------------
# the fork server


def test_fork_server_launches_shims_that_outlive_it(container_dir):
    server = ForkServer(pythonpath=PYTHONPATH, preload=["engine.testing.hostexec"])
    try:
        _, spec = make_spec(container_dir, ["sh", "-c", LOOP])
        result = start_shim(container_dir, spec, forkserver=server, timeout=30)
        server_pid = server.pid
        assert server_pid and "engine.shim.forkserver" in cmdline(server_pid)
        shim_pid = result["ShimPid"]
        # A copy of the fork server (through its template), detached, in a session of its own.
        assert "engine.shim.forkserver" in cmdline(shim_pid)
        with open(f"/proc/{shim_pid}/comm") as fh:
            assert fh.read().strip() == "shim c1"
        assert os.getsid(shim_pid) == shim_pid
        assert int(stat_fields(shim_pid)[1]) != server_pid
        server.close()
        wait_gone(server_pid)
        assert ShimClient(container_dir).state()["Running"] is True
        ShimClient(container_dir).attach(stdin=False, stdout=True, stderr=True).close()
    finally:
        server.close()
        kill_started(container_dir, None)


def test_the_fork_server_reaps_the_shims_that_end(container_dir):
    server = ForkServer(pythonpath=PYTHONPATH, preload=["engine.testing.hostexec"])
    try:
        _, spec = make_spec(container_dir, ["true"])
        shim_pid = start_shim(container_dir, spec, forkserver=server, timeout=30)["ShimPid"]
        assert ShimClient(container_dir).wait(timeout=10)["ExitCode"] == 0
        # Gone, not left a zombie: the shim is nobody's child in the fork server.
        wait_for(lambda: not os.path.exists(f"/proc/{shim_pid}"), what="the shim reaped")
        assert server.pid and os.path.exists(f"/proc/{server.pid}")
    finally:
        server.close()
        kill_started(container_dir, None)


def test_a_fork_server_shim_logs_to_its_own_log_file(container_dir):
    """The fork server sets the logging up before it forks (prepare_logging); each shim's
    records still go to its own shim.log, not to the fork server's stderr."""
    server = ForkServer(pythonpath=PYTHONPATH, preload=["engine.testing.hostexec"])
    try:
        _, spec = make_spec(container_dir, ["true"])
        start_shim(container_dir, spec, forkserver=server, timeout=30)
        assert ShimClient(container_dir).wait(timeout=10)["ExitCode"] == 0
        path = os.path.join(container_dir, protocol.LOG_FILE)
        wait_for(lambda: os.path.exists(path) and "exited" in open(path).read(), what="the shim's log line")
        with open(path) as fh:
            lines = [line for line in fh if "container c1 exited" in line]
        assert len(lines) == 1 and " INFO " in lines[0] and "[engine.shim.shim]" in lines[0], lines
    finally:
        server.close()
        kill_started(container_dir, None)


def test_a_dead_fork_server_is_replaced(tmp_path):
    server = ForkServer(pythonpath=PYTHONPATH, preload=["engine.testing.hostexec"])
    dirs = [str(tmp_path / name) for name in ("c1", "c2")]
    try:
        for n, path in enumerate(dirs):
            os.mkdir(path)
            _, spec = make_spec(path, ["sh", "-c", "echo hi"])
            if n:
                first = server.pid
                os.kill(first, signal.SIGKILL)
                wait_gone(first)
            assert start_shim(path, spec, forkserver=server, timeout=30)["Pid"]
            assert ShimClient(path).wait(timeout=10)["ExitCode"] == 0
        assert server.pid and server.pid != first
        assert not os.path.exists(f"/proc/{first}")  # reaped, not left a zombie
    finally:
        server.close()
        for path in dirs:
            kill_started(path, None)


def test_a_fork_server_that_cannot_start_leaves_shims_to_start_directly(container_dir, caplog):
    server = ForkServer(pythonpath=PYTHONPATH, preload=["no_such_module_here"])
    result = None
    try:
        _, spec = make_spec(container_dir, ["sh", "-c", "echo hi"])
        result = start_shim(container_dir, spec, forkserver=server, timeout=30)
        assert ShimClient(container_dir).wait(timeout=10)["ExitCode"] == 0
        assert server.pid is None
        assert "the shim fork server could not start" in caplog.text
        assert read_log(os.path.join(container_dir, "c1-json.log"))[0]["log"] == "hi\n"
    finally:
        server.close()
        kill_started(container_dir, result)


def test_the_fork_server_ends_with_the_daemon(container_dir):
    _, spec = make_spec(container_dir, ["sh", "-c", LOOP])
    starter = textwrap.dedent(f"""
        import json, os, signal, sys
        from engine.shim.launcher import ForkServer, start_shim
        server = ForkServer(pythonpath={PYTHONPATH!r}, preload=["engine.testing.hostexec"])
        result = start_shim({container_dir!r}, json.loads(sys.argv[1]), forkserver=server)
        print(json.dumps([server.pid, result]), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up: as a daemon killed with -9
    """)
    result = None
    try:
        proc = subprocess.run([sys.executable, "-c", starter, json.dumps(spec)], stdout=subprocess.PIPE, timeout=30)
        assert proc.returncode == -signal.SIGKILL
        server_pid, result = json.loads(proc.stdout)
        wait_gone(server_pid)  # its control socket reached EOF
        assert ShimClient(container_dir).state()["Running"] is True
    finally:
        kill_started(container_dir, result)


def warm_up(server: ForkServer) -> None:
    """Start the fork server with a request that fails (no such directory)."""
    launching = server.launch("/nonexistent", [])
    try:
        acked, answer, _ = launching.answer(time.monotonic() + 10)
        assert acked and b"no shim.json" in answer
    finally:
        launching.close()


def test_concurrent_starts_through_one_fork_server(tmp_path):
    server = ForkServer(pythonpath=PYTHONPATH, preload=["engine.testing.hostexec"])
    dirs = [str(tmp_path / f"c{n}") for n in range(8)]
    results: dict[str, Any] = {}

    def start(path: str) -> None:
        os.mkdir(path)
        _, spec = make_spec(path, ["sh", "-c", f"echo {os.path.basename(path)}"])
        results[path] = start_shim(path, spec, forkserver=server, timeout=30)

    try:
        threads = [threading.Thread(target=start, args=(path,)) for path in dirs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(results) == sorted(dirs)
        for path in dirs:
            assert ShimClient(path).wait(timeout=10)["ExitCode"] == 0
            name = os.path.basename(path)
            assert read_log(os.path.join(path, f"{name}-json.log"))[0]["log"] == f"{name}\n"
        assert len({server.pid}) == 1 and server.pid
    finally:
        server.close()
        for path in dirs:
            kill_started(path, results.get(path))


@pytest.mark.slow
def test_a_stuck_fork_server_fails_one_start_and_is_replaced(tmp_path):
    server = ForkServer(pythonpath=PYTHONPATH, preload=["engine.testing.hostexec"])
    first, second = str(tmp_path / "c1"), str(tmp_path / "c2")
    try:
        warm_up(server)
        stuck = server.pid
        os.kill(stuck, signal.SIGSTOP)
        os.mkdir(first)
        _, spec = make_spec(first, ["sh", "-c", "echo hi"])
        with pytest.raises(HostError, match="did not report a start within 1s"):
            start_shim(first, spec, forkserver=server, timeout=1)
        # Killed, so that its queued request can never start the container later.
        wait_gone(stuck)
        time.sleep(0.5)
        assert read_state(first) is None and not processes_mentioning(first)
        os.mkdir(second)
        _, spec = make_spec(second, ["sh", "-c", "echo hi"])
        start_shim(second, spec, forkserver=server, timeout=30)
        assert ShimClient(second).wait(timeout=10)["ExitCode"] == 0
        assert server.pid not in (None, stuck)
    finally:
        server.close()
        for path in (first, second):
            kill_started(path, None)


def test_a_request_the_fork_server_dropped_is_launched_directly(container_dir):
    server = ForkServer(pythonpath=PYTHONPATH, preload=["engine.testing.hostexec"])
    result = None
    try:
        warm_up(server)
        doomed = server.pid
        os.kill(doomed, signal.SIGSTOP)  # the request waits in its queue ...
        killer = threading.Timer(0.5, os.kill, (doomed, signal.SIGKILL))  # ... and dies with it
        killer.start()
        _, spec = make_spec(container_dir, ["sh", "-c", LOOP])
        result = start_shim(container_dir, spec, forkserver=server, timeout=30)
        killer.join()
        # No launcher ever took it, so it was safe to launch the shim directly.
        assert f"-m engine.shim {container_dir}" in cmdline(result["ShimPid"])
        assert ShimClient(container_dir).state()["Running"] is True
    finally:
        server.close()
        kill_started(container_dir, result)


def test_more_attaches_than_a_message_carries_start_directly(container_dir):
    server = ForkServer(pythonpath=PYTHONPATH, preload=["engine.testing.hostexec"])
    conns = [prepare_attach(stdin=False, stdout=True, stderr=False) for _ in range(260)]
    result = None
    try:
        _, spec = make_spec(container_dir, ["sh", "-c", "echo hi"])
        result = start_shim(container_dir, spec, forkserver=server, attachers=conns, timeout=30)
        assert all(next(conn.frames())[1] == b"hi\n" for conn in conns)
        assert server.pid is None  # never needed
    finally:
        for conn in conns:
            conn.close()
        server.close()
        kill_started(container_dir, result)


@pytest.mark.slow
def test_a_confirmed_launcher_is_never_killed_however_slow(container_dir, monkeypatch):
    # The launcher stalls (stopped) right when the daemon confirms the start;
    # the daemon must not kill it, or the shim would never get the confirmation.
    from engine.shim import launcher

    confirm = launcher._Launching.acknowledge

    def stall_then_confirm(self):
        os.kill(self.proc.pid, signal.SIGSTOP)
        threading.Timer(6, os.kill, (self.proc.pid, signal.SIGCONT)).start()
        return confirm(self)

    monkeypatch.setattr(launcher._Launching, "acknowledge", stall_then_confirm)
    _, spec = make_spec(container_dir, ["sh", "-c", LOOP])
    result = start_shim(container_dir, spec, timeout=30)  # directly: our own launcher process
    try:
        time.sleep(2)  # the launcher resumes at 6 s and passes the confirmation on
        assert ShimClient(container_dir).state()["Running"] is True
        assert read_exit(container_dir) is None
    finally:
        kill_started(container_dir, result)


# ----------------------------------------------------------------------
# the fork server's helpers (ExecDriver.helpers)


@pytest.fixture
def helper_server() -> Iterator[ForkServer]:
    """A fork server for helper requests.

    Creates: the fork server process, closed (it exits at EOF) after the test.
    """
    server = ForkServer(pythonpath=PYTHONPATH, preload=["engine.testing.hostexec"])
    yield server
    server.close()


def _read_to_eof(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def test_helper_gets_its_args_and_descriptors(helper_server):
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        assert helper_server.spawn("shim_test_drivers:report_helper", [out_w, "x"], [out_w], err_w)
    finally:
        os.close(out_w)
        os.close(err_w)
    report = json.loads(_read_to_eof(out_r))
    assert _read_to_eof(err_r) == b""  # EOF: the helper is done
    assert report["args"] == [out_w, "x"]
    assert report["fds"] == 1
    # A copy of the warm server (forked through its template), not an interpreter started by us.
    assert "engine.shim.forkserver" in report["cmdline"] and report["ppid"] != os.getpid()


def _report(server: ForkServer) -> dict[str, Any]:
    """Spawn ``report_helper`` through ``server``; its report."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        assert server.spawn("shim_test_drivers:report_helper", [out_w], [out_w], err_w)
    finally:
        os.close(out_w)
        os.close(err_w)
    report = json.loads(_read_to_eof(out_r))
    assert _read_to_eof(err_r) == b""
    return report


def test_a_helper_module_imported_for_a_request_is_warm_for_the_next(helper_server):
    # Not preloaded: the first helper imports it itself, in its own process.
    first = _report(helper_server)
    assert first["imported_by"] == first["pid"]
    # The fork server imported it for the first request and made a new template with it.
    second = _report(helper_server)
    assert second["imported_by"] == helper_server.pid != second["pid"]
    assert _report(helper_server)["imported_by"] == helper_server.pid


def test_the_child_forked_ahead_takes_the_request_and_a_dead_one_is_replaced(helper_server):
    def waiting_child(template: int) -> int:
        """The one child of ``template`` once the helpers before it have exited."""
        [child] = wait_for(lambda: len(children_of([template])) == 1 and children_of([template]), what="one child")
        return child

    _report(helper_server)
    _report(helper_server)  # served after the new template the first one's import made
    server = helper_server.pid
    assert server is not None
    [template] = wait_for(lambda: children_of([server]) or None, what="the template")
    # One child waits, forked before any request comes.
    waiting = waiting_child(template)
    report = _report(helper_server)
    assert report["pid"] == waiting and report["ppid"] == template
    # Killed while it waits: the request goes to another.
    wait_gone(report["pid"])  # (the helper that served may still be exiting: one child too)
    waiting = waiting_child(template)
    assert waiting != report["pid"]
    os.kill(waiting, signal.SIGKILL)
    wait_gone(waiting)
    report = _report(helper_server)
    assert report["pid"] != waiting and report["ppid"] == template
    helper_server.close()
    wait_gone(template)
    wait_for(lambda: not children_of([template]), what="the waiting child gone with the template")


def test_helper_that_raises_reports_on_its_stderr(helper_server):
    err_r, err_w = os.pipe()
    try:
        assert helper_server.spawn("shim_test_drivers:failing_helper", [1], [], err_w)
    finally:
        os.close(err_w)
    err = _read_to_eof(err_r).decode()
    assert "RuntimeError: helper failed with [1]" in err
    assert helper_server.pid is not None  # the server goes on


@pytest.mark.parametrize(
    "target, message",
    [
        ("no_colon", "is not module:function"),
        ("no_such_module_here:f", "No module named 'no_such_module_here'"),
        ("shim_test_drivers:no_such_function", "no_such_function"),
    ],
)
def test_bad_helper_target_is_refused_on_its_stderr(helper_server, target, message):
    err_r, err_w = os.pipe()
    try:
        assert helper_server.spawn(target, [], [], err_w)
    finally:
        os.close(err_w)
    err = _read_to_eof(err_r).decode()
    assert "refused the request" in err and message in err
    # and it still serves
    assert "engine.shim.forkserver" in _report(helper_server)["cmdline"]


def test_spawn_after_close_is_declined(helper_server):
    helper_server.close()
    err_r, err_w = os.pipe()
    try:
        assert not helper_server.spawn("shim_test_drivers:report_helper", [], [], err_w)
    finally:
        os.close(err_r)
        os.close(err_w)


def test_the_loops_flag_is_set_once_and_wakes_its_waiters():
    flag = Flag()
    assert not flag.is_set() and not flag.wait(0.01)
    woken = []
    waiters = [threading.Thread(target=lambda: woken.append(flag.wait(10))) for _ in range(3)]
    for t in waiters:
        t.start()
    flag.set()
    flag.set()  # a second set changes nothing
    for t in waiters:
        t.join(10)
    assert woken == [True, True, True] and flag.is_set() and flag.wait(0)


def test_warm_up_leaves_no_descriptor_thread_or_file_behind():
    before = set(os.listdir("/proc/self/fd"))
    threads = threading.active_count()
    warm_up_the_shims(rounds=2)
    assert set(os.listdir("/proc/self/fd")) == before
    assert threading.active_count() == threads
    assert not os.path.exists("/nonexistent")
