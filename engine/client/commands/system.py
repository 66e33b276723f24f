"""``engine version`` and ``engine info``, printed as docker prints them."""

from __future__ import annotations

import json
import platform
import sys
from typing import Any

import engine
from engine.client.format import bytes_size
from engine.utils.host import goarch


def _print_json_or(args: Any, data: Any) -> bool:
    if getattr(args, "format", None) == "json" or getattr(args, "format", None) == "{{json .}}":
        print(json.dumps(data))
        return True
    return False


def cmd_version(client: Any, args: Any) -> int:
    server = None
    err = None
    try:
        server = client.version(api_version=False)
    except Exception as exc:  # print the client part anyway, as docker does
        err = exc
    client_part = {
        "Version": engine.__version__,
        "ApiVersion": engine.API_VERSION,
        "PythonVersion": platform.python_version(),
        "Os": "linux",
        "Arch": goarch(),
    }
    if _print_json_or(args, {"Client": client_part, "Server": server}):
        return 0 if err is None else 1
    print("Client:")
    print(f" Version:           {client_part['Version']}")
    print(f" API version:       {client_part['ApiVersion']}")
    print(f" Python version:    {client_part['PythonVersion']}")
    print(f" OS/Arch:           linux/{client_part['Arch']}")
    if server is None:
        raise err  # type: ignore[misc]
    print()
    print(f"Server: {server.get('Platform', {}).get('Name', '')}")
    for comp in server.get("Components") or []:
        d = comp.get("Details", {})
        print(f" {comp.get('Name')}:")
        print(f"  Version:          {comp.get('Version')}")
        print(f"  API version:      {d.get('ApiVersion')} (minimum version {d.get('MinAPIVersion')})")
        print(f"  Python version:   {d.get('GoVersion')}")
        print(f"  Git commit:       {d.get('GitCommit')}")
        print(f"  OS/Arch:          {d.get('Os')}/{d.get('Arch')}")
        print(f"  Kernel version:   {d.get('KernelVersion')}")
        print(f"  Experimental:     {d.get('Experimental')}")
    return 0


def cmd_info(client: Any, args: Any) -> int:
    info = client.info()
    if _print_json_or(args, info):
        return 0
    p = print
    p("Client:")
    p(f" Version:    {engine.__version__}")
    p(f" Debug Mode: {'true' if args.debug else 'false'}")
    p()
    p("Server:")
    p(f" Containers: {info.get('Containers', 0)}")
    p(f"  Running: {info.get('ContainersRunning', 0)}")
    p(f"  Paused: {info.get('ContainersPaused', 0)}")
    p(f"  Stopped: {info.get('ContainersStopped', 0)}")
    p(f" Images: {info.get('Images', 0)}")
    p(f" Server Version: {info.get('ServerVersion', '')}")
    p(f" Storage Driver: {info.get('Driver', '')}")
    for key, value in info.get("DriverStatus") or []:
        p(f"  {key}: {value}")
    p(f" Logging Driver: {info.get('LoggingDriver', '')}")
    p(f" Cgroup Driver: {info.get('CgroupDriver', '')}")
    p(f" Cgroup Version: {info.get('CgroupVersion', '')}")
    plugins = info.get("Plugins") or {}
    p(" Plugins:")
    p(f"  Volume: {' '.join(plugins.get('Volume') or [])}")
    p(f"  Network: {' '.join(plugins.get('Network') or [])}")
    p(f"  Log: {' '.join(plugins.get('Log') or [])}")
    p(f" Swarm: {(info.get('Swarm') or {}).get('LocalNodeState', 'inactive')}")
    p(f" Runtimes: {' '.join(sorted(info.get('Runtimes') or {}))}")
    p(f" Default Runtime: {info.get('DefaultRuntime', '')}")
    sec = info.get("SecurityOptions") or []
    if sec:
        p(" Security Options:")
        for opt in sec:
            p(f"  {opt.replace('name=', '')}")
    p(f" Kernel Version: {info.get('KernelVersion', '')}")
    p(f" Operating System: {info.get('OperatingSystem', '')}")
    p(f" OSType: {info.get('OSType', '')}")
    p(f" Architecture: {info.get('Architecture', '')}")
    p(f" CPUs: {info.get('NCPU', 0)}")
    p(f" Total Memory: {bytes_size(info.get('MemTotal', 0))}")
    p(f" Name: {info.get('Name', '')}")
    p(f" ID: {info.get('ID', '')}")
    p(f" Engine Root Dir: {info.get('DockerRootDir', '')}")
    p(f" Debug Mode: {'true' if info.get('Debug') else 'false'}")
    if info.get("Labels"):
        p(" Labels:")
        for label in info["Labels"]:
            p(f"  {label}")
    p(f" Experimental: {'true' if info.get('ExperimentalBuild') else 'false'}")
    reg = info.get("RegistryConfig") or {}
    if reg.get("InsecureRegistryCIDRs") or [n for n, c in (reg.get("IndexConfigs") or {}).items() if not c.get("Secure")]:
        p(" Insecure Registries:")
        for name, conf in sorted((reg.get("IndexConfigs") or {}).items()):
            if not conf.get("Secure"):
                p(f"  {name}")
        for cidr in reg.get("InsecureRegistryCIDRs") or []:
            p(f"  {cidr}")
    if reg.get("Mirrors"):
        p(" Registry Mirrors:")
        for mirror in reg["Mirrors"]:
            p(f"  {mirror}")
    p(f" Live Restore Enabled: {'true' if info.get('LiveRestoreEnabled') else 'false'}")
    for warning in info.get("Warnings") or []:
        print(warning, file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("version", help="show the engine version information")
    p.add_argument("-f", "--format", default=None, help="'json' prints the raw JSON")
    p.set_defaults(func=cmd_version)
    p = sub.add_parser("info", help="display system-wide information")
    p.add_argument("-f", "--format", default=None, help="'json' prints the raw JSON")
    p.set_defaults(func=cmd_info)
