"""Exec bench: ``docker exec c true`` latency (what a Kubernetes exec probe costs); ours vs dockerd.

What it measures, for our daemon (``engine -d``, the native exec driver)
and, in the same run, for the reference ``dockerd`` 20.10 (containerd,
``containerd-shim-runc-v2``, runc), each in its own sandbox (``_common.py``),
``-s vfs`` on both (exec touches no layer):

1. one ``docker run -d --net none busybox sleep 3600`` per daemon, then one
   untimed warm-up exec each;
2. **CLI**: ``--reps`` (30) rounds of ``docker exec <id> true`` with the
   real docker CLI (the daemons take turns: A B, B A, ...), wall time of the
   CLI process: ``/_ping``, ``POST /containers/<id>/exec``, ``POST
   /exec/<id>/start`` (hijacked, until the process exits), ``GET
   /exec/<id>/json`` for the exit code;
3. **API**: the same three requests without the CLI (``http.client`` over
   the unix socket, ``/v1.41``), each timed: create, start (until the
   stream ends: the process exited), inspect (its ExitCode must be 0).

Reported: median, min and p90 per daemon, and ours/dockerd. The target
(issue 16): our CLI median at most 0.5 x dockerd's. Results go to
``bench/results/exec-<time>.json``.

Usage (root)::

    python3 bench/bench_exec.py [--reps 30] [--no-dockerd]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import bench_containers as BC

#: The issue's target: our CLI exec at most this times dockerd's.
TARGET_RATIO = 0.5


def api_exec(side: BC.Side, cid: str) -> dict[str, float]:
    """``true`` through the API: create, start (to the end of the stream), inspect; ms per step."""
    t0 = time.perf_counter_ns()
    created = side.api.json(
        "POST", f"/containers/{cid}/exec", {"Cmd": ["true"], "AttachStdout": True, "AttachStderr": True}, (201,)
    )
    t1 = time.perf_counter_ns()
    side.api.call("POST", f"/exec/{created['Id']}/start", {"Detach": False, "Tty": False})
    t2 = time.perf_counter_ns()
    info = side.api.json("GET", f"/exec/{created['Id']}/json")
    t3 = time.perf_counter_ns()
    if info.get("ExitCode") != 0 or info.get("Running"):
        raise BC.BenchError(
            f"{side.name}: exec of true ended {info.get('ExitCode')!r} (running: {info.get('Running')})"
        )
    return {"create": (t1 - t0) / 1e6, "start": (t2 - t1) / 1e6, "inspect": (t3 - t2) / 1e6, "total": (t3 - t0) / 1e6}


def run_pair(args: argparse.Namespace, specs: list[C.DaemonSpec], archive: str, tmp: str) -> dict[str, Any]:
    """Start the daemons, run one container each, time the execs, remove it, stop them."""
    sides: list[BC.Side] = []
    out: dict[str, Any] = {}
    with BC.closing_sides(sides):
        for spec in specs:
            side = BC.start_side(spec, args.docker, tmp, archive)
            sides.append(side)
            _wall, cid = BC.cli_run_d(side, 3600)
            side.out["container"] = cid
            side.cli.run("exec", cid, "true")  # warm-up: first-use costs are not what is compared
            api_exec(side, cid)
        window = BC.CpuWindow([s.daemon for s in sides])
        cli: dict[str, list[float]] = {s.name: [] for s in sides}
        for _i, side in BC.take_turns(sides, args.reps):
            wall, _ = side.cli.run("exec", side.out["container"], "true")
            cli[side.name].append(wall * 1000)
        cpu_cli = window.stop()
        window = BC.CpuWindow([s.daemon for s in sides])
        api: dict[str, list[dict[str, float]]] = {s.name: [] for s in sides}
        for _i, side in BC.take_turns(sides, args.reps):
            api[side.name].append(api_exec(side, side.out["container"]))
        cpu_api = window.stop()
        for side in sides:
            side.out["cli_ms"] = cli[side.name]
            side.out["api_ms"] = api[side.name]
            side.out["cpu"] = {"cli": cpu_cli, "api": cpu_api}
        print(f"  other work: {max(cpu_cli['other_busy'], cpu_api['other_busy']):.0%} of the CPUs", flush=True)
        BC.cleanup(sides, timed=False)
        for side in sides:
            if not side.daemon.alive():
                raise BC.BenchError(f"{side.name} died during the bench:\n{side.daemon.log_tail()}")
            out[side.name] = side.out
    return out


def report(res: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Print the table; the summary (medians and ratios) for the JSON."""
    summary: dict[str, Any] = {}
    for name in names:
        r = res[name]
        summary[name] = {
            "cli": BC.stats_ms(r["cli_ms"]),
            **{step: BC.stats_ms([x[step] for x in r["api_ms"]]) for step in ("create", "start", "inspect", "total")},
        }
    rows = []
    for key, label in [
        ("cli", "docker exec c true (CLI)"),
        ("total", "API: create + start + inspect"),
        ("create", "  POST /containers/{id}/exec"),
        ("start", "  POST /exec/{id}/start (to exit)"),
        ("inspect", "  GET /exec/{id}/json"),
    ]:
        row = [label]
        for name in names:
            s = summary[name][key]
            row.append(f"{s['median']:.1f} (p90 {s['p90']:.1f})")
        if "dockerd" in names and "engine" in names:
            ratio = summary["engine"][key]["median"] / summary["dockerd"][key]["median"]
            summary.setdefault("ratio", {})[key] = ratio
            row.append(f"{ratio:.2f}")
        rows.append(row)
    headers = ["ms, median", *names] + (["engine/dockerd"] if len(names) > 1 else [])
    C.print_table(headers, rows, title="exec latency")
    if "ratio" in summary:
        ok = summary["ratio"]["cli"] <= TARGET_RATIO
        print(f"target: CLI exec <= {TARGET_RATIO} x dockerd: {'met' if ok else 'NOT met'}")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = BC.small_bench_args(__doc__ or "", "exec", 30, "timed execs per daemon, CLI and API each", argv)

    def specs(with_dockerd: bool) -> list[C.DaemonSpec]:
        return [C.engine_spec(args.engine_arg)] + ([C.dockerd_spec(args.dockerd)] if with_dockerd else [])

    return BC.small_bench("exec", args, specs, functools.partial(run_pair, args), report)


if __name__ == "__main__":
    sys.exit(main())
