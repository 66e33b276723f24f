"""JSON decoded as Go's decoder would: NaN/Infinity and out-of-range numbers refused, nesting bounded,
lone surrogates replaced."""

from __future__ import annotations

import pytest

from engine.utils import strictjson


@pytest.mark.parametrize(
    "text, words",
    [
        ('{"a": NaN}', "NaN is not JSON"),
        ("[Infinity]", "Infinity is not JSON"),
        ("-Infinity", "-Infinity is not JSON"),
        ('{"StopTimeout": 1e400}', "number 1e400 is out of range"),
        ("[-1E999]", "number -1E999 is out of range"),
        ("[" * 101 + "]" * 101, "deeper than 100 levels"),
        ('{"a":' * 101 + "1" + "}" * 101, "deeper than 100 levels"),
        (b"\xff\xfe", "invalid UTF-8 at byte 0"),
        ("{'a': 1}", "Expecting property name"),
        ("", "Expecting value"),
    ],
)
def test_refused(text, words):
    with pytest.raises(strictjson.JSONError, match=words.replace("[", r"\[")):
        strictjson.loads(text)


def test_a_json_error_is_a_value_error():
    with pytest.raises(ValueError):
        strictjson.loads("NaN")


def test_deep_text_is_refused_before_it_is_decoded():
    # Far deeper than Python's recursion limit: the scan refuses it, nothing recurses.
    with pytest.raises(strictjson.JSONError, match="max depth"):
        strictjson.loads(b"[" * 200_000 + b"]" * 200_000)


def test_brackets_inside_strings_do_not_count():
    text = '{"a": "' + "[" * 500 + '\\"{{{"}'
    assert strictjson.loads(text) == {"a": "[" * 500 + '"{{{'}


def test_what_go_accepts_is_decoded():
    assert strictjson.loads('{"a": [1, 2.5, -3e2, true, null, "x"]}') == {"a": [1, 2.5, -300.0, True, None, "x"]}
    assert strictjson.loads(b'  {"n": 12345678901234567890}  ') == {"n": 12345678901234567890}


def test_exactly_the_limit_is_accepted():
    value = strictjson.loads("[" * 100 + "]" * 100)
    for _ in range(99):
        value = value[0]
    assert value == []


def test_lone_surrogates_become_the_replacement_character():
    value = strictjson.loads('{"\\udc00k": ["a\\ud800b", "\\ud83d\\ude00"]}')
    assert value == {"\ufffdk": ["a\ufffdb", "\U0001f600"]}
    assert "\ufffd".encode() in str(value).encode()
