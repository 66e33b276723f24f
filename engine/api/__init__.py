"""engine.api."""
