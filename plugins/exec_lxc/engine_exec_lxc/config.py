"""A container's LXC configuration (``lxc.container.conf(5)``, LXC 5) from the engine's :class:`Command`.

Pure functions: the driver resolves the user, the capabilities and the
seccomp policy, and writes what :func:`render` returns as
``<home>/<id>/config``, where ``lxc-start -n <id> -P <home>`` reads it.
What goes where, Docker's rule on the left::

    rootfs, hostname            lxc.rootfs.path = dir:..., lxc.uts.name
    namespaces                  lxc.namespace.clone (mnt pid uts ipc, those that are private);
                                lxc.namespace.share.net / .ipc (the daemon's netns file, another
                                container's /proc/PID/ns/ipc); --pid/--uts=host: not cloned
    /proc, /sys                 lxc.mount.auto = proc:rw sys:ro (sys:rw when privileged)
    /dev                        a tmpfs, devpts, mqueue, /dev/shm (lxc.mount.entry); the device
                                nodes and the /dev/ptmx symlink are copied in by the mount hook
                                (lxc.autodev is off: it would bind a fake boot_id over /proc)
    mounts, --tmpfs             lxc.mount.entry, in order, with create=dir|file
    masked / read-only paths    lxc.mount.entry: /dev/null or an empty read-only tmpfs over them;
                                read-only binds of themselves (optional: skipped where missing)
    read-only rootfs            the mount hook remounts the root read-only (after the mounts)
    user, groups, cwd, env      lxc.init.uid/gid/groups/cwd, lxc.environment
    capabilities                lxc.cap.keep (the bounding set; root's effective set follows at exec)
    no-new-privileges           lxc.no_new_privs
    seccomp                     lxc.seccomp.profile (LXC's policy format, :mod:`.seccomp`)
    sysctls, domain name        written by the mount hook, in the container's namespaces
    cgroups                     lxc.cgroup.dir.* below the engine's cgroup (:mod:`.cgroup`); the limits
                                are the engine's cgroup's, not lxc.cgroup.* keys (see there)
    console                     lxc.console.path = none (the init's stdio is lxc-start's); with a
                                tty, the pty slave is also bound over /dev/console, where
                                ttyname(3) finds it (as Docker 1.2's lxc driver did)

Values are single lines: an environment value, path or host name with a
newline is refused (LXC's format has no escape for it); mount entries use
fstab's octal escapes for blanks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from engine.drivers.exec import Command
from engine.errors import InvalidParameter
from engine.security import paths

#: lxc.pty.max: LXC's devpts instance for the container (Docker's has no limit but the kernel's).
PTY_MAX = 1024

__all__ = ["DEFAULT_DEVICES", "PTY_MAX", "escape", "hook_script", "masked_paths", "readonly_paths", "render"]

#: The device nodes every container's /dev gets: (name, major, minor).
DEFAULT_DEVICES: tuple[tuple[str, int, int], ...] = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)


def escape(path: str) -> str:
    """A path as an fstab field: blanks and backslashes as octal escapes (getmntent(3) undoes them)."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


def _line(key: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise InvalidParameter(f"{key}: the value {value!r} has a line break, which LXC's configuration cannot hold")
    return f"{key} = {value}"


def _relative(destination: str) -> str:
    if not destination.startswith("/"):
        raise InvalidParameter(f"mount destination {destination!r} is not an absolute path")
    normalized = os.path.normpath(destination)
    if normalized == "/":
        raise InvalidParameter("a mount over the container's / is not allowed")
    return normalized.lstrip("/")


def masked_paths(command: Command) -> list[str]:
    """The masked paths: none when privileged, else the command's or Docker's defaults."""
    if command.process.privileged:
        return []
    return list(paths.default_masked_paths() if command.masked_paths is None else command.masked_paths)


def readonly_paths(command: Command) -> list[str]:
    """The read-only paths: none when privileged, else the command's or Docker's defaults."""
    if command.process.privileged:
        return []
    return list(paths.DEFAULT_READONLY_PATHS if command.readonly_paths is None else command.readonly_paths)


def _mount_entries(command: Command) -> list[str]:
    entries = []
    for item in command.mounts:
        kind = item.get("type", "bind")
        destination = _relative(item.get("destination", ""))
        options = [o for o in item.get("options", []) if o]
        propagation = item.get("propagation", "")
        if kind == "bind":
            source = item.get("source", "")
            if not os.path.exists(source):
                raise InvalidParameter(f"bind source path does not exist: {source}")
            flags = ["rbind" if "rbind" in options else "bind"]
            flags += [o for o in options if o not in ("bind", "rbind")]
            if propagation:
                flags.append(propagation)
            flags.append("create=dir" if os.path.isdir(source) else "create=file")
            entries.append(f"{escape(source)} {escape(destination)} none {','.join(flags)} 0 0")
        elif kind == "tmpfs":
            entries.append(f"tmpfs {escape(destination)} tmpfs {','.join([*options, 'create=dir'])} 0 0")
        else:
            raise InvalidParameter(f"unsupported mount type {kind!r} for {destination}: bind or tmpfs")
    for destination, opts in command.tmpfs.items():
        # Docker's --tmpfs defaults, which the given options override.
        options = ["noexec", "nosuid", "nodev", *[o for o in opts.split(",") if o], "create=dir"]
        entries.append(f"tmpfs {escape(_relative(destination))} tmpfs {','.join(options)} 0 0")
    return entries


def _dev_entries(command: Command) -> list[str]:
    # /dev/pts is LXC's own (lxc.pty.max): LXC unmounts any other devpts at
    # /dev/pts when it has none to make, and binds its ptmx over /dev/ptmx.
    shm = f"size={command.shm_size // 1024}k" if command.shm_size else "size=65536k"
    return [
        "tmpfs dev tmpfs rw,nosuid,size=65536k,mode=755,create=dir 0 0",
        "mqueue dev/mqueue mqueue rw,nosuid,nodev,noexec,create=dir 0 0",
        f"shm dev/shm tmpfs rw,nosuid,nodev,noexec,mode=1777,{shm},create=dir 0 0",
    ]


def _etc_entries(command: Command) -> list[str]:
    """The daemon's /etc/hostname, /etc/hosts and /etc/resolv.conf of the container, bound in."""
    entries = []
    if command.container_dir:
        for name in ("hostname", "hosts", "resolv.conf"):
            source = os.path.join(command.container_dir, name)
            if os.path.isfile(source):
                entries.append(f"{escape(source)} etc/{name} none bind,create=file 0 0")
    return entries


def _path_entries(command: Command, rootfs_mount: str) -> list[str]:
    """Masked paths (a file: /dev/null bound over it; a directory: an empty read-only tmpfs) and read-only binds.

    The sources of the read-only binds are the container's own paths as they
    are while LXC sets up (its root at ``rootfs_mount``), which is where
    LXC mounts /proc and /sys before the entries.
    """
    entries = []
    for path in masked_paths(command):
        relative = _relative(path)
        # Whether it is a directory is known only inside: both entries are
        # optional, and the bind of /dev/null fails on a directory.
        if _is_directory_in_procfs_or_sysfs(path):
            entries.append(f"tmpfs {escape(relative)} tmpfs ro,nosuid,nodev,noexec,size=0,optional 0 0")
        else:
            entries.append(f"/dev/null {escape(relative)} none bind,optional 0 0")
    for path in readonly_paths(command):
        relative = _relative(path)
        source = os.path.join(rootfs_mount, relative)
        entries.append(f"{escape(source)} {escape(relative)} none rbind,ro,optional 0 0")
    return entries


def _is_directory_in_procfs_or_sysfs(path: str) -> bool:
    """Whether ``path`` (of /proc or /sys, the kernel's, the same inside a container) is a directory here."""
    return os.path.isdir(path)


def hook_script(
    *,
    devices_dir: str,
    started_fifo: str,
    readonly_rootfs: bool,
    proc_sys: Sequence[tuple[str, str]] = (),
    oom_control: str | None = None,
    oom_record: str = "",
) -> str:
    """The one hook script (``lxc.hook.version = 1``: the type is ``$LXC_HOOK_TYPE``).

    * ``mount`` (in the container's namespaces, before pivot_root): copy
      the device nodes into the container's /dev tmpfs, write the sysctls
      and the domain name (``proc_sys``: /proc/sys files and values; written
      here, in the container's namespaces, because LXC's ``lxc.sysctl.*``
      come after the read-only binds of /proc/sys), and remount the root
      read-only when asked;
    * ``start-host`` (on the host, the init set up but not yet exec'd):
      tell the driver the init's PID through a FIFO;
    * ``stop`` (the container's processes are gone, its cgroup not yet):
      keep the v1 ``memory.oom_control`` of LXC's payload cgroup, whose
      ``oom_kill`` count is its own (v1 does not add it to the engine's
      cgroup above), in ``oom_record``;
    * ``post-stop``: refuse LXC's reboot (an init killed by SIGHUP means
      "reboot" to LXC; to Docker it is an exit with 129), so the container stops.
    """
    remount = "".join(f"    printf '%s' {_shell(value)} > {_shell(path)}\n" for path, value in proc_sys)
    if readonly_rootfs:
        remount += '    mount -o remount,bind,ro "$LXC_ROOTFS_MOUNT"\n'
    keep_oom = "    :\n"
    if oom_control:
        keep_oom = f"    cat {_shell(oom_control)} > {_shell(oom_record)} 2>/dev/null || true\n"
    return (
        "#!/bin/sh\n"
        "# Written by the engine's lxc exec driver for this container.\n"
        "set -e\n"
        'case "$LXC_HOOK_TYPE" in\n'
        "mount)\n"
        f'    cp -a {_shell(devices_dir)}/. "$LXC_ROOTFS_MOUNT/dev/"\n'
        f"{remount}"
        "    ;;\n"
        "start-host)\n"
        f'    echo "$LXC_PID" > {_shell(started_fifo)}\n'
        "    ;;\n"
        "stop)\n"
        f"{keep_oom}"
        "    ;;\n"
        "post-stop)\n"
        '    [ "$LXC_TARGET" != reboot ]\n'
        "    ;;\n"
        "esac\n"
    )


def _shell(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def render(
    command: Command,
    *,
    uid: int,
    gid: int,
    groups: Sequence[int],
    env: Iterable[str],
    capabilities: Sequence[str] | None,
    seccomp_path: str | None,
    cgroup: Sequence[tuple[str, str]],
    hook: str,
    rootfs_mount: str,
    namespaces: dict[str, Any],
    console: str | None = None,
) -> str:
    """The configuration file's text.

    :param capabilities: ``CAP_*`` names to keep (the bounding set); None: every one (privileged).
    :param cgroup: the ``lxc.cgroup.*`` keys (:meth:`engine_exec_lxc.cgroup.Placement.config`).
    :param namespaces: ``{"net": path | None, "ipc": path | "new" | None, "pid": bool, "uts": bool}``
        (None: the host's; a path: join it; "new"/True: a new one).
    :param console: with a tty, the pty slave (a host path) bound over /dev/console.
    :raises InvalidParameter: a value LXC's configuration cannot hold.
    """
    lines = [
        "# Written by the engine's lxc exec driver; read by lxc-start and liblxc's attach.",
        _line("lxc.rootfs.path", f"dir:{command.rootfs}"),
        _line("lxc.rootfs.mount", rootfs_mount),
    ]
    clone = ["mnt"]
    if namespaces["pid"]:
        clone.append("pid")
    if namespaces["uts"]:
        clone.append("uts")
        if command.hostname:
            lines.append(_line("lxc.uts.name", command.hostname))
    if namespaces["ipc"] == "new":
        clone.append("ipc")
    elif namespaces["ipc"]:
        lines.append(_line("lxc.namespace.share.ipc", namespaces["ipc"]))
    if namespaces["net"] == "new":
        clone.append("net")
        lines.append("lxc.net.0.type = empty")
    elif namespaces["net"]:
        lines.append(_line("lxc.namespace.share.net", namespaces["net"]))
    lines.append(_line("lxc.namespace.clone", " ".join(clone)))
    lines += [
        "lxc.autodev = 0",
        "lxc.tty.max = 0",
        f"lxc.pty.max = {PTY_MAX}",
        "lxc.apparmor.profile = unconfined",
        f"lxc.mount.auto = proc:rw sys:{'rw' if command.process.privileged else 'ro'}",
    ]
    lines.append("lxc.console.path = none")
    entries = _dev_entries(command) + _etc_entries(command) + _mount_entries(command)
    if console:
        entries.insert(1, f"{escape(console)} dev/console none bind,create=file 0 0")
    for entry in entries + _path_entries(command, rootfs_mount):
        lines.append(_line("lxc.mount.entry", entry))
    lines += [
        "lxc.hook.version = 1",
        _line("lxc.hook.mount", hook),
        _line("lxc.hook.start-host", hook),
        _line("lxc.hook.stop", hook),
        _line("lxc.hook.post-stop", hook),
    ]
    lines += [_line(key, value) for key, value in cgroup]
    lines += [
        _line("lxc.init.uid", str(uid)),
        _line("lxc.init.gid", str(gid)),
        _line("lxc.init.cwd", command.process.cwd or "/"),
    ]
    if groups:
        lines.append(_line("lxc.init.groups", ",".join(str(g) for g in groups)))
    for variable in env:
        if "=" not in variable:
            continue  # LXC would take a bare name from lxc-start's own environment
        lines.append(_line("lxc.environment", variable))
    if capabilities is not None:
        names = [c[len("CAP_") :].lower() for c in capabilities]
        lines.append(_line("lxc.cap.keep", " ".join(names) if names else "none"))
    if command.process.no_new_privileges:
        lines.append("lxc.no_new_privs = 1")
    if seccomp_path:
        lines.append(_line("lxc.seccomp.profile", seccomp_path))
    return "\n".join(lines) + "\n"
