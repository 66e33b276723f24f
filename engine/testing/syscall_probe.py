"""Try the system calls Docker's seccomp profile denies, from inside a container; print what happened.

Run as ``python3 -S -I syscall_probe.py`` in a container that sees the
host's ``/usr`` (tests bind it read-only; this file imports only the
standard library and nothing of the engine). It prints one JSON object:
``{"seccomp": "2", "calls": {"add_key": "EPERM", "getpid": "ok", ...}}``,
each call's result being ``ok`` or the errno's name.

Every call is harmless whatever the filter lets through, so a test that
expects a denial changes nothing on the host when the denial is missing:

* namespaces are made in a throw-away child process (``unshare``, a
  ``clone`` with ``CLONE_NEWUSER`` whose child exits at once, a tmpfs
  mounted in a new user and mount namespace of that child only);
* ``add_key`` adds a key to the probe's own process keyring, which dies
  with it; ``keyctl`` and ``request_key`` only look keys up;
* ``perf_event_open`` gets a NULL attribute (EFAULT when allowed),
  ``clone3`` a NULL argument of size 0 (EINVAL when allowed);
* ``personality`` asks for READ_IMPLIES_EXEC in a child; ``socket`` makes
  an AF_VSOCK socket and closes it.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import sys

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

#: x86_64 numbers (the probe refuses to run elsewhere).
NR = {
    "getpid": 39,
    "clone": 56,
    "personality": 135,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "clone3": 435,
}
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
KEY_SPEC_PROCESS_KEYRING = -2
KEYCTL_GET_KEYRING_ID = 0
READ_IMPLIES_EXEC = 0x0400000
AF_VSOCK = 40


def _call(name: str, *args: object) -> str:
    ctypes.set_errno(0)
    result = _syscall(ctypes.c_long(NR[name]), *args)
    if result == -1:
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return "ok"


def _in_child(action: object) -> str:
    """Run ``action`` (returning ok or an errno name) in a forked child, so nothing of it stays."""
    pid = os.fork()
    if pid == 0:
        try:
            outcome = action()  # type: ignore[operator]
        except BaseException:
            os._exit(255)
        os._exit(0 if outcome == "ok" else getattr(errno, outcome, 254))
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return "ok" if code == 0 else errno.errorcode.get(code, str(code))


def _clone_newuser() -> str:
    # A raw clone(2) without a new stack behaves like fork(2): the child sees 0.
    ctypes.set_errno(0)
    pid = _syscall(ctypes.c_long(NR["clone"]), ctypes.c_ulong(CLONE_NEWUSER | SIGCHLD), None, None, None, None)
    if pid == 0:
        os._exit(0)
    if pid == -1:
        return errno.errorcode.get(ctypes.get_errno(), "?")
    os.waitpid(pid, 0)
    return "ok"


def _mount_in_userns() -> str:
    outcome = _call("unshare", ctypes.c_ulong(CLONE_NEWUSER | CLONE_NEWNS))
    if outcome != "ok":
        return outcome
    if _libc.mount(b"none", b"/tmp", b"tmpfs", ctypes.c_ulong(0), None) != 0:
        return errno.errorcode.get(ctypes.get_errno(), "?")
    return "ok"


def _vsock() -> str:
    try:
        import socket

        socket.socket(AF_VSOCK, socket.SOCK_STREAM).close()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, "?")
    return "ok"


def probe() -> dict[str, str]:
    """Each probed call -> ``ok`` or its errno's name."""
    return {
        "getpid": _call("getpid"),
        "unshare_user": _in_child(lambda: _call("unshare", ctypes.c_ulong(CLONE_NEWUSER))),
        "mount_in_userns": _in_child(_mount_in_userns),
        "clone_newuser": _in_child(_clone_newuser),
        "clone3": _call("clone3", None, ctypes.c_size_t(0)),
        "add_key": _call(
            "add_key", b"user", b"engine-probe", b"x", ctypes.c_size_t(1), ctypes.c_int(KEY_SPEC_PROCESS_KEYRING)
        ),
        "keyctl": _call("keyctl", ctypes.c_int(KEYCTL_GET_KEYRING_ID), ctypes.c_int(KEY_SPEC_PROCESS_KEYRING), 0),
        "request_key": _call("request_key", b"user", b"engine-probe-none", None, ctypes.c_int(0)),
        "perf_event_open": _call("perf_event_open", None, ctypes.c_int(0), ctypes.c_int(-1), ctypes.c_int(-1), 0),
        "personality_rie": _in_child(lambda: _call("personality", ctypes.c_ulong(READ_IMPLIES_EXEC))),
        "socket_vsock": _vsock(),
    }


def main() -> int:
    if os.uname().machine != "x86_64":
        print(json.dumps({"error": f"the probe knows x86_64 system call numbers only, not {os.uname().machine}"}))
        return 2
    with open("/proc/self/status") as fh:
        seccomp = next((line.split()[1] for line in fh if line.startswith("Seccomp:")), "")
    print(json.dumps({"seccomp": seccomp, "calls": probe()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
