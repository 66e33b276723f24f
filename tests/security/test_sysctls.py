"""Only the sysctls a container's own namespaces hold, with runc's words."""

from __future__ import annotations

import pytest

from engine.errors import InvalidParameter
from engine.security import sysctls


@pytest.mark.parametrize(
    "key, private_ipc, private_net, message",
    [
        ("kernel.core_pattern", True, True, 'sysctl "kernel.core_pattern" is not in a separate kernel namespace'),
        ("kernel/core_pattern", True, True, 'sysctl "kernel.core_pattern" is not in a separate kernel namespace'),
        ("vm.overcommit_memory", True, True, 'sysctl "vm.overcommit_memory" is not in a separate kernel namespace'),
        ("kernel.shmmax", False, True, 'sysctl "kernel.shmmax" is not allowed in the hosts ipc namespace'),
        ("fs.mqueue.msg_max", False, True, 'sysctl "fs.mqueue.msg_max" is not allowed in the hosts ipc namespace'),
        ("net.ipv4.ip_forward", True, False, 'sysctl "net.ipv4.ip_forward" not allowed in host network namespace'),
        ("kernel.hostname", True, True, 'sysctl "kernel.hostname" is not allowed as it conflicts with the OCI'),
        ("user.max_user_namespaces", True, True, "setting ucounts without a user namespace not allowed"),
    ],
)
def test_refused(key, private_ipc, private_net, message):
    with pytest.raises(InvalidParameter) as info:
        sysctls.check(key, private_ipc=private_ipc, private_net=private_net)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "key",
    [
        "kernel.shm_rmid_forced",
        "kernel.msgmax",
        "kernel.sem",
        "fs.mqueue.queues_max",
        "net.ipv4.ip_forward",
        "kernel.domainname",
    ],
)
def test_allowed_in_private_namespaces(key):
    sysctls.check(key, private_ipc=True, private_net=True)


def test_kernel_domainname_needs_a_private_uts():
    with pytest.raises(InvalidParameter, match="not in a separate kernel namespace"):
        sysctls.check("kernel.domainname", private_ipc=True, private_net=True, private_uts=False)


def test_paths_and_both_spellings():
    assert sysctls.proc_path("kernel.shm_rmid_forced") == "/proc/sys/kernel/shm_rmid_forced"
    assert sysctls.proc_path("kernel/shm_rmid_forced") == "/proc/sys/kernel/shm_rmid_forced"
    assert sysctls.proc_path("net/ipv4/conf/eth0.100/rp_filter") == "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
    assert sysctls.dotted("net/ipv4/conf/eth0.100/rp_filter") == "net.ipv4.conf.eth0/100.rp_filter"


@pytest.mark.parametrize("key", ["", "net..x", "net/../kernel/core_pattern", "net.ipv4.", ".net", "net/./x"])
def test_no_way_out_of_proc_sys(key):
    with pytest.raises(InvalidParameter, match="invalid sysctl"):
        sysctls.check(key, private_ipc=True, private_net=True)
