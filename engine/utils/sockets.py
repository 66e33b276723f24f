"""Socket helpers for the hijacked connections of ``attach``, ``exec`` and the long streams.

The API hijacks a client's connection and hands the socket to a job; the
job writes until it is done or the client goes away. A client that left
must never raise in the writer: these helpers turn it into a return value.
"""

from __future__ import annotations

import array
import select
import socket
from collections.abc import Callable, Iterable
from typing import Any


class Hijacked:
    """A hijacked connection whose answer's header the job writes when it is ready to stream.

    ``docker run`` sends the start as soon as its attach's ``101`` arrives, so an
    attach announces itself only once the start will find it waiting (or it is
    connected to the running container): no output is written before it listens.
    :meth:`announce` writes the header once; later calls do nothing.
    """

    def __init__(self, sock: Any, announce: Callable[[], None]) -> None:
        self.sock = sock
        self.announce = announce


def recv_fds(sock: socket.socket, bufsize: int, maxfds: int, flags: int = 0) -> tuple[bytes, list[int], int, Any]:
    """:func:`socket.recv_fds` with ``flags`` honoured (Python 3.11's leaves them out) and the
    descriptors close-on-exec (``MSG_CMSG_CLOEXEC``), so that no process this one starts inherits
    one by accident.

    :returns: (data, descriptors, the message's flags, address).
    """
    fds = array.array("i")
    data, ancillary, msg_flags, addr = sock.recvmsg(
        bufsize, socket.CMSG_LEN(maxfds * fds.itemsize), flags | socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds), msg_flags, addr


def send_all(sock: Any, data: bytes) -> bool:
    """Send all of ``data``; False when the client is gone."""
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def close_client(sock: Any) -> None:
    """Shut the connection down both ways (the client sees EOF); a gone client is fine."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def readable(objs: Iterable[Any], timeout: float | None) -> list[Any]:
    """Those of ``objs`` (descriptors, or objects with ``fileno()``) that are readable, at end of
    file or hung up within ``timeout`` seconds (None: wait until one is).

    poll(2), not select(2): a daemon with a thousand containers holds descriptors above
    select's FD_SETSIZE (1024), which ``select.select`` refuses with ValueError.
    """
    poller = select.poll()
    by_fd: dict[int, Any] = {}
    for obj in objs:
        fd = obj if isinstance(obj, int) else obj.fileno()
        by_fd[fd] = obj
        poller.register(fd, select.POLLIN | select.POLLPRI)
    events = poller.poll(None if timeout is None else max(0, int(timeout * 1000)))
    return [by_fd[fd] for fd, _mask in events if fd in by_fd]


def client_gone(sock: Any) -> bool:
    """Whether the client closed its connection (EOF readable, no request pending).

    A streaming answer that writes nothing for a long time (``wait``,
    ``events``, ``logs -f``) would otherwise only learn that the client left
    at its next write; the docker CLI abandons its ``wait`` of every
    ``run -d``, and each would hold a thread until its container exits.
    """
    if sock is None:
        return False
    try:
        if not readable([sock], 0):
            return False
        # Peek below TLS: a plain socket object over the same fd.
        raw = socket.socket(fileno=sock.fileno())
        try:
            return raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        finally:
            raw.detach()
    except (BlockingIOError, InterruptedError):
        return False
    except (OSError, ValueError):
        return True
