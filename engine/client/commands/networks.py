"""The ``network`` group: ``ls``, ``inspect``, ``create``, ``rm``, ``connect``,
``disconnect``, ``prune``, printed as docker prints them.

The daemon has the built-in ``bridge``, ``host`` and ``none`` networks only;
the other verbs send docker's requests and print the daemon's refusal.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.client.apihelp import api_error_text, filters_json, print_err, request_json
from engine.client.commands.container_info import inspect_objects
from engine.client.template import render_rows

NETWORK_DEFAULT = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"
NETWORK_TITLES = {
    "ID": "NETWORK ID",
    "Name": "NAME",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "IPv6": "IPV6",
    "Internal": "INTERNAL",
    "Labels": "LABELS",
    "CreatedAt": "CREATED AT",
}


class NetworkRow:
    """One network as the ``network ls`` template sees it (the CLI's ``networkContext``)."""

    def __init__(self, n: dict[str, Any], trunc: bool = True) -> None:
        self.n = n
        self.trunc = trunc

    def ID(self) -> str:  # noqa: N802 - template field names are Go's
        ident = self.n.get("Id", "")
        return ident[:12] if self.trunc else ident

    def Name(self) -> str:  # noqa: N802
        return self.n.get("Name", "")

    def Driver(self) -> str:  # noqa: N802
        return self.n.get("Driver", "")

    def Scope(self) -> str:  # noqa: N802
        return self.n.get("Scope", "")

    def IPv6(self) -> str:  # noqa: N802
        return "true" if self.n.get("EnableIPv6") else "false"

    def Internal(self) -> str:  # noqa: N802
        return "true" if self.n.get("Internal") else "false"

    def Labels(self) -> str:  # noqa: N802
        return ",".join(f"{k}={v}" for k, v in sorted((self.n.get("Labels") or {}).items()))

    def CreatedAt(self) -> str:  # noqa: N802
        return self.n.get("Created", "")

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name)() for name in NETWORK_TITLES}


def cmd_network_ls(client: Any, args: argparse.Namespace) -> int:
    filters = filters_json(args.filter)
    networks = request_json(client, "GET", "/networks", params={"filters": filters} if filters else None) or []
    networks = sorted(networks, key=lambda n: n.get("Name", ""))
    fmt = args.format or "table"
    if args.quiet:
        fmt = "{{.ID}}"
    elif fmt == "table":
        fmt = NETWORK_DEFAULT
    render_rows(fmt, [NetworkRow(n, not args.no_trunc) for n in networks], NETWORK_TITLES, sys.stdout)
    return 0


def cmd_network_inspect(client: Any, args: argparse.Namespace) -> int:
    return inspect_objects(client, args.networks, ["network"], args.format)


def _each(client: Any, names: list[str], call: Any) -> int:
    status = 0
    for name in names:
        try:
            call(name)
        except Exception as exc:  # noqa: BLE001 - printed; the others still tried
            print_err(api_error_text(exc))
            status = 1
            continue
        print(name)
    return status


def cmd_network_rm(client: Any, args: argparse.Namespace) -> int:
    return _each(
        client, args.networks, lambda n: client._raise_for_status(client._delete(client._url("/networks/{0}", n)))
    )


def cmd_network_create(client: Any, args: argparse.Namespace) -> int:
    body = {"Name": args.name, "Driver": args.driver or "bridge", "CheckDuplicate": True}
    try:
        result = request_json(client, "POST", "/networks/create", body=body) or {}
    except Exception as exc:  # noqa: BLE001 - the daemon's refusal, as docker prints it
        print_err(api_error_text(exc))
        return 1
    print(result.get("Id", ""))
    return 0


def cmd_network_connect(client: Any, args: argparse.Namespace) -> int:
    verb = "connect" if args.network_command == "connect" else "disconnect"
    try:
        request_json(client, "POST", f"/networks/{{0}}/{verb}", args.network, body={"Container": args.container})
    except Exception as exc:  # noqa: BLE001
        print_err(api_error_text(exc))
        return 1
    return 0


def cmd_network_prune(client: Any, args: argparse.Namespace) -> int:
    if not args.force:
        sys.stdout.write(
            "WARNING! This will remove all custom networks not used by at least one container.\n"
            "Are you sure you want to continue? [y/N] "
        )
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() != "y":
            return 0
    report = request_json(client, "POST", "/networks/prune") or {}
    deleted = report.get("NetworksDeleted") or []
    if deleted:
        print("Deleted Networks:\n" + "".join(n + "\n" for n in deleted))
    return 0


def register(sub: Any) -> None:
    network = sub.add_parser("network", help="manage networks")
    nsub = network.add_subparsers(dest="network_command", metavar="COMMAND", required=True)
    p = nsub.add_parser("ls", aliases=["list"], help="list networks")
    p.add_argument("-f", "--filter", action="append", help="provide filter values (e.g. 'driver=bridge')")
    p.add_argument("--format", help="format output using a custom template ('table', 'json', or a Go template)")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate the output")
    p.add_argument("-q", "--quiet", action="store_true", help="only display network IDs")
    p.set_defaults(func=cmd_network_ls)
    p = nsub.add_parser("inspect", help="display detailed information on one or more networks")
    p.add_argument("networks", nargs="+", metavar="NETWORK")
    p.add_argument("-f", "--format", help="format output using a custom template")
    p.set_defaults(func=cmd_network_inspect)
    p = nsub.add_parser("create", help="create a network (only the built-in networks exist in this engine)")
    p.add_argument("name", metavar="NETWORK")
    p.add_argument("-d", "--driver", default="bridge", help="driver to manage the network")
    p.set_defaults(func=cmd_network_create)
    p = nsub.add_parser("rm", aliases=["remove"], help="remove one or more networks")
    p.add_argument("networks", nargs="+", metavar="NETWORK")
    p.set_defaults(func=cmd_network_rm)
    for verb in ("connect", "disconnect"):
        p = nsub.add_parser(verb, help=f"{verb} a container {'to' if verb == 'connect' else 'from'} a network")
        p.add_argument("network", metavar="NETWORK")
        p.add_argument("container", metavar="CONTAINER")
        p.set_defaults(func=cmd_network_connect)
    p = nsub.add_parser("prune", help="remove all unused networks")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.set_defaults(func=cmd_network_prune)
