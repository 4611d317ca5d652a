"""Services: model, EndpointSlices, translation in ``Cluster.check`` and ``toServices``."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest

from ciliumpy import (
    BackendState,
    Cluster,
    DropReason,
    EndpointSlice,
    Packet,
    PolicyError,
    Service,
    ServicePort,
    UnknownEndpointError,
)
from ciliumpy._datapath import lb_hash, lb_slot
from ciliumpy._manifests import load_objects

ORDERS = """\
apiVersion: v1
kind: Service
metadata: {name: orders, namespace: production, labels: {tier: backend}}
spec:
  selector: {app: orders}
  ports: [{name: web, port: 80, targetPort: http}, {name: metrics, port: 9090, targetPort: 9090}]
  clusterIPs: [10.96.0.10, "fd00:10:96::10"]
"""


def orders_cluster(*, dual: bool = True) -> Cluster:
    c = Cluster()
    for i, version in ((1, "v1"), (2, "v2"), (3, "v3")):
        ips = [f"10.244.1.{i}"] + ([f"fd00:10:244:1::{i}"] if dual else [])
        c.add_endpoint(
            f"production/orders-{i}",
            labels={"app": "orders", "version": version},
            ips=ips,
            ports=[("http", 8080 + i, "TCP"), ("metrics", 9090, "TCP")],
        )
    # Selected by the Service but without the named target port: no backend of "web".
    c.add_endpoint("production/orders-sidecar", labels={"app": "orders"}, ips=["10.244.1.9"])
    c.add_endpoint(
        "production/frontend", labels={"app": "frontend"}, ips=["10.244.2.1"] + (["fd00:10:244:2::1"] if dual else [])
    )
    c.add_endpoint("shop/cart", labels={"app": "cart"}, ips=["10.244.3.1"])
    c.apply(ORDERS)
    return c


# ---- model -------------------------------------------------------------------------------
def test_service_manifest_fields_are_read() -> None:
    (svc,) = load_objects([ORDERS])
    assert isinstance(svc, Service)
    assert svc.ports == (ServicePort(80, "http", "TCP", "web"), ServicePort(9090, 9090, "TCP", "metrics"))
    assert [str(ip) for ip in svc.cluster_ips] == ["10.96.0.10", "fd00:10:96::10"]
    assert (svc.session_affinity, svc.internal_traffic_policy, svc.headless) == ("None", "Cluster", False)


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ("ports: [{port: 80}, {port: 81}]", "spec.ports[0].name", "more than one port"),
        ("ports: [{port: 80, targetPort: -web-}]", "spec.ports[0].targetPort", "IANA service name"),
        ("ports: [{port: 0}]", "spec.ports[0].port", "between 1 and 65535"),
        ("ports: [{port: 80, protocol: ICMP}]", "spec.ports[0].protocol", "Unsupported value"),
        ("ports: [{name: a, port: 80}, {name: a, port: 81}]", "spec.ports[1].name", "Duplicate"),
        ("sessionAffinity: Sticky", "spec.sessionAffinity", "None or ClientIP"),
        ("internalTrafficPolicy: Node", "spec.internalTrafficPolicy", "Cluster or Local"),
        ("clusterIPs: [10.96.0.1, 10.96.0.2]", "spec.clusterIPs", "no more than one IP for each IP family"),
        ("clusterIPs: [10.96.0.1]\n  ipFamilies: [IPv6]", "spec.clusterIPs[0]", "not of family IPv6"),
        ("clusterIP: 10.96.0.1\n  clusterIPs: [10.96.0.2]", "spec.clusterIPs[0]", "must equal clusterIP"),
        ("type: ExternalName", "spec.type", "ClusterIP, NodePort or LoadBalancer"),
        ("externalIPz: []", "spec.externalIPz", ""),
        (
            "sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}",
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            "1..86400",
        ),
    ],
)
def test_invalid_service_names_the_field(spec: str, field: str, reason: str) -> None:
    text = f"apiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: a}}\nspec:\n  {spec}\n"
    with pytest.raises(PolicyError) as err:
        Cluster().apply(text)
    assert err.value.field == field
    assert reason in str(err.value)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("addressType: IPv4\nendpoints: [{addresses: ['fd00::1']}]", "endpoints[0].addresses[0]"),
        ("addressType: IPv5\nendpoints: []", "addressType"),
        ("addressType: IPv4\nendpoints: [{addresses: []}]", "endpoints[0].addresses"),
        ("addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], conditions: {ready: yes-ish}}]", None),
        ("addressType: IPv4\nports: [{port: 70000}]", "ports[0].port"),
    ],
)
def test_invalid_endpoint_slice_names_the_field(body: str, field: str | None) -> None:
    text = f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: e, namespace: a}}\n{body}\n"
    with pytest.raises(PolicyError) as err:
        Cluster().apply(text)
    if field is not None:
        assert err.value.field == field
    else:
        assert err.value.field == "endpoints[0].conditions.ready"


# ---- frontends and backends --------------------------------------------------------------
def test_named_target_port_resolves_per_pod_and_skips_pods_without_it() -> None:
    c = orders_cluster()
    fe = c.service_table.frontend(c.endpoints, ipaddress.ip_address("10.96.0.10"), 80, 6)
    assert fe is not None
    assert [(str(b.address), b.port, b.pod) for b in fe.backends] == [
        ("10.244.1.1", 8081, "production/orders-1"),
        ("10.244.1.2", 8082, "production/orders-2"),
        ("10.244.1.3", 8083, "production/orders-3"),
    ]
    metrics = c.service_table.frontend(c.endpoints, ipaddress.ip_address("fd00:10:96::10"), 9090, 6)
    assert metrics is not None
    assert {str(b.address) for b in metrics.backends} == {f"fd00:10:244:1::{i}" for i in (1, 2, 3)}


def test_check_translates_each_name_form_to_the_same_backend() -> None:
    c = orders_cluster()
    forms = [
        "production/svc/orders",
        "orders",
        "orders.production",
        "orders.production.svc",
        "orders.production.svc.cluster.local",
        "orders.production.svc.cluster.local.",
        "10.96.0.10",
    ]
    seen = set()
    for form in forms:
        v = c.check("production/frontend", form, 80)
        assert v.allowed, form
        assert v.service is not None and v.service.service == "production/orders"
        seen.add((v.service.backend, v.packet.dst, v.packet.dport))
    assert len(seen) == 1
    backend, dst, dport = seen.pop()
    assert (dst, dport) == (backend.address, backend.port)


def test_deterministic_choice_is_the_client_hash_slot() -> None:
    c = orders_cluster()
    v = c.check("production/frontend", "production/svc/orders", 80)
    client = ipaddress.ip_address("10.244.2.1")
    assert lb_slot(client, None, 3) == lb_hash(client) % 3 + 1
    assert v.service.backend.pod == f"production/orders-{lb_slot(client, None, 3)}"
    assert c.check("production/frontend", "production/svc/orders", 80).service == v.service


def test_port_by_name_and_short_name_is_relative_to_the_caller_namespace() -> None:
    c = orders_cluster()
    assert c.check("production/frontend", "orders", "web").service.frontend.port == 80
    # From another namespace the short name is not the Service (no cluster DNS to ask).
    with pytest.raises(UnknownEndpointError, match="no cluster DNS endpoint"):
        c.check("shop/cart", "orders", 80)
    assert c.check("shop/cart", "orders.production", 80).service.service == "production/orders"


def test_dual_stack_service_uses_the_clients_family() -> None:
    c = orders_cluster()
    v = c.check("production/frontend", "fd00:10:96::10", 80)
    assert v.allowed and v.packet.dst.version == 6 and v.service.frontend.address.version == 6
    c.add_endpoint("shop/v4only", labels={"app": "x"}, ips=["10.244.3.2"])
    assert c.check("shop/v4only", "production/svc/orders", 80).packet.dst.version == 4


def test_policy_applies_to_the_backend_each_backend_judged() -> None:
    c = orders_cluster()
    c.apply(
        textwrap.dedent(
            """\
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: only-v1, namespace: production}
            spec:
              endpointSelector: {matchLabels: {app: orders}}
              ingress:
              - fromEndpoints: [{matchLabels: {app: frontend}}]
                toPorts: [{ports: [{port: "8081"}]}]
            """
        )
    )
    verdicts = c.check("production/frontend", "production/svc/orders", 80, all_backends=True)
    assert [(v.service.backend.pod, v.allowed) for v in verdicts] == [
        ("production/orders-1", True),
        ("production/orders-2", False),
        ("production/orders-3", False),
    ]
    assert all(v.service.pinned for v in verdicts)
    pinned = c.check("production/frontend", "production/svc/orders", 80, backend="production/orders-2")
    assert not pinned.allowed and pinned.drop_reason is not None and pinned.drop_reason.value == 133
    assert c.check("production/frontend", "production/svc/orders", 80, backend="10.244.1.1").allowed


def test_translation_is_in_explain_and_hubble_flow() -> None:
    c = orders_cluster()
    v = c.check("production/frontend", "orders", 80, backend="production/orders-3")
    assert "service production/orders 10.96.0.10:80/TCP -> backend 10.244.1.3:8083 (production/orders-3)" in (
        v.explain()
    )
    flows = v.to_hubble()
    assert flows and all(f["destination_service"] == {"name": "orders", "namespace": "production"} for f in flows)
    assert flows[0]["IP"]["destination"] == "10.244.1.3"
    keys = list(flows[0])
    assert keys.index("event_type") < keys.index("destination_service") < keys.index("traffic_direction")


def test_errors_name_what_is_wrong() -> None:
    c = orders_cluster()
    with pytest.raises(PolicyError, match="not a backend") as err:
        c.check("production/frontend", "production/svc/orders", 80, backend="production/orders-sidecar")
    assert err.value.field == "backend"
    with pytest.raises(UnknownEndpointError, match="no service 'production/svc/nope'"):
        c.check("production/frontend", "production/svc/nope", 80)
    with pytest.raises(PolicyError, match="Service destinations only"):
        c.check("production/frontend", "production/orders-1", 80, backend="production/orders-1")
    with pytest.raises(PolicyError, match="several ports"):
        c.check("production/frontend", "production/svc/orders")
    missing = c.check("production/frontend", "production/svc/orders", 81)
    assert not missing.allowed and "has no port 81/TCP" in (missing.failure or "")


def test_no_backend_fails_the_connection() -> None:
    c = Cluster()
    c.add_endpoint("a/client", labels={"app": "c"})
    c.add_service("a/empty", {"app": "none"}, ports=[80], cluster_ips=["10.96.0.5"])
    v = c.check("a/client", "a/svc/empty", 80)
    assert not v.allowed and v.service is not None and v.service.backend is None
    assert "has no backend" in v.explain()
    assert c.check("a/client", "a/svc/empty", 80, all_backends=True)[0].service.backend is None


def test_session_affinity_and_internal_traffic_policy() -> None:
    c = Cluster()
    for i, node in ((1, "n1"), (2, "n2"), (3, "n2")):
        c.add_endpoint(f"a/b{i}", labels={"app": "b"}, ips=[f"10.244.0.{10 + i}"], node=node)
    c.add_endpoint("a/c1", labels={"app": "c"}, ips=["10.244.0.2"], node="n1")
    c.add_endpoint("a/c2", labels={"app": "c"}, ips=["10.244.0.3"], node="n2")
    c.add_endpoint("a/c3", labels={"app": "c"}, ips=["10.244.0.4"], node="n3")
    c.add_service("a/local", {"app": "b"}, ports=[80], cluster_ips=["10.96.0.7"], internal_traffic_policy="Local")
    assert c.check("a/c1", "a/svc/local", 80).service.backend.pod == "a/b1"
    assert {v.service.backend.pod for v in c.check("a/c2", "a/svc/local", 80, all_backends=True)} == {"a/b2", "a/b3"}
    none_local = c.check("a/c3", "a/svc/local", 80)
    assert not none_local.allowed and none_local.service.backend is None
    c.add_service("a/sticky", {"app": "b"}, ports=[80], cluster_ips=["10.96.0.8"], session_affinity="ClientIP")
    fe = c.service_table.frontend(c.endpoints, ipaddress.ip_address("10.96.0.8"), 80, 6)
    assert fe is not None and fe.affinity
    client = ipaddress.ip_address("10.244.0.2")
    # Affinity: the source port never changes the choice.
    picks = {c.service_table.translate(fe, client, sport=sport).backend for sport in range(40000, 40050)}
    assert len(picks) == 1
    plain = c.service_table.frontend(c.endpoints, ipaddress.ip_address("10.96.0.7"), 80, 6)
    assert plain is not None
    spread = {c.service_table.translate(plain, client, sport=s, client_node="n2").backend for s in range(40000, 40050)}
    assert len(spread) == 2


SLICES = """\
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: a}
spec:
  ports: [{name: https, port: 443, targetPort: 8443}]
  clusterIP: 10.96.0.20
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-1, namespace: a, labels: {kubernetes.io/service-name: ext}}
addressType: IPv4
endpoints:
- addresses: [192.0.2.1]
  conditions: {ready: true}
- addresses: [192.0.2.2]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [192.0.2.3]
  conditions: {ready: false, serving: false, terminating: true}
- addresses: [192.0.2.4]
  conditions: {ready: false}
ports: [{name: https, port: 9443, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: other, namespace: a, labels: {kubernetes.io/service-name: unrelated}}
addressType: IPv4
endpoints: [{addresses: [192.0.2.99]}]
ports: [{name: https, port: 1, protocol: TCP}]
"""


def test_endpoint_slice_conditions_give_backend_states() -> None:
    c = Cluster()
    c.add_endpoint("a/client", labels={"app": "c"})
    c.apply(SLICES)
    fe = c.service_table.frontend(c.endpoints, ipaddress.ip_address("10.96.0.20"), 443, 6)
    assert fe is not None
    states = {str(b.address): (b.state, b.port) for b in fe.backends}
    assert states == {
        "192.0.2.1": (BackendState.ACTIVE, 9443),
        "192.0.2.2": (BackendState.TERMINATING, 9443),
        "192.0.2.3": (BackendState.TERMINATING_NOT_SERVING, 9443),
        "192.0.2.4": (BackendState.MAINTENANCE, 9443),
    }
    v = c.check("a/client", "a/svc/ext", 443, all_backends=True)
    assert [str(x.service.backend.address) for x in v] == ["192.0.2.1"]
    # Without an active backend, terminating-but-serving ones take new connections.
    (es,) = (o for o in load_objects([SLICES]) if isinstance(o, EndpointSlice) and o.name == "ext-1")
    c.apply({**es.to_manifest(), "endpoints": [e.to_manifest() for e in es.endpoints[1:]]})
    v = c.check("a/client", "a/svc/ext", 443, all_backends=True)
    assert [(str(x.service.backend.address), x.service.backend.state) for x in v] == [
        ("192.0.2.2", BackendState.TERMINATING)
    ]
    assert "terminating" in v[0].explain()
    c.delete(es)
    assert c.check("a/client", "a/svc/ext", 443).service.backend is None


def test_headless_service_connects_to_pods_directly() -> None:
    c = orders_cluster()
    c.add_service("production/orders-hl", {"app": "orders"}, ports=[ServicePort(8081, name="x")], headless=True)
    verdicts = c.check("production/frontend", "orders-hl", 8081, all_backends=True)
    assert [str(v.packet.dst) for v in verdicts] == [
        "10.244.1.1",
        "10.244.1.2",
        "10.244.1.3",
        "10.244.1.9",
        "fd00:10:244:1::1",
        "fd00:10:244:1::2",
        "fd00:10:244:1::3",
    ]
    assert all(v.service is None and "headless service production/orders-hl" in v.notes[-1] for v in verdicts)
    one = c.check("production/frontend", "orders-hl", 8081, backend="production/orders-2")
    assert str(one.packet.dst) == "10.244.1.2" and one.service is None


def test_to_services_selects_the_backends() -> None:
    c = orders_cluster()
    c.apply(SLICES)
    c.add_endpoint("a/client", labels={"app": "c"})
    c.apply(
        textwrap.dedent(
            """\
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: to-orders, namespace: production}
            spec:
              endpointSelector: {matchLabels: {app: frontend}}
              egress:
              - toServices: [{k8sService: {serviceName: orders}}]
            ---
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: to-ext, namespace: a}
            spec:
              endpointSelector: {matchLabels: {app: c}}
              egress:
              - toServices: [{k8sServiceSelector: {selector: {}}}]
            """
        )
    )
    assert c.check("production/frontend", "production/svc/orders", 80).allowed
    assert not c.check("production/frontend", "shop/cart", 80).allowed
    # Selector-less: the slice's ready or serving backends as /32 CIDRs.
    assert c.check("a/client", "a/svc/ext", 443).allowed
    assert c.check("a/client", "192.0.2.2", 9443).allowed
    assert not c.check("a/client", "192.0.2.3", 9443).allowed
    assert not c.check("a/client", "192.0.2.99", 1).allowed


def test_service_name_resolved_through_cluster_dns_when_there_is_one() -> None:
    c = orders_cluster()
    c.add_endpoint("kube-system/coredns", labels={"k8s-app": "kube-dns"}, ports=[("dns", 53, "UDP")])
    v = c.check("production/frontend", "orders", 80)
    assert v.allowed and v.dns is not None and v.dns.answers == ("10.96.0.10",)
    assert v.service is not None and v.service.frontend.address == ipaddress.ip_address("10.96.0.10")
    c.apply(
        textwrap.dedent(
            """\
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: no-dns, namespace: production}
            spec:
              endpointSelector: {matchLabels: {app: frontend}}
              egress:
              - toEndpoints: [{matchLabels: {app: orders}}]
            """
        )
    )
    blocked = c.check("production/frontend", "orders", 80)
    assert not blocked.allowed and "DNS lookup" in (blocked.failure or "")
    assert c.check("production/frontend", "production/svc/orders", 80).allowed


def test_stored_hubble_flows_name_the_service() -> None:
    c = orders_cluster()
    c.check("production/frontend", "production/svc/orders", 80)
    flows = c.observe()
    assert flows
    assert {(f.destination_service.name, f.destination_service.namespace) for f in flows if f.destination_service} == {
        ("orders", "production")
    }
    assert all(f.destination_service is not None for f in flows if f.IP and f.IP.destination.startswith("10.244.1."))
    assert '"destination_service":{"name":"orders","namespace":"production"}' in flows[0].to_json()


def test_hairpin_through_own_service_skips_policy() -> None:
    c = orders_cluster()
    c.apply(
        textwrap.dedent(
            """\
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: lockdown, namespace: production}
            spec:
              endpointSelector: {matchLabels: {app: orders}}
              ingress: [{}]
              egress: [{}]
            """
        )
    )
    # Denied to another backend, but the pod reaching itself never meets a policy hook.
    assert not c.check("production/orders-1", "production/svc/orders", 80, backend="production/orders-2").allowed
    v = c.check("production/orders-1", "production/svc/orders", 80, backend="production/orders-1")
    assert v.allowed and v.egress is None and v.ingress is None
    assert "hairpin" in v.explain() and "not evaluated" not in v.explain()
    assert v.to_hubble() == []


def test_evaluate_towards_a_cluster_ip_is_translated_by_the_datapath() -> None:
    c = orders_cluster()
    client = ipaddress.ip_address("10.244.2.1")
    for sport in (40000, 40001, 40002, 40003):
        v = c.evaluate(Packet(client, "10.96.0.10", 6, sport=sport, dport=80))
        assert v.service is not None and v.service.mode == "tc"
        want = lb_slot(client, sport, 3)
        assert v.service.backend.pod == f"production/orders-{want}"
        assert (v.packet.dst, v.packet.dport) == (v.service.backend.address, v.service.backend.port)
        fe = c.service_table.frontend(c.endpoints, ipaddress.ip_address("10.96.0.10"), 80, 6)
        assert fe is not None and v.egress is not None and v.egress.result.service_id == fe.id
        # The reply comes back reverse-NATed at the client.
        back = c.evaluate(v.packet.reply())
        assert back.ingress is not None and back.ingress.result.nat_address == ipaddress.ip_address("10.96.0.10")
        assert back.ingress.result.nat_port == 80
    c.add_service("production/empty", {"app": "none"}, ports=[80], cluster_ips=["10.96.0.99"])
    dropped = c.evaluate(Packet(client, "10.96.0.99", 6, sport=1, dport=80))
    assert dropped.drop_reason == DropReason.NO_SERVICE
    assert "the service frontend 10.96.0.99:80 has no backend" in dropped.explain()


def test_only_policies_with_to_services_follow_service_changes() -> None:
    c = orders_cluster()
    c.apply(
        textwrap.dedent(
            """\
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: to-ext, namespace: shop}
            spec:
              endpointSelector: {matchLabels: {app: cart}}
              egress: [{toServices: [{k8sService: {serviceName: ext, namespace: shop}}]}]
            """
        )
    )
    cart, frontend = c.endpoint_policy("shop/cart"), c.endpoint_policy("production/frontend")
    c.add_service("shop/ext", None, ports=[443], cluster_ips=["10.96.0.50"], backend_ips=["192.0.2.7"])
    assert c.endpoint_policy("production/frontend") is frontend  # not recompiled
    assert c.endpoint_policy("shop/cart") is not cart
    assert c.check("shop/cart", "shop/svc/ext", 443).allowed
    assert not c.check("shop/cart", "192.0.2.8", 443).allowed
