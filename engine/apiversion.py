"""Docker API versions: comparing them, and the version a job's request asked for.

The daemon reports API :data:`engine.API_VERSION` (1.45, Docker 26) and
answers every version from :data:`engine.MIN_API_VERSION` (1.12) up to it.
A request names its version in the path (``/v1.41/containers/json``); one
without a prefix means the current version. What a response looks like, and
which request fields count, depends on that version exactly as moby's
``docs/api/version-history.md`` says, so a 1.41 client still gets dockerd
20.10's answers while a 1.45 one gets Docker 26's.

The API layer puts the version on the env of every job it runs
(:data:`ENV_KEY`); handlers read it with :func:`of_job` and compare it with
:func:`before` / :func:`at_least` (moby's ``versions.LessThan`` and
``versions.GreaterThanOrEqualTo``).
"""

from __future__ import annotations

from typing import Any

import engine

__all__ = ["ENV_KEY", "at_least", "before", "of_job", "parse"]

#: The job env key that carries the request's API version.
ENV_KEY = "APIVersion"


def parse(version: str) -> tuple[int, int]:
    """``"1.41"`` -> ``(1, 41)``; anything unreadable is ``(0, 0)``."""
    major, _, minor = (version or "").partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return (0, 0)


def before(version: str, than: str) -> bool:
    """Whether ``version`` is older than ``than`` (moby's ``versions.LessThan``)."""
    return parse(version) < parse(than)


def at_least(version: str, than: str) -> bool:
    """Whether ``version`` is ``than`` or newer (moby's ``versions.GreaterThanOrEqualTo``)."""
    return parse(version) >= parse(than)


def of_job(job: Any) -> str:
    """The API version of the request that started ``job`` (the current one when none did)."""
    return job.env.get(ENV_KEY) or engine.API_VERSION
