"""Facts about the host, read from /proc and /etc (for /info, /version and engine-admin).

What cgroups are mounted is :func:`engine.sys.cgroups.read_layout`'s.
"""

from __future__ import annotations

import functools
import platform

#: Python's machine names -> Go's GOARCH names, which clients expect.
GOARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def goarch(machine: str | None = None) -> str:
    machine = machine or platform.machine()
    return GOARCH.get(machine, machine)


def read_text(path: str, default: str = "") -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return default


@functools.lru_cache(maxsize=1)
def os_release() -> dict[str, str]:
    data: dict[str, str] = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        text = read_text(path)
        if not text:
            continue
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                data[key.strip()] = value.strip().strip('"')
        break
    return data


def operating_system() -> str:
    return os_release().get("PRETTY_NAME", "Linux")


def mem_total() -> int:
    for line in read_text("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def filesystems() -> set[str]:
    """File system types the kernel knows now (``/proc/filesystems``)."""
    return {line.split()[-1] for line in read_text("/proc/filesystems").splitlines() if line.strip()}


def proc_sys_flag(path: str) -> bool | None:
    value = read_text(path).strip()
    if value == "":
        return None
    return value == "1"


def kernel_release() -> str:
    return platform.release()


def hostname() -> str:
    return platform.node()
