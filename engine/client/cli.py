"""The ``engine`` command: the client (seed ch. 2), and ``engine -d`` the daemon.

The client is built on docker-py's low-level ``APIClient``: global flags
(``-H``, TLS, ``-D``) make the connection, then the first word picks the
command, as ``docker`` does. Commands live in modules under
:mod:`engine.client.commands`; each module has a ``register(sub)`` function
adding its sub-parsers, whose ``func`` default runs the command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import engine
from engine.client.errors import ClientError
from engine.daemon.config import DEFAULT_HOST, add_daemon_arguments

#: Command modules, in the order their commands appear in ``--help``.
COMMAND_MODULES: tuple[str, ...] = (
    "engine.client.commands.system",
    "engine.client.commands.containers",
    "engine.client.commands.images",
    "engine.client.commands.build",
    "engine.client.commands.registry",
    "engine.client.commands.volumes",
    "engine.client.commands.networks",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        if self.prog == "engine" and "invalid choice" in message:
            word = message.split("invalid choice: ", 1)[1].split(" ", 1)[0].strip("'")
            self.print_help(sys.stderr)
            self.exit(1, f"\nengine: '{word}' is not an engine command.\nSee 'engine --help'.\n")
        self.print_usage(sys.stderr)
        self.exit(125 if self.prog != "engine" else 1, f"{self.prog}: {message}\nSee '{self.prog} --help'.\n")


def _cert_path() -> str:
    return os.environ.get("DOCKER_CERT_PATH") or os.path.join(os.path.expanduser("~"), ".docker")


def build_parser(commands: bool = True) -> argparse.ArgumentParser:
    """The ``engine`` parser; ``commands=False`` leaves out the client's
    commands (``engine -d`` needs none of their imports)."""
    parser = _Parser(
        prog="engine",
        description="A Linux container engine. Without a command: the daemon with -d, else this help.",
        epilog="Run 'engine COMMAND --help' for more information on a command.",
    )
    parser.add_argument("-d", "--daemon", action="store_true", help="run the daemon (same as 'engine daemon')")
    parser.add_argument(
        "-H",
        "--host",
        action="append",
        default=None,
        metavar="ADDR",
        help=f"daemon socket to connect to (default $DOCKER_HOST or {DEFAULT_HOST})",
    )
    parser.add_argument("-D", "--debug", action="store_true", help="debug output")
    parser.add_argument("--tls", action="store_true", help="use TLS; implied by --tlsverify")
    parser.add_argument(
        "--tlsverify",
        action="store_true",
        default=bool(os.environ.get("DOCKER_TLS_VERIFY")),
        help="use TLS and verify the remote",
    )
    parser.add_argument(
        "--tlscacert", default=os.path.join(_cert_path(), "ca.pem"), help="trust certs signed only by this CA"
    )
    parser.add_argument(
        "--tlscert", default=os.path.join(_cert_path(), "cert.pem"), help="path to TLS certificate file"
    )
    parser.add_argument("--tlskey", default=os.path.join(_cert_path(), "key.pem"), help="path to TLS key file")
    parser.add_argument("-v", "--version", action="store_true", help="print version information and quit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    daemon = sub.add_parser("daemon", help="run the daemon")
    add_daemon_arguments(daemon)
    daemon.set_defaults(func=None)
    for modname in COMMAND_MODULES if commands else ():
        importlib.import_module(modname).register(sub)
    return parser


def make_client(args: argparse.Namespace) -> Any:
    """An ``APIClient`` for the address and TLS settings in ``args``."""
    import docker

    hosts = args.host or [os.environ.get("DOCKER_HOST") or DEFAULT_HOST]
    if len(hosts) > 1:
        raise ClientError("please specify only one -H")
    base_url = hosts[0]
    tls: Any = False
    if args.tls or args.tlsverify:
        tls = docker.tls.TLSConfig(
            client_cert=(args.tlscert, args.tlskey) if os.path.exists(args.tlscert) else None,
            ca_cert=args.tlscacert if args.tlsverify else None,
            verify=args.tlsverify,
        )
        if base_url.startswith("tcp://"):
            base_url = "https://" + base_url[len("tcp://") :]
    try:
        return docker.APIClient(base_url=base_url, version=engine.API_VERSION, tls=tls, timeout=None)
    except docker.errors.DockerException as exc:
        raise ClientError(str(exc)) from None


def _split_daemon_argv(argv: list[str]) -> list[str] | None:
    """``engine -d FLAGS`` / ``engine --daemon FLAGS`` -> the daemon's FLAGS."""
    for flag in ("-d", "--daemon"):
        if flag in argv:
            i = argv.index(flag)
            if not any(not a.startswith("-") for a in argv[:i]):
                return argv[:i] + argv[i + 1 :]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    daemon_argv = _split_daemon_argv(argv)
    if daemon_argv is not None:
        argv = ["daemon", *daemon_argv]
    parser = build_parser(commands=not argv or argv[0] != "daemon")
    args = parser.parse_args(argv)
    if args.version:
        print(f"engine version {engine.__version__}, API {engine.API_VERSION}")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "daemon":
        from engine.server.main import run_daemon

        return run_daemon(args)
    import docker
    import requests

    try:
        client = make_client(args)
        return int(args.func(client, args) or 0)
    except ClientError as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return exc.status
    except docker.errors.APIError as exc:
        msg = exc.explanation or str(exc)
        print(f"Error response from daemon: {msg}", file=sys.stderr)
        return 1
    except requests.exceptions.ConnectionError:
        where = args.host[0] if args.host else os.environ.get("DOCKER_HOST") or DEFAULT_HOST
        print(f"Cannot connect to the engine daemon at {where}. Is the engine daemon running?", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
