"""The native driver's seccomp filters: compiled once, loaded by every process of a container.

libseccomp takes about 40 ms (on 2 busy cores) to compile Docker's default
profile for the three x86 architectures, as much as the rest of a start.
The compiled program depends only on the profile, the container's
capabilities (the rules conditional on them), the machine, the kernel
(``minKernel``) and libseccomp's own tables, so it is kept in
``<home>/seccomp/<sha256 of those>.bpf`` and a start reads a 8 KiB file
instead. The container's init loads it (:func:`engine_exec_native.init.load_seccomp`);
the same program goes into the driver's state for ``exec``: Docker applies
the container's filter to exec'd processes too, whatever their own privileges.

A cache file is ``FLAGS (4 bytes, little endian) + the BPF program``,
written to a temporary name and renamed, so a reader never sees half of
one; a file that does not parse is compiled again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from typing import Any

from engine.errors import InvalidParameter
from engine.security import caps
from engine.security import seccomp as profiles
from engine.sys import libc, libseccomp

LOG = logging.getLogger(__name__)

__all__ = ["compiled_filter", "support"]

_HEADER = struct.Struct("<I")


def support() -> str | None:
    """None when filters can be compiled and loaded here (kernel filter mode, libseccomp), else why not."""
    return libseccomp.unsupported()


def _cache_key(profile: str, cap_mask: int) -> str:
    uname = os.uname()
    lib = ".".join(map(str, libseccomp.version() or ()))
    material = f"{cap_mask:x}\0{uname.machine}\0{uname.release}\0{lib}\0{profile}"
    return hashlib.sha256(material.encode()).hexdigest()


def _read(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None
    if len(data) <= _HEADER.size or (len(data) - _HEADER.size) % libc.SOCK_FILTER_SIZE:
        LOG.warning("seccomp: ignoring the damaged cache file %s", path)
        return None
    (flags,) = _HEADER.unpack_from(data)
    return {"program": data[_HEADER.size :].hex(), "flags": flags}


def _write(path: str, program: bytes, flags: int) -> None:
    os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(_HEADER.pack(flags) + program)
        os.rename(tmp, path)
    except OSError as exc:
        LOG.warning("seccomp: cannot keep the compiled filter in %s: %s", path, exc)
        try:
            os.unlink(tmp)
        except OSError:
            pass


def compiled_filter(home: str, profile: str, cap_mask: int) -> dict[str, Any] | None:
    """The filter of a container: ``{"program": <BPF as hex>, "flags": n}``, or None for no filter.

    :param home: the driver's state directory (the cache lives below it).
    :param profile: ``Command.seccomp_profile`` ("" : none).
    :param cap_mask: the container's capabilities (its bounding set).
    :raises InvalidParameter: the profile is invalid or libseccomp refuses it.
    :raises NotSupported: libseccomp is missing.
    """
    if not profile:
        return None
    path = os.path.join(home, "seccomp", _cache_key(profile, cap_mask) + ".bpf")
    cached = _read(path)
    if cached is not None:
        return cached
    resolved = profiles.resolve(profiles.load_profile(profile), caps.from_mask(cap_mask))
    if resolved is None:
        return None  # a profile with neither a default action nor rules: no seccomp (moby)
    try:
        program = libseccomp.compile_filter(resolved)
    except OSError as exc:
        raise InvalidParameter(f"seccomp: {exc.strerror}") from exc
    flags = 0
    for name in resolved["flags"]:
        flags |= profiles.FLAGS[name]
    _write(path, program, flags)
    return {"program": program.hex(), "flags": flags}
