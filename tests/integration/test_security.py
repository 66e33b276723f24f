"""Issue 14, attacked as a hostile client and a hostile container would: our daemon and dockerd 20.10
side by side, through the stock docker CLI and raw HTTP over the unix socket.

Each module-scoped daemon (ours with ``-s vfs``, and the reference dockerd)
has the busybox test image; every test removes what it made, and the
fixture removes every container and stops the daemon. Every attack uses
values that change nothing on the host if a check were missing: a sysctl
is set to the host's current value, the system call probe
(:mod:`engine.testing.syscall_probe`) only makes throw-away namespaces and
keys, read-only paths are checked with access(2), never written.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

import pytest

from engine.sys.cgroups import DEFAULT_DEVICE_RULES
from engine.sys.security import paths
from engine.testing import dockerd as reference
from engine.testing.sidebyside import Target

pytestmark = [pytest.mark.root("daemons"), pytest.mark.skipif(shutil.which("docker") is None, reason="needs docker")]

PROBE = os.path.join(os.path.dirname(reference.__file__), "syscall_probe.py")
CUSTOM_PROFILE = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
}


def probe(t: Target, *opts: str) -> dict[str, Any]:
    """The system call probe's report from a container run with ``opts``."""
    if os.uname().machine != "x86_64":
        pytest.skip("the syscall probe knows x86_64 only")
    proc = t.docker(
        "run",
        "--rm",
        *opts,
        "-v",
        "/usr:/usr:ro",
        "-v",
        f"{PROBE}:/probe.py:ro",
        "busybox",
        "/bin/sh",
        "-c",
        "ln -s usr/lib /lib; ln -s usr/lib64 /lib64; exec /usr/bin/python3 -S -I /probe.py",
    )
    return json.loads(proc.stdout)


def host_sysctl(key: str) -> str:
    with open("/proc/sys/" + key.replace(".", "/")) as fh:
        return fh.read().strip()


# ---------------------------------------------------------------- 1. seccomp

DENIED = ("unshare_user", "mount_in_userns", "clone_newuser", "add_key", "keyctl", "request_key", "perf_event_open")


def test_info_lists_the_default_profile(target):
    options = json.loads(target.docker("info", "--format", "{{json .SecurityOptions}}").stdout)
    assert "name=seccomp,profile=default" in options
    assert "name=no-new-privileges" not in options  # only with the daemon's --no-new-privileges


def test_default_profile_denies_what_docker_denies(clean):
    report = probe(clean)
    assert report["seccomp"] == "2"
    calls = report["calls"]
    for name in (*DENIED, "personality_rie"):
        assert calls[name] == "EPERM", (clean.kind, name, calls)
    assert calls["clone3"] == "ENOSYS" and calls["getpid"] == "ok"
    if clean.kind == "engine":
        assert calls["socket_vsock"] == "EPERM"  # Docker's current profile; 20.10's allowed AF_VSOCK


def test_unconfined_allows_them(clean):
    report = probe(clean, "--security-opt", "seccomp=unconfined")
    assert report["seccomp"] == "0"
    calls = report["calls"]
    assert all(calls[name] != "EPERM" for name in DENIED), calls


def test_cap_sys_admin_brings_namespaces_not_keyrings(clean):
    calls = probe(clean, "--cap-add", "SYS_ADMIN")["calls"]
    assert calls["unshare_user"] == calls["clone_newuser"] == "ok", calls
    assert calls["add_key"] == calls["keyctl"] == "EPERM", calls


def test_privileged_is_unconfined(clean):
    if clean.kind == "dockerd":
        pytest.skip("dockerd cannot start privileged containers here (CAP_SYS_RESOURCE is missing)")
    report = probe(clean, "--privileged")
    assert report["seccomp"] == "0" and report["calls"]["unshare_user"] == "ok"


def test_exec_gets_the_containers_filter(clean):
    clean.docker("run", "-d", "--name", "sec-exec", "busybox", "sleep", "300")
    status = clean.docker("exec", "sec-exec", "grep", "Seccomp:", "/proc/self/status").stdout
    assert status.split() == ["Seccomp:", "2"]
    proc = clean.docker("exec", "sec-exec", "unshare", "-U", "true", check=False)
    assert proc.returncode != 0 and "Operation not permitted" in proc.stderr + proc.stdout


def test_custom_profile_and_no_new_privileges(clean, tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(CUSTOM_PROFILE, indent=2))
    proc = clean.docker(
        "run",
        "--name",
        "sec-custom",
        "--security-opt",
        f"seccomp={profile}",
        "--security-opt",
        "no-new-privileges",
        "busybox",
        "sh",
        "-c",
        "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; mkdir /x",
        check=False,
    )
    assert proc.returncode == 1 and "Permission denied" in proc.stderr, proc
    assert "Seccomp:\t2" in proc.stdout and "NoNewPrivs:\t1" in proc.stdout
    security_opt = json.loads(clean.docker("inspect", "-f", "{{json .HostConfig.SecurityOpt}}", "sec-custom").stdout)
    # The CLI sends the file's content, compacted; inspect shows it as sent.
    assert security_opt == ["seccomp=" + json.dumps(CUSTOM_PROFILE, separators=(",", ":")), "no-new-privileges"]


def test_invalid_profile_is_refused_at_create(clean, tmp_path):
    profile = tmp_path / "bad.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_NOPE"}')
    before = clean.container_ids()
    proc = clean.docker("create", "--security-opt", f"seccomp={profile}", "busybox", "true", check=False)
    if clean.kind == "dockerd":
        # dockerd stores it and fails at start, with runc's words (a 500).
        assert proc.returncode == 0
        started = clean.docker("start", proc.stdout.strip(), check=False)
        assert "SCMP_ACT_NOPE is not a valid action" in started.stderr
        return
    assert proc.returncode != 0  # docker create exits 1 (run: 125)
    assert 'Decoding seccomp profile failed: defaultAction: unknown action "SCMP_ACT_NOPE"' in proc.stderr
    assert clean.container_ids() == before
    status, body = clean.request(
        "POST",
        "/v1.41/containers/create",
        json.dumps({"Image": "busybox", "HostConfig": {"SecurityOpt": ["seccomp={nope"]}}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 400 and body["message"].startswith("Decoding seccomp profile failed")


@pytest.mark.parametrize(
    "opts, security_opt",
    [
        (["--privileged"], ["label=disable"]),
        (["--ipc", "host"], ["label=disable"]),
        (["--pid", "host"], ["label=disable"]),
        (["--security-opt", "seccomp=unconfined"], ["seccomp=unconfined"]),
        (["--security-opt", "no-new-privileges"], ["no-new-privileges"]),
        (["--security-opt", "systempaths=unconfined"], []),
        ([], None),
    ],
)
def test_inspect_security_opt_as_dockerd(clean, opts, security_opt):
    cid = clean.docker("create", *opts, "busybox", "true").stdout.strip()
    host = json.loads(clean.docker("inspect", "-f", "{{json .HostConfig}}", cid).stdout)
    assert host["SecurityOpt"] == security_opt
    if "--privileged" in opts:
        assert host["MaskedPaths"] is None and host["ReadonlyPaths"] is None
    elif "systempaths=unconfined" in opts:
        assert host["MaskedPaths"] == [] and host["ReadonlyPaths"] == []
    else:
        # dockerd 20.10's list is older; ours is Docker's current one (a superset).
        assert {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"} <= set(host["MaskedPaths"])
        assert host["ReadonlyPaths"] == list(paths.DEFAULT_READONLY_PATHS)


# ---------------------------------------------------------------- 2. sysctls


def _create_and_start(t: Target, host_config: dict) -> tuple[int, str]:
    """Create (raw API, as any client may) and start; (status of the failing step, its message)."""
    status, body = t.request(
        "POST",
        "/v1.41/containers/create",
        json.dumps({"Image": "busybox", "Cmd": ["true"], "HostConfig": host_config}).encode(),
        {"Content-Type": "application/json"},
    )
    if status != 201:
        return status, body["message"]
    status, body = t.request("POST", f"/v1.41/containers/{body['Id']}/start")
    return status, (body or {}).get("message", "")


@pytest.mark.parametrize(
    "key, host_config, words",
    [
        ("kernel.core_pattern", {}, 'sysctl "kernel.core_pattern" is not in a separate kernel namespace'),
        ("kernel/core_pattern", {}, 'sysctl "kernel.core_pattern" is not in a separate kernel namespace'),
        (
            "net.ipv4.ip_forward",
            {"NetworkMode": "host"},
            'sysctl "net.ipv4.ip_forward" not allowed in host network namespace',
        ),
        ("kernel.shmmax", {"IpcMode": "host"}, 'sysctl "kernel.shmmax" is not allowed in the hosts ipc namespace'),
    ],
)
def test_sysctls_that_would_reach_the_host_are_refused(clean, key, host_config, words):
    # The host's current value: a write that got through would change nothing.
    current = host_sysctl(key.replace("/", "."))
    before = clean.container_ids()
    status, message = _create_and_start(clean, dict(host_config, Sysctls={key: current}))
    assert words in message, message
    if clean.kind == "engine":
        assert status == 400 and clean.container_ids() == before  # refused at create: nothing stored
    else:
        assert status == 500  # dockerd: runc refuses at start
    assert host_sysctl(key.replace("/", ".")) == current


def test_namespaced_sysctls_stay_in_the_container(clean):
    host_value = host_sysctl("kernel.shm_rmid_forced")
    wanted = "0" if host_value == "1" else "1"
    out = clean.docker(
        "run",
        "--rm",
        "--network",
        "none",
        "--sysctl",
        f"kernel.shm_rmid_forced={wanted}",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "busybox",
        "cat",
        "/proc/sys/kernel/shm_rmid_forced",
        "/proc/sys/net/ipv4/ip_forward",
    ).stdout.split()
    assert out == [wanted, "1"]
    assert host_sysctl("kernel.shm_rmid_forced") == host_value


# ---------------------------------------------------------------- 3. cross-site requests

BIND_ROOT = json.dumps({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Binds": ["/:/host"]}}).encode()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_non_json_post_is_refused(clean, content_type):
    before = clean.container_ids()
    headers = {"Content-Type": content_type} if content_type else {}
    status, body = clean.request("POST", "/v1.41/containers/create", BIND_ROOT, headers)
    assert (status, body) == (400, {"message": f"Content-Type specified ({content_type}) must be 'application/json'"})
    status, body = clean.request("POST", "/volumes/create", b'{"Name": "csrf"}', {"Content-Type": "text/plain"})
    assert status == 400 and "must be 'application/json'" in body["message"]
    assert clean.container_ids() == before
    assert "csrf" not in clean.docker("volume", "ls", "-q").stdout.split()


def test_json_post_and_bodiless_posts_pass(clean):
    status, body = clean.request(
        "POST", "/v1.41/containers/create", BIND_ROOT, {"Content-Type": "application/json; charset=utf-8"}
    )
    assert status == 201, body
    cid = body["Id"]
    status, body = clean.request(
        "POST", f"/v1.41/containers/{cid}/exec", b'{"Cmd": ["true"]}', {"Content-Type": "text/plain"}
    )
    assert status == 400 and "must be 'application/json'" in body["message"]
    # A POST without a body needs no Content-Type (docker-py's start, kill...).
    status, _ = clean.request("POST", f"/v1.41/containers/{cid}/start")
    assert status == 204
    clean.docker("rm", "-f", cid)


# ---------------------------------------------------------------- 4. copies out of a container

TREE = (
    "mkdir -p /data/sub && echo inside > /data/sub/f && ln -s /data /link && ln -s data /rel "
    "&& ln -s / /rootlink && ln -s /etc /data/etclink && sleep 300"
)


def start_tree(t: Target, name: str) -> None:
    """A container holding TREE, once its links are made."""
    t.docker("run", "-d", "--name", name, "busybox", "sh", "-c", TREE)
    for _ in range(100):
        if t.docker("exec", name, "test", "-L", "/data/etclink", check=False).returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"{t.kind}: the container's tree was never made")


def listing(root) -> list[str]:
    out = []
    for directory, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            full = os.path.join(directory, name)
            kind = "l->" + os.readlink(full) if os.path.islink(full) else "d" if os.path.isdir(full) else "f"
            out.append(f"{os.path.relpath(full, root)} {kind}")
    return sorted(out)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("/link/.", ["dest d", "dest/etclink l->/etc", "dest/sub d", "dest/sub/f f"]),
        ("/link/", ["dest d", "dest/etclink l->/etc", "dest/sub d", "dest/sub/f f"]),
        ("/rel/.", ["dest d", "dest/etclink l->/etc", "dest/sub d", "dest/sub/f f"]),
        ("/data/", ["dest d", "dest/etclink l->/etc", "dest/sub d", "dest/sub/f f"]),
        ("/link", ["dest l->/data"]),  # a symlink itself is copied as one (use -L to follow)
    ],
)
@pytest.mark.parametrize("running", [True, False])
def test_cp_follows_links_inside_the_container(clean, tmp_path, source, expected, running):
    start_tree(clean, "sec-cp")
    try:
        if not running:
            clean.docker("stop", "-t", "0", "sec-cp")
        out = tmp_path / "out"
        out.mkdir()
        clean.docker("cp", f"sec-cp:{source}", str(out / "dest"))
        # Nothing outside the destination; the only symlinks are the container's own, inside it.
        assert listing(out) == expected
        assert sorted(os.listdir(tmp_path)) == ["out"]
    finally:
        clean.docker("rm", "-f", "sec-cp")


def test_cp_of_a_link_to_the_root_stays_in_the_container(clean, tmp_path):
    start_tree(clean, "sec-cproot")
    try:
        out = tmp_path / "out"
        out.mkdir()
        clean.docker("cp", "sec-cproot:/rootlink/.", str(out / "dest"))
        names = os.listdir(out / "dest")
        assert "bin" in names and "data" in names  # the container's root, not the host's
        with open(out / "dest" / "etc" / "passwd") as fh:
            assert "root:x:0:0" in fh.read()
        assert not os.path.islink(out / "dest")
        assert sorted(os.listdir(tmp_path)) == ["out"]
    finally:
        clean.docker("rm", "-f", "sec-cproot")


def test_cp_follow_link_flag(clean, tmp_path):
    start_tree(clean, "sec-cpl")
    try:
        clean.docker("cp", "-L", "sec-cpl:/rel", str(tmp_path / "dest"))
        assert listing(tmp_path) == ["dest d", "dest/etclink l->/etc", "dest/sub d", "dest/sub/f f"]
    finally:
        clean.docker("rm", "-f", "sec-cpl")


# ---------------------------------------------------------------- 5. validated input

#: Bodies whose values would change nothing if stored (the container is never started), but which
#: were stored or crashed the engine before the validation layer: (name, raw body, words of ours).
BAD_CREATES = [
    ("label value not a string", b'{"Image": "busybox", "Labels": {"a": 1}}', 'invalid Labels["a"]'),
    ("CpuShares 1e400", b'{"Image": "busybox", "HostConfig": {"CpuShares": 1e400}}', "number 1e400 is out of range"),
    ("Memory 2**64", b'{"Image": "busybox", "HostConfig": {"Memory": 18446744073709551616}}', "out of range for int64"),
    ("StopTimeout 1e400", b'{"Image": "busybox", "StopTimeout": 1e400}', "number 1e400 is out of range"),
    ("StopTimeout NaN", b'{"Image": "busybox", "StopTimeout": NaN}', "NaN is not JSON"),
    ("HostConfig a list", b'{"Image": "busybox", "HostConfig": []}', "invalid HostConfig: want an object"),
    ("Env an object", b'{"Image": "busybox", "Env": {"A": "1"}}', "invalid Env: want an array"),
    ("deep nesting", b'{"Image": "busybox", "Labels": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "max depth"),
    ("relative WorkingDir", b'{"Image": "busybox", "WorkingDir": "tmp"}', "it needs to be an absolute path"),
    ("CpusetCpus 0-99999", b'{"Image": "busybox", "HostConfig": {"CpusetCpus": "0-99999"}}', "cpuset cpus"),
]


@pytest.mark.parametrize("name, body, words", BAD_CREATES, ids=[c[0] for c in BAD_CREATES])
def test_bad_input_is_a_400_and_nothing_is_stored(clean, name, body, words):
    before = clean.container_ids()
    status, answer = clean.request("POST", "/v1.41/containers/create", body, {"Content-Type": "application/json"})
    assert clean.container_ids() == before, (name, status, answer)
    if clean.kind == "dockerd":
        # dockerd refuses them too, but its decoder's errors are 500s (the last two are 400s).
        assert status in (400, 500), (name, status, answer)
        return
    assert status == 400 and words in answer["message"], (name, status, answer)


@pytest.mark.parametrize(
    "path",
    [
        "/v1.41/containers/create?platform=linux/../amd64",
        "/v1.41/images/create?fromImage=busybox&platform=../x",
        "/v1.41/images/create?fromSrc=-&repo=imported&platform=linux/..",
    ],
)
def test_a_platform_with_dotdot_is_refused(clean, path):
    before = clean.container_ids(), clean.docker("images", "-q").stdout.split()
    body = b'{"Image": "busybox"}' if "containers" in path else b""
    headers = {"Content-Type": "application/json"} if body else {}
    status, answer = clean.request("POST", path, body, headers)
    assert (clean.container_ids(), clean.docker("images", "-q").stdout.split()) == before
    if clean.kind == "engine":
        assert status == 400 and '".." is an invalid component' in answer["message"], answer
    else:
        assert status >= 400, answer


def test_a_bad_query_integer_is_a_400(clean):
    clean.docker("create", "--name", "val-stop", "busybox", "true")
    status, answer = clean.request("POST", "/v1.41/containers/val-stop/stop?t=soon")
    if clean.kind == "engine":
        assert (status, answer) == (400, {"message": "invalid value for t: 'soon' is not an integer"})
    else:
        assert status >= 400
    clean.docker("rm", "val-stop")


# ---------------------------------------------------------------- 6. masked and read-only paths, devices

# For each path: what it holds ("file:<bytes, at most 1>" or "dir:<entries>")
# and the options of a mount on it ("ro", "rw", or "-" for none), from
# /proc/self/mountinfo. Nothing is written.
CHECK_PATHS = (
    'for p in "$@"; do '
    '  if [ ! -e "$p" ]; then echo "$p absent"; continue; fi; '
    '  if [ -d "$p" ]; then n="dir:$(ls -A "$p" | wc -l)"; else n="file:$(head -c 1 "$p" 2>/dev/null | wc -c)"; fi; '
    '  o=$(awk -v p="$p" \'$5 == p {split($6, a, ","); o = a[1]} END {print (o == "" ? "-" : o)}\' '
    "/proc/self/mountinfo); "
    '  echo "$p $n $o"; '
    "done"
)
# Writes the value a sysctl already has: refused on a read-only /proc/sys, a no-op otherwise.
REWRITE_SYSCTL = "f=/proc/sys/kernel/shm_rmid_forced; v=$(cat $f); echo $v > $f && echo wrote"


def check_paths(t: Target, opts: list[str], targets: list[str]) -> dict[str, str]:
    out = t.docker("run", "--rm", *opts, "busybox", "sh", "-c", CHECK_PATHS, "sh", *targets).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def rewrite_sysctl(t: Target, opts: list[str]) -> str:
    proc = t.docker("run", "--rm", *opts, "busybox", "sh", "-c", REWRITE_SYSCTL, check=False)
    return proc.stdout + proc.stderr


def test_masked_and_readonly_paths(clean):
    masked = [p for p in paths.default_masked_paths() if os.path.exists(p)]
    if clean.kind == "dockerd":
        masked = [p for p in masked if p != "/proc/interrupts" and "thermal_throttle" not in p]  # newer than 20.10
    readonly = [p for p in paths.DEFAULT_READONLY_PATHS if os.path.exists(p)]
    seen = check_paths(clean, [], masked + readonly)
    for p in masked:
        # a file: /dev/null bound on it; a directory: an empty read-only tmpfs
        assert seen[p] in ("file:0 rw", "file:0 ro", "dir:0 ro"), (p, seen[p])
    for p in readonly:
        assert seen[p].endswith(" ro"), (p, seen[p])
    assert "Read-only file system" in rewrite_sysctl(clean, [])


def test_systempaths_unconfined_lifts_them(clean):
    opts = ["--security-opt", "systempaths=unconfined"]
    seen = check_paths(clean, opts, ["/proc/timer_list", "/proc/bus", "/proc/sys"])
    assert seen["/proc/timer_list"] == "file:1 -"  # readable again
    assert seen["/proc/bus"].endswith(" -") and seen["/proc/sys"].endswith(" -")
    assert "wrote" in rewrite_sysctl(clean, opts)


def test_privileged_lifts_them(clean):
    if clean.kind == "dockerd":
        pytest.skip("dockerd cannot start privileged containers here (CAP_SYS_RESOURCE is missing)")
    seen = check_paths(clean, ["--privileged"], ["/proc/timer_list", "/proc/bus", "/proc/sys"])
    assert seen["/proc/timer_list"] == "file:1 -"
    assert seen["/proc/bus"].endswith(" -") and seen["/proc/sys"].endswith(" -")
    assert "wrote" in rewrite_sysctl(clean, ["--privileged"])


def _devices_list(pid: int) -> list[str] | None:
    with open(f"/proc/{pid}/cgroup") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "devices" in controllers.split(","):
                with open(f"/sys/fs/cgroup/devices{path}/devices.list") as lst:
                    return sorted(lst.read().split("\n")[:-1])
    return None


def test_device_cgroup_rules_are_dockers(clean):
    clean.docker("run", "-d", "--name", "sec-dev", "busybox", "sleep", "300")
    pid = int(clean.docker("inspect", "-f", "{{.State.Pid}}", "sec-dev").stdout)
    rules = _devices_list(pid)
    if rules is None:
        pytest.skip("no cgroup v1 devices controller here")
    # Docker's list (moby's spec rules plus runc's built-in ones), as dockerd's containers have it.
    assert rules == sorted(DEFAULT_DEVICE_RULES)
    # mknod is allowed, opening what was not allowed is not: /dev/mem (1:1) is read, never written.
    proc = clean.docker(
        "exec", "sec-dev", "sh", "-c", "mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem | wc -c", check=False
    )
    assert "Operation not permitted" in proc.stderr and proc.stdout.strip() == "0", proc
