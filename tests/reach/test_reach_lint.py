"""ciliumpy.lint: every check, each with file:line and a one-line fix."""

from __future__ import annotations

from pathlib import Path

import ciliumpy
from ciliumpy import Cluster

DATA = Path(__file__).parents[1] / "data" / "reach" / "lint-pitfalls.yaml"
SEED = Path(__file__).parents[2] / "examples" / "seed"


def _lines(check: str) -> dict[str, tuple[int | None, str]]:
    return {f"{f.name} {f.field}": (f.line, f.fix) for f in ciliumpy.lint(DATA).by_check(check)}


def test_every_pitfall_is_found_at_its_line_with_a_fix() -> None:
    report = ciliumpy.lint(DATA)
    found = {(f.check, f.name, f.field, f.line) for f in report}
    assert found == {
        ("selects-nothing", "typo", "spec.endpointSelector", 39),
        ("never-matches", "db-in", "spec.ingress[0].fromEndpoints[0]", 48),
        ("cidr-selects-pods", "db-in", "spec.ingress[1].fromCIDR[0]", 49),
        ("redundant", "db-in", "spec.ingress[2]", 50),
        ("redundant", "db-in", "spec.ingress[3]", 52),
        ("named-port-undefined", "db-in", "spec.ingress[4].toPorts[0].ports[0].port", 55),
        ("empty-section", "web-out", "spec.ingress", 62),
        ("fqdn-without-dns-proxy", "web-out", "spec.egress[0].toFQDNs[0]", 64),
        ("match-pattern-depth", "web-out", "spec.egress[0].toFQDNs[0].matchPattern", 64),
        ("l7-port-not-exposed", "web-in", "spec.ingress[0].toPorts[0].ports[0].port", 74),
        ("shadowed-by-deny", "web-in", "spec.ingress[1]", 76),
        ("host-network-pod", "agents", "spec.podSelector", 86),
    }
    for finding in report:
        assert finding.document == str(DATA)
        assert finding.fix and "\n" not in finding.fix
        assert str(finding).startswith(f"{DATA}:{finding.line}: ")
    html = report._repr_html_()
    assert "<table>" in html and "shadowed-by-deny" in html


def test_a_cluster_is_linted_without_locations() -> None:
    cluster = Cluster.from_manifests(DATA)
    report = ciliumpy.lint(cluster)
    assert {f.check for f in report} == {f.check for f in ciliumpy.lint(DATA)}
    assert all(f.document is None and f.line is None and f.location == "<cluster>" for f in report)


def test_seed_scenario_only_has_the_deliberate_single_label_pattern() -> None:
    report = ciliumpy.lint(SEED)
    assert {f.check for f in report} == {"match-pattern-depth"}
    assert all(f.severity == "info" for f in report)


def test_dns_proxy_rule_silences_the_fqdn_warning() -> None:
    fixed = DATA.read_text().replace(
        '    - toFQDNs: [{matchPattern: "*.example.com"}]',
        '    - toFQDNs: [{matchPattern: "*.example.com"}]\n'
        "    - toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}}]\n"
        '      toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchPattern: "*"}]}}]',
    )
    report = ciliumpy.lint(fixed)
    assert not report.by_check("fqdn-without-dns-proxy")
    assert report.by_check("match-pattern-depth")
