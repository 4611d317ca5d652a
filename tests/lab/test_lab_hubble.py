"""Ring-buffer events of real lab traffic become the same Hubble flows as ``check()`` gives.

One connection in the lab (real sockets through the tc-attached eBPF datapath) and the same
``check()`` on the simulator: the lab's first packet gives, field by field, the flows the
simulator gives (time, uuid and the kernel-chosen source port aside).
"""

from __future__ import annotations

from typing import Any

import pytest

from ciliumpy import Cluster
from ciliumpy.hubble import Flow, flows_of
from ciliumpy.lab import Lab

pytestmark = pytest.mark.usefixtures("ebpf_available")

ENDPOINTS = {
    "prod/web": ({"app": "web"}, ["10.244.7.10", "fd00:10:247::a"]),
    "prod/db": ({"app": "db"}, ["10.244.7.11", "fd00:10:247::b"]),
    "prod/other": ({"app": "other"}, ["10.244.7.12", "fd00:10:247::c"]),
}
DB_POLICY = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "db", "namespace": "prod"},
    "spec": {
        "endpointSelector": {"matchLabels": {"app": "db"}},
        "ingress": [
            {
                "fromEndpoints": [{"matchLabels": {"app": "web"}}],
                "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}, {"port": "53", "protocol": "UDP"}]}],
            }
        ],
    },
}
WEB_EGRESS = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "web-egress", "namespace": "prod"},
    "spec": {
        "endpointSelector": {"matchLabels": {"app": "web"}},
        "egress": [{"toEndpoints": [{"matchLabels": {"app": "db"}}]}],
    },
}


def _populate(cluster: Cluster) -> Cluster:
    for ref, (labels, ips) in ENDPOINTS.items():
        cluster.add_endpoint(ref, labels=labels, ips=ips)
    cluster.apply(DB_POLICY, WEB_EGRESS)
    return cluster


def _comparable(flow: Flow) -> dict[str, Any]:
    d = flow.to_dict()
    d.pop("time", None)
    d.pop("uuid", None)
    for key in ("TCP", "UDP"):
        ports = d.get("l4", {}).get(key)
        if ports is not None:
            ports.pop("source_port", None)  # chosen by the kernel in the lab
    return d


@pytest.mark.parametrize(
    ("src", "dst", "port", "protocol", "allowed"),
    [
        ("prod/web", "prod/db", 5432, "TCP", True),
        ("prod/web", "prod/db", 53, "UDP", True),
        ("prod/other", "prod/db", 5432, "TCP", False),  # dropped at db's ingress
        ("prod/web", "prod/other", 8080, "TCP", False),  # dropped at web's egress
        ("prod/web", "prod/db", None, "ICMP", False),  # no ICMP rule at db
    ],
)
def test_lab_flows_are_the_simulators_flows(src: str, dst: str, port: int | None, protocol: str, allowed: bool) -> None:
    simulator = _populate(Cluster(backend="simulator"))
    want = [_comparable(f) for f in flows_of([simulator.check(src, dst, port, protocol)])]
    assert want and any(f.get("event_type", {}).get("type") == 5 for f in want)
    with _populate(Cluster(backend="ebpf")) as cluster, Lab(cluster) as lab:
        live = lab.connect(src, dst, port, protocol, timeout=1.0 if allowed else 0.4)
        assert live.allowed is allowed
        got = [_comparable(f) for f in flows_of([live], cluster)]
        assert got[: len(want)] == want
        # The cluster's flow store was fed by the lab too.
        stored = cluster.observe()
        assert [_comparable(f) for f in stored] == got
    if allowed and protocol == "TCP":
        # Replies travel back as trace events with is_reply and the sides swapped.
        replies = [f for f in got[len(want) :] if f.get("is_reply")]
        assert replies and replies[0]["source"]["pod_name"] == dst.split("/")[1]
        # Each packet's own TCP flags, as the kernel read them: handshake, data and close.
        seen = [(bool(f.get("is_reply")), {k for k, v in f["l4"]["TCP"].get("flags", {}).items() if v}) for f in got]
        assert (True, {"SYN", "ACK"}) in seen and (False, {"ACK"}) in seen
        assert any("PSH" in flags for _, flags in seen) and any("FIN" in flags for _, flags in seen)
        assert all(f["Summary"].startswith("TCP Flags: ") for f in got)
