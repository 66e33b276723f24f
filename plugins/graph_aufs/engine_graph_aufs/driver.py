"""The aufs graph driver: each layer is an aufs branch, a container's tree the union of its chain.

On disk, in the driver's home ``<root>/aufs`` (seed ch. 11 §4, moby's
``daemon/graphdriver/aufs``)::

    <home>/                        0700
      layers/                      0700
        <id>                       the layer's parent chain, one ID a line,
                                   nearest parent first (empty for a base
                                   layer); written last by create, so it is
                                   what makes a layer exist
      diff/                        0700
        <id>/                      0755, the layer's own changes as aufs
                                   stores them: added and modified entries,
                                   ``.wh.<name>`` for a deleted entry,
                                   ``.wh..wh..opq`` in a directory that hides
                                   everything below it, and aufs' bookkeeping
                                   (``.wh..wh.aufs``, ``.wh..wh.plnk``,
                                   ``.wh..wh.orph``) at the top
        .rm-<id>-<random>/         a layer being removed (renamed first, so it
                                   is gone at once; swept at start)
      mnt/                         0700
        <id>/                      0755, where the union of a layer with
                                   parents is mounted
        .rm-<id>-<random>/         as in diff/

:meth:`AufsDriver.get` of a layer with parents mounts aufs on ``mnt/<id>``
with ``diff/<id>`` as the one writable branch over its parents' diff
directories, nearest first (aufs(5): ``ro+wh`` is a read-only branch whose
whiteouts still hide what lies below)::

    mount("none", "<home>/mnt/<id>", "aufs", 0,
          "br:<home>/diff/<id>=rw:<home>/diff/<p1>=ro+wh:...:<home>/diff/<pN>=ro+wh,"
          "dio,xino=/dev/shm/aufs.xino")

``dio`` lets O_DIRECT through to the branches; ``xino`` puts aufs' inode
number table on tmpfs rather than in the first writable branch. mount(2)
copies at most one page of options, so a long chain is mounted with the
branches that fit and the rest are added with ``MS_REMOUNT`` and
``append:<dir>=ro+wh`` options, a page at a time (:func:`mount_plan`), as
moby does. A base layer (no parents) is not mounted at all: ``get`` hands
out ``diff/<id>`` itself, as the seed's ``Get`` does. Mounts are reference
counted per layer under one lock (seed ch. 11 §4.2): the first ``get``
mounts, the last ``put`` unmounts.

The differ is native for a layer against its real parent: ``diff/<id>``
already holds the layer's changes in the layer-tar format, so a diff is a tar
of it (whiteouts included, aufs' bookkeeping left out), a layer tar is
unpacked into it with its whiteouts kept as files, and sizes and changes are
read from it and from the branches below, without mounting anything. Against
any other layer the naive differ compares mounted trees.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import secrets
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, NamedTuple

from engine import archive
from engine.archive import Change, ChangeKind
from engine.drivers.graph import NaiveDiffDriver, validate_id
from engine.errors import (
    Conflict,
    EngineError,
    HostError,
    IncompatibleFilesystem,
    InvalidParameter,
    NotFound,
    NotSupported,
    PrerequisitesNotMet,
)
from engine.sys import fs, libc, proc

LOG = logging.getLogger(__name__)

#: mount(2) as :func:`engine.sys.libc.mount` takes it: source, target, fstype, flags, data.
MountFunction = Callable[[str, str, str, int, str], None]
#: umount2(2) as :func:`engine.sys.libc.umount2` takes it: target, flags.
UnmountFunction = Callable[[str, int], None]

#: The options after the branches, as moby mounts aufs.
MOUNT_OPTIONS = "dio,xino=/dev/shm/aufs.xino"
#: The probe's reason on a kernel without aufs (the conformance suite skips with it).
NOT_SUPPORTED_REASON = "aufs is not supported by the kernel (not in /proc/filesystems)"
#: Backing file systems moby refuses for aufs (``ErrIncompatibleFS``): aufs
#: cannot take a branch on aufs itself, and aufs over btrfs and over ecryptfs
#: broke in ways moby chose to refuse rather than support.
INCOMPATIBLE_FILESYSTEMS = ("aufs", "btrfs", "ecryptfs")
#: aufs' option syntax: ``:`` separates branches, ``,`` options, ``=`` a
#: branch from its permission. A home whose path holds one cannot be mounted.
_SEPARATORS = (":", ",", "=")

_FILESYSTEMS = "/proc/filesystems"
_MODPROBE = "/sbin/modprobe"
_RM_PREFIX = ".rm-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: moby retries an unmount that finds the mount busy this often, 100 ms apart.
_BUSY_RETRIES = 5


# --------------------------------------------------------------------------
# host checks


def aufs_supported(filesystems: str = _FILESYSTEMS, modprobe: str = _MODPROBE) -> bool:
    """Whether the kernel has the aufs file system, loading its module first if needed.

    Like moby, ``modprobe aufs`` is tried when aufs is not listed yet (only
    if ``modprobe`` exists; its failure only means "no"), then the list of
    file systems is read again.

    :param filesystems: the kernel's list of file systems (proc(5)).
    :param modprobe: the modprobe binary.
    """
    if _listed(filesystems):
        return True
    if not os.path.exists(modprobe):
        return False
    try:
        done = subprocess.run([modprobe, "aufs"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        LOG.debug("aufs: %s aufs failed: %s", modprobe, exc)
        return False
    if done.returncode:
        LOG.debug("aufs: %s aufs exited %d: %s", modprobe, done.returncode, done.stderr.decode(errors="replace"))
    return _listed(filesystems)


def _listed(filesystems: str) -> bool:
    """Whether ``aufs`` is a file system type in ``filesystems`` (lines of ``[nodev]<TAB>name``)."""
    try:
        with open(filesystems, encoding="ascii", errors="replace") as f:
            return any(line.split()[-1:] == ["aufs"] for line in f)
    except FileNotFoundError:
        return False


def _in_user_namespace(uid_map: str = "/proc/self/uid_map") -> bool:
    """Whether this process runs in a user namespace other than the initial one."""
    try:
        with open(uid_map, encoding="ascii") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except FileNotFoundError:
        return False


def check_backing_filesystem(home: str) -> str:
    """Refuse a home on a file system aufs cannot use; return the file system's name.

    Looks at ``home`` if it exists, else at its nearest existing ancestor
    (the probe must not create it), as moby does.

    :raises IncompatibleFilesystem: on aufs, btrfs or ecryptfs.
    """
    path = os.path.abspath(home)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    fstype = fs.backing_filesystem(path)
    if fstype in INCOMPATIBLE_FILESYSTEMS:
        raise IncompatibleFilesystem(f"aufs cannot run on top of {fstype} ({path} is on {fstype})")
    return fstype


def _check_options(options: Sequence[str]) -> None:
    for option in options:
        raise InvalidParameter(f"aufs: unknown storage option {option!r} (aufs takes none)")


# --------------------------------------------------------------------------
# the mount


class MountCall(NamedTuple):
    """One mount(2) call of a layer's mount; the target is the layer's ``mnt/<id>``."""

    source: str
    fstype: str
    flags: int
    data: str


def _branch(path: str) -> str:
    if any(c in path for c in _SEPARATORS):
        raise InvalidParameter(f"aufs: cannot use {path!r} as a branch: ':', ',' and '=' separate aufs options")
    return path


def mount_plan(branches: Sequence[str], mount_label: str = "", page_size: int | None = None) -> list[MountCall]:
    """The mount(2) calls that mount ``branches`` as one aufs (moby's ``aufsMount``).

    The first call mounts the writable branch and as many read-only ones as
    fit in one page of options, followed by :data:`MOUNT_OPTIONS`; each
    further call (``MS_REMOUNT``) appends as many of the remaining branches as
    fit in a page, ``append:<dir>=ro+wh`` each, comma separated. The kernel
    copies one page of mount data and aufs needs its terminating NUL inside
    it, so no data string is longer than ``page_size - 1`` bytes.

    :param branches: the layer's ``diff`` directory, then its parents',
        nearest first.
    :param mount_label: an SELinux context for the mount (``context="..."``
        is added to every call), or empty.
    :param page_size: defaults to the machine's.
    :raises InvalidParameter: for no branches, a branch path holding aufs'
        separators, or one too long to fit in a page.
    """
    if not branches:
        raise InvalidParameter("aufs: a mount needs at least one branch")
    if page_size is None:
        page_size = os.sysconf("SC_PAGE_SIZE")
    limit = page_size - 1
    label = f',context="{mount_label}"' if mount_label else ""
    tail = f",{MOUNT_OPTIONS}{label}"

    def fits(data: str, suffix: str) -> bool:
        return len(os.fsencode(data + suffix)) <= limit

    def too_long(path: str) -> InvalidParameter:
        return InvalidParameter(f"aufs: branch {path!r} is too long for a {page_size}-byte page of mount options")

    lower = [_branch(b) for b in branches[1:]]
    data = f"br:{_branch(branches[0])}=rw"
    if not fits(data, tail):
        raise too_long(branches[0])
    index = 0
    while index < len(lower) and fits(f"{data}:{lower[index]}=ro+wh", tail):
        data += f":{lower[index]}=ro+wh"
        index += 1
    calls = [MountCall("none", "aufs", 0, data + tail)]
    while index < len(lower):
        data = f"append:{lower[index]}=ro+wh"
        if not fits(data, label):
            raise too_long(lower[index])
        index += 1
        while index < len(lower) and fits(f"{data},append:{lower[index]}=ro+wh", label):
            data += f",append:{lower[index]}=ro+wh"
            index += 1
        calls.append(MountCall("none", "aufs", libc.MS_REMOUNT, data + label))
    return calls


def flush_and_unmount(target: str, flags: int = 0) -> None:
    """Unmount an aufs mount: ``auplink <target> flush`` (when installed), then umount2(2).

    aufs keeps hard links that were copied up as pseudo-links until they are
    flushed into the writable branch; moby runs aufs-tools' ``auplink`` before
    every unmount for that, and so does this. Without it (or for a lazy
    ``MNT_DETACH``) the unmount goes ahead and such links may be missing from
    the layer.

    :raises OSError: from umount2(2).
    """
    if not flags & libc.MNT_DETACH:
        auplink = shutil.which("auplink")
        if auplink is None:
            LOG.debug("aufs: auplink (aufs-tools) is not installed; not flushing pseudo-links of %s", target)
        else:
            try:
                done = subprocess.run([auplink, target, "flush"], capture_output=True, timeout=60, check=False)
                if done.returncode:
                    LOG.warning(
                        "aufs: auplink %s flush exited %d: %s",
                        target,
                        done.returncode,
                        done.stderr.decode(errors="replace").strip(),
                    )
            except (OSError, subprocess.SubprocessError) as exc:
                LOG.warning("aufs: auplink %s flush failed: %s", target, exc)
    libc.umount2(target, flags)


# --------------------------------------------------------------------------
# reading branches


class _LowerView:
    """The union of a layer's parent branches as aufs shows it, read without mounting.

    aufs' lookup rules (aufs(5)): branches are searched top down; a
    ``.wh.<name>`` in a branch hides ``name`` there and below; a non-directory
    hides everything below it; a directory continues into the branches below
    unless it holds ``.wh..wh..opq``. Only a path whose every ancestor was
    found to be a real directory in a branch is looked at in that branch, so
    a symlink inside a branch is never followed.

    :param branches: the parents' diff directories, nearest first.
    """

    def __init__(self, branches: Sequence[str]) -> None:
        self._branches = list(branches)
        self._dirs: dict[str, list[str]] = {}

    def dir_branches(self, rel: str) -> list[str]:
        """The branches whose directory ``rel`` shows in the union (empty if it is no directory there)."""
        found = self._dirs.get(rel)
        if found is not None:
            return found
        found = []
        if not rel:
            for branch in self._branches:
                found.append(branch)
                if os.path.lexists(os.path.join(branch, archive.WHITEOUT_OPAQUE)):
                    break
        else:
            parent, name = posixpath.split(rel)
            for branch in self.dir_branches(parent):
                if os.path.lexists(os.path.join(branch, parent, archive.WHITEOUT_PREFIX + name)):
                    break
                try:
                    st = os.lstat(os.path.join(branch, rel))
                except FileNotFoundError:
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    break
                found.append(branch)
                if os.path.lexists(os.path.join(branch, rel, archive.WHITEOUT_OPAQUE)):
                    break
        self._dirs[rel] = found
        return found

    def lookup(self, rel: str) -> str | None:
        """The path, in its branch, of the entry the union shows at ``rel``, or None."""
        parent, name = posixpath.split(rel)
        for branch in self.dir_branches(parent):
            if os.path.lexists(os.path.join(branch, parent, archive.WHITEOUT_PREFIX + name)):
                return None
            path = os.path.join(branch, rel)
            if os.path.lexists(path):
                return path
        return None

    def listdir(self, rel: str) -> set[str]:
        """The names the union shows in the directory ``rel`` (empty if it is no directory there)."""
        visible: set[str] = set()
        hidden: set[str] = set()
        for branch in self.dir_branches(rel):
            names = os.listdir(os.path.join(branch, rel))
            whiteouts = {
                n[len(archive.WHITEOUT_PREFIX) :]
                for n in names
                if n.startswith(archive.WHITEOUT_PREFIX) and not n.startswith(archive.WHITEOUT_META_PREFIX)
            }
            visible.update(
                n for n in names if not n.startswith(archive.WHITEOUT_PREFIX) and n not in hidden and n not in whiteouts
            )
            hidden |= whiteouts
        return visible


def _split_names(names: list[str]) -> tuple[list[str], set[str], bool]:
    """A branch directory's names as (entries, names whited out, opaque?); aufs' bookkeeping dropped."""
    entries: list[str] = []
    whiteouts: set[str] = set()
    opaque = False
    for name in names:
        if not name.startswith(archive.WHITEOUT_PREFIX):
            entries.append(name)
        elif name == archive.WHITEOUT_OPAQUE:
            opaque = True
        elif not archive.is_aufs_metadata(name):
            whiteouts.add(name[len(archive.WHITEOUT_PREFIX) :])
    return entries, whiteouts, opaque


def branch_changes(branch: str, lower: Sequence[str]) -> list[Change]:
    """What the union gains by putting ``branch`` on top of ``lower``, without mounting.

    The result is what :func:`engine.archive.changes` reports for the
    mounted tree against its parent's: an entry of the branch is added if the
    union below has nothing there and modified if it differs from what is
    there (:func:`engine.archive.entry_differs`); a whiteout deletes
    what it hides; in an opaque directory everything below that the branch
    does not have again is deleted; a directory holding changes is modified.

    :param branch: the layer's diff directory.
    :param lower: its parents' diff directories, nearest first.
    :returns: changes with paths like ``/etc/passwd``, sorted depth first.
    """
    view = _LowerView(lower)
    found: dict[str, ChangeKind] = {}
    stack: list[tuple[int, str, bool]] = [(os.open(branch, _DIR_FLAGS), "", False)]
    try:
        while stack:
            dir_fd, rel_dir, hidden = stack.pop()
            try:
                entries, whiteouts, opaque = _split_names(os.listdir(dir_fd))
                # Below an opaque directory nothing of the lower branches shows.
                hidden = hidden or opaque
                present = set(entries)
                if hidden:
                    gone = view.listdir(rel_dir) - present
                else:
                    # A whiteout of what is not there below deletes nothing.
                    gone = {
                        name for name in whiteouts - present if view.lookup(posixpath.join(rel_dir, name)) is not None
                    }
                for name in gone:
                    found[f"/{posixpath.join(rel_dir, name)}"] = ChangeKind.DELETE
                for name in entries:
                    rel = posixpath.join(rel_dir, name)
                    path = fs.at_path(dir_fd, name)
                    old = view.lookup(rel)
                    if old is None:
                        found[f"/{rel}"] = ChangeKind.ADD
                    elif archive.entry_differs(old, path):
                        found[f"/{rel}"] = ChangeKind.MODIFY
                    if stat.S_ISDIR(os.lstat(path).st_mode):
                        stack.append((os.open(name, _DIR_FLAGS, dir_fd=dir_fd), rel, hidden))
            finally:
                os.close(dir_fd)
    finally:
        for dir_fd, _, _ in stack:
            os.close(dir_fd)
    for path in list(found):
        parent = posixpath.dirname(path)
        while parent != "/" and parent not in found:
            found[parent] = ChangeKind.MODIFY
            parent = posixpath.dirname(parent)
    return [Change(path, found[path]) for path in sorted(found, key=archive.path_key)]


def branch_size(branch: str) -> int:
    """Bytes the non-directories of a branch take (hard links once; whiteouts and bookkeeping none)."""
    size = 0
    seen: set[tuple[int, int]] = set()
    stack = [os.open(branch, _DIR_FLAGS)]
    try:
        while stack:
            dir_fd = stack.pop()
            try:
                for name in os.listdir(dir_fd):
                    if name.startswith(archive.WHITEOUT_PREFIX):
                        continue
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(os.open(name, _DIR_FLAGS, dir_fd=dir_fd))
                        continue
                    if st.st_nlink > 1:
                        if (st.st_dev, st.st_ino) in seen:
                            continue
                        seen.add((st.st_dev, st.st_ino))
                    size += st.st_size
            finally:
                os.close(dir_fd)
    finally:
        for dir_fd in stack:
            os.close(dir_fd)
    return size


# --------------------------------------------------------------------------
# the driver


class AufsDriver(NaiveDiffDriver):
    """AUFS union mounts (Docker 1.2's default): needs the out-of-tree aufs kernel module.

    :param home: the driver's state directory, ``<root>/aufs``.
    :param options: ``--storage-opt`` values; aufs accepts none.
    :param mount: mount(2), called as :func:`engine.sys.libc.mount` is; the
        one place the kernel's aufs is reached, so tests on kernels without
        aufs can see what would be mounted.
    :param unmount: umount2(2), called as :func:`engine.sys.libc.umount2` is
        (the default flushes aufs' pseudo-links first, see
        :func:`flush_and_unmount`).
    """

    name = "aufs"

    def __init__(
        self,
        home: str,
        options: Sequence[str] = (),
        mount: MountFunction = libc.mount,
        unmount: UnmountFunction = flush_and_unmount,
    ) -> None:
        _check_options(options)
        super().__init__(os.path.abspath(home), options)
        self._layers = os.path.join(self.home, "layers")
        self._diff = os.path.join(self.home, "diff")
        self._mnt = os.path.join(self.home, "mnt")
        os.makedirs(self.home, 0o700, exist_ok=True)
        os.chmod(self.home, 0o700)
        for path in (self._layers, self._diff, self._mnt):
            os.makedirs(path, 0o700, exist_ok=True)
        self._mount_call = mount
        self._unmount_call = unmount
        #: Guards the reference counts, the mounts and the layers files (seed
        #: §4.2: one lock around the active map, mounting included).
        self._lock = threading.Lock()
        self._refs: dict[str, int] = {}
        self._mounted: set[str] = set()
        self._sweep()

    @classmethod
    def probe(cls, home: str, options: Sequence[str] = ()) -> None:
        """Check for aufs in the kernel (loading its module if possible) and a usable home.

        :raises NotSupported: without aufs in the kernel, in a user namespace,
            or for a home path that aufs' option syntax cannot carry.
        :raises IncompatibleFilesystem: for a home on aufs, btrfs or ecryptfs.
        :raises InvalidParameter: for any storage option.
        """
        _check_options(options)
        if not aufs_supported():
            raise NotSupported(NOT_SUPPORTED_REASON)
        if _in_user_namespace():
            raise NotSupported("aufs cannot be mounted in a user namespace other than the initial one")
        if any(c in os.path.abspath(home) for c in _SEPARATORS):
            raise NotSupported(f"aufs cannot mount branches below {home!r}: ':', ',' and '=' separate aufs options")
        check_backing_filesystem(home)

    # ---- paths and metadata

    def _layers_file(self, id: str) -> str:
        return os.path.join(self._layers, validate_id(id))

    def _diff_dir(self, id: str) -> str:
        return os.path.join(self._diff, validate_id(id))

    def _mnt_dir(self, id: str) -> str:
        return os.path.join(self._mnt, validate_id(id))

    def _exists(self, id: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(self._layers_file(id)).st_mode)
        except FileNotFoundError:
            return False

    def _chain(self, id: str) -> list[str]:
        """The parents of ``id`` from ``layers/<id>``, nearest first.

        :raises NotFound: if the layer does not exist.
        :raises HostError: if the file holds anything but layer IDs.
        """
        path = self._layers_file(id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"aufs: layer {id} does not exist") from None
        with os.fdopen(fd, "rb") as f:
            text = f.read().decode("ascii", errors="replace")
        chain = [line for line in text.split("\n") if line]
        for parent in chain:
            try:
                validate_id(parent)
            except InvalidParameter:
                raise HostError(f"aufs: {path} is corrupt: {parent!r} is not a layer ID") from None
        return chain

    def _children(self, id: str) -> list[str]:
        """Layers whose chain holds ``id`` (their mounts use its diff directory)."""
        children = []
        for name in sorted(os.listdir(self._layers)):
            if name == id or name.startswith("."):
                continue
            try:
                chain = self._chain(name)
            except (InvalidParameter, NotFound):
                continue  # not a layers file, or removed meanwhile
            if id in chain:
                children.append(name)
        return children

    def _sweep(self) -> None:
        """Remove what a crash left half removed."""
        for parent in (self._diff, self._mnt):
            for name in os.listdir(parent):
                if name.startswith(_RM_PREFIX):
                    LOG.info("aufs: removing leftover %s", os.path.join(parent, name))
                    fs.safe_rmtree(os.path.join(parent, name))

    @staticmethod
    def _is_mount_point(path: str) -> bool:
        real = os.path.realpath(path)
        return any(m.mount_point == real for m in proc.mountinfo())

    # ---- lifecycle

    def create(self, id: str, parent: str | None = None, mount_label: str = "") -> None:
        """Create ``diff/<id>`` and ``mnt/<id>``, then ``layers/<id>`` with ``parent`` and its chain.

        :raises Conflict: if ``id`` exists.
        :raises NotFound: if ``parent`` does not.
        """
        validate_id(id)
        if parent is not None:
            validate_id(parent)
        layers_file, diff, mnt = self._layers_file(id), self._diff_dir(id), self._mnt_dir(id)
        with self._lock:
            if self._exists(id):
                raise Conflict(f"aufs: layer {id} already exists")
            chain: list[str] = []
            if parent is not None:
                try:
                    chain = [parent, *self._chain(parent)]
                except NotFound:
                    raise NotFound(f"aufs: parent layer {parent} of {id} does not exist") from None
            for leftover in (diff, mnt):
                if os.path.lexists(leftover):
                    # Only a create cut short leaves these without layers/<id>.
                    LOG.warning("aufs: removing %s, left by an earlier create of %s", leftover, id)
                    fs.safe_rmtree(leftover)
            try:
                for path in (diff, mnt):
                    os.mkdir(path, 0o755)
                    os.chmod(path, 0o755)  # whatever the umask
                fs.atomic_write(layers_file, "".join(f"{p}\n" for p in chain).encode("ascii"), mode=0o644)
            except BaseException:
                for path in (diff, mnt):
                    fs.safe_rmtree(path)
                raise
        LOG.debug("aufs: created layer %s (%d parents)", id, len(chain))

    def remove(self, id: str) -> None:
        """Remove layer ``id``: unmount it if a mount was left, then its directories and layers file.

        :raises NotFound: if it does not exist.
        :raises Conflict: while :meth:`get` references are held, or while
            other layers are based on it (their mounts use its branch).
        """
        validate_id(id)
        doomed: list[str] = []
        with self._lock:
            if not self._exists(id):
                raise NotFound(f"aufs: layer {id} does not exist")
            refs = self._refs.get(id, 0)
            if refs:
                raise Conflict(f"aufs: layer {id} is in use ({refs} references)")
            children = self._children(id)
            if children:
                shown = ", ".join(c[:12] for c in children[:3]) + (", ..." if len(children) > 3 else "")
                raise Conflict(f"aufs: layer {id} has {len(children)} child layers ({shown}); remove them first")
            if id in self._mounted or self._is_mount_point(self._mnt_dir(id)):
                self._unmount(id)
            # Renamed first so the directories are gone at once; layers/<id>
            # last, so a remove cut short is finished by the next one.
            for path in (self._diff_dir(id), self._mnt_dir(id)):
                away = os.path.join(os.path.dirname(path), f"{_RM_PREFIX}{id}-{secrets.token_hex(4)}")
                try:
                    libc.renameat2(path, away, libc.RENAME_NOREPLACE)
                except FileNotFoundError:
                    continue
                doomed.append(away)
            os.unlink(self._layers_file(id))
        for path in doomed:
            fs.safe_rmtree(path)
        LOG.debug("aufs: removed layer %s", id)

    def exists(self, id: str) -> bool:
        return self._exists(validate_id(id))

    # ---- get and put

    def get(self, id: str, mount_label: str = "") -> str:
        """The layer's tree: ``diff/<id>`` for a base layer, else the union mounted on ``mnt/<id>``.

        The first reference of a layer with parents mounts it; a mount left
        from before (a crash) is used as it is.

        :raises NotFound: if the layer does not exist.
        :raises PrerequisitesNotMet: when the kernel has no aufs.
        :raises HostError: when the mount fails otherwise (the message says
            what to check); nothing stays mounted or referenced then.
        """
        validate_id(id)
        with self._lock:
            chain = self._chain(id)
            count = self._refs.get(id, 0)
            if not chain:
                path = self._diff_dir(id)
            else:
                path = self._mnt_dir(id)
                if count == 0:
                    self._mount(id, chain, mount_label)
            self._refs[id] = count + 1
        return path

    def put(self, id: str) -> None:
        """Release one :meth:`get` reference; the last one unmounts.

        :raises HostError: if the unmount fails (the reference is released
            all the same; the next :meth:`get` uses the mount left).
        """
        validate_id(id)
        with self._lock:
            count = self._refs.get(id, 0)
            if count == 0:
                LOG.warning("aufs: put of layer %s, which is not in use", id)
                return
            if count > 1:
                self._refs[id] = count - 1
                return
            del self._refs[id]
            if id in self._mounted:
                self._unmount(id)

    def references(self, id: str) -> int:
        """How many :meth:`get` references layer ``id`` has (for tests and ``engine-admin``)."""
        with self._lock:
            return self._refs.get(validate_id(id), 0)

    def _mount(self, id: str, chain: list[str], mount_label: str) -> None:
        """Mount the union of ``id`` and ``chain`` on ``mnt/<id>`` (the lock is held)."""
        target = self._mnt_dir(id)
        if self._is_mount_point(target):
            LOG.info("aufs: %s is still mounted from before; using that mount", target)
            self._mounted.add(id)
            return
        plan = mount_plan([self._diff_dir(id), *(self._diff_dir(p) for p in chain)], mount_label)
        for done, call in enumerate(plan):
            try:
                self._mount_call(call.source, target, call.fstype, call.flags, call.data)
            except OSError as exc:
                if done:
                    # The first call mounted: take the half-built union down.
                    self._unmount_path(target, quiet=True)
                raise self._mount_error(exc, target, call) from exc
        self._mounted.add(id)
        LOG.debug("aufs: mounted %s (%d branches, %d mount calls)", target, len(chain) + 1, len(plan))

    def _mount_error(self, exc: OSError, target: str, call: MountCall) -> EngineError:
        """The error a user sees for a failed mount(2): the errno and what to do about it."""
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        what = "remount (append branches)" if call.flags & libc.MS_REMOUNT else "mount"
        head = f"aufs: {what} of {target} failed ({code})"
        if exc.errno == errno.ENODEV:
            return PrerequisitesNotMet(
                f"{head}: the kernel has no aufs file system; load the aufs module (modprobe aufs) "
                "or choose another --storage-driver"
            )
        if exc.errno == errno.EPERM:
            return HostError(
                f"{head}: mounting needs CAP_SYS_ADMIN in the initial user namespace; "
                "run the daemon as root, outside a user namespace"
            )
        if exc.errno == errno.ENOENT:
            return HostError(f"{head}: a branch below {self._diff} or /dev/shm (for the xino file) is missing")
        if exc.errno == errno.EINVAL:
            return HostError(
                f"{head}: aufs refused a branch or an option; is {self.home} on aufs, btrfs or "
                "ecryptfs, or has the image more layers than the aufs module's branch limit? "
                "The kernel log (dmesg) has aufs' reason"
            )
        return HostError(f"{head}: {exc.strerror}; the kernel log (dmesg) may have aufs' reason")

    def _unmount(self, id: str) -> None:
        """Unmount ``mnt/<id>`` (the lock is held)."""
        self._mounted.discard(id)
        self._unmount_path(self._mnt_dir(id))

    def _unmount_path(self, target: str, quiet: bool = False) -> None:
        """Unmount ``target``, retrying while busy and detaching it in the end, as moby does.

        :param quiet: log failures instead of raising (tearing down after an error).
        :raises HostError: if the unmount fails for another reason.
        """
        try:
            for attempt in range(_BUSY_RETRIES):
                try:
                    self._unmount_call(target, 0)
                    return
                except OSError as exc:
                    if exc.errno == errno.EINVAL:
                        LOG.debug("aufs: %s was not mounted", target)
                        return
                    if exc.errno != errno.EBUSY:
                        raise HostError(f"aufs: cannot unmount {target}: {exc.strerror}") from exc
                LOG.debug("aufs: %s is busy (attempt %d of %d)", target, attempt + 1, _BUSY_RETRIES)
                time.sleep(0.1)
            # Still in use (a process inside, a bind mount of it elsewhere):
            # detached, it goes when its last user does.
            LOG.warning("aufs: %s stays busy; detaching it", target)
            try:
                self._unmount_call(target, libc.MNT_DETACH)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise HostError(f"aufs: cannot detach {target}: {exc.strerror}") from exc
        except HostError as exc:
            if not quiet:
                raise
            LOG.error("%s", exc)

    def cleanup(self) -> None:
        """Unmount every layer (the daemon is stopping) and forget all references."""
        with self._lock:
            for id in sorted(self._mounted):
                try:
                    self._unmount(id)
                except HostError as exc:
                    LOG.error("%s", exc)
            # Mounts an earlier daemon left behind, or that would not go above.
            top = os.path.realpath(self._mnt)
            for point in reversed(fs.mounts_below(self._mnt)):
                if point != top:
                    self._unmount_path(point, quiet=True)
            if self._refs:
                LOG.info("aufs: %d layers still referenced at cleanup", len(self._refs))
            self._refs.clear()

    # ---- information

    def status(self) -> list[tuple[str, str]]:
        dirs = sum(1 for name in os.listdir(self._layers) if not name.startswith("."))
        return [("Root Dir", self.home), ("Backing Filesystem", fs.backing_filesystem(self.home)), ("Dirs", str(dirs))]

    def metadata(self, id: str) -> dict[str, str]:
        """``DiffDir`` (the layer's own branch) and ``MountDir`` (what :meth:`get` returns)."""
        chain = self._chain(validate_id(id))
        return {"DiffDir": self._diff_dir(id), "MountDir": self._mnt_dir(id) if chain else self._diff_dir(id)}

    # ---- the differ

    def _native_chain(self, id: str, parent: str | None) -> list[str] | None:
        """The chain of ``id`` if ``parent`` is its real parent (the native differ applies), else None."""
        validate_id(id)
        if parent is not None:
            validate_id(parent)
        chain = self._chain(id)
        return chain if (chain[0] if chain else None) == parent else None

    def diff(self, id: str, parent: str | None = None) -> IO[bytes]:
        """A tar of ``diff/<id>`` when ``parent`` is the real parent; else the naive diff (mounts)."""
        if self._native_chain(id, parent) is None:
            return super().diff(id, parent)
        return archive.tar_tree(self._diff_dir(id), whiteouts="keep")

    def changes(self, id: str, parent: str | None = None) -> list[Change]:
        """Read from ``diff/<id>`` and the branches below when ``parent`` is the real parent."""
        chain = self._native_chain(id, parent)
        if chain is None:
            return super().changes(id, parent)
        return branch_changes(self._diff_dir(id), [self._diff_dir(p) for p in chain])

    def apply_diff(self, id: str, parent: str | None, diff: IO[bytes]) -> int:
        """Unpack into ``diff/<id>``, whiteouts kept as files for aufs to apply, when ``parent`` is the real parent."""
        if self._native_chain(id, parent) is None:
            return super().apply_diff(id, parent, diff)
        return archive.apply_layer(self._diff_dir(id), diff, whiteouts="keep")

    def diff_size(self, id: str, parent: str | None = None) -> int:
        """The size of ``diff/<id>`` when ``parent`` is the real parent."""
        if self._native_chain(id, parent) is None:
            return super().diff_size(id, parent)
        return branch_size(self._diff_dir(id))
