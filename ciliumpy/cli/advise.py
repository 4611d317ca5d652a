"""``ciliumpy advise FLOWS.json``: least-privilege CiliumNetworkPolicies from recorded flows."""

from __future__ import annotations

import json
import sys

import click

from ._inputs import Inputs, input_options, pass_inputs

__all__ = ["advise"]


@click.command()
@click.argument("flows", type=click.Path(dir_okay=False, exists=True))
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@input_options
@pass_inputs
def advise(inputs: Inputs, flows: str, output: str) -> int:
    """Print verified least-privilege CiliumNetworkPolicies for the connections FLOWS show
    (recorded with hubble observe -o json). With -f, the manifests give the endpoints;
    otherwise they are built from the flows. Apply the output with kubectl apply -f -."""
    from ..advisor import advise as run_advise
    from ..advisor import to_yaml

    cluster = inputs.cluster() if inputs.paths else None
    policies = run_advise(flows, cluster)
    if output == "json":
        sys.stdout.write(json.dumps([p.to_manifest() for p in policies], indent=2) + "\n")
    else:
        sys.stdout.write(to_yaml(policies))
    return 0
