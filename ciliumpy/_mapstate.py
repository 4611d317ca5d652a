"""Policy resolution: from rules that select an endpoint to its per-endpoint map state.

The pipeline follows pkg/policy (repository.go, rule.go, l4.go, mapstate.go) as recorded
in docs/semantics.md: collect rules, decide enforcement and default deny per direction,
build L4 filters (port range x protocol → peer selector → merged per-selector policy),
then distil them into map keys with the 1.17+ insertion algorithm (deny and redirect
precedence, pruning of covered entries, wildcard elision).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from typing import Protocol as _Interface

import attrs

from ._datapath import (
    ID_HOST,
    DatapathResult,
    Direction,
    IPNetwork,
    MapStateKey,
    PolicyEntry,
    Protocol,
    RuleOrigin,
    port_range_to_prefixes,
)
from ._identity import Identity
from ._labels import (
    CLUSTER_KEY,
    NAMESPACE_KEY,
    NAMESPACE_LABELS_PREFIX,
    SOURCE_FQDN,
    SOURCE_K8S,
    SOURCE_RESERVED,
)
from ._selectors import EndpointSelector, Operator, Requirement
from .exceptions import PolicyError

if TYPE_CHECKING:
    from ._l7 import L7Rules
    from ._model import PeerRule, Rule

__all__ = [
    "CompilerConfig",
    "EndpointPolicy",
    "L4Filter",
    "MapStateBuilder",
    "PeerSelector",
    "SelectorCache",
]


# --------------------------------------------------------------------------------------
# selectors over identities
@attrs.frozen
class PeerSelector:
    """What a rule's peer list selects, normalised for the selector cache.

    Exactly one form: ``wildcard`` (identity 0 in keys, i.e. every peer), ``nothing``, a
    conjunction of label ``requirements``, or a ``cidr`` prefix. ``excepts`` leave out
    identities whose ``cidr:`` label lies inside one of them (a ``cidr`` or a CIDR group).
    """

    requirements: tuple[Requirement, ...] = ()
    cidr: IPNetwork | None = None
    excepts: tuple[IPNetwork, ...] = ()
    wildcard: bool = False
    nothing: bool = False
    world_key: str = ""
    text: str = attrs.field(default="", eq=False, order=False)

    @classmethod
    def labels(cls, reqs: Iterable[Requirement], text: str = "") -> PeerSelector:
        reqs_t = tuple(sorted(set(reqs)))
        return cls(requirements=reqs_t, text=text or ", ".join(str(r) for r in reqs_t) or "{}")

    def matches(self, ident: Identity) -> bool:
        if self.wildcard:
            return True
        if self.nothing:
            return False
        if self.cidr is not None:
            return _cidr_selects(self.cidr, self.excepts, self.world_key, ident)
        if self.excepts and _excepted(self.excepts, ident):
            return False
        return all(r.matches(ident.labels) for r in self.requirements)

    def __str__(self) -> str:
        if self.wildcard:
            return "ANY"
        if self.nothing:
            return "none"
        if self.cidr is not None:
            exc = f" except {', '.join(map(str, self.excepts))}" if self.excepts else ""
            return f"cidr {self.cidr}{exc}"
        exc = f" except {', '.join(map(str, self.excepts))}" if self.excepts else ""
        return (self.text or "{}") + exc


def _excepted(excepts: tuple[IPNetwork, ...], ident: Identity) -> bool:
    own = ident.cidr
    return own is not None and any(own.version == e.version and own.subnet_of(e) for e in excepts)  # type: ignore[arg-type]


def _cidr_selects(net: IPNetwork, excepts: tuple[IPNetwork, ...], world_key: str, ident: Identity) -> bool:
    own = ident.cidr
    if net.prefixlen == 0:
        # 0.0.0.0/0 and ::/0 are represented by a world label: reserved:world in
        # single-stack, reserved:world-ipv4/-ipv6 in dual-stack (pkg/policy/types/selector.go).
        if not ident.labels.has_key(world_key or "world", SOURCE_RESERVED):
            return False
    elif own is None or own.version != net.version or not own.subnet_of(net):  # type: ignore[arg-type]
        return False
    return not _excepted(excepts, ident)


def _bits(version: int) -> int:
    return 32 if version == 4 else 128


class SelectorCache:
    """Selector → selected identity ids, kept up to date as identities come and go.

    Label selectors are answered from an inverted index (key=value → ids); CIDR selectors
    from a sorted index of CIDR identities (a range query per selector) and, when an
    identity appears, from an index of CIDR selectors by prefix (one probe per prefix
    length). Thousands of identities and selectors build in well under a second.
    """

    def __init__(self) -> None:
        self._identities: dict[int, Identity] = {}
        self._by_kv: dict[tuple[str, str], set[int]] = defaultdict(set)
        self._by_key: dict[str, set[int]] = defaultdict(set)
        # CIDR identities per family, sorted by (network, prefix length, id)
        self._cidr_sorted: dict[int, list[tuple[int, int, int]]] = {4: [], 6: []}
        self._selections: dict[PeerSelector, frozenset[int]] = {}
        self._label_sels: set[PeerSelector] = set()
        self._world_sels: set[PeerSelector] = set()  # /0 selectors: match by world label
        # CIDR selectors by (family, prefix length) -> prefix bits -> selectors
        self._cidr_sels: dict[tuple[int, int], dict[int, set[PeerSelector]]] = defaultdict(lambda: defaultdict(set))

    def identities(self) -> Mapping[int, Identity]:
        return self._identities

    def _candidate_selectors(self, ident: Identity) -> Iterable[PeerSelector]:
        yield from self._label_sels
        yield from self._world_sels
        own = ident.cidr
        if own is None:
            return
        bits = _bits(own.version)
        value = int(own.network_address)
        for (version, plen), table in self._cidr_sels.items():
            if version == own.version and plen <= own.prefixlen:
                yield from table.get(value >> (bits - plen), ())

    def add_identity(self, ident: Identity) -> list[PeerSelector]:
        """Register ``ident``; return the selectors whose selection grew."""
        self._identities[ident.id] = ident
        for lbl in ident.labels.labels:
            self._by_kv[(lbl.key, lbl.value)].add(ident.id)
            self._by_key[lbl.key].add(ident.id)
        if ident.cidr is not None:
            insort(
                self._cidr_sorted[ident.cidr.version], (int(ident.cidr.network_address), ident.cidr.prefixlen, ident.id)
            )
        changed = []
        for sel in list(self._candidate_selectors(ident)):
            if sel.matches(ident):
                self._selections[sel] = self._selections[sel] | {ident.id}
                changed.append(sel)
        return changed

    def remove_identity(self, ident: Identity) -> list[PeerSelector]:
        self._identities.pop(ident.id, None)
        for lbl in ident.labels.labels:
            self._by_kv[(lbl.key, lbl.value)].discard(ident.id)
            self._by_key[lbl.key].discard(ident.id)
        if ident.cidr is not None:
            entries = self._cidr_sorted[ident.cidr.version]
            item = (int(ident.cidr.network_address), ident.cidr.prefixlen, ident.id)
            pos = bisect_left(entries, item)
            if pos < len(entries) and entries[pos] == item:
                del entries[pos]
        changed = []
        for sel in list(self._candidate_selectors(ident)):
            ids = self._selections.get(sel)
            if ids is not None and ident.id in ids:
                self._selections[sel] = ids - {ident.id}
                changed.append(sel)
        return changed

    def select(self, sel: PeerSelector) -> frozenset[int]:
        """Identity ids selected by ``sel`` (``{0}`` for the wildcard)."""
        hit = self._selections.get(sel)
        if hit is not None:
            return hit
        if sel.wildcard:
            result: frozenset[int] = frozenset({0})
        elif sel.nothing:
            result = frozenset()
        elif sel.cidr is not None and sel.cidr.prefixlen == 0:
            result = frozenset(i for i in self._world_ids() if sel.matches(self._identities[i]))
            self._world_sels.add(sel)
        elif sel.cidr is not None:
            net = sel.cidr
            entries = self._cidr_sorted[net.version]
            lo = int(net.network_address)
            hi = int(net.broadcast_address)
            start = bisect_left(entries, (lo, -1, -1))
            found = []
            for value, plen, num in entries[start:]:
                if value > hi:
                    break
                if plen >= net.prefixlen and sel.matches(self._identities[num]):
                    found.append(num)
            result = frozenset(found)
            bits = _bits(net.version)
            self._cidr_sels[(net.version, net.prefixlen)][lo >> (bits - net.prefixlen)].add(sel)
        else:
            result = self._select_labels(sel)
            self._label_sels.add(sel)
        self._selections[sel] = result
        return result

    def _world_ids(self) -> set[int]:
        out: set[int] = set()
        for key in ("world", "world-ipv4", "world-ipv6"):
            out |= self._by_key.get(key, set())
        return out

    def _select_labels(self, sel: PeerSelector) -> frozenset[int]:
        candidates: set[int] | None = None
        for req in sel.requirements:
            if req.operator is Operator.IN:
                ids: set[int] = set()
                for v in req.values:
                    ids |= self._by_kv.get((req.key, v), set())
            elif req.operator is Operator.EXISTS:
                ids = self._by_key.get(req.key, set())
            else:
                continue
            candidates = set(ids) if candidates is None else candidates & ids
            if not candidates:
                return frozenset()
        pool = self._identities.keys() if candidates is None else candidates
        return frozenset(i for i in pool if sel.matches(self._identities[i]))

    def forget_unused(self, keep: Iterable[PeerSelector]) -> None:
        keep_set = set(keep)
        for sel in list(self._selections):
            if sel not in keep_set:
                del self._selections[sel]
                self._label_sels.discard(sel)
                self._world_sels.discard(sel)
                if sel.cidr is not None and sel.cidr.prefixlen:
                    bits = _bits(sel.cidr.version)
                    key = int(sel.cidr.network_address) >> (bits - sel.cidr.prefixlen)
                    self._cidr_sels[(sel.cidr.version, sel.cidr.prefixlen)][key].discard(sel)


# --------------------------------------------------------------------------------------
# the insertion algorithm
class MapStateBuilder:
    """Per-endpoint map state with Cilium's 1.17+ insertion and pruning rules (§3.4)."""

    def __init__(self, prune: bool) -> None:
        self.prune = prune
        self.entries: dict[MapStateKey, PolicyEntry] = {}
        self._by_ident: dict[tuple[int, int], set[MapStateKey]] = defaultdict(set)
        self._by_dir: dict[int, set[MapStateKey]] = defaultdict(set)

    def _add(self, key: MapStateKey, entry: PolicyEntry) -> None:
        self.entries[key] = entry
        self._by_ident[(int(key.direction), key.identity)].add(key)
        self._by_dir[int(key.direction)].add(key)

    def _remove(self, key: MapStateKey) -> None:
        self.entries.pop(key, None)
        self._by_ident[(int(key.direction), key.identity)].discard(key)
        self._by_dir[int(key.direction)].discard(key)

    def covering(self, key: MapStateKey) -> Iterator[tuple[MapStateKey, PolicyEntry]]:
        d = int(key.direction)
        pools = [self._by_ident.get((d, 0), set())]
        if key.identity != 0:
            pools.append(self._by_ident.get((d, key.identity), set()))
        for pool in pools:
            for k in pool:
                if k.covers(key):
                    yield k, self.entries[k]

    def covered(self, key: MapStateKey) -> list[tuple[MapStateKey, PolicyEntry]]:
        d = int(key.direction)
        pool = self._by_dir.get(d, set()) if key.identity == 0 else self._by_ident.get((d, key.identity), set())
        return [(k, self.entries[k]) for k in pool if key.covers(k)]

    def insert(self, key: MapStateKey, entry: PolicyEntry) -> None:
        if entry.deny:
            self._insert_deny(key, entry)
        else:
            self._insert_allow(key, entry)

    def _insert_deny(self, key: MapStateKey, entry: PolicyEntry) -> None:
        prec = entry.precedence
        for k, e in self.covering(key):
            if e.precedence > prec or (e.deny and e.precedence == prec and k != key):
                return
        for k, e in self.covered(key):
            if k == key:
                continue
            if e.precedence < prec or (e.deny and e.precedence == prec):
                self._remove(k)
        self._merge(key, entry)

    def _insert_allow(self, key: MapStateKey, entry: PolicyEntry) -> None:
        if self.prune:
            prec = entry.precedence
            for k, e in self.covering(key):
                if e.precedence > prec and not (k == key and not e.deny):
                    return
                if k == key and e.deny:
                    return
            for k, e in self.covered(key):
                if k != key and e.precedence < prec:
                    self._remove(k)
        self._merge(key, entry)

    def _merge(self, key: MapStateKey, entry: PolicyEntry) -> None:
        old = self.entries.get(key)
        if old is None:
            self._add(key, entry)
            return
        if old.deny != entry.deny:
            winner = old if old.deny else entry
            self.entries[key] = winner
            return
        if old.deny:
            self.entries[key] = old.with_origins(entry.origins)
            return
        # both allows: the higher redirect precedence wins; ties go to the lower proxy port
        if entry.precedence > old.precedence or (
            entry.precedence == old.precedence and 0 < entry.proxy_port < old.proxy_port
        ):
            base, other = entry, old
        else:
            base, other = old, entry
        auth, explicit = _merge_auth(base, other)
        origins = base.origins | other.origins
        self.entries[key] = attrs.evolve(base, auth_type=auth, explicit_auth=explicit, origins=origins)

    def derive_auth(self) -> None:
        """Give allows without explicit auth the auth of the most specific covering
        same-identity entry that has one (§3.7)."""
        explicit = [(k, e) for k, e in self.entries.items() if e.explicit_auth and not e.deny]
        if not explicit:
            return
        for key, entry in list(self.entries.items()):
            if entry.deny or entry.explicit_auth:
                continue
            best: tuple[MapStateKey, PolicyEntry] | None = None
            for k, e in explicit:
                if k == key or k.identity != key.identity or k.direction != key.direction:
                    continue
                if not k.covers(key) or e.precedence < entry.precedence:
                    continue
                if best is None or k.lpm_prefix_length > best[0].lpm_prefix_length:
                    best = (k, e)
            if best is not None:
                self.entries[key] = attrs.evolve(entry, auth_type=best[1].auth_type)


def _merge_auth(a: PolicyEntry, b: PolicyEntry) -> tuple[int, bool]:
    if a.explicit_auth and not b.explicit_auth:
        return a.auth_type, True
    if b.explicit_auth and not a.explicit_auth:
        return b.auth_type, True
    return max(a.auth_type, b.auth_type), a.explicit_auth


# --------------------------------------------------------------------------------------
# L4 filters
@attrs.frozen
class SelectorPolicy:
    """The merged policy of one peer selector inside one L4 filter."""

    deny: bool = False
    l7: L7Rules | None = None
    auth_type: int = 0
    explicit_auth: bool = False
    origins: frozenset[RuleOrigin] = frozenset()


@attrs.define
class L4Filter:
    """All rules of one direction on one (protocol, port range); port 0 + protocol 0 is the
    L3-only filter."""

    direction: Direction
    protocol: int
    first: int
    last: int
    selectors: dict[PeerSelector, SelectorPolicy] = attrs.field(factory=dict)

    @property
    def is_l3_only(self) -> bool:
        return self.protocol == 0

    def covers_port(self, protocol: int, port: int) -> bool:
        if self.protocol == 0:
            return True
        return self.protocol == protocol and self.first <= port <= self.last

    def parsers(self) -> dict[PeerSelector, str]:
        """The L7 parser of each selector that redirects (Cilium >= 1.18: per selector)."""
        return {
            sel: pol.l7.parser
            for sel, pol in self.selectors.items()
            if not pol.deny and pol.l7 is not None and pol.l7.parser is not None
        }

    def add(self, sel: PeerSelector, contrib: SelectorPolicy, path: str) -> None:
        # Since Cilium 1.18 the parser belongs to each selector's policy (pkg/policy/l4.go
        # PerSelectorPolicy.L7Parser): DNS for one peer and HTTP for another on the same
        # port are valid; only two parsers on the *same* selector conflict.
        old = self.selectors.get(sel)
        if old is None:
            self.selectors[sel] = contrib
            return
        self.selectors[sel] = _merge_selector_policy(old, contrib, path)


def _conflict(first: str, second: str, origins: frozenset[RuleOrigin], path: str) -> PolicyError:
    where = min(origins) if origins else None
    return PolicyError(
        f"cannot merge conflicting L7 parsers ({first}/{second})",
        kind=where.kind if where else None,
        namespace=(where.namespace or None) if where else None,
        name=where.name if where else None,
        field=f"{where.rule}.toPorts" if where else path,
    )


def _merge_selector_policy(a: SelectorPolicy, b: SelectorPolicy, path: str) -> SelectorPolicy:
    origins = a.origins | b.origins
    if a.deny or b.deny:
        return SelectorPolicy(deny=True, origins=frozenset(o for p in (a, b) if p.deny for o in p.origins))
    l7: L7Rules | None
    if a.l7 is not None and b.l7 is not None:
        mine, theirs = a.l7.parser, b.l7.parser
        if mine is not None and theirs is not None and mine != theirs:
            raise _conflict(mine, theirs, b.origins, path)
        l7 = a.l7.merged(b.l7)
    elif a.l7 is not None or b.l7 is not None:
        # a plain allow on the same selector/port turns the L7 set into allow-all (§1.5)
        from ._l7 import L7Rules as _L7

        present = a.l7 if a.l7 is not None else b.l7
        assert present is not None and present.parser is not None
        l7 = present.merged(_L7.allow_all(present.parser))
    else:
        l7 = None
    if a.explicit_auth and b.explicit_auth and a.auth_type != b.auth_type:
        raise PolicyError("cannot merge conflicting authentication types", field=path)
    auth = a.auth_type if a.explicit_auth else b.auth_type if b.explicit_auth else 0
    return SelectorPolicy(False, l7, auth, a.explicit_auth or b.explicit_auth, origins)


# --------------------------------------------------------------------------------------
@attrs.frozen
class CompilerConfig:
    """Agent options that change policy resolution."""

    cluster_name: str = "default"
    allow_localhost: bool = True
    dual_stack: bool = False
    policy_enforcement: str = "default"  # default | always | never
    proxy_ports: Mapping[tuple[Direction, str], int] = attrs.field(
        factory=lambda: {
            (Direction.INGRESS, "http"): 15001,
            (Direction.EGRESS, "http"): 15002,
            (Direction.INGRESS, "kafka"): 15003,
            (Direction.EGRESS, "kafka"): 15004,
            (Direction.EGRESS, "dns"): 15053,
        }
    )

    def proxy_port(self, direction: Direction, parser: str) -> int:
        port = self.proxy_ports.get((direction, parser))
        if port is not None:
            return port
        return 15100 + (hash(parser) % 800) * 2 + int(direction)


@attrs.frozen
class SelectedRule:
    """A rule that selects an endpoint, with where it comes from."""

    origin: RuleOrigin
    rule: Rule
    kind: str
    namespace: str


class Selections(_Interface):
    """What answers "which identities does this selector select" (a SelectorCache)."""

    def select(self, sel: PeerSelector) -> frozenset[int]: ...


@attrs.define
class EndpointPolicy:
    """The resolved policy of one endpoint: map state, filters and enforcement."""

    identity: int
    map_state: dict[MapStateKey, PolicyEntry]
    filters: dict[Direction, list[L4Filter]]
    enforced: dict[Direction, bool]
    default_deny: dict[Direction, bool]
    rules: list[SelectedRule]
    selectors: frozenset[PeerSelector]
    uses_cluster_ports: bool = False
    uses_services: bool = False
    #: proxy port -> parser of every redirect in the map state
    redirects: dict[int, str] = attrs.field(factory=dict)

    def l7_views(self, res: DatapathResult, protocol: int, port: int, cache: Selections) -> list[Any]:
        """Per-selector policies that apply to the remote identity of a redirected hook
        result on (protocol, port) (§3.9 step 5).

        A selector whose rules are for another parser than the proxy the packet was
        redirected to is passed as a rule without L7 restrictions: that proxy does not
        enforce them (Cilium's NPDS sends such a selector to Envoy with no HTTP rules, and
        the DNS proxy allows every name to a selector without DNS rules).
        """
        from ._l7 import L7PolicyView

        direction, remote = res.direction, res.remote_identity
        proxy_parser = self.redirects.get(res.proxy_port)
        views = []
        for flt in self.filters.get(direction, []):
            if not flt.covers_port(protocol, port):
                continue
            for sel, pol in flt.selectors.items():
                ids = cache.select(sel)
                if 0 in ids or remote in ids:
                    parser = pol.l7.parser if pol.l7 is not None else None
                    foreign = proxy_parser is not None and parser is not None and parser != proxy_parser
                    views.append(
                        L7PolicyView(
                            origins=pol.origins,
                            rules=None if foreign and not pol.deny else pol.l7,
                            deny=pol.deny,
                            l3_only=flt.is_l3_only,
                            proxy_parser=proxy_parser,
                            foreign_parser=parser if foreign else None,
                        )
                    )
        return views


def icmp_protocol(family: str) -> Protocol:
    return Protocol.ICMP if family == "IPv4" else Protocol.ICMPV6


@attrs.define
class _Contribution:
    direction: Direction
    selector: PeerSelector
    protocol: int
    first: int
    last: int
    policy: SelectorPolicy
    path: str


class PolicyCompiler:
    """Turns the rules selecting one endpoint into its :class:`EndpointPolicy`."""

    def __init__(
        self,
        config: CompilerConfig,
        cache: SelectorCache,
        peer_selectors: Callable[[SelectedRule, PeerRule], list[PeerSelector]],
        cluster_named_ports: Callable[[str], set[tuple[int, str]]],
    ) -> None:
        self.config = config
        self.cache = cache
        self.peer_selectors = peer_selectors
        self.cluster_named_ports = cluster_named_ports

    def compile(
        self,
        identity: Identity,
        rules: Sequence[SelectedRule],
        own_ports: Mapping[str, tuple[int, str]],
        extra: Sequence[_Contribution] = (),
        np_directions: Mapping[Direction, bool] | None = None,
    ) -> EndpointPolicy:
        enforced = {d: False for d in Direction}
        default_deny = {d: False for d in Direction}
        mode = self.config.policy_enforcement
        is_init = identity.labels.has_key("init", SOURCE_RESERVED)
        contributions: list[_Contribution] = list(extra)
        uses_cluster_ports = False
        for sel_rule in rules:
            rule = sel_rule.rule
            for d in Direction:
                if rule.has_direction(d):
                    enforced[d] = True
                    if rule.default_deny(d):
                        default_deny[d] = True
        for d, deny_all in (np_directions or {}).items():
            enforced[d] = True
            default_deny[d] = default_deny[d] or deny_all
        if mode == "never":
            enforced = {d: False for d in Direction}
        elif mode == "always" or is_init:
            enforced = {d: True for d in Direction}
            default_deny = {d: True for d in Direction}
        for sel_rule in rules:
            for d in Direction:
                for deny in (False, True):
                    section = ("ingress" if d == Direction.INGRESS else "egress") + ("Deny" if deny else "")
                    for i, peer_rule in enumerate(sel_rule.rule.rules_for(d, deny)):
                        path = f"{sel_rule.origin.rule}.{section}[{i}]"
                        origin = attrs.evolve(sel_rule.origin, rule=path)
                        got, cluster_ports = self._rule_contributions(
                            sel_rule, peer_rule, origin, path, own_ports, default_deny[d]
                        )
                        uses_cluster_ports = uses_cluster_ports or cluster_ports
                        contributions.extend(got)

        filters: dict[Direction, dict[tuple[int, int, int], L4Filter]] = {d: {} for d in Direction}
        for c in contributions:
            fkey = (c.protocol, c.first, c.last)
            flt = filters[c.direction].get(fkey)
            if flt is None:
                flt = filters[c.direction][fkey] = L4Filter(c.direction, c.protocol, c.first, c.last)
            flt.add(c.selector, c.policy, c.path)

        has_deny_or_redirect = any(
            pol.deny or (pol.l7 is not None and pol.l7.parser is not None)
            for fs in filters.values()
            for f in fs.values()
            for pol in f.selectors.values()
        )
        builder = MapStateBuilder(prune=has_deny_or_redirect)
        used: set[PeerSelector] = set()
        for d in Direction:
            if not enforced[d]:
                continue
            for flt in filters[d].values():
                used.update(flt.selectors)
                self._distill(builder, flt)
            if not default_deny[d]:
                name = "allow-any-ingress" if d == Direction.INGRESS else "allow-any-egress"
                builder.insert(MapStateKey(0, d), PolicyEntry(origins={RuleOrigin("reserved", "", name)}))
        for d in Direction:
            if not enforced[d]:
                name = "allow-any-ingress" if d == Direction.INGRESS else "allow-any-egress"
                builder.insert(MapStateKey(0, d), PolicyEntry(origins={RuleOrigin("reserved", "", name)}))
        if self.config.allow_localhost and identity.id != ID_HOST and enforced[Direction.INGRESS]:
            builder.insert(
                MapStateKey(ID_HOST, Direction.INGRESS),
                PolicyEntry(origins={RuleOrigin("reserved", "", "allow-localhost-ingress")}),
            )
        builder.derive_auth()
        return EndpointPolicy(
            identity=identity.id,
            map_state=builder.entries,
            filters={d: list(filters[d].values()) for d in Direction},
            enforced=enforced,
            default_deny=default_deny,
            rules=list(rules),
            selectors=frozenset(used),
            uses_cluster_ports=uses_cluster_ports,
            redirects={
                self.config.proxy_port(d, parser): parser
                for d in Direction
                for flt in filters[d].values()
                for parser in flt.parsers().values()
            },
        )

    def _distill(self, builder: MapStateBuilder, flt: L4Filter) -> None:
        pieces = [(0, 0)] if flt.protocol == 0 else port_range_to_prefixes(flt.first, flt.last)
        wildcard_pol = None
        for sel, pol in flt.selectors.items():
            if sel.wildcard:
                wildcard_pol = pol
        wildcard_entry = self._entry(flt, wildcard_pol) if wildcard_pol is not None else None
        for sel, pol in sorted(flt.selectors.items(), key=lambda kv: (not kv[0].wildcard, str(kv[0]))):
            entry = self._entry(flt, pol)
            if (
                not sel.wildcard
                and wildcard_entry is not None
                and flt.protocol != 0
                and (flt.first, flt.last) != (0, 0xFFFF)
                and entry.same_value(wildcard_entry)
            ):
                continue  # identical to the filter's L4-only entry (wildcard elision)
            for ident in sorted(self.cache.select(sel)):
                for port, plen in pieces:
                    key = MapStateKey(ident, flt.direction, flt.protocol, port, plen if flt.protocol else 0)
                    builder.insert(key, entry)

    def _entry(self, flt: L4Filter, pol: SelectorPolicy) -> PolicyEntry:
        if pol.deny:
            return PolicyEntry(deny=True, origins=pol.origins)
        proxy = 0
        prio = 0
        if pol.l7 is not None and pol.l7.parser is not None:
            proxy = self.config.proxy_port(flt.direction, pol.l7.parser)
            prio = pol.l7.listener_priority
        return PolicyEntry(
            proxy_port=proxy,
            listener_priority=prio,
            auth_type=pol.auth_type,
            explicit_auth=pol.explicit_auth,
            origins=pol.origins,
        )

    def _rule_contributions(
        self,
        sel_rule: SelectedRule,
        peer_rule: PeerRule,
        origin: RuleOrigin,
        path: str,
        own_ports: Mapping[str, tuple[int, str]],
        default_deny: bool = True,
    ) -> tuple[list[_Contribution], bool]:
        direction = peer_rule.direction
        selectors = self.peer_selectors(sel_rule, peer_rule)
        if not selectors:
            return [], False
        auth_type = peer_rule.auth_type
        explicit = peer_rule.authentication is not None
        out: list[_Contribution] = []
        uses_cluster_ports = False
        # An explicitly empty toPorts/icmps list counts as absent (Go's len() == 0 checks in
        # pkg/policy/rule.go mergeIngress/mergeEgress).
        if peer_rule.icmps:
            for icmp in peer_rule.icmps:
                for fld in icmp.fields:
                    pol = SelectorPolicy(
                        deny=peer_rule.deny, auth_type=auth_type, explicit_auth=explicit, origins=frozenset({origin})
                    )
                    for sel in selectors:
                        out.append(_Contribution(direction, sel, int(fld.protocol), fld.number, fld.number, pol, path))
            return out, False
        if not peer_rule.to_ports:
            pol = SelectorPolicy(
                deny=peer_rule.deny, auth_type=auth_type, explicit_auth=explicit, origins=frozenset({origin})
            )
            for sel in selectors:
                out.append(_Contribution(direction, sel, 0, 0, 0, pol, path))
            return out, False
        for port_rule in peer_rule.to_ports:
            l7 = port_rule.rules if port_rule.has_l7 else None
            if l7 is not None and l7.parser is not None and l7.rules and not default_deny and not peer_rule.deny:
                # Cilium >= 1.18 (createL4Filter, ensureWildcard): without default deny in
                # this direction, L7 rules only add visibility, so the parser's allow-all
                # rule is appended and nothing the endpoint allowed before is refused.
                l7 = l7.with_wildcard()
            pol = SelectorPolicy(
                deny=peer_rule.deny,
                l7=l7,
                auth_type=auth_type,
                explicit_auth=explicit,
                origins=frozenset({origin}),
            )
            ports = port_rule.ports or ()
            if not ports:
                # toPorts without ports (e.g. only rules/serverNames): all ports, all protocols
                for sel in selectors:
                    out.append(_Contribution(direction, sel, 0, 0, 0, pol, path))
                continue
            for pp in ports:
                first, last = (0, 0) if pp.is_named else pp.range()
                if pp.is_named and direction == Direction.EGRESS:
                    uses_cluster_ports = True
                for proto in pp.protocols():
                    if pp.is_named:
                        # A name resolves per protocol: the container port must carry the
                        # rule's protocol (pkg/types/portmap.go GetNamedPort); otherwise, or
                        # when the name has several numbers, there is no entry.
                        if direction == Direction.INGRESS:
                            own = own_ports.get(pp.port)
                            nums = {own[0]} if own is not None and own[1] == proto.name else set()
                        else:
                            nums = {n for n, p in self.cluster_named_ports(pp.port) if p == proto.name}
                        if len(nums) != 1:
                            continue
                        first = last = next(iter(nums))
                    if first == 0 and last == 0:
                        f, lst = 0, 0xFFFF
                    else:
                        f, lst = first, last
                    for sel in selectors:
                        out.append(_Contribution(direction, sel, int(proto), f, lst, pol, path))
        return out, uses_cluster_ports


# --------------------------------------------------------------------------------------
# translating rule peers into selectors
def namespace_requirement(namespace: str) -> Requirement:
    return Requirement(SOURCE_K8S, NAMESPACE_KEY, Operator.IN, (namespace,))


def endpoint_selector_for_peer(sel: EndpointSelector, kind: str, namespace: str, cluster: str) -> PeerSelector:
    """Apply the CRD translation of a ``fromEndpoints``/``toEndpoints`` selector (§1.3)."""
    reqs = list(sel.requirements)
    if kind == "CiliumNetworkPolicy-REST" or sel.has_source(SOURCE_RESERVED):
        return PeerSelector.labels(reqs, str(sel))
    mentions_ns = sel.mentions_key(NAMESPACE_KEY)
    if kind == "CiliumNetworkPolicy":
        if not mentions_ns and not sel.mentions_key_prefix(NAMESPACE_LABELS_PREFIX):
            reqs.append(namespace_requirement(namespace))
    elif kind == "CiliumClusterwideNetworkPolicy" and not mentions_ns:
        reqs.append(Requirement(SOURCE_K8S, NAMESPACE_KEY, Operator.EXISTS, ()))
    return PeerSelector.labels(reqs, str(sel) + ("" if mentions_ns else f" (namespace {namespace or '*'})"))


def subject_selector(sel: EndpointSelector, kind: str, namespace: str) -> PeerSelector:
    """The subject selector of a rule: a CNP's is pinned to its namespace."""
    if kind in ("CiliumNetworkPolicy", "NetworkPolicy"):
        # ParseToCiliumRule sets the k8s-sourced namespace key of matchLabels to the policy's
        # namespace (overwriting a user value); every other requirement is kept as written.
        from ._labels import split_source

        reqs: list[Requirement] = []
        for key, value in sel.match_labels:
            src, bare = split_source(key)
            if bare == NAMESPACE_KEY and src == SOURCE_K8S:
                continue
            reqs.append(Requirement(src, bare, Operator.IN, (value,)))
        reqs.extend(sel.match_expressions)
        reqs.append(namespace_requirement(namespace))
        return PeerSelector.labels(reqs, f"{sel} in {namespace}")
    return PeerSelector.labels(sel.requirements, str(sel))


def _reserved(name: str) -> PeerSelector:
    return PeerSelector.labels([Requirement(SOURCE_RESERVED, name, Operator.EXISTS, ())], f"reserved:{name}")


def entity_selectors(entity: str, cluster: str) -> list[PeerSelector]:
    """Selectors an entity expands to (pkg/policy/api/entity.go)."""
    if entity == "all":
        return [PeerSelector(wildcard=True, text="all")]
    if entity == "none":
        return []
    if entity == "world":
        return [_reserved("world"), _reserved("world-ipv4"), _reserved("world-ipv6")]
    if entity == "cluster":
        out = [
            _reserved(n) for n in ("host", "remote-node", "init", "ingress", "health", "unmanaged", "kube-apiserver")
        ]
        out.append(
            PeerSelector.labels([Requirement(SOURCE_K8S, CLUSTER_KEY, Operator.IN, (cluster,))], f"cluster {cluster}")
        )
        return out
    return [_reserved(entity)]


def cidr_selector(net: IPNetwork, excepts: Sequence[IPNetwork] = (), dual_stack: bool = False) -> PeerSelector:
    """A CIDR peer; a /0 prefix stands for the world label of the stack mode."""
    world = ""
    if net.prefixlen == 0:
        world = ("world-ipv4" if net.version == 4 else "world-ipv6") if dual_stack else "world"
    return PeerSelector(cidr=net, excepts=tuple(sorted(excepts, key=str)), world_key=world)


def fqdn_selector(label_key: str) -> PeerSelector:
    return PeerSelector.labels([Requirement(SOURCE_FQDN, label_key, Operator.EXISTS, ())], f"fqdn:{label_key}")


def referenced_cidrs(selectors: Iterable[PeerSelector]) -> set[IPNetwork]:
    out: set[IPNetwork] = set()
    for sel in selectors:
        if sel.cidr is not None:
            out.add(sel.cidr)
        out.update(sel.excepts)
    return out
