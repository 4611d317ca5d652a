"""28 real application directories load as they are, and their pod-to-pod verdicts agree with an
independent analyser's expected connectivity (``shared/data/realworld``, see its README).

The expected lists come from np-guard's netpol-analyzer (format ``npa``) and
network-config-analyzer (``nca``): peers are workloads ``ns/name[Kind]``; an unlisted pair of
distinct workloads is denied. Where Cilium differs on purpose the pair is not compared:
hostNetwork pods are not Cilium endpoints (they act as their node, ``docs/semantics.md``), and
traffic to or from outside the cluster (``[External]`` lines) is not pod-to-pod.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from ciliumpy import Cluster, Endpoint


def _find_corpus() -> Path | None:
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "shared" / "data" / "realworld"
        if candidate.is_dir():
            return candidate
    return None


CORPUS = _find_corpus()
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "input").is_dir()) if CORPUS else []
PEER = re.compile(r"^(?P<ns>[^/\s]+)/(?P<name>[^\[\s]+)\[(?P<kind>\w+)\]$")

#: (protocol, first port, last port) allowed between two peers; ``None`` means everything.
Allowed = list[tuple[str, int, int]] | None


def _parse_connections(text: str) -> Allowed:
    text = text.strip()
    if text.lower() == "all connections":
        return None
    out: list[tuple[str, int, int]] = []
    if text.startswith("{"):  # nca: {protocols:TCP,dst_ports:53}
        for part in re.findall(r"\{([^}]*)\}", text):
            fields = dict(item.split(":", 1) for item in part.split(",") if ":" in item)
            for proto in fields["protocols"].split(";"):
                for ports in fields.get("dst_ports", "1-65535").split(";"):
                    first, _, last = ports.partition("-")
                    out.append((proto, int(first), int(last or first)))
        return out
    proto = ""  # npa: TCP 10053-10054,UDP 10053
    for token in text.split(","):
        m = re.match(r"^(TCP|UDP|SCTP)\s+(.*)$", token.strip())
        if m:
            proto, token = m.group(1), m.group(2)
        first, _, last = token.strip().partition("-")
        out.append((proto, int(first), int(last or first)))
    return out


def _expected(case: Path) -> dict[tuple[str, str], Allowed]:
    pairs: dict[tuple[str, str], Allowed] = {}
    for line in (case / "expected_connlist.txt").read_text().splitlines():
        pair, sep, conns = line.partition(" : ")
        src, arrow, dst = pair.partition(" => ")
        if not sep or not arrow:
            continue
        peers = [PEER.match(src.strip()), PEER.match(dst.strip())]
        if None in peers or any(m is not None and m["kind"] == "External" for m in peers):
            continue  # outside the cluster or an ingress controller: not pod-to-pod
        pairs[(src.strip(), dst.strip())] = _parse_connections(conns)
    return pairs


def _allows(allowed: Allowed, proto: str, port: int) -> bool:
    return allowed is None or any(p == proto and lo <= port <= hi for p, lo, hi in allowed)


def _load(case: str) -> Cluster:
    assert CORPUS is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConfigMaps, Routes, ... are listed in a warning
        return Cluster.from_manifests(CORPUS / case / "input", recursive=True)


def _peers(cluster: Cluster, names: set[str]) -> Iterator[tuple[str, list[Endpoint]]]:
    """Pods grouped as the analyser names its peers: the controller it lists, else the pod."""
    pods = {**cluster.endpoints, **cluster.host_network_pods}
    groups: dict[str, list[Endpoint]] = {}
    for _, pod in sorted(pods.items()):
        chain = [f"{pod.namespace}/{name}[{kind}]" for kind, name in pod.owners if kind != "Node"]
        candidates = [*chain, f"{pod.namespace}/{pod.name}[Pod]"]
        groups.setdefault(next((c for c in candidates if c in names), candidates[0]), []).append(pod)
    yield from groups.items()


@pytest.fixture(scope="module", autouse=True)
def _corpus() -> None:
    if CORPUS is None:
        if os.environ.get("CI"):
            pytest.fail("shared/data/realworld is missing beside the repository")
        pytest.skip("shared/data/realworld is not beside this checkout")


def test_the_corpus_has_28_cases() -> None:
    assert len(CASES) == 28


@pytest.mark.parametrize("case", CASES)
def test_pod_to_pod_verdicts_agree_with_the_expected_connectivity(case: str) -> None:
    assert CORPUS is not None
    cluster = _load(case)
    expected = _expected(CORPUS / case)
    names = {name for pair in expected for name in pair}
    groups = dict(_peers(cluster, names))
    assert names <= set(groups), f"peers of the expected list that the load does not have: {names - set(groups)}"
    # Every port the expected list or a container mentions, on every protocol, plus a few others.
    probes = {("TCP", 80), ("TCP", 443), ("UDP", 53), ("SCTP", 9)}
    probes |= {(p, port) for allowed in expected.values() for p, lo, hi in allowed or () for port in (lo, hi)}
    ports = {p.port for pods in groups.values() for pod in pods for p in pod.ports}
    probes |= {(proto, port) for port in ports for proto in ("TCP", "UDP", "SCTP")}
    compared = differ = 0
    mismatches = []
    for src, src_pods in groups.items():
        for dst, dst_pods in groups.items():
            if src == dst:
                continue  # pairs within one workload are never listed
            if any(p.host_network for p in (*src_pods, *dst_pods)):
                differ += 1  # Cilium: not an endpoint, acts as its node (docs/semantics.md)
                continue
            for proto, port in sorted(probes):
                compared += 1
                verdict = cluster.check(src_pods[0].ref, dst_pods[0].ref, port, proto)
                want = _allows(expected.get((src, dst), []), proto, port)
                if verdict.allowed != want:
                    mismatches.append(f"{src} -> {dst} {proto}/{port}: {verdict.verdict}, expected allowed={want}")
    assert not mismatches, "\n".join(mismatches[:20])
    assert compared or differ, "nothing was compared"


def test_host_network_cases_load_with_shared_node_addresses() -> None:
    cluster = _load("ipblockstest")
    host = [p for p in cluster.host_network_pods.values()]
    assert len(host) == 18 and len(cluster.endpoints) == 11
    shared = {ip for p in host for ip in p.ips}
    assert len(shared) < len(host)  # several hostNetwork pods share their node's address
    assert all(cluster.lookup_ip(ip).id == 6 for ip in shared)  # remote-node
