"""The kernel datapath and the simulator give identical results for the same inputs.

Hypothesis draws endpoints, ipcache prefixes, policy entries (denies, redirects with
listener priorities, port-range pieces, auth) and packets; every packet is evaluated by
both backends at both hooks, then its reply, then everything again after the next update,
so conntrack (new / established / reply) and policy re-checks are compared too.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from ebpf_support import require_ebpf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ciliumpy._datapath import (
    Action,
    CTState,
    Direction,
    DropReason,
    EndpointRecord,
    IPAddress,
    IPNetwork,
    MapStateKey,
    MatchType,
    Packet,
    PolicyEntry,
    Protocol,
    TCPFlags,
)
from ciliumpy.backends import DatapathUpdate
from ciliumpy.backends._ebpf import EBPFBackend
from ciliumpy.backends._simulator import SimulatorBackend

EP_IDS = (1, 2, 3, 4)
IDENTITIES = (2, 100, 200, 300, 1 << 24 | 5)
V4 = tuple(ipaddress.ip_address(a) for a in ("10.0.0.1", "10.0.0.2", "10.0.1.5", "10.1.0.9", "192.168.1.1", "8.8.8.8"))
V6 = tuple(ipaddress.ip_address(a) for a in ("fd00::1", "fd00::2", "fd00::1:5", "fd01::9", "2001:db8::1"))
PORTS = (0, 53, 80, 443, 1024, 8080, 65535)
PROTOCOLS = (0, Protocol.TCP, Protocol.UDP, Protocol.SCTP, Protocol.ICMP, Protocol.ICMPV6, 47)
ICMP_TYPES = (0, 3, 8, 128, 129)


# ---------------------------------------------------------------- strategies
@st.composite
def endpoint_records(draw: st.DrawFn, ep_id: int) -> EndpointRecord:
    ips = draw(st.lists(st.sampled_from(V4 + V6), min_size=1, max_size=3, unique=True))
    return EndpointRecord(endpoint_id=ep_id, identity=draw(st.sampled_from(IDENTITIES)), ips=tuple(ips))


@st.composite
def networks(draw: st.DrawFn) -> IPNetwork:
    addr = draw(st.sampled_from(V4 + V6))
    lengths = (0, 8, 16, 24, 31, 32) if addr.version == 4 else (0, 16, 64, 120, 128)
    return ipaddress.ip_network(f"{addr}/{draw(st.sampled_from(lengths))}", strict=False)


@st.composite
def map_keys(draw: st.DrawFn) -> MapStateKey:
    identity = draw(st.sampled_from((0, 0, *IDENTITIES)))
    direction = draw(st.sampled_from(Direction))
    protocol = draw(st.sampled_from((0, 0, *PROTOCOLS)))
    if protocol == 0:
        return MapStateKey(identity, direction)
    if protocol in (Protocol.ICMP, Protocol.ICMPV6):
        icmp = draw(st.sampled_from((None, *ICMP_TYPES)))
        if icmp is None:
            return MapStateKey(identity, direction, protocol)
        return MapStateKey(identity, direction, protocol, icmp, 16)
    prefix = draw(st.sampled_from((0, 0, 6, 12, 15, 16, 16)))
    port = draw(st.sampled_from(PORTS)) if prefix else 0
    mask = (0xFFFF << (16 - prefix)) & 0xFFFF
    return MapStateKey(identity, direction, protocol, port & mask, prefix)


@st.composite
def policy_entries(draw: st.DrawFn) -> PolicyEntry:
    if draw(st.integers(0, 3)) == 0:
        return PolicyEntry(deny=True)
    proxy = draw(st.sampled_from((0, 0, 15001, 15002)))
    return PolicyEntry(
        proxy_port=proxy,
        listener_priority=draw(st.sampled_from((0, 101, 121))) if proxy else 0,
        auth_type=draw(st.sampled_from((0, 0, 0, 1, 2))),
        explicit_auth=draw(st.booleans()),
    )


@attrs.define
class _Seen:
    """What the drawn updates mentioned, so packets can be aimed at it."""

    keys: list[MapStateKey] = attrs.Factory(list)
    ips: dict[int, list[IPAddress]] = attrs.Factory(dict)
    key_owner: dict[MapStateKey, int] = attrs.Factory(dict)
    by_identity: dict[int, list[IPAddress]] = attrs.Factory(dict)


@st.composite
def updates(draw: st.DrawFn, seen: _Seen) -> DatapathUpdate:
    ep_ids = st.sampled_from(EP_IDS)
    upsert_ids = draw(st.lists(ep_ids, min_size=1, max_size=3, unique=True))
    # Mostly policy for endpoints that exist, sometimes for ids without an endpoint.
    policy_ids = draw(st.lists(st.sampled_from(upsert_ids) | ep_ids, min_size=1, max_size=3, unique=True))
    policy_upsert = {}
    for ep in policy_ids:
        policy_upsert[ep] = draw(st.dictionaries(map_keys(), policy_entries(), min_size=1, max_size=8))
        seen.keys.extend(policy_upsert[ep])
        seen.key_owner.update(dict.fromkeys(policy_upsert[ep], ep))
    endpoints = {ep: draw(endpoint_records(ep)) for ep in upsert_ids}
    for rec in endpoints.values():
        seen.ips[rec.endpoint_id] = list(rec.ips)
    known_keys = seen.keys
    # Mostly keys that exist; absent keys must be ignored by both backends.
    deletable = st.sampled_from(known_keys) | map_keys() if known_keys else map_keys()
    return DatapathUpdate(
        endpoints_upsert=endpoints,
        endpoints_delete=frozenset(draw(st.lists(ep_ids, max_size=1))),
        ipcache_upsert=draw(st.dictionaries(networks(), st.sampled_from(IDENTITIES), max_size=6)),
        ipcache_delete=frozenset(draw(st.lists(networks(), max_size=2))),
        policy_upsert=policy_upsert,
        policy_delete={
            ep: frozenset(draw(st.lists(deletable, max_size=3)))
            for ep in draw(st.lists(ep_ids, max_size=2, unique=True))
        },
        policy_replace=frozenset(draw(st.lists(ep_ids, max_size=1))),
    )


@st.composite
def packets(draw: st.DrawFn, seen: _Seen) -> Packet:
    """Random packets, most to or from an endpoint, half aimed at a policy key's ports."""
    known_keys = seen.keys
    pool = draw(st.sampled_from((V4, V6)))
    src, dst = draw(st.sampled_from(pool)), draw(st.sampled_from(pool))
    aim = known_keys and draw(st.integers(0, 3)) > 0
    target = draw(st.sampled_from(known_keys)) if aim else None
    if target is not None and seen.ips.get(seen.key_owner[target]):
        local = seen.ips[seen.key_owner[target]]
    else:
        local = [ip for ips in seen.ips.values() for ip in ips]
    if local and draw(st.integers(0, 3)):
        # From or to an endpoint; for a target key, in its direction and from a peer the
        # ipcache maps to the key's identity when there is one.
        here = draw(st.sampled_from(local))
        pool = V4 if here.version == 4 else V6
        peers = [ip for ip in seen.by_identity.get(target.identity if target else -1, []) if ip.version == here.version]
        there = draw(st.sampled_from(peers)) if peers else draw(st.sampled_from(pool))
        egress = target.direction == Direction.EGRESS if target else draw(st.booleans())
        src, dst = (here, there) if egress else (there, here)
    if target is not None and target.protocol:
        protocol = target.protocol
        lo, hi = target.port_range
        port = draw(st.sampled_from((lo, hi)) | st.integers(lo, hi))
    else:
        protocol = draw(st.sampled_from(PROTOCOLS[1:]))
        port = draw(st.sampled_from(PORTS) | st.integers(0, 65535))
    length = draw(st.sampled_from((128, 200, 1500)))
    if protocol in (Protocol.ICMP, Protocol.ICMPV6):
        return Packet(
            src=src,
            dst=dst,
            protocol=protocol,
            sport=draw(st.sampled_from((0, 7, 4242))),
            icmp_type=port if target is not None and port < 256 else draw(st.sampled_from(ICMP_TYPES)),
            icmp_code=draw(st.sampled_from((0, 4))),
            length=length,
        )
    # A non-first fragment and a protocol without ports have no ports on the wire.
    fragment = draw(st.integers(0, 5)) == 0
    portless = fragment or protocol == 47
    return Packet(
        src=src,
        dst=dst,
        protocol=protocol,
        sport=0 if portless else draw(st.sampled_from((40000, 53, 80, 1025))),
        dport=0 if portless else port,
        tcp_flags=int(TCPFlags.SYN),
        length=length,
        fragment=fragment,
    )


# ---------------------------------------------------------------- harness
class _Harness:
    """One loaded EBPFBackend reused across examples (loading costs ~0.15 s)."""

    def __init__(self, backend: EBPFBackend) -> None:
        self.backend = backend
        self.nets: set[IPNetwork] = set()

    def fresh(self) -> SimulatorBackend:
        """Empty the eBPF backend through its public API and return a new simulator."""
        self.backend.apply(DatapathUpdate(endpoints_delete=frozenset(EP_IDS), ipcache_delete=frozenset(self.nets)))
        self.backend.reset_conntrack()
        self.backend.auth_pairs.clear()
        self.nets.clear()
        return SimulatorBackend()

    def apply(self, sim: SimulatorBackend, update: DatapathUpdate) -> None:
        self.nets.update(update.ipcache_upsert)
        sim.apply(update)
        self.backend.apply(update)


@pytest.fixture(scope="module")
def harness() -> Iterator[_Harness]:
    require_ebpf()
    with EBPFBackend(ct_max_entries=4096) as backend:
        yield _Harness(backend)


def _compare(h: _Harness, sim: SimulatorBackend, packet: Packet, log: list[Any]) -> None:
    for direction in (Direction.EGRESS, Direction.INGRESS):
        expected = sim.evaluate(packet, direction)
        got = h.backend.evaluate(packet, direction)
        log.append((packet, direction, expected))
        assert got == expected, f"{packet} at {direction.name}: ebpf {got} != simulator {expected}"


# Outcomes every differential run must have compared at least once: a run whose inputs
# never produce, say, a redirect would say nothing about redirects.
WANTED_OUTCOMES = (
    set(Action)
    | set(MatchType)
    | {CTState.NEW, CTState.ESTABLISHED, CTState.REPLY}
    | {
        DropReason.POLICY_DENIED,
        DropReason.POLICY_DENY,
        DropReason.AUTH_REQUIRED,
        DropReason.IP_FRAGMENTATION_NOT_SUPPORTED,
    }
)
# Derandomized so CI compares the same inputs every run; raise for a longer soak.
EXAMPLES = int(os.environ.get("CILIUMPY_DIFFERENTIAL_EXAMPLES", "200"))


def test_ebpf_matches_simulator(harness: _Harness) -> None:
    seen: set[object] = set()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        sim = harness.fresh()
        known = _Seen()
        auth = data.draw(
            st.sets(
                # (local identity, remote identity, auth type), Cilium's auth map key
                st.tuples(st.sampled_from(IDENTITIES), st.sampled_from(IDENTITIES), st.sampled_from((1, 2))),
                max_size=4,
            ),
            label="auth_pairs",
        )
        for pair in auth:
            sim.auth_pairs.add(pair)
            harness.backend.auth_pairs.add(pair)
        probes: list[Packet] = []
        log: list[Any] = []
        for _ in range(data.draw(st.integers(1, 3), label="rounds")):
            harness.apply(sim, data.draw(updates(known), label="update"))
            probes.extend(data.draw(st.lists(packets(known), min_size=1, max_size=5), label="packets"))
            # Each probe again after every update: established flows are re-checked.
            for packet in probes:
                _compare(harness, sim, packet, log)
                _compare(harness, sim, packet.reply(), log)
        for ep in EP_IDS:
            assert dict(harness.backend.policy_counters(ep)) == dict(sim.policy_counters(ep))
        for _, _, result in log:
            seen.update({result.action, result.match_type, result.ct_state, result.drop_reason})

    run()
    assert seen >= WANTED_OUTCOMES, f"never compared: {WANTED_OUTCOMES - seen}"


def test_established_reply_and_recheck_after_policy_change(harness: _Harness) -> None:
    sim = harness.fresh()
    server = EndpointRecord(endpoint_id=1, identity=100, ips=(V4[0],))
    client = EndpointRecord(endpoint_id=2, identity=200, ips=(V4[1],))
    allow_in = MapStateKey(200, Direction.INGRESS, Protocol.TCP, 80, 16)
    allow_out = MapStateKey(100, Direction.EGRESS, Protocol.TCP, 80, 16)
    harness.apply(
        sim,
        DatapathUpdate(
            endpoints_upsert={1: server, 2: client},
            ipcache_upsert={
                ipaddress.ip_network("10.0.0.1/32"): 100,
                ipaddress.ip_network("10.0.0.2/32"): 200,
            },
            policy_upsert={1: {allow_in: PolicyEntry()}, 2: {allow_out: PolicyEntry()}},
        ),
    )
    syn = Packet(src=V4[1], dst=V4[0], sport=40000, dport=80)
    steps = [
        (syn, Direction.EGRESS, Action.ALLOW, CTState.NEW),
        (syn, Direction.INGRESS, Action.ALLOW, CTState.NEW),
        (syn.reply(), Direction.EGRESS, Action.ALLOW, CTState.REPLY),
        (syn.reply(), Direction.INGRESS, Action.ALLOW, CTState.REPLY),
        (syn, Direction.INGRESS, Action.ALLOW, CTState.ESTABLISHED),
    ]
    for packet, direction, action, ct_state in steps:
        got = harness.backend.evaluate(packet, direction)
        assert got == sim.evaluate(packet, direction)
        assert (got.action, got.ct_state) == (action, ct_state)
    # Removing the allow cuts the established flow on re-check; replies still pass.
    harness.apply(sim, DatapathUpdate(policy_delete={1: frozenset({allow_in})}))
    got = harness.backend.evaluate(syn, Direction.INGRESS)
    assert got == sim.evaluate(syn, Direction.INGRESS)
    assert (got.action, got.drop_reason, got.ct_state) == (
        Action.DROP,
        DropReason.POLICY_DENIED,
        CTState.ESTABLISHED,
    )
    reply = harness.backend.evaluate(syn.reply(), Direction.INGRESS)
    assert reply == sim.evaluate(syn.reply(), Direction.INGRESS)
    assert reply.ct_state == CTState.REPLY
    # reset_conntrack forgets the flow in the kernel too.
    harness.backend.reset_conntrack()
    sim.reset_conntrack()
    got = harness.backend.evaluate(syn.reply(), Direction.INGRESS)
    assert got == sim.evaluate(syn.reply(), Direction.INGRESS)
    assert got.ct_state == CTState.NEW


def test_counters_follow_the_chosen_entry(harness: _Harness) -> None:
    sim = harness.fresh()
    ep = EndpointRecord(endpoint_id=3, identity=300, ips=(V6[0],))
    l4 = MapStateKey(0, Direction.INGRESS, Protocol.UDP, 0, 6)  # ports 0-1023
    harness.apply(sim, DatapathUpdate(endpoints_upsert={3: ep}, policy_upsert={3: {l4: PolicyEntry()}}))
    for dport, length in ((53, 200), (80, 300), (2000, 400)):
        packet = Packet(src=V6[3], dst=V6[0], protocol=Protocol.UDP, dport=dport, length=length)
        assert harness.backend.evaluate(packet, Direction.INGRESS) == sim.evaluate(packet, Direction.INGRESS)
    assert harness.backend.policy_counters(3) == {l4: (2, 500)} == sim.policy_counters(3)
    # Deleting the endpoint drops its counters in both backends.
    harness.apply(sim, DatapathUpdate(endpoints_delete=frozenset({3})))
    assert harness.backend.policy_counters(3) == {} == sim.policy_counters(3)


def test_packet_helpers_are_consistent() -> None:
    # Guard for the strategies above: a reply of a reply is the original packet.
    packet = Packet(src=V4[0], dst=V4[1], sport=1, dport=2)
    assert attrs.evolve(packet.reply().reply(), tcp_flags=packet.tcp_flags) == packet
