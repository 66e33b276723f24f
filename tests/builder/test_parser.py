"""Dockerfiles to stages, with the classic builder's checks and messages."""

from __future__ import annotations

import pytest

from engine.builder.parser import go_duration, parse, parse_changes, parse_line
from engine.errors import InvalidParameter


def test_stages_meta_args_and_continuations():
    df = parse(
        'ARG V=1\nFROM busybox:$V AS First\nRUN echo a \\\n    && echo b\n# a comment\nFROM first\nCMD ["x", "y"]\n'
    )
    assert [a.code for a in df.meta_args] == ["ARG V=1"]
    assert [s.name for s in df.stages] == ["first", ""]
    assert df.stages[0].base == "busybox:$V"
    run = df.stages[0].commands[0]
    assert run.name == "run" and not run.json and run.args[0].startswith("echo a")
    cmd = df.stages[1].commands[0]
    assert cmd.json and cmd.args == ["x", "y"]


def test_escape_directive():
    df = parse("# escape=`\nFROM busybox\nRUN echo a `\n  b\n")
    assert df.escape == "`"
    assert df.stages[0].commands[0].args == ["echo a   b"] or "echo a" in df.stages[0].commands[0].args[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM a\nFOOBAR x\n", "dockerfile parse error line 2: unknown instruction: FOOBAR"),
        (
            "FROM a\nONBUILD ONBUILD RUN x\n",
            "dockerfile parse error line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        ),
        ("FROM a\nONBUILD FROM b\n", "dockerfile parse error line 2: FROM isn't allowed as an ONBUILD trigger"),
        ("RUN x\n", "no build stage in current context"),
        ("FROM a b\n", "dockerfile parse error line 1: FROM requires either one or three arguments"),
        (
            "FROM a AS 1x\n",
            'dockerfile parse error line 1: invalid name for build stage: "1x", name can\'t start with a number or contain symbols',
        ),
        (
            "FROM a\nCOPY x\n",
            "dockerfile parse error line 2: COPY requires at least two arguments, but only one was provided. Destination could not be determined",
        ),
        ("FROM a\nCOPY --nope=1 x y\n", "dockerfile parse error line 2: Unknown flag: nope"),
        ("FROM a\nWORKDIR\n", "dockerfile parse error line 2: WORKDIR requires exactly one argument"),
        ("FROM a\nHEALTHCHECK FOO x\n", 'dockerfile parse error line 2: Unknown type "FOO" in HEALTHCHECK (try CMD)'),
        (
            "FROM a\nHEALTHCHECK --retries=0 CMD x\n",
            "dockerfile parse error line 2: --retries must be at least 1 (not 0)",
        ),
        (
            "FROM a\nSHELL sh -c\n",
            "dockerfile parse error line 2: SHELL requires the arguments to be in JSON form: SHELL sh -c",
        ),
    ],
)
def test_errors(text, message):
    with pytest.raises(InvalidParameter) as err:
        parse(text)
    assert str(err.value) == message


def test_healthcheck_and_onbuild_data():
    df = parse("FROM a\nHEALTHCHECK --interval=1m30s --retries=2 CMD curl x\nONBUILD RUN echo hi\n")
    health, onbuild = df.stages[0].commands
    assert health.data["health"] == {"Test": ["CMD-SHELL", "curl x"], "Interval": 90_000_000_000, "Retries": 2}
    assert onbuild.data["expression"] == "RUN echo hi"


def test_changes_and_lines():
    changes = parse_changes(['CMD ["x"]', "ENV A=b"], ("cmd", "env"))
    assert [c.name for c in changes] == ["cmd", "env"]
    with pytest.raises(InvalidParameter, match="from is not a valid change command"):
        parse_changes(["FROM x"], ("cmd",))
    assert parse_line("RUN echo x").name == "run"


def test_go_duration():
    assert go_duration("1.5s") == 1_500_000_000
    assert go_duration("2h3m") == (2 * 3600 + 3 * 60) * 10**9
    with pytest.raises(InvalidParameter):
        go_duration("5 s")
