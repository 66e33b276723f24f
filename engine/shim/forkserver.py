"""The shim fork server: ``python -S -P -m engine.shim.forkserver CONTROL_FD [MODULE...]``.

Half of a shim's start used to be the interpreter's start and the imports
of the shim and the exec driver (about 35 ms of the 70 from launch to the
container's exec, on 2 cores). The daemon now keeps one warm process that
has done both, and each start is a fork of it::

    daemon --SOCK_SEQPACKET--> fork server --request--> template --go--> shim --fork--> starter
      ^                                               (forked ahead)  |
      '------------------ ACK, one JSON line on the connection -------'

Each request is one message on the control socket (its descriptor is the
first argument; the modules to import follow): the JSON
``{"dir": <container dir>, "fds": [<the daemon's numbers of the attach
connections>]}``, with the descriptors as ancillary data: the launcher's
stdout and stderr (sockets), then the attach connections in the order of
``fds``. The fork server checks it and passes it on to the *template*
(:class:`Template`), whose child forked ahead for it (nobody here waits
for its exit: the template ignores SIGCHLD) takes the request, checks that the
daemon still waits (a request that sat in the queue while the daemon gave
up is dropped), becomes a session leader, takes the socket for its stdin
and stdout, writes :data:`~engine.shim.protocol.ACK` and becomes the
container's shim (:func:`engine.shim.shim.run_forked`), whose starter
answers the daemon as ``python -S -m engine.shim <dir>`` would (the rest of
the exchange is in :mod:`engine.shim.protocol`). An answer without the ACK
means no launcher ran: the daemon then launches directly.

The shim is a copy of this process: the pages of the interpreter and of
the imported modules stay shared by the fork server and every shim until
one writes to them, so each shim costs less memory (PSS) too. To keep it
so, the server first runs what every shim runs (:func:`engine.shim.shim.warm_up`)
and freezes the garbage collector's generations, and the template, which
the shims are forked from, runs almost nothing between two forks.

A request ``{"call": "module:function", "args": [...], "fds": [...]}``
forks a driver's *helper* instead (:class:`engine.drivers.exec.HelperSpawner`):
the first descriptor becomes the helper's stderr, the others are passed to
``function(args, {the daemon's number: the helper's})``, whose return value
is the helper's exit status. The module is imported here once, before the
first fork, so a helper starts warm (the exec driver's ``nsenter``: an exec
costs a fork instead of an interpreter's start); a module first imported for a
request gets a new template, so that later helpers find it imported. Nothing is acknowledged:
the helper reports on its descriptors, and a refused request writes its
reason to the stderr descriptor.

The fork server and the template are single-threaded (they fork); the
server answers ``ready`` once its imports are done, and both exit when the
control socket reaches EOF: the daemon closed it or died. The shims never
depend on them.
"""

from __future__ import annotations

import gc
import importlib
import json
import marshal
import os
import select
import signal
import socket
import sys
from collections.abc import Callable

from engine.shim import protocol

#: The reply once the imports are done.
READY = b"ready"
#: The largest request (a container directory and a few descriptor numbers).
MAX_REQUEST = 65536
#: The most descriptors one request may carry (the kernel's SCM_MAX_FD).
MAX_FDS = 253


def _hung_up(fd: int) -> bool:
    """Whether the daemon closed its end of ``fd`` (it gave up on this start)."""
    poller = select.poll()
    poller.register(fd, 0)
    return any(events & (select.POLLHUP | select.POLLERR) for _fd, events in poller.poll(0))


def _run_launcher(request: dict, fds: list[int]) -> int:
    """In the forked child: become the shim of ``request``, its starter the launcher the daemon
    talks to (never returns into the loop)."""
    from engine.shim import shim

    out, err, attach = fds[0], fds[1], fds[2:]
    if _hung_up(out):
        return 0  # a request that waited too long: the daemon has moved on
    os.setsid()
    os.dup2(out, 0)  # the daemon's acknowledgement comes back on it (protocol)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    os.close(err)
    os.write(1, protocol.ACK)  # without it the daemon may launch directly
    numbers = [int(n) for n in request.get("fds", [])]
    if len(numbers) != len(attach):
        for fd in attach:
            os.close(fd)
        shim._print({"Error": f"the fork server got {len(attach)} attach descriptors for {len(numbers)}"})
        return 0
    for fd in attach:
        os.set_inheritable(fd, True)  # as pass_fds would leave them; the shim clears the flag
    return shim.run_forked(os.path.abspath(str(request["dir"])), dict(zip(numbers, attach)))


def _call_target(request: dict) -> Callable[[list, dict[int, int]], int]:
    """The function a helper request names (``"module:function"``), imported here before the fork.

    :raises ValueError: it is not a ``module:function`` that can be imported.
    """
    module, sep, name = str(request["call"]).partition(":")
    if not sep or not module or not name:
        raise ValueError(f"call {request['call']!r} is not module:function")
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"call {request['call']!r}: {exc}") from None
    if not callable(function):
        raise ValueError(f"call {request['call']!r} is not a function")
    return function


def _run_helper(function: Callable, request: dict, fds: list[int]) -> int:
    """In the forked child: become the helper of ``request`` (never returns into the loop)."""
    os.dup2(fds[0], 2)
    os.close(fds[0])
    numbers = [int(n) for n in request.get("fds", [])]
    if len(numbers) != len(fds) - 1:
        sys.stderr.write(f"engine.shim.forkserver: {len(fds) - 1} descriptors for {len(numbers)}\n")
        return 1
    try:
        code = int(function(list(request.get("args", [])), dict(zip(numbers, fds[1:]))) or 0)
    except BaseException:
        import traceback

        traceback.print_exc()  # to the caller's stderr pipe: os._exit follows, nothing else would say it
        return 1
    # The caller reads its stderr to the end: the end comes now, not after this process's
    # teardown (unmapping a copy of the fork server: most of a millisecond).
    os.close(2)
    return code


def _refuse_call(fds: list[int], message: str) -> None:
    """Answer a helper request that gets no helper: the reason on its stderr descriptor."""
    try:
        os.write(fds[0], f"engine.shim.forkserver: {message}\n".encode())
    except OSError:
        pass
    for fd in fds:
        os.close(fd)


def _refuse(fds: list[int], message: str) -> None:
    """Answer a request that gets no launcher with an error result, and let go of its descriptors."""
    try:
        os.write(fds[0], protocol.ACK + json.dumps({"Error": message}).encode() + b"\n")
    except OSError:
        pass
    for fd in fds:
        os.close(fd)


def serve(ctl: socket.socket) -> int:
    """Pass each request to the template until the daemon closes the control socket."""
    template = Template(close_in_child=ctl.fileno())
    ctl.sendall(READY)
    poller = select.poll()
    poller.register(ctl.fileno(), select.POLLIN)
    try:
        while True:
            poller.poll()
            try:
                message, fds, flags, _addr = socket.recv_fds(ctl, MAX_REQUEST, MAX_FDS)
            except OSError as exc:
                sys.stderr.write(f"engine.shim.forkserver: control socket: {exc}\n")
                return 1
            if not message and not fds:
                return 0  # the daemon closed its end (or died)
            refuse = _refuse
            renew = False
            try:
                if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
                    raise ValueError("the request or its descriptors were truncated")
                request = json.loads(message)
                if isinstance(request, dict) and "call" in request:
                    refuse = _refuse_call
                    if not fds:
                        raise ValueError("a helper request carries its stderr first")
                    known = len(sys.modules)
                    _call_target(request)  # imported here, and checked before anything is forked
                    renew = len(sys.modules) != known
                elif len(fds) < 2 or not isinstance(request, dict) or "dir" not in request:
                    raise ValueError("a request is {'dir', 'fds'} with stdout and stderr first")
            except ValueError as exc:
                sys.stderr.write(f"engine.shim.forkserver: bad request: {exc}\n")
                if fds:
                    refuse(fds, f"the shim fork server refused the request: {exc}")
                continue
            try:
                template.pass_on(request, fds)
            except OSError as exc:  # the template is gone and cannot be made again (EAGAIN, ENOMEM)
                what = "a helper" if "call" in request else "the shim's launcher"
                refuse(fds, f"cannot fork {what}: {exc.strerror}")
                continue
            for fd in fds:  # the template's child has its copies
                os.close(fd)
            if renew:
                # A template forked before the import would import it again in each helper (a
                # millisecond per exec). Not before the request's descriptors are closed here: a
                # template forked with them would hold them open, and the caller wait for EOF.
                template.close()
                template = Template(close_in_child=ctl.fileno())
    finally:
        template.close()


class Template:
    """The process every launcher and helper is forked from: a fork of the fork server that
    runs as little as it can.

    Each page a process writes after the fork that made a shim is the shim's alone once the
    writer has written it again after the next fork: so the pages the fork server writes to
    take a request (the socket, the JSON, the checks, the reaping) would be each shim's own
    copy, about 600 kB. The template only reads a byte, writes one and forks.

    The fork is not on the request's way: the template keeps one child forked ahead
    (:func:`_fork_taker`), which waits on a pipe of its own. A request's byte on the wake
    pipe has the template write the go byte to that child, which then takes the request
    itself, from a socket the fork server passes it on to (marshal, with the descriptors);
    the template forks the next child while this one starts. A child that died waiting
    (killed) is found at the go byte (EPIPE), and the next one is sent. The template ignores
    SIGCHLD, so the kernel reaps its children as they exit (wait(2)), and nothing here waits
    for them; each child sets SIGCHLD back to the default first thing, since its own children
    are to be waited for.
    """

    def __init__(self, close_in_child: int = -1) -> None:
        self.pid = 0
        self._close_in_child = close_in_child
        self._requests: socket.socket | None = None
        self._wake = -1
        self._start()

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        wake_r, wake_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # never returns
            ours.close()
            os.close(wake_w)
            if self._close_in_child >= 0:  # the control socket: the server's alone
                os.close(self._close_in_child)
            _template_loop(wake_r, theirs)
        theirs.close()
        os.close(wake_r)
        self.pid, self._requests, self._wake = pid, ours, wake_w

    def pass_on(self, request: dict, fds: list[int]) -> None:
        """Have the template fork for ``request``; a dead template is replaced first.

        :raises OSError: no template can run.
        """
        for attempt in (1, 2):
            try:
                assert self._requests is not None
                socket.send_fds(self._requests, [marshal.dumps(request)], fds)
                os.write(self._wake, b"!")
                return
            except (BrokenPipeError, ConnectionResetError):
                if attempt == 2:
                    raise
                sys.stderr.write("engine.shim.forkserver: the template died; starting another\n")
                self.close()
                self._start()

    def close(self) -> None:
        """Let the template go (it exits at EOF) and collect it."""
        if self._requests is not None:
            self._requests.close()
            self._requests = None
        if self._wake >= 0:
            os.close(self._wake)
            self._wake = -1
        if self.pid:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = 0


#: Children forked for one request before the template gives up on it (each one died waiting).
TAKER_ATTEMPTS = 3


def _template_loop(wake: int, requests: socket.socket) -> None:
    """The template: one go byte to the child forked ahead per byte on ``wake``, exit at its
    EOF (never returns)."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its children are reaped as they exit
    taker = -1  # the go pipe of the child waiting for the next request
    while True:
        if taker < 0:
            taker = _fork_taker(wake, requests)
        if not os.read(wake, 1):
            os._exit(0)  # the children waiting see EOF on their go pipes and exit
        taken = False
        for _attempt in range(TAKER_ATTEMPTS):
            if taker < 0:
                taker = _fork_taker(wake, requests)
                if taker < 0:
                    break  # no child can be forked
            go, taker = taker, -1
            try:
                os.write(go, b"!")
                taken = True
                break
            except OSError:  # it died waiting (EPIPE): another one takes the request
                pass
            finally:
                os.close(go)
        if not taken:
            _take_request(requests, forked=False)  # the template refuses it itself


def _fork_taker(wake: int, requests: socket.socket) -> int:
    """Fork a child that waits for its go byte, then takes the next request; the write end of
    its go pipe, or -1 when the fork failed (a pids limit)."""
    go_r, go_w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(go_r)
        os.close(go_w)
        return -1
    if pid == 0:  # never returns
        code = 1
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # before anything forks and waits
            os.close(wake)
            os.close(go_w)
            go = os.read(go_r, 1)  # EOF: the template exited, no request comes
            os.close(go_r)
            code = _take_request(requests, forked=True) if go else 0
        finally:
            try:
                sys.stdout.flush()
            finally:
                os._exit(code)
    os.close(go_r)
    return go_w


def _take_request(requests: socket.socket, forked: bool) -> int:
    """Take the next request the fork server passed on and run it (``forked``), or refuse it."""
    message, fds, _flags, _addr = socket.recv_fds(requests, MAX_REQUEST, MAX_FDS)
    request = marshal.loads(message)
    if forked:
        requests.close()
    call = "call" in request
    if not forked:
        (_refuse_call if call else _refuse)(fds, "cannot fork: the template could not")
        return 1
    if call:
        return _run_helper(_call_target(request), request, fds)
    return _run_launcher(request, fds)


def main(argv: list[str]) -> int:
    """``<control fd> [module...]``: import the shim and the modules (the exec drivers), then serve."""
    try:
        ctl = socket.socket(fileno=int(argv[0]))
    except (IndexError, ValueError, OSError) as exc:
        sys.stderr.write(
            f"usage: python -S -m engine.shim.forkserver CONTROL_FD [MODULE...] "
            f"(CONTROL_FD: a SOCK_SEQPACKET socket from the daemon): {exc}\n"
        )
        return 2
    ctl.set_inheritable(False)
    shim = importlib.import_module("engine.shim.shim")  # warmed up for every launcher
    for name in argv[1:]:
        importlib.import_module(name)
    shim.warm_up()
    shim.prepare_logging()
    for _ in range(10):  # what each launcher runs first, specialized here once (see shim.warm_up)
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        r, w = os.pipe()
        socket.send_fds(a, [marshal.dumps({"dir": "/", "fds": []})], [r, w])
        _msg, fds, _flags, _addr = socket.recv_fds(b, MAX_REQUEST, MAX_FDS)
        marshal.loads(_msg)
        for fd in (r, w, *fds):
            os.close(fd)
        a.close()
        b.close()
    # What is here now is the shims' to share: no collection here or in them walks it again.
    gc.collect()
    gc.freeze()
    return serve(ctl)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
