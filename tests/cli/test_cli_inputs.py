"""What every command reads: -f (repeatable), -R, snapshots with other kinds, and bad input."""

from __future__ import annotations

from pathlib import Path

from cli_support import CLI

DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: w, image: w, ports: [{name: http, containerPort: 8080}]}]}
"""
DENY_ALL = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: shop}
spec: {podSelector: {}, policyTypes: [Ingress]}
"""


def test_recursive_directories_workload_refs_and_skipped_kinds(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "app" / "policies").mkdir(parents=True)
    (tmp_path / "app" / "deploy.yaml").write_text(DEPLOY)
    (tmp_path / "app" / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: shop}\n")
    (tmp_path / "app" / "policies" / "deny.yaml").write_text(DENY_ALL)
    app = str(tmp_path / "app")
    flat = cli("check", "-f", app, "shop/deploy/web", "shop/deployment/web", "http")
    assert flat.returncode == 0, flat.stderr
    assert flat.stderr == ("ciliumpy: warning: skipped objects that do not bear on network policy: ConfigMap (1)\n")
    strict = cli("check", "--strict", "-f", app, "shop/deploy/web", "shop/deployment/web", "http")
    assert strict.returncode == 2
    assert strict.stderr == (
        f"ciliumpy: error: {app}/cm.yaml:2: kind: does not bear on network policy; "
        "strict loading rejects it (got 'ConfigMap')\n"
    )
    deep = cli("check", "-R", "-f", app, "shop/deploy/web", "shop/deployment/web", "http")
    assert deep.returncode == 1
    assert deep.stdout.splitlines()[0] == "shop/deploy/web -> shop/deployment/web TCP/http: DROPPED (133 Policy denied)"
    assert "TCP/8080: DROPPED" in deep.stdout.splitlines()[1]


def test_every_problem_is_one_line_and_missing_paths_are_named(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(DEPLOY.replace("containerPort: 8080", "containerPort: 0"))
    (tmp_path / "b.yaml").write_text(DENY_ALL.replace("Ingress", "Sideways"))
    proc = cli("identity", "list", "-f", str(tmp_path))
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("ciliumpy: error: ") for line in lines)
    assert "a.yaml:8: Deployment shop/web: spec.template.spec.containers[0].ports[0]" in lines[0]
    assert "b.yaml:4: NetworkPolicy shop/deny: spec.policyTypes[0]" in lines[1]
    missing = cli("identity", "list", "-f", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert (
        missing.stderr
        == f"ciliumpy: error: {tmp_path / 'nope'}: no such file or directory (got '{tmp_path / 'nope'}')\n"
    )
