"""The pull against a scripted fake registry, into a real graph on the vfs driver:
resume after a dropped connection, registries that ignore Range, truncated and
corrupt blobs, 503s, bearer tokens, manifest lists, tag pagination, schema 1."""

from __future__ import annotations

import gzip
import json
import os
import random

import pytest
from fakeregistry import FakeRegistry, digest_of

from engine import reference as refs
from engine.errors import NotFound, NotSupported, RegistryError
from engine.graph.graph import Graph
from engine.registry import manifest as mf
from engine.registry.auth import AuthConfig
from engine.registry.endpoints import RegistryService
from engine.registry.metadata import DistributionMetadata
from engine.registry.pull import Puller
from engine.testing.images import BuiltImage, image_config
from engine.testing.layertar import Entry, make_layer_tar
from engine.utils.progress import Progress
from engine_graph_vfs.driver import VfsDriver

pytestmark = pytest.mark.root("the vfs driver keeps owners")


@pytest.fixture
def fake():
    server = FakeRegistry().start()
    yield server
    server.stop()


@pytest.fixture
def graph(tmp_path):
    driver = VfsDriver(str(tmp_path / "vfs"))
    g = Graph(str(tmp_path), driver)
    yield g
    driver.cleanup()


def big_layer(seed: int, size: int = 3_000_000) -> bytes:
    rng = random.Random(seed)
    return make_layer_tar([Entry.dir(f"d{seed}", mtime=0), Entry.file(f"d{seed}/data", rng.randbytes(size), mtime=0)])


def small_layer(name: str) -> bytes:
    return make_layer_tar([Entry.file(name, name.encode() * 10, mtime=0)])


def make_image(layers: list[bytes]) -> BuiltImage:
    return BuiltImage(layers, image_config(["/bin/true"], [{"created_by": f"l{i}"} for i in range(len(layers))]))


def publish(fake: FakeRegistry, repo: str, tag: str, image: BuiltImage) -> tuple[str, list[str]]:
    """Put an image in the fake; (manifest digest, layer blob digests)."""
    blobs = [gzip.compress(layer, mtime=0) for layer in image.layers]
    layer_digests = [fake.add_blob(b) for b in blobs]
    config = image.config_bytes()
    fake.add_blob(config)
    body = mf.schema2_manifest(
        mf.Descriptor(mf.DOCKER_CONFIG, digest_of(config), len(config)),
        [mf.Descriptor(mf.DOCKER_LAYER, d, len(b)) for d, b in zip(layer_digests, blobs)],
    )
    return fake.add_manifest(repo, tag, mf.DOCKER_MANIFEST, body), layer_digests


class Recorder:
    def __init__(self) -> None:
        self.lines: list[dict] = []

    def write(self, data: bytes) -> None:
        self.lines.append(json.loads(data))

    def statuses(self, ident: str | None = None) -> list[str]:
        return [m.get("status", "") for m in self.lines if ident is None or m.get("id") == ident]


def make_puller(graph: Graph, tmp_path, auth: AuthConfig | None = None, platform=None) -> tuple[Puller, Recorder]:
    rec = Recorder()
    service = RegistryService(backoff=0.01, read_timeout=10)
    puller = Puller(
        graph,
        service,
        DistributionMetadata(str(tmp_path)),
        Progress(rec.write, interval=0),
        auth or AuthConfig(),
        platform,
    )
    return puller, rec


def assert_empty(graph: Graph) -> None:
    assert list(graph) == [] and graph.layers.all() == []
    assert graph.tags.repositories() == {}


def test_pull_registers_image_tag_and_repo_digest(fake, graph, tmp_path):
    image = make_image([small_layer("a"), small_layer("b")])
    digest, blobs = publish(fake, "team/app", "v1", image)
    puller, rec = make_puller(graph, tmp_path)
    ref = refs.parse(f"{fake.host}/team/app:v1")
    lines = puller.pull(ref)
    assert lines == [f"Digest: {digest}", f"Status: Downloaded newer image for {fake.host}/team/app:v1"]
    doc = graph.inspect(graph.lookup(str(ref)))
    assert doc["Id"] == image.id and doc["RepoTags"] == [f"{fake.host}/team/app:v1"]
    assert doc["RepoDigests"] == [f"{fake.host}/team/app@{digest}"]
    assert rec.lines[0] == {"status": "Pulling from team/app", "id": "v1"}
    for blob in blobs:
        seen = rec.statuses(blob[7:19])
        assert seen[0] == "Pulling fs layer" and seen[-1] == "Pull complete"
        assert "Download complete" in seen and "Extracting" in seen
    # The metadata push needs: diff ID -> blob.
    meta = DistributionMetadata(str(tmp_path))
    assert meta.sources(image.diff_ids()[0])[0].digest == blobs[0]
    # Again: nothing downloaded.
    gets = len(fake.log)
    puller, rec = make_puller(graph, tmp_path)
    assert puller.pull(ref)[-1] == f"Status: Image is up to date for {fake.host}/team/app:v1"
    assert not [entry for entry in fake.log[gets:] if "/blobs/" in entry[1]]


def test_dropped_connection_resumes_with_range(fake, graph, tmp_path):
    image = make_image([big_layer(1), big_layer(2)])
    _, blobs = publish(fake, "app", "latest", image)
    fake.script.drop_after[blobs[1]] = [700_000, 400_000]
    puller, rec = make_puller(graph, tmp_path)
    puller.pull(refs.parse(f"{fake.host}/app:latest"))
    assert graph.lookup(f"{fake.host}/app:latest").id == image.id
    ranges = [h.get("Range") for h in fake.blob_gets(blobs[1])]
    assert ranges == [None, "bytes=700000-", "bytes=1100000-"]
    assert "Retrying in 1 second" in rec.statuses(blobs[1][7:19])


def test_registry_ignoring_range_restarts_the_download(fake, graph, tmp_path):
    image = make_image([big_layer(3)])
    _, blobs = publish(fake, "app", "latest", image)
    fake.script.drop_after[blobs[0]] = [500_000]
    fake.script.ignore_range = True
    puller, _ = make_puller(graph, tmp_path)
    puller.pull(refs.parse(f"{fake.host}/app:latest"))
    assert graph.lookup(f"{fake.host}/app:latest").id == image.id
    assert len(fake.blob_gets(blobs[0])) == 2


def test_corrupt_blob_fails_and_leaves_nothing(fake, graph, tmp_path):
    image = make_image([small_layer("ok"), big_layer(4), small_layer("after")])
    _, blobs = publish(fake, "app", "latest", image)
    data = bytearray(fake.blobs[blobs[1]])
    data[-20] ^= 0xFF  # same size, wrong content
    fake.blobs[blobs[1]] = bytes(data)
    puller, _ = make_puller(graph, tmp_path)
    with pytest.raises(Exception, match=f"verification failed for digest {blobs[1]}|corrupt|diff ID"):
        puller.pull(refs.parse(f"{fake.host}/app:latest"))
    assert_empty(graph)
    assert not [n for n in os.listdir(graph.layers.dir) if n.startswith("tmp-")]


def test_truncated_blob_fails_clearly(fake, graph, tmp_path):
    image = make_image([big_layer(5)])
    _, blobs = publish(fake, "app", "latest", image)
    fake.blobs[blobs[0]] = fake.blobs[blobs[0]][:-1000]
    puller, _ = make_puller(graph, tmp_path)
    with pytest.raises(RegistryError, match=f"downloading layer {blobs[0][7:19]} failed"):
        puller.pull(refs.parse(f"{fake.host}/app:latest"))
    assert_empty(graph)


def test_a_failed_download_stops_the_others(fake, graph, tmp_path):
    image = make_image([big_layer(6), big_layer(7), big_layer(8), big_layer(9)])
    _, blobs = publish(fake, "app", "latest", image)
    fake.script.drop_after[blobs[3]] = [10] * 10  # never gets through
    puller, rec = make_puller(graph, tmp_path)
    with pytest.raises(RegistryError, match="failed after 5 attempts"):
        puller.pull(refs.parse(f"{fake.host}/app:latest"))
    assert_empty(graph)
    assert rec.statuses(blobs[3][7:19])[:2] == ["Pulling fs layer", "Waiting"]


def test_503_is_retried(fake, graph, tmp_path):
    image = make_image([small_layer("x")])
    publish(fake, "app", "latest", image)
    fake.script.unavailable = 2
    puller, _ = make_puller(graph, tmp_path)
    puller.pull(refs.parse(f"{fake.host}/app:latest"))
    assert graph.lookup(f"{fake.host}/app:latest").id == image.id


def test_bearer_token_flow(fake, graph, tmp_path):
    image = make_image([small_layer("t")])
    publish(fake, "private/app", "latest", image)
    fake.script.bearer = True
    fake.script.token_user = ("alice", "pw")
    puller, _ = make_puller(graph, tmp_path)
    with pytest.raises(NotFound, match="pull access denied for .*incorrect username or password"):
        puller.pull(refs.parse(f"{fake.host}/private/app:latest"))
    assert_empty(graph)
    puller, _ = make_puller(graph, tmp_path, auth=AuthConfig(username="alice", password="pw"))
    puller.pull(refs.parse(f"{fake.host}/private/app:latest"))
    assert graph.lookup(f"{fake.host}/private/app:latest").id == image.id
    query = fake.token_requests[-1]
    assert query["scope"] == ["repository:private/app:pull"] and query["service"] == ["fake"]
    assert query["account"] == ["alice"]
    # One token for the whole pull (manifest, config, layer), from the cache.
    assert len(fake.token_requests) == 1


def test_basic_auth_without_credentials(fake, graph, tmp_path):
    publish(fake, "app", "latest", make_image([small_layer("b")]))
    fake.script.basic = ("bob", "pw")
    puller, _ = make_puller(graph, tmp_path)
    with pytest.raises(RegistryError, match="no basic auth credentials"):
        puller.pull(refs.parse(f"{fake.host}/app:latest"))
    puller, _ = make_puller(graph, tmp_path, auth=AuthConfig(username="bob", password="pw"))
    puller.pull(refs.parse(f"{fake.host}/app:latest"))


def test_schema1_is_refused_before_any_download(fake, graph, tmp_path):
    body = json.dumps({"schemaVersion": 1, "name": "old", "tag": "latest", "fsLayers": [], "history": []}).encode()
    fake.add_manifest("old", "latest", mf.SCHEMA1_SIGNED, body)
    puller, rec = make_puller(graph, tmp_path)
    with pytest.raises(NotSupported, match="schema 1"):
        puller.pull(refs.parse(f"{fake.host}/old:latest"))
    assert rec.lines == []
    assert_empty(graph)


def test_unknown_tag_says_what_docker_says(fake, graph, tmp_path):
    puller, _ = make_puller(graph, tmp_path)
    with pytest.raises(NotFound, match=f"manifest for {fake.host}/nope:latest not found: manifest unknown"):
        puller.pull(refs.parse(f"{fake.host}/nope:latest"))


def test_manifest_list_picks_our_platform_and_records_the_list_digest(fake, graph, tmp_path):
    ours = make_image([small_layer("amd64")])
    other = make_image([small_layer("arm64")])
    ours_digest, _ = publish(fake, "multi", "amd64-only", ours)
    other_digest, _ = publish(fake, "multi", "arm64-only", other)
    size = {d: len(fake.manifests[("multi", d)][1]) for d in (ours_digest, other_digest)}
    index = {
        "schemaVersion": 2,
        "mediaType": mf.OCI_INDEX,
        "manifests": [
            {
                "mediaType": mf.DOCKER_MANIFEST,
                "digest": other_digest,
                "size": size[other_digest],
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
            },
            {
                "mediaType": mf.DOCKER_MANIFEST,
                "digest": ours_digest,
                "size": size[ours_digest],
                "platform": {"os": "linux", "architecture": "amd64"},
            },
        ],
    }
    index_digest = fake.add_manifest("multi", "latest", mf.OCI_INDEX, json.dumps(index).encode())
    puller, _ = make_puller(graph, tmp_path)
    puller.pull(refs.parse(f"{fake.host}/multi:latest"))
    image = graph.lookup(f"{fake.host}/multi:latest")
    assert image.id == ours.id
    assert graph.tags.repo_digests(image.id) == [f"{fake.host}/multi@{index_digest}"]
    from engine.registry.manifest import Platform

    puller, _ = make_puller(graph, tmp_path, platform=Platform("linux", "arm64", "v8"))
    with pytest.raises(NotFound, match="does not match the specified platform"):
        puller.pull(refs.parse(f"{fake.host}/multi:latest"))  # the arm64 entry's config says amd64


def test_all_tags_with_pagination_and_shared_layers(fake, graph, tmp_path):
    base = small_layer("base")
    images = {tag: make_image([base, small_layer(tag)]) for tag in ("a", "b", "c")}
    for tag, image in images.items():
        publish(fake, "repo", tag, image)
    fake.script.page = 1
    puller, rec = make_puller(graph, tmp_path)
    lines = puller.pull(refs.parse(f"{fake.host}/repo"))
    assert lines == [f"Status: Downloaded newer image for {fake.host}/repo"]
    for tag, image in images.items():
        assert graph.lookup(f"{fake.host}/repo:{tag}").id == image.id
    assert rec.statuses().count("Already exists") == 2  # the base layer, for b and c
    assert len([s for s in rec.statuses() if s.startswith("Digest: ")]) == 3
