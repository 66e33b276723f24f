"""Registry credentials and authentication: ``X-Registry-Auth``, challenges, tokens.

Clients send credentials with every pull and push in the ``X-Registry-Auth``
header: base64url of a JSON ``AuthConfig`` (seed ch. 10 §4.3 and §5.1), ``e30=``
(``{}``) when they have none. Registries say how they want to be
authenticated in the ``WWW-Authenticate`` header of a 401 (RFC 7235):

* ``Basic realm="..."``: send the user name and password on every request;
* ``Bearer realm="https://auth.example/token",service="registry",scope="..."``:
  get a token from the realm (distribution's token protocol: a GET with basic
  credentials, or a POST with an OAuth2 refresh token, the identity token of
  ``docker login``) and send it as ``Authorization: Bearer <token>``.

:class:`TokenCache` keeps tokens until they expire, so the three parallel
layer downloads of a pull, and the next pull, reuse one token.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.utils import strictjson

LOG = logging.getLogger(__name__)

#: distribution's token client id (``docker/distribution/registry/client/auth``).
CLIENT_ID = "docker"
#: Seconds a token lives when the server does not say (distribution's minimum).
DEFAULT_TOKEN_LIFETIME = 60


@dataclass
class AuthConfig:
    """Credentials for one registry, as the docker CLI sends them (moby ``types.AuthConfig``)."""

    username: str = ""
    password: str = ""
    auth: str = ""
    email: str = ""
    server_address: str = ""
    identity_token: str = ""
    registry_token: str = ""

    @classmethod
    def from_dict(cls, data: Any) -> AuthConfig:
        """Build from the JSON object clients send; keys are matched case-insensitively as Go does.

        An ``auth`` field (base64 of ``user:password``, the form kept in
        ``config.json``) fills in a missing user name and password.
        """
        if not isinstance(data, dict):
            return cls()
        lowered = {str(k).lower(): v for k, v in data.items()}

        def text(key: str) -> str:
            value = lowered.get(key)
            return value if isinstance(value, str) else ""

        conf = cls(
            username=text("username"),
            password=text("password"),
            auth=text("auth"),
            email=text("email"),
            server_address=text("serveraddress"),
            identity_token=text("identitytoken"),
            registry_token=text("registrytoken"),
        )
        if conf.auth and not conf.username:
            try:
                user, sep, password = base64.b64decode(conf.auth).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, sep, password = "", "", ""
            if sep:
                conf.username, conf.password = user, password
        return conf

    @classmethod
    def from_header(cls, value: str | None) -> AuthConfig:
        """Decode an ``X-Registry-Auth`` header (base64url JSON).

        Padding may be missing (docker-py strips none, some clients do), and
        plain base64 is accepted too. As in the seed (ch. 10 §5.1), a header
        that cannot be decoded means no credentials rather than an error: a
        pull of a public image must not fail over it.
        """
        if not value or not value.strip():
            return cls()
        text = value.strip()
        text += "=" * (-len(text) % 4)
        for decode in (base64.urlsafe_b64decode, base64.b64decode):
            try:
                data = strictjson.loads(decode(text.encode()))
            except (binascii.Error, ValueError):
                continue
            return cls.from_dict(data)
        LOG.debug("ignoring an X-Registry-Auth header that is not base64 JSON")
        return cls()

    @property
    def anonymous(self) -> bool:
        """Whether there is nothing to authenticate with."""
        return not (self.username or self.identity_token or self.registry_token)

    def basic(self) -> tuple[str, str] | None:
        """``(user, password)`` for basic auth, or None."""
        if self.username:
            return self.username, self.password
        return None

    def to_dict(self) -> dict[str, str]:
        return {
            "username": self.username,
            "password": self.password,
            "auth": self.auth,
            "email": self.email,
            "serveraddress": self.server_address,
            "identitytoken": self.identity_token,
            "registrytoken": self.registry_token,
        }


@dataclass
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: ``scheme`` (lower case) and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def _skip_spaces(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t":
        i += 1
    return i


def _token(text: str, i: int) -> tuple[str, int]:
    start = i
    while i < len(text) and text[i] not in ' \t,="':
        i += 1
    return text[start:i], i


def _quoted(text: str, i: int) -> tuple[str, int]:
    """A quoted-string starting at ``text[i] == '"'``; backslash escapes the next character."""
    out = []
    i += 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    return "".join(out), i


def parse_challenges(header: str | None) -> list[Challenge]:
    """Parse ``WWW-Authenticate``: ``Scheme k=v, k="v", Scheme2 k=v`` (RFC 7235 §4.1).

    Unparseable parts are skipped: a registry's odd header must not hide a
    challenge we can answer.
    """
    challenges: list[Challenge] = []
    if not header:
        return challenges
    text = header
    i = 0
    current: Challenge | None = None
    while i < len(text):
        i = _skip_spaces(text, i)
        if i < len(text) and text[i] == ",":
            i += 1
            continue
        word, j = _token(text, i)
        if not word:
            i = j + 1
            continue
        k = _skip_spaces(text, j)
        if k < len(text) and text[k] == "=" and current is not None:
            k = _skip_spaces(text, k + 1)
            if k < len(text) and text[k] == '"':
                value, k = _quoted(text, k)
            else:
                value, k = _token(text, k)
            current.params[word.lower()] = value
            i = k
            continue
        current = Challenge(word.lower())
        challenges.append(current)
        i = j
    return challenges


class TokenCache:
    """Bearer tokens by (realm, service, scopes, user) until they expire.

    :param clock: seconds, monotonic (injected by tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}

    def get(self, key: tuple[str, ...]) -> str | None:
        with self._lock:
            entry = self._tokens.get(key)
            if entry is None:
                return None
            token, expires = entry
            if self._clock() >= expires:
                del self._tokens[key]
                return None
            return token

    def put(self, key: tuple[str, ...], token: str, lifetime: float) -> None:
        # Renew a little early: a token that expires in flight costs a retry.
        with self._lock:
            self._tokens[key] = (token, self._clock() + max(1.0, lifetime * 0.9))


def scope_for(repository: str, actions: tuple[str, ...]) -> str:
    """A token scope, ``repository:library/busybox:pull,push``."""
    return f"repository:{repository}:{','.join(actions)}"


def token_from_response(doc: Any) -> tuple[str, float, str]:
    """``(token, lifetime seconds, refresh token)`` from a token server's JSON answer.

    :raises ValueError: the answer holds no token.
    """
    if not isinstance(doc, dict):
        raise ValueError("token response is not a JSON object")
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise ValueError("token response holds no token")
    lifetime = doc.get("expires_in")
    if not isinstance(lifetime, (int, float)) or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME
    refresh = doc.get("refresh_token")
    return token, float(lifetime), refresh if isinstance(refresh, str) else ""
