"""A test double of an exec driver: runs the "container" as a plain host process.

This is NOT an isolation driver. :class:`HostProcessDriver` forks and execs
the command's process directly on the host: no namespaces, no cgroups, no
rootfs, no user switch, the host's file system and PIDs. It exists so that
the shim (:mod:`engine.shim`) can be tested with real processes without the
kernel features the native driver needs, and it is deliberately not
registered as an ``engine.execdrivers`` entry point: the daemon can never
pick it. Tests name it in ``shim.json`` as
``{"module": "engine.testing.hostexec", "class": "HostProcessDriver"}``.

What it does do like a real driver: the process gets the given stdio (on a
pty it becomes the session leader with the pty as its controlling terminal),
working directory and environment (``PATH`` from that environment decides
the lookup); signal dispositions and the signal mask are reset to the
defaults (the shim ignores SIGPIPE and SIGHUP, and ignored signals survive
``exec``); an exec failure is reported through a close-on-exec pipe and
raised as :class:`~engine.drivers.exec.ExecStartError` with Docker's message
(``exec: "x": executable file not found in $PATH``). The process is the
leader of its own process group, and the "container" is that group:
:meth:`~HostProcessDriver.terminate` and pause/unpause signal the group.

Methods called from another process than the one in ``start()`` (the
shim's ``wait``, the daemon's ``kill``) find the PID in
``<container_dir>/state.json``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import signal
import socket
import termios
from collections.abc import Callable
from typing import Any, NoReturn

from engine.drivers.exec import Command, ExecDriver, ExecStartError, Pipes, ProcessConfig, Resources
from engine.errors import NotFound
from engine.sys.proc import default_signals

LOG = logging.getLogger(__name__)

#: Docker's default PATH, used when the process's environment has none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def exec_error_message(name: str, err: int) -> str:
    """Docker's message for ``exec`` of ``name`` failing with ``err`` (clients derive 126/127 from it)."""
    if err in (errno.ENOENT, errno.ENOTDIR):
        if "/" in name:
            return f'exec: "{name}": stat {name}: no such file or directory'
        return f'exec: "{name}": executable file not found in $PATH'
    if err == errno.EACCES:
        return f'exec: "{name}": permission denied'
    return f'exec: "{name}": {os.strerror(err).lower()}'


def _exit_code(status: int) -> int:
    """A wait status as a shell would report it: the code, or 128 + the signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _child(process: ProcessConfig, pipes: Pipes, report_fd: int) -> NoReturn:
    """In the forked child: set up and exec ``process``; never returns."""
    try:
        default_signals()
        os.setsid()
        # Move every source above 2 first, so that dup2 onto 0..2 cannot
        # clobber a source that happens to be 0..2 itself.
        stdio = (pipes.stdin, pipes.stdout, pipes.stderr)
        if process.tty and pipes.console is not None:
            # As a real driver would: make the pty here, send the master back.
            master, slave = os.openpty()
            socket.send_fds(socket.socket(fileno=pipes.console), [b"M"], [master])
            os.close(master)
            stdio = (slave, slave, slave)
        sources = []
        for fd in stdio:
            if fd is None:
                fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            sources.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3))
        for target, fd in enumerate(sources):
            os.dup2(fd, target)  # the copy on 0..2 is inheritable, the source closes at exec
        if process.tty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        env = {}
        for item in process.env:
            key, _, value = item.partition("=")
            env[key] = value
        env.setdefault("PATH", DEFAULT_PATH)
        cwd = process.cwd or "/"
        try:
            os.chdir(cwd)
        except OSError as exc:
            message = f'chdir to cwd ("{cwd}") set in config.json failed: {os.strerror(exc.errno or 0).lower()}'
            os.write(report_fd, message.encode())
            os._exit(127)
        name = process.args[0]
        try:
            os.execvpe(name, process.args, env)
        except OSError as exc:
            os.write(report_fd, exec_error_message(name, exc.errno or errno.ENOENT).encode())
    except BaseException as exc:  # noqa: BLE001 - whatever happens, report it and never return
        try:
            os.write(report_fd, f"cannot start the process: {exc.__class__.__name__}: {exc}".encode())
        except BaseException:  # noqa: BLE001
            pass
    os._exit(127)


class HostProcessDriver(ExecDriver):
    """Runs the command's process directly on the host, without isolation (a test double)."""

    name = "hostexec"

    def __init__(self, home: str = "", options: Any = None) -> None:
        super().__init__(home, options)
        #: container id -> PID of the first process, from ``start()`` until ``wait()`` returns.
        self._running: dict[str, int] = {}
        #: container id -> its process group (kept until :meth:`terminate`).
        self._groups: dict[str, int] = {}

    # ------------------------------------------------------------------

    def _spawn(self, process: ProcessConfig, pipes: Pipes) -> int:
        """Fork and exec ``process``; its PID once the exec succeeded.

        :raises ExecStartError: with Docker's message if the exec failed.
        """
        if not process.args:
            raise ExecStartError("no command specified")
        read_fd, write_fd = os.pipe()  # both close-on-exec: EOF means the exec worked
        try:
            pid = os.fork()
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:
            os.close(read_fd)
            _child(process, pipes, write_fd)
        os.close(write_fd)
        try:
            report = bytearray()
            while chunk := os.read(read_fd, 4096):
                report += chunk
        finally:
            os.close(read_fd)
        if report:
            os.waitpid(pid, 0)
            raise ExecStartError(report.decode(errors="replace"))
        return pid

    def _wait(self, pid: int, start_callback: Callable[[int], Any] | None) -> int:
        try:
            if start_callback is not None:
                start_callback(pid)
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        _, status = os.waitpid(pid, 0)
        return _exit_code(status)

    def _pid(self, command: Command) -> int | None:
        """The first process's PID: ours while running, else the shim's ``state.json``."""
        pid = self._running.get(command.id)
        if pid is not None:
            return pid
        if not command.container_dir:
            return None
        try:
            with open(os.path.join(command.container_dir, "state.json"), "rb") as f:
                return int(json.load(f)["Pid"])
        except (OSError, ValueError, KeyError):
            return None

    def _group(self, command: Command) -> int | None:
        return self._groups.get(command.id) or self._pid(command)

    def _signal_group(self, command: Command, signum: int) -> None:
        pgid = self._group(command)
        if pgid is None:
            return
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            pass

    # ------------------------------------------------------------------
    # the contract

    def start(self, command: Command, pipes: Pipes) -> int:
        """Start the process; its PID once it exec'd (recorded for :meth:`wait` in this process;
        a shim's :meth:`wait`, in another one, finds it in ``state.json``)."""
        pid = self._spawn(command.process, pipes)
        self._running[command.id] = pid
        self._groups[command.id] = pid  # setsid made it a group leader
        return pid

    def wait(self, command: Command) -> int:
        """Wait for the first process; its exit code (128 + signal)."""
        pid = self._pid(command)
        if pid is None:
            raise NotFound(f"container {command.id} was not started")
        try:
            return self._wait(pid, None)
        finally:
            self._running.pop(command.id, None)

    def kill(self, command: Command, signal: int) -> None:  # noqa: A002 - the contract's name
        """Send ``signal`` to the first process (nothing if it is gone)."""
        pid = self._pid(command)
        if pid is None:
            return
        try:
            os.kill(pid, signal)
        except ProcessLookupError:
            pass

    def pause(self, command: Command) -> None:
        """SIGSTOP the process group."""
        self._signal_group(command, signal.SIGSTOP)

    def unpause(self, command: Command) -> None:
        """SIGCONT the process group."""
        self._signal_group(command, signal.SIGCONT)

    def terminate(self, command: Command) -> None:
        """SIGKILL whatever is left of the process group."""
        self._signal_group(command, signal.SIGKILL)
        self._groups.pop(command.id, None)

    def exec(
        self, command: Command, process: ProcessConfig, pipes: Pipes, start_callback: Callable[[int], Any] | None = None
    ) -> int:
        """Run another host process (its own session, not in the group); return its exit code."""
        return self._wait(self._spawn(process, pipes), start_callback)

    def get_pids(self, command: Command) -> list[int]:
        """The PIDs of the process group."""
        pgid = self._group(command)
        if pgid is None:
            return []
        pids = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            if int(fields[2]) == pgid and fields[0] != b"Z":
                pids.append(int(name))
        return sorted(pids)

    def stats(self, command: Command) -> dict[str, Any]:
        """No cgroups, no numbers."""
        return {}

    def update(self, command: Command, resources: Resources) -> None:
        """No limits to change."""

    def oom_killed(self, command: Command) -> bool:
        """Never: there is no memory cgroup."""
        return False
