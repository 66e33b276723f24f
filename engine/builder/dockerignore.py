"""``.dockerignore``: reading its patterns and matching paths against them.

The rules are moby's (``dockerignore.ReadAll`` and ``fileutils.PatternMatcher``
as dockerd 20.10 and the docker CLI apply them):

* a line starting with ``#`` is a comment; lines are trimmed; blank ones are
  skipped; ``!`` in front makes an exception (a path it matches is
  included again); patterns are cleaned like paths and a leading ``/`` is
  dropped (they are relative to the context);
* ``*`` matches any run of characters but ``/``, ``?`` one character but
  ``/``, ``[...]`` a class, ``\\`` escapes the next character, and ``**``
  any number of directories (``**/x``, ``a/**``, ``a/**/b``);
* a pattern matches a path or any of its parent directories (``ignored``
  excludes ``ignored/subdir/file``); the last matching pattern decides.

The CLI (and ``engine build``) leave out what the file excludes when it
packs the context; the daemon only drops the ``.dockerignore`` and the
Dockerfile themselves when the file names them (moby ``removeDockerfile``).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

from engine.errors import InvalidParameter


def read_patterns(text: str) -> list[str]:
    """The patterns of a ``.dockerignore`` file's text, normalised."""
    patterns: list[str] = []
    for number, line in enumerate(text.splitlines()):
        if number == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = posixpath.normpath(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern.lstrip("/") or "/"
        patterns.append("!" + pattern if invert else pattern)
    return patterns


def _compile(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1  # "**/" is "**"
                out.append(".*" if i >= n else "(.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch in ".$":
            out.append("\\" + ch)
        elif ch == "\\":
            # Escapes the next character; a trailing one stands for itself.
            if i < n:
                out.append("\\" + pattern[i])
                i += 1
            else:
                out.append("\\\\")
        else:
            # As moby does, the rest is handed to the regular expression as
            # it is: "[a-z]" is a class there as in filepath.Match.
            out.append(ch)
    out.append("$")
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error as exc:
        raise InvalidParameter(f"syntax error in pattern {pattern!r}: {exc}") from None


@dataclass(frozen=True)
class _Pattern:
    text: str
    exclusion: bool
    dirs: int
    regex: re.Pattern[str]

    def match(self, path: str) -> bool:
        return self.regex.match(path) is not None


class PatternMatcher:
    """Decides whether a context path is excluded by a list of patterns.

    :raises InvalidParameter: a pattern is ``!`` alone or does not compile.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: list[_Pattern] = []
        for raw in patterns:
            text = raw.strip()
            if not text:
                continue
            exclusion = text.startswith("!")
            if exclusion:
                text = text[1:]
                if not text:
                    raise InvalidParameter('illegal exclusion pattern: "!"')
            text = posixpath.normpath(text)
            self.patterns.append(_Pattern(text, exclusion, len(text.split("/")), _compile(text)))

    @property
    def exclusions(self) -> bool:
        """Whether some pattern is an exception (``!``): then no directory can be skipped whole."""
        return any(p.exclusion for p in self.patterns)

    def matches(self, path: str) -> bool:
        """Whether ``path`` (relative, ``/``-separated) is excluded."""
        path = posixpath.normpath(path)
        parent = posixpath.dirname(path) or "."
        parent_dirs = parent.split("/")
        matched = False
        for pattern in self.patterns:
            hit = pattern.match(path)
            if not hit and parent != "." and pattern.dirs <= len(parent_dirs):
                hit = pattern.match("/".join(parent_dirs[: pattern.dirs]))
            if hit:
                matched = not pattern.exclusion
        return matched


def matches(path: str, patterns: Iterable[str]) -> bool:
    """Whether ``path`` is excluded by ``patterns`` (moby ``fileutils.Matches``)."""
    return PatternMatcher(patterns).matches(path)
