"""Reading recorded flows, mapping them onto clusters and replaying them against policy changes."""

from __future__ import annotations

import gc
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import ciliumpy
from ciliumpy import Cluster
from ciliumpy.examples import SEED_DNS_RECORDS, SEED_FLOWS, seed_path
from ciliumpy.exceptions import FlowFormatError
from ciliumpy.hubble import format_flows, read_flows, read_observations, replay

DATA = Path(__file__).resolve().parent.parent / "data" / "hubble"
TCP = DATA / "hubble-otel_basic-sample-400-tcp-flows.jsonl"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``ciliumpy ARGS...`` in a subprocess on this tree's package."""
    env = dict(os.environ, PYTHONPATH=str(Path(ciliumpy.__file__).resolve().parent.parent))
    return subprocess.run(
        [sys.executable, "-m", "ciliumpy", *args], capture_output=True, text=True, env=env, timeout=120
    )


def _recording(tmp_path: Path) -> Path:
    """The seed tour recorded as ``hubble observe -o json`` would write it."""
    c = Cluster.from_manifests(seed_path())
    c.add_dns_records(SEED_DNS_RECORDS)
    for src, dst, port, proto, http, _ in SEED_FLOWS:
        c.check(src, dst, port, proto, http=http)
    path = tmp_path / "flows.json"
    path.write_text(format_flows(c.observe(), "json"))
    return path


def _seed_copy(tmp_path: Path, edit: str, old: str, new: str) -> Path:
    out = tmp_path / "after"
    shutil.copytree(seed_path(), out)
    target = out / edit
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new))
    return out


def test_read_flows_from_gzip_file_objects_and_lines(tmp_path: Path) -> None:
    lines = TCP.read_text().splitlines()
    gz = tmp_path / "flows.json.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    assert len(read_flows(gz)) == len(read_flows(TCP)) == len(read_flows(lines)) == 400
    with TCP.open() as fh:
        assert read_flows(fh)[0] == read_flows(lines)[0]


def test_a_malformed_line_names_its_number_or_is_skipped_and_counted(tmp_path: Path) -> None:
    lines = TCP.read_text().splitlines()[:5]
    lines[2] = lines[2][:40]
    path = tmp_path / "bad.json"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FlowFormatError) as info:
        read_flows(path)
    assert info.value.line == 3 and info.value.document == str(path)
    flows = read_flows(path, errors="skip")
    assert len(flows) == 4 and flows.skipped == 1 and flows.problems[0].line == 3
    with pytest.raises(FlowFormatError, match=r":3: "):
        list(read_observations(path))
    assert len(list(read_observations(path, errors="skip"))) == 4


@pytest.mark.parametrize("sample", sorted(DATA.glob("*.jsonl")), ids=lambda p: p.stem)
def test_the_fast_decoder_reads_each_published_sample_as_the_flow_model_does(sample: Path) -> None:
    # fast path: replay's schema decoder on raw lines (file, text file, list of lines);
    # slow path: the full Flow model (read_flows), then observations from those Flow objects
    fast = list(read_observations(sample))
    slow = list(read_observations(list(read_flows(sample))))
    assert fast == slow and len(fast) == len(read_flows(sample)) > 0
    with sample.open() as text:
        assert list(read_observations(text)) == fast
    assert list(read_observations(sample.read_text().splitlines())) == fast


class _Trickle(io.BytesIO):
    """A binary file handing out at most ``size`` bytes per read: lines straddle chunks."""

    def __init__(self, data: bytes, size: int) -> None:
        super().__init__(data)
        self.size = size

    def read(self, n: int | None = -1) -> bytes:
        return super().read(self.size)

    def readinto(self, b: Any) -> int:
        with memoryview(b) as view:
            return super().readinto(view[: self.size])


def test_chunked_reading_keeps_line_numbers_across_blank_lines_crlf_and_chunk_edges() -> None:
    lines = TCP.read_bytes().splitlines()[:8]
    data = b"\r\n".join([*lines[:3], b"", b" \t", *lines[3:]])  # CRLF, no final newline
    reference = list(read_observations([line.decode() for line in data.split(b"\n")]))
    assert [o.line for o in reference] == [1, 2, 3, 6, 7, 8, 9, 10]
    for size in (1, 7, 700, 1 << 20):
        assert list(read_observations(_Trickle(data, size))) == reference
    bad = b"\r\n".join([*lines[:3], b"", b" \t", lines[3], lines[4][:40], *lines[5:]])
    with pytest.raises(FlowFormatError) as info:
        list(read_observations(_Trickle(bad, 300)))
    assert info.value.line == 7
    assert [o.line for o in read_observations(_Trickle(bad, 300), errors="skip")] == [1, 2, 3, 6, 8, 9, 10]
    # endpoints are decoded apart from their line, yet a bad one still names line and field
    wrong = data.replace(b'"labels":[', b'"labels":[7,', 1)
    with pytest.raises(FlowFormatError) as info:
        list(read_observations(io.BytesIO(wrong)))
    assert info.value.line == 1 and "$.flow.source.labels[0]" in str(info.value)


def test_the_reused_read_buffer_grows_for_long_lines_and_keeps_every_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # A buffer smaller than one line: lines straddle refills and the buffer must grow.
    from ciliumpy.hubble import _decode

    data = TCP.read_bytes()
    reference = list(read_observations(data.decode().splitlines()))
    for size in (64, 1000, 4096):
        monkeypatch.setattr(_decode, "_CHUNK", size)
        assert list(read_observations(io.BytesIO(data))) == reference
        assert list(read_observations(io.BytesIO(data.rstrip(b"\n")))) == reference


def test_observations_are_not_tracked_by_the_garbage_collector() -> None:
    # untracked records are why a million-line decode needs no collector pause
    observations = list(read_observations(TCP))
    assert observations and not any(gc.is_tracked(o) for o in observations)


def test_a_corrupt_or_truncated_gzip_recording_is_an_error_naming_it(tmp_path: Path) -> None:
    packed = gzip.compress(TCP.read_bytes())
    truncated = tmp_path / "cut.json.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    corrupt = tmp_path / "bad.json.gz"
    corrupt.write_bytes(packed[:10] + bytes(len(packed) - 10))
    for path in (truncated, corrupt):
        with pytest.raises(FlowFormatError) as info:
            list(read_observations(path))
        assert info.value.document == str(path)


def test_replaying_a_recording_against_its_own_policies_changes_nothing(tmp_path: Path) -> None:
    flows = _recording(tmp_path)
    report = replay(flows, seed_path())
    counts = report.counts()
    assert counts["newly_dropped"] == counts["newly_allowed"] == counts["unmapped"] == 0
    assert counts["unchanged"] == len(report.observations) > 50


def test_a_tightening_shows_what_it_drops_grouped_with_an_example(tmp_path: Path) -> None:
    flows = _recording(tmp_path)
    after = _seed_copy(tmp_path, "02-frontend-to-backend.yaml", '"8080"', '"8081"')
    report = replay(flows, seed_path(), after)
    dropped = report.newly_dropped
    assert dropped and all(f.observation.dst[1] == "backend" and f.observation.port == 8080 for f in dropped)
    assert report.counts()["newly_allowed"] == 0
    (group,) = report.groups
    assert group["change"] == "newly_dropped" and group["port"] == "TCP/8080"
    assert (group["source"], group["destination"]) == ("production/frontend", "production/backend")
    assert "before: FORWARDED" in group["example"] and "after:  DROPPED" in group["example"]
    assert json.loads(json.dumps(report.to_dict()))["counts"]["newly_dropped"] == len(dropped)
    assert "NEWLY DROPPED" in report.summary() and "<pre" in report._repr_html_()


def test_a_loosening_shows_what_it_newly_allows(tmp_path: Path) -> None:
    flows = _recording(tmp_path)
    # The database now accepts the frontend too.
    after = tmp_path / "after"
    shutil.copytree(seed_path(), after)
    extra = after / "99-db-from-frontend.yaml"
    extra.write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: db-from-frontend\n"
        "  namespace: production\nspec:\n  endpointSelector:\n    matchLabels:\n      app: database\n"
        "  ingress:\n    - fromEndpoints:\n        - matchLabels:\n            app: frontend\n"
        "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: frontend-to-db\n"
        "  namespace: production\nspec:\n  endpointSelector:\n    matchLabels:\n      app: frontend\n"
        "  egress:\n    - toEndpoints:\n        - matchLabels:\n            app: database\n"
    )
    report = replay(flows, seed_path(), after)
    allowed = report.newly_allowed
    assert allowed and {(f.observation.src[1], f.observation.dst[1]) for f in allowed} == {("frontend", "database")}
    assert not report.newly_dropped


def test_real_samples_map_onto_a_cluster_built_from_them() -> None:
    cluster = Cluster.from_flows(TCP)
    assert sorted(cluster.namespaces) == ["bookinfo", "jaeger", "kube-system"]
    reviews = [ref for ref in cluster.endpoints if ref.startswith("bookinfo/reviews-v2")]
    assert reviews and cluster.endpoints[reviews[0]].labels["app"] == "reviews"
    report = replay(TCP, cluster)
    counts = report.counts()
    assert counts["newly_dropped"] == 0 and counts["unchanged"] > 300
    # reserved:remote-node and other node peers are reported, never guessed
    assert counts["unmapped"] > 0 and all("matches no endpoint" in r for r in report.unmapped_reasons.values())
    http = DATA / "hubble-otel_basic-sample-348-http-flows.jsonl"
    assert replay(http, Cluster.from_flows(http)).counts()["unmapped"] == 0


def test_recorded_drops_that_the_policies_now_allow_are_drift() -> None:
    path = DATA / "cilium-docs_hubble-exporter-fieldmask.jsonl"
    report = replay(path, Cluster.from_flows(path))  # no policies: everything is allowed now
    assert report.counts() == {"newly_dropped": 0, "newly_allowed": 2, "unchanged": 0, "unmapped": 0}


def test_flows_map_by_ip_then_labels_when_pod_names_changed(tmp_path: Path) -> None:
    flows = _recording(tmp_path)
    c = Cluster.from_manifests(seed_path())
    # The frontend pod was re-created under another name (same labels and address).
    text = flows.read_text().replace('"pod_name":"frontend"', '"pod_name":"frontend-5f7d8-x2x9q"')
    renamed = tmp_path / "renamed.json"
    renamed.write_text(text)
    assert replay(renamed, c).counts()["unmapped"] == 0
    # ...and with another address too: its labels still find it.
    moved = tmp_path / "moved.json"
    moved.write_text(text.replace('"10.0.1.10"', '"10.9.9.9"'))
    assert replay(moved, c).counts()["unmapped"] == 0


def test_cli_replay_exits_1_when_anything_newly_drops(tmp_path: Path) -> None:
    flows = _recording(tmp_path)
    after = _seed_copy(tmp_path, "02-frontend-to-backend.yaml", '"8080"', '"8081"')
    proc = run("hubble", "replay", str(flows), "--before", str(seed_path()), "--after", str(after), "-o", "json")
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["groups"][0]["destination"] == "production/backend"
    proc = run("hubble", "replay", str(flows), "--before", str(seed_path()))
    assert proc.returncode == 0 and "0 newly dropped" in proc.stdout
