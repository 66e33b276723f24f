"""The classic builder: each Dockerfile instruction a step, each step an image (moby ``builder/dockerfile``).

:class:`Builder` runs a parsed Dockerfile stage by stage. A step that only
changes the image's config (ENV, LABEL, CMD, ...) makes a child image with
an empty layer; RUN creates a container from the current image through the
daemon's life cycle (create, attach, start, wait), which the exec driver
runs, and commits its changes; COPY, ADD and WORKDIR write into a fresh
layer on top of the current image and commit it. Before each step the
build cache is probed (:mod:`engine.builder.cache`): a child of the
current image made by the same step is taken as it is (``---> Using
cache``).

The stream is dockerd 20.10's: ``Step N/M : ...``, `` ---> Running in``,
the container's output (stderr in red), ``Removing intermediate
container``, `` ---> <id>``, ``{"aux": {"ID": ...}}`` after each stage.
Steps that need no container (ENV, LABEL, ...) run none here, so they
print no ``Running in`` line (dockerd creates and removes an idle one).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import posixpath
import secrets
import signal
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from engine import archive
from engine import reference as refs
from engine.builder import images as imaging
from engine.builder.buildargs import BuildArgs
from engine.builder.cache import ImageCache
from engine.builder.context import BuildContext, forbidden, not_found
from engine.builder.parser import Dockerfile, Instruction, Stage, parse_line
from engine.builder.shell import Lexer, env_map
from engine.errors import EngineError, InvalidParameter, NoSuchImage, NotFound
from engine.sys import libc

if TYPE_CHECKING:
    from engine.graph.graph import Graph
    from engine.graph.images import Image

LOG = logging.getLogger(__name__)

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_IN_ROOT = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS


class StepError(EngineError):
    """A step failed; ``code`` is the exit code of a failed RUN (the stream's ``errorDetail.code``)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class BuildOptions:
    """What ``POST /build`` asks for (moby ``ImageBuildOptions``)."""

    tags: list[str] = field(default_factory=list)
    suppress_output: bool = False
    no_cache: bool = False
    remove: bool = True
    force_remove: bool = False
    pull: bool = False
    build_args: dict[str, str | None] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    target: str = ""
    cache_from: list[str] = field(default_factory=list)
    network_mode: str = ""
    shm_size: int = 0
    extra_hosts: list[str] = field(default_factory=list)
    memory: int = 0
    memory_swap: int = 0
    cpu_shares: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    cgroup_parent: str = ""
    ulimits: list[dict] = field(default_factory=list)
    platform: str = ""
    dockerfile: str = ""
    remote: str = ""
    #: ``X-Registry-Config``: registry host -> auth config (for pulls of bases).
    auth_configs: dict[str, dict] = field(default_factory=dict)

    def host_config(self) -> dict:
        """The HostConfig of a RUN step's container (moby ``hostConfigFromOptions``)."""
        hc: dict[str, Any] = {
            "NetworkMode": self.network_mode or "default",
            "ShmSize": self.shm_size,
            "ExtraHosts": list(self.extra_hosts) or None,
            "Memory": self.memory,
            "MemorySwap": self.memory_swap,
            "CpuShares": self.cpu_shares,
            "CpuPeriod": self.cpu_period,
            "CpuQuota": self.cpu_quota,
            "CpusetCpus": self.cpuset_cpus,
            "CpusetMems": self.cpuset_mems,
            "CgroupParent": self.cgroup_parent,
        }
        if self.ulimits:
            hc["Ulimits"] = self.ulimits
        return {k: v for k, v in hc.items() if v not in (None, "", 0) or k == "NetworkMode"}


class Output:
    """The build's JSON stream: ``stream`` lines, red stderr, ``aux``, and raw lines (pull progress).

    :param write: where the encoded lines go.
    """

    def __init__(self, write: Callable[[bytes], Any]) -> None:
        self._write = write
        self._lock = threading.Lock()

    def raw(self, data: bytes) -> None:
        with self._lock:
            self._write(data)

    def _json(self, doc: dict) -> None:
        self.raw((imaging.go_json(doc) + "\n").encode())

    def stdout(self, text: str) -> None:
        if text:
            self._json({"stream": text})

    def stderr(self, text: str) -> None:
        if text:
            self._json({"stream": "\x1b[91m" + text + "\x1b[0m"})

    def aux(self, doc: dict) -> None:
        self._json({"aux": doc})


@dataclass
class StageState:
    """moby's ``dispatchState``: the stage being built."""

    run_config: dict
    build_args: BuildArgs
    image_id: str = ""
    base: Image | None = None
    maintainer: str = ""
    cmd_set: bool = False
    stage_name: str = ""
    os: str = "linux"

    def update(self) -> None:
        self.run_config["Image"] = self.image_id


def short(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:12]


def go_quote_list(values: list[str] | None) -> str:
    """Go's ``%q`` of a string slice: ``["a" "b"]``."""
    return "[" + " ".join(json.dumps(v, ensure_ascii=False) for v in (values or [])) + "]"


def go_duration_string(nanos: int) -> str:
    """Go's ``time.Duration.String`` (``1m30s``, ``500ms``, ``0s``)."""
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    n = abs(nanos)
    if n < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if n >= size:
                return sign + f"{n / size:.9f}".rstrip("0").rstrip(".") + unit
    hours, rest = divmod(n, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds = f"{rest / 10**9:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds


def parse_ports(specs: list[str]) -> list[str]:
    """``80``, ``80/udp``, ``8000-8002/tcp`` as ``port/proto`` keys (moby ``nat.ParsePortSpecs``)."""
    out: list[str] = []
    for spec in specs:
        port, _, proto = spec.rpartition(":")[2].partition("/")
        proto = (proto or "tcp").lower()
        start, _, end = port.partition("-")
        if not start.isdigit() or (end and not end.isdigit()):
            raise InvalidParameter(f"Invalid containerPort: {port}")
        first, last = int(start), int(end or start)
        if last < first:
            raise InvalidParameter(f"Invalid range specified for the Port: {port}")
        out.extend(f"{p}/{proto}" for p in range(first, last + 1))
    return out


class _ChunkReader:
    """A file-like reader over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buf += chunk
        if n < 0:
            data, self._buf = self._buf, b""
        else:
            data, self._buf = self._buf[:n], self._buf[n:]
        return data


@dataclass
class CopySource:
    """One thing a COPY or ADD copies: a path in a source tree, its cache hash."""

    root: BuildContext
    path: str
    hash: str
    is_dir: bool = False
    decompress: bool = False
    name: str = ""
    mode: int | None = None


class Builder:
    """Runs one build on a daemon.

    :param daemon: the daemon (graph, graph driver, life cycle, engine).
    :param options: the request's options.
    :param out: the build's stream.
    :param workdir: the build's own directory (downloads, temporary files).
    :param cancelled: true once the client has gone away.
    """

    def __init__(
        self,
        daemon: Any,
        options: BuildOptions,
        out: Output,
        workdir: str,
        cancelled: Callable[[], bool] = lambda: False,
        record_layer: Callable[[str, bool], None] = lambda layer_id, added: None,
    ) -> None:
        self.daemon = daemon
        self.graph: Graph = daemon.graph
        self.driver = daemon.graphdriver
        self.options = options
        self.out = out
        self.workdir = workdir
        self.cancelled = cancelled
        self._record_layer = record_layer
        self.cache = ImageCache(self.graph, options.cache_from, options.no_cache)
        self._tmp_containers: list[Any] = []
        self._path_cache: dict[str, str] = {}
        self._sources: list[BuildContext] = []
        self._pin: Callable[[str], None] = lambda chain: None

    # the build
    def build(self, context: BuildContext | None, dockerfile: Dockerfile) -> str:
        """Run every stage (up to ``target``); the ID of the last image.

        :raises InvalidParameter: an unknown target (before any output).
        :raises StepError: a step failed (in the stream).
        """
        stages = list(dockerfile.stages)
        if self.options.target:
            names = [s.name for s in stages]
            target = self.options.target.lower()
            if target not in names:
                raise InvalidParameter(f"failed to reach build target {self.options.target} in Dockerfile")
            stages = stages[: names.index(target) + 1]
        if self.options.labels and stages:
            for key in sorted(self.options.labels):
                label = Instruction("label", f"LABEL {key}={self.options.labels[key]}", [], data={})
                label.data["pairs"] = [(key, self.options.labels[key])]
                label.data["no_expand"] = True
                stages[-1].commands.append(label)
        lexer = Lexer(dockerfile.escape)
        self.lexer = lexer
        self.context = context
        args = BuildArgs(self.options.build_args)
        total = len(dockerfile.meta_args) + len(stages) + sum(len(s.commands) for s in stages)
        step = 1
        with self.graph.pinned() as pin:
            self._pin = pin
            try:
                for meta in dockerfile.meta_args:
                    step = self._print_step(step, total, meta.code)
                    self._meta_arg(meta, args)
                results: dict[str, dict] = {}
                ordered: list[dict] = []
                state: StageState | None = None
                for stage in stages:
                    if stage.name and stage.name in results:
                        raise StepError(f"{stage.name} stage name already used")
                    state = StageState({}, args.clone())
                    state.build_args.reset_allowed()
                    step = self._print_step(step, total, stage.code)
                    self._begin_stage(state, stage, results, ordered)
                    state.update()
                    self.out.stdout(f" ---> {short(state.image_id)}\n")
                    for inst in stage.commands:
                        if self.cancelled():
                            self.out.stdout("Build cancelled\n")
                            raise StepError("Build cancelled")
                        step = self._print_step(step, total, inst.code)
                        self._dispatch(state, inst, results, ordered)
                        state.update()
                        self.out.stdout(f" ---> {short(state.image_id)}\n")
                    if state.image_id:
                        self.out.aux({"ID": state.image_id})
                    args.merge_referenced(state.build_args)
                    config = imaging.copy_config(state.run_config)
                    if stage.name:
                        results[stage.name] = config
                    ordered.append(config)
            finally:
                if self.options.force_remove:
                    self._remove_containers()
                for source in self._sources:
                    source.close()
        unused = args.unused()
        if unused:
            self.out.stdout(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed\n")
        if state is None or not state.image_id:
            raise StepError("No image was generated. Is your Dockerfile empty?")
        return state.image_id

    def _print_step(self, step: int, total: int, code: str) -> int:
        self.out.stdout(f"Step {step}/{total} : {code}")
        self.out.stdout("\n")
        return step + 1

    def _meta_arg(self, inst: Instruction, args: BuildArgs) -> None:
        env = [f"{k}={v}" for k, v in args.all_allowed().items()]
        for key, value in inst.data["args"]:
            key = self.lexer.word(key, env)
            value = self.lexer.word(value, env) if value is not None else None
            args.add_arg(key, value)
            args.add_meta(key, value)

    # stages
    def _begin_stage(self, state: StageState, stage: Stage, results: dict[str, dict], ordered: list[dict]) -> None:
        self.cache.reset()
        meta_env = [f"{k}={v}" for k, v in state.build_args.all_meta().items()]
        if stage.platform:
            self._check_platform(self.lexer.word(stage.platform, meta_env))
        name = self.lexer.word(stage.base, meta_env)
        if not name:
            raise StepError(f"base name ({stage.base}) should not be blank")
        state.stage_name = stage.name
        image: Image | None
        if name.lower() in results:
            image = (
                self.graph.lookup(results[name.lower()].get("Image") or "")
                if results[name.lower()].get("Image")
                else None
            )
        elif name == "scratch":
            image = None
        else:
            image = self._image(name, local_only=False, force_pull=self.options.pull)
        state.base = image
        state.image_id = image.id if image is not None else ""
        if image is not None:
            state.os = image.config.get("os") or "linux"
        state.run_config = imaging.copy_config(image.container_config) if image is not None else {}
        env = list(state.run_config.get("Env") or [])
        if not any(e.split("=", 1)[0] == "PATH" for e in env):
            env.append(f"PATH={DEFAULT_PATH}")
        state.run_config["Env"] = env
        state.run_config["OpenStdin"] = False
        state.run_config["StdinOnce"] = False
        triggers = list(state.run_config.get("OnBuild") or [])
        if triggers:
            state.run_config["OnBuild"] = None
            self.out.stdout(f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}\n")
            for trigger in triggers:
                state.update()
                self._dispatch(state, parse_line(trigger), results, ordered)

    def _check_platform(self, platform: str) -> None:
        parts = platform.lower().split("/")
        if parts[0] not in ("linux", ""):
            raise StepError(f'"{platform}": unknown operating system or architecture: invalid argument')

    def _image(self, name: str, local_only: bool, force_pull: bool = False) -> Image:
        """The image ``name``: local, else pulled (moby's ``PullOptionPreferLocal``)."""
        if not force_pull:
            try:
                return self.graph.lookup(name)
            except NoSuchImage:
                if local_only:
                    raise
        self._pull(name)
        return self.graph.lookup(name)

    def _pull(self, name: str) -> None:
        ref = refs.parse_normalized(name)
        auth = self.options.auth_configs.get(ref.domain) or {}
        if not auth:
            for key, value in self.options.auth_configs.items():
                from engine.reference import host_of

                if host_of(key) == ref.domain:
                    auth = value
                    break
        header = base64.urlsafe_b64encode(json.dumps(auth).encode()).decode() if auth else ""
        env = {"Tag": ref.tag or "", "AuthConfig": header, "Platform": self.options.platform}
        job = self.daemon.engine.job("pull", ref.familiar_name, env=env)
        job.stdout.add_callback(self.out.raw)
        job.run()

    # dispatch
    def _dispatch(self, state: StageState, inst: Instruction, results: dict[str, dict], ordered: list[dict]) -> None:
        env = list(state.run_config.get("Env") or [])
        envs = env + state.build_args.filter_allowed(env)
        handler = getattr(self, "_do_" + inst.name)
        try:
            handler(state, inst, envs, results, ordered)
        except BaseException:
            # moby's classic builder keeps a failed RUN's container unless forcerm; here rm (the
            # CLI's default) removes it too, so a failed build leaves nothing behind (issue 12).
            # `--rm=false` keeps every container, a failed one included, for a look.
            if self.options.force_remove or self.options.remove:
                self._remove_containers()
            raise
        if self.options.force_remove or self.options.remove:
            self._remove_containers()

    def _expand(self, text: str, envs: list[str]) -> str:
        return self.lexer.word(text, envs)

    def _commit_meta(self, state: StageState, comment: str, string_form: bool = False) -> None:
        """A step that changes only the config: a child image with an empty layer."""
        shell = list(state.run_config.get("Shell") or DEFAULT_SHELL)
        cmd = [*shell, "#(nop) " + comment] if string_form else [*shell, "#(nop) ", comment]
        probe = imaging.copy_config(state.run_config)
        probe["Cmd"] = cmd
        if self._probe(state, probe):
            return
        self._new_image(state, probe, None)

    def _probe(self, state: StageState, config: dict) -> bool:
        cached = self.cache.probe(state.image_id, config)
        if not cached:
            return False
        self.out.stdout(" ---> Using cache\n")
        state.image_id = cached
        return True

    def _new_image(
        self, state: StageState, container_config: dict, diff_id: str | None, container_id: str = ""
    ) -> None:
        parent = self.graph.images.get(state.image_id) if state.image_id else None
        raw = imaging.child_config(
            parent,
            imaging.copy_config(state.run_config),
            container_config,
            diff_id,
            container_id=container_id,
            author=state.maintainer,
        )
        image = imaging.create_child(self.graph, raw, parent)
        state.image_id = image.id

    # the instructions
    def _do_env(self, state: StageState, inst: Instruction, envs: list[str], *_: Any) -> None:
        env = list(state.run_config.get("Env") or [])
        message = "ENV"
        for key, value in inst.data["pairs"]:
            key, value = self._expand(key, envs), self._expand(value, envs)
            item = f"{key}={value}"
            message += " " + item
            for i, existing in enumerate(env):
                if existing.split("=", 1)[0] == key:
                    env[i] = item
                    break
            else:
                env.append(item)
        state.run_config["Env"] = env
        self._commit_meta(state, message)

    def _do_maintainer(self, state: StageState, inst: Instruction, *_: Any) -> None:
        state.maintainer = inst.args[0]
        self._commit_meta(state, "MAINTAINER " + inst.args[0])

    def _do_label(self, state: StageState, inst: Instruction, envs: list[str], *_: Any) -> None:
        labels = dict(state.run_config.get("Labels") or {})
        message = "LABEL"
        for key, value in inst.data["pairs"]:
            if not inst.data.get("no_expand"):
                key, value = self._expand(key, envs), self._expand(value, envs)
            labels[key] = value
            message += f" {key}={value}"
        state.run_config["Labels"] = labels
        self._commit_meta(state, message)

    def _do_onbuild(self, state: StageState, inst: Instruction, *_: Any) -> None:
        expression = inst.data["expression"]
        state.run_config["OnBuild"] = list(state.run_config.get("OnBuild") or []) + [expression]
        self._commit_meta(state, "ONBUILD " + expression)

    def _do_cmd(self, state: StageState, inst: Instruction, *_: Any) -> None:
        cmd = self._command_line(state, inst)
        state.run_config["Cmd"] = cmd
        self._commit_meta(state, f"CMD {go_quote_list(cmd)}")
        if inst.args and inst.args != [""]:
            state.cmd_set = True

    def _do_entrypoint(self, state: StageState, inst: Instruction, *_: Any) -> None:
        entrypoint = self._command_line(state, inst, empty_as_none=True)
        state.run_config["Entrypoint"] = entrypoint
        if not state.cmd_set:
            state.run_config["Cmd"] = None
        self._commit_meta(state, f"ENTRYPOINT {go_quote_list(entrypoint)}")

    def _do_healthcheck(self, state: StageState, inst: Instruction, *_: Any) -> None:
        old = state.run_config.get("Healthcheck") or {}
        if old.get("Test") and old["Test"][0] != "NONE":
            self.out.stdout(f"Note: overriding previous HEALTHCHECK: [{' '.join(old['Test'])}]\n")
        health = dict(inst.data["health"])
        state.run_config["Healthcheck"] = health
        retries = health.get("Retries", 0)
        text = (
            f"&{{{go_quote_list(health.get('Test'))} "
            f'"{go_duration_string(health.get("Interval", 0))}" "{go_duration_string(health.get("Timeout", 0))}" '
            f'"{go_duration_string(health.get("StartPeriod", 0))}" {_go_char(retries)}}}'
        )
        self._commit_meta(state, f"HEALTHCHECK {text}")

    def _do_expose(self, state: StageState, inst: Instruction, envs: list[str], *_: Any) -> None:
        ports: list[str] = []
        for spec in inst.args:
            ports.extend(self.lexer.words(spec, envs))
        exposed = dict(state.run_config.get("ExposedPorts") or {})
        for key in parse_ports(ports):
            exposed[key] = {}
        state.run_config["ExposedPorts"] = exposed
        self._commit_meta(state, "EXPOSE " + " ".join(ports))

    def _do_user(self, state: StageState, inst: Instruction, envs: list[str], *_: Any) -> None:
        user = self._expand(inst.args[0], envs)
        state.run_config["User"] = user
        self._commit_meta(state, f"USER {user}")

    def _do_volume(self, state: StageState, inst: Instruction, envs: list[str], *_: Any) -> None:
        volumes = dict(state.run_config.get("Volumes") or {})
        paths = [self._expand(v, envs) for v in inst.args]
        for path in paths:
            if not path:
                raise StepError("VOLUME specified can not be an empty string")
            volumes[path] = {}
        state.run_config["Volumes"] = volumes
        self._commit_meta(state, f"VOLUME [{' '.join(paths)}]")

    def _do_stopsignal(self, state: StageState, inst: Instruction, envs: list[str], *_: Any) -> None:
        sig = self._expand(inst.args[0], envs)
        _check_signal(sig)
        state.run_config["StopSignal"] = sig
        self._commit_meta(state, f"STOPSIGNAL {sig}")

    def _do_arg(self, state: StageState, inst: Instruction, envs: list[str], *_: Any) -> None:
        words = []
        for key, value in inst.data["args"]:
            key = self._expand(key, envs)
            value = self._expand(value, envs) if value is not None else None
            words.append(key if value is None else f"{key}={value}")
            state.build_args.add_arg(key, value)
        self._commit_meta(state, "ARG " + " ".join(words))

    def _do_shell(self, state: StageState, inst: Instruction, *_: Any) -> None:
        state.run_config["Shell"] = list(inst.args)
        self._commit_meta(state, f"SHELL [{' '.join(inst.args)}]")

    def _command_line(self, state: StageState, inst: Instruction, empty_as_none: bool = False) -> list[str] | None:
        args = list(inst.args)
        if not inst.json:
            text = args[0] if args else ""
            if empty_as_none and not text:
                return None
            return [*(state.run_config.get("Shell") or DEFAULT_SHELL), text]
        if empty_as_none and not args:
            return None
        return args

    # RUN
    def _do_run(self, state: StageState, inst: Instruction, *_: Any) -> None:
        if inst.data.get("flags_used"):
            raise StepError(
                f"the --{inst.data['flags_used'][0]} option requires BuildKit. Refer to "
                "https://docs.docker.com/go/buildkit/ to learn how to build images with BuildKit enabled"
            )
        cmd = self._command_line(state, inst) or []
        env = list(state.run_config.get("Env") or [])
        build_env = state.build_args.filter_allowed(env)
        save_cmd = list(cmd)
        if build_env:
            kept = sorted(e for e in build_env if state.build_args.referenced_or_not_builtin(e.split("=", 1)[0]))
            save_cmd = [f"|{len(kept)}", *kept, *cmd]
        probe = imaging.copy_config(state.run_config)
        probe["Cmd"] = save_cmd
        if save_cmd:
            probe["Entrypoint"] = None
        if self._probe(state, probe):
            return
        run_config = imaging.copy_config(state.run_config)
        run_config["Cmd"] = cmd
        run_config["Env"] = env + build_env
        run_config["Entrypoint"] = []
        run_config["Healthcheck"] = {"Test": ["NONE"]}
        if not state.image_id:
            raise StepError(
                f'failed to create shim task: OCI runtime create failed: exec: "{cmd[0] if cmd else ""}": '
                f"stat {cmd[0] if cmd else ''}: no such file or directory: unknown"
            )
        c = self._create(run_config)
        code = self._run(c)
        if code != 0:
            raise StepError(f"The command '{' '.join(cmd)}' returned a non-zero code: {code}", code=code)
        parent = self.graph.images.get(state.image_id)
        diff_id = imaging.register_diff(self.graph, lambda: self.driver.diff(c.id, c.init_layer), parent, self._pin)
        self._new_image(state, probe, diff_id, container_id=c.id)

    def _create(self, config: dict) -> Any:
        lifecycle = self.daemon.lifecycle
        c, warnings = lifecycle.create(config, self.options.host_config())
        self._tmp_containers.append(c)
        for warning in warnings:
            self.out.stdout(f" ---> [Warning] {warning}\n")
        self.out.stdout(f" ---> Running in {c.short_id}\n")
        return c

    def _run(self, c: Any) -> int:
        """Start ``c`` attached, stream its output, wait; its exit code."""
        from engine.daemon.streams import PendingAttach

        lifecycle = self.daemon.lifecycle
        pending = PendingAttach(False, True, True)
        lifecycle.attach_at_start(c, pending)
        try:
            lifecycle.start(c)
        except EngineError:
            lifecycle.cancel_attach(c, pending)
            raise
        pending.ready.wait(30)
        conn = pending.connection
        if conn is not None:
            pump = threading.Thread(target=self._pump, args=(conn,), name="build-output", daemon=True)
            pump.start()
        else:
            pump = None
        while not lifecycle.wait(c, "not-running", timeout=1.0):
            if self.cancelled():
                try:
                    lifecycle.kill(c, signal.SIGKILL)
                except EngineError:
                    pass
                lifecycle.wait(c, "not-running", timeout=30)
                self._remove_containers()
                self.out.stdout("Build cancelled\n")
                raise StepError("Build cancelled")
        if pump is not None:
            pump.join(30)
        with c.lock:
            code, error = c.state.exit_code, c.state.error
        if code and error and not c.state.started_at:
            raise StepError(error)
        return code

    def _pump(self, conn: Any) -> None:
        try:
            for stream, data in conn.frames():
                text = data.decode("utf-8", "replace")
                if stream == 1:
                    self.out.stdout(text)
                elif stream == 2:
                    self.out.stderr(text)
                else:
                    break
        except OSError as exc:
            LOG.debug("build output ended: %s", exc)
        finally:
            conn.close()

    def _remove_containers(self) -> None:
        """Remove the step containers made so far (moby ``containerManager.RemoveAll``)."""
        lifecycle = self.daemon.lifecycle
        for c in list(self._tmp_containers):
            try:
                lifecycle.remove(c, force=True, volumes=True)
            except EngineError as exc:
                self.out.stdout(f"Error removing intermediate container {c.short_id}: {exc}\n")
                return
            self._tmp_containers.remove(c)
            self.out.stdout(f"Removing intermediate container {c.short_id}\n")

    # layers written directly (COPY, ADD, WORKDIR)
    def _rw_layer(self, state: StageState) -> tuple[str, str]:
        """A new driver layer on top of the current image; its ID and its mounted path."""
        parent = self.graph.images.get(state.image_id) if state.image_id else None
        top = parent.top_layer.split(":", 1)[1] if parent is not None and parent.top_layer else None
        layer_id = secrets.token_hex(32)
        self._record_layer(layer_id, True)
        self.driver.create(layer_id, top)
        try:
            path = self.driver.get(layer_id)
        except BaseException:
            self.driver.remove(layer_id)
            self._record_layer(layer_id, False)
            raise
        return layer_id, path

    def _drop_layer(self, layer_id: str) -> None:
        try:
            self.driver.put(layer_id)
        finally:
            try:
                self.driver.remove(layer_id)
            finally:
                self._record_layer(layer_id, False)

    def _commit_layer(self, state: StageState, layer_id: str, probe: dict) -> None:
        parent = self.graph.images.get(state.image_id) if state.image_id else None
        top = parent.top_layer.split(":", 1)[1] if parent is not None and parent.top_layer else None
        diff_id = imaging.register_diff(self.graph, lambda: self.driver.diff(layer_id, top), parent, self._pin)
        self._new_image(state, probe, diff_id)

    def _do_workdir(self, state: StageState, inst: Instruction, envs: list[str], *_: Any) -> None:
        path = self._expand(inst.args[0], envs)
        current = state.run_config.get("WorkingDir") or ""
        workdir = posixpath.normpath(path if path.startswith("/") else posixpath.join("/", current, path))
        state.run_config["WorkingDir"] = workdir
        shell = list(state.run_config.get("Shell") or DEFAULT_SHELL)
        probe = imaging.copy_config(state.run_config)
        probe["Cmd"] = [*shell, "#(nop) WORKDIR " + workdir]
        if self._probe(state, probe):
            return
        layer_id, root = self._rw_layer(state)
        try:
            # dockerd 20.10 makes a missing WORKDIR owned by root, whatever USER says.
            _mkdir_in_root(root, workdir)
            self._commit_layer(state, layer_id, probe)
        finally:
            self._drop_layer(layer_id)

    def _do_copy(self, state: StageState, inst: Instruction, envs: list[str], results: dict, ordered: list) -> None:
        self._copy(state, inst, envs, results, ordered, "COPY")

    def _do_add(self, state: StageState, inst: Instruction, envs: list[str], results: dict, ordered: list) -> None:
        self._copy(state, inst, envs, results, ordered, "ADD")

    def _copy(
        self, state: StageState, inst: Instruction, envs: list[str], results: dict, ordered: list, cmd: str
    ) -> None:
        if inst.flags.get("chmod"):
            raise StepError(
                "the --chmod option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to learn how "
                "to build images with BuildKit enabled"
            )
        chown = self._expand(inst.flags.get("chown", ""), envs)
        args = [self._expand(a, envs) for a in inst.args]
        sources, dest = args[:-1], args[-1]
        source_root = self.context
        from_image = None
        if cmd == "COPY" and inst.flags.get("from"):
            from_image = self._from_image(inst.flags["from"], results, ordered)
            source_root = self._image_root(from_image)
        infos: list[CopySource] = []
        try:
            for src in sources:
                infos.extend(self._copy_infos(src, dest, source_root, cmd, from_image))
        except EngineError as exc:
            raise StepError(f"{cmd} failed: {exc}") from exc
        if not infos:
            raise StepError("no source files were specified")
        if len(infos) > 1 and not dest.endswith("/"):
            raise StepError(
                f"When using {cmd} with more than one source file, the destination must be a directory and end with a /"
            )
        src_hash = infos[0].hash if len(infos) == 1 else _hash_list("multi", [i.hash for i in infos])
        chown_comment = f"--chown={chown}" if chown else ""
        shell = list(state.run_config.get("Shell") or DEFAULT_SHELL)
        probe = imaging.copy_config(state.run_config)
        probe["Cmd"] = [*shell, f"#(nop) {cmd} {chown_comment}{src_hash} in {dest} "]
        if self._probe(state, probe):
            return
        workdir = state.run_config.get("WorkingDir") or ""
        target = (
            dest if dest.startswith("/") else posixpath.join("/", workdir, dest) + ("/" if dest.endswith("/") else "")
        )
        layer_id, root = self._rw_layer(state)
        try:
            owner: tuple[int, int] | None = (0, 0)
            if chown:
                try:
                    owner = _parse_chown(root, chown)
                except EngineError as exc:
                    raise StepError(f"unable to convert uid/gid chown string to host mapping: {exc}") from exc
            elif from_image is not None:
                owner = None  # --from keeps the owners
            for info in infos:
                self._copy_one(root, info, target, owner, cmd == "ADD")
            self._commit_layer(state, layer_id, probe)
        finally:
            self._drop_layer(layer_id)

    def _from_image(self, name: str, results: dict, ordered: list) -> Image:
        try:
            config = results.get(name.lower())
            if config is None and name.isdigit():
                index = int(name)
                if index == len(ordered):
                    raise InvalidParameter("refers to current build stage")
                if index < 0 or index > len(ordered):
                    raise InvalidParameter("index out of bounds")
                config = ordered[index]
            if config is not None:
                return self.graph.lookup(config.get("Image") or "")
            return self._image(name, local_only=False)
        except EngineError as exc:
            raise StepError(f"invalid from flag value {name}: {exc}") from exc

    def _image_root(self, image: Image) -> BuildContext:
        """The files of ``image`` as a copy source (its top layer, mounted read-only in spirit)."""
        if image.top_layer is None:
            path = os.path.join(self.workdir, "empty-" + image.hex[:12])
            os.makedirs(path, exist_ok=True)
            source = BuildContext(path)
        else:
            layer = image.top_layer.split(":", 1)[1]
            path = self.driver.get(layer)
            source = _LayerSource(path, lambda: self.driver.put(layer))
        source.key = image.id  # type: ignore[attr-defined]
        self._sources.append(source)
        return source

    def _copy_infos(
        self, src: str, dest: str, root: BuildContext | None, cmd: str, from_image: Image | None
    ) -> list[CopySource]:
        if src.startswith(("http://", "https://")) and cmd == "ADD":
            return [self._download(src, dest)]
        if root is None:
            raise StepError("missing build context")
        path = src.lstrip("/")
        path = path[2:] if path.startswith("./") else path
        if _has_wildcards(path):
            import fnmatch

            found = []
            for rel in root.walk("."):
                if fnmatch.fnmatchcase(rel, path) and _segments_match(path, rel):
                    found.extend(self._copy_infos(rel, dest, root, cmd, from_image))
            return found
        cache_key = f"{getattr(root, 'key', '')}:{path}"
        try:
            st = root.stat(path or ".")
        except InvalidParameter:
            raise forbidden(src) from None
        except (FileNotFoundError, NotADirectoryError):
            if from_image is None:
                raise not_found(path) from None
            raise NotFound(f"stat {path}: file does not exist") from None
        import stat as stat_mod

        if stat_mod.S_ISDIR(st.st_mode):
            digest = self._path_cache.get(cache_key)
            if digest is None:
                digest = _hash_list("dir", sorted(root.hash(p) for p in root.walk(path or ".")))
                self._path_cache[cache_key] = digest
            return [CopySource(root, path or ".", digest, is_dir=True)]
        return [CopySource(root, path, "file:" + root.hash(path), decompress=cmd == "ADD" and from_image is None)]

    def _download(self, url: str, dest: str) -> CopySource:
        import email.utils
        import hashlib
        import urllib.parse

        import requests

        name = posixpath.basename(urllib.parse.urlsplit(url).path)
        if not name and dest.endswith("/"):
            raise StepError(f"cannot determine filename for source {url}")
        name = name or "__unnamed__"
        folder = os.path.join(self.workdir, "download-" + secrets.token_hex(6))
        os.makedirs(folder)
        target = os.path.join(folder, name)
        try:
            resp = requests.get(url, stream=True, timeout=60)
        except requests.RequestException as exc:
            raise StepError(f"ADD failed: {exc}") from None
        with resp:
            if resp.status_code >= 400:
                raise StepError(f"failed to GET {url} with status {resp.status_code} {resp.reason}")
            h = hashlib.sha256()
            with open(target, "wb") as fh:
                for chunk in resp.iter_content(1 << 20):
                    fh.write(chunk)
                    h.update(chunk)
            os.chmod(target, 0o600)
            modified = resp.headers.get("Last-Modified")
            if modified:
                try:
                    ts = email.utils.parsedate_to_datetime(modified).timestamp()
                    os.utime(target, (ts, ts))
                except (TypeError, ValueError):
                    pass
        source = BuildContext(folder)
        self._sources.append(source)
        return CopySource(source, name, "file:" + source.hash(name), name=name)

    def _copy_one(self, root: str, info: CopySource, target: str, owner: tuple[int, int] | None, add: bool) -> None:
        """Copy ``info`` to ``target`` (a path in the image) inside the layer mounted at ``root``."""
        src_root = info.root
        host_src = src_root.resolve(info.path) if info.path != "." else src_root.resolve(".")
        if info.is_dir:
            dest_dir = target
            entries = _tree_entries(host_src, "")
        else:
            if add and info.decompress and _is_archive(host_src):
                dest_dir = target
                with open(host_src, "rb") as fh:
                    _apply_in_root(root, dest_dir, self.graph.layers.to_host(fh), self.graph.layers.host_owner(0, 0))
                return
            if target.endswith("/") or _is_dir_in_root(root, target):
                dest_dir, base = target, posixpath.basename(info.path)
            else:
                dest_dir, base = posixpath.dirname(target.rstrip("/")) or "/", posixpath.basename(target.rstrip("/"))
            entries = [(base, host_src)]
        stream: Any = _ChunkReader(_tar_chunks(entries, owner))
        if owner is not None:
            # Owners of the container (0:0, --chown): the layer stores the host's (--userns-remap).
            # Without one (--from), the files keep the owners they have on the host already.
            stream = self.graph.layers.to_host(stream)
            owner = self.graph.layers.host_owner(*owner)
        _apply_in_root(root, dest_dir, stream, owner)


class _LayerSource(BuildContext):
    """An image layer used as a COPY --from source; released, not deleted, at the end."""

    def __init__(self, root: str, release: Callable[[], None]) -> None:
        super().__init__(root)
        self._release = release

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._release()


def _go_char(value: int) -> str:
    """Go's ``%q`` of an int: a quoted character."""
    if 32 <= value < 127 and chr(value) not in "'\\":
        return f"'{chr(value)}'"
    return f"'\\x{value:02x}'" if value < 256 else f"'\\u{value:04x}'"


def _check_signal(sig: str) -> None:
    name = sig.upper()
    if name.isdigit():
        if int(name) <= 0:
            raise InvalidParameter(f"Invalid signal: {sig}")
        return
    name = name.removeprefix("SIG")
    if name.startswith(("RTMIN", "RTMAX")):
        return
    if not hasattr(signal, "SIG" + name):
        raise InvalidParameter(f"Invalid signal: {sig}")


def _hash_list(prefix: str, items: list[str]) -> str:
    import hashlib

    return prefix + ":" + hashlib.sha256(",".join(items).encode()).hexdigest()


def _has_wildcards(path: str) -> bool:
    i = 0
    while i < len(path):
        if path[i] == "\\":
            i += 2
            continue
        if path[i] in "*?[":
            return True
        i += 1
    return False


def _segments_match(pattern: str, path: str) -> bool:
    """``filepath.Match`` does not let ``*`` cross ``/``."""
    return pattern.count("/") == path.count("/")


def _is_archive(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(512)
    if archive.detect_compression(head) != "none":
        return True
    return len(head) >= 262 and head[257:262] == b"ustar"


def _open_dir_in_root(root: str, path: str, create: bool, owner: tuple[int, int] | None = None) -> int:
    """An O_PATH fd of the directory ``path`` inside the tree ``root`` (symlinks resolved inside it)."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        rel = posixpath.normpath("/" + path).lstrip("/") or "."
        try:
            return libc.openat2(root_fd, rel, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, resolve=_IN_ROOT)
        except FileNotFoundError:
            if not create:
                raise
        _mkdir_in_root(root, "/" + rel, owner)
        return libc.openat2(root_fd, rel, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, resolve=_IN_ROOT)
    finally:
        os.close(root_fd)


def _mkdir_in_root(root: str, path: str, owner: tuple[int, int] | None = None) -> None:
    """``mkdir -p`` of ``path`` inside ``root``; new directories get mode 0755 and ``owner``."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = [p for p in posixpath.normpath("/" + path).split("/") if p]
        for i in range(len(parts)):
            prefix = "/".join(parts[: i + 1])
            try:
                fd = libc.openat2(root_fd, prefix, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, resolve=_IN_ROOT)
                os.close(fd)
                continue
            except FileNotFoundError:
                pass
            except NotADirectoryError:
                raise StepError(f"mkdir {path}: not a directory") from None
            parent = libc.openat2(
                root_fd, "/".join(parts[:i]) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, resolve=_IN_ROOT
            )
            try:
                os.mkdir(parts[i], 0o755, dir_fd=parent)
                os.chmod(parts[i], 0o755, dir_fd=parent, follow_symlinks=False)
                if owner is not None and owner != (0, 0):
                    os.chown(parts[i], owner[0], owner[1], dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(parent)
    finally:
        os.close(root_fd)


def _is_dir_in_root(root: str, path: str) -> bool:
    try:
        fd = _open_dir_in_root(root, path, create=False)
    except (FileNotFoundError, NotADirectoryError):
        return False
    os.close(fd)
    return True


def _apply_in_root(root: str, dest_dir: str, stream: IO[bytes] | Any, owner: tuple[int, int] | None = None) -> None:
    fd = _open_dir_in_root(root, dest_dir, create=True, owner=owner)
    try:
        archive.apply_layer(f"/proc/self/fd/{fd}", stream, whiteouts="keep", shown_as=dest_dir)
    finally:
        os.close(fd)


def _lookup_id(root: str, name: str, database: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            f = libc.openat2(fd, "etc/" + database, os.O_RDONLY | os.O_CLOEXEC, resolve=_IN_ROOT)
        finally:
            os.close(fd)
        with os.fdopen(f, "r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.rstrip("\n").split(":")
                if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
                    return int(fields[2])
    except OSError:
        pass
    kind = "uid" if database == "passwd" else "gid"
    what = "user" if database == "passwd" else "group"
    raise InvalidParameter(f"can't find {kind} for {what} {name}: no such {what}: {name}")


def _parse_chown(root: str, chown: str) -> tuple[int, int]:
    """``user[:group]`` (names from the image's /etc/passwd and /etc/group, or numbers)."""
    user, sep, group = chown.partition(":")
    uid = _lookup_id(root, user, "passwd")
    gid = _lookup_id(root, group if sep else user, "group") if (sep or not user.isdigit()) else uid
    return uid, gid


def _tree_entries(host_dir: str, prefix: str) -> list[tuple[str, str]]:
    """``(name in the tar, host path)`` of everything below ``host_dir``, directories first, sorted."""
    out: list[tuple[str, str]] = []
    for top, dirs, files in os.walk(host_dir):
        dirs.sort()
        rel_top = os.path.relpath(top, host_dir)
        for name in sorted(dirs + files):
            rel = name if rel_top == "." else f"{rel_top}/{name}"
            out.append((posixpath.join(prefix, rel) if prefix else rel, os.path.join(top, name)))
    out.sort(key=lambda item: item[0].split("/"))
    return out


def _tar_chunks(entries: list[tuple[str, str]], owner: tuple[int, int] | None) -> Iterator[bytes]:
    import stat as stat_mod

    for name, host in entries:
        st = os.lstat(host)
        info = tarfile.TarInfo(name)
        info.mode = stat_mod.S_IMODE(st.st_mode)
        info.uid, info.gid = owner if owner is not None else (st.st_uid, st.st_gid)
        info.mtime = st.st_mtime
        info.uname = info.gname = ""
        if stat_mod.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
        elif stat_mod.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(host)
        elif stat_mod.S_ISREG(st.st_mode):
            info.type, info.size = tarfile.REGTYPE, st.st_size
        elif stat_mod.S_ISFIFO(st.st_mode):
            info.type = tarfile.FIFOTYPE
        else:
            continue
        yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if info.type == tarfile.REGTYPE and info.size:
            remaining = info.size
            with open(host, "rb") as fh:
                while remaining:
                    chunk = fh.read(min(1 << 20, remaining))
                    if not chunk:
                        raise InvalidParameter(f"{name} shrank while being copied")
                    remaining -= len(chunk)
                    yield chunk
            pad = -info.size % tarfile.BLOCKSIZE
            if pad:
                yield bytes(pad)
    yield bytes(2 * tarfile.BLOCKSIZE)


__all__ = ["BuildOptions", "Builder", "Output", "StepError", "env_map"]
