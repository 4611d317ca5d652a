"""``CiliumCIDRGroup`` end to end on every backend: loading both API versions,
``cidrGroupRef`` and ``cidrGroupSelector`` in ``fromCIDRSet``/``toCIDRSet``, the group labels
of ipcache identities (``cidrgroup:io.cilium.policy.cidrgroupname/<name>``, as
pkg/policy/api/cidr.go ``LabelForCIDRGroupRef``), ``except`` holes in a group, and policies
following a group as it is applied, changed and deleted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from ciliumpy import CiliumCIDRGroup, Cluster, PolicyError

CLIENT, SERVER = "default/client", "default/server"
NAME_KEY = "cidrgroup:io.cilium.policy.cidrgroupname"

PODS = [
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": n, "namespace": "default", "labels": {"app": n}}}
    for n in ("client", "server")
]


def group(
    name: str, cidrs: Sequence[str], labels: Mapping[str, str] | None = None, api: str = "cilium.io/v2alpha1"
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = dict(labels)
    return {"apiVersion": api, "kind": "CiliumCIDRGroup", "metadata": meta, "spec": {"externalCIDRs": list(cidrs)}}


def egress_to(name: str, *cidr_rules: Mapping[str, Any], port: int = 443) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "client"}},
            "egress": [{"toCIDRSet": [dict(r) for r in cidr_rules], "toPorts": [{"ports": [{"port": str(port)}]}]}],
        },
    }


OFFICE = group("office", ["203.0.113.0/24", "2001:db8:1::/48"], {"team": "net", "site": "hq"})
LAB = group("lab", ["198.51.100.0/24"], {"team": "research"}, api="cilium.io/v2")


@pytest.fixture
def cluster(cluster: Cluster) -> Cluster:
    cluster.apply(*PODS)
    return cluster


def reaches(cluster: Cluster, ip: str, port: int = 443) -> bool:
    return cluster.check(CLIENT, ip, port).allowed


# --------------------------------------------------------------------------------------------
# loading


@pytest.mark.parametrize("api", ["cilium.io/v2alpha1", "cilium.io/v2"])
def test_group_loads_in_both_api_versions_and_round_trips(api: str) -> None:
    cluster = Cluster(backend="simulator")
    (obj,) = cluster.apply(group("office", ["203.0.113.0/24"], {"team": "net"}, api=api))
    assert isinstance(obj, CiliumCIDRGroup)
    assert obj.name == "office" and dict(obj.labels) == {"team": "net"}
    assert [str(c) for c in obj.external_cidrs] == ["203.0.113.0/24"]
    assert group("office", ["203.0.113.0/24"], {"team": "net"}, api=api) in cluster.to_manifests()


@pytest.mark.parametrize(
    ("doc", "message", "field"),
    [
        (group("g", ["10.0.0.1"]), "must be of type cidr", "spec.externalCIDRs[0]"),
        ({**group("g", []), "spec": {}}, "Required value", "spec.externalCIDRs"),
        ({**group("g", []), "spec": {"externalCIDRs": [], "cidrs": []}}, "unknown field", "spec.cidrs"),
        ({**group("g", []), "apiVersion": "cilium.io/v1"}, "apiVersion must be", "apiVersion"),
        (
            {**group("g", []), "metadata": {"name": "g", "namespace": "default"}},
            "a cluster-scoped object has no namespace",
            "metadata.namespace",
        ),
    ],
    ids=["bare-ip", "no-cidrs", "unknown-field", "api-version", "namespaced"],
)
def test_invalid_group_is_rejected_naming_the_field(doc: dict[str, Any], message: str, field: str) -> None:
    with pytest.raises(PolicyError, match=message) as info:
        Cluster(backend="simulator").apply(doc)
    assert info.value.field == field
    assert info.value.kind == "CiliumCIDRGroup" and info.value.namespace is None


# --------------------------------------------------------------------------------------------
# identities


def test_group_cidrs_get_identities_with_the_group_labels(cluster: Cluster) -> None:
    cluster.apply(OFFICE, egress_to("office", {"cidrGroupRef": "office"}))
    ident = cluster.lookup_ip("203.0.113.9")
    assert set(ident.labels.strings()) == {
        f"{NAME_KEY}/office",
        "cidrgroup:team=net",
        "cidrgroup:site=hq",
        "reserved:world",
    }
    assert ident.id & 0xFF000000 == 0x01000000  # a node-local identity, like every CIDR identity
    assert ident.name == "cidrgroup:office"
    v6 = cluster.lookup_ip("2001:db8:1::7")
    assert f"{NAME_KEY}/office" in v6.labels.strings()


def test_prefix_referenced_inside_a_group_inherits_its_labels(cluster: Cluster) -> None:
    # The except hole is referenced by the policy, so it gets its own identity: its own cidr
    # label plus the labels of the group CIDR that contains it.
    cluster.apply(OFFICE, egress_to("office", {"cidrGroupRef": "office", "except": ["203.0.113.128/25"]}))
    hole = cluster.lookup_ip("203.0.113.200")
    assert set(hole.labels.strings()) == {
        f"{NAME_KEY}/office",
        "cidrgroup:team=net",
        "cidrgroup:site=hq",
        "cidr:203.0.113.128/25",
        "reserved:world",
    }


# --------------------------------------------------------------------------------------------
# selection


def test_cidr_group_ref_selects_the_groups_cidrs(cluster: Cluster) -> None:
    cluster.apply(OFFICE, LAB, egress_to("office", {"cidrGroupRef": "office"}))
    assert reaches(cluster, "203.0.113.9")
    assert not reaches(cluster, "198.51.100.9")  # the lab group is not referenced
    assert not reaches(cluster, "192.0.2.1")
    assert not reaches(cluster, "203.0.113.9", port=80)


def test_cidr_group_selector_selects_by_the_groups_labels(cluster: Cluster) -> None:
    cluster.apply(OFFICE, LAB, egress_to("research", {"cidrGroupSelector": {"matchLabels": {"team": "research"}}}))
    assert reaches(cluster, "198.51.100.9")
    assert not reaches(cluster, "203.0.113.9")
    cluster.apply(
        egress_to(
            "research",
            {"cidrGroupSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["net", "x"]}]}},
        )
    )
    assert reaches(cluster, "203.0.113.9") and not reaches(cluster, "198.51.100.9")


def test_except_holes_apply_to_a_group(cluster: Cluster) -> None:
    cluster.apply(OFFICE, egress_to("office", {"cidrGroupRef": "office", "except": ["203.0.113.128/25"]}))
    assert reaches(cluster, "203.0.113.9")
    assert not reaches(cluster, "203.0.113.200")
    v = cluster.check(CLIENT, "203.0.113.200", 443)
    assert v.verdict == "DROPPED"


def test_group_cidr_inside_a_referenced_cidr_is_selected_by_it(cluster: Cluster) -> None:
    # The group's prefix carries the cidr: label of the nearest prefix a policy references.
    cluster.apply(OFFICE, egress_to("wide", {"cidr": "203.0.0.0/8"}))
    assert "cidr:203.0.0.0/8" in cluster.lookup_ip("203.0.113.9").labels.strings()
    assert reaches(cluster, "203.0.113.9")


def test_ingress_from_a_group(cluster: Cluster) -> None:
    cluster.apply(
        OFFICE,
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "from-office", "namespace": "default"},
            "spec": {
                "endpointSelector": {"matchLabels": {"app": "server"}},
                "ingress": [{"fromCIDRSet": [{"cidrGroupRef": "office"}]}],
            },
        },
    )
    assert cluster.check("203.0.113.9", SERVER, 80).allowed
    assert not cluster.check("192.0.2.1", SERVER, 80).allowed


# --------------------------------------------------------------------------------------------
# policies follow the group


def test_policies_follow_a_group_as_it_is_applied_changed_and_deleted(cluster: Cluster) -> None:
    cluster.apply(egress_to("office", {"cidrGroupRef": "office"}))
    assert not reaches(cluster, "203.0.113.9")  # the group does not exist yet: selects nothing
    cluster.apply(OFFICE)
    assert reaches(cluster, "203.0.113.9")
    cluster.apply(group("office", ["192.0.2.0/24"]))  # its CIDRs change
    assert reaches(cluster, "192.0.2.1")
    assert not reaches(cluster, "203.0.113.9")
    cluster.delete(group("office", []))
    assert not reaches(cluster, "192.0.2.1")
    assert all(not isinstance(o, CiliumCIDRGroup) for o in cluster.apply())


def test_failed_apply_rolls_the_group_back(cluster: Cluster) -> None:
    cluster.apply(egress_to("office", {"cidrGroupRef": "office"}))
    bad = egress_to("clash", {"cidr": "10.0.0.0/8"})
    bad["spec"]["egress"][0]["toPorts"] = [
        {"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"http": [{"method": "GET"}]}},
        {"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"kafka": [{"topic": "t"}]}},
    ]
    with pytest.raises(PolicyError, match="conflicting L7 parsers"):
        cluster.apply(OFFICE, bad)
    assert not reaches(cluster, "203.0.113.9")
    assert not any(m["kind"] == "CiliumCIDRGroup" for m in cluster.to_manifests())


def test_ipv6_group_cidrs_in_a_dual_stack_cluster(ciliumpy_backend: str) -> None:
    with Cluster(backend=ciliumpy_backend, dual_stack=True) as cluster:
        client = {**PODS[0], "status": {"podIPs": [{"ip": "10.244.0.10"}, {"ip": "fd00:10:244::10"}]}}
        cluster.apply(client, OFFICE, egress_to("office", {"cidrGroupRef": "office"}))
        assert cluster.check(CLIENT, "2001:db8:1::7", 443).allowed
        assert not cluster.check(CLIENT, "2001:db8:2::7", 443).allowed
        # Dual stack: the group's IPv6 CIDR carries the IPv6 world label.
        assert "reserved:world-ipv6" in cluster.lookup_ip("2001:db8:1::7").labels.strings()
