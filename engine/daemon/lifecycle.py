"""The life cycle of containers: create, start, stop, kill, restart, pause,
unpause, update, wait, rename, remove, the exit and the restart policy, and
the restore at daemon start (seed ch. 8 §2 and ch. 4 §4.10; moby ``daemon/``).

One class, :class:`LifeCycle`, owns every transition of a container's
:class:`~engine.daemon.container.State`: nothing else changes it. A
transition changes the state under the container's ``lock`` (its
``changed`` condition wakes the waiters); start and remove also hold its
``op_lock``, so that no start is half done while a remove takes the
container apart. The states (``created``, ``running``, ``paused``,
``restarting``, ``removing``, ``exited``, ``dead``) are read from the
State's flags (:attr:`State.status <engine.daemon.container.State.status>`);
since only this class sets them, a state machine held under the container's
lock can take their place here alone.

A running container lives in its shim (:mod:`engine.shim`), started through
the :class:`~engine.shim.launcher.ShimLauncher`; the
:class:`~engine.daemon.monitor.Monitor` reports when a shim exits. The exit
status is then read from ``exit.json``, what the daemon set up for the run
is released, and the restart policy decides what happens next. On start the
daemon re-adopts the shims that are still alive (live restore).

What a container is asked to be (Config, HostConfig) becomes the exec
driver's :class:`~engine.drivers.exec.Command` in
:mod:`engine.daemon.hostconfig`; its record, names and lookups are the
:class:`~engine.daemon.store.ContainerStore`'s; its network is the
:class:`~engine.daemon.network.NetworkService`'s.
"""

from __future__ import annotations

import json
import logging
import os
import signal as signals
import threading
import time
from typing import TYPE_CHECKING, Any

from engine.daemon.container import Container
from engine.daemon.hostconfig import (
    apply_create_defaults,
    build_command,
    joined_container,
    merge_image_config,
    mount_points,
    parse_signal,
    resources_of,
    shim_spec,
    updated_host_config,
    validate_host_config,
)
from engine.daemon.monitor import Monitor
from engine.drivers.exec import Command, ExecDriver, ExecStartError
from engine.errors import Conflict, EngineError, HostError, InvalidParameter, NotFound, NotModified
from engine.shim import client as shim
from engine.shim import protocol as shim_protocol
from engine.sys.fs import safe_rmtree

if TYPE_CHECKING:
    from engine.daemon.daemon import Daemon
    from engine.daemon.network import NetworkService
    from engine.daemon.store import ContainerStore
    from engine.daemon.volumes import VolumeStore
    from engine.shim.launcher import ShimLauncher

LOG = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 10
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

    def close(self) -> None:
        """Stop watching and restarting (the daemon shuts down); running containers go on."""
        self.monitor.stop()
        with self._timers_lock:
            timers = list(self._timers.values())
            self._timers.clear()
        for t in timers:
            t.cancel()
        self.launcher.close()

    # the exec driver's handle on a running container
    def command(self, c: Container) -> Command:
        """The command ``c`` runs with (what the exec driver's calls take)."""
        cmd = self._commands.get(c.id)
        if cmd is None:
            cmd = load_command(c)
            self._commands[c.id] = cmd
        return cmd

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
        graph = self.daemon.graph
        hc = dict(host_config or {})
        warnings = validate_host_config(hc, os.cpu_count() or 1)
        self.daemon.security.check_create(hc)
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
        name = self.store.reserve_name(name, cid)
        root = self.store.path(cid)
        driver = self.daemon.graphdriver
        created_layers: list[str] = []
        made_volumes: list[str] = []
        try:
            os.makedirs(root, mode=0o700)
            apply_create_defaults(merged, hc, image_name, cid, os.uname().nodename, self.daemon.config)
            top = image.top_layer.split(":", 1)[1] if image.top_layer else None
            # Both layers get the container's --storage-opt, as in moby's layer store.
            storage_opt = hc.get("StorageOpt") or None
            if storage_opt is not None and not (
                isinstance(storage_opt, dict) and all(isinstance(v, str) for v in storage_opt.values())
            ):
                raise InvalidParameter("HostConfig.StorageOpt must be an object of strings")
            driver.create_read_write(cid + "-init", top, storage_opt=storage_opt)
            created_layers.append(cid + "-init")
            self._populate_init_layer(cid + "-init")
            driver.create_read_write(cid, cid + "-init", storage_opt=storage_opt)
            created_layers.append(cid)
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
            c.to_disk()
        except BaseException:
            for volume in made_volumes:
                try:
                    self.volumes.remove(volume)
                except EngineError:
                    LOG.exception("removing volume %s after a failed create", volume)
            for layer in reversed(created_layers):
                try:
                    driver.remove(layer)
                except Exception:
                    LOG.exception("removing layer %s after a failed create", layer)
            self.store.release_names(cid)
            if os.path.isdir(root):
                safe_rmtree(root)
            raise
        self.store.add(c)
        if (hc.get("NetworkMode") or "default") in ("default", "bridge") and self.network.driver is None:
            warnings.append(
                "The bridge network driver is not available: the container gets its own network "
                "namespace with only the loopback interface"
            )
        self.daemon.container_event(c, "create")
        return c, warnings

    def _populate_init_layer(self, layer: str) -> None:
        """Docker's init layer: mount points and files the runtime binds over,
        so read-only or minimal images can still be run."""
        driver = self.daemon.graphdriver
        path = driver.get(layer)
        try:
            for d in ("dev/pts", "dev/shm", "proc", "sys", "etc"):
                p = os.path.join(path, d)
                if not os.path.lexists(p):
                    os.makedirs(p, 0o755, exist_ok=True)
            for f in ("etc/hosts", "etc/hostname", "etc/resolv.conf", ".dockerenv", "dev/console"):
                p = os.path.join(path, f)
                if not os.path.lexists(p):
                    parent = os.path.dirname(p)
                    if os.path.isdir(parent) and not os.path.islink(parent):
                        with open(p, "w"):
                            pass
                        os.chmod(p, 0o755 if f == "dev/console" else 0o644)
        finally:
            driver.put(layer)

    def _make_mounts(self, c: Container, made: list[str]) -> list[dict]:
        """The mount points of a new container, with what they need made: missing bind sources,
        volumes (filled from the image unless ``nocopy``). Anonymous volumes it creates are
        added to ``made`` as they are (a failed create removes them)."""
        points = mount_points(c.config, c.host_config, lambda name: self.store.get(name).mounts)
        image_rootfs = None
        try:
            for point in points:
                if point["Type"] == "bind":
                    if not os.path.exists(point["Source"]):
                        # -v with a missing host path creates it, as Docker does.
                        os.makedirs(point["Source"], 0o755, exist_ok=True)
                elif point["Type"] == "volume":
                    anonymous = not point["Name"]
                    info, created = self.volumes.create(
                        point["Name"] or None, labels=point.pop("Labels", None), anonymous=anonymous
                    )
                    point["Name"] = info["Name"]
                    point["Source"] = info["Mountpoint"]
                    if created and anonymous:  # a named one stays, as in Docker
                        made.append(info["Name"])
                    if created and not point.get("NoCopy"):
                        if image_rootfs is None:
                            image_rootfs = self.daemon.graphdriver.get(c.init_layer)
                        self.volumes.copy_up(
                            point["Name"], os.path.join(image_rootfs, point["Destination"].lstrip("/"))
                        )
        finally:
            if image_rootfs is not None:
                self.daemon.graphdriver.put(c.init_layer)
        return sorted(points, key=lambda p: p["Destination"].count("/"))

    # start
    def start(self, c: Container, by_policy: bool = False) -> bool:
        """Start a created or exited container (moby ``containerStart``); whether it was started.

        A start asked for (the API, the daemon's start-up) resets the restart
        count and back-off, as moby's ``ResetRestartManager`` does. With
        ``by_policy`` it is the restart policy's timer: it goes ahead only if
        the container still waits for that restart (no stop, kill or remove
        came in between), and counts it.
        """
        with c.op_lock:
            with c.lock:
                if c.state.removal_in_progress or c.removed or c.state.dead:
                    if by_policy:
                        return False
                    raise Conflict("container is marked for removal and cannot be started")
                if by_policy:
                    if not (c.state.running and c.state.restarting) or c.exit_on_next:
                        return False
                    c.state.running = c.state.restarting = False
                    c.restart_count += 1
                else:
                    if c.state.running:
                        if c.state.paused:
                            raise Conflict("cannot start a paused container, try unpause instead")
                        raise NotModified()
                    c.has_been_manually_stopped = False
                    c.restart_count = 0
                    c.backoff = 0.0
                c.exit_on_next = False
            try:
                self._start(c)
            except BaseException as exc:
                self._record_failed_start(c, exc)
                failure: BaseException | None = exc
            else:
                failure = None
        if failure is not None:
            if c.host_config.get("AutoRemove"):
                try:
                    self.remove(c, force=True, volumes=True)
                except EngineError:
                    LOG.exception("removing %s after a failed start", c.short_id)
            if isinstance(failure, ExecStartError):
                raise InvalidParameter(
                    f"failed to create shim task: OCI runtime create failed: {failure}: unknown"
                ) from failure
            raise failure
        return True

    def _start(self, c: Container) -> None:
        """Mount the rootfs, make the network, start the shim; record the container running."""
        driver = self.daemon.graphdriver
        network = self.network
        rootfs = driver.get(c.id)
        made: dict = {}
        pending: list = []
        try:
            made = network.setup(c)
            link_env = network.link_env(c)
            cmd = build_command(
                c,
                rootfs,
                {k: v for k, v in made.items() if k in ("mode", "path")},
                self.volumes.path,
                link_env,
                self._joined_ipc_namespace(c),
                seccomp_profile=self.daemon.security.seccomp_profile(c.host_config),
                no_new_privileges=self.daemon.security.no_new_privileges(c.host_config),
            )
            for m in c.mounts:
                if m["Type"] == "volume":
                    self.volumes.hold(m["Name"])  # while the container runs
            spec = shim_spec(c, cmd, self.exec_driver)
            for name in (shim_protocol.EXIT_FILE, shim_protocol.STATE_FILE):
                try:
                    os.unlink(c.path_of(name))
                except FileNotFoundError:
                    pass
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
            st.running, st.paused, st.restarting, st.dead = True, False, False, False
            st.pid = int(result["Pid"])
            st.shim_pid = int(result["ShimPid"])
            st.exit_code, st.error, st.oom_killed = 0, "", False
            st.started_at = time.time()
            st.finished_at = 0.0
            c.has_been_started_before = True
            if made.get("settings"):
                c.network_settings = network.inspect_settings(c, made["settings"])
            c.to_disk()
            c.changed.notify_all()
        if made.get("settings"):
            network.update_parents(c)
        self.monitor.watch(c, st.shim_pid)
        self.daemon.container_event(c, "start")

    def _joined_ipc_namespace(self, c: Container) -> str:
        """``/proc/PID/ns/ipc`` of the container ``--ipc container:NAME`` joins ("" for none).

        :raises Conflict: that container does not run.
        """
        joined = joined_container(c.host_config, "IpcMode")
        if not joined:
            return ""
        other = self.store.get(joined)
        if not other.state.running:
            raise Conflict(f"cannot join IPC of a non running container: {other.id}")
        return f"/proc/{other.state.pid}/ns/ipc"

    @staticmethod
    def _record_failed_start(c: Container, exc: BaseException) -> None:
        with c.lock:
            c.state.error = str(exc)
            c.state.exit_code = start_failure_code(c.state.error)
            c.state.running = False
            c.state.restarting = False
            c.to_disk()
            c.changed.notify_all()

    def _release_volumes(self, c: Container) -> None:
        for m in c.mounts:
            if m["Type"] == "volume" and self.volumes.exists(m["Name"]):
                try:
                    self.volumes.release(m["Name"])
                except EngineError:
                    pass

    # signals, stops, pauses, updates
    def kill(self, c: Container, sig: int = signals.SIGKILL, event: bool = True) -> None:
        """Send ``sig`` (moby ``killWithSignal``). SIGKILL, or the container's stop signal (any signal
        when it has none), makes the next exit final and thaws a paused container so that the signal
        lands; any kill counts as a manual stop (``unless-stopped`` then stays down)."""
        stop_signal = c.config.get("StopSignal")
        final = sig == signals.SIGKILL or not stop_signal or parse_signal(stop_signal, signals.SIGTERM) == sig
        with c.lock:
            if not c.state.running:
                raise Conflict(f"Container {c.id} is not running")
            if final:
                c.exit_on_next = True
            if not self.daemon.engine.is_shutdown:
                c.has_been_manually_stopped = True
            if c.state.restarting:
                # Killing a container between restarts stops the restarts.
                c.state.restarting = False
                c.state.running = False
                self._cancel_restart(c)
                c.to_disk()
                c.changed.notify_all()
                return
            c.to_disk()
            thaw = final and c.state.paused
        try:
            self.exec_driver.kill(self.command(c), sig)
        except ProcessLookupError:
            pass
        if thaw:
            try:
                self.exec_driver.unpause(self.command(c))
                with c.lock:
                    c.state.paused = False
                    c.to_disk()
            except EngineError:
                pass
        if event:
            self.daemon.container_event(c, "kill", {"signal": str(sig)})

    def stop(self, c: Container, timeout: int | None = None, sig: str | None = None) -> None:
        """SIGTERM (or the stop signal), wait, then SIGKILL (moby ``containerStop``)."""
        with c.lock:
            if not c.state.running:
                raise NotModified()
            c.has_been_manually_stopped = True
            c.exit_on_next = True
            c.to_disk()
            if c.state.restarting:
                self._cancel_restart(c)
                c.state.restarting = False
                c.state.running = False
                c.to_disk()
                c.changed.notify_all()
                self.daemon.container_event(c, "stop")
                return
        if timeout is None:
            timeout = c.config.get("StopTimeout")
            if timeout is None:
                timeout = DEFAULT_STOP_TIMEOUT
        stop_signal = parse_signal(sig or c.config.get("StopSignal") or "SIGTERM", signals.SIGTERM)
        try:
            self.kill(c, stop_signal)
        except Conflict:
            pass
        if timeout < 0 or not self.wait(c, "not-running", timeout=timeout, only_exited=True):
            try:
                self.kill(c, signals.SIGKILL)
            except Conflict:
                pass
            self.wait(c, "not-running", timeout=30, only_exited=True)
        self.daemon.container_event(c, "stop")

    def restart(self, c: Container, timeout: int | None = None) -> None:
        """Stop ``c`` if it runs, then start it."""
        if c.state.running:
            self.stop(c, timeout)
        self.start(c)
        self.daemon.container_event(c, "restart")

    def pause(self, c: Container) -> None:
        """Freeze every process of ``c``."""
        with c.lock:
            if not c.state.running:
                raise Conflict(f"Container {c.id} is not running")
            if c.state.paused:
                raise Conflict(f"Container {c.id} is already paused")
            if c.state.restarting:
                raise Conflict(f"Container {c.id} is restarting, wait until the container is running")
            self.exec_driver.pause(self.command(c))
            c.state.paused = True
            c.to_disk()
        self.daemon.container_event(c, "pause")

    def unpause(self, c: Container) -> None:
        """Thaw ``c``."""
        with c.lock:
            if not c.state.paused:
                raise Conflict(f"Container {c.id} is not paused")
            self.exec_driver.unpause(self.command(c))
            c.state.paused = False
            c.to_disk()
        self.daemon.container_event(c, "unpause")

    def update(self, c: Container, body: dict) -> list[str]:
        """``docker update``: new limits (applied at once to a running container) or restart
        policy; the warnings."""
        with c.lock:
            new = updated_host_config(c.host_config, body)
            validate_host_config(new, os.cpu_count() or 1)
            if c.state.running:
                self.exec_driver.update(self.command(c), resources_of(new))
            c.host_config = new
            c.to_disk()
        self.daemon.container_event(c, "update")
        return []

    def wait(
        self,
        c: Container,
        condition: str = "not-running",
        timeout: float | None = None,
        only_exited: bool = False,
        stop: threading.Event | None = None,
    ) -> bool:
        """Block until ``condition``; False on timeout.

        ``not-running``: until it is not running (at once if it is not);
        ``next-exit``: until it next exits; ``removed``: until it is removed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with c.lock:
            gen = c.exits
            while True:
                if condition == "removed":
                    done = c.removed
                elif condition == "next-exit":
                    done = c.exits != gen or c.removed
                else:
                    done = not c.state.running or c.removed
                    if only_exited and c.state.restarting:
                        done = True
                if done:
                    return True
                if stop is not None and stop.is_set():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                c.changed.wait(0.5 if left is None else min(left, 0.5))

    # rename and remove
    def rename(self, c: Container, new: str) -> None:
        """Give ``c`` the name ``new``."""
        from engine.graphdb import validate_name

        old = self.store.rename(c, validate_name(new))
        self.network.container_renamed(c)
        self.daemon.container_event(c, "rename", {"oldName": old})

    def remove(self, c: Container, force: bool = False, volumes: bool = False, link: bool = False) -> None:
        """Remove ``c`` (``force``: kill it first; ``volumes``: its anonymous volumes too), or only
        the link that ``c.name`` is (``link``)."""
        if link:
            self.store.remove_link(c)
            return
        with c.lock:
            if c.state.removal_in_progress or c.removed:
                raise Conflict(f"removal of container {c.short_id} is already in progress")
            if c.state.running and not force:
                raise Conflict(
                    f"You cannot remove a running container {c.id}. Stop the container before "
                    "attempting removal or force remove"
                )
            c.state.removal_in_progress = True
            c.exit_on_next = True
        self._cancel_restart(c)
        with c.op_lock:  # no start can be half done below
            if c.state.running:
                try:
                    self.kill(c, signals.SIGKILL, event=False)
                except Conflict:
                    pass
                self.wait(c, "not-running", timeout=30)
            with c.lock:
                c.state.restarting = False
        driver = self.daemon.graphdriver
        try:
            for layer in (c.id, c.init_layer):
                if driver.exists(layer):
                    driver.remove(layer)
        except EngineError as exc:
            with c.lock:
                c.state.removal_in_progress = False
                c.state.dead = True
                c.to_disk()
            raise HostError(f"unable to remove filesystem for {c.id}: {exc}") from exc
        self.store.release_names(c.id)
        self.network.remove_namespace(c)
        safe_rmtree(c.root)
        self.store.discard(c)
        if volumes:
            for m in c.mounts:
                if m["Type"] == "volume" and self.volumes.is_anonymous(m["Name"]):
                    try:
                        self.volumes.remove(m["Name"])
                    except EngineError as exc:
                        LOG.warning("not removing volume %s: %s", m["Name"], exc)
        with c.lock:
            c.removed = True
            c.changed.notify_all()
        self.daemon.container_event(c, "destroy")
        if self.daemon.execs is not None:
            self.daemon.execs.forget(c)
        self.daemon.graph.gc()

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
            if not c.state.running or c.exiting:
                return
            c.exiting = True
        # Release what the run held before anyone can see it stopped: a waiter
        # (rm -f, stop) goes on to remove the layers the moment it does.
        try:
            daemon.graphdriver.put(c.id)
        except EngineError:
            LOG.exception("releasing the rootfs of %s", c.short_id)
        self._release_volumes(c)
        self.network.teardown(c)
        with c.lock:
            # The exit and the restart decision in one step: a stop, kill or
            # start in between sees either a running container or a final exit.
            c.exiting = False
            st = c.state
            st.running = st.paused = False
            st.pid = st.shim_pid = 0
            st.exit_code = int(result.get("ExitCode", 255))
            st.oom_killed = bool(result.get("OOMKilled"))
            st.error = result.get("Error", "") or ""
            st.finished_at = time.time()
            ran_for = st.finished_at - st.started_at
            c.exits += 1
            restart = (
                not c.exit_on_next
                and not c.state.removal_in_progress
                and not daemon.engine.is_shutdown
                and should_restart(
                    c.host_config.get("RestartPolicy"), st.exit_code, c.restart_count, c.has_been_manually_stopped
                )
            )
            if restart:
                c.backoff = next_backoff(c.backoff, ran_for)
                st.restarting = st.running = True
            c.to_disk()
        if st.oom_killed:
            daemon.container_event(c, "oom")
        daemon.container_event(c, "die", {"exitCode": str(st.exit_code)})
        if daemon.execs is not None:
            daemon.execs.forget(c)
        if restart:
            self._schedule_restart(c, c.backoff)
        with c.lock:
            c.changed.notify_all()
        if c.host_config.get("AutoRemove") and not restart:
            try:
                self.remove(c, force=True, volumes=True)
            except EngineError as exc:
                LOG.error("auto-removing %s: %s", c.short_id, exc)

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
        try:
            self.start(c, by_policy=True)
        except EngineError as exc:
            LOG.error("restarting %s failed: %s", c.short_id, exc)

    # restore at start-up (seed ch. 4 §4.10)
    def restore(self) -> None:
        """Load every container, re-adopt the live shims, and start what the restart policies
        say (linked-to containers first)."""
        containers = self.store.load()
        for c in containers:
            self._readopt(c)
        for c in self._children_first(containers):
            self._restart_at_daemon_start(c)

    def _readopt(self, c: Container) -> None:
        """Re-adopt a live shim, or record that the container died while we were away."""
        alive = shim.shim_alive(c.root)
        if not c.state.running and not alive:
            c.state.restarting = False
            return
        if alive:
            state = shim.read_state(c.root) or {}
            if not c.state.running:
                # The daemon died between starting the shim and recording it.
                LOG.warning("container %s has a live shim its state did not record; adopting it", c.short_id)
                c.state.running = True
                c.state.exit_code, c.state.error = 0, ""
                try:  # state.json is written when the process started
                    c.state.started_at = os.stat(c.path_of(shim_protocol.STATE_FILE)).st_mtime
                except OSError:
                    c.state.started_at = time.time()
                c.has_been_started_before = True
            c.state.pid = int(state.get("Pid", c.state.pid))
            c.state.shim_pid = int(state.get("ShimPid", c.state.shim_pid))
            c.state.restarting = False
            try:
                self.daemon.graphdriver.get(c.id)
            except EngineError:
                LOG.exception("re-taking the rootfs of %s", c.short_id)
            for m in c.mounts:
                if m["Type"] == "volume" and self.volumes.exists(m["Name"]):
                    self.volumes.hold(m["Name"])
            self.network.restore(c)
            self.monitor.watch(c, c.state.shim_pid)
            LOG.info("container %s is still running (pid %d); re-attached to its shim", c.short_id, c.state.pid)
            return
        result = shim.read_exit(c.root) or {
            "ExitCode": 255,
            "Error": "the container's shim died while the daemon was down",
        }
        c.state.running = c.state.paused = c.state.restarting = False
        c.state.pid = c.state.shim_pid = 0
        c.state.exit_code = int(result.get("ExitCode", 255))
        c.state.oom_killed = bool(result.get("OOMKilled"))
        c.state.error = result.get("Error", "") or ""
        c.state.finished_at = c.state.finished_at or time.time()
        self.network.remove_namespace(c)
        c.to_disk()
        LOG.info("container %s exited (%d) while the daemon was down", c.short_id, c.state.exit_code)

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
