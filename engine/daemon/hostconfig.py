"""Docker's container Config and HostConfig: their checks, the merge with the
image's config, and their translation for the exec driver (moby
``daemon/create.go``, ``daemon/container.go``, ``oci_linux.go``).

Everything here is a pure function of its arguments: no daemon, no driver,
no file system, so each can be tested on its own.
"""

from __future__ import annotations

import signal as signals

from engine.daemon import resolvconf
from engine.drivers.exec import Resources
from engine.errors import EngineError, InvalidParameter

RESTART_POLICIES = ("", "no", "always", "on-failure", "unless-stopped")

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


def parse_size(value: str) -> int:
    """``10m``, ``1g``, ``512k``, ``4096`` -> bytes (go-units RAMInBytes)."""
    text = (value or "").strip().lower()
    if not text:
        return 0
    units = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    num = text.rstrip("bkmgt") or "0"
    unit = text[len(num) :].rstrip("b") or "b"
    try:
        return int(float(num) * units[unit[0]])
    except (ValueError, KeyError):
        raise EngineError(f"invalid size: {value!r}") from None
