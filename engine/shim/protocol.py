"""What the daemon and a container's shim agree on: file names, frames, JSON files.

Both sides import this module, so it uses the standard library only and
stays small (the shim must fit in a few MB of RSS).

The container directory holds, next to the daemon's own files::

    shim.json     written by the daemon before start: what to run, how to log
    state.json    written by the shim at start: {"Pid", "ShimPid", "StartedAt"}
                  (not fsynced: a reboot ends what it describes)
    exit.json     written by the shim at the end: {"ExitCode", "FinishedAt",
                  "OOMKilled", "Error", "ShimPid"}, before anyone is told of
                  the exit; the daemon takes the exit from it (the shim then
                  releases the cgroups and ends)
    shim.sock     the shim's unix socket (0600) while it runs
    shim.log      the shim's own diagnostics (its stderr)

On ``shim.sock`` every connection starts with ONE request line (JSON and a
newline) from the client. ``attach`` turns the connection into two framed
byte streams; every frame is ``[kind: u8][length: u32 big-endian][payload]``:

* shim -> client: first kind 0 "attached" (empty: from here on nothing
  is missed), then kind 1 stdout, 2 stderr (a tty's output is 1), and last
  3 = the exit JSON, after which the shim closes the connection;
* client -> shim: kind 0 stdin data, 1 "my stdin is closed", 2 resize with
  payload ``{"h": rows, "w": columns}``.

``state``, ``wait`` and ``resize`` are answered with one JSON line. A
client may shut down its writing side (``SHUT_WR``) and still read: for an
attach that counts as "stdin closed"; a client that closes the connection
is dropped at once and never disturbs the container.

``shim.json`` may also carry ``"attach_fds": [{"fd", "stdin", "stdout",
"stderr"}]``: connected sockets the launcher inherited, served as attached
from before the container's first byte (how ``docker run`` sees all of a
fast container's output), and ``"ack_timeout"``: seconds the shim and the
launcher wait for the daemon's acknowledgement.

The start, between the daemon and the launcher (its stdin and stdout, one
socket): the launcher writes :data:`ACK` (it runs), then the start result
as one JSON line. A result without ``Error`` must be acknowledged: the
daemon writes :data:`ACK` once it has read the result in time, and the
launcher passes it on to the shim. A shim that gets no acknowledgement
(the daemon gave up, timed out or died before it read the result) stops
its container, so that no container runs that the daemon does not know of.
(A daemon that dies after acknowledging finds the live shim at restore.)
A launcher whose stdin is not a socket was run by hand: it confirms the
start itself.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

CONFIG_FILE = "shim.json"
STATE_FILE = "state.json"
EXIT_FILE = "exit.json"
SOCKET_FILE = "shim.sock"
LOG_FILE = "shim.log"

#: Output frame kinds (shim -> client).
STREAM_ATTACHED = 0
STREAM_STDOUT = 1
STREAM_STDERR = 2
STREAM_EXIT = 3

#: Input frame kinds (client -> shim).
INPUT_STDIN = 0
INPUT_CLOSE_STDIN = 1
INPUT_RESIZE = 2

#: ``[kind][length]`` in front of every frame.
HEADER = struct.Struct(">BI")

#: Longest request line the shim accepts.
MAX_REQUEST = 64 * 1024
#: Largest input frame payload the shim accepts (stdin data is chunked by clients).
MAX_INPUT_FRAME = 1024 * 1024

#: The launcher's first byte (it runs), and the daemon's acknowledgement of a start.
ACK = b"+"
#: How long the acknowledgement is awaited when ``shim.json`` does not say.
ACK_TIMEOUT = 70.0

#: The exit code recorded when the real one is unknown (moby uses 255 too).
UNKNOWN_EXIT_CODE = 255


def frame(kind: int, payload: bytes) -> bytes:
    """One frame: header and payload."""
    return HEADER.pack(kind, len(payload)) + payload


def encode_line(obj: Any) -> bytes:
    """``obj`` as one compact JSON line (the request/answer format)."""
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def write_json_atomic(path: str, obj: Any, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` with ``obj`` as JSON: temp file, fsync, rename, fsync the directory.

    The same dance as :func:`engine.sys.fs.atomic_write`, repeated here
    because importing that module pulls ``tempfile``, ``ctypes`` and the
    libc bindings into the shim (about 2.5 MB of RSS for one function). The
    temp name carries the PID; only one process writes a container's files.

    :param durable: False for what describes running processes only (``state.json``), which
        a reboot makes meaningless: readers still see old or new, but nothing is fsynced (runc
        keeps its state on a tmpfs).
    """
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.tmp")
    data = json.dumps(obj, separators=(",", ":")).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if not durable:
        return
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: str) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None if the file does not exist."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return json.loads(data)


#: sun_path holds 108 bytes with the terminating NUL (unix(7)).
_SUN_PATH_MAX = 107


def _with_short_path(path: str, call: Any) -> None:
    """Run ``call(p)`` with ``p`` naming ``path``, short enough for a unix socket address.

    A long container directory (deep roots, test temp dirs) does not fit in
    ``sun_path``; the directory is then opened and named through
    ``/proc/self/fd/<fd>/``, which the kernel resolves like the real path.
    """
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        call(path)
        return
    directory, name = os.path.split(os.path.abspath(path))
    dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        call(f"/proc/self/fd/{dir_fd}/{name}")
    finally:
        os.close(dir_fd)


def bind_unix(sock: Any, path: str) -> None:
    """``sock.bind(path)`` for a path of any length."""
    _with_short_path(path, sock.bind)


def connect_unix(sock: Any, path: str) -> None:
    """``sock.connect(path)`` for a path of any length."""
    _with_short_path(path, sock.connect)
