"""Container routes through falcon.testing, with stand-in jobs that record what they were asked."""

from __future__ import annotations

import json

import falcon.testing
import pytest

from engine.api.app import create_app
from engine.core import Engine


@pytest.fixture
def client_and_calls():
    eng = Engine()
    calls: list[tuple[str, tuple]] = []

    def recorder(name):
        def handler(job):
            calls.append((name, tuple(job.args)))
            if name == "container_inspect":
                job.write_json({"Id": job.args[0]})

        return handler

    for name in ("container_inspect", "rm"):
        eng.register(name, recorder(name))
    return falcon.testing.TestClient(create_app(eng)), calls


@pytest.mark.parametrize("prefix", ["", "/v1.41"])
def test_delete_of_the_json_route_is_404_not_a_removal(client_and_calls, prefix):
    client, calls = client_and_calls
    resp = client.simulate_delete(f"{prefix}/containers/web/json")
    assert resp.status_code == 404 and json.loads(resp.text) == {"message": "page not found"}
    assert client.simulate_post(f"{prefix}/containers/web/json").status_code == 404
    assert calls == []
    assert client.simulate_get(f"{prefix}/containers/web/json").json == {"Id": "web"}
    assert client.simulate_delete(f"{prefix}/containers/web").status_code == 204
    assert calls == [("container_inspect", ("web",)), ("rm", ("web",))]
