#!/usr/bin/env python3
"""HTTP through the lab's L7 proxy against the same requests with an L3/L4-only policy.

One serving lab (``Lab(cluster, serve=True)``), two pods: ``bench/client`` and ``bench/server``
(HTTP echo on 8080).  Two policies on the server's ingress, swapped between measurements of
the same run: **L3/L4** (allow the client on 8080/TCP: the datapath delivers straight to the
server) and **L7** (the same with an HTTP rule ``GET /bench``: the datapath hands every
connection to the proxy, which runs ``Cluster.check`` per request and forwards to the
server).  The client is a separate process in the client's namespace (so it does not share
the lab's interpreter), driving plain HTTP/1.1:

* ``keep-alive x1``: one connection, requests one after the other (latency);
* ``keep-alive x8``: eight connections, a request in flight on each (throughput);
* ``new conn x1``: a new connection per request (the redirect of every SYN included).

Each pass measures every row under both policies, alternating which goes first; the table
gives medians over the passes, the L7/L3-L4 throughput ratio and the latency the proxy adds
(median per-request latency, L7 minus L3/L4).  Numbers are from whatever machine runs it
(2 shared cores in CI); only the ratios within one run mean anything, and CI never gates on
them.  Needs root and the eBPF backend.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ciliumpy import Cluster  # noqa: E402
from ciliumpy.lab import Lab  # noqa: E402

SERVER_IP = "10.244.9.2"
PODS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: bench}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: bench, labels: {{app: client}}}}
spec: {{containers: [{{name: c, image: x}}]}}
status: {{podIP: 10.244.9.1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: server, namespace: bench, labels: {{app: server}}}}
spec: {{containers: [{{name: s, image: x, ports: [{{name: http, containerPort: 8080, protocol: TCP}}]}}]}}
status: {{podIP: {SERVER_IP}}}
"""
POLICY = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: bench-server, namespace: bench}}
spec:
  endpointSelector: {{matchLabels: {{app: server}}}}
  ingress:
    - fromEndpoints: [{{matchLabels: {{app: client}}}}]
      toPorts:
        - ports: [{{port: "8080", protocol: TCP}}]
{rules}
"""
L7_RULES = """          rules:
            http: [{method: GET, path: /bench}]"""

# The client: plain sockets and a minimal HTTP/1.1 reader, so that its own cost stays small.
CLIENT = textwrap.dedent(
    r"""
    import json, selectors, socket, sys, time
    ip, port, mode, conns, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    REQ = b"GET /bench HTTP/1.1\r\nHost: server\r\n\r\n"
    CLOSE = b"GET /bench HTTP/1.1\r\nHost: server\r\nConnection: close\r\n\r\n"

    def response_done(buf):
        head, sep, body = buf.partition(b"\r\n\r\n")
        if not sep:
            return False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                return len(body) >= int(value)
        return False

    lat = []
    start = time.perf_counter()
    if mode == "new":
        for _ in range(n):
            t = time.perf_counter()
            with socket.create_connection((ip, port), timeout=5) as s:
                s.sendall(CLOSE)
                buf = b""
                while not response_done(buf):
                    chunk = s.recv(65536)
                    if not chunk:
                        raise SystemExit("connection closed early: " + repr(buf[:80]))
                    buf += chunk
                assert buf.startswith(b"HTTP/1.1 200"), buf[:80]
            lat.append(time.perf_counter() - t)
    else:
        sel = selectors.DefaultSelector()
        state = {}
        sent = 0
        for _ in range(conns):
            s = socket.create_connection((ip, port), timeout=5)
            s.setblocking(False)
            state[s] = [b"", time.perf_counter()]
            s.send(REQ)
            sent += 1
            sel.register(s, selectors.EVENT_READ)
        done = 0
        while done < n:
            for key, _ in sel.select(5):
                s = key.fileobj
                st = state[s]
                chunk = s.recv(65536)
                if not chunk:
                    raise SystemExit("connection closed early")
                st[0] += chunk
                if response_done(st[0]):
                    assert st[0].startswith(b"HTTP/1.1 200"), st[0][:80]
                    now = time.perf_counter()
                    lat.append(now - st[1])
                    done += 1
                    st[0], st[1] = b"", now
                    if sent < n:
                        s.send(REQ)
                        sent += 1
    total = time.perf_counter() - start
    print(json.dumps({"rps": n / total, "lat": sorted(lat)}))
    """
)

ROWS = [("keep-alive x1", "keep", 1), ("keep-alive x8", "keep", 8), ("new conn x1", "new", 1)]


def measure(lab: Lab, mode: str, conns: int, n: int) -> dict[str, float]:
    cmd = lab.command("bench/client", sys.executable, "-c", CLIENT, SERVER_IP, "8080", mode, str(conns), str(n))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"client failed: {out.stderr.strip()[-400:]}")
    data = json.loads(out.stdout)
    lat = data["lat"]
    return {"rps": data["rps"], "p50": lat[len(lat) // 2], "p90": lat[int(len(lat) * 0.9)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few requests, one pass (a smoke test)")
    parser.add_argument("--requests", type=int, help="requests per measurement (default 600, quick 200)")
    parser.add_argument("--passes", type=int, help="passes over all rows (default 3, quick 1)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args, _unknown = parser.parse_known_args(argv)
    n = args.requests or (200 if args.quick else 600)
    passes = args.passes or (1 if args.quick else 3)

    from ciliumpy.backends import load_backend

    try:
        load_backend("ebpf").close()
    except Exception as exc:  # no root, no libbpf: say so and skip, as bench_ebpf does
        print(f"bench_proxy: skipped, the eBPF backend is unavailable here: {exc}")
        return 0
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with Cluster(backend="ebpf") as cluster:
        cluster.apply(PODS, POLICY.format(rules=""))
        with Lab(cluster, serve=True, ipv6=False) as lab:
            policies = {"L3/L4": POLICY.format(rules=""), "L7": POLICY.format(rules=L7_RULES)}
            for p in range(passes):
                order = ["L3/L4", "L7"] if p % 2 == 0 else ["L7", "L3/L4"]
                for name in order:
                    cluster.apply(policies[name])
                    before = lab.proxied_requests
                    for label, mode, conns in ROWS:
                        measure(lab, mode, conns, max(20, n // 10))  # warm-up (connections, caches)
                        results.setdefault((label, name), []).append(measure(lab, mode, conns, n))
                    proxied = lab.proxied_requests - before
                    if (name == "L7") != (proxied > 0):
                        raise RuntimeError(f"{name} policy: {proxied} requests went through the proxy")
                    print(f"pass {p + 1}/{passes} {name}: done ({proxied} requests through the proxy)", flush=True)
            errors = lab.proxy_errors
    lines = [
        f"HTTP through the L7 proxy vs L3/L4-only policy: {n} requests per measurement, "
        f"{passes} pass(es), medians over passes; proxy errors: {errors}",
        "",
        "| row | policy | requests/s | p50 latency | p90 latency | throughput ratio | added p50 latency |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, _mode, _conns in ROWS:
        base = {k: statistics.median(m[k] for m in results[(label, "L3/L4")]) for k in ("rps", "p50", "p90")}
        for name in ("L3/L4", "L7"):
            med = {k: statistics.median(m[k] for m in results[(label, name)]) for k in ("rps", "p50", "p90")}
            ratio = med["rps"] / base["rps"]
            added = (med["p50"] - base["p50"]) * 1e6
            lines.append(
                f"| {label} | {name} | {med['rps']:,.0f} | {med['p50'] * 1e6:,.0f} µs | {med['p90'] * 1e6:,.0f} µs "
                f"| {ratio:.2f}x | {'' if name == 'L3/L4' else f'+{added:,.0f} µs'} |"
            )
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    rc = main()
    print(f"bench_proxy: {time.monotonic() - started:.0f} s")
    raise SystemExit(rc)
