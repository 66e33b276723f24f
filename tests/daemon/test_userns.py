"""--userns-remap as dockerd reads it (engine.daemon.userns), and what the security policy makes of it."""

from __future__ import annotations

import grp
import os
import pwd

import pytest

from engine.daemon.config import Config
from engine.daemon.security import SecurityPolicy
from engine.daemon.userns import Remap, free_range, remapped_root, resolve_names, setup
from engine.errors import InvalidParameter
from engine.utils.idmap import IDMap

NOBODY = pwd.getpwnam("nobody")
NOGROUP = grp.getgrgid(NOBODY.pw_gid).gr_name


@pytest.mark.parametrize(
    "spec, names",
    [
        (f"nobody:{NOGROUP}", ("nobody", NOGROUP)),
        (f"{NOBODY.pw_uid}:{NOBODY.pw_gid}", ("nobody", NOGROUP)),
        (f"nobody:{NOBODY.pw_gid}", ("nobody", NOGROUP)),
        ("root", ("root", "root")),  # a name alone: the group of that name
        ("0", ("root", "root")),  # a number alone: the group of that number
    ],
)
def test_names(spec, names):
    assert resolve_names(spec, create=False) == names


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "the --userns-remap option has invalid format: "),
        ("a:b:c", "the --userns-remap option has invalid format: a:b:c"),
        ("nobody:", "invalid format"),
        ("no-such-user-here", 'Error during uid lookup for "no-such-user-here"'),
        ("nobody:no-such-group-here", 'Error during gid lookup for "no-such-group-here"'),
        ("4000000", "Uid 4000000 has no entry in /etc/passwd"),
        ("0:4000000", "Gid 4000000 has no entry in /etc/group"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(InvalidParameter, match=message.replace("(", r"\(")):
        resolve_names(spec, create=False)


def test_default_without_creating_is_an_error():
    try:
        pwd.getpwnam("dockremap")
        pytest.skip("this host has a dockremap user")
    except KeyError:
        pass
    with pytest.raises(InvalidParameter, match='uid lookup for "dockremap"'):
        resolve_names("default", create=False)


def test_setup_reads_the_users_ranges(tmp_path):
    (tmp_path / "subuid").write_text("nobody:200000:65536\nnobody:400000:10\n")
    (tmp_path / "subgid").write_text(f"{NOBODY.pw_uid}:300000:65536\n")
    remap = setup(f"nobody:{NOGROUP}", etc=str(tmp_path))
    assert remap.idmap.uids == ((0, 200000, 65536), (65536, 400000, 10))
    assert remap.idmap.gids == ((0, 300000, 65536),)
    (tmp_path / "subgid").write_text("")
    with pytest.raises(InvalidParameter, match='No subgid ranges found for user "nobody"'):
        setup(f"nobody:{NOGROUP}", etc=str(tmp_path))
    with pytest.raises(InvalidParameter, match='No subuid ranges found for user "root"'):
        setup("root", etc=str(tmp_path))


def test_free_range_skips_taken_ones():
    assert free_range([]) == 100000
    assert free_range([(100000, 65536)]) == 165536
    assert free_range([(150000, 10), (231072, 5)]) == 165536
    assert free_range([(150000, 10), (200000, 5)]) == 231072


@pytest.mark.root("chown")
def test_remapped_root_is_dockerds(tmp_path):
    remap = Remap("nobody", NOGROUP, IDMap.from_subids([(200000, 65536)], [(300000, 65536)]))
    path = remapped_root(str(tmp_path / "root"), remap)
    assert path == str(tmp_path / "root" / "200000.300000")
    st = os.stat(path)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 300000, 0o710)
    assert os.stat(tmp_path / "root").st_mode & 0o7777 == 0o711


def test_security_policy():
    remap = Remap("nobody", NOGROUP, IDMap.from_subids([(200000, 65536)], [(300000, 65536)]))
    policy = SecurityPolicy(Config(), None, remap)
    assert "name=userns" in policy.info_options()
    assert policy.user_namespace({}) == {"uids": [[0, 200000, 65536]], "gids": [[0, 300000, 65536]]}
    assert policy.user_namespace({"UsernsMode": "host"}) == {}
    with pytest.raises(InvalidParameter, match="privileged mode is incompatible with user namespaces"):
        policy.check_create({"Privileged": True})
    policy.check_create({"Privileged": True, "UsernsMode": "host"})
    with pytest.raises(InvalidParameter, match="invalid USER NS mode: private"):
        policy.check_create({"UsernsMode": "private"})
    plain = SecurityPolicy(Config(), None)
    assert plain.user_namespace({}) == {} and "name=userns" not in plain.info_options()
    plain.check_create({"Privileged": True})
