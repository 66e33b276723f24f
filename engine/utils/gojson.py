"""JSON request bodies read the way Go's ``encoding/json`` reads them into dockerd's structs.

Go matches an object's keys to a struct's fields without regard to case
(an exact match is preferred), so ``{"detachKeys": ...}``, which docker-py
sends for exec create, is dockerd's ``DetachKeys``. :func:`fold_keys` gives a
decoded body the struct's spelling, so handlers can look fields up by their
Docker names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["fold_keys"]


def fold_keys(doc: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """``doc`` with every key that names one of ``fields`` in another case renamed to it.

    A key spelled exactly as a field wins over one that differs in case
    only; keys that match no field are kept as they are.
    """
    canonical = {name.lower(): name for name in fields}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = canonical.get(key.lower(), key)
        if name in out and key != name:
            continue  # the exact spelling came first
        out[name] = value
    return out
