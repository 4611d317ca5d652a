"""``ciliumpy.advise``: least-privilege policies from flows, verified, and replay agrees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ciliumpy
from ciliumpy import CiliumNetworkPolicy, Cluster, advise
from ciliumpy.advisor import AdviceError, to_yaml
from ciliumpy.examples import SEED_DNS_RECORDS, SEED_FLOWS, seed_path
from ciliumpy.hubble import format_flows, replay
from ciliumpy.strategies import clusters, flows

DATA = Path(__file__).resolve().parent.parent / "data" / "hubble"


def _seed_lines() -> tuple[Cluster, list[str]]:
    c = Cluster.from_manifests(seed_path())
    c.add_dns_records(SEED_DNS_RECORDS)
    for src, dst, port, proto, http, _ in SEED_FLOWS:
        c.check(src, dst, port, proto, http=http)
    return c, format_flows(c.observe(), "json").splitlines()


def _with(cluster: Cluster, policies: list[CiliumNetworkPolicy]) -> Cluster:
    out = Cluster.from_manifests(*cluster.to_manifests(), *[p.to_manifest() for p in policies])
    out.add_dns_records({k: [str(ip) for ip in v.ips] for k, v in cluster.dns_records.items()})
    return out


def test_advice_for_the_seed_keeps_every_forwarded_flow_and_restricts_http() -> None:
    cluster, lines = _seed_lines()
    policies = advise(lines)  # endpoints built from the flows alone
    by_name = {p.name: p.to_manifest() for p in policies}
    api = by_name["advised-api"]["spec"]
    assert api["endpointSelector"] == {"matchLabels": {"app": "api-gateway", "tier": "api"}}
    http = api["ingress"][0]["toPorts"][0]["rules"]["http"]
    assert {(r["method"], r["path"]) for r in http} == {
        ("GET", "/api/products"),
        ("GET", "/api/users/42"),
        ("POST", "/api/orders"),
    }  # the denied DELETE and /api/users/admin are not advised
    backend = by_name["advised-backend"]["spec"]["egress"]
    fqdns = [r["toFQDNs"][0]["matchName"] for r in backend if "toFQDNs" in r]
    assert fqdns == ["api.stripe.com", "s3.amazonaws.com"]
    dns = [r for r in backend if r.get("toPorts", [{}])[0].get("rules", {}).get("dns")]
    assert dns and {d["matchName"] for d in dns[0]["toPorts"][0]["rules"]["dns"]} >= {"api.stripe.com"}
    # pod names never appear in selectors
    assert "pod_name" not in to_yaml(policies) and "frontend-" not in to_yaml(policies)
    # kubectl-applicable YAML that ciliumpy reads back
    docs = list(yaml.safe_load_all(to_yaml(policies)))
    assert [CiliumNetworkPolicy.from_manifest(d).name for d in docs] == [p.name for p in policies]
    # Replayed on the seed cluster plus the advice, no forwarded flow is dropped.
    report = replay(lines, cluster, _with(cluster, policies))
    assert report.counts()["newly_dropped"] == 0


def test_advice_on_a_real_sample_is_verified() -> None:
    path = DATA / "hubble-otel_basic-sample-400-l7-redirected-flows.jsonl"
    policies = advise(path)
    assert policies and all(p.namespace in ("bookinfo", "kube-system") for p in policies)
    cluster = Cluster.from_flows(path)
    report = replay(path, cluster, _with(cluster, policies))
    assert report.counts()["newly_dropped"] == 0 and report.counts()["unchanged"] > 0


def test_verification_refuses_advice_that_would_open_more(monkeypatch: pytest.MonkeyPatch) -> None:
    import ciliumpy.advisor as advisor

    _, lines = _seed_lines()
    real = advisor._rule

    def too_wide(direction: str, peer: tuple[object, ...], ports: object) -> dict[str, object]:
        rule = real(direction, peer, ports)  # type: ignore[arg-type]
        key = f"{direction}Endpoints"
        if key in rule:  # every pod of the peer's namespace instead of the peer's workload
            labels = rule[key][0]["matchLabels"]  # type: ignore[index]
            ns = {k: v for k, v in labels.items() if k == "k8s:io.kubernetes.pod.namespace"}
            rule[key] = [{"matchLabels": ns}]
        return rule

    monkeypatch.setattr(advisor, "_rule", too_wide)
    with pytest.raises(AdviceError, match="would newly allow"):
        advise(lines, Cluster.from_manifests(seed_path()))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cluster=clusters(), data=st.data())
def test_advise_then_replay_allows_exactly_the_forwarded_flows(cluster: Cluster, data: st.DataObject) -> None:
    drawn = data.draw(st.lists(flows(cluster, protocols=["TCP", "UDP"], http=False, dns=False), max_size=6))
    for f in drawn:
        cluster.check(f.src, f.dst, f.port, f.protocol)
    lines = format_flows(cluster.observe(), "json").splitlines()
    policies = advise(lines, cluster)
    report = replay(lines, cluster, _with(cluster, policies))
    assert report.counts()["newly_dropped"] == 0
    assert report.counts()["newly_allowed"] == 0


def test_cli_advise_prints_yaml(tmp_path: Path) -> None:
    _, lines = _seed_lines()
    path = tmp_path / "flows.json"
    path.write_text("\n".join(lines) + "\n")
    env = dict(os.environ, PYTHONPATH=str(Path(ciliumpy.__file__).resolve().parent.parent))
    argv = [sys.executable, "-m", "ciliumpy", "advise", str(path), "-f", str(seed_path()), "-o", "yaml"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    docs = list(yaml.safe_load_all(proc.stdout))
    assert docs and all(d["kind"] == "CiliumNetworkPolicy" for d in docs)


_EGRESS_ALLOWS_INGRESS_DENIES = """
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: default}
spec: {containers: [{name: app, image: 'registry.k8s.io/pause:3.9'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: dev}
spec: {containers: [{name: app, image: 'registry.k8s.io/pause:3.9'}]}
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: p}
spec:
  endpointSelector: {}
  ingress:
  - {}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: default}
specs:
- endpointSelector: {}
  egress:
  - toEntities: [cluster]
"""


def test_a_connection_forwarded_at_egress_but_dropped_at_ingress_is_not_advised() -> None:
    # Found by the property test above: the source's egress policy forwards (one FORWARDED
    # flow), the destination's ingress policy drops. The connection did not happen, so the
    # advice must not open it, and replaying the recording against its own policies is no drift.
    cluster = Cluster.from_manifests(*yaml.safe_load_all(_EGRESS_ALLOWS_INGRESS_DENIES))
    assert not cluster.check("default/a", "dev/a", 80).allowed
    lines = format_flows(cluster.observe(), "json").splitlines()
    assert {'"verdict":"FORWARDED"' in line for line in lines} == {True, False}
    assert advise(lines, cluster) == []
    assert replay(lines, cluster).counts()["newly_dropped"] == 0
    # a drop that is not policy's (conntrack) leaves a forwarded connection forwarded
    forwarded = next(line for line in lines if '"verdict":"FORWARDED"' in line)
    ct_drop = forwarded.replace('"verdict":"FORWARDED"', '"verdict":"DROPPED","drop_reason":163', 1)
    ct_drop = ct_drop.replace('"flow":{', '"flow":{"drop_reason_desc":"CT_MAP_INSERTION_FAILED",', 1)
    assert replay([forwarded, ct_drop], cluster).counts()["newly_dropped"] == 2
    assert [p.name for p in advise([forwarded, ct_drop], cluster)] == ["advised-a", "advised-a"]
