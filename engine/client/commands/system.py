"""``engine version``, ``engine info``, ``engine events`` and the ``system`` group
(``df``, ``prune``, ``events``, ``info``), printed as docker prints them."""

from __future__ import annotations

import datetime as dt
import json
import platform
import sys
from typing import Any

import engine
from engine.client.apihelp import filters_json, get_timestamp, print_err, request_json
from engine.client.template import Template, TemplateError, render_rows
from engine.utils.host import goarch
from engine.utils.units import bytes_size, human_size


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
        "ApiVersion": engine.CLIENT_API_VERSION,
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
    if reg.get("InsecureRegistryCIDRs") or [
        n for n, c in (reg.get("IndexConfigs") or {}).items() if not c.get("Secure")
    ]:
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


def format_event(event: dict[str, Any]) -> str:
    """The CLI's ``prettyPrintEvent``: ``<time> <type> <action> <id> (k=v, ...)``, local time, 9 fraction digits."""
    out = ""
    nanos = event.get("timeNano") or 0
    seconds = event.get("time") or 0
    if nanos or seconds:
        whole, frac = (nanos // 1_000_000_000, nanos % 1_000_000_000) if nanos else (seconds, 0)
        local = dt.datetime.fromtimestamp(whole).astimezone()
        zone = local.strftime("%z")
        zone = "Z" if zone == "+0000" else f"{zone[:3]}:{zone[3:]}"
        out = local.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}{zone} "
    actor = event.get("Actor") or {}
    out += f"{event.get('Type', '')} {event.get('Action', '')} {actor.get('ID', '')}"
    attrs = actor.get("Attributes") or {}
    if attrs:
        out += " (" + ", ".join(f"{k}={attrs[k]}" for k in sorted(attrs)) + ")"
    return out


def cmd_events(client: Any, args: Any) -> int:
    tmpl = None
    if args.format:
        try:
            tmpl = Template("{{json .}}" if args.format == "json" else args.format)
        except TemplateError as exc:
            print_err(f"Error parsing format: {exc}")
            return 64
    params: dict[str, Any] = {}
    filters = filters_json(args.filter)
    if filters:
        params["filters"] = filters
    if args.since:
        params["since"] = get_timestamp(args.since)
    if args.until:
        params["until"] = get_timestamp(args.until)
    resp = client._get(client._url("/events"), params=params, stream=True)
    client._raise_for_status(resp)
    try:
        for line in resp.iter_lines():
            if not line.strip():
                continue
            event = json.loads(line)
            print(tmpl.execute(event) if tmpl is not None else format_event(event), flush=True)
    except KeyboardInterrupt:
        return 0
    finally:
        resp.close()
    return 0


DF_DEFAULT = "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
DF_TITLES = {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE", "Reclaimable": "RECLAIMABLE"}


class _DfRow:
    """One line of ``system df`` (the CLI's ``diskUsage*Context``)."""

    def __init__(self, kind: str, total: int, active: int, size: float, reclaimable: float, percent: bool) -> None:
        self.kind, self.total, self.active = kind, total, active
        self.size, self.reclaimable, self.percent = size, reclaimable, percent

    def Type(self) -> str:  # noqa: N802 - template field names are Go's
        return self.kind

    def TotalCount(self) -> str:  # noqa: N802
        return str(self.total)

    def Active(self) -> str:  # noqa: N802
        return str(self.active)

    def Size(self) -> str:  # noqa: N802
        return human_size(self.size, 4)

    def Reclaimable(self) -> str:  # noqa: N802
        text = human_size(self.reclaimable, 4)
        if self.percent and self.size > 0:
            text += f" ({int(self.reclaimable * 100 // self.size)}%)"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "Active": self.Active(),
            "Reclaimable": self.Reclaimable(),
            "Size": self.Size(),
            "TotalCount": self.TotalCount(),
            "Type": self.Type(),
        }


def disk_usage_rows(du: dict[str, Any]) -> list[_DfRow]:
    """The four lines of ``system df`` from ``GET /system/df``, computed as the CLI computes them."""
    images = du.get("Images") or []
    layers = du.get("LayersSize") or 0
    used = sum(
        i.get("Size", 0) - i.get("SharedSize", 0)
        for i in images
        if i.get("Containers", 0) != 0 and i.get("Size", -1) != -1 and i.get("SharedSize", -1) != -1
    )
    rows = [
        _DfRow(
            "Images",
            len(images),
            sum(1 for i in images if i.get("Containers", 0) > 0),
            layers,
            layers - used,
            percent=True,
        )
    ]
    containers = du.get("Containers") or []
    active_states = ("running", "paused", "restarting")
    size = sum(c.get("SizeRw", 0) or 0 for c in containers)
    rows.append(
        _DfRow(
            "Containers",
            len(containers),
            sum(1 for c in containers if c.get("State") in active_states),
            size,
            sum(c.get("SizeRw", 0) or 0 for c in containers if c.get("State") not in active_states),
            percent=True,
        )
    )
    volumes = du.get("Volumes") or []
    usage = [v.get("UsageData") or {"Size": -1, "RefCount": 0} for v in volumes]
    rows.append(
        _DfRow(
            "Local Volumes",
            len(volumes),
            sum(1 for u in usage if u.get("RefCount", 0) > 0),
            sum(u["Size"] for u in usage if u.get("Size", -1) != -1),
            sum(u["Size"] for u in usage if u.get("Size", -1) != -1 and u.get("RefCount", 0) == 0),
            percent=True,
        )
    )
    cache = du.get("BuildCache") or []
    builder = sum(b.get("Size", 0) for b in cache if not b.get("Shared"))
    in_use = sum(b.get("Size", 0) for b in cache if b.get("InUse") and not b.get("Shared"))
    rows.append(
        _DfRow(
            "Build Cache", len(cache), sum(1 for b in cache if b.get("InUse")), builder, builder - in_use, percent=False
        )
    )
    return rows


def cmd_system_df(client: Any, args: Any) -> int:
    du = request_json(client, "GET", "/system/df") or {}
    fmt = args.format or "table"
    if fmt == "table":
        fmt = DF_DEFAULT
    render_rows(fmt, disk_usage_rows(du), DF_TITLES, sys.stdout)
    return 0


def _prune_report(title: str, items: list[str]) -> str:
    return f"{title}:\n" + "".join(i + "\n" for i in items) if items else ""


def cmd_system_prune(client: Any, args: Any) -> int:
    filters = filters_json(args.filter)
    if args.volumes and filters and '"until"' in filters:
        print_err('ERROR: The "until" filter is not supported with "--volumes"')
        return 1
    if not args.force:
        warnings = ["all stopped containers", "all networks not used by at least one container"]
        if args.volumes:
            warnings.append("all anonymous volumes not used by at least one container")
        warnings.append(
            "all images without at least one container associated to them" if args.all else "all dangling images"
        )
        text = "WARNING! This will remove:\n" + "".join(f"  - {w}\n" for w in warnings)
        if args.filter:
            text += "\n  Items to be pruned will be filtered with:\n" + "".join(
                f"  - {f}\n" for f in sorted(args.filter)
            )
        sys.stdout.write(text + "\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() != "y":
            return 0
    params = {"filters": filters} if filters else None
    reclaimed = 0
    outputs = []
    report = request_json(client, "POST", "/containers/prune", params=params) or {}
    if report.get("ContainersDeleted"):
        outputs.append(_prune_report("Deleted Containers", report["ContainersDeleted"]))
        reclaimed += report.get("SpaceReclaimed") or 0
    report = request_json(client, "POST", "/networks/prune", params=params) or {}
    if report.get("NetworksDeleted"):
        outputs.append(_prune_report("Deleted Networks", report["NetworksDeleted"]))
    if args.volumes:
        report = request_json(client, "POST", "/volumes/prune", params=params) or {}
        if report.get("VolumesDeleted"):
            outputs.append(_prune_report("Deleted Volumes", report["VolumesDeleted"]))
            reclaimed += report.get("SpaceReclaimed") or 0
    image_filters = json.loads(filters) if filters else {}
    image_filters["dangling"] = {"false" if args.all else "true": True}
    report = (
        request_json(
            client, "POST", "/images/prune", params={"filters": json.dumps(image_filters, separators=(",", ":"))}
        )
        or {}
    )
    deleted = report.get("ImagesDeleted") or []
    if deleted:
        lines = [f"{k.lower()}: {v}" for record in deleted for k, v in record.items()]
        outputs.append(_prune_report("Deleted Images", lines))
        reclaimed += report.get("SpaceReclaimed") or 0
    for output in outputs:
        print(output)
    print(f"Total reclaimed space: {human_size(reclaimed, 4)}")
    return 0


def _add_events(sub: Any) -> None:
    p = sub.add_parser("events", help="get real time events from the server")
    p.add_argument("-f", "--filter", action="append", help="filter output based on conditions provided")
    p.add_argument("--format", help="format output using a custom template ('json' or a Go template)")
    p.add_argument("--since", default="", help="show all events created since timestamp")
    p.add_argument("--until", default="", help="stream events until this timestamp")
    p.set_defaults(func=cmd_events)


def register(sub: Any) -> None:
    p = sub.add_parser("version", help="show the engine version information")
    p.add_argument("-f", "--format", default=None, help="'json' prints the raw JSON")
    p.set_defaults(func=cmd_version)
    p = sub.add_parser("info", help="display system-wide information")
    p.add_argument("-f", "--format", default=None, help="'json' prints the raw JSON")
    p.set_defaults(func=cmd_info)
    _add_events(sub)
    system = sub.add_parser("system", help="manage the engine")
    ssub = system.add_subparsers(dest="system_command", metavar="COMMAND", required=True)
    p = ssub.add_parser("df", help="show engine disk usage")
    p.add_argument("--format", help="format output using a custom template ('table', 'json', or a Go template)")
    p.set_defaults(func=cmd_system_df)
    p = ssub.add_parser("prune", help="remove unused data")
    p.add_argument("-a", "--all", action="store_true", help="remove all unused images not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--volumes", action="store_true", help="prune anonymous volumes")
    p.add_argument("--filter", action="append", help='provide filter values (e.g. "label=<key>=<value>")')
    p.set_defaults(func=cmd_system_prune)
    _add_events(ssub)
    p = ssub.add_parser("info", help="display system-wide information")
    p.add_argument("-f", "--format", default=None, help="'json' prints the raw JSON")
    p.set_defaults(func=cmd_info)
