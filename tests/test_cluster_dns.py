"""DNS and toFQDNs end to end through :class:`Cluster` (reference §1.5, §6).

Queries are real wire-format DNS messages handled by the DNS proxy inside
``Cluster.resolve``; answers are learned into the FQDN cache, become ``fqdn:`` identities in
the ipcache and reach the endpoint's map state on the backend under test.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from ciliumpy import Action, Cluster, Direction, DropReason, MapStateKey, Packet, Protocol
from ciliumpy._datapath import ID_WORLD, TCPFlags
from ciliumpy._fqdn import ManualClock
from ciliumpy._l7 import DNSQuery

SEED = pathlib.Path(__file__).resolve().parent.parent / "examples" / "seed"

BACKEND, FRONTEND = "production/backend", "production/frontend"
APP, PEER, COREDNS = "default/app", "default/peer", "kube-system/coredns"

# What the seed's upstream DNS answers (TEST-NET-2 addresses, as in the CLI demo).
SEED_DNS = {
    "api.stripe.com": ["198.51.100.10"],
    "s3.amazonaws.com": ["198.51.100.20"],
    "s3.us-east-1.amazonaws.com": ["198.51.100.21"],
    "amazonaws.com": ["198.51.100.22"],
    "evil-site.com": ["198.51.100.66"],
}

# For what the FQDN code, the DNS proxy and the L7 stage decide alone (name matching, rcodes,
# messages). What the datapath takes part in -- the redirect of port 53 to the DNS proxy,
# learned identities reaching the ipcache and map state, their expiry -- also runs on eBPF.
SIMULATOR_ONLY = pytest.mark.ciliumpy_backend("simulator")


def fqdn_labels(cluster: Cluster, ip: str) -> set[str]:
    return {str(label) for label in cluster.lookup_ip(ip).labels if label.source == "fqdn"}


# --------------------------------------------------------------------------------------------
# the seed scenario (05-dns-fqdn.yaml)


@pytest.fixture
def seed(ciliumpy_backend: str) -> Iterator[Cluster]:
    with Cluster.from_manifests(SEED, backend=ciliumpy_backend, clock=ManualClock(1000.0)) as cluster:
        cluster.add_dns_records(SEED_DNS, ttl=300)
        yield cluster


@pytest.mark.parametrize(
    ("name", "rule", "label"),
    [
        ("api.stripe.com", "matchName api.stripe.com", "fqdn:api.stripe.com"),
        ("S3.AmazonAWS.com", "matchPattern *.amazonaws.com", "fqdn:*.amazonaws.com"),
    ],
)
def test_seed_allowed_names_resolve_through_the_proxy_and_are_learned(
    seed: Cluster, name: str, rule: str, label: str
) -> None:
    ip = SEED_DNS[name.lower()][0]
    res = seed.resolve(BACKEND, name)
    assert res.rcode == "NOERROR" and res.allowed and res.learned
    assert res.answers == (ip,)
    assert res.name == name.lower() + "."
    # The query went to kube-dns on 53/UDP and was redirected to the DNS proxy.
    egress = res.verdict.egress
    assert egress is not None and egress.result.action == Action.REDIRECT and egress.result.proxy_port
    assert res.verdict.packet.dport == 53 and res.verdict.packet.protocol == Protocol.UDP
    assert res.verdict.dst.ref == COREDNS
    assert res.verdict.l7.allowed and rule in res.verdict.l7.reason
    assert fqdn_labels(seed, ip) == {label}
    assert "learned by the DNS proxy" in res.explain()


@SIMULATOR_ONLY
def test_seed_answer_is_a_real_dns_response(seed: Cluster) -> None:
    res = seed.resolve(BACKEND, "api.stripe.com")
    message = DNSRecord.parse(res.result.response)
    assert message.header.qr == 1 and message.header.rcode == RCODE.NOERROR
    assert message.header.id == res.result.id == res.verdict.packet.sport  # query id = source port
    assert str(message.q.qname) == "api.stripe.com."
    assert [(str(rr.rname), QTYPE[rr.rtype], str(rr.rdata), rr.ttl) for rr in message.rr] == [
        ("api.stripe.com.", "A", "198.51.100.10", 300)
    ]


@SIMULATOR_ONLY
@pytest.mark.parametrize(
    "name",
    [
        "evil-site.com",
        "s3.us-east-1.amazonaws.com",  # '*' spans one label only
        "amazonaws.com",  # '*.' needs a label in front
        "api.stripe.com.evil-site.com",  # matchName is exact
    ],
)
def test_seed_other_names_are_refused_by_the_proxy(seed: Cluster, name: str) -> None:
    res = seed.resolve(BACKEND, name)
    assert res.rcode == "REFUSED" and not res.allowed and not res.learned
    assert res.answers == ()
    assert DNSRecord.parse(res.result.response).header.rcode == RCODE.REFUSED
    assert res.verdict.verdict == "DROPPED"  # Hubble shows the L7 DNS request as dropped
    assert "refused" in res.reason
    assert "matchName api.stripe.com" in res.reason and "matchPattern *.amazonaws.com" in res.reason
    assert "CiliumNetworkPolicy production/backend-egress-fqdn" in res.reason
    assert len(seed.fqdn_cache) == 0


def test_seed_connection_to_a_refused_name_fails_with_the_reason(seed: Cluster) -> None:
    v = seed.check(BACKEND, "evil-site.com", 443)
    assert not v.allowed and v.verdict == "DROPPED"
    assert v.dns is not None and v.dns.rcode == "REFUSED"
    assert v.failure is not None and "evil-site.com." in v.failure and "refused" in v.failure
    text = v.explain()
    assert "REFUSED" in text and "backend-egress-fqdn" in text
    # Its address was never learned: it stays world and toFQDNs does not cover it.
    direct = seed.check(BACKEND, "198.51.100.66", 443)
    assert direct.drop_reason == DropReason.POLICY_DENIED
    assert direct.dst.identity == ID_WORLD


def test_seed_tofqdns_allows_a_connection_only_after_resolution(seed: Cluster) -> None:
    before = seed.check(BACKEND, "198.51.100.10", 443)
    assert before.verdict == "DROPPED" and before.drop_reason == DropReason.POLICY_DENIED
    assert before.dst.identity == ID_WORLD

    seed.resolve(BACKEND, "api.stripe.com")

    after = seed.check(BACKEND, "198.51.100.10", 443)
    assert after.verdict == "FORWARDED"
    assert after.dst.identity == seed.lookup_ip("198.51.100.10").id != ID_WORLD
    assert [str(o) for o in after.policies] == ["CiliumNetworkPolicy production/backend-egress-fqdn spec.egress[1]"]
    # toFQDNs is paired with 443/TCP only.
    assert seed.check(BACKEND, "198.51.100.10", 80).drop_reason == DropReason.POLICY_DENIED


@SIMULATOR_ONLY
@pytest.mark.parametrize("name", ["api.stripe.com", "s3.amazonaws.com"])
def test_seed_hostname_check_resolves_then_connects(seed: Cluster, name: str) -> None:
    v = seed.check(BACKEND, name, 443)
    assert v.verdict == "FORWARDED" and v.failure is None
    assert v.dns is not None and v.dns.learned and v.dns.answers == tuple(SEED_DNS[name])
    assert str(v.dst.ip) == SEED_DNS[name][0]
    assert v.dst.names == (name + ".",)
    assert "DNS: DNS A " + name + ".: NOERROR" in v.explain()


@SIMULATOR_ONLY
def test_seed_pod_without_dns_egress_cannot_resolve(seed: Cluster) -> None:
    res = seed.resolve(FRONTEND, "api.stripe.com")
    assert res.result is None and res.rcode == "DROPPED" and not res.allowed
    assert res.verdict.drop_reason == DropReason.POLICY_DENIED
    assert "dropped by policy (133 Policy denied)" in res.reason
    v = seed.check(FRONTEND, "api.stripe.com", 443)
    assert not v.allowed and v.failure is not None and "133" in v.failure


def test_seed_unknown_name_gets_nxdomain_and_a_denied_verdict_saying_why(seed: Cluster) -> None:
    v = seed.check(BACKEND, "nothing-here.amazonaws.com", 443)
    assert not v.allowed and v.verdict == "DROPPED"
    assert v.dns is not None and v.dns.rcode == "NXDOMAIN"
    assert v.dns.allowed  # the proxy let the query through; the server does not know the name
    assert v.dns.answers == () and not v.dns.learned
    assert (
        v.failure
        == "DNS lookup of nothing-here.amazonaws.com. failed: the DNS server answered NXDOMAIN with no address"
    )
    assert "NXDOMAIN" in v.explain()
    assert DNSRecord.parse(v.dns.result.response).header.rcode == RCODE.NXDOMAIN


# --------------------------------------------------------------------------------------------
# a small cluster for the docs' cases

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  containers:
    - name: coredns
      image: coredns
      ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        - {name: alt, containerPort: 5353, protocol: UDP}
---
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: default, labels: {app: app}}
spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata: {name: peer, namespace: default, labels: {app: peer}}
spec: {containers: [{name: c, image: busybox}]}
"""

RECORDS = {
    "cilium.io": ["203.0.113.2"],
    "www.cilium.io": ["203.0.113.1"],
    "docs.cilium.io": ["203.0.113.4"],
    "a.b.cilium.io": ["203.0.113.3"],
    "subcilium.io": ["203.0.113.5"],
    "evil.example": ["203.0.113.66"],
}
KUBE_DNS = [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns"}}]


def dns_egress(rules: Sequence[Mapping[str, str]] | None, port: str = "53") -> dict[str, Any]:
    """Egress to kube-dns on ``port``/ANY, with ``rules.dns`` unless ``rules`` is None."""
    port_rule: dict[str, Any] = {"ports": [{"port": port, "protocol": "ANY"}]}
    if rules is not None:
        port_rule["rules"] = {"dns": [dict(r) for r in rules]}
    return {"toEndpoints": KUBE_DNS, "toPorts": [port_rule]}


def fqdn_egress(*selectors: Mapping[str, str], port: str = "443") -> dict[str, Any]:
    return {"toFQDNs": [dict(s) for s in selectors], "toPorts": [{"ports": [{"port": port, "protocol": "TCP"}]}]}


def egress_policy(name: str, app: str, *rules: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"endpointSelector": {"matchLabels": {"app": app}}, "egress": [dict(r) for r in rules]},
    }


ALL_NAMES = {"matchPattern": "*"}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(0.0)


@pytest.fixture
def cluster(ciliumpy_backend: str, clock: ManualClock) -> Iterator[Cluster]:
    """Replaces the plugin's ``cluster``: kube-dns, app and peer, on ``clock``, with RECORDS."""
    with Cluster.from_manifests(PODS, backend=ciliumpy_backend, clock=clock) as c:
        c.add_dns_records(RECORDS, ttl=30)
        yield c


def connect(cluster: Cluster, name: str, src: str = APP, port: int = 443) -> str:
    """Resolve ``name`` from ``src`` and connect to its first answer; the Hubble verdict."""
    return cluster.check(src, name, port).verdict


# -- which names the proxy lets through (rules.dns) ------------------------------------------


@SIMULATOR_ONLY
@pytest.mark.parametrize(
    ("rule", "allowed"),
    [
        ({"matchName": "cilium.io"}, {"cilium.io"}),
        ({"matchName": "CILIUM.io."}, {"cilium.io"}),  # case and trailing dot do not matter
        ({"matchPattern": "*.cilium.io"}, {"www.cilium.io", "docs.cilium.io"}),
        ({"matchPattern": "*cilium.io"}, {"cilium.io", "subcilium.io"}),
        ({"matchPattern": "**.cilium.io"}, {"www.cilium.io", "docs.cilium.io", "a.b.cilium.io"}),  # 1.19
        ({"matchPattern": "*"}, set(RECORDS)),
    ],
    ids=lambda x: next(iter(x.values())) if isinstance(x, dict) else None,
)
def test_dns_rules_decide_which_names_may_be_queried(cluster: Cluster, rule: dict[str, str], allowed: set[str]) -> None:
    cluster.apply(egress_policy("dns", "app", dns_egress([rule])))
    rcodes = {name: cluster.resolve(APP, name).rcode for name in RECORDS}
    assert rcodes == {name: "NOERROR" if name in allowed else "REFUSED" for name in RECORDS}


# -- which resolved addresses may be contacted (toFQDNs) ---------------------------------------


@SIMULATOR_ONLY
@pytest.mark.parametrize(
    ("selector", "reachable"),
    [
        ({"matchName": "cilium.io"}, {"cilium.io"}),
        ({"matchPattern": "*.cilium.io"}, {"www.cilium.io", "docs.cilium.io"}),
        ({"matchPattern": "**.cilium.io"}, {"www.cilium.io", "docs.cilium.io", "a.b.cilium.io"}),
        ({"matchPattern": "*"}, set(RECORDS)),
    ],
    ids=lambda x: next(iter(x.values())) if isinstance(x, dict) else None,
)
def test_tofqdns_selects_resolved_addresses_by_name(
    cluster: Cluster, selector: dict[str, str], reachable: set[str]
) -> None:
    # matchPattern '*' in the DNS rules lets every query through; toFQDNs alone restricts.
    cluster.apply(egress_policy("fqdn", "app", dns_egress([ALL_NAMES]), fqdn_egress(selector)))
    verdicts = {name: cluster.check(APP, name, 443) for name in RECORDS}
    assert all(v.dns is not None and v.dns.rcode == "NOERROR" and v.dns.learned for v in verdicts.values())
    assert {n for n, v in verdicts.items() if v.allowed} == reachable
    for name, v in verdicts.items():
        if name not in reachable:
            assert v.drop_reason == DropReason.POLICY_DENIED and v.dst.identity == ID_WORLD
            assert v.failure is None  # the lookup worked; the connection was dropped


@SIMULATOR_ONLY
def test_dns_wildcard_answers_everything_but_only_tofqdns_names_are_reachable(cluster: Cluster) -> None:
    cluster.apply(egress_policy("fqdn", "app", dns_egress([ALL_NAMES]), fqdn_egress({"matchPattern": "*.cilium.io"})))
    evil = cluster.resolve(APP, "evil.example")
    assert evil.rcode == "NOERROR" and evil.answers == ("203.0.113.66",)
    assert cluster.lookup_ip("203.0.113.66").id == ID_WORLD  # no selector wants it
    assert cluster.check(APP, "203.0.113.66", 443).drop_reason == DropReason.POLICY_DENIED
    assert connect(cluster, "www.cilium.io") == "FORWARDED"


def test_tofqdns_with_a_port_allows_only_that_port(cluster: Cluster) -> None:
    cluster.apply(egress_policy("fqdn", "app", dns_egress([ALL_NAMES]), fqdn_egress({"matchPattern": "*.cilium.io"})))
    cluster.resolve(APP, "www.cilium.io")
    assert cluster.check(APP, "203.0.113.1", 443).verdict == "FORWARDED"
    assert cluster.check(APP, "203.0.113.1", 80).drop_reason == DropReason.POLICY_DENIED
    assert cluster.check(APP, "203.0.113.1", 443, "UDP").drop_reason == DropReason.POLICY_DENIED


# -- DNS rules apply on their port only ---------------------------------------------------------


def dns_packet(cluster: Cluster, dport: int) -> Packet:
    return Packet(
        cluster.endpoint(APP).ips[0],
        cluster.endpoint(COREDNS).ips[0],
        int(Protocol.UDP),
        sport=33000,
        dport=dport,
        tcp_flags=0,
    )


def test_dns_rules_redirect_port_53_only(cluster: Cluster) -> None:
    cluster.apply(
        egress_policy(
            "dns",
            "app",
            dns_egress([{"matchName": "www.cilium.io"}]),
            {"toEndpoints": KUBE_DNS, "toPorts": [{"ports": [{"port": "5353", "protocol": "UDP"}]}]},
            fqdn_egress({"matchPattern": "*"}),
        )
    )
    dns_id = cluster.identity_of(COREDNS).id
    entries = cluster.map_state(APP)
    for proto in (Protocol.UDP, Protocol.TCP):
        assert entries[MapStateKey(dns_id, Direction.EGRESS, int(proto), 53, 16)].proxy_port != 0
    assert entries[MapStateKey(dns_id, Direction.EGRESS, int(Protocol.UDP), 5353, 16)].proxy_port == 0

    on_53 = cluster.evaluate(dns_packet(cluster, 53), request=DNSQuery("evil.example"))
    assert on_53.redirected and not on_53.allowed and "matchName www.cilium.io" in on_53.l7.reason

    # The same query to 5353 is plainly allowed: never proxied, so nothing checks the name
    # and nothing can be learned from the answer.
    on_5353 = cluster.evaluate(dns_packet(cluster, 5353), request=DNSQuery("evil.example"))
    assert on_5353.verdict == "FORWARDED" and not on_5353.redirected and on_5353.l7 is None
    assert cluster.check(APP, COREDNS, 5354, "UDP").drop_reason == DropReason.POLICY_DENIED


# -- where nothing is learned -------------------------------------------------------------------


def test_plain_dns_allow_answers_but_learns_nothing(cluster: Cluster) -> None:
    # Cilium: without rules.dns the query is not redirected to the DNS proxy, so toFQDNs
    # never matches anything.
    cluster.apply(egress_policy("plain-dns", "app", dns_egress(None), fqdn_egress({"matchPattern": "*.cilium.io"})))
    res = cluster.resolve(APP, "www.cilium.io")
    assert res.rcode == "NOERROR" and res.answers == ("203.0.113.1",)
    assert not res.learned and not res.verdict.redirected
    assert "not learned" in res.explain()
    assert len(cluster.fqdn_cache) == 0
    assert cluster.lookup_ip("203.0.113.1").id == ID_WORLD
    v = cluster.check(APP, "www.cilium.io", 443)
    assert v.verdict == "DROPPED" and v.drop_reason == DropReason.POLICY_DENIED and v.failure is None


@SIMULATOR_ONLY
def test_plain_dns_allow_on_the_same_selector_and_port_opens_the_proxy(cluster: Cluster) -> None:
    # Reference §1.5: plain allow + DNS rules on the same selector/port merge into a
    # redirect whose rules gain matchPattern '*': every name is allowed, and learned.
    cluster.apply(
        egress_policy("narrow", "app", dns_egress([{"matchName": "www.cilium.io"}]), fqdn_egress(ALL_NAMES)),
        egress_policy("plain", "app", dns_egress(None)),
    )
    res = cluster.resolve(APP, "evil.example")
    assert res.rcode == "NOERROR" and res.learned and res.verdict.redirected
    probe = cluster.evaluate(dns_packet(cluster, 53))
    assert probe.verdict == "REDIRECTED"
    assert probe.egress is not None and probe.egress.accepts == ("*",)
    assert connect(cluster, "evil.example") == "FORWARDED"


@SIMULATOR_ONLY
def test_addresses_never_resolved_through_the_proxy_stay_world(cluster: Cluster) -> None:
    cluster.apply(egress_policy("fqdn", "app", dns_egress([ALL_NAMES]), fqdn_egress({"matchPattern": "*.cilium.io"})))
    # A hard-coded address of www.cilium.io: nobody asked the proxy, so nothing selects it.
    v = cluster.check(APP, "203.0.113.1", 443)
    assert v.drop_reason == DropReason.POLICY_DENIED and v.dst.identity == ID_WORLD
    assert v.dst.names == ()


# -- learning is node-global, and incremental ------------------------------------------------


def test_learning_is_node_global(cluster: Cluster) -> None:
    cluster.apply(
        egress_policy("resolver", "app", dns_egress([ALL_NAMES])),
        egress_policy("connector", "peer", fqdn_egress({"matchName": "www.cilium.io"})),
    )
    assert cluster.check(PEER, "203.0.113.1", 443).drop_reason == DropReason.POLICY_DENIED
    assert cluster.resolve(APP, "www.cilium.io").learned
    # peer never resolved the name (it may not even reach kube-dns) yet may connect.
    v = cluster.check(PEER, "203.0.113.1", 443)
    assert v.verdict == "FORWARDED"
    assert [o.name for o in v.policies] == ["connector"]
    assert cluster.resolve(PEER, "www.cilium.io").rcode == "DROPPED"


@SIMULATOR_ONLY
def test_selector_added_after_the_lookup_selects_already_learned_addresses(cluster: Cluster) -> None:
    cluster.apply(egress_policy("resolver", "app", dns_egress([ALL_NAMES])))
    cluster.resolve(APP, "www.cilium.io")
    assert cluster.lookup_ip("203.0.113.1").id == ID_WORLD  # learned, but no selector yet
    cluster.apply(egress_policy("connector", "peer", fqdn_egress({"matchName": "www.cilium.io"})))
    assert fqdn_labels(cluster, "203.0.113.1") == {"fqdn:www.cilium.io"}
    assert cluster.check(PEER, "203.0.113.1", 443).verdict == "FORWARDED"


def test_learning_adds_the_fqdn_identity_to_the_querying_endpoint_map_state(cluster: Cluster) -> None:
    cluster.apply(egress_policy("fqdn", "app", dns_egress([ALL_NAMES]), fqdn_egress({"matchPattern": "*.cilium.io"})))
    before = cluster.map_state(APP)

    cluster.resolve(APP, "www.cilium.io")

    ident = cluster.lookup_ip("203.0.113.1")
    assert ident.id >> 24 == 1  # a local-scope (CIDR/FQDN) identity
    assert {str(label) for label in ident.labels if label.source == "fqdn"} == {"fqdn:*.cilium.io"}
    after = cluster.map_state(APP)
    new_key = MapStateKey(ident.id, Direction.EGRESS, int(Protocol.TCP), 443, 16)
    assert set(after) - set(before) == {new_key}
    assert {k: v for k, v in after.items() if k != new_key} == before  # nothing else changed
    assert [str(o) for o in after[new_key].origins] == ["CiliumNetworkPolicy default/fqdn spec.egress[1]"]
    # The backend got the new entry: the datapath allows the connection with it.
    v = cluster.check(APP, "203.0.113.1", 443)
    assert v.verdict == "FORWARDED" and v.entry is not None and v.entry[0] == new_key


@SIMULATOR_ONLY
def test_addresses_under_the_same_selectors_share_one_identity(cluster: Cluster) -> None:
    cluster.apply(egress_policy("fqdn", "app", dns_egress([ALL_NAMES]), fqdn_egress({"matchPattern": "*.cilium.io"})))
    cluster.resolve(APP, "www.cilium.io")
    first = cluster.map_state(APP)
    cluster.resolve(APP, "docs.cilium.io")
    www, docs = cluster.lookup_ip("203.0.113.1"), cluster.lookup_ip("203.0.113.4")
    assert {str(label) for label in www.labels} == {"fqdn:*.cilium.io", "reserved:world"}
    assert docs.id == www.id
    assert cluster.map_state(APP) == first


def test_a_shared_identity_outlives_the_expiry_of_one_of_its_addresses(cluster: Cluster, clock: ManualClock) -> None:
    cluster.apply(egress_policy("fqdn", "app", dns_egress([ALL_NAMES]), fqdn_egress({"matchPattern": "*.cilium.io"})))
    cluster.add_dns_records({"www.cilium.io": ["203.0.113.1"]}, ttl=30)
    cluster.add_dns_records({"docs.cilium.io": ["203.0.113.4"]}, ttl=300)
    cluster.resolve(APP, "www.cilium.io")
    cluster.resolve(APP, "docs.cilium.io")
    shared = cluster.lookup_ip("203.0.113.4").id
    assert cluster.lookup_ip("203.0.113.1").id == shared
    clock.advance(60)  # www's entry expires, docs' does not
    assert cluster.check(APP, "203.0.113.1", 443).drop_reason == DropReason.POLICY_DENIED
    docs = cluster.check(APP, "203.0.113.4", 443)
    assert docs.verdict == "FORWARDED" and docs.dst.identity == shared
    clock.advance(300)
    assert cluster.check(APP, "203.0.113.4", 443).drop_reason == DropReason.POLICY_DENIED
    assert not [i for i in cluster.identities() if i.id >> 24]  # the local identity is released


@SIMULATOR_ONLY
def test_one_address_for_two_names_under_different_selectors(cluster: Cluster, clock: ManualClock) -> None:
    # CFP-28427's overlapping cases: an address carries the fqdn labels of every selector that
    # selects one of its names, plus the label of the nearest prefix a CIDR rule references.
    cluster.apply(
        egress_policy("www", "app", dns_egress([ALL_NAMES]), fqdn_egress({"matchName": "www.cilium.io"})),
        egress_policy(
            "docs-and-cidr",
            "peer",
            fqdn_egress({"matchName": "docs.cilium.io"}),
            {"toCIDR": ["203.0.113.0/24"], "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]},
        ),
    )
    cluster.add_dns_records({"www.cilium.io": ["203.0.113.1"]}, ttl=30)
    cluster.add_dns_records({"docs.cilium.io": ["203.0.113.1"]}, ttl=300)
    assert cluster.check(PEER, "203.0.113.1", 80).verdict == "FORWARDED"  # CIDR rule, before any lookup
    cluster.resolve(APP, "www.cilium.io")
    cluster.resolve(APP, "docs.cilium.io")

    def labels() -> set[str]:
        return {str(label) for label in cluster.lookup_ip("203.0.113.1").labels}

    assert labels() == {"fqdn:www.cilium.io", "fqdn:docs.cilium.io", "cidr:203.0.113.0/24", "reserved:world"}
    assert [cluster.check(who, "203.0.113.1", p).verdict for who in (APP, PEER) for p in (443, 80)] == [
        "FORWARDED",
        "DROPPED",
        "FORWARDED",
        "FORWARDED",
    ]
    clock.advance(60)  # www.cilium.io expires (collected by the next check); docs.cilium.io remains
    assert cluster.check(APP, "203.0.113.1", 443).drop_reason == DropReason.POLICY_DENIED
    assert labels() == {"fqdn:docs.cilium.io", "cidr:203.0.113.0/24", "reserved:world"}
    assert cluster.check(PEER, "203.0.113.1", 443).verdict == "FORWARDED"
    clock.advance(300)
    assert cluster.check(PEER, "203.0.113.1", 443).drop_reason == DropReason.POLICY_DENIED
    assert cluster.check(PEER, "203.0.113.1", 80).verdict == "FORWARDED"
    assert labels() == {"cidr:203.0.113.0/24", "reserved:world"}


# -- TTL ----------------------------------------------------------------------------------------


def test_ttl_expiry_removes_access(cluster: Cluster, clock: ManualClock) -> None:
    cluster.apply(egress_policy("fqdn", "app", dns_egress([ALL_NAMES]), fqdn_egress({"matchPattern": "*.cilium.io"})))
    res = cluster.resolve(APP, "www.cilium.io")
    assert res.result.ttl == 30
    clock.advance(29)
    assert cluster.check(APP, "203.0.113.1", 443).verdict == "FORWARDED"
    clock.advance(2)  # past lookup time + TTL
    v = cluster.check(APP, "203.0.113.1", 443)
    assert v.verdict == "DROPPED" and v.drop_reason == DropReason.POLICY_DENIED
    assert v.dst.identity == ID_WORLD
    assert not any(k.identity >> 24 for k in cluster.map_state(APP))  # the fqdn entry is gone
    # Resolving again restores access.
    assert connect(cluster, "www.cilium.io") == "FORWARDED"


@SIMULATOR_ONLY
def test_a_new_lookup_extends_the_expiry(cluster: Cluster, clock: ManualClock) -> None:
    cluster.apply(egress_policy("fqdn", "app", dns_egress([ALL_NAMES]), fqdn_egress({"matchPattern": "*.cilium.io"})))
    cluster.resolve(APP, "www.cilium.io")
    clock.advance(20)
    cluster.resolve(APP, "www.cilium.io")
    clock.advance(20)  # 40 s after the first lookup, 20 s after the second
    assert cluster.check(APP, "203.0.113.1", 443).verdict == "FORWARDED"
    clock.advance(11)
    assert cluster.check(APP, "203.0.113.1", 443).drop_reason == DropReason.POLICY_DENIED


@SIMULATOR_ONLY
def test_a_live_connection_keeps_its_address_past_the_ttl_until_it_closes(cluster: Cluster, clock: ManualClock) -> None:
    cluster.apply(egress_policy("fqdn", "app", dns_egress([ALL_NAMES]), fqdn_egress({"matchName": "www.cilium.io"})))
    cluster.resolve(APP, "www.cilium.io")
    src = cluster.endpoint(APP).ips[0]
    opening = Packet(src, "203.0.113.1", int(Protocol.TCP), sport=50000, dport=443, tcp_flags=int(TCPFlags.SYN))
    assert cluster.evaluate(opening).verdict == "FORWARDED"
    clock.advance(60)
    cluster.expire_dns()  # a DNS garbage-collection run while the connection is open
    data = attrs.evolve(opening, tcp_flags=int(TCPFlags.ACK | TCPFlags.PSH))
    assert cluster.evaluate(data).verdict == "FORWARDED"
    assert fqdn_labels(cluster, "203.0.113.1") == {"fqdn:www.cilium.io"}  # kept as a zombie
    # After the connection closes, the next garbage collection releases the address.
    cluster.evaluate(attrs.evolve(opening, tcp_flags=int(TCPFlags.FIN | TCPFlags.ACK)))
    cluster.expire_dns()
    assert cluster.lookup_ip("203.0.113.1").id == ID_WORLD
    assert cluster.check(APP, "203.0.113.1", 443).drop_reason == DropReason.POLICY_DENIED


@pytest.mark.parametrize(("min_ttl", "open_after_600s"), [(0, False), (3600, True)])
def test_dns_min_ttl_keeps_short_ttl_entries(ciliumpy_backend: str, min_ttl: int, open_after_600s: bool) -> None:
    clock = ManualClock(0.0)
    with Cluster.from_manifests(PODS, backend=ciliumpy_backend, clock=clock, dns_min_ttl=min_ttl) as cluster:
        cluster.apply(
            egress_policy("fqdn", "app", dns_egress([ALL_NAMES]), fqdn_egress({"matchName": "www.cilium.io"}))
        )
        cluster.add_dns_records({"www.cilium.io": ["203.0.113.1"]}, ttl=5)
        res = cluster.resolve(APP, "www.cilium.io")
        assert res.result.ttl == 5  # the pod still sees the server's TTL
        clock.advance(600)
        assert cluster.check(APP, "203.0.113.1", 443).allowed is open_after_600s
        clock.advance(3001)
        assert cluster.check(APP, "203.0.113.1", 443).drop_reason == DropReason.POLICY_DENIED


# -- toFQDNs with L7 rules ---------------------------------------------------------------------


@SIMULATOR_ONLY
def test_tofqdns_with_http_rules_sends_requests_to_the_egress_proxy(cluster: Cluster) -> None:
    cluster.add_dns_records({"api.github.com": ["203.0.113.20"]})
    cluster.apply(
        egress_policy(
            "github",
            "app",
            dns_egress([{"matchName": "api.github.com"}]),
            {
                "toFQDNs": [{"matchName": "api.github.com"}],
                "toPorts": [
                    {
                        "ports": [{"port": "80", "protocol": "TCP"}],
                        "rules": {"http": [{"method": "GET", "path": "/repos/.*"}]},
                    }
                ],
            },
        )
    )
    ok = cluster.check(APP, "api.github.com", 80, http={"method": "GET", "path": "/repos/cilium/cilium"})
    assert ok.verdict == "FORWARDED" and ok.http_status == 200 and ok.dns is not None and ok.dns.learned
    assert ok.egress is not None and ok.egress.result.action == Action.REDIRECT
    denied = cluster.check(APP, "api.github.com", 80, http={"method": "DELETE", "path": "/repos/cilium/cilium"})
    assert denied.http_status == 403 and denied.direction == Direction.EGRESS
    probe = cluster.check(APP, "api.github.com", 80)
    assert probe.verdict == "REDIRECTED" and probe.egress is not None
    assert probe.egress.accepts == ("GET /repos/.*",)


# -- names that do not exist ----------------------------------------------------------------------


@SIMULATOR_ONLY
def test_unknown_name_is_nxdomain_and_the_connection_is_denied(cluster: Cluster) -> None:
    cluster.apply(egress_policy("fqdn", "app", dns_egress([ALL_NAMES]), fqdn_egress(ALL_NAMES)))
    v = cluster.check(APP, "no-such-host.cilium.io", 443)
    assert not v.allowed and v.verdict == "DROPPED"
    assert v.dns is not None and v.dns.rcode == "NXDOMAIN" and v.dns.allowed
    assert v.failure is not None and "NXDOMAIN" in v.failure and "no-such-host.cilium.io." in v.failure
    assert len(cluster.fqdn_cache) == 0
