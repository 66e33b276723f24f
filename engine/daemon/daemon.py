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
from typing import Any

from engine.daemon.config import Config
from engine.daemon.events import Events
from engine.drivers.graph import GraphDriver, select_graphdriver
from engine.errors import EngineError
from engine.utils.fs import atomic_write, safe_rmtree

LOG = logging.getLogger(__name__)


class Daemon:
    """The daemon's state: config, drivers, stores; built by :meth:`start`.

    :param config: the validated configuration.
    :param engine: the engine whose jobs serve this daemon.
    :param plugins: the pluggy plugin manager (hooks are called through it).
    """

    def __init__(self, config: Config, engine: Any, plugins: Any = None) -> None:
        self.config = config
        self.engine = engine
        self.plugins = plugins
        self.root = config.root
        self.id = ""
        self.started_at = time.time()
        self.graphdriver: GraphDriver | None = None
        self.graph: Any = None
        self.linkgraph: Any = None
        self.exec_driver: Any = None
        self.security: Any = None
        self.volumes: Any = None
        self.containers: Any = None
        self.execs: Any = None
        self.network: Any = None
        self.events = Events()
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
        cfg = self.config
        self.graphdriver = select_graphdriver(
            self.root, cfg.storage_driver or None, cfg.storage_opts, cfg.storage_driver_priority
        )
        if cfg.selinux_enabled and self.graphdriver.name == "btrfs":
            raise RuntimeError("SELinux is not supported with the BTRFS graph driver!")
        LOG.info("graph driver: %s (%s)", self.graphdriver.name, self.graphdriver.home)

    def _setup_graph(self) -> None:
        from engine.graph.graph import Graph

        self.graph = Graph(self.root, self.graphdriver, on_event=self._image_event)

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
        from engine.drivers.discovery import load_drivers
        from engine.errors import NotSupported

        driver = None
        if not self.config.disable_network:
            entry = load_drivers("network").get("bridge")
            if entry is None:
                LOG.warning("no bridge network driver is installed: containers get only lo")
            elif not entry.loaded:
                raise RuntimeError(
                    f"network driver bridge from {entry.distribution} {entry.version} failed to load: {entry.error}"
                )
            else:
                try:
                    entry.cls.probe(self.config)
                except NotSupported as exc:
                    raise RuntimeError(
                        f"network driver bridge cannot run here: {exc} (use -b none to run without networking)"
                    ) from exc
                home = os.path.join(self.root, "network")
                os.makedirs(home, mode=0o700, exist_ok=True)
                driver = entry.cls(home, self.config)
        self.network = NetworkService(self, driver)
        if driver is not None:
            self.network.register_jobs(self.engine)
            self.network.init()

    def _setup_exec_driver(self) -> None:
        """The exec driver (``--exec-driver``, default native), found through stevedore."""
        from engine.drivers.discovery import load_drivers
        from engine.errors import NotSupported

        name = self.config.exec_driver or "native"
        entries = load_drivers("exec")
        entry = entries.get(name)
        if entry is None:
            raise RuntimeError(
                f"exec driver {name!r} is not installed; installed exec drivers: {', '.join(entries) or 'none'}"
            )
        if not entry.loaded:
            raise RuntimeError(
                f"exec driver {name} from {entry.distribution} {entry.version} failed to load: {entry.error}"
            )
        home = os.path.join(self.root, "execdriver", name)
        try:
            entry.cls.probe(home)
        except NotSupported as exc:
            raise RuntimeError(f"exec driver {name} cannot run here: {exc}") from exc
        os.makedirs(home, mode=0o700, exist_ok=True)
        self.exec_driver = entry.cls(home)
        LOG.info("exec driver: %s", name)
        from engine.daemon.security import SecurityPolicy

        try:
            self.security = SecurityPolicy(self.config, self.exec_driver.seccomp_support())
        except EngineError as exc:
            raise RuntimeError(str(exc)) from exc

    def _setup_containers(self) -> None:
        """Volumes, the container store and exec store; restore containers (seed ch. 4 §4.10)."""
        from engine.daemon.containers import ContainerService
        from engine.daemon.execs import ExecService
        from engine.daemon.volumes import VolumeStore
        from engine.drivers.discovery import load_drivers

        vfs = load_drivers("graph").get("vfs")
        if vfs is None or not vfs.loaded:
            raise RuntimeError("the volumes graph needs the vfs graph driver (engine-graph-vfs)")
        self.volumes = VolumeStore(self.root, vfs.cls(os.path.join(self.root, "volumes", "vfs")))
        self.containers = ContainerService(self, self.exec_driver, self.volumes)
        self.containers.network = self.network
        self.execs = ExecService(self.containers)
        self.graph.container_users = self.containers.image_users
        self.graph.container_layers = self.containers.layer_tops
        self.containers.restore()
        self.network.prune([c.id for c in self.containers.all() if c.state.running])

    def container_event(self, container: Any, action: str, attributes: dict | None = None) -> None:
        attrs = {"image": container.config.get("Image") or container.image_id, "name": container.name.lstrip("/")}
        attrs.update(container.config.get("Labels") or {})
        attrs.update(attributes or {})
        self.events.log("container", action, container.id, attrs)
        if self.plugins is not None:
            self.plugins.hook.engine_container_event(
                daemon=self, container=container, action=action.split(":")[0], attributes=attrs
            )

    def container_counts(self) -> dict[str, int]:
        return self.containers.counts() if self.containers is not None else {}

    def _collect_garbage(self) -> None:
        """Remove layers that no image or container holds (left by a crash)."""
        removed = self.graph.gc()
        if removed:
            LOG.info("removed %d unreferenced layers", len(removed))

    def _setup_linkgraph(self) -> None:
        from engine.graphdb import LinkGraph

        self.linkgraph = LinkGraph(os.path.join(self.root, "linkgraph.db"))

    # shutdown
    def close(self) -> None:
        """Release what the daemon holds (the last on-shutdown handler)."""
        if self.plugins is not None:
            try:
                self.plugins.hook.engine_daemon_shutdown(daemon=self)
            except Exception:
                LOG.exception("engine_daemon_shutdown hook failed")
        if self.containers is not None:
            self.containers.monitor.stop()
            self.containers.shim_launcher.close()
        if self.network is not None and self.network.driver is not None:
            running = self.containers is not None and any(c.state.running for c in self.containers.all())
            try:
                if running:
                    # Live restore: their interfaces, rules and proxies stay for the next daemon.
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
                self.graphdriver.cleanup()
            except Exception:
                LOG.exception("graph driver cleanup failed")
            self.graphdriver = None

    # facts used by /info
    @property
    def driver_name(self) -> str:
        return self.graphdriver.name if self.graphdriver is not None else ""
