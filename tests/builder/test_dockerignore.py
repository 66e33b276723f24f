"""``.dockerignore`` patterns with moby's rules."""

from __future__ import annotations

import pytest

from engine.builder.dockerignore import PatternMatcher, read_patterns
from engine.errors import InvalidParameter


def test_read_patterns_trims_comments_and_cleans():
    text = "\ufeff# comment\n  ignored  \n\n\t\n!  ignored/keep \n/abs/path\n./x/../y\n#*\n"
    assert read_patterns(text) == ["ignored", "!ignored/keep", "abs/path", "y"]


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        (["ignored"], "ignored", True),
        (["ignored"], "ignored/subdir/file", True),
        (["ignored", "!ignored/subdir/keep"], "ignored/subdir/keep", False),
        (["ignored", "!ignored/subdir/keep"], "ignored/subdir/other", True),
        (["*.log"], "a.log", True),
        (["*.log"], "dir/a.log", False),
        (["**/*.log"], "dir/sub/a.log", True),
        (["**/*.log"], "a.log", True),
        (["dir/**"], "dir/a/b", True),
        (["dir/**/x"], "dir/x", True),
        (["dir/**/x"], "dir/a/b/x", True),
        (["a?c"], "abc", True),
        (["a?c"], "a/c", False),
        (["[a-c]x"], "bx", True),
        (["[a-c]x"], "dx", False),
        (["*", "!Dockerfile"], "Dockerfile", False),
        (["*", "!Dockerfile"], "other", True),
        (["a.b"], "axb", False),
        (["\\*"], "*", True),
        (["\\*"], "x", False),
    ],
)
def test_matches(patterns, path, excluded):
    assert PatternMatcher(patterns).matches(path) is excluded


def test_exclusions_and_bad_pattern():
    assert PatternMatcher(["a", "!b"]).exclusions
    assert not PatternMatcher(["a"]).exclusions
    with pytest.raises(InvalidParameter, match='illegal exclusion pattern: "!"'):
        PatternMatcher(["!"])
