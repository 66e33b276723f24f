"""The ``volume`` group: ``create``, ``ls``, ``inspect``, ``rm``, ``prune``, printed as docker prints them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.client.apihelp import api_error_text, filters_json, print_err, request_json
from engine.client.commands.container_info import _natural_key, inspect_objects
from engine.client.runflags import kv_to_map
from engine.client.template import render_rows
from engine.utils.units import human_size

VOLUME_DEFAULT = "table {{.Driver}}\t{{.Name}}"
VOLUME_TITLES = {
    "ID": "ID",
    "Name": "VOLUME NAME",
    "Group": "GROUP",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "Availability": "AVAILABILITY",
    "Mountpoint": "MOUNTPOINT",
    "Labels": "LABELS",
    "Links": "LINKS",
    "Size": "SIZE",
    "Status": "STATUS",
}


class VolumeRow:
    """One volume as the ``volume ls`` template sees it (the CLI's ``volumeContext``)."""

    def __init__(self, v: dict[str, Any]) -> None:
        self.v = v

    def Name(self) -> str:  # noqa: N802 - template field names are Go's
        return self.v.get("Name", "")

    def Driver(self) -> str:  # noqa: N802
        return self.v.get("Driver", "")

    def Scope(self) -> str:  # noqa: N802
        return self.v.get("Scope", "")

    def Mountpoint(self) -> str:  # noqa: N802
        return self.v.get("Mountpoint", "")

    def Labels(self) -> str:  # noqa: N802
        return ",".join(f"{k}={v}" for k, v in sorted((self.v.get("Labels") or {}).items()))

    def Label(self, name: str) -> str:  # noqa: N802
        return (self.v.get("Labels") or {}).get(name, "")

    def Links(self) -> str:  # noqa: N802
        usage = self.v.get("UsageData")
        return "N/A" if usage is None else str(usage.get("RefCount", 0))

    def Size(self) -> str:  # noqa: N802
        usage = self.v.get("UsageData")
        return "N/A" if usage is None else human_size(float(usage.get("Size", 0)), 4)

    def Group(self) -> str:  # noqa: N802
        return "N/A"

    def Availability(self) -> str:  # noqa: N802
        return "N/A"

    def Status(self) -> str:  # noqa: N802
        return "N/A"

    def to_json(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)()
            for name in (
                "Availability",
                "Driver",
                "Group",
                "Labels",
                "Links",
                "Mountpoint",
                "Name",
                "Scope",
                "Size",
                "Status",
            )
        }


def cmd_volume_create(client: Any, args: argparse.Namespace) -> int:
    name = args.name or ""
    if args.volume:
        if name and name != args.volume:
            print_err("conflicting options: either specify --name or provide positional arg, not both")
            return 1
        name = args.volume
    body: dict[str, Any] = {}
    if args.driver:
        body["Driver"] = args.driver
    opts = kv_to_map(args.opt or [])
    if opts:
        body["DriverOpts"] = dict(sorted(opts.items()))
    labels = kv_to_map(args.label or [])
    if labels:
        body["Labels"] = dict(sorted(labels.items()))
    if name:
        body["Name"] = name
    result = request_json(client, "POST", "/volumes/create", body=body)
    print(result.get("Name", ""))
    return 0


def cmd_volume_ls(client: Any, args: argparse.Namespace) -> int:
    filters = filters_json(args.filter)
    result = request_json(client, "GET", "/volumes", params={"filters": filters} if filters else None) or {}
    volumes = sorted(result.get("Volumes") or [], key=lambda v: _natural_key(v.get("Name", "")))
    for warning in result.get("Warnings") or []:
        print_err(warning)
    fmt = args.format or "table"
    if args.quiet:
        fmt = "{{.Name}}"
    elif fmt == "table":
        fmt = VOLUME_DEFAULT
    render_rows(fmt, [VolumeRow(v) for v in volumes], VOLUME_TITLES, sys.stdout)
    return 0


def cmd_volume_inspect(client: Any, args: argparse.Namespace) -> int:
    return inspect_objects(client, args.volumes, ["volume"], args.format)


def cmd_volume_rm(client: Any, args: argparse.Namespace) -> int:
    status = 0
    for name in args.volumes:
        try:
            client._raise_for_status(
                client._delete(client._url("/volumes/{0}", name), params={"force": 1} if args.force else None)
            )
        except Exception as exc:  # noqa: BLE001 - printed, the others still removed
            print_err(api_error_text(exc))
            status = 1
            continue
        print(name)
    return status


def cmd_volume_prune(client: Any, args: argparse.Namespace) -> int:
    if not args.force:
        # API 1.41 prunes every unused local volume, named ones included.
        sys.stdout.write(
            "WARNING! This will remove all local volumes not used by at least one container.\n"
            "Are you sure you want to continue? [y/N] "
        )
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() != "y":
            return 0
    filters = filters_json(args.filter)
    report = request_json(client, "POST", "/volumes/prune", params={"filters": filters} if filters else None) or {}
    deleted = report.get("VolumesDeleted") or []
    reclaimed = 0
    if deleted:
        print("Deleted Volumes:\n" + "".join(d + "\n" for d in deleted))
        reclaimed = report.get("SpaceReclaimed") or 0
    print(f"Total reclaimed space: {human_size(reclaimed, 4)}")
    return 0


def register(sub: Any) -> None:
    volume = sub.add_parser("volume", help="manage volumes")
    vsub = volume.add_subparsers(dest="volume_command", metavar="COMMAND", required=True)
    p = vsub.add_parser("create", help="create a volume")
    p.add_argument("volume", nargs="?", metavar="VOLUME")
    p.add_argument("--name", help=argparse.SUPPRESS)
    p.add_argument("-d", "--driver", default="local", help="specify volume driver name")
    p.add_argument("-o", "--opt", action="append", help="set driver specific options")
    p.add_argument("--label", action="append", help="set metadata for a volume")
    p.set_defaults(func=cmd_volume_create)
    p = vsub.add_parser("ls", aliases=["list"], help="list volumes")
    p.add_argument("-f", "--filter", action="append", help="provide filter values (e.g. 'dangling=true')")
    p.add_argument("--format", help="format output using a custom template ('table', 'json', or a Go template)")
    p.add_argument("-q", "--quiet", action="store_true", help="only display volume names")
    p.set_defaults(func=cmd_volume_ls)
    p = vsub.add_parser("inspect", help="display detailed information on one or more volumes")
    p.add_argument("volumes", nargs="+", metavar="VOLUME")
    p.add_argument("-f", "--format", help="format output using a custom template")
    p.set_defaults(func=cmd_volume_inspect)
    p = vsub.add_parser("rm", aliases=["remove"], help="remove one or more volumes")
    p.add_argument("volumes", nargs="+", metavar="VOLUME")
    p.add_argument("-f", "--force", action="store_true", help="force the removal of one or more volumes")
    p.set_defaults(func=cmd_volume_rm)
    p = vsub.add_parser("prune", help="remove unused local volumes")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--filter", action="append", help="provide filter values (e.g. 'label=<label>')")
    p.set_defaults(func=cmd_volume_prune)
