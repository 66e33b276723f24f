"""The overlay graph driver: overlayfs with many lower layers, in moby's overlay2 layout.

On disk, in the driver's home ``<root>/overlay``::

    <home>/                         0700
      l/                            0700: short names of the layers' diff dirs
        ABCDEFGHIJKLMNOPQRSTUVWXYZ  -> ../<id>/diff
      <id>/                         0700: a layer with no parent
        diff/                       its whole tree
        link                        its short name in l/ ("ABCD...XYZ")
      <id>/                         0700: a layer on a parent
        diff/                       overlayfs' upperdir: what the layer changes;
                                    deletions are 0/0 character devices, a
                                    replaced directory has trusted.overlay.opaque=y
        link                        its short name in l/
        lower                       "l/<parent>:l/<grandparent>:...", nearest first
        work/                       0700: overlayfs' workdir
        merged/                     0700: where get() mounts the layer
      .tmp-<id>-<random>/           a layer being created, renamed to <id> when whole
      .rm-<id>-<random>/            a layer being removed: renamed away first
      .probe-<random>/              the feature test mount of start-up (removed at once)

A layer's tree is an overlay mount of its ``diff`` on top of the ``diff``
directories of all its ancestors (mount(8), "Mount options for overlay";
the kernel's Documentation/filesystems/overlayfs.rst). A layer with no
parent is not mounted at all: :meth:`OverlayDriver.get` hands out its
``diff``.

Why the short links. mount(2) copies at most one page of option data, and a
64-hex-digit ID per lower layer fills a 4 KiB page after some 50 layers. The
``l/`` names are 26 characters, so ``lowerdir=l/A..:l/B..`` fits about 130
layers. Such paths are relative to the home, and chdir(2) is process-wide,
so the mount runs in a short-lived thread that first unshares its file
system attributes (unshare(2), ``CLONE_FS``) and only then changes its own
working directory: containerd's ``mountAt`` trick (moby re-executes itself
for this). While the absolute paths fit, they are used directly.

Mount options. ``index=off`` (moby does the same: the inodes index ties an
upper dir to the exact lowers it was first mounted with), ``redirect_dir=off``
and ``metacopy=off``: with redirects or metadata-only copy-ups the diff
directory would no longer hold the layer's changes, and the native differ
below would be wrong. The options a kernel does not know are dropped after a
test mount at start-up; if redirects or metacopy are then in effect anyway,
the driver falls back to the naive differ ("Native Overlay Diff: false").
A consequence of ``index=off`` that overlayfs documents: changing one name of
a hard-linked lower file copies up that name only, so the link is broken
in the layer (the other names keep the old inode).

The native differ. A layer's ``diff`` directory *is* its changes against its
parent, so :meth:`~OverlayDriver.diff` tars it (whiteouts and opaque
directories exported in the AUFS form every image uses),
:meth:`~OverlayDriver.apply_diff` unpacks into it with overlayfs whiteouts,
and :meth:`~OverlayDriver.changes` walks it against the lower layers. Against
any other parent the naive differ of
:class:`~engine.drivers.graph.NaiveDiffDriver` compares mounted trees.

Removal refuses (``Conflict``) a layer that is in use or that other layers
are based on: their ``lower`` files name its ``diff``.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import logging
import mmap
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import IO

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
from engine.sys import fs, libc

LOG = logging.getLogger(__name__)

#: The kernel's limit on lower layers in one mount (``OVL_MAX_STACK``).
OVL_MAX_STACK = 500
#: unshare(2): stop sharing cwd, root and umask with the other threads (<linux/sched.h>).
CLONE_FS = 0x00000200

PROC_FILESYSTEMS = "/proc/filesystems"
#: Options that keep the diff directory a faithful record of the layer's changes.
MOUNT_OPTIONS: tuple[str, ...] = ("index=off", "redirect_dir=off", "metacopy=off")

LINK_DIR = "l"
#: 16 random bytes in base32: 26 characters, as overlay2's ``idLength``.
_LINK_BYTES = 16
_TMP_PREFIX = ".tmp-"
_RM_PREFIX = ".rm-"
#: How long a shutdown waits for the deletion of removed layers (the next start sweeps the rest).
REMOVAL_WAIT = 30.0
_PROBE_PREFIX = ".probe-"
_REDIRECT_XATTR = "trusted.overlay.redirect"
_METACOPY_XATTR = "trusted.overlay.metacopy"

#: Backing file systems overlayfs cannot use for its upper layer, and why.
_INCOMPATIBLE = {
    "overlay": "overlayfs cannot use another overlay as its upper layer",
    "aufs": "overlayfs cannot stack on aufs",
    "ecryptfs": "overlayfs cannot stack on ecryptfs",
}

#: errno of a failed mount -> what the operator can do about it.
_REMEDIES = {
    errno.EINVAL: (
        "is the backing fs overlay? overlayfs cannot stack on overlay, aufs or ecryptfs, and its upper "
        "file system needs d_type and trusted.* xattrs (dmesg names what the kernel refused)"
    ),
    errno.ENODEV: "the kernel has no overlay file system: load it (modprobe overlay) or choose another storage driver",
    errno.EPERM: "mounting needs CAP_SYS_ADMIN: run the daemon as root",
    errno.ENOENT: (
        "a directory of the layer or of one of its lower layers is missing: the layer chain is broken; "
        "remove the image and pull it again"
    ),
    errno.ENOMEM: "the kernel is out of memory",
}


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def mount_failure(exc: OSError, detail: str = "") -> str:
    """The message for a failed overlay mount: the errno's name and a remedy (STYLE item 12)."""
    remedy = _REMEDIES.get(exc.errno or 0, exc.strerror or str(exc))
    return f"overlay: mount failed ({_errno_name(exc)}): {remedy}{detail}"


def _check_options(options: Sequence[str]) -> None:
    for option in options:
        raise InvalidParameter(f"overlay: unknown storage option {option!r} (overlay takes none)")


def _kernel_has_overlay(path: str = PROC_FILESYSTEMS) -> bool:
    """Whether ``overlay`` is in /proc/filesystems, after ``modprobe overlay`` if kmod is installed."""

    def listed() -> bool:
        try:
            with open(path) as f:
                return any(line.split()[-1:] == ["overlay"] for line in f)
        except OSError as exc:
            raise PrerequisitesNotMet(f"overlay: cannot read {path}: {exc.strerror}") from exc

    if listed():
        return True
    modprobe = shutil.which("modprobe")
    if modprobe is None:
        return False
    result = subprocess.run(
        [modprobe, "overlay"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=60,
        check=False,
    )
    if result.returncode:
        LOG.info("overlay: modprobe overlay failed: %s", result.stderr.decode(errors="replace").strip())
    return listed()


def supports_d_type(directory: str) -> bool:
    """Whether the file system of ``directory`` fills in ``d_type`` of directory entries.

    overlayfs needs it to find whiteouts quickly; xfs formatted with
    ``ftype=0`` leaves it ``DT_UNKNOWN`` (readdir(3): "All applications must
    properly handle a return of DT_UNKNOWN"). moby's ``fsutils.SupportsDType``
    reads the dirents; here :meth:`os.DirEntry.is_dir` does: it answers from
    ``d_type`` when it is known and falls back to lstat(2) otherwise, and that
    lstat fails (answer: False) because the entry is removed before asking.
    """
    scratch = tempfile.mkdtemp(prefix=".d_type-", dir=directory)
    entry: os.DirEntry[str] | None = None
    try:
        os.mkdir(os.path.join(scratch, "d"))
        with os.scandir(scratch) as it:
            for found in it:
                if found.name == "d":
                    entry = found
        os.rmdir(os.path.join(scratch, "d"))
        return entry is not None and entry.is_dir(follow_symlinks=False)
    finally:
        fs.safe_rmtree(scratch)


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _check_backing(path: str) -> str:
    """The backing file system of ``path`` (or its nearest existing ancestor), if overlayfs can use it.

    :raises IncompatibleFilesystem: for overlay, aufs and ecryptfs.
    """
    where = _nearest_existing(path)
    backing = fs.backing_filesystem(where)
    reason = _INCOMPATIBLE.get(backing)
    if reason is not None:
        raise IncompatibleFilesystem(f"overlay: {where} is on {backing}: {reason}; put the data root elsewhere")
    return backing


def _mount_from(directory: str, data: str, target: str) -> None:
    """Mount overlay on ``target`` with the relative paths of ``data`` resolved from ``directory``.

    chdir(2) changes the working directory of every thread, so this runs in
    a new thread that first unshares ``CLONE_FS`` (unshare(2)): its chdir is
    then its own, and it is dropped with the thread, never reused.
    """
    failure: list[BaseException] = []

    def run() -> None:
        try:
            libc.unshare(CLONE_FS)
            os.chdir(directory)
            libc.mount("overlay", target, "overlay", 0, data)
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name="overlay-mount", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _unmount(target: str) -> None:
    """umount2(2) ``target``; detach it (``MNT_DETACH``) when it is busy.

    :raises OSError: ``EINVAL`` if nothing is mounted there, and the like.
    """
    try:
        libc.umount2(target, libc.UMOUNT_NOFOLLOW)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        LOG.info("overlay: %s is busy; detaching it", target)
        libc.umount2(target, libc.MNT_DETACH | libc.UMOUNT_NOFOLLOW)


def _is_whiteout(st: os.stat_result) -> bool:
    """overlayfs' whiteout: a character device numbered 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, archive.OVERLAY_OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            return False
        raise


def _has_xattr(path: str, name: str) -> bool:
    try:
        os.getxattr(path, name, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            return False
        raise
    return True


@dataclass(frozen=True)
class Features:
    """What a test mount found out about this kernel and backing file system."""

    #: The options of :data:`MOUNT_OPTIONS` the kernel accepts.
    options: tuple[str, ...]
    #: Whether diff directories hold exactly the layers' changes (no redirects, no metacopy).
    native_diff: bool


def detect_features(home: str) -> Features:
    """Test-mount an overlay in a scratch directory below ``home``, then remove it.

    Checks d_type, finds which of :data:`MOUNT_OPTIONS` the kernel accepts
    (a kernel older than an option refuses it with ``EINVAL``; then each is
    tried alone), and whether renaming a lower directory records a redirect
    or a chown copies up metadata only: either would make the upper
    directory an incomplete record of the changes (overlayfs.rst, "Redirect
    dir" and "Metadata only copy up"), so the native differ is turned off.

    :raises IncompatibleFilesystem: when the backing file system cannot host overlay.
    :raises NotSupported: when the kernel has no overlay.
    :raises PrerequisitesNotMet: when we may not mount.
    """
    scratch = tempfile.mkdtemp(prefix=_PROBE_PREFIX, dir=home)
    try:
        if not supports_d_type(scratch):
            raise IncompatibleFilesystem(
                f"overlay: the file system of {home} ({fs.backing_filesystem(home)}) does not fill in d_type; "
                "xfs must be formatted with ftype=1 (see xfs_info)"
            )
        lower, upper, work, merged = (os.path.join(scratch, d) for d in ("lower", "upper", "work", "merged"))
        for d in (lower, upper, work, merged):
            os.mkdir(d, 0o700)
        os.mkdir(os.path.join(lower, "dir"))
        with open(os.path.join(lower, "file"), "wb"):
            pass

        def attempt(options: Sequence[str]) -> OSError | None:
            data = ",".join([*options, f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}"])
            try:
                libc.mount("overlay", merged, "overlay", 0, data)
            except OSError as exc:
                return exc
            _unmount(merged)
            return None

        options = list(MOUNT_OPTIONS)
        failed = attempt(options)
        if failed is not None and failed.errno == errno.EINVAL and attempt([]) is None:
            options = [option for option in MOUNT_OPTIONS if attempt([option]) is None]
            LOG.info("overlay: the kernel refuses %s", ", ".join(sorted(set(MOUNT_OPTIONS) - set(options))))
            failed = None
        if failed is not None:
            raise _probe_error(failed, home)

        data = ",".join([*options, f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}"])
        libc.mount("overlay", merged, "overlay", 0, data)
        try:
            try:
                os.rename(os.path.join(merged, "dir"), os.path.join(merged, "moved"))
            except OSError as exc:
                if exc.errno != errno.EXDEV:  # EXDEV: no redirects, the caller copies
                    raise
            os.chmod(os.path.join(merged, "file"), 0o600)
        finally:
            _unmount(merged)
        redirect = os.path.lexists(os.path.join(upper, "moved")) and _has_xattr(
            os.path.join(upper, "moved"), _REDIRECT_XATTR
        )
        metacopy = _has_xattr(os.path.join(upper, "file"), _METACOPY_XATTR)
        if redirect or metacopy:
            LOG.warning(
                "overlay: the kernel uses %s; using the naive differ", "redirect_dir" if redirect else "metacopy"
            )
        return Features(tuple(options), native_diff=not (redirect or metacopy))
    finally:
        fs.safe_rmtree(scratch)


def _probe_error(exc: OSError, home: str) -> NotSupported:
    """The probe's error for a failed test mount (the selection skips the driver)."""
    if exc.errno == errno.ENODEV:
        return NotSupported("overlay is not supported by the kernel (not in /proc/filesystems)")
    if exc.errno == errno.EPERM:
        return PrerequisitesNotMet(mount_failure(exc))
    return IncompatibleFilesystem(f"{mount_failure(exc)} (test mount in {home})")


class _Locker:
    """One lock per layer ID, made on demand and dropped when unused (moby's ``pkg/locker``)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, list[int]]] = {}

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._mutex:
            lock, users = self._locks.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
            with self._mutex:
                users[0] -= 1
                if not users[0]:
                    del self._locks[key]


@dataclass
class _Lower:
    """What the lower layers show at one path: the entry, and for a directory every layer's part."""

    path: str
    st: os.stat_result
    #: For a directory: its copies in the layers that merge into it, nearest first.
    dirs: list[str]


def _lookup(below: Sequence[str], name: str) -> _Lower | None:
    """What the parent's tree shows as ``name`` in a directory made of ``below``.

    overlayfs' lookup (fs/overlayfs/namei.c): the nearest layer's entry wins;
    a whiteout hides it; directories merge downwards until an opaque one, a
    whiteout or a non-directory, which a directory above hides.
    """
    dirs: list[str] = []
    for directory in below:
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if _is_whiteout(st):
            break
        if not stat.S_ISDIR(st.st_mode):
            if not dirs:
                return _Lower(path, st, [])
            break
        dirs.append(path)
        if _is_opaque(path):
            break
    if not dirs:
        return None
    return _Lower(dirs[0], os.lstat(dirs[0]), dirs)


def _visible_names(below: Sequence[str]) -> set[str]:
    """The names the parent's tree shows in a directory made of ``below``."""
    nearest: dict[str, bool] = {}
    for directory in below:
        for name in os.listdir(directory):
            if name not in nearest:
                nearest[name] = not _is_whiteout(os.lstat(os.path.join(directory, name)))
    return {name for name, shown in nearest.items() if shown}


def _metadata_differs(lower: _Lower, path: str, st: os.stat_result) -> bool:
    """What makes a directory modified in :func:`engine.archive.changes` (size and mtime do not)."""
    if (lower.st.st_mode, lower.st.st_uid, lower.st.st_gid) != (st.st_mode, st.st_uid, st.st_gid):
        return True
    return archive.content_xattrs(lower.path) != archive.content_xattrs(path)


def upper_changes(upper: str, lowers: Sequence[str]) -> list[Change]:
    """The changes an overlay upper directory makes to the tree of ``lowers`` (nearest first).

    Same meaning as :func:`engine.archive.changes` of the mounted tree
    against the lowers' tree, read from the upper directory alone: a
    whiteout of a visible entry is a deletion, an opaque directory deletes
    what the lowers had in it, and an entry is added when the lowers do not
    show it, modified when they do. Every non-directory in the upper
    directory counts (it was copied up or written); a directory counts when
    it is new, its mode, owner or xattrs differ, or it holds changes.

    :returns: changes with paths like ``/etc/passwd``, sorted depth first.
    """
    found: dict[str, ChangeKind] = {}
    # (directory relative to the roots, the lowers' parts of it, whether the
    # upper directory replaces them rather than merging with them)
    stack: list[tuple[str, list[str], bool]] = [("", list(lowers), False)]
    while stack:
        rel_dir, below, replaced = stack.pop()
        present: set[str] = set()
        for name in os.listdir(os.path.join(upper, rel_dir)):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            full = os.path.join(upper, rel)
            st = os.lstat(full)
            lower = _lookup(below, name)
            if _is_whiteout(st):
                if lower is not None and not replaced:
                    found["/" + rel] = ChangeKind.DELETE
                continue
            present.add(name)
            if lower is None:
                found["/" + rel] = ChangeKind.ADD
            elif not (stat.S_ISDIR(st.st_mode) and lower.dirs) or _metadata_differs(lower, full, st):
                found["/" + rel] = ChangeKind.MODIFY
            if stat.S_ISDIR(st.st_mode):
                stack.append((rel, lower.dirs if lower is not None else [], replaced or _is_opaque(full)))
        if replaced:
            for name in _visible_names(below) - present:
                found[f"/{rel_dir}/{name}" if rel_dir else f"/{name}"] = ChangeKind.DELETE
    for path in list(found):
        parent = os.path.dirname(path)
        while parent != "/" and parent not in found:
            found[parent] = ChangeKind.MODIFY
            parent = os.path.dirname(parent)
    return [Change(path, found[path]) for path in sorted(found, key=archive.path_key)]


def _copy_root_metadata(src: str, dst: str) -> None:
    """Give ``dst`` the owner, mode, xattrs and times of ``src``: a merged tree's root is its upper dir's."""
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid)
    fs.write_xattrs(dst, archive.content_xattrs(src))
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


class OverlayDriver(NaiveDiffDriver):
    """OverlayFS with many lower layers (overlay2 layout): fast, space-efficient, needs kernel overlay support.

    :param home: the driver's state directory, ``<root>/overlay``.
    :param options: ``--storage-opt`` values; overlay accepts none.
    :raises NotSupported: (or a subclass) when the test mount fails.
    """

    name = "overlay"

    def __init__(self, home: str, options: Sequence[str] = ()) -> None:
        _check_options(options)
        # Absolute: relative mounts chdir to it in another thread.
        super().__init__(os.path.abspath(home), options)
        home = self.home
        self._links = os.path.join(home, LINK_DIR)
        os.makedirs(self._links, 0o700, exist_ok=True)
        os.chmod(home, 0o700)
        self._backing = _check_backing(home)
        self._sweep()
        self._features = detect_features(home)
        self._page = mmap.PAGESIZE
        self._lock = threading.Lock()
        self._locker = _Locker()
        self._refs: dict[str, int] = {}
        self._mounted: set[str] = set()
        self._children: dict[str, set[str]] = {}
        self._parent_of: dict[str, str] = {}
        #: Deletes removed layers (renamed to .rm-*) beside the next request (see remove()).
        self._reaper = fs.Reaper("overlay")
        #: metadata() of layers asked for, until removed: a layer's paths never change, and an
        #: inspect under load would otherwise make a dozen system calls (each a GIL hand-over).
        self._metadata: dict[str, dict[str, str]] = {}
        self._index()
        LOG.info(
            "overlay: home %s on %s, mount options %s, native diff %s",
            home,
            self._backing,
            ",".join(self._features.options) or "(none)",
            self._features.native_diff,
        )

    @classmethod
    def probe(cls, home: str, options: Sequence[str] = ()) -> None:
        """Check the kernel, the backing file system and a real test mount below ``home``.

        Leaves nothing behind: directories made for the test are removed.

        :raises NotSupported: when the kernel has no overlay.
        :raises IncompatibleFilesystem: when ``home`` is on overlay, aufs or
            ecryptfs, lacks d_type, or the test mount fails there.
        :raises PrerequisitesNotMet: without openat2(2) (Linux 5.6) or the right to mount.
        :raises InvalidParameter: for any storage option.
        """
        _check_options(options)
        if not libc.openat2_supported():
            raise PrerequisitesNotMet("overlay: openat2(2) is needed for safe layer extraction (Linux 5.6 or later)")
        if not _kernel_has_overlay():
            raise NotSupported("overlay is not supported by the kernel (not in /proc/filesystems)")
        _check_backing(home)
        made: list[str] = []
        path = os.path.abspath(home)
        while not os.path.exists(path):
            made.append(path)
            path = os.path.dirname(path)
        try:
            for path in reversed(made):
                os.mkdir(path, 0o700)
            detect_features(home)
        finally:
            for path in made:
                with contextlib.suppress(OSError):
                    os.rmdir(path)

    # ---- paths and records

    def _dir(self, id: str) -> str:
        return os.path.join(self.home, validate_id(id))

    def _diff(self, id: str) -> str:
        return os.path.join(self.home, id, "diff")

    @staticmethod
    def _is_layer(path: str) -> bool:
        return os.path.isdir(path) and not os.path.islink(path)

    def _link(self, id: str) -> str:
        """The layer's short name in ``l/``."""
        try:
            with open(os.path.join(self.home, id, "link")) as f:
                return f.read().strip()
        except FileNotFoundError as exc:
            raise HostError(f"overlay: layer {id} has no link file: its directory is damaged") from exc

    def _lowers(self, id: str) -> list[str]:
        """The ``l/<short>`` names of the layer's lower layers, nearest first (none for a base layer)."""
        try:
            with open(os.path.join(self.home, id, "lower")) as f:
                text = f.read().strip()
        except FileNotFoundError:
            return []
        return text.split(":") if text else []

    def _lower_dirs(self, lowers: Sequence[str]) -> list[str]:
        """The absolute ``diff`` directories the ``l/`` names point to."""
        dirs = []
        for lower in lowers:
            link = os.path.join(self.home, lower)
            try:
                target = os.readlink(link)
            except FileNotFoundError as exc:
                raise HostError(f"overlay: lower layer {lower} is missing: the layer chain is broken") from exc
            dirs.append(os.path.normpath(os.path.join(os.path.dirname(link), target)))
        return dirs

    def _new_link(self, id: str) -> str:
        for _ in range(16):
            link = base64.b32encode(secrets.token_bytes(_LINK_BYTES)).decode().rstrip("=")
            try:
                os.symlink(f"../{id}/diff", os.path.join(self._links, link))
            except FileExistsError:
                continue
            return link
        raise HostError(f"overlay: no free short name in {self._links}")

    def _sweep(self) -> None:
        """Remove what a crash left: half-created or half-removed layers, test mounts, dangling links."""
        for name in os.listdir(self.home):
            if name.startswith((_TMP_PREFIX, _RM_PREFIX, _PROBE_PREFIX)):
                LOG.info("overlay: removing leftover %s", name)
                fs.safe_rmtree(os.path.join(self.home, name))
        for name in os.listdir(self._links):
            path = os.path.join(self._links, name)
            if not os.path.exists(path):
                LOG.info("overlay: removing dangling link l/%s", name)
                os.unlink(path)

    def _index(self) -> None:
        """Learn which layers are based on which from their ``lower`` files."""
        ids: dict[str, str] = {}
        for name in os.listdir(self.home):
            try:
                validate_id(name)
            except InvalidParameter:
                continue
            try:
                ids[self._link(name)] = name
            except HostError as exc:
                LOG.warning("%s", exc)
        for id in ids.values():
            lowers = self._lowers(id)
            if not lowers:
                continue
            parent = ids.get(lowers[0].removeprefix(LINK_DIR + "/"))
            if parent is None:
                LOG.warning("overlay: the parent %s of layer %s is missing", lowers[0], id)
                continue
            self._children.setdefault(parent, set()).add(id)
            self._parent_of[id] = parent

    # ---- mount data

    def _options(self, label: str) -> list[str]:
        options = list(self._features.options)
        if label:
            # SELinux context of every file in the mount (mount(8), "context=").
            options.append(f'context="{label}"')
        return options

    def _relative_data(self, id: str, lowers: Sequence[str], label: str = "") -> str:
        return ",".join(
            [*self._options(label), "lowerdir=" + ":".join(lowers), f"upperdir={id}/diff", f"workdir={id}/work"]
        )

    def _absolute_data(self, id: str, lowers: Sequence[str], label: str = "") -> str | None:
        """The mount data with absolute paths, or None if the home's path would need escaping."""
        if any(c in self.home for c in ',:\\"'):
            return None
        layer = os.path.join(self.home, id)
        return ",".join(
            [
                *self._options(label),
                "lowerdir=" + ":".join(os.path.join(self.home, lower) for lower in lowers),
                f"upperdir={layer}/diff",
                f"workdir={layer}/work",
            ]
        )

    def max_depth(self, id: str) -> int:
        """How many lower layers a layer ``id`` can have here: what fits in one page, at most 500."""
        fixed = len(self._relative_data(id, []))
        per_layer = len(LINK_DIR) + 1 + len(base64.b32encode(bytes(_LINK_BYTES)).rstrip(b"=")) + 1
        # data(n) = fixed + n * per_layer - 1 must stay below a page (the NUL).
        return min(OVL_MAX_STACK, (self._page - fixed) // per_layer)

    def _check_depth(self, id: str, lowers: Sequence[str]) -> None:
        limit = self.max_depth(id)
        if len(lowers) > limit or len(self._relative_data(id, lowers)) > self._page - 1:
            raise InvalidParameter(
                f"overlay: cannot create layer {id}: it would have {len(lowers)} lower layers, more than the "
                f"{limit} one overlay mount can stack here (the kernel's limit is {OVL_MAX_STACK} and the mount "
                "options must fit in one page); flatten the image (export and import it) or use another "
                "storage driver"
            )

    # ---- lifecycle

    def create(self, id: str, parent: str | None = None, mount_label: str = "") -> None:
        """Create layer ``id``: an empty ``diff`` on top of ``parent``'s layers when given.

        :raises Conflict: if ``id`` exists.
        :raises NotFound: if ``parent`` does not.
        :raises InvalidParameter: if ``parent`` has as many lower layers as a mount can take.
        """
        layer = self._dir(id)
        if parent is not None:
            validate_id(parent)
        with self._locker.hold(id):
            if os.path.lexists(layer):
                raise Conflict(f"overlay: layer {id} already exists")
            lowers: list[str] = []
            if parent is not None:
                # Under the lock, and registered as a child at once: a
                # concurrent remove(parent) now sees us and refuses.
                with self._lock:
                    if not self._is_layer(self._dir(parent)):
                        raise NotFound(f"overlay: parent layer {parent} does not exist")
                    lowers = [f"{LINK_DIR}/{self._link(parent)}", *self._lowers(parent)]
                    self._check_depth(id, lowers)
                    self._children.setdefault(parent, set()).add(id)
                    self._parent_of[id] = parent
            try:
                self._build(id, parent, lowers)
            except BaseException:
                if parent is not None:
                    with self._lock:
                        self._forget(id)
                raise
        LOG.debug("overlay: created layer %s (parent %s, %d lower layers)", id, parent, len(lowers))

    def _build(self, id: str, parent: str | None, lowers: Sequence[str]) -> None:
        """Make the layer's directory as ``.tmp-<id>-*`` and rename it into place when complete."""
        tmp = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{id}-", dir=self.home)
        link: str | None = None
        try:
            diff = os.path.join(tmp, "diff")
            os.mkdir(diff)
            os.chmod(diff, 0o755)
            if parent is not None:
                _copy_root_metadata(self._diff(parent), diff)
                os.mkdir(os.path.join(tmp, "work"), 0o700)
                os.mkdir(os.path.join(tmp, "merged"), 0o700)
                fs.atomic_write(os.path.join(tmp, "lower"), ":".join(lowers).encode())
            link = self._new_link(id)
            fs.atomic_write(os.path.join(tmp, "link"), link.encode())
            try:
                # Exclusive publish: rename(2) would replace an empty directory.
                libc.renameat2(tmp, os.path.join(self.home, id), libc.RENAME_NOREPLACE)
            except OSError as exc:
                if exc.errno == errno.EEXIST:
                    raise Conflict(f"overlay: layer {id} already exists") from exc
                raise
            fs.fsync_dir(self.home)
        except BaseException:
            if link is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self._links, link))
            fs.safe_rmtree(tmp)
            raise

    def _forget(self, id: str) -> None:
        """Drop ``id`` from the parent index (the caller holds ``_lock``)."""
        parent = self._parent_of.pop(id, None)
        if parent is not None:
            siblings = self._children.get(parent)
            if siblings is not None:
                siblings.discard(id)
                if not siblings:
                    del self._children[parent]

    def remove(self, id: str) -> None:
        """Remove layer ``id``: its short link at once, its directory renamed out of sight at once and
        deleted in the background (unmounting what is left mounted there first; :meth:`wait_removed`).

        :raises NotFound: if it does not exist.
        :raises Conflict: while it is in use, or while other layers are based on it.
        """
        layer = self._dir(id)
        with self._locker.hold(id):
            with self._lock:
                if not self._is_layer(layer):
                    raise NotFound(f"overlay: layer {id} does not exist")
                refs = self._refs.get(id, 0)
                if refs:
                    raise Conflict(f"overlay: layer {id} is in use ({refs} references)")
                children = sorted(self._children.get(id, ()))
                if children:
                    shown = ", ".join(child[:12] for child in children[:3]) + (", ..." if len(children) > 3 else "")
                    raise Conflict(
                        f"overlay: layer {id} is the parent of {len(children)} layers ({shown}); remove them first"
                    )
                try:
                    link: str | None = self._link(id)
                except HostError:
                    link = None
                # Renamed under the lock: get() and exists() see it gone at
                # once, and the slow deletion runs without the lock.
                doomed = os.path.join(self.home, f"{_RM_PREFIX}{id}-{secrets.token_hex(4)}")
                libc.renameat2(layer, doomed, libc.RENAME_NOREPLACE)
                self._forget(id)
                self._metadata.pop(id, None)
            if link:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self._links, link))
        # In the background: out of sight already, and most of a deletion is the kernel's
        # rmdir(2) per directory, which need not hold up a `docker rm` (safe_rmtree first
        # unmounts a mount a previous daemon left on merged/). The next start sweeps what a
        # crash leaves.
        self._reaper.delete(doomed)
        LOG.debug("overlay: removed layer %s", id)

    def wait_removed(self, timeout: float | None = None) -> bool:
        return self._reaper.wait(timeout)

    def exists(self, id: str) -> bool:
        return self._is_layer(self._dir(id))

    # ---- get and put

    def get(self, id: str, mount_label: str = "") -> str:
        """The path of the layer's tree: its ``diff`` for a base layer, else the overlay mounted on ``merged``.

        Reference counted; the first reference mounts.

        :raises NotFound: if the layer does not exist.
        :raises HostError: when the mount fails, with a remedy.
        """
        return self._acquire(id, mount=True, label=mount_label)

    def _acquire(self, id: str, mount: bool, label: str = "") -> str:
        """Take a reference; with ``mount``, make sure the tree is mounted."""
        layer = self._dir(id)
        with self._locker.hold(id):
            if not self._is_layer(layer):
                raise NotFound(f"overlay: layer {id} does not exist")
            lowers = self._lowers(id)
            path = os.path.join(layer, "merged") if lowers else self._diff(id)
            with self._lock:
                mounted = id in self._mounted
            if mount and lowers and not mounted:
                self._mount(id, lowers, label)
                with self._lock:
                    self._mounted.add(id)
            with self._lock:
                self._refs[id] = self._refs.get(id, 0) + 1
        return path

    def _mount(self, id: str, lowers: Sequence[str], label: str) -> None:
        merged = os.path.join(self.home, id, "merged")
        with contextlib.suppress(FileExistsError):
            os.mkdir(merged, 0o700)  # mount(2) needs it; someone may have removed it by hand
        if os.stat(merged).st_dev != os.stat(os.path.join(self.home, id)).st_dev:
            if libc.fs_type(merged) == libc.OVERLAYFS_SUPER_MAGIC:
                # Our own mount, left by the daemon before this one: a running container's
                # root (live restore). It is adopted, as moby's overlay2 adopts it: its
                # layers cannot have changed, and a new mount, after an unmount that reads
                # the mount table, cost about 1 ms per container on a restore with 500.
                LOG.debug("overlay: adopting the mount on %s", merged)
                return
            # Something else: mount afresh with our options.
            LOG.info("overlay: unmounting the stale mount on %s", merged)
            fs.unmount_all(merged)
        data = self._absolute_data(id, lowers, label)
        try:
            if data is not None and len(data) < self._page:
                libc.mount("overlay", merged, "overlay", 0, data)
                return
            data = self._relative_data(id, lowers, label)
            if len(data) >= self._page:
                raise InvalidParameter(
                    f"overlay: cannot mount layer {id}: its mount options take {len(data)} bytes, more than a "
                    f"page ({self._page}); the mount label is too long"
                )
            _mount_from(self.home, data, merged)
        except OSError as exc:
            missing = [lower for lower in lowers if not os.path.exists(os.path.join(self.home, lower))]
            detail = f" (missing: {', '.join(missing)})" if missing else ""
            raise HostError(mount_failure(exc, detail)) from exc
        LOG.debug("overlay: mounted layer %s on %s", id, merged)

    def put(self, id: str) -> None:
        """Release one reference; the last one unmounts (detached if busy)."""
        validate_id(id)
        with self._locker.hold(id):
            with self._lock:
                refs = self._refs.get(id, 0)
                if refs == 0:
                    LOG.warning("overlay: put of layer %s, which is not in use", id)
                    return
                if refs > 1:
                    self._refs[id] = refs - 1
                    return
                del self._refs[id]
                mounted = id in self._mounted
                self._mounted.discard(id)
            if mounted:
                self._release_mount(id)

    def _release_mount(self, id: str) -> None:
        merged = os.path.join(self.home, id, "merged")
        try:
            _unmount(merged)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                LOG.warning("overlay: %s was not mounted", merged)
                return
            raise HostError(f"overlay: cannot unmount {merged} ({_errno_name(exc)}): {exc.strerror}") from exc
        LOG.debug("overlay: unmounted layer %s", id)

    def references(self, id: str) -> int:
        """How many references layer ``id`` has (for tests and ``engine-admin``)."""
        with self._lock:
            return self._refs.get(validate_id(id), 0)

    @contextlib.contextmanager
    def _held(self, id: str) -> Iterator[None]:
        """A reference without a mount, so remove() waits while the diff directory is read."""
        self._acquire(id, mount=False)
        try:
            yield
        finally:
            self.put(id)

    def cleanup(self) -> None:
        """Unmount every layer still mounted and forget all references (the daemon is stopping).

        Mounts below the home that this instance did not make (left by a
        daemon that died) are unmounted too; the home itself is left alone.
        """
        self._release_all(frozenset())

    def cleanup_live(self, running: Collection[str]) -> None:
        """:meth:`cleanup`, but the roots of ``running`` stay mounted: the next daemon's
        :meth:`get` adopts them (see :meth:`_mount`), as moby's overlay2 does after a live
        restore. Mounting them again cost about 1 ms each, half a second of a restart with 500
        running."""
        self._release_all(frozenset(running))

    def _release_all(self, keep: frozenset[str]) -> None:
        if not self._reaper.wait(REMOVAL_WAIT):
            LOG.warning("overlay: removed layers still being deleted; the next start sweeps them")
        with self._lock:
            ids = sorted(self._mounted)
        errors: list[EngineError] = []
        for id in ids:
            with self._locker.hold(id):
                with self._lock:
                    self._mounted.discard(id)
                    self._refs.pop(id, None)
                if id in keep:
                    continue
                try:
                    self._release_mount(id)
                except HostError as exc:
                    LOG.error("%s", exc)
                    errors.append(exc)
        with self._lock:
            if self._refs:
                LOG.info("overlay: %d layers still referenced at cleanup", len(self._refs))
            self._refs.clear()
        home = os.path.realpath(self.home)
        for point in sorted(set(fs.mounts_below(home)) - {home}, key=lambda p: p.count("/"), reverse=True):
            id, _, rest = os.path.relpath(point, home).partition("/")
            if id in keep and (rest == "merged" or rest.startswith("merged/")):
                continue  # a kept root, or mounted on it
            try:
                fs.unmount_all(point)
            except HostError as exc:
                LOG.error("%s", exc)
                errors.append(exc)
        if errors:
            raise errors[0]

    # ---- information

    def status(self) -> list[tuple[str, str]]:
        return [
            ("Backing Filesystem", self._backing),
            ("Supports d_type", "true"),
            ("Native Overlay Diff", str(self._features.native_diff).lower()),
            ("Using metacopy", "false"),
        ]

    def metadata(self, id: str) -> dict[str, str]:
        """overlay2's ``GraphDriver.Data``: ``LowerDir`` (when there are lowers), ``MergedDir``, ``UpperDir``, ``WorkDir``.

        :raises NotFound: if the layer does not exist.
        """
        known = self._metadata.get(id)
        if known is not None:
            return dict(known)
        layer = self._dir(id)
        if not self._is_layer(layer):
            raise NotFound(f"overlay: layer {id} does not exist")
        data = {
            "MergedDir": os.path.join(layer, "merged"),
            "UpperDir": os.path.join(layer, "diff"),
            "WorkDir": os.path.join(layer, "work"),
        }
        lowers = self._lowers(id)
        if lowers:
            data["LowerDir"] = ":".join(self._lower_dirs(lowers))
        with self._lock:
            # Kept only if the layer is still there: remove() renames it away under this
            # lock, and then drops what is kept.
            if self._is_layer(layer):
                self._metadata[id] = data
        return dict(data)

    # ---- the differ

    def _native(self, id: str, parent: str | None) -> bool:
        """Whether ``parent`` is the layer's own parent, so that its diff directory is the answer."""
        if not self._features.native_diff:
            return False
        layer = self._dir(id)
        if not self._is_layer(layer):
            raise NotFound(f"overlay: layer {id} does not exist")
        lowers = self._lowers(id)
        if parent is None:
            return not lowers
        validate_id(parent)
        if not lowers or not self._is_layer(self._dir(parent)):
            return False
        return lowers[0] == f"{LINK_DIR}/{self._link(parent)}"

    def diff(self, id: str, parent: str | None = None) -> IO[bytes]:
        """The layer's ``diff`` directory as a layer tar (AUFS whiteouts), or the naive diff against another parent."""
        if not self._native(id, parent):
            return super().diff(id, parent)
        self._acquire(id, mount=False)
        try:
            return archive.tar_tree(self._diff(id), release=lambda: self.put(id), whiteouts="overlay")
        except BaseException:
            self.put(id)
            raise

    def changes(self, id: str, parent: str | None = None) -> list[Change]:
        """The changes the layer's ``diff`` directory makes to its lowers (:func:`upper_changes`)."""
        if not self._native(id, parent):
            return super().changes(id, parent)
        with self._held(id):
            return upper_changes(self._diff(id), self._lower_dirs(self._lowers(id)))

    def apply_diff(self, id: str, parent: str | None, diff: IO[bytes]) -> int:
        """Unpack a layer tar into the ``diff`` directory, whiteouts in overlayfs' form; return its size.

        A layer that is mounted right now is written through its mount
        instead: overlayfs does not allow changing an upper directory under
        a live mount (overlayfs.rst, "Changes to underlying filesystems").
        """
        if self._native(id, parent):
            with self._held(id):
                with self._lock:
                    mounted = id in self._mounted
                if not mounted:
                    return archive.apply_layer(self._diff(id), diff, whiteouts="overlay")
        return super().apply_diff(id, parent, diff)

    def diff_size(self, id: str, parent: str | None = None) -> int:
        """Bytes of what the layer adds and modifies (:func:`engine.archive.changes_size`)."""
        if not self._native(id, parent):
            return super().diff_size(id, parent)
        with self._held(id):
            changes = upper_changes(self._diff(id), self._lower_dirs(self._lowers(id)))
            return archive.changes_size(self._diff(id), changes)
