"""Choosing the one driver of each kind: the steps every kind shares.

Each contract module (:mod:`~engine.drivers.graph`, :mod:`~engine.drivers.exec`,
:mod:`~engine.drivers.network`) has the same three functions:

``home(root, name)``
    the driver's state directory (``<root>/<name>``,
    ``<root>/execdriver/<name>``, ``<root>/network``);
``probe(entry, config)``
    the installed driver's :meth:`probe` with its home and options;
``plan(config, drivers)``
    which driver runs, and why (a :class:`Selection`), without constructing it.

:func:`engine.drivers.discovery.select` finds the installed drivers, runs
the kind's ``plan`` and constructs the chosen driver; the daemon and
``engine-admin`` both go through it. The rules, for every kind (STYLE.md §4):

* a driver the operator named (or the kind's default, for exec and network)
  is that driver or a :class:`DriverSelectionError`: not installed, failed to
  load (the import error, with the distribution), or its probe raised
  :class:`~engine.errors.NotSupported` (with the reason);
* a driver that failed to load is logged once, by discovery, and is an
  error only when it is the one asked for;
* only graph drivers are tried in turn (a priority list): there the three
  "skip me" errors (``NotSupported``, ``PrerequisitesNotMet``,
  ``IncompatibleFilesystem``) skip a driver, and any other error stops.

This module is light on purpose (no stevedore, no dataclasses): the exec
contract imports it, and every container's shim imports the exec contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from engine.drivers import DEFAULT_EXEC_DRIVER, DEFAULT_NETWORK_DRIVER, PRIORITY, VOLUMES_DRIVER
from engine.errors import EngineError, NotSupported

if TYPE_CHECKING:
    from engine.drivers.discovery import DriverEntry
    from engine.drivers.network import NetworkOptions

__all__ = ["DriverConfig", "DriverSelectionError", "Selection", "named", "probe_entry"]


class DriverSelectionError(EngineError):
    """No driver of a kind could be selected; the message says why, and start-up stops."""


class DriverConfig(NamedTuple):
    """What driver selection reads from the daemon's configuration.

    The daemon builds it from its own configuration
    (:meth:`engine.daemon.config.Config.driver_config`), so drivers and
    selection never read the daemon's :class:`Config` itself.
    """

    #: The daemon's root directory; each driver's home is below it.
    root: str
    #: ``--storage-driver`` ("": chosen by the rules of :mod:`engine.drivers.graph`).
    graph_driver: str = ""
    #: ``--storage-opt`` values (``key=value``).
    graph_options: tuple[str, ...] = ()
    #: The order graph drivers are tried in (daemon.json's ``storage-driver-priority``).
    graph_priority: tuple[str, ...] = PRIORITY
    #: The graph driver of the volumes graph.
    volumes_driver: str = VOLUMES_DRIVER
    #: ``--exec-driver``.
    exec_driver: str = DEFAULT_EXEC_DRIVER
    #: Options of the exec driver (no flag sets any yet).
    exec_options: tuple[str, ...] = ()
    #: The network driver; "" when ``-b none`` turns networking off.
    network_driver: str = DEFAULT_NETWORK_DRIVER
    #: The network driver's options (None: :class:`~engine.drivers.network.NetworkOptions`' defaults).
    network_options: NetworkOptions | None = None
    #: Where ``ENGINE_DRIVER`` / ``DOCKER_DRIVER`` are read.
    environ: Mapping[str, str] = {}


class Selection(NamedTuple):
    """Which driver of a kind runs, why, and how it is constructed."""

    kind: str
    #: The chosen driver; None when none of this kind runs (networking off).
    entry: DriverEntry | None
    #: Why it was chosen ("chosen by --storage-driver"), or why none was.
    reason: str
    #: Its state directory.
    home: str = ""
    #: What it is constructed (and was probed) with.
    options: Any = ()
    #: Drivers passed over on the way, name -> reason (graph priority only).
    skipped: Mapping[str, str] = {}

    @property
    def name(self) -> str | None:
        return self.entry.name if self.entry is not None else None


def probe_entry(entry: DriverEntry, home: str, options: Any) -> None:
    """Run an installed driver's probe.

    :raises DriverSelectionError: the driver failed to load (with its
        distribution and the import error), or its probe raised something
        other than an :class:`~engine.errors.EngineError`.
    :raises NotSupported: (or a subclass) as the probe raised it: the
        caller decides whether that skips the driver or stops.
    :raises EngineError: as the probe raised it.
    """
    if not entry.loaded:
        raise DriverSelectionError(
            f"{entry.kind} driver {entry.name} from {entry.distribution} {entry.version} failed to load: {entry.error}"
        )
    try:
        entry.cls.probe(home, options)
    except EngineError:
        raise
    except Exception as exc:
        raise DriverSelectionError(f"{entry.kind} driver {entry.name}: {exc}") from exc


def named(
    kind: str,
    name: str,
    source: str,
    drivers: Mapping[str, DriverEntry],
    home: str,
    options: Any,
    remedy: str = "",
) -> Selection:
    """The driver the operator asked for: that one, or why not.

    :param source: where the name came from (``--storage-driver``,
        ``ENGINE_DRIVER``, ``default``), for the reason and the errors.
    :param remedy: appended to the "cannot run here" error.
    :raises DriverSelectionError: it is not installed, failed to load, or
        cannot run here.
    """
    entry = drivers.get(name)
    if entry is None:
        raise DriverSelectionError(
            f"{kind} driver {name!r} (from {source}) is not installed; "
            f"installed {kind} drivers: {', '.join(drivers) or 'none'}"
        )
    try:
        probe_entry(entry, home, options)
    except NotSupported as exc:
        raise DriverSelectionError(f"{kind} driver {name} (from {source}) cannot run here: {exc}{remedy}") from exc
    return Selection(kind, entry, f"chosen by {source}", home, options)
