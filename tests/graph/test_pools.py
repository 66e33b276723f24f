"""Tests for engine.graph.pools: one transfer per key, shared with concurrent callers."""

from __future__ import annotations

import threading

import pytest

from engine.errors import NotFound
from engine.graph.pools import Call, Pool

TIMEOUT = 10.0


class Transfer:
    """A transfer that blocks until released and counts how often it ran."""

    def __init__(self, result: object = "done", error: BaseException | None = None) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.runs = 0
        self.result = result
        self.error = error

    def __call__(self) -> object:
        self.runs += 1
        self.started.set()
        assert self.release.wait(TIMEOUT), "never released"
        if self.error is not None:
            raise self.error
        return self.result


class Callers:
    """Threads calling ``pool.run(key, fn)``; their outcomes land in ``results`` and ``errors``."""

    def __init__(self, pool: Pool, key: str, fn, count: int) -> None:
        self.waiting = threading.Semaphore(0)
        self.results: list[object] = []
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._call, args=(pool, key, fn)) for _ in range(count)]

    def _call(self, pool: Pool, key: str, fn) -> None:
        try:
            result = pool.run(key, fn, on_wait=self.waiting.release)
        except BaseException as exc:
            with self.lock:
                self.errors.append(exc)
        else:
            with self.lock:
                self.results.append(result)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def wait_until_waiting(self, n: int) -> None:
        for _ in range(n):
            assert self.waiting.acquire(timeout=TIMEOUT), "callers did not start waiting"

    def join(self) -> None:
        for t in self.threads:
            t.join(TIMEOUT)
            assert not t.is_alive()


def test_single_caller_runs_and_releases():
    pool = Pool("pull")
    assert pool.run("docker.io/library/busybox:latest", lambda: 42) == 42
    assert not pool.in_progress("docker.io/library/busybox:latest")
    assert pool.keys() == []


def test_concurrent_callers_wait_for_the_first_and_share_its_result():
    pool = Pool("pull")
    key = "docker.io/library/busybox:latest"
    transfer = Transfer(result={"id": "sha256:abc"})
    callers = Callers(pool, key, transfer, 8)
    callers.start()
    assert transfer.started.wait(TIMEOUT)
    callers.wait_until_waiting(7)  # every other caller found the transfer running
    assert pool.in_progress(key)
    assert pool.keys() == [key]
    transfer.release.set()
    callers.join()
    assert transfer.runs == 1
    assert callers.errors == []
    assert len(callers.results) == 8
    assert all(r is transfer.result for r in callers.results)
    assert not pool.in_progress(key)


def test_concurrent_callers_share_the_exception():
    pool = Pool("push")
    key = "localhost:5000/a/b:v1"
    error = NotFound("manifest unknown")
    transfer = Transfer(error=error)
    callers = Callers(pool, key, transfer, 5)
    callers.start()
    assert transfer.started.wait(TIMEOUT)
    callers.wait_until_waiting(4)
    transfer.release.set()
    callers.join()
    assert transfer.runs == 1
    assert callers.results == []
    assert len(callers.errors) == 5
    assert all(e is error for e in callers.errors)
    assert not pool.in_progress(key)


def test_key_is_released_after_failure_and_the_next_call_runs_again():
    pool = Pool("pull")
    calls = []

    def failing():
        calls.append("fail")
        raise RuntimeError("network down")

    with pytest.raises(RuntimeError, match="network down"):
        pool.run("k", failing)
    assert not pool.in_progress("k")
    assert pool.run("k", lambda: calls.append("ok") or "ok") == "ok"
    assert calls == ["fail", "ok"]


def test_later_call_starts_a_new_transfer():
    pool = Pool("pull")
    runs = []
    for n in range(3):
        assert pool.run("k", lambda n=n: runs.append(n) or n) == n
    assert runs == [0, 1, 2]


def test_different_keys_run_in_parallel():
    pool = Pool("pull")
    # Each transfer waits for the other to have started: run one after the
    # other, they would time out at the barrier. The barrier's action runs
    # when both are inside their transfer.
    seen: list[list[str]] = []
    barrier = threading.Barrier(2, action=lambda: seen.append(pool.keys()), timeout=TIMEOUT)

    def transfer(name: str):
        barrier.wait()
        return name

    results = {}
    threads = [
        threading.Thread(target=lambda k=k: results.__setitem__(k, pool.run(k, lambda: transfer(k))))
        for k in ("a", "b")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert seen == [["a", "b"]]
    assert results == {"a": "a", "b": "b"}
    assert pool.keys() == []


def test_pools_are_independent():
    pulls, pushes = Pool("pull"), Pool("push")
    transfer = Transfer()
    t = threading.Thread(target=pulls.run, args=("k", transfer))
    t.start()
    assert transfer.started.wait(TIMEOUT)
    assert pulls.in_progress("k")
    assert not pushes.in_progress("k")
    assert pushes.run("k", lambda: "pushed") == "pushed"
    transfer.release.set()
    t.join(TIMEOUT)
    assert not pulls.in_progress("k")


def test_acquire_and_release():
    pool = Pool("pull")
    first, call = pool.acquire("k")
    assert first and isinstance(call, Call)
    again, same = pool.acquire("k")
    assert not again and same is call
    assert not call.done()
    with pytest.raises(TimeoutError):
        same.wait(timeout=0.01)
    pool.release(call, result="r")
    assert call.done()
    assert same.wait() == "r"
    assert not pool.in_progress("k")
    first, fresh = pool.acquire("k")
    assert first and fresh is not call
    pool.release(fresh, error=ValueError("x"))
    with pytest.raises(ValueError):
        fresh.wait()
    # Releasing an old call never drops a newer transfer of the same key.
    _, newer = pool.acquire("k")
    pool.release(call, result="late")
    assert pool.in_progress("k")
    pool.release(newer)
    assert not pool.in_progress("k")


def test_on_wait_is_not_called_for_the_first_caller():
    pool = Pool("pull")
    told = []
    assert pool.run("k", lambda: 1, on_wait=lambda: told.append(1)) == 1
    assert told == []
