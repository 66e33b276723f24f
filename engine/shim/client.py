"""The daemon's side of a running container's shim: talk to it, read what it left.

* :class:`ShimClient` speaks the ``shim.sock`` protocol
  (:mod:`engine.shim.protocol`): ``state``, ``wait``, ``resize`` and
  ``attach``, the latter giving an :class:`AttachConnection`.
* :func:`prepare_attach` makes a connection that is attached before the
  container starts (a socket pair whose other end the launcher inherits),
  so that ``docker run`` loses none of a fast container's output.
* :func:`read_state`, :func:`read_exit` and :func:`shim_alive` read the
  files the shim leaves, for a daemon that restarts while shims run on.

Starting a shim is :mod:`engine.shim.launcher`'s.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from engine.errors import HostError, Unavailable
from engine.shim import protocol
from engine.sys.proc import pid_alive

LOG = logging.getLogger(__name__)

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


def shim_alive(container_dir: str) -> bool:
    """Whether the container's shim runs its container: its PID is alive AND its socket answers
    as that PID, and it has not recorded the container's exit.

    Both, because a PID can be reused by another process after a reboot or
    a long time, and a socket file can outlive its shim. A shim that wrote
    ``exit.json`` only releases the container's cgroups before it ends.
    """
    state = read_state(container_dir)
    if not state or not pid_alive(int(state.get("ShimPid", 0))):
        return False
    record = read_exit(container_dir)
    if record is not None and record.get("ShimPid") == state.get("ShimPid"):
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

    def __init__(
        self, sock: socket.socket, stdin: bool, stdout: bool, stderr: bool, peer: socket.socket | None = None
    ) -> None:
        self.sock = sock
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        #: The shim's end of a connection made before start (see :func:`prepare_attach`), for the
        #: launcher to hand on; None once :meth:`release_peer` let it go, and for a live attach.
        self.peer = peer

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

    def release_peer(self) -> None:
        """Close our copy of the shim's end (the launcher holds it now, or nobody: then we read EOF)."""
        if self.peer is not None:
            self.peer.close()
            self.peer = None

    def close(self) -> None:
        """Close the connection; the container is not affected."""
        self.sock.close()
        self.release_peer()

    def __enter__(self) -> AttachConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare_attach(stdin: bool, stdout: bool, stderr: bool) -> AttachConnection:
    """A connection attached from the container's first byte: pass it to
    :func:`~engine.shim.launcher.start_shim`.

    The shim inherits the other end of a socket pair through the launcher,
    so nothing the container writes before the daemon could connect to
    ``shim.sock`` is missed (Docker attaches ``docker run``'s streams before
    it starts the container). If the start fails, reading it gives EOF.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return AttachConnection(ours, stdin, stdout, stderr, peer=theirs)


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
        except (BrokenPipeError, ConnectionResetError) as exc:
            # Connected while the shim was exiting: it closed its socket with ours still queued.
            sock.close()
            raise ShimUnavailable(f"the shim of {self.container_dir} went away ({exc.strerror})") from exc
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
