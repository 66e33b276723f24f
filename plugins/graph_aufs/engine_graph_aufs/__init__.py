"""engine-graph-aufs: the aufs graph driver (union mounts of layer branches, Docker 1.2's default)."""

from engine_graph_aufs.driver import AufsDriver

__all__ = ["AufsDriver"]
