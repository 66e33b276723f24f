"""``pip install engine`` (and the plugins) from built wheels, outside the source tree.

The test copies the source tree, builds the core's and every plugin's wheel
with ``python -m build --wheel --no-isolation`` (PyPI's build; no isolation,
so no network: the build uses this environment's setuptools), installs them
into a fresh virtual environment offline (``pip install --no-index``; the
dependencies come from the wheelhouse ``scripts/build-wheels`` fills, in
``dist/deps`` or ``$ENGINE_WHEELHOUSE``), then runs ``engine -d`` from that
environment in a scratch directory and drives it with the docker CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import engine
from engine.testing.daemon import DaemonProcess
from engine.testing.images import busybox_archive

pytestmark = [pytest.mark.slow, pytest.mark.root("a daemon")]

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _distributions() -> dict[str, str]:
    """Distribution name -> its directory relative to the top: the core, then each plugin."""
    import configparser

    out = {}
    for rel in ["."] + sorted(os.path.join("plugins", n) for n in os.listdir(os.path.join(TOP, "plugins"))):
        cfg = configparser.ConfigParser()
        if cfg.read(os.path.join(TOP, rel, "setup.cfg")):
            out[cfg["metadata"]["name"]] = rel
    return out


DISTRIBUTIONS = _distributions()
JUNK = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", "results"
)


def wheelhouse() -> str:
    path = os.environ.get("ENGINE_WHEELHOUSE") or os.path.join(TOP, "dist", "deps")
    if not os.path.isdir(path) or not any(n.endswith(".whl") for n in os.listdir(path)):
        pytest.fail(f"no dependency wheels in {path}: run scripts/build-wheels first (.ci/run does)")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that points Python at the source tree or another environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_"))}
    env.update(extra)
    return env


def run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{' '.join(argv)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


class VenvDaemon(DaemonProcess):
    """:class:`DaemonProcess` running the ``engine`` script of another environment."""

    def __init__(self, workdir: str, engine_script: str, args: list[str], env: dict[str, str]) -> None:
        super().__init__(workdir, args)
        self.env = env
        self.engine_script = engine_script

    def command(self) -> list[str]:
        base = super().command()
        assert base[1:4] == ["-m", "engine.cli", "-d"]
        return [self.engine_script, "-d", *base[4:]]


def test_wheels_install_offline_into_a_fresh_venv_and_run_the_daemon(tmp_path, docker_config):
    deps = wheelhouse()
    src = tmp_path / "src"
    shutil.copytree(TOP, src, ignore=JUNK, symlinks=True)
    wheels = tmp_path / "wheels"
    for rel in DISTRIBUTIONS.values():
        run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(wheels), str(src / rel))
    built = sorted(os.listdir(wheels))
    assert len(built) == len(DISTRIBUTIONS) and all(n.endswith("-py3-none-any.whl") for n in built), built

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv), env=clean_env())
    python = str(venv / "bin" / "python")
    # --no-index: offline; the constraints and find-links of this machine's pip configuration do not matter.
    run(
        python,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-index",
        "--find-links",
        str(wheels),
        "--find-links",
        deps,
        *DISTRIBUTIONS,
        env=clean_env(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1"),
        cwd=str(tmp_path),
    )
    # The installed code is the venv's, and the units came along as package data.
    where = run(
        python,
        "-c",
        "import engine, engine.admin.systemd as s; print(engine.__file__); print(s.shipped_unit('engine.socket'))",
        env=clean_env(),
        cwd=str(tmp_path),
    ).stdout
    assert where.startswith(str(venv / "lib")) and "SocketGroup=engine" in where
    drivers = json.loads(
        run(
            str(venv / "bin" / "engine-admin"),
            "drivers",
            "--json",
            "--config-file",
            os.devnull,
            env=clean_env(),
            cwd=str(tmp_path),
        ).stdout
    )
    found = {(r["kind"], r["name"]): r["distribution"] for r in drivers if r["name"]}
    assert found[("graph", "vfs")] == "engine-graph-vfs" and found[("exec", "native")] == "engine-exec-native"
    assert found[("network", "bridge")] == "engine-net-bridge"

    d = VenvDaemon(str(tmp_path / "daemon"), str(venv / "bin" / "engine"), ["-s", "vfs"], clean_env())
    archive = tmp_path / "busybox.tar"
    archive.write_bytes(busybox_archive())
    d.start()
    try:
        with open(f"/proc/{d.proc.pid}/cmdline", "rb") as fh:
            assert fh.read().split(b"\0")[1] == str(venv / "bin" / "engine").encode()
        env = dict(os.environ, DOCKER_CONFIG=docker_config, DOCKER_HOST=d.host)
        env.pop("DOCKER_API_VERSION", None)
        version = json.loads(run("docker", "version", "--format", "{{json .Server}}", env=env).stdout)
        assert version["Version"] == engine.__version__ and version["ApiVersion"] == engine.API_VERSION
        run("docker", "load", "-i", str(archive), env=env)
        assert run("docker", "run", "--rm", "busybox", "echo", "from the wheels", env=env).stdout == "from the wheels\n"
    finally:
        d.stop()
