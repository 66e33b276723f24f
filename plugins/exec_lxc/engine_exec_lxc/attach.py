"""The ``exec`` helper: ``python -S -m engine_exec_lxc.attach CONFIG_FD STATUS_FD``.

A fresh single-threaded process (the daemon that asks for an exec has
threads, and liblxc forks) which reads its JSON config from ``CONFIG_FD``,
enters the container through liblxc (:func:`engine_exec_lxc.liblxc.attach`),
and reports JSON lines on ``STATUS_FD``: ``{"event": "error", "message"}``
or ``{"event": "started", "pid"}`` then ``{"event": "exit", "code"}``.

With a console socket (``docker exec -t``) the pty is made from the
container's own devpts (``/proc/<init>/root/dev/ptmx``; the slave through
``TIOCGPTPEER``, so no path of it is opened from here) and its master goes
back over the socket, as the native driver's exec does.

Python ignores SIGPIPE and SIGXFSZ from its start, and an ignored signal
survives fork and execve(2): the helper gives every signal its default back
(:func:`engine.sys.proc.default_signals`) before liblxc forks the process, so
a writer into a closed pipe dies of SIGPIPE, as anywhere else.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
import sys
import termios
from typing import Any

from engine.sys.proc import default_signals
from engine_exec_lxc import liblxc

TIOCGPTPEER = 0x5441
TIOCSPTLCK = 0x40045431


def _send(fd: int, **event: Any) -> None:
    data = (json.dumps(event) + "\n").encode()
    while data:
        data = data[os.write(fd, data) :]


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _console(config: dict[str, Any]) -> int:
    """A pty of the container's devpts: the master goes over the console socket, the slave is returned."""
    master = os.open(f"/proc/{config['init_pid']}/root/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
        size = config.get("console_size")
        if size:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", int(size[0]), int(size[1]), 0, 0))
        sock = socket.socket(fileno=config["console"])
        try:
            socket.send_fds(sock, [b"M"], [master])
        finally:
            sock.close()
    finally:
        os.close(master)
    return slave


def run(config: dict[str, Any], status_fd: int) -> int:
    """Attach, report the start, wait, report the exit code (128+N for signal N)."""
    default_signals()  # before liblxc forks the process (see the module's docstring)
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        if config.get("console") is not None:
            slave = _console(config)
            stdio = (slave, slave, slave)
        else:
            stdio = tuple(null if fd is None else int(fd) for fd in config["stdio"])  # type: ignore[assignment]
        pid = liblxc.attach(
            config["name"],
            config["lxcpath"],
            config["args"],
            env=config["env"],
            cwd=config["cwd"],
            uid=int(config["uid"]),
            gid=int(config["gid"]),
            groups=[int(g) for g in config["groups"]],
            stdio=stdio,
        )
    except OSError as exc:
        _send(status_fd, event="error", message=str(exc.strerror or exc))
        return 1
    for fd in set(stdio) | {null}:
        os.close(fd)
    _send(status_fd, event="started", pid=pid)
    while True:
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            break
    code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    _send(status_fd, event="exit", code=code)
    return 0


def main(argv: list[str]) -> int:
    config_fd, status_fd = int(argv[0]), int(argv[1])
    config = json.loads(_read_all(config_fd))
    os.close(config_fd)
    return run(config, status_fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
