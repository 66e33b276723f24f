"""Containers' logging configuration: the daemon's defaults and their checks.

``log-driver`` and ``log-opts`` (daemon.json, or ``--log-driver`` and
``--log-opt``) are the defaults for containers created without their own,
merged into ``HostConfig.LogConfig`` at create as moby's
``mergeAndVerifyLogConfig`` does: a container without a driver gets the
daemon's; a container using the daemon's driver gets each daemon option it
does not set itself. The merged options are stored with the container, so a
later change of the defaults (a reload) applies to new containers only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import InvalidParameter
from engine.utils.units import from_human_size

#: The options each logging driver accepts (moby's ``ValidateLogOpt``).
LOG_DRIVER_OPTS: dict[str, tuple[str, ...]] = {
    "json-file": ("max-file", "max-size", "compress", "labels", "labels-regex", "env", "env-regex", "tag"),
}


def validate_log_config(driver: str, opts: Mapping[str, str]) -> None:
    """Refuse an unknown driver, an unknown option or a bad rotation value, in moby's words.

    :raises InvalidParameter: what is wrong.
    """
    known = LOG_DRIVER_OPTS.get(driver)
    if known is None:
        raise InvalidParameter(f"logger: no log driver named '{driver}' is registered")
    for key in opts:
        if key not in known:
            raise InvalidParameter(f"unknown log opt '{key}' for {driver} log driver")
    if "max-size" in opts:
        try:
            size = from_human_size(opts["max-size"])
        except ValueError as exc:
            raise InvalidParameter(f"invalid max-size {opts['max-size']!r}: {exc}") from None
        if size <= 0:
            raise InvalidParameter("max-size must be a positive number")
    if "max-file" in opts:
        try:
            files = int(opts["max-file"])
        except ValueError:
            raise InvalidParameter(f"invalid max-file {opts['max-file']!r}: not a number") from None
        if files < 1:
            raise InvalidParameter("max-file cannot be less than 1")
    compress = opts.get("compress", "false").lower()
    if compress not in ("true", "false", "1", "0", "t", "f"):
        raise InvalidParameter(f"invalid compress {opts['compress']!r}: not a boolean")
    if compress in ("true", "1", "t"):
        # The shim rotates plain files; saying yes and not compressing would be a lie.
        raise InvalidParameter(f"log opt compress=true is not supported by the {driver} log driver of this engine")


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
