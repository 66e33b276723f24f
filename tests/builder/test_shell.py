"""Variable expansion and word splitting with the classic builder's rules."""

from __future__ import annotations

import pytest

from engine.builder.shell import Lexer
from engine.errors import InvalidParameter

ENV = ["PWD=/home", "SHELL=bash", "KOREAN=한국어", "EMPTY=", "PATH=/a:/b"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello", "hello"),
        ("he'll'o", "hello"),
        ('he"ll"o', "hello"),
        ("$PWD", "/home"),
        ("${PWD}", "/home"),
        ("${PWD}x", "/homex"),
        ("$PWDx", ""),
        ("'$PWD'", "$PWD"),
        ('"$PWD"', "/home"),
        ("\\$PWD", "$PWD"),
        ('"\\$PWD"', "$PWD"),
        ('"a\\"b"', 'a"b'),
        ("${NOPE:-default}", "default"),
        ("${EMPTY:-default}", "default"),
        ("${PWD:-default}", "/home"),
        ("${PWD:+set}", "set"),
        ("${NOPE:+set}", ""),
        ("${KOREAN}", "한국어"),
        ("$", "$"),
        ("a $ b", "a $ b"),
        ("${PWD:-${SHELL}}", "/home"),
        ("${NOPE:-${SHELL}}", "bash"),
    ],
)
def test_word(text, expected):
    assert Lexer().word(text, ENV) == expected


def test_words_split_on_unquoted_space():
    lex = Lexer()
    assert lex.words("80 443/udp", ENV) == ["80", "443/udp"]
    assert lex.words('"a b" c', ENV) == ["a b", "c"]
    assert lex.words("$PATH x", ["PATH=1 2"]) == ["1", "2", "x"]


def test_escape_directive_character():
    lex = Lexer("`")
    assert lex.word("`$PWD", ENV) == "$PWD"
    assert lex.word("C:\\path", ENV) == "C:\\path"


def test_later_definitions_win():
    assert Lexer().word("$A", ["A=1", "A=2"]) == "2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("'open", "unexpected end of statement while looking for matching single-quote"),
        ('"open', "unexpected end of statement while looking for matching double-quote"),
        ("${", "syntax error: missing '}'"),
        ("${}", "syntax error: bad substitution"),
        ("${PWD:=x}", "unsupported modifier (=) in substitution"),
        ("${NOPE?must be set}", "NOPE: must be set"),
        ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
        ("${PWD:-x", "syntax error: missing '}'"),
    ],
)
def test_errors_in_dockerds_words(text, message):
    with pytest.raises(InvalidParameter) as err:
        Lexer().word(text, ENV)
    assert str(err.value).endswith(message)
    assert str(err.value).startswith("failed to process ")
