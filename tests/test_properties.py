"""Properties of the policy engine on generated clusters, policies and flows (simulator).

Each test states a law Cilium's policy model obeys and checks it on examples drawn by
``ciliumpy.strategies``; a failure prints the cluster as manifests (``ClusterSpec`` repr).
The example counts keep the whole module well under a minute on two cores.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import yaml
from hypothesis import HealthCheck, assume, event, example, given, note, settings
from hypothesis import strategies as st

from ciliumpy import (
    CiliumClusterwideNetworkPolicy,
    CiliumNetworkPolicy,
    Cluster,
    Direction,
    DropReason,
    Endpoint,
    Namespace,
    NetworkPolicy,
    PolicyError,
)
from ciliumpy import strategies as cst
from ciliumpy.testing import ClusterSpec, Flow, labelled_map_state

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CHEAP = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ModelObject = CiliumNetworkPolicy | CiliumClusterwideNetworkPolicy | NetworkPolicy | Namespace | Endpoint


def map_states(cluster: Cluster) -> dict[str, Any]:
    """Every pod's map state keyed by peer labels, comparable across clusters."""
    return {ref: labelled_map_state(cluster, ref) for ref in sorted(cluster.endpoints)}


def policies_in(namespaces: list[str], **rule_options: Any) -> st.SearchStrategy[Any]:
    """CNP, CCNP or NetworkPolicy objects aimed at the given namespaces."""
    ns = st.sampled_from(namespaces)
    rules = cst.policy_rules(peers=cst.label_selectors(namespaces=ns), **rule_options)
    options = [cst.cilium_network_policies(namespaces=ns, rules=rules), cst.clusterwide_policies(rules=rules)]
    if rule_options.get("allow", True):  # a NetworkPolicy only allows
        options.append(cst.network_policies(namespaces=ns))
    return st.one_of(options)


def lockdown(cluster: Cluster, data: st.DataObject) -> None:
    """Maybe make every pod default-deny in some directions, so more flows start out blocked."""
    directions = data.draw(st.sampled_from(((), ("ingress",), ("egress",), ("ingress", "egress"))), label="lockdown")
    if directions:
        cluster.apply(
            {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumClusterwideNetworkPolicy",
                "metadata": {"name": "zz-lockdown"},
                "spec": {"endpointSelector": {}, **{d: [{}] for d in directions}},
            }
        )


def new_policy(cluster: Cluster, data: st.DataObject, **rule_options: Any) -> Any:
    policy = data.draw(policies_in(sorted(cluster.namespaces), **rule_options), label="added policy")
    assume(policy.key not in {p.key for p in cluster.policies})
    return policy


# --------------------------------------------------------------------------------------------
# round trips


@CHEAP
@given(
    st.one_of(
        cst.cilium_network_policies(),
        cst.clusterwide_policies(),
        cst.network_policies(),
        cst.namespaces(),
        cst.endpoints(),
    )
)
def test_model_objects_round_trip_through_manifests_and_yaml(obj: ModelObject) -> None:
    manifest = obj.to_manifest()
    assert type(obj).from_manifest(manifest) == obj
    assert type(obj).from_manifest(yaml.safe_load(yaml.safe_dump(manifest))) == obj


@PROPERTY
@given(cst.cluster_specs())
def test_cluster_rebuilt_from_its_manifests_has_identical_map_states(spec: ClusterSpec) -> None:
    original = spec.build()
    assert map_states(Cluster.from_manifests(original.to_manifests())) == map_states(original)
    assert map_states(Cluster.from_manifests(spec.to_yaml())) == map_states(original)


# --------------------------------------------------------------------------------------------
# order independence and monotonicity


@PROPERTY
@given(cst.cluster_specs(max_policies=4), st.permutations(range(4)), st.permutations(range(4)))
def test_map_state_is_independent_of_policy_insertion_order(
    spec: ClusterSpec, first: list[int], second: list[int]
) -> None:
    policies = list(spec.policies)
    order_a = [policies[i] for i in first if i < len(policies)]
    order_b = [policies[i] for i in second if i < len(policies)]
    one_by_one = ClusterSpec(namespaces=spec.namespaces, endpoints=spec.endpoints).build()
    for policy in order_a:
        one_by_one.apply(policy)
    all_at_once = Cluster()
    all_at_once.apply(*spec.namespaces, *spec.endpoints, *order_b)
    assert map_states(one_by_one) == map_states(all_at_once)


def _mode(cluster: Cluster, who: str, direction: Direction) -> tuple[bool, bool]:
    """(enforced, default-deny) of one hook; a hook at world or host enforces nothing."""
    if "/" not in who:
        return (False, False)
    policy = cluster.endpoint_policy(who)
    return policy.enforced[direction], policy.default_deny[direction]


@PROPERTY
@given(cst.cluster_specs(min_endpoints=1), st.data())
def test_adding_an_allow_policy_never_removes_reachability(spec: ClusterSpec, data: st.DataObject) -> None:
    cluster = spec.build()
    lockdown(cluster, data)
    flows = [data.draw(cst.flows(cluster)) for _ in range(10)]
    before = {f: (f.check(cluster).allowed, _hook_modes(cluster, f)) for f in flows}
    cluster.apply(new_policy(cluster, data, deny=False))
    kept = 0
    for flow in flows:
        allowed, modes = before[flow]
        # A policy that makes a direction default-deny (the first to select a pod there, or
        # one without enableDefaultDeny: false where all others had it) drops Cilium's
        # synthesized allow-all: only flows whose hooks kept their mode must stay allowed.
        if allowed and modes == _hook_modes(cluster, flow):
            kept += 1
            verdict = flow.check(cluster)
            assert verdict.allowed, f"{flow} lost reachability:\n{verdict.explain()}"
    event(f"allowed flows that must stay allowed: {min(kept, 3)}+" if kept >= 3 else f"{kept}")


def _hook_modes(cluster: Cluster, flow: Flow) -> tuple[tuple[bool, bool], tuple[bool, bool]]:
    return _mode(cluster, flow.src, Direction.EGRESS), _mode(cluster, flow.dst, Direction.INGRESS)


@PROPERTY
@given(cst.cluster_specs(min_endpoints=2), st.data())
def test_adding_a_deny_policy_never_adds_reachability(spec: ClusterSpec, data: st.DataObject) -> None:
    cluster = spec.build()
    lockdown(cluster, data)
    flows = [data.draw(cst.flows(cluster)) for _ in range(10)]
    before = {f: f.check(cluster).allowed for f in flows}
    cluster.apply(new_policy(cluster, data, allow=False))
    for flow in flows:
        verdict = flow.check(cluster)
        assert before[flow] or not verdict.allowed, f"{flow} became reachable:\n{verdict.explain()}"
    event(f"flows that must stay blocked: {min(sum(not a for a in before.values()), 3)}")


def _exact_selector(cluster: Cluster, ref: str) -> dict[str, Any]:
    """A selector that matches exactly the identity of pod ``ref``."""
    labels = cluster.identity_of(ref).labels
    return {"matchLabels": {f"k8s:{lbl.key}": lbl.value for lbl in labels.labels if lbl.source == "k8s"}}


DENY_NAME = "deny-exactly-this-flow"


def _deny_policy(cluster: Cluster, flow: Flow, at_ingress: bool) -> dict[str, Any]:
    proto = flow.protocol.upper()
    if proto == "ICMP":
        family = "IPv6" if flow.check(cluster).packet.protocol == 58 else "IPv4"
        l4: dict[str, Any] = {"icmps": [{"fields": [{"family": family, "type": flow.port}]}]}
    else:
        l4 = {"toPorts": [{"ports": [{"port": str(flow.port), "protocol": proto}]}]}
    if at_ingress:
        peer = (
            {"fromEndpoints": [_exact_selector(cluster, flow.src)]} if "/" in flow.src else {"fromEntities": [flow.src]}
        )
        spec = {"endpointSelector": _exact_selector(cluster, flow.dst), "ingressDeny": [{**peer, **l4}]}
    else:
        peer = {"toEndpoints": [_exact_selector(cluster, flow.dst)]} if "/" in flow.dst else {"toEntities": [flow.dst]}
        spec = {"endpointSelector": _exact_selector(cluster, flow.src), "egressDeny": [{**peer, **l4}]}
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": DENY_NAME},
        "spec": spec,
    }


@settings(PROPERTY, max_examples=60)
@given(cst.cluster_specs(min_endpoints=1), st.data())
def test_a_deny_on_a_flow_wins_over_every_allow(spec: ClusterSpec, data: st.DataObject) -> None:
    cluster = spec.build()
    flow = data.draw(cst.flows(cluster, dns=False), label="flow")
    at_ingress = "/" in flow.dst and ("/" not in flow.src or data.draw(st.booleans(), label="deny at ingress"))
    before = flow.check(cluster)
    egress_allowed_before = before.egress
    hook_before = before.ingress if at_ingress else before.egress
    # A deny of the generated policies may already cover the flow at this hook. Cilium then
    # does not insert ours (a deny covered by an equal-precedence deny is redundant,
    # pkg/policy/mapstate.go), and the covering deny is the one reported.
    covered = (
        hook_before is not None
        and hook_before.entry is not None
        and hook_before.entry.deny
        and hook_before.result.drop_reason == DropReason.POLICY_DENY
    )
    cluster.apply(_deny_policy(cluster, flow, at_ingress))
    verdict = flow.check(cluster)
    assert not verdict.allowed, verdict.explain()
    # The deny decides unless an earlier hook (the source's egress) already dropped.
    decides = not at_ingress or (egress_allowed_before is not None and egress_allowed_before.allowed)
    event(f"deny at {'ingress' if at_ingress else 'egress'}; " + ("deny decides" if decides else "egress drops first"))
    if decides:
        assert verdict.direction == (Direction.INGRESS if at_ingress else Direction.EGRESS), verdict.explain()
        assert verdict.drop_reason == DropReason.POLICY_DENY, verdict.explain()
        names = {o.name for o in verdict.policies}
        if covered:
            assert hook_before is not None
            assert DENY_NAME in names or names == {o.name for o in hook_before.origins}, verdict.explain()
        else:
            assert DENY_NAME in names, verdict.explain()


def _shifted(ips: tuple[Any, ...]) -> list[str]:
    return [str(ipaddress.ip_address(int(ip) + 200)) for ip in ips]


@PROPERTY
@given(cst.cluster_specs(min_endpoints=1), st.data())
def test_pods_with_equal_labels_get_equal_verdicts(spec: ClusterSpec, data: st.DataObject) -> None:
    cluster = spec.build()
    ref = data.draw(st.sampled_from(sorted(cluster.endpoints)), label="pod")
    pod = cluster.endpoint(ref)
    twin = f"{pod.namespace}/{pod.name}-twin"
    cluster.add_endpoint(
        twin, labels=dict(pod.labels), ips=_shifted(pod.ips), ports=pod.ports, service_account=pod.service_account
    )
    assert cluster.identity_of(twin) == cluster.identity_of(ref)
    assert labelled_map_state(cluster, twin) == labelled_map_state(cluster, ref)
    others = [
        peer
        for peer in [*sorted(set(cluster.endpoints) - {ref, twin}), "world", "host"]
        if _families(cluster, peer) & _families(cluster, ref)
    ]
    for _ in range(4):
        peer = data.draw(st.sampled_from(others), label="peer")
        outbound = data.draw(st.booleans(), label="outbound")
        src, dst = (ref, peer) if outbound else (peer, ref)
        flow = data.draw(cst.flows(cluster, sources=st.just(src), destinations=st.just(dst)), label="flow")
        other = attrs.evolve(flow, src=twin if flow.src == ref else flow.src, dst=twin if flow.dst == ref else flow.dst)
        a, b = flow.check(cluster), other.check(cluster)
        assert (a.verdict, a.drop_reason, a.policies) == (b.verdict, b.drop_reason, b.policies), (
            f"{flow}:\n{a.explain()}\n{other}:\n{b.explain()}"
        )


def _families(cluster: Cluster, who: str) -> set[int]:
    if who in ("world", "host"):
        return {4, 6}
    return {ip.version for ip in cluster.endpoint(who).ips}


# --------------------------------------------------------------------------------------------
# validation


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70_000),
    st.floats(),
    st.text(max_size=6),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.sampled_from(({}, [], "0.0.0.0/0", "*", "80", "TCP", "ICMP", "world", "k8s:app", "/(")),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _mutate(manifest: dict[str, Any], path: tuple[Any, ...], how: str, junk: Any) -> Any:
    out = copy.deepcopy(manifest)
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if how == "delete":
        del parent[last]
    elif how == "add" and isinstance(parent[last], dict):
        parent[last]["junkField" if junk is None else str(junk)[:8] or "x"] = junk
    elif how == "add" and isinstance(parent[last], list):
        parent[last].append(junk)
    else:
        parent[last] = junk
    return out


@settings(CHEAP, max_examples=200)
@given(st.one_of(cst.cilium_network_policies(), cst.clusterwide_policies(), cst.network_policies()), st.data())
def test_validation_raises_only_policy_error_on_mutated_manifests(policy: Any, data: st.DataObject) -> None:
    manifest: Any = policy.to_manifest()
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = data.draw(st.sampled_from(list(_paths(manifest))[1:]), label="path")
        how = data.draw(st.sampled_from(("replace", "delete", "add")), label="how")
        manifest = _mutate(manifest, path, how, data.draw(JUNK, label="junk"))
    note(f"mutated manifest: {manifest!r}")
    for source in (manifest, _yaml_or_none(manifest)):
        if source is None:
            continue
        with contextlib.suppress(PolicyError):
            Cluster().apply(source)


def _yaml_or_none(manifest: Any) -> str | None:
    try:
        return yaml.safe_dump(manifest)
    except yaml.YAMLError:
        return None


# --------------------------------------------------------------------------------------------
# regressions: engine bugs these properties found, fixed since (6a2f55e)


def _with_empty_port_lists(rule: Any) -> Any:
    def fill(peer: Any) -> Any:
        if peer.to_ports is None and peer.icmps is None and peer.has_l3_peers:
            return attrs.evolve(peer, to_ports=())
        return peer

    changes = {}
    for attr in ("ingress", "egress", "ingress_deny", "egress_deny"):
        items = getattr(rule, attr)
        if items is not None:
            changes[attr] = tuple(fill(p) for p in items)
    return attrs.evolve(rule, **changes)


EMPTY_TO_PORTS_EXAMPLE = CiliumNetworkPolicy.from_manifest(
    {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"endpointSelector": {}, "ingress": [{"fromEndpoints": [{}]}]},
    }
)


@settings(PROPERTY, max_examples=30)
@example(policy=EMPTY_TO_PORTS_EXAMPLE)
@given(cst.cilium_network_policies(namespaces=st.just("default"), max_specs=0))
def test_explicitly_empty_to_ports_means_no_port_restriction(policy: CiliumNetworkPolicy) -> None:
    assert policy.spec is not None
    pods = [
        Endpoint(namespace="default", name="a", labels={"app": "web"}),
        Endpoint(namespace="default", name="b", labels={"app": "db"}),
    ]
    plain = Cluster()
    plain.apply(*pods, policy)
    emptied = Cluster()
    emptied.apply(*pods, attrs.evolve(policy, spec=_with_empty_port_lists(policy.spec)))
    assert map_states(emptied) == map_states(plain)


@pytest.mark.parametrize("kind", [{}, ["CiliumNetworkPolicy"]])
def test_a_non_string_kind_is_a_policy_error(kind: Any) -> None:
    # Found by the mutation property above (it used to be a TypeError from `kind not in KINDS`).
    manifest = {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": {"name": "p"}, "spec": {}}
    with pytest.raises(PolicyError):
        Cluster().apply(manifest)
