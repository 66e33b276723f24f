"""engine-graph-overlay: the overlay graph driver (overlayfs, overlay2 layout)."""

from engine_graph_overlay.driver import OverlayDriver

__all__ = ["OverlayDriver"]
