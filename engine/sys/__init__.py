"""engine.sys."""
