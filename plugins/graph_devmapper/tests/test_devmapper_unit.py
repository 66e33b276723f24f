"""What of the devicemapper driver runs without device-mapper: options, records, ids, strings, status.

Nothing here needs a kernel with device-mapper and nothing is faked: the
functions under test are pure, or work on files in ``tmp_path``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from engine.errors import HostError, InvalidParameter, NotSupported
from engine_graph_devmapper import dm
from engine_graph_devmapper.driver import (
    DevmapperDriver,
    check_free_space,
    device_mapper_present,
    device_prefix,
    mount_options,
    parse_storage_opt,
    split_mount_options,
    status_lines,
)
from engine_graph_devmapper.metadata import BASE, Device, DeviceIds, MetadataStore, Transaction
from engine_graph_devmapper.options import DmOptions, parse_options

GiB = 1 << 30


def no_xfs(tool: str) -> str | None:
    return None


def with_xfs(tool: str) -> str | None:
    return "/usr/sbin/mkfs.xfs" if "xfs" in tool else None


# --------------------------------------------------------------------------
# options


def test_defaults_are_dockers() -> None:
    opts = parse_options([], which=no_xfs)
    assert opts == DmOptions(filesystem="ext4")
    assert (opts.base_fs_size, opts.data_loopback_size, opts.metadata_loopback_size) == (10 * GiB, 100 * GiB, 2 * GiB)
    assert opts.thinp_block_size == 128 and opts.min_free_space_percent == 10
    assert opts.loopback and opts.block_discard
    assert parse_options([], which=with_xfs).filesystem == "xfs"


def test_every_option() -> None:
    opts = parse_options(
        [
            "dm.basesize=20G",
            "dm.loopdatasize=200G",
            "dm.loopmetadatasize=4G",
            "dm.fs=xfs",
            "dm.mkfsarg=-m crc=1",
            "dm.mkfsarg=-K",
            "dm.mountopt=nodiscard",
            "dm.mountopt=noatime",
            "dm.blkdiscard=false",
            "dm.blocksize=512K",
            "dm.override_udev_sync_check=true",
            "dm.use_deferred_removal=true",
            "dm.use_deferred_deletion=1",
            "dm.min_free_space=5%",
            "dm.xfs_nospace_max_retries=0",
            "DM.LIBDM_LOG_LEVEL=7",
        ],
        which=no_xfs,
    )
    assert opts.base_fs_size == 20 * GiB and opts.user_base_size
    assert (opts.data_loopback_size, opts.metadata_loopback_size) == (200 * GiB, 4 * GiB)
    assert opts.filesystem == "xfs" and opts.mkfs_args == ["-m crc=1", "-K"]
    assert opts.mount_options == "nodiscard,noatime"
    assert not opts.block_discard and opts.thinp_block_size == 1024
    assert opts.override_udev_sync_check and opts.deferred_removal and opts.deferred_deletion
    assert opts.min_free_space_percent == 5 and opts.xfs_nospace_retries == "0" and opts.libdm_log_level == 7


def test_real_devices_turn_discard_off_unless_asked() -> None:
    pool = parse_options(["dm.thinpooldev=/dev/mapper/vg-thinpool"], which=no_xfs)
    assert pool.thin_pool_device == "vg-thinpool" and not pool.loopback and not pool.block_discard
    devices = parse_options(["dm.datadev=/dev/sdb1", "dm.metadatadev=/dev/sdc1"], which=no_xfs)
    assert not devices.loopback and not devices.block_discard
    asked = parse_options(["dm.thinpooldev=vg-thinpool", "dm.blkdiscard=true"], which=no_xfs)
    assert asked.block_discard


@pytest.mark.parametrize(
    "option, message",
    [
        ("dm.basesize", "Unable to parse key/value option: dm.basesize"),
        ("dm.basesize=ten", "invalid size: 'ten'"),
        ("dm.loopdatasize=1X", "invalid suffix: 'x'"),
        ("dm.fs=btrfs", "devmapper: Unsupported filesystem btrfs"),
        ("dm.blkdiscard=maybe", 'strconv.ParseBool: parsing "maybe": invalid syntax'),
        ("dm.use_deferred_removal=yes", 'strconv.ParseBool: parsing "yes": invalid syntax'),
        ("dm.min_free_space=10", "devmapper: Option dm.min_free_space requires % suffix"),
        ("dm.min_free_space=100%", "devmapper: Invalid value 100% for option dm.min_free_space"),
        ("dm.min_free_space=x%", 'strconv.ParseUint: parsing "x": invalid syntax'),
        ("dm.xfs_nospace_max_retries=-1", 'strconv.ParseUint: parsing "-1": invalid syntax'),
        (
            "dm.blocksize=100K",
            "devmapper: Invalid value 100K for option dm.blocksize: a multiple of 64KiB between 64KiB and 1GiB",
        ),
        ("dm.libdm_log_level=9", "devmapper: Invalid value 9 for option dm.libdm_log_level: range [2, 7]"),
        ("dm.thinp_percent=95", "devmapper: dm.thinp_* options need dm.directlvm_device"),
        ("dm.thinp_percent=101", "devmapper: could not parse `dm.thinp_percent=101`: must be <= 100"),
        ("dm.nosuchthing=1", "devmapper: Unknown option dm.nosuchthing"),
        ("overlay2.size=1G", "devmapper: Unknown option overlay2.size"),
    ],
)
def test_bad_options_in_dockers_words(option: str, message: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_options([option], which=no_xfs)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "options, message",
    [
        (
            ["dm.use_deferred_deletion=true"],
            "devmapper: Deferred deletion can not be enabled as deferred removal is not enabled. Enable deferred "
            "removal using --storage-opt dm.use_deferred_removal=true parameter",
        ),
        (
            ["dm.thinpooldev=pool", "dm.datadev=/dev/sdb"],
            "devmapper: dm.thinpooldev cannot be used with dm.datadev or dm.metadatadev",
        ),
        (["dm.datadev=/dev/sdb"], "devmapper: dm.datadev and dm.metadatadev must be given together"),
        (
            ["dm.directlvm_device=/dev/xvdf"],
            "devmapper: dm.directlvm_device is not supported: this driver does not run the LVM tools; make a thin "
            "pool with lvcreate --thinpool and pass it with dm.thinpooldev",
        ),
    ],
)
def test_refused_combinations(options: list[str], message: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_options(options, which=no_xfs)
    assert str(info.value) == message


def test_container_storage_opt() -> None:
    assert parse_storage_opt({}, 10 * GiB) is None
    assert parse_storage_opt({"size": "20G"}, 10 * GiB) == 20 * GiB
    assert parse_storage_opt({"size": "10G"}, 10 * GiB) == 10 * GiB
    with pytest.raises(InvalidParameter, match=r"^devmapper: Container size cannot be smaller than 10.7GB$"):
        parse_storage_opt({"size": "5G"}, 10 * GiB)
    with pytest.raises(InvalidParameter, match=r"^Unknown option inodes$"):
        parse_storage_opt({"inodes": "5"}, 10 * GiB)


# --------------------------------------------------------------------------
# tables, messages, status


def test_table_and_message_strings() -> None:
    pool = dm.thin_pool_target(100 * GiB, "/dev/loop1", "/dev/loop0", 128)
    assert str(pool) == "0 209715200 thin-pool /dev/loop1 /dev/loop0 128 32768 1 skip_block_zeroing"
    thin = dm.thin_target(10 * GiB, "/dev/mapper/engine-254:1-42-pool", 7)
    assert str(thin) == "0 20971520 thin /dev/mapper/engine-254:1-42-pool 7"
    assert dm.create_thin_message(1) == "create_thin 1"
    assert dm.create_snap_message(8, 3) == "create_snap 8 3"
    assert dm.delete_message(8) == "delete 8"
    assert dm.set_transaction_id_message(4, 5) == "set_transaction_id 4 5"


def test_pool_status_parsing() -> None:
    status = dm.parse_pool_status("9 142/524288 2867/1638400 - rw discard_passdown queue_if_no_space - 1024")
    assert status == dm.PoolStatus(9, 142, 524288, 2867, 1638400, "rw", False)
    assert status.data_bytes(128) == (2867 * 65536, 1638400 * 65536)
    assert status.metadata_bytes() == (142 * 4096, 524288 * 4096)
    full = dm.parse_pool_status("3 10/20 30/30 - out_of_data_space discard_passdown error_if_no_space needs_check 4")
    assert full.mode == "out_of_data_space" and full.needs_check
    assert dm.parse_pool_status("Fail").mode == "Fail"
    with pytest.raises(ValueError):
        dm.parse_pool_status("nonsense")


def test_free_space_check_in_dockers_words() -> None:
    check_free_space(dm.PoolStatus(0, 10, 100, 80, 100, "rw", False), 10)
    check_free_space(dm.PoolStatus(0, 10, 100, 100, 100, "rw", False), 0)
    with pytest.raises(HostError) as info:
        check_free_space(dm.PoolStatus(0, 10, 100, 95, 100, "rw", False), 10)
    assert str(info.value) == (
        "devmapper: Thin Pool has 5 free data blocks which is less than minimum required 10 free data blocks. "
        "Create more free space in thin pool or use dm.min_free_space option to change behavior"
    )
    with pytest.raises(HostError, match=r"^devmapper: Thin Pool has 3 free metadata blocks which is less than"):
        check_free_space(dm.PoolStatus(0, 97, 100, 0, 100, "rw", False), 10)


def test_status_lines_as_docker_prints_them() -> None:
    pool = dm.parse_pool_status("9 142/524288 2867/1638400 - rw discard_passdown queue_if_no_space - 1024")
    lines = status_lines(
        pool_name="engine-254:1-42-pool",
        block_sectors=128,
        base_size=10 * GiB,
        filesystem="xfs",
        udev_sync=True,
        data_file="/dev/loop0",
        metadata_file="/dev/loop1",
        data_loop_file="/var/lib/engine/devicemapper/devicemapper/data",
        metadata_loop_file="/var/lib/engine/devicemapper/devicemapper/metadata",
        pool=pool,
        data_available=7 * 10**9,
        min_free_percent=10,
        deferred_removal=True,
        deferred_deletion=False,
        deferred_deleted=0,
        library_version="1.02.185 (2022-05-18)",
    )
    assert lines == [
        ("Pool Name", "engine-254:1-42-pool"),
        ("Pool Blocksize", "65.5kB"),
        ("Base Device Size", "10.7GB"),
        ("Backing Filesystem", "xfs"),
        ("Udev Sync Supported", "true"),
        ("Data file", "/dev/loop0"),
        ("Metadata file", "/dev/loop1"),
        ("Data loop file", "/var/lib/engine/devicemapper/devicemapper/data"),
        ("Metadata loop file", "/var/lib/engine/devicemapper/devicemapper/metadata"),
        ("Data Space Used", "188MB"),
        ("Data Space Total", "107GB"),
        ("Data Space Available", "7GB"),
        ("Metadata Space Used", "582kB"),
        ("Metadata Space Total", "2.15GB"),
        ("Metadata Space Available", "2.15GB"),
        ("Thin Pool Minimum Free Space", "10.7GB"),
        ("Deferred Removal Enabled", "true"),
        ("Deferred Deletion Enabled", "false"),
        ("Deferred Deleted Device Count", "0"),
        ("Library Version", "1.02.185 (2022-05-18)"),
    ]
    # A pool given with dm.thinpooldev has no loop files: those lines go.
    keys = [k for k, _ in status_lines(**{**_status_kwargs(pool), "data_loop_file": "", "metadata_loop_file": ""})]
    assert "Data loop file" not in keys and "Metadata loop file" not in keys


def _status_kwargs(pool: dm.PoolStatus) -> dict[str, Any]:
    return {
        "pool_name": "p",
        "block_sectors": 128,
        "base_size": GiB,
        "filesystem": "ext4",
        "udev_sync": False,
        "data_file": "",
        "metadata_file": "",
        "data_loop_file": "",
        "metadata_loop_file": "",
        "pool": pool,
        "data_available": 0,
        "min_free_percent": 10,
        "deferred_removal": False,
        "deferred_deletion": False,
        "deferred_deleted": 0,
        "library_version": "x",
    }


def test_names_and_mount_options(tmp_path: Any) -> None:
    st = os.stat(tmp_path)
    assert device_prefix(st) == f"engine-{os.major(st.st_dev)}:{os.minor(st.st_dev)}-{st.st_ino}"
    assert mount_options("xfs", "", "") == "nouuid"
    assert mount_options("ext4", "discard", "system_u:object_r:svirt_sandbox_file_t:s0") == (
        'discard,context="system_u:object_r:svirt_sandbox_file_t:s0"'
    )
    assert split_mount_options("nouuid,noatime,ro,rw,discard") == (0x400 | 0x1, "nouuid,discard")


# --------------------------------------------------------------------------
# records and ids


def test_records_round_trip_in_mobys_format(tmp_path: Any) -> None:
    store = MetadataStore(str(tmp_path / "metadata"))
    assert store.load_devices() == {} and store.load_deviceset() == {}
    base = Device(BASE, 1, 10 * GiB, 1, initialized=True)
    layer = Device("a" * 64, 2, 10 * GiB, 2)
    store.save_device(base)
    store.save_device(layer)
    store.save_deviceset(2, "3f1c-uuid", "ext4")
    store.save_transaction(Transaction(3, "b" * 64, 3))
    with open(tmp_path / "metadata" / "base") as f:
        assert json.load(f) == {
            "device_id": 1,
            "size": 10 * GiB,
            "transaction_id": 1,
            "initialized": True,
            "deleted": False,
        }
    with open(tmp_path / "metadata" / "deviceset-metadata") as f:
        assert json.load(f) == {"next_device_id": 2, "BaseDeviceUUID": "3f1c-uuid", "BaseDeviceFilesystem": "ext4"}
    with open(tmp_path / "metadata" / "transaction-metadata") as f:
        assert json.load(f) == {"open_transaction_id": 3, "device_hash": "b" * 64, "device_id": 3}
    again = MetadataStore(str(tmp_path / "metadata"))
    assert again.load_devices() == {BASE: base, "a" * 64: layer}
    assert again.load_transaction() == Transaction(3, "b" * 64, 3)
    again.remove_device("a" * 64)
    again.remove_device("a" * 64)  # twice: no error
    assert list(again.load_devices()) == [BASE]
    assert oct(os.stat(tmp_path / "metadata" / "base").st_mode & 0o777) == oct(0o600)


def test_interrupted_writes_leave_old_records(tmp_path: Any) -> None:
    """A crash mid-write leaves a temporary file beside the old record: the old one is read, the leftover swept."""
    store = MetadataStore(str(tmp_path))
    store.save_device(Device("c" * 64, 5, GiB, 7))
    with open(tmp_path / f".{'c' * 64}.x1y2.tmp", "w") as f:
        f.write('{"device_id": 9')  # cut short
    assert store.load_devices() == {"c" * 64: Device("c" * 64, 5, GiB, 7)}
    assert sorted(os.listdir(tmp_path)) == ["c" * 64]


def test_unreadable_records_are_reported(tmp_path: Any) -> None:
    store = MetadataStore(str(tmp_path))
    (tmp_path / ("d" * 64)).write_text("{not json")
    with pytest.raises(HostError, match="cannot read"):
        store.load_devices()
    (tmp_path / ("d" * 64)).write_text('{"size": 1}')
    with pytest.raises(HostError, match="is not a device record"):
        store.load_devices()
    with pytest.raises(ValueError):
        store.save_device(Device("deviceset-metadata", 1, 1, 1))


def test_device_ids() -> None:
    ids = DeviceIds()
    assert [ids.allocate() for _ in range(3)] == [1, 2, 3]
    ids.release(2)
    assert ids.allocate() == 4  # on from the last one, as moby does
    wrapped = DeviceIds(next_id=6, used={1, 7}, max_id=7)
    assert wrapped.allocate() == 2  # 7 taken, 0 never used, 1 taken
    assert DeviceIds(next_id=0, used=set(range(1, 8)), max_id=7).used == set(range(1, 8))
    with pytest.raises(HostError, match=r"^devmapper: Unable to find a free device ID$"):
        DeviceIds(used=set(range(1, 8)), max_id=7).allocate()


# --------------------------------------------------------------------------
# this host


def test_probe_says_why_not_here(tmp_path: Any) -> None:
    """Without device-mapper in the kernel (this host), the probe says so and selection skips the driver."""
    if device_mapper_present():
        pytest.skip("this kernel has device-mapper: the VM tests cover the driver")
    with pytest.raises(NotSupported) as info:
        DevmapperDriver.probe(str(tmp_path / "devicemapper"))
    assert (
        str(info.value)
        == "devmapper: the kernel has no device-mapper (no device-mapper in /proc/misc; modprobe dm_mod)"
    )
    with pytest.raises(InvalidParameter, match="Unknown option"):
        DevmapperDriver.probe(str(tmp_path / "devicemapper"), ["dm.bogus=1"])


@pytest.fixture
def libdm() -> dm.LibDevmapper:
    """The real libdevmapper (.ci/install installs it)."""
    try:
        return dm.LibDevmapper()
    except OSError:
        pytest.skip("libdevmapper1.02.1 is not installed")


def test_library_version_from_libdevmapper(libdm: dm.LibDevmapper) -> None:
    version = libdm.library_version()
    assert version.split()[0].count(".") == 2 and version.startswith("1.02.")


def test_deferred_removal_and_deletion_default_to_what_the_kernel_supports() -> None:
    """moby turns both on where the kernel can remove a device at its last close; false turns them off."""
    on = parse_options([], which=no_xfs, deferred_supported=True)
    assert on.deferred_removal and on.deferred_deletion
    off = parse_options([], which=no_xfs)
    assert not off.deferred_removal and not off.deferred_deletion
    both_off = parse_options(
        ["dm.use_deferred_removal=false", "dm.use_deferred_deletion=false"], which=no_xfs, deferred_supported=True
    )
    assert not both_off.deferred_removal and not both_off.deferred_deletion
    with pytest.raises(InvalidParameter, match="Deferred deletion can not be enabled"):
        parse_options(["dm.use_deferred_removal=false"], which=no_xfs, deferred_supported=True)


def test_kernel_driver_version_decides_deferred_support(libdm: dm.LibDevmapper) -> None:
    from engine_graph_devmapper.driver import device_mapper_present

    version = libdm.driver_version()
    if not device_mapper_present():
        assert version is None and not libdm.deferred_remove_supported()
    else:
        assert version is not None and version[0] == 4
        assert libdm.deferred_remove_supported() is (version[:2] >= (4, 27))
