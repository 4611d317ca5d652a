"""A pod cannot claim labels Cilium derives itself (identity spoofing, issue 9 part 1).

Cilium builds a pod's identity labels with ``filterPodLabels`` and ``SanitizePodLabels``
(pkg/k8s/watchers/pod.go, pkg/k8s/utils/utils.go): the pod's own ``io.cilium.k8s*`` labels are
dropped, then namespace labels, namespace name, service account and cluster are *assigned*.
Each test here is written as an attacker would try it: a pod in ``dev`` that labels itself
with another namespace's, service account's, cluster's or namespace label's value, and a
policy that admits only the real holders.  They run on every available backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ciliumpy import Cluster
from ciliumpy._identity import endpoint_identity_labels, filter_pod_labels, sanitize_pod_labels
from ciliumpy._labels import SOURCE_K8S

NS_KEY = "io.kubernetes.pod.namespace"
SA_KEY = "io.cilium.k8s.policy.serviceaccount"
CLUSTER_KEY = "io.cilium.k8s.policy.cluster"
NS_LABEL = "io.cilium.k8s.namespace.labels."


def _cnp(namespace: str, name: str, from_endpoints: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "target"}},
            "ingress": [{"fromEndpoints": from_endpoints}],
        },
    }


def _pod(namespace: str, name: str, labels: dict[str, str], ip: str, sa: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "c", "image": "x"}]},
        "status": {"podIP": ip},
    }


@pytest.fixture
def cluster(ciliumpy_backend: str) -> Iterator[Cluster]:
    with Cluster(backend=ciliumpy_backend, cluster_name="prod") as c:
        c.add_namespace("dev", {"team": "dev"})
        c.add_namespace("kube-system", {"team": "secure"})
        c.add_endpoint("kube-system/target", labels={"app": "target"}, ips=["10.0.1.10"])
        c.add_endpoint("kube-system/admin", labels={"app": "admin"}, service_account="admin", ips=["10.0.1.11"])
        yield c


def test_pod_label_cannot_claim_another_namespace(cluster: Cluster) -> None:
    # fromEndpoints [{}] in a namespaced policy means "any pod of kube-system".
    cluster.apply(_cnp("kube-system", "same-ns", [{}]))
    cluster.add_endpoint("dev/attacker", labels={NS_KEY: "kube-system"}, ips=["10.0.2.10"])
    assert cluster.check("kube-system/admin", "kube-system/target", 80).verdict == "FORWARDED"
    assert cluster.check("dev/attacker", "kube-system/target", 80).verdict == "DROPPED"
    assert cluster.identity_of("dev/attacker").labels.values_of(NS_KEY) == ("dev",)


def test_pod_manifest_label_cannot_claim_another_namespace(cluster: Cluster) -> None:
    cluster.apply(
        _cnp("kube-system", "same-ns", [{}]),
        _pod("dev", "attacker", {NS_KEY: "kube-system"}, "10.0.2.11"),
    )
    assert cluster.check("dev/attacker", "kube-system/target", 80).verdict == "DROPPED"


def test_pod_label_cannot_claim_a_service_account(cluster: Cluster) -> None:
    cluster.apply(_cnp("kube-system", "admins", [{"matchLabels": {SA_KEY: "admin", NS_KEY: "dev"}}]))
    cluster.add_endpoint("dev/real-admin", labels={}, service_account="admin", ips=["10.0.2.12"])
    cluster.apply(_pod("dev", "attacker", {SA_KEY: "admin"}, "10.0.2.13"))
    assert cluster.check("dev/real-admin", "kube-system/target", 80).verdict == "FORWARDED"
    assert cluster.check("dev/attacker", "kube-system/target", 80).verdict == "DROPPED"
    assert cluster.identity_of("dev/attacker").labels.values_of(SA_KEY) == ("default",)


def test_pod_label_cannot_claim_a_namespace_label(cluster: Cluster) -> None:
    cluster.apply(_cnp("kube-system", "secure-team", [{"matchLabels": {NS_LABEL + "team": "secure"}}]))
    cluster.add_endpoint("dev/attacker", labels={NS_LABEL + "team": "secure"}, ips=["10.0.2.14"])
    # ... nor one its namespace does not have at all.
    cluster.add_endpoint("dev/attacker2", labels={NS_LABEL + "tier": "secure"}, ips=["10.0.2.15"])
    cluster.apply(_cnp("kube-system", "secure-tier", [{"matchLabels": {NS_LABEL + "tier": "secure"}}]))
    assert cluster.check("kube-system/admin", "kube-system/target", 80).verdict == "FORWARDED"
    assert cluster.check("dev/attacker", "kube-system/target", 80).verdict == "DROPPED"
    assert cluster.check("dev/attacker2", "kube-system/target", 80).verdict == "DROPPED"


def test_namespace_selector_of_a_network_policy_ignores_pod_claims(cluster: Cluster) -> None:
    cluster.apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "from-secure", "namespace": "kube-system"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "target"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "secure"}}}]}],
            },
        }
    )
    cluster.add_endpoint("dev/attacker", labels={NS_LABEL + "team": "secure", NS_KEY: "kube-system"}, ips=["10.0.2.16"])
    assert cluster.check("kube-system/admin", "kube-system/target", 80).verdict == "FORWARDED"
    assert cluster.check("dev/attacker", "kube-system/target", 80).verdict == "DROPPED"


def test_pod_label_cannot_claim_another_cluster(cluster: Cluster) -> None:
    cluster.apply(_cnp("kube-system", "other-cluster", [{"matchLabels": {CLUSTER_KEY: "mesh-peer"}}]))
    cluster.add_endpoint("dev/attacker", labels={CLUSTER_KEY: "mesh-peer"}, ips=["10.0.2.17"])
    assert cluster.check("dev/attacker", "kube-system/target", 80).verdict == "DROPPED"
    assert cluster.identity_of("dev/attacker").labels.values_of(CLUSTER_KEY) == ("prod",)


def test_spoofing_pod_shares_the_identity_of_an_honest_pod(cluster: Cluster) -> None:
    cluster.add_endpoint("dev/honest", labels={"app": "x"}, ips=["10.0.2.18"])
    cluster.add_endpoint(
        "dev/attacker",
        labels={
            "app": "x",
            NS_KEY: "kube-system",
            SA_KEY: "admin",
            CLUSTER_KEY: "mesh-peer",
            NS_LABEL + "team": "secure",
            "io.cilium.k8s.policy.name": "x",
            "io.cilium.k8sx": "y",
        },
        ips=["10.0.2.19"],
    )
    assert cluster.identity_of("dev/attacker").id == cluster.identity_of("dev/honest").id


# ---------------------------------------------------------------- the functions themselves
def test_filter_pod_labels_drops_every_io_cilium_k8s_prefix() -> None:
    labels = {"io.cilium.k8s.policy.cluster": "a", "io.cilium.k8sfoo": "b", "io.cilium.k8": "c", "app": "d"}
    assert filter_pod_labels(labels) == {"io.cilium.k8": "c", "app": "d"}


def test_sanitize_assigns_derived_keys_and_drops_empty_service_account() -> None:
    out = sanitize_pod_labels({NS_KEY: "evil", SA_KEY: "evil", "app": "a"}, "dev", {"team": "t"}, "", "c1")
    assert out == {"app": "a", NS_KEY: "dev", NS_LABEL + "team": "t", CLUSTER_KEY: "c1"}


def test_identity_labels_hold_one_value_per_derived_key() -> None:
    labels = endpoint_identity_labels({NS_KEY: "kube-system", NS_LABEL + "x": "1"}, "dev", {}, "sa", "c1")
    assert labels.k8s_mapping() == {NS_KEY: "dev", SA_KEY: "sa", CLUSTER_KEY: "c1"}
    assert all(lbl.source == SOURCE_K8S for lbl in labels)
