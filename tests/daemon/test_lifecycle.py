"""The life cycle: restart-policy decisions, and each transition of a container
over real stores, with the exec driver and the shim launcher replaced by test
doubles (:mod:`tests.daemon.fakes`): no container process runs, no root needed.
"""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest

from engine.daemon.lifecycle import (
    BACKOFF_MAX,
    BACKOFF_START,
    LifeCycle,
    next_backoff,
    should_restart,
    start_failure_code,
)
from engine.drivers.exec import ExecStartError
from engine.errors import Conflict, InvalidParameter, NoSuchContainer, NoSuchImage, NotModified
from engine.testing.procs import wait_for
from tests.daemon.fakes import Rig, layers_of

#: Network namespaces (the ``none`` mode) need root; as root the tests run in the sandbox.

# ----------------------------------------------------------------------
# restart-policy decisions


@pytest.mark.parametrize(
    ("policy", "code", "count", "stopped", "expected"),
    [
        (None, 1, 0, False, False),
        ({"Name": "no"}, 1, 0, False, False),
        ({"Name": ""}, 1, 0, False, False),
        ({"Name": "always"}, 0, 0, False, True),
        ({"Name": "always"}, 0, 99, True, True),  # a manual stop is final through exit_on_next, not here
        ({"Name": "unless-stopped"}, 0, 0, False, True),
        ({"Name": "unless-stopped"}, 1, 0, True, False),
        ({"Name": "on-failure"}, 0, 0, False, False),
        ({"Name": "on-failure"}, 1, 50, False, True),  # no limit
        ({"Name": "on-failure", "MaximumRetryCount": 2}, 1, 1, False, True),
        ({"Name": "on-failure", "MaximumRetryCount": 2}, 1, 2, False, False),
        ({"Name": "on-failure", "MaximumRetryCount": 2}, 137, 0, True, True),
    ],
)
def test_should_restart(policy, code, count, stopped, expected):
    assert should_restart(policy, code, count, stopped) is expected


def test_backoff_doubles_up_to_the_cap_and_starts_over_after_a_long_run():
    delays = []
    backoff = 0.0
    for _ in range(12):
        backoff = next_backoff(backoff, ran_for=0.5)
        delays.append(backoff)
    assert delays[:4] == [BACKOFF_START, 0.2, 0.4, 0.8]
    assert delays[-1] == BACKOFF_MAX and max(delays) == BACKOFF_MAX
    assert next_backoff(BACKOFF_MAX, ran_for=10.0) == BACKOFF_START


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ('exec: "nope": executable file not found in $PATH', 127),
        ('exec: "/x": stat /x: no such file or directory', 127),
        ('exec: "/etc": permission denied', 126),
        ("cgroup: write failed", 128),
    ],
)
def test_start_failure_codes(message, code):
    assert start_failure_code(message) == code


# ----------------------------------------------------------------------
# create


def test_create_makes_the_record_layers_and_name(rig: Rig):
    c = rig.create("web")
    assert c.name == "/web" and c.state.status == "created"
    assert rig.store.get("web") is c and rig.store.get(c.id[:8]) is c
    assert layers_of(rig, c.id) == [c.id, c.id + "-init"]
    with open(os.path.join(c.root, "config.v2.json")) as fh:
        doc = json.load(fh)
    assert doc["Name"] == "/web" and doc["Path"] == "/bin/true"
    assert c.host_config["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert c.config["Hostname"] == os.uname().nodename  # host network: the host's name
    # The image's VOLUME became an anonymous volume filled from the image.
    (mount,) = c.mounts
    assert mount["Destination"] == "/data" and rig.daemon.volumes.is_anonymous(mount["Name"])
    with open(os.path.join(rig.daemon.volumes.path(mount["Name"]), "seed")) as fh:
        assert fh.read() == "from the image\n"
    assert rig.actions() == ["create"]


def test_create_with_a_taken_name_leaves_nothing(rig: Rig):
    first = rig.create("web")
    before = set(os.listdir(rig.store.dir))
    volumes = {v["Name"] for v in rig.daemon.volumes.list()}
    with pytest.raises(Conflict, match=f'The container name "/web" is already in use by container "{first.id}"'):
        rig.create("web")
    assert set(os.listdir(rig.store.dir)) == before
    assert {v["Name"] for v in rig.daemon.volumes.list()} == volumes
    assert [c.id for c in rig.store.all()] == [first.id]


def test_a_create_that_fails_late_frees_the_name_and_removes_what_it_made(rig: Rig):
    with pytest.raises(InvalidParameter, match='plugin "syslog" not found'):
        rig.create("web", LogConfig={"Type": "syslog"})
    assert os.listdir(rig.store.dir) == []
    assert rig.daemon.volumes.list() == []
    assert not any(name.endswith("-init") for name in os.listdir(os.path.join(rig.root, "vfs", "dir")))
    assert rig.create("web").name == "/web"  # the name is free again


@pytest.mark.parametrize(
    ("config", "host_config", "message"),
    [
        ({"Image": ""}, {}, "No image was specified"),
        ({"Image": "tiny", "Entrypoint": [], "Cmd": []}, {"Memory": 1024}, "Minimum memory limit allowed is 6MB"),
        ({"Image": "tiny"}, {"RestartPolicy": {"Name": "sometimes"}}, "invalid restart policy 'sometimes'"),
    ],
)
def test_create_refuses_bad_input_before_making_anything(rig: Rig, config, host_config, message):
    with pytest.raises(InvalidParameter, match=message):
        rig.lifecycle.create(config, host_config)
    assert os.listdir(rig.store.dir) == []


def test_create_of_an_unknown_image_is_404(rig: Rig):
    with pytest.raises(NoSuchImage, match="No such image: nothere:latest"):
        rig.lifecycle.create({"Image": "nothere:latest"}, {})


# ----------------------------------------------------------------------
# start, stop, kill


def test_start_runs_the_translated_command_in_a_shim(rig: Rig):
    c = rig.create("web", config={"Env": ["A=1"], "Cmd": ["/bin/true", "x"]}, Memory=64 << 20)
    assert rig.lifecycle.start(c) is True
    assert c.state.status == "running" and c.state.pid == c.state.shim_pid > 0
    assert c.state.started_at > 0 and c.has_been_started_before
    (spec,) = rig.launcher.specs
    command = spec["command"]
    assert command["process"]["args"] == ["/bin/true", "x"]
    assert "A=1" in command["process"]["env"] and command["resources"]["memory"] == 64 << 20
    assert spec["driver"]["class"] == "FakeExecDriver" and spec["log"]["path"] == c.log_path
    with pytest.raises(NotModified):
        rig.lifecycle.start(c)
    assert rig.actions() == ["create", "start"]


def test_stop_sends_the_stop_signal_and_records_the_exit(rig: Rig):
    c = rig.create(config={"StopSignal": "SIGUSR1"})
    rig.lifecycle.start(c)
    rig.lifecycle.stop(c, timeout=10)
    assert c.state.status == "exited" and c.state.exit_code == 128 + signal.SIGUSR1
    assert c.state.pid == 0 and c.state.finished_at >= c.state.started_at
    assert c.has_been_manually_stopped
    assert [sig for call, _, sig in rig.driver.calls if call == "kill"] == [signal.SIGUSR1]
    with pytest.raises(NotModified):
        rig.lifecycle.stop(c)
    assert rig.actions() == ["create", "start", "kill", "die", "stop"]


def test_stop_kills_what_outlasts_the_timeout(rig: Rig):
    rig.driver.ignored.add(signal.SIGTERM)
    c = rig.create()
    rig.lifecycle.start(c)
    rig.lifecycle.stop(c, timeout=0)
    assert c.state.exit_code == 128 + signal.SIGKILL
    assert [sig for call, _, sig in rig.driver.calls if call == "kill"] == [signal.SIGTERM, signal.SIGKILL]


def test_kill_needs_a_running_container(rig: Rig):
    c = rig.create()
    with pytest.raises(Conflict, match=f"Container {c.id} is not running"):
        rig.lifecycle.kill(c, signal.SIGKILL)


def test_a_failed_start_records_docker_s_exit_code_and_releases_the_run(rig: Rig):
    c = rig.create()
    rig.launcher.failure = ExecStartError('exec: "/bin/true": permission denied')
    with pytest.raises(InvalidParameter, match="OCI runtime create failed: exec: .* permission denied: unknown"):
        rig.lifecycle.start(c)
    assert c.state.status == "created" and c.state.exit_code == 126 and "permission denied" in c.state.error
    rig.lifecycle.remove(c)  # the rootfs was released: the layers can go
    assert layers_of(rig, c.id) == []


def test_an_attach_waiting_for_the_start_is_connected_by_it(rig: Rig):
    class Waiting:
        stdin, stdout, stderr = False, True, True

        def __init__(self):
            self.ready = threading.Event()
            self.client = "not connected"

        def connect(self, client):
            self.client = client
            self.ready.set()

    c = rig.create()
    waiting = Waiting()
    assert rig.lifecycle.attach_at_start(c, waiting) is True
    rig.lifecycle.start(c)
    assert rig.launcher.attached == [waiting] and waiting.client is None
    assert rig.lifecycle.attach_at_start(c, Waiting()) is False  # it runs: attach to the shim


def test_a_failed_start_ends_the_attaches_that_waited(rig: Rig):
    c = rig.create()
    waiting = type("W", (), {"stdin": False, "stdout": True, "stderr": True})()
    waiting.ready = threading.Event()
    waiting.connect = lambda client: None
    rig.lifecycle.attach_at_start(c, waiting)
    rig.launcher.failure = ExecStartError("boom")
    with pytest.raises(InvalidParameter):
        rig.lifecycle.start(c)
    assert waiting.ready.is_set()


# ----------------------------------------------------------------------
# pause, update, wait


def test_pause_and_unpause(rig: Rig):
    c = rig.create()
    rig.lifecycle.start(c)
    rig.lifecycle.pause(c)
    assert c.state.status == "paused"
    with pytest.raises(Conflict, match="is already paused"):
        rig.lifecycle.pause(c)
    with pytest.raises(Conflict, match="cannot start a paused container, try unpause instead"):
        rig.lifecycle.start(c)
    rig.lifecycle.unpause(c)
    assert c.state.status == "running"
    with pytest.raises(Conflict, match="is not paused"):
        rig.lifecycle.unpause(c)
    assert [call for call, _, _ in rig.driver.calls] == ["pause", "unpause"]


def test_kill_thaws_a_paused_container(rig: Rig):
    c = rig.create()
    rig.lifecycle.start(c)
    rig.lifecycle.pause(c)
    rig.lifecycle.kill(c, signal.SIGKILL)
    assert [call for call, _, _ in rig.driver.calls] == ["pause", "kill", "unpause"]
    assert rig.lifecycle.wait(c, "not-running", timeout=10)
    assert c.state.status == "exited" and not c.state.paused


def test_update_applies_limits_to_a_running_container(rig: Rig):
    c = rig.create()
    rig.lifecycle.start(c)
    assert rig.lifecycle.update(c, {"Memory": 32 << 20, "CpuShares": 0, "RestartPolicy": {"Name": ""}}) == []
    (call,) = [resources for call, _, resources in rig.driver.calls if call == "update"]
    assert call.memory == 32 << 20
    assert c.host_config["Memory"] == 32 << 20 and c.host_config["RestartPolicy"]["Name"] == "no"
    with pytest.raises(InvalidParameter, match="Minimum memory limit allowed is 6MB"):
        rig.lifecycle.update(c, {"Memory": 1})
    assert c.host_config["Memory"] == 32 << 20


def test_wait_for_the_next_exit_and_for_the_removal(rig: Rig):
    c = rig.create()
    rig.lifecycle.start(c)
    assert rig.lifecycle.wait(c, "next-exit", timeout=0) is False
    done = []
    waiter = threading.Thread(target=lambda: done.append(rig.lifecycle.wait(c, "removed", timeout=30)))
    waiter.start()
    rig.driver.exit(c.id, 3)
    assert rig.lifecycle.wait(c, "not-running", timeout=10)
    assert c.state.exit_code == 3
    rig.lifecycle.remove(c)
    waiter.join(30)
    assert done == [True]


# ----------------------------------------------------------------------
# exits and the restart policy


def test_on_failure_restarts_up_to_its_count(rig: Rig):
    c = rig.create(RestartPolicy={"Name": "on-failure", "MaximumRetryCount": 2})
    rig.lifecycle.start(c)
    for count in (1, 2):
        rig.driver.exit(c.id, 1)
        wait_for(lambda n=count: c.restart_count == n and c.state.status == "running", what=f"restart {count}")
    rig.driver.exit(c.id, 1)
    wait_for(lambda: c.state.status == "exited", what="the final exit")
    assert c.restart_count == 2 and c.state.exit_code == 1
    assert len(rig.launcher.specs) == 3


def test_a_stop_during_the_back_off_ends_the_restarts(rig: Rig):
    c = rig.create(RestartPolicy={"Name": "always"})
    rig.lifecycle.start(c)
    c.backoff = 30.0  # the next restart waits a minute: the stop comes first
    rig.driver.exit(c.id, 0)
    wait_for(lambda: c.state.status == "restarting", what="the restart's back-off")
    rig.lifecycle.stop(c)
    assert c.state.status == "exited" and not c.state.restarting
    assert rig.lifecycle.start(c, by_policy=True) is False  # the timer, had it fired: nothing to do
    assert len(rig.launcher.specs) == 1


def test_a_stopped_container_with_always_stays_down(rig: Rig):
    c = rig.create(RestartPolicy={"Name": "always"})
    rig.lifecycle.start(c)
    rig.lifecycle.stop(c)
    assert c.state.status == "exited" and len(rig.launcher.specs) == 1


def test_auto_remove_removes_at_the_exit(rig: Rig):
    c = rig.create("gone", AutoRemove=True)
    rig.lifecycle.start(c)
    rig.driver.exit(c.id, 0)
    assert rig.lifecycle.wait(c, "removed", timeout=10)
    with pytest.raises(NoSuchContainer):
        rig.store.get("gone")
    assert layers_of(rig, c.id) == [] and not os.path.exists(c.root)


def test_an_auto_removed_container_whose_exit_the_daemon_missed_is_removed_at_restore(rig: Rig):
    # The exit of an auto-removed container is not recorded: its removal follows. A daemon
    # that dies in between leaves a record that says running; the restore removes it.
    c = rig.create("gone", AutoRemove=True)
    rig.lifecycle.start(c)
    rig.lifecycle.monitor.stop()
    rig.driver.exit(c.id, 0)
    restarted(rig)
    with pytest.raises(NoSuchContainer):
        rig.store.get("gone")
    assert layers_of(rig, c.id) == [] and not os.path.exists(c.root)


def test_a_start_and_an_exit_leave_the_host_config_file_as_it_is(rig: Rig):
    c = rig.create("web")
    path = os.path.join(c.root, "hostconfig.json")
    inode = os.stat(path).st_ino
    rig.lifecycle.start(c)
    rig.driver.exit(c.id, 0)
    assert rig.lifecycle.wait(c, "not-running", timeout=10)
    wait_for(lambda: c.state.status == "exited", what="the exit")
    assert os.stat(path).st_ino == inode  # never written again (atomic_write renames a new file)
    rig.lifecycle.update(c, {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}})
    updated = os.stat(path).st_ino
    assert updated != inode
    with open(path) as fh:
        assert json.load(fh)["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    restarted(rig)
    loaded = rig.store.get("web")
    rig.lifecycle.start(loaded)  # a record read from disk knows its host config is there
    assert os.stat(path).st_ino == updated


def test_an_exited_container_is_seen_stopped_once_its_shim_ended(rig: Rig):
    c = rig.create("web")
    rig.lifecycle.start(c)
    rig.driver.exit(c.id, 3, end=False)  # recorded; the shim still releases the cgroups
    assert not rig.lifecycle.wait(c, "not-running", timeout=0.3)
    rig.driver.end()
    assert rig.lifecycle.wait(c, "not-running", timeout=10)
    wait_for(lambda: c.state.status == "exited" and c.state.exit_code == 3, what="the exit")


def test_an_auto_removed_container_is_taken_apart_beside_its_shim_s_end(rig: Rig):
    c = rig.create("gone", AutoRemove=True)
    rig.lifecycle.start(c)
    rig.driver.exit(c.id, 0, end=False)
    # The removal goes on while the shim ends, and is seen done once the shim has.
    wait_for(lambda: layers_of(rig, c.id) == [] and not os.path.exists(c.root), what="the layers and directory")
    assert not rig.lifecycle.wait(c, "removed", timeout=0.3)
    rig.driver.end()
    assert rig.lifecycle.wait(c, "removed", timeout=10)
    rig.settle()
    assert os.listdir(rig.store.dir) == []


def test_a_start_after_a_restore_waits_for_a_shim_that_was_still_ending(rig: Rig):
    c = rig.create("web")
    rig.lifecycle.start(c)
    rig.lifecycle.monitor.stop()  # the daemon dies...
    rig.driver.exit(c.id, 0, end=False)  # ...as the container exits, its shim still ending
    restarted(rig)
    again = rig.store.get("web")
    assert again.state.status == "exited"
    started = threading.Event()
    thread = threading.Thread(target=lambda: (rig.lifecycle.start(again), started.set()))
    thread.start()
    try:
        assert not started.wait(0.3) and len(rig.launcher.specs) == 1  # held: the old shim runs
        rig.driver.end()
        assert started.wait(10) and len(rig.launcher.specs) == 2
    finally:
        rig.driver.end()
        thread.join(10)


def test_an_oom_kill_is_an_event(rig: Rig):
    c = rig.create()
    rig.lifecycle.start(c)
    rig.actions()
    rig.driver.exit(c.id, 137, oom=True)
    assert rig.lifecycle.wait(c, "not-running", timeout=10)
    wait_for(lambda: c.state.oom_killed, what="the exit record")
    assert rig.actions()[:2] == ["oom", "die"]


# ----------------------------------------------------------------------
# rename and remove


def test_rename(rig: Rig):
    c = rig.create("old")
    rig.lifecycle.rename(c, "new")
    assert rig.store.get("new") is c and c.name == "/new"
    with pytest.raises(NoSuchContainer):
        rig.store.get("old")
    with pytest.raises(InvalidParameter, match="same name as its current name"):
        rig.lifecycle.rename(c, "new")
    assert rig.actions()[-1] == "rename"


def test_remove_refuses_a_running_container_unless_forced(rig: Rig):
    c = rig.create("web")
    rig.lifecycle.start(c)
    with pytest.raises(Conflict, match="You cannot remove a running container"):
        rig.lifecycle.remove(c)
    anonymous = c.mounts[0]["Name"]
    rig.lifecycle.remove(c, force=True, volumes=True)
    assert c.removed and layers_of(rig, c.id) == [] and not os.path.exists(c.root)
    assert not rig.daemon.volumes.exists(anonymous)
    assert rig.create("web").name == "/web"
    with pytest.raises(NoSuchContainer):
        rig.lifecycle.remove(c)
    assert "destroy" in rig.actions()


# ----------------------------------------------------------------------
# restore at daemon start


def restarted(rig: Rig) -> LifeCycle:
    """A second life cycle over the same root and link graph: the daemon after a restart."""
    return rig.restart_daemon()


def test_restore_records_a_container_whose_shim_died_while_the_daemon_was_down(rig: Rig):
    c = rig.create("web")
    rig.lifecycle.start(c)
    rig.lifecycle.monitor.stop()  # the daemon dies: nobody hears of the exit
    rig.driver.exit(c.id, 7)
    restarted(rig)
    again = rig.store.get("web")
    assert again is not c and again.state.status == "exited" and again.state.exit_code == 7


def test_restore_without_an_exit_record_says_so(rig: Rig):
    c = rig.create("web")
    rig.lifecycle.start(c)
    rig.lifecycle.monitor.stop()
    proc = rig.driver.stand_ins.pop(c.id)
    proc.kill()
    proc.wait()
    restarted(rig)
    again = rig.store.get("web")
    assert again.state.exit_code == 255 and "died while the daemon was down" in again.state.error


@pytest.mark.root("network namespaces")
def test_restore_starts_what_the_policies_say_links_first(rig: Rig):
    """Creates: network namespaces under the rig's root (removed with the containers' exits)."""
    db = rig.create("db", NetworkMode="none", RestartPolicy={"Name": "always"})
    web = rig.create("web", NetworkMode="none", RestartPolicy={"Name": "always"}, Links=["db:db"])
    rig.create("never", RestartPolicy={"Name": "always"})  # never started: stays created
    manual = rig.create("manual", RestartPolicy={"Name": "unless-stopped"})
    for c in (web, db, manual):
        rig.lifecycle.start(c)
    rig.lifecycle.stop(manual)
    rig.lifecycle.monitor.stop()
    for c in (web, db):
        rig.driver.exit(c.id, 0)
    rig.launcher.specs.clear()
    restarted(rig)
    started = [spec["command"]["id"] for spec in rig.launcher.specs]
    assert started == [db.id, web.id]
    assert rig.store.get("never").state.status == "created"
    assert rig.store.get("manual").state.status == "exited"


def test_restore_skips_an_unreadable_record(rig: Rig):
    c = rig.create("web")
    os.makedirs(os.path.join(rig.store.dir, "f" * 64))
    restarted(rig)
    assert [x.id for x in rig.store.all()] == [c.id]
