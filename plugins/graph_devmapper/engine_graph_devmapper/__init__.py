"""engine-graph-devmapper: the devicemapper graph driver (thin provisioning, one thin device per layer)."""

from engine_graph_devmapper.driver import DevmapperDriver

__all__ = ["DevmapperDriver"]
