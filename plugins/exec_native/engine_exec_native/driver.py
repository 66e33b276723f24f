"""The ``native`` exec driver: containers from namespaces, pivot_root, cgroups and capabilities, in Python.

The container's shim (one per container, a single threaded ``python -S``
process) calls ``start`` in a short-lived child of its own and ``wait`` in
itself, having made itself a child subreaper to adopt the init when that
child exits (``run``, the contract's default, calls both in one process).
``start``

1. creates the cgroup (``command.cgroup_parent``/``command.id``) and applies
   the limits and the device allow-list;
2. unshares the PID namespace of its caller when ``pid_mode`` is
   private: unshare(CLONE_NEWPID) moves only the caller's *future children*
   (pid_namespaces(7)), so the next fork is PID 1 of a new namespace;
3. forks the init, which sets itself up (:func:`engine_exec_native.init.container_init`)
   and waits on the *sync pipe*; the parent puts it in the cgroup and
   writes one byte, so that everything the init does is accounted;
4. reads the *error pipe* to EOF: EOF alone means execve succeeded; a
   message means the start failed, raised as :class:`ExecStartError`;
5. records ``<home>/<id>.json`` (init PID, its start time, the cgroup's
   directories) and returns the init's PID.

``wait`` waits for the init and returns its exit code (128+N when killed by
signal N, as Docker reports), then

6. kills what is left in the cgroup but keeps the cgroup: the shim asks
   :meth:`NativeDriver.oom_killed` afterwards, and :meth:`NativeDriver.terminate`
   removes it and the state file. A start that fails removes the cgroup itself.

Once the init is forked, the caller's PID namespace for children is set back
to its own (setns(2)), so it may start threads again (clone(2) refuses
``CLONE_THREAD`` while the two differ). ``start`` forks Python, so the caller
must not have other threads at that point, and it must not reap children
with ``waitpid(-1)``.

``exec`` and the other methods are called by the daemon (multi-threaded, and
maybe restarted since ``run``): they find the container from the state file.
``exec`` never forks the daemon: its helper, :mod:`engine_exec_native.nsenter`,
joins the cgroup and every namespace of the init and forks the process there
(setns(2) into a PID namespace, again, applies to children only). The helper
is a fork of the daemon's warm fork server (:attr:`ExecDriver.helpers`, the
shim fork server, which has this package imported), or a new ``python -S``
where there is none.

The seccomp filter is compiled here, before the fork, from the command's
profile (once per profile and capability set: :mod:`engine_exec_native.seccomp`),
and recorded in the state file for ``exec``.

With ``command.user_namespace`` (``--userns-remap``) the init makes its
user namespace last, once the mounts are done (the kernel mounts proc only
for a caller privileged over the PID namespace's owner, and this one belongs
to the host's user namespace): it tells the parent on a third pipe, the
parent writes ``uid_map`` and ``gid_map`` and lets it go on; the container's
root is then the remapped user of the host, privileged inside its user
namespace only. ``exec`` joins that user namespace after the others.

Not done: AppArmor profiles, a cgroup namespace, and
device rules on cgroup v2 (see :mod:`engine.sys.cgroups`).
This module imports only the standard library's light modules, ctypes and
the engine's contract, so the shim stays small.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from engine.drivers.exec import CgroupExecDriver, Command, ExecStartError, Pipes, ProcessConfig
from engine.errors import (
    Conflict,
    EngineError,
    HostError,
    InvalidParameter,
    NotFound,
    NotSupported,
    PrerequisitesNotMet,
)
from engine.sys import cgroups, libc
from engine.sys.cgroups import Cgroup, CgroupLayout
from engine.sys.proc import start_time
from engine_exec_native import init, seccomp, spec, systemd

LOG = logging.getLogger(__name__)

#: The exec helper as the fork server calls it (:func:`engine_exec_native.nsenter.forked`).
HELPER = "engine_exec_native.nsenter:forked"

__all__ = ["NativeDriver"]

_CAP_SYS_ADMIN = 21
_UNKNOWN = object()


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def _wait(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            LOG.warning("process %s was reaped by someone else; its exit code is lost", pid)
            return 255
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            return _exit_code(status)


def _fork_into(v2_directory: str | None) -> tuple[int, bool]:
    """fork(2), the child born in the cgroup ``v2_directory`` where the kernel can (CLONE_INTO_CGROUP);
    the PID (0 in the child), and whether it was born there."""
    if v2_directory is None:
        return os.fork(), False
    fd = os.open(v2_directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        pid = libc.fork_into_cgroup(fd)
    finally:
        os.close(fd)
    return (os.fork(), False) if pid is None else (pid, True)


class NativeDriver(CgroupExecDriver):
    """Native Linux containers from Python: namespaces, pivot_root, cgroups, capabilities (no runc).

    :param home: where the state of running containers is kept
        (``<home>/<id>.json``); the shim and the daemon must use the same one.
    """

    name = "native"

    def __init__(self, home: str, options: Sequence[str] | None = ()) -> None:
        super().__init__(home, options)
        self._seccomp_support: Any = _UNKNOWN
        #: ``cgroupfs`` or ``systemd`` (``--exec-opt native.cgroupdriver=``).
        self.cgroup_driver = parse_options(self.options)["native.cgroupdriver"]
        self._cgroup_layout: CgroupLayout | None = None

    # ---- probing

    @classmethod
    def probe(cls, home: str, options: Sequence[str] = ()) -> None:
        """Check root, namespaces, CAP_SYS_ADMIN, pivot_root and the memory and freezer cgroups.

        :raises PrerequisitesNotMet: listing every reason.
        """
        reasons = []
        try:
            if parse_options(options)["native.cgroupdriver"] == "systemd":
                why = systemd.unavailable()
                if why is not None:
                    reasons.append(f"the systemd cgroup driver cannot work here: {why}")
        except NotSupported as exc:
            reasons.append(str(exc))
        if os.geteuid() != 0:
            reasons.append("it needs root")
        for kind in ("mnt", "pid", "uts", "ipc", "net"):
            if not os.path.exists(f"/proc/self/ns/{kind}"):
                reasons.append(f"the kernel has no {kind} namespaces (/proc/self/ns/{kind} is missing)")
        try:
            with open("/proc/self/status") as fh:
                effective = next((int(line.split()[1], 16) for line in fh if line.startswith("CapEff:")), 0)
            if not effective >> _CAP_SYS_ADMIN & 1:
                reasons.append("CAP_SYS_ADMIN is missing (namespaces and mounts need it)")
        except OSError:
            reasons.append("/proc is not mounted")
        if not libc.has_syscall("pivot_root"):
            reasons.append(f"pivot_root(2) has no known system call number on {os.uname().machine}")
        try:
            layout = cgroups.read_layout()
            if not layout.has("memory"):
                reasons.append("the cgroup memory controller is not available")
            if not layout.has("freezer"):
                reasons.append("the cgroup freezer is not available (pause needs it)")
        except OSError as exc:
            reasons.append(f"cannot read the cgroup mounts: {exc}")
        if reasons:
            raise PrerequisitesNotMet("native exec driver: " + "; ".join(reasons))

    def info(self) -> dict[str, Any]:
        return {"cgroup_driver": self.cgroup_driver, "cgroup_version": str(self._layout().version)}

    def _layout(self) -> CgroupLayout:
        """The cgroup mounts, read once, as libcontainer reads them. /proc/self/mountinfo has a
        line per running container's root file system: read for every exec, stats, pause and
        unpause, it made each of them slower with every container, and the restore of 200
        containers (an unpause check each) spent 45 % of its time parsing it."""
        if self._cgroup_layout is None:
            self._cgroup_layout = cgroups.read_layout()
        return self._cgroup_layout

    def userns_support(self) -> str | None:
        """None when this kernel lets root make user namespaces, else why not."""
        try:
            with open("/proc/sys/user/max_user_namespaces", encoding="ascii") as fh:
                if int(fh.read().strip() or 0) <= 0:
                    return "user namespaces are turned off (/proc/sys/user/max_user_namespaces is 0)"
        except (OSError, ValueError):
            return "this kernel has no user namespaces (/proc/sys/user/max_user_namespaces is missing)"
        return None

    def seccomp_support(self) -> str | None:
        """None when seccomp filters work here (kernel filter mode, libseccomp), else why not."""
        if self._seccomp_support is _UNKNOWN:
            self._seccomp_support = seccomp.support()
        return self._seccomp_support

    # ---- state

    def _state_path(self, id: str) -> str:
        return os.path.join(self.home, f"{id}.json")

    def _save_state(self, id: str, state: dict[str, Any]) -> None:
        """Write the state file atomically (a crash leaves the old one or the new one), without an
        fsync: it describes running processes, which a reboot ends (runc keeps its state on a
        tmpfs)."""
        os.makedirs(self.home, 0o700, exist_ok=True)
        path = self._state_path(id)
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(state).encode())
        finally:
            os.close(fd)
        os.rename(tmp, path)

    def _load_state(self, id: str) -> dict[str, Any] | None:
        try:
            with open(self._state_path(id)) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise HostError(f"native exec driver: the state file {self._state_path(id)} is corrupt: {exc}") from exc

    def cgroup_of(self, command: Command, state: dict[str, Any] | None = None) -> Cgroup:
        """The container's cgroup as recorded at start (in ``state``, read here when not
        given), else as resolved from here."""
        if state is None:
            state = self._load_state(command.id)
        if state is not None and state.get("cgroup"):
            # The mounts (read once per driver) only when the cgroup needs them: an exit does not.
            return Cgroup.from_state(state["cgroup"], self._layout)
        return self._new_cgroup(command)

    def _new_cgroup(self, command: Command) -> Cgroup:
        """Where the container's cgroup goes: ``<parent>/<id>`` with cgroupfs, the scope
        ``docker-<id>.scope`` in the parent slice with systemd."""
        if self.cgroup_driver == "systemd":
            try:
                parent = systemd.slice_path(command.cgroup_parent or systemd.DEFAULT_SLICE)
            except HostError as exc:
                raise InvalidParameter(str(exc)) from None
            return Cgroup(parent, systemd.scope_name(command.id), layout=self._layout())
        return Cgroup(command.cgroup_parent, command.id, layout=self._layout())

    def _place(self, command: Command, cg: Cgroup, pid: int, born_in_v2: bool) -> None:
        """Put the init in its cgroup: with systemd, in its scope, then in every directory; with
        cgroupfs, only where it is not yet, since the init joins the v1 directories itself and is
        born in the v2 one (:meth:`_start_init`), unless the kernel has no CLONE_INTO_CGROUP."""
        if self.cgroup_driver == "systemd":
            systemd.start_scope(cg.id, command.cgroup_parent or systemd.DEFAULT_SLICE, pid)
            cg.add(pid)
            return
        v2 = cg.v2_directory()
        if v2 is not None and not born_in_v2:
            cg.add(pid, [v2])

    def _running_pid(self, command: Command, state: dict[str, Any] | None = None) -> int:
        """The host PID of the container's init, checked against its recorded start time
        (``state``: the state file, read here when not given).

        :raises NotFound: when the container is not running.
        """
        if state is None:
            state = self._load_state(command.id)
        if state is None or not state.get("pid"):
            raise NotFound(f"container {command.id} is not running")
        pid = state["pid"]
        if state.get("exited") or start_time(pid) != state.get("start_time"):
            raise NotFound(f"container {command.id} is not running (its process {pid} has exited)")
        return pid

    # ---- run

    def start(self, command: Command, pipes: Pipes) -> int:
        """Start the container: steps 1 to 5 of the module docstring; the init's PID.

        :raises ExecStartError: the process could not be started (Docker's message).
        :raises InvalidParameter: the command or its limits are invalid.
        """
        if command.process.privileged:
            devices = spec.host_devices() + spec.resolve_devices(command.devices)
        else:
            devices = spec.resolve_devices(command.devices)
        plan = spec.build_init_plan(command, pipes, devices)
        if plan["userns"]:
            # The files bound on /etc are the container root's to change, as dockerd makes them.
            uid, gid = init.root_owner(plan["userns"])
            for source, _ in plan["etc_files"]:
                os.chown(source, uid, gid)
        plan["process"]["seccomp"] = seccomp.compiled_filter(
            self.home, command.seccomp_profile, plan["process"]["caps"]
        )
        cg = self._new_cgroup(command)
        # The container's own cgroups, read-only at /sys/fs/cgroup, as Docker shows them.
        plan["cgroup_mounts"] = [list(source) for source in cg.mount_sources()]
        resources = spec.cgroup_resources(command, devices)
        cg.validate(resources)
        if cg.exists():
            # Left by an earlier run of the same container (a restart without
            # terminate): its counters (oom_kill) must not leak into this run.
            if cg.pids():
                raise Conflict(f"container {command.id} is already running")
            cg.destroy()
        own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        try:
            cg.create()
            cg.apply(resources)
            if command.pid_mode.startswith("container:"):
                self._join_pid(command.pid_mode[len("container:") :])
            elif command.pid_mode != "host":
                self._unshare_pid()
            # cgroupfs: no write of a PID to cgroup.procs, whose lock waits for an RCU grace
            # period (7-8 ms of every start): the init moves itself into the v1 directories
            # and is born in the v2 one. systemd moves it into its scope anyway.
            lockless = self.cgroup_driver != "systemd"
            plan["cgroup_v1_join"] = cg.v1_directories() if lockless else []
            pid = self._start_init(
                plan,
                pipes,
                cg.v2_directory() if lockless else None,
                lambda pid, born_in_v2: self._place(command, cg, pid, born_in_v2),
            )
        except BaseException:
            cg.destroy()
            raise
        finally:
            # Back to our own namespace for children: while pid_for_children
            # differs from our namespace, clone(2) refuses CLONE_THREAD
            # (EINVAL), and the shim starts its I/O thread once we return.
            if command.pid_mode != "host":
                try:
                    libc.setns(own_pid_ns, libc.CLONE_NEWPID)
                except OSError as exc:
                    LOG.warning("could not restore the PID namespace for children: %s", exc)
            os.close(own_pid_ns)
        state = {
            "id": command.id,
            "pid": pid,
            "start_time": start_time(pid),
            "cgroup": cg.to_state(),
            "pid_mode": command.pid_mode,
            # exec'd processes get the container's filter (Docker's rule)
            "seccomp": plan["process"]["seccomp"],
        }
        try:
            self._save_state(command.id, state)
        except BaseException:  # a container nobody could find again must not run on
            os.kill(pid, 9)
            _wait(pid)
            cg.destroy()
            raise
        return pid

    def wait(self, command: Command) -> int:
        """Wait for the init :meth:`start` forked (ours, or adopted from the child that forked it),
        kill what is left in its cgroup (step 6), record the exit; its exit code."""
        state = self._load_state(command.id)
        if state is None:
            raise NotFound(f"container {command.id} was not started by this driver")
        pid = int(state["pid"])
        code = _wait(pid)
        cg = self.cgroup_of(command)
        try:
            # With a private PID namespace the kernel already killed the rest
            # when PID 1 died; with --pid=host this is what stops them.
            cg.kill()
        except (EngineError, OSError) as exc:
            LOG.warning("container %s: killing what is left failed: %s", command.id, exc)
        state = self._load_state(command.id)
        if state is not None:  # None: terminate() ran meanwhile and removed it
            state.update(exited=True, exit_code=code)
            self._save_state(command.id, state)
        return code

    @staticmethod
    def _unshare_pid() -> None:
        try:
            libc.unshare(libc.CLONE_NEWPID)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise ExecStartError(
                    "cannot create a PID namespace: this process already made one (run() "
                    "starts one container per process when the PID namespace is private)"
                ) from exc
            raise ExecStartError(
                f"cannot create a PID namespace ({errno.errorcode.get(exc.errno or 0)}): "
                f"{exc.strerror}; the engine needs CAP_SYS_ADMIN"
            ) from exc

    @staticmethod
    def _join_pid(path: str) -> None:
        """Make the next fork a member of another container's PID namespace (``--pid container:``);
        setns(2) of a PID namespace, like unshare(2), applies to the children only."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ExecStartError(f"joining the PID namespace {path} failed: {exc.strerror}") from exc
        try:
            libc.setns(fd, libc.CLONE_NEWPID)
        except OSError as exc:
            raise ExecStartError(
                f"joining the PID namespace {path} failed ({errno.errorcode.get(exc.errno or 0)}): {exc.strerror}"
            ) from exc
        finally:
            os.close(fd)

    @staticmethod
    def _start_init(
        plan: dict[str, Any], pipes: Pipes, v2_directory: str | None, place: Callable[[int, bool], None]
    ) -> int:
        """Fork the init (born in the cgroup ``v2_directory`` where the kernel can), put it in its
        cgroup (``place``: its PID, and whether it was born in the v2 one), let it go, and wait
        for its execve.

        :returns: the init's PID once it runs the container's program.
        :raises ExecStartError: with the child's message when it failed.
        """
        userns = plan.get("userns")
        sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        # The init says on this pipe when it has made its user namespace, and waits on the
        # sync pipe again until we wrote the maps.
        ns_r, ns_w = os.pipe2(os.O_CLOEXEC) if userns else (-1, -1)
        try:
            pid, born_in_v2 = _fork_into(v2_directory)
        except OSError as exc:
            for fd in (sync_r, sync_w, err_r, err_w, ns_r, ns_w):
                if fd >= 0:
                    os.close(fd)
            if exc.errno == errno.ENOMEM:
                raise ExecStartError(
                    "fork failed (ENOMEM): the PID namespace of this process is gone (one container per process)"
                ) from exc
            raise ExecStartError(f"fork failed: {exc}") from exc
        if pid == 0:  # the child: never returns
            os.close(sync_w)
            os.close(err_r)
            if userns:
                os.close(ns_r)
            stdio = [pipes.stdin, pipes.stdout, pipes.stderr]
            init.container_init(plan, stdio, sync_r, err_w, ns_w if userns else None)
        os.close(sync_r)
        os.close(err_w)
        if userns:
            os.close(ns_w)
        try:
            added = False
            try:
                place(pid, born_in_v2)
                added = True
            finally:
                # GO lets the child continue; EOF without it makes it exit.
                try:
                    if added:
                        os.write(sync_w, init.GO)
                except BrokenPipeError:
                    pass  # it died already; the error pipe tells why
                finally:
                    if not userns or not added:
                        os.close(sync_w)
            if userns:
                try:
                    if os.read(ns_r, 1) == init.GO:  # EOF: it failed before; the error pipe says why
                        _write_maps(pid, userns)
                        os.write(sync_w, init.GO)
                except BrokenPipeError:
                    pass
                finally:
                    os.close(sync_w)
                    os.close(ns_r)
            message = init.read_error(err_r)
        except BaseException:
            os.close(err_r)
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
            _wait(pid)
            raise
        os.close(err_r)
        if message is not None:
            _wait(pid)
            raise ExecStartError(message)
        return pid

    # ---- exec

    def exec(
        self, command: Command, process: ProcessConfig, pipes: Pipes, start_callback: Callable[[int], Any] | None = None
    ) -> int:
        """Run ``process`` in the running container through the ``nsenter`` helper; return its exit code.

        :raises NotFound: the container is not running.
        :raises ExecStartError: the process could not be started (Docker's message).
        """
        import fcntl
        import subprocess

        state = self._load_state(command.id) or {}
        pid = self._running_pid(command, state)
        cg = self.cgroup_of(command, state)
        if cg.freezer_state() == "FROZEN":
            # The helper would freeze as soon as it joined the cgroup.
            raise Conflict(f"Container {command.id} is paused, unpause the container before exec")
        config: dict[str, Any] = {
            "id": command.id,
            "pid": pid,
            "start_time": start_time(pid),
            "cgroup_v1": cg.v1_directories(),
            "cgroup_v2": cg.v2_directory(),
            "process": dict(
                spec.build_process_plan(process, command.process),
                seccomp=state.get("seccomp"),
                rlimits=spec.rlimit_plan(command.rlimits),
                oom_score_adj=command.oom_score_adj,
            ),
        }
        stdio: list[int | None] = []
        owned: list[int] = []
        try:
            console = pipes.console if process.tty else None
            for fd in (None, None, None) if console is not None else (pipes.stdin, pipes.stdout, pipes.stderr):
                if fd is None:
                    stdio.append(None)
                    continue
                # Own numbers above 2: the helper's own 0-2 are /dev/null.
                copy = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
                owned.append(copy)
                stdio.append(copy)
            config["stdio"] = stdio
            config["console"] = None
            if console is not None:
                # The pty is made inside the container and its master sent back here.
                config["console"] = fcntl.fcntl(console, fcntl.F_DUPFD_CLOEXEC, 3)
                owned.append(config["console"])
            cfg_r, cfg_w = os.pipe2(os.O_CLOEXEC)
            status_r, status_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            owned += [cfg_r, cfg_w, status_r, status_w, err_r, err_w]
            passed = [cfg_r, status_w, *[fd for fd in [*stdio, config["console"]] if fd is not None]]
            helper = None
            # A fork of the daemon's warm fork server when there is one (no interpreter to start).
            if self.helpers is None or not self.helpers.spawn(HELPER, [cfg_r, status_w], passed, err_w):
                helper = subprocess.Popen(
                    [sys.executable, "-S", "-m", "engine_exec_native.nsenter", str(cfg_r), str(status_w)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err_w,
                    pass_fds=passed,
                    env={"PYTHONPATH": os.pathsep.join(_package_roots())},
                    close_fds=True,
                )
        except BaseException:
            for fd in owned:
                os.close(fd)
            raise
        for fd in owned:
            if fd not in (cfg_w, status_r, err_r):
                os.close(fd)  # the helper holds its copies: EOF on status and stderr when it is done
        try:
            with os.fdopen(cfg_w, "wb") as fh:
                fh.write(json.dumps(config).encode())
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
        with os.fdopen(err_r, "rb") as errors:
            stderr = errors.read()
        if helper is not None:
            helper.wait()
        if failure is not None:
            raise ExecStartError(failure)
        if code is None:
            status = f" (exit {helper.returncode})" if helper is not None else ""
            raise HostError(
                f"exec in container {command.id}: the helper died{status}: "
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

    def pause(self, command: Command) -> None:
        """Freeze every process of the container (the cgroup freezer)."""
        self._running_pid(command)
        cg = self.cgroup_of(command)
        if cg.freezer_state() == "FROZEN":
            raise Conflict(f"container {command.id} is already paused")
        cg.freeze()

    def unpause(self, command: Command) -> None:
        """Thaw the container."""
        cg = self.cgroup_of(command)
        if not cg.exists():
            raise NotFound(f"container {command.id} is not running")
        if cg.freezer_state() != "FROZEN":
            raise Conflict(f"container {command.id} is not paused")
        cg.thaw()

    def terminate(self, command: Command) -> None:
        """Kill every process of the container, remove its cgroup and its state (idempotent)."""
        cg = self.cgroup_of(command)
        if self.cgroup_driver == "systemd":
            systemd.stop_scope(cg.id)
        cg.destroy()
        try:
            os.unlink(self._state_path(command.id))
        except FileNotFoundError:
            pass


#: The driver's options (``--exec-opt``) and their defaults.
OPTIONS = {"native.cgroupdriver": "cgroupfs"}
CGROUP_DRIVERS = ("cgroupfs", "systemd")


def parse_options(options: Sequence[str]) -> dict[str, str]:
    """``--exec-opt key=value`` -> the driver's options, with their defaults.

    :raises NotSupported: an unknown option or cgroup driver, in dockerd's words.
    """
    out = dict(OPTIONS)
    for option in options:
        key, sep, value = option.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or key not in OPTIONS:
            raise NotSupported(f"native exec driver: unknown exec option {option!r} (known: {', '.join(OPTIONS)})")
        if key == "native.cgroupdriver" and value not in CGROUP_DRIVERS:
            raise NotSupported(f"native.cgroupdriver option {value} not supported")
        out[key] = value
    return out


def _write_maps(pid: int, userns: dict[str, Any]) -> None:
    """Write the init's ``uid_map`` and ``gid_map`` (one write each, as the kernel wants them).

    :raises ExecStartError: the kernel refused them (the reason, and the maps).
    """
    for kind in ("uid", "gid"):
        text = "".join(f"{c} {h} {n}\n" for c, h, n in userns[kind + "s"])
        try:
            with open(f"/proc/{pid}/{kind}_map", "w") as fh:
                fh.write(text)
        except OSError as exc:
            raise ExecStartError(
                f"writing the container's {kind}_map ({text.strip()!r}) failed "
                f"({errno.errorcode.get(exc.errno or 0)}): {exc.strerror}"
            ) from None


def _package_roots() -> list[str]:
    """The directories holding ``engine`` and ``engine_exec_native``, for the helper's ``python -S``."""
    import engine
    import engine_exec_native

    roots: list[str] = []
    for module in (engine_exec_native, engine):
        root = os.path.dirname(os.path.dirname(os.path.abspath(module.__file__ or "")))
        if root not in roots:
            roots.append(root)
    return roots
