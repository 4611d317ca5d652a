"""ClusterIPs over real sockets: the datapath's tc load balancer translates and reverse-translates.

A pod connects to a Service's cluster IP; the datapath picks the backend from the client's
address and source port, DNATs the packets to it, applies the backend's policy, and rewrites
the replies' source back to the frontend, so the client's socket (connected to the cluster
IP) gets its answer.  Every exchange is compared with ``Cluster.check(..., backend=...)`` and
with the expected answer, in both delivery modes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ciliumpy import Action, Cluster, ServicePort
from ciliumpy.lab import Lab

pytestmark = pytest.mark.usefixtures("ebpf_available")

DENIED_TIMEOUT = 0.4

ONLY_V1 = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "only-v1", "namespace": "shop"},
    "spec": {
        "endpointSelector": {"matchLabels": {"app": "orders"}},
        "ingress": [
            {
                "fromEndpoints": [{"matchLabels": {"app": "client"}}],
                "toPorts": [{"ports": [{"port": "8081", "protocol": "TCP"}, {"port": "5301", "protocol": "UDP"}]}],
            }
        ],
    },
}


@pytest.fixture(scope="module", params=[True, False], ids=["local-delivery", "host-routing"])
def lab(request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, Lab]]:
    cluster = Cluster(backend="ebpf")
    cluster.add_endpoint("shop/client", labels={"app": "client"}, ips=["10.244.2.1", "fd00:10:244:2::1"])
    for i in (1, 2):
        cluster.add_endpoint(
            f"shop/orders-{i}",
            labels={"app": "orders", "version": f"v{i}"},
            ips=[f"10.244.1.{i}", f"fd00:10:244:1::{i}"],
            ports=[("http", 8080 + i, "TCP"), ("dns", 5300 + i, "UDP")],
        )
    cluster.add_service(
        "shop/orders",
        {"app": "orders"},
        ports=[ServicePort(80, "http", "TCP", "web"), ServicePort(53, "dns", "UDP", "dns")],
        cluster_ips=["10.96.0.10", "fd00:10:96::10"],
    )
    cluster.apply(ONLY_V1)
    try:
        with Lab(cluster, local_delivery=request.param) as lab:
            yield cluster, lab
    finally:
        cluster.close()


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(("protocol", "port"), [("TCP", 80), ("UDP", 53)])
def test_cluster_ip_reaches_the_pinned_backend_as_check_says(
    lab: tuple[Cluster, Lab], family: int, protocol: str, port: int
) -> None:
    cluster, live = lab
    for backend, allowed in (("shop/orders-1", True), ("shop/orders-2", False)):
        model = cluster.check("shop/client", "shop/svc/orders", port, protocol, backend=backend)
        assert model.allowed is allowed
        result = live.connect(
            "shop/client",
            "shop/svc/orders",
            port,
            protocol,
            backend=backend,
            family=family,
            timeout=1.0 if allowed else DENIED_TIMEOUT,
        )
        assert result.allowed is allowed, result.explain()
        assert result.service is not None and result.service.backend.pod == backend
        assert result.dst_ip.version == family and str(result.dst_ip).startswith(("10.96.", "fd00:10:96:"))
        egress = [e for e in result.events if e.direction.name == "EGRESS" and e.src == result.src_ip]
        # The client's packets were translated: the datapath reports them towards the backend.
        assert egress and all(e.dst == result.service.backend.address for e in egress)
        if not allowed:
            assert result.drop_reason is not None
            assert result.drop_reason == model.drop_reason


def test_unpinned_connection_lands_where_the_hash_says(lab: tuple[Cluster, Lab]) -> None:
    _, live = lab
    seen = set()
    for _ in range(6):
        result = live.connect("shop/client", "10.96.0.10", 80, timeout=DENIED_TIMEOUT)
        assert result.service is not None
        # Only v1 is allowed, so the answer tells which backend the kernel really chose.
        assert result.allowed is (result.service.backend.pod == "shop/orders-1"), result.explain()
        seen.add(result.service.backend.pod)
    assert seen <= {"shop/orders-1", "shop/orders-2"}


def test_replies_come_back_from_the_frontend(lab: tuple[Cluster, Lab]) -> None:
    _, live = lab
    result = live.connect("shop/client", "orders", 53, "UDP", backend="shop/orders-1")
    assert result.allowed, result.explain()
    replies = [e for e in result.events if e.direction.name == "INGRESS" and e.dst == result.src_ip]
    # Reverse NAT at the client: the reply's source is the cluster IP and service port again.
    assert replies and all((e.src, e.sport) == (result.dst_ip, 53) for e in replies)
    assert all(e.action == Action.ALLOW for e in replies)


def test_service_errors(lab: tuple[Cluster, Lab]) -> None:
    _, live = lab
    with pytest.raises(Exception, match="not a backend"):
        live.connect("shop/client", "shop/svc/orders", 80, backend="shop/client")
    with pytest.raises(Exception, match="no TCP port 81"):
        live.connect("shop/client", "shop/svc/orders", 81)
