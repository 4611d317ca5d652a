"""A failed apply leaves no trace: identities (numbers too), ipcache, map state, FQDN cache and
conntrack are exactly as before, on every backend, including when a kernel map fills.

The cluster is built with some history (a pod added and removed) so that identity numbers
depend on the order things happened: a rollback that rebuilt state from scratch would
renumber them.  An established connection's reply must still pass after a failed apply: its
reverse direction is denied by policy, so only conntrack lets it through.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from ciliumpy import Cluster, Packet
from ciliumpy._datapath import TCPFlags
from ciliumpy.exceptions import MapFullError, PolicyError

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: t, labels: {app: a}}
status: {podIP: 10.244.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: t, labels: {app: b}}
status: {podIP: 10.244.0.11}
"""
EPHEMERAL = """
apiVersion: v1
kind: Pod
metadata: {name: x, namespace: t, labels: {app: x}}
status: {podIP: 10.244.0.20}
"""
POLICIES = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-in, namespace: t}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-in, namespace: t}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: nobody}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-out, namespace: t}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toEndpoints: [{}]
  - toCIDR: [192.0.2.0/24]
"""
A, B = ipaddress.ip_address("10.244.0.10"), ipaddress.ip_address("10.244.0.11")
SYN = Packet(src=A, dst=B, sport=41000, dport=80)
REPLY = Packet(src=B, dst=A, sport=80, dport=41000, tcp_flags=int(TCPFlags.SYN | TCPFlags.ACK))
NEW_BACK = Packet(src=B, dst=A, sport=41001, dport=80)  # b may not open connections to a


def new_pod(name: str, labels: dict[str, str], ip: str | None = None) -> dict[str, Any]:
    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "t"}}
    pod["metadata"]["labels"] = labels
    if ip is not None:
        pod["status"] = {"podIP": ip}
    return pod


def cidr_policy(name: str, cidrs: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": "t"},
        "spec": {"endpointSelector": {"matchLabels": {"app": "a"}}, "egress": [{"toCIDR": cidrs}]},
    }


def l7_policy(name: str, rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": "t"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "b"}},
            "ingress": [
                {
                    "fromEndpoints": [{"matchLabels": {"app": "a"}}],
                    "toPorts": [{"ports": [{"port": "9092", "protocol": "TCP"}], "rules": rules}],
                }
            ],
        },
    }


def build(backend: Any) -> Cluster:
    """Pods with history: x came and went, so a and b do not hold the first numbers."""
    cluster = Cluster(backend=backend)
    cluster.apply(EPHEMERAL, PODS, POLICIES)
    cluster.delete(EPHEMERAL)
    return cluster


def state(cluster: Cluster) -> dict[str, Any]:
    return {
        "identities": [(i.id, i.labels) for i in cluster.identities()],
        "a": cluster.identity_of("t/a").id,
        "ipcache": cluster.ipcache(),
        "map a": cluster.map_state("t/a"),
        "map b": cluster.map_state("t/b"),
        "connections": cluster.open_connections(),
        "endpoints": cluster.endpoints,
        "policies": sorted(p.name for p in cluster.policies),
        "fqdn": cluster.fqdn_cache.entries(),
    }


@pytest.fixture
def connected(ciliumpy_backend: str) -> Iterator[Cluster]:
    with build(ciliumpy_backend) as cluster:
        assert cluster.evaluate(SYN).allowed
        assert cluster.evaluate(REPLY).allowed
        assert not cluster.evaluate(NEW_BACK).allowed
        yield cluster


def assert_untouched(cluster: Cluster, before: dict[str, Any]) -> None:
    assert state(cluster) == before
    reply = cluster.evaluate(REPLY)
    assert reply.allowed, reply.explain()  # conntrack kept the connection
    assert not cluster.evaluate(NEW_BACK).allowed


FAILURES = {
    # stored objects clash: an address already used
    "address": lambda: [
        new_pod("n", {"app": "n"}),
        cidr_policy("more", ["198.18.0.0/24"]),
        new_pod("y", {"app": "y"}, "10.244.0.10"),
    ],
    # resolution fails after new identities (a pod and a prefix) were allocated
    "resolution": lambda: [
        new_pod("n", {"app": "n"}),
        cidr_policy("more", ["198.18.0.0/24"]),
        l7_policy("http", {"http": [{"method": "GET"}]}),
        l7_policy("kafka", {"kafka": [{"topic": "t"}]}),
    ],
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_failed_apply_keeps_identities_ipcache_map_state_and_connections(connected: Cluster, failure: str) -> None:
    before = state(connected)
    with pytest.raises(PolicyError, match=r"address already used|conflicting L7 parsers"):
        connected.apply({"apiVersion": "v1", "kind": "List", "items": FAILURES[failure]()})
    assert_untouched(connected, before)


def test_failed_delete_keeps_everything(connected: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    before = state(connected)
    real = connected.backend.apply

    def refuse(update: Any) -> None:
        raise MapFullError(28, "no room", function="bpf_map_update_batch")

    monkeypatch.setattr(connected.backend, "apply", refuse)
    with pytest.raises(MapFullError):
        connected.delete(POLICIES)
    monkeypatch.setattr(connected.backend, "apply", real)
    assert_untouched(connected, before)


def test_numbers_after_a_failed_apply_are_those_of_a_cluster_that_never_saw_it(ciliumpy_backend: str) -> None:
    with build(ciliumpy_backend) as failed, build(ciliumpy_backend) as clean:
        for items in FAILURES.values():
            with pytest.raises(PolicyError):
                failed.apply({"apiVersion": "v1", "kind": "List", "items": items()})
        follow_up = [new_pod("n", {"app": "n"}), cidr_policy("more", ["198.18.0.0/24"])]
        failed.apply(*follow_up)
        clean.apply(*follow_up)
        assert state(failed) == state(clean)


def test_failed_resolve_unlearns_the_answer(ciliumpy_backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dns = """
apiVersion: v1
kind: Pod
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
status: {podIP: 10.244.0.53}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-dns, namespace: t}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}}]
    toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchPattern: "*"}]}}]
  - toFQDNs: [{matchName: api.example.com}]
"""
    with build(ciliumpy_backend) as cluster:
        cluster.apply(dns)
        cluster.add_dns_records({"api.example.com": ["203.0.113.7"]})
        before = state(cluster)
        real = cluster.backend.apply
        monkeypatch.setattr(cluster.backend, "apply", lambda update: (_ for _ in ()).throw(MapFullError(28, "full")))
        with pytest.raises(MapFullError):
            cluster.resolve("t/a", "api.example.com")
        monkeypatch.setattr(cluster.backend, "apply", real)
        assert state(cluster) == before
        assert len(cluster.fqdn_cache) == 0
        assert not cluster.check("t/a", "203.0.113.7", 443).allowed
        assert cluster.resolve("t/a", "api.example.com").learned
        assert cluster.check("t/a", "203.0.113.7", 443).allowed


# ---- kernel maps that fill up ---------------------------------------------------------------
def ebpf_cluster(**sizes: int) -> Cluster:
    from ciliumpy.backends._ebpf import EBPFBackend

    return build(EBPFBackend(**sizes))


@pytest.mark.requires_ebpf
def test_full_ipcache_map_fails_cleanly_naming_it_and_the_datapath_stays_closed() -> None:
    # host (2) + a, b (2) + 192.0.2.0/24 = 5 entries; 10 more prefixes do not fit in 12
    with ebpf_cluster(ipcache_max_entries=12) as cluster:
        assert cluster.evaluate(SYN).allowed
        before = state(cluster)
        wanted = [f"198.18.{i}.0/24" for i in range(10)]
        with pytest.raises(MapFullError) as info:
            cluster.apply(new_pod("n", {"app": "n"}), cidr_policy("wide", wanted))
        assert info.value.map_name == "cil_ipcache"
        assert "cil_ipcache" in str(info.value) and "12 entries" in str(info.value)
        assert_untouched(cluster, before)
        # The datapath never got the half of the update that fitted: closed, as before.
        assert not cluster.check("t/a", "198.18.3.1", 80).allowed
        assert cluster.check("t/a", "192.0.2.1", 80).allowed
        cluster.apply(cidr_policy("narrow", wanted[:3]))  # what fits still applies
        assert cluster.check("t/a", "198.18.2.1", 80).allowed
        assert not cluster.check("t/a", "198.18.3.1", 80).allowed


@pytest.mark.requires_ebpf
def test_full_policy_map_fails_cleanly_naming_the_endpoint_map() -> None:
    with ebpf_cluster(policy_map_max_entries=8) as cluster:
        assert cluster.evaluate(SYN).allowed
        before = state(cluster)
        ports = [{"port": str(p), "protocol": "TCP"} for p in range(1000, 1010)]
        many = yaml.safe_load(POLICIES.split("---")[0])
        many["metadata"]["name"] = "many"
        many["spec"]["ingress"][0]["toPorts"] = [{"ports": ports}]
        with pytest.raises(MapFullError) as info:
            cluster.apply(many)
        num = cluster.endpoint_id("t/b")
        assert info.value.map_name == f"cil_policy_{num:05d}"
        assert f"policy map of endpoint {num}" in str(info.value)
        assert_untouched(cluster, before)
        assert not cluster.check("t/a", "t/b", 1005).allowed


@pytest.mark.requires_ebpf
def test_full_endpoint_map_fails_cleanly_naming_it() -> None:
    # a, b and the pod x that came and went: room for three local addresses
    with ebpf_cluster(endpoints_max_entries=3) as cluster:
        assert cluster.evaluate(SYN).allowed
        before = state(cluster)
        with pytest.raises(MapFullError) as info:
            cluster.apply(new_pod("n", {"app": "n"}, "10.244.0.30"), new_pod("m", {"app": "m"}, "10.244.0.31"))
        assert info.value.map_name == "cil_lxc"
        assert "cil_lxc" in str(info.value) and "3 entries" in str(info.value)
        assert_untouched(cluster, before)
        cluster.apply(new_pod("n", {"app": "n"}, "10.244.0.30"))  # one more fits
        assert "t/n" in cluster.endpoints
