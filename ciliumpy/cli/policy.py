"""``ciliumpy policy get|selectors``: the policy repository as ``cilium-dbg policy`` shows it."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ._inputs import Inputs, input_options, pass_inputs
from ._output import Column, emit, output_option

__all__ = ["policy"]


@click.group()
def policy() -> None:
    """The policy repository and its selector cache."""


def _labels(kind: str, namespace: str, name: str) -> list[dict[str, str]]:
    # The labels the agent gives every rule it derives from a Kubernetes object.
    out = [
        {"key": "io.cilium.k8s.policy.derived-from", "value": kind, "source": "k8s"},
        {"key": "io.cilium.k8s.policy.name", "value": name, "source": "k8s"},
    ]
    if namespace:
        out.append({"key": "io.cilium.k8s.policy.namespace", "value": namespace, "source": "k8s"})
    return out


@policy.command("get")
@click.option("-n", "--namespace", default=None, help="Only the rules of policies in this namespace.")
@input_options
@pass_inputs
def policy_get(inputs: Inputs, namespace: str | None) -> None:
    """Every rule of the repository as JSON (with the labels naming its policy), then the revision."""
    with inputs.cluster() as cluster:
        policies = list(cluster.policies)
    rules: list[dict[str, Any]] = []
    for pol in policies:
        ns = getattr(pol, "namespace", "") or ""
        if namespace is not None and ns != namespace:
            continue
        manifest = pol.to_manifest()
        spec = manifest.get("spec")
        specs = [spec] if spec else []
        specs += list(manifest.get("specs") or [])
        for rule in specs:
            rules.append({**rule, "labels": _labels(pol.KIND, ns, pol.name)})
    sys.stdout.write(json.dumps(rules, indent=2) + "\n")
    sys.stdout.write(f"Revision: {len(policies) + 1}\n")


@policy.command("selectors")
@output_option()
@input_options
@pass_inputs
def policy_selectors(inputs: Inputs, output: str) -> None:
    """Every peer selector in use: how many endpoints' policies use it and the identities it selects."""
    with inputs.cluster() as cluster:
        users: dict[Any, int] = {}
        for ref in cluster.endpoints:
            for sel in cluster.endpoint_policy(ref).selectors:
                users[sel] = users.get(sel, 0) + 1
        identities = cluster.identities()
        records = [
            {
                "selector": str(sel),
                "users": count,
                "identities": [str(i.id) for i in identities if sel.matches(i)] or ["(none)"],
            }
            for sel, count in users.items()
        ]
    records.sort(key=lambda r: str(r["selector"]))
    emit(
        records, [Column("SELECTOR", "selector"), Column("USERS", "users"), Column("IDENTITIES", "identities")], output
    )
