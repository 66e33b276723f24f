"""The graph driver contract, its errors, the priority list and selection.

A graph driver stores layers: each layer is a directory tree identified by an
ID, optionally on top of a parent layer (seed ch. 11). The split follows
moby's graphdriver: the :class:`GraphDriver` core (about eight methods) and a
differ (``diff``/``changes``/``apply_diff``/``diff_size``). Drivers without a
native differ inherit :class:`NaiveDiffDriver`, which computes the differ from
mounted trees.

Selection (seed ch. 4 §4.4.1, ARCHITECTURE §3):

1. ``ENGINE_DRIVER`` (or ``DOCKER_DRIVER``) from the environment, then the
   configured ``--storage-driver``: that driver, or a clear error;
2. a driver whose state directory ``<root>/<name>`` already holds data, so
   images never silently disappear;
3. the priority list (``aufs, btrfs, devmapper, overlay, vfs`` unless the
   operator sets another), skipping names no package provides and drivers
   whose probe raises :class:`~engine.errors.NotSupported` (or its subclasses
   ``PrerequisitesNotMet`` / ``IncompatibleFilesystem``); any other error stops;
4. any other installed driver, in name order.
"""

from __future__ import annotations

import abc
import enum
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, ClassVar

from engine.drivers import PRIORITY  # re-exported: the selection below uses it
from engine.drivers.discovery import DriverEntry, load_drivers
from engine.errors import EngineError, InvalidParameter, NotSupported

LOG = logging.getLogger(__name__)


class ChangeKind(enum.IntEnum):
    """Docker's change types (``archive.ChangeType``)."""

    MODIFY = 0
    ADD = 1
    DELETE = 2


@dataclass(frozen=True, order=True)
class Change:
    """One path changed in a layer relative to its parent."""

    path: str
    kind: ChangeKind

    def __str__(self) -> str:
        return f"{'CAD'[self.kind]} {self.path}"


_LAYER_ID = re.compile(r"[0-9a-f]{64}(-init)?")


def validate_id(id: str) -> str:
    """Check a layer ID before a driver turns it into a path; return it.

    IDs are 64 lowercase hex digits, or a container's ``<id>-init`` layer;
    anything else (``..``, ``/``, empty) could name a path outside the driver.

    :raises InvalidParameter: for any other ID.
    """
    if not isinstance(id, str) or not _LAYER_ID.fullmatch(id):
        raise InvalidParameter(f"invalid layer id {id!r}: expected 64 hex digits, optionally with -init")
    return id


class RefCounts:
    """Per-layer reference counts for drivers whose :meth:`GraphDriver.get` mounts nothing (vfs, btrfs).

    Every method holds :attr:`lock` (re-entrant). Hold it yourself around a
    check and an action that must see the same counts: ``remove`` refusing a
    layer in use and then renaming it away, ``get`` checking that the layer
    exists and then taking a reference.

    :param driver: the driver's name, for log messages.
    """

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self.lock = threading.RLock()
        self._counts: dict[str, int] = {}

    def take(self, id: str) -> None:
        """Add one reference to ``id``."""
        with self.lock:
            self._counts[id] = self._counts.get(id, 0) + 1

    def release(self, id: str) -> int:
        """Drop one reference to ``id``; return how many are left (an unbalanced release is logged)."""
        with self.lock:
            count = self._counts.get(id, 0)
            if count == 0:
                LOG.warning("%s: put of layer %s, which is not in use", self.driver, id)
                return 0
            if count == 1:
                del self._counts[id]
            else:
                self._counts[id] = count - 1
            return count - 1

    def count(self, id: str) -> int:
        """How many references ``id`` has."""
        with self.lock:
            return self._counts.get(id, 0)

    def clear(self) -> None:
        """Forget every reference (the daemon is stopping)."""
        with self.lock:
            if self._counts:
                LOG.info("%s: %d layers still referenced at cleanup", self.driver, len(self._counts))
            self._counts.clear()


class GraphDriver(abc.ABC):
    """A layer store. Subclasses set :attr:`name` to their entry-point name.

    :param home: the driver's own state directory, ``<root>/<name>``; the
        driver creates it if needed.
    :param options: ``--storage-opt`` values (``key=value`` strings).
    """

    #: The entry-point name, config value and state directory name.
    name: ClassVar[str] = ""

    def __init__(self, home: str, options: Sequence[str] = ()) -> None:
        self.home = home
        self.options = list(options)

    @classmethod
    def probe(cls, home: str, options: Sequence[str] = ()) -> None:
        """Check that the driver can run here, without changing anything.

        :raises NotSupported: (or ``PrerequisitesNotMet`` /
            ``IncompatibleFilesystem``) with the reason, so that selection
            skips the driver.
        """

    @abc.abstractmethod
    def create(self, id: str, parent: str | None = None, mount_label: str = "") -> None:
        """Create layer ``id``, starting as a copy of ``parent`` when given."""

    def create_read_write(
        self,
        id: str,
        parent: str | None = None,
        mount_label: str = "",
        storage_opt: Mapping[str, str] | None = None,
    ) -> None:
        """Create a container's writable layer (moby's ``CreateReadWrite``).

        ``storage_opt`` is the container's ``--storage-opt`` (``HostConfig.StorageOpt``,
        such as ``{"size": "10G"}``). Drivers that can limit a layer override
        this; the default refuses any option, in Docker's words, and creates a
        plain layer.

        :raises InvalidParameter: for options the driver does not take.
        """
        if storage_opt:
            raise InvalidParameter(f"--storage-opt is not supported for {self.name}")
        self.create(id, parent, mount_label)

    @abc.abstractmethod
    def remove(self, id: str) -> None:
        """Remove layer ``id`` (it must not be mounted)."""

    @abc.abstractmethod
    def get(self, id: str, mount_label: str = "") -> str:
        """Return the path of the layer's full tree, mounting it if needed.

        Calls are reference counted; each must be paired with :meth:`put`.
        """

    @abc.abstractmethod
    def put(self, id: str) -> None:
        """Release one reference taken by :meth:`get` (unmount at zero)."""

    @abc.abstractmethod
    def exists(self, id: str) -> bool:
        """Whether layer ``id`` exists."""

    def status(self) -> list[tuple[str, str]]:
        """Key/value pairs for ``docker info`` (``DriverStatus``)."""
        return []

    def metadata(self, id: str) -> dict[str, str]:
        """``GraphDriver.Data`` for inspect (paths of the layer's parts)."""
        return {}

    def cleanup(self) -> None:
        """Release everything at shutdown (unmount what is still mounted)."""

    # the differ
    @abc.abstractmethod
    def diff(self, id: str, parent: str | None = None) -> IO[bytes]:
        """A tar stream of the changes of ``id`` against ``parent``."""

    @abc.abstractmethod
    def changes(self, id: str, parent: str | None = None) -> list[Change]:
        """The paths added, modified and deleted in ``id`` against ``parent``."""

    @abc.abstractmethod
    def apply_diff(self, id: str, parent: str | None, diff: IO[bytes]) -> int:
        """Apply a layer tar (with whiteouts) to ``id``; return its size in bytes."""

    @abc.abstractmethod
    def diff_size(self, id: str, parent: str | None = None) -> int:
        """The size in bytes of the changes of ``id`` against ``parent``."""


class NaiveDiffDriver(GraphDriver):
    """A differ for drivers that only know how to give out full trees.

    It compares the mounted tree of a layer with its parent's
    (:func:`engine.graph.archive.changes`), exports the changes as a tar with
    AUFS-style whiteouts and applies layer tars with whiteouts translated to
    deletions.
    """

    def changes(self, id: str, parent: str | None = None) -> list[Change]:
        from engine.graph import archive

        layer = self.get(id)
        try:
            if parent is None:
                return archive.changes(layer, None)
            parent_dir = self.get(parent)
            try:
                return archive.changes(layer, parent_dir)
            finally:
                self.put(parent)
        finally:
            self.put(id)

    def diff(self, id: str, parent: str | None = None) -> IO[bytes]:
        from engine.graph import archive

        layer = self.get(id)
        try:
            if parent is None:
                return archive.tar_tree(layer, release=lambda: self.put(id))
            changes = self.changes(id, parent)
            return archive.export_changes(layer, changes, release=lambda: self.put(id))
        except BaseException:
            self.put(id)
            raise

    def apply_diff(self, id: str, parent: str | None, diff: IO[bytes]) -> int:
        from engine.graph import archive

        layer = self.get(id)
        try:
            return archive.apply_layer(layer, diff)
        finally:
            self.put(id)

    def diff_size(self, id: str, parent: str | None = None) -> int:
        from engine.graph import archive

        changes = self.changes(id, parent)
        layer = self.get(id)
        try:
            return archive.changes_size(layer, changes)
        finally:
            self.put(id)


class DriverSelectionError(EngineError):
    """No graph driver could be selected; the message says why."""


def _has_data(path: str) -> bool:
    try:
        with os.scandir(path) as it:
            return any(True for _ in it)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return False


def _probe(entry: DriverEntry, root: str, options: Sequence[str]) -> None:
    if not entry.loaded:
        raise DriverSelectionError(
            f"graph driver {entry.name} from {entry.distribution} {entry.version} failed to load: {entry.error}"
        )
    entry.cls.probe(os.path.join(root, entry.name), options)


def _instantiate(entry: DriverEntry, root: str, options: Sequence[str]) -> GraphDriver:
    return entry.cls(os.path.join(root, entry.name), options)


def select_graphdriver(
    root: str,
    configured: str | None = None,
    options: Sequence[str] = (),
    priority: Iterable[str] = PRIORITY,
    environ: Mapping[str, str] | None = None,
    drivers: Mapping[str, DriverEntry] | None = None,
) -> GraphDriver:
    """Choose, probe and instantiate the graph driver (see the module doc).

    :param root: the daemon's root directory.
    :param configured: ``--storage-driver`` / ``storage-driver``.
    :param priority: the priority list (daemon.json may override it).
    :param environ: where to read ``ENGINE_DRIVER`` / ``DOCKER_DRIVER``.
    :param drivers: installed drivers (default: discovered with stevedore).
    :raises DriverSelectionError: with the reason.
    """
    chosen = selection_plan(root, configured, options, priority, environ, drivers)
    return _instantiate(chosen.entry, root, options)


@dataclass
class SelectionResult:
    entry: DriverEntry
    reason: str
    skipped: dict[str, str]


def selection_plan(
    root: str,
    configured: str | None = None,
    options: Sequence[str] = (),
    priority: Iterable[str] = PRIORITY,
    environ: Mapping[str, str] | None = None,
    drivers: Mapping[str, DriverEntry] | None = None,
) -> SelectionResult:
    """Like :func:`select_graphdriver` but only says which driver and why."""
    if environ is None:
        environ = os.environ
    if drivers is None:
        drivers = load_drivers("graph")
    installed = ", ".join(drivers) or "none"

    for source, name in (
        ("ENGINE_DRIVER", environ.get("ENGINE_DRIVER", "")),
        ("DOCKER_DRIVER", environ.get("DOCKER_DRIVER", "")),
        ("--storage-driver", configured or ""),
    ):
        if not name:
            continue
        entry = drivers.get(name)
        if entry is None:
            raise DriverSelectionError(
                f"graph driver {name!r} (from {source}) is not installed; installed graph drivers: {installed}"
            )
        try:
            _probe(entry, root, options)
        except NotSupported as exc:
            raise DriverSelectionError(f"graph driver {name} (from {source}) cannot run here: {exc}") from exc
        return SelectionResult(entry, f"chosen by {source}", {})

    prior = [name for name in drivers if _has_data(os.path.join(root, name))]
    if len(prior) > 1:
        raise DriverSelectionError(
            f"{root} holds data of several graph drivers ({', '.join(prior)}); "
            "clean up or choose one with --storage-driver"
        )
    if prior:
        entry = drivers[prior[0]]
        try:
            _probe(entry, root, options)
        except NotSupported as exc:
            raise DriverSelectionError(
                f"{root}/{entry.name} holds images of graph driver {entry.name}, which cannot run here: {exc}"
            ) from exc
        return SelectionResult(entry, f"existing data in {root}/{entry.name}", {})

    skipped: dict[str, str] = {}
    ordered = [n for n in priority if n in drivers]
    ordered += [n for n in drivers if n not in ordered]
    for name in ordered:
        entry = drivers[name]
        if not entry.loaded:
            skipped[name] = f"failed to load: {entry.error}"
            LOG.warning("graph driver %s skipped: %s", name, skipped[name])
            continue
        try:
            _probe(entry, root, options)
        except NotSupported as exc:
            skipped[name] = str(exc)
            LOG.info("graph driver %s skipped: %s", name, exc)
            continue
        except EngineError:
            raise
        except Exception as exc:
            raise DriverSelectionError(f"graph driver {name}: {exc}") from exc
        where = "priority list" if name in priority else "installed drivers"
        return SelectionResult(entry, f"first supported in the {where}", skipped)
    detail = "; ".join(f"{n}: {why}" for n, why in skipped.items()) or "no graph driver is installed"
    raise DriverSelectionError(f"no supported graph driver found ({detail})")
