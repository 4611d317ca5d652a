"""``observe`` filters combined as Hubble combines them, on real samples and the seed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ciliumpy import Cluster
from ciliumpy.hubble import Flow, FlowStore, build_filters, store_of
from ciliumpy.hubble._build import specs_of
from ciliumpy.hubble._filter import R_SOURCE, FilterError, items_from_kwargs

DATA = Path(__file__).resolve().parent.parent / "data" / "hubble"


@pytest.fixture(scope="module")
def sample_store() -> FlowStore:
    store = FlowStore(capacity=10_000)
    for path in sorted(DATA.glob("*.jsonl")):
        store.add_flows(Flow.from_json(line) for line in path.read_text().splitlines() if line.strip())
    return store


def _ns(f: Flow, side: str) -> str:
    ep = f.source if side == "src" else f.destination
    return ep.namespace if ep else ""


def _pod(f: Flow, side: str) -> str:
    ep = f.source if side == "src" else f.destination
    return ep.pod_name if ep else ""


def _labels(f: Flow, side: str) -> tuple[str, ...]:
    ep = f.source if side == "src" else f.destination
    return ep.labels if ep else ()


def _port(f: Flow, side: str) -> int | None:
    ports = f.l4.ports if f.l4 else None
    if ports is None:
        return None
    return ports.source_port if side == "src" else ports.destination_port


def _either(test: Callable[[Flow, str], bool]) -> Callable[[Flow], bool]:
    return lambda f: test(f, "src") or test(f, "dst")


def _code(f: Flow) -> int:
    return f.l7.http.code if f.l7 and f.l7.http else 0


# (filters, what Hubble shows, written out by hand from hubble's documented semantics)
CASES: list[tuple[dict[str, Any], Callable[[Flow], bool]]] = [
    ({"namespace": "kube-system"}, _either(lambda f, s: _ns(f, s) == "kube-system")),
    ({"verdict": ["DROPPED", "REDIRECTED"]}, lambda f: f.verdict in ("DROPPED", "REDIRECTED")),
    (
        {"pod": "bookinfo/reviews"},
        _either(lambda f, s: _ns(f, s) == "bookinfo" and _pod(f, s).startswith("reviews")),
    ),
    (
        {"from_pod": "bookinfo/productpage", "to_port": 9080},
        lambda f: _ns(f, "src") == "bookinfo" and _pod(f, "src").startswith("productpage") and _port(f, "dst") == 9080,
    ),
    ({"label": "k8s:app=reviews"}, _either(lambda f, s: "k8s:app=reviews" in _labels(f, s))),
    ({"to_label": "reserved:world"}, lambda f: "reserved:world" in _labels(f, "dst")),
    (
        {"label": "app in (ratings, details)"},
        _either(lambda f, s: any(lbl.split(":", 1)[-1] in ("app=ratings", "app=details") for lbl in _labels(f, s))),
    ),
    (
        {"protocol": ["udp", "http"]},
        lambda f: (f.l4 is not None and f.l4.UDP is not None) or (f.l7 is not None and f.l7.http is not None),
    ),
    (
        {"type": "trace:to-endpoint"},
        lambda f: f.event_type is not None and f.event_type.type == 4 and f.event_type.sub_type == 0,
    ),
    ({"type": ["policy-verdict", "drop"]}, lambda f: f.event_type is not None and f.event_type.type in (1, 5)),
    ({"http_status": "5+", "http_method": "get"}, lambda f: _code(f) >= 500 and f.l7 is not None),
    ({"http_path": "metrics$"}, lambda f: bool(f.l7 and f.l7.http and f.l7.http.url.endswith("/metrics"))),
    ({"not_namespace": "kube-system"}, lambda f: _ns(f, "src") != "kube-system" and _ns(f, "dst") != "kube-system"),
    (
        # Several --not flags land in the same denylist filter: excluded only when all hold.
        {"not_verdict": "FORWARDED", "not_protocol": "tcp"},
        lambda f: not (f.verdict == "FORWARDED" and f.l4 is not None and f.l4.TCP is not None),
    ),
    (
        {"namespace": "bookinfo", "verdict": "REDIRECTED"},
        lambda f: f.verdict == "REDIRECTED" and "bookinfo" in (_ns(f, "src"), _ns(f, "dst")),
    ),
    ({"identity": ["world", 6]}, _either(lambda f, s: (f.source if s == "src" else f.destination).identity in (2, 6))),  # type: ignore[union-attr]
    ({"traffic_direction": "ingress"}, lambda f: f.traffic_direction == "INGRESS"),
    (
        {"ip": "10.244.0.0/24"},
        _either(lambda f, s: (f.IP.source if s == "src" else f.IP.destination).startswith("10.244.0.")),  # type: ignore[union-attr]
    ),
    (
        {"port": 53, "protocol": "dns"},
        lambda f: f.l7 is not None and f.l7.dns is not None and 53 in (_port(f, "src"), _port(f, "dst")),
    ),
    ({"drop_reason_desc": "POLICY_DENIED"}, lambda f: f.drop_reason_desc == "POLICY_DENIED"),
    (
        {"tcp_flags": "syn,ack"},
        lambda f: bool(f.l4 and f.l4.TCP and f.l4.TCP.flags and f.l4.TCP.flags.SYN and f.l4.TCP.flags.ACK),
    ),
    (
        {"from_namespace": "bookinfo", "to_namespace": "kube-system"},
        lambda f: _ns(f, "src") == "bookinfo" and _ns(f, "dst") == "kube-system",
    ),
]


@pytest.mark.parametrize(("filters", "expected"), CASES, ids=[str(c[0]) for c in CASES])
def test_filters_select_what_hubble_selects(
    sample_store: FlowStore, filters: dict[str, Any], expected: Callable[[Flow], bool]
) -> None:
    everything = list(sample_store)
    want = [f for f in everything if expected(f)]
    got = sample_store.observe(**filters)
    assert got == want
    assert 0 < len(got) < len(everything)  # the case really filters


def test_namespace_becomes_left_and_right_pod_prefixes() -> None:
    allow, deny = build_filters(items_from_kwargs({"namespace": "production", "verdict": "DROPPED"}))
    assert [f.source_pod for f in allow] == [["production/"], []]
    assert [f.destination_pod for f in allow] == [[], ["production/"]]
    assert all(f.verdict == ["DROPPED"] for f in allow) and deny == []
    allow, _ = build_filters(items_from_kwargs({"pod": ["a", "b"], "namespace": "ns"}))
    assert [f.source_pod for f in allow] == [["ns/a", "ns/b"], []]
    allow, _ = build_filters(items_from_kwargs({"from_pod": "x/y"}))
    assert len(allow) == 1  # identical left and right collapse


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"verdict": "FOO"}, "invalid --verdict value: FOO (valid values: FORWARDED, DROPPED"),
        ({"to_pod": "a/b", "namespace": "a"}, "filters --namespace and --to-pod cannot be combined"),
        ({"protocol": "icmp7"}, 'unknown protocol: "icmp7"'),
        ({"type": "bogus"}, "unable to parse type 'bogus'"),
        ({"http_status": "6+"}, "invalid status code prefix"),
        ({"traffic_direction": "sideways"}, "invalid traffic direction"),
        ({"http_method": "GET", "type": "trace"}, "requires the event type filter to only match 'l7' events"),
        ({"first": 1, "last": 1}, "cannot be combined"),
        ({"colour": "red"}, "unknown filter 'colour'"),
    ],
)
def test_bad_filter_values_are_refused_like_hubble(filters: dict[str, Any], message: str) -> None:
    c = Cluster.from_manifests("examples/seed")
    with pytest.raises(FilterError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        c.observe(**filters)


def _seed_traffic(c: Cluster) -> None:
    c.check("production/frontend", "production/backend", 8080)
    c.check("production/frontend", "production/database", 5432)
    c.check("production/frontend", "production/api-gateway", 8080, http={"method": "GET", "path": "/api/products"})
    c.check("production/frontend", "production/api-gateway", 8080, http={"method": "DELETE", "path": "/api/orders"})
    c.check("world", "production/frontend", 8080)


def test_the_articles_four_commands_on_the_seed() -> None:
    c = Cluster.from_manifests("examples/seed")
    _seed_traffic(c)
    assert all("production" in (f.source.namespace, f.destination.namespace) for f in c.observe(namespace="production"))  # type: ignore[union-attr]
    dropped = c.observe(verdict="DROPPED")
    assert [(f.event_type.type, f.drop_reason_desc) for f in dropped if f.event_type] == [
        (5, "POLICY_DENIED"),
        (1, "POLICY_DENIED"),
        (129, ""),
        (5, "POLICY_DENY"),
        (1, "POLICY_DENY"),
    ]
    http = c.observe(protocol="http")
    assert [(f.l7.type, f.verdict, f.l7.http.code) for f in http if f.l7 and f.l7.http] == [
        ("REQUEST", "FORWARDED", 0),
        ("RESPONSE", "FORWARDED", 200),
        ("REQUEST", "DROPPED", 403),
    ]
    l7 = c.observe(to_pod="production/api", type="l7")
    assert [f.verdict for f in l7] == ["FORWARDED", "DROPPED"]  # the response travels back to frontend


def test_time_window_first_last_and_follow() -> None:
    from ciliumpy import ManualClock

    clock = ManualClock(1000.0)
    c = Cluster.from_manifests("examples/seed", clock=clock)
    c.check("production/frontend", "production/backend", 8080)
    clock.advance(60)
    c.check("production/frontend", "production/database", 5432)
    assert {f.timestamp for f in c.observe(since=1030.0)} == {1060.0}
    assert {f.timestamp for f in c.observe(until=1030.0)} == {1000.0}
    assert len(c.observe(first=2)) == 2 and c.observe(first=2) == c.observe()[:2]
    assert c.observe(last=1) == c.observe()[-1:]
    follow = c.flows(follow=True, timeout=0.05, verdict="DROPPED")
    assert len([next(follow), next(follow)]) == 2
    c.check("world", "production/frontend", 8080)
    assert next(follow).source.identity == 2  # type: ignore[union-attr]
    assert next(follow).verdict == "DROPPED"
    assert list(follow) == []  # nothing new within the timeout


def test_the_store_is_a_bounded_ring() -> None:
    c = Cluster.from_manifests("examples/seed")
    store = store_of(c, capacity=10)
    for _ in range(20):
        c.check("production/frontend", "production/database", 5432)
    flows = c.observe()
    assert len(flows) == 10 and store.seen == 40
    ports = [f.l4.TCP.source_port for f in flows if f.l4 and f.l4.TCP]
    assert ports == sorted(ports)  # the newest ten, oldest first


def test_compact_records_agree_with_the_flows_they_stand_for() -> None:
    c = Cluster.from_manifests("examples/seed")
    c.add_dns_records({"api.stripe.com": ["203.0.113.10"]})
    _seed_traffic(c)
    c.check("production/backend", "api.stripe.com", 443)
    store = store_of(c)
    records = store.select([], [])
    assert len(records) > 20
    other = FlowStore(capacity=1000)
    for record in records:
        flow = store.flow_of(record)
        again = other._record_of_flow(flow, 0)
        mine = record[:R_SOURCE]
        theirs = again[:R_SOURCE]
        # interned ids differ between stores: compare what they stand for
        assert abs(mine[0] - theirs[0]) < 1e-6
        assert mine[1:5] == theirs[1:5]
        assert store.endpoints[mine[5]] == other.endpoints[theirs[5]]
        assert store.endpoints[mine[6]] == other.endpoints[theirs[6]]
        assert store.ips[mine[7]] == other.ips[theirs[7]] and store.ips[mine[8]] == other.ips[theirs[8]]
        assert mine[9:12] == theirs[9:12]
        assert store.l7[mine[12]] == other.l7[theirs[12]]
        assert store.names[mine[13]] == other.names[theirs[13]]
        assert store.names[mine[14]] == other.names[theirs[14]]
        assert mine[15:] == theirs[15:]
    assert c.observe(to_fqdn="*.stripe.com")  # FQDN peers carry destination_names
    assert all("api.stripe.com" in f.destination_names for f in c.observe(to_fqdn="api.stripe.com"))


def test_flows_are_built_once_per_event_kind() -> None:
    c = Cluster.from_manifests("examples/seed")
    v = c.check("production/frontend", "production/backend", 8080)
    kinds = [(s.event_type, s.sub_type, s.traffic) for s in specs_of(v)]
    assert kinds == [(5, 0, 2), (5, 0, 1), (4, 0, 1)]  # egress verdict, ingress verdict, to-endpoint


def test_fast_decoding_gives_the_records_of_the_specs() -> None:
    from ciliumpy import Packet

    c = Cluster.from_manifests("examples/seed")
    c.add_dns_records({"api.stripe.com": ["203.0.113.10"]})
    verdicts = [
        c.check("production/frontend", "production/backend", 8080),
        c.check("production/frontend", "production/database", 5432),
        c.check("world", "production/frontend", 8080),
        c.check("production/frontend", "production/api-gateway", 8080),  # redirected, no request
        c.check("production/frontend", "production/backend", 0, "ICMP"),
        c.check("production/backend", "api.stripe.com", 443),
        c.check("production/backend", "198.51.100.66", 443),
        c.check("production/frontend", "production/backend", 9999, "UDP"),
    ]
    v = verdicts[0]
    reply = Packet(v.packet.dst, v.packet.src, 6, sport=8080, dport=v.packet.sport, tcp_flags=0x12)
    c.evaluate(v.packet)
    verdicts.append(c.evaluate(reply))  # a reply: trace flows only, source and destination swapped
    fast, slow = FlowStore(capacity=100), FlowStore(capacity=100)
    for v in verdicts:
        fast._verdict_records(v)
        for i, spec in enumerate(specs_of(v)):
            slow._append(slow._record_of_spec(spec, v, i))
    assert len(fast.records) == len(slow.records) > 15
    for a, b in zip(fast.records, slow.records, strict=True):
        assert a[:5] == b[:5] and a[9:12] == b[9:12] and a[15:] == b[15:]
        assert fast.endpoints[a[5]] == slow.endpoints[b[5]] and fast.endpoints[a[6]] == slow.endpoints[b[6]]
        assert fast.ips[a[7]] == slow.ips[b[7]] and fast.ips[a[8]] == slow.ips[b[8]]
        assert fast.names[a[13]] == slow.names[b[13]] and fast.names[a[14]] == slow.names[b[14]]
    assert any(r[17] is True for r in fast.records)
