"""The cgroup manager against this host's real cgroups (v1 here; v2 on the hybrid mount where possible).

Cgroups are not namespaced by the test sandbox, so every test works below a
unique parent ``engine-test-<random>`` created by the ``cgroup_parent`` fixture
(which makes a test a ``root`` test, see the top conftest.py),
which destroys every cgroup the test made and then the parent itself, also
when the test fails. Processes put into cgroups are busybox children of the
test, killed by the same finalizer.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from engine.drivers.exec import Resources
from engine.errors import HostError, InvalidParameter, NotSupported
from engine.sys import cgroups
from engine.sys.cgroups import DEFAULT_DEVICE_RULES, Cgroup, DeviceRule, parse_cpuset

BUSYBOX = "/bin/busybox"


# --------------------------------------------------------------------------
# pure parts


MOUNTINFO_V1 = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

MOUNTINFO_V2 = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
"""

MOUNTINFO_NESTED = """\
35 31 0:32 /docker/abc /sys/fs/cgroup/my\\040memory ro,relatime - cgroup cgroup rw,memory
"""


def test_read_layout_v1_hybrid(tmp_path) -> None:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO_V1)
    layout = cgroups.read_layout(str(path))
    assert layout.version == 1
    assert set(layout.v1) == {"cpu", "cpuacct", "memory"}
    assert layout.v1["cpu"] is layout.v1["cpuacct"]
    assert layout.v1["cpu"].mount_point == "/sys/fs/cgroup/cpu,cpuacct"
    assert layout.v2 is not None and layout.v2.mount_point == "/sys/fs/cgroup/unified"
    assert layout.has("memory") and not layout.has("pids")


def test_read_layout_v2(tmp_path) -> None:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO_V2)
    layout = cgroups.read_layout(str(path))
    assert layout.version == 2
    assert layout.v1 == {}
    assert layout.v2 is not None and layout.v2.mount_point == "/sys/fs/cgroup"
    assert layout.has("freezer")


def test_every_hierarchy_is_joined_and_shown_inside(tmp_path) -> None:
    """As runc's cgroupfs manager: the named (name=systemd) and hybrid v2 hierarchies too, so
    /proc/PID/cgroup reads /docker/<id> on every line; inside, one mount per mounted hierarchy."""
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO_V1)
    layout = cgroups.read_layout(str(path))
    assert set(layout.named) == {"name=systemd"}
    cg = Cgroup("/docker", "c1", layout=layout, own={})
    assert cg.paths == {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct/docker/c1",
        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct/docker/c1",
        "memory": "/sys/fs/cgroup/memory/docker/c1",
        "name=systemd": "/sys/fs/cgroup/systemd/docker/c1",
        "": "/sys/fs/cgroup/unified/docker/c1",
    }
    assert cg.mount_sources() == [
        ("cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/docker/c1"),
        ("memory", "/sys/fs/cgroup/memory/docker/c1"),
        ("systemd", "/sys/fs/cgroup/systemd/docker/c1"),
    ]
    # A relative parent is below the caller's own cgroup in each hierarchy (a nested memory one).
    cg = Cgroup("engine", "c1", layout=layout, own={"memory": "/process_api/x", "cpu": "/", "cpuacct": "/"})
    assert cg.paths["memory"] == "/sys/fs/cgroup/memory/process_api/x/engine/c1"
    assert cg.paths["cpu"] == "/sys/fs/cgroup/cpu,cpuacct/engine/c1"
    path.write_text(MOUNTINFO_V2)
    v2 = Cgroup("/docker", "c1", layout=cgroups.read_layout(str(path)), own={})
    assert v2.mount_sources() == [("", "/sys/fs/cgroup/docker/c1")]


def test_nested_mount_root_and_escapes(tmp_path) -> None:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO_NESTED)
    layout = cgroups.read_layout(str(path))
    mount = layout.v1["memory"]
    assert mount.mount_point == "/sys/fs/cgroup/my memory"
    assert mount.root == "/docker/abc"
    cg = Cgroup("/docker/abc/engine", "c1", layout=layout, own={})
    assert cg.paths == {"memory": "/sys/fs/cgroup/my memory/engine/c1"}
    with pytest.raises(HostError, match="outside of the hierarchy"):
        Cgroup("/elsewhere", "c1", layout=layout, own={})


def test_own_cgroups(tmp_path) -> None:
    path = tmp_path / "cgroup"
    path.write_text("9:name=systemd:/\n4:memory:/user/x\n2:cpu,cpuacct:/a\n0::/init.scope\n")
    assert cgroups.own_cgroups(str(path)) == {
        "name=systemd": "/",
        "memory": "/user/x",
        "cpu": "/a",
        "cpuacct": "/a",
        "": "/init.scope",
    }


def test_relative_and_absolute_parents(tmp_path) -> None:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO_V1)
    layout = cgroups.read_layout(str(path))
    own = {"memory": "/user/x", "cpu": "/a", "cpuacct": "/a", "": "/init.scope"}
    relative = Cgroup("engine", "c1", layout=layout, own=own)
    assert relative.paths["memory"] == "/sys/fs/cgroup/memory/user/x/engine/c1"
    assert relative.paths["cpu"] == "/sys/fs/cgroup/cpu,cpuacct/a/engine/c1"
    absolute = Cgroup("/docker", "c1", layout=layout, own=own)
    assert absolute.paths["memory"] == "/sys/fs/cgroup/memory/docker/c1"
    # v2: relative parents go below the parent of the caller's cgroup (runc's rule).
    v2 = Cgroup("engine", "c1", layout=layout, own=own, version=2)
    assert v2.paths == {"": "/sys/fs/cgroup/unified/engine/c1"}
    with pytest.raises(InvalidParameter):
        Cgroup("../escape", "c1", layout=layout, own=own)
    with pytest.raises(InvalidParameter):
        Cgroup("engine", "a/b", layout=layout, own=own)


def test_state_round_trip(tmp_path) -> None:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO_V1)
    layout = cgroups.read_layout(str(path))
    cg = Cgroup("engine", "c1", layout=layout, own={"memory": "/user/x"})
    again = Cgroup.from_state(cg.to_state(), layout=layout)
    assert again.paths == cg.paths and again.version == 1 and again.id == "c1"


def test_state_gets_the_mounts_only_when_needed_and_once(tmp_path) -> None:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO_V1)
    layout = cgroups.read_layout(str(path))
    state = Cgroup("engine", "c1", layout=layout, own={"memory": "/user/x"}).to_state()
    asked: list[int] = []

    def provide() -> cgroups.CgroupLayout:
        asked.append(1)
        return layout

    again = Cgroup.from_state(state, layout=provide)
    assert not again.exists() and again.pids() == [] and again.kill() == 0  # by the recorded paths
    assert asked == []
    assert again.layout is layout and again.layout is layout
    assert asked == [1]


def test_parse_cpuset() -> None:
    assert parse_cpuset("0-2,4") == {0, 1, 2, 4}
    assert parse_cpuset("") == set()
    with pytest.raises(InvalidParameter, match="Invalid value 0-x for cpuset cpus"):
        parse_cpuset("0-x")
    with pytest.raises(InvalidParameter):
        parse_cpuset("3-1")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("c 1:3 rwm", "c 1:3 rwm"),
        ("b *:* m", "b *:* m"),
        ("c 136:* wr", "c 136:* rw"),
        ("a", "a *:* rwm"),
    ],
)
def test_device_rule_parse(text: str, expected: str) -> None:
    assert str(DeviceRule.parse(text)) == expected


@pytest.mark.parametrize("text", ["x 1:3 rwm", "c 1 rwm", "c 1:3", "c 1:3 rwx", "c a:3 r", "c 1:3 rr"])
def test_device_rule_invalid(text: str) -> None:
    with pytest.raises(InvalidParameter):
        DeviceRule.parse(text)


def test_default_device_rules_are_dockers() -> None:
    assert [str(DeviceRule.parse(r)) for r in DEFAULT_DEVICE_RULES] == [
        "c *:* m",
        "b *:* m",
        "c 1:3 rwm",
        "c 1:5 rwm",
        "c 1:7 rwm",
        "c 1:8 rwm",
        "c 1:9 rwm",
        "c 5:0 rwm",
        "c 5:1 rwm",
        "c 5:2 rwm",
        "c 136:* rwm",
        "c 10:200 rwm",
    ]


# --------------------------------------------------------------------------
# against the kernel


@pytest.fixture
def cgroup_parent() -> Iterator[dict]:
    """A unique cgroup parent ``engine-test-<hex>``.

    Creates: nothing by itself; the cgroups made through ``ctx["make"]`` and
    the processes started through ``ctx["spawn"]``. Finalizer: kills those
    processes, destroys every cgroup, then removes the parent directories
    (v1 and, if used, v2) and asserts none is left.
    """
    name = f"engine-test-{secrets.token_hex(4)}"
    made: list[Cgroup] = []
    procs: list[subprocess.Popen] = []

    def make(id: str = "c1", **kw) -> Cgroup:
        cg = Cgroup(name, id, **kw)
        made.append(cg)
        return cg

    def spawn(cg: Cgroup | None, script: str, **kw) -> subprocess.Popen:
        """Start ``busybox sh -c script``; it waits for one line on stdin
        (sent once it is in ``cg``) before running ``script``."""
        proc = subprocess.Popen(
            [BUSYBOX, "sh", "-c", "read go; " + script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **kw,
        )
        procs.append(proc)
        if cg is not None:
            cg.add(proc.pid)
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        return proc

    ctx = {"name": name, "make": make, "spawn": spawn}
    try:
        yield ctx
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        errors = []
        for cg in made:
            try:
                cg.destroy()
            except Exception as exc:  # keep cleaning the rest
                errors.append(exc)
        versions = {cg.version for cg in made} or {1}
        for version in versions:
            cgroups.remove_parent(name, version=version)
            assert not Cgroup("", name, version=version).exists()
        assert not errors, errors


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read().strip()


def test_create_exists_destroy(cgroup_parent) -> None:
    cg = cgroup_parent["make"]()
    assert not cg.exists()
    cg.create()
    assert cg.exists()
    for controller, path in cg.paths.items():
        assert os.path.isdir(path), controller
    # A v1 cpuset is usable only with cpus and mems: copied from the parent.
    cpuset = cg.path("cpuset")
    assert cpuset is not None
    assert _read(os.path.join(cpuset, "cpuset.cpus")) == _read("/sys/fs/cgroup/cpuset/cpuset.cpus")
    assert _read(os.path.join(cpuset, "cpuset.mems")) != ""
    cg.destroy()
    assert not cg.exists()
    cg.destroy()  # idempotent


def test_apply_writes_limits(cgroup_parent) -> None:
    cg = cgroup_parent["make"]()
    cg.create()
    cg.apply(
        Resources(
            memory=64 << 20,
            memory_swap=128 << 20,
            memory_reservation=32 << 20,
            memory_swappiness=10,
            cpu_shares=512,
            cpu_period=100000,
            cpu_quota=50000,
            cpuset_cpus="0",
            cpuset_mems="0",
            pids_limit=20,
            blkio_weight=300,
        )
    )
    mem = cg.path("memory")
    assert _read(f"{mem}/memory.limit_in_bytes") == str(64 << 20)
    assert _read(f"{mem}/memory.memsw.limit_in_bytes") == str(128 << 20)
    assert _read(f"{mem}/memory.soft_limit_in_bytes") == str(32 << 20)
    assert _read(f"{mem}/memory.swappiness") == "10"
    cpu = cg.path("cpu")
    assert _read(f"{cpu}/cpu.shares") == "512"
    assert _read(f"{cpu}/cpu.cfs_period_us") == "100000"
    assert _read(f"{cpu}/cpu.cfs_quota_us") == "50000"
    assert _read(f"{cg.path('cpuset')}/cpuset.cpus") == "0"
    assert _read(f"{cg.path('pids')}/pids.max") == "20"
    blkio = cg.path("blkio")
    for name in ("blkio.weight", "blkio.bfq.weight"):
        if os.path.exists(f"{blkio}/{name}"):
            assert _read(f"{blkio}/{name}").split()[-1] == "300"
            break
    # The default allow-list, after "deny all".
    devices = _read(f"{cg.path('devices')}/devices.list").splitlines()
    assert sorted(devices) == sorted(DEFAULT_DEVICE_RULES)


def test_apply_oom_kill_disable_and_unlimited(cgroup_parent) -> None:
    cg = cgroup_parent["make"]()
    cg.create()
    cg.apply(Resources(memory=64 << 20, memory_swap=-1, oom_kill_disable=True, pids_limit=-1))
    mem = cg.path("memory")
    assert "oom_kill_disable 1" in _read(f"{mem}/memory.oom_control")
    assert int(_read(f"{mem}/memory.memsw.limit_in_bytes")) > 1 << 60
    assert _read(f"{cg.path('pids')}/pids.max") == "max"


def test_update_raises_memory_above_memsw(cgroup_parent) -> None:
    """memory.limit must stay <= memsw.limit at every write: the order flips when raising."""
    cg = cgroup_parent["make"]()
    cg.create()
    cg.apply(Resources(memory=32 << 20, memory_swap=32 << 20))
    cg.apply(Resources(memory=128 << 20, memory_swap=256 << 20), update=True)
    mem = cg.path("memory")
    assert _read(f"{mem}/memory.limit_in_bytes") == str(128 << 20)
    assert _read(f"{mem}/memory.memsw.limit_in_bytes") == str(256 << 20)
    cg.apply(Resources(memory=16 << 20, memory_swap=16 << 20), update=True)
    assert _read(f"{mem}/memory.limit_in_bytes") == str(16 << 20)
    assert _read(f"{mem}/memory.memsw.limit_in_bytes") == str(16 << 20)
    # update leaves device rules alone
    assert "a *:* rwm" not in _read(f"{cg.path('devices')}/devices.list")


@pytest.mark.parametrize(
    "resources, message",
    [
        (Resources(memory=1 << 20), "Minimum memory limit allowed is 6MB"),
        (
            Resources(memory=64 << 20, memory_swap=32 << 20),
            "Minimum memoryswap limit should be larger than memory limit",
        ),
        (Resources(memory_swap=64 << 20), "You should always set the Memory limit when using Memoryswap limit"),
        (
            Resources(memory=32 << 20, memory_reservation=64 << 20),
            "Minimum memory limit can not be less than memory reservation limit",
        ),
        (Resources(memory_swappiness=101), "valid memory swappiness range is 0-100"),
        (Resources(cpu_period=10), "CPU cfs period can not be less than 1ms"),
        (Resources(cpu_quota=10), "CPU cfs quota can not be less than 1ms"),
        (Resources(blkio_weight=5), "Range of blkio weight is from 10 to 1000"),
        (Resources(cpuset_cpus="0-4096"), "Requested CPUs are not available - requested 0-4096, available: "),
        (Resources(cpuset_mems="7"), "Requested memory nodes are not available - requested 7, available: "),
        (Resources(cpuset_cpus="zero"), "Invalid value zero for cpuset cpus"),
        (Resources(device_rules=["c 1:3 rwx"]), "invalid device cgroup rule"),
    ],
)
def test_validation(cgroup_parent, resources: Resources, message: str) -> None:
    cg = cgroup_parent["make"]()
    with pytest.raises(InvalidParameter, match=message.replace("(", r"\(").replace(".", r"\.")):
        cg.apply(resources)
    assert not cg.exists()  # validation happens before anything is written


def test_add_pids_and_proc_cgroup(cgroup_parent) -> None:
    cg = cgroup_parent["make"]()
    cg.create()
    proc = cgroup_parent["spawn"](cg, f"exec {BUSYBOX} sleep 60")
    assert proc.pid in cg.pids()
    text = _read(f"/proc/{proc.pid}/cgroup")
    assert f"freezer:/{cgroup_parent['name']}/c1" in text
    assert f"/{cgroup_parent['name']}/c1" in next(
        line.split(":", 2)[2] for line in text.splitlines() if ":memory:" in line
    )


def _utime(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[11])


def test_freeze_and_thaw(cgroup_parent) -> None:
    cg = cgroup_parent["make"]()
    cg.create()
    proc = cgroup_parent["spawn"](cg, "while :; do :; done")
    assert _wait_for(lambda: _utime(proc.pid) > 0)
    cg.freeze()
    assert cg.freezer_state() == "FROZEN"
    assert _read(f"{cg.path('freezer')}/freezer.state") == "FROZEN"
    before = _utime(proc.pid)
    time.sleep(0.3)
    assert _utime(proc.pid) == before, "a frozen busy loop must not run"
    cg.thaw()
    assert cg.freezer_state() == "THAWED"
    assert _wait_for(lambda: _utime(proc.pid) > before)


def test_oom_kill(cgroup_parent) -> None:
    cg = cgroup_parent["make"]()
    cg.create()
    cg.apply(Resources(memory=32 << 20, memory_swap=32 << 20))
    assert not cg.oom_killed()
    # dd's 64 MB buffer is touched by read(2) from /dev/zero: charged to the cgroup.
    proc = cgroup_parent["spawn"](cg, f"exec {BUSYBOX} dd if=/dev/zero of=/dev/null bs=64M count=1")
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert cg.oom_killed()


def test_pids_limit(cgroup_parent) -> None:
    cg = cgroup_parent["make"]()
    cg.create()
    cg.apply(Resources(pids_limit=3))
    proc = cgroup_parent["spawn"](
        cg, f"for i in 1 2 3 4 5 6; do {BUSYBOX} sleep 30 >/dev/null 2>&1 & done; echo forked"
    )
    _, err = proc.communicate(timeout=30)
    assert b"can't fork" in err or b"Resource temporarily unavailable" in err
    assert int(_read(f"{cg.path('pids')}/pids.current")) <= 3
    assert cg.stats()["pids_stats"]["limit"] == 3


def test_stats_shape(cgroup_parent) -> None:
    cg = cgroup_parent["make"]()
    cg.create()
    cg.apply(Resources(memory=64 << 20, pids_limit=10))
    # Burn some CPU, then hold about 1 MB of shell variable while sleeping.
    cgroup_parent["spawn"](
        cg,
        "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; "
        f"x=$({BUSYBOX} head -c 1000000 /dev/zero | {BUSYBOX} tr '\\0' a); "
        f"{BUSYBOX} sleep 60",
    )

    def sleeping() -> bool:
        try:
            return any(
                open(f"/proc/{pid}/cmdline", "rb").read().startswith(f"{BUSYBOX}\0sleep".encode()) for pid in cg.pids()
            )
        except FileNotFoundError:
            return False

    assert _wait_for(sleeping)
    stats = cg.stats()
    memory = stats["memory_stats"]
    assert memory["usage"] > 0 and memory["max_usage"] >= memory["usage"]
    assert memory["limit"] == 64 << 20
    assert "cache" in memory["stats"] and "rss" in memory["stats"]
    cpu = stats["cpu_stats"]
    assert cpu["cpu_usage"]["total_usage"] > 0
    assert len(cpu["cpu_usage"]["percpu_usage"]) >= 1
    assert cpu["system_cpu_usage"] > 0 and cpu["online_cpus"] >= 1
    assert set(cpu["throttling_data"]) == {"periods", "throttled_periods", "throttled_time"}
    assert stats["pids_stats"] == {"current": len(cg.pids()), "limit": 10}
    assert isinstance(stats["blkio_stats"]["io_service_bytes_recursive"], list)


def test_destroy_kills_tasks_even_when_frozen(cgroup_parent) -> None:
    cg = cgroup_parent["make"]()
    cg.create()
    procs = [cgroup_parent["spawn"](cg, f"exec {BUSYBOX} sleep 60") for _ in range(3)]
    cg.freeze()
    cg.destroy()
    for proc in procs:
        assert proc.wait(timeout=10) == -signal.SIGKILL
    assert not cg.exists()


def test_kill_sends_signal_to_all(cgroup_parent) -> None:
    cg = cgroup_parent["make"]()
    cg.create()
    procs = [cgroup_parent["spawn"](cg, f"exec {BUSYBOX} sleep 60") for _ in range(2)]
    assert cg.kill(signal.SIGTERM) == 2
    for proc in procs:
        assert proc.wait(timeout=10) == -signal.SIGTERM
    assert _wait_for(lambda: cg.pids() == [])


def test_kill_and_destroy_of_an_empty_cgroup_do_not_freeze_it(cgroup_parent, monkeypatch) -> None:
    cg = cgroup_parent["make"]()
    cg.create()

    def refuse(*_args: Any, **_kw: Any) -> None:
        raise AssertionError("an empty cgroup was frozen or thawed")

    monkeypatch.setattr(cg, "_set_frozen", refuse)
    assert cg.kill() == 0
    cg.destroy()
    assert not cg.exists()


def test_remove_parent_refuses_root() -> None:
    with pytest.raises(InvalidParameter):
        cgroups.remove_parent("/")


def test_remove_parent_refuses_while_containers_remain(cgroup_parent) -> None:
    cg = cgroup_parent["make"]()
    cg.create()
    with pytest.raises(HostError, match="still holds c1"):
        cgroups.remove_parent(cgroup_parent["name"])
    assert cg.exists()


def test_update_memory_above_memsw_needs_memsw(cgroup_parent) -> None:
    cg = cgroup_parent["make"]()
    cg.create()
    cg.apply(Resources(memory=32 << 20, memory_swap=32 << 20))
    with pytest.raises(InvalidParameter, match="update the memoryswap at the same time"):
        cg.apply(Resources(memory=64 << 20), update=True)


@pytest.fixture
def v2_available() -> None:
    layout = cgroups.read_layout()
    if layout.v2 is None or not os.access(layout.v2.mount_point, os.W_OK):
        pytest.skip("no writable cgroup v2 mount")


def test_v2_lifecycle_on_hybrid_mount(cgroup_parent, v2_available) -> None:
    """The v2 paths (cgroup.procs, cgroup.freeze, cgroup.kill) on the hybrid host's v2 mount."""
    cg = cgroup_parent["make"](version=2)
    cg.create()
    assert cg.version == 2 and os.path.isdir(cg.paths[""])
    proc = cgroup_parent["spawn"](cg, "while :; do :; done")
    assert cg.pids() == [proc.pid]
    cg.freeze()
    assert cg.freezer_state() == "FROZEN"
    before = _utime(proc.pid)
    time.sleep(0.3)
    assert _utime(proc.pid) == before
    cg.thaw()
    assert cg.freezer_state() == "THAWED"
    assert not cg.oom_killed()
    stats = cg.stats()
    assert "cpu_stats" in stats and stats["cpu_stats"]["cpu_usage"]["total_usage"] >= 0
    layout = cgroups.read_layout()
    if "memory" not in layout.v2_controllers:
        with pytest.raises(NotSupported, match="memory controller is not available"):
            cg.apply(Resources(memory=64 << 20))
    cg.destroy()
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert not cg.exists()
