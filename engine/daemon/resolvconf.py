"""A container's /etc/resolv.conf, /etc/hosts and /etc/hostname (seed ch. 4 §4.9).

resolv.conf comes from the host unless ``--dns``/``--dns-search``/
``--dns-option`` (or the daemon's defaults) say otherwise; nameservers on
localhost cannot be reached from a container's own network namespace, so
they are dropped and, when none is left, Google's public servers are used, as
the seed describes (with a warning).
"""

from __future__ import annotations

import ipaddress
import logging
import re

from engine.utils.host import read_text

LOG = logging.getLogger(__name__)

DEFAULT_NAMESERVERS = ["8.8.8.8", "8.8.4.4"]
HOST_RESOLV_CONF = "/etc/resolv.conf"

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


def build(dns: list[str], dns_search: list[str], dns_options: list[str], host_mode: bool = False,
          host_file: str = HOST_RESOLV_CONF) -> tuple[str, list[str]]:
    """The container's resolv.conf text and warnings."""
    warnings: list[str] = []
    host_ns, host_search, host_opts, _ = parse(read_text(host_file))
    nameservers = list(dns) or host_ns
    if not host_mode:
        kept = [ns for ns in nameservers if not _is_local(ns)]
        if not kept:
            if nameservers:
                warnings.append("WARNING: Local (127.0.0.1) DNS resolver found in resolv.conf and containers can't use "
                                f"it. Using default external servers: {DEFAULT_NAMESERVERS}")
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


_EXTRA_HOST = re.compile(r"^([^:\s]+):(.+)$")


def hosts(hostname: str, domainname: str, ip: str = "", extra_hosts: list[str] | None = None,
          links: list[tuple[str, str, str]] | None = None) -> str:
    """/etc/hosts: the standard entries, the container's own, ``--add-host``s and links.

    :param links: (ip, alias, name) of linked containers.
    """
    out = HOSTS_HEADER
    for entry in extra_hosts or []:
        m = _EXTRA_HOST.match(entry.strip())
        if m is None:
            raise ValueError(f"invalid argument {entry!r} for --add-host: expected HOST:IP")
        out += f"{m.group(2)}\t{m.group(1)}\n"
    for link_ip, alias, name in links or []:
        names = [alias] + ([name] if name and name != alias else [])
        out += f"{link_ip}\t{' '.join(names)}\n"
    if ip:
        full = f"{hostname}.{domainname} {hostname}" if domainname else hostname
        out += f"{ip}\t{full}\n"
    return out
