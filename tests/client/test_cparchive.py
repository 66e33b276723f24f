"""``cp``'s archive rules without a daemon: argument split, moby's rename rules, safe extraction, source tars."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from engine.client import cparchive
from engine.client.cparchive import CopyInfo
from engine.client.errors import ClientError
from engine.testing.layertar import Entry, make_layer_tar


@pytest.mark.parametrize(
    "arg, expected",
    [
        ("web:/etc/passwd", ("web", "/etc/passwd")),
        ("web:relative", ("web", "relative")),
        ("/abs:with:colons", ("", "/abs:with:colons")),
        ("./web:x", ("", "./web:x")),
        ("plain", ("", "plain")),
        ("-", ("", "-")),
    ],
)
def test_split_cp_arg(arg, expected):
    assert cparchive.split_cp_arg(arg) == expected


def test_split_dir_entry_and_trailing():
    assert cparchive.split_dir_entry("/a/b/") == ("/a", "b")
    assert cparchive.split_dir_entry("/a/b/.") == ("/a/b", ".")
    assert cparchive.split_dir_entry("b") == (".", "b")
    assert cparchive.preserve_trailing("/x/y", "y/.") == "/x/y/."
    assert cparchive.preserve_trailing("/x/y", "y/") == "/x/y/"
    assert cparchive.go_base("/a/b/") == "b" and cparchive.go_base("/") == "/"


@pytest.mark.parametrize(
    "src, dst, expected",
    [
        (CopyInfo("/c/dir", True, True), CopyInfo("/h/exists", True, True), ("/h/exists", None)),
        (CopyInfo("/c/dir", True, True), CopyInfo("/h/new"), ("/h", ("dir", "new"))),
        (CopyInfo("/c/dir/.", True, True), CopyInfo("/h/new"), ("/h", (".", "new"))),
        (CopyInfo("/c/file", True, False), CopyInfo("/h/file2", True, False), ("/h", ("file", "file2"))),
        (CopyInfo("/c/file", True, False), CopyInfo("/h/new"), ("/h", ("file", "new"))),
        (CopyInfo("/c/link", True, False, rebase_name="orig"), CopyInfo("/h/new"), ("/h", ("orig", "new"))),
    ],
)
def test_prepare_copy(src, dst, expected):
    assert cparchive.prepare_copy(src, dst) == expected


def test_prepare_copy_errors():
    with pytest.raises(ClientError, match="cannot copy directory"):
        cparchive.prepare_copy(CopyInfo("/c/dir", True, True), CopyInfo("/h/file", True, False))
    with pytest.raises(ClientError, match="no such directory"):
        cparchive.prepare_copy(CopyInfo("/c/file", True, False), CopyInfo("/h/missing/"))


def tar_of(*entries: Entry) -> io.BytesIO:
    return io.BytesIO(make_layer_tar(entries))


def test_extract_renames_and_does_not_chown(tmp_path):
    stream = tar_of(
        Entry.dir("dir"),
        Entry.file("dir/a.txt", b"A", 0o640, uid=4242),
        Entry.dir("dir/sub"),
        Entry.file("dir/sub/b.txt", b"B", 0o640, uid=4242),
    )
    cparchive.extract(stream, str(tmp_path), ("dir", "copy"))
    assert (tmp_path / "copy" / "a.txt").read_bytes() == b"A"
    assert (tmp_path / "copy" / "sub" / "b.txt").read_bytes() == b"B"
    st = os.stat(tmp_path / "copy" / "a.txt")
    assert st.st_uid == os.getuid() and st.st_mode & 0o777 == 0o640


def test_extract_refuses_escapes_and_clashes(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ClientError, match="outside of"):
        cparchive.extract(tar_of(Entry.file("../evil", b"x")), str(dest), None)
    assert not (tmp_path / "evil").exists()
    (dest / "link").symlink_to(tmp_path)
    with pytest.raises(ClientError, match="outside of"):
        cparchive.extract(tar_of(Entry.file("link/evil", b"x")), str(dest), None)
    assert not (tmp_path / "evil").exists()
    with pytest.raises(ClientError, match="invalid hardlink"):
        cparchive.extract(tar_of(Entry.hardlink("hl", "../../etc/passwd")), str(dest), None)
    (dest / "d").mkdir()
    with pytest.raises(ClientError, match="cannot overwrite directory"):
        cparchive.extract(tar_of(Entry.file("d", b"file now")), str(dest), None)
    (dest / "f").write_text("x")
    with pytest.raises(ClientError, match="cannot overwrite non-directory"):
        cparchive.extract(tar_of(Entry.dir("f")), str(dest), None)
    # A symlink in the way is replaced, never written through.
    (dest / "out").symlink_to(tmp_path / "victim")
    cparchive.extract(tar_of(Entry.file("out", b"data")), str(dest), None)
    assert not (tmp_path / "victim").exists() and (dest / "out").read_bytes() == b"data"


def tar_names(src: CopyInfo, rename=None) -> list[str]:
    data = b"".join(cparchive.tar_stream(src, rename))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [m.name for m in tar.getmembers()]


def test_source_tars(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "sub" / "b.txt").write_text("B")
    info = cparchive.source_info(str(src), follow_link=False)
    assert info.is_dir and info.rebase_name == ""
    assert tar_names(info) == ["src", "src/a.txt", "src/sub", "src/sub/b.txt"]
    assert tar_names(info, ("src", "dst")) == ["dst", "dst/a.txt", "dst/sub", "dst/sub/b.txt"]
    dot = cparchive.source_info(str(src) + "/.", follow_link=False)
    assert tar_names(dot) == [".", "./a.txt", "./sub", "./sub/b.txt"]
    (tmp_path / "ln").symlink_to(src)
    followed = cparchive.source_info(str(tmp_path / "ln"), follow_link=True)
    assert followed.path == str(src) and followed.rebase_name == "ln"
    assert tar_names(followed)[:2] == ["ln", "ln/a.txt"]
    unfollowed = cparchive.source_info(str(tmp_path / "ln"), follow_link=False)
    assert not unfollowed.is_dir and tar_names(unfollowed) == ["ln"]
    with pytest.raises(ClientError, match="no such file"):
        cparchive.source_info(str(tmp_path / "missing"), follow_link=False)


def test_destination_info(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "to-dir").symlink_to(tmp_path / "dir")
    assert cparchive.destination_info(str(tmp_path / "dir")) == CopyInfo(str(tmp_path / "dir"), True, True)
    assert cparchive.destination_info(str(tmp_path / "to-dir")) == CopyInfo(str(tmp_path / "dir"), True, True)
    assert cparchive.destination_info(str(tmp_path / "new")) == CopyInfo(str(tmp_path / "new"))
    with pytest.raises(ClientError, match="no such file"):
        cparchive.destination_info(str(tmp_path / "nope" / "new"))
    with pytest.raises(ClientError, match="not a directory"):
        cparchive.destination_info(str(tmp_path / "file" / "new"))
