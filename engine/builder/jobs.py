"""The builder's jobs: ``build``, ``commit`` and ``build_prune``.

Registered through the ``engine_register_jobs`` hook like every built-in
job; the routes are :mod:`engine.api.build`'s.

Each build works in its own directory ``<root>/builder/<build id>/`` (the
unpacked context, downloads) and lists there, in ``layers``, the driver
layers it is writing (COPY, ADD, WORKDIR). A build that ends removes both;
what a crash left behind is removed when the daemon next starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from typing import Any

from engine import reference as refs
from engine.builder import images as imaging
from engine.builder.builder import Builder, BuildOptions, Output, StepError, short
from engine.builder.parser import parse_changes
from engine.errors import Conflict, EngineError, InvalidParameter
from engine.hookspecs import hookimpl
from engine.sys.fs import safe_rmtree

LOG = logging.getLogger(__name__)

#: Dockerfile instructions ``docker commit --change`` takes (moby ``validCommitCommands``).
COMMIT_CHANGES = (
    "cmd",
    "entrypoint",
    "env",
    "expose",
    "label",
    "onbuild",
    "user",
    "volume",
    "workdir",
    "stopsignal",
    "healthcheck",
)


def builder_dir(daemon: Any) -> str:
    return os.path.join(daemon.root, "builder")


def cleanup_leftovers(daemon: Any) -> None:
    """Remove what builds interrupted by a crash left: their directories and their layers."""
    base = builder_dir(daemon)
    if not os.path.isdir(base):
        return
    for name in os.listdir(base):
        path = os.path.join(base, name)
        layers_file = os.path.join(path, "layers")
        try:
            with open(layers_file, encoding="ascii") as fh:
                layers = [line.strip() for line in fh if line.strip()]
        except OSError:
            layers = []
        for layer in layers:
            try:
                if daemon.graphdriver.exists(layer):
                    daemon.graphdriver.remove(layer)
            except EngineError as exc:
                LOG.error("removing layer %s left by a build: %s", layer[:12], exc)
        safe_rmtree(path)


class _LayerLog:
    """The ``layers`` file of a build: the driver layers it has made and not yet removed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.layers: list[str] = []

    def __call__(self, layer_id: str, added: bool) -> None:
        if added:
            self.layers.append(layer_id)
        elif layer_id in self.layers:
            self.layers.remove(layer_id)
        with open(self.path, "w", encoding="ascii") as fh:
            fh.write("".join(f"{layer}\n" for layer in self.layers))
            fh.flush()
            os.fsync(fh.fileno())


def options_from_env(env: Any) -> BuildOptions:
    """The build's options from the job's env (set by :mod:`engine.api.build`)."""
    return BuildOptions(
        tags=env.get_list("Tags"),
        suppress_output=env.get_bool("Quiet"),
        no_cache=env.get_bool("NoCache"),
        remove=env.get_bool("Remove", True),
        force_remove=env.get_bool("ForceRemove"),
        pull=env.get_bool("Pull"),
        build_args=env.get_json("BuildArgs", {}) or {},
        labels=env.get_json("Labels", {}) or {},
        target=env.get("Target"),
        cache_from=env.get_json("CacheFrom", []) or [],
        network_mode=env.get("NetworkMode"),
        shm_size=env.get_int("ShmSize"),
        extra_hosts=env.get_list("ExtraHosts"),
        memory=env.get_int("Memory"),
        memory_swap=env.get_int("MemorySwap"),
        cpu_shares=env.get_int("CpuShares"),
        cpu_period=env.get_int("CpuPeriod"),
        cpu_quota=env.get_int("CpuQuota"),
        cpuset_cpus=env.get("CpusetCpus"),
        cpuset_mems=env.get("CpusetMems"),
        cgroup_parent=env.get("CgroupParent"),
        ulimits=env.get_json("Ulimits", []) or [],
        platform=env.get("Platform"),
        dockerfile=env.get("Dockerfile"),
        remote=env.get("Remote"),
        auth_configs=env.get_json("AuthConfigs", {}) or {},
    )


def _tag_refs(tags: list[str]) -> list[refs.Reference]:
    """Parse every ``t`` before the build starts (moby ``NewTagger``): a bad one is a 400, nothing is built."""
    out = []
    for tag in tags:
        if not tag:
            continue
        ref = refs.parse_normalized(tag)
        if ref.digest:
            raise InvalidParameter("build tag cannot contain a digest")
        out.append(ref)
    return out


def _check_platform(platform: str) -> None:
    if not platform:
        return
    parts = platform.lower().split("/")
    if parts[0] != "linux" or len(parts) > 3 or not all(parts):
        raise InvalidParameter(f'"{platform}": unknown operating system or architecture: invalid argument')


def job_build(job: Any) -> None:
    """``build`` with the request body on stdin; writes dockerd's JSON stream.

    Errors raised before the first line (a bad context, a Dockerfile that
    does not parse, an unknown target) become the HTTP answer; later ones
    are written into the stream (``errorDetail``, with ``code`` for a failed
    RUN) and fail the job.
    """
    from engine.builder import context as contexts

    daemon = job.engine.daemon
    options = options_from_env(job.env)
    tags = _tag_refs(options.tags)
    _check_platform(options.platform)
    base = builder_dir(daemon)
    os.makedirs(base, mode=0o700, exist_ok=True)
    workdir = os.path.join(base, secrets.token_hex(16))
    os.makedirs(workdir, mode=0o700)
    held: list[bytes] = []
    started = [False]

    def emit(data: bytes) -> None:
        if options.suppress_output:
            held.append(data)
        else:
            started[0] = True
            job.stdout.write(data)

    out = Output(emit)
    layer_log = _LayerLog(os.path.join(workdir, "layers"))
    source = None
    try:
        try:
            source, dockerfile = contexts.load(
                job.stdin,
                options.remote,
                options.dockerfile,
                workdir,
                progress=lambda text: out.stdout(text + "\n"),
            )
            builder = Builder(daemon, options, out, workdir, lambda: bool(job.stdout.closed), layer_log)
            image_id = builder.build(source, dockerfile)
            if not options.suppress_output:
                out.stdout(f"Successfully built {short(image_id)}\n")
            image = daemon.graph.images.get(image_id)
            for ref in tags:
                daemon.graph.set_tag(ref, image)
                if not options.suppress_output:
                    out.stdout(f"Successfully tagged {ref.familiar()}\n")
        except EngineError as exc:
            if source is None:
                _drain(job.stdin)
            _stream_error(job, out, exc, held, started[0], options.suppress_output)
            raise
        if options.suppress_output:
            job.write_json({"stream": image_id + "\n"})
    finally:
        if source is not None:
            source.close()
        for layer in list(layer_log.layers):
            try:
                daemon.graphdriver.remove(layer)
            except EngineError:
                LOG.exception("removing build layer %s", layer[:12])
        safe_rmtree(workdir)
        daemon.graph.gc()


def _drain(stdin: Any) -> None:
    """Read what is left of a refused context, so that the client, still sending, reads the answer."""
    try:
        while stdin.read(1 << 20):
            pass
    except (OSError, ValueError):
        pass


def _stream_error(job: Any, out: Output, exc: EngineError, held: list[bytes], started: bool, quiet: bool) -> None:
    """Write ``exc`` as the stream's last line (moby ``FormatError``) once the stream has begun."""
    if quiet:
        for data in held:
            job.stdout.write(data)
        started = started or bool(held)
    if not started and not isinstance(exc, StepError):
        return
    detail: dict[str, Any] = {"message": str(exc)}
    code = getattr(exc, "code", None)
    if code is not None:
        detail = {"code": code, "message": str(exc)}
    job.stdout.write((imaging.go_json({"errorDetail": detail, "error": str(exc)}) + "\n").encode())
    exc.reported = True  # type: ignore[attr-defined]


# commit
def commit_config(config: dict | None, container_config: dict, changes: list[str]) -> dict:
    """The new image's config: the body's Config (or the container's), the changes, then what the container
    had that the result lacks (moby ``BuildFromConfig`` + ``merge``)."""
    from engine.builder.buildargs import BuildArgs
    from engine.builder.builder import Output as _Output
    from engine.builder.builder import StageState

    new = imaging.copy_config(config if config is not None else container_config)
    if changes:
        instructions = parse_changes(changes, COMMIT_CHANGES)
        runner = _ConfigOnly(_Output(lambda data: None))
        state = StageState(new, BuildArgs())
        state.image_id = container_config.get("Image") or ""
        for inst in instructions:
            env = list(state.run_config.get("Env") or [])
            try:
                getattr(runner, "_do_" + inst.name)(state, inst, env, {}, [])
            except EngineError as exc:
                raise InvalidParameter(str(exc)) from exc
        new = state.run_config
    return merge(new, container_config)


class _ConfigOnly(Builder):
    """The builder's instruction rules applied to a config alone (commit's ``changes``): no images made."""

    def __init__(self, out: Output) -> None:  # noqa: D107 - no daemon: nothing is stored
        from engine.builder.shell import Lexer

        self.out = out
        self.lexer = Lexer()
        self.options = BuildOptions()

    def _commit_meta(self, state: Any, comment: str, string_form: bool = False) -> None:
        return None

    def _do_workdir(self, state: Any, inst: Any, envs: list[str], *_: Any) -> None:
        import posixpath

        path = self._expand(inst.args[0], envs)
        current = state.run_config.get("WorkingDir") or ""
        state.run_config["WorkingDir"] = posixpath.normpath(
            path if path.startswith("/") else posixpath.join("/", current, path)
        )


def merge(user: dict, image: dict) -> dict:
    """moby's ``merge(userConf, imageConf)`` as commit uses it: the user's values first, the image's fill in."""
    out = dict(user)
    if not out.get("User"):
        out["User"] = image.get("User") or ""
    if not out.get("ExposedPorts"):
        out["ExposedPorts"] = image.get("ExposedPorts")
    elif image.get("ExposedPorts"):
        out["ExposedPorts"] = {**image["ExposedPorts"], **out["ExposedPorts"]}
    if not out.get("Env"):
        out["Env"] = image.get("Env")
    else:
        keys = {e.split("=", 1)[0] for e in out["Env"]}
        out["Env"] = list(out["Env"]) + [e for e in image.get("Env") or [] if e.split("=", 1)[0] not in keys]
    labels = dict(out.get("Labels") or {})
    for key, value in (image.get("Labels") or {}).items():
        labels.setdefault(key, value)
    out["Labels"] = labels
    if not out.get("Entrypoint"):
        if not out.get("Cmd"):
            out["Cmd"] = image.get("Cmd")
        if out.get("Entrypoint") is None:
            out["Entrypoint"] = image.get("Entrypoint")
    if not out.get("Healthcheck"):
        out["Healthcheck"] = image.get("Healthcheck")
    elif image.get("Healthcheck"):
        merged = dict(out["Healthcheck"])
        if not merged.get("Test"):
            merged["Test"] = image["Healthcheck"].get("Test")
        for key in ("Interval", "Timeout", "StartPeriod", "Retries"):
            if not merged.get(key):
                merged[key] = image["Healthcheck"].get(key, 0)
        out["Healthcheck"] = merged
    if not out.get("WorkingDir"):
        out["WorkingDir"] = image.get("WorkingDir") or ""
    if not out.get("Volumes"):
        out["Volumes"] = image.get("Volumes")
    else:
        out["Volumes"] = {**(image.get("Volumes") or {}), **out["Volumes"]}
    if not out.get("StopSignal"):
        out["StopSignal"] = image.get("StopSignal") or ""
    return out


def job_commit(job: Any) -> None:
    """``commit CONTAINER`` with env Repo, Tag, Author, Comment, Pause, Changes, Config; writes ``{"Id": ...}``."""
    daemon = job.engine.daemon
    c = daemon.containers.get(job.args[0] if job.args else "")
    repo, tag = job.env.get("Repo"), job.env.get("Tag")
    ref = None
    if repo:
        ref = refs.parse_normalized(repo) if not tag else refs.parse(repo).with_tag(refs.validate_tag(tag))
        if not tag and ref.tag is None and ref.digest is None:
            ref = ref.with_tag(refs.DEFAULT_TAG)
    elif tag:
        raise InvalidParameter("tag requires a repository: repo is empty")
    body = job.env.get_json("Config", None)
    if body is not None and not isinstance(body, dict):
        raise InvalidParameter("invalid JSON: the body must be a container config object")
    image = commit_container(
        daemon,
        c,
        author=job.env.get("Author"),
        comment=job.env.get("Comment"),
        pause=job.env.get_bool("Pause", True),
        changes=job.env.get_list("Changes"),
        config=body or None,
    )
    image_ref = ""
    if ref is not None:
        daemon.graph.set_tag(ref, image)
        image_ref = ref.familiar()
    daemon.container_event(c, "commit", {"comment": job.env.get("Comment"), "imageID": image.id, "imageRef": image_ref})
    job.write_json({"Id": image.id})


def commit_container(
    daemon: Any,
    c: Any,
    author: str = "",
    comment: str = "",
    pause: bool = True,
    changes: list[str] | None = None,
    config: dict | None = None,
) -> Any:
    """A new image from ``c``'s changes (moby ``CreateImageFromContainer``); the image.

    A running container is frozen while its layer is read (``pause``), by
    :meth:`~engine.daemon.lifecycle.LifeCycle.frozen`: the pause is not
    recorded, so a daemon killed inside leaves a container that the restore
    thaws (dockerd records it, and leaves it paused for good).
    """
    with c.lock:
        if c.state.dead:
            raise Conflict(f"You cannot commit container {c.id} which is Dead")
        if c.state.removal_in_progress or c.removed:
            raise Conflict(f"You cannot commit container {c.id} which is being removed")
    new_config = commit_config(config, c.config, list(changes or []))
    graph = daemon.graph
    with daemon.lifecycle.frozen(c) if pause else contextlib.nullcontext():
        parent = graph.images.get(c.image_id) if c.image_id and graph.images.exists(c.image_id) else None
        with graph.pinned() as pin:
            diff_id = imaging.register_diff(graph, lambda: daemon.graphdriver.diff(c.id, c.init_layer), parent, pin)
            raw = imaging.child_config(
                parent,
                new_config,
                c.config,
                diff_id if diff_id is not None else imaging.EMPTY_LAYER,
                container_id=c.id,
                author=author,
                comment=comment,
            )
            image = imaging.create_child(graph, raw, parent)
    return image


# build cache
def job_build_prune(job: Any) -> None:
    """``POST /build/prune``: the classic builder keeps no cache apart from images, so nothing is
    reclaimed here (``docker image prune`` removes dangling build steps), as dockerd 20.10 answers."""
    filters = job.env.get_json("Filters", {}) or {}
    for key in filters:
        if key not in ("until", "id", "parent", "type", "description", "inuse", "shared", "private"):
            raise InvalidParameter(f"Invalid filter '{key}'")
    daemon = job.engine.daemon
    daemon.events.log("builder", "prune", "", {"reclaimed": "0"})
    job.write_json({"CachesDeleted": None, "SpaceReclaimed": 0})


@hookimpl
def engine_register_jobs(engine: Any, daemon: Any) -> None:
    if daemon is None:
        return
    engine.register("build", job_build)
    engine.register("commit", job_commit)
    engine.register("build_prune", job_build_prune)


@hookimpl
def engine_daemon_started(daemon: Any) -> None:
    cleanup_leftovers(daemon)


__all__ = ["commit_config", "commit_container", "job_build", "job_build_prune", "job_commit", "merge"]
