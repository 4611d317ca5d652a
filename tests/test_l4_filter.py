"""Per-selector L7 parsers and the default-allow L7 wildcard, in the style of Cilium's
``pkg/policy/l4_filter_test.go`` (cases 9b and 14-18 of its table), on every backend.

Since Cilium 1.18 the L7 parser belongs to each peer selector of a port
(``PerSelectorPolicy.L7Parser``): HTTP rules for one peer and Kafka or DNS rules for another
on the same port are valid and each peer is redirected to its own proxy; only two parsers on
the *same* selector and port conflict. And when a direction does not turn on default deny
(``enableDefaultDeny: false``), L7 rules only add visibility: Cilium appends the parser's
allow-all rule (``ensureWildcard``).

Every verdict comes from the whole pipeline: manifests -> map state -> backend -> L7 stage.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from ciliumpy import Cluster, Direction, MapStateKey, Packet, PolicyError, Protocol
from ciliumpy._datapath import TCPFlags
from ciliumpy._l7 import DNSQuery, KafkaRequest
from ciliumpy.cli.bpf import policy_map_records

CLIENT, OTHER, SERVER = "default/client", "default/other", "default/server"
HTTP_IN, HTTP_OUT, KAFKA_IN, DNS_OUT = 15001, 15002, 15003, 15053

PODS = [
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
    }
    for name in ("client", "other", "server")
]

_SPORTS = itertools.count(42000)


@pytest.fixture
def cluster(cluster: Cluster) -> Cluster:
    """The plugin's fresh cluster on the backend under test, with client, other and server."""
    cluster.apply(*PODS)
    return cluster


def app(name: str) -> list[dict[str, Any]]:
    return [{"matchLabels": {"app": name}}]


def port(number: int, rules: Mapping[str, Any] | None = None, protocol: str = "TCP") -> list[dict[str, Any]]:
    out: dict[str, Any] = {"ports": [{"port": str(number), "protocol": protocol}]}
    if rules is not None:
        out["rules"] = dict(rules)
    return [out]


def cnp(
    name: str,
    subject: str,
    *,
    ingress: Sequence[Mapping[str, Any]] = (),
    egress: Sequence[Mapping[str, Any]] = (),
    egress_deny: Sequence[Mapping[str, Any]] = (),
    ingress_deny: Sequence[Mapping[str, Any]] = (),
    default_deny: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"endpointSelector": {"matchLabels": {"app": subject}}}
    for key, value in (
        ("ingress", ingress),
        ("egress", egress),
        ("egressDeny", egress_deny),
        ("ingressDeny", ingress_deny),
    ):
        if value:
            spec[key] = list(value)
    if default_deny is not None:
        spec["enableDefaultDeny"] = dict(default_deny)
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def packet(cluster: Cluster, src: str, dst: str, dport: int, proto: Protocol = Protocol.TCP) -> Packet:
    return Packet(
        cluster.endpoint(src).ips[0],
        cluster.endpoint(dst).ips[0],
        int(proto),
        sport=next(_SPORTS),
        dport=dport,
        tcp_flags=int(TCPFlags.SYN) if proto == Protocol.TCP else 0,
    )


def key(cluster: Cluster, ref: str, direction: Direction, dport: int, proto: Protocol = Protocol.TCP) -> MapStateKey:
    return MapStateKey(cluster.identity_of(ref).id, direction, int(proto), dport, 16)


# --------------------------------------------------------------------------------------------
# case 9b: different parsers for different selectors on one port

HTTP_AND_KAFKA_ON_80 = cnp(
    "http-and-kafka",
    "server",
    ingress=[
        {"fromEndpoints": app("client"), "toPorts": port(80, {"http": [{"method": "GET", "path": "/public"}]})},
        {"fromEndpoints": app("other"), "toPorts": port(80, {"kafka": [{"role": "produce", "topic": "orders"}]})},
    ],
)


def test_http_for_one_peer_and_kafka_for_another_on_one_port_each_get_their_own_proxy(cluster: Cluster) -> None:
    cluster.apply(HTTP_AND_KAFKA_ON_80)
    state = cluster.map_state(SERVER)
    assert state[key(cluster, CLIENT, Direction.INGRESS, 80)].proxy_port == HTTP_IN
    assert state[key(cluster, OTHER, Direction.INGRESS, 80)].proxy_port == KAFKA_IN
    # Each redirect carries its own parser's listener priority (HTTP 101, Kafka 106).
    assert state[key(cluster, CLIENT, Direction.INGRESS, 80)].listener_priority == 101
    assert state[key(cluster, OTHER, Direction.INGRESS, 80)].listener_priority == 106

    http_ok = cluster.check(CLIENT, SERVER, 80, http={"method": "GET", "path": "/public"})
    http_no = cluster.check(CLIENT, SERVER, 80, http={"method": "POST", "path": "/public"})
    assert (http_ok.http_status, http_no.http_status) == (200, 403)
    produce = cluster.evaluate(packet(cluster, OTHER, SERVER, 80), request=KafkaRequest("produce", topics=("orders",)))
    elsewhere = cluster.evaluate(packet(cluster, OTHER, SERVER, 80), request=KafkaRequest("produce", topics=("audit",)))
    assert produce.allowed and produce.l7.parser == "kafka" and produce.l7.proxy_parser == "kafka"
    assert not elsewhere.allowed and "matches no L7 rule" in elsewhere.l7.reason

    # The redirect each peer gets is visible in explain() and the cilium-dbg style map.
    assert f"redirected to the http proxy on port {HTTP_IN}" in http_ok.explain()
    assert f"redirected to the kafka proxy on port {KAFKA_IN}" in produce.explain()
    client_id, other_id = cluster.identity_of(CLIENT).id, cluster.identity_of(OTHER).id
    rows = {(r["identity"], r["port_proto"], r["proxy_port"]) for r in policy_map_records(cluster, SERVER)}
    assert (client_id, "80/TCP", str(HTTP_IN)) in rows
    assert (other_id, "80/TCP", str(KAFKA_IN)) in rows


def test_dns_for_one_peer_and_http_for_another_on_one_egress_port(cluster: Cluster) -> None:
    cluster.apply(
        cnp(
            "dns-and-http",
            "client",
            egress=[
                {"toEndpoints": app("other"), "toPorts": port(8053, {"dns": [{"matchName": "example.com"}]})},
                {"toEndpoints": app("server"), "toPorts": port(8053, {"http": [{"method": "GET"}]})},
            ],
        )
    )
    state = cluster.map_state(CLIENT)
    assert state[key(cluster, OTHER, Direction.EGRESS, 8053)].proxy_port == DNS_OUT
    assert state[key(cluster, SERVER, Direction.EGRESS, 8053)].proxy_port == HTTP_OUT

    to_dns = packet(cluster, CLIENT, OTHER, 8053)
    assert cluster.evaluate(to_dns, request=DNSQuery("Example.COM")).allowed
    refused = cluster.evaluate(packet(cluster, CLIENT, OTHER, 8053), request=DNSQuery("other.example"))
    assert not refused.allowed and "REFUSED" in refused.l7.reason and refused.l7.proxy_parser == "dns"
    assert "redirected to the dns proxy" in refused.explain()
    assert cluster.check(CLIENT, SERVER, 8053, http={"method": "GET", "path": "/"}).http_status == 200
    assert cluster.check(CLIENT, SERVER, 8053, http={"method": "PUT", "path": "/"}).http_status == 403


def test_wildcard_http_and_selector_kafka_on_one_port_are_valid(cluster: Cluster) -> None:
    # l4_filter_test.go TestL3SelectingEndpointAndL3AllowAllMergeDifferentL7 (case 9b).
    cluster.apply(
        cnp(
            "overlap",
            "server",
            ingress=[
                {"toPorts": port(80, {"http": [{"method": "GET", "path": "/"}]})},
                {"fromEndpoints": app("other"), "toPorts": port(80, {"kafka": [{"topic": "foo"}]})},
            ],
        )
    )
    state = cluster.map_state(SERVER)
    wildcard = MapStateKey(0, Direction.INGRESS, int(Protocol.TCP), 80, 16)
    assert state[wildcard].proxy_port == HTTP_IN
    # The HTTP redirect outranks the Kafka one (listener priority 101 < 106), so other's
    # narrower Kafka entry is pruned and other's traffic reaches the HTTP proxy too ...
    assert key(cluster, OTHER, Direction.INGRESS, 80) not in state
    from_client = cluster.check(CLIENT, SERVER, 80, http={"method": "POST", "path": "/"})
    assert from_client.http_status == 403
    # ... which does not enforce other's Kafka rules: they reach Envoy as a rule without
    # HTTP restrictions for other's identity.
    from_other = cluster.check(OTHER, SERVER, 80, http={"method": "POST", "path": "/"})
    assert from_other.http_status == 200
    assert "kafka rules for this peer are not enforced by the http proxy" in from_other.l7.reason


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"kafka": [{"topic": "foo"}]}, {"http": [{"method": "GET", "path": "/"}]}),
        ({"http": [{"method": "GET", "path": "/"}]}, {"kafka": [{"topic": "foo"}]}),
        ({"l7proto": "testing", "l7": [{"method": "PUT"}]}, {"http": [{"method": "GET"}]}),
    ],
    ids=["kafka-then-http", "http-then-kafka", "proxylib-then-http"],
)
def test_different_parsers_on_the_same_selector_and_port_still_conflict(
    cluster: Cluster, first: dict[str, Any], second: dict[str, Any]
) -> None:
    # Cases 5A/5B/9A: the merge of one selector's policies cannot hold two parsers.
    rule = cnp(
        "conflict",
        "server",
        ingress=[
            {"fromEndpoints": app("client"), "toPorts": port(80, first)},
            {"fromEndpoints": app("client"), "toPorts": port(80, second)},
        ],
    )
    with pytest.raises(PolicyError, match="cannot merge conflicting L7 parsers"):
        cluster.apply(rule)
    assert cluster.policies == []


# --------------------------------------------------------------------------------------------
# cases 14-18: L7 rules under default allow


def test_http_rules_under_default_allow_only_add_visibility(cluster: Cluster) -> None:
    # Case 15 (ingress): POST /other passes where the rule lists only GET /api.
    cluster.apply(
        cnp(
            "visibility",
            "server",
            ingress=[{"toPorts": port(80, {"http": [{"method": "GET", "path": "/api"}]})}],
            default_deny={"ingress": False},
        )
    )
    v = cluster.check(CLIENT, SERVER, 80, http={"method": "POST", "path": "/other"})
    assert v.allowed and v.http_status == 200 and v.redirected
    assert "no L7 restrictions" in v.l7.reason
    assert cluster.check(CLIENT, SERVER, 80, http={"method": "GET", "path": "/api"}).http_status == 200
    # Other ports are allowed by the synthesized allow-all, not redirected.
    other_port = cluster.check(CLIENT, SERVER, 8080)
    assert other_port.allowed and not other_port.redirected


def test_grpc_rules_under_default_allow_only_add_visibility(cluster: Cluster) -> None:
    grpc = {"http": [{"method": "POST", "path": "/shop.Orders/Get"}]}
    cluster.apply(cnp("grpc", "server", ingress=[{"toPorts": port(50051, grpc)}], default_deny={"ingress": False}))
    other_call = cluster.check(CLIENT, SERVER, 50051, http={"method": "POST", "path": "/shop.Orders/Delete"})
    assert other_call.allowed and other_call.redirected and other_call.http_status == 200


def test_kafka_rules_under_default_allow_only_add_visibility(cluster: Cluster) -> None:
    # Case 16.
    cluster.apply(
        cnp(
            "kafka-visibility",
            "server",
            ingress=[{"toPorts": port(9092, {"kafka": [{"role": "produce", "topic": "orders"}]})}],
            default_deny={"ingress": False},
        )
    )
    v = cluster.evaluate(packet(cluster, CLIENT, SERVER, 9092), request=KafkaRequest("fetch", topics=("audit",)))
    assert v.allowed and v.redirected and v.l7.parser == "kafka"


@pytest.mark.parametrize("selected", [False, True], ids=["any-peer", "l3-selector"])
def test_dns_rules_under_default_allow_only_add_visibility(cluster: Cluster, selected: bool) -> None:
    # Cases 14 (wildcard peer) and 17 (an L3 selector), egress.
    rule: dict[str, Any] = {"toPorts": port(53, {"dns": [{"matchPattern": "example.com"}]}, "UDP")}
    if selected:
        rule["toEndpoints"] = app("other")
    cluster.apply(cnp("dns-visibility", "client", egress=[rule], default_deny={"egress": False}))
    v = cluster.evaluate(packet(cluster, CLIENT, OTHER, 53, Protocol.UDP), request=DNSQuery("elsewhere.test"))
    assert v.allowed and v.redirected and v.l7.proxy_parser == "dns"
    state = cluster.map_state(CLIENT)
    ident = 0 if not selected else cluster.identity_of(OTHER).id
    assert state[MapStateKey(ident, Direction.EGRESS, int(Protocol.UDP), 53, 16)].proxy_port == DNS_OUT


def test_default_allow_does_not_add_a_wildcard_to_deny_rules(cluster: Cluster) -> None:
    # Case 18: the deny still denies; the L7 rule is visibility only.
    cluster.apply(
        cnp(
            "deny-and-l7",
            "server",
            ingress=[{"toPorts": port(80, {"http": [{"method": "GET", "path": "/"}]})}],
            ingress_deny=[{"fromEndpoints": app("other"), "toPorts": port(80)}],
            default_deny={"ingress": False},
        )
    )
    assert cluster.check(CLIENT, SERVER, 80, http={"method": "PUT", "path": "/x"}).http_status == 200
    denied = cluster.check(OTHER, SERVER, 80, http={"method": "GET", "path": "/"})
    assert not denied.allowed and not denied.redirected


def test_default_deny_from_another_policy_keeps_the_l7_rules_enforcing(cluster: Cluster) -> None:
    # Default deny is decided per endpoint and direction: one selecting policy with default
    # deny (the implicit default) makes the direction default-deny, so no wildcard is added.
    cluster.apply(
        cnp(
            "visibility",
            "server",
            ingress=[{"toPorts": port(80, {"http": [{"method": "GET", "path": "/api"}]})}],
            default_deny={"ingress": False},
        ),
        cnp("strict", "server", ingress=[{"fromEndpoints": app("other"), "toPorts": port(9092)}]),
    )
    assert cluster.check(CLIENT, SERVER, 80, http={"method": "POST", "path": "/other"}).http_status == 403
    assert cluster.check(CLIENT, SERVER, 80, http={"method": "GET", "path": "/api"}).http_status == 200
