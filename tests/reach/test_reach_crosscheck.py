"""Pod-to-pod reach agrees with network-config-analyzer on generated workloads.

The NCA maps in tests/data/reach/nca/ were computed by network-config-analyzer 2.1.0
(``-o txt_no_fw_rules``) on the workloads shared/tools/gen_netpol_workload.py writes for the
seeds in their names, after the rewrites of nca_support.py (ipBlocks off the pod CIDR, egress
named ports as numbers, where Cilium differs on purpose). bench/bench_reach.py runs NCA live.
"""

from __future__ import annotations

import os
from pathlib import Path

import nca_support
import pytest

from ciliumpy import Cluster

DATA = Path(__file__).parents[1] / "data" / "reach" / "nca"
CASES = sorted(p.stem for p in DATA.glob("*.txt"))


@pytest.fixture(autouse=True)
def _tool() -> None:
    if nca_support.find_shared("tools", "gen_netpol_workload.py") is None:
        if os.environ.get("CI"):
            pytest.fail("shared/tools/gen_netpol_workload.py is missing beside the repository")
        pytest.skip("shared/tools is not beside this checkout")


def test_there_are_nca_maps() -> None:
    assert len(CASES) >= 2


@pytest.mark.parametrize("case", CASES)
def test_pod_to_pod_reach_equals_nca_connectivity_map(case: str, tmp_path: Path) -> None:
    pods, policies, seed = (int(x) for x in case.split("-"))
    workload = nca_support.generate(tmp_path / case, pods, policies, seed)
    cluster = Cluster.from_manifests(*(workload / f for f in nca_support.FILES))
    ours = nca_support.reach_pairs(cluster.reachability())
    theirs = nca_support.parse_nca((DATA / f"{case}.txt").read_text())
    assert len(theirs) > 20
    differ = [
        (pair, theirs.get(pair), ours.get(pair))
        for pair in sorted(set(ours) | set(theirs))
        if ours.get(pair) != theirs.get(pair)
    ]
    assert not differ, differ[:10]


def test_the_rewrites_move_ipblocks_off_the_pod_cidr(tmp_path: Path) -> None:
    import yaml

    workload = nca_support.generate(tmp_path / "w", 30, 30, 5)
    blocks = [
        peer["ipBlock"]
        for doc in yaml.safe_load_all((workload / "policies.yaml").read_text())
        if doc
        for section, key in (("ingress", "from"), ("egress", "to"))
        for rule in doc["spec"].get(section) or []
        for peer in rule.get(key) or []
        if "ipBlock" in peer
    ]
    assert blocks
    for block in blocks:
        net = nca_support.ipaddress.ip_network(block["cidr"])
        if net.overlaps(nca_support.POD_CIDR):
            assert any(nca_support.POD_CIDR.subnet_of(nca_support.ipaddress.ip_network(e)) for e in block["except"])
