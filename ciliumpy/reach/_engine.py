"""The reachability engine: per-endpoint map state → allowed port ranges per peer.

The datapath decides a new connection with two lookups per hook (the remote identity's
entries and identity 0's, longest protocol/port prefix each) and a choice between them
(``backends._simulator.choose_entry``). Both depend on the port only through the key
boundaries, so each (endpoint policy, direction, remote identity) is evaluated once per
*segment* of the port space between consecutive boundaries, never port by port. Remote
identities without entries of their own all see the same result (only identity 0's
entries apply), so every policy has one shared "default" table per direction plus one
table per identity it names. A pair's connections are the intersection of the source's
egress table and the destination's ingress table, memoised per pair of tables.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from .._datapath import (
    PRECEDENCE_DENY,
    Action,
    DatapathResult,
    Direction,
    MapStateKey,
    PolicyEntry,
    Protocol,
    RuleOrigin,
)
from .._identity import Identity
from .._mapstate import EndpointPolicy, PeerSelector
from ..backends._simulator import choose_entry

__all__ = ["ConnectionSet", "HookOutcome", "HookTable", "PolicyIndex", "Segment", "TableCache"]

#: Protocols a connection can use, by the name ``check`` accepts; ICMP is the family's.
PROTOCOL_NAMES = ("TCP", "UDP", "SCTP", "ICMP")
_NUMBERS = {"TCP": int(Protocol.TCP), "UDP": int(Protocol.UDP), "SCTP": int(Protocol.SCTP)}
_LAST_PORT = 0xFFFF
_LAST_ICMP_TYPE = 0xFF

_Lookup = tuple[MapStateKey, PolicyEntry]


def protocol_number(name: str, family: int) -> int:
    """The IP protocol number of a protocol name in an address family (ICMP → ICMPv6 in v6)."""
    if name == "ICMP":
        return int(Protocol.ICMP) if family == 4 else int(Protocol.ICMPV6)
    return _NUMBERS[name]


def last_port(proto: int) -> int:
    """Highest policy port: 65535, or 255 for an ICMP type."""
    return _LAST_ICMP_TYPE if proto in (Protocol.ICMP, Protocol.ICMPV6) else _LAST_PORT


@attrs.frozen
class HookOutcome:
    """What one policy hook does with every port of a segment.

    ``key``/``entry`` are the chosen map entry (None: no entry matched, a default-deny
    drop); ``auth`` the authentication the entry requires; ``l7`` the proxy's decision
    when the reachability was computed for an HTTP request. ``enforced`` is False for a
    side that is not a local endpoint (no hook runs there).
    """

    allowed: bool
    entry: PolicyEntry | None = None
    specific: bool = False
    auth: int = 0
    l7: Any = None
    accepts: tuple[str, ...] = ()
    enforced: bool = True

    @property
    def origins(self) -> frozenset[RuleOrigin]:
        if self.l7 is not None and getattr(self.l7, "matched_origins", None):
            return frozenset(self.l7.matched_origins)
        return self.entry.origins if self.entry is not None else frozenset()

    @property
    def redirect(self) -> bool:
        return self.entry is not None and self.entry.is_redirect


UNENFORCED = HookOutcome(allowed=True, enforced=False)

#: One stretch of ports (inclusive) with the same outcome.
Segment = tuple[int, int, HookOutcome]


@attrs.frozen(eq=False)
class HookTable:
    """A hook's outcome over the whole port space, per protocol number."""

    segments: Mapping[int, tuple[Segment, ...]]
    #: some allowed segment needs the remote identity to be decided (auth or L7)
    needs_remote: bool = False


class PolicyIndex:
    """One endpoint policy's map state indexed for lookups and segment boundaries."""

    def __init__(self, policy: EndpointPolicy) -> None:
        self.policy = policy
        # (direction, identity, protocol) -> keys sorted by prefix length, longest first
        self._keys: dict[tuple[int, int, int], list[_Lookup]] = {}
        self.named: dict[int, set[int]] = {0: set(), 1: set()}  # identities with own keys
        sigs: dict[tuple[int, int], list[tuple[Any, ...]]] = {}
        for key, entry in policy.map_state.items():
            self._keys.setdefault((int(key.direction), key.identity, key.protocol), []).append((key, entry))
            if key.identity:
                self.named[int(key.direction)].add(key.identity)
                sigs.setdefault((int(key.direction), key.identity), []).append(
                    (key.protocol, key.port, key.prefix_len, entry, entry.origins)
                )
        for items in self._keys.values():
            items.sort(key=lambda ke: -ke[0].prefix_len)
        # Identities whose own entries are the same decide the same way: one table for all.
        self.signature: dict[tuple[int, int], frozenset[Any]] = {k: frozenset(v) for k, v in sigs.items()}

    def lookup(self, direction: int, identity: int, proto: int, port: int) -> _Lookup | None:
        """The datapath's lookup for one identity (``_PolicyTable.lookup``)."""
        for key, entry in self._keys.get((direction, identity, proto), ()):
            if key.matches(identity, proto, port):
                return key, entry
        for key, entry in self._keys.get((direction, identity, 0), ()):
            return key, entry
        return None

    def boundaries(self, direction: int, identity: int, proto: int) -> set[int]:
        out: set[int] = set()
        for ident in {identity, 0}:
            for key, _ in self._keys.get((direction, ident, proto), ()):
                lo, hi = key.port_range
                out.add(lo)
                out.add(hi + 1)
        return out

    def filter_boundaries(self, direction: int, proto: int) -> set[int]:
        out: set[int] = set()
        for flt in self.policy.filters.get(Direction(direction), ()):
            if flt.protocol == proto:
                out.add(flt.first)
                out.add(flt.last + 1)
        return out

    def decide(self, direction: int, remote: int, proto: int, port: int) -> tuple[_Lookup | None, int]:
        """The chosen entry and required auth type at one port (SimulatorBackend.evaluate)."""
        l3 = self.lookup(direction, remote, proto, port)
        l4 = None
        if l3 is None or l3[1].precedence != PRECEDENCE_DENY:
            l4 = self.lookup(direction, 0, proto, port)
        chosen = choose_entry(l3, l4)
        if chosen is None:
            return None, 0
        other = l4 if chosen is l3 else l3
        entry = chosen[1]
        auth = entry.auth_type
        if (
            not entry.explicit_auth
            and other is not None
            and other[1].precedence == entry.precedence
            and other[1].auth_type > auth
        ):
            auth = other[1].auth_type
        return chosen, auth


class _SelectByMatch:
    """The ``select`` surface ``EndpointPolicy.l7_views`` needs, answered by label matching
    (a selector cache's selection is exactly the identities a selector matches)."""

    def __init__(self, identity: Identity | None) -> None:
        self._identity = identity

    def select(self, sel: PeerSelector) -> frozenset[int]:
        if sel.wildcard:
            return frozenset({0})
        if self._identity is not None and sel.matches(self._identity):
            return frozenset({self._identity.id})
        return frozenset()


class TableCache:
    """Hook tables of every policy, shared by all endpoints and peers of one computation.

    ``auth_pairs`` are the datapath's authenticated (local, remote, auth type) triples;
    ``request`` an L7 request judged where traffic is redirected (None: a redirect counts
    as allowed, as ``check`` without ``http``); ``identity_of`` maps a number to its
    :class:`Identity` for L7 selector matching.
    """

    def __init__(
        self,
        *,
        protocols: Sequence[int],
        port: int | None,
        auth_pairs: Iterable[tuple[int, int, int]] = (),
        request: Any = None,
        identity_of: Callable[[int], Identity | None] = lambda _n: None,
    ) -> None:
        self.protocols = tuple(protocols)
        self.port = port
        self.auth_pairs = frozenset(auth_pairs)
        self.request = request
        self.identity_of = identity_of
        self._index: dict[int, PolicyIndex] = {}
        self._tables: dict[tuple[int, int, frozenset[Any]], HookTable] = {}
        self._resolved: dict[tuple[int, int, int, int], HookTable] = {}
        self._interned: dict[tuple[Any, ...], HookTable] = {}
        self._pairs: dict[tuple[int, int, int], ConnectionSet] = {}
        self._keep: list[Any] = []  # objects whose id() keys a memo stay alive

    def index(self, policy: EndpointPolicy) -> PolicyIndex:
        found = self._index.get(id(policy))
        if found is None:
            found = self._index[id(policy)] = PolicyIndex(policy)
            self._keep.append(policy)
        return found

    def table(self, policy: EndpointPolicy, direction: int, remote: int) -> HookTable:
        """The hook of ``policy`` in ``direction`` for traffic with identity ``remote``."""
        idx = self.index(policy)
        own = remote if remote in idx.named[direction] else 0
        base = self.base_table(policy, direction, own)
        if not base.needs_remote:
            return base
        rkey = (id(policy), direction, own, remote)
        found = self._resolved.get(rkey)
        if found is None:
            found = self._resolved[rkey] = self._resolve(idx, direction, remote, base)
        return found

    def base_table(self, policy: EndpointPolicy, direction: int, own: int) -> HookTable:
        """The table of the remote identity ``own`` (0: every identity without own keys),
        before the per-peer auth and L7 decisions."""
        idx = self.index(policy)
        tkey = (id(policy), direction, idx.signature[(direction, own)] if own else frozenset())
        base = self._tables.get(tkey)
        if base is None:
            base = self._tables[tkey] = self._build(idx, direction, own)
        return base

    def _intern(self, segments: dict[int, tuple[Segment, ...]], needs_remote: bool) -> HookTable:
        sig = (needs_remote, *((p, segments[p]) for p in sorted(segments)))
        found = self._interned.get(sig)
        if found is None:
            found = self._interned[sig] = HookTable(segments, needs_remote)
        return found

    def _build(self, idx: PolicyIndex, direction: int, remote: int) -> HookTable:
        out: dict[int, tuple[Segment, ...]] = {}
        needs_remote = False
        protos = set(self.protocols)
        for proto in sorted(protos):
            top = last_port(proto)
            if self.port is not None:
                if self.port > top:
                    continue
                cuts = {self.port, self.port + 1}
                lo_bound, hi_bound = self.port, self.port
            else:
                cuts = idx.boundaries(direction, remote, proto)
                if self.request is not None:
                    cuts |= idx.filter_boundaries(direction, proto)
                lo_bound, hi_bound = 0, top
            points = sorted({lo_bound, hi_bound + 1} | {c for c in cuts if lo_bound < c <= hi_bound})
            segs: list[Segment] = []
            for a, b in itertools.pairwise(points):
                chosen, auth = idx.decide(direction, remote, proto, a)
                if chosen is None:
                    outcome = HookOutcome(allowed=False)
                else:
                    key, entry = chosen
                    ok = not entry.deny
                    outcome = HookOutcome(allowed=ok, entry=entry, specific=key.identity != 0, auth=auth)
                    if ok and (auth or entry.is_redirect):
                        needs_remote = True
                if segs and segs[-1][2] == outcome and segs[-1][1] == a - 1:
                    segs[-1] = (segs[-1][0], b - 1, outcome)
                else:
                    segs.append((a, b - 1, outcome))
            out[proto] = tuple(segs)
        return self._intern(out, needs_remote)

    def _resolve(self, idx: PolicyIndex, direction: int, remote: int, base: HookTable) -> HookTable:
        """Decide auth and L7 for one remote identity (they depend on who the peer is)."""
        from .._l7 import evaluate_l7

        local = idx.policy.identity
        out: dict[int, tuple[Segment, ...]] = {}
        for proto, segs in base.segments.items():
            new: list[Segment] = []
            for lo, hi, oc in segs:
                if oc.allowed and oc.auth and (local, remote, oc.auth) not in self.auth_pairs:
                    oc = attrs.evolve(oc, allowed=False)
                elif oc.allowed and oc.redirect:
                    # What the proxy accepts depends on who the peer is (its rules are per
                    # peer selector); without a request a redirect allows, as in check().
                    assert oc.entry is not None
                    res = DatapathResult(
                        direction=Direction(direction),
                        action=Action.REDIRECT,
                        remote_identity=remote,
                        proxy_port=oc.entry.proxy_port,
                    )
                    views = idx.policy.l7_views(res, proto, lo, _SelectByMatch(self.identity_of(remote)))
                    decision = evaluate_l7(views, self.request)
                    if self.request is None:
                        oc = attrs.evolve(oc, accepts=tuple(decision.accepts))
                    else:
                        oc = attrs.evolve(
                            oc, allowed=bool(decision.allowed), l7=decision, accepts=tuple(decision.accepts)
                        )
                new.append((lo, hi, oc))
            out[proto] = tuple(new)
        return self._intern(out, False)

    def connections(self, egress: HookTable | None, ingress: HookTable | None, family: int) -> ConnectionSet:
        """What a source with ``egress`` may open to a destination with ``ingress`` (None: no
        hook on that side), memoised per pair of tables."""
        key = (id(egress), id(ingress), family)
        found = self._pairs.get(key)
        if found is None:
            found = self._pairs[key] = _combine(egress, ingress, family, self.protocols, self.port)
        return found


_ALL = (UNENFORCED,)


def _allowed_segments(table: HookTable | None, proto: int, port: int | None) -> list[Segment]:
    if table is None:
        if port is not None:
            return [(port, port, UNENFORCED)] if port <= last_port(proto) else []
        return [(0, last_port(proto), UNENFORCED)]
    return [s for s in table.segments.get(proto, ()) if s[2].allowed]


def _combine(
    egress: HookTable | None, ingress: HookTable | None, family: int, protocols: Sequence[int], port: int | None
) -> ConnectionSet:
    out: dict[str, tuple[tuple[int, int, HookOutcome, HookOutcome], ...]] = {}
    for name in PROTOCOL_NAMES:
        proto = protocol_number(name, family)
        if proto not in protocols:
            continue
        eg = _allowed_segments(egress, proto, port)
        if not eg:
            continue
        ing = _allowed_segments(ingress, proto, port)
        if not ing:
            continue
        both: list[tuple[int, int, HookOutcome, HookOutcome]] = []
        i = j = 0
        while i < len(eg) and j < len(ing):
            a0, a1, ao = eg[i]
            b0, b1, bo = ing[j]
            lo, hi = max(a0, b0), min(a1, b1)
            if lo <= hi:
                both.append((lo, hi, ao, bo))
            if a1 < b1:
                i += 1
            else:
                j += 1
        if both:
            out[name] = tuple(both)
    return ConnectionSet(out, family)


class ConnectionSet:
    """The new connections one peer may open to another: port ranges per protocol, with
    the hook outcomes (entries, policies, L7 decisions) behind each range.

    ``ports`` maps ``"TCP"``, ``"UDP"``, ``"SCTP"``, ``"ICMP"`` to merged inclusive
    ``(first, last)`` ranges (ICMP: types; the family's ICMP). Empty sets are falsy.
    """

    __slots__ = ("_l7", "_policies", "_ports", "family", "segments")

    def __init__(self, segments: Mapping[str, tuple[tuple[int, int, HookOutcome, HookOutcome], ...]], family: int):
        self.segments = segments
        self.family = family
        self._ports: dict[str, tuple[tuple[int, int], ...]] | None = None
        self._policies: tuple[RuleOrigin, ...] | None = None
        self._l7: tuple[str, ...] | None = None

    def __bool__(self) -> bool:
        return bool(self.segments)

    def __repr__(self) -> str:
        return f"ConnectionSet({self.text()})"

    @property
    def ports(self) -> dict[str, tuple[tuple[int, int], ...]]:
        if self._ports is None:
            ports: dict[str, tuple[tuple[int, int], ...]] = {}
            for name, segs in self.segments.items():
                merged: list[tuple[int, int]] = []
                for lo, hi, _e, _i in segs:
                    if merged and merged[-1][1] + 1 == lo:
                        merged[-1] = (merged[-1][0], hi)
                    else:
                        merged.append((lo, hi))
                ports[name] = tuple(merged)
            self._ports = ports
        return self._ports

    def allows(self, protocol: str, port: int) -> bool:
        return any(lo <= port <= hi for lo, hi in self.ports.get(protocol, ()))

    def outcomes(self, protocol: str, port: int) -> tuple[HookOutcome, HookOutcome] | None:
        for lo, hi, eg, ing in self.segments.get(protocol, ()):
            if lo <= port <= hi:
                return eg, ing
        return None

    @property
    def policies(self) -> tuple[RuleOrigin, ...]:
        """The rules whose entries allow these connections (both hooks), sorted."""
        if self._policies is None:
            found: set[RuleOrigin] = set()
            for segs in self.segments.values():
                for _lo, _hi, eg, ing in segs:
                    found |= eg.origins
                    found |= ing.origins
            self._policies = tuple(sorted(found))
        return self._policies

    @property
    def l7(self) -> tuple[str, ...]:
        """The L7 rules (HTTP, gRPC-as-HTTP, DNS, Kafka) the proxy enforces on these connections."""
        if self._l7 is None:
            found: dict[str, None] = {}
            for name, segs in self.segments.items():
                for lo, hi, eg, ing in segs:
                    for oc, where in ((eg, "egress"), (ing, "ingress")):
                        if oc.redirect and oc.entry is not None:
                            for text in _l7_texts(oc):
                                found[f"{where} {_range_text(name, lo, hi)}: {text}"] = None
            self._l7 = tuple(found)
        return self._l7

    def text(self) -> str:
        """``TCP 80,8080-8090; UDP 53`` (``all`` when every port of every protocol is open)."""
        if not self.segments:
            return "none"
        if all(
            self.ports.get(name) == ((0, _LAST_ICMP_TYPE if name == "ICMP" else _LAST_PORT),) for name in PROTOCOL_NAMES
        ):
            return "all"
        parts = []
        for name in PROTOCOL_NAMES:
            ranges = self.ports.get(name)
            if not ranges:
                continue
            full = ranges == ((0, _LAST_ICMP_TYPE if name == "ICMP" else _LAST_PORT),)
            parts.append(f"{name} " + ("all" if full else ",".join(_span(lo, hi) for lo, hi in ranges)))
        return "; ".join(parts)


def _span(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _range_text(name: str, lo: int, hi: int) -> str:
    return f"{name}/{_span(lo, hi)}"


def _l7_texts(oc: HookOutcome) -> list[str]:
    if oc.accepts:
        return list(oc.accepts)
    if oc.l7 is not None:
        return [str(getattr(oc.l7, "reason", oc.l7))]
    return [f"redirected to the L7 proxy (port {oc.entry.proxy_port})" if oc.entry else "redirected"]
