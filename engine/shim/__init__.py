"""engine.shim."""
