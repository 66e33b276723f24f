"""Shared helpers for the benches: sandboxed daemons, memory, results.

Every bench drives two daemons the same way: ours (``engine -d``) and, as a
reference, Debian's ``dockerd`` 20.10 with the containerd it spawns. This
module gives them one life cycle:

* :class:`DaemonSpec` (``engine_spec()``, ``dockerd_spec()``) says how to
  start a daemon in a fresh temporary directory: command line, API socket,
  config files, host directories to hide.
* :func:`start_daemon` starts it inside its own sandbox, made with
  ``unshare --mount --net --pid --fork --mount-proc``: every mount, interface
  and iptables rule the daemon makes lives in namespaces that vanish with it.
  PID 1 of the sandbox is the tiny init at the bottom of this file
  (``python bench/_common.py --sandbox-init ...``): it brings ``lo`` up, hides
  host directories under empty tmpfs mounts, writes a CLOCK_MONOTONIC stamp
  just before it execs the daemon (so start-up can be timed from the exec,
  not from our own fork/unshare overhead), forwards SIGTERM/SIGINT/SIGHUP,
  reaps orphans, and exits as soon as the daemon exits - and when PID 1 of a
  PID namespace exits, the kernel kills everything left inside it.
* :meth:`Daemon.stop` SIGTERMs the daemon, escalates to SIGKILL of the
  sandbox init (which takes the whole namespace down) and of the unshare's
  process group; only then :meth:`Daemon.cleanup` removes the temporary
  directory with :func:`engine.sys.fs.safe_rmtree` (unmounts first, never
  crosses file systems). Every started daemon is registered, so an exception,
  Ctrl-C or SIGTERM of the bench still stops it (``try/finally`` + atexit).
* :class:`NotifyListener` is a systemd-style ``NOTIFY_SOCKET`` (a unix
  datagram socket) that records when ``READY=1`` arrives and from which PID
  (``SO_PASSCRED``), so a READY from a helper (containerd) is not mistaken
  for the daemon's.
* :func:`process_tree`, :func:`measure_memory`, :func:`cpu_ticks`: RSS/PSS
  (``/proc/PID/smaps_rollup``) and CPU time summed over a process tree;
  :func:`reset_peak_rss` / :func:`peak_rss_kib`: the peak RSS of one phase.
* :func:`choose_dockerd`: whether a bench measures dockerd next to ours;
  :func:`busy_before_bench` / :func:`busy_after_bench`: how busy the
  machine is with other work, with a warning when the numbers will be noisy.
* :func:`fmt_number`, :func:`print_table` and :func:`write_json`: the human
  table and the machine-readable record under ``bench/results/``.

Only unix sockets inside the temporary directories are ever talked to.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import math
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DOCKERD = "/usr/sbin/dockerd"

# The benches run from a checkout: make `engine` importable without install.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

MiB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Other work above this share of the CPUs (measured before and after a bench) earns a warning.
BUSY_WARN = 0.10


# --------------------------------------------------------------------------
# daemon specifications


@dataclass
class DaemonSpec:
    """How to start one kind of daemon in a fresh work directory.

    :param name: short label used in tables and JSON (``engine``, ``dockerd``).
    :param prepare: ``prepare(workdir) -> (argv, api_socket_path)``; writes
        any config file the daemon needs into ``workdir``.
    :param hide: host directories the sandbox covers with an empty tmpfs so
        the daemon cannot write there (only those that exist are covered).
    :param driver: the storage (graph) driver it is started with.
    :param data_root: its data root, relative to the work directory (benches
        that look at what the daemon stored on disk need it).
    :param cwd: the directory it is started in (default: the checkout). For
        ``python -m``, that directory comes first on ``sys.path``, so a tree
        exported with :func:`export_source` runs instead of the checkout.
    """

    name: str
    prepare: Callable[[str], tuple[list[str], str]]
    hide: tuple[str, ...] = ()
    available: bool = True
    why_unavailable: str = ""
    driver: str = ""
    data_root: str = ""
    cwd: str = ""


def engine_spec(extra_args: Sequence[str] = (), storage_driver: str = "vfs", source: str | None = None) -> DaemonSpec:
    """Our daemon: ``python -m engine.cli -d`` with its own root, socket, pidfile.

    :param storage_driver: given as ``-s`` (``vfs``, ``overlay``, ...).
    :param source: a directory holding the ``engine`` package to run (see
        :func:`export_source`); default: the checkout, as it is on disk.
    """

    def prepare(workdir: str) -> tuple[list[str], str]:
        sock = os.path.join(workdir, "engine.sock")
        config = os.path.join(workdir, "daemon.json")
        with open(config, "w") as fh:
            fh.write("{}\n")  # never read /etc/engine/daemon.json
        argv = [
            sys.executable,
            "-m",
            "engine.cli",
            "-d",
            "-H",
            f"unix://{sock}",
            "-g",
            os.path.join(workdir, "root"),
            "-p",
            os.path.join(workdir, "engine.pid"),
            "-s",
            storage_driver,
            "--config-file",
            config,
            *extra_args,
        ]
        return argv, sock

    return DaemonSpec("engine", prepare, driver=storage_driver, data_root="root", cwd=source or "")


def dockerd_spec(
    path: str = DOCKERD, extra_args: Sequence[str] = (), storage_driver: str = "vfs", networking: bool = False
) -> DaemonSpec:
    """The reference: dockerd 20.10 starting its own containerd, all state in ``workdir``.

    Without ``--containerd`` dockerd 20.10 supervises its own containerd
    with root ``<data-root>/containerd/daemon``, state and socket under
    ``<exec-root>/containerd``. What the flags cannot redirect is hidden by
    the sandbox instead:

    * ``/run``: dockerd uses a *system* containerd if
      ``/run/containerd/containerd.sock`` exists, and looks for plugins in
      ``/run/docker/plugins``; an empty tmpfs there makes it start its own.
    * ``/opt``: containerd's ``opt`` plugin creates ``/opt/containerd``.
    * ``/etc/docker``: ``key.json`` (the legacy trust key) is also redirected
      with ``deprecated-key-path`` in the generated config file; the tmpfs
      makes sure nothing else lands in the host's ``/etc/docker``.

    :param storage_driver: given as ``--storage-driver`` (``vfs``, ``overlay2``, ...).
    :param networking: keep dockerd's default bridge networking (``docker0``,
        its iptables rules and NAT, ``docker-proxy`` for published ports)
        instead of ``--bridge=none --iptables=false --ip-masq=false``. Safe
        only because the sandbox has its own network namespace: the bridge,
        the rules and the ``ip_forward`` sysctl it sets are all the
        sandbox's and vanish with it. ``--ip6tables=false`` stays either way
        (the default of 20.10, said explicitly).
    """
    if not os.access(path, os.X_OK):
        return DaemonSpec(
            "dockerd",
            lambda w: ([], ""),
            available=False,
            why_unavailable=f"{path} not found",
            driver=storage_driver,
            data_root="data",
        )

    def prepare(workdir: str) -> tuple[list[str], str]:
        sock = os.path.join(workdir, "docker.sock")
        config = os.path.join(workdir, "daemon.json")
        with open(config, "w") as fh:
            # data-root/exec-root are given as flags (a key in both places is
            # an error for dockerd); the rest only exists as config keys.
            json.dump({"deprecated-key-path": os.path.join(workdir, "key.json")}, fh)
        argv = [
            path,
            "--config-file",
            config,
            "--data-root",
            os.path.join(workdir, "data"),
            "--exec-root",
            os.path.join(workdir, "exec"),
            "--pidfile",
            os.path.join(workdir, "docker.pid"),
            "-H",
            f"unix://{sock}",
            *([] if networking else ["--bridge=none", "--iptables=false", "--ip-masq=false"]),
            "--ip6tables=false",
            f"--storage-driver={storage_driver}",
            *extra_args,
        ]
        return argv, sock

    return DaemonSpec("dockerd", prepare, hide=("/run", "/opt", "/etc/docker"), driver=storage_driver, data_root="data")


class DockerdChoice(NamedTuple):
    """Whether a bench measures the reference dockerd next to our daemon."""

    measured: bool
    names: list[str]  # the daemons measured, in table order: ``engine`` first
    note: str  # why dockerd is not measured; "" when it is


def choose_dockerd(no_dockerd: bool, path: str = DOCKERD) -> DockerdChoice:
    """Measure dockerd too, unless ``--no-dockerd`` was given or ``path`` is missing.

    Prints the note at once when dockerd is left out; the benches print it
    again under their results and record it in their JSON.
    """
    note = ""
    if no_dockerd:
        note = "dockerd not measured (--no-dockerd)"
    else:
        ref = dockerd_spec(path)
        if not ref.available:
            note = f"dockerd not measured: {ref.why_unavailable}; our daemon only"
    if note:
        print(note)
    measured = not note
    return DockerdChoice(measured, ["engine"] + (["dockerd"] if measured else []), note)


# --------------------------------------------------------------------------
# process tree, memory, CPU


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (any thread of it may have forked them: Go)."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(p) for p in fh.read().split()]
        except OSError:
            pass
    return sorted(set(out))


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (breadth first)."""
    seen = [pid]
    i = 0
    while i < len(seen):
        seen += [c for c in children(seen[i]) if c not in seen]
        i += 1
    return seen


def _cmdline_args(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [arg.decode(errors="replace") for arg in fh.read().split(b"\0")[:-1]]
    except OSError:
        return []


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return "?"


def _smaps_rollup(pid: int) -> dict[str, int]:
    """Rss/Pss/... of one process in KiB; summed from ``smaps`` on old kernels."""
    wanted = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem", "Swap")
    found = dict.fromkeys(wanted, 0)
    for name in ("smaps_rollup", "smaps"):
        try:
            with open(f"/proc/{pid}/{name}") as fh:
                for line in fh:
                    key, _, rest = line.partition(":")
                    if key in found:
                        found[key] += int(rest.split()[0])
            return found
        except FileNotFoundError:
            continue
        except (ProcessLookupError, PermissionError):
            break
    return found


@dataclass
class MemorySample:
    """Memory of a set of processes, in KiB (sums) and per process."""

    rss_kib: int
    pss_kib: int
    per_process: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rss_mib(self) -> float:
        return self.rss_kib / 1024

    @property
    def pss_mib(self) -> float:
        return self.pss_kib / 1024

    def to_json(self) -> dict[str, Any]:
        return {"rss_mib": round(self.rss_mib, 2), "pss_mib": round(self.pss_mib, 2), "processes": self.per_process}


def measure_memory(pids: Iterable[int]) -> MemorySample:
    """RSS and PSS summed over ``pids``.

    RSS sums double-count pages shared between processes (a forked worker
    shares the master's); PSS splits each shared page between its users, so
    the PSS sum is the tree's real share of RAM.
    """
    rss = pss = 0
    per: list[dict[str, Any]] = []
    for pid in pids:
        m = _smaps_rollup(pid)
        rss += m["Rss"]
        pss += m["Pss"]
        per.append(
            {
                "pid": pid,
                "comm": comm(pid),
                "rss_kib": m["Rss"],
                "pss_kib": m["Pss"],
                "pss_anon_kib": m["Pss_Anon"],
                "pss_file_kib": m["Pss_File"],
            }
        )
    return MemorySample(rss, pss, per)


def reset_peak_rss(pids: Iterable[int]) -> None:
    """Reset each process's peak RSS (``VmHWM``) to its current RSS.

    Writing ``5`` to ``/proc/PID/clear_refs`` does that (Linux >= 4.0), so
    :func:`peak_rss_kib` afterwards tells the peak of one phase, at no cost
    while it runs (no sampling).
    """
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            pass


def peak_rss_kib(pids: Iterable[int]) -> int:
    """Sum of ``VmHWM`` (peak RSS, KiB) over ``pids``: an upper bound of the tree's peak."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def cpu_ticks(pids: Iterable[int], reaped: bool = False) -> int:
    """utime+stime of ``pids`` in clock ticks (all threads).

    :param reaped: add cutime+cstime, the CPU time of children that exited
        and were waited for (dockerd's short-lived ``docker-untar``
        re-execs, for example). Without it, exited children are not included.
    """
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                # comm may contain spaces: the fields after it follow the last ')'.
                rest = fh.read().rpartition(")")[2].split()
            total += int(rest[11]) + int(rest[12])  # fields 14 and 15 of stat(5)
            if reaped:
                total += int(rest[13]) + int(rest[14])  # fields 16 and 17
        except (OSError, IndexError, ValueError):
            pass
    return total


class Ksmd:
    """The host's ksmd, turned on for a bench (``with Ksmd(pages_to_scan):``); its settings are put
    back at the end. Only processes that opted in are scanned (our shims with
    ``--shim-memory-merge``); dockerd's processes never opt in, so they lose nothing to it.

    :param pages_to_scan: pages per wake-up (every ``sleep_millisecs``, 20 ms), the kernel's 100
        by default.
    """

    DIR = "/sys/kernel/mm/ksm"
    SETTINGS = ("pages_to_scan", "sleep_millisecs", "run")  # written in this order, run last

    def __init__(self, pages_to_scan: int) -> None:
        self.pages_to_scan = pages_to_scan
        self.saved: dict[str, str] = {}

    def _path(self, name: str) -> str:
        return os.path.join(self.DIR, name)

    def read(self, name: str) -> int:
        with open(self._path(name)) as fh:
            return int(fh.read())

    def _write(self, name: str, value: Any) -> None:
        with open(self._path(name), "w") as fh:
            fh.write(f"{value}\n")

    def __enter__(self) -> Ksmd:
        for name in self.SETTINGS:
            with open(self._path(name)) as fh:
                self.saved[name] = fh.read().strip()
        wanted = {"pages_to_scan": self.pages_to_scan, "sleep_millisecs": 20, "run": 1}
        try:
            for name in self.SETTINGS:
                self._write(name, wanted[name])
        except BaseException:
            self.__exit__()
            raise
        print(f"ksmd: on for the bench, {self.pages_to_scan} pages every 20 ms (was {self.saved})")
        return self

    def __exit__(self, *_exc: Any) -> None:
        for name in self.SETTINGS:
            try:
                self._write(name, self.saved[name])
            except (OSError, KeyError) as exc:
                print(f"WARNING: could not put back {self._path(name)}: {exc}", file=sys.stderr)

    @staticmethod
    def cpu_seconds() -> float:
        """CPU time of the ksmd kernel thread so far."""
        for entry in os.listdir("/proc"):
            if entry.isdigit() and comm(int(entry)) == "ksmd":
                return cpu_ticks([int(entry)]) / CLK_TCK
        return 0.0

    def settle(self, pids: Iterable[int], passes: int = 2, timeout: float = 600.0) -> dict[str, Any]:
        """Wait for ``passes`` full scans from now (a page merges on the scan after the one that
        found it unchanged), if any of ``pids`` opted in (ksmd does not scan, and counts no scan,
        while no process has); what ksmd did: the wait, its CPU time and its counters."""
        from engine.sys import ksm

        start, cpu0, t0 = self.read("full_scans"), self.cpu_seconds(), time.monotonic()
        done = not any(ksm.merging(pid) for pid in pids) or wait_until(
            lambda: self.read("full_scans") >= start + passes, timeout, interval=0.1
        )
        return {
            "settled": done,
            "wait_s": round(time.monotonic() - t0, 1),
            "cpu_s": round(self.cpu_seconds() - cpu0, 2),
            "pages_shared": self.read("pages_shared"),
            "pages_sharing": self.read("pages_sharing"),
        }


def cpu_busy(interval: float = 1.0) -> float:
    """Fraction (0..1) of all CPUs busy over the next ``interval`` seconds (/proc/stat).

    Taken while the bench itself is idle, it tells whether something else
    on the machine competes for the CPUs (and so makes the numbers noisy).
    """

    t0, i0 = machine_ticks()
    time.sleep(interval)
    t1, i1 = machine_ticks()
    return 1.0 - (i1 - i0) / (t1 - t0) if t1 > t0 else 0.0


def busy_before_bench(noisy_because: str = "") -> float:
    """Measure (1 s) and print how busy the machine is before a bench; warn above :data:`BUSY_WARN`.

    :param noisy_because: more words for the warning, after "the numbers will be noisy".
    :returns: the busy fraction (0..1), for the JSON record.
    """
    busy = cpu_busy(1.0)
    print(f"host: {os.cpu_count()} CPUs; {busy:.0%} busy with other work before the bench")
    if busy > BUSY_WARN:
        print(
            f"WARNING: something else uses {busy:.0%} of the CPUs: the numbers will be noisy"
            + (f" {noisy_because}" if noisy_because else "")
        )
    return busy


def busy_after_bench() -> float:
    """Measure (1 s) how busy the machine is after a bench; warn above :data:`BUSY_WARN`.

    :returns: the busy fraction (0..1), for the JSON record.
    """
    busy = cpu_busy(1.0)
    if busy > BUSY_WARN:
        print(f"WARNING: {busy:.0%} of the CPUs were busy with other work after the bench")
    return busy


def machine_ticks() -> tuple[int, int]:
    """(all, idle) CPU time of the whole machine so far, in clock ticks (/proc/stat)."""
    with open("/proc/stat") as fh:
        vals = [int(v) for v in fh.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    return sum(vals[:8]), idle  # user..steal (guest time is already in user)


def thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


# --------------------------------------------------------------------------
# NOTIFY_SOCKET


@dataclass
class Notification:
    """One datagram received on the notify socket."""

    at_ns: int  # CLOCK_MONOTONIC when recvmsg returned
    pid: int  # sender's PID as seen from here (SCM_CREDENTIALS translates it)
    message: str


class NotifyListener:
    """A ``NOTIFY_SOCKET`` for one daemon start: records every datagram.

    The socket is a path in the daemon's work directory; a path (unlike an
    abstract name) is reachable from the sandbox's network namespace.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(path)
        self.messages: list[Notification] = []

    def wait_ready(self, accept_pid: Callable[[int], bool], timeout: float) -> Notification:
        """Block until a READY=1 from a PID for which ``accept_pid`` is true.

        :raises TimeoutError: after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        credsize = socket.CMSG_SPACE(struct.calcsize("3i"))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"no READY=1 on {self.path} after {timeout}s (got {[m.message for m in self.messages]})"
                )
            self.sock.settimeout(left)
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(4096, credsize)
            except TimeoutError:
                continue
            at = time.monotonic_ns()
            pid = 0
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:12])[0]
            note = Notification(at, pid, data.decode(errors="replace"))
            self.messages.append(note)
            if "READY=1" in note.message.split("\n") and accept_pid(pid):
                return note

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------
# sandboxed daemons

_LIVE: set[Daemon] = set()


@dataclass(eq=False)
class Daemon:
    """A daemon started by :func:`start_daemon` (see the module doc)."""

    spec: DaemonSpec
    workdir: str
    socket_path: str
    proc: subprocess.Popen  # the unshare process
    spawn_ns: int  # CLOCK_MONOTONIC just before Popen(unshare)
    stamp_fd: int  # read end of the pipe the sandbox init writes the exec stamp to
    log_path: str
    exec_ns: int | None = None
    _main_pid: int | None = None
    #: The daemon's command line, as the sandbox init runs it.
    argv: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    def init_pid(self) -> int | None:
        """PID (here) of the sandbox's PID 1, the unshare's only child."""
        kids = children(self.proc.pid)
        return kids[0] if kids else None

    def main_pid(self) -> int | None:
        """PID (here) of the daemon process itself: the sandbox init's child that runs the
        daemon's command. The init's other children are orphans it adopted, such as our
        shims (they daemonize)."""
        if self._main_pid is None or not os.path.exists(f"/proc/{self._main_pid}"):
            init = self.init_pid()
            kids = children(init) if init else []
            own = [pid for pid in kids if _cmdline_args(pid) == self.argv]
            self._main_pid = (own or kids or [None])[0]
        return self._main_pid

    def tree(self) -> list[int]:
        """The daemon and its descendants (ours: master + worker; dockerd: + containerd)."""
        pid = self.main_pid()
        return process_tree(pid) if pid else []

    def read_exec_stamp(self) -> int | None:
        """CLOCK_MONOTONIC of the daemon's exec, as written by the sandbox init."""
        if self.exec_ns is None and self.stamp_fd >= 0:
            data = os.read(self.stamp_fd, 64)  # blocks until written or init gone
            os.close(self.stamp_fd)
            self.stamp_fd = -1
            self.exec_ns = int(data) if data.strip() else None
        return self.exec_ns

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return b"\n".join(fh.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> float | None:
        """Stop the daemon and its sandbox; returns seconds from SIGTERM to exit.

        SIGTERM goes to the daemon itself (a signal to PID 1 of a namespace is
        dropped unless its handler is installed yet); if the sandbox is still
        there after ``timeout``, SIGKILL to its init takes the whole PID
        namespace down, and SIGKILL to the unshare's process group finishes
        what is left on this side.
        """
        took: float | None = None
        try:
            if self.alive():
                target = self.main_pid()
                t0 = time.monotonic()
                try:
                    if target:
                        os.kill(target, signal.SIGTERM)
                    else:
                        self._kill_init()
                    self.proc.wait(timeout)
                    took = time.monotonic() - t0
                except subprocess.TimeoutExpired:
                    print(f"  [{self.name}] did not stop in {timeout:.0f}s; killing its sandbox", file=sys.stderr)
                    self._kill_init()
                    try:
                        self.proc.wait(10)
                    except subprocess.TimeoutExpired:
                        self._killpg()
                        self.proc.wait(10)
        finally:
            if self.stamp_fd >= 0:
                os.close(self.stamp_fd)
                self.stamp_fd = -1
            _LIVE.discard(self)
        return took

    def restart(self) -> int:
        """Stop the daemon (SIGTERM) and start it again in the same sandbox, whose other processes
        (containers, shims) run on; returns the old daemon's PID (gone once it has stopped)."""
        init, old = self.init_pid(), self.main_pid()
        if not init or not old:
            raise RuntimeError(f"{self.name}: no sandbox to restart in")
        os.kill(init, signal.SIGUSR1)
        return old

    def _kill_init(self) -> None:
        init = self.init_pid()
        if init:
            try:
                os.kill(init, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            self._killpg()

    def _killpg(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def cleanup(self) -> None:
        """Remove the work directory; only once every process is gone."""
        if self.alive():
            raise RuntimeError(f"{self.name} still running; not removing {self.workdir}")
        from engine.sys.fs import safe_rmtree  # late: keeps the sandbox init lean

        safe_rmtree(self.workdir)


def start_daemon(spec: DaemonSpec, notify_socket: str | None = None, workdir: str | None = None) -> Daemon:
    """Start ``spec`` in its own sandbox and a fresh work directory.

    Returns at once (the daemon is starting); pair with :meth:`Daemon.stop`
    and :meth:`Daemon.cleanup` in a ``finally``.

    :param notify_socket: path to give the daemon as ``NOTIFY_SOCKET``.
    """
    if not spec.available:
        raise RuntimeError(f"{spec.name}: {spec.why_unavailable}")
    workdir = workdir or tempfile.mkdtemp(prefix=f"bench-{spec.name}-")
    argv, sock = spec.prepare(workdir)
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    if notify_socket:
        env["NOTIFY_SOCKET"] = notify_socket
    log_path = os.path.join(workdir, "daemon.log")
    stamp_r, stamp_w = os.pipe()
    init = [sys.executable, "-I", "-S", str(Path(__file__).resolve()), "--sandbox-init", "--stamp-fd", str(stamp_w)]
    for path in spec.hide:
        init += ["--hide", path]
    cmd = [
        "unshare",
        "--mount",
        "--net",
        "--pid",
        "--fork",
        "--mount-proc",
        "--propagation",
        "private",
        *init,
        "--",
        *argv,
    ]
    with open(log_path, "ab") as log:
        spawn = time.monotonic_ns()
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=spec.cwd or str(REPO_ROOT),
                pass_fds=(stamp_w,),
                start_new_session=True,
            )  # our Ctrl-C must not reach it
        except BaseException:
            os.close(stamp_r)
            raise
        finally:
            os.close(stamp_w)
    daemon = Daemon(spec, workdir, sock, proc, spawn, stamp_r, log_path, argv=list(argv))
    _LIVE.add(daemon)
    return daemon


def export_source(rev: str, paths: Sequence[str] = ("engine",)) -> str:
    """``git archive <rev> <paths>`` unpacked into a fresh ``/tmp/bench-src-*``.

    So a bench can run a committed revision of our daemon while the checkout
    is being edited. The caller removes the directory (plain files only).
    Installed plugins still come from where they are installed.
    """
    tmp = tempfile.mkdtemp(prefix="bench-src-")
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", rev, "--", *paths],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True, timeout=60)
        return tmp
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise


def git_rev(rev: str) -> str:
    """The full commit hash of ``rev``."""
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.strip()


def stop_all() -> None:
    """Stop every daemon still registered (atexit, signal handlers)."""
    for daemon in list(_LIVE):
        try:
            daemon.stop(timeout=20)
            daemon.cleanup()
        except Exception as exc:  # keep stopping the others
            print(f"cleanup of {daemon.name} ({daemon.workdir}) failed: {exc}", file=sys.stderr)


def install_signal_handlers() -> None:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so ``finally`` blocks run."""

    def raise_interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupt)


atexit.register(stop_all)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def run_in_thread(fn: Callable[[], Any]) -> Callable[..., Any]:
    """Run ``fn`` in a thread; the returned callable joins it and returns (or raises) its result."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the joiner
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def join(timeout: float | None = None) -> Any:
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError("thread did not finish")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    return join


# --------------------------------------------------------------------------
# statistics and output


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def fmt_number(v: float | None, nd: int = 1) -> str:
    """``v`` for a table cell: ``nd`` decimals and thousands separators; ``-`` if None or NaN (not measured)."""
    return "-" if v is None or v != v else f"{v:,.{nd}f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    """A plain aligned table: first column left-aligned, the rest right-aligned."""
    cells = [[str(h) for h in headers]] + [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return "  ".join(parts).rstrip()

    if title:
        print(f"\n{title}")
    print(fmt(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(fmt(row))


def _git_rev() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def dockerd_version(path: str = DOCKERD) -> str | None:
    try:
        return subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def host_info() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "engine_git": _git_rev(),
        "dockerd": dockerd_version() if os.access(DOCKERD, os.X_OK) else None,
    }


def write_json(data: dict[str, Any], bench: str, path: str | None = None) -> str:
    """Write ``data`` (plus host info) to ``path`` or ``bench/results/<bench>-<timestamp>.json``."""
    if path is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = str(RESULTS_DIR / f"{bench}-{stamp}.json")
    else:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    record = {
        "bench": bench,
        "time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": host_info(),
        **data,
    }
    with open(path, "w") as fh:
        json.dump(record, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")
    return path


# --------------------------------------------------------------------------
# the sandbox's PID 1 (run as a script: keep it stdlib-only and quick)

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def _loopback_up() -> None:
    """``ip link set lo up`` with one ioctl: no pyroute2/iproute2 needed."""
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH22x", b"lo", 0)  # struct ifreq is 40 bytes
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def _hide(path: str) -> None:
    """Cover ``path`` with an empty tmpfs, in this (private) mount namespace only."""
    import ctypes

    if not os.path.isdir(path) or os.path.islink(path):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    ms_nosuid, ms_nodev = 2, 4
    if libc.mount(b"tmpfs", path.encode(), b"tmpfs", ms_nosuid | ms_nodev, b"mode=0755") != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs on {path}: {os.strerror(err)}")


def _sandbox_init(argv: list[str]) -> int:
    """PID 1: set up, fork+exec the daemon, reap, exit with the daemon.

    SIGUSR1 restarts the daemon instead (:meth:`Daemon.restart`): SIGTERM to
    it, and when it has exited, the same command again, in the same
    namespaces, with what else runs in them left running.
    """
    stamp_fd = -1
    hide: list[str] = []
    while argv and argv[0] != "--":
        opt = argv.pop(0)
        if opt == "--stamp-fd":
            stamp_fd = int(argv.pop(0))
        elif opt == "--hide":
            hide.append(argv.pop(0))
        else:
            print(f"sandbox init: unknown option {opt}", file=sys.stderr)
            return 2
    cmd = argv[1:]
    if os.getpid() != 1 or not cmd:
        print("sandbox init: must run as PID 1 with a command", file=sys.stderr)
        return 2
    _loopback_up()
    for path in hide:
        _hide(path)

    # Handlers first: a PID 1 drops signals it has no handler for.
    child = 0

    def forward(signum: int, _frame: Any) -> None:
        if child:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    restarting = False

    def restart(_signum: int, frame: Any) -> None:
        nonlocal restarting
        restarting = True
        forward(signal.SIGTERM, frame)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    signal.signal(signal.SIGUSR1, restart)

    def spawn(stamp: int) -> int:
        pid = os.fork()
        if pid == 0:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                signal.signal(sig, signal.SIG_DFL)
            if stamp >= 0:
                os.write(stamp, b"%d\n" % time.monotonic_ns())
                os.close(stamp)
            try:
                os.execvp(cmd[0], cmd)
            finally:
                os._exit(127)
        return pid

    child = spawn(stamp_fd)
    if stamp_fd >= 0:
        os.close(stamp_fd)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if pid == child and restarting:
            restarting = False
            child = spawn(-1)
        elif pid == child:
            # Exiting as PID 1 kills whatever is left in the namespace.
            return os.waitstatus_to_exitcode(status) if not os.WIFSIGNALED(status) else 128 + os.WTERMSIG(status)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--sandbox-init":
    sys.exit(_sandbox_init(sys.argv[2:]))
