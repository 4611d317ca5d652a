"""``ciliumpy demo``: the seed scenario's tour, one verdict per row with the policy behind it."""

from __future__ import annotations

import sys
from typing import TextIO

import click

from .._cluster import Cluster
from .._verdict import Verdict
from ..examples import SEED_DNS_RECORDS, SEED_FLOWS, seed_path
from ._inputs import Inputs, input_options, pass_inputs
from ._output import render_table

__all__ = ["demo", "reason", "run_demo"]


def reason(v: Verdict) -> str:
    """One line saying why a verdict came out as it did (the policies, or the drop reason)."""
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
        drop = v.drop_reason
        hook = v.direction.name.lower() if v.direction is not None else ""
        by = f" by {v.policies[0]}" if v.policies else " (no rule allows it; default deny)"
        return f"{drop.value} {drop.text} at {hook}{by}" if drop else "dropped"
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


def run_demo(out: TextIO, backend: str | None) -> int:
    """Load the seed scenario on ``backend`` and write the verdict table with reasons to ``out``."""
    with Cluster.from_manifests(seed_path(), backend=backend) as cluster:
        cluster.add_dns_records(SEED_DNS_RECORDS, ttl=300)
        out.write(
            f"ciliumpy demo: seed scenario ({len(cluster.policies)} policies, {len(cluster.endpoints)} pods) "
            f"on the {cluster.backend.name} backend\n\n"
        )
        rows = []
        for src, dst, port, proto, http, _what in SEED_FLOWS:
            v = cluster.check(src, dst, port, proto, http=http)
            req = ""
            if http:
                req = f"gRPC {http['grpc']}" if "grpc" in http else f"{http['method']} {http['path']}"
            rows.append((src, dst, f"{port}/{proto}", req, v.verdict, reason(v)))
        out.write(render_table(("SOURCE", "DESTINATION", "PORT", "REQUEST", "VERDICT", "WHY"), rows))
        out.write("\nExplain any row with Verdict.explain(); for example the refused DNS lookup:\n\n")
        out.write(cluster.check("production/backend", "evil-site.com", 443).explain() + "\n")
    return 0


@click.command()
@input_options
@pass_inputs
def demo(inputs: Inputs) -> int:
    """Run the seed scenario (shipped with ciliumpy) and print every verdict with its reason."""
    if inputs.paths:
        raise click.UsageError("demo runs the built-in seed scenario and takes no -f")
    return run_demo(sys.stdout, inputs.backend)
