"""engine-graph-vfs: the vfs graph driver (plain directories, full copies)."""

from engine_graph_vfs.driver import VfsDriver

__all__ = ["VfsDriver"]
