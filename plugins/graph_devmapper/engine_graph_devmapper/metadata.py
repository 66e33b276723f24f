"""The devicemapper driver's own records: one file per device, the id counter, the open transaction.

Under ``<root>/devicemapper/metadata`` (moby's layout and JSON keys, so the
files read the same as Docker's)::

    <hash>                   {"device_id": 7, "size": 10737418240,
                              "transaction_id": 9, "initialized": true,
                              "deleted": false}   (one per layer; "base" is
                              the base device)
    deviceset-metadata       {"next_device_id": 8, "BaseDeviceUUID": "...",
                              "BaseDeviceFilesystem": "ext4"}
    transaction-metadata     {"open_transaction_id": 10, "device_hash": "...",
                              "device_id": 8}

Every file is replaced atomically (write to a temporary file, fsync, rename,
fsync the directory: :func:`engine.sys.fs.atomic_write`), so a crash
leaves the old content or the new, never half.

The pool itself keeps a transaction id. Creating or deleting a thin device
is bracketed by an open transaction: the id is written here first, the pool
is changed, the device's file written, and only then is the pool's
transaction id moved forward (``set_transaction_id``). At start, an open
transaction whose id the pool never reached is rolled back: the half-made
thin device is deleted from the pool and its file, if any, removed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

from engine.errors import HostError
from engine.sys import fs

LOG = logging.getLogger(__name__)

DEVICESET_FILE = "deviceset-metadata"
TRANSACTION_FILE = "transaction-metadata"
#: The base device's hash (its file name); moby's base hash is "" and its file "base".
BASE = "base"
_RESERVED = {DEVICESET_FILE, TRANSACTION_FILE}


@dataclass
class Device:
    """One thin device: a layer, or the base device."""

    hash: str
    device_id: int
    size: int
    transaction_id: int
    initialized: bool = False
    deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["hash"]
        return data


@dataclass
class Transaction:
    """The transaction in progress (``open_transaction_id`` above the pool's when one is open)."""

    open_transaction_id: int = 0
    device_hash: str = ""
    device_id: int = 0


class MetadataStore:
    """The files described in the module doc, in ``directory``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, 0o700, exist_ok=True)

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            with open(self._path(name), "rb") as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as exc:
            raise HostError(f"devmapper: cannot read {self._path(name)}: {exc}") from exc
        if not isinstance(data, dict):
            raise HostError(f"devmapper: {self._path(name)} does not hold a JSON object")
        return data

    def _write(self, name: str, data: dict[str, Any]) -> None:
        fs.atomic_write(self._path(name), json.dumps(data).encode(), 0o600)

    # ---- devices

    def load_device(self, hash: str) -> Device | None:
        data = self._read(hash)
        if data is None:
            return None
        try:
            return Device(
                hash=hash,
                device_id=int(data["device_id"]),
                size=int(data["size"]),
                transaction_id=int(data.get("transaction_id", 0)),
                initialized=bool(data.get("initialized", False)),
                deleted=bool(data.get("deleted", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise HostError(f"devmapper: {self._path(hash)} is not a device record: {exc}") from exc

    def load_devices(self) -> dict[str, Device]:
        """Every device record; temporary files of interrupted writes are removed."""
        devices: dict[str, Device] = {}
        for name in sorted(os.listdir(self.directory)):
            if name.startswith("."):
                if name.endswith(".tmp"):
                    os.unlink(self._path(name))
                continue
            if name in _RESERVED:
                continue
            device = self.load_device(name)
            if device is not None:
                devices[name] = device
        return devices

    def save_device(self, device: Device) -> None:
        if device.hash in _RESERVED or "/" in device.hash or device.hash.startswith("."):
            raise ValueError(f"invalid device hash {device.hash!r}")
        self._write(device.hash, device.to_json())

    def remove_device(self, hash: str) -> None:
        try:
            os.unlink(self._path(hash))
        except FileNotFoundError:
            return
        fs.fsync_dir(self.directory)

    # ---- the device set

    def load_deviceset(self) -> dict[str, Any]:
        """``{"next_device_id": ..., "BaseDeviceUUID": ..., "BaseDeviceFilesystem": ...}`` (empty when new)."""
        return self._read(DEVICESET_FILE) or {}

    def save_deviceset(self, next_device_id: int, base_uuid: str, base_fs: str) -> None:
        self._write(
            DEVICESET_FILE,
            {"next_device_id": next_device_id, "BaseDeviceUUID": base_uuid, "BaseDeviceFilesystem": base_fs},
        )

    # ---- the transaction

    def load_transaction(self) -> Transaction:
        data = self._read(TRANSACTION_FILE) or {}
        return Transaction(
            open_transaction_id=int(data.get("open_transaction_id", 0)),
            device_hash=str(data.get("device_hash", "")),
            device_id=int(data.get("device_id", 0)),
        )

    def save_transaction(self, transaction: Transaction) -> None:
        self._write(TRANSACTION_FILE, asdict(transaction))


class DeviceIds:
    """Thin device ids (24 bits) in use, and the next one to try, as moby's ``getNextFreeDeviceID``.

    :param next_id: where the search starts (``next_device_id`` on disk).
    :param used: ids taken by known devices.
    :param max_id: the largest id (``2**24 - 1`` for dm-thin).
    """

    def __init__(self, next_id: int = 0, used: set[int] | None = None, max_id: int = (1 << 24) - 1) -> None:
        self.max_id = max_id
        self.next_id = next_id & max_id
        self.used = set(used or ())

    def allocate(self) -> int:
        """Take the first free id after the last one handed out (never 0, which moby leaves unused).

        :raises HostError: when every id is taken.
        """
        for _ in range(self.max_id + 1):
            self.next_id = (self.next_id + 1) & self.max_id
            if self.next_id and self.next_id not in self.used:
                self.used.add(self.next_id)
                return self.next_id
        raise HostError("devmapper: Unable to find a free device ID")

    def release(self, device_id: int) -> None:
        self.used.discard(device_id)

    def mark_used(self, device_id: int) -> None:
        self.used.add(device_id)
