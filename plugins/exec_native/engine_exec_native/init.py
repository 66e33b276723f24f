"""The container side of a start: what the forked child does until execve(2).

Two entry points run in a freshly forked child and never return:

* :func:`container_init`, the container's first process (from ``run``);
* :func:`exec_child`, a process started by ``exec`` (from the ``nsenter``
  helper, already inside the container's namespaces and cgroup).

Both end in :func:`start_process` (seccomp, user, capabilities,
no-new-privileges, working directory, ``$PATH`` lookup, execve; the
filter comes before the capabilities are dropped, or last when
no_new_privs lets an unprivileged process load it, as runc does). Failures travel to the parent
over the *error pipe*: its write end is close-on-exec, so a successful
execve closes it and the parent reads EOF; a failure writes one JSON object
``{"message": ...}`` first. The messages are Docker's where Docker has one
(``exec: "x": executable file not found in $PATH``).

Nothing here may import a module after pivot_root(2): the container's root
has no Python. Everything used is imported at the top.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import resource
import signal
import socket
import stat
import struct
import termios
from typing import Any, NoReturn

from engine.sys import cgroups, libc
from engine.sys.proc import default_signals
from engine.sys.security import caps as _caps
from engine.sys.security.users import UserError, resolve_user
from engine_exec_native import rootfs
from engine_exec_native.rootfs import SetupError

__all__ = [
    "ExecError",
    "SetupError",
    "container_init",
    "enter_userns",
    "exec_child",
    "load_seccomp",
    "lookup",
    "read_error",
    "root_owner",
    "start_process",
]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: The byte the parent writes on the sync pipe once the child is in its cgroup.
GO = b"\0"


class ExecError(SetupError):
    """``args[0]`` cannot be executed; the message is Docker's."""


def _go_error(exc: OSError) -> str:
    """An errno as Go prints it (``no such file or directory``), which is what Docker's messages carry."""
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    return text[:1].lower() + text[1:]


# --------------------------------------------------------------------------
# error pipe


def report(err_fd: int, message: str) -> None:
    """Write the failure for the parent (one JSON object; the parent reads to EOF)."""
    data = json.dumps({"message": message}).encode()
    try:
        while data:
            data = data[os.write(err_fd, data) :]
    except OSError:
        pass


def read_error(err_fd: int) -> str | None:
    """Read the error pipe to EOF: None when the child exec'd, else its message."""
    chunks: list[bytes] = []
    while True:
        chunk = os.read(err_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    if not chunks:
        return None
    raw = b"".join(chunks)
    try:
        return str(json.loads(raw)["message"])
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace")


def _fail(err_fd: int, exc: BaseException) -> NoReturn:
    if isinstance(exc, (SetupError, UserError)):
        message = str(exc)
    elif isinstance(exc, OSError):
        message = f"container init: {exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, exc.errno)})"
        if exc.filename:
            message += f": {exc.filename}"
    else:
        message = f"container init: {type(exc).__name__}: {exc}"
    report(err_fd, message)
    os._exit(127)


# --------------------------------------------------------------------------
# pieces


def setup_stdio(fds: list[int | None]) -> None:
    """Make ``fds`` (None: /dev/null) the process's 0, 1 and 2, whatever numbers they have now."""
    null = None
    moved = []
    for fd in fds:
        if fd is None:
            if null is None:
                null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            fd = null
        # Out of the way of 0..2 first, so dup2 never overwrites a source.
        moved.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3))
    for target, fd in enumerate(moved):
        os.dup2(fd, target, inheritable=True)
    for fd in moved:
        os.close(fd)
    if null is not None:
        os.close(null)


def setup_terminal(console_size: list[int] | None) -> None:
    """Make stdin (the pty slave) the controlling terminal of this new session and size it."""
    try:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    except OSError as exc:
        raise SetupError(
            f"setting the controlling terminal failed ({errno.errorcode.get(exc.errno or 0)}): "
            f"{exc.strerror}; is the pty slave another session's terminal?"
        ) from None
    if console_size:
        rows, cols = console_size
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


# tty_ioctl(4): unlock a pty slave and read its number (asm-generic/ioctls.h).
TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430


def setup_console(console_socket: int, console_size: list[int] | None) -> None:
    """Make a pty from this mount namespace's devpts, hand its master to the caller,
    and make the slave our stdio, controlling terminal and /dev/console.

    Made here rather than by the caller so that the slave is a /dev/pts/N of
    the container's own devpts instance: ttyname(3) and ``tty`` work inside
    (the caller's pty would belong to the host's devpts). The master goes back
    over ``console_socket`` with SCM_RIGHTS (unix(7)), like runc's console socket.
    """
    try:
        master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
        slave_path = f"/dev/pts/{number}"
        slave = os.open(slave_path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise SetupError(
            f"creating the container's console failed ({errno.errorcode.get(exc.errno or 0)}): {exc.strerror}"
        ) from None
    if console_size:
        rows, cols = console_size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    try:
        if not os.path.lexists("/dev/console"):
            os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        libc.mount(slave_path, "/dev/console", None, libc.MS_BIND)
    except OSError:
        pass  # an exec into a container without a /dev it may write: the console stays as it is
    sock = socket.socket(fileno=console_socket)
    try:
        socket.send_fds(sock, [b"M"], [master])
    finally:
        sock.detach()
        os.close(console_socket)
        os.close(master)
    setup_stdio([slave, slave, slave])
    os.close(slave)
    setup_terminal(None)


def _join_namespaces(namespaces: dict[str, Any]) -> None:
    """setns(2) into prepared namespaces, then unshare(2) the new ones."""
    opened: list[tuple[int, int, str]] = []
    try:
        # Open every path first: they live in the host's mount namespace.
        for kind, flag in (("net", libc.CLONE_NEWNET), ("ipc", libc.CLONE_NEWIPC)):
            value = namespaces.get(kind)
            if value not in (None, "new"):
                opened.append((os.open(value, os.O_RDONLY | os.O_CLOEXEC), flag, value))
        for fd, flag, path in opened:
            try:
                libc.setns(fd, flag)
            except OSError as exc:
                raise SetupError(
                    f"joining the namespace {path} failed ({errno.errorcode.get(exc.errno or 0)}): "
                    f"{exc.strerror}; is it a namespace file of the right kind?"
                ) from None
    except FileNotFoundError as exc:
        raise SetupError(f"namespace {exc.filename} does not exist") from None
    finally:
        for fd, _, _ in opened:
            os.close(fd)
    flags = libc.CLONE_NEWNS
    if namespaces.get("uts"):
        flags |= libc.CLONE_NEWUTS
    if namespaces.get("ipc") == "new":
        flags |= libc.CLONE_NEWIPC
    if namespaces.get("net") == "new":
        flags |= libc.CLONE_NEWNET
    try:
        libc.unshare(flags)
    except OSError as exc:
        raise SetupError(
            f"creating the container's namespaces failed ({errno.errorcode.get(exc.errno or 0)}): "
            f"{exc.strerror}; the engine needs CAP_SYS_ADMIN"
        ) from None


def _set_names(hostname: str, domainname: str) -> None:
    for value, setter, what in (
        (hostname, libc.sethostname, "host name"),
        (domainname, libc.setdomainname, "domain name"),
    ):
        if not value:
            continue
        try:
            setter(value)
        except OSError as exc:
            raise SetupError(
                f"setting the {what} to {value!r} failed ({errno.errorcode.get(exc.errno or 0)}): "
                f"{os.strerror(exc.errno or 0)}; at most 64 bytes"
            ) from None


def _write_sysctls(sysctls: list[list[str]]) -> None:
    """Write each (checked) /proc/sys file, in the container's namespaces, before /proc/sys goes read-only."""
    for path, value in sysctls:
        key = path[len("/proc/sys/") :].replace("/", ".")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise SetupError(
                f"sysctl {key}={value} failed ({errno.errorcode.get(exc.errno or 0)}): {exc.strerror}"
            ) from None


def _check_executable(path: str) -> None:
    """What Go's ``exec.LookPath`` checks (its messages are the ones Docker shows)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ExecError(f"stat {path}: {_go_error(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ExecError("is a directory")
    if not os.access(path, os.X_OK):
        raise ExecError("permission denied")


def lookup(name: str, env: list[str]) -> str:
    """Find ``name`` as Go's ``exec.LookPath`` does, in the container (after pivot_root).

    :raises ExecError: ``exec: "x": executable file not found in $PATH``,
        ``exec: "/x": stat /x: no such file or directory``,
        ``exec: "/etc/passwd": permission denied``.
    """
    if "/" in name:
        try:
            _check_executable(name)
        except ExecError as exc:
            raise ExecError(f'exec: "{name}": {exc}') from None
        return name
    path_value = DEFAULT_PATH
    for item in env:
        if item.startswith("PATH="):
            path_value = item[5:]
    for directory in path_value.split(":"):
        candidate = os.path.join(directory or ".", name)
        try:
            _check_executable(candidate)
        except ExecError:
            continue
        return candidate
    raise ExecError(f'exec: "{name}": executable file not found in $PATH')


def apply_credentials(uid: int, gid: int, groups: list[int], mask: int) -> None:
    """Become ``uid``/``gid`` with ``groups``, keeping exactly the capabilities in ``mask``.

    capabilities(7): the bounding set is trimmed first (needs CAP_SETPCAP);
    PR_SET_KEEPCAPS keeps the permitted set across setuid(2) to a non-zero
    uid; capset(2) then sets effective = permitted = inheritable = mask.
    The ambient set stays empty, as in Docker, so a non-root user's
    execve(2) ends with no effective capabilities.
    """
    top = _caps.last_cap()
    for number in range(top + 1):
        if not mask >> number & 1 and libc.prctl(libc.PR_CAPBSET_READ, number) == 1:
            libc.prctl(libc.PR_CAPBSET_DROP, number)
    keep = uid != 0
    if keep:
        libc.prctl(libc.PR_SET_KEEPCAPS, 1)
    try:
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise SetupError(
            f"switching to uid {uid} gid {gid} failed ({errno.errorcode.get(exc.errno or 0)}): {exc.strerror}"
        ) from None
    if keep:
        libc.prctl(libc.PR_SET_KEEPCAPS, 0)
    try:
        libc.capset(mask, mask, mask)
    except OSError as exc:
        raise SetupError(
            f"setting capabilities {mask:016x} failed ({errno.errorcode.get(exc.errno or 0)}): {exc.strerror}"
        ) from None
    try:
        libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass  # kernels before 4.3 have no ambient set


def set_oom_score_adj(value: int | None) -> None:
    """Write the process's ``oom_score_adj`` (proc(5)), while still root; lowering it below
    the current value needs CAP_SYS_RESOURCE."""
    if value is None:
        return
    try:
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise SetupError(
            f"write /proc/self/oom_score_adj: {_go_error(exc)} (setting it to {value}; lowering it needs "
            "CAP_SYS_RESOURCE)"
        ) from None


def _unsigned(limit: int) -> int:
    return (1 << 64) - 1 if limit == resource.RLIM_INFINITY else limit


def set_rlimits(rlimits: list[list[int]]) -> None:
    """setrlimit(2) for each ``[resource, soft, hard]``, while still root: raising a hard limit
    needs CAP_SYS_RESOURCE, which the container may not keep (runc's order and words)."""
    for number, soft, hard in rlimits:
        reason = ""
        if _unsigned(soft) > _unsigned(hard):  # as the kernel compares them: infinity is the largest
            reason = "invalid argument"
        else:
            try:
                resource.setrlimit(number, (soft, hard))
            except ValueError:
                # Python reports EPERM (a hard limit raised without CAP_SYS_RESOURCE) so.
                reason = "operation not permitted"
            except OSError as exc:
                reason = _go_error(exc)
        if reason:
            raise SetupError(f"error setting rlimits for ready process: error setting rlimit type {number}: {reason}")


def load_seccomp(seccomp: dict[str, Any]) -> None:
    """Load the container's compiled filter (:mod:`engine_exec_native.seccomp`) for this process."""
    try:
        libc.seccomp_set_filter(bytes.fromhex(seccomp["program"]), seccomp["flags"])
    except OSError as exc:
        raise SetupError(
            f"loading the seccomp filter failed ({errno.errorcode.get(exc.errno or 0)}): {exc.strerror}"
        ) from None


def start_process(process: dict[str, Any], err_fd: int) -> NoReturn:
    """Seccomp, user, capabilities, no-new-privileges, cwd, lookup, execve: the last steps of every start.

    ``err_fd`` is the only descriptor besides 0-2 that survives until the
    exec; it is close-on-exec.
    """
    user = resolve_user(process["user"], "/etc/passwd", "/etc/group", process["additional_groups"])
    env = list(process["env"])
    if not any(item.startswith("HOME=") for item in env):
        env.append(f"HOME={user.home}")
    cwd = process["cwd"] or "/"
    if process.get("create_cwd") and not os.path.isdir(cwd):
        # Docker creates a missing working directory (owned by root) at start.
        try:
            os.makedirs(cwd, 0o755, exist_ok=True)
        except OSError as exc:
            raise SetupError(f"mkdir {cwd} for the working directory failed: {_go_error(exc)}") from None
    # containerd puts the primary group first among the supplementary ones
    # (runc then passes them all to setgroups), so `id` in a Docker container
    # shows it in "groups=" too.
    groups = [user.gid] + [gid for gid in user.sgids if gid != user.gid]
    set_oom_score_adj(process.get("oom_score_adj"))
    set_rlimits(process.get("rlimits") or [])
    no_new_privileges = process["no_new_privileges"]
    seccomp = process.get("seccomp")
    if seccomp and not no_new_privileges:
        # Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: before
        # the capabilities go (runc's order).
        load_seccomp(seccomp)
    apply_credentials(user.uid, user.gid, groups, process["caps"])
    if no_new_privileges:
        libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise SetupError(f'chdir to cwd ("{cwd}") set in config.json failed: {_go_error(exc)}') from None
    args = process["args"]
    path = lookup(args[0], env)
    if seccomp and no_new_privileges:
        # As late as possible, so that the profile need not allow what the
        # set-up itself calls.
        load_seccomp(seccomp)
    libc.prctl(libc.PR_SET_PDEATHSIG, 0)
    os.closerange(3, err_fd)
    os.closerange(err_fd + 1, 2**31 - 1)
    # os.execve wants a mapping: the first of duplicate names wins (what
    # getenv(3) would find), and an entry without "=" is dropped.
    environ: dict[str, str] = {}
    for item in env:
        key, sep, value = item.partition("=")
        if sep and key:
            environ.setdefault(key, value)
    try:
        os.execve(path, args, environ)
    except OSError as exc:
        raise ExecError(f'exec: "{args[0]}": {_go_error(exc)}') from None


# --------------------------------------------------------------------------
# entry points


def root_owner(userns: dict[str, Any]) -> tuple[int, int]:
    """The host IDs of the container's root in a user namespace plan (the ranges' container ID 0)."""
    owner = []
    for key in ("uids", "gids"):
        host = rootfs.host_id(userns, key, 0)
        if host is None:
            raise SetupError(f"the user namespace maps no {key[:-1]} 0 (root)")
        owner.append(host)
    return owner[0], owner[1]


def enter_userns(userns: dict[str, Any], sync_fd: int, userns_fd: int) -> None:
    """Become root of a new user namespace whose maps the parent writes (user_namespaces(7)).

    Everything before ran as the host's root: the namespaces, mounts and the
    proc and sys mounts belong to the initial user namespace, so the
    container's root can change none of them (it is an unprivileged user of
    the host, with capabilities inside its user namespace only). Its
    terminal is given to it first. The parent writes ``uid_map`` and
    ``gid_map`` once told (a byte on ``userns_fd``) and answers with
    :data:`GO` on ``sync_fd``.
    """
    uid, gid = root_owner(userns)
    for fd in (0, 1, 2):
        if os.isatty(fd):
            try:
                os.fchown(fd, uid, gid)
            except OSError:
                pass  # a terminal the host owns stays as it is; the process has it open already
    try:
        libc.unshare(libc.CLONE_NEWUSER)
    except OSError as exc:
        raise SetupError(
            f"creating the user namespace failed ({errno.errorcode.get(exc.errno or 0)}): {exc.strerror}"
        ) from None
    os.write(userns_fd, GO)
    os.close(userns_fd)
    if os.read(sync_fd, 1) != GO:
        os._exit(1)  # the parent could not write the maps; it reports why
    os.close(sync_fd)


def container_init(
    plan: dict[str, Any], stdio: list[int | None], sync_fd: int, err_fd: int, userns_fd: int | None = None
) -> NoReturn:
    """The container's first process, in the child of ``fork()``.

    Order: signals, parent-death signal, new session, stdio (and the
    controlling terminal), the v1 cgroups (``cgroup_v1_join``: this process moves
    itself, see :func:`engine.sys.cgroups.join_v1_self`), namespaces, wait until
    the parent put us in the rest of the cgroup, mounts, pivot_root, hostname, sysctls, read-only and masked
    paths, read-only rootfs, the user namespace (:func:`enter_userns`, with
    ``userns_fd`` when the plan has one), then :func:`start_process`.
    """
    try:
        default_signals()
        # Die with the parent while setting up (cleared right before execve).
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        os.setsid()
        process = plan["process"]
        console_socket = plan.get("console_socket")
        if console_socket is not None:
            setup_stdio([None, None, None])  # the console comes once /dev/pts is ours
        else:
            setup_stdio(stdio)
            if process["tty"]:
                setup_terminal(process["console_size"])
        # Before the cgroup namespace, whose root is the cgroup we are in when it is made.
        cgroups.join_v1_self(plan.get("cgroup_v1_join") or [])
        _join_namespaces(plan["namespaces"])
        if os.read(sync_fd, 1) != GO:
            os._exit(1)  # the parent went away before the cgroup was set
        if userns_fd is None:
            os.close(sync_fd)
        os.umask(0o022)
        rootfs.prepare(plan)
        rootfs.pivot(plan["rootfs"])
        if plan["namespaces"]["uts"]:
            _set_names(plan["hostname"], plan["domainname"])
        _write_sysctls(plan["sysctls"])
        if console_socket is not None:
            setup_console(console_socket, process["console_size"])
        rootfs.finalize(plan)
        if userns_fd is not None:
            enter_userns(plan["userns"], sync_fd, userns_fd)
        start_process(process, err_fd)
    except BaseException as exc:  # everything must reach the parent, and nothing may return
        _fail(err_fd, exc)


def exec_child(
    process: dict[str, Any], stdio: list[int | None], err_fd: int, console_socket: int | None = None
) -> NoReturn:
    """A process started by ``exec``: the forked child of the helper, inside the container already."""
    try:
        default_signals()
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        os.setsid()
        if console_socket is not None and process["tty"]:
            setup_console(console_socket, process["console_size"])
        else:
            setup_stdio(stdio)
            if process["tty"]:
                setup_terminal(process["console_size"])
        start_process(process, err_fd)
    except BaseException as exc:
        _fail(err_fd, exc)
