"""The monitor: one thread that learns when a container's shim exits.

The daemon holds a pidfd (pidfd_open(2)) for each running container's shim
and polls them all in one thread; a pidfd becomes readable when its process
exits. The exit is handed to ``on_exit`` in a thread of its own, so one slow
exit (a restart, an auto-remove) never delays another.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable

from engine.daemon.container import Container

LOG = logging.getLogger(__name__)


class Monitor:
    """Watches the shims of running containers.

    :param on_exit: called with the container whose shim exited (in a new thread).
    """

    def __init__(self, on_exit: Callable[[Container], None]) -> None:
        self.on_exit = on_exit
        self._lock = threading.Lock()
        self._watched: dict[int, Container] = {}  # pidfd -> container
        # epoll, not select: a thousand pidfds go past select's FD_SETSIZE (1024).
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._thread = threading.Thread(target=self._run, name="container-monitor", daemon=True)
        self._stopping = False
        self._thread.start()

    def watch(self, c: Container, shim_pid: int) -> None:
        """Report the exit of ``shim_pid`` as the exit of ``c`` (at once if it is gone already).

        Once stopped, it watches nothing: the next daemon's restore finds the container.
        """
        if self._stopping:
            return
        try:
            fd = os.pidfd_open(shim_pid)
        except ProcessLookupError:
            threading.Thread(target=self._exited, args=(c,), daemon=True).start()
            return
        with self._lock:
            if self._stopping:  # the daemon shuts down: the next one restores this container
                os.close(fd)
                return
            self._watched[fd] = c
            self._epoll.register(fd, select.EPOLLIN)

    def _run(self) -> None:
        while not self._stopping:
            try:
                events = self._epoll.poll(5.0)
            except OSError:
                time.sleep(0.1)
                continue
            if self._stopping:
                break  # an exit seen together with stop() is the next daemon's to restore
            for fd, _mask in events:
                if fd == self._wake_r:
                    os.read(self._wake_r, 4096)
                    continue
                with self._lock:
                    c = self._watched.pop(fd, None)
                    if c is not None:
                        self._epoll.unregister(fd)
                if c is None:
                    continue
                os.close(fd)
                threading.Thread(target=self._exited, args=(c,), name=f"exit-{c.short_id}", daemon=True).start()

    def _exited(self, c: Container) -> None:
        try:
            self.on_exit(c)
        except Exception:
            LOG.exception("handling the exit of %s failed", c.short_id)

    def stop(self) -> None:
        """Stop watching (the daemon shuts down; the shims run on).

        Returns once the thread has stopped, so no exit is handled after it: a
        shim that exits from here on is left for the next daemon's restore.
        """
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        os.write(self._wake_w, b"q")
        if threading.current_thread() is not self._thread:
            self._thread.join()
        with self._lock:
            for fd in self._watched:
                os.close(fd)
            self._watched.clear()
            self._epoll.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
