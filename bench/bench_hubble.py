"""Hubble benchmark: the flow store's cost on check(), observe() over 1,000,000 flows, metrics.

Measured in one run, each against a baseline of the same run:

* ``check()`` on the seed scenario with the flow store attached (events decoded into the
  ring as the cluster's event log fills, i.e. the whole cost) against the same checks with
  the event log switched off. Target (issue 11): ratio <= 1.3.
* ``observe()`` filtering over 1,000,000 stored flows (records of real decisions on a
  1,000-pod cluster), in flows scanned per second, for several hubble filter combinations.
  Target: >= 1,000,000 flows/s.
* Hubble metrics (the article's ``dns, drop, tcp, flow, icmp, http``): cost per flow,
  against building the flow object the metrics read.

Usage: ``python bench/bench_hubble.py [--flows N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

from ciliumpy import Cluster
from ciliumpy.examples import SEED_DNS_RECORDS, seed_path
from ciliumpy.hubble import FlowStore, Metrics, build_filters, store_of
from ciliumpy.hubble._filter import items_from_kwargs

SEED_CHECKS: list[tuple[str, str, int | None, str]] = [
    ("production/frontend", "production/backend", 8080, "TCP"),
    ("production/frontend", "production/database", 5432, "TCP"),
    ("production/backend", "production/database", 5432, "TCP"),
    ("world", "production/frontend", 8080, "TCP"),
    ("world", "ingress-nginx/ingress-nginx-controller", 80, "TCP"),
    ("production/api-gateway", "production/product-service", 8080, "TCP"),
    ("production/product-service", "production/user-service", 8080, "TCP"),
    ("production/frontend", "production/backend", None, "ICMP"),
]


def _seed(store: bool) -> Cluster:
    c = Cluster.from_manifests(seed_path())
    c.add_dns_records(SEED_DNS_RECORDS)
    if store:
        store_of(c)  # the default Hubble capacity (4095 flows); the log drains into it
    else:
        c.events.capacity = 0
    return c


def _time_checks(c: Cluster, n: int) -> float:
    checks = SEED_CHECKS
    # CPU time of this process: the machine is shared, and waiting for a core is not cost.
    start = time.process_time()
    for i in range(n):
        src, dst, port, proto = checks[i % len(checks)]
        c.check(src, dst, port, proto)
    if c.events.capacity:
        len(store_of(c))  # decode what is still pending: part of the cost
    return (time.process_time() - start) / n


def bench_check(rounds: int, n: int) -> tuple[float, float, float, float]:
    """(median off, median on, min off, min on) seconds per check."""
    off, on = _seed(False), _seed(True)
    _time_checks(off, 200)
    _time_checks(on, 200)
    t_off: list[float] = []
    t_on: list[float] = []
    for _ in range(rounds):  # interleaved, so load changes on the machine hit both alike
        t_off.append(_time_checks(off, n))
        t_on.append(_time_checks(on, n))
    return statistics.median(t_off), statistics.median(t_on), min(t_off), min(t_on)


def _big_cluster() -> Cluster:
    c = Cluster()
    for ns in range(50):
        c.add_namespace(f"ns{ns}", labels={"team": f"t{ns % 5}"})
        for pod in range(20):
            c.add_endpoint(f"ns{ns}/app{pod}-7d9f", labels={"app": f"app{pod}", "tier": "web" if pod % 2 else "db"})
    policies = []
    for ns in range(50):
        policies.append(
            {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumNetworkPolicy",
                "metadata": {"name": "db-from-web", "namespace": f"ns{ns}"},
                "spec": {
                    "endpointSelector": {"matchLabels": {"tier": "db"}},
                    "ingress": [
                        {
                            "fromEndpoints": [{"matchLabels": {"tier": "web"}}],
                            "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}],
                        }
                    ],
                },
            }
        )
    c.apply(*policies)
    return c


def fill_store(total: int) -> tuple[FlowStore, float]:
    """A store of ``total`` flows: decoded records of real checks on a 1,000-pod cluster."""
    c = _big_cluster()
    c.events.capacity = 0
    verdicts = []
    refs = sorted(c.endpoints)
    for i in range(3000):
        src = refs[(i * 7) % len(refs)]
        dst = refs[(i * 13 + 1) % len(refs)]
        verdicts.append(c.check(src, dst, 5432 if i % 3 else 8080))
    store = FlowStore(capacity=total)
    start = time.process_time()
    i = 0
    while len(store.records) < total:
        store._verdict_records(verdicts[i % len(verdicts)])
        i += 1
    return store, time.process_time() - start


def bench_observe(store: FlowStore) -> list[tuple[str, int, float]]:
    cases: list[tuple[str, dict[str, Any]]] = [
        ("--verdict DROPPED", {"verdict": "DROPPED"}),
        ("--namespace ns7", {"namespace": "ns7"}),
        ("--to-pod ns3/app4 --type policy-verdict", {"to_pod": "ns3/app4", "type": "policy-verdict"}),
        ("--label k8s:tier=db --port 5432", {"label": "k8s:tier=db", "port": 5432}),
        ("--not --namespace ns1 --verdict FORWARDED", {"not_namespace": "ns1", "verdict": "FORWARDED"}),
        ("--protocol tcp --traffic-direction ingress", {"protocol": "tcp", "traffic_direction": "ingress"}),
    ]
    out = []
    n = len(store.records)
    for label, kwargs in cases:
        allow, deny = build_filters(items_from_kwargs(kwargs))
        times = []
        found = 0
        for _ in range(3):
            start = time.process_time()
            found = len(store.select(allow, deny))
            times.append(time.process_time() - start)
        out.append((label, found, n / min(times)))
    return out


def bench_metrics(n: int) -> tuple[float, float]:
    c = _seed(True)
    store = store_of(c, capacity=100_000)
    i = 0
    while len(store) < n:
        src, dst, port, proto = SEED_CHECKS[i % len(SEED_CHECKS)]
        c.check(src, dst, port, proto)
        i += 1
    records = list(store.records)[:n]
    start = time.perf_counter()
    flows = [store.flow_of(r) for r in records]
    build = (time.perf_counter() - start) / len(flows)
    m = Metrics(None, enabled=["dns", "drop", "tcp", "flow", "icmp", "http"])
    start = time.perf_counter()
    for f in flows:
        m.process(f)
    per_flow = (time.perf_counter() - start) / len(flows)
    return build, per_flow


def _table(rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=1_000_000, help="flows in the store for observe()")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds of the check() comparison")
    parser.add_argument("--checks", type=int, default=1000, help="checks per round")
    args, _ = parser.parse_known_args(argv)

    off, on, off_min, on_min = bench_check(args.rounds, args.checks)
    rows = [("measure", "value", "target")]
    rows.append(("check() store off (CPU time, median of rounds)", f"{off * 1e6:.1f} us", ""))
    rows.append(("check() store on, decoding included", f"{on * 1e6:.1f} us", ""))
    rows.append(("  ratio on/off (medians)", f"{on / off:.2f}x", "<= 1.3x"))
    rows.append(("  ratio on/off (fastest rounds)", f"{on_min / off_min:.2f}x", "<= 1.3x"))

    gc.collect()
    store, fill = fill_store(args.flows)
    rows.append(
        (f"decoding {len(store.records):,} flows into the store", f"{len(store.records) / fill:,.0f} flows/s", "")
    )
    for label, found, rate in bench_observe(store):
        rows.append((f"observe {label} ({found:,} match)", f"{rate:,.0f} flows/s", ">= 1,000,000"))
    last = store.select(*build_filters(items_from_kwargs({"verdict": "DROPPED"})), last=20)
    start = time.perf_counter()
    flows = [store.flow_of(r) for r in last]
    rows.append(
        ("  + building the last 20 matches as Flow objects", f"{(time.perf_counter() - start) * 1e3:.2f} ms", "")
    )
    assert len(flows) == 20
    del store, last, flows
    gc.collect()

    build, per_flow = bench_metrics(20_000)
    rows.append(("Flow object built from a stored record", f"{build * 1e6:.1f} us/flow", ""))
    rows.append(("metrics dns,drop,tcp,flow,icmp,http", f"{per_flow * 1e6:.1f} us/flow", ""))
    rows.append(("  ratio metrics / check() store off", f"{per_flow / off:.2f}x", ""))
    _table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
