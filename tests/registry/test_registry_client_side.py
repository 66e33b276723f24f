"""Push's deterministic gzip, the distribution metadata store, and the CLI's config.json handling."""

from __future__ import annotations

import base64
import gzip
import json
import os

from engine.client import dockerconfig
from engine.registry.auth import AuthConfig
from engine.registry.metadata import BlobSource, DistributionMetadata
from engine.registry.push import GzipStream, compress_layer


def test_gzip_is_deterministic_and_round_trips():
    data = os.urandom(3_000_000) + b"compressible " * 200_000
    chunks = [data[i : i + 70_000] for i in range(0, len(data), 70_000)]
    blob, digest = compress_layer(chunks)
    again, digest2 = compress_layer([data])  # other chunking, same bytes out
    assert digest == digest2 and blob == again
    assert gzip.decompress(blob) == data
    assert blob[4:8] == b"\0\0\0\0"  # gzip MTIME is zero
    seen = []
    stream = GzipStream(chunks, seen.append)
    assert b"".join(stream) == blob and stream.size == len(blob) and stream.digest == digest
    assert seen[-1] == len(data) and seen == sorted(seen)


def test_distribution_metadata(tmp_path):
    meta = DistributionMetadata(str(tmp_path))
    diff = "sha256:" + "d" * 64
    one = BlobSource("sha256:" + "1" * 64, "127.0.0.1:5000/a", "application/vnd.docker.image.rootfs.diff.tar.gzip")
    two = BlobSource("sha256:" + "2" * 64, "127.0.0.1:5000/b")
    meta.add(diff, one)
    meta.add(diff, two)
    meta.add(diff, one)  # known again: moves to the front, not duplicated
    assert meta.sources(diff) == [one, two]
    assert one.domain == "127.0.0.1:5000"
    assert DistributionMetadata(str(tmp_path)).diff_id(two.digest) == diff
    assert meta.sources("sha256:" + "e" * 64) == [] and meta.diff_id("bogus") is None
    meta.add("not-a-digest", one)  # ignored, never raises


def test_config_json_login_and_logout(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "cfg"))
    assert dockerconfig.auth_header("127.0.0.1:5000") == "e30="
    path = dockerconfig.store("http://127.0.0.1:5000/v2/", "alice", "s3:cret")
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    doc = json.load(open(path))
    assert doc == {"auths": {"127.0.0.1:5000": {"auth": base64.b64encode(b"alice:s3:cret").decode()}}}
    conf = AuthConfig.from_header(dockerconfig.auth_header("127.0.0.1:5000"))
    assert (conf.username, conf.password, conf.server_address) == ("alice", "s3:cret", "127.0.0.1:5000")
    dockerconfig.store("", "bob", "pw", identity_token="tok")  # Docker Hub
    conf = AuthConfig.from_header(dockerconfig.auth_header("docker.io"))
    assert conf.identity_token == "tok" and conf.server_address == "https://index.docker.io/v1/"
    # Other keys of the file survive.
    doc = json.load(open(path))
    doc["credsStore"] = "none"
    json.dump(doc, open(path, "w"))
    assert dockerconfig.erase("127.0.0.1:5000") and not dockerconfig.erase("127.0.0.1:5000")
    assert json.load(open(path))["credsStore"] == "none"
    assert dockerconfig.auth_header("127.0.0.1:5000") == "e30="
