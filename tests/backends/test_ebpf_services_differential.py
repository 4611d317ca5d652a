"""Service load balancing: the kernel's tc load balancer and the simulator's agree.

Hypothesis draws endpoints, ipcache prefixes and policy (allow, deny, redirect and auth
entries) plus service frontends (IPv4 and IPv6, TCP/UDP/SCTP, with and without
session affinity, some without backends, backends that are endpoints or not); packets are
mostly sent from endpoints to frontends. Each packet is evaluated at the client's egress hook
(DNAT, then policy on the backend), the translated packet at the backend's ingress hook, and
the backend's reply at both hooks (reverse NAT at the client); all results must be equal,
translation included. The examples are split into seeded shares so CI covers many of them in
parallel-friendly pieces, each deterministic.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator

import attrs
import pytest
from ebpf_support import require_ebpf
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from test_ebpf_differential import EP_IDS, IDENTITIES, V4, V6, _Seen

from ciliumpy._datapath import (
    Action,
    CTState,
    DatapathResult,
    Direction,
    DropReason,
    EndpointRecord,
    IPAddress,
    IPNetwork,
    LBBackend,
    LBService,
    MapStateKey,
    Packet,
    PolicyEntry,
    Protocol,
    TCPFlags,
    lb_slot,
)
from ciliumpy.backends import DatapathUpdate
from ciliumpy.backends._ebpf import EBPFBackend
from ciliumpy.backends._simulator import SimulatorBackend

FRONT_V4 = tuple(ipaddress.ip_address(f"10.96.0.{i}") for i in (1, 2, 3))
FRONT_V6 = tuple(ipaddress.ip_address(f"fd00:96::{i}") for i in (1, 2))
SVC_PORTS = (53, 80, 443, 8080)
SVC_PROTOCOLS = (Protocol.TCP, Protocol.UDP, Protocol.SCTP)
SERVICE_IDS = (1, 2, 3, 4, 5)
SHARES = 4
# Derandomized per share (a fixed seed each); 4 x 500 = 2,000 examples compared in CI.
EXAMPLES_PER_SHARE = int(os.environ.get("CILIUMPY_SERVICE_DIFFERENTIAL_EXAMPLES", "500"))
_RUN: dict[str, int] = {"examples": 0, "translated": 0, "rev_nat": 0, "no_service": 0, "affinity": 0}


# Prebuilt pools: one draw picks a whole key, entry or prefix (drawing them field by field
# made the generation, not the kernel, the cost of this test).
KEY_POOL = tuple(
    MapStateKey(identity, direction, proto, port, plen)
    for identity in (0, *IDENTITIES)
    for direction in Direction
    for proto, port, plen in (
        (0, 0, 0),
        (Protocol.TCP, 0, 0),
        (Protocol.TCP, 8080, 16),
        (Protocol.TCP, 80, 16),
        (Protocol.UDP, 53, 16),
        (Protocol.UDP, 0, 6),
        (Protocol.SCTP, 9000, 16),
    )
)
ENTRY_POOL = (
    PolicyEntry(),
    PolicyEntry(),
    PolicyEntry(deny=True),
    PolicyEntry(proxy_port=15001, listener_priority=101),
    PolicyEntry(auth_type=1),
)
NET_POOL = tuple(
    ipaddress.ip_network(f"{a}/{n}", strict=False)
    for a, n in ((V4[0], 32), (V4[2], 24), (V4[3], 8), (V4[5], 32), (V6[0], 128), (V6[2], 64), (V6[4], 16))
)


@st.composite
def worlds(draw: st.DrawFn, seen: _Seen) -> DatapathUpdate:
    """Endpoints, prefixes and policy for one example (``seen`` learns the addresses)."""
    endpoints = {}
    for ep in draw(st.lists(st.sampled_from(EP_IDS), min_size=1, max_size=3, unique=True)):
        ips = draw(st.lists(st.sampled_from(V4 + V6), min_size=1, max_size=2, unique=True))
        endpoints[ep] = EndpointRecord(ep, draw(st.sampled_from(IDENTITIES)), tuple(ips))
        seen.ips[ep] = list(ips)
    policy = {
        ep: draw(st.dictionaries(st.sampled_from(KEY_POOL), st.sampled_from(ENTRY_POOL), max_size=5))
        for ep in endpoints
    }
    return DatapathUpdate(
        endpoints_upsert=endpoints,
        ipcache_upsert=draw(st.dictionaries(st.sampled_from(NET_POOL), st.sampled_from(IDENTITIES), max_size=4)),
        policy_upsert=policy,
    )


@st.composite
def services(draw: st.DrawFn, seen: _Seen) -> dict[int, LBService]:
    """Frontends with backends drawn from endpoint addresses and a few others."""
    out: dict[int, LBService] = {}
    backend_ids = iter(range(1, 1000))
    for svc_id in draw(st.lists(st.sampled_from(SERVICE_IDS), min_size=1, max_size=4, unique=True)):
        address = draw(st.sampled_from(FRONT_V4 + FRONT_V6))
        pool = [ip for ips in seen.ips.values() for ip in ips if ip.version == address.version]
        others = V4 if address.version == 4 else V6
        addrs = draw(
            st.lists(st.sampled_from(pool) | st.sampled_from(others) if pool else st.sampled_from(others), max_size=4)
        )
        backends = tuple(
            LBBackend(next(backend_ids), addr, draw(st.sampled_from((80, 8080, 9000, 53)))) for addr in addrs
        )
        out[svc_id] = LBService(
            service_id=svc_id,
            address=address,
            port=draw(st.sampled_from(SVC_PORTS)),
            protocol=draw(st.sampled_from(SVC_PROTOCOLS)),
            backends=backends,
            affinity=draw(st.integers(0, 3)) == 0,
        )
    # Frontends are unique by address, port and protocol, as the agent keeps them.
    unique: dict[tuple[IPAddress, int, int], LBService] = {}
    for svc in out.values():
        unique.setdefault((svc.address, svc.port, svc.protocol), svc)
    return {s.service_id: s for s in unique.values()}


@st.composite
def service_packets(draw: st.DrawFn, seen: _Seen, frontends: dict[int, LBService]) -> Packet:
    """A packet from an endpoint to a frontend (mostly its own port and protocol)."""
    svc = draw(st.sampled_from(sorted(frontends.values(), key=lambda s: s.service_id)))
    clients = [ip for ips in seen.ips.values() for ip in ips if ip.version == svc.address.version]
    others = V4 if svc.address.version == 4 else V6
    src = draw(st.sampled_from(clients) if clients else st.sampled_from(others))
    exact = draw(st.integers(0, 4)) > 0
    protocol = svc.protocol if exact else draw(st.sampled_from(SVC_PROTOCOLS))
    dport = svc.port if exact else draw(st.sampled_from(SVC_PORTS))
    fragment = draw(st.integers(0, 9)) == 0
    return Packet(
        src=src,
        dst=svc.address,
        protocol=protocol,
        sport=0 if fragment else draw(st.sampled_from((40000, 40001, 40002, 53, 1025)) | st.integers(1024, 65535)),
        dport=0 if fragment else dport,
        tcp_flags=int(TCPFlags.SYN),
        length=draw(st.sampled_from((128, 200))),
        fragment=fragment,
    )


class _Harness:
    """One loaded backend and one simulator, kept in step across examples.

    Each example replaces the whole state with one update (every endpoint, prefix and
    frontend of the previous example deleted or replaced, every policy table replaced), so
    the kernel waits for one map-in-map RCU grace period per example instead of three.
    """

    def __init__(self, backend: EBPFBackend) -> None:
        self.backend = backend
        self.sim = SimulatorBackend()
        self.nets: set[IPNetwork] = set()
        self.services: set[int] = set()

    def replace(self, update: DatapathUpdate, frontends: dict[int, LBService]) -> None:
        whole = DatapathUpdate(
            endpoints_upsert=update.endpoints_upsert,
            endpoints_delete=frozenset(EP_IDS) - set(update.endpoints_upsert),
            ipcache_upsert=update.ipcache_upsert,
            ipcache_delete=frozenset(self.nets - set(update.ipcache_upsert)),
            policy_upsert=update.policy_upsert,
            policy_replace=frozenset(EP_IDS),
            services_upsert=frontends,
            services_delete=frozenset(self.services - set(frontends)),
        )
        self.nets = set(update.ipcache_upsert)
        self.services = set(frontends)
        self.sim.apply(whole)
        self.backend.apply(whole)
        self.sim.reset_conntrack()
        self.backend.reset_conntrack()

    def change_services(self, frontends: dict[int, LBService]) -> None:
        update = DatapathUpdate(services_upsert=frontends, services_delete=frozenset(self.services - set(frontends)))
        self.services = set(frontends)
        self.sim.apply(update)
        self.backend.apply(update)


@pytest.fixture(scope="module")
def harness() -> Iterator[_Harness]:
    require_ebpf()
    with EBPFBackend(ct_max_entries=8192) as backend:
        yield _Harness(backend)


def _same(h: _Harness, packet: Packet, direction: Direction) -> DatapathResult:
    expected = h.sim.evaluate(packet, direction)
    got = h.backend.evaluate(packet, direction)
    assert got == expected, f"{packet} at {direction.name}: ebpf {got} != simulator {expected}"
    return got


def _exchange(h: _Harness, packet: Packet) -> None:
    """Client egress, backend ingress of the translated packet, the reply at both hooks."""
    out = _same(h, packet, Direction.EGRESS)
    if out.drop_reason == DropReason.NO_SERVICE:
        _RUN["no_service"] += 1
    if out.nat_address is None:
        _same(h, packet, Direction.INGRESS)
        return
    _RUN["translated"] += 1
    sent = attrs.evolve(packet, dst=out.nat_address, dport=out.nat_port)
    if out.action != Action.DROP:
        _same(h, sent, Direction.INGRESS)
    reply = sent.reply()
    _same(h, reply, Direction.EGRESS)
    back = _same(h, reply, Direction.INGRESS)
    if back.nat_address is not None:
        _RUN["rev_nat"] += 1
        assert back.ct_state == CTState.REPLY
        assert (back.nat_address, back.nat_port) == (packet.dst, packet.dport)


@pytest.mark.parametrize("share", range(SHARES))
def test_tc_load_balancer_matches_simulator(harness: _Harness, share: int) -> None:
    @seed(0x5E7 + share)
    @settings(
        max_examples=EXAMPLES_PER_SHARE,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        _RUN["examples"] += 1
        known = _Seen()
        update = data.draw(worlds(known), label="world")
        frontends = data.draw(services(known), label="services")
        _RUN["affinity"] += any(s.affinity and len(s.backends) > 1 for s in frontends.values())
        harness.replace(update, frontends)
        probes = data.draw(st.lists(service_packets(known, frontends), min_size=1, max_size=4), label="packets")
        for packet in probes:
            _exchange(harness, packet)
        if data.draw(st.booleans(), label="change services"):
            # Backends change under open connections: replies still find their frontend.
            harness.change_services(data.draw(services(known), label="services again"))
            for packet in probes:
                _exchange(harness, packet)

    run()


def test_every_share_ran_and_covered_translation(harness: _Harness) -> None:
    # Runs after the shares (file order): the total and what they exercised.
    if _RUN["examples"] == 0:
        pytest.skip("run together with test_tc_load_balancer_matches_simulator")
    assert _RUN["examples"] >= SHARES * EXAMPLES_PER_SHARE
    for what in ("translated", "rev_nat", "no_service", "affinity"):
        assert _RUN[what] > 0, f"no example exercised {what}"


def test_slot_choice_is_the_shared_hash(harness: _Harness) -> None:
    client = V4[0]
    backends = tuple(LBBackend(i, f"10.0.9.{i}", 8080) for i in range(1, 6))
    svc = LBService(1, "10.96.0.1", 80, Protocol.TCP, backends)
    sticky = LBService(2, "10.96.0.2", 80, Protocol.TCP, backends, affinity=True)
    harness.replace(
        DatapathUpdate(
            endpoints_upsert={1: EndpointRecord(1, IDENTITIES[1], (client,))},
            policy_upsert={1: {MapStateKey(0, Direction.EGRESS): PolicyEntry()}},
        ),
        {1: svc, 2: sticky},
    )
    for sport in range(40000, 40020):
        got = _same(harness, Packet(client, svc.address, Protocol.TCP, sport=sport, dport=80), Direction.EGRESS)
        want = backends[lb_slot(client, sport, 5) - 1]
        assert (got.nat_address, got.nat_port) == (want.address, 8080)
        stuck = _same(harness, Packet(client, sticky.address, Protocol.TCP, sport=sport, dport=80), Direction.EGRESS)
        assert stuck.nat_address == backends[lb_slot(client, None, 5) - 1].address
    # An empty frontend drops with DROP_NO_SERVICE; ICMP to a frontend is not translated.
    harness.change_services({1: attrs.evolve(svc, backends=()), 2: sticky})
    dropped = _same(harness, Packet(client, svc.address, Protocol.TCP, sport=1, dport=80), Direction.EGRESS)
    assert dropped.drop_reason == DropReason.NO_SERVICE and dropped.service_id == 1
    ping = Packet(client, svc.address, Protocol.ICMP, sport=7, icmp_type=8)
    assert _same(harness, ping, Direction.EGRESS).nat_address is None
