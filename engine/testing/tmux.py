"""A private tmux server for tests that need a real terminal (``run -it``, ``exec -it``, ``attach``).

Each server has its own socket directory (``TMUX_TMPDIR``, short: a unix
socket path holds at most 108 bytes) and runs one command in a detached
session; tests type into it with ``send-keys`` and read the screen with
``capture-pane``. :func:`tmux_server` makes one and always kills it and
removes its directory.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping

SESSION = "main"


class Tmux:
    """A private tmux server (``-L name``, its socket under ``tmpdir``) running one command.

    :param env: the server's environment, which its command inherits (default ours).
    """

    def __init__(self, name: str, tmpdir: str, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("TERM", "xterm")
        self.env["TMUX_TMPDIR"] = tmpdir
        self.env.pop("TMUX", None)

    def _tmux(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["tmux", "-L", self.name, *args], capture_output=True, text=True, timeout=30, env=self.env
        )

    def start(self, command: str, env: Mapping[str, str] | None = None, width: int = 100, height: int = 30) -> None:
        """Run ``command`` (a shell line) in a ``width`` x ``height`` pane.

        :param env: variables for the command on top of the server's (those that differ are set with ``env``).
        """
        extra = {k: v for k, v in (env or {}).items() if self.env.get(k) != v and k not in ("TMUX", "TMUX_TMPDIR")}
        prefix = "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in extra.items()) + " " if extra else ""
        for _ in range(50):
            proc = self._tmux("new-session", "-d", "-s", SESSION, "-x", str(width), "-y", str(height), prefix + command)
            # A server killed a moment ago may still hold the socket.
            if proc.returncode == 0 or "server exited unexpectedly" not in proc.stderr:
                break
            time.sleep(0.1)
        assert proc.returncode == 0, proc.stderr

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", SESSION, *keys)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", SESSION).stdout

    def resize(self, width: int, height: int) -> None:
        self._tmux("resize-window", "-t", SESSION, "-x", str(width), "-y", str(height))

    def wait_for(self, text: str, timeout: float = 30) -> str:
        """The screen once ``text`` is on it; AssertionError (with the screen) after ``timeout``."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} did not appear on the screen:\n{screen}")

    def kill(self) -> None:
        """Stop the server and everything it runs."""
        self._tmux("kill-server")


def available() -> bool:
    return shutil.which("tmux") is not None


@contextlib.contextmanager
def tmux_server(name: str, env: Mapping[str, str] | None = None) -> Iterator[Tmux]:
    """A :class:`Tmux` in a new short temporary directory; killed and removed at the end."""
    tmpdir = tempfile.mkdtemp(prefix="etmux")
    server = Tmux(name, tmpdir, env)
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(tmpdir, ignore_errors=True)
