"""``ciliumpy service list``: load-balancing state as ``cilium-dbg service list`` prints it."""

from __future__ import annotations

from typing import Any

import click

from .._datapath import Protocol
from .._services import ServiceFrontend
from ._inputs import Inputs, input_options, pass_inputs
from ._output import Column, emit, output_option

__all__ = ["service", "service_records"]

COLUMNS = [
    Column("ID", "id"),
    Column("Frontend", "frontend"),
    Column("Service Type", "type"),
    Column("Backend", "backends"),
]


def service_records(frontends: list[ServiceFrontend]) -> list[dict[str, Any]]:
    """One record per frontend, by ID: ``N => address:port/PROTO (state)`` per backend."""
    records = []
    for fe in sorted(frontends, key=lambda f: f.id):
        proto = Protocol(fe.frontend.protocol).label
        records.append(
            {
                "id": fe.id,
                "frontend": str(fe.frontend),
                "type": fe.service.type,
                "service": fe.ref,
                "backends": [f"{i} => {b}/{proto} ({b.state.label})" for i, b in enumerate(fe.backends, 1)],
            }
        )
    return records


@click.group()
def service() -> None:
    """Services: frontends and their backends."""


@service.command("list")
@output_option()
@input_options
@pass_inputs
def service_list(inputs: Inputs, output: str) -> None:
    """Every service frontend (cluster IP, port, protocol) with its backends and their states."""
    with inputs.cluster() as cluster:
        records = service_records(list(cluster.service_table.frontends(cluster.endpoints)))
    emit(records, COLUMNS, output)
