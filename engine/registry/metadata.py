"""Which registry blobs hold which layers: moby's distribution metadata.

A layer is known locally by its diff ID (sha256 of the uncompressed tar); a
registry knows it by the digest of the compressed blob. Pull learns the
pairs from the manifest and the config; push needs them to skip a layer the
registry already has ("Layer already exists") or to mount it from another
repository of the same registry ("Mounted from ..."). They are kept as moby
keeps them (``image/<driver>/distribution/``)::

    <root>/distribution/
        v2metadata-by-diffid/sha256/<diff hex>   JSON list of
                                                 {"Digest", "SourceRepository", "MediaType"}
        diffid-by-digest/sha256/<blob hex>       the diff ID

Each file is written atomically; losing one only costs an upload.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass

from engine.sys.fs import atomic_write

LOG = logging.getLogger(__name__)

#: Entries kept per diff ID (moby keeps 50).
MAX_ENTRIES = 50


@dataclass(frozen=True)
class BlobSource:
    """A blob holding a layer: its digest, the repository it is known in, its media type."""

    digest: str
    repository: str
    media_type: str = ""

    @property
    def domain(self) -> str:
        return self.repository.split("/", 1)[0]


class DistributionMetadata:
    """The diff ID <-> blob digest records under ``<root>/distribution``.

    :param root: the daemon root.
    """

    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, "distribution")
        self._by_diff = os.path.join(self.dir, "v2metadata-by-diffid", "sha256")
        self._by_digest = os.path.join(self.dir, "diffid-by-digest", "sha256")
        os.makedirs(self._by_diff, mode=0o700, exist_ok=True)
        os.makedirs(self._by_digest, mode=0o700, exist_ok=True)
        self._lock = threading.Lock()

    @staticmethod
    def _hex(digest: str) -> str:
        algo, _, hex_part = digest.partition(":")
        if algo != "sha256" or len(hex_part) != 64 or not all(c in "0123456789abcdef" for c in hex_part):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return hex_part

    def sources(self, diff_id: str) -> list[BlobSource]:
        """Blobs known to hold ``diff_id``, most recent first."""
        try:
            with open(os.path.join(self._by_diff, self._hex(diff_id)), "rb") as fh:
                doc = json.load(fh)
        except (OSError, ValueError):
            return []
        out = []
        for entry in doc if isinstance(doc, list) else []:
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("Digest"), str)
                and isinstance(entry.get("SourceRepository"), str)
            ):
                out.append(BlobSource(entry["Digest"], entry["SourceRepository"], str(entry.get("MediaType") or "")))
        return out

    def diff_id(self, digest: str) -> str | None:
        """The diff ID of blob ``digest``, if known."""
        try:
            with open(os.path.join(self._by_digest, self._hex(digest)), encoding="ascii") as fh:
                return fh.read().strip() or None
        except (OSError, ValueError):
            return None

    def add(self, diff_id: str, source: BlobSource) -> None:
        """Record that ``source`` holds ``diff_id`` (moved to the front if known)."""
        try:
            diff_hex, blob_hex = self._hex(diff_id), self._hex(source.digest)
        except ValueError as exc:
            LOG.debug("not recording distribution metadata: %s", exc)
            return
        with self._lock:
            entries = [
                s for s in self.sources(diff_id) if (s.digest, s.repository) != (source.digest, source.repository)
            ]
            entries.insert(0, source)
            doc = [
                {"Digest": s.digest, "SourceRepository": s.repository, "MediaType": s.media_type}
                for s in entries[:MAX_ENTRIES]
            ]
            try:
                atomic_write(os.path.join(self._by_diff, diff_hex), json.dumps(doc).encode(), mode=0o600)
                atomic_write(os.path.join(self._by_digest, blob_hex), diff_id.encode(), mode=0o600)
            except OSError as exc:
                # Only an optimisation for later pushes: never fail a pull over it.
                LOG.warning("could not record distribution metadata for %s: %s", diff_id[:19], exc)
