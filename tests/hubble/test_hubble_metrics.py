"""Hubble's Prometheus metrics: names, labels and values as Hubble's handlers give them."""

from __future__ import annotations

import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ciliumpy import Cluster
from ciliumpy.hubble import Metrics, MetricsError, enabled_from_helm_values, read_flows

DATA = Path(__file__).resolve().parent.parent / "data" / "hubble"


def _samples(m: Metrics, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for fam in text_string_to_metric_families(m.text()):
        for s in fam.samples:
            if s.name == family:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def _fed(enabled: list[str], *files: str) -> Metrics:
    m = Metrics(None, enabled=enabled)
    for name in files:
        for flow in read_flows(DATA / name):
            m.process(flow)
    return m


def test_http_metrics_on_the_recorded_http_sample() -> None:
    m = _fed(["http"], "hubble-otel_basic-sample-348-http-flows.jsonl")
    responses = _samples(m, "hubble_http_responses_total")
    by_status = Counter[str]()
    for labels, value in responses.items():
        by_status[dict(labels)["status"]] += int(value)
    assert by_status == {"503": 151, "200": 22}  # the sample's README
    requests = _samples(m, "hubble_http_requests_total")
    assert sum(requests.values()) == 175
    assert {dict(k)["reporter"] for k in requests} <= {"client", "server", "unknown"}
    count = _samples(m, "hubble_http_request_duration_seconds_count")
    assert sum(count.values()) == 173


def test_dns_metrics_with_query_and_ignore_aaaa() -> None:
    m = _fed(["dns"], "hubble-otel_basic-sample-330-dns-flows.jsonl")
    responses = _samples(m, "hubble_dns_responses_total")
    rcodes = Counter[str]()
    for labels, value in responses.items():
        rcodes[dict(labels)["rcode"]] += int(value)
    assert rcodes["Non-Existent Domain"] == 102 and sum(rcodes.values()) == 165
    assert sum(_samples(m, "hubble_dns_queries_total").values()) == 165
    assert all(dict(k)["rcode"] == "" for k in _samples(m, "hubble_dns_queries_total"))
    m = _fed(["dns:query;ignoreAAAA"], "hubble-otel_basic-sample-330-dns-flows.jsonl")
    queries = _samples(m, "hubble_dns_queries_total")
    assert all("query" in dict(k) and dict(k)["qtypes"] == "A" for k in queries)


def test_flow_tcp_icmp_drop_metrics() -> None:
    m = _fed(
        ["flow", "tcp", "icmp", "drop"],
        "hubble-otel_basic-sample-10-flows.jsonl",
        "hubble-otel_basic-sample-400-icmpv4-flows.jsonl",
        "cilium-docs_hubble-exporter-fieldmask.jsonl",
    )
    flows = _samples(m, "hubble_flows_processed_total")
    assert flows[(("protocol", "TCP"), ("subtype", "to-stack"), ("type", "Trace"), ("verdict", "FORWARDED"))] == 5
    tcp = _samples(m, "hubble_tcp_flags_total")
    assert tcp[(("family", "IPv4"), ("flag", "SYN"))] == 1 and tcp[(("family", "IPv4"), ("flag", "SYN-ACK"))] == 1
    assert tcp[(("family", "IPv4"), ("flag", "FIN"))] == 2
    icmp = _samples(m, "hubble_icmp_total")
    assert icmp[(("family", "IPv4"), ("type", "EchoRequest"))] + icmp[(("family", "IPv4"), ("type", "EchoReply"))] == 18
    # Hubble's handler labels ICMPv6 with family IPv4 too (icmp/handler.go); kept so dashboards match.
    assert icmp[(("family", "IPv4"), ("type", "RouterSolicitation"))] == 1
    drops = _samples(m, "hubble_drop_total")
    assert drops == {
        (("protocol", "Unknown flow"), ("reason", "INVALID_SOURCE_IP")): 1,
        (("protocol", "Unknown flow"), ("reason", "POLICY_DENIED")): 1,
    }  # field-masked flows carry no event type, so FlowProtocol cannot name their protocol


def test_context_options_add_hubble_labels() -> None:
    m = _fed(
        ["drop:sourceContext=namespace|reserved-identity;destinationContext=pod;labelsContext=traffic_direction"],
        "cilium-issue-18746_policy-verdict-dropped.jsonl",
    )
    ((labels, value),) = _samples(m, "hubble_drop_total").items()
    assert dict(labels) == {
        "traffic_direction": "ingress",
        "source": "reserved:remote-node",
        "destination": "namespace-name/pod-name-nginx-5869cc6967-trl5q",
        "reason": "POLICY_DENIED",
        "protocol": "TCP",
    }
    assert value == 1
    with pytest.raises(MetricsError, match="unknown context 'pods'"):
        Metrics(None, enabled=["flow:sourceContext=pods"])
    with pytest.raises(MetricsError, match="invalid labelsContext value: source_colour"):
        Metrics(None, enabled=["flow:labelsContext=source_colour"])
    with pytest.raises(MetricsError, match="metric 'latency' does not exist"):
        Metrics(None, enabled=["latency"])


def test_cluster_metrics_count_checks_and_serve_them(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("hubble:\n  metrics:\n    enabled: ['drop', 'flow:sourceContext=pod', 'policy']\n")
    assert enabled_from_helm_values(values) == ["drop", "flow:sourceContext=pod", "policy"]
    c = Cluster.from_manifests("examples/seed")
    c.check("production/frontend", "production/database", 5432)  # before: counted from the store
    m = Metrics.from_helm_values(c, values)
    c.check("world", "production/frontend", 8080)
    server = m.serve(port=0, addr="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
    finally:
        m.close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    drops = {s.labels["reason"]: s.value for s in families["hubble_drop"].samples}
    assert drops == {"POLICY_DENIED": 2, "POLICY_DENY": 2}
    sources = {s.labels["source"] for s in families["hubble_flows_processed"].samples}
    assert sources == {"production/frontend", ""}  # world has no pod
    verdicts = {
        (s.labels["direction"], s.labels["match"], s.labels["action"])
        for s in families["hubble_policy_verdicts"].samples
    }
    assert verdicts == {("egress", "none", "dropped"), ("ingress", "l3-only", "dropped")}
