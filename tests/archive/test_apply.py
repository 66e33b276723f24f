"""Tests for engine.archive.apply: applying layer tars (also hostile ones) in one streaming pass.

Run as root in the session sandbox, on real directories below tmp_path.
Hostile-layer tests keep a canary directory next to ``dest`` and check that
it, the rest of tmp_path and the host's /etc are untouched.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import tracemalloc
from collections.abc import Iterator

import pytest

from engine import archive
from engine.errors import InvalidParameter
from engine.sys import fs
from engine.testing.layertar import (
    Entry,
    compress,
    layer_tar_chunks,
    make_layer_tar,
    short_digest,
    tree_listing,
    tree_manifest,
)

pytestmark = pytest.mark.root("layers keep their owners")


@pytest.fixture
def canary(tmp_path, dest) -> Iterator[str]:
    """A directory next to ``dest`` with a file; asserts afterwards that nothing outside dest changed."""
    path = tmp_path / "canary"
    path.mkdir()
    (path / "file").write_text("canary")
    before = tree_manifest(str(path), mtime="ns")
    siblings = sorted(os.listdir(tmp_path))
    host_passwd = os.stat("/etc/passwd")
    host_etc = sorted(os.listdir("/etc"))
    yield str(path)
    assert tree_manifest(str(path), mtime="ns") == before
    assert sorted(os.listdir(tmp_path)) == siblings
    after = os.stat("/etc/passwd")
    assert (after.st_ino, after.st_nlink, after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (
        host_passwd.st_ino,
        host_passwd.st_nlink,
        host_passwd.st_size,
        host_passwd.st_mtime_ns,
        host_passwd.st_ctime_ns,
    )
    assert sorted(os.listdir("/etc")) == host_etc


def apply(dest: str, entries, whiteouts: str = "aufs", compression: str = "none") -> int:
    return archive.apply_layer(dest, io.BytesIO(make_layer_tar(entries, compression)), whiteouts)


# --------------------------------------------------------------------------
# streams


@pytest.mark.parametrize("compression", ["none", "gzip", "bzip2", "xz", "zstd"])
def test_apply_compressed(dest, compression):
    entries = [Entry.dir("etc"), Entry.file("etc/hostname", b"box\n"), Entry.symlink("link", "etc/hostname")]
    assert apply(dest, entries, compression=compression) == 4
    assert tree_listing(dest) == {"etc": "dir", "etc/hostname": short_digest(b"box\n"), "link": "symlink"}


def test_empty_layers(dest):
    assert archive.apply_layer(dest, io.BytesIO(b"")) == 0
    assert archive.apply_layer(dest, io.BytesIO(bytes(1024))) == 0
    assert archive.apply_layer(dest, io.BytesIO(compress(bytes(1024), "gzip"))) == 0
    assert os.listdir(dest) == []


def test_truncated_tar(dest):
    tar = make_layer_tar([Entry.file("a", b"x" * 3000), Entry.file("b", b"y" * 100)])
    for cut in (100, 512 + 1000, 512 + 3072 - 10, 512 + 3072 + 300):  # header, data, padding, next header
        with pytest.raises(InvalidParameter, match="unexpected EOF in layer tar"):
            archive.apply_layer(dest, io.BytesIO(tar[:cut]))
    # Ending cleanly on a header boundary, without the end blocks, is fine (as for Go).
    archive.apply_layer(dest, io.BytesIO(tar[: 512 + 3072]))


def test_garbage_is_invalid(dest):
    with pytest.raises(InvalidParameter, match="invalid"):
        archive.apply_layer(dest, io.BytesIO(b"this is not a tar" * 100))
    tar = make_layer_tar([Entry.file("a", b"a")])
    with pytest.raises(InvalidParameter, match="invalid tar header"):
        archive.apply_layer(dest, io.BytesIO(tar[:1024] + b"garbage!" * 64 + bytes(1024)))


# --------------------------------------------------------------------------
# entry kinds and metadata


def test_metadata_is_kept(dest):
    entries = [
        Entry.dir("bin", mode=0o751, uid=1, gid=2, mtime="1500000000.5"),
        Entry.file(
            "bin/su",
            b"su",
            mode=0o4755,
            xattrs={"security.capability": bytes.fromhex("0100000200040000000000000000000000000000")},
        ),
        Entry.file("bin/sg", b"sg", mode=0o2711, uid=1000, gid=1000),
        Entry.dir("tmp", mode=0o1777),
        Entry.file(
            "f",
            b"x",
            mode=0o600,
            uid=12345,
            gid=54321,
            mtime="1600000000.123456789",
            xattrs={"user.bin": b"\x00\xff\xfe", "trusted.t": b"t", "user.text": "é".encode()},
        ),
        Entry.symlink("abs", "/usr/share/zoneinfo/UTC", uid=7, gid=8, mtime=1234567890),
        Entry.hardlink("f2", "f", mode=0o600, uid=12345, gid=54321, mtime="1600000000.123456789"),
        Entry.char("null", 1, 3),
        Entry.block("loop0", 7, 0, gid=6),
        Entry.fifo("fifo", mode=0o620),
        Entry.file("a" * 150 + "/long-name-" + "b" * 120, b"long"),
    ]
    assert apply(dest, entries) == 2 + 2 + 1 + 4
    m = tree_manifest(dest, mtime="ns")
    assert m["bin"]["mode"] == oct(0o751) and (m["bin"]["uid"], m["bin"]["gid"]) == (1, 2)
    assert m["bin"]["mtime_ns"] == 1_500_000_000_500_000_000  # set after bin/su was created
    assert m["bin/su"]["mode"] == oct(0o4755) and "security.capability" in m["bin/su"]["xattrs"]
    assert m["bin/sg"]["mode"] == oct(0o2711) and m["bin/sg"]["uid"] == 1000
    assert m["tmp"]["mode"] == oct(0o1777)
    assert m["f"]["mtime_ns"] == 1_600_000_000_123_456_789
    assert m["f"]["xattrs"] == {"trusted.t": b"t".hex(), "user.bin": "00fffe", "user.text": "é".encode().hex()}
    assert (m["f"]["uid"], m["f"]["gid"], m["f"]["mode"]) == (12345, 54321, oct(0o600))
    assert m["f2"]["hardlink"] == m["f"]["hardlink"] == "f"
    assert m["abs"]["target"] == "/usr/share/zoneinfo/UTC" and (m["abs"]["uid"], m["abs"]["gid"]) == (7, 8)
    assert m["abs"]["mtime_ns"] == 1_234_567_890_000_000_000
    assert m["null"]["type"] == "char" and m["null"]["rdev"] == (1, 3) and m["null"]["mode"] == oct(0o666)
    assert m["loop0"]["type"] == "block" and m["loop0"]["rdev"] == (7, 0) and m["loop0"]["gid"] == 6
    assert m["fifo"]["type"] == "fifo" and m["fifo"]["mode"] == oct(0o620)
    assert m["a" * 150 + "/long-name-" + "b" * 120]["size"] == 4
    assert m["a" * 150]["mode"] == oct(0o755)  # an implied directory


def test_atime_rule(dest):
    tar = tarfile.TarInfo("f")
    tar.mtime = 2000
    tar.pax_headers = {"atime": "3000.25", "mtime": "2000"}
    older = tarfile.TarInfo("g")
    older.pax_headers = {"atime": "1000", "mtime": "2000"}
    older.mtime = 2000
    data = tar.tobuf(tarfile.PAX_FORMAT) + older.tobuf(tarfile.PAX_FORMAT) + bytes(1024)
    archive.apply_layer(dest, io.BytesIO(data))
    assert os.stat(os.path.join(dest, "f")).st_atime_ns == 3_000_250_000_000
    assert os.stat(os.path.join(dest, "g")).st_atime_ns == 2_000_000_000_000  # never before mtime


def test_libarchive_xattrs_and_overlay_xattrs_refused(dest):
    info = tarfile.TarInfo("f")
    info.pax_headers = {
        "LIBARCHIVE.xattr.user.a%20b": "aGVsbG8",
        "SCHILY.xattr.trusted.overlay.redirect": "/etc",
        "SCHILY.xattr.user.ok": "1",
    }
    archive.apply_layer(dest, io.BytesIO(info.tobuf(tarfile.PAX_FORMAT) + bytes(1024)))
    assert fs.read_xattrs(os.path.join(dest, "f")) == {"user.a b": b"hello", "user.ok": b"1"}


def test_root_entry_sets_root_metadata(dest):
    apply(dest, [Entry.dir("./", mode=0o700, uid=5, gid=6, mtime=1000), Entry.file("x", b"")])
    st = os.stat(dest)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o700, 5, 6, 1000)
    with pytest.raises(InvalidParameter, match="root"):
        apply(dest, [Entry.file("./", b"")])


def test_replacing_entries(dest):
    apply(
        dest,
        [
            Entry.dir("d"),
            Entry.file("d/inner", b"1"),
            Entry.file("f", b"f"),
            Entry.symlink("s", "f"),
            Entry.dir("keep", mode=0o700),
            Entry.file("keep/x", b"x"),
        ],
    )
    apply(
        dest,
        [
            Entry.file("d", b"now a file"),  # dir -> file, contents go
            Entry.dir("f"),
            Entry.file("f/child", b"c"),  # file -> dir
            Entry.file("s", b"not a link"),  # symlink -> file, the target is not written
            Entry.dir("keep", mode=0o750, uid=3),  # dir onto dir: merge, update metadata
        ],
    )
    assert tree_listing(dest) == {
        "d": short_digest(b"now a file"),
        "f": "dir",
        "f/child": short_digest(b"c"),
        "s": short_digest(b"not a link"),
        "keep": "dir",
        "keep/x": short_digest(b"x"),
    }
    m = tree_manifest(dest)
    assert m["keep"]["mode"] == oct(0o750) and m["keep"]["uid"] == 3


def test_sparse_output(dest):
    data = b"head" + bytes(8 << 20) + b"tail"
    assert apply(dest, [Entry.file("sparse", data)]) == len(data)
    path = os.path.join(dest, "sparse")
    assert os.stat(path).st_blocks * 512 < 4 << 20
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
    trailing = b"x" + bytes(4 << 20)  # ends in a hole
    apply(dest, [Entry.file("trailing", trailing)])
    assert os.stat(os.path.join(dest, "trailing")).st_size == len(trailing)


def test_gnu_sparse_members(dest, tmp_path):
    src = tmp_path / "gnu"
    src.mkdir()
    with open(src / "holes", "wb") as f:
        f.write(b"a")
        f.seek(3 << 20)
        f.write(b"b")
    tar_path = tmp_path / "gnu.tar"
    if os.system(f"tar --sparse --format=gnu -C {src} -cf {tar_path} holes") != 0:
        pytest.skip("GNU tar not available")
    with open(tar_path, "rb") as f:
        archive.apply_layer(dest, f)
    with open(os.path.join(dest, "holes"), "rb") as f:
        data = f.read()
    assert len(data) == (3 << 20) + 1 and data[0:1] == b"a" and data[-1:] == b"b" and data.count(0) == len(data) - 2


# --------------------------------------------------------------------------
# whiteouts


LOWER = [
    Entry.dir("etc"),
    Entry.file("etc/a", b"a"),
    Entry.file("etc/b", b"b"),
    Entry.dir("var"),
    Entry.dir("var/cache"),
    Entry.file("var/cache/old", b"o"),
    Entry.dir("var/cache/sub"),
    Entry.file("var/cache/sub/deep", b"d"),
    Entry.dir("opt"),
    Entry.dir("opt/tree"),
    Entry.file("opt/tree/leaf", b"l"),
]


def test_aufs_whiteouts(dest):
    apply(dest, LOWER)
    apply(
        dest,
        [
            Entry.whiteout("etc/a"),
            Entry.whiteout("opt/tree"),
            Entry.whiteout("nothing/here"),  # a whiteout of what does not exist: nothing happens
            Entry.dir("var/cache", mode=0o700),
            Entry.file("var/cache/mine-before", b"1"),
            Entry.opaque("var/cache"),
            Entry.file("var/cache/mine-after", b"2"),
        ],
    )
    assert tree_listing(dest) == {
        "etc": "dir",
        "etc/b": short_digest(b"b"),
        "var": "dir",
        "var/cache": "dir",
        "var/cache/mine-before": short_digest(b"1"),
        "var/cache/mine-after": short_digest(b"2"),
        "opt": "dir",
    }
    assert not os.path.exists(os.path.join(dest, "nothing"))


def test_overlay_whiteouts(dest):
    apply(
        dest,
        [
            Entry.dir("etc"),
            Entry.whiteout("etc/a"),
            Entry(name="etc/.wh.owned", uid=5, gid=6, mode=0),
            Entry.dir("var"),
            Entry.dir("var/cache"),
            Entry.opaque("var/cache"),
            Entry.file("var/cache/new", b"n"),
            Entry.opaque("implied/dir"),
        ],
        whiteouts="overlay",
    )
    st = os.lstat(os.path.join(dest, "etc/a"))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0 and stat.S_IMODE(st.st_mode) == 0
    owned = os.lstat(os.path.join(dest, "etc/owned"))
    assert (owned.st_uid, owned.st_gid) == (5, 6)
    assert os.getxattr(os.path.join(dest, "var/cache"), "trusted.overlay.opaque") == b"y"
    assert os.getxattr(os.path.join(dest, "implied/dir"), "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(os.path.join(dest, "var/cache"))) == ["new"]
    assert not any(n.startswith(".wh.") for _, dirs, files in os.walk(dest) for n in dirs + files)


def test_overlay_layers_through_a_real_overlay_mount(tmp_path):
    """Upper dirs written in overlay mode make overlayfs hide what the layer deleted."""
    from engine.sys import libc

    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for p in (lower, upper, work, merged):
        p.mkdir()
    apply(str(lower), LOWER)
    apply(
        str(upper),
        [
            Entry.dir("etc"),
            Entry.whiteout("etc/a"),
            Entry.dir("var"),
            Entry.dir("var/cache"),
            Entry.opaque("var/cache"),
            Entry.file("var/cache/new", b"n"),
        ],
        whiteouts="overlay",
    )
    try:
        libc.mount("overlay", str(merged), "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}")
    except OSError as exc:
        pytest.skip(f"overlay cannot be mounted here: {exc}")
    try:
        assert tree_listing(str(merged)) == {
            "etc": "dir",
            "etc/b": short_digest(b"b"),
            "var": "dir",
            "var/cache": "dir",
            "var/cache/new": short_digest(b"n"),
            "opt": "dir",
            "opt/tree": "dir",
            "opt/tree/leaf": short_digest(b"l"),
        }
    finally:
        libc.umount2(str(merged))


@pytest.mark.parametrize("name", [".wh..", "a/.wh..", ".wh.", "a/.wh."])
def test_invalid_whiteouts(dest, canary, name):
    with pytest.raises(InvalidParameter, match="whiteout"):
        apply(dest, [Entry.dir("a"), Entry(name=name, mode=0)])


def test_aufs_metadata_entries(dest):
    apply(
        dest,
        [
            Entry.dir(".wh..wh.plnk"),
            Entry.file(".wh..wh.plnk/123.456", b"linked content", mode=0o640, uid=9),
            Entry.file(".wh..wh.aufs", b""),
            Entry.dir(".wh..wh.orph"),
            Entry.dir("bin"),
            Entry.hardlink("bin/tool", ".wh..wh.plnk/123.456"),
        ],
    )
    assert tree_listing(dest) == {"bin": "dir", "bin/tool": short_digest(b"linked content")}
    assert tree_manifest(dest)["bin/tool"]["uid"] == 9


def test_keep_whiteouts_for_an_aufs_branch(dest):
    """whiteouts="keep": whiteouts and opaque markers are written as the files they are, nothing is deleted."""
    apply(dest, LOWER)
    size = apply(
        dest,
        [
            Entry.dir(".wh..wh.plnk"),
            Entry.file(".wh..wh.plnk/7.8", b"pl", mode=0o640),
            Entry.file(".wh..wh.aufs", b""),
            Entry.dir(".wh..wh.orph"),
            Entry.whiteout("etc/a"),
            Entry.whiteout("opt/tree"),
            Entry.whiteout("implied/gone"),
            Entry.dir("var/cache", mode=0o700),
            Entry.opaque("var/cache"),
            Entry.file("var/cache/mine", b"m"),
            Entry.hardlink("var/cache/linked", ".wh..wh.plnk/7.8"),
        ],
        whiteouts="keep",
    )
    assert size == 1 + 2
    assert tree_listing(dest) == {
        "etc": "dir",
        "etc/a": short_digest(b"a"),
        "etc/b": short_digest(b"b"),
        "etc/.wh.a": short_digest(b""),
        "opt": "dir",
        "opt/tree": "dir",
        "opt/tree/leaf": short_digest(b"l"),
        "opt/.wh.tree": short_digest(b""),
        "implied": "dir",
        "implied/.wh.gone": short_digest(b""),
        "var": "dir",
        "var/cache": "dir",
        "var/cache/old": short_digest(b"o"),
        "var/cache/sub": "dir",
        "var/cache/sub/deep": short_digest(b"d"),
        "var/cache/.wh..wh..opq": short_digest(b""),
        "var/cache/mine": short_digest(b"m"),
        "var/cache/linked": short_digest(b"pl"),
    }
    manifest = tree_manifest(dest)
    assert manifest["etc/.wh.a"]["mode"] == oct(0) and manifest["var/cache"]["mode"] == oct(0o700)


def test_keep_whiteouts_stay_confined(dest, canary):
    with pytest.raises(InvalidParameter, match="outside of"):
        apply(dest, [Entry.whiteout("../canary/file")], whiteouts="keep")
    apply(dest, [Entry.dir("etc"), Entry.symlink("link", "/etc"), Entry.whiteout("link/passwd")], whiteouts="keep")
    assert os.path.isfile(os.path.join(dest, "etc/.wh.passwd"))


# --------------------------------------------------------------------------
# hostile layers


def test_dotdot_escape_refused(dest, canary):
    for name in ("../canary/pwned", "a/../../canary/pwned", "./../canary/file", ".."):
        with pytest.raises(InvalidParameter, match="is outside of"):
            apply(dest, [Entry.file(name, b"pwned")])


def test_absolute_names_are_relative_to_dest(dest, canary):
    apply(
        dest,
        [Entry.file(canary + "/file", b"inside"), Entry.file("/etc/passwd", b"mine"), Entry.file("/../../x", b"x")],
    )
    assert open(os.path.join(dest, canary.lstrip("/"), "file")).read() == "inside"
    assert open(os.path.join(dest, "etc/passwd")).read() == "mine"
    assert open(os.path.join(dest, "x")).read() == "x"


def test_absolute_symlink_then_entry_through_it(dest, canary):
    # The symlink is content and is kept as it is; writing through it stays in dest.
    with pytest.raises(InvalidParameter):
        apply(dest, [Entry.symlink("evil", canary), Entry.file("evil/pwned", b"x")])
    assert os.readlink(os.path.join(dest, "evil")) == canary
    # Where dest has the directory the symlink names, the entry lands there.
    os.makedirs(os.path.join(dest, canary.lstrip("/")))
    apply(dest, [Entry.file("evil/pwned", b"x"), Entry.file("evil/file", b"overwritten in dest")])
    inside = os.path.join(dest, canary.lstrip("/"))
    assert sorted(os.listdir(inside)) == ["file", "pwned"]


def test_symlink_to_etc_then_passwd(dest, canary):
    with pytest.raises(InvalidParameter):
        apply(dest, [Entry.symlink("etc", "/etc"), Entry.file("etc/passwd", b"root::0:0::/:/bin/sh\n")])
    with pytest.raises(InvalidParameter):
        apply(dest, [Entry.file("etc/shadow", b"x")])
    assert os.listdir(dest) == ["etc"] and os.path.islink(os.path.join(dest, "etc"))


def test_escaping_relative_symlink_refused(dest, canary):
    with pytest.raises(InvalidParameter, match="invalid symlink"):
        apply(dest, [Entry.symlink("evil", "../canary")])
    with pytest.raises(InvalidParameter, match="invalid symlink"):
        apply(dest, [Entry.dir("a"), Entry.symlink("a/evil", "../../../../../../canary")])
    apply(dest, [Entry.dir("b"), Entry.symlink("b/fine", "../a/x")])  # stays inside: fine


def test_existing_escaping_symlink_is_clamped(dest, canary):
    """A symlink a container made in its rootfs (no tar check saw it) cannot redirect writes."""
    os.symlink("../canary", os.path.join(dest, "evil"))
    os.symlink("/../../canary", os.path.join(dest, "evil-abs"))
    os.mkdir(os.path.join(dest, "canary"))  # where both land when clamped
    apply(
        dest,
        [Entry.file("evil/file", b"pwned"), Entry.file("evil-abs/new", b"pwned"), Entry.dir("evil/sub", mode=0o777)],
    )
    assert sorted(os.listdir(os.path.join(dest, "canary"))) == ["file", "new", "sub"]


def test_replacing_a_symlink_does_not_touch_its_target(dest, canary):
    os.symlink(canary, os.path.join(dest, "dirlink"))
    os.symlink(canary + "/file", os.path.join(dest, "filelink"))
    apply(dest, [Entry.dir("dirlink", mode=0o777, uid=1234), Entry.file("filelink", b"pwned", mode=0o4777)])
    assert os.path.isdir(os.path.join(dest, "dirlink")) and not os.path.islink(os.path.join(dest, "dirlink"))
    assert open(os.path.join(dest, "filelink")).read() == "pwned"


def test_whiteouts_through_symlinks_stay_inside(dest, canary):
    os.symlink(canary, os.path.join(dest, "link"))
    apply(dest, [Entry.whiteout("link/file"), Entry.opaque("link")])
    apply(dest, [Entry.whiteout("link")])
    assert not os.path.lexists(os.path.join(dest, "link"))


def test_overlay_whiteouts_through_symlinks_stay_inside(dest, canary):
    os.symlink(canary, os.path.join(dest, "link"))
    with pytest.raises(InvalidParameter):
        apply(dest, [Entry.whiteout("link/file")], whiteouts="overlay")
    with pytest.raises(InvalidParameter):
        apply(dest, [Entry.opaque("link")], whiteouts="overlay")


def test_hardlink_to_outside_refused(dest, canary):
    for target in ("../canary/file", "a/../../canary/file", "../../../../../../etc/passwd"):
        with pytest.raises(InvalidParameter, match="invalid hardlink"):
            apply(dest, [Entry.hardlink("h", target)])


def test_hardlink_targets_resolve_inside(dest, canary):
    with pytest.raises(InvalidParameter, match="does not exist"):
        apply(dest, [Entry.hardlink("h", "/etc/passwd")])
    with pytest.raises(InvalidParameter, match="does not exist"):
        apply(dest, [Entry.symlink("s", "/etc"), Entry.hardlink("h", "s/passwd")])
    with pytest.raises(InvalidParameter, match="does not exist"):
        apply(dest, [Entry.symlink("c", canary), Entry.hardlink("h2", "c/file")])
    # A hard link to a symlink links the symlink itself, never its target.
    apply(dest, [Entry.symlink("pw", "/etc/passwd"), Entry.hardlink("pw2", "pw")])
    assert os.readlink(os.path.join(dest, "pw2")) == "/etc/passwd"
    assert os.lstat(os.path.join(dest, "pw2")).st_ino == os.lstat(os.path.join(dest, "pw")).st_ino


def test_merged_usr_symlinked_parent(dest, canary):
    apply(
        dest,
        [
            Entry.dir("usr"),
            Entry.dir("usr/lib"),
            Entry.symlink("lib", "usr/lib"),
            Entry.symlink("lib64", "/usr/lib"),
            Entry.file("lib/libc.so", b"c"),
            Entry.file("lib64/ld.so", b"ld"),
            Entry.dir("lib/modules"),
        ],
    )
    assert tree_listing(dest) == {
        "usr": "dir",
        "usr/lib": "dir",
        "usr/lib/libc.so": short_digest(b"c"),
        "usr/lib/ld.so": short_digest(b"ld"),
        "usr/lib/modules": "dir",
        "lib": "symlink",
        "lib64": "symlink",
    }


def test_removal_invalidates_symlinked_parents(dest, canary):
    """lib -> usr/lib was resolved for lib/a; once usr goes, lib/b must not land in the deleted usr/lib."""
    with pytest.raises(InvalidParameter, match="missing directory"):
        apply(
            dest,
            [
                Entry.dir("usr"),
                Entry.dir("usr/lib"),
                Entry.symlink("lib", "usr/lib"),
                Entry.file("lib/a", b"a"),
                Entry.whiteout("usr"),
                Entry.file("lib/b", b"b"),
            ],
        )
    assert sorted(os.listdir(dest)) == ["lib"]


def test_symlink_loop_and_file_parent(dest, canary):
    with pytest.raises(InvalidParameter, match="not a directory"):
        apply(dest, [Entry.symlink("loop", "loop"), Entry.file("loop/x", b"")])
    with pytest.raises(InvalidParameter, match="not a directory"):
        apply(dest, [Entry.file("plain", b""), Entry.file("plain/x", b"")])


def test_unsupported_entry_type(dest):
    info = tarfile.TarInfo("volume")
    info.type = b"V"
    with pytest.raises(InvalidParameter, match="unsupported tar entry type"):
        archive.apply_layer(dest, io.BytesIO(info.tobuf(tarfile.GNU_FORMAT) + bytes(1024)))


# --------------------------------------------------------------------------
# big layers: streaming and throughput


class _ChunkReader(io.RawIOBase):
    """A non-seekable stream over generated chunks (like an HTTP body)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")

    def readable(self):
        return True

    def readinto(self, b):
        while not self._buf:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buf = memoryview(chunk)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def test_big_layer_streams_in_bounded_memory(dest):
    block = os.urandom(1 << 20)

    # A 64 MiB entry generated on the fly: never all in memory at once.
    def chunks() -> Iterator[bytes]:
        info = tarfile.TarInfo("big")
        info.size = 64 << 20
        yield info.tobuf(tarfile.PAX_FORMAT)
        for _ in range(64):
            yield block
        yield bytes(1024)

    tracemalloc.start()
    try:
        size = archive.apply_layer(dest, io.BufferedReader(_ChunkReader(chunks())))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == 64 << 20
    assert peak < 16 << 20, f"peak Python memory {peak >> 20} MiB"
    digest = hashlib.sha256()
    for _ in range(64):
        digest.update(block)
    with open(os.path.join(dest, "big"), "rb") as f:
        assert hashlib.sha256(f.read()).digest() == digest.digest()


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_apply_big_and_many_files(tmp_path, compression):
    """A layer of big files (each many times any read buffer) and many small ones is applied whole.

    How fast is bench/bench_archive.py's question (a rate depends on the machine).
    """
    entries = [Entry.dir("big")]
    entries += [Entry.file(f"big/f{i}", os.urandom(4 << 20)) for i in range(4)]
    entries += [Entry.dir("small")] + [Entry.file(f"small/s{i:04}", os.urandom(10 << 10)) for i in range(500)]
    layer = tmp_path / f"layer.tar.{compression}"
    layer.write_bytes(compress(b"".join(layer_tar_chunks(entries)), compression))
    dest = tmp_path / "dest"
    dest.mkdir()
    with open(layer, "rb") as f:
        size = archive.apply_layer(str(dest), f)
    assert size == sum(len(e.data) for e in entries)
    for entry in entries:
        path = dest / entry.name
        if entry.kind == "file":
            assert path.read_bytes() == entry.data, entry.name
        else:
            assert path.is_dir(), entry.name
    assert sorted(os.listdir(dest / "small")) == [f"s{i:04}" for i in range(500)]
