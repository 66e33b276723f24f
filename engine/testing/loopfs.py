"""A file system of a chosen type on a loop-mounted sparse file, for tests and benches.

Graph drivers that need a particular backing file system (btrfs) are tested
on a file made for the purpose::

    with loop_filesystem(str(tmp_path), "btrfs", size=1 << 30) as mnt:
        ...  # mnt is a fresh btrfs, mounted

:func:`loop_filesystem` makes a sparse image file, runs ``mkfs.<type>`` on it
once, attaches it to a loop device with autoclear (:mod:`engine.sys.loop`),
mounts it and, on the way out (also after a failure), unmounts everything
below the mount point, detaches the device if the kernel has not already and
deletes the image. With autoclear the device goes away by itself when the
mount does, so even a test process killed mid-way leaks no device once its
mount namespace is gone (the test sandbox's is).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence

from engine.sys import fs, libc, loop

LOG = logging.getLogger(__name__)

#: What ``mkfs.<type>`` needs to format a file without asking.
_FORCE = {"btrfs": ["-f", "-q"], "xfs": ["-f", "-q"], "ext4": ["-F", "-q"]}


def mkfs_available(fstype: str) -> bool:
    """Whether ``mkfs.<fstype>`` is installed."""
    return shutil.which(f"mkfs.{fstype}") is not None or os.access(f"/usr/sbin/mkfs.{fstype}", os.X_OK)


def filesystem_supported(fstype: str, filesystems: str = "/proc/filesystems") -> bool:
    """Whether the kernel lists ``fstype`` (it may still be a module not loaded yet)."""
    with open(filesystems) as f:
        return any(line.split()[-1] == fstype for line in f if line.strip())


@contextlib.contextmanager
def loop_filesystem(
    workdir: str,
    fstype: str,
    size: int = 1 << 30,
    mkfs_args: Sequence[str] = (),
    mount_options: str = "",
) -> Iterator[str]:
    """Yield the mount point of a fresh ``fstype`` on a loop device; undo it all afterwards.

    Creates ``<workdir>/<fstype>.img`` (sparse, ``size`` bytes) and mounts it
    on ``<workdir>/<fstype>.mnt``.

    :raises subprocess.CalledProcessError: if mkfs fails.
    :raises OSError: if the loop device or the mount fails.
    """
    os.makedirs(workdir, exist_ok=True)
    image = os.path.join(workdir, f"{fstype}.img")
    point = os.path.join(workdir, f"{fstype}.mnt")
    with open(image, "wb") as f:
        f.truncate(size)
    device: loop.LoopDevice | None = None
    try:
        mkfs = shutil.which(f"mkfs.{fstype}") or f"/usr/sbin/mkfs.{fstype}"
        subprocess.run([mkfs, *_FORCE.get(fstype, []), *mkfs_args, image], check=True, capture_output=True)
        os.makedirs(point, exist_ok=True)
        device = loop.attach(image)
        libc.mount(device.path, point, fstype, 0, mount_options or None)
        device.close()  # the mount holds it now: autoclear detaches it at the unmount
        yield point
    finally:
        try:
            if os.path.isdir(point):
                fs.unmount_all(point)
        finally:
            if device is not None:
                device.close()
                if loop.backing_file(device.path) == os.path.realpath(image):
                    # Autoclear has not released it yet; the path check keeps
                    # us off a device someone else took since.
                    with contextlib.suppress(OSError):
                        loop.detach(device.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(image)
            with contextlib.suppress(OSError):
                os.rmdir(point)
