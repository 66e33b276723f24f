"""Finding installed drivers (stevedore over the ``engine.*drivers`` groups) and selecting one of each kind.

A driver is any class published under one of the entry-point groups below by
any installed distribution; the core never imports a driver by name. Load
failures are logged once (discovery is cached), kept with the distribution
that brought the driver for ``engine-admin``, and raised only when the
operator asked for that very driver; they never break discovery of the
others.

:func:`select` is the one path from configuration to a running driver, for
every kind; the daemon takes it, and ``engine-admin`` shows what it would
choose through :func:`plan` and :func:`probe`, the same functions::

    select(kind, config)
      -> load_drivers(kind)                      installed drivers (stevedore, cached)
      -> engine.drivers.<kind>.plan(config, ..)  the kind's rules -> Selection
      -> construct(selection)                    home made, Driver(home, options)
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any, Literal, overload

import stevedore

from engine.drivers import exec as exec_contract
from engine.drivers import graph, network
from engine.drivers.selection import DriverConfig, Selection

LOG = logging.getLogger(__name__)

#: Driver kind -> entry-point group.
GROUPS = {
    "graph": "engine.graphdrivers",
    "network": "engine.networkdrivers",
    "exec": "engine.execdrivers",
}


@dataclass
class DriverEntry:
    """One installed driver, loaded or not."""

    kind: str
    name: str
    entry_point: str
    cls: Any = None
    error: str | None = None
    distribution: str = "?"
    version: str = "?"
    extra: dict = field(default_factory=dict)

    @property
    def loaded(self) -> bool:
        return self.cls is not None

    @property
    def summary(self) -> str:
        """The first line of the driver class's docstring."""
        doc = (self.cls.__doc__ or "") if self.cls is not None else ""
        return doc.strip().splitlines()[0].strip() if doc.strip() else ""


@functools.cache
def _distributions_by_entry_point() -> dict[tuple[str, str, str], tuple[str, str]]:
    """(group, name, value) -> (distribution name, version), for reporting."""
    found: dict[tuple[str, str, str], tuple[str, str]] = {}
    for dist in metadata.distributions():
        try:
            eps = dist.entry_points
        except Exception:  # a broken dist-info must not break discovery
            continue
        for ep in eps:
            if ep.group.startswith("engine."):
                found[(ep.group, ep.name, ep.value)] = (dist.metadata["Name"], dist.version)
    return found


def distribution_of(group: str, name: str, value: str) -> tuple[str, str]:
    """The (distribution, version) that declares an entry point."""
    return _distributions_by_entry_point().get((group, name, value), ("?", "?"))


def load_drivers(kind: str) -> dict[str, DriverEntry]:
    """Every installed driver of ``kind`` (``graph``, ``network``, ``exec``), loaded once per process.

    :returns: name -> :class:`DriverEntry`; entries that failed to import have
        ``cls`` None and ``error`` set. When two distributions declare the same
        name, the first one found wins and the other is reported as an error.
    """
    return dict(_load(kind))


@functools.cache
def _load(kind: str) -> dict[str, DriverEntry]:
    group = GROUPS[kind]
    entries: dict[str, DriverEntry] = {}

    def on_failure(_manager: Any, ep: Any, exc: BaseException) -> None:
        dist, version = distribution_of(group, ep.name, ep.value)
        LOG.error(
            "%s driver %s from %s %s failed to load: %s: %s", kind, ep.name, dist, version, type(exc).__name__, exc
        )
        entries.setdefault(
            ep.name,
            DriverEntry(kind, ep.name, ep.value, None, f"{type(exc).__name__}: {exc}", dist, version),
        )

    mgr = stevedore.ExtensionManager(group, invoke_on_load=False, on_load_failure_callback=on_failure)
    for ext in mgr.extensions:
        dist, version = distribution_of(group, ext.name, ext.entry_point.value)
        if ext.name in entries:
            LOG.error("%s driver %s declared twice; using %s", kind, ext.name, entries[ext.name].entry_point)
            continue
        entries[ext.name] = DriverEntry(kind, ext.name, ext.entry_point.value, ext.plugin, None, dist, version)
    return dict(sorted(entries.items()))


def reset_caches() -> None:
    """Forget cached entry points and drivers (after installing a distribution at run time)."""
    _distributions_by_entry_point.cache_clear()
    _load.cache_clear()
    stevedore.ExtensionManager.ENTRY_POINT_CACHE.clear()


#: Driver kind -> its contract module (``home``, ``probe``, ``plan``).
CONTRACTS: dict[str, ModuleType] = {"graph": graph, "exec": exec_contract, "network": network}


def plan(kind: str, config: DriverConfig, drivers: Mapping[str, DriverEntry] | None = None) -> Selection:
    """Which driver of ``kind`` would run with ``config``, and why, without constructing it.

    :param drivers: the installed drivers of ``kind`` (default: discovered).
    :raises DriverSelectionError: none can, with the reason.
    """
    return CONTRACTS[kind].plan(config, load_drivers(kind) if drivers is None else drivers)


def probe(kind: str, entry: DriverEntry, config: DriverConfig) -> None:
    """Probe one installed driver of ``kind`` as selection would (its home, its options).

    :raises DriverSelectionError: it failed to load.
    :raises NotSupported: (or a subclass) it cannot run here.
    """
    CONTRACTS[kind].probe(entry, config)


def construct(chosen: Selection) -> Any:
    """Make the chosen driver's home and construct the driver there with its options."""
    assert chosen.entry is not None and chosen.entry.cls is not None
    _make_private_dirs(chosen.home)
    return chosen.entry.cls(chosen.home, chosen.options)


def _make_private_dirs(path: str) -> None:
    """``mkdir -p`` with mode 0700 for every directory made (os.makedirs gives only the last one the mode)."""
    parent = os.path.dirname(path)
    if parent and parent != path and not os.path.isdir(parent):
        _make_private_dirs(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass


@overload
def select(
    kind: Literal["graph"], config: DriverConfig, drivers: Mapping[str, DriverEntry] | None = None
) -> graph.GraphDriver: ...
@overload
def select(
    kind: Literal["exec"], config: DriverConfig, drivers: Mapping[str, DriverEntry] | None = None
) -> exec_contract.ExecDriver: ...
@overload
def select(
    kind: Literal["network"], config: DriverConfig, drivers: Mapping[str, DriverEntry] | None = None
) -> network.NetworkDriver | None: ...
def select(kind: str, config: DriverConfig, drivers: Mapping[str, DriverEntry] | None = None) -> Any:
    """The driver of ``kind`` for ``config``: chosen by the kind's rules and constructed.

    :returns: the driver; None only for a network driver when networking is off.
    :raises DriverSelectionError: none can run, with the reason.
    """
    chosen = plan(kind, config, drivers)
    if chosen.entry is None:
        LOG.info("%s driver: none (%s)", kind, chosen.reason)
        return None
    driver = construct(chosen)
    LOG.info("%s driver: %s (%s) in %s", kind, chosen.name, chosen.reason, chosen.home)
    return driver


def select_volumes(config: DriverConfig, drivers: Mapping[str, DriverEntry] | None = None) -> graph.GraphDriver:
    """The graph driver of the volumes graph (:func:`engine.drivers.graph.plan_volumes`), constructed.

    :raises DriverSelectionError: it is not installed, failed to load, or cannot run here.
    """
    return construct(graph.plan_volumes(config, load_drivers("graph") if drivers is None else drivers))
