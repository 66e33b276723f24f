"""engine-exec-native: the ``native`` exec driver (namespaces, pivot_root, cgroups, capabilities).

The package itself imports nothing: the ``nsenter`` helper runs as
``python -S -m engine_exec_native.nsenter`` and must start small. The driver
class is :class:`engine_exec_native.driver.NativeDriver`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NativeDriver"]


def __getattr__(name: str) -> Any:
    if name == "NativeDriver":
        from engine_exec_native.driver import NativeDriver

        return NativeDriver
    raise AttributeError(name)
