"""Archive bench: how fast ``engine.archive.apply_layer`` applies a layer tar, by compression.

No daemon: the library alone, in this process. The layer is the one the
test suite once timed (tests/archive/test_apply.py now checks only what it
produces): ``--big`` files of ``--big-mib`` MiB (default 4 x 20 MiB) and
``--small`` files of 10 KiB (default 2000) of random data, about 100 MiB,
built once per compression (none, gzip, zstd by default) into a temporary
directory. Each of ``--reps`` rounds (default 3) applies it into a fresh
directory on the same file system, after ``sync(2)``, timed from the
``apply_layer`` call to its return; the applied tree is then checked
(size returned, every file there) and removed before the next round.
Reported per compression: median and min seconds, and MiB/s of the
uncompressed content at the median. The JSON record goes to
``bench/results/archive-<time>.json`` (``--json`` elsewhere).

Applying keeps owners, so it runs as root (like the tests that apply
layers). Usage: ``python bench/bench_archive.py [--reps N]
[--compressions none,gzip,zstd] [--big N] [--big-mib N] [--small N]
[--dir PATH] [--json PATH]``; see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C

from engine import archive
from engine.sys.fs import safe_rmtree
from engine.testing.layertar import Entry, compress, layer_tar_chunks

MIB = 1 << 20
COMPRESSIONS = ("none", "gzip", "bzip2", "xz", "zstd")


def layer_entries(big: int, big_mib: int, small: int) -> list[Entry]:
    """``big`` files of ``big_mib`` MiB under ``big/``, ``small`` files of 10 KiB under ``small/``."""
    entries = [Entry.dir("big")]
    entries += [Entry.file(f"big/f{i}", os.urandom(big_mib * MIB)) for i in range(big)]
    entries += [Entry.dir("small")] + [Entry.file(f"small/s{i:05}", os.urandom(10 << 10)) for i in range(small)]
    return entries


def apply_once(layer: str, dest: str, entries: list[Entry]) -> float:
    """Seconds ``apply_layer`` took to apply ``layer`` into ``dest`` (a new directory); checks the result."""
    os.mkdir(dest)
    os.sync()
    with open(layer, "rb") as f:
        start = time.perf_counter()
        size = archive.apply_layer(dest, f)
        elapsed = time.perf_counter() - start
    expected = sum(len(e.data) for e in entries)
    if size != expected:
        raise RuntimeError(f"apply_layer reported {size} bytes, the layer holds {expected}")
    missing = [e.name for e in entries if not os.path.lexists(os.path.join(dest, e.name))]
    if missing:
        raise RuntimeError(f"{len(missing)} entries missing after apply, e.g. {missing[0]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="applies per compression (default 3)")
    ap.add_argument("--compressions", default="none,gzip,zstd", help=f"comma-separated, of {', '.join(COMPRESSIONS)}")
    ap.add_argument("--big", type=int, default=4, help="big files (default 4)")
    ap.add_argument("--big-mib", type=int, default=20, help="MiB per big file (default 20)")
    ap.add_argument("--small", type=int, default=2000, help="10 KiB files (default 2000)")
    ap.add_argument("--dir", help="where the layers and the applied trees go (default a new temporary directory)")
    ap.add_argument(
        "--json", metavar="PATH", help="where to write the JSON (default bench/results/archive-<time>.json)"
    )
    args = ap.parse_args(argv)
    compressions = [c.strip() for c in args.compressions.split(",") if c.strip()]
    bad = [c for c in compressions if c not in COMPRESSIONS]
    if bad or not compressions or args.reps < 1:
        ap.error(f"unknown compression {bad}" if bad else "bad arguments")
    if os.geteuid() != 0:
        print("bench_archive: needs root (applying a layer keeps its owners)", file=sys.stderr)
        return 2
    busy_before = C.busy_before_bench()
    workdir = tempfile.mkdtemp(prefix="bench-archive-", dir=args.dir)
    results: dict[str, Any] = {}
    try:
        entries = layer_entries(args.big, args.big_mib, args.small)
        total = sum(len(e.data) for e in entries)
        tar = b"".join(layer_tar_chunks(entries))
        print(f"layer: {total / MIB:.1f} MiB of content in {len(entries)} entries, in {workdir}")
        for compression in compressions:
            layer = os.path.join(workdir, f"layer.tar.{compression}")
            with open(layer, "wb") as f:
                f.write(compress(tar, compression))
            times = []
            for i in range(args.reps):
                dest = os.path.join(workdir, f"dest-{compression}-{i}")
                times.append(apply_once(layer, dest, entries))
                safe_rmtree(dest)
            median = statistics.median(times)
            results[compression] = {
                "layer_bytes": os.path.getsize(layer),
                "content_bytes": total,
                "seconds": times,
                "median_s": median,
                "min_s": min(times),
                "mib_per_s": total / MIB / median,
            }
            os.unlink(layer)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = [
        [
            c,
            C.fmt_number(r["layer_bytes"] / MIB),
            C.fmt_number(r["median_s"], 2),
            C.fmt_number(r["min_s"], 2),
            C.fmt_number(r["mib_per_s"], 0),
        ]
        for c, r in results.items()
    ]
    C.print_table(["compression", "layer MiB", "median s", "min s", "MiB/s"], rows, title="apply_layer")
    busy_after = C.busy_after_bench()
    path = C.write_json(
        {"args": vars(args), "busy_before": busy_before, "busy_after": busy_after, "results": results},
        "archive",
        args.json,
    )
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
