"""``ciliumpy encrypt status``: transparent encryption as ``cilium encrypt status`` reports it."""

from __future__ import annotations

import json
import sys

import click

from ._inputs import Inputs, input_options, pass_inputs

__all__ = ["encrypt"]


@click.group()
def encrypt() -> None:
    """Transparent encryption (WireGuard) between nodes."""


@encrypt.command("status")
@click.option("--node", default=None, metavar="NAME", help="Report one node only (default: every node).")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json", "yaml"]),
    default="text",
    show_default=True,
    help="Output format: cilium's text, or every node's device and peers as JSON/YAML.",
)
@input_options
@pass_inputs
def encrypt_status(inputs: Inputs, node: str | None, output: str) -> None:
    """Mode, interface, public key and number of peers, per node, from the Helm values (--values).

    Keys are made when the cluster is built, as each agent makes its own at first start.
    """
    from ..encryption import wireguard

    with inputs.cluster() as cluster:
        wg = wireguard(cluster)
        if output == "text":
            sys.stdout.write(wg.status(node))
            return
        data = wg.to_dict() if wg.enabled else {}
        if node is not None:
            wg.node(node)  # an unknown node is an error, not an empty answer
            data = {node: data.get(node)} if data else {}
        if output == "json":
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
        else:
            import yaml

            sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
