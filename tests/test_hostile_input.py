"""Hostile and careless input gets a precise ciliumpy error, never a crash (issue 9, parts 4-5).

Each test is the input an attacker or a careless user would write; before the fixes each one
raised ``TypeError``, ``AttributeError``, ``RecursionError``, ``UnicodeEncodeError``, a bare
``ValueError``, ``struct.error``, built a message of megabytes, or was silently accepted.
"""

from __future__ import annotations

import struct
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ciliumpy import Cluster, Packet
from ciliumpy._dns import DNSProxy
from ciliumpy._fqdn import FQDNCache, ManualClock
from ciliumpy._manifests import MAX_DEPTH, load_objects
from ciliumpy.exceptions import CiliumpyError, PolicyError

MAX_MESSAGE = 4096


def _pod(spec: str = "", status: str = "") -> str:
    return f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: d}}\n{spec}\n{status}\n"


def _load_error(*sources: Any) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_objects(list(sources))
    assert len(str(info.value)) < MAX_MESSAGE
    return info.value


# ---------------------------------------------------------------- wrong types (part 4)
@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        (_pod("spec: {containers: 5}"), "spec.containers", 4),
        (_pod("", "status: running"), "status", 5),
        (_pod("spec: {containers: [{name: a, ports: 7}]}"), "spec.containers[0].ports", 4),
        (_pod("spec: {containers: [7]}"), "spec.containers[0]", 4),
        (
            _pod("spec: {containers: [{ports: [{containerPort: '80'}]}]}"),
            "spec.containers[0].ports[0].containerPort",
            4,
        ),
        (
            _pod("spec: {containers: [{ports: [{containerPort: 80, protocol: 6}]}]}"),
            "spec.containers[0].ports[0].protocol",
            4,
        ),
        (_pod("spec: {serviceAccountName: [a]}"), "spec.serviceAccountName", 4),
        (_pod("spec: {nodeName: {a: b}}"), "spec.nodeName", 4),
        (_pod("", "status: {podIPs: 7}"), "status.podIPs", 5),
        (_pod("", "status: {podIPs: [10.0.0.1]}"), "status.podIPs[0]", 5),
        (_pod("spec: 5"), "spec", 4),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: 7}", "spec.ports", 4),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [7]}", "spec.ports[0]", 4),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIPs: 7}", "spec.clusterIPs", 4),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: [1]}", "spec.clusterIP", 4),
        ("apiVersion: v1\nkind: Node\nmetadata: {name: n}\nstatus: {addresses: 7}", "status.addresses", 4),
        ("apiVersion: v1\nkind: Node\nmetadata: {name: n}\nstatus: {addresses: [x]}", "status.addresses[0]", 4),
        ("apiVersion: v1\nkind: Node\nmetadata: {name: n}\nstatus: running", "status", 4),
    ],
)
def test_wrong_type_in_a_workload_manifest_is_a_located_policy_error(text: str, field: str, line: int) -> None:
    err = _load_error(text)
    assert err.field == field
    assert err.line == line


# ---------------------------------------------------------------- values the API server rejects
@pytest.mark.parametrize(
    ("text", "field"),
    [
        (_pod("", "status: {podIP: 65536}"), "status.podIP"),
        (_pod("", "status: {podIP: '10.0.0.256'}"), "status.podIP"),
        (_pod("", "status: {podIP: 'fe80::1%eth0'}"), "status.podIP"),
        (_pod("", "status: {podIPs: [{ip: 10.0.0.1}, {ip: 10.0.0.2}]}"), "status.podIPs"),
        (_pod("spec: {hostNetwork: 'false'}"), "spec.hostNetwork"),
        (_pod("spec: {containers: [{ports: [{containerPort: 70000}]}]}"), "spec.containers[0].ports[0].containerPort"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 99999}]}", "spec.ports[0].port"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 0}]}", "spec.ports[0].port"),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, targetPort: 65536}]}",
            "spec.ports[0].targetPort",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, protocol: ICMP}]}",
            "spec.ports[0].protocol",
        ),
        (
            "apiVersion: v1\nkind: Node\nmetadata: {name: n}\nstatus: {addresses: [{type: InternalIP, address: 3}]}",
            None,
        ),
    ],
)
def test_value_the_api_server_rejects_is_rejected(text: str, field: str | None) -> None:
    err = _load_error(text)
    if field is not None:
        assert err.field == field


def test_host_network_false_is_not_read_as_true() -> None:
    (pod,) = load_objects([_pod("spec: {hostNetwork: false}")])
    assert pod.host_network is False


# ---------------------------------------------------------------- nesting, aliases, encodings
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300, 999, 100_000])
def test_deeply_nested_yaml_is_rejected_before_it_is_composed(depth: int) -> None:
    # 100,000 nested flow lists crash libyaml's recursive composer (SIGSEGV) if they reach it.
    err = _load_error(_pod(f"spec: {{containers: {'[' * depth}{']' * depth}}}"))
    assert "nested deeper" in err.reason
    assert err.line == 4


def test_nesting_through_aliases_is_counted() -> None:
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 400)]
    err = _load_error("\n".join(lines))
    assert "through aliases" in err.reason


def test_nested_lists_as_python_data_are_rejected_cleanly() -> None:
    lst: dict[str, Any] = {"apiVersion": "v1", "kind": "List", "items": []}
    cur = lst
    for _ in range(1200):
        nxt: dict[str, Any] = {"apiVersion": "v1", "kind": "List", "items": []}
        cur["items"].append(nxt)
        cur = nxt
    err = _load_error(lst)
    assert "nested deeper" in err.reason


def test_shallow_nested_lists_are_flattened() -> None:
    pod = load_objects([_pod()])[0].to_manifest()
    doc = {"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "List", "items": [pod, pod]}]}
    assert len(load_objects([doc])) == 2


def test_self_referencing_python_data_is_rejected() -> None:
    doc: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
    doc["spec"] = doc
    err = _load_error(doc)
    assert "cycle" in err.reason


ALIAS_BOMB = textwrap.dedent(
    """\
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
    """
)


def test_alias_bomb_is_rejected_quickly_with_a_short_message() -> None:
    start = time.perf_counter()
    err = _load_error(ALIAS_BOMB + "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
    assert time.perf_counter() - start < 5
    assert "expands to more than" in err.reason


def test_alias_fan_out_under_an_unknown_field_is_shown_bounded() -> None:
    # 9**6 values: under the expansion limit, so the unknown field is what gets reported;
    # its full repr would be about 5 MB.
    anchors = "\n".join(ALIAS_BOMB.splitlines()[:6])
    text = f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nbogus:\n{textwrap.indent(anchors, '  ')}\n"
    err = _load_error(text)
    assert 'unknown field "bogus"' in str(err)
    assert len(str(err)) < 1000


def test_value_repr_in_message_is_bounded() -> None:
    err = _load_error({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "bogus": ["x" * 10**6] * 1000})
    assert 'unknown field "bogus"' in str(err)
    assert len(str(err)) < 1000


def test_huge_key_in_field_path_is_bounded() -> None:
    err = _load_error({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "k" * 10**6: 1})
    assert len(str(err)) < MAX_MESSAGE


def test_lone_surrogate_in_an_http_rule_is_a_policy_error() -> None:
    cnp = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "x", "namespace": "d"},
        "spec": {
            "endpointSelector": {},
            "egress": [
                {"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"http": [{"path": "\ud800"}]}}]}
            ],
        },
    }
    with pytest.raises(PolicyError) as info:
        Cluster.from_manifests(cnp)
    assert info.value.field is not None and info.value.field.endswith("http[0].path")


def test_lone_surrogate_in_yaml_text_is_a_policy_error() -> None:
    _load_error(_pod().replace("name: p", "name: '\ud800'"))


@pytest.mark.parametrize(
    "scalar",
    ["1" * 5000, "2001-13-45", "0x" + "f" * 5000],
    ids=["int-of-5000-digits", "month-13", "hex-of-5000-digits"],
)
def test_scalar_yaml_cannot_convert_is_a_policy_error(scalar: str) -> None:
    _load_error(_pod(f"spec: {{nodeName: {scalar}}}"))


def test_binary_file_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "pod.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    err = _load_error(path)
    assert err.document == str(path)


# ---------------------------------------------------------------- post-parse errors are located
def test_address_conflict_found_after_parsing_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "pods.yaml"
    path.write_text(
        _pod("", "status: {podIP: 10.1.0.5}")
        + "---\n"
        + _pod("", "status: {podIP: 10.1.0.5}").replace("name: p", "name: q")
    )
    with pytest.raises(PolicyError) as info:
        Cluster.from_manifests(path)
    assert info.value.document == str(path)
    assert info.value.line == 11
    assert str(info.value).startswith(f"{path}:11: Pod d/q: ")


def test_l7_parser_conflict_found_after_parsing_names_file_and_line(tmp_path: Path) -> None:
    def cnp(name: str, kind: str) -> str:
        return textwrap.dedent(
            f"""\
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {{name: {name}, namespace: d}}
            spec:
              endpointSelector: {{matchLabels: {{app: a}}}}
              ingress:
              - toPorts: [{{ports: [{{port: "80", protocol: TCP}}], rules: {{{kind}: [{{}}]}}}}]
            """
        )

    path = tmp_path / "l7.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: d, labels: {app: a}}\n---\n"
        + cnp("p1", "http")
        + "---\n"
        + cnp("p2", "kafka")
    )
    with pytest.raises(PolicyError) as info:
        Cluster.from_manifests(path)
    assert info.value.document == str(path)
    assert info.value.line == 19
    assert isinstance(info.value, CiliumpyError)


# ---------------------------------------------------------------- the DNS proxy's wire input
def _query(name_wire: bytes, qtype: int = 1) -> bytes:
    return struct.pack("!6H", 0x1234, 0x0100, 1, 0, 0, 0) + name_wire + struct.pack("!HH", qtype, 1)


STRIPE = {"api.stripe.com": (["203.0.113.7"], 60)}


def _allow_stripe(name: str) -> bool:
    return name == "api.stripe.com."


def test_dns_label_holding_dots_is_not_read_as_several_labels() -> None:
    # One 14-byte label "api.stripe.com": Go's DNS library writes it api\.stripe\.com.
    result = DNSProxy().handle(_query(b"\x0eapi.stripe.com\x00"), allow=_allow_stripe, upstream=STRIPE)
    assert result.rcode_name == "REFUSED"
    assert result.name == "api\\.stripe\\.com."
    assert result.answers == ()


def test_dns_label_with_dots_learns_nothing_into_the_fqdn_cache() -> None:
    cache = FQDNCache(ManualClock(0.0))
    proxy = DNSProxy(cache=cache, endpoint="d/a")
    proxy.handle(_query(b"\x0eapi.stripe.com\x00"), allow=lambda _n: True, upstream=STRIPE, now=0.0)
    assert not cache.entries()


def test_dns_real_name_is_still_answered() -> None:
    result = DNSProxy().handle(_query(b"\x03api\x06stripe\x03com\x00"), allow=_allow_stripe, upstream=STRIPE)
    assert (result.rcode_name, result.answers) == ("NOERROR", ("203.0.113.7",))


@pytest.mark.parametrize(
    "name_wire",
    [
        b"\x40" + b"a" * 64 + b"\x00",  # label of 64 bytes: the 0x40 type bits are reserved
        b"\x80a\x00",  # reserved label type
        (b"\x3f" + b"a" * 63) * 4 + b"\x00",  # 256 bytes on the wire
        b"\xc0\x0c",  # pointer to itself
        b"\x05ab",  # label past the end
    ],
    ids=["label-64", "label-type-0x80", "name-256", "pointer-loop", "truncated"],
)
def test_dns_malformed_name_gets_formerr_not_servfail(name_wire: bytes) -> None:
    result = DNSProxy().handle(_query(name_wire), allow=lambda _n: True, upstream=STRIPE)
    assert result.rcode_name == "FORMERR"
    assert result.response[:2] == b"\x12\x34"


def test_dns_label_bytes_outside_ascii_are_escaped_not_refused_as_malformed() -> None:
    result = DNSProxy().handle(_query(b"\x03a\xffb\x03com\x00"), allow=lambda _n: True, upstream=STRIPE)
    assert result.rcode_name == "NXDOMAIN"
    assert result.name == "a\\255b.com."


@pytest.mark.parametrize("query", ["abcdefghijklmnopqrstuvwxyz", None, 5, ["x"]])
def test_dns_query_that_is_not_bytes_is_a_type_error(query: Any) -> None:
    with pytest.raises(TypeError, match="a DNS query is bytes"):
        DNSProxy().handle(query, allow=lambda _n: True, upstream=STRIPE)


def test_dns_query_as_bytearray_is_accepted() -> None:
    result = DNSProxy().handle(bytearray(_query(b"\x03api\x06stripe\x03com\x00")), allow=_allow_stripe, upstream=STRIPE)
    assert result.rcode_name == "NOERROR"


# ---------------------------------------------------------------- what the CRD schema rejects
def _cnp_egress(egress: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "x", "namespace": "d"},
        "spec": {"endpointSelector": {}, "egress": [egress]},
    }


def _dns_rule(rule: dict[str, Any]) -> dict[str, Any]:
    return {"toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}], "rules": {"dns": [rule]}}]}


def _http_rule(rule: dict[str, Any]) -> dict[str, Any]:
    return {"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"http": [rule]}}]}


@pytest.mark.parametrize(
    ("egress", "field"),
    [
        ({"toFQDNs": [{"matchName": ""}]}, "spec.egress[0].toFQDNs[0].matchName"),
        ({"toFQDNs": [{"matchPattern": ""}]}, "spec.egress[0].toFQDNs[0].matchPattern"),
        ({"toFQDNs": [{"matchName": ".com"}]}, "spec.egress[0].toFQDNs[0].matchName"),
        ({"toFQDNs": [{}]}, "spec.egress[0].toFQDNs[0]"),
        ({"toFQDNs": [{"matchName": "a.com", "matchPattern": "*.a.com"}]}, "spec.egress[0].toFQDNs[0]"),
        ({"toFQDNs": [{"matchName": "", "matchPattern": "*.a.com"}]}, "spec.egress[0].toFQDNs[0]"),
        (_dns_rule({"matchName": "a.com", "matchPattern": "*.a.com"}), "spec.egress[0].toPorts[0].rules.dns[0]"),
        (_dns_rule({}), "spec.egress[0].toPorts[0].rules.dns[0]"),
        (_dns_rule({"matchName": ""}), "spec.egress[0].toPorts[0].rules.dns[0].matchName"),
        (
            {
                "toPorts": [
                    {"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"http": [{}], "dns": [{"matchName": "a"}]}}
                ]
            },
            "spec.egress[0].toPorts[0].rules",
        ),
        (
            {"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"http": [{}], "l7proto": "r2d2"}}]},
            "spec.egress[0].toPorts[0].rules",
        ),
        ({"toCIDR": ["fe80::1%eth0/64"]}, "spec.egress[0].toCIDR[0]"),
        (
            {"toCIDRSet": [{"cidr": "fe80::/64", "except": ["fe80::1%25eth0/128"]}]},
            "spec.egress[0].toCIDRSet[0].except[0]",
        ),
        (_http_rule({"path": "/a\\C"}), "spec.egress[0].toPorts[0].rules.http[0].path"),
        (_http_rule({"method": "[\\C]"}), "spec.egress[0].toPorts[0].rules.http[0].method"),
    ],
    ids=[
        "matchName-empty",
        "matchPattern-empty",
        "matchName-leading-dot",
        "toFQDNs-empty-entry",
        "toFQDNs-both",
        "toFQDNs-empty-name-and-pattern",
        "dns-rule-both",
        "dns-rule-empty",
        "dns-rule-empty-name",
        "http-and-dns",
        "http-and-l7proto",
        "cidr-ipv6-zone",
        "except-ipv6-zone",
        "regex-backslash-C",
        "regex-backslash-C-in-class",
    ],
)
def test_policy_the_crd_schema_rejects_is_rejected(egress: dict[str, Any], field: str) -> None:
    err = _load_error(_cnp_egress(egress))
    assert err.field == field


def test_escaped_backslash_before_c_is_a_valid_regex() -> None:
    (cnp,) = load_objects([_cnp_egress(_http_rule({"path": "/a\\\\C"}))])
    assert cnp.name == "x"


def test_k8s_ipblock_with_ipv6_zone_is_rejected() -> None:
    netpol = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "x", "namespace": "d"},
        "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "fe80::%eth0/64"}}]}]},
    }
    err = _load_error(netpol)
    assert err.field == "spec.egress[0].to[0].ipBlock.cidr"


# ---------------------------------------------------------------- the façade's arguments
@pytest.fixture
def small() -> Iterator[Cluster]:
    """Argument checks run before any backend: the simulator is enough."""
    with Cluster(backend="simulator") as c:
        c.add_endpoint("d/a", labels={"app": "a"}, ips=["10.1.0.1"])
        yield c


@pytest.fixture
def small_on_each_backend(ciliumpy_backend: str) -> Iterator[Cluster]:
    with Cluster(backend=ciliumpy_backend) as c:
        c.add_endpoint("d/a", labels={"app": "a"}, ips=["10.1.0.1"])
        yield c


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ips": ["10.0.0.256"]}, "ips[0]"),
        ({"ips": ["fe80::1%eth0"]}, "ips[0]"),
        ({"ips": ["10.1.0.7", "10.1.0.7"]}, "ips[1]"),
        ({"ips": ["10.1.0.7", "10.1.0.8"]}, "ips"),
        ({"ips": ["10.0.0.1"]}, "ips[0]"),  # the host's address
        ({"ips": ["198.51.100.254"]}, "ips[0]"),  # the address "world" checks come from
        ({"labels": {"a b": "c"}}, "labels.a b"),
        ({"labels": {"app": "x" * 64}}, "labels.app"),
        ({"labels": {"app": "-x"}}, "labels.app"),
        ({"labels": {"Example.com/app": "x"}}, "labels.Example.com/app"),
        ({"labels": {"app": 5}}, "labels.app"),
        ({"ports": [("http", 70000, "TCP")]}, "ports[0]"),
        ({"ports": [("http", 80, "ICMP")]}, "ports[0]"),
        ({"service_account": "Admin_1"}, "service_account"),
    ],
)
def test_add_endpoint_rejects_what_the_api_server_would(small: Cluster, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as info:
        small.add_endpoint("d/b", **kwargs)
    assert info.value.field == field
    assert "d/b" not in small.endpoints


@pytest.mark.parametrize("ref", ["D/b", "d_x/b", "d/B", "d", "d/", "/b", "x" * 64 + "/b"])
def test_add_endpoint_rejects_a_bad_reference(small: Cluster, ref: str) -> None:
    with pytest.raises(PolicyError):
        small.add_endpoint(ref)


def test_add_endpoint_address_of_another_pod_is_rejected(small: Cluster) -> None:
    with pytest.raises(PolicyError, match="already used by d/a"):
        small.add_endpoint("d/b", ips=["10.1.0.1"])


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"ips": "10.1.0.7"}, TypeError),
        ({"ips": [7]}, TypeError),
        ({"labels": ["app"]}, PolicyError),
        ({"ports": [("http", "80", "TCP")]}, TypeError),
        ({"ports": [80]}, TypeError),
        ({"service_account": None}, TypeError),
    ],
)
def test_add_endpoint_wrong_python_type_is_a_type_error_or_policy_error(
    small: Cluster, kwargs: dict[str, Any], exc: type[Exception]
) -> None:
    with pytest.raises(exc):
        small.add_endpoint("d/b", **kwargs)


def test_add_namespace_checks_name_and_labels(small: Cluster) -> None:
    with pytest.raises(PolicyError):
        small.add_namespace("Prod")
    with pytest.raises(PolicyError):
        small.add_namespace("prod", {"team": "a b"})
    with pytest.raises(TypeError):
        small.add_namespace(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "exc"),
    [
        (("d/a", "world", 300, "ICMP"), PolicyError),
        (("d/a", "world", -1, "ICMP"), PolicyError),
        (("d/a", "world", "x", "ICMP"), PolicyError),
        (("d/a", "world", 65536, "TCP"), PolicyError),
        (("d/a", "world", "x", "TCP"), PolicyError),
        (("d/a", "abc", 80, "TCP"), CiliumpyError),
        (("abc", "d/a", 80, "TCP"), CiliumpyError),
        (("d/a", None, 80, "TCP"), TypeError),
        (("d/a", "world", 80.5, "TCP"), TypeError),
        (("d/a", "world", 80, 6), TypeError),
    ],
)
def test_check_rejects_bad_arguments_before_the_backend(
    small: Cluster, args: tuple[Any, ...], exc: type[Exception]
) -> None:
    # An ICMP type of 300 crashed the eBPF backend with struct.error.
    with pytest.raises(exc):
        small.check(*args)


def test_check_accepts_a_port_given_as_digits(small: Cluster) -> None:
    assert small.check("d/a", "world", "443").verdict == "FORWARDED"


@pytest.mark.parametrize("field", ["sport", "dport", "icmp_type", "icmp_code", "protocol", "tcp_flags"])
def test_packet_fields_wider_than_the_datapath_are_rejected(field: str) -> None:
    with pytest.raises(PolicyError):
        Packet("10.1.0.1", "10.1.0.2", **{field: 70000})


@pytest.fixture
def with_dns() -> Iterator[Cluster]:
    with Cluster(backend="simulator") as c:
        c.add_endpoint("kube-system/dns", labels={"k8s-app": "kube-dns"})
        c.add_endpoint("d/a", labels={"app": "a"})
        yield c


@pytest.mark.parametrize(
    "name", ["a" * 64 + ".com", "\ud800.com", "a..b", "x" * 300], ids=["label-64", "surrogate", "empty-label", "long"]
)
def test_resolving_a_name_that_cannot_be_sent_is_a_policy_error(with_dns: Cluster, name: str) -> None:
    # These raised UnicodeError from the IDNA codec while the query was built.
    with pytest.raises(PolicyError) as info:
        with_dns.resolve("d/a", name)
    assert info.value.field == "name"
    with pytest.raises(PolicyError):
        with_dns.check("d/a", name, 443)


def test_resolve_with_unknown_query_type_is_a_policy_error(with_dns: Cluster) -> None:
    with pytest.raises(PolicyError):
        with_dns.resolve("d/a", "a.com", "BOGUS")
    with pytest.raises(TypeError):
        with_dns.resolve("d/a", "a.com", 5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("records", "exc"),
    [
        ({5: ["1.2.3.4"]}, TypeError),
        ({"a.com": "1.2.3.4"}, TypeError),
        ({"a.com": ["1.2.3.400"]}, PolicyError),
        ({"a" * 64 + ".com": ["1.2.3.4"]}, PolicyError),
    ],
)
def test_add_dns_records_checks_names_and_addresses(
    with_dns: Cluster, records: dict[Any, Any], exc: type[Exception]
) -> None:
    with pytest.raises(exc):
        with_dns.add_dns_records(records)


def test_lookup_ip_and_evaluate_reject_what_is_not_an_address_or_packet(with_dns: Cluster) -> None:
    with pytest.raises(PolicyError):
        with_dns.lookup_ip("abc")
    with pytest.raises(TypeError):
        with_dns.evaluate("x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "exc"),
    [
        (("N_1",), PolicyError),
        (("n", {"a b": "c"}), PolicyError),
        (("n", None, ["1.2.3.400"]), PolicyError),
        (("n", None, ["10.0.0.1"]), PolicyError),
        (("n", None, "10.1.2.3"), TypeError),
        ((None,), TypeError),
    ],
)
def test_add_node_checks_its_arguments(small: Cluster, args: tuple[Any, ...], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        small.add_node(*args)
    assert not small.nodes


def test_reading_a_directory_whose_entries_vanish_gives_only_policy_errors() -> None:
    # /proc changes while it is walked: rglob raised FileNotFoundError for a process that
    # exited meanwhile. Whatever /proc holds here, the answer is objects or a PolicyError.
    try:
        load_objects(["/proc"], recursive=True)
    except PolicyError as exc:
        assert len(str(exc)) < MAX_MESSAGE
