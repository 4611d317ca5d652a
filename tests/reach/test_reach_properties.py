"""Reachability agrees with ``check`` on generated clusters, policies and flows.

The reachability of a cluster is computed once per identity over port ranges; ``check``
runs one packet through the datapath. Every answer of the first must be the second's,
and the graph must hold exactly the pairs with some allowed connection.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from ciliumpy import Cluster
from ciliumpy import strategies as cst

PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_HTTP = st.none() | st.fixed_dictionaries(
    {"method": st.sampled_from(("GET", "POST")), "path": st.sampled_from(("/", "/api/v1", "/health", "/public/x"))}
)


def _lockdown(cluster: Cluster, data: st.DataObject) -> None:
    """Maybe make every pod default-deny in some directions, so more flows are blocked."""
    directions = data.draw(st.sampled_from(((), ("ingress",), ("egress",), ("ingress", "egress"))), label="lockdown")
    if directions:
        cluster.apply(
            {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumClusterwideNetworkPolicy",
                "metadata": {"name": "zz-lockdown"},
                "spec": {"endpointSelector": {}, **{d: [{}] for d in directions}},
            }
        )


def _check(cluster: Cluster, src: str, dst: str, port: int, protocol: str, http: Any) -> bool:
    # A new connection each time: no conntrack entry of an earlier probe may answer it.
    cluster.backend.reset_conntrack()
    return cluster.check(src, dst, port, protocol, http).allowed


@PROPERTY
@given(cst.cluster_specs(min_endpoints=1, max_endpoints=4, max_policies=4), _HTTP, st.booleans(), st.data())
def test_reachability_allowed_equals_check(spec: Any, http: Any, dual_stack: bool, data: st.DataObject) -> None:
    cluster = spec.build(dual_stack=dual_stack)
    _lockdown(cluster, data)
    reach = cluster.reachability(http=http)
    for _ in range(8):
        flow = data.draw(cst.flows(cluster, http=False, dns=False), label="flow")
        expected = _check(cluster, flow.src, flow.dst, flow.port, flow.protocol, http)
        note(f"{flow} -> {expected}")
        assert reach.allowed(flow.src, flow.dst, flow.port, flow.protocol) is expected


@PROPERTY
@given(cst.cluster_specs(min_endpoints=1, max_endpoints=4, max_policies=4), st.data())
def test_graph_edges_are_exactly_the_allowed_pairs(spec: Any, data: st.DataObject) -> None:
    cluster = spec.build()
    _lockdown(cluster, data)
    reach = cluster.reachability()
    graph = reach.to_networkx()
    pods = sorted(cluster.endpoints)
    assert set(graph.nodes) >= {*pods, "world", "host"}
    for src in [*pods, "world", "host"]:
        for dst in [*pods, "world", "host"]:
            if src == dst or "/" not in src + dst:
                continue
            fams = {ip.version for ip in _ips(cluster, src)} & {ip.version for ip in _ips(cluster, dst)}
            if not fams:
                assert not graph.has_edge(src, dst)
                continue
            if graph.has_edge(src, dst):
                ports = graph.edges[src, dst]["ports"]
                assert ports, (src, dst)
                # every listed range is open at its ends, as check says
                for protocol, ranges in ports.items():
                    for lo, hi in ranges[:2]:
                        for port in {lo, hi}:
                            assert _check(cluster, src, dst, port, protocol, None), (src, dst, protocol, port)
            # ports drawn anywhere: open exactly when the edge lists them
            protocol = data.draw(st.sampled_from(("TCP", "UDP", "SCTP", "ICMP")), label="protocol")
            port = data.draw(st.integers(0, 65535) if protocol != "ICMP" else st.integers(0, 255), label="port")
            listed = graph.has_edge(src, dst) and graph.edges[src, dst]["connections"].allows(protocol, port)
            assert _check(cluster, src, dst, port, protocol, None) is listed, (src, dst, protocol, port)


def _ips(cluster: Cluster, who: str) -> tuple[Any, ...]:
    from ciliumpy.testing import _addresses

    return _addresses(cluster, who)
