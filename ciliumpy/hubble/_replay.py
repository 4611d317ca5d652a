"""Replay recorded Hubble flows against policies: what would a change drop?

Flows recorded with ``hubble observe -o json`` are decoded into light observations (only the
fields replay needs, with msgspec's schema-directed decoder), mapped onto a cluster's
endpoints (by namespace/pod name, then IP, then labels; world and FQDN peers by address and
name) and judged by ``Cluster.check`` (HTTP flows with their request at L7, DNS flows by a
lookup through the DNS proxy). Verdicts are computed once per distinct connection, so a
million flows of a few thousand connections replay in seconds.
"""

from __future__ import annotations

import gzip
import html
import itertools
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..exceptions import FlowFormatError
from ._decode import (
    _DECODER,
    _ENCODE,
    Observation,
    Peer,
    _Flow,
    _observation,
    _peer_text,
    _read_batches,
    decode_batches,
)
from ._flow import Flow

if TYPE_CHECKING:
    from .._cluster import Cluster

__all__ = [
    "Observation",
    "ReplayReport",
    "ReplayedFlow",
    "cluster_from_flows",
    "read_observations",
    "recorded_outcomes",
    "replay",
]


# ---------------------------------------------------------------- decoding
def read_observations(source: Any, *, errors: str = "raise") -> Iterator[Observation]:
    """Observations from a path (plain or .gz), a binary or text file object, lines, or Flows.

    A malformed line raises :class:`FlowFormatError` naming its number when the iteration
    reaches it; with ``errors="skip"`` it is left out. A file that cannot be read (a corrupt
    or truncated ``.gz``) raises it naming the file. Files are read a few MiB at a time, in
    bounded memory besides the observations kept.
    """
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    return _observations(source, errors)


def _observations(source: Any, errors: str) -> Iterator[Observation]:
    if isinstance(source, str | Path):
        document = str(source)
        path = Path(source)
        with path.open("rb") as probe:
            gz = probe.read(2) == b"\x1f\x8b"
        try:
            with gzip.open(path, "rb") if gz else path.open("rb") as fh:
                yield from decode_batches(_read_batches(fh), document, errors)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise FlowFormatError(f"cannot read the recording: {exc}", document=document) from None
        return
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        yield from decode_batches(_read_batches(source), name if isinstance(name, str) else None, errors)
        return
    items = list(source) if not isinstance(source, list) else source
    if items and isinstance(items[0], Observation):
        yield from items
        return
    if items and isinstance(items[0], Flow):
        for i, flow in enumerate(items, 1):
            rec = _DECODER.decode(_ENCODE(flow.to_response()))
            yield _observation(i, rec.flow if rec.flow is not None else _Flow())
        return
    lines = iter(items)
    yield from decode_batches(iter(lambda: list(itertools.islice(lines, 8192)), []), None, errors)


# ---------------------------------------------------------------- mapping
_K8S_META = ("k8s:io.kubernetes.pod.namespace=", "k8s:io.cilium.k8s.")


def _pod_labels(labels: Sequence[str]) -> dict[str, str]:
    """A pod's own labels from its identity labels (``k8s:app=x`` -> ``app: x``)."""
    out: dict[str, str] = {}
    for label in labels:
        if not label.startswith("k8s:") or label.startswith(_K8S_META):
            continue
        key, _, value = label[4:].partition("=")
        out[key] = value
    return out


class FlowMapper:
    """Maps observed peers onto one cluster: pod name, then IP, then labels, then world/FQDN."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.by_ip: dict[str, str] = {}
        self.by_ns: dict[str, list[tuple[str, dict[str, str]]]] = {}
        for ref, ep in cluster.endpoints.items():
            for ip in ep.ips:
                self.by_ip[str(ip)] = ref
            self.by_ns.setdefault(ep.namespace, []).append((ref, dict(ep.labels)))
        self.cache: dict[tuple[Peer, tuple[str, ...]], str | None] = {}

    def target(self, p: Peer, names: tuple[str, ...] = ()) -> str | None:
        """What ``Cluster.check`` takes for this peer, or ``None`` when nothing matches."""
        key = (p, names)
        if key in self.cache:
            return self.cache[key]
        found = self._target(p, names)
        self.cache[key] = found
        return found

    def _target(self, p: Peer, names: tuple[str, ...]) -> str | None:
        ns, pod, labels, identity, ip, _ = p
        endpoints = self.cluster.endpoints
        if ns and pod and f"{ns}/{pod}" in endpoints:
            return f"{ns}/{pod}"
        if ip in self.by_ip:
            return self.by_ip[ip]
        own = _pod_labels(labels)
        if ns and own:
            matches = sorted(ref for ref, eplabels in self.by_ns.get(ns, ()) if own.items() <= eplabels.items())
            if matches:
                return matches[0]
        if names:
            return names[0]
        reserved = {lbl for lbl in labels if lbl.startswith("reserved:")}
        if "reserved:host" in reserved or identity == 1:
            return "host"
        if ("reserved:world" in reserved or identity == 2 or not labels) and ip and not pod:
            return ip
        if "reserved:world" in reserved and ip:
            return ip
        return None


# ---------------------------------------------------------------- replay
@attrs.frozen
class Judgement:
    """A connection's verdict under one cluster, with the policies and the explanation."""

    verdict: str  # FORWARDED or DROPPED
    policies: tuple[str, ...]
    explanation: str

    @property
    def allowed(self) -> bool:
        return self.verdict == "FORWARDED"


def _judge(cluster: Cluster, src: str, dst: str, o: Observation) -> Judgement:
    if o.l7 is not None and o.l7[0] == "dns":
        res = cluster.resolve(src, o.l7[1], o.l7[2] or "A")
        v = res.verdict
        allowed = res.allowed
        text = res.explain()
    else:
        http = None
        if o.l7 is not None and o.l7[0] == "http":
            http = {"method": o.l7[1], "path": o.l7[2]}
        protocol = o.protocol or "TCP"
        port = o.port
        v = cluster.check(src, dst, port, protocol, http=http)
        allowed = v.allowed
        text = v.explain()
    policies = tuple(
        sorted(
            {f"{p.kind} {p.namespace + '/' if p.namespace else ''}{p.name}" for p in v.policies if p.kind != "reserved"}
        )
    )
    return Judgement("FORWARDED" if allowed else "DROPPED", policies, text)


@attrs.frozen
class ReplayedFlow:
    """One flow of a replay: what was recorded, and its verdict before and after."""

    observation: Observation
    before: Judgement | None
    after: Judgement | None

    def explain(self) -> str:
        lines = [self.observation.describe()]
        if self.before is not None:
            lines.append(f"  before: {self.before.verdict} ({', '.join(self.before.policies) or 'no policy'})")
        else:
            lines.append(f"  recorded: {self.observation.verdict}")
        if self.after is not None:
            lines.append(f"  after:  {self.after.verdict} ({', '.join(self.after.policies) or 'no policy'})")
            lines.extend("    " + line for line in self.after.explanation.splitlines())
        return "\n".join(lines)


_PASSED = frozenset({"FORWARDED", "REDIRECTED", "AUDIT", "TRACED", "TRANSLATED"})
# Drops that are policy's decision: DROPPED with no reason given counts as one (the careful
# reading for both drift and advice); drops for other reasons (conntrack, routing, ...) say
# nothing about policy.
_POLICY_DROPS = frozenset({"POLICY_DENIED", "POLICY_DENY", "133", "181", ""})


def _connection(o: Observation) -> tuple[Any, ...]:
    """A flow's connection: both sides' namespace, pod and IP, protocol, port and L7 request.

    The flows a connection leaves at the source's egress and the destination's ingress fall
    together here even where their endpoint details differ (a remote endpoint has no local
    ID, only the source side carries the destination's DNS names)."""
    s, d = o.src, o.dst
    return (s[0], s[1], s[4], d[0], d[1], d[4], o.protocol, o.port, o.l7)


def recorded_outcomes(observations: Iterable[Observation]) -> dict[tuple[Any, ...], str]:
    """What the recording says policy decided for each connection (:func:`_connection`).

    ``DROPPED`` when any of its flows was dropped by policy: a connection the source's egress
    policy forwarded and the destination's ingress policy dropped did not happen, though
    one of its flows says FORWARDED. Otherwise ``FORWARDED`` when any flow passed, and
    ``DROPPED`` when all were dropped for other reasons.
    """
    rank: dict[tuple[Any, ...], int] = {}  # 2 dropped by policy, 1 passed, 0 dropped otherwise
    for o in observations:
        key = _connection(o)
        seen = 1 if o.verdict in _PASSED else 2 if o.verdict == "DROPPED" and o.drop_reason in _POLICY_DROPS else 0
        if seen > rank.get(key, -1):
            rank[key] = seen
    return {k: "FORWARDED" if v == 1 else "DROPPED" for k, v in rank.items()}


@attrs.frozen(eq=False)
class ReplayReport:
    """Which recorded flows a policy change drops, allows or leaves alone.

    ``newly_dropped``, ``newly_allowed``, ``unchanged`` and ``unmapped`` hold the flows;
    ``groups`` gathers the changed ones by (policy, source workload, destination workload,
    port), each with one explained example.
    """

    observations: tuple[Observation, ...]
    judgements: Mapping[tuple[Any, ...], tuple[Judgement | None, Judgement]]
    categories: Mapping[str, tuple[int, ...]]  # category -> positions in observations
    unmapped_reasons: Mapping[int, str]

    def _flows(self, category: str) -> list[ReplayedFlow]:
        out = []
        for i in self.categories.get(category, ()):
            o = self.observations[i]
            found = self.judgements.get(o.key)
            before, after = found if found is not None else (None, None)
            out.append(ReplayedFlow(o, before, after))
        return out

    @property
    def newly_dropped(self) -> list[ReplayedFlow]:
        return self._flows("newly_dropped")

    @property
    def newly_allowed(self) -> list[ReplayedFlow]:
        return self._flows("newly_allowed")

    @property
    def unchanged(self) -> list[ReplayedFlow]:
        return self._flows("unchanged")

    @property
    def unmapped(self) -> list[ReplayedFlow]:
        return self._flows("unmapped")

    @property
    def groups(self) -> list[dict[str, Any]]:
        """Changed flows by (policy, source workload, destination workload, port)."""
        groups: dict[tuple[str, str, str, str, str], list[int]] = {}
        for category in ("newly_dropped", "newly_allowed"):
            for i in self.categories.get(category, ()):
                o = self.observations[i]
                found = self.judgements.get(o.key)
                if found is None:
                    continue
                before, after = found
                policies = after.policies or (before.policies if before is not None else ())
                policy = ", ".join(policies) or "(no policy: default deny)"
                port = f"{o.protocol}/{o.port}" if o.port is not None else o.protocol
                key = (category, policy, _workload(o.src), _workload(o.dst, o.names), port)
                groups.setdefault(key, []).append(i)
        out = []
        for (category, policy, src, dst, port), members in sorted(groups.items()):
            example = self.observations[members[0]]
            before, after = self.judgements[example.key]
            out.append(
                {
                    "change": category,
                    "policy": policy,
                    "source": src,
                    "destination": dst,
                    "port": port,
                    "flows": len(members),
                    "example": ReplayedFlow(example, before, after).explain(),
                }
            )
        return out

    def counts(self) -> dict[str, int]:
        return {c: len(self.categories.get(c, ())) for c in ("newly_dropped", "newly_allowed", "unchanged", "unmapped")}

    def to_dict(self) -> dict[str, Any]:
        """Counts, the changed groups and the unmapped flows (JSON-able)."""
        return {
            "counts": self.counts(),
            "groups": self.groups,
            "unmapped": [
                {"flow": self.observations[i].describe(), "reason": self.unmapped_reasons.get(i, "")}
                for i in self.categories.get("unmapped", ())[:100]
            ],
        }

    def summary(self) -> str:
        """A text report: counts, then each changed group with its example."""
        c = self.counts()
        lines = [
            f"{len(self.observations)} flows: {c['newly_dropped']} newly dropped, {c['newly_allowed']} newly allowed, "
            f"{c['unchanged']} unchanged, {c['unmapped']} unmapped"
        ]
        for g in self.groups:
            lines.append("")
            lines.append(
                f"{g['change'].replace('_', ' ').upper()}: {g['flows']} flows {g['source']} -> {g['destination']} "
                f"{g['port']} [{g['policy']}]"
            )
            lines.extend("  " + line for line in g["example"].splitlines())
        unmapped = self.categories.get("unmapped", ())
        if unmapped:
            lines.append("")
            reasons: dict[str, int] = {}
            for i in unmapped:
                reasons[self.unmapped_reasons.get(i, "")] = reasons.get(self.unmapped_reasons.get(i, ""), 0) + 1
            lines.append("UNMAPPED: " + "; ".join(f"{n} x {r}" for r, n in sorted(reasons.items())))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        text = html.escape(self.summary()[:20000])
        color = "#c62828" if self.categories.get("newly_dropped") else "#2e7d32"
        return f'<pre style="border-left:4px solid {color};padding-left:6px">{text}</pre>'


def _workload(p: Peer, names: Sequence[str] = ()) -> str:
    if p[5]:
        return f"{p[0]}/{p[5]}" if p[0] else p[5]
    return _peer_text(p, names)


def _as_cluster(what: Any) -> Cluster:
    from .._cluster import Cluster

    if isinstance(what, Cluster):
        return what
    sources = what if isinstance(what, list | tuple) else [what]
    return Cluster.from_manifests(*sources)


def _teach_dns(cluster: Cluster, observations: Sequence[Observation]) -> None:
    """Give the cluster the DNS answers the flows saw, so FQDN peers resolve as recorded."""
    records: dict[str, set[str]] = {}
    for o in observations:
        if o.l7 is not None and o.l7[0] == "dns" and o.answers:
            records.setdefault(o.l7[1].rstrip("."), set()).update(o.answers)
        for name in o.names:
            if o.dst[4]:
                records.setdefault(name, set()).add(o.dst[4])
    known = set(cluster.dns_records)
    new = {name: sorted(ips) for name, ips in records.items() if name not in known and name + "." not in known}
    if new:
        cluster.add_dns_records(new)


def replay(flows: Any, before: Any, after: Any = None, *, errors: str = "raise") -> ReplayReport:
    """Each recorded flow's verdict under ``before`` and ``after`` (clusters or manifest paths).

    With ``after=None``, ``before`` is the cluster now and the flows' recorded verdicts are
    the "before": the report then shows drift between the recording and the policies.
    ``flows`` is anything :func:`read_observations` takes (a path, lines, Flow objects).
    """
    observations = tuple(read_observations(flows, errors=errors))
    clusters = [_as_cluster(before)] + ([_as_cluster(after)] if after is not None else [])
    for c in clusters:
        _teach_dns(c, observations)
    mappers = [FlowMapper(c) for c in clusters]
    judgements: dict[tuple[Any, ...], tuple[Judgement | None, Judgement]] = {}
    recorded = recorded_outcomes(observations) if after is None else {}
    categories: dict[str, list[int]] = {"newly_dropped": [], "newly_allowed": [], "unchanged": [], "unmapped": []}
    reasons: dict[int, str] = {}
    failed: dict[tuple[Any, ...], str] = {}
    for pos, o in enumerate(observations):
        key = o.key
        found = judgements.get(key)
        if found is None:
            why = failed.get(key)
            if why is None:
                try:
                    found = _judge_all(clusters, mappers, o)
                    judgements[key] = found
                except _Unmapped as exc:
                    why = failed[key] = str(exc)
            if why is not None:
                categories["unmapped"].append(pos)
                reasons[pos] = why
                continue
        assert found is not None
        b, a = found
        was = b.verdict if b is not None else recorded[_connection(o)]
        if was == a.verdict:
            categories["unchanged"].append(pos)
        elif a.allowed:
            categories["newly_allowed"].append(pos)
        else:
            categories["newly_dropped"].append(pos)
    return ReplayReport(
        observations=observations,
        judgements=judgements,
        categories={k: tuple(v) for k, v in categories.items()},
        unmapped_reasons=reasons,
    )


class _Unmapped(Exception):
    pass


def _judge_all(
    clusters: list[Cluster], mappers: list[FlowMapper], o: Observation
) -> tuple[Judgement | None, Judgement]:
    from ..exceptions import CiliumpyError

    out: list[Judgement] = []
    for cluster, mapper in zip(clusters, mappers, strict=True):
        src = mapper.target(o.src)
        dst = mapper.target(o.dst, o.names)
        if src is None or dst is None:
            side = "source" if src is None else "destination"
            raise _Unmapped(f"{side} {_peer_text(o.src if src is None else o.dst)} matches no endpoint")
        if o.protocol not in ("TCP", "UDP", "SCTP", "ICMP", "ICMPv6") and o.l7 is None:
            raise _Unmapped(f"no L4 protocol to replay ({o.protocol or 'none'})")
        try:
            out.append(_judge(cluster, src, dst, o))
        except CiliumpyError as exc:
            raise _Unmapped(f"cannot check {src} -> {dst}: {exc}") from None
    if len(out) == 1:
        return None, out[0]
    return out[0], out[1]


# ---------------------------------------------------------------- a cluster from flows
def cluster_from_flows(flows: Any, cls: type[Cluster] | None = None, **kwargs: Any) -> Cluster:
    """A cluster with the namespaces, endpoints (labels, addresses, ports) and external
    names the flows show, for users who have flows but no manifests."""
    from .._cluster import Cluster

    cluster = (cls or Cluster)(**kwargs)
    observations = list(read_observations(flows))
    pods: dict[str, tuple[dict[str, str], set[str], str, set[tuple[int, str]]]] = {}
    namespaces: dict[str, dict[str, str]] = {}
    for o in observations:
        for p, is_dst in ((o.src, False), (o.dst, True)):
            ns, pod, labels, _identity, ip, _ = p
            if not (ns and pod):
                continue
            if any(lbl in ("reserved:world", "reserved:host") for lbl in labels):
                continue
            entry = pods.setdefault(f"{ns}/{pod}", ({}, set(), "default", set()))
            entry[0].update(_pod_labels(labels))
            if ip:
                entry[1].add(ip)
            for lbl in labels:
                if lbl.startswith("k8s:io.cilium.k8s.policy.serviceaccount="):
                    pods[f"{ns}/{pod}"] = (entry[0], entry[1], lbl.split("=", 1)[1], entry[3])
                if lbl.startswith("k8s:io.cilium.k8s.namespace.labels."):
                    key, _, value = lbl[len("k8s:io.cilium.k8s.namespace.labels.") :].partition("=")
                    namespaces.setdefault(ns, {})[key] = value
            namespaces.setdefault(ns, {})
            if is_dst and o.port and o.protocol in ("TCP", "UDP", "SCTP"):
                pods[f"{ns}/{pod}"][3].add((o.port, o.protocol))
    for ns, ns_labels in sorted(namespaces.items()):
        cluster.add_namespace(ns, labels=ns_labels)
    taken: set[str] = set()
    for ref, (pod_labels, ips, account, ports) in sorted(pods.items()):
        free = sorted(ip for ip in ips if ip not in taken)
        taken.update(free)
        cluster.add_endpoint(
            ref,
            labels=pod_labels,
            ips=free or None,
            ports=[(None, port, proto) for port, proto in sorted(ports)],
            service_account=account,
        )
    _teach_dns(cluster, observations)
    return cluster
