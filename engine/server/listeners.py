"""Listening sockets for every ``-H`` address, made by the gunicorn master.

The master binds all of them itself and hands them to gunicorn as ``fd://N``
binds: gunicorn ignores its other binds as soon as one is an fd, and Docker
lets ``fd://`` (systemd socket activation), ``unix://`` and ``tcp://`` be
mixed freely.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import socket
import stat
from dataclasses import dataclass

from engine.daemon.config import ConfigError, HostAddress

LOG = logging.getLogger(__name__)

#: systemd passes activated sockets from this fd on (sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3
BACKLOG = 2048


@dataclass
class Listener:
    """One bound, listening socket and where it came from."""

    address: HostAddress
    sock: socket.socket

    @property
    def fd(self) -> int:
        return self.sock.fileno()

    @property
    def unix_path(self) -> str | None:
        return self.address.address if self.address.proto == "unix" else None


def systemd_fds(environ: dict[str, str] | None = None) -> list[int]:
    """The sockets systemd activated for this process (and forget the variables)."""
    env = os.environ if environ is None else environ
    try:
        count = int(env.get("LISTEN_FDS", "0"))
        pid = int(env.get("LISTEN_PID", "0"))
    except ValueError:
        return []
    env.pop("LISTEN_FDS", None)
    env.pop("LISTEN_PID", None)
    env.pop("LISTEN_FDNAMES", None)
    if pid != os.getpid() or count <= 0:
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))


def _unix_listener(path: str, group: str, group_explicit: bool) -> socket.socket:
    os.makedirs(os.path.dirname(os.path.abspath(path)) or "/", exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise ConfigError(f"cannot listen on {path}: it exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # a stale socket from a daemon that died
        else:
            raise ConfigError(f"cannot listen on {path}: another daemon is listening there")
        finally:
            probe.close()
    # Bind under a temporary name and rename into place once listening: a
    # client that sees the path must never get ECONNREFUSED.
    tmp = f"{path}.{os.getpid()}.tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)  # the socket file is born 0660, never wider
    try:
        sock.bind(tmp)
    finally:
        os.umask(old)
    try:
        gid = 0
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            if group_explicit:
                LOG.warning("could not change group of %s to %s: group not found", path, group)
        os.chown(tmp, 0, gid)
        os.chmod(tmp, 0o660)
        sock.listen(BACKLOG)
        os.rename(tmp, path)
    except BaseException:
        sock.close()
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return sock


def _tcp_listener(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    infos = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, socktype, proto, _canon, sockaddr = infos[0]
    sock = socket.socket(family, socktype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"cannot listen on tcp://{address}: address already in use") from None
        raise ConfigError(f"cannot listen on tcp://{address}: {exc.strerror}") from None
    sock.listen(BACKLOG)
    return sock


def open_listeners(
    addresses: list[HostAddress],
    group: str = "engine",
    group_explicit: bool = False,
    environ: dict[str, str] | None = None,
) -> list[Listener]:
    """Bind every address; on any failure close (and unlink) what was bound."""
    done: list[Listener] = []
    activated = None
    try:
        for addr in addresses:
            if addr.proto == "unix":
                done.append(Listener(addr, _unix_listener(addr.address, group, group_explicit)))
            elif addr.proto == "tcp":
                done.append(Listener(addr, _tcp_listener(addr.address)))
            else:
                if activated is None:
                    activated = systemd_fds(environ)
                if not activated:
                    raise ConfigError(
                        "no sockets found via socket activation: make sure the service was started by systemd"
                    )
                wanted = [int(addr.address)] if addr.address else activated
                for fd in wanted:
                    if fd not in activated:
                        raise ConfigError(f"fd://{fd}: not a socket passed by systemd (have {activated})")
                    sock = socket.socket(fileno=fd)
                    done.append(Listener(HostAddress("fd", str(fd)), sock))
    except BaseException:
        close_listeners(done)
        raise
    for lst in done:
        lst.sock.set_inheritable(True)
    return done


def open_metrics_listener(value: str) -> socket.socket:
    """The listening socket for ``--metrics-addr HOST:PORT``, inherited by the worker that serves it."""
    from engine.daemon.config import parse_metrics_addr

    host, port = parse_metrics_addr(value)
    try:
        sock = _tcp_listener(f"{host}:{port}")
    except ConfigError as exc:
        raise ConfigError(f"metrics-addr: {exc}") from None
    if not _is_loopback(host):
        LOG.warning("metrics are served on %s:%d, reachable beyond this host", host, port)
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is only reachable from this host."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def close_listeners(listeners: list[Listener]) -> None:
    """Close the sockets and remove the unix socket files."""
    for lst in listeners:
        path = lst.unix_path
        try:
            lst.sock.close()
        except OSError:
            pass
        if path:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
