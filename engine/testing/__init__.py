"""Test helpers shipped with the engine: the sandbox plugin and conformance suites."""
