"""The devicemapper driver on a real kernel: the shared conformance suite, then what is devicemapper's own.

These need device-mapper with the thin-pool target, which this host's kernel
lacks: here they skip with the probe's reason. ``vmtest/run`` runs them in a
VM with Debian's kernel, where a skip is a failure (conftest.py). Each
driver lives in ``tmp_path`` (tmpfs in the VM) with a small loop-backed pool;
the conformance fixture's ``cleanup()`` unmounts every layer and removes the
pool, whose loop devices then detach (autoclear), also when a test fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from engine.errors import Conflict, InvalidParameter, NotFound
from engine.sys import loop
from engine.testing.graphtest import GraphDriverConformance, new_id
from engine_graph_devmapper import dm
from engine_graph_devmapper.driver import DevmapperDriver
from engine_graph_devmapper.metadata import BASE, Transaction

MiB = 1 << 20

#: Sizes that fit a VM's memory: the loop files live on tmpfs there.
SMALL_POOL = ("dm.loopdatasize=3G", "dm.loopmetadatasize=64M", "dm.basesize=256M", "dm.fs=ext4")


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def make_driver(tmp_path: Any, needs_devmapper: None) -> Iterator[Any]:
    """Build drivers on ``<tmp_path>/root/devicemapper`` (or another home); all cleaned up at the end."""
    made: list[DevmapperDriver] = []

    def make(*options: str, home: str | None = None, **kw: Any) -> DevmapperDriver:
        drv = DevmapperDriver(home or str(tmp_path / "root" / "devicemapper"), [*SMALL_POOL, *options], **kw)
        made.append(drv)
        return drv

    try:
        yield make
    finally:
        for drv in reversed(made):
            drv.cleanup()


class TestDevmapper(GraphDriverConformance):
    driver_name = "devmapper"
    driver_options = SMALL_POOL

    # ---- devices and tables

    def test_devices_tables_and_mounts(self, driver: DevmapperDriver) -> None:
        base = self.layer(driver, fill=lambda p: write(os.path.join(p, "f"), b"base"))
        child = self.layer(driver, base)
        pool = driver._dm.table(driver.pool_name)
        assert [t.kind for t in pool] == ["thin-pool"]
        assert pool[0].params.split()[2:] == ["128", "32768", "1", "skip_block_zeroing"]
        meta = driver.metadata(child)
        assert meta["DeviceName"] == f"{driver.prefix}-{child}" and meta["DeviceSize"] == str(256 * MiB)
        path = driver.get(child)
        try:
            assert path == os.path.join(driver.home, "mnt", child, "rootfs")
            assert read(os.path.join(path, "f")) == b"base"
            assert read(os.path.join(driver.home, "mnt", child, "id")) == child.encode()
            table = driver._dm.table(meta["DeviceName"])
            assert [str(t) for t in table] == [
                f"0 {256 * MiB // 512} thin {_devnum(driver.pool_name, driver)} {meta['DeviceId']}"
            ]
        finally:
            driver.put(child)
        assert driver._dm.info(meta["DeviceName"]) is None  # deactivated by the last put
        records = sorted(os.listdir(os.path.join(driver.home, "metadata")))
        assert records == sorted([BASE, base, child, "deviceset-metadata", "transaction-metadata"])

    def test_snapshot_of_a_mounted_layer_sees_its_writes(self, driver: DevmapperDriver) -> None:
        """create_snap of an active origin runs with the origin suspended, which flushes its file system."""
        base = self.layer(driver)
        path = driver.get(base)
        try:
            write(os.path.join(path, "unsynced"), b"x" * 100_000)
            child = self.layer(driver, base)
        finally:
            driver.put(base)
        child_path = driver.get(child)
        try:
            assert read(os.path.join(child_path, "unsynced")) == b"x" * 100_000
        finally:
            driver.put(child)

    def test_size_storage_opt_grows_the_file_system(self, driver: DevmapperDriver) -> None:
        base = self.layer(driver)
        big = new_id()
        driver.create_read_write(big, base, storage_opt={"size": "600M"})
        assert driver.metadata(big)["DeviceSize"] == str(600 * MiB)
        path = driver.get(big)
        try:
            st = os.statvfs(path)
            assert st.f_blocks * st.f_frsize > 500 * MiB
        finally:
            driver.put(big)
        assert driver.metadata(self.layer(driver, big))["DeviceSize"] == str(600 * MiB)  # children keep it
        with pytest.raises(InvalidParameter, match="Container size cannot be smaller than 268MB"):
            driver.create_read_write(new_id(), base, storage_opt={"size": "100M"})

    def test_status(self, driver: DevmapperDriver) -> None:
        status = dict(driver.status())
        assert status["Pool Name"] == driver.pool_name
        assert status["Backing Filesystem"] == "ext4" and status["Base Device Size"] == "268MB"
        assert status["Pool Blocksize"] == "65.5kB" and status["Data Space Total"] == "3.22GB"
        assert status["Data loop file"] == os.path.join(driver.home, "devicemapper", "data")
        assert status["Data file"].startswith("/dev/loop")
        assert status["Udev Sync Supported"] in ("true", "false")
        assert status["Library Version"].startswith("1.02.")

    # ---- life across restarts and crashes

    def test_records_survive_a_restart(self, driver: DevmapperDriver) -> None:
        base = self.layer(driver, fill=lambda p: write(os.path.join(p, "kept"), b"k"))
        child = self.layer(driver, base)
        ids = {id: driver.metadata(id)["DeviceId"] for id in (base, child)}
        driver.cleanup()
        assert driver._dm.info(driver.pool_name) is None
        assert loop.find_attached(os.path.join(driver.home, "devicemapper", "data")) is None
        again = DevmapperDriver(driver.home, SMALL_POOL)
        try:
            assert {id: again.metadata(id)["DeviceId"] for id in (base, child)} == ids
            path = again.get(child)
            try:
                assert read(os.path.join(path, "kept")) == b"k"
            finally:
                again.put(child)
            third = self.layer(again, child)
            assert int(again.metadata(third)["DeviceId"]) > max(int(i) for i in ids.values())
        finally:
            again.cleanup()

    def test_interrupted_create_is_rolled_back(self, driver: DevmapperDriver) -> None:
        """A crash after create_thin but before the record: the next start deletes the thin device."""
        lost = new_id()
        device_id = driver.ids.allocate()
        driver.store.save_transaction(Transaction(driver.transaction_id + 1, lost, device_id))
        driver._dm.message(driver.pool_name, dm.create_thin_message(device_id))
        driver.cleanup()
        again = DevmapperDriver(driver.home, SMALL_POOL)
        try:
            assert not again.exists(lost)
            assert again.store.load_transaction().open_transaction_id == again.transaction_id
            # The id is free in the pool again.
            again._dm.message(again.pool_name, dm.create_thin_message(device_id))
            again._dm.message(again.pool_name, dm.delete_message(device_id))
        finally:
            again.cleanup()

    def test_remove_busy_and_missing(self, driver: DevmapperDriver) -> None:
        id = self.layer(driver)
        driver.get(id)
        with pytest.raises(Conflict, match="in use"):
            driver.remove(id)
        driver.put(id)
        driver.remove(id)
        assert not os.path.exists(os.path.join(driver.home, "mnt", id))
        with pytest.raises(NotFound):
            driver.remove(id)


def _devnum(name: str, driver: DevmapperDriver) -> str:
    info = driver._dm.info(name)
    assert info is not None
    return f"{info.major}:{info.minor}"


def test_deferred_removal_and_deletion(make_driver: Any) -> None:
    """A device someone else holds open: removed at its last close, deleted by the worker afterwards."""
    drv = make_driver("dm.use_deferred_removal=true", "dm.use_deferred_deletion=true", deletion_interval=0.2)
    id = new_id()
    drv.create(id)
    drv.get(id)
    holder = os.open(f"/dev/mapper/{drv.prefix}-{id}", os.O_RDONLY)
    try:
        drv.put(id)
        info = drv._dm.info(f"{drv.prefix}-{id}")
        assert info is not None and info.deferred_remove  # still open: removal pending
        drv.remove(id)  # the pool answers EBUSY: deletion deferred
        assert not drv.exists(id)
        assert dict(drv.status())["Deferred Deleted Device Count"] == "1"
        with pytest.raises(NotFound):
            drv.get(id)
    finally:
        os.close(holder)
    deadline = time.monotonic() + 60
    while drv.deleted_count() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert drv.deleted_count() == 0
    assert id not in os.listdir(os.path.join(drv.home, "metadata"))
    drv.create(id)  # the id can be used again
    assert drv.exists(id)


def test_xfs_snapshots_mount_side_by_side(make_driver: Any) -> None:
    """xfs refuses two mounts of one UUID unless nouuid: every snapshot has the base device's."""
    drv = make_driver("dm.fs=xfs", "dm.basesize=320M")  # xfs needs more than 300MB
    base, child = new_id(), new_id()
    drv.create(base)
    drv.create(child, base)
    first, second = drv.get(base), drv.get(child)
    try:
        write(os.path.join(first, "a"), b"a")
        write(os.path.join(second, "b"), b"b")
        assert os.listdir(first) == ["a"] and os.listdir(second) == ["b"]
    finally:
        drv.put(child)
        drv.put(base)
    assert dict(drv.status())["Backing Filesystem"] == "xfs"


def test_base_device_size_rules(make_driver: Any, tmp_path: Any) -> None:
    home = str(tmp_path / "grow" / "devicemapper")
    first = make_driver(home=home)
    first.cleanup()
    bigger = make_driver("dm.basesize=768M", home=home)
    assert bigger.devices[BASE].size == 768 * MiB
    id = new_id()
    bigger.create(id)
    path = bigger.get(id)
    try:
        st = os.statvfs(path)
        assert st.f_blocks * st.f_frsize > 600 * MiB
    finally:
        bigger.put(id)
    bigger.cleanup()
    with pytest.raises(InvalidParameter, match=r"^devmapper: Base device size cannot be smaller than 805MB$"):
        make_driver("dm.basesize=256M", home=home)
