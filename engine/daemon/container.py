"""A container and its state (seed ch. 8 §2, moby ``container/``).

A :class:`Container` holds what was asked for (``config``: the API's
container.Config, merged with the image's; ``host_config``), what the daemon
decided (name, paths, network settings, mounts) and its :class:`State`. It is
stored in ``<root>/containers/<id>/config.v2.json`` and ``hostconfig.json``,
each written atomically after every change, ``hostconfig.json`` first: a
container exists once its ``config.v2.json`` does (see
:mod:`engine.daemon.store`). Its phase and the slot its operations take
turns in are its :class:`~engine.daemon.statemachine.Machine`'s.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from engine.daemon import changes
from engine.daemon.statemachine import Machine
from engine.sys.fs import atomic_write
from engine.utils.host import read_text
from engine.utils.timefmt import rfc3339nano
from engine.utils.units import human_duration

#: The record; a container exists once it does.
CONFIG_FILE = "config.v2.json"
HOSTCONFIG_FILE = "hostconfig.json"


@dataclass
class State:
    """moby's ``container.State``; guarded by the container's lock.

    The flags are Docker's and what the API shows; the container's
    :class:`~engine.daemon.statemachine.Machine` sets them at each transition.
    """

    running: bool = False
    paused: bool = False
    restarting: bool = False
    oom_killed: bool = False
    removal_in_progress: bool = False
    dead: bool = False
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    shim_pid: int = 0
    #: ``{"Status", "FailingStreak", "Log"}`` once a healthcheck ran (moby's ``State.Health``,
    #: kept by :mod:`engine.daemon.health`); None for a container without one.
    health: dict | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        # The owning container's ID, set by Container (not a field: not persisted, not compared).
        changes.container_changed(self.__dict__.get("_owner"))

    @property
    def status(self) -> str:
        """``created``, ``running``, ``paused``, ``restarting``, ``removing``, ``exited`` or ``dead``."""
        if self.running:
            if self.paused:
                return "paused"
            if self.restarting:
                return "restarting"
            return "running"
        if self.removal_in_progress:
            return "removing"
        if self.dead:
            return "dead"
        if self.started_at == 0:
            return "created"
        return "exited"

    def describe(self, now: float | None = None) -> str:
        """The ``Status`` column of ``docker ps`` (moby ``State.String``)."""
        now = time.time() if now is None else now
        if self.running:
            if self.paused:
                return f"Up {human_duration(now - self.started_at)} (Paused)"
            if self.restarting:
                return f"Restarting ({self.exit_code}) {human_duration(now - self.finished_at)} ago"
            if self.health:
                from engine.daemon.health import describe

                return f"Up {human_duration(now - self.started_at)} ({describe(self.health)})"
            return f"Up {human_duration(now - self.started_at)}"
        if self.removal_in_progress:
            return "Removal In Progress"
        if self.dead:
            return "Dead"
        if self.started_at == 0:
            return "Created"
        if self.finished_at == 0:
            return ""
        return f"Exited ({self.exit_code}) {human_duration(now - self.finished_at)} ago"

    def to_api(self) -> dict[str, Any]:
        doc = {
            "Status": self.status,
            "Running": self.running,
            "Paused": self.paused,
            "Restarting": self.restarting,
            "OOMKilled": self.oom_killed,
            "Dead": self.dead,
            "Pid": self.pid,
            "ExitCode": self.exit_code,
            "Error": self.error,
            "StartedAt": rfc3339nano(self.started_at),
            "FinishedAt": rfc3339nano(self.finished_at),
        }
        if self.health is not None:
            doc["Health"] = {
                "Status": self.health.get("Status", ""),
                "FailingStreak": int(self.health.get("FailingStreak") or 0),
                "Log": list(self.health.get("Log") or []),
            }
        return doc

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Container:
    """One container; persisted in its directory."""

    id: str
    name: str
    created: float
    image_id: str
    config: dict
    host_config: dict
    path: str = ""
    args: list[str] = field(default_factory=list)
    driver: str = ""
    top_layer: str | None = None  # the image's top chain ID, the init layer's parent
    root: str = ""  # <daemon root>/containers/<id>
    state: State = field(default_factory=State)
    network_settings: dict = field(default_factory=dict)
    mounts: list[dict] = field(default_factory=list)
    restart_count: int = 0
    has_been_started_before: bool = False
    has_been_manually_stopped: bool = False
    #: Its running execs (not persisted: execs live in this daemon's memory).
    exec_ids: list[str] = field(default_factory=list)
    log_path: str = ""
    platform: str = "linux"

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name == "state":
            object.__setattr__(value, "_owner", self.id)
        changes.container_changed(self.__dict__.get("id"))

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        #: The phase and the operation slot (every transition goes through it).
        self.machine = Machine(self.state, self.changed)
        #: Its exit is being processed (what the run held is being released).
        self.exiting = False
        self.removed = False
        #: Counts exits, so that ``wait(next-exit)`` can tell a new one.
        self.exits = 0
        #: Current restart back-off in seconds (the restart manager's).
        self.backoff = 0.0
        #: The next exit is final whatever the restart policy (moby's
        #: ``ExitOnNext``): set by stop and kill, cleared by a start. Not
        #: persisted: a restarted daemon applies the policy afresh.
        self.exit_on_next = False

    # paths
    @property
    def short_id(self) -> str:
        return self.id[:12]

    def path_of(self, name: str) -> str:
        return os.path.join(self.root, name)

    @property
    def hostname_path(self) -> str:
        return self.path_of("hostname")

    @property
    def hosts_path(self) -> str:
        return self.path_of("hosts")

    @property
    def resolv_conf_path(self) -> str:
        return self.path_of("resolv.conf")

    @property
    def tty(self) -> bool:
        return bool(self.config.get("Tty"))

    @property
    def init_layer(self) -> str:
        return self.id + "-init"

    # persistence
    def to_disk(self) -> None:
        doc = {
            "ID": self.id,
            "Name": self.name,
            "Created": self.created,
            "ImageID": self.image_id,
            "Config": self.config,
            "Path": self.path,
            "Args": self.args,
            "Driver": self.driver,
            "TopLayer": self.top_layer,
            "State": self.state.to_json(),
            "NetworkSettings": self.network_settings,
            "MountPoints": self.mounts,
            "RestartCount": self.restart_count,
            "HasBeenStartedBefore": self.has_been_started_before,
            "HasBeenManuallyStopped": self.has_been_manually_stopped,
            "LogPath": self.log_path,
            "Platform": self.platform,
        }
        # The host config first: a crash between the two leaves no record (the
        # create is undone at start-up) rather than one without a host config.
        # The record's write syncs the directory for both renames. A host config
        # that is on disk as it is now is not written again: a start, a stop and
        # an exit change only the record (an fsync less each).
        host_config = json.dumps(self.host_config).encode()
        if host_config != self.__dict__.get("_host_config_on_disk"):
            atomic_write(self.path_of(HOSTCONFIG_FILE), host_config, mode=0o600, sync_dir=False)
            object.__setattr__(self, "_host_config_on_disk", host_config)
        atomic_write(self.path_of(CONFIG_FILE), json.dumps(doc).encode(), mode=0o600)
        # What was persisted may have been changed in place (the dicts and lists).
        changes.container_changed(self.id)

    @classmethod
    def from_disk(cls, root: str) -> Container:
        with open(os.path.join(root, CONFIG_FILE), "rb") as fh:
            doc = json.load(fh)
        with open(os.path.join(root, HOSTCONFIG_FILE), "rb") as fh:
            host_config = json.load(fh)
        c = cls(
            id=doc["ID"],
            name=doc["Name"],
            created=doc["Created"],
            image_id=doc["ImageID"],
            config=doc["Config"],
            host_config=host_config,
            path=doc.get("Path", ""),
            args=doc.get("Args", []),
            driver=doc.get("Driver", ""),
            top_layer=doc.get("TopLayer"),
            root=root,
            state=State.from_json(doc.get("State", {})),
            network_settings=doc.get("NetworkSettings", {}),
            mounts=doc.get("MountPoints", []),
            restart_count=doc.get("RestartCount", 0),
            has_been_started_before=doc.get("HasBeenStartedBefore", False),
            has_been_manually_stopped=doc.get("HasBeenManuallyStopped", False),
            log_path=doc.get("LogPath", ""),
            platform=doc.get("Platform", "linux"),
        )
        object.__setattr__(c, "_host_config_on_disk", json.dumps(host_config).encode())
        return c

    def read_file(self, name: str) -> str:
        return read_text(self.path_of(name))
