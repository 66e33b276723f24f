"""The registry jobs: ``pull``, ``push``, ``auth`` and ``search`` (seed ch. 10, over the v2 protocol).

Registered through the ``engine_register_jobs`` hook like every built-in
job. The API routes them from ``POST /images/create?fromImage=``,
``POST /images/{name}/push``, ``POST /auth`` and ``GET /images/search``.

``pull`` and ``push`` stream Docker's JSON progress. An error raised before
their first line becomes the HTTP error of the request (``docker pull
nosuch`` gets a 404 with the registry's words); once the stream has started
the error is written into it as ``{"errorDetail":{"message":..},"error":..}``
(the docker CLI prints it and exits 1), and the job still fails.

The transfers (:mod:`~engine.registry.pull`, :mod:`~engine.registry.push`,
and :mod:`~engine.registry.session` with ``requests``) are imported by the
first job that needs them: an idle daemon that never talks to a registry
saves about 10 MB of memory.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from engine import reference as refs
from engine.errors import EngineError, InvalidParameter, NotFound, NotSupported
from engine.hookspecs import hookimpl
from engine.reference import host_of
from engine.registry import DEFAULT_MAX_CONCURRENT_DOWNLOADS, DEFAULT_MAX_CONCURRENT_UPLOADS
from engine.registry.auth import AuthConfig
from engine.registry.endpoints import RegistryService
from engine.registry.manifest import parse_platform
from engine.registry.metadata import DistributionMetadata
from engine.utils.progress import Progress

LOG = logging.getLogger(__name__)

SEARCH_FILTERS = ("is-automated", "is-official", "stars")


class _Tracked:
    """The job's stdout, remembering whether anything was written."""

    def __init__(self, job: Any) -> None:
        self.job = job
        self.used = False

    def write(self, data: bytes) -> None:
        self.used = True
        self.job.stdout.write(data)


def split_search_term(term: str) -> tuple[str, str]:
    """``(registry, what to search)``: ``localhost:5000/foo`` searches ``foo`` on ``localhost:5000``.

    As moby's ``splitReposSearchTerm``: the first component is a registry
    when it has a ``.`` or a ``:`` or is ``localhost``.
    """
    first, slash, rest = term.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return host_of(first), rest
    return refs.DEFAULT_DOMAIN, term


def _bool_filter(name: str, values: list[str]) -> bool | None:
    if not values:
        return None
    value = values[-1].lower()
    if value not in ("true", "false", "1", "0"):
        raise InvalidParameter(f"invalid filter '{name}={values[-1]}'")
    return value in ("true", "1")


def filter_results(results: list[dict], filters: dict[str, list[str]]) -> list[dict]:
    """Apply ``is-automated``, ``is-official`` and ``stars`` as moby's ``SearchRegistryForImages`` does."""
    for key in filters:
        if key not in SEARCH_FILTERS:
            raise InvalidParameter(f"invalid filter '{key}'")
    automated = _bool_filter("is-automated", filters.get("is-automated", []))
    official = _bool_filter("is-official", filters.get("is-official", []))
    stars = 0
    for value in filters.get("stars", []):
        try:
            stars = max(stars, int(value))
        except ValueError:
            raise InvalidParameter(f"invalid filter 'stars={value}'") from None
    out = []
    for item in results:
        if automated is not None and bool(item["is_automated"]) != automated:
            continue
        if official is not None and bool(item["is_official"]) != official:
            continue
        if int(item["star_count"]) < stars:
            continue
        out.append(item)
    return out


def _search_result(doc: Any) -> dict:
    doc = doc if isinstance(doc, dict) else {}
    return {
        "star_count": int(doc.get("star_count") or 0),
        "is_official": bool(doc.get("is_official")),
        "name": str(doc.get("name") or ""),
        "is_automated": bool(doc.get("is_automated")),
        "description": str(doc.get("description") or ""),
    }


class RegistryJobs:
    """The handlers, sharing one :class:`RegistryService` (token cache, endpoint memory) per daemon.

    The service is built on first use: the daemon's graph and root only
    exist once its start-up steps ran, after the jobs were registered. It is
    built again when the mirrors or insecure registries it was built from
    changed (a configuration reload); pulls already running keep theirs.
    """

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self._lock = threading.Lock()
        self._service: RegistryService | None = None
        self._service_from: tuple = ()
        self._metadata: DistributionMetadata | None = None

    @property
    def service(self) -> RegistryService:
        cfg = self.daemon.config
        source = (tuple(cfg.registry_mirrors), tuple(cfg.insecure_registries))
        with self._lock:
            if self._service is None or self._service_from != source:
                self._service = RegistryService.from_config(cfg)
                self._service_from = source
            return self._service

    def _meter(self, direction: str) -> Any:
        """The metrics' byte counter for ``pulled`` or ``pushed``, or None when metrics are off."""
        metrics = getattr(self.daemon, "metrics", None)
        return None if metrics is None else getattr(metrics, f"{direction}_bytes")

    @property
    def metadata(self) -> DistributionMetadata:
        with self._lock:
            if self._metadata is None:
                self._metadata = DistributionMetadata(self.daemon.root)
            return self._metadata

    @staticmethod
    def _finish_stream(out: _Tracked, progress: Progress, exc: EngineError) -> None:
        """Report ``exc`` in the stream if it has started (else the API turns it into the HTTP answer)."""
        if out.used:
            progress.error(str(exc))

    def pull(self, job: Any) -> None:
        """``pull NAME`` with env Tag, Platform, AuthConfig (the raw X-Registry-Auth header)."""
        from engine.registry.pull import Puller, pull_reference

        graph = self.daemon.graph
        ref = pull_reference(job.args[0] if job.args else "", job.env.get("Tag"))
        auth = AuthConfig.from_header(job.env.get("AuthConfig"))
        platform = parse_platform(job.env.get("Platform"))
        out = _Tracked(job)
        progress = Progress(out.write)
        puller = Puller(
            graph,
            self.service,
            self.metadata,
            progress,
            auth,
            platform,
            cancelled=lambda: bool(job.stdout.closed),
            downloads=self.daemon.config.max_concurrent_downloads or DEFAULT_MAX_CONCURRENT_DOWNLOADS,
            on_bytes=self._meter("pulled"),
        )
        waited: list[bool] = []

        def on_wait() -> None:
            waited.append(True)
            progress.message(f"Repository {ref.familiar_name} already being pulled by another client. Waiting.")

        try:
            lines = graph.pulls.run(f"{ref}|{platform or ''}", lambda: puller.pull(ref), on_wait)
        except EngineError as exc:
            self._finish_stream(out, progress, exc)
            raise
        if waited:
            for line in lines:
                progress.message(line)

    def push(self, job: Any) -> None:
        """``push NAME`` with env Tag and AuthConfig."""
        from engine.registry.push import Pusher, push_reference

        graph = self.daemon.graph
        ref = push_reference(job.args[0] if job.args else "")
        tag = job.env.get("Tag") or ref.tag or ""
        repo = ref.repository()
        auth = AuthConfig.from_header(job.env.get("AuthConfig"))
        out = _Tracked(job)
        progress = Progress(out.write)
        pusher = Pusher(
            graph,
            self.service,
            self.metadata,
            progress,
            auth,
            cancelled=lambda: bool(job.stdout.closed),
            uploads=self.daemon.config.max_concurrent_uploads or DEFAULT_MAX_CONCURRENT_UPLOADS,
            on_bytes=self._meter("pushed"),
        )
        pusher.targets(repo, tag)  # nothing to push: an HTTP error, before the stream starts

        def on_wait() -> None:
            progress.message(f"Repository {repo.familiar_name} already being pushed by another client. Waiting.")

        try:
            graph.pushes.run(f"{repo}:{tag}", lambda: pusher.push(repo, tag), on_wait)
        except EngineError as exc:
            self._finish_stream(out, progress, exc)
            raise

    def auth(self, job: Any) -> None:
        """``auth`` with env AuthConfig (the JSON body of ``POST /auth``): check the credentials."""
        from engine.registry.session import Session, first_working

        conf = AuthConfig.from_dict(job.env.get_json("AuthConfig", {}))
        host = host_of(conf.server_address)
        service = self.service
        session, token = first_working(service, service.endpoints(host, pull=False), "", conf, (), Session.login)
        session.close()
        LOG.info("login to %s as %s succeeded", host, conf.username or "(token)")
        job.write_json({"Status": "Login Succeeded", "IdentityToken": token})

    def search(self, job: Any) -> None:
        """``search TERM`` with env Limit, Filters, AuthConfig."""
        term = job.args[0] if job.args else ""
        limit = job.env.get_int("Limit", 25)
        if limit < 1 or limit > 100:
            raise InvalidParameter(f"limit {limit} is outside the range of [1, 100]")
        filters = job.env.get_json("Filters", {}) or {}
        filter_results([], filters)  # check the filter names before asking the registry
        index, remote = split_search_term(term)
        auth = AuthConfig.from_header(job.env.get("AuthConfig"))
        service = self.service
        from engine.registry.session import first_working

        def attempt(session: Any) -> Any:
            try:
                return session.search(remote, limit)
            except NotFound:
                raise NotSupported(f"search is not supported by registry {index}") from None

        session, doc = first_working(service, service.index_endpoints(index), "", auth, (), attempt)
        session.close()
        results = doc.get("results") if isinstance(doc, dict) else None
        if not isinstance(results, list):
            raise NotSupported(f"search is not supported by registry {index}: unexpected answer")
        job.write_json(filter_results([_search_result(r) for r in results], filters)[:limit])


@hookimpl
def engine_register_jobs(engine: Any, daemon: Any) -> None:
    if daemon is None:
        return
    jobs = RegistryJobs(daemon)
    engine.register("pull", jobs.pull)
    engine.register("push", jobs.push)
    engine.register("auth", jobs.auth)
    engine.register("search", jobs.search)
