"""Explain with a fix: every allowing rule, or the smallest changes that would allow."""

from __future__ import annotations

from pathlib import Path

import pytest

import ciliumpy
from ciliumpy import Cluster

SEED = Path(__file__).parents[2] / "examples" / "seed"


@pytest.fixture(scope="module")
def seed() -> Cluster:
    return Cluster.from_manifests(SEED)


def _applied(cluster: Cluster, fix: ciliumpy.reach.Fix) -> Cluster:
    trial = Cluster.from_manifests(cluster.to_manifests())
    trial.apply(*fix.manifests)
    return trial


def test_allowed_connection_lists_every_allowing_rule_of_both_hooks(seed: Cluster) -> None:
    why = seed.reachability().explain("production/frontend", "production/backend", 8080)
    assert why.allowed and not why.fixes
    names = {(o.name, o.rule) for o in why.allowing}
    assert ("frontend-egress-to-backend", "spec.egress[0]") in names
    assert ("backend-allow-frontend", "spec.ingress[0]") in names
    assert "allowed by CiliumNetworkPolicy production/backend-allow-frontend" in why.text()


def test_denied_connection_gets_verified_fixes_smallest_side_effect_first(seed: Cluster) -> None:
    reach = seed.reachability()
    why = reach.explain("production/frontend", "production/database", 5432)
    assert not why.allowed and why.fixes
    kinds = {f.kind for f in why.fixes}
    assert any("add-peer" in k for k in kinds) and any("add-label" in k for k in kinds)
    assert why.fixes[0].also_allows == ()
    sizes = [len(f.also_allows) for f in why.fixes]
    assert sizes == sorted(sizes)
    for fix in why.fixes:
        trial = _applied(seed, fix)
        assert trial.check("production/frontend", "production/database", 5432).allowed, fix
        # what else it allows is exactly the semantic diff, minus the asked-for pair
        added = ciliumpy.diff(reach, trial).added
        others = [c for c in added if (c.witness.src, c.witness.dst) != ("production/frontend", "production/database")]
        assert [str(c) for c in others] == [str(c) for c in fix.also_allows]


def test_port_fix_extends_the_rules_that_already_select_the_peer(seed: Cluster) -> None:
    why = seed.reachability().explain("production/frontend", "production/backend", 9999)
    best = why.fixes[0]
    assert best.kind == "add-port+add-port"
    assert "TCP/9999" in best.description and not best.also_allows
    assert _applied(seed, best).check("production/frontend", "production/backend", 9999).allowed


def test_a_deny_rule_is_fixed_by_removing_it() -> None:
    c = Cluster()
    c.add_endpoint("prod/a", labels={"app": "a"})
    c.add_endpoint("prod/b", labels={"app": "b"})
    c.apply(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "no-a", "namespace": "prod"},
            "spec": {
                "endpointSelector": {"matchLabels": {"app": "b"}},
                "ingress": [{"fromEndpoints": [{}]}],
                "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"app": "a"}}]}],
            },
        }
    )
    why = c.reachability().explain("prod/a", "prod/b", 80)
    assert [f.kind for f in why.fixes] == ["remove-deny"]
    assert _applied(c, why.fixes[0]).check("prod/a", "prod/b", 80).allowed


def test_network_policy_rules_are_edited_in_their_own_syntax() -> None:
    c = Cluster()
    c.add_endpoint("prod/a", labels={"app": "a"})
    c.add_endpoint("prod/b", labels={"app": "b"})
    c.apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "b-in", "namespace": "prod"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "b"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "c"}}}], "ports": [{"port": 80}]}],
            },
        }
    )
    why = c.reachability().explain("prod/a", "prod/b", 80)
    assert why.fixes
    peer_fix = next(f for f in why.fixes if f.kind == "add-peer")
    assert peer_fix.manifests[0]["kind"] == "NetworkPolicy"
    assert _applied(c, peer_fix).check("prod/a", "prod/b", 80).allowed
    label_fix = next(f for f in why.fixes if f.kind == "add-label")
    assert label_fix.manifests[0]["metadata"]["labels"]["app"] == "c"
