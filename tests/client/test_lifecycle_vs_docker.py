"""Container life-cycle corners where Docker's behaviour is easy to get wrong, checked against our
daemon and the reference dockerd alike: concurrent starts, kill and stop versus restart policies,
update, paused containers, failed creates, execs, abandoned attaches, a daemon restart."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from engine.testing.daemon import settled_listdir
from engine.testing.sidebyside import wait_for

pytestmark = pytest.mark.root


def state(engine, name: str) -> dict:
    return json.loads(engine("inspect", name).stdout)[0]["State"]


def test_concurrent_starts_start_once(engine):
    api = engine.daemon.api()
    try:
        cid = api.create_container("busybox", ["sleep", "600"])["Id"]
        url = api._url("/containers/{0}/start", cid)
        statuses: list[int] = []
        threads = [threading.Thread(target=lambda: statuses.append(api._post(url).status_code)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if engine.daemon.kind == "engine":
            assert sorted(statuses) == [204, 304, 304, 304]
        else:
            # dockerd checks "running" before it takes the container's lock: a
            # start that waited for the lock may answer 204 for nothing done.
            assert statuses.count(204) >= 1 and set(statuses) <= {204, 304}
        top = api.top(cid)["Processes"]  # one container process either way
        assert len(top) == 1 and "sleep 600" in top[0][-1]
        api.remove_container(cid, force=True)
        assert not api.containers(all=True)
    finally:
        api.close()


def test_kill_ends_restarts_and_rm_f_removes(engine):
    engine("run", "-d", "--name", "ka", "--restart", "always", "busybox", "sleep", "600")
    assert engine("kill", "ka").returncode == 0
    time.sleep(2)
    st = state(engine, "ka")
    assert not st["Running"] and not st["Restarting"] and st["ExitCode"] == 137
    engine("start", "ka")
    assert engine("rm", "-f", "ka").returncode == 0
    assert engine("ps", "-aq").stdout == ""


def test_manual_start_resets_the_restart_count(engine):
    engine("run", "-d", "--name", "of", "--restart", "on-failure:1", "busybox", "sh", "-c", "echo run; exit 1")
    assert wait_for(
        lambda: (
            engine("logs", "of").stdout.count("run") == 2
            and not state(engine, "of")["Restarting"]
            and not state(engine, "of")["Running"]
        )
    )
    time.sleep(1)  # no third run
    assert engine("logs", "of").stdout.count("run") == 2
    engine("start", "of")
    assert wait_for(lambda: engine("logs", "of").stdout.count("run") == 4)
    time.sleep(1)
    assert engine("logs", "of").stdout.count("run") == 4
    assert json.loads(engine("inspect", "of").stdout)[0]["RestartCount"] == 1


def test_update_keeps_the_restart_policy_and_execs_are_not_listed_once_done(engine):
    engine("run", "-d", "--name", "up", "--restart", "always", "busybox", "sleep", "600")
    assert engine("update", "--cpu-shares", "512", "up").returncode == 0
    doc = json.loads(engine("inspect", "up").stdout)[0]
    assert doc["HostConfig"]["RestartPolicy"]["Name"] == "always" and doc["HostConfig"]["CpuShares"] == 512
    assert engine("update", "--restart", "on-failure:3", "up").returncode == 0
    policy = json.loads(engine("inspect", "up").stdout)[0]["HostConfig"]["RestartPolicy"]
    assert policy == {"Name": "on-failure", "MaximumRetryCount": 3}
    for _ in range(3):
        engine("exec", "up", "true")
    assert json.loads(engine("inspect", "up").stdout)[0]["ExecIDs"] is None


def test_stopping_a_paused_container_uses_its_stop_signal(engine):
    engine("run", "-d", "--name", "pz", "busybox", "sh", "-c", 'trap "exit 3" TERM; while :; do sleep 0.1; done')
    assert engine("pause", "pz").returncode == 0
    t0 = time.monotonic()
    assert engine("stop", "pz").returncode == 0
    assert time.monotonic() - t0 < 5  # not the 10 s timeout and a SIGKILL
    st = state(engine, "pz")
    assert st["ExitCode"] == 3 and not st["Paused"]


def test_failed_creates_leave_no_anonymous_volume(engine):
    layers = os.path.join(engine.daemon.process.root, "vfs", "dir") if engine.daemon.kind == "engine" else None
    before = sorted(settled_listdir(layers)) if layers else []
    proc = engine("create", "-v", "/data", "--link", "nosuch:x", "busybox", "true")
    assert proc.returncode != 0
    proc = engine("create", "-v", "/anon", "-v", "newvol:/a", "-v", "bad@name:/b", "busybox", "true")
    assert proc.returncode != 0
    # The named volume stays, as in Docker; no anonymous one, no container.
    assert engine("volume", "ls", "-q").stdout == "newvol\n" and engine("ps", "-aq").stdout == ""
    if layers:  # nor a layer (the init layer was still held when the create failed)
        assert sorted(settled_listdir(layers)) == before  # what it removed is deleted in the background
    engine("volume", "rm", "newvol")


def test_abandoned_attaches_to_a_created_container_let_go(engine):
    """Clients that attach to a created container and leave must not keep the daemon's threads."""
    engine("create", "--name", "cr", "busybox", "echo", "hi")
    host = engine.daemon.host
    assert host.startswith("unix://")
    for _ in range(140):  # more than the worker's threads
        s = socket.socket(socket.AF_UNIX)
        s.connect(host[len("unix://") :])
        s.sendall(
            b"POST /v1.41/containers/cr/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: x\r\n"
            b"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
        )
        s.settimeout(10)
        assert s.recv(200).startswith(b"HTTP/1.1 101")
        s.close()
    proc = engine("start", "-a", "cr", timeout=30)
    assert proc.returncode == 0 and proc.stdout == "hi\n"


def test_daemon_restart_applies_policies_afresh(engine):
    engine("run", "-d", "--name", "al", "--restart", "always", "busybox", "sleep", "600")
    engine("run", "-d", "--name", "us", "--restart", "unless-stopped", "busybox", "sleep", "600")
    engine("stop", "-t", "1", "al", "us")
    process = engine.daemon.process
    process.stop()
    process.start()
    assert wait_for(lambda: state(engine, "al")["Running"])
    time.sleep(1)
    assert not state(engine, "us")["Running"]
