"""The pull: manifest, config, layers, graph register, tag store (seed ch. 10 §6.3).

Docker 1.2's ``pullRepository`` walked the v1 image ancestry. Over the v2
protocol the steps are:

1. resolve the reference to a manifest on the first endpoint that works
   (mirrors first for Docker Hub); a manifest list / OCI index is narrowed
   to our platform, schema 1 is refused;
2. if the image (its config digest) is already here, nothing is downloaded;
3. fetch the config blob and check its digest: its ``rootfs.diff_ids`` are
   what every layer must turn out to be;
4. layers already registered (same chain ID) are skipped ("Already
   exists"); the others are downloaded three at a time, each to a temporary
   file under the daemon's ``TMPDIR`` while its digest is computed, resumed
   with ``Range`` (or restarted) when the connection drops;
5. layers are applied in order through :meth:`Graph.register_layer
   <engine.graph.graph.Graph.register_layer>`, which checks each diff ID.
   The layer whose turn it is is applied *while* it downloads: its reader
   follows the temporary file as it grows, and only ends once the download
   is complete and its digest verified, so a bad blob never registers;
   layers that finish early wait in their files;
6. the image is registered, then its tag and its digest reference
   (``name@sha256:<manifest digest>``, the RepoDigest) are set.

Any failure cancels the downloads, and ``graph.gc()`` removes the layers
this pull registered: no partial image or layer is left. Temporary files
are unlinked at creation (``O_TMPFILE``), so a daemon killed mid-pull leaves
no download behind either, and the layer store's recovery removes a layer
caught half-registered.

The progress stream is Docker's, message for message (see
:class:`Puller`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from engine import archive
from engine import reference as refs
from engine.errors import EngineError, InvalidParameter, NotFound, NotSupported, RegistryError, Unauthorized
from engine.graph.graph import Graph
from engine.graph.images import Image, parse_config
from engine.graph.layers import chain_id
from engine.reference import Reference
from engine.registry.auth import AuthConfig
from engine.registry.endpoints import RegistryService
from engine.registry.manifest import (
    ACCEPT,
    Descriptor,
    ImageManifest,
    ManifestIndex,
    Platform,
    host_platform,
    parse_manifest,
    select_platform,
    sha256_digest,
)
from engine.registry.metadata import BlobSource, DistributionMetadata
from engine.registry.session import TRANSIENT, Session, first_working, iter_raw, retryable
from engine.utils.progress import Progress

LOG = logging.getLogger(__name__)

#: Layers downloaded at once (moby's ``max-concurrent-downloads`` default).
CONCURRENT_DOWNLOADS = 3
#: Bytes read from the network per write to the temporary file.
CHUNK = 512 * 1024
#: Largest config blob accepted.
MAX_CONFIG = 8 << 20


class Cancelled(EngineError):
    """The pull stopped because another part of it failed or the client went away."""


def short(digest: str) -> str:
    """The 12 hex digits Docker shows for a blob (``stringid.TruncateID``)."""
    return digest.split(":", 1)[-1][:12]


def _renamed(exc: EngineError, message: str) -> EngineError:
    """The same kind of error with a message that says what was being done."""
    new = type(exc)(message)
    new.__cause__ = exc
    return new


class Spool:
    """One layer download: a temporary file that can be read while it is written.

    :param tmpdir: where the file is made (the daemon's ``TMPDIR``, on the
        same file system as its root).
    """

    def __init__(self, desc: Descriptor, tmpdir: str | None) -> None:
        self.desc = desc
        self.file = tempfile.TemporaryFile(prefix="pull-", dir=tmpdir)
        self.fd = self.file.fileno()
        self.cond = threading.Condition()
        #: Bytes written so far (never goes back, even when a download restarts).
        self.size = 0
        self.done = False
        self.error: BaseException | None = None
        #: Set once "Download complete" was sent: extraction may report progress.
        self.verified = False

    def advance(self, offset: int) -> None:
        with self.cond:
            if offset > self.size:
                self.size = offset
                self.cond.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        with self.cond:
            self.done = True
            self.error = error
            self.cond.notify_all()

    def wait(self, failed: Callable[[], BaseException | None]) -> None:
        """Block until the download ends; raise its error, or the pull's."""
        with self.cond:
            while not self.done:
                err = failed()
                if err is not None:
                    raise err
                self.cond.wait(0.25)
            if self.error is not None:
                raise self.error

    def close(self) -> None:
        self.file.close()


class FollowReader(io.RawIOBase):
    """Reads a :class:`Spool` as it grows; EOF only after the download is verified.

    :param failed: returns the error that stopped the pull, if any: a reader
        waiting for bytes gives up at once when another download failed.
    :param report: ``fn(bytes read)`` for "Extracting" progress.
    """

    def __init__(self, spool: Spool, failed: Callable[[], BaseException | None], report: Callable[[int], None]) -> None:
        self.spool = spool
        self.pos = 0
        self._failed = failed
        self._report = report

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        spool = self.spool
        with spool.cond:
            while self.pos >= spool.size:
                err = self._failed()
                if err is not None:
                    raise err
                if spool.done:
                    if spool.error is not None:
                        raise spool.error
                    return 0
                spool.cond.wait(0.25)
            available = spool.size - self.pos
        data = os.pread(spool.fd, min(len(buffer), available), self.pos)
        n = len(data)
        buffer[:n] = data
        self.pos += n
        self._report(self.pos)
        return n


@dataclass
class _Planned:
    """A layer of the image being pulled."""

    desc: Descriptor
    diff_id: str
    chain: str
    exists: bool
    spool: Spool | None = None


def _content_range_start(value: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes a-b/c``."""
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None


class Puller:
    """Pulls images into a graph, writing Docker's progress stream.

    The stream, for ``docker pull busybox`` of a two-layer image::

        {"status":"Pulling from library/busybox","id":"latest"}
        {"status":"Pulling fs layer","progressDetail":{},"id":"<12 hex>"}     (or "Already exists")
        {"status":"Waiting","progressDetail":{},"id":"<12 hex>"}              (beyond 3 at once)
        {"status":"Downloading","progressDetail":{"current":N,"total":T},"progress":"[==>  ] ...","id":".."}
        {"status":"Verifying Checksum","progressDetail":{},"id":".."}
        {"status":"Download complete","progressDetail":{},"id":".."}
        {"status":"Extracting","progressDetail":{"current":N,"total":T},"progress":"...","id":".."}
        {"status":"Pull complete","progressDetail":{},"id":".."}
        {"status":"Digest: sha256:<manifest digest>"}
        {"status":"Status: Downloaded newer image for busybox:latest"}   (or "Image is up to date for")

    :param graph: where images go.
    :param service: endpoints, credentials cache, retry policy.
    :param metadata: blob digest <-> diff ID records (for later pushes).
    :param progress: the job's progress writer.
    :param auth: the client's credentials.
    :param platform: ``--platform``; None means this host's.
    :param cancelled: polled; True when the client went away.
    :param downloads: layers downloaded at once (``max-concurrent-downloads``).
    :param on_bytes: called with the bytes of each blob answer received
        (the metrics' transfer counter); None: not counted.
    """

    def __init__(
        self,
        graph: Graph,
        service: RegistryService,
        metadata: DistributionMetadata,
        progress: Progress,
        auth: AuthConfig,
        platform: Platform | None = None,
        cancelled: Callable[[], bool] | None = None,
        downloads: int = CONCURRENT_DOWNLOADS,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.graph = graph
        self.downloads = max(1, downloads)
        self.on_bytes = on_bytes
        self.service = service
        self.metadata = metadata
        self.progress = progress
        self.auth = auth
        self.platform = platform
        self.cancelled = cancelled or (lambda: False)
        self._failure: BaseException | None = None
        self._fail_lock = threading.Lock()
        self._stop = threading.Event()

    # failure propagation between the download threads and the applier
    def _fail(self, exc: BaseException) -> None:
        with self._fail_lock:
            if self._failure is None:
                self._failure = exc
        self._stop.set()

    def _failed(self) -> BaseException | None:
        if self._failure is not None:
            return self._failure
        if self.cancelled():
            self._fail(Cancelled("pull cancelled: the client went away"))
        return self._failure

    # entry points
    def pull(self, ref: Reference) -> list[str]:
        """Pull ``ref``: one tag, one digest, or (no tag nor digest) every tag.

        :returns: the final status lines (also written), for clients that
            waited on this pull in the pulling pool.
        :raises EngineError: nothing partial is left in the graph.
        """
        try:
            with self.graph.pinned() as pin:
                if ref.tag is None and ref.digest is None:
                    return self._pull_all_tags(ref, pin)
                digest, updated = self._pull_one(ref, pin)
                lines = [
                    f"Digest: {digest}",
                    f"Status: {'Downloaded newer image' if updated else 'Image is up to date'} for {ref.familiar()}",
                ]
                for line in lines:
                    self.progress.message(line)
                return lines
        except BaseException:
            removed = self.graph.gc()
            if removed:
                LOG.info("pull of %s failed; removed %d layers it had registered", ref, len(removed))
            raise

    def _pull_all_tags(self, ref: Reference, pin: Callable[[str], None]) -> list[str]:
        session, tags = first_working(
            self.service,
            self.service.endpoints(ref.domain),
            ref.path,
            self.auth,
            ("pull",),
            self._list_tags(ref),
            self.cancelled,
        )
        session.close()
        if not tags:
            raise NotFound(f"no tags found for {ref.familiar_name}")
        updated = False
        for tag in sorted(tags):
            digest, changed = self._pull_one(ref.with_tag(tag), pin)
            self.progress.message(f"Digest: {digest}")
            updated |= changed
        line = f"Status: {'Downloaded newer image' if updated else 'Image is up to date'} for {ref.familiar_name}"
        self.progress.message(line)
        return [line]

    def _list_tags(self, ref: Reference) -> Callable[[Session], list[str]]:
        def attempt(session: Session) -> list[str]:
            try:
                return session.tags()
            except NotFound as exc:
                raise _renamed(exc, f"repository {ref.familiar_name} not found: {exc}") from None
            except Unauthorized as exc:
                # Not a 401: the docker CLI would prompt for a login (see _resolve).
                raise NotFound(
                    f"pull access denied for {ref.familiar_name}, repository does not exist or "
                    f"may require 'docker login': {exc}"
                ) from None

        return attempt

    # one tag or digest
    def _resolve(self, ref: Reference) -> Callable[[Session], tuple[bytes, str]]:
        """The manifest of ``ref`` (body, media type) from a session, digest-checked."""
        wanted = ref.digest or ref.tag or refs.DEFAULT_TAG

        def attempt(session: Session) -> tuple[bytes, str]:
            try:
                body, media_type, header_digest = session.get_manifest(wanted, ACCEPT)
            except NotFound as exc:
                raise _renamed(exc, f"manifest for {ref.familiar()} not found: {exc}") from None
            except Unauthorized as exc:
                # Never a 401 for a pull: the docker CLI answers a 401 by
                # prompting for a login, which hangs scripts. moby answers
                # 404 (access denied) or 500 (no credentials) here too.
                if session.auth.anonymous and "no basic auth credentials" in str(exc):
                    raise RegistryError(
                        f'Head "{session.repo_url("manifests/" + wanted)}": no basic auth credentials'
                    ) from None
                raise NotFound(
                    f"pull access denied for {ref.familiar_name}, repository does not exist or "
                    f"may require 'docker login': {exc}"
                ) from None
            actual = sha256_digest(body)
            if ref.digest and actual != ref.digest:
                raise RegistryError(f"manifest verification failed for digest {ref.digest}")
            if header_digest and header_digest.startswith("sha256:") and header_digest != actual:
                raise RegistryError(
                    f"manifest digest mismatch: the registry says {header_digest}, the content is {actual}"
                )
            return body, media_type

        return attempt

    def _pull_one(self, ref: Reference, pin: Callable[[str], None]) -> tuple[str, bool]:
        """Pull one manifest; returns (manifest digest, whether a reference changed)."""
        session, (body, media_type) = first_working(
            self.service,
            self.service.endpoints(ref.domain),
            ref.path,
            self.auth,
            ("pull",),
            self._resolve(ref),
            self.cancelled,
        )
        with session:
            manifest_digest = ref.digest or sha256_digest(body)
            manifest = parse_manifest(body, media_type)
            wanted = self.platform or host_platform()
            if isinstance(manifest, ManifestIndex):
                entry = select_platform(manifest.manifests, wanted)
                child, child_type, _header = session.get_manifest(entry.digest, ACCEPT)
                if sha256_digest(child) != entry.digest:
                    raise RegistryError(f"manifest verification failed for digest {entry.digest}")
                manifest = parse_manifest(child, child_type or entry.media_type)
                if not isinstance(manifest, ImageManifest):
                    raise NotSupported("a manifest list entry that is itself a list is not supported")
            self.progress.message(f"Pulling from {ref.path}", id=ref.digest or ref.tag)
            image = self._image(session, ref, manifest, wanted, pin)
        updated = self._reference(ref, image, manifest_digest)
        self.graph.on_event("pull", ref.familiar(), {"name": ref.familiar()})
        return manifest_digest, updated

    def _reference(self, ref: Reference, image: Image, manifest_digest: str) -> bool:
        """Set the tag and the RepoDigest; whether either pointed elsewhere (or nowhere) before."""
        updated = False
        if ref.tag is not None:
            tagged = ref.with_digest(None)
            updated |= self.graph.tags.get(tagged) != image.id
            self.graph.set_tag(tagged, image)
        canonical = ref.repository().with_digest(manifest_digest)
        if ref.digest is not None:
            updated |= self.graph.tags.get(canonical) != image.id
        self.graph.set_tag(canonical, image)
        return updated

    def _image(
        self, session: Session, ref: Reference, manifest: ImageManifest, wanted: Platform, pin: Callable[[str], None]
    ) -> Image:
        config_desc = manifest.config
        if self.graph.images.exists(config_desc.digest):
            # The image is here already: nothing to download (moby does the same).
            image = self.graph.images.get(config_desc.digest)
            for chain in image.chain_ids:
                pin(chain)
            return image
        raw = self._config(session, config_desc)
        config = parse_config(raw)
        if self.platform is not None:
            actual = Platform(
                str(config.get("os", "")), str(config.get("architecture", "")), str(config.get("variant", ""))
            )
            if (actual.os, actual.architecture) != (wanted.os, wanted.architecture):
                raise NotFound(
                    f"image with reference {ref.familiar()} was found but does not match the specified "
                    f"platform: wanted {wanted}, actual: {actual}"
                )
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(manifest.layers):
            raise InvalidParameter(
                f"invalid image: the config lists {len(diff_ids)} layers, the manifest {len(manifest.layers)}"
            )
        self._layers(session, ref, manifest.layers, diff_ids, pin)
        image, _ = self.graph.create_image(raw)
        return image

    def _config(self, session: Session, desc: Descriptor) -> bytes:
        if desc.size > MAX_CONFIG:
            raise InvalidParameter(f"image config too large: {desc.size} bytes")
        resp = session.get_blob(desc.digest)
        try:
            body = resp.content
        except TRANSIENT as exc:
            raise RegistryError(f"fetching image config {desc.digest}: {exc}") from None
        finally:
            resp.close()
        if sha256_digest(body) != desc.digest:
            raise RegistryError(f"image config verification failed for digest {desc.digest}")
        return body

    # layers
    def _layers(
        self, session: Session, ref: Reference, descs: list[Descriptor], diff_ids: list[str], pin: Callable[[str], None]
    ) -> None:
        plan: list[_Planned] = []
        parent: str | None = None
        for desc, diff in zip(descs, diff_ids):
            chain = chain_id(parent, diff)
            pin(chain)  # before the check: a concurrent gc must not take it in between
            plan.append(_Planned(desc, diff, chain, self.graph.layers.exists(chain)))
            parent = chain
        for item in plan:
            self.progress.status("Already exists" if item.exists else "Pulling fs layer", short(item.desc.digest))
        todo = [item for item in plan if not item.exists]
        tmpdir = os.environ.get("TMPDIR")
        executor = ThreadPoolExecutor(max_workers=self.downloads, thread_name_prefix="pull")
        try:
            for index, item in enumerate(todo):
                item.spool = Spool(item.desc, tmpdir)
                executor.submit(self._download_task, session, item.desc, item.spool)
                if index >= self.downloads:
                    self.progress.status("Waiting", short(item.desc.digest))
            parent = None
            source = ref.repository().name
            for item in plan:
                if not item.exists:
                    assert item.spool is not None
                    self._apply(item, parent, pin)
                    item.spool.close()
                self.metadata.add(item.diff_id, BlobSource(item.desc.digest, source, item.desc.media_type))
                parent = item.chain
        except BaseException as exc:
            self._fail(exc)
            raise
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
            for item in todo:
                if item.spool is not None:
                    item.spool.close()

    def _apply(self, item: _Planned, parent: str | None, pin: Callable[[str], None]) -> None:
        spool = item.spool
        assert spool is not None
        ident = short(item.desc.digest)
        total = item.desc.size

        def report(done: int) -> None:
            # Until the download is verified its line shows "Downloading".
            if spool.verified:
                self.progress.update("Extracting", ident, done, total)

        reader = FollowReader(spool, self._failed, report)
        stream = archive.decompress_stream(reader)  # type: ignore[arg-type]  # a raw binary reader
        layer, _ = self.graph.register_layer(stream, parent, item.diff_id, pin)
        spool.wait(self._failed)  # the digest is checked: only now is the layer accepted
        if layer.chain_id != item.chain:
            raise RegistryError(f"layer {ident} registered as {layer.chain_id}, expected {item.chain}")
        self.progress.update("Extracting", ident, total, total, force=True)
        self.progress.status("Pull complete", ident)

    def _download_task(self, session: Session, desc: Descriptor, spool: Spool) -> None:
        try:
            if self._failed() is not None:
                raise Cancelled("pull cancelled")
            self._download(session, desc, spool)
        except BaseException as exc:
            spool.finish(exc)
            if not isinstance(exc, Cancelled):
                self._fail(exc)
            return
        spool.finish()

    def _download(self, session: Session, desc: Descriptor, spool: Spool) -> None:
        """Fetch one blob into its spool, resuming after dropped connections; check its digest."""
        ident = short(desc.digest)
        offset = 0
        hasher = hashlib.sha256()
        attempt = 0
        delay = self.service.backoff
        while True:
            try:
                resp = session.get_blob(desc.digest, offset)
                received = offset  # where this answer starts, for the transfer counter
                try:
                    if offset and (
                        resp.status_code != 206 or _content_range_start(resp.headers.get("Content-Range")) != offset
                    ):
                        LOG.info("registry ignored the range request for %s; downloading it again", ident)
                        offset, received, hasher = 0, 0, hashlib.sha256()
                    for chunk in iter_raw(resp, CHUNK):
                        if self._stop.is_set():
                            raise Cancelled("pull cancelled")
                        if offset + len(chunk) > desc.size:
                            raise RegistryError(
                                f"filesystem layer verification failed for digest {desc.digest}: "
                                f"the blob is larger than the {desc.size} bytes of its descriptor"
                            )
                        os.pwrite(spool.fd, chunk, offset)
                        hasher.update(chunk)
                        offset += len(chunk)
                        spool.advance(offset)
                        self.progress.update("Downloading", ident, offset, desc.size)
                finally:
                    resp.close()
                    if self.on_bytes is not None:
                        self.on_bytes(offset - received)
                if offset < desc.size:
                    # The answer ended cleanly but short: a cut connection
                    # that the server framed as complete.
                    raise ConnectionError(f"blob {ident} ended after {offset} of {desc.size} bytes")
                break
            except TRANSIENT as exc:
                attempt += 1
                if attempt >= self.service.retries or not retryable(exc):
                    raise RegistryError(f"downloading layer {ident} failed after {attempt} attempts: {exc}") from None
                LOG.info("download of %s broke at byte %d (%s); retrying in %.1fs", ident, offset, exc, delay)
                seconds = max(1, round(delay))
                self.progress.status(f"Retrying in {seconds} second{'s' if seconds != 1 else ''}", ident)
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:
                    if self._stop.is_set():
                        raise Cancelled("pull cancelled") from None
                    time.sleep(min(0.1, delay))
                delay = min(delay * 2, 30.0)
        self.progress.status("Verifying Checksum", ident)
        if "sha256:" + hasher.hexdigest() != desc.digest:
            raise RegistryError(f"filesystem layer verification failed for digest {desc.digest}")
        self.progress.status("Download complete", ident)
        spool.verified = True


def pull_reference(image: str, tag: str) -> Reference:
    """The reference a pull request names: ``fromImage`` plus its ``tag`` (a tag or a digest).

    As in moby's ``postImagesCreate``: a ``tag`` that parses as a digest pins
    the digest; no tag and no digest anywhere means every tag.

    :raises InvalidParameter: ``invalid reference format`` and Docker's other messages.
    """
    ref = refs.parse(image)
    if tag:
        if ":" in tag:
            ref = ref.repository().with_digest(refs.validate_digest(tag))
        else:
            ref = ref.with_tag(refs.validate_tag(tag))
    return ref
