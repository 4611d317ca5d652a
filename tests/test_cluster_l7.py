"""L7 policy end to end through :class:`Cluster`: the seed scenario's HTTP and gRPC rules,
Cilium's Star Wars demo, L7 merging (reference §1.5, §3.6) and Kafka.

Every verdict here comes from the real pipeline: manifests → map state → backend → L7 stage.
"""

from __future__ import annotations

import itertools
import pathlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from ciliumpy import Action, Cluster, Direction, DropReason, MapStateKey, Packet, PolicyError, Protocol, Verdict
from ciliumpy._datapath import TCPFlags
from ciliumpy._l7 import HTTPRule, KafkaRequest, KafkaRule

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed"
DATA = pathlib.Path(__file__).resolve().parent / "data"

FRONTEND, BACKEND, GATEWAY = "production/frontend", "production/backend", "production/api-gateway"
TIEFIGHTER, XWING = "default/tiefighter", "default/xwing"
DEATHSTARS = ("default/deathstar-1", "default/deathstar-2")
CLIENT, OTHER, SERVER = "default/client", "default/other", "default/server"

# For what the compiler and the L7 stage decide alone (merging, rule sets, errors). What the
# datapath decides (redirect vs. allow vs. deny, L3 drops) also runs on eBPF: the seed, the
# Star Wars demo, same-selector merging, deny over redirect and Kafka.
SIMULATOR_ONLY = pytest.mark.ciliumpy_backend("simulator")

# The seed's 03-l7-http.yaml rules, as the proxy describes them.
GATEWAY_RULES = ("GET /api/products", "POST /api/orders", "GET /api/users/[0-9]+")


def origin_names(verdict: Verdict) -> set[str]:
    return {o.name for o in verdict.policies}


# --------------------------------------------------------------------------------------------
# the seed scenario


@pytest.fixture(scope="module")
def shared() -> Iterator[dict[tuple[str, str], Cluster]]:
    """Clusters that tests only question (never change), built once per backend."""
    clusters: dict[tuple[str, str], Cluster] = {}
    yield clusters
    for cluster in clusters.values():
        cluster.close()


@pytest.fixture
def seed(ciliumpy_backend: str, shared: dict[tuple[str, str], Cluster]) -> Cluster:
    """The seed scenario on the backend under test."""
    key = ("seed", ciliumpy_backend)
    if key not in shared:
        shared[key] = Cluster.from_manifests(SEED, backend=ciliumpy_backend)
    return shared[key]


@pytest.mark.parametrize(
    ("method", "path", "rule"),
    [
        ("GET", "/api/products", HTTPRule(method="GET", path="/api/products")),
        ("POST", "/api/orders", HTTPRule(method="POST", path="/api/orders")),
        ("GET", "/api/users/42", HTTPRule(method="GET", path="/api/users/[0-9]+")),
    ],
)
def test_seed_http_request_matching_a_rule_is_forwarded(seed: Cluster, method: str, path: str, rule: HTTPRule) -> None:
    v = seed.check(FRONTEND, GATEWAY, 8080, http={"method": method, "path": path})
    assert v.allowed and v.verdict == "FORWARDED"
    assert v.http_status == 200
    assert v.redirected and v.ingress is not None and v.ingress.result.action == Action.REDIRECT
    assert v.l7.matched_rule == rule
    assert {o.name for o in v.l7.matched_origins} == {"api-gateway-l7-http"}
    assert "api-gateway-l7-http" in origin_names(v)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/users/admin"),  # [0-9]+ needs digits
        ("DELETE", "/api/orders"),  # method not allowed for that path
        ("GET", "/api/products?page=2"),  # the path regex is matched against the whole :path
        ("get", "/api/products"),  # methods are case-sensitive
        ("POST", "/api/products"),
    ],
)
def test_seed_http_request_matching_no_rule_gets_403_naming_the_rules(seed: Cluster, method: str, path: str) -> None:
    v = seed.check(FRONTEND, GATEWAY, 8080, http={"method": method, "path": path})
    assert not v.allowed and v.verdict == "DROPPED"
    assert v.http_status == 403
    # The proxy answers; no packet is dropped, so there is no datapath drop reason.
    assert v.drop_reason is None
    assert v.direction == Direction.INGRESS
    assert v.l7.matched_rule is None
    for rule in GATEWAY_RULES:
        assert rule in v.l7.reason
    assert "CiliumNetworkPolicy production/api-gateway-l7-http" in v.l7.reason
    assert origin_names(v) == {"api-gateway-l7-http"}
    text = v.explain()
    assert "HTTP 403" in text and f"{method} {path}" in text


def test_seed_l7_port_without_request_is_redirected_and_lists_what_the_proxy_accepts(seed: Cluster) -> None:
    v = seed.check(FRONTEND, GATEWAY, 8080)
    assert v.verdict == "REDIRECTED" and v.allowed
    assert v.http_status is None and v.l7 is None
    assert v.ingress is not None
    assert v.ingress.accepts == GATEWAY_RULES
    key, entry = v.entry or (None, None)
    assert key is not None and entry is not None and entry.proxy_port != 0
    assert "proxy would accept: " + "; ".join(GATEWAY_RULES) in v.explain()


def test_seed_plain_l4_port_is_not_redirected_and_ignores_the_request(seed: Cluster) -> None:
    # 02 allows frontend -> backend:8080 without L7 rules: no proxy, any request passes.
    v = seed.check(FRONTEND, BACKEND, 8080, http={"method": "DELETE", "path": "/admin"})
    assert v.verdict == "FORWARDED"
    assert not v.redirected and v.l7 is None and v.http_status is None


def test_seed_grpc_call_to_the_allowed_method_is_forwarded(seed: Cluster) -> None:
    v = seed.check(FRONTEND, BACKEND, 50051, http={"grpc": "/mypackage.MyService/GetItems"})
    assert v.verdict == "FORWARDED" and v.http_status == 200
    assert v.l7.matched_rule == HTTPRule(method="POST", path="/mypackage.MyService/GetItems")
    assert origin_names(v) >= {"backend-grpc-getitems"}


@pytest.mark.parametrize(
    "call", ["/mypackage.MyService/DeleteItem", "/mypackage.MyService/GetItemsStream", "/other.MyService/GetItems"]
)
def test_seed_grpc_call_to_another_method_is_refused(seed: Cluster, call: str) -> None:
    v = seed.check(FRONTEND, BACKEND, 50051, http={"grpc": call})
    assert v.verdict == "DROPPED" and v.http_status == 403
    assert "POST /mypackage.MyService/GetItems" in v.l7.reason
    assert origin_names(v) == {"backend-grpc-getitems"}


def test_seed_grpc_port_without_request_is_redirected(seed: Cluster) -> None:
    v = seed.check(FRONTEND, BACKEND, 50051)
    assert v.verdict == "REDIRECTED"
    assert v.ingress is not None and v.ingress.accepts == ("POST /mypackage.MyService/GetItems",)


@pytest.mark.parametrize(
    ("dst", "method", "path", "status"),
    [
        ("production/product-service", "GET", "/api/products", 200),
        ("production/product-service", "GET", "/api/products/17", 200),
        ("production/product-service", "POST", "/api/products", 403),
        ("production/product-service", "GET", "/api/productsX", 403),
        ("production/order-service", "POST", "/api/orders/9", 200),
        ("production/order-service", "DELETE", "/api/orders/9", 403),
        ("production/user-service", "GET", "/api/users/7", 200),
        ("production/user-service", "GET", "/api/users", 403),
    ],
)
def test_seed_microservices_accept_only_their_part_of_the_api(
    seed: Cluster, dst: str, method: str, path: str, status: int
) -> None:
    v = seed.check(GATEWAY, dst, 8080, http={"method": method, "path": path})
    assert v.http_status == status
    assert v.allowed is (status == 200)
    assert v.redirected


def test_seed_microservices_do_not_reach_each_other(seed: Cluster) -> None:
    v = seed.check(
        "production/product-service", "production/user-service", 8080, http={"method": "GET", "path": "/api/users/7"}
    )
    assert v.verdict == "DROPPED" and v.drop_reason == DropReason.POLICY_DENIED
    assert v.direction == Direction.EGRESS
    assert v.l7 is None and v.http_status is None  # dropped before any proxy


# --------------------------------------------------------------------------------------------
# Cilium's Star Wars demo


@pytest.fixture
def starwars(ciliumpy_backend: str) -> Iterator[Cluster]:
    with Cluster.from_manifests(
        DATA / "starwars.yaml", DATA / "starwars-l3-l4.yaml", backend=ciliumpy_backend
    ) as cluster:
        yield cluster


LANDING = {"method": "POST", "path": "/v1/request-landing"}
EXHAUST = {"method": "PUT", "path": "/v1/exhaust-port"}


def test_starwars_without_policy_everyone_lands(ciliumpy_backend: str) -> None:
    with Cluster.from_manifests(DATA / "starwars.yaml", backend=ciliumpy_backend) as cluster:
        for deathstar in DEATHSTARS:
            assert cluster.check(XWING, deathstar, 80, http=LANDING).verdict == "FORWARDED"


def test_starwars_l3_l4_policy_admits_only_the_empire(starwars: Cluster) -> None:
    for deathstar in DEATHSTARS:
        landing = starwars.check(TIEFIGHTER, deathstar, 80, http=LANDING)
        assert landing.verdict == "FORWARDED" and not landing.redirected
        # Before the L7 rule nothing looks at the request: the exhaust port is open to the empire.
        exhaust = starwars.check(TIEFIGHTER, deathstar, 80, http=EXHAUST)
        assert exhaust.verdict == "FORWARDED" and exhaust.http_status is None
        xwing = starwars.check(XWING, deathstar, 80, http=LANDING)
        assert xwing.verdict == "DROPPED" and xwing.drop_reason == DropReason.POLICY_DENIED
        assert xwing.direction == Direction.INGRESS


def test_starwars_l7_policy_allows_landing_and_refuses_the_exhaust_port(starwars: Cluster) -> None:
    starwars.apply(DATA / "starwars-l7.yaml")
    assert [p.name for p in starwars.policies] == ["rule1"]  # replaced, not added
    for deathstar in DEATHSTARS:
        landing = starwars.check(TIEFIGHTER, deathstar, 80, http=LANDING)
        assert landing.verdict == "FORWARDED" and landing.http_status == 200
        assert landing.l7.matched_rule == HTTPRule(method="POST", path="/v1/request-landing")

        exhaust = starwars.check(TIEFIGHTER, deathstar, 80, http=EXHAUST)
        assert exhaust.verdict == "DROPPED" and exhaust.http_status == 403
        assert exhaust.drop_reason is None
        assert "POST /v1/request-landing" in exhaust.l7.reason
        assert origin_names(exhaust) == {"rule1"}
        assert "HTTP 403" in exhaust.explain()

        xwing = starwars.check(XWING, deathstar, 80, http=LANDING)
        assert xwing.verdict == "DROPPED" and xwing.drop_reason == DropReason.POLICY_DENIED
        assert xwing.http_status is None and xwing.l7 is None  # dropped at L3, never reaches the proxy


@SIMULATOR_ONLY
def test_starwars_via_the_deathstar_cluster_ip(starwars: Cluster) -> None:
    # Policy applies after the service's DNAT to a backend (reference §3.9 step 1).
    starwars.apply(DATA / "starwars-l7.yaml")
    cluster_ip = str(starwars.services[0].cluster_ips[0])
    landing = starwars.check(TIEFIGHTER, cluster_ip, 80, http=LANDING)
    assert landing.verdict == "FORWARDED" and landing.http_status == 200
    assert landing.dst.ref in DEATHSTARS
    assert landing.service is not None and landing.service.service == "default/deathstar"
    assert "service default/deathstar" in landing.explain()
    exhaust = starwars.check(TIEFIGHTER, cluster_ip, 80, http=EXHAUST)
    assert exhaust.http_status == 403
    xwing = starwars.check(XWING, cluster_ip, 80, http=LANDING)
    assert xwing.verdict == "DROPPED" and xwing.drop_reason == DropReason.POLICY_DENIED


@SIMULATOR_ONLY
def test_starwars_by_service_name_as_in_the_demo(starwars: Cluster) -> None:
    # kubectl exec tiefighter -- curl -XPOST deathstar.default.svc.cluster.local/v1/request-landing
    starwars.apply(DATA / "starwars-l7.yaml")
    starwars.add_endpoint("kube-system/coredns", labels={"k8s-app": "kube-dns"})
    name = "deathstar.default.svc.cluster.local"
    res = starwars.resolve(TIEFIGHTER, name)
    assert res.rcode == "NOERROR"
    assert res.answers == (str(starwars.services[0].cluster_ips[0]),)
    landing = starwars.check(TIEFIGHTER, name, 80, http=LANDING)
    assert landing.verdict == "FORWARDED" and landing.http_status == 200 and landing.dns is not None
    assert starwars.check(TIEFIGHTER, name, 80, http=EXHAUST).http_status == 403
    xwing = starwars.check(XWING, name, 80, http=LANDING)
    assert xwing.failure is None and xwing.drop_reason == DropReason.POLICY_DENIED


# --------------------------------------------------------------------------------------------
# L7 merging (reference §1.5 and §3.6) on a small cluster

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {app: client, team: web}}
spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: default, labels: {app: other, team: web}}
spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: default, labels: {app: server}}
spec:
  containers:
    - name: c
      image: nginx
      ports: [{name: http, containerPort: 80}, {name: kafka, containerPort: 9092}]
"""


def from_app(app: str) -> list[dict[str, Any]]:
    return [{"matchLabels": {"app": app}}]


def tcp(port: int, rules: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    port_rule: dict[str, Any] = {"ports": [{"port": str(port), "protocol": "TCP"}]}
    if rules is not None:
        port_rule["rules"] = dict(rules)
    return [port_rule]


def http(*rules: Mapping[str, str]) -> dict[str, Any]:
    return {"http": [dict(r) for r in rules]}


def server_policy(
    name: str, ingress: Sequence[Mapping[str, Any]] = (), ingress_deny: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    spec: dict[str, Any] = {"endpointSelector": {"matchLabels": {"app": "server"}}}
    if ingress:
        spec["ingress"] = list(ingress)
    if ingress_deny:
        spec["ingressDeny"] = list(ingress_deny)
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


@pytest.fixture
def cluster(cluster: Cluster) -> Cluster:
    """The plugin's fresh cluster on the backend under test, with client, other and server."""
    cluster.apply(PODS)
    return cluster


def request(cluster: Cluster, src: str, method: str, path: str, port: int = 80) -> Verdict:
    return cluster.check(src, SERVER, port, http={"method": method, "path": path})


PLAIN = server_policy("plain", [{"fromEndpoints": from_app("client"), "toPorts": tcp(80)}])
PUBLIC_ONLY = server_policy(
    "public-only",
    [{"fromEndpoints": from_app("client"), "toPorts": tcp(80, http({"method": "GET", "path": "/public"}))}],
)


@pytest.mark.parametrize("order", [(PLAIN, PUBLIC_ONLY), (PUBLIC_ONLY, PLAIN)], ids=["plain-first", "l7-first"])
def test_plain_allow_and_l7_rule_on_the_same_selector_allow_every_request_but_stay_redirected(
    cluster: Cluster, order: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    cluster.apply(*order)
    client_id = cluster.identity_of(CLIENT).id
    entry = cluster.map_state(SERVER)[MapStateKey(client_id, Direction.INGRESS, int(Protocol.TCP), 80, 16)]
    assert entry.proxy_port != 0  # merged into one redirect

    probe = cluster.check(CLIENT, SERVER, 80)
    assert probe.verdict == "REDIRECTED"
    assert probe.ingress is not None and probe.ingress.accepts == ("*",)

    v = request(cluster, CLIENT, "DELETE", "/private")
    assert v.verdict == "FORWARDED" and v.http_status == 200 and v.redirected
    assert "no L7 restrictions" in v.l7.reason
    assert {o.name for o in v.l7.matched_origins} == {"plain", "public-only"}


@SIMULATOR_ONLY
def test_l7_rules_of_the_same_selector_are_unioned(cluster: Cluster) -> None:
    cluster.apply(
        PUBLIC_ONLY,
        server_policy(
            "health", [{"fromEndpoints": from_app("client"), "toPorts": tcp(80, http({"path": "/healthz"}))}]
        ),
    )
    assert request(cluster, CLIENT, "GET", "/public").http_status == 200
    assert request(cluster, CLIENT, "HEAD", "/healthz").http_status == 200
    assert request(cluster, CLIENT, "POST", "/public").http_status == 403
    probe = cluster.check(CLIENT, SERVER, 80)
    assert probe.ingress is not None and set(probe.ingress.accepts) == {"GET /public", "* /healthz"}


@SIMULATOR_ONLY
def test_different_selectors_keep_separate_l7_rule_sets(cluster: Cluster) -> None:
    cluster.apply(
        server_policy(
            "per-peer",
            [
                {"fromEndpoints": from_app("client"), "toPorts": tcp(80, http({"path": "/a"}))},
                {"fromEndpoints": from_app("other"), "toPorts": tcp(80, http({"path": "/b"}))},
                {"fromEndpoints": [{"matchLabels": {"team": "web"}}], "toPorts": tcp(80, http({"path": "/c"}))},
            ],
        )
    )
    expected = {
        (CLIENT, "/a"): 200,
        (CLIENT, "/b"): 403,
        (CLIENT, "/c"): 200,  # a rule set whose selector selects both peers applies to both
        (OTHER, "/a"): 403,
        (OTHER, "/b"): 200,
        (OTHER, "/c"): 200,
    }
    got = {(src, path): request(cluster, src, "GET", path).http_status for src, path in expected}
    assert got == expected
    denied = request(cluster, CLIENT, "GET", "/b")
    assert "spec.ingress[0]" in denied.l7.reason and "spec.ingress[2]" in denied.l7.reason
    assert "spec.ingress[1]" not in denied.l7.reason  # other's rule set is not consulted for client


@SIMULATOR_ONLY
def test_l3_only_allow_for_a_peer_makes_the_proxy_allow_everything_from_it(cluster: Cluster) -> None:
    cluster.apply(
        server_policy(
            "l3-and-l7",
            [
                {"fromEndpoints": from_app("client")},  # L3 only: every port
                {"fromEndpoints": [{}], "toPorts": tcp(80, http({"method": "GET", "path": "/public"}))},
            ],
        )
    )
    client = request(cluster, CLIENT, "DELETE", "/private")
    assert client.verdict == "FORWARDED" and client.http_status == 200
    assert client.redirected  # the port-specific redirect beats the L3 allow in the datapath
    assert "L3-only" in client.l7.reason
    assert cluster.check(CLIENT, SERVER, 81).verdict == "FORWARDED"

    other = request(cluster, OTHER, "DELETE", "/private")
    assert other.verdict == "DROPPED" and other.http_status == 403
    assert request(cluster, OTHER, "GET", "/public").http_status == 200
    assert cluster.check(OTHER, SERVER, 81).drop_reason == DropReason.POLICY_DENIED


@SIMULATOR_ONLY
def test_plain_allow_for_one_peer_under_a_wildcard_l7_rule(cluster: Cluster) -> None:
    # Reference §3.6 first case: ANY 80/TCP redirect + client 80/TCP plain allow. Only the
    # redirect entry remains; client is redirected but the proxy allows it everything.
    cluster.apply(
        server_policy(
            "wildcard-l7",
            [
                {"toPorts": tcp(80, http({"method": "GET", "path": "/public"}))},
                {"fromEndpoints": from_app("client"), "toPorts": tcp(80)},
            ],
        )
    )
    ingress_80 = [
        k
        for k in cluster.map_state(SERVER)
        if k.direction == Direction.INGRESS and k.protocol == Protocol.TCP and k.port == 80
    ]
    assert [k.identity for k in ingress_80] == [0]
    client = request(cluster, CLIENT, "DELETE", "/private")
    assert client.verdict == "FORWARDED" and client.redirected and client.http_status == 200
    assert request(cluster, OTHER, "DELETE", "/private").http_status == 403
    assert request(cluster, OTHER, "GET", "/public").http_status == 200


@pytest.mark.parametrize(
    "deny",
    [
        {"fromEndpoints": from_app("client"), "toPorts": tcp(80)},  # same selector and port
        {"fromEndpoints": from_app("client")},  # L3 deny, every port
        {"fromEndpoints": [{"matchLabels": {"team": "web"}}], "toPorts": tcp(80)},  # another selector
    ],
    ids=["same-selector-port", "l3-deny", "other-selector"],
)
def test_deny_beats_an_l7_redirect(cluster: Cluster, deny: dict[str, Any]) -> None:
    cluster.apply(
        server_policy(
            "l7-with-deny",
            ingress=[
                {"fromEndpoints": from_app("client"), "toPorts": tcp(80, http({"method": "GET", "path": "/public"}))}
            ],
            ingress_deny=[deny],
        )
    )
    v = request(cluster, CLIENT, "GET", "/public")
    assert v.verdict == "DROPPED" and v.drop_reason == DropReason.POLICY_DENY
    assert not v.redirected and v.l7 is None and v.http_status is None  # never reaches the proxy
    assert [str(o) for o in v.policies] == ["CiliumNetworkPolicy default/l7-with-deny spec.ingressDeny[0]"]
    assert cluster.check(CLIENT, SERVER, 80).verdict == "DROPPED"


def snapshot(cluster: Cluster) -> tuple[Any, ...]:
    probes = [
        request(cluster, CLIENT, "GET", "/public").http_status,
        request(cluster, CLIENT, "POST", "/public").http_status,
        cluster.check(OTHER, SERVER, 80).drop_reason,
    ]
    return (
        sorted(p.key for p in cluster.policies),
        sorted(cluster.endpoints),
        cluster.map_state(SERVER),
        cluster.ipcache(),
        probes,
    )


KAFKA_FROM_CLIENT = server_policy(
    "kafka-on-80", [{"fromEndpoints": from_app("client"), "toPorts": tcp(80, {"kafka": [{"topic": "orders"}]})}]
)


@SIMULATOR_ONLY
def test_conflicting_l7_parsers_on_the_same_selector_and_port_are_rejected_atomically(cluster: Cluster) -> None:
    cluster.apply(PUBLIC_ONLY)
    before = snapshot(cluster)
    assert before[-1] == [200, 403, DropReason.POLICY_DENIED]
    newcomer = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "newcomer", "namespace": "default", "labels": {"app": "newcomer"}},
    }
    with pytest.raises(PolicyError) as info:
        cluster.apply(newcomer, KAFKA_FROM_CLIENT)
    assert info.value.reason == "cannot merge conflicting L7 parsers (http/kafka)"
    assert snapshot(cluster) == before  # neither the pod nor the policy was applied
    # The cluster still takes valid changes afterwards.
    cluster.apply(PLAIN)
    assert request(cluster, CLIENT, "POST", "/public").http_status == 200


@SIMULATOR_ONLY
def test_conflicting_l7_parsers_within_one_policy_are_rejected(cluster: Cluster) -> None:
    both = server_policy(
        "both",
        [
            {"fromEndpoints": from_app("client"), "toPorts": tcp(80, http({"path": "/public"}))},
            {"fromEndpoints": from_app("client"), "toPorts": tcp(80, {"kafka": [{"topic": "orders"}]})},
        ],
    )
    with pytest.raises(PolicyError, match=r"cannot merge conflicting L7 parsers \(http/kafka\)"):
        cluster.apply(both)
    assert cluster.policies == []
    assert cluster.check(CLIENT, SERVER, 80).verdict == "FORWARDED"  # still unenforced


@SIMULATOR_ONLY
def test_conflicting_l7_parsers_error_names_where(cluster: Cluster) -> None:
    cluster.apply(PUBLIC_ONLY)
    with pytest.raises(PolicyError) as info:
        cluster.apply(KAFKA_FROM_CLIENT)
    err = info.value
    assert (err.kind, err.namespace, err.name) == ("CiliumNetworkPolicy", "default", "kafka-on-80")
    assert err.field == "spec.ingress[0].toPorts"
    assert str(err) == (
        "CiliumNetworkPolicy default/kafka-on-80: spec.ingress[0].toPorts: "
        "cannot merge conflicting L7 parsers (http/kafka)"
    )


# --------------------------------------------------------------------------------------------
# per-request judgement, egress proxies and Kafka


_SPORTS = itertools.count(41000)


def syn(
    cluster: Cluster, src: str, dst: str, dport: int, sport: int | None = None, flags: int = TCPFlags.SYN
) -> Packet:
    """A TCP packet between two pods (a fresh source port unless ``sport`` is given)."""
    return Packet(
        cluster.endpoint(src).ips[0],
        cluster.endpoint(dst).ips[0],
        int(Protocol.TCP),
        sport=next(_SPORTS) if sport is None else sport,
        dport=dport,
        tcp_flags=int(flags),
    )


@SIMULATOR_ONLY
def test_every_request_on_an_established_connection_is_judged(cluster: Cluster) -> None:
    cluster.apply(PUBLIC_ONLY)
    first = cluster.evaluate(syn(cluster, CLIENT, SERVER, 80, sport=45000), http={"method": "GET", "path": "/public"})
    assert first.http_status == 200
    later = syn(cluster, CLIENT, SERVER, 80, sport=45000, flags=TCPFlags.ACK | TCPFlags.PSH)
    assert cluster.evaluate(later, http={"method": "GET", "path": "/private"}).http_status == 403
    assert cluster.evaluate(later, http={"method": "GET", "path": "/public"}).http_status == 200


@SIMULATOR_ONLY
def test_egress_and_ingress_proxies_must_both_accept(cluster: Cluster) -> None:
    cluster.apply(
        PUBLIC_ONLY,
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "client-egress", "namespace": "default"},
            "spec": {
                "endpointSelector": {"matchLabels": {"app": "client"}},
                "egress": [{"toEndpoints": from_app("server"), "toPorts": tcp(80, http({"method": "GET"}))}],
            },
        },
    )
    ok = request(cluster, CLIENT, "GET", "/public")
    assert ok.verdict == "FORWARDED"
    assert ok.egress is not None and ok.egress.result.action == Action.REDIRECT
    assert ok.ingress is not None and ok.ingress.result.action == Action.REDIRECT

    at_egress = request(cluster, CLIENT, "POST", "/public")
    assert at_egress.http_status == 403 and at_egress.direction == Direction.EGRESS
    assert at_egress.ingress is None  # the client's proxy never sent it
    assert origin_names(at_egress) == {"client-egress"}

    at_ingress = request(cluster, CLIENT, "GET", "/private")
    assert at_ingress.http_status == 403 and at_ingress.direction == Direction.INGRESS
    assert origin_names(at_ingress) == {"public-only"}


KAFKA = server_policy(
    "kafka",
    [
        {
            "fromEndpoints": from_app("client"),
            "toPorts": tcp(
                9092, {"kafka": [{"role": "produce", "topic": "orders"}, {"apiKey": "fetch", "topic": "audit"}]}
            ),
        }
    ],
)


@pytest.fixture
def kafka(ciliumpy_backend: str, shared: dict[tuple[str, str], Cluster]) -> Cluster:
    key = ("kafka", ciliumpy_backend)
    if key not in shared:
        shared[key] = Cluster.from_manifests(PODS, KAFKA, backend=ciliumpy_backend)
    return shared[key]


@pytest.mark.parametrize(
    ("req", "allowed"),
    [
        (KafkaRequest("produce", topics=("orders",)), True),
        (KafkaRequest("metadata", topics=("orders",)), True),  # the produce role includes metadata
        (KafkaRequest("fetch", topics=("audit",)), True),
        (KafkaRequest("produce", topics=("audit",)), False),
        (KafkaRequest("fetch", topics=("orders",)), False),
        (KafkaRequest("produce", topics=("orders", "audit")), False),  # every topic must be allowed
    ],
    ids=lambda x: x.describe() if isinstance(x, KafkaRequest) else str(x),
)
def test_kafka_requests_through_evaluate(kafka: Cluster, req: KafkaRequest, allowed: bool) -> None:
    v = kafka.evaluate(syn(kafka, CLIENT, SERVER, 9092), request=req)
    assert v.redirected
    assert v.allowed is allowed
    assert v.verdict == ("FORWARDED" if allowed else "DROPPED")
    assert v.http_status is None  # Kafka refusals are Kafka errors, not HTTP statuses
    assert v.l7.parser == "kafka"
    if allowed:
        assert isinstance(v.l7.matched_rule, KafkaRule)
    else:
        assert "matches no L7 rule" in v.l7.reason and "spec.ingress[0]" in v.l7.reason


def test_kafka_port_from_a_peer_without_rules_is_dropped(kafka: Cluster) -> None:
    v = kafka.evaluate(syn(kafka, OTHER, SERVER, 9092), request=KafkaRequest("produce", topics=("orders",)))
    assert v.verdict == "DROPPED" and v.drop_reason == DropReason.POLICY_DENIED and v.l7 is None
