"""Variable expansion and word splitting in Dockerfiles, by the classic builder's rules.

Dockerfile arguments are not run through a shell: the builder expands
``$VAR``, ``${VAR}``, ``${VAR:-word}``, ``${VAR:+word}``, ``${VAR?msg}``
and ``${VAR:?msg}`` itself, removes quotes, honours the escape character
(``\\`` or the ``# escape=`` directive's) and, for instructions that take
several words (``EXPOSE``), splits on unquoted white space. These are the
rules of buildkit's ``shell.Lex`` that dockerd 20.10 uses; the messages are
its messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from engine.errors import InvalidParameter

_SPECIAL = "@*#?-$!0"


def env_map(env: Iterable[str]) -> dict[str, str]:
    """``["K=v", "X"]`` as a dict; a later key wins, a bare ``X`` is empty."""
    out: dict[str, str] = {}
    for item in env:
        key, _, value = item.partition("=")
        out[key] = value
    return out


class _Words:
    """The words being collected while a text is processed."""

    def __init__(self) -> None:
        self.word = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def result(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class _Processor:
    """One pass over one text."""

    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def run(self, stop: str = "") -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        while self.peek():
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(result), words.result()
            if ch in ("'", '"', "$"):
                if ch == "'":
                    piece = self.single_quote()
                elif ch == '"':
                    piece = self.double_quote()
                else:
                    piece = self.dollar()
                result.append(piece)
                if ch == "$":
                    words.add_string(piece)
                else:
                    words.add_raw(piece)
                continue
            ch = self.next()
            if ch == self.escape:
                ch = self.next()
                if not ch:
                    break
                words.add_raw(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop:
            raise _Syntax(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.result()

    def single_quote(self) -> str:
        self.next()
        out = []
        while True:
            ch = self.next()
            if not ch:
                raise _Syntax("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        self.next()
        out = []
        while True:
            ch = self.peek()
            if not ch:
                raise _Syntax("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == self.escape and self.peek() in ('"', "$", self.escape) and self.peek():
                ch = self.next()
            out.append(ch)

    def name(self) -> str:
        ch = self.peek()
        if ch and ch.isdigit():
            start = self.pos
            while self.peek() and self.peek().isdigit():
                self.next()
            return self.text[start : self.pos]
        if ch and ch in _SPECIAL:
            return self.next()
        start = self.pos
        while self.peek() and (self.peek().isalnum() or self.peek() == "_"):
            self.next()
        return self.text[start : self.pos]

    def lookup(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            return self.env[name], True
        return "", False

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            return self.lookup(name)[0]
        self.next()
        if not self.peek():
            raise _Syntax("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise _Syntax("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            return self.lookup(name)[0]
        if ch == "?":
            word = self._operand()
            value, found = self.lookup(name)
            if not found:
                raise _Syntax(f"{name}: {word or 'is not allowed to be unset'}")
            return value
        if ch == ":":
            modifier = self.next()
            word = self._operand()
            value, found = self.lookup(name)
            if modifier == "+":
                return word if value else value
            if modifier == "-":
                return value or word
            if modifier == "?":
                if not found:
                    raise _Syntax(f"{name}: {word or 'is not allowed to be unset'}")
                if not value:
                    raise _Syntax(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            raise _Syntax(f"unsupported modifier ({modifier}) in substitution")
        raise _Syntax("missing ':' in substitution")

    def _operand(self) -> str:
        try:
            word, _ = self.run("}")
        except _Syntax:
            if not self.peek():
                raise _Syntax("syntax error: missing '}'") from None
            raise
        return word


class _Syntax(Exception):
    pass


class Lexer:
    """Expands Dockerfile words with one escape character.

    :param escape: ``\\`` unless the Dockerfile's ``# escape=`` directive says otherwise.
    """

    def __init__(self, escape: str = "\\") -> None:
        self.escape = escape

    def _process(self, text: str, env: Mapping[str, str] | Iterable[str]) -> tuple[str, list[str]]:
        mapping = env if isinstance(env, Mapping) else env_map(env)
        try:
            return _Processor(text, mapping, self.escape).run()
        except _Syntax as exc:
            raise InvalidParameter(f"failed to process {_go_quote(text)}: {exc}") from None

    def word(self, text: str, env: Mapping[str, str] | Iterable[str]) -> str:
        """``text`` expanded and unquoted, as one word (``ProcessWord``)."""
        return self._process(text, env)[0]

    def words(self, text: str, env: Mapping[str, str] | Iterable[str]) -> list[str]:
        """``text`` expanded and split on unquoted white space (``ProcessWords``)."""
        return self._process(text, env)[1]


def _go_quote(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)
