"""Attaching a hijacked client connection to a container's shim.

When the container is not running yet (``docker run`` attaches before it
starts), the attach waits as a :class:`PendingAttach`: the start connects it
to the new shim before the container's process runs, so not a byte of output
is missed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.daemon import attach as attaching
from engine.daemon.container import Container
from engine.utils import sockets

if TYPE_CHECKING:
    from engine.daemon.lifecycle import LifeCycle

LOG = logging.getLogger(__name__)


class PendingAttach:
    """An attach waiting for its container's shim."""

    def __init__(self, stdin: bool, stdout: bool, stderr: bool) -> None:
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.connection: Any = None
        self.ready = threading.Event()

    def connect(self, shim_client: Any) -> None:
        """Called by the start once the shim listens, before the process runs."""
        try:
            self.connection = shim_client.attach(self.stdin, self.stdout, self.stderr)
        except Exception as exc:  # the attach just ends; the start goes on
            LOG.warning("connecting a waiting attach failed: %s", exc)
        self.ready.set()


def attach_container(
    lifecycle: LifeCycle,
    c: Container,
    sock: Any,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    detach_keys: bytes | None,
    stopping: threading.Event,
    ready: Callable[[], bool] = lambda: True,
) -> None:
    """Stream ``c``'s stdio over ``sock`` until either side ends.

    :param ready: called before any output is forwarded, once the attach waits for
        the start (so a client that starts the container at the answer misses
        nothing), or before connecting to a running container's shim: the API
        answers the client then, and replays past logs; False ends the attach.
    """
    from engine.shim.client import ShimClient

    conn = None
    pending = PendingAttach(stdin, stdout, stderr)
    if not lifecycle.attach_at_start(c, pending):
        # It runs: past logs first, then what it writes from now on (as dockerd).
        if not ready():
            sockets.close_client(sock)
            return
        try:
            conn = ShimClient(c.root).attach(stdin, stdout, stderr)
        except OSError as exc:
            LOG.debug("attach to %s: %s", c.short_id, exc)
            sockets.close_client(sock)
            return
    else:
        if not ready():
            lifecycle.cancel_attach(c, pending)
            if pending.connection is not None:
                pending.connection.close()
            sockets.close_client(sock)
            return
        while not pending.ready.wait(0.5):
            if stopping.is_set() or c.removed or sockets.client_gone(sock):
                lifecycle.cancel_attach(c, pending)
                sockets.close_client(sock)
                return
            if c.state.running and not c.state.restarting and not pending.ready.is_set():
                # Started without us (we registered as it began): join now.
                lifecycle.cancel_attach(c, pending)
                if not pending.ready.is_set():
                    pending.connect(ShimClient(c.root))
        conn = pending.connection
        if conn is None:
            sockets.close_client(sock)
            return
    detached = threading.Event()

    def on_detach() -> None:
        detached.set()
        conn.close()
        sockets.close_client(sock)

    if stdin:
        attaching.StdinPump(sock, conn.send_stdin, conn.close_stdin, detach_keys, on_detach).start()
    try:
        attaching.pump_frames(sock, conn.frames(), c.tty, stdout, stderr, detached)
    except OSError as exc:
        LOG.debug("attach to %s ended: %s", c.short_id, exc)
    finally:
        conn.close()
        sockets.close_client(sock)
