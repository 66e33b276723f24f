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


@pytest.mark.parametrize("tty", [True, False])
def test_logs_ask_only_whether_the_container_has_a_tty(tty):
    """Logs and attach learn the stream's content type (and a 404) from ``container_tty``, not
    from a whole inspect view."""
    eng = Engine()
    asked: list[str] = []

    def container_tty(job):
        asked.append(job.args[0])
        job.write_json({"Tty": tty})

    def logs(job):
        job.stdout.write(b"out")

    eng.register("container_tty", container_tty)
    eng.register("logs", logs)
    resp = falcon.testing.TestClient(create_app(eng)).simulate_get("/containers/web/logs?stdout=1")
    assert resp.status_code == 200 and asked == ["web"]
    raw = "application/vnd.docker.raw-stream"
    assert (resp.headers["Content-Type"] == raw) is tty
