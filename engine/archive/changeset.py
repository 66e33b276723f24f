"""A layer's changes against its parent: :class:`Change`, :class:`ChangeKind` and how they are found.

:func:`changes` compares two trees (moby's ``ChangesDirs``), the way every
graph driver without a native differ finds what a layer adds, modifies and
deletes; :func:`entry_differs` is its rule for one entry, for drivers that
know which entries to compare without walking whole trees (an aufs branch,
an overlay upper directory); :func:`changes_size` sums what the changes add.
``docker diff`` shows the result; :func:`engine.archive.export.export_changes`
turns it into a layer tar.
"""

from __future__ import annotations

import enum
import logging
import os
import posixpath
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from engine.archive.whiteouts import content_xattrs
from engine.sys import fs

LOG = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ChangeKind(enum.IntEnum):
    """Docker's change types (``archive.ChangeType``)."""

    MODIFY = 0
    ADD = 1
    DELETE = 2


@dataclass(frozen=True, order=True)
class Change:
    """One path changed in a layer relative to its parent."""

    path: str
    kind: ChangeKind

    def __str__(self) -> str:
        return f"{'CAD'[self.kind]} {self.path}"


class _Node:
    """What :func:`changes` compares of one entry (moby's ``FileInfo``)."""

    __slots__ = ("children", "gid", "mode", "mtime", "rdev", "size", "target", "uid", "xattrs")

    def __init__(self, st: os.stat_result, target: str | None, xattrs: dict[str, bytes]) -> None:
        self.mode = st.st_mode
        self.uid = st.st_uid
        self.gid = st.st_gid
        self.rdev = st.st_rdev
        self.size = st.st_size
        self.mtime = st.st_mtime_ns
        self.target = target
        self.xattrs = xattrs
        self.children: dict[str, _Node] | None = {} if stat.S_ISDIR(st.st_mode) else None


def _scan(root: str) -> _Node:
    """The tree below ``root`` as :class:`_Node` objects, read through directory fds.

    Depth first with one open fd per level, so wide directories cost no fds.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    top = _Node(os.fstat(fd), None, content_xattrs(fd))
    stack: list[tuple[int, Iterator[str], _Node]] = [(fd, iter(os.listdir(fd)), top)]
    try:
        while stack:
            dir_fd, names, node = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                os.close(dir_fd)
                continue
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            target = os.readlink(name, dir_fd=dir_fd) if stat.S_ISLNK(st.st_mode) else None
            child = _Node(st, target, content_xattrs(fs.at_path(dir_fd, name)))
            assert node.children is not None
            node.children[name] = child
            if child.children is not None:
                child_fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                stack.append((child_fd, iter(os.listdir(child_fd)), child))
    finally:
        for dir_fd, _, _ in stack:
            os.close(dir_fd)
    return top


def _same_time(a: int, b: int) -> bool:
    """moby's ``sameFsTime``: equal, or equal seconds when one side has no nanoseconds.

    Tars carry whole seconds and some file systems do too; such a file is
    not "modified" only because its twin has nanoseconds.
    """
    if a == b:
        return True
    sa, na = divmod(a, 1_000_000_000)
    sb, nb = divmod(b, 1_000_000_000)
    return sa == sb and (na == 0 or nb == 0)


def _differs(old: _Node, new: _Node) -> bool:
    if (old.mode, old.uid, old.gid, old.rdev, old.target, old.xattrs) != (
        new.mode,
        new.uid,
        new.gid,
        new.rdev,
        new.target,
        new.xattrs,
    ):
        return True
    # A directory's size and mtime change whenever an entry is added; they
    # say nothing (moby#9874).
    if stat.S_ISDIR(new.mode):
        return False
    return old.size != new.size or not _same_time(old.mtime, new.mtime)


def path_key(path: str) -> list[str]:
    """Sort key giving depth-first order with sorted names (a directory before its entries)."""
    return path.split("/")


def entry_differs(old: str, new: str) -> bool:
    """Whether the entry ``new`` is modified relative to ``old``, by the rule of :func:`changes`.

    Neither path is followed if it is a symlink. For drivers that find a
    layer's changes without comparing whole trees (an aufs branch against
    the branches below it).
    """
    nodes = []
    for path in (old, new):
        st = os.lstat(path)
        target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
        nodes.append(_Node(st, target, content_xattrs(path)))
    return _differs(nodes[0], nodes[1])


def changes(layer_dir: str, parent_dir: str | None) -> list[Change]:
    """What ``layer_dir`` adds, modifies and deletes relative to ``parent_dir`` (moby's ``ChangesDirs``).

    An entry is modified when its type, mode, owner, device number, symlink
    target or xattrs differ, or, for non-directories, its size or mtime. A
    directory holding changes is reported modified too (so that its metadata
    travels with them); an entry replaced by a non-directory takes its old
    contents with it silently. With no parent everything is added. The root
    is never reported.

    :returns: changes with paths like ``/etc/passwd``, sorted depth first.
    """
    new_root = _scan(layer_dir)
    old_root = _scan(parent_dir) if parent_dir is not None else None
    found: dict[str, ChangeKind] = {}
    stack: list[tuple[_Node, _Node | None, str]] = [(new_root, old_root, "")]
    while stack:
        new, old, path = stack.pop()
        if new.children is None:
            continue
        old_children = old.children if old is not None and old.children is not None else {}
        for name, child in new.children.items():
            child_path = f"{path}/{name}"
            before = old_children.get(name)
            if before is None:
                found[child_path] = ChangeKind.ADD
            elif _differs(before, child):
                found[child_path] = ChangeKind.MODIFY
            stack.append((child, before, child_path))
        for name in old_children.keys() - new.children.keys():
            found[f"{path}/{name}"] = ChangeKind.DELETE
    for path in list(found):
        parent = posixpath.dirname(path)
        while parent != "/" and parent not in found:
            found[parent] = ChangeKind.MODIFY
            parent = posixpath.dirname(parent)
    return [Change(path, found[path]) for path in sorted(found, key=path_key)]


def changes_size(layer_dir: str, changes: Iterable[Change]) -> int:
    """Bytes that added and modified non-directories take in ``layer_dir`` (moby's ``ChangesSize``).

    A file with several hard links among the changes counts once.
    """
    size = 0
    seen: set[tuple[int, int]] = set()
    for change in changes:
        if change.kind == ChangeKind.DELETE:
            continue
        try:
            st = os.lstat(os.path.join(layer_dir, change.path.lstrip("/")))
        except OSError as exc:
            LOG.error("cannot stat %s: %s", change.path, exc)
            continue
        if stat.S_ISDIR(st.st_mode):
            continue
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
        size += st.st_size
    return size
