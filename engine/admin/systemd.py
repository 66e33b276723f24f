"""``engine-admin install-systemd``: install the systemd units shipped with the package.

The units are package data (``engine/admin/units/engine.service`` and
``engine.socket``), written for an engine installed under ``/usr``; a
package that installs the engine there can copy them as they are. This
command writes them with ``ExecStart`` pointing at the ``engine`` of the
environment it runs from (a virtualenv, ``/usr/local``) or of ``--prefix``,
and the socket's group set to ``--group``; with ``--create-group`` it adds
that group (``groupadd --system``) when it does not exist. ``--root``
installs into another root file system (an image being built, a test):
the units go to ``ROOT/DEST`` and the group into ``ROOT/etc/group``.

It does not start anything: it says what to run (``systemctl
daemon-reload``, ``systemctl enable --now engine.socket engine.service``).
"""

from __future__ import annotations

import argparse
import grp
import os
import re
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from importlib import resources

from engine.errors import InvalidParameter
from engine.sys.fs import atomic_write

UNITS = ("engine.service", "engine.socket")
#: Where an administrator's units go (a package's go to /lib/systemd/system).
DEFAULT_DEST = "/etc/systemd/system"
#: The engine the shipped units start.
SHIPPED_ENGINE = "/usr/bin/engine"
DEFAULT_GROUP = "engine"


def shipped_unit(name: str) -> str:
    """The text of a unit as shipped in the package."""
    return resources.files("engine.admin").joinpath("units", name).read_text(encoding="utf-8")


def default_prefix() -> str:
    """The prefix of the environment this runs from: its ``bin/engine`` is the one to start."""
    return os.path.dirname(sysconfig.get_path("scripts"))


def render(name: str, engine: str, group: str = DEFAULT_GROUP) -> str:
    """A unit with ``ExecStart`` starting ``engine`` and the socket owned by ``group``."""
    text = shipped_unit(name)
    if name == "engine.service":
        text, count = re.subn(
            rf"^ExecStart={re.escape(SHIPPED_ENGINE)} ", f"ExecStart={engine} ", text, flags=re.MULTILINE
        )
        assert count == 1, "the shipped engine.service has one ExecStart"
    elif name == "engine.socket":
        text = re.sub(r"^SocketGroup=.*$", f"SocketGroup={group}", text, flags=re.MULTILINE)
    return text


@dataclass
class Installed:
    """What :func:`install` did."""

    units: list[str]
    engine: str
    group_created: bool


def _valid_group(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", name):
        raise InvalidParameter(f"invalid group name {name!r}")
    return name


def group_exists(name: str, root: str = "/") -> bool:
    """Whether ``name`` is in ``ROOT/etc/group`` (the system's own database for ``/``)."""
    if os.path.realpath(root) == "/":
        try:
            grp.getgrnam(name)
        except KeyError:
            return False
        return True
    try:
        with open(os.path.join(root, "etc", "group"), encoding="utf-8") as fh:
            return any(line.split(":", 1)[0] == name for line in fh)
    except FileNotFoundError:
        return False


def create_group(name: str, root: str = "/") -> bool:
    """Add the system group ``name`` unless it exists; whether it was added.

    :raises InvalidParameter: ``groupadd`` failed (its words).
    """
    if group_exists(name, root):
        return False
    argv = ["groupadd", "--system", name]
    if os.path.realpath(root) != "/":
        argv[1:1] = ["--prefix", os.path.abspath(root)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise InvalidParameter("groupadd not found: create the group yourself or install the passwd package") from None
    if proc.returncode != 0:
        raise InvalidParameter(f"groupadd {name}: {proc.stderr.strip() or f'exit status {proc.returncode}'}")
    return True


def install(
    dest: str = DEFAULT_DEST,
    prefix: str | None = None,
    root: str = "/",
    group: str = DEFAULT_GROUP,
    make_group: bool = False,
) -> Installed:
    """Write the units (atomically) and, if asked, create the socket's group.

    :param dest: the unit directory, inside ``root``.
    :param prefix: ``ExecStart`` runs ``PREFIX/bin/engine``; default: this environment's.
    :param root: the root file system to install into.
    :param group: the group of the API socket.
    :param make_group: create ``group`` when it does not exist.
    :raises InvalidParameter: no engine at the prefix, a bad group name, groupadd failed.
    """
    group = _valid_group(group)
    prefix = os.path.abspath(prefix or default_prefix())
    engine = os.path.join(prefix, "bin", "engine")
    # The engine runs in the root the units are for.
    if not os.access(os.path.join(root, engine.lstrip("/")), os.X_OK):
        raise InvalidParameter(f"no engine executable at {engine}: give the install's --prefix")
    created = create_group(group, root) if make_group else False
    directory = os.path.join(root, dest.lstrip("/"))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    written = []
    for name in UNITS:
        path = os.path.join(directory, name)
        atomic_write(path, render(name, engine, group).encode(), mode=0o644)
        written.append(path)
    return Installed(written, engine, created)


def main(args: argparse.Namespace) -> int:
    """The ``install-systemd`` subcommand (arguments from :mod:`engine.admin.cli`)."""
    done = install(args.dest, args.prefix, args.root, args.group, args.create_group)
    for path in done.units:
        print(f"wrote {path}")
    print(f"ExecStart runs {done.engine}")
    if done.group_created:
        print(f"created the group {args.group}")
    elif not group_exists(args.group, args.root):
        print(
            f"warning: the group {args.group} does not exist, so the socket cannot start "
            "(use --create-group, or --group with an existing group)",
            file=sys.stderr,
        )
    if os.path.realpath(args.root) == "/":
        print("now run: systemctl daemon-reload && systemctl enable --now engine.socket engine.service")
    return 0
