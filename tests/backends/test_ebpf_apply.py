"""apply() is atomic: a full map (or any error) leaves every map as it was."""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Iterator

import pytest
from ebpf_support import require_ebpf

from ciliumpy._datapath import (
    DatapathResult,
    Direction,
    EndpointRecord,
    MapStateKey,
    Packet,
    PolicyEntry,
    Protocol,
)
from ciliumpy.backends import DatapathUpdate
from ciliumpy.backends._ebpf import EBPFBackend
from ciliumpy.backends._simulator import SimulatorBackend
from ciliumpy.exceptions import MapFullError

ING, EGR = Direction.INGRESS, Direction.EGRESS
net = ipaddress.ip_network
addr = ipaddress.ip_address

BASELINE = DatapathUpdate(
    endpoints_upsert={
        1: EndpointRecord(endpoint_id=1, identity=101, ips=(addr("10.0.0.1"),)),
        2: EndpointRecord(endpoint_id=2, identity=102, ips=(addr("10.0.0.2"), addr("fd00::2"))),
    },
    ipcache_upsert={net("10.1.0.0/16"): 300, net("10.1.2.0/24"): 301, net("fd01::/64"): 302},
    policy_upsert={
        1: {
            MapStateKey(300, ING, Protocol.TCP, 80, 16): PolicyEntry(),
            MapStateKey(0, EGR): PolicyEntry(),
        },
        2: {MapStateKey(302, ING): PolicyEntry(deny=True)},
    },
)

PROBES = [
    Packet(src="10.1.9.9", dst="10.0.0.1", dport=80),  # 300 -> ep1 tcp/80: allowed
    Packet(src="10.1.2.3", dst="10.0.0.1", dport=80),  # 301 -> ep1: no entry
    Packet(src="10.0.0.1", dst="10.1.2.3", dport=443),  # ep1 egress: allow-all
    Packet(src="fd01::5", dst="fd00::2", dport=22),  # 302 -> ep2: deny
    Packet(src="10.1.9.9", dst="10.0.0.2", dport=22),  # 300 -> ep2: no entry
    Packet(src="10.1.9.9", dst="10.0.0.3", dport=80),  # not an endpoint (yet)
    Packet(src="10.9.9.9", dst="10.0.0.1", dport=80),  # world -> ep1
]


def results(backend: EBPFBackend | SimulatorBackend) -> list[DatapathResult]:
    backend.reset_conntrack()
    return [backend.evaluate(p, d) for p in PROBES for d in (ING, EGR)]


@pytest.fixture
def small() -> Iterator[tuple[EBPFBackend, SimulatorBackend]]:
    """Backend with room for 4 prefixes, 4 entries per endpoint, 4 local addresses."""
    require_ebpf()
    with EBPFBackend(ipcache_max_entries=4, policy_map_max_entries=4, endpoints_max_entries=4) as backend:
        sim = SimulatorBackend()
        backend.apply(BASELINE)
        sim.apply(BASELINE)
        assert results(backend) == results(sim)
        yield backend, sim


FAILING = {
    # ipcache full (4 + 2 > 4) after a policy swap and before the endpoint writes
    "ipcache": DatapathUpdate(
        ipcache_upsert={net("10.2.0.0/16"): 400, net("10.3.0.0/16"): 401},
        policy_upsert={1: {MapStateKey(301, ING): PolicyEntry()}},
        endpoints_upsert={3: EndpointRecord(endpoint_id=3, identity=103, ips=(addr("10.0.0.3"),))},
    ),
    # endpoint 2's trie full (1 + 4 > 4) while building it: nothing was written yet
    "policy": DatapathUpdate(
        ipcache_delete=frozenset({net("10.1.2.0/24")}),
        policy_upsert={
            1: {MapStateKey(0, ING): PolicyEntry()},
            2: {MapStateKey(0, ING, Protocol.UDP, p, 16): PolicyEntry() for p in range(1, 5)},
        },
    ),
    # local-address map full (3 - 1 + 3 > 4) after policy swaps and ipcache writes
    "endpoints": DatapathUpdate(
        endpoints_upsert={
            3: EndpointRecord(
                endpoint_id=3,
                identity=103,
                ips=(addr("10.0.0.3"), addr("fd00::3"), addr("10.0.0.33")),
            )
        },
        endpoints_delete=frozenset({1}),
        ipcache_upsert={net("10.1.2.0/24"): 999},
        policy_upsert={2: {MapStateKey(300, ING): PolicyEntry()}, 3: {MapStateKey(0, ING): PolicyEntry()}},
    ),
}


@pytest.mark.parametrize("which", sorted(FAILING))
def test_map_full_raises_and_keeps_previous_state(small: tuple[EBPFBackend, SimulatorBackend], which: str) -> None:
    backend, sim = small
    before = results(backend)
    with pytest.raises(MapFullError) as info:
        backend.apply(FAILING[which])
    assert info.value.errno in (errno.E2BIG, errno.ENOSPC)
    assert info.value.function.startswith("bpf_map_")
    assert results(backend) == before == results(sim)
    # The backend is still usable and in sync afterwards.
    recovery = DatapathUpdate(
        ipcache_delete=frozenset({net("10.1.2.0/24")}),
        policy_upsert={1: {MapStateKey(2, ING, Protocol.TCP, 80, 16): PolicyEntry()}},
    )
    backend.apply(recovery)
    sim.apply(recovery)
    assert results(backend) == results(sim)
    assert results(backend) != before


def test_invalid_update_changes_nothing(small: tuple[EBPFBackend, SimulatorBackend]) -> None:
    backend, sim = small
    before = results(backend)
    bad_id = DatapathUpdate(
        ipcache_upsert={net("10.1.2.0/24"): 999},
        endpoints_upsert={70000: EndpointRecord(endpoint_id=70000, identity=1, ips=())},
    )
    with pytest.raises(ValueError, match="endpoint id"):
        backend.apply(bad_id)
    bad_key = DatapathUpdate(
        ipcache_upsert={net("10.1.2.0/24"): 999},
        policy_upsert={1: {(300, 0, 6, 80): PolicyEntry()}},  # type: ignore[dict-item]
    )
    with pytest.raises(TypeError, match="MapStateKey"):
        backend.apply(bad_key)
    assert results(backend) == before == results(sim)


def test_replace_delete_and_endpoint_removal_follow_the_simulator(
    small: tuple[EBPFBackend, SimulatorBackend],
) -> None:
    backend, sim = small
    steps = [
        DatapathUpdate(policy_replace=frozenset({1})),  # ep1 keeps a table, but empty
        DatapathUpdate(policy_delete={2: frozenset({MapStateKey(302, ING)})}),
        DatapathUpdate(
            # the new owner of 10.0.0.1; the old record's addresses go away first
            endpoints_upsert={2: EndpointRecord(endpoint_id=2, identity=202, ips=(addr("10.0.0.1"),))},
        ),
        DatapathUpdate(endpoints_delete=frozenset({2}), policy_replace=frozenset({2})),
    ]
    for update in steps:
        backend.apply(update)
        sim.apply(update)
        assert results(backend) == results(sim)


def test_an_address_taken_over_in_the_same_update_stays_with_its_new_owner(
    small: tuple[EBPFBackend, SimulatorBackend],
) -> None:
    backend, sim = small
    # ep2 takes 10.0.0.1 from ep1, and ep1 (upserted after it) moves to 10.0.0.9: removing
    # ep1's old addresses must not take 10.0.0.1 away from ep2.
    update = DatapathUpdate(
        endpoints_upsert={
            2: EndpointRecord(endpoint_id=2, identity=102, ips=(addr("10.0.0.1"), addr("fd00::2"))),
            1: EndpointRecord(endpoint_id=1, identity=101, ips=(addr("10.0.0.9"),)),
        }
    )
    backend.apply(update)
    sim.apply(update)
    probe = Packet(src="10.1.9.9", dst="10.0.0.1", dport=22)
    for dp in (backend, sim):
        dp.reset_conntrack()
        assert dp.evaluate(probe, ING).endpoint_id == 2
        assert dp.evaluate(Packet(src="10.1.9.9", dst="10.0.0.9", dport=80), ING).endpoint_id == 1
    assert results(backend) == results(sim)


def test_batch_delete_of_plain_integer_keys_finishes_one_by_one(small: tuple[EBPFBackend, SimulatorBackend]) -> None:
    # An absent key stops the kernel's batch at once; the per-key fallback must take the
    # address of a c_uint32 element (indexing such an array yields an int, which has none).
    import ctypes

    from ciliumpy.backends import _libbpf as L

    backend, _ = small
    outer = backend.map_fd("cil_policy")
    L.map_delete_batch(outer, (ctypes.c_uint32 * 3)(7, 1, 2))
    assert not L.map_lookup(outer, ctypes.c_uint32(1), ctypes.c_uint32())
    assert not L.map_lookup(outer, ctypes.c_uint32(2), ctypes.c_uint32())
