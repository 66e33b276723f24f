"""Tests for engine.graph.tagstore: the repositories file, on real files in tmp_path."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from engine.errors import Conflict, HostError, InvalidParameter
from engine.graph.tagstore import TagStore
from engine.reference import parse
from engine.sys.fs import atomic_write

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
DIGEST = "sha256:" + "d" * 64
DIGEST2 = "sha256:" + "e" * 64


class Clock:
    """A clock that ticks one second per reading."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def path(tmp_path):
    """The store's path, ``<tmp_path>/repositories-vfs`` (not created)."""
    return str(tmp_path / "repositories-vfs")


@pytest.fixture
def store(path):
    """A fresh store with a fake clock."""
    return TagStore(path, clock=Clock())


def read(path):
    with open(path, "rb") as f:
        return json.loads(f.read())


def test_missing_file_is_created_empty(path):
    TagStore(path)
    assert read(path) == {"Repositories": {}, "LastTagTime": {}}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(HostError, match="does not exist"):
        TagStore(str(tmp_path / "nope" / "repositories-vfs"))


def test_file_format(store, path):
    store.set(parse("busybox:latest"), A)
    store.set(parse("busybox:1.36"), A)
    store.set(parse(f"busybox@{DIGEST}"), A)
    store.set(parse("localhost:5000/a/b:v1"), B)
    assert read(path) == {
        "Repositories": {
            "docker.io/library/busybox": {"latest": A, "1.36": A, f"@{DIGEST}": A},
            "localhost:5000/a/b": {"v1": B},
        },
        "LastTagTime": {A: 1002.0, B: 1003.0},
    }


def test_spellings_of_one_name_are_one_repository(store):
    store.set(parse("docker.io/library/busybox:latest"), A)
    for name in ["busybox", "busybox:latest", "library/busybox", "index.docker.io/library/busybox:latest"]:
        assert store.get(parse(name)) == A
        assert store.lookup(name) == A


def test_bare_name_means_latest(store):
    store.set(parse("busybox"), A)
    assert store.get(parse("busybox:latest")) == A
    assert store.repo_tags(A) == ["busybox:latest"]
    assert store.delete(parse("busybox"))
    assert store.get(parse("busybox:latest")) is None


def test_bare_hex_image_id_is_normalised(store):
    store.set(parse("x:1"), "a" * 64)
    assert store.get(parse("x:1")) == A
    assert store.repo_tags("a" * 64) == ["x:1"]


def test_force_moves_a_tag(store):
    store.set(parse("busybox:latest"), A)
    store.set(parse("busybox:latest"), B, force=True)
    assert store.get(parse("busybox")) == B
    assert store.repo_tags(A) == []
    assert store.repo_tags(B) == ["busybox:latest"]


def test_without_force_a_taken_tag_is_a_conflict(store, path):
    store.set(parse("busybox:latest"), A)
    before = read(path)
    with pytest.raises(Conflict) as info:
        store.set(parse("busybox:latest"), B, force=False)
    assert str(info.value) == (f"tag busybox:latest is already set to image {A}, use the force option to replace it")
    assert info.value.http_status == 409
    assert store.get(parse("busybox")) == A
    assert read(path) == before


def test_without_force_the_same_image_is_fine(store):
    store.set(parse("busybox:latest"), A)
    store.set(parse("busybox:latest"), A, force=False)
    assert store.get(parse("busybox")) == A


def test_digest_references(store):
    ref = parse(f"busybox@{DIGEST}")
    store.set(ref, A)
    store.set(parse("busybox:1.36"), A)
    assert store.get(ref) == A
    # name:tag@digest resolves by its digest.
    assert store.get(parse(f"busybox:whatever@{DIGEST}")) == A
    assert store.lookup(f"docker.io/library/busybox@{DIGEST}") == A
    assert store.repo_digests(A) == [f"busybox@{DIGEST}"]
    assert store.repo_tags(A) == ["busybox:1.36"]
    assert store.get(parse(f"busybox@{DIGEST2}")) is None
    assert store.get(parse("busybox:latest")) is None


def test_a_digest_never_moves(store):
    ref = parse(f"busybox@{DIGEST}")
    store.set(ref, A)
    store.set(ref, A, force=False)
    with pytest.raises(Conflict, match="cannot overwrite digest"):
        store.set(ref, B, force=True)
    assert store.get(ref) == A


def test_digest_does_not_touch_last_tag_time(store):
    store.set(parse(f"busybox@{DIGEST}"), A)
    assert store.last_tag_time(A) is None
    store.set(parse("busybox:1"), A)
    assert store.last_tag_time(A) == 1001.0


@pytest.mark.parametrize(
    "name,image_id,message",
    [
        (f"busybox:1@{DIGEST}", A, "refusing to create a tag with a digest reference"),
        ("sha256:" + "f" * 64, A, "refusing to create an ambiguous tag using digest algorithm as name"),
        ("busybox:1", "sha256:abc", "invalid image ID"),
        ("busybox:1", "busybox", "invalid image ID"),
    ],
)
def test_set_refuses(store, name, image_id, message):
    with pytest.raises(InvalidParameter, match=message):
        store.set(parse(name), image_id)
    assert store.repositories() == {}


def test_references_are_sorted(store):
    for name in ["zeta:1", "alpha:2", "alpha:10", f"alpha@{DIGEST}", "localhost:5000/alpha:1", "user/beta:x"]:
        store.set(parse(name), A)
    store.set(parse("other:1"), B)
    assert [ref.familiar() for ref in store.references(A)] == sorted(
        [
            "zeta:1",
            "alpha:2",
            "alpha:10",
            f"alpha@{DIGEST}",
            "localhost:5000/alpha:1",
            "user/beta:x",
        ]
    )
    assert store.repo_tags(A) == ["alpha:10", "alpha:2", "localhost:5000/alpha:1", "user/beta:x", "zeta:1"]
    assert store.repo_digests(A) == [f"alpha@{DIGEST}"]
    assert store.references(C) == []
    assert store.images() == {A, B}


def test_delete(store, path):
    store.set(parse("busybox:1"), A)
    store.set(parse("busybox:2"), A)
    assert store.delete(parse("busybox:1"))
    assert not store.delete(parse("busybox:1"))
    assert not store.delete(parse("nothing:here"))
    assert store.repositories() == {"docker.io/library/busybox": {"2": A}}
    assert store.delete(parse("busybox:2"))
    # An emptied repository disappears.
    assert read(path)["Repositories"] == {}
    # LastTagTime stays until the image itself goes.
    assert store.last_tag_time(A) is not None
    assert store.images() == set()


def test_delete_digest(store):
    store.set(parse(f"busybox@{DIGEST}"), A)
    assert store.delete(parse(f"busybox@{DIGEST}"))
    assert store.get(parse(f"busybox@{DIGEST}")) is None


def test_delete_image(store, path):
    store.set(parse("busybox:1"), A)
    store.set(parse(f"busybox@{DIGEST}"), A)
    store.set(parse("user/x:y"), A)
    store.set(parse("busybox:2"), B)
    removed = store.delete_image(A)
    assert [ref.familiar() for ref in removed] == ["busybox:1", f"busybox@{DIGEST}", "user/x:y"]
    assert store.images() == {B}
    assert store.last_tag_time(A) is None
    assert read(path) == {"Repositories": {"docker.io/library/busybox": {"2": B}}, "LastTagTime": {B: 1003.0}}
    assert store.delete_image(A) == []
    assert store.delete_image(C) == []


def test_repositories_is_a_snapshot(store):
    store.set(parse("busybox:1"), A)
    snap = store.repositories()
    snap["docker.io/library/busybox"]["1"] = B
    snap["x"] = {}
    assert store.repositories() == {"docker.io/library/busybox": {"1": A}}


def test_lookup(store):
    store.set(parse("busybox:latest"), A)
    store.set(parse("localhost:5000/a/b:v1"), B)
    assert store.lookup("busybox") == A
    assert store.lookup("localhost:5000/a/b:v1") == B
    assert store.lookup("localhost:5000/a/b") is None
    assert store.lookup("missing") is None
    # IDs are not references.
    assert store.lookup(A) is None
    assert store.lookup("a" * 64) is None
    assert store.lookup("aaaa") is None
    with pytest.raises(InvalidParameter, match="must be lowercase"):
        store.lookup("BUSYBOX")


def test_last_tag_time(store):
    store.set(parse("a:1"), A)
    first = store.last_tag_time(A)
    store.set(parse("a:2"), A)
    assert store.last_tag_time(A) > first
    assert store.last_tag_time(B) is None


def test_persistence_across_reopen(path):
    store = TagStore(path, clock=Clock())
    store.set(parse("busybox:latest"), A)
    store.set(parse(f"busybox@{DIGEST}"), A)
    store.set(parse("localhost:5000/a/b:v1"), B)
    store.set(parse("[::1]:5000/x:y"), C)
    store.delete(parse("localhost:5000/a/b:v1"))
    again = TagStore(path)
    assert again.repositories() == store.repositories()
    assert again.repo_tags(A) == ["busybox:latest"]
    assert again.repo_digests(A) == [f"busybox@{DIGEST}"]
    assert again.images() == {A, C}
    assert again.last_tag_time(A) == store.last_tag_time(A)
    assert again.last_tag_time(B) == store.last_tag_time(B)


def test_file_without_last_tag_time_loads(path):
    with open(path, "w") as f:
        json.dump({"Repositories": {"docker.io/library/busybox": {"latest": A}}}, f)
    assert TagStore(path).lookup("busybox") == A


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b'{"Repositories": {"docker.io/library/busybox": {"latest": "sha256:aa',  # a torn write
        b"\xff\xfe",
        b"[]",
        b"{}",
        b'{"Repositories": []}',
        b'{"Repositories": {"docker.io/library/busybox": []}}',
        b'{"Repositories": {"busybox": {"latest": "%s"}}}' % A.encode(),
        b'{"Repositories": {"docker.io/library/BUSYBOX": {"latest": "%s"}}}' % A.encode(),
        b'{"Repositories": {"docker.io/library/busybox:1": {"latest": "%s"}}}' % A.encode(),
        b'{"Repositories": {"docker.io/library/busybox": {"bad tag": "%s"}}}' % A.encode(),
        b'{"Repositories": {"docker.io/library/busybox": {"@sha256:abc": "%s"}}}' % A.encode(),
        b'{"Repositories": {"docker.io/library/busybox": {"latest": "abc"}}}',
        b'{"Repositories": {"docker.io/library/busybox": {"latest": "%s"}}}' % A[7:].encode(),
        b'{"Repositories": {"docker.io/library/busybox": {"latest": 1}}}',
        b'{"Repositories": {}, "LastTagTime": []}',
        b'{"Repositories": {}, "LastTagTime": {"x": 1}}',
        b'{"Repositories": {}, "LastTagTime": {"%s": "yesterday"}}' % A.encode(),
    ],
)
def test_corrupt_file_is_an_error_and_left_untouched(path, content):
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(HostError, match="is corrupt") as info:
        TagStore(path)
    assert info.value.http_status == 500
    assert path in str(info.value)
    with open(path, "rb") as f:
        assert f.read() == content


def test_leftover_temp_file_is_ignored_and_removed(path, tmp_path):
    store = TagStore(path)
    store.set(parse("busybox:latest"), A)
    # What a crash between mkstemp and rename leaves: a half-written temp file.
    leftover = tmp_path / ".repositories-vfs.k3j4h5.tmp"
    leftover.write_bytes(b'{"Repositories": {"docker.io/lib')
    unrelated = tmp_path / ".repositories-aufs.x.tmp"
    unrelated.write_bytes(b"not ours")
    again = TagStore(path)
    assert again.lookup("busybox") == A
    assert not leftover.exists()
    assert unrelated.exists()


def test_failed_write_changes_nothing(path):
    """A write that fails (disk full) leaves memory and file as they were."""
    fail = threading.Event()

    def write(target: str, data: bytes, mode: int) -> None:
        if fail.is_set():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        atomic_write(target, data, mode)

    store = TagStore(path, clock=Clock(), write=write)
    store.set(parse("busybox:latest"), A)
    before_file, before_repos = read(path), store.repositories()
    fail.set()
    for change in [
        lambda: store.set(parse("busybox:latest"), B),
        lambda: store.set(parse("new:1"), B),
        lambda: store.delete(parse("busybox:latest")),
        lambda: store.delete_image(A),
    ]:
        with pytest.raises(HostError, match="No space left on device"):
            change()
        assert store.repositories() == before_repos
        assert store.images() == {A}
        assert read(path) == before_file
    assert store.last_tag_time(B) is None


@pytest.mark.slow
def test_sixteen_threads(path):
    """Concurrent writers lose nothing, and a reader never sees a partial file."""
    store = TagStore(path)
    threads_n, per_thread = 16, 10
    errors: list[BaseException] = []
    stop = threading.Event()
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                with open(path, "rb") as f:
                    doc = json.loads(f.read())
                assert set(doc) == {"Repositories", "LastTagTime"}
                reads += 1
            except BaseException as exc:
                errors.append(exc)
                return

    def writer(n: int) -> None:
        image = "sha256:" + f"{n:02x}" * 32
        try:
            for i in range(per_thread):
                store.set(parse(f"repo{n}:t{i}"), image)
                # A shared tag every thread moves: force makes the last one win.
                store.set(parse("shared:latest"), image, force=True)
                if i % 5 == 4:
                    assert store.delete(parse(f"repo{n}:t{i}"))
        except BaseException as exc:
            errors.append(exc)

    watcher = threading.Thread(target=reader)
    watcher.start()
    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads_n)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    watcher.join()
    assert errors == []
    assert reads > 0

    expected_tags = per_thread - per_thread // 5
    for reopened in (store, TagStore(path)):
        repos = reopened.repositories()
        for n in range(threads_n):
            image = "sha256:" + f"{n:02x}" * 32
            assert len(repos[f"docker.io/library/repo{n}"]) == expected_tags
            assert all(value == image for value in repos[f"docker.io/library/repo{n}"].values())
        assert reopened.lookup("shared") in {"sha256:" + f"{n:02x}" * 32 for n in range(threads_n)}
    assert [name for name in os.listdir(os.path.dirname(path)) if name.endswith(".tmp")] == []


_CRASHER = textwrap.dedent("""
    import sys
    from engine.reference import parse
    from engine.graph.tagstore import TagStore

    store = TagStore(sys.argv[1])
    print("ready", flush=True)
    i = 0
    while True:
        store.set(parse(f"crash:t{i % 50}"), "sha256:" + f"{i % 256:02x}" * 32)
        if i % 7 == 0:
            store.delete(parse(f"crash:t{(i * 3) % 50}"))
        i += 1
""")


def test_killed_writer_leaves_a_loadable_store(path, tmp_path):
    """SIGKILL a process in the middle of writing: the store still loads and its temp files go."""
    script = tmp_path / "crasher.py"
    script.write_text(_CRASHER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    for delay in (0.01, 0.03, 0.05, 0.08, 0.13):
        proc = subprocess.Popen([sys.executable, str(script), path], stdout=subprocess.PIPE, env=env)
        try:
            assert proc.stdout.readline() == b"ready\n"
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        with open(path, "rb") as f:
            json.loads(f.read())  # old or new, never torn
        store = TagStore(path)
        assert store.repositories().keys() <= {"docker.io/library/crash"}
        assert [name for name in os.listdir(tmp_path) if name.endswith(".tmp")] == []
