"""Every pluggy hook of the engine, in one place.

Plugins are broadcast to (every registered plugin is called); drivers are
selected, one per kind, through stevedore and never through these hooks.

Third-party plugins declare an entry point in the group ``engine.plugins``;
the engine's own built-in jobs are registered through the very same hooks
(:mod:`engine.builtins`, :mod:`engine.daemon.jobs`, ...).
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("engine")
hookimpl = pluggy.HookimplMarker("engine")

#: Entry-point group of pluggy plugins.
PLUGIN_GROUP = "engine.plugins"


@hookspec
def engine_register_jobs(engine: Any, daemon: Any) -> None:
    """Register job handlers on the engine with ``engine.register(name, fn)``.

    Called once per engine, after the daemon object exists and before its
    start-up steps run (which themselves run jobs such as
    ``init_networkdriver``).

    :param engine: the :class:`~engine.core.Engine`.
    :param daemon: the :class:`~engine.daemon.Daemon`, or ``None`` when the
        engine runs without one (tests, tools).
    """


@hookspec
def engine_add_routes(app: Any, engine: Any) -> None:
    """Add routes to the Falcon API app.

    :param app: the :class:`falcon.App` being built by ``create_app``.
    :param engine: the engine the resources run jobs on.
    """


@hookspec
def engine_info(engine: Any, info: dict) -> None:
    """Add to or adjust the ``GET /info`` answer before it is sent.

    :param info: the Info dict (1.41 shape); change it in place.
    """


@hookspec
def engine_daemon_started(daemon: Any) -> None:
    """The daemon finished its start-up steps and accepts connections."""


@hookspec
def engine_daemon_shutdown(daemon: Any) -> None:
    """The daemon is shutting down; called before the on-shutdown handlers."""


@hookspec
def engine_container_event(daemon: Any, container: Any, action: str, attributes: dict) -> None:
    """A container changed: ``create``, ``start``, ``die``, ``destroy``, ...

    :param container: the container object.
    :param action: Docker's event action name.
    :param attributes: the event's Actor attributes (``exitCode``, ...).
    """


@hookspec
def engine_image_event(daemon: Any, image_id: str, action: str, attributes: dict) -> None:
    """An image changed: ``pull``, ``load``, ``tag``, ``untag``, ``delete``, ...

    :param image_id: the image ID (``sha256:...``) or reference.
    :param action: Docker's event action name.
    """
