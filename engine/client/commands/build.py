"""``build``, ``commit`` and ``builder prune``, with docker's flags and output (the legacy builder's).

``build`` packs the context as the docker CLI does: the directory's files
less what ``.dockerignore`` excludes (the Dockerfile and the
``.dockerignore`` always go, the daemon drops them if they are excluded), a
Dockerfile from elsewhere added under a random name, ``-`` for a tar or a
Dockerfile on stdin, or a URL the daemon fetches. The tar is written to a
temporary file, never held in memory, and sent chunked.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import sys
import tarfile
import tempfile
from typing import IO, Any

from engine.builder.dockerignore import PatternMatcher, read_patterns
from engine.client.errors import ClientError
from engine.client.flagparse import parse_ulimit, ram_in_bytes, validate_extra_host
from engine.client.format import human_size


def _fail(message: str, status: int = 1) -> None:
    raise ClientError(message, status)


def _excludes(context_dir: str) -> list[str]:
    try:
        with open(os.path.join(context_dir, ".dockerignore"), encoding="utf-8", errors="replace") as fh:
            return read_patterns(fh.read())
    except FileNotFoundError:
        return []


def pack_context(context_dir: str, dockerfile: str, out: IO[bytes]) -> str:
    """Write the context tar of ``context_dir`` to ``out``; the Dockerfile's name inside it.

    :param dockerfile: ``-f`` ("" for ``Dockerfile``); a path outside the context is added as
        ``.dockerfile.<random>`` and listed in the tar's ``.dockerignore`` so the daemon drops it.
    """
    excludes = _excludes(context_dir)
    name = dockerfile or "Dockerfile"
    extra: dict[str, bytes] = {}
    path = name if os.path.isabs(name) else os.path.join(context_dir, name)
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(context_dir))
    if rel.startswith(".."):
        try:
            with open(path, "rb") as fh:
                content = fh.read()
        except OSError as exc:
            _fail(f"unable to prepare context: unable to evaluate symlinks in Dockerfile path: {exc}")
        rel = f".dockerfile.{secrets.token_hex(10)}"
        extra[rel] = content
        extra[".dockerignore"] = ("\n".join([*excludes, ".dockerignore", rel]) + "\n").encode()
    elif not os.path.exists(path):
        _fail(
            f"unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat {path}: no such file or directory"
        )
    # The Dockerfile and .dockerignore always travel (moby TrimBuildFilesFromExcludes).
    matcher = PatternMatcher([*excludes, "!.dockerignore", "!" + rel.replace(os.sep, "/")])
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for top, dirs, files in os.walk(context_dir):
            dirs.sort()
            rel_top = os.path.relpath(top, context_dir)
            for entry in sorted(dirs + files):
                rel_path = entry if rel_top == "." else f"{rel_top}/{entry}".replace(os.sep, "/")
                if rel_path in extra:
                    continue
                if matcher.matches(rel_path):
                    if entry in dirs and not matcher.exclusions:
                        dirs.remove(entry)
                    continue
                full = os.path.join(top, entry)
                info = tar.gettarinfo(full, arcname=rel_path)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isreg():
                    with open(full, "rb") as fh:
                        tar.addfile(info, fh)
                elif info.isdir() or info.issym() or info.isfifo():
                    tar.addfile(info)
        for entry, data in extra.items():
            info = tarfile.TarInfo(entry)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    return rel.replace(os.sep, "/")


def _build_params(args: Any) -> dict[str, Any]:
    build_args: dict[str, str | None] = {}
    for item in args.build_arg or []:
        key, sep, value = item.partition("=")
        build_args[key] = value if sep else os.environ.get(key)
    labels = {}
    for item in args.label or []:
        key, _, value = item.partition("=")
        labels[key] = value
    params: dict[str, Any] = {
        "t": args.tag or [],
        "q": "1" if args.quiet else None,
        "nocache": "1" if args.no_cache else None,
        "rm": "1" if args.rm else "0",
        "forcerm": "1" if args.force_rm else None,
        "pull": "1" if args.pull else None,
        "buildargs": json.dumps(build_args) if build_args else None,
        "labels": json.dumps(labels) if labels else None,
        "target": args.target,
        "cachefrom": json.dumps(args.cache_from) if args.cache_from else None,
        "networkmode": args.network,
        "shmsize": ram_in_bytes(args.shm_size) if args.shm_size else None,
        "extrahosts": [validate_extra_host(h) for h in args.add_host or []] or None,
        "memory": ram_in_bytes(args.memory) if args.memory else None,
        "memswap": (-1 if args.memory_swap == "-1" else ram_in_bytes(args.memory_swap)) if args.memory_swap else None,
        "cpushares": args.cpu_shares or None,
        "cpuperiod": args.cpu_period or None,
        "cpuquota": args.cpu_quota or None,
        "cpusetcpus": args.cpuset_cpus,
        "cpusetmems": args.cpuset_mems,
        "cgroupparent": args.cgroup_parent,
        "ulimits": json.dumps([parse_ulimit(u) for u in args.ulimit]) if args.ulimit else None,
        "platform": args.platform,
        "version": "1",
    }
    return {k: v for k, v in params.items() if v not in (None, "", [])}


def _registry_config() -> str:
    from engine.client import dockerconfig

    auths = {}
    for key in dockerconfig.load().get("auths") or {}:
        conf = dockerconfig.credentials(key)
        if conf:
            auths[key] = conf
    return base64.urlsafe_b64encode(json.dumps(auths).encode()).decode()


def cmd_build(client: Any, args: Any) -> int:
    params = _build_params(args)
    context = args.context
    body: IO[bytes] | None = None
    spool = tempfile.TemporaryFile()
    try:
        if context.startswith(("http://", "https://", "git://", "git@", "github.com/")):
            params["remote"] = context
            if args.file:
                params["dockerfile"] = args.file
        elif context == "-":
            data = sys.stdin.buffer
            head = data.read(512)
            spool.write(head)
            while chunk := data.read(1 << 20):
                spool.write(chunk)
            spool.seek(0)
            if not _is_tar_or_compressed(head):
                content = spool.read()
                spool.seek(0)
                spool.truncate()
                with tarfile.open(fileobj=spool, mode="w") as tar:
                    info = tarfile.TarInfo("Dockerfile")
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
                spool.seek(0)
            body = spool
            if args.file:
                params["dockerfile"] = args.file
        else:
            if not os.path.isdir(context):
                _fail(f'unable to prepare context: path "{context}" not found')
            params["dockerfile"] = pack_context(context, args.file or "", spool)
            body = spool
        if body is not None:
            size = os.fstat(spool.fileno()).st_size
            spool.seek(0)
            if not args.quiet:
                print(f"Sending build context to Docker daemon  {human_size(size)}\n")
        headers = {"Content-Type": "application/x-tar", "X-Registry-Config": _registry_config()}
        resp = client._post(
            client._url("/build"),
            data=_chunks(body) if body is not None else None,
            params=params,
            headers=headers,
            stream=True,
        )
        client._raise_for_status(resp)
        image_id = ""
        for raw in resp.iter_lines():
            if not raw:
                continue
            msg = json.loads(raw)
            if "errorDetail" in msg or "error" in msg:
                detail = msg.get("errorDetail") or {}
                _fail(detail.get("message") or msg.get("error"), int(detail.get("code") or 1))
            if "aux" in msg:
                image_id = (msg["aux"] or {}).get("ID", image_id)
                continue
            if args.quiet:
                text = msg.get("stream", "").strip()
                if text.startswith("sha256:"):
                    image_id = text
                continue
            if "stream" in msg:
                sys.stdout.write(msg["stream"])
                sys.stdout.flush()
            elif "status" in msg:
                line = (
                    (msg.get("id", "") + ": " if msg.get("id") else "") + msg["status"] + " " + msg.get("progress", "")
                )
                print(line.rstrip())
        if args.quiet:
            print(image_id)
        if args.iidfile:
            with open(args.iidfile, "w", encoding="ascii") as fh:
                fh.write(image_id)
    finally:
        spool.close()
    return 0


def _is_tar_or_compressed(head: bytes) -> bool:
    from engine.archive import detect_compression

    return detect_compression(head) != "none" or head[257:262] == b"ustar"


def _chunks(body: IO[bytes]) -> Any:
    while True:
        chunk = body.read(1 << 20)
        if not chunk:
            return
        yield chunk


def cmd_commit(client: Any, args: Any) -> int:
    repo, tag = "", ""
    if args.reference:
        ref = args.reference
        last = ref.rsplit("/", 1)[-1]
        if ":" in last:
            repo, _, tag = ref.rpartition(":")
        else:
            repo = ref
    params = {
        "container": args.container,
        "repo": repo,
        "tag": tag,
        "comment": args.message or "",
        "author": args.author or "",
        "pause": "1" if args.pause else "0",
        "changes": args.change or [],
    }
    resp = client._post_json(client._url("/commit"), data=None, params=params)
    client._raise_for_status(resp)
    print(resp.json()["Id"])
    return 0


def cmd_builder_prune(client: Any, args: Any) -> int:
    if not args.force:
        print("WARNING! This will remove all dangling build cache.\nAre you sure you want to continue? [y/N] ", end="")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    params: dict[str, Any] = {"all": "1" if args.all else None}
    filters: dict[str, list[str]] = {}
    for item in args.filter or []:
        key, _, value = item.partition("=")
        filters.setdefault(key, []).append(value)
    if filters:
        params["filters"] = json.dumps(filters)
    resp = client._post(client._url("/build/prune"), params={k: v for k, v in params.items() if v})
    client._raise_for_status(resp)
    report = resp.json()
    if report.get("CachesDeleted"):
        print("Deleted build cache objects:")
        for cache_id in report["CachesDeleted"]:
            print(cache_id)
        print()
    print(f"Total reclaimed space: {human_size(report.get('SpaceReclaimed') or 0)}")
    return 0


def _add_build(p: Any) -> None:
    p.add_argument("context", metavar="PATH | URL | -")
    p.add_argument("-t", "--tag", action="append", help="name and optionally a tag in the 'name:tag' format")
    p.add_argument("-f", "--file", help="name of the Dockerfile (default: 'PATH/Dockerfile')")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress the build output and print image ID on success")
    p.add_argument("--no-cache", action="store_true", help="do not use cache when building the image")
    p.add_argument(
        "--rm",
        type=lambda v: v.lower() not in ("false", "0"),
        default=True,
        nargs="?",
        const=True,
        help="remove intermediate containers after a successful build (default true)",
    )
    p.add_argument("--force-rm", action="store_true", help="always remove intermediate containers")
    p.add_argument("--pull", action="store_true", help="always attempt to pull a newer version of the image")
    p.add_argument("--build-arg", action="append", help="set build-time variables")
    p.add_argument("--label", action="append", help="set metadata for an image")
    p.add_argument("--target", help="set the target build stage to build")
    p.add_argument("--cache-from", action="append", help="images to consider as cache sources")
    p.add_argument("--network", help="set the networking mode for the RUN instructions during build")
    p.add_argument("--shm-size", help="size of /dev/shm")
    p.add_argument("--add-host", action="append", help="add a custom host-to-IP mapping (host:ip)")
    p.add_argument("-m", "--memory", help="memory limit")
    p.add_argument("--memory-swap", help="swap limit equal to memory plus swap: '-1' to enable unlimited swap")
    p.add_argument("-c", "--cpu-shares", type=int, help="CPU shares (relative weight)")
    p.add_argument("--cpu-period", type=int, help="limit the CPU CFS period")
    p.add_argument("--cpu-quota", type=int, help="limit the CPU CFS quota")
    p.add_argument("--cpuset-cpus", help="CPUs in which to allow execution (0-3, 0,1)")
    p.add_argument("--cpuset-mems", help="MEMs in which to allow execution (0-3, 0,1)")
    p.add_argument("--cgroup-parent", help="optional parent cgroup for the container")
    p.add_argument("--ulimit", action="append", help="ulimit options")
    p.add_argument("--platform", help="set platform if server is multi-platform capable")
    p.add_argument("--iidfile", help="write the image ID to the file")
    p.set_defaults(func=cmd_build)


def _add_commit(p: Any) -> None:
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    p.add_argument("-a", "--author", help='author (e.g., "John Hannibal Smith <hannibal@a-team.com>")')
    p.add_argument("-c", "--change", action="append", help="apply Dockerfile instruction to the created image")
    p.add_argument("-m", "--message", help="commit message")
    p.add_argument(
        "-p",
        "--pause",
        type=lambda v: v.lower() not in ("false", "0"),
        default=True,
        nargs="?",
        const=True,
        help="pause container during commit (default true)",
    )
    p.set_defaults(func=cmd_commit)


def register(sub: Any) -> None:
    _add_build(sub.add_parser("build", help="build an image from a Dockerfile"))
    _add_commit(sub.add_parser("commit", help="create a new image from a container's changes"))
    builder = sub.add_parser("builder", help="manage builds")
    bsub = builder.add_subparsers(dest="builder_command", metavar="COMMAND", required=True)
    _add_build(bsub.add_parser("build", help="build an image from a Dockerfile"))
    p = bsub.add_parser("prune", help="remove build cache")
    p.add_argument("-a", "--all", action="store_true", help="remove all unused build cache, not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--filter", action="append", help="provide filter values (e.g. 'until=24h')")
    p.set_defaults(func=cmd_builder_prune)
