"""Runtime names, the init and ulimits (engine.daemon.runtime), pure, with a scratch PATH."""

from __future__ import annotations

import os

import pytest

from engine.daemon import runtime
from engine.errors import InvalidParameter, NotFound


def test_runc_is_the_default_exec_driver():
    hc: dict = {}
    runtime.check_runtime(hc, "native")
    assert hc["Runtime"] == "runc"
    for name in ("runc", "native"):
        hc = {"Runtime": name}
        runtime.check_runtime(hc, "native")
        assert hc["Runtime"] == name
    with pytest.raises(InvalidParameter, match="Unknown runtime specified lxc"):
        runtime.check_runtime({"Runtime": "lxc"}, "native")
    assert runtime.runtimes("native", "m") == {"native": {"path": "m"}, "runc": {"path": "m"}}


def test_init_only_in_a_pid_namespace_of_its_own():
    assert runtime.uses_init({"Init": True}, False)
    assert runtime.uses_init({}, True) and not runtime.uses_init({"Init": False}, True)
    assert not runtime.uses_init({"Init": True, "PidMode": "host"}, False)
    assert not runtime.uses_init({"Init": True, "PidMode": "container:web"}, False)


def test_find_init_on_the_path(tmp_path):
    with pytest.raises(NotFound, match='exec: "docker-init": executable file not found in \\$PATH'):
        runtime.find_init("", str(tmp_path))
    tini = tmp_path / "tini-static"
    tini.write_text("#!/bin/sh\necho tini version 0.19.0 - git.de40ad0\n")
    os.chmod(tini, 0o755)
    assert runtime.find_init("", str(tmp_path)) == str(tini)
    assert runtime.init_version(str(tini)) == "de40ad0"
    docker_init = tmp_path / "docker-init"
    docker_init.write_text("#!/bin/sh\necho tini version 0.19.0\n")
    os.chmod(docker_init, 0o755)
    assert runtime.find_init("", str(tmp_path)) == str(docker_init)  # Docker's name first
    assert runtime.init_version(str(docker_init)) == ""  # a build that names no commit
    assert runtime.find_init(str(tini), "") == str(tini)
    with pytest.raises(NotFound):
        runtime.find_init(str(tmp_path / "nosuch"), "")


def test_ulimits_merge_the_daemon_defaults():
    defaults = {
        "nofile": {"Name": "nofile", "Soft": 1024, "Hard": 2048},
        "nproc": {"Name": "nproc", "Soft": 100, "Hard": 200},
    }
    hc = {"Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 20}]}
    merged = runtime.merged_ulimits(hc, defaults)
    assert merged == [{"Name": "nofile", "Soft": 10, "Hard": 20}, {"Name": "nproc", "Soft": 100, "Hard": 200}]
    assert runtime.rlimits(merged)[0] == {"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}


def test_cgroup_driver_and_parent():
    from engine.daemon.config import Config

    assert runtime.cgroup_driver(Config()) == "cgroupfs"
    assert runtime.default_cgroup_parent(Config()) == "/docker"
    systemd = Config(exec_opts=["native.cgroupdriver=systemd"])
    assert runtime.cgroup_driver(systemd) == "systemd"
    assert runtime.default_cgroup_parent(systemd) == "system.slice"
    assert runtime.default_cgroup_parent(Config(cgroup_parent="/ci")) == "/ci"
    options = runtime.command_options({"CgroupParent": "mine"}, Config())
    assert options["cgroup_parent"] == "mine" and options["init_binary"] == ""
    runtime.check_cgroup_parent("/anything", Config())
    runtime.check_cgroup_parent("my.slice", systemd)
    with pytest.raises(InvalidParameter, match='should be a valid slice named as "xxx.slice"'):
        runtime.check_cgroup_parent("/docker", systemd)


def test_the_exec_driver_chooses_the_default_parent():
    from engine.daemon.config import Config

    class BelowTheDaemon:
        default_cgroup_parent = "engine"

    assert runtime.default_cgroup_parent(Config(), BelowTheDaemon()) == "engine"
    assert runtime.default_cgroup_parent(Config(cgroup_parent="/ci"), BelowTheDaemon()) == "/ci"
