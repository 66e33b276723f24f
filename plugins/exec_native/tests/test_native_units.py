"""The pure parts of the native driver: users, capabilities, devices, masked paths, mount options, lookup.

Nothing here needs root or touches the kernel beyond reading files in
``tmp_path`` (and /proc/self for the bounding set).
"""

from __future__ import annotations

import os

import pytest

from engine.drivers.exec import Command, ProcessConfig, Resources
from engine.errors import InvalidParameter, NotFound
from engine.sys import libc
from engine.sys.cgroups import DEFAULT_DEVICE_RULES
from engine.sys.security import caps
from engine.sys.security.users import UserError, parse_group, parse_passwd, resolve_user
from engine_exec_native import spec
from engine_exec_native.init import ExecError, lookup
from engine_exec_native.rootfs import secure_join, split_options

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
broken line
dup:x:33:44::/dup:/bin/sh
alice:x:1000:1000:Alice:/home/alice:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = """\
root:x:0:
wheel:x:10:root,alice
audio:x:29:alice
www-data:x:33:
alice:x:1000:
staff:x:50:
"""


@pytest.fixture
def files(tmp_path) -> tuple[str, str]:
    passwd, group = tmp_path / "passwd", tmp_path / "group"
    passwd.write_text(PASSWD)
    group.write_text(GROUP)
    return str(passwd), str(group)


# --------------------------------------------------------------------------
# users


def test_parse_files() -> None:
    users = parse_passwd(PASSWD)
    assert [u.name for u in users] == ["root", "daemon", "www-data", "dup", "alice", "nobody"]
    groups = parse_group(GROUP)
    assert groups[1].name == "wheel" and groups[1].members == ("root", "alice")


@pytest.mark.parametrize(
    "spec_, uid, gid, home, sgids",
    [
        ("", 0, 0, "/root", [10]),  # root, and wheel lists root
        ("root", 0, 0, "/root", [10]),
        ("alice", 1000, 1000, "/home/alice", [10, 29]),
        ("1000", 1000, 1000, "/home/alice", [10, 29]),
        ("www-data", 33, 33, "/var/www", []),
        ("33", 33, 33, "/var/www", []),  # the first entry with uid 33 wins
        ("alice:staff", 1000, 50, "/home/alice", []),  # an explicit group: no supplementary groups
        ("alice:29", 1000, 29, "/home/alice", []),
        ("4242", 4242, 0, "/", []),  # numeric and unknown: fine
        ("4242:4343", 4242, 4343, "/", []),
        ("0:wheel", 0, 10, "/root", []),
    ],
)
def test_resolve_user(files, spec_: str, uid: int, gid: int, home: str, sgids: list[int]) -> None:
    user = resolve_user(spec_, *files)
    assert (user.uid, user.gid, user.home, user.sgids) == (uid, gid, home, sgids)


def test_resolve_user_errors(files) -> None:
    with pytest.raises(UserError, match="^unable to find user bob: no matching entries in passwd file$"):
        resolve_user("bob", *files)
    with pytest.raises(UserError, match="^unable to find group nogroup: no matching entries in group file$"):
        resolve_user("alice:nogroup", *files)
    with pytest.raises(UserError, match="must be in range"):
        resolve_user("-5", *files)
    with pytest.raises(UserError, match="Unable to find group missing"):
        resolve_user("alice", files[0], files[1], additional_groups=["missing"])
    assert isinstance(UserError("x"), InvalidParameter)


def test_additional_groups(files) -> None:
    user = resolve_user("www-data", files[0], files[1], additional_groups=["staff", "10", "777", "staff"])
    assert user.sgids == [50, 10, 777]


def test_missing_files(tmp_path) -> None:
    missing = str(tmp_path / "nope")
    assert resolve_user("", missing, missing).uid == 0
    assert resolve_user("1000:1000", missing, missing).gid == 1000
    with pytest.raises(UserError, match="unable to find user alice"):
        resolve_user("alice", missing, missing)


# --------------------------------------------------------------------------
# capabilities


def test_default_mask_is_dockers() -> None:
    assert f"{caps.to_mask(caps.DEFAULT_CAPABILITIES):016x}" == "00000000a80425fb"


def test_names_and_masks() -> None:
    assert caps.CAPABILITIES[21] == "CAP_SYS_ADMIN" and caps.CAPABILITIES[40] == "CAP_CHECKPOINT_RESTORE"
    assert caps.from_mask(caps.to_mask(["CAP_KILL", "CAP_CHOWN"])) == ["CAP_CHOWN", "CAP_KILL"]
    assert caps.normalize(["net_admin", "CAP_SYS_TIME", "all", "NET_ADMIN"]) == ["CAP_NET_ADMIN", "CAP_SYS_TIME", "ALL"]
    with pytest.raises(InvalidParameter, match='unknown capability: "CAP_FLY"'):
        caps.normalize(["fly"])


ALL_CAPS = list(caps.CAPABILITIES)


@pytest.mark.parametrize(
    "adds, drops, privileged, expected",
    [
        ([], [], False, list(caps.DEFAULT_CAPABILITIES)),
        ([], [], True, ALL_CAPS),
        (
            ["NET_ADMIN"],
            ["CHOWN"],
            False,
            [c for c in caps.DEFAULT_CAPABILITIES if c != "CAP_CHOWN"] + ["CAP_NET_ADMIN"],
        ),
        (["ALL"], ["SYS_ADMIN"], False, [c for c in ALL_CAPS if c != "CAP_SYS_ADMIN"]),
        (["NET_RAW", "kill"], ["ALL"], False, ["CAP_NET_RAW", "CAP_KILL"]),
        ([], ["ALL"], False, []),
        (["ALL"], [], True, ALL_CAPS),
    ],
)
def test_tweak(adds: list[str], drops: list[str], privileged: bool, expected: list[str]) -> None:
    assert caps.tweak(caps.DEFAULT_CAPABILITIES, adds, drops, privileged, ALL_CAPS) == expected


def test_available_within_bounding_set() -> None:
    bounding = caps.to_mask(caps.DEFAULT_CAPABILITIES)
    assert caps.available(bounding, 40) == [c for c in caps.CAPABILITIES if c in caps.DEFAULT_CAPABILITIES]
    assert caps.available((1 << 41) - 1, 37) == list(caps.CAPABILITIES[:38])


def test_capability_mask_refuses_what_the_engine_lacks(monkeypatch) -> None:
    monkeypatch.setattr(
        caps, "bounding_set", lambda status="/proc/self/status": caps.to_mask(caps.DEFAULT_CAPABILITIES)
    )
    assert spec.capability_mask(True, [], []) == caps.to_mask(caps.DEFAULT_CAPABILITIES)
    with pytest.raises(InvalidParameter, match="cannot grant CAP_SYS_ADMIN"):
        spec.capability_mask(False, ["SYS_ADMIN"], [])


# --------------------------------------------------------------------------
# devices, masked paths, plans


def _command(**kw) -> Command:
    process_fields = {k: kw.pop(k) for k in list(kw) if k in ProcessConfig.fields()}
    return Command(id="c1", rootfs="/", process=ProcessConfig(args=["true"], **process_fields), **kw)


def test_masked_path_selection() -> None:
    assert spec.masked_paths(_command()) == list(spec.DEFAULT_MASKED_PATHS)
    assert spec.readonly_paths(_command()) == list(spec.DEFAULT_READONLY_PATHS)
    assert spec.masked_paths(_command(privileged=True)) == []
    assert spec.readonly_paths(_command(privileged=True)) == []
    assert spec.masked_paths(_command(masked_paths=["/proc/x"])) == ["/proc/x"]
    assert spec.masked_paths(_command(masked_paths=[])) == []
    assert "/proc/kcore" in spec.DEFAULT_MASKED_PATHS and "/proc/sys" in spec.DEFAULT_READONLY_PATHS


def test_device_rules() -> None:
    devices = spec.resolve_devices([{"path_on_host": "/dev/null", "path_in_container": "/dev/n", "permissions": "rw"}])
    assert devices == [
        {
            "path": "/dev/n",
            "type": "c",
            "major": 1,
            "minor": 3,
            "mode": devices[0]["mode"],
            "uid": 0,
            "gid": 0,
            "permissions": "rw",
        }
    ]
    assert spec.device_rules(_command(), devices) == list(DEFAULT_DEVICE_RULES) + ["c 1:3 rw"]
    assert spec.device_rules(_command(privileged=True), devices) == ["a *:* rwm"]
    custom = _command(resources=Resources(device_rules=["c 4:* rwm"]))
    assert spec.device_rules(custom, []) == ["c 4:* rwm"]
    assert spec.cgroup_resources(custom, [])


def test_resolve_devices_errors(tmp_path) -> None:
    with pytest.raises(NotFound, match='error gathering device information while adding custom device "/dev/nope"'):
        spec.resolve_devices([{"path_on_host": "/dev/nope"}])
    regular = tmp_path / "file"
    regular.write_text("")
    with pytest.raises(InvalidParameter, match="not a device"):
        spec.resolve_devices([{"path_on_host": str(regular)}])
    with pytest.raises(InvalidParameter, match="invalid device permissions"):
        spec.resolve_devices([{"path_on_host": "/dev/null", "permissions": "rwx"}])


def test_host_devices_skip_per_container_ones() -> None:
    paths = {d["path"] for d in spec.host_devices()}
    assert "/dev/null" in paths
    assert not any(p.startswith(("/dev/pts/", "/dev/shm/")) for p in paths)
    assert "/dev/console" not in paths and "/dev/ptmx" not in paths


def test_namespaces_and_modes(tmp_path) -> None:
    assert spec._namespaces(_command()) == {"net": None, "ipc": "new", "uts": True}
    assert spec._namespaces(_command(network={"mode": "none"}))["net"] == "new"
    assert spec._namespaces(_command(ipc_mode="host", uts_mode="host")) == {"net": None, "ipc": None, "uts": False}
    path = tmp_path / "ns"
    path.write_text("")
    assert spec._namespaces(_command(network={"mode": "bridge", "path": str(path)}))["net"] == str(path)
    assert spec._namespaces(_command(ipc_mode=f"container:{path}"))["ipc"] == str(path)
    with pytest.raises(InvalidParameter, match="needs the path"):
        spec._namespaces(_command(network={"mode": "bridge"}))
    with pytest.raises(NotFound):
        spec._namespaces(_command(network={"mode": "container", "path": str(tmp_path / "gone")}))
    with pytest.raises(InvalidParameter):
        spec._namespaces(_command(ipc_mode="bogus"))
    with pytest.raises(InvalidParameter):
        spec._namespaces(_command(pid_mode="bogus"))
    with pytest.raises(NotFound):  # another container's PID namespace that is gone
        spec._namespaces(_command(pid_mode=f"container:{tmp_path / 'gone'}"))
    assert spec._namespaces(_command(pid_mode=f"container:{path}"))["ipc"] == "new"
    assert spec._namespaces(_command(ipc_mode="none"))["ipc"] == "new"


def test_process_plan() -> None:
    container = ProcessConfig(args=["sleep"], cap_drop=["ALL"], no_new_privileges=True)
    plan = spec.build_process_plan(ProcessConfig(args=["id"], user="alice"), container)
    assert plan["caps"] == 0 and plan["no_new_privileges"] and plan["user"] == "alice"
    assert not plan["create_cwd"]
    with pytest.raises(InvalidParameter, match="no command specified"):
        spec.build_process_plan(ProcessConfig(args=[]))


def test_mounts_plan(tmp_path) -> None:
    plan = spec._mounts(
        _command(
            mounts=[{"type": "bind", "source": str(tmp_path), "destination": "/d"}], tmpfs={"/run": "size=1m,exec"}
        )
    )
    assert plan[0]["is_dir"] and plan[0]["type"] == "bind"
    assert plan[1] == {
        "type": "tmpfs",
        "source": "tmpfs",
        "destination": "/run",
        "options": ["noexec", "nosuid", "nodev", "size=1m", "exec"],
    }
    with pytest.raises(InvalidParameter, match="bind source path does not exist"):
        spec._mounts(_command(mounts=[{"type": "bind", "source": str(tmp_path / "x"), "destination": "/d"}]))
    with pytest.raises(InvalidParameter, match="not an absolute path"):
        spec._mounts(_command(mounts=[{"type": "tmpfs", "destination": "rel"}]))


def test_split_options() -> None:
    flags, propagation, data = split_options(["noexec", "nosuid", "nodev", "size=1m", "exec", "rslave", "mode=1777"])
    assert flags == libc.MS_NOSUID | libc.MS_NODEV
    assert propagation == libc.MS_SLAVE | libc.MS_REC
    assert data == "size=1m,mode=1777"
    assert split_options(["rbind", "ro"])[0] == libc.MS_BIND | libc.MS_REC | libc.MS_RDONLY


# --------------------------------------------------------------------------
# paths and lookup


def test_secure_join(tmp_path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "abs").symlink_to("/etc")
    (root / "up").symlink_to("../../../../outside")
    (root / "etc" / "loop").symlink_to("loop")
    r = str(root)
    assert secure_join(r, "/abs/passwd") == f"{r}/etc/passwd"
    assert secure_join(r, "/up/x") == f"{r}/outside/x"
    assert secure_join(r, "/../../etc") == f"{r}/etc"
    assert secure_join(r, "/new/dir") == f"{r}/new/dir"
    with pytest.raises(Exception, match="too many levels"):
        secure_join(r, "/etc/loop/x")


def test_lookup(tmp_path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    plain = bin_dir / "plain"
    plain.write_text("")
    plain.chmod(0o644)
    env = [f"PATH=/nonexistent:{bin_dir}"]
    assert lookup("tool", env) == str(tool)
    assert lookup(str(tool), []) == str(tool)
    with pytest.raises(ExecError, match=r'^exec: "plain": executable file not found in \$PATH$'):
        lookup("plain", env)
    # no execute bit at all: refused even for root (access(2) with X_OK)
    with pytest.raises(ExecError, match=rf'^exec: "{plain}": permission denied$'):
        lookup(str(plain), env)
    with pytest.raises(ExecError, match=rf'^exec: "{tmp_path}/none": stat {tmp_path}/none: no such file or directory$'):
        lookup(f"{tmp_path}/none", env)
    with pytest.raises(ExecError, match="is a directory"):
        lookup(str(bin_dir), env)


# --------------------------------------------------------------------------
# probing


def test_probe_lists_reasons(monkeypatch, tmp_path) -> None:
    from engine.errors import PrerequisitesNotMet
    from engine.sys import cgroups
    from engine_exec_native.driver import NativeDriver

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(cgroups, "read_layout", lambda mountinfo="/proc/self/mountinfo": cgroups.CgroupLayout())
    with pytest.raises(PrerequisitesNotMet) as info:
        NativeDriver.probe(str(tmp_path))
    message = str(info.value)
    assert "it needs root" in message
    assert "memory controller is not available" in message and "freezer is not available" in message


def test_cgroup_mounts_are_read_once(monkeypatch, tmp_path) -> None:
    """The cgroup of each container operation comes from the mounts read once: /proc/self/mountinfo
    grows with every running container, and reading it per exec, stats or unpause made a restore
    of N containers cost N times a table of N lines."""
    from engine.sys import cgroups
    from engine_exec_native.driver import NativeDriver

    real = cgroups.read_layout
    reads: list[str] = []

    def counting(mountinfo: str = "/proc/self/mountinfo") -> cgroups.CgroupLayout:
        reads.append(mountinfo)
        return real(mountinfo)

    monkeypatch.setattr(cgroups, "read_layout", counting)
    driver = NativeDriver(str(tmp_path))
    ids = [f"{n:064x}" for n in range(5)]
    found = [driver.cgroup_of(Command(id=id, rootfs="/", process=ProcessConfig(args=["true"]))) for id in ids]
    assert [cg.id for cg in found] == ids
    assert driver.info()["cgroup_version"] in ("1", "2")
    assert len(reads) == 1
