"""The ``engine`` client: docker's everyday commands over the daemon's HTTP API (docker-py's ``APIClient``).

:mod:`~engine.client.cli` holds its global flags, the command registration and the run of a
command; the commands are in :mod:`engine.client.commands`; the ``run``/``create`` flags are
parsed by :mod:`~engine.client.flagparse` and assembled by :mod:`~engine.client.runflags`;
:mod:`~engine.client.hijack` streams ``attach`` and ``exec``. Of the engine it imports only
:mod:`engine.errors`, :mod:`engine.utils` and :mod:`engine.reference` (the program that also
starts the daemon is :mod:`engine.cli`).
"""
