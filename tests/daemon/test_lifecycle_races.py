"""Operations that meet on one container, over the life cycle's state machine
(real stores, the test doubles of :mod:`tests.daemon.fakes`).

Each test holds one operation in flight at a known point (the fake
launcher's gate for a start, a gate on the monitor's exit handler for an
exit not yet recorded), sends another, lets the first go on and checks
where the container ends: what the last request asked for.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest

from engine.daemon.statemachine import Phase
from engine.errors import NoSuchContainer
from engine.testing.procs import wait_for
from tests.daemon.fakes import Rig, layers_of


class Call:
    """``fn(*args)`` in a thread of its own; its result or its exception."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        try:
            self.result = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the test
            self.error = exc

    def join(self) -> Any:
        self.thread.join(30)
        assert not self.thread.is_alive(), "the call hangs"
        if self.error is not None:
            raise self.error
        return self.result


def start_in_flight(rig: Rig, c: Any, fn: Callable[..., Any] | None = None, *args: Any) -> tuple[Call, threading.Event]:
    """Begin ``fn`` (a start by default) and hold it inside the launcher; the call and the gate to open."""
    gate = threading.Event()
    rig.launcher.gate = gate
    rig.launcher.entered.clear()
    call = Call(fn or rig.lifecycle.start, c, *args)
    assert rig.launcher.entered.wait(30)
    return call, gate


def waiting_for_the_slot(c: Any, n: int = 1) -> None:
    wait_for(lambda: c.machine.waiting == n, what=f"{n} operation(s) waiting for the slot")


class HeldExits:
    """Holds the monitor's exit handler: an exit is seen but not recorded until :meth:`release`."""

    def __init__(self, rig: Rig) -> None:
        self.monitor = rig.lifecycle.monitor
        self.handler = self.monitor.on_exit
        self.gate = threading.Event()
        self.seen = threading.Event()
        self.monitor.on_exit = self._held

    def _held(self, c: Any) -> None:
        self.seen.set()
        self.gate.wait(30)
        self.handler(c)

    def release(self) -> None:
        self.gate.set()
        self.monitor.on_exit = self.handler


def test_a_stop_sent_during_a_start_waits_for_it_and_stops(rig: Rig):
    c = rig.create()
    start, gate = start_in_flight(rig, c)
    assert c.machine.phase is Phase.STARTING and c.state.status == "created"
    stop = Call(rig.lifecycle.stop, c, 10)
    waiting_for_the_slot(c)
    gate.set()
    assert start.join() is True
    stop.join()  # not NotModified: it stopped what the start started
    assert c.state.status == "exited" and c.state.exit_code == 128 + signal.SIGTERM
    assert rig.driver.stand_ins == {}


def test_a_kill_sent_during_a_start_waits_for_it_and_kills(rig: Rig):
    c = rig.create()
    start, gate = start_in_flight(rig, c)
    kill = Call(rig.lifecycle.kill, c, signal.SIGKILL)
    waiting_for_the_slot(c)
    gate.set()
    start.join()
    kill.join()
    assert c.state.status == "exited" and c.state.exit_code == 137


def test_a_wait_during_a_start_does_not_answer_before_the_start_decides(rig: Rig):
    c = rig.create()
    start, gate = start_in_flight(rig, c)
    assert rig.lifecycle.wait(c, "not-running", timeout=0) is False
    gate.set()
    start.join()
    assert rig.lifecycle.wait(c, "not-running", timeout=0) is False  # it runs
    rig.driver.exit(c.id, 4)
    assert rig.lifecycle.wait(c, "not-running", timeout=10) and c.state.exit_code == 4


def test_a_restart_is_one_operation(rig: Rig):
    """A kill sent while a restart is between its stop and its start kills the new process."""
    c = rig.create()
    rig.lifecycle.start(c)
    restart, gate = start_in_flight(rig, c, rig.lifecycle.restart, 10)
    assert c.state.status == "exited"  # stopped, not yet started again
    kill = Call(rig.lifecycle.kill, c, signal.SIGKILL)
    waiting_for_the_slot(c)
    gate.set()
    restart.join()
    kill.join()
    assert c.state.status == "exited" and c.state.exit_code == 137
    assert len(rig.launcher.specs) == 2


def test_rm_f_of_a_container_whose_exit_is_not_yet_recorded(rig: Rig):
    """The process is gone (the driver's kill says NotFound) but the exit is still being processed:
    the removal waits for it instead of stopping halfway, ``Removal In Progress`` for good."""
    c = rig.create("quick")
    rig.lifecycle.start(c)
    held = HeldExits(rig)
    rig.driver.exit(c.id, 1)
    assert held.seen.wait(30)
    assert c.state.running  # not recorded yet
    remove = Call(rig.lifecycle.remove, c, True, True)
    wait_for(lambda: c.machine.op == "remove", what="the removal")
    held.release()
    remove.join()
    assert c.removed and layers_of(rig, c.id) == []
    with pytest.raises(NoSuchContainer):
        rig.store.get("quick")
    assert rig.create("quick").name == "/quick"


def test_a_sigkill_returns_once_the_exit_is_recorded(rig: Rig):
    c = rig.create()
    rig.lifecycle.start(c)
    held = HeldExits(rig)
    kill = Call(rig.lifecycle.kill, c, signal.SIGKILL)
    assert held.seen.wait(30)
    assert c.state.running and kill.thread.is_alive()
    held.release()
    kill.join()
    assert not c.state.running and c.state.status == "exited"


def test_a_remove_waits_for_a_stop(rig: Rig):
    rig.driver.ignored.add(signal.SIGTERM)
    c = rig.create()
    rig.lifecycle.start(c)
    stop = Call(rig.lifecycle.stop, c, -1)  # no SIGKILL: it waits until the container exits
    wait_for(lambda: c.machine.phase is Phase.STOPPING, what="the stop")
    remove = Call(rig.lifecycle.remove, c)
    waiting_for_the_slot(c)
    rig.driver.exit(c.id, 0)  # the container gives in
    stop.join()
    remove.join()
    assert c.removed


def test_rm_f_kills_at_once_what_a_stop_waits_for(rig: Rig):
    rig.driver.ignored.add(signal.SIGTERM)
    c = rig.create()
    rig.lifecycle.start(c)
    stop = Call(rig.lifecycle.stop, c, -1)
    wait_for(lambda: c.machine.phase is Phase.STOPPING, what="the stop")
    rig.lifecycle.remove(c, force=True)
    stop.join()
    assert c.removed
    assert [sig for call, _, sig in rig.driver.calls if call == "kill"] == [signal.SIGTERM, signal.SIGKILL]


def test_a_kill_hastens_a_stop(rig: Rig):
    rig.driver.ignored.add(signal.SIGTERM)
    c = rig.create()
    rig.lifecycle.start(c)
    stop = Call(rig.lifecycle.stop, c, -1)
    wait_for(lambda: c.machine.phase is Phase.STOPPING, what="the stop")
    rig.lifecycle.kill(c, signal.SIGKILL)
    stop.join()
    assert c.state.status == "exited" and c.state.exit_code == 137


def test_a_stop_during_a_policy_restart_ends_the_restarts(rig: Rig):
    c = rig.create(RestartPolicy={"Name": "always"})
    rig.lifecycle.start(c)
    gate = threading.Event()
    rig.launcher.gate = gate
    rig.launcher.entered.clear()
    rig.driver.exit(c.id, 0)  # the policy starts it again after 100 ms
    assert rig.launcher.entered.wait(30)
    assert c.state.status == "restarting"
    stop = Call(rig.lifecycle.stop, c, 10)
    waiting_for_the_slot(c)
    gate.set()
    stop.join()
    assert c.state.status == "exited" and len(rig.launcher.specs) == 2
    assert c.restart_count == 1


def test_many_operations_at_once_end_in_a_true_state(rig: Rig):
    """Starts, stops, kills, restarts, pauses and unpauses from several threads: each answers,
    and the container ends in a state its record and its process agree on."""
    c = rig.create()
    lc = rig.lifecycle
    ops = [lc.start, lc.stop, lc.restart, lc.pause, lc.unpause, lambda c: lc.kill(c, signal.SIGKILL)] * 4
    calls = [Call(op, c) for op in ops]
    for call in calls:
        call.thread.join(60)
        assert not call.thread.is_alive()
        assert call.error is None or type(call.error).__name__ in ("Conflict", "NotModified"), call.error
    assert not c.machine.busy() and c.machine.phase in (Phase.RUNNING, Phase.PAUSED, Phase.EXITED)
    assert (c.id in rig.driver.stand_ins) == c.state.running
