"""The multi-node lab: pods on several nodes, WireGuard between them, policy on both sides.

What crosses the underlay is read off an AF_PACKET capture in the underlay namespace: with
encryption on, only WireGuard's UDP port 51871 between node addresses and never the probe's
clear-text token; with encryption off the token is visible (which shows the capture works).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import ciliumpy
from ciliumpy import Cluster
from ciliumpy.encryption import wireguard
from ciliumpy.exceptions import LabError
from ciliumpy.lab import MultiNodeLab
from ciliumpy.lab._multinode import Frame
from ciliumpy.lab._netns import list_namespaces

pytestmark = pytest.mark.usefixtures("ebpf_available")

TOKEN = b"ciliumpy-lab "  # what the probe sends (ciliumpy.lab._probe)
SEED = Path(ciliumpy.__file__).resolve().parent / "examples" / "seed"
WG = {"encryption": {"enabled": True, "type": "wireguard"}}

DENY_DB_FROM_WEB2 = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db-ingress, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: web}}]
      toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
"""

WEB2_EGRESS_DNS_ONLY = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web2-egress, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: web2}}
  egress:
    - toEndpoints: [{matchLabels: {app: cache}}]
"""


def _assert_only_wireguard(frames: list[Frame], nodes: set[str]) -> None:
    """Every IPv4 frame on the underlay that can carry data is WireGuard (UDP 51871) between
    node addresses; the rest may only be the nodes' own control messages (ICMP, IGMP), which
    carry no pod packet.  No TCP, no other UDP, no other protocol crossed."""
    ip_frames = [f for f in frames if f.protocol is not None]
    assert any(f.protocol == 17 for f in ip_frames), "the capture saw no WireGuard packet"
    for f in ip_frames:
        if not _node_control(f, nodes):
            detail = (f.src, f.dst, f.protocol, f.sport, f.dport, f.data[:64].hex())
            assert f.protocol == 17 and {f.sport, f.dport} == {51871} and {f.src, f.dst} <= nodes, detail


def _node_control(f: Frame, nodes: set[str]) -> bool:
    """A node's own control message on the underlay (ICMP, or IGMP as an interface comes up,
    sent from 0.0.0.0): it carries no pod packet."""
    return f.protocol in (1, 2) and (f.src in nodes or f.src == "0.0.0.0")


def _cluster(values: object) -> Cluster:
    c = Cluster(backend="ebpf", values=values)
    c.add_node("a", ips=["192.168.50.11"])
    c.add_node("b", ips=["192.168.50.12"])
    c.add_endpoint("prod/web", labels={"app": "web"}, ips=["10.244.1.5"], node="a")
    c.add_endpoint("prod/web2", labels={"app": "web2"}, ips=["10.244.1.6"], node="a")
    c.add_endpoint("prod/db", labels={"app": "db"}, ips=["10.244.2.5"], node="b")
    c.add_endpoint("prod/cache", labels={"app": "cache"}, ips=["10.244.2.6"], node="b")
    return c


@pytest.fixture(scope="module")
def wg_lab() -> Iterator[MultiNodeLab]:
    if shutil.which("wireguard-go") is None and os.environ.get("CILIUMPY_REQUIRE_EBPF") != "1":
        pytest.skip("wireguard-go is not installed")
    with _cluster(WG) as cluster, MultiNodeLab(cluster) as lab:
        yield lab


def test_pod_traffic_between_nodes_goes_through_wireguard_only(wg_lab: MultiNodeLab) -> None:
    with wg_lab.capture() as cap:
        tcp = wg_lab.connect("prod/web", "prod/db", 5432)
        udp = wg_lab.connect("prod/web", "prod/cache", 53, "UDP")
        icmp = wg_lab.connect("prod/cache", "prod/web", protocol="ICMP")
    assert tcp.allowed and udp.allowed and icmp.allowed
    _assert_only_wireguard(cap.frames, {"192.168.50.11", "192.168.50.12"})
    assert not cap.contains(TOKEN)
    # inner addresses are encrypted too
    assert not any(b"10.244." in f.data for f in cap.frames if f.protocol == 17)
    check = wg_lab.cluster.check("prod/web", "prod/db", 5432)
    assert check.transit.encrypted and check.allowed == tcp.allowed
    # The exchanges' datapath events reached the cluster's Hubble flow store, from both nodes.
    seen = {
        (f.to_dict()["source"].get("pod_name"), f.to_dict()["destination"].get("pod_name"))
        for f in wg_lab.cluster.observe(from_pod="prod/web", to_pod="prod/db", port=5432)
    }
    assert ("web", "db") in seen


def test_tunnels_use_the_models_keys_and_allowed_ips(wg_lab: MultiNodeLab) -> None:
    wg_lab.connect("prod/web", "prod/db", 5432)
    wg = wireguard(wg_lab.cluster)
    (peer,) = wg_lab.peers("a")
    model = wg.node("a").peers[0]
    assert peer["public_key"] == wg.key("b").public
    assert peer["endpoint"] == "192.168.50.12:51871" == model.endpoint
    assert sorted(peer["allowed_ips"]) == sorted(str(n) for n in model.allowed_ips)
    assert peer["last_handshake_time_sec"] > 0 and peer["rx_bytes"] > 0


def test_same_node_traffic_never_reaches_the_underlay(wg_lab: MultiNodeLab) -> None:
    with wg_lab.capture() as cap:
        assert wg_lab.connect("prod/web", "prod/web2", 8080).allowed
    nodes = {"192.168.50.11", "192.168.50.12"}
    assert not [f for f in cap.frames if f.protocol is not None and not _node_control(f, nodes)]
    assert not wg_lab.cluster.check("prod/web", "prod/web2", 8080).transit.crossed_nodes


def test_policy_applies_on_both_sides_of_the_tunnel(wg_lab: MultiNodeLab) -> None:
    cluster = wg_lab.cluster
    cluster.apply(DENY_DB_FROM_WEB2, WEB2_EGRESS_DNS_ONLY)
    try:
        cases = [
            ("prod/web", "prod/db", 5432, True),  # allowed by db's ingress rule (node b)
            ("prod/web", "prod/db", 5433, False),  # db's ingress (node b) drops it
            ("prod/web2", "prod/db", 5432, False),  # web2's egress (node a) drops it
            ("prod/web2", "prod/cache", 6379, True),  # web2's egress allows cache
        ]
        for src, dst, port, expected in cases:
            live = wg_lab.connect(src, dst, port, timeout=0.5 if not expected else 2.0)
            check = cluster.check(src, dst, port)
            assert live.allowed == check.allowed == expected, (src, dst, port, live.explain())
            if not expected:
                assert live.drop_reason == check.drop_reason
                hooks = {ev.endpoint_id for ev in live.events if ev.drop_reason is not None}
                assert hooks == {check.deciding.result.endpoint_id}  # dropped on the deciding node
    finally:
        cluster.delete(DENY_DB_FROM_WEB2, WEB2_EGRESS_DNS_ONLY)


def test_without_encryption_the_payload_crosses_in_clear_text(ebpf_available: None) -> None:
    with _cluster({}) as cluster, MultiNodeLab(cluster) as lab, lab.capture() as cap:
        assert lab.connect("prod/web", "prod/db", 5432).allowed
        assert cap.contains(TOKEN)
        assert any(f.src == "10.244.1.5" and f.dport == 5432 for f in cap.frames)
        assert not cluster.check("prod/web", "prod/db", 5432).transit.encrypted


def test_the_seed_scenario_runs_encrypted_on_three_nodes(ebpf_available: None) -> None:
    if shutil.which("wireguard-go") is None and os.environ.get("CILIUMPY_REQUIRE_EBPF") != "1":
        pytest.skip("wireguard-go is not installed")
    with (
        Cluster.from_manifests(SEED, backend="ebpf", values=SEED / "helm" / "values.yaml") as cluster,
        MultiNodeLab(cluster) as lab,
    ):
        assert lab.nodes == ["kind-control-plane", "kind-worker", "kind-worker2"]
        assert all(len(lab.peers(n)) == 2 for n in lab.nodes)
        with lab.capture() as cap:
            live = lab.connect("production/frontend", "production/backend", 8080)
            denied = lab.connect("production/frontend", "production/database", 5432, timeout=0.5)
        assert live.allowed and not denied.allowed
        assert cluster.check("production/frontend", "production/backend", 8080).transit.encrypted
        assert not cap.contains(TOKEN)
        _assert_only_wireguard(cap.frames, {"172.18.0.2", "172.18.0.3", "172.18.0.4"})


def test_close_ends_wireguard_and_removes_every_namespace(ebpf_available: None) -> None:
    with _cluster(WG) as cluster:
        lab = MultiNodeLab(cluster)
        names = lab.namespaces
        procs = [n.wg for n in lab._res.nodes.values()]
        sockets = [n.uapi for n in lab._res.nodes.values()]
        assert len(names) == 7 and all(p is not None and p.poll() is None for p in procs)
        lab.close()
        lab.close()
        assert not set(names) & set(list_namespaces())
        assert all(p is not None and p.poll() is not None for p in procs)
        assert not any(s is not None and s.exists() for s in sockets)


def test_pods_without_a_declared_node_are_refused(ebpf_available: None) -> None:
    with Cluster(backend="ebpf") as cluster:
        cluster.add_node("a", ips=["192.168.50.11"])
        cluster.add_endpoint("prod/web", labels={"app": "web"}, ips=["10.244.1.5"])
        before = set(list_namespaces())
        with pytest.raises(LabError, match="prod/web has no declared node"):
            MultiNodeLab(cluster)
        assert set(list_namespaces()) == before
