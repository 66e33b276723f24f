"""The shim fork server: ``python -S -P -m engine.shim.forkserver CONTROL_FD [MODULE...]``.

Half of a shim's start used to be the interpreter's start and the imports
of the shim and the exec driver (about 35 ms of the 70 from launch to the
container's exec, on 2 cores). The daemon now keeps one warm process that
has done both, and forks a launcher from it for each start::

    daemon --SOCK_SEQPACKET--> fork server --fork--> launcher --fork--> shim
      ^                                                 |
      '------------ one JSON line on the connection ----'

Each request is one message on the control socket (its descriptor is the
first argument; the modules to import follow): the JSON
``{"dir": <container dir>, "fds": [<the daemon's numbers of the attach
connections>]}``, with the descriptors as ancillary data: the launcher's
stdout and stderr (sockets), then the attach connections in the order of
``fds``. The launcher first checks that the daemon still waits (a request
that sat in the queue while the daemon gave up is dropped), becomes a
session leader, takes the socket for its stdin and stdout, writes
:data:`~engine.shim.protocol.ACK` and runs :func:`engine.shim.shim.launch`
exactly as ``python -S -m engine.shim <dir>`` would, minus the imports (the
rest of the exchange is in :mod:`engine.shim.protocol`). An answer without
the ACK means no launcher ran: the daemon then launches directly.
Its shim is a copy of this process: the pages of the interpreter and of
the imported modules stay shared by the fork server and every shim until
one writes to them, so each shim costs less memory (PSS) too.

A request ``{"call": "module:function", "args": [...], "fds": [...]}``
forks a driver's *helper* instead (:class:`engine.drivers.exec.HelperSpawner`):
the first descriptor becomes the helper's stderr, the others are passed to
``function(args, {the daemon's number: the helper's})``, whose return value
is the helper's exit status. The module is imported here once, before the
first fork, so a helper starts warm (the exec driver's ``nsenter``: an exec
costs a fork instead of an interpreter's start). Nothing is acknowledged:
the helper reports on its descriptors, and a refused request writes its
reason to the stderr descriptor.

The fork server is single-threaded (it forks), answers ``ready`` once its
imports are done, reaps its launchers, and exits when the control socket
reaches EOF: the daemon closed it or died. The shims never depend on it.
"""

from __future__ import annotations

import importlib
import json
import os
import select
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


def _reap() -> int:
    """Collect every launcher that exited; how many are still running."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return 0
        if pid == 0:
            return 1


def _hung_up(fd: int) -> bool:
    """Whether the daemon closed its end of ``fd`` (it gave up on this start)."""
    poller = select.poll()
    poller.register(fd, 0)
    return any(events & (select.POLLHUP | select.POLLERR) for _fd, events in poller.poll(0))


def _run_launcher(ctl: socket.socket, request: dict, fds: list[int]) -> int:
    """In the forked child: become the launcher of ``request`` (never returns into the loop)."""
    from engine.shim import shim

    ctl.close()
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
    return shim.launch(os.path.abspath(str(request["dir"])), dict(zip(numbers, attach)))


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


def _run_helper(ctl: socket.socket, function: Callable, request: dict, fds: list[int]) -> int:
    """In the forked child: become the helper of ``request`` (never returns into the loop)."""
    ctl.close()
    os.dup2(fds[0], 2)
    os.close(fds[0])
    numbers = [int(n) for n in request.get("fds", [])]
    if len(numbers) != len(fds) - 1:
        sys.stderr.write(f"engine.shim.forkserver: {len(fds) - 1} descriptors for {len(numbers)}\n")
        return 1
    try:
        return int(function(list(request.get("args", [])), dict(zip(numbers, fds[1:]))) or 0)
    except BaseException:
        import traceback

        traceback.print_exc()  # to the caller's stderr pipe: os._exit follows, nothing else would say it
        return 1


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
    """Fork a launcher for each request until the daemon closes the control socket."""
    ctl.sendall(READY)
    poller = select.poll()
    poller.register(ctl.fileno(), select.POLLIN)
    running = 0
    while True:
        # While launchers run, wake now and then to reap them.
        if not poller.poll(1000 if running else None):
            running = _reap()
            continue
        try:
            message, fds, flags, _addr = socket.recv_fds(ctl, MAX_REQUEST, MAX_FDS)
        except OSError as exc:
            sys.stderr.write(f"engine.shim.forkserver: control socket: {exc}\n")
            return 1
        if not message and not fds:
            return 0  # the daemon closed its end (or died)
        refuse = _refuse
        function = None
        try:
            if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
                raise ValueError("the request or its descriptors were truncated")
            request = json.loads(message)
            if isinstance(request, dict) and "call" in request:
                refuse = _refuse_call
                if not fds:
                    raise ValueError("a helper request carries its stderr first")
                function = _call_target(request)
            elif len(fds) < 2 or not isinstance(request, dict) or "dir" not in request:
                raise ValueError("a request is {'dir', 'fds'} with stdout and stderr first")
        except ValueError as exc:
            sys.stderr.write(f"engine.shim.forkserver: bad request: {exc}\n")
            if fds:
                refuse(fds, f"the shim fork server refused the request: {exc}")
            continue
        try:
            pid = os.fork()
        except OSError as exc:  # EAGAIN (a pids limit), ENOMEM: this start fails, the server stays
            what = "a helper" if function is not None else "the shim's launcher"
            refuse(fds, f"cannot fork {what}: {exc.strerror}")
            continue
        if pid == 0:
            code = 1
            try:
                if function is not None:
                    code = _run_helper(ctl, function, request, fds)
                else:
                    code = _run_launcher(ctl, request, fds)
            finally:
                try:
                    sys.stdout.flush()
                finally:
                    os._exit(code)
        for fd in fds:  # the launcher has its copies
            os.close(fd)
        running = _reap() or 1


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
    importlib.import_module("engine.shim.shim")  # warmed up for every launcher
    for name in argv[1:]:
        importlib.import_module(name)
    return serve(ctl)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
