"""The ``GET /info`` document (API 1.41 ``types.Info``) from real host and daemon facts."""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import platform
import threading
import time
from typing import Any

import engine
from engine.drivers.discovery import load_drivers
from engine.utils import host


def rfc3339nano(ts: float) -> str:
    """Go's RFC3339Nano in UTC (``2026-11-30T06:03:41.123456789Z``)."""
    whole = int(ts)
    nanos = round((ts - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    base = _dt.datetime.fromtimestamp(whole, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        return f"{base}.{nanos:09d}".rstrip("0") + "Z"
    return base + "Z"


def registry_config(cfg: Any) -> dict[str, Any]:
    """``RegistryConfig`` as moby builds it from the mirror and insecure options."""
    cidrs = ["127.0.0.0/8"]
    index_configs: dict[str, Any] = {
        "docker.io": {"Name": "docker.io", "Mirrors": list(cfg.registry_mirrors), "Secure": True, "Official": True}
    }
    for entry in cfg.insecure_registries:
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            index_configs[entry] = {"Name": entry, "Mirrors": [], "Secure": False, "Official": False}
        else:
            if str(net) not in cidrs:
                cidrs.append(str(net))
    return {
        "AllowNondistributableArtifactsCIDRs": [],
        "AllowNondistributableArtifactsHostnames": [],
        "InsecureRegistryCIDRs": cidrs,
        "IndexConfigs": index_configs,
        "Mirrors": list(cfg.registry_mirrors),
    }


def _cgroup_features(cg: host.CgroupInfo) -> dict[str, bool]:
    if cg.version == "1":
        return {
            "MemoryLimit": cg.v1_file_exists("memory", "memory.limit_in_bytes"),
            "SwapLimit": cg.v1_file_exists("memory", "memory.memsw.limit_in_bytes"),
            "KernelMemory": False,
            "KernelMemoryTCP": cg.v1_file_exists("memory", "memory.kmem.tcp.limit_in_bytes"),
            "CpuCfsPeriod": cg.v1_file_exists("cpu", "cpu.cfs_period_us"),
            "CpuCfsQuota": cg.v1_file_exists("cpu", "cpu.cfs_quota_us"),
            "CPUShares": cg.v1_file_exists("cpu", "cpu.shares"),
            "CPUSet": cg.has("cpuset"),
            "PidsLimit": cg.has("pids"),
            "OomKillDisable": cg.v1_file_exists("memory", "memory.oom_control"),
        }
    return {
        "MemoryLimit": cg.has("memory"),
        "SwapLimit": cg.has("memory"),
        "KernelMemory": False,
        "KernelMemoryTCP": False,
        "CpuCfsPeriod": cg.has("cpu"),
        "CpuCfsQuota": cg.has("cpu"),
        "CPUShares": cg.has("cpu"),
        "CPUSet": cg.has("cpuset"),
        "PidsLimit": cg.has("pids"),
        "OomKillDisable": False,
    }


def build_info(daemon: Any) -> dict[str, Any]:
    """Collect every 1.41 Info field; ``daemon`` may be partly started."""
    cfg = daemon.config
    cg = host.cgroup_info()
    feats = _cgroup_features(cg)
    ip_forward = host.proc_sys_flag("/proc/sys/net/ipv4/ip_forward")
    nf_ipt = host.proc_sys_flag("/proc/sys/net/bridge/bridge-nf-call-iptables")
    nf_ip6t = host.proc_sys_flag("/proc/sys/net/bridge/bridge-nf-call-ip6tables")
    counts = daemon.container_counts() if hasattr(daemon, "container_counts") else {}
    images = daemon.image_count() if hasattr(daemon, "image_count") else 0
    warnings: list[str] = []
    if not feats["SwapLimit"]:
        warnings.append("WARNING: No swap limit support")
    if nf_ipt is False:
        warnings.append("WARNING: bridge-nf-call-iptables is disabled")
    if nf_ip6t is False:
        warnings.append("WARNING: bridge-nf-call-ip6tables is disabled")
    security = getattr(daemon, "security", None)
    if security is not None:
        warnings += security.info_warnings()
    for h in cfg.hosts:
        if h.startswith("tcp://") and not cfg.tlsverify:
            warnings.append(
                "WARNING: API is accessible on http://{} without encryption.\n"
                "         Access to the remote API is equivalent to root access on the host.".format(h[len("tcp://") :])
            )
    exec_drivers = load_drivers("exec")
    runtimes = {name: {"path": entry.entry_point.split(":")[0]} for name, entry in exec_drivers.items() if entry.loaded}
    network_plugins = ["bridge", "host", "none"] if not cfg.disable_network else ["host", "none"]
    os_rel = host.os_release()
    graph = daemon.graphdriver
    info: dict[str, Any] = {
        "ID": daemon.id,
        "Containers": counts.get("total", 0),
        "ContainersRunning": counts.get("running", 0),
        "ContainersPaused": counts.get("paused", 0),
        "ContainersStopped": counts.get("stopped", 0),
        "Images": images,
        "Driver": graph.name if graph is not None else "",
        "DriverStatus": [list(kv) for kv in graph.status()] if graph is not None else [],
        "Plugins": {
            "Volume": ["local"],
            "Network": network_plugins,
            "Authorization": None,
            "Log": ["json-file"],
        },
        **feats,
        "IPv4Forwarding": bool(ip_forward),
        "BridgeNfIptables": bool(nf_ipt),
        "BridgeNfIp6tables": bool(nf_ip6t),
        "Debug": cfg.debug,
        "NFd": len(os.listdir("/proc/self/fd")),
        "NGoroutines": threading.active_count(),
        "SystemTime": rfc3339nano(time.time()),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cg.version,
        "NEventsListener": daemon.events.listener_count() if getattr(daemon, "events", None) else 0,
        "KernelVersion": host.kernel_release(),
        "OperatingSystem": host.operating_system(),
        "OSVersion": os_rel.get("VERSION_ID", ""),
        "OSType": "linux",
        "Architecture": platform.machine(),
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": registry_config(cfg),
        "NCPU": os.cpu_count() or 1,
        "MemTotal": host.mem_total(),
        "GenericResources": None,
        "DockerRootDir": daemon.root,
        "HttpProxy": os.environ.get("HTTP_PROXY", os.environ.get("http_proxy", "")),
        "HttpsProxy": os.environ.get("HTTPS_PROXY", os.environ.get("https_proxy", "")),
        "NoProxy": os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")),
        "Name": host.hostname(),
        "Labels": list(cfg.labels),
        "ExperimentalBuild": False,
        "ServerVersion": engine.__version__,
        "Runtimes": runtimes,
        "DefaultRuntime": cfg.exec_driver,
        "Swarm": {
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": False,
            "Error": "",
            "RemoteManagers": None,
        },
        "LiveRestoreEnabled": True,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": security.info_options() if security is not None else [],
        "DefaultAddressPools": [],
        "Warnings": warnings,
    }
    if daemon.plugins is not None:
        daemon.plugins.hook.engine_info(engine=daemon.engine, info=info)
    return info
