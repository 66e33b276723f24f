"""Scale bench: how ``run -d``, ``ps``, inspect and memory grow with 10 to 1,000 running containers; ours vs dockerd.

One daemon at a time (ours, then the reference ``dockerd`` 20.10), each in
its own sandbox (``_common.py``), ``-s overlay`` against ``overlay2``,
``--net none`` containers running ``busybox sleep``. The daemon is filled
with running containers through the API (create + start); at each of the
``--steps`` (10, 100, 500, 1000 running containers):

1. **run -d**: ``--runs`` (10) ``docker run -d --net none busybox sleep``
   with the stock CLI, one at a time, ``sync(2)`` before each (these
   containers count towards the next step);
2. **ps with 16 clients**: ``--clients`` (16) threads, each on its own
   keep-alive connection, send ``--lists`` (10) ``GET /containers/json``
   each, all at once; every answer must list every running container.
   Median and p99 of the latencies;
3. **inspect with 16 clients**: the same with ``GET /containers/{id}/json``
   of random running containers, ``--inspects`` (50) per client;
4. **memory**: RSS and PSS (``smaps_rollup``) of every process of the
   daemon's sandbox but the containers' own (``sleep``): ours the gunicorn
   master and worker, the shims' fork server and the shims; dockerd,
   containerd and ``containerd-shim-runc-v2``.

At the ``--restart-at`` step (500), the daemon is restarted with its
containers left running (live restore: ours by design, dockerd with
``--live-restore``): SIGTERM, and once it has exited the same command again
in the same sandbox; timed from the exit to the first
``GET /containers/json`` that lists every container (and the stop apart).

With ``--ksm PAGES`` the host's ksmd runs for the bench (``PAGES`` pages
every 20 ms; its settings are put back at the end), our daemon runs with
``--shim-memory-merge``, and each step's memory is taken after ksmd's next
two full scans; ksmd's CPU time in the step is reported next to it. dockerd's
processes do not opt in, so ksmd leaves them alone.

The containers of a daemon are removed (``docker rm -f``, batches of 50)
before the next daemon starts. A table per step, and, with
``matplotlib`` installed, a plot of the three curves
(``bench/results/scale-<time>.png``).

Usage (root)::

    python3 bench/bench_scale.py [--steps 10,100,500,1000] [--no-dockerd] [--ksm 1000]
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import bench_containers as BC

SLEEP = "86400"


def fill(side: BC.Side, count: int) -> None:
    """Create and start containers through the API until ``count`` run."""
    while len(side.running) < count:
        sample = BC.raw_create_start(side.api, ["sleep", SLEEP], True)
        side.ids.add(sample.id)
        side.running.append(sample.id)


def run_d(side: BC.Side, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        os.sync()
        wall, _cid = BC.cli_run_d(side, int(SLEEP))
        out.append(wall * 1000)
    return out


def concurrent(side: BC.Side, clients: int, per_client: int, path_of: Any, check: Any) -> list[float]:
    """``clients`` threads at once, ``per_client`` requests each on their own connection; the latencies, ms."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(n: int) -> None:
        rng = random.Random(n)
        conn = side.api.connect()
        mine = []
        try:
            barrier.wait()
            for _ in range(per_client):
                t0 = time.perf_counter()
                _status, body = side.api.call("GET", path_of(rng), conn=conn)
                mine.append((time.perf_counter() - t0) * 1000)
                check(body)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
        finally:
            conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise BC.BenchError(f"{side.name}: {len(errors)} clients failed, the first: {errors[0]!r}")
    return latencies


def sandbox_pids(side: BC.Side) -> tuple[list[int], list[int]]:
    """The processes (PIDs here) of the daemon's sandbox, but its init, and the containers' inits.

    Members are found by PID namespace, not by descent: a daemon started again
    inside the sandbox (:func:`restart`) is not the init's descendant. A
    container's init is in a PID namespace of its own, whose parent (the
    shim) is a member.
    """
    init = side.daemon.init_pid()
    if init is None:
        return [], []
    ns = os.readlink(f"/proc/{init}/ns/pid")
    members, others = [], []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == init:
            continue
        try:
            (members if os.readlink(f"/proc/{entry}/ns/pid") == ns else others).append(int(entry))
        except OSError:
            continue
    inside = set(members)
    return members, [p for p in others if BC.parent_pid(p) in inside]


def sandbox_memory(side: BC.Side) -> dict[str, Any]:
    """RSS/PSS of the sandbox's processes but the containers' and the sandbox init."""
    pids, containers = sandbox_pids(side)
    mem = C.measure_memory(pids)
    by_kind: dict[str, float] = {}
    for pid, m in zip(pids, mem.per_process):
        # containerd-shim-runc-v2, ours (engine.shim); not our daemon's --shim-memory-merge.
        shim = "shim" in C.comm(pid) or "engine.shim" in BC.cmdline(pid)
        kind = "shims" if shim else C.comm(pid)
        by_kind[kind] = by_kind.get(kind, 0.0) + m["pss_kib"] / 1024
    return {
        "rss_mib": round(mem.rss_mib, 1),
        "pss_mib": round(mem.pss_mib, 1),
        "processes": len(pids),
        "containers": len(containers),
        "pss_by_kind_mib": {k: round(v, 1) for k, v in sorted(by_kind.items())},
    }


def restart(side: BC.Side, expect: int) -> dict[str, float]:
    """Restart the daemon in its sandbox, its containers running (:meth:`_common.Daemon.restart`);
    seconds to the old daemon's exit, and from its exit to the first ``/containers/json``
    that lists ``expect`` containers."""
    side.api.close()
    started = time.monotonic()
    old = side.daemon.restart()
    if not C.wait_until(lambda: not os.path.exists(f"/proc/{old}"), 120, interval=0.005):
        raise BC.BenchError(f"{side.name}: did not stop within 120 s of SIGTERM")
    stopped = time.monotonic()

    def ready() -> bool:
        try:
            listed = side.api.json("GET", "/containers/json")
        except Exception:
            side.api.close()
            return False
        return len(listed) >= expect

    if not C.wait_until(ready, 300, interval=0.02):
        raise BC.BenchError(
            f"{side.name}: not ready with {expect} containers within 300 s of its restart:\n" + side.daemon.log_tail(15)
        )
    return {"stop_s": stopped - started, "ready_s": time.monotonic() - stopped}


def bench_daemon(
    args: argparse.Namespace, spec: C.DaemonSpec, archive: str, tmp: str, ksmd: C.Ksmd | None = None
) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    sides: list[BC.Side] = []
    with BC.closing_sides(sides):
        side = BC.start_side(spec, args.docker, tmp, archive)
        sides.append(side)
        steps_out: dict[int, Any] = {}
        steps["idle"] = sandbox_memory(side)
        for step in args.steps:
            t0 = time.monotonic()
            ksmd_cpu = C.Ksmd.cpu_seconds()
            fill(side, step)
            filled = time.monotonic() - t0
            running = set(side.running)

            def check_list(body: bytes, want: int = len(running)) -> None:
                if body.count(b'"Id"') < want:
                    raise BC.BenchError(f"{side.name}: /containers/json listed fewer than {want}")

            ps = concurrent(side, args.clients, args.lists, lambda _rng: "/containers/json", check_list)
            ids = sorted(running)
            inspect = concurrent(
                side,
                args.clients,
                args.inspects,
                lambda rng, ids=ids: f"/containers/{rng.choice(ids)}/json",
                lambda body: None,
            )
            time.sleep(args.settle)
            merged = None
            if ksmd is not None:
                merged = ksmd.settle(sandbox_pids(side)[0])
                merged["step_cpu_s"] = round(C.Ksmd.cpu_seconds() - ksmd_cpu, 2)
            memory = sandbox_memory(side)
            if memory["containers"] < step:
                raise BC.BenchError(f"{side.name}: {memory['containers']} container processes, not {step}")
            runs = run_d(side, args.runs)
            out: dict[str, Any] = {
                "fill_s": round(filled, 2),
                "run_d_ms": runs,
                "ps_ms": ps,
                "inspect_ms": inspect,
                "memory": memory,
            }
            if merged is not None:
                out["ksm"] = merged
            if step == args.restart_at:
                out["restart"] = restart(side, len(side.running))
            steps_out[step] = out
            ps_s, in_s, rd = BC.stats_ms(ps), BC.stats_ms(inspect), BC.stats_ms(runs)
            print(
                f"  {side.name:8s} {step:5d} running: run -d {rd['median']:6.1f} ms  ps p50/p99 "
                f"{ps_s['median']:7.1f}/{C.percentile(sorted(ps), 99):7.1f} ms  inspect p50/p99 "
                f"{in_s['median']:6.1f}/{C.percentile(sorted(inspect), 99):6.1f} ms  memory RSS "
                f"{memory['rss_mib']:8.1f} PSS {memory['pss_mib']:8.1f} MiB"
                + (
                    f"  restart: stop {out['restart']['stop_s']:.2f} s, ready after {out['restart']['ready_s']:.2f} s"
                    if "restart" in out
                    else ""
                )
                + (
                    f"\n           ksmd: {merged['wait_s']} s to two more full scans; its CPU time "
                    f"{merged['step_cpu_s']} s in the step; {merged['pages_sharing']} pages merged into "
                    f"{merged['pages_shared']}"
                    if merged is not None
                    else ""
                ),
                flush=True,
            )
        steps["steps"] = steps_out
        try:
            BC.cleanup(sides)
        except BC.BenchError as exc:
            # The figures stand; a clean-up that fails (dockerd removing 50 of 1,000 containers
            # took over 300 s once) is reported with them, and the sandbox goes anyway.
            steps["cleanup_error"] = str(exc)[:500]
            print(f"  clean-up failed (the figures stand; the sandbox is killed): {exc}", file=sys.stderr)
    return steps


def report(results: dict[str, Any], names: list[str], steps: list[int]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    rows = []
    for step in steps:
        for name in names:
            s = results[name]["steps"][step]
            ps, inspect = sorted(s["ps_ms"]), sorted(s["inspect_ms"])
            row = {
                "run_d_median_ms": C.median(sorted(s["run_d_ms"])),
                "ps_p50_ms": C.median(ps),
                "ps_p99_ms": C.percentile(ps, 99),
                "inspect_p50_ms": C.median(inspect),
                "inspect_p99_ms": C.percentile(inspect, 99),
                "rss_mib": s["memory"]["rss_mib"],
                "pss_mib": s["memory"]["pss_mib"],
                "restart_ready_s": (s.get("restart") or {}).get("ready_s"),
            }
            summary.setdefault(name, {})[step] = row
            rows.append(
                [
                    step,
                    name,
                    f"{row['run_d_median_ms']:.1f}",
                    f"{row['ps_p50_ms']:.1f} / {row['ps_p99_ms']:.1f}",
                    f"{row['inspect_p50_ms']:.1f} / {row['inspect_p99_ms']:.1f}",
                    f"{row['rss_mib']:.0f} / {row['pss_mib']:.0f}",
                    "" if row["restart_ready_s"] is None else f"{row['restart_ready_s']:.2f}",
                ]
            )
    C.print_table(
        [
            "running",
            "daemon",
            "run -d ms",
            "ps p50 / p99 ms (16 clients)",
            "inspect p50 / p99 ms",
            "memory RSS / PSS MiB",
            "ready after restart s",
        ],
        rows,
        title="scale",
    )
    for name in names:
        idle = results[name]["idle"]
        print(f"  {name}: idle, no container: RSS {idle['rss_mib']} / PSS {idle['pss_mib']} MiB")
    return summary


def plot(summary: dict[str, Any], names: list[str], steps: list[int], path: str) -> str | None:
    """The three curves as one PNG; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (no plot: pip install matplotlib)")
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = [
        ("run_d_median_ms", "docker run -d, median ms"),
        ("ps_p99_ms", "GET /containers/json p99 ms, 16 clients"),
        ("pss_mib", "daemon + shims PSS MiB"),
    ]
    for ax, (key, title) in zip(axes, panels):
        for name in names:
            ax.plot(steps, [summary[name][s][key] for s in steps], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("running containers")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--steps", default="10,100,500,1000", help="running containers at each step")
    ap.add_argument("--runs", type=int, default=10, help="CLI run -d at each step (default 10)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent API clients (default 16)")
    ap.add_argument("--lists", type=int, default=10, help="GET /containers/json per client (default 10)")
    ap.add_argument("--inspects", type=int, default=50, help="GET /containers/{id}/json per client (default 50)")
    ap.add_argument("--restart-at", type=int, default=500, help="step at which the daemon restarts (0: never)")
    ap.add_argument("--settle", type=float, default=2.0, help="idle seconds before the memory (default 2)")
    ap.add_argument("--no-dockerd", action="store_true", help="measure our daemon only")
    ap.add_argument("--dockerd", default=C.DOCKERD, help=f"reference dockerd binary (default {C.DOCKERD})")
    ap.add_argument("--docker", default=BC.DOCKER_CLI, help=f"the docker CLI (default {BC.DOCKER_CLI})")
    ap.add_argument("--engine-arg", action="append", default=[], help="extra flag for our daemon (repeatable)")
    ap.add_argument(
        "--ksm",
        type=int,
        default=0,
        metavar="PAGES",
        help="turn the host's ksmd on for the run, PAGES pages per 20 ms (its settings are put back), run our "
        "daemon with --shim-memory-merge, and measure the memory after two more full scans (default 0: off)",
    )
    ap.add_argument("--json", metavar="PATH", help="where to write the JSON (default bench/results/scale-<time>.json)")
    args = ap.parse_args(argv)
    args.steps = sorted({int(s) for s in args.steps.split(",") if s})

    ksmd = C.Ksmd(args.ksm) if args.ksm > 0 else None

    def specs(with_dockerd: bool) -> list[C.DaemonSpec]:
        merge = ["--shim-memory-merge"] if ksmd is not None else []
        ours = [C.engine_spec([*args.engine_arg, *merge], storage_driver="overlay")]
        live = C.dockerd_spec(args.dockerd, extra_args=["--live-restore"], storage_driver="overlay2")
        return ours + ([live] if with_dockerd else [])

    def body(chosen: list[C.DaemonSpec], archive: str, tmp: str) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for spec in chosen:
            print(f"\n== {spec.name} -s {spec.driver}", flush=True)
            results[spec.name] = bench_daemon(args, spec, archive, tmp, ksmd)
        return results

    def after(path: str, summary: dict[str, Any]) -> None:
        image = plot(summary, list(summary), args.steps, os.path.splitext(path)[0] + ".png")
        if image:
            print(f"plot: {image}")

    report_steps = functools.partial(report, steps=args.steps)
    if ksmd is None:
        return BC.small_bench("scale", args, specs, body, report_steps, after)
    with ksmd:
        return BC.small_bench("scale", args, specs, body, report_steps, after)


if __name__ == "__main__":
    sys.exit(main())
