"""The daemon's side of the embedded DNS server: the resolver process, each container's sockets and rules,
and the records (libnetwork's sandbox resolver, out of the daemon's process: see :mod:`engine.dns.server`).

::

    <root>/network/dns/
      control.sock     the resolver's control socket (engine.dns.control)
      resolver.pid     its PID
      resolver.log     what it says
      records.json     what containers may resolve (engine.dns.records), written by the daemon
      attached.json    the containers served: namespace and the ports of their two sockets

A container on a user-defined network is *attached* when it starts (or
joins its first such network): the daemon makes a UDP socket and a
listening TCP socket bound to ``127.0.0.11`` inside its network namespace,
adds the rules that send ``127.0.0.11:53`` there (``iptables-restore`` in
the namespace: DNAT in ``nat OUTPUT``, and the SNAT of the answers back to
port 53), and hands the sockets to the resolver; it is detached when it
stops. The resolver is started when the first container needs it and
stopped with the daemon when no container runs.

Across a daemon restart nothing stops: the resolver keeps its sockets and
the last records. The next daemon reconnects, asks which containers it
serves, detaches those that died meanwhile and writes the records again.
If the resolver itself died, it is started again and every running
container is attached again on the same ports when it can be (the rules in
its namespace then still hold), or on new ones with new rules.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from engine.daemon import netns
from engine.daemon.resolvconf import EMBEDDED_DNS
from engine.dns import control
from engine.errors import EngineError, HostError, NotFound
from engine.sys.fs import atomic_write

if TYPE_CHECKING:
    from engine.daemon.container import Container

LOG = logging.getLogger(__name__)

ATTACHED = "attached.json"
#: How long a new resolver gets to listen.
START_TIMEOUT = 10.0


def _rules(udp: int, tcp: int) -> str:
    """The namespace's ``nat`` rules that make ``127.0.0.11:53`` reach the resolver's sockets (Docker's)."""
    lines = []
    for proto, port in (("udp", udp), ("tcp", tcp)):
        lines.append(
            f"-A OUTPUT -d {EMBEDDED_DNS}/32 -p {proto} -m {proto} --dport 53 "
            f"-j DNAT --to-destination {EMBEDDED_DNS}:{port}"
        )
        lines.append(
            f"-A POSTROUTING -s {EMBEDDED_DNS}/32 -p {proto} -m {proto} --sport {port} -j SNAT --to-source :53"
        )
    return "*nat\n" + "\n".join(lines) + "\nCOMMIT\n"


class DnsService:
    """The embedded DNS server of the daemon's containers.

    :param daemon: the daemon (its containers and network service).
    :param home: ``<root>/network/dns``.
    :param python: the interpreter that runs the resolver.
    """

    def __init__(self, daemon: Any, home: str, python: str = sys.executable) -> None:
        self.daemon = daemon
        self.home = home
        self.python = python
        self._client: control.Client | None = None
        self._lock = threading.RLock()
        self._attached: dict[str, dict[str, Any]] = {}
        #: What the resolver said it serves when this daemon found it running.
        self._served: set[str] = set()
        self._iptables = shutil.which("iptables-restore") or shutil.which(
            "iptables-restore", path="/usr/sbin:/sbin:/usr/local/sbin"
        )
        self._nsenter = shutil.which("nsenter") or "nsenter"

    # the resolver process
    def start(self) -> None:
        """Adopt a resolver a previous daemon left running (none is started until a container needs one)."""
        os.makedirs(self.home, mode=0o700, exist_ok=True)
        try:
            with open(os.path.join(self.home, ATTACHED), "rb") as fh:
                self._attached = dict(json.load(fh))
        except (OSError, ValueError):
            self._attached = {}
        with self._lock:
            try:
                self._client = control.Client(self.home)
                self._served = set(self._client.request({"op": "list"}).get("containers") or [])
                LOG.info("embedded DNS: resolver found serving %d containers", len(self._served))
            except (OSError, RuntimeError):
                self._client = None
                self._served = set()

    def _connect(self) -> control.Client:
        """The control connection, starting the resolver if none runs (the lock is held)."""
        if self._client is not None:
            return self._client
        try:
            self._client = control.Client(self.home)
            return self._client
        except OSError:
            pass
        self._spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self._client = control.Client(self.home)
                return self._client
            except OSError:
                if time.monotonic() > deadline:
                    raise HostError(
                        f"the embedded DNS server did not start; see {os.path.join(self.home, control.LOGFILE)}"
                    ) from None
                time.sleep(0.02)

    def _spawn(self) -> None:
        log_path = os.path.join(self.home, control.LOGFILE)
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "PYTHONPATH": _package_root()}
        try:
            with open(log_path, "ab") as log:
                proc = subprocess.run(
                    [self.python, "-m", control.MARK, "--home", self.home, "--daemon"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=env,
                    cwd="/",
                    close_fds=True,
                    timeout=START_TIMEOUT,
                )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HostError(f"cannot start the embedded DNS server: {exc}; see {log_path}") from exc
        if proc.returncode != 0:
            raise HostError(f"the embedded DNS server failed to start (status {proc.returncode}); see {log_path}")
        LOG.info("embedded DNS: resolver started (pid %s)", proc.stdout.decode().strip())

    def _request(self, message: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        """One request; a resolver that died is started again, its containers attached again, and asked again."""
        with self._lock:
            try:
                return self._connect().request(message, fds)
            except (OSError, ConnectionError):
                self._drop_client()
            LOG.warning("embedded DNS: the resolver is gone; starting it again")
            self._reattach_all()
            return self._connect().request(message, fds)

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None

    # containers
    def attach(self, c: Container, netns_path: str, restored: bool = False) -> None:
        """Serve ``c``'s ``127.0.0.11:53`` (``restored``: a running container of a previous daemon).

        :raises HostError: the sockets, the rules or the resolver failed.
        """
        with self._lock:
            if c.id in self._served and c.id in self._attached and self._attached[c.id].get("netns") == netns_path:
                return
            try:
                self._attach(c.id, netns_path, self._attached.get(c.id) if restored else None)
            except (OSError, ConnectionError):
                # The resolver died: a new one serves everyone (this container
                # included: it was recorded before the hand-over).
                LOG.warning("embedded DNS: the resolver is gone; starting it again")
                self._drop_client()
                self._reattach_all()
            self._served.add(c.id)

    def _attach(self, cid: str, path: str, previous: dict[str, Any] | None) -> None:
        """Sockets in the namespace (the previous ports if they are free), the rules, the hand-over."""
        if not os.path.exists(path):
            raise HostError(f"cannot serve DNS to {cid[:12]}: its network namespace {path} is gone")
        want_udp = int((previous or {}).get("udp") or 0)
        want_tcp = int((previous or {}).get("tcp") or 0)
        direct = not self._iptables
        if direct:
            # Without iptables there is no DNAT: port 53 itself.
            want_udp = want_tcp = 53

        def make() -> tuple[socket.socket, socket.socket]:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                for sock, port in ((udp, want_udp), (tcp, want_tcp)):
                    try:
                        sock.bind((EMBEDDED_DNS, port))
                    except OSError:
                        if not port:
                            raise
                        sock.bind((EMBEDDED_DNS, 0))
                tcp.listen(64)
            except BaseException:
                udp.close()
                tcp.close()
                raise
            return udp, tcp

        try:
            udp, tcp = netns.in_namespace(path, make)
        except OSError as exc:
            raise HostError(f"cannot serve DNS to {cid[:12]}: {exc.strerror or exc}") from exc
        try:
            ports = (udp.getsockname()[1], tcp.getsockname()[1])
            if not direct and ports != (want_udp, want_tcp):
                if previous:
                    self._iptables_in(path, _rules(want_udp, want_tcp).replace("-A ", "-D "), check=False)
                self._iptables_in(path, _rules(*ports))
            self._attached[cid] = {"netns": path, "udp": ports[0], "tcp": ports[1]}
            self._save()
            # Past the lock's holder only: _request would re-enter _reattach_all.
            self._connect().request({"op": "attach", "container": cid}, [udp.fileno(), tcp.fileno()])
        finally:
            udp.close()
            tcp.close()

    def _iptables_in(self, path: str, rules: str, check: bool = True) -> None:
        proc = subprocess.run(
            [self._nsenter, f"--net={path}", str(self._iptables), "--noflush", "--wait"],
            input=rules.encode(),
            capture_output=True,
            timeout=30,
        )
        if check and proc.returncode != 0:
            raise HostError(
                f"cannot add the embedded DNS server's rules in {path}: {proc.stderr.decode(errors='replace').strip()}"
            )

    def _reattach_all(self) -> None:
        """A new resolver: every container that was served is served again (the lock is held)."""
        for cid, entry in list(self._attached.items()):
            try:
                self._attach(cid, str(entry.get("netns") or ""), entry)
            except EngineError as exc:
                LOG.error("embedded DNS: cannot serve %s again: %s", cid[:12], exc)
                self._attached.pop(cid, None)
        self._save()
        self._served = set(self._attached)

    def detach(self, c: Container) -> None:
        """Stop serving ``c`` (it stopped); its rules die with its namespace."""
        with self._lock:
            if self._attached.pop(c.id, None) is None and c.id not in self._served:
                return
            self._save()
            self._served.discard(c.id)
            if self._client is None:
                return
            try:
                self._client.request({"op": "detach", "container": c.id})
            except (OSError, RuntimeError) as exc:
                LOG.warning("embedded DNS: detaching %s: %s", c.short_id, exc)
                self._drop_client()

    def prune(self, running: list[str]) -> None:
        """Stop serving every container not in ``running`` (they died while the daemon was away)."""
        keep = set(running)
        with self._lock:
            for cid in sorted((set(self._attached) | self._served) - keep):
                self._attached.pop(cid, None)
                self._served.discard(cid)
                if self._client is not None:
                    try:
                        self._client.request({"op": "detach", "container": cid})
                    except (OSError, RuntimeError) as exc:
                        LOG.warning("embedded DNS: detaching %s: %s", cid[:12], exc)
                        self._drop_client()
            self._save()

    def _save(self) -> None:
        atomic_write(os.path.join(self.home, ATTACHED), json.dumps(self._attached).encode(), mode=0o600)

    # the records
    def records(self) -> dict[str, Any]:
        """The records document of the containers on user-defined networks (:mod:`engine.dns.records`)."""
        from engine.daemon.network import gateway_order
        from engine.daemon.networks import is_user_defined

        service = self.daemon.network
        store = self.daemon.containers
        networks: dict[str, Any] = {}
        by_id: dict[str, dict] = {}
        members: dict[str, list[dict]] = {}
        for net in service.networks.all():
            if not is_user_defined(net["Name"]):
                continue
            by_id[net["Id"]] = net
            endpoints = []
            for cid, entry in sorted((net.get("Containers") or {}).items()):
                try:
                    c = store.get(cid)
                except NotFound:
                    continue
                cfg = ((c.network_settings or {}).get("EndpointsConfig") or {}).get(net["Name"]) or {}
                endpoints.append(
                    {
                        "container": cid,
                        "name": c.name.lstrip("/"),
                        "aliases": list(cfg.get("Aliases") or []),
                        "ipv4": str(entry.get("IPv4Address") or "").split("/")[0],
                        "ipv6": str(entry.get("IPv6Address") or "").split("/")[0],
                    }
                )
                members.setdefault(cid, []).append(net)
            networks[net["Id"]] = {"name": net["Name"], "endpoints": endpoints}
        containers: dict[str, Any] = {}
        for cid, nets in members.items():
            try:
                c = store.get(cid)
            except NotFound:
                continue
            configs = (c.network_settings or {}).get("EndpointsConfig") or {}
            links: dict[str, str] = {}
            for net in nets:
                for spec in (configs.get(net["Name"]) or {}).get("Links") or []:
                    target, _, alias = str(spec).partition(":")
                    target = target.lstrip("/")
                    links[(alias or target).lstrip("/").split("/")[-1]] = target
            containers[cid] = {
                "networks": [n["Id"] for n in sorted(nets, key=gateway_order)],
                "links": links,
                "upstream": service.upstream_servers(c),
            }
        return {"networks": networks, "containers": containers}

    def update(self) -> None:
        """Write the records and have the resolver read them (if one runs)."""
        try:
            doc = self.records()
        except EngineError as exc:
            LOG.error("embedded DNS: cannot make the records: %s", exc)
            return
        with self._lock:
            atomic_write(os.path.join(self.home, control.RECORDS), json.dumps(doc).encode(), mode=0o600)
            if self._client is None and not self._attached:
                return
            try:
                self._request({"op": "reload"})
            except (OSError, RuntimeError, EngineError) as exc:
                LOG.error("embedded DNS: the resolver did not take the new records: %s", exc)

    def close(self, stop: bool) -> None:
        """The daemon stops: ``stop`` the resolver too (no container runs), or leave it serving."""
        with self._lock:
            if stop:
                try:
                    client = self._client or control.Client(self.home)
                    client.request({"op": "stop"})
                    self._client = client
                except (OSError, RuntimeError):
                    pass
                self._attached = {}
                try:
                    self._save()
                except OSError:
                    pass
            self._drop_client()


def _package_root() -> str:
    """The directory holding ``engine`` (and dnslib's site directory), for the resolver's imports."""
    import dnslib

    import engine

    roots = [os.path.dirname(os.path.dirname(os.path.abspath(m.__file__ or ""))) for m in (engine, dnslib)]
    return os.pathsep.join(dict.fromkeys(roots))
