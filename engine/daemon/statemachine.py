"""The life-cycle state machine of one container (issue 18).

Every container has one :class:`Machine`, held under the container's
``lock``: its :class:`Phase`, the transitions allowed between phases, and
the *slot*, which one operation (a start, a stop, a restart, a remove, ...)
holds while it works. An operation that arrives while another holds the
slot waits for it, then acts on the state the first one left, so that every
request sees a state that is true: a stop sent while a start is in flight
stops what the start started, instead of answering "not running" while the
container goes on running. Docker's shape is kept: moby holds the
container's lock through ``containerStart``, so its stop waits too.

The phases and their transitions (the table below has every edge)::

                 start                   launched
    created -------------> starting ---------------> running <--unpause-- paused
     |  ^  start failed      |  ^                     | | |  ---pause-->  | |
     |  +--(never ran)-------+  |  policy timer       | | |               | |
     |                       |  +------- restarting <-+ | | exit, and the | |
     |    start failed       |            |   policy  | | restart policy| |
     |    (it had run)       v            |   says so | +---------------+ |
     |                    exited <--------+           |                   |
     |                     | ^  ^ stop, kill, rm -f   | stop, rm -f       |
     |                     | |  +------exit-------- stopping <------------+
     |                     | +---exit of running or paused (no restart)
     |                rm   v
     +--------------> removing ----done----> removed
                        |  ^
                 failed v  | rm
                       dead

The same, edge by edge (:data:`TRANSITIONS`):

============  ==================================================================
from          to (by what)
============  ==================================================================
created       starting (start), removing (rm)
starting      running (the shim runs it), created or exited (the launch failed)
running       paused (pause), stopping (stop; rm -f), exited (its exit),
              restarting (its exit, when the restart policy says so)
paused        running (unpause), stopping, exited, restarting (as running)
stopping      exited (its exit), running or paused (it would not go down)
restarting    starting (the policy's timer), exited (stop, kill, rm -f)
exited        starting (start), removing (rm)
removing      removed (done), dead (its file system could not be removed)
dead          removing (rm)
============  ==================================================================

``starting`` and ``stopping`` are transient and held by the operation in the
slot; a failed stop goes back to where it came from. ``restarting`` is the
restart policy's back-off: no operation holds the slot then, and a stop or a
kill ends it. ``removing`` is entered once the container is down; a removal
that fails halfway ends in ``dead`` (as in Docker), from which ``rm`` tries
again.

What the API shows are Docker's seven states (``created``, ``running``,
``paused``, ``restarting``, ``removing``, ``exited``, ``dead``), read from
the :class:`~engine.daemon.container.State` flags; each transition sets those
flags (:func:`project`), and the transient phases leave them as they were,
so a container being started still shows as created (or exited) and one
being stopped as running, as in Docker. Since the flags are persisted,
:func:`phase_of` finds the phase again after a daemon restart.

An exit is an event, not an operation: the shim's death is recorded at once
(``running``, ``paused`` or ``stopping`` to ``exited`` or ``restarting``),
whoever holds the slot, because that operation may be waiting for it.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from engine.errors import ShuttingDown

if TYPE_CHECKING:
    from engine.daemon.container import State

LOG = logging.getLogger(__name__)


class Phase(enum.Enum):
    """Where a container is in its life."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    RESTARTING = "restarting"
    EXITED = "exited"
    REMOVING = "removing"
    DEAD = "dead"
    REMOVED = "removed"


#: The transitions a container may take.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.CREATED: frozenset({Phase.STARTING, Phase.REMOVING}),
    Phase.STARTING: frozenset({Phase.RUNNING, Phase.CREATED, Phase.EXITED}),
    Phase.RUNNING: frozenset({Phase.PAUSED, Phase.STOPPING, Phase.EXITED, Phase.RESTARTING}),
    Phase.PAUSED: frozenset({Phase.RUNNING, Phase.STOPPING, Phase.EXITED, Phase.RESTARTING}),
    Phase.STOPPING: frozenset({Phase.EXITED, Phase.RESTARTING, Phase.RUNNING, Phase.PAUSED}),
    Phase.RESTARTING: frozenset({Phase.STARTING, Phase.EXITED}),
    Phase.EXITED: frozenset({Phase.STARTING, Phase.REMOVING}),
    Phase.REMOVING: frozenset({Phase.REMOVED, Phase.DEAD}),
    Phase.DEAD: frozenset({Phase.REMOVING}),
    Phase.REMOVED: frozenset(),
}

#: Phases whose process runs (an exit can end them).
UP = frozenset({Phase.RUNNING, Phase.PAUSED, Phase.STOPPING})
#: Phases an operation in the slot passes through and must leave.
TRANSIENT = frozenset({Phase.STARTING, Phase.STOPPING})


class IllegalTransition(RuntimeError):
    """A transition the table does not allow: a bug in the caller, never a user's error."""


def phase_of(state: State) -> Phase:
    """The phase a persisted :class:`~engine.daemon.container.State` stands for (daemon start-up)."""
    if state.running:
        if state.paused:
            return Phase.PAUSED
        if state.restarting:
            return Phase.RESTARTING
        return Phase.RUNNING
    if state.removal_in_progress:
        return Phase.REMOVING
    if state.dead:
        return Phase.DEAD
    if state.started_at == 0:
        return Phase.CREATED
    return Phase.EXITED


def project(phase: Phase, state: State) -> None:
    """Set Docker's flags of ``state`` for ``phase`` (the transient phases leave them)."""
    if phase in TRANSIENT or phase is Phase.REMOVED:
        return
    up = phase in (Phase.RUNNING, Phase.PAUSED, Phase.RESTARTING)
    state.running = up
    state.paused = phase is Phase.PAUSED
    state.restarting = phase is Phase.RESTARTING
    state.removal_in_progress = phase is Phase.REMOVING
    state.dead = phase is Phase.DEAD


class Machine:
    """The phase and the operation slot of one container.

    :param state: the container's State (its flags follow the phase).
    :param changed: the container's condition (over its ``lock``): every
        transition and every release of the slot notifies it.
    """

    def __init__(self, state: State, changed: threading.Condition) -> None:
        self.state = state
        self.changed = changed
        self.phase = phase_of(state)
        #: The operation holding the slot (``"start"``, ``"stop"``, ...), or None.
        self.op: str | None = None
        #: How many operations wait for the slot.
        self.waiting = 0
        self._holder: int | None = None

    def __repr__(self) -> str:
        return f"<Machine {self.phase.value} op={self.op} waiting={self.waiting}>"

    # transitions (the caller holds the container's lock)
    def can(self, to: Phase) -> bool:
        """Whether the table allows going from the current phase to ``to``."""
        return to in TRANSITIONS[self.phase]

    def move(self, to: Phase) -> Phase:
        """Go to ``to``, set the State's flags and wake the waiters; the phase left.

        :raises IllegalTransition: the table has no such transition.
        """
        if to is self.phase:
            return to
        if not self.can(to):
            raise IllegalTransition(f"{self.phase.value} -> {to.value}")
        before, self.phase = self.phase, to
        project(to, self.state)
        self.changed.notify_all()
        return before

    def reset(self, to: Phase) -> None:
        """Set the phase without the table's check: restore at daemon start only."""
        self.phase = to
        project(to, self.state)
        self.changed.notify_all()

    # the slot
    def busy(self, ops: frozenset[str] | None = None) -> bool:
        """Whether an operation (one of ``ops``, or any) holds the slot."""
        return self.op is not None and (ops is None or self.op in ops)

    def wait_idle(
        self,
        ops: frozenset[str] | None = None,
        timeout: float | None = None,
        abort: Callable[[], bool] | None = None,
    ) -> bool:
        """Block (the caller holds the lock) while an operation of ``ops`` (any) holds the slot.

        :returns: False on timeout or when ``abort()`` became true.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.busy(ops) and self._holder != threading.get_ident():
            if abort is not None and abort():
                return False
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self.changed.wait(0.5 if left is None else min(left, 0.5))
        return True

    @contextlib.contextmanager
    def operation(self, name: str, abort: Callable[[], bool] | None = None) -> Iterator[None]:
        """Hold the slot for operation ``name``, waiting for the one that holds it.

        The lock is not held inside (only the slot is); on the way out a
        transient phase the operation left behind (it failed midway) falls
        back to the phase the flags say, and the waiters are woken.

        :param abort: checked while waiting; when it becomes true the wait
            ends with :class:`~engine.errors.ShuttingDown` (the daemon shuts down).
        """
        me = threading.get_ident()
        with self.changed:
            if self._holder == me:  # nested (a restart's stop and start): the slot is ours
                yield
                return
            self.waiting += 1
            try:
                idle = self.wait_idle(abort=abort)
            finally:
                self.waiting -= 1
            if not idle:
                raise ShuttingDown()
            self.op, self._holder = name, me
        try:
            yield
        finally:
            with self.changed:
                if self.phase in TRANSIENT:
                    settled = phase_of(self.state)
                    LOG.debug("%s left the container %s; back to %s", name, self.phase.value, settled.value)
                    self.phase = settled
                self.op, self._holder = None, None
                self.changed.notify_all()
