"""The daemon's side of a container's shim: start it, talk to it, read what it left.

* :func:`start_shim` writes ``shim.json`` and runs the launcher
  (``python -S -m engine.shim <dir>``, or a fork of a :class:`ForkServer`);
  it returns the start result or raises
  :class:`~engine.drivers.exec.ExecStartError` with the driver's message.
* :class:`ShimClient` speaks the ``shim.sock`` protocol
  (:mod:`engine.shim.protocol`): ``state``, ``wait``, ``resize`` and
  ``attach``, the latter giving an :class:`AttachConnection`.
* :func:`prepare_attach` makes a connection that is attached before the
  container starts (a socket pair whose other end the launcher inherits),
  so that ``docker run`` loses none of a fast container's output;
  :func:`start_shim` also takes waiting attaches (``connect(client)``
  objects) and hands each such a connection before the container starts.
* :func:`read_state`, :func:`read_exit` and :func:`shim_alive` read the
  files the shim leaves, for a daemon that restarts while shims run on.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import engine
from engine.drivers.exec import ExecStartError
from engine.errors import Conflict, HostError, Unavailable
from engine.shim import protocol
from engine.shim.forkserver import MAX_FDS, READY
from engine.sys.fs import atomic_write

LOG = logging.getLogger(__name__)

#: How long :func:`start_shim` waits for the launcher's line by default.
START_TIMEOUT = 60.0
#: How long a request other than ``wait`` may take.
REQUEST_TIMEOUT = 10.0


class ShimUnavailable(Unavailable, ConnectionError):
    """No shim answers for the container (it exited, or never ran).

    Also a :class:`ConnectionError`, so code that guards socket calls with
    ``except OSError`` handles a vanished shim the same way.
    """

    template = "the container's shim is not running"


# ----------------------------------------------------------------------
# files


def read_state(container_dir: str) -> dict[str, Any] | None:
    """``state.json`` (``Pid``, ``ShimPid``, ``StartedAt``), None if the shim never started."""
    return protocol.read_json(os.path.join(container_dir, protocol.STATE_FILE))


def read_exit(container_dir: str) -> dict[str, Any] | None:
    """``exit.json`` (``ExitCode``, ``FinishedAt``, ``OOMKilled``, ``Error``), None while running."""
    return protocol.read_json(os.path.join(container_dir, protocol.EXIT_FILE))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead, merely not reaped yet.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def shim_alive(container_dir: str) -> bool:
    """Whether the container's shim runs: its PID is alive AND its socket answers as that PID.

    Both, because a PID can be reused by another process after a reboot or
    a long time, and a socket file can outlive its shim.
    """
    state = read_state(container_dir)
    if not state or not _pid_alive(int(state.get("ShimPid", 0))):
        return False
    try:
        answer = ShimClient(container_dir, timeout=2.0).state()
    except (OSError, Unavailable, ValueError):
        return False
    return answer.get("ShimPid") == state.get("ShimPid")


# ----------------------------------------------------------------------
# attach


class AttachConnection:
    """One attached connection: stdin frames out, output frames in.

    ``send_stdin``/``close_stdin``/``resize`` may be called from another
    thread than the one iterating :meth:`frames`.
    """

    def __init__(self, sock: socket.socket, stdin: bool, stdout: bool, stderr: bool) -> None:
        self.sock = sock
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        #: The shim's end before start (see :func:`prepare_attach`); None once handed over.
        self._peer: socket.socket | None = None

    def send_stdin(self, data: bytes) -> None:
        """Send ``data`` to the container's stdin (in frames of at most 1 MiB)."""
        view = memoryview(data)
        while view:
            chunk = view[: protocol.MAX_INPUT_FRAME]
            self.sock.sendall(protocol.frame(protocol.INPUT_STDIN, bytes(chunk)))
            view = view[len(chunk) :]

    def close_stdin(self) -> None:
        """This client's stdin ended (with ``stdin_once`` the container's stdin is closed)."""
        self.sock.sendall(protocol.frame(protocol.INPUT_CLOSE_STDIN, b""))

    def resize(self, h: int, w: int) -> None:
        """Resize the container's tty."""
        self.sock.sendall(protocol.frame(protocol.INPUT_RESIZE, json.dumps({"h": h, "w": w}).encode()))

    def _recv_exact(self, size: int) -> bytes | None:
        data = bytearray()
        while len(data) < size:
            chunk = self.sock.recv(size - len(data), socket.MSG_WAITALL)
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def _read_frame(self) -> tuple[int, bytes] | None:
        header = self._recv_exact(protocol.HEADER.size)
        if header is None:
            return None
        stream, length = protocol.HEADER.unpack(header)
        payload = self._recv_exact(length) if length else b""
        if payload is None:
            return None
        return stream, payload

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """The output as ``(stream, data)``: 1 stdout, 2 stderr, and last ``(3, exit JSON)``.

        Frames are read exactly (no read-ahead), so :meth:`fileno` is a
        faithful readiness source between frames. If the shim dies without
        an exit frame, the iteration just ends: read ``exit.json`` then.
        """
        while True:
            try:
                frame = self._read_frame()
            except (ConnectionResetError, BrokenPipeError):
                return
            if frame is None:
                return
            if frame[0] == protocol.STREAM_ATTACHED:
                continue
            yield frame
            if frame[0] == protocol.STREAM_EXIT:
                return

    def fileno(self) -> int:
        """The socket's descriptor (for select/poll)."""
        return self.sock.fileno()

    def close(self) -> None:
        """Close the connection; the container is not affected."""
        self.sock.close()
        if self._peer is not None:
            self._peer.close()
            self._peer = None

    def __enter__(self) -> AttachConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare_attach(stdin: bool, stdout: bool, stderr: bool) -> AttachConnection:
    """A connection attached from the container's first byte: pass it to :func:`start_shim`.

    The shim inherits the other end of a socket pair through the launcher,
    so nothing the container writes before the daemon could connect to
    ``shim.sock`` is missed (Docker attaches ``docker run``'s streams before
    it starts the container). If the start fails, reading it gives EOF.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    conn = AttachConnection(ours, stdin, stdout, stderr)
    conn._peer = theirs
    return conn


# ----------------------------------------------------------------------
# the socket


class ShimClient:
    """Requests to one container's shim over ``shim.sock``.

    :param container_dir: the container's directory.
    :param timeout: seconds a request (other than ``wait``) may take.
    """

    def __init__(self, container_dir: str, timeout: float = REQUEST_TIMEOUT) -> None:
        self.container_dir = container_dir
        self.socket_path = os.path.join(container_dir, protocol.SOCKET_FILE)
        self.timeout = timeout

    def _connect(self, request: dict[str, Any], timeout: float | None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            protocol.connect_unix(sock, self.socket_path)
            sock.sendall(protocol.encode_line(request))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise ShimUnavailable(f"the shim of {self.container_dir} is not running ({exc.strerror})") from exc
        except BaseException:
            sock.close()
            raise
        return sock

    def _request(self, request: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        sock = self._connect(request, timeout)
        try:
            data = bytearray()
            while b"\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            sock.close()
        line = bytes(data).split(b"\n", 1)[0]
        if not line:
            raise ShimUnavailable(f"the shim of {self.container_dir} closed the connection without an answer")
        return json.loads(line)

    def state(self) -> dict[str, Any]:
        """``{"Pid", "ShimPid", "StartedAt", "Running"}`` (and the exit fields once it exited).

        :raises ShimUnavailable: no shim answers.
        """
        return self._request({"op": "state"}, self.timeout)

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until the container exits; its exit record.

        If the shim is gone already (or goes away without answering), the
        record comes from ``exit.json``.

        :raises TimeoutError: the container still runs after ``timeout`` seconds.
        :raises ShimUnavailable: no shim and no ``exit.json``.
        """
        try:
            return self._request({"op": "wait"}, timeout)
        except (ShimUnavailable, ConnectionResetError, ValueError):
            record = read_exit(self.container_dir)
            if record is None:
                raise
            return record
        except TimeoutError as exc:
            raise TimeoutError(f"container in {self.container_dir} still running after {timeout}s") from exc

    def resize(self, h: int, w: int) -> None:
        """Resize the container's tty.

        :raises HostError: the shim refused (no tty, bad size).
        """
        answer = self._request({"op": "resize", "h": int(h), "w": int(w)}, self.timeout)
        if not answer.get("ok"):
            raise HostError(answer.get("Error") or "resize failed")

    def attach(self, stdin: bool, stdout: bool, stderr: bool) -> AttachConnection:
        """Attach to the running container's streams from now on.

        Returns once the shim has taken the attach, so all later output arrives.

        :raises ShimUnavailable: no shim answers.
        """
        sock = self._connect({"op": "attach", "stdin": stdin, "stdout": stdout, "stderr": stderr}, self.timeout)
        conn = AttachConnection(sock, stdin, stdout, stderr)
        try:
            # Returns once the shim took the attach: no output after this is missed.
            ack = conn._read_frame()
        except BaseException:
            sock.close()
            raise
        if ack is None or ack[0] != protocol.STREAM_ATTACHED:
            sock.close()
            raise ShimUnavailable(f"the shim of {self.container_dir} did not accept the attach")
        sock.settimeout(None)  # output may be quiet for hours
        return conn


# ----------------------------------------------------------------------
# start


def default_pythonpath(driver_module: str) -> list[str]:
    """The directories holding the ``engine`` package and ``driver_module``'s top package."""
    paths = [os.path.dirname(os.path.dirname(os.path.abspath(engine.__file__)))]
    spec = importlib.util.find_spec(driver_module.split(".")[0])
    if spec is not None and spec.origin:
        top = os.path.dirname(spec.origin)
        if spec.submodule_search_locations:  # a package: its parent holds it
            top = os.path.dirname(top)
        if top not in paths:
            paths.append(top)
    return paths


def start_shim(
    container_dir: str,
    spec: dict[str, Any],
    python: str = sys.executable,
    pythonpath: list[str] | None = None,
    *,
    attachers: Sequence[Any] = (),
    timeout: float = START_TIMEOUT,
    forkserver: ForkServer | None = None,
) -> dict[str, Any]:
    """Start the container's shim and, through it, the container.

    :param container_dir: the container's directory (``shim.json``, the
        socket and the state files go there).
    :param spec: ``shim.json``: ``command``, ``driver`` (``module``,
        ``class``, ``home``), ``tty``, ``open_stdin``, ``stdin_once``, ``log``
        (``path``, ``max_size``, ``max_file``; None for no log).
    :param python: the interpreter that runs the shim.
    :param pythonpath: where ``engine`` and the driver's package are found;
        by default where this process found them.
    :param attachers: attaches that must see the container from its first
        byte. Each is an :class:`AttachConnection` from :func:`prepare_attach`,
        or an object with ``stdin``, ``stdout``, ``stderr`` and
        ``connect(client)``: before anything else, ``connect`` is called with
        a client whose ``attach(stdin, stdout, stderr)`` returns such a
        connection. If the start fails, every one of them reads EOF.
    :param timeout: seconds to wait for the start result.
    :param forkserver: launch through this warm process (see
        :mod:`engine.shim.forkserver`) rather than a new interpreter; when
        it cannot serve, the launcher runs directly.
    :returns: ``{"ShimPid", "Pid", "StartedAt"}``.
    :raises ExecStartError: the driver could not start the container (its message).
    :raises Conflict: a shim already runs for ``container_dir``.
    :raises HostError: the launcher died, said nothing, or took longer than ``timeout``.
    """
    conns = [_connect_attacher(item) for item in attachers]
    try:
        return _start(container_dir, spec, python, pythonpath, conns, timeout, forkserver)
    finally:
        # The shim holds its ends now (or nobody does, and the attaches read EOF).
        for conn in conns:
            if conn._peer is not None:
                conn._peer.close()
                conn._peer = None


class _PreAttached:
    """What a waiting attach's ``connect`` gets: ``attach()`` returns the prepared connection."""

    def __init__(self, conn: AttachConnection) -> None:
        self.conn = conn

    def attach(self, stdin: bool, stdout: bool, stderr: bool) -> AttachConnection:  # noqa: ARG002
        return self.conn


def _connect_attacher(item: Any) -> AttachConnection:
    if isinstance(item, AttachConnection):
        if item._peer is None:
            raise ValueError("attach connections must come from prepare_attach() and be used once")
        return item
    conn = prepare_attach(bool(item.stdin), bool(item.stdout), bool(item.stderr))
    item.connect(_PreAttached(conn))
    return conn


def _shim_env(pythonpath: list[str]) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "PYTHONPATH": os.pathsep.join(pythonpath),
    }


def _start(
    container_dir: str,
    spec: dict[str, Any],
    python: str,
    pythonpath: list[str] | None,
    conns: list[AttachConnection],
    timeout: float,
    forkserver: ForkServer | None,
) -> dict[str, Any]:
    if shim_alive(container_dir):
        # Checked before shim.json is replaced; the launcher checks again.
        raise Conflict(f"a shim is already running for {container_dir}")
    deadline = time.monotonic() + timeout
    peers = [conn._peer for conn in conns if conn._peer is not None]
    config = dict(spec)
    config["attach_fds"] = [
        {"fd": peer.fileno(), "stdin": conn.stdin, "stdout": conn.stdout, "stderr": conn.stderr}
        for conn, peer in zip(conns, peers)
    ]
    # The shim waits for our acknowledgement a little longer than we wait for its result.
    config["ack_timeout"] = timeout + 10
    atomic_write(os.path.join(container_dir, protocol.CONFIG_FILE), json.dumps(config, indent=1).encode(), mode=0o600)
    launching = forkserver.launch(container_dir, peers) if forkserver is not None else None
    if launching is not None:
        try:
            acked, answer, timed_out = launching.answer(deadline)
        except OSError:
            launching.close()
            raise
        if not acked and not timed_out:
            # No launcher: the server died (or failed) before forking one.
            LOG.warning("the shim fork server dropped a request; launching directly")
            launching.close()
            launching = None
            deadline = time.monotonic() + timeout  # the direct launch gets its whole time
        elif not acked:
            # It never took the request: stop it, so that the request can
            # never start a container after this start has failed.
            launching.kill_server()
    if launching is None:
        launching = _launch_directly(container_dir, spec, python, pythonpath, peers)
        try:
            acked, answer, timed_out = launching.answer(deadline)
        except OSError:
            launching.stop()
            launching.close()
            raise
    confirmed = False
    try:
        line = answer.split(b"\n", 1)[0].strip()
        try:
            result = json.loads(line) if line else None
        except ValueError:
            result = None
        if not isinstance(result, dict) and timed_out:
            # Closing our end tells the launcher nobody waits: its shim stops the container.
            launching.stop()
            raise HostError(f"the shim for {container_dir} did not report a start within {timeout:g}s")
        if not isinstance(result, dict):
            detail = launching.detail() or answer
            text = detail.decode(errors="replace").strip()[-2000:]
            raise HostError(
                f"the shim launcher {launching.ended()} without a start result" + (f": {text}" if text else "")
            )
        if result.get("Error"):
            raise ExecStartError(result["Error"])
        if not launching.acknowledge():
            raise HostError(
                f"the shim launcher for {container_dir} went away before the start was confirmed "
                "(the shim stops the container)"
            )
        confirmed = True
        LOG.debug("shim for %s started: %s", container_dir, result)
        return result
    finally:
        # A confirmed launcher still has to pass the acknowledgement on:
        # never kill it then, however slow it is.
        launching.close(kill=not confirmed)


class _Launching:
    """A launcher at work, seen from the daemon: our ends of its stdin+stdout and its stderr.

    :param out: its stdin and stdout (one socket): ACK, the result line; our acknowledgement.
    :param err: its stderr.
    :param proc: the launcher's process when we started it ourselves.
    :param server: the fork server that forked it, else None.
    """

    def __init__(
        self,
        out: socket.socket,
        err: socket.socket,
        proc: subprocess.Popen | None = None,
        server: subprocess.Popen | None = None,
    ) -> None:
        self.out = out
        self.err = err
        self.proc = proc
        self.server = server

    def answer(self, deadline: float) -> tuple[bool, bytes, bool]:
        """``(it runs, the output, timed out)``, see :func:`_read_answer`."""
        return _read_answer(self.out, deadline)

    def acknowledge(self) -> bool:
        """Confirm the start (the shim keeps the container); whether it could be sent."""
        try:
            self.out.sendall(protocol.ACK)
            return True
        except OSError:
            return False

    def detail(self) -> bytes:
        """What it wrote on stderr (after a failure)."""
        return _drain(self.err)

    def ended(self) -> str:
        """How it ended, for an error message."""
        if self.proc is None:
            return "ended"
        try:
            return f"exited with status {self.proc.wait(timeout=2)}"
        except subprocess.TimeoutExpired:
            return "stopped answering"

    def stop(self) -> None:
        """Give up on it (closing our ends tells it too); our own launcher is killed."""
        if self.proc is not None:
            self.proc.kill()

    def kill_server(self) -> None:
        """The fork server never took the request: kill it with its queue."""
        if self.server is not None:
            LOG.error("the shim fork server %d did not answer in time; killing it", self.server.pid)
            self.server.kill()

    def close(self, kill: bool = True) -> None:
        """Let go of it; our own launcher is collected, and killed after 5 s only if ``kill``
        (else a slow one is left to :mod:`subprocess`, which collects it later)."""
        self.out.close()
        self.err.close()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                if kill:
                    self.proc.kill()
                    self.proc.wait()


def _launch_directly(
    container_dir: str, spec: dict[str, Any], python: str, pythonpath: list[str] | None, peers: list[socket.socket]
) -> _Launching:
    """``python -S -m engine.shim <dir>``: the launcher in a new interpreter."""
    if pythonpath is None:
        pythonpath = default_pythonpath(spec["driver"]["module"])
    # -S: no site (its imports cost RSS in every shim); -P: nothing from the
    # working directory shadows the engine's modules.
    argv = [python, "-S", "-P", "-m", "engine.shim", container_dir]
    out, out_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    err, err_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=out_theirs,
            stdout=out_theirs,
            stderr=err_theirs,
            env=_shim_env(pythonpath),
            cwd="/",
            start_new_session=True,
            close_fds=True,
            pass_fds=[peer.fileno() for peer in peers],
        )
    except OSError as exc:
        out.close()
        err.close()
        raise HostError(f"cannot run the shim ({python}): {exc.strerror}") from exc
    finally:
        out_theirs.close()  # the launcher holds the only other ends: EOF when it is done
        err_theirs.close()
    return _Launching(out, err, proc=proc)


def _recv_until(sock: socket.socket, deadline: float, enough: Callable[[bytearray], bool]) -> tuple[bytes, bool]:
    """Receive until ``enough(data)``, EOF or ``deadline`` (monotonic); ``(data, reached EOF)``."""
    data = bytearray()
    while not enough(data):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            return bytes(data), True
        data += chunk
    return bytes(data), False


def _read_answer(sock: socket.socket, deadline: float) -> tuple[bool, bytes, bool]:
    """A fork-server launcher's answer: ``(acknowledged, output, timed out)``.

    The launcher's first byte (:data:`~engine.shim.protocol.ACK`) says it
    exists; then comes the start result, read up to its first line or EOF.
    Closing the socket afterwards is how a launcher learns that nobody waits
    any more (its shim then stops the container).
    """
    data, eof = _recv_until(sock, deadline, lambda d: b"\n" in d)
    acked = data[:1] == protocol.ACK
    return acked, data[1:] if acked else data, not eof and b"\n" not in data


def _drain(sock: socket.socket, timeout: float = 1.0) -> bytes:
    """What ``sock`` holds until EOF (at most 1 MiB), waiting at most ``timeout`` (a failed launcher's stderr)."""
    try:
        return _recv_until(sock, time.monotonic() + timeout, lambda d: len(d) >= 1 << 20)[0]
    except OSError:
        return b""


class ForkServer:
    """The daemon's side of :mod:`engine.shim.forkserver`: one warm launcher process.

    Started at the first :meth:`launch` and again after it died; it ends
    when :meth:`close` (or the daemon's death) closes the control socket.
    Thread-safe: requests from several threads go out one message each.
    Whenever it cannot serve a request without doubt that no launcher ran
    for it (it is gone, or does not take the request within
    :attr:`SEND_TIMEOUT`), :meth:`launch` returns None and the caller
    launches directly.

    :param python: the interpreter.
    :param pythonpath: where ``engine`` and the preloaded modules are found.
    :param preload: modules to import before serving (the exec driver's).
    """

    #: Seconds to wait for the fork server's imports.
    READY_TIMEOUT = 10.0
    #: Seconds a request may wait to be taken (a full queue: the server is stuck).
    SEND_TIMEOUT = 2.0
    #: After a failed start, launch directly for this long before trying again.
    RETRY_AFTER = 60.0

    def __init__(
        self, python: str = sys.executable, pythonpath: list[str] | None = None, preload: Sequence[str] = ()
    ) -> None:
        self.python = python
        self.preload = list(preload)
        self.pythonpath = (
            pythonpath if pythonpath is not None else default_pythonpath(self.preload[0] if self.preload else "engine")
        )
        self._lock = threading.Lock()
        self._ctl: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._failed_at = 0.0
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The fork server's PID while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def launch(self, container_dir: str, peers: Sequence[socket.socket]) -> _Launching | None:
        """Have a launcher forked for ``container_dir``.

        :param peers: the attach connections ``shim.json`` names by their numbers here.
        :returns: the launcher at work, or None when the fork server cannot
            take the request (the caller launches directly).
        """
        if len(peers) + 2 > MAX_FDS:
            return None
        out, out_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        err, err_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        server = None
        try:
            request = json.dumps({"dir": container_dir, "fds": [p.fileno() for p in peers]}).encode()
            server = self._send(request, [out_theirs.fileno(), err_theirs.fileno()] + [p.fileno() for p in peers])
        finally:
            out_theirs.close()  # the launcher holds the only other ends: EOF when it is done
            err_theirs.close()
            if server is None:
                out.close()
                err.close()
        if server is None:
            return None
        return _Launching(out, err, server=server)

    def close(self) -> None:
        """Stop the fork server (it exits at the control socket's EOF); launched shims go on."""
        with self._lock:
            self._closed = True
            self._discard()

    # ------------------------------------------------------------------

    def _send(self, request: bytes, fds: list[int]) -> subprocess.Popen | None:
        """Send ``request`` to a live fork server (started if needed); the one that took it, if any."""
        with self._lock:
            for _attempt in range(2):
                if self._closed:
                    return None
                if self._proc is not None and self._proc.poll() is not None:
                    LOG.warning("the shim fork server exited (%s); starting another", self._proc.returncode)
                    self._discard()
                if self._ctl is None:
                    if self._failed_at and time.monotonic() - self._failed_at < self.RETRY_AFTER:
                        return None
                    try:
                        self._spawn()
                    except (OSError, HostError) as exc:
                        LOG.warning(
                            "the shim fork server could not start (shims start directly for %gs): %s",
                            self.RETRY_AFTER,
                            exc,
                        )
                        self._failed_at = time.monotonic()
                        return None
                assert self._ctl is not None and self._proc is not None
                try:
                    # A datagram of a SOCK_SEQPACKET socket: queued whole or not at all.
                    socket.send_fds(self._ctl, [request], fds)
                    return self._proc
                except TimeoutError:
                    LOG.error("the shim fork server %d takes no requests; stopping it", self._proc.pid)
                    self._proc.kill()
                    self._discard()
                    return None
                except OSError as exc:  # it died: start another once
                    LOG.warning("the shim fork server is gone (%s); starting another", exc)
                    self._discard()
            return None

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [self.python, "-S", "-P", "-m", "engine.shim.forkserver", str(theirs.fileno()), *self.preload]
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=_shim_env(self.pythonpath),
                cwd="/",
                start_new_session=True,
                close_fds=True,
                pass_fds=[theirs.fileno()],
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self._ctl = ours
        ours.settimeout(self.READY_TIMEOUT)
        try:
            ready = ours.recv(64)
        except OSError as exc:
            self._proc.kill()
            self._discard()
            raise HostError(f"no answer from the shim fork server: {exc}") from exc
        if ready != READY:
            self._discard()
            raise HostError("the shim fork server exited before it was ready (see the daemon's log)")
        ours.settimeout(self.SEND_TIMEOUT)
        LOG.debug("shim fork server %d ready", self._proc.pid)

    def _discard(self) -> None:
        """Close the control socket and collect the process (it exits at the EOF)."""
        ctl, self._ctl = self._ctl, None
        proc, self._proc = self._proc, None
        if ctl is not None:
            ctl.close()
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
