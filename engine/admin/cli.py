"""``engine-admin``: list the installed drivers, check the host, install the systemd units.

``engine-admin drivers`` shows every driver of each kind with the
distribution that brought it, whether it loads and can run here, its
priority rank and which one the daemon would select with the current
configuration and environment: the daemon's own selection path
(:mod:`engine.drivers.discovery`: ``plan`` and ``probe``) answers, so the
two cannot disagree. ``engine-admin check`` reports the kernel
features the engine uses. Tables for people, ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.admin import systemd
from engine.admin.checks import Check, run_checks
from engine.daemon.config import add_daemon_arguments, build_config
from engine.drivers import discovery as drivers
from engine.drivers.discovery import DriverEntry
from engine.drivers.selection import DriverConfig
from engine.errors import EngineError, NotSupported
from engine.utils.tables import table


def _probe(kind: str, entry: DriverEntry, config: DriverConfig) -> tuple[bool | None, str]:
    """Whether the driver can run here, by the probe selection runs (its home, its options)."""
    if not entry.loaded:
        return None, "not loaded"
    try:
        drivers.probe(kind, entry, config)
    except NotSupported as exc:
        return False, str(exc)
    except Exception as exc:  # report, do not crash the listing
        return False, f"probe failed: {type(exc).__name__}: {exc}"
    return True, ""


def _selected(kind: str, entries: dict[str, DriverEntry], config: DriverConfig) -> tuple[str | None, str]:
    """The driver the daemon would select, by the daemon's own path (:func:`engine.drivers.discovery.plan`)."""
    try:
        chosen = drivers.plan(kind, config, entries)
    except EngineError as exc:  # DriverSelectionError, or a probe's own error: start-up would stop with it
        return None, str(exc)
    return chosen.name, chosen.reason


def collect(kinds: list[str], config: DriverConfig) -> list[dict[str, Any]]:
    rows = []
    for kind in kinds:
        entries = drivers.load_drivers(kind)
        selected, why = _selected(kind, entries, config)
        for name, entry in entries.items():
            supported, reason = _probe(kind, entry, config)
            rank = None
            if kind == "graph" and name in config.graph_priority:
                rank = config.graph_priority.index(name) + 1
            rows.append(
                {
                    "kind": kind,
                    "name": name,
                    "distribution": entry.distribution,
                    "version": entry.version,
                    "summary": entry.summary,
                    "loaded": entry.loaded,
                    "load_error": entry.error,
                    "supported": supported,
                    "reason": reason,
                    "priority": rank,
                    "selected": name == selected,
                    "selected_reason": why if name == selected else "",
                }
            )
        if selected is None:
            rows.append({"kind": kind, "name": None, "selected": False, "selected_reason": why})
    return rows


def cmd_drivers(args: argparse.Namespace) -> int:
    config = build_config(args).driver_config()
    kinds = [args.kind] if args.kind else list(drivers.GROUPS)
    rows = collect(kinds, config)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    lines = []
    notes = []
    for row in rows:
        if row["name"] is None:
            notes.append(f"{row['kind']}: no driver would be selected: {row['selected_reason']}")
            continue
        if not row["loaded"]:
            state = f"LOAD ERROR: {row['load_error']}"
        elif row["supported"]:
            state = "yes"
        else:
            state = f"no: {row['reason']}"
        sel = f"* ({row['selected_reason']})" if row["selected"] else ""
        lines.append(
            [
                row["kind"],
                row["name"],
                f"{row['distribution']} {row['version']}",
                row["priority"] or "-",
                state,
                sel,
                row["summary"],
            ]
        )
    table(["KIND", "NAME", "DISTRIBUTION", "PRIORITY", "SUPPORTED HERE", "SELECTED", "DESCRIPTION"], lines)
    for note in notes:
        print(note)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    groups = run_checks()
    if args.json:
        json.dump({k: [c.to_json() for c in v] for k, v in groups.items()}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    rows = []
    for group, checks in groups.items():
        for c in checks:
            rows.append([group, c.name, _mark(c), c.detail, "" if c.ok else c.disables])
    table(["AREA", "FEATURE", "STATUS", "DETAIL", "IF MISSING, NO"], rows)
    return 0


def _mark(c: Check) -> str:
    return {True: "ok", False: "missing", None: "unknown"}[c.ok]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="engine-admin", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("drivers", help="list installed graph, network and exec drivers")
    p.add_argument("--kind", choices=sorted(drivers.GROUPS), help="only drivers of this kind")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_daemon_arguments(p)
    p.set_defaults(func=cmd_drivers)
    p = sub.add_parser("check", help="check the kernel features the engine uses")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser(
        "install-systemd",
        help="install the systemd units (engine.service, engine.socket)",
        description=systemd.__doc__.split("\n\n")[1] if systemd.__doc__ else None,
    )
    p.add_argument("--dest", default=systemd.DEFAULT_DEST, help=f"unit directory (default {systemd.DEFAULT_DEST})")
    p.add_argument(
        "--prefix",
        default=None,
        help=f"the engine's install prefix: ExecStart runs PREFIX/bin/engine (default {systemd.default_prefix()})",
    )
    p.add_argument("--root", default="/", help="install into this root file system (default /)")
    p.add_argument(
        "--group", default=systemd.DEFAULT_GROUP, help=f"group of the API socket (default {systemd.DEFAULT_GROUP})"
    )
    p.add_argument("--create-group", action="store_true", help="create the group (groupadd --system) if missing")
    p.set_defaults(func=systemd.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except EngineError as exc:
        print(f"engine-admin: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
