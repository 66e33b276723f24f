"""libseccomp through ctypes: profiles compile to BPF, and the kernel enforces what was compiled.

Filters are loaded in forked children (a filter is for life), which report
through their exit status; no_new_privs is set first, so loading needs no
privilege.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable

import pytest

from engine.errors import InvalidParameter
from engine.security import seccomp
from engine.sys import libc, libseccomp
from engine.testing.procs import run_in_child

pytestmark = pytest.mark.skipif(libseccomp.available() is not None, reason=str(libseccomp.available()))


def _in_child(program: bytes, body: Callable[[], None], flags: int = 0) -> None:
    """Load ``program`` in a forked child (no_new_privs first), then run ``body`` there."""

    def child() -> None:
        libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
        libc.seccomp_set_filter(program, flags)
        body()

    run_in_child(child)


def _resolved(profile: dict, caps: list[str] | None = None) -> dict:
    return seccomp.resolve(seccomp.load_profile(json.dumps(profile)), caps or [])


def _status(name: str) -> str:
    with open("/proc/self/status") as fh:
        return next(line.split()[1] for line in fh if line.startswith(name + ":"))


def test_version_and_syscall_names():
    assert libseccomp.version() >= (2, 3, 0)
    assert libseccomp.resolve_syscall("read") is not None
    assert libseccomp.resolve_syscall("no_such_call") is None


def test_default_profile_denies_unshare_and_allows_the_rest():
    program = libseccomp.compile_filter(seccomp.resolve(seccomp.load_profile(seccomp.default_profile()), ["CAP_CHOWN"]))
    assert program and len(program) % libc.SOCK_FILTER_SIZE == 0

    def body() -> None:
        assert _status("Seccomp") == "2"
        try:
            libc.unshare(libc.CLONE_NEWUSER)
        except OSError as exc:
            assert exc.errno == errno.EPERM
        else:
            raise AssertionError("unshare(CLONE_NEWUSER) was allowed")
        assert os.getpid() > 0 and os.listdir("/")  # ordinary calls still work

    _in_child(program, body)


def test_errno_rules_arguments_and_unknown_names():
    program = libseccomp.compile_filter(
        _resolved(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["mkdir", "mkdirat", "no_such_call"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                    # getpriority(PRIO_PGRP, ...) is refused, PRIO_PROCESS passes: a condition on argument 0
                    {
                        "names": ["getpriority"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 0, "value": os.PRIO_PGRP, "op": "SCMP_CMP_EQ"}],
                    },
                    # a rule with the default action is left out, not an error
                    {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
                ],
            }
        )
    )

    def body() -> None:
        try:
            os.mkdir("/tmp/engine-seccomp-never-made")
        except PermissionError:
            pass
        else:
            raise AssertionError("mkdir was allowed")
        os.getpriority(os.PRIO_PROCESS, 0)
        try:
            os.getpriority(os.PRIO_PGRP, 0)
        except OSError as exc:
            assert exc.errno == errno.EPERM  # no errnoRet: EPERM, as runc does
        else:
            raise AssertionError("getpriority(PRIO_PGRP) was allowed")

    _in_child(program, body)


def test_conditions_on_one_argument_become_separate_rules():
    # Two conditions on argument 0: each its own rule (runc), so either one matches.
    resolved = _resolved(
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {
                    "names": ["personality"],
                    "action": "SCMP_ACT_ERRNO",
                    "args": [
                        {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                        {"index": 0, "value": 0x20000, "op": "SCMP_CMP_EQ"},
                    ],
                }
            ],
        }
    )
    assert libseccomp.compile_filter(resolved)


def test_refusals():
    with pytest.raises(InvalidParameter, match="unknown action"):
        libseccomp.compile_filter({"defaultAction": "SCMP_ACT_NOPE", "syscalls": []})
    with pytest.raises(OSError, match="malformed"):
        libc.seccomp_set_filter(b"1234567")
