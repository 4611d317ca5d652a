"""Core engine benchmark: map-state build and check() latency on a synthetic workload.

Generates the workload with ``../shared/tools/gen_netpol_workload.py --pods 1000
--policies 300`` (override with ``--generator`` or ``--workload DIR``), then measures in the
same run:

* parsing the manifests, and the libyaml parse alone as the baseline;
* building identities, ipcache and every endpoint's map state;
* incremental changes (one pod, one policy) against the full build;
* ``Cluster.check`` median/p90 latency over random pod pairs, against the baseline of one
  ``ipaddress.ip_address`` parse (a fixed tiny unit of Python work on this machine).

Targets (issue #2): build < 2 s, check median < 50 µs.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import yaml

import ciliumpy
from ciliumpy._manifests import load_objects

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_GENERATOR = ROOT.parent / "shared" / "tools" / "gen_netpol_workload.py"


def _workload(args: argparse.Namespace) -> Path:
    if args.workload:
        return Path(args.workload)
    out = Path(tempfile.mkdtemp(prefix="ciliumpy-bench-"))
    subprocess.run(
        [
            sys.executable,
            str(args.generator),
            "--pods",
            str(args.pods),
            "--policies",
            str(args.policies),
            "--out",
            str(out),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--policies", type=int, default=300)
    parser.add_argument("--generator", type=Path, default=DEFAULT_GENERATOR)
    parser.add_argument("--workload", help="use an existing workload directory")
    parser.add_argument("--checks", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    wl = _workload(args)
    files = [str(wl / n) for n in ("namespaces.yaml", "pods.yaml", "policies.yaml")]

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    t_yaml = min(
        _timed(lambda: [list(yaml.load_all(Path(f).read_text(), Loader=loader)) for f in files])
        for _ in range(args.repeat)
    )
    t_parse = min(_timed(lambda: load_objects(files)) for _ in range(args.repeat))
    objects = load_objects(files)

    builds = []
    cluster = None
    for _ in range(args.repeat):
        c = ciliumpy.Cluster()
        builds.append(_timed(lambda c=c: c.apply(*objects)))
        cluster = c
    assert cluster is not None
    t_build = min(builds)
    entries = sum(len(cluster.map_state(ref)) for ref in cluster.endpoints)

    # incremental: one new pod in an existing namespace, then one new policy
    some = next(iter(cluster.endpoints.values()))
    t_pod = _timed(lambda: cluster.add_endpoint(f"{some.namespace}/bench-extra", labels=dict(some.labels)))
    pol = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "bench-extra", "namespace": some.namespace},
        "spec": {
            "endpointSelector": {"matchLabels": dict(list(some.labels.items())[:1])},
            "ingress": [{"fromEndpoints": [{}], "toPorts": [{"ports": [{"port": "7777", "protocol": "TCP"}]}]}],
        },
    }
    t_policy = _timed(lambda: cluster.apply(pol))

    eps = sorted(cluster.endpoints)
    rnd = random.Random(7)
    ports = [8080, 9090, 5432, 6379, 53, 50051, 5672]
    pairs = [(rnd.choice(eps), rnd.choice(eps), rnd.choice(ports)) for _ in range(args.checks)]
    for s, d, p in pairs[:200]:
        cluster.check(s, d, p)  # warm caches
    lat = []
    allowed = 0
    for s, d, p in pairs:
        t0 = time.perf_counter()
        v = cluster.check(s, d, p)
        lat.append(time.perf_counter() - t0)
        allowed += v.allowed
    lat.sort()
    med = statistics.median(lat)
    p90 = lat[int(len(lat) * 0.9)]
    unit = min(timeit.repeat(lambda: ipaddress.ip_address("10.1.2.3"), number=20000, repeat=5)) / 20000

    print(
        f"workload: {len(cluster.endpoints)} pods, {len(cluster.policies)} policies, "
        f"{len(cluster.identities())} identities, {entries} map entries ({wl})"
    )
    print()
    rows = [
        ("measurement", "value", "baseline", "ratio"),
        ("parse manifests", f"{t_parse:.3f} s", f"libyaml load {t_yaml:.3f} s", f"{t_parse / t_yaml:.1f}x"),
        (
            "build map state (target < 2 s)",
            f"{t_build:.3f} s",
            f"libyaml load {t_yaml:.3f} s",
            f"{t_build / t_yaml:.1f}x",
        ),
        (
            "add one pod (incremental)",
            f"{t_pod * 1e3:.1f} ms",
            f"full build {t_build:.3f} s",
            f"{t_pod / t_build:.3f}x",
        ),
        (
            "add one policy (incremental)",
            f"{t_policy * 1e3:.1f} ms",
            f"full build {t_build:.3f} s",
            f"{t_policy / t_build:.3f}x",
        ),
        (
            "check() median (target < 50 us)",
            f"{med * 1e6:.1f} us",
            f"ip_address() {unit * 1e6:.2f} us",
            f"{med / unit:.0f}x",
        ),
        ("check() p90", f"{p90 * 1e6:.1f} us", f"ip_address() {unit * 1e6:.2f} us", f"{p90 / unit:.0f}x"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"\n{allowed}/{len(pairs)} checked flows allowed")
    return 0


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())
