"""Explain a connection: every rule that allows it, or the smallest changes that would.

An allowed connection is explained by every allow rule of each hook that selects the peer
on that port (not only the map entry that won the lookup). A denied one gets candidate
fixes, each a concrete manifest change: a peer added to a named rule, a port added to a
rule, a label added to the source pod, a deny rule removed, or a new rule in a policy that
already selects the endpoint. Each candidate is applied to a copy of the cluster; only
those under which ``check`` allows the connection are kept, with what else they newly
allow (a semantic diff), smallest side effect first.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs

from .._datapath import Direction, RuleOrigin
from .._labels import NAMESPACE_KEY, SOURCE_K8S
from .._selectors import Operator
from ._diff import Change, Connection, diff

if TYPE_CHECKING:
    from .._cluster import Cluster
    from ._reachability import Reachability

__all__ = ["Explanation", "Fix", "explain"]

_MAX_CANDIDATES = 12


@attrs.frozen
class Fix:
    """One change that would allow a denied connection.

    ``description`` says it in one line; ``manifests`` are the changed objects (apply
    them to get the fix); ``also_allows`` the other connections it would newly allow.
    """

    kind: str
    description: str
    manifests: tuple[dict[str, Any], ...]
    also_allows: tuple[Change, ...] = ()

    def __str__(self) -> str:
        extra = f"; also allows {len(self.also_allows)} other pair(s)" if self.also_allows else "; allows nothing else"
        return f"{self.description}{extra}"


@attrs.frozen
class Explanation:
    """Why ``connection`` is allowed or denied, and for a denied one how to allow it."""

    connection: Connection
    allowed: bool
    verdict: Any  # the cluster's Verdict for the connection
    allowing: tuple[RuleOrigin, ...] = ()  # every allow rule, both hooks (allowed connections)
    fixes: tuple[Fix, ...] = ()

    def text(self) -> str:
        lines = [f"{self.connection}: {'allowed' if self.allowed else 'denied'}"]
        if self.allowed:
            lines += [f"  allowed by {o}" for o in self.allowing]
        else:
            lines.append("  " + self.verdict.explain().splitlines()[0])
            if not self.fixes:
                lines.append("  no single change found that would allow it")
            for i, fix in enumerate(self.fixes, 1):
                lines.append(f"  fix {i}: {fix}")
                lines += [f"      + {ch}" for ch in fix.also_allows[:5]]
                if len(fix.also_allows) > 5:
                    lines.append(f"      + … {len(fix.also_allows) - 5} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        import html

        color = "#2e7d32" if self.allowed else "#c62828"
        body = html.escape(self.text()[:50_000])
        return f'<pre style="border-left:4px solid {color};padding-left:6px">{body}</pre>'


def explain(reach: Reachability, src: str, dst: str, port: int, protocol: str = "TCP") -> Explanation:
    cluster = reach.cluster
    cluster.backend.reset_conntrack()
    verdict = cluster.check(src, dst, port, protocol, reach.http)
    conn = Connection(src, dst, int(port), str(protocol).upper())
    if verdict.allowed:
        return Explanation(conn, True, verdict, allowing=tuple(_allowing(cluster, verdict)))
    fixes = _fixes(reach, conn, verdict)
    return Explanation(conn, False, verdict, fixes=tuple(fixes))


# -- allowed: every allowing rule ------------------------------------------------------------
def _hook_endpoint(cluster: Cluster, verdict: Any, direction: Direction) -> str | None:
    peer = verdict.src if direction == Direction.EGRESS else verdict.dst
    return peer.ref if peer.pod_name else None


def _allowing(cluster: Cluster, verdict: Any) -> list[RuleOrigin]:
    out: dict[RuleOrigin, None] = {}
    proto, port = verdict.packet.protocol, verdict.packet.policy_port
    for direction, hook in ((Direction.EGRESS, verdict.egress), (Direction.INGRESS, verdict.ingress)):
        if hook is None or not hook.result.enforced:
            continue
        ref = _hook_endpoint(cluster, verdict, direction)
        remote = cluster.identity(hook.result.remote_identity)
        if ref is None or remote is None:
            continue
        policy = cluster.endpoint_policy(ref)
        for flt in policy.filters.get(direction, ()):
            if not flt.covers_port(proto, port):
                continue
            for sel, pol in flt.selectors.items():
                if not pol.deny and (sel.wildcard or sel.matches(remote)):
                    out.update(dict.fromkeys(sorted(pol.origins)))
        if hook.entry is not None:
            out.update(dict.fromkeys(o for o in sorted(hook.entry.origins) if o.kind == "reserved"))
    return list(out)


# -- denied: candidate fixes -----------------------------------------------------------------
def _fixes(reach: Reachability, conn: Connection, verdict: Any) -> list[Fix]:
    cluster = reach.cluster
    manifests = cluster.to_manifests()
    per_hook: list[list[tuple[str, str, list[dict[str, Any]]]]] = []
    for direction, hook in ((Direction.EGRESS, verdict.egress), (Direction.INGRESS, verdict.ingress)):
        if hook is None:
            # the egress hook dropped first; judge ingress on its own to know if it drops too
            if direction == Direction.INGRESS and _ingress_denies(reach, conn):
                per_hook.append(list(_hook_candidates(cluster, manifests, conn, verdict, direction, None)))
            continue
        if hook.result.enforced and not hook.allowed:
            per_hook.append(list(_hook_candidates(cluster, manifests, conn, verdict, direction, hook)))
    if not per_hook:
        return []
    combos: list[tuple[str, str, list[dict[str, Any]]]] = []
    if len(per_hook) == 1:
        combos = per_hook[0]
    else:
        for kind_a, text_a, docs_a in per_hook[0][:3]:
            for kind_b, text_b, docs_b in per_hook[1][:3]:
                merged = _merge_docs(docs_a, docs_b)
                if merged is not None:
                    combos.append((f"{kind_a}+{kind_b}", f"{text_a}, and {text_b}", merged))
    before = reach
    out: list[Fix] = []
    seen: set[str] = set()
    for kind, text, docs in combos[:_MAX_CANDIDATES]:
        if text in seen:
            continue
        seen.add(text)
        trial = _build(manifests, docs, cluster)
        if trial is None:
            continue
        trial.backend.reset_conntrack()
        if not trial.check(conn.src, conn.dst, conn.port, conn.protocol, reach.http).allowed:
            continue
        added = diff(before, trial.reachability()).added
        others = tuple(ch for ch in added if (ch.witness.src, ch.witness.dst) != (conn.src, conn.dst))
        changed = tuple(d for d in docs)
        out.append(Fix(kind, text, changed, others))
    out.sort(key=lambda f: (len(f.also_allows), sum(len(c.text()) for c in f.also_allows), f.description))
    return out


def _ingress_denies(reach: Reachability, conn: Connection) -> bool:
    cs = reach.peer_connections(conn.src, conn.dst)
    found = cs.outcomes("ICMP" if conn.protocol.startswith("ICMP") else conn.protocol, conn.port)
    if found is not None:
        return False
    # no allowed segment: is it the ingress side? evaluate it alone with an open egress
    from ._engine import TableCache

    s, d, fam = reach._peer_pair(conn.src, conn.dst)
    if d.policy is None:
        return False
    tables: TableCache = reach._full_tables()
    ing = tables.table(d.policy, int(Direction.INGRESS), s.identity)
    alone = tables.connections(None, ing, fam)
    return not alone.allows("ICMP" if conn.protocol.startswith("ICMP") else conn.protocol, conn.port)


def _build(manifests: list[dict[str, Any]], docs: list[dict[str, Any]], cluster: Cluster) -> Cluster | None:
    from .._cluster import Cluster as _Cluster
    from ..exceptions import CiliumpyError

    by_key = {_doc_key(d): d for d in docs}
    merged = [by_key.pop(_doc_key(m), m) for m in manifests] + list(by_key.values())
    try:
        return _Cluster.from_manifests(
            merged, dual_stack=cluster.config.dual_stack, cluster_name=cluster.config.cluster_name
        )
    except CiliumpyError:
        return None


def _doc_key(doc: dict[str, Any]) -> tuple[str, str, str]:
    meta = doc.get("metadata") or {}
    return (str(doc.get("kind")), str(meta.get("namespace", "")), str(meta.get("name")))


def _merge_docs(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    keys_a = {_doc_key(d) for d in a}
    if any(_doc_key(d) in keys_a for d in b):
        return None  # both fixes edit the same object; not combined
    return [*a, *b]


def _peer_ref(conn: Connection, direction: Direction) -> str:
    return conn.src if direction == Direction.INGRESS else conn.dst


def _hook_candidates(
    cluster: Cluster,
    manifests: list[dict[str, Any]],
    conn: Connection,
    verdict: Any,
    direction: Direction,
    hook: Any,
) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    ref = conn.src if direction == Direction.EGRESS else conn.dst
    peer = _peer_ref(conn, direction)
    policy = cluster.endpoint_policy(ref)
    remote_num = hook.result.remote_identity if hook is not None else cluster.identity_of(peer).id
    remote = cluster.identity(remote_num)
    proto = verdict.packet.protocol
    port = verdict.packet.policy_port
    proto_name = conn.protocol if not conn.protocol.startswith("ICMP") else "ICMP"
    section = "ingress" if direction == Direction.INGRESS else "egress"
    # 1. a deny rule decides: removing the rule is the only change that lets it through
    if hook is not None and hook.entry is not None and hook.entry.deny:
        for origin in sorted(hook.entry.origins):
            doc = _edit(manifests, origin, lambda rule: None)
            if doc is not None:
                yield "remove-deny", f"remove deny rule {origin}", [doc]
        return
    peer_block = _peer_block(cluster, peer, direction)
    port_block = {"port": str(port), "protocol": proto_name}
    for flt in policy.filters.get(direction, ()):
        for sel, pol in flt.selectors.items():
            if pol.deny:
                continue
            selects = sel.wildcard or (remote is not None and sel.matches(remote))
            covers = flt.covers_port(proto, port)
            for origin in sorted(pol.origins):
                if origin.kind == "reserved":
                    continue
                if covers and not selects and peer_block is not None:
                    # 2. the rule covers the port but not the peer: add the peer to it
                    doc = _edit(manifests, origin, lambda rule, pb=peer_block, k=origin.kind: _add_peer(rule, pb, k))
                    if doc is not None:
                        yield "add-peer", f"add {peer} to the peers of {origin}", [doc]
                    # 3. or give the source the labels the rule's selector asks for
                    if direction == Direction.INGRESS and "/" in peer and remote is not None:
                        labels = _missing_labels(sel, remote)
                        if labels:
                            pod = _relabel(manifests, peer, labels)
                            if pod is not None:
                                text = ", ".join(f"{k}={v}" for k, v in labels.items())
                                yield "add-label", f"label {peer} with {text} (selected by {origin})", [pod]
                if selects and not covers and flt.protocol != 0:
                    # 4. the rule selects the peer on other ports: add the port to it
                    doc = _edit(manifests, origin, lambda rule, pb=port_block, k=origin.kind: _add_port(rule, pb, k))
                    if doc is not None:
                        yield "add-port", f"add {proto_name}/{port} to the ports of {origin}", [doc]
    # 5. a new rule in a policy that already selects the endpoint
    if peer_block is not None:
        for sel_rule in policy.rules:
            origin = sel_rule.origin
            if origin.kind not in ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"):
                continue
            new_rule = {**peer_block, "toPorts": [{"ports": [port_block]}]} if proto_name != "ICMP" else peer_block
            doc = _edit(
                manifests,
                RuleOrigin(origin.kind, origin.namespace, origin.name, f"{origin.rule}.{section}[new]"),
                lambda _rule, nr=new_rule: nr,
            )
            if doc is not None:
                yield "add-rule", f"add an {section} rule for {peer} on {proto_name}/{port} to {origin}", [doc]
            break


def _peer_block(cluster: Cluster, peer: str, direction: Direction) -> dict[str, Any] | None:
    """A CNP peer entry selecting ``peer`` (a pod by its labels, world, host, an address)."""
    ingress = direction == Direction.INGRESS
    if "/" in peer:
        ep = cluster.endpoint(peer)
        labels = {k: v for k, v in ep.labels.items()}
        labels[f"{SOURCE_K8S}:{NAMESPACE_KEY}"] = ep.namespace
        return {("fromEndpoints" if ingress else "toEndpoints"): [{"matchLabels": labels}]}
    if peer in ("world", "host"):
        return {("fromEntities" if ingress else "toEntities"): [peer]}
    net = f"{peer}/32" if ":" not in peer else f"{peer}/128"
    return {("fromCIDR" if ingress else "toCIDR"): [net]}


def _missing_labels(sel: Any, remote: Any) -> dict[str, str]:
    """Pod labels the remote identity lacks for ``sel`` to select it, when every unmet
    requirement is a k8s ``key In (one value)`` (else {}: no label alone would do)."""
    out: dict[str, str] = {}
    for req in sel.requirements:
        if req.matches(remote.labels):
            continue
        if req.operator is not Operator.IN or len(req.values) != 1 or req.source not in (SOURCE_K8S, "any"):
            return {}
        if req.key.startswith("io.") or req.key == NAMESPACE_KEY:
            return {}
        out[req.key] = req.values[0]
    return out


def _relabel(manifests: list[dict[str, Any]], ref: str, labels: dict[str, str]) -> dict[str, Any] | None:
    ns, _, name = ref.partition("/")
    for doc in manifests:
        meta = doc.get("metadata") or {}
        if doc.get("kind") == "Pod" and meta.get("namespace") == ns and meta.get("name") == name:
            new = copy.deepcopy(doc)
            new["metadata"].setdefault("labels", {}).update(labels)
            return new
    return None


_STEP = re.compile(r"([A-Za-z]+)(?:\[(\d+|new)\])?")


def _edit(manifests: list[dict[str, Any]], origin: RuleOrigin, change: Any) -> dict[str, Any] | None:
    """A copy of the policy ``origin`` names with ``change`` applied to the rule at its
    path (``change(rule) -> new rule``, None deletes it); None if it cannot be found."""
    for doc in manifests:
        if _doc_key(doc) != (origin.kind, origin.namespace, origin.name):
            continue
        new = copy.deepcopy(doc)
        path: str | None = origin.rule
        if origin.kind == "NetworkPolicy":
            path = _np_path(doc, origin.rule)
        if path is None:
            return None
        steps = [m.groups() for m in _STEP.finditer(path)]
        node: Any = new
        for i, (key, index) in enumerate(steps):
            last = i == len(steps) - 1
            if last:
                items = node.setdefault(key, [])
                if index == "new":
                    items.append(change(None))
                    return new
                if index is None or int(index) >= len(items):
                    return None
                result = change(items[int(index)])
                if result is None:
                    del items[int(index)]
                    if not items:
                        node.pop(key)
                else:
                    items[int(index)] = result
                return new
            node = node.get(key)
            if index is not None and index != "new":
                node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
            if node is None:
                return None
    return None


def _np_path(doc: dict[str, Any], path: str) -> str | None:
    """A translated NetworkPolicy rule path (``spec.ingress[k]`` counts the Cilium rules the
    agent derives) as the path of the NetworkPolicy rule it came from."""
    m = re.fullmatch(r"spec\.(ingress|egress)\[(\d+)\]", path)
    if m is None:
        return None
    section, k = m.group(1), int(m.group(2))
    count = 0
    for i, rule in enumerate((doc.get("spec") or {}).get(section) or [{}]):
        peers = rule.get("from" if section == "ingress" else "to")
        if peers is None:
            derived = 1
        else:
            derived = int(any("ipBlock" not in p for p in peers)) + int(any("ipBlock" in p for p in peers))
        if k < count + max(derived, 1):
            return f"spec.{section}[{i}]"
        count += max(derived, 1)
    return None


def _add_peer(rule: dict[str, Any], block: dict[str, Any], kind: str) -> dict[str, Any]:
    rule = dict(rule or {})
    if kind == "NetworkPolicy":
        key = "from" if "fromEndpoints" in block or "fromEntities" in block or "fromCIDR" in block else "to"
        rule[key] = [*(rule.get(key) or []), _np_peer(block)]
        return rule
    for field, values in block.items():
        rule[field] = [*(rule.get(field) or []), *values]
    return rule


def _np_peer(block: dict[str, Any]) -> dict[str, Any]:
    ((field, values),) = block.items()
    if field.endswith("Endpoints"):
        labels = dict(values[0]["matchLabels"])
        ns = labels.pop(f"{SOURCE_K8S}:{NAMESPACE_KEY}")
        return {
            "podSelector": {"matchLabels": labels},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
        }
    if field.endswith("CIDR"):
        return {"ipBlock": {"cidr": values[0]}}
    return {"ipBlock": {"cidr": "0.0.0.0/0"}}


def _add_port(rule: dict[str, Any], port: dict[str, Any], kind: str) -> dict[str, Any]:
    rule = dict(rule or {})
    if kind == "NetworkPolicy":
        rule["ports"] = [*(rule.get("ports") or []), {"port": int(port["port"]), "protocol": port["protocol"]}]
        return rule
    to_ports = [dict(tp) for tp in rule.get("toPorts") or []]
    plain = next((tp for tp in to_ports if "rules" not in tp), None)
    if plain is None:
        plain = {"ports": []}
        to_ports.append(plain)
    plain["ports"] = [*(plain.get("ports") or []), port]
    rule["toPorts"] = to_ports
    return rule
