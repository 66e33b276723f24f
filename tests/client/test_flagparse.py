"""The Go parsers behind ``run``/``create`` flags: sizes, ports, mounts, volumes, devices, ulimits, validators."""

from __future__ import annotations

import pytest

from engine.client.flagparse import (
    FlagError,
    is_ip,
    normalize_capabilities,
    parse_cpus,
    parse_device,
    parse_go_duration,
    parse_kv_file,
    parse_mount,
    parse_port_spec,
    parse_port_specs,
    parse_restart_policy,
    parse_ulimit,
    parse_volume_spec,
    validate_dns_search,
    validate_env,
    validate_extra_host,
    validate_label,
    validate_sysctl,
)
from engine.client.runflags import normalize_platform
from engine.utils.units import ram_in_bytes


@pytest.mark.parametrize(
    "text, expected",
    [
        ("32m", 32 << 20),
        ("1g", 1 << 30),
        ("1G", 1 << 30),
        ("512k", 512 << 10),
        ("1024", 1024),
        ("10b", 10),
        ("1.5m", int(1.5 * (1 << 20))),
        ("2MiB", 2 << 20),
        ("2mb", 2 << 20),
        ("3 m", 3 << 20),
        ("1t", 1 << 40),
    ],
)
def test_ram_in_bytes(text, expected):
    assert ram_in_bytes(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("foo", "invalid size: 'foo'"),
        ("1x", "invalid suffix: 'x'"),
        ("1mm", "invalid suffix: 'mm'"),
        ("1kbb", "invalid suffix: 'kbb'"),
        ("-1m", "invalid size: '-1m'"),
    ],
)
def test_ram_in_bytes_errors(text, message):
    with pytest.raises(ValueError, match=message):
        ram_in_bytes(text)


def test_cpus_and_durations():
    assert parse_cpus("1.5") == 1_500_000_000
    assert parse_cpus("0.001") == 1_000_000
    assert parse_cpus("2") == 2_000_000_000
    with pytest.raises(ValueError, match="too precise"):
        parse_cpus("0.0000000001")
    with pytest.raises(ValueError, match="rational number"):
        parse_cpus("many")
    assert parse_go_duration("1m30s") == 90_000_000_000
    assert parse_go_duration("500ms") == 500_000_000
    assert parse_go_duration("1.5h") == 5_400_000_000_000
    assert parse_go_duration("0") == 0
    assert parse_go_duration("-2s") == -2_000_000_000
    for bad, message in (
        ("10", "missing unit"),
        ("1d", 'unknown unit "d"'),
        ("", "invalid duration"),
        ("s", "invalid"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_go_duration(bad)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("80", [("80/tcp", {"HostIp": "", "HostPort": ""})]),
        ("8080:80", [("80/tcp", {"HostIp": "", "HostPort": "8080"})]),
        ("127.0.0.1:8080:80/udp", [("80/udp", {"HostIp": "127.0.0.1", "HostPort": "8080"})]),
        ("127.0.0.1::80", [("80/tcp", {"HostIp": "127.0.0.1", "HostPort": ""})]),
        ("[::1]:8080:80", [("80/tcp", {"HostIp": "::1", "HostPort": "8080"})]),
        ("::1:8080:80", [("80/tcp", {"HostIp": "::1", "HostPort": "8080"})]),
        ("80/SCTP", [("80/sctp", {"HostIp": "", "HostPort": ""})]),
        (
            "8000-8001:80-81",
            [("80/tcp", {"HostIp": "", "HostPort": "8000"}), ("81/tcp", {"HostIp": "", "HostPort": "8001"})],
        ),
        ("8000-8010:80", [("80/tcp", {"HostIp": "", "HostPort": "8000-8010"})]),
        ("90-91", [("90/tcp", {"HostIp": "", "HostPort": ""}), ("91/tcp", {"HostIp": "", "HostPort": ""})]),
    ],
)
def test_port_spec(spec, expected):
    assert parse_port_spec(spec) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("foo", "invalid containerPort: foo"),
        ("abc:80", "invalid hostPort: abc"),
        ("8080:", "no port specified: 8080:<empty>"),
        ("1:2:3:4", "invalid IP address: 1:2"),
        ("300.1.1.1:80:80", "invalid IP address: 300.1.1.1"),
        ("80/xyz", "invalid proto: xyz"),
        ("8000-8001:80-82", "invalid ranges specified for container and host Ports: 80-82 and 8000-8001"),
        ("70000", "invalid containerPort: 70000"),
        ("90-80", "invalid containerPort: 90-80"),
    ],
)
def test_port_spec_errors(spec, message):
    with pytest.raises(FlagError) as info:
        parse_port_spec(spec)
    assert str(info.value) == message
    assert info.value.status == 125


def test_port_specs_merge_bindings():
    exposed, bindings = parse_port_specs(["8080:80", "127.0.0.1:9090:80", "53/udp"])
    assert exposed == {"80/tcp": {}, "53/udp": {}}
    assert bindings["80/tcp"] == [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": "9090"}]


def test_volume_specs():
    assert parse_volume_spec("/data") == {"Type": "volume", "Source": "", "Target": "/data", "ReadOnly": False}
    assert parse_volume_spec("/tmp:/host:ro") == {"Type": "bind", "Source": "/tmp", "Target": "/host", "ReadOnly": True}
    assert parse_volume_spec("vol:/v")["Type"] == "volume"
    assert parse_volume_spec("./rel:/v")["Type"] == "bind"
    with pytest.raises(FlagError, match="too many colons"):
        parse_volume_spec("/a:/b:ro:x")
    with pytest.raises(FlagError, match="empty section between colons"):
        parse_volume_spec("/a::/b")
    with pytest.raises(FlagError, match="invalid empty volume spec"):
        parse_volume_spec("")


def test_mounts():
    assert parse_mount("type=bind,src=/a,dst=/b,readonly") == {
        "Type": "bind",
        "Source": "/a",
        "Target": "/b",
        "ReadOnly": True,
    }
    assert parse_mount("type=bind,source=/a,target=/b,bind-propagation=rshared") == {
        "Type": "bind",
        "Source": "/a",
        "Target": "/b",
        "BindOptions": {"Propagation": "rshared"},
    }
    assert parse_mount("src=v,dst=/d,volume-label=a=b,volume-nocopy") == {
        "Type": "volume",
        "Source": "v",
        "Target": "/d",
        "VolumeOptions": {"NoCopy": True, "Labels": {"a": "b"}, "DriverConfig": {}},
    }
    assert parse_mount("type=volume,dst=/d,volume-driver=local,volume-opt=type=tmpfs")["VolumeOptions"] == {
        "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs"}}
    }
    assert parse_mount("type=tmpfs,destination=/t,tmpfs-size=1m,tmpfs-mode=1777") == {
        "Type": "tmpfs",
        "Target": "/t",
        "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o1777},
    }
    assert parse_mount("type=bind,src=/a,dst=/b,ro=false") == {"Type": "bind", "Source": "/a", "Target": "/b"}


@pytest.mark.parametrize(
    "value, message",
    [
        ("type=bind,src=/a", "target is required"),
        ("type=bind,src=/a,dst=/b,color=red", "unexpected key 'color' in 'color=red'"),
        ("type=bind,src=/a,dst=/b,bogus", "invalid field 'bogus' must be a key=value pair"),
        ("type=tmpfs,dst=/t,volume-nocopy", "cannot mix 'volume-*' options with mount type 'tmpfs'"),
        ("type=volume,dst=/t,tmpfs-size=1m", "cannot mix 'tmpfs-*' options with mount type 'volume'"),
        ("type=tmpfs,dst=/t,tmpfs-size=huge", "invalid value for tmpfs-size: huge"),
        ("type=bind,src=/a,dst=/b,ro=maybe", "invalid value for ro: maybe"),
    ],
)
def test_mount_errors(value, message):
    with pytest.raises(FlagError) as info:
        parse_mount(value)
    assert str(info.value) == f'invalid argument "{value}" for "--mount" flag: {message}'


@pytest.mark.parametrize(
    "value, expected",
    [
        ("/dev/null", {"PathOnHost": "/dev/null", "PathInContainer": "/dev/null", "CgroupPermissions": "rwm"}),
        ("/dev/null:/dev/x", {"PathOnHost": "/dev/null", "PathInContainer": "/dev/x", "CgroupPermissions": "rwm"}),
        ("/dev/null:r", {"PathOnHost": "/dev/null", "PathInContainer": "/dev/null", "CgroupPermissions": "r"}),
        ("/dev/null:/dev/x:rw", {"PathOnHost": "/dev/null", "PathInContainer": "/dev/x", "CgroupPermissions": "rw"}),
    ],
)
def test_devices(value, expected):
    assert parse_device(value) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        ("/dev/a:/dev/b:xyz", "bad mode specified: xyz"),
        ("/dev/a:rel", "rel is not an absolute path"),
        ("/a:/b:rw:x", "bad format for path: /a:/b:rw:x"),
        (":/b", "bad format for path: :/b"),
    ],
)
def test_device_errors(value, message):
    with pytest.raises(FlagError, match=message):
        parse_device(value)


def test_ulimits():
    assert parse_ulimit("nofile=1024:2048") == {"Name": "nofile", "Hard": 2048, "Soft": 1024}
    assert parse_ulimit("nproc=10") == {"Name": "nproc", "Hard": 10, "Soft": 10}
    assert parse_ulimit("core=-1") == {"Name": "core", "Hard": -1, "Soft": -1}
    for bad, message in (
        ("nofile", "invalid ulimit argument"),
        ("bogus=1", "invalid ulimit type: bogus"),
        ("nofile=2:1", "must be less than or equal to hard limit: 2 > 1"),
        ("nofile=1:2:3", "too many limit value arguments"),
        ("nofile=x", "invalid syntax"),
    ):
        with pytest.raises(FlagError, match=message):
            parse_ulimit(bad)


def test_validators():
    assert validate_env("A=1") == "A=1"
    assert validate_env("HOME", {"HOME": "/root"}.get) == "HOME=/root"
    assert validate_env("UNSET_X", {}.get) == "UNSET_X"
    with pytest.raises(FlagError, match="invalid environment variable: =x"):
        validate_env("=x")
    assert validate_label("a=b") == "a=b"
    with pytest.raises(FlagError, match="empty name"):
        validate_label("=b")
    with pytest.raises(FlagError, match="contains whitespaces"):
        validate_label("a b=c")
    assert validate_extra_host("h:1.2.3.4") == "h:1.2.3.4"
    assert validate_extra_host("h=::1") == "h:::1"
    assert validate_extra_host("h=[::1]") == "h:::1"
    assert validate_extra_host("h:host-gateway") == "h:host-gateway"
    with pytest.raises(FlagError, match="bad format for add-host"):
        validate_extra_host("nohost")
    with pytest.raises(FlagError, match="invalid IP address in add-host"):
        validate_extra_host("h:999.1.1.1")
    assert validate_dns_search("example.com") == "example.com"
    assert validate_dns_search(".") == "."
    with pytest.raises(FlagError, match="is not a valid domain"):
        validate_dns_search("-bad-")
    assert validate_sysctl("net.ipv4.ip_forward=1") == "net.ipv4.ip_forward=1"
    assert validate_sysctl("kernel.shmmax=1") == "kernel.shmmax=1"
    with pytest.raises(FlagError, match="sysctl 'kernel.panic=1' is not allowed"):
        validate_sysctl("kernel.panic=1")
    assert is_ip("10.0.0.1") and is_ip("fe80::1") and not is_ip("10.0.0") and not is_ip("fe80::1%eth0")


def test_restart_policy_and_caps_and_platform():
    assert parse_restart_policy("on-failure:3") == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert parse_restart_policy("always") == {"Name": "always", "MaximumRetryCount": 0}
    with pytest.raises(FlagError, match="maximum retry count must be an integer"):
        parse_restart_policy("on-failure:x")
    with pytest.raises(FlagError, match="no policy provided before colon"):
        parse_restart_policy(":3")
    assert normalize_capabilities(["net_admin", "CAP_SYS_ADMIN", "NET_ADMIN", "all"]) == [
        "ALL",
        "CAP_NET_ADMIN",
        "CAP_SYS_ADMIN",
    ]
    assert normalize_capabilities([]) is None
    assert normalize_platform("linux/x86_64") == "linux/amd64"
    assert normalize_platform("linux/arm64/v8") == "linux/arm64"
    assert normalize_platform("linux/arm") == "linux/arm/v7"
    assert normalize_platform("") == ""


def test_env_file(tmp_path):
    path = tmp_path / "env"
    path.write_text("\ufeffA=1\n# comment\n\n  B=two words\nFROM_HOST\nNOT_SET\n")
    assert parse_kv_file(str(path), {"FROM_HOST": "yes"}.get) == ["A=1", "B=two words", "FROM_HOST=yes"]
    path.write_text("BAD KEY=1\n")
    with pytest.raises(FlagError, match="variable 'BAD KEY' contains whitespaces"):
        parse_kv_file(str(path), None)
    with pytest.raises(FlagError, match="no such file"):
        parse_kv_file(str(tmp_path / "missing"), None)
