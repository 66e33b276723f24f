"""Device-mapper for the devicemapper driver: table and message strings, and libdevmapper through ctypes.

The strings the kernel's thin provisioning targets take
(``Documentation/admin-guide/device-mapper/thin-provisioning.rst``) are built
by pure functions, so they are tested without a kernel:

* a pool: ``0 <data sectors> thin-pool <metadata dev> <data dev> <block
  sectors> <low water mark> 1 skip_block_zeroing``;
* a thin device: ``0 <sectors> thin <pool dev> <device id>``;
* pool messages: ``create_thin <id>``, ``create_snap <id> <origin id>``,
  ``delete <id>``, ``set_transaction_id <old> <new>``;
* the pool's status line, read by :func:`parse_pool_status`.

:class:`LibDevmapper` runs device-mapper tasks through Debian's
``libdevmapper1.02.1`` as moby's ``pkg/devicemapper`` does through cgo: one
``dm_task`` per operation, the kernel's errno from ``dm_task_get_errno``,
udev synchronisation with cookies (``dm_task_set_cookie`` and
``dm_udev_wait``) so ``/dev/mapper/<name>`` exists when a create returns.
No process is started per operation.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
from dataclasses import dataclass

LOG = logging.getLogger(__name__)

#: ``dm_task`` types, ``libdevmapper.h``.
DM_DEVICE_CREATE = 0
DM_DEVICE_REMOVE = 2
DM_DEVICE_SUSPEND = 4
DM_DEVICE_RESUME = 5
DM_DEVICE_INFO = 6
DM_DEVICE_STATUS = 10
DM_DEVICE_TABLE = 11
DM_DEVICE_TARGET_MSG = 17

#: The pool's low water mark in data blocks (moby's), and the thin-pool
#: metadata block size (fixed by the kernel: 4 KiB).
LOW_WATER_MARK = 32768
METADATA_BLOCK_SIZE = 4096
SECTOR = 512
#: Thin device ids are 24 bits (``dm-thin``).
MAX_DEVICE_ID = (1 << 24) - 1


# --------------------------------------------------------------------------
# tables and messages


@dataclass(frozen=True)
class Target:
    """One line of a device-mapper table."""

    start: int
    length: int
    kind: str
    params: str

    def __str__(self) -> str:
        return f"{self.start} {self.length} {self.kind} {self.params}"


def thin_pool_target(
    data_size: int, metadata_device: str, data_device: str, block_sectors: int, low_water: int = LOW_WATER_MARK
) -> Target:
    """The pool's table: ``data_size`` bytes of data blocks of ``block_sectors`` sectors.

    ``skip_block_zeroing``: a new block is not zeroed first; every device is
    a snapshot of a base device that has a file system, so no block is ever
    read before written (moby's choice).
    """
    params = f"{metadata_device} {data_device} {block_sectors} {low_water} 1 skip_block_zeroing"
    return Target(0, data_size // SECTOR, "thin-pool", params)


def thin_target(size: int, pool_device: str, device_id: int) -> Target:
    """A thin device of ``size`` bytes mapping the pool's device ``device_id``."""
    return Target(0, size // SECTOR, "thin", f"{pool_device} {device_id}")


def create_thin_message(device_id: int) -> str:
    return f"create_thin {device_id}"


def create_snap_message(device_id: int, origin_id: int) -> str:
    return f"create_snap {device_id} {origin_id}"


def delete_message(device_id: int) -> str:
    return f"delete {device_id}"


def set_transaction_id_message(old: int, new: int) -> str:
    return f"set_transaction_id {old} {new}"


@dataclass(frozen=True)
class PoolStatus:
    """The thin-pool target's status (thin-provisioning.rst, "Status")."""

    transaction_id: int
    used_metadata_blocks: int
    total_metadata_blocks: int
    used_data_blocks: int
    total_data_blocks: int
    mode: str  # rw, ro, out_of_data_space, Fail
    needs_check: bool

    def data_bytes(self, block_sectors: int) -> tuple[int, int]:
        """(used, total) data bytes for a pool of ``block_sectors``-sector blocks."""
        unit = block_sectors * SECTOR
        return self.used_data_blocks * unit, self.total_data_blocks * unit

    def metadata_bytes(self) -> tuple[int, int]:
        """(used, total) metadata bytes."""
        return (
            self.used_metadata_blocks * METADATA_BLOCK_SIZE,
            self.total_metadata_blocks * METADATA_BLOCK_SIZE,
        )


def parse_pool_status(params: str) -> PoolStatus:
    """Read a thin-pool status line (the part after ``thin-pool``).

    ``<transaction id> <used meta>/<total meta> <used data>/<total data>
    <held root> ro|rw|out_of_data_space [no_]discard_passdown
    [error|queue]_if_no_space needs_check|- [metadata low watermark]``; a
    failed pool reports only ``Fail``.

    :raises ValueError: for anything else.
    """
    fields = params.split()
    if fields == ["Fail"]:
        return PoolStatus(0, 0, 0, 0, 0, "Fail", True)
    if len(fields) < 4:
        raise ValueError(f"unexpected thin-pool status {params!r}")
    used_meta, total_meta = (int(x) for x in fields[1].split("/"))
    used_data, total_data = (int(x) for x in fields[2].split("/"))
    mode = fields[4] if len(fields) > 4 else "rw"
    return PoolStatus(
        transaction_id=int(fields[0]),
        used_metadata_blocks=used_meta,
        total_metadata_blocks=total_meta,
        used_data_blocks=used_data,
        total_data_blocks=total_data,
        mode=mode,
        needs_check="needs_check" in fields[5:],
    )


# --------------------------------------------------------------------------
# libdevmapper


class DmInfo(ctypes.Structure):
    """``struct dm_info`` (libdevmapper 1.02.97 and later)."""

    _fields_ = [
        ("exists", ctypes.c_int),
        ("suspended", ctypes.c_int),
        ("live_table", ctypes.c_int),
        ("inactive_table", ctypes.c_int),
        ("open_count", ctypes.c_int32),
        ("event_nr", ctypes.c_uint32),
        ("major", ctypes.c_uint32),
        ("minor", ctypes.c_uint32),
        ("read_only", ctypes.c_int),
        ("target_count", ctypes.c_int32),
        ("deferred_remove", ctypes.c_int),
        ("internal_suspend", ctypes.c_int),
        ("spare", ctypes.c_int * 8),  # room should a later library grow it
    ]


@dataclass(frozen=True)
class DeviceInfo:
    """What :meth:`LibDevmapper.info` reports of an existing device."""

    open_count: int
    suspended: bool
    major: int
    minor: int
    deferred_remove: bool


#: Signature of the library's log callback: (level, file, line, dm_errno_or_class, format, ...).
_LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_char_p)
_LIBRARY = "libdevmapper.so.1.02.1"


def _on_library_log(level: int, file: bytes | None, line: int, errno_or_class: int, fmt: bytes | None) -> None:
    # The arguments of the format are variadic and out of ctypes' reach; the
    # format alone says which call failed, and every failure is raised with
    # its errno by the caller anyway.
    if (level & 0xF) <= 3:
        LOG.debug("libdevmapper: %s (%s:%d)", (fmt or b"").decode(errors="replace"), file, line)


_log_callback = _LOG_FN(_on_library_log)


class LibDevmapper:
    """Device-mapper tasks through ``libdevmapper.so.1.02.1`` (see the module doc).

    Every failure is an :class:`OSError` with the kernel's errno (``EBUSY``
    for a device in use, ``EEXIST`` for a thin id the pool already has,
    ``ENXIO``/``ENODEV`` for a device that does not exist).

    :param library: the library's soname.
    :raises OSError: when the library cannot be loaded.
    """

    def __init__(self, library: str = _LIBRARY) -> None:
        self._lib = ctypes.CDLL(library, use_errno=True)
        self._bind()
        self._lib.dm_log_with_errno_init(_log_callback)
        # Tasks share the library's global state (the udev cookie semaphore
        # set, the log): one at a time.
        self._lock = threading.Lock()

    def _bind(self) -> None:
        lib = self._lib
        p, i, u32, u64, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_char_p
        for name, restype, argtypes in (
            ("dm_task_create", p, [i]),
            ("dm_task_destroy", None, [p]),
            ("dm_task_set_name", i, [p, s]),
            ("dm_task_add_target", i, [p, u64, u64, s, s]),
            ("dm_task_set_message", i, [p, s]),
            ("dm_task_set_sector", i, [p, u64]),
            ("dm_task_run", i, [p]),
            ("dm_task_get_errno", i, [p]),
            ("dm_task_get_info", i, [p, ctypes.POINTER(DmInfo)]),
            ("dm_task_set_cookie", i, [p, ctypes.POINTER(u32), ctypes.c_uint16]),
            ("dm_task_deferred_remove", i, [p]),
            ("dm_task_no_open_count", i, [p]),
            ("dm_task_get_message_response", s, [p]),
            (
                "dm_get_next_target",
                p,
                [p, p, ctypes.POINTER(u64), ctypes.POINTER(u64), ctypes.POINTER(s), ctypes.POINTER(s)],
            ),
            ("dm_udev_wait", i, [u32]),
            ("dm_udev_set_sync_support", None, [i]),
            ("dm_udev_get_sync_support", i, []),
            ("dm_get_library_version", i, [s, ctypes.c_size_t]),
            ("dm_driver_version", i, [s, ctypes.c_size_t]),
            ("dm_log_with_errno_init", None, [_LOG_FN]),
        ):
            func = getattr(lib, name)
            func.restype = restype
            func.argtypes = argtypes

    # ---- library state

    def library_version(self) -> str:
        """``1.02.185 (2022-05-18)``: what ``docker info`` shows as Library Version."""
        buf = ctypes.create_string_buffer(128)
        if not self._lib.dm_get_library_version(buf, len(buf)):
            return "unknown"
        return buf.value.decode()

    def driver_version(self) -> tuple[int, ...] | None:
        """The kernel's device-mapper version (``(4, 47, 0)``), or None where it cannot be read."""
        buf = ctypes.create_string_buffer(128)
        if not self._lib.dm_driver_version(buf, len(buf)):
            return None
        try:
            return tuple(int(part) for part in buf.value.decode().strip().split("."))
        except ValueError:
            return None

    def deferred_remove_supported(self) -> bool:
        """Whether the kernel removes a device at its last close when asked (device-mapper 4.27,
        Linux 3.13); the library's side, ``dm_task_deferred_remove``, is bound above."""
        version = self.driver_version()
        return version is not None and version[:2] >= (4, 27)

    def set_udev_sync(self, enable: bool) -> bool:
        """Ask for udev synchronisation; return whether the library can do it (udev running, cookies built in)."""
        self._lib.dm_udev_set_sync_support(1 if enable else 0)
        return bool(self._lib.dm_udev_get_sync_support())

    # ---- tasks

    def _task(self, kind: int, name: str, what: str) -> _Task:
        return _Task(self._lib, kind, name, what)

    def create(self, name: str, targets: list[Target]) -> None:
        """Create and activate device ``name`` with ``targets`` as its table."""
        with self._lock, self._task(DM_DEVICE_CREATE, name, "create") as task:
            for t in targets:
                task.check(
                    self._lib.dm_task_add_target(task.ptr, t.start, t.length, t.kind.encode(), t.params.encode())
                )
            task.run(cookie=True)

    def remove(self, name: str, deferred: bool = False) -> None:
        """Remove device ``name``; ``deferred``: at its last close if it is open now.

        :raises OSError: ``EBUSY`` while it is open (and not ``deferred``).
        """
        with self._lock, self._task(DM_DEVICE_REMOVE, name, "remove") as task:
            if deferred:
                task.check(self._lib.dm_task_deferred_remove(task.ptr))
            task.run(cookie=True)

    def suspend(self, name: str) -> None:
        with self._lock, self._task(DM_DEVICE_SUSPEND, name, "suspend") as task:
            task.run()

    def resume(self, name: str) -> None:
        with self._lock, self._task(DM_DEVICE_RESUME, name, "resume") as task:
            task.run(cookie=True)

    def message(self, name: str, message: str, sector: int = 0) -> str:
        """Send ``message`` to device ``name``; return its response (mostly empty)."""
        with self._lock, self._task(DM_DEVICE_TARGET_MSG, name, f"message {message!r}") as task:
            task.check(self._lib.dm_task_set_sector(task.ptr, sector))
            task.check(self._lib.dm_task_set_message(task.ptr, message.encode()))
            task.run()
            response = self._lib.dm_task_get_message_response(task.ptr)
            return (response or b"").decode()

    def info(self, name: str) -> DeviceInfo | None:
        """The device's state, or None when no device has that name."""
        with self._lock, self._task(DM_DEVICE_INFO, name, "info") as task:
            task.run()
            info = DmInfo()
            task.check(self._lib.dm_task_get_info(task.ptr, ctypes.byref(info)))
            if not info.exists:
                return None
            return DeviceInfo(
                open_count=info.open_count,
                suspended=bool(info.suspended),
                major=info.major,
                minor=info.minor,
                deferred_remove=bool(info.deferred_remove),
            )

    def status(self, name: str) -> list[Target]:
        """The device's status, one :class:`Target` per table line (params hold the status)."""
        return self._targets(DM_DEVICE_STATUS, name)

    def table(self, name: str) -> list[Target]:
        """The device's live table."""
        return self._targets(DM_DEVICE_TABLE, name)

    def _targets(self, kind: int, name: str) -> list[Target]:
        with self._lock, self._task(kind, name, "status" if kind == DM_DEVICE_STATUS else "table") as task:
            task.run()
            out: list[Target] = []
            handle: int | None = None
            while True:
                start, length = ctypes.c_uint64(), ctypes.c_uint64()
                ttype, params = ctypes.c_char_p(), ctypes.c_char_p()
                handle = self._lib.dm_get_next_target(
                    task.ptr,
                    handle,
                    ctypes.byref(start),
                    ctypes.byref(length),
                    ctypes.byref(ttype),
                    ctypes.byref(params),
                )
                if ttype.value is not None:
                    out.append(Target(start.value, length.value, ttype.value.decode(), (params.value or b"").decode()))
                if not handle:
                    return out


class _Task:
    """One ``dm_task``: created, named, run, destroyed."""

    def __init__(self, lib: ctypes.CDLL, kind: int, name: str, what: str) -> None:
        self._lib = lib
        self.name = name
        self.what = what
        self.ptr = lib.dm_task_create(kind)
        if not self.ptr:
            raise OSError(errno.ENOMEM, f"devmapper: cannot create a task to {what} {name}")
        self.check(lib.dm_task_set_name(self.ptr, name.encode()))

    def __enter__(self) -> _Task:
        return self

    def __exit__(self, *exc: object) -> None:
        self._lib.dm_task_destroy(self.ptr)

    def check(self, ok: int) -> None:
        if not ok:
            raise OSError(errno.EINVAL, f"devmapper: cannot set up the task to {self.what} {self.name}")

    def run(self, cookie: bool = False) -> None:
        """Run the task; with ``cookie``, wait until udev has made (or removed) the device node."""
        value = ctypes.c_uint32(0)
        if cookie:
            self.check(self._lib.dm_task_set_cookie(self.ptr, ctypes.byref(value), 0))
        ok = self._lib.dm_task_run(self.ptr)
        err = self._lib.dm_task_get_errno(self.ptr) if not ok else 0
        if cookie:
            self._lib.dm_udev_wait(value.value)
        if not ok:
            err = err or errno.EIO
            raise OSError(err, f"devmapper: {self.what} {self.name} failed: {os.strerror(err)}")
