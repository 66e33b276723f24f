"""Who is told that a container's inspect view may have changed.

A container's ``GET /containers/{id}/json`` is a function of the container
alone (:func:`engine.daemon.views.inspect`) and of the daemon's
configuration. Whoever keeps a copy of that view (the API's read replica,
:mod:`engine.server.replica`) subscribes here and hears of every change
*after* it is made and *before* the request that made it is answered:

* every attribute set on a :class:`~engine.daemon.container.Container` or on
  its :class:`~engine.daemon.container.State`;
* every ``to_disk()`` (which follows the in-place changes of its dicts and
  lists);
* the in-place changes nothing persists (``exec_ids``), which call
  :func:`container_changed` themselves;
* ``everything_changed`` for what every view shows (a configuration reload).

Without a subscriber each call is one global read.
"""

from __future__ import annotations

from collections.abc import Callable

#: (one container changed: its ID, everything changed) or None.
_subscriber: tuple[Callable[[str], None], Callable[[], None]] | None = None


def subscribe(container: Callable[[str], None], everything: Callable[[], None]) -> None:
    """Hear of every change from now on (one subscriber; a second replaces the first)."""
    global _subscriber
    _subscriber = (container, everything)


def unsubscribe() -> None:
    global _subscriber
    _subscriber = None


def container_changed(container_id: str | None) -> None:
    sub = _subscriber
    if sub is not None and container_id:
        sub[0](container_id)


def everything_changed() -> None:
    sub = _subscriber
    if sub is not None:
        sub[1]()
