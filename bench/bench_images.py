"""Image bench: ``docker load`` of a big image and ``GET /images/json`` of 500 images, ours vs dockerd.

What it measures, for our daemon (``engine -d``) and, in the same run, for
the reference ``dockerd`` 20.10, each in its own sandbox (``_common.py``),
for each pair of graph drivers asked for (default both):

* ``vfs``: ours ``-s vfs`` against dockerd ``--storage-driver=vfs``;
* ``overlay``: ours ``-s overlay`` against dockerd ``--storage-driver=overlay2``
  (the daemons' roots are under ``/tmp``, which must be a file system that
  overlayfs accepts as upper layer: ext4 or xfs are).

1. **load**: ``POST /images/load`` of a ~100 MB three-layer image
   (:func:`engine.testing.images.big_image`, incompressible data), as one
   docker-archive file written once to a temporary directory. The body is
   streamed from that file with chunked transfer encoding in 32 KiB chunks,
   as the docker CLI sends it (Go's ``io.Copy`` of an ``*os.File`` of
   unknown length). Timed: from just before the request's first byte to the
   last byte of the response stream (the connection is made before the
   clock starts). Also recorded: when the last body byte was handed to the
   kernel and when the response headers arrived, the daemon's CPU time
   (utime+stime of its process tree) and its peak RSS (``VmHWM``, reset
   before each load). Between loads the image is deleted
   (``DELETE /images/big:latest``), then checked gone: inspect answers 404,
   and the daemon's layer store and driver directories hold no more entries
   than right after start-up, so every load registers all three layers
   again. ``--reps`` (3) loads per daemon, interleaved between the two
   daemons (both run, the idle one's CPU time is recorded to show it does
   not interfere), with the order swapped at each round and an ``sync(2)``
   before each load, so that neither pays for the other's dirty pages.
   Median, min and MB/s (10^6 bytes of archive per second of median time).
2. **list**: 500 distinct small images (one tiny layer each, distinct
   config and tag ``bench/img<NNN>:latest``), built as one docker-archive
   and loaded once into each daemon (that load is timed too). Then ``--lists``
   (50) consecutive ``GET /images/json`` on one keep-alive connection, each
   timed from the send to the last body byte, after one untimed warm-up
   request (whose time is reported too). Median / p90 / max, response
   size, daemon CPU per request. Each answer is checked: 200, a JSON list of
   exactly the 500 images with their tags.

3. **build**: the classic builder (``POST /build?version=1``, what the
   docker CLI without buildx sends) of a 10-step Dockerfile (FROM busybox,
   ENV, WORKDIR, COPY of a 1 MB file, three RUNs writing files, LABEL,
   EXPOSE, CMD) from a context tar: cold (``nocache=1``: every step runs
   and commits) and fully cached (the same build again: every step is
   ``Using cache``), ``--build-reps`` (3) of each per daemon, interleaved.
   Each answer must end with ``Successfully tagged``; a cached build must
   report 9 cache hits. Median and min wall time, daemon CPU.
4. **commit**: a container writes ``--commit-mb`` (100) MB of random data
   into its file system and exits; then ``POST /commit`` of it is timed
   (the layer diff, its registration, the image). The image and the
   container are removed after each of ``--build-reps`` commits.

Every phase also records the CPU time that neither daemon nor the bench
used ("other work"): on a shared 2-core machine that is what makes a row
noisy, and the report shows it rather than hiding it.

One lean client for both daemons: ``http.client`` over the unix socket
(:class:`engine.testing.daemon.UnixHTTPConnection`), API version prefix
``/v1.41`` (dockerd 20.10's), every response read to its end and checked:
status, and every JSON message of a stream for ``error``/``errorDetail``.
Any failure stops the bench with an error: a number from a failed request
is never reported.

``--profile`` adds, per driver, two untimed loads into our daemon under
``py-spy record`` (``pip install py-spy``): the big image, and the 500
images again (after deleting them all); it prints where the job thread
spent its samples, and keeps the raw profiles next to the JSON.
``--engine-rev REV`` runs our daemon from ``git archive REV`` instead of
the checkout as it is on disk.

Usage: ``python bench/bench_images.py [--reps N] [--drivers vfs,overlay]
[--phases load,list,build,commit] [--build-reps N] [--commit-mb N]
[--engine-rev HEAD] [--no-dockerd] [--profile] [--json PATH]`` (root; see
``bench/README.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import bench_api as A

from engine.testing.daemon import UnixHTTPConnection

#: dockerd 20.10's API version: both daemons answer in the same shape.
API = "/v1.41"
#: Targets of the issue, printed next to the results.
TARGET_LIST_MS = 50.0
#: The big image's tag (what is deleted between loads).
BIG_TAG = "big:latest"
#: Our graph driver -> dockerd's equivalent.
DRIVER_PAIRS = {"vfs": ("vfs", "vfs"), "overlay": ("overlay", "overlay2")}
MB = 1_000_000  # the archive's MB/s is decimal, like docker's sizes


class BenchError(RuntimeError):
    """A daemon answered something other than success: the bench stops."""


# --------------------------------------------------------------------------
# the client


def connect(daemon: C.Daemon, timeout: float = 600.0) -> UnixHTTPConnection:
    """A connected http.client connection to the daemon's socket (nothing else is ever dialled)."""
    conn = UnixHTTPConnection(daemon.socket_path, timeout=timeout)
    conn.connect()
    return conn


def call(
    conn: UnixHTTPConnection, method: str, path: str, expect: tuple[int, ...] = (200,), body: bytes | None = None
) -> tuple[int, bytes]:
    """One request on a keep-alive connection; the body is read to its end.

    :raises BenchError: if the status is not in ``expect``.
    """
    conn.request(method, API + path, body=body)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status not in expect:
        raise BenchError(f"{method} {path}: {resp.status} {resp.reason}: {data[:500]!r}")
    return resp.status, data


def json_messages(data: bytes) -> list[dict]:
    """The JSON objects of a progress stream (one per line, or just concatenated)."""
    text = data.decode()
    decoder = json.JSONDecoder()
    out: list[dict] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos >= len(text):
            return out
        obj, pos = decoder.raw_decode(text, pos)
        out.append(obj)


def check_stream(what: str, data: bytes) -> list[dict]:
    """Fail on any ``error``/``errorDetail`` message; returns the messages."""
    try:
        messages = json_messages(data)
    except ValueError as exc:
        raise BenchError(f"{what}: response is not a JSON stream ({exc}): {data[:500]!r}") from None
    errors = [m for m in messages if isinstance(m, dict) and ("error" in m or "errorDetail" in m)]
    if errors:
        raise BenchError(f"{what}: the daemon reported errors: {errors[:3]}")
    return messages


class CpuWindow:
    """CPU time used during one phase: by the daemon, its idle neighbour, this bench, and everything else.

    Tree times include reaped children (dockerd's ``docker-untar`` re-execs).
    With ``own_children``, the "daemon" is this bench's children reaped in
    the window instead (a daemonless client such as podman, run to its exit).
    Whatever the machine did besides is "other work": if it is large, the
    phase's numbers are disturbed, and the report shows it.
    """

    def __init__(self, tree: list[int], neighbour: list[int], own_children: bool = False) -> None:
        self.tree, self.neighbour, self.own_children = tree, neighbour, own_children
        self.children0 = self.children_s()
        self.cpu0 = C.cpu_ticks(tree, True)
        self.ncpu0 = C.cpu_ticks(neighbour, True)
        self.self0 = time.process_time()
        self.all0, self.idle0 = C.machine_ticks()

    @staticmethod
    def children_s() -> float:
        times = os.times()
        return times.children_user + times.children_system

    def stop(self) -> dict[str, float]:
        cpu = (C.cpu_ticks(self.tree, True) - self.cpu0) / C.CLK_TCK
        if self.own_children:
            cpu += self.children_s() - self.children0
        ncpu = (C.cpu_ticks(self.neighbour, True) - self.ncpu0) / C.CLK_TCK
        client = time.process_time() - self.self0
        all1, idle1 = C.machine_ticks()
        total = max(1e-9, (all1 - self.all0) / C.CLK_TCK)
        busy = total - (idle1 - self.idle0) / C.CLK_TCK
        return {
            "daemon_cpu_s": cpu,
            "neighbour_cpu_s": ncpu,
            "client_cpu_s": client,
            "other_busy": max(0.0, busy - cpu - ncpu - client) / total,
        }


@dataclass
class LoadSample:
    """One ``POST /images/load``; times in seconds from just before the first byte sent."""

    wall_s: float  # to the last byte of the response
    body_sent_s: float  # last body byte handed to the kernel
    headers_s: float  # response status line and headers read
    archive_bytes: int
    response_bytes: int
    messages: int
    daemon_cpu_s: float  # utime+stime of the daemon's tree during the load
    neighbour_cpu_s: float  # the other (idle) daemon's tree meanwhile
    client_cpu_s: float  # this bench (the client) meanwhile
    other_busy: float  # share of all CPUs used by neither daemon nor this bench
    peak_rss_mib: float  # sum of VmHWM over the tree, reset before the load

    @property
    def mb_per_s(self) -> float:
        return self.archive_bytes / MB / self.wall_s


def _chunks(path: str, chunk: int, sent: dict[str, int]) -> Iterator[bytes]:
    """The file in ``chunk``-byte pieces; notes when the last one was sent."""
    with open(path, "rb", buffering=0) as fh:
        while data := fh.read(chunk):
            yield data
    # http.client asks for the next piece only after sendall() of this one.
    sent["ns"] = time.perf_counter_ns()


def post_load(
    daemon: C.Daemon, path: str, chunk: int, quiet: bool, expect_tags: list[str], neighbour: C.Daemon | None = None
) -> LoadSample:
    """``POST /images/load`` of the archive at ``path``, streamed chunked; checked and timed."""
    size = os.path.getsize(path)
    conn = connect(daemon)  # a fresh connection, like each docker CLI run; not timed
    tree = daemon.tree()
    other = neighbour.tree() if neighbour else []
    C.reset_peak_rss(tree)
    sent: dict[str, int] = {}
    try:
        window = CpuWindow(tree, other)
        t0 = time.perf_counter_ns()
        conn.request(
            "POST",
            f"{API}/images/load?quiet={int(quiet)}",
            body=_chunks(path, chunk, sent),
            headers={"Content-Type": "application/x-tar", "Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        t_headers = time.perf_counter_ns()
        data = resp.read()
        t_end = time.perf_counter_ns()
        cpu = window.stop()
    finally:
        conn.close()
    peak = C.peak_rss_kib(tree) / 1024
    if resp.status != 200:
        raise BenchError(f"{daemon.name}: POST /images/load: {resp.status} {resp.reason}: {data[:500]!r}")
    messages = check_stream(f"{daemon.name}: POST /images/load", data)
    streamed = "".join(m.get("stream", "") for m in messages if isinstance(m, dict))
    for tag in expect_tags:
        if f"Loaded image: {tag}" not in streamed:
            raise BenchError(f"{daemon.name}: load did not report {tag!r}: {streamed[-300:]!r}")
    return LoadSample(
        wall_s=(t_end - t0) / 1e9,
        body_sent_s=(sent.get("ns", t_end) - t0) / 1e9,
        headers_s=(t_headers - t0) / 1e9,
        archive_bytes=size,
        response_bytes=len(data),
        messages=len(messages),
        peak_rss_mib=peak,
        **cpu,
    )


# --------------------------------------------------------------------------
# what the daemon stored


def storage_dirs(daemon: C.Daemon) -> list[str]:
    """Directories with one entry per layer: the layer store and the driver's layer dirs."""
    root = os.path.join(daemon.workdir, daemon.spec.data_root)
    driver = daemon.spec.driver
    home = os.path.join(root, driver)
    if driver == "vfs":
        home = os.path.join(home, "dir")
    if daemon.name == "engine":
        layerdb = os.path.join(root, "layerdb")
    else:
        layerdb = os.path.join(root, "image", driver, "layerdb", "sha256")
    return [layerdb, home]


def storage_entries(daemon: C.Daemon) -> set[str]:
    out: set[str] = set()
    for d in storage_dirs(daemon):
        try:
            out |= {os.path.join(d, name) for name in os.listdir(d)}
        except FileNotFoundError:
            pass
    return out


def image_id(daemon: C.Daemon, ref: str) -> str | None:
    """The ID of ``ref`` (inspect), or None on 404."""
    conn = connect(daemon, 60)
    try:
        status, data = call(conn, "GET", f"/images/{ref}/json", expect=(200, 404))
    finally:
        conn.close()
    return json.loads(data)["Id"] if status == 200 else None


def delete_and_verify(daemon: C.Daemon, ref: str, baseline: set[str], check_storage: bool = True) -> None:
    """``DELETE /images/<ref>``, then check it is gone (and with ``check_storage``, its layers too)."""
    conn = connect(daemon, 300)
    try:
        _status, data = call(conn, "DELETE", f"/images/{ref}")
    finally:
        conn.close()
    records = json.loads(data)
    if not any("Deleted" in r for r in records):
        raise BenchError(f"{daemon.name}: DELETE /images/{ref} deleted nothing: {records}")
    if image_id(daemon, ref) is not None:
        raise BenchError(f"{daemon.name}: {ref} still there after DELETE")
    # Layers must be gone too: a load that finds them skips their registration.
    if check_storage and not C.wait_until(lambda: not (storage_entries(daemon) - baseline), 30, 0.1):
        left = sorted(storage_entries(daemon) - baseline)
        raise BenchError(f"{daemon.name}: layers left after DELETE /images/{ref}: {left[:6]}")


# --------------------------------------------------------------------------
# images/json


@dataclass
class ListResult:
    load: LoadSample  # loading the archive with all the images
    first_ms: float  # the first (warm-up) GET /images/json
    lat_ms: list[float]  # the timed ones
    response_bytes: int
    images: int
    cpu: dict[str, float]  # CpuWindow of the timed requests

    def summary(self) -> dict[str, Any]:
        s = sorted(self.lat_ms)
        return {
            "load_s": round(self.load.wall_s, 3),
            "load_daemon_cpu_s": round(self.load.daemon_cpu_s, 2),
            "load_other_busy": round(self.load.other_busy, 3),
            "first_ms": round(self.first_ms, 2),
            "median_ms": round(C.median(s), 2),
            "p90_ms": round(C.percentile(s, 90), 2),
            "min_ms": round(s[0], 2),
            "max_ms": round(s[-1], 2),
            "requests": len(s),
            "response_bytes": self.response_bytes,
            "images": self.images,
            "daemon_cpu_ms_per_req": round(self.cpu["daemon_cpu_s"] * 1000 / len(s), 2),
            "other_busy": round(self.cpu["other_busy"], 3),
        }


def check_list(daemon: C.Daemon, data: bytes, want_tags: set[str]) -> int:
    items = json.loads(data)
    if not isinstance(items, list):
        raise BenchError(f"{daemon.name}: /images/json is not a list: {data[:200]!r}")
    tags = {t for item in items for t in item.get("RepoTags") or []}
    if len(items) != len(want_tags) or tags != want_tags:
        raise BenchError(
            f"{daemon.name}: /images/json has {len(items)} images, {len(tags & want_tags)} of the "
            f"{len(want_tags)} expected tags, and {sorted(tags - want_tags)[:5]} others"
        )
    return len(items)


def measure_list(
    daemon: C.Daemon, archive: str, tags: list[str], requests: int, chunk: int, neighbour: C.Daemon | None
) -> ListResult:
    """Load the many-images archive, then time ``requests`` GET /images/json."""
    # quiet=1: 500 images' progress bars would be most of the answer.
    load = post_load(daemon, archive, chunk, quiet=True, expect_tags=[], neighbour=neighbour)
    want = set(tags)
    conn = connect(daemon, 120)
    try:
        t0 = time.perf_counter_ns()
        _s, data = call(conn, "GET", "/images/json")
        first = (time.perf_counter_ns() - t0) / 1e6
        n = check_list(daemon, data, want)
        lat: list[float] = []
        bodies: list[bytes] = []
        window = CpuWindow(daemon.tree(), neighbour.tree() if neighbour else [])
        for _ in range(requests):
            t0 = time.perf_counter_ns()
            _s, data = call(conn, "GET", "/images/json")
            lat.append((time.perf_counter_ns() - t0) / 1e6)
            bodies.append(data)
        cpu = window.stop()
    finally:
        conn.close()
    for body in bodies:  # checked after the clock: parsing is the client's cost
        check_list(daemon, body, want)
    return ListResult(load=load, first_ms=first, lat_ms=lat, response_bytes=len(bodies[-1]), images=n, cpu=cpu)


# --------------------------------------------------------------------------
# test images


@dataclass
class Archives:
    dir: str
    big: str
    big_id: str
    many: str
    many_tags: list[str]
    busybox: str = ""
    context: bytes = b""


def build_archives(size_mb: int, count: int) -> Archives:
    """Write the big image's and the many images' docker-archives to a fresh temp dir."""
    from engine.testing.images import EPOCH, BuiltImage, big_image, docker_archive, image_config
    from engine.testing.layertar import Entry, make_layer_tar

    tmp = tempfile.mkdtemp(prefix="bench-images-")
    try:
        big = big_image(size_mb, tags=(BIG_TAG,))
        big_path = os.path.join(tmp, "big.tar")
        with open(big_path, "wb") as fh:
            fh.write(docker_archive([big]))
        big_id = big.id
        del big  # ~200 MB of bytes objects
        images = []
        tags = []
        for i in range(count):
            # One tiny layer and a config of its own each: 500 images, 500
            # layers, distinct IDs and creation times (the list is sorted by them).
            layer = make_layer_tar(
                [Entry.dir("bench", mtime=EPOCH), Entry.file(f"bench/{i:04d}", f"image {i}\n".encode(), mtime=EPOCH)]
            )
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH + i))
            config = image_config(
                ["/bin/true"], [{"created": created, "created_by": f"bench image {i}"}], Labels={"bench.index": str(i)}
            )
            config["created"] = created
            tag = f"bench/img{i:03d}:latest"
            tags.append(tag)
            images.append(BuiltImage([layer], config, [tag]))
        many_path = os.path.join(tmp, "many.tar")
        with open(many_path, "wb") as fh:
            fh.write(docker_archive(images))
        from engine.testing.images import busybox_archive

        busybox_path = os.path.join(tmp, "busybox.tar")
        with open(busybox_path, "wb") as fh:
            fh.write(busybox_archive())
        return Archives(tmp, big_path, big_id, many_path, tags, busybox_path, build_context())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------
# build and commit

#: The 10-step Dockerfile of the build phase (FROM and nine steps).
BUILD_DOCKERFILE = b"""\
FROM busybox:latest
ENV BENCH=1
WORKDIR /work
COPY blob.bin /work/blob.bin
RUN echo one > /work/one.txt
RUN seq 1 2000 > /work/seq.txt
RUN cp /work/blob.bin /work/copy.bin
LABEL bench=build
EXPOSE 8080
CMD ["cat", "/work/one.txt"]
"""
BUILD_TAG = "bench/build:latest"
COMMIT_TAG = "bench/commit:latest"


def build_context() -> bytes:
    """The context tar: the Dockerfile and a 1 MB file of fixed bytes (no randomness between runs)."""
    import io
    import tarfile

    blob = bytes(range(256)) * 4096
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", BUILD_DOCKERFILE), ("blob.bin", blob)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class TimedSample:
    """One timed request: wall seconds and the daemons' CPU meanwhile."""

    wall_s: float
    daemon_cpu_s: float
    neighbour_cpu_s: float
    client_cpu_s: float
    other_busy: float
    detail: dict


def post_build(daemon: C.Daemon, context: bytes, nocache: bool, neighbour: C.Daemon | None) -> TimedSample:
    """``POST /build`` of ``context`` (as the CLI sends it: chunked tar); checked and timed."""
    conn = connect(daemon)
    tree, other = daemon.tree(), (neighbour.tree() if neighbour else [])
    query = f"?t={BUILD_TAG}&rm=1&nocache={int(nocache)}&version=1"
    try:
        window = CpuWindow(tree, other)
        t0 = time.perf_counter_ns()
        conn.request(
            "POST",
            f"{API}/build{query}",
            body=iter([context]),
            headers={"Content-Type": "application/x-tar", "Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        data = resp.read()
        t_end = time.perf_counter_ns()
        cpu = window.stop()
    finally:
        conn.close()
    if resp.status != 200:
        raise BenchError(f"{daemon.name}: POST /build: {resp.status} {resp.reason}: {data[:500]!r}")
    messages = check_stream(f"{daemon.name}: POST /build", data)
    streamed = "".join(m.get("stream", "") for m in messages if isinstance(m, dict))
    if f"Successfully tagged {BUILD_TAG}" not in streamed:
        raise BenchError(f"{daemon.name}: the build did not tag {BUILD_TAG}: {streamed[-300:]!r}")
    hits = streamed.count("Using cache")
    if not nocache and hits != 9:
        raise BenchError(f"{daemon.name}: the cached build used the cache {hits} times, not 9: {streamed[-500:]!r}")
    if nocache and hits:
        raise BenchError(f"{daemon.name}: a nocache build used the cache")
    return TimedSample((t_end - t0) / 1e9, detail={"cache_hits": hits}, **cpu)


def prepare_commit(daemon: C.Daemon, size_mb: int) -> str:
    """A container that wrote ``size_mb`` MB of random data and exited; its ID."""
    conn = connect(daemon)
    try:
        body = json.dumps(
            {
                "Image": "busybox:latest",
                "Cmd": ["dd", "if=/dev/urandom", "of=/data.bin", "bs=1048576", f"count={size_mb}"],
                "HostConfig": {"NetworkMode": "none"},
            }
        ).encode()
        conn.request("POST", f"{API}/containers/create", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 201:
            raise BenchError(f"{daemon.name}: create: {resp.status}: {data[:300]!r}")
        cid = json.loads(data)["Id"]
        call(conn, "POST", f"/containers/{cid}/start", expect=(204,))
        _, data = call(conn, "POST", f"/containers/{cid}/wait")
        if json.loads(data).get("StatusCode") != 0:
            raise BenchError(f"{daemon.name}: the writer container failed: {data!r}")
        return cid
    finally:
        conn.close()


def post_commit(daemon: C.Daemon, cid: str, neighbour: C.Daemon | None) -> TimedSample:
    """``POST /commit`` of ``cid``; checked and timed."""
    conn = connect(daemon)
    tree, other = daemon.tree(), (neighbour.tree() if neighbour else [])
    repo, tag = COMMIT_TAG.split(":")
    try:
        window = CpuWindow(tree, other)
        t0 = time.perf_counter_ns()
        conn.request("POST", f"{API}/commit?container={cid}&repo={repo}&tag={tag}", body=b"")
        resp = conn.getresponse()
        data = resp.read()
        t_end = time.perf_counter_ns()
        cpu = window.stop()
    finally:
        conn.close()
    if resp.status != 201:
        raise BenchError(f"{daemon.name}: POST /commit: {resp.status} {resp.reason}: {data[:500]!r}")
    return TimedSample((t_end - t0) / 1e9, detail={"id": json.loads(data)["Id"]}, **cpu)


def remove_commit(daemon: C.Daemon, cid: str) -> None:
    conn = connect(daemon)
    try:
        call(conn, "DELETE", f"/images/{COMMIT_TAG}")
        call(conn, "DELETE", f"/containers/{cid}?force=1", expect=(204,))
    finally:
        conn.close()


def run_build_phases(
    daemons: list[tuple[C.Daemon, Any]], archives: Archives, args: argparse.Namespace, out: dict[str, Any]
) -> None:
    """The build (cold and cached) and commit phases, interleaved between the daemons."""
    phases = set(args.phases)
    for daemon, _ in daemons:
        post_load(daemon, archives.busybox, args.chunk_kib * 1024, True, [])
    for rnd in range(args.build_reps):
        order = daemons if rnd % 2 == 0 else daemons[::-1]
        for daemon, _ in order:
            neighbour = next((d for d, _ in daemons if d is not daemon), None)
            if "build" in phases:
                os.sync()
                cold = post_build(daemon, archives.context, True, neighbour)
                os.sync()
                cached = post_build(daemon, archives.context, False, neighbour)
                out[daemon.name].setdefault("build_cold", []).append(asdict(cold))
                out[daemon.name].setdefault("build_cached", []).append(asdict(cached))
                print(
                    f"  build {rnd + 1}/{args.build_reps} {daemon.name:8s} cold {cold.wall_s:6.2f} s "
                    f"(daemon CPU {cold.daemon_cpu_s:5.2f} s)  cached {cached.wall_s:6.3f} s "
                    f"(daemon CPU {cached.daemon_cpu_s:5.2f} s)  other work {max(cold.other_busy, cached.other_busy):.0%}",
                    flush=True,
                )
            if "commit" in phases:
                cid = prepare_commit(daemon, args.commit_mb)
                os.sync()
                sample = post_commit(daemon, cid, neighbour)
                remove_commit(daemon, cid)
                out[daemon.name].setdefault("commit", []).append(asdict(sample))
                print(
                    f"  commit {rnd + 1}/{args.build_reps} {daemon.name:8s} {args.commit_mb} MB "
                    f"{sample.wall_s:6.2f} s (daemon CPU {sample.daemon_cpu_s:5.2f} s)  other work {sample.other_busy:.0%}",
                    flush=True,
                )


# --------------------------------------------------------------------------
# profile


def worker_pid(daemon: C.Daemon) -> int | None:
    """Our gunicorn worker: the master's child."""
    main = daemon.main_pid()
    kids = C.children(main) if main else []
    return kids[0] if kids else None


def profile_load(
    daemon: C.Daemon,
    archive: str,
    expect_tags: list[str],
    delete: list[str],
    chunk: int,
    quiet: bool,
    out_path: str,
    baseline: set[str],
) -> dict[str, Any]:
    """One more load into our daemon under ``py-spy record``, not counted with the timed ones.

    Afterwards ``delete`` (the loaded tags) are deleted and the storage is
    checked back to ``baseline``.
    """
    pyspy = shutil.which("py-spy")
    pid = worker_pid(daemon)
    if not pyspy or not pid:
        return {"skipped": "py-spy not installed (pip install py-spy)" if not pyspy else "no worker process"}
    # --threads: the job thread (which also reads the request body) is told
    # apart from gunicorn's idle ones; no --gil, so time in system calls
    # counts; --nonblocking: the worker is not stopped for each sample.
    proc = subprocess.Popen(
        [pyspy, "record", "-p", str(pid), "-r", "250", "--threads", "--nonblocking", "-f", "raw", "-o", out_path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        time.sleep(1.0)  # attached and sampling
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            return {"skipped": f"py-spy failed: {err[-300:]}"}
        sample = post_load(daemon, archive, chunk, quiet, expect_tags)
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
    for ref in delete:
        delete_and_verify(daemon, ref, baseline, check_storage=ref == delete[-1])
    return {"file": out_path, "load_wall_s": round(sample.wall_s, 3), **summarize_profile(out_path)}


def summarize_profile(path: str, top: int = 12) -> dict[str, Any]:
    """Sample counts of the job threads (``job-*``) per function from py-spy's raw (collapsed) output.

    Only the job thread works during a load (it reads the request body
    itself); gunicorn's other threads idle in ``select`` or a queue.
    Inclusive counts merge all lines of a function; frames that every
    sample has (thread start-up, ``Job.run``) are left out.
    """
    self_counts: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        return {"error": str(exc)}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or not frames[0].startswith("thread ") or ": job-" not in frames[0]:
            continue
        n = int(count)
        total += n
        names = [_frame_name(f) for f in frames[1:]] or ["?"]
        self_counts[names[-1]] += n
        for name in set(names):
            incl[name] += n
    inclusive = [(k, v) for k, v in incl.most_common() if v < 0.95 * total][: top * 2]
    return {
        "job_samples": total,
        "job_seconds": round(total / 250, 2),
        "self": self_counts.most_common(top),
        "inclusive": inclusive,
    }


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (to/file.py)``: lines merged."""
    func, sep, where = frame.partition(" (")
    if not sep:
        return frame
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{func} ({'/'.join(file.split('/')[-2:])})"


def print_profile(what: str, prof: dict[str, Any]) -> None:
    if "skipped" in prof or "error" in prof:
        print(f"  profile ({what}): {prof.get('skipped') or prof.get('error')}")
        return
    total = max(1, prof["job_samples"])
    print(
        f"  profile of our job thread, {what}: load {prof['load_wall_s']:.2f} s, job thread busy "
        f"{prof['job_seconds']:.2f} s ({prof['job_samples']} samples; raw: {prof['file']})"
    )
    print("    inclusive:")
    for name, n in prof["inclusive"]:
        print(f"      {n / total:6.1%}  {name}")
    print("    self:")
    for name, n in prof["self"]:
        print(f"      {n / total:6.1%}  {name}")


# --------------------------------------------------------------------------
# one driver pair


def run_pair(
    key: str, specs: list[C.DaemonSpec], archives: Archives, args: argparse.Namespace, stamp: str
) -> dict[str, Any]:
    """Start both daemons of a driver pair, run the loads interleaved, then the lists."""
    chunk = args.chunk_kib * 1024
    daemons: list[tuple[C.Daemon, C.NotifyListener]] = []
    out: dict[str, Any] = {}
    try:
        for spec in specs:
            daemon, listener, start = A.start_and_wait(spec)
            daemons.append((daemon, listener))
            print(
                f"  {spec.name} -s {spec.driver}: ready in {start.ready_s * 1000:.0f} ms (pids {daemon.tree()})",
                flush=True,
            )
            out[spec.name] = {"driver": spec.driver, "loads": [], "ready_s": start.ready_s}
        baselines = {d.name: storage_entries(d) for d, _ in daemons}
        for rnd in range(args.reps if "load" in args.phases else 0):
            order = daemons if rnd % 2 == 0 else daemons[::-1]
            for daemon, _ in order:
                neighbour = next((d for d, _ in daemons if d is not daemon), None)
                os.sync()  # earlier writes are flushed now, not during this load
                sample = post_load(daemon, archives.big, chunk, args.quiet, [BIG_TAG], neighbour)
                got = image_id(daemon, BIG_TAG)
                if got != archives.big_id:
                    raise BenchError(f"{daemon.name}: loaded {BIG_TAG} has ID {got}, expected {archives.big_id}")
                delete_and_verify(daemon, BIG_TAG, baselines[daemon.name])
                out[daemon.name]["loads"].append(asdict(sample) | {"mb_per_s": sample.mb_per_s})
                print(
                    f"  load {rnd + 1}/{args.reps} {daemon.name:8s} -s {daemon.spec.driver:9s} "
                    f"{sample.wall_s:6.2f} s  {sample.mb_per_s:6.1f} MB/s  body sent at {sample.body_sent_s:5.2f} s  "
                    f"daemon CPU {sample.daemon_cpu_s:5.2f} s  peak RSS {sample.peak_rss_mib:6.1f} MiB  "
                    f"other work {sample.other_busy:.0%}",
                    flush=True,
                )
        ours = next((d for d, _ in daemons if d.name == "engine"), None)
        if args.profile and ours is not None and "load" in args.phases:
            C.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            path = os.path.join(str(C.RESULTS_DIR), f"images-{stamp}-profile-{key}-big.txt")
            os.sync()
            prof = profile_load(ours, archives.big, [BIG_TAG], [BIG_TAG], chunk, args.quiet, path, baselines["engine"])
            out["engine"]["profile_big"] = prof
            print_profile(f"{key}, big image", prof)
        for daemon, _ in daemons if "list" in args.phases else []:
            neighbour = next((d for d, _ in daemons if d is not daemon), None)
            os.sync()
            res = measure_list(daemon, archives.many, archives.many_tags, args.lists, chunk, neighbour)
            out[daemon.name]["list"] = res.summary() | {"lat_ms": [round(v, 3) for v in res.lat_ms]}
            s = out[daemon.name]["list"]
            print(
                f"  list {daemon.name:8s} -s {daemon.spec.driver:9s} loaded {res.images} images in "
                f"{res.load.wall_s:.2f} s (daemon CPU {res.load.daemon_cpu_s:.2f} s); GET /images/json "
                f"median {s['median_ms']:.1f} ms p90 {s['p90_ms']:.1f} ms first {s['first_ms']:.1f} ms, "
                f"{s['response_bytes']} bytes, other work {s['other_busy']:.0%}",
                flush=True,
            )
        if "build" in args.phases or "commit" in args.phases:
            run_build_phases(daemons, archives, args, out)
        if args.profile and ours is not None and "list" in args.phases:
            # The many-images load again, profiled: all 500 deleted first
            # (which also checks that deleting them leaves nothing behind).
            for ref in archives.many_tags:
                delete_and_verify(ours, ref, baselines["engine"], check_storage=ref == archives.many_tags[-1])
            path = os.path.join(str(C.RESULTS_DIR), f"images-{stamp}-profile-{key}-many.txt")
            os.sync()
            prof = profile_load(ours, archives.many, [], archives.many_tags, chunk, True, path, baselines["engine"])
            out["engine"]["profile_many"] = prof
            print_profile(f"{key}, {len(archives.many_tags)} small images", prof)
        for daemon, _ in daemons:
            if not daemon.alive():
                raise BenchError(f"{daemon.name} died during the bench:\n{daemon.log_tail()}")
    except BaseException:
        for daemon, _ in daemons:
            print(f"--- {daemon.name} -s {daemon.spec.driver} log tail:\n{daemon.log_tail(15)}", file=sys.stderr)
        raise
    finally:
        for daemon, listener in daemons:
            A.stop_and_clean(daemon, listener)
    return out


# --------------------------------------------------------------------------
# report


def _fmt(v: float | None, nd: int = 2) -> str:
    """:func:`_common.fmt_number` with 2 decimals unless told otherwise (seconds of a load)."""
    return C.fmt_number(v, nd)


def pair_rows(res: dict[str, Any], names: list[str]) -> tuple[list[list[str]], dict[str, Any]]:
    """Table rows and JSON summary of one driver pair (the phases that ran)."""
    summary: dict[str, Any] = {}
    for name in names:
        doc: dict[str, Any] = {"driver": res[name]["driver"]}
        loads = res[name]["loads"]
        if loads:
            wall = [s["wall_s"] for s in loads]
            size = loads[0]["archive_bytes"]
            doc.update(
                {
                    "load_median_s": C.median(wall),
                    "load_min_s": min(wall),
                    "load_mb_per_s_median": size / MB / C.median(wall),
                    "load_body_sent_median_s": C.median([s["body_sent_s"] for s in loads]),
                    "load_after_body_median_s": C.median([s["wall_s"] - s["body_sent_s"] for s in loads]),
                    "load_daemon_cpu_median_s": C.median([s["daemon_cpu_s"] for s in loads]),
                    "load_peak_rss_median_mib": C.median([s["peak_rss_mib"] for s in loads]),
                    "load_other_busy_max": max(s["other_busy"] for s in loads),
                    "load_neighbour_cpu_max_s": max(s["neighbour_cpu_s"] for s in loads),
                    "archive_mb": size / MB,
                }
            )
        if "list" in res[name]:
            doc["list"] = {k: v for k, v in res[name]["list"].items() if k != "lat_ms"}
        for phase in ("build_cold", "build_cached", "commit"):
            samples = res[name].get(phase)
            if samples:
                doc[phase] = {
                    "median_s": C.median([x["wall_s"] for x in samples]),
                    "min_s": min(x["wall_s"] for x in samples),
                    "daemon_cpu_median_s": C.median([x["daemon_cpu_s"] for x in samples]),
                    "other_busy_max": max(x["other_busy"] for x in samples),
                }
        summary[name] = doc
    eng = summary["engine"]
    ref = summary.get("dockerd")

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("PASS" if ok else "FAIL")

    rows: list[list[str]] = []

    def add(metric: str, fn: Any, target: str = "", ok: bool | None = None) -> None:
        rows.append([metric] + [fn(summary[n]) for n in names] + [target, verdict(ok)])

    if "load_median_s" in eng:
        add(
            f"load {eng['archive_mb']:.0f} MB: median / min s",
            lambda s: f"{_fmt(s['load_median_s'])} / {_fmt(s['load_min_s'])}",
            "<= dockerd" if ref else "",
            eng["load_median_s"] <= ref["load_median_s"] if ref else None,
        )
        add("load: MB/s (median)", lambda s: _fmt(s["load_mb_per_s_median"], 1))
        add("load: body sent after, s (median)", lambda s: _fmt(s["load_body_sent_median_s"]))
        add("load: answer done after body, s (median)", lambda s: _fmt(s["load_after_body_median_s"]))
        add("load: daemon CPU s (median)", lambda s: _fmt(s["load_daemon_cpu_median_s"]))
        add("load: peak RSS MiB (median)", lambda s: _fmt(s["load_peak_rss_median_mib"], 1))
        add("load: other work, max % of CPUs", lambda s: _fmt(s["load_other_busy_max"] * 100, 0))
    if "list" in eng:
        n_images = eng["list"]["images"]
        add(
            f"load {n_images} small images (one archive): wall / daemon CPU s",
            lambda s: f"{_fmt(s['list']['load_s'])} / {_fmt(s['list']['load_daemon_cpu_s'])}",
        )
        add(
            f"GET /images/json ({n_images}): median / p90 ms",
            lambda s: f"{_fmt(s['list']['median_ms'], 1)} / {_fmt(s['list']['p90_ms'], 1)}",
            f"< {TARGET_LIST_MS:.0f}",
            eng["list"]["median_ms"] < TARGET_LIST_MS,
        )
        add(
            "GET /images/json: warm-up (untimed) / max ms",
            lambda s: f"{_fmt(s['list']['first_ms'], 1)} / {_fmt(s['list']['max_ms'], 1)}",
        )
        add("GET /images/json: daemon CPU ms/req", lambda s: _fmt(s["list"]["daemon_cpu_ms_per_req"], 1))
        add("GET /images/json: response bytes", lambda s: f"{s['list']['response_bytes']:,}")
        add("GET /images/json: other work, % of CPUs", lambda s: _fmt(s["list"]["other_busy"] * 100, 0))
    for phase, label in (
        ("build_cold", "build, 10 steps, cold (nocache)"),
        ("build_cached", "build, 10 steps, fully cached"),
        ("commit", "commit after the writes"),
    ):
        if phase not in eng:
            continue
        add(
            f"{label}: median / min s",
            lambda s, p=phase: f"{_fmt(s[p]['median_s'], 3)} / {_fmt(s[p]['min_s'], 3)}",
            "<= dockerd" if ref and phase in ref else "",
            eng[phase]["median_s"] <= ref[phase]["median_s"] if ref and phase in ref else None,
        )
        add(f"{label}: daemon CPU s (median)", lambda s, p=phase: _fmt(s[p]["daemon_cpu_median_s"], 3))
        add(f"{label}: other work, max % of CPUs", lambda s, p=phase: _fmt(s[p]["other_busy_max"] * 100, 0))
    return rows, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="loads of the big image per daemon and driver (default 3)")
    ap.add_argument("--size-mb", type=int, default=100, help="size of the big image (default 100)")
    ap.add_argument("--images", type=int, default=500, help="images for GET /images/json (default 500)")
    ap.add_argument("--lists", type=int, default=50, help="timed GET /images/json requests (default 50)")
    ap.add_argument(
        "--drivers",
        default="vfs,overlay",
        help="driver pairs, comma-separated: vfs (vfs/vfs), overlay (overlay/overlay2)",
    )
    ap.add_argument(
        "--phases",
        default="load,list,build,commit",
        help="phases to run, comma-separated: load, list, build (cold and cached), commit (default all)",
    )
    ap.add_argument("--build-reps", type=int, default=3, help="cold+cached builds and commits per daemon (default 3)")
    ap.add_argument(
        "--commit-mb", type=int, default=100, help="MB the container writes before the commit (default 100)"
    )
    ap.add_argument("--chunk-kib", type=int, default=32, help="chunk size of the load body (default 32, as the CLI)")
    ap.add_argument("--quiet", action="store_true", help="load with quiet=1 (the CLI's choice when not on a tty)")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="per driver, load the big image and the many images once more into ours under py-spy",
    )
    ap.add_argument("--no-dockerd", action="store_true", help="measure our daemon only")
    ap.add_argument("--dockerd", default=C.DOCKERD, help=f"reference dockerd binary (default {C.DOCKERD})")
    ap.add_argument("--engine-arg", action="append", default=[], help="extra flag for our daemon (repeatable)")
    ap.add_argument(
        "--engine-rev",
        metavar="REV",
        help="run our daemon from this git revision (git archive to a temp dir), not the checkout "
        "as it is on disk: for stable numbers while engine/ is being edited",
    )
    ap.add_argument("--json", metavar="PATH", help="where to write the JSON (default bench/results/images-<time>.json)")
    args = ap.parse_args(argv)

    keys = [k.strip() for k in args.drivers.split(",") if k.strip()]
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if any(p not in ("load", "list", "build", "commit") for p in args.phases) or args.build_reps < 1:
        ap.error(f"bad --phases {args.phases} or --build-reps")
    bad = [k for k in keys if k not in DRIVER_PAIRS]
    if bad or not keys or args.reps < 1 or args.lists < 1 or args.images < 1:
        ap.error(f"bad arguments (unknown driver pair {bad}?)" if bad else "bad arguments")
    if os.geteuid() != 0:
        print("bench_images: needs root (unshare of mount/net/pid namespaces)", file=sys.stderr)
        return 2
    C.install_signal_handlers()
    with_dockerd, names, note = C.choose_dockerd(args.no_dockerd, args.dockerd)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    busy_before = C.busy_before_bench()

    archives: Archives | None = None
    source: str | None = None
    engine_rev = None
    results: dict[str, Any] = {}
    try:
        if args.engine_rev:
            engine_rev = C.git_rev(args.engine_rev)
            source = C.export_source(engine_rev)
            print(f"our daemon runs from {source}: engine/ of {engine_rev[:12]} ({args.engine_rev})")
        t0 = time.monotonic()
        archives = build_archives(args.size_mb, args.images)
        os.sync()
        print(
            f"archives in {archives.dir}: big {os.path.getsize(archives.big) / MB:.1f} MB "
            f"({archives.big_id[:19]}), {args.images} images {os.path.getsize(archives.many) / MB:.1f} MB; "
            f"built in {time.monotonic() - t0:.1f} s"
        )
        for i, key in enumerate(keys):
            ours, theirs = DRIVER_PAIRS[key]
            specs = [C.engine_spec(args.engine_arg, storage_driver=ours, source=source)]
            if with_dockerd:
                specs.append(C.dockerd_spec(args.dockerd, storage_driver=theirs))
            print(
                f"\n[{i + 1}/{len(keys)}] {key}: engine -s {ours}"
                + (f" vs dockerd --storage-driver={theirs}" if with_dockerd else "")
            )
            results[key] = run_pair(key, specs, archives, args, stamp)
    except KeyboardInterrupt:
        print("\ninterrupted; daemons stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        C.stop_all()
        if archives is not None:
            shutil.rmtree(archives.dir, ignore_errors=True)
        if source is not None:
            shutil.rmtree(source, ignore_errors=True)

    busy_after = C.busy_after_bench()
    summaries: dict[str, Any] = {}
    for key in keys:
        rows, summaries[key] = pair_rows(results[key], names)
        ours, theirs = DRIVER_PAIRS[key]
        headers = (
            ["metric", f"engine ({ours})"] + ([f"dockerd ({theirs})"] if with_dockerd else []) + ["target (engine)", ""]
        )
        C.print_table(headers, rows, title=f"Results, {key} (median over {args.reps} loads; MB = 10^6 bytes)")
    if note:
        print(f"\nnote: {note}")
    path = C.write_json(
        {
            "params": {
                "reps": args.reps,
                "phases": args.phases,
                "build_reps": args.build_reps,
                "commit_mb": args.commit_mb,
                "size_mb": args.size_mb,
                "images": args.images,
                "lists": args.lists,
                "drivers": {k: DRIVER_PAIRS[k] for k in keys},
                "chunk_kib": args.chunk_kib,
                "quiet": args.quiet,
                "engine_args": args.engine_arg,
                "api": API,
                "engine_rev": engine_rev or "checkout as on disk",
                "dockerd": args.dockerd if with_dockerd else None,
            },
            "note": note or None,
            "other_cpu_busy": {"before": round(busy_before, 3), "after": round(busy_after, 3)},
            "targets": {
                "load": "<= dockerd",
                "list_median_ms": TARGET_LIST_MS,
                "build_cold": "<= dockerd",
                "build_cached": "<= dockerd",
                "commit": "<= dockerd",
            },
            "summary": summaries,
            "runs": results,
        },
        "images",
        args.json,
    )
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
