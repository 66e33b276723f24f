"""engine.registry."""
