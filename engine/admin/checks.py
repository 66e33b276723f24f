"""Host checks for ``engine-admin check``: the kernel features the engine uses,
each with what its absence disables.

Network features are tested for real in a throw-away network namespace (a
forked child that unshares its network and creates a bridge, a veth pair and
an iptables chain there), because built-in kernel modules leave no trace in
/sys/module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass

from engine.sys.cgroups import read_layout
from engine.utils import host


@dataclass
class Check:
    """One feature: ``ok`` is True, False, or None when it could not be told."""

    name: str
    ok: bool | None
    detail: str
    disables: str

    def to_json(self) -> dict:
        return asdict(self)


NAMESPACES = {
    "mnt": "containers (mount namespace: rootfs, pivot_root)",
    "uts": "container hostnames",
    "ipc": "IPC isolation",
    "pid": "PID isolation (containers would see host processes)",
    "net": "container networking (every mode but --net host)",
    "user": "user namespaces (--userns-remap)",
    "cgroup": "--cgroupns private",
}

CGROUP_CONTROLLERS = {
    "memory": "--memory, --memory-swap, OOM reporting",
    "cpu": "--cpu-shares, --cpus, --cpu-quota",
    "cpuacct": "CPU usage in docker stats",
    "cpuset": "--cpuset-cpus, --cpuset-mems",
    "pids": "--pids-limit",
    "blkio": "--blkio-weight, block I/O stats",
    "devices": "the device allow-list (containers could open any device node)",
    "freezer": "docker pause / unpause",
}


def check_kernel() -> Check:
    from engine.daemon.config import MIN_KERNEL, kernel_version

    release = host.kernel_release()
    version = kernel_version(release)
    ok = None if version is None else version >= MIN_KERNEL
    return Check("kernel", ok, f"{release} (need {'.'.join(map(str, MIN_KERNEL))} or newer)", "the daemon")


def check_namespaces() -> list[Check]:
    out = []
    for ns, disables in NAMESPACES.items():
        ok = os.path.exists(f"/proc/self/ns/{ns}")
        out.append(Check(f"namespace {ns}", ok, "present" if ok else "missing", disables))
    return out


def check_cgroups() -> list[Check]:
    cg = read_layout()
    out = [
        Check(
            "cgroup version",
            True,
            f"v{cg.version}" + (" (hybrid: v2 mounted too)" if cg.version == 1 and cg.v2 is not None else ""),
            "resource limits",
        )
    ]
    for ctl, disables in CGROUP_CONTROLLERS.items():
        if cg.version == 2 and ctl in ("cpuacct", "devices", "freezer", "blkio"):
            # v2 folds these into cpu/io, eBPF device programs and cgroup.freeze.
            equivalent = {"cpuacct": "cpu", "devices": "cpu", "freezer": "cpu", "blkio": "io"}[ctl]
            ok = cg.has(equivalent) or ctl in ("devices", "freezer")
            out.append(Check(f"cgroup {ctl}", ok, "v2 equivalent" if ok else "missing", disables))
            continue
        ok = cg.has(ctl)
        mount = cg.v1.get(ctl) if cg.version == 1 else cg.v2
        where = mount.mount_point if mount is not None else None
        out.append(Check(f"cgroup {ctl}", ok, f"mounted at {where}" if ok else "not mounted", disables))
    return out


def check_filesystems() -> list[Check]:
    fss = host.filesystems()
    out = []
    for fs, disables in (
        ("overlay", "the overlay graph driver (vfs is used instead: slow and big)"),
        ("btrfs", "a btrfs graph driver"),
        ("aufs", "the aufs graph driver"),
    ):
        ok = fs in fss
        out.append(Check(fs, ok, "in /proc/filesystems" if ok else "not in /proc/filesystems", disables))
    dm = os.path.exists("/dev/mapper/control") or "device-mapper" in host.read_text("/proc/devices")
    out.append(
        Check(
            "device-mapper", dm, "/dev/mapper/control" if dm else "no /dev/mapper/control", "the devmapper graph driver"
        )
    )
    return out


def _netns_probe() -> dict[str, tuple[bool, str]]:
    """Fork a child that unshares its network namespace and tries things there."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        os.close(r)
        results: dict[str, tuple[bool, str]] = {}
        try:
            from engine.sys import libc

            libc.unshare(libc.CLONE_NEWNET)
            from pyroute2 import IPRoute
            from pyroute2.netlink.exceptions import NetlinkError

            with IPRoute() as ipr:
                try:
                    ipr.link("add", ifname="engchk0", kind="bridge")
                    results["bridge"] = (True, "created a bridge in a scratch namespace")
                except NetlinkError as exc:
                    results["bridge"] = (False, f"cannot create a bridge: {exc}")
                try:
                    ipr.link("add", ifname="engchk1", kind="veth", peer="engchk2")
                    results["veth"] = (True, "created a veth pair in a scratch namespace")
                except NetlinkError as exc:
                    results["veth"] = (False, f"cannot create a veth pair: {exc}")
            ipt = shutil.which("iptables")
            if ipt is None:
                results["iptables"] = (False, "iptables binary not found")
            else:
                proc = subprocess.run([ipt, "-t", "nat", "-N", "ENGINE-CHECK"], capture_output=True, text=True)
                ver = subprocess.run([ipt, "--version"], capture_output=True, text=True).stdout.strip()
                if proc.returncode == 0:
                    results["iptables"] = (True, f"{ver}: nat table usable")
                else:
                    results["iptables"] = (False, f"{ver}: {proc.stderr.strip()}")
        except Exception as exc:  # report, never crash the tool
            results.setdefault("bridge", (False, f"probe failed: {exc}"))
        os.write(w, repr(results).encode())
        os._exit(0)
    os.close(w)
    chunks = []
    while True:
        data = os.read(r, 65536)
        if not data:
            break
        chunks.append(data)
    os.close(r)
    os.waitpid(pid, 0)
    import ast

    try:
        return ast.literal_eval(b"".join(chunks).decode() or "{}")
    except (ValueError, SyntaxError):
        return {}


def check_network() -> list[Check]:
    disables = {
        "bridge": "the bridge network driver (only --net host/none)",
        "veth": "container interfaces on the bridge (only --net host/none)",
        "iptables": "NAT, port publishing and --icc=false",
    }
    if os.geteuid() != 0:
        return [Check(n, None, "run as root to test", d) for n, d in disables.items()]
    found = _netns_probe()
    return [
        Check(n, found.get(n, (None, "not tested"))[0], found.get(n, (None, "not tested"))[1], d)
        for n, d in disables.items()
    ]


def check_security() -> list[Check]:
    from engine.sys import libseccomp

    reason = libseccomp.unsupported()
    if reason is None:
        detail = "filters, libseccomp {}".format(".".join(map(str, libseccomp.version() or ())))
    else:
        detail = reason
    return [
        Check(
            "seccomp",
            reason is None,
            detail,
            "Docker's default seccomp profile and --security-opt seccomp=<file> (containers run unconfined)",
        )
    ]


def check_memory() -> list[Check]:
    from engine.sys import ksm

    reason = ksm.why_not_merging()
    return [
        Check(
            "ksm",
            reason is None,
            reason or "processes can opt in (PR_SET_MEMORY_MERGE) and ksmd runs",
            "sharing of the shims' identical pages (--shim-memory-merge)",
        )
    ]


def run_checks() -> dict[str, list[Check]]:
    return {
        "kernel": [check_kernel()],
        "security": check_security(),
        "namespaces": check_namespaces(),
        "cgroups": check_cgroups(),
        "storage": check_filesystems(),
        "network": check_network(),
        "memory": check_memory(),
    }
