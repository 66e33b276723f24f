"""Build arguments: ``--build-arg`` values, ``ARG`` declarations and the predefined proxy args (moby ``BuildArgs``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: Args every build accepts without an ARG: the proxy settings (they stay out of the image's history).
BUILTIN_ARGS = frozenset(
    ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy")
)


class BuildArgs:
    """What ``ARG`` made visible, what was given, what was used.

    :param from_options: the request's ``buildargs`` (a value may be None: take it from the environment... of
        the client, which has already done so).
    """

    def __init__(self, from_options: Mapping[str, str | None] | None = None) -> None:
        self.from_options: dict[str, str | None] = dict(from_options or {})
        self.allowed: dict[str, str | None] = {}
        self.meta: dict[str, str | None] = {}
        self.referenced: set[str] = set()

    def clone(self) -> BuildArgs:
        out = BuildArgs(self.from_options)
        out.allowed = dict(self.allowed)
        out.meta = dict(self.meta)
        out.referenced = set(self.referenced)
        return out

    def reset_allowed(self) -> None:
        self.allowed = {}

    def merge_referenced(self, other: BuildArgs) -> None:
        self.referenced |= other.referenced

    def add_arg(self, key: str, value: str | None) -> None:
        self.allowed[key] = value
        self.referenced.add(key)

    def add_meta(self, key: str, value: str | None) -> None:
        self.meta[key] = value

    def referenced_or_not_builtin(self, key: str) -> bool:
        return key in self.allowed or key not in BUILTIN_ARGS

    def _get(self, key: str, mapping: Mapping[str, str | None]) -> tuple[str, bool]:
        default = mapping.get(key)
        exists = key in mapping
        given = self.from_options.get(key)
        if key in self.from_options and given is not None:
            return given, True
        if default is None:
            meta = self.meta.get(key)
            if key in self.meta and meta is not None:
                return meta, True
            return "", False
        return default, exists

    def _all(self, mapping: Mapping[str, str | None]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in list(mapping) + sorted(BUILTIN_ARGS):
            value, ok = self._get(key, mapping)
            if ok:
                out[key] = value
        return out

    def all_allowed(self) -> dict[str, str]:
        return self._all(self.allowed)

    def all_meta(self) -> dict[str, str]:
        return self._all(self.meta)

    def filter_allowed(self, env: Iterable[str]) -> list[str]:
        """``K=V`` for each allowed arg that ``env`` does not set."""
        keys = {item.split("=", 1)[0] for item in env}
        return [f"{k}={v}" for k, v in self.all_allowed().items() if k not in keys]

    def unused(self) -> list[str]:
        """Given args no ARG consumed (for the build's warning)."""
        return [k for k in self.from_options if k not in BUILTIN_ARGS and k not in self.referenced]
