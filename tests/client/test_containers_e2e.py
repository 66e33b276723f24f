"""The ``engine`` container commands end to end, against our daemon and the reference dockerd.

Each test runs the ``engine`` CLI as a subprocess (stdin not a terminal)
and checks what docker's CLI would print and return.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time

import pytest

from engine.testing.layertar import Entry, make_layer_tar

pytestmark = pytest.mark.root


def test_run_rm_prints_output(engine):
    proc = engine("run", "--rm", "busybox", "echo", "hi")
    assert (proc.returncode, proc.stdout) == (0, "hi\n"), proc.stderr
    assert engine("ps", "-aq").stdout == ""


def test_run_exit_status_and_streams(engine):
    proc = engine("run", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert proc.returncode == 3
    assert proc.stdout == "out\n" and "err\n" in proc.stderr


def test_run_missing_command_is_127(engine):
    proc = engine("run", "--rm", "busybox", "nosuchcmd")
    assert proc.returncode == 127
    assert "executable file not found" in proc.stderr and "Run 'engine run --help'" in proc.stderr
    deadline = time.monotonic() + 10
    while engine("ps", "-aq").stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    assert engine("ps", "-aq").stdout == "", "--rm must remove the container when start fails"


def test_run_not_executable_is_126(engine):
    proc = engine("run", "--rm", "busybox", "/etc/passwd")
    assert proc.returncode == 126, proc.stderr


def test_run_interactive_stdin_pipe(engine):
    proc = engine("run", "--rm", "-i", "busybox", "sh", "-c", "cat; echo done", input="hello\nworld\n")
    assert (proc.returncode, proc.stdout) == (0, "hello\nworld\ndone\n"), proc.stderr


def test_run_tty_without_a_terminal_is_refused(engine):
    proc = engine("run", "-it", "busybox", "true", input="")
    assert proc.returncode == 1 and proc.stderr.strip() == "the input device is not a TTY"


def test_run_flag_errors_are_125(engine):
    proc = engine("run", "-p", "foo", "busybox")
    assert proc.returncode == 125
    assert proc.stderr.startswith("engine: invalid containerPort: foo")
    proc = engine("run", "-d", "-a", "stdout", "busybox")
    assert proc.returncode == 1 and "cannot specify both --attach and --detach" in proc.stderr


def test_run_missing_image_tries_to_pull(engine):
    proc = engine("run", "--rm", "nosuchimage:v1", timeout=120)
    assert proc.returncode == 125
    assert "Unable to find image 'nosuchimage:v1' locally" in proc.stderr
    proc = engine("create", "--pull", "never", "nosuchimage:v1")
    assert proc.returncode == 1 and "Unable to find image" not in proc.stderr
    assert "No such image" in proc.stderr


def test_detached_lifecycle(engine):
    proc = engine(
        "run",
        "-d",
        "--name",
        "web",
        "-l",
        "role=test",
        "busybox",
        "sh",
        "-c",
        "echo started; echo warn >&2; while true; do sleep 1; done",
    )
    assert proc.returncode == 0, proc.stderr
    cid = proc.stdout.strip()
    assert len(cid) == 64
    deadline = time.monotonic() + 10
    while "started" not in engine("logs", "web").stdout and time.monotonic() < deadline:
        time.sleep(0.2)

    ps = engine("ps").stdout.splitlines()
    assert ps[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    assert ps[1].startswith(cid[:12] + '   busybox   "sh -c ') and ps[1].endswith("web")
    assert "…" in ps[1] and " ago " in ps[1] and "Up " in ps[1]
    assert engine("ps", "-q").stdout == cid[:12] + "\n"
    assert engine("ps", "-q", "--no-trunc").stdout == cid + "\n"
    assert (
        engine("ps", "--format", '{{.ID}} {{.Names}} {{.State}} {{.Label "role"}}').stdout
        == f"{cid[:12]} web running test\n"
    )
    doc = json.loads(engine("ps", "--format", "{{json .}}").stdout)
    assert doc["Names"] == "web" and doc["Labels"] == "role=test" and doc["Status"].startswith("Up")
    assert engine("ps", "-f", "name=nomatch", "-q").stdout == ""
    assert engine("ps", "-f", "label=role=test", "-q").stdout == cid[:12] + "\n"

    logs = engine("logs", "web")
    assert logs.stdout == "started\n" and "warn\n" in logs.stderr
    stamped = engine("logs", "-t", "--tail", "1", "web")
    lines = (stamped.stdout + stamped.stderr).splitlines()
    assert len(lines) == 1 and re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z (started|warn)", lines[0])
    assert engine("logs", "--since", "1h", "web").stdout == "started\n"

    inspected = json.loads(engine("inspect", "web").stdout)
    assert len(inspected) == 1 and inspected[0]["Id"] == cid and inspected[0]["Config"]["Labels"] == {"role": "test"}
    assert (
        engine("inspect", "-f", "{{.State.Running}} {{.Name}} {{.Config.Labels}}", "web").stdout
        == "true /web map[role:test]\n"
    )
    assert engine("container", "inspect", "-f", "{{.Id}}", "web").stdout.strip() == cid

    top = engine("top", "web").stdout.splitlines()
    assert "PID" in top[0].split() and any("sleep" in line or "sh -c" in line for line in top[1:])

    stop = engine("stop", "-t", "1", "web")
    assert (stop.returncode, stop.stdout) == (0, "web\n"), stop.stderr
    status = engine("ps", "-a", "--format", "{{.Status}}").stdout
    assert status.startswith("Exited (")
    assert engine("rm", "web").stdout == "web\n"
    assert engine("ps", "-aq").stdout == ""


def test_errors_for_missing_containers(engine):
    proc = engine("stop", "nosuch1", "nosuch2")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "Error response from daemon: No such container: nosuch1",
        "Error response from daemon: No such container: nosuch2",
    ]
    proc = engine("rm", "-f", "nosuch")
    assert proc.returncode == 0 and "No such container: nosuch" in proc.stderr
    proc = engine("start", "nosuch")
    assert proc.returncode == 1 and proc.stderr.splitlines()[-1] == "Error: failed to start containers: nosuch"
    proc = engine("inspect", "nosuch")
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "[]\n", "Error: No such object: nosuch\n")
    for args in (("logs", "nosuch"), ("exec", "nosuch", "true"), ("port", "nosuch")):
        proc = engine(*args)
        assert proc.returncode == 1 and "No such container: nosuch" in proc.stderr, args


def test_exec_exit_codes_and_options(engine):
    assert engine("run", "-d", "--name", "box", "busybox", "sleep", "300").returncode == 0
    proc = engine("exec", "box", "sh", "-c", "exit 5")
    assert proc.returncode == 5
    proc = engine("exec", "-e", "A=1", "-w", "/tmp", "-u", "nobody", "box", "sh", "-c", "echo $A $(pwd) $(id -un)")
    assert (proc.returncode, proc.stdout) == (0, "1 /tmp nobody\n"), proc.stderr
    proc = engine("exec", "-i", "box", "cat", input="piped\n")
    assert proc.stdout == "piped\n"
    proc = engine("exec", "-d", "box", "sh", "-c", "echo bg > /tmp/bg")
    assert (proc.returncode, proc.stdout) == (0, "")
    time.sleep(0.5)
    assert engine("exec", "box", "cat", "/tmp/bg").stdout == "bg\n"


def test_exec_missing_command(engine):
    assert engine("run", "-d", "--name", "box", "busybox", "sleep", "300").returncode == 0
    proc = engine("exec", "box", "nosuchcmd")
    assert proc.returncode in (126, 127) and "nosuchcmd" in proc.stdout + proc.stderr, proc.stderr


def test_start_attach_wait_kill_restart(engine):
    assert engine("create", "--name", "once", "busybox", "sh", "-c", "echo ran; exit 4").returncode == 0
    proc = engine("start", "-a", "once")
    assert (proc.returncode, proc.stdout) == (4, "ran\n")
    assert engine("wait", "once").stdout == "4\n"
    assert engine("start", "once").stdout == "once\n"
    assert engine("wait", "once").stdout == "4\n"

    assert engine("run", "-d", "--name", "sleeper", "busybox", "sleep", "300").returncode == 0
    assert engine("kill", "-s", "KILL", "sleeper").stdout == "sleeper\n"
    assert engine("wait", "sleeper").stdout == "137\n"
    assert engine("restart", "-t", "1", "sleeper").stdout == "sleeper\n"
    assert engine("inspect", "-f", "{{.State.Running}}", "sleeper").stdout == "true\n"
    assert engine("pause", "sleeper").stdout == "sleeper\n"
    assert "(Paused)" in engine("ps", "--format", "{{.Status}}").stdout
    assert engine("unpause", "sleeper").stdout == "sleeper\n"
    proc = engine("rm", "sleeper")
    assert proc.returncode == 1 and proc.stdout == "" and "cannot remove a running container" in proc.stderr
    assert engine("rm", "-f", "sleeper").stdout == "sleeper\n"
    # Renamed while stopped: dockerd without a bridge cannot rename a running container's sandbox.
    proc = engine("rename", "once", "twice")
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stderr
    assert engine("ps", "-a", "--format", "{{.Names}}").stdout == "twice\n"
    proc = engine("rename", "once", "thrice")
    assert proc.returncode == 1 and proc.stderr.splitlines()[-1] == "Error: failed to rename container named once"


def test_attach_to_running_container(engine):
    assert (
        engine(
            "run", "-d", "--name", "talker", "busybox", "sh", "-c", "sleep 1; echo one; echo two >&2; exit 6"
        ).returncode
        == 0
    )
    proc = engine("attach", "--no-stdin", "talker")
    assert proc.returncode == 6
    assert "one\n" in proc.stdout and "two\n" in proc.stderr
    proc = engine("attach", "talker")
    assert proc.returncode == 1 and "You cannot attach to a stopped container" in proc.stderr


def test_update(engine):
    assert engine("run", "-d", "--name", "upd", "busybox", "sleep", "300").returncode == 0
    proc = engine(
        "update",
        "--memory",
        "64m",
        "--memory-swap",
        "128m",
        "--cpus",
        "0.5",
        "--cpu-shares",
        "512",
        "--pids-limit",
        "50",
        "--restart",
        "on-failure:2",
        "upd",
    )
    assert (proc.returncode, proc.stdout.splitlines()[0]) == (0, "upd"), proc.stderr
    doc = json.loads(engine("inspect", "upd").stdout)[0]["HostConfig"]
    assert (doc["Memory"], doc["MemorySwap"], doc["NanoCpus"], doc["CpuShares"], doc["PidsLimit"]) == (
        64 << 20,
        128 << 20,
        500_000_000,
        512,
        50,
    )
    assert doc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    proc = engine("update", "upd")
    assert proc.returncode == 1 and "you must provide one or more flags" in proc.stderr


def test_run_options_reach_the_container(engine, tmp_path):
    cidfile = tmp_path / "cid"
    proc = engine("run", "-d", "--cidfile", str(cidfile), "busybox", "true")
    assert proc.returncode == 0 and cidfile.read_text() == proc.stdout.strip()
    proc = engine("run", "-d", "--cidfile", str(cidfile), "busybox", "true")
    assert proc.returncode == 125 and "container ID file found" in proc.stderr
    env_file = tmp_path / "env"
    env_file.write_text("FROM_FILE=yes\n")
    proc = engine(
        "run",
        "--rm",
        "-e",
        "A=1",
        "--env-file",
        str(env_file),
        "-w",
        "/tmp",
        "-h",
        "boxname",
        "-u",
        "1:1",
        "--entrypoint",
        "sh",
        "busybox",
        "-c",
        "echo $A $FROM_FILE $(pwd) $(hostname) $(id -u)",
    )
    assert (proc.returncode, proc.stdout) == (0, "1 yes /tmp boxname 1\n"), proc.stderr
    host_dir = tmp_path / "shared"
    host_dir.mkdir()
    (host_dir / "in.txt").write_text("from host")
    proc = engine(
        "run",
        "--rm",
        "-v",
        f"{host_dir}:/shared",
        "busybox",
        "sh",
        "-c",
        "cat /shared/in.txt; echo back > /shared/out.txt",
    )
    assert proc.stdout == "from host", proc.stderr
    assert (host_dir / "out.txt").read_text() == "back\n"
    proc = engine(
        "run", "--rm", "--mount", f"type=bind,src={host_dir},dst=/ro,readonly", "busybox", "sh", "-c", "touch /ro/x"
    )
    assert proc.returncode != 0
    proc = engine(
        "run", "--rm", "--read-only", "--tmpfs", "/scratch", "busybox", "sh", "-c", "touch /scratch/ok && touch /nope"
    )
    assert proc.returncode == 1 and "Read-only file system" in proc.stderr


def test_volumes(engine):
    assert engine("volume", "create", "--label", "k=v", "data").stdout == "data\n"
    anon = engine("volume", "create").stdout.strip()
    assert len(anon) == 64
    listing = engine("volume", "ls").stdout.splitlines()
    assert listing[0].split() == ["DRIVER", "VOLUME", "NAME"]
    assert sorted(line.split() for line in listing[1:]) == sorted([["local", anon], ["local", "data"]])
    assert sorted(engine("volume", "ls", "-q").stdout.split()) == sorted([anon, "data"])
    assert engine("volume", "ls", "-q", "-f", "label=k=v").stdout == "data\n"
    doc = json.loads(engine("volume", "inspect", "data").stdout)
    assert doc[0]["Name"] == "data" and doc[0]["Labels"] == {"k": "v"} and doc[0]["Driver"] == "local"
    assert engine("volume", "inspect", "-f", "{{.Driver}}", "data").stdout == "local\n"
    proc = engine("run", "--rm", "-v", "data:/data", "busybox", "sh", "-c", "echo kept > /data/f")
    assert proc.returncode == 0, proc.stderr
    assert engine("run", "--rm", "-v", "data:/data", "busybox", "cat", "/data/f").stdout == "kept\n"
    proc = engine("volume", "rm", "data", "nosuchvol")
    assert proc.returncode == 1 and proc.stdout == "data\n"
    proc = engine("volume", "prune", "-f")
    assert proc.returncode == 0 and proc.stdout.endswith("Total reclaimed space: 0B\n") and anon in proc.stdout


def test_networks(engine):
    listing = engine("network", "ls").stdout.splitlines()
    assert listing[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    rows = {line.split()[1]: line.split() for line in listing[1:]}
    assert rows["host"][2:] == ["host", "local"] and rows["none"][2:] == ["null", "local"]
    ids = engine("network", "ls", "-q", "--no-trunc").stdout.split()
    assert all(len(i) == 64 for i in ids) and len(ids) == len(rows)
    assert engine("network", "ls", "-f", "driver=host", "--format", "{{.Name}}").stdout == "host\n"
    if engine.daemon.kind == "engine":  # the reference dockerd runs with --bridge=none
        assert rows["bridge"][2:] == ["bridge", "local"]
        doc = json.loads(engine("network", "inspect", "bridge").stdout)
        assert doc[0]["Name"] == "bridge" and doc[0]["Driver"] == "bridge" and doc[0]["IPAM"]["Config"]
    assert engine("network", "inspect", "-f", "{{.Scope}}", "none").stdout == "local\n"
    proc = engine("network", "inspect", "nosuchnet")
    assert proc.returncode == 1 and "nosuchnet" in proc.stderr
    proc = engine("network", "rm", "host")
    assert proc.returncode == 1 and "host" in proc.stderr and proc.stdout == ""
    assert engine("network", "prune", "-f").returncode == 0


def _tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return sorted(m.name for m in tar.getmembers())


def test_cp_both_ways(engine, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "sub" / "b.txt").write_text("B")
    assert engine("run", "-d", "--name", "files", "busybox", "sleep", "300").returncode == 0

    assert engine("cp", str(src), "files:/tmp/dst").returncode == 0
    assert engine("cp", str(src / "a.txt"), "files:/tmp/").returncode == 0
    assert engine("cp", f"{src}/.", "files:/tmp/dot").returncode == 0
    listing = engine(
        "exec", "files", "sh", "-c", "cat /tmp/a.txt /tmp/dst/sub/b.txt /tmp/dot/a.txt; ls /tmp/dot"
    ).stdout
    assert listing == "ABAa.txt\nsub\n"

    assert engine("cp", "files:/tmp/dst", str(tmp_path / "back")).returncode == 0
    assert (tmp_path / "back" / "sub" / "b.txt").read_text() == "B"
    existing = tmp_path / "existing"
    existing.mkdir()
    assert engine("cp", "files:/tmp/dst", str(existing)).returncode == 0
    assert (existing / "dst" / "a.txt").read_text() == "A"
    assert engine("cp", "files:/etc/passwd", str(tmp_path / "pw")).returncode == 0
    assert (tmp_path / "pw").read_text().startswith("root:")

    tarred = engine("cp", "files:/tmp/dst", "-", input=b"")
    assert _tar_names(tarred.stdout) == ["dst", "dst/a.txt", "dst/sub", "dst/sub/b.txt"]
    stdin_tar = make_layer_tar([Entry.file("from-stdin.txt", b"stdin")])
    assert engine("cp", "-", "files:/tmp", input=stdin_tar).returncode == 0
    assert engine("exec", "files", "cat", "/tmp/from-stdin.txt").stdout == "stdin"

    proc = engine("cp", "files:/nonexistent", str(tmp_path / "x"))
    assert proc.returncode == 1 and "/nonexistent" in proc.stderr
    proc = engine("cp", "files:/tmp/dst", str(tmp_path / "pw"))
    assert proc.returncode == 1 and "cannot copy directory" in proc.stderr
    proc = engine("cp", str(src / "a.txt"), "files:/nodir/")
    assert proc.returncode == 1 and "no such directory" in proc.stderr
    proc = engine("cp", str(src), str(tmp_path / "y"))
    assert proc.returncode == 1 and "must specify at least one container source" in proc.stderr


def test_export_diff_port_stats(engine, tmp_path):
    assert engine("run", "-d", "--name", "fs", "busybox", "sh", "-c", "echo x > /tmp/new; sleep 300").returncode == 0
    time.sleep(1)
    diff = engine("diff", "fs").stdout.splitlines()
    assert "C /tmp" in diff and "A /tmp/new" in diff
    out = tmp_path / "fs.tar"
    assert engine("export", "-o", str(out), "fs").returncode == 0
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert "bin/busybox" in names and "tmp/new" in names
    proc = engine("port", "fs", "80")
    assert proc.returncode == 1 and proc.stderr.strip() == "Error: No public port '80' published for fs"
    assert engine("port", "fs").stdout == ""
    stats = engine("stats", "--no-stream", "fs").stdout.splitlines()
    assert stats[0].split() == [
        "CONTAINER",
        "ID",
        "NAME",
        "CPU",
        "%",
        "MEM",
        "USAGE",
        "/",
        "LIMIT",
        "MEM",
        "%",
        "NET",
        "I/O",
        "BLOCK",
        "I/O",
        "PIDS",
    ]
    assert stats[1].split()[1] == "fs" and stats[1].split()[2].endswith("%")
    row = engine("stats", "--no-stream", "--format", "{{.Name}}|{{.PIDs}}", "fs").stdout.strip()
    assert row.split("|")[0] == "fs" and int(row.split("|")[1]) >= 1


def test_container_group_and_prune(engine):
    assert engine("container", "run", "--name", "g1", "busybox", "true").returncode == 0
    assert engine("container", "ls", "-a", "--format", "{{.Names}}").stdout == "g1\n"
    assert engine("container", "ps", "-a", "-q").stdout.strip() == engine("ps", "-aq").stdout.strip()
    assert engine("container", "logs", "g1").returncode == 0
    proc = engine("container", "prune", "-f")
    assert proc.returncode == 0 and proc.stdout.startswith("Deleted Containers:\n")
    assert re.search(r"\n\nTotal reclaimed space: \S+\n$", proc.stdout)
    assert engine("ps", "-aq").stdout == ""


def test_events_and_system_df(engine):
    since = str(int(time.time()) - 1)
    assert engine("run", "--rm", "--name", "ev", "busybox", "true").returncode == 0
    until = str(int(time.time()) + 1)
    time.sleep(1.5)
    # The name filter: a previous test's container may have died in this second too.
    proc = engine(
        "events", "--since", since, "--until", until, "-f", "type=container", "-f", "event=die", "-f", "container=ev"
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and " container die " in lines[0] and "name=ev" in lines[0]
    proc = engine(
        "events",
        "--since",
        since,
        "--until",
        until,
        "--format",
        "{{.Action}}",
        "-f",
        "event=start",
        "-f",
        "container=ev",
    )
    assert proc.stdout == "start\n"
    df = engine("system", "df").stdout.splitlines()
    assert df[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [line.split()[0] for line in df[1:]] == ["Images", "Containers", "Local", "Build"]


def test_logs_follow_ends_with_the_container(engine):
    assert (
        engine(
            "run", "-d", "--name", "counter", "busybox", "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.3; done"
        ).returncode
        == 0
    )
    proc = engine("logs", "-f", "counter", timeout=30)
    assert (proc.returncode, proc.stdout) == (0, "1\n2\n3\n")
    proc = engine("logs", "-f", "--tail", "1", "counter", timeout=30)
    assert proc.stdout == "3\n"


def test_export_to_stdout(engine):
    assert engine("create", "--name", "exp", "busybox").returncode == 0
    proc = engine("export", "exp", input=b"")
    assert proc.returncode == 0
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        assert "bin/busybox" in tar.getnames()


def test_system_prune(engine):
    assert engine("run", "--name", "done", "busybox", "true").returncode == 0
    proc = engine("system", "prune", "-f")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Deleted Containers:\n")
    assert re.search(r"\n\nTotal reclaimed space: \S+\n$", proc.stdout)
    assert engine("ps", "-aq").stdout == ""


@pytest.mark.parametrize(
    "user, groups",
    [
        ("", "uid=0(root) gid=0(root) groups=0(root),10(wheel)"),
        ("nobody", "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)"),
        ("1234:99", "uid=1234 gid=99 groups=99"),
    ],
)
def test_user_and_groups(engine, user, groups):
    """The primary group is also a supplementary one (containerd adds it; runc then calls setgroups)."""
    args = ["run", "--rm"] + (["-u", user] if user else []) + ["busybox", "id"]
    proc = engine(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == groups + "\n"


def test_exec_user_and_groups(engine):
    cid = engine("run", "-d", "busybox", "sleep", "60").stdout.strip()
    assert engine("exec", cid, "id").stdout == "uid=0(root) gid=0(root) groups=0(root),10(wheel)\n"
    assert (
        engine("exec", "-u", "nobody", cid, "id").stdout
        == "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n"
    )


def _one_entry_tar(name: str, directory: bool) -> bytes:
    return make_layer_tar([Entry.dir(name) if directory else Entry.file(name, b"x\n")])


def test_cp_no_overwrite_dir_non_dir(engine):
    """``noOverwriteDirNonDir`` (the docker CLI always sends it): no directory replaced by a file, or back."""
    cid = engine("run", "-d", "busybox", "sh", "-c", "mkdir /tmp/d && echo f > /tmp/f && sleep 60").stdout.strip()
    api = engine.daemon.api()
    try:
        for _ in range(50):
            if engine("exec", cid, "test", "-f", "/tmp/f").returncode == 0:
                break
            time.sleep(0.1)
        url = api._url("/containers/{0}/archive", cid)
        answers = []
        for name, directory in (("d", False), ("f", True)):
            resp = api._put(
                url, params={"path": "/tmp", "noOverwriteDirNonDir": "true"}, data=_one_entry_tar(name, directory)
            )
            answers.append((resp.status_code, resp.json()["message"]))
        assert answers[0][0] == answers[1][0] and answers[0][0] in (400, 500)  # ours 400, dockerd 500
        assert answers[0][1].endswith('cannot overwrite directory "/tmp/d" with non-directory "/tmp"')
        assert answers[1][1].endswith('cannot overwrite non-directory "/tmp/f" with directory "/tmp"')
        assert engine("exec", cid, "sh", "-c", "test -d /tmp/d && cat /tmp/f").stdout == "f\n"
        resp = api._put(url, params={"path": "/tmp"}, data=_one_entry_tar("d", False))
        assert resp.status_code == 200
        assert engine("exec", cid, "cat", "/tmp/d").stdout == "x\n"
    finally:
        api.close()


def test_cp_stopped_container_reaches_its_volumes(engine, tmp_path):
    """A stopped container's volumes and bind-mounted directories are where ``cp`` reads and writes."""
    bound = tmp_path / "bound"
    bound.mkdir()
    (bound / "b.txt").write_text("from the bind\n")
    cid = engine(
        "create",
        "-v",
        "/data",
        "-v",
        f"{bound}:/srv/b",
        "busybox",
        "sh",
        "-c",
        "cat /data/in.txt /srv/b/b.txt /srv/b/in2.txt",
    ).stdout.strip()
    src = tmp_path / "in.txt"
    src.write_text("copied while stopped\n")
    assert engine("cp", str(src), f"{cid}:/data/").returncode == 0
    src2 = tmp_path / "in2.txt"
    src2.write_text("into the bind\n")
    assert engine("cp", str(src2), f"{cid}:/srv/b/in2.txt").returncode == 0
    assert (bound / "in2.txt").read_text() == "into the bind\n"
    out = tmp_path / "out"
    out.mkdir()
    proc = engine("cp", f"{cid}:/srv/b", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out / "b")) == ["b.txt", "in2.txt"]
    assert engine("cp", f"{cid}:/data", str(out)).returncode == 0
    assert (out / "data" / "in.txt").read_text() == "copied while stopped\n"
    proc = engine("start", "-a", cid)
    assert proc.stdout == "copied while stopped\nfrom the bind\ninto the bind\n", proc.stderr


def test_user_network_verbs(engine):
    """``engine network`` with docker's flags, against both daemons alike."""
    made = engine(
        "network",
        "create",
        "--subnet",
        "10.66.0.0/16",
        "--ip-range",
        "10.66.1.0/24",
        "--gateway",
        "10.66.0.254",
        "--aux-address",
        "reserved=10.66.1.1",
        "--label",
        "tier=db",
        "-o",
        "com.docker.network.bridge.enable_icc=true",
        "e2enet",
    )
    assert made.returncode == 0, made.stderr
    net_id = made.stdout.strip()
    assert len(net_id) == 64
    doc = json.loads(engine("network", "inspect", "e2enet").stdout)[0]
    assert doc["IPAM"]["Config"] == [
        {
            "Subnet": "10.66.0.0/16",
            "IPRange": "10.66.1.0/24",
            "Gateway": "10.66.0.254",
            "AuxiliaryAddresses": {"reserved": "10.66.1.1"},
        }
    ]
    assert doc["Labels"] == {"tier": "db"} and doc["Options"] == {"com.docker.network.bridge.enable_icc": "true"}
    assert engine("network", "ls", "-f", "label=tier=db", "--format", "{{.Name}}").stdout == "e2enet\n"
    proc = engine("network", "create", "e2enet")
    assert proc.returncode == 1 and "network with name e2enet already exists" in proc.stderr
    proc = engine("network", "create", "--subnet", "10.67.0.0/16", "--gateway", "10.68.0.1", "x")
    assert proc.returncode == 1 and "no matching subnet for gateway 10.68.0.1" in proc.stderr
    assert engine("run", "-d", "--name", "member", "busybox", "sleep", "300").returncode == 0
    proc = engine("network", "connect", "--alias", "database", "--ip", "10.66.0.9", "e2enet", "member")
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    settings = json.loads(engine("inspect", "member").stdout)[0]["NetworkSettings"]["Networks"]["e2enet"]
    assert settings["IPAddress"] == "10.66.0.9" and "database" in settings["Aliases"]
    proc = engine("network", "rm", "e2enet")
    assert proc.returncode == 1 and "has active endpoints" in proc.stderr
    assert engine("network", "disconnect", "-f", "e2enet", "member").returncode == 0
    proc = engine("network", "disconnect", "e2enet", "member")
    assert proc.returncode == 1 and "is not connected to network e2enet" in proc.stderr
    prune = engine("network", "prune", "-f", "--filter", "label=tier=db")
    assert prune.returncode == 0 and prune.stdout == "Deleted Networks:\ne2enet\n\n"
