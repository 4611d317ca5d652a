"""Generated NetworkPolicy workloads and network-config-analyzer (NCA) connectivity maps.

Shared by tests/reach/test_reach_crosscheck.py (NCA maps computed earlier, committed under
tests/data/reach/nca/) and bench/bench_reach.py (NCA run live, from its own virtualenv).

Two rewrites make a generated workload mean the same to Kubernetes (NCA) and to Cilium, where
Cilium differs on purpose (docs/semantics.md, "Reachability"):

* ipBlocks that overlap the pod CIDR are moved off it: Kubernetes lets an ipBlock select pod
  addresses, Cilium never selects a pod by address (pods have identities of their own). A block
  containing the pod CIDR gets it as an ``except``; a block inside it moves to TEST-NET-3.
* egress rules' named ports become their numbers: Kubernetes resolves an egress named port on
  each destination pod, Cilium once for the whole cluster (and allows it to every peer).
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

POD_CIDR = ipaddress.ip_network("10.244.0.0/16")
FILES = ("namespaces.yaml", "pods.yaml", "policies.yaml")
ALL = "all"
Ports = dict[str, tuple[tuple[int, int], ...]]


def find_shared(*parts: str) -> Path | None:
    """``shared/<parts>`` beside the repository (a developer's worktree or CI's clone)."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent.joinpath("shared", *parts)
        if candidate.exists():
            return candidate
    return None


def generate(out: Path, pods: int, policies: int, seed: int) -> Path:
    """Write the generator's workload into ``out`` and rewrite it (see the module docstring)."""
    tool = find_shared("tools", "gen_netpol_workload.py")
    if tool is None:
        raise FileNotFoundError("shared/tools/gen_netpol_workload.py is not beside this checkout")
    args = [sys.executable, str(tool), "--pods", str(pods), "--policies", str(policies), "--seed", str(seed)]
    subprocess.run([*args, "--out", str(out)], check=True, capture_output=True)
    (out / "manifest.json").unlink()
    rewrite(out / "policies.yaml", out / "pods.yaml")
    return out


def rewrite(policies: Path, pods: Path) -> None:
    named = _named_ports(pods)
    docs = [d for d in yaml.safe_load_all(policies.read_text()) if d]
    for doc in docs:
        spec = doc["spec"]
        for section, peers_key in (("ingress", "from"), ("egress", "to")):
            for rule in spec.get(section) or []:
                for peer in rule.get(peers_key) or []:
                    if "ipBlock" in peer:
                        peer["ipBlock"] = _off_pods(peer["ipBlock"])
                if section == "egress":
                    for port in rule.get("ports") or []:
                        if isinstance(port.get("port"), str) and not port["port"].isdigit():
                            port["port"] = named[(port["port"], port.get("protocol", "TCP"))]
    policies.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def _named_ports(pods: Path) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for pod in yaml.safe_load(pods.read_text())["items"]:
        for c in pod["spec"]["containers"]:
            for p in c.get("ports") or []:
                if p.get("name"):
                    out[(p["name"], p.get("protocol", "TCP"))] = p["containerPort"]
    return out


def _off_pods(block: dict[str, Any]) -> dict[str, Any]:
    net = ipaddress.ip_network(block["cidr"])
    if not net.overlaps(POD_CIDR):
        return block
    if net.subnet_of(POD_CIDR):
        return {"cidr": "203.0.113.0/24"}
    excepts = [ipaddress.ip_network(e) for e in block.get("except", [])]
    if any(POD_CIDR.subnet_of(e) for e in excepts):
        return block
    kept = [str(e) for e in excepts if not e.subnet_of(POD_CIDR)]
    return {"cidr": block["cidr"], "except": [*kept, str(POD_CIDR)]}


_LINE = re.compile(r"^(?P<src>\S+)\[Pod\] => (?P<dst>\S+)\[Pod\] : (?P<conns>.*)$")


def parse_nca(text: str) -> dict[tuple[str, str], Ports | str]:
    """Pod-to-pod lines of NCA's ``txt_no_fw_rules`` output: ``{(src, dst): ports | ALL}``."""
    out: dict[tuple[str, str], Ports | str] = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m is None:
            continue
        conns = m["conns"].strip()
        if conns == "All connections":
            out[(m["src"], m["dst"])] = ALL
            continue
        ports: dict[str, list[tuple[int, int]]] = {}
        for part in re.findall(r"\{([^}]*)\}", conns):
            protos_text, _, ports_text = part.partition(",dst_ports:")
            protos = [p.strip() for p in protos_text.removeprefix("protocols:").split(",")]
            ranges = []
            for item in (ports_text or "1-65535").split(","):
                first, _, last = item.strip().partition("-")
                ranges.append((int(first), int(last or first)))
            for proto in protos:
                ports.setdefault(proto, []).extend(ranges)
        out[(m["src"], m["dst"])] = {p: _merge(r) for p, r in ports.items()}
    return out


def _merge(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def reach_pairs(reach: Any) -> dict[tuple[str, str], Ports | str]:
    """The same map from a ciliumpy Reachability (endpoint pairs only; NCA's port 0 is not a
    port, so ranges start at 1)."""
    out: dict[tuple[str, str], Ports | str] = {}
    endpoints = set(reach.endpoints)
    for src, dst, cs in reach.edges():
        if src not in endpoints or dst not in endpoints:
            continue
        ports = {p: _merge([(max(lo, 1), hi) for lo, hi in r if hi >= 1]) for p, r in cs.ports.items() if p != "ICMP"}
        ports = {p: r for p, r in ports.items() if r}
        if all(ports.get(p) == ((1, 65535),) for p in ("TCP", "UDP", "SCTP")) and cs.ports.get("ICMP") == ((0, 255),):
            out[(src, dst)] = ALL
        elif ports:
            out[(src, dst)] = ports
    return out
