"""Kubernetes NetworkPolicy as Cilium sees it: each policy becomes one Cilium rule.

The agent translates a NetworkPolicy into an ``api.Rule`` (``pkg/k8s/network_policy.go``):
``podSelector`` is the endpoint selector, each peer becomes a ``fromEndpoints``/``toEndpoints``
selector confined to the policy's namespace unless it has a namespace selector, ``ipBlock``
becomes a CIDR set, a rule without peers allows every entity, and a policy type without
rules isolates the pods in that direction.
"""

from __future__ import annotations

from typing import Any

from ._datapath import Direction
from ._labels import NAMESPACE_KEY, SOURCE_K8S
from ._mapstate import namespace_requirement
from ._model import (
    CIDRRule,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyRule,
    PeerRule,
    PortProtocol,
    PortRule,
    Rule,
)
from ._selectors import EndpointSelector, Operator, Requirement

__all__ = ["translate_network_policy"]


def _np_peer_selector(peer: NetworkPolicyPeer, namespace: str) -> tuple[str, Any]:
    if peer.ip_block is not None:
        return "cidr", CIDRRule(cidr=peer.ip_block.cidr, except_=peer.ip_block.except_)
    reqs: list[Requirement] = []
    if peer.pod_selector is not None:
        reqs.extend(peer.pod_selector.requirements)
    if peer.namespace_selector is not None:
        for r in peer.namespace_selector.requirements:
            reqs.append(Requirement(SOURCE_K8S, "io.cilium.k8s.namespace.labels." + r.key, r.operator, r.values))
        reqs.append(Requirement(SOURCE_K8S, NAMESPACE_KEY, Operator.EXISTS, ()))
    else:
        reqs.append(namespace_requirement(namespace))
    return "endpoints", EndpointSelector((), tuple(reqs))


def translate_network_policy(np_: NetworkPolicy) -> Rule:
    """A Kubernetes NetworkPolicy as the Cilium rule the agent derives from it."""
    sections: dict[Direction, tuple[PeerRule, ...] | None] = {Direction.INGRESS: None, Direction.EGRESS: None}
    for direction in np_.effective_types():
        items = np_.ingress if direction == Direction.INGRESS else np_.egress
        out: list[PeerRule] = []
        for r in items or ():
            out.extend(_translate_np_rule(r, direction, np_.namespace))
        if not out:
            out = [PeerRule(direction=direction)]  # isolated, nothing allowed
        sections[direction] = tuple(out)
    return Rule(
        endpoint_selector=np_.pod_selector, ingress=sections[Direction.INGRESS], egress=sections[Direction.EGRESS]
    )


def _translate_np_rule(r: NetworkPolicyRule, direction: Direction, namespace: str) -> list[PeerRule]:
    to_ports = None
    if r.ports is not None:
        pps = []
        for p in r.ports:
            port = "0" if p.port is None else str(p.port)
            pps.append(PortProtocol(port, p.end_port or 0, p.protocol))
        to_ports = (PortRule(tuple(pps)),)
    if r.peers is None:
        return [PeerRule(direction=direction, entities=("all",), to_ports=to_ports)]
    endpoints: list[EndpointSelector] = []
    cidrs: list[CIDRRule] = []
    for peer in r.peers:
        kind, value = _np_peer_selector(peer, namespace)
        (cidrs if kind == "cidr" else endpoints).append(value)
    out = []
    if endpoints:
        out.append(PeerRule(direction=direction, endpoints=tuple(endpoints), to_ports=to_ports))
    if cidrs:
        out.append(PeerRule(direction=direction, cidr_set=tuple(cidrs), to_ports=to_ports))
    return out
