"""The ``engine`` client (seed ch. 2): its global flags, its commands, and running one.

The client is built on docker-py's low-level ``APIClient`` and talks to the
daemon over its API only: global flags (``-H``, TLS, ``-D``) make the
connection, then the first word picks the command, as ``docker`` does.
Commands live in modules under :mod:`engine.client.commands`; each module
has a ``register(sub)`` function adding its sub-parsers, whose ``func``
default runs the command. The ``engine`` program itself (which also starts
the daemon) is :mod:`engine.cli`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, NoReturn

import engine
from engine import DEFAULT_HOST
from engine.client.errors import ClientError

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


class Parser(argparse.ArgumentParser):
    """argparse with the docker CLI's words and exit statuses for a bad command line."""

    def error(self, message: str) -> NoReturn:  # noqa: D401 - argparse API
        if self.prog == "engine" and "invalid choice" in message:
            word = message.split("invalid choice: ", 1)[1].split(" ", 1)[0].strip("'")
            self.print_help(sys.stderr)
            self.exit(1, f"\nengine: '{word}' is not an engine command.\nSee 'engine --help'.\n")
        self.print_usage(sys.stderr)
        self.exit(125 if self.prog != "engine" else 1, f"{self.prog}: {message}\nSee '{self.prog} --help'.\n")


def _cert_path() -> str:
    return os.environ.get("DOCKER_CERT_PATH") or os.path.join(os.path.expanduser("~"), ".docker")


def add_global_arguments(parser: argparse.ArgumentParser) -> None:
    """The client's global flags: the daemon's address, TLS, debug output."""
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


def register_commands(sub: Any) -> None:
    """Add every command's sub-parser to ``sub`` (``add_subparsers``), in ``--help`` order."""
    for modname in COMMAND_MODULES:
        importlib.import_module(modname).register(sub)


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
        # timeout=None: no time limit on streams (attach, logs -f, events); the stubs allow ints only.
        return docker.APIClient(base_url=base_url, version=engine.CLIENT_API_VERSION, tls=tls, timeout=None)  # type: ignore[arg-type]
    except docker.errors.DockerException as exc:
        raise ClientError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """Run the command ``args`` were parsed for; its exit status, with docker's words for what failed."""
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
