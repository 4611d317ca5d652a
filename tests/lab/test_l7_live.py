"""The article's L7 examples over real sockets, with real clients, through the lab's proxies.

One serving lab (``Lab(cluster, serve=True)``) runs the seed scenario with its HTTP (03), gRPC
(04) and DNS/toFQDNs (05) policies.  Every request goes from a real client in the source
pod's namespace (curl, a grpcio client, the pod's resolver via ``/etc/netns``) through the
eBPF datapath, which hands redirected connections to the proxies; each outcome must be what
``Cluster.check`` / ``Cluster.resolve`` says for the same request.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ciliumpy import Cluster
from ciliumpy.lab import Lab

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"
FRONTEND, GATEWAY, BACKEND, PROMETHEUS = (
    "production/frontend",
    "production/api-gateway",
    "production/backend",
    "monitoring/prometheus",
)
GATEWAY_IP, BACKEND_IP = "10.0.1.40", "10.0.1.20"
RECORDS = {
    "api.stripe.com": ["203.0.113.20"],
    "s3.amazonaws.com": ["203.0.113.30"],
    "s3.us-east-1.amazonaws.com": ["203.0.113.31"],
    "evil-site.com": ["198.51.100.66"],
}
MANIFESTS = ("00-namespaces-and-pods.yaml", "03-l7-http.yaml", "04-grpc.yaml", "05-dns-fqdn.yaml")

GRPC_CLIENT = textwrap.dedent(
    """
    import sys, grpc
    channel = grpc.insecure_channel(sys.argv[1])
    for method in sys.argv[2:]:
        try:
            reply = channel.unary_unary(method)(b"ping", timeout=5)
            print(method, "OK", reply.decode())
        except grpc.RpcError as exc:
            print(method, exc.code().name, exc.details())
    """
)


def _cluster(backend: str) -> Cluster:
    cluster = Cluster(backend=backend)
    cluster.apply(*(SEED / name for name in MANIFESTS))
    cluster.add_dns_records(RECORDS)
    return cluster


@pytest.fixture(scope="module")
def lab(ebpf_available: None) -> Iterator[Lab]:
    if shutil.which("curl") is None:
        pytest.fail("curl is required for the live L7 tests (.ci/run installs it)")
    with _cluster("ebpf") as cluster, Lab(cluster, serve=True) as lab:
        yield lab
        assert lab.proxy_errors == 0


def curl(lab: Lab, src: str, url: str, *args: str, timeout: float = 3) -> tuple[int | None, str]:
    """(HTTP status or None when nothing answered, body) of one curl run in ``src``."""
    proc = lab.run(src, "curl", "-s", "-m", str(timeout), "-o", "-", "-w", "\n%{http_code}", *args, url)
    body, _, code = proc.stdout.rpartition("\n")
    return (int(code) if code.strip() not in ("", "000") else None), body


HTTP_REQUESTS = [
    ("GET", "/api/products"),
    ("POST", "/api/orders"),
    ("GET", "/api/users/42"),
    ("GET", "/api/users/alice"),
    ("DELETE", "/api/products"),
    ("GET", "/api/products?page=2"),
    ("POST", "/api/products"),
]


@pytest.mark.parametrize(("method", "path"), HTTP_REQUESTS)
def test_http_example_with_curl_matches_check(lab: Lab, method: str, path: str) -> None:
    verdict = lab.cluster.check(FRONTEND, GATEWAY, 8080, http={"method": method, "path": path})
    assert verdict.redirected
    status, body = curl(lab, FRONTEND, f"http://{GATEWAY_IP}:8080{path}", "-X", method)
    assert status == verdict.http_status
    if verdict.allowed:
        assert f'"path": "{path}"' in body  # the real server in the gateway's namespace answered
    else:
        assert body.strip() == "Access denied"  # Envoy's "Access denied\r\n"; text mode drops the CR


@pytest.mark.parametrize(("method", "path"), HTTP_REQUESTS[:5])
def test_lab_http_matches_check_and_reports_l7_flows(lab: Lab, method: str, path: str) -> None:
    verdict = lab.cluster.check(FRONTEND, GATEWAY, 8080, http={"method": method, "path": path})
    result = lab.http(FRONTEND, GATEWAY, 8080, method, path)
    assert (result.status, result.verdict) == (verdict.http_status, verdict.verdict)
    l7 = [f for f in result.flows if f["Type"] == "L7"]
    request = l7[0]
    assert request["l7"]["type"] == "REQUEST"
    assert request["l7"]["http"]["method"] == method
    assert request["l7"]["http"]["url"].endswith(path)
    assert request["l4"]["TCP"]["source_port"] == result.sport
    assert request["verdict"] == verdict.verdict
    if verdict.allowed:
        response = l7[1]
        assert response["l7"]["type"] == "RESPONSE"
        assert response["l7"]["http"]["code"] == 200
        assert response["is_reply"] is True
    else:
        assert request["l7"]["http"]["code"] == 403
        assert len(l7) == 1


def test_http_from_a_peer_without_l4_allow_is_dropped_before_the_proxy(lab: Lab) -> None:
    verdict = lab.cluster.check(PROMETHEUS, GATEWAY, 8080, http={"method": "GET", "path": "/api/products"})
    assert not verdict.allowed and verdict.http_status is None
    result = lab.http(PROMETHEUS, GATEWAY, 8080, "GET", "/api/products", timeout=1)
    assert result.status is None and result.verdict == verdict.verdict
    assert result.flows == ()  # the datapath dropped it: no proxy decision


def test_grpc_example_with_a_grpc_client_matches_check(lab: Lab) -> None:
    methods = ["/mypackage.MyService/GetItems", "/mypackage.MyService/DeleteItems", "/other.Service/GetItems"]
    proc = lab.run(FRONTEND, sys.executable, "-c", GRPC_CLIENT, f"{BACKEND_IP}:50051", *methods)
    assert proc.returncode == 0, proc.stderr
    answers = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    for method in methods:
        verdict = lab.cluster.check(FRONTEND, BACKEND, 50051, http={"grpc": method})
        if verdict.allowed:
            assert answers[method] == f"OK {method}: ping"  # the real gRPC server answered
        else:
            assert answers[method] == "PERMISSION_DENIED Access denied"
    assert lab.cluster.check(FRONTEND, BACKEND, 50051, http={"grpc": methods[0]}).allowed
    grpc_flows = [f for f in lab.flows if f["Type"] == "L7" and f["l7"]["http"]["protocol"] == "HTTP/2"]
    assert {f["l7"]["http"]["url"].rsplit("50051", 1)[1] for f in grpc_flows} >= set(methods)


@pytest.fixture(scope="module")
def model() -> Iterator[Cluster]:
    """The same scenario on the simulator: the expected DNS answers, learned apart."""
    with _cluster("simulator") as cluster:
        yield cluster


@pytest.mark.parametrize(
    "name", ["api.stripe.com", "s3.amazonaws.com", "s3.us-east-1.amazonaws.com", "evil-site.com", "nowhere.example"]
)
def test_dns_example_over_udp_matches_resolve(lab: Lab, model: Cluster, name: str) -> None:
    expected = model.resolve(BACKEND, name)
    got = lab.resolve(BACKEND, name)
    assert (got.rcode, got.answers, got.learned) == (expected.rcode, expected.answers, expected.learned)
    query = [f for f in lab.flows if f["Type"] == "L7" and f["l7"].get("dns", {}).get("query") == name + "."]
    assert query and query[-1]["verdict"] == ("FORWARDED" if expected.allowed else "DROPPED")


def test_dns_over_tcp_is_proxied_too(lab: Lab) -> None:
    from ciliumpy._dns import build_query

    query = build_query("evil-site.com", id=0x4242)
    with lab.socket(BACKEND, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(("10.0.0.10", 53))
        sock.sendall(len(query).to_bytes(2, "big") + query)
        size = int.from_bytes(sock.recv(2), "big")
        answer = sock.recv(size)
    assert answer[:2] == b"\x42\x42"
    assert answer[3] & 0x0F == 5  # REFUSED


def test_tofqdns_connection_needs_the_dns_answer_first(lab: Lab) -> None:
    ip = "203.0.113.31"  # s3.us-east-1.amazonaws.com: not matched by *.amazonaws.com
    lab.resolve(BACKEND, "s3.us-east-1.amazonaws.com")
    assert not lab.cluster.check(BACKEND, ip, 443).allowed
    assert curl(lab, BACKEND, f"http://{ip}:443/", timeout=1)[0] is None
    # curl resolves through the pod's resolv.conf (the DNS proxy learns), then connects.
    status, body = curl(lab, BACKEND, "http://api.stripe.com:443/v1/charges")
    assert status == 200 and '"server": "world"' in body
    assert lab.cluster.check(BACKEND, "203.0.113.20", 443).allowed
    status, _ = curl(lab, BACKEND, "http://evil-site.com:443/", timeout=1)
    assert status is None  # REFUSED: curl cannot even resolve it
    assert not lab.cluster.check(BACKEND, "198.51.100.66", 443).allowed
    assert curl(lab, BACKEND, "http://198.51.100.66:443/", timeout=1)[0] is None


def test_connect_still_works_on_served_ports(lab: Lab) -> None:
    # The frontend's HTTP server echoes the probe's token, so connect() keeps working.
    for src in (PROMETHEUS, GATEWAY):
        assert lab.connect(src, FRONTEND, 80).allowed == lab.cluster.check(src, FRONTEND, 80).allowed


def test_resolv_conf_and_sockets_are_removed_with_the_lab(ebpf_available: None) -> None:
    import os

    with _cluster("ebpf") as cluster:
        fds = len(os.listdir("/proc/self/fd"))
        with Lab(cluster, serve=True) as lab:
            path = Path("/etc/netns") / lab.namespace(BACKEND) / "resolv.conf"
            assert path.read_text().startswith("nameserver 10.0.0.10\n")
            out = subprocess.run(lab.command(BACKEND, "cat", "/etc/resolv.conf"), capture_output=True, text=True)
            assert out.stdout == path.read_text()
        assert not path.parent.exists()
        # Every server, proxy and client socket is closed (a socket keeps its namespace alive).
        assert len(os.listdir("/proc/self/fd")) == fds


V6_POLICIES = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: server-ingress-l7, namespace: v6}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: client}}]
      toPorts:
        - ports: [{port: "8080", protocol: TCP}]
          rules: {http: [{method: GET, path: /in/.*}]}
    - fromEndpoints: [{matchLabels: {app: client}}]
      toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-egress-l7, namespace: v6}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
    - toEndpoints: [{matchLabels: {app: server}}]
      toPorts:
        - ports: [{port: "9090", protocol: TCP}]
          rules: {http: [{method: GET, path: /out}]}
    - toEndpoints: [{matchLabels: {app: server}}]
      toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"""


@pytest.mark.parametrize("family", [4, 6])
def test_ingress_and_egress_proxies_in_both_families(ebpf_available: None, family: int) -> None:
    with Cluster(backend="ebpf") as cluster:
        cluster.add_namespace("v6")
        cluster.add_endpoint("v6/client", {"app": "client"}, ips=["10.244.7.1", "fd00:10:244::71"])
        cluster.add_endpoint(
            "v6/server",
            {"app": "server"},
            ips=["10.244.7.2", "fd00:10:244::72"],
            ports=[("http", 8080, "TCP"), ("admin", 9090, "TCP")],
        )
        cluster.apply(V6_POLICIES)
        with Lab(cluster, serve=True) as lab:
            for port, path in [(8080, "/in/x"), (8080, "/out"), (9090, "/out"), (9090, "/in/x")]:
                verdict = cluster.check("v6/client", "v6/server", port, http={"method": "GET", "path": path})
                result = lab.http("v6/client", "v6/server", port, "GET", path, family=family)
                assert result.dst_ip.version == family
                assert (result.status, result.verdict) == (verdict.http_status, verdict.verdict), result.explain()
                direction = {f["traffic_direction"] for f in result.flows if f["Type"] == "L7"}
                assert direction == {"INGRESS" if port == 8080 else "EGRESS"}
            assert lab.proxy_errors == 0


def test_http_through_a_cluster_ip_is_proxied_too(lab: Lab) -> None:
    from ciliumpy import ServicePort

    lab.cluster.add_service(
        "production/gateway",
        {"app": "api-gateway"},
        ports=[ServicePort(80, target_port=8080)],
        cluster_ips=["10.96.0.50"],
    )
    for path in ("/api/products", "/admin"):
        verdict = lab.cluster.check(FRONTEND, "10.96.0.50", 80, http={"method": "GET", "path": path})
        status, body = curl(lab, FRONTEND, f"http://10.96.0.50{path}")
        assert status == verdict.http_status
        assert ('"server": "production/api-gateway"' in body) == verdict.allowed


KAFKA_POLICY = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: broker-kafka, namespace: kafka}
spec:
  endpointSelector: {matchLabels: {app: broker}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: producer}}]
      toPorts:
        - ports: [{port: "9092", protocol: TCP}]
          rules: {kafka: [{role: produce, topic: orders}]}
"""


def test_a_redirect_without_a_proxy_fails_closed(ebpf_available: None) -> None:
    from ciliumpy import DropReason

    with Cluster(backend="ebpf") as cluster:
        cluster.add_namespace("kafka")
        cluster.add_endpoint("kafka/producer", {"app": "producer"}, ips=["10.244.8.1"])
        cluster.add_endpoint("kafka/broker", {"app": "broker"}, ips=["10.244.8.2"], ports=[("kafka", 9092, "TCP")])
        cluster.apply(KAFKA_POLICY)
        assert cluster.check("kafka/producer", "kafka/broker", 9092).verdict == "REDIRECTED"
        with Lab(cluster, ipv6=False) as lab:  # no proxies: the redirect passes at L3/L4
            assert lab.connect("kafka/producer", "kafka/broker", 9092).allowed
        with Lab(cluster, ipv6=False, serve=True) as lab:  # proxies, but none for Kafka
            result = lab.connect("kafka/producer", "kafka/broker", 9092)
            assert not result.allowed
            assert result.drop_reason == DropReason.PROXY_LOOKUP_FAILED


@pytest.mark.parametrize("src", [PROMETHEUS, FRONTEND], ids=["not-redirected", "dropped"])
def test_dns_without_the_proxy_matches_resolve(lab: Lab, model: Cluster, src: str) -> None:
    expected = model.resolve(src, "api.stripe.com")
    got = lab.resolve(src, "api.stripe.com", timeout=1)
    assert (got.rcode, got.answers, got.learned) == (expected.rcode, expected.answers, expected.learned)
    assert not got.learned
