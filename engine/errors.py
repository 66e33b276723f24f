"""The engine's one exception tree.

Every error a job can raise is an :class:`EngineError`. Each class carries the
HTTP status it maps to; the API maps them in exactly one Falcon error handler
(:mod:`engine.api.errors`), and the job layer derives a job's status from them.
Subclasses are one-liners; never match error strings.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises on purpose.

    :param message: the text a user sees (``Error response from daemon: ...``).
    """

    #: HTTP status the API answers with.
    http_status = 500
    #: Message used when none is given; ``str.format`` fields come from kwargs.
    template = "internal error"

    def __init__(self, message: str | None = None, **fields: object) -> None:
        if message is None:
            message = self.template.format(**fields)
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidParameter(EngineError):
    """The request is malformed or asks for something impossible (400)."""

    http_status = 400
    template = "invalid parameter"


class NotFound(EngineError):
    """The object does not exist (404)."""

    http_status = 404
    template = "not found"


class Conflict(EngineError):
    """The request conflicts with the current state (409)."""

    http_status = 409
    template = "conflict"


class NotModified(EngineError):
    """Nothing to do: the object is already in the requested state (304)."""

    http_status = 304
    template = "not modified"


class Unavailable(EngineError):
    """The daemon cannot serve this now (shutting down, not in a swarm) (503)."""

    http_status = 503
    template = "service unavailable"


class Forbidden(EngineError):
    """The operation is not allowed (403)."""

    http_status = 403
    template = "forbidden"


class Unauthorized(EngineError):
    """The registry refused the credentials (401)."""

    http_status = 401
    template = "unauthorized"


class NotSupported(EngineError):
    """Not possible here: a driver on this host, a manifest type (501).

    Graph driver probes raise this (or one of the two subclasses below) and
    driver selection skips the driver, as in seed ch. 4 §4.4.1.
    """

    http_status = 501
    template = "not supported"


class PrerequisitesNotMet(NotSupported):
    """A tool, kernel module or package the driver needs is missing."""

    template = "prerequisites for driver not satisfied"


class IncompatibleFilesystem(NotSupported):
    """The backing file system cannot host the driver (overlay on overlay)."""

    template = "backing file system is unsupported for this driver"


class HostError(EngineError):
    """The host failed us: disk full, a syscall that should work did not (500)."""

    http_status = 500


class RegistryError(EngineError):
    """A registry failed us or sent something wrong: a digest mismatch, a dropped connection (500)."""

    template = "registry error"


class NoSuchContainer(NotFound):
    template = "No such container: {name}"


class NoSuchImage(NotFound):
    template = "No such image: {name}"


class NoSuchJob(NotFound):
    template = "No such job: {name}"


class ShuttingDown(Unavailable):
    template = "engine is shutting down"


class TruncatedArchive(InvalidParameter):
    """A tar or compressed stream ended in the middle of an entry (Go's "unexpected EOF")."""

    template = "unexpected EOF"
