"""Image commands: ``images``, ``load``, ``save``, ``import``, ``tag``, ``rmi``,
``history`` and the ``image`` group, printed as docker prints them."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from typing import IO, Any

from engine.client.errors import ClientError
from engine.client.progress import StreamError, display
from engine.client.template import render
from engine.utils.tables import table
from engine.utils.units import human_duration, human_size


def _fail(message: str) -> None:
    raise ClientError(message)


def _filters(values: list[str] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep:
            _fail(f"bad format of filter (expected name=value): {item}")
        out.setdefault(key, []).append(value)
    return out


def _ago(ts: float) -> str:
    return human_duration(time.time() - ts) + " ago"


def _short(image_id: str, no_trunc: bool = False) -> str:
    return image_id if no_trunc else image_id.split(":", 1)[-1][:12]


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=4))


def cmd_images(client: Any, args: Any) -> int:
    filters = _filters(args.filter)
    if args.reference:
        filters.setdefault("reference", []).append(args.reference)
    images = client.images(all=args.all, filters=filters or None)
    if args.quiet:
        seen: list[str] = []
        for img in images:
            short = _short(img["Id"], args.no_trunc)
            if short not in seen:
                seen.append(short)
                print(short)
        return 0
    if args.format in ("json", "{{json .}}"):
        for img in images:
            print(json.dumps(img))
        return 0
    rows = []
    for img in images:
        tags = img.get("RepoTags") or ["<none>:<none>"]
        digests = [d for d in img.get("RepoDigests") or [] if d != "<none>@<none>"]
        for tag in tags:
            repo, _, t = tag.rpartition(":")
            digest = next((d.split("@", 1)[1] for d in digests if d.split("@", 1)[0] == repo), "<none>")
            row = [repo, t]
            if args.digests:
                row.append(digest)
            row += [_short(img["Id"], args.no_trunc), _ago(img["Created"]), human_size(img["Size"])]
            rows.append(row)
    headers = ["REPOSITORY", "TAG"] + (["DIGEST"] if args.digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    table(headers, rows)
    return 0


def cmd_load(client: Any, args: Any) -> int:
    fh: IO[bytes]
    if args.input:
        fh = open(args.input, "rb")
    else:
        if sys.stdin.isatty():
            _fail("requested load from stdin, but stdin is empty")
        fh = sys.stdin.buffer
    try:
        resp = client._post(
            client._url("/images/load"),
            data=fh,
            params={"quiet": "1" if args.quiet else "0"},
            stream=True,
            headers={"Content-Type": "application/x-tar"},
        )
        client._raise_for_status(resp)
        display(resp.iter_content(chunk_size=None))
    except StreamError as exc:
        _fail(str(exc))
    finally:
        if args.input:
            fh.close()
    return 0


def cmd_save(client: Any, args: Any) -> int:
    if not args.output and sys.stdout.isatty():
        _fail("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    resp = client._get(client._url("/images/get"), params={"names": args.images}, stream=True)
    client._raise_for_status(resp)
    out = open(args.output, "wb") if args.output else sys.stdout.buffer
    try:
        for chunk in resp.iter_content(chunk_size=1 << 20):
            out.write(chunk)
    finally:
        if args.output:
            out.close()
        else:
            out.flush()
    return 0


def cmd_import(client: Any, args: Any) -> int:
    repo, tag = "", ""
    if args.reference:
        repo, _, tag = (
            args.reference.rpartition(":") if ":" in args.reference.rsplit("/", 1)[-1] else (args.reference, "", "")
        )
    params = {"repo": repo, "tag": tag, "message": args.message or "", "changes": args.change or []}
    if args.file.startswith(("http://", "https://")):
        params["fromSrc"] = args.file
        data = None
    else:
        params["fromSrc"] = "-"
        data = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
    try:
        resp = client._post(
            client._url("/images/create"),
            data=data,
            params=params,
            stream=True,
            headers={"Content-Type": "application/x-tar"},
        )
        client._raise_for_status(resp)
        for chunk in resp.iter_lines():
            if not chunk:
                continue
            msg = json.loads(chunk)
            if "error" in msg or "errorDetail" in msg:
                _fail((msg.get("errorDetail") or {}).get("message") or msg.get("error"))
            if msg.get("status", "").startswith("sha256:"):
                print(msg["status"])
    finally:
        if data is not None and data is not sys.stdin.buffer:
            data.close()
    return 0


def cmd_tag(client: Any, args: Any) -> int:
    target = args.target
    last = target.rsplit("/", 1)[-1]
    repo, tag = target.rsplit(":", 1) if ":" in last else (target, None)
    client.tag(args.source, repo, tag)
    return 0


def cmd_rmi(client: Any, args: Any) -> int:
    status = 0
    for name in args.images:
        try:
            records = client.remove_image(name, force=args.force, noprune=args.no_prune)
        except Exception as exc:
            explanation = getattr(exc, "explanation", None) or str(exc)
            print(f"Error response from daemon: {explanation}", file=sys.stderr)
            status = 1
            continue
        for record in records or []:
            for key, value in record.items():
                print(f"{key}: {value}")
    return status


def cmd_history(client: Any, args: Any) -> int:
    items = client.history(args.image)
    if args.quiet:
        for item in items:
            print(_short(item["Id"], args.no_trunc) if item["Id"] != "<missing>" else "<missing>")
        return 0
    rows = []
    for item in items:
        created_by = item.get("CreatedBy", "").replace("\t", " ")
        if not args.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        ident = item["Id"] if item["Id"] == "<missing>" else _short(item["Id"], args.no_trunc)
        created = _ago(item["Created"]) if args.human else dt.datetime.fromtimestamp(item["Created"]).isoformat()
        size = human_size(item["Size"]) if args.human else str(item["Size"])
        rows.append([ident, created, created_by, size, item.get("Comment", "")])
    table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], rows)
    return 0


def cmd_image_inspect(client: Any, args: Any) -> int:
    out = []
    status = 0
    for name in args.images:
        try:
            out.append(client.inspect_image(name))
        except Exception as exc:
            print(f"Error: No such image: {name}" if "404" in str(exc) else str(exc), file=sys.stderr)
            status = 1
    if args.format:
        for doc in out:
            print(render(args.format, doc))
    else:
        _print_json(out)
    return status


def cmd_image_prune(client: Any, args: Any) -> int:
    filters = _filters(args.filter)
    if args.all:
        filters["dangling"] = ["false"]
    if not args.force:
        what = "all images without at least one container associated to them" if args.all else "all dangling images"
        answer = input(f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return 0
    result = client.prune_images(filters=filters or None)
    deleted = result.get("ImagesDeleted") or []
    if deleted:
        print("Deleted Images:")
        for record in deleted:
            for key, value in record.items():
                print(f"{key.lower()}: {value}")
        print()
    print(f"Total reclaimed space: {human_size(result.get('SpaceReclaimed', 0))}")
    return 0


def _add_images_args(p: Any) -> None:
    p.add_argument("reference", nargs="?", help="only images matching this reference")
    p.add_argument("-a", "--all", action="store_true", help="show all images (default hides intermediate images)")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument(
        "-f", "--filter", action="append", help="filter output (dangling=, label=, before=, since=, reference=)"
    )
    p.add_argument("--format", help="'json' for one JSON object per line")
    p.set_defaults(func=cmd_images)


def _add_common(sub: Any, prefix: str = "") -> None:
    p = sub.add_parser("load", help="load an image from a tar archive or STDIN")
    p.add_argument("-i", "--input", help="read from a tar archive file instead of STDIN")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress the load output")
    p.set_defaults(func=cmd_load)
    p = sub.add_parser("save", help="save images to a tar archive (streamed to STDOUT by default)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", help="write to a file instead of STDOUT")
    p.set_defaults(func=cmd_save)
    p = sub.add_parser("import", help="import the contents from a tarball to create a filesystem image")
    p.add_argument("file", metavar="file|URL|-")
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    p.add_argument("-c", "--change", action="append", help="apply a Dockerfile instruction to the image")
    p.add_argument("-m", "--message", help="set commit message for imported image")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("tag", help="create a tag TARGET_IMAGE that refers to SOURCE_IMAGE")
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    p.set_defaults(func=cmd_tag)
    p = sub.add_parser("history", help="show the history of an image")
    p.add_argument("image")
    p.add_argument("-H", "--human", action="store_true", default=True, help="human readable sizes and dates")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.set_defaults(func=cmd_history)


def _add_rm(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="remove one or more images")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--force", action="store_true", help="force removal of the image")
    p.add_argument("--no-prune", action="store_true", help="do not delete untagged parents")
    p.set_defaults(func=cmd_rmi)


def register(sub: Any) -> None:
    _add_images_args(sub.add_parser("images", help="list images"))
    _add_common(sub)
    _add_rm(sub, "rmi")
    image = sub.add_parser("image", help="manage images")
    isub = image.add_subparsers(dest="image_command", metavar="COMMAND", required=True)
    _add_images_args(isub.add_parser("ls", help="list images"))
    _add_common(isub)
    _add_rm(isub, "rm")
    p = isub.add_parser("inspect", help="display detailed information on one or more images")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--format", help="format the output using a Go-template subset ({{.Id}}, {{json .Config}})")
    p.set_defaults(func=cmd_image_inspect)
    p = isub.add_parser("prune", help="remove unused images")
    p.add_argument("-a", "--all", action="store_true", help="remove all unused images, not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--filter", action="append", help="provide filter values (until=, label=)")
    p.set_defaults(func=cmd_image_prune)
