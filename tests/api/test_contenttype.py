"""dockerd's CheckForJSON rules, route by route, through falcon.testing (the raw HTTP side is in
tests/integration/test_security.py, against the real daemon and dockerd)."""

from __future__ import annotations

import json

import falcon
import falcon.testing
import pytest

from engine.api import contenttype, errors, middleware


class Echo:
    def on_post(self, req, resp, **params):
        resp.media = {"ok": True}


@pytest.fixture
def client():
    app = falcon.App(middleware=[middleware.VersionMiddleware(), contenttype.JSONBodyMiddleware()])
    errors.install(app)
    echo = Echo()
    for route in contenttype.JSON_ROUTES:
        app.add_route(route, echo)
    app.add_route("/containers/{id}/kill", echo)
    app.add_route("/auth", echo)
    return falcon.testing.TestClient(app)


BODY = json.dumps({"Image": "busybox", "HostConfig": {"Binds": ["/:/host"]}})


@pytest.mark.parametrize(
    "path",
    [
        "/containers/create",
        "/v1.41/containers/create",
        "/containers/x/update",
        "/containers/x/exec",
        "/exec/x/start",
        "/networks/create",
        "/networks/x/connect",
        "/networks/x/disconnect",
        "/volumes/create",
        "/commit",
    ],
)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_simple_cross_site_types_are_refused(client, path, content_type):
    resp = client.simulate_post(path, body=BODY, headers={"Content-Type": content_type})
    assert resp.status_code == 400
    assert resp.json == {"message": f"Content-Type specified ({content_type}) must be 'application/json'"}


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", 'application/json; a="b"'],
)
def test_json_passes(client, content_type):
    resp = client.simulate_post("/containers/create", body=BODY, headers={"Content-Type": content_type})
    assert resp.status_code == 200, resp.text


def test_no_type_is_fine_only_without_a_body(client):
    assert client.simulate_post("/containers/create", body="").status_code == 200
    resp = client.simulate_post("/containers/create", body=BODY, headers={"Content-Type": ""})
    assert resp.status_code == 400 and resp.json["message"] == "Content-Type specified () must be 'application/json'"
    resp = client.simulate_post("/containers/create", body=BODY, headers={"Content-Type": "application/json; x"})
    assert resp.status_code == 400


def test_routes_dockerd_does_not_check(client):
    for path in ("/containers/x/kill", "/auth", "/v1.21/exec/x/start", "/containers/x/start"):
        assert (
            client.simulate_post(
                path, body=BODY if "start" not in path else "", headers={"Content-Type": "text/plain"}
            ).status_code
            == 200
        ), path


def test_start_with_a_body(client):
    resp = client.simulate_post("/containers/x/start", body=BODY, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and "removed in v1.24" in resp.json["message"]
    resp = client.simulate_post("/v1.23/containers/x/start", body=BODY, headers={"Content-Type": "text/plain"})
    assert resp.status_code == 400 and "must be 'application/json'" in resp.json["message"]
    resp = client.simulate_post("/v1.23/containers/x/start", body=BODY, headers={"Content-Type": "application/json"})
    assert resp.status_code == 200
    # "{}" and other bodies of at most 7 bytes are no body to speak of
    assert (
        client.simulate_post("/containers/x/start", body="{}", headers={"Content-Type": "text/plain"}).status_code
        == 200
    )


@pytest.mark.parametrize(
    "value, expected",
    [
        ("application/json", "application/json"),
        (" Application/Json ;charset=UTF-8", "application/json"),
        ("text/plain", "text/plain"),
        ("json", None),
        ("application/json; charset", None),
        ("", None),
        ("a/b/c", None),
    ],
)
def test_media_type(value, expected):
    assert contenttype.media_type(value) == expected
