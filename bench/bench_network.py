"""Network bench: what bridge networking adds to ``docker run --rm``, what ``-p`` costs, and user-defined
networks (create + connect + rm, ``run --rm`` on one, DNS lookups from a container); ours vs dockerd.

What it measures, for our daemon (``engine -d`` with its default bridge:
``engine0``, a veth pair per container, iptables, the userland proxy) and,
in the same run, for the reference ``dockerd`` 20.10 with *its* default
bridge networking (``docker0``, libnetwork, iptables, ``docker-proxy``:
``_common.dockerd_spec(networking=True)``), each in its own sandbox
(``_common.py``: private mount, network and PID namespaces, so the bridges,
veths, iptables rules and sysctls of both daemons live and die there), for
each pair of graph drivers asked for (default both):

* ``overlay``: ours ``-s overlay`` against dockerd ``--storage-driver=overlay2``;
* ``vfs``: ours ``-s vfs`` against dockerd ``--storage-driver=vfs``.

Before anything is timed, both daemons must show their bridge inside the
sandbox (``nsenter --net=/proc/<sandbox init>/ns/net ip -o link``, and
``GET /networks/bridge`` names it), and a container run on each network
must see what it should: ``ip -o -4 addr`` in the container lists an
``eth0`` on the bridge's subnet with the default network, only ``lo`` with
``--net none``.

1. **run --rm, bridge vs none**: ``--reps`` (10) rounds; in each, both
   daemons (A B, then B A) run ``docker run --rm busybox true`` (the
   default network: ``NetworkMode`` ``default``) and ``docker run --rm
   --net none busybox true`` (the order of the two alternates every two
   rounds), with the real docker CLI, ``sync(2)`` before each. Then the
   same through the API without the CLI (``http.client`` over the unix
   socket, ``/v1.41``): ``POST /containers/create`` (``AutoRemove``,
   ``NetworkMode`` ``default`` or ``none``), ``POST
   /containers/<id>/wait?condition=removed`` on a second connection (its
   headers come back at once), ``POST /containers/<id>/start``, the wait's
   answer (exit code 0), then inspect must answer 404. Reported: medians
   per mode, the **added time** (median bridge minus median none; also the
   median of the per-round differences, which drift on the machine does
   not move), and ours/dockerd. Target (from the issue): our added time at
   most dockerd's, for the CLI and for the API.
2. **-p 18080:80** (unless ``--no-publish``): ``--publish-reps`` rounds of
   ``docker run -d [--net none | (default) | -p 18080:80] busybox sleep
   300``, each followed by ``docker rm -f <id>``; both are timed. Each
   daemon publishes 18080 in its own network namespace, so they never
   collide. After each ``-p`` run the sandbox must listen on 18080
   (``/proc/<sandbox init>/net/tcp``), after its ``rm -f`` it must not.
   The first ``-p`` container of each daemon is also checked for its DNAT
   rule (``iptables-save -t nat`` in the sandbox). Reported: medians, and
   the publishing cost (``-p`` minus default bridge) of ``run -d`` and of
   ``rm -f``.

3. **user-defined networks** (unless ``--no-user-networks``): a network
   with two containers and one container on the default bridge per daemon;
   ``--user-reps`` (default ``--reps``) rounds of ``docker network create``,
   ``network connect`` (of the default bridge's container), ``network
   disconnect`` and ``network rm``, each timed; rounds of ``docker run --rm
   --network bench-user busybox true`` against the default bridge; and
   ``--dns-queries`` (200) A queries for the other container's name sent
   from inside one container's network namespace to ``127.0.0.11:53``
   (``DNS_TIMER``: a stdlib UDP client; both daemons' embedded DNS servers
   answer it). Targets: create + connect + disconnect + rm, ``run --rm`` on
   a user network and the lookup's median, each at most dockerd's.

Where our time goes: with ``--engine-arg=-D`` our daemon logs every job
with its duration (``-job allocate_interface(<id>) = OK (0) 12.3ms``); the
bench reads the log before the daemon stops and prints, per job and per
kind of run (bridge / none / ``-p``, matched by container ID), the median
job time. ``-D`` itself slows our daemon a little: leave it off for the
numbers that count. ``--profile`` adds ``--profile-runs`` (20) bridge
``run --rm`` into our daemon under ``py-spy record --idle --threads`` (not
timed; see ``bench_containers.py``).

Clean-up and checks: every container is removed (``docker rm -f``, then the
daemon must list none); then each sandbox must hold no veth and no DNAT
rule for 18080 any more, before its daemon is stopped. After the run, with
every sandbox gone: the host's ``ip -o link``, ``iptables-save`` and
``ip6tables-save`` (comment lines aside), ``ip_forward`` and the
``bridge-nf-call-*`` sysctls must be what they were before; no process may
be left in any of the sandboxes' PID or network namespaces; no mount may be
left in the daemons' work directories; and no cgroup of any container the
bench made (see ``bench_containers.py``). Any of these makes the bench
exit 1. All traffic stays inside the sandboxes' namespaces and on the unix
sockets: nothing is ever connected to, only the listening socket is looked
at.

Usage: ``python bench/bench_network.py [--reps 10] [--drivers overlay,vfs]
[--no-publish] [--no-user-networks] [--dns-queries 200] [--engine-arg=-D] [--profile] [--no-dockerd]
[--json PATH]``
(root; see ``bench/README.md``).
"""

from __future__ import annotations

import argparse
import collections
import difflib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import bench_api as A
import bench_containers as BC

API = BC.API
IMAGE = BC.IMAGE
DOCKER_CLI = BC.DOCKER_CLI
#: Default order: overlay first (the pair the issue asks about), vfs as the second option.
DRIVER_PAIRS = {"overlay": BC.DRIVER_PAIRS["overlay"], "vfs": BC.DRIVER_PAIRS["vfs"]}
#: run --rm modes: "bridge" is the default network (the CLI sends NetworkMode "default").
MODES = ("bridge", "none")
NETWORK_MODE = {"bridge": "default", "none": "none"}
#: run -d variants of the publish phase, and their CLI flags.
VARIANTS = ("none", "bridge", "publish")
PUBLISH_PORT = 18080
VARIANT_FLAGS = {"none": ["--net", "none"], "bridge": [], "publish": ["-p", f"{PUBLISH_PORT}:80"]}
#: The bridge each daemon makes in its sandbox.
BRIDGES = {"engine": "engine0", "dockerd": "docker0"}
#: Target of the issue: our added time at most dockerd's.
TARGET_ADDED_RATIO = 1.0
#: Host sysctls that a daemon's bridge set-up writes (in its own netns: they must not move here).
HOST_SYSCTLS = (
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
)


class BenchError(BC.BenchError):
    """A check failed or a daemon answered something other than success: the bench stops."""


# --------------------------------------------------------------------------
# the sandboxes' network namespaces


def in_sandbox_net(daemon: C.Daemon, *argv: str, timeout: float = 30.0) -> str:
    """Run ``argv`` (iproute2, iptables-save) in the daemon's network namespace only; its stdout.

    ``nsenter --net`` keeps our mount namespace, so the host's binaries run,
    but every netlink and netfilter call is answered by the sandbox's
    namespace.
    """
    init = daemon.init_pid()
    if not init:
        raise BenchError(f"{daemon.name}: its sandbox is gone")
    proc = subprocess.run(["nsenter", f"--net=/proc/{init}/ns/net", *argv], capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(
            f"{daemon.name}: {' '.join(argv)} in its sandbox failed: {proc.stderr.decode(errors='replace')[-300:]}"
        )
    return proc.stdout.decode(errors="replace")


def sandbox_links(daemon: C.Daemon) -> list[tuple[str, str]]:
    """(name, kind) of every link in the sandbox (``ip -o -d link``; kind "" for ``lo``)."""
    out = []
    for line in in_sandbox_net(daemon, "ip", "-o", "-d", "link").splitlines():
        parts = line.split(": ", 2)
        if len(parts) < 3:
            continue
        name = parts[1].split("@", 1)[0]
        words = parts[2].split()
        kind = next((w for w in ("bridge", "veth") if w in words), "")
        out.append((name, kind))
    return out


def listening(daemon: C.Daemon, port: int) -> bool:
    """Whether anything in the sandbox listens on TCP ``port`` (its ``/proc/net/tcp{,6}``, no connection made)."""
    init = daemon.init_pid()
    want = f":{port:04X}"
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{init}/net/{name}") as fh:
                next(fh, None)
                for line in fh:
                    fields = line.split()
                    if len(fields) > 3 and fields[1].endswith(want) and fields[3] == "0A":  # TCP_LISTEN
                        return True
        except OSError:
            continue
    return False


def dnat_rules(daemon: C.Daemon, port: int) -> list[str]:
    """The sandbox's nat rules that mention ``--dport <port>``."""
    return [
        line for line in in_sandbox_net(daemon, "iptables-save", "-t", "nat").splitlines() if f"--dport {port}" in line
    ]


def check_bridge_up(side: BC.Side) -> dict[str, Any]:
    """The daemon's bridge exists in its sandbox and is its ``bridge`` network (else BenchError)."""
    want = BRIDGES[side.name]
    links = sandbox_links(side.daemon)
    if (want, "bridge") not in links:
        raise BenchError(f"{side.name}: no bridge {want} in its sandbox (links: {links}); is its networking on?")
    net = side.api.json("GET", "/networks/bridge")
    name = (net.get("Options") or {}).get("com.docker.network.bridge.name")
    if name != want:
        raise BenchError(f"{side.name}: GET /networks/bridge names bridge {name!r}, expected {want}")
    subnet = ((net.get("IPAM") or {}).get("Config") or [{}])[0].get("Subnet", "")
    return {"bridge": want, "subnet": subnet, "links": links}


def check_container_networks(side: BC.Side, subnet: str, tmp: str) -> dict[str, dict[str, str]]:
    """A container on each network sees what it should: eth0 on ``subnet`` (bridge), only lo (none)."""
    import ipaddress

    net = ipaddress.ip_network(subnet) if subnet else None
    seen: dict[str, dict[str, str]] = {}
    for mode in MODES:
        flags = ["--net", "none"] if mode == "none" else []
        cidfile = tempfile.mktemp(prefix="cid-", dir=tmp)
        _wall, out = side.cli.run("run", "--rm", "--cidfile", cidfile, *flags, IMAGE, "ip", "-o", "-4", "addr")
        take_cidfile(side, cidfile, f"check-{mode}")
        addrs: dict[str, str] = {}
        for line in out.splitlines():
            words = line.split()
            if len(words) >= 4 and words[2] == "inet":
                addrs[words[1]] = words[3]
        seen[mode] = addrs
        if mode == "none":
            if set(addrs) != {"lo"}:
                raise BenchError(f"{side.name}: a --net none container has {sorted(addrs)}, expected only lo")
        else:
            eth0 = addrs.get("eth0", "")
            if not eth0 or (net is not None and ipaddress.ip_interface(eth0).ip not in net):
                raise BenchError(
                    f"{side.name}: a container on the default network has {addrs}, expected an eth0 in {subnet}"
                )
    return seen


def sandbox_leftovers(side: BC.Side) -> list[str]:
    """After the clean-up: veths still in the sandbox, DNAT rules for the published port."""
    left = [f"veth {name}" for name, kind in sandbox_links(side.daemon) if kind == "veth"]
    left += [f"nat rule: {rule}" for rule in dnat_rules(side.daemon, PUBLISH_PORT)]
    if listening(side.daemon, PUBLISH_PORT):
        left.append(f"something still listens on {PUBLISH_PORT}")
    return left


# --------------------------------------------------------------------------
# the host before and after


def _command_out(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"<{argv[0]} failed: {exc}>"
    return proc.stdout.decode(errors="replace") + (f"<exit {proc.returncode}>" if proc.returncode else "")


def _mount_points(prefixes: Sequence[str]) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(tuple(prefixes)):
                out.append(point)
    return sorted(out)


def host_snapshot() -> dict[str, Any]:
    """What the daemons' networking could change on the host, if it escaped its sandbox.

    ``iptables-save`` comment lines (``# Generated by ... on <time>``) are
    dropped; packet counters are ``[0:0]`` without ``-c``.
    """

    def save(binary: str) -> list[str]:
        return [line for line in _command_out([binary]).splitlines() if not line.startswith("#")]

    sysctls: dict[str, str | None] = {}
    for path in HOST_SYSCTLS:
        try:
            with open(path) as fh:
                sysctls[path] = fh.read().strip()
        except OSError:
            sysctls[path] = None
    return {
        "ip_link": _command_out(["ip", "-o", "link"]).splitlines(),
        "ip_addr": _command_out(["ip", "-o", "addr"]).splitlines(),
        "iptables": save("iptables-save"),
        "ip6tables": save("ip6tables-save"),
        "sysctls": sysctls,
    }


def host_diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Lines that differ between two snapshots (empty: unchanged)."""
    out: list[str] = []
    for key in before:
        if before[key] == after.get(key):
            continue
        if isinstance(before[key], list):
            diff = difflib.unified_diff(before[key], after.get(key) or [], lineterm="", n=0)
            out += [f"{key}: {line}" for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        else:
            out.append(f"{key}: {before[key]} -> {after.get(key)}")
    return out


def namespace_ids(daemon: C.Daemon) -> dict[str, str]:
    """The sandbox's PID and network namespaces (``pid:[4026...]``), to look for leftovers later."""
    init = daemon.init_pid()
    out = {}
    for kind in ("pid", "net", "mnt"):
        try:
            out[kind] = os.readlink(f"/proc/{init}/ns/{kind}")
        except OSError:
            pass
    return out


def processes_in(namespaces: Sequence[str]) -> list[str]:
    """``pid comm`` of every process here that is still in one of ``namespaces``."""
    wanted = set(namespaces)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for kind in ("pid", "net", "mnt"):
            try:
                if os.readlink(f"/proc/{entry}/ns/{kind}") in wanted:
                    found.append(f"{entry} {C.comm(int(entry))}")
                    break
            except OSError:
                continue
    return found


# --------------------------------------------------------------------------
# the runs


def create_body(cmd: list[str], mode: str, auto_remove: bool) -> dict[str, Any]:
    """What ``docker run [--net none]`` sends, without the attach flags (nothing is attached)."""
    return {
        "Image": IMAGE,
        "Cmd": cmd,
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "Tty": False,
        "OpenStdin": False,
        "StdinOnce": False,
        "HostConfig": {"AutoRemove": auto_remove, "NetworkMode": NETWORK_MODE[mode]},
    }


def raw_run_rm(api: BC.Api, mode: str) -> BC.RawRun:
    """create (AutoRemove, ``mode``) + wait?condition=removed (opened first) + start; checked: exit 0, then gone.

    As :func:`bench_containers.raw_run_rm`, with the network mode as a parameter.
    """
    t0 = time.perf_counter_ns()
    main = api.connect()
    waiter: http.client.HTTPConnection | None = None
    try:
        _s, out = api.call("POST", "/containers/create", create_body(["true"], mode, True), expect=(201,), conn=main)
        cid = json.loads(out)["Id"]
        t1 = time.perf_counter_ns()
        # Short timeout until the start: a daemon that did not flush the wait
        # headers would otherwise hang the bench here.
        waiter = api.connect(timeout=30)
        waiter.request("POST", f"{API}/containers/{cid}/wait?condition=removed")
        wait_resp = waiter.getresponse()  # status line and headers only
        t2 = time.perf_counter_ns()
        api.call("POST", f"/containers/{cid}/start", expect=(204,), conn=main)
        t3 = time.perf_counter_ns()
        if waiter.sock is not None:
            waiter.sock.settimeout(120)
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
        raise BenchError(f"{api.daemon.name}: run --rm ({mode}) {cid[:12]} exited with {answer}")
    status, _ = api.call("GET", f"/containers/{cid}/json", expect=(200, 404))
    if status != 404:
        raise BenchError(f"{api.daemon.name}: {cid[:12]} still exists after wait?condition=removed answered")
    ms = 1e-6
    return BC.RawRun(cid, (t1 - t0) * ms, (t2 - t1) * ms, (t3 - t2) * ms, (t4 - t3) * ms, (t4 - t0) * ms)


def remember(side: BC.Side, cid: str, tag: str) -> None:
    """Record a container the bench made: for the clean-up, the cgroup check and the job log."""
    side.ids.add(cid)
    side.out.setdefault("id_tags", {})[cid] = tag


def cli_run_rm(side: BC.Side, mode: str, tmp: str, tag: str) -> float:
    """``docker run --rm [--net none] busybox true``; wall seconds."""
    cidfile = tempfile.mktemp(prefix="cid-", dir=tmp)  # the CLI refuses an existing file
    flags = ["--net", "none"] if mode == "none" else []
    wall, _ = side.cli.run("run", "--rm", "--cidfile", cidfile, *flags, IMAGE, "true")
    take_cidfile(side, cidfile, tag)
    return wall


def take_cidfile(side: BC.Side, cidfile: str, tag: str) -> None:
    """Remember the container the CLI wrote to ``cidfile``, and remove the file."""
    try:
        with open(cidfile) as fh:
            remember(side, fh.read().strip(), tag)
        os.unlink(cidfile)
    except OSError:
        pass


def cli_run_d(side: BC.Side, variant: str, tag: str) -> tuple[float, str]:
    """``docker run -d <variant flags> busybox sleep 300``; (wall seconds, container ID)."""
    wall, out = side.cli.run("run", "-d", *VARIANT_FLAGS[variant], IMAGE, "sleep", "300")
    cid = out.strip().splitlines()[-1] if out.strip() else ""
    if len(cid) != 64:
        raise BenchError(f"{side.name}: docker run -d printed {out!r}, not a container ID")
    remember(side, cid, tag)
    return wall, cid


def rounds(
    sides: Sequence[BC.Side], n: int, kinds: Sequence[str], every: int = 2
) -> Iterator[tuple[int, BC.Side, str]]:
    """(round, side, kind): the daemons take turns (A B, B A, ...), and the order of the kinds
    rotates every ``every`` rounds, so every (daemon, kind) pair comes first as often as the others."""
    for i in range(n):
        order = list(sides) if i % 2 == 0 else list(sides)[::-1]
        shift = (i // every) % len(kinds)
        ks = list(kinds[shift:]) + list(kinds[:shift])
        for side in order:
            for kind in ks:
                yield i, side, kind


def paired_added(samples: Sequence[tuple[int, float]], base: Sequence[tuple[int, float]]) -> float:
    """Median over the rounds of (this round's sample minus the base's): drift between rounds cancels."""
    by_round = dict(base)
    diffs = [v - by_round[i] for i, v in samples if i in by_round]
    return C.median(diffs)


def phase_run_rm(sides: list[BC.Side], reps: int, tmp: str) -> None:
    """Phase 1: run --rm on the default network and with --net none, CLI then API."""
    for side in sides:  # untimed warm-up, both modes: first-use costs are not what is compared
        for mode in MODES:
            side.out[f"warmup_cli_{mode}_ms"] = cli_run_rm(side, mode, tmp, f"warmup-{mode}") * 1000
            run = raw_run_rm(side.api, mode)
            remember(side, run.id, f"warmup-{mode}")
            side.out[f"warmup_api_{mode}_ms"] = run.total_ms
        print(
            f"  warm-up {side.name:8s} "
            + "  ".join(
                f"{m}: CLI {side.out[f'warmup_cli_{m}_ms']:6.1f} / API {side.out[f'warmup_api_{m}_ms']:6.1f} ms"
                for m in MODES
            ),
            flush=True,
        )
    cli: dict[str, dict[str, list[tuple[int, float]]]] = {s.name: {m: [] for m in MODES} for s in sides}
    window = BC.CpuWindow([s.daemon for s in sides])
    for i, side, mode in rounds(sides, reps, MODES):
        os.sync()  # the previous run's writes and deletions are flushed now, not during this one
        cli[side.name][mode].append((i, cli_run_rm(side, mode, tmp, f"rm-{mode}") * 1000))
    cpu_cli = window.stop()
    api: dict[str, dict[str, list[tuple[int, BC.RawRun]]]] = {s.name: {m: [] for m in MODES} for s in sides}
    window = BC.CpuWindow([s.daemon for s in sides])
    for i, side, mode in rounds(sides, reps, MODES):
        os.sync()
        run = raw_run_rm(side.api, mode)
        remember(side, run.id, f"rm-{mode}")
        api[side.name][mode].append((i, run))
    cpu_api = window.stop()
    for side in sides:
        side.out["run_rm_cli_ms"] = {m: cli[side.name][m] for m in MODES}
        side.out["run_rm_api"] = {m: [(i, asdict(r)) for i, r in api[side.name][m]] for m in MODES}
        side.out["run_rm_cpu"] = {"cli": cpu_cli, "api": cpu_api}
        c = {m: C.median([v for _i, v in cli[side.name][m]]) for m in MODES}
        a = {m: C.median([r.total_ms for _i, r in api[side.name][m]]) for m in MODES}
        print(
            f"  run --rm {side.name:8s} CLI bridge {c['bridge']:7.1f}  none {c['none']:7.1f}  added "
            f"{c['bridge'] - c['none']:6.1f} ms   API bridge {a['bridge']:7.1f}  none {a['none']:7.1f}  added "
            f"{a['bridge'] - a['none']:6.1f} ms",
            flush=True,
        )
    print(f"  other work: {max(cpu_cli['other_busy'], cpu_api['other_busy']):.0%} of the CPUs", flush=True)


def phase_publish(sides: list[BC.Side], reps: int) -> None:
    """Phase 2: run -d (none / default bridge / -p 18080:80) and its rm -f, each timed."""
    for side in sides:  # warm-up, with the checks that the publication is real
        for variant in VARIANTS:
            _wall, cid = cli_run_d(side, variant, f"warmup-d-{variant}")
            if variant == "publish":
                if not listening(side.daemon, PUBLISH_PORT):
                    raise BenchError(f"{side.name}: nothing listens on {PUBLISH_PORT} in its sandbox after -p")
                rules = dnat_rules(side.daemon, PUBLISH_PORT)
                if not any("DNAT" in r for r in rules):
                    raise BenchError(f"{side.name}: no DNAT rule for {PUBLISH_PORT} in its sandbox: {rules}")
                ports = (side.api.json("GET", f"/containers/{cid}/json").get("NetworkSettings") or {}).get("Ports")
                side.out["publish_check"] = {"dnat": rules, "ports": ports}
            side.cli.run("rm", "-f", cid)
            if listening(side.daemon, PUBLISH_PORT):
                raise BenchError(f"{side.name}: {PUBLISH_PORT} still listened on after rm -f")
    run: dict[str, dict[str, list[tuple[int, float]]]] = {s.name: {v: [] for v in VARIANTS} for s in sides}
    rm: dict[str, dict[str, list[tuple[int, float]]]] = {s.name: {v: [] for v in VARIANTS} for s in sides}
    window = BC.CpuWindow([s.daemon for s in sides])
    for i, side, variant in rounds(sides, reps, VARIANTS, every=1):
        os.sync()
        wall, cid = cli_run_d(side, variant, f"d-{variant}")
        run[side.name][variant].append((i, wall * 1000))
        if variant == "publish" and not listening(side.daemon, PUBLISH_PORT):
            raise BenchError(f"{side.name}: nothing listens on {PUBLISH_PORT} after run -d -p")
        os.sync()
        wall, _ = side.cli.run("rm", "-f", cid)
        rm[side.name][variant].append((i, wall * 1000))
        if variant == "publish" and listening(side.daemon, PUBLISH_PORT):
            raise BenchError(f"{side.name}: {PUBLISH_PORT} still listened on after rm -f")
    cpu = window.stop()
    for side in sides:
        side.out["run_d_cli_ms"] = run[side.name]
        side.out["rm_f_cli_ms"] = rm[side.name]
        side.out["publish_cpu"] = cpu
        r = {v: C.median([x for _i, x in run[side.name][v]]) for v in VARIANTS}
        f = {v: C.median([x for _i, x in rm[side.name][v]]) for v in VARIANTS}
        print(
            f"  run -d  {side.name:8s} none {r['none']:7.1f}  bridge {r['bridge']:7.1f}  -p {r['publish']:7.1f} ms"
            f"   rm -f none {f['none']:6.1f}  bridge {f['bridge']:6.1f}  -p {f['publish']:6.1f} ms",
            flush=True,
        )
    print(f"  other work: {cpu['other_busy']:.0%} of the CPUs", flush=True)


# --------------------------------------------------------------------------
# phase 3: user-defined networks

USER_NET = "bench-user"
#: The embedded DNS server's address in a container on a user-defined network (both daemons').
EMBEDDED_DNS = "127.0.0.11"
DNS_QUERIES = 200
#: Asks ``127.0.0.11`` for a name ``n`` times over UDP from the namespace it runs in; JSON list of ns.
DNS_TIMER = """
import json, socket, struct, sys, time
name, n = sys.argv[1], int(sys.argv[2])
qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2.0)
s.connect(("127.0.0.11", 53))
out = []
for i in range(n + 10):
    query = struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)
    t0 = time.perf_counter_ns()
    s.send(query)
    reply = s.recv(4096)
    took = time.perf_counter_ns() - t0
    if reply[:2] != query[:2] or reply[3] & 0x0F or struct.unpack("!H", reply[6:8])[0] < 1:
        sys.exit("no answer for %s: %r" % (name, reply[:12]))
    if i >= 10:  # the first ones warm the path up
        out.append(took)
print(json.dumps(out))
"""


def in_container_net(side: BC.Side, pid: int, *argv: str, timeout: float = 60.0) -> str:
    """Run ``argv`` in the network namespace of a container's process ``pid`` (a PID of the daemon's
    sandbox: entered through the sandbox's mount namespace, whose /proc is the sandbox's)."""
    init = side.daemon.init_pid()
    if not init:
        raise BenchError(f"{side.name}: its sandbox is gone")
    proc = subprocess.run(
        ["nsenter", f"--target={init}", "--mount", "--", "nsenter", f"--net=/proc/{pid}/ns/net", *argv],
        capture_output=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise BenchError(
            f"{side.name}: {argv[0]} in container {pid} failed: {proc.stderr.decode(errors='replace')[-400:]}"
        )
    return proc.stdout.decode(errors="replace")


def dns_latency(side: BC.Side, client_pid: int, name: str, n: int) -> list[float]:
    """Latencies (µs) of ``n`` A queries for ``name`` from the client container to its embedded DNS server."""
    out = in_container_net(side, client_pid, sys.executable, "-S", "-c", DNS_TIMER, name, str(n))
    return [ns / 1000 for ns in json.loads(out)]


def user_bridges(side: BC.Side) -> list[str]:
    return [name for name, kind in sandbox_links(side.daemon) if kind == "bridge" and name.startswith("br-")]


def phase_user_networks(sides: list[BC.Side], reps: int, tmp: str, queries: int) -> None:
    """Phase 3: network create + connect + disconnect + rm, run --rm on a user network, DNS from a container."""
    for side in sides:
        side.cli.run("network", "create", USER_NET)
        for name in ("bench-target", "bench-client"):
            _wall, out = side.cli.run("run", "-d", "--name", name, "--network", USER_NET, IMAGE, "sleep", "600")
            remember(side, out.strip(), "user-net")
        _wall, out = side.cli.run("run", "-d", "--name", "bench-anchor", IMAGE, "sleep", "600")
        remember(side, out.strip(), "anchor")
        client = side.api.json("GET", "/containers/bench-client/json")
        target = side.api.json("GET", "/containers/bench-target/json")
        side.out["user_net_pids"] = {"client": client["State"]["Pid"]}
        want = ((target.get("NetworkSettings") or {}).get("Networks") or {}).get(USER_NET, {}).get("IPAddress")
        if not want:
            raise BenchError(f"{side.name}: bench-target has no address on {USER_NET}: {target.get('NetworkSettings')}")
        bridges = user_bridges(side)
        if len(bridges) != 1:
            raise BenchError(f"{side.name}: expected one br- bridge in its sandbox after network create: {bridges}")
        _wall, resolv = side.cli.run("exec", "bench-client", "cat", "/etc/resolv.conf")
        if f"nameserver {EMBEDDED_DNS}" not in resolv:
            raise BenchError(f"{side.name}: a container on {USER_NET} does not use the embedded DNS server: {resolv!r}")
        side.out["user_net_check"] = {"target_ip": want, "bridges": bridges}
        # Untimed: the first create/connect/rm and run on the network, and the lookup answers.
        side.cli.run("network", "create", "bench-warm")
        side.cli.run("network", "connect", "bench-warm", "bench-anchor")
        side.cli.run("network", "disconnect", "bench-warm", "bench-anchor")
        side.cli.run("network", "rm", "bench-warm")
        cli_run_rm_on(side, USER_NET, tmp, "warmup-user")
        dns_latency(side, client["State"]["Pid"], "bench-target", 10)
    steps = ("create", "connect", "disconnect", "rm")
    netops: dict[str, dict[str, list[tuple[int, float]]]] = {s.name: {k: [] for k in steps} for s in sides}
    window = BC.CpuWindow([s.daemon for s in sides])
    for i, side, _kind in rounds(sides, reps, ("netops",)):
        name = f"bench-net-{i}"
        os.sync()
        for step, argv in (
            ("create", ("network", "create", name)),
            ("connect", ("network", "connect", name, "bench-anchor")),
            ("disconnect", ("network", "disconnect", name, "bench-anchor")),
            ("rm", ("network", "rm", name)),
        ):
            wall, _ = side.cli.run(*argv)
            netops[side.name][step].append((i, wall * 1000))
            if step == "connect" and len(user_bridges(side)) != 2:
                raise BenchError(f"{side.name}: expected two br- bridges in its sandbox: {user_bridges(side)}")
    cpu_ops = window.stop()
    kinds = ("user", "bridge")
    runs: dict[str, dict[str, list[tuple[int, float]]]] = {s.name: {k: [] for k in kinds} for s in sides}
    window = BC.CpuWindow([s.daemon for s in sides])
    for i, side, kind in rounds(sides, reps, kinds):
        os.sync()
        network = USER_NET if kind == "user" else ""
        runs[side.name][kind].append((i, cli_run_rm_on(side, network, tmp, f"rm-{kind}") * 1000))
    cpu_runs = window.stop()
    dns: dict[str, list[float]] = {}
    for side in sides:
        dns[side.name] = dns_latency(side, side.out["user_net_pids"]["client"], "bench-target", queries)
    for side in sides:
        side.out["netops_ms"] = netops[side.name]
        side.out["run_rm_user_ms"] = runs[side.name]
        side.out["dns_us"] = dns[side.name]
        side.out["user_net_cpu"] = {"netops": cpu_ops, "runs": cpu_runs}
        n = {k: C.median([v for _i, v in netops[side.name][k]]) for k in steps}
        r = {k: C.median([v for _i, v in runs[side.name][k]]) for k in kinds}
        d = sorted(dns[side.name])
        print(
            f"  network {side.name:8s} create {n['create']:6.1f}  connect {n['connect']:6.1f}  disconnect "
            f"{n['disconnect']:6.1f}  rm {n['rm']:6.1f} ms   run --rm user {r['user']:7.1f}  bridge "
            f"{r['bridge']:7.1f} ms   DNS median {C.median(d):6.0f} p90 {d[int(len(d) * 0.9)]:6.0f} us",
            flush=True,
        )
    for side in sides:
        side.cli.run("rm", "-f", "bench-target", "bench-client", "bench-anchor")
        side.cli.run("network", "rm", USER_NET)
        left = user_bridges(side)
        if left:
            raise BenchError(f"{side.name}: bridges left after every user network was removed: {left}")


def cli_run_rm_on(side: BC.Side, network: str, tmp: str, tag: str) -> float:
    """``docker run --rm [--network NETWORK] busybox true``; wall seconds."""
    cidfile = tempfile.mktemp(prefix="cid-", dir=tmp)
    flags = ["--network", network] if network else []
    wall, _ = side.cli.run("run", "--rm", "--cidfile", cidfile, *flags, IMAGE, "true")
    take_cidfile(side, cidfile, tag)
    return wall


# --------------------------------------------------------------------------
# our daemon's job log (-D)

JOB_LINE = re.compile(r"-job (?P<name>\w+)\((?P<args>.*?)\) = (?P<status>\w+) \(-?\d+\) (?P<ms>[\d.]+)ms")


def job_times(log_path: str, id_tags: dict[str, str]) -> dict[str, dict[str, list[float]]]:
    """{tag: {job name: [ms, ...]}} from ``-job`` lines whose first argument is a container of that tag.

    Only a daemon started with ``-D`` logs them. Jobs whose first argument
    is not one of the bench's containers (create, which has no ID yet;
    images, ping) are under the tag ``other``.
    """
    out: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    try:
        fh = open(log_path, errors="replace")
    except OSError:
        return {}
    with fh:
        for line in fh:
            if "-job " not in line:
                continue
            m = JOB_LINE.search(line)
            if not m:
                continue
            first = m.group("args").split(", ", 1)[0].strip("'\"")
            tag = id_tags.get(first, "other")
            out[tag][m.group("name")].append(float(m.group("ms")))
    return {t: dict(v) for t, v in out.items()}


def job_summary(times: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Median and count per (tag, job) of the timed runs' tags only."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for tag, jobs in times.items():
        out[tag] = {
            name: {"n": len(v), "median_ms": round(C.median(v), 2), "total_ms": round(sum(v), 1)}
            for name, v in jobs.items()
        }
    return out


def print_jobs(key: str, summary: dict[str, dict[str, dict[str, float]]]) -> None:
    tags = [t for t in ("rm-bridge", "rm-none", "d-none", "d-bridge", "d-publish") if t in summary]
    if not tags:
        print(f"  our jobs ({key}): no -job lines in the log (run with --engine-arg=-D for per-job timings)")
        return
    names = sorted(
        {n for t in tags for n in summary[t]},
        key=lambda n: -max(summary[t].get(n, {}).get("median_ms", 0) for t in tags),
    )
    rows = []
    for name in names:
        rows.append(
            [name]
            + [
                f"{summary[t][name]['median_ms']:.1f} ({summary[t][name]['n']})" if name in summary[t] else ""
                for t in tags
            ]
        )
    C.print_table(
        ["job (ours, -D)"] + [f"{t} ms (n)" for t in tags],
        rows,
        title=f"Our daemon's jobs per kind of run, median ms (count), {key} (jobs nest: start holds "
        f"allocate_interface and allocate_port; rm -f holds release_*)",
    )


# --------------------------------------------------------------------------
# py-spy: the network's share of a run

#: Entry points of the network work in our daemon: the interface at start
#: (with the namespace and the container's hosts files), and its release at
#: the exit.
NETWORK_ROOTS = (("setup_network", "at start: setup_network"), ("release_network", "at exit: release_network"))


#: Job plumbing between the entry points and the driver: the same time as the driver's method.
NETWORK_PLUMBING = ("Job.run (", "NetworkService._job (", "NetworkService.register_jobs.<locals>.")


def _ours(frame: str) -> bool:
    """A frame of the engine or its plugins: the standard library's and pyroute2's
    (asyncio loops, netlink sockets) are below ours and only repeat their time."""
    # py-spy names a file relative to the sys.path entry it came from:
    # engine/daemon/network.py, engine_net_bridge/netlink.py, asyncio/events.py.
    parts = frame.partition(" (")[2].split("/")
    mine = any(p == "engine" or p.startswith("engine_") for p in parts[:-1])
    return mine and not frame.startswith(NETWORK_PLUMBING)


def network_profile(path: str, rate: int, runs: int, top: int = 10) -> dict[str, Any]:
    """ms per run below ``setup_network`` and ``release_network``, and the heaviest frames below each.

    The request-level summary of :func:`bench_containers.summarize_profile`
    puts these few ms under ``POST start`` and the exit handling, where the
    shim's launch and the wait hide them; this looks at them alone.
    """
    totals: collections.Counter[str] = collections.Counter()
    incl: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        return {"error": str(exc)}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        for prefix, group in NETWORK_ROOTS:
            at = next((i for i, f in enumerate(frames) if f.startswith(prefix + " ")), None)
            if at is None:
                continue
            n = int(count)
            totals[group] += n
            for name in {BC._frame_name(f) for f in frames[at + 1 :] if _ours(f)}:
                incl[group][name] += n
            break
    per_run = 1000.0 / rate / max(1, runs)
    return {
        "rate": rate,
        "runs": runs,
        "groups": {
            group: {
                "ms_per_run": round(n * per_run, 2),
                "samples": n,
                "inclusive": [(k, round(v * per_run, 2)) for k, v in incl[group].most_common(top)],
            }
            for group, n in totals.most_common()
        },
    }


def print_network_profile(key: str, prof: dict[str, Any]) -> None:
    if "error" in prof or not prof.get("groups"):
        print(f"  network profile ({key}): {prof.get('error') or 'no samples below setup/release_network'}")
        return
    print(
        f"  network part of those runs ({key}; py-spy at {prof['rate']} Hz: a sample is "
        f"{1000 / prof['rate']:.0f} ms, so a few ms per run are a few samples): ms per run"
    )
    for group, g in prof["groups"].items():
        print(f"    {g['ms_per_run']:6.1f}  {group} ({g['samples']} samples)")
        for name, ms in g["inclusive"]:
            print(f"            {ms:6.1f}  {name}")


# --------------------------------------------------------------------------
# one driver pair


def run_pair(
    key: str,
    specs: list[C.DaemonSpec],
    args: argparse.Namespace,
    archive: str,
    tmp: str,
    ids: dict[str, set[str]],
    namespaces: list[str],
    stamp: str,
) -> dict[str, Any]:
    """Start both daemons of a driver pair, check their networking, run the phases, clean up, stop them."""
    sides: list[BC.Side] = []
    out: dict[str, Any] = {}
    with BC.closing_sides(sides):
        for spec in specs:
            daemon, listener, start = A.start_and_wait(spec)
            conf = os.path.join(tmp, f"docker-config-{key}-{spec.name}")
            side = BC.Side(
                daemon, listener, BC.Api(daemon), BC.Cli(args.docker, daemon, conf), ids.setdefault(spec.name, set())
            )
            sides.append(side)
            ns = namespace_ids(daemon)
            namespaces.extend(ns.values())
            side.out.update({"driver": spec.driver, "ready_s": start.ready_s, "namespaces": ns})
            wall, _ = side.cli.run("load", "-i", archive)
            side.api.json("GET", f"/images/{IMAGE}/json")  # 404 -> BenchError
            side.out["network"] = check_bridge_up(side)
            side.out["container_view"] = check_container_networks(side, side.out["network"]["subnet"], tmp)
            print(
                f"  {spec.name} -s {spec.driver}: ready in {start.ready_s * 1000:.0f} ms, busybox loaded in "
                f"{wall * 1000:.0f} ms; bridge {side.out['network']['bridge']} "
                f"({side.out['network']['subnet']}) in its sandbox; a container's eth0 "
                f"{side.out['container_view']['bridge'].get('eth0')}",
                flush=True,
            )
        print("  -- run --rm: default bridge vs --net none", flush=True)
        phase_run_rm(sides, args.reps, tmp)
        ours = next((s for s in sides if s.name == "engine"), None)
        if args.profile and ours is not None:
            C.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            path = str(C.RESULTS_DIR / f"network-{stamp}-profile-{key}.txt")
            ours.out["profile"] = BC.profiled(
                ours,
                "CLI run --rm (bridge)",
                args.profile_runs,
                lambda: cli_run_rm(ours, "bridge", tmp, "profile") * 1000,
                path,
            )
            BC.print_profile(key, ours.out["profile"])
            if "skipped" not in ours.out["profile"]:
                ours.out["network_profile"] = network_profile(path, ours.out["profile"]["rate"], args.profile_runs)
                print_network_profile(key, ours.out["network_profile"])
        if args.publish_reps:
            print(f"  -- run -d / rm -f: --net none, default bridge, -p {PUBLISH_PORT}:80", flush=True)
            phase_publish(sides, args.publish_reps)
        if args.user_reps:
            print(
                "  -- user-defined networks: create + connect + disconnect + rm, run --rm, DNS from a container",
                flush=True,
            )
            phase_user_networks(sides, args.user_reps, tmp, args.dns_queries)
        print("  -- clean-up", flush=True)
        BC.cleanup(sides, timed=False)
        for side in sides:
            if not side.daemon.alive():
                raise BenchError(f"{side.name} died during the bench:\n{side.daemon.log_tail()}")
            left = sandbox_leftovers(side)
            side.out["sandbox_leftovers"] = left
            if left:
                raise BenchError(f"{side.name}: left in its sandbox after every container was removed: {left}")
        if ours is not None:
            ours.out["jobs"] = job_summary(job_times(ours.daemon.log_path, ours.out.get("id_tags", {})))
        for side in sides:
            side.out.pop("id_tags", None)
            out[side.name] = side.out
    return out


# --------------------------------------------------------------------------
# report


_fmt = C.fmt_number


def pair_summary(res: dict[str, Any], names: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in names:
        r = res[name]
        s: dict[str, Any] = {"driver": r["driver"], "bridge": r["network"]["bridge"], "subnet": r["network"]["subnet"]}
        cli = r["run_rm_cli_ms"]
        api = {m: [(i, x) for i, x in r["run_rm_api"][m]] for m in MODES}
        for m in MODES:
            s[f"cli_{m}"] = BC.stats_ms([v for _i, v in cli[m]])
            s[f"api_{m}"] = BC.stats_ms([x["total_ms"] for _i, x in api[m]])
            for step in ("create_ms", "wait_headers_ms", "start_ms", "removed_ms"):
                s[f"api_{m}_{step}"] = C.median([x[step] for _i, x in api[m]])
        s["cli_added"] = s["cli_bridge"]["median"] - s["cli_none"]["median"]
        s["api_added"] = s["api_bridge"]["median"] - s["api_none"]["median"]
        s["cli_added_paired"] = paired_added(cli["bridge"], cli["none"])
        s["api_added_paired"] = paired_added(
            [(i, x["total_ms"]) for i, x in api["bridge"]], [(i, x["total_ms"]) for i, x in api["none"]]
        )
        for step in ("create_ms", "start_ms", "removed_ms"):
            s[f"api_added_{step}"] = s[f"api_bridge_{step}"] - s[f"api_none_{step}"]
        if "run_d_cli_ms" in r:
            for v in VARIANTS:
                s[f"run_d_{v}"] = BC.stats_ms([x for _i, x in r["run_d_cli_ms"][v]])
                s[f"rm_f_{v}"] = BC.stats_ms([x for _i, x in r["rm_f_cli_ms"][v]])
            s["run_d_bridge_added"] = s["run_d_bridge"]["median"] - s["run_d_none"]["median"]
            s["rm_f_bridge_added"] = s["rm_f_bridge"]["median"] - s["rm_f_none"]["median"]
            s["publish_added_run"] = s["run_d_publish"]["median"] - s["run_d_bridge"]["median"]
            s["publish_added_rm"] = s["rm_f_publish"]["median"] - s["rm_f_bridge"]["median"]
            s["publish_added_run_paired"] = paired_added(r["run_d_cli_ms"]["publish"], r["run_d_cli_ms"]["bridge"])
            s["publish_added_rm_paired"] = paired_added(r["rm_f_cli_ms"]["publish"], r["rm_f_cli_ms"]["bridge"])
        cpus = [r["run_rm_cpu"]["cli"]["other_busy"], r["run_rm_cpu"]["api"]["other_busy"]]
        if "publish_cpu" in r:
            cpus.append(r["publish_cpu"]["other_busy"])
        if "netops_ms" in r:
            for step, values in r["netops_ms"].items():
                s[f"net_{step}"] = BC.stats_ms([v for _i, v in values])
            s["net_cycle"] = sum(s[f"net_{step}"]["median"] for step in ("create", "connect", "disconnect", "rm"))
            for kind in ("user", "bridge"):
                s[f"run_rm_{kind}_net"] = BC.stats_ms([v for _i, v in r["run_rm_user_ms"][kind]])
            s["user_net_added"] = paired_added(r["run_rm_user_ms"]["user"], r["run_rm_user_ms"]["bridge"])
            d = sorted(r["dns_us"])
            s["dns_us"] = {"median": C.median(d), "p90": d[int(len(d) * 0.9)], "min": d[0], "max": d[-1]}
            cpus += [r["user_net_cpu"]["netops"]["other_busy"], r["user_net_cpu"]["runs"]["other_busy"]]
        s["other_busy_max"] = max(cpus)
        summary[name] = s
    return summary


def pair_rows(summary: dict[str, Any], names: list[str], publish: bool) -> tuple[list[list[str]], dict[str, bool]]:
    """The table's rows, and the verdicts of the targets (name -> passed)."""
    eng = summary["engine"]
    ref = summary.get("dockerd")
    rows: list[list[str]] = []
    verdicts: dict[str, bool] = {}

    def add(
        metric: str,
        fn: Callable[[dict[str, Any]], float | None],
        nd: int = 1,
        target: str = "",
        text: Callable[[dict[str, Any]], str] | None = None,
        ratio: bool = True,
    ) -> None:
        row = [metric] + [text(summary[n]) if text else _fmt(fn(summary[n]), nd) for n in names]
        verdict = ""
        if ref:
            a, b = fn(eng), fn(ref)
            # A ratio of two differences only means something when both are positive.
            r = a / b if (ratio and a is not None and b is not None and a > 0 and b > 0) else None
            row.append(_fmt(r, 2) if r is not None else "")
            if target:
                ok = a is not None and b is not None and a <= b * TARGET_ADDED_RATIO
                verdicts[metric] = ok
                verdict = "PASS" if ok else "FAIL"
            row += [target, verdict]
        rows.append(row)

    def trio(key: str) -> Callable[[dict[str, Any]], str]:
        return lambda s: f"{_fmt(s[key]['median'])} / {_fmt(s[key]['min'])} / {_fmt(s[key]['p90'])}"

    target = "<= dockerd" if ref else ""
    add("run --rm, CLI, bridge: median / min / p90 ms", lambda s: s["cli_bridge"]["median"], text=trio("cli_bridge"))
    add("run --rm, CLI, --net none", lambda s: s["cli_none"]["median"], text=trio("cli_none"))
    add("  added by bridge (CLI) ms", lambda s: s["cli_added"], target=target)
    add("  added, median of per-round differences", lambda s: s["cli_added_paired"])
    add("run --rm, API, bridge: median / min / p90 ms", lambda s: s["api_bridge"]["median"], text=trio("api_bridge"))
    add("run --rm, API, --net none", lambda s: s["api_none"]["median"], text=trio("api_none"))
    add("  added by bridge (API) ms", lambda s: s["api_added"], target=target)
    add("  added, median of per-round differences", lambda s: s["api_added_paired"])

    def added_of(step: str) -> Callable[[dict[str, Any]], float]:
        return lambda s: s[f"api_added_{step}"]

    def step_text(step: str) -> Callable[[dict[str, Any]], str]:
        return lambda s: (
            f"{_fmt(s[f'api_bridge_{step}'])} / {_fmt(s[f'api_none_{step}'])} ({_fmt(s[f'api_added_{step}'])})"
        )

    # bridge / none (added) per step: where in the run the bridge's time goes.
    for step, label in (("create_ms", "create"), ("start_ms", "start"), ("removed_ms", "start answered -> removed")):
        # No network work at create: a ratio of two noise-sized differences would only mislead.
        add(f"  API {label} ms: bridge / none (added)", added_of(step), text=step_text(step), ratio=step != "create_ms")
    if publish:
        add(
            "run -d, CLI ms: none / bridge / -p",
            lambda s: s["run_d_publish"]["median"],
            text=lambda s: (
                f"{_fmt(s['run_d_none']['median'])} / {_fmt(s['run_d_bridge']['median'])} / "
                f"{_fmt(s['run_d_publish']['median'])}"
            ),
        )
        add(
            "rm -f, CLI ms: none / bridge / -p",
            lambda s: s["rm_f_publish"]["median"],
            text=lambda s: (
                f"{_fmt(s['rm_f_none']['median'])} / {_fmt(s['rm_f_bridge']['median'])} / "
                f"{_fmt(s['rm_f_publish']['median'])}"
            ),
        )
        add("  run -d + rm -f added by bridge ms", lambda s: s["run_d_bridge_added"] + s["rm_f_bridge_added"])
        add(f"  -p {PUBLISH_PORT}:80 added to run -d ms", lambda s: s["publish_added_run"])
        add("    median of per-round differences", lambda s: s["publish_added_run_paired"])
        add(f"  -p {PUBLISH_PORT}:80 added to rm -f ms", lambda s: s["publish_added_rm"])
        add("    median of per-round differences", lambda s: s["publish_added_rm_paired"])
    if "net_cycle" in eng:
        add(
            "network create / connect / disconnect / rm, CLI ms",
            lambda s: s["net_cycle"],
            text=lambda s: " / ".join(_fmt(s[f"net_{k}"]["median"]) for k in ("create", "connect", "disconnect", "rm")),
        )
        add("  create + connect + disconnect + rm ms", lambda s: s["net_cycle"], target=target)
        add(
            "run --rm on a user network, CLI: median / min / p90 ms",
            lambda s: s["run_rm_user_net"]["median"],
            text=trio("run_rm_user_net"),
            target=target,
        )
        add("  added vs the default bridge, per-round median ms", lambda s: s["user_net_added"])
        add(
            "DNS lookup of a container name from a container, us: median / p90 / max",
            lambda s: s["dns_us"]["median"],
            text=lambda s: (
                f"{_fmt(s['dns_us']['median'], 0)} / {_fmt(s['dns_us']['p90'], 0)} / {_fmt(s['dns_us']['max'], 0)}"
            ),
            target=target,
        )
    add("other work, max % of CPUs", lambda s: s["other_busy_max"] * 100, nd=0, ratio=False)
    return rows, verdicts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--reps", type=int, default=10, help="timed run --rm per daemon and mode, CLI and API each (default 10)"
    )
    ap.add_argument(
        "--publish-reps", type=int, default=None, help="timed run -d + rm -f per daemon and variant (default: --reps)"
    )
    ap.add_argument("--no-publish", action="store_true", help="leave out the run -d / -p phase")
    ap.add_argument(
        "--user-reps",
        type=int,
        default=None,
        help="timed network create+connect+disconnect+rm cycles and run --rm on a user network (default: --reps)",
    )
    ap.add_argument("--no-user-networks", action="store_true", help="leave out the user-defined networks phase")
    ap.add_argument(
        "--dns-queries", type=int, default=DNS_QUERIES, help=f"timed DNS lookups per daemon (default {DNS_QUERIES})"
    )
    ap.add_argument(
        "--drivers",
        default="overlay,vfs",
        help="driver pairs, comma-separated: overlay (overlay/overlay2), vfs (vfs/vfs)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="per driver pair, --profile-runs more bridge run --rm into ours under py-spy (not timed)",
    )
    ap.add_argument("--profile-runs", type=int, default=20, help="runs under py-spy (default 20)")
    ap.add_argument("--no-dockerd", action="store_true", help="measure our daemon only")
    ap.add_argument("--dockerd", default=C.DOCKERD, help=f"reference dockerd binary (default {C.DOCKERD})")
    ap.add_argument("--docker", default=DOCKER_CLI, help=f"the docker CLI (default {DOCKER_CLI})")
    ap.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        help="extra flag for our daemon (repeatable); -D logs per-job timings, which the bench summarises",
    )
    ap.add_argument(
        "--engine-rev",
        metavar="REV",
        help="run our daemon from this git revision (git archive to a temp dir), not the checkout",
    )
    ap.add_argument(
        "--json", metavar="PATH", help="where to write the JSON (default bench/results/network-<time>.json)"
    )
    args = ap.parse_args(argv)
    args.publish_reps = 0 if args.no_publish else (args.reps if args.publish_reps is None else args.publish_reps)
    args.user_reps = 0 if args.no_user_networks else (args.reps if args.user_reps is None else args.user_reps)

    keys = [k.strip() for k in args.drivers.split(",") if k.strip()]
    bad = [k for k in keys if k not in DRIVER_PAIRS]
    if bad or not keys or args.reps < 1 or args.publish_reps < 0:
        ap.error(f"unknown driver pair {bad}" if bad else "bad arguments")
    if any(a in ("-b", "--bridge") or a.startswith(("--bridge=", "-b=")) for a in args.engine_arg):
        ap.error("this bench measures our default bridge: do not pass -b/--bridge to our daemon")
    if os.geteuid() != 0:
        print("bench_network: needs root (unshare of mount/net/pid namespaces)", file=sys.stderr)
        return 2
    for tool in ("nsenter", "ip", "iptables-save"):
        if not shutil.which(tool):
            print(f"bench_network: {tool} is missing (util-linux, iproute2, iptables)", file=sys.stderr)
            return 2
    if not os.access(args.docker, os.X_OK):
        print(f"bench_network: the docker CLI {args.docker} is missing", file=sys.stderr)
        return 2
    C.install_signal_handlers()
    with_dockerd, names, note = C.choose_dockerd(args.no_dockerd, args.dockerd)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    busy_before = C.busy_before_bench()

    host_before = host_snapshot()
    mounts_before = _mount_points([tempfile.gettempdir() + "/bench-"])
    cg_parents = BC.cgroup_parents()
    ids: dict[str, set[str]] = {}
    namespaces: list[str] = []
    results: dict[str, Any] = {}
    source: str | None = None
    engine_rev = None
    tmp = tempfile.mkdtemp(prefix="bench-network-")
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
        for i, key in enumerate(keys):
            ours, theirs = DRIVER_PAIRS[key]
            # Our default bridge: no -b (engine0 is made in the sandbox), iptables and the proxy on.
            specs = [C.engine_spec(args.engine_arg, storage_driver=ours, source=source)]
            if with_dockerd:
                specs.append(C.dockerd_spec(args.dockerd, storage_driver=theirs, networking=True))
            print(
                f"\n[{i + 1}/{len(keys)}] {key}: engine -s {ours} (bridge engine0)"
                + (f" vs dockerd --storage-driver={theirs} (bridge docker0)" if with_dockerd else ""),
                flush=True,
            )
            results[key] = run_pair(key, specs, args, archive, tmp, ids, namespaces, stamp)
    except KeyboardInterrupt:
        print("\ninterrupted; containers removed where possible, daemons stopped", file=sys.stderr)
        status = 130
    except BC.BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        status = 1
    except (OSError, http.client.HTTPException, ValueError, subprocess.SubprocessError) as exc:
        print(f"\nFAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = 1
    finally:
        C.stop_all()
        # Only now, with every sandbox gone: whatever is left is left for good.
        cg_report = BC.check_cgroups(cg_parents, ids)
        shutil.rmtree(tmp, ignore_errors=True)
        if source is not None:
            shutil.rmtree(source, ignore_errors=True)
    host_after = host_snapshot()
    changed = host_diff(host_before, host_after)
    left_procs = processes_in(namespaces)
    new_mounts = sorted(set(_mount_points([tempfile.gettempdir() + "/bench-"])) - set(mounts_before))
    host_ok = not changed and not left_procs and not new_mounts
    print(
        f"\nhost after the run: ip -o link, ip -o addr, iptables-save, ip6tables-save and "
        f"{len(HOST_SYSCTLS)} sysctls {'unchanged' if not changed else 'CHANGED'}; "
        f"{len(left_procs)} processes left in the {len(namespaces)} sandbox namespaces; "
        f"{len(new_mounts)} mounts left under the work directories"
    )
    for line in changed[:20]:
        print(f"  {line}")
    if changed:
        print("  (another session's work on this machine may also show here: compare the time of the change)")
    for line in left_procs[:10] + new_mounts[:10]:
        print(f"  left: {line}")
    BC.print_cgroup_report(cg_report, ids)
    if status:
        return status

    busy_after = C.busy_after_bench()
    summaries: dict[str, Any] = {}
    verdicts: dict[str, dict[str, bool]] = {}
    for key in keys:
        summaries[key] = pair_summary(results[key], names)
        rows, verdicts[key] = pair_rows(summaries[key], names, bool(args.publish_reps))
        ours, theirs = DRIVER_PAIRS[key]
        headers = ["metric", f"engine ({ours})"] + (
            [f"dockerd ({theirs})", "engine/dockerd", "target (engine)", ""] if with_dockerd else []
        )
        C.print_table(
            headers, rows, title=f"Results, {key}: bridge networking vs --net none (medians of {args.reps} runs, ms)"
        )
        print_jobs(key, results[key]["engine"].get("jobs") or {})
    all_verdicts = [ok for v in verdicts.values() for ok in v.values()]
    if all_verdicts:
        print(
            f"\ntarget: our added time at most dockerd's: {'PASS' if all(all_verdicts) else 'FAIL'} "
            f"({sum(all_verdicts)} of {len(all_verdicts)} rows)"
        )
    if note:
        print(f"\nnote: {note}")
    path = C.write_json(
        {
            "params": {
                "reps": args.reps,
                "publish_reps": args.publish_reps,
                "user_reps": args.user_reps,
                "dns_queries": args.dns_queries,
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
                "added_by_bridge": "engine <= dockerd (CLI and API run --rm)",
                "user_networks": "engine <= dockerd (network create+connect+disconnect+rm, run --rm on a user "
                "network, DNS lookup of a container name from a container)",
            },
            "verdicts": verdicts,
            "summary": summaries,
            "host_check": {
                "changed": changed,
                "processes_left": left_procs,
                "mounts_left": new_mounts,
                "before": host_before,
            },
            "cgroups": cg_report,
            "runs": results,
        },
        "network",
        args.json,
    )
    print(f"\nJSON: {path}")
    return 0 if host_ok and (cg_report is None or cg_report["ok"]) else 1


if __name__ == "__main__":
    sys.exit(main())
