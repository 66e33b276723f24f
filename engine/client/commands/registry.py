"""Registry commands: ``pull``, ``push``, ``login``, ``logout`` and ``search``, printed as docker prints them.

Pull and push draw the daemon's progress stream with per-layer bars and an
overall line (:mod:`engine.client.progress`); credentials come from, and
``login`` writes them to, the docker CLI's ``config.json``
(:mod:`engine.client.dockerconfig`).
"""

from __future__ import annotations

import getpass
import json
import sys
from typing import Any

from engine import reference as refs
from engine.client import dockerconfig
from engine.client.errors import ClientError
from engine.client.progress import StreamError, display
from engine.errors import EngineError
from engine.reference import INDEX_SERVER, Reference
from engine.utils.tables import table


def _reference(name: str) -> Reference:
    try:
        return refs.parse(name)
    except EngineError as exc:
        raise ClientError(str(exc)) from None


def _stream(resp: Any, quiet: bool) -> list[Any]:
    """Render (or, quiet, only check) a progress stream; returns its aux payloads."""
    try:
        if quiet:
            aux = []
            for line in resp.iter_lines():
                if not line.strip():
                    continue
                msg = json.loads(line)
                if "error" in msg or "errorDetail" in msg:
                    raise StreamError((msg.get("errorDetail") or {}).get("message") or msg.get("error"))
                if "aux" in msg:
                    aux.append(msg["aux"])
            return aux
        return display(resp.iter_content(chunk_size=None))
    except StreamError as exc:
        raise ClientError(str(exc)) from None


def cmd_pull(client: Any, args: Any) -> int:
    ref = _reference(args.name)
    if args.all_tags and (ref.tag is not None or ref.digest is not None):
        raise ClientError("tag can't be used with --all-tags/-a")
    if not args.all_tags and ref.tag is None and ref.digest is None:
        ref = ref.with_tag(refs.DEFAULT_TAG)
        if not args.quiet:
            print(f"Using default tag: {refs.DEFAULT_TAG}")
    params = {"fromImage": ref.name, "tag": "" if args.all_tags else (ref.digest or ref.tag or "")}
    if args.platform:
        params["platform"] = args.platform.lower()
    resp = client._post(
        client._url("/images/create"),
        params=params,
        stream=True,
        headers={"X-Registry-Auth": dockerconfig.auth_header(ref.domain)},
    )
    client._raise_for_status(resp)
    _stream(resp, args.quiet)
    print(ref.name if args.all_tags else str(ref))
    return 0


def cmd_push(client: Any, args: Any) -> int:
    ref = _reference(args.name)
    if ref.digest is not None:
        raise ClientError(f"cannot push a digest reference: {args.name}")
    if args.all_tags and ref.tag is not None:
        raise ClientError("tag can't be used with --all-tags/-a")
    if not args.all_tags and ref.tag is None:
        ref = ref.with_tag(refs.DEFAULT_TAG)
        if not args.quiet:
            print(f"Using default tag: {refs.DEFAULT_TAG}")
    resp = client._post(
        client._url(f"/images/{ref.familiar_name}/push"),
        params={"tag": "" if args.all_tags else ref.tag},
        stream=True,
        headers={"X-Registry-Auth": dockerconfig.auth_header(ref.domain)},
    )
    client._raise_for_status(resp)
    _stream(resp, args.quiet)
    if args.quiet:
        print(ref.name if args.all_tags else str(ref))
    return 0


def cmd_login(client: Any, args: Any) -> int:
    server = args.server or INDEX_SERVER
    username, password = args.username, args.password
    if args.password is not None:
        if args.password_stdin:
            raise ClientError("--password and --password-stdin are mutually exclusive")
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    if args.password_stdin:
        if not username:
            raise ClientError("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    if not username:
        if not sys.stdin.isatty():
            raise ClientError("Cannot perform an interactive login from a non TTY device")
        username = input("Username: ").strip()
    if password is None:
        if not sys.stdin.isatty():
            raise ClientError("Cannot perform an interactive login from a non TTY device")
        password = getpass.getpass("Password: ")
    if not username or not password:
        raise ClientError("Error: Non-null Username and Password Required")
    body = {"username": username, "password": password, "serveraddress": server}
    resp = client._post_json(client._url("/auth"), data=body)
    result = client._result(resp, json=True)
    path = dockerconfig.store(server, username, password, result.get("IdentityToken") or "")
    print(f"WARNING! Your password will be stored unencrypted in {path}.", file=sys.stderr)
    print(result.get("Status") or "Login Succeeded")
    return 0


def cmd_logout(client: Any, args: Any) -> int:  # noqa: ARG001 - no daemon call, as with docker
    server = args.server or INDEX_SERVER
    key = dockerconfig.server_key(server)
    if not dockerconfig.erase(server):
        print(f"Not logged in to {key}")
        return 0
    print(f"Removing login credentials for {key}")
    return 0


def cmd_search(client: Any, args: Any) -> int:
    filters: dict[str, list[str]] = {}
    for item in args.filter or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ClientError(f"bad format of filter (expected name=value): {item}")
        filters.setdefault(key, []).append(value)
    index = args.term.split("/", 1)[0] if "/" in args.term else "docker.io"
    params: dict[str, Any] = {"term": args.term, "limit": args.limit}
    if filters:
        params["filters"] = json.dumps(filters)
    resp = client._get(
        client._url("/images/search"), params=params, headers={"X-Registry-Auth": dockerconfig.auth_header(index)}
    )
    results = client._result(resp, json=True) or []
    if args.format in ("json", "{{json .}}"):
        for item in results:
            print(json.dumps(item))
        return 0
    rows = []
    for item in results:
        description = (item.get("description") or "").replace("\n", " ")
        if not args.no_trunc and len(description) > 45:
            description = description[:44] + "…"
        rows.append(
            [
                item.get("name", ""),
                description,
                str(item.get("star_count", 0)),
                "[OK]" if item.get("is_official") else "",
                "[OK]" if item.get("is_automated") else "",
            ]
        )
    table(["NAME", "DESCRIPTION", "STARS", "OFFICIAL", "AUTOMATED"], rows)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("pull", help="download an image from a registry")
    p.add_argument("name", metavar="NAME[:TAG|@DIGEST]")
    p.add_argument("-a", "--all-tags", action="store_true", help="download all tagged images in the repository")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress verbose output")
    p.add_argument("--platform", default="", help="set platform if server is multi-platform capable")
    p.set_defaults(func=cmd_pull)
    p = sub.add_parser("push", help="upload an image to a registry")
    p.add_argument("name", metavar="NAME[:TAG]")
    p.add_argument("-a", "--all-tags", action="store_true", help="push all tags of the repository")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress verbose output")
    p.set_defaults(func=cmd_push)
    p = sub.add_parser("login", help="log in to a registry")
    p.add_argument("server", nargs="?", metavar="SERVER")
    p.add_argument("-u", "--username", default="", help="username")
    p.add_argument("-p", "--password", default=None, help="password (insecure: prefer --password-stdin)")
    p.add_argument("--password-stdin", action="store_true", help="take the password from stdin")
    p.set_defaults(func=cmd_login)
    p = sub.add_parser("logout", help="log out from a registry")
    p.add_argument("server", nargs="?", metavar="SERVER")
    p.set_defaults(func=cmd_logout)
    p = sub.add_parser("search", help="search a registry for images")
    p.add_argument("term", metavar="TERM")
    p.add_argument("--limit", type=int, default=25, help="max number of search results")
    p.add_argument("-f", "--filter", action="append", help="filter output (is-official=, is-automated=, stars=)")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("--format", help="'json' for one JSON object per line")
    p.set_defaults(func=cmd_search)
