"""The pure translations of Config/HostConfig: signals, the merge with the
image's config, validation, create defaults, updates, mount points, and the
exec driver's Command and the shim's spec."""

from __future__ import annotations

import signal

import pytest

from engine.daemon.config import Config
from engine.daemon.container import Container
from engine.daemon.hostconfig import (
    DEFAULT_PATH_ENV,
    apply_create_defaults,
    build_command,
    container_env,
    devices_of,
    ipc_mode_of,
    merge_image_config,
    mount_points,
    mounts_of,
    parse_signal,
    pid_mode_of,
    resources_of,
    shim_spec,
    sysctls_of,
    updated_host_config,
    validate_host_config,
)
from engine.daemon.logconfig import shim_log
from engine.drivers.exec import Command
from engine.errors import InvalidParameter, NoSuchContainer
from engine.testing.hostexec import HostProcessDriver

# ----------------------------------------------------------------------
# signals


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9", 9),
        (15, 15),
        ("KILL", signal.SIGKILL),
        ("sigterm", signal.SIGTERM),
        ("SIGUSR1", signal.SIGUSR1),
        ("RTMIN", signal.SIGRTMIN),
        ("64", 64),
        (None, signal.SIGKILL),
        ("", signal.SIGKILL),
    ],
)
def test_parse_signal(value, expected):
    assert parse_signal(value) == expected


def test_parse_signal_default_is_the_caller_s():
    assert parse_signal("", signal.SIGTERM) == signal.SIGTERM


@pytest.mark.parametrize("value", ["0", "65", "-1", "SIGNOPE", "KILL9", "SIG_IGN"])
def test_parse_signal_refuses(value):
    with pytest.raises(InvalidParameter, match=f"Invalid signal: {value}"):
        parse_signal(value)


# ----------------------------------------------------------------------
# the merge with the image's config


IMAGE = {
    "Env": ["PATH=/image/bin", "LANG=C"],
    "Cmd": ["/bin/sh"],
    "Entrypoint": None,
    "WorkingDir": "/srv",
    "ExposedPorts": {"80/tcp": {}},
    "Labels": {"from": "image", "both": "image"},
    "Volumes": {"/data": {}},
    "StopSignal": "SIGQUIT",
    "User": "daemon",
    "Healthcheck": {"Test": ["CMD", "true"]},
}


def test_the_image_fills_what_the_user_left_out():
    out = merge_image_config({"Image": "x"}, IMAGE)
    assert out["Cmd"] == ["/bin/sh"] and out["Entrypoint"] is None
    assert out["Env"] == ["PATH=/image/bin", "LANG=C"]
    assert out["WorkingDir"] == "/srv" and out["User"] == "daemon" and out["StopSignal"] == "SIGQUIT"
    assert out["ExposedPorts"] == {"80/tcp": {}} and out["Volumes"] == {"/data": {}}
    assert out["Healthcheck"] == {"Test": ["CMD", "true"]}


def test_the_user_s_values_win():
    user = {
        "Env": ["LANG=de_DE", "EXTRA=1"],
        "Cmd": ["echo"],
        "ExposedPorts": {"443/tcp": {}},
        "Labels": {"both": "user"},
        "Volumes": {"/logs": {}},
        "User": "nobody",
    }
    out = merge_image_config(user, IMAGE)
    assert out["Env"] == ["PATH=/image/bin", "LANG=de_DE", "EXTRA=1"]
    assert out["Cmd"] == ["echo"]
    assert out["ExposedPorts"] == {"80/tcp": {}, "443/tcp": {}}
    assert out["Labels"] == {"from": "image", "both": "user"}
    assert out["Volumes"] == {"/data": {}, "/logs": {}}
    assert out["User"] == "nobody"
    assert user["Env"] == ["LANG=de_DE", "EXTRA=1"]  # the input is not changed


def test_an_entrypoint_of_the_user_drops_the_image_s_cmd():
    out = merge_image_config({"Entrypoint": ["/init"]}, {**IMAGE, "Entrypoint": ["/image-init"]})
    assert out["Entrypoint"] == ["/init"] and out.get("Cmd") is None


def test_an_empty_entrypoint_resets_the_image_s():
    out = merge_image_config({"Entrypoint": []}, {**IMAGE, "Entrypoint": ["/image-init"]})
    assert out["Entrypoint"] == [] and out["Cmd"] == ["/bin/sh"]


# ----------------------------------------------------------------------
# validation (moby's verifyContainerSettings, with its words)


@pytest.mark.parametrize(
    ("hc", "message"),
    [
        ({"RestartPolicy": {"Name": "sometimes"}}, "invalid restart policy 'sometimes'"),
        ({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": -1}}, "maximum retry count cannot be negative"),
        (
            {"RestartPolicy": {"Name": "always", "MaximumRetryCount": 3}},
            "maximum retry count cannot be used with restart policy 'always'",
        ),
        ({"AutoRemove": True, "RestartPolicy": {"Name": "always"}}, "can't create 'AutoRemove' container"),
        ({"Memory": 4 << 20}, "Minimum memory limit allowed is 6MB"),
        ({"Memory": -1}, "Minimum memory limit allowed is 6MB"),
        ({"MemorySwap": 64 << 20}, "You should always set the Memory limit when using Memoryswap limit"),
        ({"Memory": 64 << 20, "MemorySwap": 32 << 20}, "Minimum memoryswap limit should be larger than memory limit"),
        ({"Memory": 64 << 20, "MemoryReservation": 128 << 20}, "can not be less than memory reservation limit"),
        ({"MemorySwappiness": 101}, "valid memory swappiness range is 0-100"),
        ({"NanoCpus": 1_000_000_000, "CpuQuota": 50_000}, "Nano CPUs and CPU Period cannot both be set"),
        ({"NanoCpus": 3_000_000_000}, "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"),
        ({"CpuPeriod": 500}, "CPU cfs period can not be less than 1ms"),
        ({"CpuQuota": 999}, "CPU cfs quota can not be less than 1ms"),
        ({"CpuShares": -2}, "invalid CPU shares"),
        ({"BlkioWeight": 5}, "Range of blkio weight is from 10 to 1000"),
        ({"PidsLimit": -2}, "invalid PidsLimit"),
        ({"NetworkMode": "container:x", "PublishAllPorts": True}, "port publishing and the container type network"),
        ({"ExtraHosts": ["nocolon"]}, "bad format for add-host"),
    ],
)
def test_validation_refuses_with_docker_s_words(hc, message):
    with pytest.raises(InvalidParameter, match=message):
        validate_host_config(hc, ncpu=2)


@pytest.mark.parametrize(
    "hc",
    [
        {},
        {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}},
        {"AutoRemove": True, "RestartPolicy": {"Name": "no"}},
        {"Memory": 6 << 20, "MemorySwap": -1, "MemorySwappiness": -1},
        {"CpuQuota": -1, "PidsLimit": -1},
        {"NanoCpus": 2_000_000_000},
        {"ExtraHosts": ["db:10.0.0.2", "gw:host-gateway"]},
    ],
)
def test_validation_accepts(hc):
    assert validate_host_config(hc, ncpu=2) == []


@pytest.mark.parametrize(
    ("hc", "message"),
    [
        ({"CpusetCpus": "0-99999"}, "Invalid value 0-99999 for cpuset cpus"),
        ({"CpusetCpus": "2"}, "Requested CPUs are not available - requested 2, available: 0-1"),
        ({"CpusetCpus": "0-3"}, "Requested CPUs are not available - requested 0-3, available: 0-1"),
        ({"CpusetMems": "1"}, "Requested memory nodes are not available - requested 1, available: 0"),
        ({"CpusetMems": "x"}, "Invalid value x for cpuset mems"),
    ],
)
def test_cpusets_name_what_the_host_has(hc, message):
    with pytest.raises(InvalidParameter, match=message):
        validate_host_config(hc, ncpu=2, online_cpus=lambda: "0-1", online_mems=lambda: "0")
    assert validate_host_config({"CpusetCpus": "1,0", "CpusetMems": "0"}, 2, lambda: "0-1", lambda: "0") == []


# ----------------------------------------------------------------------
# resources


def test_resources_of_nano_cpus_becomes_a_cfs_quota():
    r = resources_of({"NanoCpus": 1_500_000_000, "CpuPeriod": 0})
    assert (r.cpu_period, r.cpu_quota) == (100_000, 150_000)


def test_resources_of_maps_every_limit():
    r = resources_of(
        {
            "Memory": 64 << 20,
            "MemorySwap": 128 << 20,
            "MemoryReservation": 32 << 20,
            "MemorySwappiness": 0,
            "OomKillDisable": True,
            "CpuShares": 512,
            "CpuPeriod": 50_000,
            "CpuQuota": 25_000,
            "CpuRealtimePeriod": 1000,
            "CpuRealtimeRuntime": 500,
            "CpusetCpus": "0",
            "CpusetMems": "0",
            "PidsLimit": 100,
            "BlkioWeight": 300,
            "DeviceCgroupRules": ["c 1:3 rwm"],
        }
    )
    assert r.to_json() == {
        "memory": 64 << 20,
        "memory_swap": 128 << 20,
        "memory_reservation": 32 << 20,
        "memory_swappiness": 0,
        "kernel_memory": 0,
        "oom_kill_disable": True,
        "cpu_shares": 512,
        "cpu_period": 50_000,
        "cpu_quota": 25_000,
        "cpu_rt_period": 1000,
        "cpu_rt_runtime": 500,
        "cpuset_cpus": "0",
        "cpuset_mems": "0",
        "pids_limit": 100,
        "blkio_weight": 300,
        "device_rules": ["c 1:3 rwm"],
    }


def test_resources_of_unset_values():
    r = resources_of({"PidsLimit": -1, "MemorySwappiness": None})
    assert r.pids_limit == 0 and r.memory_swappiness == -1 and r.memory == 0


# ----------------------------------------------------------------------
# create defaults and updates


def test_create_defaults():
    config: dict = {}
    hc: dict = {"NetworkMode": "", "LogConfig": {"Type": "", "Config": {"max-size": "1m"}}}
    apply_create_defaults(config, hc, "busybox", "abcdef0123456789" * 4, "node1", Config())
    assert config == {"Hostname": "abcdef012345", "Image": "busybox"}
    assert hc["NetworkMode"] == "default"
    assert hc["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m"}}
    assert hc["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}


def test_create_defaults_keep_what_was_given():
    config = {"Hostname": "mine"}
    hc = {"NetworkMode": "host", "RestartPolicy": {"Name": "always"}}
    apply_create_defaults(config, hc, "busybox", "a" * 64, "node1", Config())
    assert config["Hostname"] == "mine" and hc["RestartPolicy"] == {"Name": "always"}


def test_a_host_network_container_is_named_like_its_host():
    config: dict = {}
    apply_create_defaults(config, {"NetworkMode": "host"}, "busybox", "a" * 64, "node1", Config())
    assert config["Hostname"] == "node1"


def test_create_refuses_other_log_drivers():
    with pytest.raises(InvalidParameter, match='error looking up logging plugin syslog: plugin "syslog" not found'):
        apply_create_defaults({}, {"LogConfig": {"Type": "syslog"}}, "busybox", "a" * 64, "node1", Config())


def test_update_changes_only_what_is_set_and_updatable():
    hc = {"Memory": 64 << 20, "CpuShares": 512, "Privileged": False, "RestartPolicy": {"Name": "always"}}
    body = {
        "Memory": 128 << 20,
        "CpuShares": 0,  # unset
        "CpusetCpus": "",  # unset
        "Privileged": True,  # not updatable
        "RestartPolicy": {"Name": "", "MaximumRetryCount": 0},  # the CLI's "unchanged"
        "PidsLimit": None,
    }
    new = updated_host_config(hc, body)
    assert new == {"Memory": 128 << 20, "CpuShares": 512, "Privileged": False, "RestartPolicy": {"Name": "always"}}
    assert hc["Memory"] == 64 << 20  # a copy
    assert updated_host_config(hc, {"RestartPolicy": {"Name": "no"}})["RestartPolicy"] == {"Name": "no"}


# ----------------------------------------------------------------------
# mount points


def test_mount_points_in_their_order_of_precedence(tmp_path):
    others = {"data": [{"Type": "volume", "Name": "v1", "Destination": "/shared", "RW": True}]}
    hc = {
        "Binds": ["/host/a:/a:ro", "named:/b"],
        "Mounts": [{"Type": "bind", "Source": str(tmp_path), "Target": "/c"}],  # --mount wants the source
        "Tmpfs": {"/a": "size=1m"},  # tmpfs wins over the bind
        "VolumesFrom": ["data:ro"],
    }
    points = {p["Destination"]: p for p in mount_points({"Volumes": {"/b": {}, "/img/": {}}}, hc, others.__getitem__)}
    assert points["/a"]["Type"] == "tmpfs"
    assert points["/b"]["Name"] == "named"  # the bind of a named volume, not the image's anonymous one
    assert points["/c"]["Source"] == str(tmp_path)
    assert points["/shared"] == {"Type": "volume", "Name": "v1", "Destination": "/shared", "RW": False}
    assert points["/img"]["Name"] == "" and points["/img"]["Type"] == "volume"  # to be made


def test_mount_points_refuse_a_destination_twice(tmp_path):
    hc = {"Binds": ["/x:/d"], "Mounts": [{"Type": "bind", "Source": str(tmp_path), "Target": "/d"}]}
    with pytest.raises(InvalidParameter, match="Duplicate mount point: /d"):
        mount_points({}, hc, lambda name: [])


def test_mount_points_of_an_unknown_container():
    def missing(name):
        raise NoSuchContainer(name=name)

    with pytest.raises(NoSuchContainer, match="No such container: gone"):
        mount_points({}, {"VolumesFrom": ["gone"]}, missing)


def test_mounts_of():
    points = [
        {"Type": "tmpfs", "Destination": "/t", "Mode": "size=1m,mode=1777", "RW": False},
        {"Type": "tmpfs", "Destination": "/t2"},
        {"Type": "bind", "Source": "/s", "Destination": "/d", "RW": True, "Propagation": "rshared"},
        {"Type": "volume", "Name": "v", "Source": "stale", "Destination": "/v", "RW": False},
    ]
    assert mounts_of(points, lambda name: f"/volumes/{name}/_data") == [
        {
            "type": "tmpfs",
            "source": "tmpfs",
            "destination": "/t",
            "options": ["size=1m", "mode=1777", "ro"],
            "propagation": "",
        },
        {
            "type": "tmpfs",
            "source": "tmpfs",
            "destination": "/t2",
            "options": ["nosuid", "nodev", "noexec"],
            "propagation": "",
        },
        {"type": "bind", "source": "/s", "destination": "/d", "options": ["rbind"], "propagation": "rshared"},
        {
            "type": "bind",
            "source": "/volumes/v/_data",
            "destination": "/v",
            "options": ["rbind", "ro", "rro"],
            "propagation": "rprivate",
        },
    ]
    # Read-only and recursive (API 1.44) unless the mount or an older client says otherwise.
    read_only = [{"Type": "bind", "Source": "/s", "Destination": "/d", "RW": False}]
    assert mounts_of(read_only, str, non_recursive_default=True)[0]["options"] == ["rbind", "ro"]
    forced = [{**read_only[0], "ReadOnlyForceRecursive": True}]
    assert mounts_of(forced, str, non_recursive_default=True)[0]["options"] == ["rbind", "ro", "rro-force"]
    plain = [{**read_only[0], "ReadOnlyNonRecursive": True}]
    assert mounts_of(plain, str)[0]["options"] == ["rbind", "ro"]


# ----------------------------------------------------------------------
# the first process, namespaces, devices


def test_container_env():
    env = container_env({"Env": ["A=own", "X=1"], "Hostname": "h", "Tty": True}, ["A=link", "B=link"])
    assert env == ["HOSTNAME=h", DEFAULT_PATH_ENV, "B=link", "A=own", "X=1", "TERM=xterm"]
    assert container_env({"Env": ["PATH=/p", "HOSTNAME=x", "TERM=vt100"], "Tty": True}) == [
        "PATH=/p",
        "HOSTNAME=x",
        "TERM=vt100",
    ]


def test_namespaces_and_devices():
    assert ipc_mode_of({"IpcMode": "container:db"}, "/proc/7/ns/ipc") == "container:/proc/7/ns/ipc"
    assert ipc_mode_of({"IpcMode": "host"}) == "host" and ipc_mode_of({"IpcMode": "none"}) == "none"
    assert ipc_mode_of({"IpcMode": "shareable"}) == "private"
    assert pid_mode_of({"PidMode": "container:" + "a" * 64}, "/proc/8/ns/pid") == "container:/proc/8/ns/pid"
    assert pid_mode_of({"PidMode": "host"}) == "host" and pid_mode_of({"PidMode": "bogus"}) == "private"
    assert devices_of({"Devices": [{"PathOnHost": "/dev/fuse"}]}) == [
        {"path_on_host": "/dev/fuse", "path_in_container": "/dev/fuse", "permissions": "rwm"}
    ]


def container(**host_config) -> Container:
    return Container(
        id="c" * 64,
        name="/web",
        created=0.0,
        image_id="sha256:" + "i" * 64,
        config={"Env": ["A=1"], "Hostname": "web", "Domainname": "example.org", "User": "1000:1000", "Tty": True},
        host_config=host_config,
        path="/bin/sh",
        args=["-c", "exec sleep 1"],
        root="/var/lib/engine/containers/" + "c" * 64,
        log_path="/var/lib/engine/containers/log.json",
        mounts=[{"Type": "volume", "Name": "v", "Destination": "/v", "RW": True}],
    )


def test_build_command():
    c = container(
        CapAdd=["NET_ADMIN"],
        CapDrop=["MKNOD"],
        GroupAdd=["audio"],
        SecurityOpt=["no-new-privileges:true"],
        ConsoleSize=[24, 80],
        PidMode="host",
        UTSMode="host",
        IpcMode="container:db",
        CgroupParent="/custom/",
        ReadonlyRootfs=True,
        MaskedPaths=[],
        Sysctls={"net.core.somaxconn": "1024"},
        ShmSize=1 << 20,
        Memory=64 << 20,
    )
    network = {"mode": "bridge", "path": "/run/netns/x"}
    cmd = build_command(
        c,
        "/rootfs",
        network,
        lambda name: f"/vols/{name}",
        ["L=1"],
        "/proc/9/ns/ipc",
        seccomp_profile='{"defaultAction": "SCMP_ACT_ALLOW"}',
        no_new_privileges=True,  # the security policy's decision (engine.daemon.security)
        cgroup_parent="/custom/",  # runtime.command_options: the container's, else the daemon's
    )
    assert isinstance(cmd, Command)
    assert cmd.seccomp_profile == '{"defaultAction": "SCMP_ACT_ALLOW"}'
    p = cmd.process
    assert p.args == ["/bin/sh", "-c", "exec sleep 1"] and p.env[-3:] == ["L=1", "A=1", "TERM=xterm"]
    assert (p.user, p.tty, p.console_size, p.cwd) == ("1000:1000", True, (24, 80), "/")
    assert p.no_new_privileges and p.cap_add == ["NET_ADMIN"] and p.cap_drop == ["MKNOD"]
    assert p.additional_groups == ["audio"] and not p.privileged
    assert (cmd.id, cmd.rootfs, cmd.container_dir) == (c.id, "/rootfs", c.root)
    assert (cmd.hostname, cmd.domainname, cmd.network) == ("web", "example.org", network)
    assert cmd.mounts[0]["source"] == "/vols/v" and cmd.resources.memory == 64 << 20
    assert (cmd.ipc_mode, cmd.pid_mode, cmd.uts_mode) == ("container:/proc/9/ns/ipc", "host", "host")
    assert cmd.cgroup_parent == "/custom/" and cmd.readonly_rootfs
    assert cmd.masked_paths == [] and cmd.readonly_paths is None  # [] is "none", None is Docker's defaults
    assert cmd.sysctls == {
        "net.core.somaxconn": "1024",
        # dockerd's defaults for a network namespace of its own (the kernel has both here)
        "net.ipv4.ip_unprivileged_port_start": "0",
        "net.ipv4.ping_group_range": "0 2147483647",
    }
    assert cmd.shm_size == 1 << 20 and cmd.user_namespace == {}
    assert Command.from_json(cmd.to_json()) == cmd


@pytest.mark.parametrize(
    "hc, userns, expected",
    [
        ({}, False, {"net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "0 2147483647"}),
        ({}, True, {"net.ipv4.ip_unprivileged_port_start": "0"}),  # dockerd: no ping sockets in a user namespace
        ({"NetworkMode": "host"}, False, {}),
        ({"NetworkMode": "container:db"}, False, {}),
        (
            {"Sysctls": {"net.ipv4.ip_unprivileged_port_start": "1024"}},
            True,
            {"net.ipv4.ip_unprivileged_port_start": "1024"},
        ),
    ],
)
def test_network_sysctl_defaults_as_dockerd(hc, userns, expected):
    assert sysctls_of(hc, userns, exists=lambda path: True) == expected
    assert sysctls_of({}, userns, exists=lambda path: False) == {}


def test_build_command_defaults():
    cmd = build_command(container(), "/rootfs", {"mode": "host"}, lambda name: "/v")
    assert (cmd.ipc_mode, cmd.pid_mode, cmd.uts_mode, cmd.cgroup_parent) == ("private", "private", "private", "/docker")
    assert cmd.shm_size == 64 << 20 and cmd.process.console_size is None and not cmd.process.no_new_privileges
    assert cmd.seccomp_profile == ""


# ----------------------------------------------------------------------
# the shim's spec and the log options


def test_shim_log():
    assert shim_log(None, "/c", "/c/x-json.log") == {
        "format": "json-file",
        "path": "/c/x-json.log",
        "max_size": 0,
        "max_file": 1,
        "compress": False,
    }
    # go-units' FromHumanSize: decimal, as dockerd's json-file reads max-size.
    config = {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "3", "compress": "true"}}
    assert shim_log(config, "/c", "/c/x-json.log") == {
        "format": "json-file",
        "path": "/c/x-json.log",
        "max_size": 1_000_000,
        "max_file": 3,
        "compress": True,
    }
    assert shim_log({"Type": "local", "Config": {}}, "/c", "/c/x-json.log") == {
        "format": "local",
        "path": "/c/local-logs/container.log",
        "max_size": 20 << 20,
        "max_file": 5,
        "compress": True,
    }
    assert shim_log({"Type": "none", "Config": {}}, "/c", "/c/x-json.log") is None


def test_shim_spec():
    c = container(LogConfig={"Type": "json-file", "Config": {"max-size": "10k"}})
    c.config["OpenStdin"] = True
    cmd = build_command(c, "/rootfs", {"mode": "host"}, lambda name: "/v")
    spec = shim_spec(c, cmd, HostProcessDriver("/driver/home"))
    assert spec == {
        "command": cmd.to_json(),
        "driver": {
            "module": "engine.testing.hostexec",
            "class": "HostProcessDriver",
            "home": "/driver/home",
            "options": [],
        },
        "tty": True,
        "open_stdin": True,
        "stdin_once": False,
        "log": {"format": "json-file", "path": c.log_path, "max_size": 10_000, "max_file": 1, "compress": False},
        "memory_merge": False,
    }
    assert shim_spec(c, cmd, HostProcessDriver("/driver/home"), memory_merge=True)["memory_merge"] is True
