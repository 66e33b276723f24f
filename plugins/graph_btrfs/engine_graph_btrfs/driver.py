"""The btrfs graph driver: each layer a subvolume, a child a snapshot of its parent.

On disk, in the driver's home ``<root>/btrfs`` (moby's ``daemon/graphdriver/btrfs``)::

    <home>/                        0700, on btrfs
      subvolumes/                  0700
        <id>/                      a subvolume holding the layer's whole tree;
                                   a layer with a parent starts as a snapshot
                                   of the parent's subvolume (copy on write:
                                   O(1), whatever the parent's size)
        .tmp-<id>-<random>/        a layer being created; renamed to <id> only
                                   when complete (its quota set)
        .rm-<id>-<random>/         a layer being removed; renamed away first,
                                   so it stops existing at once
      quotas/                      0700
        <id>                       the layer's size limit in bytes (decimal
                                   text), for layers created with one

Nothing is mounted: :meth:`BtrfsDriver.get` hands out the subvolume itself,
reference counted so that a layer in use is not removed. The kernel is
driven through its ioctls (:mod:`engine_graph_btrfs.btrfs`), one or two per
layer operation, never by running ``btrfs``.

Snapshots do not depend on their source: removing a layer leaves the layers
made from it intact. A container may create subvolumes of its own inside its
layer (``btrfs subvolume create`` in a privileged container); removal deletes
those nested subvolumes first, the deepest first.

Quotas (``docker run --storage-opt size=10G``) are btrfs qgroups: the limit
applies to the bytes the subvolume references, shared extents included, as
in Docker. Quotas are turned on for the file system the first time a limit is
set, or at start when ``btrfs.min_space`` is given. A layer made from a layer
with a limit inherits the limit unless given its own. Diffs come from
:class:`~engine.drivers.graph.NaiveDiffDriver`, as in Docker.

Leftover ``.tmp-*`` and ``.rm-*`` subvolumes (a crash mid-way) are deleted
when the driver starts.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from importlib import metadata

from engine.drivers.graph import NaiveDiffDriver, RefCounts, validate_id
from engine.errors import (
    Conflict,
    HostError,
    IncompatibleFilesystem,
    InvalidParameter,
    NotFound,
    PrerequisitesNotMet,
)
from engine.sys import fs, libc
from engine_graph_btrfs import btrfs

LOG = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"
_RM_PREFIX = ".rm-"


def parse_size(key: str, value: str) -> int:
    """A size as Docker's ``units.RAMInBytes`` reads it (``10G`` is 10 GiB, a bare number bytes).

    :raises InvalidParameter: with go-units' words.
    """
    from engine.client.flagparse import ram_in_bytes

    try:
        return ram_in_bytes(value)
    except ValueError as exc:
        raise InvalidParameter(f"btrfs: {key}: {exc}") from None


def human_size(size: float) -> str:
    """go-units ``HumanSize`` (decimal units), as Docker's messages print sizes."""
    from engine.utils.progress import human_size as go_human_size

    return go_human_size(size)


def parse_options(options: Sequence[str]) -> int:
    """The daemon's ``--storage-opt`` values for btrfs; return ``btrfs.min_space`` in bytes (0 if not given).

    :raises InvalidParameter: with Docker's words (``Unknown option ...``).
    """
    min_space = 0
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise InvalidParameter(f"Unable to parse key/value option: {option}")
        key = key.strip().lower()
        if key == "btrfs.min_space":
            min_space = parse_size(key, value.strip())
        else:
            raise InvalidParameter(f"btrfs: Unknown option {key}")
    return min_space


def parse_storage_opt(storage_opt: Mapping[str, str]) -> int | None:
    """A container's ``--storage-opt`` values; return its ``size`` in bytes, None when not given.

    :raises InvalidParameter: for any other key (Docker's ``Unknown option``).
    """
    size: int | None = None
    for key, value in storage_opt.items():
        if key.lower() == "size":
            size = parse_size("size", value)
        else:
            raise InvalidParameter(f"Unknown option {key}")
    return size


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _kernel_release() -> str:
    return os.uname().release


def _version() -> str:
    try:
        return metadata.version("engine-graph-btrfs")
    except metadata.PackageNotFoundError:
        return "unknown"


class BtrfsDriver(NaiveDiffDriver):
    """btrfs subvolumes: each layer a snapshot of its parent (O(1) create), quotas through qgroups.

    :param home: the driver's state directory, ``<root>/btrfs``, on btrfs.
    :param options: ``--storage-opt`` values: ``btrfs.min_space=<size>``.
    """

    name = "btrfs"

    def __init__(self, home: str, options: Sequence[str] = ()) -> None:
        self.min_space = parse_options(options)
        super().__init__(home, options)
        os.makedirs(home, 0o700, exist_ok=True)
        os.chmod(home, 0o700)
        kind = btrfs.statfs_type(home)
        if kind != btrfs.BTRFS_SUPER_MAGIC:
            raise IncompatibleFilesystem(f"btrfs: {home} is not on a btrfs file system")
        self._subvolumes = os.path.join(home, "subvolumes")
        self._quotas = os.path.join(home, "quotas")
        for path in (self._subvolumes, self._quotas):
            os.makedirs(path, 0o700, exist_ok=True)
        self._refs = RefCounts(self.name)
        self._quota_on = False
        # Quotas a previous daemon turned on are on: removals then destroy qgroups too.
        self._quota_on = self._quotas_enabled()
        self._sweep()
        if self.min_space:
            # Docker turns quotas on at start when a minimum is configured.
            self._enable_quota()

    @classmethod
    def probe(cls, home: str, options: Sequence[str] = ()) -> None:
        """Check that ``home`` (or, before it exists, its nearest existing parent) is on btrfs.

        :raises IncompatibleFilesystem: when it is not.
        :raises PrerequisitesNotMet: when the kernel has no btrfs.
        :raises InvalidParameter: for a storage option btrfs does not take.
        """
        parse_options(options)
        where = _nearest_existing(home)
        if btrfs.statfs_type(where) != btrfs.BTRFS_SUPER_MAGIC:
            backing = fs.backing_filesystem(where)
            shown = home if where == os.path.abspath(home) else f"{home} ({where}, for now)"
            raise IncompatibleFilesystem(f"btrfs: {shown} is on {backing}, not on btrfs")
        if not libc.openat2_supported():
            raise PrerequisitesNotMet("btrfs: openat2(2) is needed for safe layer extraction (Linux 5.6 or later)")

    # ---- paths and state

    def _path(self, id: str) -> str:
        return os.path.join(self._subvolumes, validate_id(id))

    def _quota_file(self, id: str) -> str:
        return os.path.join(self._quotas, id)

    @staticmethod
    def _is_layer(path: str) -> bool:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        return btrfs.is_subvolume(st)

    def _open_subvolumes(self) -> int:
        return btrfs.open_dir(self._subvolumes)

    def _sweep(self) -> None:
        """Delete what a crash left half created or half removed, and quota files without a layer."""
        fd = self._open_subvolumes()
        try:
            for name in os.listdir(fd):
                if name.startswith((_TMP_PREFIX, _RM_PREFIX)):
                    LOG.info("btrfs: removing leftover %s", name)
                    self._delete(fd, name)
        finally:
            os.close(fd)
        for name in os.listdir(self._quotas):
            if not self._is_layer(os.path.join(self._subvolumes, name)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._quota_file(name))

    def _delete(self, parent_fd: int, name: str) -> None:
        """Delete the subvolume ``name`` (nested ones first) and its qgroup; a plain directory too."""
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if not btrfs.is_subvolume(st):
            fs.remove_at(parent_fd, name, shown=os.path.join(self._subvolumes, name))
            return
        subvolid: int | None = None
        if self._quota_on:
            fd = btrfs.open_dir(name, dir_fd=parent_fd)
            try:
                subvolid = btrfs.subvolume_id(fd)
            finally:
                os.close(fd)
        try:
            btrfs.delete_subvolume_tree(parent_fd, name)
        except OSError as exc:
            raise HostError(
                f"btrfs: cannot delete subvolume {os.path.join(self._subvolumes, name)}: {exc.strerror}"
            ) from exc
        if subvolid is not None:
            try:
                btrfs.qgroup_destroy(parent_fd, subvolid)
            except OSError as exc:
                # EBUSY: the cleaner has not freed the subvolume's extents
                # yet; the kernel drops the qgroup itself once it has.
                LOG.debug("btrfs: qgroup 0/%d stays for now: %s", subvolid, exc.strerror)

    def _enable_quota(self) -> None:
        if self._quota_on:
            return
        fd = self._open_subvolumes()
        try:
            btrfs.quota_enable(fd)
        except OSError as exc:
            raise HostError(f"btrfs: cannot enable quotas on {self.home}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        self._quota_on = True

    def _quotas_enabled(self) -> bool:
        """Whether the file system has quotas on (sysfs); what we know ourselves when sysfs cannot say."""
        fd = self._open_subvolumes()
        try:
            return btrfs.quotas_enabled(fd)
        except OSError:
            return self._quota_on
        finally:
            os.close(fd)

    def _read_quota(self, id: str) -> int | None:
        try:
            with open(self._quota_file(id)) as f:
                return int(f.read().strip())
        except FileNotFoundError:
            return None
        except ValueError:
            LOG.warning("btrfs: ignoring the unreadable quota file of layer %s", id)
            return None

    # ---- lifecycle

    def create(self, id: str, parent: str | None = None, mount_label: str = "") -> None:
        """Create layer ``id``: an empty subvolume, or a snapshot of ``parent`` (with its size limit, if any).

        :raises Conflict: if ``id`` exists.
        :raises NotFound: if ``parent`` does not.
        """
        self._create(id, parent, None)

    def create_read_write(
        self,
        id: str,
        parent: str | None = None,
        mount_label: str = "",
        storage_opt: Mapping[str, str] | None = None,
    ) -> None:
        """Create a container's layer, limited to ``storage_opt["size"]`` bytes when given (a qgroup).

        :raises InvalidParameter: for an unknown option, a size of zero, or
            one below ``btrfs.min_space`` (Docker's words).
        """
        size = parse_storage_opt(storage_opt or {})
        if size is not None:
            if size <= 0:
                raise InvalidParameter(f"btrfs: invalid storage size: {human_size(size)}")
            if self.min_space and size < self.min_space:
                raise InvalidParameter(f"btrfs: storage size cannot be less than {human_size(self.min_space)}")
        self._create(id, parent, size)

    def _create(self, id: str, parent: str | None, size: int | None) -> None:
        path = self._path(id)
        if parent is not None:
            validate_id(parent)
        if os.path.lexists(path):
            raise Conflict(f"btrfs: layer {id} already exists")
        tmp = f"{_TMP_PREFIX}{id}-{secrets.token_hex(4)}"
        fd = self._open_subvolumes()
        try:
            if parent is None:
                btrfs.create_subvolume(fd, tmp)
            else:
                self._snapshot(fd, parent, tmp)
                if size is None:
                    size = self._read_quota(parent)
            try:
                if parent is None:
                    # The kernel applies the umask to a new subvolume's root.
                    os.chmod(tmp, 0o755, dir_fd=fd)
                if size is not None:
                    self._limit(fd, tmp, size)
                    fs.atomic_write(self._quota_file(id), str(size).encode(), 0o600)
                self._publish(fd, tmp, id)
            except BaseException:
                if size is not None and not self._is_layer(path):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._quota_file(id))
                self._delete(fd, tmp)
                raise
        except OSError as exc:
            raise HostError(f"btrfs: cannot create layer {id}: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)
        LOG.debug("btrfs: created layer %s (parent %s, limit %s)", id, parent, size)

    @staticmethod
    def _publish(fd: int, tmp: str, id: str) -> None:
        """Rename the finished subvolume to its id; exclusive, so a concurrent create of the same id loses."""
        try:
            libc.renameat2(tmp, id, libc.RENAME_NOREPLACE, src_dir_fd=fd, dst_dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise Conflict(f"btrfs: layer {id} already exists") from exc
            raise

    def _snapshot(self, fd: int, parent: str, name: str) -> None:
        """Snapshot ``parent`` to ``name``, holding a reference so it cannot go away meanwhile."""
        self.get(parent)
        try:
            source = btrfs.open_dir(parent, dir_fd=fd)
            try:
                btrfs.snapshot(source, fd, name)
            finally:
                os.close(source)
        finally:
            self.put(parent)

    def _limit(self, fd: int, name: str, size: int) -> None:
        self._enable_quota()
        sub = btrfs.open_dir(name, dir_fd=fd)
        try:
            btrfs.qgroup_limit(sub, size)
        except OSError as exc:
            raise HostError(f"btrfs: cannot limit the size of a layer to {size} bytes: {exc.strerror}") from exc
        finally:
            os.close(sub)

    def remove(self, id: str) -> None:
        """Remove layer ``id``: its subvolume (nested subvolumes first), its qgroup and its quota file.

        :raises NotFound: if it does not exist.
        :raises Conflict: while :meth:`get` references are held.
        """
        path = self._path(id)
        with self._refs.lock:
            refs = self._refs.count(id)
            if refs:
                raise Conflict(f"btrfs: layer {id} is in use ({refs} references)")
            if not self._is_layer(path):
                raise NotFound(f"btrfs: layer {id} does not exist")
            # Renamed under the lock: from here on get() and exists() see it gone.
            doomed = f"{_RM_PREFIX}{id}-{secrets.token_hex(4)}"
            libc.renameat2(path, os.path.join(self._subvolumes, doomed), libc.RENAME_NOREPLACE)
            # A size limit goes with the layer (a new layer of the same id must not inherit it).
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._quota_file(id))
        fd = self._open_subvolumes()
        try:
            self._delete(fd, doomed)
        finally:
            os.close(fd)
        LOG.debug("btrfs: removed layer %s", id)

    def exists(self, id: str) -> bool:
        return self._is_layer(self._path(id))

    # ---- get and put

    def get(self, id: str, mount_label: str = "") -> str:
        """The layer's subvolume; reference counted like a mount (nothing is mounted).

        :raises NotFound: if the layer does not exist.
        """
        path = self._path(id)
        with self._refs.lock:
            if not self._is_layer(path):
                raise NotFound(f"btrfs: layer {id} does not exist")
            self._refs.take(id)
        return path

    def put(self, id: str) -> None:
        """Release one :meth:`get` reference."""
        self._refs.release(validate_id(id))

    def references(self, id: str) -> int:
        """How many :meth:`get` references layer ``id`` has (for tests and ``engine-admin``)."""
        return self._refs.count(validate_id(id))

    def cleanup(self) -> None:
        """Nothing is mounted; forget the references still held (the daemon is stopping)."""
        self._refs.clear()

    # ---- information

    def quota(self, id: str) -> int | None:
        """The size limit of layer ``id`` in bytes, None when it has none."""
        if not self.exists(id):
            raise NotFound(f"btrfs: layer {id} does not exist")
        return self._read_quota(id)

    def status(self) -> list[tuple[str, str]]:
        """Docker's two btrfs lines, then what this driver adds (quotas, the minimum size)."""
        quotas = self._quotas_enabled()
        status = [
            ("Build Version", f"engine-graph-btrfs {_version()} (btrfs ioctls, no btrfs-progs)"),
            ("Library Version", f"Linux {_kernel_release()} btrfs"),
            ("Quotas Enabled", str(quotas).lower()),
        ]
        if self.min_space:
            status.append(("Min Space", human_size(self.min_space)))
        return status

    def metadata(self, id: str) -> dict[str, str]:
        path = self._path(id)
        if not self._is_layer(path):
            raise NotFound(f"btrfs: layer {id} does not exist")
        data = {"Dir": path}
        size = self._read_quota(id)
        if size is not None:
            data["Quota"] = str(size)
        return data
