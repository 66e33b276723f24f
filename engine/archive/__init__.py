"""Layer tars: decompress, apply safely, find a layer's changes, export them, re-create them byte for byte.

This is the seed's "Differ" (moby's ``pkg/archive``), a library below the
graph drivers and the image store. One module per job:

* :mod:`~engine.archive.compression`: gzip, bzip2, xz and zstd detected and
  read (:func:`decompress_stream`, :class:`LayerStream`);
* :mod:`~engine.archive.apply`: :func:`apply_layer` extracts a layer tar in
  one streaming pass, whiteouts applied or translated, nothing ever written
  outside the destination (openat2 ``RESOLVE_IN_ROOT``);
* :mod:`~engine.archive.changeset`: :class:`Change` and :class:`ChangeKind`,
  and :func:`changes` that compares a layer's tree with its parent's;
* :mod:`~engine.archive.export`: :func:`export_changes`, :func:`tar_tree` and
  :func:`tar_entry` stream changes or trees as Docker-compatible tars;
* :mod:`~engine.archive.whiteouts`: the AUFS whiteout names, overlayfs'
  whiteouts and private xattrs, and what in a tree is content;
* :mod:`~engine.archive.tarsplit`: the record that re-creates a layer's
  original tar byte for byte from its files (Docker's tar-split).

The names below (``__all__``) are the public API. With
:mod:`engine.drivers` (the contracts), :mod:`engine.errors` (the exception
tree) and :mod:`engine.sys` (kernel and file-system helpers), this package is
what a third-party driver may import from the engine. It imports nothing of
the engine but those last two, so a driver, the graph contract's naive
differ, the image store and the daemon all use it without an import circle.
"""

from __future__ import annotations

from engine.archive import tarsplit
from engine.archive.apply import apply_layer, clean_name
from engine.archive.changeset import Change, ChangeKind, changes, changes_size, entry_differs, path_key
from engine.archive.compression import LayerStream, decompress_stream, detect_compression
from engine.archive.export import export_changes, tar_entry, tar_tree
from engine.archive.whiteouts import (
    OVERLAY_OPAQUE_XATTR,
    OVERLAY_XATTR_PREFIX,
    WHITEOUT_FORMATS,
    WHITEOUT_LINK_DIR,
    WHITEOUT_META_PREFIX,
    WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
    content_xattrs,
    is_aufs_metadata,
)

__all__ = [
    "OVERLAY_OPAQUE_XATTR",
    "OVERLAY_XATTR_PREFIX",
    "WHITEOUT_FORMATS",
    "WHITEOUT_LINK_DIR",
    "WHITEOUT_META_PREFIX",
    "WHITEOUT_OPAQUE",
    "WHITEOUT_PREFIX",
    "Change",
    "ChangeKind",
    "LayerStream",
    "apply_layer",
    "changes",
    "changes_size",
    "clean_name",
    "content_xattrs",
    "decompress_stream",
    "detect_compression",
    "entry_differs",
    "export_changes",
    "is_aufs_metadata",
    "path_key",
    "tar_entry",
    "tar_tree",
    "tarsplit",
]
