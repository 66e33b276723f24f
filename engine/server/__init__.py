"""engine.server."""
