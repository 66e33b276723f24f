"""``docker exec``: processes started in running containers (moby ``daemon/exec.go``).

An exec is created (its config is stored), then started: the exec driver
runs the process in the container's namespaces while the request thread
pumps its stdio to the hijacked connection. The exit code is recorded before
the connection is closed, because clients ask ``GET /exec/{id}/json`` for it
the moment their stream ends (COMPAT §0 item 12).
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import socket
import struct
import termios
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.daemon import attach, changes
from engine.daemon.container import Container
from engine.daemon.daemon import require
from engine.drivers.exec import Pipes, ProcessConfig
from engine.errors import Conflict, EngineError, HostError, InvalidParameter, NotFound
from engine.utils import sockets

if TYPE_CHECKING:
    from engine.daemon.daemon import Daemon

LOG = logging.getLogger(__name__)

#: How long a resize waits for the exec's process to start (dockerd's 10 s).
RESIZE_WAIT = 10.0


@dataclass
class Exec:
    id: str
    container_id: str
    process: ProcessConfig
    open_stdin: bool
    open_stdout: bool
    open_stderr: bool
    detach_keys: str = ""
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    started: bool = False
    created: float = field(default_factory=time.time)
    pty_master: int | None = None
    #: Set once the start went as far as it could: the process runs, or it failed.
    ready: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def to_api(self) -> dict:
        return {
            "ID": self.id,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {
                "tty": self.process.tty,
                "entrypoint": self.process.args[0] if self.process.args else "",
                "arguments": self.process.args[1:],
                "privileged": self.process.privileged,
                "user": self.process.user,
            },
            "OpenStdin": self.open_stdin,
            "OpenStderr": self.open_stderr,
            "OpenStdout": self.open_stdout,
            "CanRemove": False,
            "ContainerID": self.container_id,
            "DetachKeys": self.detach_keys,
            "Pid": self.pid,
        }


class ExecService:
    """Exec configs of the daemon's containers.

    :param daemon: the daemon (its containers, exec driver, life cycle and events).
    """

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._execs: dict[str, Exec] = {}
        self._lock = threading.Lock()

    def get(self, exec_id: str) -> Exec:
        e = self._execs.get(exec_id)
        if e is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return e

    def create(self, c: Container, body: dict) -> Exec:
        require(self.daemon.lifecycle, "life cycle").settle(c)  # a start in flight decides whether it runs
        with c.lock:
            if not c.state.running:
                raise Conflict(f"Container {c.id} is not running")
            if c.state.paused:
                raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
            if c.state.restarting:
                raise Conflict(f"Container {c.id} is restarting, wait until the container is running")
        cmd = body.get("Cmd") or []
        if isinstance(cmd, str):
            cmd = [cmd]
        if not cmd:
            raise InvalidParameter("No exec command specified")
        env = list(c.config.get("Env") or [])
        for item in body.get("Env") or []:
            key = item.split("=", 1)[0]
            env = [e for e in env if e.split("=", 1)[0] != key] + [item]
        if not any(e.startswith("PATH=") for e in env):
            env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        tty = bool(body.get("Tty"))
        if tty and not any(e.startswith("TERM=") for e in env):
            env.append("TERM=xterm")
        hc = c.host_config
        process = ProcessConfig(
            args=list(cmd),
            env=env,
            cwd=body.get("WorkingDir") or c.config.get("WorkingDir") or "/",
            user=body.get("User") or c.config.get("User") or "",
            additional_groups=list(hc.get("GroupAdd") or []),
            tty=tty,
            console_size=tuple(body["ConsoleSize"]) if body.get("ConsoleSize") else None,
            privileged=bool(body.get("Privileged") or hc.get("Privileged")),
            cap_add=list(hc.get("CapAdd") or []),
            cap_drop=list(hc.get("CapDrop") or []),
            no_new_privileges=require(self.daemon.security, "security policy").no_new_privileges(hc),
        )
        e = Exec(
            id=secrets.token_hex(32),
            container_id=c.id,
            process=process,
            open_stdin=bool(body.get("AttachStdin")),
            open_stdout=bool(body.get("AttachStdout")),
            open_stderr=bool(body.get("AttachStderr")),
            detach_keys=body.get("DetachKeys") or "",
        )
        with self._lock:
            self._execs[e.id] = e
        with c.lock:
            c.exec_ids.append(e.id)
        changes.container_changed(c.id)
        self.daemon.container_event(c, f"exec_create: {' '.join(cmd)}", {"execID": e.id})
        return e

    @staticmethod
    def _check_startable(e: Exec, c: Container) -> None:
        with c.lock:
            if e.started:
                raise Conflict(f"Error: Exec command {e.id} has already run")
            if not c.state.running:
                raise Conflict(f"Container {c.id} is not running")
            if c.state.paused:
                raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
            e.started = True

    def start(
        self,
        e: Exec,
        sock: Any | None,
        multiplexed: bool = False,
        console_size: tuple[int, int] | None = None,
    ) -> None:
        """Run the exec; with ``sock`` stream its stdio there, else detach.

        Until its process runs, the exec holds the container's operation slot
        (:meth:`~engine.daemon.lifecycle.LifeCycle.launching_exec`): a pause
        meanwhile would freeze the exec's helper before it reports, a start in
        flight decides whether there is a container to enter.

        :param multiplexed: frame the output (stdcopy) on the socket. moby decides it by the
            start request's ``Tty``, not the exec's: a client that starts a tty exec without
            ``Tty`` (docker-py's default) reads frames.
        :param console_size: ``(height, width)`` of a tty exec, from the start request
            (API 1.42); it wins over the one given at create.
        """
        c = require(self.daemon.containers, "container store").get(e.container_id)
        with require(self.daemon.lifecycle, "life cycle").launching_exec(c):
            thread, result, ours = self._launch(e, c, sock, console_size)
        if sock is None:
            threading.Thread(target=self._reap, args=(e, c, thread, result, ours), daemon=True).start()
            return
        self._pump(e, c, sock, thread, result, ours, multiplexed)

    def _launch(
        self, e: Exec, c: Container, sock: Any | None, console_size: tuple[int, int] | None
    ) -> tuple[threading.Thread, dict[str, Any], dict[str, int]]:
        """Check, start the exec's process and wait until it runs; its runner thread, result and our fds."""
        self._check_startable(e, c)
        if console_size and e.process.tty:
            e.process.console_size = (console_size[0], console_size[1])
        ends: list[int] = []
        ours: dict[str, int] = {}
        try:
            console_sock = None
            if e.process.tty:
                # The driver makes the pty inside the container and sends us
                # the master (Pipes.console), so the exec sees a /dev/pts of
                # the container's own.
                console_sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                ends.append(theirs.detach())
                pipes = Pipes(console=ends[-1])
            else:
                stdin_r = stdout_w = stderr_w = None
                if sock is not None and e.open_stdin:
                    stdin_r, ours["stdin"] = os.pipe()
                    ends.append(stdin_r)
                if sock is not None and e.open_stdout:
                    ours["stdout"], stdout_w = os.pipe()
                    ends.append(stdout_w)
                if sock is not None and e.open_stderr:
                    ours["stderr"], stderr_w = os.pipe()
                    ends.append(stderr_w)
                pipes = Pipes(stdin_r, stdout_w, stderr_w)
        except OSError:
            for fd in [*ends, *ours.values()]:
                os.close(fd)
            raise
        result: dict[str, Any] = {}
        started = threading.Event()

        def on_start(pid: int) -> None:
            if console_sock is not None:
                console_sock.settimeout(10)
                try:
                    _msg, fds, _flags, _addr = sockets.recv_fds(console_sock, 16, 1)
                finally:
                    console_sock.close()
                if fds:
                    ours["master"] = fds[0]
                    e.pty_master = fds[0]
                    if e.process.console_size:
                        set_winsize(fds[0], *e.process.console_size)
            e.pid = pid
            e.running = True
            started.set()
            e.ready.set()
            for fd in ends:
                try:
                    os.close(fd)
                except OSError:
                    pass
            ends.clear()

        def runner() -> None:
            try:
                result["code"] = require(self.daemon.exec_driver, "exec driver").exec(
                    require(self.daemon.lifecycle, "life cycle").command(c), e.process, pipes, on_start
                )
            except BaseException as exc:  # reported to the request thread
                result["error"] = exc
            finally:
                for fd in ends:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                started.set()
                e.ready.set()

        thread = threading.Thread(target=runner, name=f"exec-{e.id[:12]}", daemon=True)
        thread.start()
        started.wait()
        if "error" in result:
            if console_sock is not None:
                console_sock.close()
            for fd in ours.values():
                os.close(fd)
            error = result["error"]
            # dockerd records 126 for every exec that could not start, a missing
            # executable included (its ContainerExecStart sets it on any error).
            e.exit_code = 126
            e.running = False
            self._forget_running(e, c)
            if isinstance(error, NotFound) or (
                isinstance(error, EngineError) and not require(self.daemon.lifecycle, "life cycle").alive(c)
            ):
                # It exited between the check and the exec (a stop, a kill): Docker's 409.
                raise Conflict(f"Container {c.id} is not running") from error
            raise error
        self.daemon.container_event(c, f"exec_start: {' '.join(e.process.args)}", {"execID": e.id})
        return thread, result, ours

    def _pump(
        self,
        e: Exec,
        c: Container,
        sock: Any,
        thread: threading.Thread,
        result: dict[str, Any],
        ours: dict[str, int],
        multiplexed: bool,
    ) -> None:
        """Stream the running exec's stdio over ``sock`` until it ends; record its exit."""
        stdin_fd = ours.get("master", ours.get("stdin"))
        if stdin_fd is not None and e.open_stdin:

            def write(data: bytes) -> None:
                try:
                    os.write(stdin_fd, data)
                except OSError:
                    pass

            def close() -> None:
                if "stdin" in ours:
                    try:
                        os.close(ours.pop("stdin"))
                    except OSError:
                        pass
                elif "master" in ours:
                    try:
                        os.write(ours["master"], b"\x04")  # EOT: a pty has no half-close
                    except OSError:
                        pass

            attach.StdinPump(
                sock,
                write,
                close,
                attach.parse_detach_keys(e.detach_keys) if e.process.tty else None,
                lambda: sockets.close_client(sock),
            ).start()
        out_fds = (
            {ours["master"]: 1}
            if "master" in ours
            else {fd: n for n, fd in ((1, ours.get("stdout")), (2, ours.get("stderr"))) if fd is not None}
        )
        attach.pump_fds(
            sock,
            out_fds,
            not multiplexed,
            e.open_stdout or e.process.tty,
            e.open_stderr,
            done=lambda: not thread.is_alive(),
        )
        thread.join()
        self._finish(e, c, result, ours)

    def _reap(self, e: Exec, c: Container, thread: threading.Thread, result: dict, ours: dict) -> None:
        thread.join()
        self._finish(e, c, result, ours)

    def _finish(self, e: Exec, c: Container, result: dict, ours: dict) -> None:
        e.exit_code = int(result.get("code", 126 if "error" in result else 0))
        e.running = False
        for fd in ours.values():
            try:
                os.close(fd)
            except OSError:
                pass
        e.pty_master = None
        self._forget_running(e, c)
        self.daemon.container_event(c, "exec_die", {"execID": e.id, "exitCode": str(e.exit_code)})

    @staticmethod
    def _forget_running(e: Exec, c: Container) -> None:
        with c.lock:
            if e.id in c.exec_ids:  # inspect lists running execs only (moby)
                c.exec_ids.remove(e.id)
        changes.container_changed(c.id)

    def forget(self, c: Container) -> None:
        """The container stopped or went: its finished execs can no longer be inspected (moby's
        clean-up at exit); without this every exec would be kept for the daemon's life."""
        with self._lock:
            for exec_id in [i for i, e in self._execs.items() if e.container_id == c.id and not e.running]:
                del self._execs[exec_id]

    def resize(self, e: Exec, h: int, w: int, timeout: float = RESIZE_WAIT) -> None:
        """Set the exec's terminal size, once its process runs (moby waits up to 10 s for it:
        ``kubectl exec -it`` and the CLI send the first size right after the start).

        An exec without a tty has nothing to size: nothing is done, as dockerd answers.

        :raises HostError: the exec did not start within ``timeout`` (dockerd's 500).
        :raises NotFound: its process has ended (dockerd's 404 ``no such exec``).
        """
        if not e.ready.wait(timeout):
            raise HostError("timeout waiting for exec session ready")
        if not e.running:
            raise NotFound("no such exec")  # its process is gone (containerd's answer)
        master = e.pty_master
        if master is not None:
            try:
                set_winsize(master, h, w)
            except EngineError:
                if e.pty_master is not None:  # not merely closed as the exec ended
                    raise


def set_winsize(fd: int, h: int, w: int) -> None:
    """TIOCSWINSZ (tty_ioctl(4)); the kernel sends SIGWINCH to the foreground group."""
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", int(h), int(w), 0, 0))
    except OSError as exc:
        raise EngineError(f"resize: {exc.strerror}") from None
