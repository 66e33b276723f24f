"""The systemd units shipped with the package and ``engine-admin install-systemd``.

The units are verified offline with ``systemd-analyze verify`` (no running
systemd is needed); their ``ExecStart`` is run the way systemd runs it,
under socket activation (``systemd-socket-activate`` passes the socket as
fd 3 with LISTEN_FDS/LISTEN_PID) with a NOTIFY_SOCKET, and answers the
docker CLI on the activated socket.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

import engine
from engine.admin import systemd

ANALYZE = shutil.which("systemd-analyze")


def admin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine.admin.cli", *args], capture_output=True, text=True, timeout=120
    )


def verify(*paths: str) -> subprocess.CompletedProcess:
    if ANALYZE is None:
        pytest.fail("systemd-analyze is missing: .ci/install installs Debian's systemd")
    # --man=no: the units name no man pages; nothing here needs a running systemd.
    return subprocess.run([ANALYZE, "verify", "--man=no", *paths], capture_output=True, text=True, timeout=120)


def directives(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_shipped_units_are_package_data_with_dockers_settings():
    service = directives(systemd.shipped_unit("engine.service"))
    assert service["Type"] == "notify" and service["KillMode"] == "process" and service["Delegate"] == "yes"
    assert service["ExecStart"] == "/usr/bin/engine -d -H fd://"
    assert service["ExecReload"] == "/bin/kill -s HUP $MAINPID"
    assert service["LimitNOFILE"] == "1024:524288" and service["Requires"] == "engine.socket"
    sock = directives(systemd.shipped_unit("engine.socket"))
    assert sock["ListenStream"] == "/run/engine.sock" and sock["SocketGroup"] == "engine"
    assert sock["SocketMode"] == "0660"


def test_install_systemd_writes_units_that_systemd_analyze_verifies(tmp_path):
    dest = tmp_path / "units"
    proc = admin("install-systemd", "--dest", str(dest))
    assert proc.returncode == 0, proc.stderr
    engine = os.path.join(systemd.default_prefix(), "bin", "engine")
    assert f"ExecStart runs {engine}" in proc.stdout
    service = (dest / "engine.service").read_text()
    assert directives(service)["ExecStart"] == f"{engine} -d -H fd://"
    assert oct((dest / "engine.service").stat().st_mode & 0o777) == "0o644"
    result = verify(str(dest / "engine.service"), str(dest / "engine.socket"))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    # systemd-analyze is a real check: a bad directive or a missing binary is reported.
    (dest / "engine.service").write_text(service.replace("Type=notify", "Type=notifyy"))
    assert "Failed to parse service type" in verify(str(dest / "engine.service")).stderr
    (dest / "engine.service").write_text(service.replace(engine, "/nonexistent/engine"))
    assert verify(str(dest / "engine.service")).returncode != 0


@pytest.mark.root("groupadd --root")
def test_install_into_a_root_with_its_group(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("group", "gshadow", "passwd", "shadow", "login.defs"):
        if os.path.exists(f"/etc/{name}"):
            shutil.copy(f"/etc/{name}", root / "etc" / name)
    (root / "usr" / "bin").mkdir(parents=True)
    os.symlink(os.path.join(systemd.default_prefix(), "bin", "engine"), root / "usr" / "bin" / "engine")
    with open("/etc/group") as fh:
        host_groups = fh.read()
    group = "engine" if "\nengine:" not in "\n" + host_groups else "enginetest"
    proc = admin("install-systemd", "--root", str(root), "--prefix", "/usr", "--group", group, "--create-group")
    assert proc.returncode == 0, proc.stderr
    assert f"created the group {group}" in proc.stdout
    unit_dir = root / "etc" / "systemd" / "system"
    assert directives((unit_dir / "engine.service").read_text())["ExecStart"] == "/usr/bin/engine -d -H fd://"
    assert directives((unit_dir / "engine.socket").read_text())["SocketGroup"] == group
    assert any(line.startswith(f"{group}:") for line in (root / "etc" / "group").read_text().splitlines())
    with open("/etc/group") as fh:
        assert fh.read() == host_groups  # the host's groups are untouched
    again = admin("install-systemd", "--root", str(root), "--prefix", "/usr", "--group", group, "--create-group")
    assert again.returncode == 0 and "created the group" not in again.stdout
    bad = admin("install-systemd", "--dest", str(tmp_path / "x"), "--prefix", str(tmp_path / "nowhere"))
    assert bad.returncode == 1 and "no engine executable at" in bad.stderr


@pytest.mark.root("a daemon")
def test_the_units_execstart_runs_under_socket_activation(tmp_path, workdir, docker_config):
    """systemd-socket-activate does for the unit's ExecStart what engine.socket does."""
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.fail("systemd-socket-activate is missing: .ci/install installs Debian's systemd")
    dest = tmp_path / "units"
    assert admin("install-systemd", "--dest", str(dest)).returncode == 0
    exec_start = shlex.split(directives((dest / "engine.service").read_text())["ExecStart"])
    sock_path = str(tmp_path / "engine.sock")
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(60)
    config = tmp_path / "daemon.json"
    config.write_text("{}")
    isolate = ["-g", os.path.join(workdir, "root"), "-p", os.path.join(workdir, "engine.pid"), "-s", "vfs"]
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen(
        [activate, "-l", sock_path, f"--setenv=NOTIFY_SOCKET={notify_path}", *exec_start, *isolate]
        + ["--config-file", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        env = dict(os.environ, DOCKER_CONFIG=docker_config, DOCKER_HOST=f"unix://{sock_path}")
        # The first connection starts the daemon, which answers it on the activated socket.
        out = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert out.returncode == 0 and out.stdout.strip() == engine.__version__, (out.stderr, open(log.name).read())
        ready = notify.recv(4096).decode()
        assert ready.startswith("READY=1") and f"MAINPID={proc.pid}" in ready
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        notify.close()
        log.close()
