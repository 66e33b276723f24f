"""The container service: create, start, stop, kill, pause, wait, remove,
rename, and the monitor that learns of exits and applies restart policies
(seed ch. 8 §2 and ch. 4 §4.10; moby ``daemon/``).

A running container lives in its shim (:mod:`engine.shim`); the daemon keeps
a pidfd for each shim and polls them in one monitor thread. When a shim
exits, its container has exited: the exit status is read from
``exit.json``, what the daemon set up for the container is released, and the
restart policy decides what happens next. On start the daemon re-adopts the
shims that are still alive (live restore).
"""

from __future__ import annotations

import logging
import os
import secrets
import select
import signal as signals
import threading
import time
from collections.abc import Callable
from typing import Any

from engine.daemon import netns, resolvconf
from engine.daemon.container import Container, State
from engine.daemon.names import random_name
from engine.daemon.volumes import VolumeStore, api_mount, parse_bind, parse_mount, parse_tmpfs
from engine.drivers.exec import Command, ExecDriver, ExecStartError, ProcessConfig, Resources
from engine.errors import Conflict, EngineError, HostError, InvalidParameter, NoSuchContainer, NotFound, NotModified
from engine.utils.fs import safe_rmtree
from engine.utils.truncindex import TruncIndex

LOG = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 10
RESTART_POLICIES = ("", "no", "always", "on-failure", "unless-stopped")
#: Restart back-off (moby restartmanager): start at 100 ms, double, cap at a
#: minute, and start over when a container ran for 10 s.
BACKOFF_START, BACKOFF_MAX, BACKOFF_RESET_AFTER = 0.1, 60.0, 10.0

SIGNALS = {
    name[3:]: getattr(signals, name)
    for name in dir(signals)
    if name.startswith("SIG") and not name.startswith("SIG_") and isinstance(getattr(signals, name), int)
}


def parse_signal(value: str | int | None, default: int = signals.SIGKILL) -> int:
    """``9``, ``KILL``, ``SIGKILL`` -> 9 (moby ``signal.ParseSignal``)."""
    if value in (None, ""):
        return default
    text = str(value).upper()
    if text.isdigit():
        num = int(text)
        if num <= 0 or num > 64:
            raise InvalidParameter(f"Invalid signal: {value}")
        return num
    text = text[3:] if text.startswith("SIG") else text
    if text not in SIGNALS:
        raise InvalidParameter(f"Invalid signal: {value}")
    return SIGNALS[text]


def merge_image_config(user: dict, image: dict) -> dict:
    """moby's ``merge(userConf, imageConf)``: what the image supplies when the user did not."""
    out = dict(user)
    if not out.get("ExposedPorts"):
        out["ExposedPorts"] = dict(image.get("ExposedPorts") or {}) or None
    else:
        out["ExposedPorts"] = {**(image.get("ExposedPorts") or {}), **out["ExposedPorts"]}
    env = list(out.get("Env") or [])
    keys = {e.split("=", 1)[0] for e in env}
    out["Env"] = [e for e in image.get("Env") or [] if e.split("=", 1)[0] not in keys] + env
    labels = dict(image.get("Labels") or {})
    labels.update(out.get("Labels") or {})
    out["Labels"] = labels
    if not out.get("Entrypoint"):
        if not out.get("Cmd"):
            out["Cmd"] = image.get("Cmd")
        if out.get("Entrypoint") is None:
            out["Entrypoint"] = image.get("Entrypoint")
    if not out.get("WorkingDir"):
        out["WorkingDir"] = image.get("WorkingDir", "")
    vols = dict(image.get("Volumes") or {})
    vols.update(out.get("Volumes") or {})
    out["Volumes"] = vols or None
    if not out.get("StopSignal"):
        out["StopSignal"] = image.get("StopSignal", "")
    if not out.get("User"):
        out["User"] = image.get("User", "")
    if out.get("Healthcheck") is None and image.get("Healthcheck") is not None:
        out["Healthcheck"] = image["Healthcheck"]
    return out


def validate_host_config(hc: dict, ncpu: int) -> list[str]:
    """moby's ``verifyContainerSettings`` checks; returns warnings."""
    warnings: list[str] = []
    for entry in hc.get("ExtraHosts") or []:
        resolvconf.parse_extra_host(entry)
    policy = hc.get("RestartPolicy") or {}
    name = policy.get("Name", "") or ""
    retries = int(policy.get("MaximumRetryCount") or 0)
    if name not in RESTART_POLICIES:
        raise InvalidParameter(f"invalid restart policy '{name}'")
    if retries < 0:
        raise InvalidParameter("maximum retry count cannot be negative")
    if retries and name != "on-failure":
        raise InvalidParameter(f"maximum retry count cannot be used with restart policy '{name}'")
    if hc.get("AutoRemove") and name not in ("", "no"):
        raise InvalidParameter("can't create 'AutoRemove' container with restart policy")
    memory = int(hc.get("Memory") or 0)
    swap = int(hc.get("MemorySwap") or 0)
    if memory < 0 or (0 < memory < 6 * 1024 * 1024):
        raise InvalidParameter("Minimum memory limit allowed is 6MB")
    if memory == 0 and swap > 0:
        raise InvalidParameter("You should always set the Memory limit when using Memoryswap limit, see usage")
    if swap > 0 and swap < memory:
        raise InvalidParameter("Minimum memoryswap limit should be larger than memory limit, see usage")
    reservation = int(hc.get("MemoryReservation") or 0)
    if memory and reservation and reservation > memory:
        raise InvalidParameter("Minimum memory limit can not be less than memory reservation limit, see usage")
    swappiness = hc.get("MemorySwappiness")
    if swappiness is not None and swappiness != -1 and not 0 <= int(swappiness) <= 100:
        raise InvalidParameter(f"Invalid value: {swappiness}, valid memory swappiness range is 0-100")
    nano = int(hc.get("NanoCpus") or 0)
    period = int(hc.get("CpuPeriod") or 0)
    quota = int(hc.get("CpuQuota") or 0)
    if nano and (period or quota):
        raise InvalidParameter("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if nano < 0 or nano > ncpu * 1_000_000_000:
        raise InvalidParameter(f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available")
    if period and not 1000 <= period <= 1_000_000:
        raise InvalidParameter("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)")
    if quota and quota < 1000 and quota != -1:
        raise InvalidParameter("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    if int(hc.get("CpuShares") or 0) < 0:
        raise InvalidParameter("invalid CPU shares: must be a positive number")
    if int(hc.get("BlkioWeight") or 0) and not 10 <= int(hc["BlkioWeight"]) <= 1000:
        raise InvalidParameter("Range of blkio weight is from 10 to 1000")
    if int(hc.get("PidsLimit") or 0) < -1:
        raise InvalidParameter("invalid PidsLimit")
    mode = hc.get("NetworkMode") or "default"
    if mode.startswith("container:") and (hc.get("PortBindings") or hc.get("PublishAllPorts")):
        raise InvalidParameter("conflicting options: port publishing and the container type network mode")
    return warnings


def resources_of(hc: dict) -> Resources:
    nano = int(hc.get("NanoCpus") or 0)
    period = int(hc.get("CpuPeriod") or 0)
    quota = int(hc.get("CpuQuota") or 0)
    if nano:
        period, quota = 100_000, nano * 100_000 // 1_000_000_000
    pids = int(hc.get("PidsLimit") or 0)
    return Resources(
        memory=int(hc.get("Memory") or 0),
        memory_swap=int(hc.get("MemorySwap") or 0),
        memory_reservation=int(hc.get("MemoryReservation") or 0),
        memory_swappiness=int(hc["MemorySwappiness"]) if hc.get("MemorySwappiness") is not None else -1,
        oom_kill_disable=bool(hc.get("OomKillDisable")),
        cpu_shares=int(hc.get("CpuShares") or 0),
        cpu_period=period,
        cpu_quota=quota,
        cpuset_cpus=hc.get("CpusetCpus") or "",
        cpuset_mems=hc.get("CpusetMems") or "",
        pids_limit=pids if pids > 0 else 0,
        blkio_weight=int(hc.get("BlkioWeight") or 0),
        device_rules=list(hc.get("DeviceCgroupRules") or []),
    )


class ContainerService:
    """Every container of the daemon (the seed's ``daemon.containers``).

    :param daemon: the daemon (config, graph, link graph, events, plugins).
    :param exec_driver: the selected exec driver.
    :param volumes: the volume store.
    """

    def __init__(self, daemon: Any, exec_driver: ExecDriver, volumes: VolumeStore) -> None:
        self.daemon = daemon
        self.exec_driver = exec_driver
        self.volumes = volumes
        self.dir = os.path.join(daemon.root, "containers")
        self.netns_dir = os.path.join(daemon.root, "netns")
        self._containers: dict[str, Container] = {}
        self.index = TruncIndex()
        self._lock = threading.RLock()
        self.monitor = Monitor(self)
        from engine.shim.client import ForkServer

        #: Launches the shims: a warm process with the shim and the driver imported (ARCHITECTURE §5);
        #: its ``pythonpath`` (where ``engine`` and the driver's package are) serves direct launches too.
        self.shim_launcher = ForkServer(preload=[type(exec_driver).__module__])
        #: Attach connections waiting for a container to start, by container ID.
        self.pending_attach: dict[str, list[Any]] = {}
        #: Called with (container, request) to set up networking; issue 5's bridge hooks in here.
        self.network: Any = None
        volumes.users = self.volume_users

    # lookups
    def all(self) -> list[Container]:
        with self._lock:
            return list(self._containers.values())

    def get(self, name: str) -> Container:
        """By full ID, name (with or without ``/``) or unique ID prefix (moby ``GetContainer``)."""
        if not name:
            raise NoSuchContainer(name=name)
        c = self._containers.get(name)
        if c is not None:
            return c
        linkgraph = self.daemon.linkgraph
        full = name if name.startswith("/") else "/" + name
        entity = linkgraph.get(full) if "/" not in full[1:] else None
        if entity is not None and entity.id in self._containers:
            return self._containers[entity.id]
        try:
            cid = self.index.get(name)
        except NotFound:
            raise NoSuchContainer(name=name) from None
        except InvalidParameter:
            raise
        return self._containers[cid]

    def counts(self) -> dict[str, int]:
        out = {"total": 0, "running": 0, "paused": 0, "stopped": 0}
        for c in self.all():
            out["total"] += 1
            if c.state.running and c.state.paused:
                out["paused"] += 1
            elif c.state.running:
                out["running"] += 1
            else:
                out["stopped"] += 1
        return out

    def image_users(self, image_id: str) -> list[tuple[str, bool]]:
        return [(c.id, c.state.running) for c in self.all() if c.image_id == image_id]

    def layer_tops(self) -> list[str]:
        return [c.top_layer for c in self.all() if c.top_layer]

    def volume_users(self, name: str) -> list[str]:
        return [c.id for c in self.all() if any(m.get("Name") == name for m in c.mounts)]

    # create
    def create(
        self, config: dict, host_config: dict | None, name: str = "", networking: dict | None = None
    ) -> tuple[Container, list[str]]:
        graph = self.daemon.graph
        hc = dict(host_config or {})
        warnings = validate_host_config(hc, os.cpu_count() or 1)
        image_name = config.get("Image") or ""
        if not image_name:
            raise InvalidParameter("No image was specified")
        image = graph.lookup(image_name)
        merged = merge_image_config(config, image.container_config)
        entrypoint = list(merged.get("Entrypoint") or [])
        cmd = list(merged.get("Cmd") or [])
        argv = entrypoint + cmd
        if not argv:
            raise InvalidParameter("No command specified")
        if name:
            from engine.graphdb import validate_name

            name = validate_name(name)
        cid = secrets.token_hex(32)
        while cid in self._containers or cid[:12].isdigit():
            cid = secrets.token_hex(32)
        name = self._reserve_name(name, cid)
        root = os.path.join(self.dir, cid)
        driver = self.daemon.graphdriver
        created_layers: list[str] = []
        made_volumes: list[str] = []
        try:
            os.makedirs(root, mode=0o700)
            if not merged.get("Hostname"):
                # A host-network container is named like its host (moby's create).
                host_net = (hc.get("NetworkMode") or "") == "host"
                merged["Hostname"] = os.uname().nodename if host_net else cid[:12]
            merged["Image"] = image_name
            hc.setdefault("NetworkMode", "default")
            if not hc.get("NetworkMode"):
                hc["NetworkMode"] = "default"
            hc.setdefault("LogConfig", {"Type": "json-file", "Config": {}})
            if not (hc.get("LogConfig") or {}).get("Type"):
                hc["LogConfig"] = {"Type": "json-file", "Config": (hc.get("LogConfig") or {}).get("Config") or {}}
            if hc["LogConfig"]["Type"] not in ("json-file",):
                raise InvalidParameter(f"logging driver {hc['LogConfig']['Type']!r} is not supported; use json-file")
            hc.setdefault("RestartPolicy", {"Name": "no", "MaximumRetryCount": 0})
            top = image.top_layer.split(":", 1)[1] if image.top_layer else None
            # Both layers get the container's --storage-opt, as in moby's layer store.
            storage_opt = hc.get("StorageOpt") or None
            if storage_opt is not None and not (
                isinstance(storage_opt, dict) and all(isinstance(v, str) for v in storage_opt.values())
            ):
                raise InvalidParameter("HostConfig.StorageOpt must be an object of strings")
            driver.create_read_write(cid + "-init", top, storage_opt=storage_opt)
            created_layers.append(cid + "-init")
            self._populate_init_layer(cid + "-init")
            driver.create_read_write(cid, cid + "-init", storage_opt=storage_opt)
            created_layers.append(cid)
            c = Container(
                id=cid,
                name=name,
                created=time.time(),
                image_id=image.id,
                config=merged,
                host_config=hc,
                path=argv[0],
                args=argv[1:],
                driver=driver.name,
                top_layer=image.top_layer,
                root=root,
                log_path=os.path.join(root, f"{cid}-json.log"),
            )
            c.mounts = self._plan_mounts(c, merged, hc, made_volumes)
            c.network_settings = self._initial_network_settings(hc)
            if self.network is not None:
                self.network.register_links(c)
            c.to_disk()
        except BaseException:
            for volume in made_volumes:
                try:
                    self.volumes.remove(volume)
                except EngineError:
                    LOG.exception("removing volume %s after a failed create", volume)
            for layer in reversed(created_layers):
                try:
                    driver.remove(layer)
                except Exception:
                    LOG.exception("removing layer %s after a failed create", layer)
            self.daemon.linkgraph.purge(cid)
            if os.path.isdir(root):
                safe_rmtree(root)
            raise
        with self._lock:
            self._containers[cid] = c
            self.index.add(cid)
        if (hc.get("NetworkMode") or "default") in ("default", "bridge") and (
            self.network is None or self.network.driver is None
        ):
            warnings.append(
                "The bridge network driver is not available: the container gets its own network "
                "namespace with only the loopback interface"
            )
        self.daemon.container_event(c, "create")
        return c, warnings

    def _reserve_name(self, name: str, cid: str) -> str:
        linkgraph = self.daemon.linkgraph
        if name:
            try:
                linkgraph.set(name, cid)
            except Conflict:
                entity = linkgraph.get(name)
                other = entity.id if entity is not None else "?"
                raise Conflict(
                    f'Conflict. The container name "{name}" is already in use by container "{other}". '
                    "You have to remove (or rename) that container to be able to reuse that name."
                ) from None
            return name
        for attempt in range(6):
            candidate = "/" + random_name(attempt)
            try:
                linkgraph.set(candidate, cid)
                return candidate
            except Conflict:
                continue
        candidate = "/" + cid[:12]
        linkgraph.set(candidate, cid)
        return candidate

    def _populate_init_layer(self, layer: str) -> None:
        """Docker's init layer: mount points and files the runtime binds over,
        so read-only or minimal images can still be run."""
        driver = self.daemon.graphdriver
        path = driver.get(layer)
        try:
            for d in ("dev/pts", "dev/shm", "proc", "sys", "etc"):
                p = os.path.join(path, d)
                if not os.path.lexists(p):
                    os.makedirs(p, 0o755, exist_ok=True)
            for f in ("etc/hosts", "etc/hostname", "etc/resolv.conf", ".dockerenv", "dev/console"):
                p = os.path.join(path, f)
                if not os.path.lexists(p):
                    parent = os.path.dirname(p)
                    if os.path.isdir(parent) and not os.path.islink(parent):
                        with open(p, "w"):
                            pass
                        os.chmod(p, 0o755 if f == "dev/console" else 0o644)
        finally:
            driver.put(layer)

    def _plan_mounts(self, c: Container, config: dict, hc: dict, made: list[str]) -> list[dict]:
        """The container's mount points; anonymous volumes it creates are added to ``made`` as they are
        (a failed create removes them)."""
        """Every mount point: binds, --mount, --tmpfs, --volumes-from, image VOLUMEs."""
        points: dict[str, dict] = {}
        for spec in hc.get("Binds") or []:
            point = parse_bind(spec)
            points[point["Destination"]] = point
        for m in hc.get("Mounts") or []:
            point = parse_mount(m)
            if point["Destination"] in points:
                raise InvalidParameter(f"Duplicate mount point: {point['Destination']}")
            points[point["Destination"]] = point
        for dest, opts in (hc.get("Tmpfs") or {}).items():
            point = parse_tmpfs(dest, opts)
            points[point["Destination"]] = point
        for spec in hc.get("VolumesFrom") or []:
            source_name, _, mode = spec.partition(":")
            other = self.get(source_name)
            for m in other.mounts:
                if m["Destination"] in points or m["Type"] == "tmpfs":
                    continue
                copy = dict(m)
                if mode == "ro":
                    copy["RW"] = False
                points[copy["Destination"]] = copy
        for dest in config.get("Volumes") or {}:
            dest = os.path.normpath(dest)
            if dest not in points:
                points[dest] = {
                    "Type": "volume",
                    "Name": "",
                    "Source": "",
                    "Destination": dest,
                    "Mode": "",
                    "RW": True,
                    "Propagation": "",
                    "NoCopy": False,
                }
        image_rootfs = None
        try:
            for point in points.values():
                if point["Type"] == "bind":
                    if not os.path.exists(point["Source"]):
                        # -v with a missing host path creates it, as Docker does.
                        os.makedirs(point["Source"], 0o755, exist_ok=True)
                elif point["Type"] == "volume":
                    anonymous = not point["Name"]
                    info, created = self.volumes.create(
                        point["Name"] or None, labels=point.pop("Labels", None), anonymous=anonymous
                    )
                    point["Name"] = info["Name"]
                    point["Source"] = info["Mountpoint"]
                    if created and anonymous:  # a named one stays, as in Docker
                        made.append(info["Name"])
                    if created and not point.get("NoCopy"):
                        if image_rootfs is None:
                            image_rootfs = self.daemon.graphdriver.get(c.id + "-init")
                        self.volumes.copy_up(
                            point["Name"], os.path.join(image_rootfs, point["Destination"].lstrip("/"))
                        )
        finally:
            if image_rootfs is not None:
                self.daemon.graphdriver.put(c.id + "-init")
        return sorted(points.values(), key=lambda p: p["Destination"].count("/"))

    def _initial_network_settings(self, hc: dict) -> dict:
        return {
            "Bridge": "",
            "Ports": {},
            "IPAddress": "",
            "IPPrefixLen": 0,
            "Gateway": "",
            "MacAddress": "",
            "Networks": {},
        }

    # rename and remove
    def rename(self, c: Container, new: str) -> None:
        from engine.graphdb import validate_name

        new = validate_name(new)
        old = c.name
        if new == old:
            raise InvalidParameter("Renaming a container with the same name as its current name")
        linkgraph = self.daemon.linkgraph
        try:
            linkgraph.rename(old, new)
        except Conflict:
            entity = linkgraph.get(new)
            other = entity.id if entity is not None else "?"
            raise Conflict(
                f'Conflict. The container name "{new}" is already in use by container "{other}". '
                "You have to remove (or rename) that container to be able to reuse that name."
            ) from None
        with c.lock:
            c.name = new
            c.to_disk()
        self.daemon.container_event(c, "rename", {"oldName": old})

    def remove(self, c: Container, force: bool = False, volumes: bool = False, link: bool = False) -> None:
        if link:
            self._remove_link(c)
            return
        with c.lock:
            if c.state.removal_in_progress or c.removed:
                raise Conflict(f"removal of container {c.short_id} is already in progress")
            if c.state.running and not force:
                raise Conflict(
                    f"You cannot remove a running container {c.id}. Stop the container before "
                    "attempting removal or force remove"
                )
            c.state.removal_in_progress = True
            c.exit_on_next = True
        self.monitor.cancel_restart(c)
        with c.op_lock:  # no start can be half done below
            if c.state.running:
                try:
                    self.kill(c, signals.SIGKILL, event=False)
                except Conflict:
                    pass
                self.wait(c, "not-running", timeout=30)
            with c.lock:
                c.state.restarting = False
        driver = self.daemon.graphdriver
        try:
            for layer in (c.id, c.init_layer):
                if driver.exists(layer):
                    driver.remove(layer)
        except EngineError as exc:
            with c.lock:
                c.state.removal_in_progress = False
                c.state.dead = True
                c.to_disk()
            raise HostError(f"unable to remove filesystem for {c.id}: {exc}") from exc
        self.daemon.linkgraph.purge(c.id)
        netns.remove(os.path.join(self.netns_dir, c.id))
        safe_rmtree(c.root)
        with self._lock:
            self._containers.pop(c.id, None)
            try:
                self.index.delete(c.id)
            except NotFound:
                pass
        if volumes:
            for m in c.mounts:
                if m["Type"] == "volume" and self.volumes.is_anonymous(m["Name"]):
                    try:
                        self.volumes.remove(m["Name"])
                    except EngineError as exc:
                        LOG.warning("not removing volume %s: %s", m["Name"], exc)
        with c.lock:
            c.removed = True
            c.changed.notify_all()
        self.daemon.container_event(c, "destroy")
        if self.daemon.execs is not None:
            self.daemon.execs.forget(c)
        self.daemon.graph.gc()

    def _remove_link(self, c: Container) -> None:
        name = c.name
        parent = os.path.dirname(name)
        if parent == "/":
            raise InvalidParameter("Conflict, cannot remove the default link name of the container")
        self.daemon.linkgraph.delete(name)

    # runtime
    def command_for(self, c: Container, rootfs: str, network: dict, extra_env: list[str] | None = None) -> Command:
        """The exec driver's command for ``c``; ``extra_env`` (link variables) comes first,
        so the container's own variables win."""
        cfg, hc = c.config, c.host_config
        own = list(cfg.get("Env") or [])
        own_keys = {e.split("=", 1)[0] for e in own}
        env = [e for e in extra_env or [] if e.split("=", 1)[0] not in own_keys] + own
        keys = {e.split("=", 1)[0] for e in env}
        if "PATH" not in keys:
            env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        if "HOSTNAME" not in keys:
            env.insert(0, f"HOSTNAME={cfg.get('Hostname', '')}")
        if cfg.get("Tty") and "TERM" not in keys:
            env.append("TERM=xterm")
        security = hc.get("SecurityOpt") or []
        process = ProcessConfig(
            args=[c.path, *c.args],
            env=env,
            cwd=cfg.get("WorkingDir") or "/",
            user=cfg.get("User") or "",
            additional_groups=list(hc.get("GroupAdd") or []),
            tty=bool(cfg.get("Tty")),
            console_size=tuple(hc["ConsoleSize"]) if hc.get("ConsoleSize") and any(hc["ConsoleSize"]) else None,
            privileged=bool(hc.get("Privileged")),
            no_new_privileges=any(
                s in ("no-new-privileges", "no-new-privileges:true", "no-new-privileges=true") for s in security
            ),
            cap_add=list(hc.get("CapAdd") or []),
            cap_drop=list(hc.get("CapDrop") or []),
        )
        mounts = []
        for m in c.mounts:
            if m["Type"] == "tmpfs":
                opts = ["nosuid", "nodev", "noexec"] if not m.get("Mode") else []
                mounts.append(
                    {
                        "type": "tmpfs",
                        "source": "tmpfs",
                        "destination": m["Destination"],
                        "options": opts
                        + [o for o in (m.get("Mode") or "").split(",") if o]
                        + ([] if m.get("RW", True) else ["ro"]),
                        "propagation": "",
                    }
                )
                continue
            source = m["Source"] if m["Type"] == "bind" else self.volumes.path(m["Name"])
            opts = ["rbind"] + ([] if m.get("RW", True) else ["ro"])
            mounts.append(
                {
                    "type": "bind",
                    "source": source,
                    "destination": m["Destination"],
                    "options": opts,
                    "propagation": m.get("Propagation") or "rprivate",
                }
            )
        devices = []
        for d in hc.get("Devices") or []:
            devices.append(
                {
                    "path_on_host": d.get("PathOnHost"),
                    "path_in_container": d.get("PathInContainer") or d.get("PathOnHost"),
                    "permissions": d.get("CgroupPermissions") or "rwm",
                }
            )
        ipc = hc.get("IpcMode") or "private"
        if ipc.startswith("container:"):
            other = self.get(ipc.split(":", 1)[1])
            if not other.state.running:
                raise Conflict(f"cannot join IPC of a non running container: {other.id}")
            ipc = f"container:/proc/{other.state.pid}/ns/ipc"
        return Command(
            id=c.id,
            rootfs=rootfs,
            process=process,
            container_dir=c.root,
            hostname=cfg.get("Hostname") or "",
            domainname=cfg.get("Domainname") or "",
            mounts=mounts,
            resources=resources_of(hc),
            network=network,
            ipc_mode="host" if ipc == "host" else ipc if ipc.startswith("container:") else "private",
            pid_mode="host" if hc.get("PidMode") == "host" else "private",
            uts_mode="host" if hc.get("UTSMode") == "host" else "private",
            cgroup_parent=(hc.get("CgroupParent") or "engine").strip("/") or "engine",
            readonly_rootfs=bool(hc.get("ReadonlyRootfs")),
            masked_paths=hc.get("MaskedPaths"),
            readonly_paths=hc.get("ReadonlyPaths"),
            devices=devices,
            sysctls=dict(hc.get("Sysctls") or {}),
            shm_size=int(hc.get("ShmSize") or 64 * 1024 * 1024),
        )

    def start(self, c: Container, by_policy: bool = False) -> bool:
        """Start a created or exited container (moby ``containerStart``); whether it was started.

        A start asked for (the API, the daemon's start-up) resets the restart
        count and back-off, as moby's ``ResetRestartManager`` does. With
        ``by_policy`` it is the restart policy's timer: it goes ahead only if
        the container still waits for that restart (no stop, kill or remove
        came in between), and counts it.
        """
        with c.op_lock:
            with c.lock:
                if c.state.removal_in_progress or c.removed or c.state.dead:
                    if by_policy:
                        return False
                    raise Conflict("container is marked for removal and cannot be started")
                if by_policy:
                    if not (c.state.running and c.state.restarting) or c.exit_on_next:
                        return False
                    c.state.running = c.state.restarting = False
                    c.restart_count += 1
                else:
                    if c.state.running:
                        if c.state.paused:
                            raise Conflict("cannot start a paused container, try unpause instead")
                        raise NotModified()
                    c.has_been_manually_stopped = False
                    c.restart_count = 0
                    c.backoff = 0.0
                c.exit_on_next = False
            try:
                self._start(c)
            except BaseException as exc:
                self._record_failed_start(c, exc)
                failure: BaseException | None = exc
            else:
                failure = None
        if failure is not None:
            if c.host_config.get("AutoRemove"):
                try:
                    self.remove(c, force=True, volumes=True)
                except EngineError:
                    LOG.exception("removing %s after a failed start", c.short_id)
            if isinstance(failure, ExecStartError):
                raise InvalidParameter(
                    f"failed to create shim task: OCI runtime create failed: {failure}: unknown"
                ) from failure
            raise failure
        return True

    @staticmethod
    def _record_failed_start(c: Container, exc: BaseException) -> None:
        message = str(exc)
        code = 128
        if "executable file not found" in message or "no such file or directory" in message:
            code = 127
        elif "permission denied" in message:
            code = 126
        with c.lock:
            c.state.error = message
            c.state.exit_code = code
            c.state.running = False
            c.state.restarting = False
            c.to_disk()
            c.changed.notify_all()

    def _start(self, c: Container) -> None:
        from engine.daemon import runtime

        runtime.start_container(self, c)

    def kill(self, c: Container, sig: int = signals.SIGKILL, event: bool = True) -> None:
        """Send ``sig`` (moby ``killWithSignal``). SIGKILL, or the container's stop signal (any signal
        when it has none), makes the next exit final and thaws a paused container so that the signal
        lands; any kill counts as a manual stop (``unless-stopped`` then stays down)."""
        stop_signal = c.config.get("StopSignal")
        final = sig == signals.SIGKILL or not stop_signal or parse_signal(stop_signal, signals.SIGTERM) == sig
        with c.lock:
            if not c.state.running:
                raise Conflict(f"Container {c.id} is not running")
            if final:
                c.exit_on_next = True
            if not self.daemon.engine.is_shutdown:
                c.has_been_manually_stopped = True
            if c.state.restarting:
                # Killing a container between restarts stops the restarts.
                c.state.restarting = False
                c.state.running = False
                self.monitor.cancel_restart(c)
                c.to_disk()
                c.changed.notify_all()
                return
            c.to_disk()
            thaw = final and c.state.paused
        try:
            self.exec_driver.kill(self.monitor.command(c), sig)
        except ProcessLookupError:
            pass
        if thaw:
            try:
                self.exec_driver.unpause(self.monitor.command(c))
                with c.lock:
                    c.state.paused = False
                    c.to_disk()
            except EngineError:
                pass
        if event:
            self.daemon.container_event(c, "kill", {"signal": str(sig)})

    def stop(self, c: Container, timeout: int | None = None, sig: str | None = None) -> None:
        """SIGTERM (or the stop signal), wait, then SIGKILL (moby ``containerStop``)."""
        with c.lock:
            if not c.state.running:
                raise NotModified()
            c.has_been_manually_stopped = True
            c.exit_on_next = True
            c.to_disk()
            if c.state.restarting:
                self.monitor.cancel_restart(c)
                c.state.restarting = False
                c.state.running = False
                c.to_disk()
                c.changed.notify_all()
                self.daemon.container_event(c, "stop")
                return
        if timeout is None:
            timeout = c.config.get("StopTimeout")
            if timeout is None:
                timeout = DEFAULT_STOP_TIMEOUT
        stop_signal = parse_signal(sig or c.config.get("StopSignal") or "SIGTERM", signals.SIGTERM)
        try:
            self.kill(c, stop_signal)
        except Conflict:
            pass
        if timeout < 0 or not self.wait(c, "not-running", timeout=timeout, only_exited=True):
            try:
                self.kill(c, signals.SIGKILL)
            except Conflict:
                pass
            self.wait(c, "not-running", timeout=30, only_exited=True)
        self.daemon.container_event(c, "stop")

    def restart(self, c: Container, timeout: int | None = None) -> None:
        if c.state.running:
            self.stop(c, timeout)
        self.start(c)
        self.daemon.container_event(c, "restart")

    def pause(self, c: Container) -> None:
        with c.lock:
            if not c.state.running:
                raise Conflict(f"Container {c.id} is not running")
            if c.state.paused:
                raise Conflict(f"Container {c.id} is already paused")
            if c.state.restarting:
                raise Conflict(f"Container {c.id} is restarting, wait until the container is running")
            self.exec_driver.pause(self.monitor.command(c))
            c.state.paused = True
            c.to_disk()
        self.daemon.container_event(c, "pause")

    def unpause(self, c: Container) -> None:
        with c.lock:
            if not c.state.paused:
                raise Conflict(f"Container {c.id} is not paused")
            self.exec_driver.unpause(self.monitor.command(c))
            c.state.paused = False
            c.to_disk()
        self.daemon.container_event(c, "unpause")

    def wait(
        self,
        c: Container,
        condition: str = "not-running",
        timeout: float | None = None,
        only_exited: bool = False,
        stop: threading.Event | None = None,
    ) -> bool:
        """Block until ``condition``; False on timeout.

        ``not-running``: until it is not running (at once if it is not);
        ``next-exit``: until it next exits; ``removed``: until it is removed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with c.lock:
            gen = c.exits
            while True:
                if condition == "removed":
                    done = c.removed
                elif condition == "next-exit":
                    done = c.exits != gen or c.removed
                else:
                    done = not c.state.running or c.removed
                    if only_exited and c.state.restarting:
                        done = True
                if done:
                    return True
                if stop is not None and stop.is_set():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                c.changed.wait(0.5 if left is None else min(left, 0.5))

    # restore at start-up (seed ch. 4 §4.10)
    def restore(self) -> None:
        if not os.path.isdir(self.dir):
            return
        for cid in sorted(os.listdir(self.dir)):
            root = os.path.join(self.dir, cid)
            try:
                c = Container.from_disk(root)
            except (OSError, ValueError, KeyError) as exc:
                LOG.error("container %s cannot be loaded: %s", cid[:12], exc)
                continue
            self._containers[c.id] = c
            self.index.add(c.id)
            if self.daemon.linkgraph.get(c.name) is None:
                try:
                    self.daemon.linkgraph.set(c.name, c.id)
                except Conflict:
                    LOG.warning("container %s: name %s is taken", c.short_id, c.name)
        from engine.daemon import runtime

        for c in self.all():
            runtime.restore_container(self, c)
        for c in self._children_first(self.all()):
            runtime.restart_on_daemon_start(self, c)

    def _children_first(self, containers: list[Container]) -> list[Container]:
        """``containers`` ordered so that every ``--link`` target comes before the containers linking to it
        (a parent started before its child would fail: "Cannot link to a non running container")."""
        ordered: list[Container] = []
        seen: set[str] = set()

        def visit(c: Container) -> None:
            if c.id in seen:
                return
            seen.add(c.id)
            for spec in c.host_config.get("Links") or []:
                try:
                    visit(self.get(spec.partition(":")[0].lstrip("/")))
                except NotFound:
                    pass
            ordered.append(c)

        for c in containers:
            visit(c)
        return ordered


class Monitor:
    """Watches the shims of running containers and handles their exits."""

    def __init__(self, service: ContainerService) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._watched: dict[int, Container] = {}  # pidfd -> container
        self._commands: dict[str, Command] = {}
        self._timers: dict[str, threading.Timer] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name="container-monitor", daemon=True)
        self._stopping = False
        self._thread.start()

    def command(self, c: Container) -> Command:
        cmd = self._commands.get(c.id)
        if cmd is None:
            from engine.daemon import runtime

            cmd = runtime.load_command(c)
            self._commands[c.id] = cmd
        return cmd

    def set_command(self, c: Container, cmd: Command) -> None:
        self._commands[c.id] = cmd

    def watch(self, c: Container, shim_pid: int) -> None:
        try:
            fd = os.pidfd_open(shim_pid)
        except ProcessLookupError:
            threading.Thread(target=self._exited, args=(c,), daemon=True).start()
            return
        with self._lock:
            self._watched[fd] = c
        os.write(self._wake_w, b"w")

    def _run(self) -> None:
        while not self._stopping:
            with self._lock:
                fds = list(self._watched)
            try:
                ready, _, _ = select.select([self._wake_r, *fds], [], [], 5.0)
            except OSError:
                time.sleep(0.1)
                continue
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            for fd in ready:
                if fd == self._wake_r:
                    continue
                with self._lock:
                    c = self._watched.pop(fd, None)
                os.close(fd)
                if c is not None:
                    threading.Thread(target=self._exited, args=(c,), name=f"exit-{c.short_id}", daemon=True).start()

    def _exited(self, c: Container) -> None:
        from engine.daemon import runtime

        try:
            runtime.handle_exit(self.service, c)
        except Exception:
            LOG.exception("handling the exit of %s failed", c.short_id)

    def schedule_restart(self, c: Container, delay: float, fn: Callable[[], None]) -> None:
        timer = threading.Timer(delay, fn)
        timer.daemon = True
        with self._lock:
            old = self._timers.pop(c.id, None)
            self._timers[c.id] = timer
        if old is not None:
            old.cancel()
        timer.start()

    def cancel_restart(self, c: Container) -> None:
        with self._lock:
            timer = self._timers.pop(c.id, None)
        if timer is not None:
            timer.cancel()

    def stop(self) -> None:
        self._stopping = True
        try:
            os.write(self._wake_w, b"q")
        except OSError:
            pass
        with self._lock:
            timers = list(self._timers.values())
            self._timers.clear()
        for t in timers:
            t.cancel()


__all__ = ["ContainerService", "State", "api_mount", "parse_signal"]
