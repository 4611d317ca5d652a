"""Test helpers for projects that keep Cilium policies: assertions, flows and cluster specs.

Everything here is plain Python (no pytest, no Hypothesis), so the helpers work under any test
runner; the pytest plugin (:mod:`ciliumpy.pytest_plugin`) re-exports them and adds fixtures,
and :mod:`ciliumpy.strategies` generates :class:`ClusterSpec` and :class:`Flow` values.

Every assertion helper returns what it checked on success and raises :class:`AssertionError`
on failure with the verdict's :meth:`~ciliumpy.Verdict.explain`, which names the policies and
rules responsible, e.g.::

    >>> from ciliumpy import Cluster
    >>> c = Cluster()
    >>> _ = c.add_endpoint("prod/web", labels={"app": "web"})
    >>> _ = c.add_endpoint("prod/db", labels={"app": "db"}, ports=[("pg", 5432, "TCP")])
    >>> assert_allowed(c, "prod/web", "prod/db", 5432).verdict
    'FORWARDED'
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import yaml

from ._cluster import Cluster
from ._datapath import Direction, IPAddress, MapStateKey, Packet, Protocol
from ._manifests import load_objects
from ._model import (
    CiliumCIDRGroup,
    CiliumClusterwideNetworkPolicy,
    CiliumNetworkPolicy,
    Endpoint,
    EndpointSlice,
    Namespace,
    NetworkPolicy,
    Node,
    Service,
)
from ._verdict import Verdict
from .backends import Backend
from .exceptions import UnknownEndpointError

__all__ = [
    "ClusterSpec",
    "Flow",
    "assert_allowed",
    "assert_denied",
    "assert_isolated",
    "assert_reachable",
    "labelled_map_state",
    "port_probes",
]

PolicyObject = CiliumNetworkPolicy | CiliumClusterwideNetworkPolicy | NetworkPolicy

#: Peers that are not pods but may be a flow's source or destination.
SPECIAL_PEERS = ("world", "host")

_L4 = ("TCP", "UDP", "SCTP")
# Fresh source ports for DNS flows, so no query is taken for a reply of an earlier one.
_SOURCE_PORTS = itertools.count()
_ICMP_NAMES = {"ICMP", "ICMPV4", "ICMPV6"}


# --------------------------------------------------------------------------------------------
# the parts of a cluster, printable as kubectl-ready YAML


def _tuple(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(items)


@attrs.frozen(kw_only=True)
class ClusterSpec:
    """The parts of a cluster: namespaces, pods, policies (and optionally nodes, services,
    CIDR groups).

    A spec is an immutable value that prints as the manifests that rebuild it, so a failing
    property-test example can be pasted into a reproducer as is. :meth:`build` makes a
    :class:`~ciliumpy.Cluster` from it on any backend.

    >>> spec = ClusterSpec.from_manifests('''
    ... apiVersion: v1
    ... kind: Pod
    ... metadata: {name: web, namespace: prod, labels: {app: web}}
    ... ''')
    >>> [e.ref for e in spec.endpoints]
    ['prod/web']
    >>> spec.build().check("world", "prod/web", 80).allowed
    True
    """

    namespaces: tuple[Namespace, ...] = attrs.field(default=(), converter=_tuple)
    endpoints: tuple[Endpoint, ...] = attrs.field(default=(), converter=_tuple)
    policies: tuple[PolicyObject, ...] = attrs.field(default=(), converter=_tuple)
    nodes: tuple[Node, ...] = attrs.field(default=(), converter=_tuple)
    services: tuple[Service | EndpointSlice, ...] = attrs.field(default=(), converter=_tuple)  # and their slices
    cidr_groups: tuple[CiliumCIDRGroup, ...] = attrs.field(default=(), converter=_tuple)

    @classmethod
    def from_manifests(cls, *sources: Any) -> ClusterSpec:
        """Read YAML text, paths, directories, dicts or model objects (as ``Cluster.apply``)."""
        parts: dict[str, list[Any]] = {
            "namespaces": [],
            "endpoints": [],
            "policies": [],
            "nodes": [],
            "services": [],
            "cidr_groups": [],
        }
        for obj in load_objects(sources):
            if isinstance(obj, Namespace):
                parts["namespaces"].append(obj)
            elif isinstance(obj, Endpoint):
                parts["endpoints"].append(obj)
            elif isinstance(obj, Node):
                parts["nodes"].append(obj)
            elif isinstance(obj, Service | EndpointSlice):
                parts["services"].append(obj)
            elif isinstance(obj, CiliumCIDRGroup):
                parts["cidr_groups"].append(obj)
            else:
                parts["policies"].append(obj)
        return cls(**parts)

    @classmethod
    def from_cluster(cls, cluster: Cluster) -> ClusterSpec:
        """The parts of an existing cluster."""
        return cls(
            namespaces=cluster.namespaces.values(),
            endpoints=cluster.endpoints.values(),
            policies=cluster.policies,
            nodes=cluster.nodes.values(),
            services=(*cluster.services, *cluster.service_table.slices.values()),
            cidr_groups=[
                CiliumCIDRGroup.from_manifest(m) for m in cluster.to_manifests() if m["kind"] == CiliumCIDRGroup.KIND
            ],
        )

    @property
    def objects(self) -> tuple[Any, ...]:
        """Every object, in the order :meth:`build` applies them."""
        return (*self.namespaces, *self.nodes, *self.services, *self.cidr_groups, *self.endpoints, *self.policies)

    def build(self, backend: str | Backend | None = None, **options: Any) -> Cluster:
        """A new :class:`~ciliumpy.Cluster` holding these objects (one atomic ``apply``).

        ``options`` are passed to the ``Cluster`` constructor (``dual_stack=True`` …).
        """
        cluster = Cluster(backend=backend, **options)
        try:
            if self.objects:
                cluster.apply(*self.objects)
        except BaseException:
            cluster.close()
            raise
        return cluster

    def to_manifests(self) -> list[dict[str, Any]]:
        """Every object as a manifest ``kubectl apply`` accepts."""
        return [obj.to_manifest() for obj in self.objects]

    def to_yaml(self) -> str:
        """The manifests as one multi-document YAML text."""
        return yaml.safe_dump_all(self.to_manifests(), sort_keys=False, default_flow_style=None)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis (and IPython) print through this hook; show the manifests, not fields.
        printer.text(repr(self))

    def __repr__(self) -> str:
        if not self.objects:
            return "ClusterSpec()"
        text = self.to_yaml()
        if "'''" in text:
            return f"ClusterSpec.from_manifests({text!r})"
        return f"ClusterSpec.from_manifests(r'''\n{text}''')"


# --------------------------------------------------------------------------------------------
# flows


@attrs.frozen(kw_only=True)
class Flow:
    """One new connection to ask a cluster about.

    ``src``/``dst`` are ``"namespace/pod"``, ``"world"``, ``"host"`` or an IP address.
    ``port`` is the ICMP type for ICMP. ``http`` is a request for the L7 proxy
    (``{"method": "GET", "path": "/"}``); ``dns`` names the query a DNS flow carries
    (protocol UDP, port 53).

    >>> from ciliumpy import Cluster
    >>> c = Cluster()
    >>> _ = c.add_endpoint("prod/web")
    >>> Flow(src="world", dst="prod/web", port=80).check(c).verdict
    'FORWARDED'
    """

    src: str
    dst: str
    protocol: str = "TCP"
    port: int | None = None
    http: Mapping[str, Any] | None = attrs.field(default=None, hash=False)
    dns: str | None = None

    def check(self, cluster: Cluster) -> Verdict:
        """The cluster's verdict on this flow (``Cluster.check``).

        A DNS flow is the UDP packet carrying the query; where the port is redirected to the
        DNS proxy, the query name is judged against the ``rules.dns`` that apply.
        """
        if self.dns is None:
            return cluster.check(self.src, self.dst, self.port, self.protocol, http=self.http)
        from ._l7 import DNSQuery

        src_ip, dst_ip = _address_pair(cluster, self.src, self.dst)
        packet = Packet(
            src_ip,
            dst_ip,
            int(Protocol.UDP),
            sport=32768 + next(_SOURCE_PORTS) % 28000,
            dport=53 if self.port is None else self.port,
            tcp_flags=0,
        )
        return cluster.evaluate(packet, request=DNSQuery(self.dns), probe=True)

    def __str__(self) -> str:
        proto = self.protocol.upper()
        where = proto if self.port is None else f"{proto}/{self.port}"
        text = f"{self.src} -> {self.dst} {where}"
        if self.http is not None:
            text += f" {self.http.get('method', 'GET')} {self.http.get('path', '/')}"
        if self.dns is not None:
            text += f" DNS {self.dns}"
        return text


# --------------------------------------------------------------------------------------------
# assertions


def _flow_text(src: str, dst: str, port: int | None, protocol: str, http: Mapping[str, Any] | None) -> str:
    return str(Flow(src=src, dst=dst, port=port, protocol=protocol, http=http))


def _outcome(verdict: Verdict) -> str:
    text = verdict.verdict
    if verdict.drop_reason is not None:
        text += f" ({verdict.drop_reason.value} {verdict.drop_reason.text})"
    if verdict.http_status:
        text += f" HTTP {verdict.http_status}"
    return text


def _responsible(verdict: Verdict) -> str:
    rules = verdict.rules
    return "; ".join(rules) if rules else "no policy (default)"


def assert_allowed(
    cluster: Cluster,
    src: str,
    dst: str,
    port: int | None = None,
    protocol: str = "TCP",
    http: Mapping[str, Any] | None = None,
) -> Verdict:
    """Assert that ``src`` may open a connection to ``dst`` (L7 included when ``http``).

    Returns the verdict; the failure message carries ``Verdict.explain()``.

    >>> from ciliumpy import Cluster
    >>> c = Cluster()
    >>> _ = c.add_endpoint("prod/web")
    >>> assert_allowed(c, "world", "prod/web", 80).allowed
    True
    """
    __tracebackhide__ = True
    verdict = cluster.check(src, dst, port, protocol, http=http)
    if not verdict.allowed:
        raise AssertionError(
            f"expected {_flow_text(src, dst, port, protocol, http)} to be allowed, "
            f"but it was {_outcome(verdict)}; decided by {_responsible(verdict)}\n"
            f"{verdict.explain()}"
        )
    return verdict


def assert_denied(
    cluster: Cluster,
    src: str,
    dst: str,
    port: int | None = None,
    protocol: str = "TCP",
    http: Mapping[str, Any] | None = None,
) -> Verdict:
    """Assert that the flow is dropped (or, with ``http``, refused by the L7 proxy).

    >>> from ciliumpy import Cluster
    >>> c = Cluster()
    >>> _ = c.add_endpoint("prod/db", labels={"app": "db"})
    >>> _ = c.apply({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
    ...     "metadata": {"name": "lockdown", "namespace": "prod"},
    ...     "spec": {"endpointSelector": {}, "ingress": [{}]}})
    >>> assert_denied(c, "world", "prod/db", 5432).verdict
    'DROPPED'
    """
    __tracebackhide__ = True
    verdict = cluster.check(src, dst, port, protocol, http=http)
    if verdict.allowed:
        raise AssertionError(
            f"expected {_flow_text(src, dst, port, protocol, http)} to be denied, "
            f"but it was {_outcome(verdict)}; allowed by {_responsible(verdict)}\n"
            f"{verdict.explain()}"
        )
    return verdict


def _normalize_ports(ports: Iterable[int | tuple[int, str]], default_protocol: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for item in ports:
        if isinstance(item, tuple):
            port, proto = item
            out.append((proto.upper(), int(port)))
        else:
            out.append((default_protocol.upper(), int(item)))
    return out


def assert_reachable(
    cluster: Cluster,
    src: str,
    dst: str,
    ports: Iterable[int | tuple[int, str]] | None = None,
    *,
    protocol: str = "TCP",
) -> list[Verdict]:
    """Assert that ``src`` reaches ``dst`` on every one of ``ports``.

    ``ports`` holds numbers (with ``protocol``) or ``(port, protocol)`` pairs; when omitted,
    the ports the destination pod declares (its container ports) are used, so "the frontend
    can reach the backend" means "on every port the backend serves". Returns the verdicts.

    >>> from ciliumpy import Cluster
    >>> c = Cluster()
    >>> _ = c.add_endpoint("prod/web")
    >>> _ = c.add_endpoint("prod/db", ports=[("pg", 5432, "TCP"), (None, 9187, "TCP")])
    >>> len(assert_reachable(c, "prod/web", "prod/db"))
    2
    """
    __tracebackhide__ = True
    if ports is None:
        if dst in SPECIAL_PEERS or "/" not in dst:
            raise ValueError(f"{dst!r} declares no ports: pass ports=[...]")
        probes = [(p.protocol, p.port) for p in cluster.endpoint(dst).ports]
        if not probes:
            raise ValueError(f"{dst} declares no container ports: pass ports=[...]")
    else:
        probes = _normalize_ports(ports, protocol)
    verdicts = [cluster.check(src, dst, port, proto) for proto, port in probes]
    failed = [v for v in verdicts if not v.allowed]
    if failed:
        lines = [f"expected {src} to reach {dst} on {len(probes)} port(s), but {len(failed)} were not allowed:"]
        for (proto, port), v in zip(probes, verdicts, strict=True):
            if not v.allowed:
                lines.append(f"  {proto}/{port}: {_outcome(v)}; decided by {_responsible(v)}")
        lines.append(failed[0].explain())
        raise AssertionError("\n".join(lines))
    return verdicts


# --------------------------------------------------------------------------------------------
# isolation and complete port probing


def _peer_identity(cluster: Cluster, who: str, ip: IPAddress) -> int:
    if "/" in who and who not in SPECIAL_PEERS:
        return cluster.identity_of(who).id
    return cluster.lookup_ip(ip).id


def _relevant_keys(cluster: Cluster, ref: str, direction: Direction, peer: int) -> list[MapStateKey]:
    if ref in SPECIAL_PEERS or "/" not in ref:
        return []
    return [k for k in cluster.map_state(ref) if k.direction == direction and k.identity in (0, peer)]


def _addresses(cluster: Cluster, who: str) -> tuple[IPAddress, ...]:
    if who == "world":
        from ._cluster import WORLD_IP_V4, WORLD_IP_V6

        return (WORLD_IP_V4, WORLD_IP_V6)
    if who == "host":
        from ._cluster import HOST_IP_V4, HOST_IP_V6

        return (HOST_IP_V4, HOST_IP_V6)
    if "/" in who:
        return cluster.endpoint(who).ips
    return (ipaddress.ip_address(who),)


def _address_pair(cluster: Cluster, src: str, dst: str) -> tuple[IPAddress, IPAddress]:
    for a in _addresses(cluster, src):
        for b in _addresses(cluster, dst):
            if a.version == b.version:
                return a, b
    raise ValueError(f"{src} and {dst} have no address family in common")


def _split_points(keys: Iterable[MapStateKey], protocol: int, top: int) -> list[int]:
    """Starts of the port intervals on which no key of ``protocol`` changes its match."""
    points = {0}
    for key in keys:
        if key.protocol != protocol:
            continue
        lo, hi = key.port_range
        points.add(min(lo, top))
        if hi + 1 <= top:
            points.add(hi + 1)
    return sorted(p for p in points if p <= top)


def port_probes(
    cluster: Cluster,
    src: str,
    dst: str,
    *,
    protocols: Sequence[str] = ("TCP", "UDP", "SCTP", "ICMP"),
) -> list[tuple[str, int]]:
    """``(protocol, port)`` pairs that together decide ``src -> dst`` on *every* port.

    The verdict of a new connection depends on the port only through the map-state keys of
    the source's egress and the destination's ingress that can match the peer. Those keys cut
    each protocol's port space (ICMP: type space) into intervals on which every key matches
    either all ports or none; one probe per interval is therefore exhaustive. The probe is the
    interval's first port, except that a port the destination declares is preferred and 0 is
    avoided when the interval has other ports. ``ICMP`` stands for ICMPv4 or ICMPv6 as the
    addresses need.

    >>> from ciliumpy import Cluster
    >>> c = Cluster()
    >>> _ = c.add_endpoint("prod/a")
    >>> _ = c.add_endpoint("prod/b")
    >>> port_probes(c, "prod/a", "prod/b", protocols=["TCP"])
    [('TCP', 1)]
    """
    src_ips, dst_ips = _addresses(cluster, src), _addresses(cluster, dst)
    pair = next(
        ((a, b) for a in src_ips for b in dst_ips if a.version == b.version),
        None,
    )
    if pair is None:
        return []
    src_id = _peer_identity(cluster, src, pair[0])
    dst_id = _peer_identity(cluster, dst, pair[1])
    keys = _relevant_keys(cluster, src, Direction.EGRESS, dst_id)
    keys += _relevant_keys(cluster, dst, Direction.INGRESS, src_id)
    declared: dict[str, set[int]] = {}
    if "/" in dst and dst not in SPECIAL_PEERS:
        for cp in cluster.endpoint(dst).ports:
            declared.setdefault(cp.protocol, set()).add(cp.port)
    out: list[tuple[str, int]] = []
    for name in protocols:
        upper = name.upper()
        if upper in _ICMP_NAMES:
            proto = Protocol.ICMPV6 if pair[0].version == 6 else Protocol.ICMP
            top = 255
            label = "ICMPV6" if proto == Protocol.ICMPV6 else "ICMP"
        elif upper in _L4:
            proto = Protocol[upper]
            top = 0xFFFF
            label = upper
        else:
            raise ValueError(f"unknown protocol {name!r}; expected TCP, UDP, SCTP or ICMP")
        points = _split_points(keys, int(proto), top)
        ends = [*points[1:], top + 1]
        for start, end in zip(points, ends, strict=True):
            inside = sorted(p for p in declared.get(upper, ()) if start <= p < end)
            if inside:
                probe = inside[0]
            elif start == 0 and end > 1 and label not in ("ICMP", "ICMPV6"):
                probe = 1
            else:
                probe = start
            out.append((label, probe))
    return out


def _members(cluster: Cluster, group: str | Iterable[str]) -> list[str]:
    if not isinstance(group, str):
        return list(group)
    if group in SPECIAL_PEERS or "/" in group:
        if "/" in group:
            cluster.endpoint(group)
        return [group]
    if group not in cluster.namespaces:
        known = ", ".join(sorted(cluster.namespaces)) or "none"
        raise UnknownEndpointError(f"no namespace {group!r}; known namespaces: {known}")
    return sorted(ref for ref, ep in cluster.endpoints.items() if ep.namespace == group)


def _reach_probes(
    cluster: Cluster,
    src: str,
    dst: str,
    ports: list[tuple[str, int]] | None,
    protocols: Sequence[str],
) -> Iterator[Verdict]:
    src_ips, dst_ips = _addresses(cluster, src), _addresses(cluster, dst)
    families = sorted({a.version for a in src_ips} & {b.version for b in dst_ips})
    for family in families:
        a = next(ip for ip in src_ips if ip.version == family)
        b = next(ip for ip in dst_ips if ip.version == family)
        # Pods are named by their address so ICMPv6 is probed between IPv6 addresses.
        src_name = src if src in SPECIAL_PEERS or "/" not in src or len(families) == 1 else str(a)
        dst_name = dst if dst in SPECIAL_PEERS or "/" not in dst or len(families) == 1 else str(b)
        if ports is None:
            probes = port_probes(cluster, src, dst, protocols=protocols)
            if len(families) > 1:
                probes = [
                    (("ICMPV6" if family == 6 else "ICMP") if p in ("ICMP", "ICMPV6") else p, n) for p, n in probes
                ]
        else:
            probes = ports
        for proto, port in probes:
            if proto in ("ICMP", "ICMPV6") and family == 6:
                proto = "ICMPV6"
            yield cluster.check(src_name, dst_name, port, proto)


def assert_isolated(
    cluster: Cluster,
    a: str | Iterable[str],
    b: str | Iterable[str],
    *,
    ports: Iterable[int | tuple[int, str]] | None = None,
    protocols: Sequence[str] = ("TCP", "UDP", "SCTP", "ICMP"),
) -> int:
    """Assert that nothing in ``a`` reaches anything in ``b``, or the reverse, on any port.

    ``a`` and ``b`` are namespace names, ``"namespace/pod"`` references, ``"world"``,
    ``"host"``, or collections of these. Without ``ports`` every port really is covered: for
    each pair of pods the probes of :func:`port_probes` (one per interval the two map states
    distinguish, per protocol and address family) decide every port. With ``ports`` only
    those are probed. Returns the number of flows checked; the failure message lists every
    flow that got through and explains the first ones.

    >>> from ciliumpy import Cluster
    >>> c = Cluster()
    >>> _ = c.add_endpoint("ns-a/x")
    >>> _ = c.add_endpoint("ns-b/y")
    >>> _ = c.apply({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
    ...     "metadata": {"name": "own-namespace-only"},
    ...     "spec": {"endpointSelector": {}, "ingress": [{"fromEndpoints": [
    ...         {"matchExpressions": [{"key": "io.kubernetes.pod.namespace",
    ...                                "operator": "Exists"}]}]}]}})
    >>> assert_isolated(c, "ns-a", "ns-b")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    AssertionError: ns-a and ns-b are not isolated: 8 of 8 probed flows were allowed:
    ...
    """
    __tracebackhide__ = True
    side_a, side_b = _members(cluster, a), _members(cluster, b)
    fixed = None if ports is None else _normalize_ports(ports, "TCP")
    checked = 0
    leaks: list[Verdict] = []
    seen: set[tuple[Any, ...]] = set()
    for src_group, dst_group in ((side_a, side_b), (side_b, side_a)):
        for src in src_group:
            for dst in dst_group:
                if src == dst:
                    raise ValueError(f"{src} is on both sides of the isolation check")
                for verdict in _reach_probes(cluster, src, dst, fixed, protocols):
                    checked += 1
                    if verdict.allowed:
                        sig = (
                            verdict.src.ref,
                            verdict.dst.ref,
                            verdict.packet.protocol,
                            verdict.packet.policy_port,
                        )
                        if sig not in seen:
                            seen.add(sig)
                            leaks.append(verdict)
    if leaks:
        name_a = a if isinstance(a, str) else ", ".join(side_a)
        name_b = b if isinstance(b, str) else ", ".join(side_b)
        lines = [f"{name_a} and {name_b} are not isolated: {len(leaks)} of {checked} probed flows were allowed:"]
        for v in leaks[:20]:
            lines.append(f"  {v}; allowed by {_responsible(v)}")
        if len(leaks) > 20:
            lines.append(f"  ... and {len(leaks) - 20} more")
        for v in leaks[:3]:
            lines.append(v.explain())
        raise AssertionError("\n".join(lines))
    return checked


# --------------------------------------------------------------------------------------------
# comparing map states across clusters


def labelled_map_state(cluster: Cluster, ref: str) -> dict[tuple[str, str, str], tuple[str, int, tuple[str, ...]]]:
    """A pod's map state with identities replaced by their labels, for comparing clusters.

    Numeric identities depend on the order in which a cluster first saw label sets, so two
    clusters with the same objects may number them differently. Keys here are
    ``(peer labels or "ANY", "Ingress"/"Egress", "80/TCP")``; values are
    ``(entry description, auth type, rule origins)``.

    >>> from ciliumpy import Cluster
    >>> c = Cluster()
    >>> _ = c.add_endpoint("prod/web")
    >>> labelled_map_state(c, "prod/web")[("ANY", "Ingress", "ANY")]
    ('allow', 0, ('reserved allow-any-ingress',))
    """
    out: dict[tuple[str, str, str], tuple[str, int, tuple[str, ...]]] = {}
    for key, entry in cluster.map_state(ref).items():
        if key.identity == 0:
            peer = "ANY"
        else:
            ident = cluster.identity(key.identity)
            peer = ",".join(ident.labels.strings()) if ident is not None else f"#{key.identity}"
        out[(peer, key.direction.label, key.port_proto_text())] = (
            entry.describe(),
            entry.auth_type,
            tuple(sorted(str(o) for o in entry.origins)),
        )
    return out
