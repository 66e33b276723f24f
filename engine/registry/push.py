"""The push: layers, config and a schema 2 manifest to a registry (the seed's push job over v2).

For each tag pushed:

1. every layer, five at a time (moby's ``max-concurrent-uploads``): a blob
   this registry is known to hold for the layer's diff ID
   (:mod:`engine.registry.metadata`) is checked with ``HEAD`` ("Layer
   already exists") or mounted from the other repository that holds it
   ("Mounted from ..."); otherwise the layer's original tar
   (:meth:`LayerStore.tar_stream <engine.graph.layers.LayerStore.tar_stream>`)
   is gzip-compressed and streamed in one chunked ``PATCH`` while its digest
   is computed, then committed with ``PUT ?digest=`` ("Pushed");
2. the config blob, monolithic (one ``PUT`` with the bytes);
3. the manifest, ``PUT`` by tag; its digest becomes the image's RepoDigest.

Compression is deterministic: a raw deflate stream at a fixed level in a
gzip wrapper without name or time, always with the same zlib-ng, so the
same image pushes to the same blob digests every time, from any daemon of
ours (and a second push finds every layer already there).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from zlib_ng import zlib_ng

from engine import reference as refs
from engine.errors import EngineError, InvalidParameter, NotFound, RegistryError
from engine.graph.graph import Graph
from engine.graph.images import Image
from engine.graph.layers import Layer
from engine.reference import Reference
from engine.registry.auth import AuthConfig
from engine.registry.endpoints import RegistryService
from engine.registry.manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_LAYER_GZIP,
    Descriptor,
    schema2_manifest,
    sha256_digest,
)
from engine.registry.metadata import BlobSource, DistributionMetadata
from engine.registry.session import TRANSIENT, Session, Unreachable, first_working, retryable
from engine.utils.progress import Progress

LOG = logging.getLogger(__name__)

#: Layers uploaded at once (moby's ``max-concurrent-uploads`` default).
CONCURRENT_UPLOADS = 5
#: The gzip level: Go's ``gzip.DefaultCompression``, what Docker pushes with.
GZIP_LEVEL = 6
#: Uncompressed bytes handed to the compressor at a time.
COMPRESS_BATCH = 1 << 20
#: Compressed bytes per chunk of the upload.
UPLOAD_CHUNK = 1 << 20
#: Attempts of one layer upload.
UPLOAD_ATTEMPTS = 3
#: Blob media types a pushed schema 2 manifest can point at as they are.
REUSABLE = ("", DOCKER_LAYER, OCI_LAYER_GZIP)


def short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class GzipStream:
    """Compress chunks into a deterministic gzip stream, counting and hashing what comes out.

    :param chunks: the uncompressed tar.
    :param report: ``fn(uncompressed bytes so far)``.
    :param stop: set when the push is abandoned.
    """

    def __init__(
        self, chunks: Iterable[bytes], report: Callable[[int], None], stop: threading.Event | None = None
    ) -> None:
        self._chunks = chunks
        self._report = report
        self._stop = stop
        self.hasher = hashlib.sha256()
        self.size = 0

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()

    def _emit(self, data: bytes) -> bytes:
        self.hasher.update(data)
        self.size += len(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        # wbits 31: a gzip wrapper with no name and mtime 0. zlib-ng's output
        # depends on how the input is split between compress() calls, so it
        # is fed blocks of exactly COMPRESS_BATCH bytes whatever the tar's
        # chunks were: the output depends on the bytes and the level only.
        comp = zlib_ng.compressobj(GZIP_LEVEL, zlib_ng.DEFLATED, 31)
        pending = bytearray()
        done = 0
        out = bytearray()
        for chunk in self._chunks:
            if self._stop is not None and self._stop.is_set():
                raise EngineError("push cancelled")
            pending += chunk
            if len(pending) < COMPRESS_BATCH:
                continue
            whole = len(pending) - len(pending) % COMPRESS_BATCH
            view = memoryview(pending)
            for start in range(0, whole, COMPRESS_BATCH):
                out += comp.compress(view[start : start + COMPRESS_BATCH])
            view.release()
            del pending[:whole]
            done += whole
            self._report(done)
            if len(out) >= UPLOAD_CHUNK:
                yield self._emit(bytes(out))
                out.clear()
        out += comp.compress(bytes(pending))
        out += comp.flush()
        self._report(done + len(pending))
        if out:
            yield self._emit(bytes(out))


def compress_layer(chunks: Iterable[bytes]) -> tuple[bytes, str]:
    """The whole compressed blob and its digest (what a push of ``chunks`` uploads)."""
    stream = GzipStream(chunks, lambda n: None)
    data = b"".join(stream)
    return data, stream.digest


class Pusher:
    """Pushes a repository's tags from a graph, writing Docker's progress stream.

    The stream, for ``docker push 127.0.0.1:5000/busybox``::

        {"status":"The push refers to repository [127.0.0.1:5000/busybox]"}
        {"status":"Preparing","progressDetail":{},"id":"<12 hex of the diff ID>"}
        {"status":"Waiting","progressDetail":{},"id":".."}                  (beyond 5 at once)
        {"status":"Pushing","progressDetail":{"current":N,"total":T},"progress":"..","id":".."}
        {"status":"Pushed","progressDetail":{},"id":".."}     (or "Layer already exists", "Mounted from x")
        {"status":"latest: digest: sha256:<manifest digest> size: 527","progressDetail":{}}
        {"progressDetail":{},"aux":{"Tag":"latest","Digest":"sha256:..","Size":527}}

    :param graph: where the images are.
    :param service: endpoints, credentials cache, retry policy.
    :param metadata: blob digest <-> diff ID records.
    :param progress: the job's progress writer.
    :param auth: the client's credentials.
    :param cancelled: polled; True when the client went away.
    :param uploads: layers uploaded at once (``max-concurrent-uploads``).
    :param on_bytes: called with the bytes of each blob uploaded (the
        metrics' transfer counter); None: not counted.
    """

    def __init__(
        self,
        graph: Graph,
        service: RegistryService,
        metadata: DistributionMetadata,
        progress: Progress,
        auth: AuthConfig,
        cancelled: Callable[[], bool] | None = None,
        uploads: int = CONCURRENT_UPLOADS,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.graph = graph
        self.uploads = max(1, uploads)
        self.on_bytes = on_bytes
        self.service = service
        self.metadata = metadata
        self.progress = progress
        self.auth = auth
        self.cancelled = cancelled or (lambda: False)
        self._stop = threading.Event()

    def targets(self, repo: Reference, tag: str) -> list[tuple[Reference, Image]]:
        """The tags to push: ``tag``, or every tag of ``repo`` when it is empty.

        :raises NotFound: with Docker's message when there is none.
        """
        if tag:
            ref = repo.with_tag(refs.validate_tag(tag))
            image_id = self.graph.tags.get(ref)
            if image_id is None or not self.graph.images.exists(image_id):
                raise NotFound(f"tag does not exist: {ref.familiar()}")
            return [(ref, self.graph.images.get(image_id))]
        out = []
        for key, image_id in sorted(self.graph.tags.repositories().get(repo.name, {}).items()):
            if not key.startswith("@") and self.graph.images.exists(image_id):
                out.append((repo.with_tag(key), self.graph.images.get(image_id)))
        if not out:
            raise NotFound(f"An image does not exist locally with the tag: {repo.familiar_name}")
        return out

    def push(self, repo: Reference, tag: str) -> None:
        """Push ``repo:tag`` (every tag of ``repo`` when ``tag`` is empty)."""
        targets = self.targets(repo, tag)
        self.progress.message(f"The push refers to repository [{repo.name}]")
        session, _ = first_working(
            self.service,
            self.service.endpoints(repo.domain, pull=False),
            repo.path,
            self.auth,
            ("pull", "push"),
            lambda s: s.ping(),
            self.cancelled,
        )
        with session:
            for ref, image in targets:
                self._push_tag(session, ref, image)

    def _push_tag(self, session: Session, ref: Reference, image: Image) -> None:
        layers = [self.graph.layers.get(chain) for chain in image.chain_ids]
        order = list(reversed(range(len(layers))))  # Docker lists the top layer first
        for i in order:
            self.progress.status("Preparing", short(layers[i].diff_id))
        descs: list[Descriptor | None] = [None] * len(layers)
        with ThreadPoolExecutor(max_workers=self.uploads, thread_name_prefix="push") as executor:
            futures = {}
            for n, i in enumerate(order):
                futures[executor.submit(self._push_layer, session, ref, layers[i])] = i
                if n >= self.uploads:
                    self.progress.status("Waiting", short(layers[i].diff_id))
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                self._stop.set()
                for future in futures:
                    future.cancel()
                raise failed[0].exception()  # type: ignore[misc]
            for future, i in futures.items():
                descs[i] = future.result()
        config = Descriptor(DOCKER_CONFIG, image.id, len(image.raw))
        if session.blob_size(image.id) is None:
            session.upload_blob(image.id, image.raw)
        body = schema2_manifest(config, [d for d in descs if d is not None])
        digest = sha256_digest(body)
        stored = session.put_manifest(ref.tag or refs.DEFAULT_TAG, DOCKER_MANIFEST, body)
        if stored and stored != digest:
            raise RegistryError(f"the registry stored the manifest as {stored}, we sent {digest}")
        tag = ref.tag or refs.DEFAULT_TAG
        self.progress.message(f"{tag}: digest: {digest} size: {len(body)}")
        self.progress.send({"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": len(body)}})
        self.graph.set_tag(ref.repository().with_digest(digest), image)
        self.graph.on_event("push", ref.familiar(), {"name": ref.familiar()})

    # one layer
    def _push_layer(self, session: Session, ref: Reference, layer: Layer) -> Descriptor:
        ident = short(layer.diff_id)
        repo_name = ref.repository().name
        location: str | None = None
        candidates = [
            s for s in self.metadata.sources(layer.diff_id) if s.domain == ref.domain and s.media_type in REUSABLE
        ]
        for source in candidates:
            if source.repository != repo_name:
                continue
            size = session.blob_size(source.digest)
            if size is not None and size >= 0:
                self.progress.status("Layer already exists", ident)
                return Descriptor(DOCKER_LAYER, source.digest, size)
        for source in candidates:
            if source.repository == repo_name:
                continue
            source_path = source.repository.split("/", 1)[1]
            session.add_scope(f"repository:{source_path}:pull")
            try:
                mounted, location = session.start_upload(mount=source.digest, source=source_path)
            except EngineError as exc:
                LOG.info("mounting %s from %s failed: %s", ident, source_path, exc)
                continue
            if mounted:
                size = session.blob_size(source.digest)
                if size is not None and size >= 0:
                    self.progress.status(f"Mounted from {source_path}", ident)
                    self.metadata.add(layer.diff_id, BlobSource(source.digest, repo_name, DOCKER_LAYER))
                    return Descriptor(DOCKER_LAYER, source.digest, size)
            break  # the registry opened an upload instead: use it
        desc = self._upload(session, layer, location)
        self.metadata.add(layer.diff_id, BlobSource(desc.digest, repo_name, DOCKER_LAYER))
        self.progress.status("Pushed", ident)
        return desc

    def _upload(self, session: Session, layer: Layer, location: str | None) -> Descriptor:
        ident = short(layer.diff_id)
        total = layer.tar_size
        delay = self.service.backoff
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            chunks = self.graph.layers.tar_stream(layer.chain_id)
            try:
                if location is None:
                    _, location = session.start_upload()
                stream = GzipStream(chunks, lambda n: self.progress.update("Pushing", ident, n, total), self._stop)
                next_location = session.upload_chunks(location, stream)
                session.finish_upload(next_location, stream.digest)
                if self.on_bytes is not None:
                    self.on_bytes(stream.size)
                self.progress.update("Pushing", ident, total, total, force=True)
                return Descriptor(DOCKER_LAYER, stream.digest, stream.size)
            except (RegistryError, *TRANSIENT) as exc:
                if (
                    self._stop.is_set()
                    or attempt == UPLOAD_ATTEMPTS
                    or isinstance(exc, Unreachable)
                    or (isinstance(exc, TRANSIENT) and not retryable(exc))
                ):
                    if isinstance(exc, EngineError):
                        raise
                    raise RegistryError(f"uploading layer {ident}: {exc}") from None
                LOG.info("upload of %s failed (%s); retrying in %.1fs", ident, exc, delay)
                seconds = max(1, round(delay))
                self.progress.status(f"Retrying in {seconds} second{'s' if seconds != 1 else ''}", ident)
                time.sleep(delay)
                delay *= 2
                location = None
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()  # releases the layer's mount when the upload stopped early
        raise RegistryError(f"uploading layer {ident} failed")


def push_reference(name: str) -> Reference:
    """The repository (and tag, if any) a push request names.

    :raises InvalidParameter: a malformed name, or one with a digest.
    """
    ref = refs.parse(name)
    if ref.digest is not None:
        raise InvalidParameter(f"cannot push a digest reference: {name}")
    return ref
