"""The driver SDK: the graph, exec and network driver contracts, their discovery and selection.

One driver of each kind runs in a daemon. The modules:

- :mod:`engine.drivers.graph`, :mod:`engine.drivers.exec`,
  :mod:`engine.drivers.network`: the contract of each kind (an abc class,
  its records and errors) and how the one driver of that kind is chosen
  (``plan``, the same shape for every kind);
- :mod:`engine.drivers.selection`: what every kind's choice shares (the
  :class:`~engine.drivers.selection.DriverConfig` it reads, the
  :class:`~engine.drivers.selection.Selection` it gives, its error);
- :mod:`engine.drivers.discovery`: the installed drivers (stevedore over
  the entry-point groups) and ``select(kind, config)``, the one path the
  daemon and ``engine-admin`` both take.

A third-party driver needs only this package, :mod:`engine.errors`,
:mod:`engine.archive` (layer tars) and :mod:`engine.sys` (kernel helpers).

This module itself stays tiny (the configuration and every container's shim
import it): the in-tree defaults of each kind.
"""

#: The seed's graph driver priority, with overlay placed before vfs
#: (ARCHITECTURE §3); daemon.json's ``storage-driver-priority`` replaces it.
PRIORITY: tuple[str, ...] = ("aufs", "btrfs", "devmapper", "overlay", "vfs")

#: The graph driver of the volumes graph, ``<root>/volumes/<name>`` (seed ch. 4 §4.4.6).
VOLUMES_DRIVER = "vfs"

#: The exec driver when ``--exec-driver`` is not given.
DEFAULT_EXEC_DRIVER = "native"

#: The network driver, unless ``-b none`` turns networking off.
DEFAULT_NETWORK_DRIVER = "bridge"
