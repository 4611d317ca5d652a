"""The edges of the API a newcomer hits first: named ports, a missing port, delete, missing paths."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ciliumpy import Cluster, NotFoundError, PolicyError, Protocol
from ciliumpy._manifests import load_objects

PODS = textwrap.dedent(
    """\
    apiVersion: v1
    kind: Pod
    metadata: {name: web, namespace: shop, labels: {app: web}}
    spec:
      containers:
      - name: w
        image: w
        ports:
        - {name: http, containerPort: 8080}
        - {name: metrics, containerPort: 9090, protocol: UDP}
        - {name: dns, containerPort: 5353, protocol: SCTP}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: client, namespace: shop, labels: {app: client}}
    spec: {containers: [{name: c, image: c}]}
    """
)


def _policy(port: str, protocol: str, *, egress: bool = False) -> str:
    ports = f"toPorts: [{{ports: [{{port: {port}, protocol: {protocol}}}]}}]"
    if egress:
        subject, section = "client", f"egress:\n  - toEndpoints: [{{matchLabels: {{app: web}}}}]\n    {ports}"
    else:
        subject, section = "web", f"ingress:\n  - fromEndpoints: [{{matchLabels: {{app: client}}}}]\n    {ports}"
    return (
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n"
        f"metadata: {{name: p-{port}-{protocol.lower()}-{'e' if egress else 'i'}, namespace: shop}}\n"
        f"spec:\n  endpointSelector: {{matchLabels: {{app: {subject}}}}}\n  {section}\n"
    )


def test_check_takes_a_named_port_of_the_destination() -> None:
    cluster = Cluster.from_manifests(PODS)
    assert cluster.check("shop/client", "shop/web", "http").packet.dport == 8080
    assert cluster.check("shop/client", "shop/web", "metrics", "UDP").packet.dport == 9090
    assert cluster.check("shop/client", "shop/web", "8080").packet.dport == 8080
    # Name and protocol must both match, as Kubernetes and Cilium resolve named ports.
    with pytest.raises(PolicyError, match=r"shop/web has no TCP container port named 'metrics' \(it is UDP\)"):
        cluster.check("shop/client", "shop/web", "metrics")
    with pytest.raises(PolicyError, match="a named port needs a pod as destination"):
        cluster.check("shop/client", "world", "http")


def test_a_missing_port_is_a_clear_type_error() -> None:
    cluster = Cluster.from_manifests(PODS)
    with pytest.raises(TypeError, match="check\\(\\) needs a port for TCP"):
        cluster.check("shop/client", "shop/web")
    with pytest.raises(TypeError, match="port is an int or a port name, not float"):
        cluster.check("shop/client", "shop/web", 80.0)  # type: ignore[arg-type]
    # ICMP needs none: the echo request is sent.
    assert cluster.check("shop/client", "shop/web", protocol="ICMP").packet.icmp_type == 8


@pytest.mark.parametrize("egress", [False, True], ids=["ingress", "egress"])
def test_a_named_port_of_another_protocol_creates_no_entry(egress: bool) -> None:
    # pkg/types/portmap.go: the container port's protocol must be the rule's.
    cluster = Cluster.from_manifests(
        PODS, _policy("metrics", "TCP", egress=egress), _policy("dns", "SCTP", egress=egress)
    )
    subject = "shop/client" if egress else "shop/web"
    ports = {(k.protocol, k.port) for k in cluster.map_state(subject) if k.port}
    assert ports == {(int(Protocol.SCTP), 5353)}
    assert not cluster.check("shop/client", "shop/web", 9090, "TCP").allowed
    assert not cluster.check("shop/client", "shop/web", 9090, "UDP").allowed
    assert cluster.check("shop/client", "shop/web", "dns", "SCTP").allowed


def test_delete_by_kind_and_name_and_not_found() -> None:
    cluster = Cluster.from_manifests(PODS, _policy("http", "TCP"))
    assert not cluster.check("shop/client", "shop/web", 9090, "UDP").allowed
    cluster.delete(kind="cnp", name="shop/p-http-tcp-i")
    assert cluster.policies == []
    assert cluster.check("shop/client", "shop/web", 9090, "UDP").allowed
    with pytest.raises(NotFoundError, match="CiliumNetworkPolicy 'p-http-tcp-i' not found in namespace 'shop'") as info:
        cluster.delete(kind="CiliumNetworkPolicy", name="shop/p-http-tcp-i")
    assert (info.value.kind, info.value.namespace, info.value.name) == ("CiliumNetworkPolicy", "shop", "p-http-tcp-i")
    assert isinstance(info.value, LookupError)
    # Nothing is removed when one of several objects is missing.
    with pytest.raises(NotFoundError, match="Pod 'ghost' not found"):
        cluster.delete(
            cluster.endpoint("shop/web"), "apiVersion: v1\nkind: Pod\nmetadata: {name: ghost, namespace: shop}\n"
        )
    assert "shop/web" in cluster.endpoints
    cluster.delete(kind="po", name="shop/web")
    assert list(cluster.endpoints) == ["shop/client"]
    with pytest.raises(PolicyError, match="unknown kind"):
        cluster.delete(kind="deployment-ish", name="shop/web")
    with pytest.raises(TypeError, match="both kind= and name="):
        cluster.delete(kind="pod")


def test_delete_needs_only_kind_and_metadata() -> None:
    cluster = Cluster.from_manifests(PODS, _policy("http", "TCP"))
    # The spec does not matter (here it would not even validate): kubectl delete -f does the same.
    cluster.delete(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p-http-tcp-i, namespace: shop}\n"
        "spec: {endpointSelector: 7}\n"
    )
    assert cluster.policies == []


def test_a_missing_path_says_no_such_file_or_directory(tmp_path: Path) -> None:
    for missing in (str(tmp_path / "nope"), "examples/no-such-dir", tmp_path / "gone.yaml"):
        with pytest.raises(PolicyError, match="no such file or directory") as info:
            load_objects([missing])
        assert info.value.document == str(missing)
