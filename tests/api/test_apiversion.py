"""The request's API version reaches the jobs it runs (engine.apiversion), through falcon.testing."""

from __future__ import annotations

import falcon.testing
import pytest

from engine import apiversion, builtins
from engine.api.app import create_app
from engine.core import Engine
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
