"""The devicemapper graph driver: one thin device per layer, each a snapshot of its parent, in one thin pool.

On disk, in the driver's home ``<root>/devicemapper`` (moby's ``daemon/graphdriver/devmapper``)::

    <home>/                        0700
      devicemapper/data            the pool's data, a sparse file (dm.loopdatasize,
                                   100G by default), unless dm.thinpooldev or
                                   dm.datadev name real devices
      devicemapper/metadata        the pool's metadata, likewise (dm.loopmetadatasize, 2G)
      metadata/                    this driver's records (engine_graph_devmapper.metadata):
        base, <id>, ...            one JSON file per thin device
        deviceset-metadata         the next device id, the base device's UUID and fs
        transaction-metadata       the transaction in progress
      mnt/<id>/                    where get() mounts the layer's device
        rootfs/                    the layer's tree (what get() returns)
        id                         the layer's id (to find a device by hand)
        lost+found/                ext4's

Device-mapper names (``dmsetup ls``)::

    engine-<major>:<minor>-<inode>-pool     the pool (unless dm.thinpooldev)
    engine-<major>:<minor>-<inode>-base     the base device (while active)
    engine-<major>:<minor>-<inode>-<id>     a layer's device (while mounted)

where major, minor and inode are those of the home directory, so two daemons
with different roots never share names.

The base device is a thin device formatted once (ext4 or xfs, ``dm.fs``,
``dm.basesize``, 10G by default) and never mounted. A layer without a parent
is a snapshot of the base device, a layer with a parent a snapshot of the
parent's device (the pool's ``create_snap`` message): O(1) whatever the
layer's size, sharing every block until written. A snapshot of an active
device is taken with the origin suspended, as the kernel requires.

``get`` activates the layer's device (a ``thin`` table over the pool) and
mounts it; the last ``put`` unmounts and deactivates it (with
``dm.use_deferred_removal``, a device still open elsewhere is removed at its
last close). ``remove`` deletes the thin device from the pool; with
``dm.use_deferred_deletion``, a device the kernel reports busy is marked
deleted and a worker retries until it goes. Both are on by default where the
kernel can remove a device at its last close (device-mapper 4.27), as
moby turns them on; ``=false`` turns them off. Every change to the pool is a
transaction recorded under ``metadata/`` first (see
:mod:`engine_graph_devmapper.metadata`), rolled back at start if a crash
interrupted it.

Device-mapper is driven through libdevmapper (:mod:`engine_graph_devmapper.dm`);
only the file system tools (``mkfs``, ``tune2fs``, ``blkid``, ``resize2fs``,
``xfs_growfs``) run as programs, once for the base device and when a layer
asks for more than the base size. Diffs come from
:class:`~engine.drivers.graph.NaiveDiffDriver`, as in Docker.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from engine.drivers.graph import NaiveDiffDriver, human_size, validate_id
from engine.errors import (
    Conflict,
    EngineError,
    HostError,
    InvalidParameter,
    NotFound,
    NotSupported,
    PrerequisitesNotMet,
)
from engine.sys import fs, libc, loop
from engine_graph_devmapper import dm
from engine_graph_devmapper.metadata import BASE, Device, DeviceIds, MetadataStore, Transaction
from engine_graph_devmapper.options import DmOptions, parse_options, ram_in_bytes

LOG = logging.getLogger(__name__)

#: BLKDISCARD of <linux/fs.h>: tell the device a byte range is unused.
BLKDISCARD = 0x1277
#: How often (and how long apart) a busy device is tried again before giving
#: up: udev and blkid open a device briefly after every change.
REMOVE_RETRIES = 100
REMOVE_RETRY_DELAY = 0.1
#: How often the deferred deletion worker retries (moby: 30 s).
DELETION_INTERVAL = 30.0
#: The prefix of every device-mapper name this driver makes.
NAME_PREFIX = "engine"

_MISC = "/proc/misc"
_MODPROBE = "/sbin/modprobe"

UDEV_SYNC_MESSAGE = (
    "devmapper: Udev sync is not supported. This will lead to data loss and unexpected behavior. Install a more "
    "recent version of libdevmapper or select a different storage driver. For more information, see "
    "https://docs.docker.com/engine/reference/commandline/dockerd/#storage-driver-options"
)

#: mount(8) option names that are mount(2) flags rather than file-system data.
_MOUNT_FLAGS = {
    "ro": libc.MS_RDONLY,
    "nosuid": libc.MS_NOSUID,
    "nodev": libc.MS_NODEV,
    "noexec": libc.MS_NOEXEC,
    "noatime": libc.MS_NOATIME,
    "nodiratime": libc.MS_NODIRATIME,
    "relatime": libc.MS_RELATIME,
    "strictatime": libc.MS_STRICTATIME,
}


# --------------------------------------------------------------------------
# pure helpers (tested without a kernel)


def device_prefix(home_stat: os.stat_result) -> str:
    """``engine-<major>:<minor>-<inode>`` of the home directory (moby's ``docker-...``)."""
    return f"{NAME_PREFIX}-{os.major(home_stat.st_dev)}:{os.minor(home_stat.st_dev)}-{home_stat.st_ino}"


def join_mount_options(*parts: str) -> str:
    return ",".join(p for p in parts if p)


def split_mount_options(options: str) -> tuple[int, str]:
    """(mount(2) flags, file-system data) of a mount(8)-style option string."""
    flags = 0
    data: list[str] = []
    for option in filter(None, options.split(",")):
        if option in _MOUNT_FLAGS:
            flags |= _MOUNT_FLAGS[option]
        elif option != "rw":
            data.append(option)
    return flags, ",".join(data)


def mount_options(filesystem: str, configured: str, mount_label: str) -> str:
    """The options a layer's device is mounted with (moby's ``MountDevice``).

    xfs gets ``nouuid``: every snapshot carries the base device's UUID and
    xfs refuses a second mount of one UUID otherwise.
    """
    label = f'context="{mount_label}"' if mount_label else ""
    return join_mount_options("nouuid" if filesystem == "xfs" else "", configured, label)


def check_free_space(status: dm.PoolStatus, min_free_percent: int) -> None:
    """Refuse to create a device when the pool is short of space, in Docker's words.

    :raises HostError: when fewer than ``min_free_percent`` of the data or
        metadata blocks are free.
    """
    if min_free_percent == 0:
        return
    min_data = max(1, status.total_data_blocks * min_free_percent // 100)
    free_data = status.total_data_blocks - status.used_data_blocks
    if free_data < min_data:
        raise HostError(
            f"devmapper: Thin Pool has {free_data} free data blocks which is less than minimum required {min_data} "
            "free data blocks. Create more free space in thin pool or use dm.min_free_space option to change behavior"
        )
    min_meta = max(1, status.total_metadata_blocks * min_free_percent // 100)
    free_meta = status.total_metadata_blocks - status.used_metadata_blocks
    if free_meta < min_meta:
        raise HostError(
            f"devmapper: Thin Pool has {free_meta} free metadata blocks which is less than minimum required "
            f"{min_meta} free metadata blocks. Create more free metadata space in thin pool or use "
            "dm.min_free_space option to change behavior"
        )


def status_lines(
    *,
    pool_name: str,
    block_sectors: int,
    base_size: int,
    filesystem: str,
    udev_sync: bool,
    data_file: str,
    metadata_file: str,
    data_loop_file: str,
    metadata_loop_file: str,
    pool: dm.PoolStatus,
    data_available: int,
    min_free_percent: int,
    deferred_removal: bool,
    deferred_deletion: bool,
    deferred_deleted: int,
    library_version: str,
) -> list[tuple[str, str]]:
    """``docker info``'s DriverStatus for devicemapper, line for line as Docker prints it."""
    data_used, data_total = pool.data_bytes(block_sectors)
    meta_used, meta_total = pool.metadata_bytes()
    min_free = pool.total_data_blocks * min_free_percent // 100 * block_sectors * dm.SECTOR
    lines = [
        ("Pool Name", pool_name),
        ("Pool Blocksize", human_size(block_sectors * dm.SECTOR)),
        ("Base Device Size", human_size(base_size)),
        ("Backing Filesystem", filesystem),
        ("Udev Sync Supported", str(udev_sync).lower()),
    ]
    for key, value in (
        ("Data file", data_file),
        ("Metadata file", metadata_file),
        ("Data loop file", data_loop_file),
        ("Metadata loop file", metadata_loop_file),
    ):
        if value:
            lines.append((key, value))
    lines += [
        ("Data Space Used", human_size(data_used)),
        ("Data Space Total", human_size(data_total)),
        ("Data Space Available", human_size(data_available)),
        ("Metadata Space Used", human_size(meta_used)),
        ("Metadata Space Total", human_size(meta_total)),
        ("Metadata Space Available", human_size(meta_total - meta_used)),
        ("Thin Pool Minimum Free Space", human_size(min_free)),
        ("Deferred Removal Enabled", str(deferred_removal).lower()),
        ("Deferred Deletion Enabled", str(deferred_deletion).lower()),
        ("Deferred Deleted Device Count", str(deferred_deleted)),
        ("Library Version", library_version),
    ]
    return lines


def parse_storage_opt(storage_opt: Mapping[str, str], base_size: int) -> int | None:
    """A container's ``--storage-opt``: its ``size`` in bytes (None when not given), at least the base size.

    :raises InvalidParameter: in Docker's words.
    """
    size: int | None = None
    for key, value in storage_opt.items():
        if key.lower() == "size":
            size = ram_in_bytes(value)
        else:
            raise InvalidParameter(f"Unknown option {key}")
    if size is not None and size < base_size:
        raise InvalidParameter(f"devmapper: Container size cannot be smaller than {human_size(base_size)}")
    return size


# --------------------------------------------------------------------------
# host checks


def device_mapper_present(misc: str = _MISC) -> bool:
    """Whether the kernel has device-mapper: its misc device is registered (proc(5), /proc/misc).

    ``/dev/mapper/control`` alone proves nothing: libdevmapper makes the node
    itself when it is missing, kernel support or not.
    """
    try:
        with open(misc) as f:
            return any(line.split()[-1:] == ["device-mapper"] for line in f)
    except OSError:
        return False


def _modprobe(module: str, modprobe: str = _MODPROBE) -> None:
    """Load a module if kmod is installed; failure only means the caller's next check says no."""
    if not os.path.exists(modprobe):
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([modprobe, module], capture_output=True, timeout=30, check=False)


def loop_available(control: str = "/dev/loop-control") -> bool:
    """Whether loop devices can be had, loading the loop module first if needed."""
    if not os.path.exists(control):
        _modprobe("loop")
    return os.path.exists(control)


def thin_pool_available(release: str | None = None) -> bool:
    """Whether the kernel has the thin-pool target: loaded, built in, or a module to load."""
    if os.path.isdir("/sys/module/dm_thin_pool"):
        return True
    release = release or os.uname().release
    for name in ("modules.builtin", "modules.dep"):
        try:
            with open(os.path.join("/lib/modules", release, name)) as f:
                if any("dm-thin-pool.ko" in line for line in f):
                    return True
        except OSError:
            continue
    return False


# --------------------------------------------------------------------------
# the driver


Runner = Callable[..., subprocess.CompletedProcess]


class DevmapperDriver(NaiveDiffDriver):
    """device-mapper thin provisioning: each layer a thin snapshot of its parent in one pool (loop files by default).

    :param home: the driver's state directory, ``<root>/devicemapper``.
    :param options: ``--storage-opt dm.*`` values (see the README).
    :param dm_lib: the device-mapper access (default: libdevmapper).
    :param run: runs the file-system tools (:func:`subprocess.run`).
    :param deletion_interval: how often deferred deletions are retried.
    """

    name = "devmapper"

    def __init__(
        self,
        home: str,
        options: Sequence[str] = (),
        *,
        dm_lib: dm.LibDevmapper | None = None,
        run: Runner = subprocess.run,
        deletion_interval: float = DELETION_INTERVAL,
    ) -> None:
        self._dm = dm_lib or dm.LibDevmapper()
        self.opts: DmOptions = parse_options(options, deferred_supported=self._dm.deferred_remove_supported())
        super().__init__(home, options)
        self._run = run
        self._lock = threading.RLock()
        self._refs: dict[str, int] = {}
        os.makedirs(home, 0o700, exist_ok=True)
        os.chmod(home, 0o700)
        self._loop_dir = os.path.join(home, "devicemapper")
        self._mnt = os.path.join(home, "mnt")
        for path in (self._loop_dir, self._mnt):
            os.makedirs(path, 0o700, exist_ok=True)
        self.store = MetadataStore(os.path.join(home, "metadata"))
        self.prefix = device_prefix(os.stat(home))
        self.pool_name = self.opts.thin_pool_device or f"{self.prefix}-pool"
        self.udev_sync = self._dm.set_udev_sync(True)
        if not self.udev_sync:
            if not self.opts.override_udev_sync_check:
                raise NotSupported(UDEV_SYNC_MESSAGE)
            LOG.warning("%s (dm.override_udev_sync_check=true: going on)", UDEV_SYNC_MESSAGE)
        self.data_file = self.metadata_file = ""
        self._pool_ours = not self.opts.thin_pool_device
        self.block_sectors = self.opts.thinp_block_size
        self.transaction_id = 0
        self.devices: dict[str, Device] = {}
        self.ids = DeviceIds()
        self.filesystem = self.opts.filesystem
        self.base_uuid = ""
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._deletion_interval = deletion_interval
        with self._lock:
            self._ensure_pool()
            self._load()
            self._setup_base()
            self._retry_deletions()
        if self.opts.loopback:
            LOG.warning(
                "devmapper: Usage of loopback devices is strongly discouraged for production use. Please use "
                "`--storage-opt dm.thinpooldev` or use `man dockerd` to refer to dm.thinpooldev section."
            )

    @classmethod
    def probe(cls, home: str, options: Sequence[str] = ()) -> None:
        """Check the kernel (device-mapper, thin-pool), libdevmapper, the mkfs tool and udev sync.

        :raises NotSupported: where the kernel has no device-mapper or no thin-pool target, with the reason.
        :raises PrerequisitesNotMet: when a library or tool is missing.
        :raises InvalidParameter: for a bad ``dm.*`` option (Docker's words).
        """
        opts = parse_options(options)
        if not device_mapper_present():
            _modprobe("dm_mod")
            if not device_mapper_present():
                raise NotSupported(
                    f"devmapper: the kernel has no device-mapper (no device-mapper in {_MISC}; modprobe dm_mod)"
                )
        if not thin_pool_available():
            raise NotSupported("devmapper: the kernel has no dm-thin-pool target (CONFIG_DM_THIN_PROVISIONING)")
        try:
            lib = dm.LibDevmapper()
        except OSError as exc:
            raise PrerequisitesNotMet(
                f"devmapper: libdevmapper is not installed (Debian: libdevmapper1.02.1): {exc}"
            ) from exc
        if opts.loopback and not loop_available():
            raise PrerequisitesNotMet(
                "devmapper: the loopback pool needs loop devices (no /dev/loop-control; modprobe loop), "
                "or give a pool with dm.thinpooldev"
            )
        tool = f"mkfs.{opts.filesystem}"
        if _which(tool) == tool:
            raise PrerequisitesNotMet(f"devmapper: {tool} is not installed (dm.fs={opts.filesystem})")
        if not lib.set_udev_sync(True) and not opts.override_udev_sync_check:
            raise NotSupported(UDEV_SYNC_MESSAGE)

    # ---- names and paths

    def _dm_name(self, hash: str) -> str:
        return f"{self.prefix}-{hash}"

    def _dev_path(self, hash: str) -> str:
        return f"/dev/mapper/{self._dm_name(hash)}"

    def _pool_path(self) -> str:
        return f"/dev/mapper/{self.pool_name}"

    def _mount_point(self, id: str) -> str:
        return os.path.join(self._mnt, id)

    # ---- the pool

    def _ensure_pool(self) -> None:
        """Make sure the pool is active: ours is (re)created over its loop files or devices; a given one must exist."""
        if self.opts.deferred_deletion and self._worker is None:
            self._start_worker()
        if self._dm.info(self.pool_name) is not None:
            self._read_pool_geometry()
            return
        if not self._pool_ours:
            raise HostError(f"devmapper: Unable to find thin pool {self.pool_name} (dm.thinpooldev)")
        if self.opts.loopback:
            self._create_loopback_pool()
        else:
            self.data_file, self.metadata_file = self.opts.data_device, self.opts.metadata_device
            size = _block_device_size(self.data_file)
            target = dm.thin_pool_target(size, self.metadata_file, self.data_file, self.block_sectors)
            self._dm.create(self.pool_name, [target])
        LOG.info("devmapper: pool %s is active", self.pool_name)

    def _create_loopback_pool(self) -> None:
        data = os.path.join(self._loop_dir, "data")
        metadata = os.path.join(self._loop_dir, "metadata")
        for path, size in ((data, self.opts.data_loopback_size), (metadata, self.opts.metadata_loopback_size)):
            if not os.path.exists(path):
                LOG.debug("devmapper: creating loopback file %s of %d bytes", path, size)
                with open(path, "wb") as f:
                    f.truncate(size)  # sparse: the pool fills it as it goes
        size = os.path.getsize(data)
        loop_available()
        # Autoclear: once the pool holds the devices, they go with it.
        with loop.attach(data) as data_dev, loop.attach(metadata) as meta_dev:
            target = dm.thin_pool_target(size, meta_dev.path, data_dev.path, self.block_sectors)
            try:
                self._dm.create(self.pool_name, [target])
            except OSError as exc:
                raise HostError(f"devmapper: Error creating thin pool {self.pool_name} ({target}): {exc}") from exc
            self.data_file, self.metadata_file = data_dev.path, meta_dev.path

    def _read_pool_geometry(self) -> None:
        """The block size and devices of an existing pool, from its table."""
        table = self._dm.table(self.pool_name)
        if len(table) != 1 or table[0].kind != "thin-pool":
            raise HostError(f"devmapper: {self.pool_name} is not a thin pool ({table})")
        fields = table[0].params.split()
        self.metadata_file, self.data_file = _device_name(fields[0]), _device_name(fields[1])
        self.block_sectors = int(fields[2])

    def _pool_status(self) -> dm.PoolStatus:
        status = self._dm.status(self.pool_name)
        if len(status) != 1 or status[0].kind != "thin-pool":
            raise HostError(f"devmapper: unexpected status of {self.pool_name}: {status}")
        return dm.parse_pool_status(status[0].params)

    # ---- records and transactions

    def _load(self) -> None:
        """Read the records, check the pool against them and roll back an interrupted transaction."""
        status = self._pool_status()
        if status.mode == "Fail" or status.needs_check:
            raise HostError(f"devmapper: thin pool {self.pool_name} needs a check (thin_check): {status.mode}")
        self.transaction_id = status.transaction_id
        deviceset = self.store.load_deviceset()
        self.devices = self.store.load_devices()
        if not deviceset and not self.devices and not self._pool_ours:
            if status.used_data_blocks:
                raise HostError(
                    f"devmapper: Unable to take ownership of thin-pool ({self.pool_name}) that already has used "
                    "data blocks"
                )
            if status.transaction_id:
                raise HostError(
                    f"devmapper: Unable to take ownership of thin-pool ({self.pool_name}) with non-zero transaction ID"
                )
        self.ids = DeviceIds(int(deviceset.get("next_device_id", 0)), {d.device_id for d in self.devices.values()})
        self.base_uuid = str(deviceset.get("BaseDeviceUUID", ""))
        if deviceset.get("BaseDeviceFilesystem"):
            self.filesystem = str(deviceset["BaseDeviceFilesystem"])
        self._rollback()

    def _save_deviceset(self) -> None:
        self.store.save_deviceset(self.ids.next_id, self.base_uuid, self.filesystem)

    def _rollback(self) -> None:
        tx = self.store.load_transaction()
        if tx.open_transaction_id <= self.transaction_id:
            return
        LOG.warning(
            "devmapper: rolling back transaction %d (device %s, id %d) the pool never completed",
            tx.open_transaction_id,
            tx.device_hash,
            tx.device_id,
        )
        try:
            self._dm.message(self.pool_name, dm.delete_message(tx.device_id))
        except OSError as exc:
            LOG.info("devmapper: deleting thin device %d in the rollback: %s", tx.device_id, exc.strerror)
        known = self.devices.get(tx.device_hash)
        if known is not None and known.device_id == tx.device_id:
            self.store.remove_device(tx.device_hash)
            del self.devices[tx.device_hash]
        self.ids.release(tx.device_id)
        self.store.save_transaction(Transaction(self.transaction_id))

    @contextlib.contextmanager
    def _transaction(self, hash: str, device_id: int) -> Iterator[Transaction]:
        """Record the change first, let the body change the pool, then move the pool's transaction id."""
        tx = Transaction(self.transaction_id + 1, hash, device_id)
        self.store.save_transaction(tx)
        try:
            yield tx
        finally:
            self._close_transaction(tx)

    def _close_transaction(self, tx: Transaction) -> None:
        if tx.open_transaction_id == self.transaction_id:
            return
        self._dm.message(self.pool_name, dm.set_transaction_id_message(self.transaction_id, tx.open_transaction_id))
        self.transaction_id = tx.open_transaction_id

    def _register(self, hash: str, device_id: int, size: int, tx: Transaction, initialized: bool) -> Device:
        device = Device(hash, device_id, size, tx.open_transaction_id, initialized=initialized)
        self.store.save_device(device)
        self.devices[hash] = device
        return device

    def _new_device(self, hash: str, size: int, origin: Device | None) -> Device:
        """A new thin device: empty (``create_thin``) or a snapshot of ``origin`` (``create_snap``)."""
        tx_id = self.ids.allocate()
        self._save_deviceset()
        try:
            with self._transaction(hash, tx_id) as tx:
                while True:
                    try:
                        if origin is None:
                            self._dm.message(self.pool_name, dm.create_thin_message(tx.device_id))
                        else:
                            self._snapshot(tx.device_id, origin)
                        break
                    except OSError as exc:
                        if exc.errno != errno.EEXIST:
                            raise
                        # The pool has the id though no record does: a
                        # crash's leftover. Leave it marked used, take the next.
                        LOG.error("devmapper: Device ID %d exists in pool but it is supposedly unused", tx.device_id)
                        tx.device_id = tx_id = self.ids.allocate()
                        self._save_deviceset()
                        self.store.save_transaction(tx)
                try:
                    return self._register(hash, tx.device_id, size, tx, initialized=origin is not None)
                except BaseException:
                    with contextlib.suppress(OSError):
                        self._dm.message(self.pool_name, dm.delete_message(tx.device_id))
                    raise
        except BaseException:
            self.ids.release(tx_id)
            raise

    def _snapshot(self, device_id: int, origin: Device) -> None:
        """``create_snap`` of ``origin``, suspended meanwhile if it is active (the kernel's rule)."""
        name = self._dm_name(origin.hash)
        active = self._dm.info(name) is not None
        if active:
            self._dm.suspend(name)
        try:
            self._dm.message(self.pool_name, dm.create_snap_message(device_id, origin.device_id))
        finally:
            if active:
                self._dm.resume(name)

    # ---- activation

    def _activate(self, device: Device) -> str:
        """Give ``device`` a ``thin`` table (unless it has one); return its node."""
        name = self._dm_name(device.hash)
        info = self._dm.info(name)
        if info is not None:
            if info.deferred_remove:
                # Pending removal from an earlier put: keep it instead.
                self._dm.message(name, "@cancel_deferred_remove")
            return self._dev_path(device.hash)
        self._dm.create(name, [dm.thin_target(device.size, self._pool_path(), device.device_id)])
        return self._dev_path(device.hash)

    def _deactivate(self, device: Device, deferred: bool | None = None) -> None:
        """Remove the device's table; busy: retried, or left to the kernel with deferred removal."""
        if deferred is None:
            deferred = self.opts.deferred_removal
        name = self._dm_name(device.hash)
        for attempt in range(REMOVE_RETRIES):
            if self._dm.info(name) is None:
                return
            try:
                self._dm.remove(name, deferred=deferred)
                return
            except OSError as exc:
                if exc.errno in (errno.ENXIO, errno.ENODEV):
                    return
                if exc.errno != errno.EBUSY or attempt == REMOVE_RETRIES - 1:
                    raise HostError(f"devmapper: Error removing device {name}: {exc.strerror}") from exc
            time.sleep(REMOVE_RETRY_DELAY)

    # ---- the base device

    def _setup_base(self) -> None:
        base = self.devices.get(BASE)
        if base is not None and base.initialized and not base.deleted:
            self._verify_base(base)
            self._grow_base(base)
            return
        if base is not None:
            LOG.info("devmapper: removing the uninitialized base device")
            self._delete(base, sync=True)
        self._create_base()

    def _create_base(self) -> None:
        base = self._new_device(BASE, self.opts.base_fs_size, None)
        node = self._activate(base)
        try:
            self._mkfs(node)
            base.initialized = True
            self.store.save_device(base)
            self.base_uuid = self._blkid(node, "UUID")
            self._save_deviceset()
        finally:
            self._deactivate(base, deferred=False)

    def _mkfs(self, node: str) -> None:
        LOG.debug("devmapper: creating the %s file system on the base device", self.filesystem)
        if self.filesystem == "ext4":
            args = ["mkfs.ext4", "-q", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0"]
            self._tool([*args, *self.opts.mkfs_args, node])
            self._tool(["tune2fs", "-c", "-1", "-i", "0", node])
        else:
            self._tool(["mkfs.xfs", "-q", "-f", *self.opts.mkfs_args, node])

    def _tool(self, argv: list[str]) -> str:
        argv = [_which(argv[0]), *argv[1:]]
        try:
            done = self._run(argv, capture_output=True, timeout=600, check=False)
        except OSError as exc:
            raise PrerequisitesNotMet(f"devmapper: cannot run {argv[0]}: {exc.strerror}") from exc
        if done.returncode != 0:
            detail = (done.stderr or b"").decode(errors="replace").strip()
            raise HostError(f"devmapper: {' '.join(argv)} failed ({done.returncode}): {detail}")
        return (done.stdout or b"").decode(errors="replace")

    def _blkid(self, node: str, tag: str) -> str:
        return self._tool(["blkid", "-p", "-s", tag, "-o", "value", node]).strip()

    def _verify_base(self, base: Device) -> None:
        """The base device still holds the file system recorded for it (a pool swapped underneath is refused)."""
        if self.opts.filesystem != self.filesystem and self.opts.filesystem:
            LOG.warning(
                "devmapper: Base device already exists and has filesystem %s on it. User specified filesystem %s "
                "will be ignored.",
                self.filesystem,
                self.opts.filesystem,
            )
        if not self.base_uuid:
            return
        node = self._activate(base)
        try:
            uuid = self._blkid(node, "UUID")
        finally:
            self._deactivate(base, deferred=False)
        if uuid != self.base_uuid:
            raise HostError(
                f"devmapper: Current Base Device UUID:{uuid} does not match with stored UUID:{self.base_uuid}. "
                "Possibly using a different thin pool than last invocation"
            )

    def _grow_base(self, base: Device) -> None:
        if not self.opts.user_base_size or self.opts.base_fs_size == base.size:
            return
        if self.opts.base_fs_size < base.size:
            raise InvalidParameter(f"devmapper: Base device size cannot be smaller than {human_size(base.size)}")
        base.size = self.opts.base_fs_size
        self.store.save_device(base)
        self._grow_fs(base)

    def _grow_fs(self, device: Device) -> None:
        """Grow the device's file system to its (new) size: mounted in a private place, then resize2fs or xfs_growfs."""
        node = self._activate(device)
        point = tempfile.mkdtemp(prefix=".grow-", dir=self._mnt)
        try:
            flags, data = split_mount_options(mount_options(self.filesystem, self.opts.mount_options, ""))
            libc.mount(node, point, self.filesystem, flags, data or None)
            try:
                if self.filesystem == "ext4":
                    self._tool(["resize2fs", node])
                else:
                    self._tool(["xfs_growfs", point])
            finally:
                fs.unmount_all(point)
        finally:
            os.rmdir(point)
            self._deactivate(device, deferred=False)

    # ---- deletion

    def _delete(self, device: Device, sync: bool) -> None:
        """Delete a thin device from the pool and its record; busy and deferred deletion on: mark it deleted."""
        if self.opts.block_discard:
            self._discard(device)
        # Deferred removal only where deletion may be deferred too: a device
        # whose removal is pending stays busy and could not be deleted now.
        self._deactivate(device, deferred=self.opts.deferred_removal and self.opts.deferred_deletion)
        with self._transaction(device.hash, device.device_id):
            try:
                self._dm.message(self.pool_name, dm.delete_message(device.device_id))
            except OSError as exc:
                if sync or not self.opts.deferred_deletion or exc.errno != errno.EBUSY:
                    raise HostError(
                        f"devmapper: Error deleting device {device.hash} (id {device.device_id}): {exc.strerror}"
                    ) from exc
                if not device.deleted:
                    device.deleted = True
                    self.store.save_device(device)
                    LOG.info("devmapper: device %s is busy; its deletion is deferred", device.hash)
                return
        self.store.remove_device(device.hash)
        self.devices.pop(device.hash, None)
        self.ids.release(device.device_id)

    def _discard(self, device: Device) -> None:
        """Tell the pool the device's blocks are free (BLKDISCARD), so a loop file gets its space back."""
        try:
            node = self._activate(device)
            fd = os.open(node, os.O_WRONLY | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, BLKDISCARD, struct.pack("QQ", 0, device.size))
            finally:
                os.close(fd)
        except OSError as exc:
            # Only space is at stake: the deletion goes on.
            LOG.debug("devmapper: discarding device %s: %s", device.hash, exc.strerror)

    def deleted_count(self) -> int:
        with self._lock:
            return sum(1 for d in self.devices.values() if d.deleted)

    def _retry_deletions(self) -> None:
        for device in [d for d in self.devices.values() if d.deleted]:
            try:
                self._delete(device, sync=False)
            except EngineError as exc:
                LOG.warning("%s", exc)

    def _start_worker(self) -> None:
        stop = self._stop = threading.Event()

        def work() -> None:
            while not stop.wait(self._deletion_interval):
                with self._lock:
                    try:
                        self._ensure_pool()
                        self._retry_deletions()
                    except (EngineError, OSError) as exc:
                        LOG.warning("devmapper: deferred deletion: %s", exc)

        self._worker = threading.Thread(target=work, name="devmapper-deferred-deletion", daemon=True)
        self._worker.start()

    # ---- the contract

    def _layer(self, id: str) -> Device:
        device = self.devices.get(validate_id(id))
        if device is None or device.deleted:
            raise NotFound(f"devmapper: layer {id} does not exist")
        return device

    def create(self, id: str, parent: str | None = None, mount_label: str = "") -> None:
        """Create layer ``id``: a thin snapshot of ``parent``'s device, or of the base device.

        :raises Conflict: if ``id`` exists (or is still being deleted).
        :raises NotFound: if ``parent`` does not.
        :raises HostError: when the pool is short of space (``dm.min_free_space``).
        """
        self._create(id, parent, None)

    def create_read_write(
        self,
        id: str,
        parent: str | None = None,
        mount_label: str = "",
        storage_opt: Mapping[str, str] | None = None,
    ) -> None:
        """Create a container's layer; ``storage_opt["size"]`` gives its device that size (at least the base's).

        :raises InvalidParameter: for an unknown option or a size below the base device's (Docker's words).
        """
        with self._lock:
            base_size = self.devices[BASE].size
        size = parse_storage_opt(storage_opt or {}, base_size)
        self._create(id, parent, size)

    def _create(self, id: str, parent: str | None, size: int | None) -> None:
        validate_id(id)
        if parent is not None:
            validate_id(parent)
        with self._lock:
            existing = self.devices.get(id)
            if existing is not None and existing.deleted:
                self._ensure_pool()
                try:
                    self._delete(existing, sync=True)
                except HostError as exc:
                    raise Conflict(f"devmapper: layer {id} is still being deleted: {exc}") from exc
            if id in self.devices:
                raise Conflict(f"devmapper: layer {id} already exists")
            origin = self._layer(parent) if parent is not None else self.devices[BASE]
            self._ensure_pool()
            check_free_space(self._pool_status(), self.opts.min_free_space_percent)
            device = self._new_device(id, max(size or 0, origin.size), origin)
            if device.size > origin.size:
                try:
                    self._grow_fs(device)
                except BaseException:
                    self._delete(device, sync=True)
                    raise
        LOG.debug("devmapper: created layer %s (device %d, parent %s)", id, device.device_id, parent)

    def remove(self, id: str) -> None:
        """Delete the layer's thin device and its mount point.

        :raises NotFound: if it does not exist.
        :raises Conflict: while it is in use.
        """
        with self._lock:
            device = self._layer(id)
            refs = self._refs.get(id, 0)
            if refs:
                raise Conflict(f"devmapper: layer {id} is in use ({refs} references)")
            self._ensure_pool()
            self._delete(device, sync=False)
            point = self._mount_point(id)
            if os.path.isdir(point):
                fs.safe_rmtree(point)
        LOG.debug("devmapper: removed layer %s", id)

    def exists(self, id: str) -> bool:
        validate_id(id)
        with self._lock:
            device = self.devices.get(id)
            return device is not None and not device.deleted

    def get(self, id: str, mount_label: str = "") -> str:
        """Activate and mount the layer's device (the first reference); return its ``rootfs``.

        :raises NotFound: if the layer does not exist.
        :raises HostError: when the device cannot be activated or mounted.
        """
        with self._lock:
            device = self._layer(id)
            point = self._mount_point(id)
            rootfs = os.path.join(point, "rootfs")
            if self._refs.get(id, 0):
                self._refs[id] += 1
                return rootfs
            self._ensure_pool()
            node = self._activate(device)
            try:
                self._mount(node, point, mount_label)
                try:
                    if not os.path.isdir(rootfs):
                        os.mkdir(rootfs, 0o755)
                        os.chmod(rootfs, 0o755)
                    # A snapshot starts with its parent's id file: make it ours.
                    id_file = os.path.join(point, "id")
                    if not os.path.exists(id_file) or _read_file(id_file) != id.encode():
                        fs.atomic_write(id_file, id.encode(), 0o600)
                except BaseException:
                    fs.unmount_all(point)
                    raise
            except BaseException:
                self._deactivate(device)
                raise
            self._refs[id] = 1
        return rootfs

    def _mount(self, node: str, point: str, mount_label: str) -> None:
        os.makedirs(point, 0o755, exist_ok=True)
        if fs.mounts_below(point):
            LOG.info("devmapper: unmounting the stale mount on %s", point)
            fs.unmount_all(point)
        options = mount_options(self.filesystem, self.opts.mount_options, mount_label)
        flags, data = split_mount_options(options)
        try:
            libc.mount(node, point, self.filesystem, flags, data or None)
        except OSError as exc:
            raise HostError(
                f"devmapper: Error mounting '{node}' on '{point}' (fstype='{self.filesystem}' options='{options}'): "
                f"{exc.strerror}"
            ) from exc
        if self.filesystem == "xfs" and self.opts.xfs_nospace_retries:
            self._xfs_nospace_retries(node)

    def _xfs_nospace_retries(self, node: str) -> None:
        """Set how often xfs retries a write the pool has no space for (dm.xfs_nospace_max_retries)."""
        dm_name = os.path.basename(os.path.realpath(node))  # dm-N
        path = f"/sys/fs/xfs/{dm_name}/error/metadata/ENOSPC/max_retries"
        try:
            with open(path, "w") as f:
                f.write(self.opts.xfs_nospace_retries)
        except OSError as exc:
            raise HostError(f"devmapper: cannot set {path}: {exc.strerror}") from exc

    def put(self, id: str) -> None:
        """Release one reference; the last unmounts and deactivates the device."""
        validate_id(id)
        with self._lock:
            refs = self._refs.get(id, 0)
            if refs == 0:
                LOG.warning("devmapper: put of layer %s, which is not in use", id)
                return
            if refs > 1:
                self._refs[id] = refs - 1
                return
            del self._refs[id]
            self._release(id)

    def _release(self, id: str) -> None:
        fs.unmount_all(self._mount_point(id))
        device = self.devices.get(id)
        if device is not None:
            self._deactivate(device)

    def references(self, id: str) -> int:
        with self._lock:
            return self._refs.get(validate_id(id), 0)

    def cleanup(self) -> None:
        """Unmount and deactivate every layer, then deactivate our own pool (its loop devices go with it).

        Any later call brings the pool back (as a restarted daemon would).
        """
        self._stop.set()
        if self._worker is not None:
            if self._worker is not threading.current_thread():
                self._worker.join(timeout=10)
            self._worker = None
        errors: list[EngineError] = []
        with self._lock:
            for id in sorted(self._refs):
                try:
                    self._release(id)
                except EngineError as exc:
                    errors.append(exc)
            self._refs.clear()
            for point in sorted(set(fs.mounts_below(self._mnt)) - {os.path.realpath(self._mnt)}, reverse=True):
                try:
                    fs.unmount_all(point)
                except HostError as exc:
                    errors.append(exc)
            for device in self.devices.values():
                try:
                    self._deactivate(device, deferred=False)
                except EngineError as exc:
                    errors.append(exc)
            if self._pool_ours and self._dm.info(self.pool_name) is not None:
                try:
                    self._dm.remove(self.pool_name)
                except OSError as exc:
                    errors.append(HostError(f"devmapper: cannot deactivate pool {self.pool_name}: {exc.strerror}"))
        for err in errors:
            LOG.error("%s", err)
        if errors:
            raise errors[0]

    # ---- information

    def status(self) -> list[tuple[str, str]]:
        with self._lock:
            self._ensure_pool()
            pool = self._pool_status()
            base_size = self.devices[BASE].size
        data_used, data_total = pool.data_bytes(self.block_sectors)
        available = data_total - data_used
        data_loop = meta_loop = ""
        if self.opts.loopback:
            data_loop = os.path.join(self._loop_dir, "data")
            meta_loop = os.path.join(self._loop_dir, "metadata")
            # A sparse file can only grow as far as its file system lets it.
            st = os.statvfs(self._loop_dir)
            available = min(available, st.f_bavail * st.f_frsize)
        return status_lines(
            pool_name=self.pool_name,
            block_sectors=self.block_sectors,
            base_size=base_size,
            filesystem=self.filesystem,
            udev_sync=self.udev_sync,
            data_file=self.data_file,
            metadata_file=self.metadata_file,
            data_loop_file=data_loop,
            metadata_loop_file=meta_loop,
            pool=pool,
            data_available=available,
            min_free_percent=self.opts.min_free_space_percent,
            deferred_removal=self.opts.deferred_removal,
            deferred_deletion=self.opts.deferred_deletion,
            deferred_deleted=self.deleted_count(),
            library_version=self._dm.library_version(),
        )

    def metadata(self, id: str) -> dict[str, str]:
        """Docker's ``GraphDriver.Data`` for devicemapper: DeviceId, DeviceName, DeviceSize."""
        with self._lock:
            device = self._layer(id)
            return {
                "DeviceId": str(device.device_id),
                "DeviceName": self._dm_name(id),
                "DeviceSize": str(device.size),
            }


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _which(tool: str) -> str:
    """The tool's path; the daemon's PATH may lack the sbin directories the file-system tools live in."""
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin") or tool


def _device_name(field: str) -> str:
    """A device in a table (``7:0``) as a path when /dev has it."""
    if ":" not in field:
        return field
    major, minor = field.split(":")
    link = f"/sys/dev/block/{major}:{minor}"
    try:
        return "/dev/" + os.path.basename(os.readlink(link))
    except OSError:
        return field


def _block_device_size(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
