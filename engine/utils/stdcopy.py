"""Docker's multiplexed stream (moby ``pkg/stdcopy``): a container's stdout and stderr over one connection.

Without a TTY, output travels in frames ``[stream: u8, 0, 0, 0, size: u32
big-endian][payload]``: stream 1 is stdout, 2 stderr, and 3 an error the
daemon reports in the middle of a stream (moby's ``Systemerr``). With a TTY
the bytes go as they are. The daemon frames ``attach``, ``logs`` and
``exec`` output (``application/vnd.docker.multiplexed-stream``); the
client takes the frames apart. (The shim's own socket protocol has frames
of another shape: :mod:`engine.shim.protocol`.)
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import IO

STDIN, STDOUT, STDERR, SYSTEMERR = 0, 1, 2, 3

#: The 8 bytes in front of every frame.
HEADER = struct.Struct(">BxxxI")


class StreamError(ValueError):
    """A frame the reader cannot pass on: an error from the daemon, or an unknown stream."""


def frame(stream: int, data: bytes, tty: bool = False) -> bytes:
    """``data`` of ``stream`` as one frame; as it is for a container with a TTY."""
    if tty:
        return data
    return HEADER.pack(stream, len(data)) + data


def demux(read: Callable[[int], bytes], stdout: IO[bytes] | None, stderr: IO[bytes] | None) -> None:
    """moby's ``stdcopy.StdCopy``: copy frames to ``stdout`` and ``stderr`` until EOF (a torn frame is EOF).

    :param read: returns exactly the bytes asked for, fewer only at EOF.
    :param stdout: where stdout (and stdin echo) frames go; None drops them.
    :param stderr: where stderr frames go; None drops them.
    :raises StreamError: on an error frame (with the daemon's text) or an unknown stream.
    """
    while True:
        header = read(HEADER.size)
        if len(header) < HEADER.size:
            return
        kind, length = HEADER.unpack(header)
        payload = read(length) if length else b""
        if kind == SYSTEMERR:
            raise StreamError(f"error from daemon in stream: {payload.decode(errors='replace')}")
        if kind not in (STDIN, STDOUT, STDERR):
            raise StreamError(f"Unrecognized input header: {kind}")
        out = stderr if kind == STDERR else stdout
        if out is not None and payload:
            out.write(payload)
            out.flush()
        if len(payload) < length:
            return
