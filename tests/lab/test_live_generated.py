"""Live traffic on generated policies: what the wire does is what both backends' check() say.

``test_live.py`` checks a fixed verdict table.  Here hypothesis draws the policies (CNP, CCNP
and NetworkPolicy over a small label vocabulary, so they select the lab's pods and each
other's peers) and the flows (TCP, UDP and ICMP echo among the pods and the host, at ports
that matter to the policies) and the address family; the examples alternate between the
lab delivering packets between pods itself (Cilium's BPF host routing) and letting the node
route them, and each carries a fixed deny so that both modes see drops.  Every exchange goes over real
sockets through the tc-attached datapath, and its outcome -- answered or not, and the drop
reason the datapath reported -- must equal ``Cluster.check()`` of the same addresses on the
eBPF cluster *and* on a simulator cluster built from the same objects.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ciliumpy import Cluster
from ciliumpy import strategies as cst
from ciliumpy.backends._simulator import SimulatorBackend
from ciliumpy.lab import Lab
from ciliumpy.testing import Flow

pytestmark = pytest.mark.usefixtures("ebpf_available")

EXAMPLES = int(os.environ.get("CILIUMPY_LIVE_EXAMPLES", "12"))
FLOWS_PER_EXAMPLE = 6
DENIED_TIMEOUT = 0.4

PODS = {
    "prod/web": ({"app": "web"}, ["10.244.5.10", "fd00:10:244:5::a"]),
    "prod/db": ({"app": "db", "tier": "web"}, ["10.244.5.11", "fd00:10:244:5::b"]),
    "default/db": ({"app": "db"}, ["10.244.5.12", "fd00:10:244:5::c"]),
}
NAMESPACES = st.sampled_from(("default", "prod"))
KEYS = st.sampled_from(("app", "tier"))
VALUES = st.sampled_from(("web", "db"))
SELECTORS = cst.label_selectors(keys=KEYS, values=VALUES, max_labels=1, namespaces=NAMESPACES)
RULES = cst.policy_rules(subjects=SELECTORS, peers=SELECTORS, authentication=True)
POLICIES = st.one_of(
    cst.cilium_network_policies(namespaces=NAMESPACES, rules=RULES, max_specs=1),
    cst.clusterwide_policies(rules=RULES, max_specs=1),
    cst.network_policies(
        namespaces=NAMESPACES,
        pod_selectors=cst.label_selectors(keys=KEYS, values=VALUES, max_labels=1),
        namespace_selectors=cst.label_selectors(keys=st.just("kubernetes.io/metadata.name"), values=NAMESPACES),
    ),
)


# Always part of the example: whatever else is drawn, prod/web -> app=db on 9/TCP is denied
# (a deny beats every allow), so each example has a drop to compare in its delivery mode.
ANCHOR_DENY = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumClusterwideNetworkPolicy",
    "metadata": {"name": "anchor-deny"},
    "spec": {
        "endpointSelector": {"matchLabels": {"app": "db"}},
        "ingressDeny": [
            {
                "fromEndpoints": [{"matchLabels": {"app": "web", "k8s:io.kubernetes.pod.namespace": "prod"}}],
                "toPorts": [{"ports": [{"port": "9", "protocol": "TCP"}]}],
            }
        ],
    },
}
ANCHOR_FLOW = Flow(src="prod/web", dst="prod/db", protocol="TCP", port=9)


def _cluster(backend: Any, policies: list[Any]) -> Cluster:
    cluster = Cluster(backend=backend)
    for ref, (labels, ips) in PODS.items():
        cluster.add_endpoint(ref, labels=labels, ips=ips)
    cluster.apply(ANCHOR_DENY, *policies)
    return cluster


def _attempt(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ValueError as exc:  # PolicyError included
        return exc


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def _live_outcomes_equal_check(data: st.DataObject, seen: Counter[str]) -> None:
    policies = data.draw(st.lists(POLICIES, max_size=3), label="policies")
    # Alternated, not drawn: set iteration inside the strategies follows PYTHONHASHSEED, so
    # what is drawn differs between processes, and both modes must be exercised every time.
    local_delivery = seen["examples"] % 2 == 0
    sim = _attempt(_cluster, SimulatorBackend(), policies)
    ebpf = _attempt(_cluster, "ebpf", policies)
    if isinstance(sim, BaseException) or isinstance(ebpf, BaseException):
        # Both refuse the same objects (the differential tests check the messages).
        assert type(sim) is type(ebpf), (sim, ebpf)
        if isinstance(ebpf, Cluster):
            ebpf.close()
        return
    mismatches = []
    seen["examples"] += 1
    try:
        with Lab(ebpf, local_delivery=local_delivery) as lab:
            for i in range(FLOWS_PER_EXAMPLE):
                flow = (
                    ANCHOR_FLOW
                    if i == 0
                    else data.draw(
                        cst.flows(sim, protocols=("TCP", "UDP", "ICMP"), world=False, http=False, dns=False),
                        label="flow",
                    )
                )
                port = None if flow.protocol == "ICMP" else max(1, int(flow.port or 1))
                family = data.draw(st.sampled_from((4, 6)), label="family")
                src = next(str(a) for a in lab.addresses(flow.src) if a.version == family)
                dst = next(str(a) for a in lab.addresses(flow.dst) if a.version == family)
                expected = sim.check(src, dst, port, flow.protocol)
                live = lab.connect(
                    flow.src,
                    flow.dst,
                    port,
                    flow.protocol,
                    family=family,
                    timeout=1.0 if expected.allowed else DENIED_TIMEOUT,
                )
                assert (str(live.src_ip), str(live.dst_ip)) == (src, dst)
                on_sim = sim.check(src, dst, port, flow.protocol)
                on_ebpf = ebpf.check(src, dst, port, flow.protocol)
                outcome = (live.allowed, live.drop_reason)
                seen[f"{'allowed' if live.allowed else 'dropped'} ipv{family} local_delivery={local_delivery}"] += 1
                if outcome != (on_sim.allowed, on_sim.drop_reason) or on_sim.verdict != on_ebpf.verdict:
                    mismatches.append(
                        f"{live.explain()}\n  simulator: {on_sim.verdict} {on_sim.drop_reason}"
                        f"\n  eBPF check(): {on_ebpf.verdict} {on_ebpf.drop_reason}"
                    )
    finally:
        ebpf.close()
    assert not mismatches, f"local_delivery={local_delivery}\n" + "\n".join(mismatches)


def test_live_outcomes_equal_check_on_generated_policies() -> None:
    seen: Counter[str] = Counter()
    _live_outcomes_equal_check(seen=seen)
    # The exchanges really crossed the wire in every combination that matters.
    for outcome in ("allowed", "dropped"):
        for delivery in (True, False):
            assert sum(n for k, n in seen.items() if k.startswith(outcome) and k.endswith(f"={delivery}")), seen
    assert sum(n for k, n in seen.items() if "ipv6" in k), seen
