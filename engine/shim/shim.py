"""The shim process: ``python -S -m engine.shim <container dir>`` (ARCHITECTURE §5).

One shim per running container. It starts the container through the exec driver, owns
the container's stdio, writes the log (json-file or local), serves ``shim.sock`` and
records the exit in ``exit.json``; the daemon can die and restart around it.

Process shape, when the daemon runs the launcher directly::

    daemon --(start_new_session)--> launcher --fork--> shim (setsid) --fork--> starter --driver.start()--> init
                                       |                                         |
                                       '<------------- result pipe --------------'
                                       one JSON line, then the launcher prints it
                                       and exits: the daemon is never the shim's
                                       parent for long

Usually the shim is a fork of the daemon's warm fork server
(:mod:`engine.shim.forkserver`, :func:`run_forked`) with no launcher: its
starter answers the daemon on the connection the fork server was given.

The starter exits once the init runs the container's program; the shim,
a child subreaper until then, adopts the init (``driver.wait()`` waits for
it). What the shim needs of the start comes back on a pipe, marshalled;
the descriptors it serves it made itself before the fork (:class:`Ends`).

The starter reads ``shim.json`` and builds the driver; the shim calls
``setsid``, ignores SIGHUP and SIGPIPE, and closes the descriptors it
inherited but the attach connections it serves.

Threads: the starter has one; the driver forks there, and when it
unshares the PID namespace for its children (``unshare(CLONE_NEWPID)``
changes the calling thread's namespace for the children it forks from then
on) that is the starter's, which forks nothing else afterwards. The shim
forks the starter before it starts the I/O loop's thread
(:mod:`engine.shim.loop`), which never forks at all.

Memory: every page the shim writes after its fork is its own, for as long
as the container runs (a Python object's reference count is written each
time it is used). The start (``shim.json``, the plan, the namespaces, the
seccomp filter, the init's fork, the report) writes to many; in the
starter they go when it exits. The shim that stays runs system calls, the
I/O loop and little else, and runs nothing before it forks the starter:
no logging set-up (:func:`_ensure_logging`, at the exit), no JSON (the
starter's messages are marshalled). The fork server runs what the shim
runs once before it forks any (:func:`warm_up`), so that what Python does
the first time (building the keys that instances share, specializing the
code) is shared too. About 1.8 MB of a shim's pages are its own at rest,
against 3.8 MB when the driver's start ran in it.

The shim imports only the standard library, the exec contract (with the
cgroup manager, whose limits a Command carries, and the engine's light
helpers: records, Go's time format, /proc readers, logging) and the
driver's module; tests/utils/test_records.py checks that nothing else comes
in.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # the C module, without the wrapper's enums
import fcntl
import importlib
import json
import logging
import marshal
import os
import select
import signal
import socket
import stat
import struct
import sys
import termios
from collections.abc import Callable, Sequence
from typing import Any

from engine.drivers.exec import Command, ExecDriver, Pipes
from engine.errors import EngineError
from engine.shim import protocol
from engine.shim.jsonlog import JSONLogFile, LogStream
from engine.shim.locallog import LocalLogFile
from engine.shim.loop import IOLoop, Output
from engine.sys import ksm
from engine.sys.proc import reap
from engine.utils.logs import setup_logging
from engine.utils.sockets import recv_fds
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
        #: The shim opts in to kernel samepage merging once the container runs (engine.sys.ksm).
        self.memory_merge = bool(config.get("memory_merge", False))
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


class Ends:
    """What the shim makes before it forks its starter, and so shares with it: the container's
    stdio pipes, the console socket pair, the (unbound) ``shim.sock`` and the starter's message
    pipe. Made by the shim because a descriptor that the starter made would have to be passed
    back over a socket, and that, too, costs the shim pages of its own."""

    def __init__(self) -> None:
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()
        self.in_r, self.in_w = os.pipe()
        self.msg_r, self.msg_w = os.pipe()
        self.console, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.console_child = child.detach()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def starters(self) -> list[int]:
        """The starter's ends (the container's, and the message pipe's writing end)."""
        return [self.out_w, self.err_w, self.in_r, self.msg_w, self.console_child]

    def shims(self) -> list[int]:
        """The shim's ends."""
        return [self.out_r, self.err_r, self.in_w, self.msg_r]


def _send_message(fd: int, obj: Any) -> None:
    """One message to the shim on its pipe: the length, then ``obj`` marshalled (the shim reads it
    without running any Python code of json's, whose pages would be its own)."""
    data = marshal.dumps(obj)
    os.write(fd, struct.pack("=I", len(data)) + data)


def _read_message(fd: int) -> Any:
    """The next message of :func:`_send_message` on ``fd``; None at EOF (the starter is gone)."""

    def read(n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = os.read(fd, n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    head = read(4)
    if head is None:
        return None
    body = read(struct.unpack("=I", head)[0])
    return None if body is None else marshal.loads(body)


class Starter:
    """The shim's short-lived child: it starts the container and reports the start.

    It binds the ``shim.sock`` the shim made, runs ``driver.start()`` with
    the stdio the shim made, records ``state.json``, sends the shim the
    facts it serves the container with (a first message on the message
    pipe), reports the start to the launcher, waits for the daemon's
    acknowledgement, and tells the shim whether it came (a second message).
    Then it exits, and the processes the driver started become the shim's
    children.

    :param launch: the loaded ``shim.json`` and driver.
    :param result_fd: the pipe to the launcher; one JSON line goes there.
    :param ack_fd: the pipe from the launcher: the daemon's acknowledgement of the start.
    :param ends: what the shim made (:class:`Ends`); the shim's own ends are closed here.
    """

    def __init__(self, launch: Launch, result_fd: int, ack_fd: int, ends: Ends) -> None:
        self.launch = launch
        self.command = launch.command
        self.driver = launch.driver
        self.result_fd = result_fd
        self.ack_fd = ack_fd
        self.ends = ends
        self._child_ends = ends.starters()
        self._child_ends.remove(ends.msg_w)
        self._listening = False
        #: A result went to the launcher (or the daemon).
        self.reported = False

    def run(self) -> int:
        """Start the container and hand it to the shim; the process's exit status."""
        try:
            pipes = self._setup()
        except Exception as exc:
            LOG.exception("shim set-up failed")
            self._report({"Error": f"shim set-up failed: {_message(exc)}"})
            self._cleanup()
            return 1
        try:
            pid = self.driver.start(self.command, pipes)
        except Exception as exc:
            LOG.info("container %s did not start: %s", self.command.id, exc)
            self._report({"Error": _message(exc)})
            self._cleanup()
            return 0
        self._close_child_ends()  # the container has its copies; ours would keep the pipes from EOF
        state = {"Pid": pid, "ShimPid": os.getppid(), "StartedAt": rfc3339nano_ns()}
        try:
            if self.launch.tty:
                self._size_console()
            protocol.write_json_atomic(self.launch.path(protocol.STATE_FILE), state, durable=False)
            self._handover(state)
        except Exception as exc:
            LOG.exception("cannot record the start of container %s", self.command.id)
            self._report({"Error": f"cannot record the container's start: {_message(exc)}"})
            self._stop()
            self._cleanup()
            return 1
        LOG.info("container %s started: pid %d", self.command.id, pid)
        confirmed = self._report(state)
        if not confirmed:
            # Nobody will ever learn of this container (the daemon gave up
            # waiting, or died, before it confirmed the start): the shim stops it.
            LOG.error("the start was not confirmed; container %s will be stopped", self.command.id)
        _send_message(self.ends.msg_w, confirmed)
        return 0

    def _setup(self) -> Pipes:
        """Bind and listen on ``shim.sock``; the container's stdio. The log is opened once, to fail
        here if it cannot be."""
        launch, ends = self.launch, self.ends
        if launch.log:
            _open_log(launch.log).close()
        sock_path = launch.path(protocol.SOCKET_FILE)
        old_umask = os.umask(0o177)  # never a moment with a socket others may connect to
        try:
            protocol.bind_unix(ends.listener, sock_path)
            self._listening = True
        finally:
            os.umask(old_umask)
        os.chmod(sock_path, 0o600)
        ends.listener.listen(64)
        if launch.tty:
            # The driver makes the pty inside the container (its devpts) and
            # sends the master over the console socket pair (see Pipes.console).
            return Pipes(console=ends.console_child)
        if launch.open_stdin:
            return Pipes(stdin=ends.in_r, stdout=ends.out_w, stderr=ends.err_w)
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._child_ends.append(null)
        return Pipes(stdin=null, stdout=ends.out_w, stderr=ends.err_w)

    def _size_console(self) -> None:
        """Check that the driver sent the pty master, and size it as the command asks. The
        message is only peeked at: the shim receives it (with MSG_PEEK the kernel gives us a
        copy of the descriptor and leaves the message queued)."""
        sock = self.ends.console
        sock.settimeout(10)
        try:
            _msg, fds, _flags, _addr = recv_fds(sock, 16, 1, socket.MSG_PEEK)
        except OSError as exc:
            raise RuntimeError(f"the exec driver sent no console ({exc})") from None
        if not fds:
            raise RuntimeError("the exec driver sent no console (it does not support Pipes.console)")
        try:
            size = self.command.process.console_size
            if size:
                fcntl.ioctl(fds[0], termios.TIOCSWINSZ, struct.pack("HHHH", int(size[0]), int(size[1]), 0, 0))
        finally:
            for fd in fds:
                os.close(fd)

    def _handover(self, state: dict[str, Any]) -> None:
        """Send the shim the facts it serves the container with."""
        launch = self.launch
        info = {
            "state": state,
            "tty": launch.tty,
            "open_stdin": launch.open_stdin,
            "stdin_once": launch.stdin_once,
            "log": launch.log,
            "attach": launch.attach,
            "command": launch.config["command"],
            "driver": launch.config["driver"],
            "memory_merge": launch.memory_merge,
        }
        _send_message(self.ends.msg_w, info)

    def _report(self, result: dict[str, Any]) -> bool:
        """Send ``result`` to the launcher (once); whether it was taken.

        A start (a result without ``Error``) counts as taken only once the
        daemon acknowledged it (through the launcher, see :mod:`.protocol`).
        """
        fd, self.result_fd = self.result_fd, -1
        ack, self.ack_fd = self.ack_fd, -1
        if fd < 0:
            return False
        self.reported = True
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

    def _stop(self) -> None:
        """Stop a container whose start cannot be recorded: kill it, wait for it, release it."""
        try:
            self.driver.kill(self.command, signal.SIGKILL)
            self.driver.wait(self.command)
        except Exception:
            LOG.exception("cannot stop container %s", self.command.id)
        try:
            self.driver.terminate(self.command)
        except Exception:
            LOG.exception("terminate failed for container %s", self.command.id)

    def _close_child_ends(self) -> None:
        for fd in self._child_ends:
            os.close(fd)
        self._child_ends.clear()

    def _cleanup(self) -> None:
        """After a failed start: close the container's ends and remove the socket (the shim,
        told nothing, closes its own)."""
        self._close_child_ends()
        if self._listening:
            try:
                os.unlink(self.launch.path(protocol.SOCKET_FILE))
            except FileNotFoundError:
                pass


def _open_log(spec: dict[str, Any]) -> JSONLogFile:
    """The container's log file: json-file (the default) or local (moby's protobuf entries)."""
    kind = LocalLogFile if spec.get("format") == "local" else JSONLogFile
    return kind(
        spec["path"],
        int(spec.get("max_size", 0) or 0),
        int(spec.get("max_file", 1) or 1),
        bool(spec.get("compress")),
    )


class Shim:
    """The daemonized shim: it stays as long as the container runs, and does as little as it can.

    Every page it writes is its own for the container's lifetime, so the
    start (loading ``shim.json``, the driver's ``start()``, the report) runs
    in a :class:`Starter`, a child process; the shim keeps the I/O loop, waits
    for the container, and records the exit.

    :param container_dir: the container's directory.
    :param inherited: the descriptors it inherited; those the starter names
        as attach connections are served, the others closed.
    """

    def __init__(self, container_dir: str, inherited: set[int]) -> None:
        self.container_dir = container_dir
        self.inherited = inherited
        self.info: dict[str, Any] = {}
        self.loop: IOLoop | None = None
        self.log: JSONLogFile | None = None
        self.pid = 0
        #: The daemon did not confirm the start.
        self.abandoned = False
        self._driver: tuple[Command, ExecDriver] | None = None

    def path(self, name: str) -> str:
        return os.path.join(self.container_dir, name)

    def run(self, start: Callable[[Ends], int], starter_fds: Sequence[int] = (), release_stdio: bool = False) -> int:
        """Fork the starter (``start(ends)`` is its exit status; ``starter_fds`` are its alone),
        serve the container it started, wait for it, record its exit; the process's exit status.
        With ``release_stdio`` the shim's standard input and output (the daemon's connection,
        which the starter answers on) become /dev/null once the starter is forked."""
        from engine.sys import libc  # loaded by the exec drivers already

        ends = Ends()
        # Until the starter is reaped: what it started becomes ours when it exits, not init(1)'s.
        libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
        try:
            starter = os.fork()
            if starter == 0:
                status = 1
                try:
                    for fd in ends.shims():
                        os.close(fd)
                    _ensure_logging()
                    status = start(ends)
                except BaseException:  # noqa: BLE001 - never unwind into the shim's code
                    try:
                        LOG.exception("the shim's starter failed")
                    except BaseException:  # noqa: BLE001
                        pass
                finally:
                    logging.shutdown()
                    os._exit(status)
            for fd in (*starter_fds, *ends.starters()):
                os.close(fd)
            if release_stdio:
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, 0)
                os.dup2(null, 1)
                os.close(null)
            try:
                self._take_over(ends)
            except Exception:
                _ensure_logging()
                LOG.exception("cannot serve the container the starter started; stopping it")
                self.abandoned = True
                if self.loop is not None and not self.loop.started:
                    self.loop.start()  # to drain and record the exit as always
            finally:
                confirmed = _read_message(ends.msg_r)
                self.abandoned = self.abandoned or confirmed is not True
                os.close(ends.msg_r)
                ends.console.close()
                reap(starter)
        finally:
            # Orphans of a --pid=host container are init(1)'s to reap, as without a shim.
            libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 0)
        if self.loop is None:
            # The start failed (the starter reported it), or the starter died: nothing it
            # may have started runs on unseen.
            for fd in (ends.out_r, ends.err_r, ends.in_w):
                os.close(fd)
            ends.listener.close()
            self._close_inherited(set())
            if self.pid:
                self._kill()
            _kill_children()
            return 0
        if self.abandoned:
            self._kill()
        elif self.info.get("memory_merge"):
            # Only now: the setting passes to children and through execve, and the
            # container's processes were forked (by the starter) before it.
            ksm.merge_this_process()
        _wait_child_exit()
        finished_at = rfc3339nano_ns()
        _ensure_logging()
        error = ""
        code = protocol.UNKNOWN_EXIT_CODE
        try:
            command, driver = self._load_driver()
            code = driver.wait(command)
        except Exception as exc:
            LOG.exception("the exec driver failed after start")
            error = f"exec driver failed: {_message(exc)}"
        return self._record_exit(code, error, finished_at)

    def _take_over(self, ends: Ends) -> None:
        """Serve the container the starter started, from its first message (nothing if none came)."""
        info = _read_message(ends.msg_r)
        if not isinstance(info, dict):
            return
        self.info = info
        state = info["state"]
        self.pid = int(state["Pid"])
        tty = bool(info["tty"])
        open_stdin = bool(info["open_stdin"])
        log_spec = info.get("log")
        if log_spec:
            self.log = _open_log(log_spec)

        def stream(name: str) -> LogStream | None:
            return LogStream(self.log, name) if self.log is not None else None

        outputs: list[Output] = []
        stdin_fd: int | None = None
        if tty:
            for fd in (ends.out_r, ends.err_r, ends.in_w):
                os.close(fd)
        else:
            outputs = [
                Output(ends.out_r, protocol.STREAM_STDOUT, stream("stdout")),
                Output(ends.err_r, protocol.STREAM_STDERR, stream("stderr")),
            ]
            if open_stdin:
                stdin_fd = ends.in_w
            else:
                os.close(ends.in_w)
        loop = IOLoop(
            outputs,
            stdin_fd,
            tty,
            bool(info["stdin_once"]),
            ends.listener,
            self.path(protocol.SOCKET_FILE),
            state=state,
            drain_timeout=DRAIN_TIMEOUT,
        )
        self.loop = loop  # it owns those descriptors now
        attach = info.get("attach") or ()
        self._close_inherited({int(spec["fd"]) for spec in attach})
        for spec in attach:
            sock = socket.socket(fileno=int(spec["fd"]))
            sock.set_inheritable(False)
            loop.add_attached(sock, bool(spec.get("stdin")), bool(spec.get("stdout")), bool(spec.get("stderr")))
        if tty:
            _msg, fds, _flags, _addr = recv_fds(ends.console, 16, 1)
            if not fds:
                raise RuntimeError("the pty master the starter saw is gone")
            loop.set_console(fds[0], stream("stdout"), open_stdin)
        loop.on_crash = self._kill
        loop.start()

    def _close_inherited(self, keep: set[int]) -> None:
        for fd in self.inherited - keep:
            try:
                os.close(fd)
            except OSError:
                pass
        self.inherited = set()

    def _load_driver(self) -> tuple[Command, ExecDriver]:
        """The command and the driver, built when first needed: at the exit, or to kill the container."""
        if self._driver is None:
            self._driver = (Command.from_json(self.info["command"]), Launch._load_driver(self.info["driver"]))
        return self._driver

    def _kill(self) -> None:
        """SIGKILL the container's first process (the driver's way, else by PID)."""
        _ensure_logging()
        try:
            command, driver = self._load_driver()
            driver.kill(command, signal.SIGKILL)
        except Exception:
            LOG.exception("the driver could not kill the container")
            if self.pid:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _record_exit(self, code: int, error: str, finished_at: str) -> int:
        """Drain, write ``exit.json``, tell the clients; then release the container through the
        driver, and end.

        The daemon handles the exit from the moment ``exit.json`` is renamed into
        place (its monitor watches the directory), while the rest of this runs: the
        driver's terminate (the cgroups) and the shim's own end. A new start of the
        container waits for this process to end, so it never meets these cgroups.
        """
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
            command, driver = self._load_driver()
            oom = bool(driver.oom_killed(command))
        except Exception:
            LOG.exception("oom_killed failed for the container in %s", self.container_dir)
        exit_info = {"ExitCode": code, "FinishedAt": finished_at, "OOMKilled": oom, "Error": error}
        try:
            # Our PID tells the daemon this record from one an earlier run of the container left.
            protocol.write_json_atomic(self.path(protocol.EXIT_FILE), {**exit_info, "ShimPid": os.getpid()})
        except Exception:
            LOG.exception("cannot write %s", protocol.EXIT_FILE)
        LOG.info("container %s exited: %s", os.path.basename(self.container_dir), exit_info)
        loop.finish(exit_info)
        try:
            command, driver = self._load_driver()
            driver.terminate(command)
        except Exception:
            LOG.exception("terminate failed for the container in %s", self.container_dir)
        loop.join(loop.finish_timeout + 5)
        if loop.is_alive():
            LOG.warning("the I/O loop did not end; exiting without it")
        else:
            loop.close()
        try:
            # The daemon may have renamed a removed container's directory away already.
            os.unlink(self.path(protocol.SOCKET_FILE))
        except FileNotFoundError:
            pass
        if self.log is not None and not loop.is_alive():
            self.log.close()
        return 0


def warm_up(rounds: int = 10) -> None:
    """Run what every shim runs once it has started its container, here, before any fork (the
    fork server calls this once): an :class:`Ends`, the hand-over message, a log, an I/O loop
    with an attached client that sees some output, the exit, and the loop's end.

    A shim keeps every page it writes. The first time a class is instantiated, Python builds
    the keys its instances share, taking a reference to each attribute's name (an interned
    string, somewhere in the fork server's heap); a function run for the first times is
    rewritten in place (3.11's specialization). Done here, both are pages the shims share.
    Nothing of this runs a thread: the loop runs in this one, until it ends.
    """
    for _ in range(rounds):
        ends = Ends()
        _send_message(ends.msg_w, {"state": {"Pid": 1}, "tty": False, "attach": []})
        info = _read_message(ends.msg_r)
        log = _open_log({"path": os.devnull})
        ends.listener.bind(f"\0engine-shim-warm-up-{os.getpid()}")  # abstract: no file
        ends.listener.listen(1)
        client, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        loop = IOLoop(
            [
                Output(ends.out_r, protocol.STREAM_STDOUT, LogStream(log, "stdout")),
                Output(ends.err_r, protocol.STREAM_STDERR, LogStream(log, "stderr")),
            ],
            ends.in_w,
            False,
            True,
            ends.listener,
            "/nonexistent/engine-shim-warm-up.sock",
            state=info["state"],
            drain_timeout=1.0,
            finish_timeout=1.0,
        )
        loop.add_attached(peer, True, True, True)
        os.write(ends.out_w, b"warm\n")
        os.write(ends.err_w, b"up")
        for fd in (ends.out_w, ends.err_w, ends.in_r, ends.msg_w, ends.console_child, ends.msg_r):
            os.close(fd)
        ends.console.close()
        loop.notify_exited()
        loop.finish({"ExitCode": 0, "FinishedAt": rfc3339nano_ns(), "OOMKilled": False, "Error": ""})
        loop._run()
        loop.close()
        log.close()
        client.close()


def _kill_children() -> None:
    """SIGKILL and reap every child of this process (what a starter that died left us)."""
    task = f"/proc/self/task/{os.getpid()}/children"  # no other thread runs then
    try:
        with open(task) as fh:
            pids = [int(p) for p in fh.read().split()]
    except OSError:
        pids = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        reap(pid)


def _wait_child_exit() -> None:
    """Block until a child of ours (the container's process the driver waits for) has exited, without
    reaping it: ``driver.wait()`` does, and nothing of the driver runs here before."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        pass  # none: the driver's wait() tells


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


def _daemonize(container_dir: str, release_stdio: bool = True) -> None:
    """Become the detached shim: own session, no signals from a terminal, our own stdio
    (standard error only, with ``release_stdio`` False: the starter answers the daemon on the
    standard input and output, and the shim lets go of them once it has forked it).

    With system calls only: the shim keeps every page it writes (see :class:`Shim`), so not
    even the logging is set up here (:func:`_ensure_logging` does, when the shim first logs).
    """
    try:
        os.setsid()
    except PermissionError:  # a session leader already (the fork server's child)
        pass
    try:  # what ps -o comm and top show (a fork server's shim has its command line)
        fd = os.open("/proc/self/comm", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, ("shim " + os.path.basename(container_dir)[:10]).encode())
        finally:
            os.close(fd)
    except OSError:
        pass
    # _signal: signal.signal's wrapper converts to and from enums.
    _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
    _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)
    os.chdir("/")  # hold no mount busy
    null = os.open(os.devnull, os.O_RDWR)
    errlog = os.open(os.path.join(container_dir, protocol.LOG_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    # stdout is the pipe the daemon reads the launcher's line from: the shim
    # must let go of it, or the daemon would wait for its EOF forever.
    if release_stdio:
        os.dup2(null, 0)
        os.dup2(null, 1)
    os.dup2(errlog, 2)
    os.close(null)
    os.close(errlog)


_logging_ready = False


def prepare_logging() -> None:
    """Set a shim's logging up ahead, in the fork server before it forks any (see
    :func:`_ensure_logging`): the handler writes to standard error, which each shim points at its
    own log file first, and a shim forked from a process whose loggers are set no longer sets them
    itself (each level set walks every logger, and a shim keeps each page it writes: half a
    millisecond in the starter and again at the exit)."""
    _ensure_logging()


def _ensure_logging() -> None:
    """Set the logging up (to stderr, the shim's log), once; until then warnings go out bare."""
    global _logging_ready
    if not _logging_ready:
        _logging_ready = True
        setup_logging(stream=sys.stderr)


def _start(
    container_dir: str,
    fd_map: dict[int, int] | None,
    inherited: set[int],
    result_fd: int,
    ack_fd: int,
    ends: Ends,
) -> int:
    """The starter's life (a child of the shim): load ``shim.json``, then :meth:`Starter.run`."""
    try:
        launch = Launch.load(container_dir)
        if fd_map is not None:
            for spec in launch.attach:
                spec["fd"] = fd_map.get(int(spec["fd"]), -1)
        keep = {int(spec["fd"]) for spec in launch.attach}
        if not keep <= inherited:
            raise ShimError(f"attach descriptors {sorted(keep - inherited)} were not passed to the shim")
    except Exception as exc:  # noqa: BLE001 - reported as the result
        LOG.info("no start for %s: %s", container_dir, exc)
        try:
            os.write(result_fd, protocol.encode_line({"Error": _message(exc)}))
        except OSError:
            pass
        return 0
    for fd in inherited - keep:  # the shim serves the attach connections; the rest is nobody's
        try:
            os.close(fd)
        except OSError:
            pass
    starter = Starter(launch, result_fd, ack_fd, ends)
    try:
        return starter.run()
    except BaseException as exc:
        if not starter.reported:  # the daemon must not wait for an answer that never comes
            try:
                os.write(result_fd, protocol.encode_line({"Error": f"the shim's starter failed: {_message(exc)}"}))
            except OSError:
                pass
        raise


def main(argv: list[str]) -> int:
    """``python -S -m engine.shim <container dir>``: the launcher, run directly."""
    if len(argv) != 1:
        sys.stderr.write("usage: python -S -m engine.shim <container dir>\n")
        return 2
    os.write(1, protocol.ACK)  # the launcher runs (protocol)
    return launch(os.path.abspath(argv[0]))


def launch(container_dir: str, fd_map: dict[int, int] | None = None) -> int:
    """The launcher run directly (``python -S -m engine.shim <dir>``): fork the shim, print the
    start result as one JSON line on stdout.

    The shim is forked first, before anything here loads or writes much: what
    the launcher wrote before the fork would be the shim's own memory once the
    launcher exits. The shim's starter loads ``shim.json`` and reports the
    result on a pipe; the launcher prints it and passes the daemon's
    acknowledgement back. Every descriptor but 0-2 is the shim's: the attach
    connections ``shim.json`` names are served, the others closed.
    :param fd_map: the daemon's numbers of those connections -> ours, when
    they are not at the same numbers.
    """
    inherited = _open_fds() - {0, 1, 2}
    if not os.path.isfile(os.path.join(container_dir, protocol.CONFIG_FILE)):
        _print({"Error": f"no {protocol.CONFIG_FILE} in {container_dir}"})  # the shim could not even log
        return 0
    read_fd, write_fd = os.pipe()
    ack_r, ack_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_fd)
            os.close(ack_w)
            status = _become_shim(container_dir, fd_map, inherited, write_fd, ack_r, from_fork_server=False)
        except BaseException:  # noqa: BLE001 - the shim must not unwind into the launcher's code
            try:
                _ensure_logging()
                LOG.exception("the shim failed")
            except BaseException:  # noqa: BLE001
                pass
        finally:
            logging.shutdown()
            os._exit(status)
    os.close(write_fd)
    os.close(ack_r)
    for fd in inherited:  # the shim has them; the launcher's copies would hold the connections open
        try:
            os.close(fd)
        except OSError:
            pass
    line = _await_result(read_fd)
    os.close(read_fd)
    try:
        result = json.loads(line) if line else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        log = os.path.join(container_dir, protocol.LOG_FILE)
        result = {"Error": f"the shim exited before the container started (see {log})"}
    try:
        _print(result)
        # Pass the daemon's acknowledgement of a start on to the shim; without
        # it (EOF, timeout) the shim stops the container. The daemon always
        # talks over a socket: a launcher run by hand (a terminal, /dev/null)
        # confirms its own start.
        if not result.get("Error") and (not _stdin_is_socket() or _await_ack(0, _ack_timeout(container_dir))):
            os.write(ack_w, protocol.ACK)
    except OSError:  # the daemon is gone; the shim learns it from the pipe
        pass
    finally:
        os.close(ack_w)
    return 0


def run_forked(container_dir: str, fd_map: dict[int, int]) -> int:
    """The shim fork server's child: become the container's shim, in this very process.

    No launcher process between the fork server and the shim: what a launcher
    writes before it forks the shim would be the shim's own memory once the
    launcher exits (about 250 kB). The starter answers the daemon on the
    standard input and output (the fork server put the daemon's connection
    there), as :func:`launch` would; the fork server's template is the
    shim's parent, and ignores SIGCHLD: the kernel reaps the shim.
    """
    inherited = _open_fds() - {0, 1, 2}
    if not os.path.isfile(os.path.join(container_dir, protocol.CONFIG_FILE)):
        _print({"Error": f"no {protocol.CONFIG_FILE} in {container_dir}"})
        return 0
    try:
        return _become_shim(container_dir, fd_map, inherited, 1, 0, from_fork_server=True)
    except BaseException:  # noqa: BLE001 - never unwind into the fork server's loop
        try:
            _ensure_logging()
            LOG.exception("the shim failed")
        except BaseException:  # noqa: BLE001
            pass
        return 1


def _become_shim(
    container_dir: str,
    fd_map: dict[int, int] | None,
    inherited: set[int],
    result_fd: int,
    ack_fd: int,
    from_fork_server: bool,
) -> int:
    """Daemonize and run the shim; its starter reports on ``result_fd`` and reads the
    acknowledgement from ``ack_fd`` (the launcher's pipes, or the daemon's connection)."""
    _daemonize(container_dir, release_stdio=not from_fork_server)
    shim = Shim(container_dir, inherited)
    return shim.run(
        lambda ends: _start(container_dir, fd_map, inherited, result_fd, ack_fd, ends),
        starter_fds=() if from_fork_server else (result_fd, ack_fd),
        release_stdio=from_fork_server,
    )


def _ack_timeout(container_dir: str) -> float:
    """How long the launcher waits for the daemon's acknowledgement (``shim.json``'s ``ack_timeout``)."""
    try:
        config = protocol.read_json(os.path.join(container_dir, protocol.CONFIG_FILE)) or {}
        return float(config.get("ack_timeout") or protocol.ACK_TIMEOUT)
    except (OSError, ValueError, TypeError):
        return protocol.ACK_TIMEOUT
