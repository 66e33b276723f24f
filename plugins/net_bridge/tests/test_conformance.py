"""The bridge driver against the network driver conformance suite (:mod:`engine.testing.nettest`)."""

from __future__ import annotations

from engine.testing.nettest import NetworkDriverConformance


class TestBridge(NetworkDriverConformance):
    driver_name = "bridge"
