"""Which sysctls a container may set: only those its own namespaces hold (runc's rules and words).

/proc/sys is only partly namespaced: a write to ``kernel.core_pattern``
from a container changes the host's kernel. runc (``libcontainer/configs/
validate``) allows

* the System V IPC and POSIX message queue ones (``kernel.msgmax``,
  ``kernel.msgmnb``, ``kernel.msgmni``, ``kernel.sem``, ``kernel.shmall``,
  ``kernel.shmmax``, ``kernel.shmmni``, ``kernel.shm_rmid_forced``,
  ``fs.mqueue.*``) when the container has its own IPC namespace;
* ``net.*`` when it has its own network namespace;
* ``kernel.domainname`` with its own UTS namespace (``kernel.hostname``
  conflicts with the host name the container is given);

and refuses everything else. dockerd 20.10 lets runc refuse at start (a
500); the engine refuses at create with the same words (a 400) and the
exec driver checks again at start, when the namespaces are known for sure.

Keys come as ``kernel.shm_rmid_forced`` or, as runc also accepts,
``kernel/shm_rmid_forced`` (where a dot can be part of an interface name:
``net/ipv4/conf/eth0.100/rp_filter``).
"""

from __future__ import annotations

from engine.errors import InvalidParameter

__all__ = ["IPC_SYSCTLS", "check", "dotted", "proc_path"]

#: The System V IPC sysctls of an IPC namespace (ipc_namespaces(7)); ``fs.mqueue.*`` too.
IPC_SYSCTLS = frozenset(
    {
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    }
)


def dotted(key: str) -> str:
    """The key with dots between its parts: a key whose first separator is ``/`` has
    its dots and slashes swapped (runc's ``convertSysctlVariableToDotsSeparator``)."""
    for char in key:
        if char == ".":
            return key
        if char == "/":
            return key.translate(str.maketrans("./", "/."))
    return key


def proc_path(key: str) -> str:
    """The file of ``key`` under /proc/sys, with no way out of it.

    :raises InvalidParameter: an empty part, ``.`` or ``..``.
    """
    # In the dotted form a "/" stands for a dot inside a part (an interface name).
    parts = [p.replace("/", ".") for p in dotted(key).split(".")]
    if any(p in ("", ".", "..") or "\0" in p for p in parts):
        raise InvalidParameter(f"invalid sysctl {key!r}: want names like net.ipv4.ip_forward")
    return "/proc/sys/" + "/".join(parts)


def check(key: str, *, private_ipc: bool, private_net: bool, private_uts: bool = True) -> None:
    """Refuse ``key`` unless the container's own namespaces hold it.

    :param private_ipc: the container has an IPC namespace other than the host's
        (its own, or another container's).
    :param private_net: likewise for the network namespace.
    :raises InvalidParameter: with runc's message, e.g.
        ``sysctl "kernel.core_pattern" is not in a separate kernel namespace``.
    """
    proc_path(key)
    name = dotted(key)
    if name in IPC_SYSCTLS or name.startswith("fs.mqueue."):
        if not private_ipc:
            raise InvalidParameter(f'sysctl "{name}" is not allowed in the hosts ipc namespace')
        return
    if name.startswith("net."):
        if not private_net:
            raise InvalidParameter(f'sysctl "{name}" not allowed in host network namespace')
        return
    if private_uts and name == "kernel.domainname":
        return
    if private_uts and name == "kernel.hostname":
        raise InvalidParameter(f'sysctl "{name}" is not allowed as it conflicts with the OCI "hostname" field')
    if name.startswith("user."):
        # ucounts of the initial user namespace: the engine makes no user namespaces.
        raise InvalidParameter(f"setting ucounts without a user namespace not allowed: {name}")
    raise InvalidParameter(f'sysctl "{name}" is not in a separate kernel namespace')
