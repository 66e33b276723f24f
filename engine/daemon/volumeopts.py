"""The ``local`` volume driver's options: a volume that mounts something (moby ``volume/local``).

``docker volume create --opt type=tmpfs --opt device=tmpfs --opt o=size=64m``
makes a volume whose data directory gets ``device`` mounted on it, with
``type`` and the mount options ``o`` (mount(8)'s words: flags such as
``ro``, ``nosuid`` or ``bind`` become mount flags, the rest is the file
system's data, ``size=64m,uid=1000``), the first time a container that uses
it starts; the last one to stop unmounts it. ``type=none,o=bind`` with a host
directory as ``device`` binds that directory; ``type=nfs`` with
``o=addr=SERVER`` and ``device=:/export`` mounts an NFS share where the
kernel has the nfs module.

Checks and messages are moby's: only ``type``, ``o``, ``device`` and
``size`` exist; ``device`` and ``type`` need each other, ``o`` needs both;
``size`` (a quota) is refused, as dockerd refuses it on a file system
without project quotas (this engine sets none).
"""

from __future__ import annotations

import errno
import logging
import os
import socket

from engine.errors import HostError, InvalidParameter
from engine.sys import libc, mountopts

LOG = logging.getLogger(__name__)

__all__ = ["mount_volume", "needs_mount", "split_options", "unmount_volume", "validate_options"]

VALID_OPTIONS = ("type", "o", "device", "size")
#: An option and the options it cannot go without (moby's ``mandatoryOpts``).
MANDATORY = {"device": ("type",), "type": ("device",), "o": ("device", "type")}


def validate_options(opts: dict[str, str]) -> None:
    """Refuse options the local driver does not know or cannot honour, in moby's words.

    :raises InvalidParameter: ``invalid option: "x"``, ``missing required option: "type"``,
        or a size quota.
    """
    for key in opts:
        if key not in VALID_OPTIONS:
            raise InvalidParameter(f'invalid option: "{key}"')
    for key, needs in MANDATORY.items():
        if key in opts:
            for need in needs:
                if need not in opts:
                    raise InvalidParameter(f'missing required option: "{need}"')
    if opts.get("size"):
        raise InvalidParameter("quota size requested but no quota support")


def needs_mount(opts: dict[str, str]) -> bool:
    """Whether a volume with ``opts`` mounts something on its data directory."""
    return bool(opts.get("device") or opts.get("type"))


def split_options(options: str) -> tuple[int, str]:
    """``o`` -> (mount flags, file system data), as moby/sys/mount's ``parseOptions``."""
    flags, _propagation, data = mountopts.split_options(o for o in options.split(",") if o)
    return flags, data


def _resolve_address(data: str) -> str:
    """An NFS or CIFS ``addr=`` given as a host name becomes its IPv4 address (the kernel wants one)."""
    parts = data.split(",")
    for i, part in enumerate(parts):
        if part.startswith("addr="):
            host = part[len("addr=") :]
            try:
                socket.inet_aton(host)
            except OSError:
                try:
                    parts[i] = "addr=" + socket.gethostbyname(host)
                except OSError as exc:
                    raise HostError(f"error resolving passed in network volume address: {exc}") from None
    return ",".join(parts)


def mount_volume(path: str, opts: dict[str, str]) -> None:
    """Mount the volume's ``device`` on its data directory ``path``.

    :raises HostError: ``error while mounting volume '...': failed to mount local volume: ...``
        with the kernel's reason, as dockerd words it.
    """
    device, fstype = opts.get("device") or "", opts.get("type") or ""
    if not device:
        raise HostError("failed to mount local volume: missing device in volume options")
    flags, data = split_options(opts.get("o") or "")
    if fstype in ("nfs", "nfs4", "cifs"):
        data = _resolve_address(data)
    try:
        libc.mount(device, path, None if fstype in ("", "none") else fstype, flags, data or None)
    except OSError as exc:
        # moby/sys/mount's words: ENODEV is a file system type the kernel does not know.
        text = f"mount {device}:{path}"
        if flags:
            text += f", flags: {flags:#x}"
        if data:
            text += f", data: {data}"
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise HostError(
            f"error while mounting volume '{path}': failed to mount local volume: {text}: {reason}"
        ) from None


def unmount_volume(path: str) -> None:
    """Unmount what :func:`mount_volume` mounted; one that is gone already is fine."""
    try:
        libc.umount2(path, 0)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            # Something still has it open (a process the container left behind): detach it
            # now, the kernel frees it when the last user goes.
            libc.umount2(path, libc.MNT_DETACH)
        elif exc.errno not in (errno.EINVAL, errno.ENOENT):
            LOG.warning("unmounting the volume at %s: %s", path, exc)
