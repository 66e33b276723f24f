"""Whiteouts in their three forms, and what in a layer's tree is content rather than bookkeeping.

A layer deletes what its parents hold with *whiteouts*. In a layer tar, and
in an aufs branch, they are AUFS names (the OCI image spec's too): an empty
``.wh.<name>`` deletes ``<name>``; ``.wh..wh..opq`` in a directory hides
everything the lower layers have in it. overlayfs keeps them its own way in
an upper directory: a 0/0 character device for a deletion and the xattr
``trusted.overlay.opaque=y`` for an opaque directory. The ``whiteouts``
argument of :func:`engine.archive.apply.apply_layer` and
:func:`engine.archive.export.tar_tree` names the form a tree holds
(:data:`WHITEOUT_FORMATS`).

Not content either: aufs' own files at a branch's root
(:func:`is_aufs_metadata`) and overlayfs' ``trusted.overlay.*`` xattrs
(:func:`content_xattrs` leaves them out).
"""

from __future__ import annotations

from engine.errors import InvalidParameter
from engine.sys import fs

WHITEOUT_PREFIX = ".wh."
#: Names below the layer root starting with this are AUFS metadata, not content.
WHITEOUT_META_PREFIX = ".wh..wh."
#: AUFS keeps the targets of hard links across layers here.
WHITEOUT_LINK_DIR = ".wh..wh.plnk"
#: In a directory: "hide everything the lower layers have in me".
WHITEOUT_OPAQUE = ".wh..wh..opq"
#: overlayfs' private xattrs; never layer content.
OVERLAY_XATTR_PREFIX = "trusted.overlay."
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"

#: The forms a tree's whiteouts take: applied as deletions (``aufs``: a
#: layer's full tree), overlayfs' own (``overlay``: an upper directory), or
#: kept as the files they are (``keep``: an aufs branch).
WHITEOUT_FORMATS = ("aufs", "overlay", "keep")


def check_format(whiteouts: str) -> None:
    """Refuse a ``whiteouts`` argument that is not one of :data:`WHITEOUT_FORMATS`.

    :raises InvalidParameter: for any other value.
    """
    if whiteouts not in WHITEOUT_FORMATS:
        raise InvalidParameter(f"unknown whiteout format {whiteouts!r} (one of {', '.join(WHITEOUT_FORMATS)})")


def is_aufs_metadata(name: str) -> bool:
    """Whether a name in an aufs branch is aufs' own bookkeeping rather than layer content.

    aufs keeps ``.wh..wh.aufs`` (the file its whiteouts are hard links of),
    ``.wh..wh.plnk`` (pseudo-links) and ``.wh..wh.orph`` at a branch's root,
    and renames a directory it is removing to ``.wh..wh.<hex>`` first. Only
    ``.wh..wh..opq``, a directory's opaque marker, is content.
    """
    return name.startswith(WHITEOUT_META_PREFIX) and name != WHITEOUT_OPAQUE


def content_xattrs(target: int | str) -> dict[str, bytes]:
    """The xattrs of an entry that belong to its content (overlayfs' own are left out)."""
    return {k: v for k, v in fs.read_xattrs(target).items() if not k.startswith(OVERLAY_XATTR_PREFIX)}
