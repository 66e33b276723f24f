"""The ``systemd`` cgroup driver (``--exec-opt native.cgroupdriver=systemd``): containers in
transient scope units that systemd makes, as runc's systemd manager does.

A container's cgroup is the scope ``docker-<id>.scope`` in a slice (``system.slice``
unless ``--cgroup-parent`` names another, ``xxx.slice``; a slice ``a-b.slice`` nests in
``a.slice``, systemd's rule). Its init is started as usual; before it is let go, the
driver asks systemd over D-Bus (``org.freedesktop.systemd1.Manager.StartTransientUnit``,
with ``Slice``, ``Delegate=yes`` and the init's PID) to make the scope and move the init
into it, and waits until the kernel shows the process there. The limits are then written
to the scope's directories through cgroupfs, exactly as with the ``cgroupfs`` driver
(systemd leaves a delegated unit's files alone); the end is ``StopUnit``.

This needs systemd as the host's init and its bus: :func:`unavailable` says why not when
it is missing (the driver's probe then refuses to run with this cgroup driver, naming it).
D-Bus goes through jeepney (pure Python), imported only when the driver is used.
"""

from __future__ import annotations

import os
import time
from typing import Any

from engine.errors import HostError

__all__ = ["DEFAULT_SLICE", "scope_name", "slice_path", "start_scope", "stop_scope", "unavailable"]

#: The slice containers go in unless ``--cgroup-parent`` names one (dockerd's default).
DEFAULT_SLICE = "system.slice"
SYSTEM_BUS = "/run/dbus/system_bus_socket"
SYSTEMD_RUNTIME = "/run/systemd/system"
#: How long the init may take to show up in its new scope.
PLACE_TIMEOUT = 10.0


def unavailable(runtime_dir: str = SYSTEMD_RUNTIME, bus: str = SYSTEM_BUS) -> str | None:
    """None when systemd can make scopes here, else the reason (for the driver's probe)."""
    if not os.path.isdir(runtime_dir):
        return (
            f"systemd is not the init of this host ({runtime_dir} is missing), so no one can create "
            "the containers' scope units; use --exec-opt native.cgroupdriver=cgroupfs"
        )
    if not os.path.exists(bus):
        return f"the system D-Bus socket {bus} is missing: systemd's API cannot be reached"
    try:
        import jeepney  # noqa: F401
    except ImportError:
        return "the Python package jeepney (D-Bus) is not installed"
    return None


def scope_name(container_id: str) -> str:
    """The container's unit: ``docker-<id>.scope``."""
    return f"docker-{container_id}.scope"


def slice_path(name: str) -> str:
    """Where systemd puts slice ``name`` in the hierarchy: ``a-b.slice`` -> ``/a.slice/a-b.slice``.

    :raises HostError: not a slice name (dockerd: ``cgroup-parent for systemd cgroup should be a
        valid slice named as "xxx.slice"``).
    """
    if len(name) <= 6 or not name.endswith(".slice") or "/" in name:
        raise HostError('cgroup-parent for systemd cgroup should be a valid slice named as "xxx.slice"')
    if name == "-.slice":
        return "/"
    stem = name[: -len(".slice")]
    parts = stem.split("-")
    path = ""
    for i in range(len(parts)):
        path += "/" + "-".join(parts[: i + 1]) + ".slice"
    return path


def _manager() -> Any:
    from jeepney import DBusAddress

    return DBusAddress(
        "/org/freedesktop/systemd1", bus_name="org.freedesktop.systemd1", interface="org.freedesktop.systemd1.Manager"
    )


def _call(method: str, signature: str, body: tuple, missing_ok: bool = False) -> Any:
    """Call the systemd manager's ``method``; its reply's body.

    :param missing_ok: a ``NoSuchUnit`` error is no error (None is returned).
    :raises HostError: the bus cannot be reached, or systemd answered with an error.
    """
    from jeepney import new_method_call
    from jeepney.io.blocking import open_dbus_connection
    from jeepney.low_level import HeaderFields, MessageType

    try:
        with open_dbus_connection(bus="SYSTEM") as conn:
            reply = conn.send_and_get_reply(new_method_call(_manager(), method, signature, body), timeout=30)
    except (OSError, TimeoutError) as exc:
        raise HostError(f"systemd: {method} failed: {exc}") from exc
    if reply.header.message_type == MessageType.error:
        name = reply.header.fields.get(HeaderFields.error_name, "")
        if missing_ok and name == "org.freedesktop.systemd1.NoSuchUnit":
            return None
        detail = reply.body[0] if reply.body else name
        raise HostError(f"systemd: {method} failed: {name}: {detail}")
    return reply.body


def start_scope(unit: str, slice_name: str, pid: int, description: str = "") -> None:
    """Have systemd make ``unit`` in ``slice_name`` holding ``pid``, and wait until it does.

    :raises HostError: systemd refused, or the process did not arrive in time.
    """
    properties = [
        ("Description", ("s", description or f"libcontainer container {unit}")),
        ("Slice", ("s", slice_name)),
        ("Delegate", ("b", True)),
        ("PIDs", ("au", [pid])),
        ("DefaultDependencies", ("b", False)),
    ]
    _call("StartTransientUnit", "ssa(sv)a(sa(sv))", (unit, "replace", properties, []))
    deadline = time.monotonic() + PLACE_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/cgroup") as fh:
                if f"/{unit}" in fh.read():
                    return
        except FileNotFoundError:
            raise HostError(f"systemd: process {pid} exited before it joined {unit}") from None
        time.sleep(0.01)
    raise HostError(f"systemd: process {pid} did not join {unit} within {PLACE_TIMEOUT:.0f}s")


def stop_scope(unit: str) -> None:
    """Stop ``unit`` (its processes are gone already; systemd removes its cgroups); a unit that
    is gone already is fine."""
    _call("StopUnit", "ss", (unit, "replace"), missing_ok=True)
