"""The API documents of containers: ContainerJSON (inspect), the summaries of
``GET /containers/json`` and their filters (API 1.41 shapes)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from engine.daemon.container import Container
from engine.daemon.daemon import require
from engine.daemon.health import status_of as health_status
from engine.daemon.runtime import merged_ulimits
from engine.daemon.volumes import api_mount
from engine.errors import EngineError, InvalidParameter
from engine.sys.security import paths as security_paths
from engine.utils.timefmt import rfc3339nano

if TYPE_CHECKING:
    from engine.daemon.daemon import Daemon

HOST_CONFIG_DEFAULTS: dict[str, Any] = {
    "Binds": None,
    "ContainerIDFile": "",
    "LogConfig": {"Type": "json-file", "Config": {}},
    "NetworkMode": "default",
    "PortBindings": {},
    "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
    "AutoRemove": False,
    "VolumeDriver": "",
    "VolumesFrom": None,
    "CapAdd": None,
    "CapDrop": None,
    "CgroupnsMode": "host",
    "Dns": [],
    "DnsOptions": [],
    "DnsSearch": [],
    "ExtraHosts": None,
    "GroupAdd": None,
    "IpcMode": "private",
    "Cgroup": "",
    "Links": None,
    "OomScoreAdj": 0,
    "PidMode": "",
    "Privileged": False,
    "PublishAllPorts": False,
    "ReadonlyRootfs": False,
    "SecurityOpt": None,
    "UTSMode": "",
    "UsernsMode": "",
    "ShmSize": 67108864,
    "Runtime": "runc",
    "ConsoleSize": [0, 0],
    "Isolation": "",
    "CpuShares": 0,
    "Memory": 0,
    "NanoCpus": 0,
    "CgroupParent": "",
    "BlkioWeight": 0,
    "BlkioWeightDevice": [],
    "BlkioDeviceReadBps": None,
    "BlkioDeviceWriteBps": None,
    "BlkioDeviceReadIOps": None,
    "BlkioDeviceWriteIOps": None,
    "CpuPeriod": 0,
    "CpuQuota": 0,
    "CpuRealtimePeriod": 0,
    "CpuRealtimeRuntime": 0,
    "CpusetCpus": "",
    "CpusetMems": "",
    "Devices": [],
    "DeviceCgroupRules": None,
    "DeviceRequests": None,
    "KernelMemory": 0,
    "KernelMemoryTCP": 0,
    "MemoryReservation": 0,
    "MemorySwap": 0,
    "MemorySwappiness": None,
    "OomKillDisable": False,
    "PidsLimit": None,
    "Ulimits": None,
    "CpuCount": 0,
    "CpuPercent": 0,
    "IOMaximumIOps": 0,
    "IOMaximumBandwidth": 0,
    "MaskedPaths": None,
    "ReadonlyPaths": None,
}

CONFIG_DEFAULTS: dict[str, Any] = {
    "Hostname": "",
    "Domainname": "",
    "User": "",
    "AttachStdin": False,
    "AttachStdout": False,
    "AttachStderr": False,
    "Tty": False,
    "OpenStdin": False,
    "StdinOnce": False,
    "Env": None,
    "Cmd": None,
    "Image": "",
    "Volumes": None,
    "WorkingDir": "",
    "Entrypoint": None,
    "OnBuild": None,
    "Labels": {},
}


#: Every field a create's Config and HostConfig may have, by its JSON name: a body's keys are
#: matched to them without regard to case, as Go decodes (docker-py sends CPURealtimePeriod).
CONFIG_FIELDS = (
    *CONFIG_DEFAULTS,
    "ExposedPorts",
    "Healthcheck",
    "ArgsEscaped",
    "NetworkDisabled",
    "MacAddress",
    "StopSignal",
    "StopTimeout",
    "Shell",
    "HostConfig",
    "NetworkingConfig",
)
HOST_CONFIG_FIELDS = (*HOST_CONFIG_DEFAULTS, "Mounts", "Tmpfs", "Sysctls", "StorageOpt", "Annotations", "Init")


def host_config(c: Container) -> dict:
    out = dict(HOST_CONFIG_DEFAULTS)
    out.update({k: v for k, v in c.host_config.items() if not k.startswith("_")})
    if c.host_config.get("Privileged"):
        out["MaskedPaths"] = None
        out["ReadonlyPaths"] = None
    else:
        # Containers created before create stored dockerd's defaults show them too.
        if out["MaskedPaths"] is None:
            out["MaskedPaths"] = list(security_paths.default_masked_paths())
        if out["ReadonlyPaths"] is None:
            out["ReadonlyPaths"] = list(security_paths.DEFAULT_READONLY_PATHS)
    for key in ("Dns", "DnsOptions", "DnsSearch", "BlkioWeightDevice", "Devices"):
        if out.get(key) is None:
            out[key] = []
    if not out.get("PortBindings"):
        out["PortBindings"] = {}
    return out


def config(c: Container) -> dict:
    out = dict(CONFIG_DEFAULTS)
    out.update({k: v for k, v in c.config.items() if v is not None or k in CONFIG_DEFAULTS})
    if out.get("Labels") is None:
        out["Labels"] = {}
    if not out.get("ExposedPorts"):
        out.pop("ExposedPorts", None)
    if not out.get("StopSignal"):
        out.pop("StopSignal", None)
    for key in ("NetworkDisabled", "MacAddress", "Healthcheck", "ArgsEscaped", "Shell", "StopTimeout"):
        if out.get(key) in (None, False, ""):
            out.pop(key, None)
    return out


#: The keys of an endpoint's configuration (``NetworkSettings.EndpointsConfig``); the rest is what it got.
ENDPOINT_CONFIG_KEYS = ("IPAMConfig", "Links", "Aliases", "MacAddress", "DriverOpts", "NetworkID")


def networks_view(ns: dict) -> dict:
    """``NetworkSettings.Networks``: each network's configuration with what the endpoint got, by name (as Go sorts)."""
    configs = ns.get("EndpointsConfig")
    runtime = ns.get("Networks") or {}
    if configs is None:  # a record from before user-defined networks
        return {name: endpoint(**value) for name, value in sorted(runtime.items())}
    out = {}
    for name, cfg in sorted(configs.items()):
        merged = {k: cfg.get(k) for k in ENDPOINT_CONFIG_KEYS if k in cfg}
        for key, value in (runtime.get(name) or {}).items():
            if value not in ("", 0, None) or key not in merged:
                merged[key] = value
        out[name] = endpoint(**merged)
    return out


def container_networks(c: Container) -> dict:
    """``NetworkSettings.Networks`` of a container; ``none`` and ``host`` show as one empty endpoint."""
    networks = networks_view(c.network_settings or {})
    mode = c.host_config.get("NetworkMode") or "default"
    if not networks and mode in ("none", "host"):
        networks = {mode: endpoint()}
    return networks


def network_settings(c: Container) -> dict:
    ns = c.network_settings or {}
    networks = container_networks(c)
    return {
        "Bridge": ns.get("Bridge", ""),
        "SandboxID": ns.get("SandboxID", ""),
        "HairpinMode": False,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Ports": ns.get("Ports") or {},
        "SandboxKey": ns.get("SandboxKey", ""),
        "SecondaryIPAddresses": None,
        "SecondaryIPv6Addresses": None,
        "EndpointID": ns.get("EndpointID", ""),
        "Gateway": ns.get("Gateway", ""),
        "GlobalIPv6Address": ns.get("GlobalIPv6Address", ""),
        "GlobalIPv6PrefixLen": ns.get("GlobalIPv6PrefixLen", 0),
        "IPAddress": ns.get("IPAddress", ""),
        "IPPrefixLen": ns.get("IPPrefixLen", 0),
        "IPv6Gateway": ns.get("IPv6Gateway", ""),
        "MacAddress": ns.get("MacAddress", ""),
        "Networks": networks,
    }


def endpoint(**values: Any) -> dict:
    out = {
        "IPAMConfig": None,
        "Links": None,
        "Aliases": None,
        "NetworkID": "",
        "EndpointID": "",
        "Gateway": "",
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "MacAddress": "",
        "DriverOpts": None,
    }
    out.update(values)
    return out


def log_path(c: Container) -> str:
    """``LogPath`` as dockerd shows it: the json-file log's, once the container has started (its
    logger made it); empty for other drivers, whose files are not part of the API."""
    driver = (c.host_config.get("LogConfig") or {}).get("Type") or "json-file"
    return c.log_path if driver == "json-file" and c.has_been_started_before else ""


def inspect(daemon: Daemon, c: Container, size: bool = False) -> dict:
    driver = require(daemon.graphdriver, "graph driver")
    try:
        data = driver.metadata(c.id) or None
    except Exception:
        data = None
    doc = {
        "Id": c.id,
        "Created": rfc3339nano(c.created),
        "Path": c.path,
        "Args": list(c.args),
        "State": c.state.to_api(),
        "Image": c.image_id,
        "ResolvConfPath": c.resolv_conf_path,
        "HostnamePath": c.hostname_path,
        "HostsPath": c.hosts_path,
        "LogPath": log_path(c),
        "Name": c.name,
        "RestartCount": c.restart_count,
        "Driver": c.driver,
        "Platform": c.platform,
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": list(c.exec_ids) or None,
        "HostConfig": {
            **host_config(c),
            "Ulimits": merged_ulimits(c.host_config, daemon.config.default_ulimits) or None,
        },
        "GraphDriver": {"Name": c.driver, "Data": data},
        "Mounts": [api_mount(m) for m in c.mounts],
        "Config": config(c),
        "NetworkSettings": network_settings(c),
    }
    if size:
        doc["SizeRw"], doc["SizeRootFs"] = sizes(daemon, c)
    return doc


def sizes(daemon: Daemon, c: Container) -> tuple[int, int]:
    driver = require(daemon.graphdriver, "graph driver")
    try:
        rw = driver.diff_size(c.id, c.init_layer)
    except Exception:
        rw = 0
    images = require(daemon.graph, "image store").images
    image = images.get(c.image_id) if images.exists(c.image_id) else None
    return rw, rw + (image.size if image is not None else 0)


def ports_summary(c: Container) -> list[dict]:
    out = []
    for key, bindings in sorted((c.network_settings.get("Ports") or {}).items()):
        port, _, proto = key.partition("/")
        if not bindings:
            out.append({"PrivatePort": int(port), "Type": proto or "tcp"})
            continue
        for b in bindings:
            out.append(
                {
                    "IP": b.get("HostIp", ""),
                    "PrivatePort": int(port),
                    "PublicPort": int(b.get("HostPort") or 0),
                    "Type": proto or "tcp",
                }
            )
    return out


def command_string(c: Container) -> str:
    """moby's list Command: arguments with spaces in single quotes."""
    args = [f"'{a}'" if " " in a else a for a in c.args]
    return " ".join([c.path, *args]) if args else c.path


def list_image(daemon: Daemon, c: Container, resolved: dict[str, str] | None = None) -> str:
    """moby's list ``Image``: the name the container was created from while it still names the
    container's image, else the image's ID. ``resolved`` keeps the names looked up (a list's)."""
    image = c.config.get("Image") or ""
    if not image or image == c.image_id:
        return c.image_id
    resolved = {} if resolved is None else resolved
    if image not in resolved:
        try:
            resolved[image] = require(daemon.graph, "image store").lookup(image).id
        except EngineError:
            resolved[image] = ""
    return image if resolved[image] == c.image_id else c.image_id


def summary(
    daemon: Daemon,
    c: Container,
    size: bool = False,
    paths: Mapping[str, list[str]] | None = None,
    resolved: dict[str, str] | None = None,
) -> dict:
    """One ``GET /containers/json`` entry; ``paths`` are all names at once and ``resolved`` the
    image names looked up so far (see list_containers)."""
    found = paths.get(c.id) if paths is not None else list(require(daemon.linkgraph, "link graph").ref_paths(c.id))
    names = sorted(found or []) or [c.name]
    if c.name in names:
        names.remove(c.name)
        names.insert(0, c.name)
    doc = {
        "Id": c.id,
        "Names": names,
        "Image": list_image(daemon, c, resolved),
        "ImageID": c.image_id,
        "Command": command_string(c),
        "Created": int(c.created),
        "Ports": ports_summary(c),
        "Labels": c.config.get("Labels") or {},
        "State": c.state.status,
        "Status": c.state.describe(),
        "HostConfig": {"NetworkMode": c.host_config.get("NetworkMode") or "default"},
        "NetworkSettings": {"Networks": container_networks(c)},
        "Mounts": [api_mount(m) for m in c.mounts],
    }
    if size:
        doc["SizeRw"], doc["SizeRootFs"] = sizes(daemon, c)
    return doc


LIST_FILTERS = {
    "ancestor",
    "before",
    "expose",
    "exited",
    "health",
    "id",
    "isolation",
    "is-task",
    "label",
    "name",
    "network",
    "publish",
    "since",
    "status",
    "volume",
}
STATUSES = {"created", "restarting", "running", "removing", "paused", "exited", "dead"}
HEALTH_STATUSES = {"starting", "healthy", "unhealthy", "none"}


def _label_ok(labels: dict, wanted: list[str]) -> bool:
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def list_containers(
    daemon: Daemon, all_: bool = False, limit: int = -1, size: bool = False, filters: dict[str, list[str]] | None = None
) -> list[dict]:
    """``GET /containers/json`` (moby ``daemon/list.go``), newest first."""
    return list(iter_containers(daemon, all_, limit, size, filters))


def iter_containers(
    daemon: Daemon, all_: bool = False, limit: int = -1, size: bool = False, filters: dict[str, list[str]] | None = None
) -> Iterator[dict]:
    """The entries of :func:`list_containers` one at a time (a bad filter raises at the first).

    An answer encoded entry by entry holds no more than one entry's objects at a time. Built
    whole, a list of 1,000 is some 12,000 objects that outlive several collections of the
    young generation, reach the oldest, and bring on a full collection every few lists, which
    stops every thread of the worker for tens of milliseconds.
    """
    filters = filters or {}
    for key in filters:
        if key not in LIST_FILTERS:
            raise InvalidParameter(f"Invalid filter '{key}'")
    for status in filters.get("status", []):
        if status not in STATUSES:
            raise InvalidParameter(f"Invalid filter 'status={status}'")
    for value in filters.get("health", []):
        if value not in HEALTH_STATUSES:
            raise InvalidParameter(f"Unrecognised filter value for health: {value}")
    exited: list[int] = []
    for value in filters.get("exited", []):
        try:
            exited.append(int(value))
        except ValueError:
            raise InvalidParameter(f"Invalid filter 'exited={value}'") from None
    if filters.get("exited") or filters.get("status") or filters.get("before") or filters.get("since"):
        all_ = True
    store = require(daemon.containers, "container store")
    containers = sorted(store.all(), key=lambda c: c.created, reverse=True)
    before = min((store.get(n).created for n in filters.get("before", [])), default=None)
    since = max((store.get(n).created for n in filters.get("since", [])), default=None)
    graph = require(daemon.graph, "image store")
    ancestors: set[str] = set()
    for name in filters.get("ancestor", []):
        try:
            image = graph.lookup(name)
        except Exception:
            continue
        ancestors.add(image.id)
        ancestors.update(img.id for img in graph if image.id in _image_chain(graph, img))
    paths = require(daemon.linkgraph, "link graph").all_ref_paths()
    resolved: dict[str, str] = {}
    listed = 0
    for c in containers:
        st = c.state
        if not all_ and limit <= 0 and not st.running:
            continue  # a limit (ps -n, -l) lists stopped containers too, as moby
        if filters.get("status") and st.status not in filters["status"]:
            continue
        if filters.get("health") and health_status(st.health) not in filters["health"]:
            continue
        if exited and (st.running or st.started_at == 0 or st.exit_code not in exited):
            continue
        if filters.get("id") and not any(c.id.startswith(v) for v in filters["id"]):
            continue
        if filters.get("name"):
            names = paths.get(c.id) or [c.name]
            if not any(re.search(v, n.lstrip("/")) or re.search(v, n) for v in filters["name"] for n in names):
                continue
        if filters.get("label") and not _label_ok(c.config.get("Labels") or {}, filters["label"]):
            continue
        if filters.get("ancestor") and c.image_id not in ancestors:
            continue
        if before is not None and c.created >= before:
            continue
        if since is not None and c.created <= since:
            continue
        if filters.get("volume") and not any(
            m.get("Name") in filters["volume"]
            or m["Destination"] in filters["volume"]
            or m.get("Source") in filters["volume"]
            for m in c.mounts
        ):
            continue
        if filters.get("network"):
            mode = c.host_config.get("NetworkMode") or "default"
            nets = set(container_networks(c)) | {mode, "bridge" if mode == "default" else mode}
            if not nets & set(filters["network"]):
                continue
        if filters.get("expose") or filters.get("publish"):
            ports = {f"{p['PrivatePort']}/{p['Type']}" for p in ports_summary(c)}
            published = {f"{p['PublicPort']}/{p['Type']}" for p in ports_summary(c) if p.get("PublicPort")}
            if filters.get("expose") and not ports & {v if "/" in v else v + "/tcp" for v in filters["expose"]}:
                continue
            if filters.get("publish") and not published & {v if "/" in v else v + "/tcp" for v in filters["publish"]}:
                continue
        yield summary(daemon, c, size, paths, resolved)
        listed += 1
        if limit > 0 and listed >= limit:
            break


def _image_chain(graph: Any, image: Any) -> set[str]:
    seen = set()
    cur = image
    while cur is not None and cur.id not in seen:
        seen.add(cur.id)
        cur = graph.images.get(cur.parent) if cur.parent and graph.images.exists(cur.parent) else None
    return seen
