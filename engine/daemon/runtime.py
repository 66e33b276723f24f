"""What a container's process runs with besides its own config: the runtime's name, the init
(``--init``) and the resource limits (``--ulimit``, the daemon's ``default-ulimits``).

* **Runtime names.** Docker calls its default runtime ``runc``, and clients
  ask for it by that name (Nomad's ``allow_runtimes``, docker-py's
  ``runtime="runc"``). Here the runtime is the selected exec driver: it
  answers to its own name (``native``) and to ``runc``; ``/info`` lists
  both and reports ``runc`` as the default; any other name is refused at
  create with dockerd's words.
* **The init.** ``--init`` (or the daemon's ``init``) runs Docker's choice
  of init, tini, as PID 1: the binary (``--init-path``, else ``docker-init``
  on the ``PATH`` as dockerd finds it, which Debian's docker.io links to
  tini-static, else Debian's ``tini-static``) is bind-mounted read-only at
  ``/sbin/docker-init`` and the command becomes ``/sbin/docker-init --
  CMD...``, only for a container with a PID namespace of its own (moby
  ``WithCommonOptions``). It must be a static binary: it runs on the
  container's root file system.
* **Ulimits.** A container's ``Ulimits`` merged with the daemon's defaults
  (a limit the container names wins, moby ``mergeUlimits``), as the exec
  driver's ``rlimits`` (``RLIMIT_NOFILE`` ...). This engine runs without
  CAP_SYS_RESOURCE on some hosts: a hard limit above the daemon's own then
  fails the start, as runc fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

from engine.errors import InvalidParameter, NotFound

__all__ = [
    "CONTAINER_INIT_PATH",
    "DEFAULT_RUNTIME",
    "INIT_BINARIES",
    "check_runtime",
    "command_options",
    "find_init",
    "init_version",
    "merged_ulimits",
    "rlimits",
    "runtimes",
    "uses_init",
]

#: The name Docker gives its default runtime, which the default exec driver answers to.
DEFAULT_RUNTIME = "runc"
#: Where the init is mounted in the container (moby's ``inContainerInitPath``).
CONTAINER_INIT_PATH = "/sbin/docker-init"
#: The init binaries looked for on the ``PATH``, in order: Docker's name, then Debian's static tini.
INIT_BINARIES = ("docker-init", "tini-static")


def runtimes(exec_driver_name: str, driver_path: str) -> dict[str, dict[str, str]]:
    """``/info``'s ``Runtimes``: the exec driver under its own name and as ``runc``."""
    return {exec_driver_name: {"path": driver_path}, DEFAULT_RUNTIME: {"path": driver_path}}


def check_runtime(host_config: dict, exec_driver_name: str) -> None:
    """Fill in and check ``HostConfig.Runtime`` at create (``runc`` when none is given).

    :raises InvalidParameter: ``Unknown runtime specified X`` (dockerd's words).
    """
    name = host_config.get("Runtime") or DEFAULT_RUNTIME
    if name not in (DEFAULT_RUNTIME, exec_driver_name):
        raise InvalidParameter(f"Unknown runtime specified {name}")
    host_config["Runtime"] = name


def uses_init(host_config: dict, daemon_init: bool) -> bool:
    """Whether the container runs the init: ``Init`` true, or unset and the daemon's ``init``,
    and a PID namespace of its own (in another one an init runs already)."""
    pid_mode = host_config.get("PidMode") or ""
    if pid_mode == "host" or pid_mode.startswith("container:"):
        return False
    init = host_config.get("Init")
    return bool(init) if init is not None else daemon_init


def find_init(init_path: str = "", search_path: str | None = None) -> str:
    """The init binary on the host: ``init_path`` (``--init-path``), else the first of
    :data:`INIT_BINARIES` on ``search_path`` (the daemon's ``PATH``).

    :raises NotFound: none is there (Go's ``exec.LookPath`` words, as dockerd reports them).
    """
    if init_path:
        if not os.access(init_path, os.X_OK):
            raise NotFound(f'exec: "{init_path}": stat {init_path}: no such file or directory')
        return init_path
    for name in INIT_BINARIES:
        found = shutil.which(name, path=search_path)
        if found:
            return found
    raise NotFound(f'exec: "{INIT_BINARIES[0]}": executable file not found in $PATH')


def init_version(path: str) -> str:
    """The commit ``path --version`` names (``tini version 0.19.0 - git.de40ad0`` -> ``de40ad0``),
    as ``/info``'s ``InitCommit`` shows it (moby's ``parseInitVersion``): "" for a build that
    names none (Debian's), "N/A" when the binary cannot tell."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return "N/A"
    if not out.startswith("tini version "):
        return "N/A"
    found = re.search(r" - git\.([0-9a-f]+)", out)
    return found.group(1) if found else ""


def merged_ulimits(host_config: dict, defaults: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The container's ``Ulimits`` with the daemon's ``default-ulimits`` it does not name."""
    own = list(host_config.get("Ulimits") or [])
    names = {u.get("Name") for u in own}
    return own + [dict(u) for name, u in sorted(defaults.items()) if name not in names]


def rlimits(ulimits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ulimits as the exec driver's ``rlimits``: ``{"type": "RLIMIT_NOFILE", "soft", "hard"}``."""
    return [
        {
            "type": "RLIMIT_" + str(u.get("Name", "")).upper(),
            "soft": int(u.get("Soft", 0)),
            "hard": int(u.get("Hard", 0)),
        }
        for u in ulimits
    ]


def command_options(host_config: dict, config: Any, exec_driver: Any = None) -> dict[str, Any]:
    """What :func:`engine.daemon.hostconfig.build_command` takes from the daemon's configuration
    for a start: ``init_binary`` and ``ulimits``.

    :param config: the daemon's :class:`~engine.daemon.config.Config` (``init``, ``init_path``,
        ``default_ulimits``, ``cgroup_parent``).
    :param exec_driver: the exec driver (its ``default_cgroup_parent``).
    :raises NotFound: the container wants the init and there is none.
    """
    return {
        "init_binary": find_init(config.init_path) if uses_init(host_config, config.init) else "",
        "ulimits": merged_ulimits(host_config, config.default_ulimits),
        "cgroup_parent": host_config.get("CgroupParent") or default_cgroup_parent(config, exec_driver),
    }


def cgroup_driver(config: Any) -> str:
    """``cgroupfs`` or ``systemd``: the last ``native.cgroupdriver`` of ``--exec-opt`` (moby's
    ``getCD``), ``cgroupfs`` without one."""
    driver = "cgroupfs"
    for option in getattr(config, "exec_opts", None) or []:
        key, _, value = option.partition("=")
        if key.strip().lower() == "native.cgroupdriver":
            driver = value.strip()
    return driver


def default_cgroup_parent(config: Any, exec_driver: Any = None) -> str:
    """Where containers go unless they say: ``--cgroup-parent``, else the exec driver's default
    (Docker's ``/docker``; ``system.slice`` with the systemd cgroup driver)."""
    if getattr(config, "cgroup_parent", ""):
        return config.cgroup_parent
    if cgroup_driver(config) == "systemd":
        return "system.slice"
    return getattr(exec_driver, "default_cgroup_parent", "/docker")


def check_cgroup_parent(parent: str, config: Any) -> None:
    """A cgroup parent must be a slice with the systemd cgroup driver (dockerd's check).

    :raises InvalidParameter: ``cgroup-parent for systemd cgroup should be a valid slice named as "xxx.slice"``.
    """
    if cgroup_driver(config) == "systemd" and (len(parent) <= 6 or not parent.endswith(".slice")):
        raise InvalidParameter('cgroup-parent for systemd cgroup should be a valid slice named as "xxx.slice"')
