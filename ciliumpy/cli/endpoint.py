"""``ciliumpy endpoint list``: the endpoints as ``cilium-dbg endpoint list`` prints them."""

from __future__ import annotations

import click

from ._inputs import Inputs, input_options, pass_inputs
from ._output import Column, emit, output_option

__all__ = ["endpoint"]

# cilium-dbg's two-line header: the enforcement columns continue on a second line.
COLUMNS = [
    Column("ENDPOINT\n", "endpoint_id"),
    Column("POLICY (ingress)\nENFORCEMENT", "ingress"),
    Column("POLICY (egress)\nENFORCEMENT", "egress"),
    Column("IDENTITY\n", "identity"),
    Column("LABELS (source:key[=value])\n", "labels"),
    Column("IPv6\n", "ipv6"),
    Column("IPv4\n", "ipv4"),
    Column("STATUS\n", "state"),
]


@click.group()
def endpoint() -> None:
    """Cilium endpoints (one per pod that is not hostNetwork)."""


@endpoint.command("list")
@output_option()
@input_options
@pass_inputs
def endpoint_list(inputs: Inputs, output: str) -> None:
    """Every endpoint: ID, enforcement per direction, identity, labels (one per line), addresses."""
    from .get import endpoint_records

    with inputs.cluster() as cluster:
        records = sorted(endpoint_records(cluster), key=lambda r: int(r["endpoint_id"]))
    for r in records:
        r["ingress"] = "Enabled" if r.pop("ingress_enforcement") else "Disabled"
        r["egress"] = "Enabled" if r.pop("egress_enforcement") else "Disabled"
        r["labels"] = sorted(r["labels"]) or ["no labels"]
        r["pod"] = f"{r.pop('namespace')}/{r.pop('name')}"
    emit(records, COLUMNS, output)
