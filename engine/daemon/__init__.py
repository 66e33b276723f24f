"""engine.daemon."""
