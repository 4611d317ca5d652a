"""Clusters with Services give the same answers on the simulator and on the eBPF datapath.

Hypothesis draws pods (labels, named container ports, one or two address families),
Services (selectors, named and numbered target ports, dual-stack cluster IPs, ClientIP
affinity, internalTrafficPolicy, selector-less ones with EndpointSlices whose conditions vary)
and CiliumNetworkPolicies that allow some of it (``toServices`` among them). Each example is
built on the simulator and on a shared eBPF backend (:class:`cluster_pairs.MirroredCluster`):
the kernel's service, backend and rev-NAT maps must hold what the cluster computed; every
``check()`` towards a Service (every backend, ``all_backends=True``) and every packet sent to a
cluster IP through ``evaluate()`` (the datapath's own DNAT), its reply (reverse NAT) and a
second packet of the connection must give equal verdicts on both.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_pairs import MirroredCluster, SharedDatapath
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from ciliumpy import Packet, Protocol, ServicePort, Verdict
from ciliumpy._datapath import TCPFlags
from ciliumpy.backends._ebpf import EBPFBackend

pytestmark = pytest.mark.requires_ebpf

APPS = ("a", "b", "c")
SHARES = 2
EXAMPLES_PER_SHARE = int(os.environ.get("CILIUMPY_CLUSTER_SERVICE_EXAMPLES", "40"))
_SEEN: dict[str, int] = {"verdicts": 0, "translated": 0, "dropped": 0, "allowed": 0}


@pytest.fixture(scope="module")
def datapath() -> Iterator[SharedDatapath]:
    with EBPFBackend(ct_max_entries=8192) as backend:
        yield SharedDatapath(backend)


@st.composite
def scenario(draw: st.DrawFn) -> dict[str, Any]:
    pods = []
    for i in range(draw(st.integers(2, 5))):
        ips = [f"10.244.0.{10 + i}"] + ([f"fd00:10:244::{10 + i:x}"] if draw(st.booleans()) else [])
        ports = [("http", draw(st.sampled_from((8080, 8081))), "TCP"), ("dns", 5353, "UDP")]
        node = draw(st.sampled_from((None, None, "n1")))
        pods.append((f"ns{i % 2}/p{i}", {"app": draw(st.sampled_from(APPS))}, ips, ports, node))
    services = []
    for j in range(draw(st.integers(1, 3))):
        ns = draw(st.sampled_from(("ns0", "ns1")))
        target = draw(st.sampled_from(("http", 8080, 8081)))
        ports = [ServicePort(80, target, "TCP", "web"), ServicePort(53, "dns", "UDP", "dns")]
        selector = None if draw(st.integers(0, 3)) == 0 else {"app": draw(st.sampled_from(APPS))}
        ips = [f"10.96.0.{10 + j}"] + ([f"fd00:10:96::{10 + j:x}"] if draw(st.booleans()) else [])
        services.append(
            {
                "ref": f"{ns}/s{j}",
                "selector": selector,
                "ports": ports,
                "cluster_ips": ips,
                "session_affinity": draw(st.sampled_from(("None", "ClientIP"))),
                "internal_traffic_policy": draw(st.sampled_from(("Cluster", "Cluster", "Local"))),
                "slice": None
                if selector is not None
                else [
                    {
                        "addresses": [f"10.244.0.{10 + k}"],
                        "conditions": draw(
                            st.sampled_from(({}, {"ready": False, "serving": True, "terminating": True}))
                        ),
                    }
                    for k in draw(st.lists(st.integers(0, 4), max_size=3, unique=True))
                ],
            }
        )
    policies = []
    for k in range(draw(st.integers(0, 3))):
        ns = draw(st.sampled_from(("ns0", "ns1")))
        subject = {"matchLabels": {"app": draw(st.sampled_from(APPS))}}
        if draw(st.booleans()):
            rule: dict[str, Any] = {
                "ingress": [{"fromEndpoints": [{"matchLabels": {"app": draw(st.sampled_from(APPS))}}]}]
            }
            if draw(st.booleans()):
                port = draw(st.sampled_from(("8080", "8081", "5353")))
                rule["ingress"][0]["toPorts"] = [{"ports": [{"port": port}]}]
        else:
            svc = draw(st.sampled_from(services))
            svc_ns, _, name = svc["ref"].partition("/")
            rule = {"egress": [{"toServices": [{"k8sService": {"serviceName": name, "namespace": svc_ns}}]}]}
        policies.append(
            {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumNetworkPolicy",
                "metadata": {"name": f"p{k}", "namespace": ns},
                "spec": {"endpointSelector": subject, **rule},
            }
        )
    return {"pods": pods, "services": services, "policies": policies}


def _build(c: MirroredCluster, world: dict[str, Any]) -> None:
    for ref, labels, ips, ports, node in world["pods"]:
        c.add_endpoint(ref, labels=labels, ips=ips, ports=ports, node=node)
    for svc in world["services"]:
        c.add_service(
            svc["ref"],
            svc["selector"],
            ports=svc["ports"],
            cluster_ips=svc["cluster_ips"],
            session_affinity=svc["session_affinity"],
            internal_traffic_policy=svc["internal_traffic_policy"],
        )
        if svc["slice"] is not None:
            ns, _, name = svc["ref"].partition("/")
            c.apply(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {"name": f"{name}-x", "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
                    "addressType": "IPv4",
                    "endpoints": svc["slice"],
                    "ports": [{"name": "web", "port": 8080}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
                }
            )
    if world["policies"]:
        c.apply(*world["policies"])


def _tally(v: Verdict) -> None:
    _SEEN["verdicts"] += 1
    _SEEN["allowed" if v.allowed else "dropped"] += 1
    if v.service is not None and v.service.backend is not None:
        _SEEN["translated"] += 1


@pytest.mark.parametrize("share", range(SHARES))
def test_clusters_with_services_agree(datapath: SharedDatapath, share: int) -> None:
    @seed(0xC5 + share)
    @settings(
        max_examples=EXAMPLES_PER_SHARE,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(world=scenario(), data=st.data())
    def run(world: dict[str, Any], data: st.DataObject) -> None:
        c = MirroredCluster(datapath)
        _build(c, world)
        c.check_kernel()
        clients = [ref for ref, *_ in world["pods"]]
        for svc in world["services"]:
            client = data.draw(st.sampled_from(clients), label="client")
            for port, proto in ((80, "TCP"), (53, "UDP")):
                for v in c.check(client, svc["ref"].replace("/", "/svc/"), port, proto, all_backends=True):
                    _tally(v)
            # The datapath's own translation: a packet to the cluster IP, its reply, again.
            src = c.endpoints[client].ips[0]
            front = next(
                (
                    ipaddress.ip_address(ip)
                    for ip in svc["cluster_ips"]
                    if ipaddress.ip_address(ip).version == src.version
                ),
                None,
            )
            if front is None:
                continue
            sport = data.draw(st.integers(1024, 65535), label="sport")
            pkt = Packet(src, front, int(Protocol.TCP), sport=sport, dport=80, tcp_flags=int(TCPFlags.SYN), length=128)
            v = c.evaluate(pkt)
            _tally(v)
            if v.service is not None and v.egress is not None and v.egress.result.nat_address is not None:
                _tally(c.evaluate(v.packet.reply()))
                _tally(
                    c.evaluate(
                        Packet(
                            src,
                            front,
                            int(Protocol.TCP),
                            sport=sport,
                            dport=80,
                            tcp_flags=int(TCPFlags.ACK),
                            length=128,
                        )
                    )
                )

    run()


def test_the_runs_compared_translations(datapath: SharedDatapath) -> None:
    if not _SEEN["verdicts"]:
        pytest.skip("run with test_clusters_with_services_agree")
    assert _SEEN["translated"] and _SEEN["allowed"] and _SEEN["dropped"], _SEEN
