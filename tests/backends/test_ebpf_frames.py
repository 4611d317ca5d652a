"""Hand-built frames through BPF_PROG_TEST_RUN: parsing, fail-closed drops, events.

The frames here are assembled byte by byte in this file (not with the backend's own
``build_frame``), so the parser is checked against an independent encoder.  Every test runs
twice: on the packaged object, which reads headers with direct packet access and re-parses
with ``bpf_skb_load_bytes`` only when that runs out of linear bytes (truncated frames, IPv6
extension headers), and on a build that parses everything with the helper pass, which live
skbs with paged data need (``BPF_PROG_TEST_RUN`` only makes linear skbs, so paged data cannot
reach it otherwise).
"""

from __future__ import annotations

import ctypes
import ipaddress
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ebpf_support import require_ebpf

from ciliumpy._datapath import (
    Action,
    Direction,
    DropReason,
    EndpointRecord,
    MapStateKey,
    MatchType,
    Packet,
    PolicyEntry,
    Protocol,
)
from ciliumpy.backends import DatapathUpdate
from ciliumpy.backends import _libbpf as L
from ciliumpy.backends._bpfstructs import EventMode
from ciliumpy.backends._ebpf import OBJECT_PATH, DatapathEvent, EBPFBackend, build_frame

ROOT = Path(__file__).resolve().parents[2]

SHOT, OK = 2, 0
EP4, EP6 = ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("fd00::1")
PEER4, PEER6 = ipaddress.ip_address("10.0.1.7"), ipaddress.ip_address("fd01::7")
ING = Direction.INGRESS


# ---------------------------------------------------------------- an independent encoder
def eth(ethertype: int) -> bytes:
    return b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + struct.pack("!H", ethertype)


def ipv4(proto: int, payload: bytes, *, frag: int = 0, options: bytes = b"") -> bytes:
    ihl = 5 + len(options) // 4
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        ihl * 4 + len(payload),
        1,
        frag,
        64,
        proto,
        0,
        PEER4.packed,
        EP4.packed,
    )
    return eth(0x0800) + header + options + payload


def ipv6(nexthdr: int, payload: bytes) -> bytes:
    header = struct.pack("!IHBB16s16s", 0x60000000, len(payload), nexthdr, 64, PEER6.packed, EP6.packed)
    return eth(0x86DD) + header + payload


def opt_ext(nexthdr: int, units: int = 0) -> bytes:
    """Hop-by-hop / routing / destination options header of (units + 1) * 8 bytes."""
    return struct.pack("!BB", nexthdr, units) + bytes(6 + 8 * units)


def frag_ext(nexthdr: int, offset_units: int, more: bool) -> bytes:
    return struct.pack("!BBHI", nexthdr, 0, offset_units << 3 | int(more), 0xABCD)


def tcp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 1024, 0, 0)


def udp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8, 0)


def sctp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHII", sport, dport, 7, 0)


def icmp(kind: int, code: int = 0, ident: int = 0) -> bytes:
    return struct.pack("!BBHHH", kind, code, 0, ident, 1)


# ---------------------------------------------------------------- fixture
KEYS = {
    "tcp80": MapStateKey(300, ING, Protocol.TCP, 80, 16),
    "udp53": MapStateKey(300, ING, Protocol.UDP, 53, 16),
    "sctp": MapStateKey(300, ING, Protocol.SCTP, 9000, 16),
    "echo": MapStateKey(300, ING, Protocol.ICMP, 8, 16),
    "tcp443_v6": MapStateKey(301, ING, Protocol.TCP, 443, 16),
    "echo6": MapStateKey(301, ING, Protocol.ICMPV6, 128, 16),
    "gre": MapStateKey(0, ING, 47),
}


@pytest.fixture(scope="module")
def helper_parse_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The datapath built with CIL_PARSE_WITH_HELPERS: every header via bpf_skb_load_bytes."""
    out = tmp_path_factory.mktemp("bpf") / "ciliumpy-helper-parse.bpf.o"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bpf" / "build.py"), "--output", str(out), "--define", "CIL_PARSE_WITH_HELPERS"],
        capture_output=True,
        text=True,
        check=False,
    )
    if "clang not found" in result.stderr:
        require_ebpf("clang is not installed: the helper-parse build cannot be made")
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_bytes() != OBJECT_PATH.read_bytes(), "the macro did not change the build"
    return out


@pytest.fixture(params=["direct-access", "helper-parse"])
def dp(request: pytest.FixtureRequest, ebpf_available: None) -> Iterator[EBPFBackend]:
    """Endpoint 7 with the KEYS entries, on the packaged object and on the helper-parse build."""
    path = request.getfixturevalue("helper_parse_object") if request.param == "helper-parse" else None
    with EBPFBackend(object_path=path, ct_max_entries=4096) as backend:
        backend.apply(
            DatapathUpdate(
                endpoints_upsert={7: EndpointRecord(endpoint_id=7, identity=1007, ips=(EP4, EP6))},
                ipcache_upsert={
                    ipaddress.ip_network("10.0.1.0/24"): 300,
                    ipaddress.ip_network("fd01::/64"): 301,
                },
                policy_upsert={7: dict.fromkeys(KEYS.values(), PolicyEntry())},
            )
        )
        yield backend


def run(dp: EBPFBackend, frame: bytes, direction: Direction = ING) -> tuple[int, DatapathEvent | None]:
    retval, events = dp.test_run(frame, direction)
    assert len(events) <= 1
    return retval, events[0] if events else None


# ---------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("frame", "key", "sport", "dport"),
    [
        (ipv4(6, tcp(40000, 80)), "tcp80", 40000, 80),
        (ipv4(17, udp(5353, 53)), "udp53", 5353, 53),
        (ipv4(132, sctp(7, 9000)), "sctp", 7, 9000),
        (ipv4(1, icmp(8, ident=0x1234)), "echo", 0x1234, 8),
        (ipv6(6, tcp(40000, 443)), "tcp443_v6", 40000, 443),
        (ipv6(58, icmp(128, ident=99)), "echo6", 99, 128),
    ],
    ids=["tcp", "udp", "sctp", "icmp-echo", "tcp6", "icmpv6-echo"],
)
def test_l4_ports_and_icmp_type_drive_the_lookup(
    dp: EBPFBackend, frame: bytes, key: str, sport: int, dport: int
) -> None:
    retval, ev = run(dp, frame)
    assert retval == OK
    assert ev is not None
    assert (ev.action, ev.key, ev.sport, ev.dport) == (Action.ALLOW, KEYS[key], sport, dport)
    assert ev.endpoint_id == 7 and ev.local_identity == 1007 and ev.enforced
    assert ev.length == len(frame)


def test_protocols_conntrack_does_not_know_are_dropped_unless_extended(dp: EBPFBackend) -> None:
    gre = ipv4(47, bytes(8))
    icmp_in_ipv6 = ipv6(1, icmp(8, ident=5))  # ICMPv4's number inside IPv6: not ICMP there
    for frame in (gre, icmp_in_ipv6):
        retval, ev = run(dp, frame)
        assert retval == SHOT and ev is not None
        assert (ev.action, ev.drop_reason, ev.key) == (Action.DROP, DropReason.CT_UNKNOWN_L4_PROTOCOL, None)
        assert ev.enforced and ev.endpoint_id == 7
    dp.extended_ip_protocols = True
    assert dp.extended_ip_protocols and dp.event_mode == EventMode.ALL
    # Judged by policy now, with no ports: GRE matches its protocol-only entry ...
    retval, ev = run(dp, gre)
    assert retval == OK and ev is not None
    assert (ev.action, ev.key, ev.sport, ev.dport) == (Action.ALLOW, KEYS["gre"], 0, 0)
    # ... and protocol 1 in IPv6 has no ICMP type to match an ICMP entry.
    dp.apply(DatapathUpdate(policy_upsert={7: {MapStateKey(301, ING, Protocol.ICMP, 8, 16): PolicyEntry()}}))
    retval, ev = run(dp, icmp_in_ipv6)
    assert retval == SHOT and ev is not None
    assert (ev.drop_reason, ev.dport, ev.sport) == (DropReason.POLICY_DENIED, 0, 0)
    dp.extended_ip_protocols = False
    assert run(dp, gre)[0] == SHOT


def test_ipv4_options_are_skipped(dp: EBPFBackend) -> None:
    frame = ipv4(6, tcp(1, 80), options=b"\x01\x01\x01\x00" * 2)  # IHL 7
    retval, ev = run(dp, frame)
    assert retval == OK and ev is not None and ev.dport == 80 and ev.key == KEYS["tcp80"]


def test_ipv6_extension_header_chain_is_walked(dp: EBPFBackend) -> None:
    chain = opt_ext(43, 1) + opt_ext(60, 0) + opt_ext(44, 2) + frag_ext(6, 0, more=True)
    retval, ev = run(dp, ipv6(0, chain + tcp(40000, 443)))  # HBH, routing, dest-opts, frag
    assert retval == OK
    assert ev is not None and ev.dport == 443 and ev.key == KEYS["tcp443_v6"]
    assert not ev.fragment  # a first fragment carries the L4 header


def test_ipv6_authentication_header_length_in_4_byte_units(dp: EBPFBackend) -> None:
    ah = struct.pack("!BB", 6, 4) + bytes(22)  # (4 + 2) * 4 = 24 bytes
    retval, ev = run(dp, ipv6(51, ah + tcp(1, 443)))
    assert retval == OK and ev is not None and ev.dport == 443


def test_too_long_ipv6_extension_chain_fails_closed(dp: EBPFBackend) -> None:
    chain = b"".join(opt_ext(60) for _ in range(8)) + opt_ext(6)  # 9 headers, we walk 8
    retval, ev = run(dp, ipv6(60, chain + tcp(1, 443)))
    assert retval == SHOT
    assert ev is not None and ev.drop_reason == DropReason.INVALID_PACKET_DROPPED
    assert not ev.enforced and ev.endpoint_id == 0


@pytest.mark.parametrize(
    "frame",
    [
        ipv4(6, bytes(8), frag=1),  # offset 8 bytes
        ipv4(6, bytes(8), frag=0x2000 | 185),  # MF + offset
        ipv6(44, frag_ext(6, 3, more=False) + bytes(8)),
    ],
    ids=["v4", "v4-more-fragments", "v6"],
)
def test_non_first_fragment_has_no_ports_and_drops_157(dp: EBPFBackend, frame: bytes) -> None:
    retval, ev = run(dp, frame)
    assert retval == SHOT
    assert ev is not None and ev.fragment and (ev.sport, ev.dport) == (0, 0)
    assert ev.drop_reason == DropReason.IP_FRAGMENTATION_NOT_SUPPORTED


def test_non_first_fragment_matches_port_wildcards(dp: EBPFBackend) -> None:
    dp.extended_ip_protocols = True  # GRE gets to the policy lookup
    retval, ev = run(dp, ipv4(47, bytes(8), frag=3))
    assert retval == OK and ev is not None and ev.key == KEYS["gre"] and ev.fragment


def test_first_fragment_is_parsed_normally(dp: EBPFBackend) -> None:
    retval, ev = run(dp, ipv4(6, tcp(40000, 80), frag=0x2000))  # MF, offset 0
    assert retval == OK and ev is not None and ev.dport == 80 and not ev.fragment


@pytest.mark.parametrize(
    "frame",
    [
        ipv4(6, tcp(1, 80)[:10]),
        ipv4(17, udp(1, 53)[:4]),
        ipv4(132, sctp(1, 9000)[:8]),
        ipv4(1, icmp(8)[:4]),
        ipv4(6, tcp(1, 80))[:34],
        ipv6(0, opt_ext(6, 3)[:8]),  # hop-by-hop claims 32 bytes, L4 missing
        ipv6(6, tcp(1, 443)[:3]),
    ],
    ids=["tcp", "udp", "sctp", "icmp", "tcp-missing", "ipv6-ext", "tcp6"],
)
def test_truncated_l4_is_dropped_134(dp: EBPFBackend, frame: bytes) -> None:
    retval, ev = run(dp, frame)
    assert retval == SHOT
    assert ev is not None and ev.action == Action.DROP
    assert ev.drop_reason == DropReason.INVALID_PACKET_DROPPED


def test_bad_ipv4_header_length_is_dropped_134(dp: EBPFBackend) -> None:
    frame = bytearray(ipv4(6, tcp(1, 80)))
    frame[14] = 0x44  # IHL 4 < 5
    retval, ev = run(dp, bytes(frame))
    assert retval == SHOT and ev is not None and ev.drop_reason == 134


def test_arp_passes_without_event(dp: EBPFBackend) -> None:
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, bytes(6), PEER4.packed, bytes(6), EP4.packed)
    assert run(dp, eth(0x0806) + arp) == (OK, None)


def test_icmp_frag_needed_always_passes(dp: EBPFBackend) -> None:
    retval, ev = run(dp, ipv4(1, icmp(3, 4)))
    assert retval == OK and ev is not None and ev.key is None and ev.action == Action.ALLOW
    # Another destination-unreachable code is subject to policy (no entry: drop 133).
    retval, ev = run(dp, ipv4(1, icmp(3, 3)))
    assert retval == SHOT and ev is not None and ev.drop_reason == DropReason.POLICY_DENIED


def test_egress_hook_uses_the_source_endpoint(dp: EBPFBackend) -> None:
    frame = build_frame(Packet(src=EP4, dst=PEER4, dport=80))
    retval, ev = run(dp, frame, Direction.EGRESS)
    assert retval == SHOT  # no egress policy for endpoint 7
    assert ev is not None and ev.endpoint_id == 7 and ev.remote_identity == 300
    assert (ev.src, ev.dst, ev.direction) == (EP4, PEER4, Direction.EGRESS)


# ---------------------------------------------------------------- events and knobs
def test_event_mode_drops_only_and_none(dp: EBPFBackend) -> None:
    allowed, dropped = ipv4(6, tcp(1, 80)), ipv4(6, tcp(1, 81))
    dp.event_mode = EventMode.DROPS
    assert run(dp, allowed) == (OK, None)
    retval, ev = run(dp, dropped)
    assert retval == SHOT and ev is not None and ev.drop_reason == DropReason.POLICY_DENIED
    dp.event_mode = EventMode.NONE
    assert run(dp, dropped) == (SHOT, None)
    # evaluate() still reports verdicts (it switches events on for its own run).
    result = dp.evaluate(Packet(src=PEER4, dst=EP4, dport=80), ING)
    assert result.action == Action.ALLOW and dp.event_mode == EventMode.NONE
    dp.event_mode = EventMode.ALL
    assert run(dp, allowed)[1] is not None


def test_poll_events_returns_waiting_events(dp: EBPFBackend) -> None:
    dp.event_mode = EventMode.ALL
    frame = ipv4(6, tcp(1, 80))
    data = ctypes.create_string_buffer(frame, len(frame))
    run_opts = L.opts(
        L.bpf_test_run_opts, data_in=ctypes.cast(data, ctypes.c_void_p), data_size_in=len(frame), repeat=3
    )
    L.library().bpf_prog_test_run_opts(dp.program_fds[ING], ctypes.byref(run_opts))
    events = dp.poll_events(timeout_ms=10)
    assert [e.dport for e in events] == [80, 80, 80]
    assert dp.poll_events(timeout_ms=1) == []


def test_event_carries_cookie_of_entry_origins(dp: EBPFBackend) -> None:
    from ciliumpy._datapath import RuleOrigin

    origin = RuleOrigin("CiliumNetworkPolicy", "default", "web", "specs[0].ingress[0]")
    key = MapStateKey(300, ING, Protocol.TCP, 8080, 16)
    dp.apply(DatapathUpdate(policy_upsert={7: {key: PolicyEntry(origins={origin})}}))
    _, ev = run(dp, ipv4(6, tcp(1, 8080)))
    assert ev is not None and ev.cookie != 0
    assert dp.origins_of_cookie(ev.cookie) == frozenset({origin})


def test_redirect_and_lpm_prefix_in_event(dp: EBPFBackend) -> None:
    key = MapStateKey(0, ING, Protocol.TCP, 8192, 3)  # 8192-16383
    dp.apply(DatapathUpdate(policy_upsert={7: {key: PolicyEntry(proxy_port=15001, listener_priority=101)}}))
    retval, ev = run(dp, ipv4(6, tcp(1, 9999)))
    assert retval == OK and ev is not None
    assert (ev.action, ev.proxy_port, ev.key, ev.match_type) == (
        Action.REDIRECT,
        15001,
        key,
        MatchType.L4_ONLY,
    )


def test_auth_pair_expiry_is_enforced(dp: EBPFBackend) -> None:
    key = MapStateKey(300, ING, Protocol.TCP, 22, 16)
    dp.apply(DatapathUpdate(policy_upsert={7: {key: PolicyEntry(auth_type=1, explicit_auth=True)}}))
    packet = Packet(src=PEER4, dst=EP4, dport=22)
    assert dp.evaluate(packet, ING).drop_reason == DropReason.AUTH_REQUIRED
    dp.auth_pairs.add((1007, 300, 1))
    assert dp.evaluate(packet, ING).action == Action.ALLOW
    dp.reset_conntrack()
    expired = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - 1
    dp.auth_pairs.add((1007, 300, 1), expiration_ns=expired)
    result = dp.evaluate(packet, ING)
    assert (result.action, result.drop_reason, result.auth_type) == (
        Action.DROP,
        DropReason.AUTH_REQUIRED,
        1,
    )
    dp.auth_pairs.discard((1007, 300, 1))
    assert (1007, 300, 1) not in dp.auth_pairs


def test_byte_counters_count_the_frame(dp: EBPFBackend) -> None:
    frame = ipv4(6, tcp(1, 80)) + bytes(100)
    run(dp, frame)
    run(dp, frame)
    assert dp.policy_counters(7)[KEYS["tcp80"]] == (2, 2 * len(frame))
