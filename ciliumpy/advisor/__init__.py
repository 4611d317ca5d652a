"""Least-privilege CiliumNetworkPolicies from observed flows, verified before they are returned.

:func:`advise` reads recorded Hubble flows (or ciliumpy's own), keeps the connections that
went through, and writes one CiliumNetworkPolicy per workload: ingress from the workloads
that reached it, egress to what it reached, on the ports seen, with HTTP method/path rules
where the flows carry HTTP and ``toFQDNs`` plus the DNS rule to kube-dns for external peers
the flows name. Selectors use workload labels (never pod names); CIDRs are used only where no
name is known.

The result is verified on the cluster plus the advice: every observed FORWARDED flow is
allowed, and no (source identity, destination identity, port, protocol) is allowed that was
neither observed nor allowed before, checked for every identity of the cluster (and the
external peers the policies name) on every port the policies open.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import CiliumpyError, PolicyError

if TYPE_CHECKING:
    from .._cluster import Cluster
    from .._model import CiliumNetworkPolicy
    from ..hubble._replay import Observation

__all__ = ["AdviceError", "advise", "to_yaml"]

# Labels that differ between the replicas of one workload: never select on them.
_PER_POD = (
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "pod-template-generation",
)


# (port, protocol, (method, path) of an HTTP request or None)
Port = tuple[int, str, tuple[str, str] | None]


class AdviceError(CiliumpyError, RuntimeError):
    """The advised policies failed their verification (the message says which flow or pair)."""


def _workload_labels(labels: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in sorted(labels.items()) if k not in _PER_POD}


def _name(ref: str) -> str:
    pod = ref.partition("/")[2]
    short = re.sub(r"(-[a-z0-9]{5,10}){1,2}$", "", pod) or pod
    return re.sub(r"[^a-z0-9-]", "-", f"advised-{short}".lower())[:63].rstrip("-")


def advise(flows: Any, cluster: Cluster | None = None) -> list[CiliumNetworkPolicy]:
    """Least-privilege CiliumNetworkPolicies for what the flows show, verified.

    ``flows`` is anything :func:`ciliumpy.hubble.read_observations` reads (a recorded file,
    lines, Flow objects); ``cluster`` gives the endpoints (default: built from the flows,
    ``Cluster.from_flows``). Raises :class:`AdviceError` when the verification fails.
    """
    from .._cluster import Cluster
    from .._model import CiliumNetworkPolicy
    from ..hubble._replay import _PASSED, FlowMapper, _connection, _teach_dns, read_observations, recorded_outcomes

    if not isinstance(flows, str | Path):
        flows = flows.read().splitlines() if hasattr(flows, "read") else list(flows)
    observations = list(read_observations(flows))
    if cluster is None:
        cluster = Cluster.from_flows(flows)
    _teach_dns(cluster, observations)
    mapper = FlowMapper(cluster)
    dns_server = cluster.dns_server()
    # workload (endpoint ref chosen as representative) -> rules
    ingress: dict[str, dict[tuple[Any, ...], set[tuple[int, str, tuple[str, str] | None]]]] = {}
    egress: dict[str, dict[tuple[Any, ...], set[tuple[int, str, tuple[str, str] | None]]]] = {}
    dns_names: dict[str, set[str]] = {}
    connections: list[tuple[str, str, Observation]] = []
    # A connection dropped by policy anywhere on its path is not advised, even where one of its
    # flows (the source's egress) was forwarded.
    outcomes = recorded_outcomes(observations)
    for o in observations:
        if o.verdict not in _PASSED or o.port is None or o.protocol not in ("TCP", "UDP", "SCTP"):
            continue
        if outcomes[_connection(o)] != "FORWARDED":
            continue
        src = mapper.target(o.src)
        dst = mapper.target(o.dst, o.names)
        if src is None or dst is None:
            continue
        if o.l7 is not None and o.l7[0] == "dns":
            if src in cluster.endpoints:
                dns_names.setdefault(src, set()).add(o.l7[1].rstrip("."))
            continue
        if src in cluster.endpoints and not _is_endpoint_or_entity(cluster, dst) and not _is_ip(dst):
            dns_names.setdefault(src, set()).add(dst)  # a name: allowed by toFQDNs after a lookup
        connections.append((src, dst, o))
    observed: list[tuple[str, str, Observation]] = []
    for src, dst, o in connections:
        http = (o.l7[1], o.l7[2]) if o.l7 is not None and o.l7[0] == "http" else None
        observed.append((src, dst, o))
        assert o.port is not None
        port = (o.port, o.protocol, http)
        if dst in cluster.endpoints:
            ingress.setdefault(dst, {}).setdefault(_peer_key(cluster, src, dst), set()).add(port)
        # DNS to the cluster DNS is the DNS rule below when the flows name what was looked up.
        if src in cluster.endpoints and not (dst == dns_server and o.port == 53 and dns_names.get(src)):
            egress.setdefault(src, {}).setdefault(_peer_key(cluster, dst, src), set()).add(port)
    # Pods selected by the same labels share one policy: its rules are the union of theirs
    # (replicas of a workload, or unlabelled pods of one namespace).
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[str]] = {}
    for ref in sorted(set(ingress) | set(egress)):
        ns = cluster.endpoints[ref].namespace
        selector = _workload_labels(dict(cluster.endpoints[ref].labels))
        groups.setdefault((ns, tuple(sorted(selector.items()))), []).append(ref)
    policies: list[CiliumNetworkPolicy] = []
    used_names: set[tuple[str, str]] = set()
    for (ns, selector_items), refs in groups.items():
        ins: dict[tuple[Any, ...], set[Port]] = {}
        outs: dict[tuple[Any, ...], set[Port]] = {}
        names: set[str] = set()
        for ref in refs:
            for peer, ports in ingress.get(ref, {}).items():
                ins.setdefault(peer, set()).update(ports)
            for peer, ports in egress.get(ref, {}).items():
                outs.setdefault(peer, set()).update(ports)
            names.update(dns_names.get(ref, ()))
        spec: dict[str, Any] = {"endpointSelector": {"matchLabels": dict(selector_items)}}
        if ins:
            spec["ingress"] = [_rule("from", peer, ports) for peer, ports in sorted(ins.items(), key=repr)]
        egress_rules = [_rule("to", peer, ports) for peer, ports in sorted(outs.items(), key=repr)]
        if names and dns_server is not None:
            egress_rules.append(_dns_rule(cluster, dns_server, sorted(names)))
        if egress_rules:
            spec["egress"] = egress_rules
        name = _name(refs[0])
        while (ns, name) in used_names:
            name = f"{name[:60]}-{len(used_names)}"
        used_names.add((ns, name))
        manifest = {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }
        policies.append(CiliumNetworkPolicy.from_manifest(manifest))
    _verify(cluster, policies, observed)
    return policies


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_endpoint_or_entity(cluster: Cluster, target: str) -> bool:
    return target in cluster.endpoints or target in ("host", "world")


def _peer_key(cluster: Cluster, peer: str, me: str) -> tuple[Any, ...]:
    """How a rule names ``peer`` as seen from ``me``: workload labels, entity, FQDN or CIDR."""
    if peer in cluster.endpoints:
        ep = cluster.endpoints[peer]
        labels = _workload_labels(dict(ep.labels))
        if ep.namespace != cluster.endpoints[me].namespace:
            labels["k8s:io.kubernetes.pod.namespace"] = ep.namespace
        return ("endpoints", tuple(sorted(labels.items())))
    if peer == "host":
        return ("entities", "host")
    if _is_ip(peer):
        return ("cidr", f"{peer}/32" if ":" not in peer else f"{peer}/128")
    return ("fqdn", peer)


def _rule(
    direction: str, peer: tuple[Any, ...], ports: Iterable[tuple[int, str, tuple[str, str] | None]]
) -> dict[str, Any]:
    kind, value = peer
    rule: dict[str, Any] = {}
    if kind == "endpoints":
        rule[f"{direction}Endpoints"] = [{"matchLabels": dict(value)}]
    elif kind == "entities":
        rule[f"{direction}Entities"] = [value]
    elif kind == "cidr":
        rule[f"{direction}CIDR"] = [value]
    else:
        rule["toFQDNs"] = [{"matchName": value}]
    # Where the flows carry HTTP, the L3/L4 events on that port belong to the same
    # connections: the port is restricted to the requests seen.
    by_port: dict[tuple[int, str], set[tuple[str, str]]] = {}
    for port, proto, http in sorted(ports, key=repr):
        reqs = by_port.setdefault((port, proto), set())
        if http is not None:
            reqs.add(http)
    to_ports = []
    for (port, proto), reqs in sorted(by_port.items()):
        entry: dict[str, Any] = {"ports": [{"port": str(port), "protocol": proto}]}
        if reqs:
            entry["rules"] = {"http": [{"method": m, "path": re.escape(p)} for m, p in sorted(reqs)]}
        to_ports.append(entry)
    rule["toPorts"] = to_ports
    return rule


def _dns_rule(cluster: Cluster, server: str, names: Sequence[str]) -> dict[str, Any]:
    ep = cluster.endpoints[server]
    labels = {"k8s:io.kubernetes.pod.namespace": ep.namespace}
    labels.update({f"k8s:{k}": v for k, v in _workload_labels(dict(ep.labels)).items()})
    return {
        "toEndpoints": [{"matchLabels": labels}],
        "toPorts": [
            {
                "ports": [{"port": "53", "protocol": "ANY"}],
                "rules": {"dns": [{"matchName": n} for n in names]},
            }
        ],
    }


def _verify(
    cluster: Cluster, policies: list[CiliumNetworkPolicy], observed: list[tuple[str, str, Observation]]
) -> None:
    from .._cluster import Cluster

    before = Cluster.from_manifests(*cluster.to_manifests())
    after = Cluster.from_manifests(*cluster.to_manifests(), *[p.to_manifest() for p in policies])
    for c in (before, after):
        c.add_dns_records({k: [str(ip) for ip in v.ips] for k, v in cluster.dns_records.items()})
    # 1. every observed FORWARDED flow is allowed
    for src, dst, o in observed:
        http = {"method": o.l7[1], "path": o.l7[2]} if o.l7 is not None and o.l7[0] == "http" else None
        v = after.check(src, dst, o.port, o.protocol, http=http)
        if not v.allowed:
            raise AdviceError(f"the advice drops an observed flow: {o.describe()}: {v.explain().splitlines()[0]}")
    # 2. nothing new on the whole identity space, on every port the advice opens
    opened = {
        (int(pp.port), pp.protocol)
        for p in policies
        for rule in p.rules
        for section in (rule.ingress or (), rule.egress or ())
        for pr in section
        for port_rule in (pr.to_ports or ())
        for pp in port_rule.ports
        if str(pp.port).isdigit()
    }
    seen = {(src, dst, o.port, o.protocol) for src, dst, o in observed}
    seen_ids = {(_identity(after, s), _identity(after, d), port, proto) for s, d, port, proto in seen}
    sources, destinations = _representatives(after, observed)
    for src in sources:
        for dst in destinations:
            if src == dst:
                continue
            for port, proto in sorted(opened):
                protos = ("TCP", "UDP") if proto == "ANY" else (proto,)
                for pr in protos:
                    try:
                        if not after.check(src, dst, port, pr).allowed:
                            continue
                    except PolicyError:
                        continue  # no address family in common: no such connection
                    ids = (_identity(after, src), _identity(after, dst), port, pr)
                    if ids in seen_ids or (src, dst, port, pr) in seen:
                        continue
                    if before.check(src, dst, port, pr).allowed:
                        continue
                    raise AdviceError(f"the advice would newly allow {src} -> {dst} {pr}/{port}, which no flow shows")


def _identity(cluster: Cluster, who: str) -> int | str:
    if who in cluster.endpoints:
        return cluster.identity_of(who).id
    return who


def _representatives(cluster: Cluster, observed: list[tuple[str, str, Observation]]) -> tuple[list[str], list[str]]:
    """Sources and destinations to check: one endpoint per identity, the host, a world
    address and the external peers seen (names only as destinations)."""
    by_identity: dict[int, str] = {}
    for ref in sorted(cluster.endpoints):
        by_identity.setdefault(cluster.identity_of(ref).id, ref)
    outside = {p for s, d, _ in observed for p in (s, d) if p not in cluster.endpoints} - {"host", "world"}
    base = [*sorted(by_identity.values()), "host", "world"]
    ips = sorted(p for p in outside if _is_ip(p))
    return [*base, *ips], [*base, *sorted(outside)]


def to_yaml(policies: Iterable[CiliumNetworkPolicy]) -> str:
    """The policies as one YAML stream ``kubectl apply -f`` takes."""
    import yaml

    return yaml.safe_dump_all([p.to_manifest() for p in policies], sort_keys=False)
