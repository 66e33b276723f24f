"""The network drivers' IPAM (engine.drivers.ipam): default pools, validation with moby's words, subnets, addresses."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

import pytest

from engine.drivers.ipam import (
    DEFAULT_POOLS,
    AddressesExhausted,
    AddressInUse,
    AddressPool,
    IPAMConfig,
    NoFreePool,
    PoolOverlap,
    PoolSpec,
    check_overlap,
    choose_subnet,
    parse_pools,
    pool_from_config,
    validate_ipam,
)
from engine.errors import Conflict, Forbidden, InvalidParameter


def test_default_pools_are_dockers():
    subnets = [str(n) for spec in DEFAULT_POOLS for n in spec.subnets()]
    assert subnets[:15] == [f"172.{n}.0.0/16" for n in range(17, 32)]
    assert subnets[15:] == [f"192.168.{n}.0/20" for n in range(0, 256, 16)]


def test_parse_pools_from_flags_and_json():
    assert parse_pools(["base=10.10.0.0/16,size=24"]) == (PoolSpec("10.10.0.0/16", 24),)
    assert parse_pools([{"base": "10.20.0.0/16", "size": 24}, {"Base": "fd00::/48", "Size": 64}]) == (
        PoolSpec("10.20.0.0/16", 24),
        PoolSpec("fd00::/48", 64),
    )
    assert parse_pools(None) == () and parse_pools([]) == ()
    with pytest.raises(InvalidParameter, match="must be a key=value pair"):
        parse_pools(["10.0.0.0/8"])
    with pytest.raises(InvalidParameter, match="unexpected key 'color'"):
        parse_pools(["base=10.0.0.0/8,color=red"])
    with pytest.raises(InvalidParameter, match="invalid size value"):
        parse_pools([{"base": "10.0.0.0/8", "size": "big"}])
    with pytest.raises(InvalidParameter, match="invalid pools size"):
        parse_pools([{"base": "10.0.0.0/16", "size": 8}])
    with pytest.raises(InvalidParameter, match="invalid base pool"):
        parse_pools([{"base": "nowhere", "size": 24}])


def test_validate_ipam_in_mobys_words():
    validate_ipam([IPAMConfig("172.28.0.0/16", "172.28.5.0/24", "172.28.5.254", {"a": "172.28.1.5"})])
    validate_ipam([IPAMConfig()])
    cases = {
        "10.0.0.0/33": "invalid subnet 10.0.0.0/33: invalid CIDR block notation",
        "10.0.0.1/16": "invalid subnet 10.0.0.1/16: it should be 10.0.0.0/16",
    }
    for subnet, message in cases.items():
        with pytest.raises(InvalidParameter, match=message):
            validate_ipam([IPAMConfig(subnet)])
    with pytest.raises(InvalidParameter) as info:
        validate_ipam([IPAMConfig("10.0.0.0/16", "10.1.0.0/24", "10.2.0.1", {"x": "bogus"})])
    text = str(info.value)
    assert text.startswith("invalid network config:\n")
    assert "invalid ip-range 10.1.0.0/24: parent subnet 10.0.0.0/16 doesn't contain ip-range" in text
    assert "invalid gateway 10.2.0.1: parent subnet 10.0.0.0/16 doesn't contain this address" in text
    assert "invalid auxiliary address x bogus: invalid address" in text
    with pytest.raises(InvalidParameter, match="parent subnet is an IPv6 block"):
        validate_ipam([IPAMConfig("fd00::/64", gateway="10.0.0.1")])
    with pytest.raises(InvalidParameter, match="CIDR block is bigger than its parent subnet"):
        validate_ipam([IPAMConfig("10.0.0.0/24", "10.0.0.0/16")])


def test_ipam_config_round_trip():
    doc = {"Subnet": "10.0.0.0/24", "Gateway": "10.0.0.254", "AuxiliaryAddresses": {"a": "10.0.0.3"}}
    cfg = IPAMConfig.from_api(doc)
    assert cfg.to_api() == doc and cfg.version == 4
    assert IPAMConfig.from_api({"Subnet": "fd00::/64"}).version == 6
    with pytest.raises(InvalidParameter):
        IPAMConfig.from_api({"Subnet": "10.0.0.0/24", "AuxiliaryAddresses": ["a"]})


def test_overlaps_and_choosing_subnets():
    taken = [IPv4Network("172.17.0.0/16"), IPv4Network("172.19.0.0/16")]
    with pytest.raises(PoolOverlap, match="Pool overlaps with other one on this address space") as info:
        check_overlap(IPv4Network("172.17.5.0/24"), taken)
    assert info.value.http_status == 403
    check_overlap(IPv4Network("172.18.0.0/24"), taken)
    check_overlap(IPv6Network("fd00::/64"), taken)
    assert choose_subnet(DEFAULT_POOLS, taken) == IPv4Network("172.18.0.0/16")
    # A host route counts as taken.
    assert choose_subnet(DEFAULT_POOLS, taken, [IPv4Network("172.18.1.0/24")]) == IPv4Network("172.20.0.0/16")
    pools = (PoolSpec("10.1.0.0/23", 24),)
    assert choose_subnet(pools, [IPv4Network("10.1.0.0/24")]) == IPv4Network("10.1.1.0/24")
    with pytest.raises(NoFreePool, match="could not find an available, non-overlapping IPv4 address pool") as info:
        choose_subnet(pools, [IPv4Network("10.1.0.0/23")])
    assert info.value.http_status == 503
    with pytest.raises(NoFreePool, match="IPv6"):
        choose_subnet(DEFAULT_POOLS, [], version=6)
    assert choose_subnet((PoolSpec("fd00::/48", 64),), [], version=6) == IPv6Network("fd00::/64")


def test_address_pool_lowest_free_with_range_gateway_and_aux():
    cfg = IPAMConfig("10.0.0.0/24", "10.0.0.0/29", "10.0.0.1", {"a": "10.0.0.2"})
    pool, gateway = pool_from_config(cfg)
    assert gateway == IPv4Address("10.0.0.1")
    used: set = set()
    for _ in range(5):
        used.add(pool.allocate(used))
    assert used == {IPv4Address(f"10.0.0.{n}") for n in range(3, 8)}
    with pytest.raises(AddressesExhausted) as info:
        pool.allocate(used)
    assert info.value.http_status == 503
    # Released addresses are handed out again at once (libnetwork's default, not serial).
    used.discard(IPv4Address("10.0.0.4"))
    assert pool.allocate(used) == IPv4Address("10.0.0.4")
    # Requests may be anywhere in the subnet, but not reserved or taken.
    assert pool.allocate(used, IPv4Address("10.0.0.200")) == IPv4Address("10.0.0.200")
    for bad in ("10.0.0.1", "10.0.0.2", "10.0.0.0", "10.0.0.255", "10.0.1.1"):
        with pytest.raises(InvalidParameter, match="Requested address is out of range"):
            pool.allocate(used, IPv4Address(bad))
    with pytest.raises(AddressInUse, match="Address already in use") as taken:
        pool.allocate(used, IPv4Address("10.0.0.3"))
    assert isinstance(taken.value, Conflict) and isinstance(taken.value, Forbidden)
    assert taken.value.http_status == 403


def test_address_pool_serial_and_ipv6():
    pool = AddressPool(IPv4Network("10.0.0.0/24"), IPv4Address("10.0.0.1"), serial=True)
    first = pool.allocate(set())
    assert pool.allocate(set()) == first + 1
    six, gateway = pool_from_config(IPAMConfig("fd00:1::/64"))
    assert gateway == IPv6Address("fd00:1::1")
    assert six.allocate(set()) == IPv6Address("fd00:1::2")
    # No broadcast address in IPv6; the pool is huge but a free address is found at once.
    in_use = {IPv6Address("fd00:1::") + n for n in range(2, 500)}
    assert six.allocate(in_use) == IPv6Address("fd00:1::") + 500
    with pytest.raises(InvalidParameter):
        six.allocate(set(), IPv4Address("10.0.0.5"))
    with pytest.raises(InvalidParameter, match="parent subnet"):
        AddressPool(IPv4Network("10.0.0.0/24"), ip_range=ip_network("10.0.1.0/25"))
