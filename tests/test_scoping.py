"""Who a Cilium rule applies to and whom it selects: CNP versus CCNP scoping, entities,
CIDR peers, denies and default deny, ports, named ports and ICMP.

Upstream: the CRD translation in pkg/k8s/apis/cilium.io/utils/utils.go
(``getEndpointSelector``, ``ParseToCiliumRule``), entities in pkg/policy/api/entity.go,
CIDR identities in pkg/ipcache/metadata.go, precedence in pkg/policy/types/entry.go.
"""

from __future__ import annotations

from typing import Any

import pytest

from ciliumpy import Cluster, Direction, MapStateKey, Protocol

WORLD_IP = "203.0.113.7"


def _policy(spec: dict[str, Any], ns: str | None = "a", name: str = "p") -> dict[str, Any]:
    kind = "CiliumNetworkPolicy" if ns else "CiliumClusterwideNetworkPolicy"
    meta: dict[str, Any] = {"name": name}
    if ns:
        meta["namespace"] = ns
    return {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": meta, "spec": spec}


WEB = {"matchLabels": {"app": "web"}}
CLI = {"matchLabels": {"app": "cli"}}


@pytest.fixture
def c() -> Cluster:
    """Namespaces a (team x) and b (team y), each with a ``web`` and a ``cli`` pod.

    ``allow_localhost`` is off so that the host is judged by the rules alone.
    """
    cluster = Cluster(allow_localhost=False)
    cluster.add_namespace("a", {"team": "x"})
    cluster.add_namespace("b", {"team": "y"})
    for ns in ("a", "b"):
        cluster.add_endpoint(f"{ns}/web", labels={"app": "web"}, ports=[("http", 8080, "TCP")])
        cluster.add_endpoint(f"{ns}/cli", labels={"app": "cli"})
    return cluster


def allowed(c: Cluster, src: str, dst: str, port: int = 80, proto: str = "TCP") -> bool:
    return c.check(src, dst, port, proto).allowed


def ingress_keys(c: Cluster, ref: str) -> set[MapStateKey]:
    return {k for k in c.map_state(ref) if k.direction == Direction.INGRESS}


# ---- CNP versus CCNP -------------------------------------------------------------------------
def test_cnp_empty_from_endpoints_is_the_policy_namespace(c: Cluster) -> None:
    c.apply(_policy({"endpointSelector": WEB, "ingress": [{"fromEndpoints": [{}]}]}))
    assert allowed(c, "a/cli", "a/web")
    assert not allowed(c, "b/cli", "a/web")
    assert not allowed(c, WORLD_IP, "a/web")
    assert not allowed(c, "host", "a/web")


def test_ccnp_empty_from_endpoints_is_every_pod_but_no_reserved_identity(c: Cluster) -> None:
    c.apply(_policy({"endpointSelector": WEB, "ingress": [{"fromEndpoints": [{}]}]}, ns=None))
    for src in ("a/cli", "b/cli", "b/web"):
        assert allowed(c, src, "a/web")
    assert not allowed(c, WORLD_IP, "a/web")
    assert not allowed(c, "host", "a/web")
    assert {k.identity for k in ingress_keys(c, "a/web")} == {c.identity_of(r).id for r in c.endpoints}


def test_cnp_subject_selector_is_pinned_to_its_namespace(c: Cluster) -> None:
    c.apply(_policy({"endpointSelector": {}, "ingress": [{}]}))
    assert not allowed(c, "a/cli", "a/web")
    assert not allowed(c, "b/cli", "a/cli")
    assert allowed(c, "a/cli", "b/web")  # b is not selected by a's policy


def test_cnp_subject_k8s_namespace_match_is_replaced_by_the_policy_namespace(c: Cluster) -> None:
    # ParseToCiliumRule: AddMatch(k8s:io.kubernetes.pod.namespace, <policy ns>) overwrites
    # a user match on the same (k8s-sourced) key, with a warning.
    sel = {"matchLabels": {"app": "web", "k8s:io.kubernetes.pod.namespace": "b"}}
    c.apply(_policy({"endpointSelector": sel, "ingress": [{}]}))
    assert allowed(c, "a/cli", "b/web")
    assert not allowed(c, "a/cli", "a/web")


def test_cnp_subject_unprefixed_foreign_namespace_selects_nothing(c: Cluster) -> None:
    sel = {"matchLabels": {"app": "web", "io.kubernetes.pod.namespace": "b"}}
    c.apply(_policy({"endpointSelector": sel, "ingress": [{}]}))
    assert allowed(c, "a/cli", "b/web")
    assert allowed(c, "a/cli", "a/web")


def test_cnp_subject_namespace_expression_is_kept(c: Cluster) -> None:
    expr = {"key": "io.kubernetes.pod.namespace", "operator": "NotIn", "values": ["a"]}
    c.apply(_policy({"endpointSelector": {"matchExpressions": [expr]}, "ingress": [{}]}))
    assert allowed(c, "a/cli", "a/web")


def test_ccnp_empty_subject_selects_every_namespace(c: Cluster) -> None:
    c.apply(_policy({"endpointSelector": {}, "ingress": [{}]}, ns=None))
    for dst in c.endpoints:
        assert not allowed(c, "a/cli", dst)


def test_cnp_namespace_label_selector_crosses_namespaces(c: Cluster) -> None:
    sel = {"matchLabels": {"io.cilium.k8s.namespace.labels.team": "y"}}
    c.apply(_policy({"endpointSelector": WEB, "ingress": [{"fromEndpoints": [sel]}]}))
    assert allowed(c, "b/cli", "a/web")
    assert not allowed(c, "a/cli", "a/web")


def test_cnp_explicit_namespace_in_peer_selector(c: Cluster) -> None:
    sel = {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "b", "app": "cli"}}
    c.apply(_policy({"endpointSelector": WEB, "ingress": [{"fromEndpoints": [sel]}]}))
    assert allowed(c, "b/cli", "a/web")
    assert not allowed(c, "a/cli", "a/web")


def test_reserved_selector_gets_no_namespace(c: Cluster) -> None:
    c.apply(
        _policy({"endpointSelector": WEB, "ingress": [{"fromEndpoints": [{"matchLabels": {"reserved:host": ""}}]}]})
    )
    assert allowed(c, "host", "a/web")
    assert not allowed(c, "a/cli", "a/web")


def test_ccnp_peer_restricted_to_one_namespace(c: Cluster) -> None:
    sel = {"matchLabels": {"io.kubernetes.pod.namespace": "b"}}
    c.apply(_policy({"endpointSelector": WEB, "ingress": [{"fromEndpoints": [sel]}]}, ns=None))
    assert allowed(c, "b/cli", "a/web")
    assert not allowed(c, "a/cli", "a/web")


# ---- entities ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("entity", "allowed_from"),
    [
        ("world", {WORLD_IP, "world"}),
        ("cluster", {"a/cli", "b/cli", "host"}),
        ("host", {"host"}),
        ("all", {"a/cli", "b/cli", "host", WORLD_IP, "world"}),
        ("kube-apiserver", set()),
        ("none", set()),
    ],
)
def test_entities(c: Cluster, entity: str, allowed_from: set[str]) -> None:
    c.apply(_policy({"endpointSelector": WEB, "ingress": [{"fromEntities": [entity]}]}))
    got = {src for src in ("a/cli", "b/cli", "host", WORLD_IP, "world") if allowed(c, src, "a/web")}
    assert got == allowed_from


def test_kube_apiserver_entity_selects_its_reserved_identity(c: Cluster) -> None:
    c.apply(_policy({"endpointSelector": WEB, "ingress": [{"fromEntities": ["kube-apiserver"]}]}))
    assert {k.identity for k in ingress_keys(c, "a/web")} == {7}


def test_cluster_entity_includes_remote_nodes(c: Cluster) -> None:
    c.add_node("n2", ips=["172.18.0.3"])
    c.apply(_policy({"endpointSelector": CLI, "egress": [{"toEntities": ["cluster"]}]}))
    assert allowed(c, "a/cli", "172.18.0.3")
    assert allowed(c, "a/cli", "b/web")
    assert not allowed(c, "a/cli", WORLD_IP)


# ---- CIDR --------------------------------------------------------------------------------------
def test_cidr_with_except(c: Cluster) -> None:
    rule = {"toCIDRSet": [{"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}]}
    c.apply(_policy({"endpointSelector": CLI, "egress": [rule]}))
    assert allowed(c, "a/cli", "192.0.2.1")
    assert not allowed(c, "a/cli", "192.0.2.200")
    assert not allowed(c, "a/cli", "198.51.100.1")


def test_cidr_covering_pod_and_host_addresses_selects_neither(c: Cluster) -> None:
    c.apply(_policy({"endpointSelector": CLI, "egress": [{"toCIDR": ["10.0.0.0/8"]}]}))
    assert str(c.endpoint("b/web").ips[0]).startswith("10.")
    assert not allowed(c, "a/cli", "b/web")
    assert not allowed(c, "a/cli", "host")
    assert allowed(c, "a/cli", "10.200.0.1")


def test_cidr_zero_is_world(c: Cluster) -> None:
    c.apply(_policy({"endpointSelector": CLI, "egress": [{"toCIDR": ["0.0.0.0/0"]}]}))
    assert allowed(c, "a/cli", WORLD_IP)
    assert allowed(c, "a/cli", "world")
    assert not allowed(c, "a/cli", "a/web")


# ---- deny and default deny -------------------------------------------------------------------
def test_deny_overrides_allow(c: Cluster) -> None:
    c.apply(
        _policy(
            {
                "endpointSelector": WEB,
                "ingress": [{"fromEntities": ["all"]}],
                "ingressDeny": [{"fromEndpoints": [CLI], "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}],
            }
        )
    )
    assert not allowed(c, "a/cli", "a/web", 80)
    assert allowed(c, "a/cli", "a/web", 81)
    assert allowed(c, "b/cli", "a/web", 80)  # CLI is a's cli only


def test_deny_in_another_policy_overrides_allow(c: Cluster) -> None:
    c.apply(
        _policy({"endpointSelector": WEB, "ingress": [{"fromEntities": ["all"]}]}, name="allow"),
        _policy({"endpointSelector": WEB, "ingressDeny": [{"fromEntities": ["world"]}]}, name="deny"),
    )
    assert not allowed(c, WORLD_IP, "a/web")
    assert allowed(c, "a/cli", "a/web")


def test_deny_only_policy_is_default_deny(c: Cluster) -> None:
    c.apply(_policy({"endpointSelector": WEB, "ingressDeny": [{"fromEndpoints": [CLI]}]}))
    assert not allowed(c, "a/cli", "a/web")
    assert not allowed(c, "b/cli", "a/web")


def test_enable_default_deny_false_keeps_only_the_denies(c: Cluster) -> None:
    spec = {"endpointSelector": WEB, "enableDefaultDeny": {"ingress": False}, "ingressDeny": [{"fromEndpoints": [CLI]}]}
    c.apply(_policy(spec))
    assert not allowed(c, "a/cli", "a/web")
    assert allowed(c, "b/cli", "a/web")
    assert allowed(c, WORLD_IP, "a/web")


def test_default_deny_wins_when_any_policy_asks_for_it(c: Cluster) -> None:
    c.apply(
        _policy(
            {
                "endpointSelector": WEB,
                "enableDefaultDeny": {"ingress": False},
                "ingressDeny": [{"fromEndpoints": [CLI]}],
            }
        ),
        _policy({"endpointSelector": WEB, "ingress": [{"fromEntities": ["world"]}]}, name="q"),
    )
    assert not allowed(c, "b/cli", "a/web")
    assert allowed(c, WORLD_IP, "a/web")


def test_empty_rule_element_denies_all(c: Cluster) -> None:
    c.apply(_policy({"endpointSelector": WEB, "ingress": [{}]}))
    for src in ("a/cli", "b/cli", WORLD_IP, "host"):
        assert not allowed(c, src, "a/web")
    assert ingress_keys(c, "a/web") == set()
    assert allowed(c, "a/web", WORLD_IP)  # egress is not enforced


def test_explicitly_empty_peer_list_selects_nothing(c: Cluster) -> None:
    c.apply(
        _policy({"endpointSelector": WEB, "ingress": [{"fromEndpoints": [], "toPorts": [{"ports": [{"port": "80"}]}]}]})
    )
    assert not allowed(c, "a/cli", "a/web")


def test_ports_without_peers_are_open_to_everyone(c: Cluster) -> None:
    c.apply(
        _policy({"endpointSelector": WEB, "ingress": [{"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]})
    )
    for src in ("a/cli", "b/cli", WORLD_IP, "host"):
        assert allowed(c, src, "a/web", 80)
        assert not allowed(c, src, "a/web", 81)


# ---- ports ------------------------------------------------------------------------------------
def test_port_range(c: Cluster) -> None:
    ports = [{"port": "8000", "endPort": 8100, "protocol": "TCP"}]
    c.apply(_policy({"endpointSelector": WEB, "ingress": [{"toPorts": [{"ports": ports}]}]}))
    assert [allowed(c, "a/cli", "a/web", p) for p in (7999, 8000, 8050, 8100, 8101)] == [False, True, True, True, False]
    assert not allowed(c, "a/cli", "a/web", 8050, "UDP")


def test_port_zero_is_every_port_of_the_protocol(c: Cluster) -> None:
    c.apply(
        _policy({"endpointSelector": WEB, "ingress": [{"toPorts": [{"ports": [{"port": "0", "protocol": "TCP"}]}]}]})
    )
    assert allowed(c, "b/cli", "a/web", 1)
    assert allowed(c, "b/cli", "a/web", 65535)
    assert not allowed(c, "b/cli", "a/web", 53, "UDP")


def test_named_port_on_ingress_uses_the_subjects_own_ports(c: Cluster) -> None:
    c.apply(
        _policy({"endpointSelector": WEB, "ingress": [{"toPorts": [{"ports": [{"port": "http", "protocol": "TCP"}]}]}]})
    )
    assert allowed(c, "a/cli", "a/web", 8080)
    assert not allowed(c, "a/cli", "a/web", 80)


def test_named_port_on_egress_uses_every_pods_ports(c: Cluster) -> None:
    c.apply(
        _policy({"endpointSelector": CLI, "egress": [{"toPorts": [{"ports": [{"port": "http", "protocol": "TCP"}]}]}]})
    )
    assert allowed(c, "a/cli", "b/web", 8080)
    assert allowed(c, "a/cli", WORLD_IP, 8080)
    assert not allowed(c, "a/cli", "b/web", 80)


def test_conflicting_named_ports_on_egress_resolve_to_nothing(c: Cluster) -> None:
    c.add_endpoint("b/other", labels={"app": "other"}, ports=[("http", 9090, "TCP")])
    c.apply(
        _policy({"endpointSelector": CLI, "egress": [{"toPorts": [{"ports": [{"port": "http", "protocol": "TCP"}]}]}]})
    )
    assert not allowed(c, "a/cli", "a/web", 8080)
    assert not allowed(c, "a/cli", "b/other", 9090)


def test_any_protocol_is_tcp_udp_and_sctp_but_not_icmp(c: Cluster) -> None:
    c.apply(
        _policy({"endpointSelector": WEB, "ingress": [{"toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}]}]}]})
    )
    for proto in ("TCP", "UDP", "SCTP"):
        assert allowed(c, "a/cli", "a/web", 53, proto)
    assert not allowed(c, "a/cli", "a/web", 8, "ICMP")
    protocols = {k.protocol for k in ingress_keys(c, "a/web")}
    assert protocols == {int(Protocol.TCP), int(Protocol.UDP), int(Protocol.SCTP)}


def test_l3_only_rule_allows_every_protocol_including_icmp(c: Cluster) -> None:
    c.apply(_policy({"endpointSelector": WEB, "ingress": [{"fromEndpoints": [CLI]}]}))
    assert allowed(c, "a/cli", "a/web", 8, "ICMP")
    assert allowed(c, "a/cli", "a/web", 1234, "UDP")


def test_icmps(c: Cluster) -> None:
    fields = [{"type": 8}, {"family": "IPv6", "type": "EchoRequest"}]
    c.apply(_policy({"endpointSelector": WEB, "ingress": [{"fromEndpoints": [CLI], "icmps": [{"fields": fields}]}]}))
    assert allowed(c, "a/cli", "a/web", 8, "ICMP")
    assert not allowed(c, "a/cli", "a/web", 0, "ICMP")
    assert not allowed(c, "a/cli", "a/web", 80)
    keys = ingress_keys(c, "a/web")
    assert {(k.protocol, k.port) for k in keys} == {(int(Protocol.ICMP), 8), (int(Protocol.ICMPV6), 128)}


def test_icmp_deny(c: Cluster) -> None:
    c.apply(
        _policy(
            {
                "endpointSelector": WEB,
                "ingress": [{"fromEntities": ["all"]}],
                "ingressDeny": [{"icmps": [{"fields": [{"type": "EchoRequest"}]}]}],
            }
        )
    )
    assert not allowed(c, "a/cli", "a/web", 8, "ICMP")
    assert allowed(c, "a/cli", "a/web", 0, "ICMP")
    assert allowed(c, "a/cli", "a/web", 80)
