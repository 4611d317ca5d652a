"""Cilium's distillery expectations (pkg/policy/distillery_test.go), reproduced end to end.

Every case builds a cluster with subject ``foo``, a peer ``foo2`` sharing foo's labels
(so it has foo's identity) and ``bar``, applies the case's rules as CiliumNetworkPolicies,
and compares the ingress map state of ``foo`` and the verdict of every probe.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from ciliumpy import Cluster, Direction

DATA = Path(__file__).parent / "data"
MERGE = yaml.safe_load((DATA / "distillery_merge_rules.yaml").read_text())
AUTH = yaml.safe_load((DATA / "distillery_merge_l3_auth.yaml").read_text())
NS = "distillery"


def _rule_doc(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"endpointSelector": {"matchLabels": {"id": "foo"}}, **spec},
    }


def _catalogue_rule(rule: dict[str, Any]) -> dict[str, Any]:
    elem: dict[str, Any] = {}
    if rule["from"] == "foo":
        elem["fromEndpoints"] = [{"matchLabels": {"id": "foo"}}]
    if rule["ports"] != "all":
        port_rule: dict[str, Any] = {
            "ports": [{"port": p.split("/")[0], "protocol": p.split("/")[1]} for p in rule["ports"]]
        }
        if "http" in rule:
            port_rule["rules"] = {"http": rule["http"]}
        elem["toPorts"] = [port_rule]
    section = "ingress" if rule["verdict"] == "allow" else "ingressDeny"
    return {section: [elem]}


def _cluster() -> Cluster:
    c = Cluster(allow_localhost=False)
    c.add_endpoint(f"{NS}/foo", labels={"id": "foo", "color": "blue"})
    c.add_endpoint(f"{NS}/foo2", labels={"id": "foo", "color": "blue"})
    c.add_endpoint(f"{NS}/bar", labels={"id": "bar"})
    # Placeholder so ingress is always enforced, as every upstream case has.
    c.apply(_rule_doc("placeholder", {"ingress": [{}]}))
    return c


def _notation(c: Cluster, subject: str = "foo") -> dict[str, str]:
    names = {0: "ANY", c.identity_of(f"{NS}/foo").id: "foo", c.identity_of(f"{NS}/bar").id: "bar"}
    out = {}
    for key, entry in c.map_state(f"{NS}/{subject}").items():
        if key.direction != Direction.INGRESS:
            continue
        text = f"{names.get(key.identity, key.identity)} {key.port_proto_text()}"
        value = entry.describe()
        if value.startswith("redirect"):
            value = "redirect:1"
        out[text] = value
    return out


def _probe(c: Cluster, probe: dict[str, Any]) -> str:
    v = c.check(f"{NS}/{'foo2' if probe['src'] == 'foo' else 'bar'}", f"{NS}/foo", probe["dport"], probe["proto"])
    if v.verdict == "FORWARDED":
        return "A"
    if v.verdict == "REDIRECTED":
        return "R1"
    assert v.drop_reason is not None
    return f"D{v.drop_reason.value}"


@pytest.mark.parametrize("case", MERGE["cases"], ids=lambda c: f"case{c['id']}")
def test_merge_rules_case(case: dict[str, Any]) -> None:
    c = _cluster()
    c.apply(*[_rule_doc(r.lower(), _catalogue_rule(MERGE["rules"][r])) for r in case["rules"]])
    assert _notation(c) == case["entries"]
    got = [_probe(c, p) for p in MERGE["probes"]]
    assert got == case["verdicts"]


@pytest.mark.parametrize("case_id", [40, 57, 88, 137, 162, 181, 203, 239, 255])
def test_merge_rules_insertion_order_independent(case_id: int) -> None:
    case = MERGE["cases"][case_id]
    expected = None
    orders = list(itertools.permutations(case["rules"]))
    random.Random(case_id).shuffle(orders)
    for order in orders[:12]:
        c = _cluster()
        for r in order:
            c.apply(_rule_doc(r.lower(), _catalogue_rule(MERGE["rules"][r])))
        got = _notation(c)
        expected = expected or got
        assert got == expected == case["entries"]


# --------------------------------------------------------------------------------------
# Test_MergeL3: authentication entries
def _auth_rule(spec: dict[str, Any]) -> dict[str, Any]:
    elem: dict[str, Any] = {}
    src = spec.get("from")
    if src in ("foo", "bar"):
        elem["fromEndpoints"] = [{"matchLabels": {"id": src}}]
    elif src == "ANY" and "ports" not in spec:
        elem["fromEntities"] = ["all"]
    if "fromEndpoints" in spec:  # ALL / ALL_REQ: the Go API's true wildcard selector
        elem["fromEntities"] = ["all"]
    if "ports" in spec:
        elem["toPorts"] = [{"ports": [{"port": p.split("/")[0], "protocol": p.split("/")[1]} for p in spec["ports"]]}]
    if "authentication" in spec:
        elem["authentication"] = {"mode": spec["authentication"]}
    return {"ingress": [elem]}


def _auth_notation(c: Cluster) -> dict[str, str]:
    names = {0: "ANY", c.identity_of(f"{NS}/foo").id: "foo", c.identity_of(f"{NS}/bar").id: "bar"}
    kinds = {1: "spire", 2: "fail"}
    out = {}
    for key, entry in c.map_state(f"{NS}/foo").items():
        if key.direction != Direction.INGRESS:
            continue
        text = f"{names[key.identity]} {key.port_proto_text()}"
        value = entry.describe()
        if entry.auth_type:
            value += f" {kinds[entry.auth_type]}{'!' if entry.explicit_auth else '~'}"
        out[text] = value
    return out


def _expected_auth(entries: dict[str, str]) -> dict[str, str]:
    return {k: ("allow" if v.startswith("allow (derived") else v) for k, v in entries.items()}


@pytest.mark.parametrize("case", AUTH["cases"], ids=lambda c: f"auth{c['id']}")
def test_merge_l3_auth_case_all_orders(case: dict[str, Any]) -> None:
    for order in itertools.permutations(case["rules"]):
        c = _cluster()
        for i, name in enumerate(order):
            c.apply(_rule_doc(f"r{i}-{name.lower().replace('_', '-')}", _auth_rule(AUTH["rules"][name])))
        assert _auth_notation(c) == _expected_auth(case["entries"]), order


def test_auth_required_drops_until_authenticated() -> None:
    c = _cluster()
    c.apply(_rule_doc("auth", _auth_rule({"from": "bar", "authentication": "required"})))
    v = c.check(f"{NS}/bar", f"{NS}/foo", 80)
    assert not v.allowed and v.drop_reason is not None and v.drop_reason.value == 189
