"""Docker's container Config and HostConfig: their checks, the merge with the
image's config, and their translation for the exec driver (moby
``daemon/create.go``, ``daemon/container.go``, ``oci_linux.go``).

Everything here is a function of its arguments: no daemon, no driver, and
nothing written (``--mount`` binds only check that their source exists), so
each can be tested on its own.
"""

from __future__ import annotations

import os
import signal as signals
from collections.abc import Callable, Sequence
from typing import Any

from engine.daemon import resolvconf
from engine.daemon.container import Container
from engine.daemon.health import merge_healthcheck
from engine.daemon.health import validate as validate_healthcheck
from engine.daemon.logconfig import merge_log_config, shim_log
from engine.daemon.runtime import CONTAINER_INIT_PATH, check_cgroup_parent, check_runtime, rlimits
from engine.daemon.volumes import parse_bind, parse_mount, parse_tmpfs, volume_subpath
from engine.drivers.exec import Command, ExecDriver, ProcessConfig, Resources
from engine.errors import InvalidParameter
from engine.utils import cpuset

RESTART_POLICIES = ("", "no", "always", "on-failure", "unless-stopped")
#: The ``PATH`` of a container whose config sets none (moby's ``DefaultPathEnv``).
DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: What ``POST /containers/{id}/update`` may change (moby's ``container.UpdateConfig``).
UPDATABLE = frozenset(
    {
        "BlkioWeight",
        "CpuShares",
        "CpuPeriod",
        "CpuQuota",
        "CpusetCpus",
        "CpusetMems",
        "Memory",
        "MemorySwap",
        "MemoryReservation",
        "KernelMemory",
        "NanoCpus",
        "PidsLimit",
        "RestartPolicy",
        "OomKillDisable",
        "MemorySwappiness",
        "CpuRealtimePeriod",
        "CpuRealtimeRuntime",
    }
)

SIGNALS = {
    name[3:]: getattr(signals, name)
    for name in dir(signals)
    if name.startswith("SIG") and not name.startswith("SIG_") and isinstance(getattr(signals, name), int)
}


def parse_signal(value: str | int | None, default: int = signals.SIGKILL) -> int:
    """``9``, ``KILL``, ``SIGKILL`` -> 9 (moby ``signal.ParseSignal``)."""
    if value in (None, ""):
        return default
    text = str(value).upper()
    if text.isdigit():
        num = int(text)
        if num <= 0 or num > 64:
            raise InvalidParameter(f"Invalid signal: {value}")
        return num
    text = text[3:] if text.startswith("SIG") else text
    if text not in SIGNALS:
        raise InvalidParameter(f"Invalid signal: {value}")
    return SIGNALS[text]


def merge_image_config(user: dict, image: dict) -> dict:
    """moby's ``merge(userConf, imageConf)``: what the image supplies when the user did not."""
    out = dict(user)
    if not out.get("ExposedPorts"):
        out["ExposedPorts"] = dict(image.get("ExposedPorts") or {}) or None
    else:
        out["ExposedPorts"] = {**(image.get("ExposedPorts") or {}), **out["ExposedPorts"]}
    env = list(out.get("Env") or [])
    keys = {e.split("=", 1)[0] for e in env}
    out["Env"] = [e for e in image.get("Env") or [] if e.split("=", 1)[0] not in keys] + env
    labels = dict(image.get("Labels") or {})
    labels.update(out.get("Labels") or {})
    out["Labels"] = labels
    if not out.get("Entrypoint"):
        if not out.get("Cmd"):
            out["Cmd"] = image.get("Cmd")
        if out.get("Entrypoint") is None:
            out["Entrypoint"] = image.get("Entrypoint")
    if not out.get("WorkingDir"):
        out["WorkingDir"] = image.get("WorkingDir", "")
    vols = dict(image.get("Volumes") or {})
    vols.update(out.get("Volumes") or {})
    out["Volumes"] = vols or None
    if not out.get("StopSignal"):
        out["StopSignal"] = image.get("StopSignal", "")
    if not out.get("User"):
        out["User"] = image.get("User", "")
    healthcheck = merge_healthcheck(out.get("Healthcheck"), image.get("Healthcheck"))
    if healthcheck is not None:
        out["Healthcheck"] = healthcheck
    return out


def validate_host_config(
    hc: dict, ncpu: int, online_cpus: Callable[[], str] = cpuset.online, online_mems: Callable[[], str] | None = None
) -> list[str]:
    """moby's ``verifyContainerSettings`` checks; returns warnings.

    :param online_cpus: the host's online CPUs in the list syntax (``0-1``).
    :param online_mems: its memory nodes (``/sys/devices/system/node/online`` by default).
    """
    warnings: list[str] = []
    for key, field, available in (
        ("CpusetCpus", "cpus", online_cpus),
        ("CpusetMems", "mems", online_mems or (lambda: cpuset.online("node"))),
    ):
        _check_cpuset(str(hc.get(key) or ""), field, available)
    for entry in hc.get("ExtraHosts") or []:
        resolvconf.parse_extra_host(entry)
    policy = hc.get("RestartPolicy") or {}
    name = policy.get("Name", "") or ""
    retries = int(policy.get("MaximumRetryCount") or 0)
    if name not in RESTART_POLICIES:
        raise InvalidParameter(f"invalid restart policy '{name}'")
    if retries < 0:
        raise InvalidParameter("maximum retry count cannot be negative")
    if retries and name != "on-failure":
        raise InvalidParameter(f"maximum retry count cannot be used with restart policy '{name}'")
    if hc.get("AutoRemove") and name not in ("", "no"):
        raise InvalidParameter("can't create 'AutoRemove' container with restart policy")
    memory = int(hc.get("Memory") or 0)
    swap = int(hc.get("MemorySwap") or 0)
    if memory < 0 or (0 < memory < 6 * 1024 * 1024):
        raise InvalidParameter("Minimum memory limit allowed is 6MB")
    if memory == 0 and swap > 0:
        raise InvalidParameter("You should always set the Memory limit when using Memoryswap limit, see usage")
    if swap > 0 and swap < memory:
        raise InvalidParameter("Minimum memoryswap limit should be larger than memory limit, see usage")
    reservation = int(hc.get("MemoryReservation") or 0)
    if memory and reservation and reservation > memory:
        raise InvalidParameter("Minimum memory limit can not be less than memory reservation limit, see usage")
    swappiness = hc.get("MemorySwappiness")
    if swappiness is not None and swappiness != -1 and not 0 <= int(swappiness) <= 100:
        raise InvalidParameter(f"Invalid value: {swappiness}, valid memory swappiness range is 0-100")
    nano = int(hc.get("NanoCpus") or 0)
    period = int(hc.get("CpuPeriod") or 0)
    quota = int(hc.get("CpuQuota") or 0)
    if nano and (period or quota):
        raise InvalidParameter("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if nano < 0 or nano > ncpu * 1_000_000_000:
        raise InvalidParameter(f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available")
    if period and not 1000 <= period <= 1_000_000:
        raise InvalidParameter("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)")
    if quota and quota < 1000 and quota != -1:
        raise InvalidParameter("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    if int(hc.get("CpuShares") or 0) < 0:
        raise InvalidParameter("invalid CPU shares: must be a positive number")
    if int(hc.get("BlkioWeight") or 0) and not 10 <= int(hc["BlkioWeight"]) <= 1000:
        raise InvalidParameter("Range of blkio weight is from 10 to 1000")
    if int(hc.get("PidsLimit") or 0) < -1:
        raise InvalidParameter("invalid PidsLimit")
    oom = int(hc.get("OomScoreAdj") or 0)
    if not -1000 <= oom <= 1000:
        raise InvalidParameter(f"Invalid value {oom}, range for oom score adj is [-1000, 1000]")
    mode = hc.get("NetworkMode") or "default"
    if mode.startswith("container:") and (hc.get("PortBindings") or hc.get("PublishAllPorts")):
        raise InvalidParameter("conflicting options: port publishing and the container type network mode")
    return warnings


def _check_cpuset(requested: str, field: str, available: Callable[[], str]) -> None:
    """moby's ``verifyPlatformContainerResources`` for ``--cpuset-cpus``/``--cpuset-mems``: the
    list parses and names only what the host has, so the cgroup write at start cannot fail."""
    if not requested:
        return
    have = available()
    try:
        ok = cpuset.is_subset(requested, have)
    except ValueError as exc:
        raise InvalidParameter(f"Invalid value {requested} for cpuset {field}: {exc}") from None
    if not ok:
        what = "CPUs" if field == "cpus" else "memory nodes"
        raise InvalidParameter(f"Requested {what} are not available - requested {requested}, available: {have}")


def resources_of(hc: dict) -> Resources:
    nano = int(hc.get("NanoCpus") or 0)
    period = int(hc.get("CpuPeriod") or 0)
    quota = int(hc.get("CpuQuota") or 0)
    if nano:
        period, quota = 100_000, nano * 100_000 // 1_000_000_000
    pids = int(hc.get("PidsLimit") or 0)
    return Resources(
        memory=int(hc.get("Memory") or 0),
        memory_swap=int(hc.get("MemorySwap") or 0),
        memory_reservation=int(hc.get("MemoryReservation") or 0),
        memory_swappiness=int(hc["MemorySwappiness"]) if hc.get("MemorySwappiness") is not None else -1,
        oom_kill_disable=bool(hc.get("OomKillDisable")),
        cpu_shares=int(hc.get("CpuShares") or 0),
        cpu_period=period,
        cpu_quota=quota,
        cpu_rt_period=int(hc.get("CpuRealtimePeriod") or 0),
        cpu_rt_runtime=int(hc.get("CpuRealtimeRuntime") or 0),
        cpuset_cpus=hc.get("CpusetCpus") or "",
        cpuset_mems=hc.get("CpusetMems") or "",
        pids_limit=pids if pids > 0 else 0,
        blkio_weight=int(hc.get("BlkioWeight") or 0),
        device_rules=list(hc.get("DeviceCgroupRules") or []),
    )


def apply_create_defaults(config: dict, hc: dict, image_name: str, cid: str, nodename: str, log_defaults: Any) -> None:
    """Fill in what a create leaves to the daemon, in place: the hostname (the short ID, or
    ``nodename`` for a host-network container, as moby names it), the image name, the network
    mode, the log configuration (the daemon's ``log-driver``/``log-opts`` merged in), the
    restart policy and the runtime (``runc``, the default exec driver).

    :param log_defaults: the daemon's configuration (``log_driver``, ``log_opts``, ``exec_driver``).
    :raises InvalidParameter: an unknown logging driver or option, a bad value, an unknown runtime.
    """
    validate_healthcheck(config.get("Healthcheck"))
    if not config.get("Hostname"):
        config["Hostname"] = nodename if (hc.get("NetworkMode") or "") == "host" else cid[:12]
    config["Image"] = image_name
    hc.setdefault("NetworkMode", "default")
    if not hc.get("NetworkMode"):
        hc["NetworkMode"] = "default"
    hc["LogConfig"] = merge_log_config(hc.get("LogConfig"), log_defaults)
    hc.setdefault("RestartPolicy", {"Name": "no", "MaximumRetryCount": 0})
    check_runtime(hc, log_defaults.exec_driver)
    if hc.get("CgroupParent"):
        check_cgroup_parent(hc["CgroupParent"], log_defaults)


def updated_host_config(hc: dict, body: dict) -> dict:
    """``hc`` with the changes of an update request (``POST /containers/{id}/update``).

    Only :data:`UPDATABLE` keys count, and unset values (None, "", 0) change
    nothing; a restart policy without a name is "unchanged" (the CLI always
    sends one). The result still has to pass :func:`validate_host_config`.
    """
    new = dict(hc)
    for key, value in body.items():
        if key == "RestartPolicy":
            if isinstance(value, dict) and value.get("Name"):
                new[key] = value
        elif key in UPDATABLE and value not in (None, "") and value != 0:
            new[key] = value
    return new


def mount_points(config: dict, hc: dict, mounts_of_container: Callable[[str], list[dict]]) -> list[dict]:
    """Every mount point a create asks for, one per destination: binds, then ``--mount`` (a
    destination given twice is an error), then ``--tmpfs`` (which wins), then ``--volumes-from``
    and the image's ``VOLUME`` entries for the destinations still free.

    Volumes are not made here: a volume point without ``Name`` is an
    anonymous volume still to be made.

    :param mounts_of_container: the mount points of a container by name or
        ID (for ``--volumes-from``); raises if there is no such container.
    :raises InvalidParameter: a malformed spec, or two ``--mount`` on one destination.
    """
    points: dict[str, dict] = {}
    for spec in hc.get("Binds") or []:
        point = parse_bind(spec)
        points[point["Destination"]] = point
    for m in hc.get("Mounts") or []:
        point = parse_mount(m)
        if point["Destination"] in points:
            raise InvalidParameter(f"Duplicate mount point: {point['Destination']}")
        points[point["Destination"]] = point
    for dest, opts in (hc.get("Tmpfs") or {}).items():
        point = parse_tmpfs(dest, opts)
        points[point["Destination"]] = point
    for spec in hc.get("VolumesFrom") or []:
        source_name, _, mode = spec.partition(":")
        for m in mounts_of_container(source_name):
            if m["Destination"] in points or m["Type"] == "tmpfs":
                continue
            copy = dict(m)
            if mode == "ro":
                copy["RW"] = False
            points[copy["Destination"]] = copy
    for dest in config.get("Volumes") or {}:
        dest = os.path.normpath(dest)
        if dest not in points:
            points[dest] = {
                "Type": "volume",
                "Name": "",
                "Source": "",
                "Destination": dest,
                "Mode": "",
                "RW": True,
                "Propagation": "",
                "NoCopy": False,
            }
    return list(points.values())


def container_env(config: dict, extra_env: Sequence[str] = ()) -> list[str]:
    """The first process's environment.

    ``extra_env`` (link variables) comes first, so the container's own
    variables win; ``PATH`` and ``HOSTNAME`` are added when missing, and
    ``TERM=xterm`` with a tty.
    """
    own = list(config.get("Env") or [])
    own_keys = {e.split("=", 1)[0] for e in own}
    env = [e for e in extra_env if e.split("=", 1)[0] not in own_keys] + own
    keys = {e.split("=", 1)[0] for e in env}
    if "PATH" not in keys:
        env.insert(0, DEFAULT_PATH_ENV)
    if "HOSTNAME" not in keys:
        env.insert(0, f"HOSTNAME={config.get('Hostname', '')}")
    if config.get("Tty") and "TERM" not in keys:
        env.append("TERM=xterm")
    return env


def process_of(c: Container, extra_env: Sequence[str] = (), no_new_privileges: bool = False) -> ProcessConfig:
    """The container's first process: its command, environment, user, tty and privileges.

    :param no_new_privileges: what the daemon's security policy decided for the container.
    """
    cfg, hc = c.config, c.host_config
    return ProcessConfig(
        args=[c.path, *c.args],
        env=container_env(cfg, extra_env),
        cwd=cfg.get("WorkingDir") or "/",
        user=cfg.get("User") or "",
        additional_groups=list(hc.get("GroupAdd") or []),
        tty=bool(cfg.get("Tty")),
        console_size=tuple(hc["ConsoleSize"]) if hc.get("ConsoleSize") and any(hc["ConsoleSize"]) else None,
        privileged=bool(hc.get("Privileged")),
        no_new_privileges=no_new_privileges,
        cap_add=list(hc.get("CapAdd") or []),
        cap_drop=list(hc.get("CapDrop") or []),
    )


def mounts_of(
    points: Sequence[dict], volume_path: Callable[[str], str], non_recursive_default: bool = False
) -> list[dict]:
    """The exec driver's mounts for the container's mount points (``MountPoints``), in their order.

    :param volume_path: a volume's host directory, by volume name.
    :param non_recursive_default: read-only mounts stay non-recursive unless they say (a
        container created with an API older than 1.44).
    """
    mounts = []
    for m in points:
        if m["Type"] == "tmpfs":
            opts = ["nosuid", "nodev", "noexec"] if not m.get("Mode") else []
            mounts.append(
                {
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "destination": m["Destination"],
                    "options": opts
                    + [o for o in (m.get("Mode") or "").split(",") if o]
                    + ([] if m.get("RW", True) else ["ro"]),
                    "propagation": "",
                }
            )
            continue
        source = m["Source"] if m["Type"] == "bind" else volume_path(m["Name"])
        if m.get("Subpath"):
            source = volume_subpath(source, m["Subpath"])
        opts = ["rbind"]
        if not m.get("RW", True):
            # Read-only with every submount too (API 1.44: "rro", where the kernel can), unless
            # the mount, or a client older than 1.44, says otherwise (moby's WithMounts).
            opts.append("ro")
            if m.get("ReadOnlyForceRecursive"):
                opts.append("rro-force")
            elif not m.get("ReadOnlyNonRecursive") and not non_recursive_default:
                opts.append("rro")
        mounts.append(
            {
                "type": "bind",
                "source": source,
                "destination": m["Destination"],
                "options": opts,
                "propagation": m.get("Propagation") or "rprivate",
            }
        )
    return mounts


def devices_of(hc: dict) -> list[dict]:
    """``--device`` entries as the exec driver takes them."""
    return [
        {
            "path_on_host": d.get("PathOnHost"),
            "path_in_container": d.get("PathInContainer") or d.get("PathOnHost"),
            "permissions": d.get("CgroupPermissions") or "rwm",
        }
        for d in hc.get("Devices") or []
    ]


def ipc_mode_of(hc: dict, joined_namespace: str = "") -> str:
    """The exec driver's IPC mode: ``host``, ``none`` (no ``/dev/shm``), ``private`` (``shareable``
    too: its shared ``/dev/shm`` is a mount the daemon makes), or ``container:<ns path>`` with the
    donor's namespace (``/proc/PID/ns/ipc``) the caller found."""
    mode = hc.get("IpcMode") or "private"
    if mode.startswith("container:"):
        return f"container:{joined_namespace}"
    return mode if mode in ("host", "none") else "private"


def pid_mode_of(hc: dict, joined_namespace: str = "") -> str:
    """The exec driver's PID mode: ``host``, ``container:<ns path>`` (the donor's
    ``/proc/PID/ns/pid``) or ``private`` (anything else, as dockerd treats it)."""
    mode = hc.get("PidMode") or ""
    if mode.startswith("container:"):
        return f"container:{joined_namespace}"
    return "host" if mode == "host" else "private"


def build_command(
    c: Container,
    rootfs: str,
    network: dict,
    volume_path: Callable[[str], str],
    extra_env: Sequence[str] = (),
    ipc_namespace: str = "",
    *,
    seccomp_profile: str = "",
    no_new_privileges: bool = False,
    init_binary: str = "",
    ulimits: Sequence[dict] = (),
    pid_namespace: str = "",
    shm_path: str = "",
    cgroup_parent: str = "/docker",
    user_namespace: dict | None = None,
) -> Command:
    """The exec driver's :class:`~engine.drivers.exec.Command` for ``c``.

    :param rootfs: the mounted root file system.
    :param network: ``{"mode", "path"}``, the namespace the daemon made or chose.
    :param volume_path: a volume's host directory, by volume name.
    :param extra_env: variables that come before the container's own (links').
    :param ipc_namespace: ``/proc/PID/ns/ipc`` of the container ``--ipc container:ID`` joins
        (:func:`engine.daemon.namespaces.join_options` finds it, and the two below).
    :param pid_namespace: ``/proc/PID/ns/pid`` of the container ``--pid container:ID`` joins.
    :param shm_path: a host directory bound at ``/dev/shm`` (a shareable container's own, or
        the one of the container whose IPC it joins).
    :param seccomp_profile: the profile (JSON) the daemon's security policy chose; "" for none.
    :param no_new_privileges: the security policy's choice for the container's processes.
    :param init_binary: the init's host path when the container runs one (``--init``,
        :func:`engine.daemon.runtime.command_options`): it is mounted at ``/sbin/docker-init``
        and runs the command.
    :param ulimits: the container's limits merged with the daemon's defaults.
    :param cgroup_parent: the container's ``CgroupParent``, else the daemon's (``/docker``): an
        absolute one from the root of each hierarchy, a relative one below the daemon's cgroup.
    :param user_namespace: its user namespace's maps (``--userns-remap``); None or {}: the host's.
    """
    cfg, hc = c.config, c.host_config
    process = process_of(c, extra_env, no_new_privileges)
    mounts = mounts_of(c.mounts, volume_path, bool(hc.get("_ReadOnlyNonRecursive")))
    if shm_path:
        mounts.insert(
            0, {"type": "bind", "source": shm_path, "destination": "/dev/shm", "options": ["rbind"], "propagation": ""}
        )
    if init_binary:
        process.args = [CONTAINER_INIT_PATH, "--", *process.args]
        mounts.append(
            {
                "type": "bind",
                "source": init_binary,
                "destination": CONTAINER_INIT_PATH,
                "options": ["bind", "ro"],
                "propagation": "",
            }
        )
    return Command(
        id=c.id,
        rootfs=rootfs,
        process=process,
        container_dir=c.root,
        hostname=cfg.get("Hostname") or "",
        domainname=cfg.get("Domainname") or "",
        mounts=mounts,
        resources=resources_of(hc),
        network=network,
        ipc_mode=ipc_mode_of(hc, ipc_namespace),
        pid_mode=pid_mode_of(hc, pid_namespace),
        uts_mode="host" if hc.get("UTSMode") == "host" else "private",
        cgroup_parent=cgroup_parent,
        readonly_rootfs=bool(hc.get("ReadonlyRootfs")),
        masked_paths=hc.get("MaskedPaths"),
        readonly_paths=hc.get("ReadonlyPaths"),
        devices=devices_of(hc),
        sysctls=sysctls_of(hc, bool(user_namespace)),
        seccomp_profile=seccomp_profile,
        user_namespace=dict(user_namespace or {}),
        shm_size=int(hc.get("ShmSize") or 64 * 1024 * 1024),
        rlimits=rlimits(list(ulimits)),
        oom_score_adj=int(hc.get("OomScoreAdj") or 0),
    )


#: Network sysctls dockerd sets in a container's own network namespace unless the container
#: sets them (moby 20.10 ``daemon/oci_linux.go``): any port below 1024 without
#: CAP_NET_BIND_SERVICE, and ICMP echo sockets without CAP_NET_RAW (not in a user namespace).
NETWORK_SYSCTL_DEFAULTS = (
    ("net.ipv4.ip_unprivileged_port_start", "0", True),
    ("net.ipv4.ping_group_range", "0 2147483647", False),
)


def sysctls_of(hc: dict, user_namespace: bool, exists: Callable[[str], bool] = os.path.exists) -> dict[str, str]:
    """The container's sysctls: its own, and dockerd's network defaults when it gets a network
    namespace of its own (root in a user namespace needs them: the namespace is the host's user's).

    :param exists: whether a ``/proc/sys`` file exists (this kernel has the sysctl).
    """
    out = dict(hc.get("Sysctls") or {})
    mode = hc.get("NetworkMode") or "default"
    if mode == "host" or mode.startswith("container:"):
        return out
    for key, value, in_userns in NETWORK_SYSCTL_DEFAULTS:
        if key not in out and (in_userns or not user_namespace) and exists("/proc/sys/" + key.replace(".", "/")):
            out[key] = value
    return out


def shim_spec(c: Container, cmd: Command, driver: ExecDriver, memory_merge: bool = False) -> dict[str, Any]:
    """``shim.json``: the command, the driver the shim loads, the stdio and the log; with
    ``memory_merge`` (``--shim-memory-merge``) the shim opts in to kernel samepage merging."""
    return {
        "command": cmd.to_json(),
        "driver": {
            "module": type(driver).__module__,
            "class": type(driver).__name__,
            "home": driver.home,
            "options": list(driver.options),
        },
        "tty": bool(c.config.get("Tty")),
        "open_stdin": bool(c.config.get("OpenStdin")),
        "stdin_once": bool(c.config.get("StdinOnce")),
        "log": shim_log(c.host_config.get("LogConfig"), c.root, c.log_path),
        "memory_merge": memory_merge,
    }
