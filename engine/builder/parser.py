"""From Dockerfile text to build stages: moby's own parser, then its instruction rules.

The text is parsed by the PyPI ``dockerfile`` package, which binds the Go
parser of buildkit (``frontend/dockerfile/parser``: directives such as
``# escape=``, comments, line continuations, JSON and shell forms, heredoc
detection). What the classic builder then does with each node
(``instructions.Parse`` in dockerd 20.10: argument counts, flags, stage
names, ONBUILD triggers) is here, with its messages: every error reads
``dockerfile parse error line N: ...`` as dockerd's does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import dockerfile

from engine.errors import InvalidParameter

#: Instructions the classic builder knows (besides FROM).
COMMANDS = (
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
)

#: The flags each instruction takes (anything else is "Unknown flag").
FLAGS: dict[str, tuple[str, ...]] = {
    "from": ("platform",),
    "add": ("chown", "chmod"),
    "copy": ("chown", "from", "chmod"),
    "healthcheck": ("interval", "timeout", "start-period", "retries"),
    "run": ("mount", "network", "security"),
}

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_\.]*$")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


class ParseError(InvalidParameter):
    """A Dockerfile that the classic builder refuses (400)."""


@dataclass
class Instruction:
    """One instruction after moby's checks.

    :ivar name: lower case (``run``).
    :ivar code: the instruction as written, continuations joined (what ``Step N/M :`` prints).
    :ivar args: its arguments: the JSON form's list, or the words (one string for the shell form
        of RUN, CMD, ENTRYPOINT).
    :ivar json: written in JSON (exec) form.
    :ivar flags: ``--name=value`` flags.
    """

    name: str
    code: str
    args: list[str]
    json: bool = False
    flags: dict[str, str] = field(default_factory=dict)
    line: int = 0
    #: What the instruction's own parse found (healthcheck config, ONBUILD expression, ...).
    data: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.code


@dataclass
class Stage:
    """``FROM base [AS name]`` and the instructions under it."""

    base: str
    name: str
    code: str
    platform: str = ""
    commands: list[Instruction] = field(default_factory=list)
    line: int = 0


@dataclass
class Dockerfile:
    """A parsed Dockerfile: the ARGs before the first FROM, the stages and the escape character."""

    meta_args: list[Instruction]
    stages: list[Stage]
    escape: str = "\\"


def _escape_token(text: str) -> str:
    """The ``# escape=`` directive, read as the parser reads directives (leading comment lines only)."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        m = re.match(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$", stripped)
        if m is None:
            break
        if m.group(1).lower() == "escape":
            return m.group(2)
    return "\\"


def _parse_flags(node: Any, name: str, line: int) -> dict[str, str]:
    allowed = FLAGS.get(name, ())
    out: dict[str, str] = {}
    for raw in node.flags:
        if not raw.startswith("--"):
            raise ParseError(f"dockerfile parse error line {line}: Arg {raw!r} must start with '--'")
        key, sep, value = raw[2:].partition("=")
        if key not in allowed:
            raise ParseError(f"dockerfile parse error line {line}: Unknown flag: {key}")
        if not sep and key != "":
            raise ParseError(f"dockerfile parse error line {line}: Missing a value on flag: {key}")
        if key in out:
            raise ParseError(f"dockerfile parse error line {line}: Duplicate flag specified: {key}")
        out[key] = value
    return out


def go_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` (``30s``, ``1m30s``, ``1.5h``) in nanoseconds."""
    if text in ("0", "+0", "-0"):
        return 0
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    total, pos = 0, 0
    for m in _DURATION.finditer(body):
        if m.start() != pos:
            break
        total += int(float(m.group(1)) * _DURATION_UNITS[m.group(2)])
        pos = m.end()
    if not body or pos != len(body):
        raise InvalidParameter(f'time: invalid duration "{text}"')
    return sign * total


def _interval(flags: dict[str, str], name: str) -> int:
    value = flags.get(name, "")
    if not value:
        return 0
    nanos = go_duration(value)
    if nanos < 1_000_000:
        raise InvalidParameter(f'Interval "{name}" cannot be less than 1ms')
    return nanos


def _kvps(values: list[str], name: str) -> list[tuple[str, str]]:
    if not values:
        raise InvalidParameter(f"{name} requires at least one argument")
    if len(values) % 2:
        raise InvalidParameter(f"Bad input to {name}, too many arguments")
    pairs = []
    for i in range(0, len(values), 2):
        if not values[i]:
            raise InvalidParameter(f"{name} names can not be blank")
        pairs.append((values[i], values[i + 1]))
    return pairs


def _instruction(node: Any, in_onbuild: bool = False) -> Instruction | Stage:
    name = node.cmd.lower()
    line = node.start_line
    code = node.original.strip()
    values = list(node.value)
    if name == "onbuild" and node.sub_cmd:
        pass
    elif name != "from" and name not in COMMANDS:
        raise ParseError(f"dockerfile parse error line {line}: unknown instruction: {node.cmd.upper()}")
    if node.heredocs:
        raise ParseError(f"dockerfile parse error line {line}: heredocs require BuildKit")
    try:
        flags = _parse_flags(node, name, line)
        return _checked(name, code, values, bool(node.json), flags, line, node)
    except ParseError:
        raise
    except InvalidParameter as exc:
        raise ParseError(f"dockerfile parse error line {line}: {exc}") from None


def _checked(
    name: str, code: str, values: list[str], is_json: bool, flags: dict[str, str], line: int, node: Any
) -> Instruction | Stage:
    inst = Instruction(name, code, values, is_json, flags, line)
    if name == "from":
        stage_name = ""
        if len(values) == 3 and values[1].lower() == "as":
            stage_name = values[2].lower()
            if not _STAGE_NAME.match(stage_name):
                raise InvalidParameter(
                    f'invalid name for build stage: "{values[2]}", name can\'t start with a number or contain symbols'
                )
        elif len(values) != 1:
            raise InvalidParameter("FROM requires either one or three arguments")
        return Stage(values[0], stage_name, code, flags.get("platform", ""), [], line)
    if name in ("env", "label"):
        pairs = _kvps(values, name.upper())
        inst.data["pairs"] = pairs
    elif name in ("add", "copy"):
        if len(values) < 2:
            raise InvalidParameter(
                f"{name.upper()} requires at least two arguments, but only one was provided. "
                "Destination could not be determined"
            )
    elif name in ("maintainer", "workdir", "user", "stopsignal"):
        if len(values) != 1:
            raise InvalidParameter(f"{name.upper()} requires exactly one argument")
    elif name in ("expose", "volume", "arg"):
        if not values or values == [""]:
            raise InvalidParameter(f"{name.upper()} requires at least one argument")
        if name == "expose":
            inst.args = sorted(values)
        elif name == "volume":
            vols = [v.strip() for v in values]
            if any(not v for v in vols):
                raise InvalidParameter("VOLUME specified can not be an empty string")
            inst.args = vols
        else:
            pairs_opt: list[tuple[str, str | None]] = []
            for arg in values:
                key, sep, value = arg.partition("=")
                if sep and not key:
                    raise InvalidParameter("ARG names can not be blank")
                pairs_opt.append((key, value if sep else None))
            inst.data["args"] = pairs_opt
    elif name == "shell":
        if not values or values == [""]:
            raise InvalidParameter("SHELL requires at least one argument")
        if not is_json:
            raise InvalidParameter(f"SHELL requires the arguments to be in JSON form: {code}")
    elif name == "onbuild":
        trigger = (node.sub_cmd or (values[0].split()[0] if values and values[0].split() else "")).upper()
        if not trigger:
            raise InvalidParameter("ONBUILD requires at least one argument")
        if trigger == "ONBUILD":
            raise InvalidParameter("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trigger in ("MAINTAINER", "FROM"):
            raise InvalidParameter(f"{trigger} isn't allowed as an ONBUILD trigger")
        inst.data["expression"] = re.sub(r"(?i)^\s*ONBUILD\s*", "", node.original)
    elif name == "healthcheck":
        inst.data["health"] = _healthcheck(values, is_json, flags)
    elif name == "run":
        used = [k for k in ("mount", "network", "security") if k in flags]
        inst.data["flags_used"] = used
    return inst


def _healthcheck(values: list[str], is_json: bool, flags: dict[str, str]) -> dict[str, Any]:
    if not values:
        raise InvalidParameter("HEALTHCHECK requires at least one argument")
    kind = values[0].upper()
    rest = values[1:]
    if kind == "NONE":
        if rest:
            raise InvalidParameter("HEALTHCHECK NONE takes no arguments")
        return {"Test": ["NONE"]}
    if kind != "CMD":
        raise InvalidParameter(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    if not rest or rest == [""]:
        raise InvalidParameter("Missing command after HEALTHCHECK CMD")
    test = ["CMD", *rest] if is_json else ["CMD-SHELL", *rest]
    health: dict[str, Any] = {"Test": test}
    for flag, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod")):
        value = _interval(flags, flag)
        if value:
            health[key] = value
    if flags.get("retries"):
        try:
            retries = int(flags["retries"])
        except ValueError:
            raise InvalidParameter(f'strconv.ParseInt: parsing "{flags["retries"]}": invalid syntax') from None
        if retries < 1:
            raise InvalidParameter(f"--retries must be at least 1 (not {retries})")
        health["Retries"] = retries
    return health


def _parse_nodes(text: str) -> list[Any]:
    try:
        return list(dockerfile.parse_string(text))
    except dockerfile.GoParseError as exc:
        raise ParseError(f"dockerfile parse error: {exc}") from None


def parse(text: str) -> Dockerfile:
    """Parse a Dockerfile into its meta ARGs and stages (moby ``instructions.Parse``).

    :raises ParseError: with dockerd's words (``dockerfile parse error line 2: unknown instruction: FOOBAR``).
    """
    meta: list[Instruction] = []
    stages: list[Stage] = []
    for node in _parse_nodes(text):
        item = _instruction(node)
        if isinstance(item, Stage):
            stages.append(item)
            continue
        if not stages:
            if item.name == "arg":
                meta.append(item)
                continue
            raise ParseError("no build stage in current context")
        stages[-1].commands.append(item)
    return Dockerfile(meta, stages, _escape_token(text))


def parse_line(text: str) -> Instruction:
    """One instruction (an ONBUILD trigger, a commit's ``--change``).

    :raises ParseError: it does not parse, or is a FROM.
    """
    nodes = _parse_nodes(text)
    if len(nodes) != 1:
        raise ParseError("onbuild trigger should be a single expression")
    item = _instruction(nodes[0])
    if isinstance(item, Stage):
        raise ParseError("FROM isn't allowed here")
    return item


def parse_changes(changes: list[str], allowed: tuple[str, ...]) -> list[Instruction]:
    """``--change`` lines of commit and import, each checked against ``allowed`` (moby ``BuildFromConfig``).

    :raises InvalidParameter: ``FROM is not a valid change command``, or a parse error.
    """
    nodes = _parse_nodes("\n".join(changes))
    for node in nodes:
        if node.cmd.lower() not in allowed:
            raise InvalidParameter(f"{node.cmd.lower()} is not a valid change command")
    out = []
    for node in nodes:
        item = _instruction(node)
        assert isinstance(item, Instruction)
        out.append(item)
    return out
