"""The ``ciliumpy`` console script, run as a subprocess like a newcomer would."""

from __future__ import annotations

import subprocess
import sys

from ciliumpy.cli import main


def test_demo_runs_and_shows_l3_l7_and_dns_verdicts(capsys: object) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "production/frontend          production/database" in out
    rows = {
        line.split()[0] + " " + line.split()[1] + " " + line.split()[2]: line
        for line in out.splitlines()
        if line.startswith("production/") or line.startswith("world")
    }
    assert "DROPPED" in rows["production/frontend production/database 5432/TCP"]
    assert "FORWARDED" in rows["production/frontend production/backend 8080/TCP"]
    assert "DNS lookup REFUSED" in rows["production/backend evil-site.com 443/TCP"]
    assert "FORWARDED" in rows["production/backend api.stripe.com 443/TCP"]
    assert "HTTP 403" in out and "HTTP 200" in out


def test_console_script_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "ciliumpy.cli", "demo"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "seed scenario" in proc.stdout


def test_check_exit_code_and_bpf_policy_table(capsys: object) -> None:
    assert main(["check", "-f", "examples/seed", "production/frontend", "production/database", "5432"]) == 1
    assert main(["check", "-f", "examples/seed", "production/frontend", "production/backend", "8080"]) == 0
    capsys.readouterr()  # type: ignore[attr-defined]
    assert main(["bpf-policy", "-f", "examples/seed", "production/database"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert out.splitlines()[0].split()[:3] == ["POLICY", "DIRECTION", "LABELS"]
    assert "5432/TCP" in out and "Ingress" in out


def test_bad_manifest_is_reported_with_location(tmp_path: object, capsys: object) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "bad.yaml"
    bad.write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x, namespace: a}\n"
        "spec:\n  endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports:\n      - port: '70000'\n"
    )
    assert main(["identities", "-f", str(bad)]) == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "bad.yaml:9" in err and "spec.ingress[0].toPorts[0].ports[0].port" in err
