"""``ciliumpy connectivity test``: cilium-cli's connectivity test, on the chosen backend.

A standard topology in namespace ``cilium-test`` (``client``, ``client2``, ``echo-same-node``
behind a Service, ``echo-other-node``, a cluster DNS, addresses in the world) and policy scenarios in the
spirit of cilium-cli's: each applies its policies, runs its actions (connections, HTTP
requests, DNS lookups) and compares every verdict with the expected one. Prints a summary
like cilium-cli's and, with ``--junit-file``, JUnit XML for CI systems. Exit status 1 when an
action does not get its expected verdict.
"""

from __future__ import annotations

import re
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import click

from .._cluster import Cluster
from ._inputs import Inputs, input_options, pass_inputs
from ._root import ExitCode

__all__ = ["SCENARIOS", "Action", "Scenario", "connectivity", "run_scenarios"]

NS = "cilium-test"
ECHO_PORTS = [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}]


def _pod(name: str, labels: Mapping[str, str], node: str, ip: str, ports: Sequence[Any] = ()) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": "quay.io/cilium/json-mock"}
    if ports:
        container["ports"] = list(ports)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": dict(labels)},
        "spec": {"nodeName": node, "containers": [container]},
        "status": {"podIP": ip},
    }


#: The topology every scenario runs on.
TOPOLOGY: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}},
    _pod("client", {"kind": "client", "name": "client"}, "node-1", "10.244.1.10"),
    _pod("client2", {"kind": "client", "name": "client2", "other": "client"}, "node-1", "10.244.1.11"),
    _pod("echo-same-node", {"kind": "echo", "name": "echo-same-node"}, "node-1", "10.244.1.20", ECHO_PORTS),
    _pod("echo-other-node", {"kind": "echo", "name": "echo-other-node"}, "node-2", "10.244.2.20", ECHO_PORTS),
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo-same-node", "namespace": NS},
        "spec": {
            "selector": {"name": "echo-same-node"},
            "clusterIP": "10.96.0.20",
            "ports": [{"name": "http", "port": 8080, "targetPort": "http"}],
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "coredns", "image": "coredns"}]},
        "status": {"podIP": "10.244.1.53"},
    },
]

#: What the cluster DNS answers upstream.
DNS_RECORDS = {"one.one.one.one": ["1.1.1.1"], "example.com": ["93.184.215.14"]}

CLIENT, CLIENT2 = f"{NS}/client", f"{NS}/client2"
ECHO_SERVICE = f"{NS}/svc/echo-same-node"
ECHO_SAME, ECHO_OTHER = f"{NS}/echo-same-node", f"{NS}/echo-other-node"


@attrs.frozen
class Action:
    """One connection of a scenario and the verdict it must get."""

    name: str
    src: str
    dst: str
    port: int | str
    allowed: bool
    protocol: str = "TCP"
    http: Mapping[str, str] | None = None


@attrs.frozen
class Scenario:
    """Policies to apply and the actions to judge with them in place."""

    name: str
    policies: tuple[dict[str, Any], ...]
    actions: tuple[Action, ...]


def _cnp(name: str, selector: Mapping[str, str], **sections: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"endpointSelector": {"matchLabels": dict(selector)}, **sections},
    }


def _pod_to_pod(allow_client: bool, allow_client2: bool, port: int | str = 8080) -> tuple[Action, ...]:
    return (
        Action("client-to-echo-same-node", CLIENT, ECHO_SAME, port, allow_client),
        Action("client-to-echo-other-node", CLIENT, ECHO_OTHER, port, allow_client),
        Action("client2-to-echo-same-node", CLIENT2, ECHO_SAME, port, allow_client2),
        Action("client2-to-echo-other-node", CLIENT2, ECHO_OTHER, port, allow_client2),
    )


ECHO = {"kind": "echo"}
CLIENTS = {"kind": "client"}

#: The scenarios, in the order they run (toFQDNs last: the addresses it learns stay cached).
SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "no-policies",
        (),
        (
            *_pod_to_pod(True, True),
            Action("client-to-echo-service", CLIENT, ECHO_SERVICE, 8080, True),
            Action("client-to-world", CLIENT, "1.1.1.1", 443, True),
            Action("host-to-echo", "host", ECHO_SAME, 8080, True),
        ),
    ),
    Scenario(
        "allow-all",
        (_cnp("allow-all", {}, ingress=[{"fromEntities": ["all"]}], egress=[{"toEntities": ["all"]}]),),
        (*_pod_to_pod(True, True), Action("client-to-world", CLIENT, "1.1.1.1", 443, True)),
    ),
    Scenario(
        "deny-all",
        (_cnp("deny-all", {}, ingress=[{}], egress=[{}]),),
        (*_pod_to_pod(False, False), Action("client-to-world", CLIENT, "1.1.1.1", 443, False)),
    ),
    Scenario(
        "echo-ingress-from-client-only",
        (_cnp("echo-ingress", ECHO, ingress=[{"fromEndpoints": [{"matchLabels": {"name": "client"}}]}]),),
        (
            *_pod_to_pod(True, False),
            Action("client-to-echo-service", CLIENT, ECHO_SERVICE, 8080, True),
            Action("client2-to-echo-service", CLIENT2, ECHO_SERVICE, 8080, False),
        ),
    ),
    Scenario(
        "client-egress-to-echo-by-label",
        (_cnp("client-egress", CLIENTS, egress=[{"toEndpoints": [{"matchLabels": ECHO}]}]),),
        (*_pod_to_pod(True, True), Action("client-to-world", CLIENT, "1.1.1.1", 443, False)),
    ),
    Scenario(
        "echo-ingress-named-port",
        (
            _cnp(
                "echo-named-port",
                ECHO,
                ingress=[
                    {
                        "fromEndpoints": [{"matchLabels": CLIENTS}],
                        "toPorts": [{"ports": [{"port": "http", "protocol": "TCP"}]}],
                    }
                ],
            ),
        ),
        (
            *_pod_to_pod(True, True, "http"),
            Action("client-to-echo-metrics", CLIENT, ECHO_SAME, 9090, False),
        ),
    ),
    Scenario(
        "echo-ingress-port-range",
        (
            _cnp(
                "echo-port-range",
                ECHO,
                ingress=[
                    {
                        "fromEndpoints": [{"matchLabels": CLIENTS}],
                        "toPorts": [{"ports": [{"port": "8000", "endPort": 8090, "protocol": "TCP"}]}],
                    }
                ],
            ),
        ),
        (
            *_pod_to_pod(True, True),
            Action("client-to-echo-9090", CLIENT, ECHO_SAME, 9090, False),
            Action("client-to-echo-8080-udp", CLIENT, ECHO_SAME, 8080, False, protocol="UDP"),
        ),
    ),
    Scenario(
        "client-egress-to-entities-world",
        (_cnp("client-egress-world", CLIENTS, egress=[{"toEntities": ["world"]}]),),
        (
            Action("client-to-world", CLIENT, "1.1.1.1", 443, True),
            Action("client-to-echo", CLIENT, ECHO_SAME, 8080, False),
        ),
    ),
    Scenario(
        "client-egress-to-cidr",
        (
            _cnp(
                "client-egress-cidr", CLIENTS, egress=[{"toCIDRSet": [{"cidr": "1.0.0.0/8", "except": ["1.0.0.0/24"]}]}]
            ),
        ),
        (
            Action("client-to-1.1.1.1", CLIENT, "1.1.1.1", 443, True),
            Action("client-to-1.0.0.1-except", CLIENT, "1.0.0.1", 443, False),
            Action("client-to-8.8.8.8", CLIENT, "8.8.8.8", 443, False),
        ),
    ),
    Scenario(
        "deny-precedence",
        (
            _cnp("allow-all", {}, ingress=[{"fromEntities": ["all"]}]),
            _cnp("echo-deny-client2", ECHO, ingressDeny=[{"fromEndpoints": [{"matchLabels": {"other": "client"}}]}]),
        ),
        _pod_to_pod(True, False),
    ),
    Scenario(
        "echo-ingress-l7-http",
        (
            _cnp(
                "echo-l7-http",
                ECHO,
                ingress=[
                    {
                        "fromEndpoints": [{"matchLabels": CLIENTS}],
                        "toPorts": [
                            {
                                "ports": [{"port": "8080", "protocol": "TCP"}],
                                "rules": {"http": [{"method": "GET", "path": "/public"}]},
                            }
                        ],
                    }
                ],
            ),
        ),
        (
            Action("client-get-public", CLIENT, ECHO_SAME, 8080, True, http={"method": "GET", "path": "/public"}),
            Action("client-get-private", CLIENT, ECHO_SAME, 8080, False, http={"method": "GET", "path": "/private"}),
            Action("client-post-public", CLIENT, ECHO_OTHER, 8080, False, http={"method": "POST", "path": "/public"}),
        ),
    ),
    Scenario(
        "client-egress-to-fqdns",
        (
            _cnp(
                "client-egress-fqdn",
                CLIENTS,
                egress=[
                    {
                        "toEndpoints": [
                            {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system", "k8s-app": "kube-dns"}}
                        ],
                        "toPorts": [
                            {"ports": [{"port": "53", "protocol": "ANY"}], "rules": {"dns": [{"matchPattern": "*"}]}}
                        ],
                    },
                    {"toFQDNs": [{"matchName": "one.one.one.one"}]},
                ],
            ),
        ),
        (
            Action("client-to-one.one.one.one", CLIENT, "one.one.one.one", 443, True),
            Action("client-to-example.com", CLIENT, "example.com", 443, False),
            Action("client-to-echo", CLIENT, ECHO_SAME, 8080, False),
        ),
    ),
)


@attrs.frozen
class Result:
    """An action's outcome: the verdict, and whether it was the expected one."""

    scenario: str
    action: Action
    verdict: str
    passed: bool
    detail: str
    seconds: float


def run_scenarios(cluster: Cluster, scenarios: Sequence[Scenario]) -> list[Result]:
    """Apply each scenario's policies to ``cluster``, judge its actions, then remove them."""
    results = []
    for scenario in scenarios:
        applied = cluster.apply(*scenario.policies) if scenario.policies else []
        try:
            for action in scenario.actions:
                start = time.perf_counter()
                verdict = cluster.check(action.src, action.dst, action.port, action.protocol, http=action.http)
                seconds = time.perf_counter() - start
                line = verdict.explain().splitlines()[0]
                results.append(
                    Result(scenario.name, action, verdict.verdict, verdict.allowed == action.allowed, line, seconds)
                )
        finally:
            if applied:
                cluster.delete(*applied)
    return results


def _junit(results: Sequence[Result], scenarios: Sequence[Scenario], backend: str) -> ET.Element:
    failures = sum(1 for r in results if not r.passed)
    suite = ET.Element(
        "testsuite",
        name=f"connectivity test ({backend})",
        tests=str(len(scenarios)),
        failures=str(len({r.scenario for r in results if not r.passed})),
        errors="0",
        skipped="0",
        time=f"{sum(r.seconds for r in results):.6f}",
    )
    suite.set("actions", str(len(results)))
    suite.set("failed_actions", str(failures))
    for scenario in scenarios:
        mine = [r for r in results if r.scenario == scenario.name]
        case = ET.SubElement(
            suite, "testcase", name=scenario.name, classname="connectivity", time=f"{sum(r.seconds for r in mine):.6f}"
        )
        bad = [r for r in mine if not r.passed]
        if bad:
            failure = ET.SubElement(case, "failure", message=f"{len(bad)}/{len(mine)} actions failed", type="failure")
            failure.text = "\n".join(
                f"{r.action.name}: expected {'allowed' if r.action.allowed else 'denied'}, got {r.verdict}: {r.detail}"
                for r in bad
            )
    root = ET.Element(
        "testsuites", name="connectivity test", tests=str(len(scenarios)), failures=suite.get("failures", "0")
    )
    root.append(suite)
    return root


@click.group()
def connectivity() -> None:
    """Connectivity tests on a standard topology."""


@connectivity.command("test")
@click.option("--test", "pattern", default=None, metavar="REGEX", help="Only the scenarios whose name matches.")
@click.option("--junit-file", type=click.Path(dir_okay=False), default=None, help="Write JUnit XML here.")
@click.option("-v", "--verbose", is_flag=True, help="Print every action's verdict.")
@input_options
@pass_inputs
def connectivity_test(inputs: Inputs, pattern: str | None, junit_file: str | None, verbose: bool) -> int:
    """Run the policy scenarios (allow-all, deny-all, labels, named ports, port ranges, entities,
    CIDR, deny precedence, L7 HTTP, toFQDNs; pod-to-pod and pod-to-Service) and compare every
    verdict with the expected one."""
    if inputs.paths:
        raise click.UsageError("connectivity test builds its own topology and takes no -f")
    try:
        selected = [s for s in SCENARIOS if pattern is None or re.search(pattern, s.name)]
    except re.error as exc:
        raise click.BadParameter(str(exc), param_hint="'--test'") from None
    if not selected:
        raise click.BadParameter(f"no scenario matches {pattern!r}", param_hint="'--test'")
    out = sys.stdout
    with Cluster.from_manifests(TOPOLOGY, backend=inputs.backend) as cluster:
        cluster.add_dns_records(DNS_RECORDS, ttl=300)
        backend = cluster.backend.name
        out.write(f"ℹ️  Backend: {backend}; namespace {NS}: client, client2, echo-same-node, echo-other-node\n")  # noqa: RUF001
        results = []
        for i, scenario in enumerate(selected, 1):
            out.write(f"[=] [{NS}] Test [{scenario.name}] [{i}/{len(selected)}]\n")
            mine = run_scenarios(cluster, [scenario])
            results.extend(mine)
            out.write("  " + "".join("." if r.passed else "x" for r in mine) + "\n")
            for r in mine:
                if verbose or not r.passed:
                    mark = "✅" if r.passed else "❌"
                    want = "allowed" if r.action.allowed else "denied"
                    out.write(f"  {mark} {scenario.name}/{r.action.name}: expected {want}, got {r.verdict}\n")
                    if not r.passed:
                        out.write(f"     {r.detail}\n")
    if junit_file is not None:
        tree = ET.ElementTree(_junit(results, selected, backend))
        ET.indent(tree)
        tree.write(junit_file, encoding="utf-8", xml_declaration=True)
    failed_tests = sorted({r.scenario for r in results if not r.passed}, key=[s.name for s in selected].index)
    failed_actions = sum(1 for r in results if not r.passed)
    out.write("\n")
    if not failed_tests:
        out.write(
            f"✅ [{NS}] All {len(selected)} tests ({len(results)} actions) successful, "
            "0 tests skipped, 0 scenarios skipped.\n"
        )
        return int(ExitCode.OK)
    out.write(f"📋 Test Report [{NS}]\n")
    out.write(
        f"❌ {len(failed_tests)}/{len(selected)} tests failed ({failed_actions}/{len(results)} actions), "
        "0 tests skipped, 0 scenarios skipped:\n"
    )
    for name in failed_tests:
        out.write(f"Test [{name}]:\n")
        for r in results:
            if r.scenario == name and not r.passed:
                out.write(f"  ❌ {name}/{r.action.name}: {r.action.src} -> {r.action.dst} ({r.action.port})\n")
    return int(ExitCode.NO)
