"""One selection path for every driver kind: exec and network rules, the
dispatcher the daemon and engine-admin share, homes, options, load failures."""

from __future__ import annotations

import logging
import os
import stat
from typing import Any, ClassVar

import pytest

from engine.daemon.config import Config
from engine.drivers import discovery, exec, network
from engine.drivers.discovery import DriverEntry
from engine.drivers.network import NetworkOptions
from engine.drivers.selection import DriverConfig, DriverSelectionError
from engine.errors import InvalidParameter, NotSupported, PrerequisitesNotMet


class Recorder:
    """A stand-in driver class of any kind: records probes and constructions."""

    probes: ClassVar[list[tuple[str, Any]]] = []
    probe_error: ClassVar[Exception | None] = None

    def __init__(self, home: str, options: Any) -> None:
        self.home, self.options = home, options

    @classmethod
    def probe(cls, home: str, options: Any) -> None:
        cls.probes.append((home, options))
        if cls.probe_error is not None:
            raise cls.probe_error


def fake(kind: str, name: str, probe_error: Exception | None = None) -> DriverEntry:
    cls = type(f"Fake{name}", (Recorder,), {"probes": [], "probe_error": probe_error, "name": name})
    return DriverEntry(kind, name, f"fake:{name}", cls, None, "fake-dist", "1.0")


def broken(kind: str, name: str) -> DriverEntry:
    return DriverEntry(kind, name, f"fake:{name}", None, "ImportError: no module named x", "fake-dist", "1.0")


def entries(*items: DriverEntry) -> dict[str, DriverEntry]:
    return {e.name: e for e in items}


# exec
def test_exec_is_the_named_one_in_its_home(tmp_path):
    config = DriverConfig(str(tmp_path), exec_driver="native")
    native = fake("exec", "native")
    chosen = exec.plan(config, entries(native, fake("exec", "lxc")))
    assert (chosen.name, chosen.reason) == ("native", "chosen by --exec-driver")
    assert chosen.home == os.path.join(str(tmp_path), "execdriver", "native")
    assert native.cls.probes == [(chosen.home, ())]


def test_exec_errors_say_why(tmp_path):
    config = DriverConfig(str(tmp_path), exec_driver="lxc")
    with pytest.raises(
        DriverSelectionError,
        match=r"exec driver 'lxc' \(from --exec-driver\) is not installed; installed exec drivers: native",
    ):
        exec.plan(config, entries(fake("exec", "native")))
    with pytest.raises(DriverSelectionError, match="exec driver lxc from fake-dist 1.0 failed to load: ImportError"):
        exec.plan(config, entries(broken("exec", "lxc")))
    with pytest.raises(DriverSelectionError, match=r"exec driver lxc \(from --exec-driver\) cannot run here: no lxc"):
        exec.plan(config, entries(fake("exec", "lxc", PrerequisitesNotMet("no lxc"))))
    with pytest.raises(DriverSelectionError, match="exec driver lxc: disk on fire"):
        exec.plan(config, entries(fake("exec", "lxc", OSError("disk on fire"))))
    # The driver's own errors (a bad option) reach the operator as they are.
    with pytest.raises(InvalidParameter, match="bad option"):
        exec.plan(config, entries(fake("exec", "lxc", InvalidParameter("bad option"))))


# network
def test_network_gets_typed_options_in_root_network(tmp_path):
    options = NetworkOptions(bridge="br9", mtu=1400, icc=False)
    bridge = fake("network", "bridge")
    chosen = network.plan(DriverConfig(str(tmp_path), network_options=options), entries(bridge))
    assert (chosen.name, chosen.reason) == ("bridge", "chosen by default")
    assert chosen.home == os.path.join(str(tmp_path), "network") and chosen.options is options
    assert bridge.cls.probes == [(chosen.home, options)]


def test_network_off_or_missing_means_no_driver(tmp_path, caplog):
    off = network.plan(DriverConfig(str(tmp_path), network_driver=""), entries(fake("network", "bridge")))
    assert off.entry is None and off.reason == "networking disabled (-b none)"
    with caplog.at_level(logging.WARNING, logger="engine.drivers.network"):
        missing = network.plan(DriverConfig(str(tmp_path)), {})
    assert missing.entry is None and "no bridge network driver is installed" in missing.reason
    assert "containers get only lo" in caplog.text


def test_network_load_failure_and_not_supported_stop(tmp_path):
    config = DriverConfig(str(tmp_path))
    with pytest.raises(DriverSelectionError, match="network driver bridge from fake-dist 1.0 failed to load"):
        network.plan(config, entries(broken("network", "bridge")))
    with pytest.raises(
        DriverSelectionError, match=r"cannot run here: no iptables \(use -b none to run without networking\)"
    ):
        network.plan(config, entries(fake("network", "bridge", PrerequisitesNotMet("no iptables"))))


# the dispatcher
def test_select_constructs_in_a_private_home(tmp_path):
    root = str(tmp_path / "root")
    os.mkdir(root)
    config = DriverConfig(root)
    driver = discovery.select("exec", config, entries(fake("exec", "native")))
    assert driver.home == os.path.join(root, "execdriver", "native") and driver.options == ()
    for path in (os.path.join(root, "execdriver"), driver.home):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    net = discovery.select("network", config, entries(fake("network", "bridge")))
    assert net.home == os.path.join(root, "network") and net.options == NetworkOptions()
    assert discovery.select("network", config._replace(network_driver=""), entries(fake("network", "bridge"))) is None


def test_select_volumes_is_vfs_below_volumes(tmp_path):
    config = DriverConfig(str(tmp_path))
    vfs = discovery.select_volumes(config, entries(fake("graph", "vfs"), fake("graph", "overlay")))
    assert vfs.home == os.path.join(str(tmp_path), "volumes", "vfs")
    assert stat.S_IMODE(os.stat(os.path.join(str(tmp_path), "volumes")).st_mode) == 0o700
    with pytest.raises(DriverSelectionError, match=r"graph driver 'vfs' \(from the volumes graph\) is not installed"):
        discovery.select_volumes(config, entries(fake("graph", "overlay")))


@pytest.mark.parametrize(
    "kind, home, options",
    [
        ("graph", "{root}/zfs", ("size=1G",)),
        ("exec", "{root}/execdriver/zfs", ()),
        ("network", "{root}/network", NetworkOptions(mtu=9000)),
    ],
)
def test_probe_uses_the_home_and_options_selection_uses(tmp_path, kind, home, options):
    """What engine-admin's "supported here" column runs is what selection runs."""
    config = DriverConfig(str(tmp_path), graph_options=("size=1G",), network_options=NetworkOptions(mtu=9000))
    entry = fake(kind, "zfs", NotSupported("nope"))
    with pytest.raises(NotSupported, match="nope"):
        discovery.probe(kind, entry, config)
    assert entry.cls.probes == [(home.format(root=tmp_path), options)]
    with pytest.raises(DriverSelectionError, match="failed to load"):
        discovery.probe(kind, broken(kind, "zfs"), config)


def test_daemon_config_is_translated_once(tmp_path):
    cfg = Config(
        data_root=str(tmp_path),
        storage_driver="vfs",
        storage_opts=["size=1G"],
        exec_driver="",
        bridge="br0",
        bip="10.0.0.1/24",
        mtu=1400,
        icc=False,
        userland_proxy=False,
        ip="127.0.0.1",
        dns=["10.0.0.53"],
    )
    config = cfg.driver_config(environ={"ENGINE_DRIVER": "overlay"})
    assert (config.root, config.graph_driver, config.graph_options) == (str(tmp_path), "vfs", ("size=1G",))
    assert config.exec_driver == "native" and config.network_driver == "bridge"
    assert config.environ == {"ENGINE_DRIVER": "overlay"}
    assert config.network_options == NetworkOptions(
        bridge="br0",
        bip="10.0.0.1/24",
        mtu=1400,
        icc=False,
        userland_proxy=False,
        default_ip="127.0.0.1",
        dns=("10.0.0.53",),
    )
    cfg.bridge = "none"
    assert cfg.driver_config().network_driver == ""
