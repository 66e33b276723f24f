"""kill -9 of the daemon (master and worker; containers live on in their shims)
at random moments during creates, removes, renames, commits, image loads
and pulls, and what the next start-up leaves (issue 18).

After each restart, :func:`check` looks at the daemon's root and at the
API: no name that cannot be used, no container the daemon does not know
(a directory, a name in the link graph, a process), no orphan layer (a
graph driver layer no image and no container holds, a half-registered
one), no orphan volume (data without metadata, an anonymous volume no
container uses: every container here is removed with its volumes), no
mount under the root but the network namespaces of running containers, and
every name is reusable. The moments are drawn from how long the operation
takes when nothing kills it; rounds are bounded (:data:`ROUNDS` per kind).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from engine.sys.fs import mountinfo
from engine.testing import registry as local_registry
from engine.testing.daemon import DaemonProcess, settled_listdir
from engine.testing.images import big_image, busybox_archive, docker_archive
from engine.testing.lifecycle_races import Client, kill_leftovers

pytestmark = pytest.mark.root("daemons")

#: Rounds of kill -9 per kind of operation.
ROUNDS = int(os.environ.get("ENGINE_CRASH_ROUNDS", "4"))
#: Operations in flight when the daemon is killed (creates, removes, renames).
BATCH = 4
IMAGE = "busybox:latest"
MARKER = "crash-"
#: Words of a start-up's repairs in the log (the life cycle's, the store's, the graph's).
RECOVERY = (
    "crash",
    "does not exist",
    "interrupted write",
    "a rename left",
    "unreferenced layers",
    "cannot be loaded",
    "is taken",
)


class Crashing:
    """A daemon that is killed and started again, and what the checks need of it.

    :param workdir: the daemon's directory (root, socket, log).
    """

    def __init__(self, workdir: str) -> None:
        self.d = DaemonProcess(workdir, ["-s", "vfs"]).start()
        self.client = Client(self.d.socket)
        self.root = self.d.root
        self.rng = random.Random(int(os.environ.get("ENGINE_CRASH_SEED", "0")) or None)
        #: Every name a round gave a container (each must stay usable).
        self.names: set[str] = set()
        self.crashes = 0
        #: What the start-ups after a kill logged of their repairs.
        self.recoveries: list[str] = []

    def crash_during(
        self, work: list[Callable[[], object]], duration: float, under_way: Callable[[], bool] | None = None
    ) -> None:
        """Run ``work`` in threads and kill -9 the daemon at a random moment of it; start it again.

        :param duration: how long the work takes undisturbed: the moment is drawn from it.
        :param under_way: when given, the kill comes once it is true (the operation is inside
            the steps that matter), after a random delay of at most a tenth of ``duration``.
        """
        threads = [threading.Thread(target=_quietly, args=(fn,), daemon=True) for fn in work]
        for t in threads:
            t.start()
        if under_way is None:
            time.sleep(self.rng.uniform(0, duration))
        else:
            deadline = time.monotonic() + 2 * duration + 5
            while not under_way() and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(self.rng.uniform(0, duration / 10))
        self.d.kill()
        self.crashes += 1
        for t in threads:
            t.join(60)
        log_before = len(self.d.log())
        self.d.start()
        self.recoveries += [
            line.split("] ", 1)[-1][:60]
            for line in self.d.log()[log_before:].splitlines()
            if any(words in line for words in RECOVERY)
        ]

    def report(self, what: str) -> None:
        """Say what the restarts found (shown with ``pytest -s``)."""
        kinds: dict[str, int] = {}
        for line in self.recoveries:
            key = " ".join(w for w in line.split() if not any(ch.isdigit() for ch in w))[:50]
            kinds[key] = kinds.get(key, 0) + 1
        print(f"\n{what}: {self.crashes} kill -9, start-up found: {kinds or 'nothing to do'}")

    def timed(self, fn: Callable[[], object]) -> float:
        """How long ``fn`` takes (the span the kill is drawn from)."""
        started = time.monotonic()
        fn()
        return time.monotonic() - started

    # the API
    def call(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        return self.client.call(method, path, body)

    def create(self, name: str, start: bool = False) -> str:
        body = {"Image": IMAGE, "Cmd": ["sh", "-c", f"sleep 3600; : {MARKER}{name}"], "Volumes": {"/data": {}}}
        status, raw = self.call("POST", f"/containers/create?name={name}", body)
        assert status == 201, raw
        cid = json.loads(raw)["Id"]
        if start:
            assert self.call("POST", f"/containers/{cid}/start")[0] == 204
        return cid

    def containers(self) -> list[dict]:
        status, raw = self.call("GET", "/containers/json?all=1")
        assert status == 200, raw
        return json.loads(raw)

    def remove_all(self) -> None:
        for c in self.containers():
            status, raw = self.call("DELETE", f"/containers/{c['Id']}?force=1&v=1")
            assert status in (204, 404), raw


def half_made(c: Crashing) -> Callable[[], bool]:
    """True while a container's directory has no record yet (a create between its first and last step)."""
    base = os.path.join(c.root, "containers")

    def under_way() -> bool:
        return any(
            not os.path.exists(os.path.join(base, cid, "config.v2.json"))
            for cid in os.listdir(base)
            if not cid.startswith(".")  # .rm-*: a removed container's directory on its way out
        )

    return under_way


def journaled(c: Crashing, journal: str) -> Callable[[], bool]:
    """True once a container's directory holds ``journal`` (a remove under way)."""
    base = os.path.join(c.root, "containers")
    return lambda: any(os.path.exists(os.path.join(base, cid, journal)) for cid in os.listdir(base))


def registering(c: Crashing) -> Callable[[], bool]:
    """True while a layer is being registered (its staging directory exists)."""
    layerdb = os.path.join(c.root, "layerdb")
    return lambda: any(name.startswith("tmp-") for name in os.listdir(layerdb))


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:  # the daemon died under it: that is the point
        pass


@pytest.fixture
def crashing(workdir) -> Iterator[Crashing]:
    """A daemon (vfs, bridge networking) with busybox loaded, killed and restarted by the test.

    Creates: its root, socket and log under ``workdir``, its processes and its
    containers' shims; the containers are removed and the daemon stopped
    afterwards, and any container process left is killed.
    """
    c = Crashing(os.path.join(workdir, "d"))
    try:
        c.client.load(busybox_archive())
        yield c
    finally:
        try:
            c.remove_all()
        finally:
            c.d.stop()
            kill_leftovers(MARKER)


# ----------------------------------------------------------------------
# the invariants


def linkgraph_paths(root: str) -> dict[str, list[str]]:
    """Every edge of the link graph as ``{entity: [parent/name, ...]}`` (read-only, beside the daemon)."""
    db = sqlite3.connect(f"file:{os.path.join(root, 'linkgraph.db')}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT entity_id, parent_id, name FROM edge WHERE parent_id IS NOT NULL").fetchall()
    finally:
        db.close()
    out: dict[str, list[str]] = {}
    for entity, parent, name in rows:
        out.setdefault(entity, []).append(f"{parent}/{name}")
    return out


def marked_pids() -> dict[int, str]:
    """Container processes of this test: PID -> the name in their marker."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
        except OSError:
            continue
        if args[:2] == [b"sh", b"-c"] and len(args) > 2 and MARKER.encode() in args[2]:
            out[int(entry)] = args[2].decode().rsplit(MARKER, 1)[1]
    return out


def check(c: Crashing) -> None:
    """The invariants after a restart (see the module docstring)."""
    root = c.root
    # What removals renamed out of sight (.rm-*) is deleted in the background, and what a
    # crash left so is swept at the start: it goes, and soon.
    for doomed in ("containers", os.path.join("vfs", "dir")):
        settled_listdir(os.path.join(root, doomed), timeout=60)
    listed = c.containers()
    known = {x["Id"]: x for x in listed}
    running = {cid for cid, x in known.items() if x["State"] == "running"}
    # containers: records, directories, names
    assert sorted(os.listdir(os.path.join(root, "containers"))) == sorted(known)
    for x in known.values():
        assert x["State"] not in ("removing", "dead"), x
    paths = linkgraph_paths(root)
    assert set(paths) <= set(known), f"names of unknown containers: {set(paths) - set(known)}"
    for cid, x in known.items():
        assert paths.get(cid) == [f"0/{x['Names'][0].lstrip('/')}"], (x["Names"], paths.get(cid))
    # processes: only those of running containers the daemon knows
    for pid, marker in marked_pids().items():
        # The marker is the name the container was created with (a rename keeps it).
        assert any(MARKER + marker in known[cid]["Command"] for cid in running), (
            pid,
            marker,
            [(x["Names"], x["State"], x["Status"]) for x in listed],
        )
    # layers: each is an image's or a container's
    layerdb = os.listdir(os.path.join(root, "layerdb"))
    assert not [n for n in layerdb if n.startswith("tmp-")]
    wanted = set(layerdb) | set(known) | {cid + "-init" for cid in known}
    assert set(os.listdir(os.path.join(root, "vfs", "dir"))) == wanted
    assert not [n for n in os.listdir(os.path.join(root, "graph")) if n.startswith("tmp-")]
    # volumes: every one a known container's, none half removed, no data without metadata
    raw = c.call("GET", "/volumes")[1]
    volumes = {v["Name"] for v in json.loads(raw)["Volumes"] or []}
    used = set()
    for cid in known:
        raw = c.call("GET", f"/containers/{cid}/json")[1]
        used |= {m["Name"] for m in json.loads(raw)["Mounts"] if m["Type"] == "volume"}
    assert volumes == used
    vdir = os.path.join(root, "volumes")
    assert sorted(os.listdir(vdir)) == sorted(["vfs", *(f"{v}.json" for v in volumes)]), c.d.log()[-3000:]
    data = (
        set(os.listdir(os.path.join(vdir, "vfs", "dir"))) if os.path.isdir(os.path.join(vdir, "vfs", "dir")) else set()
    )
    assert data == {hashlib.sha256(v.encode()).hexdigest() for v in volumes}
    # mounts under the root: the network namespaces of running containers, nothing else
    real = os.path.realpath(root)
    mounts = sorted(m.mount_point for m in mountinfo() if m.mount_point.startswith(real + "/"))
    assert mounts == sorted(os.path.join(real, "netns", cid) for cid in running)
    netns = os.path.join(root, "netns")
    assert sorted(os.listdir(netns) if os.path.isdir(netns) else []) == sorted(running)
    # every name can be used again
    taken = {x["Names"][0].lstrip("/"): cid for cid, x in known.items()}
    for name in sorted(c.names):
        if name in taken:
            continue
        cid = c.create(name)
        assert c.call("DELETE", f"/containers/{cid}?v=1")[0] == 204


# ----------------------------------------------------------------------
# the operations


def test_kill_during_creates(crashing):
    c = crashing
    probe = [f"probe-{i}" for i in range(BATCH)]
    duration = c.timed(lambda: [c.create(n) for n in probe])
    c.remove_all()
    for rnd in range(ROUNDS):
        names = [f"cr{rnd}-{i}-{uuid.uuid4().hex[:6]}" for i in range(BATCH)]
        c.names |= set(names)
        c.crash_during(
            [lambda n=n: c.create(n, start=True) for n in names], duration, half_made(c) if rnd % 2 == 0 else None
        )
        check(c)
    c.remove_all()
    check(c)
    c.report("creates")


def test_kill_during_removes(crashing):
    c = crashing
    duration = c.timed(
        lambda: [
            c.call("DELETE", f"/containers/{c.create(f'probe-{i}', start=True)}?force=1&v=1") for i in range(BATCH)
        ]
    )
    for rnd in range(ROUNDS):
        names = [f"rm{rnd}-{i}-{uuid.uuid4().hex[:6]}" for i in range(BATCH)]
        c.names |= set(names)
        ids = [c.create(n, start=i % 2 == 0) for i, n in enumerate(names)]
        c.crash_during(
            [lambda cid=cid: c.call("DELETE", f"/containers/{cid}?force=1&v=1") for cid in ids],
            duration,
            journaled(c, "removal.json") if rnd % 2 else None,
        )
        check(c)
    c.remove_all()
    check(c)
    c.report("removes")


def test_kill_during_renames(crashing):
    c = crashing
    ids = [c.create(f"rn-{i}", start=i % 2 == 0) for i in range(BATCH)]
    c.names |= {f"rn-{i}" for i in range(BATCH)}
    duration = c.timed(
        lambda: [c.call("POST", f"/containers/{cid}/rename?name=probe-{n}") for n, cid in enumerate(ids)]
    )
    for rnd in range(ROUNDS):
        new = [f"rn{rnd}-{i}-{uuid.uuid4().hex[:6]}" for i in range(BATCH)]
        c.names |= set(new)
        c.crash_during(
            [lambda cid=cid, n=n: c.call("POST", f"/containers/{cid}/rename?name={n}") for cid, n in zip(ids, new)],
            duration * 1.5,
        )
        check(c)
        for cid in ids:  # each container has the old name or the new one, and answers to it
            status, raw = c.call("GET", f"/containers/{cid}/json")
            assert status == 200, raw
    c.remove_all()
    check(c)
    c.report("renames")


def image_check(c: Crashing, ref: str, image_id: str) -> None:
    """The image is whole or absent; removing it leaves no layer."""
    status, raw = c.call("GET", f"/images/{ref}/json")
    if status == 200:
        assert json.loads(raw)["Id"] == image_id
    status, raw = c.call("GET", "/images/json?all=1")
    for image in json.loads(raw):
        s, r = c.call("GET", f"/images/{image['Id']}/json")
        assert s == 200, r
        if image["Id"] != image_id:
            continue
        s, r = c.call("DELETE", f"/images/{image['Id']}?force=1")
        assert s == 200, r
    layerdb = os.listdir(os.path.join(c.root, "layerdb"))
    busybox = json.loads(c.call("GET", f"/images/{IMAGE}/json")[1])["RootFS"]["Layers"]
    assert len(layerdb) == len(busybox), layerdb


def test_kill_during_loads(crashing, tmp_path):
    c = crashing
    image = big_image(30, tags=["big:latest"])
    archive = docker_archive([image])
    duration = c.timed(lambda: c.client.load(archive))
    image_check(c, "big:latest", image.id)
    check(c)
    for rnd in range(ROUNDS):
        c.crash_during([lambda: c.client.load(archive)], duration, registering(c) if rnd % 2 else None)
        check(c)
        image_check(c, "big:latest", image.id)
    c.client.load(archive)  # and it loads whole afterwards
    assert json.loads(c.call("GET", "/images/big:latest/json")[1])["Id"] == image.id
    c.report("loads")


def test_kill_during_pulls(crashing, tmp_path):
    if not local_registry.available():
        pytest.skip("docker-registry (distribution) is not installed")
    c = crashing
    reg = local_registry.LocalRegistry(str(tmp_path / "registry")).start()
    try:
        ref = f"{reg.host}/big:latest"
        image = big_image(30, tags=[ref])
        c.client.load(docker_archive([image]))
        env = dict(os.environ, DOCKER_HOST=c.d.host, DOCKER_CONFIG=str(tmp_path))
        push = subprocess.run(["docker", "push", ref], env=env, capture_output=True, timeout=300)
        assert push.returncode == 0, push.stderr
        assert c.call("DELETE", f"/images/{ref}?force=1")[0] == 200

        def pull() -> None:
            c.client.call("POST", f"/images/create?fromImage={reg.host}/big&tag=latest", timeout=300)

        duration = c.timed(pull)
        image_check(c, ref, image.id)
        for rnd in range(ROUNDS):
            c.crash_during([pull], duration, registering(c) if rnd % 2 else None)
            check(c)
            image_check(c, ref, image.id)
        pull()
        assert json.loads(c.call("GET", f"/images/{ref}/json")[1])["Id"] == image.id
        c.report("pulls")
    finally:
        reg.stop()


def test_kill_during_commits(crashing, tmp_path):
    c = crashing
    body = {"Image": IMAGE, "Cmd": ["sh", "-c", f"dd if=/dev/urandom of=/big bs=1M count=20; sleep 3600; : {MARKER}cm"]}
    status, raw = c.call("POST", "/containers/create?name=cm", body)
    assert status == 201, raw
    cid = json.loads(raw)["Id"]
    c.names.add("cm")
    assert c.call("POST", f"/containers/{cid}/start")[0] == 204
    deadline = time.monotonic() + 60
    while not any(ch["Path"] == "/big" for ch in json.loads(c.call("GET", f"/containers/{cid}/changes")[1]) or []):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1)  # dd has written its 20 MB

    def commit(tag: str) -> None:
        c.client.call("POST", f"/commit?container={cid}&repo=crash-commit&tag={tag}", {}, timeout=300)

    duration = c.timed(lambda: commit("probe"))
    assert c.call("DELETE", "/images/crash-commit:probe")[0] == 200
    busybox = json.loads(c.call("GET", f"/images/{IMAGE}/json")[1])["RootFS"]["Layers"]
    for rnd in range(ROUNDS):
        c.crash_during([lambda rnd=rnd: commit(f"r{rnd}")], duration, registering(c) if rnd % 2 else None)
        check(c)
        # The container runs on, not left frozen by the commit's pause.
        state = json.loads(c.call("GET", f"/containers/{cid}/json")[1])["State"]
        assert state["Running"] and not state["Paused"], state
        # The image is whole (it runs) or absent; removing it leaves only busybox's layers.
        status, raw = c.call("GET", f"/images/crash-commit:r{rnd}/json")
        if status == 200:
            image = json.loads(raw)
            assert len(image["RootFS"]["Layers"]) == len(busybox) + 1, image
            status, raw = c.call("POST", "/containers/create", {"Image": f"crash-commit:r{rnd}", "Cmd": ["ls", "/big"]})
            assert status == 201, raw
            probe = json.loads(raw)["Id"]
            assert c.call("POST", f"/containers/{probe}/start")[0] == 204
            assert json.loads(c.call("POST", f"/containers/{probe}/wait")[1])["StatusCode"] == 0
            assert c.call("DELETE", f"/containers/{probe}")[0] == 204
            assert c.call("DELETE", f"/images/crash-commit:r{rnd}")[0] == 200, raw
        else:
            assert status == 404, raw
        assert len(os.listdir(os.path.join(c.root, "layerdb"))) == len(busybox)
    c.remove_all()
    check(c)
    c.report("commits")
