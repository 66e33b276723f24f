"""Go parsers the docker CLI uses for ``run``/``create`` flag values, ported with their messages.

go-units sizes (``32m``), ``--cpus`` as nano CPUs, Go durations, go-connections
port specs (``127.0.0.1:8080:80/udp``, ranges), the compose loader's ``-v``
spec, the ``--mount`` CSV, devices, ulimits, block-IO throttles and the
CLI's small validators (``-e``, ``-l``, ``--add-host``, ``--dns-search``,
``--sysctl``, ``--link``, ``--restart``). :mod:`engine.client.runflags`
assembles their results into the create body.
"""

from __future__ import annotations

import csv
import ipaddress
import os
import re
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any

from engine.client.errors import ClientError
from engine.security.sysctls import IPC_SYSCTLS

#: The pull policies of ``--pull``.
PULL_POLICIES = ("always", "missing", "never")

_ULIMIT_NAMES = (
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
)
_DOMAIN_RE = re.compile(
    r"^(:?(:?[a-zA-Z0-9]|(:?[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9]))"
    r"(:?\.(:?[a-zA-Z0-9]|(:?[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])))*)\.?\s*$"
)
TRUE_VALUES = ("1", "t", "T", "true", "TRUE", "True")
FALSE_VALUES = ("0", "f", "F", "false", "FALSE", "False")


class FlagError(ClientError):
    """A flag value the docker CLI would refuse (exit status 125)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=125)


def invalid_argument(flag: str, value: str, reason: str) -> FlagError:
    return FlagError(f'invalid argument "{value}" for "{flag}" flag: {reason}')


# -- Go parsers --------------------------------------------------------------------------------------------


def parse_uint(text: str, bits: int = 64, base: int = 10) -> int:
    """Go's ``strconv.ParseUint``, with its error text."""
    if not text or not all(c in "0123456789abcdefABCDEF"[: base if base <= 10 else 22] for c in text):
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    value = int(text, base)
    if value >= 1 << bits:
        raise ValueError(f'strconv.ParseUint: parsing "{text}": value out of range')
    return value


def parse_int(text: str, bits: int = 64) -> int:
    """Go's ``strconv.ParseInt`` (base 10), with its error text."""
    if not re.fullmatch(r"[+-]?[0-9]+", text or ""):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    value = int(text)
    if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": value out of range')
    return value


def _parse_size(text: str, binary: bool) -> int:
    sep = max(text.rfind(c) for c in "01234567890. ")
    if sep == -1:
        raise ValueError(f"invalid size: '{text}'")
    if text[sep] != " ":
        num, sfx = text[: sep + 1], text[sep + 1 :]
    else:
        num, sfx = text[:sep], text[sep + 1 :]
    try:
        size = float(num)
    except ValueError:
        raise ValueError(f'strconv.ParseFloat: parsing "{num}": invalid syntax') from None
    if size < 0:
        raise ValueError(f"invalid size: '{text}'")
    if not sfx:
        return int(size)
    bad = ValueError(f"invalid suffix: '{sfx.lower() if len(sfx) <= 3 else sfx}'")
    if len(sfx) > 3:
        raise bad
    sfx = sfx.lower()
    if sfx[0] == "b":
        if len(sfx) > 1:
            raise bad
        return int(size)
    base = 1024 if binary else 1000
    powers = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
    if sfx[0] not in powers:
        raise bad
    size *= base ** powers[sfx[0]]
    if (len(sfx) == 2 and sfx[1] != "b") or (len(sfx) == 3 and sfx[1:] != "ib"):
        raise bad
    return int(size)


def ram_in_bytes(text: str) -> int:
    """go-units ``RAMInBytes``: ``32m`` is 32 MiB, ``1g`` 1 GiB, a bare number bytes."""
    return _parse_size(text, binary=True)


def from_human_size(text: str) -> int:
    """go-units ``FromHumanSize``: decimal units (``1k`` is 1000)."""
    return _parse_size(text, binary=False)


def parse_cpus(text: str) -> int:
    """``--cpus 1.5`` in nano CPUs (1.5e9), refusing more precision than that, as docker does."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"failed to parse {text} as a rational number") from None
    nano = value * 1_000_000_000
    if nano.denominator != 1:
        raise ValueError("value is too precise")
    return int(nano)


_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_go_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` in nanoseconds (``1m30s``, ``500ms``, ``-1h``)."""
    orig = text
    sign = 1
    if text[:1] in ("+", "-"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise ValueError(f'time: invalid duration "{orig}"')
    total = 0.0
    pos = 0
    while pos < len(text):
        match = re.match(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]*)", text[pos:])
        assert match is not None
        num, unit = match.groups()
        if not num or num == ".":
            raise ValueError(f'time: invalid duration "{orig}"')
        if not unit:
            raise ValueError(f'time: missing unit in duration "{orig}"')
        if unit not in _DURATION_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{orig}"')
        total += float(num) * _DURATION_UNITS[unit]
        pos += match.end()
    return sign * int(total)


def is_ip(text: str) -> bool:
    """Go's ``net.ParseIP(text) != nil``."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return "%" not in text


# -- ports (go-connections/nat) ----------------------------------------------------------------------------


def parse_port_range(text: str) -> tuple[int, int]:
    """nat ``ParsePortRange``: ``80`` or ``8000-8010``."""
    if text == "":
        raise ValueError("empty string specified for ports")
    if "-" not in text:
        port = parse_uint(text, 16)
        return port, port
    parts = text.split("-")
    start = parse_uint(parts[0], 16)
    end = parse_uint(parts[1], 16)
    if end < start:
        raise ValueError(f"invalid range specified for port: {text}")
    return start, end


def split_proto_port(raw: str) -> tuple[str, str]:
    """nat ``SplitProtoPort``: ``80/udp`` -> ``("udp", "80")``; tcp by default."""
    parts = raw.split("/")
    if not raw or not parts[0]:
        return "", ""
    if len(parts) == 1:
        return "tcp", raw
    if not parts[1]:
        return "tcp", parts[0]
    return parts[1], parts[0]


def _split_port_parts(raw: str) -> tuple[str, str, str]:
    parts = raw.split(":")
    n = len(parts)
    if n == 1:
        return "", "", parts[0]
    if n == 2:
        return "", parts[0], parts[1]
    if n == 3:
        return parts[0], parts[1], parts[2]
    return ":".join(parts[: n - 2]), parts[n - 2], parts[n - 1]


def _new_port(proto: str, port: str) -> str:
    start, end = parse_port_range(port) if port else (0, 0)
    return f"{start}/{proto}" if start == end else f"{start}-{end}/{proto}"


def parse_port_spec(raw: str) -> list[tuple[str, dict[str, str]]]:
    """nat ``ParsePortSpec``: one ``-p`` value as ``[(port, {"HostIp", "HostPort"})]``.

    Forms: ``ctr``, ``host:ctr``, ``ip:host:ctr``, ``ip::ctr``, ``[v6]:host:ctr``,
    each port maybe a range and ``ctr`` maybe ``/udp`` or ``/sctp``.
    """
    ip, host_port, container_port = _split_port_parts(raw)
    proto, container_port = split_proto_port(container_port)
    if ip and ip[0] == "[":
        if not ip.endswith("]"):
            raise FlagError(f"invalid IP address {ip}: address {ip}:: missing ']' in address")
        ip = ip[1:-1]
    if ip and not is_ip(ip):
        raise FlagError(f"invalid IP address: {ip}")
    if container_port == "":
        raise FlagError(f"no port specified: {raw}<empty>")
    try:
        start, end = parse_port_range(container_port)
    except ValueError:
        raise FlagError(f"invalid containerPort: {container_port}") from None
    host_start = host_end = 0
    if host_port:
        try:
            host_start, host_end = parse_port_range(host_port)
        except ValueError:
            raise FlagError(f"invalid hostPort: {host_port}") from None
    if host_port and (end - start) != (host_end - host_start) and end != start:
        raise FlagError(f"invalid ranges specified for container and host Ports: {container_port} and {host_port}")
    if proto.lower() not in ("tcp", "udp", "sctp"):
        raise FlagError(f"invalid proto: {proto}")
    out = []
    for i in range(end - start + 1):
        if host_port:
            host_port = str(host_start + i)
        if start == end and host_start != host_end:
            host_port = f"{host_port}-{host_end}"
        out.append((_new_port(proto.lower(), str(start + i)), {"HostIp": ip, "HostPort": host_port}))
    return out


def parse_port_specs(specs: Iterable[str]) -> tuple[dict[str, dict], dict[str, list[dict[str, str]]]]:
    """nat ``ParsePortSpecs``: ``(ExposedPorts, PortBindings)`` for all ``-p`` values."""
    exposed: dict[str, dict] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for raw in specs:
        for port, binding in parse_port_spec(raw):
            exposed.setdefault(port, {})
            bindings.setdefault(port, []).append(binding)
    return exposed, bindings


def convert_publish(values: Iterable[str]) -> list[str]:
    """``-p published=8080,target=80,protocol=udp`` to ``8080:80/udp`` (the CLI's long syntax)."""
    out = []
    for value in values:
        if "=" not in value:
            out.append(value)
            continue
        params = {"protocol": "tcp"}
        for param in value.split(","):
            key, sep, val = param.partition("=")
            if not sep or not key:
                raise FlagError(f"invalid publish opts format (should be name=value but got '{param}')")
            params[key] = val
        out.append(f"{params.get('published', '')}:{params.get('target', '')}/{params['protocol']}")
    return out


def expose_ports(values: Iterable[str], exposed: dict[str, dict]) -> None:
    for value in values:
        if ":" in value:
            raise FlagError(f"invalid port format for --expose: {value}")
        proto, port = split_proto_port(value)
        try:
            start, end = parse_port_range(port)
        except ValueError as exc:
            raise FlagError(f"invalid range format for --expose: {value}, error: {exc}") from None
        for p in range(start, end + 1):
            exposed.setdefault(f"{p}/{proto}", {})


# -- volumes, mounts, devices ------------------------------------------------------------------------------


def parse_volume_spec(spec: str) -> dict[str, Any]:
    """The compose loader's ``ParseVolume`` (what the CLI uses for ``-v``): ``{Type, Source, Target, ReadOnly}``."""
    if not spec:
        raise FlagError("invalid empty volume spec")
    if len(spec) <= 2:
        return {"Type": "volume", "Source": "", "Target": spec, "ReadOnly": False}
    vol: dict[str, Any] = {"Type": "", "Source": "", "Target": "", "ReadOnly": False}
    fields = spec.split(":")
    for i, part in enumerate(fields):
        last = i == len(fields) - 1
        if not part:
            raise FlagError(f"invalid spec: {spec}: empty section between colons")
        if not vol["Source"] and last:
            vol["Target"] = part
        elif not vol["Source"]:
            vol["Source"] = part
        elif not vol["Target"]:
            vol["Target"] = part
        elif not last:
            raise FlagError(f"invalid spec: {spec}: too many colons")
        else:
            for option in part.split(","):
                if option in ("ro", "rw"):
                    vol["ReadOnly"] = option == "ro"
    source = vol["Source"]
    vol["Type"] = "bind" if source and (source[0] in "./~" or source.startswith("\\\\")) else "volume"
    return vol


def parse_mount(value: str) -> dict[str, Any]:
    """One ``--mount`` CSV value as an API ``Mount`` (keys in Go's order, empty ones left out)."""
    try:
        fields = next(csv.reader([value]))
    except (csv.Error, StopIteration):
        raise invalid_argument("--mount", value, "parse error") from None
    mount: dict[str, Any] = {"Type": "volume"}
    opts: dict[str, dict[str, Any]] = {}

    def bad(message: str) -> FlagError:
        return invalid_argument("--mount", value, message)

    def parse_bool(key: str, val: str) -> bool:
        if val in TRUE_VALUES:
            return True
        if val in FALSE_VALUES:
            return False
        raise bad(f"invalid value for {key}: {val}")

    for item in fields:
        key, sep, val = item.partition("=")
        key = key.lower()
        if not sep:
            if key in ("readonly", "ro"):
                mount["ReadOnly"] = True
            elif key == "volume-nocopy":
                opts.setdefault("VolumeOptions", {})["NoCopy"] = True
            elif key == "bind-nonrecursive":
                opts.setdefault("BindOptions", {})["NonRecursive"] = True
            else:
                raise bad(f"invalid field '{item}' must be a key=value pair")
            continue
        if key == "type":
            mount["Type"] = val.lower()
        elif key in ("source", "src"):
            mount["Source"] = os.path.abspath(val) if val.startswith(".") else val
        elif key in ("target", "dst", "destination"):
            mount["Target"] = val
        elif key in ("readonly", "ro"):
            mount["ReadOnly"] = parse_bool(key, val)
        elif key == "consistency":
            mount["Consistency"] = val.lower()
        elif key == "bind-propagation":
            opts.setdefault("BindOptions", {})["Propagation"] = val.lower()
        elif key == "bind-nonrecursive":
            opts.setdefault("BindOptions", {})["NonRecursive"] = parse_bool(key, val)
        elif key == "bind-recursive":
            bind = opts.setdefault("BindOptions", {})
            if val == "disabled":
                bind["NonRecursive"] = True
            elif val == "writable":
                bind["ReadOnlyNonRecursive"] = True
            elif val == "readonly":
                bind["ReadOnlyForceRecursive"] = True
            elif val != "enabled":
                raise bad(f'invalid value for {key}: {val} (must be "enabled", "disabled", "writable", or "readonly")')
        elif key == "volume-subpath":
            opts.setdefault("VolumeOptions", {})["Subpath"] = val
        elif key == "volume-nocopy":
            opts.setdefault("VolumeOptions", {})["NoCopy"] = parse_bool("volume-nocopy", val)
        elif key == "volume-label":
            k, _, v = val.partition("=")
            if k:
                opts.setdefault("VolumeOptions", {}).setdefault("Labels", {})[k] = v
        elif key == "volume-driver":
            opts.setdefault("VolumeOptions", {}).setdefault("DriverConfig", {})["Name"] = val
        elif key == "volume-opt":
            k, _, v = val.partition("=")
            driver = opts.setdefault("VolumeOptions", {}).setdefault("DriverConfig", {})
            if k:
                driver.setdefault("Options", {})[k] = v
        elif key == "tmpfs-size":
            try:
                opts.setdefault("TmpfsOptions", {})["SizeBytes"] = ram_in_bytes(val)
            except ValueError:
                raise bad(f"invalid value for {key}: {val}") from None
        elif key == "tmpfs-mode":
            try:
                opts.setdefault("TmpfsOptions", {})["Mode"] = parse_uint(val, 32, base=8)
            except ValueError:
                raise bad(f"invalid value for {key}: {val}") from None
        else:
            raise bad(f"unexpected key '{key}' in '{item}'")
    if not mount.get("Type"):
        raise bad("type is required")
    if not mount.get("Target"):
        raise bad("target is required")
    for name, kind in (("VolumeOptions", "volume"), ("BindOptions", "bind"), ("TmpfsOptions", "tmpfs")):
        if name in opts and mount["Type"] != kind:
            raise bad(f"cannot mix '{kind}-*' options with mount type '{mount['Type']}'")
    bind = opts.get("BindOptions", {})
    if bind.get("ReadOnlyNonRecursive") and not mount.get("ReadOnly"):
        raise bad("option 'bind-recursive=writable' requires 'readonly' to be specified in conjunction")
    if bind.get("ReadOnlyForceRecursive"):
        if not mount.get("ReadOnly"):
            raise bad("option 'bind-recursive=readonly' requires 'readonly' to be specified in conjunction")
        if bind.get("Propagation") != "rprivate":
            raise bad(
                "option 'bind-recursive=readonly' requires 'bind-propagation=rprivate' to be specified in conjunction"
            )
    out: dict[str, Any] = {}
    for key in ("Type", "Source", "Target", "ReadOnly", "Consistency"):
        if mount.get(key):
            out[key] = mount[key]
    if "BindOptions" in opts:
        out["BindOptions"] = {
            k: bind[k]
            for k in (
                "Propagation",
                "NonRecursive",
                "CreateMountpoint",
                "ReadOnlyNonRecursive",
                "ReadOnlyForceRecursive",
            )
            if bind.get(k)
        }
    if "VolumeOptions" in opts:
        vol = opts["VolumeOptions"]
        vol.setdefault("DriverConfig", {})
        out["VolumeOptions"] = {k: vol[k] for k in ("NoCopy", "Labels", "Subpath") if vol.get(k)}
        driver = vol["DriverConfig"]
        out["VolumeOptions"]["DriverConfig"] = {k: driver[k] for k in ("Name", "Options") if driver.get(k)}
    if "TmpfsOptions" in opts:
        tmpfs = opts["TmpfsOptions"]
        out["TmpfsOptions"] = {k: tmpfs[k] for k in ("SizeBytes", "Mode") if tmpfs.get(k)}
    return out


def _valid_device_mode(mode: str) -> bool:
    return bool(mode) and all(c in "rwm" for c in mode) and len(set(mode)) == len(mode)


def _clean(path: str) -> str:
    """Go's ``path.Clean`` (``os.path.normpath`` keeps a leading ``//``)."""
    cleaned = os.path.normpath(path) if path else "."
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def parse_device(value: str) -> dict[str, str]:
    """``--device /dev/x[:/dev/y][:rwm]`` as a ``DeviceMapping`` (the CLI's validateLinuxPath + parseLinuxDevice)."""
    split = value.split(":", 2)
    if value.count(":") > 2 or not split[0]:
        raise FlagError(f"bad format for path: {value}")
    if len(split) == 1:
        container_path = split[0]
        value = _clean(container_path)
    elif len(split) == 2:
        if _valid_device_mode(split[1]):
            container_path = split[0]
            value = f"{_clean(container_path)}:{split[1]}"
        else:
            container_path = split[1]
            value = f"{split[0]}:{_clean(container_path)}"
    else:
        container_path = split[1]
        if not _valid_device_mode(split[2]):
            raise FlagError(f"bad mode specified: {split[2]}")
    if not container_path.startswith("/"):
        raise FlagError(f"{container_path} is not an absolute path")
    parts = value.split(":")
    src, dst, perms = parts[0], "", "rwm"
    if len(parts) == 3:
        perms = parts[2]
    if len(parts) >= 2:
        if _valid_device_mode(parts[1]):
            perms = parts[1]
        else:
            dst = parts[1]
    return {"PathOnHost": src, "PathInContainer": dst or src, "CgroupPermissions": perms}


def parse_ulimit(value: str) -> dict[str, Any]:
    """go-units ``ParseUlimit``: ``nofile=1024[:2048]`` as ``{Name, Hard, Soft}``."""
    name, sep, limits = value.partition("=")
    if not sep:
        raise invalid_argument("--ulimit", value, f"invalid ulimit argument: {value}")
    if name not in _ULIMIT_NAMES:
        raise invalid_argument("--ulimit", value, f"invalid ulimit type: {name}")
    parts = limits.split(":")
    if len(parts) > 2:
        raise invalid_argument(
            "--ulimit", value, f"too many limit value arguments - {limits}, can only have up to two, `soft[:hard]`"
        )
    try:
        soft = parse_int(parts[0])
        hard = parse_int(parts[1]) if len(parts) == 2 else soft
    except ValueError as exc:
        raise invalid_argument("--ulimit", value, str(exc)) from None
    if hard != -1:
        if soft == -1:
            raise invalid_argument(
                "--ulimit",
                value,
                f"ulimit soft limit must be less than or equal to hard limit: soft: -1 (unlimited), hard: {hard}",
            )
        if soft > hard:
            raise invalid_argument(
                "--ulimit", value, f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
            )
    return {"Name": name, "Hard": hard, "Soft": soft}


def throttle_device(flag: str, value: str, iops: bool) -> dict[str, Any]:
    path, sep, rate = value.partition(":")
    if not sep or not path:
        raise invalid_argument(flag, value, f"bad format: {value}")
    if not path.startswith("/dev/"):
        raise invalid_argument(flag, value, f"bad format for device path: {value}")
    try:
        n = parse_uint(rate) if iops else ram_in_bytes(rate)
        if n < 0:
            raise ValueError
    except ValueError:
        hint = (
            "<device-path>:<number>. Number must be a positive integer"
            if iops
            else "<device-path>:<number>[<unit>]. Number must be a positive integer. Unit is optional and can be kb, mb, or gb"
        )
        raise invalid_argument(flag, value, f"invalid rate for device: {value}. The correct format is {hint}") from None
    return {"Path": path, "Rate": n}


def weight_device(value: str) -> dict[str, Any]:
    path, sep, weight = value.partition(":")
    if not sep or not path:
        raise invalid_argument("--blkio-weight-device", value, f"bad format: {value}")
    if not path.startswith("/dev/"):
        raise invalid_argument("--blkio-weight-device", value, f"bad format for device path: {value}")
    try:
        w = parse_uint(weight, 16)
    except ValueError:
        raise invalid_argument("--blkio-weight-device", value, f"invalid weight for device: {value}") from None
    if w > 0 and not 10 <= w <= 1000:
        raise invalid_argument("--blkio-weight-device", value, f"invalid weight for device: {value}")
    return {"Path": path, "Weight": w}


# -- key=value lists ---------------------------------------------------------------------------------------


def validate_env(value: str, lookup: Callable[[str], str | None] = os.environ.get) -> str:
    """``-e KEY`` takes KEY's value from our environment when it has one, as docker does."""
    key, sep, _ = value.partition("=")
    if not key:
        raise invalid_argument("-e, --env", value, f"invalid environment variable: {value}")
    if sep:
        return value
    found = lookup(key)
    return f"{key}={found}" if found is not None else value


def parse_kv_file(path: str, lookup: Callable[[str], str | None] | None) -> list[str]:
    """An ``--env-file``/``--label-file``: ``KEY=value`` lines, ``#`` comments; a bare KEY takes our value."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise FlagError(f"open {path}: {exc.strerror.lower() if exc.strerror else exc}") from None
    out = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        raw = raw.rstrip(b"\r")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FlagError(f"invalid env file ({path}): invalid utf8 bytes at line {number}: {list(raw)}") from None
        if number == 1:
            text = text.removeprefix("\ufeff")
        line = text.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, _ = line.partition("=")
        if not key:
            raise FlagError(f"invalid env file ({path}): no variable name on line '{line}'")
        if " " in key or "\t" in key:
            raise FlagError(f"invalid env file ({path}): variable '{key}' contains whitespaces")
        if sep:
            out.append(line)
        elif lookup is not None and lookup(line) is not None:
            out.append(f"{key}={lookup(line)}")
    return out


def kv_to_map(values: Iterable[str]) -> dict[str, str]:
    """``ConvertKVStringsToMap``: ``a=b`` -> ``{"a": "b"}``; a bare key maps to ``""``."""
    out: dict[str, str] = {}
    for value in values:
        key, _, val = value.partition("=")
        out[key] = val
    return out


def dedupe_env(values: Iterable[str]) -> list[str]:
    # The CLI passes -e through a map (its proxy-config merge): a key given
    # twice is sent once, with the last value.
    out: dict[str, str] = {}
    for value in values:
        out[value.partition("=")[0]] = value
    return list(out.values())


def validate_label(value: str) -> str:
    key = value.partition("=")[0].lstrip(" \t\n\v\f\r")
    if not key:
        raise invalid_argument("-l, --label", value, f"invalid label '{value}': empty name")
    if any(c in key for c in " \t\n\v\f\r"):
        raise invalid_argument("-l, --label", value, f"label '{key}' contains whitespaces")
    return value


def validate_extra_host(value: str) -> str:
    """``--add-host name:ip`` or ``name=ip`` (``[v6]`` allowed), sent as ``name:ip``."""
    key, sep, val = value.partition("=")
    if not sep:
        key, sep, val = value.partition(":")
    if not sep or not key or ":" in key:
        raise invalid_argument("--add-host", value, f'bad format for add-host: "{value}"')
    if val != "host-gateway":
        if len(val) > 2 and val[0] == "[" and val[-1] == "]":
            val = val[1:-1]
        if not is_ip(val.strip()):
            raise invalid_argument("--add-host", value, f'invalid IP address in add-host: "{val}"')
    return f"{key}:{val}"


def validate_dns_search(value: str) -> str:
    value = value.strip(" ")
    if value == ".":
        return value
    match = _DOMAIN_RE.match(value) if re.search("[a-zA-Z]", value) else None
    if match is None or len(match.group(1)) >= 255:
        raise invalid_argument("--dns-search", value, f"{value} is not a valid domain")
    return match.group(1)


def validate_sysctl(value: str) -> str:
    key, sep, _ = value.partition("=")
    if sep and key and (key in IPC_SYSCTLS or key.startswith(("net.", "fs.mqueue."))):
        return value
    raise invalid_argument("--sysctl", value, f"sysctl '{value}' is not allowed")


def validate_link(value: str) -> str:
    if not value:
        raise invalid_argument("--link", value, "empty string specified for links")
    if len(value.split(":", 2)) > 2:
        raise invalid_argument("--link", value, f"bad format for links: {value}")
    return value


def parse_restart_policy(policy: str) -> dict[str, Any]:
    """``no``, ``always``, ``unless-stopped``, ``on-failure[:N]`` as a ``RestartPolicy``."""
    if not policy:
        return {"Name": "", "MaximumRetryCount": 0}
    name, sep, count = policy.partition(":")
    if sep and not name:
        raise FlagError("invalid restart policy format: no policy provided before colon")
    retries = 0
    if count:
        try:
            retries = parse_int(count)
        except ValueError:
            raise FlagError("invalid restart policy format: maximum retry count must be an integer") from None
    return {"Name": name, "MaximumRetryCount": retries}


def normalize_capabilities(caps: Iterable[str]) -> list[str] | None:
    """The API client's ``normalizeCapabilities``: upper case, ``CAP_`` prefix, unique, sorted."""
    out = set()
    for cap in caps:
        cap = cap.upper()
        if cap != "ALL" and not cap.startswith("CAP_"):
            cap = "CAP_" + cap
        out.add(cap)
    return sorted(out) or None
