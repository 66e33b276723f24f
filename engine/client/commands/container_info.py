"""Container commands that read or copy: ``ps``, ``logs``, ``inspect``, ``top``,
``port``, ``diff``, ``export``, ``stats`` and ``cp``.

Registered by :mod:`engine.client.commands.containers` at the top level and
in the ``container`` group. Output matches the docker CLI's: ``ps`` renders
its ``ContainerContext`` fields (``{{.ID}}``, ``{{.Names}}``, ``{{json .}}``)
through :mod:`engine.client.template` with docker's default table,
``inspect`` re-indents the daemon's raw JSON, ``stats`` computes CPU % and
memory use from ``cpu_stats``/``precpu_stats``/``memory_stats`` as the CLI's
``stats_helpers.go`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from engine.client import cparchive
from engine.client.apihelp import (
    api_error_text,
    ellipsis,
    filters_json,
    get_timestamp,
    go_quote,
    go_time_string,
    indent_json,
    inspect_container,
    is_not_found,
    print_err,
    request_json,
    short_id,
)
from engine.client.errors import ClientError
from engine.client.hijack import stdcopy
from engine.client.runflags import enable_bool_values
from engine.client.template import Template, TemplateError, render_rows
from engine.utils.tables import tabwrite
from engine.utils.units import bytes_size, human_duration, human_size


def _api_errors() -> tuple[type[BaseException], ...]:
    import docker
    import requests

    return docker.errors.APIError, requests.exceptions.RequestException


# -- ps -----------------------------------------------------------------------------------------------------

PS_DEFAULT = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
PS_TITLES = {
    "ID": "CONTAINER ID",
    "Names": "NAMES",
    "Image": "IMAGE",
    "Command": "COMMAND",
    "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED",
    "Ports": "PORTS",
    "State": "STATE",
    "Status": "STATUS",
    "Size": "SIZE",
    "Labels": "LABELS",
    "Mounts": "MOUNTS",
    "LocalVolumes": "LOCAL VOLUMES",
    "Networks": "NETWORKS",
    "Platform": "PLATFORM",
    "Label": "LABEL",
}


def _join_host_port(host: str, port: Any) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def displayable_ports(ports: Iterable[dict[str, Any]]) -> str:
    """The CLI's ``DisplayablePorts``: ``0.0.0.0:8080->80/tcp, 9000-9001/tcp``; consecutive ports grouped."""
    ports = sorted(
        ports or [], key=lambda p: (p.get("PrivatePort", 0), p.get("IP", ""), p.get("PublicPort", 0), p.get("Type", ""))
    )
    groups: dict[str, list[int]] = {}
    order: list[str] = []
    result: list[str] = []
    host_mappings: list[str] = []

    def form(key: str, first: int, last: int) -> str:
        ip, _, kind = key.rpartition("/")
        group = str(first) if first == last else f"{first}-{last}"
        if ip:
            group = f"{_join_host_port(ip, group)}->{group}"
        return f"{group}/{kind}"

    for port in ports:
        current = port.get("PrivatePort", 0)
        key = port.get("Type", "")
        ip = port.get("IP") or ""
        if ip:
            if port.get("PublicPort", 0) != current:
                host_mappings.append(
                    f"{_join_host_port(ip, port.get('PublicPort', 0))}->{current}/{port.get('Type', '')}"
                )
                continue
            key = f"{ip}/{key}"
        group = groups.get(key)
        if group is None:
            groups[key] = [current, current]
            order.append(key)
            continue
        if current == group[1] + 1:
            group[1] = current
            continue
        result.append(form(key, group[0], group[1]))
        groups[key] = [current, current]
    for key in order:
        result.append(form(key, *groups[key]))
    return ", ".join(result + host_mappings)


def _familiar_image(image: str, image_id: str, trunc: bool) -> str:
    if not image:
        return "<no image>"
    if not trunc:
        return image
    if short_id(image_id) == short_id(image):
        return short_id(image)
    from engine.errors import EngineError
    from engine.reference import parse

    try:
        ref = parse(image)
    except EngineError:
        return image
    return ref.familiar_name + (f":{ref.tag}" if ref.tag else "")


class PsRow:
    """One container as the ``ps`` template sees it (the CLI's ``ContainerContext``)."""

    def __init__(self, c: dict[str, Any], trunc: bool, now: float | None = None) -> None:
        self.c = c
        self.trunc = trunc
        self.now = time.time() if now is None else now

    def ID(self) -> str:  # noqa: N802 - template field names are Go's
        return short_id(self.c["Id"], not self.trunc)

    def Names(self) -> str:  # noqa: N802
        names = [n[1:] if n.startswith("/") else n for n in self.c.get("Names") or []]
        if self.trunc:
            for name in names:
                if "/" not in name:
                    names = [name]
                    break
        return ",".join(names)

    def Image(self) -> str:  # noqa: N802
        return _familiar_image(self.c.get("Image", ""), self.c.get("ImageID", ""), self.trunc)

    def Command(self) -> str:  # noqa: N802
        command = self.c.get("Command", "")
        return go_quote(ellipsis(command, 20) if self.trunc else command)

    def CreatedAt(self) -> str:  # noqa: N802
        return go_time_string(self.c.get("Created", 0))

    def RunningFor(self) -> str:  # noqa: N802
        return human_duration(self.now - self.c.get("Created", 0)) + " ago"

    def Ports(self) -> str:  # noqa: N802
        return displayable_ports(self.c.get("Ports") or [])

    def State(self) -> str:  # noqa: N802
        return self.c.get("State", "")

    def Status(self) -> str:  # noqa: N802
        return self.c.get("Status", "")

    def Size(self) -> str:  # noqa: N802
        rw = human_size(self.c.get("SizeRw") or 0)
        root = self.c.get("SizeRootFs") or 0
        return f"{rw} (virtual {human_size(root)})" if root > 0 else rw

    def Labels(self) -> str:  # noqa: N802
        labels = self.c.get("Labels") or {}
        return ",".join(sorted(f"{k}={v}" for k, v in labels.items()))

    def Label(self, name: str) -> str:  # noqa: N802
        return (self.c.get("Labels") or {}).get(name, "")

    def Mounts(self) -> str:  # noqa: N802
        names = []
        for m in self.c.get("Mounts") or []:
            name = m.get("Name") or m.get("Source", "")
            names.append(ellipsis(name, 15) if self.trunc else name)
        return ",".join(names)

    def LocalVolumes(self) -> str:  # noqa: N802
        return str(sum(1 for m in self.c.get("Mounts") or [] if m.get("Driver") == "local"))

    def Networks(self) -> str:  # noqa: N802
        return ",".join(sorted((self.c.get("NetworkSettings") or {}).get("Networks") or {}))

    def Platform(self) -> None:  # noqa: N802
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)()
            for name in (
                "Command",
                "CreatedAt",
                "ID",
                "Image",
                "Labels",
                "LocalVolumes",
                "Mounts",
                "Names",
                "Networks",
                "Platform",
                "Ports",
                "RunningFor",
                "Size",
                "State",
                "Status",
            )
        }


def cmd_ps(client: Any, args: argparse.Namespace) -> int:
    fmt = args.format or ""
    if fmt and args.quiet:
        print_err("WARNING: Ignoring custom format, because both --format and --quiet are set.")
    if fmt and fmt not in ("table", "json"):
        try:
            Template(fmt)
        except TemplateError as exc:
            raise ClientError(f"failed to parse template: {exc}") from None
    params: dict[str, Any] = {}
    if args.all:
        params["all"] = 1
    limit = args.last
    if args.latest and limit == -1:
        limit = 1
    if limit != -1:
        params["limit"] = limit
    size = args.size
    if size is None:
        # Like the CLI: a template that shows .Size (or all fields) asks the daemon for sizes.
        size = (
            bool(fmt)
            and not args.quiet
            and (
                re.search(r"\.Size\b", fmt) is not None
                or re.search(r"json\s+\.\s*}}", fmt) is not None
                or fmt == "json"
            )
        )
    if size:
        params["size"] = 1
    filters = filters_json(args.filter)
    if filters:
        params["filters"] = filters
    containers = request_json(client, "GET", "/containers/json", params=params) or []
    rows = [PsRow(c, trunc=not args.no_trunc) for c in containers]
    if args.quiet:
        for row in rows:
            print(row.ID())
        return 0
    if not fmt or fmt == "table":
        fmt = PS_DEFAULT + ("\t{{.Size}}" if size else "")
    try:
        render_rows(fmt, rows, PS_TITLES, sys.stdout)
    except TemplateError as exc:
        raise ClientError(f"template parsing error: {exc}") from None
    return 0


# -- logs ---------------------------------------------------------------------------------------------------


class _BodyReader:
    """Exact-size reads from a streamed response body."""

    def __init__(self, resp: Any) -> None:
        self.raw = resp.raw

    def read(self, n: int) -> bytes:
        chunks = []
        while n > 0:
            chunk = self.raw.read(n, decode_content=True)
            if not chunk:
                break
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def chunks(self) -> Iterable[bytes]:
        while True:
            chunk = self.raw.read1(65536) if hasattr(self.raw, "read1") else self.raw.read(65536)
            if not chunk:
                return
            yield chunk


def cmd_logs(client: Any, args: argparse.Namespace) -> int:
    c = inspect_container(client, args.container)
    params: dict[str, Any] = {"stdout": 1, "stderr": 1}
    now = time.time()
    if args.since:
        params["since"] = get_timestamp(args.since, now)
    if args.until:
        params["until"] = get_timestamp(args.until, now)
    if args.timestamps:
        params["timestamps"] = 1
    if args.follow:
        params["follow"] = 1
    params["tail"] = args.tail
    if args.details:
        params["details"] = 1
    resp = client._get(client._url("/containers/{0}/logs", c["Id"]), params=params, stream=True)
    client._raise_for_status(resp)
    reader = _BodyReader(resp)
    try:
        if (c.get("Config") or {}).get("Tty"):
            for chunk in reader.chunks():
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
        else:
            stdcopy(reader.read, sys.stdout.buffer, sys.stderr.buffer)
    finally:
        resp.close()
    return 0


# -- inspect ------------------------------------------------------------------------------------------------

_INSPECT_PATHS = {
    "container": "/containers/{0}/json",
    "image": "/images/{0}/json",
    "network": "/networks/{0}",
    "volume": "/volumes/{0}",
}


def inspect_objects(
    client: Any, names: list[str], kinds: list[str], fmt: str | None, size: bool = False, missing: str = "object"
) -> int:
    """The CLI's ``inspect.Inspect``: try each kind per name, print JSON (re-indented) or the template."""
    raws: list[bytes] = []
    errors: list[str] = []
    for name in names:
        found = None
        last_error: BaseException | None = None
        for kind in kinds:
            params = {"size": 1} if size and kind == "container" else None
            try:
                resp = client._get(client._url(_INSPECT_PATHS[kind], name), params=params)
                client._raise_for_status(resp)
            except _api_errors()[0] as exc:
                if is_not_found(exc) or getattr(getattr(exc, "response", None), "status_code", 0) in (400, 405):
                    last_error = exc
                    continue
                raise
            found = resp.content
            break
        if found is None:
            if len(kinds) == 1 and last_error is not None:
                errors.append(api_error_text(last_error))
            else:
                errors.append(f"Error: No such {missing}: {name}")
            continue
        raws.append(found)
    if fmt:
        tmpl = Template(fmt)
        for raw in raws:
            try:
                print(tmpl.execute(json.loads(raw)))
            except TemplateError as exc:
                print_err(f"template parsing error: {exc}")
                return 1
    else:
        print(indent_json(b"[" + b",".join(r.strip() for r in raws) + b"]"))
    for err in errors:
        print_err(err)
    return 1 if errors else 0


def cmd_inspect(client: Any, args: argparse.Namespace) -> int:
    if args.type and args.type not in _INSPECT_PATHS:
        print_err(f'"{args.type}" is not a valid value for --type')
        return 1
    kinds = [args.type] if args.type else ["container", "image", "network", "volume"]
    return inspect_objects(client, args.names, kinds, args.format, args.size)


def cmd_container_inspect(client: Any, args: argparse.Namespace) -> int:
    return inspect_objects(client, args.names, ["container"], args.format, args.size)


# -- top, port, diff, export --------------------------------------------------------------------------------


def cmd_top(client: Any, args: argparse.Namespace) -> int:
    params = {"ps_args": " ".join(args.ps_args)} if args.ps_args else None
    result = request_json(client, "GET", "/containers/{0}/top", args.container, params=params)
    lines = ["\t".join(result.get("Titles") or [])]
    lines += ["\t".join(proc) for proc in result.get("Processes") or []]
    tabwrite(lines, sys.stdout, minwidth=20, padding=3)
    return 0


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def cmd_port(client: Any, args: argparse.Namespace) -> int:
    c = inspect_container(client, args.container)
    ports = (c.get("NetworkSettings") or {}).get("Ports") or {}
    out = []
    if args.port:
        port, _, proto = args.port.partition("/")
        proto = proto or "tcp"
        try:
            if not port.isdigit() or int(port) > 65535:
                raise ValueError(f'strconv.ParseUint: parsing "{port}": invalid syntax')
        except ValueError as exc:
            print_err(f"Error: invalid port ({port}): {exc}")
            return 1
        frontends = ports.get(f"{port}/{proto}")
        if not frontends:
            print_err(f"Error: No public port '{args.port}' published for {args.container}")
            return 1
        out = [_join_host_port(f.get("HostIp", ""), f.get("HostPort", "")) for f in frontends]
    else:
        for private, frontends in ports.items():
            for f in frontends or []:
                out.append(f"{private} -> {_join_host_port(f.get('HostIp', ''), f.get('HostPort', ''))}")
    if out:
        print("\n".join(sorted(out, key=_natural_key)))
    return 0


def cmd_diff(client: Any, args: argparse.Namespace) -> int:
    if not args.container:
        raise ClientError("Container name cannot be empty")
    changes = request_json(client, "GET", "/containers/{0}/changes", args.container) or []
    for change in changes:
        kind = {0: "C", 1: "A", 2: "D"}.get(change.get("Kind"), "?")
        print(f"{kind} {change.get('Path', '')}")
    return 0


def _copy_response(resp: Any, out: Any) -> int:
    total = 0
    for chunk in resp.iter_content(chunk_size=1 << 20):
        out.write(chunk)
        total += len(chunk)
    out.flush()
    return total


def cmd_export(client: Any, args: argparse.Namespace) -> int:
    if not args.output and sys.stdout.isatty():
        raise ClientError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    resp = client._get(client._url("/containers/{0}/export", args.container), stream=True)
    client._raise_for_status(resp)
    if not args.output:
        _copy_response(resp, sys.stdout.buffer)
        return 0
    # Write beside the target and rename, like the CLI's atomic writer.
    tmp = f"{args.output}.engine-export-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            _copy_response(resp, fh)
        os.replace(tmp, args.output)
    except OSError as exc:
        raise ClientError(f"failed to export container: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return 0


# -- stats --------------------------------------------------------------------------------------------------

STATS_DEFAULT = (
    "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"
)
STATS_TITLES = {
    "Container": "CONTAINER",
    "Name": "NAME",
    "ID": "CONTAINER ID",
    "CPUPerc": "CPU %",
    "MemUsage": "MEM USAGE / LIMIT",
    "MemPerc": "MEM %",
    "NetIO": "NET I/O",
    "BlockIO": "BLOCK I/O",
    "PIDs": "PIDS",
}


def cpu_percent(stats: dict[str, Any]) -> float:
    """``calculateCPUPercentUnix``: container CPU time over system CPU time between two samples, times CPUs."""
    cpu = stats.get("cpu_stats") or {}
    pre = stats.get("precpu_stats") or {}
    cpu_delta = float((cpu.get("cpu_usage") or {}).get("total_usage") or 0) - float(
        (pre.get("cpu_usage") or {}).get("total_usage") or 0
    )
    system_delta = float(cpu.get("system_cpu_usage") or 0) - float(pre.get("system_cpu_usage") or 0)
    online = float(cpu.get("online_cpus") or 0)
    if online == 0.0:
        online = float(len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []))
    if system_delta > 0.0 and cpu_delta > 0.0:
        return cpu_delta / system_delta * online * 100.0
    return 0.0


def memory_usage(stats: dict[str, Any]) -> float:
    """``calculateMemUsageUnixNoCache``: usage minus the inactive page cache (cgroup v1 or v2 key)."""
    mem = stats.get("memory_stats") or {}
    usage = mem.get("usage") or 0
    extra = mem.get("stats") or {}
    if "total_inactive_file" in extra and extra["total_inactive_file"] < usage:
        return float(usage - extra["total_inactive_file"])
    inactive = extra.get("inactive_file", 0)
    if inactive < usage:
        return float(usage - inactive)
    return float(usage)


class StatsRow:
    """One container's numbers as the ``stats`` template sees them (the CLI's ``statsContext``)."""

    def __init__(self, container: str, stats: dict[str, Any] | None, trunc: bool = True) -> None:
        self.container = container
        self.stats = stats
        self.trunc = trunc
        self.invalid = stats is None

    def Container(self) -> str:  # noqa: N802 - template field names are Go's
        return self.container

    def Name(self) -> str:  # noqa: N802
        name = (self.stats or {}).get("name", "")
        return name[1:] if len(name) > 1 else "--"

    def ID(self) -> str:  # noqa: N802
        return short_id((self.stats or {}).get("id", ""), not self.trunc)

    def CPUPerc(self) -> str:  # noqa: N802
        return "--" if self.invalid else f"{cpu_percent(self.stats or {}):.2f}%"

    def MemUsage(self) -> str:  # noqa: N802
        if self.invalid:
            return "-- / --"
        limit = float(((self.stats or {}).get("memory_stats") or {}).get("limit") or 0)
        return f"{bytes_size(memory_usage(self.stats or {}))} / {bytes_size(limit)}"

    def MemPerc(self) -> str:  # noqa: N802
        if self.invalid:
            return "--"
        limit = float(((self.stats or {}).get("memory_stats") or {}).get("limit") or 0)
        return f"{(memory_usage(self.stats or {}) / limit * 100.0) if limit else 0.0:.2f}%"

    def NetIO(self) -> str:  # noqa: N802
        if self.invalid:
            return "--"
        nets = (self.stats or {}).get("networks") or {}
        rx = float(sum(n.get("rx_bytes", 0) for n in nets.values()))
        tx = float(sum(n.get("tx_bytes", 0) for n in nets.values()))
        return f"{human_size(rx)} / {human_size(tx)}"

    def BlockIO(self) -> str:  # noqa: N802
        if self.invalid:
            return "--"
        read = write = 0
        for entry in ((self.stats or {}).get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
            op = (entry.get("op") or "")[:1].lower()
            if op == "r":
                read += entry.get("value", 0)
            elif op == "w":
                write += entry.get("value", 0)
        return f"{human_size(float(read))} / {human_size(float(write))}"

    def PIDs(self) -> str:  # noqa: N802
        if self.invalid:
            return "--"
        return str(((self.stats or {}).get("pids_stats") or {}).get("current", 0))

    def to_json(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)()
            for name in ("BlockIO", "CPUPerc", "Container", "ID", "MemPerc", "MemUsage", "Name", "NetIO", "PIDs")
        }


class _StatsCollector:
    """Read one container's stats stream in a thread, keeping the latest sample."""

    def __init__(self, client: Any, container: str, stream: bool) -> None:
        self.container = container
        self.latest: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.first = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(client, stream), daemon=True)
        self.thread.start()

    def _run(self, client: Any, stream: bool) -> None:
        try:
            resp = client._get(
                client._url("/containers/{0}/stats", self.container), params={"stream": 1 if stream else 0}, stream=True
            )
            client._raise_for_status(resp)
            for line in resp.iter_lines():
                if line.strip():
                    self.latest = json.loads(line)
                    self.first.set()
                    if not stream:
                        break
        except Exception as exc:  # noqa: BLE001 - shown as the container's error
            self.error = exc
        self.first.set()


def cmd_stats(client: Any, args: argparse.Namespace) -> int:
    names = list(args.containers)
    if not names:
        params: dict[str, Any] = {"all": 1} if args.all else {}
        names = [c["Id"][:12] for c in request_json(client, "GET", "/containers/json", params=params) or []]
    collectors = [_StatsCollector(client, name, not args.no_stream) for name in names]
    for c in collectors:
        c.first.wait(timeout=10)
    if args.containers:
        errors = [c.error for c in collectors if c.error is not None]
        if errors:
            for err in errors:
                print_err(api_error_text(err))
            return 1
    fmt = args.format or "table"
    if fmt == "table":
        fmt = STATS_DEFAULT
    out = sys.stdout
    try:
        while True:
            rows = [StatsRow(c.container, c.latest, trunc=not args.no_trunc) for c in collectors]
            if args.no_stream:
                render_rows(fmt, rows, STATS_TITLES, out)
                return 0
            import io

            buf = io.StringIO()
            render_rows(fmt, rows, STATS_TITLES, buf)
            out.write("\033[H" + "".join(line + " \033[K\n" for line in buf.getvalue().split("\n")[:-1]) + "\033[J")
            out.flush()
            if collectors and all(not c.thread.is_alive() for c in collectors):
                return 0
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0


# -- cp -----------------------------------------------------------------------------------------------------


def _report_copied(total: int, where: str) -> None:
    # The CLI only reports on a terminal.
    if sys.stderr.isatty():
        print_err(f"Successfully copied {human_size(total)} to {where}")


def cmd_cp(client: Any, args: argparse.Namespace) -> int:
    src_ctr, src_path = cparchive.split_cp_arg(args.source)
    dst_ctr, dst_path = cparchive.split_cp_arg(args.destination)
    if src_ctr and dst_ctr:
        raise ClientError("copying between containers is not supported")
    if not src_ctr and not dst_ctr:
        raise ClientError("must specify at least one container source")
    if src_ctr:
        return _copy_from(client, src_ctr, src_path, dst_path, args)
    return _copy_to(client, dst_ctr, src_path, dst_path, args)


def _copy_from(client: Any, container: str, src_path: str, dst_path: str, args: argparse.Namespace) -> int:
    if dst_path != "-":
        dst_path = cparchive.resolve_local_path(dst_path)
        cparchive.validate_output_path(dst_path)
    rebase = ""
    if args.follow_link:
        st = cparchive.stat_path(client, container, src_path)
        if st is not None and st.get("mode", 0) & cparchive.MODE_SYMLINK:
            target = st.get("linkTarget", "")
            if not target.startswith("/"):
                target = os.path.join(cparchive.split_dir_entry(src_path)[0], target)
            src_path, rebase = _rebase_for_link(src_path, target)
    resp = client._get(client._url("/containers/{0}/archive", container), params={"path": src_path}, stream=True)
    client._raise_for_status(resp)
    if dst_path == "-":
        _copy_response(resp, sys.stdout.buffer)
        return 0
    st = cparchive.decode_path_stat(resp.headers.get("X-Docker-Container-Path-Stat")) or {}
    src = cparchive.CopyInfo(
        src_path, exists=True, is_dir=bool(st.get("mode", 0) & cparchive.MODE_DIR), rebase_name=rebase
    )
    dst = cparchive.destination_info(dst_path)
    dst_dir, rename = cparchive.prepare_copy(src, dst)
    counted = _CountingReader(resp.raw)
    cparchive.extract(counted, dst_dir, rename)  # type: ignore[arg-type]
    _report_copied(counted.total, dst_path)
    return 0


def _rebase_for_link(path: str, resolved: str) -> tuple[str, str]:
    """moby ``GetRebaseName``: keep ``/.`` and ``/`` of the requested path; rename if the base changed."""
    if cparchive.specifies_current_dir(path) and not cparchive.specifies_current_dir(resolved):
        resolved += "/."
    if cparchive.has_trailing_separator(path) and not cparchive.has_trailing_separator(resolved):
        resolved += "/"
    rebase = cparchive.go_base(path) if cparchive.go_base(path) != cparchive.go_base(resolved) else ""
    return resolved, rebase


class _CountingReader:
    """A file-like view of a response body that counts the bytes read (for "Successfully copied")."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.total = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n if n is not None and n >= 0 else None, decode_content=True)
        self.total += len(data)
        return data


def _copy_to(client: Any, container: str, src_path: str, dst_path: str, args: argparse.Namespace) -> int:
    if src_path != "-":
        src_path = cparchive.resolve_local_path(src_path)
    dst = cparchive.CopyInfo(dst_path)
    st = cparchive.stat_path(client, container, dst_path)
    if st is not None and st.get("mode", 0) & cparchive.MODE_SYMLINK:
        target = st.get("linkTarget", "")
        if not target.startswith("/"):
            target = os.path.join(cparchive.split_dir_entry(dst_path)[0], target)
        dst.path = target
        st = cparchive.stat_path(client, container, target)
    if st is not None:
        mode = st.get("mode", 0)
        if mode & cparchive.MODE_DEVICE:
            raise ClientError(
                f'destination "{container}:{dst_path}" must be a directory or a regular file: got a device'
            )
        if mode & cparchive.MODE_IRREGULAR:
            raise ClientError(
                f'destination "{container}:{dst_path}" must be a directory or a regular file: got an irregular file'
            )
        dst.exists, dst.is_dir = True, bool(mode & cparchive.MODE_DIR)
    params: dict[str, Any] = {"noOverwriteDirNonDir": "true"}
    if args.archive:
        params["copyUIDGID"] = "true"
    counter = [0]
    if src_path == "-":
        if not dst.is_dir:
            raise ClientError(f'destination "{container}:{dst_path}" must be a directory')
        params["path"] = dst.path
        body: Any = iter(lambda: sys.stdin.buffer.read(1 << 16), b"")
    else:
        src = cparchive.source_info(src_path, args.follow_link)
        dst_dir, rename = cparchive.prepare_copy(src, dst)
        params["path"] = dst_dir
        body = cparchive.tar_stream(src, rename, counter)
    resp = client._put(
        client._url("/containers/{0}/archive", container),
        params=params,
        data=body,
        headers={"Content-Type": "application/x-tar"},
    )
    client._raise_for_status(resp)
    if src_path != "-":
        _report_copied(counter[0], f"{container}:{dst.path}")
    return 0


# -- registration -------------------------------------------------------------------------------------------


def _add_ps(sub: Any, name: str, aliases: tuple[str, ...] = ()) -> None:
    p = sub.add_parser(name, aliases=list(aliases), help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="show all containers (default shows just running)")
    p.add_argument("-f", "--filter", action="append", help="filter output based on conditions provided")
    p.add_argument("--format", help="format output using a custom template ('table', 'json', or a Go template)")
    p.add_argument("-n", "--last", type=int, default=-1, help="show n last created containers (includes all states)")
    p.add_argument(
        "-l", "--latest", action="store_true", help="show the latest created container (includes all states)"
    )
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="only display container IDs")
    p.add_argument("-s", "--size", action="store_true", default=None, help="display total file sizes")
    enable_bool_values(p)
    p.set_defaults(func=cmd_ps)


def _add_common(sub: Any) -> None:
    p = sub.add_parser("logs", help="fetch the logs of a container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("--details", action="store_true", help="show extra details provided to logs")
    p.add_argument("-f", "--follow", action="store_true", help="follow log output")
    p.add_argument("--since", default="", help="show logs since timestamp or relative (e.g. 42m for 42 minutes)")
    p.add_argument("-n", "--tail", default="all", help="number of lines to show from the end of the logs")
    p.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
    p.add_argument("--until", default="", help="show logs before a timestamp or relative (e.g. 42m)")
    enable_bool_values(p)
    p.set_defaults(func=cmd_logs)
    p = sub.add_parser("top", help="display the running processes of a container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("ps_args", nargs=argparse.REMAINDER, metavar="[ps OPTIONS]")
    p.set_defaults(func=cmd_top)
    p = sub.add_parser("port", help="list port mappings or a specific mapping for the container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("port", nargs="?", metavar="PRIVATE_PORT[/PROTO]")
    p.set_defaults(func=cmd_port)
    p = sub.add_parser("diff", help="inspect changes to files or directories on a container's filesystem")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_diff)
    p = sub.add_parser("export", help="export a container's filesystem as a tar archive")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("-o", "--output", help="write to a file, instead of STDOUT")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("stats", help="display a live stream of container(s) resource usage statistics")
    p.add_argument("containers", nargs="*", metavar="CONTAINER")
    p.add_argument("-a", "--all", action="store_true", help="show all containers (default shows just running)")
    p.add_argument("--format", help="format output using a custom template ('table', 'json', or a Go template)")
    p.add_argument("--no-stream", action="store_true", help="disable streaming stats and only pull the first result")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    enable_bool_values(p)
    p.set_defaults(func=cmd_stats)
    p = sub.add_parser("cp", help="copy files/folders between a container and the local filesystem")
    p.add_argument("source", metavar="SRC")
    p.add_argument("destination", metavar="DEST")
    p.add_argument("-a", "--archive", action="store_true", help="archive mode (copy all uid/gid information)")
    p.add_argument("-L", "--follow-link", action="store_true", help="always follow symbol link in SRC_PATH")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress progress output during copy")
    p.set_defaults(func=cmd_cp)


def _add_container_inspect(sub: Any) -> None:
    p = sub.add_parser("inspect", help="display detailed information on one or more containers")
    p.add_argument("names", nargs="+", metavar="CONTAINER")
    p.add_argument("-f", "--format", help="format output using a custom template")
    p.add_argument("-s", "--size", action="store_true", help="display total file sizes")
    p.set_defaults(func=cmd_container_inspect)


def register_top_level(sub: Any) -> None:
    """``ps``, ``logs``, ``inspect``... as top-level commands."""
    _add_ps(sub, "ps")
    _add_common(sub)
    p = sub.add_parser("inspect", help="return low-level information on engine objects")
    p.add_argument("names", nargs="+", metavar="NAME|ID")
    p.add_argument("-f", "--format", help="format output using a custom template")
    p.add_argument("-s", "--size", action="store_true", help="display total file sizes if the type is container")
    p.add_argument("--type", help="only inspect objects of the given type")
    p.set_defaults(func=cmd_inspect)


def register_group(sub: Any) -> None:
    """The same commands inside ``engine container``: ``ls`` (``ps``, ``list``), ``inspect``..."""
    _add_ps(sub, "ls", aliases=("ps", "list"))
    _add_common(sub)
    _add_container_inspect(sub)
