"""Persistent network namespaces for containers (as libnetwork's sandboxes).

A container's network namespace is made before the container starts and
bound to a file, ``<root>/netns/<id>``, so the network driver can set it up
first and the exec driver only joins it (setns(2)). It is made by a
short-lived thread: unshare(2) with ``CLONE_NEWNET`` changes only the calling
thread's namespace, the thread bind-mounts ``/proc/thread-self/ns/net`` onto
the file, brings ``lo`` up, and goes back to the daemon's namespace.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

from engine.sys import libc

T = TypeVar("T")

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def _loopback_up() -> None:
    """``ip link set lo up`` in the calling thread's namespace (netdevice(7) ioctls)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(sock, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))


def create(path: str) -> None:
    """Make a new network namespace with ``lo`` up, bound to ``path``."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path, "w"):
        pass
    errors: list[BaseException] = []

    def worker() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            libc.unshare(libc.CLONE_NEWNET)
            try:
                libc.mount("/proc/thread-self/ns/net", path, None, libc.MS_BIND)
                _loopback_up()
            finally:
                libc.setns(home, libc.CLONE_NEWNET)
        except BaseException as exc:  # reported to the caller
            errors.append(exc)
        finally:
            os.close(home)

    thread = threading.Thread(target=worker, name="netns-create")
    thread.start()
    thread.join()
    if errors:
        remove(path)
        raise errors[0]


def remove(path: str) -> None:
    """Unbind and delete a namespace file (the namespace dies with its last user)."""
    try:
        libc.umount2(path, libc.MNT_DETACH)
    except OSError:
        pass
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def inode(path: str) -> int:
    """The namespace's inode, to tell namespaces apart."""
    return os.stat(path).st_ino


def in_namespace(path: str, func: Callable[[], T]) -> T:
    """Run ``func`` in a short-lived thread that has entered the network namespace bound at ``path``.

    What ``func`` makes there stays there: a socket keeps the namespace it
    was created in (socket(7)), wherever it is used from afterwards.
    """
    result: list[T] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            errors.append(exc)
            return
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                libc.setns(target, libc.CLONE_NEWNET)
                try:
                    result.append(func())
                finally:
                    libc.setns(home, libc.CLONE_NEWNET)
            finally:
                os.close(target)
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)
        finally:
            os.close(home)

    thread = threading.Thread(target=worker, name="netns-enter")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]
