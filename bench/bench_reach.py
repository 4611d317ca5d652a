"""Reachability benchmark: full reach with its networkx graph, against network-config-analyzer.

In one run, on workloads from ``shared/tools/gen_netpol_workload.py`` (rewritten as in
tests/reach/nca_support.py: ipBlocks off the pod CIDR, egress named ports as numbers):

* 1,000 pods / 300 policies: ``Cluster.reachability()`` over all ports and protocols plus
  ``to_networkx()``, best of ``--repeat`` runs (wall and CPU time), against NCA's cheapest
  connectivity map (``nca --connectivity -o txt_no_fw_rules``) of the same files, run once;
  the two pod-to-pod maps are compared pair by pair;
* 10,000 pods / 1,000 policies: the same reachability and graph, once.

NCA pins its own dependencies (networkx 3.2, PyYAML, ...), so it runs from a virtualenv of its
own: ``--nca PATH`` names its ``nca`` executable; by default ``bench/.nca-venv`` is created
with ``pip install network-config-analyzer==2.1.0`` when missing (``--no-nca`` skips NCA).

Targets (issue 12): 1,000/300 under 1.5 s and at least 10x faster than NCA; 10,000/1,000 under
60 s. Printed as a table; nothing is gated.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "reach"))

import nca_support  # noqa: E402

import ciliumpy  # noqa: E402

NCA_VERSION = "2.1.0"


def _nca_binary(args: argparse.Namespace) -> Path | None:
    if args.no_nca:
        return None
    if args.nca:
        return Path(args.nca)
    venv = ROOT / "bench" / ".nca-venv"
    binary = venv / "bin" / "nca"
    if not binary.exists():
        print(f"creating {venv} with network-config-analyzer=={NCA_VERSION} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "-q", f"network-config-analyzer=={NCA_VERSION}"]
        subprocess.run(pip, check=True)
    return binary


def _load(workload: Path) -> ciliumpy.Cluster:
    cluster = ciliumpy.Cluster.from_manifests(*(workload / f for f in nca_support.FILES))
    cluster.identities()  # resolve everything before timing
    return cluster


def _time_reach(cluster: ciliumpy.Cluster, repeat: int) -> tuple[float, float, Any, Any]:
    best_wall = best_cpu = float("inf")
    reach = graph = None
    for _ in range(repeat):
        reach = graph = None
        gc.collect()
        w0, c0 = time.perf_counter(), time.process_time()
        reach = cluster.reachability()
        graph = reach.to_networkx()
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu, reach, graph


def _run_nca(binary: Path, workload: Path, out: Path) -> float:
    t0 = time.perf_counter()
    cmd = [str(binary), "--connectivity", "-r", str(workload), "-o", "txt_no_fw_rules", "-f", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="reachability runs at 1,000 pods (best is reported)")
    ap.add_argument("--nca", help="path of an installed nca executable")
    ap.add_argument("--no-nca", action="store_true", help="skip network-config-analyzer")
    ap.add_argument("--no-large", action="store_true", help="skip the 10,000-pod workload")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        small = nca_support.generate(Path(tmp) / "1000x300", 1000, 300, args.seed)
        cluster = _load(small)
        wall, cpu, reach, graph = _time_reach(cluster, args.repeat)
        edges = graph.number_of_edges()
        units = sum(1 for u in reach._units if not u.external)
        rows.append(("1,000 pods / 300 policies: reachability + networkx", f"{wall:.3f} s", f"cpu {cpu:.3f} s"))
        rows.append(("  graph", f"{graph.number_of_nodes()} nodes", f"{edges} edges; {units} endpoint units"))
        binary = _nca_binary(args)
        if binary is not None:
            out = Path(tmp) / "nca.txt"
            nca = _run_nca(binary, small, out)
            rows.append(("  network-config-analyzer -o txt_no_fw_rules", f"{nca:.3f} s", f"ratio {nca / wall:.1f}x"))
            theirs = nca_support.parse_nca(out.read_text())
            ours = nca_support.reach_pairs(reach)
            differ = sum(1 for p in set(ours) | set(theirs) if ours.get(p) != theirs.get(p))
            rows.append(("  pod-to-pod maps compared", f"{len(theirs)} pairs", f"{differ} differ"))
        if not args.no_large:
            large = nca_support.generate(Path(tmp) / "10000x1000", 10_000, 1_000, args.seed)
            t0 = time.perf_counter()
            big = _load(large)
            load = time.perf_counter() - t0
            wall, cpu, reach, graph = _time_reach(big, 1)
            row = f"cpu {cpu:.1f} s; load {load:.1f} s; {graph.number_of_edges()} edges"
            rows.append(("10,000 pods / 1,000 policies: reachability + networkx", f"{wall:.1f} s", row))
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12}  {note}")
    print(f"(machine load average {os.getloadavg()[0]:.1f}; targets: < 1.5 s and >= 10x NCA; < 60 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
