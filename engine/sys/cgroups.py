"""The cgroup manager the exec drivers share: create, limit, watch and remove one container's cgroups.

Both kernel interfaces are handled, chosen from what ``/proc/self/mountinfo``
says is mounted (the cgroupfs driver of Docker and runc, never systemd's):

* **v1** (what this project's hosts run today): every controller has its own
  hierarchy (or a few share one, ``cpu,cpuacct``); a container gets one
  directory per mounted controller::

      /sys/fs/cgroup/memory/<own cgroup>/<parent>/<id>/memory.limit_in_bytes
      /sys/fs/cgroup/cpu/<own cgroup>/<parent>/<id>/cpu.shares
      /sys/fs/cgroup/freezer/...                /freezer.state   (pause)

* **v2**: one unified hierarchy; used when v1 controllers are absent and the
  v2 mount has controllers (a hybrid host whose v2 mount has none, like the
  ``/sys/fs/cgroup/unified`` of systemd's hybrid mode, is a v1 host)::

      /sys/fs/cgroup/<parent>/<id>/{memory.max, cpu.max, pids.max, cgroup.freeze}

Where the container's directory goes follows runc's cgroupfs rules: an
absolute ``parent`` (``/docker``) is taken from the root of each hierarchy;
a relative one (``engine``) is placed below the caller's own cgroup on v1
(so a daemon started inside a cgroup keeps its containers inside it) and
below the *parent* of the caller's own cgroup on v2, whose "no internal
processes" rule forbids enabling controllers for the children of a cgroup
that has processes. The resolved directories are kept in :meth:`Cgroup.to_state`,
so a process in another cgroup (the daemon after a restart) finds the same
ones with :meth:`Cgroup.from_state`.

Device rules on v2 need an eBPF program attached to the cgroup (there is no
``devices.allow`` file); this module does not load eBPF, so on v2 device
rules are skipped with a warning logged once and device access is left to
the container's capabilities (no CAP_MKNOD abuse: ``/dev`` is a fresh tmpfs
with the default nodes only).

Nothing here is namespaced by the test sandbox: whoever creates a cgroup
removes it (:meth:`Cgroup.destroy`, :func:`remove_parent`).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Self

from engine.errors import HostError, InvalidParameter, NotFound, NotSupported
from engine.sys import proc
from engine.utils.records import Record

LOG = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_DEVICE_RULES",
    "MIN_MEMORY",
    "Cgroup",
    "CgroupLayout",
    "DeviceRule",
    "Resources",
    "join_v1_self",
    "own_cgroups",
    "parse_cpuset",
    "read_layout",
    "remove_parent",
    "system_cpu_usage",
]

#: Docker's smallest memory limit (``Minimum memory limit allowed is 6MB``).
MIN_MEMORY = 6 * 1024 * 1024

#: Docker's default device allow-list (moby ``oci/defaults.go``): mknod of any
#: device (the node still cannot be opened unless allowed below), the usual
#: character devices, ttys and ptys, and /dev/net/tun.
DEFAULT_DEVICE_RULES: tuple[str, ...] = (
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",  # /dev/null
    "c 1:5 rwm",  # /dev/zero
    "c 1:7 rwm",  # /dev/full
    "c 1:8 rwm",  # /dev/random
    "c 1:9 rwm",  # /dev/urandom
    "c 5:0 rwm",  # /dev/tty
    "c 5:1 rwm",  # /dev/console
    "c 5:2 rwm",  # /dev/ptmx
    "c 136:* rwm",  # /dev/pts/*
    "c 10:200 rwm",  # /dev/net/tun
)

#: v1 controllers a container joins when they are mounted (named hierarchies
#: such as ``name=systemd`` carry no limits and are left alone).
V1_CONTROLLERS = (
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
    "misc",
)

#: The controllers enabled for a container's subtree on v2, when available:
#: the ones :meth:`Cgroup.apply` sets limits with (enabling a controller
#: costs the kernel work for every cgroup below).
V2_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "pids")

_UNLIMITED_V1 = 9223372036854771712  # PAGE_COUNTER_MAX * 4096: what v1 shows for "no limit"
_USER_HZ = 100  # cpuacct.stat counts in USER_HZ ticks (always 100 on Linux, see time(7))


# --------------------------------------------------------------------------
# the limits


class Resources(Record):
    """Cgroup limits; 0, -1 and "" mean "not set" (Docker's HostConfig names).

    The exec contract carries them as ``Command.resources`` (:mod:`engine.drivers.exec`
    exports this class); :meth:`Cgroup.apply` sets them.
    """

    memory: int = 0
    memory_swap: int = 0
    memory_reservation: int = 0
    memory_swappiness: int = -1
    kernel_memory: int = 0
    oom_kill_disable: bool = False
    cpu_shares: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0
    #: Real-time scheduling budget (``--cpu-rt-period``/``--cpu-rt-runtime``, microseconds; v1).
    cpu_rt_period: int = 0
    cpu_rt_runtime: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    pids_limit: int = 0
    blkio_weight: int = 0
    #: Device cgroup rules ``"c 1:3 rwm"``: the allow-list; empty means Docker's default list.
    device_rules: list[str] = []


# --------------------------------------------------------------------------
# what is mounted


class HierarchyMount(NamedTuple):
    """One mounted cgroup hierarchy.

    :param root: the hierarchy path the mount shows at its mount point (field
        4 of mountinfo: ``/`` normally, a sub-path inside a cgroup namespace
        or for a bind mount of a sub-tree).
    """

    mount_point: str
    root: str
    controllers: frozenset[str]
    version: int


class CgroupLayout(Record):
    """The cgroup hierarchies mounted for this process."""

    v1: dict[str, HierarchyMount] = {}  # controller -> mount
    #: Named v1 hierarchies without controllers (``name=systemd`` -> its mount).
    named: dict[str, HierarchyMount] = {}
    v2: HierarchyMount | None = None
    v2_controllers: frozenset[str] = frozenset()

    @property
    def version(self) -> int:
        """1 when any v1 controller is mounted (a hybrid host), else 2."""
        return 1 if self.v1 else 2

    def has(self, controller: str) -> bool:
        """Whether ``controller`` can be used with the version in force."""
        if self.version == 1:
            return controller in self.v1
        # The v2 freezer is part of the core (cgroup.freeze), not a controller.
        return controller in self.v2_controllers or (controller == "freezer" and self.v2 is not None)


def read_layout(mountinfo: str = "/proc/self/mountinfo") -> CgroupLayout:
    """Read the cgroup mounts of this process's mount namespace.

    The first mount of each v1 controller wins (later ones are bind mounts of
    the same hierarchy); a v2 mount at ``/sys/fs/cgroup`` wins over others.
    """
    layout = CgroupLayout()
    for m in proc.mountinfo(mountinfo):
        if m.fstype == "cgroup2":
            if layout.v2 is None or m.mount_point == "/sys/fs/cgroup":
                layout.v2 = HierarchyMount(m.mount_point, m.root, frozenset(), 2)
        elif m.fstype == "cgroup":
            options = m.super_options.split(",")
            controllers = frozenset(opt for opt in options if opt in V1_CONTROLLERS)
            mount = HierarchyMount(m.mount_point, m.root, controllers, 1)
            for controller in controllers:
                layout.v1.setdefault(controller, mount)
            for name in (opt for opt in options if opt.startswith("name=")):
                layout.named.setdefault(name, mount)
    if layout.v2 is not None:
        try:
            with open(os.path.join(layout.v2.mount_point, "cgroup.controllers")) as fh:
                layout.v2_controllers = frozenset(fh.read().split())
        except OSError:
            pass
    return layout


def join_v1_self(directories: Iterable[str]) -> None:
    """Move the calling thread into each of these v1 cgroup directories.

    ``0`` written to ``tasks`` moves the caller alone, and the kernel then skips the lock that
    a write of a PID takes (it waits for an RCU grace period, several ms, and every fork(2)
    on the machine takes it too). For a single-threaded process, as a forked child is, that is
    the whole process; its children start where it is.

    :raises OSError: from the write (ENOENT: the cgroup is gone; ENOSPC: a cpuset without CPUs).
    """
    for directory in directories:
        with open(os.path.join(directory, "tasks"), "w") as fh:
            fh.write("0")


def own_cgroups(proc_cgroup: str = "/proc/self/cgroup") -> dict[str, str]:
    """This process's cgroup per v1 controller, and under ``""`` its v2 cgroup."""
    found: dict[str, str] = {}
    with open(proc_cgroup, encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh.read().splitlines():
            hierarchy_id, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            if hierarchy_id == "0" and controllers == "":
                found[""] = path
                continue
            for controller in controllers.split(","):
                if controller in V1_CONTROLLERS or controller.startswith("name="):
                    found[controller] = path
    return found


# --------------------------------------------------------------------------
# pure helpers: cpusets, device rules, values


def parse_cpuset(value: str, what: str = "cpuset cpus") -> set[int]:
    """``"0-2,4"`` -> ``{0, 1, 2, 4}``.

    :raises InvalidParameter: ``Invalid value 0-x for cpuset cpus``, as Docker says it.
    """
    numbers: set[int] = set()
    text = value.strip()
    if not text:
        return numbers
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        try:
            if sep:
                a, b = int(low), int(high)
                if a < 0 or b < a:
                    raise ValueError(part)
                numbers.update(range(a, b + 1))
            else:
                a = int(low)
                if a < 0:
                    raise ValueError(part)
                numbers.add(a)
        except ValueError:
            raise InvalidParameter(f"Invalid value {value} for {what}") from None
    return numbers


class DeviceRule(NamedTuple):
    """One device cgroup rule: ``type major:minor access`` (``c 1:3 rwm``, ``a``)."""

    type: str  # a, b or c
    major: int | None  # None: any (``*``)
    minor: int | None
    access: str  # a subset of "rwm"

    @classmethod
    def parse(cls, text: str) -> DeviceRule:
        """Parse the text form Docker's ``--device-cgroup-rule`` takes.

        :raises InvalidParameter: for anything else.
        """
        parts = text.split()
        if parts == ["a"]:
            return cls("a", None, None, "rwm")
        if len(parts) != 3 or parts[0] not in ("a", "b", "c"):
            raise InvalidParameter(f'invalid device cgroup rule {text!r}: want "<a|b|c> <major|*>:<minor|*> <rwm>"')
        kind, numbers, access = parts
        major_text, sep, minor_text = numbers.partition(":")
        if not sep or not access or set(access) - set("rwm") or len(set(access)) != len(access):
            raise InvalidParameter(f'invalid device cgroup rule {text!r}: want "<a|b|c> <major|*>:<minor|*> <rwm>"')

        def number(part: str) -> int | None:
            if part == "*":
                return None
            if not part.isdigit():
                raise InvalidParameter(f"invalid device cgroup rule {text!r}: {part!r} is not a number or *")
            return int(part)

        return cls(kind, number(major_text), number(minor_text), "".join(c for c in "rwm" if c in access))

    def __str__(self) -> str:
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"

    @property
    def allows_everything(self) -> bool:
        return self.type == "a" and self.access == "rwm"


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def _read_int(path: str, default: int = 0) -> int:
    try:
        text = _read(path).strip()
    except OSError:
        return default
    if text == "max":
        return 0
    try:
        return int(text)
    except ValueError:
        return default


def _read_keyed(path: str) -> dict[str, int]:
    """A flat-keyed file (``memory.stat``, ``cpu.stat``) as ``{key: int}``."""
    values: dict[str, int] = {}
    try:
        text = _read(path)
    except OSError:
        return values
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            values[key] = int(value)
        except ValueError:
            continue
    return values


def _write(path: str, value: str | int, what: str) -> None:
    """Write one value to a cgroup file; errors become remedies."""
    try:
        with open(path, "w") as fh:
            fh.write(str(value))
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        raise HostError(f"cgroup: setting {what} to {value} failed ({name}): writing {path}: {exc.strerror}") from exc


def system_cpu_usage(proc_stat: str = "/proc/stat") -> int:
    """The host's total CPU time in nanoseconds, from the ``cpu`` line of /proc/stat (as Docker reports it)."""
    with open(proc_stat) as fh:
        for line in fh:
            if line.startswith("cpu "):
                ticks = sum(int(v) for v in line.split()[1:8])
                return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    return 0


def _online_cpus() -> int:
    try:
        return os.sysconf("SC_NPROCESSORS_ONLN")
    except (OSError, ValueError):
        return len(os.sched_getaffinity(0))


# --------------------------------------------------------------------------
# the cgroup


class Cgroup:
    """One container's cgroup: a directory per v1 controller, or one v2 directory.

    Nothing is touched on construction; :meth:`create` makes the directories.

    :param parent: the cgroup parent (``engine``, ``/docker``; see the module
        docstring for absolute and relative ones).
    :param id: the container's ID, the leaf directory's name.
    :param layout: what is mounted (read from mountinfo when not given).
    :param version: force 1 or 2 (tests use 2 on a hybrid host's v2 mount).
    :param own: this process's cgroups (read from /proc/self/cgroup when not given).
    """

    def __init__(
        self,
        parent: str,
        id: str,
        *,
        layout: CgroupLayout | None = None,
        version: int | None = None,
        own: dict[str, str] | None = None,
    ) -> None:
        if not id or "/" in id or id in (".", ".."):
            raise InvalidParameter(f"invalid cgroup name {id!r}")
        if any(part == ".." for part in parent.split("/")):
            raise InvalidParameter(f"invalid cgroup parent {parent!r}: '..' is not allowed")
        self.parent = parent
        self.id = id
        layout = layout if layout is not None else read_layout()
        self.version = version or layout.version
        if self.version == 2 and layout.v2 is None:
            raise NotSupported("cgroup v2 is not mounted")
        self._layout: CgroupLayout | Callable[[], CgroupLayout] | None = layout
        self.paths = self._resolve(own if own is not None else own_cgroups())

    @property
    def layout(self) -> CgroupLayout:
        """The cgroup mounts (got when first needed, for a cgroup :meth:`from_state` made)."""
        if not isinstance(self._layout, CgroupLayout):
            self._layout = self._layout() if self._layout is not None else read_layout()
        return self._layout

    # ---- where

    def _resolve(self, own: dict[str, str]) -> dict[str, str]:
        """controller -> directory (``""`` for the v2 directory)."""
        paths: dict[str, str] = {}
        if self.version == 2:
            mount = self.layout.v2
            assert mount is not None
            base = "/"
            if not self.parent.startswith("/"):
                base = os.path.dirname(own.get("", "/").rstrip("/")) or "/"
            paths[""] = self._directory(mount, os.path.join(base, self.parent.lstrip("/"), self.id))
            return paths
        # Every hierarchy, as runc's cgroupfs manager joins them: the controllers', the
        # named ones (name=systemd) and, on a hybrid host, the controller-less v2 one, so that
        # /proc/PID/cgroup shows the container's path on every line, as under Docker.
        hierarchies: list[tuple[str, HierarchyMount]] = [*self.layout.v1.items(), *self.layout.named.items()]
        if self.layout.v2 is not None:
            hierarchies.append(("", self.layout.v2))
        for controller, mount in hierarchies:
            base = "/" if self.parent.startswith("/") else own.get(controller, "/")
            try:
                paths[controller] = self._directory(mount, os.path.join(base, self.parent.lstrip("/"), self.id))
            except HostError:
                if controller in self.layout.v1:
                    raise
                # A named or hybrid hierarchy mounted as a sub-tree only: it carries no
                # limits, so the container goes without it.
        return paths

    def mount_sources(self) -> list[tuple[str, str]]:
        """What a container sees at ``/sys/fs/cgroup``: ``(name, host directory)`` per mounted
        hierarchy (``memory``, ``cpu,cpuacct``, ``systemd``: the host's mount point's name), or
        ``("", directory)`` on a v2 host, whose one hierarchy is ``/sys/fs/cgroup`` itself."""
        if self.version == 2:
            return [("", self.paths[""])]
        out: dict[str, str] = {}
        for controller, mount in [*self.layout.v1.items(), *self.layout.named.items()]:
            if controller in self.paths:
                out.setdefault(os.path.basename(mount.mount_point.rstrip("/")), self.paths[controller])
        return sorted(out.items())

    @staticmethod
    def _directory(mount: HierarchyMount, hierarchy_path: str) -> str:
        path = os.path.normpath(hierarchy_path)
        root = mount.root.rstrip("/")
        if root:
            if path != root and not path.startswith(root + "/"):
                raise HostError(
                    f"cgroup path {path} is outside of the hierarchy mounted at {mount.mount_point} "
                    f"(which shows {mount.root}); mount the whole hierarchy"
                )
            path = path[len(root) :] or "/"
        return os.path.join(mount.mount_point, path.lstrip("/"))

    def path(self, controller: str) -> str | None:
        """The directory for ``controller`` (any controller on v2), or None if it is not mounted."""
        if self.version == 2:
            return self.paths[""]
        return self.paths.get(controller)

    def _file(self, controller: str, name: str) -> str | None:
        directory = self.path(controller)
        return None if directory is None else os.path.join(directory, name)

    def to_state(self) -> dict[str, Any]:
        """What :meth:`from_state` needs to find these directories from any process."""
        return {"parent": self.parent, "id": self.id, "version": self.version, "paths": dict(self.paths)}

    @classmethod
    def from_state(cls, state: dict[str, Any], layout: CgroupLayout | Callable[[], CgroupLayout] | None = None) -> Self:
        """The cgroup :meth:`to_state` described, whichever cgroup the caller is in.

        The mounts are got only when something needs them (``layout`` itself, a function
        that returns them, or read): a kill, an OOM check or a removal (a container's exit,
        in its shim) goes by the recorded paths, and /proc/self/mountinfo has a line per
        running container.
        """
        self = cls.__new__(cls)
        self.parent, self.id, self.version = state["parent"], state["id"], int(state["version"])
        self._layout = layout
        self.paths = dict(state["paths"])
        return self

    def __repr__(self) -> str:
        return f"Cgroup(v{self.version}, {self.paths.get('', self.paths.get('memory', '?'))})"

    # ---- lifecycle

    def exists(self) -> bool:
        """Whether the container's directories are there (any of them)."""
        return any(os.path.isdir(p) for p in self.paths.values())

    def create(self) -> None:
        """Make the directories (and missing parents); cpusets get their parent's CPUs and memory nodes.

        :raises HostError: when a directory cannot be made.
        """
        try:
            if self.version == 2:
                self._create_v2()
                return
            for controller, path in self.paths.items():
                if controller == "cpuset":
                    self._create_cpuset_v1(path)
                else:
                    os.makedirs(path, exist_ok=True)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            raise HostError(
                f"cgroup: creating {exc.filename} failed ({name}): {exc.strerror}; "
                "is the cgroup file system mounted read-write?"
            ) from exc

    def _create_cpuset_v1(self, path: str) -> None:
        """A v1 cpuset starts with empty ``cpus``/``mems``, and a task cannot join
        such a cpuset (ENOSPC); copy them down from the nearest ancestor, level by level."""
        mount_point = self.layout.v1["cpuset"].mount_point
        missing: list[str] = []
        current = path
        while not os.path.isdir(current) and current != mount_point:
            missing.append(current)
            current = os.path.dirname(current)
        for directory in reversed(missing):
            try:
                os.mkdir(directory)
            except FileExistsError:
                pass
            parent = os.path.dirname(directory)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if _read(os.path.join(directory, name)).strip() == "":
                    _write(os.path.join(directory, name), _read(os.path.join(parent, name)).strip(), name)

    def _create_v2(self) -> None:
        """Make the directory and enable every available controller on the way down
        (a controller is usable in a cgroup only when its parent's
        ``cgroup.subtree_control`` enables it)."""
        mount = self.layout.v2
        assert mount is not None
        path = self.paths[""]
        relative = os.path.relpath(path, mount.mount_point)
        current = mount.mount_point
        for part in relative.split("/"):
            available = set(_read(os.path.join(current, "cgroup.controllers")).split())
            enabled = set(_read(os.path.join(current, "cgroup.subtree_control")).split())
            wanted = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
            if wanted:
                try:
                    with open(os.path.join(current, "cgroup.subtree_control"), "w") as fh:
                        fh.write(" ".join("+" + c for c in wanted))
                except OSError as exc:
                    if exc.errno == errno.EBUSY:
                        raise HostError(
                            f"cgroup v2: cannot enable {', '.join(wanted)} in {current}: it has "
                            "processes of its own (the 'no internal processes' rule); use an "
                            "absolute --cgroup-parent outside the daemon's cgroup"
                        ) from exc
                    raise
            current = os.path.join(current, part)
            os.makedirs(current, exist_ok=True)

    def add(self, pid: int, directories: Iterable[str] | None = None) -> None:
        """Move the process ``pid`` (all its threads) into the cgroup (only its ``directories``).

        Each write to ``cgroup.procs`` takes a lock that waits for an RCU grace period (several
        ms); :func:`join_v1_self` and a fork into the v2 cgroup (:func:`engine.sys.libc.fork_into_cgroup`)
        do not.

        :raises NotFound: when the process is gone.
        :raises HostError: for anything else (a cpuset without CPUs: ENOSPC).
        """
        for path in self.paths.values() if directories is None else directories:
            try:
                with open(os.path.join(path, "cgroup.procs"), "w") as fh:
                    fh.write(str(pid))
            except OSError as exc:
                if exc.errno == errno.ESRCH:
                    raise NotFound(f"cannot add process {pid} to {path}: no such process") from exc
                name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                raise HostError(f"cgroup: adding process {pid} to {path} failed ({name}): {exc.strerror}") from exc

    def v1_directories(self) -> list[str]:
        """The directories of the v1 hierarchies (controllers' and named ones), each once."""
        return sorted({path for controller, path in self.paths.items() if controller != ""})

    def v2_directory(self) -> str | None:
        """The v2 directory: a v2 host's, or a hybrid host's controller-less one; None without."""
        return self.paths.get("")

    def pids(self) -> list[int]:
        """The processes in the cgroup (every controller's, merged), sorted."""
        found: set[int] = set()
        for path in set(self.paths.values()):
            try:
                text = _read(os.path.join(path, "cgroup.procs"))
            except FileNotFoundError:
                continue
            found.update(int(line) for line in text.split())
        return sorted(found)

    # ---- limits

    def validate(self, resources: Resources) -> None:
        """Refuse impossible limits with Docker's messages, before anything is written.

        :raises InvalidParameter: with the reason.
        """
        r = resources
        if r.memory and r.memory != -1 and r.memory < MIN_MEMORY:
            raise InvalidParameter("Minimum memory limit allowed is 6MB")
        if r.memory_swap and r.memory_swap != -1:
            if not r.memory or r.memory == -1:
                raise InvalidParameter("You should always set the Memory limit when using Memoryswap limit, see usage")
            if r.memory_swap < r.memory:
                raise InvalidParameter("Minimum memoryswap limit should be larger than memory limit, see usage")
        if r.memory_reservation and r.memory and r.memory != -1 and r.memory < r.memory_reservation:
            raise InvalidParameter("Minimum memory limit can not be less than memory reservation limit, see usage")
        if r.memory_reservation and r.memory_reservation < MIN_MEMORY:
            raise InvalidParameter("Minimum memory reservation allowed is 6MB")
        if r.memory_swappiness != -1 and not 0 <= r.memory_swappiness <= 100:
            raise InvalidParameter(f"Invalid value: {r.memory_swappiness}, valid memory swappiness range is 0-100")
        if r.cpu_shares < 0:
            raise InvalidParameter(f"invalid CPU shares {r.cpu_shares}: must not be negative")
        if r.cpu_period and not 1000 <= r.cpu_period <= 1_000_000:
            raise InvalidParameter(
                "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"
            )
        if r.cpu_rt_period and r.cpu_rt_runtime and r.cpu_rt_runtime > r.cpu_rt_period:
            raise InvalidParameter("cpu-rt-runtime cannot be higher than cpu-rt-period")
        if r.cpu_quota and r.cpu_quota != -1 and r.cpu_quota < 1000:
            raise InvalidParameter("CPU cfs quota can not be less than 1ms (i.e. 1000)")
        if r.blkio_weight and not 10 <= r.blkio_weight <= 1000:
            raise InvalidParameter("Range of blkio weight is from 10 to 1000")
        if r.pids_limit < -1:
            raise InvalidParameter(f"invalid pids limit {r.pids_limit}")
        for rule in r.device_rules:
            DeviceRule.parse(rule)
        for value, name, kind in ((r.cpuset_cpus, "cpus", "CPUs"), (r.cpuset_mems, "mems", "memory nodes")):
            if not value:
                continue
            requested = parse_cpuset(value, f"cpuset {name}")
            available_text = self._available_cpuset(name)
            if available_text is None:
                continue
            if not requested <= parse_cpuset(available_text):
                raise InvalidParameter(
                    f"Requested {kind} are not available - requested {value}, available: {available_text}"
                )

    def _available_cpuset(self, name: str) -> str | None:
        """The CPUs or memory nodes of the nearest existing ancestor (what a child may use)."""
        if self.version == 2:
            directory = os.path.dirname(self.paths[""])
            filename = f"cpuset.{name}.effective"
            stop = self.layout.v2.mount_point if self.layout.v2 else "/"
        else:
            leaf = self.paths.get("cpuset")
            if leaf is None:
                return None
            directory = os.path.dirname(leaf)
            filename = f"cpuset.{name}"
            stop = self.layout.v1["cpuset"].mount_point
        while True:
            candidate = os.path.join(directory, filename)
            try:
                value = _read(candidate).strip()
            except FileNotFoundError:
                value = ""
            if value:
                return value
            if directory == stop or directory == "/":
                return None
            directory = os.path.dirname(directory)

    def apply(self, resources: Resources, *, update: bool = False) -> None:
        """Write the limits of ``resources`` that are set; unset ones (0, -1, "") are left alone.

        :param update: for ``docker update``: device rules are left as they are
            instead of being reset to the given (or default) allow-list.
        :raises InvalidParameter: for impossible values (:meth:`validate`).
        :raises NotSupported: for a limit whose controller is not available.
        :raises HostError: when the kernel refuses a value.
        """
        self.validate(resources)
        if self.version == 2:
            self._apply_v2(resources, update)
        else:
            self._apply_v1(resources, update)

    def _need(self, controller: str, what: str) -> str:
        path = self.path(controller)
        if path is None or (self.version == 2 and controller not in self.layout.v2_controllers):
            raise NotSupported(f"cannot set {what}: the cgroup {controller} controller is not available on this host")
        return path

    def _apply_v1(self, r: Resources, update: bool) -> None:
        if (
            r.memory
            or r.memory_swap
            or r.memory_reservation
            or r.memory_swappiness != -1
            or r.oom_kill_disable
            or r.kernel_memory
        ):
            mem = self._need("memory", "a memory limit")
            limit_file = os.path.join(mem, "memory.limit_in_bytes")
            memsw_file = os.path.join(mem, "memory.memsw.limit_in_bytes")
            has_memsw = os.path.exists(memsw_file)
            if r.memory_swap and not has_memsw:
                LOG.warning(
                    "cgroup %s: swap accounting is off in this kernel (swapaccount=1 on the kernel "
                    "command line); the memory+swap limit is not enforced",
                    self.id,
                )
            memory = r.memory
            memsw = r.memory_swap if has_memsw else 0
            if memory or memsw:
                # The kernel keeps memory.limit <= memsw.limit at every step:
                # raise memsw first when the new memory limit is above the
                # current memsw limit, else lower memory first.
                current_memsw = _read_int(memsw_file, _UNLIMITED_V1) if has_memsw else _UNLIMITED_V1
                new_memory = _UNLIMITED_V1 if memory == -1 else memory
                if memory and not memsw and new_memory > current_memsw:
                    raise InvalidParameter(
                        "Memory limit should be smaller than already set memoryswap limit, "
                        "update the memoryswap at the same time"
                    )
                if memsw and (new_memory > current_memsw or memsw == -1):
                    _write(memsw_file, memsw, "memory.memsw.limit_in_bytes")
                    memsw = 0
                if memory:
                    self._write_memory(limit_file, memory)
                if memsw:
                    _write(memsw_file, memsw, "memory.memsw.limit_in_bytes")
            if r.memory_reservation:
                _write(
                    os.path.join(mem, "memory.soft_limit_in_bytes"), r.memory_reservation, "memory.soft_limit_in_bytes"
                )
            if r.memory_swappiness != -1:
                _write(os.path.join(mem, "memory.swappiness"), r.memory_swappiness, "memory.swappiness")
            if r.oom_kill_disable:
                _write(os.path.join(mem, "memory.oom_control"), 1, "memory.oom_control")
            if r.kernel_memory:
                try:
                    _write(
                        os.path.join(mem, "memory.kmem.limit_in_bytes"), r.kernel_memory, "memory.kmem.limit_in_bytes"
                    )
                except HostError as exc:
                    LOG.warning(
                        "cgroup %s: kernel memory limits are not supported by this kernel (%s); "
                        "ignoring --kernel-memory",
                        self.id,
                        exc,
                    )
        if r.cpu_shares or r.cpu_period or r.cpu_quota:
            cpu = self._need("cpu", "CPU shares or quota")
            if r.cpu_shares:
                _write(os.path.join(cpu, "cpu.shares"), r.cpu_shares, "cpu.shares")
            if r.cpu_period:
                _write(os.path.join(cpu, "cpu.cfs_period_us"), r.cpu_period, "cpu.cfs_period_us")
            if r.cpu_quota:
                _write(os.path.join(cpu, "cpu.cfs_quota_us"), r.cpu_quota, "cpu.cfs_quota_us")
        if r.cpu_rt_period or r.cpu_rt_runtime:
            # The kernel gives a group no more real-time budget than its parent has: as runc,
            # a parent without one makes this fail (EINVAL).
            cpu = self._need("cpu", "a real-time CPU budget")
            if r.cpu_rt_period:
                _write(os.path.join(cpu, "cpu.rt_period_us"), r.cpu_rt_period, "cpu.rt_period_us")
            if r.cpu_rt_runtime:
                _write(os.path.join(cpu, "cpu.rt_runtime_us"), r.cpu_rt_runtime, "cpu.rt_runtime_us")
        if r.cpuset_cpus or r.cpuset_mems:
            cpuset = self._need("cpuset", "a cpuset")
            if r.cpuset_cpus:
                _write(os.path.join(cpuset, "cpuset.cpus"), r.cpuset_cpus, "cpuset.cpus")
            if r.cpuset_mems:
                _write(os.path.join(cpuset, "cpuset.mems"), r.cpuset_mems, "cpuset.mems")
        if r.pids_limit:
            pids = self._need("pids", "a pids limit")
            _write(os.path.join(pids, "pids.max"), "max" if r.pids_limit == -1 else r.pids_limit, "pids.max")
        if r.blkio_weight:
            self._write_blkio_weight(r.blkio_weight)
        if not update:
            self._apply_devices_v1(r.device_rules or list(DEFAULT_DEVICE_RULES))

    def _write_memory(self, path: str, value: int | str) -> None:
        try:
            with open(path, "w") as fh:
                fh.write(str(value))
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise InvalidParameter(
                    f"cannot set the memory limit to {value} bytes: the container uses more "
                    "than that and the kernel could not reclaim enough"
                ) from exc
            _write(path, value, "memory.limit_in_bytes")

    def _write_blkio_weight(self, weight: int) -> None:
        path = self.path("io" if self.version == 2 else "blkio")
        if path is None or (self.version == 2 and "io" not in self.layout.v2_controllers):
            LOG.warning("cgroup %s: no blkio/io controller; ignoring the blkio weight", self.id)
            return
        if self.version == 2:
            # cgroup v2 weights are 1..10000 (default 100); Docker maps 10..1000 linearly onto them.
            candidates = [("io.bfq.weight", weight), ("io.weight", 1 + (weight - 10) * 9999 // 990)]
        else:
            # blkio.weight exists only with CFQ (gone since Linux 5.0); BFQ has its own file.
            candidates = [("blkio.weight", weight), ("blkio.bfq.weight", weight)]
        for name, value in candidates:
            if os.path.exists(os.path.join(path, name)):
                _write(os.path.join(path, name), value, name)
                return
        LOG.warning(
            "cgroup %s: the block I/O scheduler offers no weight file (%s); ignoring the blkio weight "
            "(select bfq for the disk: echo bfq > /sys/block/<disk>/queue/scheduler)",
            self.id,
            " or ".join(n for n, _ in candidates),
        )

    def _apply_devices_v1(self, rules: list[str]) -> None:
        path = self.path("devices")
        if path is None:
            LOG.warning("cgroup %s: the devices controller is not mounted; device access is not restricted", self.id)
            return
        parsed = [DeviceRule.parse(rule) for rule in rules]
        # Deny everything, then allow the list: an allow-list whatever the parent allowed.
        _write(os.path.join(path, "devices.deny"), "a", "devices.deny")
        for rule in parsed:
            _write(os.path.join(path, "devices.allow"), str(rule), "devices.allow")

    def _apply_v2(self, r: Resources, update: bool) -> None:
        directory = self.paths[""]
        if r.cpu_rt_period or r.cpu_rt_runtime:
            raise NotSupported("cannot set a real-time CPU budget: cgroup v2 has none")
        if r.memory or r.memory_swap or r.memory_reservation:
            self._need("memory", "a memory limit")
            if r.memory:
                self._write_memory(os.path.join(directory, "memory.max"), r.memory if r.memory != -1 else "max")
            if r.memory_swap:
                # v2 limits swap alone; Docker's --memory-swap is memory plus swap.
                swap_file = os.path.join(directory, "memory.swap.max")
                if not os.path.exists(swap_file):
                    LOG.warning(
                        "cgroup %s: no memory.swap.max (swap accounting off); the memory+swap limit is not enforced",
                        self.id,
                    )
                else:
                    swap = "max" if r.memory_swap == -1 or r.memory == -1 else r.memory_swap - r.memory
                    _write(swap_file, swap, "memory.swap.max")
            if r.memory_reservation:
                _write(os.path.join(directory, "memory.low"), r.memory_reservation, "memory.low")
        if r.memory_swappiness != -1:
            LOG.warning("cgroup %s: cgroup v2 has no per-cgroup swappiness; ignoring it", self.id)
        if r.oom_kill_disable:
            LOG.warning("cgroup %s: cgroup v2 cannot disable the OOM killer; ignoring --oom-kill-disable", self.id)
        if r.kernel_memory:
            LOG.warning("cgroup %s: cgroup v2 has no kernel memory limit; ignoring it", self.id)
        if r.cpu_shares or r.cpu_period or r.cpu_quota:
            self._need("cpu", "CPU shares or quota")
            if r.cpu_shares:
                # The conversion runc uses: shares 2..262144 onto weight 1..10000.
                shares = min(max(r.cpu_shares, 2), 262144)
                weight = 1 + ((shares - 2) * 9999) // 262142
                _write(os.path.join(directory, "cpu.weight"), weight, "cpu.weight")
            if r.cpu_period or r.cpu_quota:
                current = _read(os.path.join(directory, "cpu.max")).split()
                quota = "max" if r.cpu_quota == -1 else (r.cpu_quota or current[0])
                period = r.cpu_period or (current[1] if len(current) > 1 else 100000)
                _write(os.path.join(directory, "cpu.max"), f"{quota} {period}", "cpu.max")
        if r.cpuset_cpus or r.cpuset_mems:
            self._need("cpuset", "a cpuset")
            if r.cpuset_cpus:
                _write(os.path.join(directory, "cpuset.cpus"), r.cpuset_cpus, "cpuset.cpus")
            if r.cpuset_mems:
                _write(os.path.join(directory, "cpuset.mems"), r.cpuset_mems, "cpuset.mems")
        if r.pids_limit:
            self._need("pids", "a pids limit")
            _write(os.path.join(directory, "pids.max"), "max" if r.pids_limit == -1 else r.pids_limit, "pids.max")
        if r.blkio_weight:
            self._write_blkio_weight(r.blkio_weight)
        if not update:
            rules = [DeviceRule.parse(rule) for rule in (r.device_rules or DEFAULT_DEVICE_RULES)]
            if not any(rule.allows_everything for rule in rules):
                _warn_v2_devices_once()

    # ---- pause

    def _freezer_v1(self) -> str:
        path = self.path("freezer")
        if path is None:
            raise NotSupported("cannot pause: the cgroup freezer controller is not mounted")
        return os.path.join(path, "freezer.state")

    def freezer_state(self) -> str:
        """``THAWED``, ``FREEZING`` or ``FROZEN`` (v2: ``THAWED`` or ``FROZEN``)."""
        if self.version == 2:
            events = _read_keyed(os.path.join(self.paths[""], "cgroup.events"))
            return "FROZEN" if events.get("frozen") == 1 else "THAWED"
        return _read(self._freezer_v1()).strip()

    def freeze(self, timeout: float = 10.0) -> None:
        """Freeze every process of the cgroup and wait until the kernel says it is frozen.

        :raises HostError: when the cgroup does not freeze in time (it is thawed again).
        """
        self._set_frozen(True, timeout)

    def thaw(self, timeout: float = 10.0) -> None:
        """Let the processes run again and wait until the cgroup is thawed."""
        self._set_frozen(False, timeout)

    def _set_frozen(self, frozen: bool, timeout: float) -> None:
        want = "FROZEN" if frozen else "THAWED"
        if self.version == 2:
            path, value = os.path.join(self.paths[""], "cgroup.freeze"), "1" if frozen else "0"
        else:
            path, value = self._freezer_v1(), want
        if not os.path.exists(path):
            raise NotFound(f"cgroup {self.id} does not exist")
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            # v1 can stay in FREEZING when a task is in an uninterruptible wait;
            # writing FROZEN again retries the freeze (what runc does).
            _write(path, value, os.path.basename(path))
            if self.freezer_state() == want:
                return
            if time.monotonic() > deadline:
                if frozen:
                    self._set_frozen(False, 5.0)
                raise HostError(f"cgroup {self.id} did not become {want} within {timeout:.0f}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    # ---- stats

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process in this cgroup (``oom_kill`` counter > 0)."""
        if self.version == 2:
            return _read_keyed(os.path.join(self.paths[""], "memory.events")).get("oom_kill", 0) > 0
        path = self.path("memory")
        if path is None:
            return False
        return _read_keyed(os.path.join(path, "memory.oom_control")).get("oom_kill", 0) > 0

    def stats(self) -> dict[str, Any]:
        """Usage in the shape of Docker's stats JSON: memory, cpu, pids and blkio parts."""
        if self.version == 2:
            return self._stats_v2()
        return self._stats_v1()

    def _stats_v1(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        mem = self.path("memory")
        if mem:
            out["memory_stats"] = {
                "usage": _read_int(os.path.join(mem, "memory.usage_in_bytes")),
                "max_usage": _read_int(os.path.join(mem, "memory.max_usage_in_bytes")),
                # "No limit" reads as a huge number on v1; Docker shows the host's memory instead.
                "limit": min(_read_int(os.path.join(mem, "memory.limit_in_bytes")), _host_memory() or _UNLIMITED_V1),
                "failcnt": _read_int(os.path.join(mem, "memory.failcnt")),
                "stats": _read_keyed(os.path.join(mem, "memory.stat")),
            }
        cpu_usage: dict[str, Any] = {
            "total_usage": 0,
            "percpu_usage": [],
            "usage_in_kernelmode": 0,
            "usage_in_usermode": 0,
        }
        acct = self.path("cpuacct")
        if acct:
            cpu_usage["total_usage"] = _read_int(os.path.join(acct, "cpuacct.usage"))
            try:
                cpu_usage["percpu_usage"] = [int(v) for v in _read(os.path.join(acct, "cpuacct.usage_percpu")).split()]
            except OSError:
                pass
            ticks = _read_keyed(os.path.join(acct, "cpuacct.stat"))
            cpu_usage["usage_in_usermode"] = ticks.get("user", 0) * 1_000_000_000 // _USER_HZ
            cpu_usage["usage_in_kernelmode"] = ticks.get("system", 0) * 1_000_000_000 // _USER_HZ
        throttling = {"periods": 0, "throttled_periods": 0, "throttled_time": 0}
        cpu = self.path("cpu")
        if cpu:
            stat = _read_keyed(os.path.join(cpu, "cpu.stat"))
            throttling = {
                "periods": stat.get("nr_periods", 0),
                "throttled_periods": stat.get("nr_throttled", 0),
                "throttled_time": stat.get("throttled_time", 0),
            }
        out["cpu_stats"] = {
            "cpu_usage": cpu_usage,
            "system_cpu_usage": system_cpu_usage(),
            "online_cpus": _online_cpus(),
            "throttling_data": throttling,
        }
        pids = self.path("pids")
        if pids:
            out["pids_stats"] = {
                "current": _read_int(os.path.join(pids, "pids.current")),
                "limit": _read_int(os.path.join(pids, "pids.max")),
            }
        blkio = self.path("blkio")
        entries: list[dict[str, Any]] = []
        serviced: list[dict[str, Any]] = []
        if blkio:
            for target, names in (
                (entries, ("blkio.throttle.io_service_bytes_recursive", "blkio.io_service_bytes_recursive")),
                (serviced, ("blkio.throttle.io_serviced_recursive", "blkio.io_serviced_recursive")),
            ):
                for name in names:
                    try:
                        text = _read(os.path.join(blkio, name))
                    except OSError:
                        continue
                    for line in text.splitlines():
                        parts = line.split()
                        if len(parts) == 3 and ":" in parts[0]:
                            major, minor = parts[0].split(":")
                            target.append(
                                {"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])}
                            )
                    break
        out["blkio_stats"] = {"io_service_bytes_recursive": entries, "io_serviced_recursive": serviced}
        return out

    def _stats_v2(self) -> dict[str, Any]:
        directory = self.paths[""]
        out: dict[str, Any] = {}
        if "memory" in self.layout.v2_controllers:
            events = _read_keyed(os.path.join(directory, "memory.events"))
            out["memory_stats"] = {
                "usage": _read_int(os.path.join(directory, "memory.current")),
                "max_usage": _read_int(os.path.join(directory, "memory.peak")),
                "limit": _read_int(os.path.join(directory, "memory.max")) or _host_memory(),
                "failcnt": events.get("max", 0),
                "stats": _read_keyed(os.path.join(directory, "memory.stat")),
            }
        stat = _read_keyed(os.path.join(directory, "cpu.stat"))
        out["cpu_stats"] = {
            "cpu_usage": {
                "total_usage": stat.get("usage_usec", 0) * 1000,
                "percpu_usage": [],
                "usage_in_kernelmode": stat.get("system_usec", 0) * 1000,
                "usage_in_usermode": stat.get("user_usec", 0) * 1000,
            },
            "system_cpu_usage": system_cpu_usage(),
            "online_cpus": _online_cpus(),
            "throttling_data": {
                "periods": stat.get("nr_periods", 0),
                "throttled_periods": stat.get("nr_throttled", 0),
                "throttled_time": stat.get("throttled_usec", 0) * 1000,
            },
        }
        if "pids" in self.layout.v2_controllers:
            out["pids_stats"] = {
                "current": _read_int(os.path.join(directory, "pids.current")),
                "limit": _read_int(os.path.join(directory, "pids.max")),
            }
        entries: list[dict[str, Any]] = []
        serviced: list[dict[str, Any]] = []
        try:
            text = _read(os.path.join(directory, "io.stat"))
        except OSError:
            text = ""
        for line in text.splitlines():
            device, *pairs = line.split()
            major, _, minor = device.partition(":")
            values = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
            for key, op, target in (
                ("rbytes", "read", entries),
                ("wbytes", "write", entries),
                ("rios", "read", serviced),
                ("wios", "write", serviced),
            ):
                if key in values:
                    target.append({"major": int(major), "minor": int(minor), "op": op, "value": int(values[key])})
        out["blkio_stats"] = {"io_service_bytes_recursive": entries, "io_serviced_recursive": serviced}
        return out

    # ---- the end

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to every process in the cgroup; return how many were signalled.

        The cgroup is frozen while the list is read and signalled, so a
        fork bomb cannot outrun it, then thawed so that the signals are
        delivered (a frozen task does not act on SIGKILL until thawed). An
        empty cgroup is left as it is: nothing in it can fork, and the freeze
        and thaw would cost a container's exit a write and a poll each.
        """
        if not self.pids():
            return 0
        frozen = False
        try:
            self.freeze(timeout=2.0)
            frozen = True
        except (NotSupported, NotFound, HostError):
            pass
        count = 0
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                    count += 1
                except ProcessLookupError:
                    pass
        finally:
            if frozen:
                self.thaw()
        return count

    def destroy(self, timeout: float = 5.0) -> None:
        """Kill what is left (SIGKILL), thaw, and remove every directory of the cgroup.

        Removing a directory fails with EBUSY while a task is still exiting;
        that is retried until ``timeout``.

        :raises HostError: when a directory is still busy after ``timeout``.
        """
        if not self.exists():
            return
        deadline = time.monotonic() + timeout
        if self.version == 2 and os.path.exists(os.path.join(self.paths[""], "cgroup.kill")):
            # Linux 5.14+: one write kills every process, also ones forking now.
            try:
                _write(os.path.join(self.paths[""], "cgroup.kill"), 1, "cgroup.kill")
            except HostError:
                self.kill()
        else:
            self.kill()
        try:
            if self.freezer_state() != "THAWED":
                self.thaw()
        except (NotSupported, NotFound, OSError):
            pass
        while self.pids() and time.monotonic() < deadline:
            self.kill()
            time.sleep(0.01)
        for path in sorted(set(self.paths.values()), key=len, reverse=True):
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno == errno.EBUSY and time.monotonic() < deadline:
                        time.sleep(0.01)
                        continue
                    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                    raise HostError(
                        f"cgroup: removing {path} failed ({name}): {exc.strerror}; processes left: {self.pids()}"
                    ) from exc


def remove_parent(
    parent: str,
    *,
    layout: CgroupLayout | None = None,
    version: int | None = None,
    own: dict[str, str] | None = None,
    timeout: float = 2.0,
) -> None:
    """Remove a cgroup parent's directories, once every container in it is destroyed.

    Nothing is killed: a parent holds containers, not processes of its own.

    :raises HostError: when a directory still holds cgroups or stays busy.
    """
    if not parent.strip("/"):
        raise InvalidParameter("refusing to remove the root cgroup")
    where = Cgroup(
        os.path.dirname(parent.rstrip("/")),
        os.path.basename(parent.rstrip("/")),
        layout=layout,
        version=version,
        own=own,
    )
    deadline = time.monotonic() + timeout
    for path in sorted(set(where.paths.values())):
        try:
            children = [e.name for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            continue
        if children:
            raise HostError(f"cgroup parent {path} still holds {', '.join(sorted(children))}: destroy those first")
        while True:
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno == errno.EBUSY and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                raise HostError(f"cgroup: removing {path} failed ({name}): {exc.strerror}") from exc


_WARNED_V2_DEVICES: list[bool] = []


def _warn_v2_devices_once() -> None:
    if not _WARNED_V2_DEVICES:
        _WARNED_V2_DEVICES.append(True)
        LOG.warning(
            "cgroup v2: device rules need an eBPF program, which this engine does not load; "
            "device access is not restricted by the cgroup (only the default device nodes exist "
            "in a container's /dev)"
        )


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0
