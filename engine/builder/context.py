"""The build context: the tar the client sends (or a remote tarball), unpacked on disk.

moby's ``remotecontext``: the body of ``POST /build`` is a tar, plain or
compressed (gzip, bzip2, xz, zstd), streamed to disk (never held in memory)
into the build's own directory under ``<root>/builder/``; or ``remote`` names
an http(s) URL whose answer is such a tar, or a Dockerfile (``text/plain``).
The Dockerfile is found in it (``Dockerfile``, else ``dockerfile``), read and
parsed, and, as dockerd does, the ``.dockerignore`` and the Dockerfile are
removed from the context when the ``.dockerignore`` names them (the client
has left out everything else it excludes).

Paths in the context are resolved inside it (openat2 ``RESOLVE_IN_ROOT``):
a symlink leading out of the context leads nowhere, and ``../x`` is
refused in dockerd's words.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import posixpath
import stat
from collections.abc import Callable
from typing import IO

from engine import archive
from engine.builder import dockerignore
from engine.builder.parser import Dockerfile, parse
from engine.errors import EngineError, HostError, InvalidParameter, NotFound
from engine.sys import libc
from engine.sys.fs import safe_rmtree

LOG = logging.getLogger(__name__)

_IN_ROOT = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS
DEFAULT_DOCKERFILE = "Dockerfile"


class ContextError(EngineError):
    """The context cannot be used (dockerd answers 500 for these)."""


def forbidden(path: str) -> InvalidParameter:
    return InvalidParameter(f"forbidden path outside the build context: {path} ()")


class BuildContext:
    """An unpacked context in ``root`` (a directory the build owns and removes with :meth:`close`)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self._hashes: dict[str, str] = {}

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        safe_rmtree(self.root)

    # lookups inside the context
    def check(self, path: str) -> str:
        """``path`` made relative to the context root ("." for the root).

        :raises InvalidParameter: it climbs out (``../x``).
        """
        cleaned = posixpath.normpath(path) if path else "."
        if cleaned == ".." or cleaned.startswith("../"):
            raise forbidden(path)
        rel = cleaned.lstrip("/")
        return rel or "."

    def open_path(self, path: str, flags: int = os.O_PATH) -> int:
        """An fd of ``path``, resolved inside the context; the last component is not followed.

        :raises FileNotFoundError: it does not exist (a symlink out of the context leads nowhere).
        """
        rel = self.check(path)
        parent, base = posixpath.split(rel)
        pfd = libc.openat2(self._fd, parent or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, resolve=_IN_ROOT)
        try:
            if base in ("", "."):
                return os.open(".", flags | os.O_CLOEXEC, dir_fd=pfd)
            return os.open(base, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        finally:
            os.close(pfd)

    def resolve(self, path: str) -> str:
        """The host path of ``path`` with every symlink in it resolved inside the context."""
        rel = self.check(path)
        fd = libc.openat2(self._fd, rel, os.O_PATH | os.O_CLOEXEC, resolve=_IN_ROOT)
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)

    def lstat(self, path: str) -> os.stat_result:
        """``lstat`` of ``path`` inside the context (its parents resolved inside it)."""
        fd = self.open_path(path)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def stat(self, path: str) -> os.stat_result:
        """``stat`` of ``path``, symlinks followed inside the context."""
        return os.stat(self.resolve(path))

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except OSError:
            return False
        return True

    def read(self, path: str) -> bytes:
        host = self.resolve(path)
        with open(host, "rb") as fh:
            return fh.read()

    def remove(self, path: str) -> None:
        rel = self.check(path)
        target = os.path.join(self.root, rel)
        if os.path.isdir(target) and not os.path.islink(target):
            safe_rmtree(target)
        else:
            try:
                os.unlink(target)
            except FileNotFoundError:
                pass

    # what COPY and ADD cache on
    def walk(self, path: str) -> list[str]:
        """Every entry below the directory ``path`` (relative to the context, sorted, not followed)."""
        base = self.resolve(path)
        out = []
        for top, dirs, files in os.walk(base):
            dirs.sort()
            rel_top = os.path.relpath(top, self.root)
            for name in sorted(dirs + files):
                out.append(posixpath.normpath(posixpath.join(rel_top, name)))
        return sorted(out)

    def hash(self, path: str) -> str:
        """The checksum of one entry: type, mode, owner, link target and content (moby's tarsum per file)."""
        rel = self.check(path)
        cached = self._hashes.get(rel)
        if cached is not None:
            return cached
        full = os.path.join(self.resolve(posixpath.dirname(rel) or "."), posixpath.basename(rel))
        st = os.lstat(full)
        h = hashlib.sha256()
        h.update(f"{stat.S_IFMT(st.st_mode)}:{stat.S_IMODE(st.st_mode)}:{st.st_uid}:{st.st_gid}".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(full).encode("utf-8", "surrogateescape"))
        elif stat.S_ISREG(st.st_mode):
            with open(full, "rb") as fh:
                while True:
                    chunk = fh.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
        value = h.hexdigest()
        self._hashes[rel] = value
        return value


def _unpack(stream: IO[bytes], dest: str) -> None:
    try:
        archive.apply_layer(dest, stream, whiteouts="keep", shown_as="/")
    except InvalidParameter as exc:
        message = str(exc)
        if "unexpected EOF" in message:
            raise ContextError("unexpected EOF") from exc
        if "invalid" in message and "tar" in message:
            raise ContextError("archive/tar: invalid tar header") from exc
        raise ContextError(message) from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise HostError(f"failed to unpack the build context: {os.strerror(exc.errno)}") from exc
        raise HostError(f"failed to unpack the build context: {exc}") from exc


def from_archive(stream: IO[bytes], dest: str) -> BuildContext:
    """Unpack a context tar (any compression) into the new directory ``dest``."""
    os.makedirs(dest, mode=0o700)
    try:
        _unpack(stream, dest)
    except BaseException:
        safe_rmtree(dest)
        raise
    return BuildContext(dest)


def download(url: str, dest: str, progress: Callable[[str], None] | None = None) -> tuple[str, str]:
    """Fetch ``url`` into the file ``dest``; its content type.

    :raises InvalidParameter: the URL cannot be fetched (dockerd's words).
    """
    import requests

    try:
        resp = requests.get(url, stream=True, timeout=60)
    except requests.RequestException as exc:
        raise InvalidParameter(f"error downloading remote context {url}: {exc}") from None
    with resp:
        if resp.status_code >= 400:
            raise InvalidParameter(
                f"error downloading remote context {url}: failed to GET {url} with status {resp.status_code} "
                f"{resp.reason}: {resp.text[:200]}"
            )
        if progress is not None:
            progress(f"Downloading build context from remote url: {url}")
        try:
            with open(dest, "wb") as fh:
                for chunk in resp.iter_content(1 << 20):
                    fh.write(chunk)
        except OSError as exc:
            raise HostError(f"error downloading remote context {url}: {exc}") from exc
        return (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower(), url


def _looks_like_text(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(512)
    return archive.detect_compression(head) == "none" and b"\x00" not in head and head[257:262] != b"ustar"


def read_dockerfile(ctx: BuildContext, name: str) -> Dockerfile:
    """Find, read and parse the Dockerfile ``name`` in the context, then drop what ``.dockerignore`` names.

    :raises ContextError: ``Cannot locate specified Dockerfile: NAME``.
    :raises InvalidParameter: it is empty, or does not parse.
    """
    try:
        data = ctx.read(name)
    except (FileNotFoundError, NotADirectoryError):
        if name == DEFAULT_DOCKERFILE and ctx.exists(name.lower()):
            return read_dockerfile(ctx, name.lower())
        raise ContextError(f"Cannot locate specified Dockerfile: {name}") from None
    except InvalidParameter:
        raise
    except IsADirectoryError:
        raise ContextError(f"Cannot locate specified Dockerfile: {name}") from None
    result = parse_text(data, name)
    remove_ignored(ctx, name)
    return result


def parse_text(data: bytes, name: str) -> Dockerfile:
    if not data:
        raise InvalidParameter(f"the Dockerfile ({name}) cannot be empty")
    return parse(data.decode("utf-8", "replace"))


def remove_ignored(ctx: BuildContext, dockerfile_name: str) -> None:
    """moby's ``removeDockerfile``: drop ``.dockerignore`` and the Dockerfile if ``.dockerignore`` lists them."""
    try:
        text = ctx.read(".dockerignore").decode("utf-8", "replace")
    except OSError:
        return
    matcher = dockerignore.PatternMatcher(dockerignore.read_patterns(text))
    for path in (".dockerignore", dockerfile_name):
        if matcher.matches(path):
            ctx.remove(path)


def is_git_url(url: str) -> bool:
    """moby's ``urlutil.IsGitURL``: ``git://``, ``git@``, ``github.com/``, or an http(s) URL of a ``.git`` repository."""
    if url.startswith(("git://", "git@", "github.com/")):
        return True
    if url.startswith(("http://", "https://")):
        return url.split("#", 1)[0].endswith(".git")
    return False


def load(
    body: IO[bytes] | None,
    remote: str,
    dockerfile_name: str,
    workdir: str,
    progress: Callable[[str], None] | None = None,
) -> tuple[BuildContext | None, Dockerfile]:
    """The context and the parsed Dockerfile of a build (moby ``remotecontext.Detect``).

    :param workdir: a new directory the build owns; the context is unpacked in ``workdir/context``.
    """
    name = dockerfile_name or DEFAULT_DOCKERFILE
    if is_git_url(remote):
        # dockerd clones these with git; this engine builds from tarballs and Dockerfiles only.
        raise InvalidParameter(f"git build contexts are not supported by this engine: {remote}")
    if not remote:
        ctx = from_archive(body if body is not None else _Empty(), os.path.join(workdir, "context"))
    elif remote.startswith(("http://", "https://")):
        fetched = os.path.join(workdir, "remote")
        content_type, _ = download(remote, fetched, progress)
        if content_type == "text/plain" or (not content_type and _looks_like_text(fetched)):
            with open(fetched, "rb") as fh:
                return None, parse_text(fh.read(), name)
        with open(fetched, "rb") as fh:
            ctx = from_archive(fh, os.path.join(workdir, "context"))
        os.unlink(fetched)
    elif remote == "client-session":
        raise InvalidParameter(
            "experimental session with v1 builder is no longer supported, use builder version v2 (BuildKit) instead"
        )
    else:
        raise ContextError(f"remoteURL ({remote}) could not be recognized as URL")
    try:
        return ctx, read_dockerfile(ctx, name)
    except BaseException:
        ctx.close()
        raise


class _Empty:
    def read(self, n: int = -1) -> bytes:  # noqa: ARG002
        return b""


def not_found(path: str) -> NotFound:
    return NotFound(f"file not found in build context or excluded by .dockerignore: stat {path}: file does not exist")


__all__ = ["BuildContext", "ContextError", "forbidden", "from_archive", "load", "not_found", "read_dockerfile"]
