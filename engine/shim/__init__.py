"""The per-container shim: the process that runs a container and outlives the daemon.

* :mod:`engine.shim.shim` is the process (``python -S -m engine.shim <dir>``,
  or forked from :mod:`engine.shim.forkserver`, the daemon's warm launcher);
  :mod:`engine.shim.loop` its I/O loop; :mod:`engine.shim.jsonlog` the
  json-file log it writes.
* :mod:`engine.shim.protocol` is what the daemon and the shim share: file
  names, frames, JSON files (its times are :mod:`engine.utils.timefmt`'s).
* :mod:`engine.shim.launcher` is the daemon's side of a start: it runs the
  launcher, directly or through the fork server, and reads its answer;
  :mod:`engine.shim.client` talks to a running shim: attach, resize, wait,
  state, and the files it leaves.

This package's ``__init__`` imports nothing: the shim imports it first and
must stay small.
"""
