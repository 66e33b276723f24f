"""Container links (seed ch. 6 §3.3.9): Docker's environment variables for a linked container.

``docker run --link db:db web`` gives ``web`` variables describing ``db``::

    DB_NAME=/web/db
    DB_PORT=tcp://172.17.0.2:5432                 the lowest port, tcp first
    DB_PORT_5432_TCP=tcp://172.17.0.2:5432        for every exposed port
    DB_PORT_5432_TCP_ADDR=172.17.0.2
    DB_PORT_5432_TCP_PORT=5432
    DB_PORT_5432_TCP_PROTO=tcp
    DB_PORT_8000_TCP_START=tcp://...:8000         a run of consecutive ports also
    DB_PORT_8000_TCP_PORT_START=8000              gets _START/_END (and _PORT_START,
    DB_PORT_8000_TCP_END=tcp://...:8002           _PORT_END) under its first port
    DB_PORT_8000_TCP_PORT_END=8002
    DB_ENV_POSTGRES_USER=app                      the child's own env, HOME and PATH left out

The alias is upper-cased with ``-`` turned into ``_``. The iptables side of
a link (ACCEPT rules when ``--icc=false``) is :meth:`BridgeDriver.link`.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.errors import InvalidParameter


def parse_link_ports(ports: Iterable[str]) -> list[tuple[int, int, str]]:
    """``["80/tcp", "8000-8002/udp", "53"]`` -> ``[(80, 80, "tcp"), (8000, 8002, "udp"), (53, 53, "tcp")]``."""
    out = []
    for text in ports:
        port, _, proto = str(text).strip().partition("/")
        proto = (proto or "tcp").lower()
        lo, sep, hi = port.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise InvalidParameter(f"invalid port {text!r} for a link")
        first, last = int(lo), int(hi) if sep else int(lo)
        if not 0 < first <= last < 65536:
            raise InvalidParameter(f"invalid port {text!r} for a link")
        out.append((first, last, proto))
    return out


def _sorted_ports(ports: Iterable[str]) -> list[tuple[int, str]]:
    """Single ports, tcp before other protocols, then by number (moby's withTCPPriority)."""
    singles = {(n, proto) for first, last, proto in parse_link_ports(ports) for n in range(first, last + 1)}
    return sorted(singles, key=lambda p: (p[1] != "tcp", p[1], p[0]))


def link_env(name: str, child_ip: str, ports: Iterable[str], child_env: Iterable[str] = ()) -> list[str]:
    """The environment a linked container gets for one link.

    :param name: the link's full name, ``/parent/alias``; the alias is its
        last element.
    :param child_ip: the linked (child) container's address.
    :param ports: the child's exposed ports, ``"80/tcp"``.
    :param child_env: the child's ``Config.Env`` (``KEY=value``).
    """
    alias = name.rstrip("/").rsplit("/", 1)[-1].upper().replace("-", "_")
    ordered = _sorted_ports(ports)
    env: list[str] = []
    if ordered:
        n, proto = ordered[0]
        env.append(f"{alias}_PORT={proto}://{child_ip}:{n}")
    run_start: tuple[int, str] | None = None
    run_end: tuple[int, str] | None = None

    def close_run() -> None:
        if run_start is not None and run_end is not None and run_start != run_end:
            prefix = f"{alias}_PORT_{run_start[0]}_{run_start[1].upper()}"
            env.append(f"{prefix}_START={run_start[1]}://{child_ip}:{run_start[0]}")
            env.append(f"{prefix}_PORT_START={run_start[0]}")
            env.append(f"{prefix}_END={run_end[1]}://{child_ip}:{run_end[0]}")
            env.append(f"{prefix}_PORT_END={run_end[0]}")

    for n, proto in ordered:
        prefix = f"{alias}_PORT_{n}_{proto.upper()}"
        env.append(f"{prefix}={proto}://{child_ip}:{n}")
        env.append(f"{prefix}_ADDR={child_ip}")
        env.append(f"{prefix}_PORT={n}")
        env.append(f"{prefix}_PROTO={proto}")
        if run_end is not None and proto == run_end[1] and n == run_end[0] + 1:
            run_end = (n, proto)
            continue
        close_run()
        run_start = run_end = (n, proto)
    close_run()
    env.append(f"{alias}_NAME={name}")
    for item in child_env:
        key, sep, value = str(item).partition("=")
        # Set by image builds for the child's own use; meaningless in the parent.
        if not sep or key in ("HOME", "PATH"):
            continue
        env.append(f"{alias}_ENV_{key}={value}")
    return env
