"""System endpoints through falcon.testing: ping, version, errors, headers."""

from __future__ import annotations

import json

import falcon.testing
import pytest

from engine import builtins
from engine.api.app import create_app
from engine.core import Engine
from engine.errors import Conflict, InvalidParameter, NotFound, NotModified


@pytest.fixture
def client():
    eng = Engine()
    builtins.engine_register_jobs(engine=eng, daemon=None)

    def raise_(exc):
        def handler(job):
            raise exc

        return handler

    eng.register("info", raise_(NotFound("no daemon here")))

    class Boom:
        def on_get(self, req, resp, kind):
            raise {
                "400": InvalidParameter("bad"),
                "404": NotFound("gone"),
                "409": Conflict("busy"),
                "304": NotModified(),
                "500": RuntimeError("kaput"),
            }[kind]

    app = create_app(eng, cors=True)
    app.add_route("/boom/{kind}", Boom())
    return falcon.testing.TestClient(app)


COMMON = {"api-version": "1.45", "ostype": "linux", "docker-experimental": "false"}


def assert_common(resp):
    for key, value in COMMON.items():
        assert resp.headers[key] == value
    assert resp.headers["server"].startswith("Engine/")


@pytest.mark.parametrize("path", ["/_ping", "/v1.41/_ping", "/v1.24/_ping", "/v1.45/_ping", "/v1.12/_ping"])
def test_ping_versioned_and_not(client, path):
    resp = client.simulate_get(path)
    assert resp.status_code == 200 and resp.text == "OK"
    assert_common(resp)
    assert resp.headers["builder-version"] == "1" and resp.headers["swarm"] == "inactive"


def test_head_ping(client):
    resp = client.simulate_head("/_ping")
    assert resp.status_code == 200 and resp.headers["content-length"] == "0"
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"


def test_version_document(client):
    resp = client.simulate_get("/v1.41/version")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    doc = resp.json
    # The daemon's own version whatever the request's, as dockerd answers.
    assert doc["ApiVersion"] == "1.45" and doc["MinAPIVersion"] == "1.12" and doc["Os"] == "linux"
    assert doc["Components"][0]["Name"] == "Engine" and doc["Components"][0]["Details"]["ApiVersion"] == "1.45"
    assert_common(resp)


def test_version_too_new_and_too_old(client):
    resp = client.simulate_get("/v1.46/version")
    assert resp.status_code == 400 and resp.headers["content-type"] == "application/json"
    assert resp.json == {"message": "client version 1.46 is too new. Maximum supported API version is 1.45"}
    assert_common(resp)
    resp = client.simulate_get("/v1.11/version")
    assert resp.status_code == 400 and "too old. Minimum supported API version is 1.12" in resp.json["message"]


def test_unknown_route_is_json_404(client):
    resp = client.simulate_get("/v1.41/nonesuch")
    assert resp.status_code == 404 and resp.headers["content-type"] == "application/json"
    assert resp.json == {"message": "page not found"}
    assert_common(resp)


def test_post_ping_is_405(client):
    assert client.simulate_post("/_ping").status_code == 405


@pytest.mark.parametrize("kind,status", [("400", 400), ("404", 404), ("409", 409), ("500", 500)])
def test_errors_map_to_status_with_exact_content_type(client, kind, status):
    resp = client.simulate_get(f"/v1.41/boom/{kind}")
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/json"
    assert set(json.loads(resp.text)) == {"message"}
    assert_common(resp)


def test_not_modified_has_no_body(client):
    resp = client.simulate_get("/boom/304")
    assert resp.status_code == 304 and resp.content == b""


def test_swarm_endpoints_answer_503(client):
    for path in ("/swarm", "/nodes", "/services", "/v1.41/swarm/leave"):
        resp = client.simulate_request("POST" if "leave" in path else "GET", path)
        assert resp.status_code == 503 and resp.json == {"message": "This node is not part of a swarm"}


def test_cors_headers_when_enabled(client):
    resp = client.simulate_get("/_ping")
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "X-Registry-Auth" in resp.headers["access-control-allow-headers"]


def test_debug_routes_only_with_debug():
    eng = Engine()
    plain = falcon.testing.TestClient(create_app(eng))
    assert plain.simulate_get("/debug/vars").status_code == 404
    dbg = falcon.testing.TestClient(create_app(eng, debug=True))
    resp = dbg.simulate_get("/debug/vars")
    assert resp.status_code == 200 and resp.json["pid"] > 0 and "VmRSS" in resp.json["memory"]
    assert "thread" in dbg.simulate_get("/debug/stacks").text
    assert dbg.simulate_post("/debug/gc").json["objects"] > 0
