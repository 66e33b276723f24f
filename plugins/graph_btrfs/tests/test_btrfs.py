"""The btrfs driver against the shared conformance suite on a loop-mounted btrfs, plus what is btrfs's own.

Every test runs as root in the session sandbox on the real kernel. The
module's btrfs (``btrfs_mount`` in conftest.py) is a sparse file on a loop
device, unmounted and detached at the end; each test's driver lives in a
fresh directory on it (the ``tmp_path`` override), deleted afterwards with
every subvolume in it.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import threading
from typing import Any

import pytest

from engine.drivers import discovery
from engine.drivers.selection import DriverConfig
from engine.errors import Conflict, IncompatibleFilesystem, InvalidParameter, NotFound
from engine.sys import fs
from engine.testing.graphtest import GraphDriverConformance, new_id
from engine_graph_btrfs import btrfs
from engine_graph_btrfs.driver import BtrfsDriver, parse_options, parse_storage_opt

MiB = 1 << 20


def write(path: str, size: int) -> None:
    """Write ``size`` bytes of data (not zeros: btrfs may compress those) and flush them to disk."""
    with open(path, "wb") as f:
        chunk = os.urandom(MiB)
        for _ in range(size // MiB):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


#: FS_IOC_FIEMAP of <linux/fs.h>.
FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 1


class _Extent(ctypes.Structure):
    _fields_ = [
        ("logical", ctypes.c_uint64),
        ("physical", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
        ("reserved64", ctypes.c_uint64 * 2),
        ("flags", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 3),
    ]


class _Fiemap(ctypes.Structure):
    _fields_ = [
        ("start", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("mapped_extents", ctypes.c_uint32),
        ("extent_count", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("extents", _Extent * 64),
    ]


def physical_extents(path: str) -> list[tuple[int, int, int]]:
    """(logical, physical, length) of the file's extents, from FIEMAP (ioctl_fiemap.rst)."""
    req = _Fiemap()
    req.length = (1 << 64) - 1
    req.flags = FIEMAP_FLAG_SYNC
    req.extent_count = 64
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, FS_IOC_FIEMAP, req)
    finally:
        os.close(fd)
    return [(e.logical, e.physical, e.length) for e in req.extents[: req.mapped_extents]]


def subvolume_id(path: str) -> int:
    fd = btrfs.open_dir(path)
    try:
        return btrfs.subvolume_id(fd)
    finally:
        os.close(fd)


class TestBtrfs(GraphDriverConformance):
    driver_name = "btrfs"

    # ---- layout

    def test_each_layer_a_subvolume_a_child_a_snapshot(self, driver: BtrfsDriver) -> None:
        base = self.layer(driver, fill=lambda p: write(os.path.join(p, "data"), 2 * MiB))
        child = self.layer(driver, base)
        paths = {id: os.path.join(driver.home, "subvolumes", id) for id in (base, child)}
        for path in paths.values():
            assert btrfs.is_subvolume(os.stat(path))
        assert subvolume_id(paths[base]) != subvolume_id(paths[child])
        # The snapshot shares the parent's extents: the same data without a copy.
        extents = physical_extents(os.path.join(paths[base], "data"))
        assert extents and physical_extents(os.path.join(paths[child], "data")) == extents
        assert driver.metadata(child) == {"Dir": paths[child]}
        assert oct(os.stat(paths[base]).st_mode & 0o7777) == oct(0o755)
        assert oct(os.stat(os.path.join(driver.home, "subvolumes")).st_mode & 0o777) == oct(0o700)
        assert sorted(os.listdir(os.path.join(driver.home, "subvolumes"))) == sorted([base, child])

    def test_removing_a_parent_leaves_its_snapshot(self, driver: BtrfsDriver) -> None:
        base = self.layer(driver, fill=lambda p: write(os.path.join(p, "data"), MiB))
        child = self.layer(driver, base)
        driver.remove(base)
        path = driver.get(child)
        try:
            assert os.path.getsize(os.path.join(path, "data")) == MiB
        finally:
            driver.put(child)

    def test_nested_subvolumes_are_removed(self, driver: BtrfsDriver) -> None:
        """Subvolumes a container made in its layer, nested, one of them read-only, go with the layer."""
        id = self.layer(driver)
        path = driver.get(id)
        try:
            os.makedirs(os.path.join(path, "var/lib/machines"))
            parent = btrfs.open_dir(os.path.join(path, "var/lib/machines"))
            try:
                btrfs.create_subvolume(parent, "one")
            finally:
                os.close(parent)
            top = btrfs.open_dir(path)
            try:
                btrfs.create_subvolume(top, "two")
            finally:
                os.close(top)
            two = btrfs.open_dir(os.path.join(path, "two"))
            try:
                btrfs.create_subvolume(two, "three")
                write(os.path.join(path, "two", "three", "f"), MiB)
                btrfs.set_subvolume_flags(two, btrfs.SUBVOL_RDONLY)
            finally:
                os.close(two)
            assert sorted(btrfs_children(path)) == ["two", "var/lib/machines/one"]
        finally:
            driver.put(id)
        driver.remove(id)
        assert not driver.exists(id)
        assert os.listdir(os.path.join(driver.home, "subvolumes")) == []

    # ---- quotas

    def test_size_limit(self, driver: BtrfsDriver) -> None:
        base = self.layer(driver, fill=lambda p: write(os.path.join(p, "base"), MiB))
        limited = new_id()
        driver.create_read_write(limited, base, storage_opt={"size": "8M"})
        assert driver.quota(limited) == 8 * MiB
        assert driver.metadata(limited)["Quota"] == str(8 * MiB)
        assert dict(driver.status())["Quotas Enabled"] == "true"
        path = driver.get(limited)
        try:
            write(os.path.join(path, "fits"), 2 * MiB)
            with pytest.raises(OSError) as info:
                write(os.path.join(path, "too-big"), 16 * MiB)
            assert info.value.errno == errno.EDQUOT
        finally:
            driver.put(limited)

        # A layer made from a limited one keeps the limit, unless given its own.
        inherits = new_id()
        driver.create(inherits, limited)
        assert driver.quota(inherits) == 8 * MiB
        own = new_id()
        driver.create_read_write(own, limited, storage_opt={"size": "64M"})
        assert driver.quota(own) == 64 * MiB
        path = driver.get(own)
        try:
            write(os.path.join(path, "bigger"), 16 * MiB)
        finally:
            driver.put(own)
        free = self.layer(driver, base)
        assert driver.quota(free) is None

        driver.remove(limited)
        assert not os.path.exists(os.path.join(driver.home, "quotas", limited))
        assert sorted(os.listdir(os.path.join(driver.home, "quotas"))) == sorted([inherits, own])

    @pytest.mark.parametrize(
        "storage_opt, message",
        [
            ({"size": "0"}, "btrfs: invalid storage size: 0B"),
            ({"size": "lots"}, "btrfs: size: invalid size: 'lots'"),
            ({"size": "1G", "inode": "10"}, "Unknown option inode"),
        ],
    )
    def test_bad_storage_opt(self, driver: BtrfsDriver, storage_opt: dict[str, str], message: str) -> None:
        id = new_id()
        with pytest.raises(InvalidParameter) as info:
            driver.create_read_write(id, None, storage_opt=storage_opt)
        assert str(info.value) == message
        assert not driver.exists(id)
        assert os.listdir(os.path.join(driver.home, "subvolumes")) == []

    def test_min_space(self, driver: BtrfsDriver) -> None:
        strict = BtrfsDriver(driver.home, ["btrfs.min_space=32M"])
        assert dict(strict.status())["Min Space"] == "33.6MB"
        with pytest.raises(InvalidParameter, match=r"^btrfs: storage size cannot be less than 33.6MB$"):
            strict.create_read_write(new_id(), None, storage_opt={"size": "16M"})
        id = new_id()
        strict.create_read_write(id, None, storage_opt={"size": "32M"})
        assert strict.quota(id) == 32 * MiB

    # ---- state

    def test_leftovers_swept_at_start(self, driver: BtrfsDriver) -> None:
        subvolumes = os.path.join(driver.home, "subvolumes")
        fd = btrfs.open_dir(subvolumes)
        try:
            btrfs.create_subvolume(fd, f".tmp-{new_id()}-1234abcd")
            btrfs.create_subvolume(fd, f".rm-{new_id()}-1234abcd")
            os.makedirs(os.path.join(subvolumes, f".rm-{new_id()}-plain", "dir"))
        finally:
            os.close(fd)
        kept = self.layer(driver)
        with open(os.path.join(driver.home, "quotas", new_id()), "w") as f:
            f.write("1024")  # a quota file whose layer is gone
        BtrfsDriver(driver.home)
        assert os.listdir(subvolumes) == [kept]
        assert os.listdir(os.path.join(driver.home, "quotas")) == []

    def test_remove_in_use_and_missing(self, driver: BtrfsDriver) -> None:
        id = self.layer(driver)
        driver.get(id)
        with pytest.raises(Conflict, match="in use"):
            driver.remove(id)
        driver.put(id)
        driver.remove(id)
        with pytest.raises(NotFound):
            driver.remove(id)
        with pytest.raises(NotFound):
            driver.quota(id)

    def test_concurrent_create_of_one_id(self, driver: BtrfsDriver) -> None:
        base = self.layer(driver)
        id = new_id()
        outcomes: list[str] = []

        def create() -> None:
            try:
                driver.create(id, base)
                outcomes.append("created")
            except Conflict:
                outcomes.append("conflict")

        threads = [threading.Thread(target=create) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["conflict"] * 5 + ["created"]
        assert sorted(os.listdir(os.path.join(driver.home, "subvolumes"))) == sorted([base, id])

    def test_status(self, driver: BtrfsDriver) -> None:
        status = dict(driver.status())
        assert status["Build Version"].startswith("engine-graph-btrfs 0.1.0")
        assert status["Library Version"] == f"Linux {os.uname().release} btrfs"
        assert status["Quotas Enabled"] in ("true", "false")

    def test_selected_automatically_on_btrfs(self, tmp_path: Any) -> None:
        root = str(tmp_path / "engine-root")
        chosen = discovery.select("graph", DriverConfig(root=root, environ={}))
        try:
            assert chosen.name == "btrfs" and isinstance(chosen, BtrfsDriver)
            assert chosen.home == os.path.join(root, "btrfs")
        finally:
            chosen.cleanup()


def btrfs_children(path: str) -> list[str]:
    fd = btrfs.open_dir(path)
    try:
        return list(btrfs.nested_subvolumes(fd))
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# without btrfs


def test_probe_refuses_other_file_systems(tmp_path_factory: Any) -> None:
    elsewhere = str(tmp_path_factory.mktemp("not-btrfs"))
    backing = fs.backing_filesystem(elsewhere)
    assert backing != "btrfs"
    home = os.path.join(elsewhere, "root", "btrfs")
    with pytest.raises(IncompatibleFilesystem) as info:
        BtrfsDriver.probe(home)
    assert str(info.value) == f"btrfs: {home} ({elsewhere}, for now) is on {backing}, not on btrfs"
    assert not os.path.exists(os.path.join(elsewhere, "root"))  # the probe changes nothing
    os.makedirs(home)
    with pytest.raises(IncompatibleFilesystem, match=f"^btrfs: {home} is on {backing}, not on btrfs$"):
        BtrfsDriver.probe(home)
    with pytest.raises(IncompatibleFilesystem):
        BtrfsDriver(home)


@pytest.mark.parametrize(
    "options, message",
    [
        (["btrfs.min_space"], "Unable to parse key/value option: btrfs.min_space"),
        (["btrfs.min_space=ten"], "btrfs: btrfs.min_space: invalid size: 'ten'"),
        (["dm.basesize=10G"], "btrfs: Unknown option dm.basesize"),
    ],
)
def test_bad_daemon_options(options: list[str], message: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_options(options)
    assert str(info.value) == message


def test_option_parsing() -> None:
    assert parse_options([]) == 0
    assert parse_options(["BTRFS.MIN_SPACE=1G"]) == 1 << 30
    assert parse_storage_opt({}) is None
    assert parse_storage_opt({"size": "10G"}) == 10 << 30
    assert parse_storage_opt({"Size": "512k"}) == 512 << 10


def test_ioctl_request_numbers() -> None:
    """The request numbers match ``<linux/btrfs.h>`` (as ``btrfs-progs`` computes them)."""
    assert btrfs.IOC_SUBVOL_CREATE == 0x5000940E
    assert btrfs.IOC_SNAP_DESTROY == 0x5000940F
    assert btrfs.IOC_SNAP_CREATE_V2 == 0x50009417
    assert btrfs.IOC_SNAP_DESTROY_V2 == 0x5000943F
    assert btrfs.IOC_INO_LOOKUP == 0xD0009412
    assert btrfs.IOC_SUBVOL_GETFLAGS == 0x80089419
    assert btrfs.IOC_SUBVOL_SETFLAGS == 0x4008941A
    assert btrfs.IOC_QUOTA_CTL == 0xC0109428
    assert btrfs.IOC_QGROUP_CREATE == 0x4010942A
    assert btrfs.IOC_QGROUP_LIMIT == 0x8030942B
    assert btrfs.IOC_GET_SUBVOL_ROOTREF == 0xD000943D
    assert btrfs.IOC_INO_LOOKUP_USER == 0xD000943E
    assert btrfs.IOC_FS_INFO == 0x8400941F
