"""Helpers shared by the API resources: parameters, bodies and running jobs."""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import engine as _engine
from engine import apiversion
from engine.api.validation import NO_BODY, decode_body
from engine.core.env import parse_bool
from engine.errors import EngineError, InvalidParameter
from engine.utils import strictjson
from engine.utils.sockets import client_gone

JSON = "application/json"
#: A hijacked stream as it is (a tty's output).
RAW_STREAM = "application/vnd.docker.raw-stream"
#: A hijacked stream of stdcopy frames (stdout and stderr apart).
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"

#: The API version of the request being answered, set by the version
#: middleware in the request's thread; every job a request runs gets it on
#: its env (:data:`engine.apiversion.ENV_KEY`), so handlers and the views they
#: build answer as that version does.
REQUEST_VERSION: contextvars.ContextVar[str] = contextvars.ContextVar("api_version", default=_engine.API_VERSION)


def job_env(env: Mapping[str, Any] | None) -> dict[str, Any]:
    """``env`` with the request's API version added (unless it names one)."""
    out = dict(env or {})
    out.setdefault(apiversion.ENV_KEY, REQUEST_VERSION.get())
    return out


def stream_content_type(tty: bool) -> str:
    """The Content-Type of a logs, attach or exec stream: multiplexed frames without a tty, from
    API 1.42 on; raw before (the framing was the client's to know)."""
    if not tty and apiversion.at_least(REQUEST_VERSION.get(), "1.42"):
        return MULTIPLEXED
    return RAW_STREAM


def query_bool(req: Any, name: str, default: bool = False) -> bool:
    """A query boolean with moby's rules (``1``/``true``/``True`` vs ``0``/``false``/``""``)."""
    value = req.get_param(name)
    if value is None:
        return default
    return parse_bool(value)


def query_int(req: Any, name: str, default: int = 0) -> int:
    value = req.get_param(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidParameter(f"invalid value for {name}: {value!r}") from None


def query_json(req: Any, name: str, default: Any = None) -> Any:
    value = req.get_param(name)
    if value is None or value == "":
        return default
    try:
        return strictjson.loads(value)
    except ValueError as exc:
        raise InvalidParameter(f"invalid JSON in {name}: {exc}") from None


def parse_filters(raw: str | None) -> dict[str, list[str]]:
    """Decode ``filters`` in both shapes clients send.

    The docker CLI sends ``{"name":{"web":true}}``, docker-py sends
    ``{"label":["a=b"]}`` (moby ``filters.FromJSON``).
    """
    if not raw:
        return {}
    try:
        data = strictjson.loads(raw)
    except ValueError as exc:
        raise InvalidParameter(f"invalid filter: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidParameter("invalid filter: want a JSON object")
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out[key] = [k for k, v in value.items() if v]
        elif isinstance(value, list):
            out[key] = [str(v) for v in value]
        elif isinstance(value, str):
            out[key] = [value]
        else:
            raise InvalidParameter(f"invalid filter value for {key!r}")
    return out


def body_stream(req: Any) -> Any:
    """The request body as a stream, chunked or not.

    Falcon's ``bounded_stream`` trusts Content-Length only, and clients send
    ``/images/load`` and ``/build`` bodies chunked; gunicorn's ``wsgi.input``
    (``wsgi.input_terminated``) ends at the end of the body either way.
    """
    if req.env.get("wsgi.input_terminated"):
        return req.stream
    return req.bounded_stream


def read_json(req: Any, required: bool = True, default: Any = None) -> Any:
    """The JSON request body (decoded once, strictly: :func:`engine.api.validation.decode_body`).

    :raises InvalidParameter: malformed JSON, or no body when ``required``.
    """
    value = decode_body(req)
    if value is NO_BODY:
        if required:
            raise InvalidParameter("request body is empty; a JSON object is required")
        return default
    return value


def run_job(engine: Any, name: str, *args: str, env: Mapping[str, Any] | None = None, stdin: Any = None) -> bytes:
    """Run a job to completion and return what it wrote to stdout."""
    job = engine.job(name, *args, env=job_env(env))
    buf = job.stdout.add_buffer()
    if stdin is not None:
        job.stdin.add(stdin)
    job.run()
    return buf.getvalue()


_DONE = object()


def stream_job(
    engine: Any,
    name: str,
    *args: str,
    env: Mapping[str, Any] | None = None,
    stdin: Any = None,
    first_output_timeout: float | None = None,
    client: Any = None,
) -> Iterator[bytes]:
    """Run a job in a thread and return an iterator over its stdout.

    The call waits until the job writes something or ends: an error raised
    before any output propagates here, so the API answers with the error's
    status; later errors are the job's to report inside the stream.

    :param first_output_timeout: stop waiting for the first write after this
        many seconds and start the stream with nothing (for endless streams
        whose headers must be flushed at once, e.g. ``/events``).
    :param client: the client's socket (``gunicorn.socket``): while the job
        writes nothing, it is checked every second, and the job is told to
        stop (``job.stdout.closed``) when the client has gone.
    """
    job = engine.job(name, *args, env=job_env(env))
    chunks: queue.Queue[Any] = queue.Queue()
    job.stdout.add_callback(chunks.put)
    if stdin is not None:
        job.stdin.add(stdin)
    failure: list[EngineError] = []

    def runner() -> None:
        try:
            job.run()
        except EngineError as exc:
            failure.append(exc)
        finally:
            chunks.put(_DONE)

    threading.Thread(target=runner, name=f"job-{name}", daemon=True).start()
    try:
        first = chunks.get(timeout=first_output_timeout)
    except queue.Empty:
        first = b""
    if first is _DONE:
        if failure:
            raise failure[0]
        return iter(())
    return _drain(first, chunks, job, client)


def _drain(first: bytes, chunks: queue.Queue, job: Any, client: Any = None) -> Iterator[bytes]:
    try:
        yield first
        while True:
            try:
                item = chunks.get(timeout=1.0 if client is not None else None)
            except queue.Empty:
                if client_gone(client):
                    return
                continue
            if item is _DONE:
                return
            yield item
    finally:
        # The client went away (or we are done): the job's next write fails
        # quietly and it ends on its own (long jobs watch job.stdout.closed).
        job.stdout.close()


class JobResource:
    """A resource that answers by running jobs on ``engine`` (the route -> job hop).

    :param engine: the :class:`~engine.core.Engine` whose jobs it runs.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def job(self, name: str, *args: str, **env: Any) -> bytes:
        """Run job ``name`` to completion; what it wrote to stdout."""
        return run_job(self.engine, name, *args, env=env)
