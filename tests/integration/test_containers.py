"""Containers through the real docker CLI 28 and docker-py, on the native exec
driver, in the test sandbox (issue 4's "done when")."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import docker as dockerpy
import pytest

from engine.sys import proc
from engine.testing.daemon import DaemonProcess
from engine.testing.images import busybox_archive
from engine.testing.procs import children_of, cmdline, wait_gone
from engine.testing.tmux import Tmux, tmux_server
from engine.testing.tmux import available as tmux_available

pytestmark = pytest.mark.root


@pytest.fixture
def busybox(docker, tmp_path):
    path = tmp_path / "busybox.tar"
    path.write_bytes(busybox_archive())
    docker("load", "-i", str(path))
    return "busybox"


def out(proc) -> str:
    return proc.stdout.decode()


def test_run_rm_echo(docker, busybox):
    proc = docker("run", "--rm", "busybox", "echo", "hi")
    assert proc.stdout == b"hi\n"
    assert docker("ps", "-aq").stdout.strip() == b""


def test_exit_code(docker, busybox):
    proc = docker("run", "busybox", "sh", "-c", "exit 3", check=False)
    assert proc.returncode == 3


def test_missing_command_is_127_and_removed(docker, busybox):
    proc = docker("run", "--rm", "busybox", "nosuchcmd", check=False)
    assert proc.returncode == 127, proc.stderr
    assert b"executable file not found" in proc.stderr
    assert docker("ps", "-aq").stdout.strip() == b""


def test_permission_denied_is_126(docker, busybox):
    proc = docker("run", "--rm", "busybox", "/etc/passwd", check=False)
    assert proc.returncode == 126, proc.stderr


def test_unknown_image_is_404_for_pull(daemon):
    body = json.dumps({"Image": "nosuchimage", "Cmd": ["true"]}).encode()
    status, data = daemon.request(
        "POST", "/v1.41/containers/create", body, headers={"Content-Type": "application/json"}
    )
    assert status == 404 and b"No such image: nosuchimage:latest" in data


def test_detached_logs_stop_rm(docker, busybox):
    cid = out(
        docker(
            "run",
            "-d",
            "--name",
            "ticker",
            "busybox",
            "sh",
            "-c",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
        )
    ).strip()
    assert len(cid) == 64
    time.sleep(1)
    ps = out(docker("ps", "--format", "{{.Names}} {{.Status}}"))
    assert "ticker Up" in ps
    logs = out(docker("logs", "ticker"))
    assert "tick 0" in logs
    # A process that ignores SIGTERM: stop waits the timeout, then kills.
    started = time.monotonic()
    docker("stop", "-t", "1", "ticker")
    assert time.monotonic() - started >= 0.9
    inspect = json.loads(docker("inspect", "ticker").stdout)[0]
    assert inspect["State"]["Status"] == "exited" and inspect["State"]["ExitCode"] == 137
    docker("rm", "ticker")
    assert docker("ps", "-aq").stdout.strip() == b""


def test_logs_follow_ends_with_container(docker, busybox):
    docker("run", "-d", "--name", "short", "busybox", "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.3; done")
    proc = docker("logs", "-f", "short", timeout=30)
    assert proc.stdout == b"1\n2\n3\n"


def test_wait_and_stderr(docker, busybox):
    docker("run", "-d", "--name", "waiter", "busybox", "sh", "-c", "echo err >&2; sleep 0.5; exit 7")
    assert out(docker("wait", "waiter")).strip() == "7"
    proc = docker("logs", "waiter")
    assert proc.stderr == b"err\n" and proc.stdout == b""


def test_exec(docker, busybox):
    docker("run", "-d", "--name", "ex", "busybox", "sleep", "60")
    assert (
        out(docker("exec", "ex", "hostname")).strip()
        == json.loads(docker("inspect", "ex").stdout)[0]["Config"]["Hostname"]
    )
    proc = docker("exec", "ex", "sh", "-c", "exit 5", check=False)
    assert proc.returncode == 5
    assert out(docker("exec", "ex", "sh", "-c", "echo $$")).strip() != "1"
    docker("rm", "-f", "ex")


def test_top_pause_unpause(docker, busybox):
    docker("run", "-d", "--name", "tp", "busybox", "sleep", "60")
    top = out(docker("top", "tp"))
    assert "sleep 60" in top
    docker("pause", "tp")
    assert "Paused" in out(docker("ps", "--format", "{{.Status}}"))
    docker("unpause", "tp")
    assert "Paused" not in out(docker("ps", "--format", "{{.Status}}"))
    docker("rm", "-f", "tp")


def test_cp_both_ways(docker, busybox, tmp_path):
    docker("run", "-d", "--name", "cp", "busybox", "sleep", "60")
    src = tmp_path / "hello.txt"
    src.write_text("from the host\n")
    docker("cp", str(src), "cp:/tmp/")
    assert out(docker("exec", "cp", "cat", "/tmp/hello.txt")) == "from the host\n"
    docker("exec", "cp", "sh", "-c", "mkdir -p /data/d && echo inside > /data/d/f")
    dest = tmp_path / "out"
    dest.mkdir()
    docker("cp", "cp:/data/d", str(dest))
    assert (dest / "d" / "f").read_text() == "inside\n"
    proc = docker("cp", "cp:/../../../../etc/shadow", str(tmp_path / "shadow"), check=False)
    if proc.returncode == 0:
        # Resolved inside the container: busybox's own /etc/shadow, never the host's.
        assert (tmp_path / "shadow").read_text().startswith("root:*:19000")
    docker("rm", "-f", "cp")


def test_capabilities_masked_paths_readonly_proc(docker, busybox):
    caps = out(docker("run", "--rm", "busybox", "grep", "CapEff", "/proc/self/status"))
    assert caps.split()[1] == "00000000a80425fb"
    proc = docker(
        "run", "--rm", "busybox", "sh", "-c", "cat /proc/kcore | head -c 1 | wc -c; cat /proc/keys | wc -c", check=False
    )
    assert out(proc).split() == ["0", "0"]
    proc = docker("run", "--rm", "busybox", "sh", "-c", "echo 1 > /proc/sys/kernel/panic", check=False)
    assert proc.returncode != 0
    assert b"Read-only file system" in proc.stderr


def test_memory_limit_and_oom(docker, busybox):
    docker("run", "-d", "--name", "mem", "--memory", "32m", "busybox", "sleep", "60")
    inspect = json.loads(docker("inspect", "mem").stdout)[0]
    assert inspect["HostConfig"]["Memory"] == 32 * 1024 * 1024
    pid = inspect["State"]["Pid"]
    cgroup = open(f"/proc/{pid}/cgroup").read()
    mem_path = next(line.split(":", 2)[2] for line in cgroup.splitlines() if ":memory:" in line)
    limit = int(open(f"/sys/fs/cgroup/memory{mem_path}/memory.limit_in_bytes").read())
    assert limit == 32 * 1024 * 1024
    docker("rm", "-f", "mem")
    proc = docker(
        "run",
        "--name",
        "oom",
        "--memory",
        "32m",
        "--memory-swap",
        "32m",
        "busybox",
        "sh",
        "-c",
        "x=$(head -c 100000000 /dev/zero | tr '\\0' 'a'); echo done",
        check=False,
    )
    assert proc.returncode == 137
    assert json.loads(docker("inspect", "oom").stdout)[0]["State"]["OOMKilled"] is True


def test_pids_limit(docker, busybox):
    proc = docker(
        "run",
        "--rm",
        "--pids-limit",
        "10",
        "busybox",
        "sh",
        "-c",
        "for i in $(seq 1 30); do sleep 5 & done; wait",
        check=False,
    )
    assert b"can't fork" in proc.stderr or b"Resource temporarily unavailable" in proc.stderr


def test_stats_no_stream(docker, busybox):
    docker("run", "-d", "--name", "st", "busybox", "sleep", "60")
    line = out(docker("stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}", "st"))
    assert line.startswith("st ")
    docker("rm", "-f", "st")


def test_restart_always_brings_it_back(docker, busybox):
    docker("run", "-d", "--name", "rs", "--restart", "always", "busybox", "sh", "-c", "sleep 0.3; exit 1")
    deadline = time.monotonic() + 20
    count = 0
    while time.monotonic() < deadline:
        count = json.loads(docker("inspect", "rs").stdout)[0]["RestartCount"]
        if count >= 2:
            break
        time.sleep(0.3)
    assert count >= 2
    # docker wait returns at the next exit, though the policy restarts it (dockerd tells its
    # waiters at SetRestarting); docker-py's test_create_with_restart_policy waits so.
    started = time.monotonic()
    assert docker("wait", "rs", timeout=30).stdout.strip() == b"1"
    assert time.monotonic() - started < 15
    docker("rm", "-f", "rs")


def test_docker_py_run_and_exec(daemon, busybox):
    client = dockerpy.DockerClient(base_url=daemon.host, version="auto")
    assert client.containers.run("busybox", "echo hi", remove=True) == b"hi\n"
    c = client.containers.run("busybox", "sleep 60", detach=True)
    code, output = c.exec_run("sh -c 'echo out; exit 4'")
    assert (code, output) == (4, b"out\n")
    c.remove(force=True)
    client.close()


def test_name_conflict_and_running_rm(docker, busybox):
    docker("run", "-d", "--name", "dup", "busybox", "sleep", "60")
    proc = docker("run", "-d", "--name", "dup", "busybox", "true", check=False)
    assert proc.returncode == 125 and b'The container name "/dup" is already in use' in proc.stderr
    proc = docker("rm", "dup", check=False)
    assert proc.returncode != 0 and b"You cannot remove a running container" in proc.stderr
    docker("rm", "-f", "dup")


def test_start_of_running_is_304(daemon, docker, busybox):
    cid = out(docker("run", "-d", "busybox", "sleep", "60")).strip()
    status, _ = daemon.request("POST", f"/v1.41/containers/{cid}/start")
    assert status == 304
    docker("rm", "-f", cid)


def test_run_output_is_not_lost_to_a_start_that_races_the_attach(docker, busybox):
    """docker run sends the start as soon as its attach is answered: the attach must be
    waiting by then (one in 60 such runs lost its output under load before the fix)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> str:
        return out(docker("run", "--rm", "--net", "none", busybox, "echo", f"hi{i}"))

    with ThreadPoolExecutor(6) as pool:
        outputs = list(pool.map(one, range(36)))
    assert outputs == [f"hi{i}\n" for i in range(36)]


def test_volumes_and_binds(docker, busybox, tmp_path):
    host = tmp_path / "bind"
    host.mkdir()
    (host / "in").write_text("from host\n")
    docker("volume", "create", "named")
    proc = docker(
        "run",
        "--rm",
        "-v",
        f"{host}:/b",
        "-v",
        "named:/n",
        "busybox",
        "sh",
        "-c",
        "cat /b/in; echo vol > /n/f; echo out > /b/out",
    )
    assert out(proc) == "from host\n"
    assert (host / "out").read_text() == "out\n"
    assert out(docker("run", "--rm", "-v", "named:/n:ro", "busybox", "cat", "/n/f")) == "vol\n"
    proc = docker("run", "--rm", "-v", "named:/n:ro", "busybox", "sh", "-c", "echo x > /n/g", check=False)
    assert proc.returncode != 0
    assert "named" in out(docker("volume", "ls", "-q")).split()
    docker("volume", "rm", "named")
    proc = docker("run", "--rm", "--tmpfs", "/scratch", "busybox", "sh", "-c", "grep /scratch /proc/mounts")
    assert "tmpfs" in out(proc)


def test_events_stream(docker, busybox, daemon):
    since = str(int(time.time()) - 1)
    docker("run", "--rm", "busybox", "true")
    proc = docker("events", "--since", since, "--until", str(int(time.time()) + 1), "--format", "{{.Action}}")
    actions = out(proc).split()
    for action in ("create", "attach", "start", "die", "destroy"):
        assert action in actions, actions


def test_net_modes(docker, busybox):
    assert out(docker("run", "--rm", "--net", "none", "busybox", "ls", "/sys/class/net")).split() == ["lo"]

    # /proc/net/dev follows the reader's network namespace (this test's
    # sandbox); /sys/class/net here would show the namespace /sys was mounted in.
    def ifaces(text):
        return sorted(line.split(":")[0].strip() for line in text.splitlines()[2:])

    host_ifaces = ifaces(open("/proc/net/dev").read())
    assert ifaces(out(docker("run", "--rm", "--net", "host", "busybox", "cat", "/proc/net/dev"))) == host_ifaces
    docker("run", "-d", "--name", "netowner", "--net", "none", "busybox", "sleep", "60")
    a = out(docker("exec", "netowner", "readlink", "/proc/self/ns/net")).strip()
    b = out(docker("run", "--rm", "--net", "container:netowner", "busybox", "readlink", "/proc/self/ns/net")).strip()
    assert a == b
    docker("rm", "-f", "netowner")
    proc = docker("run", "--rm", "--net", "container:nosuch", "busybox", "true", check=False)
    assert proc.returncode != 0


def test_kill_daemon_containers_survive_and_healthchecks_resume(workdir, docker_config, tmp_path):
    d = DaemonProcess(os.path.join(workdir, "d"), ["-s", "vfs"]).start()
    env = dict(os.environ, DOCKER_HOST=d.host, DOCKER_CONFIG=docker_config)

    def docker(*args, check=True):
        proc = subprocess.run(["docker", *args], env=env, capture_output=True, timeout=120)
        if check:
            assert proc.returncode == 0, (args, proc.stderr, d.log()[-3000:])
        return proc

    archive = tmp_path / "bb.tar"
    archive.write_bytes(busybox_archive())
    docker("load", "-i", str(archive))
    docker(
        "run",
        "-d",
        "--name",
        "survivor",
        "--health-cmd",
        "test ! -e /tmp/bad",
        "--health-interval",
        "200ms",
        "--health-retries",
        "1",
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done",
    )

    def health() -> dict:
        return json.loads(docker("inspect", "survivor").stdout)[0]["State"]["Health"]

    def wait_health(status: str) -> dict:
        deadline = time.monotonic() + 20
        while (state := health())["Status"] != status:
            assert time.monotonic() < deadline, (status, state, d.log()[-3000:])
            time.sleep(0.1)
        return state

    wait_health("healthy")
    # The worker launched the shim through its fork server, which ends with the worker.
    forkservers = [pid for pid in children_of(d.pids()) if "engine.shim.forkserver" in cmdline(pid)]
    assert len(forkservers) == 1
    d.kill()
    wait_gone(forkservers[0])
    time.sleep(1)
    d2 = DaemonProcess(os.path.join(workdir, "d"), ["-s", "vfs"]).start()
    try:
        ps = docker("ps", "--format", "{{.Names}} {{.Status}}").stdout.decode()
        assert "survivor Up" in ps
        before = docker("logs", "survivor").stdout.count(b"\n")
        time.sleep(1)
        after = docker("logs", "survivor").stdout.count(b"\n")
        assert after > before  # still running and logging
        # The restarted daemon probes again: a probe that now fails turns the container unhealthy.
        assert health()["Status"] == "healthy"
        docker("exec", "survivor", "touch", "/tmp/bad")
        state = wait_health("unhealthy")
        assert state["FailingStreak"] >= 1 and state["Log"][-1]["ExitCode"] == 1
        assert "(unhealthy)" in docker("ps", "--format", "{{.Status}}", "-f", "name=survivor").stdout.decode()
        docker("stop", "-t", "1", "survivor")
        assert docker("wait", "survivor").stdout.strip() == b"137"
        docker("rm", "survivor")
    finally:
        d2.stop()


def test_a_graceful_restart_keeps_a_running_root_mounted_once(workdir, docker_config, tmp_path):
    """SIGTERM with a container running (live restore): its overlay root stays mounted, and the
    next daemon adopts it (one mount, not one on top of another); a stopped container's goes."""
    root = os.path.join(workdir, "d")
    d = DaemonProcess(root, ["-s", "overlay"]).start()
    env = dict(os.environ, DOCKER_HOST=d.host, DOCKER_CONFIG=docker_config)

    def docker(*args) -> bytes:
        proc = subprocess.run(["docker", *args], env=env, capture_output=True, timeout=120)
        assert proc.returncode == 0, (args, proc.stderr, (d2 or d).log()[-3000:])
        return proc.stdout.strip()

    def mounts(cid: bytes) -> int:
        merged = os.path.realpath(os.path.join(root, "root", "overlay", cid.decode(), "merged"))
        return sum(1 for m in proc.mountinfo() if m.mount_point == merged)

    archive = tmp_path / "bb.tar"
    archive.write_bytes(busybox_archive())
    d2: DaemonProcess | None = None
    try:
        docker("load", "-i", str(archive))
        running = docker("run", "-d", "busybox", "sh", "-c", "echo kept > /written; exec sleep 300")
        stopped = docker("create", "busybox", "true")
        docker("cp", f"{stopped.decode()}:/bin/true", str(tmp_path / "true"))  # mounts its root a moment
        assert mounts(running) == 1 and mounts(stopped) == 0
        d.stop()
        assert mounts(running) == 1
        d2 = DaemonProcess(root, ["-s", "overlay"]).start()
        assert docker("inspect", "-f", "{{.State.Running}}", running.decode()) == b"true"
        assert b"kept\n" in docker("cp", f"{running.decode()}:/written", "-")  # read through the root
        assert mounts(running) == 1
        docker("rm", "-f", running.decode(), stopped.decode())
        assert mounts(running) == 0
    finally:
        (d2 or d).stop()


@pytest.fixture
def tmux(daemon, docker_config) -> Iterator[Tmux]:
    """A private tmux server whose commands talk to ``daemon`` (:mod:`engine.testing.tmux`); killed afterwards."""
    if not tmux_available():
        pytest.skip("tmux is not installed")
    env = dict(os.environ, DOCKER_HOST=daemon.host, DOCKER_CONFIG=docker_config, TERM="xterm")
    with tmux_server("engine-it", env) as server:
        yield server


def test_run_it_interactive(tmux, docker, busybox):
    tmux.start("docker run -it --name inter busybox sh; echo EXITED=$?; sleep 30", width=120, height=40)
    tmux.wait_for("/ #")
    tmux.send("echo hello-$((6*7))", "Enter")
    tmux.wait_for("hello-42")
    tmux.send("stty size; tty", "Enter")
    tmux.wait_for("40 120")
    tmux.wait_for("/dev/pts/0")
    tmux.send("exit 4", "Enter")
    tmux.wait_for("EXITED=4")
    docker("rm", "inter")


def test_exec_it_interactive(tmux, docker, busybox):
    docker("run", "-d", "--name", "execit", "busybox", "sleep", "60")
    tmux.start("docker exec -it execit sh; echo EXITED=$?; sleep 30", width=120, height=40)
    tmux.wait_for("/ #")
    tmux.send("tty", "Enter")
    tmux.wait_for("/dev/pts/0")  # a pty of the container's own devpts
    tmux.send("stty size", "Enter")
    tmux.wait_for("40 120")
    tmux.send("exit 6", "Enter")
    tmux.wait_for("EXITED=6")
    docker("rm", "-f", "execit")


def test_attach_to_running(tmux, docker, busybox):
    docker("run", "-dit", "--name", "att", "busybox", "sh")
    tmux.start("docker attach att; echo DETACHED=$?; sleep 30", width=120, height=40)
    time.sleep(1)
    tmux.send("echo attached-$((1+1))", "Enter")
    tmux.wait_for("attached-2")
    tmux.send("C-p", "C-q")
    tmux.wait_for("DETACHED=")
    assert "Up" in out(docker("ps", "--filter", "name=att", "--format", "{{.Status}}"))
    docker("rm", "-f", "att")


def test_abandoned_waits_end_their_jobs(workdir, docker_config, tmp_path):
    """The docker CLI opens wait?condition=next-exit for every run -d and
    leaves; each wait job must end once its client is gone, or the worker's
    threads run out."""
    import socket as sockets

    d = DaemonProcess(os.path.join(workdir, "dbg"), ["-s", "vfs", "-D"]).start()
    env = dict(os.environ, DOCKER_HOST=d.host, DOCKER_CONFIG=docker_config)
    try:
        archive = tmp_path / "bb.tar"
        archive.write_bytes(busybox_archive())
        subprocess.run(["docker", "load", "-i", str(archive)], env=env, check=True, capture_output=True)
        cid = (
            subprocess.run(["docker", "run", "-d", "busybox", "sleep", "120"], env=env, check=True, capture_output=True)
            .stdout.decode()
            .strip()
        )

        def running_jobs() -> int:
            return json.loads(d.request("GET", "/debug/vars")[1])["running_jobs"]

        for _ in range(20):
            s = sockets.socket(sockets.AF_UNIX)
            s.connect(d.socket)
            s.sendall(f"POST /v1.41/containers/{cid}/wait?condition=next-exit HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert s.recv(4096).startswith(b"HTTP/1.1 200")  # headers at once
            s.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and running_jobs() > 0:
            time.sleep(0.5)
        assert running_jobs() == 0
        subprocess.run(["docker", "rm", "-f", cid], env=env, capture_output=True)
    finally:
        d.stop()
