"""Resolving ``--user`` against a container's /etc/passwd and /etc/group, as runc does.

``user`` is ``name``, ``uid``, ``name:group`` or ``uid:gid``. The rules (and
error messages) are runc's ``GetExecUser`` and ``GetAdditionalGroups``:

* an empty user is root (uid 0, gid 0, home ``/``), refined by passwd's
  entry for uid 0 when there is one;
* a numeric user that passwd does not list is fine (gid 0, home ``/``); a
  name it does not list is ``unable to find user NAME: no matching entries
  in passwd file``;
* without an explicit group, the supplementary groups are every group of
  /etc/group that lists the user's name; with one, there are none;
* ``additional_groups`` (``--group-add``) are names or numbers added to those.

The functions read files by path: the native driver's init calls them after
pivot_root(2), so the paths are the container's; the lxc driver calls them
with the paths of the container's root file system on the host.
"""

from __future__ import annotations

from typing import NamedTuple

from engine.errors import InvalidParameter
from engine.utils.records import Record

__all__ = ["ExecUser", "GroupEntry", "PasswdEntry", "UserError", "parse_group", "parse_passwd", "resolve_user"]

MAX_ID = 2**31 - 1
_RANGE_ERROR = f"uids and gids must be in range 0-{MAX_ID}"


class UserError(InvalidParameter):
    """The user or a group cannot be resolved in the container."""


class PasswdEntry(NamedTuple):
    name: str
    uid: int
    gid: int
    home: str


class GroupEntry(NamedTuple):
    name: str
    gid: int
    members: tuple[str, ...]


class ExecUser(Record):
    """Who the process runs as."""

    uid: int = 0
    gid: int = 0
    home: str = "/"
    sgids: list[int] = []
    name: str = ""


def parse_passwd(text: str) -> list[PasswdEntry]:
    """``name:password:uid:gid:gecos:home:shell`` lines; blank, comment and malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < 4:
            continue
        try:
            uid, gid = int(parts[2]), int(parts[3])
        except ValueError:
            continue
        entries.append(PasswdEntry(parts[0], uid, gid, parts[5] if len(parts) > 5 else ""))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    """``name:password:gid:member,member`` lines; blank, comment and malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < 3:
            continue
        try:
            gid = int(parts[2])
        except ValueError:
            continue
        members = tuple(m for m in parts[3].split(",") if m) if len(parts) > 3 else ()
        entries.append(GroupEntry(parts[0], gid, members))
    return entries


def _read(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _number(text: str) -> int | None:
    if text.isdigit():
        return int(text)
    if text.startswith("-") and text[1:].isdigit():
        return int(text)
    return None


def resolve_user(
    spec: str,
    passwd: str | None = "/etc/passwd",
    group: str | None = "/etc/group",
    additional_groups: list[str] | None = None,
) -> ExecUser:
    """Resolve ``spec`` against the passwd and group files at the given paths (missing files are empty).

    :raises UserError: with runc's message when a name cannot be resolved.
    """
    passwd_text, group_text = _read(passwd), _read(group)
    users = parse_passwd(passwd_text or "")
    groups = parse_group(group_text or "")
    user_arg, _, group_arg = spec.partition(":")
    uid_arg, gid_arg = _number(user_arg), _number(group_arg)
    result = ExecUser()

    if user_arg == "":
        matches = [u for u in users if u.uid == result.uid]
    elif uid_arg is not None:
        matches = [u for u in users if u.uid == uid_arg]
    else:
        matches = [u for u in users if u.name == user_arg]
    matched_name = ""
    if matches:
        first = matches[0]  # the first entry wins, even if more match
        matched_name = first.name
        result.uid, result.gid, result.home, result.name = first.uid, first.gid, first.home or "/", first.name
    elif user_arg != "":
        if uid_arg is None:
            raise UserError(f"unable to find user {user_arg}: no matching entries in passwd file")
        if not 0 <= uid_arg <= MAX_ID:
            raise UserError(_RANGE_ERROR)
        result.uid = uid_arg

    if group_arg != "":
        if gid_arg is not None:
            found = [g for g in groups if g.gid == gid_arg]
        else:
            found = [g for g in groups if g.name == group_arg]
        if found:
            result.gid = found[0].gid
        else:
            if gid_arg is None:
                raise UserError(f"unable to find group {group_arg}: no matching entries in group file")
            if not 0 <= gid_arg <= MAX_ID:
                raise UserError(_RANGE_ERROR)
            result.gid = gid_arg
    elif matched_name:
        result.sgids = [g.gid for g in groups if matched_name in g.members]

    for extra in additional_groups or []:
        found = [g for g in groups if g.name == extra or str(g.gid) == extra]
        if found:
            gid = found[0].gid
        else:
            number = _number(extra)
            if number is None:
                raise UserError(f"Unable to find group {extra}: no matching entries in group file")
            if not 0 <= number <= MAX_ID:
                raise UserError(_RANGE_ERROR)
            gid = number
        if gid not in result.sgids:
            result.sgids.append(gid)
    return result
