"""Operating the daemon as dockerd is operated (issue 17): log rotation
defaults from daemon.json, Prometheus metrics on ``--metrics-addr``, and a
configuration reload on SIGHUP; the real daemon in the test sandbox, driven
by the real docker CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from engine.sys import ksm
from engine.sys.proc import stat_fields
from engine.testing.daemon import DaemonProcess
from engine.testing.images import busybox_archive

pytestmark = pytest.mark.root


def start_daemon(workdir: str, config: dict, *args: str) -> DaemonProcess:
    """A daemon (vfs) whose daemon.json is ``config``."""
    d = DaemonProcess(workdir, ["-s", "vfs", *args])
    os.makedirs(workdir, exist_ok=True)
    with open(d.config_file, "w") as fh:
        json.dump(config, fh)
    return d.start()


def cli(d: DaemonProcess, docker_config: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The real docker CLI against ``d``."""
    env = dict(os.environ, DOCKER_CONFIG=docker_config, DOCKER_HOST=d.host)
    env.pop("DOCKER_API_VERSION", None)
    proc = subprocess.run([shutil.which("docker") or "docker", *args], capture_output=True, env=env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr.decode()}\ndaemon log:\n{d.log()[-3000:]}")
    return proc


@pytest.fixture
def busybox_tar(tmp_path):
    path = tmp_path / "busybox.tar"
    path.write_bytes(busybox_archive())
    return str(path)


# ---------------------------------------------------------------------------
# log rotation defaults (log-opts in daemon.json)


def test_log_opts_defaults_rotate_new_containers_logs(workdir, docker_config, busybox_tar):
    d = start_daemon(workdir, {"log-driver": "json-file", "log-opts": {"max-size": "2k", "max-file": "2"}})
    try:
        cli(d, docker_config, "load", "-i", busybox_tar)
        # 200 lines of ~40 bytes each, ~80 bytes as json-file entries: ~16 KB
        # through a 2 KB file kept with one rotated copy.
        script = "i=0; while [ $i -lt 200 ]; do echo line $i of the rotation test....; i=$((i+1)); done"
        cid = cli(d, docker_config, "run", "-d", "busybox", "sh", "-c", script).stdout.decode().strip()
        cli(d, docker_config, "wait", cid)
        doc = json.loads(cli(d, docker_config, "inspect", cid).stdout)[0]
        assert doc["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "2k", "max-file": "2"}}
        log_path = doc["LogPath"]
        assert os.path.exists(log_path + ".1") and not os.path.exists(log_path + ".2")
        for path in (log_path, log_path + ".1"):
            # rotation happens before an entry that would start past the limit
            assert os.path.getsize(path) < 2048 + 200
        lines = cli(d, docker_config, "logs", cid).stdout.decode().splitlines()
        assert lines[-1] == "line 199 of the rotation test...."
        assert len(lines) < 100  # the first ones were cut away
        # A container's own options win over the defaults, key by key.
        own = cli(d, docker_config, "create", "--log-opt", "max-size=1m", "busybox", "true").stdout.decode().strip()
        doc = json.loads(cli(d, docker_config, "inspect", own).stdout)[0]
        assert doc["HostConfig"]["LogConfig"]["Config"] == {"max-size": "1m", "max-file": "2"}
        bad = cli(d, docker_config, "create", "--log-opt", "max-sise=1m", "busybox", "true", check=False)
        assert bad.returncode != 0 and b"unknown log opt 'max-sise' for json-file log driver" in bad.stderr
    finally:
        d.stop()


def test_bad_log_opts_in_daemon_json_stop_start_up(workdir):
    d = DaemonProcess(workdir, ["-s", "vfs"])
    os.makedirs(workdir, exist_ok=True)
    with open(d.config_file, "w") as fh:
        json.dump({"log-opts": {"max-file": "0"}}, fh)
    proc = subprocess.run(d.command(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "max-file cannot be less than 1" in proc.stderr
    assert not os.path.exists(d.socket) and not os.path.exists(d.pidfile)


# ---------------------------------------------------------------------------
# metrics (--metrics-addr)


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """The exposition parsed with prometheus_client's own parser: {(name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(parsed: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    found = [v for (n, lab), v in parsed.items() if n == name and want <= set(lab)]
    assert found, f"no sample {name}{labels}"
    return sum(found)


def test_metrics_scraped_and_parsed(workdir, docker_config, busybox_tar, tmp_path):
    from engine.testing import registry as local_registry

    if not local_registry.available():
        pytest.fail("docker-registry is not installed: run .ci/install")
    port = local_registry.free_port()
    reg = local_registry.LocalRegistry(str(tmp_path / "registry")).start()
    d = start_daemon(workdir, {"metrics-addr": f"127.0.0.1:{port}"})
    try:
        cli(d, docker_config, "load", "-i", busybox_tar)
        target = f"{reg.host}/busybox:latest"
        cli(d, docker_config, "tag", "busybox", target)
        cli(d, docker_config, "push", target)
        cli(d, docker_config, "rmi", target, "busybox")
        cli(d, docker_config, "pull", target)
        cli(d, docker_config, "run", "-d", "--name", "sleeper", target, "sleep", "300")
        cli(d, docker_config, "create", target, "true")
        cli(d, docker_config, "inspect", "nosuchcontainer", check=False)
        status, text = scrape(port)
        assert status == 200, text
        parsed = samples(text)
        info = [lab for (n, lab), v in parsed.items() if n == "engine_daemon_engine_info" and v == 1]
        assert len(info) == 1 and ("graphdriver", "vfs") in info[0] and ("os_type", "linux") in info[0]
        assert value(parsed, "engine_daemon_container_states_containers", state="running") == 1
        assert value(parsed, "engine_daemon_container_states_containers", state="stopped") == 1
        assert value(parsed, "engine_daemon_images") == 1
        assert value(parsed, "engine_daemon_job_duration_seconds_count", job="pull") == 1
        assert value(parsed, "engine_daemon_job_duration_seconds_count", job="create") == 2
        assert value(parsed, "engine_daemon_job_duration_seconds_bucket", job="create", le="+Inf") == 2
        assert value(parsed, "engine_daemon_http_requests_total", route="/containers/create", code="201") == 2
        assert value(parsed, "engine_daemon_http_requests_total", route="/containers/{id}/json", code="404") >= 1
        assert value(parsed, "engine_daemon_http_requests_total", route="/_ping") >= 1
        layer_bytes = os.path.getsize(busybox_tar) // 2  # the busybox layer, compressed, is well over half of it
        assert value(parsed, "engine_daemon_registry_pushed_bytes_total") > 0
        assert value(parsed, "engine_daemon_registry_pulled_bytes_total") > 0
        assert value(parsed, "engine_daemon_layer_applies_total", driver="vfs") == 2  # load, then pull
        assert value(parsed, "engine_daemon_layer_applied_bytes_total", driver="vfs") > layer_bytes
        assert value(parsed, "engine_daemon_layer_apply_seconds_count", driver="vfs") == 2
        assert value(parsed, "process_resident_memory_bytes") > 0
        assert scrape(port, "/other")[0] == 404
        cli(d, docker_config, "rm", "-f", "sleeper")
    finally:
        d.stop()
        reg.stop()


def test_metrics_addr_taken_stops_start_up(workdir):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        d = DaemonProcess(workdir, ["-s", "vfs", "--metrics-addr", f"127.0.0.1:{port}"])
        proc = subprocess.run(d.command(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "metrics-addr: cannot listen on" in proc.stderr + proc.stdout
    assert not os.path.exists(d.socket) and not os.path.exists(d.pidfile)


# ---------------------------------------------------------------------------
# reload (SIGHUP)


def api_json(d: DaemonProcess, path: str):
    status, body = d.request("GET", path)
    assert status == 200, body
    return json.loads(body)


def test_sighup_reloads_a_registry_mirror_without_a_restart(workdir, docker_config, busybox_tar, tmp_path):
    import signal
    import socket

    from engine.testing import registry as local_registry

    if not local_registry.available():
        pytest.fail("docker-registry is not installed: run .ci/install")
    old_mirror = local_registry.LocalRegistry(str(tmp_path / "old-mirror")).start()
    new_mirror = local_registry.LocalRegistry(str(tmp_path / "new-mirror")).start()
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(60)
    d = DaemonProcess(workdir, ["-s", "vfs"], env={"NOTIFY_SOCKET": notify_path})
    os.makedirs(workdir, exist_ok=True)
    with open(d.config_file, "w") as fh:
        json.dump({"registry-mirrors": [old_mirror.url], "log-opts": {"max-size": "1m"}}, fh)
    try:
        d.start()
        assert notify.recv(4096).decode().startswith("READY=1")
        # The new mirror serves busybox as Docker Hub's library/busybox.
        cli(d, docker_config, "load", "-i", busybox_tar)
        cli(d, docker_config, "tag", "busybox", f"{new_mirror.host}/library/busybox:latest")
        cli(d, docker_config, "push", f"{new_mirror.host}/library/busybox:latest")
        cli(d, docker_config, "run", "-d", "--name", "keeper", f"{new_mirror.host}/library/busybox", "sleep", "300")
        cli(d, docker_config, "rmi", "busybox")
        started = json.loads(cli(d, docker_config, "inspect", "keeper").stdout)[0]["State"]
        info = api_json(d, "/info")
        assert info["RegistryConfig"]["Mirrors"] == [old_mirror.url] and info["Debug"] is False
        pids = d.pids()
        assert len(pids) == 2

        with open(d.config_file, "w") as fh:
            json.dump(
                {
                    "registry-mirrors": [new_mirror.url],
                    "labels": ["tier=edge"],
                    "debug": True,
                    "max-concurrent-downloads": 2,
                    "log-opts": {"max-size": "2m", "max-file": "3"},
                    "mtu": 1400,
                },
                fh,
            )
        os.kill(d.proc.pid, signal.SIGHUP)
        assert notify.recv(4096).decode().startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert notify.recv(4096).decode().startswith("READY=1")

        info = api_json(d, "/info")
        assert info["RegistryConfig"]["Mirrors"] == [new_mirror.url]
        assert info["Labels"] == ["tier=edge"] and info["Debug"] is True
        # Neither process was replaced, and the container runs on, untouched.
        assert d.pids() == pids
        assert json.loads(cli(d, docker_config, "inspect", "keeper").stdout)[0]["State"] == started
        events = (
            cli(
                d,
                docker_config,
                "events",
                "--since",
                "0",
                "--until",
                str(int(time.time()) + 2),  # past the reload's second (until has whole seconds)
                "--filter",
                "type=daemon",
                "--format",
                "{{json .}}",
            )
            .stdout.decode()
            .splitlines()
        )
        assert len(events) == 1
        event = json.loads(events[0])
        assert (event["Type"], event["Action"], event["Actor"]["ID"]) == ("daemon", "reload", info["ID"])
        attrs = event["Actor"]["Attributes"]
        assert attrs["registry-mirrors"] == json.dumps([new_mirror.url])
        assert attrs["labels"] == '["tier=edge"]' and attrs["debug"] == "true"
        assert attrs["max-concurrent-downloads"] == "2" and attrs["shutdown-timeout"] == "15"
        assert json.loads(attrs["log-opts"]) == {"max-file": "3", "max-size": "2m"}
        log = d.log()
        assert "reload: registry-mirrors:" in log
        assert "mtu changed in" in log and "takes effect only when the daemon restarts" in log
        # The pull goes through the new mirror.
        out = cli(d, docker_config, "pull", "busybox").stdout.decode()
        assert "Downloaded newer image for busybox:latest" in out
        # New containers get the new log defaults.
        cid = cli(d, docker_config, "create", "busybox", "true").stdout.decode().strip()
        doc = json.loads(cli(d, docker_config, "inspect", cid).stdout)[0]
        assert doc["HostConfig"]["LogConfig"]["Config"] == {"max-size": "2m", "max-file": "3"}

        # A broken file changes nothing, and the daemon goes on.
        with open(d.config_file, "w") as fh:
            fh.write("{not json")
        os.kill(d.proc.pid, signal.SIGHUP)
        assert notify.recv(4096).decode().startswith("RELOADING=1")
        assert notify.recv(4096).decode().startswith("READY=1")
        assert "reload failed, the configuration is unchanged" in d.log()
        assert api_json(d, "/info")["RegistryConfig"]["Mirrors"] == [new_mirror.url]
        assert d.pids() == pids
        cli(d, docker_config, "rm", "-f", "keeper")
    finally:
        d.stop()
        notify.close()
        old_mirror.stop()
        new_mirror.stop()


def test_sighup_during_start_up_changes_nothing(workdir):
    import signal

    d = DaemonProcess(workdir, ["-s", "vfs"])
    d.start(wait=False)
    try:
        deadline = time.monotonic() + 30
        # The pidfile is written once the daemon's own code runs (before that,
        # as for dockerd, SIGHUP's default action applies; systemd sends none then).
        while not os.path.exists(d.pidfile) and time.monotonic() < deadline:
            time.sleep(0.005)
        while time.monotonic() < deadline:
            # Before gunicorn runs, while the worker starts, and once it serves: never a stop.
            os.kill(d.proc.pid, signal.SIGHUP)
            status = None
            try:
                status, _ = d.request("GET", "/_ping", timeout=0.2)
            except OSError:
                pass
            if status == 200:
                break
            assert d.proc.poll() is None, d.log()
            time.sleep(0.02)
        d.wait_ready()
        pids = d.pids()
        os.kill(d.proc.pid, signal.SIGHUP)
        time.sleep(0.5)
        assert d.pids() == pids and d.request("GET", "/_ping")[0] == 200
    finally:
        assert d.stop() == 0


# ---------------------------------------------------------------------------
# shim-memory-merge: the shims opt in to kernel samepage merging, the containers never do


@pytest.mark.skipif(ksm.unsupported() is not None, reason=str(ksm.unsupported()))
def test_shim_memory_merge_opts_in_the_shims_and_never_the_containers(workdir, docker_config, busybox_tar):
    d = start_daemon(workdir, {"shim-memory-merge": True})
    try:
        cli(d, docker_config, "load", "-i", busybox_tar)
        cid = cli(d, docker_config, "run", "-d", "--net", "none", "busybox", "sleep", "60").stdout.decode().strip()
        pid = json.loads(cli(d, docker_config, "inspect", cid).stdout)[0]["State"]["Pid"]
        shim_pid = int(stat_fields(pid)[1])
        deadline = time.monotonic() + 10
        while not ksm.merging(shim_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ksm.merging(shim_pid), "the shim did not opt in"
        assert not ksm.merging(pid)
        execed = cli(d, docker_config, "exec", cid, "cat", "/proc/self/ksm_stat").stdout.decode()
        assert "ksm_merge_any: no" in execed
        warnings = json.loads(cli(d, docker_config, "info", "--format", "{{json .Warnings}}").stdout)
        merge_warnings = [w for w in warnings or [] if "--shim-memory-merge" in w]
        assert merge_warnings == ([] if ksm.ksmd_running() else [merge_warnings[0]])
        if not ksm.ksmd_running():
            assert "ksmd does not run" in merge_warnings[0]
        cli(d, docker_config, "rm", "-f", cid)
    finally:
        d.stop()
