"""Unit tests for the registry client's parsing: X-Registry-Auth, WWW-Authenticate,
token answers, endpoints and insecure registries, certs.d, manifests and platforms."""

from __future__ import annotations

import base64
import json
import os
import subprocess

import pytest

from engine.client.dockerconfig import encode_header
from engine.errors import InvalidParameter, NotFound, NotSupported
from engine.reference import host_of
from engine.registry import manifest as mf
from engine.registry.auth import AuthConfig, TokenCache, parse_challenges, token_from_response
from engine.registry.endpoints import RegistryService, load_tls_files
from engine.registry.jobs import filter_results, split_search_term
from engine.registry.pull import pull_reference
from engine.registry.session import error_text

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


# X-Registry-Auth


def _b64url(obj: object, pad: bool = True) -> str:
    text = base64.urlsafe_b64encode(json.dumps(obj).encode()).decode()
    return text if pad else text.rstrip("=")


def test_auth_header_decodes_base64url_json_with_or_without_padding():
    doc = {"username": "alice", "password": "p?>>", "serveraddress": "127.0.0.1:5000"}
    for header in (_b64url(doc), _b64url(doc, pad=False), base64.b64encode(json.dumps(doc).encode()).decode()):
        conf = AuthConfig.from_header(header)
        assert (conf.username, conf.password, conf.server_address) == ("alice", "p?>>", "127.0.0.1:5000")
        assert conf.basic() == ("alice", "p?>>") and not conf.anonymous


def test_auth_header_empty_or_garbage_is_anonymous():
    for header in ("", None, "e30=", "not base64!!", base64.urlsafe_b64encode(b"[1,2]").decode()):
        assert AuthConfig.from_header(header).anonymous
    assert encode_header({}) == "e30="


def test_auth_header_identity_token_and_auth_field_and_key_case():
    conf = AuthConfig.from_header(_b64url({"IdentityToken": "refresh-me", "ServerAddress": "r.example"}))
    assert conf.identity_token == "refresh-me" and conf.server_address == "r.example" and not conf.anonymous
    conf = AuthConfig.from_dict({"auth": base64.b64encode(b"bob:pa:ss").decode()})
    assert (conf.username, conf.password) == ("bob", "pa:ss")


# WWW-Authenticate and tokens


def test_parse_bearer_challenge():
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull,push"'
    )
    (challenge,) = parse_challenges(header)
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull,push",
    }


def test_parse_several_challenges_quotes_and_escapes():
    header = 'Basic realm="a \\"quoted\\" realm", Bearer realm=https://t/token, service=reg,error="insufficient_scope"'
    basic, bearer = parse_challenges(header)
    assert basic.scheme == "basic" and basic.params == {"realm": 'a "quoted" realm'}
    assert bearer.params == {"realm": "https://t/token", "service": "reg", "error": "insufficient_scope"}
    assert parse_challenges("") == [] and parse_challenges(None) == []


def test_token_answers():
    assert token_from_response({"token": "t", "expires_in": 300}) == ("t", 300.0, "")
    assert token_from_response({"access_token": "a", "refresh_token": "r"}) == ("a", 60.0, "r")
    with pytest.raises(ValueError):
        token_from_response({"expires_in": 3})


def test_token_cache_expires():
    now = [100.0]
    cache = TokenCache(clock=lambda: now[0])
    cache.put(("k",), "tok", 100)
    assert cache.get(("k",)) == "tok"
    now[0] += 95  # renewed before the server's expiry
    assert cache.get(("k",)) is None


def test_registry_error_text_like_docker():
    class Resp:
        status_code, reason = 404, "Not Found"

        def __init__(self, doc):
            self.doc = doc

        def json(self):
            if self.doc is None:
                raise ValueError
            return self.doc

    doc = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown", "detail": {"Tag": "x"}}]}
    assert error_text(Resp(doc)) == "manifest unknown: manifest unknown"
    assert error_text(Resp(None)) == "received unexpected HTTP status: 404 Not Found"


# endpoints


def test_insecure_by_default_for_loopback_only_and_by_flag():
    service = RegistryService(insecure=["registry.lan:5000", "10.1.0.0/16"])
    assert service.is_insecure("127.0.0.1:5000") and service.is_insecure("localhost:5000")
    assert service.is_insecure("[::1]:5000") and service.is_insecure("127.3.4.5")
    assert service.is_insecure("registry.lan:5000") and service.is_insecure("10.1.2.3:443")
    assert not service.is_insecure("registry.lan:6000") and not service.is_insecure("example.com")
    assert not service.is_insecure("10.2.0.1")


def test_endpoints_https_first_then_http_and_remembered():
    service = RegistryService()
    first, second = service.endpoints("127.0.0.1:5000")
    assert (first.url, first.verify) == ("https://127.0.0.1:5000", False)
    assert second.url == "http://127.0.0.1:5000"
    service.worked(second)
    assert service.endpoints("127.0.0.1:5000")[0].url == "http://127.0.0.1:5000"
    (secure,) = service.endpoints("registry.example.com")
    assert secure.url == "https://registry.example.com" and secure.verify


def test_mirrors_only_for_docker_hub_pulls():
    service = RegistryService(mirrors=["http://127.0.0.1:5555/"])
    pulls = service.endpoints("docker.io")
    assert [e.url for e in pulls] == ["http://127.0.0.1:5555", "https://registry-1.docker.io"]
    assert pulls[0].mirror and not pulls[1].mirror
    assert [e.url for e in service.endpoints("docker.io", pull=False)] == ["https://registry-1.docker.io"]
    assert [e.url for e in service.endpoints("quay.io")] == ["https://quay.io"]
    with pytest.raises(InvalidParameter):
        RegistryService(mirrors=["127.0.0.1:5555"])


def test_host_of_login_addresses():
    assert host_of("https://index.docker.io/v1/") == "docker.io"
    assert host_of("") == "docker.io"
    assert host_of("http://127.0.0.1:5000/v2/") == "127.0.0.1:5000"
    assert host_of("Registry.Example.com:443") == "registry.example.com:443"


def test_certs_d_files(tmp_path):
    host = tmp_path / "reg.example:5000"
    host.mkdir()
    (host / "ca.crt").write_text("x")
    (host / "client.cert").write_text("x")
    (host / "client.key").write_text("x")
    files = load_tls_files(str(tmp_path), "reg.example:5000")
    assert files.ca_files == (str(host / "ca.crt"),)
    assert files.client_cert == str(host / "client.cert") and files.client_key == str(host / "client.key")
    os.unlink(host / "client.key")
    with pytest.raises(InvalidParameter, match="missing key client.key"):
        load_tls_files(str(tmp_path), "reg.example:5000")
    assert load_tls_files(str(tmp_path), "elsewhere").ca_files == ()


def test_certs_d_context_loads_real_material(tmp_path):
    """A CA and a client pair made with openssl load into the SSL context."""
    host = tmp_path / "reg.example"
    host.mkdir()
    for name in ("ca", "client"):
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                f"/CN={name}",
                "-keyout",
                str(host / f"{name}.key"),
                "-out",
                str(host / f"{name}.{'crt' if name == 'ca' else 'cert'}"),
            ],
            check=True,
            capture_output=True,
        )
    os.unlink(host / "ca.key")
    files = load_tls_files(str(tmp_path), "reg.example")
    ctx = files.context()
    assert any(c.get("subject") == ((("commonName", "ca"),),) for c in ctx.get_ca_certs())
    (host / "ca.crt").write_text("not a certificate")
    with pytest.raises(InvalidParameter):
        load_tls_files(str(tmp_path), "reg.example").context()


# references, search terms and filters


def test_pull_reference_tag_digest_and_all_tags():
    assert str(pull_reference("busybox", "latest")) == "docker.io/library/busybox:latest"
    assert str(pull_reference("docker.io/library/busybox", DIGEST)) == f"docker.io/library/busybox@{DIGEST}"
    ref = pull_reference("127.0.0.1:5000/a/b", "")
    assert ref.tag is None and ref.digest is None  # every tag
    assert pull_reference("busybox:1.36", "").tag == "1.36"
    with pytest.raises(InvalidParameter, match="invalid reference format"):
        pull_reference("Bad..Name", "latest")
    with pytest.raises(InvalidParameter):
        pull_reference("busybox", "sha256:short")


def test_search_terms_and_filters():
    assert split_search_term("busybox") == ("docker.io", "busybox")
    assert split_search_term("user/repo") == ("docker.io", "user/repo")
    assert split_search_term("localhost:5000/x") == ("localhost:5000", "x")
    results = [
        {"name": "a", "description": "", "star_count": 10, "is_official": True, "is_automated": False},
        {"name": "b", "description": "", "star_count": 1, "is_official": False, "is_automated": True},
    ]
    assert [r["name"] for r in filter_results(results, {"stars": ["5"]})] == ["a"]
    assert [r["name"] for r in filter_results(results, {"is-automated": ["true"]})] == ["b"]
    assert [r["name"] for r in filter_results(results, {"is-official": ["false"]})] == ["b"]
    with pytest.raises(InvalidParameter, match="invalid filter 'nope'"):
        filter_results(results, {"nope": ["1"]})
    with pytest.raises(InvalidParameter):
        filter_results(results, {"is-official": ["maybe"]})


# manifests


def _manifest(media_type=mf.DOCKER_MANIFEST, **extra):
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": mf.DOCKER_CONFIG, "size": 10, "digest": DIGEST},
        "layers": [{"mediaType": mf.DOCKER_LAYER, "size": 20, "digest": OTHER}],
    }
    doc.update(extra)
    return json.dumps(doc).encode()


def test_parse_image_manifests():
    m = mf.parse_manifest(_manifest(), mf.DOCKER_MANIFEST)
    assert isinstance(m, mf.ImageManifest)
    assert m.config.digest == DIGEST and [d.digest for d in m.layers] == [OTHER]
    # OCI, with the type known only from the document itself.
    m = mf.parse_manifest(_manifest(mf.OCI_MANIFEST), "application/octet-stream")
    assert m.media_type == mf.OCI_MANIFEST


def test_schema1_and_unknown_types_are_not_supported():
    schema1 = json.dumps({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}).encode()
    with pytest.raises(NotSupported, match="schema 1"):
        mf.parse_manifest(schema1, mf.SCHEMA1_SIGNED)
    with pytest.raises(NotSupported, match="schema 1"):
        mf.parse_manifest(schema1, "text/plain")
    with pytest.raises(NotSupported, match="unsupported manifest media type"):
        mf.parse_manifest(json.dumps({"schemaVersion": 2, "mediaType": "application/x-other"}).encode(), "")
    helm = json.loads(_manifest())
    helm["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json"
    with pytest.raises(NotSupported, match="not a container image"):
        mf.parse_manifest(json.dumps(helm).encode(), mf.DOCKER_MANIFEST)
    with pytest.raises(InvalidParameter):
        mf.parse_manifest(b"{not json", mf.DOCKER_MANIFEST)
    bad = json.loads(_manifest())
    bad["layers"][0]["digest"] = "sha256:xyz"
    with pytest.raises(InvalidParameter):
        mf.parse_manifest(json.dumps(bad).encode(), mf.DOCKER_MANIFEST)


def _entry(arch, variant=None, digest=DIGEST, os_name="linux"):
    platform = {"architecture": arch, "os": os_name}
    if variant:
        platform["variant"] = variant
    return mf.Descriptor(mf.DOCKER_MANIFEST, digest, 1, platform=platform)


def test_platform_selection_is_variant_aware():
    entries = [
        _entry("arm", "v6", "sha256:" + "1" * 64),
        _entry("arm", "v7", "sha256:" + "2" * 64),
        _entry("arm64", "v8", "sha256:" + "3" * 64),
        _entry("amd64", None, "sha256:" + "4" * 64),
        _entry("unknown", None, "sha256:" + "5" * 64, os_name="unknown"),
    ]
    pick = lambda text: mf.select_platform(entries, mf.parse_platform(text)).digest[7:8]  # noqa: E731
    assert pick("linux/arm/v7") == "2" and pick("linux/arm/v6") == "1" and pick("linux/arm") == "2"
    assert pick("linux/arm64") == "3" and pick("linux/arm64/v8") == "3" and pick("linux/amd64") == "4"
    assert pick("linux/x86_64") == "4"
    with pytest.raises(NotFound, match="no matching manifest for linux/s390x in the manifest list entries"):
        mf.select_platform(entries, mf.parse_platform("linux/s390x"))
    with pytest.raises(NotFound):
        mf.select_platform(entries, mf.parse_platform("linux/arm/v5"))
    with pytest.raises(InvalidParameter):
        mf.parse_platform("a/b/c/d")


def test_schema2_manifest_bytes_are_dockers():
    body = mf.schema2_manifest(mf.Descriptor(mf.DOCKER_CONFIG, DIGEST, 10), [mf.Descriptor(mf.DOCKER_LAYER, OTHER, 20)])
    assert body.startswith(b'{\n   "schemaVersion": 2,\n   "mediaType": "application/vnd.docker.distribution.manifest')
    assert b'\n   "layers": [\n      {\n         "mediaType"' in body
    assert mf.parse_manifest(body, mf.DOCKER_MANIFEST).layers[0].size == 20
