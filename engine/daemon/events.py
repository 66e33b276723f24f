"""The event bus behind ``GET /events`` (seed ch. 3 §5.4.3, moby ``daemon/events``).

Every event is kept in a bounded history (for ``since``) and handed to every
live subscriber. Events carry both the old fields (``status``, ``id``,
``from``) and the new ones (``Type``, ``Action``, ``Actor``), as API 1.41
clients expect both.
"""

from __future__ import annotations

import collections
import fnmatch
import queue
import threading
import time
from collections.abc import Iterable
from typing import Any

#: Events kept for ``since`` (moby keeps 256; we keep more, they are small).
HISTORY = 1024


def make_event(
    type_: str, action: str, actor_id: str, attributes: dict | None = None, now: float | None = None
) -> dict:
    """One message in the 1.41 shape."""
    now = time.time() if now is None else now
    attrs = {k: str(v) for k, v in (attributes or {}).items()}
    event: dict[str, Any] = {}
    if type_ == "container":
        event.update(status=action, id=actor_id, **({"from": attrs["image"]} if "image" in attrs else {}))
    elif type_ == "image":
        event.update(status=action, id=actor_id)
    event.update(
        {
            "Type": type_,
            "Action": action,
            "Actor": {"ID": actor_id, "Attributes": attrs},
            "scope": "local",
            "time": int(now),
            "timeNano": int(now * 1e9),
        }
    )
    return event


def matches(event: dict, filters: dict[str, list[str]]) -> bool:
    """moby's event filters: type, event (action), container, image, label,
    volume, network, daemon; values of one key are OR-ed, keys AND-ed."""
    attrs = event["Actor"]["Attributes"]
    actor = event["Actor"]["ID"]
    for key, values in filters.items():
        if not values:
            continue
        if key == "type":
            ok = event["Type"] in values
        elif key == "event":
            action = event["Action"].split(":", 1)[0]
            ok = action in values or event["Action"] in values
        elif key in ("container", "volume", "network", "daemon"):
            ok = event["Type"] == key and any(actor.startswith(v) or attrs.get("name") == v for v in values)
        elif key == "image":
            image = attrs.get("image", actor if event["Type"] == "image" else "")
            name = attrs.get("name", "")
            ok = any(
                v in (image, name, actor) or image.startswith(v) or (":" not in v and image.split(":", 1)[0] == v)
                for v in values
            )
        elif key == "label":
            ok = any(attrs.get(v.partition("=")[0]) == v.partition("=")[2] if "=" in v else v in attrs for v in values)
        elif key == "scope":
            ok = "local" in values
        else:
            ok = any(fnmatch.fnmatchcase(str(attrs.get(key, "")), v) for v in values)
        if not ok:
            return False
    return True


class Subscription:
    """A subscriber's queue; iterate with :meth:`get`."""

    def __init__(self, bus: Events) -> None:
        self._bus = bus
        self.queue: queue.Queue[dict] = queue.Queue()

    def get(self, timeout: float | None = None) -> dict | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._bus.unsubscribe(self)


class Events:
    """History plus fan-out of daemon events."""

    def __init__(self, history: int = HISTORY) -> None:
        self._history: collections.deque[dict] = collections.deque(maxlen=history)
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()

    def log(self, type_: str, action: str, actor_id: str, attributes: dict | None = None) -> dict:
        event = make_event(type_, action, actor_id, attributes)
        with self._lock:
            self._history.append(event)
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub.queue.put(event)
        return event

    def subscribe(self) -> Subscription:
        sub = Subscription(self)
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    def past(self, since: float | None, until: float | None = None) -> Iterable[dict]:
        with self._lock:
            events = list(self._history)
        for event in events:
            ts = event["timeNano"] / 1e9
            if since is not None and ts < since:
                continue
            if until is not None and ts > until:
                continue
            yield event

    def listener_count(self) -> int:
        return len(self._subscribers)
