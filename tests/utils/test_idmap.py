"""ID maps of a user namespace and the subordinate ID files (subuid(5))."""

from __future__ import annotations

import pytest

from engine.utils.idmap import OVERFLOW_ID, IDMap, read_subids


def test_ranges_are_laid_end_to_end_from_zero():
    m = IDMap.from_subids([(100000, 65536), (300000, 10)], [(200000, 65546)])
    assert m.uids == ((0, 100000, 65536), (65536, 300000, 10))
    assert m.root_uid == 100000 and m.root_gid == 200000
    assert m.to_host_uid(65537) == 300001 and m.to_container_uid(300001) == 65537
    assert IDMap.proc_text(m.uids) == "0 100000 65536\n65536 300000 10\n"
    assert IDMap.from_json(m.to_json()) == m


def test_unmapped_ids():
    m = IDMap.from_subids([(100000, 10)], [(100000, 10)])
    with pytest.raises(ValueError, match="uid 10 is not mapped"):
        m.to_host_uid(10)
    with pytest.raises(ValueError, match="gid 0 is not mapped"):
        m.to_container_gid(0)
    assert m.to_container_uid(0, OVERFLOW_ID) == 65534


def test_subid_files_by_name_or_uid(tmp_path):
    path = tmp_path / "subuid"
    path.write_text("alice:100000:65536\n1001:200000:1000\nbob:300000:5\nbroken\nalice:x:1\nalice:5:0\n")
    assert read_subids(str(path), ("alice", "1000")) == [(100000, 65536)]
    assert read_subids(str(path), ("carol", "1001")) == [(200000, 1000)]
    assert read_subids(str(tmp_path / "missing"), ("alice",)) == []
