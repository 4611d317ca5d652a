"""WireGuard transparent encryption: Helm values, keys and peers, transit of packets, status."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ciliumpy
from ciliumpy import Cluster
from ciliumpy._values import load_values
from ciliumpy.encryption import LISTEN_PORT, PUBKEY_ANNOTATION, KeyPair, WireGuard, encrypt_status, wireguard
from ciliumpy.encryption._transit import node_selector_matches
from ciliumpy.exceptions import PolicyError, UnknownEndpointError

SEED = Path(ciliumpy.__file__).resolve().parent / "examples" / "seed"
SEED_VALUES = SEED / "helm" / "values.yaml"
WG = {"encryption": {"enabled": True, "type": "wireguard"}}


def _cluster(values: object = WG, control_plane_b: bool = False) -> Cluster:
    c = Cluster(values=values)
    c.add_node("a", ips=["192.168.0.11"])
    labels = {"node-role.kubernetes.io/control-plane": ""} if control_plane_b else {}
    c.add_node("b", labels=labels, ips=["192.168.0.12"])
    c.add_node("c", ips=["192.168.0.13"])
    c.add_endpoint("prod/web", labels={"app": "web"}, ips=["10.244.1.5"], node="a")
    c.add_endpoint("prod/web2", labels={"app": "web"}, ips=["10.244.1.6"], node="a")
    c.add_endpoint("prod/db", labels={"app": "db"}, ips=["10.244.2.5", "fd00::2:5"], node="b")
    return c


# ---------------------------------------------------------------- Helm values
def test_values_defaults_are_the_charts():
    v = load_values({})
    assert not v.encryption.enabled and v.encryption.type == "ipsec" and not v.encryption.wireguard
    assert v.hubble.enabled and v.hubble.metrics_enabled == ()
    assert v.policy_enforcement_mode == "default" and not v.policy_audit_mode and not v.kube_proxy_replacement


def test_values_file_keys_that_matter_are_read_and_the_rest_listed_once():
    v = load_values(SEED_VALUES)
    assert v.encryption.wireguard and v.encryption.node_encryption
    assert v.kube_proxy_replacement is True
    assert v.source == str(SEED_VALUES)
    assert "k8sServiceHost" in v.ignored and "hubble.relay.enabled" in v.ignored
    assert "encryption.enabled" not in v.ignored
    assert len(v.ignored) == len(set(v.ignored))


def test_hubble_metrics_list_is_read_from_the_article_values():
    v = load_values(SEED / "helm" / "values-hubble-metrics.yaml")
    assert v.hubble.metrics_enabled == ("dns", "drop", "tcp", "flow", "icmp", "http")


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"encryption": {"enabled": "true"}}, "encryption.enabled"),
        ({"encryption": {"type": "aes"}}, "encryption.type"),
        ({"encryption": {"nodeEncryption": 1}}, "encryption.nodeEncryption"),
        ({"encryption": "on"}, "encryption"),
        ({"hubble": {"metrics": {"enabled": "dns,drop"}}}, "hubble.metrics.enabled"),
        ({"policyEnforcementMode": "strict"}, "policyEnforcementMode"),
        ({"policyAuditMode": "no"}, "policyAuditMode"),
        ({"kubeProxyReplacement": 3}, "kubeProxyReplacement"),
    ],
)
def test_a_known_key_with_a_wrong_value_is_an_error_naming_the_key(values, field):
    with pytest.raises(PolicyError) as err:
        load_values(values)
    assert err.value.field == field
    assert field in str(err.value)


def test_kube_proxy_replacement_accepts_the_charts_string_forms():
    assert load_values({"kubeProxyReplacement": "true"}).kube_proxy_replacement
    assert load_values({"kubeProxyReplacement": "strict"}).kube_proxy_replacement
    assert not load_values({"kubeProxyReplacement": "disabled"}).kube_proxy_replacement


def test_values_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "values.yaml"
    bad.write_text("encryption:\n  enabled: [\n")
    with pytest.raises(PolicyError) as err:
        load_values(bad)
    assert str(bad) in str(err.value) and err.value.line is not None
    with pytest.raises(PolicyError, match="no such file or directory"):
        load_values(tmp_path / "missing.yaml")
    bad.write_text("- a\n- b\n")
    with pytest.raises(PolicyError, match="must be a mapping"):
        load_values(bad)


def test_error_values_are_bounded():
    with pytest.raises(PolicyError) as err:
        load_values({"encryption": {"enabled": "x" * 100_000}})
    assert len(str(err.value)) < 1000


def test_policy_enforcement_mode_comes_from_values_unless_given():
    c = Cluster(values={"policyEnforcementMode": "always"})
    c.add_endpoint("prod/a", labels={"app": "a"})
    c.add_endpoint("prod/b", labels={"app": "b"})
    assert not c.check("prod/a", "prod/b", 80).allowed  # always: default deny without policies
    assert Cluster(
        values={"policyEnforcementMode": "always"}, policy_enforcement="never"
    ).config.policy_enforcement == ("never")


# ---------------------------------------------------------------- keys
def test_public_key_derivation_matches_rfc7748():
    # RFC 7748 section 6.1, Alice's key pair.
    private = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    pair = KeyPair.from_private(base64.b64encode(private).decode())
    assert pair.public.hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert pair.private_b64 not in repr(pair)


@pytest.mark.parametrize("bad", ["not base64!", base64.b64encode(b"short").decode()])
def test_bad_private_keys_are_policy_errors(bad):
    with pytest.raises(PolicyError):
        KeyPair.from_private(bad)


def test_node_keys_are_stable_for_a_cluster_and_distinct_between_nodes():
    c = _cluster()
    wg = wireguard(c)
    assert wireguard(c) is wg
    assert wg.key("a") == wg.key("a") and wg.key("a") != wg.key("b")
    assert wg.node("a").annotations == {PUBKEY_ANNOTATION: wg.key("a").public_b64}


# ---------------------------------------------------------------- peers
def test_peers_are_the_other_nodes_with_their_pod_addresses_as_allowed_ips():
    c = _cluster()
    dev = WireGuard(c).node("a")
    assert dev.interface == "cilium_wg0" and dev.listen_port == LISTEN_PORT == 51871
    peers = {p.node: p for p in dev.peers}
    assert set(peers) == {"b", "c"}
    assert [str(n) for n in peers["b"].allowed_ips] == ["10.244.2.5/32", "fd00::2:5/128"]
    assert peers["b"].endpoint == "192.168.0.12:51871"
    assert peers["c"].allowed_ips == ()  # a node without pods routes nothing through its peer


def test_node_encryption_adds_node_addresses_unless_the_node_opts_out():
    c = _cluster({"encryption": {**WG["encryption"], "nodeEncryption": True}}, control_plane_b=True)
    wg = WireGuard(c)
    peers = {p.node: p for p in wg.node("a").peers}
    assert "192.168.0.13/32" in [str(n) for n in peers["c"].allowed_ips]
    assert "192.168.0.12/32" not in [str(n) for n in peers["b"].allowed_ips]  # b is a control plane
    assert wg.node("b").node_encryption == "OptedOut" and wg.node("a").node_encryption == "Enabled"


def test_peers_follow_pods_as_they_come_and_go():
    c = _cluster()
    wg = wireguard(c)
    c.add_endpoint("prod/cache", labels={"app": "cache"}, ips=["10.244.3.9"], node="c")
    assert [str(n) for n in {p.node: p for p in wg.node("a").peers}["c"].allowed_ips] == ["10.244.3.9/32"]
    c.remove_endpoint("prod/cache")
    assert {p.node: p for p in wg.node("a").peers}["c"].allowed_ips == ()


def test_unknown_node_is_named():
    with pytest.raises(UnknownEndpointError, match="no node 'zz'"):
        WireGuard(_cluster()).node("zz")


def test_node_selector_strings_match_as_kubernetes_does():
    labels = {"node-role.kubernetes.io/control-plane": "", "zone": "a"}
    assert node_selector_matches("node-role.kubernetes.io/control-plane", labels)
    assert not node_selector_matches("node-role.kubernetes.io/control-plane", {"zone": "a"})
    assert node_selector_matches("zone=a,!gpu", labels)
    assert not node_selector_matches("zone!=a", labels)
    assert node_selector_matches("", {})  # an empty selector selects every node


# ---------------------------------------------------------------- transit
def test_pod_traffic_between_nodes_is_encrypted_and_explained():
    c = _cluster()
    v = c.check("prod/web", "prod/db", 5432)
    assert v.transit.crossed_nodes and v.transit.encrypted and v.transit.interface == "cilium_wg0"
    assert (v.transit.src_node, v.transit.dst_node) == ("a", "b")
    assert "encrypted by WireGuard (cilium_wg0)" in v.explain()
    flow = v.to_hubble()
    flows = flow if isinstance(flow, list) else [flow]
    assert all(f["IP"].get("encrypted") is True for f in flows)
    stored = [f.to_dict() for f in c.observe(from_pod="prod/web", to_pod="prod/db")]
    assert stored and all(f["IP"]["encrypted"] is True for f in stored)  # hubble observe -o json


def test_same_node_traffic_is_never_encrypted():
    c = _cluster()
    v = c.check("prod/web", "prod/web2", 80)
    assert not v.transit.crossed_nodes and not v.transit.encrypted
    assert "same node" in v.transit.reason
    flows = v.to_hubble()
    assert all("encrypted" not in f["IP"] for f in (flows if isinstance(flows, list) else [flows]))
    assert all("encrypted" not in f.to_dict()["IP"] for f in c.observe(to_pod="prod/web2"))


def test_without_wireguard_crossing_traffic_is_plain():
    v = _cluster(values={}).check("prod/web", "prod/db", 5432)
    assert v.transit.crossed_nodes and not v.transit.encrypted and "disabled" in v.transit.reason
    ipsec = _cluster(values={"encryption": {"enabled": True}}).check("prod/web", "prod/db", 5432)
    assert not ipsec.transit.encrypted and "ipsec" in ipsec.transit.reason


def test_node_addresses_are_encrypted_only_with_node_encryption():
    pods_only = _cluster().check("prod/web", "192.168.0.12", 22)
    assert pods_only.transit.crossed_nodes and not pods_only.transit.encrypted
    assert "nodeEncryption is off" in pods_only.transit.reason
    node_enc = _cluster({"encryption": {**WG["encryption"], "nodeEncryption": True}})
    assert node_enc.check("prod/web", "192.168.0.12", 22).transit.encrypted
    assert node_enc.check("192.168.0.11", "prod/db", 5432).transit.encrypted
    opted = _cluster({"encryption": {**WG["encryption"], "nodeEncryption": True}}, control_plane_b=True)
    assert not opted.check("prod/web", "192.168.0.12", 22).transit.encrypted
    assert opted.check("prod/web", "prod/db", 5432).transit.encrypted  # pod traffic still is


def test_world_and_host_traffic_does_not_cross_nodes():
    c = _cluster()
    world = c.check("prod/web", "8.8.8.8", 443)
    assert not world.transit.crossed_nodes and not world.transit.encrypted
    host = c.check("host", "prod/db", 5432)
    assert not host.transit.crossed_nodes and host.transit.dst_node == "b"


def test_clusters_without_nodes_have_no_transit():
    c = Cluster(values=WG)
    c.add_endpoint("prod/web", labels={"app": "web"})
    c.add_endpoint("prod/db", labels={"app": "db"})
    assert c.check("prod/web", "prod/db", 80).transit is None


def test_seed_scenario_places_pods_on_three_nodes():
    c = Cluster.from_manifests(SEED, values=SEED_VALUES)
    assert sorted(c.nodes) == ["kind-control-plane", "kind-worker", "kind-worker2"]
    v = c.check("production/frontend", "production/backend", 8080)
    assert (
        v.allowed
        and v.transit.encrypted
        and (v.transit.src_node, v.transit.dst_node)
        == (
            "kind-worker",
            "kind-worker2",
        )
    )
    status = encrypt_status(c, "kind-worker")
    assert status.startswith("Encryption: Wireguard\nInterface: cilium_wg0\n\tPublic key: ")
    assert status.endswith("\tNumber of peers: 2\n")


# ---------------------------------------------------------------- CLI
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    root = str(Path(ciliumpy.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root}
    return subprocess.run(
        [sys.executable, "-m", "ciliumpy", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_cli_encrypt_status_prints_what_cilium_prints_per_node():
    out = _cli("encrypt", "status", "-f", str(SEED), "--values", str(SEED_VALUES))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("Encryption: Wireguard\nInterface: cilium_wg0\n") == 3
    assert out.stdout.count("\tNumber of peers: 2\n") == 3
    one = _cli("encrypt", "status", "-f", str(SEED), "--values", str(SEED_VALUES), "--node", "kind-worker")
    assert one.returncode == 0 and one.stdout.count("Public key:") == 1
    data = json.loads(
        _cli(
            "encrypt", "status", "-f", str(SEED), "--values", str(SEED_VALUES), "--node", "kind-worker", "-o", "json"
        ).stdout
    )
    peers = data["kind-worker"]["peers"]
    assert {p["node"] for p in peers} == {"kind-control-plane", "kind-worker2"}
    assert all(p["endpoint"].endswith(":51871") for p in peers)


def test_cli_encrypt_status_without_values_is_disabled_and_unknown_nodes_fail():
    out = _cli("encrypt", "status", "-f", str(SEED))
    assert out.returncode == 0 and out.stdout == "Encryption: Disabled\n"
    bad = _cli("encrypt", "status", "-f", str(SEED), "--values", str(SEED_VALUES), "--node", "nope")
    assert bad.returncode != 0 and "no node 'nope'" in bad.stderr and "Traceback" not in bad.stderr
