"""Images through the real docker CLI and docker-py: load, list, inspect, tag,
rmi, save, import, history, prune, bad input; side by side with dockerd."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time

import docker as dockerpy
import pytest

from engine.testing import dockerd as reference
from engine.testing.daemon import DaemonProcess, settled_listdir
from engine.testing.images import (
    BuiltImage,
    big_image,
    busybox_archive,
    busybox_image,
    docker_archive,
    image_config,
    layered_image,
)
from engine.testing.layertar import Entry, make_layer_tar

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    base = tmp_path_factory.mktemp("archives")
    paths = {}
    for name, data in (("busybox", busybox_archive()), ("layered", docker_archive([layered_image()]))):
        path = base / f"{name}.tar"
        path.write_bytes(data)
        paths[name] = str(path)
    return paths


def inspect(docker, name):
    return json.loads(docker("image", "inspect", name).stdout)[0]


def test_load_list_inspect(docker, archives):
    out = docker("load", "-i", archives["busybox"]).stdout.decode()
    assert "Loaded image: busybox:latest" in out
    expected = busybox_image()
    doc = inspect(docker, "busybox")
    assert doc["Id"] == expected.id
    assert doc["RepoTags"] == ["busybox:latest"]
    assert doc["RootFS"]["Layers"] == expected.diff_ids()
    assert doc["Config"]["Cmd"] == ["sh"] and doc["Os"] == "linux"
    assert doc["GraphDriver"]["Name"] == "vfs"
    listing = docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout.decode().split("\n")
    assert f"busybox:latest {expected.id[7:19]}" in listing
    # Every way clients name it resolves to the same image.
    for name in ("busybox:latest", "docker.io/library/busybox", expected.id, expected.id[7:19], expected.id[7:]):
        assert inspect(docker, name)["Id"] == expected.id


def test_history(docker, archives):
    docker("load", "-i", archives["busybox"])
    lines = (
        docker("history", "--no-trunc", "--format", "{{.ID}}|{{.CreatedBy}}", "busybox").stdout.decode().splitlines()
    )
    assert lines[0].startswith(busybox_image().id + "|") and "CMD" in lines[0]
    assert lines[1].startswith("<missing>|") and "ADD file:" in lines[1]


def test_tag_and_rmi_rules(docker, archives):
    docker("load", "-i", archives["busybox"])
    image_id = busybox_image().id
    docker("tag", "busybox", "localhost:5000/team/bb:v1")
    docker("tag", "busybox", "other")
    tags = inspect(docker, image_id)["RepoTags"]
    assert set(tags) == {"busybox:latest", "localhost:5000/team/bb:v1", "other:latest"}
    out = docker("rmi", "localhost:5000/team/bb:v1").stdout.decode()
    assert out.strip() == "Untagged: localhost:5000/team/bb:v1"
    proc = docker("rmi", image_id[7:19], check=False)
    assert proc.returncode != 0
    assert b"(must be forced) - image is referenced in multiple repositories" in proc.stderr
    out = docker("rmi", "-f", image_id[7:19]).stdout.decode()
    assert "Untagged: busybox:latest" in out and "Untagged: other:latest" in out
    assert f"Deleted: {image_id}" in out
    assert docker("images", "-q").stdout.strip() == b""


def test_tag_errors(docker, archives):
    docker("load", "-i", archives["busybox"])
    proc = docker("tag", "nosuchimage", "x", check=False)
    assert proc.returncode != 0 and b"No such image: nosuchimage:latest" in proc.stderr
    proc = docker("tag", "busybox", "Bad_Name", check=False)
    assert proc.returncode != 0 and b"invalid reference format" in proc.stderr


def test_unknown_image_is_404(daemon):
    for path in (
        "/v1.41/images/nosuch/json",
        "/v1.41/images/sha256:" + "0" * 64 + "/json",
        "/v1.41/images/NotLower/json",
    ):
        status, body = daemon.request("GET", path)
        assert status == 404, (path, body)
        assert json.loads(body)["message"].startswith("No such image")


def test_save_round_trip_and_format(docker, archives, tmp_path):
    docker("load", "-i", archives["layered"])
    expected = layered_image()
    out = tmp_path / "saved.tar"
    docker("save", "-o", str(out), "layered")
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))
        index = json.load(tar.extractfile("index.json"))
        repositories = json.load(tar.extractfile("repositories"))
    assert {"manifest.json", "index.json", "oci-layout", "repositories"} <= names
    assert manifest[0]["RepoTags"] == ["layered:latest"]
    assert manifest[0]["Config"] == f"blobs/sha256/{expected.id[7:]}"
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/library/layered:latest"
    assert "layered" in repositories
    for diff in expected.diff_ids():
        assert f"blobs/sha256/{diff[7:]}" in names
    # The saved layers are the original tars: the archive loads back to the same IDs.
    docker("rmi", "layered")
    docker("load", "-i", str(out))
    doc = inspect(docker, "layered")
    assert doc["Id"] == expected.id and doc["RootFS"]["Layers"] == expected.diff_ids()


def test_import_with_changes(docker, tmp_path):
    rootfs = make_layer_tar(
        [Entry.dir("app"), Entry.file("app/run.sh", b"#!/bin/sh\necho hi\n", mode=0o755)], compression="gzip"
    )
    src = tmp_path / "rootfs.tar.gz"
    src.write_bytes(rootfs)
    out = (
        docker(
            "import",
            "-c",
            'CMD ["/app/run.sh"]',
            "-c",
            "ENV A=1 B=two",
            "-c",
            "WORKDIR /app",
            "-c",
            "EXPOSE 80 53/udp",
            "-c",
            "USER nobody",
            "-c",
            "LABEL team=core",
            "-c",
            "VOLUME /data",
            "-c",
            "ENTRYPOINT /bin/sh",
            "-m",
            "made by a test",
            str(src),
            "imported:1",
        )
        .stdout.decode()
        .strip()
    )
    assert out.startswith("sha256:")
    doc = inspect(docker, "imported:1")
    cfg = doc["Config"]
    assert doc["Id"] == out and doc["Comment"] == "made by a test"
    assert cfg["Cmd"] == ["/app/run.sh"] and cfg["Env"] == ["A=1", "B=two"] and cfg["WorkingDir"] == "/app"
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}} and cfg["User"] == "nobody"
    assert cfg["Labels"] == {"team": "core"} and cfg["Volumes"] == {"/data": {}}
    assert cfg["Entrypoint"] == ["/bin/sh", "-c", "/bin/sh"]
    hist = docker("history", "--format", "{{.Comment}}", "imported:1").stdout.decode().split("\n")[0]
    assert hist == "made by a test"
    proc = docker("import", "-c", "RUN rm -rf /", str(src), check=False)
    assert proc.returncode != 0 and b"RUN is not a valid change command" in proc.stderr


def test_import_from_stdin(docker):
    rootfs = make_layer_tar([Entry.file("hello", b"world")])
    out = docker("import", "-", "fromstdin", input=rootfs).stdout.decode().strip()
    assert inspect(docker, "fromstdin")["Id"] == out


def test_prune_dangling(docker, archives):
    docker("load", "-i", archives["busybox"])
    docker("load", "-i", archives["layered"])
    docker("tag", "layered", "keep")
    docker("rmi", "layered")
    assert docker("image", "prune", "-f").stdout.decode().strip() == "Total reclaimed space: 0B"
    # Untagging the last tag leaves nothing dangling (rmi deleted it); make one dangling by re-loading.
    rebuilt = layered_image(tags=())
    path = os.path.join(os.path.dirname(archives["layered"]), "untagged.tar")
    with open(path, "wb") as fh:
        fh.write(
            docker_archive(
                [BuiltImage(rebuilt.layers[:2], rebuilt.config | {"history": rebuilt.config["history"][:2]})]
            )
        )
    docker("load", "-i", path)
    out = docker("image", "prune", "-f").stdout.decode()
    assert "Deleted Images:" in out and "deleted: sha256:" in out
    assert docker("images", "-q", "--filter", "dangling=true").stdout.strip() == b""
    assert inspect(docker, "busybox") and inspect(docker, "keep")


def test_images_filters(daemon, docker, archives):
    docker("load", "-i", archives["busybox"])
    docker("load", "-i", archives["layered"])
    client = dockerpy.APIClient(base_url=daemon.host, version="1.41")
    names = lambda f: sorted(t for i in client.images(filters=f) for t in i["RepoTags"])  # noqa: E731
    assert names({"reference": "busy*"}) == ["busybox:latest"]
    assert names({"dangling": True}) == []
    status, body = daemon.request("GET", '/v1.41/images/json?filters={"nonsense":["x"]}')
    assert status == 400 and b"Invalid filter 'nonsense'" in body
    status, body = daemon.request("GET", '/v1.41/images/json?filters={"reference":{"layered":true}}')
    assert status == 200 and [i["RepoTags"] for i in json.loads(body)] == [["layered:latest"]]


def test_docker_py_load_save_remove(daemon, archives):
    client = dockerpy.DockerClient(base_url=daemon.host, version="auto")
    with open(archives["busybox"], "rb") as fh:
        loaded = client.images.load(fh.read())
    assert [img.id for img in loaded] == [busybox_image().id]
    image = client.images.get("busybox")
    assert image.tags == ["busybox:latest"]
    data = b"".join(image.save(named=True))
    assert tarfile.open(fileobj=io.BytesIO(data)).getmember("manifest.json")
    assert [i.id for i in client.images.list()] == [image.id]
    client.images.remove("busybox")
    with pytest.raises(dockerpy.errors.ImageNotFound):
        client.images.get("busybox")
    client.close()


# bad input


def _store_snapshot(daemon) -> tuple:
    layerdb = os.path.join(daemon.root, "layerdb")
    graph = os.path.join(daemon.root, "graph")
    return (
        sorted(os.listdir(layerdb)),
        sorted(os.listdir(graph)),
        sorted(settled_listdir(os.path.join(daemon.root, "vfs", "dir"))),
    )


def test_corrupt_and_truncated_archives(docker, daemon, archives, tmp_path):
    docker("load", "-i", archives["busybox"])
    before = _store_snapshot(daemon)
    data = open(archives["layered"], "rb").read()
    for name, body in (("truncated", data[: len(data) // 2]), ("garbage", b"this is not a tar" * 100)):
        path = tmp_path / f"{name}.tar"
        path.write_bytes(body)
        proc = docker("load", "-i", str(path), check=False)
        assert proc.returncode != 0, name
        assert _store_snapshot(daemon) == before, name


def test_wrong_layer_digest_in_archive(docker, daemon, archives, tmp_path):
    before = _store_snapshot(daemon)
    image = layered_image()
    tampered = BuiltImage(image.layers, image.config, ["tampered:latest"])
    config = tampered.config_bytes()
    # A layer that does not match the diff ID the config promises.
    evil = BuiltImage(
        [image.layers[0], make_layer_tar([Entry.file("x", b"not what was promised")]), image.layers[2]],
        image.config,
        ["tampered:latest"],
    )
    buf = io.BytesIO(docker_archive([evil]))
    # Rewrite the config to the original diff IDs.
    out = io.BytesIO()
    with tarfile.open(fileobj=buf) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            payload = src.extractfile(member).read() if member.isfile() else None
            if member.name.endswith(".json") and "/" not in member.name and member.name != "manifest.json":
                payload = config
                member.name = tampered.id[7:] + ".json"
                member.size = len(payload)
            if member.name == "manifest.json":
                manifest = json.loads(payload)
                manifest[0]["Config"] = tampered.id[7:] + ".json"
                payload = json.dumps(manifest).encode()
                member.size = len(payload)
            dst.addfile(member, io.BytesIO(payload) if payload is not None else None)
    path = tmp_path / "tampered.tar"
    path.write_bytes(out.getvalue())
    proc = docker("load", "-i", str(path), check=False)
    assert proc.returncode != 0
    assert b"does not match its diff ID" in proc.stderr
    assert _store_snapshot(daemon) == before
    assert docker("images", "-q").stdout.strip() == b""


def test_hostile_layer_writes_nothing_outside(docker, daemon, tmp_path):
    canary = tmp_path / "canary"
    canary.mkdir()
    hostile = [
        [Entry.file("../../../../../../" + str(canary / "pwned-dotdot").lstrip("/"), b"x")],
        [Entry.symlink("escape", str(canary)), Entry.file("escape/pwned-symlink", b"x")],
        [Entry.file("target", b"t"), Entry.hardlink("hl", "../../../../../../" + str(canary / "h").lstrip("/"))],
        [Entry.symlink("dir", "../../../../../../../" + str(canary).lstrip("/")), Entry.file("dir/pwned-parent", b"x")],
    ]
    for n, entries in enumerate(hostile):
        image = BuiltImage([make_layer_tar(entries)], image_config(["x"], [{"created_by": "evil"}]), [f"evil:{n}"])
        path = tmp_path / f"evil{n}.tar"
        path.write_bytes(docker_archive([image]))
        docker("load", "-i", str(path), check=False)
    assert os.listdir(canary) == []


def test_disk_full_during_load_leaves_store_as_it_was(workdir, docker_config):
    """The daemon root on a 16 MB tmpfs; a 60 MB image does not fit."""
    root = os.path.join(workdir, "small")
    os.makedirs(root)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", root], check=True)
    try:
        d = DaemonProcess(os.path.join(root, "d"), ["-s", "vfs"]).start()
        try:
            big = os.path.join(workdir, "big.tar")
            with open(big, "wb") as fh:
                fh.write(docker_archive([big_image(60)]))
            env = dict(os.environ, DOCKER_HOST=d.host, DOCKER_CONFIG=docker_config)
            proc = subprocess.run(["docker", "load", "-i", big], env=env, capture_output=True, timeout=300)
            assert proc.returncode != 0
            assert b"no space left on device" in proc.stderr.lower()
            assert os.listdir(os.path.join(d.root, "layerdb")) == []
            assert os.listdir(os.path.join(d.root, "graph")) == []
            assert os.listdir(os.path.join(d.root, "tmp")) == []
            proc = subprocess.run(["docker", "images", "-q"], env=env, capture_output=True)
            assert proc.stdout.strip() == b""
        finally:
            d.stop()
    finally:
        subprocess.run(["umount", "-l", root], check=False)


def test_kill_during_load_then_restart(workdir, docker_config):
    d = DaemonProcess(os.path.join(workdir, "d"), ["-s", "vfs"]).start()
    big = os.path.join(workdir, "big.tar")
    with open(big, "wb") as fh:
        fh.write(docker_archive([big_image(60)]))
    env = dict(os.environ, DOCKER_HOST=d.host, DOCKER_CONFIG=docker_config)
    loader = subprocess.Popen(["docker", "load", "-i", big], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    layerdb = os.path.join(d.root, "layerdb")
    deadline = time.monotonic() + 60
    # Kill the master and the worker once the first layer is being registered.
    while time.monotonic() < deadline and not any(n.startswith("tmp-") for n in os.listdir(layerdb)):
        time.sleep(0.01)
    d.kill()
    loader.wait(30)
    d.proc = None
    d2 = DaemonProcess(os.path.join(workdir, "d"), ["-s", "vfs"]).start()
    try:
        assert not [n for n in os.listdir(layerdb) if n.startswith("tmp-")]
        assert os.listdir(layerdb) == [] and os.listdir(os.path.join(d2.root, "graph")) == []
        proc = subprocess.run(["docker", "load", "-i", big], env=env, capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert b"Loaded image: big:latest" in proc.stdout
    finally:
        d2.stop()


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


def test_same_archive_same_ids_as_dockerd(daemon, dockerd, archives, docker_config):
    for path in archives.values():
        for host in (daemon.host, dockerd.host):
            run_docker(host, docker_config, "load", "-i", path)
    fmt = "{{.Id}} {{json .RepoTags}} {{json .RootFS.Layers}} {{.Size}}"
    for name in ("busybox", "layered"):
        ours = run_docker(daemon.host, docker_config, "image", "inspect", "--format", fmt, name).stdout
        theirs = run_docker(dockerd.host, docker_config, "image", "inspect", "--format", fmt, name).stdout
        assert ours == theirs


def test_save_here_load_there_and_back(daemon, dockerd, archives, docker_config, tmp_path):
    run_docker(daemon.host, docker_config, "load", "-i", archives["layered"])
    ours = tmp_path / "ours.tar"
    run_docker(daemon.host, docker_config, "save", "-o", str(ours), "layered")
    run_docker(dockerd.host, docker_config, "load", "-i", str(ours))
    theirs = tmp_path / "theirs.tar"
    run_docker(dockerd.host, docker_config, "save", "-o", str(theirs), "layered")
    run_docker(daemon.host, docker_config, "rmi", "layered")
    run_docker(daemon.host, docker_config, "load", "-i", str(theirs))
    fmt = "{{.Id}} {{json .RepoTags}} {{json .RootFS.Layers}}"
    assert (
        run_docker(daemon.host, docker_config, "image", "inspect", "--format", fmt, "layered").stdout
        == run_docker(dockerd.host, docker_config, "image", "inspect", "--format", fmt, "layered").stdout
    )
    assert (
        json.loads(run_docker(daemon.host, docker_config, "image", "inspect", "layered").stdout)[0]["Id"]
        == layered_image().id
    )
