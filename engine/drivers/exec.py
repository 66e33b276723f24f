r"""The exec driver contract (seed ch. 8): runs a container's processes.

A driver implements ``start`` and ``wait``: the container's shim
(ARCHITECTURE §5) runs ``start`` in a short-lived child of its own, then
``wait``, which blocks until the container's first process exits (``run``
does both in one process); the other methods are called by the daemon on a
running container. A
:class:`Command` is plain data: the daemon writes it into the shim's
``shim.json`` (with the driver's module, class and home) and the shim reads
it back, so every field is JSON-serialisable (:meth:`Command.to_json`).

The container's network namespace is made by the daemon before start (a
persistent namespace bound to a file, as libnetwork does), so the driver
only joins it: ``network["mode"]`` is ``host`` (stay in the host's),
``none``/``bridge`` (join ``network["path"]``) or ``container`` (join
``network["path"]``, another container's ``/proc/PID/ns/net``).

:func:`plan` chooses the driver (``--exec-driver``, see
:mod:`engine.drivers.selection`). This module stays light (every shim
imports it, and with it the cgroup manager, :mod:`engine.sys.cgroups`,
whose :class:`Resources` a :class:`Command` carries): standard library only.
The contract's records are :class:`~engine.utils.records.Record`\ s, which
import neither ``dataclasses`` nor ``inspect`` into the shim; a driver's own
records subclass :class:`Record` as exported here. A third-party exec driver
needs only :mod:`engine.drivers`, :mod:`engine.errors`, :mod:`engine.archive`
and :mod:`engine.sys` (namespaces, mounts, cgroups).
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from engine.drivers.selection import DriverConfig, Selection, named, probe_entry
from engine.errors import EngineError, NotFound, NotSupported
from engine.sys.cgroups import Cgroup, Resources
from engine.utils.records import Record

if TYPE_CHECKING:
    from engine.drivers.discovery import DriverEntry

__all__ = [
    "Command",
    "ExecDriver",
    "ExecStartError",
    "NotSupported",
    "Pipes",
    "ProcessConfig",
    "Record",
    "Resources",
    "home",
    "plan",
    "probe",
]


class ProcessConfig(Record):
    """One process to start in the container: the first one, or an exec.

    ``args[0]`` is looked up in the container's ``PATH`` (from ``env``) when
    it has no ``/``. ``user`` is ``name``, ``uid``, ``name:group`` or
    ``uid:gid``, resolved against the container's /etc/passwd and /etc/group.
    """

    args: list[str]
    env: list[str] = []
    cwd: str = "/"
    user: str = ""
    additional_groups: list[str] = []
    tty: bool = False
    console_size: tuple[int, int] | None = None  # (height, width)
    privileged: bool = False
    no_new_privileges: bool = False
    cap_add: list[str] = []
    cap_drop: list[str] = []


class Command(Record):
    """Everything the exec driver needs to run one container.

    ``mounts`` entries: ``{"type": "bind"|"tmpfs", "source": host path or "",
    "destination": path in the container, "options": ["rbind", "ro", ...],
    "propagation": "rprivate"|...}``, applied in order after the defaults. Besides
    mount(8)'s options, a read-only bind may carry ``rro`` (its submounts read-only too,
    where the kernel can: mount_setattr(2)) or ``rro-force`` (the same, or the start fails).
    """

    id: str
    rootfs: str
    process: ProcessConfig
    container_dir: str = ""
    hostname: str = ""
    domainname: str = ""
    mounts: list[dict] = []
    resources: Resources = Resources()
    network: dict = {"mode": "host"}
    ipc_mode: str = "private"  # private | host | shareable | container:<ns path>
    pid_mode: str = "private"  # private | host
    uts_mode: str = "private"  # private | host
    cgroup_parent: str = "engine"
    readonly_rootfs: bool = False
    masked_paths: list[str] | None = None  # None: Docker's defaults
    readonly_paths: list[str] | None = None  # None: Docker's defaults
    devices: list[dict] = []  # {"path_on_host", "path_in_container", "permissions"}
    sysctls: dict[str, str] = {}
    #: The seccomp profile (Docker's JSON format) of every process of the
    #: container, first and exec'd: the driver resolves it against the
    #: container's capabilities, the machine and the kernel, and loads it
    #: last before execve(2). "" means unconfined.
    seccomp_profile: str = ""
    #: The user namespace the container runs in (``--userns-remap``):
    #: ``{"uids": [[container, host, size], ...], "gids": [...]}`` as
    #: ``/proc/PID/uid_map`` takes them; empty: the host's.
    user_namespace: dict = {}
    shm_size: int = 64 * 1024 * 1024
    tmpfs: dict[str, str] = {}
    #: Resource limits of every process of the container, first and exec'd:
    #: ``{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048}`` (OCI's
    #: ``process.rlimits``); empty: the shim's own limits are inherited.
    rlimits: list[dict] = []
    #: ``/proc/PID/oom_score_adj`` of every process of the container (Docker sets it, 0
    #: included); None: inherited from the shim.
    oom_score_adj: int | None = None
    extra: dict = {}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Command:
        data = dict(data)
        process = dict(data.pop("process"))
        if process.get("console_size") is not None:
            process["console_size"] = tuple(process["console_size"])
        resources = Resources(**data.pop("resources", {}))
        return cls(process=ProcessConfig(**process), resources=resources, **data)


class Pipes(Record):
    """The process's stdio as file descriptors (None: /dev/null).

    With ``ProcessConfig.tty`` and ``console`` (a connected unix socket) the
    driver makes the pty *inside* the container, from the container's own
    devpts, so that ``tty`` and ttyname(3) work there, and sends the pty
    master over ``console`` (SCM_RIGHTS, as runc's console socket) before
    the process starts; stdin/stdout/stderr are then ignored. Without
    ``console``, the three are the same pty slave made by the caller.
    """

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    console: int | None = None


class ExecStartError(EngineError):
    """The process could not be started; the message is Docker's
    (``exec: "x": executable file not found in $PATH``), from which clients
    derive exit codes 127 and 126."""


class HelperSpawner(Protocol):
    """A warm, single-threaded process of the daemon's that forks a driver's helpers.

    The daemon is threaded, so a driver that needs a forked helper (to join
    a container's namespaces, say) would start a new interpreter for each;
    the daemon hands its exec driver one of these instead (the shim fork
    server, :mod:`engine.shim.forkserver`, which has imported the driver's
    module already). The helper is not the caller's child: it reports on
    the descriptors it is given, and its stderr goes to ``stderr``.
    """

    def spawn(self, target: str, args: Sequence[Any], fds: Sequence[int], stderr: int) -> bool:
        """Fork a helper that calls ``target`` (``"module:function"``) as ``function(args, fds)``.

        :param args: JSON-serialisable arguments.
        :param fds: the caller's descriptors to pass; the helper gets ``{caller's number: its own}``.
        :param stderr: the helper's standard error (a pipe the caller reads).
        :returns: whether a helper will run; False when the spawner cannot take
            the request (the caller then starts its helper some other way).
        """
        ...


class ExecDriver(abc.ABC):
    """Runs containers. Subclasses set :attr:`name` (their entry-point name).

    :param home: the driver's state directory (``<root>/execdriver/<name>``);
        the daemon and every shim construct the driver on the same one.
    :param options: the driver's options (``key=value``; no flag sets any yet).
    """

    name: ClassVar[str] = ""
    #: Where containers' cgroups go unless a container or the daemon names a parent: Docker's
    #: ``/docker`` from the root of every hierarchy; a driver that can only work below the
    #: daemon's own cgroups names a relative one.
    default_cgroup_parent: ClassVar[str] = "/docker"
    #: Set by the daemon (never in a shim): where to fork helpers without starting an interpreter.
    helpers: HelperSpawner | None = None

    def __init__(self, home: str, options: Sequence[str] | None = ()) -> None:
        self.home = home
        self.options = list(options or ())

    @classmethod
    def probe(cls, home: str, options: Sequence[str] = ()) -> None:
        """Check that the driver can run here, without changing anything.

        :raises NotSupported: (or ``PrerequisitesNotMet``) with the reason;
            the daemon then refuses to start, naming it.
        """

    def run(self, command: Command, pipes: Pipes, start_callback: Callable[[int], Any] | None = None) -> int:
        """Start the container, call ``start_callback(pid)``, wait, return the exit code.

        The exit code is 128 + N when signal N killed the process. :meth:`start` and
        :meth:`wait` in this process; the container is killed when the callback raises.

        :raises ExecStartError: the process could not be started (raised
            before ``start_callback``, with Docker's message).
        :raises Conflict: the container is already running.
        :raises HostError: the host failed (a cgroup cannot be made).
        """
        pid = self.start(command, pipes)
        if start_callback is not None:
            try:
                start_callback(pid)
            except BaseException:
                self.kill(command, 9)
                self.wait(command)
                raise
        return self.wait(command)

    @abc.abstractmethod
    def start(self, command: Command, pipes: Pipes) -> int:
        """Start the container; the PID of its first process once that runs the container's program.

        The shim calls it in a short-lived child process (its *starter*), so that what the start
        writes to (the plan, the namespaces, the forks) goes with that child, and the shim, which
        lives as long as the container, keeps sharing its pages with the fork server it came
        from. The process (one only) that :meth:`wait` waits for must be a child of the caller:
        the shim is a child subreaper while its starter runs, and adopts it. The caller has no
        other threads (the driver may fork). State that :meth:`wait` and the other methods need
        goes to files, never only into this object.

        :raises ExecStartError: and the others of :meth:`run`; nothing is left running then.
        """

    @abc.abstractmethod
    def wait(self, command: Command) -> int:
        """Wait for the container :meth:`start` started, in this process or in a child of it that
        has exited since; kill what is left of it; its exit code, as :meth:`run`'s.

        The shim calls it once the process it waits for has exited (``waitid`` with
        ``WNOWAIT``), on a driver built anew.
        """

    @abc.abstractmethod
    def kill(self, command: Command, signal: int) -> None:
        """Send ``signal`` to the container's first process.

        :raises NotFound: the container is not running.
        """

    @abc.abstractmethod
    def pause(self, command: Command) -> None:
        """Freeze every process of the container.

        :raises NotFound: the container is not running.
        :raises Conflict: it is already paused.
        """

    @abc.abstractmethod
    def unpause(self, command: Command) -> None:
        """Thaw the container.

        :raises NotFound: the container is not running.
        :raises Conflict: it is not paused.
        """

    @abc.abstractmethod
    def terminate(self, command: Command) -> None:
        """Kill every process of the container and release what it holds (cgroups).

        Safe to call twice, or for a container that no longer runs.

        :raises HostError: what it holds cannot be released.
        """

    @abc.abstractmethod
    def exec(
        self, command: Command, process: ProcessConfig, pipes: Pipes, start_callback: Callable[[int], Any] | None = None
    ) -> int:
        """Run another process inside the running container; return its exit code.

        :raises ExecStartError: the process could not be started (before ``start_callback``).
        :raises NotFound: the container is not running.
        :raises Conflict: the container is paused.
        """

    @abc.abstractmethod
    def get_pids(self, command: Command) -> list[int]:
        """The host PIDs of every process in the container (empty when it runs none).

        :raises HostError: the host cannot tell (its cgroup cannot be read).
        """

    @abc.abstractmethod
    def stats(self, command: Command) -> dict[str, Any]:
        """Resource usage from the cgroups (Docker's stats JSON parts).

        :raises NotFound: the container is not running.
        """

    @abc.abstractmethod
    def update(self, command: Command, resources: Resources) -> None:
        """Change the limits of a running container.

        :raises NotFound: the container is not running.
        :raises InvalidParameter: a limit is out of range (Docker's message).
        :raises HostError: the kernel refused a limit.
        """

    @abc.abstractmethod
    def oom_killed(self, command: Command) -> bool:
        """Whether the kernel's OOM killer killed a process of the container (asked after ``run`` returned).

        :raises HostError: the host cannot tell.
        """

    def info(self) -> dict[str, Any]:
        """Facts for ``/info``.

        Raises nothing: a fact that cannot be read is left out.
        """
        return {}

    def seccomp_support(self) -> str | None:
        """None when the driver applies ``Command.seccomp_profile``, else why it cannot.

        The daemon then runs containers without the default profile and
        refuses custom ones, as dockerd does on a kernel without seccomp.
        """
        return f"the {self.name} exec driver does not apply seccomp profiles"

    def userns_support(self) -> str | None:
        """None when the driver runs containers in ``Command.user_namespace``, else why it cannot.

        The daemon refuses to start with ``--userns-remap`` then.
        """
        return f"the {self.name} exec driver does not run containers in user namespaces"


class CgroupExecDriver(ExecDriver):
    """An exec driver whose every container has a cgroup of its own (an
    :class:`engine.sys.cgroups.Cgroup`): the processes, the stats, the limits and the OOM
    kills come from it. The driver says where it is, :meth:`cgroup_of`."""

    @abc.abstractmethod
    def cgroup_of(self, command: Command) -> Cgroup:
        """The container's cgroup (which may not exist: the container is not running)."""

    def _live_cgroup(self, command: Command) -> Cgroup:
        cg = self.cgroup_of(command)
        if not cg.exists():
            raise NotFound(f"container {command.id} is not running")
        return cg

    def get_pids(self, command: Command) -> list[int]:
        """The host PIDs in the container's cgroup (empty when it has none)."""
        return self.cgroup_of(command).pids()

    def stats(self, command: Command) -> dict[str, Any]:
        """Docker's stats JSON parts (memory, cpu, pids, blkio) from the container's cgroup.

        :raises NotFound: the container has no cgroup.
        """
        return self._live_cgroup(command).stats()

    def update(self, command: Command, resources: Resources) -> None:
        """Apply new limits to the running container (device rules stay as they are)."""
        self._live_cgroup(command).apply(resources, update=True)

    def oom_killed(self, command: Command) -> bool:
        """Whether the OOM killer killed a process of the container (asked after ``run`` returned)."""
        cg = self.cgroup_of(command)
        return cg.exists() and cg.oom_killed()


def home(root: str, name: str) -> str:
    """An exec driver's state directory: ``<root>/execdriver/<name>``."""
    return os.path.join(root, "execdriver", name)


def probe(entry: DriverEntry, config: DriverConfig) -> None:
    """Probe an installed exec driver in its home with its options.

    :raises DriverSelectionError: it failed to load.
    :raises NotSupported: (or a subclass) it cannot run here.
    """
    probe_entry(entry, home(config.root, entry.name), config.exec_options)


def plan(config: DriverConfig, drivers: Mapping[str, DriverEntry]) -> Selection:
    """The exec driver: ``--exec-driver`` (default ``native``), or why it cannot be used.

    :raises DriverSelectionError: it is not installed, failed to load, or cannot run here.
    """
    name = config.exec_driver
    return named("exec", name, "--exec-driver", drivers, home(config.root, name), config.exec_options)
