"""engine.utils.sockets.recv_fds: descriptors passed over a real Unix socket pair."""

from __future__ import annotations

import fcntl
import os
import socket

from engine.utils.sockets import recv_fds


def test_received_descriptors_are_close_on_exec_and_peek_leaves_the_message():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    os.set_inheritable(r, True)  # what the sender had does not matter
    received: list[int] = []
    try:
        socket.send_fds(a, [b"hello"], [r])
        data, peeked, _flags, _addr = recv_fds(b, 16, 1, socket.MSG_PEEK)
        received += peeked
        assert data == b"hello" and len(peeked) == 1
        data, fds, flags, _addr = recv_fds(b, 16, 1)  # still queued after the peek
        received += fds
        assert data == b"hello" and len(fds) == 1 and not flags & socket.MSG_CTRUNC
        for fd in received:
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        os.write(w, b"x")
        assert os.read(fds[0], 1) == b"x"  # the same pipe
    finally:
        for fd in (r, w, *received):
            os.close(fd)
        a.close()
        b.close()


def test_more_descriptors_than_room_are_truncated_and_said_so():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pipes = [os.pipe() for _ in range(2)]
    fds: list[int] = []
    try:
        socket.send_fds(a, [b"two"], [p[0] for p in pipes])
        _data, fds, flags, _addr = recv_fds(b, 16, 1)
        assert len(fds) == 1 and flags & socket.MSG_CTRUNC
    finally:
        for fd in (*fds, *(fd for p in pipes for fd in p)):
            os.close(fd)
        a.close()
        b.close()
