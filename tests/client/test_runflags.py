"""``run``/``create`` flags through the real ``engine`` parser into the API 1.41 create body."""

from __future__ import annotations

import os

import pytest

from engine.cli import build_parser
from engine.client.flagparse import FlagError
from engine.client.runflags import CreateSpec, parse_create

CONFIG_KEYS = [
    "Hostname",
    "Domainname",
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "Image",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "OnBuild",
    "Labels",
    "HostConfig",
    "NetworkingConfig",
]


def spec(*argv: str, command: str = "create", env: dict[str, str] | None = None) -> CreateSpec:
    args = build_parser().parse_args([command, *argv])
    return parse_create(args, lookup_env=(env or {}).get)


def body(*argv: str, **kwargs) -> dict:
    return spec(*argv, **kwargs).body


def host(*argv: str) -> dict:
    return body(*argv)["HostConfig"]


def fails(*argv: str) -> str:
    with pytest.raises(FlagError) as info:
        spec(*argv)
    assert info.value.status == 125
    return str(info.value)


def test_defaults_are_the_full_struct():
    b = body("busybox")
    assert list(b) == CONFIG_KEYS
    assert b["Image"] == "busybox" and b["Cmd"] is None and b["Env"] is None and b["Entrypoint"] is None
    assert (b["AttachStdin"], b["AttachStdout"], b["AttachStderr"]) == (False, True, True)
    assert b["Volumes"] == {} and b["Labels"] == {} and b["OnBuild"] is None
    h = b["HostConfig"]
    assert h["NetworkMode"] == "default" and h["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert h["LogConfig"] == {"Type": "", "Config": {}} and h["PortBindings"] == {}
    assert h["Dns"] == [] and h["DnsSearch"] == [] and h["DnsOptions"] == [] and h["Binds"] is None
    assert h["MemorySwappiness"] == -1 and h["PidsLimit"] == 0 and h["OomKillDisable"] is False
    assert h["ConsoleSize"] == [0, 0] and "Init" not in h and "Mounts" not in h and "Tmpfs" not in h
    assert h["MaskedPaths"] is None and h["ReadonlyPaths"] is None
    assert list(h)[:3] == ["Binds", "ContainerIDFile", "LogConfig"] and list(h)[-2:] == ["MaskedPaths", "ReadonlyPaths"]
    endpoint = b["NetworkingConfig"]["EndpointsConfig"]["default"]
    assert endpoint["IPAMConfig"] is None and endpoint["Aliases"] is None and endpoint["MacAddress"] == ""
    assert spec("busybox").params() == {}


def test_command_words_after_the_image_are_not_flags():
    b = body("-d", "busybox", "sh", "-c", "exit 3", "--rm", "-h", command="run")
    assert b["Cmd"] == ["sh", "-c", "exit 3", "--rm", "-h"]
    assert b["HostConfig"]["AutoRemove"] is False
    assert body("busybox", "ls", "-l")["Cmd"] == ["ls", "-l"]


def test_interactive_tty_and_attach():
    b = body("-it", "busybox", "sh", command="run")
    assert (b["AttachStdin"], b["AttachStdout"], b["AttachStderr"], b["Tty"], b["OpenStdin"], b["StdinOnce"]) == (
        True,
        True,
        True,
        True,
        True,
        True,
    )
    b = body("-a", "stdout", "busybox")
    assert (b["AttachStdin"], b["AttachStdout"], b["AttachStderr"]) == (False, True, False)
    b = body("-a", "STDIN", "-a", "stderr", "-i", "busybox")
    assert (b["AttachStdin"], b["AttachStdout"], b["AttachStderr"], b["StdinOnce"]) == (True, False, True, True)
    assert "valid streams are STDIN, STDOUT and STDERR" in fails("-a", "stdfoo", "busybox")


def test_hostname_is_short_h_and_names():
    s = spec("-h", "box", "--domainname", "example.org", "--name", "web", "-u", "1000:1000", "-w", "/srv", "busybox")
    assert (s.body["Hostname"], s.body["Domainname"], s.body["User"], s.body["WorkingDir"]) == (
        "box",
        "example.org",
        "1000:1000",
        "/srv",
    )
    assert s.params() == {"name": "web"}


@pytest.mark.parametrize(
    "flags, exposed, bindings",
    [
        (["-p", "80"], {"80/tcp": {}}, {"80/tcp": [{"HostIp": "", "HostPort": ""}]}),
        (["-p", "8080:80"], {"80/tcp": {}}, {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}),
        (["-p", "127.0.0.1:8080:80/udp"], {"80/udp": {}}, {"80/udp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}),
        (
            ["-p", "8000-8001:80-81"],
            {"80/tcp": {}, "81/tcp": {}},
            {"80/tcp": [{"HostIp": "", "HostPort": "8000"}], "81/tcp": [{"HostIp": "", "HostPort": "8001"}]},
        ),
        (
            ["-p", "published=8080,target=80,protocol=udp"],
            {"80/udp": {}},
            {"80/udp": [{"HostIp": "", "HostPort": "8080"}]},
        ),
        (["--expose", "7000-7001", "--expose", "53/udp"], {"53/udp": {}, "7000/tcp": {}, "7001/tcp": {}}, {}),
        (["-p", "8080:80", "--expose", "80"], {"80/tcp": {}}, {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}),
    ],
)
def test_publish(flags, exposed, bindings):
    b = body(*flags, "busybox")
    assert b["ExposedPorts"] == exposed
    assert list(b["ExposedPorts"]) == sorted(exposed)
    assert b["HostConfig"]["PortBindings"] == bindings
    assert list(b)[list(b).index("AttachStderr") + 1] == "ExposedPorts"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["-p", "foo"], "invalid containerPort: foo"),
        (["-p", "1:2:3:4"], "invalid IP address: 1:2"),
        (["-p", "80/xyz"], "invalid proto: xyz"),
        (["-p", "published=8080,target"], "invalid publish opts format (should be name=value but got 'target')"),
        (["--expose", "1:2"], "invalid port format for --expose: 1:2"),
        (
            ["--expose", "x"],
            'invalid range format for --expose: x, error: strconv.ParseUint: parsing "x": invalid syntax',
        ),
    ],
)
def test_publish_errors(flags, message):
    assert fails(*flags, "busybox") == message


def test_publish_all():
    assert host("-P", "busybox")["PublishAllPorts"] is True


def test_env_and_labels(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("FROM_FILE=1\n")
    labels = tmp_path / "labels"
    labels.write_text("lf=1\n")
    b = body(
        "-e",
        "A=1",
        "-e",
        "HOME",
        "-e",
        "UNSET",
        "--env-file",
        str(env_file),
        "-e",
        "A=2",
        "-l",
        "z=1",
        "-l",
        "a",
        "--label-file",
        str(labels),
        "busybox",
        env={"HOME": "/root"},
    )
    assert b["Env"] == ["FROM_FILE=1", "A=2", "HOME=/root", "UNSET"]
    assert b["Labels"] == {"a": "", "lf": "1", "z": "1"}
    assert list(b["Labels"]) == ["a", "lf", "z"]


def test_volumes_binds_and_mounts(tmp_path):
    os.chdir(tmp_path)
    b = body(
        "-v",
        "/tmp:/host:ro",
        "-v",
        "/data",
        "-v",
        "vol:/v",
        "-v",
        "./rel:/r",
        "--mount",
        "type=bind,src=/a,dst=/b,readonly",
        "--tmpfs",
        "/run:size=1m",
        "--tmpfs",
        "/scratch",
        "--volumes-from",
        "other:ro",
        "busybox",
    )
    h = b["HostConfig"]
    assert h["Binds"] == ["/tmp:/host:ro", "vol:/v", f"{tmp_path}/rel:/r"]
    assert b["Volumes"] == {"/data": {}}
    assert h["Mounts"] == [{"Type": "bind", "Source": "/a", "Target": "/b", "ReadOnly": True}]
    assert h["Tmpfs"] == {"/run": "size=1m", "/scratch": ""}
    assert h["VolumesFrom"] == ["other:ro"]
    assert list(h).index("Tmpfs") == list(h).index("SecurityOpt") + 1
    assert "target is required" in fails("--mount", "type=bind,src=/a", "busybox")


def test_restart_and_rm():
    assert host("--restart", "on-failure:3", "busybox")["RestartPolicy"] == {
        "Name": "on-failure",
        "MaximumRetryCount": 3,
    }
    assert host("--restart", "unless-stopped", "busybox")["RestartPolicy"]["Name"] == "unless-stopped"
    assert host("--rm", "busybox")["AutoRemove"] is True
    assert host("--rm", "--restart", "no", "busybox")["AutoRemove"] is True
    assert (
        fails("--rm", "--restart", "always", "busybox") == "conflicting options: cannot specify both --restart and --rm"
    )
    assert "maximum retry count must be an integer" in fails("--restart", "on-failure:x", "busybox")


def test_resources():
    h = host(
        "-m",
        "32m",
        "--memory-swap",
        "-1",
        "--memory-reservation",
        "1g",
        "--cpus",
        "1.5",
        "-c",
        "512",
        "--cpu-period",
        "100000",
        "--cpu-quota",
        "50000",
        "--cpuset-cpus",
        "0-1",
        "--cpuset-mems",
        "0",
        "--pids-limit",
        "100",
        "--blkio-weight",
        "300",
        "--oom-kill-disable",
        "--shm-size",
        "64m",
        "--memory-swappiness",
        "10",
        "--oom-score-adj",
        "-500",
        "--kernel-memory",
        "4m",
        "busybox",
    )
    assert (h["Memory"], h["MemorySwap"], h["MemoryReservation"]) == (32 << 20, -1, 1 << 30)
    assert (h["NanoCpus"], h["CpuShares"], h["CpuPeriod"], h["CpuQuota"]) == (1_500_000_000, 512, 100000, 50000)
    assert (h["CpusetCpus"], h["CpusetMems"], h["PidsLimit"], h["BlkioWeight"]) == ("0-1", "0", 100, 300)
    assert (h["OomKillDisable"], h["ShmSize"], h["MemorySwappiness"], h["OomScoreAdj"]) == (True, 64 << 20, 10, -500)
    assert h["KernelMemory"] == 4 << 20 and list(h).index("KernelMemory") == list(h).index("DeviceRequests") + 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (["-m", "foo"], 'invalid argument "foo" for "-m, --memory" flag: invalid size: \'foo\''),
        (["--cpus", "0.0000000001"], 'invalid argument "0.0000000001" for "--cpus" flag: value is too precise'),
        (
            ["-c", "x"],
            'invalid argument "x" for "-c, --cpu-shares" flag: strconv.ParseInt: parsing "x": invalid syntax',
        ),
        (["--memory-swappiness", "101"], "invalid value: 101. Valid memory swappiness range is 0-100"),
        (
            ["--blkio-weight", "-1"],
            'invalid argument "-1" for "--blkio-weight" flag: strconv.ParseUint: parsing "-1": invalid syntax',
        ),
        (["--pull", "sometimes"], 'invalid pull option: \'sometimes\': must be one of "always", "missing" or "never"'),
        (["--pid", "foo"], "--pid: invalid PID mode"),
        (["--uts", "container:x"], "--uts: invalid UTS mode"),
        (["--security-opt", "label"], 'Invalid --security-opt: "label"'),
        (
            ["--ulimit", "nofile=2:1"],
            'invalid argument "nofile=2:1" for "--ulimit" flag: ulimit soft limit must be '
            "less than or equal to hard limit: 2 > 1",
        ),
        (
            ["--dns", "not-an-ip"],
            'invalid argument "not-an-ip" for "--dns" flag: IP address is not correctly formatted: not-an-ip',
        ),
        (["--no-healthcheck", "--health-cmd", "true"], "--no-healthcheck conflicts with --health-* options"),
        (["--log-driver", "none", "--log-opt", "a=b"], "invalid logging opts for driver none"),
        (["--mac-address", "zz"], "zz is not a valid mac address"),
    ],
)
def test_value_errors(flags, message):
    assert fails(*flags, "busybox") == message


def test_security_and_namespaces():
    h = host(
        "--cap-add",
        "net_admin",
        "--cap-add",
        "SYS_TIME",
        "--cap-drop",
        "mknod",
        "--privileged",
        "--security-opt",
        "no-new-privileges",
        "--security-opt",
        "systempaths=unconfined",
        "--group-add",
        "10",
        "--read-only",
        "--ipc",
        "host",
        "--pid",
        "container:web",
        "--uts",
        "host",
        "--userns",
        "host",
        "--cgroupns",
        "private",
        "busybox",
    )
    assert h["CapAdd"] == ["CAP_NET_ADMIN", "CAP_SYS_TIME"] and h["CapDrop"] == ["CAP_MKNOD"]
    assert h["SecurityOpt"] == ["no-new-privileges"] and h["MaskedPaths"] == [] and h["ReadonlyPaths"] == []
    assert (h["Privileged"], h["ReadonlyRootfs"], h["GroupAdd"]) == (True, True, ["10"])
    assert (h["IpcMode"], h["PidMode"], h["UTSMode"], h["UsernsMode"], h["CgroupnsMode"]) == (
        "host",
        "container:web",
        "host",
        "host",
        "private",
    )


def test_devices_ulimits_sysctls():
    h = host(
        "--device",
        "/dev/null:/dev/nul2:rw",
        "--ulimit",
        "nofile=1024:2048",
        "--ulimit",
        "nproc=10",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "--device-read-bps",
        "/dev/sda:1mb",
        "--device-write-iops",
        "/dev/sda:100",
        "--blkio-weight-device",
        "/dev/sda:200",
        "busybox",
    )
    assert h["Devices"] == [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/nul2", "CgroupPermissions": "rw"}]
    assert h["Ulimits"] == [{"Name": "nofile", "Hard": 2048, "Soft": 1024}, {"Name": "nproc", "Hard": 10, "Soft": 10}]
    assert h["Sysctls"] == {"net.ipv4.ip_forward": "1"}
    assert h["BlkioDeviceReadBps"] == [{"Path": "/dev/sda", "Rate": 1 << 20}]
    assert h["BlkioDeviceWriteIOps"] == [{"Path": "/dev/sda", "Rate": 100}]
    assert h["BlkioWeightDevice"] == [{"Path": "/dev/sda", "Weight": 200}]


def test_network_flags():
    s = spec(
        "--dns",
        "1.1.1.1",
        "--dns",
        "127.0.0.1",
        "--dns-search",
        "example.com",
        "--dns-option",
        "ndots:2",
        "--add-host",
        "h:1.2.3.4",
        "--link",
        "db:database",
        "busybox",
    )
    h = s.body["HostConfig"]
    assert (h["Dns"], h["DnsSearch"], h["DnsOptions"], h["ExtraHosts"], h["Links"]) == (
        ["1.1.1.1", "127.0.0.1"],
        ["example.com"],
        ["ndots:2"],
        ["h:1.2.3.4"],
        ["db:database"],
    )
    assert s.warnings == ["Localhost DNS (127.0.0.1) may fail in containers."]
    b = body("--network", "host", "busybox")
    assert b["HostConfig"]["NetworkMode"] == "host" and b["NetworkingConfig"] == {"EndpointsConfig": {}}
    b = body("--net", "mynet", "--network-alias", "web", "--ip", "10.0.0.5", "--link", "db", "busybox")
    ep = b["NetworkingConfig"]["EndpointsConfig"]["mynet"]
    assert ep["Aliases"] == ["web"] and ep["Links"] == ["db"]
    assert ep["IPAMConfig"] == {"IPv4Address": "10.0.0.5"}
    b = body("--network", "name=mynet,alias=a1,alias=a2", "busybox")
    assert b["NetworkingConfig"]["EndpointsConfig"]["mynet"]["Aliases"] == ["a1", "a2"]
    assert (
        fails("--network-alias", "web", "busybox")
        == "network-scoped aliases are only supported for user-defined networks"
    )
    assert (
        fails("--network", "host", "--network", "mynet", "busybox")
        == "conflicting options: cannot attach both user-defined and non-user-defined network-modes"
    )


def test_misc_config():
    b = body(
        "--entrypoint",
        "/bin/sh",
        "--stop-signal",
        "SIGINT",
        "--stop-timeout",
        "5",
        "--init",
        "--log-driver",
        "json-file",
        "--log-opt",
        "max-size=1m",
        "--log-opt",
        "max-file=2",
        "--health-cmd",
        "true",
        "--health-interval",
        "1m30s",
        "--health-retries",
        "3",
        "busybox",
        "-c",
        "x",
    )
    assert b["Entrypoint"] == ["/bin/sh"] and b["Cmd"] == ["-c", "x"]
    assert (b["StopSignal"], b["StopTimeout"]) == ("SIGINT", 5)
    assert b["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 90_000_000_000, "Retries": 3}
    assert list(b).index("Healthcheck") == list(b).index("Cmd") + 1
    assert list(b)[-4:-2] == ["StopSignal", "StopTimeout"]
    h = b["HostConfig"]
    assert h["Init"] is True and list(h)[-1] == "Init"
    assert h["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "2", "max-size": "1m"}}
    assert body("--entrypoint=", "busybox")["Entrypoint"] == [""]
    assert body("--no-healthcheck", "busybox")["Healthcheck"] == {"Test": ["NONE"]}


def test_go_style_booleans():
    assert host("--init=false", "busybox")["Init"] is False
    assert host("--rm=true", "busybox")["AutoRemove"] is True
    assert host("--rm=false", "busybox")["AutoRemove"] is False
    args = build_parser().parse_args(["run", "--sig-proxy=false", "-d=true", "busybox"])
    assert args.sig_proxy is False and args.detach is True
    args = build_parser().parse_args(["run", "busybox", "--sig-proxy=false"])
    assert args.sig_proxy is True and args.command == ["--sig-proxy=false"]
    assert 'invalid argument "maybe" for "--rm" flag' in fails("--rm=maybe", "busybox")


def test_platform_pull_quiet_and_console_size():
    s = spec("--platform", "linux/amd64", "--pull", "never", "-q", "--name", "x", "busybox")
    assert s.params() == {"platform": "linux/amd64", "name": "x"}
    assert (s.pull, s.quiet) == ("never", True)
    args = build_parser().parse_args(["run", "-t", "busybox"])
    assert parse_create(args, console_size=(40, 120)).body["HostConfig"]["ConsoleSize"] == [40, 120]
    args = build_parser().parse_args(["run", "-t", "--platform", "linux", "busybox"])
    assert parse_create(args, console_size=(40, 120)).body["HostConfig"]["ConsoleSize"] == [0, 0]


def test_container_group_parses_the_same():
    assert body("-p", "8080:80", "busybox") == spec("-p", "8080:80", "busybox", command="create").body
    args = build_parser().parse_args(["container", "run", "--rm", "-e", "A=1", "busybox", "env"])
    assert parse_create(args).body["Env"] == ["A=1"] and args.rm
