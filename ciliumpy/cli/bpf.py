"""``ciliumpy bpf ...``: the datapath's maps as ``cilium-dbg bpf`` prints them."""

from __future__ import annotations

import sys
from typing import Any

import click

from .._cluster import Cluster
from .._datapath import MapStateKey, PolicyEntry
from ._inputs import Inputs, input_options, pass_inputs
from ._output import Column, emit, output_option

__all__ = ["bpf", "endpoint_refs", "policy_map_records"]

AUTH_NAMES = {0: "disabled", 1: "spire", 2: "test-always-fail"}

POLICY_COLUMNS = [
    Column("POLICY", "policy"),
    Column("DIRECTION", "direction"),
    Column("LABELS (source:key[=value])", "labels"),
    Column("PORT/PROTO", "port_proto"),
    Column("PROXY PORT", "proxy_port"),
    Column("AUTH TYPE", "auth_type"),
    Column("BYTES", "bytes"),
    Column("PACKETS", "packets"),
    Column("PREFIX", "prefix"),
]


def endpoint_refs(cluster: Cluster, which: str) -> str:
    """The pod ref of ``which``: an endpoint ID (as cilium-dbg takes) or a ``namespace/pod`` ref."""
    if which.isdigit():
        by_id = {cluster.endpoint_id(ref): ref for ref in cluster.endpoints}
        if int(which) not in by_id:
            raise click.UsageError(f"no endpoint with ID {which} (see 'ciliumpy endpoint list')")
        return by_id[int(which)]
    cluster.endpoint(which)  # raises UnknownEndpointError naming the ref
    return which


def policy_map_records(cluster: Cluster, ref: str, numeric: bool = False) -> list[dict[str, Any]]:
    """One record per policy map entry of a pod, in cilium-dbg's order (denies, ingress, identity)."""
    entries = cluster.map_state(ref)
    counters = cluster.backend.policy_counters(cluster.endpoint_id(ref))

    def order(item: tuple[MapStateKey, PolicyEntry]) -> tuple[int, int, int, int, int]:
        k, e = item
        return (0 if e.deny else 1, int(k.direction), k.identity, k.protocol, k.port)

    records = []
    for key, entry in sorted(entries.items(), key=order):
        labels: list[str] | str
        if numeric or key.identity == 0:
            labels = "ANY" if key.identity == 0 else str(key.identity)
        else:
            ident = cluster.identity(key.identity)
            labels = list(ident.labels.strings()) if ident is not None else str(key.identity)
        packets, nbytes = counters.get(key, (0, 0))
        records.append(
            {
                "policy": "Deny" if entry.deny else "Allow",
                "direction": key.direction.label,
                "identity": key.identity,
                "labels": labels,
                "port_proto": key.port_proto_text(),
                "proxy_port": str(entry.proxy_port) if entry.proxy_port else "NONE",
                "auth_type": AUTH_NAMES.get(entry.auth_type, str(entry.auth_type)),
                "bytes": nbytes,
                "packets": packets,
                "prefix": key.lpm_prefix_length,
            }
        )
    return records


@click.group()
def bpf() -> None:
    """Inspect the BPF maps the datapath reads (policy, ipcache)."""


@bpf.group()
def policy() -> None:
    """Per-endpoint policy maps."""


@policy.command("get")
@click.argument("endpoint", required=False)
@click.option("--all", "all_", is_flag=True, help="Every endpoint's map, each under an 'Endpoint ID:' header.")
@click.option("-n", "--numeric", is_flag=True, help="Print identity numbers instead of labels.")
@output_option()
@input_options
@pass_inputs
def policy_get(inputs: Inputs, endpoint: str | None, all_: bool, numeric: bool, output: str) -> None:
    """Print ENDPOINT's policy map (an endpoint ID or NAMESPACE/POD) like cilium-dbg bpf policy get."""
    if (endpoint is None) == (not all_):
        raise click.UsageError("give either ENDPOINT or --all")
    columns = [Column("IDENTITY", "identity") if numeric and c.key == "labels" else c for c in POLICY_COLUMNS]
    with inputs.cluster() as cluster:
        if endpoint is not None:
            ref = endpoint_refs(cluster, endpoint)
            records = policy_map_records(cluster, ref, numeric)
            if output in ("table", "wide") and not records:
                sys.stdout.write("Policy stats empty. Perhaps the policy enforcement is disabled?\n")
                return
            emit(records, columns, output)
            return
        refs = sorted(cluster.endpoints, key=cluster.endpoint_id)
        if output in ("json", "yaml"):
            everything = [
                {"endpoint_id": cluster.endpoint_id(ref), "pod": ref, "entries": policy_map_records(cluster, ref)}
                for ref in refs
            ]
            emit(everything, [], output)
            return
        for ref in refs:
            sys.stdout.write(f"Endpoint ID: {cluster.endpoint_id(ref)}\nPod: {ref}\n")
            records = policy_map_records(cluster, ref, numeric)
            if records:
                emit(records, columns, output)
            else:
                sys.stdout.write("Policy stats empty. Perhaps the policy enforcement is disabled?\n")
            sys.stdout.write("\n")


@bpf.group()
def ipcache() -> None:
    """The IP prefix -> identity map."""


@ipcache.command("list")
@output_option()
@input_options
@pass_inputs
def ipcache_list(inputs: Inputs, output: str) -> None:
    """Every prefix with its identity, like cilium-dbg bpf ipcache list."""
    with inputs.cluster() as cluster:
        entries = cluster.ipcache()
    records = [
        {
            "prefix": str(net),
            "identity": num,
            "info": f"identity={num} encryptkey=0 tunnelendpoint=0.0.0.0 flags=<none>",
        }
        for net, num in sorted(entries.items(), key=lambda item: (item[0].version, item[0]))
    ]
    emit(records, [Column("IP PREFIX/ADDRESS", "prefix"), Column("IDENTITY", "info")], output)
