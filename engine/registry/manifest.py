"""Image manifests: the media types we speak, parsing, platform choice, building for push.

A tag names a manifest, which is one of

* an image manifest, Docker schema 2 or OCI: a config descriptor and the
  layer descriptors, bottom first;
* a manifest list (Docker) or image index (OCI): one manifest per platform,
  from which :func:`select_platform` picks ours (``linux/amd64`` by default,
  variant aware: ``linux/arm/v7`` is not ``linux/arm/v6``);
* a schema 1 manifest (retired in 2020 with the v1 protocol): refused with a
  clear "not supported" error.

:func:`schema2_manifest` builds what push uploads, serialised as Docker does
(``json.MarshalIndent`` with three spaces), so the bytes, and so the digest,
only depend on the image and its blobs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidParameter, NotFound, NotSupported
from engine.reference import validate_digest

LOG = logging.getLogger(__name__)

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"

IMAGE_MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEXES = (DOCKER_LIST, OCI_INDEX)
#: What a pull accepts, best first (schema 1 only to refuse it clearly).
ACCEPT = (DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX, SCHEMA1_SIGNED, SCHEMA1)
LAYER_TYPES = (
    DOCKER_LAYER,
    DOCKER_FOREIGN_LAYER,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_NONDIST_GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
)
CONFIG_TYPES = (DOCKER_CONFIG, OCI_CONFIG)
#: Manifests larger than this are refused (moby: 4 MiB).
MAX_MANIFEST = 4 << 20


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a blob or manifest is, its digest and size."""

    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    platform: dict = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def from_json(cls, doc: Any, what: str) -> Descriptor:
        if not isinstance(doc, dict):
            raise InvalidParameter(f"invalid manifest: {what} is not an object")
        digest = doc.get("digest")
        size = doc.get("size")
        try:
            validate_digest(digest)  # type: ignore[arg-type]
        except InvalidParameter as exc:
            raise InvalidParameter(f"invalid manifest: {what} digest: {exc}") from None
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise NotSupported(f"unsupported digest algorithm in {what}: {digest}")
        if not isinstance(size, int) or size < 0:
            raise InvalidParameter(f"invalid manifest: {what} size {size!r}")
        urls = doc.get("urls") or ()
        platform = doc.get("platform")
        return cls(
            str(doc.get("mediaType") or ""),
            digest,
            size,
            tuple(u for u in urls if isinstance(u, str)),
            platform if isinstance(platform, dict) else {},
        )

    def to_json(self) -> dict:
        return {"mediaType": self.media_type, "size": self.size, "digest": self.digest}


@dataclass(frozen=True)
class Platform:
    """``os/architecture[/variant]``."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "i386": "386",
    "i686": "386",
}
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


def parse_platform(text: str | None) -> Platform | None:
    """Parse ``--platform`` (``linux/arm64/v8``, ``linux/amd64``, ``arm64``); None for "".

    :raises InvalidParameter: more than three parts or an empty one.
    """
    if not text:
        return None
    parts = text.strip().lower().split("/")
    if len(parts) > 3 or any(not p for p in parts):
        raise InvalidParameter(f'"{text}": unknown operating system or architecture: invalid argument')
    if len(parts) == 1:
        parts = ["linux", parts[0]]
    arch = _ARCH_ALIASES.get(parts[1], parts[1])
    variant = parts[2] if len(parts) == 3 else ""
    if arch == "arm64" and variant == "8":
        variant = "v8"
    return Platform(parts[0], arch, variant)


def host_platform() -> Platform:
    """The platform this daemon runs images for."""
    from engine.utils.host import goarch

    return Platform("linux", goarch(), "")


def _variant(arch: str, variant: str) -> str:
    return variant or _DEFAULT_VARIANT.get(arch, "")


def select_platform(manifests: list[Descriptor], wanted: Platform) -> Descriptor:
    """The manifest of a list for ``wanted`` (containerd's matcher, simplified).

    OS and architecture must match; for the variant, an exact match wins,
    then an entry without one; with no variant asked for, the architecture's
    default (``v8`` for arm64, ``v7`` for arm) or no variant is preferred.

    :raises NotFound: no entry matches, with Docker's message.
    """
    best: tuple[int, int] | None = None
    chosen: Descriptor | None = None
    want_variant = _variant(wanted.architecture, wanted.variant)
    for index, desc in enumerate(manifests):
        plat = desc.platform
        os_name = str(plat.get("os", "")).lower()
        arch = _ARCH_ALIASES.get(str(plat.get("architecture", "")).lower(), str(plat.get("architecture", "")).lower())
        if os_name != wanted.os or arch != wanted.architecture:
            continue
        variant = _variant(arch, str(plat.get("variant", "")).lower())
        if variant == want_variant:
            rank = 0
        elif not plat.get("variant"):
            rank = 1
        elif not wanted.variant and arch == "amd64" and variant in ("v1", "v2"):
            rank = 2
        else:
            continue
        if best is None or (rank, index) < best:
            best, chosen = (rank, index), desc
    if chosen is None:
        raise NotFound(f"no matching manifest for {wanted} in the manifest list entries")
    return chosen


@dataclass
class ImageManifest:
    """A schema 2 or OCI image manifest."""

    media_type: str
    config: Descriptor
    layers: list[Descriptor]


@dataclass
class ManifestIndex:
    """A manifest list or OCI index."""

    media_type: str
    manifests: list[Descriptor]


def parse_manifest(body: bytes, media_type: str) -> ImageManifest | ManifestIndex:
    """Decode a manifest of any supported kind.

    The registry's ``Content-Type`` is trusted first; when it is missing or
    generic the document's own ``mediaType`` (and ``schemaVersion``) decide.

    :raises NotSupported: schema 1, or a media type we do not know.
    :raises InvalidParameter: malformed JSON or fields.
    """
    if len(body) > MAX_MANIFEST:
        raise InvalidParameter(f"manifest too large: {len(body)} bytes")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise InvalidParameter(f"invalid manifest: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidParameter("invalid manifest: not a JSON object")
    declared = doc.get("mediaType") if isinstance(doc.get("mediaType"), str) else ""
    kind = media_type if media_type in ACCEPT else ""
    if not kind:
        if doc.get("schemaVersion") == 1:
            kind = SCHEMA1
        elif declared:
            kind = declared
        elif "manifests" in doc:
            kind = OCI_INDEX
        elif "config" in doc:
            kind = OCI_MANIFEST
        else:
            kind = media_type or "unknown"
    if kind in (SCHEMA1, SCHEMA1_SIGNED) or doc.get("schemaVersion") == 1:
        raise NotSupported(
            "image manifest schema 1 (the retired v1 format) is not supported: "
            "push the image again with a newer client to convert it to schema 2"
        )
    if declared and declared != kind and {declared, kind} - set(ACCEPT):
        raise InvalidParameter(f"invalid manifest: media type {declared} does not match {kind}")
    if doc.get("schemaVersion") != 2:
        raise InvalidParameter(f"invalid manifest: unsupported schemaVersion {doc.get('schemaVersion')!r}")
    if kind in INDEXES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise InvalidParameter("invalid manifest list: no manifests")
        return ManifestIndex(kind, [Descriptor.from_json(e, "manifest list entry") for e in entries])
    if kind in IMAGE_MANIFESTS:
        config = Descriptor.from_json(doc.get("config"), "config")
        if config.media_type and config.media_type not in CONFIG_TYPES:
            raise NotSupported(f"unsupported config media type {config.media_type}: this is not a container image")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise InvalidParameter("invalid manifest: no layers")
        descs = [Descriptor.from_json(layer, f"layer {i}") for i, layer in enumerate(layers)]
        for desc in descs:
            if desc.media_type and desc.media_type not in LAYER_TYPES:
                raise NotSupported(f"unsupported layer media type {desc.media_type}")
        return ImageManifest(kind, config, descs)
    raise NotSupported(f"unsupported manifest media type {kind}")


def schema2_manifest(config: Descriptor, layers: list[Descriptor]) -> bytes:
    """A Docker schema 2 manifest, byte for byte as Docker serialises it."""
    doc = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return json.dumps(doc, indent=3).encode()
