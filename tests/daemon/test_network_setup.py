"""A container's network at start and at exit (NetworkService.setup/teardown) without a network
driver, over the rig of :mod:`tests.daemon.fakes`."""

from __future__ import annotations

import os

import pytest

from engine.errors import Conflict
from tests.daemon.fakes import Rig


def read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def test_host_mode_writes_the_files_and_makes_no_namespace(rig: Rig):
    c = rig.create("web", ExtraHosts=["db:10.1.2.3"], Dns=["192.0.2.53"])
    assert rig.daemon.network.setup(c) == {"mode": "host"}
    assert read(c.hostname_path) == os.uname().nodename + "\n"
    hosts = read(c.hosts_path)
    assert hosts.startswith(read("/etc/hosts")) and "10.1.2.3\tdb" in hosts
    assert "nameserver 192.0.2.53" in read(c.resolv_conf_path)
    assert not os.path.exists(os.path.join(rig.daemon.network.netns_dir, c.id))


def test_container_mode_joins_a_running_container_and_shares_its_files(rig: Rig):
    other = rig.create("other", config={"Hostname": "shared", "Domainname": "example.org"})
    c = rig.create("joined", NetworkMode="container:other")
    with pytest.raises(Conflict, match=f"cannot join network of a non running container: {other.id}"):
        rig.daemon.network.setup(c)
    rig.lifecycle.start(other)
    made = rig.daemon.network.setup(c)
    assert made == {"mode": "container", "path": f"/proc/{other.state.pid}/ns/net", "container": other.id}
    assert (c.config["Hostname"], c.config["Domainname"]) == ("shared", "example.org")
    for name in ("hostname", "hosts", "resolv.conf"):
        assert read(c.path_of(name)) == read(other.path_of(name))


@pytest.mark.root("network namespaces")
def test_none_mode_gets_a_namespace_of_its_own_until_it_exits(rig: Rig):
    """Creates: the container's network namespace (bound under the rig's root; removed at its exit)."""
    c = rig.create("web", NetworkMode="none")
    rig.lifecycle.start(c)
    path = os.path.join(rig.daemon.network.netns_dir, c.id)
    assert os.path.exists(path)
    assert rig.launcher.specs[-1]["command"]["network"] == {"mode": "none", "path": path}
    assert read(c.hostname_path) == c.id[:12] + "\n" and "localhost" in read(c.hosts_path)
    rig.lifecycle.stop(c)
    assert not os.path.exists(path)
    assert c.network_settings["IPAddress"] == "" and c.network_settings["Ports"] == {}
