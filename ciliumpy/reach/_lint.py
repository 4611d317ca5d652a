"""Policy lint: rules that cannot do what they look like they do, with file:line and a fix.

Checks (``Finding.check``):

* ``selects-nothing``: a policy whose subject selector selects no pod;
* ``never-matches``: a rule whose peers select no identity (``fromEndpoints: []``, labels no
  pod has);
* ``shadowed-by-deny``: an allow whose every peer and port a deny rule of the same pods covers;
* ``redundant``: an allow whose every peer and port another allow rule already allows;
* ``empty-section``: ``ingress: []`` / ``egress: []``, which is no rule at all (not deny-all);
* ``fqdn-without-dns-proxy``: ``toFQDNs`` for pods whose DNS traffic to the cluster DNS is not
  redirected to the DNS proxy, so no name is ever learned;
* ``match-pattern-depth``: ``*.example.com`` matches one label only, not ``a.b.example.com``;
* ``cidr-selects-pods``: a CIDR peer containing pod addresses (Cilium never selects pods by
  CIDR: they have their own identities);
* ``host-network-pod``: a policy selecting hostNetwork pods, which Cilium does not enforce;
* ``l7-port-not-exposed``: an ingress L7 rule on a port no selected pod declares;
* ``named-port-undefined``: a named port no (selected) pod defines.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from .._datapath import Direction, Protocol, RuleOrigin
from .._identity import Identity
from .._mapstate import EndpointPolicy, L4Filter, PeerSelector, endpoint_selector_for_peer, subject_selector
from .._model import CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy, NetworkPolicy, PeerRule, Rule
from ..exceptions import PolicyError

if TYPE_CHECKING:
    from .._cluster import Cluster

__all__ = ["Finding", "LintReport", "lint"]

_SECTIONS: tuple[tuple[str, Direction, bool], ...] = (
    ("ingress", Direction.INGRESS, False),
    ("ingressDeny", Direction.INGRESS, True),
    ("egress", Direction.EGRESS, False),
    ("egressDeny", Direction.EGRESS, True),
)


@attrs.frozen
class Finding:
    """One lint finding: where (``document``:``line``, object, field), what, and a one-line fix."""

    check: str
    severity: str  # "error" (cannot work as written), "warning" (likely a mistake), "info"
    kind: str
    namespace: str
    name: str
    field: str
    message: str
    fix: str
    document: str | None = None
    line: int | None = None

    @property
    def location(self) -> str:
        where = self.document or "<cluster>"
        return f"{where}:{self.line}" if self.line is not None else where

    def __str__(self) -> str:
        obj = f"{self.namespace}/{self.name}" if self.namespace else self.name
        head = f"{self.location}: {self.severity}: [{self.check}] {self.kind} {obj} {self.field}"
        return f"{head}: {self.message} -- fix: {self.fix}"


@attrs.frozen
class LintReport:
    """Every finding, in document order; iterable, and truthy when something was found."""

    findings: tuple[Finding, ...]

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.findings)

    def __len__(self) -> int:
        return len(self.findings)

    def __bool__(self) -> bool:
        return bool(self.findings)

    def by_check(self, check: str) -> list[Finding]:
        return [f for f in self.findings if f.check == check]

    def text(self) -> str:
        return "\n".join(str(f) for f in self.findings) or "no findings"

    def __str__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        import html

        def row(f: Finding) -> str:
            obj = f"{f.kind} {f.namespace + '/' if f.namespace else ''}{f.name}"
            cells = [f.location, f.severity, f.check, obj, f.field, f.message, f.fix]
            return "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"

        rows = "".join(row(f) for f in self.findings[:300])
        head = "".join(f"<th>{h}</th>" for h in ("where", "severity", "check", "object", "field", "problem", "fix"))
        head = f"<tr>{head}</tr>"
        return f"<table>{head}{rows}</table>"[:100_000]


PolicyObject = CiliumNetworkPolicy | CiliumClusterwideNetworkPolicy | NetworkPolicy


class _Linter:
    def __init__(self, cluster: Cluster, docs: dict[tuple[str, str, str], Any]) -> None:
        self.cluster = cluster
        self.docs = docs
        self.findings: list[Finding] = []
        self.idents: list[Identity] = cluster.identities()
        self.endpoints = cluster.endpoints
        self.ep_ident = {ref: cluster.identity_of(ref) for ref in self.endpoints}
        self.policies: dict[str, EndpointPolicy] = {ref: cluster.endpoint_policy(ref) for ref in self.endpoints}
        self._selected: dict[PeerSelector, frozenset[int]] = {}
        # allow rules with endpoint peers: (object, origin, direction, subject pods, selectors)
        self._allows: list[tuple[PolicyObject, RuleOrigin, Direction, list[str], list[PeerSelector]]] = []

    # -- helpers ---------------------------------------------------------------------------
    def add(self, check: str, severity: str, obj: PolicyObject, field: str, message: str, fix: str) -> None:
        from .._manifests import line_of

        doc = self.docs.get(obj.key)
        line = line_of(doc.data, field) if doc is not None else None
        source = doc.source if doc is not None else None
        self.findings.append(
            Finding(
                check,
                severity,
                obj.KIND,
                getattr(obj, "namespace", "") or "",
                obj.name,
                field,
                message,
                fix,
                source,
                line,
            )
        )

    def selects(self, sel: PeerSelector) -> frozenset[int]:
        found = self._selected.get(sel)
        if found is None:
            if sel.wildcard:
                found = frozenset(i.id for i in self.idents) | {0}
            else:
                found = frozenset(i.id for i in self.idents if sel.matches(i))
            self._selected[sel] = found
        return found

    def subject_pods(self, obj: PolicyObject, rule: Rule) -> list[str]:
        if isinstance(obj, NetworkPolicy):
            sel = subject_selector(obj.pod_selector, obj.KIND, obj.namespace)
        elif rule.endpoint_selector is not None:
            sel = subject_selector(rule.endpoint_selector, obj.KIND, getattr(obj, "namespace", ""))
        else:
            return []
        ids = self.selects(sel)
        return [ref for ref, ident in self.ep_ident.items() if ident.id in ids]

    def host_pods(self, obj: PolicyObject, rule: Rule) -> list[str]:
        """hostNetwork pods the policy's subject selector would select if they were endpoints."""
        from .._identity import endpoint_identity_labels
        from .._model import Namespace

        if isinstance(obj, NetworkPolicy):
            sel = subject_selector(obj.pod_selector, obj.KIND, obj.namespace)
        elif rule.endpoint_selector is not None:
            sel = subject_selector(rule.endpoint_selector, obj.KIND, getattr(obj, "namespace", ""))
        else:
            return []
        namespaces = self.cluster.namespaces
        out = []
        for ref, pod in sorted(self.cluster.host_network_pods.items()):
            ns = namespaces.get(pod.namespace) or Namespace(pod.namespace)
            labels = endpoint_identity_labels(
                pod.labels, pod.namespace, ns.effective_labels(), pod.service_account, self.cluster.config.cluster_name
            )
            if sel.matches(Identity(0, labels)):
                out.append(ref)
        return out

    def rules(self) -> Iterator[tuple[PolicyObject, str, Rule]]:
        for obj in self.cluster.policies:
            if isinstance(obj, NetworkPolicy):
                yield obj, "spec", Rule(endpoint_selector=obj.pod_selector)
            elif isinstance(obj, CiliumNetworkPolicy | CiliumClusterwideNetworkPolicy):
                for path, rule in obj.rule_paths():
                    yield obj, path, rule

    # -- checks ----------------------------------------------------------------------------
    def run(self) -> list[Finding]:
        for obj, path, rule in self.rules():
            if rule.endpoint_selector is None and not isinstance(obj, NetworkPolicy):
                continue  # a host policy (nodeSelector)
            pods = self.subject_pods(obj, rule)
            field = "spec.podSelector" if isinstance(obj, NetworkPolicy) else f"{path}.endpointSelector"
            host = self.host_pods(obj, rule)
            if host:
                self.add(
                    "host-network-pod",
                    "warning",
                    obj,
                    field,
                    f"selects hostNetwork pods {', '.join(host[:3])}: Cilium does not enforce policy on them",
                    "use a CiliumClusterwideNetworkPolicy with nodeSelector (host policy) for node traffic",
                )
            if not pods and not host:
                ns = getattr(obj, "namespace", "")
                self.add(
                    "selects-nothing",
                    "warning",
                    obj,
                    field,
                    f"selects no pod{' in namespace ' + ns if ns else ''}",
                    "match the labels of the pods it is meant for, or delete the policy",
                )
            if isinstance(obj, NetworkPolicy):
                self.network_policy(obj, pods)
            else:
                self.cilium_rule(obj, path, rule, pods)
        self.shadowed_and_redundant()
        return self.findings

    def cilium_rule(self, obj: PolicyObject, path: str, rule: Rule, pods: list[str]) -> None:
        for section, direction, deny in _SECTIONS:
            items = rule.rules_for(direction, deny)
            raw = getattr(rule, {"ingressDeny": "ingress_deny", "egressDeny": "egress_deny"}.get(section, section))
            if raw is not None and len(raw) == 0 and not deny:
                self.add(
                    "empty-section",
                    "warning",
                    obj,
                    f"{path}.{section}",
                    f"{section}: [] is no rule at all: it neither allows nor denies anything",
                    f"write {section}: [{{}}] to deny all {section}, or remove the key",
                )
            for i, pr in enumerate(items):
                where = f"{path}.{section}[{i}]"
                self.peer_rule(obj, where, pr, pods, direction)

    def peer_rule(self, obj: PolicyObject, where: str, pr: PeerRule, pods: list[str], direction: Direction) -> None:
        ingress = direction == Direction.INGRESS
        ns = getattr(obj, "namespace", "")
        cluster_name = self.cluster.config.cluster_name
        if pr.endpoints is not None:
            field = f"{where}.{'fromEndpoints' if ingress else 'toEndpoints'}"
            sels = [endpoint_selector_for_peer(s, obj.KIND, ns, cluster_name) for s in pr.endpoints]
            if not sels:
                self.add(
                    "never-matches",
                    "warning",
                    obj,
                    field,
                    "an empty list selects nothing",
                    "list the peers, or use [{}] for all",
                )
            if not pr.deny and pods and any(self.selects(sel) for sel in sels):
                origin = RuleOrigin(obj.KIND, ns, obj.name, where)
                self._allows.append((obj, origin, direction, pods, sels))
            for j, sel in enumerate(sels):
                if not self.selects(sel):
                    self.add(
                        "never-matches",
                        "warning",
                        obj,
                        f"{field}[{j}]",
                        f"selects no pod or identity ({sel})",
                        "fix the labels to ones the intended pods carry",
                    )
        for j, cidr in enumerate(pr.cidr or ()):
            self.cidr_peer(obj, f"{where}.{'fromCIDR' if ingress else 'toCIDR'}[{j}]", cidr, ())
        for j, cr in enumerate(pr.cidr_set or ()):
            if cr.cidr is not None:
                self.cidr_peer(obj, f"{where}.{'fromCIDRSet' if ingress else 'toCIDRSet'}[{j}]", cr.cidr, cr.except_)
        for j, fq in enumerate(pr.fqdns or ()):
            field = f"{where}.toFQDNs[{j}]"
            self.pattern(obj, f"{field}.matchPattern", fq.match_pattern)
            self.fqdn_proxy(obj, field, pods)
        for k, port_rule in enumerate(pr.to_ports or ()):
            for m, dns in enumerate((port_rule.rules.dns if port_rule.rules is not None else None) or ()):
                self.pattern(obj, f"{where}.toPorts[{k}].rules.dns[{m}].matchPattern", dns.match_pattern)
            for m, pp in enumerate(port_rule.ports or ()):
                field = f"{where}.toPorts[{k}].ports[{m}].port"
                if pp.is_named:
                    self.named_port(obj, field, pp.port, pods, ingress)
                elif ingress and port_rule.has_l7 and not pr.deny:
                    self.l7_port(obj, field, pp, pods)

    def network_policy(self, obj: NetworkPolicy, pods: list[str]) -> None:
        for section in ("ingress", "egress"):
            items = getattr(obj, section) or ()
            for i, r in enumerate(items):
                for j, peer in enumerate(r.peers or ()):
                    if peer.ip_block is not None:
                        field = f"spec.{section}[{i}].{'from' if section == 'ingress' else 'to'}[{j}].ipBlock"
                        self.cidr_peer(obj, field, peer.ip_block.cidr, peer.ip_block.except_)
                for j, port in enumerate(r.ports or ()):
                    if isinstance(port.port, str) and not port.port.isdigit():
                        self.named_port(
                            obj, f"spec.{section}[{i}].ports[{j}].port", port.port, pods, section == "ingress"
                        )

    def cidr_peer(self, obj: PolicyObject, field: str, cidr: str, excepts: Iterable[str]) -> None:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
            holes = [ipaddress.ip_network(e, strict=False) for e in excepts]
        except ValueError:
            return
        inside = [
            ref
            for ref, ep in self.endpoints.items()
            if any(ip in net and not any(ip in h for h in holes) for ip in ep.ips)
        ]
        if inside and net.prefixlen:
            self.add(
                "cidr-selects-pods",
                "warning",
                obj,
                field,
                f"{cidr} contains pod addresses ({', '.join(inside[:3])}{', …' if len(inside) > 3 else ''}) but CIDR "
                "rules never select pods, which have identities of their own",
                "select the pods with podSelector/toEndpoints (fromEndpoints) instead of their addresses",
            )

    def pattern(self, obj: PolicyObject, field: str, pattern: str | None) -> None:
        if pattern and pattern.startswith("*.") and len(pattern) > 2:
            rest = pattern[2:]
            self.add(
                "match-pattern-depth",
                "info",
                obj,
                field,
                f"{pattern!r} matches exactly one label before {rest} (www.{rest}, not a.b.{rest} nor {rest})",
                f"use '**.{rest}' (Cilium 1.19+) or add patterns for the deeper names",
            )

    def fqdn_proxy(self, obj: PolicyObject, field: str, pods: list[str]) -> None:
        server = self.cluster.dns_server()
        if server is None:
            self.add(
                "fqdn-without-dns-proxy",
                "warning",
                obj,
                field,
                "toFQDNs needs the cluster DNS, and no pod is labelled k8s-app=kube-dns",
                "deploy the cluster DNS (k8s-app=kube-dns) or select addresses with toCIDR",
            )
            return
        dns_id = self.ep_ident[server].id
        missing = [p for p in pods if not self._dns_redirected(self.policies[p], dns_id)]
        if missing:
            self.add(
                "fqdn-without-dns-proxy",
                "warning",
                obj,
                field,
                f"DNS from {', '.join(missing[:3])} to {server} bypasses the DNS proxy, so no name is learned",
                "add an egress rule to k8s-app=kube-dns on 53/UDP with rules: {dns: [{matchPattern: '*'}]}",
            )

    @staticmethod
    def _dns_redirected(policy: EndpointPolicy, dns_id: int) -> bool:
        from ._engine import PolicyIndex

        chosen, _auth = PolicyIndex(policy).decide(int(Direction.EGRESS), dns_id, int(Protocol.UDP), 53)
        return chosen is not None and chosen[1].is_redirect

    def named_port(self, obj: PolicyObject, field: str, name: str, pods: list[str], ingress: bool) -> None:
        pool = pods if ingress else list(self.endpoints)
        if not any(p.name == name for ref in pool for p in self.endpoints[ref].ports):
            who = "no selected pod" if ingress else "no pod in the cluster"
            self.add(
                "named-port-undefined",
                "warning",
                obj,
                field,
                f"named port {name!r} is defined by {who}, so the rule allows nothing",
                f"use the port number, or name a containerPort {name!r}",
            )

    def l7_port(self, obj: PolicyObject, field: str, pp: Any, pods: list[str]) -> None:
        declared = [p for ref in pods for p in self.endpoints[ref].ports]
        if not pods or not declared:
            return  # pods that declare no ports may listen anywhere
        first, last = pp.range()
        if first == 0 and last == 0:
            return
        if not any(first <= p.port <= last for p in declared):
            self.add(
                "l7-port-not-exposed",
                "warning",
                obj,
                field,
                f"L7 rules on port {pp.port} but no selected pod declares that port",
                "put the rule on a port the pods listen on (containerPort)",
            )

    # -- shadowing and redundancy over the resolved L4 filters --------------------------------
    def shadowed_and_redundant(self) -> None:
        seen: set[int] = set()
        shadowed: dict[RuleOrigin, set[RuleOrigin]] = {}
        redundant: dict[RuleOrigin, set[RuleOrigin]] = {}
        live: set[RuleOrigin] = set()
        for pol in self.policies.values():
            if id(pol) in seen:
                continue
            seen.add(id(pol))
            for direction in Direction:
                filters = pol.filters.get(direction, [])
                items = [(f, sel, sp) for f in filters for sel, sp in f.selectors.items()]
                for flt, sel, sp in items:
                    if sp.deny:
                        continue
                    ids = self.selects(sel)
                    if not ids:
                        continue  # selects nothing: reported as never-matches
                    denies: set[RuleOrigin] = set()
                    others: set[RuleOrigin] = set()
                    for f2, sel2, sp2 in items:
                        if (f2, sel2) == (flt, sel) or not _covers(f2, flt) or not ids <= self.selects(sel2):
                            continue
                        if sp2.deny:
                            denies |= sp2.origins
                        elif sp.l7 is None and sp2.l7 is None:
                            others |= sp2.origins
                    for origin in sp.origins:
                        if origin.kind == "reserved":
                            continue
                        if denies:
                            shadowed.setdefault(origin, set()).update(denies)
                        elif others - {origin} or len(sp.origins - {origin}) > 0:
                            redundant.setdefault(origin, set()).update((others | sp.origins) - {origin})
                        else:
                            live.add(origin)
        # An allow on the same peers and ports as a deny is merged away before any map entry
        # exists (the deny keeps only its own origins): it shows up in no filter at all.
        present = {
            o
            for pol in self.policies.values()
            for fs in pol.filters.values()
            for f in fs
            for sp in f.selectors.values()
            for o in sp.origins
        }
        for _obj, origin, direction, pods, sels in self._allows:
            if origin in present:
                continue
            by: set[RuleOrigin] = set()
            for ref in pods:
                for flt in self.policies[ref].filters.get(direction, []):
                    for sel, sp in flt.selectors.items():
                        if sp.deny and sel in sels:
                            by |= sp.origins
            if by:
                shadowed.setdefault(origin, set()).update(by)
        by_key = {p.key: p for p in self.cluster.policies}
        for origins, check, text in ((shadowed, "shadowed-by-deny", "denied"), (redundant, "redundant", "allowed")):
            for origin, why in sorted(origins.items()):
                if origin in live or (check == "redundant" and origin in shadowed):
                    continue
                obj = by_key.get((origin.kind, origin.namespace, origin.name))
                if obj is None:
                    continue
                names = ", ".join(
                    sorted({f"{o.kind} {o.namespace + '/' if o.namespace else ''}{o.name} {o.rule}" for o in why})[:3]
                )
                field = origin.rule
                if isinstance(obj, NetworkPolicy):
                    from ._explain import _np_path

                    doc = self.docs.get(obj.key)
                    field = (_np_path(doc.data, origin.rule) if doc is not None else None) or origin.rule
                self.add(
                    check,
                    "warning" if check == "shadowed-by-deny" else "info",
                    obj,
                    field,
                    f"everything this rule allows is {text} by {names}",
                    "delete the rule, or narrow the deny"
                    if check == "shadowed-by-deny"
                    else "delete one of the two rules",
                )


def _origin_text(o: RuleOrigin) -> str:
    return f"{o.kind} {o.namespace + '/' if o.namespace else ''}{o.name} {o.rule}"


def _covers(big: L4Filter, small: L4Filter) -> bool:
    if big.protocol == 0:
        return True
    return big.protocol == small.protocol and big.first <= small.first and small.last <= big.last


def lint(cluster_or_paths: Any) -> LintReport:
    """Lint policies: a :class:`~ciliumpy.Cluster`, or manifests (paths, directories, YAML
    text, dicts) which then also give each finding its file and line.

    >>> import ciliumpy
    >>> report = ciliumpy.lint('''
    ... apiVersion: cilium.io/v2
    ... kind: CiliumNetworkPolicy
    ... metadata: {name: web, namespace: prod}
    ... spec:
    ...   endpointSelector: {matchLabels: {app: web}}
    ...   ingress: []
    ...   egress: [{toEntities: [world]}]
    ... ''')
    >>> sorted({f.check for f in report})
    ['empty-section', 'selects-nothing']
    """
    from .._cluster import Cluster
    from .._manifests import load_located

    docs: dict[tuple[str, str, str], Any] = {}
    if isinstance(cluster_or_paths, Cluster):
        cluster = cluster_or_paths
    else:
        sources = cluster_or_paths if isinstance(cluster_or_paths, list | tuple) else (cluster_or_paths,)
        located = load_located(sources)
        cluster = Cluster()
        cluster.apply(*sources)
        for obj, doc in located:
            key = getattr(obj, "key", None)
            if key is not None and doc is not None:
                docs[key] = doc
    if not isinstance(cluster, Cluster):
        raise PolicyError("lint takes a Cluster or manifests", value=type(cluster_or_paths).__name__)
    findings = _Linter(cluster, docs).run()
    order = {name: i for i, name in enumerate(sorted({f.document or "" for f in findings}))}
    findings.sort(key=lambda f: (order[f.document or ""], f.line or 0, f.check))
    return LintReport(tuple(findings))
