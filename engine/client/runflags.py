"""The flags of ``run`` and ``create``, turned into the API 1.41 create body.

The docker CLI (``cli/command/container/opts.go`` at v28.2.2) always sends
the whole ``container.Config`` + ``HostConfig`` + ``NetworkingConfig``
struct, zero values included, in Go's field order, with map keys sorted.
:func:`parse_create` builds the same body from the parsed ``argparse``
namespace so that a daemon sees the same request from ``engine run`` as
from ``docker run``; the helpers below port the Go parsers it relies on
(go-units sizes, go-connections port specs, ``--mount`` CSV, compose volume
specs, ulimits, devices) with their error messages.

Errors are :class:`FlagError` (exit status 125, like every docker CLI flag
error); a message that starts with ``invalid argument`` names the flag as
pflag does.
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.client.flagparse import (
    FALSE_VALUES,
    PULL_POLICIES,
    TRUE_VALUES,
    FlagError,
    convert_publish,
    dedupe_env,
    expose_ports,
    invalid_argument,
    is_ip,
    kv_to_map,
    normalize_capabilities,
    parse_cpus,
    parse_device,
    parse_go_duration,
    parse_kv_file,
    parse_mount,
    parse_port_specs,
    parse_restart_policy,
    parse_ulimit,
    parse_volume_spec,
    throttle_device,
    validate_dns_search,
    validate_env,
    validate_extra_host,
    validate_label,
    validate_link,
    validate_sysctl,
    weight_device,
)
from engine.utils.units import parse_int, parse_uint, ram_in_bytes

__all__ = [
    "CreateSpec",
    "FlagError",
    "add_create_flags",
    "add_run_flags",
    "enable_bool_values",
    "normalize_platform",
    "parse_create",
]


def _security_opts(values: list[str]) -> tuple[list[str], list[str] | None, list[str] | None]:
    out = []
    masked: list[str] | None = None
    readonly: list[str] | None = None
    for opt in values:
        key, sep, val = opt.partition("=")
        if not sep and key != "no-new-privileges":
            key, sep, val = opt.partition(":")
        if (not sep or not val) and key != "no-new-privileges":
            raise FlagError(f'Invalid --security-opt: "{opt}"')
        if key == "seccomp" and val not in ("builtin", "unconfined"):
            try:
                with open(val, "rb") as fh:
                    profile = json.dumps(json.load(fh), separators=(",", ":"))
            except OSError as exc:
                reason = (exc.strerror or str(exc)).lower()
                raise FlagError(f"opening seccomp profile ({val}) failed: open {val}: {reason}") from None
            except ValueError as exc:
                raise FlagError(f"compacting json for seccomp profile ({val}) failed: {exc}") from None
            opt = f"seccomp={profile}"
        if opt == "systempaths=unconfined":
            masked, readonly = [], []
            continue
        out.append(opt)
    return out, masked, readonly


def _valid_mode(value: str, container_ok: bool) -> bool:
    if value in ("", "host"):
        return True
    kind, sep, ref = value.partition(":")
    return container_ok and kind == "container" and bool(sep) and bool(ref)


def _network_opt(value: str) -> dict[str, Any]:
    """One ``--network`` value: a name, or ``name=n,alias=a,ip=...`` (the advanced syntax)."""
    opt: dict[str, Any] = {
        "Target": "",
        "Aliases": [],
        "IPv4Address": "",
        "IPv6Address": "",
        "Links": [],
        "MacAddress": "",
        "LinkLocalIPs": [],
        "DriverOpts": {},
        "GwPriority": 0,
    }
    if not re.search(r"\w+=\w+(,\w+=\w+)*", value):
        opt["Target"] = value
        return opt
    for item in next(csv.reader([value])):
        key, sep, val = item.lower().partition("=")
        if not sep or not key:
            raise invalid_argument("--network", value, f"invalid field {item}")
        key, val = key.strip(), val.strip()
        if key == "name":
            opt["Target"] = val
        elif key == "alias":
            opt["Aliases"].append(val)
        elif key == "ip":
            opt["IPv4Address"] = val
        elif key == "ip6":
            opt["IPv6Address"] = val
        elif key == "mac-address":
            opt["MacAddress"] = val
        elif key == "link-local-ip":
            opt["LinkLocalIPs"].append(val)
        elif key == "driver-opt":
            k, s, v = val.partition("=")
            if not s or not k:
                raise invalid_argument("--network", value, "invalid key value pair format in driver options")
            opt["DriverOpts"][k.strip()] = v.strip()
        elif key == "gw-priority":
            try:
                opt["GwPriority"] = parse_int(val)
            except ValueError:
                raise invalid_argument("--network", value, f"invalid gw-priority ({val}): invalid syntax") from None
        else:
            raise invalid_argument("--network", value, f"invalid field key {key}")
    if not opt["Target"]:
        raise invalid_argument("--network", value, "network name/id is not specified")
    return opt


def _user_defined(network: str) -> bool:
    return network not in ("default", "bridge", "host", "none") and not network.startswith("container:")


def _endpoint(opt: dict[str, Any]) -> dict[str, Any]:
    if not opt["Target"].strip():
        raise FlagError("no name set for network")
    if not _user_defined(opt["Target"]):
        if opt["Aliases"]:
            raise FlagError("network-scoped aliases are only supported for user-defined networks")
        if opt["Links"]:
            raise FlagError("links are only supported for user-defined networks")
    ipam = None
    if opt["IPv4Address"] or opt["IPv6Address"] or opt["LinkLocalIPs"]:
        ipam = {key: opt[key] for key in ("IPv4Address", "IPv6Address", "LinkLocalIPs") if opt[key]}
    mac = opt["MacAddress"]
    if mac and not re.fullmatch(r"[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}", mac.strip()):
        raise FlagError(f"{mac} is not a valid mac address")
    return {
        "IPAMConfig": ipam,
        "Links": opt["Links"] or None,
        "Aliases": opt["Aliases"] or None,
        "MacAddress": mac,
        "DriverOpts": opt["DriverOpts"] or None,
        "GwPriority": opt["GwPriority"],
        "NetworkID": "",
        "EndpointID": "",
        "Gateway": "",
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": None,
    }


def _endpoint_is_empty(ep: dict[str, Any]) -> bool:
    return all(not v for v in ep.values())


def _networking(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    nets = [_network_opt(v) for v in args.network or []]
    aliases, links = args.network_alias or [], args.link or []
    extra_ips = args.link_local_ip or []

    def apply(n: dict[str, Any]) -> None:
        # The plain flags (--network-alias, --ip, ...) describe the first network.
        if n["Aliases"] and aliases:
            raise FlagError("conflicting options: cannot specify both --network-alias and per-network alias")
        if n["Links"] and links:
            raise FlagError("conflicting options: cannot specify both --link and per-network links")
        if n["IPv4Address"] and args.ip:
            raise FlagError("conflicting options: cannot specify both --ip and per-network IPv4 address")
        if n["IPv6Address"] and args.ip6:
            raise FlagError("conflicting options: cannot specify both --ip6 and per-network IPv6 address")
        if n["MacAddress"] and args.mac_address:
            raise FlagError("conflicting options: cannot specify both --mac-address and per-network MAC address")
        if n["LinkLocalIPs"] and extra_ips:
            raise FlagError(
                "conflicting options: cannot specify both --link-local-ip and per-network link-local IP addresses"
            )
        if aliases:
            n["Aliases"] = list(aliases)
        if _user_defined(n["Target"]) and links:
            n["Links"] = list(links)
        n["IPv4Address"] = args.ip or n["IPv4Address"]
        n["IPv6Address"] = args.ip6 or n["IPv6Address"]
        n["MacAddress"] = args.mac_address or n["MacAddress"]
        if extra_ips:
            n["LinkLocalIPs"] = list(extra_ips)

    endpoints: dict[str, Any] = {}
    if not nets:
        default = _network_opt("default")
        apply(default)
        endpoints["default"] = _endpoint(default)
    user, builtin = False, False
    for i, n in enumerate(nets):
        user, builtin = (True, builtin) if _user_defined(n["Target"]) else (user, True)
        if i == 0:
            apply(n)
        ep = _endpoint(n)
        if n["Target"] in endpoints:
            raise FlagError(f'network "{n["Target"]}" is specified multiple times')
        # One network with nothing special: the CLI leaves its endpoint out.
        if i == 0 and len(nets) == 1 and _endpoint_is_empty(ep):
            continue
        endpoints[n["Target"]] = ep
    if user and builtin:
        raise FlagError("conflicting options: cannot attach both user-defined and non-user-defined network-modes")
    mode = nets[0]["Target"] if nets else "default"
    return mode, {"EndpointsConfig": endpoints}


_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "i386": "386",
    "armhf": "arm",
    "armel": "arm",
}


def normalize_platform(value: str) -> str:
    """``--platform`` as the CLI sends it (containerd ``platforms.Parse``, then ``os/arch[/variant]``)."""
    if not value:
        return ""
    from engine.utils.host import goarch

    parts = value.lower().split("/")
    if len(parts) > 3 or not all(parts):
        raise FlagError(f'error parsing specified platform: "{value}": invalid platform component')
    if len(parts) == 1:
        parts = [parts[0], goarch()] if parts[0] in ("linux", "windows", "darwin", "freebsd") else ["linux", parts[0]]
    parts[1] = _ARCH_ALIASES.get(parts[1], parts[1])
    if parts[1] == "arm64" and parts[2:] == ["v8"]:
        parts = parts[:2]
    elif parts[1] == "arm" and len(parts) == 2:
        parts.append("v7")
    return "/".join(parts)


# -- argparse ---------------------------------------------------------------------------------------------


def _bool_flag(p: argparse.ArgumentParser, *names: str, help: str, default: bool = False) -> None:
    p.add_argument(*names, action="store_true", default=default, help=help)


def add_create_flags(p: argparse.ArgumentParser) -> None:
    """The flags ``run`` and ``create`` share (docker's ``addFlags`` plus ``--name``, ``--pull``...)."""
    a = p.add_argument
    a("--help", action="help", help="print usage")
    a("--name", help="assign a name to the container")
    a("--pull", default="missing", help='pull image before running ("always", "missing", "never")')
    _bool_flag(p, "-q", "--quiet", help="suppress the pull output")
    a(
        "--platform",
        default=os.environ.get("DOCKER_DEFAULT_PLATFORM", ""),
        help="set platform if server is multi-platform capable",
    )
    a("--disable-content-trust", action="store_true", default=True, help=argparse.SUPPRESS)
    # general
    a("-a", "--attach", action="append", metavar="STREAM", help="attach to STDIN, STDOUT or STDERR")
    a("--device", action="append", help="add a host device to the container")
    a("--device-cgroup-rule", action="append", help="add a rule to the cgroup allowed devices list")
    a("-e", "--env", action="append", help="set environment variables")
    a("--env-file", action="append", help="read in a file of environment variables")
    a("--entrypoint", default=None, help="overwrite the default ENTRYPOINT of the image")
    a("--group-add", action="append", help="add additional groups to join")
    a("-h", "--hostname", default="", help="container host name")
    a("--domainname", default="", help="container NIS domain name")
    _bool_flag(p, "-i", "--interactive", help="keep STDIN open even if not attached")
    a("-l", "--label", action="append", help="set meta data on a container")
    a("--label-file", action="append", help="read in a line delimited file of labels")
    _bool_flag(p, "--read-only", help="mount the container's root filesystem as read only")
    a("--restart", default="no", help="restart policy to apply when a container exits")
    a("--stop-signal", default="", help="signal to stop the container")
    a("--stop-timeout", default=None, help="timeout (in seconds) to stop a container")
    a("--sysctl", action="append", help="sysctl options")
    _bool_flag(p, "-t", "--tty", help="allocate a pseudo-TTY")
    a("--ulimit", action="append", help="ulimit options")
    a("-u", "--user", default="", help="username or UID (format: <name|uid>[:<group|gid>])")
    a("-w", "--workdir", default="", help="working directory inside the container")
    _bool_flag(p, "--rm", help="automatically remove the container when it exits")
    # security
    a("--cap-add", action="append", help="add Linux capabilities")
    a("--cap-drop", action="append", help="drop Linux capabilities")
    _bool_flag(p, "--privileged", help="give extended privileges to this container")
    a("--security-opt", action="append", help="security options")
    a("--userns", default="", help="user namespace to use")
    a("--cgroupns", default="", help="cgroup namespace to use (host|private)")
    # network
    a("--add-host", action="append", help="add a custom host-to-IP mapping (host:ip)")
    a("--dns", action="append", help="set custom DNS servers")
    a("--dns-option", "--dns-opt", action="append", dest="dns_option", help="set DNS options")
    a("--dns-search", action="append", help="set custom DNS search domains")
    a("--expose", action="append", help="expose a port or a range of ports")
    a("--ip", default="", help="IPv4 address (e.g., 172.30.100.104)")
    a("--ip6", default="", help="IPv6 address (e.g., 2001:db8::33)")
    a("--link", action="append", help="add link to another container")
    a("--link-local-ip", action="append", help="container IPv4/IPv6 link-local addresses")
    a("--mac-address", default="", help="container MAC address (e.g., 92:d0:c6:0a:29:33)")
    a("-p", "--publish", action="append", help="publish a container's port(s) to the host")
    _bool_flag(p, "-P", "--publish-all", help="publish all exposed ports to random ports")
    a("--network", "--net", action="append", dest="network", help="connect a container to a network")
    a("--network-alias", "--net-alias", action="append", dest="network_alias", help="add network-scoped alias")
    # logging and storage
    a("--log-driver", default="", help="logging driver for the container")
    a("--volume-driver", default="", help="optional volume driver for the container")
    a("--log-opt", action="append", help="log driver options")
    a("--storage-opt", action="append", help="storage driver options for the container")
    a("--tmpfs", action="append", help="mount a tmpfs directory")
    a("--volumes-from", action="append", help="mount volumes from the specified container(s)")
    a("-v", "--volume", action="append", help="bind mount a volume")
    a("--mount", action="append", help="attach a filesystem mount to the container")
    # health
    a("--health-cmd", default="", help="command to run to check health")
    a("--health-interval", default="0s", help="time between running the check (ms|s|m|h)")
    a("--health-retries", default="0", help="consecutive failures needed to report unhealthy")
    a("--health-timeout", default="0s", help="maximum time to allow one check to run (ms|s|m|h)")
    a("--health-start-period", default="0s", help="start period for the container to initialize (ms|s|m|h)")
    a("--health-start-interval", default="0s", help="time between checks during the start period (ms|s|m|h)")
    _bool_flag(p, "--no-healthcheck", help="disable any container-specified HEALTHCHECK")
    # resources
    a("--blkio-weight", default="0", help="block IO (relative weight), between 10 and 1000, or 0 to disable")
    a("--blkio-weight-device", action="append", help="block IO weight (relative device weight)")
    a("--cidfile", default="", help="write the container ID to the file")
    a("--cpuset-cpus", default="", help="CPUs in which to allow execution (0-3, 0,1)")
    a("--cpuset-mems", default="", help="MEMs in which to allow execution (0-3, 0,1)")
    a("--cpu-count", default="0", help=argparse.SUPPRESS)
    a("--cpu-percent", default="0", help=argparse.SUPPRESS)
    a("--cpu-period", default="0", help="limit CPU CFS (Completely Fair Scheduler) period")
    a("--cpu-quota", default="0", help="limit CPU CFS (Completely Fair Scheduler) quota")
    a("--cpu-rt-period", default="0", help="limit CPU real-time period in microseconds")
    a("--cpu-rt-runtime", default="0", help="limit CPU real-time runtime in microseconds")
    a("-c", "--cpu-shares", default="0", help="CPU shares (relative weight)")
    a("--cpus", default=None, help="number of CPUs")
    a("--device-read-bps", action="append", help="limit read rate (bytes per second) from a device")
    a("--device-read-iops", action="append", help="limit read rate (IO per second) from a device")
    a("--device-write-bps", action="append", help="limit write rate (bytes per second) to a device")
    a("--device-write-iops", action="append", help="limit write rate (IO per second) to a device")
    a("--kernel-memory", default=None, help="kernel memory limit")
    a("-m", "--memory", default=None, help="memory limit (32m, 1g...)")
    a("--memory-reservation", default=None, help="memory soft limit")
    a("--memory-swap", default=None, help="swap limit equal to memory plus swap: '-1' to enable unlimited swap")
    a("--memory-swappiness", default="-1", help="tune container memory swappiness (0 to 100)")
    _bool_flag(p, "--oom-kill-disable", help="disable OOM Killer")
    a("--oom-score-adj", default="0", help="tune host's OOM preferences (-1000 to 1000)")
    a("--pids-limit", default="0", help="tune container pids limit (set -1 for unlimited)")
    # low level
    a("--cgroup-parent", default="", help="optional parent cgroup for the container")
    a("--ipc", default="", help="IPC mode to use")
    a("--isolation", default="", help="container isolation technology")
    a("--pid", default="", help="PID namespace to use")
    a("--shm-size", default=None, help="size of /dev/shm")
    a("--uts", default="", help="UTS namespace to use")
    a("--runtime", default="", help="runtime to use for this container")
    a(
        "--init",
        action="store_true",
        default=None,
        help="run an init inside the container that forwards signals and reaps processes",
    )
    enable_bool_values(p)


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """``run``'s own flags on top of :func:`add_create_flags`."""
    _bool_flag(p, "-d", "--detach", help="run container in background and print container ID")
    _bool_flag(p, "--sig-proxy", default=True, help="proxy received signals to the process")
    p.add_argument("--detach-keys", default="", help="override the key sequence for detaching a container")
    add_create_flags(p)


def enable_bool_values(parser: argparse.ArgumentParser) -> None:
    """Accept ``--flag=false`` / ``--flag=true`` for boolean flags, as Go's pflag does.

    ``--sig-proxy=false`` is how that flag is turned off. Each boolean flag
    gets a hidden twin that stores the opposite value, and the arguments
    before the first positional one are rewritten to use it.
    """
    twins: dict[str, tuple[str, str]] = {}
    for action in list(parser._actions):
        if not isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            continue
        longs = [opt for opt in action.option_strings if opt.startswith("--")]
        if not longs:
            continue
        off = f"{longs[0]}\x00false"
        parser.add_argument(off, dest=action.dest, action="store_const", const=False, help=argparse.SUPPRESS)
        for opt in action.option_strings:
            twins[opt] = (opt, off)
    if getattr(parser, "_bool_twins", None) is None:
        original = parser.parse_known_args

        def parse_known_args(args: Sequence[str] | None = None, namespace: Any = None) -> Any:
            return original(_rewrite_bools(parser, list(args or []), parser._bool_twins), namespace)  # type: ignore[attr-defined]

        parser.parse_known_args = parse_known_args  # type: ignore[method-assign,assignment]
        parser._bool_twins = {}  # type: ignore[attr-defined]
    parser._bool_twins.update(twins)  # type: ignore[attr-defined]


def _rewrite_bools(parser: argparse.ArgumentParser, args: list[str], twins: dict[str, tuple[str, str]]) -> list[str]:
    out = []
    takes_value = {opt for action in parser._actions if action.nargs != 0 for opt in action.option_strings}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            out.extend(args[i:])
            break
        name, sep, value = arg.partition("=")
        if sep and name in twins:
            if value in TRUE_VALUES:
                arg = twins[name][0]
            elif value in FALSE_VALUES:
                arg = twins[name][1]
            else:
                raise FlagError(
                    f'invalid argument "{value}" for "{name}" flag: strconv.ParseBool: '
                    f'parsing "{value}": invalid syntax'
                )
        out.append(arg)
        if not sep and name in takes_value and i + 1 < len(args):
            out.append(args[i + 1])
            i += 1
        i += 1
    return out


# -- the create body ---------------------------------------------------------------------------------------


@dataclass
class CreateSpec:
    """What ``run``/``create`` send: the body and the query of ``POST /containers/create``."""

    body: dict[str, Any]
    name: str = ""
    platform: str = ""
    pull: str = "missing"
    quiet: bool = False
    cidfile: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        return self.body

    @property
    def host_config(self) -> dict[str, Any]:
        return self.body["HostConfig"]

    def params(self) -> dict[str, str]:
        params = {}
        if self.platform:
            params["platform"] = self.platform
        if self.name:
            params["name"] = self.name
        return params


def _int_flag(args: argparse.Namespace, attr: str, flag: str, bits: int = 64, unsigned: bool = False) -> int:
    value = getattr(args, attr)
    try:
        return parse_uint(value, bits) if unsigned else parse_int(value, bits)
    except ValueError as exc:
        raise invalid_argument(flag, value, str(exc)) from None


def _size_flag(args: argparse.Namespace, attr: str, flag: str, swap: bool = False) -> int:
    value = getattr(args, attr)
    if value is None:
        return 0
    if swap and value == "-1":
        return -1
    try:
        return ram_in_bytes(value)
    except ValueError as exc:
        raise invalid_argument(flag, value, str(exc)) from None


def _duration_flag(args: argparse.Namespace, attr: str, flag: str) -> int:
    value = getattr(args, attr)
    try:
        return parse_go_duration(value)
    except ValueError as exc:
        raise invalid_argument(flag, value, str(exc)) from None


def _list(args: argparse.Namespace, attr: str) -> list[str]:
    return list(getattr(args, attr, None) or [])


def parse_create(
    args: argparse.Namespace,
    console_size: tuple[int, int] = (0, 0),
    lookup_env: Callable[[str], str | None] = os.environ.get,
) -> CreateSpec:
    """The create body for parsed ``run``/``create`` arguments, as the docker CLI builds it.

    :param console_size: ``(height, width)`` of our stdout if it is a terminal.
    :param lookup_env: where ``-e KEY`` (no value) and bare keys in env files find their values.
    :raises FlagError: for any value docker would refuse before calling the daemon.
    """
    if args.pull not in PULL_POLICIES + ("",):
        raise FlagError(f'invalid pull option: \'{args.pull}\': must be one of "always", "missing" or "never"')
    attach = []
    for stream in _list(args, "attach"):
        if stream.lower() not in ("stdin", "stdout", "stderr"):
            raise invalid_argument("-a, --attach", stream, "valid streams are STDIN, STDOUT and STDERR")
        attach.append(stream.lower())
    attach_stdin = "stdin" in attach or args.interactive
    attach_stdout = "stdout" in attach or not attach
    attach_stderr = "stderr" in attach or not attach

    if args.mac_address and not re.fullmatch(r"[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}", args.mac_address.strip()):
        raise FlagError(f"{args.mac_address} is not a valid mac address")
    swappiness = _int_flag(args, "memory_swappiness", "--memory-swappiness")
    if swappiness != -1 and not 0 <= swappiness <= 100:
        raise FlagError(f"invalid value: {swappiness}. Valid memory swappiness range is 0-100")

    # -v: a spec with a source is a bind (or a named volume), sent in Binds;
    # one without is an anonymous volume, sent in Config.Volumes.
    binds: list[str] = []
    volumes: dict[str, dict] = {}
    for spec in dict.fromkeys(_list(args, "volume")):
        parsed = parse_volume_spec(spec)
        if parsed["Source"]:
            bind = spec
            if parsed["Type"] == "bind":
                host_part, sep, rest = spec.partition(":")
                if sep and host_part.startswith("."):
                    bind = os.path.abspath(host_part) + ":" + rest
            binds.append(bind)
        else:
            volumes[spec] = {}

    tmpfs = {}
    for value in _list(args, "tmpfs"):
        path, _, options = value.partition(":")
        tmpfs[path] = options

    entrypoint = None
    if args.entrypoint:
        entrypoint = [args.entrypoint]
    elif args.entrypoint == "":
        # --entrypoint= resets the image's entrypoint.
        entrypoint = [""]

    exposed, bindings = parse_port_specs(convert_publish(_list(args, "publish")))
    expose_ports(_list(args, "expose"), exposed)

    devices = [parse_device(d) for d in _list(args, "device")]
    for rule in _list(args, "device_cgroup_rule"):
        if not re.fullmatch(r"[acb] ([0-9]+|\*):([0-9]+|\*) [rwm]{1,3}", rule):
            raise invalid_argument("--device-cgroup-rule", rule, f"invalid device cgroup format '{rule}'")

    env = [validate_env(e, lookup_env) for e in _list(args, "env")]
    env_from_files: list[str] = []
    for path in _list(args, "env_file"):
        env_from_files += parse_kv_file(path, lookup_env)
    env = env_from_files + dedupe_env(env)
    labels_list: list[str] = []
    for path in _list(args, "label_file"):
        labels_list += parse_kv_file(path, None)
    labels_list += [validate_label(v) for v in _list(args, "label")]

    if not _valid_mode(args.pid, container_ok=True):
        raise FlagError("--pid: invalid PID mode")
    if not _valid_mode(args.uts, container_ok=False):
        raise FlagError("--uts: invalid UTS mode")
    if args.userns not in ("", "host"):
        raise FlagError("--userns: invalid USER mode")
    if args.cgroupns not in ("", "host", "private"):
        raise FlagError("--cgroupns: invalid CGROUP mode")

    restart = parse_restart_policy(args.restart)
    log_opts = kv_to_map(_list(args, "log_opt"))
    if args.log_driver == "none" and _list(args, "log_opt"):
        raise FlagError(f"invalid logging opts for driver {args.log_driver}")
    security_opts, masked_paths, readonly_paths = _security_opts(_list(args, "security_opt"))
    storage_opts: dict[str, str] = {}
    for opt in _list(args, "storage_opt"):
        key, sep, val = opt.partition("=")
        if not sep:
            raise FlagError("invalid storage option")
        storage_opts[key] = val

    health: dict[str, Any] | None = None
    health_durations = {
        name: _duration_flag(args, f"health_{name}", f"--health-{name.replace('_', '-')}")
        for name in ("interval", "timeout", "start_period", "start_interval")
    }
    health_retries = _int_flag(args, "health_retries", "--health-retries", bits=64)
    have_health = bool(args.health_cmd) or any(health_durations.values()) or health_retries != 0
    if args.no_healthcheck:
        if have_health:
            raise FlagError("--no-healthcheck conflicts with --health-* options")
        health = {"Test": ["NONE"]}
    elif have_health:
        for hname, hvalue in health_durations.items():
            if hvalue < 0:
                raise FlagError(f"--health-{hname.replace('_', '-')} cannot be negative")
        if health_retries < 0:
            raise FlagError("--health-retries cannot be negative")
        health = {}
        if args.health_cmd:
            health["Test"] = ["CMD-SHELL", args.health_cmd]
        for key, hname in (
            ("Interval", "interval"),
            ("Timeout", "timeout"),
            ("StartPeriod", "start_period"),
            ("StartInterval", "start_interval"),
        ):
            if health_durations[hname]:
                health[key] = health_durations[hname]
        if health_retries:
            health["Retries"] = health_retries

    nano_cpus = 0
    if args.cpus is not None:
        try:
            nano_cpus = parse_cpus(args.cpus)
        except ValueError as exc:
            raise invalid_argument("--cpus", args.cpus, str(exc)) from None
    stop_timeout = None
    if args.stop_timeout is not None:
        try:
            stop_timeout = parse_int(args.stop_timeout)
        except ValueError as exc:
            raise invalid_argument("--stop-timeout", args.stop_timeout, str(exc)) from None

    dns = []
    for server in _list(args, "dns"):
        if not is_ip(server.strip()):
            raise invalid_argument("--dns", server, f"IP address is not correctly formatted: {server}")
        dns.append(str(ipaddress.ip_address(server.strip())))
    ulimits: dict[str, dict] = {}
    for value in _list(args, "ulimit"):
        limit = parse_ulimit(value)
        ulimits[limit["Name"]] = limit
    sysctls = {}
    for value in _list(args, "sysctl"):
        key, _, val = validate_sysctl(value).partition("=")
        sysctls[key] = val
    links = [validate_link(v) for v in _list(args, "link")]
    extra_hosts = [validate_extra_host(v) for v in _list(args, "add_host")]
    mounts = [parse_mount(v) for v in _list(args, "mount")]
    network_mode, networking = _networking(args)
    blkio_weight = _int_flag(args, "blkio_weight", "--blkio-weight", bits=16, unsigned=True)

    resources: dict[str, Any] = {
        "CpuShares": _int_flag(args, "cpu_shares", "-c, --cpu-shares"),
        "Memory": _size_flag(args, "memory", "-m, --memory"),
        "NanoCpus": nano_cpus,
        "CgroupParent": args.cgroup_parent,
        "BlkioWeight": blkio_weight,
        "BlkioWeightDevice": [weight_device(v) for v in _list(args, "blkio_weight_device")],
        "BlkioDeviceReadBps": [throttle_device("--device-read-bps", v, False) for v in _list(args, "device_read_bps")],
        "BlkioDeviceWriteBps": [
            throttle_device("--device-write-bps", v, False) for v in _list(args, "device_write_bps")
        ],
        "BlkioDeviceReadIOps": [
            throttle_device("--device-read-iops", v, True) for v in _list(args, "device_read_iops")
        ],
        "BlkioDeviceWriteIOps": [
            throttle_device("--device-write-iops", v, True) for v in _list(args, "device_write_iops")
        ],
        "CpuPeriod": _int_flag(args, "cpu_period", "--cpu-period"),
        "CpuQuota": _int_flag(args, "cpu_quota", "--cpu-quota"),
        "CpuRealtimePeriod": _int_flag(args, "cpu_rt_period", "--cpu-rt-period"),
        "CpuRealtimeRuntime": _int_flag(args, "cpu_rt_runtime", "--cpu-rt-runtime"),
        "CpusetCpus": args.cpuset_cpus,
        "CpusetMems": args.cpuset_mems,
        "Devices": devices,
        "DeviceCgroupRules": _list(args, "device_cgroup_rule") or None,
        "DeviceRequests": None,
    }
    # API 1.41 still knows KernelMemory; like the CLI, send it only when set.
    kernel_memory = _size_flag(args, "kernel_memory", "--kernel-memory")
    if kernel_memory:
        resources["KernelMemory"] = kernel_memory
    resources.update(
        {
            "MemoryReservation": _size_flag(args, "memory_reservation", "--memory-reservation"),
            "MemorySwap": _size_flag(args, "memory_swap", "--memory-swap", swap=True),
            "MemorySwappiness": swappiness,
            "OomKillDisable": args.oom_kill_disable,
            "PidsLimit": _int_flag(args, "pids_limit", "--pids-limit"),
            "Ulimits": list(ulimits.values()),
            "CpuCount": _int_flag(args, "cpu_count", "--cpu-count"),
            "CpuPercent": _int_flag(args, "cpu_percent", "--cpu-percent"),
            "IOMaximumIOps": 0,
            "IOMaximumBandwidth": 0,
        }
    )

    config: dict[str, Any] = {
        "Hostname": args.hostname,
        "Domainname": args.domainname,
        "User": args.user,
        "AttachStdin": attach_stdin,
        "AttachStdout": attach_stdout,
        "AttachStderr": attach_stderr,
    }
    if exposed:
        config["ExposedPorts"] = dict(sorted(exposed.items()))
    config.update(
        {
            "Tty": args.tty,
            "OpenStdin": args.interactive,
            # With stdin attached, stdin closes when this client disconnects.
            "StdinOnce": bool(args.interactive and attach_stdin),
            "Env": env or None,
            "Cmd": list(args.command) or None,
        }
    )
    if health is not None:
        config["Healthcheck"] = health
    config.update(
        {
            "Image": args.image,
            "Volumes": volumes,
            "WorkingDir": args.workdir,
            "Entrypoint": entrypoint,
        }
    )
    endpoint = networking["EndpointsConfig"].get(network_mode)
    if endpoint and endpoint.get("MacAddress"):
        config["MacAddress"] = endpoint["MacAddress"]
    config.update({"OnBuild": None, "Labels": dict(sorted(kv_to_map(labels_list).items()))})
    if args.stop_signal:
        config["StopSignal"] = args.stop_signal
    if stop_timeout is not None:
        config["StopTimeout"] = stop_timeout

    if args.rm and restart["Name"] not in ("no", ""):
        raise FlagError("conflicting options: cannot specify both --restart and --rm")
    host: dict[str, Any] = {
        "Binds": binds or None,
        "ContainerIDFile": args.cidfile,
        "LogConfig": {"Type": args.log_driver, "Config": dict(sorted(log_opts.items()))},
        "NetworkMode": network_mode,
        "PortBindings": dict(sorted(bindings.items())),
        "RestartPolicy": restart,
        "AutoRemove": args.rm,
        "VolumeDriver": args.volume_driver,
        "VolumesFrom": _list(args, "volumes_from") or None,
        # API < 1.42 and a linux --platform: the client zeroes the size.
        "ConsoleSize": [0, 0] if args.platform.startswith("linux") else list(console_size),
        "CapAdd": normalize_capabilities(_list(args, "cap_add")),
        "CapDrop": normalize_capabilities(_list(args, "cap_drop")),
        "CgroupnsMode": args.cgroupns,
        "Dns": dns,
        "DnsOptions": _list(args, "dns_option"),
        "DnsSearch": [validate_dns_search(v) for v in _list(args, "dns_search")],
        "ExtraHosts": extra_hosts or None,
        "GroupAdd": _list(args, "group_add") or None,
        "IpcMode": args.ipc,
        "Cgroup": "",
        "Links": links or None,
        "OomScoreAdj": _int_flag(args, "oom_score_adj", "--oom-score-adj"),
        "PidMode": args.pid,
        "Privileged": args.privileged,
        "PublishAllPorts": args.publish_all,
        "ReadonlyRootfs": args.read_only,
        # The CLI filters systempaths=unconfined out of a non-nil slice: [] not null.
        "SecurityOpt": security_opts if _list(args, "security_opt") else None,
    }
    if storage_opts:
        host["StorageOpt"] = dict(sorted(storage_opts.items()))
    if tmpfs:
        host["Tmpfs"] = dict(sorted(tmpfs.items()))
    host.update(
        {
            "UTSMode": args.uts,
            "UsernsMode": args.userns,
            "ShmSize": _size_flag(args, "shm_size", "--shm-size"),
        }
    )
    if sysctls:
        host["Sysctls"] = dict(sorted(sysctls.items()))
    if args.runtime:
        host["Runtime"] = args.runtime
    host["Isolation"] = args.isolation
    host.update(resources)
    if mounts:
        host["Mounts"] = mounts
    host["MaskedPaths"] = masked_paths
    host["ReadonlyPaths"] = readonly_paths
    if args.init is not None:
        host["Init"] = args.init

    body = dict(config)
    body["HostConfig"] = host
    body["NetworkingConfig"] = networking
    warnings = []
    for server in dns:
        if ipaddress.ip_address(server).is_loopback:
            warnings.append(f"Localhost DNS ({server}) may fail in containers.")
            break
    return CreateSpec(
        body=body,
        name=args.name or "",
        platform=normalize_platform(args.platform),
        pull=args.pull or "missing",
        quiet=args.quiet,
        cidfile=args.cidfile,
        warnings=warnings,
    )
