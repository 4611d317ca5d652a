"""``ciliumpy hubble observe`` and ``ciliumpy hubble metrics serve`` run as a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from cli_support import PACKAGE_ROOT, SEED, run
from prometheus_client.parser import text_string_to_metric_families

DATA = Path(__file__).resolve().parent.parent / "data" / "hubble"
COMPACT = re.compile(
    r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d\.\d{3}: (?P<src>\S+) \((?P<sid>[^)]+)\) (?P<arrow>->|<-|<>) "
    r"(?P<dst>\S+) \((?P<did>[^)]+)\) (?P<type>.+?) (?P<verdict>[A-Z]+) \((?P<summary>.*)\)$"
)


def _compact(stdout: str) -> list[dict[str, str]]:
    lines = stdout.splitlines()
    matches = [COMPACT.match(line) for line in lines]
    assert all(matches), [line for line, m in zip(lines, matches, strict=True) if not m]
    return [m.groupdict() for m in matches if m]


def test_observe_namespace_production() -> None:
    proc = run("hubble", "observe", "-f", SEED, "--namespace", "production")
    assert proc.returncode == 0, proc.stderr
    rows = _compact(proc.stdout)
    assert len(rows) == 20  # hubble's default --last 20
    assert all("production/" in r["src"] + r["dst"] for r in rows)
    proc = run("hubble", "observe", "-f", SEED, "--namespace", "production", "--all")
    assert len(_compact(proc.stdout)) > 20


def test_observe_verdict_dropped() -> None:
    proc = run("hubble", "observe", "-f", SEED, "--verdict", "DROPPED", "--all")
    assert proc.returncode == 0, proc.stderr
    rows = _compact(proc.stdout)
    assert {r["verdict"] for r in rows} == {"DROPPED", "DENIED"}
    kinds = {r["type"] for r in rows}
    assert {"Policy denied", "policy-verdict:none EGRESS", "http-request", "dns-request proxy"} <= kinds
    assert any(r["src"].startswith("production/frontend:") and r["dst"] == "production/database:5432" for r in rows)


def test_observe_protocol_http_as_json() -> None:
    proc = run("hubble", "observe", "-f", SEED, "--protocol", "http", "-o", "json", "--all")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines and all(set(line) == {"flow", "node_name", "time"} for line in lines)
    assert all(line["flow"]["l7"]["http"] for line in lines)
    assert {line["flow"]["l7"]["type"] for line in lines} == {"REQUEST", "RESPONSE"}


def test_observe_to_pod_type_l7_as_table() -> None:
    proc = run("hubble", "observe", "-f", SEED, "--to-pod", "production/api-gateway", "--type", "l7", "-o", "table")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["TIMESTAMP", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"]
    assert len(rows) == 5 and all("production/api-gateway:8080" in r and "http-request" in r for r in rows)
    # Columns are aligned as Go's tabwriter aligns them: every row starts its DESTINATION at one offset.
    start = header.index("DESTINATION")
    assert all(r[start:].startswith("production/api-gateway:8080") for r in rows)


def test_observe_not_and_dict_output_on_a_recorded_file() -> None:
    path = DATA / "hubble-otel_basic-sample-400-udp-flows.jsonl"
    proc = run("hubble", "observe", "--input-file", str(path), "--protocol", "dns", "--not", "--type", "l7", "--all")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # every DNS record is an L7 event
    proc = run("hubble", "observe", "--input-file", str(path), "--to-port", "53", "-o", "dict", "--first", "2")
    blocks = proc.stdout.split("------------\n")
    assert len(blocks) == 2 and all("DESTINATION: " in b and ":53\n" in b for b in blocks)


def test_bad_flag_value_is_one_line_with_the_valid_values() -> None:
    proc = run("hubble", "observe", "-f", SEED, "--verdict", "FOO")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "ciliumpy: error: invalid --verdict value: FOO (valid values: FORWARDED, DROPPED, ERROR, AUDIT, "
        "REDIRECTED, TRACED, TRANSLATED)"
    ]
    proc = run("hubble", "observe", "-f", SEED, "--colour", "red")
    assert proc.returncode == 2 and "unknown flag: --colour" in proc.stderr


def test_metrics_serve_answers_a_real_scrape(tmp_path: Path) -> None:
    values = tmp_path / "values-hubble-metrics.yaml"
    values.write_text(
        "hubble:\n  enabled: true\n  metrics:\n    enabled:\n"
        + "".join(f"      - {m}\n" for m in ("dns", "drop", "tcp", "flow", "icmp", "http"))
    )
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
    args = ["-m", "ciliumpy", "hubble", "metrics", "serve", "-f", SEED, "--values", str(values)]
    args += ["--port", "0", "--address", "127.0.0.1", "--duration", "30"]
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.match(r"serving Hubble metrics on (http://127\.0\.0\.1:\d+/metrics)$", line.strip())
        assert m, (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        with urllib.request.urlopen(m.group(1), timeout=10) as resp:
            assert resp.status == 200
            text = resp.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {
        "hubble_flows_processed",
        "hubble_drop",
        "hubble_tcp_flags",
        "hubble_dns_queries",
        "hubble_dns_responses",
        "hubble_http_requests",
        "hubble_http_responses",
        "hubble_http_request_duration_seconds",
    } <= set(families)
    drops = {(s.labels["reason"], s.labels["protocol"]): s.value for s in families["hubble_drop"].samples}
    assert drops[("POLICY_DENIED", "TCP")] >= 2 and ("DROP_REASON_UNKNOWN", "HTTP") in drops
    syn = [s for s in families["hubble_tcp_flags"].samples if s.labels == {"flag": "SYN", "family": "IPv4"}]
    assert syn and syn[0].value > 0
    assert "_created" not in text  # Hubble's Go client prints none
    assert not any(s.name.endswith("_created") for f in families.values() for s in f.samples)
