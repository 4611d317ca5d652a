"""The ``ciliumpy`` command: ``demo``, ``check``, ``bpf-policy`` and ``identities``.

Output mirrors the tools platform engineers know: tables in the layout of
``cilium-dbg bpf policy get`` and ``cilium-dbg identity list``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TextIO

from ._cluster import Cluster
from ._datapath import MapStateKey, PolicyEntry
from ._verdict import Verdict
from .exceptions import CiliumpyError

__all__ = ["format_policy_map", "main", "seed_path"]

AUTH_NAMES = {0: "disabled", 1: "spire", 2: "test-always-fail"}


def seed_path() -> Path:
    """Where the seed scenario's manifests live (the repository's ``examples/seed``)."""
    repo = Path(__file__).resolve().parent.parent / "examples" / "seed"
    if repo.is_dir():
        return repo
    return Path(str(resources.files("ciliumpy") / "data" / "seed"))


# (source, destination, port, protocol, http request or None, what the row shows)
DEMO_FLOWS: list[tuple[str, str, int, str, dict[str, str] | None, str]] = [
    ("production/frontend", "production/backend", 8080, "TCP", None, "L3/L4 allow"),
    ("production/frontend", "production/database", 5432, "TCP", None, "default deny"),
    ("production/backend", "production/database", 5432, "TCP", None, "L3/L4 allow"),
    ("production/database", "production/backend", 8080, "TCP", None, "default deny (egress)"),
    ("world", "production/frontend", 8080, "TCP", None, "CCNP denies world"),
    ("world", "ingress-nginx/ingress-nginx-controller", 80, "TCP", None, "CCNP spares ingress-nginx"),
    (
        "production/frontend",
        "production/api-gateway",
        8080,
        "TCP",
        {"method": "GET", "path": "/api/products"},
        "L7 HTTP",
    ),
    (
        "production/frontend",
        "production/api-gateway",
        8080,
        "TCP",
        {"method": "POST", "path": "/api/orders"},
        "L7 HTTP",
    ),
    (
        "production/frontend",
        "production/api-gateway",
        8080,
        "TCP",
        {"method": "GET", "path": "/api/users/42"},
        "L7 HTTP regex",
    ),
    (
        "production/frontend",
        "production/api-gateway",
        8080,
        "TCP",
        {"method": "GET", "path": "/api/users/admin"},
        "L7 HTTP regex",
    ),
    (
        "production/frontend",
        "production/api-gateway",
        8080,
        "TCP",
        {"method": "DELETE", "path": "/api/orders"},
        "L7 HTTP",
    ),
    ("production/frontend", "production/api-gateway", 8080, "TCP", None, "L7 without request"),
    ("production/frontend", "production/backend", 50051, "TCP", {"grpc": "/mypackage.MyService/GetItems"}, "gRPC"),
    ("production/frontend", "production/backend", 50051, "TCP", {"grpc": "/mypackage.MyService/DeleteItem"}, "gRPC"),
    ("production/backend", "api.stripe.com", 443, "TCP", None, "DNS + toFQDNs"),
    ("production/backend", "s3.amazonaws.com", 443, "TCP", None, "DNS + toFQDNs pattern"),
    ("production/backend", "s3.us-east-1.amazonaws.com", 443, "TCP", None, "'*' spans one label only"),
    ("production/backend", "evil-site.com", 443, "TCP", None, "DNS refused"),
    ("production/backend", "198.51.100.66", 443, "TCP", None, "IP never resolved"),
    ("production/api-gateway", "production/product-service", 8080, "TCP", None, "microservice"),
    ("production/api-gateway", "production/order-service", 8080, "TCP", None, "microservice"),
    ("production/product-service", "production/user-service", 8080, "TCP", None, "microservice"),
]

DEMO_DNS = {
    "api.stripe.com": ["198.51.100.10"],
    "s3.amazonaws.com": ["198.51.100.20"],
    "s3.us-east-1.amazonaws.com": ["198.51.100.21"],
    "evil-site.com": ["198.51.100.66"],
}


def _reason(v: Verdict) -> str:
    if v.failure:
        if v.dns is not None and v.dns.rcode == "REFUSED":
            who = ", ".join(
                sorted(
                    {
                        f"{o.kind} {o.namespace}/{o.name}"
                        for h in (v.egress, v.ingress)
                        if h is not None
                        for o in h.origins
                    }
                )
            )
            return f"DNS lookup REFUSED by the DNS proxy: {v.dns.name} matches no DNS rule of {who}"
        return v.failure
    if not v.allowed:
        if v.http_status:
            l7 = v.l7
            return f"HTTP {v.http_status}: no L7 rule matches" + (
                f" ({', '.join(str(o) for o in sorted(l7.matched_origins))})"
                if l7 is not None and l7.matched_origins
                else ""
            )
        reason = v.drop_reason
        hook = v.direction.name.lower() if v.direction is not None else ""
        by = f" by {v.policies[0]}" if v.policies else " (no rule allows it; default deny)"
        return f"{reason.value} {reason.text} at {hook}{by}" if reason else "dropped"
    names = ", ".join(
        f"{o.kind} {o.namespace + '/' if o.namespace else ''}{o.name}" for o in v.policies if o.kind != "reserved"
    )
    extra = ""
    if v.verdict == "REDIRECTED":
        redirect = v.ingress if v.ingress is not None and v.ingress.result.proxy_port else v.egress
        if redirect is not None and redirect.accepts:
            extra = f"; proxy accepts {'; '.join(redirect.accepts)}"
    if v.http_status:
        extra = f"; HTTP {v.http_status}"
    return (names or "not enforced") + extra


def demo(out: TextIO, backend: str | None) -> int:
    """Load the seed scenario and print a verdict table with reasons."""
    cluster = Cluster.from_manifests(seed_path(), backend=backend)
    cluster.add_dns_records(DEMO_DNS, ttl=300)
    out.write(
        f"ciliumpy demo: seed scenario ({len(cluster.policies)} policies, {len(cluster.endpoints)} pods) "
        f"on the {cluster.backend.name} backend\n\n"
    )
    rows = [("SOURCE", "DESTINATION", "PORT", "REQUEST", "VERDICT", "WHY")]
    for src, dst, port, proto, http, _what in DEMO_FLOWS:
        v = cluster.check(src, dst, port, proto, http=http)
        req = ""
        if http:
            req = f"gRPC {http['grpc']}" if "grpc" in http else f"{http['method']} {http['path']}"
        rows.append((src, dst, f"{port}/{proto}", req, v.verdict, _reason(v)))
    out.write(_table(rows))
    out.write("\nExplain any row with Verdict.explain(); for example the refused DNS lookup:\n\n")
    out.write(cluster.check("production/backend", "evil-site.com", 443).explain() + "\n")
    cluster.close()
    return 0


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)]
        lines.append("   ".join([*cells, r[-1]]).rstrip())
    return "\n".join(lines) + "\n"


def format_policy_map(cluster: Cluster, ref: str, numeric: bool = False) -> str:
    """A pod's map state in the layout of ``cilium-dbg bpf policy get``."""
    entries = cluster.map_state(ref)
    counters = cluster.backend.policy_counters(cluster.endpoint_id(ref))
    if not entries:
        return "Policy stats empty. Perhaps the policy enforcement is disabled?\n"

    def order(item: tuple[MapStateKey, PolicyEntry]) -> tuple[int, int, int, int, int]:
        k, e = item
        return (0 if e.deny else 1, int(k.direction), k.identity, k.protocol, k.port)

    rows = [
        (
            "POLICY",
            "DIRECTION",
            "IDENTITY" if numeric else "LABELS (source:key[=value])",
            "PORT/PROTO",
            "PROXY PORT",
            "AUTH TYPE",
            "BYTES",
            "PACKETS",
            "PREFIX",
        )
    ]
    for key, entry in sorted(entries.items(), key=order):
        if numeric or key.identity == 0:
            who = "ANY" if key.identity == 0 else str(key.identity)
        else:
            ident = cluster.identity(key.identity)
            who = ", ".join(ident.labels.strings()) if ident is not None else str(key.identity)
        packets, nbytes = counters.get(key, (0, 0))
        rows.append(
            (
                "Deny" if entry.deny else "Allow",
                key.direction.label,
                who,
                key.port_proto_text(),
                str(entry.proxy_port) if entry.proxy_port else "NONE",
                AUTH_NAMES.get(entry.auth_type, str(entry.auth_type)),
                str(nbytes),
                str(packets),
                str(key.lpm_prefix_length),
            )
        )
    return _table(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ciliumpy`` console script."""
    parser = argparse.ArgumentParser(prog="ciliumpy", description="Cilium network policy, offline.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run the seed scenario and print verdicts")
    p_demo.add_argument("--backend", default=None, help="simulator (default) or ebpf")

    p_check = sub.add_parser("check", help="can SRC reach DST on PORT?")
    p_check.add_argument("-f", "--filename", action="append", required=True, help="manifest file or directory")
    p_check.add_argument("src")
    p_check.add_argument("dst")
    p_check.add_argument("port", type=int)
    p_check.add_argument("--protocol", default="TCP")
    p_check.add_argument("--http-method")
    p_check.add_argument("--http-path")
    p_check.add_argument("--backend", default=None)

    p_map = sub.add_parser("bpf-policy", help="print a pod's policy map like cilium-dbg bpf policy get")
    p_map.add_argument("-f", "--filename", action="append", required=True)
    p_map.add_argument("pod", help="namespace/name")
    p_map.add_argument("-n", "--numeric", action="store_true")

    p_ids = sub.add_parser("identities", help="list identities like cilium-dbg identity list")
    p_ids.add_argument("-f", "--filename", action="append", required=True)

    args = parser.parse_args(argv)
    out = sys.stdout
    try:
        if args.command == "demo":
            return demo(out, args.backend)
        if args.command == "check":
            cluster = Cluster.from_manifests(*args.filename, backend=args.backend)
            http = None
            if args.http_method or args.http_path:
                http = {"method": args.http_method or "GET", "path": args.http_path or "/"}
            v = cluster.check(args.src, args.dst, args.port, args.protocol, http=http)
            out.write(v.explain() + "\n")
            return 0 if v.allowed else 1
        if args.command == "bpf-policy":
            cluster = Cluster.from_manifests(*args.filename)
            out.write(format_policy_map(cluster, args.pod, args.numeric))
            return 0
        if args.command == "identities":
            cluster = Cluster.from_manifests(*args.filename)
            rows = [("ID", "LABELS")]
            for ident in cluster.identities():
                labels = ident.labels.strings() or ["no labels"]
                rows.append((str(ident.id), labels[0]))
                rows.extend(("", lbl) for lbl in labels[1:])
            out.write(_table(rows))
            return 0
    except CiliumpyError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
