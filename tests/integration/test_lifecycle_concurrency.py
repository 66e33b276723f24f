"""Life-cycle races against the real daemon (issue 18): the concurrency suite of
:mod:`engine.testing.lifecycle_races` pair by pair, the same suite against
the reference dockerd, and the races the issue found one by one (a stop sent
right after a start, ``rm -f`` of a container that has just exited, a
SIGKILL answered before the container was down).

The daemons run with bridge networking, whose exit processing is the slowest.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Iterator

import pytest

from engine.testing import dockerd as reference
from engine.testing.daemon import DaemonProcess
from engine.testing.images import busybox_archive
from engine.testing.lifecycle_races import (
    PAIRS,
    Client,
    kill_leftovers,
    marked_processes,
    run_pair,
    run_suite,
    violations,
)
from engine.testing.procs import wait_for

pytestmark = pytest.mark.root("daemons")

#: ``ENGINE_RACE_SEED`` repeats a run's delays; otherwise each run draws its own.
SEED = int(os.environ["ENGINE_RACE_SEED"]) if os.environ.get("ENGINE_RACE_SEED") else None
IMAGE = "busybox:latest"


@pytest.fixture(scope="module")
def engine_client(tmp_path_factory) -> Iterator[Client]:
    """Our daemon (vfs, bridge networking) with busybox loaded.

    Creates: a work directory with the daemon's root, socket and log, and its
    processes; the daemon is stopped and the directory removed afterwards
    (each test removes its containers).
    """
    workdir = str(tmp_path_factory.mktemp("races"))
    d = DaemonProcess(workdir, ["-s", "vfs"]).start()
    try:
        client = Client(d.socket)
        client.load(busybox_archive())
        client.log = d.log  # type: ignore[attr-defined]
        client.root = d.root  # type: ignore[attr-defined]
        yield client
    finally:
        d.stop()
        from engine.sys.fs import safe_rmtree

        safe_rmtree(workdir)


@pytest.fixture(scope="module")
def rng() -> random.Random:
    return random.Random(SEED)


def report(rounds) -> str:
    return "\n".join(rnd.describe() + "".join(f"\n  !! {v}" for v in found) for rnd, found in rounds)


@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_each_pair_of_operations(engine_client, rng, pair):
    rounds = run_suite(engine_client, IMAGE, (pair,), seed=rng.randrange(1 << 30))
    broken = [(rnd, found) for rnd, found in rounds if found]
    assert not broken, report(broken) + "\n" + engine_client.log()[-3000:]


#: What dockerd 20.10 answers with a 500 where the container was not in the state the operation
#: needs (the engine answers 409): the request was refused, nothing changed.
DOCKERD_REFUSALS = (
    "not paused",
    "not running",
    "stopped container",
    "marked for removal",
    "not found: not found",  # containerd's task of a container that has just exited
    "OCI runtime exec failed",  # runc's exec into a container that is exiting
    "cannot exec in a",  # containerd's exec into a container that is paused or deleted
    "ttrpc: closed",  # containerd's exec racing a stop: the task's shim connection closed under it
    "cannot update a",  # containerd's update of a task that is stopping or deleted
)
#: containerd's and runc's errors that dockerd passes on as 500s end in the gRPC code's name
#: (errdefs.Unknown): a race with the task's own exit, not the daemon's judgement of the request.
CONTAINERD_UNKNOWN = ': unknown"}'

#: Pairs dockerd 20.10 cannot take: an exec started while the container is being paused never
#: answers, and the container's inspect and rm -f hang behind it (the suite found the same in the
#: engine, whose exec now holds the container's slot until its process runs).
DOCKERD_DEADLOCKS = (("pause", "exec"),)


def dockerd_refusal(violation: str) -> bool:
    if not violation.startswith("5xx: "):
        return False
    return CONTAINERD_UNKNOWN in violation or any(words in violation for words in DOCKERD_REFUSALS)


def test_dockerd_refusals_are_its_races_with_the_task_not_any_5xx():
    cid = "c1c50693b68cdccd98be0ab9d7b200edd24947c319d52e18846723b2446299d1"
    seen = f'5xx: update(+17ms) -> 500 {{"message":"Cannot update container {cid}: cannot update a deleted process: unknown"}}'
    assert dockerd_refusal(seen)
    assert dockerd_refusal('5xx: exec(+3ms) -> 500 {"message":"ttrpc: closed: unavailable"}')
    assert not dockerd_refusal('5xx: start(+1ms) -> 500 {"message":"a panic in the daemon"}')
    assert not dockerd_refusal(f"ended running, the last successful requests imply ['exited'] {seen}")


def test_the_same_suite_against_dockerd(tmp_path_factory):
    """Every pair once against dockerd 20.10 (Debian's), with its default bridge: the invariants
    are Docker's, so dockerd must keep them too, but for its 500s that refuse an operation
    the container's state does not allow (:data:`DOCKERD_REFUSALS`) and the pair it deadlocks
    on (:data:`DOCKERD_DEADLOCKS`)."""
    if not reference.available():
        pytest.skip("dockerd (Debian docker.io) is not installed")
    # A short directory: containerd's sockets go below it (at most 104 bytes).
    d = reference.ReferenceDockerd(str(tmp_path_factory.mktemp("rd")), networking=True).start()
    try:
        client = Client(d.socket)
        client.load(busybox_archive())
        rounds = run_suite(client, IMAGE, tuple(p for p in PAIRS if p not in DOCKERD_DEADLOCKS), seed=SEED)
    finally:
        d.stop()
        kill_leftovers()  # its shims outlive it
    broken = [(rnd, [v for v in found if not dockerd_refusal(v)]) for rnd, found in rounds]
    broken = [(rnd, found) for rnd, found in broken if found]
    assert not broken, report(broken)


def create(client: Client, cmd: list[str]) -> str:
    status, body = client.call("POST", "/containers/create", {"Image": IMAGE, "Cmd": cmd})
    assert status == 201, body
    return json.loads(body)["Id"]


def test_a_stop_at_any_delay_after_a_start_leaves_the_container_exited(engine_client):
    """The lost stop: a stop sent 0 to 25 ms after a start answered 304 while the container ran on.

    The delay counts from the moment the daemon is inside the start (the shim's ``shim.json``
    is written at the start of the launch): a stop that overtook the start would rightly be a 304.
    """
    client = engine_client
    for delay_ms in range(0, 26, 5):
        marker = f"late-stop-{delay_ms}-{time.monotonic_ns()}"
        cid = create(client, ["sh", "-c", f"trap 'exit 0' TERM; sleep 3600 & wait; : {marker}"])
        try:
            answers: dict[str, int] = {}
            start = threading.Thread(
                target=lambda answers=answers, cid=cid: answers.update(
                    start=client.call("POST", f"/containers/{cid}/start")[0]
                )
            )
            start.start()
            launching = os.path.join(client.root, "containers", cid, "shim.json")  # type: ignore[attr-defined]
            wait_for(lambda launching=launching: os.path.exists(launching), timeout=30, what="the start")
            time.sleep(delay_ms / 1000)
            answers["stop"] = client.call("POST", f"/containers/{cid}/stop?t=5")[0]
            start.join(60)
            doc = client.inspect(cid)
            assert answers == {"start": 204, "stop": 204}, (delay_ms, answers)
            assert doc["State"]["Status"] == "exited" and marked_processes(marker) == 0, delay_ms
        finally:
            assert client.call("DELETE", f"/containers/{cid}?force=1")[0] == 204


def test_rm_f_of_containers_that_have_just_exited(engine_client):
    """``rm -f`` while the exit of a command that failed at once is processed: never stuck in
    'Removal In Progress', every name free again."""
    client = engine_client
    for n in range(20):
        status, body = client.call("POST", f"/containers/create?name=quick-{n}", {"Image": IMAGE, "Cmd": ["false"]})
        assert status == 201, body
        assert client.call("POST", f"/containers/quick-{n}/start")[0] == 204
        time.sleep(random.uniform(0, 0.02))
        status, body = client.call("DELETE", f"/containers/quick-{n}?force=1")
        assert status == 204, body
    status, body = client.call("GET", "/containers/json?all=1")
    assert not [c for c in json.loads(body) if c["Names"][0].startswith("/quick-")]
    for n in range(20):
        status, body = client.call("POST", f"/containers/create?name=quick-{n}", {"Image": IMAGE, "Cmd": ["true"]})
        assert status == 201, body
        assert client.call("DELETE", f"/containers/quick-{n}")[0] == 204


def test_sigkill_answers_once_the_container_is_down(engine_client):
    """As dockerd's, a kill with SIGKILL returns when the container no longer runs (with bridge
    networking its exit takes longest to process)."""
    client = engine_client
    for _ in range(5):
        cid = create(client, ["sleep", "3600"])
        assert client.call("POST", f"/containers/{cid}/start")[0] == 204
        assert client.call("POST", f"/containers/{cid}/kill")[0] == 204
        state = client.inspect(cid)["State"]
        assert (state["Status"], state["Running"], state["ExitCode"]) == ("exited", False, 137)
        assert client.call("DELETE", f"/containers/{cid}")[0] == 204


def test_pairs_of_a_random_draw_hold_against_the_engine(engine_client, rng):
    """A second draw of delays over a few pairs, with more threads each (the stress version)."""
    pairs = tuple(rng.sample(PAIRS, 6))
    broken = []
    for pair in pairs:
        rnd = run_pair(engine_client, IMAGE, pair, rng, threads=6)
        found = violations(rnd)
        if found:
            broken.append((rnd, found))
    assert not broken, report(broken)
