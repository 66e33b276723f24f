"""The graph driver contract and how the one graph driver is chosen (priority list, skip-me errors).

A graph driver stores layers: each layer is a directory tree identified by an
ID, optionally on top of a parent layer (seed ch. 11). The split follows
moby's graphdriver: the :class:`GraphDriver` core (about eight methods) and a
differ (``diff``/``changes``/``apply_diff``/``diff_size``). Drivers without a
native differ inherit :class:`NaiveDiffDriver`, which computes the differ from
mounted trees with the layer-tar library :mod:`engine.archive` (where
:class:`~engine.archive.Change` and :class:`~engine.archive.ChangeKind` live).

Selection (seed ch. 4 §4.4.1, ARCHITECTURE §3):

1. ``ENGINE_DRIVER`` (or ``DOCKER_DRIVER``) from the environment, then the
   configured ``--storage-driver``: that driver, or a clear error;
2. a driver whose state directory ``<root>/<name>`` already holds data, so
   images never silently disappear;
3. the priority list (:data:`engine.drivers.PRIORITY`: ``aufs, btrfs,
   devmapper, overlay, vfs`` unless the operator sets another), skipping
   names no package provides and drivers whose probe raises
   :class:`~engine.errors.NotSupported` (or its subclasses
   ``PrerequisitesNotMet`` / ``IncompatibleFilesystem``); any other error stops;
4. any other installed driver, in name order.

:func:`plan` applies these rules (:mod:`engine.drivers.selection` has
what they share with the other kinds); :func:`plan_volumes` chooses the
volumes graph's driver. A third-party graph driver needs only
:mod:`engine.drivers`, :mod:`engine.errors`, :mod:`engine.archive` (layer
tars, changes, whiteouts) and :mod:`engine.sys` (mounts and other kernel calls).
"""

from __future__ import annotations

import abc
import logging
import os
import re
import threading
from collections.abc import Collection, Mapping, Sequence
from typing import IO, TYPE_CHECKING, ClassVar

from engine import archive
from engine.archive import Change
from engine.drivers.selection import DriverConfig, DriverSelectionError, Selection, named, probe_entry
from engine.errors import InvalidParameter, NotSupported

# Sizes as Docker writes them in storage options and status lines (go-units), for
# drivers: part of the SDK, so a driver needs no import beyond the contract.
from engine.utils.units import human_size as human_size
from engine.utils.units import ram_in_bytes as ram_in_bytes

if TYPE_CHECKING:
    from engine.drivers.discovery import DriverEntry

LOG = logging.getLogger(__name__)


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

    :param home: the driver's own state directory, ``<root>/<name>``
        (:func:`home`); selection makes it (mode 0700) before constructing the
        driver, and a driver constructed otherwise creates it if needed.
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
        :raises InvalidParameter: an option the driver does not know; it
            stops selection, as any error other than the three above does.
        """

    @abc.abstractmethod
    def create(self, id: str, parent: str | None = None, mount_label: str = "") -> None:
        """Create layer ``id``, starting as a copy of ``parent`` when given.

        :raises InvalidParameter: ``id`` or ``parent`` is not a layer ID (:func:`validate_id`).
        :raises Conflict: layer ``id`` exists.
        :raises NotFound: ``parent`` does not exist; nothing is created.
        :raises HostError: the host failed (a full disk, a mount refused).
        """

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
        """Remove layer ``id`` (it must not be mounted).

        A layer that others are based on is either refused or removed
        leaving them intact; never a dangling child. Its files may still be
        on their way out when this returns (see :meth:`wait_removed`).

        :raises InvalidParameter: ``id`` is not a layer ID.
        :raises NotFound: it does not exist.
        :raises Conflict: it is in use (references from :meth:`get`), or
            the driver cannot remove a layer with children.
        :raises HostError: the host failed.
        """

    @abc.abstractmethod
    def get(self, id: str, mount_label: str = "") -> str:
        """Return the path of the layer's full tree, mounting it if needed.

        Calls are reference counted; each must be paired with :meth:`put`.

        :raises InvalidParameter: ``id`` is not a layer ID.
        :raises NotFound: it does not exist.
        :raises HostError: the mount failed (the message says why and what to do).
        """

    @abc.abstractmethod
    def put(self, id: str) -> None:
        """Release one reference taken by :meth:`get` (unmount at zero).

        A put without a reference is logged, not raised.

        :raises InvalidParameter: ``id`` is not a layer ID.
        :raises HostError: the unmount failed.
        """

    @abc.abstractmethod
    def exists(self, id: str) -> bool:
        """Whether layer ``id`` exists.

        :raises InvalidParameter: ``id`` is not a layer ID.
        """

    def status(self) -> list[tuple[str, str]]:
        """Key/value pairs for ``docker info`` (``DriverStatus``).

        Raises nothing: a value that cannot be read is left out.
        """
        return []

    def metadata(self, id: str) -> dict[str, str]:
        """``GraphDriver.Data`` for inspect (paths of the layer's parts).

        :raises NotFound: the layer does not exist.
        """
        return {}

    def wait_removed(self, timeout: float | None = None) -> bool:
        """Wait until the files of the layers removed so far are gone from the disk; whether
        that was within ``timeout`` seconds.

        :meth:`remove` may return once the layer is out of sight (:meth:`exists` is False,
        :meth:`get` fails) and delete its files in the background; such a driver waits here,
        and sweeps at its next start what a crash left. The default: a driver whose
        :meth:`remove` deletes before it returns has nothing to wait for.
        """
        return True

    def cleanup(self) -> None:
        """Release everything at shutdown (unmount what is still mounted).

        Raises nothing: what cannot be released is logged.
        """

    def cleanup_live(self, running: Collection[str]) -> None:
        """Release everything at a shutdown that leaves containers running (live restore), but
        leave the trees of the layers in ``running`` (their roots) as they are, for the next
        daemon's :meth:`get` to adopt, as moby leaves them.

        The default is :meth:`cleanup`: a driver whose :meth:`get` cannot adopt what it finds
        mounts again at the restore.
        """
        self.cleanup()

    # the differ
    @abc.abstractmethod
    def diff(self, id: str, parent: str | None = None) -> IO[bytes]:
        """A tar stream of the changes of ``id`` against ``parent``.

        :raises NotFound: ``id`` or ``parent`` does not exist.
        :raises HostError: a tree cannot be read.
        """

    @abc.abstractmethod
    def changes(self, id: str, parent: str | None = None) -> list[Change]:
        """The paths added, modified and deleted in ``id`` against ``parent``.

        :raises NotFound: ``id`` or ``parent`` does not exist.
        :raises HostError: a tree cannot be read.
        """

    @abc.abstractmethod
    def apply_diff(self, id: str, parent: str | None, diff: IO[bytes]) -> int:
        """Apply a layer tar (with whiteouts) to ``id``; return its size in bytes.

        :raises NotFound: ``id`` does not exist.
        :raises InvalidParameter: the tar is malformed or hostile (an entry
            outside of the layer, a link out of it).
        :raises HostError: the host failed (a full disk).
        """

    @abc.abstractmethod
    def diff_size(self, id: str, parent: str | None = None) -> int:
        """The size in bytes of the changes of ``id`` against ``parent``.

        :raises NotFound: ``id`` or ``parent`` does not exist.
        """


class NaiveDiffDriver(GraphDriver):
    """A differ for drivers that only know how to give out full trees.

    It compares the mounted tree of a layer with its parent's
    (:func:`engine.archive.changes`), exports the changes as a tar with
    AUFS-style whiteouts and applies layer tars with whiteouts translated to
    deletions.
    """

    def changes(self, id: str, parent: str | None = None) -> list[Change]:
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
        layer = self.get(id)
        try:
            return archive.apply_layer(layer, diff)
        finally:
            self.put(id)

    def diff_size(self, id: str, parent: str | None = None) -> int:
        changes = self.changes(id, parent)
        layer = self.get(id)
        try:
            return archive.changes_size(layer, changes)
        finally:
            self.put(id)


def home(root: str, name: str) -> str:
    """A graph driver's state directory: ``<root>/<name>``."""
    return os.path.join(root, name)


def probe(entry: DriverEntry, config: DriverConfig) -> None:
    """Probe an installed graph driver in its home with ``--storage-opt``.

    :raises DriverSelectionError: it failed to load.
    :raises NotSupported: (or a subclass) it cannot run here.
    """
    probe_entry(entry, home(config.root, entry.name), config.graph_options)


def _has_data(path: str) -> bool:
    try:
        with os.scandir(path) as it:
            return any(True for _ in it)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return False


def plan(config: DriverConfig, drivers: Mapping[str, DriverEntry]) -> Selection:
    """Choose the graph driver (see the module doc) without constructing it.

    :param config: the root, ``--storage-driver``, ``--storage-opt``, the
        priority list and the environment (``ENGINE_DRIVER``, ``DOCKER_DRIVER``).
    :param drivers: the installed graph drivers.
    :raises DriverSelectionError: with the reason.
    """
    root, options = config.root, config.graph_options
    for source, name in (
        ("ENGINE_DRIVER", config.environ.get("ENGINE_DRIVER", "")),
        ("DOCKER_DRIVER", config.environ.get("DOCKER_DRIVER", "")),
        ("--storage-driver", config.graph_driver),
    ):
        if name:
            return named("graph", name, source, drivers, home(root, name), options)

    prior = [name for name in drivers if _has_data(home(root, name))]
    if len(prior) > 1:
        raise DriverSelectionError(
            f"{root} holds data of several graph drivers ({', '.join(prior)}); "
            "clean up or choose one with --storage-driver"
        )
    if prior:
        entry = drivers[prior[0]]
        try:
            probe(entry, config)
        except NotSupported as exc:
            raise DriverSelectionError(
                f"{root}/{entry.name} holds images of graph driver {entry.name}, which cannot run here: {exc}"
            ) from exc
        return Selection("graph", entry, f"existing data in {root}/{entry.name}", home(root, entry.name), options)

    skipped: dict[str, str] = {}
    ordered = [n for n in config.graph_priority if n in drivers]
    ordered += [n for n in drivers if n not in ordered]
    for name in ordered:
        entry = drivers[name]
        if not entry.loaded:
            # Discovery logged the import error already.
            skipped[name] = f"failed to load: {entry.error}"
            LOG.info("graph driver %s skipped: it failed to load", name)
            continue
        try:
            probe(entry, config)
        except NotSupported as exc:
            skipped[name] = str(exc)
            LOG.info("graph driver %s skipped: %s", name, exc)
            continue
        where = "priority list" if name in config.graph_priority else "installed drivers"
        return Selection("graph", entry, f"first supported in the {where}", home(root, name), options, skipped)
    detail = "; ".join(f"{n}: {why}" for n, why in skipped.items()) or "no graph driver is installed"
    raise DriverSelectionError(f"no supported graph driver found ({detail})")


def plan_volumes(config: DriverConfig, drivers: Mapping[str, DriverEntry]) -> Selection:
    """The graph driver of the volumes graph (vfs), in ``<root>/volumes/<name>``.

    :raises DriverSelectionError: it is not installed, failed to load, or cannot run here.
    """
    name = config.volumes_driver
    return named("graph", name, "the volumes graph", drivers, os.path.join(config.root, "volumes", name), ())
