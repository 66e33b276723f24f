"""engine: a Linux container engine on Docker 1.2's architecture.

The daemon is an API server (Falcon under gunicorn) in front of an
:class:`~engine.core.Engine` of named jobs, which drive pluggable graph,
network and exec drivers.
"""

__version__ = "0.1.0"

#: The Docker Remote API version this daemon implements and reports.
API_VERSION = "1.41"
#: The oldest API version a client may ask for.
MIN_API_VERSION = "1.12"
#: The newest API version accepted in a request path (answered as 1.41).
MAX_ACCEPTED_API_VERSION = "1.45"

#: Where the daemon listens, and the client connects, when no ``-H`` (nor ``DOCKER_HOST``) says.
DEFAULT_SOCKET = "/var/run/engine.sock"
DEFAULT_HOST = "unix://" + DEFAULT_SOCKET
