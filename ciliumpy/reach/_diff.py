"""Semantic diff and containment of two clusters' reachability.

Two policy sets are compared by what they allow, not by their text: the connections of
every pair of nodes (endpoints by ``ns/name``, external peers by node name) in one
reachability are set against the other's, port range by port range, and every difference
comes with a witness connection that ``check`` decides differently on the two sides.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ..exceptions import CiliumpyError
from ._engine import PROTOCOL_NAMES, ConnectionSet
from ._reachability import Reachability

if TYPE_CHECKING:
    from .._cluster import Cluster

__all__ = ["Change", "Connection", "Containment", "ReachDiff", "contains", "diff", "equivalent"]

Ranges = tuple[tuple[int, int], ...]


@attrs.frozen
class Connection:
    """One new connection: what ``check(src, dst, port, protocol)`` asks."""

    src: str
    dst: str
    port: int
    protocol: str = "TCP"

    def check(self, cluster: Cluster) -> Any:
        """The cluster's :class:`~ciliumpy.Verdict` for this connection."""
        return cluster.check(self.src, self.dst, self.port, self.protocol)

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst} {self.protocol}/{self.port}"


@attrs.frozen
class Change:
    """Connections between one pair of nodes that one side allows and the other does not.

    ``ports`` are the ranges per protocol; ``witness`` one such connection; ``policies``
    the policies whose rules allow it on the side that allows it.
    """

    src: str
    dst: str
    ports: Mapping[str, Ranges]
    witness: Connection
    policies: tuple[str, ...]

    def text(self) -> str:
        return "; ".join(f"{p} {','.join(_span(lo, hi) for lo, hi in r)}" for p, r in self.ports.items())

    def __str__(self) -> str:
        via = f" (via {', '.join(self.policies)})" if self.policies else ""
        return f"{self.src} -> {self.dst}: {self.text()}{via}"


@attrs.frozen
class ReachDiff:
    """What changed between two reachabilities: ``added`` (allowed only after) and
    ``removed`` (allowed only before) connections, one :class:`Change` per node pair."""

    added: tuple[Change, ...]
    removed: tuple[Change, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)

    def by_policy(self) -> dict[str, dict[str, list[Change]]]:
        """``{policy: {"added": [...], "removed": [...]}}``: added connections under the
        policies that now allow them, removed ones under those that allowed them before."""
        out: dict[str, dict[str, list[Change]]] = {}
        for kind, changes in (("added", self.added), ("removed", self.removed)):
            for ch in changes:
                for pol in ch.policies or ("(no policy)",):
                    out.setdefault(pol, {"added": [], "removed": []})[kind].append(ch)
        return dict(sorted(out.items()))

    def by_peer(self) -> dict[str, dict[str, list[Change]]]:
        """``{node: {"added": [...], "removed": [...]}}`` for every node a change touches
        (as source or destination)."""
        out: dict[str, dict[str, list[Change]]] = {}
        for kind, changes in (("added", self.added), ("removed", self.removed)):
            for ch in changes:
                for node in dict.fromkeys((ch.src, ch.dst)):
                    out.setdefault(node, {"added": [], "removed": []})[kind].append(ch)
        return dict(sorted(out.items()))

    def text(self, limit: int = 50) -> str:
        lines = [f"{len(self.added)} pairs gained connections, {len(self.removed)} lost some"]
        for sign, changes in (("+", self.added), ("-", self.removed)):
            for ch in changes[:limit]:
                lines.append(f"{sign} {ch}  [witness: {ch.witness}]")
            if len(changes) > limit:
                lines.append(f"{sign} … {len(changes) - limit} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(self.text(limit=100))[:100_000]}</pre>"


@attrs.frozen
class Containment:
    """The answer of :func:`equivalent` or :func:`contains`: truthy when it holds, else
    ``counterexample`` is a connection one side allows and the other does not
    (``allowed_by`` says which: ``"a"`` or ``"b"``)."""

    holds: bool
    counterexample: Connection | None = None
    allowed_by: str | None = None

    def __bool__(self) -> bool:
        return self.holds

    def __str__(self) -> str:
        if self.holds:
            return "holds"
        return f"does not hold: {self.counterexample} is allowed only by {self.allowed_by}"


def _as_reachability(obj: Any) -> Reachability:
    if isinstance(obj, Reachability):
        return obj
    from .._cluster import Cluster

    if not isinstance(obj, Cluster):
        obj = Cluster.from_manifests(*(obj if isinstance(obj, list | tuple) else (obj,)))
    reach: Reachability = obj.reachability()
    return reach


def _subtract(a: Ranges, b: Ranges) -> Ranges:
    """Ranges of ``a`` not covered by ``b`` (both sorted, disjoint, inclusive)."""
    out: list[tuple[int, int]] = []
    j = 0
    for lo, hi in a:
        cur = lo
        while j < len(b) and b[j][1] < cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] <= hi:
            blo, bhi = b[k]
            if blo > cur:
                out.append((cur, blo - 1))
            cur = max(cur, bhi + 1)
            k += 1
        if cur <= hi:
            out.append((cur, hi))
    return tuple(out)


def _only_in(a: ConnectionSet | None, b: ConnectionSet | None) -> dict[str, Ranges]:
    if a is None:
        return {}
    out: dict[str, Ranges] = {}
    for proto in PROTOCOL_NAMES:
        mine = a.ports.get(proto, ())
        if not mine:
            continue
        left = _subtract(mine, b.ports.get(proto, ()) if b is not None else ())
        if left:
            out[proto] = left
    return out


def _change(src: str, dst: str, witness: tuple[str, str], ports: dict[str, Ranges], cs: ConnectionSet) -> Change:
    proto, ranges = next(iter(ports.items()))
    port = ranges[0][0]
    names: dict[str, None] = {}
    found = cs.outcomes(proto, port)
    if found is not None:
        for oc in found:
            for o in sorted(oc.origins):
                if o.kind != "reserved":
                    obj = f"{o.namespace}/{o.name}" if o.namespace else o.name
                    names[f"{o.kind} {obj}"] = None
    return Change(src, dst, ports, Connection(witness[0], witness[1], port, proto), tuple(names))


def _probes(a: Reachability, b: Reachability) -> list[str]:
    """Peer names standing for every external region of either side: a region is where
    both sides' external nodes intersect, and each side's node addresses fall into one."""
    out: dict[str, None] = {}
    for r in (a, b):
        for node, attrs_ in r._node_attrs.items():
            if attrs_["kind"] != "endpoint":
                out[r.address_of(node)] = None
    return list(out)


def _peer_connections(r: Reachability, src: str, dst: str) -> ConnectionSet | None:
    """``r``'s connections between two peers; None when ``check`` could not ask (no common
    address family, or a pod that is not in ``r``)."""
    try:
        return r.peer_connections(src, dst)
    except CiliumpyError:
        return None


def _differences(
    a: Reachability, b: Reachability
) -> Iterator[tuple[str, str, tuple[str, str], dict[str, Ranges], ConnectionSet]]:
    """Connections ``a`` allows and ``b`` does not: (a's source node, a's destination node,
    the peer names to check, ranges per protocol, a's connections)."""
    probes = _probes(a, b)
    kinds = {n: at["kind"] for n, at in a._node_attrs.items()}
    endpoints = [n for n, kind in kinds.items() if kind == "endpoint"]
    candidates: list[tuple[str, str, str, str]] = [
        (s, d, s, d) for s, d, _cs in a.edges() if kinds[s] == kinds[d] == "endpoint"
    ]
    for e in endpoints:
        for p in probes:
            candidates.append((e, a.node_of(p), e, p))
            candidates.append((a.node_of(p), e, p, e))
    for s, d, ps, pd in sorted(candidates):
        mine = _peer_connections(a, ps, pd)
        if not mine:
            continue
        theirs = _peer_connections(b, ps, pd)
        if theirs is mine:
            continue
        ports = _only_in(mine, theirs)
        if ports:
            yield s, d, (ps, pd), ports, mine


def diff(before: Any, after: Any) -> ReachDiff:
    """The connections ``after`` allows that ``before`` did not, and the reverse.

    ``before``/``after`` are clusters, reachabilities, or manifests (paths, YAML text,
    dicts) to build clusters from. Each :class:`Change` names a node pair, the port ranges
    per protocol, a witness connection (peer names ``check`` accepts) and the policies that
    allow it where it is allowed. External peers are compared region by region: an address
    that is "world" on one side and a CIDR node on the other is checked on both.

    >>> import ciliumpy
    >>> a = ciliumpy.Cluster()
    >>> _ = a.add_endpoint("prod/web", labels={"app": "web"})
    >>> _ = a.add_endpoint("prod/db", labels={"app": "db"})
    >>> b = ciliumpy.Cluster.from_manifests(a.to_manifests())
    >>> _ = b.apply({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
    ...     "metadata": {"name": "db", "namespace": "prod"},
    ...     "spec": {"endpointSelector": {"matchLabels": {"app": "db"}},
    ...              "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "web"}}],
    ...                           "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}]}]}})
    >>> d = ciliumpy.diff(a, b)
    >>> [str(c.witness) for c in d.removed if c.src == "prod/web"]
    ['prod/web -> prod/db TCP/0']
    """
    ra, rb = _as_reachability(before), _as_reachability(after)
    added = tuple(_change(*item) for item in _differences(rb, ra))
    removed = tuple(_change(*item) for item in _differences(ra, rb))
    return ReachDiff(added=added, removed=removed)


def contains(a: Any, b: Any) -> Containment:
    """Whether ``a`` allows every connection ``b`` allows (``b``'s reach is within
    ``a``'s); otherwise a counterexample connection that only ``b`` allows."""
    for _s, _d, (ps, pd), ports, _cs in _differences(_as_reachability(b), _as_reachability(a)):
        proto, ranges = next(iter(ports.items()))
        return Containment(False, Connection(ps, pd, ranges[0][0], proto), "b")
    return Containment(True)


def equivalent(a: Any, b: Any) -> Containment:
    """Whether ``a`` and ``b`` allow exactly the same connections; otherwise a
    counterexample allowed by only one of them (``allowed_by``)."""
    ra, rb = _as_reachability(a), _as_reachability(b)
    for left, right, name in ((ra, rb, "a"), (rb, ra, "b")):
        for _s, _d, (ps, pd), ports, _cs in _differences(left, right):
            proto, ranges = next(iter(ports.items()))
            return Containment(False, Connection(ps, pd, ranges[0][0], proto), name)
    return Containment(True)


def _span(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"
