"""The local volume driver's options (engine.daemon.volumeopts): checks in moby's words, and the
mount options split as moby/sys/mount splits them."""

from __future__ import annotations

import pytest

from engine.daemon import volumeopts
from engine.errors import InvalidParameter
from engine.sys import libc


@pytest.mark.parametrize(
    "opts,message",
    [
        ({"foo": "bar"}, 'invalid option: "foo"'),
        ({"type": "tmpfs"}, 'missing required option: "device"'),
        ({"device": "tmpfs"}, 'missing required option: "type"'),
        ({"o": "bind"}, 'missing required option: "device"'),
        ({"type": "tmpfs", "device": "tmpfs", "size": "10m"}, "quota size requested but no quota support"),
    ],
)
def test_refused_as_moby_refuses(opts, message):
    with pytest.raises(InvalidParameter, match=message):
        volumeopts.validate_options(opts)


def test_accepted():
    volumeopts.validate_options({})
    volumeopts.validate_options({"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    assert volumeopts.needs_mount({"type": "none", "device": "/srv", "o": "bind"})
    assert not volumeopts.needs_mount({})


def test_split_options():
    assert volumeopts.split_options("size=64m,uid=1000") == (0, "size=64m,uid=1000")
    flags, data = volumeopts.split_options("bind,ro,nosuid,addr=10.0.0.1")
    assert flags == libc.MS_BIND | libc.MS_RDONLY | libc.MS_NOSUID and data == "addr=10.0.0.1"
    assert volumeopts.split_options("ro,rw") == (0, "")
