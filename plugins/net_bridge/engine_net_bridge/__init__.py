"""The ``bridge`` network driver for engine (Docker's default network).

Nothing is imported here: the userland proxy runs this package's
:mod:`engine_net_bridge.proxy` under ``python -S`` and must stay small.
"""
