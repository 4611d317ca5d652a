"""``ciliumpy status``: the agent's health summary (``cilium-dbg status``), for the loaded cluster."""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

import click

from ._inputs import Inputs, input_options, pass_inputs
from ._output import FORMATS

__all__ = ["status"]


@click.command()
@click.option("-o", "--output", type=click.Choice(FORMATS), default="table", show_default=True, help="Output format.")
@input_options
@pass_inputs
def status(inputs: Inputs, output: str) -> None:
    """Backend, endpoints, identities, policies, ipcache, proxy redirects, services."""
    with inputs.cluster() as cluster:
        identities = cluster.identities()
        kinds = Counter(p.KIND for p in cluster.policies)
        redirects = sorted({port for ref in cluster.endpoints for port in cluster.endpoint_policy(ref).redirects})
        reserved = sum(1 for i in identities if i.id < 256)
        local = sum(1 for i in identities if i.id >= 1 << 24)
        info: dict[str, Any] = {
            "Backend": cluster.backend.name,
            "Cluster": cluster.config.cluster_name,
            "Policy enforcement": cluster.config.policy_enforcement,
            "Nodes": len(cluster.nodes),
            "Endpoints": f"{len(cluster.endpoints)}/{len(cluster.endpoints)} ready",
            "hostNetwork pods": len(cluster.host_network_pods),
            "Identities": (
                f"{len(identities)} ({reserved} reserved, {len(identities) - reserved - local} global, "
                f"{local} local CIDR/FQDN)"
            ),
            "Policies": f"{len(cluster.policies)} "
            + ("(" + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + ")" if kinds else ""),
            "IPCache": f"{len(cluster.ipcache())} entries",
            "Proxy Status": f"OK, {len(redirects)} redirects active"
            + (f" on ports {', '.join(map(str, redirects))}" if redirects else ""),
            "Services": len(cluster.services),
            "FQDN cache": f"{len(cluster.fqdn_cache.entries())} entries",
        }
    if output == "json":
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
    elif output == "yaml":
        import yaml

        sys.stdout.write(yaml.safe_dump(info, sort_keys=False))
    else:
        width = max(len(k) for k in info) + 2
        for key, value in info.items():
            sys.stdout.write(f"{key + ':':<{width}}{value}\n")
