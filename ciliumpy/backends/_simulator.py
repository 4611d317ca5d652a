"""The pure-Python datapath: the reference the eBPF backend is tested against.

It mirrors bpf/ciliumpy.bpf.c step by step: endpoint lookup by address, ipcache
longest-prefix match (miss = world), connection tracking per endpoint, the two policy
lookups of Cilium 1.17+ (exact identity, then identity 0) and the choice between them.
"""

from __future__ import annotations

import functools
import threading
from collections import defaultdict
from collections.abc import Mapping
from typing import ClassVar

import attrs

from .._datapath import (
    ID_WORLD,
    PRECEDENCE_DENY,
    Action,
    CTState,
    DatapathResult,
    Direction,
    DropReason,
    EndpointRecord,
    IPAddress,
    IPNetwork,
    LBService,
    MapStateKey,
    MatchType,
    Packet,
    PolicyEntry,
    Protocol,
    lb_slot,
)
from . import DatapathUpdate

__all__ = ["LPMTable", "SimulatorBackend", "choose_entry", "match_type_of"]

_CTKey = tuple[int, int, int, int, int]
_Lookup = tuple[MapStateKey, PolicyEntry]


class LPMTable:
    """Longest-prefix-match table over IPv4 and IPv6 prefixes.

    One dict per (family, prefix length) keyed by the prefix bits; lookups walk the
    lengths present from longest to shortest.
    """

    def __init__(self) -> None:
        self._tables: dict[tuple[int, int], dict[int, int]] = {}
        self._ordered: dict[int, list[tuple[int, int, dict[int, int]]]] = {4: [], 6: []}
        self._entries: dict[IPNetwork, int] = {}

    @staticmethod
    def _bits(version: int) -> int:
        return 32 if version == 4 else 128

    def set(self, net: IPNetwork, value: int) -> None:
        key = (net.version, net.prefixlen)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = {}
            shift = self._bits(net.version) - net.prefixlen
            ordered = self._ordered[net.version]
            ordered.append((net.prefixlen, shift, table))
            ordered.sort(key=lambda item: -item[0])
        table[int(net.network_address) >> (self._bits(net.version) - net.prefixlen)] = value
        self._entries[net] = value

    def delete(self, net: IPNetwork) -> None:
        self._entries.pop(net, None)
        table = self._tables.get((net.version, net.prefixlen))
        if table is not None:
            table.pop(int(net.network_address) >> (self._bits(net.version) - net.prefixlen), None)

    def lookup(self, addr: IPAddress) -> int | None:
        value = int(addr)
        for _plen, shift, table in self._ordered[addr.version]:
            if table:
                hit = table.get(value >> shift)
                if hit is not None:
                    return hit
        return None

    def copy(self) -> LPMTable:
        new = LPMTable()
        for net, val in self._entries.items():
            new.set(net, val)
        return new

    def items(self) -> dict[IPNetwork, int]:
        return dict(self._entries)


class _PolicyTable:
    """One endpoint's policy map with a longest-prefix lookup per identity."""

    def __init__(self) -> None:
        self.entries: dict[MapStateKey, PolicyEntry] = {}
        # (identity, direction, protocol) -> {(masked port, prefix): key}
        self._index: dict[tuple[int, int, int], dict[tuple[int, int], MapStateKey]] = {}
        self._prefixes: dict[tuple[int, int, int], list[int]] = {}

    def put(self, key: MapStateKey, entry: PolicyEntry) -> None:
        self.entries[key] = entry
        idx = (key.identity, int(key.direction), key.protocol)
        self._index.setdefault(idx, {})[(key.port, key.prefix_len)] = key
        plist = self._prefixes.setdefault(idx, [])
        if key.prefix_len not in plist:
            plist.append(key.prefix_len)
            plist.sort(reverse=True)

    def delete(self, key: MapStateKey) -> None:
        if self.entries.pop(key, None) is None:
            return
        idx = (key.identity, int(key.direction), key.protocol)
        self._index[idx].pop((key.port, key.prefix_len), None)

    def lookup(self, identity: int, direction: int, protocol: int, port: int) -> _Lookup | None:
        """LPM lookup with a fixed identity: longest protocol/port prefix wins."""
        idx = (identity, direction, protocol)
        table = self._index.get(idx)
        if table:
            for plen in self._prefixes[idx]:
                masked = port & ((0xFFFF << (16 - plen)) & 0xFFFF)
                key = table.get((masked, plen))
                if key is not None:
                    return key, self.entries[key]
        table = self._index.get((identity, direction, 0))
        if table:
            key = table.get((0, 0))
            if key is not None:
                return key, self.entries[key]
        return None


def match_type_of(key: MapStateKey | None) -> MatchType:
    """Hubble match type of a chosen key, from its identity and prefix length."""
    if key is None:
        return MatchType.NONE
    plen = key.lpm_prefix_length
    if key.identity != 0:
        if plen > 8:
            return MatchType.L3_L4
        return MatchType.L3_PROTO if plen else MatchType.L3_ONLY
    if plen == 0:
        return MatchType.ALL
    return MatchType.PROTO_ONLY if plen <= 8 else MatchType.L4_ONLY


def choose_entry(l3: _Lookup | None, l4: _Lookup | None) -> _Lookup | None:
    """Choose between the exact-identity and the identity-0 lookup results (§4.3)."""
    if l3 is not None and l3[1].precedence == PRECEDENCE_DENY:
        return l3
    if l4 is not None:
        if l3 is None:
            return l4
        p3, p4 = l3[1].precedence, l4[1].precedence
        if p4 > p3 or (p4 == p3 and l4[0].lpm_prefix_length > l3[0].lpm_prefix_length):
            return l4
    return l3


class SimulatorBackend:
    """Deterministic pure-Python datapath (the default backend).

    ``extended_ip_protocols`` is Cilium's ``enable-extended-ip-protocols``: off (the
    default), IP protocols other than TCP, UDP, SCTP and the family's ICMP are dropped with
    ``CT_UNKNOWN_L4_PROTOCOL`` (137) at an endpoint's hook before any policy lookup; on,
    they are judged by policy with port 0.
    """

    name: ClassVar[str] = "simulator"

    def __init__(self, *, extended_ip_protocols: bool = False) -> None:
        self._endpoints: dict[int, EndpointRecord] = {}
        self._by_ip: dict[int, int] = {}  # _addr_key(ip) -> endpoint id
        self._ipcache = LPMTable()
        self._policy: dict[int, _PolicyTable] = {}
        # per endpoint: tuple -> (direction that created it, rev-NAT index of its service)
        self._ct: dict[int, dict[_CTKey, tuple[Direction, int]]] = defaultdict(dict)
        self._services: dict[int, LBService] = {}
        self._frontends: dict[tuple[int, int, int], LBService] = {}  # (addr key, port, proto)
        self._counters: dict[int, dict[MapStateKey, list[int]]] = defaultdict(dict)
        # (local security identity, remote security identity, auth type): Cilium's auth map key
        self.auth_pairs: set[tuple[int, int, int]] = set()
        # Cilium's enable-extended-ip-protocols: protocols conntrack does not know are
        # judged by policy (port 0) instead of dropped
        self.extended_ip_protocols = extended_ip_protocols
        self._closed = False
        # Updates and evaluations (which write conntrack and counters) take turns.
        self._lock = threading.Lock()

    @classmethod
    def probe(cls) -> None:
        """The simulator runs everywhere."""

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({"conntrack", "counters"})

    # -- state -------------------------------------------------------------------------
    def apply(self, update: DatapathUpdate) -> None:
        """Apply ``update``; a malformed one is refused before anything changes."""
        # Pure-Python updates cannot fail half way once validated.
        for key_map in update.policy_upsert.values():
            for key in key_map:
                if not isinstance(key, MapStateKey):
                    raise TypeError(f"policy key must be a MapStateKey, got {key!r}")
        with self._lock:
            self._apply(update)

    def _apply(self, update: DatapathUpdate) -> None:
        for ep_id in update.endpoints_delete:
            rec = self._endpoints.pop(ep_id, None)
            if rec is not None:
                for ip in rec.ips:
                    if self._by_ip.get(_addr_key(ip)) == ep_id:
                        del self._by_ip[_addr_key(ip)]
            self._policy.pop(ep_id, None)
            self._ct.pop(ep_id, None)
            self._counters.pop(ep_id, None)
        for ep_id, rec in update.endpoints_upsert.items():
            old = self._endpoints.get(ep_id)
            if old is not None:
                for ip in old.ips:
                    # Only its own: an address another endpoint took over stays with that one.
                    if self._by_ip.get(_addr_key(ip)) == ep_id:
                        del self._by_ip[_addr_key(ip)]
            self._endpoints[ep_id] = rec
            for ip in rec.ips:
                self._by_ip[_addr_key(ip)] = ep_id
        for net in update.ipcache_delete:
            self._ipcache.delete(net)
        for net, ident in update.ipcache_upsert.items():
            self._ipcache.set(net, ident)
        for ep_id in update.policy_replace:
            self._policy[ep_id] = _PolicyTable()
        for ep_id, keys in update.policy_delete.items():
            table = self._policy.get(ep_id)
            if table is not None:
                for key in keys:
                    table.delete(key)
        for ep_id, entries in update.policy_upsert.items():
            table = self._policy.setdefault(ep_id, _PolicyTable())
            for key, entry in entries.items():
                table.put(key, entry)
        if update.services_upsert or update.services_delete:
            for svc_id in update.services_delete:
                self._services.pop(svc_id, None)
            self._services.update(update.services_upsert)
            # Keyed by frontend as the service map is; rebuilt, so a frontend that moved
            # from one service ID to another in the same update is never lost.
            self._frontends = {(_addr_key(s.address), s.port, s.protocol): s for s in self._services.values()}

    def ipcache_lookup(self, addr: IPAddress) -> int:
        hit = self._ipcache.lookup(addr)
        return ID_WORLD if hit is None else hit

    def reset_conntrack(self) -> None:
        with self._lock:
            self._ct.clear()

    def policy_counters(self, endpoint_id: int) -> Mapping[MapStateKey, tuple[int, int]]:
        with self._lock:
            return {k: (v[0], v[1]) for k, v in self._counters.get(endpoint_id, {}).items()}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._policy.clear()
            self._ct.clear()

    # -- evaluation --------------------------------------------------------------------
    def evaluate(self, packet: Packet, direction: Direction) -> DatapathResult:
        """Run the ``direction`` hook on ``packet``; thread-safe (evaluations take turns)."""
        if direction.__class__ is not Direction:
            direction = Direction(direction)
        with self._lock:
            return self._evaluate(packet, direction)

    def _evaluate(self, packet: Packet, direction: Direction) -> DatapathResult:
        local = packet.src if direction == Direction.EGRESS else packet.dst
        remote = packet.dst if direction == Direction.EGRESS else packet.src
        ep_id = self._by_ip.get(_addr_key(local))
        if ep_id is None:
            return DatapathResult(direction=direction, action=Action.ALLOW, enforced=False)
        nat: tuple[int, IPAddress | None, int] = (0, None, 0)
        if direction == Direction.EGRESS and self._frontends and packet.carries_ports and not packet.is_icmp:
            # The tc load balancer (bpf_lxc from-container): a packet to a frontend is
            # translated to a backend before conntrack and policy see it.
            svc = self._frontends.get((_addr_key(packet.dst), packet.dport, packet.protocol))
            if svc is not None:
                if not svc.backends:
                    return DatapathResult(
                        direction=direction,
                        action=Action.DROP,
                        endpoint_id=ep_id,
                        remote_identity=self.ipcache_lookup(remote),
                        drop_reason=DropReason.NO_SERVICE,
                        service_id=svc.service_id,
                    )
                slot = lb_slot(packet.src, None if svc.affinity else packet.sport, len(svc.backends))
                backend = svc.backends[slot - 1]
                packet = attrs.evolve(packet, dst=backend.address, dport=backend.port)
                remote = packet.dst
                nat = (svc.service_id, backend.address, backend.port)
        remote_id = self.ipcache_lookup(remote)
        result = functools.partial(DatapathResult, service_id=nat[0], nat_address=nat[1], nat_port=nat[2])
        if not packet.known_to_conntrack and not self.extended_ip_protocols:
            return result(
                direction=direction,
                action=Action.DROP,
                endpoint_id=ep_id,
                remote_identity=remote_id,
                drop_reason=DropReason.CT_UNKNOWN_L4_PROTOCOL,
            )
        ct = self._ct[ep_id]
        tup = _ct_tuple(packet)
        fwd = ct.get(tup)
        rev = ct.get(_ct_reverse(tup)) if fwd is None or fwd[0] != direction else None
        if fwd is not None and fwd[0] == direction:
            ct_state = CTState.ESTABLISHED
        elif rev is not None and rev[0] != direction:
            # Reply of a translated connection: its source goes back to the frontend.
            front = self._services.get(rev[1]) if rev[1] else None
            return DatapathResult(
                direction=direction,
                action=Action.ALLOW,
                endpoint_id=ep_id,
                remote_identity=remote_id,
                ct_state=CTState.REPLY,
                service_id=rev[1],
                nat_address=front.address if front is not None else None,
                nat_port=front.port if front is not None else 0,
            )
        else:
            ct_state = CTState.NEW
        if (
            packet.protocol == Protocol.ICMP
            and packet.icmp_type == 3
            and packet.icmp_code == 4
            and packet.src.version == 4
            and not packet.fragment
        ):
            # Fragmentation-needed messages always pass (allow-icmp-frag-needed).
            return result(
                direction=direction,
                action=Action.ALLOW,
                endpoint_id=ep_id,
                remote_identity=remote_id,
                ct_state=ct_state,
            )
        table = self._policy.get(ep_id)
        chosen: _Lookup | None = None
        other: _Lookup | None = None
        if table is not None:
            port = packet.policy_port
            l3 = table.lookup(remote_id, int(direction), packet.protocol, port)
            l4 = None
            if l3 is None or l3[1].precedence != PRECEDENCE_DENY:
                l4 = table.lookup(0, int(direction), packet.protocol, port)
            chosen = choose_entry(l3, l4)
            other = l4 if chosen is l3 else l3
        if chosen is None:
            reason = DropReason.IP_FRAGMENTATION_NOT_SUPPORTED if packet.fragment else DropReason.POLICY_DENIED
            return result(
                direction=direction,
                action=Action.DROP,
                endpoint_id=ep_id,
                remote_identity=remote_id,
                drop_reason=reason,
                ct_state=ct_state,
            )
        key, entry = chosen
        counter = self._counters[ep_id].setdefault(key, [0, 0])
        counter[0] += 1
        counter[1] += packet.frame_length
        mtype = match_type_of(key)
        if entry.deny:
            return result(
                direction=direction,
                action=Action.DROP,
                endpoint_id=ep_id,
                remote_identity=remote_id,
                drop_reason=DropReason.POLICY_DENY,
                key=key,
                match_type=mtype,
                ct_state=ct_state,
            )
        auth = entry.auth_type
        if (
            not entry.explicit_auth
            and other is not None
            and other[1].precedence == entry.precedence
            and other[1].auth_type > auth
        ):
            auth = other[1].auth_type
        if auth and (self._endpoints[ep_id].identity, remote_id, auth) not in self.auth_pairs:
            return result(
                direction=direction,
                action=Action.DROP,
                endpoint_id=ep_id,
                remote_identity=remote_id,
                drop_reason=DropReason.AUTH_REQUIRED,
                key=key,
                match_type=mtype,
                ct_state=ct_state,
                auth_type=auth,
            )
        if ct_state == CTState.NEW:
            ct[tup] = (direction, nat[0])
        return result(
            direction=direction,
            action=Action.REDIRECT if entry.proxy_port else Action.ALLOW,
            endpoint_id=ep_id,
            remote_identity=remote_id,
            proxy_port=entry.proxy_port,
            key=key,
            match_type=mtype,
            ct_state=ct_state,
            auth_type=auth,
        )

    def ipcache_items(self) -> dict[IPNetwork, int]:
        return self._ipcache.items()


def _addr_key(addr: IPAddress) -> int:
    """A hashable int per address; IPv6 gets bit 128 set so families never collide."""
    return int(addr) if addr.version == 4 else int(addr) | (1 << 128)


def _ct_tuple(packet: Packet) -> _CTKey:
    src, dst = _addr_key(packet.src), _addr_key(packet.dst)
    if not packet.carries_ports:
        # no L4 header on the wire (non-first fragment, port-less protocol): ports are 0
        return (packet.protocol, src, dst, 0, 0)
    if packet.is_icmp:
        return (packet.protocol, src, dst, packet.sport, 0)
    return (packet.protocol, src, dst, packet.sport, packet.dport)


def _ct_reverse(tup: _CTKey) -> _CTKey:
    proto, src, dst, sport, dport = tup
    if proto in (Protocol.ICMP, Protocol.ICMPV6):
        return (proto, dst, src, sport, 0)
    return (proto, dst, src, dport, sport)
