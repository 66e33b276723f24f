"""Daemon configuration: flags, daemon.json, conflicts and the seed's checks."""

from __future__ import annotations

import argparse
import json

import pytest

from engine.daemon.config import (
    Config,
    ConfigError,
    add_daemon_arguments,
    build_config,
    check_host,
    kernel_version,
    parse_host,
    validate,
)
from engine.errors import InvalidParameter


def parse(*argv: str, config_file: str | None = None) -> Config:
    parser = argparse.ArgumentParser()
    add_daemon_arguments(parser)
    args = parser.parse_args(list(argv) + (["--config-file", config_file] if config_file else []))
    return build_config(args)


@pytest.fixture
def no_default_file(monkeypatch, tmp_path):
    monkeypatch.setattr("engine.daemon.config.DEFAULT_CONFIG_FILE", str(tmp_path / "absent.json"))


def test_defaults(no_default_file):
    cfg = parse()
    assert cfg.hosts == ["unix:///var/run/engine.sock"]
    assert cfg.root == "/var/lib/engine" and cfg.pidfile == "/var/run/engine.pid"
    assert cfg.iptables and cfg.icc and cfg.ip_masq and cfg.ip_forward
    assert cfg.storage_driver_priority == ["aufs", "btrfs", "devmapper", "overlay", "vfs"]
    assert cfg.exec_driver == "native"


def test_docker_flag_names(no_default_file):
    cfg = parse(
        "-p",
        "/tmp/p.pid",
        "-g",
        "/tmp/root",
        "-H",
        "unix:///tmp/s.sock",
        "-H",
        "tcp://127.0.0.1:2375",
        "-D",
        "-G",
        "wheel",
        "--iptables=false",
        "--icc=true",
        "--dns",
        "1.1.1.1",
        "--dns",
        "9.9.9.9",
        "-s",
        "vfs",
        "--storage-opt",
        "a=b",
        "-e",
        "lxc",
        "--mtu",
        "1400",
        "-b",
        "br0",
        "--insecure-registry",
        "10.0.0.0/8",
        "--registry-mirror",
        "http://127.0.0.1:5000",
    )
    assert cfg.pidfile == "/tmp/p.pid" and cfg.root == "/tmp/root"
    assert cfg.hosts == ["unix:///tmp/s.sock", "tcp://127.0.0.1:2375"]
    assert cfg.debug and cfg.group == "wheel" and cfg.iptables is False
    assert cfg.dns == ["1.1.1.1", "9.9.9.9"] and cfg.storage_driver == "vfs" and cfg.storage_opts == ["a=b"]
    assert cfg.exec_driver == "lxc" and cfg.mtu == 1400 and cfg.bridge == "br0"
    assert cfg.insecure_registries == ["10.0.0.0/8"] and cfg.registry_mirrors == ["http://127.0.0.1:5000"]
    assert parse("--data-root", "/x", "--tlsverify").tls is True


def test_daemon_json_with_docker_keys(tmp_path):
    f = tmp_path / "daemon.json"
    f.write_text(
        json.dumps(
            {
                "data-root": "/srv/engine",
                "debug": True,
                "storage-driver": "vfs",
                "registry-mirrors": ["http://m"],
                "icc": False,
                "mtu": 9000,
                "storage-driver-priority": ["overlay", "vfs"],
            }
        )
    )
    cfg = parse("-H", "unix:///tmp/x.sock", config_file=str(f))
    assert cfg.root == "/srv/engine" and cfg.debug and cfg.storage_driver == "vfs"
    assert cfg.registry_mirrors == ["http://m"] and cfg.icc is False and cfg.mtu == 9000
    assert cfg.storage_driver_priority == ["overlay", "vfs"]


def test_same_option_in_both_places_is_an_error(tmp_path):
    f = tmp_path / "daemon.json"
    f.write_text(json.dumps({"debug": False, "data-root": "/a"}))
    with pytest.raises(ConfigError) as info:
        parse("-D", "-g", "/b", config_file=str(f))
    msg = str(info.value)
    assert "specified both as a flag and in the configuration file" in msg
    assert "debug: (from flag: true, from file: false)" in msg
    assert "data-root: (from flag: /b, from file: /a)" in msg


def test_unknown_key_and_bad_json(tmp_path):
    f = tmp_path / "daemon.json"
    f.write_text('{"nonsense": 1}')
    with pytest.raises(ConfigError, match="don't match any configuration option: nonsense"):
        parse(config_file=str(f))
    f.write_text("{not json")
    with pytest.raises(ConfigError, match="unable to configure the engine daemon"):
        parse(config_file=str(f))
    f.write_text('{"mtu": "big"}')
    with pytest.raises(ConfigError, match="invalid value"):
        parse(config_file=str(f))
    with pytest.raises(ConfigError, match="does not exist"):
        parse(config_file=str(tmp_path / "missing.json"))


def test_seed_checks_with_seed_messages(no_default_file):
    with pytest.raises(
        ConfigError, match=r"You specified -b & --bip, mutually exclusive options\. Please specify only one\."
    ):
        validate(parse("-b", "br0", "--bip", "10.1.0.1/24"))
    with pytest.raises(ConfigError, match="You specified --iptables=false with --icc=false. ICC uses iptables"):
        validate(parse("--iptables=false", "--icc=false"))
    validate(parse("--iptables=false"))


def test_host_checks():
    with pytest.raises(ConfigError, match="only supported on linux"):
        check_host(system=lambda: "Darwin")
    with pytest.raises(ConfigError, match="needs to be run as root"):
        check_host(system=lambda: "Linux", geteuid=lambda: 1000)
    with pytest.raises(ConfigError, match="Please upgrade your kernel to 3.8.0"):
        check_host(system=lambda: "Linux", geteuid=lambda: 0, release=lambda: "3.2.0-4-amd64")
    check_host(system=lambda: "Linux", geteuid=lambda: 0, release=lambda: "3.8.0")
    assert kernel_version("6.1.0-18-amd64") == (6, 1, 0)
    assert kernel_version("5.15") == (5, 15, 0)


def test_parse_host():
    assert str(parse_host("unix:///x/y.sock")) == "unix:///x/y.sock"
    assert str(parse_host("unix://")) == "unix:///var/run/engine.sock"
    assert str(parse_host("tcp://0.0.0.0:2375")) == "tcp://0.0.0.0:2375"
    assert str(parse_host("tcp://:4243")) == "tcp://127.0.0.1:4243"
    assert str(parse_host("tcp://10.0.0.1", tls=True)) == "tcp://10.0.0.1:2376"
    assert str(parse_host("fd://")) == "fd://" and str(parse_host("fd://3")) == "fd://3"
    for bad in ("http://x", "udp://1.2.3.4:5", "/var/run/x.sock", "tcp://h:99999", "fd://x"):
        with pytest.raises(ConfigError, match="Invalid bind address format"):
            parse_host(bad)


def test_operations_options_from_flags(no_default_file):
    cfg = parse(
        "--metrics-addr",
        "127.0.0.1:9323",
        "--log-driver",
        "json-file",
        "--log-opt",
        "max-size=10m",
        "--log-opt",
        "max-file=3",
        "--default-ulimit",
        "nofile=1024:2048",
        "--max-concurrent-downloads",
        "6",
        "--max-concurrent-uploads",
        "2",
        "--shutdown-timeout",
        "30",
        "--shim-memory-merge",
    )
    validate(cfg)
    assert cfg.metrics_addr == "127.0.0.1:9323"
    assert cfg.log_driver == "json-file" and cfg.log_opts == {"max-size": "10m", "max-file": "3"}
    assert cfg.default_ulimits == {"nofile": {"Name": "nofile", "Soft": 1024, "Hard": 2048}}
    assert (cfg.max_concurrent_downloads, cfg.max_concurrent_uploads, cfg.shutdown_timeout) == (6, 2, 30)
    assert cfg.shim_memory_merge is True
    assert cfg.flags["log_opts"] == {"max-size": "10m", "max-file": "3"}
    assert "flags" not in cfg.to_json()


def test_operations_options_defaults_and_daemon_json(tmp_path, no_default_file):
    cfg = parse()
    assert (cfg.metrics_addr, cfg.log_driver, cfg.log_opts, cfg.default_ulimits) == ("", "json-file", {}, {})
    assert (cfg.max_concurrent_downloads, cfg.max_concurrent_uploads, cfg.shutdown_timeout) == (3, 5, 15)
    assert cfg.shim_memory_merge is False
    f = tmp_path / "daemon.json"
    f.write_text(
        json.dumps(
            {
                "metrics-addr": ":9323",
                "log-opts": {"max-size": "1k", "max-file": "2"},
                "default-ulimits": {"nproc": {"Name": "nproc", "Soft": 100, "Hard": 200}},
                "shutdown-timeout": 5,
            }
        )
    )
    cfg = parse(config_file=str(f))
    validate(cfg)
    assert cfg.log_opts == {"max-size": "1k", "max-file": "2"}
    assert cfg.default_ulimits == {"nproc": {"Name": "nproc", "Soft": 100, "Hard": 200}}
    assert cfg.shutdown_timeout == 5 and cfg.flags == {}


@pytest.mark.parametrize(
    "doc,message",
    [
        ({"log-opts": {"max-file": 3}}, "invalid value"),
        ({"log-opts": {"nonsense": "1"}}, "unknown log opt 'nonsense' for json-file log driver"),
        ({"log-opts": {"max-size": "big"}}, "invalid value for max-size: big"),
        ({"log-opts": {"max-file": "0"}}, "max-file cannot be less than 1"),
        ({"log-driver": "syslog"}, 'error looking up logging plugin syslog: plugin "syslog" not found'),
        ({"default-ulimits": {"nofile": {"Name": "nofile", "Soft": 20, "Hard": 10}}}, "soft limit must be less"),
        ({"default-ulimits": {"bogus": {"Name": "bogus", "Soft": 1, "Hard": 1}}}, "invalid ulimit type: bogus"),
        ({"metrics-addr": "localhost"}, "invalid metrics-addr"),
        ({"max-concurrent-downloads": -1}, "invalid max-concurrent-downloads: -1"),
    ],
)
def test_operations_options_refused(tmp_path, doc, message):
    f = tmp_path / "daemon.json"
    f.write_text(json.dumps(doc))
    # ConfigError and the log checks' InvalidParameter: both stop start-up and a reload.
    with pytest.raises(InvalidParameter, match=message):
        validate(parse(config_file=str(f)))


def test_network_pools_and_ipv6_options(tmp_path, no_default_file):
    from engine.drivers.ipam import PoolSpec

    cfg = parse("--default-address-pool", "base=10.10.0.0/16,size=24", "--ipv6", "--fixed-cidr-v6", "fd00:1::/64")
    validate(cfg)
    options = cfg.network_options()
    assert options.default_address_pools == (PoolSpec("10.10.0.0/16", 24),)
    assert options.ipv6 and options.fixed_cidr_v6 == "fd00:1::/64" and options.ip6tables
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"default-address-pools": [{"base": "10.20.0.0/16", "size": 24}], "ip6tables": False}))
    cfg = parse(config_file=str(path))
    assert cfg.network_options().default_address_pools == (PoolSpec("10.20.0.0/16", 24),)
    assert not cfg.network_options().ip6tables
    assert parse().network_options().default_address_pools == ()  # Docker's own pools
    path.write_text(json.dumps({"default-address-pools": [{"base": "10.20.0.0/16", "size": 8}]}))
    with pytest.raises(ConfigError, match="default-address-pools: invalid pools size"):
        parse(config_file=str(path))
    with pytest.raises(ConfigError, match="must be a key=value pair"):
        parse("--default-address-pool", "10.0.0.0/8")
    with pytest.raises(ConfigError, match="--ipv6 needs --fixed-cidr-v6"):
        validate(parse("--ipv6"))
    with pytest.raises(ConfigError, match="invalid --fixed-cidr-v6"):
        validate(parse("--fixed-cidr-v6", "10.0.0.0/8"))
