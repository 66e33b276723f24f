"""The layer store: content-addressed layers on top of the graph driver.

A layer is identified by its chain ID (OCI image spec): the chain ID of the
bottom layer is its diff ID (the sha256 of its uncompressed tar), and each
layer above has ``sha256(parent_chain_id + " " + diff_id)``. Each layer is a
graph driver layer whose driver ID is the chain ID's hex and whose parent is
the layer below, so the same tarball gives the same IDs here as in Docker.

On disk::

    <root>/layerdb/
        <chain hex>/           one registered layer
            diff               its diff ID, "sha256:<hex>"
            size               bytes of content it adds (the seed's layersize)
            parent             the parent's chain ID (absent for a bottom layer)
            tar-split.json.gz  what re-creates the original tar byte for byte
            tar-size           length in bytes of that tar
        tmp-<chain hex>/       a registration under way (seed ch. 11: work in
                               a temp dir, then one atomic rename)

Registration follows the seed (ch. 11 §3): validate the ID, refuse an
existing one, create the staging dir, ``driver.create(id, parent)``, apply
the layer through the driver while hashing it, check the diff ID, write the
metadata, fsync, then rename the staging dir into place. A crash at any step
leaves a ``tmp-*`` dir that :meth:`LayerStore.recover` removes with the
driver layer it may have created; nothing is ever half-registered.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, cast

from engine.archive import tarsplit
from engine.archive.idshift import ShiftedTar
from engine.drivers.graph import GraphDriver
from engine.errors import Conflict, HostError, InvalidParameter, NotFound
from engine.sys.fs import fsync_dir, safe_rmtree, write_synced
from engine.utils.idmap import OVERFLOW_ID, IDMap

LOG = logging.getLogger(__name__)

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
#: The record that re-creates a layer's original tar (see engine.archive.tarsplit).
TAR_SPLIT = "tar-split.json.gz"


def chain_id(parent: str | None, diff_id: str) -> str:
    """The chain ID of a layer with ``diff_id`` on top of chain ``parent``."""
    if parent is None:
        return diff_id
    return "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """Chain IDs of every layer of an image, bottom first."""
    out: list[str] = []
    parent = None
    for diff in diff_ids:
        parent = chain_id(parent, diff)
        out.append(parent)
    return out


def check_digest(value: str, what: str = "digest") -> str:
    if not isinstance(value, str) or not _DIGEST.match(value):
        raise InvalidParameter(f"invalid {what}: {value!r}")
    return value


class DiffIDMismatch(InvalidParameter):
    """A layer tar's content does not hash to the diff ID it was registered under."""


@dataclass(frozen=True)
class Layer:
    """A registered layer.

    ``size`` is the bytes of content it adds; ``tar_size`` the length of its
    original tar (what ``docker save`` and push send).
    """

    chain_id: str
    diff_id: str
    parent: str | None
    size: int
    tar_size: int = 0

    @property
    def driver_id(self) -> str:
        return self.chain_id.split(":", 1)[1]


class DigestReader(io.RawIOBase):
    """Pass a stream through while hashing and counting what is read.

    :param tap: also called with every chunk read (the tar-split recorder).
    :param hashing: False only counts (the caller knows the digest already); :attr:`digest` is
        then None.
    """

    def __init__(self, stream: IO[bytes], tap: Callable[[bytes], None] | None = None, hashing: bool = True) -> None:
        self._stream = stream
        self.hasher = hashlib.sha256() if hashing else None
        self.count = 0
        self._tap = tap

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._stream.read(len(buffer))
        if not data:
            return 0
        n = len(data)
        buffer[:n] = data
        if self.hasher is not None:
            self.hasher.update(data)
        self.count += n
        if self._tap is not None:
            self._tap(data)
        return n

    def drain(self) -> None:
        """Read (and hash) whatever the consumer left, e.g. tar padding."""
        while True:
            data = self._stream.read(1 << 20)
            if not data:
                return
            if self.hasher is not None:
                self.hasher.update(data)
            self.count += len(data)
            if self._tap is not None:
                self._tap(data)

    @property
    def digest(self) -> str | None:
        return "sha256:" + self.hasher.hexdigest() if self.hasher is not None else None


class LayerStore:
    """Registered layers over one graph driver.

    :param root: the daemon root (the store lives in ``<root>/layerdb``).
    :param driver: the graph driver layers are stored in.
    :param idmap: with ``--userns-remap``, the map container IDs go through on
        the way into the driver (and back on the way out of a container's layer).
    """

    def __init__(self, root: str, driver: GraphDriver, idmap: IDMap | None = None) -> None:
        self.dir = os.path.join(root, "layerdb")
        self.driver = driver
        self.idmap = idmap
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self._layers: dict[str, Layer] = {}
        self._lock = threading.RLock()
        self._registering: dict[str, threading.Lock] = {}
        self.recover()
        self._load()

    # the owners of files, with --userns-remap
    def to_host(self, stream: IO[bytes]) -> IO[bytes]:
        """A tar of container IDs (a layer, a copy into a container) as the host stores it."""
        if self.idmap is None:
            return stream
        return ShiftedTar(stream, self.idmap.to_host_uid, self.idmap.to_host_gid)  # type: ignore[return-value]

    def to_container(self, stream: IO[bytes]) -> IO[bytes]:
        """A tar of a container's files on the host (a diff, an export) in the container's IDs."""
        if self.idmap is None:
            return stream
        idmap = self.idmap
        # A host ID the map does not cover (a file the host made) is the overflow ID, as the
        # kernel shows it inside the namespace (user_namespaces(7)).
        return ShiftedTar(  # type: ignore[return-value]
            stream,
            lambda uid: idmap.to_container_uid(uid, OVERFLOW_ID),
            lambda gid: idmap.to_container_gid(gid, OVERFLOW_ID),
        )

    def host_owner(self, uid: int, gid: int) -> tuple[int, int]:
        """The host IDs of a container's ``uid``:``gid``."""
        if self.idmap is None:
            return uid, gid
        return self.idmap.to_host_uid(uid), self.idmap.to_host_gid(gid)

    # loading and recovery
    def recover(self) -> None:
        """Undo registrations a crash interrupted (``tmp-*`` staging dirs)."""
        for name in os.listdir(self.dir):
            if not name.startswith("tmp-"):
                continue
            hex_id = name[4:]
            if not os.path.isdir(os.path.join(self.dir, hex_id)) and self.driver.exists(hex_id):
                LOG.info("removing layer %s left half-registered by a crash", hex_id[:12])
                self.driver.remove(hex_id)
            safe_rmtree(os.path.join(self.dir, name))

    def _load(self) -> None:
        for name in os.listdir(self.dir):
            if len(name) != 64 or name.startswith("tmp-"):
                continue
            try:
                layer = self._read(name)
            except (OSError, ValueError) as exc:
                LOG.error("layer %s is unreadable (%s); ignoring it", name[:12], exc)
                continue
            self._layers[layer.chain_id] = layer

    def _read(self, hex_id: str) -> Layer:
        base = os.path.join(self.dir, hex_id)
        with open(os.path.join(base, "diff"), encoding="ascii") as fh:
            diff = fh.read().strip()
        with open(os.path.join(base, "size"), encoding="ascii") as fh:
            size = int(fh.read().strip())
        parent = None
        try:
            with open(os.path.join(base, "parent"), encoding="ascii") as fh:
                parent = fh.read().strip() or None
        except FileNotFoundError:
            pass
        with open(os.path.join(base, "tar-size"), encoding="ascii") as fh:
            tar_size = int(fh.read().strip())
        return Layer("sha256:" + hex_id, check_digest(diff), parent, size, tar_size)

    # queries
    def get(self, chain: str) -> Layer:
        try:
            return self._layers[chain]
        except KeyError:
            raise NotFound(f"layer {chain} not found") from None

    def exists(self, chain: str) -> bool:
        return chain in self._layers

    def all(self) -> list[Layer]:
        with self._lock:
            return list(self._layers.values())

    def chain(self, chain: str) -> list[Layer]:
        """The layer and all below it, top first."""
        out = []
        cur: str | None = chain
        while cur is not None:
            layer = self.get(cur)
            out.append(layer)
            cur = layer.parent
        return out

    # registration
    def register(
        self, stream: IO[bytes], parent: str | None, diff_id: str | None = None, verified: bool = False
    ) -> tuple[Layer, bool]:
        """Apply an uncompressed layer tar on top of ``parent`` and register it.

        :param stream: the layer tar, already decompressed (its sha256 is the
            diff ID).
        :param parent: the chain ID below, or None for a bottom layer.
        :param diff_id: the expected diff ID (from the image config). Without
            it the stream is first spooled to a temporary file to learn it.
        :param verified: ``diff_id`` was computed by the caller from this very stream (a spool
            it wrote): it is not hashed again.
        :returns: (the layer, whether it was created now); an existing layer
            is returned as it is, without reading the stream.
        :raises InvalidParameter: the tar is corrupt, or (:class:`DiffIDMismatch`) its
            content does not match ``diff_id``; nothing is left behind.
        """
        if parent is not None and not self.exists(parent):
            raise NotFound(f"parent layer {parent} not found")
        if diff_id is None:
            return self._register_unknown(stream, parent)
        check_digest(diff_id, "diff ID")
        chain = chain_id(parent, diff_id)
        with self._register_lock(chain):
            if chain in self._layers:
                return self._layers[chain], False
            return self._register(stream, parent, diff_id, chain, verified), True

    def _register_unknown(self, stream: IO[bytes], parent: str | None) -> tuple[Layer, bool]:
        import tempfile

        with tempfile.TemporaryFile(dir=os.environ.get("TMPDIR")) as spool:
            reader = DigestReader(stream)
            while True:
                data = reader.read(1 << 20)
                if not data:
                    break
                spool.write(data)
            spool.seek(0)
            return self.register(spool, parent, reader.digest, verified=True)

    def _register_lock(self, chain: str) -> threading.Lock:
        with self._lock:
            return self._registering.setdefault(chain, threading.Lock())

    def _register(self, stream: IO[bytes], parent: str | None, diff_id: str, chain: str, verified: bool) -> Layer:
        hex_id = chain.split(":", 1)[1]
        staging = os.path.join(self.dir, "tmp-" + hex_id)
        final = os.path.join(self.dir, hex_id)
        if os.path.exists(final):
            raise Conflict(f"layer {chain} already exists")
        os.makedirs(staging, mode=0o700, exist_ok=True)
        parent_hex = parent.split(":", 1)[1] if parent else None
        created = False
        try:
            if self.driver.exists(hex_id):
                # Left by a crash that happened before the staging dir was made.
                self.driver.remove(hex_id)
            self.driver.create(hex_id, parent_hex)
            created = True
            with open(os.path.join(staging, TAR_SPLIT), "wb") as record:
                recorder = tarsplit.Recorder(record)
                reader = DigestReader(stream, tap=recorder.feed, hashing=not verified)
                size = self.driver.apply_diff(hex_id, parent_hex, self.to_host(cast(IO[bytes], reader)))
                reader.drain()
                recorder.close()
                record.flush()
                os.fsync(record.fileno())
            if not verified and reader.digest != diff_id:
                raise DiffIDMismatch(
                    f"layer content does not match its diff ID: expected {diff_id}, got {reader.digest}"
                )
            # Plain writes: the staging dir becomes visible in one rename.
            write_synced(os.path.join(staging, "diff"), diff_id.encode())
            write_synced(os.path.join(staging, "size"), str(size).encode())
            write_synced(os.path.join(staging, "tar-size"), str(reader.count).encode())
            if parent:
                write_synced(os.path.join(staging, "parent"), parent.encode())
            fsync_dir(staging)
            os.rename(staging, final)
            fsync_dir(self.dir)
        except BaseException as exc:
            if created:
                try:
                    self.driver.remove(hex_id)
                except Exception:
                    LOG.exception("could not remove layer %s after a failed registration", hex_id[:12])
            safe_rmtree(staging)
            if isinstance(exc, OSError) and not isinstance(exc, (InvalidParameter,)):
                raise HostError(f"registering layer {diff_id}: {exc}") from exc
            raise
        layer = Layer(chain, diff_id, parent, size, reader.count)
        with self._lock:
            self._layers[chain] = layer
        LOG.debug("registered layer %s (diff %s, %d bytes)", hex_id[:12], diff_id[7:19], size)
        return layer

    # the original tar
    def tar_stream(self, chain: str) -> Iterator[bytes]:
        """The layer's tar exactly as it was registered (its sha256 is the diff ID)."""
        from engine.sys import libc

        layer = self.get(chain)
        path = self.driver.get(layer.driver_id)
        root_fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

        def open_file(name: str) -> int:
            # Confined to the layer: symlinks in it resolve inside it.
            return libc.openat2(
                root_fd, name, os.O_RDONLY | os.O_NOFOLLOW, resolve=libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS
            )

        try:
            with open(os.path.join(self.dir, layer.driver_id, TAR_SPLIT), "rb") as record:
                yield from tarsplit.replay(record, open_file)
        finally:
            os.close(root_fd)
            self.driver.put(layer.driver_id)

    # removal
    def gc(self, in_use: set[str]) -> list[Layer]:
        """Remove every layer not in ``in_use`` (which must hold whole chains).

        :returns: the removed layers, top ones first.
        """
        removed: list[Layer] = []
        with self._lock:
            doomed = [layer for layer in self._layers.values() if layer.chain_id not in in_use]
            # Remove children before parents: drivers like overlay keep
            # references from a layer to its lower ones.
            depth = {layer.chain_id: len(self.chain(layer.chain_id)) for layer in doomed}
            for layer in sorted(doomed, key=lambda item: -depth[item.chain_id]):
                hex_id = layer.driver_id
                try:
                    # Unregister first: a crash after this leaves a driver
                    # layer without metadata, which recover() cannot see, so
                    # mark it as a pending registration instead.
                    os.rename(os.path.join(self.dir, hex_id), os.path.join(self.dir, "tmp-" + hex_id))
                    if self.driver.exists(hex_id):
                        self.driver.remove(hex_id)
                    safe_rmtree(os.path.join(self.dir, "tmp-" + hex_id))
                except OSError as exc:
                    LOG.error("removing layer %s: %s", hex_id[:12], exc)
                    continue
                del self._layers[layer.chain_id]
                removed.append(layer)
        return removed
