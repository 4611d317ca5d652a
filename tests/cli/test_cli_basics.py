"""The ``ciliumpy`` command's frame: entry points, version, demo, errors, exit codes, closed pipes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cli_support import CLI, PACKAGE_ROOT, SEED

import ciliumpy


def test_version_and_python_dash_m(cli: CLI) -> None:
    proc = cli("--version")
    assert proc.returncode == 0
    assert proc.stdout == f"ciliumpy {ciliumpy.__version__}\n"


def test_demo_shows_l3_l7_and_dns_verdicts_from_any_directory(cli: CLI, tmp_path: Path) -> None:
    proc = cli("demo", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0] == "ciliumpy demo: seed scenario (15 policies, 10 pods) on the simulator backend"
    assert lines[2].split()[:6] == ["SOURCE", "DESTINATION", "PORT", "REQUEST", "VERDICT", "WHY"]
    rows = {tuple(line.split()[:3]): line for line in lines[3:] if line.startswith(("production/", "world"))}
    assert "DROPPED" in rows["production/frontend", "production/database", "5432/TCP"]
    assert "FORWARDED" in rows["production/frontend", "production/backend", "8080/TCP"]
    assert "DNS lookup REFUSED" in rows["production/backend", "evil-site.com", "443/TCP"]
    assert "FORWARDED" in rows["production/backend", "api.stripe.com", "443/TCP"]
    assert "HTTP 403" in proc.stdout and "HTTP 200" in proc.stdout


def test_closed_pipe_is_quiet() -> None:
    # ``ciliumpy demo | head -1`` as a shell runs it: the reader goes away after one line.
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    proc = subprocess.run(
        f"'{sys.executable}' -m ciliumpy demo | head -1; echo \"status=${{PIPESTATUS[0]}}\"",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.stderr == ""
    assert proc.stdout.splitlines() == [
        "ciliumpy demo: seed scenario (15 policies, 10 pods) on the simulator backend",
        "status=141",
    ]


def test_check_exit_status_says_allowed_or_denied(cli: CLI) -> None:
    denied = cli("check", "-f", SEED, "production/frontend", "production/database", "5432")
    assert denied.returncode == 1
    # The first line is the flow as asked; the explanation follows, hook by hook.
    lines = denied.stdout.splitlines()
    assert lines[0] == "production/frontend -> production/database TCP/5432: DROPPED (133 Policy denied)"
    assert lines[1].startswith("production/frontend (identity production/app=frontend,tier=web) -> production/database")
    allowed = cli("-f", SEED, "check", "production/frontend", "production/backend", "8080")
    assert allowed.returncode == 0
    assert allowed.stdout.splitlines()[0] == "production/frontend -> production/backend TCP/8080: FORWARDED"


def test_check_sends_http_grpc_and_dns(cli: CLI) -> None:
    api = ("production/frontend", "production/api-gateway", "8080")
    ok = cli("check", "-f", SEED, *api, "--http-method", "GET", "--http-path", "/api/products")
    assert ok.returncode == 0
    assert ok.stdout.splitlines()[0] == (
        "production/frontend -> production/api-gateway TCP/8080 HTTP GET /api/products: FORWARDED HTTP 200"
    )
    refused = cli("check", "-f", SEED, *api, "--http-method", "DELETE", "--http-path", "/api/orders")
    assert refused.returncode == 1 and "HTTP 403" in refused.stdout.splitlines()[0]
    grpc = ("production/frontend", "production/backend", "50051")
    assert cli("check", "-f", SEED, *grpc, "--grpc", "/mypackage.MyService/GetItems").returncode == 0
    assert cli("check", "-f", SEED, *grpc, "--grpc", "/mypackage.MyService/DeleteItem").returncode == 1
    fqdn = ("production/backend", "api.stripe.com", "443")
    assert cli("check", "-f", SEED, *fqdn, "--dns-record", "api.stripe.com=198.51.100.10").returncode == 0
    bad = cli("check", "-f", SEED, *fqdn, "--dns-record", "api.stripe.com")
    assert bad.returncode == 2
    assert bad.stderr.startswith("ciliumpy: error: ciliumpy check: Invalid value for '--dns-record'")


def test_errors_are_one_line_on_stderr_with_exit_codes(cli: CLI, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x, namespace: a}\n"
        "spec:\n  endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports:\n      - port: '70000'\n"
    )
    proc = cli("identity", "list", "-f", str(bad))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("ciliumpy: error: ")
    assert "bad.yaml:9" in proc.stderr and "spec.ingress[0].toPorts[0].ports[0].port" in proc.stderr

    unknown_pod = cli("check", "-f", SEED, "production/nope", "production/backend", "80")
    assert unknown_pod.returncode == 2 and "production/nope" in unknown_pod.stderr
    assert "Traceback" not in unknown_pod.stderr and unknown_pod.stderr.count("\n") == 1

    usage = cli("check", "production/frontend")
    assert usage.returncode == 2
    assert usage.stderr == ("ciliumpy: error: ciliumpy check: Missing argument 'DST'. (see 'ciliumpy check --help')\n")
    no_input = cli("identity", "list")
    assert no_input.returncode == 2 and "no manifests given" in no_input.stderr
    assert cli("identity", "list", "--backend", "xdp").returncode == 2
    assert cli("no-such-command").returncode == 2


def test_bpf_policy_get_and_identity_list_print_cilium_dbg_tables(cli: CLI) -> None:
    proc = cli("bpf", "policy", "get", "-f", SEED, "production/database")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split("   ")[:3] == ["POLICY", "DIRECTION", "LABELS (source:key[=value])"]
    allow = next(line for line in lines if "5432/TCP" in line)
    assert allow.split()[:3] == ["Allow", "Ingress", "k8s:app=backend"]
    # Further labels of the same identity continue on their own lines under LABELS.
    following = lines[lines.index(allow) + 1]
    assert following.startswith(" ") and following.split()[0].startswith("k8s:")

    ids = cli("identity", "list", "-f", SEED, "-o", "json")
    assert ids.returncode == 0
    import json

    listed = {item["id"]: item["labels"] for item in json.loads(ids.stdout)}
    assert listed[1] == ["reserved:host"] and listed[2] == ["reserved:world"]
    table = cli("identity", "list", "-f", SEED).stdout.splitlines()
    assert table[0].split() == ["ID", "LABELS"] and table[1].split() == ["1", "reserved:host"]
