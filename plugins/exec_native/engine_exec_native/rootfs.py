"""The container's file system view, built by its init in a new mount namespace.

Runs in the forked child only, after unshare(CLONE_NEWNS). The order is
libcontainer's (seed ch. 8; runc's ``prepareRootfs``), see
:func:`prepare` and :func:`finalize`:

1. ``/`` becomes rslave, so nothing mounted here propagates to the host,
   while the host's unmounts still reach us (mount_namespaces(7));
2. the rootfs is bind-mounted on itself: pivot_root(2) wants a mount point;
3. /proc, /dev (tmpfs with the device nodes, devpts, shm, mqueue), /sys,
   the command's mounts, /etc/{hostname,hosts,resolv.conf}, /dev/console;
4. pivot_root(".", ".") and a lazy unmount of the old root stacked on top;
5. after sysctls are written: read-only paths, masked paths, and the
   read-only rootfs.

Every mount destination is resolved inside the rootfs with symlinks
clamped to it (:func:`secure_join`), so an image cannot point /proc at the
host's /etc. Errors become :class:`SetupError` with the errno and a remedy.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from engine.errors import NotSupported
from engine.sys import libc, mountopts

__all__ = ["SetupError", "finalize", "mount", "pivot", "prepare", "secure_join", "split_options"]


class SetupError(Exception):
    """A step of the container's set-up failed; the message is for the user."""


def _name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


_HINTS = {
    errno.EPERM: "is the engine running as root with CAP_SYS_ADMIN, outside a locked-down mount namespace?",
    errno.ENODEV: "the kernel does not know this file system type",
    errno.ENOENT: "the mount point or source is missing",
}


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None, what: str) -> None:
    """mount(2), with failures turned into ``<what> failed (EPERM): ...; <remedy>``."""
    try:
        libc.mount(source, target, fstype, flags, data)
    except OSError as exc:
        hint = _HINTS.get(exc.errno or 0)
        raise SetupError(f"{what} failed ({_name(exc)}): {exc.strerror}" + (f"; {hint}" if hint else "")) from None


# mount(8) option names, for user mounts and tmpfs options (shared with the daemon's local volumes).
split_options = mountopts.split_options


# statvfs(3) f_flag bits -> mount(2) flags a bind remount must repeat (a
# remount that drops a flag the kernel locked fails with EPERM).
_STATVFS_FLAGS = (
    (os.ST_NOSUID, libc.MS_NOSUID),
    (os.ST_NODEV, libc.MS_NODEV),
    (os.ST_NOEXEC, libc.MS_NOEXEC),
    (os.ST_NOATIME, libc.MS_NOATIME),
    (os.ST_NODIRATIME, libc.MS_NODIRATIME),
    (os.ST_RELATIME, libc.MS_RELATIME),
)


def _kept_flags(path: str) -> int:
    f_flag = os.statvfs(path).f_flag
    return sum(ms for st, ms in _STATVFS_FLAGS if f_flag & st)


def remount_readonly(path: str, what: str, extra: int = 0) -> None:
    """Make the bind mount at ``path`` read-only, keeping its other flags."""
    mount(path, path, None, libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | _kept_flags(path) | extra, None, what)


def secure_join(root: str, path: str) -> str:
    """``root`` + ``path`` with every symlink on the way resolved as if ``root`` were ``/``.

    Components that do not exist yet are appended as they are. ``..``
    never leaves ``root``.

    :raises SetupError: for a symlink loop.
    """
    pending = [p for p in path.split("/") if p][::-1]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        full = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(full)
        except OSError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 255:
                raise SetupError(f"resolving {path} in the rootfs: too many levels of symbolic links")
            target = os.readlink(full)
            if target.startswith("/"):
                resolved = []
            pending.extend(p for p in target.split("/")[::-1] if p)
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _make_mountpoint(path: str, is_dir: bool) -> None:
    try:
        if is_dir:
            os.makedirs(path, 0o755, exist_ok=True)
            return
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        if not os.path.lexists(path):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    except OSError as exc:
        raise SetupError(f"creating mount point {path} failed ({_name(exc)}): {exc.strerror}") from None


def _target(root: str, destination: str, is_dir: bool = True) -> str:
    path = secure_join(root, destination)
    _make_mountpoint(path, is_dir)
    return path


def _mknod(root: str, device: dict[str, Any], userns: dict[str, Any] | None = None) -> None:
    path = secure_join(root, device["path"])
    # The owner as the container sees it: the host's IDs of the container's (--userns-remap).
    uid = host_id(userns, "uids", device["uid"])
    gid = host_id(userns, "gids", device["gid"])
    kind = stat.S_IFCHR if device["type"] == "c" else stat.S_IFBLK
    try:
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        if os.path.lexists(path):
            os.unlink(path)
        os.mknod(path, kind | device["mode"], os.makedev(device["major"], device["minor"]))
        os.chown(path, device["uid"] if uid is None else uid, device["gid"] if gid is None else gid)
        os.chmod(path, device["mode"])  # mknod(2) applies the umask
    except OSError as exc:
        raise SetupError(f"creating device {device['path']} failed ({_name(exc)}): {exc.strerror}") from None


def _symlink(target: str, path: str) -> None:
    try:
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(target, path)
    except OSError as exc:
        raise SetupError(f"creating symlink {path} -> {target} failed ({_name(exc)}): {exc.strerror}") from None


def _mount_sys(root: str, privileged: bool) -> None:
    target = _target(root, "/sys")
    flags = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC | (0 if privileged else libc.MS_RDONLY)
    try:
        libc.mount("sysfs", target, "sysfs", flags, None)
    except OSError as exc:
        if exc.errno != errno.EPERM:
            raise SetupError(f"mount sysfs on /sys failed ({_name(exc)}): {exc.strerror}") from None
        # sysfs cannot be mounted when the network namespace is not owned by
        # our user namespace; runc falls back to the host's /sys, read-only.
        mount("/sys", target, None, libc.MS_BIND | libc.MS_REC, None, "bind-mounting /sys")
        if not privileged:
            remount_readonly(target, "remounting /sys read-only")


def _make_readonly_recursive(target: str, destination: str, forced: bool) -> None:
    """Make a read-only bind's submounts read-only too (Docker 25's default): where the kernel
    cannot (before 5.12), the bind stays read-only on its own, unless ``forced``."""
    try:
        libc.make_readonly_recursive(target)
    except NotSupported as exc:
        if forced:
            raise SetupError(f"recursive read-only mount of {destination} is not possible: {exc}") from None
    except OSError as exc:
        raise SetupError(f"making {destination} read-only recursively failed ({_name(exc)}): {exc.strerror}") from None


def _mount_cgroups(root: str, sources: list[list[str]], privileged: bool) -> None:
    """The container's own cgroups at ``/sys/fs/cgroup``, as Docker shows them (cgroup namespace
    of the host): on v1 a tmpfs with one bind of the container's directory per hierarchy
    (``memory``, ``cpu``, ``cpuacct``, ``systemd``; a joint ``cpu,cpuacct`` gets a symlink per
    controller), on v2 the container's directory itself; read-only unless privileged."""
    if not sources:
        return
    target = _target(root, "/sys/fs/cgroup")
    common = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC
    readonly = 0 if privileged else libc.MS_RDONLY

    def bind(source: str, at: str, what: str) -> None:
        mount(source, at, None, libc.MS_BIND | libc.MS_REC, None, f"bind-mounting {source} on {what}")
        mount(at, at, None, libc.MS_BIND | libc.MS_REMOUNT | common | readonly, None, f"remounting {what}")

    if len(sources) == 1 and sources[0][0] == "":
        bind(sources[0][1], target, "/sys/fs/cgroup")
        return
    mount("tmpfs", target, "tmpfs", common, "mode=755", "mount tmpfs on /sys/fs/cgroup")
    for name, source in sources:
        at = os.path.join(target, name)
        _make_mountpoint(at, True)
        bind(source, at, f"/sys/fs/cgroup/{name}")
        for controller in name.split(","):
            if controller != name:
                _symlink(name, os.path.join(target, controller))
    if readonly:
        mount(target, target, None, libc.MS_REMOUNT | common | readonly, "mode=755", "remounting /sys/fs/cgroup")


def _user_mount(root: str, item: dict[str, Any]) -> None:
    destination = item["destination"]
    options = list(item.get("options", []))
    recursive_ro = next((o for o in options if o in ("rro", "rro-force")), "")
    flags, propagation, data = split_options(o for o in options if o not in ("rro", "rro-force"))
    if item["type"] == "bind":
        target = _target(root, destination, item.get("is_dir", True))
        if not flags & libc.MS_BIND:
            flags |= libc.MS_BIND | libc.MS_REC  # a volume is an rbind unless told otherwise
        bind_flags = libc.MS_BIND | (flags & libc.MS_REC)
        mount(item["source"], target, None, bind_flags, None, f"bind-mounting {item['source']} on {destination}")
        rest = flags & ~(libc.MS_BIND | libc.MS_REC)
        if rest:
            # mount(2) ignores flags on the first bind; a remount applies them.
            mount(
                target,
                target,
                None,
                libc.MS_BIND | libc.MS_REMOUNT | rest | _kept_flags(target),
                None,
                f"remounting {destination} ({','.join(item.get('options', []))})",
            )
        if recursive_ro:
            _make_readonly_recursive(target, destination, recursive_ro == "rro-force")
        if item.get("propagation"):
            _, propagation, _ = split_options([item["propagation"]])
    else:
        target = _target(root, destination)
        mount("tmpfs", target, "tmpfs", flags, data or None, f"mount tmpfs on {destination}")
    if propagation:
        mount(None, target, None, propagation, None, f"setting the propagation of {destination}")


def host_id(userns: dict[str, Any] | None, kind: str, value: int) -> int | None:
    """The host ID of the container's ``value`` (``kind`` ``uids`` or ``gids``); itself without a
    user namespace, None when the map does not cover it."""
    if not userns:
        return value
    return next((h + value - c for c, h, n in userns[kind] if c <= value < c + n), None)


def _owned(options: str, plan: dict[str, Any], gid: int = 0) -> str:
    """``options`` of a file system made for the container, owned by its root (and group ``gid``)
    on the host: a remapped container's root must own its /dev, as under runc."""
    if not plan.get("userns"):
        return options
    uid, host_gid = host_id(plan["userns"], "uids", 0), host_id(plan["userns"], "gids", gid)
    return f"{options},uid={uid},gid={host_gid}" if uid is not None and host_gid is not None else options


def prepare(plan: dict[str, Any]) -> None:
    """Steps 1-3 of the module docstring: every mount made before pivot_root."""
    root = plan["rootfs"]
    mount(None, "/", None, libc.MS_REC | libc.MS_SLAVE, None, "making / rslave")
    mount(root, root, None, libc.MS_BIND | libc.MS_REC, None, f"bind-mounting the rootfs {root} on itself")

    common = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC
    mount("proc", _target(root, "/proc"), "proc", common, None, "mount proc on /proc")
    dev = _target(root, "/dev")
    dev_opts = _owned("mode=755,size=65536k", plan)
    mount("tmpfs", dev, "tmpfs", libc.MS_NOSUID | libc.MS_STRICTATIME, dev_opts, "mount tmpfs on /dev")
    for device in plan["devices"]:
        _mknod(root, device, plan.get("userns"))
    mount(
        "devpts",
        _target(root, "/dev/pts"),
        "devpts",
        libc.MS_NOSUID | libc.MS_NOEXEC,
        f"newinstance,ptmxmode=0666,mode=0620,gid={host_id(plan.get('userns'), 'gids', 5) or 5}",
        "mount devpts on /dev/pts",
    )
    _symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    if plan["namespaces"]["ipc"] is None:
        # --ipc=host: the host's POSIX shared memory, as Docker does.
        shm = _target(root, "/dev/shm")
        mount("/dev/shm", shm, None, libc.MS_BIND | libc.MS_REC, None, "bind-mounting the host's /dev/shm")
    elif plan.get("mount_shm", True):
        shm = _target(root, "/dev/shm")
        shm_opts = _owned(f"mode=1777,size={plan['shm_size']}", plan)
        mount("shm", shm, "tmpfs", common, shm_opts, "mount tmpfs on /dev/shm")
    mount("mqueue", _target(root, "/dev/mqueue"), "mqueue", common, None, "mount mqueue on /dev/mqueue")
    _mount_sys(root, plan["privileged"])
    _mount_cgroups(root, plan.get("cgroup_mounts") or [], plan["privileged"])
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ):
        _symlink(target, os.path.join(dev, name))
    if plan["console"]:
        # The caller's pty slave is the console (the pty is made outside, on the host's devpts).
        console = os.path.join(dev, "console")
        _make_mountpoint(console, False)
        mount(plan["console"], console, None, libc.MS_BIND, None, f"bind-mounting {plan['console']} on /dev/console")
    for item in plan["mounts"]:
        _user_mount(root, item)
    for source, destination in plan["etc_files"]:
        target = _target(root, destination, is_dir=False)
        mount(source, target, None, libc.MS_BIND, None, f"bind-mounting {source} on {destination}")


def pivot(root: str) -> None:
    """Step 4: make ``root`` the root and drop the host's tree (pivot_root(2), "pivot_root(".", ".")")."""
    try:
        os.chdir(root)
        libc.pivot_root(".", ".")
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EINVAL:
            hint = "; is the host's root a ramfs/initramfs (pivot_root(2) cannot move it)?"
        raise SetupError(f"pivot_root to {root} failed ({_name(exc)}): {exc.strerror}{hint}") from None
    # The old root now sits on top of "."; make it a slave so that detaching
    # it does not unmount anything on the host, then detach it.
    mount(None, ".", None, libc.MS_SLAVE | libc.MS_REC, None, "making the old root rslave")
    try:
        libc.umount2(".", libc.MNT_DETACH)
    except OSError as exc:
        raise SetupError(f"unmounting the old root failed ({_name(exc)}): {exc.strerror}") from None
    os.chdir("/")


def finalize(plan: dict[str, Any]) -> None:
    """Step 5, after pivot_root and sysctls: read-only paths, masked paths, read-only rootfs."""
    for path in plan["readonly_paths"]:
        if not os.path.exists(path):
            continue
        mount(path, path, None, libc.MS_BIND | libc.MS_REC, None, f"bind-mounting {path} for read-only")
        remount_readonly(path, f"remounting {path} read-only")
    for path in plan["masked_paths"]:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            mount("tmpfs", path, "tmpfs", libc.MS_RDONLY, None, f"masking {path}")
        else:
            mount("/dev/null", path, None, libc.MS_BIND, None, f"masking {path}")
    if plan["readonly_rootfs"]:
        remount_readonly("/", "remounting the rootfs read-only")
