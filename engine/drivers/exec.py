"""The exec driver contract (seed ch. 8): runs a container's processes.

``run`` is called inside the container's shim (ARCHITECTURE §5) and blocks
until the container's first process exits; the other methods are called by
the daemon on a running container.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from engine.errors import NotSupported

__all__ = ["Command", "ExecDriver", "NotSupported", "Pipes", "ProcessConfig", "Resources"]


@dataclass
class Resources:
    """Cgroup limits (0 / -1 / "" mean "not set")."""

    memory: int = 0
    memory_swap: int = 0
    memory_reservation: int = 0
    cpu_shares: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    pids_limit: int = 0
    blkio_weight: int = 0
    oom_kill_disable: bool = False


@dataclass
class ProcessConfig:
    """The process to start: the container's first one or an exec."""

    entrypoint: str
    arguments: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    user: str = ""
    working_dir: str = ""
    tty: bool = False
    privileged: bool = False
    console_size: tuple[int, int] | None = None


@dataclass
class Command:
    """Everything the exec driver needs to run one container."""

    id: str
    rootfs: str
    process: ProcessConfig
    hostname: str = ""
    domainname: str = ""
    mounts: list[dict] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    network: dict = field(default_factory=dict)
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    group_add: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    readonly_rootfs: bool = False
    container_dir: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Pipes:
    """The container's stdio as file descriptors (None: /dev/null)."""

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None


class ExecDriver(abc.ABC):
    """Runs containers. Subclasses set :attr:`name` (their entry-point name)."""

    name: ClassVar[str] = ""

    def __init__(self, home: str, options: Any = None) -> None:
        self.home = home
        self.options = options

    @classmethod
    def probe(cls, home: str) -> None:
        """Raise :class:`NotSupported` with the reason if it cannot run here."""

    @abc.abstractmethod
    def run(self, command: Command, pipes: Pipes, start_callback: Callable[[int], Any] | None = None) -> int:
        """Start the container, call ``start_callback(pid)``, wait, return the exit code."""

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
        """Kill every process of the container and release what it holds."""

    @abc.abstractmethod
    def exec(self, command: Command, process: ProcessConfig, pipes: Pipes,
             start_callback: Callable[[int], Any] | None = None) -> int:
        """Run another process inside the running container; return its exit code."""

    @abc.abstractmethod
    def get_pids(self, id: str) -> list[int]:
        """The host PIDs of every process in the container."""

    def info(self) -> dict[str, Any]:
        """Facts for ``/info``."""
        return {}
