"""engine: a Linux container engine on Docker 1.2's architecture.

The daemon is an API server (Falcon under gunicorn) in front of an
:class:`~engine.core.Engine` of named jobs, which drive pluggable graph,
network and exec drivers.

The packages stand in layers, bottom to top. A package imports only
packages of lower layers; the packages of one layer do not import each
other. ``tests/test_package_layers.py`` reads the table below and checks every
import statement of ``engine/`` and ``plugins/`` against it::

     1. errors                            the exception tree (and this module: versions, the default address)
     2. utils, reference, apiversion      standard-library helpers (records, Go's time and size formats,
                                          stdcopy, sockets, progress, tables); the image-reference grammar;
                                          the API versions and what each request's version changes
     3. sys                               the kernel: libc through ctypes, cgroups, /proc, safe file systems
     4. archive                           layer tars: compression, safe apply, changes, export, tar-split
     5. drivers                           the driver SDK: the graph, exec and network contracts, selection
     6. core, hookspecs, graphdb, shim, dns  the Engine of jobs and the pluggy hook specs; the link graph;
                                          the per-container shim and the daemon's side of it; the embedded
                                          DNS server's process (its daemon side is in daemon)
     7. graph, plugins, builtins          layers, images and tags; the plugin manager; the built-in jobs
     8. registry                          the distribution client: pull and push into the graph
     9. daemon, api, client               the daemon's services; the HTTP API, which reaches them through
                                          the Engine's jobs only; the ``engine`` client, which talks HTTP only
    10. server, builder                   gunicorn: binds, builds the daemon and the API app, serves;
                                          the classic builder (Dockerfiles into images: drives the life cycle)
    11. admin, cli, testing               engine-admin; the ``engine`` program (client or daemon); test
                                          kits and the drivers' conformance suites

A driver plugin (``plugins/``) imports only the SDK: :mod:`engine.drivers`,
:mod:`engine.errors`, :mod:`engine.archive`, :mod:`engine.sys` (and this
module). The client imports, of the engine, only the libraries of layers 1
to 4 (errors, utils, reference, sys, archive): never a driver, a store or a job.
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

#: Where the daemon listens, and the client connects, when no ``-H`` (nor ``DOCKER_HOST``) says.
DEFAULT_SOCKET = "/var/run/engine.sock"
DEFAULT_HOST = "unix://" + DEFAULT_SOCKET
