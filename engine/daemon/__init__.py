"""The daemon: its start-up steps and its services, behind the jobs the API runs.

* :mod:`engine.daemon.daemon` is the :class:`~engine.daemon.daemon.Daemon`:
  configuration checks, the start-up steps that make the services, shutdown.
* The containers: :mod:`~engine.daemon.store` (records, names, lookups),
  :mod:`~engine.daemon.lifecycle` (every transition of a container, its exit,
  the restart policy, the restore at start-up and its repairs after a crash;
  :mod:`~engine.daemon.statemachine` is each container's phase and the slot
  its operations take turns in; :mod:`~engine.daemon.monitor` learns of
  exits) and :mod:`~engine.daemon.hostconfig` (Config/HostConfig
  checked and translated into the exec driver's Command, pure functions);
  :mod:`~engine.daemon.container` is the record itself.
* :mod:`~engine.daemon.execs`, :mod:`~engine.daemon.volumes`,
  :mod:`~engine.daemon.network` (a container's network at start; the
  network driver's jobs), :mod:`~engine.daemon.events`.
* The jobs: :mod:`~engine.daemon.container_jobs` (containers, execs,
  volumes, events) and :mod:`~engine.daemon.jobs` (info) read a job's
  arguments, call one service and write the API's answer; the documents
  they answer with are built in :mod:`~engine.daemon.views`.

``docker start`` runs: the route (:mod:`engine.api.containers`) -> the job
(:func:`~engine.daemon.container_jobs.job_start`) ->
:meth:`LifeCycle.start <engine.daemon.lifecycle.LifeCycle.start>` -> the
shim launcher (:mod:`engine.shim.launcher`), whose shim runs the exec driver.
"""
