"""engine.client."""
