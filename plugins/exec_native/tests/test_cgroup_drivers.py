"""The native driver's cgroup drivers (--exec-opt native.cgroupdriver): options, the systemd
driver's names, and its refusal where systemd is not the init (this machine)."""

from __future__ import annotations

import pytest

from engine.drivers.exec import Command, ProcessConfig
from engine.errors import HostError, NotSupported, PrerequisitesNotMet
from engine_exec_native import systemd
from engine_exec_native.driver import NativeDriver, parse_options


def test_options():
    assert parse_options([]) == {"native.cgroupdriver": "cgroupfs"}
    assert parse_options(["native.cgroupdriver=systemd"]) == {"native.cgroupdriver": "systemd"}
    with pytest.raises(NotSupported, match="native.cgroupdriver option none not supported"):
        parse_options(["native.cgroupdriver=none"])
    with pytest.raises(NotSupported, match="unknown exec option"):
        parse_options(["bogus=1"])


def test_systemd_names():
    assert systemd.scope_name("abc") == "docker-abc.scope"
    assert systemd.slice_path("system.slice") == "/system.slice"
    assert systemd.slice_path("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    with pytest.raises(HostError, match="valid slice"):
        systemd.slice_path("/docker")


def test_systemd_cgroup_of_a_container(tmp_path):
    driver = NativeDriver(str(tmp_path), ["native.cgroupdriver=systemd"])
    assert driver.info()["cgroup_driver"] == "systemd"
    cmd = Command(id="c" * 64, rootfs="/", process=ProcessConfig(args=["true"]), cgroup_parent="")
    cg = driver._new_cgroup(cmd)
    assert cg.id == f"docker-{'c' * 64}.scope" and cg.parent == "/system.slice"
    memory = cg.path("memory")
    assert memory is None or memory.endswith(f"/system.slice/docker-{'c' * 64}.scope")


def test_systemd_unavailable_says_why(tmp_path):
    reason = systemd.unavailable(runtime_dir=str(tmp_path / "no-systemd"))
    assert reason is not None and "systemd is not the init of this host" in reason
    bus = tmp_path / "bus"
    (tmp_path / "systemd").mkdir()
    reason = systemd.unavailable(runtime_dir=str(tmp_path / "systemd"), bus=str(bus))
    assert reason is not None and "D-Bus socket" in reason


@pytest.mark.skipif(systemd.unavailable() is None, reason="systemd runs here: the probe accepts it")
def test_probe_refuses_systemd_without_systemd(tmp_path):
    with pytest.raises(PrerequisitesNotMet, match="the systemd cgroup driver cannot work here: systemd is not"):
        NativeDriver.probe(str(tmp_path), ["native.cgroupdriver=systemd"])
