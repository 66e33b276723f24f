"""The Daemon: the seed's NewDaemon start-up steps and the daemon's state.

Seed ch. 4: configuration checks, the root directory, the graph driver, the
containers directory, the network (``init_networkdriver`` job), the link
graph, the exec driver, restoring containers and the shutdown handlers. The
daemon runs inside the gunicorn worker; the master only binds sockets and
supervises (ARCHITECTURE §5).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, TypeVar

from engine.daemon.config import Config
from engine.daemon.events import Events
from engine.daemon.namespaces import SharedMemory
from engine.drivers import discovery as drivers
from engine.drivers.graph import GraphDriver
from engine.errors import EngineError, Unavailable
from engine.sys.fs import atomic_write, safe_rmtree

if TYPE_CHECKING:
    import pluggy

    from engine.core.engine import Engine
    from engine.daemon.container import Container
    from engine.daemon.execs import ExecService
    from engine.daemon.health import HealthMonitor
    from engine.daemon.lifecycle import LifeCycle
    from engine.daemon.network import NetworkService
    from engine.daemon.security import SecurityPolicy
    from engine.daemon.store import ContainerStore
    from engine.daemon.userns import Remap
    from engine.daemon.volumes import VolumeStore
    from engine.drivers.exec import ExecDriver
    from engine.graph.graph import Graph
    from engine.graphdb import LinkGraph

LOG = logging.getLogger(__name__)

_T = TypeVar("_T")


def require(service: _T | None, what: str) -> _T:
    """``service``, one of the :class:`Daemon`'s, once its start-up step made it.

    The services are None until :meth:`Daemon.start` makes them (and after
    :meth:`Daemon.close`); a job that needs one sooner gets a 503.

    :raises Unavailable: the service does not exist yet (or any more).
    """
    if service is None:
        raise Unavailable(f"the daemon has no {what} yet: it is starting or stopping")
    return service


class Daemon:
    """The daemon's state: config, drivers, stores; built by :meth:`start`.

    :param config: the validated configuration.
    :param engine: the engine whose jobs serve this daemon.
    :param plugins: the pluggy plugin manager (hooks are called through it).
    """

    def __init__(self, config: Config, engine: Engine, plugins: pluggy.PluginManager | None = None) -> None:
        self.config = config
        self.engine = engine
        self.plugins = plugins
        self.root = config.root
        self.id = ""
        self.started_at = time.time()
        # The services, made by the start-up steps in this order.
        self.graphdriver: GraphDriver | None = None
        self.graph: Graph | None = None
        self.network: NetworkService | None = None
        self.linkgraph: LinkGraph | None = None
        self.exec_driver: ExecDriver | None = None
        #: The security options a container runs with (seccomp, no_new_privs, sysctl checks).
        self.security: SecurityPolicy | None = None
        #: ``--userns-remap``: the user and ID map of the containers (None: the host's IDs).
        self.remap: Remap | None = None
        self.volumes: VolumeStore | None = None
        #: The container records, names and lookups.
        self.containers: ContainerStore | None = None
        #: Every transition of a container (create, start, stop, ..., restore).
        self.lifecycle: LifeCycle | None = None
        self.execs: ExecService | None = None
        #: The healthchecks of running containers (fed by container_event).
        self.health: HealthMonitor | None = None
        #: The /dev/shm tmpfs of shareable-IPC containers (released on their die event).
        self.shm = SharedMemory()
        self.events = Events()
        #: The Prometheus metrics (engine.server.metrics) when ``--metrics-addr`` is set.
        self.metrics: Any = None
        self.ready = threading.Event()
        engine.daemon = self

    # start-up (seed ch. 4 §4.1-§4.12)
    def start(self) -> None:
        """Run the start-up steps; on failure undo what was done and raise."""
        try:
            self._setup_root()
            self._setup_graphdriver()
            self._setup_graph()
            self._setup_network()
            self._setup_containers_dir()
            self._setup_linkgraph()
            self._setup_exec_driver()
            self._setup_containers()
            self._collect_garbage()
        except BaseException:
            self.close()
            raise
        self.engine.on_shutdown(self.close)

    def _setup_root(self) -> None:
        root = os.path.realpath(self.config.root)
        os.makedirs(root, mode=0o711, exist_ok=True)
        if self.config.userns_remap:
            from engine.daemon import userns

            try:
                self.remap = userns.setup(self.config.userns_remap)
            except EngineError as exc:
                raise RuntimeError(str(exc)) from exc
            # Everything (images, containers, volumes) lives in <root>/<uid>.<gid>, as with dockerd.
            root = userns.remapped_root(root, self.remap)
            LOG.info("user namespaces: %r, root %s", self.remap, root)
        self.root = self.config.data_root = root
        # The seed points TMPDIR at <root>/tmp so big temporary files (layer
        # downloads) land on the same file system as their destination and
        # can be renamed into place. Left-overs of a crash are removed.
        tmp = os.path.join(root, "tmp")
        if os.path.isdir(tmp):
            safe_rmtree(tmp)
        os.makedirs(tmp, mode=0o700, exist_ok=True)
        os.environ["TMPDIR"] = tmp
        self.id = self._daemon_id()

    def _daemon_id(self) -> str:
        path = os.path.join(self.root, "engine-id")
        try:
            with open(path, encoding="ascii") as fh:
                value = fh.read().strip()
            if value:
                return value
        except FileNotFoundError:
            pass
        value = str(uuid.uuid4()).upper()
        atomic_write(path, value.encode() + b"\n", mode=0o600)
        return value

    def _setup_graphdriver(self) -> None:
        """The graph driver, chosen by :mod:`engine.drivers.graph`'s rules (seed ch. 4 §4.4.1)."""
        self.graphdriver = drivers.select("graph", self.config.driver_config())
        if self.config.selinux_enabled and self.graphdriver.name == "btrfs":
            raise RuntimeError("SELinux is not supported with the BTRFS graph driver!")

    def _setup_graph(self) -> None:
        from engine.graph.graph import Graph

        idmap = self.remap.idmap if self.remap is not None else None
        self.graph = Graph(
            self.root, require(self.graphdriver, "graph driver"), on_event=self._image_event, idmap=idmap
        )

    def _image_event(self, action: str, image_id: str, attributes: dict) -> None:
        self.events.log("image", action, image_id, attributes)
        if self.plugins is not None:
            self.plugins.hook.engine_image_event(daemon=self, image_id=image_id, action=action, attributes=attributes)

    def image_count(self) -> int:
        return len(self.graph.images) if self.graph is not None else 0

    def _setup_containers_dir(self) -> None:
        os.makedirs(os.path.join(self.root, "containers"), mode=0o700, exist_ok=True)

    def _setup_network(self) -> None:
        """The network driver and the ``init_networkdriver`` job (seed ch. 6 §3.2); ``-b none``: none."""
        from engine.daemon.network import NetworkService

        driver = drivers.select("network", self.config.driver_config())
        self.network = NetworkService(self, driver)
        if driver is not None:
            self.network.register_jobs(self.engine)
            self.network.init()

    def _setup_exec_driver(self) -> None:
        """The exec driver (``--exec-driver``, default native)."""
        self.exec_driver = drivers.select("exec", self.config.driver_config())
        from engine.daemon.security import SecurityPolicy

        if self.remap is not None:
            reason = self.exec_driver.userns_support()
            if reason is not None:
                raise RuntimeError(f"--userns-remap: {reason}")
        try:
            self.security = SecurityPolicy(self.config, self.exec_driver.seccomp_support(), self.remap)
        except EngineError as exc:
            raise RuntimeError(str(exc)) from exc

    def _setup_containers(self) -> None:
        """Volumes, the container store, the life cycle and the exec store; restore containers
        (seed ch. 4 §4.10)."""
        from engine.daemon.execs import ExecService
        from engine.daemon.health import HealthMonitor
        from engine.daemon.lifecycle import LifeCycle
        from engine.daemon.store import ContainerStore
        from engine.daemon.volumes import VolumeStore
        from engine.shim.launcher import ShimLauncher

        assert self.graph is not None and self.linkgraph is not None and self.network is not None
        assert self.exec_driver is not None
        owner = (self.remap.idmap.root_uid, self.remap.idmap.root_gid) if self.remap is not None else (0, 0)
        self.volumes = VolumeStore(self.root, drivers.select_volumes(self.config.driver_config()), owner)
        self.containers = ContainerStore(self.root, self.linkgraph)
        #: A warm process with the shim and the driver imported launches the shims (ARCHITECTURE §5).
        launcher = ShimLauncher(preload=[type(self.exec_driver).__module__])
        # The same process forks the driver's helpers (the native driver's exec) without an interpreter's start.
        self.exec_driver.helpers = launcher.forkserver
        self.lifecycle = LifeCycle(self, self.containers, self.exec_driver, self.volumes, self.network, launcher)
        self.execs = ExecService(self)
        self.volumes.users = self.containers.volume_users
        self.graph.container_users = self.containers.image_users
        self.graph.container_layers = self.containers.layer_tops
        self.health = HealthMonitor(self)
        self.lifecycle.restore()
        for c in self.containers.all():
            self.health.resume(c)  # the containers that ran through the restart
            if not c.state.running:
                self.shm.release(c)  # a shareable one that stopped while the daemon was down
        self.network.prune([c.id for c in self.containers.all() if c.state.running])

    def container_event(self, container: Container, action: str, attributes: dict | None = None) -> None:
        attrs = {"image": container.config.get("Image") or container.image_id, "name": container.name.lstrip("/")}
        attrs.update(container.config.get("Labels") or {})
        attrs.update(attributes or {})
        self.events.log("container", action, container.id, attrs)
        if self.health is not None:
            self.health.on_event(container, action)
        self.shm.on_event(container, action)
        if self.plugins is not None:
            self.plugins.hook.engine_container_event(
                daemon=self, container=container, action=action.split(":")[0], attributes=attrs
            )

    def container_counts(self) -> dict[str, int]:
        return self.containers.counts() if self.containers is not None else {}

    def _collect_garbage(self) -> None:
        """Remove layers that no image or container holds (left by a crash)."""
        removed = require(self.graph, "image store").gc()
        if removed:
            LOG.info("removed %d unreferenced layers", len(removed))

    def _setup_linkgraph(self) -> None:
        from engine.graphdb import LinkGraph

        # The root's lock makes this daemon the database's only writer.
        self.linkgraph = LinkGraph(os.path.join(self.root, "linkgraph.db"), sole_writer=True)

    # shutdown
    def close(self) -> None:
        """Release what the daemon holds (the last on-shutdown handler)."""
        if self.plugins is not None:
            try:
                self.plugins.hook.engine_daemon_shutdown(daemon=self)
            except Exception:
                LOG.exception("engine_daemon_shutdown hook failed")
        if self.health is not None:
            self.health.close()
        if self.lifecycle is not None:
            self.lifecycle.close()
        # Live restore: what runs on keeps its root, interfaces, rules and proxies for the next daemon.
        running = [c.id for c in self.containers.all() if c.state.running] if self.containers is not None else []
        if self.network is not None and self.network.driver is not None:
            self.network.close(live=bool(running))
            try:
                if running:
                    self.network.driver.close()
                else:
                    self.network.driver.shutdown()
            except Exception:
                LOG.exception("network driver shutdown failed")
        if self.linkgraph is not None:
            self.linkgraph.close()
            self.linkgraph = None
        if self.graphdriver is not None:
            try:
                if running:
                    self.graphdriver.cleanup_live(running)
                else:
                    self.graphdriver.cleanup()
            except Exception:
                LOG.exception("graph driver cleanup failed")
            self.graphdriver = None

    # facts used by /info
    @property
    def driver_name(self) -> str:
        return self.graphdriver.name if self.graphdriver is not None else ""
