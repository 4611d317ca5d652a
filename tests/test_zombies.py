"""Expired DNS names stay allowed while a connection uses them, and not after it closes."""

from __future__ import annotations

import attrs

from ciliumpy import Cluster, DropReason, Packet, Protocol
from ciliumpy._datapath import TCPFlags
from ciliumpy._fqdn import ManualClock

POLICY = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: fqdn, namespace: app}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}}]
    toPorts: [{ports: [{port: "53", protocol: ANY}], rules: {dns: [{matchPattern: "*"}]}}]
  - toFQDNs: [{matchName: www.example.com}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
"""


def test_connection_keeps_zombie_until_closed() -> None:
    clock = ManualClock(0.0)
    c = Cluster(clock=clock)
    c.add_endpoint("kube-system/coredns", labels={"k8s-app": "kube-dns"})
    c.add_endpoint("app/web", labels={"app": "web"})
    c.apply(POLICY)
    c.add_dns_records({"www.example.com": ["203.0.113.9"]}, ttl=10)
    assert c.resolve("app/web", "www.example.com").learned
    src = c.endpoint("app/web").ips[0]
    syn = Packet(src, "203.0.113.9", int(Protocol.TCP), sport=51000, dport=443, tcp_flags=int(TCPFlags.SYN))
    assert c.evaluate(syn).allowed
    assert len(c.open_connections()) == 1
    clock.advance(30)
    c.expire_dns()
    data = attrs.evolve(syn, tcp_flags=int(TCPFlags.ACK))
    assert c.evaluate(data).allowed  # zombie keeps the address's identity
    assert c.check("app/web", "203.0.113.9", 443).allowed  # probes ride on the zombie too
    fin = attrs.evolve(syn, tcp_flags=int(TCPFlags.FIN | TCPFlags.ACK))
    c.evaluate(fin)
    assert c.open_connections() == []
    c.expire_dns()
    assert c.check("app/web", "203.0.113.9", 443).drop_reason == DropReason.POLICY_DENIED
    assert c.lookup_ip("203.0.113.9").id == 2


def test_udp_connection_times_out_like_conntrack() -> None:
    clock = ManualClock(0.0)
    c = Cluster(clock=clock)
    c.add_endpoint("kube-system/coredns", labels={"k8s-app": "kube-dns"})
    c.add_endpoint("app/web", labels={"app": "web"})
    c.apply(POLICY.replace('port: "443", protocol: TCP', 'port: "443", protocol: UDP'))
    c.add_dns_records({"www.example.com": ["203.0.113.9"]}, ttl=10)
    c.resolve("app/web", "www.example.com")
    src = c.endpoint("app/web").ips[0]
    quic = Packet(src, "203.0.113.9", int(Protocol.UDP), sport=51000, dport=443, tcp_flags=0)
    assert c.evaluate(quic).allowed
    clock.advance(30)
    c.expire_dns()  # TTL passed, but the UDP flow is 30 s old: still live
    assert c.evaluate(quic).allowed
    clock.advance(61)  # no packet for 61 s: the conntrack entry has timed out
    c.expire_dns()
    assert c.open_connections() == []
    assert c.check("app/web", "203.0.113.9", 443, "UDP").drop_reason == DropReason.POLICY_DENIED
