"""The tag store: which repository tags and digests name which image (seed ch. 4 §4.4.7).

Docker 1.2's ``TagStore`` keeps the daemon's repository list in one JSON file,
``<root>/repositories-<driver>``, loaded at start-up and rewritten on every
change; pulls, ``docker tag``, builds and loads add to it, ``docker rmi``
removes from it (seed ch. 10 §6.3.4). This one keeps the same file with
normalised references and content-addressed image IDs::

    {
      "Repositories": {
        "docker.io/library/busybox": {
          "latest": "sha256:<image id hex>",
          "1.36": "sha256:<image id hex>",
          "@sha256:<manifest digest hex>": "sha256:<image id hex>"
        },
        "localhost:5000/a/b": {"v1": "sha256:<image id hex>"}
      },
      "LastTagTime": {"sha256:<image id hex>": 1718000000.25}
    }

* Repository names are fully qualified (:attr:`Reference.name
  <engine.reference.Reference.name>`), so ``busybox`` and
  ``docker.io/library/busybox`` are one repository.
* A repository's tags and digest references share its map; a digest key is
  the digest with an ``@`` in front, which no tag can start with.
* ``LastTagTime`` is Docker's ``Metadata.LastTagTime``: the unix time an image
  was last tagged, kept until the image's references are dropped with
  :meth:`TagStore.delete_image`.

Every change is written with :func:`~engine.sys.fs.atomic_write` (temp
file, fsync, rename, fsync of the directory) before the call returns, so the
file is always the old or the new version, never half of one. Temp files
left by a crash (``.repositories-<driver>.*.tmp``) are removed on load.

A file that cannot be read as a tag store makes the constructor raise
:class:`~engine.errors.HostError` (the daemon cannot start, HTTP 500 if it
happens later): it is the host's state that is broken, not a request. The file
is left untouched for the operator to repair or move aside; writing an empty
store over it would silently lose every tag.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

from engine.errors import Conflict, HostError, InvalidParameter
from engine.reference import (
    DEFAULT_TAG,
    DIGEST_HEX_LENGTHS,
    Reference,
    is_image_id,
    parse,
    parse_image_id,
    parse_normalized,
    validate_digest,
    validate_tag,
)
from engine.sys.fs import atomic_write, remove_write_leftovers

LOG = logging.getLogger(__name__)

#: File mode of the store, as Docker 1.2 wrote it: tags are the daemon's business.
FILE_MODE = 0o600

_Repos = dict[str, dict[str, str]]


def _key(ref: Reference) -> str:
    """The key of ``ref`` inside its repository's map: the tag, or ``@`` + digest."""
    if ref.digest is not None:
        return f"@{ref.digest}"
    return ref.tag if ref.tag is not None else DEFAULT_TAG


def _ref(name: str, key: str) -> Reference:
    """The reference stored under ``key`` of repository ``name``."""
    repo = parse(name)
    if key.startswith("@"):
        return repo.with_digest(key[1:])
    return repo.with_tag(key)


def _sort_key(ref: Reference) -> tuple[str, str]:
    return (ref.familiar(), str(ref))


class TagStore:
    """The repository list: tags and digest references of images, persisted in one JSON file.

    Thread-safe; one instance per file. References passed in are normalised
    :class:`~engine.reference.Reference` objects; a reference with
    neither tag nor digest means its ``latest`` tag, as in Docker. When a
    reference has both a tag and a digest, the digest identifies it.

    :param path: the store's file, ``<root>/repositories-<driver>``; created
        empty when missing.
    :param clock: the source of ``LastTagTime`` values (unix seconds).
    :param write: how the file is written, ``write(path, data, mode)``;
        :func:`~engine.sys.fs.atomic_write` unless a test injects a failure.
    :raises HostError: if the file exists but is not a valid tag store.
    """

    def __init__(
        self,
        path: str,
        clock: Callable[[], float] = time.time,
        write: Callable[[str, bytes, int], None] = atomic_write,
    ) -> None:
        self.path = os.path.abspath(path)
        self._clock = clock
        self._write = write
        self._lock = threading.RLock()
        self._repos: _Repos = {}
        self._times: dict[str, float] = {}
        self._by_id: dict[str, list[Reference]] = {}
        self._clean_temp_files()
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            LOG.info("tag store %s does not exist; starting with no tags", self.path)
            self._commit({}, {})
            return
        except OSError as exc:
            raise HostError(f"cannot read tag store {self.path}: {exc.strerror}") from exc
        repos, times = self._decode(data)
        self._repos, self._times = repos, times
        self._by_id = self._index(repos)
        LOG.debug("tag store %s: %d repositories", self.path, len(repos))

    # ------------------------------------------------------------------
    # loading and saving

    def _clean_temp_files(self) -> None:
        """Remove temp files a crash left behind: they never replaced the store, so they hold nothing."""
        directory, base = os.path.split(self.path)
        try:
            removed = remove_write_leftovers(directory, base)
        except FileNotFoundError:
            raise HostError(f"cannot create tag store {self.path}: directory {directory} does not exist") from None
        for name in removed:
            LOG.info("removed %s, left by an interrupted write of the tag store", name)

    def _corrupt(self, detail: str) -> HostError:
        return HostError(
            f"tag store {self.path} is corrupt ({detail}); it was left untouched: "
            "repair it, or move it aside to start with no tags"
        )

    def _decode(self, data: bytes) -> tuple[_Repos, dict[str, float]]:
        """Parse and check the file's contents; every entry must be valid, none is dropped."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._corrupt(f"not JSON: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("Repositories"), dict):
            raise self._corrupt('no "Repositories" object')
        raw_times = doc.get("LastTagTime", {})
        if not isinstance(raw_times, dict):
            raise self._corrupt('"LastTagTime" is not an object')
        repos: _Repos = {}
        for name, entries in doc["Repositories"].items():
            if not isinstance(entries, dict):
                raise self._corrupt(f"repository {name!r} is not an object")
            try:
                repo = parse(name)
            except InvalidParameter as exc:
                raise self._corrupt(f"repository {name!r}: {exc}") from exc
            if repo.tag is not None or repo.digest is not None or repo.name != name:
                raise self._corrupt(f"repository {name!r} is not a normalised repository name")
            checked: dict[str, str] = {}
            for key, image_id in entries.items():
                try:
                    if key.startswith("@"):
                        validate_digest(key[1:])
                    else:
                        validate_tag(key)
                    if not isinstance(image_id, str) or parse_image_id(image_id) != image_id:
                        raise InvalidParameter(f"invalid image ID {image_id!r}")
                except InvalidParameter as exc:
                    raise self._corrupt(f"{name} {key!r}: {exc}") from exc
                checked[key] = image_id
            if checked:
                repos[name] = checked
        times: dict[str, float] = {}
        for image_id, when in raw_times.items():
            if not is_image_id(image_id) or parse_image_id(image_id) != image_id:
                raise self._corrupt(f"LastTagTime: invalid image ID {image_id!r}")
            if isinstance(when, bool) or not isinstance(when, (int, float)):
                raise self._corrupt(f"LastTagTime of {image_id}: not a number")
            times[image_id] = float(when)
        return repos, times

    @staticmethod
    def _index(repos: _Repos) -> dict[str, list[Reference]]:
        """Image ID -> its references, sorted, for the frequent reads of ``docker images``."""
        by_id: dict[str, list[Reference]] = {}
        for name, entries in repos.items():
            for key, image_id in entries.items():
                by_id.setdefault(image_id, []).append(_ref(name, key))
        for refs in by_id.values():
            refs.sort(key=_sort_key)
        return by_id

    def _commit(
        self,
        repos: _Repos,
        times: dict[str, float],
        added: Sequence[tuple[Reference, str]] = (),
        removed: Sequence[tuple[Reference, str]] = (),
    ) -> None:
        """Write the new state, then make it current; on a failed write nothing changes.

        Callers build ``repos`` and ``times`` as new objects, so the state in
        memory never runs ahead of the file. The image index is updated with
        what changed (``added``/``removed``), not rebuilt: rebuilding re-parses
        every reference, which made tagging many images quadratic.
        """
        doc = {"Repositories": repos, "LastTagTime": times}
        data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        try:
            self._write(self.path, data, FILE_MODE)
        except OSError as exc:
            raise HostError(f"cannot save tag store {self.path}: {exc.strerror or exc}") from exc
        self._repos, self._times = repos, times
        for ref, image_id in removed:
            refs = [r for r in self._by_id.get(image_id, []) if r != ref]
            if refs:
                self._by_id[image_id] = refs
            else:
                self._by_id.pop(image_id, None)
        for ref, image_id in added:
            refs = [r for r in self._by_id.get(image_id, []) if r != ref] + [ref]
            refs.sort(key=_sort_key)
            self._by_id[image_id] = refs

    def _copy_repos(self) -> _Repos:
        return {name: dict(entries) for name, entries in self._repos.items()}

    # ------------------------------------------------------------------
    # changes

    def set(self, ref: Reference, image_id: str, force: bool = True) -> None:
        """Point a tag or a digest reference at an image.

        A tag that points to another image is moved with ``force``. A digest
        reference names content and is never moved (as in Docker): setting it
        to another image is a conflict even with ``force``. Setting a tag
        records the image's ``LastTagTime``.

        :param ref: ``name:tag`` or ``name@digest``; a bare name means ``name:latest``.
        :param image_id: ``sha256:<hex>`` (a bare 64-hex ID is accepted).
        :raises InvalidParameter: for a bad image ID, a reference with both a
            tag and a digest, or a repository named like a digest algorithm
            (``sha256:<hex>`` would then be a tag shadowing an image ID).
        :raises Conflict: ``tag <ref> is already set to image <id>, use the
            force option to replace it``, or a digest set to another image.
        :raises HostError: if the store cannot be written; nothing changed then.
        """
        image_id = parse_image_id(image_id)
        if ref.tag is not None and ref.digest is not None:
            raise InvalidParameter("refusing to create a tag with a digest reference")
        if ref.familiar_name in DIGEST_HEX_LENGTHS:
            raise InvalidParameter("refusing to create an ambiguous tag using digest algorithm as name")
        if ref.tag is None and ref.digest is None:
            ref = ref.with_tag(DEFAULT_TAG)
        key = _key(ref)
        with self._lock:
            old = self._repos.get(ref.name, {}).get(key)
            if old is not None and old != image_id:
                if ref.digest is not None:
                    raise Conflict(f"cannot overwrite digest {ref.familiar()}: it is set to image {old}")
                if not force:
                    raise Conflict(
                        f"tag {ref.familiar()} is already set to image {old}, use the force option to replace it"
                    )
                LOG.info("moving tag %s from %s to %s", ref.familiar(), old, image_id)
            repos = self._copy_repos()
            repos.setdefault(ref.name, {})[key] = image_id
            times = dict(self._times)
            if ref.tag is not None:
                times[image_id] = self._clock()
            stored = _ref(ref.name, key)
            self._commit(
                repos,
                times,
                added=[(stored, image_id)],
                removed=[(stored, old)] if old is not None and old != image_id else [],
            )

    def delete(self, ref: Reference) -> bool:
        """Remove a tag or digest reference (a bare name means its ``latest`` tag).

        The image's ``LastTagTime`` stays until :meth:`delete_image`.

        :returns: False if the reference did not exist.
        :raises HostError: if the store cannot be written.
        """
        key = _key(ref)
        with self._lock:
            if key not in self._repos.get(ref.name, {}):
                return False
            repos = self._copy_repos()
            entries = repos[ref.name]
            image_id = entries.pop(key)
            if not entries:
                del repos[ref.name]
            self._commit(repos, dict(self._times), removed=[(_ref(ref.name, key), image_id)])
            return True

    def delete_image(self, image_id: str) -> list[Reference]:
        """Remove every reference to an image, and its ``LastTagTime``.

        :returns: the references removed, sorted as :meth:`references`.
        :raises InvalidParameter: for a bad image ID.
        :raises HostError: if the store cannot be written.
        """
        image_id = parse_image_id(image_id)
        with self._lock:
            removed = list(self._by_id.get(image_id, []))
            if not removed and image_id not in self._times:
                return []
            repos: _Repos = {}
            for name, entries in self._repos.items():
                kept = {key: value for key, value in entries.items() if value != image_id}
                if kept:
                    repos[name] = kept
            times = {key: value for key, value in self._times.items() if key != image_id}
            self._commit(repos, times, removed=[(r, image_id) for r in removed])
            return removed

    # ------------------------------------------------------------------
    # queries

    def get(self, ref: Reference) -> str | None:
        """The image ID a tag or digest reference points to (a bare name means ``latest``)."""
        with self._lock:
            return self._repos.get(ref.name, {}).get(_key(ref))

    def references(self, image_id: str) -> list[Reference]:
        """Every tag and digest reference of an image, sorted by familiar form."""
        image_id = parse_image_id(image_id)
        with self._lock:
            return list(self._by_id.get(image_id, []))

    def repo_tags(self, image_id: str) -> list[str]:
        """An image's ``RepoTags``: familiar ``name:tag`` strings, sorted."""
        return [ref.familiar() for ref in self.references(image_id) if ref.tag is not None]

    def repo_digests(self, image_id: str) -> list[str]:
        """An image's ``RepoDigests``: familiar ``name@sha256:...`` strings, sorted."""
        return [ref.familiar() for ref in self.references(image_id) if ref.digest is not None]

    def images(self) -> builtins.set[str]:
        """The IDs of every image some reference points to."""
        with self._lock:
            return set(self._by_id)

    def repositories(self) -> dict[str, dict[str, str]]:
        """A copy of the repository map, as in the file."""
        with self._lock:
            return self._copy_repos()

    def last_tag_time(self, image_id: str) -> float | None:
        """When the image was last tagged (unix seconds), None if never since it was stored."""
        image_id = parse_image_id(image_id)
        with self._lock:
            return self._times.get(image_id)

    def lookup(self, name: str) -> str | None:
        """Resolve a user's image name to an image ID through references only.

        ``busybox`` means ``busybox:latest``; ``name@sha256:...`` is looked up
        by digest. Image IDs and ID prefixes are the image store's business:
        a full image ID gives None here.

        :returns: the image ID, or None when no reference matches.
        :raises InvalidParameter: if ``name`` is not a valid reference.
        """
        if is_image_id(name):
            return None
        return self.get(parse_normalized(name))
