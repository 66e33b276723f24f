"""The life cycle of containers: create, start, stop, kill, restart, pause,
unpause, update, wait, rename, remove, the exit and the restart policy, and
the restore at daemon start (seed ch. 8 §2 and ch. 4 §4.10; moby ``daemon/``).

One class, :class:`LifeCycle`, owns every transition of a container: nothing
else changes its :class:`~engine.daemon.container.State`. Each container has
a state machine (:mod:`engine.daemon.statemachine`: its phase, the allowed
transitions and the operation slot), held under the container's ``lock``.
Every operation takes the slot, so one that arrives while another works
waits for it and then acts on the state that one left: a stop sent while a
start is in flight stops what was started, a remove waits for a stop, and a
restart (stop, then start) is one operation. Two may act at once: a kill,
and the kill of ``rm -f``, while a stop waits for the container to go down
(as ``docker kill`` speeds up a ``docker stop``). An exit is an event: it is
recorded whoever holds the slot.

The public methods (:meth:`LifeCycle.create`, :meth:`~LifeCycle.start`,
:meth:`~LifeCycle.stop`, :meth:`~LifeCycle.kill`, :meth:`~LifeCycle.restart`,
:meth:`~LifeCycle.pause`, :meth:`~LifeCycle.unpause`,
:meth:`~LifeCycle.update`, :meth:`~LifeCycle.wait`,
:meth:`~LifeCycle.rename`, :meth:`~LifeCycle.remove`,
:meth:`~LifeCycle.frozen`) are what the container jobs, and builds and
commits, drive containers with; each takes the slot itself, so callers need
no locking of their own.

A running container lives in its shim (:mod:`engine.shim`), started through
the :class:`~engine.shim.launcher.ShimLauncher`; the
:class:`~engine.daemon.monitor.Monitor` reports the exit as soon as the
shim records it in ``exit.json`` (or the shim dies). What the daemon set up
for the run is then released while the shim releases the cgroups and ends;
once it has, the container is seen stopped (an auto-removed one: removed),
and the restart policy decides what happens next. On start the daemon
re-adopts the shims that are still alive (live restore).

Crash safety (a kill -9 of the daemon at any moment): a create makes the
container's directory first, journals the anonymous volumes it makes and
writes the record last; a remove journals itself, takes the container apart
and deletes the record before the rest of its directory (renamed out of
sight at once, deleted in the background, as removed layers are). At start-up,
:meth:`LifeCycle.restore` removes whatever a create or a remove left
(directory without a record: its names, layers, journaled volumes, network
namespace and directory), finishes the removals that were under way, thaws
a container a crash left frozen by :meth:`LifeCycle.frozen`, and the store
reconciles the names with the records (see :mod:`engine.daemon.store`).
Images need no repair of their own: a layer is registered in a staging
directory renamed into place, an image likewise, a tag written atomically
(:mod:`engine.graph`), so a load, a pull or a commit cut short leaves
unreferenced layers, which the graph's collection at start-up removes, or
an image that is whole but untagged. A commit should read the container's
file system inside :meth:`LifeCycle.frozen`, whose pause a crash cannot leave
behind (the restore thaws it).

What a container is asked to be (Config, HostConfig) becomes the exec
driver's :class:`~engine.drivers.exec.Command` in
:mod:`engine.daemon.hostconfig`; its record, names and lookups are the
:class:`~engine.daemon.store.ContainerStore`'s; its network is the
:class:`~engine.daemon.network.NetworkService`'s, called at create
(``register_links``), start (``setup``), exit (``teardown``), remove and
restore (``remove_namespace``, ``restore``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import secrets
import signal as signals
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from engine.daemon import changes, namespaces, netns, runtime
from engine.daemon.container import CONFIG_FILE, Container
from engine.daemon.daemon import require
from engine.daemon.hostconfig import (
    apply_create_defaults,
    build_command,
    merge_image_config,
    mount_points,
    parse_signal,
    resources_of,
    shim_spec,
    updated_host_config,
    validate_host_config,
)
from engine.daemon.monitor import Monitor
from engine.daemon.statemachine import UP, Phase
from engine.daemon.store import CREATE_JOURNAL, REMOVAL_JOURNAL
from engine.drivers.exec import Command, ExecDriver, ExecStartError
from engine.errors import (
    Conflict,
    EngineError,
    HostError,
    InvalidParameter,
    NoSuchContainer,
    NotFound,
    NotModified,
)
from engine.shim import client as shim
from engine.shim import protocol as shim_protocol
from engine.sys import proc
from engine.sys.fs import safe_rmtree

if TYPE_CHECKING:
    from engine.daemon.daemon import Daemon
    from engine.daemon.network import NetworkService
    from engine.daemon.store import ContainerStore
    from engine.daemon.volumes import VolumeStore
    from engine.shim.launcher import ShimLauncher

LOG = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 10
#: Seconds to wait for a container to go down after a SIGKILL (moby waits
#: 10 s, then kills the process directly and waits 2 s more).
KILL_WAIT = 30.0
#: Seconds an exit, a removal and a start wait for the shim of the container's last run to end:
#: it releases the cgroups after it recorded the exit.
SHIM_END_WAIT = 10.0
#: Operations a kill (and ``rm -f``) does not wait for: they wait for the
#: container to go down, which the kill hastens.
KILL_PREEMPTS = frozenset({"stop", "remove"})
#: Operations whose end a request that reads the state waits for (a wait,
#: an exec, an attach): a start in flight is about to change it.
STARTS = frozenset({"start", "restart"})
#: Restart back-off (moby restartmanager): start at 100 ms, double, cap at a
#: minute, and start over when a container ran for 10 s.
BACKOFF_START, BACKOFF_MAX, BACKOFF_RESET_AFTER = 0.1, 60.0, 10.0


# restart policy decisions (pure)
def should_restart(policy: dict | None, exit_code: int, restart_count: int, manually_stopped: bool) -> bool:
    """moby's ``RestartManager.ShouldRestart`` for a ``RestartPolicy`` (``{"Name", "MaximumRetryCount"}``).

    ``always`` restarts even after a manual stop (a stop in this daemon's
    life makes the exit final on its own, see ``exit_on_next``), so a
    restarted daemon starts it again; ``unless-stopped`` does not.
    """
    policy = policy or {}
    name = policy.get("Name") or "no"
    if name == "always":
        return True
    if name == "unless-stopped":
        return not manually_stopped
    if name == "on-failure":
        limit = int(policy.get("MaximumRetryCount") or 0)
        return exit_code != 0 and (limit == 0 or restart_count < limit)
    return False


def next_backoff(backoff: float, ran_for: float) -> float:
    """The delay before the next restart: doubled each time, capped, and reset after a long run."""
    if ran_for >= BACKOFF_RESET_AFTER or not backoff:
        return BACKOFF_START
    return min(BACKOFF_MAX, backoff * 2)


def start_failure_code(message: str) -> int:
    """The exit code Docker records for a start that failed with ``message`` (127: no such
    executable, 126: not executable, 128 otherwise)."""
    if "executable file not found" in message or "no such file or directory" in message:
        return 127
    if "permission denied" in message:
        return 126
    return 128


def load_command(c: Container) -> Command:
    """The command ``c`` was started with, from its ``shim.json`` (a container re-adopted at restore)."""
    with open(c.path_of(shim_protocol.CONFIG_FILE), "rb") as fh:
        return Command.from_json(json.load(fh)["command"])


class _StartFailed(Exception):
    """A launch failed (recorded already); ``cause`` is why."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class LifeCycle:
    """The transitions of the daemon's containers.

    :param daemon: the daemon (graph, graph driver, events, the engine's shutdown state, execs).
    :param store: the container store.
    :param exec_driver: the selected exec driver.
    :param volumes: the volume store.
    :param network: the network service (with or without a driver).
    :param launcher: starts the shims.
    """

    def __init__(
        self,
        daemon: Daemon,
        store: ContainerStore,
        exec_driver: ExecDriver,
        volumes: VolumeStore,
        network: NetworkService,
        launcher: ShimLauncher,
    ) -> None:
        self.daemon = daemon
        self.store = store
        self.exec_driver = exec_driver
        self.volumes = volumes
        self.network = network
        self.launcher = launcher
        self.monitor = Monitor(self._on_exit)
        self._commands: dict[str, Command] = {}
        self._timers: dict[str, threading.Timer] = {}
        self._timers_lock = threading.Lock()
        #: Attaches waiting for a container to start, by container ID.
        self._pending_attach: dict[str, list[Any]] = {}

    def _shutting_down(self) -> bool:
        return self.daemon.engine.is_shutdown

    def _operation(self, c: Container, name: str) -> contextlib.AbstractContextManager[None]:
        """The slot of ``c`` for operation ``name`` (ended by the daemon's shutdown while waiting)."""
        return c.machine.operation(name, abort=self._shutting_down)

    def close(self) -> None:
        """Stop watching and restarting (the daemon shuts down); running containers go on."""
        self.monitor.stop()
        with self._timers_lock:
            timers = list(self._timers.values())
            self._timers.clear()
        for t in timers:
            t.cancel()
        self.launcher.close()
        self.store.close()

    # the exec driver's handle on a running container
    def command(self, c: Container) -> Command:
        """The command ``c`` runs with (what the exec driver's calls take)."""
        cmd = self._commands.get(c.id)
        if cmd is None:
            cmd = load_command(c)
            self._commands[c.id] = cmd
        return cmd

    def alive(self, c: Container) -> bool:
        """Whether ``c``'s process still exists (signal 0), whatever its exit's processing says."""
        try:
            self.exec_driver.kill(self.command(c), 0)
        except (NotFound, ProcessLookupError, FileNotFoundError):
            return False
        return True

    def pids(self, c: Container) -> list[int]:
        """The host PIDs of ``c``'s processes."""
        return self.exec_driver.get_pids(self.command(c))

    def stats(self, c: Container) -> dict[str, Any]:
        """``c``'s resource usage from the exec driver."""
        return self.exec_driver.stats(self.command(c))

    # attaches that wait for the start
    def attach_at_start(self, c: Container, pending: Any) -> bool:
        """Queue ``pending`` (with ``stdin``, ``stdout``, ``stderr``, ``ready`` and
        ``connect(client)``) to be connected by ``c``'s next start, before its process runs.

        :returns: False when ``c`` runs already (attach to its shim instead).
        """
        with c.lock:
            # A start in flight has taken the queued attaches already: wait for it.
            c.machine.wait_idle(STARTS, abort=self._shutting_down)
            if c.state.running and not c.state.restarting:
                return False
            self._pending_attach.setdefault(c.id, []).append(pending)
            return True

    def cancel_attach(self, c: Container, pending: Any) -> None:
        """Take back an attach queued by :meth:`attach_at_start` (its client left)."""
        with c.lock:
            waiting = self._pending_attach.get(c.id, [])
            if pending in waiting:
                waiting.remove(pending)

    # create
    def create(
        self, config: dict, host_config: dict | None, name: str = "", networking: dict | None = None
    ) -> tuple[Container, list[str]]:
        """Make a container from ``config`` (API Config) and ``host_config``; it and the warnings.

        Everything is made or nothing: a failure removes the name, layers,
        anonymous volumes and directory made so far.
        """
        graph = require(self.daemon.graph, "image store")
        hc = dict(host_config or {})
        warnings = validate_host_config(hc, os.cpu_count() or 1)
        require(self.daemon.security, "security policy").check_create(hc)
        image_name = config.get("Image") or ""
        if not image_name:
            raise InvalidParameter("No image was specified")
        image = graph.lookup(image_name)
        merged = merge_image_config(config, image.container_config)
        entrypoint = list(merged.get("Entrypoint") or [])
        cmd = list(merged.get("Cmd") or [])
        argv = entrypoint + cmd
        if not argv:
            raise InvalidParameter("No command specified")
        if name:
            from engine.graphdb import validate_name

            name = validate_name(name)
        cid = self.store.new_id()
        root = self.store.path(cid)
        driver = require(self.daemon.graphdriver, "graph driver")
        # The directory first: whatever a crash leaves below is found from
        # it (a directory without a record is undone at start-up).
        os.makedirs(root, mode=0o700)
        made_volumes: list[str] = []
        try:
            name = self.store.reserve_name(name, cid)
            apply_create_defaults(merged, hc, image_name, cid, os.uname().nodename, self.daemon.config)
            top = image.top_layer.split(":", 1)[1] if image.top_layer else None
            # Both layers get the container's --storage-opt, as in moby's layer store.
            storage_opt = hc.get("StorageOpt") or None
            if storage_opt is not None and not (
                isinstance(storage_opt, dict) and all(isinstance(v, str) for v in storage_opt.values())
            ):
                raise InvalidParameter("HostConfig.StorageOpt must be an object of strings")
            driver.create_read_write(cid + "-init", top, storage_opt=storage_opt)
            self._populate_init_layer(cid + "-init")
            driver.create_read_write(cid, cid + "-init", storage_opt=storage_opt)
            c = Container(
                id=cid,
                name=name,
                created=time.time(),
                image_id=image.id,
                config=merged,
                host_config=hc,
                path=argv[0],
                args=argv[1:],
                driver=driver.name,
                top_layer=image.top_layer,
                root=root,
                log_path=os.path.join(root, f"{cid}-json.log"),
            )
            c.mounts = self._make_mounts(c, made_volumes)
            c.network_settings = self.network.create_settings(c, networking)
            self.network.register_links(c)
            c.to_disk()  # the record: from here on the container exists
        except BaseException:
            self._undo_create(cid, made_volumes)
            raise
        self.store.drop_journal(cid, CREATE_JOURNAL)
        self.store.add(c)
        if (hc.get("NetworkMode") or "default") in ("default", "bridge") and self.network.driver is None:
            warnings.append(
                "The bridge network driver is not available: the container gets its own network "
                "namespace with only the loopback interface"
            )
        self.daemon.container_event(c, "create")
        return c, warnings

    def _undo_create(self, cid: str, volumes: list[str]) -> None:
        """Remove what a create of ``cid`` made (it failed, or a crash cut it short): anonymous
        ``volumes``, layers, names, network namespace and directory, the record last."""
        driver = require(self.daemon.graphdriver, "graph driver")
        for volume in volumes:
            try:
                self.volumes.remove_leftover(volume)
            except EngineError:
                LOG.exception("removing volume %s of container %s", volume, cid[:12])
        for layer in (cid, cid + "-init"):  # the child before its parent
            try:
                if driver.exists(layer):
                    driver.remove(layer)
            except Exception:
                LOG.exception("removing layer %s", layer)
        self.store.release_names(cid)
        netns.remove(os.path.join(self.network.netns_dir, cid))
        root = self.store.path(cid)
        try:
            os.unlink(os.path.join(root, CONFIG_FILE))
        except FileNotFoundError:
            pass
        if os.path.isdir(root):
            safe_rmtree(root)

    def _populate_init_layer(self, layer: str) -> None:
        """Docker's init layer: mount points and files the runtime binds over,
        so read-only or minimal images can still be run."""
        driver = require(self.daemon.graphdriver, "graph driver")
        path = driver.get(layer)
        made: list[str] = []
        try:
            for d in ("dev/pts", "dev/shm", "proc", "sys", "etc"):
                p = os.path.join(path, d)
                if not os.path.lexists(p):
                    parent = os.path.dirname(p)
                    if parent != path and not os.path.lexists(parent):
                        made.append(parent)
                    os.makedirs(p, 0o755, exist_ok=True)
                    made.append(p)
            for f in ("etc/hosts", "etc/hostname", "etc/resolv.conf", ".dockerenv", "dev/console"):
                p = os.path.join(path, f)
                if not os.path.lexists(p):
                    parent = os.path.dirname(p)
                    if os.path.isdir(parent) and not os.path.islink(parent):
                        with open(p, "w"):
                            pass
                        os.chmod(p, 0o755 if f == "dev/console" else 0o644)
                        made.append(p)
            remap = getattr(self.daemon, "remap", None)
            if remap is not None:
                # What is made here belongs to the containers' root (--userns-remap), as dockerd makes
                # it; so does the root directory when no layer said whose it is (the driver made it).
                st = os.lstat(path)
                if (st.st_uid, st.st_gid) == (0, 0):
                    made.append(path)
                for p in made:
                    os.lchown(p, remap.idmap.root_uid, remap.idmap.root_gid)
        finally:
            driver.put(layer)

    def _make_mounts(self, c: Container, made: list[str]) -> list[dict]:
        """The mount points of a new container, with what they need made: missing bind sources,
        volumes (filled from the image unless ``nocopy``). Anonymous volumes get their names
        here, are journaled in the container's ``create.json`` before they are made (a crash
        leaves no volume nobody knows of) and are added to ``made`` (a failed create removes them)."""
        points = mount_points(c.config, c.host_config, lambda name: self.store.get(name).mounts)
        anonymous_points = [p for p in points if p["Type"] == "volume" and not p["Name"]]
        for point in anonymous_points:
            point["Name"] = secrets.token_hex(32)
            point["Anonymous"] = True
        if anonymous_points:
            made.extend(p["Name"] for p in anonymous_points)
            self.store.write_journal(c.id, CREATE_JOURNAL, {"Volumes": list(made)})
        image_rootfs = None
        try:
            for point in points:
                if point["Type"] == "bind":
                    if not os.path.exists(point["Source"]):
                        # -v with a missing host path creates it, as Docker does.
                        os.makedirs(point["Source"], 0o755, exist_ok=True)
                elif point["Type"] == "volume":
                    # A named one stays when the create fails, as in Docker.
                    anonymous = bool(point.pop("Anonymous", False))
                    info, created = self.volumes.create(
                        point["Name"] or None,
                        labels=point.pop("Labels", None),
                        options=point.pop("DriverOpts", None),
                        anonymous=anonymous,
                    )
                    point["Source"] = info["Mountpoint"]
                    if created and not point.get("NoCopy"):
                        if image_rootfs is None:
                            image_rootfs = require(self.daemon.graphdriver, "graph driver").get(c.init_layer)
                        self.volumes.copy_up(
                            point["Name"], os.path.join(image_rootfs, point["Destination"].lstrip("/"))
                        )
        finally:
            if image_rootfs is not None:
                require(self.daemon.graphdriver, "graph driver").put(c.init_layer)
        return sorted(points, key=lambda p: p["Destination"].count("/"))

    # start
    def start(self, c: Container, by_policy: bool = False) -> bool:
        """Start a created or exited container (moby ``containerStart``); whether it was started.

        Returns once the container runs, or raises when it could not be
        started (the failure is recorded). A start asked for (the API, the
        daemon's start-up) resets the restart count and back-off, as moby's
        ``ResetRestartManager`` does. With ``by_policy`` it is the restart
        policy's timer: it goes ahead only if the container still waits for
        that restart (no stop, kill or remove came in between), and counts it.

        :raises NotModified: it runs already.
        :raises Conflict: it is paused, or being removed.
        """
        try:
            with self._operation(c, "start"):
                return self._start(c, by_policy)
        except _StartFailed as failed:
            raise self._start_failed(c, failed.cause) from failed.cause

    def _start_failed(self, c: Container, cause: BaseException) -> BaseException:
        """After a failed launch (the slot released): remove an ``AutoRemove`` container; the error to raise."""
        if c.host_config.get("AutoRemove") and not c.removed:
            try:
                self.remove(c, force=True, volumes=True)
            except EngineError:
                LOG.exception("removing %s after a failed start", c.short_id)
        if isinstance(cause, ExecStartError):
            return InvalidParameter(f"failed to create shim task: OCI runtime create failed: {cause}: unknown")
        return cause

    def _start(self, c: Container, by_policy: bool) -> bool:
        """A start, the slot held: check, go to ``starting``, launch.

        :raises _StartFailed: the launch failed (recorded); the checks raise as they are.
        """
        with c.lock:
            phase = c.machine.phase
            if c.removed or phase in (Phase.REMOVING, Phase.REMOVED, Phase.DEAD):
                if by_policy:
                    return False
                if c.removed:
                    raise NoSuchContainer(name=c.id)
                raise Conflict("container is marked for removal and cannot be started")
            if by_policy:
                if phase is not Phase.RESTARTING or c.exit_on_next:
                    return False
                c.restart_count += 1
            else:
                if phase is Phase.PAUSED:
                    raise Conflict("cannot start a paused container, try unpause instead")
                if phase in (Phase.RUNNING, Phase.RESTARTING):
                    raise NotModified()
                c.has_been_manually_stopped = False
                c.restart_count = 0
                c.backoff = 0.0
            c.exit_on_next = False
            c.machine.move(Phase.STARTING)
        try:
            self._launch(c)
        except BaseException as exc:
            self._record_failed_start(c, exc)
            raise _StartFailed(exc) from exc
        return True

    def _launch(self, c: Container) -> None:
        """Mount the rootfs, make the network, start the shim; record the container running."""
        if not self.monitor.wait_gone(c.id, SHIM_END_WAIT):
            raise HostError(
                f"the shim of the container's last run has not ended in {SHIM_END_WAIT:g}s "
                "(it releases the container's cgroups after its exit)"
            )
        driver = require(self.daemon.graphdriver, "graph driver")
        network = self.network
        rootfs = driver.get(c.id)
        made: dict = {}
        pending: list = []
        try:
            made = network.setup(c)  # the network service: a container's network at start
            link_env = network.link_env(c)
            security = require(self.daemon.security, "security policy")
            cmd = build_command(
                c,
                rootfs,
                {k: v for k, v in made.items() if k in ("mode", "path")},
                self.volumes.path,
                link_env,
                seccomp_profile=security.seccomp_profile(c.host_config),
                no_new_privileges=security.no_new_privileges(c.host_config),
                **runtime.command_options(c.host_config, self.daemon.config, self.exec_driver),
                **namespaces.join_options(c, self.store, self.daemon.shm),
                user_namespace=security.user_namespace(c.host_config),
            )
            for m in c.mounts:
                if m["Type"] == "volume":
                    self.volumes.hold(m["Name"])  # while the container runs
            spec = shim_spec(c, cmd, self.exec_driver, self.daemon.config.shim_memory_merge)
            for name in (shim_protocol.EXIT_FILE, shim_protocol.STATE_FILE):
                try:
                    os.unlink(c.path_of(name))
                except FileNotFoundError:
                    pass
            with c.lock:
                pending = self._pending_attach.pop(c.id, [])
            result = self.launcher.start(c.root, spec, attachers=pending)
        except BaseException:
            for waiting in pending:  # their attach ends: nothing will run
                waiting.ready.set()
            driver.put(c.id)
            self._release_volumes(c)
            if made.get("mode") not in (None, "host", "container"):
                network.teardown(c)
            raise
        self._commands[c.id] = cmd
        with c.lock:
            st = c.state
            st.pid = int(result["Pid"])
            st.shim_pid = int(result["ShimPid"])
            st.exit_code, st.error, st.oom_killed = 0, "", False
            st.started_at = time.time()
            st.finished_at = 0.0
            c.has_been_started_before = True
            if made.get("settings"):
                c.network_settings = network.inspect_settings(c, made["settings"])
            c.machine.move(Phase.RUNNING)
            c.to_disk()
        if made.get("settings"):
            network.update_parents(c)
        self.monitor.watch(c, st.shim_pid)
        self.daemon.container_event(c, "start")

    @staticmethod
    def _record_failed_start(c: Container, exc: BaseException) -> None:
        """A start failed: Docker's exit code and error, and back to ``created`` (never ran) or ``exited``."""
        with c.lock:
            c.state.error = str(exc)
            c.state.exit_code = start_failure_code(c.state.error)
            c.machine.move(Phase.CREATED if c.state.started_at == 0 else Phase.EXITED)
            c.to_disk()

    def _release_volumes(self, c: Container) -> None:
        for m in c.mounts:
            if m["Type"] == "volume" and self.volumes.exists(m["Name"]):
                try:
                    self.volumes.release(m["Name"])
                except EngineError:
                    pass

    # signals, stops, pauses, updates
    def _signal(self, c: Container, sig: int, thaw: bool) -> bool:
        """Send ``sig`` to ``c``'s process (the caller holds ``c.lock``, so that no new start can
        slip in between the check and the signal); whether it was there to take it.

        ``thaw``: unfreeze a paused container, so that the signal lands.
        """
        try:
            self.exec_driver.kill(self.command(c), sig)
        except (ProcessLookupError, NotFound, FileNotFoundError):
            # The process is gone and its exit is on its way to _on_exit.
            return False
        if thaw and c.state.paused:
            try:
                self.exec_driver.unpause(self.command(c))
            except (EngineError, OSError):  # it died as it thawed: its cgroup went with it
                pass
        return True

    def _await_down(self, c: Container, timeout: float | None) -> bool:
        """Wait until ``c``'s process has exited and the exit is recorded (or ``c`` is removed); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with c.lock:
            while c.machine.phase in UP and not c.removed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                c.changed.wait(0.5 if left is None else min(left, 0.5))
        return True

    def kill(self, c: Container, sig: int = signals.SIGKILL, event: bool = True) -> None:
        """Send ``sig`` (moby ``killWithSignal``); after SIGKILL, return once the container is down.

        SIGKILL, or the container's stop signal (any signal when it has
        none), makes the next exit final and thaws a paused container so that
        the signal lands; any kill counts as a manual stop (``unless-stopped``
        then stays down). A kill of a container waiting for its restart
        policy ends the restarts. A kill waits for a start or a restart in
        flight; it does not wait for a stop or a remove, which it hastens.

        :raises Conflict: it does not run.
        :raises HostError: SIGKILL did not bring it down.
        """
        stop_signal = c.config.get("StopSignal")
        final = sig == signals.SIGKILL or not stop_signal or parse_signal(stop_signal, signals.SIGTERM) == sig
        with c.lock:
            preempt = c.machine.busy(KILL_PREEMPTS) and c.machine.phase is Phase.STOPPING
            if preempt:
                self._kill(c, sig, final)
        if not preempt:
            with self._operation(c, "kill"):
                with c.lock:
                    self._kill(c, sig, final)
                if event:
                    self.daemon.container_event(c, "kill", {"signal": str(int(sig))})
                if sig == signals.SIGKILL and not self._await_down(c, KILL_WAIT):
                    raise HostError(f"tried to kill container {c.id}, but did not receive an exit event")
            return
        if event:
            self.daemon.container_event(c, "kill", {"signal": str(int(sig))})
        if sig == signals.SIGKILL and not self._await_down(c, KILL_WAIT):
            raise HostError(f"tried to kill container {c.id}, but did not receive an exit event")

    def _kill(self, c: Container, sig: int, final: bool) -> None:
        """The kill itself (``c.lock`` held)."""
        if c.removed:
            raise NoSuchContainer(name=c.id)
        phase = c.machine.phase
        if phase not in UP and phase is not Phase.RESTARTING:
            raise Conflict(f"Container {c.id} is not running")
        if final:
            c.exit_on_next = True
        if not self.daemon.engine.is_shutdown:
            c.has_been_manually_stopped = True
        if phase is Phase.RESTARTING:
            # Killing a container between restarts stops the restarts.
            self._cancel_restart(c)
            c.machine.move(Phase.EXITED)
            c.to_disk()
            return
        c.to_disk()
        self._signal(c, sig, thaw=final)

    def stop(self, c: Container, timeout: int | None = None, sig: str | None = None) -> None:
        """SIGTERM (or the stop signal), wait, then SIGKILL (moby ``containerStop``); returns once
        the container is down. A stop of a container waiting for its restart policy ends the
        restarts. A negative ``timeout`` waits for as long as it takes.

        :raises NotModified: it does not run.
        :raises HostError: it did not go down even after SIGKILL.
        """
        with self._operation(c, "stop"):
            self._stop(c, timeout, sig)

    def _stop(self, c: Container, timeout: int | None, sig: str | None) -> None:
        """A stop, the slot held."""
        with c.lock:
            if c.removed:
                raise NoSuchContainer(name=c.id)
            phase = c.machine.phase
            if phase not in (Phase.RUNNING, Phase.PAUSED, Phase.RESTARTING):
                raise NotModified()
            c.has_been_manually_stopped = True
            c.exit_on_next = True
            if phase is Phase.RESTARTING:
                self._cancel_restart(c)
                c.machine.move(Phase.EXITED)
                c.to_disk()
                stopped = True
            else:
                stopped = False
                c.to_disk()
                c.machine.move(Phase.STOPPING)
        if stopped:
            self.daemon.container_event(c, "stop")
            return
        if timeout is None:
            timeout = c.config.get("StopTimeout")
            if timeout is None:
                timeout = DEFAULT_STOP_TIMEOUT
        stop_signal = parse_signal(sig or c.config.get("StopSignal") or "SIGTERM", signals.SIGTERM)
        with c.lock:
            self._signal(c, stop_signal, thaw=True)
        self.daemon.container_event(c, "kill", {"signal": str(int(stop_signal))})
        if not self._await_down(c, None if timeout < 0 else timeout):
            with c.lock:
                if c.machine.phase in UP:
                    self._signal(c, signals.SIGKILL, thaw=True)
            self.daemon.container_event(c, "kill", {"signal": str(int(signals.SIGKILL))})
            if not self._await_down(c, KILL_WAIT):
                raise HostError(
                    f"cannot stop container {c.id}: tried to kill container, but did not receive an exit event"
                )
        self.daemon.container_event(c, "stop")

    def restart(self, c: Container, timeout: int | None = None, sig: str | None = None) -> None:
        """Stop ``c`` if it runs (with ``sig``, API 1.42's ``signal``), then start it: one
        operation (nothing comes in between)."""
        try:
            with self._operation(c, "restart"):
                try:
                    self._stop(c, timeout, sig)
                except NotModified:
                    pass
                self._start(c, by_policy=False)
        except _StartFailed as failed:
            raise self._start_failed(c, failed.cause) from failed.cause
        self.daemon.container_event(c, "restart")

    def pause(self, c: Container) -> None:
        """Freeze every process of ``c``.

        :raises Conflict: it does not run, is paused already, or is restarting.
        """
        with self._operation(c, "pause"), c.lock:
            phase = self._present(c)
            if phase is Phase.PAUSED:
                raise Conflict(f"Container {c.id} is already paused")
            if phase is Phase.RESTARTING:
                raise Conflict(f"Container {c.id} is restarting, wait until the container is running")
            if phase is not Phase.RUNNING:
                raise Conflict(f"Container {c.id} is not running")
            try:
                self.exec_driver.pause(self.command(c))
            except (NotFound, FileNotFoundError):  # it exited a moment ago; the exit is on its way
                raise Conflict(f"Container {c.id} is not running") from None
            c.machine.move(Phase.PAUSED)
            c.to_disk()
        self.daemon.container_event(c, "pause")

    def unpause(self, c: Container) -> None:
        """Thaw ``c``.

        :raises Conflict: it is not paused.
        """
        with self._operation(c, "unpause"), c.lock:
            if self._present(c) is not Phase.PAUSED:
                raise Conflict(f"Container {c.id} is not paused")
            try:
                self.exec_driver.unpause(self.command(c))
            except (NotFound, FileNotFoundError):  # it exited a moment ago; the exit is on its way
                raise Conflict(f"Container {c.id} is not paused") from None
            c.machine.move(Phase.RUNNING)
            c.to_disk()
        self.daemon.container_event(c, "unpause")

    @contextlib.contextmanager
    def frozen(self, c: Container) -> Iterator[None]:
        """Hold ``c`` still for what reads its file system (a commit): pause it if it runs, and no
        other operation acts on it meanwhile; then unpause it. The ``pause`` and ``unpause``
        events are emitted as dockerd's commit emits them.

        The pause is not recorded: if the daemon dies inside, the restore
        finds a frozen container its record says runs, and thaws it. A pause
        that fails (the container exited a moment ago) does not stop what
        reads the file system, as with dockerd.
        """
        with self._operation(c, "commit"):
            with c.lock:
                self._present(c)
                freeze = c.machine.phase is Phase.RUNNING
                if freeze:
                    try:
                        self.exec_driver.pause(self.command(c))
                    except (EngineError, OSError) as exc:
                        LOG.debug("not freezing %s: %s", c.short_id, exc)
                        freeze = False
            if freeze:
                self.daemon.container_event(c, "pause")
            try:
                yield
            finally:
                if freeze:
                    with c.lock:
                        try:
                            self.exec_driver.unpause(self.command(c))
                        except (EngineError, OSError):  # it exited meanwhile
                            pass
                    self.daemon.container_event(c, "unpause")

    def update(self, c: Container, body: dict) -> list[str]:
        """``docker update``: new limits (applied at once to a running container) or restart
        policy; the warnings."""
        with self._operation(c, "update"), c.lock:
            phase = self._present(c)
            new = updated_host_config(c.host_config, body)
            validate_host_config(new, os.cpu_count() or 1)
            if phase in (Phase.RUNNING, Phase.PAUSED):
                try:
                    self.exec_driver.update(self.command(c), resources_of(new))
                except (
                    NotFound,
                    FileNotFoundError,
                ):  # it exited a moment ago: the new limits apply from its next start
                    pass
            c.host_config = new
            c.to_disk()
        self.daemon.container_event(c, "update")
        return []

    @staticmethod
    def _present(c: Container) -> Phase:
        """``c``'s phase (``c.lock`` held), or NoSuchContainer when it was removed meanwhile."""
        if c.removed:
            raise NoSuchContainer(name=c.id)
        return c.machine.phase

    def wait(
        self,
        c: Container,
        condition: str = "not-running",
        timeout: float | None = None,
        stop: threading.Event | None = None,
        since: int | None = None,
    ) -> bool:
        """Block until ``condition``; False on timeout. ``since``: the container's exit count
        (``c.exits``) when the wait began, for a caller that waits in slices (default: now).

        ``not-running``: until it is not running (at once if it is not, but
        after a start or restart in flight: that decides), or until it exits
        with its restart policy to follow (as dockerd's waiters are told at
        ``SetRestarting``: ``docker wait`` of a ``--restart always``
        container returns at its next exit); ``next-exit``: until it next
        exits; ``removed``: until it is removed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with c.lock:
            gen = c.exits if since is None else since
            while True:
                if condition == "removed":
                    done = c.removed
                elif condition == "next-exit":
                    done = c.exits != gen or c.removed
                else:
                    done = c.removed or c.exits != gen or (not c.machine.busy(STARTS) and not c.state.running)
                if done:
                    return True
                if stop is not None and stop.is_set():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                c.changed.wait(0.5 if left is None else min(left, 0.5))

    def launching_exec(self, c: Container) -> contextlib.AbstractContextManager[None]:
        """The slot of ``c`` while an exec's process is launched (not while it runs)."""
        return self._operation(c, "exec")

    def settle(self, c: Container) -> None:
        """Wait for a start or restart of ``c`` in flight to end (what reads its state before acting
        on it, as an exec does, sees the outcome)."""
        with c.lock:
            c.machine.wait_idle(STARTS, abort=self._shutting_down)

    # rename and remove
    def rename(self, c: Container, new: str) -> None:
        """Give ``c`` the name ``new``."""
        from engine.graphdb import validate_name

        with self._operation(c, "rename"):
            with c.lock:
                self._present(c)
            old = self.store.rename(c, validate_name(new))
            self.network.container_renamed(c)
        self.daemon.container_event(c, "rename", {"oldName": old})

    def remove(self, c: Container, force: bool = False, volumes: bool = False) -> None:
        """Remove ``c`` (``force``: kill it first; ``volumes``: its anonymous volumes too); a link
        alone goes with :meth:`ContainerStore.remove_link <engine.daemon.store.ContainerStore.remove_link>`.

        A remove waits for the operation in flight (a stop, a start) and
        then acts; ``rm -f`` kills at once a container a stop is bringing
        down. Once it returns the container is gone.

        :raises Conflict: it runs (without ``force``).
        :raises NoSuchContainer: it was removed meanwhile.
        :raises HostError: its file system could not be removed (it is then ``dead``).
        """
        if force:
            with c.lock:
                if c.machine.busy(frozenset({"stop"})) and c.machine.phase is Phase.STOPPING:
                    c.exit_on_next = True
                    self._signal(c, signals.SIGKILL, thaw=True)
        with self._operation(c, "remove"):
            self._remove(c, force, volumes)
        self._after_removal(c)

    def _remove(self, c: Container, force: bool, volumes: bool) -> None:
        """A remove, the slot held: bring it down, journal, take it apart."""
        with c.lock:
            phase = self._present(c)
            if phase in (Phase.RUNNING, Phase.PAUSED, Phase.RESTARTING) and not force:
                procedure = "Stop the container before attempting removal or force remove"
                if phase is Phase.PAUSED:
                    procedure = "Unpause and then stop the container before attempting removal or force remove"
                raise Conflict(f"You cannot remove a {c.state.status} container {c.id}. {procedure}")
            c.exit_on_next = True
            if phase is Phase.RESTARTING:
                self._cancel_restart(c)
                c.machine.move(Phase.EXITED)
            elif phase in UP:
                c.machine.move(Phase.STOPPING)
                self._signal(c, signals.SIGKILL, thaw=True)
        if not self._await_down(c, KILL_WAIT):
            raise HostError(
                f"Could not kill running container {c.id}, cannot remove - tried to kill container, "
                "but did not receive an exit event"
            )
        self.store.write_journal(c.id, REMOVAL_JOURNAL, {"RemoveVolumes": volumes})
        with c.lock:
            c.machine.move(Phase.REMOVING)
        self._dismantle(c, volumes)

    def _dismantle(self, c: Container, volumes: bool) -> None:
        """Take apart a container in ``removing``: layers, network namespace, volumes, names, and
        the record before the rest of its directory. Each step can be done again after a crash."""
        driver = require(self.daemon.graphdriver, "graph driver")
        try:
            for layer in (c.id, c.init_layer):
                if driver.exists(layer):
                    driver.remove(layer)
        except EngineError as exc:
            with c.lock:
                c.machine.move(Phase.DEAD)
                c.to_disk()
            self.store.drop_journal(c.id, REMOVAL_JOURNAL)
            raise HostError(f"unable to remove filesystem for {c.id}: {exc}") from exc
        self.network.remove_namespace(c)  # the network service: a container's network at removal
        self.store.discard(c)  # before its volumes: they are no longer in use
        if volumes:
            for m in c.mounts:
                if m["Type"] == "volume" and self.volumes.is_anonymous(m["Name"]):
                    try:
                        self.volumes.remove(m["Name"])
                    except EngineError as exc:
                        LOG.warning("not removing volume %s: %s", m["Name"], exc)
        self.store.release_names(c.id)
        try:
            os.unlink(c.path_of(CONFIG_FILE))  # from here on the container does not exist
        except FileNotFoundError:
            pass
        self.store.dispose(c.id)
        # Nothing of it is left when it is seen removed: an auto-removed container's shim may
        # still have been releasing the cgroups (it ran beside the steps above). Its directory's
        # deletion starts later still (fs.REAP_DELAY).
        self.monitor.wait_gone(c.id, SHIM_END_WAIT)
        with c.lock:
            c.removed = True
            c.machine.move(Phase.REMOVED)

    def _after_removal(self, c: Container) -> None:
        self._commands.pop(c.id, None)
        self.daemon.container_event(c, "destroy")
        if self.daemon.execs is not None:
            self.daemon.execs.forget(c)
        require(self.daemon.graph, "image store").gc()

    # exits and the restart policy
    def _on_exit(self, c: Container) -> None:
        """The shim of ``c`` is gone: record the exit, release, apply the policy."""
        result = shim.read_exit(c.root) or {
            "ExitCode": 255,
            "OOMKilled": False,
            "Error": "the container's shim exited without recording an exit status",
        }
        daemon = self.daemon
        with c.lock:
            if c.machine.phase not in UP or c.exiting:
                return
            c.exiting = True
        # Release what the run held before anyone can see it stopped: a waiter
        # (rm -f, stop) goes on to remove the layers the moment it does.
        try:
            require(daemon.graphdriver, "graph driver").put(c.id)
        except EngineError:
            LOG.exception("releasing the rootfs of %s", c.short_id)
        self._release_volumes(c)
        self.network.teardown(c)  # the network service: a container's network at exit
        if not c.host_config.get("AutoRemove"):
            # The shim releases the cgroups after it recorded the exit, beside the steps above: a
            # container is seen stopped once they are gone, as with containerd's shim (an
            # auto-removed one is seen removed once they are, see _dismantle).
            self.monitor.wait_gone(c.id, SHIM_END_WAIT)
        with c.lock:
            # The exit and the restart decision in one step: a stop, kill or
            # start in between sees either a running container or a final exit.
            c.exiting = False
            st = c.state
            st.pid = st.shim_pid = 0
            st.exit_code = int(result.get("ExitCode", 255))
            st.oom_killed = bool(result.get("OOMKilled"))
            st.error = result.get("Error", "") or ""
            st.finished_at = time.time()
            ran_for = st.finished_at - st.started_at
            c.exits += 1
            restart = (
                not c.exit_on_next
                and not daemon.engine.is_shutdown
                and should_restart(
                    c.host_config.get("RestartPolicy"), st.exit_code, c.restart_count, c.has_been_manually_stopped
                )
            )
            if restart:
                c.backoff = next_backoff(c.backoff, ran_for)
                c.machine.move(Phase.RESTARTING)
            else:
                c.machine.move(Phase.EXITED)
            auto_remove = not restart and bool(c.host_config.get("AutoRemove"))
            if auto_remove:
                # Not recorded: the removal follows at once and journals itself. A crash
                # before its journal leaves a record that says running, and the restore
                # reads the shim's exit.json and removes the container just the same.
                changes.container_changed(c.id)
            else:
                c.to_disk()
        if st.oom_killed:
            daemon.container_event(c, "oom")
        daemon.container_event(c, "die", {"exitCode": str(st.exit_code)})
        if daemon.execs is not None:
            daemon.execs.forget(c)
        if restart:
            self._schedule_restart(c, c.backoff)
        elif auto_remove:
            try:
                self.remove(c, force=True, volumes=True)
            except NoSuchContainer:  # removed by its user meanwhile
                pass
            except EngineError as exc:
                LOG.error("auto-removing %s: %s", c.short_id, exc)
                with c.lock:
                    if not c.removed:
                        c.to_disk()  # the exit, which the removal was to make moot

    def _schedule_restart(self, c: Container, delay: float) -> None:
        timer = threading.Timer(delay, self._restart_by_policy, (c,))
        timer.daemon = True
        with self._timers_lock:
            old = self._timers.pop(c.id, None)
            self._timers[c.id] = timer
        if old is not None:
            old.cancel()
        timer.start()

    def _cancel_restart(self, c: Container) -> None:
        with self._timers_lock:
            timer = self._timers.pop(c.id, None)
        if timer is not None:
            timer.cancel()

    def _restart_by_policy(self, c: Container) -> None:
        """The restart timer fired: start again, unless a stop, kill or remove came first."""
        with self._timers_lock:
            if self._timers.get(c.id) is threading.current_thread():
                del self._timers[c.id]
        try:
            self.start(c, by_policy=True)
        except EngineError as exc:
            LOG.error("restarting %s failed: %s", c.short_id, exc)

    # restore at start-up (seed ch. 4 §4.10)
    def restore(self) -> None:
        """Load every container, remove what a crash left half made, re-adopt the live shims, finish
        the removals a crash cut short, and start what the restart policies say (linked-to
        containers first)."""
        containers = self.store.load()
        for cid in self.store.leftovers:
            journal = self.store.read_journal(cid, CREATE_JOURNAL) or {}
            LOG.warning(
                "container %s was left half made or half removed by a crash; removing what remains of it", cid[:12]
            )
            self._undo_create(cid, list(journal.get("Volumes") or []))
        for c, alive in zip(containers, self._shims_alive(containers)):
            self._readopt(c, alive)
        for c in self._children_first(containers):
            removal = self.store.read_journal(c.id, REMOVAL_JOURNAL)
            if removal is not None or c.machine.phase is Phase.REMOVING:
                self._finish_removal(c, bool((removal or {}).get("RemoveVolumes")))
            else:
                self._restart_at_daemon_start(c)

    def _finish_removal(self, c: Container, volumes: bool) -> None:
        """A remove a crash cut short: do it again."""
        LOG.warning("finishing the removal of container %s, which a crash cut short", c.short_id)
        with c.lock:
            if c.machine.phase in (Phase.REMOVING, Phase.DEAD):
                c.machine.reset(Phase.EXITED)
        try:
            self.remove(c, force=True, volumes=volumes)
        except EngineError as exc:
            LOG.error("removing %s: %s", c.short_id, exc)

    @staticmethod
    def _shims_alive(containers: list[Container]) -> list[bool]:
        """Which containers' shims answer, asked eight at a time: each question waits for a shim
        to be scheduled, and one after the other they were a fifth of a restore with 500."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="restore") as pool:
            return list(pool.map(shim.shim_alive, [c.root for c in containers]))

    def _readopt(self, c: Container, alive: bool) -> None:
        """Re-adopt a live shim (``alive``: it answers), or record that the container died while
        we were away."""
        if not alive:
            ending = self._ending_shim(c)
            if ending:  # the next start waits for it to release the cgroups
                self.monitor.track_end(c.id, ending)
        if not c.state.running and not alive:
            # A start the crash cut short may have made its network namespace.
            self.network.remove_namespace(c)  # the network service: restore
            return
        if alive:
            state = shim.read_state(c.root) or {}
            if not c.state.running:
                # The daemon died between starting the shim and recording it.
                LOG.warning("container %s has a live shim its state did not record; adopting it", c.short_id)
                c.state.exit_code, c.state.error = 0, ""
                try:  # state.json is written when the process started
                    c.state.started_at = os.stat(c.path_of(shim_protocol.STATE_FILE)).st_mtime
                except OSError:
                    c.state.started_at = time.time()
                c.has_been_started_before = True
            c.state.pid = int(state.get("Pid", c.state.pid))
            c.state.shim_pid = int(state.get("ShimPid", c.state.shim_pid))
            with c.lock:
                c.machine.reset(Phase.PAUSED if c.state.paused else Phase.RUNNING)
            if not c.state.paused:
                self._thaw(c)
            try:
                require(self.daemon.graphdriver, "graph driver").get(c.id)
            except EngineError:
                LOG.exception("re-taking the rootfs of %s", c.short_id)
            for m in c.mounts:
                if m["Type"] == "volume" and self.volumes.exists(m["Name"]):
                    self.volumes.hold(m["Name"])
            self.network.restore(c)  # the network service: restore
            self.monitor.watch(c, c.state.shim_pid)
            LOG.info("container %s is still running (pid %d); re-attached to its shim", c.short_id, c.state.pid)
            return
        result = shim.read_exit(c.root) or {
            "ExitCode": 255,
            "Error": "the container's shim died while the daemon was down",
        }
        c.state.pid = c.state.shim_pid = 0
        c.state.exit_code = int(result.get("ExitCode", 255))
        c.state.oom_killed = bool(result.get("OOMKilled"))
        c.state.error = result.get("Error", "") or ""
        c.state.finished_at = c.state.finished_at or time.time()
        with c.lock:
            c.machine.reset(Phase.EXITED)
        self._release_stale_rootfs(c)
        self.network.remove_namespace(c)  # the network service: restore
        c.to_disk()
        LOG.info("container %s exited (%d) while the daemon was down", c.short_id, c.state.exit_code)

    @staticmethod
    def _ending_shim(c: Container) -> int:
        """The PID of the shim of ``c`` if it recorded the exit and has not ended yet (the daemon
        before this one died a moment after the exit), else 0.

        Its process must have started before its ``state.json`` was written: a process that
        got the PID later (after a reboot) is not waited for.
        """
        state = shim.read_state(c.root) or {}
        pid = int(state.get("ShimPid", 0) or 0)
        if not pid or (shim.read_exit(c.root) or {}).get("ShimPid") != pid:
            return 0
        try:
            written = os.stat(c.path_of(shim_protocol.STATE_FILE)).st_mtime
        except OSError:
            return 0
        started = proc.started_at(pid)
        return pid if started is not None and started <= written + 1.0 else 0

    def _thaw(self, c: Container) -> None:
        """Unfreeze a running container its record says is not paused (a crash inside :meth:`frozen`)."""
        try:
            self.exec_driver.unpause(self.command(c))
        except (EngineError, OSError):  # not frozen: the usual case
            return
        LOG.warning("container %s was left frozen by a crash; thawed it", c.short_id)

    def _release_stale_rootfs(self, c: Container) -> None:
        """The rootfs of a container that exited while the daemon was down may still be mounted by
        the daemon before: taking and releasing it lets the graph driver clear that mount."""
        driver = require(self.daemon.graphdriver, "graph driver")
        try:
            driver.get(c.id)
            driver.put(c.id)
        except EngineError:
            LOG.exception("releasing the rootfs of %s", c.short_id)

    def _restart_at_daemon_start(self, c: Container) -> None:
        if c.state.running:
            return
        if c.host_config.get("AutoRemove") and c.has_been_started_before:
            try:
                self.remove(c, force=True, volumes=True)
            except EngineError as exc:
                LOG.error("auto-removing %s: %s", c.short_id, exc)
            return
        policy = c.host_config.get("RestartPolicy") or {}
        if (policy.get("Name") or "no") == "no" or not c.has_been_started_before:
            return
        if should_restart(policy, c.state.exit_code, c.restart_count, c.has_been_manually_stopped):
            try:
                self.start(c)
            except EngineError as exc:
                LOG.error("restarting %s at daemon start failed: %s", c.short_id, exc)

    def _children_first(self, containers: list[Container]) -> list[Container]:
        """``containers`` ordered so that every ``--link`` target comes before the containers linking to it
        (a parent started before its child would fail: "Cannot link to a non running container")."""
        ordered: list[Container] = []
        seen: set[str] = set()

        def visit(c: Container) -> None:
            if c.id in seen:
                return
            seen.add(c.id)
            for spec in c.host_config.get("Links") or []:
                try:
                    visit(self.store.get(spec.partition(":")[0].lstrip("/")))
                except NotFound:
                    pass
            ordered.append(c)

        for c in containers:
            visit(c)
        return ordered
