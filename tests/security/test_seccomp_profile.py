"""Docker's seccomp profile format: checking (every rule, clear messages) and resolving per container."""

from __future__ import annotations

import json

import pytest

from engine.errors import InvalidParameter
from engine.security import seccomp

#: Some of Docker's default capabilities; none of those the profile's rules depend on.
DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_NET_RAW", "CAP_SETUID", "CAP_SYS_CHROOT", "CAP_KILL"]


def allowed(resolved: dict) -> set[str]:
    """Names an unconditional ALLOW rule lets through."""
    return {n for r in resolved["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r["args"] for n in r["names"]}


def default(caps=DEFAULT_CAPS, machine="x86_64", kernel=(6, 1)):
    return seccomp.resolve(seccomp.load_profile(seccomp.default_profile()), caps, machine, kernel)


def test_default_profile_denies_what_docker_denies():
    resolved = default()
    assert resolved["defaultAction"] == "SCMP_ACT_ERRNO" and resolved["defaultErrnoRet"] == 1
    assert resolved["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    names = allowed(resolved)
    assert {"read", "write", "execve", "arch_prctl", "ptrace"} <= names
    for denied in ("unshare", "mount", "setns", "add_key", "keyctl", "request_key", "perf_event_open", "bpf", "reboot"):
        assert denied not in names, denied
    # clone only without namespace flags; clone3 fails with ENOSYS so that libc falls back to clone.
    clone = [r for r in resolved["syscalls"] if r["names"] == ["clone"]]
    assert clone == [
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "errnoRet": None,
            "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        }
    ]
    assert {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "args": []} in resolved["syscalls"]


def test_capabilities_bring_their_calls():
    names = allowed(default(DEFAULT_CAPS + ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]))
    assert {"unshare", "mount", "setns", "clone", "clone3", "kcmp", "process_vm_readv"} <= names
    assert "add_key" not in names  # no capability brings keyrings
    resolved = default(DEFAULT_CAPS + ["CAP_SYS_ADMIN"])
    assert not any(r["names"] == ["clone3"] and r["action"] == "SCMP_ACT_ERRNO" for r in resolved["syscalls"])


def test_architecture_and_kernel_conditions():
    assert "arch_prctl" in allowed(default(machine="x86_64"))
    arm = default(machine="aarch64")
    assert "arch_prctl" not in allowed(arm) and "arm_fadvise64_64" in allowed(arm)
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "ptrace" in allowed(default(kernel=(4, 8)))
    assert "ptrace" not in allowed(default(kernel=(4, 7)))


def test_architectures_list_and_name_field_and_case():
    profile = seccomp.load_profile(
        json.dumps(
            {
                "DefaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"name": "mkdir", "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "unknown": 1}],
            }
        )
    )
    resolved = seccomp.resolve(profile, [], "x86_64", (6, 1))
    assert resolved["architectures"] == ["SCMP_ARCH_X86_64"]
    assert resolved["syscalls"] == [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "args": []}]


def test_empty_profile_means_no_seccomp():
    assert seccomp.load_profile("{}") is None
    assert seccomp.resolve(None, []) is None


@pytest.mark.parametrize(
    "profile, message",
    [
        ("{bad", "Decoding seccomp profile failed: Expecting property name"),
        ("[]", "profile: want an object, got a list"),
        ('{"syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW"}]}', "defaultAction: missing"),
        ('{"defaultAction": "SCMP_ACT_NOPE"}', 'defaultAction: unknown action "SCMP_ACT_NOPE"'),
        ('{"defaultAction": 5}', "defaultAction: want a string, got the number 5"),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86"], '
            '"archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}',
            "both 'architectures' and 'archMap' are specified",
        ),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_Z80"]}', "unknown architecture"),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ALLOW"}]}',
            "syscalls[0]: both 'name' and 'names' are specified",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW", '
            '"args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}',
            "syscalls[0].args[0].index: want a whole number from 0 to 5",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW", '
            '"args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}]}',
            "syscalls[0].args[0].value: want a whole number from 0 to 18446744073709551615",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW", '
            '"args": [{"index": 0, "value": 1, "op": "SCMP_CMP_LIKE"}]}]}',
            'unknown operator "SCMP_CMP_LIKE"',
        ),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW", '
            '"includes": {"minKernel": "4"}}]}',
            'syscalls[0].includes.minKernel: invalid kernel version "4"',
        ),
        ('{"defaultAction": "SCMP_ACT_NOTIFY"}', "needs a seccomp agent"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "listenerPath": "/run/agent.sock"}', "seccomp agent is not supported"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_NEW"]}', "seccomp flag"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": {"names": []}}', "syscalls: want a list"),
        ("[" * 100000 + "]" * 100000, "Decoding seccomp profile failed"),
    ],
)
def test_invalid_profiles_are_refused_whole(profile, message):
    with pytest.raises(InvalidParameter, match="Decoding seccomp profile failed") as info:
        seccomp.load_profile(profile)
    assert message in str(info.value)


def test_a_bad_rule_is_refused_whatever_its_conditions():
    # The rule would be dropped for this container (it needs CAP_SYS_ADMIN), yet it is invalid.
    text = json.dumps(
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["x"], "action": "SCMP_ACT_BOGUS", "includes": {"caps": ["CAP_SYS_ADMIN"]}}],
        }
    )
    with pytest.raises(InvalidParameter, match=r"syscalls\[0\].action"):
        seccomp.load_profile(text)


def test_kernel_version_parsing():
    assert seccomp.kernel_version("6.18.44-fc-v1272") == (6, 18)
    assert seccomp.kernel_version("3.12-1-amd64") == (3, 12)
    assert seccomp.kernel_version("5.4.0-rc5") == (5, 4)
    assert seccomp.native_arch("x86_64") == ("amd64", "SCMP_ARCH_X86_64")
