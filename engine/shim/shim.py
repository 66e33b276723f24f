"""The shim process: ``python -S -m engine.shim <container dir>`` (ARCHITECTURE §5).

One shim per running container. It runs the exec driver's ``run()``, owns
the container's stdio, writes the log (json-file or local), serves ``shim.sock`` and
records the exit in ``exit.json``; the daemon can die and restart around it.

Process shape::

    daemon --(start_new_session)--> launcher --fork--> shim (setsid) --driver.run()--> container init
                                       |                  |
                                       '<-- result pipe --'   one JSON line, then the launcher
                                                              prints it and exits: the daemon
                                                              is never the shim's parent for long

The daemon usually runs the launcher as a fork of its warm fork server
(:mod:`engine.shim.forkserver`, through a socket instead of a pipe), which
skips the interpreter's start and the imports; it behaves the same.

The launcher reads ``shim.json``, imports and builds the driver, then forks;
everything the fork inherits is shared with the shim rather than loaded
twice. The shim calls ``setsid``, ignores SIGHUP and SIGPIPE, closes the
descriptors the launcher inherited, and runs.

Threads: the main thread calls ``driver.run()``; the I/O loop
(:mod:`engine.shim.loop`) is started from the start callback, that is,
after the driver forked the container's init. So every ``fork`` the driver
makes happens while the shim is still single-threaded (no lock of another
thread can be copied locked into the child), and when a driver unshares the
PID namespace for its children (``unshare(CLONE_NEWPID)`` changes the
calling thread's namespace for the children it forks from then on) that is
the main thread, which forks nothing else afterwards; the I/O thread never
forks at all.

The shim imports only the standard library, the exec contract (with the
cgroup manager, whose limits a Command carries, and the engine's light
helpers: records, Go's time format, /proc readers, logging) and the
driver's module; tests/utils/test_records.py checks that nothing else comes
in. With the test driver it idles at about 12 MB of RSS per running
container; whatever a driver's module imports comes on top.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import logging
import os
import select
import signal
import socket
import stat
import struct
import sys
import termios
from typing import Any

from engine.drivers.exec import Command, ExecDriver, Pipes
from engine.errors import EngineError
from engine.shim import protocol
from engine.shim.jsonlog import JSONLogFile, LogStream
from engine.shim.locallog import LocalLogFile
from engine.shim.loop import IOLoop, Output
from engine.utils.logs import setup_logging
from engine.utils.timefmt import rfc3339nano_ns

LOG = logging.getLogger(__name__)

#: How long output is still read after the container's first process exited.
DRAIN_TIMEOUT = 2.0


class ShimError(EngineError):
    """The shim cannot start the container (bad ``shim.json``, a shim already running)."""


def _message(exc: BaseException) -> str:
    """The text a user sees for ``exc``: our own errors as they are, others with their type."""
    if isinstance(exc, EngineError):
        return str(exc)
    return f"{exc.__class__.__name__}: {exc}"


class Launch:
    """What the launcher prepares before it forks: the container and its driver.

    :param container_dir: the container's directory (absolute).
    :param config: the parsed ``shim.json``.
    """

    def __init__(self, container_dir: str, config: dict[str, Any]) -> None:
        self.container_dir = container_dir
        self.config = config
        self.command = Command.from_json(config["command"])
        self.tty = bool(config.get("tty", self.command.process.tty))
        # The driver decides on the controlling terminal from the process's
        # flag; it must agree with the stdio the shim makes.
        self.command.process.tty = self.tty
        self.open_stdin = bool(config.get("open_stdin", False))
        self.stdin_once = bool(config.get("stdin_once", False))
        self.log: dict[str, Any] | None = config.get("log")
        #: Connections the daemon attached before start: ``{"fd", "stdin", "stdout", "stderr"}``.
        self.attach: list[dict[str, Any]] = list(config.get("attach_fds", []))
        #: Seconds to wait for the daemon's acknowledgement of the start.
        self.ack_timeout = float(config.get("ack_timeout") or protocol.ACK_TIMEOUT)
        self.driver = self._load_driver(config["driver"])

    @staticmethod
    def _load_driver(spec: dict[str, Any]) -> ExecDriver:
        module = importlib.import_module(spec["module"])
        cls = getattr(module, spec["class"])
        if not (isinstance(cls, type) and issubclass(cls, ExecDriver)):
            raise ShimError(f"{spec['module']}.{spec['class']} is not an exec driver")
        return cls(spec.get("home", ""), spec.get("options"))

    def path(self, name: str) -> str:
        """``name`` inside the container's directory."""
        return os.path.join(self.container_dir, name)

    @classmethod
    def load(cls, container_dir: str) -> Launch:
        """Read ``shim.json``, build the driver, and clear what a previous run left.

        :raises ShimError: no ``shim.json``, or a live shim serves the directory.
        """
        config = protocol.read_json(os.path.join(container_dir, protocol.CONFIG_FILE))
        if config is None:
            raise ShimError(f"no {protocol.CONFIG_FILE} in {container_dir}")
        launch = cls(container_dir, config)
        sock_path = launch.path(protocol.SOCKET_FILE)
        if os.path.lexists(sock_path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                protocol.connect_unix(probe, sock_path)
            except OSError:  # ECONNREFUSED: a dead shim's socket
                os.unlink(sock_path)
            else:
                raise ShimError(f"a shim is already running for {container_dir}")
            finally:
                probe.close()
        # The state of a previous run must not be taken for this one's.
        for name in (protocol.STATE_FILE, protocol.EXIT_FILE):
            try:
                os.unlink(launch.path(name))
            except FileNotFoundError:
                pass
        return launch


class Shim:
    """The daemonized shim: stdio, the driver's ``run()``, the exit record.

    :param launch: what the launcher prepared.
    :param result_fd: the pipe to the launcher; one JSON line goes there.
    :param ack_fd: the pipe from the launcher: the daemon's acknowledgement of the start.
    """

    def __init__(self, launch: Launch, result_fd: int, ack_fd: int = -1) -> None:
        self.launch = launch
        self.command = launch.command
        self.driver = launch.driver
        self.result_fd = result_fd
        self.ack_fd = ack_fd
        self.log: JSONLogFile | None = None
        self.loop: IOLoop | None = None
        self.pid = 0
        self.started = False
        #: The start callback failed and told the launcher so.
        self.start_failed = False
        #: The launcher was gone when the start was reported.
        self.abandoned = False
        self._child_ends: list[int] = []
        self._owned: list[int] = []

    # ------------------------------------------------------------------

    def run(self) -> int:
        """Start the container, serve it until it exits, record the exit; the process's exit status."""
        try:
            pipes = self._setup()
        except Exception as exc:
            LOG.exception("shim set-up failed")
            self._report({"Error": f"shim set-up failed: {_message(exc)}"})
            self._cleanup()
            return 1
        error = ""
        code = protocol.UNKNOWN_EXIT_CODE
        try:
            code = self.driver.run(self.command, pipes, self._on_start)
        except Exception as exc:
            if not self.started:
                LOG.info("container %s did not start: %s", self.command.id, exc)
                self._report({"Error": _message(exc)})
                self._cleanup()
                return 0
            LOG.exception("the exec driver failed after start")
            error = f"exec driver failed: {_message(exc)}"
        finished_at = rfc3339nano_ns()
        self._close_child_ends()
        if not self.started:
            self._report({"Error": "the exec driver returned without starting the container"})
            self._cleanup()
            return 1
        if self.start_failed:
            self._terminate()
            self._cleanup()
            return 1
        return self._record_exit(code, error, finished_at)

    def _setup(self) -> Pipes:
        """The container's stdio, the log, the socket and the (not yet started) I/O loop."""
        launch = self.launch
        log_spec = launch.log
        if log_spec:
            # "format": json-file (the default) or local (moby's protobuf entries).
            kind = LocalLogFile if log_spec.get("format") == "local" else JSONLogFile
            self.log = kind(
                log_spec["path"],
                int(log_spec.get("max_size", 0) or 0),
                int(log_spec.get("max_file", 1) or 1),
                bool(log_spec.get("compress")),
            )

        def stream(name: str) -> LogStream | None:
            return LogStream(self.log, name) if self.log is not None else None

        console_fd: int | None = None
        stdin_fd: int | None = None
        if launch.tty:
            # The driver makes the pty inside the container (its devpts) and
            # sends the master over this socket pair (see Pipes.console).
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self._console_sock = ours
            self._child_ends.append(theirs.detach())
            pipes = Pipes(console=self._child_ends[-1])
            outputs: list[Output] = []
            self._console_log = stream("stdout")
        else:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            self._owned += [out_r, err_r]
            self._child_ends += [out_w, err_w]
            if launch.open_stdin:
                in_r, in_w = os.pipe()
                self._owned.append(in_w)
                stdin_fd = in_w
            else:
                in_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            self._child_ends.append(in_r)
            pipes = Pipes(stdin=in_r, stdout=out_w, stderr=err_w)
            outputs = [
                Output(out_r, protocol.STREAM_STDOUT, stream("stdout")),
                Output(err_r, protocol.STREAM_STDERR, stream("stderr")),
            ]

        sock_path = launch.path(protocol.SOCKET_FILE)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # never a moment with a socket others may connect to
        try:
            protocol.bind_unix(listener, sock_path)
        finally:
            os.umask(old_umask)
        os.chmod(sock_path, 0o600)
        listener.listen(64)
        self.loop = IOLoop(
            outputs,
            stdin_fd,
            launch.tty,
            launch.stdin_once,
            listener,
            sock_path,
            state={},
            console_fd=console_fd,
            drain_timeout=DRAIN_TIMEOUT,
        )
        # From here the loop owns these descriptors.
        self._owned.clear()
        for spec in launch.attach:
            sock = socket.socket(fileno=int(spec["fd"]))
            sock.set_inheritable(False)
            self.loop.add_attached(sock, bool(spec.get("stdin")), bool(spec.get("stdout")), bool(spec.get("stderr")))
        return pipes

    def _take_console(self) -> None:
        """Receive the pty master the driver made inside the container."""
        assert self.loop is not None
        sock = self._console_sock
        sock.settimeout(10)
        try:
            _msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 1)
        except OSError as exc:
            raise RuntimeError(f"the exec driver sent no console ({exc})") from None
        finally:
            sock.close()
        if not fds:
            raise RuntimeError("the exec driver sent no console (it does not support Pipes.console)")
        master = fds[0]
        size = self.command.process.console_size
        if size:
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", int(size[0]), int(size[1]), 0, 0))
        self.loop.set_console(master, self._console_log, self.launch.open_stdin)

    def _on_start(self, pid: int) -> None:
        """The driver's start callback: record the start, start the I/O loop, tell the launcher."""
        assert self.loop is not None
        self.started = True
        self.pid = pid
        # The container has its copies now; ours would keep the pipes (and
        # the pty) from ever reaching EOF.
        self._close_child_ends()
        state = {"Pid": pid, "ShimPid": os.getpid(), "StartedAt": rfc3339nano_ns()}
        try:
            if self.launch.tty:
                self._take_console()
            protocol.write_json_atomic(self.launch.path(protocol.STATE_FILE), state)
            self.loop.state.update(state)
            self.loop.on_crash = self._kill
            self.loop.start()
        except Exception as exc:
            LOG.exception("cannot record the start of container %s", self.command.id)
            self.start_failed = True
            self._report({"Error": f"cannot record the container's start: {_message(exc)}"})
            self._kill()
            return
        LOG.info("container %s started: pid %d", self.command.id, pid)
        if not self._report(state):
            # Nobody will ever learn of this container (the daemon gave up
            # waiting, or died, before it confirmed the start): stop it
            # rather than leak it.
            LOG.error("the start was not confirmed; stopping container %s", self.command.id)
            self.abandoned = True
            self._kill()

    def _record_exit(self, code: int, error: str, finished_at: str) -> int:
        """Drain, clean up through the driver, write ``exit.json``, then tell the clients."""
        loop = self.loop
        assert loop is not None
        loop.notify_exited()
        if not loop.drained.wait(DRAIN_TIMEOUT + 5):
            LOG.warning("the I/O loop did not finish draining; recording the exit anyway")
        if not error and loop.error:
            error = loop.error
        if not error and self.abandoned:
            error = "the start was abandoned: the daemon did not confirm it (it gave up waiting or went away)"
        oom = False
        try:
            oom = bool(self.driver.oom_killed(self.command))
        except Exception:
            LOG.exception("oom_killed failed for container %s", self.command.id)
        self._terminate()
        exit_info = {"ExitCode": code, "FinishedAt": finished_at, "OOMKilled": oom, "Error": error}
        try:
            protocol.write_json_atomic(self.launch.path(protocol.EXIT_FILE), exit_info)
        except Exception:
            LOG.exception("cannot write %s", protocol.EXIT_FILE)
        LOG.info("container %s exited: %s", self.command.id, exit_info)
        loop.finish(exit_info)
        loop.join(loop.finish_timeout + 5)
        if loop.is_alive():
            LOG.warning("the I/O loop did not end; exiting without it")
        self._cleanup()
        return 0

    # ------------------------------------------------------------------

    def _report(self, result: dict[str, Any]) -> bool:
        """Send ``result`` to the launcher (once); whether it was taken.

        A start (a result without ``Error``) counts as taken only once the
        daemon acknowledged it (through the launcher, see :mod:`.protocol`).
        """
        fd, self.result_fd = self.result_fd, -1
        ack, self.ack_fd = self.ack_fd, -1
        if fd < 0:
            return False
        try:
            try:
                os.write(fd, protocol.encode_line(result))
            except OSError as exc:  # EPIPE: the launcher is gone
                LOG.warning("cannot report to the launcher: %s", exc)
                return False
            finally:
                os.close(fd)
            if ack < 0 or result.get("Error"):
                return True
            # The launcher waits ack_timeout from its print, and ends the
            # wait early if the daemon goes: ours only has to outlast it.
            if _await_ack(ack, 2 * self.launch.ack_timeout):
                return True
            LOG.warning("the daemon did not acknowledge the start")
            return False
        finally:
            if ack >= 0:
                os.close(ack)

    def _kill(self) -> None:
        """SIGKILL the container's first process, so that ``run()`` returns."""
        try:
            self.driver.kill(self.command, signal.SIGKILL)
        except Exception:
            LOG.exception("the driver could not kill container %s", self.command.id)
            if self.pid:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _terminate(self) -> None:
        try:
            self.driver.terminate(self.command)
        except Exception:
            LOG.exception("terminate failed for container %s", self.command.id)

    def _close_child_ends(self) -> None:
        for fd in set(self._child_ends):
            os.close(fd)
        self._child_ends.clear()

    def _cleanup(self) -> None:
        """Close what the shim still holds and remove the socket (after a failed start, or at the end)."""
        self._close_child_ends()
        for fd in self._owned:
            os.close(fd)
        self._owned.clear()
        loop = self.loop
        if loop is not None and not loop.is_alive():
            loop.close()
        try:
            os.unlink(self.launch.path(protocol.SOCKET_FILE))
        except FileNotFoundError:
            pass
        if self.log is not None and (loop is None or not loop.is_alive()):
            self.log.close()


# ----------------------------------------------------------------------
# launcher and daemonization


def _open_fds() -> set[int]:
    """The descriptors open now (without the one that listed them, closed by then)."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            fcntl.fcntl(int(name), fcntl.F_GETFD)
        except OSError:  # EBADF: the directory listing's own descriptor
            continue
        found.add(int(name))
    return found


def _await_result(fd: int, watch: int = 1) -> bytes:
    """Read from ``fd`` up to the first newline or EOF; b"" as soon as ``watch`` hangs up.

    ``watch`` is where the launcher prints the result (the daemon's pipe or
    connection). When the daemon gave up waiting (or died), the launcher
    leaves at once: the shim's report then fails, and it stops the container
    rather than leak one that nobody knows of.
    """
    data = bytearray()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.register(watch, 0)  # POLLHUP and POLLERR are always reported
    while b"\n" not in data:
        events = dict(poller.poll())
        if events.get(watch, 0) & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
            return b""
        if fd not in events:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return bytes(data.split(b"\n", 1)[0])


def _await_ack(fd: int, timeout: float) -> bool:
    """Whether :data:`~.protocol.ACK` arrives on ``fd`` within ``timeout`` seconds (EOF: no)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if not poller.poll(max(0, int(timeout * 1000))):
        return False
    try:
        return os.read(fd, 1) == protocol.ACK
    except OSError:
        return False


def _stdin_is_socket() -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(0).st_mode)
    except OSError:
        return False


def _print(result: dict[str, Any]) -> None:
    sys.stdout.write(protocol.encode_line(result).decode())
    sys.stdout.flush()


def _daemonize(launch: Launch, close_fds: set[int]) -> None:
    """Become the detached shim: own session, no signals from a terminal, our own stdio."""
    os.setsid()
    try:  # what ps -o comm and top show (a fork server's shim has its command line)
        with open("/proc/self/comm", "w") as fh:
            fh.write("shim " + os.path.basename(launch.container_dir)[:10])
    except OSError:
        pass
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    os.chdir("/")  # hold no mount busy
    null = os.open(os.devnull, os.O_RDWR)
    errlog = os.open(launch.path(protocol.LOG_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    # stdout is the pipe the daemon reads the launcher's line from: the shim
    # must let go of it, or the daemon would wait for its EOF forever.
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(errlog, 2)
    os.close(null)
    os.close(errlog)
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    setup_logging(stream=sys.stderr)


def main(argv: list[str]) -> int:
    """``python -S -m engine.shim <container dir>``: the launcher, run directly."""
    if len(argv) != 1:
        sys.stderr.write("usage: python -S -m engine.shim <container dir>\n")
        return 2
    os.write(1, protocol.ACK)  # the launcher runs (protocol)
    return launch(os.path.abspath(argv[0]))


def launch(container_dir: str, fd_map: dict[int, int] | None = None) -> int:
    """The launcher: prepare, fork the shim, print its start result as one JSON line on stdout.

    Every descriptor but 0-2 is the shim's to close, except the attach
    connections ``shim.json`` names. :param fd_map: the daemon's numbers of
    those connections -> ours, when they came over a socket (the fork
    server) rather than at the same numbers (``pass_fds``).
    """
    inherited = _open_fds() - {0, 1, 2}
    try:
        launch = Launch.load(container_dir)
    except Exception as exc:  # noqa: BLE001 - reported as the result
        _print({"Error": _message(exc)})
        return 0
    if fd_map is not None:
        for spec in launch.attach:
            spec["fd"] = fd_map.get(int(spec["fd"]), -1)
    keep = {int(spec["fd"]) for spec in launch.attach}
    if not keep <= inherited:
        _print({"Error": f"attach descriptors {sorted(keep - inherited)} were not passed to the shim"})
        return 0
    read_fd, write_fd = os.pipe()
    ack_r, ack_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_fd)
            os.close(ack_w)
            _daemonize(launch, inherited - keep)
            status = Shim(launch, write_fd, ack_r).run()
        except BaseException:  # noqa: BLE001 - the shim must not unwind into the launcher's code
            try:
                LOG.exception("the shim failed")
            except BaseException:  # noqa: BLE001
                pass
        finally:
            logging.shutdown()
            os._exit(status)
    os.close(write_fd)
    os.close(ack_r)
    for fd in keep:  # the shim has them; the launcher's copies would hold the connections open
        os.close(fd)
    line = _await_result(read_fd)
    os.close(read_fd)
    try:
        result = json.loads(line) if line else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        log = launch.path(protocol.LOG_FILE)
        result = {"Error": f"the shim exited before the container started (see {log})"}
    try:
        _print(result)
        # Pass the daemon's acknowledgement of a start on to the shim; without
        # it (EOF, timeout) the shim stops the container. The daemon always
        # talks over a socket: a launcher run by hand (a terminal, /dev/null)
        # confirms its own start.
        if not result.get("Error") and (not _stdin_is_socket() or _await_ack(0, launch.ack_timeout)):
            os.write(ack_w, protocol.ACK)
    except OSError:  # the daemon is gone; the shim learns it from the pipe
        pass
    finally:
        os.close(ack_w)
    return 0
