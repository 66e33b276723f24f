"""Graph driver bench: layer create, snapshot and ``run --rm`` per driver; ours vs dockerd's own driver.

For each driver pair asked for, our daemon (``engine -d -s <ours>``) and, in
the same run, the reference ``dockerd`` 20.10 with its own driver of that
kind (``--storage-driver=<theirs>``), each in its own sandbox
(``_common.py``):

* ``btrfs``: ours ``-s btrfs`` against dockerd's ``btrfs``. Each daemon's
  root is on a btrfs file system of its own, made for the run: a sparse
  file (``--btrfs-gib``, 4) formatted with ``mkfs.btrfs`` and loop-mounted
  in a private mount namespace that the bench enters first, so the mounts
  (and with them the loop devices, which autoclear) go when the bench ends,
  however it ends.
* ``devmapper``: ours ``-s devmapper`` against dockerd's ``devicemapper``
  (loop-backed thin pools, both: sparse loop files of 100 GB of data and
  2 GB of metadata, a 10 GB xfs base device, deferred removal and deletion
  on: each driver's defaults). Only
  where the kernel has device-mapper: elsewhere (this host) the pair
  is reported as not supported, with the driver's own reason, and skipped.
  ``bench/vm-drivers`` runs it in a VM whose kernel has it (below).
* ``overlay`` (``--drivers overlay``, for reference): ours ``-s overlay``
  against ``overlay2``.

Three figures per daemon, each ``--reps`` (10) times, the daemons taking
turns (A B, B A, ...) with ``sync(2)`` before each sample:

1. **layer create**: ``POST /images/load`` of an image of 10 layers
   (busybox's, then nine of 100 files of 1 KiB each); the wall time divided
   by 10 is the cost of one layer (the driver's create of a child of the
   previous layer, the apply of its tar, the registration). The image is
   deleted after each load and must be gone.
2. **snapshot**: ``POST /containers/create`` of busybox (the driver makes
   the init layer and the container's layer, each a snapshot of its parent),
   timed; then ``DELETE`` of it, timed too (the removal of both).
3. **run --rm**: ``docker run --rm --net none busybox true`` with the stock
   CLI.

Reported: medians and p90 per figure and daemon, and ours/dockerd. Target
(issue 15): ours at most dockerd's. Results go to
``bench/results/drivers-<time>.json``, with each daemon's ``DriverStatus``
(``docker info``: pool, base size, file system, udev sync ...).

Usage (root)::

    python3 bench/bench_drivers.py [--reps 10] [--drivers btrfs,devmapper] [--no-dockerd]
    bench/vm-drivers [--reps 10] [more options of this bench]

``bench/vm-drivers`` boots the VM of ``plugins/graph_devmapper/vmtest/run``
(virtme-ng, Debian's kernel under TCG, this machine's root shared
read-only) once and runs ``--drivers devmapper`` inside, both daemons in
the same boot; the JSON reaches the host through ``bench/results``, shared
writable. It sets ``ENGINE_BENCH_VM=1``, under which the bench:

* makes its temporary directories (the daemons' roots, the pools' loop
  files) on ``/dev/shm``, a plain tmpfs. The VM's ``/tmp`` is virtme's
  overlay over the read-only root, and overlayfs gives a file the device
  number of its upper file system, not the overlay's: the daemons'
  ``safe_rmtree`` (which never crosses a file system) refuses to delete
  there.
* does not cover dockerd's ``/run`` with an empty tmpfs (see
  :func:`dockerd_spec`).
* fails where it would skip: in the VM a skip would hide a broken pair.
* waits up to 10 minutes for a daemon to start (:data:`START_TIMEOUT`).
* records ``engine_git`` as the wrapper found it on the host
  (``ENGINE_BENCH_GIT``).

Under TCG every instruction is emulated: the times are many times the
host's, and only the ratio between the two daemons, run in the same boot,
taking turns, says anything.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import bench_containers as BC

#: Our driver and dockerd's of the same kind.
PAIRS = {"btrfs": ("btrfs", "btrfs"), "devmapper": ("devmapper", "devicemapper"), "overlay": ("overlay", "overlay2")}
LAYERS = 10
LAYERED_TAG = "bench/layers:latest"
#: Set in the bench's own private mount namespace (see :func:`private_mounts`).
NAMESPACED = "ENGINE_BENCH_DRIVERS_NS"
#: Set by ``bench/vm-drivers`` for the run inside its VM (see the module doc).
IN_VM = os.environ.get("ENGINE_BENCH_VM") == "1"
#: The temporary directories' file system in the VM: a tmpfs neither daemon's sandbox hides.
VM_TMP = "/dev/shm"
#: Seconds a daemon has to answer its first ``/_ping``: bench_api's 60, but
#: under TCG our daemon's start alone (a cold Python, the bridge's iptables)
#: took from 45 to over 60 s.
START_TIMEOUT = 600.0 if IN_VM else 60.0


def private_mounts(argv: list[str]) -> None:
    """Re-execute in a private mount namespace: the btrfs mount never reaches the host's."""
    if os.environ.get(NAMESPACED) == "1":
        return
    env = dict(os.environ, **{NAMESPACED: "1"})
    cmd = ["unshare", "--mount", "--propagation", "private", sys.executable, os.path.abspath(__file__), *argv]
    raise SystemExit(subprocess.call(cmd, env=env))


@contextlib.contextmanager
def btrfs_tempdir(gib: int) -> Iterator[str]:
    """A fresh btrfs file system on a sparse loop file, mounted; ``tempfile`` makes its directories there."""
    holder = tempfile.mkdtemp(prefix="bd-", dir="/tmp")  # not nested: unix socket paths are short
    image, mnt = os.path.join(holder, "btrfs.img"), os.path.join(holder, "mnt")
    os.mkdir(mnt)
    try:
        with open(image, "wb") as fh:
            fh.truncate(gib << 30)
        subprocess.run(["mkfs.btrfs", "-q", image], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop", image, mnt], check=True)  # autoclear: the loop goes with the mount
        saved = tempfile.tempdir
        tempfile.tempdir = mnt
        try:
            yield mnt
        finally:
            tempfile.tempdir = saved
            subprocess.run(["umount", "-l", mnt], check=False)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def supported(ours: str) -> str:
    """Why our driver ``ours`` cannot run in a root made by ``tempfile`` now, or ``""`` (the probe
    the daemon's selection runs)."""
    from engine.drivers import discovery
    from engine.drivers.selection import DriverConfig
    from engine.errors import NotSupported

    entry = discovery.load_drivers("graph").get(ours)
    if entry is None or not entry.loaded:
        return f"the {ours} driver is not installed" + (f": {entry.error}" if entry else "")
    root = tempfile.mkdtemp(prefix="bench-drivers-probe-")
    try:
        discovery.probe("graph", entry, DriverConfig(root=root, graph_driver=ours))
    except NotSupported as exc:
        return str(exc)
    finally:
        subprocess.run(["umount", "-R", root], capture_output=True, check=False)  # what a probe may leave
        shutil.rmtree(root, ignore_errors=True)
    return ""


def dockerd_spec(path: str, driver: str) -> C.DaemonSpec:
    """The reference dockerd with ``driver``; in the VM, with the host's ``/run`` left visible.

    On the host, the sandbox covers ``/run`` so that dockerd starts a
    containerd of its own and its shims' sockets stay out of the host's
    ``/run/containerd``. But libdevmapper syncs with udev only when it sees
    udev running (``/run/udev/control``): under the empty ``/run`` dockerd's
    devicemapper refuses to start ("Udev sync is not supported"). The VM's
    ``/run`` is its own tmpfs, with no system containerd and nothing of the
    host's, so there dockerd may see it and write to it.
    """
    spec = C.dockerd_spec(path, storage_driver=driver)
    if IN_VM:
        spec = dataclasses.replace(spec, hide=tuple(h for h in spec.hide if h != "/run"))
    return spec


def layered_archive() -> bytes:
    """busybox's layer and nine small ones over it, as one docker-archive."""
    from engine.testing.images import BuiltImage, busybox_layer, docker_archive, image_config
    from engine.testing.layertar import Entry, make_layer_tar

    layers = [busybox_layer()]
    for i in range(1, LAYERS):
        entries = [Entry.dir(f"l{i}", mtime=0)]
        entries += [Entry.file(f"l{i}/f{n:03d}", os.urandom(1024), mtime=0) for n in range(100)]
        layers.append(make_layer_tar(entries))
    history = [{"created": "2026-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(LAYERS)]
    return docker_archive([BuiltImage(layers, image_config(["/bin/true"], history), [LAYERED_TAG])])


def awake(api: BC.Api) -> None:
    """Have ``api``'s keep-alive connection open and answering, untimed.

    Our daemon closes a connection idle for 60 s (gunicorn's keepalive).
    Under TCG emulation (``bench/vm-drivers``) the other daemon's turn takes
    longer than that, and a request on the closed connection fails
    (``BrokenPipeError``) instead of being answered.
    """
    try:
        api.call("GET", "/_ping")
    except (OSError, http.client.HTTPException):
        api.call("GET", "/_ping")  # on a new connection: call() dropped the broken one


def layer_create(side: BC.Side, archive: str) -> float:
    """One load of the layered image, per layer; ms. The image is deleted and checked gone."""
    os.sync()
    wall, _ = side.cli.run("load", "-q", "-i", archive)
    side.cli.run("rmi", LAYERED_TAG)
    awake(side.api)
    status, _ = side.api.call("GET", f"/images/{LAYERED_TAG}/json", expect=(404,))
    assert status == 404
    return wall * 1000 / LAYERS


def snapshot(side: BC.Side) -> tuple[float, float]:
    """``POST /containers/create`` of busybox, then its ``DELETE``; ms each."""
    awake(side.api)
    os.sync()
    body = BC.create_body(["true"], auto_remove=False)
    t0 = time.perf_counter()
    created = side.api.json("POST", "/containers/create", body, expect=(201,))
    t1 = time.perf_counter()
    side.api.call("DELETE", f"/containers/{created['Id']}", expect=(204,))
    t2 = time.perf_counter()
    return (t1 - t0) * 1000, (t2 - t1) * 1000


def run_rm(side: BC.Side, tmp: str) -> float:
    os.sync()
    return BC.cli_run_rm(side, tmp) * 1000


def bench_pair(args: argparse.Namespace, pair: str, with_dockerd: bool, tmp: str, busybox: str) -> dict[str, Any]:
    ours, theirs = PAIRS[pair]
    specs = [C.engine_spec(args.engine_arg, storage_driver=ours)]
    if with_dockerd:
        specs.append(dockerd_spec(args.dockerd, theirs))
    archive = os.path.join(tmp, f"layers-{pair}.tar")
    with open(archive, "wb") as fh:
        fh.write(layered_archive())
    sides: list[BC.Side] = []
    out: dict[str, Any] = {}
    # Each daemon on a btrfs of its own: one's transactions are not the other's to commit.
    with contextlib.ExitStack() as file_systems, BC.closing_sides(sides):
        for spec in specs:
            if pair == "btrfs":
                file_systems.enter_context(btrfs_tempdir(args.btrfs_gib))
            side = BC.start_side(spec, args.docker, tmp, busybox, timeout=START_TIMEOUT)
            sides.append(side)
            info = side.api.json("GET", "/info")
            if info["Driver"] != spec.driver:
                raise BC.BenchError(f"{side.name}: runs the {info['Driver']} driver, not {spec.driver}")
            out[side.name] = {"driver": spec.driver, "driver_status": info.get("DriverStatus")}
            layer_create(side, archive)  # warm-up
            snapshot(side)
            run_rm(side, tmp)
        times: dict[str, dict[str, list[float]]] = {
            s.name: {"layer": [], "create": [], "remove": [], "run_rm": []} for s in sides
        }
        window = BC.CpuWindow([s.daemon for s in sides])
        for _i, side in BC.take_turns(sides, args.reps):
            t = times[side.name]
            t["layer"].append(layer_create(side, archive))
            create, remove = snapshot(side)
            t["create"].append(create)
            t["remove"].append(remove)
            t["run_rm"].append(run_rm(side, tmp))
        cpu = window.stop()
        print(f"  [{pair}] other work: {cpu['other_busy']:.0%} of the CPUs", flush=True)
        for side in sides:
            awake(side.api)
        BC.cleanup(sides, timed=False)
        for side in sides:
            out[side.name].update(ms=times[side.name], cpu=cpu)
    return out


ROWS = [
    ("layer", "layer create (load of 10 layers / 10)"),
    ("create", "snapshot: POST /containers/create"),
    ("remove", "DELETE of that container"),
    ("run_rm", "docker run --rm busybox true"),
]


def report(results: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for pair, res in results.items():
        if "skipped" in res:
            print(f"\n{pair}: skipped: {res['skipped']}")
            summary[pair] = res
            continue
        names = list(res)
        stats = {n: {k: BC.stats_ms(v) for k, v in res[n]["ms"].items()} for n in names}
        summary[pair] = stats
        rows = []
        for key, label in ROWS:
            row = [label, *[f"{stats[n][key]['median']:.1f} (p90 {stats[n][key]['p90']:.1f})" for n in names]]
            if len(names) == 2:
                row.append(f"{stats[names[0]][key]['median'] / stats[names[1]][key]['median']:.2f}")
            rows.append(row)
        drivers = [f"{n} ({res[n]['driver']})" for n in names]
        headers = ["ms, median", *drivers, *(["ours/dockerd"] if len(names) == 2 else [])]
        C.print_table(headers, rows, title=f"graph driver pair {pair}")
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=10, help="timed samples of each figure per daemon (default 10)")
    ap.add_argument("--drivers", default="btrfs,devmapper", help=f"pairs among {','.join(PAIRS)}")
    ap.add_argument("--btrfs-gib", type=int, default=4, help="size of the sparse btrfs file (default 4)")
    ap.add_argument("--no-dockerd", action="store_true", help="measure our daemon only")
    ap.add_argument("--dockerd", default=C.DOCKERD, help=f"reference dockerd binary (default {C.DOCKERD})")
    ap.add_argument("--docker", default=BC.DOCKER_CLI, help=f"the docker CLI (default {BC.DOCKER_CLI})")
    ap.add_argument("--engine-arg", action="append", default=[], help="extra flag for our daemon (repeatable)")
    ap.add_argument(
        "--json", metavar="PATH", help="where to write the JSON (default bench/results/drivers-<time>.json)"
    )
    args = ap.parse_args(argv)
    pairs = [p for p in args.drivers.split(",") if p]
    unknown = [p for p in pairs if p not in PAIRS]
    if unknown or args.reps < 1:
        ap.error(f"unknown driver pair {unknown}" if unknown else "--reps must be at least 1")
    if os.geteuid() != 0:
        print("bench_drivers: needs root (loop mounts, namespaces)", file=sys.stderr)
        return 2
    private_mounts(argv)
    C.install_signal_handlers()
    if IN_VM:
        tempfile.tempdir = VM_TMP
    with_dockerd, names, note = C.choose_dockerd(args.no_dockerd, args.dockerd)
    common: dict[str, Any] = {
        "args": vars(args),
        "names": names,
        "note": note,
        "in_vm": IN_VM,
        "busy_before": C.busy_before_bench(),
    }
    if IN_VM:  # the host's ``git`` (``host.engine_git`` is the VM's, which times out over 9p)
        common["engine_git"] = os.environ.get("ENGINE_BENCH_GIT")
    results: dict[str, Any] = {}
    try:
        for pair in pairs:
            with contextlib.ExitStack() as stack:
                if pair == "btrfs":
                    stack.enter_context(btrfs_tempdir(args.btrfs_gib))
                why = supported(PAIRS[pair][0])
                if why and IN_VM:
                    raise BC.BenchError(f"{pair} must run in the VM but cannot: {why}")
                if why:
                    results[pair] = {"skipped": why}
                    continue
                print(f"\n== {pair}: ours -s {PAIRS[pair][0]}, dockerd --storage-driver={PAIRS[pair][1]}", flush=True)
                tmp = tempfile.mkdtemp(prefix="bench-drivers-")
                stack.callback(shutil.rmtree, tmp, True)
                from engine.testing.images import busybox_archive

                busybox = os.path.join(tmp, "busybox.tar")
                with open(busybox, "wb") as fh:
                    fh.write(busybox_archive())
                results[pair] = bench_pair(args, pair, with_dockerd, tmp, busybox)
    except KeyboardInterrupt:
        print("\ninterrupted; daemons stopped", file=sys.stderr)
        return 130
    except (BC.BenchError, OSError, subprocess.CalledProcessError, ValueError) as exc:
        print(f"\nFAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        C.stop_all()
    common["busy_after"] = C.busy_after_bench()
    summary = report(results)
    print(f"JSON: {C.write_json({**common, 'results': results, 'summary': summary}, 'drivers', args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
