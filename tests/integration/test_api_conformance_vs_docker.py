"""Issue 13, checked side by side: our daemon and dockerd 20.10 answer the stock CLI, docker-py
and raw requests the same way for healthchecks, API versions, logging drivers, --init and
ulimits, the container: modes, mounts over /etc files, cgroups, execs and the smaller corners.

Each module-scoped daemon (``target``, tests/integration/conftest.py) has the busybox test
image; every container a test makes is removed after it (``clean``). Where the two must differ
(the API version each reports) the test says so. Values that touch the host stay harmless:
ulimits under the current hard limit (no CAP_SYS_RESOURCE here), cgroups under ``/docker``
removed with their containers.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import docker
import pytest

from engine.testing.sidebyside import wait_for

pytestmark = [pytest.mark.root("daemons"), pytest.mark.skipif(shutil.which("docker") is None, reason="needs docker")]
SECOND = 1_000_000_000


# ---------------------------------------------------------------------------
# 1. healthchecks


def test_healthcheck_becomes_healthy_then_unhealthy(clean):
    t = clean
    t.docker(
        "run", "-d", "--name", "hc", "--health-cmd", "test -e /tmp/ok", "--health-interval", "1s",
        "--health-retries", "2", "busybox", "sh", "-c", "sleep 2; touch /tmp/ok; sleep 600",
    )  # fmt: skip
    assert (
        t.docker("ps", "--format", "{{.Status}}", "--filter", "name=hc").stdout.strip().endswith("(health: starting)")
    )
    assert wait_for(lambda: t.inspect("hc")["State"]["Health"]["Status"] == "healthy")
    assert t.docker("ps", "--format", "{{.Status}}", "--filter", "name=hc").stdout.strip().endswith("(healthy)")
    assert t.docker("ps", "-q", "--filter", "health=healthy").stdout.strip()
    assert not t.docker("ps", "-q", "--filter", "health=unhealthy").stdout.strip()
    bad = t.docker("ps", "--filter", "health=bogus", check=False)
    assert bad.returncode != 0 and "Unrecognised filter value for health: bogus" in bad.stderr
    t.docker("exec", "hc", "rm", "/tmp/ok")
    assert wait_for(lambda: t.inspect("hc")["State"]["Health"]["Status"] == "unhealthy")
    assert wait_for(lambda: t.inspect("hc")["State"]["Health"]["FailingStreak"] >= 4)
    health = t.inspect("hc")["State"]["Health"]
    assert len(health["Log"]) == 5  # the last five only
    assert set(health["Log"][-1]) == {"Start", "End", "ExitCode", "Output"} and health["Log"][-1]["ExitCode"] == 1
    events = t.docker(
        "events", "--since", "0", "--until", str(int(time.time()) + 1), "--filter", "container=hc",
        "--format", "{{.Action}}",
    ).stdout.split("\n")  # fmt: skip
    assert "health_status: healthy" in events and "health_status: unhealthy" in events


def test_healthcheck_none_shell_form_and_start_period(clean):
    t = clean
    api = t.api("1.41")
    try:
        c = api.create_container(
            "busybox",
            "sleep 600",
            healthcheck={"test": "echo x >> /tmp/n; test $(wc -l < /tmp/n) -ge 3", "interval": SECOND,
                         "start_period": 10 * SECOND, "retries": 1},
        )  # fmt: skip
        assert api.inspect_container(c)["Config"]["Healthcheck"]["Test"][0] == "CMD-SHELL"
        api.start(c)
        # The first two failures fall in the start period: no streak, still starting.
        assert wait_for(lambda: api.inspect_container(c)["State"]["Health"]["Status"] == "healthy")
        assert api.inspect_container(c)["State"]["Health"]["FailingStreak"] == 0
        none = api.create_container("busybox", "true", healthcheck={"test": ["NONE"]})
        api.start(none)
        assert "Health" not in api.inspect_container(none)["State"]
        with pytest.raises(Exception, match="Interval in Healthcheck cannot be less than 1ms"):
            api.create_container("busybox", "true", healthcheck={"test": ["CMD", "true"], "interval": 5})
    finally:
        api.close()


# ---------------------------------------------------------------------------
# 2. API versions


def test_api_version_reported_and_negotiated(target):
    t = target
    status, doc = t.request("GET", "/version")
    assert doc["MinAPIVersion"] == "1.12"
    version = t.docker("version", "--format", "{{.Server.APIVersion}}").stdout.strip()
    assert version == doc["ApiVersion"] == ("1.45" if t.kind == "engine" else "1.41")
    status, _ = t.request("HEAD", "/_ping")
    assert status == 200
    # docker-py negotiates the same version from /version.
    api = t.api()
    try:
        assert api.api_version == doc["ApiVersion"]
    finally:
        api.close()


def test_a_1_41_request_gets_1_41_answers(clean):
    t = clean
    t.docker("create", "--name", "v41", "busybox", "true")
    status, doc = t.request("GET", "/v1.41/containers/v41/json")
    assert status == 200 and doc["HostConfig"]["KernelMemory"] == 0 and "KernelMemoryTCP" in doc["HostConfig"]
    assert "DNSNames" not in json.dumps(doc["NetworkSettings"])
    status, images = t.request("GET", "/v1.41/images/json")
    assert "VirtualSize" in images[0]
    status, df = t.request("GET", "/v1.41/system/df")
    assert df["BuilderSize"] == 0
    if t.kind == "engine":  # dockerd 20.10 has no 1.45 to compare with: Docker 26's answers
        status, doc = t.request("GET", "/v1.45/containers/v41/json")
        assert "KernelMemory" not in doc["HostConfig"]
        status, images = t.request("GET", "/v1.45/images/json")
        assert "VirtualSize" not in images[0]
        status, image = t.request("GET", "/v1.45/images/busybox/json")
        assert "ContainerConfig" not in image and "Container" not in image


# ---------------------------------------------------------------------------
# 4. logging drivers


def test_logging_drivers_none_local_and_unknown(clean):
    t = clean
    assert t.docker("run", "--name", "ln", "--log-driver", "none", "busybox", "echo", "hi").stdout == "hi\n"
    logs = t.docker("logs", "ln", check=False)
    assert logs.returncode != 0 and "configured logging driver does not support reading" in logs.stderr
    assert t.request("GET", "/containers/ln/logs?stdout=1")[0] == 501
    assert t.inspect("ln")["LogPath"] == ""
    # The pause orders the two records: each daemon reads stdout and stderr separately, and
    # dockerd once logged err before out (then --tail 1 is the stdout line).
    t.docker("run", "--name", "ll", "--log-driver", "local", "busybox", "sh", "-c", "echo out; sleep 0.2; echo err >&2")
    both = t.docker("logs", "ll")
    assert (both.stdout, both.stderr) == ("out\n", "err\n")
    assert t.inspect("ll")["LogPath"] == "" and t.inspect("ll")["HostConfig"]["LogConfig"]["Type"] == "local"
    assert t.docker("logs", "--tail", "1", "ll").stderr == "err\n"
    bad = t.docker("run", "--rm", "--log-driver", "bogus", "busybox", "true", check=False)
    assert bad.returncode != 0 and 'error looking up logging plugin bogus: plugin "bogus" not found' in bad.stderr
    bad = t.docker("run", "--rm", "--log-opt", "mode=bogus", "busybox", "true", check=False)
    assert "logger: logging mode not supported: bogus" in bad.stderr
    assert t.docker("run", "--rm", "--log-opt", "mode=non-blocking", "busybox", "echo", "nb").stdout == "nb\n"


def test_json_file_max_size_is_decimal(clean):
    t = clean
    # 1k is 1000 bytes as go-units' FromHumanSize reads it: a file rotates before it passes it
    # by more than one entry; 60 entries of ~70 bytes make a handful of rotations.
    script = "i=0; while [ $i -lt 60 ]; do echo entry $i; i=$((i+1)); done"
    t.docker(
        "run", "--name", "js", "--log-opt", "max-size=1k", "--log-opt", "max-file=3", "busybox", "sh", "-c", script
    )
    path = t.inspect("js")["LogPath"]
    sizes = [os.path.getsize(p) for p in (path, path + ".1", path + ".2")]
    assert all(size < 1000 + 80 for size in sizes) and max(sizes) > 1000 - 80
    assert t.docker("logs", "js").stdout.splitlines()[-1] == "entry 59"


# ---------------------------------------------------------------------------
# 5. init, ulimits, runtimes


def test_init_ulimits_and_runtime_names(clean):
    t = clean
    ps = t.docker("run", "--rm", "--init", "busybox", "ps", "-o", "pid,args").stdout.splitlines()
    assert ps[1].split(None, 1) == ["1", "/sbin/docker-init -- ps -o pid,args"]
    hard = int(open("/proc/self/limits").read().split("Max open files")[1].split()[1])
    soft = min(512, hard)
    out = t.docker("run", "--rm", "--ulimit", f"nofile={soft}:{hard}", "busybox", "sh", "-c", "ulimit -n; ulimit -Hn")
    assert out.stdout.split() == [str(soft), str(hard)]
    t.docker("run", "-d", "--name", "ul", "--ulimit", f"nofile={soft}:{hard}", "busybox", "sleep", "600")
    assert t.docker("exec", "ul", "sh", "-c", "ulimit -n").stdout.strip() == str(soft)
    too_high = t.docker("run", "--rm", "--ulimit", f"nofile=100:{hard + 1}", "busybox", "true", check=False)
    assert too_high.returncode != 0 and "error setting rlimit type 7: operation not permitted" in too_high.stderr
    info = json.loads(t.docker("info", "--format", "{{json .}}").stdout)
    assert info["DefaultRuntime"] == "runc" and "runc" in info["Runtimes"]
    t.docker("run", "--rm", "--runtime", "runc", "busybox", "true")
    t.docker("create", "--name", "rt", "busybox", "true")
    assert t.inspect("rt")["HostConfig"]["Runtime"] == "runc"
    bad = t.docker("run", "--rm", "--runtime", "nosuch", "busybox", "true", check=False)
    assert "Unknown runtime specified nosuch" in bad.stderr


# ---------------------------------------------------------------------------
# 6. the container: modes, SandboxKey


def test_container_modes(clean):
    t = clean
    t.docker(
        "run", "-d", "--name", "donor", "--ipc", "shareable", "busybox", "sh", "-c",
        "echo shared > /dev/shm/x; sleep 600",
    )  # fmt: skip
    assert wait_for(lambda: t.docker("exec", "donor", "cat", "/dev/shm/x", check=False).stdout == "shared\n")
    ps = t.docker("run", "--rm", "--pid", "container:donor", "busybox", "ps", "-o", "pid,args").stdout
    assert ps.split()[2:4] == ["1", "sleep"]  # the donor's PID 1 (busybox sh execs its last command)
    assert t.docker("run", "--rm", "--ipc", "container:donor", "busybox", "cat", "/dev/shm/x").stdout == "shared\n"
    hostname = t.docker("run", "--rm", "--network", "container:donor", "busybox", "hostname").stdout.strip()
    assert hostname == t.inspect("donor")["Config"]["Hostname"]
    t.docker("run", "-d", "--name", "private", "busybox", "sleep", "600")
    refused = t.docker("run", "--rm", "--ipc", "container:private", "busybox", "true", check=False)
    assert "non-shareable IPC (hint: use IpcMode:shareable for the donor container)" in refused.stderr
    missing = t.docker("create", "--pid", "container:nosuch", "busybox", "true", check=False)
    assert "No such container: nosuch" in missing.stderr
    t.docker("run", "-d", "--name", "none", "--network", "none", "busybox", "sleep", "600")
    settings = t.inspect("none")["NetworkSettings"]
    assert settings["SandboxKey"] and os.path.exists(settings["SandboxKey"]) and len(settings["SandboxID"]) == 64
    assert t.docker("run", "--rm", "--ipc", "none", "busybox", "ls", "/dev/shm", check=False).returncode != 0


# ---------------------------------------------------------------------------
# 7. mounts over the daemon's /etc files


def test_user_mounts_replace_etc_files(clean, tmp_path):
    t = clean
    (tmp_path / "hosts").write_text("1.2.3.4 mine\n")
    (tmp_path / "resolv.conf").write_text("nameserver 9.9.9.9\n")
    (tmp_path / "hostname").write_text("myname\n")
    out = t.docker(
        "run", "--rm", "-v", f"{tmp_path / 'hosts'}:/etc/hosts", "-v", f"{tmp_path / 'resolv.conf'}:/etc/resolv.conf:ro",
        "--mount", f"type=bind,src={tmp_path / 'hostname'},dst=/etc/hostname",
        "busybox", "cat", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname",
    )  # fmt: skip
    assert out.stdout == "1.2.3.4 mine\nnameserver 9.9.9.9\nmyname\n"


# ---------------------------------------------------------------------------
# 8. cgroups


def test_cgroups_as_docker_lays_them_out(clean):
    t = clean
    cid = t.docker("run", "-d", "-m", "64m", "busybox", "sleep", "600").stdout.strip()
    lines = t.docker("exec", cid, "cat", "/proc/self/cgroup").stdout.splitlines()
    memory = next(line for line in lines if ":memory:" in line)
    assert memory.endswith(f":/docker/{cid}")
    assert all(line.endswith(f"/docker/{cid}") for line in lines)
    inside = t.docker("exec", cid, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes").stdout.strip()
    assert inside == str(64 << 20)
    listing = set(t.docker("exec", cid, "ls", "/sys/fs/cgroup").stdout.split())
    assert {"cpu", "cpuacct", "memory", "pids", "freezer", "devices"} <= listing
    write = t.docker("exec", cid, "sh", "-c", "echo 1 > /sys/fs/cgroup/memory/memory.limit_in_bytes", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    other = t.docker(
        "run", "--rm", "--cgroup-parent", "/conformance-test", "busybox", "cat", "/proc/self/cgroup"
    ).stdout
    assert ":memory:/conformance-test/" in other
    for hierarchy in os.listdir("/sys/fs/cgroup"):  # the parent both daemons leave, as Docker does
        try:
            os.rmdir(os.path.join("/sys/fs/cgroup", hierarchy, "conformance-test"))
        except OSError:
            pass
    assert json.loads(t.docker("info", "--format", "{{json .}}").stdout)["CgroupDriver"] == "cgroupfs"


# ---------------------------------------------------------------------------
# 9. execs


def _raw(sock):
    """The plain socket under what docker-py's ``exec_start(socket=True)`` returns."""
    return sock._sock if hasattr(sock, "_sock") else sock


def _read_all(sock, timeout: float = 10.0) -> bytes:
    raw = _raw(sock)
    raw.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = raw.recv(65536)
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        data += chunk
    return data


def test_exec_framing_exit_codes_resize_and_detach_keys(clean):
    t = clean
    api = t.api("1.41")
    try:
        c = api.create_container("busybox", "cat", stdin_open=True)
        api.start(c)
        cmd = 'sh -c "echo hello out; sleep 0.5; echo hello err >&2"'
        # A tty exec started without Tty (docker-py's default) is framed (moby frames by the
        # start's Tty): both readings get the whole pty output.
        res = api.exec_create(c, cmd, tty=True)
        assert api.exec_start(res) == b"hello out\r\nhello err\r\n"
        res = api.exec_create(c, cmd, tty=True)
        assert api.exec_start(res, demux=True) == (b"hello out\r\nhello err\r\n", None)
        res = api.exec_create(c, cmd)
        assert api.exec_start(res, demux=True) == (b"hello out\n", b"hello err\n")
        # Started with Tty, the output is raw.
        res = api.exec_create(c, ["printf", "raw"], tty=True)
        sock = api.exec_start(res, tty=True, socket=True)
        assert _read_all(sock) == b"raw"
        sock.close()
        # dockerd records 126 for every exec that cannot start, a missing executable too.
        for argv in (["nosuch"], ["/etc/passwd"], ["/nosuch/x"]):
            res = api.exec_create(c, argv)
            api.exec_start(res)
            assert api.exec_inspect(res)["ExitCode"] == 126, argv
            assert t.docker("exec", c["Id"], *argv, check=False).returncode == 126
        # A resize sent right after the start waits for the process and takes.
        res = api.exec_create(c, ["sh", "-c", "sleep 1; stty size"], tty=True)
        sock = api.exec_start(res, tty=True, socket=True)
        api.exec_resize(res, height=33, width=77)
        assert b"33 77" in _read_all(sock)
        sock.close()
        # A resize of a running exec without a tty is nothing to do; of a finished one, a 404.
        res = api.exec_create(c, ["sleep", "2"])
        api.exec_start(res, detach=True)
        api.exec_resize(res, height=10, width=10)
        assert wait_for(lambda: not api.exec_inspect(res)["Running"])
        with pytest.raises(docker.errors.NotFound):
            api.exec_resize(res, height=10, width=10)
        # Detach keys from the client's config reach the daemon (docker-py sends detachKeys).
        api._general_configs["detachKeys"] = "ctrl-p"
        res = api.exec_create(c, "cat", stdin=True, tty=True, stdout=True)
        sock = api.exec_start(res, tty=True, socket=True)
        _raw(sock).sendall(b"\x10")
        _read_all(sock)  # the daemon ends the stream: detached
        sock.close()
    finally:
        api.close()


# ---------------------------------------------------------------------------
# 10. the smaller ones


def test_link_removal_restart_policy_and_listing(clean):
    t = clean
    t.docker("run", "-d", "--name", "lk1", "busybox", "sleep", "600")
    t.docker("run", "-d", "--name", "lk2", "--link", "lk1:al", "busybox", "sleep", "600")
    assert "lk2/al" in t.docker("ps", "--no-trunc", "--format", "{{.Names}}").stdout
    t.docker("rm", "--link", "lk2/al")
    assert "lk2/al" not in t.docker("ps", "--no-trunc", "--format", "{{.Names}}").stdout
    assert t.inspect("lk2")["HostConfig"]["Links"] is None and t.inspect("lk1")["State"]["Running"]
    assert "default link name" in t.docker("rm", "--link", "lk2", check=False).stderr
    status, doc = t.request(
        "POST", "/containers/create", {"Image": "busybox", "HostConfig": {"RestartPolicy": {"Name": "always", "MaximumRetryCount": 3}}}
    )  # fmt: skip
    assert status == 400 and doc["message"] == "maximum retry count cannot be used with restart policy 'always'"
    t.docker("create", "--name", "stopped", "busybox", "true")
    assert t.docker("ps", "-l", "--format", "{{.Names}}").stdout.strip() == "stopped"
    assert t.docker("ps", "-n", "1", "--format", "{{.Names}}").stdout.strip() == "stopped"


def test_images_reference_filter_matches_tags(clean):
    t = clean
    t.docker("tag", "busybox", "other:one")
    try:
        rows = t.docker("images", "busybox", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        assert rows == ["busybox:latest"]
        rows = t.docker("images", "--filter", "reference=other*", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        assert rows == ["other:one"]
    finally:
        t.docker("rmi", "other:one")


def test_local_volume_driver_options(clean, tmp_path):
    t = clean
    t.docker("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs", "--opt", "o=size=1m,uid=1000", "tv")
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("there\n")
    t.docker("volume", "create", "--opt", "type=none", "--opt", f"device={source}", "--opt", "o=bind", "bv")
    try:
        out = t.docker("run", "--rm", "-v", "tv:/d", "busybox", "sh", "-c", "grep ' /d ' /proc/mounts; stat -c %u /d")
        assert "tmpfs /d tmpfs rw" in out.stdout and "size=1024k" in out.stdout and out.stdout.split()[-1] == "1000"
        assert t.docker("run", "--rm", "-v", "bv:/b", "busybox", "cat", "/b/f").stdout == "there\n"
        assert t.docker("volume", "inspect", "-f", "{{.Options.type}}", "tv").stdout.strip() == "tmpfs"
        for opts, message in (
            (["--opt", "foo=bar"], 'invalid option: "foo"'),
            (["--opt", "type=tmpfs"], 'missing required option: "device"'),
        ):
            bad = t.docker("volume", "create", *opts, "bad", check=False)
            assert bad.returncode != 0 and message in bad.stderr
        t.docker("volume", "create", "--opt", "type=bogusfs", "--opt", "device=x", "xv")
        bad = t.docker("run", "--rm", "-v", "xv:/x", "busybox", "true", check=False)
        assert "failed to mount local volume: mount x:" in bad.stderr and "no such device" in bad.stderr
    finally:
        t.docker("volume", "rm", "tv", "bv", "xv", check=False)


def test_diff_lists_a_deleted_files_parents(clean):
    t = clean
    t.docker("run", "--name", "df1", "busybox", "sh", "-c", "rm /etc/passwd; mkdir -p /tmp/a; touch /tmp/a/b")
    changes = sorted(t.docker("diff", "df1").stdout.splitlines(), key=lambda line: line[2:])
    assert changes == ["C /etc", "D /etc/passwd", "C /tmp", "A /tmp/a", "A /tmp/a/b"]


def test_a_load_that_ends_early(target, tmp_path):
    t = target
    from engine.testing.images import busybox_archive

    data = busybox_archive()
    path = tmp_path / "half.tar"
    path.write_bytes(data[: len(data) // 2])
    proc = t.docker("load", "-i", str(path), check=False)
    assert proc.returncode != 0 and "unexpected EOF" in proc.stderr
    status, body = t.request("POST", "/images/load", data[:700], {"Content-Type": "application/x-tar"})
    assert status == 200 and body["error"] == "Error processing tar file(exit status 1): unexpected EOF"
