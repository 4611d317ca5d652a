"""Replay benchmark: decode recorded Hubble flows and replay them against a policy change.

Generates the 1,000-pod / 300-policy workload with ``../shared/tools/gen_netpol_workload.py``,
checks random pod pairs on it, writes the resulting flows as ``hubble observe -o json`` lines
(repeated to ``--flows`` lines, 1,000,000 by default), then measures in one run:

* decoding the file (``ciliumpy.hubble.read_observations``), in lines per second, against the
  standard library's ``json.loads`` on the same lines, in alternating rounds (``--rounds``)
  whose median by ratio is reported beside every round (target: >= 200,000 lines/s);
* ``replay(flows, before, after)`` after decoding, the "after" dropping one policy
  (target: < 10 s for 1,000,000 flows).

Times are this process's CPU time (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ciliumpy import Cluster
from ciliumpy.hubble import format_flows, read_observations, replay

ROOT = Path(__file__).resolve().parent.parent
# ../shared beside the checkout (CI), or the team's shared folder from a worktree
GENERATOR = (
    next(
        (p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if (p / "tools").is_dir()),
        ROOT.parent / "shared",
    )
    / "tools"
    / "gen_netpol_workload.py"
)


def _workload(generator: str, pods: int, policies: int) -> Path:
    out = Path(tempfile.mkdtemp(prefix="ciliumpy-replay-"))
    cmd = [sys.executable, generator, "--pods", str(pods), "--policies", str(policies), "--out", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def _record(cluster: Cluster, pairs: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    refs = sorted(cluster.endpoints)
    for _ in range(pairs):
        src, dst = rng.sample(refs, 2)
        ports = [p.port for p in cluster.endpoints[dst].ports] or [80]
        port = rng.choice([*ports, rng.randint(1, 65535)])
        cluster.check(src, dst, port)
    return format_flows(cluster.observe(), "json").splitlines()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=3000, help="distinct connections checked")
    parser.add_argument("--rounds", type=int, default=3, help="decoding rounds, each beside its baseline")
    parser.add_argument("--workload", help="an existing workload directory (default: generate one)")
    parser.add_argument("--generator", default=str(GENERATOR), help="gen_netpol_workload.py")
    args, _ = parser.parse_known_args(argv)

    workload = Path(args.workload) if args.workload else _workload(args.generator, 1000, 300)
    before = Cluster.from_manifests(*sorted(workload.glob("*.yaml")))
    from ciliumpy.hubble import store_of

    store_of(before, capacity=args.pairs * 4)
    lines = _record(before, args.pairs, seed=1)
    policies = list(before.policies)
    dropped = max(policies, key=lambda p: p.name) if policies else None
    after = Cluster.from_manifests(*[m for m in before.to_manifests() if dropped is None or m != dropped.to_manifest()])

    scratch = Path(tempfile.mkdtemp(prefix="ciliumpy-flows-"))
    try:
        return _measure(args, before, after, dropped.name if dropped else "-", lines, scratch / "flows.json")
    finally:
        shutil.rmtree(scratch)
        if not args.workload:
            shutil.rmtree(workload)


def _measure(
    args: argparse.Namespace,
    before: Cluster,
    after: Cluster,
    dropped: str,
    lines: list[str],
    path: Path,
) -> int:
    with path.open("w") as fh:
        for i in range(args.flows):
            fh.write(lines[i % len(lines)])
            fh.write("\n")

    # Baseline and decoder alternate, several rounds: CPU speed here drifts by a third within
    # minutes, so only figures taken side by side compare. The baseline decodes a sample of
    # the same lines (json.loads is too slow to run over all of them every round).
    with path.open("rb") as fh:
        sample = [fh.readline() for _ in range(min(args.flows, 100_000))]
    rounds: list[tuple[float, float]] = []
    observations: list[Any] = []
    for _ in range(args.rounds):
        start = time.process_time()
        for line in sample:
            json.loads(line)
        stdlib = len(sample) / (time.process_time() - start)
        observations = []  # the previous round's records go before this round's are made
        start = time.process_time()
        observations = list(read_observations(path))
        rounds.append((len(observations) / (time.process_time() - start), stdlib))
    del sample
    decode, stdlib = sorted(rounds, key=lambda r: r[0] / r[1])[len(rounds) // 2]

    start = time.process_time()
    report = replay(observations, before, after)
    took = time.process_time() - start

    rows = [
        ("measure", "value", "target"),
        ("workload", f"{len(before.endpoints)} pods, {len(before.policies)} policies", ""),
        ("flows (lines)", f"{len(observations):,} ({len(lines)} distinct)", ""),
        *[
            (f"decoding, round {i}: read_observations | json.loads", f"{d:,.0f} | {b:,.0f} lines/s ({d / b:.2f}x)", "")
            for i, (d, b) in enumerate(rounds, 1)
        ],
        ("decoding, the median round by ratio", f"{decode:,.0f} lines/s", ">= 200,000"),
        ("  baseline: json.loads alone, same round", f"{stdlib:,.0f} lines/s", ""),
        ("  ratio", f"{decode / stdlib:.2f}x", ""),
        (f"replay after decoding (one policy dropped: {dropped})", f"{took:.2f} s", "< 10 s"),
        ("  result", ", ".join(f"{k} {v:,}" for k, v in report.counts().items()), ""),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
