"""engine.utils."""
