"""Docker's masked and read-only paths (moby ``daemon/pkg/oci/defaults.go``, 2025).

An unprivileged container sees the *masked* paths empty (a file gets
/dev/null bound over it, a directory an empty read-only tmpfs): they leak
the host's state (``/proc/kcore``, ``/proc/keys``, ``/proc/timer_list``,
the per-CPU thermal-throttle counters of GHSA-6fw5-f8r9-fgfm, the power
meters of GHSA-jq35-85cj-fj4p) or hand out kernel interfaces. The
*read-only* paths are bound read-only, since a write there changes the
host's kernel (``/proc/sys``, ``/proc/sysrq-trigger``). ``--privileged``
and ``--security-opt systempaths=unconfined`` (which the CLI sends as empty
``MaskedPaths`` and ``ReadonlyPaths``) lift both.
"""

from __future__ import annotations

import functools
import os

__all__ = ["DEFAULT_MASKED_PATHS", "DEFAULT_READONLY_PATHS", "default_masked_paths", "possible_cpus"]

DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
)

DEFAULT_READONLY_PATHS: tuple[str, ...] = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def possible_cpus(path: str = "/sys/devices/system/cpu/possible") -> list[int]:
    """The CPUs the kernel may ever bring up (``0-3,8``), as numbers."""
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except OSError:
        return []
    cpus: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        try:
            cpus.extend(range(int(first), int(last or first) + 1))
        except ValueError:
            return []
    return cpus


@functools.lru_cache(maxsize=1)
def default_masked_paths() -> tuple[str, ...]:
    """The default list plus each CPU's ``thermal_throttle`` directory this host has (computed once)."""
    extra = []
    for cpu in possible_cpus():
        path = f"/sys/devices/system/cpu/cpu{cpu}/thermal_throttle"
        if os.path.exists(path):
            extra.append(path)
    return DEFAULT_MASKED_PATHS + tuple(extra)
