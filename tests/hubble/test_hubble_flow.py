"""The Flow model against real ``hubble observe -o json``/``jsonpb`` output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ciliumpy import Cluster
from ciliumpy.exceptions import FlowFormatError
from ciliumpy.hubble import Flow
from ciliumpy.hubble._flow import format_time, parse_time, read_records

DATA = Path(__file__).resolve().parent.parent / "data" / "hubble"
SAMPLES = sorted(DATA.glob("*.jsonl"))


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def test_the_samples_are_all_there() -> None:
    # 12 files, 1916 lines (README.md of the samples)
    assert len(SAMPLES) == 12
    assert sum(len(_lines(p)) for p in SAMPLES) == 1916


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_every_sample_line_round_trips_byte_for_byte(path: Path) -> None:
    for line in _lines(path):
        data = json.loads(line)
        flow = Flow.from_dict(data)
        out = flow.to_response() if "flow" in data else flow.to_dict()
        assert out == data
        # Same keys in the same order, so the printed line is the input line.
        assert json.dumps(out, separators=(",", ":"), ensure_ascii=False) == line


def test_fields_are_read_into_the_model() -> None:
    line = _lines(DATA / "cilium-issue-18746_policy-verdict-dropped.jsonl")[0]
    f = Flow.from_json(line)
    assert f.verdict == "DROPPED" and f.drop_reason == 133 and f.drop_reason_desc == "POLICY_DENIED"
    assert f.event_type is not None and f.event_type.type == 5
    assert f.l4 is not None and f.l4.TCP is not None and f.l4.TCP.destination_port == 8182
    assert f.l4.TCP.flags is not None and f.l4.TCP.flags.SYN and not f.l4.TCP.flags.ACK
    assert f.destination is not None and f.destination.pod_name == "pod-name-nginx-5869cc6967-trl5q"
    assert f.source is not None and f.source.labels == ("reserved:remote-node",)
    assert f.response is None  # a bare (legacy -o json) flow


def test_unknown_fields_are_kept_where_they_were() -> None:
    line = _lines(DATA / "imroc-tke-guide_cilium-observability.jsonl")[0]
    f = Flow.from_json(line)
    assert f.extra["emitter"] == {"name": "Hubble", "version": "1.19.1+gd0d0c879"}
    assert "trace_reason" in f.extra and "node_labels" in f.extra
    assert f.destination is not None and f.destination.cluster_name == "default"
    assert f.destination.workloads[0].kind == "Deployment"
    assert list(f.to_dict())[:4] == ["time", "uuid", "emitter", "verdict"]


def test_http_and_dns_records() -> None:
    http = [Flow.from_json(line) for line in _lines(DATA / "hubble-otel_basic-sample-348-http-flows.jsonl")]
    responses = [f for f in http if f.l7 is not None and f.l7.type == "RESPONSE"]
    assert len(responses) == 173 and all(f.l7 and f.l7.http and f.l7.http.code for f in responses)
    assert any(f.l7 and f.l7.latency_ns > 0 for f in responses)
    dns = [Flow.from_json(line) for line in _lines(DATA / "hubble-otel_basic-sample-330-dns-flows.jsonl")]
    assert {f.l7.dns.qtypes[0] for f in dns if f.l7 and f.l7.dns} == {"A", "AAAA"}


def test_a_bad_line_names_its_number_and_field() -> None:
    good = _lines(DATA / "hubble-otel_basic-sample-10-flows.jsonl")[0]
    bad = good.replace('"source_port":15020', '"source_port":"x"')
    with pytest.raises(FlowFormatError) as info:
        list(read_records([good, bad], document="flows.json"))
    err = info.value
    assert err.line == 2 and err.document == "flows.json"
    assert err.field == "flow.l4.TCP.source_port" and err.value == "x"
    assert str(err).startswith("flows.json:2: flow.l4.TCP.source_port: expected an integer")
    with pytest.raises(FlowFormatError, match="not JSON"):
        Flow.from_json("{nope")
    with pytest.raises(FlowFormatError, match="verdict: expected one of"):
        Flow.from_dict({"verdict": 99})


def test_times_print_as_protojson_does() -> None:
    for text in ("2021-11-10T10:41:26.095357Z", "2021-11-10T10:41:26.095Z", "2021-11-10T10:41:26Z"):
        assert format_time(parse_time(text)) == text
    assert format_time(parse_time("2021-11-10T10:41:26.5Z")) == "2021-11-10T10:41:26.500Z"
    assert abs(parse_time("2021-11-10T10:41:26.095336300Z") - 1636540886.0953363) < 1e-6
    assert parse_time("2021-11-10T11:41:26+01:00") == parse_time("2021-11-10T10:41:26Z")
    # A flow read from a file keeps its time text, nanoseconds and all.
    assert Flow.from_dict({"time": "2021-11-10T10:41:26.095336300Z"}).time == "2021-11-10T10:41:26.095336300Z"


def test_simulator_flows_are_flows_too() -> None:
    c = Cluster.from_manifests("examples/seed")
    c.check("production/frontend", "production/database", 5432)
    flows = c.observe()
    assert [(f.event_type.type if f.event_type else 0, f.verdict) for f in flows] == [(5, "DROPPED"), (1, "DROPPED")]
    for f in flows:
        again = Flow.from_json(f.to_json())
        assert again.to_dict() == f.to_dict()
    assert flows[0].egress_denied_by == ()  # default deny: no policy denied it explicitly
    assert flows[1].event_type is not None and flows[1].event_type.sub_type == 133


def test_import_ciliumpy_does_not_import_hubble() -> None:
    code = "import sys, ciliumpy; print('ciliumpy.hubble' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
