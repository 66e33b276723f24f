"""The devicemapper driver's ``--storage-opt dm.*`` options, read and checked as Docker reads them.

Every key, default and message follows moby's ``daemon/graphdriver/devmapper``
(``NewDeviceSet``), so an operator's ``daemon.json`` means the same here.
Sizes use go-units ``RAMInBytes`` (``10G`` is 10 GiB), booleans Go's
``strconv.ParseBool``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from engine.drivers import graph
from engine.errors import InvalidParameter

#: moby's defaults.
DEFAULT_DATA_LOOPBACK_SIZE = 100 << 30
DEFAULT_METADATA_LOOPBACK_SIZE = 2 << 30
DEFAULT_BASE_FS_SIZE = 10 << 30
DEFAULT_THINP_BLOCK_SIZE = 128  # 512-byte sectors: 64 KiB
DEFAULT_MIN_FREE_SPACE_PERCENT = 10
DEFAULT_UDEV_WAIT_TIMEOUT = 185

#: The pool's block size must be a multiple of 64 KiB between 64 KiB and 1 GiB (dm-thin).
_MIN_BLOCK_SECTORS, _MAX_BLOCK_SECTORS = 128, 2097152


def ram_in_bytes(value: str) -> int:
    """go-units ``RAMInBytes``; :raises InvalidParameter: with its words."""
    try:
        return graph.ram_in_bytes(value)
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from None


def parse_bool(value: str) -> bool:
    """Go's ``strconv.ParseBool``; :raises InvalidParameter: with its words."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise InvalidParameter(f'strconv.ParseBool: parsing "{value}": invalid syntax')


def parse_uint(value: str, bits: int = 64) -> int:
    """Go's ``strconv.ParseUint(value, 10, bits)``; :raises InvalidParameter: with its words."""
    if not value.isdigit() or not value.isascii():
        raise InvalidParameter(f'strconv.ParseUint: parsing "{value}": invalid syntax')
    number = int(value)
    if number >= 1 << bits:
        raise InvalidParameter(f'strconv.ParseUint: parsing "{value}": value out of range')
    return number


def default_filesystem(which: Callable[[str], str | None] = shutil.which) -> str:
    """xfs when ``mkfs.xfs`` is installed, else ext4 (moby's ``determineDefaultFS``)."""
    return "xfs" if which("mkfs.xfs") or which("/usr/sbin/mkfs.xfs") or which("/sbin/mkfs.xfs") else "ext4"


@dataclass
class DmOptions:
    """What the ``dm.*`` options configure; defaults are moby's."""

    base_fs_size: int = DEFAULT_BASE_FS_SIZE
    user_base_size: bool = False
    data_loopback_size: int = DEFAULT_DATA_LOOPBACK_SIZE
    metadata_loopback_size: int = DEFAULT_METADATA_LOOPBACK_SIZE
    filesystem: str = ""  # "" until resolved: xfs if mkfs.xfs is installed, else ext4
    mkfs_args: list[str] = field(default_factory=list)
    mount_options: str = ""
    metadata_device: str = ""
    data_device: str = ""
    thin_pool_device: str = ""
    block_discard: bool = True
    thinp_block_size: int = DEFAULT_THINP_BLOCK_SIZE
    override_udev_sync_check: bool = False
    #: Both on by default where the kernel supports deferred removal, as moby turns them on.
    deferred_removal: bool = False
    deferred_deletion: bool = False
    min_free_space_percent: int = DEFAULT_MIN_FREE_SPACE_PERCENT
    xfs_nospace_retries: str = ""
    libdm_log_level: int = 0
    udev_wait_timeout: int = DEFAULT_UDEV_WAIT_TIMEOUT

    @property
    def loopback(self) -> bool:
        """Whether the pool is ours on two loop-backed sparse files (neither a pool nor devices were given)."""
        return not (self.thin_pool_device or self.data_device)


#: LVM options moby accepts (``dm.directlvm_device`` and the ``dm.thinp_*``
#: sizing of the pool it then builds with the LVM tools).
_DIRECT_LVM = ("dm.directlvm_device", "dm.directlvm_device_force", "dm.thinp_percent", "dm.thinp_metapercent")
_DIRECT_LVM_AUTOEXTEND = ("dm.thinp_autoextend_percent", "dm.thinp_autoextend_threshold")


def _join_mount_options(a: str, b: str) -> str:
    if not a:
        return b
    if not b:
        return a
    return f"{a},{b}"


def _percent(key: str, value: str) -> int:
    number = parse_uint(value.removesuffix("%"), 32)
    if number >= 100:
        raise InvalidParameter(f"devmapper: Invalid value {value} for option {key}")
    return number


def parse_options(
    options: Sequence[str], which: Callable[[str], str | None] = shutil.which, deferred_supported: bool = False
) -> DmOptions:
    """Read the daemon's ``--storage-opt`` values into :class:`DmOptions`.

    :param which: finds ``mkfs.xfs`` to choose the default file system.
    :param deferred_supported: the kernel can remove a device at its last close: deferred
        removal and deletion are then on unless the options turn them off (moby's defaults).
    :raises InvalidParameter: with Docker's message for a malformed or
        unknown option, a bad value, or a combination Docker refuses.
    """
    opts = DmOptions(deferred_removal=deferred_supported, deferred_deletion=deferred_supported)
    found_discard = False
    lvm: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise InvalidParameter(f"Unable to parse key/value option: {option}")
        key = key.strip().lower()
        value = value.strip()
        if key == "dm.basesize":
            opts.base_fs_size = ram_in_bytes(value)
            opts.user_base_size = True
        elif key == "dm.loopdatasize":
            opts.data_loopback_size = ram_in_bytes(value)
        elif key == "dm.loopmetadatasize":
            opts.metadata_loopback_size = ram_in_bytes(value)
        elif key == "dm.fs":
            if value not in ("ext4", "xfs"):
                raise InvalidParameter(f"devmapper: Unsupported filesystem {value}")
            opts.filesystem = value
        elif key == "dm.mkfsarg":
            opts.mkfs_args.append(value)
        elif key == "dm.mountopt":
            opts.mount_options = _join_mount_options(opts.mount_options, value)
        elif key == "dm.metadatadev":
            opts.metadata_device = value
        elif key == "dm.datadev":
            opts.data_device = value
        elif key == "dm.thinpooldev":
            opts.thin_pool_device = value.removeprefix("/dev/mapper/")
        elif key == "dm.blkdiscard":
            found_discard = True
            opts.block_discard = parse_bool(value)
        elif key == "dm.blocksize":
            size = ram_in_bytes(value)
            sectors = size >> 9
            if size % (64 << 10) or not _MIN_BLOCK_SECTORS <= sectors <= _MAX_BLOCK_SECTORS:
                raise InvalidParameter(
                    f"devmapper: Invalid value {value} for option dm.blocksize: a multiple of 64KiB "
                    "between 64KiB and 1GiB"
                )
            opts.thinp_block_size = sectors
        elif key == "dm.override_udev_sync_check":
            opts.override_udev_sync_check = parse_bool(value)
        elif key == "dm.use_deferred_removal":
            opts.deferred_removal = parse_bool(value)
        elif key == "dm.use_deferred_deletion":
            opts.deferred_deletion = parse_bool(value)
        elif key == "dm.min_free_space":
            if not value.endswith("%"):
                raise InvalidParameter("devmapper: Option dm.min_free_space requires % suffix")
            opts.min_free_space_percent = _percent(key, value)
        elif key == "dm.xfs_nospace_max_retries":
            parse_uint(value, 64)
            opts.xfs_nospace_retries = value
        elif key == "dm.libdm_log_level":
            level = parse_uint(value, 32) if not value.startswith("-") else -1
            if not 2 <= level <= 7:
                raise InvalidParameter(f"devmapper: Invalid value {value} for option dm.libdm_log_level: range [2, 7]")
            opts.libdm_log_level = level
        elif key in _DIRECT_LVM or key in _DIRECT_LVM_AUTOEXTEND:
            lvm[key] = value
        else:
            raise InvalidParameter(f"devmapper: Unknown option {key}")
    _check_lvm(lvm)
    if opts.thin_pool_device and (opts.data_device or opts.metadata_device):
        raise InvalidParameter("devmapper: dm.thinpooldev cannot be used with dm.datadev or dm.metadatadev")
    if bool(opts.data_device) != bool(opts.metadata_device):
        raise InvalidParameter("devmapper: dm.datadev and dm.metadatadev must be given together")
    if opts.deferred_deletion and not opts.deferred_removal:
        raise InvalidParameter(
            "devmapper: Deferred deletion can not be enabled as deferred removal is not enabled. Enable deferred "
            "removal using --storage-opt dm.use_deferred_removal=true parameter"
        )
    # Discarding on a real device is rarely useful and slow (moby's default).
    if not found_discard and not opts.loopback:
        opts.block_discard = False
    if not opts.filesystem:
        opts.filesystem = default_filesystem(which)
    return opts


def _check_lvm(lvm: Mapping[str, str]) -> None:
    """``dm.directlvm_*`` and ``dm.thinp_*``: validated as moby does, then refused (see the README)."""
    if not lvm:
        return
    for key in ("dm.thinp_percent", "dm.thinp_metapercent", "dm.thinp_autoextend_percent"):
        if key in lvm:
            number = parse_uint(lvm[key].removesuffix("%"), 32)
            if number > 100:
                raise InvalidParameter(f"devmapper: could not parse `{key}={lvm[key]}`: must be <= 100")
    if "dm.thinp_autoextend_threshold" in lvm:
        number = parse_uint(lvm["dm.thinp_autoextend_threshold"].removesuffix("%"), 32)
        if number > 100:
            raise InvalidParameter(
                f"devmapper: could not parse `dm.thinp_autoextend_threshold={lvm['dm.thinp_autoextend_threshold']}`: "
                "must be <= 100"
            )
    if "dm.directlvm_device_force" in lvm:
        parse_bool(lvm["dm.directlvm_device_force"])
    if "dm.directlvm_device" not in lvm:
        raise InvalidParameter("devmapper: dm.thinp_* options need dm.directlvm_device")
    raise InvalidParameter(
        "devmapper: dm.directlvm_device is not supported: this driver does not run the LVM tools; make a thin "
        "pool with lvcreate --thinpool and pass it with dm.thinpooldev"
    )
