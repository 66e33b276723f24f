"""Driver contracts (graph, network, exec) and their discovery through stevedore."""

#: The seed's graph driver priority, with overlay placed before vfs
#: (ARCHITECTURE §3). Here rather than in :mod:`engine.drivers.graph` so the
#: configuration can use it without importing stevedore.
PRIORITY: tuple[str, ...] = ("aufs", "btrfs", "devmapper", "overlay", "vfs")
