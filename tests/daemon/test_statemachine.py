"""The life-cycle state machine on its own: the transition table, Docker's
flags for each phase, the phase a persisted state stands for, and the slot."""

from __future__ import annotations

import threading

import pytest

from engine.daemon.container import State
from engine.daemon.statemachine import (
    TRANSIENT,
    TRANSITIONS,
    UP,
    IllegalTransition,
    Machine,
    Phase,
    phase_of,
    project,
)
from engine.errors import ShuttingDown


def machine(state: State | None = None) -> Machine:
    return Machine(state or State(), threading.Condition(threading.RLock()))


def test_every_phase_is_in_the_table_and_removed_is_the_end():
    assert set(TRANSITIONS) == set(Phase)
    assert TRANSITIONS[Phase.REMOVED] == frozenset()
    for phase, targets in TRANSITIONS.items():
        assert phase not in targets, phase
    # Every phase can be reached (created again by a start that failed).
    assert set().union(*TRANSITIONS.values()) == set(Phase)


@pytest.mark.parametrize(
    ("path"),
    [
        # docker run, docker stop
        [Phase.STARTING, Phase.RUNNING, Phase.STOPPING, Phase.EXITED],
        # a restart policy: exit, back-off, start again; a stop during the back-off
        [
            Phase.STARTING,
            Phase.RUNNING,
            Phase.RESTARTING,
            Phase.STARTING,
            Phase.RUNNING,
            Phase.RESTARTING,
            Phase.EXITED,
        ],
        # pause, unpause, an exit while paused (an OOM kill)
        [Phase.STARTING, Phase.RUNNING, Phase.PAUSED, Phase.RUNNING, Phase.PAUSED, Phase.EXITED],
        # rm -f of a running container
        [Phase.STARTING, Phase.RUNNING, Phase.STOPPING, Phase.EXITED, Phase.REMOVING, Phase.REMOVED],
        # a failed start, a removal that failed, rm again
        [Phase.STARTING, Phase.CREATED, Phase.REMOVING, Phase.DEAD, Phase.REMOVING, Phase.REMOVED],
        # a stop that could not bring it down goes back
        [Phase.STARTING, Phase.RUNNING, Phase.STOPPING, Phase.RUNNING],
    ],
)
def test_docker_s_paths_are_allowed(path):
    m = machine()
    with m.changed:
        for phase in path:
            m.move(phase)
    assert m.phase is path[-1]


@pytest.mark.parametrize(
    ("start", "to"),
    [
        (Phase.CREATED, Phase.RUNNING),  # only through a start
        (Phase.EXITED, Phase.PAUSED),  # a pause after the exit
        (Phase.RUNNING, Phase.REMOVING),  # a removal waits until it is down
        (Phase.RESTARTING, Phase.PAUSED),
        (Phase.REMOVED, Phase.STARTING),
        (Phase.STARTING, Phase.STOPPING),  # a stop waits for the start
    ],
)
def test_other_transitions_are_refused(start, to):
    m = machine()
    with m.changed:
        m.reset(start)
        with pytest.raises(IllegalTransition, match=f"{start.value} -> {to.value}"):
            m.move(to)
    assert m.phase is start


@pytest.mark.parametrize(
    ("phase", "status"),
    [
        (Phase.RUNNING, "running"),
        (Phase.PAUSED, "paused"),
        (Phase.RESTARTING, "restarting"),
        (Phase.REMOVING, "removing"),
        (Phase.DEAD, "dead"),
    ],
)
def test_each_stable_phase_shows_as_docker_s_state_and_is_found_again(phase, status):
    state = State(started_at=1.0)
    project(phase, state)
    assert state.status == status
    assert phase_of(state) is phase


def test_created_and_exited_differ_by_a_start():
    created, exited = State(), State(started_at=1.0)
    project(Phase.CREATED, created)
    project(Phase.EXITED, exited)
    assert (created.status, exited.status) == ("created", "exited")
    assert phase_of(created) is Phase.CREATED and phase_of(exited) is Phase.EXITED


@pytest.mark.parametrize("phase", sorted(TRANSIENT, key=lambda p: p.value))
def test_transient_phases_leave_the_flags_as_they_were(phase):
    """A container being started still shows as created, one being stopped as running."""
    state = State(running=True, started_at=1.0)
    project(phase, state)
    assert state.status == "running"
    assert {Phase.STOPPING} <= UP and Phase.STARTING not in UP


def test_moves_wake_the_waiters():
    m = machine()
    seen = []

    def waiter():
        with m.changed:
            while m.phase is not Phase.RUNNING:
                m.changed.wait(5)
            seen.append(m.phase)

    t = threading.Thread(target=waiter)
    t.start()
    with m.changed:
        m.move(Phase.STARTING)
        m.move(Phase.RUNNING)
    t.join(10)
    assert seen == [Phase.RUNNING]


def test_an_operation_waits_for_the_one_in_the_slot():
    m = machine()
    order = []
    inside = threading.Event()
    release = threading.Event()

    def first():
        with m.operation("start"):
            inside.set()
            release.wait(10)
            order.append("start")

    def second():
        inside.wait(10)
        with m.operation("stop"):
            order.append("stop")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    inside.wait(10)
    with m.changed:
        assert m.busy() and m.busy(frozenset({"start"})) and not m.busy(frozenset({"stop"}))
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["start", "stop"] and not m.busy()


def test_an_operation_left_transient_falls_back_to_what_the_flags_say():
    m = machine(State(started_at=1.0))  # exited
    with pytest.raises(RuntimeError, match="launch failed"), m.operation("start"):
        with m.changed:
            m.move(Phase.STARTING)
        raise RuntimeError("launch failed")
    assert m.phase is Phase.EXITED and not m.busy()


def test_the_slot_is_reentrant_for_its_holder_and_a_wait_can_be_aborted():
    m = machine()
    with m.operation("restart"):
        with m.operation("stop"):  # the restart's own stop
            assert m.op == "restart"
        done = []

        def other():
            try:
                with m.operation("kill", abort=lambda: True):
                    done.append("ran")
            except ShuttingDown:
                done.append("aborted")

        t = threading.Thread(target=other)
        t.start()
        t.join(10)
        assert done == ["aborted"]
    assert not m.busy()
