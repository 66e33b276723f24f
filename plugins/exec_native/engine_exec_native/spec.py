"""From a :class:`~engine.drivers.exec.Command` to the plan the container's init carries out.

Everything that can be decided before fork(2) is decided here, in the
parent, so that mistakes (an unknown capability, a device that does not
exist, a namespace path missing) are raised as ordinary exceptions in the
caller and the child only executes a plain JSON-able dict: the same dict
crosses a pipe to the ``nsenter`` helper for ``docker exec``.

Docker's defaults live here too: the default device nodes and the device
cgroup rules (moby ``oci/defaults.go``); the masked and read-only paths and
the sysctl rules come from :mod:`engine.security`.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from engine.drivers.exec import Command, Pipes, ProcessConfig, Resources
from engine.errors import InvalidParameter, NotFound
from engine.security import caps, paths, sysctls
from engine.sys.cgroups import DEFAULT_DEVICE_RULES, DeviceRule

__all__ = [
    "DEFAULT_DEVICES",
    "DEFAULT_MASKED_PATHS",
    "DEFAULT_PATH",
    "DEFAULT_READONLY_PATHS",
    "build_init_plan",
    "build_process_plan",
    "cgroup_resources",
    "device_rules",
    "host_devices",
    "masked_paths",
    "readonly_paths",
    "resolve_devices",
]

#: The PATH used for the lookup of ``args[0]`` when the environment has none (Docker's default).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Docker's masked and read-only paths (moby ``oci/defaults.go``), for a
#: command that does not list its own: see :mod:`engine.security.paths`.
DEFAULT_MASKED_PATHS = paths.DEFAULT_MASKED_PATHS
DEFAULT_READONLY_PATHS = paths.DEFAULT_READONLY_PATHS

#: The device nodes every container's /dev gets (mknod in a fresh tmpfs).
DEFAULT_DEVICES: tuple[dict[str, Any], ...] = tuple(
    {"path": path, "type": "c", "major": major, "minor": minor, "mode": 0o666, "uid": 0, "gid": 0}
    for path, major, minor in (
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    )
)

# moby's HostDevices skips these below /dev: they are made per container (pts,
# shm, mqueue, console, ptmx) or are not devices at all.
_HOST_DEVICE_SKIP_DIRS = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}
_HOST_DEVICE_SKIP_FILES = {"console", "ptmx"}


def masked_paths(command: Command) -> list[str]:
    """The masked paths: none when privileged, else the command's or Docker's defaults."""
    if command.process.privileged:
        return []
    return list(paths.default_masked_paths() if command.masked_paths is None else command.masked_paths)


def readonly_paths(command: Command) -> list[str]:
    """The read-only paths: none when privileged, else the command's or Docker's defaults."""
    if command.process.privileged:
        return []
    return list(DEFAULT_READONLY_PATHS if command.readonly_paths is None else command.readonly_paths)


def _device_entry(host_path: str, container_path: str, permissions: str) -> dict[str, Any] | None:
    st = os.stat(host_path)
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return {
        "path": container_path,
        "type": kind,
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "permissions": permissions,
    }


def resolve_devices(requested: list[dict]) -> list[dict[str, Any]]:
    """``--device`` entries -> device nodes to make; a directory brings every device below it.

    :raises NotFound: ``error gathering device information while adding custom device "X": ...``
        (moby's message) when the host path does not exist.
    :raises InvalidParameter: when it is not a device (or a directory of them).
    """
    out: list[dict[str, Any]] = []
    for item in requested:
        host = item.get("path_on_host", "")
        inside = item.get("path_in_container") or host
        permissions = item.get("permissions") or "rwm"
        if set(permissions) - set("rwm"):
            raise InvalidParameter(f"invalid device permissions {permissions!r} for {host}: use r, w and m")
        try:
            if os.path.isdir(host):
                for directory, _, files in os.walk(host):
                    for name in sorted(files):
                        full = os.path.join(directory, name)
                        entry = _device_entry(full, os.path.join(inside, os.path.relpath(full, host)), permissions)
                        if entry is not None:
                            out.append(entry)
                continue
            entry = _device_entry(host, inside, permissions)
        except OSError as exc:
            raise NotFound(
                f'error gathering device information while adding custom device "{host}": '
                f"{exc.strerror.lower() if exc.strerror else exc}"
            ) from exc
        if entry is None:
            raise InvalidParameter(
                f'error gathering device information while adding custom device "{host}": not a device node'
            )
        out.append(entry)
    return out


def host_devices(root: str = "/dev") -> list[dict[str, Any]]:
    """Every character and block device of the host, for privileged containers (as moby does)."""
    out: list[dict[str, Any]] = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not (directory == root and d in _HOST_DEVICE_SKIP_DIRS))
        for name in sorted(files):
            if directory == root and name in _HOST_DEVICE_SKIP_FILES:
                continue
            full = os.path.join(directory, name)
            try:
                entry = _device_entry(full, full, "rwm")
            except OSError:
                continue  # vanished while walking
            if entry is not None:
                out.append(entry)
    return out


def device_rules(command: Command, devices: list[dict[str, Any]]) -> list[str]:
    """The device cgroup allow-list: everything when privileged, else the given
    (or Docker's default) rules plus one rule per ``--device``."""
    if command.process.privileged:
        return ["a *:* rwm"]
    rules = [str(DeviceRule.parse(r)) for r in (command.resources.device_rules or DEFAULT_DEVICE_RULES)]
    for device in devices:
        if "permissions" in device:
            rules.append(f"{device['type']} {device['major']}:{device['minor']} {device['permissions']}")
    return rules


def cgroup_resources(command: Command, devices: list[dict[str, Any]]) -> Resources:
    """The command's resources with the device allow-list filled in."""
    resources = Resources(**{k: getattr(command.resources, k) for k in command.resources.fields()})
    resources.device_rules = device_rules(command, devices)
    return resources


def capability_mask(privileged: bool, cap_add: list[str], cap_drop: list[str]) -> int:
    """The capability mask for a process: Docker's defaults tweaked by cap-add/cap-drop.

    :raises InvalidParameter: for an unknown name, or a capability this engine
        does not have itself (it cannot give what its bounding set lacks).
    """
    everything = caps.available()
    names = caps.tweak(caps.DEFAULT_CAPABILITIES, cap_add, cap_drop, privileged, everything)
    missing = [n for n in names if n not in everything]
    if missing:
        raise InvalidParameter(
            f"cannot grant {', '.join(missing)}: the engine itself does not have "
            f"{'it' if len(missing) == 1 else 'them'} (its bounding set)"
        )
    return caps.to_mask(names)


def build_process_plan(
    process: ProcessConfig, container: ProcessConfig | None = None, *, create_cwd: bool = False
) -> dict[str, Any]:
    """The process part of a plan: argv, env, cwd, user, capabilities.

    :param container: for an exec, the container's own process: its privilege,
        capabilities and no-new-privileges apply to the exec as in Docker.
    """
    if not process.args:
        raise InvalidParameter("no command specified")
    privileged = process.privileged or bool(container and container.privileged)
    cap_add = list(process.cap_add) + (list(container.cap_add) if container else [])
    cap_drop = list(process.cap_drop) + (list(container.cap_drop) if container else [])
    return {
        "args": list(process.args),
        "env": list(process.env),
        "cwd": process.cwd or "/",
        "create_cwd": create_cwd,
        "user": process.user,
        "additional_groups": list(process.additional_groups),
        "caps": capability_mask(privileged, cap_add, cap_drop),
        "no_new_privileges": process.no_new_privileges or bool(container and container.no_new_privileges),
        "tty": process.tty,
        "console_size": list(process.console_size) if process.console_size else None,
    }


def _namespaces(command: Command) -> dict[str, Any]:
    network = command.network or {"mode": "host"}
    mode = network.get("mode", "host")
    if mode == "host":
        net = None
    elif network.get("path"):
        net = network["path"]
    elif mode == "none":
        net = "new"  # nothing prepared: a fresh namespace with only lo
    else:
        raise InvalidParameter(f"network mode {mode!r} needs the path of a network namespace")
    ipc_mode = command.ipc_mode or "private"
    if ipc_mode in ("private", "shareable", ""):
        ipc = "new"
    elif ipc_mode == "host":
        ipc = None
    elif ipc_mode.startswith("container:") and ipc_mode[len("container:") :]:
        ipc = ipc_mode[len("container:") :]
    else:
        raise InvalidParameter(f"invalid IPC mode {ipc_mode!r}: private, shareable, host or container:<ns path>")
    if command.pid_mode not in ("private", "host", ""):
        raise InvalidParameter(f"invalid PID mode {command.pid_mode!r}: private or host")
    if command.uts_mode not in ("private", "host", ""):
        raise InvalidParameter(f"invalid UTS mode {command.uts_mode!r}: private or host")
    for kind, value in (("network", net), ("IPC", ipc)):
        if value not in (None, "new") and not os.path.exists(value):
            raise NotFound(f"{kind} namespace {value} does not exist (is the container it belongs to running?)")
    return {"net": net, "ipc": ipc, "uts": command.uts_mode != "host"}


def _mounts(command: Command) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = []
    for item in command.mounts:
        kind = item.get("type", "bind")
        destination = item.get("destination", "")
        if not destination.startswith("/"):
            raise InvalidParameter(f"mount destination {destination!r} is not an absolute path")
        if kind == "bind":
            source = item.get("source", "")
            if not os.path.exists(source):
                raise InvalidParameter(f"bind source path does not exist: {source}")
            mounts.append(
                {
                    "type": "bind",
                    "source": source,
                    "destination": destination,
                    "options": list(item.get("options", [])),
                    "propagation": item.get("propagation", ""),
                    "is_dir": os.path.isdir(source),
                }
            )
        elif kind == "tmpfs":
            mounts.append(
                {
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "destination": destination,
                    "options": list(item.get("options", [])),
                }
            )
        else:
            raise InvalidParameter(f"unsupported mount type {kind!r} for {destination}: bind or tmpfs")
    for destination, options in command.tmpfs.items():
        # Docker's --tmpfs defaults, which the given options override.
        mounts.append(
            {
                "type": "tmpfs",
                "source": "tmpfs",
                "destination": destination,
                "options": ["noexec", "nosuid", "nodev"] + [o for o in options.split(",") if o],
            }
        )
    return mounts


def _is_host_namespace(path: str | None, kind: str) -> bool:
    """Whether the namespace the container joins is this process's own (the host's)."""
    if path is None:
        return True
    if path == "new":
        return False
    mine, theirs = os.stat(f"/proc/self/ns/{kind}"), os.stat(path)
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def sysctl_plan(values: dict[str, str], namespaces: dict[str, Any]) -> list[list[str]]:
    """The /proc/sys files to write and their values, once each key is known to be
    held by the container's own namespaces (the namespaces are certain here: a
    ``container:<id>`` network may be the host's).

    :raises InvalidParameter: runc's message, e.g. ``sysctl "kernel.core_pattern"
        is not in a separate kernel namespace``.
    """
    if not values:
        return []
    private_ipc = not _is_host_namespace(namespaces["ipc"], "ipc")
    private_net = not _is_host_namespace(namespaces["net"], "net")
    out = []
    for key, value in values.items():
        sysctls.check(key, private_ipc=private_ipc, private_net=private_net, private_uts=namespaces["uts"])
        out.append([sysctls.proc_path(key), value])
    return out


def build_init_plan(command: Command, pipes: Pipes, devices: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole plan for a container's init.

    :param devices: the extra device nodes (:func:`resolve_devices`, or
        :func:`host_devices` when privileged).
    :raises InvalidParameter: for a malformed command.
    :raises NotFound: for a missing rootfs, bind source or namespace.
    """
    if not os.path.isdir(command.rootfs):
        raise NotFound(f"rootfs {command.rootfs} does not exist")
    console = None
    console_socket = None
    if command.process.tty and pipes.console is not None:
        # The init makes the pty in the container's devpts and sends the master back.
        console_socket = pipes.console
    elif command.process.tty:
        if pipes.stdin is None or not os.isatty(pipes.stdin):
            raise InvalidParameter("a tty was requested but stdin is not a terminal (pass the pty slave)")
        console = os.ttyname(pipes.stdin)
    etc_files = []
    if command.container_dir:
        for name in ("hostname", "hosts", "resolv.conf"):
            source = os.path.join(command.container_dir, name)
            if os.path.isfile(source):
                etc_files.append([source, "/etc/" + name])
    namespaces = _namespaces(command)
    return {
        "id": command.id,
        "rootfs": os.path.realpath(command.rootfs),
        "hostname": command.hostname,
        "domainname": command.domainname,
        "namespaces": namespaces,
        "mounts": _mounts(command),
        "devices": [dict(d) for d in DEFAULT_DEVICES] + devices,
        "privileged": command.process.privileged,
        "masked_paths": masked_paths(command),
        "readonly_paths": readonly_paths(command),
        "readonly_rootfs": command.readonly_rootfs,
        "sysctls": sysctl_plan(command.sysctls, namespaces),
        "shm_size": command.shm_size or 64 * 1024 * 1024,
        "etc_files": etc_files,
        "console": console,
        "console_socket": console_socket,
        "process": build_process_plan(command.process, create_cwd=True),
    }
