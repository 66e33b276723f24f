"""Pull, push, login and search against a real registry (Debian's docker-registry,
distribution 2.8) on 127.0.0.1, with the real docker CLI, docker-py and the
engine CLI; side by side with dockerd; bad input, a corrupted blob, kill -9
mid-pull, a registry mirror."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time

import docker as dockerpy
import pytest
import requests

from engine.testing import dockerd as reference
from engine.testing import registry as local_registry
from engine.testing.daemon import DaemonProcess
from engine.testing.images import (
    BuiltImage,
    big_image,
    busybox_archive,
    busybox_image,
    docker_archive,
    image_config,
    layered_image,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not local_registry.available(), reason="docker-registry (distribution) is not installed"),
]


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    base = tmp_path_factory.mktemp("archives")
    paths = {}
    for name, data in (("busybox", busybox_archive()), ("layered", docker_archive([layered_image()]))):
        path = base / f"{name}.tar"
        path.write_bytes(data)
        paths[name] = str(path)
    return paths


@pytest.fixture
def registry(tmp_path):
    """An open registry on 127.0.0.1:<free port>.

    Creates: ``<tmp>/registry/{config.yml,storage,registry.log}`` and the
    registry process, stopped afterwards.
    """
    reg = local_registry.LocalRegistry(str(tmp_path / "registry")).start()
    yield reg
    reg.stop()


@pytest.fixture
def auth_registry(tmp_path):
    """A registry with htpasswd basic auth: user ``alice``, password ``s3cret``."""
    reg = local_registry.LocalRegistry(str(tmp_path / "auth-registry"), users={"alice": "s3cret"}).start()
    yield reg
    reg.stop()


def inspect(docker, name):
    return json.loads(docker("image", "inspect", name).stdout)[0]


def api_stream(daemon, method, path, headers=None, body=None, timeout=300):
    """Send a request to the daemon; (status, [decoded JSON lines])."""
    status, raw = daemon.request(method, path, body=body, headers=headers or {}, timeout=timeout)
    lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return status, lines


def statuses(lines, ident=None):
    return [m.get("status") for m in lines if ident is None or m.get("id") == ident]


def layer_dirs(daemon):
    layerdb = os.path.join(daemon.root, "layerdb")
    return sorted(n for n in os.listdir(layerdb) if len(n) == 64)


def push_busybox(docker, archives, registry, name="busybox"):
    docker("load", "-i", archives["busybox"])
    target = f"{registry.host}/{name}:latest"
    docker("tag", "busybox", target)
    return target, docker("push", target)


# ---------------------------------------------------------------------------
# the round trip


def test_push_rmi_pull_same_id_and_digest(docker, archives, registry):
    target, proc = push_busybox(docker, archives, registry)
    out = proc.stdout.decode()
    expected = busybox_image()
    assert f"The push refers to repository [{registry.host}/busybox]" in out
    assert f"{expected.diff_ids()[0][7:19]}: Pushed" in out
    digest_line = [line for line in out.splitlines() if line.startswith("latest: digest: sha256:")]
    assert digest_line, out
    digest = digest_line[0].split()[2]
    assert inspect(docker, target)["RepoDigests"] == [f"{registry.host}/busybox@{digest}"]

    # A second push finds the layer there and gives the same digest.
    again = docker("push", target).stdout.decode()
    assert "Layer already exists" in again and f"latest: digest: {digest} " in again

    docker("rmi", target, "busybox")
    assert docker("images", "-q").stdout.strip() == b""
    pulled = docker("pull", target).stdout.decode()
    assert "latest: Pulling from busybox" in pulled
    assert f"Digest: {digest}" in pulled
    assert f"Status: Downloaded newer image for {target}" in pulled
    doc = inspect(docker, target)
    assert doc["Id"] == expected.id
    assert doc["RepoTags"] == [target]
    assert doc["RepoDigests"] == [f"{registry.host}/busybox@{digest}"]
    assert doc["RootFS"]["Layers"] == expected.diff_ids()
    # Up to date now.
    assert f"Status: Image is up to date for {target}" in docker("pull", target).stdout.decode()


def test_same_image_same_blobs_from_a_loaded_or_a_pulled_copy(docker, archives, registry, tmp_path):
    """Deterministic gzip: a pulled copy pushed to another registry gives the same manifest digest."""
    docker("load", "-i", archives["layered"])
    first = f"{registry.host}/layered:latest"
    docker("tag", "layered", first)
    out = docker("push", first).stdout.decode()
    digest = next(line for line in out.splitlines() if "digest:" in line).split()[2]
    docker("rmi", first, "layered")
    docker("pull", first)
    other = local_registry.LocalRegistry(str(tmp_path / "other-registry")).start()
    try:
        second = f"{other.host}/layered:latest"
        docker("tag", first, second)
        out = docker("push", second).stdout.decode()
        assert out.count("Pushed") == 3  # another registry: every layer compressed again
        assert f"latest: digest: {digest} " in out
    finally:
        other.stop()


def test_pull_progress_stream(daemon, docker, archives, registry):
    """Docker's JSON messages, in Docker's order, for a three-layer image."""
    docker("load", "-i", archives["layered"])
    target = f"{registry.host}/team/layered:v1"
    docker("tag", "layered", target)
    docker("push", target)
    docker("rmi", target, "layered")
    status, lines = api_stream(
        daemon,
        "POST",
        f"/v1.41/images/create?fromImage={registry.host}%2Fteam%2Flayered&tag=v1",
        headers={"X-Registry-Auth": "e30="},
    )
    assert status == 200
    assert lines[0] == {"status": "Pulling from team/layered", "id": "v1"}
    ids = [m["id"] for m in lines if m.get("status") == "Pulling fs layer"]
    assert len(ids) == 3
    for ident in ids:
        seen = statuses(lines, ident)
        assert seen[0] == "Pulling fs layer"
        assert seen[-1] == "Pull complete"
        order = [s for s in seen if s in ("Verifying Checksum", "Download complete", "Pull complete")]
        assert order == ["Verifying Checksum", "Download complete", "Pull complete"]
        assert seen.index("Download complete") < seen.index("Extracting")
        extracting = [m for m in lines if m.get("id") == ident and m.get("status") == "Extracting"]
        assert extracting and extracting[-1]["progressDetail"]["current"] == extracting[-1]["progressDetail"]["total"]
    downloading = [m for m in lines if m.get("status") == "Downloading"]
    for m in downloading:
        assert set(m["progressDetail"]) == {"current", "total"} and m["progress"].startswith("[")
    assert lines[-2]["status"].startswith("Digest: sha256:")
    assert lines[-1] == {"status": f"Status: Downloaded newer image for {registry.host}/team/layered:v1"}
    assert inspect(docker, target)["Id"] == layered_image().id


def test_shared_layers_already_exist(docker, daemon, archives, registry):
    """An image whose bottom layer is busybox's: that layer is not downloaded again."""
    base = busybox_image()
    child = BuiltImage(
        base.layers + [busybox_image().layers[0][:0] or _small_layer()],
        image_config(["sh"], [{"created_by": "base"}, {"created_by": "child"}]),
        ["child:latest"],
    )
    path = os.path.join(daemon.workdir, "child.tar")
    with open(path, "wb") as fh:
        fh.write(docker_archive([child]))
    docker("load", "-i", path)
    target = f"{registry.host}/child:latest"
    docker("tag", "child", target)
    docker("push", target)
    docker("rmi", target, "child")
    docker("load", "-i", archives["busybox"])
    status, lines = api_stream(daemon, "POST", f"/v1.41/images/create?fromImage={registry.host}%2Fchild&tag=latest")
    assert status == 200
    assert statuses(lines).count("Already exists") == 1
    assert statuses(lines).count("Pull complete") == 1
    assert inspect(docker, target)["Id"] == child.id


def _small_layer():
    from engine.testing.layertar import Entry, make_layer_tar

    return make_layer_tar([Entry.dir("extra", mtime=0), Entry.file("extra/file", b"child layer\n", mtime=0)])


def test_push_mounts_blobs_from_another_repository(docker, archives, registry):
    _target, _ = push_busybox(docker, archives, registry, name="team/one")
    other = f"{registry.host}/team/two:latest"
    docker("tag", "busybox", other)
    out = docker("push", other).stdout.decode()
    assert f"{busybox_image().diff_ids()[0][7:19]}: Mounted from team/one" in out
    digest = next(line for line in out.splitlines() if "digest:" in line).split()[2]
    # Same image, same blobs: the same manifest digest in both repositories.
    assert inspect(docker, other)["RepoDigests"] == [
        f"{registry.host}/team/one@{digest}",
        f"{registry.host}/team/two@{digest}",
    ]


def test_concurrent_pulls_share_one_download(daemon, docker, registry, workdir):
    image = big_image(20, tags=[f"{registry.host}/shared:latest"])
    path = os.path.join(workdir, "shared.tar")
    with open(path, "wb") as fh:
        fh.write(docker_archive([image]))
    docker("load", "-i", path)
    docker("push", f"{registry.host}/shared:latest")
    docker("rmi", f"{registry.host}/shared:latest")
    results = {}
    started = threading.Event()

    def pull(name):
        from engine.testing.daemon import UnixHTTPConnection

        conn = UnixHTTPConnection(daemon.socket, timeout=120)
        conn.request("POST", f"/v1.41/images/create?fromImage={registry.host}%2Fshared&tag=latest")
        resp = conn.getresponse()
        lines = []
        for raw in resp:
            if raw.strip():
                lines.append(json.loads(raw))
                started.set()
        conn.close()
        results[name] = (resp.status, lines)

    first = threading.Thread(target=pull, args=("first",))
    first.start()
    assert started.wait(30)
    second = threading.Thread(target=pull, args=("second",))
    second.start()
    first.join(120)
    second.join(120)
    for name in ("first", "second"):
        status, lines = results[name]
        assert status == 200
        assert lines[-1]["status"] == f"Status: Downloaded newer image for {registry.host}/shared:latest"
    waited = [m for m in results["second"][1] if "already being pulled by another client" in m.get("status", "")]
    downloads = [m for m in results["second"][1] if m.get("status") == "Downloading"]
    assert waited or downloads  # the second either waited for the first, or came after it ended
    if waited:
        assert not downloads
    assert inspect(docker, f"{registry.host}/shared:latest")["Id"] == image.id


def test_pull_by_digest_and_all_tags(docker, archives, registry):
    _target, proc = push_busybox(docker, archives, registry)
    digest = next(line for line in proc.stdout.decode().splitlines() if "digest:" in line).split()[2]
    docker("tag", "busybox", f"{registry.host}/busybox:other")
    docker("push", f"{registry.host}/busybox:other")
    docker("rmi", "-f", busybox_image().id)
    out = docker("pull", f"{registry.host}/busybox@{digest}").stdout.decode()
    assert f"Status: Downloaded newer image for {registry.host}/busybox@{digest}" in out
    doc = inspect(docker, f"{registry.host}/busybox@{digest}")
    assert doc["Id"] == busybox_image().id and doc["RepoTags"] == []
    assert doc["RepoDigests"] == [f"{registry.host}/busybox@{digest}"]
    out = docker("pull", "-a", f"{registry.host}/busybox").stdout.decode()
    assert f"Status: Downloaded newer image for {registry.host}/busybox" in out
    assert sorted(inspect(docker, busybox_image().id)["RepoTags"]) == [
        f"{registry.host}/busybox:latest",
        f"{registry.host}/busybox:other",
    ]


# ---------------------------------------------------------------------------
# side by side with dockerd


@pytest.fixture
def dockerd(workdir):
    if not reference.available():
        pytest.skip("dockerd (Debian docker.io) is not installed")
    d = reference.ReferenceDockerd(os.path.join(workdir, "dockerd")).start()
    yield d
    d.stop()


def run_docker(host, docker_config, *args, check=True, input=None):
    env = dict(os.environ, DOCKER_HOST=host, DOCKER_CONFIG=docker_config)
    proc = subprocess.run(["docker", *args], env=env, capture_output=True, timeout=300, input=input)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_dockerd_pulls_what_we_pushed_and_we_pull_what_it_pushed(
    docker, daemon, dockerd, docker_config, archives, registry
):
    target, _ = push_busybox(docker, archives, registry)
    fmt = "{{.Id}} {{json .RepoDigests}} {{json .RootFS.Layers}}"
    ours = run_docker(daemon.host, docker_config, "image", "inspect", "--format", fmt, target).stdout
    run_docker(dockerd.host, docker_config, "pull", target)
    theirs = run_docker(dockerd.host, docker_config, "image", "inspect", "--format", fmt, target).stdout
    assert ours == theirs
    # The other way round: dockerd pushes (its own gzip), we pull the same IDs.
    run_docker(dockerd.host, docker_config, "load", "-i", archives["layered"])
    other = f"{registry.host}/from-dockerd:latest"
    run_docker(dockerd.host, docker_config, "tag", "layered", other)
    run_docker(dockerd.host, docker_config, "push", other)
    docker("pull", other)
    assert (
        run_docker(daemon.host, docker_config, "image", "inspect", "--format", fmt, other).stdout
        == run_docker(dockerd.host, docker_config, "image", "inspect", "--format", fmt, other).stdout
    )


# ---------------------------------------------------------------------------
# authentication


def test_basic_auth_login_push_pull(docker, docker_config, archives, auth_registry):
    docker("load", "-i", archives["busybox"])
    target = f"{auth_registry.host}/private/busybox:latest"
    docker("tag", "busybox", target)
    proc = docker("push", target, check=False)
    assert proc.returncode != 0
    assert b"no basic auth credentials" in proc.stderr + proc.stdout
    proc = docker("login", auth_registry.host, "-u", "alice", "--password-stdin", input=b"wrong\n", check=False)
    assert proc.returncode != 0
    assert b"unauthorized" in proc.stderr
    proc = docker("login", auth_registry.host, "-u", "alice", "--password-stdin", input=b"s3cret\n")
    assert b"Login Succeeded" in proc.stdout
    with open(os.path.join(docker_config, "config.json")) as fh:
        auths = json.load(fh)["auths"]
    assert base64.b64decode(auths[auth_registry.host]["auth"]) == b"alice:s3cret"
    out = docker("push", target).stdout.decode()
    assert "Pushed" in out and "latest: digest: sha256:" in out
    docker("rmi", target, "busybox")
    docker("pull", target)
    assert inspect(docker, target)["Id"] == busybox_image().id
    docker("logout", auth_registry.host)
    docker("rmi", target)
    # No TTY: the CLI's "Login prior to pull" prompt gets EOF.
    proc = docker("pull", target, check=False, input=b"")
    assert proc.returncode != 0 and b"no basic auth credentials" in proc.stderr + proc.stdout


def test_auth_endpoint(daemon, registry, auth_registry):
    body = json.dumps({"username": "alice", "password": "s3cret", "serveraddress": auth_registry.host}).encode()
    status, raw = daemon.request("POST", "/v1.41/auth", body=body, headers={"Content-Type": "application/json"})
    assert status == 200 and json.loads(raw) == {"Status": "Login Succeeded", "IdentityToken": ""}
    body = json.dumps({"username": "alice", "password": "nope", "serveraddress": f"http://{auth_registry.host}/v2/"})
    status, raw = daemon.request("POST", "/v1.41/auth", body=body.encode())
    assert status == 401 and json.loads(raw)["message"].startswith("unauthorized: ")
    # An open registry accepts anyone, as with Docker.
    body = json.dumps({"username": "x", "password": "y", "serveraddress": registry.host}).encode()
    status, raw = daemon.request("POST", "/v1.41/auth", body=body)
    assert status == 200


# ---------------------------------------------------------------------------
# bad input


def test_unknown_repository_tag_and_malformed_reference(daemon, docker, registry):
    proc = docker("pull", f"{registry.host}/nosuch:latest", check=False)
    assert proc.returncode != 0
    assert f"manifest for {registry.host}/nosuch:latest not found: manifest unknown".encode() in proc.stderr
    status, _lines = api_stream(daemon, "POST", f"/v1.41/images/create?fromImage={registry.host}%2Fnosuch&tag=x")
    assert status == 404
    status, raw = daemon.request("POST", "/v1.41/images/create?fromImage=Bad..Name&tag=latest")
    assert status == 400 and b"invalid reference format" in raw
    status, raw = daemon.request("POST", f"/v1.41/images/create?fromImage={registry.host}%2Fx&tag=bad%20tag")
    assert status == 400
    proc = docker("push", f"{registry.host}/not-here:latest", check=False)
    assert proc.returncode != 0 and b"does not exist" in proc.stderr
    assert docker("images", "-q").stdout.strip() == b""


def test_unsupported_platform_in_manifest_list(daemon, docker, archives, registry):
    _target, proc = push_busybox(docker, archives, registry)
    digest = next(line for line in proc.stdout.decode().splitlines() if "digest:" in line).split()[2]
    size = int(proc.stdout.decode().split("size: ")[-1].split()[0])
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "size": size,
                "digest": digest,
                "platform": {"architecture": "s390x", "os": "linux"},
            }
        ],
    }
    resp = requests.put(
        f"{registry.url}/v2/busybox/manifests/s390x-only",
        data=json.dumps(index),
        headers={"Content-Type": index["mediaType"]},
    )
    assert resp.status_code == 201, resp.text
    docker("rmi", "-f", busybox_image().id)
    proc = docker("pull", f"{registry.host}/busybox:s390x-only", check=False)
    assert proc.returncode != 0
    assert b"no matching manifest for linux/amd64 in the manifest list entries" in proc.stderr
    # With --platform matching the entry, the index resolves (the image itself is amd64: Docker refuses too).
    out = docker("pull", "--platform", "linux/s390x", f"{registry.host}/busybox:s390x-only", check=False)
    assert out.returncode != 0 and b"does not match the specified platform" in out.stderr
    assert docker("images", "-q").stdout.strip() == b""


def test_corrupted_blob_fails_and_leaves_nothing(daemon, docker, archives, registry):
    docker("load", "-i", archives["layered"])
    target = f"{registry.host}/layered:latest"
    docker("tag", "layered", target)
    out = docker("push", target).stdout.decode()
    digest = next(line for line in out.splitlines() if "digest:" in line).split()[2]
    docker("rmi", target, "layered")
    assert layer_dirs(daemon) == []
    manifest = requests.get(
        f"{registry.url}/v2/layered/manifests/{digest}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    ).json()
    # Corrupt the middle layer in place: same size, one byte flipped near the end.
    victim = registry.blob_path(manifest["layers"][1]["digest"])
    with open(victim, "r+b") as fh:
        data = bytearray(fh.read())
        data[-10] ^= 0xFF
        fh.seek(0)
        fh.write(data)
    proc = docker("pull", target, check=False)
    assert proc.returncode != 0
    err = proc.stderr.decode() + proc.stdout.decode()
    assert "verification failed for digest " + manifest["layers"][1]["digest"] in err or "corrupt" in err, err
    assert docker("images", "-aq").stdout.strip() == b""
    assert layer_dirs(daemon) == []
    assert not os.listdir(os.path.join(daemon.root, "tmp"))


def test_search(daemon, docker, registry):
    proc = docker("search", f"{registry.host}/busybox", check=False)
    assert proc.returncode != 0
    assert f"search is not supported by registry {registry.host}".encode() in proc.stderr
    status, raw = daemon.request("GET", f"/v1.41/images/search?term={registry.host}/x&limit=500")
    assert status == 400 and b"outside the range" in raw


# ---------------------------------------------------------------------------
# crash and the docker CLI's own flows


def test_kill_during_pull_then_restart(workdir, docker_config, registry):
    """kill -9 of the daemon while a 60 MB image downloads; after a restart the same pull completes."""
    image = big_image(60, tags=[f"{registry.host}/big:latest"])
    path = os.path.join(workdir, "big.tar")
    with open(path, "wb") as fh:
        fh.write(docker_archive([image]))
    d = DaemonProcess(os.path.join(workdir, "d"), ["-s", "vfs"]).start()
    try:
        run_docker(d.host, docker_config, "load", "-i", path)
        run_docker(d.host, docker_config, "push", f"{registry.host}/big:latest")
        run_docker(d.host, docker_config, "rmi", f"{registry.host}/big:latest")
        assert layer_dirs(d) == []
        env = dict(os.environ, DOCKER_HOST=d.host, DOCKER_CONFIG=docker_config)
        pull = subprocess.Popen(
            ["docker", "pull", f"{registry.host}/big:latest"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        # Kill once the first layer is registered and others are still coming.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(layer_dirs(d)) < 1:
            time.sleep(0.01)
        d.kill()
        pull.communicate(timeout=30)
        assert pull.returncode != 0
        d.start()
        run_docker(d.host, docker_config, "pull", f"{registry.host}/big:latest")
        doc = json.loads(run_docker(d.host, docker_config, "image", "inspect", f"{registry.host}/big:latest").stdout)
        assert doc[0]["Id"] == image.id
        assert len(layer_dirs(d)) == 3
        assert not [n for n in os.listdir(os.path.join(d.root, "layerdb")) if n.startswith("tmp-")]
    finally:
        d.stop()


def test_docker_run_pulls_missing_image(docker, archives, registry):
    target, _ = push_busybox(docker, archives, registry, name="runme")
    docker("rmi", target, "busybox")
    proc = docker("run", "--rm", target, "echo", "hello from a pulled image")
    assert b"hello from a pulled image" in proc.stdout
    assert f"Unable to find image '{target}' locally".encode() in proc.stderr
    assert b"Pull complete" in proc.stderr or b"Downloaded newer image" in proc.stderr


def test_registry_mirror_serves_docker_hub_names(workdir, docker_config, archives, registry):
    pusher = DaemonProcess(os.path.join(workdir, "pusher"), ["-s", "vfs"]).start()
    try:
        run_docker(pusher.host, docker_config, "load", "-i", archives["busybox"])
        run_docker(pusher.host, docker_config, "tag", "busybox", f"{registry.host}/library/busybox:latest")
        run_docker(pusher.host, docker_config, "push", f"{registry.host}/library/busybox:latest")
    finally:
        pusher.stop()
    d = DaemonProcess(os.path.join(workdir, "mirrored"), ["-s", "vfs", "--registry-mirror", registry.url]).start()
    try:
        info = json.loads(run_docker(d.host, docker_config, "info", "--format", "{{json .RegistryConfig}}").stdout)
        assert info["Mirrors"] == [registry.url + "/"] or info["Mirrors"] == [registry.url]
        out = run_docker(d.host, docker_config, "pull", "busybox").stdout.decode()
        assert "latest: Pulling from library/busybox" in out
        assert "Status: Downloaded newer image for busybox:latest" in out
        assert "docker.io/library/busybox:latest" in out
        doc = json.loads(run_docker(d.host, docker_config, "image", "inspect", "busybox").stdout)[0]
        assert doc["Id"] == busybox_image().id and doc["RepoTags"] == ["busybox:latest"]
        assert doc["RepoDigests"][0].startswith("busybox@sha256:")
    finally:
        d.stop()


# ---------------------------------------------------------------------------
# docker-py and the engine CLI


def test_docker_py_pull_push(daemon, archives, registry):
    client = dockerpy.DockerClient(base_url=daemon.host, version="1.41")
    with open(archives["busybox"], "rb") as fh:
        client.images.load(fh.read())
    image = client.images.get("busybox")
    assert image.tag(f"{registry.host}/py", "v1")
    lines = list(client.api.push(f"{registry.host}/py", tag="v1", stream=True, decode=True))
    aux = [m["aux"] for m in lines if "aux" in m]
    assert aux and aux[0]["Tag"] == "v1" and aux[0]["Digest"].startswith("sha256:")
    client.images.remove(f"{registry.host}/py:v1")
    pulled = client.images.pull(f"{registry.host}/py", tag="v1")
    assert pulled.id == busybox_image().id
    client.close()


def engine_cli(daemon, docker_config, *args, input=None, check=True):
    env = dict(os.environ, DOCKER_CONFIG=docker_config)
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "-H", daemon.host, *args],
        env=env,
        capture_output=True,
        input=input,
        timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()
    return proc


def test_engine_cli_login_push_pull_logout_search(daemon, docker, docker_config, archives, auth_registry):
    docker("load", "-i", archives["busybox"])
    target = f"{auth_registry.host}/cli/busybox:latest"
    docker("tag", "busybox", target)
    proc = engine_cli(
        daemon,
        docker_config,
        "login",
        "-u",
        "alice",
        "--password-stdin",
        auth_registry.host,
        input=b"bad\n",
        check=False,
    )
    assert proc.returncode == 1 and b"unauthorized" in proc.stderr
    proc = engine_cli(
        daemon, docker_config, "login", "-u", "alice", "--password-stdin", auth_registry.host, input=b"s3cret\n"
    )
    assert b"Login Succeeded" in proc.stdout
    with open(os.path.join(docker_config, "config.json")) as fh:
        assert json.load(fh)["auths"][auth_registry.host]["auth"] == base64.b64encode(b"alice:s3cret").decode()
    out = engine_cli(daemon, docker_config, "push", target).stdout.decode()
    assert f"The push refers to repository [{auth_registry.host}/cli/busybox]" in out
    assert "latest: digest: sha256:" in out
    docker("rmi", target, "busybox")
    out = engine_cli(daemon, docker_config, "pull", target).stdout.decode()
    assert "Pull complete" in out and f"Status: Downloaded newer image for {target}" in out
    assert out.strip().splitlines()[-1] == target
    assert engine_cli(daemon, docker_config, "pull", "-q", target).stdout.decode().strip() == target
    out = engine_cli(daemon, docker_config, "logout", auth_registry.host).stdout.decode()
    assert f"Removing login credentials for {auth_registry.host}" in out
    with open(os.path.join(docker_config, "config.json")) as fh:
        assert auth_registry.host not in json.load(fh)["auths"]
    proc = engine_cli(daemon, docker_config, "search", f"{auth_registry.host}/busybox", check=False)
    assert proc.returncode == 1 and b"search is not supported by registry" in proc.stderr
