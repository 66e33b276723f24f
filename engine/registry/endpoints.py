"""Where a repository's registry is and how to talk to it: endpoints, mirrors, TLS.

A reference's domain names its registry (:mod:`engine.reference`).
:class:`RegistryService` turns it into the list of endpoints to try, in
order, as moby's ``registry.Service.LookupPullEndpoints`` does:

* ``docker.io``: each ``--registry-mirror`` first (pulls only), then the
  Hub's registry host, ``https://registry-1.docker.io``;
* any other host: ``https://host`` verified with the system CAs plus
  ``/etc/engine/certs.d/<host>/*.crt``, and a client certificate from
  ``*.cert`` + ``*.key`` there (Docker's ``certs.d`` layout);
* a host that is insecure (``--insecure-registry`` by name or CIDR, and
  ``127.0.0.0/8``, ``::1`` and ``localhost`` by default): ``https`` without
  certificate verification, then plain ``http``. The scheme that worked is
  remembered, so only the first operation pays for the failed handshake.
"""

from __future__ import annotations

import glob
import ipaddress
import logging
import os
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from engine import reference as refs
from engine.errors import InvalidParameter
from engine.registry.auth import TokenCache

LOG = logging.getLogger(__name__)

#: Where Docker Hub's registry API lives.
HUB_REGISTRY = "https://registry-1.docker.io"
#: The Hub's v1 index: search, and the key of Hub credentials in config.json.
HUB_INDEX = "https://index.docker.io"
#: Per-host TLS material (Docker's ``/etc/docker/certs.d``).
CERTS_DIR = "/etc/engine/certs.d"
#: Insecure by default, as in dockerd.
DEFAULT_INSECURE_CIDRS = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class TLSFiles:
    """TLS material for one host: extra CA bundles and an optional client pair."""

    ca_files: tuple[str, ...] = ()
    client_cert: str | None = None
    client_key: str | None = None

    def context(self, verify: bool = True) -> ssl.SSLContext:
        """An SSL context: the system CAs plus ours, our client certificate if any.

        :raises InvalidParameter: a file in ``certs.d`` is unusable.
        """
        ctx = ssl.create_default_context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            for path in self.ca_files:
                ctx.load_verify_locations(cafile=path)
            if self.client_cert and self.client_key:
                ctx.load_cert_chain(self.client_cert, self.client_key)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidParameter(f"invalid TLS material for registry: {exc}") from None
        return ctx


def load_tls_files(certs_dir: str, host: str) -> TLSFiles:
    """Read ``<certs_dir>/<host>/``: ``*.crt`` are CAs, ``x.cert`` pairs with ``x.key``.

    :raises InvalidParameter: a ``.cert`` without its ``.key`` or the other
        way round, as Docker refuses them.
    """
    directory = os.path.join(certs_dir, host)
    if not os.path.isdir(directory):
        return TLSFiles()
    cas = tuple(sorted(glob.glob(os.path.join(directory, "*.crt"))))
    cert = key = None
    for path in sorted(glob.glob(os.path.join(directory, "*.cert"))):
        pair = path[: -len(".cert")] + ".key"
        if not os.path.exists(pair):
            raise InvalidParameter(
                f"missing key {os.path.basename(pair)} for client certificate {os.path.basename(path)}"
            )
        cert, key = path, pair
    for path in glob.glob(os.path.join(directory, "*.key")):
        if not os.path.exists(path[: -len(".key")] + ".cert"):
            raise InvalidParameter(
                f"missing client certificate {os.path.basename(path)[:-4]}.cert for key {os.path.basename(path)}"
            )
    return TLSFiles(cas, cert, key)


@dataclass(frozen=True)
class Endpoint:
    """One way to reach a registry.

    :param url: scheme and host, ``https://registry-1.docker.io``.
    :param host: the registry as named in references (``docker.io``,
        ``127.0.0.1:5000``): the key for credentials and certificates.
    :param mirror: a ``--registry-mirror`` (pull only, fall back on any error).
    :param verify: verify the server certificate.
    :param tls: extra TLS material from ``certs.d``.
    """

    url: str
    host: str
    mirror: bool = False
    verify: bool = True
    tls: TLSFiles = field(default_factory=TLSFiles)

    @property
    def plain_http(self) -> bool:
        return self.url.startswith("http://")

    @property
    def netloc(self) -> str:
        return urlsplit(self.url).netloc


def split_host_port(host: str) -> tuple[str, str]:
    """``("127.0.0.1", "5000")`` from ``127.0.0.1:5000``; IPv6 in brackets keeps them off."""
    if host.startswith("["):
        addr, _, rest = host[1:].partition("]")
        return addr, rest.lstrip(":")
    name, _, port = host.partition(":")
    return name, port


class RegistryService:
    """Registry endpoints and shared client state for one daemon.

    :param mirrors: ``--registry-mirror`` URLs, for ``docker.io`` pulls.
    :param insecure: ``--insecure-registry`` entries: ``host[:port]`` or CIDRs.
    :param certs_dir: the ``certs.d`` directory.
    :param connect_timeout: seconds to connect (and for a TLS handshake).
    :param read_timeout: seconds without a byte before a read fails.
    :param retries: attempts of an idempotent request or a blob download.
    :param backoff: first back-off in seconds; doubled at each retry.
    """

    def __init__(
        self,
        mirrors: Iterable[str] = (),
        insecure: Iterable[str] = (),
        certs_dir: str = CERTS_DIR,
        connect_timeout: float = 15.0,
        read_timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 1.0,
    ) -> None:
        self.mirrors = [self._check_mirror(m) for m in mirrors]
        self.insecure_hosts: set[str] = set()
        self.insecure_nets = [ipaddress.ip_network(c) for c in DEFAULT_INSECURE_CIDRS]
        for entry in insecure:
            try:
                self.insecure_nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.insecure_hosts.add(refs.host_of(entry))
        self.certs_dir = certs_dir
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.backoff = backoff
        self.tokens = TokenCache()
        self._lock = threading.Lock()
        self._working_url: dict[str, str] = {}

    @classmethod
    def from_config(cls, config: Any) -> RegistryService:
        """Build from the daemon's :class:`~engine.daemon.config.Config`."""
        return cls(getattr(config, "registry_mirrors", ()) or (), getattr(config, "insecure_registries", ()) or ())

    @staticmethod
    def _check_mirror(url: str) -> str:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidParameter(f"invalid mirror: {url!r} is not an http(s) URL")
        if parts.path not in ("", "/"):
            raise InvalidParameter(f"invalid mirror: path-based mirrors are not supported ({url})")
        return f"{parts.scheme}://{parts.netloc}"

    def is_insecure(self, host: str) -> bool:
        """Whether ``host`` (``name[:port]``) may be reached without TLS verification.

        Host names are not resolved: only IP literals are matched against the
        CIDRs (and ``localhost`` is loopback), so deciding costs no DNS query.
        """
        if host in self.insecure_hosts:
            return True
        name, _ = split_host_port(host)
        if name in self.insecure_hosts:
            return True
        if name == "localhost":
            return True
        try:
            addr = ipaddress.ip_address(name)
        except ValueError:
            return False
        return any(addr in net for net in self.insecure_nets)

    def endpoints(self, domain: str, pull: bool = True) -> list[Endpoint]:
        """The endpoints to try for ``domain``, best first.

        :param pull: include mirrors (never used for push, login or search).
        """
        if domain == refs.DEFAULT_DOMAIN:
            out = []
            if pull:
                for mirror in self.mirrors:
                    netloc = urlsplit(mirror).netloc
                    out.append(
                        Endpoint(
                            mirror,
                            domain,
                            mirror=True,
                            verify=not self.is_insecure(netloc),
                            tls=load_tls_files(self.certs_dir, netloc),
                        )
                    )
            out.append(Endpoint(HUB_REGISTRY, domain, tls=load_tls_files(self.certs_dir, "registry-1.docker.io")))
            return out
        tls = load_tls_files(self.certs_dir, domain)
        if not self.is_insecure(domain):
            return [Endpoint(f"https://{domain}", domain, tls=tls)]
        candidates = [
            Endpoint(f"https://{domain}", domain, verify=False, tls=tls),
            Endpoint(f"http://{domain}", domain, verify=False),
        ]
        with self._lock:
            known = self._working_url.get(domain)
        if known is not None:
            candidates.sort(key=lambda e: e.url != known)
        return candidates

    def index_endpoints(self, domain: str) -> list[Endpoint]:
        """Endpoints of the v1 index (search) for ``domain``."""
        if domain == refs.DEFAULT_DOMAIN:
            return [Endpoint(HUB_INDEX, domain, tls=load_tls_files(self.certs_dir, "index.docker.io"))]
        return self.endpoints(domain, pull=False)

    def worked(self, endpoint: Endpoint) -> None:
        """Remember that ``endpoint`` answered, to try it first next time."""
        if not endpoint.mirror:
            with self._lock:
                self._working_url[endpoint.host] = endpoint.url
