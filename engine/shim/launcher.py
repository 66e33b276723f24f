"""Starting a container's shim: directly, or through the warm fork server.

* :func:`start_shim` writes ``shim.json`` and runs the launcher
  (``python -S -m engine.shim <dir>``, or a fork of a :class:`ForkServer`);
  it returns the start result or raises
  :class:`~engine.drivers.exec.ExecStartError` with the driver's message.
  It also takes waiting attaches (``connect(client)`` objects, or
  connections from :func:`~engine.shim.client.prepare_attach`) and hands
  each a connection before the container starts.
* :class:`ForkServer` is the daemon's side of :mod:`engine.shim.forkserver`;
  it also forks the exec driver's helpers (``ExecDriver.helpers``).
* :class:`ShimLauncher` is what the daemon holds: one fork server, preloaded
  with the exec driver, and :meth:`ShimLauncher.start` for each container.

Talking to a shim once it runs is :mod:`engine.shim.client`'s.
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
from collections.abc import Callable, Sequence
from typing import Any

import engine
from engine.drivers.exec import ExecStartError
from engine.errors import Conflict, HostError
from engine.shim import protocol
from engine.shim.client import AttachConnection, prepare_attach, shim_alive
from engine.shim.forkserver import MAX_FDS, READY
from engine.sys.fs import atomic_write

LOG = logging.getLogger(__name__)

#: How long :func:`start_shim` waits for the launcher's line by default.
START_TIMEOUT = 60.0


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
            conn.release_peer()


class _PreAttached:
    """What a waiting attach's ``connect`` gets: ``attach()`` returns the prepared connection."""

    def __init__(self, conn: AttachConnection) -> None:
        self.conn = conn

    def attach(self, stdin: bool, stdout: bool, stderr: bool) -> AttachConnection:  # noqa: ARG002
        return self.conn


def _connect_attacher(item: Any) -> AttachConnection:
    if isinstance(item, AttachConnection):
        if item.peer is None:
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
    peers = [conn.peer for conn in conns if conn.peer is not None]
    config = dict(spec)
    config["attach_fds"] = [
        {"fd": peer.fileno(), "stdin": conn.stdin, "stdout": conn.stdout, "stderr": conn.stderr}
        for conn, peer in zip(conns, peers)
    ]
    # The shim waits for our acknowledgement a little longer than we wait for its result.
    config["ack_timeout"] = timeout + 10
    # Read by the starter a moment later, and made again at every start: not fsynced.
    atomic_write(
        os.path.join(container_dir, protocol.CONFIG_FILE),
        json.dumps(config).encode(),
        mode=0o600,
        durable=False,
    )
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
            stdin=out_theirs.fileno(),
            stdout=out_theirs.fileno(),
            stderr=err_theirs.fileno(),
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

    def spawn(self, target: str, args: Sequence[Any], fds: Sequence[int], stderr: int) -> bool:
        """Fork a driver's helper (:class:`engine.drivers.exec.HelperSpawner`): ``target(args, fds)``.

        :returns: whether the fork server took the request (False: it cannot
            serve, and the caller starts its helper another way).
        """
        if len(fds) + 1 > MAX_FDS:
            return False
        request = json.dumps({"call": target, "args": list(args), "fds": list(fds)}).encode()
        return self._send(request, [stderr, *fds]) is not None

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


class ShimLauncher:
    """How the daemon starts shims: through one warm :class:`ForkServer`, directly when it cannot serve.

    :param preload: modules the fork server imports before serving (the exec driver's module).
    :param python: the interpreter that runs the shims.
    :param pythonpath: where ``engine`` and the preloaded modules are found; by
        default where this process found them (computed once, here).
    """

    def __init__(
        self, preload: Sequence[str] = (), python: str = sys.executable, pythonpath: list[str] | None = None
    ) -> None:
        self.forkserver = ForkServer(python, pythonpath, preload)

    def start(self, container_dir: str, spec: dict[str, Any], attachers: Sequence[Any] = ()) -> dict[str, Any]:
        """Start the container's shim and the container: :func:`start_shim` through the fork server.

        :returns: ``{"ShimPid", "Pid", "StartedAt"}``.
        :raises ExecStartError: the driver could not start the container (its message).
        :raises Conflict: a shim already runs for ``container_dir``.
        :raises HostError: the launcher died, said nothing, or took too long.
        """
        server = self.forkserver
        return start_shim(container_dir, spec, server.python, server.pythonpath, attachers=attachers, forkserver=server)

    def close(self) -> None:
        """Stop the fork server; the shims it launched go on."""
        self.forkserver.close()
