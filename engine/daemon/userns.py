"""``--userns-remap``: the user namespace the daemon's containers run in, as dockerd sets it up.

The option names whose subordinate IDs the containers get (moby
``daemon/daemon_unix.go`` ``parseRemappedRoot`` and ``idtools``):

* ``default``: the ``dockremap`` user and group (dockerd's name, so the
  engine and dockerd on one host share them), created when missing with
  ``useradd --system`` and given a free range of 65536 IDs from 100000 on in
  ``/etc/subuid`` and ``/etc/subgid`` (``usermod --add-subuids/--add-subgids``);
* ``USER`` or ``USER:GROUP``, names or numeric IDs; a numeric user alone
  stands for the group of the same number, a name alone for the group of the
  same name. The user and group must exist.

The map lays the user's ranges end to end from container ID 0: those of
``/etc/subuid`` for user IDs and of ``/etc/subgid`` for group IDs, both
looked up by the *user's* name or UID, as dockerd does. The container's root
is the first range's start on the host. The daemon's state then lives in
``<root>/<uid>.<gid>`` (those host IDs), and layers, volumes and the files
bound into containers are owned by the remapped IDs.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import subprocess

from engine.errors import InvalidParameter
from engine.utils.idmap import IDMap, etc_path, read_subids

LOG = logging.getLogger(__name__)

__all__ = ["DEFAULT_USER", "RANGE_SIZE", "RANGE_START", "Remap", "remapped_root", "setup"]

#: The user (and group) ``--userns-remap default`` uses, dockerd's.
DEFAULT_USER = "dockremap"
#: Where a created user's ranges start, and their size (dockerd's choice).
RANGE_START, RANGE_SIZE = 100000, 65536


class Remap:
    """The resolved option: the user and group names and the ID map.

    :param user: the user whose subordinate IDs are used.
    :param group: the group.
    :param idmap: the uid and gid maps of every remapped container.
    """

    def __init__(self, user: str, group: str, idmap: IDMap) -> None:
        self.user = user
        self.group = group
        self.idmap = idmap

    def __repr__(self) -> str:
        return f"Remap({self.user}:{self.group}, root={self.idmap.root_uid}:{self.idmap.root_gid})"


def _bad(spec: str) -> InvalidParameter:
    return InvalidParameter(f"the --userns-remap option has invalid format: {spec}")


def _is_id(text: str) -> bool:
    return text.isdigit() and int(text) < 2**31


def resolve_names(spec: str, create: bool = True, etc: str = "/etc") -> tuple[str, str]:
    """The user and group names ``spec`` stands for (moby ``parseRemappedRoot``, with its words).

    :param create: create ``dockremap`` for ``default`` when it is missing.
    :raises InvalidParameter: a malformed spec, a user or group that does not exist.
    """
    parts = spec.split(":")
    if not spec or len(parts) > 2 or not all(parts):
        raise _bad(spec)
    user_part = parts[0]
    if _is_id(user_part):
        uid = int(user_part)
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            raise InvalidParameter(f"Uid {uid} has no entry in /etc/passwd") from None
        group_part = parts[1] if len(parts) == 2 else user_part
    else:
        lookup = DEFAULT_USER if user_part == "default" else user_part
        try:
            user = pwd.getpwnam(lookup).pw_name
        except KeyError:
            if user_part != "default":
                raise InvalidParameter(f'Error during uid lookup for "{lookup}": user not found') from None
            if not create:
                raise InvalidParameter(f'Error during uid lookup for "{lookup}": user not found') from None
            create_default_user(etc)
            return DEFAULT_USER, DEFAULT_USER
        group_part = parts[1] if len(parts) == 2 else lookup
    if _is_id(group_part):
        try:
            group = grp.getgrgid(int(group_part)).gr_name
        except KeyError:
            raise InvalidParameter(f"Gid {group_part} has no entry in /etc/group") from None
    else:
        try:
            group = grp.getgrnam(group_part).gr_name
        except KeyError:
            raise InvalidParameter(f'Error during gid lookup for "{group_part}": group not found') from None
    return user, group


def _taken(etc: str) -> list[tuple[int, int]]:
    """Every ``(start, count)`` in ``/etc/subuid`` and ``/etc/subgid``, whoever has it."""
    out = []
    for name in ("subuid", "subgid"):
        try:
            with open(etc_path(etc, name), encoding="utf-8") as fh:
                for line in fh:
                    parts = line.strip().split(":")
                    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                        out.append((int(parts[1]), int(parts[2])))
        except FileNotFoundError:
            continue
    return out


def free_range(taken: list[tuple[int, int]], start: int = RANGE_START, size: int = RANGE_SIZE) -> int:
    """The first start from ``start`` on, in steps of ``size``, whose range overlaps none of ``taken``."""
    candidate = start
    while any(candidate < s + n and s < candidate + size for s, n in taken):
        candidate += size
    return candidate


def create_default_user(etc: str = "/etc") -> None:
    """Create ``dockremap`` (user and group) and give it subordinate IDs, as dockerd does.

    :raises InvalidParameter: ``useradd`` or ``usermod`` failed (their words).
    """
    LOG.info("creating the %s user and group for --userns-remap default", DEFAULT_USER)
    _run(["useradd", "--system", "--shell", "/bin/false", "--no-create-home", "--user-group", DEFAULT_USER])
    start = free_range(_taken(etc))
    span = f"{start}-{start + RANGE_SIZE - 1}"
    _run(["usermod", "--add-subuids", span, "--add-subgids", span, DEFAULT_USER])


def _run(argv: list[str]) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise InvalidParameter(f'Error during "{DEFAULT_USER}" user creation: {argv[0]}: {exc}') from None
    if proc.returncode != 0:
        raise InvalidParameter(
            f'Error during "{DEFAULT_USER}" user creation: {" ".join(argv)}: {proc.stderr.strip() or proc.returncode}'
        )


def setup(spec: str, etc: str = "/etc") -> Remap:
    """Resolve ``--userns-remap`` into a :class:`Remap` (creating ``dockremap`` for ``default``).

    :raises InvalidParameter: a malformed spec, an unknown user or group, no subordinate IDs.
    """
    user, group = resolve_names(spec, etc=etc)
    uid = str(pwd.getpwnam(user).pw_uid)
    uid_ranges = read_subids(etc_path(etc, "subuid"), (user, uid))
    if not uid_ranges:
        raise InvalidParameter(f'No subuid ranges found for user "{user}"')
    # dockerd looks both files up by the user's name (moby idtools.LoadIdentityMapping).
    gid_ranges = read_subids(etc_path(etc, "subgid"), (user, uid))
    if not gid_ranges:
        raise InvalidParameter(f'No subgid ranges found for user "{user}"')
    return Remap(user, group, IDMap.from_subids(uid_ranges, gid_ranges))


def remapped_root(root: str, remap: Remap) -> str:
    """Make ``<root>/<uid>.<gid>`` (the container root's host IDs) and return it.

    As dockerd: ``<root>`` is 0711, and the remapped root 0710, owned by
    root and the remapped group, so the remapped root can reach what is
    bound into its containers and nothing else can list it.
    """
    idmap = remap.idmap
    os.makedirs(root, mode=0o711, exist_ok=True)
    os.chmod(root, 0o711)
    path = os.path.join(root, f"{idmap.root_uid}.{idmap.root_gid}")
    os.makedirs(path, mode=0o710, exist_ok=True)
    os.chown(path, 0, idmap.root_gid)
    os.chmod(path, 0o710)
    return path
