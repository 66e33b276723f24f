"""liblxc (``liblxc.so.1``, LXC's public C API, ``lxccontainer.h``) through ctypes: what the driver needs of it.

``struct lxc_container`` is a table of function pointers after a few data
fields; the table only grows at its end between releases (liblxc keeps its
soname), so the prefix declared here up to ``attach`` holds for LXC 3 to 6.
``lxc_attach_options_t`` is declared as LXC 4.0.5+ has it (``groups`` last).

Only :func:`attach` is used, from the ``attach`` helper process: it enters
a running container as ``lxc-attach`` does, but with the working directory,
the supplementary groups and the stdio descriptors the exec asks for, which
the ``lxc-attach`` tool cannot be given, and it returns the new process's
PID at once (the process is the caller's child: liblxc clones it with
``CLONE_PARENT``), so the caller reports the PID and waits for it itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Sequence

__all__ = ["AttachError", "LibLxcMissing", "attach", "available"]

#: lxc_attach_options_t.attach_flags (attach_options.h).
ATTACH_MOVE_TO_CGROUP = 0x00000001
ATTACH_DROP_CAPABILITIES = 0x00000002
ATTACH_SET_PERSONALITY = 0x00000004
ATTACH_LSM_EXEC = 0x00000008
ATTACH_NO_NEW_PRIVS = 0x00040000
ATTACH_SETGROUPS = 0x00200000
ATTACH_DEFAULT = 0x0000FFFF
#: lxc_attach_env_policy_t
ATTACH_CLEAR_ENV = 1
#: options->personality: detect the container's.
ATTACH_DETECT_PERSONALITY = -1


class LibLxcMissing(OSError):
    """liblxc.so.1 is not installed."""


class AttachError(OSError):
    """liblxc could not attach to the container."""


class _Groups(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t), ("list", ctypes.POINTER(ctypes.c_uint))]


class _AttachOptions(ctypes.Structure):
    _fields_ = [
        ("attach_flags", ctypes.c_int),
        ("namespaces", ctypes.c_int),
        ("personality", ctypes.c_long),
        ("initial_cwd", ctypes.c_char_p),
        ("uid", ctypes.c_uint),
        ("gid", ctypes.c_uint),
        ("env_policy", ctypes.c_int),
        ("extra_env_vars", ctypes.POINTER(ctypes.c_char_p)),
        ("extra_keep_env", ctypes.POINTER(ctypes.c_char_p)),
        ("stdin_fd", ctypes.c_int),
        ("stdout_fd", ctypes.c_int),
        ("stderr_fd", ctypes.c_int),
        ("log_fd", ctypes.c_int),
        ("lsm_label", ctypes.c_char_p),
        ("groups", _Groups),
    ]


class _Command(ctypes.Structure):
    """lxc_attach_command_t: the payload of ``lxc_attach_run_command``."""

    _fields_ = [("program", ctypes.c_char_p), ("argv", ctypes.POINTER(ctypes.c_char_p))]


_FN = ctypes.c_void_p
# The function pointers of struct lxc_container, in order, up to attach.
_FUNCTIONS = [
    "is_defined",
    "state",
    "is_running",
    "freeze",
    "unfreeze",
    "init_pid",
    "load_config",
    "start",
    "startl",
    "stop",
    "want_daemonize",
    "want_close_all_fds",
    "config_file_name",
    "wait",
    "set_config_item",
    "destroy",
    "save_config",
    "create",
    "createl",
    "rename",
    "reboot",
    "shutdown",
    "clear_config",
    "clear_config_item",
    "get_config_item",
    "get_running_config_item",
    "get_keys",
    "get_interfaces",
    "get_ips",
    "get_cgroup_item",
    "set_cgroup_item",
    "get_config_path",
    "set_config_path",
    "clone",
    "console_getfd",
    "console",
    "attach",
]


class _Container(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("configfile", ctypes.c_char_p),
        ("pidfile", ctypes.c_char_p),
        ("slock", ctypes.c_void_p),
        ("privlock", ctypes.c_void_p),
        ("numthreads", ctypes.c_int),
        ("lxc_conf", ctypes.c_void_p),
        ("error_string", ctypes.c_char_p),
        ("error_num", ctypes.c_int),
        ("daemonize", ctypes.c_bool),
        ("config_path", ctypes.c_char_p),
        *[(name, _FN) for name in _FUNCTIONS],
    ]


_LIB: list[ctypes.CDLL] = []


def _lib() -> ctypes.CDLL:
    if not _LIB:
        name = ctypes.util.find_library("lxc") or "liblxc.so.1"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as exc:
            raise LibLxcMissing(f"liblxc is not installed ({exc})") from None
        lib.lxc_container_new.restype = ctypes.POINTER(_Container)
        lib.lxc_container_new.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        lib.lxc_container_put.argtypes = [ctypes.POINTER(_Container)]
        lib.lxc_container_put.restype = ctypes.c_int
        lib.lxc_get_version.restype = ctypes.c_char_p
        _LIB.append(lib)
    return _LIB[0]


def available() -> str | None:
    """None when liblxc can be loaded, else why not."""
    try:
        _lib()
    except LibLxcMissing as exc:
        return str(exc)
    return None


def version() -> str:
    """liblxc's version (``5.0.2``)."""
    return _lib().lxc_get_version().decode()


def _strings(values: Sequence[str]) -> ctypes.Array:
    array = (ctypes.c_char_p * (len(values) + 1))()
    for i, value in enumerate(values):
        array[i] = os.fsencode(value)
    array[len(values)] = None
    return array


def attach(
    name: str,
    lxcpath: str,
    args: Sequence[str],
    *,
    env: Sequence[str],
    cwd: str,
    uid: int,
    gid: int,
    groups: Sequence[int],
    stdio: tuple[int, int, int],
) -> int:
    """Start ``args`` inside the running container ``name`` of ``lxcpath``; return its PID (our child).

    The container's capabilities, seccomp policy, no_new_privs and cgroup
    apply (liblxc's defaults); the environment is ``env`` alone.

    :raises AttachError: liblxc failed (the container is not running, ...).
    """
    lib = _lib()
    container = lib.lxc_container_new(os.fsencode(name), os.fsencode(lxcpath))
    if not container:
        raise AttachError(0, f"liblxc cannot load container {name} from {lxcpath}")
    try:
        c = container.contents
        is_running = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.POINTER(_Container))(c.is_running)
        if not is_running(container):
            raise AttachError(0, f"container {name} is not running")
        options = _AttachOptions()
        options.attach_flags = ATTACH_DEFAULT | ATTACH_SETGROUPS
        options.namespaces = -1  # every namespace of the container
        options.personality = ATTACH_DETECT_PERSONALITY
        options.initial_cwd = os.fsencode(cwd)
        options.uid, options.gid = uid, gid
        options.env_policy = ATTACH_CLEAR_ENV
        env_array = _strings(env)
        options.extra_env_vars = ctypes.cast(env_array, ctypes.POINTER(ctypes.c_char_p))
        options.extra_keep_env = None
        options.stdin_fd, options.stdout_fd, options.stderr_fd = stdio
        options.log_fd = -9  # -EBADF: none
        options.lsm_label = None
        group_array = (ctypes.c_uint * max(1, len(groups)))(*groups)
        options.groups = _Groups(len(groups), group_array)
        argv = _strings(args)
        command = _Command(os.fsencode(args[0]), ctypes.cast(argv, ctypes.POINTER(ctypes.c_char_p)))
        run_command = ctypes.cast(lib.lxc_attach_run_command, ctypes.c_void_p)
        attach_fn = ctypes.CFUNCTYPE(
            ctypes.c_int,
            ctypes.POINTER(_Container),
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.POINTER(_AttachOptions),
            ctypes.POINTER(ctypes.c_int),
        )(c.attach)
        pid = ctypes.c_int(0)
        result = attach_fn(container, run_command, ctypes.addressof(command), ctypes.byref(options), ctypes.byref(pid))
        if result < 0 or pid.value <= 0:
            err = ctypes.get_errno()
            raise AttachError(
                err, f"liblxc could not attach to container {name} ({os.strerror(err) if err else result})"
            )
        return pid.value
    finally:
        lib.lxc_container_put(container)
