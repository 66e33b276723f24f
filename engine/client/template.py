"""The Go-template subset of the docker CLI's ``--format`` flags.

Scripts use a small part of Go's ``text/template``: fields (``{{.State.Pid}}``,
``{{.Names}}``), ``{{json .Config}}``, ``{{range .Mounts}}...{{end}}``,
``{{if .State.Running}}...{{else}}...{{end}}``, ``{{with}}``,
``{{index .Config.Labels "k"}}``, pipes (``{{.Name | lower}}``) and the
CLI's functions (``json join split lower upper title pad truncate``) plus
Go's builtins (``index len printf print println eq ne lt le gt ge and or
not``). This module implements that subset on Python data: dict keys and
object attributes are fields, callables are methods (``{{.Label "k"}}``),
values print the way Go's ``fmt`` prints them (``[a b]``, ``map[k:v]``,
``true``, ``<no value>``).

A ``table`` format (``table {{.ID}}\\t{{.Names}}``) is rendered by
:func:`render_rows`: the header row comes from executing the template with
each field replaced by its column title, as the CLI does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.client.errors import ClientError


class TemplateError(ClientError):
    """A template that does not parse or does not execute."""


class _Missing:
    """The value of a map key that is not there (Go prints ``<no value>``)."""

    def __repr__(self) -> str:
        return "<no value>"

    def __bool__(self) -> bool:
        return False


MISSING = _Missing()


# -- printing like Go's fmt ---------------------------------------------------------------------------------


def go_str(value: Any) -> str:
    """``fmt.Sprint(value)`` for JSON-ish data."""
    if value is MISSING:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{go_str(k)}:{go_str(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    to_str = getattr(value, "__str__", None)
    return to_str() if to_str else str(value)


def go_json(value: Any) -> str:
    """The CLI's ``json`` function: compact, no HTML escaping."""
    if value is MISSING:
        value = None
    if hasattr(value, "to_json"):
        value = value.to_json()
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    raise TypeError(f"cannot encode {type(value).__name__}")


def _truth(value: Any) -> bool:
    if value is MISSING or value is None:
        return False
    if isinstance(value, (bool, int, float, str, list, tuple, dict)):
        return bool(value)
    return True


# -- lexing and parsing -------------------------------------------------------------------------------------


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<pipe>\|)
  | (?P<lp>\()
  | (?P<rp>\))
  | (?P<assign>:=)
  | (?P<comma>,)
""",
    re.VERBOSE,
)


@dataclass
class _Operand:
    kind: str  # field | var | str | num | ident | pipeline
    value: Any
    chain: list[str] = field(default_factory=list)


@dataclass
class _Command:
    args: list[_Operand]


@dataclass
class _Pipeline:
    commands: list[_Command]
    decl: tuple[str, ...] = ()


@dataclass
class _Node:
    kind: str  # text | action | if | range | with
    text: str = ""
    pipe: _Pipeline | None = None
    body: list[_Node] = field(default_factory=list)
    alt: list[_Node] = field(default_factory=list)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = prev_end = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise TemplateError(f"template: unexpected {expr[pos]!r} in command")
        kind = m.lastgroup or ""
        if kind == "field" and out and out[-1][0] == "rp" and m.start() == prev_end:
            # (pipeline).Field: a field of the pipeline's value.
            kind = "chain"
        if kind != "ws":
            out.append((kind, m.group()))
        prev_end = m.end()
        pos = m.end()
    return out


def _parse_pipeline(tokens: list[tuple[str, str]]) -> _Pipeline:
    decl: tuple[str, ...] = ()
    if len(tokens) >= 2 and tokens[0][0] == "var" and tokens[1][0] == "assign":
        decl = (tokens[0][1],)
        tokens = tokens[2:]
    elif len(tokens) >= 4 and [t[0] for t in tokens[:4]] == ["var", "comma", "var", "assign"]:
        decl = (tokens[0][1], tokens[2][1])
        tokens = tokens[4:]
    commands: list[_Command] = []
    args: list[_Operand] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "pipe":
            if not args:
                raise TemplateError("template: missing command before '|'")
            commands.append(_Command(args))
            args = []
        elif kind == "lp":
            depth, j = 1, i + 1
            while j < len(tokens) and depth:
                depth += {"lp": 1, "rp": -1}.get(tokens[j][0], 0)
                j += 1
            if depth:
                raise TemplateError("template: unclosed left paren")
            operand = _Operand("pipeline", _parse_pipeline(tokens[i + 1 : j - 1]))
            if j < len(tokens) and tokens[j][0] == "chain":
                operand.chain = [p for p in tokens[j][1].split(".") if p]
                j += 1
            args.append(operand)
            i = j
            continue
        elif kind == "rp":
            raise TemplateError("template: unexpected right paren")
        elif kind == "str":
            args.append(_Operand("str", json.loads(text)))
        elif kind == "raw":
            args.append(_Operand("str", text[1:-1]))
        elif kind == "num":
            args.append(_Operand("num", float(text) if "." in text else int(text)))
        elif kind == "field":
            args.append(_Operand("field", text, [p for p in text.split(".") if p]))
        elif kind == "var":
            name, *chain = text.split(".")
            args.append(_Operand("var", name, chain))
        elif kind == "ident":
            if text in ("true", "false"):
                args.append(_Operand("num", text == "true"))
            elif text == "nil":
                args.append(_Operand("num", None))
            else:
                args.append(_Operand("ident", text))
        else:
            raise TemplateError(f"template: unexpected {text!r}")
        i += 1
    if args:
        commands.append(_Command(args))
    elif commands:
        raise TemplateError("template: missing command after '|'")
    if not commands:
        raise TemplateError("template: missing value for command")
    return _Pipeline(commands, decl)


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)


def parse(source: str) -> list[_Node]:
    """Parse ``source`` into a tree; :class:`TemplateError` if it is not a valid template."""
    pieces: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(source):
        text = source[pos : m.start()]
        if m.group(1):
            text = text.rstrip()
        pieces.append(("text", text))
        pieces.append(("action", m.group(2).strip()))
        pos = m.end()
        if m.group(3):
            rest = source[pos:]
            pos += len(rest) - len(rest.lstrip())
    pieces.append(("text", source[pos:]))
    if "{{" in "".join(t for k, t in pieces if k == "text"):
        raise TemplateError("template: unclosed action")

    root: list[_Node] = []
    stack: list[tuple[_Node | None, list[_Node]]] = [(None, root)]
    for kind, text in pieces:
        node_list = stack[-1][1]
        if kind == "text":
            if text:
                node_list.append(_Node("text", text=text))
            continue
        if text.startswith("/*"):
            continue
        word = text.split(None, 1)[0] if text else ""
        rest = text[len(word) :].strip()
        if word in ("if", "range", "with"):
            node = _Node(word, pipe=_parse_pipeline(_tokens(rest)))
            node_list.append(node)
            stack.append((node, node.body))
        elif word == "else":
            owner = stack[-1][0]
            if owner is None:
                raise TemplateError("template: unexpected {{else}}")
            stack.pop()
            if rest.startswith(("if ", "with ")):
                # {{else if x}}: an if in the else branch, closed by the owner's {{end}}.
                inner_word, inner_rest = rest.split(None, 1)
                inner = _Node(inner_word, pipe=_parse_pipeline(_tokens(inner_rest)))
                owner.alt.append(inner)
                stack.append((inner, inner.body))
            else:
                stack.append((owner, owner.alt))
        elif word == "end":
            if len(stack) == 1:
                raise TemplateError("template: unexpected {{end}}")
            stack.pop()
        elif not text:
            raise TemplateError("template: missing value for command")
        else:
            node_list.append(_Node("action", pipe=_parse_pipeline(_tokens(text))))
    if len(stack) != 1:
        raise TemplateError("template: unexpected EOF")
    return root


# -- execution ----------------------------------------------------------------------------------------------


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, Mapping):
            item = item.get(key, MISSING)
        elif isinstance(item, (list, tuple, str)):
            try:
                item = item[int(key)]
            except (IndexError, ValueError):
                raise TemplateError(f"template: error calling index: index out of range: {key}") from None
        else:
            raise TemplateError(f"template: error calling index: can't index item of type {type(item).__name__}")
    return item


def _printf(fmt: str, *args: Any) -> str:
    out = []
    it = iter(args)
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        m = re.match(r"%([-+ 0#]*)(\d*)(?:\.(\d+))?([vsdqftxX%])", fmt[i:])
        if m is None:
            out.append(c)
            i += 1
            continue
        flags, width, prec, verb = m.groups()
        i += m.end()
        if verb == "%":
            out.append("%")
            continue
        arg = next(it, MISSING)
        if verb in ("v", "s"):
            text = go_str(arg)
        elif verb == "q":
            text = json.dumps(go_str(arg), ensure_ascii=False)
        elif verb == "d":
            text = str(int(arg)) if isinstance(arg, (int, float)) else f"%!d({go_str(arg)})"
        elif verb == "f":
            text = f"{float(arg if isinstance(arg, (int, float)) else 0):.{int(prec) if prec else 6}f}"
        elif verb == "t":
            text = go_str(arg)
        else:
            text = format(int(arg), verb) if isinstance(arg, int) else go_str(arg).encode().hex()
        if verb in ("v", "s") and prec:
            text = text[: int(prec)]
        if width:
            text = text.ljust(int(width)) if "-" in flags else text.rjust(int(width), "0" if "0" in flags else " ")
        out.append(text)
    return "".join(out)


def _cmp(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def compare(a: Any, *others: Any) -> bool:
        if op is _eq_op:
            return any(_eq_op(a, b) for b in others)
        return op(a, others[0])

    return compare


def _eq_op(a: Any, b: Any) -> bool:
    return a == b


def _title(text: str) -> str:
    return re.sub(r"(^|[^A-Za-z0-9_'])([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


def _truncate(text: str, length: int) -> str:
    return text if len(text) < length else text[:length]


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "json": go_json,
    "split": lambda s, sep: go_str(s).split(sep) if sep else list(go_str(s)),
    "join": lambda items, sep: sep.join(go_str(i) for i in (items or [])),
    "title": lambda s: _title(go_str(s)),
    "lower": lambda s: go_str(s).lower(),
    "upper": lambda s: go_str(s).upper(),
    "pad": lambda s, pre, post: go_str(s) and " " * int(pre) + go_str(s) + " " * int(post),
    "truncate": lambda s, n: _truncate(go_str(s), int(n)),
    "index": _index,
    "len": lambda v: len(v) if v not in (None, MISSING) else 0,
    "print": lambda *a: "".join(go_str(x) for x in a),
    "println": lambda *a: " ".join(go_str(x) for x in a) + "\n",
    "printf": _printf,
    "eq": _cmp(_eq_op),
    "ne": _cmp(lambda a, b: a != b),
    "lt": _cmp(lambda a, b: a < b),
    "le": _cmp(lambda a, b: a <= b),
    "gt": _cmp(lambda a, b: a > b),
    "ge": _cmp(lambda a, b: a >= b),
    "not": lambda v: not _truth(v),
    "and": None,  # type: ignore[dict-item]  # short-circuit: see _call
    "or": None,  # type: ignore[dict-item]
    "slice": lambda v, *ix: v[int(ix[0]) if ix else 0 : int(ix[1]) if len(ix) > 1 else None],
}

#: In a table header every function passes its first argument through.
_HEADER_PASSTHROUGH = ("json", "split", "join", "title", "lower", "upper", "truncate", "pad")


class Template:
    """A parsed template; :meth:`execute` renders it on one value."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.nodes = parse(source)
        self.header_mode = False

    def execute(self, dot: Any) -> str:
        out: list[str] = []
        self._walk(self.nodes, dot, {"$": dot}, out)
        return "".join(out)

    def _walk(self, nodes: Sequence[_Node], dot: Any, variables: dict[str, Any], out: list[str]) -> None:
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "action":
                assert node.pipe is not None
                value = self._pipeline(node.pipe, dot, variables)
                if not node.pipe.decl:
                    out.append(go_str(value))
            elif node.kind == "if":
                assert node.pipe is not None
                if _truth(self._pipeline(node.pipe, dot, variables)):
                    self._walk(node.body, dot, variables, out)
                else:
                    self._walk(node.alt, dot, variables, out)
            elif node.kind == "with":
                assert node.pipe is not None
                value = self._pipeline(node.pipe, dot, variables)
                if _truth(value):
                    self._walk(node.body, value, variables, out)
                else:
                    self._walk(node.alt, dot, variables, out)
            elif node.kind == "range":
                assert node.pipe is not None
                value = self._pipeline(node.pipe, dot, variables)
                items: Iterable[Any]
                if isinstance(value, Mapping):
                    items = [value[k] for k in sorted(value)]
                elif isinstance(value, (list, tuple)):
                    items = value
                elif value in (None, MISSING):
                    items = []
                else:
                    raise TemplateError(f"template: range can't iterate over {go_str(value)}")
                keys: list[Any] = sorted(value) if isinstance(value, Mapping) else list(range(len(list(items))))
                items = list(items)
                if not items:
                    self._walk(node.alt, dot, variables, out)
                for key, item in zip(keys, items):
                    if len(node.pipe.decl) == 2:
                        variables[node.pipe.decl[0]], variables[node.pipe.decl[1]] = key, item
                    elif node.pipe.decl:
                        variables[node.pipe.decl[0]] = item
                    self._walk(node.body, item, variables, out)

    def _pipeline(self, pipe: _Pipeline, dot: Any, variables: dict[str, Any]) -> Any:
        value: Any = MISSING
        for i, cmd in enumerate(pipe.commands):
            value = self._command(cmd, dot, variables, value if i else MISSING, piped=i > 0)
        if len(pipe.decl) == 1:
            variables[pipe.decl[0]] = value
        return value

    def _operand(self, op: _Operand, dot: Any, variables: dict[str, Any]) -> Any:
        if op.kind in ("str", "num"):
            return op.value
        if op.kind == "pipeline":
            value = self._pipeline(op.value, dot, variables)
            return self._fields(value, op.chain, []) if op.chain else value
        if op.kind == "var":
            if op.value not in variables:
                raise TemplateError(f'template: undefined variable "{op.value}"')
            return self._fields(variables[op.value], op.chain, [])
        if op.kind == "field":
            return self._fields(dot, op.chain, [])
        if op.kind == "ident":
            if op.value not in FUNCTIONS:
                raise TemplateError(f'template: function "{op.value}" not defined')
            return self._call(op.value, [], dot, variables)
        raise TemplateError(f"template: bad operand {op.value!r}")

    def _fields(self, value: Any, chain: list[str], args: list[Any]) -> Any:
        for i, name in enumerate(chain):
            last = i == len(chain) - 1
            if isinstance(value, Mapping):
                value = value.get(name, MISSING)
            elif value is None or value is MISSING:
                if self.header_mode:
                    return ""
                raise TemplateError(f"template: nil pointer evaluating .{name}")
            else:
                attr = getattr(value, name, MISSING) if not name.startswith("_") else MISSING
                if attr is MISSING:
                    raise TemplateError(f"template: can't evaluate field {name} in type {type(value).__name__}")
                value = attr
            if callable(value) and not isinstance(value, type):
                value = value(*args) if last else value()
            elif last and args:
                raise TemplateError(f"template: can't give argument to non-function .{name}")
        return value

    def _call(self, name: str, args: list[Any], dot: Any, variables: dict[str, Any]) -> Any:
        if self.header_mode and name in _HEADER_PASSTHROUGH:
            return args[0] if args else ""
        fn = FUNCTIONS[name]
        try:
            return fn(*args)
        except TemplateError:
            raise
        except Exception as exc:
            raise TemplateError(f"template: error calling {name}: {exc}") from None

    def _command(self, cmd: _Command, dot: Any, variables: dict[str, Any], piped_value: Any, piped: bool) -> Any:
        first, rest = cmd.args[0], cmd.args[1:]
        if first.kind == "ident":
            if first.value in ("and", "or"):
                # Short-circuit: later operands are not evaluated once the answer is known.
                operands: list[_Operand | None] = list(rest) + ([None] if piped else [])
                result: Any = MISSING
                for operand in operands:
                    result = piped_value if operand is None else self._operand(operand, dot, variables)
                    if _truth(result) != (first.value == "and"):
                        return result
                return result
            if first.value not in FUNCTIONS:
                raise TemplateError(f'template: function "{first.value}" not defined')
            args = [self._operand(o, dot, variables) for o in rest]
            if piped:
                args.append(piped_value)
            return self._call(first.value, args, dot, variables)
        if first.kind in ("field", "var") and (rest or piped):
            args = [self._operand(o, dot, variables) for o in rest]
            if piped:
                args.append(piped_value)
            base = dot if first.kind == "field" else variables.get(first.value, MISSING)
            return self._fields(base, first.chain, args)
        if rest:
            raise TemplateError(f"template: can't give argument to non-function {first.value}")
        return self._operand(first, dot, variables)


def render(fmt: str, value: Any) -> str:
    """Execute ``fmt`` on ``value`` (what ``inspect --format`` prints, without the newline)."""
    return Template(fmt).execute(value)


def preformat(fmt: str) -> tuple[str, bool]:
    """The CLI's ``Context.preFormat``: strip ``table``, map ``json``, turn ``\\t``/``\\n`` escapes into characters."""
    table = fmt.startswith("table")
    if table:
        fmt = fmt[len("table") :]
    elif fmt == "json":
        fmt = "{{json .}}"
    fmt = fmt.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    return fmt, table


class _Header:
    """Dot for the header row: every field is its column title."""

    def __init__(self, titles: Mapping[str, str]) -> None:
        self.titles = titles

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        title = self.titles.get(name, "")
        return lambda *args: title

    def to_json(self) -> str:
        return ""


def render_rows(
    fmt: str, rows: Iterable[Any], titles: Mapping[str, str], out: Any, minwidth: int = 10, padding: int = 3
) -> None:
    """Print one line per row with ``fmt`` (a ``table`` format gets the header and aligned columns)."""
    from engine.utils.tables import tabwrite

    source, table = preformat(fmt)
    tmpl = Template(source)
    lines = [tmpl.execute(row) for row in rows]
    if not table:
        for line in lines:
            out.write(line + "\n")
        return
    tmpl.header_mode = True
    header = tmpl.execute(_Header(titles))
    tabwrite([header, *lines], out, minwidth=minwidth, padding=padding)
