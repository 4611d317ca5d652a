"""The operator's commands (get, validate, status, endpoint/identity/policy/bpf/fqdn, connectivity
test), run as ``python -m ciliumpy`` the way a user types them."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import attrs
import pytest
from cli_support import CLI, SEED

from ciliumpy import Cluster
from ciliumpy.cli.connectivity import SCENARIOS, TOPOLOGY, run_scenarios

# A port out of range is rejected by the agent's validation: the policy is listed invalid.
INVALID = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: broken, namespace: production}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - toPorts:
    - ports: [{port: "70000", protocol: TCP}]
      rules: {http: [{method: GET}]}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: fine, namespace: production}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress: [{fromEndpoints: [{matchLabels: {app: database}}]}]
"""


def _extra(tmp_path: Path) -> str:
    path = tmp_path / "extra.yaml"
    path.write_text(INVALID)
    return str(path)


def test_get_cnp_shows_validity_and_keeps_the_valid_ones(cli: CLI, tmp_path: Path) -> None:
    extra = _extra(tmp_path)
    proc = cli("get", "cnp", "-n", "production", "-f", SEED, "-f", extra, "-o", "wide")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:]}
    assert proc.stdout.splitlines()[0].split()[:2] == ["NAME", "VALID"]
    assert rows["broken"][1] == "False" and rows["fine"][1] == "True"
    assert rows["broken"][2] == f"{extra}:1"
    assert rows["default-deny-all"][1] == "True"
    listed = json.loads(cli("get", "ciliumnetworkpolicies", "-A", "-f", SEED, "-f", extra, "-o", "json").stdout)
    assert {r["name"] for r in listed if r["valid"] == "False"} == {"broken"}
    assert cli("get", "ccnp", "-f", SEED).stdout.split()[2:4] == ["deny-world-ingress-except-ingress-nginx", "True"]
    empty = cli("get", "netpol", "-f", SEED)
    assert empty.returncode == 0 and empty.stderr == "No resources found in default namespace.\n"


def test_get_pods_and_cilium_endpoints(cli: CLI) -> None:
    pods = cli("get", "pods", "-A", "-f", SEED).stdout.splitlines()
    assert pods[0].split() == ["NAMESPACE", "NAME", "IP", "NODE"]
    assert ["production", "backend", "10.0.1.20", "kind-worker2"] in [line.split() for line in pods]
    cep = cli("get", "cep", "-n", "production", "-f", SEED, "-o", "yaml").stdout
    assert "name: backend" in cep and "ingress_enforcement: true" in cep


def test_validate_reports_every_error_with_its_location(cli: CLI, tmp_path: Path) -> None:
    good = cli("validate", SEED)
    assert good.returncode == 0 and good.stdout.splitlines()[-1] == "15 policies: 15 valid, 0 invalid"
    extra = _extra(tmp_path)
    bad = cli("validate", SEED, extra)
    assert bad.returncode == 1
    assert f"invalid  CiliumNetworkPolicy production/broken ({extra}:1)" in bad.stdout
    assert bad.stdout.splitlines()[-1] == "17 policies: 16 valid, 1 invalid"
    assert bad.stderr.startswith(f"ciliumpy: error: {extra}:")
    assert "spec.ingress[0].toPorts[0].ports[0].port" in bad.stderr


def test_status_endpoint_identity_and_ipcache_listings(cli: CLI) -> None:
    status = dict(line.split(":", 1) for line in cli("status", "-f", SEED).stdout.splitlines() if ":" in line)
    assert status["Backend"].strip() == "simulator" and status["Endpoints"].strip() == "10/10 ready"
    assert status["Proxy Status"].strip().startswith("OK, 2 redirects active")
    endpoints = cli("endpoint", "list", "-f", SEED).stdout.splitlines()
    assert endpoints[0].split("   ")[:3] == ["ENDPOINT", "POLICY (ingress)", "POLICY (egress)"]
    assert endpoints[1].split() == ["ENFORCEMENT", "ENFORCEMENT"]
    assert endpoints[2].split()[:4] == ["100", "Enabled", "Disabled", "256"]
    ipcache = cli("bpf", "ipcache", "list", "-f", SEED).stdout.splitlines()
    assert ipcache[0].split("   ") == ["IP PREFIX/ADDRESS", "IDENTITY"]
    assert ipcache[1].split() == ["10.0.0.1/32", "identity=1", "encryptkey=0", "tunnelendpoint=0.0.0.0", "flags=<none>"]


def test_policy_get_selectors_and_fqdn_cache(cli: CLI) -> None:
    out = cli("policy", "get", "-n", "production", "-f", SEED).stdout
    rules_json, _, revision = out.rpartition("Revision: ")
    rules = json.loads(rules_json)
    assert revision == "16\n" and len(rules) == 14
    assert {"key": "io.cilium.k8s.policy.name", "value": "default-deny-all", "source": "k8s"} in [
        label for rule in rules for label in rule["labels"]
    ]
    selectors = json.loads(cli("policy", "selectors", "-f", SEED, "-o", "json").stdout)
    by_text = {s["selector"]: s for s in selectors}
    assert by_text["app=database (namespace production)"]["identities"] == ["261"]
    fqdn = cli(
        "fqdn",
        "cache",
        "list",
        "-f",
        SEED,
        "--dns-record",
        "api.stripe.com=198.51.100.10",
        "--lookup",
        "production/backend=api.stripe.com",
    ).stdout.splitlines()
    assert fqdn[0].split() == ["Endpoint", "Source", "FQDN", "TTL", "ExpirationTime", "IPs"]
    assert fqdn[1].split()[1:4] == ["lookup", "api.stripe.com.", "300"] and fqdn[1].split()[-1] == "198.51.100.10"


@pytest.mark.parametrize(
    "backend", ["simulator", pytest.param("ebpf", marks=pytest.mark.requires_ebpf)], ids=["simulator", "ebpf"]
)
def test_connectivity_test_passes_with_a_junit_report(cli: CLI, tmp_path: Path, backend: str) -> None:
    junit = tmp_path / "junit.xml"
    proc = cli("connectivity", "test", "--backend", backend, "--junit-file", str(junit))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == (
        "✅ [cilium-test] All 12 tests (54 actions) successful, 0 tests skipped, 0 scenarios skipped."
    )
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == f"connectivity test ({backend})"
    assert [c.get("name") for c in suite.iter("testcase")] == [s.name for s in SCENARIOS]
    assert suite.get("failures") == "0" and suite.get("actions") == "54"
    only = cli("connectivity", "test", "--test", "fqdn")
    assert only.stdout.splitlines()[-1].startswith("✅ [cilium-test] All 1 tests (3 actions) successful")


def test_a_wrong_expectation_is_reported_as_a_failure() -> None:
    # The scenarios' expectations decide: flip one and the run must see the mismatch.
    scenario = next(s for s in SCENARIOS if s.name == "deny-precedence")
    flipped = attrs.evolve(scenario, actions=(attrs.evolve(scenario.actions[2], allowed=True), *scenario.actions[3:]))
    with Cluster.from_manifests(TOPOLOGY) as cluster:
        results = run_scenarios(cluster, [flipped])
        assert [r.passed for r in results] == [False, True]
        assert results[0].verdict == "DROPPED"
        assert cluster.policies == []  # the scenario's policies were removed again
