"""The control protocol between the daemon and the resolver process.

A ``SOCK_SEQPACKET`` unix socket, ``<home>/control.sock`` (mode 0600): each
request is one JSON object in one packet, with the sockets it hands over as
``SCM_RIGHTS`` ancillary data; each answer is one JSON object, ``{"ok":
true, ...}`` or ``{"ok": false, "error": "..."}``. Requests:

``{"op": "attach", "container": ID}`` + two sockets
    serve the container's queries on a UDP socket and a listening TCP
    socket made in its network namespace (bound to ``127.0.0.11``);
    replaces the ones it had;
``{"op": "detach", "container": ID}``
    close them;
``{"op": "reload"}``
    read ``<home>/records.json`` again;
``{"op": "list"}``
    ``{"ok": true, "containers": [ID, ...]}``, the containers served;
``{"op": "stop"}``
    exit.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from engine.utils.sockets import recv_fds

CONTROL = "control.sock"
RECORDS = "records.json"
PIDFILE = "resolver.pid"
LOGFILE = "resolver.log"
#: The biggest request or answer (a list of every container served fits).
MAX_MESSAGE = 1 << 20
#: The name the resolver's command line carries, to know it by (with ``--home``).
MARK = "engine.dns.server"


def control_path(home: str) -> str:
    return os.path.join(home, CONTROL)


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def receive(sock: socket.socket, max_fds: int = 4) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and the descriptors that came with it; (None, []) at EOF."""
    data, fds, _flags, _addr = recv_fds(sock, MAX_MESSAGE, max_fds)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), list(fds)


class Client:
    """The daemon's connection to the resolver process.

    :param home: the resolver's directory.
    :param timeout: for connecting and each answer.
    :raises OSError: no resolver listens there.
    """

    def __init__(self, home: str, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(control_path(home))
        except OSError:
            self.sock.close()
            raise

    def request(self, message: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        """Send a request and wait for its answer.

        :raises OSError: the resolver is gone (or did not answer in time).
        :raises RuntimeError: it refused, with its reason.
        """
        send(self.sock, message, fds)
        answer, extra = receive(self.sock)
        for fd in extra:
            os.close(fd)
        if answer is None:
            raise ConnectionResetError("the resolver closed the control connection")
        if not answer.get("ok"):
            raise RuntimeError(str(answer.get("error") or "refused"))
        return answer

    def close(self) -> None:
        self.sock.close()
