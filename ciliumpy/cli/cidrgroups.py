"""``ciliumpy get cidrgroups``: the CiliumCIDRGroups, their CIDRs, labels and identities."""

from __future__ import annotations

import ipaddress

import click

from ._inputs import Inputs, input_options, pass_inputs
from ._output import Column, emit, output_option

__all__ = ["get_cidrgroups"]

COLUMNS = [
    Column("NAME", "name"),
    Column("CIDRS", "cidrs"),
    Column("LABELS", "labels"),
    Column("IDENTITIES", "identities"),
    Column("API VERSION", "api_version", wide=True),
]


@click.command("cidrgroups")
@output_option(wide=True)
@input_options
@pass_inputs
def get_cidrgroups(inputs: Inputs, output: str) -> None:
    """Every CiliumCIDRGroup with its CIDRs, labels and the ipcache identity of each CIDR."""
    with inputs.cluster() as cluster:
        ipcache = cluster.ipcache()
        records = []
        for doc in cluster.to_manifests():
            if doc["kind"] != "CiliumCIDRGroup":
                continue
            cidrs = list(doc["spec"]["externalCIDRs"])
            ids = [ipcache.get(ipaddress.ip_network(c)) for c in cidrs]
            labels = doc["metadata"].get("labels", {})
            records.append(
                {
                    "name": doc["metadata"]["name"],
                    "cidrs": cidrs,
                    "labels": [f"{k}={v}" for k, v in sorted(labels.items())] or ["<none>"],
                    "identities": [str(i) if i is not None else "-" for i in ids],
                    "api_version": doc["apiVersion"],
                }
            )
    emit(sorted(records, key=lambda r: str(r["name"])), COLUMNS, output)
