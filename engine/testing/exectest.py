"""The exec driver conformance suite: real containers from a busybox rootfs, on this host's kernel.

Every exec driver (``native``, ``lxc``, third-party ones) proves itself
against the same tests. A driver's own test module is a few lines::

    from engine.testing.exectest import ExecDriverConformance

    class TestNative(ExecDriverConformance):
        driver_name = "native"

The suite loads the driver through its entry point (so it tests what is
installed), probes it and skips every test with the probe's reason when the
driver cannot run here. Tests run as root in the session sandbox (private
mount, network and PID namespaces); cgroups are *not* namespaced there, so
each test uses its own cgroup parent ``engine-test-<hex>`` and the ``box``
fixture terminates every container and removes the parent afterwards.

``run()`` blocks and may unshare its caller's PID namespace, so it is never
called in the pytest process: :class:`Box` starts ``python -m
engine.testing.exectest_run`` per container (a stand-in for the shim), with
the container's stdio on pipes (or a pty) and events on a status pipe. The
daemon-side methods (``exec``, ``kill``, ``pause``, ``stats``...) are called
from the test itself, as the daemon calls them.

What the suite checks, beyond :class:`engine.drivers.exec.ExecDriver`'s
docstrings: output and exit codes (128+N for signal N); Docker's start
errors (``exec: "x": executable file not found in $PATH`` ...) raised
before ``start_callback``; hostname, /etc files, env, cwd; users, groups
and capabilities (``CapEff`` 00000000a80425fb for root by default);
masked and read-only paths; PID 1 and a private process list; a mount
table without host paths; devices and the device cgroup; memory limits and
the OOM killer; the pids limit; pause/unpause; exec into a running
container; get_pids, stats, update; tty mode.
"""

from __future__ import annotations

import functools
import io
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from engine.archive import apply_layer
from engine.drivers.discovery import load_drivers
from engine.drivers.exec import Command, ExecDriver, ExecStartError, Pipes, ProcessConfig, Resources
from engine.errors import Conflict, NotFound, NotSupported
from engine.shim.launcher import ForkServer
from engine.sys import cgroups, libc
from engine.sys.security.paths import default_masked_paths
from engine.testing.images import PATH_ENV, busybox_layer

__all__ = ["DEFAULT_CAPEFF", "Box", "ExecDriverConformance", "Result", "Running"]

#: Docker's default capability set as /proc/PID/status shows it for root.
DEFAULT_CAPEFF = "00000000a80425fb"


@functools.lru_cache(maxsize=1)
def _layer() -> bytes:
    return busybox_layer()


@dataclass
class Result:
    """What one container run gave: exit code or start error, output, the runner's events."""

    code: int | None
    stdout: str
    stderr: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def error(self) -> dict[str, Any] | None:
        return next((e for e in self.events if e["event"] == "error"), None)

    @property
    def started(self) -> bool:
        return any(e["event"] == "started" for e in self.events)

    def elapsed(self) -> float:
        """Seconds from calling ``run()`` to its return."""
        return next(e["elapsed"] for e in self.events if e["event"] == "exited")


class Running:
    """A container started in the background by :meth:`Box.start`."""

    def __init__(
        self, command: Command, proc: subprocess.Popen, status: io.BufferedReader, master: int | None = None
    ) -> None:
        self.command = command
        self.proc = proc
        self.status = status
        self.events: list[dict[str, Any]] = []
        self.master = master
        self._tty_output = bytearray()
        self._reader: threading.Thread | None = None
        if master is not None:
            self._reader = threading.Thread(target=self._read_master, daemon=True)
            self._reader.start()

    def _read_master(self) -> None:
        assert self.master is not None
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every slave descriptor is closed
                return
            if not chunk:
                return
            self._tty_output += chunk

    def next_event(self, timeout: float = 30.0) -> dict[str, Any] | None:
        ready, _, _ = select.select([self.status], [], [], timeout)
        if not ready:
            raise TimeoutError(f"no event from the runner within {timeout}s")
        line = self.status.readline()
        if not line:
            return None
        event = json.loads(line)
        self.events.append(event)
        return event

    def wait_started(self, timeout: float = 30.0) -> int:
        """The init's PID once ``start_callback`` ran; fails with the start error otherwise."""
        event = self.next_event(timeout)
        if event is None or event["event"] != "started":
            _out, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"container did not start: {event}; stderr: {err!r}")
        return int(event["pid"])

    def wait(self, timeout: float = 60.0) -> Result:
        out, err = self.proc.communicate(timeout=timeout)
        while self.next_event(5.0) is not None:
            pass
        code = next((e["code"] for e in self.events if e["event"] == "exited"), None)
        if self.master is not None:
            assert self._reader is not None
            self._reader.join(10)
            os.close(self.master)
            self.master = None
            out = bytes(self._tty_output)
        return Result(code, (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace"), self.events)


class Box:
    """Builds commands over fresh busybox rootfs directories and runs them through one driver.

    Creates below ``tmp``: ``rootfs-<id>/``, ``container-<id>/`` (hostname,
    hosts, resolv.conf), ``<id>.json`` (the command), the driver home; and
    cgroups below ``engine-test-<hex>``. :meth:`cleanup` terminates every
    container, stops every runner and removes the cgroup parent.
    """

    def __init__(self, driver: ExecDriver, driver_name: str, home: str, tmp: str) -> None:
        self.driver = driver
        self.driver_name = driver_name
        self.home = home
        self.tmp = tmp
        self.parent = f"engine-test-{secrets.token_hex(4)}"
        self.commands: list[Command] = []
        self.running: list[Running] = []
        self.netns_files: list[str] = []

    def command(
        self,
        args: list[str],
        *,
        env: list[str] | None = None,
        cwd: str = "/",
        user: str = "",
        tty: bool = False,
        **kw: Any,
    ) -> Command:
        """A command for ``args`` on a new rootfs; keyword arguments set :class:`Command` or
        :class:`ProcessConfig` fields (``privileged``, ``cap_drop``, ``resources`` ...)."""
        id = secrets.token_hex(16)
        rootfs = os.path.join(self.tmp, f"rootfs-{id[:12]}")
        os.mkdir(rootfs)
        apply_layer(rootfs, io.BytesIO(_layer()))
        container_dir = os.path.join(self.tmp, f"container-{id[:12]}")
        os.mkdir(container_dir)
        hostname = kw.pop("hostname", id[:12])
        for name, text in (
            ("hostname", f"{hostname}\n"),
            ("hosts", f"127.0.0.1\tlocalhost\n10.9.8.7\t{hostname}\n"),
            ("resolv.conf", "nameserver 10.9.8.1\n"),
        ):
            with open(os.path.join(container_dir, name), "w") as fh:
                fh.write(text)
        process_fields = {k: kw.pop(k) for k in list(kw) if k in ProcessConfig.fields()}
        process = ProcessConfig(
            args=args, env=[PATH_ENV] if env is None else env, cwd=cwd, user=user, tty=tty, **process_fields
        )
        command = Command(
            id=id,
            rootfs=rootfs,
            process=process,
            container_dir=container_dir,
            hostname=hostname,
            cgroup_parent=self.parent,
            **kw,
        )
        self.commands.append(command)
        return command

    def start(self, command: Command) -> Running:
        """Start the runner for ``command`` (it calls ``run()``); stdio on pipes, or a pty when ``tty``."""
        path = os.path.join(self.tmp, f"{command.id}.json")
        with open(path, "w") as fh:
            json.dump(command.to_json(), fh)
        status_r, status_w = os.pipe()
        master = None
        argv = [sys.executable, "-m", "engine.testing.exectest_run", self.driver_name, self.home, path, str(status_w)]
        try:
            if command.process.tty:
                master, slave = os.openpty()
                proc = subprocess.Popen(
                    argv, stdin=slave, stdout=slave, stderr=subprocess.PIPE, pass_fds=[status_w], start_new_session=True
                )
                os.close(slave)
            else:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=[status_w],
                    start_new_session=True,
                )
        finally:
            os.close(status_w)
        running = Running(command, proc, os.fdopen(status_r, "rb"), master)
        self.running.append(running)
        return running

    def run(self, command: Command, timeout: float = 60.0) -> Result:
        """Run ``command`` to its end."""
        return self.start(command).wait(timeout)

    def sh(self, script: str, **kw: Any) -> Result:
        """Run ``sh -c script`` in a new container."""
        return self.run(self.command(["sh", "-c", script], **kw))

    def netns(self) -> str:
        """A persistent network namespace bound to a file (what the daemon prepares); unmounted at cleanup."""
        path = os.path.join(self.tmp, f"netns-{secrets.token_hex(4)}")
        open(path, "w").close()
        subprocess.run(["unshare", f"--net={path}", "true"], check=True)
        self.netns_files.append(path)
        return path

    def cleanup(self) -> None:
        errors: list[BaseException] = []
        for command in self.commands:
            try:
                self.driver.terminate(command)
            except Exception as exc:  # clean up the rest first
                errors.append(exc)
        for running in self.running:
            if running.proc.poll() is None:
                try:
                    running.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(running.proc.pid, signal.SIGKILL)
                    running.proc.wait()
            for stream in (running.proc.stdout, running.proc.stderr):
                if stream is not None:
                    stream.close()
            running.status.close()
            if running.master is not None:
                os.close(running.master)
        for path in self.netns_files:
            try:
                libc.umount2(path, libc.MNT_DETACH)
            except OSError:
                pass
        for version in {1, cgroups.read_layout().version}:
            try:
                cgroups.remove_parent(self.parent, version=version)
            except NotSupported:
                pass
        _remove_from_controllerless_hierarchies(self.parent)
        if errors:
            raise errors[0]


def _remove_from_controllerless_hierarchies(parent: str) -> None:
    """Remove the (empty) cgroup parent from hierarchies without controllers (``name=systemd``,
    a hybrid host's v2 mount), where LXC makes it too; the engine's cgroup manager does not."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as fh:
        for line in fh.read().splitlines():
            _, _, rest = line.partition(":")
            key, _, path = rest.partition(":")
            own[key] = path
    with open("/proc/self/mountinfo") as fh:
        mounts = fh.read().splitlines()
    for line in mounts:
        pre, _, post = line.partition(" - ")
        fields, post_fields = pre.split(), post.split()
        if len(post_fields) < 3 or post_fields[0] not in ("cgroup", "cgroup2"):
            continue
        options = set(post_fields[2].split(","))
        if post_fields[0] == "cgroup2":
            key = ""
        else:
            key = next((k for k in own if k.startswith("name=") and k in options), "-")
        if key not in own or fields[3] != "/":
            continue
        path = os.path.join(fields[4], own[key].lstrip("/"), parent)
        try:
            os.rmdir(path)
        except OSError:
            pass  # not there, or not empty: not ours to force


def _caps_line(output: str, name: str) -> str:
    for line in output.splitlines():
        if line.startswith(name + ":"):
            return line.split()[1]
    raise AssertionError(f"{name} not in {output!r}")


def _own_bounding_set() -> str:
    with open("/proc/self/status") as fh:
        return _caps_line(fh.read(), "CapBnd")


def _exec_stdout(driver: ExecDriver, command: Command, process: ProcessConfig) -> tuple[int, str]:
    """Exec ``process`` in the running ``command``; its exit code and its stdout."""
    r, w = os.pipe()
    try:
        code = driver.exec(command, process, Pipes(stdout=w))
    finally:
        os.close(w)
    with os.fdopen(r) as fh:
        return code, fh.read()


class ExecDriverConformance:
    """Tests every exec driver must pass; subclass it with ``driver_name`` set (``root`` tests)."""

    pytestmark: ClassVar[list[Any]] = [pytest.mark.root("namespaces, cgroups")]

    #: The entry-point name of the driver under test.
    driver_name: ClassVar[str] = ""
    #: /dev/ptmx is a bind mount of /dev/pts/ptmx rather than Docker's
    #: symlink to ``pts/ptmx`` (LXC makes it so; either opens the
    #: container's own devpts): the tests then expect that mount.
    ptmx_is_bind_mount: ClassVar[bool] = False

    @pytest.fixture
    def driver(self, tmp_path: Any) -> Iterator[ExecDriver]:
        """The driver, constructed on ``<tmp_path>/home``; skips with the probe's reason."""
        if not self.driver_name:
            pytest.fail("set driver_name on the ExecDriverConformance subclass")
        entries = load_drivers("exec")
        entry = entries.get(self.driver_name)
        if entry is None:
            pytest.fail(f"exec driver {self.driver_name!r} is not installed (installed: {', '.join(entries)})")
        if not entry.loaded:
            pytest.fail(f"exec driver {self.driver_name!r} failed to load: {entry.error}")
        home = os.path.join(str(tmp_path), "home")
        try:
            entry.cls.probe(home, ())
        except NotSupported as exc:
            pytest.skip(f"exec driver {self.driver_name} not supported here: {exc}")
        yield entry.cls(home)

    @pytest.fixture(params=["interpreter", "forkserver"])
    def helpers(self, request: Any, driver: ExecDriver) -> Iterator[ForkServer | None]:
        """The exec tests' ``ExecDriver.helpers``: none, or a fork server preloaded with the driver (the daemon's).

        Creates: the fork server process, closed (it exits at EOF) after the test.
        """
        if request.param == "interpreter":
            yield None
            return
        server = ForkServer(preload=[type(driver).__module__])
        driver.helpers = server
        try:
            yield server
        finally:
            driver.helpers = None
            server.close()

    @pytest.fixture
    def box(self, driver: ExecDriver, tmp_path: Any) -> Iterator[Box]:
        """A :class:`Box` over the driver; everything it made is removed afterwards."""
        b = Box(driver, self.driver_name, driver.home, str(tmp_path))
        try:
            yield b
        finally:
            b.cleanup()

    # ---- output, exit codes, start errors

    def test_echo(self, box: Box) -> None:
        result = box.run(box.command(["echo", "hi"]))
        assert result.error is None, result.error
        assert result.code == 0
        assert result.stdout == "hi\n"
        assert result.started

    def test_exit_code(self, box: Box) -> None:
        assert box.sh("exit 3").code == 3

    def test_stderr(self, box: Box) -> None:
        result = box.sh("echo oops >&2")
        assert (result.stdout, result.stderr) == ("", "oops\n")

    def test_killed_by_signal(self, box: Box, driver: ExecDriver) -> None:
        running = box.start(box.command(["sleep", "1000"]))
        running.wait_started()
        driver.kill(running.command, signal.SIGKILL)
        assert running.wait().code == 128 + signal.SIGKILL

    @pytest.mark.parametrize(
        "args, message",
        [
            (["nosuchcmd"], 'exec: "nosuchcmd": executable file not found in $PATH'),
            (["/nope"], 'exec: "/nope": stat /nope: no such file or directory'),
            (["/etc/passwd"], 'exec: "/etc/passwd": permission denied'),
        ],
    )
    def test_start_errors(self, box: Box, args: list[str], message: str) -> None:
        result = box.run(box.command(args))
        assert result.error is not None, result
        assert result.error["type"] == ExecStartError.__name__
        assert result.error["message"] == message
        assert not result.started, "start_callback must not be called when the start fails"

    def test_failed_start_leaves_no_cgroup(self, box: Box, driver: ExecDriver) -> None:
        command = box.command(["nosuchcmd"])
        assert box.run(command).error is not None
        assert driver.get_pids(command) == []
        with pytest.raises(NotFound):
            driver.stats(command)

    def test_unknown_user(self, box: Box) -> None:
        result = box.run(box.command(["id"], user="nosuchuser"))
        assert result.error is not None
        assert result.error["message"] == "unable to find user nosuchuser: no matching entries in passwd file"

    # ---- identity: hostname, files, env, cwd

    def test_hostname_and_etc_files(self, box: Box) -> None:
        result = box.sh(
            "hostname; cat /etc/hostname /etc/hosts /etc/resolv.conf; cat /proc/sys/kernel/domainname",
            hostname="box-one",
            domainname="example.test",
        )
        assert result.stdout.splitlines() == [
            "box-one",
            "box-one",
            "127.0.0.1\tlocalhost",
            "10.9.8.7\tbox-one",
            "nameserver 10.9.8.1",
            "example.test",
        ]

    def test_hostname_too_long(self, box: Box) -> None:
        result = box.run(box.command(["true"], hostname="h" * 65))
        assert result.error is not None and "setting the host name" in result.error["message"]

    def test_uts_and_ipc_namespaces_are_new(self, box: Box) -> None:
        result = box.sh("for ns in uts ipc mnt; do readlink /proc/self/ns/$ns; done")
        inside = result.stdout.split()
        assert inside == [x for x in inside if x]
        for link, kind in zip(inside, ("uts", "ipc", "mnt")):
            assert link != os.readlink(f"/proc/self/ns/{kind}")

    def test_env_cwd_and_home(self, box: Box) -> None:
        result = box.sh('echo "$FOO"; pwd; echo "$HOME"', env=[PATH_ENV, "FOO=bar baz"], cwd="/work/dir")
        assert result.stdout.splitlines() == ["bar baz", "/work/dir", "/root"]

    # ---- users, groups, capabilities

    def test_root_by_default(self, box: Box) -> None:
        result = box.sh("id")
        assert result.stdout.startswith("uid=0(root) gid=0(root)"), result.stdout
        assert "10(wheel)" in result.stdout  # /etc/group lists root in wheel

    def test_user_by_name(self, box: Box) -> None:
        result = box.sh('id; echo "$HOME"', user="www-data")
        lines = result.stdout.splitlines()
        assert lines[0].startswith("uid=33(www-data) gid=33(www-data)"), lines
        assert lines[1] == "/var/www"

    def test_user_by_uid_gid_and_groups(self, box: Box) -> None:
        result = box.sh("id -u; id -g; id -G", user="1000:1000", additional_groups=["wheel", "4242"])
        uid, gid, groups = result.stdout.splitlines()
        assert (uid, gid) == ("1000", "1000")
        assert set(groups.split()) >= {"10", "4242"}

    def test_default_capabilities(self, box: Box) -> None:
        status = box.sh("cat /proc/self/status").stdout
        assert _caps_line(status, "CapEff") == DEFAULT_CAPEFF
        assert _caps_line(status, "CapPrm") == DEFAULT_CAPEFF
        assert _caps_line(status, "CapBnd") == DEFAULT_CAPEFF
        assert _caps_line(status, "CapAmb") == "0000000000000000"

    def test_cap_drop_all(self, box: Box) -> None:
        status = box.sh("cat /proc/self/status", cap_drop=["ALL"]).stdout
        assert _caps_line(status, "CapEff") == "0000000000000000"
        assert _caps_line(status, "CapBnd") == "0000000000000000"

    def test_cap_add_and_drop(self, box: Box) -> None:
        status = box.sh("cat /proc/self/status", cap_add=["net_admin"], cap_drop=["CAP_CHOWN", "KILL"]).stdout
        expected = (int(DEFAULT_CAPEFF, 16) | 1 << 12) & ~(1 << 0) & ~(1 << 5)
        assert int(_caps_line(status, "CapEff"), 16) == expected

    def test_privileged_capabilities(self, box: Box) -> None:
        status = box.sh("cat /proc/self/status", privileged=True).stdout
        assert _caps_line(status, "CapEff") == _own_bounding_set()

    def test_non_root_has_no_effective_capabilities(self, box: Box) -> None:
        status = box.sh("cat /proc/self/status", user="1000").stdout
        assert _caps_line(status, "CapEff") == "0000000000000000"
        assert _caps_line(status, "CapBnd") == DEFAULT_CAPEFF

    def test_no_new_privileges(self, box: Box) -> None:
        assert "NoNewPrivs:\t1" in box.sh("cat /proc/self/status", no_new_privileges=True).stdout
        assert "NoNewPrivs:\t0" in box.sh("cat /proc/self/status").stdout

    # ---- file system

    def test_masked_and_readonly_paths(self, box: Box) -> None:
        result = box.sh(
            "cat /proc/keys | wc -c; cat /proc/timer_list | wc -c; ls /sys/firmware | wc -l; "
            "echo 1 > /proc/sys/kernel/shm_rmid_forced && echo wrote-proc-sys; "
            "touch /sys/kernel/x && echo wrote-sys; echo done"
        )
        lines = result.stdout.split()
        assert lines[:3] == ["0", "0", "0"], result
        assert "wrote-proc-sys" not in lines and "wrote-sys" not in lines
        assert lines[-1] == "done"
        assert result.stderr.count("Read-only file system") == 2, result.stderr

    def test_privileged_gets_host_devices(self, box: Box) -> None:
        host = sorted(
            name
            for name in os.listdir("/dev")
            if name not in ("console", "ptmx") and (os.lstat(f"/dev/{name}").st_mode & 0o170000) == 0o020000
        )  # character devices
        inside = box.sh(
            "for f in /dev/*; do [ -c $f ] && [ ! -L $f ] && echo ${f#/dev/}; done; true", privileged=True
        ).stdout.split()
        assert set(host) <= set(inside), set(host) - set(inside)

    def test_privileged_has_no_masked_paths(self, box: Box) -> None:
        mounts = box.sh("cat /proc/self/mounts", privileged=True).stdout
        points = {line.split()[1]: line.split()[3] for line in mounts.splitlines()}
        assert "/proc/keys" not in points and "/proc/sys" not in points
        assert points["/sys"].startswith("rw")

    def test_mount_table_has_no_host_paths(self, box: Box) -> None:
        command = box.command(["cat", "/proc/self/mountinfo"])
        points = [line.split()[4] for line in box.run(command).stdout.splitlines()]
        allowed = {
            "/",
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
            *default_masked_paths(),
        }
        if self.ptmx_is_bind_mount:
            allowed.add("/dev/ptmx")
        # The container's own cgroups, as Docker shows them: /sys/fs/cgroup (a tmpfs on v1,
        # the container's directory on v2) and one bind of its directory per v1 hierarchy.
        points = [p for p in points if p != "/sys/fs/cgroup" and not p.startswith("/sys/fs/cgroup/")]
        assert set(points) <= allowed, set(points) - allowed
        assert not any(box.tmp in p or command.rootfs in p for p in points)

    def test_dev(self, box: Box) -> None:
        result = box.sh(
            "stat -c '%n %F %t:%T %a' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty; "
            "readlink /dev/ptmx || stat -c 'bind %t:%T' /dev/ptmx; for l in fd stdout; do readlink /dev/$l; done; grep -E ' /dev/(shm|pts|mqueue) ' /proc/self/mounts | cut -d' ' -f2,3; "
            "test -e /dev/console || echo no-console"
        )
        lines = result.stdout.splitlines()
        assert lines[:6] == [
            f"/dev/{name} character special file {major}:{minor} 666"
            for name, major, minor in (
                ("null", 1, 3),
                ("zero", 1, 5),
                ("full", 1, 7),
                ("random", 1, 8),
                ("urandom", 1, 9),
                ("tty", 5, 0),
            )
        ]
        ptmx = "bind 5:2" if self.ptmx_is_bind_mount else "pts/ptmx"
        assert lines[6:9] == [ptmx, "/proc/self/fd", "/proc/self/fd/1"]
        assert sorted(lines[9:12]) == ["/dev/mqueue mqueue", "/dev/pts devpts", "/dev/shm tmpfs"]
        assert lines[12] == "no-console"

    def test_device_cgroup_denies_other_devices(self, box: Box) -> None:
        # CAP_MKNOD and "b *:* m" allow making the node; the cgroup refuses opening it.
        result = box.sh("mknod /dev/loopx b 7 0 && head -c 1 /dev/loopx")
        assert result.code != 0
        assert "Operation not permitted" in result.stderr, result.stderr

    def test_extra_device(self, box: Box) -> None:
        result = box.sh(
            "stat -c '%F %t:%T' /dev/mynull; echo x > /dev/mynull && echo ok",
            devices=[{"path_on_host": "/dev/null", "path_in_container": "/dev/mynull", "permissions": "rwm"}],
        )
        assert result.stdout.splitlines() == ["character special file 1:3", "ok"]

    def test_readonly_rootfs(self, box: Box) -> None:
        result = box.sh("touch /x", readonly_rootfs=True)
        assert result.code != 0 and "Read-only file system" in result.stderr

    def test_mounts(self, box: Box, tmp_path: Any) -> None:
        data = tmp_path / "data"
        data.mkdir()
        (data / "file").write_text("from the host\n")
        motd = tmp_path / "motd"
        motd.write_text("hello\n")
        result = box.sh(
            "cat /data/file /etc/motd; touch /data/new || echo ro; "
            "grep ' /scratch ' /proc/self/mounts; touch /scratch/x && echo rw",
            mounts=[
                {"type": "bind", "source": str(data), "destination": "/data", "options": ["rbind", "ro"]},
                {"type": "bind", "source": str(motd), "destination": "/etc/motd", "options": []},
                {"type": "tmpfs", "destination": "/scratch", "options": ["size=1m", "mode=1777"]},
            ],
        )
        lines = result.stdout.splitlines()
        assert lines[:3] == ["from the host", "hello", "ro"], result
        assert lines[3].startswith("tmpfs /scratch tmpfs rw") and "size=1024k" in lines[3]
        assert lines[4] == "rw"
        assert not (data / "new").exists()

    def test_sysctl(self, box: Box) -> None:
        result = box.sh("cat /proc/sys/kernel/shm_rmid_forced", sysctls={"kernel.shm_rmid_forced": "1"})
        assert result.stdout == "1\n"

    @pytest.mark.parametrize(
        "key, kw, message",
        [
            ("kernel.core_pattern", {}, 'sysctl "kernel.core_pattern" is not in a separate kernel namespace'),
            ("kernel.shmmax", {"ipc_mode": "host"}, 'sysctl "kernel.shmmax" is not allowed in the hosts ipc namespace'),
            ("net.ipv4.ip_forward", {}, 'sysctl "net.ipv4.ip_forward" not allowed in host network namespace'),
        ],
    )
    def test_sysctls_outside_the_containers_namespaces_are_refused(
        self, box: Box, key: str, kw: dict[str, Any], message: str
    ) -> None:
        # The host's own value: nothing changes even if the check were missing.
        with open("/proc/sys/" + key.replace(".", "/")) as fh:
            current = fh.read().strip()
        result = box.run(box.command(["true"], sysctls={key: current}, **kw))
        assert result.error is not None and message in result.error["message"], result
        assert not result.started

    # ---- seccomp (drivers that apply Command.seccomp_profile)

    def _probe(self, box: Box, driver: ExecDriver, **kw: Any) -> dict[str, Any]:
        """Run :mod:`engine.testing.syscall_probe` with the host's python3 (``/usr`` bound read-only)."""
        reason = driver.seccomp_support()
        if reason is not None:
            pytest.skip(f"exec driver {self.driver_name} applies no seccomp profile here: {reason}")
        if os.uname().machine != "x86_64" or not os.path.exists("/usr/bin/python3"):
            pytest.skip("the syscall probe needs x86_64 and /usr/bin/python3")
        probe = os.path.join(os.path.dirname(os.path.abspath(__file__)), "syscall_probe.py")
        result = box.run(
            box.command(
                ["/bin/sh", "-c", "ln -s usr/lib /lib; ln -s usr/lib64 /lib64; exec /usr/bin/python3 -S -I /probe.py"],
                mounts=[
                    {"type": "bind", "source": "/usr", "destination": "/usr", "options": ["rbind", "ro"]},
                    {"type": "bind", "source": probe, "destination": "/probe.py", "options": ["ro"]},
                ],
                **kw,
            )
        )
        assert result.code == 0 and result.error is None, result
        return json.loads(result.stdout)

    def test_seccomp_default_profile_denies_what_docker_denies(self, box: Box, driver: ExecDriver) -> None:
        from engine.sys.security.seccomp import default_profile

        out = self._probe(box, driver, seccomp_profile=default_profile())
        assert out["seccomp"] == "2"
        calls = out["calls"]
        for name in (
            "unshare_user",
            "mount_in_userns",
            "clone_newuser",
            "add_key",
            "keyctl",
            "request_key",
            "perf_event_open",
            "personality_rie",
            "socket_vsock",
        ):
            assert calls[name] == "EPERM", (name, calls)
        assert calls["clone3"] == "ENOSYS" and calls["getpid"] == "ok"

    def test_seccomp_unconfined_allows_them(self, box: Box, driver: ExecDriver) -> None:
        calls = self._probe(box, driver)["calls"]
        assert calls["unshare_user"] == calls["mount_in_userns"] == calls["add_key"] == "ok", calls
        assert calls["perf_event_open"] == "EFAULT" and calls["clone3"] == "EINVAL", calls

    def test_seccomp_with_cap_sys_admin_allows_namespaces(self, box: Box, driver: ExecDriver) -> None:
        from engine.sys.security.seccomp import default_profile

        calls = self._probe(box, driver, seccomp_profile=default_profile(), cap_add=["SYS_ADMIN"])["calls"]
        assert calls["unshare_user"] == calls["clone_newuser"] == "ok", calls
        assert calls["add_key"] == "EPERM", calls  # no capability brings keyrings

    def test_seccomp_custom_profile_no_new_privileges_and_exec(self, box: Box, driver: ExecDriver) -> None:
        reason = driver.seccomp_support()
        if reason is not None:
            pytest.skip(f"exec driver {self.driver_name} applies no seccomp profile here: {reason}")
        profile = json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
            }
        )
        command = box.command(["sleep", "1000"], seccomp_profile=profile, no_new_privileges=True, user="1000")
        box.start(command).wait_started()
        r, w = os.pipe()
        try:
            code = driver.exec(
                command,
                ProcessConfig(args=["sh", "-c", "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; mkdir /tmp/x"]),
                Pipes(stdout=w, stderr=w),
            )
        finally:
            os.close(w)
        with os.fdopen(r) as fh:
            output = fh.read()
        assert code == 1 and "Seccomp:\t2" in output and "NoNewPrivs:\t1" in output, output
        assert "Permission denied" in output

    # ---- processes

    def test_pid_namespace(self, box: Box) -> None:
        # "; true" keeps sh from exec'ing ps as its last command.
        result = box.sh("echo $$; ps -o pid,comm; true")
        lines = result.stdout.splitlines()
        assert lines[0] == "1"
        processes = sorted(line.split()[1] for line in lines[2:])
        assert processes == ["ps", "sh"], result.stdout  # the container's own processes only

    def test_pid_host(self, box: Box) -> None:
        result = box.sh("echo $$; ps -o pid | wc -l", pid_mode="host")
        pid, count = result.stdout.split()
        assert pid != "1" and int(count) > 3  # the sandbox's processes show too

    def test_uts_host(self, box: Box) -> None:
        assert box.sh("hostname", uts_mode="host", hostname="ignored").stdout.strip() == os.uname().nodename

    def test_ipc_of_another_container(self, box: Box) -> None:
        first = box.start(box.command(["sleep", "1000"]))
        pid = first.wait_started()
        result = box.sh("readlink /proc/self/ns/ipc", ipc_mode=f"container:/proc/{pid}/ns/ipc")
        assert result.stdout.strip() == os.readlink(f"/proc/{pid}/ns/ipc")

    def test_network_none_has_only_lo(self, box: Box) -> None:
        result = box.sh("ls /sys/class/net", network={"mode": "none", "path": box.netns()})
        assert result.stdout.split() == ["lo"]

    # ---- cgroups

    def test_memory_limit_and_oom(self, box: Box, driver: ExecDriver) -> None:
        command = box.command(
            ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
            resources=Resources(memory=32 << 20, memory_swap=32 << 20),
        )
        result = box.run(command)
        assert result.code == 128 + signal.SIGKILL, result
        assert driver.oom_killed(command)
        assert driver.stats(command)["memory_stats"]["limit"] == 32 << 20
        # A restart of the same container (no terminate in between) starts with clean counters.
        command.process.args = ["true"]
        assert box.run(command).code == 0
        assert not driver.oom_killed(command)

    def test_no_oom(self, box: Box, driver: ExecDriver) -> None:
        command = box.command(["true"], resources=Resources(memory=64 << 20))
        assert box.run(command).code == 0
        assert not driver.oom_killed(command)

    def test_pids_limit(self, box: Box) -> None:
        result = box.sh("for i in 1 2 3 4 5 6 7 8; do sleep 30 & done; echo done", resources=Resources(pids_limit=5))
        assert "can't fork" in result.stderr, result.stderr

    def test_pause_unpause(self, box: Box, driver: ExecDriver) -> None:
        command = box.command(
            ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; done"]
        )
        running = box.start(command)
        running.wait_started()
        path = os.path.join(command.rootfs, "tmp", "count")

        def count() -> int:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    with open(path) as fh:
                        return int(fh.read())
                except (FileNotFoundError, ValueError):
                    time.sleep(0.01)
            raise AssertionError("the counter never appeared")

        first = count()
        driver.pause(command)
        paused = count()
        time.sleep(0.3)
        assert count() == paused, "the counter advanced while paused"
        assert paused >= first
        with pytest.raises(Conflict):
            driver.exec(command, ProcessConfig(args=["true"], env=[PATH_ENV]), Pipes())
        driver.unpause(command)
        deadline = time.monotonic() + 10
        while count() == paused and time.monotonic() < deadline:
            time.sleep(0.01)
        assert count() > paused
        driver.kill(command, signal.SIGKILL)
        assert running.wait().code == 137

    def test_get_pids_stats_update(self, box: Box, driver: ExecDriver) -> None:
        command = box.command(["sh", "-c", "sleep 1000 & sleep 1000 & wait"], resources=Resources(memory=64 << 20))
        running = box.start(command)
        pid = running.wait_started()
        deadline = time.monotonic() + 10
        while len(driver.get_pids(command)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        pids = driver.get_pids(command)
        assert pid in pids and len(pids) == 3
        stats = driver.stats(command)
        assert stats["memory_stats"]["usage"] > 0
        assert stats["memory_stats"]["limit"] == 64 << 20
        assert stats["cpu_stats"]["cpu_usage"]["total_usage"] > 0
        assert stats["pids_stats"]["current"] == 3
        driver.update(command, Resources(memory=128 << 20))
        assert driver.stats(command)["memory_stats"]["limit"] == 128 << 20
        driver.terminate(command)
        result = running.wait()
        assert result.code == 137, result
        assert driver.get_pids(command) == []

    # ---- exec

    def test_exec(self, box: Box, driver: ExecDriver, helpers: ForkServer | None) -> None:
        command = box.command(["sleep", "1000"], hostname="exec-box")
        running = box.start(command)
        running.wait_started()
        r, w = os.pipe()
        started: list[int] = []
        try:
            code = driver.exec(
                command,
                ProcessConfig(
                    args=["sh", "-c", "hostname; echo $$; cat /proc/1/cmdline; echo; ps -o comm; exit 7"],
                    env=[PATH_ENV],
                ),
                Pipes(stdout=w),
                started.append,
            )
        finally:
            os.close(w)
        with os.fdopen(r) as fh:
            lines = fh.read().splitlines()
        assert code == 7
        assert lines[0] == "exec-box"
        assert lines[1] != "1"
        assert lines[2] == "sleep\x001000\x00"
        assert sorted(lines[4:]) == ["ps", "sh", "sleep"]  # the container's processes only
        assert len(started) == 1 and started[0] > 0
        # the exec'd process was in the container's cgroup (it is gone now)
        assert started[0] not in driver.get_pids(command)

    def test_exec_joins_every_cgroup_of_the_container(
        self, box: Box, driver: ExecDriver, helpers: ForkServer | None
    ) -> None:
        """Every hierarchy, v1 and v2 (a hybrid host's controller-less one too): the init's cgroup,
        or one below it (LXC attaches to a leaf, ``.lxc``, in v2)."""
        command = box.command(["sleep", "1000"])
        box.start(command).wait_started()
        code, out = _exec_stdout(
            driver,
            command,
            ProcessConfig(args=["sh", "-c", "cat /proc/self/cgroup; echo --; cat /proc/1/cgroup"], env=[PATH_ENV]),
        )
        mine, _, init = out.partition("--\n")
        assert code == 0

        def by_hierarchy(text: str) -> dict[str, str]:
            return {line.rpartition(":")[0]: line.rpartition(":")[2] for line in text.splitlines()}

        exec_cgroups, init_cgroups = by_hierarchy(mine), by_hierarchy(init)
        assert exec_cgroups and exec_cgroups.keys() == init_cgroups.keys(), (mine, init)
        for hierarchy, path in exec_cgroups.items():
            top = init_cgroups[hierarchy]
            assert path == top or path.startswith(top.rstrip("/") + "/"), (hierarchy, path, top)

    def test_exec_user_and_capabilities(self, box: Box, driver: ExecDriver, helpers: ForkServer | None) -> None:
        command = box.command(["sleep", "1000"], cap_drop=["ALL"])
        box.start(command).wait_started()
        code, out = _exec_stdout(
            driver,
            command,
            ProcessConfig(args=["sh", "-c", "id -u; grep CapEff /proc/self/status"], env=[PATH_ENV], user="www-data"),
        )
        lines = out.splitlines()
        assert code == 0
        assert lines == ["33", "CapEff:\t0000000000000000"]

    def test_no_signal_is_ignored_or_blocked(self, box: Box, driver: ExecDriver, helpers: ForkServer | None) -> None:
        """Neither the init nor an exec'd process inherits an ignored or blocked signal (the
        daemon's Python ignores SIGPIPE and SIGXFSZ, and an ignored signal survives execve)."""
        report = ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]  # no shell: sh changes some
        zeros = ["SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000"]
        result = box.run(box.command(report))
        assert (result.code, result.stdout.splitlines()) == (0, zeros), result
        command = box.command(["sleep", "1000"])
        box.start(command).wait_started()
        code, out = _exec_stdout(driver, command, ProcessConfig(args=report, env=[PATH_ENV]))
        assert (code, out.splitlines()) == (0, zeros), out

    def test_exec_errors(self, box: Box, driver: ExecDriver, helpers: ForkServer | None) -> None:
        command = box.command(["sleep", "1000"])
        running = box.start(command)
        running.wait_started()
        started: list[int] = []
        with pytest.raises(ExecStartError, match=r'^exec: "nosuch": executable file not found in \$PATH$'):
            driver.exec(command, ProcessConfig(args=["nosuch"], env=[PATH_ENV]), Pipes(), started.append)
        assert started == []
        driver.kill(command, signal.SIGKILL)
        running.wait()
        with pytest.raises(NotFound):
            driver.exec(command, ProcessConfig(args=["true"], env=[PATH_ENV]), Pipes())
        with pytest.raises(NotFound):
            driver.kill(command, signal.SIGKILL)

    # ---- tty

    def test_tty(self, box: Box) -> None:
        command = box.command(
            ["sh", "-c", "tty; [ -t 0 ] && [ -t 1 ] && echo isatty; stty size"], tty=True, console_size=(30, 100)
        )
        result = box.start(command).wait()
        assert result.code == 0, result
        lines = [line.strip() for line in result.stdout.splitlines()]
        assert lines[0] in ("/dev/console", "/dev/pts/0"), lines
        assert lines[1:] == ["isatty", "30 100"]

    def test_exec_tty(self, box: Box, driver: ExecDriver, helpers: ForkServer | None) -> None:
        command = box.command(["sleep", "1000"])
        box.start(command).wait_started()
        master, slave = os.openpty()
        try:
            code = driver.exec(
                command,
                ProcessConfig(
                    args=["sh", "-c", "[ -t 0 ] && echo isatty; stty size"],
                    env=[PATH_ENV],
                    tty=True,
                    console_size=(12, 34),
                ),
                Pipes(stdin=slave, stdout=slave, stderr=slave),
            )
        finally:
            os.close(slave)
        output = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        os.close(master)
        assert code == 0
        assert output.decode().split() == ["isatty", "12", "34"]

    # ---- timing

    def test_start_time(self, box: Box) -> None:
        """``run()`` of ``echo hi``, start to exit, in a warm runner; printed for the record."""
        times = []
        for _ in range(3):
            result = box.run(box.command(["echo", "hi"]))
            assert result.code == 0
            times.append(result.elapsed())
        print(f"\n{self.driver_name}: run() of `echo hi` took {', '.join(f'{t * 1000:.1f}' for t in times)} ms")
        assert min(times) < 1.0
