"""Daemon configuration: flags with Docker's names plus ``daemon.json``.

Seed ch. 3 §5.0 (flag definitions), ch. 4 §4.1 (checks) and ch. 6 §3.1
(network flags). The configuration is built in two layers: command-line
flags, then ``/etc/engine/daemon.json`` (``--config-file``) with Docker's
keys. Giving the same option in both places is an error, as in Docker.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import logging
import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine import DEFAULT_HOST, DEFAULT_SOCKET
from engine.core.env import parse_bool
from engine.drivers import DEFAULT_EXEC_DRIVER, DEFAULT_NETWORK_DRIVER, PRIORITY
from engine.drivers.ipam import parse_pools
from engine.drivers.network import NetworkOptions
from engine.drivers.selection import DriverConfig
from engine.errors import InvalidParameter
from engine.registry import DEFAULT_MAX_CONCURRENT_DOWNLOADS, DEFAULT_MAX_CONCURRENT_UPLOADS
from engine.utils.units import parse_ulimit

LOG = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = "/etc/engine/daemon.json"
DEFAULT_ROOT = "/var/lib/engine"
DEFAULT_PIDFILE = "/var/run/engine.pid"
DEFAULT_TCP_PORT = 2375
DEFAULT_TLS_TCP_PORT = 2376
#: Name of the bridge the bridge driver creates (not docker0, so a real
#: Docker can live on the same host).
DEFAULT_BRIDGE = "engine0"
DISABLE_NETWORK_BRIDGE = "none"
MIN_KERNEL = (3, 8, 0)
#: dockerd's defaults for the options of the same names.
DEFAULT_LOG_DRIVER = "json-file"
DEFAULT_SHUTDOWN_TIMEOUT = 15


class ConfigError(InvalidParameter):
    """The configuration is invalid; start-up stops with this message."""


def _cert_dir() -> str:
    return os.environ.get("DOCKER_CERT_PATH") or os.path.join(os.path.expanduser("~"), ".docker")


@dataclass
class Config:
    """Every daemon option; attribute names follow daemon.json keys."""

    pidfile: str = DEFAULT_PIDFILE
    data_root: str = DEFAULT_ROOT
    hosts: list[str] = field(default_factory=lambda: [DEFAULT_HOST])
    debug: bool = False
    group: str = "engine"
    tls: bool = False
    tlsverify: bool = False
    tlscacert: str = field(default_factory=lambda: os.path.join(_cert_dir(), "ca.pem"))
    tlscert: str = field(default_factory=lambda: os.path.join(_cert_dir(), "cert.pem"))
    tlskey: str = field(default_factory=lambda: os.path.join(_cert_dir(), "key.pem"))
    api_enable_cors: bool = False
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_opts: list[str] = field(default_factory=list)
    registry_mirrors: list[str] = field(default_factory=list)
    insecure_registries: list[str] = field(default_factory=list)
    iptables: bool = True
    ip_forward: bool = True
    ip_masq: bool = True
    ip: str = "0.0.0.0"
    bridge: str = ""
    bip: str = ""
    fixed_cidr: str = ""
    icc: bool = True
    default_address_pools: list[dict[str, Any]] = field(default_factory=list)
    ipv6: bool = False
    fixed_cidr_v6: str = ""
    ip6tables: bool = True
    storage_driver: str = ""
    storage_opts: list[str] = field(default_factory=list)
    storage_driver_priority: list[str] = field(default_factory=lambda: list(PRIORITY))
    exec_driver: str = DEFAULT_EXEC_DRIVER
    #: The exec driver's options (``native.cgroupdriver=systemd``).
    exec_opts: list[str] = field(default_factory=list)
    #: The cgroup parent of containers that name none ("": /docker, or system.slice with systemd).
    cgroup_parent: str = ""
    mtu: int = 0
    selinux_enabled: bool = False
    seccomp_profile: str = ""
    no_new_privileges: bool = False
    userns_remap: str = ""
    userland_proxy: bool = True
    labels: list[str] = field(default_factory=list)
    metrics_addr: str = ""
    log_driver: str = DEFAULT_LOG_DRIVER
    log_opts: dict[str, str] = field(default_factory=dict)
    default_ulimits: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Run an init in every container that does not say (``--init``), and which one.
    init: bool = False
    init_path: str = ""
    max_concurrent_downloads: int = DEFAULT_MAX_CONCURRENT_DOWNLOADS
    max_concurrent_uploads: int = DEFAULT_MAX_CONCURRENT_UPLOADS
    shutdown_timeout: int = DEFAULT_SHUTDOWN_TIMEOUT
    #: Shims opt in to kernel samepage merging (engine.sys.ksm); it works while ksmd runs.
    shim_memory_merge: bool = False
    config_file: str = DEFAULT_CONFIG_FILE
    #: The options given as flags (attribute -> value): a reload keeps them
    #: and refuses a daemon.json that sets them too.
    flags: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def root(self) -> str:
        return self.data_root

    @property
    def disable_network(self) -> bool:
        """``-b none`` turns container networking off (seed ch. 4 §4.1.4)."""
        return self.bridge == DISABLE_NETWORK_BRIDGE

    def network_options(self) -> NetworkOptions:
        """What the network driver is told: the network flags, typed."""
        return NetworkOptions(
            bridge=self.bridge,
            bip=self.bip,
            fixed_cidr=self.fixed_cidr,
            mtu=self.mtu,
            icc=self.icc,
            iptables=self.iptables,
            ip_forward=self.ip_forward,
            ip_masq=self.ip_masq,
            userland_proxy=self.userland_proxy,
            default_ip=self.ip,
            dns=tuple(self.dns),
            default_address_pools=parse_pools(self.default_address_pools),
            ipv6=self.ipv6,
            fixed_cidr_v6=self.fixed_cidr_v6,
            ip6tables=self.ip6tables,
        )

    def driver_config(self, environ: Mapping[str, str] | None = None) -> DriverConfig:
        """What driver selection reads (:func:`engine.drivers.discovery.select`), for the daemon and engine-admin.

        :param environ: where ``ENGINE_DRIVER`` / ``DOCKER_DRIVER`` are read (default: this process's environment).
        """
        return DriverConfig(
            root=self.root,
            graph_driver=self.storage_driver,
            graph_options=tuple(self.storage_opts),
            graph_priority=tuple(self.storage_driver_priority),
            exec_driver=self.exec_driver or DEFAULT_EXEC_DRIVER,
            exec_options=tuple(self.exec_opts),
            network_driver="" if self.disable_network else DEFAULT_NETWORK_DRIVER,
            network_options=self.network_options(),
            environ=os.environ if environ is None else environ,
        )

    def to_json(self) -> dict[str, Any]:
        return {k.replace("_", "-"): v for k, v in dataclasses.asdict(self).items() if k != "flags"}


# Options: (attribute, daemon.json key(s), flags, kind, help). ``kind`` is one
# of bool, str, int, list. The first key is Docker's; others are aliases.
_OPTIONS: list[tuple[str, tuple[str, ...], tuple[str, ...], str, str]] = [
    ("pidfile", ("pidfile",), ("-p", "--pidfile"), "str", "path to use for the daemon PID file"),
    ("data_root", ("data-root", "graph"), ("-g", "--graph", "--data-root"), "str", "root of the engine runtime"),
    ("hosts", ("hosts",), ("-H", "--host"), "list", "socket(s) to bind: unix://PATH, tcp://HOST:PORT or fd://[N]"),
    ("debug", ("debug",), ("-D", "--debug"), "bool", "enable debug mode"),
    ("group", ("group",), ("-G", "--group"), "str", "group for the unix socket"),
    ("tls", ("tls",), ("--tls",), "bool", "use TLS; implied by --tlsverify"),
    ("tlsverify", ("tlsverify",), ("--tlsverify",), "bool", "use TLS and verify the remote (client certificates)"),
    ("tlscacert", ("tlscacert",), ("--tlscacert",), "str", "trust only certificates signed by this CA"),
    ("tlscert", ("tlscert",), ("--tlscert",), "str", "path to the TLS certificate file"),
    ("tlskey", ("tlskey",), ("--tlskey",), "str", "path to the TLS key file"),
    ("api_enable_cors", ("api-enable-cors",), ("--api-enable-cors",), "bool", "enable CORS headers in the remote API"),
    ("dns", ("dns",), ("--dns",), "list", "DNS server for containers"),
    ("dns_search", ("dns-search",), ("--dns-search",), "list", "DNS search domain for containers"),
    ("dns_opts", ("dns-opts",), ("--dns-opt",), "list", "DNS option for containers"),
    ("registry_mirrors", ("registry-mirrors",), ("--registry-mirror",), "list", "preferred Docker registry mirror"),
    (
        "insecure_registries",
        ("insecure-registries",),
        ("--insecure-registry",),
        "list",
        "registry (host[:port] or CIDR) reached over plain HTTP or unverified TLS",
    ),
    ("iptables", ("iptables",), ("--iptables",), "bool", "enable addition of iptables rules"),
    ("ip_forward", ("ip-forward",), ("--ip-forward",), "bool", "enable net.ipv4.ip_forward"),
    ("ip_masq", ("ip-masq",), ("--ip-masq",), "bool", "enable IP masquerading for the bridge's subnet"),
    ("ip", ("ip",), ("--ip",), "str", "default IP when binding container ports"),
    (
        "bridge",
        ("bridge",),
        ("-b", "--bridge"),
        "str",
        f"attach containers to an existing bridge ('none' disables networking; default: create {DEFAULT_BRIDGE})",
    ),
    ("bip", ("bip",), ("--bip",), "str", "address and netmask of the bridge (CIDR), not with -b"),
    (
        "fixed_cidr",
        ("fixed-cidr",),
        ("--fixed-cidr",),
        "str",
        "IPv4 subnet for container addresses (inside the bridge's)",
    ),
    ("icc", ("icc",), ("--icc",), "bool", "enable inter-container communication"),
    (
        "default_address_pools",
        ("default-address-pools",),
        ("--default-address-pool",),
        "pools",
        "default address pools for user-defined networks (base=CIDR,size=N; default Docker's 172.17-31.0.0/16, "
        "192.168.0.0/16 in /20s)",
    ),
    ("ipv6", ("ipv6",), ("--ipv6",), "bool", "enable IPv6 on the default bridge network (needs --fixed-cidr-v6)"),
    ("fixed_cidr_v6", ("fixed-cidr-v6",), ("--fixed-cidr-v6",), "str", "IPv6 subnet of the default bridge network"),
    ("ip6tables", ("ip6tables",), ("--ip6tables",), "bool", "add ip6tables rules for IPv6 networks"),
    ("storage_driver", ("storage-driver",), ("-s", "--storage-driver"), "str", "graph driver to use"),
    ("storage_opts", ("storage-opts",), ("--storage-opt",), "list", "graph driver option"),
    (
        "storage_driver_priority",
        ("storage-driver-priority",),
        (),
        "list",
        "graph drivers to try, in order, when none is chosen",
    ),
    ("exec_driver", ("exec-driver",), ("-e", "--exec-driver"), "str", "exec driver to use"),
    (
        "exec_opts",
        ("exec-opts",),
        ("--exec-opt",),
        "list",
        "exec driver option (native.cgroupdriver=cgroupfs|systemd)",
    ),
    (
        "cgroup_parent",
        ("cgroup-parent",),
        ("--cgroup-parent",),
        "str",
        "parent cgroup of containers (default /docker, or system.slice with the systemd cgroup driver)",
    ),
    (
        "mtu",
        ("mtu",),
        ("--mtu",),
        "int",
        "container network MTU (default: the default route's interface MTU, else 1500)",
    ),
    ("selinux_enabled", ("selinux-enabled",), ("--selinux-enabled",), "bool", "enable SELinux support"),
    (
        "seccomp_profile",
        ("seccomp-profile",),
        ("--seccomp-profile",),
        "str",
        "seccomp profile file for containers instead of Docker's default ('unconfined': none)",
    ),
    (
        "no_new_privileges",
        ("no-new-privileges",),
        ("--no-new-privileges",),
        "bool",
        "set no-new-privileges for new containers by default",
    ),
    (
        "userns_remap",
        ("userns-remap",),
        ("--userns-remap",),
        "str",
        "user namespace for containers: 'default' (the dockremap user), USER[:GROUP] or UID[:GID]",
    ),
    (
        "userland_proxy",
        ("userland-proxy",),
        ("--userland-proxy",),
        "bool",
        "use a userland proxy for published ports (needed for 127.0.0.1:PORT)",
    ),
    ("labels", ("labels",), ("--label",), "list", "daemon label (key=value)"),
    (
        "metrics_addr",
        ("metrics-addr",),
        ("--metrics-addr",),
        "str",
        "serve Prometheus metrics on this HOST:PORT at /metrics (default: off)",
    ),
    ("log_driver", ("log-driver",), ("--log-driver",), "str", "default logging driver for containers"),
    ("log_opts", ("log-opts",), ("--log-opt",), "map", "default logging driver option for containers (key=value)"),
    (
        "default_ulimits",
        ("default-ulimits",),
        ("--default-ulimit",),
        "ulimits",
        "default ulimit for containers (name=soft[:hard])",
    ),
    ("init", ("init",), ("--init",), "bool", "run an init (tini) in every container that does not ask otherwise"),
    (
        "init_path",
        ("init-path",),
        ("--init-path",),
        "str",
        "the init binary for --init (default: docker-init, else tini-static, on the PATH)",
    ),
    (
        "max_concurrent_downloads",
        ("max-concurrent-downloads",),
        ("--max-concurrent-downloads",),
        "int",
        f"layers downloaded at once by a pull (default {DEFAULT_MAX_CONCURRENT_DOWNLOADS})",
    ),
    (
        "max_concurrent_uploads",
        ("max-concurrent-uploads",),
        ("--max-concurrent-uploads",),
        "int",
        f"layers uploaded at once by a push (default {DEFAULT_MAX_CONCURRENT_UPLOADS})",
    ),
    (
        "shutdown_timeout",
        ("shutdown-timeout",),
        ("--shutdown-timeout",),
        "int",
        f"seconds to wait for running jobs at shutdown (default {DEFAULT_SHUTDOWN_TIMEOUT})",
    ),
    (
        "shim_memory_merge",
        ("shim-memory-merge",),
        ("--shim-memory-merge",),
        "bool",
        "let the host's ksmd merge the identical pages of the containers' shims (needs Linux 6.4 and "
        "/sys/kernel/mm/ksm/run set to 1; never the containers' own pages)",
    ),
]

_KEY_TO_ATTR = {key: attr for attr, keys, _f, _k, _h in _OPTIONS for key in keys}
_ATTR_KIND = {attr: kind for attr, _keys, _f, kind, _h in _OPTIONS}


def _bool_flag(value: str) -> bool:
    return parse_bool(value)


def add_daemon_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every daemon flag; unset flags stay ``None`` so that conflicts
    with daemon.json can be detected."""
    parser.add_argument(
        "--config-file",
        dest="config_file",
        default=None,
        metavar="PATH",
        help=f"daemon configuration file (default {DEFAULT_CONFIG_FILE})",
    )
    for attr, _keys, flags, kind, help_text in _OPTIONS:
        if not flags:
            continue
        kwargs: dict[str, Any] = {"dest": attr, "default": None, "help": help_text}
        if kind == "bool":
            kwargs.update(nargs="?", const=True, type=_bool_flag, metavar="true|false")
        elif kind in ("list", "map", "ulimits", "pools"):
            kwargs.update(action="append", metavar=attr.upper().rstrip("S"))
        elif kind == "int":
            kwargs.update(type=int, metavar="N")
        else:
            kwargs.update(metavar=attr.upper())
        parser.add_argument(*flags, **kwargs)


def _coerce(attr: str, value: Any, source: str) -> Any:
    kind = _ATTR_KIND[attr]
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str):
                return parse_bool(value)
            raise TypeError
        if kind == "int":
            if isinstance(value, bool):
                raise TypeError
            return int(value)
        if kind == "list":
            if isinstance(value, str):
                return [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise TypeError
            return list(value)
        if kind == "map":
            return _coerce_map(value)
        if kind == "ulimits":
            return _coerce_ulimits(value, source)
        if kind == "pools":
            try:
                return [{"base": p.base, "size": p.size} for p in parse_pools(value)]
            except InvalidParameter as exc:
                raise ConfigError(f"{source}: default-address-pools: {exc}") from None
        if not isinstance(value, str):
            raise TypeError
        return value
    except (TypeError, ValueError):
        want = {
            "map": "an object of strings",
            "ulimits": "an object of {Name, Soft, Hard}",
            "pools": 'a list of {"base": CIDR, "size": N}',
        }.get(kind, kind)
    raise ConfigError(f"{source}: invalid value {value!r} for {attr.replace('_', '-')} (want {want})") from None


def _coerce_map(value: Any) -> dict[str, str]:
    """``{"k": "v"}`` from daemon.json, or ``["k=v", ...]`` from repeated flags."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        pairs = [v.partition("=") for v in value]
        if any(not sep or not key for key, sep, _ in pairs):
            raise ValueError
        return {key: val for key, _, val in pairs}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise TypeError
    return dict(value)


def _coerce_ulimits(value: Any, source: str) -> dict[str, dict[str, Any]]:
    """``{"nofile": {"Name": "nofile", "Soft": 1024, "Hard": 2048}}`` from daemon.json (dockerd's
    shape), or ``["nofile=1024:2048", ...]`` from repeated ``--default-ulimit`` flags."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        specs = value
    elif isinstance(value, dict):
        specs = []
        for name, limit in value.items():
            if not isinstance(limit, dict) or limit.get("Name", name) != name:
                raise TypeError
            soft, hard = limit.get("Soft"), limit.get("Hard")
            if type(soft) is not int or type(hard) is not int:
                raise TypeError
            specs.append(f"{name}={soft}:{hard}")
    else:
        raise TypeError
    out = {}
    for spec in specs:
        try:
            limit = parse_ulimit(spec)
        except ValueError as exc:
            raise ConfigError(
                f'{source}: default-ulimits: invalid argument "{spec}" for "--default-ulimit" flag: {exc}'
            ) from None
        out[limit["Name"]] = limit
    return out


def load_config_file(path: str) -> dict[str, Any]:
    """Read daemon.json; a missing default file is empty, a missing named one an error."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"unable to read configuration file {path}: {exc.strerror}") from None
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"unable to configure the engine daemon with file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"unable to configure the engine daemon with file {path}: not a JSON object")
    unknown = sorted(k for k in data if k not in _KEY_TO_ATTR)
    if unknown:
        raise ConfigError(
            f"unable to configure the engine daemon with file {path}: the following directives "
            f"don't match any configuration option: {', '.join(unknown)}"
        )
    return data


def build_config(args: argparse.Namespace | None = None, environ: dict[str, str] | None = None) -> Config:
    """Merge flags and daemon.json into a :class:`Config` (no host checks)."""
    flags = {attr: getattr(args, attr, None) for attr, *_ in _OPTIONS} if args is not None else {}
    flags = {k: _coerce(k, v, "flag") for k, v in flags.items() if v is not None}
    explicit_file = getattr(args, "config_file", None) if args is not None else None
    if explicit_file and not os.path.exists(explicit_file):
        raise ConfigError(f"unable to configure the engine daemon: config file {explicit_file} does not exist")
    return config_from(flags, explicit_file or DEFAULT_CONFIG_FILE)


def config_from(flags: dict[str, Any], path: str) -> Config:
    """The configuration that ``flags`` (attribute -> value) and the file at ``path`` give.

    Start-up and a reload (SIGHUP) build it the same way, so a reload yields
    what a restart with the same flags would.

    :raises ConfigError: the file is unreadable or invalid, or sets an
        option that is also given as a flag.
    """
    file_values = load_config_file(path)
    conflicts = []
    from_file: dict[str, Any] = {}
    for key, value in file_values.items():
        attr = _KEY_TO_ATTR[key]
        if attr in flags:
            conflicts.append(f"{key}: (from flag: {_show(flags[attr])}, from file: {_show(value)})")
        from_file[attr] = _coerce(attr, value, path)
    if conflicts:
        raise ConfigError(
            f"unable to configure the engine daemon with file {path}: the following directives are "
            f"specified both as a flag and in the configuration file: {', '.join(conflicts)}"
        )
    cfg = Config(config_file=path, flags=dict(flags))
    for attr, value in {**from_file, **flags}.items():
        setattr(cfg, attr, value)
    if cfg.tlsverify:
        cfg.tls = True
    return cfg


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def validate(cfg: Config) -> None:
    """The seed's configuration checks (ch. 4 §4.1) with its messages."""
    if cfg.bridge and cfg.bip:
        raise ConfigError("You specified -b & --bip, mutually exclusive options. Please specify only one.")
    if not cfg.iptables and not cfg.icc:
        raise ConfigError(
            "You specified --iptables=false with --icc=false. ICC uses iptables to function. "
            "Please set --icc or --iptables to true."
        )
    if cfg.mtu < 0:
        raise ConfigError(f"invalid --mtu {cfg.mtu}")
    if cfg.ipv6 and not cfg.fixed_cidr_v6:
        raise ConfigError("--ipv6 needs --fixed-cidr-v6: the IPv6 subnet of the default bridge (e.g. fd00:1::/64)")
    if cfg.fixed_cidr_v6:
        try:
            ok = ipaddress.ip_network(cfg.fixed_cidr_v6, strict=False).version == 6
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(f"invalid --fixed-cidr-v6 {cfg.fixed_cidr_v6!r}: want an IPv6 CIDR like fd00:1::/64")
    for host in cfg.hosts:
        parse_host(host)
    if cfg.metrics_addr:
        parse_metrics_addr(cfg.metrics_addr)
    for name in ("max-concurrent-downloads", "max-concurrent-uploads", "shutdown-timeout"):
        value = getattr(cfg, name.replace("-", "_"))
        if value < 0:
            raise ConfigError(f"invalid {name}: {value} (must be 0 or more)")
    from engine.daemon.logconfig import validate_log_config
    from engine.daemon.runtime import check_cgroup_parent

    validate_log_config(cfg.log_driver, cfg.log_opts)
    if cfg.cgroup_parent:
        check_cgroup_parent(cfg.cgroup_parent, cfg)


def check_host(
    system: Callable[[], str] = platform.system,
    geteuid: Callable[[], int] = os.geteuid,
    release: Callable[[], str] = platform.release,
) -> None:
    """The seed's host checks (ch. 4 §4.2): Linux, root, kernel >= 3.8."""
    if system() != "Linux":
        raise ConfigError("The engine daemon is only supported on linux")
    if geteuid() != 0:
        raise ConfigError("The engine daemon needs to be run as root")
    version = kernel_version(release())
    if version is not None and version < MIN_KERNEL:
        # The seed logs this and goes on; nothing here works on such a kernel
        # (overlay with several lower dirs, openat2), so we stop instead.
        raise ConfigError(
            f"You are running linux kernel version {release()}, which is too old to run the engine. "
            "Please upgrade your kernel to 3.8.0."
        )


def kernel_version(release: str) -> tuple[int, int, int] | None:
    """Parse ``6.1.0-18-amd64`` into ``(6, 1, 0)``."""
    parts = []
    for piece in release.split("-", 1)[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    if not parts:
        return None
    while len(parts) < 3:
        parts.append(0)
    return (parts[0], parts[1], parts[2])


def parse_metrics_addr(value: str) -> tuple[str, int]:
    """``--metrics-addr HOST:PORT`` (as dockerd's; an empty HOST is every address) -> ``(host, port)``."""
    host, sep, port = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"invalid metrics-addr {value!r}: want HOST:PORT, e.g. 127.0.0.1:9323")
    return host or "0.0.0.0", int(port)


@dataclass(frozen=True)
class HostAddress:
    """One parsed ``-H`` value."""

    proto: str  # unix, tcp or fd
    address: str  # path, host:port, or fd number ("" = every activated socket)

    def __str__(self) -> str:
        return f"{self.proto}://{self.address}"


def parse_host(value: str, tls: bool = False) -> HostAddress:
    """Parse a ``-H`` address as Docker does (``opts.ParseHost``).

    :raises ConfigError: naming the accepted forms.
    """
    raw = value.strip()
    accepted = "use unix://PATH, tcp://[HOST]:PORT or fd://[N]"
    if raw == "":
        return HostAddress("unix", DEFAULT_SOCKET)
    if "://" not in raw:
        raise ConfigError(f"Invalid bind address format: {value!r}; {accepted}")
    proto, _, addr = raw.partition("://")
    if proto == "unix":
        return HostAddress("unix", addr or DEFAULT_SOCKET)
    if proto == "fd":
        if addr and not addr.isdigit():
            raise ConfigError(f"Invalid bind address format: {value!r}; fd:// takes a number")
        return HostAddress("fd", addr)
    if proto == "tcp":
        addr = addr.rstrip("/")
        if "/" in addr:
            raise ConfigError(f"Invalid bind address format: {value!r}; a tcp address has no path")
        host, sep, port = addr.rpartition(":")
        if not sep:
            host, port = addr, ""
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not port:
            port = str(DEFAULT_TLS_TCP_PORT if tls else DEFAULT_TCP_PORT)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"Invalid bind address format: {value!r}; bad port {port!r}")
        return HostAddress("tcp", f"{host or '127.0.0.1'}:{port}")
    raise ConfigError(f"Invalid bind address format: {value!r}; {accepted}")
