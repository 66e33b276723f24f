"""The monitor: one thread that learns when a container exits, and when its shim is gone.

A shim records its container's exit (``exit.json``, renamed into place)
before it releases the container's cgroups and ends. The monitor watches
each running container's directory with inotify(7) and hands the exit on
as soon as that rename happens, while the shim finishes beside it; the
exit record names the shim (``ShimPid``), so a record left by an earlier
run is never taken for this one's.

It also holds a pidfd (pidfd_open(2)) for each shim, all polled in the
same thread; a pidfd becomes readable when its process exits. That tells
when the shim is gone (:meth:`Monitor.wait_gone`): the life cycle releases
the container's rootfs and network beside the shim's end, and then waits
for it before it shows the container stopped or removed, so the cgroups
are gone by then, as with containerd's shim; the next start of the
container waits for it too. A shim that died without recording an exit (killed, or from a
daemon that did not watch its directory) is seen through its pidfd alone.

Each exit is handed to ``on_exit`` once, in a thread of its own, so one
slow exit (a restart, an auto-remove) never delays another.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.daemon.container import Container
from engine.shim import client as shim
from engine.shim import protocol as shim_protocol
from engine.sys import libc

LOG = logging.getLogger(__name__)

#: What the inotify watch of a container's directory reports: a file renamed into it.
_WATCH_MASK = libc.IN_MOVED_TO | libc.IN_ONLYDIR


@dataclass(eq=False)
class _Shim:
    """One watched shim."""

    c: Container | None  # None: only its end is awaited (see :meth:`Monitor.track_end`)
    pid: int
    pidfd: int
    wd: int = -1  # the inotify watch of the container's directory, -1 for none
    reported: bool = False  # its container's exit was handed to on_exit
    gone: threading.Event = field(default_factory=threading.Event)


class Monitor:
    """Watches the shims of running containers.

    :param on_exit: called with the container whose exit was recorded, or
        whose shim died (in a new thread, once per run).
    """

    def __init__(self, on_exit: Callable[[Container], None]) -> None:
        self.on_exit = on_exit
        self._lock = threading.Lock()
        self._by_pidfd: dict[int, _Shim] = {}
        self._by_wd: dict[int, _Shim] = {}
        #: The last shim watched for each container ID, until it is gone.
        self._last: dict[str, _Shim] = {}
        # epoll, not select: a thousand pidfds go past select's FD_SETSIZE (1024).
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        try:
            self._inotify = libc.inotify_init()
        except OSError as exc:  # out of instances: the pidfds alone still tell
            LOG.warning("no inotify instance (%s): exits are seen when the shims end", exc)
            self._inotify = -1
        else:
            self._epoll.register(self._inotify, select.EPOLLIN)
        self._thread = threading.Thread(target=self._run, name="container-monitor", daemon=True)
        self._stopping = False
        self._thread.start()

    def watch(self, c: Container, shim_pid: int) -> None:
        """Report the exit of ``c``, whose shim is ``shim_pid``: when the shim records it, or when
        the shim ends (at once if it is gone already).

        Once stopped, it watches nothing: the next daemon's restore finds the container.
        """
        if self._stopping:
            return
        try:
            fd = os.pidfd_open(shim_pid)
        except ProcessLookupError:
            threading.Thread(target=self._exited, args=(c,), daemon=True).start()
            return
        self._add(c.id, _Shim(c, shim_pid, fd))

    def track_end(self, cid: str, shim_pid: int) -> None:
        """Know when ``shim_pid``, a shim of ``cid`` whose exit is handled already (a daemon
        before this one saw it), is gone: for :meth:`wait_gone`."""
        if self._stopping:
            return
        try:
            fd = os.pidfd_open(shim_pid)
        except ProcessLookupError:
            return
        self._add(cid, _Shim(None, shim_pid, fd, reported=True))

    def _add(self, cid: str, entry: _Shim) -> None:
        """Poll ``entry``'s pidfd, and watch its container's directory when it has one (the
        descriptor is closed instead once the monitor stops: the next daemon restores)."""
        with self._lock:
            if self._stopping:
                os.close(entry.pidfd)
                return
            if entry.c is not None and self._inotify >= 0:
                try:
                    entry.wd = libc.inotify_add_watch(self._inotify, entry.c.root, _WATCH_MASK)
                except OSError as exc:  # out of watches (fs.inotify.max_user_watches): the pidfd tells
                    LOG.debug("no inotify watch for %s: %s", entry.c.short_id, exc)
                else:
                    self._by_wd[entry.wd] = entry
            self._by_pidfd[entry.pidfd] = entry
            self._last[cid] = entry
            self._epoll.register(entry.pidfd, select.EPOLLIN)
        if entry.wd >= 0:
            # Recorded before the watch began: the pidfd would tell too, but only at the end.
            self._check_record(entry)

    def wait_gone(self, cid: str, timeout: float | None = None) -> bool:
        """Wait until the last shim watched for container ``cid`` has ended; whether it has
        (True at once when none is known)."""
        with self._lock:
            entry = self._last.get(cid)
        return entry is None or entry.gone.wait(timeout)

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
                elif fd == self._inotify:
                    self._read_inotify()
                else:
                    self._ended(fd)

    def _read_inotify(self) -> None:
        try:
            data = os.read(self._inotify, 64 * 1024)
        except BlockingIOError:
            return
        for wd, mask, name in libc.inotify_events(data):
            if mask & libc.IN_Q_OVERFLOW:
                LOG.warning("the inotify queue overflowed: exits it lost are seen when the shims end")
            elif name == shim_protocol.EXIT_FILE:
                with self._lock:
                    entry = self._by_wd.get(wd)
                if entry is not None:
                    self._check_record(entry)

    def _check_record(self, entry: _Shim) -> None:
        """Hand the exit on if the container's ``exit.json`` is this shim's."""
        assert entry.c is not None
        record = shim.read_exit(entry.c.root)
        if not record or record.get("ShimPid") != entry.pid:
            return  # not yet, or a record of an earlier run
        with self._lock:
            if entry.reported:
                return
            entry.reported = True
        self._dispatch(entry.c)

    def _ended(self, fd: int) -> None:
        """A shim ended: its exit, if no record told it; its directory is no longer watched."""
        with self._lock:
            entry = self._by_pidfd.pop(fd, None)
            if entry is None:
                return
            self._epoll.unregister(fd)
            if entry.wd >= 0 and self._by_wd.get(entry.wd) is entry:
                # (Not when a later watch of the same directory took the descriptor over.)
                del self._by_wd[entry.wd]
                self._unwatch(entry.wd)
            report = not entry.reported
            entry.reported = True
            if entry.c is not None and self._last.get(entry.c.id) is entry:
                del self._last[entry.c.id]
        os.close(fd)
        entry.gone.set()
        if report and entry.c is not None:
            self._dispatch(entry.c)

    def _unwatch(self, wd: int) -> None:
        try:
            libc.inotify_rm_watch(self._inotify, wd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: gone with its directory already
                LOG.warning("removing an inotify watch: %s", exc)

    def _dispatch(self, c: Container) -> None:
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
        Whoever waits for a shim's end is released.
        """
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        os.write(self._wake_w, b"q")
        if threading.current_thread() is not self._thread:
            self._thread.join()
        with self._lock:
            for fd, entry in self._by_pidfd.items():
                os.close(fd)
                entry.gone.set()
            self._by_pidfd.clear()
            self._by_wd.clear()
            self._last.clear()
            self._epoll.close()
            if self._inotify >= 0:
                os.close(self._inotify)
            os.close(self._wake_r)
            os.close(self._wake_w)
