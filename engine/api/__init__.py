"""The Docker Remote API as a Falcon app (:mod:`engine.api.app`).

One module per resource family, each with ``add_routes(app, engine)``:
:mod:`~engine.api.containers`, :mod:`~engine.api.streams` (logs, attach,
stats), :mod:`~engine.api.filesystem` (cp, export, changes),
:mod:`~engine.api.execs`, :mod:`~engine.api.volumes`,
:mod:`~engine.api.networks`, :mod:`~engine.api.images`,
:mod:`~engine.api.registry` and :mod:`~engine.api.system`. A resource turns
the request into one job (:class:`~engine.api.base.JobResource`); errors
become ``{"message": ...}`` in :mod:`~engine.api.errors`.
"""
