"""The pluggy plugin manager: built-in plugins and ``engine.plugins`` entry points.

The engine's own job handlers are plugins like any other: they are modules
with ``@hookimpl`` functions, registered here before third-party ones.
A third-party plugin whose import fails is logged and kept in
:attr:`PluginManager.load_failures`; it never stops the daemon.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata

import pluggy

from engine import hookspecs

LOG = logging.getLogger(__name__)

#: The engine's own plugins, registered first, in this order.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "engine.builtins",
    "engine.daemon.jobs",
    "engine.graph.jobs",
    "engine.registry.jobs",
    "engine.daemon.container_jobs",
    "engine.builder.jobs",
    "engine.server.main",
)


@dataclass
class LoadFailure:
    """A plugin that could not be loaded, kept for ``engine-admin``."""

    name: str
    distribution: str
    error: str


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with the engine's hook specs and failure bookkeeping."""

    def __init__(self) -> None:
        super().__init__("engine")
        self.add_hookspecs(hookspecs)
        self.load_failures: list[LoadFailure] = []

    def load_entrypoint_plugins(self, group: str = hookspecs.PLUGIN_GROUP) -> None:
        for ep in metadata.entry_points(group=group):
            if self.get_plugin(ep.name) is not None or self.is_blocked(ep.name):
                continue
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
            try:
                plugin = ep.load()
                self.register(plugin, name=ep.name)
            except Exception as exc:  # a broken plugin must not break the engine
                LOG.error("plugin %s (%s) failed to load: %s: %s", ep.name, dist, type(exc).__name__, exc)
                self.load_failures.append(LoadFailure(ep.name, dist, f"{type(exc).__name__}: {exc}"))


def make_plugin_manager(builtins: Iterable[str] = BUILTIN_PLUGINS, entrypoints: bool = True) -> PluginManager:
    """Build the plugin manager.

    :param builtins: module names of the built-in plugins to register.
    :param entrypoints: also load third-party plugins from ``engine.plugins``.
    """
    pm = PluginManager()
    for modname in builtins:
        pm.register(importlib.import_module(modname), name=modname)
    if entrypoints:
        pm.load_entrypoint_plugins()
    pm.check_pending()
    return pm
