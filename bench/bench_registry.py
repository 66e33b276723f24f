"""Registry bench: push and pull of a ~100 MB three-layer image to/from a local registry, ours vs dockerd.

What it measures, for our daemon (``engine -d -s vfs``) and, in the same run,
for the reference ``dockerd`` 20.10 (``--storage-driver=vfs``), each in its
own sandbox (``_common.py``):

* a registry (Debian's ``docker-registry``, distribution 2.8) runs inside
  each daemon's network namespace on ``127.0.0.1:5000`` (started with
  ``nsenter --net``), so the image is named ``127.0.0.1:5000/bench/big``
  for both and no traffic leaves the sandbox's loopback;
* the image is :func:`engine.testing.images.big_image` (incompressible data,
  ~100 MB of layer tars), loaded once into each daemon (not timed);
* **push**: ``POST /images/127.0.0.1:5000/bench/big/push?tag=latest`` to a
  registry with empty storage (restarted on a fresh directory before each
  push, so all three layers are compressed and uploaded every time). Timed
  from the request to the last byte of the progress stream, which must end
  with the ``digest:`` line and no error;
* **pull**: the image is deleted (and its layers checked gone), then
  ``POST /images/create?fromImage=127.0.0.1:5000/bench/big&tag=latest``
  from a registry serving the *same* blobs to both daemons (one storage
  directory, filled by one push of ours, shared by both registries), so
  both download the same bytes. Timed the same way; the pulled image must
  have the expected ID.

* **podman** (the issue's reference for pull, where ``podman`` is installed;
  ``--no-podman`` leaves it out): ``podman pull`` of the same reference from
  the same blobs, run in our daemon's network namespace (``nsenter --net``)
  as root with its own storage (``--root``/``--runroot`` under the bench's
  scratch directory, driver ``vfs`` like the daemons', a fresh one for each
  pull). podman has no daemon: the whole command is timed, from its
  ``exec`` to its exit, and its CPU is its own (``wait4``'s rusage). The
  ID it prints must be the image's.

``--reps`` (3) of each per daemon, interleaved between the daemons with the
order swapped at each round and an ``sync(2)`` before each operation.
Throughput is MB (10^6 bytes) of layer tars (uncompressed) per second of
median time; the compressed size pushed/pulled is reported too, as are the
daemon's CPU time and the CPU used by other work on the machine.

Usage: ``python bench/bench_registry.py [--reps N] [--size-mb 100] [--no-dockerd] [--no-podman] [--json PATH]``
(root; see ``bench/README.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import bench_api as A
from bench_images import (
    API,
    BenchError,
    CpuWindow,
    call,
    check_stream,
    connect,
    delete_and_verify,
    image_id,
    post_load,
    storage_entries,
)

from engine.sys.fs import safe_rmtree
from engine.testing.images import big_image, docker_archive
from engine.testing.registry import LocalRegistry

MB = 1e6
PORT = 5000
REPO = f"127.0.0.1:{PORT}/bench/big"
TAG = "latest"


@dataclass
class Sample:
    """One push or pull."""

    op: str
    wall_s: float
    tar_bytes: int  # uncompressed layer tars
    blob_bytes: int  # compressed layer blobs in the registry
    daemon_cpu_s: float
    neighbour_cpu_s: float
    client_cpu_s: float
    other_busy: float
    messages: int

    @property
    def mb_per_s(self) -> float:
        return self.tar_bytes / MB / self.wall_s


def netns_of(daemon: C.Daemon) -> str:
    init = daemon.init_pid()
    if not init:
        raise BenchError(f"{daemon.name}: no sandbox init")
    return f"/proc/{init}/ns/net"


def registry_for(daemon: C.Daemon, workdir: str, storage: str) -> LocalRegistry:
    """A registry in ``daemon``'s network namespace on 127.0.0.1:5000 serving ``storage``."""
    os.makedirs(workdir, exist_ok=True)
    return LocalRegistry(workdir, storage=storage, port=PORT, netns=netns_of(daemon)).start()


def wait_registry(daemon: C.Daemon, timeout: float = 20.0) -> None:
    """Until the daemon's namespace has the registry listening (we cannot dial it from here)."""
    deadline = time.monotonic() + timeout
    path = f"/proc/{daemon.init_pid()}/net/tcp"
    want = f":{PORT:04X} "
    while time.monotonic() < deadline:
        with open(path) as fh:
            if any(want in line and line.split()[3] == "0A" for line in fh.readlines()[1:]):
                return
        time.sleep(0.05)
    raise BenchError(f"{daemon.name}: registry not listening after {timeout}s")


def blob_bytes(storage: str) -> int:
    """Bytes of the layer blobs (the three big ones) in a registry's storage."""
    blobs = os.path.join(storage, "docker", "registry", "v2", "blobs")
    sizes = []
    for dirpath, _dirs, files in os.walk(blobs):
        if "data" in files:
            sizes.append(os.path.getsize(os.path.join(dirpath, "data")))
    return sum(sorted(sizes)[-3:])


def stream_op(daemon: C.Daemon, path: str, neighbour: C.Daemon | None, what: str) -> tuple[float, list[dict], dict]:
    """POST ``path``, read the progress stream to its end; (seconds, messages, cpu window)."""
    conn = connect(daemon)
    tree = daemon.tree()
    other = neighbour.tree() if neighbour else []
    try:
        window = CpuWindow(tree, other)
        t0 = time.perf_counter_ns()
        conn.request("POST", API + path, headers={"X-Registry-Auth": "e30="})
        resp = conn.getresponse()
        data = resp.read()
        t1 = time.perf_counter_ns()
        cpu = window.stop()
    finally:
        conn.close()
    if resp.status != 200:
        raise BenchError(f"{daemon.name}: {what}: {resp.status} {resp.reason}: {data[:500]!r}")
    return (t1 - t0) / 1e9, check_stream(f"{daemon.name}: {what}", data), cpu


def push(daemon: C.Daemon, neighbour: C.Daemon | None, tar_bytes: int, storage: str) -> Sample:
    wall, messages, cpu = stream_op(daemon, f"/images/{REPO}/push?tag={TAG}", neighbour, "push")
    if not any(str(m.get("status", "")).startswith(f"{TAG}: digest: sha256:") for m in messages):
        raise BenchError(f"{daemon.name}: push did not report a digest: {messages[-3:]}")
    pushed = sum(1 for m in messages if m.get("status") == "Pushed")
    if pushed != 3:
        raise BenchError(f"{daemon.name}: push uploaded {pushed} layers, expected 3")
    return Sample("push", wall, tar_bytes, blob_bytes(storage), messages=len(messages), **cpu)


def pull(daemon: C.Daemon, neighbour: C.Daemon | None, tar_bytes: int, storage: str, want_id: str) -> Sample:
    wall, messages, cpu = stream_op(daemon, f"/images/create?fromImage={REPO}&tag={TAG}", neighbour, "pull")
    if not any(str(m.get("status", "")).startswith("Status: Downloaded newer image") for m in messages):
        raise BenchError(f"{daemon.name}: pull did not end with a status: {messages[-3:]}")
    got = image_id(daemon, f"{REPO}:{TAG}")
    if got != want_id:
        raise BenchError(f"{daemon.name}: pulled image has ID {got}, expected {want_id}")
    return Sample("pull", wall, tar_bytes, blob_bytes(storage), messages=len(messages), **cpu)


def podman_pull(netns: str, scratch: str, tar_bytes: int, storage: str, want_id: str, others: list[int]) -> Sample:
    """``podman pull`` from the registry in ``netns`` into a fresh storage of its own; timed to its exit."""
    root = tempfile.mkdtemp(prefix="podman-", dir=scratch)
    cmd = ["nsenter", f"--net={netns}", "podman", "--root", f"{root}/storage", "--runroot", f"{root}/run"]
    cmd += ["--storage-driver", "vfs", "--events-backend", "none", "--cgroup-manager", "cgroupfs"]
    cmd += ["pull", "--quiet", "--tls-verify=false", f"{REPO}:{TAG}"]
    try:
        window = CpuWindow([], others, own_children=True)
        t0 = time.perf_counter_ns()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate()
        t1 = time.perf_counter_ns()
        cpu = window.stop()
        if proc.returncode != 0:
            raise BenchError(f"podman pull exited {proc.returncode}: {err.decode(errors='replace')[-800:]}")
        got = "sha256:" + out.decode().strip().splitlines()[-1]
        if got != want_id:
            raise BenchError(f"podman pulled image ID {got}, expected {want_id}")
    finally:
        safe_rmtree(root)
    return Sample("pull", (t1 - t0) / 1e9, tar_bytes, blob_bytes(storage), messages=0, **cpu)


def untag_pushed(daemon: C.Daemon) -> None:
    """Drop the RepoDigest a push recorded, keeping the tag (the next push starts alike)."""
    conn = connect(daemon, 60)
    try:
        _status, data = call(conn, "GET", f"/images/{REPO}:{TAG}/json")
        for digest_ref in json.loads(data).get("RepoDigests") or []:
            call(conn, "DELETE", f"/images/{digest_ref}")
    finally:
        conn.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    image = big_image(args.size_mb, tags=[f"{REPO}:{TAG}"])
    tar_bytes = sum(len(layer) for layer in image.layers)
    scratch = tempfile.mkdtemp(prefix="bench-registry-")
    archive = os.path.join(scratch, "big.tar")
    with open(archive, "wb") as fh:
        fh.write(docker_archive([image]))
    print(f"image: {len(image.layers)} layers, {tar_bytes / MB:.1f} MB of layer tars, ID {image.id[7:19]}")
    specs = [C.engine_spec(storage_driver="vfs")]
    if not args.no_dockerd:
        ref = C.dockerd_spec(storage_driver="vfs")
        if ref.available:
            specs.append(ref)
        else:
            print(f"dockerd not available ({ref.why_unavailable}); measuring ours only")
    with_podman = not args.no_podman and shutil.which("podman") is not None
    if not args.no_podman and not with_podman:
        print("podman not installed (apt-get install podman); pulls without it")
    daemons: list[tuple[C.Daemon, C.NotifyListener]] = []
    registries: dict[str, LocalRegistry] = {}
    out: dict[str, Any] = {"image": {"id": image.id, "tar_bytes": tar_bytes, "layers": len(image.layers)}}
    try:
        for spec in specs:
            daemon, listener, start = A.start_and_wait(spec)
            daemons.append((daemon, listener))
            print(f"  {spec.name}: ready in {start.ready_s * 1000:.0f} ms", flush=True)
            sample = post_load(daemon, archive, 32 * 1024, True, [], None)
            if image_id(daemon, f"{REPO}:{TAG}") != image.id:
                raise BenchError(f"{daemon.name}: loaded image has the wrong ID")
            print(f"  {spec.name}: loaded the image in {sample.wall_s:.2f} s", flush=True)
            out[spec.name] = {"push": [], "pull": []}

        def neighbour_of(d: C.Daemon) -> C.Daemon | None:
            return next((o for o, _ in daemons if o is not d), None)

        def restart_registry(daemon: C.Daemon, storage: str) -> None:
            old = registries.pop(daemon.name, None)
            if old is not None:
                old.stop()
            registries[daemon.name] = registry_for(daemon, os.path.join(scratch, f"reg-{daemon.name}"), storage)
            wait_registry(daemon)

        # push: a fresh, empty registry each time
        shared = ""
        for rnd in range(args.reps):
            order = daemons if rnd % 2 == 0 else daemons[::-1]
            for daemon, _ in order:
                storage = os.path.join(scratch, f"push-{daemon.name}-{rnd}")
                restart_registry(daemon, storage)
                os.sync()
                sample = push(daemon, neighbour_of(daemon), tar_bytes, storage)
                out[daemon.name]["push"].append(asdict(sample) | {"mb_per_s": sample.mb_per_s})
                print(
                    f"  push {rnd + 1}/{args.reps} {daemon.name:8s} {sample.wall_s:6.2f} s "
                    f"{sample.mb_per_s:6.1f} MB/s  blobs {sample.blob_bytes / MB:6.1f} MB  "
                    f"daemon CPU {sample.daemon_cpu_s:5.2f} s  other work {sample.other_busy:.0%}",
                    flush=True,
                )
                untag_pushed(daemon)
                if daemon.name == "engine" and not shared:
                    shared = storage  # the blobs both daemons pull
                elif storage != shared:
                    registries.pop(daemon.name).stop()
                    safe_rmtree(storage)
        # pull: both registries serve the same storage
        baselines = {}
        for daemon, _ in daemons:
            restart_registry(daemon, shared)
            delete_and_verify(daemon, f"{REPO}:{TAG}", set(), check_storage=False)
            baselines[daemon.name] = storage_entries(daemon)
        pullers: list[C.Daemon | None] = [d for d, _ in daemons]
        if with_podman:
            pullers.append(None)  # podman, in our daemon's namespace
            out["podman"] = {"push": [], "pull": []}
        everyone = [pid for d, _ in daemons for pid in d.tree()]
        for rnd in range(args.reps):
            for daemon in pullers if rnd % 2 == 0 else pullers[::-1]:
                os.sync()
                if daemon is None:
                    name = "podman"
                    sample = podman_pull(netns_of(daemons[0][0]), scratch, tar_bytes, shared, image.id, everyone)
                else:
                    name = daemon.name
                    sample = pull(daemon, neighbour_of(daemon), tar_bytes, shared, image.id)
                    delete_and_verify(daemon, f"{REPO}:{TAG}", baselines[daemon.name])
                out[name]["pull"].append(asdict(sample) | {"mb_per_s": sample.mb_per_s})
                print(
                    f"  pull {rnd + 1}/{args.reps} {name:8s} {sample.wall_s:6.2f} s "
                    f"{sample.mb_per_s:6.1f} MB/s  daemon CPU {sample.daemon_cpu_s:5.2f} s  "
                    f"other work {sample.other_busy:.0%}",
                    flush=True,
                )
        for daemon, _ in daemons:
            if not daemon.alive():
                raise BenchError(f"{daemon.name} died during the bench:\n{daemon.log_tail()}")
    except BaseException:
        for daemon, _ in daemons:
            print(f"--- {daemon.name} log tail:\n{daemon.log_tail(15)}", file=sys.stderr)
        for reg in registries.values():
            print(f"--- registry log tail:\n{reg.log()[-1500:]}", file=sys.stderr)
        raise
    finally:
        for reg in registries.values():
            reg.stop()
        for daemon, listener in daemons:
            A.stop_and_clean(daemon, listener)
        safe_rmtree(scratch)
    return out


def summary_rows(out: dict[str, Any], names: list[str]) -> list[list[str]]:
    rows = []
    for op in ("push", "pull"):
        for name in names:
            samples = out[name][op]
            if not samples:
                continue  # podman only pulls
            walls = [s["wall_s"] for s in samples]
            med = C.median(walls)
            tar = out["image"]["tar_bytes"]
            rows.append(
                [
                    f"{op} {name}",
                    f"{med:.2f}",
                    f"{min(walls):.2f}",
                    f"{tar / MB / med:.1f}",
                    f"{samples[0]['blob_bytes'] / MB:.1f}",
                    f"{C.median([s['daemon_cpu_s'] for s in samples]):.2f}",
                    f"{max(s['other_busy'] for s in samples):.0%}",
                ]
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--no-dockerd", action="store_true")
    parser.add_argument("--no-podman", action="store_true", help="leave podman's pulls out")
    parser.add_argument("--json", help="write the record here instead of bench/results/")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (sandboxes)", file=sys.stderr)
        return 2
    C.install_signal_handlers()
    busy = C.cpu_busy(1.0)
    if busy > C.BUSY_WARN:
        print(f"WARNING: the machine is {busy:.0%} busy before the bench; numbers will be noisy", file=sys.stderr)
    out = run(args)
    names = [n for n in ("engine", "dockerd", "podman") if n in out]
    C.print_table(
        ["operation", "median s", "min s", "MB/s", "blobs MB", "daemon (podman) CPU s", "other work"],
        summary_rows(out, names),
        title=f"push/pull of {out['image']['tar_bytes'] / MB:.0f} MB "
        f"({out['image']['layers']} layers), vfs, local registry",
    )
    tar = out["image"]["tar_bytes"] / MB
    rates = {n: tar / C.median([s["wall_s"] for s in out[n]["pull"]]) for n in names}
    for ref in ("dockerd", "podman"):
        if ref in rates:
            print(
                f"pull throughput, engine / {ref}: {rates['engine']:.1f} / {rates[ref]:.1f} MB/s "
                f"= {rates['engine'] / rates[ref]:.2f}x" + (" (target: at least 1)" if ref == "podman" else "")
            )
    path = C.write_json({"reps": args.reps, "busy_before": busy, **out}, "registry", args.json)
    print(f"\nrecord: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
