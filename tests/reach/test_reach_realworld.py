"""Reachability of the real applications in shared/data/realworld against the connectivity their
upstream analysers expect, port range by port range (not only at probe ports).

Peers are workloads ``ns/name[Kind]`` there; pods are grouped the same way as in
tests/test_realworld.py (which checks single verdicts). Pairs with hostNetwork pods are not
compared: Cilium does not manage them (they act as their node, docs/semantics.md).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import pytest

from ciliumpy import Cluster

_spec = importlib.util.spec_from_file_location("_realworld", Path(__file__).parents[1] / "test_realworld.py")
assert _spec is not None and _spec.loader is not None
rw: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rw)

FULL = ((0, 65535),)


def _expected_ports(allowed: Any) -> dict[str, tuple[tuple[int, int], ...]]:
    if allowed is None:
        return {"TCP": FULL, "UDP": FULL, "SCTP": FULL, "ICMP": ((0, 255),)}
    ports: dict[str, list[tuple[int, int]]] = {}
    for proto, lo, hi in allowed:
        ports.setdefault(proto, []).append((lo, hi))
    out = {}
    for proto, ranges in ports.items():
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        out[proto] = tuple(merged)
    return out


def _ours(ports: dict[str, tuple[tuple[int, int], ...]]) -> dict[str, tuple[tuple[int, int], ...]]:
    # port 0 is no port to the analysers: "1-65535" there is every port
    return {p: tuple((0, hi) if lo == 1 else (lo, hi) for lo, hi in r) for p, r in ports.items()}


@pytest.mark.skipif(rw.CORPUS is None, reason="shared/data/realworld is not beside this checkout")
@pytest.mark.parametrize("case", rw.CASES)
def test_reachability_equals_the_expected_connectivity(case: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = Cluster.from_manifests(rw.CORPUS / case / "input", recursive=True)
    expected = rw._expected(rw.CORPUS / case)
    names = {name for pair in expected for name in pair}
    groups = dict(rw._peers(cluster, names))
    reach = cluster.reachability()
    compared = 0
    mismatches = []
    for src, src_pods in groups.items():
        for dst, dst_pods in groups.items():
            if src == dst or any(p.host_network for p in (*src_pods, *dst_pods)):
                continue
            want = _expected_ports(expected[(src, dst)]) if (src, dst) in expected else {}
            for s in src_pods:
                for d in dst_pods:
                    compared += 1
                    got = _ours(reach.connections(s.ref, d.ref).ports)
                    want_here = {p: r for p, r in want.items() if p in got or r}
                    if {p: _ours({p: r})[p] for p, r in want_here.items()} != got:
                        mismatches.append(f"{s.ref} -> {d.ref}: {got}, expected {want_here}")
    assert not mismatches, "\n".join(mismatches[:10])
    assert compared or len(groups) < 2 or all(p.host_network for pods in groups.values() for p in pods)
