"""The link graph: container names and links in SQLite (seed ch. 4 §4.6).

See :mod:`engine.graphdb.linkgraph` for the schema and its semantics.
"""

from __future__ import annotations

from engine.graphdb.linkgraph import (
    ROOT_ID,
    Edge,
    Entity,
    LinkGraph,
    WalkMeta,
    normalize_path,
    paths_by_depth,
    validate_name,
)

__all__ = [
    "ROOT_ID",
    "Edge",
    "Entity",
    "LinkGraph",
    "WalkMeta",
    "normalize_path",
    "paths_by_depth",
    "validate_name",
]
