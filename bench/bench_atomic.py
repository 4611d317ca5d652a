"""What thread safety and failing closed cost, each against a baseline measured in the same run.

* ``check`` through the public method (the read side of the cluster lock) against the same
  work without the lock (``Cluster._check_address``);
* four reader threads sharing a cluster against one thread doing the same number of checks;
* ``apply`` + ``delete`` of a policy that moves addresses between identities, on the eBPF
  backend (when it can run), with the lockdown of docs/concurrency.md against the same with
  the lockdown switched off (``_ebpf._lockdown`` patched to lock nothing).

Times are medians of a few rounds; only the ratios mean anything across machines.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable

from ciliumpy import Cluster
from ciliumpy.backends import available_backends

PODS = "\n---\n".join(
    f"""apiVersion: v1
kind: Pod
metadata: {{name: p{i}, namespace: t, labels: {{app: a{i % 5}}}}}
status: {{podIP: 10.244.1.{i + 2}}}"""
    for i in range(50)
)
BASE = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: base, namespace: t}
spec:
  endpointSelector: {}
  egress:
  - toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  egressDeny:
  - toEntities: [world]
"""
MOVING = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: extra, namespace: t}
spec:
  endpointSelector: {matchLabels: {app: a1}}
  egress:
  - toCIDR: [203.0.113.0/24]
"""


def median_time(fn: Callable[[], None], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def row(name: str, value: float, baseline: float, unit: str = "ms") -> None:
    print(f"{name:<58} {value * 1000:9.2f} {unit}  {value / baseline:6.2f}x")


def bench_checks(n: int, rounds: int) -> None:
    cluster = Cluster.from_manifests(PODS, BASE)
    flows = [(f"t/p{i}", f"t/p{(i + 7) % 50}", 80) for i in range(50)]

    def locked() -> None:
        for i in range(n):
            cluster.check(*flows[i % 50])

    def unlocked() -> None:
        for i in range(n):
            cluster._check_address(*flows[i % 50], "TCP", None)

    def threaded() -> None:
        threads = [
            threading.Thread(target=lambda: [cluster.check(*flows[i % 50]) for i in range(n // 4)]) for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    base = median_time(unlocked, rounds)
    print(f"{'simulator, ' + str(n) + ' checks':<58} {'time':>12}  ratio")
    row("check body without the lock (baseline)", base, base)
    row("check() (read side of the lock)", median_time(locked, rounds), base)
    row("check() from 4 threads sharing the cluster", median_time(threaded, rounds), base)


def bench_lockdown(toggles: int, rounds: int) -> None:
    from ciliumpy.backends import _ebpf

    cluster = Cluster.from_manifests(PODS, BASE, backend="ebpf")

    def toggle() -> None:
        for _ in range(toggles):
            cluster.apply(MOVING)
            cluster.delete(MOVING)

    real = _ebpf._lockdown
    try:
        _ebpf._lockdown = lambda *args: []
        base = median_time(toggle, rounds)
    finally:
        _ebpf._lockdown = real
    locked = median_time(toggle, rounds)
    cluster.close()
    print(f"{'ebpf, ' + str(2 * toggles) + ' applies moving an address to a CIDR identity':<58} {'time':>12}  ratio")
    row("without lockdown (baseline; can let denied traffic through)", base, base)
    row("with lockdown (fails closed)", locked, base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--toggles", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bench_checks(args.checks, args.rounds)
    if "ebpf" in available_backends():
        print()
        bench_lockdown(args.toggles, args.rounds)


if __name__ == "__main__":
    main()
