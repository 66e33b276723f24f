"""engine-graph-btrfs: the btrfs graph driver (subvolumes and snapshots, qgroup quotas)."""

from engine_graph_btrfs.driver import BtrfsDriver

__all__ = ["BtrfsDriver"]
