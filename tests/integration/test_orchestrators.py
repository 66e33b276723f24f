"""A Kubernetes pod's life as cri-dockerd drives the daemon, and a Nomad task's as its docker
driver does, replayed against our daemon and dockerd 20.10 alike.

The requests are the ones those clients build (read from their sources: cri-dockerd's
``core/sandbox_helpers.go``, ``security_context.go``, ``container_create.go``, ``exec.go``,
``libdocker`` and ``container_{start,stop,remove}.go``; Nomad's ``drivers/docker/driver.go``
and ``network.go``), sent raw over the socket with the API version each client would speak to
the daemon (the one it reports; cri-dockerd sends no version prefix). No kubelet, CNI plugin or
Nomad agent runs: where they would act (a CNI plugin configuring the sandbox's namespace, the
kubelet reading the log), the test does what they would read or check.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from urllib.parse import quote

import pytest

from engine.testing.sidebyside import Target, wait_for

pytestmark = [pytest.mark.root("daemons"), pytest.mark.skipif(shutil.which("docker") is None, reason="needs docker")]


def _hijack(t: Target, path: str, body: dict) -> socket.socket:
    """POST ``body`` with Connection: Upgrade and return the socket once the 101 is read."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(t.socket)
    data = json.dumps(body).encode()
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
        f"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise AssertionError(f"{t.kind}: the connection closed before the upgrade: {head!r}")
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _read_until_eof(sock: socket.socket, timeout: float = 20.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return out
        out += chunk


def test_a_pod_as_cri_dockerd_drives_it(clean, tmp_path):
    t = clean
    ok = (200, 201, 204)
    pod = "k8s_POD_web-0_default_0123_0"
    # RunPodSandbox: the infra container, a network namespace of its own for CNI ("none"),
    # shareable IPC for the app containers, kubelet's labels, the pod's cgroup parent.
    status, sandbox = t.request(
        "POST",
        f"/containers/create?name={pod}",
        {
            "Hostname": "web-0",
            "Image": "busybox",
            "Cmd": ["sleep", "3600"],  # the pause image's role
            "Labels": {
                "io.kubernetes.docker.type": "podsandbox",
                "io.kubernetes.container.name": "POD",
                "io.kubernetes.pod.name": "web-0",
                "io.kubernetes.pod.namespace": "default",
                "io.kubernetes.pod.uid": "0123",
            },
            "HostConfig": {
                "IpcMode": "shareable",
                "NetworkMode": "none",
                # cri-dockerd sends -998; lowering it needs CAP_SYS_RESOURCE, which neither
                # daemon has on this host (both fail the start alike), so the pod keeps 0.
                "OomScoreAdj": 0,
                "CpuShares": 2,
                "MemorySwap": 0,
                "CgroupParent": "/kubepods/besteffort/pod0123",
                "SecurityOpt": ["seccomp=unconfined"],
            },
        },
    )
    assert status == 201, sandbox
    sid = sandbox["Id"]
    assert t.request("POST", f"/containers/{sid}/start")[0] == 204
    status, info = t.request("GET", f"/containers/{sid}/json")
    # What the CNI plugin is given: the sandbox's namespace through its PID (and SandboxKey).
    pid = info["State"]["Pid"]
    assert info["State"]["Running"] and os.path.exists(f"/proc/{pid}/ns/net")
    assert info["NetworkSettings"]["SandboxKey"] and info["HostConfig"]["Runtime"] == "runc"
    # CreateContainer: joins the sandbox's net and IPC (and here its PID namespace, as with
    # shareProcessNamespace), Healthcheck NONE, the kubelet's mounts with CreateMountpoint.
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "data").write_text("from the kubelet\n")
    logdir = tmp_path / "pods" / "default_web-0_0123" / "app"
    logdir.mkdir(parents=True)
    status, app = t.request(
        "POST",
        "/containers/create?name=k8s_app_web-0_default_0123_0",
        {
            "Entrypoint": ["sh", "-c"],
            "Cmd": ["echo started; cat /data/data; while :; do sleep 1; done"],
            "Env": ["POD_NAME=web-0"],
            "Image": "busybox",
            "Labels": {
                "io.kubernetes.docker.type": "container",
                "io.kubernetes.container.logpath": str(logdir / "0.log"),
                "io.kubernetes.sandbox.id": sid,
            },
            "Healthcheck": {"Test": ["NONE"]},
            "HostConfig": {
                "Mounts": [
                    {
                        "Type": "bind",
                        "Source": str(volume),
                        "Target": "/data",
                        "ReadOnly": True,
                        "BindOptions": {"CreateMountpoint": True},
                    }
                ],
                "RestartPolicy": {"Name": "no"},
                "Runtime": info["HostConfig"]["Runtime"],
                "NetworkMode": f"container:{sid}",
                "IpcMode": f"container:{sid}",
                "PidMode": f"container:{sid}",
                "OomScoreAdj": 1000,
                "CgroupParent": "/kubepods/besteffort/pod0123",
                "MemorySwap": 0,
                "CpuShares": 2,
                "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "5"}},
            },
        },
    )
    assert status == 201, app
    aid = app["Id"]
    assert t.request("POST", f"/containers/{aid}/start")[0] == 204
    status, ainfo = t.request("GET", f"/containers/{aid}/json")
    # The kubelet's log symlink points at the json-file LogPath, which it then reads.
    log_path = ainfo["LogPath"]
    os.symlink(log_path, logdir / "0.log")
    assert wait_for(lambda: os.path.exists(log_path) and b"from the kubelet" in open(log_path, "rb").read())
    first = json.loads(open(logdir / "0.log", "rb").readline())
    assert first["log"] == "started\n" and first["stream"] == "stdout" and first["time"].endswith("Z")
    # Both containers share the sandbox's network, IPC and PID namespaces.
    for kind in ("net", "ipc", "pid"):
        assert os.readlink(f"/proc/{pid}/ns/{kind}") == os.readlink(f"/proc/{ainfo['State']['Pid']}/ns/{kind}")
    # ExecSync / kubectl exec -it: create, start hijacked with Tty, resize right after.
    status, ex = t.request(
        "POST",
        f"/containers/{aid}/exec",
        {"Cmd": ["sh", "-c", "sleep 1; stty size"], "AttachStdout": True, "AttachStderr": True, "Tty": True},
    )
    assert status == 201
    sock = _hijack(t, f"/exec/{ex['Id']}/start", {"Detach": False, "Tty": True})
    assert t.request("POST", f"/exec/{ex['Id']}/resize?h=40&w=120")[0] in ok
    assert b"40 120" in _read_until_eof(sock)
    sock.close()
    assert wait_for(lambda: t.request("GET", f"/exec/{ex['Id']}/json")[1]["ExitCode"] == 0)
    # ListContainerStats: one-shot stats.
    status, stats = t.request("GET", f"/containers/{aid}/stats?stream=0&one-shot=1")
    assert status == 200 and stats["memory_stats"]["usage"] > 0 and "cpu_usage" in stats["cpu_stats"]
    # ListContainers with the kubelet's label filter.
    filters = quote(json.dumps({"label": ["io.kubernetes.docker.type=container"]}))
    status, listed = t.request("GET", f"/containers/json?all=1&filters={filters}")
    assert [c["Id"] for c in listed] == [aid]
    # StopContainer, StopPodSandbox, RemoveContainer, RemovePodSandbox.
    assert t.request("POST", f"/containers/{aid}/stop?t=2")[0] == 204
    assert t.request("GET", f"/containers/{aid}/json")[1]["State"]["Running"] is False
    assert t.request("POST", f"/containers/{sid}/stop?t=2")[0] == 204
    for cid in (aid, sid):
        assert t.request("DELETE", f"/containers/{cid}?v=1&force=1")[0] == 204
    assert t.request("GET", f"/containers/{sid}/json")[0] == 404
    for hierarchy in os.listdir("/sys/fs/cgroup"):  # the kubelet's pod cgroups, left by both daemons
        for leaf in ("kubepods/besteffort/pod0123", "kubepods/besteffort", "kubepods"):
            try:
                os.rmdir(os.path.join("/sys/fs/cgroup", hierarchy, leaf))
            except OSError:
                pass


def test_a_nomad_task_as_its_docker_driver_runs_it(clean, tmp_path):
    t = clean
    alloc = "8a3f1c2e-0000-4000-8000-000000000001"
    # Fingerprint: the version it negotiates with, and the runtimes it allows (runc).
    status, version = t.request("GET", "/version")
    status, info = t.request("GET", "/info")
    assert "runc" in info["Runtimes"] and version["ApiVersion"]
    prefix = f"/v{version['ApiVersion']}"
    # CreateNetwork: the pause container owns the group's network namespace ("none"); its
    # SandboxKey is the namespace path handed to CNI.
    status, pause = t.request(
        "POST",
        f"{prefix}/containers/create?name=nomad_init_{alloc}",
        {
            "Image": "busybox",
            "Cmd": ["sleep", "3600"],
            "Labels": {"com.hashicorp.nomad.alloc_id": alloc},
            "HostConfig": {"NetworkMode": "none", "RestartPolicy": {"Name": "unless-stopped"}},
        },
    )
    assert status == 201, pause
    assert t.request("POST", f"{prefix}/containers/{pause['Id']}/start")[0] == 204
    status, pinfo = t.request("GET", f"{prefix}/containers/{pause['Id']}/json")
    sandbox_key = pinfo["NetworkSettings"]["SandboxKey"]
    assert sandbox_key and os.path.exists(sandbox_key)
    if t.kind == "engine":  # dockerd's mount of it lives in its own mount namespace here
        assert os.stat(sandbox_key).st_ino == os.stat(f"/proc/{pinfo['State']['Pid']}/ns/net").st_ino
    # StartTask: the task joins the pause container's network; alloc/local/secrets binds, the
    # driver's default logging, memory and CPU from the task's resources, an /etc/hosts of
    # Nomad's own mounted over the daemon's.
    alloc_dir, local, secrets = tmp_path / "alloc", tmp_path / "local", tmp_path / "secrets"
    for d in (alloc_dir, local, secrets):
        d.mkdir()
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.0.0.7 web-task\n")
    memory = 64 << 20
    status, task = t.request(
        "POST",
        f"{prefix}/containers/create?name=web-{alloc}",
        {
            "Image": "busybox",
            "Cmd": ["sh", "-c", "cat /etc/hosts; echo $NOMAD_TASK_NAME; while :; do sleep 1; done"],
            "Env": ["NOMAD_TASK_NAME=web", f"NOMAD_ALLOC_ID={alloc}"],
            "Labels": {"com.hashicorp.nomad.alloc_id": alloc},
            "HostConfig": {
                "Binds": [f"{alloc_dir}:/alloc", f"{local}:/local", f"{secrets}:/secrets"],
                "Memory": memory,
                "MemorySwap": memory,
                "CpuShares": 100,
                "PidsLimit": 0,
                "LogConfig": {"Type": "json-file", "Config": {"max-file": "2", "max-size": "2m"}},
                "Mounts": [
                    {
                        "Type": "bind",
                        "Source": str(hosts),
                        "Target": "/etc/hosts",
                        "ReadOnly": True,
                        "BindOptions": {"Propagation": "rprivate"},
                    }
                ],
                "NetworkMode": f"container:{pause['Id']}",
            },
        },
    )
    assert status == 201, task
    tid = task["Id"]
    assert t.request("POST", f"{prefix}/containers/{tid}/start")[0] == 204
    status, tinfo = t.request("GET", f"{prefix}/containers/{tid}/json")
    assert tinfo["HostConfig"]["Memory"] == memory and tinfo["HostConfig"]["LogConfig"]["Config"]["max-file"] == "2"
    # The driver's log collector follows the logs; the task sees Nomad's /etc/hosts.
    assert wait_for(lambda: b"web\n" in t.request("GET", f"{prefix}/containers/{tid}/logs?stdout=1")[1])
    logs = t.request("GET", f"{prefix}/containers/{tid}/logs?stdout=1")[1]
    assert b"10.0.0.7 web-task" in logs
    assert os.readlink(f"/proc/{tinfo['State']['Pid']}/ns/net") == os.readlink(f"/proc/{pinfo['State']['Pid']}/ns/net")
    # Stats as the driver streams them: read the first document.
    status, stats = t.request("GET", f"{prefix}/containers/{tid}/stats?stream=0")
    assert stats["memory_stats"]["limit"] == memory
    # StopTask: the kill signal, then, the grace period over, a stop; the wait answers the exit
    # (the shell, PID 1, ignores SIGTERM: the stop's SIGKILL ends it).
    assert t.request("POST", f"{prefix}/containers/{tid}/kill?signal=SIGTERM")[0] == 204
    assert t.request("POST", f"{prefix}/containers/{tid}/stop?t=1")[0] == 204
    status, waited = t.request("POST", f"{prefix}/containers/{tid}/wait")
    assert status == 200 and waited["StatusCode"] == 137
    # DestroyTask and DestroyNetwork.
    assert t.request("DELETE", f"{prefix}/containers/{tid}?v=1&force=1")[0] == 204
    assert t.request("POST", f"{prefix}/containers/{pause['Id']}/stop?t=1")[0] == 204
    assert t.request("DELETE", f"{prefix}/containers/{pause['Id']}?force=1")[0] == 204
    assert wait_for(lambda: not t.container_ids(), timeout=5)
