"""Container bench: ``docker run`` latency, 50 starts, ``docker ps`` of 200 containers, shim memory; ours vs dockerd.

What it measures, for our daemon (``engine -d``, the native exec driver,
one Python shim per container) and, in the same run, for the reference
``dockerd`` 20.10 (its own containerd, ``containerd-shim-runc-v2`` and
runc), each in its own sandbox (``_common.py``), for each pair of graph
drivers asked for (default both):

* ``vfs``: ours ``-s vfs`` against dockerd ``--storage-driver=vfs``;
* ``overlay``: ours ``-s overlay`` against dockerd ``--storage-driver=overlay2``.

Both daemons of a pair run at once; the timed operations take turns between
them (A B, B A, A B, ...), so that whatever else the machine does hits both
alike, with ``sync(2)`` before each run and each start, so that none pays for
the writes and deletions of the one before (the vfs layers are copies).
Every container runs with ``--net none`` on both (no bridge, no
iptables: networking is not what is measured), from the busybox image of
:func:`engine.testing.images.busybox_image` (Debian's busybox-static, the
same archive loaded into both daemons with ``docker load``).

1. **run --rm**: ``docker run --rm --net none busybox true`` with the real
   docker CLI (``/usr/local/bin/docker``, ``DOCKER_HOST`` = the daemon's
   socket, a private ``DOCKER_CONFIG``), ``--reps`` (10) times per daemon
   after one untimed warm-up run: wall time of the CLI process, median /
   min / p90. The CLI negotiates the API version (``/_ping``), creates,
   attaches, opens ``wait?condition=removed``, starts, and exits when the
   container is removed. ``--cidfile`` is added so the bench learns each
   container's ID (for the cgroup check); writing it is a few microseconds
   of the CLI's time. Then the same through the API without the CLI, with
   a lean ``http.client`` over the unix socket: ``POST /containers/create``
   (``AutoRemove``, ``NetworkMode: none``),
   ``POST /containers/<id>/wait?condition=removed`` on a second connection
   (its headers arrive at once: both daemons flush them),
   ``POST /containers/<id>/start``, then the wait answer (the
   container exited and was removed). Each step is timed, so the table
   shows where the time goes: create, start, and exit + removal. The
   difference between the CLI and the API rows is the CLI's own cost (a Go
   binary's start, ``/_ping``, the attach).
2. **50 starts, then ps of 200**: ``--starts`` (50) ``docker run -d --net none
   busybox sleep 300`` with the CLI, one at a time (the daemons take
   turns): per-start median / p90, and the sum (the total of 50 sequential
   starts). Then ``--containers`` minus that (150) more through the API
   (create + start, timed too), so each daemon holds 200 running
   containers; if the machine has too little memory for 2 x 200 running
   containers (about 30 MiB each, ours and dockerd's together, see
   ``--mode``), the 150 are only created, and ``ps`` becomes ``ps -a``.
   Then ``--ps-reps`` (20) ``docker ps`` with the CLI, each answer checked
   to list all 200, and as many ``GET /containers/json`` on one keep-alive
   connection: median / p90.
3. **shim memory**: for each running container, the container's init PID
   (``State.Pid`` of inspect, a PID of the daemon's sandbox, translated with
   ``NSpid``) and its parent: our shim (forked from ``python -S -P -m
   engine.shim.forkserver``) or dockerd's ``containerd-shim-runc-v2``. RSS and PSS
   (``/proc/PID/smaps_rollup``) of each, median per container, after
   ``--settle`` (2) s idle; also their sum, the daemon's own process tree
   (ours: gunicorn master + worker; dockerd + containerd) before any
   container and with 200, and the CPU the daemons and shims use while all
   200 idle for ``--idle-cpu`` (5) s (``schedstat`` of every thread, in ns).

For our daemon the start of each API-started container is broken down from
the files it leaves in the container's directory: the bench's clock when the
start request was sent, the mtime of ``shim.json`` (the daemon writes it
just before it runs the shim's launcher), ``StartedAt`` in ``state.json``
(written by the shim once the container's process exec'd), and when the
answer arrived. File times are the kernel's coarse clock (one tick, 1-4 ms).
The import floor of a launcher started from scratch (``python -S -P``
importing the shim and the native driver, with the PYTHONPATH the daemon
gives it; the fork server pays it once) is timed too.

``--profile`` adds, per driver pair, ``--profile-runs`` (10) more CLI
``run --rm`` into our daemon under ``py-spy record --idle --threads`` on the
gunicorn worker (``pip install py-spy``), and 60 more ``GET /containers/json``
of the 200 under ``py-spy record --gil``. Those runs are not in the tables:
py-spy slows the worker down. The bench prints the time per run in each
kind of request (create, start, attach, wait, exit handling, list) and the
heaviest functions below each; the raw profiles are kept under
``bench/results/``.

Clean-up and checks: every container is removed with ``docker rm -f``
(batches of 50) and the daemon must list none before it is stopped. Every
container ID the bench made is then looked for in the cgroup hierarchies:
ours go to ``<controller>/<own cgroup>/engine/<id>``, dockerd's to
``<controller>/docker/<id>`` (runc's cgroupfs rules); none may be left.
A leftover that is empty is removed (rmdir only) and reported; so is a
parent directory (``engine``, ``docker``) that did not exist before the
bench and is empty after it. Nothing else is touched. This check also runs
after a failure or Ctrl-C, once the sandboxes are gone.

Usage: ``python bench/bench_containers.py [--reps 10] [--drivers vfs,overlay]
[--profile] [--no-dockerd] [--json PATH]`` (root; see ``bench/README.md``).
"""

from __future__ import annotations

import argparse
import calendar
import collections
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import bench_api as A

#: dockerd 20.10's API version: both daemons answer in the same shape.
API = "/v1.41"
DOCKER_CLI = "/usr/local/bin/docker"
IMAGE = "busybox:latest"
#: Our graph driver -> dockerd's equivalent.
DRIVER_PAIRS = {"vfs": ("vfs", "vfs"), "overlay": ("overlay", "overlay2")}
#: Targets of the issue, printed next to the results.
TARGET_RUN_RATIO = 0.3  # run --rm latency (issue 16): at most 0.3 x dockerd's
TARGET_STARTS_RATIO = 0.5  # 50 starts: at most half of dockerd's
TARGET_PS_RATIO = 1.0  # ps: at most dockerd's
TARGET_SHIM_RSS_MIB = 12.0
#: Memory assumed per running container (ours + dockerd's, shim and process), to decide on --mode auto.
PER_CONTAINER_PAIR_MIB = 30.0
#: The cgroup parents of the two daemons' containers (ours: the relative ``engine``; runc's: ``/docker``).
CGROUP_PARENTS = ("engine", "docker")


class BenchError(RuntimeError):
    """A daemon or the CLI answered something other than success: the bench stops."""


# --------------------------------------------------------------------------
# API client


class Api:
    """``http.client`` over one daemon's unix socket; one keep-alive connection plus fresh ones on demand."""

    def __init__(self, daemon: C.Daemon, timeout: float = 120.0) -> None:
        self.daemon = daemon
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def connect(self, timeout: float | None = None) -> http.client.HTTPConnection:
        """A new connected connection (only this daemon's socket is ever dialled)."""
        from engine.testing.daemon import UnixHTTPConnection

        conn = UnixHTTPConnection(self.daemon.socket_path, timeout=timeout or self.timeout)
        conn.connect()
        return conn

    @property
    def conn(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = self.connect()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        expect: tuple[int, ...] = (200,),
        conn: http.client.HTTPConnection | None = None,
    ) -> tuple[int, bytes]:
        """One request, the answer read to its end.

        :raises BenchError: if the status is not in ``expect``.
        """
        reused = conn is None and self._conn is not None
        c = conn or self.conn
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            c.request(method, API + path, body=data, headers=headers)
            resp = c.getresponse()
            out = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            if conn is None:
                self.close()  # a broken keep-alive connection is not reused
            closed = isinstance(exc, (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected))
            if reused and closed and method == "GET":
                # The daemon closed the idle keep-alive connection (ours after its keep-alive
                # time, while the bench waited for ksmd, say): a GET goes again on a new one.
                return self.call(method, path, body, expect)
            raise
        if resp.status not in expect:
            raise BenchError(f"{self.daemon.name}: {method} {path}: {resp.status} {resp.reason}: {out[:500]!r}")
        return resp.status, out

    def json(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200,)) -> Any:
        _status, out = self.call(method, path, body, expect)
        return json.loads(out) if out else None


def create_body(cmd: list[str], auto_remove: bool) -> dict[str, Any]:
    """What ``docker run --net none`` sends, without the attach flags (nothing is attached)."""
    return {
        "Image": IMAGE,
        "Cmd": cmd,
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "Tty": False,
        "OpenStdin": False,
        "StdinOnce": False,
        "HostConfig": {"AutoRemove": auto_remove, "NetworkMode": "none"},
    }


@dataclass
class RawRun:
    """One ``run --rm`` through the API; times in ms from just before the create request."""

    id: str
    create_ms: float  # create answered (a fresh connection, made inside the clock, like a CLI's)
    wait_headers_ms: float  # the wait?condition=removed request sent and its headers back
    start_ms: float  # the start request alone
    removed_ms: float  # from the start answer to the wait answer (exit, clean-up, removal)
    total_ms: float


def raw_run_rm(api: Api) -> RawRun:
    """create (AutoRemove) + wait?condition=removed (opened first) + start; checked: exit 0, then gone."""
    t0 = time.perf_counter_ns()
    main = api.connect()
    waiter: http.client.HTTPConnection | None = None
    try:
        _s, out = api.call("POST", "/containers/create", create_body(["true"], True), expect=(201,), conn=main)
        cid = json.loads(out)["Id"]
        t1 = time.perf_counter_ns()
        # A short timeout: if a daemon did not flush the wait headers, the bench
        # would otherwise wait here for a container that is never started.
        waiter = api.connect(timeout=30)
        waiter.request("POST", f"{API}/containers/{cid}/wait?condition=removed")
        wait_resp = waiter.getresponse()  # status line and headers only
        t2 = time.perf_counter_ns()
        api.call("POST", f"/containers/{cid}/start", expect=(204,), conn=main)
        t3 = time.perf_counter_ns()
        if waiter.sock is not None:
            waiter.sock.settimeout(120)  # now the container runs: its exit may take a while
        body = wait_resp.read()
        t4 = time.perf_counter_ns()
    finally:
        main.close()
        if waiter is not None:
            waiter.close()
    if wait_resp.status != 200:
        raise BenchError(f"{api.daemon.name}: wait {cid[:12]}: {wait_resp.status}: {body[:300]!r}")
    answer = json.loads(body)
    if answer.get("StatusCode") != 0:
        raise BenchError(f"{api.daemon.name}: run --rm {cid[:12]} exited with {answer}")
    status, _ = api.call("GET", f"/containers/{cid}/json", expect=(200, 404))
    if status != 404:
        raise BenchError(f"{api.daemon.name}: {cid[:12]} still exists after wait?condition=removed answered")
    ms = 1e-6
    return RawRun(cid, (t1 - t0) * ms, (t2 - t1) * ms, (t3 - t2) * ms, (t4 - t3) * ms, (t4 - t0) * ms)


@dataclass
class RawStart:
    """One ``create`` + ``start`` of a long-running container through the API."""

    id: str
    create_ms: float
    start_ms: float  # 0 when only created
    start_sent_ns: int = 0  # time.time_ns() just before the start request (for the file-based breakdown)
    start_done_ns: int = 0


def raw_create_start(api: Api, cmd: list[str], start: bool) -> RawStart:
    t0 = time.perf_counter_ns()
    out = api.json("POST", "/containers/create", create_body(cmd, False), expect=(201,))
    t1 = time.perf_counter_ns()
    sample = RawStart(out["Id"], (t1 - t0) / 1e6, 0.0)
    if start:
        sample.start_sent_ns = time.time_ns()
        t2 = time.perf_counter_ns()
        api.call("POST", f"/containers/{sample.id}/start", expect=(204,))
        sample.start_ms = (time.perf_counter_ns() - t2) / 1e6
        sample.start_done_ns = time.time_ns()
    return sample


# --------------------------------------------------------------------------
# the docker CLI


class Cli:
    """The real docker CLI against one daemon: its own ``DOCKER_CONFIG``, nothing from the user's environment."""

    def __init__(self, binary: str, daemon: C.Daemon, config_dir: str) -> None:
        self.binary = binary
        self.daemon = daemon
        os.makedirs(config_dir, exist_ok=True)
        # A minimal environment: no DOCKER_CONTEXT, DOCKER_API_VERSION, proxies
        # or ~/.docker of whoever runs the bench; only the unix socket is dialled.
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": config_dir,
            "LANG": "C.UTF-8",
            "DOCKER_HOST": f"unix://{daemon.socket_path}",
            "DOCKER_CONFIG": config_dir,
        }

    def run(self, *args: str, timeout: float = 300.0) -> tuple[float, str]:
        """Run ``docker <args>``; (wall seconds, stdout).

        :raises BenchError: on a non-zero exit.
        """
        t0 = time.perf_counter_ns()
        try:
            proc = subprocess.run(
                [self.binary, *args], env=self.env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"{self.daemon.name}: docker {' '.join(args)[:200]} did not finish in {timeout:g} s"
            ) from None
        wall = (time.perf_counter_ns() - t0) / 1e9
        if proc.returncode != 0:
            raise BenchError(
                f"{self.daemon.name}: docker {' '.join(args)[:200]} exited {proc.returncode}: "
                f"{proc.stderr.decode(errors='replace')[-800:]}"
            )
        return wall, proc.stdout.decode(errors="replace")


# --------------------------------------------------------------------------
# processes of a sandbox


def read_status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return {k: v.strip() for k, _, v in (line.partition(":") for line in fh)}
    except OSError:
        return {}


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def sandbox_pid_map(daemon: C.Daemon) -> dict[int, int]:
    """PID inside the daemon's sandbox -> PID here, for every process of the sandbox.

    Shims re-parent to the sandbox's init (they are not the daemon's
    descendants), so the walk starts there. ``NSpid`` lists a process's PID
    in each namespace from ours down: the second entry is the sandbox's.
    """
    init = daemon.init_pid()
    out: dict[int, int] = {}
    for pid in C.process_tree(init) if init else []:
        nspid = read_status(pid).get("NSpid", "").split()
        if len(nspid) >= 2:
            out[int(nspid[1])] = pid
    return out


def parent_pid(pid: int) -> int:
    return int(read_status(pid).get("PPid", "0") or 0)


def sandbox_ticks(daemon: C.Daemon) -> int:
    """CPU ticks of everything in the daemon's sandbox, including exited children that were reaped."""
    init = daemon.init_pid()
    return C.cpu_ticks(C.process_tree(init), reaped=True) if init else 0


def cpu_ns(pids: Sequence[int]) -> int:
    """CPU time of every thread of ``pids`` in ns (``schedstat``): finer than clock ticks for idle processes."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                    total += int(fh.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def bench_cpu_s() -> float:
    """This bench's CPU time, with its children (the docker CLI runs, py-spy)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuWindow:
    """CPU time used during one phase: by each sandbox, by this bench (and its CLIs), and by other work."""

    def __init__(self, daemons: Sequence[C.Daemon]) -> None:
        self.daemons = list(daemons)
        self.ticks0 = {d.name: sandbox_ticks(d) for d in self.daemons}
        self.self0 = bench_cpu_s()
        self.all0, self.idle0 = C.machine_ticks()

    def stop(self) -> dict[str, float]:
        out = {f"{d.name}_cpu_s": (sandbox_ticks(d) - self.ticks0[d.name]) / C.CLK_TCK for d in self.daemons}
        bench = bench_cpu_s() - self.self0
        all1, idle1 = C.machine_ticks()
        total = max(1e-9, (all1 - self.all0) / C.CLK_TCK)
        busy = total - (idle1 - self.idle0) / C.CLK_TCK
        out["bench_cpu_s"] = bench
        out["other_busy"] = max(0.0, busy - sum(v for k, v in out.items() if k.endswith("_cpu_s"))) / total
        return out


# --------------------------------------------------------------------------
# cgroups


@dataclass
class CgroupParent:
    """A directory under which one of the daemons puts its containers' cgroups."""

    path: str
    existed: bool  # before the bench
    children: set[str]  # child directories before the bench


def _cgroup_mounts() -> list[tuple[str, str, frozenset[str]]]:
    """(mount point, fstype, controller/name keys) of every cgroup hierarchy mounted here."""
    try:
        with open("/proc/cgroups") as fh:
            known = {line.split()[0] for line in fh if line.strip() and not line.startswith("#")}
    except OSError:
        known = set()
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3 or rfields[0] not in ("cgroup", "cgroup2"):
                continue
            if fields[3] != "/":
                continue  # a sub-tree bind mount: not where either daemon creates its cgroups
            keys = frozenset(o for o in rfields[2].split(",") if o in known or o.startswith("name="))
            out.append((fields[4].replace("\\040", " "), rfields[0], keys))
    return out


def _own_cgroups() -> dict[frozenset[str], str]:
    """This process's cgroup per hierarchy (keyed like :func:`_cgroup_mounts`; v2 under the empty set)."""
    out: dict[frozenset[str], str] = {}
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _hid, _, rest = line.strip().partition(":")
            controllers, _, path = rest.partition(":")
            out[frozenset(c for c in controllers.split(",") if c)] = path
    return out


def cgroup_parents() -> list[CgroupParent]:
    """Where the daemons put container cgroups, in every mounted hierarchy, as they are now.

    dockerd (runc's cgroupfs driver) uses the absolute parent ``/docker``;
    ours the relative ``engine``, which on v1 goes below the daemon's own
    cgroup (the daemon inherits ours: the sandbox has no cgroup namespace).
    Both spellings are watched for both, so a change of placement is still
    caught.
    """
    own = _own_cgroups()
    paths: list[str] = []
    for mount_point, _fstype, keys in _cgroup_mounts():
        base = own.get(keys, "/")
        for name in CGROUP_PARENTS:
            for p in (os.path.join(mount_point, name), os.path.join(mount_point, base.lstrip("/"), name)):
                if os.path.normpath(p) not in paths:
                    paths.append(os.path.normpath(p))
    return [CgroupParent(p, os.path.isdir(p), _child_dirs(p)) for p in paths]


#: Every parent directory the clean-up check looks in (filled before the first daemon starts).
WATCHED_PARENTS: list[CgroupParent] = []


def _child_dirs(path: str) -> set[str]:
    try:
        return {e.name for e in os.scandir(path) if e.is_dir(follow_symlinks=False)}
    except OSError:
        return set()


def _cgroup_empty(path: str) -> bool:
    """No processes and no child cgroups."""
    if _child_dirs(path):
        return False
    try:
        with open(os.path.join(path, "cgroup.procs")) as fh:
            return not fh.read().strip()
    except FileNotFoundError:
        return True
    except OSError:
        return False


def check_cgroups(parents: list[CgroupParent], ids: dict[str, set[str]], wait: float = 10.0) -> dict[str, Any]:
    """After every daemon is gone: look for the cgroups of every container the bench made.

    Waits up to ``wait`` s for cgroups that still exist to go (runc and our
    shims remove them as containers exit); then removes (rmdir only) what
    is left and empty, and reports it. A parent that did not exist before
    the bench and is now empty is removed too. Cgroups of other containers
    (another daemon on this machine) are counted, never touched.
    """
    all_ids = {cid: name for name, group in ids.items() for cid in group}

    def leftovers() -> list[tuple[str, str]]:
        return [
            (os.path.join(p.path, cid), all_ids[cid]) for p in parents for cid in _child_dirs(p.path) if cid in all_ids
        ]

    deadline = time.monotonic() + wait
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)
    report: dict[str, Any] = {
        "leftover": [],
        "removed": [],
        "busy": [],
        "parents_removed": [],
        "parents_kept": [],
        "other_new_children": {},
    }
    for path, owner in leftovers():
        entry = {"path": path, "daemon": owner}
        report["leftover"].append(entry)
        if _cgroup_empty(path):
            try:
                os.rmdir(path)
                report["removed"].append(entry)
            except OSError as exc:
                report["busy"].append(entry | {"error": str(exc)})
        else:
            report["busy"].append(entry)
    for p in parents:
        now = _child_dirs(p.path)
        others = sorted(now - p.children - set(all_ids))
        if others:
            report["other_new_children"][p.path] = len(others)
        if not p.existed and os.path.isdir(p.path):
            if not now and _cgroup_empty(p.path):
                try:
                    os.rmdir(p.path)
                    report["parents_removed"].append(p.path)
                except OSError as exc:
                    report["parents_kept"].append({"path": p.path, "error": str(exc)})
            else:
                report["parents_kept"].append({"path": p.path, "children": len(now)})
    report["ok"] = not report["leftover"]
    return report


def init_cgroup_dirs(pid: int) -> list[str]:
    """The cgroup directories (here) of a process, one per mounted hierarchy."""
    mounts = {keys: mp for mp, _t, keys in _cgroup_mounts()}
    out = []
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            for line in fh:
                _hid, _, rest = line.strip().partition(":")
                controllers, _, path = rest.partition(":")
                mp = mounts.get(frozenset(c for c in controllers.split(",") if c))
                if mp:
                    out.append(os.path.normpath(os.path.join(mp, path.lstrip("/"))))
    except OSError:
        pass
    return out


# --------------------------------------------------------------------------
# one daemon of a pair


@dataclass
class Side:
    """One daemon of a pair and what the bench keeps about it."""

    daemon: C.Daemon
    listener: C.NotifyListener
    api: Api
    cli: Cli
    ids: set[str]  # every container the bench created in it (for clean-up and the cgroup check)
    running: list[str] = field(default_factory=list)  # the long-running ones of phase 2
    out: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.daemon.name


def take_turns(sides: Sequence[Side], rounds: int) -> Iterator[tuple[int, Side]]:
    """(round, side) in the order A B, B A, A B ...: drift on the machine hits both alike."""
    for i in range(rounds):
        for side in sides if i % 2 == 0 else list(sides)[::-1]:
            yield i, side


def cli_run_rm(side: Side, tmp: str) -> float:
    cidfile = tempfile.mktemp(prefix="cid-", dir=tmp)  # the CLI refuses an existing file
    wall, _ = side.cli.run("run", "--rm", "--cidfile", cidfile, "--net", "none", IMAGE, "true")
    try:
        with open(cidfile) as fh:
            side.ids.add(fh.read().strip())
        os.unlink(cidfile)
    except OSError:
        pass
    return wall


def cli_run_d(side: Side, sleep: int) -> tuple[float, str]:
    wall, out = side.cli.run("run", "-d", "--net", "none", IMAGE, "sleep", str(sleep))
    cid = out.strip().splitlines()[-1] if out.strip() else ""
    if len(cid) != 64:
        raise BenchError(f"{side.name}: docker run -d printed {out!r}, not a container ID")
    side.ids.add(cid)
    side.running.append(cid)
    return wall, cid


def stats_ms(values: Sequence[float]) -> dict[str, float]:
    s = sorted(values)
    if not s:
        return {"n": 0}
    return {"n": len(s), "median": C.median(s), "min": s[0], "p90": C.percentile(s, 90), "max": s[-1], "sum": sum(s)}


# --------------------------------------------------------------------------
# phases


def phase_run_rm(sides: list[Side], reps: int, tmp: str) -> None:
    """Phase 1: run --rm through the CLI, then through the API."""
    for side in sides:  # untimed warm-up: first-use costs (imports, caches) are not what is compared
        side.out["warmup_cli_ms"] = cli_run_rm(side, tmp) * 1000
        side.out["warmup_api_ms"] = raw_run_rm(side.api).total_ms
        print(
            f"  warm-up {side.name:8s} CLI {side.out['warmup_cli_ms']:7.1f} ms  API "
            f"{side.out['warmup_api_ms']:7.1f} ms",
            flush=True,
        )
    window = CpuWindow([s.daemon for s in sides])
    cli: dict[str, list[float]] = {s.name: [] for s in sides}
    for _i, side in take_turns(sides, reps):
        os.sync()  # the previous run's writes and deletions are flushed now, not during this one
        cli[side.name].append(cli_run_rm(side, tmp) * 1000)
    cpu_cli = window.stop()
    window = CpuWindow([s.daemon for s in sides])
    raw: dict[str, list[RawRun]] = {s.name: [] for s in sides}
    for _i, side in take_turns(sides, reps):
        os.sync()
        sample = raw_run_rm(side.api)
        side.ids.add(sample.id)
        raw[side.name].append(sample)
    cpu_raw = window.stop()
    for side in sides:
        side.out["run_rm_cli_ms"] = cli[side.name]
        side.out["run_rm_api"] = [asdict(r) for r in raw[side.name]]
        side.out["run_rm_cpu"] = {"cli": cpu_cli, "api": cpu_raw}
        c = stats_ms(cli[side.name])
        r = stats_ms([x.total_ms for x in raw[side.name]])
        print(
            f"  run --rm {side.name:8s} CLI median {c['median']:7.1f} ms (min {c['min']:.1f}, p90 {c['p90']:.1f})"
            f"   API median {r['median']:7.1f} ms (min {r['min']:.1f}, p90 {r['p90']:.1f})",
            flush=True,
        )
    print(f"  other work: {max(cpu_cli['other_busy'], cpu_raw['other_busy']):.0%} of the CPUs", flush=True)


def phase_starts(sides: list[Side], starts: int, extra: int, start_extra: bool, sleep: int) -> None:
    """Phase 2a: ``starts`` CLI ``run -d``, then ``extra`` more through the API."""
    window = CpuWindow([s.daemon for s in sides])
    walls: dict[str, list[float]] = {s.name: [] for s in sides}
    first_start = time.monotonic()
    for _i, side in take_turns(sides, starts):
        os.sync()
        wall, _cid = cli_run_d(side, sleep)
        walls[side.name].append(wall * 1000)
    cpu = window.stop()
    for side in sides:
        side.out["run_d_cli_ms"] = walls[side.name]
        side.out["run_d_cpu"] = cpu
        s = stats_ms(walls[side.name])
        print(
            f"  {starts} x run -d {side.name:8s} total {s['sum'] / 1000:6.2f} s  median {s['median']:7.1f} ms  "
            f"p90 {s['p90']:7.1f} ms  other work {cpu['other_busy']:.0%}",
            flush=True,
        )
    extras: dict[str, list[RawStart]] = {s.name: [] for s in sides}
    for _i, side in take_turns(sides, extra):
        sample = raw_create_start(side.api, ["sleep", str(sleep)], start_extra)
        side.ids.add(sample.id)
        if start_extra:
            side.running.append(sample.id)
        extras[side.name].append(sample)
    for side in sides:
        side.out["extra"] = [asdict(x) for x in extras[side.name]]
        cr = stats_ms([x.create_ms for x in extras[side.name]])
        st = stats_ms([x.start_ms for x in extras[side.name]]) if start_extra else None
        print(
            f"  {extra} more via API {side.name:8s} create median {cr.get('median', 0):7.1f} ms"
            + (f"  start median {st['median']:7.1f} ms" if st else " (created only)"),
            flush=True,
        )
    elapsed = time.monotonic() - first_start
    for side in sides:
        side.out["extra_raw"] = extras[side.name]  # dropped from the JSON later; kept for the breakdown
    if start_extra and elapsed > sleep * 0.8:
        print(
            f"  WARNING: the starts took {elapsed:.0f} s; the first containers exit after {sleep} s "
            "(use --sleep to give them longer)",
            flush=True,
        )


def count_lines(out: str) -> int:
    return max(0, len([line for line in out.splitlines() if line.strip()]) - 1)  # minus the header


def phase_ps(sides: list[Side], reps: int, total: int, all_: bool) -> None:
    """Phase 2b: ``docker ps`` (``-a`` when only created) and ``GET /containers/json``, checked to list ``total``."""
    args = ["ps", "-a"] if all_ else ["ps"]
    query = "/containers/json?all=1" if all_ else "/containers/json"
    for side in sides:  # warm-up, and the check that the daemon holds what it should
        wall, out = side.cli.run(*args)
        if count_lines(out) != total:
            raise BenchError(
                f"{side.name}: docker {' '.join(args)} lists {count_lines(out)} containers, expected {total}"
            )
        side.out["ps_warmup_ms"] = wall * 1000
    window = CpuWindow([s.daemon for s in sides])
    cli: dict[str, list[float]] = {s.name: [] for s in sides}
    for _i, side in take_turns(sides, reps):
        wall, out = side.cli.run(*args)
        if count_lines(out) != total:
            raise BenchError(f"{side.name}: docker {' '.join(args)} listed {count_lines(out)}, expected {total}")
        cli[side.name].append(wall * 1000)
    cpu_cli = window.stop()
    raw: dict[str, list[float]] = {s.name: [] for s in sides}
    bodies: dict[str, list[bytes]] = {s.name: [] for s in sides}
    for side in sides:
        side.api.call("GET", query)  # warm: the keep-alive connection exists before the clock
    window = CpuWindow([s.daemon for s in sides])
    for _i, side in take_turns(sides, reps):
        t0 = time.perf_counter_ns()
        _s, body = side.api.call("GET", query)
        raw[side.name].append((time.perf_counter_ns() - t0) / 1e6)
        bodies[side.name].append(body)
    cpu_raw = window.stop()
    for side in sides:
        for body in bodies[side.name]:  # checked after the clock: parsing is the client's cost
            items = json.loads(body)
            if len(items) != total or any(not item.get("Id") for item in items):
                raise BenchError(f"{side.name}: GET {query} listed {len(items)} containers, expected {total}")
        side.out["ps_cli_ms"] = cli[side.name]
        side.out["ps_api_ms"] = raw[side.name]
        side.out["ps_api_bytes"] = len(bodies[side.name][-1])
        side.out["ps_cpu"] = {"cli": cpu_cli, "api": cpu_raw}
        c, r = stats_ms(cli[side.name]), stats_ms(raw[side.name])
        print(
            f"  {' '.join(args)} ({total}) {side.name:8s} CLI median {c['median']:7.1f} ms  "
            f"GET /containers/json median {r['median']:7.1f} ms ({side.out['ps_api_bytes']:,} bytes)",
            flush=True,
        )


def find_shims(side: Side) -> list[dict[str, Any]]:
    """For each running container: its init and the init's parent (the shim), PIDs here."""
    pid_map = sandbox_pid_map(side.daemon)
    found = []
    for cid in side.running:
        doc = side.api.json("GET", f"/containers/{cid}/json")
        state = doc.get("State") or {}
        if not state.get("Running"):
            raise BenchError(f"{side.name}: container {cid[:12]} is not running any more: {state}")
        init = pid_map.get(int(state.get("Pid") or 0))
        if init is None:
            raise BenchError(f"{side.name}: the init of {cid[:12]} (sandbox PID {state.get('Pid')}) is not found")
        shim = parent_pid(init)
        found.append(
            {"id": cid, "init_pid": init, "shim_pid": shim, "shim_comm": C.comm(shim), "shim_cmd": cmdline(shim)[:200]}
        )
    return found


def phase_memory(sides: list[Side], settle: float, idle_cpu: float) -> None:
    """Phase 3: the shims' RSS/PSS, the daemons' trees, and idle CPU, with every container running."""
    time.sleep(settle)
    for side in sides:
        shims = find_shims(side)
        expect = "engine.shim" if side.name == "engine" else "containerd-shim"
        odd = [s for s in shims if expect not in (s["shim_cmd"] if side.name == "engine" else s["shim_comm"])]
        if odd:
            raise BenchError(f"{side.name}: the parent of a container's init is not a shim: {odd[0]}")
        mem = C.measure_memory([s["shim_pid"] for s in shims])
        for s, m in zip(shims, mem.per_process):
            s.update({k: m[k] for k in ("rss_kib", "pss_kib", "pss_anon_kib", "pss_file_kib")})
        side.out["shims"] = shims
        side.out["shims_total"] = {"rss_mib": round(mem.rss_mib, 1), "pss_mib": round(mem.pss_mib, 1)}
        side.out["tree_with_containers"] = C.measure_memory(side.daemon.tree()).to_json()
        # Threads of the daemon's own processes: a request that never ends holds one.
        side.out["threads_with_containers"] = {f"{C.comm(p)}[{p}]": C.thread_count(p) for p in side.daemon.tree()}
        # Where the containers' cgroups really are: a parent the bench did not
        # expect joins the clean-up check (it existed before, as far as the
        # bench knows, so it is never removed).
        seen: set[str] = set()
        for s in shims:
            seen |= {os.path.dirname(d) for d in init_cgroup_dirs(s["init_pid"]) if os.path.basename(d) == s["id"]}
        side.out["cgroup_parents"] = sorted(seen)
        known = {p.path for p in WATCHED_PARENTS}
        for path in sorted(seen - known):
            WATCHED_PARENTS.append(CgroupParent(path, True, _child_dirs(path) - side.ids))
        rss = stats_ms([s["rss_kib"] / 1024 for s in shims])
        pss = stats_ms([s["pss_kib"] / 1024 for s in shims])
        print(
            f"  shims {side.name:8s} ({len(shims)}): RSS median {rss['median']:5.2f} MiB (min {rss['min']:.2f}, "
            f"max {rss['max']:.2f})  PSS median {pss['median']:5.2f} MiB  sum RSS {mem.rss_mib:7.1f} / PSS "
            f"{mem.pss_mib:7.1f} MiB  daemon tree RSS {side.out['tree_with_containers']['rss_mib']:.1f} MiB",
            flush=True,
        )
    # Idle CPU: nothing is asked of any daemon; their trees and the shims are measured.
    trees = {s.name: s.daemon.tree() for s in sides}
    shim_pids = {s.name: [x["shim_pid"] for x in s.out["shims"]] for s in sides}
    t0 = {n: (cpu_ns(trees[n]), cpu_ns(shim_pids[n])) for n in trees}
    time.sleep(idle_cpu)
    for side in sides:
        n = side.name
        d_ns = cpu_ns(trees[n]) - t0[n][0]
        s_ns = cpu_ns(shim_pids[n]) - t0[n][1]
        side.out["idle_cpu"] = {
            "seconds": idle_cpu,
            "daemon_ms_per_s": d_ns / 1e6 / idle_cpu,
            "shims_ms_per_s": s_ns / 1e6 / idle_cpu,
        }


def parse_rfc3339_ns(text: str) -> int | None:
    """``2024-01-01T00:00:00.123456789Z`` -> ns since the epoch (UTC only)."""
    if not text or not text.endswith("Z"):
        return None
    base, _, frac = text[:-1].partition(".")
    try:
        secs = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    return secs * 1_000_000_000 + int((frac + "000000000")[:9] or 0)


def start_breakdown(side: Side) -> dict[str, Any] | None:
    """Our daemon's API-started containers: start request -> shim.json -> StartedAt -> answer (ms, medians)."""
    samples: list[RawStart] = side.out.get("extra_raw") or []
    rows = []
    for s in samples:
        if not s.start_sent_ns:
            continue
        cdir = os.path.join(side.daemon.workdir, side.daemon.spec.data_root, "containers", s.id)
        try:
            launched = os.stat(os.path.join(cdir, "shim.json")).st_mtime_ns
            with open(os.path.join(cdir, "state.json")) as fh:
                started = parse_rfc3339_ns(json.load(fh).get("StartedAt", ""))
        except (OSError, ValueError):
            continue
        if started is None:
            continue
        rows.append(
            {
                "before_launch_ms": (launched - s.start_sent_ns) / 1e6,
                "launch_to_exec_ms": (started - launched) / 1e6,
                "exec_to_answer_ms": (s.start_done_ns - started) / 1e6,
                "start_ms": s.start_ms,
            }
        )
    if not rows:
        return None
    return {"n": len(rows), **{k: C.median([r[k] for r in rows]) for k in rows[0]}}


def shim_import_floor(source: str | None, reps: int = 5) -> dict[str, float] | None:
    """What the shim's launcher costs before it does anything: ``python -S -P`` + its imports, ms.

    :param source: the directory our daemon runs ``engine`` from (``--engine-rev``), else the checkout.
    """
    try:
        from engine.shim.launcher import default_pythonpath

        pythonpath = default_pythonpath("engine_exec_native.driver")
    except Exception:
        return None
    if source:
        pythonpath = [source] + pythonpath[1:]  # the first entry is where `engine` was found
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": os.pathsep.join(pythonpath)}

    def timed(code: str) -> float:
        t0 = time.perf_counter_ns()
        subprocess.run(
            [sys.executable, "-S", "-P", "-c", code],
            env=env,
            check=True,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return (time.perf_counter_ns() - t0) / 1e6

    try:
        bare = [timed("pass") for _ in range(reps)]
        full = [timed("import engine.shim.shim, engine_exec_native.driver") for _ in range(reps)]
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"python_S_ms": C.median(bare), "with_shim_imports_ms": C.median(full)}


def cleanup(sides: Sequence[Side], timed: bool = True) -> None:
    """``docker rm -f`` every container of each daemon (batches of 50); then it must list none."""
    for side in sides:
        if not side.daemon.alive():
            continue
        try:
            listed = side.api.json("GET", "/containers/json?all=1")
        except (OSError, http.client.HTTPException, BenchError, ValueError) as exc:
            print(f"  [{side.name}] cannot list containers for the clean-up: {exc}", file=sys.stderr)
            continue
        ids = [item["Id"] for item in listed]
        t0 = time.perf_counter()
        for i in range(0, len(ids), 50):
            side.cli.run("rm", "-f", *ids[i : i + 50])
        took = time.perf_counter() - t0
        left = side.api.json("GET", "/containers/json?all=1")
        if left:
            raise BenchError(
                f"{side.name}: {len(left)} containers left after docker rm -f: {[x['Id'][:12] for x in left[:5]]}"
            )
        if timed:
            side.out["rm_f"] = {"containers": len(ids), "seconds": took}
            print(f"  docker rm -f {side.name:8s} {len(ids)} containers in {took:.2f} s", flush=True)


@contextlib.contextmanager
def closing_sides(sides: list[Side]) -> Iterator[list[Side]]:
    """Stop the daemons of ``sides`` when the block ends, failure or not.

    ``sides`` may still be empty on entry: the block appends each side as its
    daemon is up. If the block fails (Ctrl-C included), each daemon's log tail
    goes to stderr and every container is removed first, then the exception
    goes on. Either way, each side's API connection is closed and its daemon
    stopped and cleaned up.
    """
    try:
        yield sides
    except BaseException:
        for side in sides:
            print(
                f"--- {side.name} -s {side.daemon.spec.driver} log tail:\n{side.daemon.log_tail(15)}", file=sys.stderr
            )
        try:
            cleanup(sides, timed=False)  # every container goes before its daemon, failure or not
        except Exception as exc:
            print(f"  clean-up after the failure: {exc}", file=sys.stderr)
        raise
    finally:
        for side in sides:
            side.api.close()
            A.stop_and_clean(side.daemon, side.listener)


def start_side(spec: C.DaemonSpec, docker: str, tmp: str, archive: str, timeout: float = 60.0) -> Side:
    """Start one daemon, wait for it (``timeout`` s to its first ping), load the busybox archive into it."""
    daemon, listener, start = A.start_and_wait(spec, timeout=timeout)
    side = Side(
        daemon, listener, Api(daemon), Cli(docker, daemon, os.path.join(tmp, f"docker-config-{spec.name}")), set()
    )
    side.out["ready_s"] = start.ready_s
    try:
        side.cli.run("load", "-i", archive)
    except BaseException:
        side.api.close()
        A.stop_and_clean(daemon, listener)
        raise
    return side


def small_bench_args(doc: str, name: str, reps: int, what: str, argv: list[str] | None) -> argparse.Namespace:
    """The flags every small bench takes: --reps, --no-dockerd, --dockerd, --docker, --engine-arg, --json."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=reps, help=f"{what} (default {reps})")
    ap.add_argument("--no-dockerd", action="store_true", help="measure our daemon only")
    ap.add_argument("--dockerd", default=C.DOCKERD, help=f"reference dockerd binary (default {C.DOCKERD})")
    ap.add_argument("--docker", default=DOCKER_CLI, help=f"the docker CLI (default {DOCKER_CLI})")
    ap.add_argument("--engine-arg", action="append", default=[], help="extra flag for our daemon (repeatable)")
    ap.add_argument(
        "--json", metavar="PATH", help=f"where to write the JSON (default bench/results/{name}-<time>.json)"
    )
    args = ap.parse_args(argv)
    if args.reps < 1:
        ap.error("--reps must be at least 1")
    return args


def small_bench(
    name: str,
    args: argparse.Namespace,
    specs: Callable[[bool], list[C.DaemonSpec]],
    body: Callable[[list[C.DaemonSpec], str, str], Any],
    report: Callable[[Any, list[str]], Any],
    after: Callable[[str, Any], None] | None = None,
) -> int:
    """The frame of a small side-by-side bench: root and CLI checks, the busybox archive, errors,
    clean-up, the JSON (``bench/results/<name>-<time>.json`` or ``args.json``).

    ``specs(with_dockerd)`` says which daemons; ``body(specs, archive, tmp)`` runs them and
    returns the results; ``report(results, names)`` prints them and returns the summary;
    ``after(json_path, summary)``, when given, comes last (a plot next to the JSON).
    :returns: the exit status.
    """
    if os.geteuid() != 0:
        print(f"bench_{name}: needs root (unshare of mount/net/pid namespaces)", file=sys.stderr)
        return 2
    if not os.access(args.docker, os.X_OK):
        print(f"bench_{name}: the docker CLI {args.docker} is missing", file=sys.stderr)
        return 2
    C.install_signal_handlers()
    with_dockerd, names, note = C.choose_dockerd(args.no_dockerd, args.dockerd)
    common: dict[str, Any] = {"args": vars(args), "names": names, "note": note, "busy_before": C.busy_before_bench()}
    tmp = tempfile.mkdtemp(prefix=f"bench-{name}-")
    try:
        from engine.testing.images import busybox_image, docker_archive

        archive = os.path.join(tmp, "busybox.tar")
        with open(archive, "wb") as fh:
            fh.write(docker_archive([busybox_image()]))
        result = body(specs(with_dockerd), archive, tmp)
    except KeyboardInterrupt:
        print("\ninterrupted; containers removed where possible, daemons stopped", file=sys.stderr)
        return 130
    except (BenchError, OSError, http.client.HTTPException, ValueError) as exc:
        print(f"\nFAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        C.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    common["busy_after"] = C.busy_after_bench()
    summary = report(result, names)
    path = C.write_json({**common, "results": result, "summary": summary}, name, args.json)
    print(f"JSON: {path}")
    if after is not None:
        after(path, summary)
    return 0


# --------------------------------------------------------------------------
# profile


#: (frame prefix, group) in the order they are looked for. The group's frames
#: are those below the first frame that matches.
PROFILE_GROUPS: tuple[tuple[str, str], ...] = (
    ("Monitor._exited", "exit handling + auto-remove (monitor thread)"),
    ("Create.on_post", "POST create"),
    ("job_start", "POST start"),
    ("Attach.on_post", "POST attach (hijacked: waits for the output)"),
    ("job_attach", "POST attach (hijacked: waits for the output)"),
    ("job_wait", "POST wait (job thread: waits for the removal)"),
    ("ListContainers.on_get", "GET /containers/json"),
    ("_drain", "streamed answers (wait: waits for the removal)"),
)
OTHER_GROUP = "other requests (/_ping, ...)"
#: Plumbing between a request's entry point and the code that does the work.
PROFILE_PLUMBING = ("Job.run (", "run_job (", "_Resource.job (", "get_app.<locals>.wsgi (", "App.__call__ (")


def worker_pid(daemon: C.Daemon) -> int | None:
    """Our gunicorn worker: the master's child."""
    main = daemon.main_pid()
    kids = C.children(main) if main else []
    return kids[0] if kids else None


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (to/file.py)``: lines merged."""
    func, sep, where = frame.partition(" (")
    if not sep:
        return frame
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{func} ({'/'.join(file.split('/')[-2:])})"


def summarize_profile(path: str, rate: int, runs: int, top: int = 8) -> dict[str, Any]:
    """ms per run spent in each kind of request, and the heaviest frames, from py-spy's raw output.

    With ``--idle`` every thread is sampled all the time, waiting or not;
    only stacks below a request (a pool thread's work item, a job thread,
    the monitor's exit handler) are kept, so idle pool threads and the
    poller are left out. Waiting inside a request (for the shim's launcher,
    for the container's output) stays in: that is wall time of the run.
    Inclusive times are of the frames below the group's entry point.
    """
    groups: collections.Counter[str] = collections.Counter()
    incl: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    leaf: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        return {"error": str(exc)}
    roots = ("_WorkItem.run", "stream_job.<locals>.runner", "Monitor._exited")
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")[1:]
        start = next((i for i, f in enumerate(frames) if f.startswith(roots)), None)
        if start is None:
            continue  # an idle thread: the poller, the monitor's select, the main thread
        frames = frames[start:]
        group, below = OTHER_GROUP, frames[1:]
        for prefix, name in PROFILE_GROUPS:
            at = next((i for i, f in enumerate(frames) if f.startswith(prefix)), None)
            if at is not None:
                group, below = name, frames[at + 1 :]
                break
        if group == OTHER_GROUP and not any("handle_request" in f for f in frames):
            continue  # a pool thread between requests (keep-alive linger)
        n = int(count)
        groups[group] += n
        names = [_frame_name(f) for f in below if not f.startswith(PROFILE_PLUMBING)]
        for name in set(names):
            incl[group][name] += n
        leaf[group][names[-1] if names else "(the entry point itself)"] += n
    per_run = 1000.0 / rate / max(1, runs)  # samples -> ms per run
    out: dict[str, Any] = {"rate": rate, "runs": runs, "file": path, "groups": {}}
    for group, n in groups.most_common():
        # (frame, ms per run, share of the group's samples): the share holds
        # even when py-spy could not keep up and dropped samples.
        out["groups"][group] = {
            "samples": n,
            "ms_per_run": round(n * per_run, 1),
            "inclusive": [(k, round(v * per_run, 1), round(v / n, 3)) for k, v in incl[group].most_common(top)],
            "self": [(k, round(v * per_run, 1), round(v / n, 3)) for k, v in leaf[group].most_common(top)],
        }
    return out


def profiled(
    side: Side, what: str, runs: int, action: Callable[[], float], out_path: str, rate: int = 250, gil: bool = False
) -> dict[str, Any]:
    """``action`` ``runs`` times while py-spy samples our worker; ms per run from the profile.

    These runs are not counted with the timed ones: sampling slows the
    worker down (by a third for ``run --rm`` on 2 cores).

    :param gil: sample only the thread that holds the GIL, pausing the
        worker for each sample (``--gil``, blocking), instead of every
        thread, waiting ones included, without pausing it (``--idle
        --nonblocking``). The latter is right for a run, whose wall time is
        mostly waiting. For a CPU-bound request it can lose most samples;
        ``--gil`` keeps more (how many depends on the machine's load), at
        the cost of slowing the worker more. The shares of the samples
        hold either way.
    """
    pyspy = shutil.which("py-spy")
    pid = worker_pid(side.daemon)
    if not pyspy or not pid:
        return {
            "what": what,
            "skipped": "py-spy not installed (pip install py-spy)" if not pyspy else "no worker process",
        }
    # --idle: time spent waiting (for the launcher, the output) is wall time of
    # a run; --threads: which thread; --nonblocking: the worker is never stopped.
    mode = ["--gil"] if gil else ["--idle", "--nonblocking"]
    proc = subprocess.Popen(
        [pyspy, "record", "-p", str(pid), "-r", str(rate), *mode, "--threads", "-f", "raw", "-o", out_path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    walls: list[float] = []
    try:
        time.sleep(1.0)  # attached and sampling
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            return {"what": what, "skipped": f"py-spy failed: {err[-300:]}"}
        for _ in range(runs):
            walls.append(action())
        time.sleep(0.3)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # py-spy writes the profile on Ctrl-C
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()
    return {
        "what": what,
        "wall_ms_median": C.median(walls),
        "wall_ms": walls,
        **summarize_profile(out_path, rate, runs),
    }


def print_profile(key: str, prof: dict[str, Any], only: str | None = None) -> None:
    """The groups of a profile (or only the group ``only``) with their heaviest frames."""
    if "skipped" in prof or "error" in prof:
        print(f"  profile ({key}, {prof.get('what')}): {prof.get('skipped') or prof.get('error')}")
        return
    print(
        f"  profile of our worker, {key}: {prof['runs']} x {prof['what']} under py-spy (median "
        f"{prof['wall_ms_median']:.1f} ms each, slowed by the sampling); ms per run by kind of request, "
        f"and below each the heaviest frames, with their share of its samples (raw: {prof['file']}):"
    )
    for group, g in prof["groups"].items():
        if only is not None and group != only:
            continue
        print(f"    {g['ms_per_run']:7.1f}  {group} ({g['samples']} samples)")
        for name, ms, share in g["inclusive"]:
            print(f"             {ms:7.1f} {share:5.0%}  {name}")


# --------------------------------------------------------------------------
# one driver pair


def run_pair(
    key: str,
    specs: list[C.DaemonSpec],
    args: argparse.Namespace,
    archive: str,
    tmp: str,
    ids: dict[str, set[str]],
    stamp: str,
) -> dict[str, Any]:
    """Start both daemons of a driver pair, run every phase, remove every container, stop them."""
    sides: list[Side] = []
    out: dict[str, Any] = {}
    with closing_sides(sides):
        for spec in specs:
            daemon, listener, start = A.start_and_wait(spec)
            conf = os.path.join(tmp, f"docker-config-{key}-{spec.name}")
            side = Side(daemon, listener, Api(daemon), Cli(args.docker, daemon, conf), ids.setdefault(spec.name, set()))
            sides.append(side)
            side.out.update({"driver": spec.driver, "ready_s": start.ready_s})
            wall, _ = side.cli.run("load", "-i", archive)
            side.api.json("GET", f"/images/{IMAGE}/json")  # 404 -> BenchError
            side.out["load_s"] = wall
            side.out["tree_idle"] = C.measure_memory(daemon.tree()).to_json()
            print(
                f"  {spec.name} -s {spec.driver}: ready in {start.ready_s * 1000:.0f} ms, busybox loaded in "
                f"{wall * 1000:.0f} ms, tree RSS {side.out['tree_idle']['rss_mib']:.1f} MiB",
                flush=True,
            )
        print("  -- run --rm", flush=True)
        phase_run_rm(sides, args.reps, tmp)
        ours = next((s for s in sides if s.name == "engine"), None)
        if args.profile and ours is not None:
            C.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            path = str(C.RESULTS_DIR / f"containers-{stamp}-profile-{key}.txt")
            ours.out["profile"] = profiled(
                ours, "CLI run --rm", args.profile_runs, lambda: cli_run_rm(ours, tmp) * 1000, path
            )
            print_profile(key, ours.out["profile"])
        extra = args.containers - args.starts
        print(
            f"  -- {args.starts} starts, then {extra} more ({'running' if args.running else 'created only'})",
            flush=True,
        )
        phase_starts(sides, args.starts, extra, args.running, args.sleep)
        print(f"  -- ps ({args.containers} containers)", flush=True)
        phase_ps(sides, args.ps_reps, args.containers, all_=not args.running)
        if args.profile and ours is not None:
            path = str(C.RESULTS_DIR / f"containers-{stamp}-profile-{key}-ps.txt")
            query = "/containers/json" + ("" if args.running else "?all=1")

            def list_once() -> float:
                t0 = time.perf_counter_ns()
                ours.api.call("GET", query)
                return (time.perf_counter_ns() - t0) / 1e6

            # Short CPU-bound requests: more of them than the timed ones, the GIL holder only.
            ours.out["profile_ps"] = profiled(
                ours, f"GET {query} ({args.containers})", max(60, args.ps_reps), list_once, path, gil=True
            )
            print_profile(key, ours.out["profile_ps"], only="GET /containers/json")
        print("  -- shim memory", flush=True)
        phase_memory(sides, args.settle, args.idle_cpu)
        if ours is not None:
            ours.out["start_breakdown"] = start_breakdown(ours)
        print("  -- clean-up", flush=True)
        cleanup(sides)
        for side in sides:
            if not side.daemon.alive():
                raise BenchError(f"{side.name} died during the bench:\n{side.daemon.log_tail()}")
            side.out.pop("extra_raw", None)
            out[side.name] = side.out
    return out


# --------------------------------------------------------------------------
# report


_fmt = C.fmt_number


def pair_summary(res: dict[str, Any], names: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in names:
        r = res[name]
        api = r["run_rm_api"]
        shims = r["shims"]
        summary[name] = {
            "driver": r["driver"],
            "run_rm_cli_ms": stats_ms(r["run_rm_cli_ms"]),
            "run_rm_api_ms": stats_ms([x["total_ms"] for x in api]),
            "run_rm_api_create_ms": C.median([x["create_ms"] for x in api]),
            "run_rm_api_wait_headers_ms": C.median([x["wait_headers_ms"] for x in api]),
            "run_rm_api_start_ms": C.median([x["start_ms"] for x in api]),
            "run_rm_api_removed_ms": C.median([x["removed_ms"] for x in api]),
            "warmup_cli_ms": r["warmup_cli_ms"],
            "warmup_api_ms": r["warmup_api_ms"],
            "run_d_cli_ms": stats_ms(r["run_d_cli_ms"]),
            "extra_create_ms": C.median([x["create_ms"] for x in r["extra"]]) if r["extra"] else None,
            "extra_start_ms": C.median([x["start_ms"] for x in r["extra"]]) if r["extra"] else None,
            "ps_cli_ms": stats_ms(r["ps_cli_ms"]),
            "ps_api_ms": stats_ms(r["ps_api_ms"]),
            "ps_api_bytes": r["ps_api_bytes"],
            "shims": len(shims),
            "shim_rss_mib": stats_ms([s["rss_kib"] / 1024 for s in shims]),
            "shim_pss_mib": stats_ms([s["pss_kib"] / 1024 for s in shims]),
            "shims_total": r["shims_total"],
            "tree_idle": {k: r["tree_idle"][k] for k in ("rss_mib", "pss_mib")},
            "tree_with_containers": {k: r["tree_with_containers"][k] for k in ("rss_mib", "pss_mib")},
            "idle_cpu": r["idle_cpu"],
            "threads": " + ".join(str(v) for v in r["threads_with_containers"].values()),
            "rm_f": r.get("rm_f"),
            "other_busy_max": max(
                r["run_rm_cpu"]["cli"]["other_busy"],
                r["run_rm_cpu"]["api"]["other_busy"],
                r["run_d_cpu"]["other_busy"],
                r["ps_cpu"]["cli"]["other_busy"],
                r["ps_cpu"]["api"]["other_busy"],
            ),
            "start_breakdown": r.get("start_breakdown"),
        }
    return summary


def pair_rows(summary: dict[str, Any], names: list[str], starts: int, total: int, running: bool) -> list[list[str]]:
    eng = summary["engine"]
    ref = summary.get("dockerd")
    rows: list[list[str]] = []

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("PASS" if ok else "FAIL")

    def add(
        metric: str,
        fn: Callable[[dict[str, Any]], str],
        ratio: Callable[[dict[str, Any]], float] | None = None,
        target: str = "",
        ok: Callable[[float], bool] | None = None,
        absolute_ok: bool | None = None,
    ) -> None:
        row = [metric] + [fn(summary[n]) for n in names]
        r = ratio(eng) / ratio(ref) if (ratio and ref and ratio(ref)) else None
        if ref:
            row.append(_fmt(r, 2) if r is not None else "")
        good = absolute_ok if absolute_ok is not None else (ok(r) if (ok and r is not None) else None)
        rows.append(row + [target, verdict(good)])

    def st(key: str, nd: int = 1) -> Callable[[dict[str, Any]], str]:
        return lambda s: f"{_fmt(s[key]['median'], nd)} / {_fmt(s[key]['min'], nd)} / {_fmt(s[key]['p90'], nd)}"

    run_target = f"<= {TARGET_RUN_RATIO:g} x dockerd" if ref else ""
    add(
        "run --rm, CLI: median / min / p90 ms",
        st("run_rm_cli_ms"),
        lambda s: s["run_rm_cli_ms"]["median"],
        run_target,
        lambda r: r <= TARGET_RUN_RATIO,
    )
    add(
        "run --rm, API: median / min / p90 ms",
        st("run_rm_api_ms"),
        lambda s: s["run_rm_api_ms"]["median"],
        run_target,
        lambda r: r <= TARGET_RUN_RATIO,
    )
    add("  API create ms (median)", lambda s: _fmt(s["run_rm_api_create_ms"]), lambda s: s["run_rm_api_create_ms"])
    add(
        "  API wait headers ms",
        lambda s: _fmt(s["run_rm_api_wait_headers_ms"]),
        lambda s: s["run_rm_api_wait_headers_ms"],
    )
    add("  API start ms", lambda s: _fmt(s["run_rm_api_start_ms"]), lambda s: s["run_rm_api_start_ms"])
    add(
        "  API start answered -> removed ms",
        lambda s: _fmt(s["run_rm_api_removed_ms"]),
        lambda s: s["run_rm_api_removed_ms"],
    )
    add(
        "run --rm, first (warm-up): CLI / API ms",
        lambda s: f"{_fmt(s['warmup_cli_ms'], 0)} / {_fmt(s['warmup_api_ms'], 0)}",
    )
    add(
        f"{starts} x run -d (CLI): total s",
        lambda s: _fmt(s["run_d_cli_ms"]["sum"] / 1000, 2),
        lambda s: s["run_d_cli_ms"]["sum"],
        f"<= {TARGET_STARTS_RATIO:g} x dockerd" if ref else "",
        lambda r: r <= TARGET_STARTS_RATIO,
    )
    add(
        f"{starts} x run -d (CLI): median / min / p90 ms",
        st("run_d_cli_ms"),
        lambda s: s["run_d_cli_ms"]["median"],
        f"<= {TARGET_STARTS_RATIO:g} x dockerd" if ref else "",
        lambda r: r <= TARGET_STARTS_RATIO,
    )
    extra = total - starts
    add(
        f"{extra} more via API: create / start ms (median)",
        lambda s: f"{_fmt(s['extra_create_ms'])} / {_fmt(s['extra_start_ms']) if running else '-'}",
        (lambda s: s["extra_start_ms"]) if running else None,
    )
    ps = "docker ps" if running else "docker ps -a"
    add(
        f"{ps} ({total}), CLI: median / min / p90 ms",
        st("ps_cli_ms"),
        lambda s: s["ps_cli_ms"]["median"],
        "<= dockerd" if ref else "",
        lambda r: r <= TARGET_PS_RATIO,
    )
    add(
        f"GET /containers/json ({total}): median / min / p90 ms",
        st("ps_api_ms"),
        lambda s: s["ps_api_ms"]["median"],
        "<= dockerd" if ref else "",
        lambda r: r <= TARGET_PS_RATIO,
    )
    add("  response bytes", lambda s: f"{s['ps_api_bytes']:,}")
    add(
        "shim RSS MiB: median / min / max",
        lambda s: (
            f"{_fmt(s['shim_rss_mib']['median'], 2)} / "
            f"{_fmt(s['shim_rss_mib']['min'], 2)} / {_fmt(s['shim_rss_mib']['max'], 2)}"
        ),
        lambda s: s["shim_rss_mib"]["median"],
        f"< {TARGET_SHIM_RSS_MIB:g}",
        absolute_ok=eng["shim_rss_mib"]["median"] < TARGET_SHIM_RSS_MIB,
    )
    add(
        "shim PSS MiB: median / min / max",
        lambda s: (
            f"{_fmt(s['shim_pss_mib']['median'], 2)} / "
            f"{_fmt(s['shim_pss_mib']['min'], 2)} / {_fmt(s['shim_pss_mib']['max'], 2)}"
        ),
        lambda s: s["shim_pss_mib"]["median"],
    )
    add("shims counted", lambda s: str(s["shims"]))
    add(
        "all shims: RSS / PSS MiB",
        lambda s: f"{_fmt(s['shims_total']['rss_mib'])} / {_fmt(s['shims_total']['pss_mib'])}",
        lambda s: s["shims_total"]["pss_mib"],
    )
    add(
        "daemon tree RSS / PSS MiB, no containers",
        lambda s: f"{_fmt(s['tree_idle']['rss_mib'])} / {_fmt(s['tree_idle']['pss_mib'])}",
    )
    add(
        f"daemon tree RSS / PSS MiB, {total} containers",
        lambda s: f"{_fmt(s['tree_with_containers']['rss_mib'])} / {_fmt(s['tree_with_containers']['pss_mib'])}",
    )
    add(f"daemon tree threads, {total} containers", lambda s: s["threads"])
    add(
        "idle CPU ms/s: daemon tree / all shims",
        lambda s: f"{_fmt(s['idle_cpu']['daemon_ms_per_s'], 2)} / {_fmt(s['idle_cpu']['shims_ms_per_s'], 2)}",
    )
    add(f"docker rm -f {total} (batches of 50) s", lambda s: _fmt((s["rm_f"] or {}).get("seconds"), 2))
    add("other work, max % of CPUs", lambda s: _fmt(s["other_busy_max"] * 100, 0))
    return rows


def decide_mode(mode: str, containers: int, with_dockerd: bool) -> tuple[bool, str]:
    """(all running?, why): 'auto' runs all of them when MemAvailable leaves a wide margin."""
    if mode != "auto":
        return mode == "running", f"--mode {mode}"
    avail = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) // 1024
    per = PER_CONTAINER_PAIR_MIB if with_dockerd else PER_CONTAINER_PAIR_MIB / 2
    need = containers * per * 2 + 2048  # twice the estimate, plus 2 GiB for everything else
    running = avail >= need
    return running, (
        f"MemAvailable {avail} MiB {'>=' if running else '<'} {need:.0f} MiB needed for "
        f"{containers} running containers per daemon"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=10, help="timed run --rm per daemon, CLI and API each (default 10)")
    ap.add_argument("--starts", type=int, default=50, help="sequential CLI run -d per daemon (default 50)")
    ap.add_argument("--containers", type=int, default=200, help="containers per daemon for ps (default 200)")
    ap.add_argument("--ps-reps", type=int, default=20, help="timed ps calls, CLI and API each (default 20)")
    ap.add_argument(
        "--mode",
        choices=("auto", "running", "created"),
        default="auto",
        help="the containers past --starts: all running, or only created (default: running if memory allows)",
    )
    ap.add_argument("--sleep", type=int, default=300, help="the long-running containers' sleep (default 300 s)")
    ap.add_argument("--settle", type=float, default=2.0, help="idle seconds before the shims' memory (default 2)")
    ap.add_argument("--idle-cpu", type=float, default=5.0, help="seconds of idle CPU measurement (default 5)")
    ap.add_argument(
        "--drivers",
        default="vfs,overlay",
        help="driver pairs, comma-separated: vfs (vfs/vfs), overlay (overlay/overlay2)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="per driver pair, --profile-runs more run --rm and --ps-reps more lists into ours "
        "under py-spy (not timed)",
    )
    ap.add_argument("--profile-runs", type=int, default=10, help="runs under py-spy (default 10)")
    ap.add_argument("--no-dockerd", action="store_true", help="measure our daemon only")
    ap.add_argument("--dockerd", default=C.DOCKERD, help=f"reference dockerd binary (default {C.DOCKERD})")
    ap.add_argument("--docker", default=DOCKER_CLI, help=f"the docker CLI (default {DOCKER_CLI})")
    ap.add_argument("--engine-arg", action="append", default=[], help="extra flag for our daemon (repeatable)")
    ap.add_argument(
        "--engine-rev",
        metavar="REV",
        help="run our daemon from this git revision (git archive to a temp dir), not the checkout",
    )
    ap.add_argument(
        "--json", metavar="PATH", help="where to write the JSON (default bench/results/containers-<time>.json)"
    )
    args = ap.parse_args(argv)

    keys = [k.strip() for k in args.drivers.split(",") if k.strip()]
    bad = [k for k in keys if k not in DRIVER_PAIRS]
    if bad or not keys or args.reps < 1 or args.starts < 1 or args.containers < args.starts or args.ps_reps < 1:
        ap.error(f"unknown driver pair {bad}" if bad else "bad arguments (--containers must be >= --starts)")
    if os.geteuid() != 0:
        print("bench_containers: needs root (unshare of mount/net/pid namespaces)", file=sys.stderr)
        return 2
    if not os.access(args.docker, os.X_OK):
        print(f"bench_containers: the docker CLI {args.docker} is missing", file=sys.stderr)
        return 2
    C.install_signal_handlers()
    with_dockerd, names, note = C.choose_dockerd(args.no_dockerd, args.dockerd)
    args.running, mode_why = decide_mode(args.mode, args.containers, with_dockerd)
    print(f"containers past the first {args.starts}: {'running' if args.running else 'created only'} ({mode_why})")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    busy_before = C.busy_before_bench()

    WATCHED_PARENTS[:] = cgroup_parents()
    ids: dict[str, set[str]] = {}
    results: dict[str, Any] = {}
    source: str | None = None
    engine_rev = None
    tmp = tempfile.mkdtemp(prefix="bench-containers-")
    cg_report: dict[str, Any] | None = None
    floor = None
    status = 0
    try:
        if args.engine_rev:
            engine_rev = C.git_rev(args.engine_rev)
            source = C.export_source(engine_rev)
            print(f"our daemon runs from {source}: engine/ of {engine_rev[:12]} ({args.engine_rev})")
        from engine.testing.images import busybox_image, docker_archive

        archive = os.path.join(tmp, "busybox.tar")
        with open(archive, "wb") as fh:
            fh.write(docker_archive([busybox_image()]))
        floor = shim_import_floor(source)
        for i, key in enumerate(keys):
            ours, theirs = DRIVER_PAIRS[key]
            specs = [C.engine_spec(args.engine_arg, storage_driver=ours, source=source)]
            if with_dockerd:
                specs.append(C.dockerd_spec(args.dockerd, storage_driver=theirs))
            print(
                f"\n[{i + 1}/{len(keys)}] {key}: engine -s {ours}"
                + (f" vs dockerd --storage-driver={theirs}" if with_dockerd else ""),
                flush=True,
            )
            results[key] = run_pair(key, specs, args, archive, tmp, ids, stamp)
    except KeyboardInterrupt:
        print("\ninterrupted; containers removed where possible, daemons stopped", file=sys.stderr)
        status = 130
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        status = 1
    except (OSError, http.client.HTTPException, ValueError) as exc:  # a daemon hung up, timed out, said nonsense
        print(f"\nFAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = 1
    finally:
        C.stop_all()
        # Only now, with every sandbox gone: whatever a daemon left is left for good.
        cg_report = check_cgroups(WATCHED_PARENTS, ids)
        shutil.rmtree(tmp, ignore_errors=True)
        if source is not None:
            shutil.rmtree(source, ignore_errors=True)
    print_cgroup_report(cg_report, ids)
    if status:
        return status

    busy_after = C.busy_after_bench()
    summaries: dict[str, Any] = {}
    for key in keys:
        summaries[key] = pair_summary(results[key], names)
        rows = pair_rows(summaries[key], names, args.starts, args.containers, args.running)
        ours, theirs = DRIVER_PAIRS[key]
        headers = (
            ["metric", f"engine ({ours})"]
            + ([f"dockerd ({theirs})", "engine/dockerd"] if with_dockerd else [])
            + ["target (engine)", ""]
        )
        C.print_table(headers, rows, title=f"Results, {key} (MiB = 2^20 bytes)")
        bd = summaries[key]["engine"]["start_breakdown"]
        if bd:
            print(
                f"our start, from the container's files (median of {bd['n']} API starts): start request -> "
                f"shim.json written {bd['before_launch_ms']:.1f} ms; -> container exec'd (StartedAt) "
                f"{bd['launch_to_exec_ms']:.1f} ms; -> start answered {bd['exec_to_answer_ms']:.1f} ms "
                f"(start request {bd['start_ms']:.1f} ms)"
            )
    if floor:
        print(
            f"shim launcher floor: python -S -P {floor['python_S_ms']:.1f} ms; with the shim's and the native "
            f"driver's imports {floor['with_shim_imports_ms']:.1f} ms"
        )
    if note:
        print(f"\nnote: {note}")
    path = C.write_json(
        {
            "params": {
                "reps": args.reps,
                "starts": args.starts,
                "containers": args.containers,
                "ps_reps": args.ps_reps,
                "running": args.running,
                "mode": mode_why,
                "sleep": args.sleep,
                "settle_s": args.settle,
                "idle_cpu_s": args.idle_cpu,
                "drivers": {k: DRIVER_PAIRS[k] for k in keys},
                "api": API,
                "docker": args.docker,
                "engine_args": args.engine_arg,
                "engine_rev": engine_rev or "checkout as on disk",
                "dockerd": args.dockerd if with_dockerd else None,
                "profile": args.profile,
            },
            "note": note or None,
            "other_cpu_busy": {"before": round(busy_before, 3), "after": round(busy_after, 3)},
            "targets": {
                "run_rm": f"<= {TARGET_RUN_RATIO} x dockerd",
                "starts": f"<= {TARGET_STARTS_RATIO} x dockerd",
                "ps": "<= dockerd",
                "shim_rss_mib": TARGET_SHIM_RSS_MIB,
            },
            "shim_import_floor": floor,
            "summary": summaries,
            "cgroups": cg_report,
            "runs": results,
        },
        "containers",
        args.json,
    )
    print(f"\nJSON: {path}")
    return 0 if cg_report is None or cg_report["ok"] else 1


def print_cgroup_report(report: dict[str, Any] | None, ids: dict[str, set[str]]) -> None:
    if report is None:
        return
    made = ", ".join(f"{n} {len(v)}" for n, v in ids.items())
    if report["ok"]:
        print(f"\ncgroups: none left by the {sum(len(v) for v in ids.values())} containers of this run ({made})")
    else:
        print(
            f"\ncgroups: LEFT BEHIND by this run's containers: {len(report['leftover'])} "
            f"(removed {len(report['removed'])} empty ones; still busy: {len(report['busy'])})"
        )
        for entry in report["leftover"][:10]:
            print(f"  {entry['daemon']}: {entry['path']}")
    if report["parents_removed"]:
        print(f"  parents created by this run and removed again: {report['parents_removed']}")
    if report["parents_kept"]:
        print(f"  parents created by this run, kept (not empty): {report['parents_kept']}")
    if report["other_new_children"]:
        print(f"  (cgroups of other containers appeared meanwhile, not touched: {report['other_new_children']})")


if __name__ == "__main__":
    sys.exit(main())
