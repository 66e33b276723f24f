"""``docker load``: image archives in Docker's format (manifest.json) or as an
OCI image layout (index.json), moby ``image/tarexport/load.go``.

The archive is first unpacked into a private temporary directory under the
daemon root (its manifest comes last in the stream, so layers cannot be
applied as they arrive), with the same confined extraction as layers. Every
file is then opened relative to that directory with openat2
``RESOLVE_IN_ROOT``, so paths in the manifest cannot reach outside it.
Layers are registered through the graph with the diff IDs from the image
config, which verifies each one; a failure leaves no new image or layer.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any, cast

from engine import archive
from engine import reference as refs
from engine.errors import InvalidParameter, NotSupported, TruncatedArchive
from engine.graph.graph import Graph
from engine.graph.images import Image, parse_config
from engine.graph.layers import chain_id
from engine.sys import libc
from engine.sys.fs import safe_rmtree
from engine.utils import strictjson
from engine.utils.progress import Progress

LOG = logging.getLogger(__name__)

INDEX_MEDIA_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}


class _Dir:
    """Files of the unpacked archive, opened confined to its directory."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)

    def exists(self, name: str) -> bool:
        try:
            os.close(self.open(name))
        except (OSError, InvalidParameter):
            return False
        return True

    def open(self, name: str) -> int:
        if not isinstance(name, str) or not name:
            raise InvalidParameter(f"invalid path in archive manifest: {name!r}")
        try:
            return libc.openat2(self.fd, name, os.O_RDONLY, resolve=libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS)
        except FileNotFoundError:
            raise InvalidParameter(f"invalid archive: {name} is missing") from None

    def read(self, name: str, limit: int = 64 << 20) -> bytes:
        with os.fdopen(self.open(name), "rb") as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise InvalidParameter(f"invalid archive: {name} is too large")
        return data

    def read_json(self, name: str) -> Any:
        try:
            return strictjson.loads(self.read(name))
        except ValueError as exc:
            raise InvalidParameter(f"invalid archive: {name} is not valid JSON: {exc}") from None


class _Counting:
    """A file reader that reports how far it got."""

    def __init__(self, fh: io.BufferedIOBase, report: Callable[[int], None]) -> None:
        self._fh = fh
        self._report = report
        self.done = 0

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.done += len(data)
        self._report(self.done)
        return data

    def readinto(self, buffer: Any) -> int:
        n = self._fh.readinto(buffer)
        self.done += n or 0
        self._report(self.done)
        return n


def _blob(digest: str) -> str:
    algo, _, hex_part = digest.partition(":")
    if algo != "sha256" or len(hex_part) != 64:
        raise InvalidParameter(f"invalid archive: unsupported digest {digest!r}")
    return f"blobs/sha256/{hex_part}"


def _manifest_entries(files: _Dir) -> list[dict]:
    """Entries ``{"Config", "Layers", "RepoTags"}`` from either format."""
    if files.exists("manifest.json"):
        entries = files.read_json("manifest.json")
        if not isinstance(entries, list):
            raise InvalidParameter("invalid archive: manifest.json is not a list")
        return entries
    if files.exists("index.json"):
        return _oci_entries(files, files.read_json("index.json"))
    if files.exists("repositories"):
        raise NotSupported("legacy (pre-1.10, v1) image archives are not supported; save the image with a newer Docker")
    raise InvalidParameter("invalid archive: no manifest.json or index.json (is this a docker save archive?)")


def _oci_entries(files: _Dir, index: dict, tag: str | None = None) -> list[dict]:
    entries = []
    for desc in index.get("manifests") or []:
        annotations = desc.get("annotations") or {}
        name = annotations.get("io.containerd.image.name") or tag
        ref_name = annotations.get("org.opencontainers.image.ref.name")
        if name is None and ref_name and ("/" in ref_name or ":" in ref_name):
            name = ref_name
        if desc.get("mediaType") in INDEX_MEDIA_TYPES:
            nested = files.read_json(_blob(desc["digest"]))
            platforms = [
                d
                for d in nested.get("manifests") or []
                if (d.get("platform") or {}).get("os", "linux") == "linux"
                and (d.get("platform") or {}).get("architecture", "amd64") == _arch()
            ]
            entries += _oci_entries(files, {"manifests": platforms[:1]}, name)
            continue
        manifest = files.read_json(_blob(desc["digest"]))
        entries.append(
            {
                "Config": _blob(manifest["config"]["digest"]),
                "Layers": [_blob(layer["digest"]) for layer in manifest.get("layers") or []],
                "RepoTags": [name] if name else [],
            }
        )
    return entries


def _arch() -> str:
    from engine.utils.host import goarch

    return goarch()


def load(graph: Graph, stream: IO[bytes], progress: Progress, quiet: bool = False) -> list[Image]:
    """Load every image of an archive; report what was loaded on ``progress``.

    :raises InvalidParameter: a corrupt archive, a layer whose content does
        not match its diff ID, a bad manifest; no new image is left behind.
    """
    tmp = tempfile.mkdtemp(prefix="load-", dir=os.environ.get("TMPDIR"))
    loaded: list[Image] = []
    try:
        try:
            archive.apply_layer(tmp, stream, whiteouts="aufs")
        except TruncatedArchive:
            # dockerd's words for an archive that ends early (its chrootarchive's untar).
            raise TruncatedArchive("Error processing tar file(exit status 1): unexpected EOF") from None
        files = _Dir(tmp)
        try:
            with graph.pinned() as pin:
                for entry in _manifest_entries(files):
                    loaded.append(_load_one(graph, files, entry, progress, quiet, pin))
        finally:
            files.close()
    except BaseException:
        removed = graph.gc()
        if removed:
            LOG.info("load failed; removed %d layers it had registered", len(removed))
        raise
    finally:
        safe_rmtree(tmp)
    return loaded


def _load_one(
    graph: Graph, files: _Dir, entry: dict, progress: Progress, quiet: bool, pin: Callable[[str], None]
) -> Image:
    config_path = entry.get("Config")
    if not isinstance(config_path, str):
        raise InvalidParameter("invalid archive: a manifest.json entry has no Config")
    raw = files.read(config_path)
    config = parse_config(raw)
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    layer_paths = entry.get("Layers") or []
    if len(layer_paths) != len(diff_ids):
        raise InvalidParameter(
            f"invalid manifest, layers length mismatch: expected {len(diff_ids)}, got {len(layer_paths)}"
        )
    parent = None
    for path, diff in zip(layer_paths, diff_ids):
        chain = chain_id(parent, diff)
        if graph.layers.exists(chain):
            pin(chain)
            parent = chain
            continue
        short = diff.split(":", 1)[1][:12]
        fd = files.open(path)
        total = os.fstat(fd).st_size
        with os.fdopen(fd, "rb") as fh:

            def report(done: int, short: str = short, total: int = total) -> None:
                if not quiet:
                    progress.update("Loading layer", short, done, total)

            reader = _Counting(fh, report)
            layer, _ = graph.register_layer(archive.decompress_stream(cast(IO[bytes], reader)), parent, diff, pin)
        if not quiet:
            progress.update("Loading layer", short, total, total, force=True)
        parent = layer.chain_id
    image, _ = graph.create_image(raw)
    tags = [t for t in entry.get("RepoTags") or [] if t]
    for tag in tags:
        ref = refs.parse_normalized(tag)
        if ref.digest:
            continue
        old = graph.set_tag(ref, image)
        if old:
            progress.stream(
                f"The image {ref.familiar()} already exists, renaming the old one with ID {old} to empty string\n"
            )
        progress.stream(f"Loaded image: {ref.familiar()}\n")
    if not tags:
        progress.stream(f"Loaded image ID: {image.id}\n")
    graph.on_event("load", image.id, {"name": image.id})
    return image
