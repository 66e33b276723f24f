"""The lxc driver's pure parts: the seccomp translation, the configuration, Docker's exec messages, the cgroup placement."""

from __future__ import annotations

import errno
import json

import pytest
from engine_exec_lxc import config, seccomp
from engine_exec_lxc.cgroup import Hierarchy, lxc_placement
from engine_exec_lxc.driver import docker_exec_error

from engine.drivers.exec import Command, ProcessConfig
from engine.errors import InvalidParameter
from engine.security import caps
from engine.security.seccomp import default_profile
from engine.sys.cgroups import Cgroup, CgroupLayout, HierarchyMount


def test_default_profile_translates_to_an_allowlist() -> None:
    text = seccomp.policy(default_profile(), list(caps.DEFAULT_CAPABILITIES))
    assert text is not None
    lines = text.splitlines()
    assert lines[:3] == ["2", "allowlist errno 1", "[all]"]
    assert "read allow" in lines and "clone3 errno 38" in lines
    # personality's argument conditions, and clone's masked comparison (mask last in LXC's syntax)
    assert any(line.startswith("personality allow [0,") for line in lines)
    assert any(line.startswith("clone allow [0,0,SCMP_CMP_MASKED_EQ,") for line in lines)


def test_unconfined_and_unexpressible_profiles() -> None:
    assert seccomp.policy("", []) is None
    log = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_LOG"}]})
    with pytest.raises(InvalidParameter, match="cannot express the action SCMP_ACT_LOG"):
        seccomp.policy(log, [])


def test_conditions_on_one_argument_split_into_rules() -> None:
    text = seccomp.translate(
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {
                    "names": ["ioctl"],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": 13,
                    "args": [
                        {"index": 1, "value": 1, "op": "SCMP_CMP_EQ"},
                        {"index": 1, "value": 2, "op": "SCMP_CMP_EQ"},
                    ],
                }
            ],
        }
    )
    assert text.splitlines()[3:] == ["ioctl errno 13 [1,1,SCMP_CMP_EQ]", "ioctl errno 13 [1,2,SCMP_CMP_EQ]"]


@pytest.mark.parametrize(
    "name, code, message",
    [
        ("nosuchcmd", errno.ENOENT, 'exec: "nosuchcmd": executable file not found in $PATH'),
        ("/nope", errno.ENOENT, 'exec: "/nope": stat /nope: no such file or directory'),
        ("/etc/passwd", errno.EACCES, 'exec: "/etc/passwd": permission denied'),
        ("/bin/x", errno.ENOEXEC, 'exec: "/bin/x": exec format error'),
    ],
)
def test_docker_exec_messages(name: str, code: int, message: str) -> None:
    assert docker_exec_error(name, code) == message


def _render(command: Command, **kw: object) -> str:
    args: dict = {
        "uid": 0,
        "gid": 0,
        "groups": [10],
        "env": ["PATH=/bin", "BARE"],
        "capabilities": ["CAP_CHOWN", "CAP_KILL"],
        "seccomp_path": None,
        "cgroup": [("lxc.cgroup.relative", "1")],
        "hook": "/h",
        "rootfs_mount": "/r",
        "namespaces": {"net": "/run/netns/x", "ipc": "new", "pid": True, "uts": True},
    }
    args.update(kw)
    return config.render(command, **args)  # type: ignore[arg-type]


def test_render() -> None:
    command = Command(
        id="c1",
        rootfs="/var/lib/engine/rootfs",
        hostname="box",
        process=ProcessConfig(args=["sh"], cwd="/work", no_new_privileges=True),
        mounts=[{"type": "tmpfs", "destination": "/my dir", "options": ["size=1m"]}],
    )
    text = _render(command).splitlines()
    assert "lxc.rootfs.path = dir:/var/lib/engine/rootfs" in text
    assert "lxc.namespace.clone = mnt pid uts ipc" in text
    assert "lxc.namespace.share.net = /run/netns/x" in text
    assert "lxc.uts.name = box" in text
    assert "lxc.cap.keep = chown kill" in text
    assert "lxc.init.cwd = /work" in text and "lxc.init.groups = 10" in text
    assert "lxc.environment = PATH=/bin" in text and not any("BARE" in line for line in text)
    assert "lxc.no_new_privs = 1" in text
    assert "lxc.mount.entry = tmpfs my\\040dir tmpfs size=1m,create=dir 0 0" in text
    assert "lxc.mount.entry = /dev/null proc/kcore none bind,optional 0 0" in text
    assert "lxc.mount.entry = /r/proc/sys proc/sys none rbind,ro,optional 0 0" in text
    command.process.privileged = True
    privileged = _render(command, capabilities=None)
    assert "lxc.cap.keep" not in privileged and "proc/kcore" not in privileged and "sys:rw" in privileged


def test_render_refuses_line_breaks() -> None:
    command = Command(id="c1", rootfs="/r", process=ProcessConfig(args=["sh"]))
    with pytest.raises(InvalidParameter, match="line break"):
        _render(command, env=["A=b\nlxc.cap.keep = sys_admin"])


def test_placement_relative_to_own_cgroup() -> None:
    memory = HierarchyMount("/sys/fs/cgroup/memory", "/", frozenset({"memory"}), 1)
    layout = CgroupLayout(v1={"memory": memory})
    cg = Cgroup("engine", "abc", layout=layout, own={"memory": "/daemon"})
    found = [Hierarchy("/sys/fs/cgroup/memory", "/", "/daemon", "/", True)]
    placement = lxc_placement(cg, found)
    assert placement.relative and placement.directory == "engine/abc"
    assert dict(placement.config())["lxc.cgroup.dir.container"] == "engine/abc/lxc.payload"
    absolute = Cgroup("/docker", "abc", layout=layout, own={"memory": "/daemon"})
    assert lxc_placement(absolute, found) == type(placement)(False, "docker/abc")
