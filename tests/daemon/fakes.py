"""A daemon made of real stores over a temporary root, for the tests of the
daemon's services, and the test doubles that stand in for the exec driver
and the shim launcher.

Real: the vfs graph driver, the graph (an image loaded from a docker-archive
built here), the link graph (SQLite), the volume store, the container store,
the network service without a driver, the monitor with its pidfds.

Test doubles (they say so): :class:`FakeExecDriver` and :class:`FakeLauncher`.
No container process runs; each "container" is a sleeping child process that
stands in for its shim, so that the monitor learns of exits the way it does
in the daemon (the shim's pidfd becomes readable), and an exit is recorded
in ``exit.json`` as the shim would record it.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import threading
from collections.abc import Callable, Sequence
from typing import Any

from engine.core import Engine
from engine.daemon import netns
from engine.daemon.config import Config
from engine.daemon.daemon import Daemon
from engine.daemon.lifecycle import LifeCycle
from engine.daemon.network import NetworkService
from engine.daemon.security import SecurityPolicy
from engine.daemon.store import ContainerStore
from engine.daemon.volumes import VolumeStore
from engine.drivers.exec import Command, ExecDriver, Pipes, ProcessConfig, Resources
from engine.errors import Conflict, NotFound
from engine.graph.graph import Graph
from engine.graph.load import load
from engine.graphdb import LinkGraph
from engine.shim import protocol
from engine.testing.images import BuiltImage, docker_archive, image_config
from engine.utils.progress import Progress
from engine.utils.timefmt import rfc3339nano_ns

IMAGE = "tiny:latest"


def tiny_image() -> BuiltImage:
    """One layer with ``/bin/true`` (an empty file: nothing is ever run) and ``/data/seed``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("bin/true", b""), ("data/seed", b"from the image\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1704067200
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    config = image_config(["/bin/true"], [{"created": "2024-01-01T00:00:00Z"}], Volumes={"/data": {}})
    return BuiltImage([buf.getvalue()], config, [IMAGE])


class FakeExecDriver(ExecDriver):
    """A test double of an exec driver: it runs nothing.

    The "container" of each start is a sleeping child process that stands in
    for its shim (see :class:`FakeLauncher`). :meth:`kill` records the exit
    the shim would record (128 + the signal) and ends the stand-in, unless
    the signal is in :attr:`ignored`; :meth:`exit` lets a container exit on
    its own with a code. As the contract says, :meth:`kill` raises NotFound
    for a container that does not run, and :meth:`unpause` Conflict for one
    that is not paused. Every call is recorded in :attr:`calls`.
    """

    name = "fake"

    def __init__(self, home: str = "", options: Any = None) -> None:
        super().__init__(home, options)
        self.calls: list[tuple[str, str, Any]] = []
        #: Signals the fake containers ignore (as a process that traps SIGTERM).
        self.ignored: set[int] = set()
        self.stand_ins: dict[str, subprocess.Popen] = {}
        self.ending: list[subprocess.Popen] = []  # recorded their exit, not ended yet
        self.dirs: dict[str, str] = {}
        self.paused: set[str] = set()
        self._lock = threading.Lock()

    # what the fake launcher calls
    def begin(self, cid: str, container_dir: str) -> subprocess.Popen:
        proc = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, start_new_session=True)
        with self._lock:
            self.stand_ins[cid] = proc
            self.dirs[cid] = container_dir
        return proc

    def exit(self, cid: str, code: int, oom: bool = False, end: bool = True) -> None:
        """The container exits with ``code``: the record first, then the stand-in shim ends
        (with ``end`` false, only at :meth:`end`: a shim still releasing the cgroups)."""
        with self._lock:
            proc = self.stand_ins.pop(cid, None)
            container_dir = self.dirs.get(cid)
        if proc is None or container_dir is None:
            raise NotFound(f"no fake container {cid[:12]} runs")
        self.paused.discard(cid)
        record = {"ExitCode": code, "FinishedAt": rfc3339nano_ns(), "OOMKilled": oom, "Error": "", "ShimPid": proc.pid}
        protocol.write_json_atomic(os.path.join(container_dir, protocol.EXIT_FILE), record)
        if end:
            proc.kill()
            proc.wait()
        else:
            with self._lock:
                self.ending.append(proc)

    def end(self) -> None:
        """The stand-ins whose exit was recorded with ``end=False`` end now."""
        with self._lock:
            procs, self.ending = self.ending, []
        for proc in procs:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        with self._lock:
            procs = list(self.stand_ins.values()) + self.ending
            self.stand_ins.clear()
            self.ending = []
        for proc in procs:
            proc.kill()
            proc.wait()

    # the contract
    def start(self, command: Command, pipes: Pipes) -> int:
        raise AssertionError("the fake exec driver never runs inside a shim")

    def wait(self, command: Command) -> int:
        raise AssertionError("the fake exec driver never runs inside a shim")

    def kill(self, command: Command, signal: int) -> None:  # noqa: A002 - the contract's name
        if signal == 0:  # the probe: is it there?
            if command.id not in self.stand_ins:
                raise NotFound(f"container {command.id} is not running")
            return
        self.calls.append(("kill", command.id, signal))
        if signal not in self.ignored:
            self.exit(command.id, 128 + signal)

    def pause(self, command: Command) -> None:
        self.calls.append(("pause", command.id, None))
        if command.id not in self.stand_ins:
            raise NotFound(f"container {command.id} is not running")
        self.paused.add(command.id)

    def unpause(self, command: Command) -> None:
        self.calls.append(("unpause", command.id, None))
        if command.id not in self.paused:
            raise Conflict(f"container {command.id} is not paused")
        self.paused.discard(command.id)

    def terminate(self, command: Command) -> None:
        self.calls.append(("terminate", command.id, None))
        self.exit(command.id, 137)

    def exec(
        self, command: Command, process: ProcessConfig, pipes: Pipes, start_callback: Callable[[int], Any] | None = None
    ) -> int:
        raise AssertionError("the fake exec driver runs no execs")

    def get_pids(self, command: Command) -> list[int]:
        proc = self.stand_ins.get(command.id)
        return [proc.pid] if proc is not None else []

    def stats(self, command: Command) -> dict[str, Any]:
        return {}

    def update(self, command: Command, resources: Resources) -> None:
        self.calls.append(("update", command.id, resources))

    def oom_killed(self, command: Command) -> bool:
        return False


class FakeLauncher:
    """A test double of :class:`~engine.shim.launcher.ShimLauncher`: no shim is started.

    :meth:`start` records the ``shim.json`` it was given and starts the
    driver's stand-in process, whose PID is both the "container's" and the
    "shim's"; with :attr:`failure` set it raises that instead (a start that
    failed), after handing every waiting attach a connection as the real one
    does (``connect`` is called with :attr:`shim_client`). With :attr:`gate`
    set, a start first says so on :attr:`entered` and waits for the gate (a
    start in flight, for the tests of what arrives meanwhile).
    """

    def __init__(self, driver: FakeExecDriver) -> None:
        self.driver = driver
        self.specs: list[dict[str, Any]] = []
        self.attached: list[Any] = []
        self.failure: BaseException | None = None
        self.closed = False
        self.shim_client: Any = None
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def start(self, container_dir: str, spec: dict[str, Any], attachers: Sequence[Any] = ()) -> dict[str, Any]:
        if self.gate is not None:
            self.entered.set()
            if not self.gate.wait(30):
                raise AssertionError("the test never opened the launcher's gate")
        for item in attachers:
            item.connect(self.shim_client)
            self.attached.append(item)
        self.specs.append(spec)
        if self.failure is not None:
            raise self.failure
        proc = self.driver.begin(spec["command"]["id"], container_dir)
        state = {"Pid": proc.pid, "ShimPid": proc.pid, "StartedAt": rfc3339nano_ns()}
        protocol.write_json_atomic(os.path.join(container_dir, protocol.STATE_FILE), state)
        return state

    def close(self) -> None:
        self.closed = True


class Rig:
    """A daemon made of real stores over ``root``, with the test doubles.

    :ivar daemon: the :class:`~engine.daemon.daemon.Daemon` (not started: its
        services are made here as its start-up steps make them).
    :ivar lifecycle: the life cycle under test.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.engine = Engine()
        self.daemon = Daemon(Config(data_root=root), self.engine)
        self.events: list[tuple[str, str]] = []
        daemon = self.daemon
        os.makedirs(os.path.join(root, "containers"), exist_ok=True)
        daemon.network = NetworkService(daemon, None)
        daemon.linkgraph = LinkGraph(os.path.join(root, "linkgraph.db"))
        self.driver = FakeExecDriver(os.path.join(root, "execdriver", "fake"))
        daemon.exec_driver = self.driver
        daemon.security = SecurityPolicy(daemon.config, self.driver.seccomp_support())
        self.launcher = FakeLauncher(self.driver)
        self._build()
        self._sub = daemon.events.subscribe()

    def _build(self) -> None:
        """The daemon's stores and life cycle over the root (at start, and at a restart)."""
        from engine_graph_vfs.driver import VfsDriver

        daemon, root = self.daemon, self.root
        daemon.graphdriver = VfsDriver(os.path.join(root, "vfs"))
        daemon.graph = Graph(root, daemon.graphdriver)
        daemon.volumes = VolumeStore(root, VfsDriver(os.path.join(root, "volumes", "vfs")))
        self.store = daemon.containers = ContainerStore(root, daemon.linkgraph)
        self.lifecycle = daemon.lifecycle = LifeCycle(
            daemon, self.store, self.driver, daemon.volumes, daemon.network, self.launcher
        )
        daemon.volumes.users = self.store.volume_users
        daemon.graph.container_users = self.store.image_users
        daemon.graph.container_layers = self.store.layer_tops

    def restart_daemon(self) -> LifeCycle:
        """New stores, graph driver and life cycle over the same root and link graph, restored:
        the daemon after a restart (the old one's monitor stops, as the dead daemon's would)."""
        self.lifecycle.close()
        self._build()
        self.lifecycle.restore()
        return self.lifecycle

    def load_image(self) -> None:
        load(self.daemon.graph, io.BytesIO(docker_archive([tiny_image()])), Progress(lambda line: None))

    def create(self, name: str = "", **host_config: Any) -> Any:
        """A container of the tiny image on the host's network (no namespace needs root)."""
        host_config.setdefault("NetworkMode", "host")
        config = {"Image": IMAGE, **host_config.pop("config", {})}
        c, _warnings = self.lifecycle.create(config, host_config, name)
        return c

    def settle(self) -> None:
        """Wait until the directories of removed containers and layers are deleted (both go
        in the background)."""
        assert self.store.wait_disposed(30) and self.daemon.graphdriver.wait_removed(30)

    def actions(self) -> list[str]:
        """The container events logged since the last call, as ``action`` strings."""
        out = []
        while True:
            event = self._sub.get(timeout=0)
            if event is None:
                return out
            if event["Type"] == "container":
                out.append(event["Action"])

    def close(self) -> None:
        """Stop the monitor and the stand-ins, unmount the network namespaces the containers had."""
        self._sub.close()
        self.lifecycle.close()
        self.daemon.network.close(live=False)
        self.driver.close()
        self.daemon.linkgraph.close()
        netns_dir = self.daemon.network.netns_dir
        for name in os.listdir(netns_dir) if os.path.isdir(netns_dir) else ():
            netns.remove(os.path.join(netns_dir, name))


def layers_of(rig: Rig, cid: str) -> list[str]:
    """The vfs layers of container ``cid`` that exist."""
    return [layer for layer in (cid, cid + "-init") if rig.daemon.graphdriver.exists(layer)]
