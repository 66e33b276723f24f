"""The resolver process: every container's embedded DNS server at ``127.0.0.11:53``, in one process per daemon root.

::

    python -m engine.dns.server --home <root>/network/dns [--daemon]

Why a process of its own: it must keep answering while the daemon restarts
(containers live on, and so must their names), and answer in well under a
millisecond, which a thread of the daemon's worker, busy with the API,
could not promise. Like the userland proxies it outlives the daemon that
started it; the next daemon finds it by its control socket and its
pidfile, and stops it when no container needs it any more.

How a container's ``127.0.0.11:53`` reaches it: the daemon makes a UDP
socket and a listening TCP socket *inside the container's network
namespace* (bound to ``127.0.0.11`` on random ports), hands them over the
control socket (:mod:`engine.dns.control`), and DNATs ``127.0.0.11:53`` to
those ports with iptables rules in that namespace, as dockerd does: port 53
stays free for a DNS server of the container's own. A socket stays bound to
the namespace it was made in, so one process serves every container from
the host's namespace, and the socket tells it which container asks.

What it answers comes from ``records.json`` (:mod:`engine.dns.records`),
re-read when the daemon says ``reload``; plain A and AAAA queries are
answered from :class:`~engine.dns.records.AnswerCache` (the answer's bytes
made once, the query's ID and question patched in), the rest through
dnslib. What it does not know it forwards
to the container's upstream servers from the host's namespace (so a
resolver on the host's loopback, 127.0.0.53, works), UDP asynchronously,
TCP queries over TCP in a short-lived thread; an upstream that does not
answer within 2 s, or answers SERVFAIL or REFUSED, makes it try the next,
and SERVFAIL goes back when none is left.

With ``--daemon`` it forks: the parent prints the child's PID and exits, so
the daemon reaps it at once and the resolver is adopted by init.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field

from dnslib import DNSError, DNSRecord

from engine.dns import control
from engine.dns.records import AnswerCache, Records, answer, failure, max_udp_size

LOG = logging.getLogger("engine.dns")

#: How long an upstream server gets to answer.
UPSTREAM_TIMEOUT = 2.0
#: Forwarded UDP queries waiting at once; past that, new ones get SERVFAIL (Docker caps at 100).
MAX_PENDING = 512


class Poller:
    """epoll over sockets, each with its handler's data (leaner than :mod:`selectors` on the answer's path)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._sockets: dict[int, tuple[socket.socket, tuple]] = {}

    def register(self, sock: socket.socket, data: tuple) -> None:
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        self._sockets[sock.fileno()] = (sock, data)

    def unregister(self, sock: socket.socket) -> None:
        """Forget ``sock`` (before it is closed). :raises KeyError: it was not registered."""
        fd = sock.fileno()
        if fd < 0 or fd not in self._sockets:
            raise KeyError(sock)
        del self._sockets[fd]
        self._epoll.unregister(fd)

    def poll(self, timeout: float) -> list[tuple[socket.socket, tuple]]:
        try:
            events = self._epoll.poll(timeout)
        except InterruptedError:
            return []
        return [self._sockets[fd] for fd, _mask in events if fd in self._sockets]


@dataclass
class Pending:
    """A UDP query forwarded upstream, waiting for the answer."""

    query: DNSRecord
    raw: bytes
    client: socket.socket
    peer: tuple
    servers: list[str]
    deadline: float


@dataclass
class Served:
    """A container's sockets."""

    udp: socket.socket
    tcp: socket.socket
    buffers: dict[socket.socket, bytearray] = field(default_factory=dict)


class Resolver:
    """The selector loop: the control socket, the containers' sockets, the forwarded queries.

    :param home: the directory of the control socket, the records and the pidfile.
    """

    def __init__(self, home: str) -> None:
        self.home = home
        self.sel = Poller()
        self.records = Records()
        self.cache = AnswerCache(self.records)
        self.served: dict[str, Served] = {}
        self.pending: dict[socket.socket, Pending] = {}
        self.running = True
        self._lock = threading.Lock()  # the TCP forwarding threads write to client sockets
        self.listener: socket.socket | None = None

    # set-up
    def listen(self) -> None:
        path = control.control_path(self.home)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        old = os.umask(0o077)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(16)
        sock.setblocking(False)
        self.listener = sock
        self.sel.register(sock, ("control-listener", None))
        self.reload()

    def reload(self) -> None:
        try:
            with open(os.path.join(self.home, control.RECORDS), "rb") as fh:
                doc = json.load(fh)
        except FileNotFoundError:
            doc = {}
        except (OSError, ValueError) as exc:
            LOG.error("cannot read the records: %s", exc)
            return
        self.records = Records(doc)
        self.cache = AnswerCache(self.records)

    # the loop
    def run(self) -> None:
        while self.running:
            for sock, (kind, owner) in self.sel.poll(0.5):
                try:
                    if kind == "udp":
                        self._udp(sock, owner)
                    else:
                        self._dispatch(kind, owner, sock)
                except Exception:  # one bad packet or client never stops the others' service
                    LOG.exception("handling %s", kind)
            self._expire()

    def _dispatch(self, kind: str, owner: str | None, sock: socket.socket) -> None:
        if kind == "control-listener":
            conn, _ = sock.accept()
            conn.setblocking(True)
            self.sel.register(conn, ("control", None))
        elif kind == "control":
            self._control(sock)
        elif kind == "udp":
            self._udp(sock, owner or "")
        elif kind == "tcp-listener":
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.setblocking(False)
            served = self.served.get(owner or "")
            if served is None:
                conn.close()
                return
            served.buffers[conn] = bytearray()
            self.sel.register(conn, ("tcp", owner))
        elif kind == "tcp":
            self._tcp(sock, owner or "")
        elif kind == "upstream":
            self._upstream(sock)

    # control
    def _control(self, conn: socket.socket) -> None:
        try:
            message, fds = control.receive(conn)
        except (OSError, ValueError):
            message, fds = None, []
        if message is None:
            self.sel.unregister(conn)
            conn.close()
            return
        try:
            reply = self._request(message, fds)
        except Exception as exc:  # answered, not fatal
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            reply = {"ok": False, "error": str(exc)}
        try:
            control.send(conn, reply)
        except OSError:
            pass

    def _request(self, message: dict, fds: list[int]) -> dict:
        op = message.get("op")
        cid = str(message.get("container") or "")
        if op == "attach":
            if len(fds) != 2 or not cid:
                raise ValueError("attach needs a container and two sockets")
            self._detach(cid)
            udp = socket.socket(fileno=fds[0])
            tcp = socket.socket(fileno=fds[1])
            for s in (udp, tcp):
                s.setblocking(False)
            self.served[cid] = Served(udp, tcp)
            self.sel.register(udp, ("udp", cid))
            self.sel.register(tcp, ("tcp-listener", cid))
            return {"ok": True}
        if op == "detach":
            self._detach(cid)
            return {"ok": True}
        if op == "reload":
            self.reload()
            return {"ok": True}
        if op == "list":
            return {"ok": True, "containers": sorted(self.served)}
        if op == "stop":
            self.running = False
            return {"ok": True}
        raise ValueError(f"unknown request {op!r}")

    def _detach(self, cid: str) -> None:
        served = self.served.pop(cid, None)
        if served is None:
            return
        for s in (served.udp, served.tcp, *served.buffers):
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        for upstream, waiting in list(self.pending.items()):
            if waiting.client is served.udp:
                self._drop(upstream)

    # UDP
    def _udp(self, sock: socket.socket, cid: str) -> None:
        while True:
            try:
                raw, peer = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    continue
                return
            fast = self.cache.answer(cid, raw)
            if fast is not None:
                self._send_udp(sock, fast, peer)
                continue
            try:
                query = DNSRecord.parse(raw)
            except (DNSError, IndexError, ValueError):
                continue
            reply = answer(self.records, cid, query, max_udp_size(query))
            if reply is not None:
                self._send_udp(sock, reply.pack(), peer)
                continue
            view = self.records.view(cid)
            servers = list(view.upstream) if view is not None else []
            if not servers or len(self.pending) >= MAX_PENDING:
                self._send_udp(sock, failure(query).pack(), peer)
                continue
            self._forward(Pending(query, raw, sock, peer, servers, 0.0))

    @staticmethod
    def _send_udp(sock: socket.socket, data: bytes, peer: tuple) -> None:
        try:
            sock.sendto(data, peer)
        except OSError:
            pass

    def _forward(self, waiting: Pending) -> None:
        """Send the query to the next upstream server, or SERVFAIL when none is left."""
        while waiting.servers:
            server = waiting.servers.pop(0)
            family = socket.AF_INET6 if ":" in server else socket.AF_INET
            up = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                up.setblocking(False)
                up.connect((server, 53))
                up.send(waiting.raw)
            except OSError as exc:
                LOG.debug("cannot ask %s: %s", server, exc)
                up.close()
                continue
            waiting.deadline = time.monotonic() + UPSTREAM_TIMEOUT
            self.pending[up] = waiting
            self.sel.register(up, ("upstream", None))
            return
        self._send_udp(waiting.client, failure(waiting.query).pack(), waiting.peer)

    def _upstream(self, up: socket.socket) -> None:
        waiting = self.pending.get(up)
        try:
            data = up.recv(65535)
        except OSError:
            data = b""
        self._drop(up)
        if waiting is None:
            return
        try:
            reply = DNSRecord.parse(data) if data else None
        except (DNSError, IndexError, ValueError):
            reply = None
        if reply is None or (reply.header.rcode in (2, 5) and waiting.servers):  # SERVFAIL, REFUSED: next one
            self._forward(waiting)
            return
        self._send_udp(waiting.client, data, waiting.peer)

    def _drop(self, up: socket.socket) -> None:
        self.pending.pop(up, None)
        try:
            self.sel.unregister(up)
        except (KeyError, ValueError):
            pass
        up.close()

    def _expire(self) -> None:
        now = time.monotonic()
        for up, waiting in list(self.pending.items()):
            if waiting.deadline <= now:
                self._drop(up)
                self._forward(waiting)

    # TCP (two bytes of length, then the message)
    def _tcp(self, conn: socket.socket, cid: str) -> None:
        served = self.served.get(cid)
        buf = served.buffers.get(conn) if served is not None else None
        try:
            data = conn.recv(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data or buf is None:
            self._close_tcp(conn, served)
            return
        buf += data
        while len(buf) >= 2:
            (size,) = struct.unpack("!H", buf[:2])
            if len(buf) < 2 + size:
                break
            raw = bytes(buf[2 : 2 + size])
            del buf[: 2 + size]
            fast = self.cache.answer(cid, raw, 65535)
            if fast is not None:
                self._send_tcp(conn, fast)
                continue
            try:
                query = DNSRecord.parse(raw)
            except (DNSError, IndexError, ValueError):
                self._close_tcp(conn, served)
                return
            reply = answer(self.records, cid, query, 65535)
            if reply is not None:
                self._send_tcp(conn, reply.pack())
                continue
            view = self.records.view(cid)
            servers = list(view.upstream) if view is not None else []
            threading.Thread(
                target=self._forward_tcp, args=(conn, query, raw, servers), name="dns-tcp", daemon=True
            ).start()

    def _close_tcp(self, conn: socket.socket, served: Served | None) -> None:
        if served is not None:
            served.buffers.pop(conn, None)
        try:
            self.sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def _send_tcp(self, conn: socket.socket, data: bytes) -> None:
        """Write a length-prefixed answer; the socket stays non-blocking (the loop reads it), so wait for room."""
        payload = memoryview(struct.pack("!H", len(data)) + data)
        deadline = time.monotonic() + UPSTREAM_TIMEOUT
        with self._lock:
            while payload:
                try:
                    sent = conn.send(payload)
                except (BlockingIOError, InterruptedError):
                    left = deadline - time.monotonic()
                    poller = select.poll()
                    poller.register(conn, select.POLLOUT)
                    if left <= 0 or not poller.poll(int(left * 1000)):
                        return
                    continue
                except OSError:
                    return
                payload = payload[sent:]

    def _forward_tcp(self, conn: socket.socket, query: DNSRecord, raw: bytes, servers: list[str]) -> None:
        for server in servers:
            try:
                with socket.create_connection((server, 53), timeout=UPSTREAM_TIMEOUT) as up:
                    up.sendall(struct.pack("!H", len(raw)) + raw)
                    head = _read_exact(up, 2)
                    data = _read_exact(up, struct.unpack("!H", head)[0])
            except OSError:
                continue
            self._send_tcp(conn, data)
            return
        self._send_tcp(conn, failure(query).pack())

    def close(self) -> None:
        for cid in list(self.served):
            self._detach(cid)
        if self.listener is not None:
            try:
                os.unlink(control.control_path(self.home))
            except FileNotFoundError:
                pass
            self.listener.close()
        try:
            os.unlink(os.path.join(self.home, control.PIDFILE))
        except FileNotFoundError:
            pass


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("short read")
        data += chunk
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.dns.server", description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True, help="the directory of the control socket and the records")
    parser.add_argument("--daemon", action="store_true", help="fork; print the resolver's PID and exit")
    args = parser.parse_args(argv)
    home = os.path.realpath(args.home)
    os.makedirs(home, mode=0o700, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s resolver[%(process)d] %(levelname)s %(message)s")
    resolver = Resolver(home)
    # Bound before the fork returns: the daemon may connect as soon as it has the PID.
    resolver.listen()
    if args.daemon:
        pid = os.fork()
        if pid:
            sys.stdout.write(f"{pid}\n")
            sys.stdout.flush()
            os._exit(0)
        os.setsid()
        # The daemon reads the PID until EOF: the resolver must not hold its pipe.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)
    with open(os.path.join(home, control.PIDFILE), "w", encoding="ascii") as fh:
        fh.write(f"{os.getpid()}\n")

    def stop(_signum: int, _frame: object) -> None:
        resolver.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    LOG.info("serving, control socket %s", control.control_path(home))
    try:
        resolver.run()
    finally:
        resolver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
