"""The ``--ipc`` and ``--pid`` modes: a container's own namespaces, the host's, or another
container's (moby ``daemon/container_operations_unix.go``).

IPC, as Docker 20.10 does it:

* ``private`` (the default) and ``none``: an IPC namespace of its own; ``private``
  gets a ``/dev/shm`` tmpfs of its own from the exec driver, ``none`` none at all;
* ``shareable``: its own namespace, and a ``/dev/shm`` the daemon mounts
  (``<container dir>/mounts/shm``, a tmpfs of ``ShmSize``) and binds in, so that
  others can share it; unmounted when the container stops (:class:`SharedMemory`);
* ``container:<id>``: the donor's namespace (``/proc/PID/ns/ipc``) and its
  ``/dev/shm``; the donor must run and be ``shareable`` (or use the host's);
* ``host``: the host's namespace and ``/dev/shm``.

PID: ``host``, ``container:<id>`` (the donor's namespace; it must run), else a
namespace of its own. Names in ``container:`` modes are resolved to IDs at
create (a missing container is a 400 then), as dockerd stores them; a
donor that does not run, or is not shareable, fails the start in dockerd's
words.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import TYPE_CHECKING, Any

from engine.errors import HostError, InvalidParameter, NotFound
from engine.sys import libc
from engine.sys.fs import mounts_below

if TYPE_CHECKING:
    from engine.daemon.container import Container
    from engine.daemon.store import ContainerStore

LOG = logging.getLogger(__name__)

__all__ = ["IPC_MODES", "SharedMemory", "join_options", "resolve_container_modes"]

IPC_MODES = ("", "private", "shareable", "none", "host")
DEFAULT_SHM_SIZE = 64 * 1024 * 1024


def _joined(mode: str) -> str:
    return mode.split(":", 1)[1] if mode.startswith("container:") else ""


def resolve_container_modes(host_config: dict, store: ContainerStore) -> None:
    """At create: ``--ipc``/``--pid container:NAME`` -> ``container:<full ID>``, in place.

    :raises InvalidParameter: ``No such container: NAME`` (dockerd answers 400 at create).
    """
    for key in ("IpcMode", "PidMode"):
        name = _joined(host_config.get(key) or "")
        if name:
            try:
                host_config[key] = "container:" + store.get(name).id
            except NotFound:
                raise InvalidParameter(f"No such container: {name}") from None


class SharedMemory:
    """The ``/dev/shm`` tmpfs of shareable containers, mounted by the daemon on the host."""

    @staticmethod
    def path(c: Container) -> str:
        return c.path_of(os.path.join("mounts", "shm"))

    def mounted(self, c: Container) -> bool:
        return self.path(c) in mounts_below(self.path(c))

    def prepare(self, c: Container) -> str:
        """Mount ``c``'s shareable ``/dev/shm`` (if a previous run left none); its path.

        :raises HostError: the tmpfs cannot be mounted.
        """
        path = self.path(c)
        os.makedirs(path, 0o700, exist_ok=True)
        if not self.mounted(c):
            size = int(c.host_config.get("ShmSize") or DEFAULT_SHM_SIZE)
            try:
                libc.mount(
                    "shm",
                    path,
                    "tmpfs",
                    libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC,
                    f"mode=1777,size={size}",
                )
            except OSError as exc:
                raise HostError(f"mounting shm tmpfs: {os.strerror(exc.errno or 0).lower()}") from None
        return path

    def release(self, c: Container) -> None:
        """Unmount ``c``'s shareable ``/dev/shm`` (it stopped); the containers that joined it
        keep their own mount of it."""
        path = self.path(c)
        while self.mounted(c):
            try:
                libc.umount2(path, libc.MNT_DETACH)
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOENT):
                    break
                LOG.warning("unmounting the shm of %s: %s", c.short_id, exc)
                return

    def on_event(self, c: Container, action: str) -> None:
        """The life cycle's events: a stopped shareable container's ``/dev/shm`` goes."""
        if action == "die" and (c.host_config.get("IpcMode") or "") == "shareable":
            self.release(c)


def _running_donor(store: ContainerStore, ident: str, prefix: str) -> Container:
    donor = store.get(ident)
    with donor.lock:
        if not donor.state.running or donor.state.restarting:
            raise HostError(f"{prefix.format(id=donor.id)}container {donor.id} is not running")
    return donor


def join_options(c: Container, store: ContainerStore, shm: SharedMemory) -> dict[str, Any]:
    """What :func:`engine.daemon.hostconfig.build_command` takes for ``c``'s IPC and PID modes:
    ``ipc_namespace`` and ``pid_namespace`` (a donor's ``/proc/PID/ns/...``) and ``shm_path``
    (a host directory to bind at ``/dev/shm``).

    :raises HostError: an unknown IPC mode, a donor that does not run or does not share its
        IPC (dockerd's 500 and words).
    """
    hc = c.host_config
    out = {"ipc_namespace": "", "pid_namespace": "", "shm_path": ""}
    ipc = hc.get("IpcMode") or ""
    donor_id = _joined(ipc)
    if donor_id:
        donor = _running_donor(store, donor_id, "can't join IPC of container {id}: ")
        donor_ipc = donor.host_config.get("IpcMode") or ""
        if donor_ipc == "host":
            out["shm_path"] = "/dev/shm"
        elif donor_ipc == "shareable" and shm.mounted(donor):
            out["shm_path"] = shm.path(donor)
        else:
            raise HostError(
                f"can't join IPC of container {donor.id}: non-shareable IPC "
                "(hint: use IpcMode:shareable for the donor container)"
            )
        out["ipc_namespace"] = f"/proc/{donor.state.pid}/ns/ipc"
    elif ipc == "shareable":
        out["shm_path"] = shm.prepare(c)
    elif ipc not in IPC_MODES:
        raise HostError(f"Invalid IPC mode: {ipc}")
    pid_donor = _joined(hc.get("PidMode") or "")
    if pid_donor:
        donor = _running_donor(store, pid_donor, "")
        out["pid_namespace"] = f"/proc/{donor.state.pid}/ns/pid"
    return out
