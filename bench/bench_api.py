"""API bench: /_ping throughput, start-up time and idle memory, ours vs dockerd.

What it measures, for our daemon (``engine -d``) and, in the same run, for
the reference ``dockerd`` (Debian's 20.10, with the containerd it spawns),
each started in its own sandbox (see ``_common.py``) and only one daemon
running at a time, so they never compete for the CPUs:

1. ``GET /_ping`` over the unix socket, with a lean raw-socket HTTP/1.1
   client (the same code for both daemons): (a) one client, one keep-alive
   connection, requests back to back for ``--seconds``; (b) ``--clients``
   (16) concurrent clients, each a separate process (so the client side is
   not serialised by one GIL) with its own keep-alive connection. Reported:
   requests/s, latency p50/p99 (send to last body byte), and the daemon's
   CPU time per request (utime+stime of its process tree / requests): on a
   small machine the clients and the daemon share the cores, and CPU per
   request is the number that does not depend on who got the cores. The
   CPU time used meanwhile by anything else on the machine is reported too
   (``/proc/stat`` minus daemon minus clients), so a disturbed run shows.
2. Start-up: ``NOTIFY_SOCKET`` points at a unix datagram socket we bind;
   time from the daemon's exec (stamped by the sandbox init right before
   ``execve``) to the arrival of ``READY=1`` from the daemon's own PID
   (``SO_PASSCRED``; ours sends it when the worker accepts connections,
   dockerd via go-systemd when its API is up). Also time to the first
   successful ``/_ping``, polled meanwhile. ``--reps`` (5) fresh starts
   per daemon, interleaved; median and min are reported.
3. Memory: RSS and PSS (``/proc/PID/smaps_rollup``) summed over the
   daemon's process tree, after ``--idle`` (3) s idle past READY and again
   1 s after the ping load. Ours: gunicorn master + worker + read replica. dockerd: alone,
   and dockerd + its containerd.

Usage: ``python bench/bench_api.py [--seconds N] [--no-dockerd] [--json PATH]``
(run as root: the sandboxes need ``unshare``). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C

# The targets of the issue, printed next to the results.
TARGET_READY_S = 1.0
TARGET_IDLE_RSS_MIB = 60.0

PING = b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n"


# --------------------------------------------------------------------------
# the client


class HTTPError(Exception):
    """The daemon's answer was not well-formed HTTP/1.1."""


class RawClient:
    """A minimal keep-alive HTTP/1.1 client over a unix socket.

    Just enough HTTP to be correct for any server: status line, headers,
    then a body framed by ``Content-Length``, ``Transfer-Encoding: chunked``
    or (failing both) the end of the connection; ``Connection: close`` and
    HTTP/1.0 without keep-alive make it reconnect. Bytes past one response
    stay buffered for the next. No http.client: its per-request overhead
    would be a large part of what is measured.
    """

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.connects = 0

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.buf.clear()
        self.connects += 1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buf.clear()

    def _fill(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionResetError("server closed the connection")
        self.buf += data

    def _line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def request(self, raw: bytes = PING) -> tuple[int, bytes]:
        """Send one request (``raw`` bytes), return (status, body)."""
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        self.sock.sendall(raw)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        head = bytes(self.buf[:end]).split(b"\r\n")
        del self.buf[: end + 4]
        parts = head[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HTTPError(f"bad status line {head[0]!r}")
        version, status = parts[0], int(parts[1])
        headers: dict[bytes, bytes] = {}
        for line in head[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise HTTPError(f"bad header line {line!r}")
            headers[name.strip().lower()] = value.strip()
        conn = headers.get(b"connection", b"").lower()
        keep = b"keep-alive" in conn if version == b"HTTP/1.0" else b"close" not in conn
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            chunks = []
            while True:
                size = int(self._line().split(b";", 1)[0], 16)
                if size == 0:
                    while self._line():  # trailers, up to the empty line
                        pass
                    break
                chunks.append(self._take(size))
                if self._take(2) != b"\r\n":
                    raise HTTPError("chunk not followed by CRLF")
            body = b"".join(chunks)
        elif b"content-length" in headers:
            body = self._take(int(headers[b"content-length"]))
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:  # framed by the end of the connection
            try:
                while True:
                    self._fill()
            except ConnectionResetError:
                pass
            body = bytes(self.buf)
            keep = False
        if not keep:
            self.close()
        return status, body


def ping_ok(path: str, timeout: float = 30.0) -> bool:
    """One /_ping on a fresh connection: True on ``200 OK``, False if not reachable yet."""
    client = RawClient(path, timeout)
    try:
        status, body = client.request()
        return status == 200 and body == b"OK"
    except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        return False
    finally:
        client.close()


# --------------------------------------------------------------------------
# load


def _client_process(path: str, conn: Connection) -> None:
    """One load client (a separate process): connect, report ready, run, report."""
    client = RawClient(path)
    try:
        client.request()  # connect and warm up before the clock starts
        conn.send("ready")
        start_ns, end_ns = conn.recv()
        cpu0 = time.process_time()
        # Sleep, not spin: 16 spinning clients would steal the daemon's CPUs.
        time.sleep(max(0.0, (start_ns - time.monotonic_ns()) / 1e9))
        lat = array("q")
        errors = 0
        last = start_ns
        while True:
            t0 = time.perf_counter_ns()  # CLOCK_MONOTONIC too, on Linux
            if t0 >= end_ns:
                break
            try:
                status, body = client.request()
                ok = status == 200 and body == b"OK"
            except (OSError, HTTPError):
                ok = False
                client.close()  # reconnect on the next request
            last = time.perf_counter_ns()
            if ok:
                lat.append(last - t0)
            else:
                errors += 1
        conn.send(
            {
                "lat": lat.tobytes(),
                "errors": errors,
                "last_ns": last,
                "connects": client.connects,
                "cpu_s": time.process_time() - cpu0,
            }
        )
    except BaseException as exc:  # the parent reports it
        try:
            conn.send({"fatal": repr(exc)})
        except OSError:
            pass
    finally:
        client.close()
        conn.close()


@dataclass
class LoadResult:
    clients: int
    requests: int
    errors: int
    seconds: float
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    connects: int
    cpu_s: float  # daemon tree CPU during the run
    clients_cpu_s: float  # the load clients' own CPU during the run
    other_busy: float  # share of all CPUs used by neither (other work on the machine)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_req(self) -> float:
        return self.cpu_s / self.requests * 1e6 if self.requests else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "req_per_s": round(self.rps, 1),
            "p50_us": round(self.p50_us, 1),
            "p90_us": round(self.p90_us, 1),
            "p99_us": round(self.p99_us, 1),
            "max_us": round(self.max_us, 1),
            "connections": self.connects,
            "daemon_cpu_s": round(self.cpu_s, 3),
            "clients_cpu_s": round(self.clients_cpu_s, 3),
            "other_cpu_busy": round(self.other_busy, 3),
            "daemon_cpu_us_per_req": round(self.cpu_us_per_req, 1),
        }


def run_load(daemon: C.Daemon, clients: int, seconds: float) -> LoadResult:
    """``clients`` processes pinging ``daemon`` for ``seconds``; the same code for any daemon."""
    ctx = mp.get_context("fork")  # cheap, and the children need nothing re-imported
    procs: list[tuple[Any, Connection]] = []
    try:
        for _ in range(clients):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=_client_process, args=(daemon.socket_path, child_end), daemon=True)
            proc.start()
            child_end.close()
            procs.append((proc, parent_end))
        for _proc, pipe in procs:
            if not pipe.poll(30):
                raise RuntimeError("a load client did not connect in 30 s")
            msg = pipe.recv()
            if msg != "ready":
                raise RuntimeError(f"load client failed: {msg}")
        tree = daemon.tree()
        cpu0 = C.cpu_ticks(tree)
        all0, idle0 = C.machine_ticks()
        start = time.monotonic_ns() + 50_000_000  # 50 ms for the go message to reach all
        end = start + int(seconds * 1e9)
        for _proc, pipe in procs:
            pipe.send((start, end))
        results = []
        for _proc, pipe in procs:
            if not pipe.poll(seconds + 60):
                raise RuntimeError("a load client did not report")
            results.append(pipe.recv())
        cpu1 = C.cpu_ticks(tree)
        all1, idle1 = C.machine_ticks()
    finally:
        for proc, pipe in procs:
            pipe.close()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    fatal = [r["fatal"] for r in results if "fatal" in r]
    if fatal:
        raise RuntimeError(f"load clients failed: {fatal}")
    lat = array("q")
    for r in results:
        lat.frombytes(r["lat"])
    ordered = sorted(lat)
    last = max(r["last_ns"] for r in results)
    daemon_cpu = (cpu1 - cpu0) / C.CLK_TCK
    clients_cpu = sum(r["cpu_s"] for r in results)
    # Whatever the machine was busy with besides the daemon and our clients
    # disturbs the comparison: measured, so that a noisy run shows.
    busy = (all1 - all0 - (idle1 - idle0)) / C.CLK_TCK
    other = max(0.0, busy - daemon_cpu - clients_cpu) / max(1e-9, (all1 - all0) / C.CLK_TCK)
    us = [
        v / 1000
        for v in (
            C.percentile(ordered, 50),
            C.percentile(ordered, 90),
            C.percentile(ordered, 99),
            ordered[-1] if ordered else float("nan"),
        )
    ]
    return LoadResult(
        clients=clients,
        requests=len(lat),
        errors=sum(r["errors"] for r in results),
        seconds=(last - start) / 1e9,
        p50_us=us[0],
        p90_us=us[1],
        p99_us=us[2],
        max_us=us[3],
        connects=sum(r["connects"] for r in results),
        cpu_s=daemon_cpu,
        clients_cpu_s=clients_cpu,
        other_busy=other,
    )


# --------------------------------------------------------------------------
# start-up


@dataclass
class StartResult:
    ready_s: float  # exec -> READY=1
    ready_from_spawn_s: float  # our Popen(unshare) -> READY=1 (adds sandbox set-up)
    first_ping_s: float  # exec -> first 200 OK on /_ping
    stop_s: float | None  # SIGTERM -> sandbox gone
    notify: list[str]


def start_and_wait(spec: C.DaemonSpec, timeout: float = 60.0) -> tuple[C.Daemon, C.NotifyListener, StartResult]:
    """Start ``spec`` with a NOTIFY_SOCKET; wait for READY=1 and for the first ping.

    The caller owns (stops and cleans up) the returned daemon, also on error:
    if this raises, it has already done so.
    """
    workdir = tempfile.mkdtemp(prefix=f"bench-{spec.name}-")
    listener = C.NotifyListener(os.path.join(workdir, "notify.sock"))
    daemon: C.Daemon | None = None
    try:
        daemon = C.start_daemon(spec, listener.path, workdir=workdir)
        d = daemon
        # READY=1 counts only from the daemon's own process (not containerd).
        join_ready = C.run_in_thread(lambda: listener.wait_ready(lambda pid: pid == d.main_pid(), timeout))
        deadline = time.monotonic() + timeout
        first_ping_ns = None
        while time.monotonic() < deadline:
            if not d.alive():
                raise RuntimeError(f"{spec.name} exited with {d.proc.returncode}:\n{d.log_tail()}")
            if ping_ok(d.socket_path, timeout=max(1.0, deadline - time.monotonic())):
                first_ping_ns = time.monotonic_ns()
                break
            time.sleep(0.002)  # not listening yet: retry soon (connect fails fast)
        if first_ping_ns is None:
            raise TimeoutError(f"{spec.name}: no successful /_ping in {timeout}s:\n{d.log_tail()}")
        note = join_ready(timeout)
        exec_ns = d.read_exec_stamp()
        if exec_ns is None:
            raise RuntimeError("sandbox init wrote no exec stamp")
        return (
            daemon,
            listener,
            StartResult(
                ready_s=(note.at_ns - exec_ns) / 1e9,
                ready_from_spawn_s=(note.at_ns - d.spawn_ns) / 1e9,
                first_ping_s=(first_ping_ns - exec_ns) / 1e9,
                stop_s=None,
                notify=[f"pid {m.pid}: {m.message!r}" for m in listener.messages],
            ),
        )
    except BaseException:
        if daemon is not None:
            daemon.stop()
            daemon.cleanup()
        else:
            from engine.sys.fs import safe_rmtree

            safe_rmtree(workdir)
        listener.close()
        raise


def stop_and_clean(daemon: C.Daemon, listener: C.NotifyListener) -> float | None:
    try:
        took = daemon.stop()
    finally:
        listener.close()
    daemon.cleanup()
    return took


def measure_starts(specs: list[C.DaemonSpec], reps: int) -> dict[str, list[StartResult]]:
    """``reps`` fresh starts of each daemon, interleaved so drift hits all alike."""
    out: dict[str, list[StartResult]] = {s.name: [] for s in specs}
    for i in range(reps):
        for spec in specs:
            daemon, listener, res = start_and_wait(spec)
            res.stop_s = stop_and_clean(daemon, listener)
            out[spec.name].append(res)
            print(
                f"  start {i + 1}/{reps} {spec.name:8s} ready {res.ready_s * 1000:7.1f} ms  "
                f"first ping {res.first_ping_s * 1000:7.1f} ms  stop {res.stop_s or 0:.2f} s",
                flush=True,
            )
    return out


# --------------------------------------------------------------------------
# memory + load for one daemon


#: What a gunicorn master and its worker import at the least, with the libraries the design
#: prescribes (the Falcon app, SQLAlchemy for the link graph, pyroute2 for netlink, stevedore
#: and pluggy for the drivers), and nothing of the engine's own.
FLOOR_MASTER = "import gunicorn.arbiter, gunicorn.workers.gthread"
FLOOR_WORKER = FLOOR_MASTER + ", falcon, sqlalchemy, pyroute2, stevedore, pluggy"


def stack_floor() -> dict[str, float]:
    """RSS in MiB of a bare interpreter that only imports the stack, as master and as worker:
    the least a daemon built on that stack can weigh before it holds any state of its own."""
    out = {}
    for name, imports in (("master", FLOOR_MASTER), ("worker", FLOOR_WORKER)):
        code = f"{imports}\nprint(open('/proc/self/smaps_rollup').read())"
        text = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        rss_kib = next(int(line.split()[1]) for line in text.splitlines() if line.startswith("Rss:"))
        out[name] = rss_kib / 1024
    out["total"] = out["master"] + out["worker"]
    return out


def measure_daemon(spec: C.DaemonSpec, seconds: float, clients: int, idle: float) -> dict[str, Any]:
    daemon, listener, _start = start_and_wait(spec)
    try:
        time.sleep(idle)  # let start-up garbage and lazy threads settle
        tree = daemon.tree()
        main = daemon.main_pid()
        assert main is not None
        out: dict[str, Any] = {
            "processes": [{"pid": p, "comm": C.comm(p), "threads": C.thread_count(p)} for p in tree],
            "idle": {"tree": C.measure_memory(tree).to_json(), "main": C.measure_memory([main]).to_json()},
        }
        procs = ", ".join(
            f"{p['comm']}[{p['pid']}] {p['rss_kib'] / 1024:.1f}/{p['pss_kib'] / 1024:.1f}"
            for p in out["idle"]["tree"]["processes"]
        )
        print(
            f"  {spec.name}: idle RSS/PSS MiB: tree {out['idle']['tree']['rss_mib']:.1f}/"
            f"{out['idle']['tree']['pss_mib']:.1f} ({procs})",
            flush=True,
        )
        single = run_load(daemon, 1, seconds)
        print(
            f"  {spec.name}: 1 client   {single.rps:9.0f} req/s  p50 {single.p50_us:7.1f} us  "
            f"p99 {single.p99_us:7.1f} us  errors {single.errors}  other work {single.other_busy:.0%}",
            flush=True,
        )
        multi = run_load(daemon, clients, seconds)
        print(
            f"  {spec.name}: {clients} clients {multi.rps:9.0f} req/s  p50 {multi.p50_us:7.1f} us  "
            f"p99 {multi.p99_us:7.1f} us  errors {multi.errors}  other work {multi.other_busy:.0%}",
            flush=True,
        )
        time.sleep(1.0)
        tree = daemon.tree()
        out["after_load"] = {"tree": C.measure_memory(tree).to_json(), "main": C.measure_memory([main]).to_json()}
        out["processes_after_load"] = [{"pid": p, "comm": C.comm(p), "threads": C.thread_count(p)} for p in tree]
        out["ping_1"] = single.to_json()
        out[f"ping_{clients}"] = multi.to_json()
        out["ping_multi"] = out[f"ping_{clients}"]
        if not daemon.alive():
            raise RuntimeError(f"{spec.name} died during the bench:\n{daemon.log_tail()}")
    finally:
        out_stop = stop_and_clean(daemon, listener)
    out["stop_s"] = out_stop
    return out


# --------------------------------------------------------------------------
# report


_fmt = C.fmt_number


def summarize(
    names: list[str], starts: dict[str, list[StartResult]], runs: dict[str, dict[str, Any]], clients: int
) -> tuple[list[list[str]], dict[str, Any]]:
    """The table rows and the JSON summary."""
    summary: dict[str, Any] = {}
    for name in names:
        ready = [s.ready_s for s in starts[name]]
        first = [s.first_ping_s for s in starts[name]]
        spawn = [s.ready_from_spawn_s for s in starts[name]]
        r = runs[name]
        summary[name] = {
            "ready_median_s": C.median(ready),
            "ready_min_s": min(ready),
            "ready_from_spawn_median_s": C.median(spawn),
            "first_ping_median_s": C.median(first),
            "first_ping_min_s": min(first),
            "ping_1_rps": r["ping_1"]["req_per_s"],
            "ping_multi_rps": r["ping_multi"]["req_per_s"],
            "idle_tree_rss_mib": r["idle"]["tree"]["rss_mib"],
            "idle_tree_pss_mib": r["idle"]["tree"]["pss_mib"],
            "idle_main_rss_mib": r["idle"]["main"]["rss_mib"],
            "idle_main_pss_mib": r["idle"]["main"]["pss_mib"],
        }
    eng = summary.get("engine")
    ref = summary.get("dockerd")

    def cell(name: str, fn: Any) -> str:
        return fn(name) if name in summary else "n/a"

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("PASS" if ok else "FAIL")

    rows: list[list[str]] = []

    def add(metric: str, fn: Any, fn_tree: Any = None, target: str = "", ok: bool | None = None) -> None:
        row = [metric, cell("engine", fn)]
        if "dockerd" in names:
            row += [cell("dockerd", fn), cell("dockerd", fn_tree) if fn_tree else ""]
        rows.append(row + [target, verdict(ok)])

    def ping(key: str, field: str, nd: int = 0) -> Any:
        return lambda n: _fmt(runs[n][key][field], nd)

    for key, label in (("ping_1", "1 client"), ("ping_multi", f"{clients} clients")):
        beats = (runs["engine"][key]["req_per_s"] >= runs["dockerd"][key]["req_per_s"]) if ref else None
        add(f"ping {label}: req/s", ping(key, "req_per_s"), target=">= dockerd" if ref else "", ok=beats)
        add(
            f"ping {label}: p50 / p99 us",
            lambda n, k=key: f"{_fmt(runs[n][k]['p50_us'])} / {_fmt(runs[n][k]['p99_us'])}",
        )
        add(f"ping {label}: daemon CPU us/req", ping(key, "daemon_cpu_us_per_req", 1))
        add(f"ping {label}: errors", ping(key, "errors"))
        add(f"ping {label}: other work, % of CPUs", lambda n, k=key: _fmt(runs[n][k]["other_cpu_busy"] * 100, 0))
    add(
        "ready (exec -> READY=1) median / min ms",
        lambda n: f"{_fmt(summary[n]['ready_median_s'] * 1000)} / {_fmt(summary[n]['ready_min_s'] * 1000)}",
        target=f"< {TARGET_READY_S * 1000:.0f}",
        ok=eng["ready_median_s"] < TARGET_READY_S if eng else None,
    )
    add(
        "first /_ping after exec median / min ms",
        lambda n: f"{_fmt(summary[n]['first_ping_median_s'] * 1000)} / {_fmt(summary[n]['first_ping_min_s'] * 1000)}",
    )
    add("ready incl. sandbox set-up, median ms", lambda n: _fmt(summary[n]["ready_from_spawn_median_s"] * 1000))
    add(
        "stop (SIGTERM -> gone), median s",
        lambda n: _fmt(C.median([s.stop_s for s in starts[n] if s.stop_s is not None]), 2),
    )
    for when, label in (("idle", "idle"), ("after_load", "after load")):
        rss_ok = runs["engine"][when]["tree"]["rss_mib"] < TARGET_IDLE_RSS_MIB if when == "idle" else None
        add(
            f"{label} RSS MiB",
            lambda n, w=when: _fmt(runs[n][w]["main" if n == "dockerd" else "tree"]["rss_mib"]),
            lambda n, w=when: _fmt(runs[n][w]["tree"]["rss_mib"]),
            target=f"< {TARGET_IDLE_RSS_MIB:.0f}" if when == "idle" else "",
            ok=rss_ok,
        )
        add(
            f"{label} PSS MiB",
            lambda n, w=when: _fmt(runs[n][w]["main" if n == "dockerd" else "tree"]["pss_mib"]),
            lambda n, w=when: _fmt(runs[n][w]["tree"]["pss_mib"]),
        )
    return rows, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each ping load (default 5)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients of load (b) (default 16)")
    ap.add_argument("--reps", type=int, default=5, help="fresh starts per daemon for start-up time (default 5)")
    ap.add_argument("--idle", type=float, default=3.0, help="idle seconds before the memory sample (default 3)")
    ap.add_argument("--no-dockerd", action="store_true", help="measure our daemon only")
    ap.add_argument("--dockerd", default=C.DOCKERD, help=f"reference dockerd binary (default {C.DOCKERD})")
    ap.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        help="extra flag for our daemon (repeatable), e.g. --engine-arg=-b=none",
    )
    ap.add_argument("--json", metavar="PATH", help="where to write the JSON (default bench/results/api-<time>.json)")
    args = ap.parse_args(argv)

    if os.geteuid() != 0:
        print("bench_api: needs root (unshare of mount/net/pid namespaces)", file=sys.stderr)
        return 2
    C.install_signal_handlers()
    with_dockerd, names, note = C.choose_dockerd(args.no_dockerd, args.dockerd)
    specs = [C.engine_spec(args.engine_arg)] + ([C.dockerd_spec(args.dockerd)] if with_dockerd else [])
    busy_before = C.busy_before_bench("(both daemons suffer, but not necessarily alike)")

    try:
        print(f"\n[1/2] start-up: {args.reps} fresh starts each")
        starts = measure_starts(specs, args.reps)
        runs: dict[str, dict[str, Any]] = {}
        print(f"\n[2/2] idle memory, /_ping load ({args.seconds:g} s each), memory after load")
        for spec in specs:
            runs[spec.name] = measure_daemon(spec, args.seconds, args.clients, args.idle)
    except KeyboardInterrupt:
        print("\ninterrupted; daemons stopped", file=sys.stderr)
        return 130
    finally:
        C.stop_all()

    busy_after = C.busy_after_bench()
    floor = stack_floor()
    rows, summary = summarize(names, starts, runs, args.clients)
    rows.append(
        [
            "idle RSS floor of the stack, MiB (master + worker)",
            f"{floor['total']:.1f} ({floor['master']:.1f} + {floor['worker']:.1f})",
            *(["", ""] if "dockerd" in names else []),
            "",
            "",
        ]
    )
    headers = (
        ["metric", "engine"]
        + (["dockerd", "dockerd+containerd"] if "dockerd" in names else [])
        + ["target (engine)", ""]
    )
    C.print_table(headers, rows, title="Results (engine memory = gunicorn master + worker + read replica)")
    if note:
        print(f"\nnote: {note}")
    path = C.write_json(
        {
            "params": {
                "seconds": args.seconds,
                "clients": args.clients,
                "reps": args.reps,
                "idle_s": args.idle,
                "engine_args": args.engine_arg,
                "dockerd": None if "dockerd" not in names else args.dockerd,
            },
            "note": note or None,
            "other_cpu_busy": {"before": round(busy_before, 3), "after": round(busy_after, 3)},
            "targets": {"ping": ">= dockerd", "ready_s": TARGET_READY_S, "idle_rss_mib": TARGET_IDLE_RSS_MIB},
            "summary": summary,
            "stack_floor_rss_mib": floor,
            "starts": {n: [s.__dict__ for s in starts[n]] for n in names},
            "runs": runs,
        },
        "api",
        args.json,
    )
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
