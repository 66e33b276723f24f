"""The exec driver contract (seed ch. 8): runs a container's processes.

``run`` is called inside the container's shim (ARCHITECTURE §5) and blocks
until the container's first process exits; the other methods are called by
the daemon on a running container. A :class:`Command` is plain data: it is
written to ``<container dir>/command.json`` by the daemon and read back by
the shim, so every field is JSON-serialisable (:meth:`Command.to_json`).

The container's network namespace is made by the daemon before start (a
persistent namespace bound to a file, as libnetwork does), so the driver
only joins it: ``network["mode"]`` is ``host`` (stay in the host's),
``none``/``bridge`` (join ``network["path"]``) or ``container`` (join
``network["path"]``, another container's ``/proc/PID/ns/net``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

from engine.errors import EngineError, NotSupported
from engine.utils.records import Record

__all__ = ["Command", "ExecDriver", "ExecStartError", "NotSupported", "Pipes", "ProcessConfig", "Resources"]


class Resources(Record):
    """Cgroup limits; 0, -1 and "" mean "not set" (Docker's HostConfig names)."""

    memory: int = 0
    memory_swap: int = 0
    memory_reservation: int = 0
    memory_swappiness: int = -1
    kernel_memory: int = 0
    oom_kill_disable: bool = False
    cpu_shares: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    pids_limit: int = 0
    blkio_weight: int = 0
    #: Device cgroup rules ``"c 1:3 rwm"``: the allow-list; empty means Docker's default list.
    device_rules: list[str] = []


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
    "propagation": "rprivate"|...}``, applied in order after the defaults.
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
    shm_size: int = 64 * 1024 * 1024
    tmpfs: dict[str, str] = {}
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


class ExecDriver(abc.ABC):
    """Runs containers. Subclasses set :attr:`name` (their entry-point name).

    :param home: the driver's state directory (``<root>/execdriver/<name>``).
    """

    name: ClassVar[str] = ""

    def __init__(self, home: str, options: Any = None) -> None:
        self.home = home
        self.options = options

    @classmethod
    def probe(cls, home: str) -> None:
        """Raise :class:`NotSupported` with the reason if it cannot run here."""

    @abc.abstractmethod
    def run(self, command: Command, pipes: Pipes, start_callback: Callable[[int], Any] | None = None) -> int:
        """Start the container, call ``start_callback(pid)``, wait, return the exit code.

        :raises ExecStartError: the process could not be started.
        """

    @abc.abstractmethod
    def kill(self, command: Command, signal: int) -> None:
        """Send ``signal`` to the container's first process."""

    @abc.abstractmethod
    def pause(self, command: Command) -> None:
        """Freeze every process of the container."""

    @abc.abstractmethod
    def unpause(self, command: Command) -> None:
        """Thaw the container."""

    @abc.abstractmethod
    def terminate(self, command: Command) -> None:
        """Kill every process of the container and release what it holds (cgroups)."""

    @abc.abstractmethod
    def exec(
        self, command: Command, process: ProcessConfig, pipes: Pipes, start_callback: Callable[[int], Any] | None = None
    ) -> int:
        """Run another process inside the running container; return its exit code."""

    @abc.abstractmethod
    def get_pids(self, command: Command) -> list[int]:
        """The host PIDs of every process in the container."""

    @abc.abstractmethod
    def stats(self, command: Command) -> dict[str, Any]:
        """Resource usage from the cgroups (Docker's stats JSON parts)."""

    @abc.abstractmethod
    def update(self, command: Command, resources: Resources) -> None:
        """Change the limits of a running container."""

    @abc.abstractmethod
    def oom_killed(self, command: Command) -> bool:
        """Whether the kernel's OOM killer killed a process of the container."""

    def info(self) -> dict[str, Any]:
        """Facts for ``/info``."""
        return {}

    def seccomp_support(self) -> str | None:
        """None when the driver applies ``Command.seccomp_profile``, else why it cannot.

        The daemon then runs containers without the default profile and
        refuses custom ones, as dockerd does on a kernel without seccomp.
        """
        return f"the {self.name} exec driver does not apply seccomp profiles"
