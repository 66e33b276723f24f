"""engine: a Linux container engine on Docker 1.2's architecture.

The daemon is an API server (Falcon under gunicorn) in front of an
:class:`~engine.core.Engine` of named jobs, which drive pluggable graph,
network and exec drivers.
"""

__version__ = "0.1.0"

#: The Docker Remote API version this daemon implements and reports (Docker 26's).
API_VERSION = "1.45"
#: The oldest API version a client may ask for; every version in between is
#: answered with that version's behaviour (:mod:`engine.apiversion`).
MIN_API_VERSION = "1.12"
#: The newest API version accepted in a request path.
MAX_ACCEPTED_API_VERSION = API_VERSION
#: The version the ``engine`` client speaks: its commands read 1.41's shapes,
#: so it works the same against this daemon and against dockerd 20.10.
CLIENT_API_VERSION = "1.41"
