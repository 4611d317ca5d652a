"""``Reachability``: who may open connections to whom, computed once per identity.

Endpoints that share a resolved policy (same identity, same named ports) form one *unit*;
external peers (reserved entities, CIDR and FQDN identities) are units of one. Every pair
of units is decided with the engine's hook tables, then expanded to endpoints on demand.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import html
import ipaddress
import itertools
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .._datapath import (
    ID_HOST,
    ID_WORLD,
    ID_WORLD_IPV4,
    ID_WORLD_IPV6,
    LOCAL_IDENTITY_FLAG,
    Direction,
    IPAddress,
)
from .._identity import Identity
from .._mapstate import EndpointPolicy
from ..exceptions import PolicyError, UnknownEndpointError
from ._engine import PROTOCOL_NAMES, ConnectionSet, HookTable, TableCache, protocol_number

if TYPE_CHECKING:
    from .._cluster import Cluster

__all__ = ["Reachability", "compute"]

_PROTOCOL_ALIASES = {"TCP": "TCP", "UDP": "UDP", "SCTP": "SCTP", "ICMP": "ICMP", "ICMPV4": "ICMP", "ICMPV6": "ICMPV6"}
_HTML_CELLS = 400  # matrix cells shown in the notebook view before it summarises
_HTML_CHARS = 100_000


class _Unit:
    """Endpoints sharing one resolved policy, or one external identity in one family.

    ``node_families`` are the address families of the node as ``check`` sees it (world
    and host have both); ``families`` those this unit stands for: "world" is one unit per
    family because its IPv4 and IPv6 addresses may map to different identities.
    """

    __slots__ = ("external", "families", "identity", "index", "members", "node_families", "policy")

    def __init__(
        self,
        index: int,
        identity: int,
        policy: EndpointPolicy | None,
        families: tuple[int, ...],
        external: bool,
        node_families: tuple[int, ...] | None = None,
    ) -> None:
        self.index = index
        self.identity = identity
        self.policy = policy
        self.families = families
        self.node_families = node_families if node_families is not None else families
        self.external = external
        self.members: list[str] = []


def _family(src: tuple[int, ...], dst: tuple[int, ...]) -> int | None:
    # Cluster._addresses: the first source address with a destination of the same family
    for fam in src:
        if fam in dst:
            return fam
    return None


def _pair_family(s: _Unit, d: _Unit) -> int | None:
    fam = _family(s.node_families, d.node_families)
    if fam is None or fam not in s.families or fam not in d.families:
        return None
    return fam


def compute(
    cluster: Cluster,
    *,
    port: int | None = None,
    protocol: str | None = None,
    http: Mapping[str, Any] | None = None,
    namespaces: Iterable[str] | None = None,
) -> Reachability:
    """Compute who may reach whom in ``cluster`` (see :meth:`ciliumpy.Cluster.reachability`)."""
    return Reachability(cluster, port=port, protocol=protocol, http=http, namespaces=namespaces)


class Reachability:
    """Who may open new connections to whom, on which ports and L7 routes, and why.

    Built by :meth:`ciliumpy.Cluster.reachability` at identity granularity: endpoints
    with the same identity (and named ports) are decided once, and each hook's port space
    is split only where map-state keys start and end. ``port``/``protocol`` narrow the
    connections computed, ``http`` judges that request where traffic is redirected to the
    L7 proxy (as ``check(..., http=...)``), ``namespaces`` limits the endpoints shown.

    >>> import ciliumpy
    >>> c = ciliumpy.Cluster()
    >>> _ = c.add_endpoint("prod/web", labels={"app": "web"})
    >>> _ = c.add_endpoint("prod/db", labels={"app": "db"})
    >>> r = c.reachability()
    >>> r.allowed("prod/web", "prod/db", 5432)
    True
    >>> sorted(r.to_networkx().successors("prod/web"))
    ['host', 'prod/db', 'world']
    """

    def __init__(
        self,
        cluster: Cluster,
        *,
        port: int | None = None,
        protocol: str | None = None,
        http: Mapping[str, Any] | None = None,
        namespaces: Iterable[str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.port = _check_port(port)
        self.protocol = _check_protocol(protocol) if protocol is not None else None
        self.http = dict(http) if http is not None else None
        self.namespaces = _check_namespaces(cluster, namespaces)
        self._request = None
        if self.http is not None:
            from .._l7 import HTTPRequest

            self._request = HTTPRequest.from_mapping(self.http)
        self._auth_pairs = frozenset(getattr(cluster.backend, "auth_pairs", ()) or ())
        protos = {
            protocol_number(name, fam)
            for name in (PROTOCOL_NAMES if self.protocol is None else (self.protocol,))
            for fam in (4, 6)
        }
        self._identities: dict[int, Identity] = {i.id: i for i in cluster.identities()}
        self._tables = self._table_cache(protos, self.port)
        self._full: TableCache | None = None
        self._build_units()
        self._pairs: dict[tuple[int, int], ConnectionSet] = {}
        with _no_gc():
            self._compute_pairs()
        self._graph: Any = None

    # -- construction ------------------------------------------------------------------
    def _table_cache(self, protos: Iterable[int], port: int | None) -> TableCache:
        return TableCache(
            protocols=sorted(protos),
            port=port,
            auth_pairs=self._auth_pairs,
            request=self._request,
            identity_of=self._identities.get,
        )

    def _build_units(self) -> None:
        cluster = self.cluster
        units: list[_Unit] = []
        by_key: dict[tuple[Any, ...], _Unit] = {}
        self._unit_of: dict[str, _Unit] = {}
        self._ep_unit: dict[str, _Unit] = {}
        self._node_attrs: dict[str, dict[str, Any]] = {}
        self._ip_owner: dict[IPAddress, str] = {}
        endpoint_ids: set[int] = set()
        for ref, ep in sorted(cluster.endpoints.items()):
            pol = cluster.endpoint_policy(ref)
            fams: tuple[int, ...] = tuple(dict.fromkeys(ip.version for ip in ep.ips))
            # A policy is a function of the identity (which rules select it) and the pod's
            # own named ports; equal ones may still be distinct objects (compiled apart).
            named = tuple(sorted((p.name, p.port, p.protocol) for p in ep.ports if p.name))
            key = (pol.identity, named, fams)
            unit = by_key.get(key)
            if unit is None:
                unit = by_key[key] = _Unit(len(units), pol.identity, pol, fams, False)
                units.append(unit)
            self._ep_unit[ref] = unit
            endpoint_ids.add(pol.identity)
            for ip in ep.ips:
                self._ip_owner[ip] = ref
            if self.namespaces is None or ep.namespace in self.namespaces:
                unit.members.append(ref)
                self._unit_of[ref] = unit
                self._node_attrs[ref] = {
                    "kind": "endpoint",
                    "namespace": ep.namespace,
                    "labels": dict(ep.labels),
                    "identity": pol.identity,
                }
        self._ext_unit: dict[tuple[int, int], _Unit] = {}
        self._node_units: dict[str, list[_Unit]] = {}
        for by_family, name, kind in self._externals(endpoint_ids):
            node_fams = tuple(by_family)
            for fam, ident in by_family.items():
                unit = _Unit(len(units), ident, None, (fam,), True, node_fams)
                units.append(unit)
                unit.members.append(name)
                self._unit_of.setdefault(name, unit)
                self._node_units.setdefault(name, []).append(unit)
                self._ext_unit.setdefault((ident, fam), unit)
            first = next(iter(by_family.values()))
            found = self._identities.get(first)
            self._node_attrs[name] = {
                "kind": kind,
                "namespace": "",
                "labels": dict.fromkeys(found.labels.strings(), "") if found is not None else {},
                "identity": first,
            }
        for ref, unit in self._unit_of.items():
            self._node_units.setdefault(ref, [unit])
        self._units = units

    def _externals(self, endpoint_ids: set[int]) -> list[tuple[dict[int, int], str, str]]:
        """External peers (identity per family, node name, kind): world and host as
        ``check`` names them (their addresses' identities), then every other identity the
        ipcache holds that is not an endpoint's: CIDR and FQDN identities, remote nodes."""
        from .._cluster import HOST_IP_V4, HOST_IP_V6, WORLD_IP_V4, WORLD_IP_V6

        lookup = self.cluster.lookup_ip
        out: list[tuple[dict[int, int], str, str]] = [
            ({4: lookup(WORLD_IP_V4).id, 6: lookup(WORLD_IP_V6).id}, "world", "entity"),
            ({4: lookup(HOST_IP_V4).id, 6: lookup(HOST_IP_V6).id}, "host", "entity"),
        ]
        prefixes: dict[int, list[Any]] = {}
        ipcache = self.cluster.ipcache()
        for net, num in ipcache.items():
            if num in endpoint_ids or num in (ID_HOST, ID_WORLD, ID_WORLD_IPV4, ID_WORLD_IPV6):
                continue
            prefixes.setdefault(num, []).append(net)
        self._addresses: dict[str, str] = {}
        spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for net in ipcache:
            spans[net.version].append((int(net.network_address), int(net.broadcast_address)))
        for family in spans.values():
            family.sort(key=lambda span: (span[0], -span[1]))
        for num, nets in sorted(prefixes.items()):
            address = self._find_address(num, nets, spans)
            if address is None:
                continue  # every address of its prefixes belongs to a more specific one
            fams: dict[int, int] = {ipaddress.ip_address(address).version: num}
            ident = self._identities.get(num)
            if num & LOCAL_IDENTITY_FLAG and ident is not None:
                fqdns = sorted(lbl.key for lbl in ident.labels if lbl.source == "fqdn")
                if fqdns:
                    name, kind = "fqdn:" + ",".join(fqdns), "fqdn"
                else:
                    name, kind = str(ident.cidr or min(nets, key=lambda n: n.prefixlen)), "cidr"
            else:
                name, kind = (ident.name if ident is not None else str(num)), "entity"
            if name in self._addresses:
                name = f"{name}#{num}"
            self._addresses[name] = address
            out.append((fams, name, kind))
        return out

    def _compute_pairs(self) -> None:
        """Decide every pair of shown units.

        Most pairs are decided by the source's default egress table (the destination's
        identity has no keys of its own there) and the destination's default ingress
        table: destinations are grouped by that table and decided once per group; the
        pairs where either side names the other are decided one by one.
        """
        tables = self._tables
        eg_dir, in_dir = int(Direction.EGRESS), int(Direction.INGRESS)
        shown = [u for u in self._units if u.members]
        by_identity: dict[int, list[_Unit]] = {}
        for u in shown:
            by_identity.setdefault(u.identity, []).append(u)
        # destination classes: (default ingress table, families) -> units
        classes: dict[tuple[Any, ...], tuple[HookTable | None, _Unit, list[_Unit]]] = {}
        named_in: dict[int, set[int]] = {}  # source identity -> destination units naming it
        irregular_dst: list[_Unit] = []
        for d in shown:
            ing0: HookTable | None = None
            if d.policy is not None:
                ing0 = tables.base_table(d.policy, in_dir, 0)
                if ing0.needs_remote:
                    irregular_dst.append(d)
                    continue
                for ident in tables.index(d.policy).named[in_dir]:
                    named_in.setdefault(ident, set()).add(d.index)
            key = (id(ing0), d.node_families, d.families, d.external)
            classes.setdefault(key, (ing0, d, []))[2].append(d)
        pairs = self._pairs
        units = self._units
        for s in shown:
            eg0: HookTable | None = None
            special: set[int] = set(named_in.get(s.identity, ()))
            if s.policy is not None:
                eg0 = tables.base_table(s.policy, eg_dir, 0)
                for ident in tables.index(s.policy).named[eg_dir]:
                    special.update(u.index for u in by_identity.get(ident, ()))
                if eg0.needs_remote:
                    special.update(u.index for u in shown)
            for ing0, sample, members in classes.values():
                if s.external and sample.external:
                    continue
                fam = _pair_family(s, sample)
                if fam is None:
                    continue
                cs = tables.connections(eg0, ing0, fam)
                if cs:
                    for d in members:
                        if d.index not in special:
                            pairs[(s.index, d.index)] = cs
            for di in sorted(special) + [d.index for d in irregular_dst]:
                d = units[di]
                if s.external and d.external:
                    continue
                fam = _pair_family(s, d)
                if fam is None:
                    continue
                eg = tables.table(s.policy, eg_dir, d.identity) if s.policy is not None else None
                ing = tables.table(d.policy, in_dir, s.identity) if d.policy is not None else None
                cs = tables.connections(eg, ing, fam)
                if cs:
                    pairs[(s.index, d.index)] = cs
                else:
                    pairs.pop((s.index, d.index), None)

    # -- questions ---------------------------------------------------------------------
    @property
    def nodes(self) -> list[str]:
        """Every node: endpoints (``ns/name``, sorted) then external peers."""
        return list(self._node_attrs)

    @property
    def endpoints(self) -> list[str]:
        """The endpoint nodes (``ns/name``), sorted."""
        return [n for n, a in self._node_attrs.items() if a["kind"] == "endpoint"]

    def connections(self, src: str, dst: str) -> ConnectionSet:
        """The connections ``src`` may open to ``dst`` (graph node names), empty if none."""
        self._unit(src)
        self._unit(dst)
        for s in self._node_units[src]:
            for d in self._node_units[dst]:
                found = self._pairs.get((s.index, d.index))
                if found is not None:
                    return found
        return ConnectionSet({}, 4)

    def allowed(self, src: str, dst: str, port: int | str | None = None, protocol: str = "TCP") -> bool:
        """Whether ``check(src, dst, port, protocol)`` (with this reachability's ``http``)
        allows the connection; same arguments, same errors, same answer.

        Services (``ns/svc/name``, cluster IPs, DNS names) and other host names are answered
        by ``check`` itself: it translates them to one backend or resolves them first.
        """
        from .._arguments import check_arguments
        from .._peers import check_port, peer_refs

        # check()'s own argument handling, step by step, so errors and names agree
        port = check_arguments(src, dst, port, protocol)
        if dst.count("/") >= 2 or _is_hostname(dst) or self._is_service(dst):
            return bool(self.cluster.check(src, dst, port, protocol, self.http).allowed)
        endpoints, host_pods = self.cluster.endpoints, self.cluster.host_network_pods
        port = check_port(endpoints, host_pods, dst, port, protocol)
        name = _PROTOCOL_ALIASES.get(str(protocol).upper())
        if name is None:
            raise PolicyError("protocol must be one of TCP, UDP, SCTP, ICMP, ICMPv6", field="protocol", value=protocol)
        src, dst = peer_refs(endpoints, host_pods, self.cluster.nodes, src, dst)
        s_unit, d_unit, fam = self._peer_pair(src, dst)
        if name == "ICMPV6" and fam == 4:
            # ICMPv6 in an IPv4 packet: a protocol conntrack does not know, dropped at any hook
            return s_unit.policy is None and d_unit.policy is None
        if name in ("ICMP", "ICMPV6"):
            name = "ICMP"
            number = int(port) if port is not None else (8 if fam == 4 else 128)
        elif port is None or not str(port).isdigit() or not 0 <= int(port) <= 65535:
            raise PolicyError("port must be within 0..65535", field="port", value=port)
        else:
            number = int(port)
        return self._pair_any(s_unit, d_unit, fam, number, name).allows(name, number)

    def explain(self, src: str, dst: str, port: int, protocol: str = "TCP") -> Any:
        """Why ``check(src, dst, port, protocol)`` allows or denies the connection: for an
        allowed one every policy rule that allows it (both hooks), for a denied one the
        smallest changes that would allow it (a peer added to a named rule, a port added, a
        label on the source, a deny removed, a new rule) with what else each would newly
        allow. Returns an :class:`~ciliumpy.reach.Explanation`."""
        from ._explain import explain

        return explain(self, src, dst, port, protocol)

    def _peer_pair(self, src: str, dst: str) -> tuple[_Unit, _Unit, int]:
        """The units ``check(src, dst, ...)`` would decide with, and the address family."""
        s_addrs, s_unit = self._peer(src)
        d_addrs, d_unit = self._peer(dst)
        pair = next(((a, b) for a in s_addrs for b in d_addrs if a.version == b.version), None)
        if pair is None:
            raise PolicyError(f"{src} and {dst} have no address family in common", value=(src, dst))
        fam = pair[0].version
        return s_unit or self._external_unit(pair[0]), d_unit or self._external_unit(pair[1]), fam

    def peer_connections(self, src: str, dst: str) -> ConnectionSet:
        """Every connection ``check`` would allow from ``src`` to ``dst`` (peer names as
        ``check`` takes them, not Services), over all ports and protocols."""
        s, d, fam = self._peer_pair(src, dst)
        if self.port is None and self.protocol is None:
            return self._pair_any(s, d, fam, 0, "TCP")
        tables = self._full_tables()
        eg = tables.table(s.policy, int(Direction.EGRESS), d.identity) if s.policy is not None else None
        ing = tables.table(d.policy, int(Direction.INGRESS), s.identity) if d.policy is not None else None
        return tables.connections(eg, ing, fam)

    def _pair_any(self, s: _Unit, d: _Unit, fam: int, port: int, name: str) -> ConnectionSet:
        """A pair's connections, also outside the computed scope (other ports, namespaces)."""
        in_scope = (self.port is None or self.port == port) and (self.protocol in (None, name))
        shown = s.members and d.members and not (s.external and d.external)
        if in_scope and shown and _pair_family(s, d) == fam:
            return self._pairs.get((s.index, d.index)) or ConnectionSet({}, fam)
        tables = self._tables if in_scope else self._full_tables()
        eg = tables.table(s.policy, int(Direction.EGRESS), d.identity) if s.policy is not None else None
        ing = tables.table(d.policy, int(Direction.INGRESS), s.identity) if d.policy is not None else None
        return tables.connections(eg, ing, fam)

    def _full_tables(self) -> TableCache:
        if self._full is None:
            self._full = self._table_cache({protocol_number(n, f) for n in PROTOCOL_NAMES for f in (4, 6)}, None)
        return self._full

    def _peer(self, who: str) -> tuple[tuple[IPAddress, ...], _Unit | None]:
        from .._cluster import HOST_IP_V4, HOST_IP_V6, WORLD_IP_V4, WORLD_IP_V6

        if "/" in who and ":" not in who:
            ep = self.cluster.endpoint(who)  # raises UnknownEndpointError naming known pods
            return ep.ips, self._ep_unit[who]
        if who == "world":
            return (WORLD_IP_V4, WORLD_IP_V6), None
        if who == "host":
            return (HOST_IP_V4, HOST_IP_V6), None
        try:
            addr = ipaddress.ip_address(who)
        except ValueError:
            raise UnknownEndpointError(f"{who!r} is neither namespace/pod nor an IP address") from None
        owner = self._ip_owner.get(addr)
        return (addr,), (self._ep_unit[owner] if owner is not None else None)

    def address_of(self, node: str) -> str:
        """A peer name ``check`` accepts for a node: the endpoint's ``ns/name``, ``world``,
        ``host``, or an address of the node's prefixes that the ipcache maps to its identity."""
        unit = self._unit(node)
        if not unit.external or node in ("world", "host"):
            return node
        found = self._addresses.get(node)
        if found is not None:
            return found
        raise UnknownEndpointError(f"no address of {node!r} maps to its identity {unit.identity}")

    def _find_address(self, num: int, prefixes: list[Any], spans: dict[int, list[tuple[int, int]]]) -> str | None:
        """An address of ``prefixes`` that the ipcache maps to identity ``num``: the first one
        no more specific ipcache prefix covers (None when excepts carve out all of it).
        ``spans`` are the ipcache prefixes per family as sorted (first, last) integers."""
        for net in sorted(prefixes, key=lambda n: (n.version, -n.prefixlen)):
            first, last = int(net.network_address), int(net.broadcast_address)
            family = spans[net.version]
            cur = first
            # prefixes nest or are disjoint: the ones starting inside this one lie inside it
            # islice, not a slice: a slice would copy the rest of the list for every prefix
            for lo, hi in itertools.islice(family, bisect.bisect_left(family, (first, -1)), None):
                if lo > last or lo > cur:
                    break
                if hi <= last and (lo, hi) != (first, last):  # not the prefix itself nor a wider one
                    cur = max(cur, hi + 1)
            if cur <= last:
                addr = ipaddress.ip_address(cur)
                if self.cluster.lookup_ip(addr).id == num:
                    return str(addr)
        return None

    def node_of(self, who: str) -> str:
        """The node a ``check`` peer name (``ns/pod``, ``world``, ``host``, an address)
        falls into, as a source towards an IPv4-and-IPv6 destination would see it."""
        addrs, unit = self._peer(who)
        if unit is None:
            unit = self._external_unit(addrs[0])
        return unit.members[0] if unit.members else who

    def _external_unit(self, addr: IPAddress) -> _Unit:
        num = self.cluster.lookup_ip(addr).id
        unit = self._ext_unit.get((num, addr.version))
        if unit is None:
            unit = self._ext_unit[(num, addr.version)] = _Unit(len(self._units), num, None, (addr.version,), True)
            self._units.append(unit)
        return unit

    def _is_service(self, who: str) -> bool:
        try:
            addr = ipaddress.ip_address(who)
        except ValueError:
            return False
        return any(addr in svc.cluster_ips for svc in self.cluster.services)

    def _unit(self, node: str) -> _Unit:
        unit = self._unit_of.get(node)
        if unit is None:
            known = ", ".join(list(self._node_attrs)[:10])
            raise UnknownEndpointError(f"no node {node!r} in this reachability; known: {known}")
        return unit

    def edges(self) -> Iterator[tuple[str, str, ConnectionSet]]:
        """Every (source, destination, connections) with at least one allowed connection."""
        units = self._units
        for (si, di), cs in self._pairs.items():
            for s in units[si].members:
                for d in units[di].members:
                    if s != d:
                        yield s, d, cs

    def __len__(self) -> int:
        """Number of allowed (source, destination) pairs (graph edges)."""
        units = self._units
        total = 0
        for si, di in self._pairs:
            n, m = len(units[si].members), len(units[di].members)
            total += n * m - (n if si == di else 0)
        return total

    # -- graph questions ---------------------------------------------------------------
    def _successor_units(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for si, di in self._pairs:
            out.setdefault(si, []).append(di)
        return out

    def reachable_from(
        self, endpoint: str, hops: int | None = None, *, through_external: bool = False
    ) -> dict[str, int]:
        """The blast radius of ``endpoint``: every node it can reach in at most ``hops``
        connections (None: any number), with the fewest hops needed.

        A compromised pod that may connect to B, which may connect to C, reaches C in two
        hops. The start itself is not listed. External peers (world, host, CIDRs) end a
        path but are not stepped through unless ``through_external``: "world" is not one
        machine an attacker holds.
        """
        if hops is not None and hops < 0:
            raise PolicyError("hops must be >= 0", field="hops", value=hops)
        self._unit(endpoint)
        starts = {u.index for u in self._node_units[endpoint]}
        succ = self._successor_units()
        dist_unit: dict[int, int] = dict.fromkeys(starts, 0)
        queue = deque(starts)
        while queue:
            u = queue.popleft()
            if hops is not None and dist_unit[u] >= hops:
                continue
            if u not in starts and self._units[u].external and not through_external:
                continue
            for v in succ.get(u, ()):
                if v not in dist_unit:
                    dist_unit[v] = dist_unit[u] + 1
                    queue.append(v)
        out: dict[str, int] = {}
        for ui in starts:
            # members of the start's own unit are one hop away when the unit reaches itself
            if (ui, ui) in self._pairs:
                for m in self._units[ui].members:
                    out[m] = 1
        for ui, dist in dist_unit.items():
            if ui in starts:
                continue
            for m in self._units[ui].members:
                out[m] = min(dist, out.get(m, dist))
        out.pop(endpoint, None)
        return dict(sorted(out.items(), key=lambda kv: (kv[1], kv[0])))

    def paths(
        self, src: str, dst: str, *, max_hops: int | None = None, through_external: bool = False
    ) -> list[list[str]]:
        """Paths of connections from ``src`` to ``dst``: all shortest ones, or with
        ``max_hops`` every simple path of at most that many hops. Empty if unreachable.
        External peers are not stepped through unless ``through_external``."""
        import networkx as nx

        self._unit(src)
        self._unit(dst)
        graph = self.to_networkx()
        if not through_external:
            keep = [n for n, a in self._node_attrs.items() if a["kind"] == "endpoint" or n in (src, dst)]
            graph = graph.subgraph(keep)
        if max_hops is not None:
            return sorted(nx.all_simple_paths(graph, src, dst, cutoff=max_hops), key=lambda p: (len(p), p))
        try:
            return sorted(nx.all_shortest_paths(graph, src, dst))
        except nx.NetworkXNoPath:
            return []

    def members(self, group: str | Mapping[str, str]) -> list[str]:
        """Nodes of a group: a namespace name, a node name (``ns/pod``, ``world``, a CIDR),
        labels (``"app=web,tier=db"`` or a mapping), or ``ns:labels`` (``"prod:app=web"``)."""
        if isinstance(group, Mapping):
            ns, want = None, dict(group)
        elif group in self._node_attrs:
            return [group]
        elif "=" in group:
            ns, _, text = group.rpartition(":") if ":" in group.split("=", 1)[0] else ("", "", group)
            want = dict(part.strip().split("=", 1) for part in text.split(",") if part.strip())
            ns = ns or None
        else:
            found = [n for n, a in self._node_attrs.items() if a["namespace"] == group]
            if not found and group not in self.cluster.namespaces:
                raise UnknownEndpointError(f"{group!r} is neither a namespace nor a node of this reachability")
            return found
        return [
            n
            for n, a in self._node_attrs.items()
            if a["kind"] == "endpoint"
            and (ns is None or a["namespace"] == ns)
            and all(a["labels"].get(k) == v for k, v in want.items())
        ]

    def crossing(self, a: str | Mapping[str, str], b: str | Mapping[str, str]) -> list[tuple[str, str, ConnectionSet]]:
        """Every allowed connection between the groups ``a`` and ``b``, either direction."""
        ma, mb = set(self.members(a)), set(self.members(b))
        out: list[tuple[str, str, ConnectionSet]] = []
        for src_set, dst_set in ((ma, mb), (mb, ma)):
            su = {u.index for n in src_set for u in self._node_units[n]}
            du = {u.index for n in dst_set for u in self._node_units[n]}
            for (si, di), cs in self._pairs.items():
                if si in su and di in du:
                    for s in self._units[si].members:
                        if s in src_set:
                            out.extend((s, d, cs) for d in self._units[di].members if d in dst_set and d != s)
        return sorted(out, key=lambda t: (t[0], t[1]))

    def isolated(self, a: str | Mapping[str, str], b: str | Mapping[str, str]) -> bool:
        """True when no connection is allowed between groups ``a`` and ``b`` in either
        direction (see :meth:`members` for how groups are named; :meth:`crossing` lists
        what breaks the isolation)."""
        return not self.crossing(a, b)

    # -- exports -----------------------------------------------------------------------
    def to_networkx(self) -> Any:
        """A ``networkx.DiGraph``: nodes are endpoints (``ns/name``) and external peers with
        ``kind``, ``namespace``, ``labels``, ``identity``; edges are allowed pairs with
        ``ports`` (ranges per protocol), ``l7`` (proxy rules), ``policies`` (deciding
        policies) and ``connections`` (the :class:`ConnectionSet`). The graph is a copy."""
        import networkx as nx

        graph = nx.DiGraph()
        graph.add_nodes_from((n, dict(a)) for n, a in self._node_attrs.items())
        # Fill the adjacency directly (networkx's documented dict-of-dicts layout): per-edge
        # add_edge checks dominate the time of a graph with a million edges otherwise.
        with _no_gc():
            self._fill_edges(graph)
        clear = getattr(nx, "_clear_cache", None)
        if clear is not None:
            clear(graph)
        return graph

    def _fill_edges(self, graph: Any) -> None:
        succ, pred = graph._succ, graph._pred
        units = self._units
        templates: dict[int, dict[str, Any]] = {}
        by_source: dict[int, list[tuple[list[str], dict[str, Any]]]] = {}
        for (si, di), cs in self._pairs.items():
            template = templates.get(id(cs))
            if template is None:
                template = templates[id(cs)] = {
                    "ports": cs.ports,
                    "l7": cs.l7,
                    "policies": _policy_names(cs),
                    "connections": cs,
                }
            by_source.setdefault(si, []).append((units[di].members, template))
        for si, targets in by_source.items():
            for s in units[si].members:
                # one dict per edge, shared by the successor and predecessor views
                row = {d: template.copy() for dsts, template in targets for d in dsts}
                row.pop(s, None)
                succ[s].update(row)
                for d, attrs_ in row.items():
                    pred[d][s] = attrs_

    def matrix(self) -> dict[str, dict[str, str]]:
        """``{src: {dst: "TCP 80; UDP 53"}}`` over every node ('' where nothing is allowed)."""
        nodes = self.nodes
        out = {s: dict.fromkeys(nodes, "") for s in nodes}
        for s, d, cs in self.edges():
            out[s][d] = cs.text()
        return out

    def to_pandas(self) -> Any:
        """The :meth:`matrix` as a ``pandas.DataFrame`` (rows: sources, columns: destinations)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("to_pandas() needs pandas: pip install 'ciliumpy[pandas]'") from exc
        mat = self.matrix()
        return pd.DataFrame.from_dict(mat, orient="index")[list(mat)]

    def to_dot(self) -> str:
        """The graph in Graphviz DOT: endpoints as boxes clustered by namespace, external
        peers as ellipses, edges labelled with their ports."""
        lines = ["digraph reachability {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
        by_ns: dict[str, list[str]] = {}
        for n, a in self._node_attrs.items():
            by_ns.setdefault(a["namespace"], []).append(n)
        for i, (ns, names) in enumerate(sorted(by_ns.items())):
            if ns:
                lines.append(f"  subgraph cluster_{i} {{")
                lines.append(f"    label={_dot(ns)};")
                lines.extend(f"    {_dot(n)} [shape=box, label={_dot(n.split('/', 1)[1])}];" for n in names)
                lines.append("  }")
            else:
                lines.extend(f"  {_dot(n)} [shape=ellipse];" for n in names)
        for s, d, cs in self.edges():
            lines.append(f"  {_dot(s)} -> {_dot(d)} [label={_dot(cs.text())}];")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def plot(self, ax: Any = None, *, layout: str = "spring", seed: int = 0) -> Any:
        """Draw the graph with matplotlib (the ``plot`` extra); returns the Axes.

        Endpoints are coloured by namespace, external peers are grey; edge labels are ports.
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("plot() needs matplotlib: pip install 'ciliumpy[plot]'") from exc
        import networkx as nx

        graph = self.to_networkx()
        if ax is None:
            size = max(6.0, min(20.0, 2.0 + 0.6 * graph.number_of_nodes()))
            _fig, ax = plt.subplots(figsize=(size, size * 0.7))
        if layout == "circular":
            pos = nx.circular_layout(graph)
        elif layout == "shell":
            pos = nx.shell_layout(graph)
        else:
            pos = nx.spring_layout(graph, seed=seed, k=1.5 / max(1, graph.number_of_nodes()) ** 0.5)
        namespaces = sorted({a["namespace"] for a in self._node_attrs.values() if a["namespace"]})
        palette = plt.get_cmap("tab10")
        colours = [
            palette(namespaces.index(a["namespace"]) % 10) if a["namespace"] else (0.75, 0.75, 0.75, 1.0)
            for _n, a in graph.nodes(data=True)
        ]
        nx.draw_networkx_nodes(graph, pos, ax=ax, node_color=colours, node_size=900, alpha=0.9)
        nx.draw_networkx_labels(graph, pos, ax=ax, font_size=8)
        nx.draw_networkx_edges(graph, pos, ax=ax, arrows=True, arrowsize=14, node_size=900, edge_color="#555555")
        if graph.number_of_edges() <= 60:
            labels = {(s, d): a["connections"].text() for s, d, a in graph.edges(data=True)}
            nx.draw_networkx_edge_labels(graph, pos, edge_labels=labels, ax=ax, font_size=7)
        ax.margins(0.12)  # room for the labels of nodes on the rim
        ax.set_axis_off()
        ax.set_title(self._title())
        return ax

    # -- notebook ----------------------------------------------------------------------
    def _title(self) -> str:
        scope = []
        if self.protocol:
            scope.append(self.protocol)
        if self.port is not None:
            scope.append(f"port {self.port}")
        if self.http:
            scope.append(f"HTTP {self.http.get('method', 'GET')} {self.http.get('path', '/')}")
        if self.namespaces is not None:
            scope.append("namespaces " + ", ".join(sorted(self.namespaces)))
        return "reachability" + (f" ({'; '.join(scope)})" if scope else "")

    def __repr__(self) -> str:
        eps = sum(1 for a in self._node_attrs.values() if a["kind"] == "endpoint")
        return (
            f"<Reachability {self._title()}: {eps} endpoints, {len(self._node_attrs) - eps} external peers, "
            f"{len(self)} allowed pairs>"
        )

    def _repr_html_(self) -> str:
        nodes = self.nodes
        head = f"<p>{html.escape(repr(self))}</p>"
        if len(nodes) ** 2 > _HTML_CELLS:
            rows: list[str] = []
            for s, d, cs in self.edges():
                if len(rows) >= 200:
                    break
                rows.append(
                    f"<tr><td>{html.escape(s)}</td><td>{html.escape(d)}</td><td>{html.escape(cs.text())}</td></tr>"
                )
            more = len(self) - len(rows)
            tail = f"<p>… and {more} more pairs</p>" if more > 0 else ""
            header = "<tr><th>source</th><th>destination</th><th>allowed</th></tr>"
            return f"{head}<table>{header}{''.join(rows)}</table>{tail}"[:_HTML_CHARS]
        mat = self.matrix()
        cells = ["<tr><th>src \\ dst</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in nodes) + "</tr>"]
        for s in nodes:
            tds = "".join(
                f'<td style="background:{"#e8f5e9" if mat[s][d] else "#fafafa"}">{html.escape(mat[s][d])}</td>'
                for d in nodes
            )
            cells.append(f"<tr><th>{html.escape(s)}</th>{tds}</tr>")
        return f"{head}<table>{''.join(cells)}</table>"[:_HTML_CHARS]

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": repr(self), "text/html": self._repr_html_()}


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building large acyclic structures: hundreds
    of thousands of new dicts otherwise trigger collections that re-scan all of them."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _policy_names(cs: ConnectionSet) -> tuple[str, ...]:
    names: dict[str, None] = {}
    for o in cs.policies:
        obj = f"{o.namespace}/{o.name}" if o.namespace else o.name
        names[f"{o.kind} {obj}"] = None
    return tuple(names)


def _dot(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_hostname(dst: str) -> bool:
    if "/" in dst or dst in ("world", "host"):
        return False
    try:
        ipaddress.ip_address(dst)
    except ValueError:
        return True
    return False


def _check_port(port: int | None) -> int | None:
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise PolicyError("port must be within 0..65535", field="port", value=port)
    return port


def _check_protocol(protocol: str) -> str:
    name = _PROTOCOL_ALIASES.get(str(protocol).upper())
    if name is None:
        raise PolicyError("protocol must be one of TCP, UDP, SCTP, ICMP", field="protocol", value=protocol)
    return "ICMP" if name == "ICMPV6" else name


def _check_namespaces(cluster: Cluster, namespaces: Iterable[str] | None) -> frozenset[str] | None:
    if namespaces is None:
        return None
    if isinstance(namespaces, str):
        namespaces = [namespaces]
    chosen = frozenset(namespaces)
    known = set(cluster.namespaces)
    unknown = sorted(chosen - known)
    if unknown:
        raise PolicyError(f"unknown namespaces; known: {', '.join(sorted(known))}", field="namespaces", value=unknown)
    return chosen
