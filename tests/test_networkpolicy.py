"""Kubernetes NetworkPolicy as Cilium enforces it, in the truth-table style of the
Kubernetes e2e suite (test/e2e/network/netpol): namespaces x, y, z with pods a, b, c.

Cilium translates a NetworkPolicy into one rule per peer (pkg/k8s/network_policy.go,
``ParseNetworkPolicy``): an empty ``from``/``to`` is the wildcard selector (every peer,
world included), a ``podSelector`` peer is pinned to the policy's namespace, a
``namespaceSelector`` becomes ``io.cilium.k8s.namespace.labels.*`` requirements (``{}``:
any namespace), both together are ANDed, an ``ipBlock`` becomes a CIDR rule (which never
selects pods), ports without a number mean every port of the protocol (TCP by default).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from ciliumpy import Cluster, PolicyError

NAMESPACES = ("x", "y", "z")
PODS = tuple(f"{ns}/{p}" for ns in NAMESPACES for p in ("a", "b", "c"))
WORLD_IP = "203.0.113.7"
SERVE = [("serve-80-tcp", 80, "TCP"), ("serve-81-tcp", 81, "TCP"), ("serve-53-udp", 53, "UDP")]


def _cluster() -> Cluster:
    c = Cluster(allow_localhost=False)
    for ns in NAMESPACES:
        c.add_namespace(ns, {"ns": ns})
        for pod in ("a", "b", "c"):
            c.add_endpoint(f"{ns}/{pod}", labels={"pod": pod}, ports=SERVE)
    return c


def _np(ns: str, spec: dict[str, Any], name: str = "np") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


class Reachability:
    """Expected connectivity between every pair of pods (all allowed to start with)."""

    def __init__(self, default: bool = True) -> None:
        self.expected = {(s, d): default for s in PODS for d in PODS}

    def expect(self, srcs: Iterable[str], dsts: Iterable[str], allowed: bool) -> None:
        for s in srcs:
            for d in dsts:
                self.expected[(s, d)] = allowed

    def expect_ingress(self, dst: str, allowed: bool) -> None:
        self.expect(PODS, [dst], allowed)

    def expect_egress(self, src: str, allowed: bool) -> None:
        self.expect([src], PODS, allowed)

    def observe(self, c: Cluster, port: int = 80, protocol: str = "TCP") -> dict[tuple[str, str], bool]:
        return {(s, d): c.check(s, d, port, protocol).allowed for s in PODS for d in PODS}

    def assert_matches(self, c: Cluster, port: int = 80, protocol: str = "TCP") -> None:
        got = self.observe(c, port, protocol)
        if got != self.expected:
            raise AssertionError(f"{port}/{protocol}: expected\n{_render(self.expected)}\ngot\n{_render(got)}")


def _render(table: dict[tuple[str, str], bool]) -> str:
    lines = ["     " + " ".join(p.replace("/", "") for p in PODS)]
    for s in PODS:
        lines.append(s.replace("/", "") + "   " + "  ".join("." if table[(s, d)] else "X" for d in PODS))
    return "\n".join(lines)


def in_ns(ns: str) -> list[str]:
    return [p for p in PODS if p.startswith(ns + "/")]


# ---- the e2e cases -------------------------------------------------------------------------------
def test_default_deny_ingress() -> None:
    c = _cluster()
    c.apply(_np("x", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    r = Reachability()
    r.expect(PODS, in_ns("x"), False)
    r.assert_matches(c)
    assert c.check("x/a", WORLD_IP, 80).allowed  # egress untouched


def test_allow_same_namespace() -> None:
    c = _cluster()
    c.apply(_np("x", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}))
    r = Reachability()
    r.expect(PODS, in_ns("x"), False)
    r.expect(in_ns("x"), in_ns("x"), True)
    r.assert_matches(c)


def test_allow_from_namespace_by_label() -> None:
    c = _cluster()
    c.apply(
        _np(
            "x",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
            },
        )
    )
    r = Reachability()
    r.expect_ingress("x/a", False)
    r.expect(in_ns("y"), ["x/a"], True)
    r.assert_matches(c)


def test_namespace_and_pod_selector_in_one_peer_are_anded() -> None:
    c = _cluster()
    peer = {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}}
    c.apply(_np("x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [peer]}]}))
    r = Reachability()
    r.expect_ingress("x/a", False)
    r.expect(["y/b"], ["x/a"], True)
    r.assert_matches(c)


def test_namespace_and_pod_selector_in_two_peers_are_ored() -> None:
    c = _cluster()
    peers = [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}, {"podSelector": {"matchLabels": {"pod": "b"}}}]
    c.apply(_np("x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": peers}]}))
    r = Reachability()
    r.expect_ingress("x/a", False)
    r.expect([*in_ns("y"), "x/b"], ["x/a"], True)
    r.assert_matches(c)


def test_empty_namespace_selector_is_every_namespace_but_not_world() -> None:
    c = _cluster()
    c.apply(
        _np("x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {}}]}]})
    )
    Reachability().assert_matches(c)
    assert not c.check(WORLD_IP, "x/a", 80).allowed
    assert not c.check("host", "x/a", 80).allowed


def test_empty_from_is_every_source_including_world() -> None:
    c = _cluster()
    c.apply(_np("x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 80}]}]}))
    Reachability().assert_matches(c, 80)
    r = Reachability()
    r.expect_ingress("x/a", False)
    r.assert_matches(c, 81)
    assert c.check(WORLD_IP, "x/a", 80).allowed
    assert c.check("host", "x/a", 80).allowed


def test_deny_all_egress_except_dns() -> None:
    c = _cluster()
    c.apply(
        _np(
            "x",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}],
            },
        )
    )
    r = Reachability()
    r.expect(in_ns("x"), PODS, False)
    r.assert_matches(c, 80)
    Reachability().assert_matches(c, 53, "UDP")
    assert c.check("x/a", WORLD_IP, 53, "UDP").allowed
    assert not c.check("x/a", WORLD_IP, 443).allowed


def test_ip_block_with_except() -> None:
    c = _cluster()
    block = {"cidr": "0.0.0.0/0", "except": ["203.0.113.0/24"]}
    c.apply(
        _np(
            "x",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": block}]}],
            },
        )
    )
    assert c.check("x/a", "198.51.100.9", 443).allowed
    assert not c.check("x/a", WORLD_IP, 443).allowed
    # Cilium: CIDR rules never select pods, even when the block covers the pod network
    # (the Kubernetes e2e suite, run against other plugins, expects the opposite).
    r = Reachability()
    r.expect_egress("x/a", False)
    r.assert_matches(c)


def test_ip_block_covering_pod_ips_does_not_select_pods() -> None:
    c = _cluster()
    pod_ip = str(c.endpoint("y/b").ips[0])
    c.apply(
        _np(
            "x",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"ipBlock": {"cidr": f"{pod_ip}/32"}}]}],
            },
        )
    )
    assert not c.check("y/b", "x/a", 80).allowed


def test_end_port_range() -> None:
    c = _cluster()
    c.apply(
        _np(
            "x",
            {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 80, "endPort": 81}]}]},
        )
    )
    Reachability().assert_matches(c, 80)
    Reachability().assert_matches(c, 81)
    r = Reachability()
    r.expect_ingress("x/a", False)
    r.assert_matches(c, 82)
    r.assert_matches(c, 80, "UDP")


def test_port_without_number_is_every_port_of_the_protocol() -> None:
    c = _cluster()
    c.apply(_np("x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"protocol": "UDP"}]}]}))
    Reachability().assert_matches(c, 53, "UDP")
    Reachability().assert_matches(c, 9999, "UDP")
    r = Reachability()
    r.expect_ingress("x/a", False)
    r.assert_matches(c, 80)


def test_named_port_resolves_against_the_destination_pod() -> None:
    c = _cluster()
    c.apply(
        _np("x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]})
    )
    Reachability().assert_matches(c, 81)
    r = Reachability()
    r.expect_ingress("x/a", False)
    r.assert_matches(c, 80)


def test_policy_types_default_from_the_rules() -> None:
    # No policyTypes and egress rules: the API server defaults to [Ingress, Egress], so the
    # pods are isolated for ingress (nothing allowed) and egress (only to y).
    c = _cluster()
    c.apply(
        _np(
            "x",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
            },
        )
    )
    r = Reachability()
    r.expect_ingress("x/a", False)
    r.expect_egress("x/a", False)
    r.expect(["x/a"], in_ns("y"), True)
    r.assert_matches(c)


def test_empty_egress_list_without_policy_types_isolates_ingress_only() -> None:
    c = _cluster()
    c.apply(_np("x", {"podSelector": {"matchLabels": {"pod": "a"}}, "egress": []}))
    r = Reachability()
    r.expect_ingress("x/a", False)
    r.assert_matches(c)


def test_cilium_enforces_rules_of_a_direction_missing_from_policy_types() -> None:
    # ParseNetworkPolicy turns every ingress rule into an entry whatever policyTypes says;
    # only the default deny of an empty direction follows policyTypes.
    c = _cluster()
    c.apply(
        _np(
            "x",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
                "egress": [{}],
            },
        )
    )
    r = Reachability()
    r.expect_ingress("x/a", False)
    r.expect(["x/b"], ["x/a"], True)
    r.assert_matches(c)


def test_two_policies_are_a_union() -> None:
    c = _cluster()
    c.apply(
        _np("x", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}, "one"),
        _np(
            "x",
            {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]},
            "two",
        ),
    )
    r = Reachability()
    r.expect(PODS, in_ns("x"), False)
    r.expect(["x/b", *in_ns("z")], in_ns("x"), True)
    r.assert_matches(c)


def test_reachability_helper_reports_a_mismatch() -> None:
    c = _cluster()
    with pytest.raises(AssertionError, match="expected"):
        Reachability(default=False).assert_matches(c)


def test_invalid_network_policy_is_rejected_by_apply() -> None:
    with pytest.raises(PolicyError, match="must be a strict subset"):
        _cluster().apply(
            _np(
                "x",
                {
                    "podSelector": {},
                    "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}}]}],
                },
            )
        )


def test_namespace_selector_on_the_automatic_name_label() -> None:
    c = _cluster()
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}
    c.apply(_np("x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [peer]}]}))
    r = Reachability()
    r.expect_ingress("x/a", False)
    r.expect(in_ns("z"), ["x/a"], True)
    r.assert_matches(c)


def test_egress_pod_selector_stays_in_the_policy_namespace() -> None:
    c = _cluster()
    c.apply(
        _np(
            "y",
            {
                "podSelector": {"matchLabels": {"pod": "c"}},
                "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}],
            },
        )
    )
    r = Reachability()
    r.expect_ingress("y/c", False)
    r.expect_egress("y/c", False)
    r.expect(["y/c"], ["y/a"], True)
    r.assert_matches(c)
