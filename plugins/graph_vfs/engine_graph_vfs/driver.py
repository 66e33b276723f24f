"""The vfs graph driver: every layer is a plain directory holding a full copy of its parent.

On disk, in the driver's home ``<root>/vfs``::

    <home>/                       0700
      dir/                        0700
        <id>/                     the layer's whole tree: a copy of its
                                  parent's tree, then its own changes
        <id>-init/                a container's init layer, likewise
        .tmp-<id>-<random>/       a layer being created; renamed to <id>
                                  only when the copy is complete
        .rm-<id>-<random>/        a layer being removed; renamed away first,
                                  so it stops existing at once

Nothing is mounted: :meth:`VfsDriver.get` hands out the directory itself, so
the driver works on any file system and in any namespace, at the price of
copying every parent in full (slow to create, big on disk). Docker uses it
for volumes and as the last resort. Diffs come from
:class:`~engine.drivers.graph.NaiveDiffDriver`, which compares a layer's tree
with its parent's.

Leftover ``.tmp-*`` and ``.rm-*`` directories (a crash mid-way) are removed
when the driver starts.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import tempfile
from collections.abc import Sequence

from engine.drivers.graph import NaiveDiffDriver, RefCounts, validate_id
from engine.errors import Conflict, InvalidParameter, NotFound, PrerequisitesNotMet
from engine.sys import fs, libc

LOG = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"
_RM_PREFIX = ".rm-"
#: How long a shutdown waits for the deletion of removed layers (the next start sweeps the rest).
REMOVAL_WAIT = 30.0


def _check_options(options: Sequence[str]) -> None:
    for option in options:
        raise InvalidParameter(f"vfs: unknown storage option {option!r} (vfs takes none)")


class VfsDriver(NaiveDiffDriver):
    """Plain directories: each layer a full copy of its parent (works everywhere, slow, big).

    :param home: the driver's state directory, ``<root>/vfs``.
    :param options: ``--storage-opt`` values; vfs accepts none.
    """

    name = "vfs"

    def __init__(self, home: str, options: Sequence[str] = ()) -> None:
        _check_options(options)
        super().__init__(home, options)
        self._dirs = os.path.join(home, "dir")
        os.makedirs(self._dirs, 0o700, exist_ok=True)
        os.chmod(home, 0o700)
        self._refs = RefCounts(self.name)
        #: Deletes removed layers (renamed to .rm-*) beside the next request (see remove()).
        self._reaper = fs.Reaper(self.name)
        self._sweep()

    @classmethod
    def probe(cls, home: str, options: Sequence[str] = ()) -> None:
        """vfs runs on any file system; it only needs openat2(2) for safe extraction.

        :raises PrerequisitesNotMet: on kernels older than 5.6.
        :raises InvalidParameter: for any storage option.
        """
        _check_options(options)
        if not libc.openat2_supported():
            raise PrerequisitesNotMet("vfs: openat2(2) is needed for safe layer extraction (Linux 5.6 or later)")

    def _sweep(self) -> None:
        """Remove what a crash left half created or half removed."""
        for name in os.listdir(self._dirs):
            if name.startswith((_TMP_PREFIX, _RM_PREFIX)):
                LOG.info("vfs: removing leftover %s", name)
                fs.safe_rmtree(os.path.join(self._dirs, name))

    def _path(self, id: str) -> str:
        return os.path.join(self._dirs, validate_id(id))

    def _is_layer(self, path: str) -> bool:
        return os.path.isdir(path) and not os.path.islink(path)

    def create(self, id: str, parent: str | None = None, mount_label: str = "") -> None:
        """Create layer ``id``: an empty 0755 directory, or a full copy of ``parent``.

        :raises Conflict: if ``id`` exists.
        :raises NotFound: if ``parent`` does not.
        """
        path = self._path(id)
        if parent is not None:
            validate_id(parent)
        if os.path.lexists(path):
            raise Conflict(f"vfs: layer {id} already exists")
        tmp = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{id}-", dir=self._dirs)
        try:
            if parent is None:
                os.chmod(tmp, 0o755)
            else:
                source = self.get(parent)
                try:
                    fs.copy_tree(source, tmp)
                finally:
                    self.put(parent)
            try:
                # Exclusive publish: plain rename(2) would replace an empty
                # directory created by a concurrent create of the same id.
                libc.renameat2(tmp, path, libc.RENAME_NOREPLACE)
            except OSError as exc:
                if exc.errno == errno.EEXIST:
                    raise Conflict(f"vfs: layer {id} already exists") from exc
                raise
        except BaseException:
            fs.safe_rmtree(tmp)
            raise
        LOG.debug("vfs: created layer %s (parent %s)", id, parent)

    def remove(self, id: str) -> None:
        """Remove layer ``id``: out of sight at once, its tree deleted in the background
        (:meth:`wait_removed`).

        :raises NotFound: if it does not exist.
        :raises Conflict: while :meth:`get` references are held.
        """
        path = self._path(id)
        with self._refs.lock:
            refs = self._refs.count(id)
            if refs:
                raise Conflict(f"vfs: layer {id} is in use ({refs} references)")
            if not self._is_layer(path):
                raise NotFound(f"vfs: layer {id} does not exist")
            # Renamed under the lock: from here on get() and exists() see it
            # gone, and the slow deletion runs without the lock.
            doomed = os.path.join(self._dirs, f"{_RM_PREFIX}{id}-{secrets.token_hex(4)}")
            libc.renameat2(path, doomed, libc.RENAME_NOREPLACE)
        # A vfs layer is a whole copy of the image: thousands of unlink(2)s that need not
        # hold up a `docker rm`. The next start sweeps what a crash leaves.
        self._reaper.delete(doomed)
        LOG.debug("vfs: removed layer %s", id)

    def wait_removed(self, timeout: float | None = None) -> bool:
        return self._reaper.wait(timeout)

    def get(self, id: str, mount_label: str = "") -> str:
        """The layer's directory; reference counted like a real mount.

        :raises NotFound: if the layer does not exist.
        """
        path = self._path(id)
        with self._refs.lock:
            if not self._is_layer(path):
                raise NotFound(f"vfs: layer {id} does not exist")
            self._refs.take(id)
        return path

    def put(self, id: str) -> None:
        """Release one :meth:`get` reference."""
        self._refs.release(validate_id(id))

    def references(self, id: str) -> int:
        """How many :meth:`get` references layer ``id`` has (for tests and ``engine-admin``)."""
        return self._refs.count(validate_id(id))

    def exists(self, id: str) -> bool:
        return self._is_layer(self._path(id))

    def status(self) -> list[tuple[str, str]]:
        layers = sum(1 for name in os.listdir(self._dirs) if not name.startswith("."))
        return [("Backing Filesystem", fs.backing_filesystem(self.home)), ("Layers", str(layers))]

    def metadata(self, id: str) -> dict[str, str]:
        path = self._path(id)
        if not self._is_layer(path):
            raise NotFound(f"vfs: layer {id} does not exist")
        return {"Dir": path}

    def cleanup(self) -> None:
        """Nothing is mounted; forget the references still held (the daemon is stopping), and
        let the deletions under way finish (for :data:`REMOVAL_WAIT` seconds at most)."""
        self._refs.clear()
        if not self._reaper.wait(REMOVAL_WAIT):
            LOG.warning("vfs: removed layers still being deleted; the next start sweeps them")
