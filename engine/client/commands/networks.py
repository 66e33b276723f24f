"""The ``network`` group: ``ls``, ``inspect``, ``create``, ``rm``, ``connect``,
``disconnect``, ``prune``, with docker's flags, requests and output.

``create`` groups ``--subnet``, ``--ip-range``, ``--gateway`` and
``--aux-address`` into ``IPAM.Config`` entries as the docker CLI does (each
goes with the subnet that contains it) and refuses what it refuses, in its
words.
"""

from __future__ import annotations

import argparse
import ipaddress
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


def _key_values(values: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f'invalid argument "{item}" for "{flag}" flag: bad format for {flag.lstrip("-")}: {item}')
        out[key] = value
    return out


def ipam_configs(
    subnets: list[str], ranges: list[str], gateways: list[str], aux: dict[str, str]
) -> list[dict[str, Any]]:
    """The CLI's ``consolidateIpam``: each ``--ip-range``, ``--gateway`` and ``--aux-address`` goes with the
    ``--subnet`` that contains it, in its words when none does.

    :raises ValueError: with the docker CLI's message.
    """
    if len(subnets) < len(ranges) or len(subnets) < len(gateways):
        raise ValueError("every ip-range or gateway must have a corresponding subnet")
    nets = []
    for text in subnets:
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"invalid CIDR address: {text}") from None
    for i, a in enumerate(nets):
        for b in nets[i + 1 :]:
            if a.version == b.version and a.overlaps(b):
                raise ValueError(f"multiple overlapping subnet configuration is not supported: {a}, {b}")
    configs: list[dict[str, Any]] = [{"Subnet": text, "AuxiliaryAddresses": {}} for text in subnets]

    def owner(address: Any) -> dict[str, Any] | None:
        for cfg, net in zip(configs, nets):
            if address.version == net.version and address in net:
                return cfg
        return None

    for text in ranges:
        try:
            rng = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"invalid CIDR address: {text}") from None
        cfg = next((c for c, n in zip(configs, nets) if rng.version == n.version and rng.subnet_of(n)), None)  # type: ignore[arg-type]
        if cfg is None:
            raise ValueError(f"no matching subnet for range {text}")
        if cfg.get("IPRange"):
            raise ValueError(
                f"cannot configure multiple ranges ({text}, {cfg['IPRange']}) on the same subnet ({cfg['Subnet']})"
            )
        cfg["IPRange"] = text
    for text in gateways:
        cfg = owner(ipaddress.ip_address(text))
        if cfg is None:
            raise ValueError(f"no matching subnet for gateway {text}")
        if cfg.get("Gateway"):
            raise ValueError(
                f"cannot configure multiple gateways ({text}, {cfg['Gateway']}) for the same subnet ({cfg['Subnet']})"
            )
        cfg["Gateway"] = text
    for name, text in aux.items():
        cfg = owner(ipaddress.ip_address(text))
        if cfg is None:
            raise ValueError(f"no matching subnet for aux-address {text}")
        cfg["AuxiliaryAddresses"][name] = text
    return configs


def cmd_network_create(client: Any, args: argparse.Namespace) -> int:
    try:
        configs = ipam_configs(
            args.subnet or [], args.ip_range or [], args.gateway or [], _key_values(args.aux_address, "--aux-address")
        )
        options = _key_values(args.opt, "--opt")
        ipam_options = _key_values(args.ipam_opt, "--ipam-opt")
        labels = _key_values([v if "=" in v else v + "=" for v in args.label or []], "--label")
    except ValueError as exc:
        print_err(str(exc))
        return 1
    body: dict[str, Any] = {
        "Name": args.name,
        "CheckDuplicate": True,
        "Driver": args.driver or "bridge",
        "Scope": args.scope or "",
        "EnableIPv6": bool(args.ipv6),
        "IPAM": {"Driver": args.ipam_driver or "default", "Config": configs, "Options": ipam_options},
        "Internal": bool(args.internal),
        "Attachable": bool(args.attachable),
        "Ingress": bool(args.ingress),
        "ConfigOnly": bool(args.config_only),
        "ConfigFrom": {"Network": args.config_from} if args.config_from else None,
        "Options": options,
        "Labels": labels,
    }
    try:
        result = request_json(client, "POST", "/networks/create", body=body) or {}
    except Exception as exc:  # noqa: BLE001 - the daemon's refusal, as docker prints it
        print_err(api_error_text(exc))
        return 1
    print(result.get("Id", ""))
    return 0


def cmd_network_connect(client: Any, args: argparse.Namespace) -> int:
    ipam: dict[str, Any] = {}
    if args.ip:
        ipam["IPv4Address"] = args.ip
    if args.ip6:
        ipam["IPv6Address"] = args.ip6
    if args.link_local_ip:
        ipam["LinkLocalIPs"] = list(args.link_local_ip)
    try:
        driver_opts = _key_values(args.driver_opt, "--driver-opt")
    except ValueError as exc:
        print_err(str(exc))
        return 1
    endpoint = {
        "IPAMConfig": ipam or None,
        "Links": list(args.link or []) or None,
        "Aliases": list(args.alias or []) or None,
        "DriverOpts": driver_opts or None,
    }
    try:
        request_json(
            client,
            "POST",
            "/networks/{0}/connect",
            args.network,
            body={"Container": args.container, "EndpointConfig": endpoint},
        )
    except Exception as exc:  # noqa: BLE001
        print_err(api_error_text(exc))
        return 1
    return 0


def cmd_network_disconnect(client: Any, args: argparse.Namespace) -> int:
    try:
        request_json(
            client,
            "POST",
            "/networks/{0}/disconnect",
            args.network,
            body={"Container": args.container, "Force": args.force},
        )
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
    filters = filters_json(args.filter)
    report = request_json(client, "POST", "/networks/prune", params={"filters": filters} if filters else None) or {}
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
    p.add_argument("-v", "--verbose", action="store_true", help="verbose output for diagnostics")
    p.set_defaults(func=cmd_network_inspect)
    p = nsub.add_parser("create", help="create a network")
    p.add_argument("name", metavar="NETWORK")
    p.add_argument("-d", "--driver", default="bridge", help="driver to manage the network (default bridge)")
    p.add_argument("--subnet", action="append", help="subnet in CIDR format that represents a network segment")
    p.add_argument("--ip-range", action="append", help="allocate container IPs from a sub-range")
    p.add_argument("--gateway", action="append", help="IPv4 or IPv6 gateway for the master subnet")
    p.add_argument("--aux-address", action="append", help="auxiliary IPv4 or IPv6 addresses used by the network driver")
    p.add_argument("--ipam-driver", default="default", help="IP address management driver")
    p.add_argument("--ipam-opt", action="append", help="set IPAM driver specific options")
    p.add_argument("-o", "--opt", action="append", help="set driver specific options")
    p.add_argument("--label", action="append", help="set metadata on a network")
    p.add_argument("--internal", action="store_true", help="restrict external access to the network")
    p.add_argument("--ipv6", action="store_true", help="enable IPv6 networking")
    p.add_argument("--attachable", action="store_true", help="enable manual container attachment")
    p.add_argument("--ingress", action="store_true", help="create swarm routing-mesh network")
    p.add_argument("--scope", default="", help="control the network's scope")
    p.add_argument("--config-only", action="store_true", help="create a configuration only network")
    p.add_argument("--config-from", default="", help="the network from which to copy the configuration")
    p.set_defaults(func=cmd_network_create)
    p = nsub.add_parser("rm", aliases=["remove"], help="remove one or more networks")
    p.add_argument("networks", nargs="+", metavar="NETWORK")
    p.set_defaults(func=cmd_network_rm)
    p = nsub.add_parser("connect", help="connect a container to a network")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("--alias", action="append", help="add network-scoped alias for the container")
    p.add_argument("--driver-opt", action="append", help="driver options for the network")
    p.add_argument("--ip", default="", help="IPv4 address (e.g., 172.30.100.104)")
    p.add_argument("--ip6", default="", help="IPv6 address (e.g., 2001:db8::33)")
    p.add_argument("--link", action="append", help="add link to another container")
    p.add_argument("--link-local-ip", action="append", help="add a link-local address for the container")
    p.set_defaults(func=cmd_network_connect)
    p = nsub.add_parser("disconnect", help="disconnect a container from a network")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("-f", "--force", action="store_true", help="force the container to disconnect from a network")
    p.set_defaults(func=cmd_network_disconnect)
    p = nsub.add_parser("prune", help="remove all unused networks")
    p.add_argument("--filter", action="append", help="provide filter values (e.g. 'until=<timestamp>')")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.set_defaults(func=cmd_network_prune)
