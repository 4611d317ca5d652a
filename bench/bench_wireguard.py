"""Cross-node pod-to-pod TCP throughput with and without WireGuard, in one run.

Two :class:`ciliumpy.lab.MultiNodeLab` instances with the same two nodes and pods (the eBPF
datapath on both pods' veths in both): one routes pod traffic over the plain underlay, the
other through ``cilium_wg0`` tunnels.  iperf3 runs from the pod on node ``a`` to the pod on
node ``b``; passes alternate between the two labs so drift on a shared machine hits both.
The table gives medians and the ratio encrypted / plain.

The tunnel is ``wireguard-go`` (userspace): this kernel has no WireGuard module.  The ratio
describes wireguard-go on this machine, not kernel WireGuard as Cilium uses it.

    python bench/bench_wireguard.py [--passes N] [--duration S] [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import time
from typing import Any

from ciliumpy import Cluster
from ciliumpy.lab import MultiNodeLab

SERVER_IP = "10.244.2.5"


def _cluster(encrypted: bool) -> Cluster:
    values = {"encryption": {"enabled": True, "type": "wireguard"}} if encrypted else {}
    c = Cluster(backend="ebpf", values=values)
    c.add_node("a", ips=["192.168.50.11"])
    c.add_node("b", ips=["192.168.50.12"])
    c.add_endpoint("bench/client", labels={"app": "client"}, ips=["10.244.1.5"], node="a")
    c.add_endpoint("bench/server", labels={"app": "server"}, ips=[SERVER_IP], node="b")
    return c


def _iperf(lab: MultiNodeLab, duration: float) -> float:
    """One iperf3 run client -> server; Gbit/s received.  The server is started here and
    stopped by PID; the client retries (bounded) while the listener comes up."""
    server = subprocess.Popen(
        lab.command("bench/server", "iperf3", "-s", "-1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        cmd = lab.command("bench/client", "iperf3", "-c", SERVER_IP, "-J", "-t", str(duration))
        data: dict[str, Any] = {}
        for _ in range(50):
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, check=False)
            data = json.loads(out.stdout or "{}")
            if "Connection refused" not in str(data.get("error", "")):
                break
            time.sleep(0.1)
        if "error" in data or "end" not in data:
            raise SystemExit(f"iperf3 failed: {data.get('error')}")
        return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=None, help="alternating passes (default 3, quick 1)")
    parser.add_argument("--duration", type=float, default=None, help="iperf3 seconds per run (default 3, quick 1)")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    passes = args.passes or (1 if args.quick else 3)
    duration = args.duration or (1.0 if args.quick else 3.0)
    for tool in ("iperf3", "wireguard-go"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install -y --no-install-recommends iperf3 wireguard-go")
    plain_c, enc_c = _cluster(False), _cluster(True)
    results: dict[str, list[float]] = {"plain": [], "wireguard-go": []}
    with plain_c, enc_c, MultiNodeLab(plain_c) as plain, MultiNodeLab(enc_c) as enc:
        for _ in range(passes):
            results["plain"].append(_iperf(plain, duration))
            results["wireguard-go"].append(_iperf(enc, duration))
    base = statistics.median(results["plain"])
    print(f"cross-node pod-to-pod TCP (iperf3, {duration:g} s x {passes} alternating passes, eBPF datapath on)")
    print(f"{'path':<34} {'Gbit/s (median)':>16} {'runs':>28} {'ratio':>7}")
    for name, label in (("plain", "plain underlay"), ("wireguard-go", "WireGuard tunnel (wireguard-go)")):
        med = statistics.median(results[name])
        runs = " ".join(f"{r:.2f}" for r in results[name])
        print(f"{label:<34} {med:>16.2f} {runs:>28} {med / base:>6.2f}x")
    print("implementation: wireguard-go (userspace; the kernel here has no WireGuard module)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
