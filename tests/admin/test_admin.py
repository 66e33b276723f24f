"""``engine-admin`` and driver discovery with a real third-party distribution.

A throwaway distribution (``tests/admin/thirdparty``: a graph driver, a
broken graph driver and a pluggy plugin) is pip-installed into a temporary
virtual environment that sees the system's packages; the engine there must
list it, select it when asked, and serve its job and route.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys

import pytest

from engine.sys import ksm, libseccomp
from engine.testing.daemon import DaemonProcess

HERE = os.path.dirname(os.path.abspath(__file__))


def admin(*args: str, python: str = sys.executable, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "-m", "engine.admin.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.fixture
def no_config(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text("{}")
    return ["--config-file", str(path), "-g", str(tmp_path / "root")]


def first_supported(rows):
    """The graph driver the priority list should pick: the first one whose probe passes."""
    graph = {r["name"]: r for r in rows if r["kind"] == "graph" and r["name"]}
    return next(
        graph[n] for n in ("aufs", "btrfs", "devmapper", "overlay", "vfs") if n in graph and graph[n]["supported"]
    )


def test_drivers_lists_and_selects_by_priority(no_config):
    out = admin("drivers", "--json", *no_config)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    vfs = next(r for r in rows if r["kind"] == "graph" and r["name"] == "vfs")
    assert vfs["distribution"] == "engine-graph-vfs" and vfs["loaded"] and vfs["supported"]
    assert vfs["priority"] == 5 and vfs["summary"]
    chosen = first_supported(rows)
    assert [r["name"] for r in rows if r["kind"] == "graph" and r["selected"]] == [chosen["name"]]
    assert chosen["selected_reason"] == "first supported in the priority list"
    aufs = next((r for r in rows if r["name"] == "aufs"), None)
    if aufs is not None and "aufs" not in open("/proc/filesystems").read():
        assert aufs["supported"] is False and "aufs is not supported by the kernel" in aufs["reason"]
    # btrfs and devmapper are listed with the reason they cannot run, where they cannot.
    btrfs = next((r for r in rows if r["name"] == "btrfs"), None)
    if btrfs is not None and not btrfs["supported"]:
        assert btrfs["distribution"] == "engine-graph-btrfs" and "not on btrfs" in btrfs["reason"]
    devmapper = next((r for r in rows if r["name"] == "devmapper"), None)
    if devmapper is not None and "device-mapper" not in open("/proc/misc").read():
        assert devmapper["supported"] is False and "the kernel has no device-mapper" in devmapper["reason"]
    # lxc is listed among the exec drivers, supported where the lxc tools and liblxc are.
    lxc = next((r for r in rows if r["kind"] == "exec" and r["name"] == "lxc"), None)
    if lxc is not None:
        assert lxc["distribution"] == "engine-exec-lxc" and lxc["loaded"] and not lxc["selected"]
        if shutil.which("lxc-start") is not None and os.geteuid() == 0:
            assert lxc["supported"], lxc
        else:
            assert not lxc["supported"] and "lxc exec driver" in lxc["reason"]
    table = admin("drivers", *no_config)
    assert table.returncode == 0
    assert chosen["name"] in table.stdout and "engine-graph-vfs" in table.stdout and "*" in table.stdout


def test_drivers_kind_filter(no_config):
    rows = json.loads(admin("drivers", "--kind", "graph", "--json", *no_config).stdout)
    assert {r["kind"] for r in rows} == {"graph"}


def test_check_reports_features():
    out = admin("check", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) >= {"kernel", "security", "namespaces", "cgroups", "storage", "network", "memory"}
    (merge,) = doc["memory"]
    assert merge["name"] == "ksm" and merge["ok"] is (ksm.unsupported() is None and ksm.ksmd_running())
    seccomp = doc["security"][0]
    assert seccomp["name"] == "seccomp" and seccomp["ok"] is (libseccomp.unsupported() is None)
    storage = {c["name"]: c for c in doc["storage"]}
    assert storage["overlay"]["ok"] is ("overlay" in open("/proc/filesystems").read())
    assert storage["aufs"]["disables"] == "the aufs graph driver"
    if os.geteuid() == 0:
        net = {c["name"]: c for c in doc["network"]}
        assert net["bridge"]["ok"] is True and net["veth"]["ok"] is True
    text = admin("check").stdout
    assert "FEATURE" in text and "namespace pid" in text


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A venv over the test interpreter's packages, with the third-party dist installed.

    It sees what the running interpreter sees (its site-packages, editable
    installs included) rather than the base Python's: in a virtualenv those
    are the engine and plugins under test, not another checkout's.
    """
    base = tmp_path_factory.mktemp("thirdparty")
    src = base / "src"
    shutil.copytree(os.path.join(HERE, "thirdparty"), src)
    env_dir = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    python = str(env_dir / "bin" / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # addsitedir, not a bare path: the parent's own .pth files (editable installs) must run too.
    parents = [p for p in site.getsitepackages() if os.path.isdir(p)]
    with open(os.path.join(purelib, "engine-under-test.pth"), "w") as fh:
        fh.write(f"import site; list(map(site.addsitedir, {parents!r}))\n")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(src)],
        check=True,
        capture_output=True,
    )
    return python


def test_third_party_driver_listed_and_selectable(venv, no_config):
    out = admin("drivers", "--kind", "graph", "--json", *no_config, python=venv)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    fake = rows["fakefs"]
    assert fake["distribution"] == "engine-graph-fakefs" and fake["version"] == "3.1.4"
    assert fake["loaded"] and fake["supported"] and fake["priority"] is None
    assert fake["summary"] == "Third-party test driver: plain directories, no copy of the parent."
    broken = rows["brokenfs"]
    assert not broken["loaded"] and "engine_graph_fakefs_missing_dependency" in broken["load_error"]
    assert broken["distribution"] == "engine-graph-fakefs"
    assert first_supported(list(rows.values()))["selected"]  # the priority list still wins
    chosen = {
        r["name"]: r
        for r in json.loads(
            admin("drivers", "--kind", "graph", "--json", "-s", "fakefs", *no_config, python=venv).stdout
        )
    }
    assert chosen["fakefs"]["selected"] and chosen["fakefs"]["selected_reason"] == "chosen by --storage-driver"
    out = admin(
        "drivers", "--kind", "graph", "--json", *no_config, python=venv, env=dict(os.environ, ENGINE_DRIVER="fakefs")
    )
    assert {r["name"]: r for r in json.loads(out.stdout)}["fakefs"]["selected"]


def test_third_party_probe_sees_the_options_the_daemon_gives(venv, no_config):
    """The "supported here" column and the selection run the driver's probe as the daemon does."""
    args = ("drivers", "--kind", "graph", "--json", "-s", "fakefs", "--storage-opt", "fakefs.refuse=not today")
    rows = json.loads(admin(*args, *no_config, python=venv).stdout)
    fake = next(r for r in rows if r["name"] == "fakefs")
    assert fake["supported"] is False and fake["reason"] == "fakefs refuses: not today"
    assert not any(r["selected"] for r in rows)
    assert rows[-1]["name"] is None
    assert (
        rows[-1]["selected_reason"]
        == "graph driver fakefs (from --storage-driver) cannot run here: fakefs refuses: not today"
    )


@pytest.mark.root("a daemon")
def test_daemon_runs_third_party_driver_and_plugin(venv, workdir):
    d = DaemonProcess(workdir, ["-s", "fakefs"])
    d.command_python = venv
    cmd = d.command()
    cmd[0] = venv
    d.command = lambda: cmd  # type: ignore[method-assign]
    d.start()
    try:
        status, body = d.request("GET", "/v1.41/info")
        info = json.loads(body)
        assert status == 200 and info["Driver"] == "fakefs" and ["Fake", "yes"] in info["DriverStatus"]
        status, body = d.request("GET", "/fakefs/hello")
        assert status == 200 and json.loads(body) == {"hello": "from fakefs"}
        assert "brokenfs" in d.log() and "failed to load" in d.log()
    finally:
        assert d.stop() == 0


@pytest.mark.root("a daemon")
def test_daemon_refuses_as_engine_admin_says(venv, workdir):
    d = DaemonProcess(workdir, ["-s", "fakefs", "--storage-opt", "fakefs.refuse=not today"])
    cmd = d.command()
    cmd[0] = venv
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "graph driver fakefs (from --storage-driver) cannot run here: fakefs refuses: not today" in proc.stderr
    assert not os.path.exists(d.socket) and not os.path.exists(d.pidfile)


@pytest.mark.root("a daemon")
def test_asking_for_the_broken_driver_fails_with_its_error(venv, workdir):
    d = DaemonProcess(workdir, ["-s", "brokenfs"])
    cmd = d.command()
    cmd[0] = venv
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "graph driver brokenfs from engine-graph-fakefs 3.1.4 failed to load" in proc.stderr
    assert not os.path.exists(d.socket) and not os.path.exists(d.pidfile)
