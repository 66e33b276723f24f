"""engine-exec-lxc: the ``lxc`` exec driver (LXC 5: ``lxc-start``, liblxc's attach, the freezer).

The package itself imports nothing: the ``attach`` helper runs as
``python -S -m engine_exec_lxc.attach`` and must start small. The driver
class is :class:`engine_exec_lxc.driver.LxcDriver`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LxcDriver"]


def __getattr__(name: str) -> Any:
    if name == "LxcDriver":
        from engine_exec_lxc.driver import LxcDriver

        return LxcDriver
    raise AttributeError(name)
