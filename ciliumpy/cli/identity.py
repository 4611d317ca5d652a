"""``ciliumpy identity list``: security identities as ``cilium-dbg identity list`` prints them."""

from __future__ import annotations

import click

from ._inputs import Inputs, input_options, pass_inputs
from ._output import Column, emit, output_option

__all__ = ["identity"]


@click.group()
def identity() -> None:
    """Security identities."""


@identity.command("list")
@output_option()
@input_options
@pass_inputs
def identity_list(inputs: Inputs, output: str) -> None:
    """Every identity (reserved, global, local CIDR/FQDN) with its labels, one per line."""
    with inputs.cluster() as cluster:
        records = [
            {"id": ident.id, "labels": list(ident.labels.strings()) or ["no labels"]}
            for ident in sorted(cluster.identities(), key=lambda i: i.id)
        ]
    emit(records, [Column("ID", "id"), Column("LABELS", "labels")], output)
