"""Seccomp bench: what the default seccomp profile adds to ``docker run --rm``; ours vs dockerd.

For our daemon (``engine -d``, the native exec driver, which compiles
Docker's default profile with libseccomp and loads it in the container's
init) and, in the same run, the reference ``dockerd`` 20.10 (runc loads
the same profile), each in its own sandbox (``_common.py``), ``-s overlay``
against ``overlay2`` and ``--net none`` on both:

1. one untimed warm-up of each variant per daemon;
2. ``--reps`` (20) rounds; in each, both daemons take turns (A B, B A, ...)
   and run ``docker run --rm --net none busybox true`` with the default
   profile and with ``--security-opt seccomp=unconfined`` (which of the
   two goes first alternates every round), with the real docker CLI and
   ``sync(2)`` before each run.

Before anything is timed, a default container of each daemon must show
``Seccomp: 2`` (filter mode) in ``/proc/self/status`` and an unconfined one
``Seccomp: 0``. Reported: medians per variant, the **added time** (median
of the per-round differences, default minus unconfined, which drift on the
machine does not move) and ours/dockerd. Results go to
``bench/results/seccomp-<time>.json``.

Usage (root)::

    python3 bench/bench_seccomp.py [--reps 20] [--no-dockerd]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import bench_containers as BC

VARIANTS = {"default": [], "unconfined": ["--security-opt", "seccomp=unconfined"]}


def seccomp_mode(side: BC.Side, flags: list[str]) -> str:
    """The ``Seccomp:`` line of a container's ``/proc/self/status``."""
    _wall, out = side.cli.run(
        "run", "--rm", "--net", "none", *flags, BC.IMAGE, "grep", "^Seccomp:", "/proc/self/status"
    )
    return out.split()[-1] if out.split() else ""


def run_rm(side: BC.Side, flags: list[str]) -> float:
    """One timed ``docker run --rm``; ms."""
    os.sync()  # the previous run's writes and deletions are flushed now, not during this one
    wall, _ = side.cli.run("run", "--rm", "--net", "none", *flags, BC.IMAGE, "true")
    return wall * 1000


def run_sides(args: argparse.Namespace, specs: list[C.DaemonSpec], archive: str, tmp: str) -> dict[str, Any]:
    sides: list[BC.Side] = []
    out: dict[str, Any] = {}
    with BC.closing_sides(sides):
        for spec in specs:
            side = BC.start_side(spec, args.docker, tmp, archive)
            sides.append(side)
            modes = {name: seccomp_mode(side, flags) for name, flags in VARIANTS.items()}
            if modes != {"default": "2", "unconfined": "0"}:
                raise BC.BenchError(f"{side.name}: Seccomp in /proc/self/status was {modes}, not filter / off")
            for flags in VARIANTS.values():
                run_rm(side, flags)  # warm-up
        window = BC.CpuWindow([s.daemon for s in sides])
        times: dict[str, dict[str, list[float]]] = {s.name: {v: [] for v in VARIANTS} for s in sides}
        for i, side in BC.take_turns(sides, args.reps):
            order = list(VARIANTS) if i % 2 == 0 else list(VARIANTS)[::-1]
            for variant in order:
                times[side.name][variant].append(run_rm(side, VARIANTS[variant]))
        cpu = window.stop()
        print(f"  other work: {cpu['other_busy']:.0%} of the CPUs", flush=True)
        BC.cleanup(sides, timed=False)
        for side in sides:
            out[side.name] = {"ms": times[side.name], "cpu": cpu}
    return out


def report(res: dict[str, Any], names: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in names:
        ms = res[name]["ms"]
        added = [d - u for d, u in zip(ms["default"], ms["unconfined"])]
        summary[name] = {
            "default": BC.stats_ms(ms["default"]),
            "unconfined": BC.stats_ms(ms["unconfined"]),
            "added_median": C.median(sorted(added)),
        }
    rows = []
    for key, label in [("default", "run --rm, default profile"), ("unconfined", "run --rm, seccomp=unconfined")]:
        rows.append([label, *[f"{summary[n][key]['median']:.1f} (p90 {summary[n][key]['p90']:.1f})" for n in names]])
    rows.append(["added by the profile (per-round median)", *[f"{summary[n]['added_median']:.1f}" for n in names]])
    C.print_table(["ms, median", *names], rows, title="seccomp's cost")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = BC.small_bench_args(__doc__ or "", "seccomp", 20, "timed rounds per daemon", argv)

    def specs(with_dockerd: bool) -> list[C.DaemonSpec]:
        ours = [C.engine_spec(args.engine_arg, storage_driver="overlay")]
        return ours + ([C.dockerd_spec(args.dockerd, storage_driver="overlay2")] if with_dockerd else [])

    return BC.small_bench("seccomp", args, specs, functools.partial(run_sides, args), report)


if __name__ == "__main__":
    sys.exit(main())
