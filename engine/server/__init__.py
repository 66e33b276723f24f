"""The daemon's process: ``engine -d`` under gunicorn (ARCHITECTURE §5).

* :mod:`~engine.server.main`: the ``serveapi`` job and :func:`~engine.server.main.run_daemon`
  (configuration, host checks, the pid file of :mod:`~engine.server.pidfile`);
* :mod:`~engine.server.listeners`: the ``-H`` sockets (``unix://``, ``tcp://``, ``fd://``), bound by the master;
* :mod:`~engine.server.app`: the gunicorn application: the master's signals and systemd
  notifications, the worker that builds the :class:`~engine.daemon.daemon.Daemon` and the API app;
* :mod:`~engine.server.worker`: gunicorn's threaded worker, adapted (TLS per listener, hijacks);
* :mod:`~engine.server.replica` and :mod:`~engine.server.replicalink`: the API's read replica, a
  process answering inspects beside the worker, and the worker's side of it;
* :mod:`~engine.server.metrics`: ``--metrics-addr``'s Prometheus text.
"""
