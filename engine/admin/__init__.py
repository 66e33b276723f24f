"""engine.admin."""
