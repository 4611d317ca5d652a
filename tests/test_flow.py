"""Verdicts as Hubble flows (``hubble observe -o json`` shape)."""

from __future__ import annotations

import json

from ciliumpy import Cluster
from ciliumpy._flow import hubble_json_lines


def _seed() -> Cluster:
    return Cluster.from_manifests("examples/seed")


def test_policy_denial_gives_policy_verdict_and_drop_events() -> None:
    v = _seed().check("production/frontend", "production/database", 5432)
    pv, drop = v.to_hubble()
    assert pv["verdict"] == drop["verdict"] == "DROPPED"
    assert pv["event_type"] == {"type": 5}
    assert drop["event_type"] == {"type": 1, "sub_type": 133}
    assert pv["drop_reason_desc"] == "POLICY_DENIED" and pv["traffic_direction"] == "EGRESS"
    assert pv["l4"] == {"TCP": {"source_port": v.packet.sport, "destination_port": 5432, "flags": {"SYN": True}}}
    assert pv["source"]["pod_name"] == "frontend" and pv["destination"]["namespace"] == "production"
    assert "k8s:app=frontend" in pv["source"]["labels"]
    assert pv["Summary"] == "TCP Flags: SYN"
    assert list(pv)[:4] == ["time", "verdict", "drop_reason", "IP"]  # proto declaration order
    assert pv["time"].endswith("Z")


def test_allowed_flow_names_the_policies() -> None:
    v = _seed().check("production/frontend", "production/backend", 8080)
    egress, ingress = v.to_hubble()
    assert egress["verdict"] == ingress["verdict"] == "FORWARDED"
    assert egress["egress_allowed_by"][0]["name"] == "frontend-egress-to-backend"
    assert ingress["ingress_allowed_by"][0]["name"] == "backend-allow-frontend"
    assert ingress["policy_match_type"] == 2  # L3-L4


def test_l7_denial_is_an_l7_flow_with_403() -> None:
    v = _seed().check(
        "production/frontend", "production/api-gateway", 8080, http={"method": "DELETE", "path": "/api/orders"}
    )
    flows = v.to_hubble()
    assert [f["verdict"] for f in flows] == ["FORWARDED", "REDIRECTED", "DROPPED"]
    l7 = flows[-1]
    assert l7["Type"] == "L7" and l7["event_type"] == {"type": 129}
    assert l7["l7"]["http"]["code"] == 403 and l7["l7"]["http"]["method"] == "DELETE"


def test_json_lines_wrap_flows_like_hubble_observe() -> None:
    v = _seed().check("world", "production/frontend", 8080)
    lines = hubble_json_lines(v, node_name="kind-worker")
    first = json.loads(lines[0])
    assert set(first) == {"flow", "node_name", "time"}
    assert first["flow"]["ingress_denied_by"][0]["kind"] == "CiliumClusterwideNetworkPolicy"
    assert first["flow"]["source"] == {"identity": 2, "labels": ["reserved:world"]}
