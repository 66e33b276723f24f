"""A container's /etc/resolv.conf, /etc/hosts and /etc/hostname (seed ch. 4 §4.9).

resolv.conf comes from the host unless ``--dns``/``--dns-search``/
``--dns-option`` (or the daemon's defaults) say otherwise. The host's
nameservers on localhost cannot be reached from a container's own network
namespace, so they are dropped and, when none is left, Google's public
servers are used, as the seed describes (with a warning); on a host whose
resolv.conf names only systemd-resolved's stub (127.0.0.53), the servers
come from systemd-resolved's own list instead, as Docker does. Nameservers
given with ``--dns`` are used as given.
"""

from __future__ import annotations

import ipaddress
import logging

from engine.errors import InvalidParameter
from engine.utils.host import read_text

LOG = logging.getLogger(__name__)

DEFAULT_NAMESERVERS = ["8.8.8.8", "8.8.4.4"]
HOST_RESOLV_CONF = "/etc/resolv.conf"
#: systemd-resolved's list of the real upstream servers.
RESOLVED_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"
RESOLVED_STUB = "127.0.0.53"
#: ``--add-host NAME:host-gateway`` stands for the bridge's address.
HOST_GATEWAY = "host-gateway"

HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def _is_local(ns: str) -> bool:
    try:
        return ipaddress.ip_address(ns.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def parse(text: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """(nameservers, search domains, options, other lines) of a resolv.conf."""
    nameservers, search, options, other = [], [], [], []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        fields = stripped.split()
        if fields[0] == "nameserver" and len(fields) > 1:
            nameservers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            search = fields[1:]
        elif fields[0] == "options":
            options += fields[1:]
        else:
            other.append(stripped)
    return nameservers, search, options, other


def build(
    dns: list[str],
    dns_search: list[str],
    dns_options: list[str],
    host_mode: bool = False,
    host_file: str = HOST_RESOLV_CONF,
    resolved_file: str = RESOLVED_RESOLV_CONF,
) -> tuple[str, list[str]]:
    """The container's resolv.conf text and warnings."""
    warnings: list[str] = []
    host_ns, host_search, host_opts, _ = parse(read_text(host_file))
    if not host_mode and host_ns == [RESOLVED_STUB]:
        upstream = parse(read_text(resolved_file))
        if upstream[0]:
            host_ns, host_search, host_opts, _ = upstream
    nameservers = list(dns) or host_ns
    if not host_mode and not dns:
        kept = [ns for ns in nameservers if not _is_local(ns)]
        if not kept:
            if nameservers:
                warnings.append(
                    "WARNING: Local (127.0.0.1) DNS resolver found in resolv.conf and containers can't use "
                    f"it. Using default external servers: {DEFAULT_NAMESERVERS}"
                )
                LOG.warning("host resolv.conf has only local nameservers; containers get %s", DEFAULT_NAMESERVERS)
            kept = list(DEFAULT_NAMESERVERS)
        nameservers = kept
    search = [s for s in dns_search if s != "."] if dns_search else host_search
    options = list(dns_options) if dns_options else host_opts
    lines = [f"nameserver {ns}" for ns in nameservers]
    if search:
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n", warnings


#: The embedded DNS server's address in every container on a user-defined network (Docker's).
EMBEDDED_DNS = "127.0.0.11"


def embedded(dns_search: list[str], dns_options: list[str], host_file: str = HOST_RESOLV_CONF) -> str:
    """resolv.conf of a container on a user-defined network: the embedded DNS server, the search domains
    (``--dns-search``, else the host's), ``ndots:0`` unless the options set ndots (libnetwork's
    ``setupDNS``: a container's names are single labels and must not get the search domains first)."""
    _ns, host_search, host_opts, _ = parse(read_text(host_file))
    search = [s for s in dns_search if s != "."] if dns_search else host_search
    options = list(dns_options) if dns_options else host_opts
    if not any(o.startswith("ndots:") for o in options):
        options = ["ndots:0", *options]
    lines = [f"nameserver {EMBEDDED_DNS}"]
    if search:
        lines.append("search " + " ".join(search))
    lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def host_nameservers(host_file: str = HOST_RESOLV_CONF) -> list[str]:
    """The host's nameservers, where the embedded DNS server forwards what it does not know.

    It forwards from the host's network namespace, so a resolver on the
    host's loopback (systemd-resolved's stub, dnsmasq) is reachable and kept.
    """
    return parse(read_text(host_file))[0]


def parse_extra_host(entry: str) -> tuple[str, str]:
    """(name, address) of an ``ExtraHosts`` entry ``NAME:IP`` (split at the first colon, so the
    address may be IPv6; or ``host-gateway``), checked as moby checks it at create.

    :raises InvalidParameter: with moby's words.
    """
    name, sep, address = entry.partition(":")
    if not sep or not name:
        raise InvalidParameter(f'bad format for add-host: "{entry}"')
    address = address.strip()
    if address != HOST_GATEWAY:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise InvalidParameter(f'invalid IP address in add-host: "{address}"') from None
    return name, address


def link_names(alias: str, hostname: str, name: str) -> str:
    """The names a link's /etc/hosts line gives (moby): the alias, the child's hostname, and its
    name unless that is the alias."""
    names = [alias] + ([hostname] if hostname else []) + ([name] if name and name != alias else [])
    return " ".join(names)


def hosts(
    hostname: str,
    domainname: str,
    ip: str = "",
    extra_hosts: list[str] | None = None,
    links: list[tuple[str, str]] | None = None,
    host_gateway: str = "",
) -> str:
    """/etc/hosts: the standard entries, ``--add-host``s, links and the container's own.

    :param links: (ip, names) of linked containers, names from :func:`link_names`.
    :param host_gateway: the address ``host-gateway`` stands for (the bridge's).
    :raises InvalidParameter: a bad ``--add-host``, or ``host-gateway`` without a bridge.
    """
    out = HOSTS_HEADER
    for entry in extra_hosts or []:
        name, address = parse_extra_host(entry)
        if address == HOST_GATEWAY:
            if not host_gateway:
                raise InvalidParameter("unable to derive the IP value for host-gateway")
            address = host_gateway
        out += f"{address}\t{name}\n"
    for link_ip, names in links or []:
        out += f"{link_ip}\t{names}\n"
    if ip:
        full = f"{hostname}.{domainname} {hostname}" if domainname else hostname
        out += f"{ip}\t{full}\n"
    return out


def update_link(path: str, names: str, ip: str) -> bool:
    """Point the running container's /etc/hosts line for a link (``names``) at ``ip``, as moby does
    when a linked child restarts with a new address; whether a line changed.

    The file is rewritten in place: the container sees it through a bind
    mount of this very inode, which a rename would leave behind.
    """
    try:
        with open(path, "r+", encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines(keepends=True)
            changed = False
            for i, line in enumerate(lines):
                address, sep, rest = line.rstrip("\n").partition("\t")
                if sep and rest == names and address != ip:
                    lines[i] = f"{ip}\t{names}\n"
                    changed = True
            if changed:
                fh.seek(0)
                fh.write("".join(lines))
                fh.truncate()
            return changed
    except FileNotFoundError:
        return False
