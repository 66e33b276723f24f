"""``GET /containers/{id}/stats``: resource usage from the cgroups, once or every second."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from engine.daemon.container import Container
from engine.errors import EngineError
from engine.utils.timefmt import ZERO_TIME, rfc3339nano

if TYPE_CHECKING:
    from engine.daemon.lifecycle import LifeCycle

INTERVAL = 1.0


def net_stats(pid: int) -> dict:
    """Interface counters as seen inside the container (``/proc/PID/net/dev``)."""
    out: dict[str, dict] = {}
    try:
        with open(f"/proc/{pid}/net/dev", encoding="ascii") as fh:
            lines = fh.read().splitlines()[2:]
    except OSError:
        return out
    for line in lines:
        name, _, rest = line.partition(":")
        name = name.strip()
        if name == "lo":
            continue
        f = [int(x) for x in rest.split()]
        out[name] = {
            "rx_bytes": f[0],
            "rx_packets": f[1],
            "rx_errors": f[2],
            "rx_dropped": f[3],
            "tx_bytes": f[8],
            "tx_packets": f[9],
            "tx_errors": f[10],
            "tx_dropped": f[11],
        }
    return out


def sample(lifecycle: LifeCycle, c: Container) -> dict:
    empty = {
        "read": ZERO_TIME,
        "preread": ZERO_TIME,
        "pids_stats": {},
        "blkio_stats": {},
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
        "memory_stats": {},
        "name": c.name,
        "id": c.id,
    }
    if not c.state.running:
        return empty
    try:
        raw = lifecycle.stats(c)
    except (EngineError, OSError):
        return empty
    doc = dict(empty)
    doc.update(raw)
    doc["read"] = rfc3339nano(time.time())
    doc["name"], doc["id"] = c.name, c.id
    nets = net_stats(c.state.pid)
    if nets:
        doc["networks"] = nets
    return doc


def stream_stats(lifecycle: LifeCycle, c: Container, stream: bool, one_shot: bool, out: Any, stopping: Any) -> None:
    previous = None
    if not stream and not one_shot and c.state.running:
        # Without a previous sample clients cannot compute CPU %.
        previous = sample(lifecycle, c)
        time.sleep(INTERVAL)
    while True:
        current = sample(lifecycle, c)
        if previous is not None:
            current["preread"] = previous["read"]
            current["precpu_stats"] = previous["cpu_stats"]
        else:
            current["precpu_stats"] = {"cpu_usage": {"total_usage": 0}, "throttling_data": {}}
        out.write(json.dumps(current).encode() + b"\n")
        if not stream or out.closed or not c.state.running:
            return
        previous = current
        if stopping.wait(INTERVAL):
            return
