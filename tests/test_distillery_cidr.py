"""Cilium's CIDR/world/port-range distillery expectations (team reference, appendix C).

Upstream: ``Test_EnsureDeniesPrecedeAllows``, ``Test_Allowception``,
``TestEgressPortRangePrecedence`` in ``pkg/policy/distillery_test.go``. The upstream
tests pre-create identities for 192.0.2.0/24 (SUBNET) and 192.0.2.3/32 (IP); ciliumpy only
creates CIDR identities that some policy references, so expectations about an identity
that does not exist in a case are left out, and every identity that does exist is checked.
"""

from __future__ import annotations

from typing import Any

import pytest

from ciliumpy import Cluster, Direction

NS = "c"
SUBNET, IP = "192.0.2.0/24", "192.0.2.3/32"


def _cnp(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"endpointSelector": {}, **spec},
    }


def _cluster(*docs: dict[str, Any]) -> Cluster:
    c = Cluster(allow_localhost=False)
    c.add_endpoint(f"{NS}/foo", labels={"id": "foo"}, ports=[("http", 80, "TCP")])
    c.apply(*docs)
    return c


def _names(c: Cluster) -> dict[int, str]:
    names = {0: "ANY", 2: "world", 9: "world-ipv4", 10: "world-ipv6"}
    for ident in c.identities():
        if ident.cidr is not None:
            text = str(ident.cidr)
            names[ident.id] = {SUBNET: "SUBNET", IP: "IP"}.get(text, text)
    return names


def _entries(c: Cluster) -> dict[str, str]:
    names = _names(c)
    out = {}
    for key, entry in c.map_state(f"{NS}/foo").items():
        d = "ingress" if key.direction == Direction.INGRESS else "egress"
        out[f"{d} {names.get(key.identity, key.identity)} {key.port_proto_text()}"] = entry.describe()
    return out


def _both(**entries: str) -> dict[str, str]:
    out = {}
    for who, verdict in entries.items():
        for d in ("ingress", "egress"):
            out[f"{d} {who.replace('_', '-')} ANY"] = verdict
    return out


ALLOW_ALL_INGRESS = _cnp("common", ingress=[{"fromEntities": ["all"]}])


def test_deny_world_covers_cidr_identities() -> None:
    c = _cluster(
        ALLOW_ALL_INGRESS,
        _cnp("deny-world", ingressDeny=[{"fromEntities": ["world"]}], egressDeny=[{"toEntities": ["world"]}]),
        _cnp("allow-ip", ingress=[{"fromCIDR": [IP]}], egress=[{"toCIDR": [IP]}]),
    )
    assert _entries(c) == {
        "ingress ANY ANY": "allow",
        **_both(world="deny", world_ipv4="deny", world_ipv6="deny", IP="deny"),
    }


def test_deny_one_ip_with_a_larger_subnet() -> None:
    c = _cluster(
        ALLOW_ALL_INGRESS,
        _cnp("deny", ingressDeny=[{"fromCIDRSet": [{"cidr": SUBNET}]}], egressDeny=[{"toCIDRSet": [{"cidr": SUBNET}]}]),
        _cnp("allow", ingress=[{"fromCIDR": [IP]}], egress=[{"toCIDR": [IP]}]),
    )
    assert _entries(c) == {"ingress ANY ANY": "allow", **_both(SUBNET="deny", IP="deny")}


def test_deny_part_of_a_subnet_with_an_ip() -> None:
    c = _cluster(
        ALLOW_ALL_INGRESS,
        _cnp("deny", ingressDeny=[{"fromCIDRSet": [{"cidr": IP}]}], egressDeny=[{"toCIDRSet": [{"cidr": IP}]}]),
        _cnp("allow", ingress=[{"fromCIDRSet": [{"cidr": SUBNET}]}], egress=[{"toCIDRSet": [{"cidr": SUBNET}]}]),
    )
    assert _entries(c) == {"ingress ANY ANY": "allow", **_both(IP="deny", SUBNET="allow")}


def test_broad_world_deny_on_a_port_is_a_subset_of_a_specific_cidr_allow() -> None:
    port = [{"ports": [{"port": "8080", "protocol": "ANY"}]}]
    c = _cluster(
        ALLOW_ALL_INGRESS,
        _cnp(
            "deny",
            ingressDeny=[{"fromEntities": ["world"], "toPorts": port}],
            egressDeny=[{"toEntities": ["world"], "toPorts": port}],
        ),
        _cnp("allow", ingress=[{"fromCIDR": [IP]}], egress=[{"toCIDR": [IP]}]),
    )
    expected = {"ingress ANY ANY": "allow", **_both(IP="allow")}
    for who in ("world", "world-ipv4", "world-ipv6", "IP"):
        for proto in ("TCP", "UDP", "SCTP"):
            for d in ("ingress", "egress"):
                expected[f"{d} {who} 8080/{proto}"] = "deny"
    assert _entries(c) == expected


def test_broad_cidr_allow_on_a_port_is_a_subset_of_a_specific_cidr_deny() -> None:
    port = [{"ports": [{"port": "8080", "protocol": "ANY"}]}]
    c = _cluster(
        ALLOW_ALL_INGRESS,
        _cnp(
            "allow", ingress=[{"fromCIDR": [SUBNET], "toPorts": port}], egress=[{"toCIDR": [SUBNET], "toPorts": port}]
        ),
        _cnp("deny", ingressDeny=[{"fromCIDR": [IP]}], egressDeny=[{"toCIDR": [IP]}]),
    )
    expected = {"ingress ANY ANY": "allow", **_both(IP="deny")}
    for proto in ("TCP", "UDP", "SCTP"):
        for d in ("ingress", "egress"):
            expected[f"{d} SUBNET 8080/{proto}"] = "allow"
    assert _entries(c) == expected


def test_named_port_with_a_cidr_peer() -> None:
    c = _cluster(
        ALLOW_ALL_INGRESS,
        _cnp("named", ingress=[{"fromCIDR": [SUBNET], "toPorts": [{"ports": [{"port": "http", "protocol": "TCP"}]}]}]),
    )
    assert _entries(c) == {"ingress ANY ANY": "allow", "ingress SUBNET 80/TCP": "allow", "egress ANY ANY": "allow"}


def test_port_ranges_become_prefix_pieces() -> None:
    ranges = [{"port": "64", "endPort": 127, "protocol": "TCP"}, {"port": "5", "endPort": 10, "protocol": "TCP"}]
    c = _cluster(_cnp("range", ingress=[{"fromCIDR": [SUBNET], "toPorts": [{"ports": ranges}]}]))
    got = {k for k in _entries(c) if "SUBNET" in k}
    assert got == {f"ingress SUBNET {r}/TCP" for r in ("64-127", "5", "6-7", "8-9", "10")}
    world = "198.51.100.1"  # not in the subnet: no entry
    assert c.check(world, f"{NS}/foo", 70).drop_reason is not None
    c.add_endpoint(f"{NS}/peer", labels={"id": "peer"})
    assert c.lookup_ip("192.0.2.77").cidr is not None
    assert c.check("192.0.2.77", f"{NS}/foo", 70).allowed
    assert c.check("192.0.2.77", f"{NS}/foo", 11).verdict == "DROPPED"


def test_allowception() -> None:
    c = _cluster(
        _cnp(
            "allowception",
            egress=[{"toCIDR": ["0.0.0.0/0"]}],
            egressDeny=[{"toCIDRSet": [{"cidr": "1.0.0.0/8", "except": ["1.1.1.1/32"]}]}],
        )
    )
    entries = _entries(c)
    assert entries == {
        "ingress ANY ANY": "allow",
        "egress world ANY": "allow",
        "egress 1.0.0.0/8 ANY": "deny",
        "egress 1.1.1.1/32 ANY": "allow",
    }
    assert c.check(f"{NS}/foo", "1.2.3.4", 443).drop_reason is not None
    assert c.check(f"{NS}/foo", "1.1.1.1", 443).allowed
    assert c.check(f"{NS}/foo", "8.8.8.8", 443).allowed


@pytest.mark.parametrize(
    ("rules", "verdicts"),
    [
        # deny 1-1024 covers allow 80
        ([("allow", "80", 0), ("deny", "1", 1024)], {1: 181, 80: 181, 1024: 181, 1025: 133}),
        # deny 80 inside allow 1-1024
        ([("deny", "80", 0), ("allow", "1", 1024)], {1: 0, 79: 0, 80: 181, 81: 0, 1024: 0, 1025: 133}),
        # wildcard deny covers allow 1-1024
        ([("deny", "0", 0), ("allow", "1", 1024)], {1: 181, 500: 181, 1025: 181, 65535: 181}),
        # wildcard allow with a deny hole 1-1024
        ([("allow", "0", 0), ("deny", "1", 1024)], {1: 181, 1024: 181, 1025: 0, 65535: 0}),
        # allow 80-90 and 90-100, deny 85-95
        (
            [("allow", "80", 90), ("deny", "85", 95), ("allow", "90", 100)],
            {79: 133, 80: 0, 84: 0, 85: 181, 90: 181, 95: 181, 96: 0, 100: 0, 101: 133},
        ),
    ],
)
def test_egress_port_range_precedence(rules: list[tuple[str, str, int]], verdicts: dict[int, int]) -> None:
    docs = []
    for i, (verdict, port, end) in enumerate(rules):
        pp: dict[str, Any] = {"port": port, "protocol": "TCP"}
        if end:
            pp["endPort"] = end
        elem = {"toEndpoints": [{"matchLabels": {"id": "peer"}}], "toPorts": [{"ports": [pp]}]}
        docs.append(_cnp(f"r{i}", **{"egress" if verdict == "allow" else "egressDeny": [elem]}))
    c = _cluster(*docs)
    c.add_endpoint(f"{NS}/peer", labels={"id": "peer"})
    for port, code in verdicts.items():
        v = c.check(f"{NS}/foo", f"{NS}/peer", port)
        got = 0 if v.allowed else (v.drop_reason.value if v.drop_reason else -1)
        assert got == code, (port, v.explain())
