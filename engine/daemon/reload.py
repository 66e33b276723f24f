"""Reloading the daemon's configuration without a restart (SIGHUP, as dockerd).

``systemctl reload engine`` (the unit's ``ExecReload``) sends SIGHUP to the
gunicorn master; the master passes it to the worker, whose signal handler
runs the ``reload`` job (:func:`job_reload`), and tells systemd
``RELOADING=1`` then ``READY=1`` around it (engine.server.app). Neither
process restarts: running containers, attach sessions and streams go on.

The job reads daemon.json again and builds the configuration exactly as
start-up does (:func:`engine.daemon.config.config_from`: the same flags,
the file as it is now, defaults for the rest), so a reload yields what a
restart would, for the options it can change. dockerd differs there: an
option removed from the file keeps its current value until a restart.

What changes at once (:data:`RELOADABLE`): ``debug``, ``labels``,
``registry-mirrors``, ``insecure-registries``,
``max-concurrent-downloads``, ``max-concurrent-uploads``,
``shutdown-timeout``, and the defaults for new containers ``log-driver``,
``log-opts`` and ``default-ulimits``. Any other option that differs is
logged as needing a restart and keeps its value. A file that does not
parse or validate changes nothing and is logged as an error. A successful
reload logs what changed and emits Docker's ``daemon reload`` event (Type
``daemon``, Action ``reload``, the daemon's ID, and the reloadable values as
attributes: lists as JSON, as dockerd writes them).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from typing import Any

from engine.daemon import changes as view_changes
from engine.daemon.config import Config, config_from, validate
from engine.utils import host
from engine.utils.logs import set_debug

LOG = logging.getLogger(__name__)

#: The attributes a reload changes on the running daemon.
RELOADABLE: tuple[str, ...] = (
    "debug",
    "labels",
    "registry_mirrors",
    "insecure_registries",
    "max_concurrent_downloads",
    "max_concurrent_uploads",
    "shutdown_timeout",
    "log_driver",
    "log_opts",
    "default_ulimits",
)
#: Attributes that are bookkeeping, not options.
_NOT_OPTIONS = ("flags", "config_file")

_reload_lock = threading.Lock()


def _key(attr: str) -> str:
    return attr.replace("_", "-")


def _attribute(value: Any) -> str:
    """An event attribute as dockerd writes it: lists and maps as JSON, booleans lower-case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def _same(attr: str, old: Any, new: Any) -> bool:
    if attr == "data_root":
        # The daemon keeps the resolved root (symlinks followed).
        return os.path.realpath(old) == os.path.realpath(new)
    return old == new


def changes(old: Config, new: Config) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]]]:
    """``(reloadable, needs_restart)``: attribute -> (old value, new value) for what differs."""
    now: dict[str, tuple[Any, Any]] = {}
    later: dict[str, tuple[Any, Any]] = {}
    for f in dataclasses.fields(Config):
        if f.name in _NOT_OPTIONS:
            continue
        before, after = getattr(old, f.name), getattr(new, f.name)
        if _same(f.name, before, after):
            continue
        (now if f.name in RELOADABLE else later)[f.name] = (before, after)
    return now, later


def reload_config(daemon: Any) -> dict[str, str]:
    """Read daemon.json again and apply what can change now; the event's attributes.

    :raises EngineError: the file is unreadable or invalid (nothing changed).
    """
    with _reload_lock:
        cfg: Config = daemon.config
        LOG.info("got signal to reload configuration, reloading from: %s", cfg.config_file)
        new = config_from(cfg.flags, cfg.config_file)
        validate(new)
        from engine.registry.endpoints import RegistryService

        RegistryService.from_config(new)  # refuses a bad mirror before anything changes
        now, later = changes(cfg, new)
        for attr, (before, after) in sorted(later.items()):
            LOG.warning(
                "reload: %s changed in %s (%s -> %s) and takes effect only when the daemon restarts",
                _key(attr),
                cfg.config_file,
                _attribute(before),
                _attribute(after),
            )
        for attr, (before, after) in sorted(now.items()):
            setattr(cfg, attr, after)
            LOG.info("reload: %s: %s -> %s", _key(attr), _attribute(before), _attribute(after))
        if "debug" in now:
            set_debug(cfg.debug)
        if now:
            view_changes.everything_changed()  # the views show some settings (default ulimits)
        if not now:
            LOG.info("reload: no option that can change without a restart changed")
        attributes = {_key(attr): _attribute(getattr(cfg, attr)) for attr in RELOADABLE}
        name = host.hostname()
        if name:
            attributes["name"] = name
        daemon.events.log("daemon", "reload", daemon.id, attributes)
        return attributes


def job_reload(job: Any) -> None:
    """``reload``: re-read daemon.json (see the module doc); writes the event's attributes as JSON."""
    job.write_json(reload_config(job.engine.daemon))
