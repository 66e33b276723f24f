"""Test kits shipped with the engine, for its tests and for third-party drivers'.

* :mod:`~engine.testing.sandbox`: the pytest plugin that runs a root session in its own namespaces;
* the conformance suites every driver of a kind runs: :mod:`~engine.testing.graphtest`,
  :mod:`~engine.testing.exectest`, :mod:`~engine.testing.nettest` (root tests);
* daemons and peers: :mod:`~engine.testing.daemon` (ours), :mod:`~engine.testing.dockerd` (the
  reference dockerd), :mod:`~engine.testing.registry` (a real registry);
* material: :mod:`~engine.testing.images` (test images), :mod:`~engine.testing.layertar` (layer tars),
  :mod:`~engine.testing.hostexec` (an exec driver stand-in);
* helpers: :mod:`~engine.testing.procs` (processes through /proc), :mod:`~engine.testing.tmux` (a real terminal).
"""
