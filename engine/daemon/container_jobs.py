"""The container, exec, volume and event jobs (seed ch. 3 §5.5.2 ``daemon.Install``).

Each job reads its arguments and env, calls the daemon's service (the life
cycle for transitions, the container store for lookups, the exec and volume
stores) and writes the API's answer to its stdout; the streaming ones
(attach, logs, events, stats, wait) write as things happen.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

from engine import apiversion, archive
from engine.daemon import attach as attaching
from engine.daemon import logs as logfile
from engine.daemon import views
from engine.daemon.daemon import require
from engine.daemon.events import matches
from engine.daemon.hostconfig import parse_signal
from engine.daemon.logconfig import log_source
from engine.daemon.namespaces import resolve_container_modes
from engine.daemon.networks import JOBS as NETWORK_JOBS
from engine.errors import Conflict, EngineError, InvalidParameter, NotSupported
from engine.hookspecs import hookimpl
from engine.utils import sockets, stdcopy
from engine.utils.gojson import fold_keys
from engine.utils.jsonout import encode

if TYPE_CHECKING:
    from engine.daemon.container import Container
    from engine.daemon.lifecycle import LifeCycle

LOG = logging.getLogger(__name__)
#: Held by a container list (see :func:`job_containers`).
_LISTING = threading.Lock()


def svc_of(job: Any) -> LifeCycle:
    """The life cycle of the job's daemon's containers."""
    return job.engine.daemon.lifecycle


def container_of(job: Any) -> Container:
    """The container the job's first argument names (ID, name or ID prefix)."""
    return job.engine.daemon.containers.get(job.args[0])


# create, inspect, list
def job_create(job: Any) -> None:
    body = job.env.get_json("Body", {}) or {}
    if not isinstance(body, dict):
        raise InvalidParameter("invalid container config: not a JSON object")
    body = fold_keys(body, views.CONFIG_FIELDS)
    host_config = fold_keys(body.pop("HostConfig", None) or {}, views.HOST_CONFIG_FIELDS)
    networking = body.pop("NetworkingConfig", None) or {}
    warnings = apiversion.adapt_create(apiversion.of_job(job), body, host_config, networking)
    resolve_container_modes(host_config, job.engine.daemon.containers)
    c, more = svc_of(job).create(body, host_config, job.env.get("Name"), networking)
    job.write_json({"Id": c.id, "Warnings": more + warnings})


def job_container_inspect(job: Any) -> None:
    doc = views.inspect(job.engine.daemon, container_of(job), job.env.get_bool("Size"))
    job.write_json(apiversion.container_json(apiversion.of_job(job), doc))


def job_container_tty(job: Any) -> None:
    """``{"Tty": ...}``: what a container's logs and attach need to know before they answer
    (and a 404 for an unknown container), without rendering its whole inspect view."""
    job.write_json({"Tty": container_of(job).tty})


def job_containers(job: Any) -> None:
    """``GET /containers/json``. Lists run one at a time: they only use the CPU, under one GIL,
    so that 16 at once would all end at about 16 times one's time, where in turn the k-th ends
    at k times. A list with sizes waits for the disk and runs beside the others."""
    size = job.env.get_bool("Size")
    with contextlib.nullcontext() if size else _LISTING:
        entries = views.iter_containers(
            job.engine.daemon,
            job.env.get_bool("All"),
            job.env.get_int("Limit", -1),
            size,
            job.env.get_json("Filters", {}) or {},
        )
        # Each entry is encoded as soon as it is built (see iter_containers); the same bytes
        # as the whole list's encoding.
        parts = [encode(entry) for entry in entries]
        job.stdout.write(b"[" + b",".join(parts) + b"]\n")


# lifecycle
def job_start(job: Any) -> None:
    svc_of(job).start(container_of(job))


def _stop_options(job: Any) -> tuple[int | None, str | None]:
    """``Timeout`` (None: the container's own) and ``Signal`` of a stop or restart (API 1.42
    added the signal, ignored before); a bad signal is refused here, before the stop changes
    anything."""
    timeout = job.env.get_int("Timeout") if job.env.get("Timeout") not in ("", None) else None
    sig = None if apiversion.before(apiversion.of_job(job), "1.42") else job.env.get("Signal") or None
    if sig is not None:
        parse_signal(sig)
    return timeout, sig


def job_stop(job: Any) -> None:
    timeout, sig = _stop_options(job)
    svc_of(job).stop(container_of(job), timeout, sig)


def job_restart(job: Any) -> None:
    timeout, sig = _stop_options(job)
    svc_of(job).restart(container_of(job), timeout, sig)


def job_kill(job: Any) -> None:
    svc_of(job).kill(container_of(job), parse_signal(job.env.get("Signal") or "SIGKILL"))


def job_pause(job: Any) -> None:
    svc_of(job).pause(container_of(job))


def job_unpause(job: Any) -> None:
    svc_of(job).unpause(container_of(job))


def job_rm(job: Any) -> None:
    daemon = job.engine.daemon
    if job.env.get_bool("RemoveLink"):
        # ``DELETE /containers/{parent}/{alias}?link=1``: the link goes, both containers stay.
        child = container_of(job)
        parent, _alias = daemon.containers.remove_link(job.args[0])
        daemon.network.unlink(parent, child)
        return
    svc_of(job).remove(
        container_of(job),
        force=job.env.get_bool("Force"),
        volumes=job.env.get_bool("RemoveVolume"),
    )


def job_rename(job: Any) -> None:
    svc_of(job).rename(container_of(job), job.env.get("NewName"))


def job_wait(job: Any) -> None:
    """Flush the headers at once (an empty write), answer when the condition holds."""
    svc = svc_of(job)
    c = container_of(job)
    condition = job.env.get("Condition") or "not-running"
    if condition not in ("not-running", "next-exit", "removed"):
        raise InvalidParameter(f"invalid condition: {condition!r}")
    with c.lock:
        since = c.exits
    job.stdout.write(b"")
    stop = job.engine.stopping
    while not svc.wait(c, condition, timeout=1.0, stop=stop, since=since):
        if stop.is_set() or job.stdout.closed:
            return
    with c.lock:
        code = c.state.exit_code
        error = c.state.error
    job.write_json({"StatusCode": code, "Error": {"Message": error} if error and condition != "removed" else None})


def job_update(job: Any) -> None:
    body = fold_keys(job.env.get_json("Body", {}) or {}, views.HOST_CONFIG_FIELDS)
    apiversion.adapt_update(apiversion.of_job(job), body)
    warnings = svc_of(job).update(container_of(job), body)
    job.write_json({"Warnings": warnings})


def job_containers_prune(job: Any) -> None:
    from engine.graph.jobs import parse_until

    daemon = job.engine.daemon
    filters = job.env.get_json("Filters", {}) or {}
    for key in filters:
        if key not in ("until", "label", "label!"):
            raise InvalidParameter(f"Invalid filter '{key}'")
    until = min((parse_until(v) for v in filters.get("until", [])), default=None)
    deleted, reclaimed = [], 0
    for c in daemon.containers.all():
        if c.state.running:
            continue
        if until is not None and c.created >= until:
            continue
        labels = c.config.get("Labels") or {}
        if filters.get("label") and not views._label_ok(labels, filters["label"]):
            continue
        if filters.get("label!") and any(views._label_ok(labels, [v]) for v in filters["label!"]):
            continue
        rw, _ = views.sizes(daemon, c)
        try:
            daemon.lifecycle.remove(c)
        except EngineError:
            continue
        deleted.append(c.id)
        reclaimed += rw
    job.write_json({"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed})


# processes, changes, export, archive
def job_top(job: Any) -> None:
    c = container_of(job)
    if not c.state.running:
        raise Conflict(f"Container {c.id} is not running")
    pids = set(svc_of(job).pids(c))
    args = (job.env.get("PsArgs") or "-ef").split()
    proc = subprocess.run(["ps", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise InvalidParameter(f"ps: {proc.stderr.strip()}")
    lines = proc.stdout.splitlines()
    titles = lines[0].split()
    if "PID" not in titles:
        raise InvalidParameter("Couldn't find PID field in ps output")
    pid_index = titles.index("PID")
    processes = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) > pid_index and fields[pid_index].isdigit() and int(fields[pid_index]) in pids:
            processes.append(fields)
    job.write_json({"Titles": titles, "Processes": processes})


#: Paths the runtime makes or mounts over in every container (the init layer's): a
#: change of their own is not the container's doing. A directory among them is still
#: shown when something below it changed, as moby lists every parent of a change.
RUNTIME_PATHS = frozenset(
    {
        "/etc/hosts",
        "/etc/hostname",
        "/etc/resolv.conf",
        "/.dockerenv",
        "/dev",
        "/dev/console",
        "/dev/pts",
        "/dev/shm",
        "/proc",
        "/sys",
        "/etc",
    }
)


def job_changes(job: Any) -> None:
    c = container_of(job)
    changes = sorted(job.engine.daemon.graphdriver.changes(c.id, c.init_layer), key=lambda ch: ch.path)
    paths = [ch.path for ch in changes]

    def runtime_only(ch: Any) -> bool:
        if ch.path not in RUNTIME_PATHS or int(ch.kind) != 0:
            return False
        below = ch.path.rstrip("/") + "/"
        return not any(p.startswith(below) and p not in RUNTIME_PATHS for p in paths)

    out = [{"Path": ch.path, "Kind": int(ch.kind)} for ch in changes if not runtime_only(ch)]
    job.write_json(out or None)


def job_export(job: Any) -> None:
    svc = svc_of(job)
    c = container_of(job)
    driver = require(svc.daemon.graphdriver, "graph driver")
    path = driver.get(c.id)
    stream = require(svc.daemon.graph, "image store").layers.to_container(
        archive.tar_tree(path, release=lambda: driver.put(c.id))
    )
    try:
        while True:
            chunk = stream.read(1 << 20)
            if not chunk or job.stdout.closed:
                break
            job.stdout.write(chunk)
    finally:
        stream.close()
    job.engine.daemon.container_event(c, "export")


def job_archive_stat(job: Any) -> None:
    from engine.daemon import archive_ops

    c = container_of(job)
    job.write_json(archive_ops.stat_path(svc_of(job), c, job.env.get("Path")))


def job_archive_get(job: Any) -> None:
    from engine.daemon import archive_ops

    c = container_of(job)
    archive_ops.get(svc_of(job), c, job.env.get("Path"), job.stdout)


def job_archive_put(job: Any) -> None:
    from engine.daemon import archive_ops

    c = container_of(job)
    archive_ops.put(
        svc_of(job),
        c,
        job.env.get("Path"),
        job.stdin,
        job.env.get_bool("NoOverwriteDirNonDir"),
        job.env.get_bool("CopyUIDGID"),
    )


# logs, attach, resize, stats
def job_logs(job: Any) -> None:
    c = container_of(job)
    env = job.env
    if not (env.get_bool("Stdout") or env.get_bool("Stderr")):
        raise InvalidParameter("Bad parameters: you must choose at least one stream")
    kind, path = log_source(c.host_config.get("LogConfig"), c.root, c.log_path)
    tail = env.get("Tail") or "all"
    try:
        tail_n = -1 if tail == "all" else int(tail)
    except ValueError:
        tail_n = -1
    stop = job.engine.stopping
    job.stdout.write(b"")
    for stream, data in logfile.read(
        path,
        env.get_bool("Stdout"),
        env.get_bool("Stderr"),
        since=logfile.parse_time(env.get("Since")),
        until=logfile.parse_time(env.get("Until")),
        tail=tail_n,
        timestamps=env.get_bool("Timestamps"),
        follow=env.get_bool("Follow"),
        running=lambda: c.state.running and not c.removed,
        stopped=lambda: stop.is_set() or job.stdout.closed,
        format=kind,
    ):
        job.stdout.write(stdcopy.frame(stream, data, c.tty))


def job_attach(job: Any) -> None:
    """Stream a container's stdio over the hijacked socket in ``job.stdin``."""
    svc = svc_of(job)
    c = container_of(job)
    env = job.env
    source = job.stdin.source
    if isinstance(source, sockets.Hijacked):  # the answer's header is ours to write, once ready
        sock, announce = source.sock, source.announce
    else:
        sock, announce = source, lambda: None
    want_in, want_out, want_err = env.get_bool("Stdin"), env.get_bool("Stdout"), env.get_bool("Stderr")

    def replay_logs() -> bool:
        """The past output (``logs=1``); False when the client has gone."""
        if not env.get_bool("Logs"):
            return True
        try:
            kind, path = log_source(c.host_config.get("LogConfig"), c.root, c.log_path)
        except NotSupported:
            return True  # the none driver: no past output to replay
        if path:
            for stream, data in logfile.read(path, want_out, want_err, follow=False, format=kind):
                if not sockets.send_all(sock, stdcopy.frame(stream, data, c.tty)):
                    return False
        return True

    if not env.get_bool("Stream"):
        announce()
        replay_logs()
        sockets.close_client(sock)
        return
    job.engine.daemon.container_event(c, "attach")
    from engine.daemon.streams import attach_container

    attach_container(
        svc,
        c,
        sock,
        want_in and bool(c.config.get("OpenStdin")),
        want_out,
        want_err,
        attaching.parse_detach_keys(env.get("DetachKeys")) if c.tty else None,
        job.engine.stopping,
        ready=lambda: (announce(), replay_logs())[1],
    )


def job_resize(job: Any) -> None:
    from engine.shim.client import ShimClient

    c = container_of(job)
    if not c.state.running:
        raise Conflict(f"Container {c.id} is not running")
    h, w = job.env.get_int("Height"), job.env.get_int("Width")
    try:
        ShimClient(c.root).resize(h, w)
    except (OSError, EngineError) as exc:
        raise Conflict(f"cannot resize container {c.short_id}: {exc}") from None


def job_stats(job: Any) -> None:
    from engine.daemon.stats import stream_stats

    stream_stats(
        svc_of(job),
        container_of(job),
        job.env.get_bool("Stream"),
        job.env.get_bool("OneShot"),
        job.stdout,
        job.engine.stopping,
    )


# exec
#: moby's ``ExecConfig`` and ``ExecStartCheck`` fields (bodies are matched to them as Go does).
EXEC_CONFIG_FIELDS = (
    "User",
    "Privileged",
    "Tty",
    "ConsoleSize",
    "AttachStdin",
    "AttachStderr",
    "AttachStdout",
    "Detach",
    "DetachKeys",
    "Env",
    "WorkingDir",
    "Cmd",
)
EXEC_START_FIELDS = ("Detach", "Tty", "ConsoleSize")


def job_exec_create(job: Any) -> None:
    body = fold_keys(job.env.get_json("Body", {}) or {}, EXEC_CONFIG_FIELDS)
    if apiversion.before(apiversion.of_job(job), "1.42"):
        body.pop("ConsoleSize", None)  # not read before API 1.42
    e = job.engine.daemon.execs.create(container_of(job), body)
    job.write_json({"Id": e.id})


def job_exec_start(job: Any) -> None:
    execs = job.engine.daemon.execs
    e = execs.get(job.args[0])
    body = fold_keys(job.env.get_json("Body", {}) or {}, EXEC_START_FIELDS)
    sock = job.stdin.source if not body.get("Detach") else None
    tty = bool(body.get("Tty"))
    size = body.get("ConsoleSize")
    if not tty or not size or apiversion.before(apiversion.of_job(job), "1.42"):
        size = None  # moby: no console without a tty, and none before API 1.42
    execs.start(e, sock, multiplexed=not tty, console_size=tuple(size) if size and any(size) else None)
    if sock is not None:
        sockets.close_client(sock)


def job_exec_inspect(job: Any) -> None:
    job.write_json(job.engine.daemon.execs.get(job.args[0]).to_api())


def job_exec_resize(job: Any) -> None:
    execs = job.engine.daemon.execs
    execs.resize(execs.get(job.args[0]), job.env.get_int("Height"), job.env.get_int("Width"))


# volumes
def job_volumes(job: Any) -> None:
    daemon = job.engine.daemon
    filters = job.env.get_json("Filters", {}) or {}
    for key in filters:
        if key not in ("dangling", "driver", "label", "name"):
            raise InvalidParameter(f"Invalid filter '{key}'")
    out = []
    for vol in daemon.volumes.list():
        if filters.get("name") and not any(n in vol["Name"] for n in filters["name"]):
            continue
        if filters.get("driver") and vol["Driver"] not in filters["driver"]:
            continue
        if filters.get("label") and not views._label_ok(vol["Labels"], filters["label"]):
            continue
        if filters.get("dangling"):
            dangling = filters["dangling"][0].lower() in ("1", "true")
            if bool(daemon.volumes.users(vol["Name"])) == dangling:
                continue
        out.append(vol)
    job.write_json({"Volumes": out, "Warnings": None})


def job_volume_create(job: Any) -> None:
    body = job.env.get_json("Body", {}) or {}
    vol, _ = job.engine.daemon.volumes.create(
        body.get("Name") or None, body.get("Labels"), body.get("DriverOpts"), body.get("Driver") or "local"
    )
    job.engine.daemon.events.log("volume", "create", vol["Name"], {"driver": "local"})
    job.write_json(vol)


def job_volume_inspect(job: Any) -> None:
    job.write_json(job.engine.daemon.volumes.inspect(job.args[0]))


def job_volume_rm(job: Any) -> None:
    job.engine.daemon.volumes.remove(job.args[0], force=job.env.get_bool("Force"))
    job.engine.daemon.events.log("volume", "destroy", job.args[0], {"driver": "local"})


def job_volumes_prune(job: Any) -> None:
    from engine.core.env import parse_bool

    filters = job.env.get_json("Filters", {}) or {}
    for key in filters:
        if key not in ("label", "label!", "all"):
            raise InvalidParameter(f"Invalid filter '{key}'")
    # From API 1.42 only anonymous volumes go, unless the "all" filter is true.
    everything = apiversion.before(apiversion.of_job(job), "1.42") or any(parse_bool(v) for v in filters.get("all", []))
    job.write_json(
        job.engine.daemon.volumes.prune(
            filters.get("label", []), filters.get("label!", []), anonymous_only=not everything
        )
    )


#: The object types ``GET /system/df?type=`` takes (API 1.42).
DF_TYPES = ("container", "image", "volume", "build-cache")


def job_system_df(job: Any) -> None:
    daemon = job.engine.daemon
    graph = daemon.graph
    store = daemon.containers
    version = apiversion.of_job(job)
    wanted = set(job.env.get_list("Types") or []) if apiversion.at_least(version, "1.42") else set()
    for kind in wanted:
        if kind not in DF_TYPES:
            raise InvalidParameter(f"unknown object type: {kind}")
    wanted = wanted or set(DF_TYPES)
    doc: dict[str, Any] = {"LayersSize": 0, "Images": None, "Containers": None, "Volumes": None, "BuildCache": None}
    if "image" in wanted:
        users: dict[str, int] = {}
        for c in store.all():
            users[c.image_id] = users.get(c.image_id, 0) + 1
        from engine.graph.jobs import shared_sizes

        shared = shared_sizes(graph)
        images = []
        for image in graph:
            summary = graph.summary(image)
            summary["Containers"] = users.get(image.id, 0)
            summary["SharedSize"] = shared.get(image.id, 0)
            images.append(summary)
        doc["Images"] = images
        doc["LayersSize"] = sum(layer.size for layer in graph.layers.all())
    if "container" in wanted:
        doc["Containers"] = [views.summary(daemon, c, size=True) for c in store.all()]
    if "volume" in wanted:
        volumes = []
        for vol in daemon.volumes.list():
            vol = dict(vol)
            vol["UsageData"] = {
                "Size": daemon.volumes.size(vol["Name"]),
                "RefCount": len(daemon.volumes.users(vol["Name"])),
            }
            volumes.append(vol)
        doc["Volumes"] = volumes
    if "build-cache" in wanted and apiversion.at_least(version, "1.42"):
        # The classic builder's cache is images: no build cache records. dockerd 20.10 (1.41)
        # answers null (and BuilderSize 0, apiversion.disk_usage); 1.42 made it a list.
        doc["BuildCache"] = []
    job.write_json(apiversion.disk_usage(version, doc))


# events
def job_events(job: Any) -> None:
    """Past events (``since``) then live ones until ``until`` or the client leaves."""
    events = job.engine.daemon.events
    filters = job.env.get_json("Filters", {}) or {}
    # since=0 (``docker events --since 0``) is the start of the history, not "no since".
    since = logfile.parse_time(job.env.get("Since")) if job.env.get("Since") else None
    until = logfile.parse_time(job.env.get("Until")) or None
    sub = events.subscribe()
    try:
        job.stdout.write(b"")
        if since is not None:
            for event in events.past(since, until):
                if matches(event, filters):
                    job.write_json(event)
        stop = job.engine.stopping
        while not stop.is_set() and not job.stdout.closed:
            if until is not None and time.time() > until:
                return
            event = sub.get(timeout=0.5)
            if event is None:
                continue
            if until is not None and event["timeNano"] / 1e9 > until:
                return
            if matches(event, filters):
                job.write_json(event)
    finally:
        sub.close()


@hookimpl
def engine_register_jobs(engine: Any, daemon: Any) -> None:
    if daemon is None:
        return
    for name, handler in (
        ("create", job_create),
        ("container_inspect", job_container_inspect),
        ("container_tty", job_container_tty),
        ("containers", job_containers),
        ("start", job_start),
        ("stop", job_stop),
        ("restart", job_restart),
        ("kill", job_kill),
        ("pause", job_pause),
        ("unpause", job_unpause),
        ("rm", job_rm),
        ("rename", job_rename),
        ("wait", job_wait),
        ("container_update", job_update),
        ("containers_prune", job_containers_prune),
        ("top", job_top),
        ("container_changes", job_changes),
        ("export", job_export),
        ("archive_stat", job_archive_stat),
        ("archive_get", job_archive_get),
        ("archive_put", job_archive_put),
        ("logs", job_logs),
        ("attach", job_attach),
        ("resize", job_resize),
        ("stats", job_stats),
        ("exec_create", job_exec_create),
        ("exec_start", job_exec_start),
        ("exec_inspect", job_exec_inspect),
        ("exec_resize", job_exec_resize),
        ("volumes", job_volumes),
        ("volume_create", job_volume_create),
        ("volume_inspect", job_volume_inspect),
        ("volume_rm", job_volume_rm),
        ("volumes_prune", job_volumes_prune),
        ("events", job_events),
        ("system_df", job_system_df),
        *NETWORK_JOBS,
    ):
        engine.register(name, handler)
