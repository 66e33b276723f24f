"""The ``GET /info`` document (API 1.41 ``types.Info``) from real host and daemon facts."""

from __future__ import annotations

import ipaddress
import os
import platform
import threading
import time
from typing import Any

import engine
from engine.daemon import runtime
from engine.drivers.discovery import load_drivers
from engine.errors import EngineError
from engine.sys import ksm
from engine.sys.cgroups import CgroupLayout, read_layout
from engine.utils import host
from engine.utils.timefmt import rfc3339nano


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


def _cgroup_features(cg: CgroupLayout) -> dict[str, bool]:
    def v1_file(controller: str, name: str) -> bool:
        mount = cg.v1.get(controller)
        return mount is not None and os.path.exists(os.path.join(mount.mount_point, name))

    if cg.version == 1:
        return {
            "MemoryLimit": v1_file("memory", "memory.limit_in_bytes"),
            "SwapLimit": v1_file("memory", "memory.memsw.limit_in_bytes"),
            "KernelMemory": False,
            "KernelMemoryTCP": v1_file("memory", "memory.kmem.tcp.limit_in_bytes"),
            "CpuCfsPeriod": v1_file("cpu", "cpu.cfs_period_us"),
            "CpuCfsQuota": v1_file("cpu", "cpu.cfs_quota_us"),
            "CPUShares": v1_file("cpu", "cpu.shares"),
            "CPUSet": cg.has("cpuset"),
            "PidsLimit": cg.has("pids"),
            "OomKillDisable": v1_file("memory", "memory.oom_control"),
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


def shim_memory_merge_warning(cfg: Any, run_file: str = ksm.RUN_FILE) -> str | None:
    """Why ``--shim-memory-merge``, if set, does nothing on this host."""
    if not getattr(cfg, "shim_memory_merge", False):
        return None
    why = ksm.why_not_merging(run_file)
    return f"WARNING: --shim-memory-merge has no effect: {why}" if why else None


def build_info(daemon: Any) -> dict[str, Any]:
    """Collect every 1.41 Info field; ``daemon`` may be partly started."""
    cfg = daemon.config
    cg = read_layout()
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
    merge_warning = shim_memory_merge_warning(cfg)
    if merge_warning:
        warnings.append(merge_warning)
    for h in cfg.hosts:
        if h.startswith("tcp://") and not cfg.tlsverify:
            warnings.append(
                "WARNING: API is accessible on http://{} without encryption.\n"
                "         Access to the remote API is equivalent to root access on the host.".format(h[len("tcp://") :])
            )
    exec_driver = getattr(daemon, "exec_driver", None)
    if exec_driver is not None:
        runtimes = runtime.runtimes(exec_driver.name, type(exec_driver).__module__)
    else:
        entry = load_drivers("exec").get(cfg.exec_driver)
        runtimes = runtime.runtimes(cfg.exec_driver, entry.entry_point.split(":")[0] if entry else "")
    try:
        init_path = runtime.find_init(cfg.init_path)
        init_commit = runtime.init_version(init_path)
        init_binary = cfg.init_path or os.path.basename(init_path)
    except EngineError:
        init_commit, init_binary = "N/A", cfg.init_path or runtime.INIT_BINARIES[0]
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
        "CgroupDriver": runtime.cgroup_driver(cfg),
        "CgroupVersion": str(cg.version),
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
        "DefaultRuntime": runtime.DEFAULT_RUNTIME,
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
        "InitBinary": init_binary,
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": init_commit, "Expected": init_commit},
        "SecurityOptions": security.info_options() if security is not None else [],
        "DefaultAddressPools": [],
        "Warnings": warnings,
    }
    if daemon.plugins is not None:
        daemon.plugins.hook.engine_info(engine=daemon.engine, info=info)
    return info
