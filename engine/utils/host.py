"""Facts about the host, read from /proc and /sys (for /info and engine-admin)."""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass, field

CGROUP_ROOT = "/sys/fs/cgroup"

#: Python's machine names -> Go's GOARCH names, which clients expect.
GOARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def goarch(machine: str | None = None) -> str:
    machine = machine or platform.machine()
    return GOARCH.get(machine, machine)


def read_text(path: str, default: str = "") -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return default


@functools.lru_cache(maxsize=1)
def os_release() -> dict[str, str]:
    data: dict[str, str] = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        text = read_text(path)
        if not text:
            continue
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                data[key.strip()] = value.strip().strip('"')
        break
    return data


def operating_system() -> str:
    return os_release().get("PRETTY_NAME", "Linux")


def mem_total() -> int:
    for line in read_text("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def filesystems() -> set[str]:
    """File system types the kernel knows now (``/proc/filesystems``)."""
    return {line.split()[-1] for line in read_text("/proc/filesystems").splitlines() if line.strip()}


def proc_sys_flag(path: str) -> bool | None:
    value = read_text(path).strip()
    if value == "":
        return None
    return value == "1"


@dataclass
class CgroupInfo:
    """Where the cgroup controllers are mounted and which version rules."""

    version: str  # "1" or "2"
    v1_mounts: dict[str, str] = field(default_factory=dict)  # controller -> mount point
    v2_mount: str | None = None
    v2_controllers: set[str] = field(default_factory=set)

    def has(self, controller: str) -> bool:
        if self.version == "1":
            return controller in self.v1_mounts
        return controller in self.v2_controllers

    def v1_file_exists(self, controller: str, name: str) -> bool:
        mount = self.v1_mounts.get(controller)
        return bool(mount) and os.path.exists(os.path.join(mount, name))


def cgroup_info(mountinfo: str = "/proc/self/mountinfo") -> CgroupInfo:
    """Read the cgroup mounts. A hybrid host (v1 controllers plus a v2 mount
    without controllers) counts as version 1, as Docker reports it."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in read_text(mountinfo).splitlines():
        pre, _, post = line.partition(" - ")
        fields = pre.split()
        post_fields = post.split()
        if len(fields) < 5 or len(post_fields) < 3:
            continue
        fstype, mount_point, super_opts = post_fields[0], fields[4], post_fields[2]
        if fstype == "cgroup2":
            if v2 is None or mount_point == CGROUP_ROOT:
                v2 = mount_point
        elif fstype == "cgroup":
            for opt in super_opts.split(","):
                if opt in ("rw", "ro") or opt.startswith("release_agent") or opt == "clone_children":
                    continue
                v1.setdefault(opt, mount_point)
    controllers: set[str] = set()
    if v2:
        controllers = set(read_text(os.path.join(v2, "cgroup.controllers")).split())
    version = "1" if v1 else ("2" if v2 else "1")
    return CgroupInfo(version, v1, v2, controllers)


def kernel_release() -> str:
    return platform.release()


def hostname() -> str:
    return platform.node()
