"""Docker API versions: comparing them, and the version a job's request asked for.

The daemon reports API :data:`engine.API_VERSION` (1.45, Docker 26) and
answers every version from :data:`engine.MIN_API_VERSION` (1.12) up to it.
A request names its version in the path (``/v1.41/containers/json``); one
without a prefix means the current version. What a response looks like, and
which request fields count, depends on that version exactly as moby's
``docs/api/version-history.md`` says, so a 1.41 client still gets dockerd
20.10's answers while a 1.45 one gets Docker 26's.

The API layer puts the version on the env of every job it runs
(:data:`ENV_KEY`); handlers read it with :func:`of_job` and compare it with
:func:`before` / :func:`at_least` (moby's ``versions.LessThan`` and
``versions.GreaterThanOrEqualTo``).
"""

from __future__ import annotations

import functools
from typing import Any

import engine

__all__ = ["ENV_KEY", "at_least", "before", "of_job", "parse"]

#: The job env key that carries the request's API version.
ENV_KEY = "APIVersion"


@functools.lru_cache(maxsize=64)
def parse(version: str) -> tuple[int, int]:
    """``"1.41"`` -> ``(1, 41)``; anything unreadable is ``(0, 0)``.

    Remembered: a request compares its version some ten times, and clients send a handful of
    versions.
    """
    major, _, minor = (version or "").partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return (0, 0)


def before(version: str, than: str) -> bool:
    """Whether ``version`` is older than ``than`` (moby's ``versions.LessThan``)."""
    return parse(version) < parse(than)


def at_least(version: str, than: str) -> bool:
    """Whether ``version`` is ``than`` or newer (moby's ``versions.GreaterThanOrEqualTo``)."""
    return parse(version) >= parse(than)


def of_job(job: Any) -> str:
    """The API version of the request that started ``job`` (the current one when none did)."""
    return job.env.get(ENV_KEY) or engine.API_VERSION


# ---------------------------------------------------------------------------
# requests: what a version's request means (moby's api/server/router)


def adapt_create(version: str, config: dict, host_config: dict, networking: dict) -> list[str]:
    """Read a ``POST /containers/create`` body as ``version`` means it, in place; the warnings.

    moby's ``postContainersCreate``: fields a version did not have are
    dropped, checks it did not make are left out, and the container-wide
    MAC address moves to the default network's endpoint (API 1.44).

    :raises InvalidParameter: what ``version`` refuses, in moby's words.
    """
    from engine.errors import InvalidParameter

    mounts = [m for m in host_config.get("Mounts") or [] if isinstance(m, dict)]
    if before(version, "1.25"):
        host_config["AutoRemove"] = False  # the client removes the container itself
    if before(version, "1.40"):
        host_config.pop("KernelMemoryTCP", None)
        for m in mounts:
            (m.get("BindOptions") or {}).pop("NonRecursive", None)
        if not host_config.get("IpcMode"):
            host_config["IpcMode"] = "shareable"  # the default older clients expect
    if before(version, "1.42"):
        for m in mounts:
            kind = (m.get("Type") or "").lower()
            (m.get("BindOptions") or {}).pop("CreateMountpoint", None)
            # Not checked before 1.42: options of another type are ignored.
            if kind != "volume":
                m.pop("VolumeOptions", None)
            if kind != "tmpfs":
                m.pop("TmpfsOptions", None)
        host_config.pop("ConsoleSize", None)  # not respected on Linux before 1.42
    else:
        host_config.pop("KernelMemory", None)  # removed in 1.42
        for m in mounts:
            kind = (m.get("Type") or "").lower()
            for key, wants in (("VolumeOptions", "volume"), ("BindOptions", "bind"), ("TmpfsOptions", "tmpfs")):
                if m.get(key) is not None and kind != wants:
                    raise InvalidParameter(f'{key} must not be specified on mount type "{kind}"')
    if before(version, "1.43"):
        host_config.pop("Annotations", None)
    if before(version, "1.44"):
        # Read-only mounts were not recursively read-only before 1.44: the container keeps that
        # (moby's defaultReadOnlyNonRecursive; a key the views do not show).
        host_config["_ReadOnlyNonRecursive"] = True
        if isinstance(config.get("Healthcheck"), dict):
            config["Healthcheck"].pop("StartInterval", None)
        for m in mounts:
            if (m.get("Type") or "").lower() == "bind" and (m.get("BindOptions") or {}).get("ReadOnlyForceRecursive"):
                raise InvalidParameter("BindOptions.ReadOnlyForceRecursive needs API v1.44 or newer")
        endpoints = (networking or {}).get("EndpointsConfig") or {}
        if len(endpoints) > 1:
            raise InvalidParameter(
                "Container cannot be created with multiple network endpoints: " + ", ".join(sorted(endpoints))
            )
    if before(version, "1.45"):
        for m in mounts:
            if (m.get("VolumeOptions") or {}).get("Subpath"):
                raise InvalidParameter("VolumeOptions.Subpath needs API v1.45 or newer")
    warnings = _move_mac_address(version, config, host_config, networking)
    pids = host_config.get("PidsLimit")
    if pids is not None and int(pids) <= 0:
        host_config["PidsLimit"] = None  # 0 and -1 (any negative) mean "unlimited"
    return warnings


def _network_name(mode: str) -> str:
    return "bridge" if mode in ("", "default") else mode


def _move_mac_address(version: str, config: dict, host_config: dict, networking: dict) -> list[str]:
    """moby's ``handleMACAddressBC``: the container-wide ``MacAddress`` and the endpoint's.

    The address stays in ``Config.MacAddress`` as well (for the bridge
    driver, which reads it there) when it was given for the default network.
    """
    from engine.errors import InvalidParameter

    endpoints = networking.setdefault("EndpointsConfig", {}) if networking is not None else {}
    if endpoints is None:
        endpoints = networking["EndpointsConfig"] = {}
    mode = host_config.get("NetworkMode") or "default"
    name = _network_name(mode)
    bridge_like = mode in ("default", "bridge") or not (mode in ("host", "none") or mode.startswith("container:"))
    wide = config.get("MacAddress") or ""
    if before(version, "1.44"):
        if not wide:
            for endpoint in endpoints.values():
                if isinstance(endpoint, dict):
                    endpoint.pop("MacAddress", None)  # ignored by the old API
            return []
        if not bridge_like:
            raise InvalidParameter("conflicting options: mac-address and the network mode")
        if not endpoints:
            endpoints[name] = {}
        for endpoint in endpoints.values():
            if isinstance(endpoint, dict):
                endpoint["MacAddress"] = wide
        return []
    if not wide:
        endpoint = endpoints.get(name) or endpoints.get(mode) or {}
        if isinstance(endpoint, dict) and endpoint.get("MacAddress"):
            config["MacAddress"] = endpoint["MacAddress"]
        return []
    if bridge_like:
        if not endpoints:
            endpoints[name] = {"MacAddress": wide}
        else:
            endpoint = endpoints.get(name)
            if endpoint is None:
                raise InvalidParameter(
                    "if a container-wide MAC address is supplied, HostConfig.NetworkMode must match the identity "
                    "of a network in NetworkSettings.Networks"
                )
            if not endpoint.get("MacAddress"):
                endpoint["MacAddress"] = wide
            elif endpoint["MacAddress"] != wide:
                raise InvalidParameter(
                    "the container-wide MAC address must match the endpoint-specific MAC address for the main "
                    "network, or be left empty"
                )
    return ["The container-wide MacAddress field is now deprecated. It should be specified in EndpointsConfig instead."]


def adapt_update(version: str, body: dict) -> None:
    """Read a ``POST /containers/{id}/update`` body as ``version`` means it, in place."""
    if before(version, "1.40"):
        body.pop("PidsLimit", None)
    if at_least(version, "1.42"):
        body.pop("KernelMemory", None)  # removed in 1.42
    pids = body.get("PidsLimit")
    if pids is not None and int(pids) <= 0:
        body["PidsLimit"] = -1  # 0 and any negative value mean "unlimited" in an update


# ---------------------------------------------------------------------------
# answers: the documents as each version shows them (ours are 1.41's shapes)


def container_json(version: str, doc: dict) -> dict:
    """``GET /containers/{id}/json`` as ``version`` shows it."""
    hc = doc.get("HostConfig") or {}
    config = doc.get("Config") or {}
    networks = (doc.get("NetworkSettings") or {}).get("Networks") or {}
    if at_least(version, "1.42"):
        for key in ("KernelMemory", "KernelMemoryTCP"):
            if not hc.get(key):
                hc.pop(key, None)  # omitted when unset from 1.42
    if before(version, "1.43") or not hc.get("Annotations"):
        hc.pop("Annotations", None)
    health = config.get("Healthcheck")
    if isinstance(health, dict) and (before(version, "1.44") or not health.get("StartInterval")):
        health.pop("StartInterval", None)
    for name, endpoint in networks.items():
        if not isinstance(endpoint, dict):
            continue
        if before(version, "1.44"):
            endpoint.pop("DNSNames", None)
        else:
            endpoint.setdefault("DNSNames", None)
        if before(version, "1.45") and name not in ("bridge", "host", "none", "default"):
            # Up to 1.44 the aliases of a user-defined network's endpoint list the short ID and
            # the host name too; 1.45 shows what was asked for (DNSNames has the rest).
            extra = [doc.get("Id", "")[:12], config.get("Hostname", "")]
            aliases = list(endpoint.get("Aliases") or [])
            endpoint["Aliases"] = aliases + [a for a in extra if a and a not in aliases]
    return doc


def info(version: str, doc: dict) -> dict:
    """``GET /info`` as ``version`` shows it."""
    if at_least(version, "1.42"):
        doc.pop("KernelMemory", None)  # always false, so omitted, from 1.42
        if not doc.get("KernelMemoryTCP"):
            doc.pop("KernelMemoryTCP", None)
    if at_least(version, "1.44"):
        doc.setdefault("CDISpecDirs", [])
    else:
        doc.pop("CDISpecDirs", None)
        for runtime in (doc.get("Runtimes") or {}).values():
            if isinstance(runtime, dict):
                runtime.pop("status", None)
    return doc


def image_summary(version: str, doc: dict) -> dict:
    """One ``GET /images/json`` entry as ``version`` shows it (ours carry 1.41's ``<none>``)."""
    if at_least(version, "1.43"):
        if doc.get("RepoTags") == ["<none>:<none>"]:
            doc["RepoTags"] = []
        if doc.get("RepoDigests") == ["<none>@<none>"]:
            doc["RepoDigests"] = []
    if at_least(version, "1.44"):
        doc.pop("VirtualSize", None)
    return doc


def image_json(version: str, doc: dict) -> dict:
    """``GET /images/{name}/json`` as ``version`` shows it."""
    if at_least(version, "1.44"):
        doc.pop("VirtualSize", None)
        if doc.get("Created") in ("", "0001-01-01T00:00:00Z"):
            doc.pop("Created", None)  # omitted when the image config has none
    if at_least(version, "1.45"):
        doc.pop("Container", None)
        doc.pop("ContainerConfig", None)
    return doc


def disk_usage(version: str, doc: dict) -> dict:
    """``GET /system/df`` as ``version`` shows it."""
    if before(version, "1.42"):
        doc.setdefault("BuilderSize", 0)
    for image in doc.get("Images") or []:
        image_summary(version, image)
    return doc
