"""``ciliumpy get cnp|ccnp|netpol|pods|endpoints``: objects as ``kubectl get`` lists them.

Policies carry Cilium's ``VALID`` column: a policy the agent could not take is listed with
``False`` (and, with ``-o wide``, why), and the others still apply, as in a cluster.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .._cluster import Cluster
from ._inputs import Inputs, input_options, pass_inputs
from ._output import Column, emit, output_option
from ._policies import PolicyState, load_checked

__all__ = ["get"]

F = TypeVar("F", bound=Callable[..., Any])


def namespace_options(func: F) -> F:
    """``-n/--namespace NS`` (default ``default``, as kubectl) and ``-A/--all-namespaces``."""
    func = click.option("-A", "--all-namespaces", "all_namespaces", is_flag=True, help="List every namespace.")(func)
    return click.option("-n", "--namespace", default="default", show_default=True, help="Namespace to list.")(func)


def _scope(records: list[dict[str, Any]], namespace: str, all_namespaces: bool, what: str) -> list[dict[str, Any]]:
    shown = records if all_namespaces else [r for r in records if r.get("namespace") in (namespace, "")]
    if not shown:
        where = "" if all_namespaces else f" in {namespace} namespace"
        sys.stderr.write(f"No {what} found{where}.\n")
    return shown


def _columns(all_namespaces: bool, columns: list[Column]) -> list[Column]:
    return [Column("NAMESPACE", "namespace"), *columns] if all_namespaces else columns


@click.group()
def get() -> None:
    """List objects (policies with their validity, pods, Cilium endpoints) like kubectl get."""


def _policy_records(states: list[PolicyState], kind: str) -> list[dict[str, Any]]:
    return [
        {
            "kind": s.kind,
            "namespace": s.namespace,
            "name": s.name,
            "valid": "True" if s.valid else "False",
            "source": s.source,
            "reason": s.errors[0].reason if s.errors else "",
            "errors": [str(e) for e in s.errors],
        }
        for s in sorted(states, key=lambda s: (s.namespace, s.name))
        if s.kind == kind
    ]


POLICY_COLUMNS = [
    Column("NAME", "name"),
    Column("VALID", "valid"),
    Column("SOURCE", "source", wide=True),
    Column("REASON", "reason", wide=True),
]


def _policy_command(name: str, kind: str, aliases: str, namespaced: bool) -> click.Command:
    @output_option(wide=True)
    @input_options
    @pass_inputs
    def command(inputs: Inputs, output: str, namespace: str = "default", all_namespaces: bool = False) -> None:
        cluster, states, errors = load_checked(inputs)
        cluster.close()
        # Problems outside the listed policies (a file that does not parse, a broken Pod)
        # would otherwise hide silently: say them, as the agent logs them.
        listed = {id(e) for state in states for e in state.errors}
        for err in errors:
            if id(err) not in listed:
                sys.stderr.write(f"ciliumpy: warning: {err}\n")
        records = _policy_records(states, kind)
        if namespaced:
            records = _scope(records, namespace, all_namespaces, "resources")
            emit(records, _columns(all_namespaces, POLICY_COLUMNS), output)
        else:
            emit(records, POLICY_COLUMNS, output)

    command.__doc__ = f"{kind}s with Cilium's VALID column ({aliases})."
    if namespaced:
        command = namespace_options(command)
    return click.command(name, help=command.__doc__)(command)


for _name, _kind, _aliases, _namespaced in (
    ("cnp", "CiliumNetworkPolicy", "also ciliumnetworkpolicies", True),
    ("ccnp", "CiliumClusterwideNetworkPolicy", "also ciliumclusterwidenetworkpolicies", False),
    ("netpol", "NetworkPolicy", "also networkpolicies", True),
):
    _command = _policy_command(_name, _kind, _aliases, _namespaced)
    get.add_command(_command, _name)
    get.add_command(_command, _aliases.removeprefix("also "))


def _pod_records(cluster: Cluster) -> list[dict[str, Any]]:
    records = []
    for ep in (*cluster.endpoints.values(), *cluster.host_network_pods.values()):
        owner = f"{ep.owners[0][0]}/{ep.owners[0][1]}" if ep.owners else ""
        records.append(
            {
                "namespace": ep.namespace,
                "name": ep.name,
                "ip": ", ".join(str(ip) for ip in ep.ips),
                "node": ep.node or "<none>",
                "host_network": ep.host_network,
                "controlled_by": owner,
                "labels": [f"{k}={v}" for k, v in sorted(ep.labels.items())],
            }
        )
    return sorted(records, key=lambda r: (r["namespace"], r["name"]))


POD_COLUMNS = [
    Column("NAME", "name"),
    Column("IP", "ip"),
    Column("NODE", "node"),
    Column("HOST NETWORK", "host_network", wide=True),
    Column("CONTROLLED BY", "controlled_by", wide=True),
    Column("LABELS", "labels", wide=True),
]


@get.command("pods")
@namespace_options
@output_option(wide=True)
@input_options
@pass_inputs
def get_pods(inputs: Inputs, namespace: str, all_namespaces: bool, output: str) -> None:
    """Pods (hostNetwork pods too, which are not Cilium endpoints)."""
    with inputs.cluster() as cluster:
        records = _scope(_pod_records(cluster), namespace, all_namespaces, "resources")
    emit(records, _columns(all_namespaces, POD_COLUMNS), output)


def _enforcement(on: bool) -> str:
    return "<status disabled>" if not on else "Enabled"


ENDPOINT_COLUMNS = [
    Column("NAME", "name"),
    Column("SECURITY IDENTITY", "identity"),
    Column("ENDPOINT STATE", "state"),
    Column("IPV4", "ipv4"),
    Column("IPV6", "ipv6"),
    Column("INGRESS ENFORCEMENT", "ingress_enforcement", wide=True),
    Column("EGRESS ENFORCEMENT", "egress_enforcement", wide=True),
    Column("ENDPOINT ID", "endpoint_id", wide=True),
]


def endpoint_records(cluster: Cluster) -> list[dict[str, Any]]:
    """One record per Cilium endpoint: identity, state, addresses, enforcement per direction."""
    from .._datapath import Direction

    records = []
    for ref, ep in sorted(cluster.endpoints.items()):
        policy = cluster.endpoint_policy(ref)
        ident = cluster.identity_of(ref)
        records.append(
            {
                "namespace": ep.namespace,
                "name": ep.name,
                "endpoint_id": cluster.endpoint_id(ref),
                "identity": ident.id,
                "labels": list(ident.labels.strings()),
                "state": "ready",
                "ipv4": ", ".join(str(ip) for ip in ep.ips if ip.version == 4),
                "ipv6": ", ".join(str(ip) for ip in ep.ips if ip.version == 6),
                "ingress_enforcement": policy.enforced[Direction.INGRESS],
                "egress_enforcement": policy.enforced[Direction.EGRESS],
            }
        )
    return records


@get.command("endpoints")
@namespace_options
@output_option(wide=True)
@input_options
@pass_inputs
def get_endpoints(inputs: Inputs, namespace: str, all_namespaces: bool, output: str) -> None:
    """CiliumEndpoints (kubectl get cep): each endpoint's identity, state and addresses."""
    with inputs.cluster() as cluster:
        records = _scope(endpoint_records(cluster), namespace, all_namespaces, "resources")
    emit(records, _columns(all_namespaces, ENDPOINT_COLUMNS), output)


get.add_command(get_endpoints, "cep")
get.add_command(get_endpoints, "ciliumendpoints")
get.add_command(get_pods, "pod")
get.add_command(get_pods, "po")
