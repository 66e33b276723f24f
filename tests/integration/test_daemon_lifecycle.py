"""The real daemon under gunicorn, driven by the real docker CLI and docker-py.

Runs inside the test sandbox (own mount, network and PID namespaces); each
daemon has a temporary root, socket and pidfile.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import docker as dockerpy
import pytest

import engine
from engine.testing.daemon import DaemonProcess

pytestmark = pytest.mark.root


def test_docker_cli_version_and_info(daemon, docker):
    out = docker("version").stdout.decode()
    # The CLI (API 1.50) downgrades to the version the daemon reports, and shows both.
    assert f"API version:       {engine.API_VERSION} (downgraded from" in out
    assert "Server: engine" in out
    fmt = docker("version", "--format", "{{.Server.APIVersion}} {{.Server.Version}}").stdout.decode().split()
    assert fmt[0] == engine.API_VERSION
    info = docker("info", "--format", "{{json .}}").stdout
    doc = json.loads(info)
    assert doc["Driver"] == "vfs"
    assert doc["OSType"] == "linux" and doc["NCPU"] == os.cpu_count()
    assert doc["Swarm"]["LocalNodeState"] == "inactive"
    assert doc["DockerRootDir"] == os.path.realpath(daemon.root)
    text = docker("info").stdout.decode()
    assert "Storage Driver: vfs" in text


def test_docker_py_version_info_ping(daemon):
    client = dockerpy.APIClient(base_url=daemon.host, version="auto")
    assert client.api_version == engine.API_VERSION
    assert client.ping() is True
    assert client.version()["ApiVersion"] == engine.API_VERSION
    info = client.info()
    assert info["Driver"] == "vfs" and info["ServerVersion"]
    high = dockerpy.from_env(environment={"DOCKER_HOST": daemon.host})
    assert high.ping()
    high.close()
    client.close()


def test_socket_mode_and_pidfile(daemon):
    st = os.stat(daemon.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    with open(daemon.pidfile) as fh:
        assert int(fh.read()) == daemon.proc.pid


def test_sigterm_shuts_down_cleanly(workdir):
    d = DaemonProcess(workdir, ["-s", "vfs"]).start()
    assert os.path.exists(d.pidfile) and os.path.exists(d.socket)
    assert d.stop(signal.SIGTERM) == 0
    assert not os.path.exists(d.pidfile)
    assert not os.path.exists(d.socket)
    assert "engine shut down" in d.log()


def test_sigint_is_graceful_too(workdir):
    d = DaemonProcess(workdir, ["-s", "vfs"]).start()
    assert d.stop(signal.SIGINT) == 0
    assert not os.path.exists(d.pidfile) and not os.path.exists(d.socket)


def test_requests_during_startup_wait_in_backlog(workdir):
    d = DaemonProcess(workdir, ["-s", "vfs"])
    d.start(wait=False)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(d.socket) and time.monotonic() < deadline:
            time.sleep(0.005)
        # The socket exists as soon as the master bound it; a request sent now
        # is answered once the worker finished its start-up, not refused.
        status, body = d.request("GET", "/_ping", timeout=30)
        assert (status, body) == (200, b"OK")
    finally:
        assert d.stop() == 0


def test_sd_notify_ready(workdir, tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    d = DaemonProcess(workdir, ["-s", "vfs"], env={"NOTIFY_SOCKET": path})
    d.start(wait=False)
    try:
        msg = sock.recv(4096).decode()
        assert msg.startswith("READY=1")
        assert f"MAINPID={d.proc.pid}" in msg
        d.wait_ready()
    finally:
        sock.close()
        assert d.stop() == 0


def test_live_pidfile_is_refused(workdir, daemon):
    other = DaemonProcess(os.path.join(workdir, "second"), ["-s", "vfs", "-p", daemon.pidfile])
    other.pidfile = daemon.pidfile
    proc = subprocess.run(other.command(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "pid file found" in proc.stderr
    assert os.path.exists(daemon.pidfile)
    assert not os.path.exists(other.socket)


@pytest.mark.parametrize(
    "args,message",
    [
        (["-H", "http://127.0.0.1:1"], "Invalid bind address format"),
        (["-s", "nosuchfs"], "'nosuchfs' (from --storage-driver) is not installed; installed graph drivers:"),
        (["-b", "br0", "--bip", "10.9.0.1/24"], "mutually exclusive"),
        (["-H", "tcp://127.0.0.1:23760", "--tlsverify", "--tlscacert", "/nonexistent/ca.pem"], "no such file"),
    ],
)
def test_bad_startup_leaves_nothing_behind(workdir, args, message):
    d = DaemonProcess(workdir, args)
    proc = subprocess.run(d.command(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr
    assert not os.path.exists(d.pidfile)
    assert not os.path.exists(d.socket)


def test_tcp_with_tls(workdir, tmp_path, monkeypatch):
    """TLS on a TCP listener while the unix socket stays plain."""
    # requests prefers these to the session's CA bundle.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    certs = tmp_path / "certs"
    certs.mkdir()
    subj = "/CN=127.0.0.1"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(certs / "key.pem"),
            "-out",
            str(certs / "cert.pem"),
            "-days",
            "1",
            "-subj",
            subj,
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    d = DaemonProcess(
        workdir,
        [
            "-s",
            "vfs",
            "-H",
            "tcp://127.0.0.1:23761",
            "--tls",
            "--tlscert",
            str(certs / "cert.pem"),
            "--tlskey",
            str(certs / "key.pem"),
        ],
    )
    d.start()
    try:
        tls = dockerpy.tls.TLSConfig(verify=str(certs / "cert.pem"))
        client = dockerpy.APIClient(base_url="https://127.0.0.1:23761", tls=tls, version="1.41")
        assert client.ping() is True
        assert client.version()["ApiVersion"] == engine.API_VERSION  # the daemon's, whatever the request's
        plain = dockerpy.APIClient(base_url=d.host, version="1.41")
        assert plain.ping() is True
        assert "without --tlsverify is insecure" in d.log()
    finally:
        assert d.stop() == 0


def test_engine_client_version_and_info(daemon):
    env = dict(os.environ, DOCKER_HOST="")
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "-H", daemon.host, "version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "Server: engine" in out.stdout, out.stdout
    client, server = out.stdout.split("Server:", 1)
    assert f"API version:       {engine.CLIENT_API_VERSION}" in client, out.stdout
    assert f"API version:      {engine.API_VERSION}" in server, out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "-H", daemon.host, "info"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "Storage Driver: vfs" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "-H", daemon.host, "frobnicate"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 1
    assert "'frobnicate' is not an engine command" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "-H", "unix:///nonexistent.sock", "version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 1 and "Cannot connect to the engine daemon" in out.stderr


def test_sigterm_during_startup_leaves_nothing_behind(workdir):
    d = DaemonProcess(workdir, ["-s", "vfs"])
    d.start(wait=False)
    deadline = time.monotonic() + 20
    while not os.path.exists(d.pidfile) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert d.stop(signal.SIGTERM) == 0
    assert not os.path.exists(d.pidfile)
    assert not os.path.exists(d.socket)
