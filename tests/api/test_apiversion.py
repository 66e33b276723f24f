"""The request's API version reaches the jobs it runs (engine.apiversion), through falcon.testing."""

from __future__ import annotations

import falcon.testing
import pytest

from engine import apiversion, builtins
from engine.api.app import create_app
from engine.core import Engine
from engine.errors import InvalidParameter
from engine.utils.gojson import fold_keys


@pytest.fixture
def seen():
    return []


@pytest.fixture
def client(seen):
    eng = Engine()
    builtins.engine_register_jobs(engine=eng, daemon=None)

    def record(job):
        seen.append(apiversion.of_job(job))
        job.write_json([])

    eng.register("containers", record)
    return falcon.testing.TestClient(create_app(eng))


@pytest.mark.parametrize("path,version", [("/v1.41/containers/json", "1.41"), ("/containers/json", "1.45")])
def test_the_job_gets_the_request_version(client, seen, path, version):
    assert client.simulate_get(path).status_code == 200
    assert seen == [version]


def test_each_request_its_own_version(client, seen):
    for path in ("/v1.24/containers/json", "/containers/json", "/v1.43/containers/json"):
        client.simulate_get(path)
    assert seen == ["1.24", "1.45", "1.43"]


def test_comparisons_are_moby_s():
    assert apiversion.before("1.41", "1.42") and not apiversion.before("1.42", "1.42")
    assert apiversion.at_least("1.45", "1.44") and apiversion.at_least("1.9", "1.9")
    assert apiversion.before("1.9", "1.10")  # numbers, not strings
    assert apiversion.parse("junk") == (0, 0)


def test_fold_keys_as_go_decodes():
    fields = ("DetachKeys", "Tty")
    assert fold_keys({"detachKeys": "ctrl-p", "tty": True}, fields) == {"DetachKeys": "ctrl-p", "Tty": True}
    # An exact match wins over another spelling, whichever comes first.
    assert fold_keys({"tty": False, "Tty": True}, fields) == {"Tty": True}
    assert fold_keys({"Tty": True, "TTY": False}, fields) == {"Tty": True}
    assert fold_keys({"Other": 1}, fields) == {"Other": 1}


# the version history applied to requests and answers (moby's docs/api/version-history.md)
def test_create_drops_what_an_older_version_did_not_have():
    config = {"Healthcheck": {"Test": ["CMD", "true"], "StartInterval": 5}}
    hc = {"ConsoleSize": [10, 20], "Annotations": {"a": "b"}, "KernelMemory": 1 << 20, "PidsLimit": 0}
    assert apiversion.adapt_create("1.41", config, hc, {}) == []
    assert "ConsoleSize" not in hc and "Annotations" not in hc and "StartInterval" not in config["Healthcheck"]
    assert hc["KernelMemory"] == 1 << 20  # still read before 1.42
    assert hc["PidsLimit"] is None
    hc = {"ConsoleSize": [10, 20], "Annotations": {"a": "b"}, "KernelMemory": 1 << 20}
    apiversion.adapt_create("1.45", {}, hc, {})
    assert hc == {"ConsoleSize": [10, 20], "Annotations": {"a": "b"}}


def test_create_checks_mount_options_from_1_42():
    def mounts():
        return {"Mounts": [{"Type": "bind", "Source": "/tmp", "Target": "/x", "VolumeOptions": {"NoCopy": True}}]}

    hc = mounts()
    apiversion.adapt_create("1.41", {}, hc, {})
    assert "VolumeOptions" not in hc["Mounts"][0]
    with pytest.raises(InvalidParameter, match='VolumeOptions must not be specified on mount type "bind"'):
        apiversion.adapt_create("1.42", {}, mounts(), {})
    subpath = {"Mounts": [{"Type": "volume", "Source": "v", "Target": "/x", "VolumeOptions": {"Subpath": "a"}}]}
    with pytest.raises(InvalidParameter, match="Subpath needs API v1.45"):
        apiversion.adapt_create("1.44", {}, subpath, {})


def test_create_refuses_several_networks_before_1_44():
    networking = {"EndpointsConfig": {"a": {}, "b": {}}}
    with pytest.raises(InvalidParameter, match="multiple network endpoints: a, b"):
        apiversion.adapt_create("1.43", {}, {}, networking)
    apiversion.adapt_create("1.44", {}, {}, networking)


def test_mac_address_moves_between_config_and_endpoint():
    networking: dict = {}
    assert apiversion.adapt_create("1.41", {"MacAddress": "02:42:ac:11:00:09"}, {}, networking) == []
    assert networking == {"EndpointsConfig": {"bridge": {"MacAddress": "02:42:ac:11:00:09"}}}
    config = {"MacAddress": "02:42:ac:11:00:09"}
    warnings = apiversion.adapt_create("1.44", config, {"NetworkMode": "default"}, {})
    assert warnings and "deprecated" in warnings[0]
    # From the endpoint (the CLI's --mac-address at 1.44+) to the config the bridge driver reads.
    config = {}
    networking = {"EndpointsConfig": {"bridge": {"MacAddress": "02:42:ac:11:00:0a"}}}
    apiversion.adapt_create("1.45", config, {"NetworkMode": "bridge"}, networking)
    assert config["MacAddress"] == "02:42:ac:11:00:0a"
    with pytest.raises(InvalidParameter, match="mac-address and the network mode"):
        apiversion.adapt_create("1.41", {"MacAddress": "02:42:ac:11:00:09"}, {"NetworkMode": "host"}, {})


def test_answers_as_each_version_shows_them():
    def doc():
        return {
            "Id": "0123456789abcdef",
            "HostConfig": {"KernelMemory": 0, "KernelMemoryTCP": 0},
            "Config": {"Hostname": "h", "Healthcheck": {"Test": ["NONE"], "StartInterval": 0}},
            "NetworkSettings": {"Networks": {"bridge": {"Aliases": None}, "mynet": {"Aliases": ["web"]}}},
        }

    old = apiversion.container_json("1.41", doc())
    assert old["HostConfig"] == {"KernelMemory": 0, "KernelMemoryTCP": 0}
    assert "DNSNames" not in old["NetworkSettings"]["Networks"]["bridge"]
    assert old["NetworkSettings"]["Networks"]["mynet"]["Aliases"] == ["web", "0123456789ab", "h"]
    new = apiversion.container_json("1.45", doc())
    assert new["HostConfig"] == {} and new["NetworkSettings"]["Networks"]["bridge"]["DNSNames"] is None
    assert new["NetworkSettings"]["Networks"]["mynet"]["Aliases"] == ["web"]
    image = {"RepoTags": ["<none>:<none>"], "RepoDigests": ["<none>@<none>"], "VirtualSize": 1, "Size": 1}
    assert apiversion.image_summary("1.41", dict(image)) == image
    assert apiversion.image_summary("1.44", dict(image)) == {"RepoTags": [], "RepoDigests": [], "Size": 1}
    inspect = {"Container": "", "ContainerConfig": {}, "VirtualSize": 1, "Created": "0001-01-01T00:00:00Z"}
    assert apiversion.image_json("1.45", dict(inspect)) == {}
    assert apiversion.info("1.41", {"KernelMemory": False}) == {"KernelMemory": False}
    assert apiversion.info("1.44", {"KernelMemory": False}) == {"CDISpecDirs": []}
    assert apiversion.disk_usage("1.41", {"Images": []})["BuilderSize"] == 0
