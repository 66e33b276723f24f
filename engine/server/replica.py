"""The API's read replica: a second process that answers
``GET /containers/{id}/json`` from a copy of the containers' views, so that
inspects (what orchestrators and monitoring poll) run beside the daemon's
worker instead of queueing behind its one interpreter lock.

dockerd answers reads from an in-memory copy of its containers (its view
DB, to which every change is checkpointed); this is that copy in a process of
its own. The design:

* **Who accepts.** The replica accepts on the daemon's plain listeners (unix
  sockets; TCP ones unless TLS is on) beside the worker. Each connection's
  requests it can answer, it answers; at the first it cannot, it hands the
  connection (its descriptor and the bytes it read, over a ``SOCK_SEQPACKET``
  pair) to the worker, which serves it from then on like one it accepted.
  After answering an inspect, or a connection's second ping in a row (a
  health check's), the worker hands the connection back.
* **What it knows.** The worker renders a container's view
  (:func:`engine.daemon.views.inspect`) after each change and sends it
  (``E`` messages, :class:`engine.server.replicalink.ReplicaLink`). The
  replica shapes it for the request's API version as the worker would
  (:func:`engine.apiversion.container_json`).
* **Never stale.** A change is made visible to the replica before the request
  that made it is answered: each container has a version in memory both
  processes map (:class:`VersionTable`), bumped by
  :mod:`engine.daemon.changes` right after the change; a view is served only
  while the version it was rendered at is current. A view not yet rendered
  again is not served: the request goes to the worker.
* **What it answers.** ``GET /containers/<full ID or name>/json`` and
  ``GET``/``HEAD /_ping`` (as the worker last answered it, in the same
  generation), with no query, HTTP/1.1, no body, no
  ``Connection``/``Upgrade``/``Expect``.
  Everything else (an ID prefix, ``?size=1``, an unknown container, an
  unsupported API version) goes to the worker, which gives the errors.

The replica imports little (this module, :mod:`engine.apiversion` and the JSON
encoder) and keeps one thread. It ends when the worker's end of the pair
closes.
"""

from __future__ import annotations

import argparse
import array
import json
import logging
import mmap
import os
import re
import selectors
import signal
import socket
import struct
import sys
import time
from typing import Any

LOG = logging.getLogger("engine.replica")

#: A connection and the bytes read from it: ``C`` + listener index (1 byte) + bytes, with its descriptor.
MSG_CONN = b"C"
#: A container's view: ``E`` + ENTRY_HEAD + ID + name + the view's JSON.
MSG_ENTRY = b"E"
#: A container is gone: ``F`` + ID.
MSG_FORGET = b"F"
#: The response head every inspect carries: ``H`` + status and server lines, then the other header lines.
MSG_HEAD = b"H"
#: The replica could not answer a container it knows nothing (current) of: ``W`` + the key asked for.
MSG_WANTED = b"W"
#: ``/_ping``'s whole answer but its Date and Connection lines: ``P`` + method (``G``/``H``) +
#: generation (8 bytes) + status and server lines + a blank line + the other header lines, a
#: blank line and the body.
MSG_PING = b"P"
_PING_HEAD = struct.Struct("<cQ")

#: (generation, slot, version, len(ID), len(name))
ENTRY_HEAD = struct.Struct("<QIQHH")

#: Versions are kept per slot, a slot per first four hex digits of the ID: containers that share
#: one are stale together, which costs a render, never a wrong answer.
SLOTS = 1 << 16
#: Word 0: the generation (0: answer nothing); word 1: flags (FLAG_DEBUG); the slots' versions follow.
_WORD = struct.Struct("<Q")
_HEADER_WORDS = 2
TABLE_SIZE = _WORD.size * (_HEADER_WORDS + SLOTS)
#: The daemon logs at debug level (so does the replica, each answer); it follows a reload.
FLAG_DEBUG = 1

#: The largest message either side sends (an entry, or a connection's bytes); a larger view is
#: not sent (the worker answers for that container).
MAX_MESSAGE = 1 << 18
#: At most this much of a connection is read before the replica decides.
MAX_HEAD = 16384

_HEX64 = re.compile(rb"[0-9a-f]{64}\Z")
_INSPECT = re.compile(rb"(?:/v(\d+\.\d+))?/containers/([^/?%]+)/json\Z")
_PING = re.compile(rb"(?:/v(\d+\.\d+))?/_ping\Z")


def slot_of(container_id: str) -> int:
    try:
        return int(container_id[:4], 16)
    except ValueError:
        return 0


class VersionTable:
    """The generation and the per-slot versions, in a memfd both processes map.

    Written by the worker only (under its lock), read by the replica; each word
    is written whole (x86-64 stores are not torn).
    """

    def __init__(self, fd: int | None = None) -> None:
        if fd is None:
            fd = os.memfd_create("engine-replica-versions", os.MFD_CLOEXEC)
            os.ftruncate(fd, TABLE_SIZE)
        self.fd = fd
        self.map = mmap.mmap(fd, TABLE_SIZE)

    def generation(self) -> int:
        return _WORD.unpack_from(self.map, 0)[0]

    def set_generation(self, value: int) -> None:
        _WORD.pack_into(self.map, 0, value)

    def flags(self) -> int:
        return _WORD.unpack_from(self.map, _WORD.size)[0]

    def set_flags(self, value: int) -> None:
        _WORD.pack_into(self.map, _WORD.size, value)

    def version(self, slot: int) -> int:
        return _WORD.unpack_from(self.map, _WORD.size * (_HEADER_WORDS + slot))[0]

    def bump(self, slot: int) -> int:
        offset = _WORD.size * (_HEADER_WORDS + slot)
        value = _WORD.unpack_from(self.map, offset)[0] + 1
        _WORD.pack_into(self.map, offset, value)
        return value

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


def send_fd(sock: socket.socket, payload: bytes, fd: int, flags: int = 0) -> None:
    sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))], flags)


def parse_message(data: bytes, fds: list[int]) -> tuple[bytes, Any]:
    """(kind, what) of a message; a descriptor that came with a message of another kind is closed."""
    kind = data[:1]
    if kind == MSG_CONN and fds:
        for extra in fds[1:]:
            os.close(extra)
        return kind, (fds[0], data[1], data[2:])
    for fd in fds:
        os.close(fd)
    if kind == MSG_ENTRY:
        gen, slot, version, id_len, name_len = ENTRY_HEAD.unpack_from(data, 1)
        at = 1 + ENTRY_HEAD.size
        cid = data[at : at + id_len].decode()
        name = data[at + id_len : at + id_len + name_len].decode()
        return kind, (cid, name, gen, slot, version, data[at + id_len + name_len :])
    if kind in (MSG_FORGET, MSG_WANTED, MSG_HEAD):
        return kind, data[1:]
    if kind == MSG_PING:
        method, gen = _PING_HEAD.unpack_from(data, 1)
        return kind, (b"HEAD" if method == b"H" else b"GET", gen, data[1 + _PING_HEAD.size :])
    return b"", None


def ping_message(method: bytes, gen: int, answer: bytes) -> bytes:
    """``answer``: status and server lines, a blank line, the other header lines, a blank line, the body."""
    return MSG_PING + _PING_HEAD.pack(b"H" if method == b"HEAD" else b"G", gen) + answer


def entry_message(cid: str, name: str, gen: int, slot: int, version: int, view: bytes) -> bytes:
    ident, label = cid.encode(), name.encode()
    return MSG_ENTRY + ENTRY_HEAD.pack(gen, slot, version, len(ident), len(label)) + ident + label + view


def recv_message(sock: socket.socket, buf: bytearray) -> tuple[bytes, list[int]]:
    """One message (read into ``buf``, of MAX_MESSAGE bytes) and the descriptors that came with
    it; (b"", []) at the end."""
    size, ancdata, _flags, _addr = sock.recvmsg_into([buf], socket.CMSG_SPACE(4 * 4))
    data = bytes(memoryview(buf)[:size])
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(payload[: len(payload) - len(payload) % arr.itemsize])
            fds.extend(arr)
    for fd in fds:
        os.set_inheritable(fd, False)
    return data, fds


# the replica process
class _Entry:
    __slots__ = ("gen", "name", "shaped", "slot", "version", "view")

    def __init__(self, name: str, gen: int, slot: int, version: int, view: bytes) -> None:
        self.name = name
        self.gen = gen
        self.slot = slot
        self.version = version
        self.view = view
        #: The body by API version asked for.
        self.shaped: dict[str, bytes] = {}


class _Conn:
    __slots__ = ("buf", "last", "listener", "out", "sock")

    def __init__(self, sock: socket.socket, listener: int, buf: bytes) -> None:
        self.sock = sock
        self.listener = listener
        self.buf = buf
        self.out = b""
        self.last = time.monotonic()


class Replica:
    """The replica's loop (one thread).

    :param listeners: the daemon's plain listening sockets, by the index the worker knows them by.
    :param channel: this end of the pair with the worker.
    :param table: the versions.
    :param keepalive: seconds an idle connection is kept.
    """

    def __init__(
        self,
        listeners: dict[int, socket.socket],
        channel: socket.socket,
        table: VersionTable,
        keepalive: float = 60.0,
    ) -> None:
        from engine import API_VERSION, MAX_ACCEPTED_API_VERSION, MIN_API_VERSION, apiversion
        from engine.utils.jsonout import encode

        self.apiversion = apiversion
        self.encode = encode
        self.default_version = API_VERSION
        self.min_version = apiversion.parse(MIN_API_VERSION)
        self.max_version = apiversion.parse(MAX_ACCEPTED_API_VERSION)
        self.listeners = listeners
        self.channel = channel
        self.table = table
        self.keepalive = keepalive
        self.entries: dict[str, _Entry] = {}
        self.names: dict[str, str] = {}
        #: (status and server lines, the other header lines) of an inspect; None until the worker sends them.
        self.head: tuple[bytes, bytes] | None = None
        #: ``/_ping``'s answers by method: (generation, status and server lines, the rest).
        self.pings: dict[bytes, tuple[int, bytes, bytes]] = {}
        self.conns: dict[int, _Conn] = {}
        #: (until, listener, index) of listeners not accepted on for now.
        self.paused: list[tuple[float, Any, int]] = []
        self.selector = selectors.DefaultSelector()
        self.running = True
        self.inbox = bytearray(MAX_MESSAGE)
        self._date = (0, b"")

    # set-up and loop
    def run(self) -> None:
        for index, lst in self.listeners.items():
            lst.setblocking(False)
            self.selector.register(lst, selectors.EVENT_READ, ("accept", index))
        self.channel.setblocking(True)
        self.selector.register(self.channel, selectors.EVENT_READ, ("channel", None))
        next_sweep = time.monotonic() + 1.0
        while self.running:
            for key, mask in self.selector.select(timeout=1.0):
                what, arg = key.data
                try:
                    if what == "accept":
                        self._accept(key.fileobj, arg)
                    elif what == "channel":
                        self._from_worker()
                    else:
                        self._ready(arg, mask)
                except OSError:
                    if what == "conn":
                        self._close(arg)
                except Exception:
                    # A bug must cost one connection, not every client's answers.
                    LOG.exception("read replica: handling a %s event", what)
                    if what == "conn":
                        self._close(arg)
            now = time.monotonic()
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + 1.0

    def _accept(self, listener: Any, index: int) -> None:
        for _ in range(64):
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, ConnectionAbortedError):
                return
            except OSError:
                # Out of descriptors (or memory): leave the listener to the worker for a second
                # rather than spin on it.
                self.selector.unregister(listener)
                self.paused.append((time.monotonic() + 1.0, listener, index))
                return
            self._adopt(sock, index, b"")

    def _adopt(self, sock: socket.socket, index: int, buf: bytes) -> None:
        sock.setblocking(False)
        conn = _Conn(sock, index, buf)
        self.conns[sock.fileno()] = conn
        self.selector.register(sock, selectors.EVENT_READ, ("conn", conn))
        if buf:
            self._serve(conn)

    def _from_worker(self) -> None:
        try:
            data, fds = recv_message(self.channel, self.inbox)
        except OSError:
            data, fds = b"", []
        if not data and not fds:
            self.running = False  # the worker is gone: so is the daemon
            return
        kind, what = parse_message(data, fds)
        if kind == MSG_CONN:
            fd, index, buf = what
            try:
                sock = socket.socket(fileno=fd)
            except OSError:
                os.close(fd)
                return
            self._adopt(sock, index, buf)
        elif kind == MSG_ENTRY:
            cid, name, gen, slot, version, view = what
            old = self.entries.get(cid)
            if old is not None and old.name != name and self.names.get(old.name) == cid:
                del self.names[old.name]
            self.entries[cid] = _Entry(name, gen, slot, version, view)
            self.names[name] = cid
        elif kind == MSG_FORGET:
            gone = self.entries.pop(what.decode(), None)
            if gone is not None and self.names.get(gone.name) == what.decode():
                del self.names[gone.name]
        elif kind == MSG_HEAD:
            first, _, rest = what.partition(b"\r\n\r\n")
            self.head = (first + b"\r\n", rest)
        elif kind == MSG_PING:
            method, gen, answer = what
            first, _, rest = answer.partition(b"\r\n\r\n")
            self.pings[method] = (gen, first + b"\r\n", rest)

    def _ready(self, conn: _Conn, mask: int) -> None:
        if conn.out:
            self._flush(conn)
            if conn.out:
                return
        elif mask & selectors.EVENT_READ:
            try:
                data = conn.sock.recv(MAX_HEAD)
            except BlockingIOError:
                return
            if not data:
                self._close(conn)
                return
            conn.buf += data
        self._serve(conn)

    def _serve(self, conn: _Conn) -> None:
        """Answer the complete requests read from ``conn``, until one needs the worker."""
        conn.last = time.monotonic()
        while not conn.out and conn.buf:
            end = conn.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.buf) > MAX_HEAD:
                    self._hand_over(conn)
                return
            response = self._answer(conn.buf[:end])
            if response is None:
                self._hand_over(conn)
                return
            conn.buf = conn.buf[end + 4 :]
            conn.out = response
            self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            sent = 0
        conn.out = conn.out[sent:]
        # While an answer waits for the client, its next requests wait in the kernel (reading
        # them would only grow the buffer, and a level-triggered read event would spin).
        events = selectors.EVENT_WRITE if conn.out else selectors.EVENT_READ
        if self.selector.get_key(conn.sock).events != events:
            self.selector.modify(conn.sock, events, ("conn", conn))

    def _hand_over(self, conn: _Conn) -> None:
        """Give ``conn`` to the worker with what was read of it."""
        self._forget(conn)
        try:
            send_fd(self.channel, MSG_CONN + bytes([conn.listener]) + conn.buf, conn.sock.fileno())
        except OSError:
            pass  # the worker is gone; the loop ends on the channel's close
        conn.sock.close()

    def _close(self, conn: _Conn) -> None:
        if conn.sock.fileno() < 0:
            return  # closed already
        self._forget(conn)
        conn.sock.close()

    def _forget(self, conn: _Conn) -> None:
        if self.conns.pop(conn.sock.fileno(), None) is not None:
            self.selector.unregister(conn.sock)

    def _sweep(self, now: float) -> None:
        for entry in [p for p in self.paused if p[0] <= now]:
            self.paused.remove(entry)
            self.selector.register(entry[1], selectors.EVENT_READ, ("accept", entry[2]))
        for conn in [c for c in self.conns.values() if now - c.last > self.keepalive]:
            self._close(conn)

    # one request
    def _answer(self, head: bytes) -> bytes | None:
        """The response to a request (its head, without the blank line), or None: the worker's."""
        line_end = head.find(b"\r\n")
        request_line = head if line_end < 0 else head[:line_end]
        parts = request_line.split(b" ")
        if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD") or parts[2] != b"HTTP/1.1":
            return None
        method, target = parts[0], parts[1]
        ping = _PING.match(target)
        inspect = None if ping is not None or method != b"GET" else _INSPECT.match(target)
        if ping is None and inspect is None:
            return None
        if line_end >= 0:
            for line in head[line_end + 2 :].split(b"\r\n"):
                name, sep, value = line.partition(b":")
                if not sep:
                    return None
                name = name.strip().lower()
                if name == b"content-length":
                    if value.strip() != b"0":
                        return None
                elif name in (b"transfer-encoding", b"connection", b"upgrade", b"expect"):
                    return None
        prefix = (ping or inspect).group(1)  # type: ignore[union-attr]
        version = prefix.decode() if prefix else self.default_version
        try:
            wanted = self.apiversion.parse(version)
        except ValueError:
            return None
        if not self.min_version <= wanted <= self.max_version:
            return None
        if ping is not None:
            response = self._ping(method)
        else:
            assert inspect is not None
            response = self._inspect(inspect.group(2).decode("latin-1"), version)
        if response is not None and self.table.flags() & FLAG_DEBUG:
            LOG.debug("%s %s -> 200 OK", method.decode(), target.decode("latin-1"))
        return response

    def _ping(self, method: bytes) -> bytes | None:
        """``/_ping``'s answer as the worker gave it in this generation."""
        known = self.pings.get(method)
        gen = self.table.generation()
        if known is None or known[0] != gen or not gen:
            return None
        return b"".join((known[1], self._date_line(), b"Connection: keep-alive\r\n", known[2]))

    def _inspect(self, key: str, version: str) -> bytes | None:
        if self.head is None:
            return None
        body = self._view(key, version)
        if body is None:
            return None
        first, rest = self.head
        return b"".join(
            (
                first,
                self._date_line(),
                b"Connection: keep-alive\r\n",
                rest,
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            )
        )

    def _view(self, key: str, version: str) -> bytes | None:
        """The body for ``key`` as ``version`` shows it, if the replica has it current."""
        table = self.table
        gen = table.generation()
        if gen == 0:
            return None
        if _HEX64.match(key.encode()):
            cid = key
            entry = self.entries.get(cid)
        else:
            cid = self.names.get("/" + key, "")
            entry = self.entries.get(cid)
            if entry is not None and entry.name != "/" + key:
                entry = None
        if entry is None or entry.gen != gen or table.version(entry.slot) != entry.version:
            self._want(key)
            return None
        body = entry.shaped.get(version)
        if body is None:
            doc = self.apiversion.container_json(version, json.loads(entry.view))
            body = entry.shaped[version] = self.encode(doc) + b"\n"
        return body

    def _want(self, key: str) -> None:
        try:
            self.channel.send(MSG_WANTED + key.encode(), socket.MSG_DONTWAIT)
        except OSError:
            pass  # a hint only

    def _date_line(self) -> bytes:
        now = int(time.time())
        if self._date[0] != now:
            stamp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
            self._date = (now, f"Date: {stamp}\r\n".encode())
        return self._date[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="engine-replica", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listener", action="append", default=[], metavar="INDEX:FD")
    parser.add_argument("--channel", type=int, required=True, metavar="FD")
    parser.add_argument("--table", type=int, required=True, metavar="FD")
    parser.add_argument("--keepalive", type=float, default=60.0)
    parser.add_argument("--parent", type=int, default=0, metavar="PID", help="the worker: end with it")
    args = parser.parse_args(argv)
    if args.parent:
        from engine.sys.libc import PR_SET_PDEATHSIG, prctl

        # Killed with the worker, at once: a replica that outlived a killed daemon would keep
        # its socket answering, and the next daemon would find it taken.
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != args.parent:
            return 0  # the worker died before the line above
    from engine.utils.logs import setup_logging

    setup_logging(debug=True)  # what is logged follows the table's FLAG_DEBUG
    # The worker stops the replica with SIGTERM; SIGINT (a terminal's ^C to the group) is the worker's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    listeners = {}
    for spec in args.listener:
        index, _, fd = spec.partition(":")
        listeners[int(index)] = socket.socket(fileno=int(fd))
    channel = socket.socket(fileno=args.channel)
    Replica(listeners, channel, VersionTable(args.table), args.keepalive).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
