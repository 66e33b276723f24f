"""The ``engine`` program: the client's commands, and with ``-d`` (or ``daemon``) the daemon.

This module sits above both: one parser holds the client's global flags and
commands (:mod:`engine.client.cli`) and the daemon's flags
(:mod:`engine.daemon.config`); the arguments then go to the side that was
asked for. ``engine -d`` imports none of the client's command modules, and
the client none of the daemon's server. It is the ``engine`` console script
(``python -m engine.cli`` from a source tree).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import engine
from engine.client import cli as client
from engine.daemon.config import add_daemon_arguments


def build_parser(commands: bool = True) -> argparse.ArgumentParser:
    """The ``engine`` parser; ``commands=False`` leaves out the client's
    commands (``engine -d`` needs none of their imports)."""
    parser = client.Parser(
        prog="engine",
        description="A Linux container engine. Without a command: the daemon with -d, else this help.",
        epilog="Run 'engine COMMAND --help' for more information on a command.",
    )
    parser.add_argument("-d", "--daemon", action="store_true", help="run the daemon (same as 'engine daemon')")
    client.add_global_arguments(parser)
    parser.add_argument("-v", "--version", action="store_true", help="print version information and quit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=client.Parser)
    daemon = sub.add_parser("daemon", help="run the daemon")
    add_daemon_arguments(daemon)
    daemon.set_defaults(func=None)
    if commands:
        client.register_commands(sub)
    return parser


def _split_daemon_argv(argv: list[str]) -> list[str] | None:
    """``engine -d FLAGS`` / ``engine --daemon FLAGS`` -> the daemon's FLAGS."""
    for flag in ("-d", "--daemon"):
        if flag in argv:
            i = argv.index(flag)
            if not any(not a.startswith("-") for a in argv[:i]):
                return argv[:i] + argv[i + 1 :]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``engine [FLAGS] COMMAND ...`` or ``engine -d [DAEMON FLAGS]``; the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    daemon_argv = _split_daemon_argv(argv)
    if daemon_argv is not None:
        argv = ["daemon", *daemon_argv]
    parser = build_parser(commands=not argv or argv[0] != "daemon")
    args = parser.parse_args(argv)
    if args.version:
        print(f"engine version {engine.__version__}, API {engine.CLIENT_API_VERSION}")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "daemon":
        from engine.server.main import run_daemon

        return run_daemon(args)
    return client.run(args)


if __name__ == "__main__":
    sys.exit(main())
