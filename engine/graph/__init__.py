"""engine.graph."""
