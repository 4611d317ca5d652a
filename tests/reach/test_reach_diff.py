"""Semantic diff, equivalence and containment of reachabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ciliumpy
from ciliumpy import Cluster
from ciliumpy import strategies as cst

SEED = Path(__file__).parents[2] / "examples" / "seed"


def _without(name: str) -> Cluster:
    return Cluster.from_manifests(*sorted(p for p in SEED.glob("*.yaml") if p.name != name))


def test_removing_a_policy_file_shows_what_it_allowed_with_witnesses() -> None:
    before = Cluster.from_manifests(SEED)
    after = _without("02-frontend-to-backend.yaml")
    change = ciliumpy.diff(before, after)
    assert not change.added
    lost = {(c.src, c.dst): c for c in change.removed}
    fb = lost["production/frontend", "production/backend"]
    assert fb.ports == {"TCP": ((8080, 8080),)}
    assert "CiliumNetworkPolicy production/backend-allow-frontend" in fb.policies
    assert fb.witness.check(before).allowed and not fb.witness.check(after).allowed
    assert fb in change.by_policy()["CiliumNetworkPolicy production/backend-allow-frontend"]["removed"]
    assert fb in change.by_peer()["production/backend"]["removed"]
    assert "production/frontend -> production/backend: TCP 8080" in change.text()
    # the smaller policy set is contained in the larger one, not the other way round
    assert ciliumpy.contains(before, after)
    missing = ciliumpy.contains(after, before)
    assert not missing and missing.counterexample is not None
    assert missing.counterexample.check(before).allowed and not missing.counterexample.check(after).allowed
    verdict = ciliumpy.equivalent(before, after)
    assert not verdict and verdict.allowed_by == "a"


def test_the_same_manifests_are_equivalent_and_diff_is_empty() -> None:
    a = Cluster.from_manifests(SEED)
    b = Cluster.from_manifests(a.to_manifests())
    assert ciliumpy.equivalent(a, b)
    assert ciliumpy.equivalent(SEED, a.reachability())  # paths and reachabilities work too
    assert not ciliumpy.diff(a, b)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cst.cluster_specs(min_endpoints=2, max_endpoints=4, max_policies=2), st.data())
def test_every_diff_witness_is_decided_differently_by_check(spec: Any, data: st.DataObject) -> None:
    before = spec.build()
    after = spec.build()
    ns = st.sampled_from(sorted(before.namespaces))
    rules = cst.policy_rules(peers=cst.label_selectors(namespaces=ns))
    policy = data.draw(
        st.one_of(cst.cilium_network_policies(namespaces=ns, rules=rules), cst.network_policies(namespaces=ns))
    )
    if policy.key in {p.key for p in after.policies}:
        return
    after.apply(policy)
    change = ciliumpy.diff(before, after)
    for side, gained in ((change.added, True), (change.removed, False)):
        for ch in side:
            for cluster in (before, after):
                cluster.backend.reset_conntrack()
            assert ch.witness.check(after).allowed is gained, ch
            assert ch.witness.check(before).allowed is not gained, ch
    assert bool(ciliumpy.equivalent(before, after)) is (not change)
    assert bool(ciliumpy.contains(after, before)) is (not change.removed)
