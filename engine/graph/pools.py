"""The pulling and pushing pools: one transfer per image at a time (seed ch. 10 §6.1).

Docker 1.2's ``TagStore`` keeps a ``pullingPool`` and a ``pushingPool``: the
first client to pull an image registers it, and a second client asking for
the same image while it is being pulled does not start another download; it
prints "Repository ... already being pulled by another client. Waiting." and
waits for the first to finish. :class:`Pool` is that record: the first caller
for a key runs the transfer, later callers for the same key block until it
ends and then get its result, or its exception raised again. The key is
released when the transfer ends, so the next request starts afresh.

The daemon owns one pool for pulls and one for pushes; keys are the fully
qualified reference being transferred (``docker.io/library/busybox:latest``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

LOG = logging.getLogger(__name__)

T = TypeVar("T")


class Call(Generic[T]):
    """One transfer in a pool: the first caller fills it in, the others wait on it.

    Like a :class:`concurrent.futures.Future` that cannot be cancelled:
    a waiter giving up must not stop the transfer the first caller runs.

    :param key: the pool key the transfer runs under.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self._done = threading.Event()
        self._result: T | None = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        """Whether the transfer has ended."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> T:
        """Block until the transfer ends; return its result or raise its exception.

        Every waiter raises the same exception object, as
        :meth:`concurrent.futures.Future.result` does.

        :param timeout: seconds to wait at most; None waits for ever.
        :raises TimeoutError: if ``timeout`` passes first (the transfer goes on).
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self.key} is still in progress")
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]

    def _finish(self, result: T | None, error: BaseException | None) -> None:
        self._result, self._error = result, error
        self._done.set()


class Pool:
    """Keys with a transfer in progress; concurrent callers for one key share one run.

    :param name: what the pool transfers (``pull``, ``push``), for logs.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._calls: dict[str, Call[Any]] = {}

    def acquire(self, key: str) -> tuple[bool, Call[Any]]:
        """Join the transfer of ``key``, starting it if there is none.

        :returns: ``(True, call)`` for the first caller, which must run the
            transfer and then :meth:`release` ``call`` whatever happens;
            ``(False, call)`` for the others, which :meth:`Call.wait` on it.
        """
        with self._lock:
            call = self._calls.get(key)
            if call is not None:
                return False, call
            call = self._calls[key] = Call(key)
            return True, call

    def release(self, call: Call[T], result: T | None = None, error: BaseException | None = None) -> None:
        """End the transfer of ``call``: forget its key, then wake its waiters.

        The key goes first, so a caller arriving after the transfer ended
        starts a new one instead of getting an old result.

        :param result: what waiters get back.
        :param error: what waiters raise instead, when the transfer failed.
        """
        with self._lock:
            if self._calls.get(call.key) is call:
                del self._calls[call.key]
        call._finish(result, error)

    def run(self, key: str, fn: Callable[[], T], on_wait: Callable[[], None] | None = None) -> T:
        """Run ``fn`` for ``key`` unless it is already running; then share the outcome.

        :param fn: the transfer; called by the first caller only.
        :param on_wait: called (before blocking) by a caller that found the
            transfer in progress, to tell its client it is waiting.
        :returns: ``fn``'s result, for the first caller and every waiter.
        :raises BaseException: whatever ``fn`` raised, for every caller.
        """
        first, call = self.acquire(key)
        if not first:
            LOG.info("%s %s already in progress; waiting for it", self.name, key)
            if on_wait is not None:
                on_wait()
            return call.wait()
        LOG.debug("%s %s started", self.name, key)
        try:
            result = fn()
        except BaseException as exc:
            LOG.debug("%s %s failed: %s", self.name, key, exc)
            self.release(call, error=exc)
            raise
        LOG.debug("%s %s done", self.name, key)
        self.release(call, result=result)
        return result

    def in_progress(self, key: str) -> bool:
        """Whether a transfer of ``key`` is running now."""
        with self._lock:
            return key in self._calls

    def keys(self) -> list[str]:
        """The keys with a transfer running now, sorted."""
        with self._lock:
            return sorted(self._calls)
