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
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from engine.sys import libc

T = TypeVar("T")

LOG = logging.getLogger(__name__)

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
    made: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            made.append(_make_held())
        except BaseException as exc:  # reported to the caller
            errors.append(exc)

    thread = threading.Thread(target=worker, name="netns-create")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    try:
        _bind_held(made[0], path)
    finally:
        os.close(made[0])


def _make_held() -> int:
    """A new network namespace with ``lo`` up, held by the descriptor returned (made in the
    calling thread, which goes back to its own namespace)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.unshare(libc.CLONE_NEWNET)
        try:
            _loopback_up()
            return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            libc.setns(home, libc.CLONE_NEWNET)
    finally:
        os.close(home)


def _bind_held(fd: int, path: str) -> None:
    """Bind the namespace ``fd`` holds to ``path`` (a new file)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path, "w"):
        pass
    try:
        libc.mount(f"/proc/self/fd/{fd}", path, None, libc.MS_BIND)
    except BaseException:
        remove(path)
        raise


class Spares:
    """Network namespaces made ahead, so that a container's start binds one instead of making it.

    Making a network namespace is unshare(2) in a thread of its own: about a
    millisecond of a start. Each spare is a namespace with ``lo`` up, held by
    a descriptor; :meth:`create` binds one to the container's file (as
    :func:`create` would make it) and a thread of the pool makes the next one
    ``delay`` seconds later, after the start that took it. A namespace that
    was never bound dies when its descriptor is closed (:meth:`close`).

    :param count: how many to keep ready.
    :param delay: seconds from taking a spare to making the next.
    """

    def __init__(self, count: int = 1, delay: float = 0.005) -> None:
        self.count = count
        self.delay = delay
        self._cond = threading.Condition()
        self._ready: list[int] = []
        self._due = 0.0  # when the next one is to be made (monotonic), 0 when none is wanted
        self._thread: threading.Thread | None = None
        self._closed = False

    def create(self, path: str) -> None:
        """Bind a new network namespace with ``lo`` up to ``path``: a spare when one is ready."""
        with self._cond:
            fd = self._ready.pop() if self._ready else -1
            if not self._closed:
                self._due = self._due or time.monotonic() + self.delay
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="netns-spares", daemon=True)
                    self._thread.start()
                self._cond.notify_all()
        if fd < 0:
            create(path)
            return
        try:
            _bind_held(fd, path)
        finally:
            os.close(fd)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or bool(self._due))
                if self._closed:
                    return
                pause = self._due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                fd = _make_held()
            except OSError as exc:  # a start makes its own namespace then, and says what fails
                LOG.warning("cannot make a spare network namespace: %s", exc)
                with self._cond:
                    self._due = 0.0
                continue
            with self._cond:
                if self._closed:
                    os.close(fd)
                    return
                self._ready.append(fd)
                self._due = 0.0 if len(self._ready) >= self.count else time.monotonic()

    def close(self) -> None:
        """Stop making spares and let go of those made (their namespaces die)."""
        with self._cond:
            self._closed = True
            ready, self._ready = self._ready, []
            self._cond.notify_all()
            thread = self._thread
        for fd in ready:
            os.close(fd)
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)


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
