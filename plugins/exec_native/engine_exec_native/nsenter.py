"""The ``exec`` helper: a fork of the daemon's fork server (:func:`forked`), or
``python -S -m engine_exec_native.nsenter CONFIG_FD STATUS_FD`` when there is none.

A single-threaded process (the daemon that asks for an exec has threads,
and fork(2) of a threaded Python is unsafe), which

1. reads its JSON config from ``CONFIG_FD`` (the init's PID and start time,
   the cgroup's v1 directories and v2 directory, the process plan, stdio fds);
2. opens every namespace of the init (``/proc/PID/ns/*``) before joining
   any, since joining the mount namespace changes what paths mean;
3. joins the container's cgroup (so everything below is accounted and
   frozen with it), then the namespaces with setns(2): ipc, uts, net, pid,
   cgroup, mnt (setns(2) into a mount namespace also moves the root and
   the working directory to the container's root), and the user namespace
   of a remapped container last;
4. forks, because joining a PID namespace only applies to children
   (setns(2), pid_namespaces(7)); the child runs
   :func:`engine_exec_native.init.exec_child`.

The cgroup is joined without the lock that a write to ``cgroup.procs``
takes: that write-locks what every fork(2) on the machine read-locks, and
the lock first waits for an RCU grace period, 7-8 ms here, most of an
exec's time. In a v1 hierarchy this thread moves itself (``0`` written to
``tasks``, which takes no such lock; the process has this one thread, and a
child starts where the thread that forks it is). The v2 cgroup (a v2 host's,
or a hybrid host's controller-less one) is the child's from its birth:
clone3(2) with CLONE_INTO_CGROUP, as runc's exec does it; where the kernel
has no CLONE_INTO_CGROUP (before 5.7) the helper writes ``cgroup.procs``.
5. reports JSON lines on ``STATUS_FD``: ``{"event": "error", "message"}`` or
   ``{"event": "started", "pid"}`` then ``{"event": "exit", "code"}``.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from typing import Any

from engine.sys import cgroups, libc
from engine.sys.proc import start_time
from engine_exec_native import init

#: Namespaces to join, in order. The mount namespace comes after the others (joining it moves
#: the root), and the user namespace last: those namespaces belong to the host's user namespace,
#: which a process in the container's has no capabilities in (--userns-remap).
NAMESPACES = (
    ("ipc", libc.CLONE_NEWIPC),
    ("uts", libc.CLONE_NEWUTS),
    ("net", libc.CLONE_NEWNET),
    ("pid", libc.CLONE_NEWPID),
    ("cgroup", libc.CLONE_NEWCGROUP),
    ("mnt", libc.CLONE_NEWNS),
    ("user", libc.CLONE_NEWUSER),
)


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


class V2Cgroup:
    """The container's v2 cgroup, opened before the mount namespace changes what paths mean:
    its directory, for CLONE_INTO_CGROUP, and its ``cgroup.procs``, for kernels without it."""

    def __init__(self, procs: str) -> None:
        self.path = os.path.dirname(procs)
        self.directory = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self.procs = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            os.close(self.directory)
            raise

    def fork(self) -> int:
        """fork(2) with the child in this cgroup from its birth."""
        pid = libc.fork_into_cgroup(self.directory)
        if pid is not None:
            return pid
        os.write(self.procs, str(os.getpid()).encode())  # no CLONE_INTO_CGROUP: join, then fork
        return os.fork()

    def close(self) -> None:
        os.close(self.directory)
        os.close(self.procs)


def _join_failed(path: str, exc: OSError) -> init.SetupError:
    return init.SetupError(
        f"joining the container's cgroup {path} failed ({errno.errorcode.get(exc.errno or 0)}): {exc.strerror}"
    )


def join_cgroups(v1: list[str], v2: str | None) -> V2Cgroup | None:
    """Step 3's cgroups: move this thread into each v1 directory; open the v2 one, whose cgroup
    the child gets at its fork (:meth:`V2Cgroup.fork`).

    :raises init.SetupError: a cgroup cannot be joined (or opened).
    """
    for directory in v1:
        try:
            cgroups.join_v1_self([directory])
        except OSError as exc:
            raise _join_failed(directory, exc) from None
    if v2 is None:
        return None
    try:
        return V2Cgroup(os.path.join(v2, "cgroup.procs"))
    except OSError as exc:
        raise _join_failed(v2, exc) from None


def enter(config: dict[str, Any]) -> V2Cgroup | None:
    """Steps 2 and 3: join the container's cgroup and namespaces; the v2 cgroup, if any, for the fork.

    :raises init.SetupError: with a message for the user.
    """
    pid = config["pid"]
    if start_time(pid) != config["start_time"]:
        raise init.SetupError(f"container {config['id']} is not running")
    opened: list[tuple[str, int, int]] = []
    try:
        for kind, flag in NAMESPACES:
            path = f"/proc/{pid}/ns/{kind}"
            try:
                if os.stat(path).st_ino == os.stat(f"/proc/self/ns/{kind}").st_ino:
                    continue  # shared with us (--net=host, no cgroup namespace): nothing to join
                opened.append((kind, flag, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
            except FileNotFoundError:
                if kind == "cgroup":
                    continue  # kernels before 4.6
                raise init.SetupError(f"container {config['id']} is not running") from None
        v2 = join_cgroups(config["cgroup_v1"], config["cgroup_v2"])
        try:
            for kind, flag, fd in opened:
                try:
                    libc.setns(fd, flag)
                except OSError as exc:
                    raise init.SetupError(
                        f"joining the container's {kind} namespace failed "
                        f"({errno.errorcode.get(exc.errno or 0)}): {exc.strerror}"
                    ) from None
        except BaseException:
            if v2 is not None:
                v2.close()
            raise
    finally:
        for _, _, fd in opened:
            os.close(fd)
    return v2


def serve(config_fd: int, status_fd: int, fds: dict[int, int] | None = None) -> int:
    """Read the config, join the container, fork the process, report it (steps 1-5).

    :param fds: the daemon's descriptor numbers (the config's ``stdio`` and
        ``console``) to this process's, when they were received rather than inherited.
    """
    config = json.loads(_read_all(config_fd))
    os.close(config_fd)
    if fds is not None:
        config["stdio"] = [None if fd is None else fds[fd] for fd in config["stdio"]]
        if config.get("console") is not None:
            config["console"] = fds[config["console"]]
    try:
        v2 = enter(config)
    except init.SetupError as exc:
        _send(status_fd, event="error", message=str(exc))
        return 0
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork() if v2 is None else v2.fork()
    except OSError as exc:
        where = f" into the container's cgroup {v2.path}" if v2 is not None else ""
        _send(status_fd, event="error", message=f"cannot fork the process{where}: {exc.strerror}")
        return 0
    finally:
        if v2 is not None:
            v2.close()
    if pid == 0:
        os.close(err_r)
        os.close(status_fd)
        init.exec_child(config["process"], config["stdio"], err_w, config.get("console"))
    os.close(err_w)
    for fd in [*config["stdio"], config.get("console")]:
        if fd is not None:
            os.close(fd)
    message = init.read_error(err_r)
    os.close(err_r)
    if message is not None:
        os.waitpid(pid, 0)
        _send(status_fd, event="error", message=message)
        return 0
    _send(status_fd, event="started", pid=pid)
    while True:
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            break
    code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    _send(status_fd, event="exit", code=code)
    os.close(status_fd)  # the daemon's EOF now, not after this process's teardown
    return 0


def forked(args: list[Any], fds: dict[int, int]) -> int:
    """The helper as a fork of the daemon's fork server (``ExecDriver.helpers``): ``args`` are
    the daemon's numbers of the config and status descriptors, ``fds`` maps them to ours."""
    return serve(fds[args[0]], fds[args[1]], fds)


def main(argv: list[str]) -> int:
    """``CONFIG_FD STATUS_FD``: the helper as a new interpreter (inherited descriptors)."""
    return serve(int(argv[1]), int(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
