"""The metrics' parts that need no daemon: the request counter in the API app,
the engine's job observer, and the promise that an engine without metrics
never imports prometheus_client."""

from __future__ import annotations

import subprocess
import sys

import falcon
import falcon.testing
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from engine.api.app import create_app
from engine.core import Engine
from engine.errors import NotFound
from engine.server.metrics import RequestCounter


def test_request_counter_labels_by_route_template_and_status():
    registry = CollectorRegistry()
    counter = Counter("engine_daemon_http_requests", "x", ["method", "route", "code"], registry=registry)
    eng = Engine()

    def inspect(job):
        raise NotFound(f"No such container: {job.args[0]}")

    eng.register("container_inspect", inspect)
    client = falcon.testing.TestClient(create_app(eng, extra_middleware=[RequestCounter(counter)]))
    for path in ("/_ping", "/v1.41/_ping", "/containers/abc/json", "/no/such/route"):
        client.simulate_get(path)
    from prometheus_client import generate_latest

    got = {
        (s.labels["method"], s.labels["route"], s.labels["code"]): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert got[("GET", "/_ping", "200")] == 2
    assert got[("GET", "/containers/{id}/json", "404")] == 1
    assert got[("GET", "unmatched", "404")] == 1


def test_engine_observer_sees_each_job():
    eng = Engine()
    seen = []
    eng.observer = lambda name, seconds, status: seen.append((name, seconds >= 0, int(status)))
    eng.register("ok", lambda job: None)
    eng.job("ok").run()
    try:
        eng.job("nosuchjob").run()
    except Exception:
        pass
    assert seen == [("ok", True, 0), ("nosuchjob", True, 127)]


def test_no_prometheus_import_without_metrics():
    code = (
        "import sys\n"
        "import engine.server.main, engine.server.app, engine.api.app, engine.daemon.daemon, engine.registry.jobs\n"
        "import engine.graph.graph, engine.core\n"
        "assert 'prometheus_client' not in sys.modules, 'prometheus_client imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
