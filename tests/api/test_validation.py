"""The API's validation layer (engine.api.validation) through falcon.testing: what issue 14 item 5
lists is a 400 naming the field, and what the docker CLI and docker-py send passes unchanged (the
daemon side, where nothing may be stored, is in tests/integration/test_security.py)."""

from __future__ import annotations

import json

import falcon
import falcon.testing
import pytest

from engine.api import contenttype, errors, middleware, validation
from engine.api.base import read_json
from engine.api.validation import schema
from engine.utils import cpuset


class Capture:
    """Answers with the body the resource got from read_json."""

    def on_post(self, req, resp, **params):
        resp.media = {"body": read_json(req, required=False, default="none")}

    on_get = on_delete = on_put = on_post


@pytest.fixture
def client():
    app = falcon.App(
        middleware=[middleware.VersionMiddleware(), contenttype.JSONBodyMiddleware(), validation.RequestValidation()]
    )
    errors.install(app)
    capture = Capture()
    for route in (
        "/containers/create",
        "/containers/{id}/update",
        "/containers/{id}/exec",
        "/containers/{id}/stop",
        "/containers/{id}/logs",
        "/containers/{id}/wait",
        "/containers/json",
        "/volumes/create",
        "/volumes/{name}",
        "/networks/create",
        "/networks/{id}/connect",
        "/exec/{id}/start",
        "/images/create",
        "/commit",
        "/system/df",
        "/build",
    ):
        app.add_route(route, capture)
    return falcon.testing.TestClient(app)


def post(client, path, body, raw=False):
    data = body if raw else json.dumps(body)
    return client.simulate_post(path, body=data, headers={"Content-Type": "application/json"})


#: What the docker CLI 28 sends for `docker run -it --name x -p 80:80 -v /a:/b busybox sh` (trimmed)
CLI_CREATE = {
    "Hostname": "",
    "Domainname": "",
    "User": "",
    "AttachStdin": True,
    "AttachStdout": True,
    "AttachStderr": True,
    "ExposedPorts": {"80/tcp": {}},
    "Tty": True,
    "OpenStdin": True,
    "StdinOnce": True,
    "Env": None,
    "Cmd": ["sh"],
    "Image": "busybox",
    "Volumes": None,
    "WorkingDir": "",
    "Entrypoint": None,
    "OnBuild": None,
    "Labels": {},
    "HostConfig": {
        "Binds": ["/a:/b"],
        "ContainerIDFile": "",
        "LogConfig": {"Type": "", "Config": {}},
        "NetworkMode": "bridge",
        "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "80"}]},
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "AutoRemove": False,
        "VolumeDriver": "",
        "VolumesFrom": None,
        "ConsoleSize": [40, 120],
        "CapAdd": None,
        "CapDrop": None,
        "CgroupnsMode": "",
        "Dns": [],
        "DnsOptions": [],
        "DnsSearch": [],
        "ExtraHosts": None,
        "GroupAdd": None,
        "IpcMode": "",
        "Cgroup": "",
        "Links": None,
        "OomScoreAdj": 0,
        "PidMode": "",
        "Privileged": False,
        "PublishAllPorts": False,
        "ReadonlyRootfs": False,
        "SecurityOpt": None,
        "UTSMode": "",
        "UsernsMode": "",
        "ShmSize": 0,
        "Isolation": "",
        "CpuShares": 0,
        "Memory": 0,
        "NanoCpus": 0,
        "CgroupParent": "",
        "BlkioWeight": 0,
        "BlkioWeightDevice": [],
        "CpusetCpus": "",
        "CpusetMems": "",
        "Devices": [],
        "DeviceCgroupRules": None,
        "DeviceRequests": None,
        "MemoryReservation": 0,
        "MemorySwap": 0,
        "MemorySwappiness": None,
        "OomKillDisable": None,
        "PidsLimit": None,
        "Ulimits": [],
        "MaskedPaths": None,
        "ReadonlyPaths": None,
    },
    "NetworkingConfig": {"EndpointsConfig": {"bridge": {"IPAMConfig": None, "Links": None, "Aliases": None}}},
}


def test_the_clis_create_passes_unchanged(client):
    resp = post(client, "/v1.41/containers/create", CLI_CREATE)
    assert resp.status_code == 200, resp.json
    assert resp.json["body"] == CLI_CREATE


def test_older_clients_values_pass(client):
    # -1 is "unset" for MemorySwappiness in dockerd; log drivers beyond the description's enum.
    body = {"Image": "busybox", "HostConfig": {"MemorySwappiness": -1, "LogConfig": {"Type": "local"}}}
    assert post(client, "/containers/create", body).status_code == 200


@pytest.mark.parametrize(
    "body, message",
    [
        ({"Image": "b", "Labels": {"a": 1}}, 'invalid Labels["a"]: want a string, got a number'),
        ({"Image": "b", "Labels": {"a": None}}, 'invalid Labels["a"]: want a value, got null'),
        ({"Image": "b", "Labels": ["a=b"]}, "invalid Labels: want an object, got an array"),
        ({"Image": "b", "HostConfig": []}, "invalid HostConfig: want an object, got an array"),
        (
            {"Image": "b", "HostConfig": {"CpuShares": "512"}},
            "invalid HostConfig.CpuShares: want an integer, got a string",
        ),
        (
            {"Image": "b", "HostConfig": {"Memory": 2**63}},
            f"invalid HostConfig.Memory: {2**63} is out of range for int64",
        ),
        ({"Image": "b", "HostConfig": {"Memory": 1.5}}, "invalid HostConfig.Memory: want an integer, got a fraction"),
        (
            {"Image": "b", "HostConfig": {"Privileged": "yes"}},
            "invalid HostConfig.Privileged: want a boolean, got a string",
        ),
        (
            {"Image": "b", "HostConfig": {"BlkioWeight": 1001}},
            "invalid HostConfig.BlkioWeight: 1001 is more than the maximum, 1000",
        ),
        ({"Image": "b", "HostConfig": {"ShmSize": -1}}, "invalid HostConfig.ShmSize: -1 is less than the minimum, 0"),
        ({"Image": "b", "HostConfig": {"ConsoleSize": [1]}}, "invalid HostConfig.ConsoleSize: want 2 elements, got 1"),
        (
            {"Image": "b", "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}},
            'invalid HostConfig.RestartPolicy.Name: "sometimes" is not one of "no", "always", "unless-stopped", "on-failure"',
        ),
        (
            {"Image": "b", "HostConfig": {"Mounts": [{"Type": "bind", "BindOptions": {"Propagation": "x"}}]}},
            "invalid HostConfig.Mounts[0].BindOptions.Propagation",
        ),
        (
            {"Image": "b", "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": 80}]}}},
            'invalid HostConfig.PortBindings["80/tcp"][0].HostPort: want a string, got a number',
        ),
        ({"Image": "b", "Cmd": ["sh", None]}, "invalid Cmd[1]: want a value, got null"),
        ({"Image": "b", "Cmd": "sh"}, "invalid Cmd: want an array, got a string"),
        ({"Image": "b", "StopTimeout": 2**64}, f"invalid StopTimeout: {2**64} is out of range for int64"),
        (
            {"Image": "b", "WorkingDir": "tmp"},
            "the working directory 'tmp' is invalid, it needs to be an absolute path",
        ),
        ({"Image": "b", "WorkingDir": "/a\x00b"}, "invalid WorkingDir: a string must not hold a NUL character"),
        ({"Image": "b", "HostConfig": {"CpusetCpus": "0-99999"}}, "Invalid value 0-99999 for cpuset cpus"),
        ({"Image": "b", "HostConfig": {"CpusetCpus": "1-0"}}, "Invalid value 1-0 for cpuset cpus"),
        ({"Image": "b", "HostConfig": {"CpusetMems": "0,,1"}}, "Invalid value 0,,1 for cpuset mems"),
        (
            {"Image": "b", "NetworkingConfig": {"EndpointsConfig": {"n": []}}},
            'invalid NetworkingConfig.EndpointsConfig["n"]: want an object, got an array',
        ),
        ([], "invalid request body: want an object, got an array"),
    ],
)
def test_create_bodies_refused(client, body, message):
    resp = post(client, "/containers/create", body)
    assert resp.status_code == 400
    assert resp.json["message"].startswith(message), resp.json


@pytest.mark.parametrize(
    "raw, words",
    [
        (b'{"Image": "b", "StopTimeout": 1e400}', "number 1e400 is out of range"),
        (b'{"Image": "b", "HostConfig": {"CpuShares": Infinity}}', "Infinity is not JSON"),
        (b'{"Image": "b", "HostConfig": {"Memory": NaN}}', "NaN is not JSON"),
        (b'{"Image": "b", "Labels": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nest deeper than 100 levels"),
    ],
)
def test_json_that_go_would_not_decode(client, raw, words):
    resp = post(client, "/containers/create", raw, raw=True)
    assert resp.status_code == 400
    assert resp.json["message"].startswith("malformed JSON in request body: ") and words in resp.json["message"]


@pytest.mark.parametrize(
    "path, body, message",
    [
        ("/containers/x/update", {"CpuShares": -(2**63) - 1}, "invalid CpuShares"),
        (
            "/containers/x/update",
            {"RestartPolicy": {"MaximumRetryCount": "3"}},
            "invalid RestartPolicy.MaximumRetryCount",
        ),
        ("/containers/x/exec", {"Cmd": [1]}, "invalid Cmd[0]: want a string"),
        ("/containers/x/exec", {"Env": "A=1"}, "invalid Env: want an array"),
        ("/exec/x/start", {"Detach": "no"}, "invalid Detach: want a boolean"),
        ("/volumes/create", {"Name": "v", "Labels": {"a": {}}}, 'invalid Labels["a"]: want a string'),
        ("/volumes/create", {"Name": "v", "DriverOpts": []}, "invalid DriverOpts: want an object"),
        ("/networks/create", {"Name": "n", "Internal": 1}, "invalid Internal: want a boolean"),
        ("/networks/create", {"Name": "n", "IPAM": {"Config": {}}}, "invalid IPAM.Config: want an array"),
        ("/networks/x/connect", {"Container": 5}, "invalid Container: want a string"),
        ("/commit", {"WorkingDir": "rel"}, "the working directory 'rel' is invalid"),
    ],
)
def test_other_bodies_refused(client, path, body, message):
    resp = post(client, path, body)
    assert resp.status_code == 400
    assert resp.json["message"].startswith(message), resp.json


@pytest.mark.parametrize(
    "method, path, message",
    [
        ("POST", "/containers/x/stop?t=abc", "invalid value for t: 'abc' is not an integer"),
        ("POST", "/containers/x/stop?t=1.5", "invalid value for t: '1.5' is not an integer"),
        ("POST", "/containers/x/stop?t=99999999999999999999", "is not an integer"),
        ("POST", "/containers/x/wait?condition=never", "invalid value for condition: 'never' is not one of"),
        ("GET", "/containers/json?limit=x", "invalid value for limit"),
        ("GET", "/containers/x/logs?since=yesterday", "'yesterday' is not a timestamp"),
        ("GET", "/system/df?type=nope", "invalid value for type: 'nope'"),
        ("POST", "/containers/create?platform=linux/../amd64", '".." is an invalid component of "linux/../amd64"'),
        ("POST", "/images/create?fromImage=busybox&platform=../../x", '".." is an invalid component'),
        ("POST", "/images/create?fromImage=busybox&platform=linux/amd64/v8/x", "unknown operating system"),
        ("GET", "/volumes/a%00b", "invalid name: a NUL character is not allowed"),
        ("GET", "/containers/json?filters=%00", "invalid filters: a NUL character is not allowed"),
        ("POST", "/build?labels=%7B%22a%22%3A1%7D", 'invalid labels["a"]: want a string, got a number'),
        ("POST", "/build?buildargs=%5B%5D", "invalid buildargs: want an object, got an array"),
        ("POST", "/build?cachefrom=%7B%7D", "invalid cachefrom: want an array"),
        ("POST", "/build?ulimits=%5B%7B%22Soft%22%3A%22x%22%7D%5D", "invalid ulimits[0].Soft: want an integer"),
        ("POST", "/build?buildargs=%7B%22a%22%3ANaN%7D", "invalid JSON in buildargs"),
    ],
)
def test_parameters_refused(client, method, path, message):
    target, _, query = path.partition("?")
    resp = client.simulate_request(method, target, query_string=query)
    assert resp.status_code == 400
    assert message in resp.json["message"], resp.json


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/containers/x/stop?t=10"),
        ("POST", "/containers/x/stop?t=-1"),
        ("POST", "/containers/x/stop?t="),
        ("GET", "/containers/x/logs?since=1700000000.123456789&until=0"),
        ("GET", "/containers/json?limit=-1&all=True"),
        ("POST", "/containers/create?platform=linux/arm64/v8"),
        ("POST", "/images/create?fromImage=busybox&platform=amd64"),
        ("GET", "/system/df?type=container&type=image"),
        ("POST", "/build?buildargs=%7B%22HTTP_PROXY%22%3Anull%2C%22A%22%3A%22b%22%7D&labels=%7B%7D"),
    ],
)
def test_parameters_clients_send_pass(client, method, path):
    target, _, query = path.partition("?")
    resp = client.simulate_request(method, target, query_string=query)
    assert resp.status_code == 200, resp.json


def test_a_body_is_decoded_once_and_bodiless_posts_pass(client):
    assert client.simulate_post("/containers/x/stop").json == {"body": "none"}
    assert post(client, "/exec/x/start", {"Detach": True, "Tty": False}).json == {
        "body": {"Detach": True, "Tty": False}
    }


def test_sinks_call_the_layer_themselves():
    app = falcon.App(middleware=[validation.RequestValidation()])
    errors.install(app)

    def sink(req, resp, **_):
        validation.check_request(req, "/images/{name}/push", {"name": req.path.split("/")[2]})
        resp.media = {}

    app.add_sink(sink, "/images/")
    client = falcon.testing.TestClient(app)
    assert client.simulate_post("/images/a%00b/push").status_code == 400
    assert client.simulate_post("/images/busybox/push").status_code == 200


def test_unknown_fields_are_allowed_as_go_ignores_them():
    schema.load().check({"Image": "b", "NoSuchField": [1, {"x": None}]}, {"$ref": "#/definitions/ContainerConfig"})


def test_cpuset_is_parsed_without_expanding():
    assert cpuset.parse("0-3,8") == [(0, 3), (8, 8)]
    with pytest.raises(ValueError, match="maximum is 8192"):
        cpuset.parse("0-1" + "0" * 30)
    assert cpuset.is_subset("1,0", "0-1") and cpuset.is_subset("2-3,0-1", "0-3")
    assert not cpuset.is_subset("0-2", "0-1") and not cpuset.is_subset("4", "0-1,5")
