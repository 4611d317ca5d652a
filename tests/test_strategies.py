"""ciliumpy.strategies and ciliumpy.testing: valid values, validated arguments, small shrinks,
and assertion helpers whose guarantees hold."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, assume, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ciliumpy import (
    CiliumClusterwideNetworkPolicy,
    CiliumNetworkPolicy,
    Cluster,
    Endpoint,
    EndpointSelector,
    NetworkPolicy,
    Packet,
    PolicyError,
    UnknownEndpointError,
)
from ciliumpy import strategies as cst
from ciliumpy.testing import (
    ClusterSpec,
    Flow,
    assert_allowed,
    assert_denied,
    assert_isolated,
    assert_reachable,
    labelled_map_state,
    port_probes,
)

SOME = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SHRINK = settings(
    database=None, max_examples=500, deadline=None, derandomize=True, phases=[Phase.generate, Phase.shrink]
)


def cnp(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


# --------------------------------------------------------------------------------------------
# valid by construction


@SOME
@given(
    st.one_of(
        cst.cilium_network_policies(rules=cst.policy_rules(authentication=True, metadata=True)),
        cst.clusterwide_policies(),
        cst.network_policies(),
    )
)
def test_generated_policies_pass_cluster_apply_as_objects_dicts_and_yaml(policy: Any) -> None:
    Cluster().apply(policy)
    Cluster().apply(policy.to_manifest())
    Cluster().apply(yaml.safe_dump(policy.to_manifest()))


@SOME
@given(cst.cluster_specs(), st.data())
def test_generated_clusters_build_and_answer_generated_flows_and_packets(
    spec: ClusterSpec, data: st.DataObject
) -> None:
    cluster = spec.build()
    if not cluster.endpoints:
        return
    for _ in range(3):
        flow = data.draw(cst.flows(cluster))
        assert flow.src != flow.dst
        assert "/" in flow.src or "/" in flow.dst
        if flow.dns is not None:
            assert (flow.protocol, flow.port) == ("UDP", 53)
        if flow.http is not None:
            assert flow.protocol == "TCP"
        verdict = flow.check(cluster)
        assert verdict.verdict in ("FORWARDED", "DROPPED", "REDIRECTED")
    packet = data.draw(cst.packets(cluster))
    assert packet.src.version == packet.dst.version
    cluster.evaluate(packet)


@SOME
@given(cst.endpoints())
def test_generated_pod_labels_all_take_part_in_the_identity(pod: Endpoint) -> None:
    cluster = Cluster()
    cluster.apply(pod)
    identity = cluster.identity_of(pod.ref).labels.k8s_mapping()
    assert {k: identity.get(k) for k in pod.labels} == dict(pod.labels)


@SOME
@given(cst.cluster_specs())
def test_cluster_spec_repr_is_the_yaml_that_rebuilds_it(spec: ClusterSpec) -> None:
    assert ClusterSpec.from_manifests(spec.to_yaml()) == spec
    assert eval(repr(spec), {"ClusterSpec": ClusterSpec}) == spec


@SOME
@given(
    st.from_type(CiliumNetworkPolicy),
    st.from_type(CiliumClusterwideNetworkPolicy),
    st.from_type(NetworkPolicy),
    st.from_type(EndpointSelector),
    st.from_type(Packet),
)
def test_model_types_have_registered_strategies(
    a: CiliumNetworkPolicy, b: CiliumClusterwideNetworkPolicy, c: NetworkPolicy, sel: EndpointSelector, pkt: Packet
) -> None:
    assert (type(a), type(b), type(c), type(sel), type(pkt)) == (
        CiliumNetworkPolicy,
        CiliumClusterwideNetworkPolicy,
        NetworkPolicy,
        EndpointSelector,
        Packet,
    )
    Cluster().apply(a, b, c)


@settings(SOME, max_examples=10)
@given(st.from_type(Cluster))
def test_from_type_cluster_builds_a_simulator_cluster(cluster: Cluster) -> None:
    assert cluster.backend.name == "simulator"


# --------------------------------------------------------------------------------------------
# shrinking toward small readable examples


def test_a_policy_shrinks_to_the_empty_deny_all_rule() -> None:
    policy = find(cst.cilium_network_policies(), lambda p: True, settings=SHRINK)
    assert policy.to_manifest() == cnp("p", "default", {"endpointSelector": {}, "ingress": [{}]})


def test_label_sets_shrink_to_the_vocabulary() -> None:
    labels = find(cst.label_sets(), lambda labels: len(labels) >= 2, settings=SHRINK)
    assert list(labels) == ["app", "team"]
    assert set(labels.values()) <= {"web", ""}


def test_an_http_policy_shrinks_to_one_port_and_one_path() -> None:
    def has_http_path(policy: CiliumNetworkPolicy) -> bool:
        return any(
            pr.rules is not None and any(r.path for r in pr.rules.http or ())
            for rule in policy.rules
            for peer in rule.ingress or ()
            for pr in peer.to_ports or ()
        )

    ingress_allows = cst.policy_rules(egress=False, deny=False, cidrs=False, icmps=False)
    policy = find(cst.cilium_network_policies(rules=ingress_allows), has_http_path, settings=SHRINK)
    spec = policy.to_manifest()["spec"]
    assert spec["endpointSelector"] == {}
    http_port = {"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"http": [{"path": "/"}]}}
    assert any(http_port in peer.get("toPorts", ()) for peer in spec["ingress"]), spec
    assert len(json.dumps(spec)) < 200, spec


def test_cluster_specs_shrink_to_one_default_pod() -> None:
    spec = find(cst.cluster_specs(), lambda s: len(s.endpoints) == 1, settings=SHRINK)
    assert [e.ref for e in spec.endpoints] == ["default/a"]
    assert spec.endpoints[0].labels == {} and spec.endpoints[0].ports == () and spec.policies == ()


# --------------------------------------------------------------------------------------------
# argument validation happens when the strategy is made


INVALID: list[tuple[Callable[..., Any], dict[str, Any]]] = [
    (cst.label_keys, {"vocabulary": ["Bad Key!"]}),
    (cst.label_keys, {"vocabulary": [], "generated": False}),
    (cst.label_values, {"vocabulary": ["-bad-"]}),
    (cst.label_sets, {"max_size": -1}),
    (cst.label_sets, {"min_size": 3, "max_size": 1}),
    (cst.label_sets, {"keys": "app"}),
    (cst.label_selectors, {"operators": ["Like"]}),
    (cst.label_selectors, {"namespaces": "prod"}),
    (cst.namespace_names, {"vocabulary": ["Prod"]}),
    (cst.endpoints, {"ip_families": ["ipv5"]}),
    (cst.endpoints, {"max_ports": -1}),
    (cst.port_protocols, {"protocols": ["ICMP"]}),
    (cst.port_protocols, {"named_ports": ["Not A Name"]}),
    (cst.port_protocols, {"ranges": "yes"}),
    (cst.icmp_rules, {"families": ["IPv5"]}),
    (cst.icmp_rules, {"max_fields": 41}),
    (cst.cidr_rules, {"ip_versions": [5]}),
    (cst.port_rules, {"direction": "sideways"}),
    (cst.port_rules, {"direction": None}),
    (cst.peer_rules, {"entities": ["everyone"]}),
    (cst.peer_rules, {"deny": "yes"}),
    (cst.policy_rules, {"ingress": False, "egress": False}),
    (cst.policy_rules, {"allow": False, "deny": False}),
    (cst.policy_rules, {"max_peer_rules": 0}),
    (cst.cilium_network_policies, {"namespaces": "prod"}),
    (cst.cilium_network_policies, {"max_specs": -1}),
    (cst.clusterwide_policies, {"rules": {"endpointSelector": {}}}),
    (cst.network_policies, {"named_ports": ["80"]}),
    (cst.cluster_specs, {"min_endpoints": 2, "max_endpoints": 1}),
    (cst.cluster_specs, {"policies": [{"kind": "CiliumNetworkPolicy"}]}),
    (cst.cluster_specs, {"min_policies": 4, "max_policies": 3}),
    (cst.clusters, {"backend": "nope"}),
    (cst.flows, {"cluster": "c"}),
    (cst.packets, {"cluster": 42}),
]


@pytest.mark.parametrize(("factory", "kwargs"), INVALID, ids=lambda v: getattr(v, "__name__", None) or repr(v))
def test_invalid_arguments_raise_invalid_argument_at_once(factory: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        factory(**kwargs)


def test_flows_validate_protocols_at_once() -> None:
    with pytest.raises(InvalidArgument, match="GRE"):
        cst.flows(Cluster(), protocols=["GRE"])


def test_strategies_print_as_their_name() -> None:
    assert "cilium_network_policies()" in repr(cst.cilium_network_policies())
    assert len(repr(cst.cluster_specs())) < 100


# --------------------------------------------------------------------------------------------
# assertion helpers


@pytest.fixture
def shop() -> Cluster:
    cluster = Cluster()
    cluster.add_endpoint("shop/web", labels={"app": "web"})
    cluster.add_endpoint("shop/db", labels={"app": "db"}, ports=[("pg", 5432, "TCP"), (None, 9187, "TCP")])
    cluster.add_endpoint("other/job", labels={"app": "job"})
    cluster.apply(
        cnp(
            "db-from-web",
            "shop",
            {
                "endpointSelector": {"matchLabels": {"app": "db"}},
                "ingress": [
                    {
                        "fromEndpoints": [{"matchLabels": {"app": "web"}}],
                        "toPorts": [{"ports": [{"port": "pg", "protocol": "TCP"}]}],
                    }
                ],
            },
        )
    )
    return cluster


def test_assert_allowed_returns_the_verdict_and_explains_a_drop(shop: Cluster) -> None:
    assert assert_allowed(shop, "shop/web", "shop/db", 5432).verdict == "FORWARDED"
    with pytest.raises(AssertionError) as info:
        assert_allowed(shop, "other/job", "shop/db", 5432)
    text = str(info.value)
    assert text.startswith("expected other/job -> shop/db TCP/5432 to be allowed, but it was DROPPED (133")
    assert "no map entry matches" in text


def test_assert_denied_names_the_allowing_policy(shop: Cluster) -> None:
    assert assert_denied(shop, "other/job", "shop/db", 5432).verdict == "DROPPED"
    with pytest.raises(AssertionError, match=r"allowed by CiliumNetworkPolicy shop/db-from-web spec\.ingress\[0\]"):
        assert_denied(shop, "shop/web", "shop/db", 5432)


def test_assert_reachable_uses_declared_ports_and_lists_the_failing_ones(shop: Cluster) -> None:
    with pytest.raises(AssertionError, match=r"1 were not allowed:\n  TCP/9187: DROPPED"):
        assert_reachable(shop, "shop/web", "shop/db")
    assert len(assert_reachable(shop, "shop/web", "shop/db", [5432])) == 1
    with pytest.raises(ValueError, match="declares no container ports"):
        assert_reachable(shop, "shop/db", "shop/web")


def test_assert_isolated_checks_both_directions_and_every_port(shop: Cluster) -> None:
    with pytest.raises(AssertionError) as info:
        assert_isolated(shop, "shop", "other")
    assert "shop and other are not isolated" in str(info.value)
    assert re.search(r"shop/db .*-> other/job", str(info.value))  # other/job's ingress is open
    lockdown = {"endpointSelector": {}, "ingress": [{}], "egress": [{}]}
    shop.apply(cnp("lockdown", "other", lockdown))
    assert assert_isolated(shop, "shop", "other") > 0
    with pytest.raises(UnknownEndpointError):
        assert_isolated(shop, "shop", "nowhere")
    with pytest.raises(ValueError, match="both sides"):
        assert_isolated(shop, "shop", ["shop/db"])


def test_assert_isolated_finds_a_single_open_port_in_a_range() -> None:
    cluster = Cluster()
    cluster.add_endpoint("a/x")
    cluster.add_endpoint("b/y")
    spec = {
        "endpointSelector": {},
        "ingress": [{"fromEntities": ["cluster"], "toPorts": [{"ports": [{"port": "40000", "protocol": "UDP"}]}]}],
        "egress": [{}],
    }
    cluster.apply(cnp("one-port", "a", spec), cnp("closed", "b", {"endpointSelector": {}, "ingress": [{}]}))
    with pytest.raises(AssertionError, match=r"b/y .*-> a/x .*UDP/40000: FORWARDED"):
        assert_isolated(cluster, "a", "b")
    assert ("UDP", 40000) in port_probes(cluster, "b/y", "a/x")


@settings(SOME, max_examples=40)
@given(cst.cluster_specs(min_endpoints=2), st.data())
def test_assert_isolated_passes_only_when_no_drawn_flow_gets_through(spec: ClusterSpec, data: st.DataObject) -> None:
    cluster = spec.build()
    refs = sorted(cluster.endpoints)
    a = data.draw(st.sampled_from(refs), label="a")
    families = {ip.version for ip in cluster.endpoint(a).ips}
    peers = [r for r in refs if r != a and families & {ip.version for ip in cluster.endpoint(r).ips}]
    assume(peers)
    b = data.draw(st.sampled_from(peers), label="b")
    try:
        assert_isolated(cluster, a, b)
        isolated = True
    except AssertionError:
        isolated = False
    if not isolated:
        return
    for _ in range(20):
        src, dst = data.draw(st.sampled_from([(a, b), (b, a)]), label="direction")
        flow = data.draw(cst.flows(cluster, sources=st.just(src), destinations=st.just(dst), dns=False, http=False))
        verdict = flow.check(cluster)
        assert not verdict.allowed, f"assert_isolated passed, but {flow} is allowed:\n{verdict.explain()}"


def test_labelled_map_state_ignores_identity_numbering() -> None:
    one, two = Cluster(), Cluster()
    one.add_endpoint("ns/a", labels={"app": "a"})
    one.add_endpoint("ns/b", labels={"app": "b"})
    two.add_endpoint("ns/b", labels={"app": "b"})
    two.add_endpoint("ns/a", labels={"app": "a"})
    policy = cnp(
        "a-from-b",
        "ns",
        {
            "endpointSelector": {"matchLabels": {"app": "a"}},
            "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "b"}}]}],
        },
    )
    one.apply(policy)
    two.apply(policy)
    assert one.map_state("ns/a") != two.map_state("ns/a")  # identities were numbered differently
    assert labelled_map_state(one, "ns/a") == labelled_map_state(two, "ns/a")


def test_a_dns_flow_is_judged_by_the_dns_rules() -> None:
    cluster = Cluster()
    cluster.add_endpoint("prod/app")
    cluster.add_endpoint("kube-system/coredns", labels={"k8s-app": "kube-dns"})
    cluster.apply(
        cnp(
            "dns-only-example",
            "prod",
            {
                "endpointSelector": {},
                "egress": [
                    {
                        "toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system"}}],
                        "toPorts": [
                            {
                                "ports": [{"port": "53", "protocol": "UDP"}],
                                "rules": {"dns": [{"matchPattern": "*.example.com"}]},
                            }
                        ],
                    }
                ],
            },
        )
    )
    good = Flow(src="prod/app", dst="kube-system/coredns", protocol="UDP", port=53, dns="api.example.com")
    bad = Flow(src="prod/app", dst="kube-system/coredns", protocol="UDP", port=53, dns="evil.org")
    assert good.check(cluster).allowed
    assert not bad.check(cluster).allowed
    assert str(bad) == "prod/app -> kube-system/coredns UDP/53 DNS evil.org"


def test_cluster_spec_build_applies_atomically() -> None:
    bad = ClusterSpec(endpoints=[Endpoint(namespace="a", name="x", ips=["10.9.9.9"])]).build()
    assert list(bad.endpoints) == ["a/x"]
    clash = ClusterSpec(
        endpoints=[
            Endpoint(namespace="a", name="x", ips=["10.9.9.9"]),
            Endpoint(namespace="a", name="y", ips=["10.9.9.9"]),
        ]
    )
    with pytest.raises(PolicyError, match="address already used"):
        clash.build()


def test_docstring_examples_run() -> None:
    import doctest
    import warnings

    import ciliumpy.strategies
    import ciliumpy.testing

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # .example() warns that it is meant for interactive use
        for module in (ciliumpy.testing, ciliumpy.strategies):
            result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
            assert result.attempted > 0 and result.failed == 0, (module.__name__, result)
