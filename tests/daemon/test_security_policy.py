"""The daemon's security policy: SecurityOpt parsing, checks at create, what start and /info get."""

from __future__ import annotations

import json

import pytest

from engine.daemon.config import Config
from engine.daemon.security import SecurityPolicy, parse_security_opt
from engine.errors import InvalidParameter
from engine.security import paths, seccomp

CUSTOM = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]})


def policy(seccomp_unsupported=None, **options) -> SecurityPolicy:
    return SecurityPolicy(Config(**options), seccomp_unsupported)


@pytest.mark.parametrize(
    "opts, expected",
    [
        (["no-new-privileges"], {"no_new_privileges": True}),
        (["no-new-privileges=false"], {"no_new_privileges": False}),
        (["no-new-privileges:true"], {"no_new_privileges": True}),
        (["seccomp=unconfined"], {"seccomp": "unconfined"}),
        (["seccomp=builtin"], {"seccomp": ""}),
        ([f"seccomp={CUSTOM}"], {"seccomp": CUSTOM}),
        (["apparmor=unconfined", "label=disable", "label:level:s0"], {"apparmor": "unconfined"}),
    ],
)
def test_parse(opts, expected):
    parsed = parse_security_opt(opts)
    for key, value in expected.items():
        assert getattr(parsed, key) == value


@pytest.mark.parametrize(
    "opts, message",
    [
        (["foo"], 'invalid --security-opt 1: "foo"'),
        (["foo=bar"], 'invalid --security-opt 2: "foo=bar"'),
        (["systempaths=unconfined"], 'invalid --security-opt 2: "systempaths=unconfined"'),
        (["no-new-privileges=maybe"], 'invalid --security-opt 2: "no-new-privileges=maybe"'),
    ],
)
def test_parse_errors_are_dockerds(opts, message):
    with pytest.raises(InvalidParameter) as info:
        parse_security_opt(opts)
    assert str(info.value) == message


def test_check_create_refuses_bad_profiles_and_sysctls():
    p = policy()
    with pytest.raises(InvalidParameter, match="Decoding seccomp profile failed"):
        p.check_create({"SecurityOpt": ['seccomp={"defaultAction": "SCMP_ACT_NOPE"}']})
    with pytest.raises(InvalidParameter, match="is not in a separate kernel namespace"):
        p.check_create({"Sysctls": {"kernel.core_pattern": "core"}})
    with pytest.raises(InvalidParameter, match="not allowed in host network namespace"):
        p.check_create({"NetworkMode": "host", "Sysctls": {"net.ipv4.ip_forward": "0"}})
    with pytest.raises(InvalidParameter, match="not allowed in the hosts ipc namespace"):
        p.check_create({"IpcMode": "host", "Sysctls": {"kernel.shmmax": "1"}})
    with pytest.raises(InvalidParameter, match="want a string"):
        p.check_create({"Sysctls": {"kernel.shmmax": 1}})
    with pytest.raises(InvalidParameter, match="cannot run a custom seccomp profile"):
        policy("no libseccomp").check_create({"SecurityOpt": [f"seccomp={CUSTOM}"]})
    policy("no libseccomp").check_create({"SecurityOpt": ["seccomp=unconfined"]})


def test_check_create_stores_dockerds_defaults():
    hc: dict = {"Sysctls": {"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"}}
    policy().check_create(hc)
    assert hc["MaskedPaths"] == list(paths.default_masked_paths())
    assert hc["ReadonlyPaths"] == list(paths.DEFAULT_READONLY_PATHS)
    assert "SecurityOpt" not in hc
    lifted = {"MaskedPaths": [], "ReadonlyPaths": []}  # what the CLI sends for systempaths=unconfined
    policy().check_create(lifted)
    assert lifted == {"MaskedPaths": [], "ReadonlyPaths": []}
    for hc in ({"Privileged": True}, {"IpcMode": "host"}, {"PidMode": "host", "SecurityOpt": ["no-new-privileges"]}):
        policy().check_create(hc)
        assert hc["SecurityOpt"][-1] == "label=disable"
    hc = {"Privileged": True, "SecurityOpt": ["label=user:u"]}
    policy().check_create(hc)
    assert hc["SecurityOpt"] == ["label=user:u"] and "MaskedPaths" not in hc


def test_what_start_gets():
    p = policy()
    assert p.seccomp_profile({}) == seccomp.default_profile()
    assert p.seccomp_profile({"SecurityOpt": ["seccomp=builtin"]}) == seccomp.default_profile()
    assert p.seccomp_profile({"SecurityOpt": ["seccomp=unconfined"]}) == ""
    assert p.seccomp_profile({"SecurityOpt": [f"seccomp={CUSTOM}"]}) == CUSTOM
    assert p.seccomp_profile({"Privileged": True, "SecurityOpt": [f"seccomp={CUSTOM}"]}) == ""
    assert policy("no seccomp here").seccomp_profile({}) == ""
    assert p.no_new_privileges({}) is False
    assert p.no_new_privileges({"SecurityOpt": ["no-new-privileges"]}) is True
    nnp = policy(no_new_privileges=True)
    assert nnp.no_new_privileges({}) is True
    assert nnp.no_new_privileges({"SecurityOpt": ["no-new-privileges=false"]}) is False


def test_info_and_daemon_options(tmp_path):
    assert policy().info_options() == ["name=seccomp,profile=default"]
    assert policy().info_warnings() == []
    assert policy("no libseccomp").info_options() == []
    assert policy(no_new_privileges=True).info_options() == ["name=seccomp,profile=default", "name=no-new-privileges"]
    custom = tmp_path / "profile.json"
    custom.write_text(CUSTOM)
    p = policy(seccomp_profile=str(custom))
    assert p.info_options() == [f"name=seccomp,profile={custom}"]
    assert p.info_warnings() == ["WARNING: daemon is not using the default seccomp profile"]
    assert p.seccomp_profile({}) == CUSTOM
    assert policy(seccomp_profile="unconfined").seccomp_profile({}) == ""
    custom.write_text("{nope")
    with pytest.raises(InvalidParameter, match="Decoding seccomp profile failed"):
        policy(seccomp_profile=str(custom))
    with pytest.raises(InvalidParameter, match="opening seccomp profile"):
        policy(seccomp_profile=str(tmp_path / "missing.json"))
