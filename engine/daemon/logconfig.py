"""Containers' logging configuration: the daemon's defaults and their checks.

``log-driver`` and ``log-opts`` (daemon.json, or ``--log-driver`` and
``--log-opt``) are the defaults for containers created without their own,
merged into ``HostConfig.LogConfig`` at create as moby's
``mergeAndVerifyLogConfig`` does: a container without a driver gets the
daemon's; a container using the daemon's driver gets each daemon option it
does not set itself. The merged options are stored with the container, so a
later change of the defaults (a reload) applies to new containers only.

The drivers are Docker's ``json-file`` (the default), ``local`` (moby's
protobuf file, :mod:`engine.shim.locallog`) and ``none``; the shim writes
the first two (:func:`shim_log`), and ``docker logs`` reads them back
(:mod:`engine.daemon.logs`). A ``none`` container has no log at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from engine.errors import InvalidParameter, NotSupported
from engine.utils.units import from_human_size, ram_in_bytes

#: The logging drivers and the options each accepts (moby's ``ValidateLogOpt``); ``none``
#: takes any (moby does not check them).
LOG_DRIVER_OPTS: dict[str, tuple[str, ...] | None] = {
    "json-file": ("max-file", "max-size", "compress", "labels", "labels-regex", "env", "env-regex", "tag"),
    "local": ("max-file", "max-size", "compress"),
    "none": None,
}
#: Options every driver takes (moby's ``builtInLogOpts``): the log's buffering mode.
BUILTIN_OPTS = ("mode", "max-buffer-size")
#: The ``local`` driver's defaults (moby ``daemon/logger/local``): 20 MiB, 5 files, compressed.
LOCAL_MAX_SIZE = 20 * 1024 * 1024
LOCAL_MAX_FILE = 5

_TRUE = ("1", "t", "true")
_BOOLS = ("1", "t", "true", "0", "f", "false")


def _size(opts: Mapping[str, str]) -> int:
    """``max-size`` in bytes, with go-units' decimal ``FromHumanSize`` (``10m`` is 10,000,000)."""
    try:
        return from_human_size(opts["max-size"])
    except ValueError as exc:
        raise InvalidParameter(f"invalid value for max-size: {opts['max-size']}: {exc}") from None


def validate_log_config(driver: str, opts: Mapping[str, str]) -> None:
    """Refuse an unknown driver, an unknown option or a bad value, in moby's words
    (``ValidateLogOpts``, then what each driver's ``New`` checks).

    :raises InvalidParameter: what is wrong.
    """
    if driver == "none":
        return
    mode = opts.get("mode", "")
    if mode not in ("", "blocking", "non-blocking"):
        raise InvalidParameter(f"logger: logging mode not supported: {mode}")
    if "max-buffer-size" in opts:
        if mode != "non-blocking":
            raise InvalidParameter("logger: max-buffer-size option is only supported with 'mode=non-blocking'")
        try:
            ram_in_bytes(opts["max-buffer-size"])
        except ValueError as exc:
            raise InvalidParameter(f"error parsing option max-buffer-size: {exc}") from None
    if driver not in LOG_DRIVER_OPTS:
        # dockerd looks an unknown driver up among its plugins, and says so.
        raise InvalidParameter(f'error looking up logging plugin {driver}: plugin "{driver}" not found')
    known = LOG_DRIVER_OPTS[driver] or ()
    for key in opts:
        if key not in known and key not in BUILTIN_OPTS:
            raise InvalidParameter(f"unknown log opt '{key}' for {driver} log driver")
    size = _size(opts) if "max-size" in opts else None
    if size is not None and size < 0:
        raise InvalidParameter("max size should be a positive number")
    files = None
    if "max-file" in opts:
        try:
            files = int(opts["max-file"])
        except ValueError:
            raise InvalidParameter(f"invalid value for max-file: {opts['max-file']}") from None
        if driver == "json-file" and files < 1:
            raise InvalidParameter("max-file cannot be less than 1")
        if files < 0:
            raise InvalidParameter("max file count cannot be less than 0")
    compress = opts.get("compress")
    if compress is not None and compress.lower() not in _BOOLS:
        raise InvalidParameter(f"error reading compress log option: invalid syntax: {compress!r}")
    if driver == "json-file":
        if compress is not None and compress.lower() in _TRUE and ((files or 1) < 2 or not size):
            raise InvalidParameter("compress cannot be true when max-file is less than 2 or max-size is not set")
    elif driver == "local":
        compressed = compress is None or compress.lower() in _TRUE
        if compressed and (LOCAL_MAX_FILE if files is None else files) <= 1:
            raise InvalidParameter("compression cannot be enabled when max file count is 1")


def shim_log(log_config: Mapping[str, Any] | None, container_dir: str, json_path: str) -> dict[str, Any] | None:
    """What the shim writes the log with (``shim.json``'s ``log``): the format, the file and
    its rotation; None for the ``none`` driver.

    :param json_path: the json-file log's path (``<container dir>/<id>-json.log``).
    """
    log_config = log_config or {}
    driver = log_config.get("Type") or "json-file"
    opts = log_config.get("Config") or {}
    if driver == "none":
        return None
    compress = opts.get("compress")
    if driver == "local":
        files = int(opts.get("max-file") or LOCAL_MAX_FILE)
        return {
            "format": "local",
            "path": os.path.join(container_dir, "local-logs", "container.log"),
            "max_size": _size(opts) if "max-size" in opts else LOCAL_MAX_SIZE,
            "max_file": max(1, files),
            "compress": compress is None or compress.lower() in _TRUE,
        }
    return {
        "format": "json-file",
        "path": json_path,
        "max_size": max(0, _size(opts)) if opts.get("max-size") else 0,
        "max_file": max(1, int(opts.get("max-file") or 1)),
        "compress": compress is not None and compress.lower() in _TRUE,
    }


def merge_log_config(log_config: Mapping[str, Any] | None, config: Any) -> dict[str, Any]:
    """A container's ``LogConfig`` with the daemon's defaults filled in, checked.

    :param log_config: ``HostConfig.LogConfig`` as the client sent it (``None``,
        ``{}``, or ``{"Type": ..., "Config": {...}}``).
    :param config: the daemon's :class:`~engine.daemon.config.Config`.
    :raises InvalidParameter: an unknown driver or option, a bad value.
    """
    log_config = log_config or {}
    driver = log_config.get("Type") or config.log_driver
    opts = dict(log_config.get("Config") or {})
    if driver == config.log_driver:
        for key, value in config.log_opts.items():
            opts.setdefault(key, value)
    validate_log_config(driver, opts)
    return {"Type": driver, "Config": opts}


def log_source(log_config: Mapping[str, Any] | None, container_dir: str, json_path: str) -> tuple[str, str]:
    """Where ``docker logs`` reads a container's log: its format and file.

    :raises NotSupported: the ``none`` driver keeps nothing (moby's words, a 501).
    """
    spec = shim_log(log_config, container_dir, json_path)
    if spec is None:
        raise NotSupported("configured logging driver does not support reading")
    return spec["format"], spec["path"]
