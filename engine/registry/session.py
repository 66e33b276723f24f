"""A session with one registry repository: the registry v2 HTTP API (seed ch. 10 §6.2).

Docker 1.2 creates a ``registry.Session`` for every pull and does all of
that pull's traffic through it; so does this engine. A :class:`Session`
holds one endpoint, one repository, the credentials and a pooled
``requests.Session`` (several connections: a pull downloads three layers at
once). It speaks the OCI distribution API:

* ``GET /v2/`` (ping), manifests by tag or digest, tag lists (with ``Link``
  pagination), blobs (with ``Range`` to resume), blob ``HEAD``;
* uploads: ``POST /v2/<name>/blobs/uploads/`` (optionally ``?mount=&from=``,
  a cross-repository mount), ``PATCH`` (streamed, chunked), ``PUT ?digest=``;
  manifest ``PUT``;
* the v1 ``/v1/search`` of an index.

Authentication is negotiated on the first 401: the ``WWW-Authenticate``
challenge says Basic or Bearer (:mod:`engine.registry.auth`), the answer is
remembered for the rest of the session. Idempotent requests are retried
with exponential back-off on connection errors, 5xx answers and 429, honoring
``Retry-After``; registry errors become the engine's exceptions with the
registry's own words (``manifest unknown: manifest unknown``), as Docker
prints them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
import requests.adapters
import urllib3

from engine.errors import EngineError, Forbidden, InvalidParameter, NotFound, RegistryError, Unauthorized, Unavailable
from engine.registry.auth import CLIENT_ID, AuthConfig, Challenge, parse_challenges, scope_for, token_from_response
from engine.registry.endpoints import Endpoint, RegistryService

LOG = logging.getLogger(__name__)

USER_AGENT = "engine (docker/20.10 compatible; python-requests)"

#: Errors that mean the connection failed or broke: worth a retry, and for
#: a download worth resuming.
TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    ConnectionError,
)


class Unreachable(RegistryError):
    """The endpoint could not be reached or its TLS handshake failed: the next endpoint may do."""


class _TLSAdapter(requests.adapters.HTTPAdapter):
    """An adapter with our own SSL context (system CAs + ``certs.d``, client certificate)."""

    def __init__(self, context: Any, **kwargs: Any) -> None:
        self._context = context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)


def error_text(resp: requests.Response) -> str:
    """The registry's errors as Docker prints them: ``code lower case: message``.

    distribution answers ``{"errors":[{"code":"MANIFEST_UNKNOWN","message":...}]}``;
    anything else gives the HTTP status line.
    """
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    messages = []
    if isinstance(doc, dict):
        for err in doc.get("errors") or []:
            if not isinstance(err, dict):
                continue
            code = str(err.get("code") or "unknown").lower().replace("_", " ")
            messages.append(f"{code}: {err.get('message') or ''}".rstrip(": "))
        if not messages and isinstance(doc.get("details"), str):
            messages.append(doc["details"])
    if messages:
        return messages[0] if len(messages) == 1 else "errors:\n" + "\n".join(messages)
    return f"received unexpected HTTP status: {resp.status_code} {resp.reason}"


def raise_for(resp: requests.Response, what: str = "") -> None:
    """Raise the engine error for a failed registry answer.

    :param what: prefix for the message (``manifest for x:y not found``).
    """
    if resp.status_code < 400:
        return
    text = error_text(resp)
    message = f"{what}: {text}" if what else text
    status = resp.status_code
    if status == 401:
        raise Unauthorized(message)
    if status == 403:
        raise Forbidden(message)
    if status == 404:
        raise NotFound(message)
    if status == 429:
        raise Unavailable(message)
    if status in (400, 405, 413, 415):
        raise InvalidParameter(message)
    raise RegistryError(message)


class Session:
    """The traffic of one operation with one repository of one registry endpoint.

    :param service: the daemon's registry service (timeouts, token cache).
    :param endpoint: where the registry is.
    :param repository: the repository path (``library/busybox``); empty for
        registry-wide calls (ping, login, search).
    :param auth: the client's credentials.
    :param actions: what the session does (``pull``, ``push``): the token
        scope it asks for.
    :param cancelled: polled between retries; True stops the session.
    """

    def __init__(
        self,
        service: RegistryService,
        endpoint: Endpoint,
        repository: str,
        auth: AuthConfig,
        actions: tuple[str, ...] = ("pull",),
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.service = service
        self.endpoint = endpoint
        self.repository = repository
        self.auth = auth
        self.actions = actions
        self.cancelled = cancelled or (lambda: False)
        self.extra_scopes: list[str] = []
        self.identity_token = ""
        self._authorization: str | None = None
        self._challenge: Challenge | None = None
        self._auth_lock = threading.Lock()
        self.http = requests.Session()
        self.http.headers["User-Agent"] = USER_AGENT
        self.http.trust_env = False  # a daemon does not pick up a user's proxy or netrc
        tls = endpoint.tls
        if endpoint.url.startswith("https://") and (tls.ca_files or tls.client_cert):
            adapter: requests.adapters.HTTPAdapter = _TLSAdapter(tls.context(endpoint.verify), pool_maxsize=10)
        else:
            adapter = requests.adapters.HTTPAdapter(pool_maxsize=10)
        self.http.mount("https://", adapter)
        self.http.mount("http://", adapter)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # URLs
    def url(self, path: str) -> str:
        return self.endpoint.url + path

    def repo_url(self, suffix: str) -> str:
        return self.url(f"/v2/{self.repository}/{suffix}")

    def absolute(self, location: str) -> str:
        """A ``Location`` header made absolute (registries may send a path)."""
        return urljoin(self.endpoint.url + "/", location)

    # authentication
    @property
    def scopes(self) -> list[str]:
        out = [scope_for(self.repository, self.actions)] if self.repository and self.actions else []
        return out + self.extra_scopes

    def _token_request(self, challenge: Challenge, scopes: list[str], offline: bool = False) -> str:
        """Get a bearer token from the challenge's realm (distribution's token protocol)."""
        realm = challenge.params.get("realm", "")
        if not realm.startswith(("http://", "https://")):
            raise RegistryError(f"invalid token realm {realm!r} from {self.endpoint.url}")
        service = challenge.params.get("service", "")
        user = self.auth.username
        key = (realm, service, " ".join(scopes), user, self.auth.identity_token)
        if not offline:
            cached = self.service.tokens.get(key)
            if cached is not None:
                return cached
        timeout = (self.service.connect_timeout, self.service.read_timeout)
        verify = self.endpoint.verify
        try:
            if self.auth.identity_token:
                # An identity token is an OAuth2 refresh token (docker login).
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": self.auth.identity_token,
                    "service": service,
                    "client_id": CLIENT_ID,
                    "scope": " ".join(scopes),
                }
                resp = self.http.post(realm, data=form, timeout=timeout, verify=verify)
            else:
                params: list[tuple[str, str]] = [("service", service)] if service else []
                params += [("scope", s) for s in scopes]
                if user:
                    params.append(("account", user))
                if offline:
                    params += [("offline_token", "true"), ("client_id", CLIENT_ID)]
                resp = self.http.get(realm, params=params, auth=self.auth.basic(), timeout=timeout, verify=verify)
        except TRANSIENT as exc:
            raise RegistryError(f"Get {realm}: {exc}") from None
        if resp.status_code == 401:
            text = error_text(resp) if resp.content else "incorrect username or password"
            raise Unauthorized(text if text.startswith("unauthorized") else f"unauthorized: {text}")
        raise_for(resp, f"Get {realm}")
        try:
            token, lifetime, refresh = token_from_response(resp.json())
        except ValueError as exc:
            raise RegistryError(f"invalid token response from {realm}: {exc}") from None
        if refresh:
            self.identity_token = refresh
        self.service.tokens.put(key, token, lifetime)
        return token

    def _answer(self, challenges: list[Challenge]) -> str:
        """The ``Authorization`` value answering a 401's challenges."""
        if self.auth.registry_token:
            return f"Bearer {self.auth.registry_token}"
        for challenge in challenges:
            if challenge.scheme == "bearer":
                self._challenge = challenge
                return f"Bearer {self._token_request(challenge, self.scopes)}"
        for challenge in challenges:
            if challenge.scheme == "basic":
                self._challenge = challenge
                creds = self.auth.basic()
                if creds is None:
                    raise Unauthorized("unauthorized: no basic auth credentials")
                return requests.auth._basic_auth_str(*creds)
        schemes = ", ".join(c.scheme for c in challenges) or "none"
        raise Unauthorized(
            f"unauthorized: the registry asks for an authentication scheme we do not support ({schemes})"
        )

    def add_scope(self, scope: str) -> None:
        """Ask for one more scope (a mount needs ``pull`` on the source repository)."""
        with self._auth_lock:
            if scope not in self.extra_scopes:
                self.extra_scopes.append(scope)
                if self._challenge is not None and self._challenge.scheme == "bearer":
                    self._authorization = None

    # requests
    def request(
        self,
        method: str,
        url: str,
        *,
        retry: bool | None = None,
        stream: bool = False,
        headers: dict[str, str] | None = None,
        data: Any = None,
        allow_404: bool = False,
        what: str = "",
        timeout: float | None = None,
    ) -> requests.Response:
        """Send a request, authenticating on a 401 and retrying transient failures.

        :param retry: retry on transient errors; default for GET and HEAD
            (a streamed body cannot be sent twice).
        :param allow_404: return a 404 instead of raising.
        :param what: prefix of error messages.
        :raises EngineError: the registry's answer as an engine error, or
            :class:`RegistryError` when it cannot be reached.
        """
        if retry is None:
            retry = method in ("GET", "HEAD")
        attempts = self.service.retries if retry else 1
        delay = self.service.backoff
        authenticated_retry = False
        attempt = 0
        while True:
            attempt += 1
            hdrs = dict(headers or {})
            with self._auth_lock:
                if self._authorization:
                    hdrs["Authorization"] = self._authorization
            try:
                resp = self.http.request(
                    method,
                    url,
                    headers=hdrs,
                    data=data,
                    stream=stream,
                    allow_redirects=True,
                    verify=self.endpoint.verify,
                    timeout=(self.service.connect_timeout, timeout or self.service.read_timeout),
                )
            except TRANSIENT as exc:
                if attempt >= attempts or self.cancelled() or not retryable(exc):
                    kind = RegistryError if retryable(exc) else Unreachable
                    raise kind(f"{method} {url}: {_reason(exc)}") from None
                LOG.info("%s %s failed (%s); retrying in %.1fs", method, url, _reason(exc), delay)
                self._sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if resp.status_code == 401 and not authenticated_retry and (data is None or isinstance(data, bytes)):
                challenges = parse_challenges(resp.headers.get("WWW-Authenticate"))
                resp.close()
                authenticated_retry = True
                value = self._answer(challenges)
                with self._auth_lock:
                    self._authorization = value
                attempt -= 1  # the challenge round trip is not a failed attempt
                continue
            if (resp.status_code >= 500 or resp.status_code == 429) and attempt < attempts and not self.cancelled():
                wait = _retry_after(resp, delay)
                LOG.info("%s %s: %s; retrying in %.1fs", method, url, resp.status_code, wait)
                resp.close()
                self._sleep(wait)
                delay = min(delay * 2, 30.0)
                continue
            if resp.status_code == 404 and allow_404:
                return resp
            if resp.status_code >= 400:
                if (
                    resp.status_code == 401
                    and self.auth.anonymous
                    and self._challenge is not None
                    and self._challenge.scheme == "basic"
                ):
                    resp.close()
                    raise Unauthorized("unauthorized: no basic auth credentials")
                try:
                    raise_for(resp, what)
                finally:
                    resp.close()
            return resp

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.cancelled():
                raise EngineError("operation cancelled")
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    # the v2 API
    def ping(self) -> requests.Response:
        """``GET /v2/`` without credentials: tells whether this is a v2 registry and how it authenticates.

        :raises RegistryError: it cannot be reached or is not a v2 registry.
        """
        try:
            resp = self.http.get(
                self.url("/v2/"),
                verify=self.endpoint.verify,
                timeout=(self.service.connect_timeout, self.service.read_timeout),
            )
        except TRANSIENT as exc:
            raise Unreachable(f"Get {self.url('/v2/')}: {_reason(exc)}") from None
        if resp.status_code not in (200, 401):
            raise_for(resp, f"Get {self.url('/v2/')}")
            raise RegistryError(f"Get {self.url('/v2/')}: not a v2 registry (status {resp.status_code})")
        return resp

    def login(self) -> str:
        """Check the credentials against the registry; returns an identity token, if the registry gave one.

        :raises Unauthorized: the registry refused them.
        """
        resp = self.ping()
        if resp.status_code == 200:
            return ""
        challenges = parse_challenges(resp.headers.get("WWW-Authenticate"))
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None and not self.auth.registry_token:
            if self.auth.anonymous:
                raise Unauthorized("unauthorized: username and password are required")
            token = self._token_request(bearer, [], offline=True)
            self._authorization = f"Bearer {token}"
        else:
            self._authorization = self._answer(challenges)
        try:
            check = self.http.get(
                self.url("/v2/"),
                headers={"Authorization": self._authorization},
                verify=self.endpoint.verify,
                timeout=(self.service.connect_timeout, self.service.read_timeout),
            )
        except TRANSIENT as exc:
            raise RegistryError(f"Get {self.url('/v2/')}: {_reason(exc)}") from None
        if check.status_code == 401:
            raise Unauthorized(
                error_text(check)
                if check.content
                else f"unauthorized: login attempt to {self.url('/v2/')} failed with status: 401 Unauthorized"
            )
        raise_for(check, f"login attempt to {self.url('/v2/')} failed")
        return self.identity_token

    def get_manifest(self, reference: str, accept: Iterable[str], what: str = "") -> tuple[bytes, str, str]:
        """``GET /v2/<name>/manifests/<tag|digest>``.

        :returns: ``(body, media type, Docker-Content-Digest or "")``.
        """
        resp = self.request(
            "GET", self.repo_url(f"manifests/{reference}"), headers={"Accept": ", ".join(accept)}, what=what
        )
        body = resp.content
        media_type = resp.headers.get("Content-Type", "").split(";", 1)[0].strip()
        return body, media_type, resp.headers.get("Docker-Content-Digest", "")

    def tags(self) -> list[str]:
        """Every tag of the repository, following ``Link`` pagination."""
        out: list[str] = []
        url: str | None = self.repo_url("tags/list")
        while url:
            resp = self.request("GET", url, what=f"listing tags of {self.repository}")
            try:
                doc = resp.json()
            except ValueError:
                raise RegistryError(f"invalid tag list from {url}") from None
            out += [t for t in (doc.get("tags") or []) if isinstance(t, str)]
            link = resp.links.get("next", {}).get("url")
            url = self.absolute(link) if link else None
        return out

    def get_blob(self, digest: str, offset: int = 0) -> requests.Response:
        """A streamed ``GET`` of a blob, from ``offset`` with a ``Range`` header."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        return self.request(
            "GET", self.repo_url(f"blobs/{digest}"), stream=True, headers=headers, what=f"fetching blob {digest}"
        )

    def blob_size(self, digest: str) -> int | None:
        """``HEAD`` of a blob: its size, or None when the repository does not have it."""
        resp = self.request("HEAD", self.repo_url(f"blobs/{digest}"), allow_404=True)
        resp.close()
        if resp.status_code == 404:
            return None
        try:
            return int(resp.headers.get("Content-Length", ""))
        except ValueError:
            return -1

    def start_upload(self, mount: str | None = None, source: str | None = None) -> tuple[bool, str]:
        """``POST /v2/<name>/blobs/uploads/``, optionally mounting ``mount`` from repository ``source``.

        :returns: ``(True, "")`` when the mount worked (201), else
            ``(False, upload location)``.
        """
        url = self.repo_url("blobs/uploads/")
        if mount and source:
            url += "?" + urlencode({"mount": mount, "from": source})
        resp = self.request("POST", url, retry=True, data=b"", what="starting a blob upload")
        resp.close()
        if resp.status_code == 201:
            return True, ""
        location = resp.headers.get("Location")
        if resp.status_code != 202 or not location:
            raise RegistryError(f"unexpected answer to a blob upload request: {resp.status_code}")
        return False, self.absolute(location)

    def upload_chunks(self, location: str, chunks: Iterable[bytes]) -> str:
        """Stream ``chunks`` in one chunked ``PATCH``; returns the next location."""
        resp = self.request(
            "PATCH",
            location,
            data=chunks,
            retry=False,
            what="uploading a blob",
            headers={"Content-Type": "application/octet-stream"},
        )
        resp.close()
        return self.absolute(resp.headers.get("Location") or location)

    def finish_upload(self, location: str, digest: str, body: bytes = b"") -> str:
        """``PUT <location>&digest=`` (with the whole blob in ``body`` for a monolithic upload)."""
        parts = urlsplit(location)
        query = parse_qsl(parts.query, keep_blank_values=True) + [("digest", digest)]
        url = urlunsplit(parts._replace(query=urlencode(query)))
        resp = self.request(
            "PUT",
            url,
            data=body,
            retry=False,
            what="completing a blob upload",
            headers={"Content-Type": "application/octet-stream"},
        )
        resp.close()
        got = resp.headers.get("Docker-Content-Digest")
        if got and got != digest:
            raise RegistryError(f"the registry stored blob {got}, we sent {digest}")
        return digest

    def upload_blob(self, digest: str, body: bytes) -> None:
        """Monolithic upload: ``POST`` then one ``PUT`` with the whole blob."""
        _, location = self.start_upload()
        self.finish_upload(location, digest, body)

    def put_manifest(self, reference: str, media_type: str, body: bytes) -> str:
        """``PUT /v2/<name>/manifests/<tag>``; returns the digest the registry gives it."""
        resp = self.request(
            "PUT",
            self.repo_url(f"manifests/{reference}"),
            data=body,
            retry=True,
            headers={"Content-Type": media_type},
            what="uploading the manifest",
        )
        resp.close()
        return resp.headers.get("Docker-Content-Digest", "")

    def search(self, term: str, limit: int) -> Any:
        """The index's ``GET /v1/search?q=&n=``; its JSON answer.

        :raises NotFound: the registry has no search endpoint.
        """
        resp = self.request(
            "GET", self.url("/v1/search?" + urlencode({"q": term, "n": str(limit)})), allow_404=True, what="searching"
        )
        if resp.status_code == 404:
            raise NotFound("no search endpoint")
        try:
            return resp.json()
        except ValueError:
            raise RegistryError(f"invalid search results from {self.endpoint.url}") from None


def retryable(exc: BaseException) -> bool:
    """Whether a transport error is worth a retry.

    A connection that broke or stalled is (the registry dropped it); one that
    could not be made at all (refused, no route, unknown host) or a failed TLS
    handshake is not: retrying would only delay the fallback to the next
    endpoint (https -> http for an insecure registry) or the error.
    """
    if isinstance(exc, (requests.exceptions.SSLError, requests.exceptions.ConnectTimeout)):
        return False
    if isinstance(exc, requests.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", exc.args[0])
        if isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.SSLError)):
            return False
    return True


def _reason(exc: BaseException) -> str:
    """A short reason for a transport error (requests nests them deeply)."""
    text = str(exc)
    for marker in ("Caused by ", "Failed to establish a new connection: "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip("()'\" ") or type(exc).__name__


def _retry_after(resp: requests.Response, default: float) -> float:
    value = resp.headers.get("Retry-After", "")
    try:
        return min(max(float(value), 0.0), 60.0)
    except ValueError:
        return default


def iter_raw(resp: requests.Response, size: int = 1 << 20) -> Iterator[bytes]:
    """The body's bytes as sent (no content decoding), in chunks of up to ``size``."""
    raw = resp.raw
    while True:
        data = raw.read(size, decode_content=False)
        if not data:
            return
        yield data


T = TypeVar("T")


def first_working(
    service: RegistryService,
    endpoints: list[Endpoint],
    repository: str,
    auth: AuthConfig,
    actions: tuple[str, ...],
    attempt: Callable[[Session], T],
    cancelled: Callable[[], bool] | None = None,
) -> tuple[Session, T]:
    """Run ``attempt`` on a session with each endpoint in turn until one works.

    The next endpoint is tried when this one cannot be reached (https that
    is really http, a registry that is down), and for a mirror on any error
    (it may lack the image: the registry itself has it), as moby does.

    :returns: the session that worked (the caller closes it) and what
        ``attempt`` returned.
    :raises EngineError: the error of the last endpoint tried.
    """
    if not endpoints:
        raise RegistryError("no registry endpoint to try")
    last: EngineError | None = None
    for endpoint in endpoints:
        session = Session(service, endpoint, repository, auth, actions, cancelled)
        try:
            result = attempt(session)
        except EngineError as exc:
            session.close()
            if endpoint.mirror or isinstance(exc, Unreachable):
                LOG.info("endpoint %s failed (%s); trying the next one", endpoint.url, exc)
                last = exc
                continue
            raise
        service.worked(endpoint)
        return session, result
    assert last is not None
    raise last
