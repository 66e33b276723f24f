"""The userland proxy: relays published host ports to a container, TCP and UDP (Docker's docker-proxy).

::

    python -S -P -m engine_net_bridge.proxy [--hold] [--home DIR] --container ID FD:PROTO:IP:PORT ...

The daemon binds every host socket itself, so the port is taken before this
process exists, and passes them as inherited descriptors: ``FD`` is a
listening TCP socket or a bound UDP socket whose traffic goes to the
container's ``IP:PORT``. One process serves every port of one publication.
``--home`` names the daemon's network state directory; the proxy ignores
it, the daemon finds its own proxies by it.

With ``--hold`` (``--userland-proxy=false``: DNAT alone carries the
traffic) it relays nothing and only keeps the sockets, as dockerd's "dummy
proxy" does, so that no other program can bind the port and have its
traffic silently taken by the DNAT rule; being a process of its own, it
holds the port across daemon restarts as the relaying proxy does.

It is what makes ``127.0.0.1:PORT`` reach a container (the kernel does not
DNAT loopback traffic to another interface) and what answers a container
that connects to a published port of its own host.

At start the process forks: the parent prints the child's PID and exits,
so the daemon reaps it at once, and the child, in a session of its own, is
adopted by init. It outlives a daemon restart; the daemon finds it again by
PID and start time and ends it with SIGTERM.

TCP keeps half-closes (one side's EOF becomes ``shutdown(SHUT_WR)`` on the
other once its buffer is drained). UDP keeps one connected socket toward the
container per client address and forgets it after 90 s without traffic, as
docker-proxy does. Only the standard library's light modules are imported
(selectors, not asyncio): one of these runs per published container.

Running out of descriptors (``EMFILE``, ``ENFILE``) costs clients, never
the proxy: at start it raises its soft ``RLIMIT_NOFILE`` to the hard limit;
when ``accept`` or the socket toward the container fails for lack of them,
the client is closed and the listener is left alone for a while (the
backlog keeps the next ones waiting, and the loop does not spin on a
listener that stays readable); a UDP datagram that would need a new socket
is dropped, and the number of UDP flows is capped (the least recently used
one goes first) so that they cannot eat every descriptor. Such errors are
logged once a minute at most.
"""

from __future__ import annotations

import collections.abc
import errno
import os
import resource
import selectors
import signal
import socket
import sys
import time
from collections import OrderedDict

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
#: Bytes buffered per direction before we stop reading from the sender.
LIMIT = 256 * 1024
CHUNK = 64 * 1024
#: docker-proxy's UDPConnTrackTimeout.
UDP_TIMEOUT = 90.0
#: UDP flows (client addresses) one published port keeps at most.
UDP_MAX_FLOWS = 1024
#: How long a listener rests after running out of descriptors: the first
#: pause, doubled on each failure in a row up to the last.
PAUSE_FIRST, PAUSE_MAX = 0.05, 1.0
#: Out of descriptors or kernel memory: waiting helps, retrying at once does not.
SCARCE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: At most one line per kind of repeated error in this many seconds.
LOG_EVERY = 60.0

_tag = "proxy"


def log(message: str) -> None:
    """One line on stderr (the daemon points it at ``<home>/proxy.log``)."""
    try:
        os.write(2, f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {_tag}: {message}\n".encode(errors="replace"))
    except OSError:
        pass


_quiet: dict[str, list] = {}  # kind -> [when logged, how many since]


def log_now_and_then(kind: str, message: str) -> None:
    """:func:`log`, but one line per ``kind`` and :data:`LOG_EVERY` at most, saying how many were left out."""
    now = time.monotonic()
    seen = _quiet.get(kind)
    if seen is not None and now - seen[0] < LOG_EVERY:
        seen[1] += 1
        return
    more = f" ({seen[1]} more like it since the last report)" if seen and seen[1] else ""
    _quiet[kind] = [now, 0]
    log(message + more)


def raise_nofile_limit() -> int:
    """Soft ``RLIMIT_NOFILE`` up to the hard limit (never above: that needs CAP_SYS_RESOURCE); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard
    if hard == resource.RLIM_INFINITY:  # the kernel's ceiling is fs.nr_open then
        try:
            with open("/proc/sys/fs/nr_open", encoding="ascii") as fh:
                want = int(fh.read())
        except (OSError, ValueError):
            return soft
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (OSError, ValueError) as exc:
            log(f"cannot raise the open files limit from {soft} to {want}: {exc}")
    return soft


class Loop:
    """A selector that remembers what each socket waits for, and timers."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.events: dict[int, int] = {}
        self.udp: list[Udp] = []
        #: (when, action): few, one per resting listener at most.
        self.timers: list[tuple[float, collections.abc.Callable[[], None]]] = []

    def later(self, delay: float, action: collections.abc.Callable[[], None]) -> None:
        """Call ``action`` from the loop in ``delay`` seconds."""
        self.timers.append((time.monotonic() + delay, action))

    def want(self, sock: socket.socket, events: int, handler: object) -> None:
        fd = sock.fileno()
        current = self.events.get(fd, 0)
        if events == current:
            return
        if current == 0:
            self.selector.register(sock, events, handler)
        elif events == 0:
            self.selector.unregister(sock)
        else:
            self.selector.modify(sock, events, handler)
        if events:
            self.events[fd] = events
        else:
            self.events.pop(fd, None)

    def forget(self, sock: socket.socket) -> None:
        if sock.fileno() >= 0 and self.events.pop(sock.fileno(), 0):
            self.selector.unregister(sock)

    def run(self) -> None:
        next_sweep = time.monotonic() + UDP_TIMEOUT
        while True:
            deadlines = ([next_sweep] if self.udp else []) + [when for when, _action in self.timers]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            for key, mask in self.selector.select(timeout):
                try:
                    key.data.on_event(key.fileobj, mask)
                except OSError as exc:
                    # Whatever a handler did not expect ends that handler's
                    # work (a connection, a round of accepts), never the loop.
                    key.data.on_error(exc)
            now = time.monotonic()
            if self.timers:
                due = [t for t in self.timers if t[0] <= now]
                self.timers = [t for t in self.timers if t[0] > now]
                for _when, action in due:
                    action()
            if self.udp and now >= next_sweep:
                for relay in self.udp:
                    relay.expire(now)
                next_sweep = now + UDP_TIMEOUT / 3


class Listener:
    """A published TCP port: accepts and starts a :class:`Tcp` per client."""

    def __init__(self, loop: Loop, sock: socket.socket, backend: tuple[str, int]) -> None:
        self.loop = loop
        self.sock = sock
        self.backend = backend
        host, port = sock.getsockname()[:2]
        self.name = f"{host}:{port}"
        self.pause = PAUSE_FIRST
        sock.setblocking(False)
        loop.want(sock, READ, self)

    def on_event(self, _sock: socket.socket, _mask: int) -> None:
        for _ in range(64):
            try:
                client, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in SCARCE:
                    self.rest(f"accept on {self.name}", exc)
                    return
                continue  # ECONNABORTED, EPROTO: that client gave up; the next may not
            try:
                backend = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            except OSError as exc:
                client.close()
                self.rest(f"a socket toward {self.backend[0]}:{self.backend[1]} for a client of {self.name}", exc)
                return
            self.pause = PAUSE_FIRST
            Tcp(self.loop, client, backend, self.backend)

    def on_error(self, exc: OSError) -> None:
        self.rest(f"accepting on {self.name}", exc)

    def rest(self, what: str, exc: OSError) -> None:
        """Stop accepting for a while: the listener stays readable, so the loop would spin on it."""
        log_now_and_then(f"rest {self.name}", f"{what}: {exc.strerror or exc}; not accepting for {self.pause:g}s")
        self.loop.want(self.sock, 0, self)
        self.loop.later(self.pause, self.resume)
        self.pause = min(self.pause * 2, PAUSE_MAX)

    def resume(self) -> None:
        self.loop.want(self.sock, READ, self)


class Tcp:
    """One relayed TCP connection, both directions, with half-closes."""

    def __init__(
        self, loop: Loop, client: socket.socket, backend_sock: socket.socket, backend: tuple[str, int]
    ) -> None:
        self.loop = loop
        self.client = client
        self.backend = backend_sock
        self.up = bytearray()  # client -> container
        self.down = bytearray()  # container -> client
        self.client_eof = self.backend_eof = False
        self.client_shut = self.backend_shut = False
        self.closed = False
        client.setblocking(False)
        self.backend.setblocking(False)
        err = self.backend.connect_ex(backend)
        if err not in (0, errno.EINPROGRESS):
            log(f"connect to {backend[0]}:{backend[1]}: {os.strerror(err)}")
            self.close()
            return
        self.connecting = True
        self.update()

    def close(self) -> None:
        self.closed = True
        for sock in (self.client, self.backend):
            self.loop.forget(sock)
            sock.close()

    def on_error(self, exc: OSError) -> None:
        log_now_and_then("tcp", f"relay to {self.backend_name()}: {exc.strerror or exc}; closed")
        self.close()

    def update(self) -> None:
        if self.closed:
            return
        try:
            if self.client_eof and not self.up and not self.backend_shut and not self.connecting:
                self.backend.shutdown(socket.SHUT_WR)
                self.backend_shut = True
            if self.backend_eof and not self.down and not self.client_shut:
                self.client.shutdown(socket.SHUT_WR)
                self.client_shut = True
        except OSError:
            self.close()
            return
        if self.client_shut and self.backend_shut:
            self.close()
            return
        want_client = (READ if not self.client_eof and len(self.up) < LIMIT else 0) | (WRITE if self.down else 0)
        if self.connecting:
            want_backend = WRITE
        else:
            want_backend = (READ if not self.backend_eof and len(self.down) < LIMIT else 0) | (WRITE if self.up else 0)
        self.loop.want(self.client, want_client, self)
        self.loop.want(self.backend, want_backend, self)

    def on_event(self, sock: socket.socket, mask: int) -> None:
        if self.closed:
            return
        from_client = sock is self.client
        if not from_client and self.connecting:
            err = self.backend.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                log(f"connect to {self.backend_name()}: {os.strerror(err)}")
                self.close()
                return
            self.connecting = False
        try:
            if mask & READ:
                data = sock.recv(CHUNK)
                if not data:
                    if from_client:
                        self.client_eof = True
                    else:
                        self.backend_eof = True
                else:
                    (self.up if from_client else self.down).extend(data)
            if mask & WRITE:
                buf = self.down if from_client else self.up
                if buf:
                    sent = sock.send(buf)
                    del buf[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            # ECONNRESET, EPIPE: the connection is over for both sides.
            self.close()
            return
        self.update()

    def backend_name(self) -> str:
        try:
            host, port = self.backend.getpeername()[:2]
            return f"{host}:{port}"
        except OSError:
            return "the container"


class Udp:
    """A published UDP port: one connected socket toward the container per client."""

    def __init__(
        self, loop: Loop, sock: socket.socket, backend: tuple[str, int], max_flows: int = UDP_MAX_FLOWS
    ) -> None:
        self.loop = loop
        self.front = sock
        self.backend = backend
        self.max_flows = max_flows
        #: client -> [socket, last use], least recently used first.
        self.flows: OrderedDict[tuple[str, int], list] = OrderedDict()
        self.clients: dict[int, tuple[str, int]] = {}  # socket fd -> client
        sock.setblocking(False)
        loop.want(sock, READ, self)
        loop.udp.append(self)

    def on_event(self, sock: socket.socket, _mask: int) -> None:
        now = time.monotonic()
        if sock is self.front:
            for _ in range(64):
                try:
                    data, client = self.front.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return
                flow = self.flows.get(client)
                if flow is None:
                    flow = self.open_flow(client, now)
                    if flow is None:
                        continue  # the datagram is dropped, as a full network would
                else:
                    self.flows.move_to_end(client)
                flow[1] = now
                try:
                    flow[0].send(data)
                except OSError:
                    pass  # ECONNREFUSED from an earlier datagram; UDP drops, so do we
            return
        client = self.clients.get(sock.fileno())
        if client is None:
            return
        for _ in range(64):
            try:
                data = sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            try:
                self.front.sendto(data, client)
            except OSError:
                pass
        self.flows[client][1] = now
        self.flows.move_to_end(client)

    def on_error(self, exc: OSError) -> None:
        log_now_and_then("udp", f"udp relay to {self.backend[0]}:{self.backend[1]}: {exc.strerror or exc}")

    def open_flow(self, client: tuple[str, int], now: float) -> list | None:
        """A connected socket toward the container for a new client, or None (logged now and then)."""
        while len(self.flows) >= self.max_flows:
            self.drop(next(iter(self.flows)))  # the one idle for longest
        try:
            out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as exc:
            log_now_and_then(
                "udp socket",
                f"udp: no socket toward {self.backend[0]}:{self.backend[1]} for a new "
                f"client ({exc.strerror}); its datagrams are dropped",
            )
            return None
        try:
            out.setblocking(False)
            out.connect(self.backend)
            self.loop.want(out, READ, self)
        except OSError as exc:
            log_now_and_then("udp connect", f"udp connect to {self.backend[0]}:{self.backend[1]}: {exc.strerror}")
            self.loop.forget(out)
            out.close()
            return None
        flow = self.flows[client] = [out, now]
        self.clients[out.fileno()] = client
        return flow

    def drop(self, client: tuple[str, int]) -> None:
        sock = self.flows.pop(client)[0]
        self.clients.pop(sock.fileno(), None)
        self.loop.forget(sock)
        sock.close()

    def expire(self, now: float) -> None:
        while self.flows:
            client, (_sock, last) = next(iter(self.flows.items()))
            if now - last < UDP_TIMEOUT:
                return  # the rest were used later
            self.drop(client)


def parse(argv: list[str]) -> tuple[str, list[tuple[int, str, str, int]], bool]:
    """``[--hold] [--home DIR] --container ID FD:PROTO:IP:PORT...`` -> (id, maps, hold)."""
    container = ""
    hold = False
    maps: list[tuple[int, str, str, int]] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--container" and args:
            container = args.pop(0)
            continue
        if arg == "--hold":
            hold = True
            continue
        if arg == "--home" and args:
            args.pop(0)  # only for the daemon to recognize us
            continue
        fd, proto, ip, port = arg.split(":")
        if proto not in ("tcp", "udp"):
            raise ValueError(f"bad protocol in {arg!r}")
        maps.append((int(fd), proto, ip, int(port)))
    if not maps:
        raise ValueError("nothing to proxy")
    return container, maps, hold


def hold_only(maps: list[tuple[int, str, str, int]]) -> int:
    """Keep the sockets open, and nothing else, until SIGTERM."""
    held = [socket.socket(fileno=fd) for fd, *_ in maps]  # referenced: a collected socket closes its fd
    for sock, (_fd, proto, ip, port) in zip(held, maps):
        host, host_port = sock.getsockname()[:2]
        log(f"{host}:{host_port}/{proto} held (DNAT to {ip}:{port})")
    try:
        while True:
            signal.pause()
    except SystemExit:
        pass
    return 0


def _stop(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str]) -> int:
    global _tag
    try:
        container, maps, hold = parse(argv)
    except ValueError as exc:
        sys.stderr.write(
            f"usage: python -m engine_net_bridge.proxy [--hold] [--home DIR] --container ID "
            f"FD:PROTO:IP:PORT...: {exc}\n"
        )
        return 2
    pid = os.fork()
    if pid:
        os.write(1, b"%d\n" % pid)
        return 0
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # the daemon reads stdout to EOF: let go of it
    os.close(null)
    _tag = f"proxy {os.getpid()} [{container}]"
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if hold:
        return hold_only(maps)
    nofile = raise_nofile_limit()
    # Half the descriptors at most for UDP flows, shared by the UDP ports.
    udp_ports = sum(1 for m in maps if m[1] == "udp") or 1
    max_flows = max(4, min(UDP_MAX_FLOWS, nofile // 2 // udp_ports))
    loop = Loop()
    for fd, proto, ip, port in maps:
        sock = socket.socket(fileno=fd)
        host, host_port = sock.getsockname()[:2]
        if proto == "tcp":
            Listener(loop, sock, (ip, port))
        else:
            Udp(loop, sock, (ip, port), max_flows)
        log(f"{host}:{host_port}/{proto} -> {ip}:{port}")
    try:
        loop.run()
    except SystemExit:
        pass
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)
