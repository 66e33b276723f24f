"""docker-compose 1.29 (Debian's) as a real client: a project of two services talking by service name over the
network compose makes, a shared named volume, depends_on, up -d, ps, logs, exec, up --scale and down -v. All
in the test sandbox; the daemon fixture removes what is left."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from engine.testing.images import busybox_archive

pytestmark = [
    pytest.mark.root("daemons, bridges"),
    pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed (.ci/install)"),
]

PROJECT = """\
version: "3.8"
services:
  web:
    image: busybox
    command: httpd -f -p 80 -h /www
    stop_grace_period: 1s
    volumes:
      - shared:/www
  client:
    image: busybox
    command: sh -c 'echo hello from compose > /www/index.html; echo client ready; exec sleep 600'
    stop_grace_period: 1s
    depends_on:
      - web
    volumes:
      - shared:/www
volumes:
  shared: {}
"""


def test_compose_project_end_to_end(daemon, docker, docker_config, tmp_path):
    archive = tmp_path / "busybox.tar"
    archive.write_bytes(busybox_archive())
    docker("load", "-i", str(archive))
    project = tmp_path / "project"
    project.mkdir()
    (project / "docker-compose.yml").write_text(PROJECT)
    env = dict(os.environ, DOCKER_HOST=daemon.host, DOCKER_CONFIG=docker_config)
    env.pop("DOCKER_API_VERSION", None)

    def compose(*args: str, check: bool = True) -> str:
        proc = subprocess.run(
            ["docker-compose", "-p", "proj", *args], cwd=project, capture_output=True, text=True, env=env, timeout=300
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker-compose {args}: {proc.stdout}\n{proc.stderr}\n{daemon.log()[-3000:]}")
        return proc.stdout + proc.stderr

    compose("up", "-d")
    ps = compose("ps")
    assert re.search(r"proj_web_1\s.*\sUp", ps) and re.search(r"proj_client_1\s.*\sUp", ps), ps
    network = json.loads(docker("network", "inspect", "proj_default").stdout)[0]
    assert network["Labels"]["com.docker.compose.network"] == "default"
    assert len(network["Containers"]) == 2
    web = json.loads(docker("inspect", "proj_web_1").stdout)[0]
    assert "web" in web["NetworkSettings"]["Networks"]["proj_default"]["Aliases"]
    # The client reaches the web service by its name, and both share the volume.
    assert (
        compose("exec", "-T", "client", "wget", "-q", "-O-", "http://web:80/index.html").strip() == "hello from compose"
    )
    assert "client ready" in compose("logs", "client")
    # Scaled: the service name answers with every replica's address.
    compose("up", "-d", "--scale", "web=2")
    looked_up = compose("exec", "-T", "client", "nslookup", "web")
    addresses = {
        json.loads(docker("inspect", name).stdout)[0]["NetworkSettings"]["Networks"]["proj_default"]["IPAddress"]
        for name in ("proj_web_1", "proj_web_2")
    }
    assert addresses <= set(re.findall(r"Address: (\S+)", looked_up)), looked_up
    compose("down", "-v")
    assert "proj_default" not in docker("network", "ls").stdout.decode()
    assert "proj_shared" not in docker("volume", "ls").stdout.decode()
    assert docker("ps", "-aq").stdout.decode().strip() == ""
