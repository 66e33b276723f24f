"""Tests for engine.reference: Docker's reference grammar and normalisation."""

from __future__ import annotations

import time

import pytest

from engine import reference
from engine.errors import InvalidParameter
from engine.reference import (
    Reference,
    is_image_id,
    parse,
    parse_image_id,
    parse_normalized,
    validate_digest,
    validate_tag,
)

HEX = "0123456789abcdef" * 4
DIGEST = f"sha256:{HEX}"

# input -> (str(), familiar(), domain, path, tag, digest) from parse()
VALID = [
    ("busybox", "docker.io/library/busybox", "busybox", "docker.io", "library/busybox", None, None),
    (
        "busybox:latest",
        "docker.io/library/busybox:latest",
        "busybox:latest",
        "docker.io",
        "library/busybox",
        "latest",
        None,
    ),
    ("docker.io/library/busybox", "docker.io/library/busybox", "busybox", "docker.io", "library/busybox", None, None),
    ("docker.io/busybox", "docker.io/library/busybox", "busybox", "docker.io", "library/busybox", None, None),
    ("index.docker.io/busybox", "docker.io/library/busybox", "busybox", "docker.io", "library/busybox", None, None),
    ("index.docker.io/user/repo:1", "docker.io/user/repo:1", "user/repo:1", "docker.io", "user/repo", "1", None),
    (
        "library/busybox:1.36",
        "docker.io/library/busybox:1.36",
        "busybox:1.36",
        "docker.io",
        "library/busybox",
        "1.36",
        None,
    ),
    ("library/a/b", "docker.io/library/a/b", "library/a/b", "docker.io", "library/a/b", None, None),
    ("user/repo", "docker.io/user/repo", "user/repo", "docker.io", "user/repo", None, None),
    ("user/repo/sub:v2", "docker.io/user/repo/sub:v2", "user/repo/sub:v2", "docker.io", "user/repo/sub", "v2", None),
    (
        "localhost:5000/busybox",
        "localhost:5000/busybox",
        "localhost:5000/busybox",
        "localhost:5000",
        "busybox",
        None,
        None,
    ),
    (
        "localhost:5000/a/b:tag",
        "localhost:5000/a/b:tag",
        "localhost:5000/a/b:tag",
        "localhost:5000",
        "a/b",
        "tag",
        None,
    ),
    ("localhost/x", "localhost/x", "localhost/x", "localhost", "x", None, None),
    # "localhost" alone is not a domain: it is Docker Hub's library/localhost.
    ("localhost", "docker.io/library/localhost", "localhost", "docker.io", "library/localhost", None, None),
    (
        "localhost:5000",
        "docker.io/library/localhost:5000",
        "localhost:5000",
        "docker.io",
        "library/localhost",
        "5000",
        None,
    ),
    (
        f"127.0.0.1:5000/x@{DIGEST}",
        f"127.0.0.1:5000/x@{DIGEST}",
        f"127.0.0.1:5000/x@{DIGEST}",
        "127.0.0.1:5000",
        "x",
        None,
        DIGEST,
    ),
    (
        f"name:tag@{DIGEST}",
        f"docker.io/library/name:tag@{DIGEST}",
        f"name:tag@{DIGEST}",
        "docker.io",
        "library/name",
        "tag",
        DIGEST,
    ),
    (
        f"busybox@{DIGEST}",
        f"docker.io/library/busybox@{DIGEST}",
        f"busybox@{DIGEST}",
        "docker.io",
        "library/busybox",
        None,
        DIGEST,
    ),
    ("[::1]:5000/x", "[::1]:5000/x", "[::1]:5000/x", "[::1]:5000", "x", None, None),
    ("[fe80::1]/x:t", "[fe80::1]/x:t", "[fe80::1]/x:t", "[fe80::1]", "x", "t", None),
    (
        "registry.example.com/team/app:1.0-rc_1",
        "registry.example.com/team/app:1.0-rc_1",
        "registry.example.com/team/app:1.0-rc_1",
        "registry.example.com",
        "team/app",
        "1.0-rc_1",
        None,
    ),
    # Domains may have uppercase letters, tags too; paths may not.
    (
        "Registry.Example.com/app",
        "Registry.Example.com/app",
        "Registry.Example.com/app",
        "Registry.Example.com",
        "app",
        None,
        None,
    ),
    ("busybox:TAG", "docker.io/library/busybox:TAG", "busybox:TAG", "docker.io", "library/busybox", "TAG", None),
    # Separators: one '.', one '_', two '_', any number of '-'.
    ("u/a.b_c__d---e", "docker.io/u/a.b_c__d---e", "u/a.b_c__d---e", "docker.io", "u/a.b_c__d---e", None, None),
    ("x:_under", "docker.io/library/x:_under", "x:_under", "docker.io", "library/x", "_under", None),
    ("x:" + "t" * 128, "docker.io/library/x:" + "t" * 128, "x:" + "t" * 128, "docker.io", "library/x", "t" * 128, None),
    # sha256:<hex> is grammatically repository "sha256" with a tag; callers
    # check is_image_id() first.
    (DIGEST, f"docker.io/library/sha256:{HEX}", DIGEST, "docker.io", "library/sha256", HEX, None),
    # The longest name: 255 characters fully qualified.
    ("a" * 237, "docker.io/library/" + "a" * 237, "a" * 237, "docker.io", "library/" + "a" * 237, None, None),
    (
        "localhost:5000/" + "b" * 240,
        "localhost:5000/" + "b" * 240,
        "localhost:5000/" + "b" * 240,
        "localhost:5000",
        "b" * 240,
        None,
        None,
    ),
]

LOWERCASE = "invalid reference format: repository name must be lowercase"
FORMAT = "invalid reference format"
TOO_LONG = "repository name must not be more than 255 characters"

INVALID = [
    ("UPPER", LOWERCASE),
    ("Busybox:latest", LOWERCASE),
    ("user/Repo", LOWERCASE),
    ("localhost:5000/FOO", LOWERCASE),
    (f"FOO@{DIGEST}", LOWERCASE),
    ("a//b", FORMAT),
    (":tag", FORMAT),
    ("a:b:c", FORMAT),
    ("-a", FORMAT),
    ("a-", FORMAT),
    ("a..b", FORMAT),
    ("a___b", FORMAT),
    ("a/", FORMAT),
    ("/a", FORMAT),
    ("", FORMAT),
    ("busybox:", FORMAT),
    ("busybox:-tag", FORMAT),
    ("busybox:.tag", FORMAT),
    ("busybox:" + "t" * 129, FORMAT),
    ("busybox@", FORMAT),
    ("busybox@sha256:abc", FORMAT),
    ("busybox@sha256", FORMAT),
    ("busybox@@" + DIGEST, FORMAT),
    ("a b", FORMAT),
    ("busybox:lätest", FORMAT),
    ("localhost:port/x", FORMAT),
    ("-host.com/x", FORMAT),
    # A first component with '.' is a domain, and "a_b.c" is no host name.
    ("a_b.c/foo", FORMAT),
    ("busybox\n", FORMAT),
    ("a" * 256, TOO_LONG),
    # Docker checks the fully qualified name: docker.io/library/ + 238 = 256.
    ("a" * 238, TOO_LONG),
    (f"busybox@sha256:{HEX.upper()}", "invalid checksum digest format"),
    (f"busybox@sha256:{HEX[:32]}", "invalid checksum digest length"),
    (f"busybox@sha256:{HEX}00", "invalid checksum digest length"),
    (f"busybox@md5:{HEX[:32]}", "unsupported digest algorithm"),
    (HEX, f"invalid repository name ({HEX}), cannot specify 64-byte hexadecimal strings"),
]


@pytest.mark.parametrize("text,full,familiar,domain,path,tag,digest", VALID)
def test_parse_valid(text, full, familiar, domain, path, tag, digest):
    ref = parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert str(ref) == full
    assert ref.familiar() == familiar
    assert ref.name == f"{domain}/{path}"
    assert ref.repository_path == path
    assert ref.is_docker_hub == (domain == "docker.io")
    # Normalisation is idempotent: both spellings parse to the same reference.
    assert parse(str(ref)) == ref
    assert parse(ref.familiar()) == ref


@pytest.mark.parametrize("text,message", INVALID)
def test_parse_invalid(text, message):
    with pytest.raises(InvalidParameter) as info:
        parse(text)
    assert str(info.value) == message
    assert info.value.http_status == 400


@pytest.mark.parametrize(
    "text,expected",
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}"),
        (f"busybox:1@{DIGEST}", f"docker.io/library/busybox:1@{DIGEST}"),
        ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
    ],
)
def test_parse_normalized_adds_latest_only_when_untagged(text, expected):
    assert str(parse_normalized(text)) == expected
    if "latest" in expected and "latest" not in text:
        assert parse(text).tag is None  # parse() itself never adds a tag


def test_parse_normalized_other_default():
    assert parse_normalized("busybox", default_tag="edge").tag == "edge"
    assert parse_normalized("busybox", default_tag=None).tag is None


@pytest.mark.parametrize(
    "text,familiar_name",
    [
        ("busybox", "busybox"),
        ("docker.io/library/busybox", "busybox"),
        ("user/repo", "user/repo"),
        ("library/a/b", "library/a/b"),
        ("localhost:5000/a/b", "localhost:5000/a/b"),
        ("quay.io/library/x", "quay.io/library/x"),
    ],
)
def test_familiar_name(text, familiar_name):
    assert parse(text).familiar_name == familiar_name


def test_with_tag_and_digest():
    ref = parse("busybox")
    tagged = ref.with_tag("1.36")
    assert str(tagged) == "docker.io/library/busybox:1.36"
    both = tagged.with_digest(DIGEST)
    assert both.familiar() == f"busybox:1.36@{DIGEST}"
    assert both.with_tag(None).familiar() == f"busybox@{DIGEST}"
    assert both.repository() == ref
    assert ref.tag is None  # frozen: the original is unchanged
    with pytest.raises(InvalidParameter, match="^invalid tag format$"):
        ref.with_tag("bad tag")
    with pytest.raises(InvalidParameter, match="^invalid checksum digest length$"):
        ref.with_digest("sha256:abcd")


def test_reference_is_frozen_and_hashable():
    ref = parse("busybox:latest")
    with pytest.raises(AttributeError):
        ref.tag = "x"  # type: ignore[misc]
    assert {ref, parse("docker.io/library/busybox:latest")} == {ref}


def test_constructor_checks_fields():
    assert str(Reference("docker.io", "library/x", "t")) == "docker.io/library/x:t"
    for bad in [("docker.io", "Library/x"), ("bad_domain", "x"), ("docker.io", "")]:
        with pytest.raises(InvalidParameter, match="^invalid reference format$"):
            Reference(*bad)


@pytest.mark.parametrize(
    "tag,ok",
    [
        ("latest", True),
        ("1.36", True),
        ("_x", True),
        ("A-b.C_d", True),
        ("t" * 128, True),
        ("", False),
        ("-x", False),
        (".x", False),
        ("t" * 129, False),
        ("a:b", False),
        ("a/b", False),
        ("é", False),
    ],
)
def test_validate_tag(tag, ok):
    if ok:
        assert validate_tag(tag) == tag
    else:
        with pytest.raises(InvalidParameter, match="^invalid tag format$"):
            validate_tag(tag)


@pytest.mark.parametrize(
    "digest,message",
    [
        (DIGEST, None),
        ("sha384:" + "a" * 96, None),
        ("sha512:" + "a" * 128, None),
        ("sha256:" + HEX.upper(), "invalid checksum digest format"),
        ("sha256:" + "g" * 64, "invalid checksum digest format"),
        ("sha256:abc", "invalid checksum digest length"),
        ("sha512:" + HEX, "invalid checksum digest length"),
        ("md5:" + "a" * 32, "unsupported digest algorithm"),
        ("sha256:", "invalid checksum digest format"),
        (":" + HEX, "invalid checksum digest format"),
        (HEX, "invalid checksum digest format"),
        ("MD5:!!", "invalid checksum digest format"),
    ],
)
def test_validate_digest(digest, message):
    if message is None:
        assert validate_digest(digest) == digest
    else:
        with pytest.raises(InvalidParameter) as info:
            validate_digest(digest)
        assert str(info.value) == message


@pytest.mark.parametrize(
    "text,expected",
    [
        (HEX, DIGEST),
        (DIGEST, DIGEST),
        ("sha256:" + HEX.upper(), None),
        (HEX[:12], None),
        ("sha256:" + HEX[:12], None),
        ("sha512:" + "a" * 128, None),
        ("busybox", None),
        (HEX + "0", None),
    ],
)
def test_image_ids(text, expected):
    assert is_image_id(text) == (expected is not None)
    if expected is None:
        with pytest.raises(InvalidParameter):
            parse_image_id(text)
    else:
        assert parse_image_id(text) == expected


def test_split_docker_domain():
    assert reference.split_docker_domain("busybox") == ("docker.io", "library/busybox")
    assert reference.split_docker_domain("a/b") == ("docker.io", "a/b")
    assert reference.split_docker_domain("a.b/c") == ("a.b", "c")
    assert reference.split_docker_domain("index.docker.io/c") == ("docker.io", "library/c")


@pytest.mark.parametrize(
    "text",
    [
        "a" * 100_000 + "!",
        "a-" * 50_000 + "!",
        "a" + "-" * 100_000 + ".b/c",
        "a" * 50_000 + "/" + "b" * 50_000 + "!",
        "a" * 50_000 + ":" + "b" * 50_000,
        "a/" + "b" * 100_000 + "@sha256:" + "0" * 100_000 + "!",
    ],
)
def test_hostile_input_is_rejected_quickly(text):
    """The regexes are written for Python's backtracking engine: no blow-up on long input."""
    start = time.monotonic()
    with pytest.raises(InvalidParameter):
        parse(text)
    assert time.monotonic() - start < 1.0
