"""Child image configs as dockerd writes them, and the cache's comparison."""

from __future__ import annotations

import hashlib
import json

from engine.builder.cache import compare
from engine.builder.images import EMPTY_LAYER, child_config, go_config, go_json, go_time, serialize


def test_empty_layer_is_the_empty_tar():
    assert "sha256:" + hashlib.sha256(bytes(1024)).hexdigest() == EMPTY_LAYER


def test_go_time_trims_zeros():
    assert go_time(1700000000.5) == "2023-11-14T22:13:20.5Z"
    assert go_time(1700000000.0) == "2023-11-14T22:13:20Z"


def test_go_json_escapes_html():
    assert go_json({"a": "<&>"}) == '{"a":"\\u003c\\u0026\\u003e"}'


def test_go_config_order_and_omitempty():
    doc = go_config({"Cmd": ["x"], "Labels": {"b": "2", "a": "1"}, "ExposedPorts": {}})
    assert list(doc)[:6] == ["Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr"]
    assert "ExposedPorts" not in doc and "Healthcheck" not in doc and "StopSignal" not in doc
    assert doc["Cmd"] == ["x"] and list(doc["Labels"]) == ["a", "b"] and doc["Volumes"] is None


def test_serialize_sorts_top_level_only():
    raw = serialize({"z": 1, "a": {"y": 1, "b": 2}})
    assert raw == b'{"a":{"y":1,"b":2},"z":1}'


def test_child_config_empty_layer_and_history():
    raw = child_config(None, {"Cmd": ["sh"]}, {"Cmd": ["/bin/sh", "-c", "#(nop) ", 'CMD ["sh"]']}, None, created=1.0)
    doc = json.loads(raw)
    assert doc["rootfs"] == {"type": "layers", "diff_ids": []}
    assert doc["history"] == [
        {"created": "1970-01-01T00:00:01Z", "created_by": '/bin/sh -c #(nop)  CMD ["sh"]', "empty_layer": True}
    ]
    assert doc["os"] == "linux" and list(doc) == sorted(doc)


def test_compare():
    base = {"Cmd": ["a"], "Env": ["A=1"], "Labels": {"x": "y"}, "ExposedPorts": {"80/tcp": {}}}
    assert compare(base, dict(base))
    assert not compare(base, {**base, "Cmd": ["b"]})
    assert not compare(base, {**base, "Labels": {"x": "z"}})
    assert not compare(base, {**base, "OpenStdin": True})
    assert compare({**base, "Hostname": "abc"}, base)
