"""``ciliumpy get cidrgroups``: the command registered as ``"get cidrgroups"`` in
``ciliumpy.cli.COMMANDS`` (it joins the ``get`` group), run as a user runs it and through
click's runner."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from conftest import CLI

from ciliumpy.cli import COMMANDS
from ciliumpy.cli._root import _load
from ciliumpy.cli.cidrgroups import get_cidrgroups

GROUPS = """
apiVersion: cilium.io/v2alpha1
kind: CiliumCIDRGroup
metadata: {name: office, labels: {team: net}}
spec: {externalCIDRs: [203.0.113.0/24]}
---
apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata: {name: lab}
spec: {externalCIDRs: [198.51.100.0/24, 2001:db8::/48]}
"""


def test_get_cidrgroups_is_registered_under_get() -> None:
    assert _load(COMMANDS["get cidrgroups"]) is get_cidrgroups


def test_get_cidrgroups_lists_groups_with_cidrs_labels_and_identities(tmp_path: Path) -> None:
    path = tmp_path / "groups.yaml"
    path.write_text(GROUPS)
    result = CliRunner().invoke(get_cidrgroups, ["-f", str(path), "--backend", "simulator", "-o", "json"])
    assert result.exit_code == 0, result.output
    records = {r["name"]: r for r in json.loads(result.output)}
    assert records["office"]["cidrs"] == ["203.0.113.0/24"] and records["office"]["labels"] == ["team=net"]
    assert records["lab"]["api_version"] == "cilium.io/v2" and records["lab"]["labels"] == ["<none>"]
    ids = records["lab"]["identities"]
    assert len(ids) == 2 and all(int(i) & 0xFF000000 == 0x01000000 for i in ids)  # node-local CIDR identities

    table = CliRunner().invoke(get_cidrgroups, ["-f", str(path), "--backend", "simulator"])
    lines = table.output.splitlines()
    assert lines[0].split() == ["NAME", "CIDRS", "LABELS", "IDENTITIES"]
    assert lines[1].split()[:3] == ["lab", "198.51.100.0/24", "<none>"]
    assert lines[2].split()[0] == "2001:db8::/48"  # one CIDR per line, as cilium-dbg lists labels


def test_ciliumpy_get_cidrgroups_runs_from_the_command_line(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "groups.yaml"
    path.write_text(GROUPS)
    proc = cli("get", "cidrgroups", "-f", str(path), "-o", "wide")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["NAME", "CIDRS", "LABELS", "IDENTITIES", "API", "VERSION"]
    assert [line.split()[0] for line in lines[1:] if not line.startswith(" ")] == ["lab", "office"]
    assert "cilium.io/v2alpha1" in proc.stdout
