"""Container lifecycle commands: ``run``, ``create``, ``start``, ``attach``, ``exec``,
``stop``, ``kill``, ``restart``, ``rm``, ``pause``, ``unpause``, ``wait``, ``rename``,
``update`` and the ``container`` group (which also holds the commands of
:mod:`engine.client.commands.container_info`).

Each command makes the docker CLI's calls in the docker CLI's order
(``/work/shared/COMPAT.md`` §2): ``run`` creates (pulling on "No such
image"), attaches *before* starting, opens ``wait?condition=next-exit``
(``removed`` with ``--rm``) before starting too, then streams and exits
with the container's status; 125 when the daemon refuses create or start,
126/127 when the start error says the command cannot be run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from engine.client.apihelp import api_error_text, filters_json, inspect_container, is_not_found, print_err, request_json
from engine.client.errors import ClientError
from engine.client.flagparse import (
    FlagError,
    invalid_argument,
    parse_cpus,
    parse_kv_file,
    parse_restart_policy,
    validate_env,
)
from engine.client.hijack import (
    DEFAULT_DETACH_KEYS,
    Detached,
    Forwarder,
    HijackError,
    Streamer,
    hijack,
    parse_detach_keys,
    terminal_size,
)
from engine.client.progress import StreamError, display
from engine.client.runflags import CreateSpec, add_create_flags, add_run_flags, enable_bool_values, parse_create
from engine.utils.units import human_size, parse_int, parse_uint, ram_in_bytes


def _api_errors() -> tuple[type[BaseException], ...]:
    import docker
    import requests

    return docker.errors.APIError, requests.exceptions.RequestException


def post_json_exact(
    client: Any, path: str, body: Any, *args: str, params: dict[str, Any] | None = None, stream: bool = False
) -> Any:
    """POST ``body`` as JSON without docker-py's dropping of ``null`` fields (the CLI sends them)."""
    resp = client._post(
        client._url(path, *args),
        data=json.dumps(body, separators=(",", ":")),
        params=params,
        headers={"Content-Type": "application/json"},
        stream=stream,
    )
    client._raise_for_status(resp)
    return resp


def _run_usage_error(exc: BaseException, command: str) -> int:
    """The CLI's ``withHelp``: ``engine: <err>`` + a pointer to ``--help``, exit 125."""
    print_err(f"engine: {exc}\n\nRun 'engine {command} --help' for more information")
    return 125


def status_error(exc: BaseException, command: str = "run") -> int:
    """The CLI's ``toStatusError``: print the error; 127 (cannot find), 126 (cannot run), else 125."""
    text = api_error_text(exc) if isinstance(exc, _api_errors()) else str(exc)
    print_err(f"engine: {text}\n\nRun 'engine {command} --help' for more information")
    if (
        "executable file not found" in text
        or "no such file or directory" in text
        or "system cannot find the file specified" in text
    ):
        return 127
    if "permission denied" in text or "is a directory" in text:
        return 126
    return 125


# -- create and pull ----------------------------------------------------------------------------------------


def _named_ref(image: str) -> Any:
    """The image as a tagged reference (``busybox`` -> ``docker.io/library/busybox:latest``); None for an ID."""
    from engine.errors import EngineError
    from engine.reference import is_image_id, parse_normalized

    if is_image_id(image):
        return None
    try:
        return parse_normalized(image)
    except EngineError as exc:
        raise ClientError(str(exc), status=125) from None


def _registry_auth(domain: str) -> str:
    """``X-Registry-Auth`` for ``domain`` from ``$DOCKER_CONFIG/config.json``; ``e30=`` (``{}``) without one."""
    path = os.path.join(os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"), "config.json")
    try:
        with open(path) as fh:
            auths = json.load(fh).get("auths") or {}
    except (OSError, ValueError):
        auths = {}
    keys = [domain, f"https://{domain}", f"http://{domain}"]
    if domain == "docker.io":
        keys = ["https://index.docker.io/v1/", "index.docker.io", "docker.io", *keys]
    for key in keys:
        entry = auths.get(key)
        if entry and entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode(errors="replace").partition(":")
            payload = {"username": user, "password": password, "serveraddress": key}
            return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()
    return "e30="


def pull_image(client: Any, image: str, platform: str = "", quiet: bool = False, out: Any = None) -> None:
    """``POST /images/create?fromImage=<full name>&tag=`` with the progress on ``out`` (stderr for run/create)."""
    ref = _named_ref(image)
    if ref is None:
        raise ClientError(f"invalid reference format: {image}")
    params = {"fromImage": ref.name, "tag": ref.digest or ref.tag or "latest"}
    if platform:
        params["platform"] = platform.lower()
    resp = client._post(
        client._url("/images/create"),
        params=params,
        stream=True,
        headers={"X-Registry-Auth": _registry_auth(ref.domain)},
    )
    client._raise_for_status(resp)
    sink = open(os.devnull, "w") if quiet else (out or sys.stderr)
    try:
        display(resp.iter_content(chunk_size=None), out=sink)
    except StreamError as exc:
        raise ClientError(str(exc)) from None
    finally:
        if quiet:
            sink.close()


def create_container(client: Any, spec: CreateSpec) -> str:
    """The CLI's ``createContainer``: cidfile, ``--pull``, create, pull on a missing image and retry, warnings."""
    endpoints = spec.body["NetworkingConfig"]["EndpointsConfig"]
    version = str(getattr(client, "_version", "1.41"))
    if any(ep.get("MacAddress") for ep in endpoints.values()) and _version_tuple(version) < (1, 44):
        # The API client refuses a per-network MAC address below 1.44, and --mac-address is one.
        raise ClientError(
            f'"specify mac-address per network" requires API version 1.44, but the Docker daemon API '
            f"version is {version}"
        )
    cidfile = None
    if spec.cidfile:
        if os.path.exists(spec.cidfile):
            raise ClientError(
                f"container ID file found, make sure the other container isn't running or delete {spec.cidfile}"
            )
        try:
            cidfile = open(spec.cidfile, "w")
        except OSError as exc:
            raise ClientError(f"failed to create the container ID file: {exc}") from None
    written = False
    try:
        image = spec.body["Image"]
        ref = _named_ref(image)
        if spec.pull == "always":
            pull_image(client, image, spec.platform, spec.quiet)
        try:
            resp = post_json_exact(client, "/containers/create", spec.body, params=spec.params())
        except _api_errors()[0] as exc:
            if not (is_not_found(exc) and ref is not None and spec.pull in ("missing", "")):
                raise
            if not spec.quiet:
                print_err(f"Unable to find image '{ref.familiar()}' locally")
            pull_image(client, image, spec.platform, spec.quiet)
            resp = post_json_exact(client, "/containers/create", spec.body, params=spec.params())
        result = resp.json()
        for warning in list(result.get("Warnings") or []) + spec.warnings:
            print_err(f"WARNING: {warning}")
        cid = result["Id"]
        if cidfile is not None:
            cidfile.write(cid)
            written = True
        return cid
    finally:
        if cidfile is not None:
            cidfile.close()
            if not written:
                os.unlink(spec.cidfile)


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


def _parse_spec(args: argparse.Namespace) -> CreateSpec:
    return parse_create(args, console_size=terminal_size(sys.stdout))


def cmd_create(client: Any, args: argparse.Namespace) -> int:
    try:
        spec = _parse_spec(args)
    except FlagError as exc:
        return _run_usage_error(exc, "create")
    try:
        cid = create_container(client, spec)
    except ClientError as exc:
        print_err(str(exc))
        return 1
    except _api_errors() as exc:
        print_err(api_error_text(exc))
        return 1
    print(cid)
    return 0


# -- attach / start / run -----------------------------------------------------------------------------------


class _Waiter:
    """``POST /containers/{id}/wait``, opened now (headers received), its status read in a thread."""

    def __init__(self, client: Any, cid: str, condition: str | None) -> None:
        params = {"condition": condition} if condition else None
        self.resp = client._post(client._url("/containers/{0}/wait", cid), params=params, stream=True)
        client._raise_for_status(self.resp)
        self.status: int | None = None
        self.error: str | None = None
        self.done = threading.Event()
        self.callbacks: list[Callable[[], None]] = []
        threading.Thread(target=self._read, name="wait", daemon=True).start()

    def _read(self) -> None:
        try:
            body = json.loads(self.resp.content or b"{}")
            err = body.get("Error")
            if err and err.get("Message"):
                self.error = err["Message"]
                self.status = 125
            else:
                self.status = int(body.get("StatusCode", 0))
        except Exception as exc:  # noqa: BLE001 - any failure means "unknown": 125, as the CLI
            self.error = str(exc)
            self.status = 125
        self.done.set()
        for callback in self.callbacks:
            callback()

    def wait(self) -> int:
        self.done.wait()
        if self.error:
            print_err(f"Error waiting for container: {self.error}")
        return self.status if self.status is not None else 125


def _attach_streams(config: dict[str, Any]) -> tuple[Any, Any]:
    stdout = sys.stdout.buffer if config.get("AttachStdout") else None
    stderr = None
    if config.get("AttachStderr"):
        stderr = sys.stdout.buffer if config.get("Tty") else sys.stderr.buffer
    return stdout, stderr


def _detach_keys(value: str) -> bytes:
    if not value:
        return DEFAULT_DETACH_KEYS
    try:
        return parse_detach_keys(value)
    except ClientError:
        # Like the CLI: an invalid sequence falls back to the default.
        return DEFAULT_DETACH_KEYS


def _attach_params(stdin: bool, stdout: bool, stderr: bool, detach_keys: str) -> dict[str, Any]:
    params: dict[str, Any] = {"stream": 1}
    if stdin:
        params["stdin"] = 1
    if stdout:
        params["stdout"] = 1
    if stderr:
        params["stderr"] = 1
    if detach_keys:
        params["detachKeys"] = detach_keys
    return params


def cmd_run(client: Any, args: argparse.Namespace) -> int:
    try:
        spec = _parse_spec(args)
    except FlagError as exc:
        return _run_usage_error(exc, "run")
    config = spec.body
    if not args.detach:
        if config["AttachStdin"] and config["Tty"] and not sys.stdin.isatty():
            print_err("the input device is not a TTY")
            return 1
    else:
        if args.attach:
            print_err("conflicting options: cannot specify both --attach and --detach")
            return 1
        for key in ("AttachStdin", "AttachStdout", "AttachStderr", "StdinOnce"):
            config[key] = False
    try:
        cid = create_container(client, spec)
    except ClientError as exc:
        return status_error(exc)
    except _api_errors() as exc:
        return status_error(exc)

    forwarder = Forwarder(client, cid)
    try:
        if args.sig_proxy:
            forwarder.proxy_signals()
        attach = config["AttachStdin"] or config["AttachStdout"] or config["AttachStderr"]
        streamer = None
        try:
            if attach:
                conn = hijack(
                    client,
                    client._url("/containers/{0}/attach", cid),
                    params=_attach_params(
                        config["AttachStdin"], config["AttachStdout"], config["AttachStderr"], args.detach_keys
                    ),
                )
                stdout, stderr = _attach_streams(config)
                streamer = Streamer(
                    conn,
                    sys.stdin.fileno() if config["AttachStdin"] else None,
                    stdout,
                    stderr,
                    config["Tty"],
                    _detach_keys(args.detach_keys),
                )
            waiter = _Waiter(client, cid, "removed" if config["HostConfig"]["AutoRemove"] else "next-exit")
        except _api_errors() as exc:
            print_err(api_error_text(exc))
            return 1
        try:
            client._raise_for_status(client._post(client._url("/containers/{0}/start", cid)))
        except _api_errors() as exc:
            if streamer is not None:
                streamer.conn.close()
            if config["HostConfig"]["AutoRemove"]:
                waiter.done.wait(30)
            return status_error(exc)
        if streamer is None:
            print(cid, flush=True)
            return 0
        if config["Tty"] and sys.stdout.isatty():
            forwarder.monitor_resize()
        if not (config["AttachStdout"] or config["AttachStderr"]):
            # Only stdin attached: the container's exit ends the session.
            waiter.callbacks.append(streamer.stop)
            if waiter.done.is_set():
                streamer.stop()
        try:
            streamer.run()
        except Detached:
            return 0
        except HijackError as exc:
            print_err(str(exc))
            return 1
        finally:
            streamer.conn.close()
        return waiter.wait()
    finally:
        forwarder.close()


def _check_running(c: dict[str, Any]) -> None:
    state = c.get("State") or {}
    if not state.get("Running"):
        raise ClientError("You cannot attach to a stopped container, start it first")
    if state.get("Paused"):
        raise ClientError("You cannot attach to a paused container, unpause it first")
    if state.get("Restarting"):
        raise ClientError("You cannot attach to a restarting container, wait until it is running")


def _plain(exc: ClientError) -> int:
    """Print a client error the way the CLI prints a returned error (no prefix)."""
    print_err(str(exc))
    return exc.status


def cmd_attach(client: Any, args: argparse.Namespace) -> int:
    try:
        waiter = _Waiter(client, args.container, None)
        c = inspect_container(client, args.container)
        _check_running(c)
    except ClientError as exc:
        return _plain(exc)
    tty = bool(c["Config"].get("Tty"))
    if not args.no_stdin and tty and not sys.stdin.isatty():
        print_err("the input device is not a TTY")
        return 1
    stdin = not args.no_stdin and bool(c["Config"].get("OpenStdin"))
    forwarder = Forwarder(client, c["Id"])
    try:
        if args.sig_proxy and not tty:
            forwarder.proxy_signals()
        conn = hijack(
            client,
            client._url("/containers/{0}/attach", args.container),
            params=_attach_params(stdin, True, True, args.detach_keys),
        )
        try:
            _check_running(inspect_container(client, args.container))
        except ClientError as exc:
            conn.close()
            return _plain(exc)
        if tty and sys.stdout.isatty():
            # A size change makes the shell redraw its prompt for a second attach.
            height, width = terminal_size()
            if height or width:
                try:
                    client._post(
                        client._url("/containers/{0}/resize", args.container), params={"h": height + 1, "w": width + 1}
                    )
                except _api_errors():
                    pass
            forwarder.monitor_resize()
        streamer = Streamer(
            conn,
            sys.stdin.fileno() if stdin else None,
            sys.stdout.buffer,
            sys.stderr.buffer,
            tty,
            _detach_keys(args.detach_keys),
        )
        try:
            streamer.run()
        except Detached:
            print_err("read escape sequence")
            return 1
        finally:
            conn.close()
        status = waiter.wait()
        return status
    finally:
        forwarder.close()


def _start_attached(client: Any, args: argparse.Namespace) -> int:
    if len(args.containers) > 1:
        print_err("you cannot start and attach multiple containers at once")
        return 1
    c = inspect_container(client, args.containers[0])
    cid = c["Id"]
    tty = bool(c["Config"].get("Tty"))
    forwarder = Forwarder(client, cid)
    try:
        if not tty:
            forwarder.proxy_signals()
        stdin = args.interactive and bool(c["Config"].get("OpenStdin"))
        if stdin and tty and not sys.stdin.isatty():
            print_err("the input device is not a TTY")
            return 1
        conn = hijack(
            client,
            client._url("/containers/{0}/attach", cid),
            params=_attach_params(stdin, True, True, args.detach_keys),
        )
        streamer = Streamer(
            conn,
            sys.stdin.fileno() if stdin else None,
            sys.stdout.buffer,
            sys.stderr.buffer,
            tty,
            _detach_keys(args.detach_keys),
        )
        waiter = _Waiter(client, cid, "removed" if (c.get("HostConfig") or {}).get("AutoRemove") else "next-exit")
        try:
            client._raise_for_status(client._post(client._url("/containers/{0}/start", cid)))
        except _api_errors() as exc:
            conn.close()
            if (c.get("HostConfig") or {}).get("AutoRemove"):
                waiter.done.wait(30)
            print_err(api_error_text(exc))
            return 1
        if tty and sys.stdout.isatty():
            forwarder.monitor_resize()
        try:
            streamer.run()
        except Detached:
            return 0
        except HijackError as exc:
            print_err(str(exc))
            return 1
        finally:
            conn.close()
        return waiter.wait()
    finally:
        forwarder.close()


def cmd_start(client: Any, args: argparse.Namespace) -> int:
    if args.attach or args.interactive:
        return _start_attached(client, args)
    failed = []
    for name in args.containers:
        try:
            client._raise_for_status(client._post(client._url("/containers/{0}/start", name)))
        except _api_errors() as exc:
            print_err(api_error_text(exc))
            failed.append(name)
            continue
        print(name, flush=True)
    if failed:
        print_err(f"Error: failed to start containers: {', '.join(failed)}")
        return 1
    return 0


# -- exec ---------------------------------------------------------------------------------------------------


def cmd_exec(client: Any, args: argparse.Namespace) -> int:
    try:
        env = [validate_env(e) for e in args.env or []]
        env_files: list[str] = []
        for path in args.env_file or []:
            env_files += parse_kv_file(path, os.environ.get)
    except FlagError as exc:
        print_err(str(exc))
        return 125
    detach_keys = args.detach_keys or ""
    body = {
        "User": args.user,
        "Privileged": args.privileged,
        "Tty": args.tty,
        "AttachStdin": bool(args.interactive and not args.detach),
        "AttachStderr": not args.detach,
        "AttachStdout": not args.detach,
        "Detach": args.detach,
        "DetachKeys": detach_keys,
        "Env": (env_files + env) or None,
        "WorkingDir": args.workdir,
        "Cmd": [args.command_name, *args.args],
    }
    inspect_container(client, args.container)
    if not args.detach and body["AttachStdin"] and body["Tty"] and not sys.stdin.isatty():
        print_err("the input device is not a TTY")
        return 1
    exec_id = post_json_exact(client, "/containers/{0}/exec", body, args.container).json().get("Id")
    if not exec_id:
        print_err("exec ID empty")
        return 1
    if args.detach:
        post_json_exact(client, "/exec/{0}/start", {"Detach": True, "Tty": args.tty}, exec_id)
        return 0
    conn = hijack(client, client._url("/exec/{0}/start", exec_id), body={"Detach": False, "Tty": args.tty})
    stdout = sys.stdout.buffer
    stderr = sys.stdout.buffer if args.tty else sys.stderr.buffer
    streamer = Streamer(
        conn, sys.stdin.fileno() if body["AttachStdin"] else None, stdout, stderr, args.tty, _detach_keys(detach_keys)
    )
    forwarder = Forwarder(client, exec_id, exec_resize=True)
    try:
        if args.tty and sys.stdin.isatty():
            forwarder.monitor_resize()
        try:
            streamer.run()
        except Detached:
            print_err("read escape sequence")
            return 1
        except HijackError as exc:
            print_err(str(exc))
            return 1
        finally:
            conn.close()
    finally:
        forwarder.close()
    try:
        info = request_json(client, "GET", "/exec/{0}/json", exec_id)
    except _api_errors()[1]:
        return 255
    return int(info.get("ExitCode") or 0)


# -- one call per container ---------------------------------------------------------------------------------


def _each(
    names: Sequence[str],
    call: Callable[[str], Any],
    parallel: bool = True,
    ignore: Callable[[BaseException], bool] | None = None,
) -> int:
    """Run ``call`` for every container (in parallel, like the CLI), print names in order, then the errors."""

    def guarded(name: str) -> BaseException | None:
        try:
            call(name)
        except Exception as exc:  # noqa: BLE001 - printed below, in order
            return exc
        return None

    if parallel and len(names) > 1:
        with ThreadPoolExecutor(max_workers=min(50, len(names))) as pool:
            results = list(pool.map(guarded, names))
    else:
        results = [guarded(n) for n in names]
    errors = []
    for name, err in zip(names, results):
        if err is None:
            print(name, flush=True)
        elif ignore is not None and ignore(err):
            print_err(api_error_text(err))
        else:
            errors.append(err)
    for err in errors:
        print_err(api_error_text(err) if isinstance(err, _api_errors()) else str(err))
    return 1 if errors else 0


def _post(client: Any, path: str, params: dict[str, Any] | None = None) -> Callable[[str], None]:
    def call(name: str) -> None:
        client._raise_for_status(client._post(client._url(path, name), params=params))

    return call


def _timeout_params(args: argparse.Namespace) -> dict[str, Any] | None:
    return {"t": args.time} if args.time is not None else None


def cmd_stop(client: Any, args: argparse.Namespace) -> int:
    return _each(args.containers, _post(client, "/containers/{0}/stop", _timeout_params(args)))


def cmd_restart(client: Any, args: argparse.Namespace) -> int:
    return _each(args.containers, _post(client, "/containers/{0}/restart", _timeout_params(args)), parallel=False)


def cmd_kill(client: Any, args: argparse.Namespace) -> int:
    return _each(
        args.containers, _post(client, "/containers/{0}/kill", {"signal": args.signal} if args.signal else None)
    )


def cmd_pause(client: Any, args: argparse.Namespace) -> int:
    return _each(args.containers, _post(client, "/containers/{0}/pause"))


def cmd_unpause(client: Any, args: argparse.Namespace) -> int:
    return _each(args.containers, _post(client, "/containers/{0}/unpause"))


def cmd_rm(client: Any, args: argparse.Namespace) -> int:
    params = {}
    if args.force:
        params["force"] = 1
    if args.link:
        params["link"] = 1
    if args.volumes:
        params["v"] = 1

    def call(name: str) -> None:
        name = name.strip("/")
        if not name:
            raise ClientError("container name cannot be empty")
        client._raise_for_status(client._delete(client._url("/containers/{0}", name), params=params or None))

    return _each(args.containers, call, ignore=(lambda exc: is_not_found(exc)) if args.force else None)


def cmd_wait(client: Any, args: argparse.Namespace) -> int:
    status = 0
    for name in args.containers:
        try:
            result = request_json(client, "POST", "/containers/{0}/wait", name)
        except _api_errors() as exc:
            print_err(api_error_text(exc))
            status = 1
            continue
        print(result.get("StatusCode", 0), flush=True)
    return status


def cmd_rename(client: Any, args: argparse.Namespace) -> int:
    old, new = args.old.strip(), args.new.strip()
    if not old or not new:
        print_err("Error: Neither old nor new names may be empty")
        return 1
    try:
        client._raise_for_status(client._post(client._url("/containers/{0}/rename", old), params={"name": new}))
    except _api_errors() as exc:
        print_err(api_error_text(exc))
        print_err(f"Error: failed to rename container named {old}")
        return 1
    return 0


_UPDATE_FLAGS = (
    "blkio_weight",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpuset_cpus",
    "cpuset_mems",
    "cpu_shares",
    "memory",
    "memory_reservation",
    "memory_swap",
    "kernel_memory",
    "restart",
    "pids_limit",
    "cpus",
)


def cmd_update(client: Any, args: argparse.Namespace) -> int:
    if all(getattr(args, f) is None for f in _UPDATE_FLAGS):
        print_err("you must provide one or more flags when using this command")
        return 1

    def num(attr: str, flag: str, bits: int = 64, unsigned: bool = False) -> int:
        value = getattr(args, attr)
        if value is None:
            return 0
        try:
            return parse_uint(value, bits) if unsigned else parse_int(value, bits)
        except ValueError as exc:
            raise invalid_argument(flag, value, str(exc)) from None

    def size(attr: str, flag: str, swap: bool = False) -> int:
        value = getattr(args, attr)
        if value is None:
            return 0
        if swap and value == "-1":
            return -1
        try:
            return ram_in_bytes(value)
        except ValueError as exc:
            raise invalid_argument(flag, value, str(exc)) from None

    try:
        nano = 0
        if args.cpus is not None:
            try:
                nano = parse_cpus(args.cpus)
            except ValueError as exc:
                raise invalid_argument("--cpus", args.cpus, str(exc)) from None
        pids = num("pids_limit", "--pids-limit")
        body: dict[str, Any] = {
            "CpuShares": num("cpu_shares", "-c, --cpu-shares"),
            "Memory": size("memory", "-m, --memory"),
            "NanoCpus": nano,
            "CgroupParent": "",
            "BlkioWeight": num("blkio_weight", "--blkio-weight", 16, unsigned=True),
            "BlkioWeightDevice": None,
            "BlkioDeviceReadBps": None,
            "BlkioDeviceWriteBps": None,
            "BlkioDeviceReadIOps": None,
            "BlkioDeviceWriteIOps": None,
            "CpuPeriod": num("cpu_period", "--cpu-period"),
            "CpuQuota": num("cpu_quota", "--cpu-quota"),
            "CpuRealtimePeriod": num("cpu_rt_period", "--cpu-rt-period"),
            "CpuRealtimeRuntime": num("cpu_rt_runtime", "--cpu-rt-runtime"),
            "CpusetCpus": args.cpuset_cpus or "",
            "CpusetMems": args.cpuset_mems or "",
            "Devices": None,
            "DeviceCgroupRules": None,
            "DeviceRequests": None,
        }
        kernel = size("kernel_memory", "--kernel-memory")
        if kernel:
            body["KernelMemory"] = kernel
        body.update(
            {
                "MemoryReservation": size("memory_reservation", "--memory-reservation"),
                "MemorySwap": size("memory_swap", "--memory-swap", swap=True),
                "MemorySwappiness": None,
                "OomKillDisable": None,
                "PidsLimit": pids if pids != 0 else None,
                "Ulimits": None,
                "CpuCount": 0,
                "CpuPercent": 0,
                "IOMaximumIOps": 0,
                "IOMaximumBandwidth": 0,
                "RestartPolicy": parse_restart_policy(args.restart or ""),
            }
        )
    except FlagError as exc:
        print_err(str(exc))
        return 125
    warnings: list[str] = []
    errors: list[str] = []
    for name in args.containers:
        try:
            result = post_json_exact(client, "/containers/{0}/update", body, name).json()
        except _api_errors() as exc:
            errors.append(api_error_text(exc))
            continue
        print(name, flush=True)
        warnings += result.get("Warnings") or []
    if warnings:
        print("\n".join(warnings))
    if errors:
        print_err("\n".join(errors))
        return 1
    return 0


def cmd_container_prune(client: Any, args: argparse.Namespace) -> int:
    if not args.force:
        sys.stdout.write("WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        answer = sys.stdin.readline()
        if answer.strip().lower() != "y":
            return 0
    filters = filters_json(args.filter)
    report = request_json(client, "POST", "/containers/prune", params={"filters": filters} if filters else None)
    deleted = report.get("ContainersDeleted") or []
    reclaimed = 0
    if deleted:
        print("Deleted Containers:\n" + "".join(d + "\n" for d in deleted))
        reclaimed = report.get("SpaceReclaimed") or 0
    print(f"Total reclaimed space: {human_size(reclaimed, 4)}")
    return 0


# -- registration -------------------------------------------------------------------------------------------


def _image_and_command(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="[COMMAND] [ARG...]")


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="create and run a new container from an image", add_help=False)
    add_run_flags(p)
    _image_and_command(p)
    p.set_defaults(func=cmd_run)


def _add_create(sub: Any) -> None:
    p = sub.add_parser("create", help="create a new container", add_help=False)
    add_create_flags(p)
    _image_and_command(p)
    p.set_defaults(func=cmd_create)


def _add_start(sub: Any) -> None:
    p = sub.add_parser("start", help="start one or more stopped containers")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.add_argument("-a", "--attach", action="store_true", help="attach STDOUT/STDERR and forward signals")
    p.add_argument("-i", "--interactive", action="store_true", help="attach container's STDIN")
    p.add_argument("--detach-keys", default="", help="override the key sequence for detaching a container")
    enable_bool_values(p)
    p.set_defaults(func=cmd_start)


def _add_attach(sub: Any) -> None:
    p = sub.add_parser("attach", help="attach local standard input, output, and error streams to a running container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("--no-stdin", action="store_true", help="do not attach STDIN")
    p.add_argument("--sig-proxy", action="store_true", default=True, help="proxy all received signals to the process")
    p.add_argument("--detach-keys", default="", help="override the key sequence for detaching a container")
    enable_bool_values(p)
    p.set_defaults(func=cmd_attach)


def _add_exec(sub: Any) -> None:
    p = sub.add_parser("exec", help="execute a command in a running container")
    p.add_argument("-d", "--detach", action="store_true", help="detached mode: run command in the background")
    p.add_argument("--detach-keys", default="", help="override the key sequence for detaching a container")
    p.add_argument("-e", "--env", action="append", help="set environment variables")
    p.add_argument("--env-file", action="append", help="read in a file of environment variables")
    p.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open even if not attached")
    p.add_argument("--privileged", action="store_true", help="give extended privileges to the command")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    p.add_argument("-u", "--user", default="", help="username or UID (format: <name|uid>[:<group|gid>])")
    p.add_argument("-w", "--workdir", default="", help="working directory inside the container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command_name", metavar="COMMAND")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG")
    enable_bool_values(p)
    p.set_defaults(func=cmd_exec)


def _add_simple(sub: Any) -> None:
    p = sub.add_parser("stop", help="stop one or more running containers")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.add_argument(
        "-t",
        "--time",
        "--timeout",
        dest="time",
        type=int,
        default=None,
        help="seconds to wait before killing the container",
    )
    p.add_argument("-s", "--signal", default="", help="signal to send to the container (needs API 1.42; not sent)")
    p.set_defaults(func=cmd_stop)
    p = sub.add_parser("restart", help="restart one or more containers")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.add_argument(
        "-t",
        "--time",
        "--timeout",
        dest="time",
        type=int,
        default=None,
        help="seconds to wait before killing the container",
    )
    p.add_argument("-s", "--signal", default="", help="signal to send to the container (needs API 1.42; not sent)")
    p.set_defaults(func=cmd_restart)
    p = sub.add_parser("kill", help="kill one or more running containers")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.add_argument("-s", "--signal", default="", help="signal to send to the container")
    p.set_defaults(func=cmd_kill)
    p = sub.add_parser("pause", help="pause all processes within one or more containers")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_pause)
    p = sub.add_parser("unpause", help="unpause all processes within one or more containers")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_unpause)
    p = sub.add_parser("wait", help="block until one or more containers stop, then print their exit codes")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_wait)
    p = sub.add_parser("rename", help="rename a container")
    p.add_argument("old", metavar="CONTAINER")
    p.add_argument("new", metavar="NEW_NAME")
    p.set_defaults(func=cmd_rename)
    p = sub.add_parser("update", help="update configuration of one or more containers")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.add_argument("--blkio-weight", help="block IO (relative weight), between 10 and 1000, or 0 to disable")
    p.add_argument("--cpu-period", help="limit CPU CFS (Completely Fair Scheduler) period")
    p.add_argument("--cpu-quota", help="limit CPU CFS (Completely Fair Scheduler) quota")
    p.add_argument("--cpu-rt-period", help="limit the CPU real-time period in microseconds")
    p.add_argument("--cpu-rt-runtime", help="limit the CPU real-time runtime in microseconds")
    p.add_argument("--cpuset-cpus", help="CPUs in which to allow execution (0-3, 0,1)")
    p.add_argument("--cpuset-mems", help="MEMs in which to allow execution (0-3, 0,1)")
    p.add_argument("-c", "--cpu-shares", help="CPU shares (relative weight)")
    p.add_argument("-m", "--memory", help="memory limit")
    p.add_argument("--memory-reservation", help="memory soft limit")
    p.add_argument("--memory-swap", help="swap limit equal to memory plus swap: -1 to enable unlimited swap")
    p.add_argument("--kernel-memory", help=argparse.SUPPRESS)
    p.add_argument("--restart", help="restart policy to apply when a container exits")
    p.add_argument("--pids-limit", help="tune container pids limit (set -1 for unlimited)")
    p.add_argument("--cpus", help="number of CPUs")
    p.set_defaults(func=cmd_update)


def _add_rm(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="remove one or more containers")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.add_argument("-f", "--force", action="store_true", help="force the removal of a running container (uses SIGKILL)")
    p.add_argument("-l", "--link", action="store_true", help="remove the specified link")
    p.add_argument(
        "-v", "--volumes", action="store_true", help="remove anonymous volumes associated with the container"
    )
    p.set_defaults(func=cmd_rm)


def register(sub: Any) -> None:
    from engine.client.commands import container_info

    for adder in (_add_run, _add_create, _add_start, _add_attach, _add_exec, _add_simple):
        adder(sub)
    _add_rm(sub, "rm")
    container_info.register_top_level(sub)

    group = sub.add_parser("container", help="manage containers")
    gsub = group.add_subparsers(dest="container_command", metavar="COMMAND", required=True)
    for adder in (_add_run, _add_create, _add_start, _add_attach, _add_exec, _add_simple):
        adder(gsub)
    _add_rm(gsub, "rm")
    container_info.register_group(gsub)
    p = gsub.add_parser("prune", help="remove all stopped containers")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--filter", action="append", help='provide filter values (e.g. "until=<timestamp>")')
    p.set_defaults(func=cmd_container_prune)
