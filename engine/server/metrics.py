"""The daemon's Prometheus metrics, served on ``--metrics-addr`` at ``/metrics`` as dockerd's.

Process model: the gunicorn master binds the metrics address together with
the API's (so a taken port stops start-up at once, and the socket outlives
a worker that is replaced); the worker, where the daemon and all its state
live, serves it from one thread of its own (:class:`MetricsServer`), so a
scrape never waits for an API thread nor an API request for a scrape.

Nothing here is imported unless metrics are on: the idle daemon does not
carry ``prometheus_client``. When they are on, the request path pays one
counter increment (:class:`RequestCounter`) and each job one histogram
observation (:attr:`engine.core.Engine.observer`); the figures that describe
state (containers by state, images, layers) are read only when scraped.

Metric names follow dockerd's where dockerd has the figure
(``engine_daemon_engine_info``, ``engine_daemon_engine_cpus_cpus``,
``engine_daemon_engine_memory_bytes``,
``engine_daemon_container_states_containers``,
``engine_daemon_events_subscribers_total``); the others use the same
``engine_daemon_`` prefix:

- ``engine_daemon_images``, ``engine_daemon_layers{driver}``,
  ``engine_daemon_graphdriver_info{driver,home}``, ``engine_daemon_running_jobs``
- ``engine_daemon_job_duration_seconds{job}`` (histogram) and
  ``engine_daemon_job_errors_total{job}``
- ``engine_daemon_http_requests_total{method,route,code}``: ``route`` is the
  route template (``/containers/{id}/json``), ``unmatched`` for no route
- ``engine_daemon_registry_pulled_bytes_total``,
  ``engine_daemon_registry_pushed_bytes_total``: blob bytes received and sent
- ``engine_daemon_layer_applies_total{driver}``,
  ``engine_daemon_layer_applied_bytes_total{driver}`` and
  ``engine_daemon_layer_apply_seconds{driver}`` (histogram): layers
  registered through the graph driver (pull, load, import)
- the ``process_*`` figures of prometheus_client's process collector.
"""

from __future__ import annotations

import http.server
import logging
import os
import platform
import socket
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import MetricsHandler

import engine as engine_pkg
from engine.utils import host

LOG = logging.getLogger(__name__)

PATH = "/metrics"
#: Job durations run from a millisecond (``version``) to minutes (a pull).
JOB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
LAYER_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Job names become a label; past this many distinct ones, the rest share ``other``.
MAX_JOB_NAMES = 256


class StateCollector:
    """The figures read from the daemon at each scrape.

    :param daemon: the started :class:`~engine.daemon.daemon.Daemon`.
    """

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Any]:
        d = self.daemon
        from engine.builtins import git_commit

        driver = d.driver_name
        info = GaugeMetricFamily(
            "engine_daemon_engine_info",
            "The information related to the engine and the OS it is running on",
            labels=["architecture", "commit", "daemon_id", "graphdriver", "kernel", "os", "os_type", "version"],
        )
        info.add_metric(
            [
                platform.machine(),
                git_commit(),
                d.id,
                driver,
                host.kernel_release(),
                host.operating_system(),
                "linux",
                engine_pkg.__version__,
            ],
            1,
        )
        yield info
        yield GaugeMetricFamily(
            "engine_daemon_engine_cpus_cpus",
            "The number of cpus that the host system of the engine has",
            value=os.cpu_count() or 1,
        )
        yield GaugeMetricFamily(
            "engine_daemon_engine_memory_bytes",
            "The number of bytes of memory that the host system of the engine has",
            value=host.mem_total(),
        )
        states = GaugeMetricFamily(
            "engine_daemon_container_states_containers", "The count of containers in various states", labels=["state"]
        )
        counts = d.container_counts()
        for state in ("running", "paused", "stopped"):
            states.add_metric([state], counts.get(state, 0))
        yield states
        yield GaugeMetricFamily(
            "engine_daemon_images", "The number of images in the image store", value=d.image_count()
        )
        layers = GaugeMetricFamily("engine_daemon_layers", "The number of layers in the layer store", labels=["driver"])
        if d.graph is not None:
            layers.add_metric([driver], len(d.graph.layers.all()))
        yield layers
        graph_info = GaugeMetricFamily(
            "engine_daemon_graphdriver_info", "The graph driver in use", labels=["driver", "home"]
        )
        if d.graphdriver is not None:
            graph_info.add_metric([driver, d.graphdriver.home], 1)
        yield graph_info
        yield GaugeMetricFamily(
            "engine_daemon_events_subscribers_total",
            "The number of current subscribers to events",
            value=d.events.listener_count(),
        )
        yield GaugeMetricFamily(
            "engine_daemon_running_jobs", "The number of jobs running now", value=d.engine.running_jobs
        )


class RequestCounter:
    """Falcon middleware counting API requests by method, route template and status.

    :param counter: the ``engine_daemon_http_requests_total`` counter.
    """

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        # labels() takes a lock and builds a key each time; the children are few.
        self._children: dict[tuple[str, str, int], Any] = {}

    def process_response(self, req: Any, resp: Any, resource: Any, req_succeeded: bool) -> None:  # noqa: ARG002
        key = (req.method, req.uri_template or "unmatched", resp.status_code)
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, self.counter.labels(key[0], key[1], str(key[2])))
        child.inc()


class Metrics:
    """The daemon's metrics in a registry of their own, wired to the daemon.

    Building it makes the daemon report: the engine's job observer, the
    graph's layer observer and ``daemon.metrics`` (the registry jobs'
    transfer counters) are set.

    :param daemon: the started daemon.
    """

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.registry = CollectorRegistry()
        reg = self.registry
        self.job_seconds = Histogram(
            "engine_daemon_job_duration_seconds",
            "How long jobs took, by job name",
            ["job"],
            buckets=JOB_BUCKETS,
            registry=reg,
        )
        self.job_errors = Counter(
            "engine_daemon_job_errors_total", "Jobs that failed, by job name", ["job"], registry=reg
        )
        self.http_requests = Counter(
            "engine_daemon_http_requests_total",
            "API requests by method, route template and status code",
            ["method", "route", "code"],
            registry=reg,
        )
        self._pulled = Counter(
            "engine_daemon_registry_pulled_bytes", "Blob bytes received from registries", registry=reg
        )
        self._pushed = Counter("engine_daemon_registry_pushed_bytes", "Blob bytes sent to registries", registry=reg)
        self.layer_applies = Counter(
            "engine_daemon_layer_applies", "Layers applied through the graph driver", ["driver"], registry=reg
        )
        self.layer_bytes = Counter(
            "engine_daemon_layer_applied_bytes", "Bytes of content of the layers applied", ["driver"], registry=reg
        )
        self.layer_seconds = Histogram(
            "engine_daemon_layer_apply_seconds",
            "How long applying a layer took",
            ["driver"],
            buckets=LAYER_BUCKETS,
            registry=reg,
        )
        reg.register(StateCollector(daemon))
        ProcessCollector(registry=reg)
        self._jobs: dict[str, tuple[Any, Any]] = {}
        self._jobs_lock = threading.Lock()
        self.middleware = RequestCounter(self.http_requests)
        daemon.engine.observer = self.job_done
        daemon.metrics = self
        if daemon.graph is not None:
            daemon.graph.on_layer = self.layer_applied

    def job_done(self, name: str, seconds: float, status: Any) -> None:
        """The engine's observer: one job ended after ``seconds``."""
        children = self._jobs.get(name)
        if children is None:
            with self._jobs_lock:
                label = name if len(self._jobs) < MAX_JOB_NAMES else "other"
                children = self._jobs.setdefault(name, (self.job_seconds.labels(label), self.job_errors.labels(label)))
        children[0].observe(seconds)
        if status is None or int(status) != 0:
            children[1].inc()

    def pulled_bytes(self, count: int) -> None:
        self._pulled.inc(count)

    def pushed_bytes(self, count: int) -> None:
        self._pushed.inc(count)

    def layer_applied(self, layer: Any, seconds: float) -> None:
        """The graph's observer: ``layer`` was just applied and registered."""
        driver = self.daemon.driver_name
        self.layer_applies.labels(driver).inc()
        self.layer_bytes.labels(driver).inc(max(0, layer.size))
        self.layer_seconds.labels(driver).observe(seconds)

    def close(self) -> None:
        """Stop reporting (the daemon is shutting down)."""
        self.daemon.engine.observer = None
        if self.daemon.graph is not None:
            self.daemon.graph.on_layer = None


class _Handler(MetricsHandler):
    """prometheus_client's handler, answering ``/metrics`` only (as dockerd) and logging through ours."""

    def do_GET(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] != PATH:
            self.send_error(404, "404 page not found")
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("metrics: %s %s", self.client_address[0] if self.client_address else "-", format % args)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002
        LOG.warning("metrics: error answering %s", client_address, exc_info=LOG.isEnabledFor(logging.DEBUG))


class MetricsServer:
    """Serves ``metrics`` over HTTP on a socket the master bound and listens on.

    :param metrics: what to serve.
    :param sock: the listening TCP socket.
    """

    def __init__(self, metrics: Metrics, sock: socket.socket) -> None:
        handler = type("EngineMetricsHandler", (_Handler,), {"registry": metrics.registry})
        self.server = _Server(sock.getsockname()[:2], handler, bind_and_activate=False)
        self.server.socket.close()
        self.server.socket = sock
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self.thread.start()
        LOG.info("metrics: serving http://%s:%d%s", *self.server.server_address[:2], PATH)

    def stop(self) -> None:
        """Stop serving; the socket stays open (it is the master's)."""
        self.server.shutdown()
