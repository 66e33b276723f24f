"""The network contract's own parts: Docker's link variables and link port specs."""

from __future__ import annotations

import pytest

from engine.drivers.network import link_env, parse_link_ports
from engine.errors import InvalidParameter


def test_parse_link_ports():
    assert parse_link_ports(["80/tcp", "8000-8002/udp", "53", " 443/TCP "]) == [
        (80, 80, "tcp"),
        (8000, 8002, "udp"),
        (53, 53, "tcp"),
        (443, 443, "tcp"),
    ]
    for bad in ("http", "0/tcp", "70000", "9-8/tcp", "1-x"):
        with pytest.raises(InvalidParameter, match="for a link"):
            parse_link_ports([bad])


# links
def test_link_env_like_docker():
    env = link_env(
        "/web/db-1",
        "172.17.0.5",
        ["5432/tcp", "8000/tcp", "8001/tcp", "8002/tcp", "53/udp"],
        ["HOME=/root", "PATH=/bin", "USER=app", "NOVALUE", "EQ=a=b"],
    )
    assert env == [
        "DB_1_PORT=tcp://172.17.0.5:5432",
        "DB_1_PORT_5432_TCP=tcp://172.17.0.5:5432",
        "DB_1_PORT_5432_TCP_ADDR=172.17.0.5",
        "DB_1_PORT_5432_TCP_PORT=5432",
        "DB_1_PORT_5432_TCP_PROTO=tcp",
        "DB_1_PORT_8000_TCP=tcp://172.17.0.5:8000",
        "DB_1_PORT_8000_TCP_ADDR=172.17.0.5",
        "DB_1_PORT_8000_TCP_PORT=8000",
        "DB_1_PORT_8000_TCP_PROTO=tcp",
        "DB_1_PORT_8001_TCP=tcp://172.17.0.5:8001",
        "DB_1_PORT_8001_TCP_ADDR=172.17.0.5",
        "DB_1_PORT_8001_TCP_PORT=8001",
        "DB_1_PORT_8001_TCP_PROTO=tcp",
        "DB_1_PORT_8002_TCP=tcp://172.17.0.5:8002",
        "DB_1_PORT_8002_TCP_ADDR=172.17.0.5",
        "DB_1_PORT_8002_TCP_PORT=8002",
        "DB_1_PORT_8002_TCP_PROTO=tcp",
        # moby closes a run when the next port breaks it, after that port's own variables
        "DB_1_PORT_53_UDP=udp://172.17.0.5:53",
        "DB_1_PORT_53_UDP_ADDR=172.17.0.5",
        "DB_1_PORT_53_UDP_PORT=53",
        "DB_1_PORT_53_UDP_PROTO=udp",
        "DB_1_PORT_8000_TCP_START=tcp://172.17.0.5:8000",
        "DB_1_PORT_8000_TCP_PORT_START=8000",
        "DB_1_PORT_8000_TCP_END=tcp://172.17.0.5:8002",
        "DB_1_PORT_8000_TCP_PORT_END=8002",
        "DB_1_NAME=/web/db-1",
        "DB_1_ENV_USER=app",
        "DB_1_ENV_EQ=a=b",
    ]


def test_link_env_without_ports():
    assert link_env("/a/b", "10.0.0.2", []) == ["B_NAME=/a/b"]
