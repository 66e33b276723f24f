"""Where LXC puts a container's cgroups, inside the engine's own cgroup for it.

LXC insists on creating the cgroup its container runs in (``lxc.cgroup.dir.container``
must not exist yet) and removes it when the container stops, while the
engine asks for the OOM killer's count and the limits *after* the container
stopped (:meth:`~engine.drivers.exec.ExecDriver.oom_killed`, ``stats``),
and applies, updates and reads limits through its shared cgroup manager
(:mod:`engine.sys.cgroups`). So the driver makes the engine's cgroup
``<parent>/<id>`` itself, applies the limits and the device allow-list
there, and has LXC make its own payload cgroup *below* it::

    <hierarchy>/<base>/<parent>/<id>/                 the engine's: limits, devices, freezer, stats
    <hierarchy>/<base>/<parent>/<id>/lxc.payload/     LXC's: the container's processes
    <hierarchy>/<base>/<parent>/<id>.lxc/monitor/     LXC's: lxc-start while it runs
    <hierarchy>/<base>/<parent>/<id>.lxc/lxc.pivot/   LXC's: lxc-start while it removes the monitor's

Every v1 limit, the OOM counter, the freezer and the usage figures are
hierarchical, so the engine's directory governs and counts what runs in
LXC's. The monitor is kept outside it: a pause must not freeze lxc-start,
and its memory and PID are not the container's.

LXC's base (``<base>``) is the caller's own cgroup with ``lxc.cgroup.relative = 1``,
else PID 1's (``init.scope`` pruned); :func:`lxc_placement` picks the one
under which the engine's directory lies. LXC also makes these directories
in hierarchies that carry no controller (``name=systemd``, a hybrid host's
v2 mount); :func:`remove_leftovers` removes what it leaves there.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any, NamedTuple

from engine.errors import HostError
from engine.sys import proc
from engine.sys.cgroups import Cgroup, CgroupLayout, read_layout

LOG = logging.getLogger(__name__)

__all__ = ["PAYLOAD", "LxcCgroup", "Placement", "lxc_placement", "remove_leftovers"]

#: LXC's payload cgroup, below the engine's.
PAYLOAD = "lxc.payload"
#: The suffix of the sibling directory that holds LXC's monitor cgroups.
MONITOR_SUFFIX = ".lxc"


def _walk_dirs(path: str) -> list[str]:
    """``path`` and every directory below it, deepest first."""
    found: list[str] = []
    for directory, dirs, _ in os.walk(path, topdown=False):
        found.extend(os.path.join(directory, d) for d in dirs)
    found.sort(key=lambda p: p.count("/"), reverse=True)
    return [*found, path] if os.path.isdir(path) else found


def _rmdir_tree(path: str) -> None:
    for directory in _walk_dirs(path):
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            LOG.warning("cannot remove the cgroup %s: %s", directory, exc.strerror)


class LxcCgroup(Cgroup):
    """The engine's cgroup of one container, whose processes live in LXC's cgroup below it."""

    def pids(self) -> list[int]:
        """Every process in the cgroup and below it (LXC's payload), sorted."""
        found: set[int] = set()
        for path in set(self.paths.values()):
            for directory in _walk_dirs(path):
                try:
                    with open(os.path.join(directory, "cgroup.procs")) as fh:
                        found.update(int(line) for line in fh.read().split())
                except FileNotFoundError:
                    continue
        return sorted(found)

    def let_children_inherit_cpusets(self) -> None:
        """v1: a new child cpuset copies this one's CPUs and memory nodes (``cgroup.clone_children``).

        LXC fills in an empty cpuset only at the first level it creates; its
        payload below ours would otherwise start without CPUs, and nothing
        could join it (ENOSPC).
        """
        path = self.path("cpuset") if self.version == 1 else None
        if path is not None:
            with open(os.path.join(path, "cgroup.clone_children"), "w") as fh:
                fh.write("1")

    def payload_path(self, controller: str) -> str | None:
        """LXC's payload directory for ``controller`` (any on v2)."""
        path = self.path(controller)
        return None if path is None else os.path.join(path, PAYLOAD)

    def payload_freezer_state(self) -> str:
        """``FROZEN``/``THAWED`` of LXC's payload cgroup, which ``lxc-freeze`` freezes."""
        if self.version == 2:
            path = self.payload_path("")
            assert path is not None
            try:
                with open(os.path.join(path, "cgroup.freeze")) as fh:
                    return "FROZEN" if fh.read().strip() == "1" else "THAWED"
            except FileNotFoundError:
                return self.freezer_state()
        path = self.payload_path("freezer")
        if path is None:
            return self.freezer_state()
        try:
            with open(os.path.join(path, "freezer.state")) as fh:
                state = fh.read().strip()
        except FileNotFoundError:
            return self.freezer_state()
        return "FROZEN" if state in ("FROZEN", "FREEZING") else "THAWED"

    def destroy(self, timeout: float = 5.0) -> None:
        """Kill what is left, remove LXC's directories below ours, then ours."""
        if not self.exists():
            return
        self.kill()
        try:
            if self.freezer_state() != "THAWED":
                self.thaw()
        except Exception:  # noqa: BLE001 - best effort; the parent's destroy tells what is left
            pass
        for path in set(self.paths.values()):
            for directory in _walk_dirs(path)[:-1]:
                try:
                    os.rmdir(directory)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise HostError(f"cgroup: removing {directory} failed: {exc.strerror}") from exc
        super().destroy(timeout)


class Hierarchy(NamedTuple):
    """One mounted cgroup hierarchy with this process's and PID 1's cgroup in it."""

    mount_point: str
    root: str
    own: str
    init: str
    managed: bool


def _proc_cgroups(path: str) -> dict[str, str]:
    """``/proc/PID/cgroup`` -> hierarchy key (controllers as listed, ``name=x``, or ``""`` for v2) -> path."""
    found: dict[str, str] = {}
    try:
        with open(path) as fh:
            for line in fh.read().splitlines():
                _, _, rest = line.partition(":")
                key, _, cgroup_path = rest.partition(":")
                found[key] = cgroup_path
    except OSError:
        pass
    return found


def _matches(key: str, fstype: str, options: str) -> bool:
    """Whether the ``/proc/self/cgroup`` key (``cpu,cpuacct``, ``name=systemd``, ``""``) names this mount."""
    if fstype == "cgroup2":
        return key == ""
    return key != "" and set(key.split(",")) <= set(options.split(","))


def hierarchies(layout: CgroupLayout | None = None, mountinfo: str = "/proc/self/mountinfo") -> list[Hierarchy]:
    """Every mounted cgroup hierarchy (controllers or not), first mount of each."""
    layout = layout if layout is not None else read_layout(mountinfo)
    managed = {m.mount_point for m in layout.v1.values()}
    if layout.version == 2 and layout.v2 is not None:
        managed = {layout.v2.mount_point}
    own, init = _proc_cgroups("/proc/self/cgroup"), _proc_cgroups("/proc/1/cgroup")
    found: list[Hierarchy] = []
    seen: set[str] = set()
    for m in proc.mountinfo(mountinfo):
        if m.fstype not in ("cgroup", "cgroup2"):
            continue
        key = next((k for k in own if _matches(k, m.fstype, m.super_options)), None)
        if key is None or key in seen:
            continue
        seen.add(key)
        init_path = init.get(key, "/")
        if init_path.endswith("/init.scope"):
            init_path = init_path[: -len("/init.scope")] or "/"
        found.append(Hierarchy(m.mount_point, m.root, own[key], init_path, m.mount_point in managed))
    return found


class Placement(NamedTuple):
    """What LXC's configuration says about cgroups for one container."""

    relative: bool
    #: The engine's directory, relative to LXC's base (``<parent>/<id>``).
    directory: str

    @property
    def container(self) -> str:
        return f"{self.directory}/{PAYLOAD}"

    @property
    def monitor(self) -> str:
        return f"{self.directory}{MONITOR_SUFFIX}/monitor"

    @property
    def pivot(self) -> str:
        return f"{self.directory}{MONITOR_SUFFIX}"

    def config(self) -> list[tuple[str, str]]:
        """The ``lxc.cgroup.*`` keys."""
        return [
            ("lxc.cgroup.relative", "1" if self.relative else "0"),
            ("lxc.cgroup.dir.container", self.container),
            ("lxc.cgroup.dir.monitor", self.monitor),
            ("lxc.cgroup.dir.monitor.pivot", self.pivot),
        ]

    def to_state(self) -> dict[str, Any]:
        return {"relative": self.relative, "directory": self.directory}


def _hierarchy_path(fs_path: str, h: Hierarchy) -> str:
    inside = os.path.relpath(fs_path, h.mount_point)
    return os.path.normpath(os.path.join(h.root, "" if inside == "." else inside))


def lxc_placement(cg: Cgroup, found: list[Hierarchy] | None = None) -> Placement:
    """LXC's base (own or PID 1's cgroup) and directory under which ``cg``'s directories lie.

    :raises HostError: no single relative directory fits every hierarchy
        (LXC takes one path for all of them).
    """
    found = hierarchies(cg.layout) if found is None else found
    targets = []
    for h in found:
        for path in set(cg.paths.values()):
            if path == h.mount_point or path.startswith(h.mount_point.rstrip("/") + "/"):
                targets.append((h, _hierarchy_path(path, h)))
    for relative in (True, False):
        directories = set()
        for h, target in targets:
            base = h.own if relative else h.init
            rel = os.path.relpath(target, base)
            directories.add(rel)
        if len(directories) == 1:
            directory = directories.pop()
            if directory != "." and not directory.startswith(".."):
                return Placement(relative, directory)
    raise HostError(
        f"lxc exec driver: the cgroup {cg.parent}/{cg.id} lies neither below this process's cgroups "
        "nor below PID 1's in every hierarchy, and LXC takes one relative path for all of them; "
        "use a relative --cgroup-parent"
    )


def remove_leftovers(placement: Placement, found: list[Hierarchy] | None = None) -> None:
    """Remove LXC's monitor directories, and in hierarchies without controllers its container's.

    Called once lxc-start has exited; missing directories are fine.
    """
    for h in hierarchies() if found is None else found:
        base = h.own if placement.relative else h.init
        root_rel = os.path.relpath(base, h.root)
        top = os.path.normpath(os.path.join(h.mount_point, "" if root_rel == "." else root_rel))
        if root_rel.startswith(".."):
            continue
        _rmdir_tree(os.path.join(top, placement.pivot))
        if not h.managed:
            _rmdir_tree(os.path.join(top, placement.directory))
