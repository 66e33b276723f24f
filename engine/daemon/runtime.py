"""Starting containers in their shims, handling their exits, restarting them
and re-adopting them when the daemon starts again (seed ch. 8 §2, ch. 4 §4.10).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from engine.daemon import netns, resolvconf
from engine.daemon.container import Container
from engine.daemon.hostconfig import shim_spec
from engine.drivers.exec import Command
from engine.errors import Conflict, EngineError
from engine.utils.fs import atomic_write

LOG = logging.getLogger(__name__)


def load_command(c: Container) -> Command:
    with open(c.path_of("shim.json"), "rb") as fh:
        return Command.from_json(json.load(fh)["command"])


# network namespaces and the files that go with them (issue 4's modes; the
# bridge driver replaces "default" when it is installed)
def setup_network(svc: Any, c: Container) -> dict:
    hc = c.host_config
    mode = hc.get("NetworkMode") or "default"
    cfg = c.config
    daemon_cfg = svc.daemon.config
    if mode.startswith("container:"):
        other = svc.get(mode.split(":", 1)[1])
        if not other.state.running:
            raise Conflict(f"cannot join network of a non running container: {other.id}")
        # The seed (ch. 8 §2.2.1): it shares the other's hostname and files.
        cfg["Hostname"] = other.config.get("Hostname", "")
        cfg["Domainname"] = other.config.get("Domainname", "")
        for name in ("hostname", "hosts", "resolv.conf"):
            src = other.path_of(name)
            if os.path.exists(src):
                with open(src, "rb") as fh:
                    atomic_write(c.path_of(name), fh.read())
        return {"mode": "container", "path": f"/proc/{other.state.pid}/ns/net", "container": other.id}
    host_mode = mode == "host"
    hostname = cfg.get("Hostname") or c.id[:12]
    gateway = svc.network.host_gateway() if svc.network is not None and svc.network.driver is not None else ""
    resolv, _warnings = resolvconf.build(
        list(hc.get("Dns") or daemon_cfg.dns),
        list(hc.get("DnsSearch") or daemon_cfg.dns_search),
        list(hc.get("DnsOptions") or daemon_cfg.dns_opts),
        host_mode=host_mode,
    )
    atomic_write(c.resolv_conf_path, resolv.encode())
    atomic_write(c.hostname_path, (hostname + "\n").encode())
    if host_mode:
        with open("/etc/hosts", "rb") as fh:
            base = fh.read()
        extra = resolvconf.hosts("", "", "", hc.get("ExtraHosts"), host_gateway=gateway)[len(resolvconf.HOSTS_HEADER) :]
        atomic_write(c.hosts_path, base + extra.encode())
        return {"mode": "host"}
    path = os.path.join(svc.netns_dir, c.id)
    netns.remove(path)
    netns.create(path)
    settings: dict = {}
    allocated = False
    try:
        if mode in ("default", "bridge") and svc.network is not None and svc.network.driver is not None:
            settings = svc.network.allocate(c, path)
            allocated = True
        ip = settings.get("IPAddress", "")
        links = svc.network.links_for(c) if svc.network is not None else []
        atomic_write(
            c.hosts_path,
            resolvconf.hosts(
                hostname, cfg.get("Domainname") or "", ip, hc.get("ExtraHosts"), links, host_gateway=gateway
            ).encode(),
        )
    except BaseException:
        if allocated:
            try:
                svc.network.release(c)
            except Exception:
                LOG.exception("releasing the network of %s after a failed set-up", c.short_id)
        netns.remove(path)
        raise
    kind = "none" if mode == "none" else "bridge"
    return {"mode": kind, "path": path, "settings": settings}


def release_network(svc: Any, c: Container) -> None:
    mode = c.host_config.get("NetworkMode") or "default"
    if mode in ("default", "bridge") and svc.network is not None:
        try:
            svc.network.release(c)
        except Exception:
            LOG.exception("releasing the network of %s", c.short_id)
    netns.remove(os.path.join(svc.netns_dir, c.id))
    with c.lock:
        # A stopped container has no address or published ports (as in Docker).
        c.network_settings = svc._initial_network_settings(c.host_config)


# start
def start_container(svc: Any, c: Container) -> None:
    daemon = svc.daemon
    driver = daemon.graphdriver
    rootfs = driver.get(c.id)
    network: dict = {}
    pending: list = []
    try:
        network = setup_network(svc, c)
        link_env = svc.network.link_env(c) if svc.network is not None else []
        cmd = svc.command_for(
            c, rootfs, {k: v for k, v in network.items() if k in ("mode", "path")}, extra_env=link_env
        )
        for m in c.mounts:
            if m["Type"] == "volume":
                svc.volumes.hold(m["Name"])  # while the container runs
        spec = shim_spec(c, cmd, svc.exec_driver)
        for name in ("exit.json", "state.json"):
            try:
                os.unlink(c.path_of(name))
            except FileNotFoundError:
                pass
        pending = svc.pending_attach.pop(c.id, [])
        result = svc.shim_launcher.start(c.root, spec, attachers=pending)
    except BaseException:
        for waiting in pending:  # their attach ends: nothing will run
            waiting.ready.set()
        driver.put(c.id)
        _put_volumes(svc, c)
        if network.get("mode") not in (None, "host", "container"):
            release_network(svc, c)
        raise
    svc.monitor.set_command(c, cmd)
    with c.lock:
        st = c.state
        st.running, st.paused, st.restarting, st.dead = True, False, False, False
        st.pid = int(result["Pid"])
        st.shim_pid = int(result["ShimPid"])
        st.exit_code, st.error, st.oom_killed = 0, "", False
        st.started_at = time.time()
        st.finished_at = 0.0
        c.has_been_started_before = True
        if network.get("settings"):
            c.network_settings = svc.network.inspect_settings(c, network["settings"])
        c.to_disk()
        c.changed.notify_all()
    if network.get("settings"):
        svc.network.update_parents(c)
    svc.monitor.watch(c, st.shim_pid)
    daemon.container_event(c, "start")


def _put_volumes(svc: Any, c: Container) -> None:
    for m in c.mounts:
        if m["Type"] == "volume" and svc.volumes.exists(m["Name"]):
            try:
                svc.volumes.release(m["Name"])
            except EngineError:
                pass


# exit
def handle_exit(svc: Any, c: Container) -> None:
    """The shim of ``c`` is gone: record the exit, release, apply the policy."""
    from engine.shim import client as shim

    result = shim.read_exit(c.root) or {
        "ExitCode": 255,
        "OOMKilled": False,
        "Error": "the container's shim exited without recording an exit status",
    }
    daemon = svc.daemon
    with c.lock:
        if not c.state.running or c.exiting:
            return
        c.exiting = True
    # Release what the run held before anyone can see it stopped: a waiter
    # (rm -f, stop) goes on to remove the layers the moment it does.
    try:
        daemon.graphdriver.put(c.id)
    except EngineError:
        LOG.exception("releasing the rootfs of %s", c.short_id)
    _put_volumes(svc, c)
    release_network(svc, c)
    with c.lock:
        # The exit and the restart decision in one step: a stop, kill or
        # start in between sees either a running container or a final exit.
        c.exiting = False
        st = c.state
        st.running = st.paused = False
        st.pid = st.shim_pid = 0
        st.exit_code = int(result.get("ExitCode", 255))
        st.oom_killed = bool(result.get("OOMKilled"))
        st.error = result.get("Error", "") or ""
        st.finished_at = time.time()
        ran_for = st.finished_at - st.started_at
        c.exits += 1
        restart = (
            not c.exit_on_next
            and not c.state.removal_in_progress
            and not daemon.engine.is_shutdown
            and _should_restart(c, st.exit_code, c.has_been_manually_stopped)
        )
        if restart:
            c.backoff = 0.1 if ran_for >= 10.0 or not c.backoff else min(60.0, c.backoff * 2)
            st.restarting = st.running = True
        c.to_disk()
    if st.oom_killed:
        daemon.container_event(c, "oom")
    daemon.container_event(c, "die", {"exitCode": str(st.exit_code)})
    if daemon.execs is not None:
        daemon.execs.forget(c)
    if restart:
        svc.monitor.schedule_restart(c, c.backoff, lambda: _restart_by_policy(svc, c))
    with c.lock:
        c.changed.notify_all()
    if c.host_config.get("AutoRemove") and not restart:
        try:
            svc.remove(c, force=True, volumes=True)
        except EngineError as exc:
            LOG.error("auto-removing %s: %s", c.short_id, exc)


def _should_restart(c: Container, exit_code: int, manually_stopped: bool) -> bool:
    """moby's ``RestartManager.ShouldRestart``: ``always`` restarts even after a manual stop (a
    stop in this daemon's life makes the exit final on its own, see ``exit_on_next``), so a
    restarted daemon starts it again; ``unless-stopped`` does not."""
    policy = c.host_config.get("RestartPolicy") or {}
    name = policy.get("Name") or "no"
    if name == "always":
        return True
    if name == "unless-stopped":
        return not manually_stopped
    if name == "on-failure":
        limit = int(policy.get("MaximumRetryCount") or 0)
        return exit_code != 0 and (limit == 0 or c.restart_count < limit)
    return False


def _restart_by_policy(svc: Any, c: Container) -> None:
    """The restart timer fired: start again, unless a stop, kill or remove came first."""
    try:
        svc.start(c, by_policy=True)
    except EngineError as exc:
        LOG.error("restarting %s failed: %s", c.short_id, exc)


# restore
def restore_container(svc: Any, c: Container) -> None:
    """Re-adopt a live shim, or record that the container died while we were away."""
    from engine.shim import client as shim
    from engine.shim import protocol as shim_protocol

    alive = shim.shim_alive(c.root)
    if not c.state.running and not alive:
        c.state.restarting = False
        return
    if alive:
        state = shim.read_state(c.root) or {}
        if not c.state.running:
            # The daemon died between starting the shim and recording it.
            LOG.warning("container %s has a live shim its state did not record; adopting it", c.short_id)
            c.state.running = True
            c.state.exit_code, c.state.error = 0, ""
            try:  # state.json is written when the process started
                c.state.started_at = os.stat(c.path_of(shim_protocol.STATE_FILE)).st_mtime
            except OSError:
                c.state.started_at = time.time()
            c.has_been_started_before = True
        c.state.pid = int(state.get("Pid", c.state.pid))
        c.state.shim_pid = int(state.get("ShimPid", c.state.shim_pid))
        c.state.restarting = False
        try:
            svc.daemon.graphdriver.get(c.id)
        except EngineError:
            LOG.exception("re-taking the rootfs of %s", c.short_id)
        for m in c.mounts:
            if m["Type"] == "volume" and svc.volumes.exists(m["Name"]):
                svc.volumes.hold(m["Name"])
        if svc.network is not None:
            svc.network.restore(c)
        svc.monitor.watch(c, c.state.shim_pid)
        LOG.info("container %s is still running (pid %d); re-attached to its shim", c.short_id, c.state.pid)
        return
    result = shim.read_exit(c.root) or {"ExitCode": 255, "Error": "the container's shim died while the daemon was down"}
    c.state.running = c.state.paused = c.state.restarting = False
    c.state.pid = c.state.shim_pid = 0
    c.state.exit_code = int(result.get("ExitCode", 255))
    c.state.oom_killed = bool(result.get("OOMKilled"))
    c.state.error = result.get("Error", "") or ""
    c.state.finished_at = c.state.finished_at or time.time()
    netns.remove(os.path.join(svc.netns_dir, c.id))
    c.to_disk()
    LOG.info("container %s exited (%d) while the daemon was down", c.short_id, c.state.exit_code)


def restart_on_daemon_start(svc: Any, c: Container) -> None:
    if c.state.running:
        return
    if c.host_config.get("AutoRemove") and c.has_been_started_before:
        try:
            svc.remove(c, force=True, volumes=True)
        except EngineError as exc:
            LOG.error("auto-removing %s: %s", c.short_id, exc)
        return
    policy = (c.host_config.get("RestartPolicy") or {}).get("Name") or "no"
    if policy == "no" or not c.has_been_started_before:
        return
    if _should_restart(c, c.state.exit_code, c.has_been_manually_stopped):
        try:
            svc.start(c)
        except EngineError as exc:
            LOG.error("restarting %s at daemon start failed: %s", c.short_id, exc)


__all__ = [
    "handle_exit",
    "load_command",
    "restart_on_daemon_start",
    "restore_container",
    "start_container",
]
