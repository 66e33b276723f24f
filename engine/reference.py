"""Docker image references: parsing, normalisation and validation of image names.

A reference names an image the way clients write it: ``busybox``,
``busybox:1.36``, ``docker.io/library/busybox``, ``localhost:5000/a/b:tag``,
``registry.example.com/x@sha256:<hex>``. This module follows the grammar and
the normalisation of docker/distribution's ``reference`` package (moby
v20.10's ``ParseNormalizedNamed``), so that one image has one spelling
whichever client sent it (COMPAT §0 item 8)::

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [domain "/"] path-component ["/" path-component]*
    domain           := host [":" port-number]
    host             := domain-name | "[" IPv6 address "]"
    domain-name      := domain-component ["." domain-component]*
    domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
    port-number      := /[0-9]+/
    path-component   := /[a-z0-9]+/ [separator /[a-z0-9]+/]*
    separator        := /[_.]|__|[-]*/
    tag              := /[\\w][\\w.-]{0,127}/
    digest           := algorithm ":" hex   (sha256: 64 lowercase hex digits)

Normalisation: the first ``/``-separated component is the registry domain
when it contains ``.`` or ``:`` or is ``localhost``; otherwise the domain is
``docker.io`` (``index.docker.io`` is its legacy spelling), and a Docker Hub
name of a single component gets the ``library/`` namespace of official
images. :class:`Reference` always holds the normalised, fully qualified form;
:meth:`Reference.familiar` gives the short form users see (``busybox:latest``).

Image IDs are not references: a bare 64-hex string is always an ID (Docker
refuses it as a repository name) and ``sha256:<hex>`` is a digest naming an
image config. :func:`is_image_id` tells them apart and callers check it first:
``sha256:<hex>`` is, grammatically, also the repository ``sha256`` with a tag.

Errors are :class:`~engine.errors.InvalidParameter` with Docker's messages,
which clients show verbatim (``invalid reference format``, ...).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from engine.errors import InvalidParameter

LOG = logging.getLogger(__name__)

#: Registry of images named without a domain.
DEFAULT_DOMAIN = "docker.io"
#: The v1 index's name for Docker Hub; normalised to :data:`DEFAULT_DOMAIN`.
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
#: Namespace of Docker Hub's official images (``busybox`` is ``library/busybox``).
OFFICIAL_REPO_NAME = "library"
#: Tag a reference gets when it names neither a tag nor a digest.
DEFAULT_TAG = "latest"
#: Longest fully qualified name (domain and path) Docker accepts.
NAME_TOTAL_LENGTH_MAX = 255

#: Hex digits of each digest algorithm Docker supports (go-digest's set).
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}

# The regular expressions below describe exactly the distribution grammar,
# but are written so that Python's backtracking engine stays linear (Go's
# RE2 is linear by construction): the grammar's separator ``[-]*`` may be
# empty, which turns ``[a-z0-9]+(?:[-]*[a-z0-9]+)*`` into an exponential
# pattern here. An empty separator only joins two alphanumeric runs, which
# ``[a-z0-9]+`` already covers, so ``-+`` accepts the same language. Atomic
# groups are safe because no component can be followed by a character it
# could itself consume (``/``, ``:``, ``@`` or the end).
_ALNUM = r"[a-z0-9]++"
_SEPARATOR = r"(?:[._]|__|-++)"
_PATH_COMPONENT = rf"(?>{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*+)"
_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*+"
_DOMAIN_COMPONENT = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN_NAME = rf"(?>{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*+)"
_IPV6 = r"\[[a-fA-F0-9:]++\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]++)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*+(?:[-_+.][A-Za-z][A-Za-z0-9]*+)*+:[0-9a-fA-F]{32,}+"

_DOMAIN_RE = re.compile(_DOMAIN, re.ASCII)
_PATH_RE = re.compile(_PATH, re.ASCII)
_TAG_RE = re.compile(_TAG, re.ASCII)
#: What follows the domain: ``path[:tag][@digest]``.
_REMAINDER_RE = re.compile(rf"(?P<path>{_PATH})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?", re.ASCII)
#: go-digest's ``DigestRegexp``: the shape of any digest, known algorithm or not.
_ANY_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+", re.ASCII)
#: A bare image ID (distribution's ``anchoredIdentifierRegexp``).
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}", re.ASCII)
_IMAGE_ID_RE = re.compile(r"(?:sha256:)?([a-f0-9]{64})", re.ASCII)

# Docker's messages (distribution/reference and go-digest), shown verbatim
# by clients.
ERR_INVALID_FORMAT = "invalid reference format"
ERR_UPPERCASE = "invalid reference format: repository name must be lowercase"
ERR_NAME_TOO_LONG = f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
ERR_TAG_FORMAT = "invalid tag format"
ERR_DIGEST_FORMAT = "invalid checksum digest format"
ERR_DIGEST_LENGTH = "invalid checksum digest length"
ERR_DIGEST_UNSUPPORTED = "unsupported digest algorithm"


@dataclass(frozen=True)
class Reference:
    """A normalised image reference: registry domain, repository path, tag and digest.

    Build one with :func:`parse` or :func:`parse_normalized`; the constructor
    checks the fields but does not normalise them.

    :param domain: the registry, ``docker.io`` for Docker Hub.
    :param path: the repository inside the registry, ``library/busybox``.
    :param tag: ``latest``, ``1.36``...; None when the reference has none.
    :param digest: ``sha256:<hex>`` of a manifest; None when it has none.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        if not _DOMAIN_RE.fullmatch(self.domain) or not _PATH_RE.fullmatch(self.path):
            raise InvalidParameter(ERR_INVALID_FORMAT)
        if len(self.name) > NAME_TOTAL_LENGTH_MAX:
            raise InvalidParameter(ERR_NAME_TOO_LONG)
        if self.tag is not None:
            validate_tag(self.tag)
        if self.digest is not None:
            validate_digest(self.digest)

    @property
    def name(self) -> str:
        """The fully qualified repository name, ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository name as users write it: ``busybox``, ``user/repo``, ``localhost:5000/a/b``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        namespace, _, rest = self.path.partition("/")
        if namespace == OFFICIAL_REPO_NAME and rest and "/" not in rest:
            return rest
        return self.path

    @property
    def is_docker_hub(self) -> bool:
        """Whether the repository lives on Docker Hub."""
        return self.domain == DEFAULT_DOMAIN

    @property
    def repository_path(self) -> str:
        """The repository as the registry API names it (``/v2/<path>/manifests/...``)."""
        return self.path

    def _suffix(self) -> str:
        suffix = f":{self.tag}" if self.tag is not None else ""
        if self.digest is not None:
            suffix += f"@{self.digest}"
        return suffix

    def __str__(self) -> str:
        return self.name + self._suffix()

    def familiar(self) -> str:
        """The short form with tag and digest, ``busybox:latest``, ``user/repo@sha256:...``."""
        return self.familiar_name + self._suffix()

    def with_tag(self, tag: str | None) -> Reference:
        """The same repository and digest with ``tag`` (None removes the tag).

        :raises InvalidParameter: ``invalid tag format``.
        """
        return replace(self, tag=tag)

    def with_digest(self, digest: str | None) -> Reference:
        """The same repository and tag with ``digest`` (None removes the digest).

        :raises InvalidParameter: with go-digest's message for a bad digest.
        """
        return replace(self, digest=digest)

    def repository(self) -> Reference:
        """The bare repository, without tag or digest."""
        return replace(self, tag=None, digest=None)


def validate_tag(tag: str) -> str:
    """Check a tag against ``[\\w][\\w.-]{0,127}``.

    :returns: ``tag`` unchanged.
    :raises InvalidParameter: ``invalid tag format``.
    """
    if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
        raise InvalidParameter(ERR_TAG_FORMAT)
    return tag


def validate_digest(digest: str) -> str:
    """Check a digest (``sha256:<64 lowercase hex>``, or sha384/sha512) as go-digest does.

    :returns: ``digest`` unchanged.
    :raises InvalidParameter: ``invalid checksum digest format``, ``invalid
        checksum digest length`` or ``unsupported digest algorithm``.
    """
    if not isinstance(digest, str):
        raise InvalidParameter(ERR_DIGEST_FORMAT)
    algorithm, sep, encoded = digest.partition(":")
    if not algorithm or not sep or not encoded:
        raise InvalidParameter(ERR_DIGEST_FORMAT)
    length = DIGEST_HEX_LENGTHS.get(algorithm)
    if length is None:
        if not _ANY_DIGEST_RE.fullmatch(digest):
            raise InvalidParameter(ERR_DIGEST_FORMAT)
        raise InvalidParameter(ERR_DIGEST_UNSUPPORTED)
    if len(encoded) != length:
        raise InvalidParameter(ERR_DIGEST_LENGTH)
    if not re.fullmatch(r"[a-f0-9]+", encoded, re.ASCII):
        raise InvalidParameter(ERR_DIGEST_FORMAT)
    return digest


def split_docker_domain(name: str) -> tuple[str, str]:
    """Split a user's name into registry domain and the rest, as Docker does.

    The first component is the domain when it contains ``.`` or ``:`` or is
    ``localhost``; otherwise the domain is Docker Hub, where a single
    component gets the ``library/`` namespace.

    :returns: ``(domain, remainder)``; ``remainder`` keeps any tag or digest.
    """
    first, slash, rest = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = f"{OFFICIAL_REPO_NAME}/{remainder}"
    return domain, remainder


def parse(s: str) -> Reference:
    """Parse and normalise a reference the way Docker does; no default tag is added.

    ``busybox`` gives ``docker.io/library/busybox`` with neither tag nor
    digest; ``name:tag@sha256:<hex>`` keeps both.

    :raises InvalidParameter: with Docker's message: ``invalid reference
        format``, ``invalid reference format: repository name must be
        lowercase``, ``repository name must not be more than 255
        characters``, ``invalid repository name (<s>), cannot specify 64-byte
        hexadecimal strings`` for an image ID, or go-digest's messages for a
        digest of the right shape but the wrong algorithm, length or case.
    """
    if not isinstance(s, str):
        raise InvalidParameter(ERR_INVALID_FORMAT)
    if _IDENTIFIER_RE.fullmatch(s):
        raise InvalidParameter(f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = split_docker_domain(s)
    # Only the repository part must be lowercase: Docker cuts at the first
    # colon, so ``busybox:TAG`` passes this check and ``FOO@sha256:..`` fails it.
    remote_name = remainder.partition(":")[0]
    if remote_name.lower() != remote_name:
        raise InvalidParameter(ERR_UPPERCASE)
    match = _REMAINDER_RE.fullmatch(remainder)
    if match is None or not _DOMAIN_RE.fullmatch(domain):
        # Docker's grammar would read a domain that is not a valid host but
        # is a valid path component (``a_b.c/x``) as a domain-less name; every
        # normalised reference here has a registry, so such names are refused.
        raise InvalidParameter(ERR_INVALID_FORMAT)
    path, tag, digest = match.group("path", "tag", "digest")
    if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidParameter(ERR_NAME_TOO_LONG)
    if digest is not None:
        validate_digest(digest)
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def parse_normalized(s: str, default_tag: str | None = DEFAULT_TAG) -> Reference:
    """:func:`parse`, then add ``default_tag`` when the reference has neither tag nor digest.

    :param default_tag: the tag to add; None adds none (same as :func:`parse`).
    :raises InvalidParameter: as :func:`parse`.
    """
    ref = parse(s)
    if ref.tag is None and ref.digest is None and default_tag is not None:
        ref = ref.with_tag(default_tag)
    return ref


def is_image_id(s: str) -> bool:
    """Whether ``s`` is a full image ID: ``sha256:<64 hex>`` or a bare 64-hex string."""
    return isinstance(s, str) and _IMAGE_ID_RE.fullmatch(s) is not None


def parse_image_id(s: str) -> str:
    """Normalise a full image ID to ``sha256:<64 hex>``.

    :raises InvalidParameter: if ``s`` is not a full image ID (short ID
        prefixes are resolved by the image store, not here).
    """
    match = _IMAGE_ID_RE.fullmatch(s) if isinstance(s, str) else None
    if match is None:
        raise InvalidParameter(f"invalid image ID: {s!r}")
    return f"sha256:{match.group(1)}"


# ----------------------------------------------------------------------
# registry hosts

#: The login server of Docker Hub, as clients write it (the key of Hub credentials in config.json).
INDEX_SERVER = "https://index.docker.io/v1/"


def host_of(address: str) -> str:
    """The registry host of a login server address (``https://x:5000/v2/`` -> ``x:5000``).

    The Hub's spellings (``https://index.docker.io/v1/``, ``index.docker.io``,
    ``registry-1.docker.io``, ``docker.io``) all give ``docker.io``.
    """
    text = (address or "").strip()
    if not text:
        return DEFAULT_DOMAIN
    if "://" in text:
        text = urlsplit(text).netloc or text.split("://", 1)[1]
    text = text.split("/", 1)[0].lower()
    if text in ("index.docker.io", "registry-1.docker.io", "registry.hub.docker.com", "docker.io"):
        return DEFAULT_DOMAIN
    return text
