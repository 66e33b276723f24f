"""The ``lxc`` exec driver: Docker 1.2's lxc driver made real for LXC 5.

``start`` and ``wait`` are called by the container's shim, as with the
native driver (``start`` in the shim's short-lived starter), so a container
outlives a daemon restart the same way: the shim adopts ``lxc-start -F``
(LXC's monitor), which is the parent of the container's init. ``start``

1. resolves the user against the rootfs's /etc/passwd and /etc/group,
   the capabilities (moby's cap-add/cap-drop rules) and the seccomp profile
   (translated to LXC's policy format, :mod:`.seccomp`);
2. makes the engine's cgroup ``<parent>/<id>`` and applies the limits and
   the device allow-list there (:mod:`engine.sys.cgroups`); LXC makes its
   own cgroup below it (:mod:`.cgroup`);
3. writes ``<home>/<id>/config`` (:mod:`.config`), the hook script and the
   template of /dev, and starts ``lxc-start -F -n <id> -P <home>`` with the
   container's stdio as its own (LXC passes it to the init);
4. learns the init's PID from the ``start-host`` hook (a FIFO), then that
   the init exec'd its program: its ``/proc/PID/exe`` is no longer
   lxc-start. If lxc-start exits first, the start failed: LXC's log says
   why, and ``Failed to exec "x"`` becomes Docker's message
   (``exec: "x": executable file not found in $PATH`` ...);
5. records ``<home>/<id>/state.json`` and returns the init's PID.

``wait`` waits for lxc-start and returns the init's exit code, which LXC
logs (``Child <pid> ended on error (3)``, ``... on signal SIGKILL(9)``:
128+N), then

6. removes what LXC leaves in the cgroup hierarchies, but keeps the engine's
   cgroup (``oom_killed`` and ``stats`` are asked afterwards) until
   :meth:`LxcDriver.terminate`.

The other methods run in the daemon: ``kill`` signals the init directly
(LXC 5 has no ``lxc-kill``), ``pause``/``unpause`` are ``lxc-freeze`` and
``lxc-unfreeze``, ``exec`` spawns ``python -S -m engine_exec_lxc.attach``,
which enters the container with liblxc's attach (:mod:`.liblxc`), and the
figures come from the engine's cgroup.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Sequence
from typing import Any

from engine.drivers.exec import CgroupExecDriver, Command, ExecStartError, Pipes, ProcessConfig, Resources
from engine.errors import Conflict, EngineError, HostError, InvalidParameter, NotFound, PrerequisitesNotMet
from engine.sys import cgroups, libc
from engine.sys.cgroups import DEFAULT_DEVICE_RULES, DeviceRule
from engine.sys.proc import pid_alive, reap, start_time
from engine.sys.security import caps, sysctls
from engine.sys.security.users import UserError, resolve_user
from engine_exec_lxc import cgroup as lxc_cgroup
from engine_exec_lxc import config, liblxc, seccomp
from engine_exec_lxc.cgroup import LxcCgroup, Placement

LOG = logging.getLogger(__name__)

__all__ = ["LxcDriver"]

#: The lxc tools the driver runs.
TOOLS = ("lxc-start", "lxc-freeze", "lxc-unfreeze")
#: Docker's default PATH, for the lookup of an exec's program when its environment has none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_CHILD_EXIT = re.compile(r"Child <\d+> ended on error \((\d+)\)")
_CHILD_SIGNAL = re.compile(r"Child <\d+> ended on signal \w*\((\d+)\)")
_FAILED_EXEC = re.compile(r":\d+ - ([^\n]+?) - Failed to exec \"(.*)\"$", re.M)
_LOG_ERROR = re.compile(r"^\S+ \S+ \S+ ERROR\s+\S+ - \S+ - (.*)$", re.M)
_STRERRORS = {os.strerror(code): code for code in errno.errorcode}
_MAX_HOSTNAME = 64


def docker_exec_error(name: str, code: int, text: str = "") -> str:
    """Docker's (runc's) message for an execve(2) of ``name`` that failed with ``code``."""
    if code == errno.ENOENT:
        if "/" in name:
            return f'exec: "{name}": stat {name}: no such file or directory'
        return f'exec: "{name}": executable file not found in $PATH'
    if code == errno.EACCES:
        return f'exec: "{name}": permission denied'
    return f'exec: "{name}": {(text or os.strerror(code)).lower()}'


def _exe_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class LxcDriver(CgroupExecDriver):
    """Linux containers run by LXC 5: lxc-start, liblxc's attach, the freezer, the engine's cgroups.

    :param home: LXC's path (``-P``): ``<home>/<id>/`` holds each container's
        configuration, hook, log and state; the shim and the daemon use the same one.
    """

    name = "lxc"
    #: LXC takes one cgroup path relative to its own (or PID 1's) cgroup for every hierarchy, so
    #: its containers go below the daemon's cgroups, not at Docker's absolute /docker (which
    #: fails where the daemon's memory cgroup is nested, as on this project's hosts).
    default_cgroup_parent = "engine"

    def __init__(self, home: str, options: Sequence[str] | None = ()) -> None:
        super().__init__(home, options)
        #: container id -> its lxc-start, from start() to wait() when both run in this process.
        self._monitors: dict[str, subprocess.Popen] = {}

    # ---- probing

    @classmethod
    def probe(cls, home: str, options: Sequence[str] = ()) -> None:
        """Check root, the lxc tools, liblxc, and the cgroups LXC and the engine need.

        :raises PrerequisitesNotMet: listing every reason.
        """
        reasons = []
        if os.geteuid() != 0:
            reasons.append("it needs root")
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            reasons.append(f"the lxc tools are not installed ({', '.join(missing)}; Debian: apt-get install lxc)")
        problem = liblxc.available()
        if problem is not None:
            reasons.append(problem)
        try:
            layout = cgroups.read_layout()
            if layout.v2 is None and not layout.v1:
                reasons.append("no cgroup file system is mounted")
            else:
                if not layout.has("memory"):
                    reasons.append("the cgroup memory controller is not available")
                if not layout.has("freezer"):
                    reasons.append("the cgroup freezer is not available (pause needs it)")
        except OSError as exc:
            reasons.append(f"cannot read the cgroup mounts: {exc}")
        for kind in ("mnt", "pid", "uts", "ipc", "net"):
            if not os.path.exists(f"/proc/self/ns/{kind}"):
                reasons.append(f"the kernel has no {kind} namespaces")
        if reasons:
            raise PrerequisitesNotMet("lxc exec driver: " + "; ".join(reasons))

    def info(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"cgroup_driver": "cgroupfs"}
        try:
            facts["cgroup_version"] = str(cgroups.read_layout().version)
            facts["lxc_version"] = liblxc.version()
        except (OSError, AttributeError):
            pass
        return facts

    def seccomp_support(self) -> str | None:
        """None: LXC loads the translated profile (liblxc links libseccomp) where the kernel filters."""
        try:
            with open("/proc/self/status") as fh:
                if not any(line.startswith("Seccomp:") for line in fh):
                    return "the kernel has no seccomp"
        except OSError as exc:
            return f"cannot read /proc/self/status: {exc}"
        return None

    # ---- state

    def _dir(self, id: str) -> str:
        return os.path.join(self.home, id)

    def _path(self, id: str, name: str) -> str:
        return os.path.join(self.home, id, name)

    def _save_state(self, id: str, state: dict[str, Any]) -> None:
        """Write the state file atomically, without an fsync: it describes running processes,
        which a reboot ends."""
        path = self._path(id, "state.json")
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(state).encode())
        finally:
            os.close(fd)
        os.rename(tmp, path)

    def _load_state(self, id: str) -> dict[str, Any] | None:
        try:
            with open(self._path(id, "state.json")) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise HostError(f"lxc exec driver: the state of container {id} is corrupt: {exc}") from exc

    def cgroup_of(self, command: Command) -> LxcCgroup:
        state = self._load_state(command.id)
        if state is not None and state.get("cgroup"):
            return LxcCgroup.from_state(state["cgroup"])
        return LxcCgroup(command.cgroup_parent, command.id)

    def _running_pid(self, command: Command) -> int:
        state = self._load_state(command.id)
        if state is None or not state.get("pid"):
            raise NotFound(f"container {command.id} is not running")
        pid = state["pid"]
        if state.get("exited") or start_time(pid) != state.get("start_time"):
            raise NotFound(f"container {command.id} is not running (its process {pid} has exited)")
        return pid

    # ---- run: preparing

    @staticmethod
    def _capabilities(process: ProcessConfig) -> list[str]:
        everything = caps.available()
        names = caps.tweak(caps.DEFAULT_CAPABILITIES, process.cap_add, process.cap_drop, process.privileged, everything)
        missing = [n for n in names if n not in everything]
        if missing:
            raise InvalidParameter(
                f"cannot grant {', '.join(missing)}: the engine itself does not have "
                f"{'it' if len(missing) == 1 else 'them'} (its bounding set)"
            )
        return names

    @staticmethod
    def _namespaces(command: Command) -> dict[str, Any]:
        network = command.network or {"mode": "host"}
        mode = network.get("mode", "host")
        if mode == "host":
            net = None
        elif network.get("path"):
            net = network["path"]
        elif mode == "none":
            net = "new"
        else:
            raise InvalidParameter(f"network mode {mode!r} needs the path of a network namespace")
        ipc_mode = command.ipc_mode or "private"
        if ipc_mode in ("private", "shareable"):
            ipc: str | None = "new"
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
        return {"net": net, "ipc": ipc, "pid": command.pid_mode != "host", "uts": command.uts_mode != "host"}

    @staticmethod
    def _check_sysctls(command: Command, namespaces: dict[str, Any]) -> None:
        def private(value: str | None, kind: str) -> bool:
            if value is None:
                return False
            if value == "new":
                return True
            mine, theirs = os.stat(f"/proc/self/ns/{kind}"), os.stat(value)
            return (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino)

        for key in command.sysctls:
            sysctls.check(
                key,
                private_ipc=private(namespaces["ipc"], "ipc"),
                private_net=private(namespaces["net"], "net"),
                private_uts=namespaces["uts"],
            )

    @staticmethod
    def _devices(command: Command) -> list[tuple[str, str, int, int, int, str]]:
        """(path in the container, type, major, minor, mode, permissions) of every device node to make."""
        found = [(f"/dev/{name}", "c", major, minor, 0o666, "rwm") for name, major, minor in config.DEFAULT_DEVICES]
        if command.process.privileged:
            requested = [{"path_on_host": "/dev", "path_in_container": "/dev", "permissions": "rwm"}]
        else:
            requested = list(command.devices)
        for item in requested:
            host = item.get("path_on_host", "")
            inside = item.get("path_in_container") or host
            permissions = item.get("permissions") or "rwm"
            if set(permissions) - set("rwm"):
                raise InvalidParameter(f"invalid device permissions {permissions!r} for {host}: use r, w and m")
            try:
                candidates = []
                if os.path.isdir(host):
                    for directory, dirs, files in os.walk(host):
                        if directory == "/dev":
                            # made per container, or not devices (moby's HostDevices skips them)
                            dirs[:] = [d for d in dirs if d not in ("pts", "shm", "fd", "mqueue")]
                            files = [f for f in files if f not in ("console", "ptmx")]
                        for name in sorted(files):
                            full = os.path.join(directory, name)
                            candidates.append((full, os.path.join(inside, os.path.relpath(full, host))))
                else:
                    candidates.append((host, inside))
                for source, target in candidates:
                    st = os.lstat(source) if os.path.isdir(host) else os.stat(source)
                    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                        kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
                        found = [d for d in found if d[0] != target]
                        found.append(
                            (
                                target,
                                kind,
                                os.major(st.st_rdev),
                                os.minor(st.st_rdev),
                                stat.S_IMODE(st.st_mode),
                                permissions,
                            )
                        )
                    elif not os.path.isdir(host):
                        raise InvalidParameter(
                            f'error gathering device information while adding custom device "{host}": not a device node'
                        )
            except FileNotFoundError as exc:
                raise NotFound(
                    f'error gathering device information while adding custom device "{host}": no such file or directory'
                ) from exc
        return found

    @staticmethod
    def _device_rules(command: Command, devices: list[tuple[str, str, int, int, int, str]]) -> list[str]:
        if command.process.privileged:
            return ["a *:* rwm"]
        rules = [str(DeviceRule.parse(r)) for r in (command.resources.device_rules or DEFAULT_DEVICE_RULES)]
        for _path, kind, major, minor, _mode, permissions in devices[len(config.DEFAULT_DEVICES) :]:
            rules.append(f"{kind} {major}:{minor} {permissions}")
        return rules

    @staticmethod
    def _make_devices(directory: str, devices: list[tuple[str, str, int, int, int, str]]) -> None:
        """The template of /dev: the nodes and the ptmx symlink, copied in by the mount hook."""
        if os.path.isdir(directory):
            shutil.rmtree(directory)
        os.mkdir(directory, 0o755)
        for path, kind, major, minor, mode, _ in devices:
            if not path.startswith("/dev/"):
                raise InvalidParameter(f"device {path}: only paths below /dev are supported by the lxc exec driver")
            target = os.path.join(directory, os.path.relpath(path, "/dev"))
            os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
            node = stat.S_IFCHR if kind == "c" else stat.S_IFBLK
            os.mknod(target, node | mode, os.makedev(major, minor))
            os.chmod(target, mode)

    @staticmethod
    def _make_cwd(rootfs: str, cwd: str) -> None:
        """Create the working directory inside the rootfs if it is missing (runc does), without leaving it."""
        root = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            current = os.dup(root)
            try:
                for part in [p for p in cwd.split("/") if p]:
                    try:
                        nxt = libc.openat2(
                            current, part, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0, libc.RESOLVE_IN_ROOT
                        )
                    except FileNotFoundError:
                        os.mkdir(part, 0o755, dir_fd=current)
                        nxt = libc.openat2(
                            current, part, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0, libc.RESOLVE_IN_ROOT
                        )
                    os.close(current)
                    current = nxt
            finally:
                os.close(current)
        except OSError as exc:
            raise ExecStartError(f"cannot create the working directory {cwd}: {exc.strerror}") from None
        finally:
            os.close(root)

    def _prepare(self, command: Command, console: str | None = None) -> tuple[LxcCgroup, Placement, str]:
        """Everything before lxc-start: the files in ``<home>/<id>``, the engine's cgroup with its limits."""
        process = command.process
        if not process.args:
            raise InvalidParameter("no command specified")
        if command.uts_mode != "host" and len(command.hostname) > _MAX_HOSTNAME:
            raise ExecStartError(f"setting the host name {command.hostname!r} failed: it is longer than 64 characters")
        namespaces = self._namespaces(command)
        try:
            self._check_sysctls(command, namespaces)
            user = resolve_user(
                process.user,
                os.path.join(command.rootfs, "etc/passwd"),
                os.path.join(command.rootfs, "etc/group"),
                process.additional_groups,
            )
        except UserError as exc:
            raise ExecStartError(str(exc)) from None
        except InvalidParameter as exc:
            raise ExecStartError(str(exc)) from None
        names = self._capabilities(process)
        devices = self._devices(command)
        directory = self._dir(command.id)
        os.makedirs(directory, 0o700, exist_ok=True)
        for name in ("state.json", "lxc.log", "started", "payload.oom_control"):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass
        self._make_devices(os.path.join(directory, "dev"), devices)
        self._make_cwd(command.rootfs, process.cwd or "/")
        policy = seccomp.policy(command.seccomp_profile, names)
        seccomp_path = None
        if policy is not None:
            seccomp_path = os.path.join(directory, "seccomp.policy")
            with open(seccomp_path, "w") as fh:
                fh.write(policy)
        cg = LxcCgroup(command.cgroup_parent, command.id)
        proc_sys = [(sysctls.proc_path(key), value) for key, value in command.sysctls.items()]
        if command.domainname and command.uts_mode != "host":
            proc_sys.append(("/proc/sys/kernel/domainname", command.domainname))
        hook = os.path.join(directory, "hook")
        with open(hook, "w") as fh:
            fh.write(
                config.hook_script(
                    devices_dir=os.path.join(directory, "dev"),
                    started_fifo=os.path.join(directory, "started"),
                    readonly_rootfs=command.readonly_rootfs,
                    proc_sys=proc_sys,
                    oom_control=_v1_file(cg.payload_path("memory"), "memory.oom_control", cg.version),
                    oom_record=os.path.join(directory, "payload.oom_control"),
                )
            )
        os.chmod(hook, 0o700)
        env = list(process.env)
        if not any(v.startswith("HOME=") for v in env):
            env.append(f"HOME={user.home}")
        resources = Resources(**{k: getattr(command.resources, k) for k in command.resources.fields()})
        resources.device_rules = self._device_rules(command, devices)
        cg.validate(resources)
        placement = lxc_cgroup.lxc_placement(cg)
        rootfs_mount = os.path.join(self.home, ".rootfs")
        os.makedirs(rootfs_mount, 0o755, exist_ok=True)
        text = config.render(
            command,
            uid=user.uid,
            gid=user.gid,
            groups=user.sgids,
            env=env,
            capabilities=None if process.privileged else names,
            seccomp_path=seccomp_path,
            cgroup=placement.config(),
            hook=hook,
            rootfs_mount=rootfs_mount,
            namespaces=namespaces,
            console=console,
        )
        with open(os.path.join(directory, "config"), "w") as fh:
            fh.write(text)
        if cg.exists():
            # Left by an earlier run of the same container (a restart without
            # terminate): its counters (oom_kill) must not leak into this run.
            if cg.pids():
                raise Conflict(f"container {command.id} is already running")
            cg.destroy()
        cg.create()
        try:
            cg.let_children_inherit_cpusets()
            cg.apply(resources)
        except BaseException:
            cg.destroy()
            raise
        return cg, placement, os.path.join(directory, "started")

    # ---- run

    def start(self, command: Command, pipes: Pipes) -> int:
        """Start the container with ``lxc-start -F``; the init's PID once it runs the program.

        ``lxc-start`` (the monitor, LXC's own parent of the init) is the process :meth:`wait`
        waits for. See the module docstring for the steps.

        :raises ExecStartError: the process could not be started (Docker's message).
        :raises InvalidParameter: the command or its limits are invalid.
        """
        stdio: list[int | None] = [pipes.stdin, pipes.stdout, pipes.stderr]
        console_master: int | None = None
        console_path: str | None = None
        owned: list[int] = []
        if command.process.tty:
            if pipes.console is not None:
                # The shim's console socket: the pty is ours to make (on the
                # host's devpts; bound over /dev/console inside), its master goes back.
                console_master, slave = os.openpty()
                owned.append(slave)
                stdio = [slave, slave, slave]
            if stdio[0] is None or not os.isatty(stdio[0]):
                raise InvalidParameter("a tty was requested but stdin is not a terminal (pass the pty slave)")
            size = command.process.console_size
            if size:
                fcntl.ioctl(stdio[0], termios.TIOCSWINSZ, struct.pack("HHHH", int(size[0]), int(size[1]), 0, 0))
            console_path = os.ttyname(stdio[0])
        try:
            cg, placement, fifo = self._prepare(command, console_path)
            try:
                os.mkfifo(fifo, 0o600)
                fifo_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except BaseException:
                cg.destroy()
                raise
            try:
                proc = self._spawn_lxc_start(command, stdio)
            except BaseException:
                os.close(fifo_fd)
                cg.destroy()
                raise
        except BaseException:
            if console_master is not None:
                os.close(console_master)
            raise
        finally:
            for fd in owned:
                os.close(fd)
        try:
            pid = self._await_start(command, proc, fifo_fd)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            lxc_cgroup.remove_leftovers(placement)
            cg.destroy()
            if console_master is not None:
                os.close(console_master)
            raise
        finally:
            os.close(fifo_fd)
        if console_master is not None:
            sock = socket.socket(fileno=pipes.console)
            try:
                socket.send_fds(sock, [b"M"], [console_master])
            finally:
                sock.detach()
                os.close(console_master)
        self._save_state(
            command.id,
            {
                "id": command.id,
                "pid": pid,
                "start_time": start_time(pid),
                "monitor": proc.pid,
                "cgroup": cg.to_state(),
                "placement": placement.to_state(),
            },
        )
        # Kept for wait() in this process: a Popen dropped while its process runs is reaped by
        # the next one subprocess starts.
        self._monitors[command.id] = proc
        return pid

    def wait(self, command: Command) -> int:
        """Wait for ``lxc-start`` (ours, or adopted from the child that ran :meth:`start`), kill what
        is left in the cgroups, record the exit; the init's exit code."""
        state = self._load_state(command.id)
        if state is None:
            raise NotFound(f"container {command.id} was not started by this driver")
        proc = self._monitors.pop(command.id, None)
        if proc is not None:  # started in this process
            proc.wait()
        else:
            reap(int(state["monitor"]))
        cg = self.cgroup_of(command)
        placement = Placement(bool(state["placement"]["relative"]), state["placement"]["directory"])
        code = self._exit_code(command)
        lxc_cgroup.remove_leftovers(placement)
        try:
            cg.kill()  # with --pid=host what the init left behind
        except (EngineError, OSError) as exc:
            LOG.warning("container %s: killing what is left failed: %s", command.id, exc)
        state = self._load_state(command.id)
        if state is not None:
            state.update(exited=True, exit_code=code)
            try:
                self._save_state(command.id, state)
            except FileNotFoundError:
                pass  # terminate() has just removed the container's directory
        return code

    def _spawn_lxc_start(self, command: Command, stdio: list[int | None]) -> subprocess.Popen:
        argv = [
            "lxc-start",
            "-F",
            "-q",
            "-n",
            command.id,
            "-P",
            self.home,
            "-o",
            self._path(command.id, "lxc.log"),
            "-l",
            "INFO",
            "--",
            *command.process.args,
        ]
        return subprocess.Popen(
            argv,
            stdin=stdio[0] if stdio[0] is not None else subprocess.DEVNULL,
            stdout=stdio[1] if stdio[1] is not None else subprocess.DEVNULL,
            stderr=stdio[2] if stdio[2] is not None else subprocess.DEVNULL,
            close_fds=True,
            env={"PATH": os.environ.get("PATH", DEFAULT_PATH)},
        )

    def _await_start(self, command: Command, proc: subprocess.Popen, fifo_fd: int) -> int:
        """The init's PID once it exec'd the container's program.

        :raises ExecStartError: lxc-start exited before (LXC's reason, or Docker's message for a failed exec).
        """
        data = b""
        poller = select.poll()
        poller.register(fifo_fd, select.POLLIN)
        while b"\n" not in data:
            if poller.poll(20):
                chunk = os.read(fifo_fd, 64)
                data += chunk
                if chunk:
                    continue
            if proc.poll() is not None:
                # It may have exited after writing: read what is there.
                try:
                    data += os.read(fifo_fd, 64)
                except BlockingIOError:
                    pass
                if b"\n" not in data:
                    raise self._start_failure(command)
        pid = int(data.split(b"\n", 1)[0])
        lxc_start = _exe_identity(f"/proc/{proc.pid}/exe")
        delay = 0.0005
        while True:
            current = _exe_identity(f"/proc/{pid}/exe")
            if current is not None and current != lxc_start:
                return pid
            if proc.poll() is not None or current is None:
                # The init is gone (or never exec'd): lxc-start's log tells which.
                proc.wait()
                failure = self._failed_exec(command)
                if failure is not None:
                    raise failure
                return pid
            time.sleep(delay)
            delay = min(delay * 2, 0.01)

    def _log(self, command: Command) -> str:
        try:
            with open(self._path(command.id, "lxc.log"), errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def _failed_exec(self, command: Command) -> ExecStartError | None:
        match = _FAILED_EXEC.search(self._log(command))
        if match is None:
            return None
        text, name = match.group(1), match.group(2)
        return ExecStartError(docker_exec_error(name, _STRERRORS.get(text, 0), text))

    def _start_failure(self, command: Command) -> EngineError:
        failure = self._failed_exec(command)
        if failure is not None:
            return failure
        errors = _LOG_ERROR.findall(self._log(command))
        reason = "; ".join(dict.fromkeys(e.strip() for e in errors if "Additional information" not in e))
        return ExecStartError(f"lxc-start failed: {reason or 'no reason in its log'}")

    def _exit_code(self, command: Command) -> int:
        if not os.path.exists(self._path(command.id, "lxc.log")):
            # terminate() removed the container's files while lxc-start ended: it killed everything.
            return 128 + signal.SIGKILL
        log = self._log(command)
        signalled = _CHILD_SIGNAL.findall(log)
        if signalled:
            return 128 + int(signalled[-1])
        exited = _CHILD_EXIT.findall(log)
        if exited:
            return int(exited[-1])
        return 0

    # ---- exec

    @staticmethod
    def _lookup(root: str, name: str, env: list[str], cwd: str) -> None:
        """Check that ``name`` can be exec'd in the container whose root is ``root``, as execvp(3) looks it up.

        :raises ExecStartError: Docker's message otherwise.
        """
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:

            def check(path: str) -> int:
                try:
                    fd = libc.openat2(root_fd, path, os.O_PATH | os.O_CLOEXEC, 0, libc.RESOLVE_IN_ROOT)
                except OSError as exc:
                    return exc.errno or errno.ENOENT
                try:
                    st = os.fstat(fd)
                finally:
                    os.close(fd)
                if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
                    return errno.EACCES
                return 0

            if "/" in name:
                code = check(name if name.startswith("/") else os.path.join(cwd, name))
                if code:
                    raise ExecStartError(docker_exec_error(name, code))
                return
            search = next((v[len("PATH=") :] for v in env if v.startswith("PATH=")), DEFAULT_PATH)
            denied = False
            for directory in search.split(":"):
                code = check(
                    os.path.join(directory or ".", name)
                    if directory.startswith("/")
                    else os.path.join(cwd, directory, name)
                )
                if code == 0:
                    return
                denied = denied or code == errno.EACCES
            raise ExecStartError(docker_exec_error(name, errno.EACCES if denied else errno.ENOENT))
        finally:
            os.close(root_fd)

    def exec(
        self, command: Command, process: ProcessConfig, pipes: Pipes, start_callback: Callable[[int], Any] | None = None
    ) -> int:
        """Run ``process`` in the running container through the ``attach`` helper (liblxc); return its exit code.

        :raises NotFound: the container is not running.
        :raises Conflict: it is paused.
        :raises ExecStartError: the process could not be started (Docker's message).
        """
        pid = self._running_pid(command)
        cg = self.cgroup_of(command)
        if cg.payload_freezer_state() == "FROZEN":
            raise Conflict(f"Container {command.id} is paused, unpause the container before exec")
        if not process.args:
            raise InvalidParameter("no command specified")
        root = f"/proc/{pid}/root"
        try:
            user = resolve_user(
                process.user,
                os.path.join(root, "etc/passwd"),
                os.path.join(root, "etc/group"),
                process.additional_groups,
            )
        except InvalidParameter as exc:
            raise ExecStartError(str(exc)) from None
        env = list(process.env)
        if not any(v.startswith("HOME=") for v in env):
            env.append(f"HOME={user.home}")
        cwd = process.cwd or "/"
        self._lookup(root, process.args[0], env, cwd)
        config_data: dict[str, Any] = {
            "name": command.id,
            "lxcpath": self.home,
            "init_pid": pid,
            "args": list(process.args),
            "env": [v for v in env if "=" in v],
            "cwd": cwd,
            "uid": user.uid,
            "gid": user.gid,
            "groups": user.sgids,
            "console": None,
            "console_size": list(process.console_size) if process.console_size else None,
        }
        owned: list[int] = []
        stdio: list[int | None] = []
        try:
            if process.tty and pipes.console is not None:
                config_data["console"] = fcntl.fcntl(pipes.console, fcntl.F_DUPFD_CLOEXEC, 3)
                owned.append(config_data["console"])
                stdio = [None, None, None]
            else:
                for fd in (pipes.stdin, pipes.stdout, pipes.stderr):
                    if fd is None:
                        stdio.append(None)
                        continue
                    copy = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
                    owned.append(copy)
                    stdio.append(copy)
                if process.tty and process.console_size and pipes.stdin is not None and os.isatty(pipes.stdin):
                    rows, cols = process.console_size
                    fcntl.ioctl(pipes.stdin, termios.TIOCSWINSZ, struct.pack("HHHH", int(rows), int(cols), 0, 0))
            config_data["stdio"] = stdio
            cfg_r, cfg_w = os.pipe2(os.O_CLOEXEC)
            status_r, status_w = os.pipe2(os.O_CLOEXEC)
            owned += [cfg_r, cfg_w, status_r, status_w]
            helper = subprocess.Popen(
                [sys.executable, "-S", "-m", "engine_exec_lxc.attach", str(cfg_r), str(status_w)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=[cfg_r, status_w, *[fd for fd in [*stdio, config_data["console"]] if fd is not None]],
                env={"PYTHONPATH": os.pathsep.join(_package_roots())},
                close_fds=True,
            )
        except BaseException:
            for fd in owned:
                os.close(fd)
            raise
        for fd in owned:
            if fd not in (cfg_w, status_r):
                os.close(fd)
        try:
            with os.fdopen(cfg_w, "wb") as fh:
                fh.write(json.dumps(config_data).encode())
        except BrokenPipeError:
            pass
        code: int | None = None
        failure: str | None = None
        with os.fdopen(status_r, "rb") as events:
            for line in events:
                event = json.loads(line)
                if event["event"] == "error":
                    failure = event["message"]
                elif event["event"] == "started":
                    if start_callback is not None:
                        start_callback(event["pid"])
                elif event["event"] == "exit":
                    code = event["code"]
        _, stderr = helper.communicate()
        if failure is not None:
            try:
                self._running_pid(command)
            except NotFound:
                raise NotFound(f"container {command.id} is not running") from None
            raise ExecStartError(failure)
        if code is None:
            raise HostError(
                f"exec in container {command.id}: the attach helper died (exit {helper.returncode}): "
                f"{stderr.decode(errors='replace').strip()[-2000:]}"
            )
        return code

    # ---- the rest

    def kill(self, command: Command, signal: int) -> None:
        """Send ``signal`` to the container's init.

        :raises NotFound: the container is not running.
        """
        pid = self._running_pid(command)
        try:
            os.kill(pid, signal)
        except ProcessLookupError:
            raise NotFound(f"container {command.id} is not running (its process {pid} has exited)") from None

    def _tool(self, command: Command, tool: str) -> None:
        result = subprocess.run(
            [tool, "-n", command.id, "-P", self.home],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise HostError(f"{tool} failed for container {command.id}: {result.stderr.strip() or result.returncode}")

    def pause(self, command: Command) -> None:
        """Freeze the container (``lxc-freeze``)."""
        self._running_pid(command)
        if self.cgroup_of(command).payload_freezer_state() == "FROZEN":
            raise Conflict(f"container {command.id} is already paused")
        self._tool(command, "lxc-freeze")

    def unpause(self, command: Command) -> None:
        """Thaw the container (``lxc-unfreeze``)."""
        self._running_pid(command)
        if self.cgroup_of(command).payload_freezer_state() != "FROZEN":
            raise Conflict(f"container {command.id} is not paused")
        self._tool(command, "lxc-unfreeze")

    def terminate(self, command: Command) -> None:
        """Kill every process of the container, remove its cgroups, its files and its state (idempotent)."""
        state = self._load_state(command.id)
        cg = self.cgroup_of(command)
        try:
            # The init first: its death takes the whole PID namespace with it, so the container's
            # exit is always the init's SIGKILL (137), whatever order the cgroup's kill goes in
            # (the rest could die first and let a shell init exit 0 from its wait).
            os.kill(self._running_pid(command), signal.SIGKILL)
        except (NotFound, ProcessLookupError):
            pass
        cg.destroy()
        if state is not None and state.get("placement"):
            placement = Placement(bool(state["placement"]["relative"]), state["placement"]["directory"])
            monitor = state.get("monitor")
            if monitor:
                _await_exit(monitor, 5.0)
            lxc_cgroup.remove_leftovers(placement)
            # A monitor that was still tearing down can leave a directory behind it (seen once in
            # blkio under load): with the monitor gone, nothing makes them again.
            cg.destroy()
        shutil.rmtree(self._dir(command.id), ignore_errors=True)

    def oom_killed(self, command: Command) -> bool:
        """Whether the OOM killer killed a process of the container (asked after ``run`` returned)."""
        if super().oom_killed(command):
            return True
        try:
            with open(self._path(command.id, "payload.oom_control")) as fh:
                counts = dict(line.split() for line in fh if len(line.split()) == 2)
        except FileNotFoundError:
            return False
        return int(counts.get("oom_kill", "0")) > 0


def _v1_file(directory: str | None, name: str, version: int) -> str | None:
    return os.path.join(directory, name) if directory is not None and version == 1 else None


def _await_exit(pid: int, timeout: float) -> None:
    """Wait until ``pid`` (not our child) is gone, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):  # gone, or a zombie
            return
        time.sleep(0.01)


def _package_roots() -> list[str]:
    """The directories holding ``engine`` and ``engine_exec_lxc``, for the helper's ``python -S``."""
    import engine
    import engine_exec_lxc

    roots: list[str] = []
    for module in (engine_exec_lxc, engine):
        root = os.path.dirname(os.path.dirname(os.path.abspath(module.__file__ or "")))
        if root not in roots:
            roots.append(root)
    return roots
