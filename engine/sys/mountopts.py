"""mount(8)-style option lists turned into mount(2)'s flags, propagation and data.

``ro,nosuid,size=64m`` is ``MS_RDONLY | MS_NOSUID`` and the file system's
data ``size=64m``, as mount(8) and moby/sys/mount's ``parseOptions`` read it.
The exec drivers use it for a container's mounts, the daemon for local
volumes with driver options.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.sys import libc

__all__ = ["FLAGS", "PROPAGATION", "split_options"]

#: Option name -> (flag, whether the option sets it or clears it).
FLAGS: dict[str, tuple[int, bool]] = {
    "ro": (libc.MS_RDONLY, True),
    "rw": (libc.MS_RDONLY, False),
    "nosuid": (libc.MS_NOSUID, True),
    "suid": (libc.MS_NOSUID, False),
    "nodev": (libc.MS_NODEV, True),
    "dev": (libc.MS_NODEV, False),
    "noexec": (libc.MS_NOEXEC, True),
    "exec": (libc.MS_NOEXEC, False),
    "noatime": (libc.MS_NOATIME, True),
    "atime": (libc.MS_NOATIME, False),
    "nodiratime": (libc.MS_NODIRATIME, True),
    "diratime": (libc.MS_NODIRATIME, False),
    "relatime": (libc.MS_RELATIME, True),
    "norelatime": (libc.MS_RELATIME, False),
    "strictatime": (libc.MS_STRICTATIME, True),
    "nostrictatime": (libc.MS_STRICTATIME, False),
    "sync": (0x10, True),  # MS_SYNCHRONOUS
    "async": (0x10, False),
    "dirsync": (0x80, True),  # MS_DIRSYNC
    "remount": (libc.MS_REMOUNT, True),
    "bind": (libc.MS_BIND, True),
    "rbind": (libc.MS_BIND | libc.MS_REC, True),
    "defaults": (0, False),
}
#: Propagation option name -> the flags of the mount(2) call that sets it.
PROPAGATION: dict[str, int] = {
    "private": libc.MS_PRIVATE,
    "rprivate": libc.MS_PRIVATE | libc.MS_REC,
    "slave": libc.MS_SLAVE,
    "rslave": libc.MS_SLAVE | libc.MS_REC,
    "shared": libc.MS_SHARED,
    "rshared": libc.MS_SHARED | libc.MS_REC,
    "unbindable": 1 << 17,  # MS_UNBINDABLE
    "runbindable": 1 << 17 | libc.MS_REC,
}


def split_options(options: Iterable[str]) -> tuple[int, int, str]:
    """Option names -> (mount flags, propagation flags, data for the file system)."""
    flags, propagation, data = 0, 0, []
    for option in options:
        if option in FLAGS:
            bit, on = FLAGS[option]
            flags = flags | bit if on else flags & ~bit
        elif option in PROPAGATION:
            propagation = PROPAGATION[option]
        elif option:
            data.append(option)
    return flags, propagation, ",".join(data)
