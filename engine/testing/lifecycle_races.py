"""The life-cycle concurrency suite: pairs of operations on one container,
sent at once from several threads, against any daemon that speaks the API
(ours, or the reference dockerd to keep both honest).

For each pair of operations (start, stop, kill, restart, pause, unpause,
remove, update, exec, rename, wait), :func:`run_pair` makes a container
(running, or only created when the pair holds a start), sends the two
operations (and one of them again) from threads of their own after random
delays of at most 25 ms, and then checks (:func:`violations`):

* every request answered (none hangs past :data:`REQUEST_TIMEOUT`), none
  with a 5xx;
* the container ends in the state the last successful request implies.
  Requests overlap, so "last" is a partial order: a request that answered
  before another was sent came before it. The final state must be the one
  some request implies that no successful request came after (the state it
  was made in when no request succeeded);
* no process runs for a container that ended exited, created or removed,
  and its process runs when it ended running or paused (each container's
  command carries a marker found in ``/proc/*/cmdline``);
* its name is the one the last successful rename gave (same order).

The container's command exits on SIGTERM at once, so that a stop does not
wait for its timeout. Everything here goes through the daemon's unix socket
with :class:`~engine.testing.daemon.UnixHTTPConnection`.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from engine.testing.daemon import UnixHTTPConnection

OPERATIONS = ("start", "stop", "kill", "restart", "pause", "unpause", "remove", "update", "exec", "rename", "wait")
#: Every pair of operations, each operation with itself too.
PAIRS = tuple(itertools.combinations_with_replacement(OPERATIONS, 2))
#: The state a successful request leaves the container in (the others change none).
IMPLIES = {
    "start": "running",
    "restart": "running",
    "unpause": "running",
    "stop": "exited",
    "kill": "exited",
    "pause": "paused",
    "remove": "gone",
}
#: Seconds a request may take before it counts as hanging.
REQUEST_TIMEOUT = 60.0
#: The most a request waits before it is sent.
MAX_DELAY = 0.025
API = "/v1.41"


@dataclass
class Request:
    """One operation sent: when, and what came back."""

    op: str
    delay: float
    sent: float = 0.0
    answered: float = 0.0
    status: int = 0
    body: bytes = b""
    error: str = ""
    new_name: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def __str__(self) -> str:
        what = f"{self.status}" if self.status else f"error {self.error}"
        text = self.body.decode(errors="replace").strip()[:200]
        return f"{self.op}(+{self.delay * 1000:.0f}ms) -> {what} {text}".rstrip()


@dataclass
class Round:
    """One pair run against one container, and what it ended in."""

    pair: tuple[str, str]
    initial: str
    container: str = ""
    name: str = ""
    marker: str = ""
    requests: list[Request] = field(default_factory=list)
    final: str = ""
    final_name: str = ""
    processes: int = 0
    hung: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"pair {self.pair} from {self.initial}: ended {self.final} ({self.processes} processes)"]
        lines += [f"  {r}" for r in sorted(self.requests, key=lambda r: r.sent)]
        return "\n".join(lines)


class Client:
    """Requests to a daemon's unix socket, one connection each (safe from any thread).

    :param socket_path: the daemon's socket.
    """

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    def call(
        self, method: str, path: str, body: Any = None, timeout: float = REQUEST_TIMEOUT, raw: bytes | None = None
    ) -> tuple[int, bytes]:
        """``(status, body)`` of ``method path`` (under ``/v1.41``) with ``body`` as JSON, or ``raw`` as a tar."""
        conn = UnixHTTPConnection(self.socket_path, timeout=timeout)
        try:
            data: bytes | None
            if raw is not None:
                data, headers = raw, {"Content-Type": "application/x-tar"}
            else:
                data = json.dumps(body).encode() if body is not None else None
                headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, API + path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def load(self, archive: bytes) -> None:
        """``docker load`` of ``archive``."""
        status, body = self.call("POST", "/images/load?quiet=1", raw=archive, timeout=300)
        if status != 200 or b'"error' in body:
            raise AssertionError(f"load: {status} {body[:300]!r}")

    def inspect(self, cid: str) -> dict | None:
        status, raw = self.call("GET", f"/containers/{cid}/json")
        if status == 404:
            return None
        if status != 200:
            raise AssertionError(f"inspect of {cid[:12]}: {status} {raw[:200]!r}")
        return json.loads(raw)


def _marked(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


def marked_processes(marker: str) -> int:
    """How many processes have ``marker`` in their command line."""
    return len(_marked(marker))


def kill_leftovers(marker: str = "race-") -> list[int]:
    """SIGKILL the suite's container processes a daemon left behind (thawing a frozen one first,
    else the signal never lands); their PIDs. Only processes whose command line has ``marker``."""
    pids = _marked(marker)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cgroup") as fh:
                lines = fh.read().splitlines()
        except OSError:
            continue
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if "freezer" in controllers.split(","):
                try:
                    with open(f"/sys/fs/cgroup/freezer{path}/freezer.state", "w") as fh:
                        fh.write("THAWED")
                except OSError:
                    pass
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def _send(client: Client, cid: str, request: Request) -> None:
    op = request.op
    if op == "exec":
        status, body = client.call("POST", f"/containers/{cid}/exec", {"Cmd": ["true"]})
        if status == 201:
            exec_id = json.loads(body)["Id"]
            status, body = client.call("POST", f"/exec/{exec_id}/start", {"Detach": True})
    elif op == "remove":
        status, body = client.call("DELETE", f"/containers/{cid}?force=1&v=1")
    elif op == "update":
        status, body = client.call("POST", f"/containers/{cid}/update", {"CpuShares": 512})
    elif op == "rename":
        status, body = client.call("POST", f"/containers/{cid}/rename?name={request.new_name}")
    elif op == "wait":
        status, body = client.call("POST", f"/containers/{cid}/wait?condition=not-running")
    elif op in ("stop", "restart"):
        status, body = client.call("POST", f"/containers/{cid}/{op}?t=5")
    else:  # start, kill, pause, unpause
        status, body = client.call("POST", f"/containers/{cid}/{op}")
    request.status, request.body = status, body


def _run(client: Client, cid: str, request: Request, go: threading.Event) -> None:
    go.wait()
    time.sleep(request.delay)
    request.sent = time.monotonic()
    try:
        _send(client, cid, request)
    except Exception as exc:  # a timeout, a connection reset: reported as a violation
        request.error = f"{type(exc).__name__}: {exc}"
    request.answered = time.monotonic()


def run_pair(client: Client, image: str, pair: tuple[str, str], rng: random.Random, threads: int = 3) -> Round:
    """Run ``pair`` against a new container; the round, its container removed afterwards.

    :param image: an image with ``sh`` and ``sleep`` (busybox).
    :param threads: requests sent: the pair, then operations of the pair drawn at random.
    """
    initial = "created" if "start" in pair else "running"
    marker = f"race-{uuid.uuid4().hex[:16]}"
    name = f"race-{uuid.uuid4().hex[:8]}"
    rnd = Round(pair, initial, name=name, marker=marker)
    command = ["sh", "-c", f"trap 'exit 0' TERM; sleep 3600 & wait; : {marker}"]
    status, body = client.call("POST", f"/containers/create?name={name}", {"Image": image, "Cmd": command})
    if status != 201:
        raise AssertionError(f"create: {status} {body[:300]!r}")
    cid = rnd.container = json.loads(body)["Id"]
    try:
        if initial == "running":
            status, body = client.call("POST", f"/containers/{cid}/start")
            if status != 204:
                raise AssertionError(f"start: {status} {body[:300]!r}")
        ops = list(pair) + [rng.choice(pair) for _ in range(max(0, threads - 2))]
        rnd.requests = [Request(op, rng.uniform(0, MAX_DELAY)) for op in ops]
        for request in rnd.requests:
            if request.op == "rename":
                request.new_name = f"race-{uuid.uuid4().hex[:8]}"
        go = threading.Event()
        workers = [
            threading.Thread(target=_run, args=(client, cid, r, go), name=f"race-{r.op}", daemon=True)
            for r in rnd.requests
        ]
        for w in workers:
            w.start()
        go.set()
        waits = []
        for w, r in zip(workers, rnd.requests):
            if r.op == "wait":
                waits.append((w, r))  # ends with the container: joined after the clean-up
                continue
            w.join(REQUEST_TIMEOUT + 5)
            if w.is_alive():
                rnd.hung.append(str(r))
        try:
            doc = client.inspect(cid)
        except OSError as exc:  # the daemon no longer answers about it
            rnd.hung.append(f"inspect after the round: {exc}")
            rnd.final = "unknown"
        else:
            rnd.final = "gone" if doc is None else doc["State"]["Status"]
            rnd.final_name = "" if doc is None else doc["Name"].lstrip("/")
        rnd.processes = marked_processes(marker)
    finally:
        try:
            status, body = client.call("DELETE", f"/containers/{cid}?force=1&v=1")
        except OSError as exc:
            rnd.hung.append(f"rm -f after the round: {exc}")
        else:
            if status not in (204, 404):
                rnd.hung.append(f"rm -f after the round: {status} {body[:300]!r}")
    for w, r in waits:
        w.join(REQUEST_TIMEOUT + 5)
        if w.is_alive():
            rnd.hung.append(str(r))
    return rnd


def _last(requests: list[Request]) -> list[Request]:
    """The successful requests no other successful one came after (sent after it answered)."""
    return [r for r in requests if not any(o is not r and o.sent > r.answered for o in requests)]


def violations(rnd: Round) -> list[str]:
    """What in ``rnd`` breaks the suite's invariants (empty when all hold)."""
    found = [f"hung: {h}" for h in rnd.hung]
    for r in rnd.requests:
        if r.error:
            found.append(f"no answer: {r}")
        elif r.status >= 500:
            found.append(f"5xx: {r}")
    changers = [r for r in rnd.requests if r.ok and r.op in IMPLIES]
    allowed = {IMPLIES[r.op] for r in _last(changers)} if changers else {rnd.initial}
    if rnd.final not in allowed:
        found.append(f"ended {rnd.final}, the last successful requests imply {sorted(allowed)}")
    if rnd.final in ("exited", "created", "gone") and rnd.processes:
        found.append(f"ended {rnd.final} with {rnd.processes} of its processes running")
    if rnd.final in ("running", "paused") and not rnd.processes:
        found.append(f"ended {rnd.final} without its process")
    renames = [r for r in rnd.requests if r.ok and r.op == "rename"]
    names = {r.new_name for r in _last(renames)} if renames else {rnd.name}
    if rnd.final != "gone" and rnd.final_name not in names:
        found.append(f"named {rnd.final_name}, the last successful renames say {sorted(names)}")
    return found


def run_suite(
    client: Client, image: str, pairs: tuple[tuple[str, str], ...] = PAIRS, seed: int | None = None, rounds: int = 1
) -> list[tuple[Round, list[str]]]:
    """Every pair ``rounds`` times; each round with the invariants it broke."""
    rng = random.Random(seed)
    out = []
    for _ in range(rounds):
        for pair in pairs:
            rnd = run_pair(client, image, pair, rng)
            out.append((rnd, violations(rnd)))
    return out
