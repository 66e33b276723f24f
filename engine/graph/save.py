"""``docker save``: a tar stream that both Docker's loader and OCI tools read.

The layout is Docker 25's: an OCI image layout (``oci-layout``,
``index.json``, ``blobs/sha256/...`` holding layers, configs and manifests)
plus Docker's ``manifest.json`` and ``repositories``, and one legacy
directory per layer whose ``layer.tar`` is a symlink to the blob. Layer blobs
are the original layer tars, re-created byte for byte from the tar-split
record, so their digests are the diff IDs and the image IDs survive a round
trip through any Docker.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterable, Iterator

from engine import reference as refs
from engine.errors import InvalidParameter
from engine.graph.graph import Graph
from engine.graph.images import Image
from engine.reference import Reference

BLOCK = 512
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _header(
    name: str, size: int, mtime: int, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644
) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size if kind == tarfile.REGTYPE else 0
    info.mtime = mtime
    info.type = kind
    info.linkname = link
    info.mode = mode if kind != tarfile.DIRTYPE else 0o755
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _pad(size: int) -> bytes:
    return b"\0" * ((-size) % BLOCK)


def _file(name: str, data: bytes, mtime: int) -> Iterator[bytes]:
    yield _header(name, len(data), mtime)
    yield data
    yield _pad(len(data))


def _select(graph: Graph, names: Iterable[str]) -> list[tuple[Image, list[Reference]]]:
    """Images to save and the tags each is saved under (moby's ``parseNames``)."""
    chosen: dict[str, tuple[Image, list[Reference]]] = {}
    for name in names:
        if not name:
            continue
        image = graph.lookup(name)
        tags = chosen.setdefault(image.id, (image, []))[1]
        if refs.is_image_id(name) or graph._is_id_prefix(image, name):
            continue
        ref = refs.parse(name)
        if ref.digest:
            continue
        if ref.tag is None:
            # A bare repository name saves every tag of it that points here.
            tags.extend(r for r in graph.tags.references(image.id) if r.name == ref.name and r.digest is None)
        else:
            tags.append(ref)
    if not chosen:
        raise InvalidParameter("no images to save")
    return list(chosen.values())


def save(graph: Graph, names: Iterable[str]) -> Iterator[bytes]:
    """Yield the archive of the images ``names`` resolve to.

    Names are resolved before the first byte, so an unknown image is an
    HTTP error, not a broken stream.
    """
    selected = _select(graph, names)
    return _generate(graph, selected)


def _generate(graph: Graph, selected: list[tuple[Image, list[Reference]]]) -> Iterator[bytes]:
    written: set[str] = set()
    manifest_json: list[dict] = []
    index: list[dict] = []
    repositories: dict[str, dict[str, str]] = {}
    yield from _file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}', 0)
    yield _header("blobs", 0, 0, tarfile.DIRTYPE)
    yield _header("blobs/sha256", 0, 0, tarfile.DIRTYPE)
    for image, tags in selected:
        mtime = int(image.created)
        layer_paths = []
        layer_descs = []
        for chain, diff in zip(image.chain_ids, image.diff_ids):
            layer = graph.layers.get(chain)
            blob = f"blobs/sha256/{diff.split(':', 1)[1]}"
            layer_paths.append(blob)
            layer_descs.append({"mediaType": OCI_LAYER, "digest": diff, "size": layer.tar_size})
            if blob in written:
                continue
            written.add(blob)
            yield _header(blob, layer.tar_size, mtime)
            hasher = hashlib.sha256()
            count = 0
            for chunk in graph.layers.tar_stream(chain):
                hasher.update(chunk)
                count += len(chunk)
                yield chunk
            if count != layer.tar_size or "sha256:" + hasher.hexdigest() != diff:
                # Too late for an HTTP error; a short tar makes the reader fail.
                raise InvalidParameter(f"layer {diff} could not be re-created exactly")
            yield _pad(layer.tar_size)
            legacy = chain.split(":", 1)[1]
            yield _header(legacy, 0, mtime, tarfile.DIRTYPE)
            yield from _file(f"{legacy}/VERSION", b"1.0", mtime)
            yield from _file(f"{legacy}/json", json.dumps({"id": legacy}).encode(), mtime)
            yield _header(f"{legacy}/layer.tar", 0, mtime, tarfile.SYMTYPE, link=f"../{blob}")
        config_blob = f"blobs/sha256/{image.hex}"
        if config_blob not in written:
            written.add(config_blob)
            yield from _file(config_blob, image.raw, mtime)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": image.id, "size": len(image.raw)},
                "layers": layer_descs,
            },
            separators=(",", ":"),
        ).encode()
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        manifest_blob = f"blobs/sha256/{manifest_digest.split(':', 1)[1]}"
        if manifest_blob not in written:
            written.add(manifest_blob)
            yield from _file(manifest_blob, manifest, mtime)
        desc = {"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest)}
        if tags:
            for ref in tags:
                index.append(
                    {
                        **desc,
                        "annotations": {
                            "io.containerd.image.name": str(ref),
                            "org.opencontainers.image.ref.name": ref.tag or "",
                        },
                    }
                )
        else:
            index.append(desc)
        manifest_json.append(
            {
                "Config": config_blob,
                "RepoTags": [ref.familiar() for ref in tags],
                "Layers": layer_paths,
            }
        )
        top = image.chain_ids[-1].split(":", 1)[1] if image.chain_ids else ""
        for ref in tags:
            repositories.setdefault(ref.familiar_name, {})[ref.tag or "latest"] = top
    yield from _file(
        "index.json", json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index}).encode(), 0
    )
    yield from _file("manifest.json", json.dumps(manifest_json).encode(), 0)
    if repositories:
        yield from _file("repositories", json.dumps(repositories).encode(), 0)
    yield b"\0" * (BLOCK * 2)
