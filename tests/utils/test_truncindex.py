"""Tests for :mod:`engine.utils.truncindex`."""

from __future__ import annotations

import random
import threading
import time

import pytest

from engine.errors import Conflict, InvalidParameter, NotFound
from engine.utils.truncindex import AmbiguousPrefix, TruncIndex

ID_A = "c35c0961174d51035d6e374ed9815398b779296b5f0ffceb7613c8199383f4b1"
ID_B = "c35c99aa174d51035d6e374ed9815398b779296b5f0ffceb7613c8199383f4b1"
ID_C = "7a1b0961174d51035d6e374ed9815398b779296b5f0ffceb7613c8199383f4b1"


def random_ids(rng: random.Random, count: int) -> list[str]:
    ids: set[str] = set()
    while len(ids) < count:
        ids.add(f"{rng.getrandbits(256):064x}")
    return sorted(ids)


def test_get_by_unique_prefix() -> None:
    index = TruncIndex([ID_A, ID_C])
    assert index.get("c") == ID_A
    assert index.get("c35") == ID_A
    assert index.get("7a1b") == ID_C
    assert index.get(ID_A) == ID_A


def test_get_errors() -> None:
    index = TruncIndex([ID_A, ID_B])
    with pytest.raises(NotFound) as missing:
        index.get("dead")
    assert str(missing.value) == "no such id: dead"
    with pytest.raises(NotFound) as empty:
        index.get("")
    assert str(empty.value) == "no such id: "
    with pytest.raises(AmbiguousPrefix) as ambiguous:
        index.get("c35c")
    assert str(ambiguous.value) == "multiple IDs found with provided prefix: c35c"
    assert isinstance(ambiguous.value, InvalidParameter)
    assert index.get("c35c0") == ID_A
    assert index.get("c35c9") == ID_B
    # A prefix past the last id, and one between two ids.
    with pytest.raises(NotFound):
        index.get("ffff")
    with pytest.raises(NotFound):
        index.get("c35d")


def test_get_on_empty_index() -> None:
    with pytest.raises(NotFound):
        TruncIndex().get("a")


def test_exact_id_wins_over_longer_ids() -> None:
    index = TruncIndex(["abc", "abcd", "abce"])
    assert index.get("abc") == "abc"
    with pytest.raises(AmbiguousPrefix):
        index.get("ab")


def test_add_validates() -> None:
    index = TruncIndex()
    with pytest.raises(InvalidParameter):
        index.add("")
    with pytest.raises(InvalidParameter):
        index.add("has space")
    with pytest.raises(InvalidParameter):
        index.add("tab\there")
    index.add(ID_A)
    with pytest.raises(Conflict):
        index.add(ID_A)
    assert len(index) == 1


def test_constructor_validates() -> None:
    with pytest.raises(Conflict):
        TruncIndex([ID_A, ID_A])
    with pytest.raises(InvalidParameter):
        TruncIndex([ID_A, "bad id"])


def test_delete() -> None:
    index = TruncIndex([ID_A, ID_B])
    index.delete(ID_A)
    assert index.get("c35c") == ID_B
    assert ID_A not in index
    with pytest.raises(NotFound):
        index.get("c35c0")
    with pytest.raises(NotFound):
        index.delete(ID_A)
    # Deleting takes the full id, never a prefix.
    with pytest.raises(NotFound):
        index.delete("c35c9")
    with pytest.raises(NotFound):
        index.delete("")
    assert len(index) == 1


def test_iterate_len_contains() -> None:
    index = TruncIndex([ID_B, ID_C])
    index.add(ID_A)
    assert list(index.iterate()) == [ID_C, ID_A, ID_B]
    assert list(index) == [ID_C, ID_A, ID_B]
    assert len(index) == 3
    assert ID_A in index
    assert "c35" not in index
    assert 42 not in index


def test_iterate_is_a_snapshot() -> None:
    index = TruncIndex([ID_A, ID_B, ID_C])
    for id_ in index:
        index.delete(id_)
    assert len(index) == 0
    assert list(index) == []


def test_threads_add_and_delete() -> None:
    index = TruncIndex()
    errors: list[BaseException] = []
    per_thread = 500

    def worker(n: int) -> None:
        try:
            ids = random_ids(random.Random(n), per_thread)
            for id_ in ids:
                index.add(id_)
            for id_ in ids:
                assert index.get(id_) == id_
            for id_ in ids[::2]:
                index.delete(id_)
        except BaseException as exc:  # collected, so that every failure shows
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    expected = sorted({id_ for n in range(16) for id_ in random_ids(random.Random(n), per_thread)[1::2]})
    assert list(index) == expected
    assert len(index) == len(expected)


def test_ten_thousand_lookups(capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(1)
    ids = random_ids(rng, 10_000)
    index = TruncIndex()
    for id_ in rng.sample(ids, len(ids)):
        index.add(id_)
    queries = [rng.choice(ids) for _ in range(10_000)]

    started = time.perf_counter()
    # Docker's short form: the first 12 characters; unique among 10,000
    # random ids for this seed (a clash has odds of about 1 in 5 million).
    found = [index.get(id_[:12]) for id_ in queries]
    elapsed = time.perf_counter() - started

    assert found == queries
    with capsys.disabled():
        print(f"\n10,000 TruncIndex lookups among 10,000 ids: {elapsed * 1000:.1f} ms")
