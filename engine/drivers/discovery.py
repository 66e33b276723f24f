"""Finding installed drivers: stevedore over the ``engine.*drivers`` groups.

A driver is any class published under one of the entry-point groups below by
any installed distribution; the core never imports a driver by name. Load
failures are kept (with the distribution that brought the driver) for
``engine-admin`` and for a clear error when the operator asked for that very
driver; they never break discovery of the others.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import stevedore

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
    """Load every installed driver of ``kind`` (``graph``, ``network``, ``exec``).

    :returns: name -> :class:`DriverEntry`; entries that failed to import have
        ``cls`` None and ``error`` set. When two distributions declare the same
        name, the first one found wins and the other is reported as an error.
    """
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
    """Forget cached entry points (after installing a distribution at run time)."""
    _distributions_by_entry_point.cache_clear()
    stevedore.ExtensionManager.ENTRY_POINT_CACHE.clear()
