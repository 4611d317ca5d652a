"""``ciliumpy hubble ...``: ``observe`` flows with hubble's flags, ``metrics serve``.

``ciliumpy hubble observe -f DIR`` runs the scenario's connections (or ``--connections
FILE``) on the cluster and prints the flows as ``hubble observe`` does; ``--input-file
FLOWS.json`` filters a file recorded with ``hubble observe -o json`` instead, like hubble's
own ``--input-file``. Filter flags are hubble's and combine as hubble combines them,
including ``--not`` (which applies to the next flag), so they are read in command-line
order by this module rather than by click.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from ._inputs import Inputs, input_options, pass_inputs

__all__ = ["hubble"]

# hubble observe filter flags -> filter names (ciliumpy.hubble.observe keywords)
_FILTER_FLAGS = {
    "--verdict": "verdict",
    "--drop-reason-desc": "drop_reason_desc",
    "--namespace": "namespace",
    "-n": "namespace",
    "--from-namespace": "from_namespace",
    "--to-namespace": "to_namespace",
    "--pod": "pod",
    "--from-pod": "from_pod",
    "--to-pod": "to_pod",
    "--label": "label",
    "-l": "label",
    "--from-label": "from_label",
    "--to-label": "to_label",
    "--identity": "identity",
    "--from-identity": "from_identity",
    "--to-identity": "to_identity",
    "--ip": "ip",
    "--from-ip": "from_ip",
    "--to-ip": "to_ip",
    "--port": "port",
    "--from-port": "from_port",
    "--to-port": "to_port",
    "--protocol": "protocol",
    "--type": "type",
    "-t": "type",
    "--http-method": "http_method",
    "--http-path": "http_path",
    "--http-url": "http_url",
    "--http-status": "http_status",
    "--fqdn": "fqdn",
    "--from-fqdn": "from_fqdn",
    "--to-fqdn": "to_fqdn",
    "--traffic-direction": "traffic_direction",
    "--tcp-flags": "tcp_flags",
    "--node-name": "node_name",
}
_FILTER_SWITCHES = {"--all-namespaces": "all_namespaces", "-A": "all_namespaces"}


def _filter_items(args: list[str]) -> list[tuple[str, Any, bool]]:
    """hubble's filter flags, in order, as ``(name, value, negated)``."""
    items: list[tuple[str, Any, bool]] = []
    negate = False
    i = 0
    while i < len(args):
        arg = args[i]
        flag, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if flag == "--not":
            if negate:
                raise click.UsageError("consecutive --not statements")
            negate = True
            i += 1
            continue
        if flag in _FILTER_SWITCHES:
            items.append((_FILTER_SWITCHES[flag], "", negate))
            negate = False
            i += 1
            continue
        name = _FILTER_FLAGS.get(flag)
        if name is None:
            raise click.UsageError(f"unknown flag: {arg}")
        if eq:
            value = inline
            i += 1
        else:
            if i + 1 >= len(args):
                raise click.UsageError(f"flag needs an argument: {arg}")
            value = args[i + 1]
            i += 2
        items.append((name, value, negate))
        negate = False
    if negate:
        raise click.UsageError("--not must be followed by a filter flag")
    return items


@click.group()
def hubble() -> None:
    """Hubble: the cluster's decisions as flows, filtered and printed like ``hubble observe``."""


@hubble.command(
    "observe",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.option("--input-file", type=click.Path(dir_okay=False), help="Filter flows read from this file (- for stdin).")
@click.option(
    "--connections",
    type=click.Path(dir_okay=False, exists=True),
    help="YAML/JSON list of {from, to, port, protocol, http} to run instead of the scenario's connections.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["compact", "dict", "json", "jsonpb", "table"]),
    default="compact",
    show_default=True,
    help="Output format, as hubble observe prints it.",
)
@click.option("--last", type=click.IntRange(min=0), help="Show the last N flows (default 20 unless --all/--first).")
@click.option("--first", type=click.IntRange(min=0), help="Show the first N flows.")
@click.option("--all", "all_", is_flag=True, help="Show every stored flow.")
@click.option("--since", help="Flows since this time (RFC 3339) or this long ago (3s, 4m, 1h43m).")
@click.option("--until", help="Flows until this time (RFC 3339) or this long ago.")
@click.option("--print-node-name", is_flag=True, help="Print the node name in each line.")
@input_options
@pass_inputs
@click.pass_context
def observe(
    ctx: click.Context,
    inputs: Inputs,
    input_file: str | None,
    connections: str | None,
    output: str,
    last: int | None,
    first: int | None,
    all_: bool,
    since: str | None,
    until: str | None,
    print_node_name: bool,
) -> int:
    """Print flows, filtered with hubble's flags (--verdict, --namespace, --pod, --to-pod,
    --label, --protocol, --type, --port, --http-*, --fqdn, --traffic-direction, --not ...).

    With -f, the scenario's connections (or --connections FILE) run on the cluster first;
    with --input-file, flows recorded by ``hubble observe -o json`` are filtered instead.
    """
    from ..hubble import FlowStore, format_flows, read_flows, store_of
    from ..hubble._filter import build_filters
    from ..hubble._scenario import load_connections, run_connections, scenario_connections
    from ..hubble._store import _when

    items = _filter_items(list(ctx.args))
    allow, deny = build_filters(items)
    if sum(x is not None and x is not False for x in (last, first, all_ or None)) > 1:
        raise click.UsageError("--last, --first and --all cannot be combined")
    if last is None and first is None and not all_ and since is None and until is None:
        last = 20  # hubble observe's default
    if input_file is not None:
        store = FlowStore(capacity=1 << 24)
        store.add_flows(read_flows(sys.stdin if input_file == "-" else input_file))
    else:
        cluster = inputs.cluster()
        conns = load_connections(connections) if connections else scenario_connections(cluster, inputs.paths)
        run_connections(cluster, conns)
        store = store_of(cluster)
    records = store.select(allow, deny, since=_when(since), until=_when(until), first=first, last=last)
    flows = [store.flow_of(r) for r in records]
    sys.stdout.write(format_flows(flows, output, node_name=print_node_name))
    return 0


@hubble.group("metrics")
def metrics() -> None:
    """Hubble's Prometheus metrics."""


@metrics.command("serve")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=9965, show_default=True, help="Port to serve /metrics on."
)
@click.option("--address", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option(
    "--metrics",
    "enabled",
    help="Comma-separated metrics (dns,drop,tcp,flow,icmp,http); default: hubble.metrics.enabled of --values.",
)
@click.option("--connections", type=click.Path(dir_okay=False, exists=True), help="Connections to run (see observe).")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: run until ^C).")
@input_options
@pass_inputs
def metrics_serve(
    inputs: Inputs,
    port: int,
    address: str,
    enabled: str | None,
    connections: str | None,
    duration: float | None,
) -> int:
    """Run the scenario's connections and serve Hubble's metrics on /metrics."""
    from ..hubble import Metrics, enabled_from_helm_values
    from ..hubble._scenario import load_connections, run_connections, scenario_connections

    if enabled is not None:
        names = [e for e in enabled.split(",") if e]
    elif inputs.values is not None:
        names = enabled_from_helm_values(Path(inputs.values))
        if not names:
            raise click.UsageError(f"{inputs.values} enables no metrics (hubble.metrics.enabled is empty)")
    else:
        raise click.UsageError("name the metrics with --metrics or give Helm values with hubble.metrics.enabled")
    cluster = inputs.cluster()
    m = Metrics(cluster, enabled=names)
    conns = load_connections(connections) if connections else scenario_connections(cluster, inputs.paths)
    run_connections(cluster, conns)
    server = m.serve(port=port, addr=address)
    host, bound = str(server.server_address[0]), server.server_address[1]
    sys.stdout.write(f"serving Hubble metrics on http://{host}:{bound}/metrics\n")
    sys.stdout.flush()
    try:
        deadline = None if duration is None else time.monotonic() + duration
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic())))
    finally:
        m.close()
    return 0


@hubble.command("replay")
@click.argument("flows", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--before",
    "before",
    multiple=True,
    metavar="PATH",
    help="Manifests of the policies now (default: the -f manifests).",
)
@click.option("--after", "after", multiple=True, metavar="PATH", help="Manifests of the proposed policies.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--skip-bad-lines", is_flag=True, help="Leave out malformed lines instead of failing.")
@input_options
@pass_inputs
def replay_command(
    inputs: Inputs,
    flows: str,
    before: tuple[str, ...],
    after: tuple[str, ...],
    output: str,
    skip_bad_lines: bool,
) -> int:
    """Replay FLOWS (recorded with hubble observe -o json) against --before and --after
    policies; without --after, against the policies now (drift since the recording).
    Exit 1 when a flow would newly be dropped."""
    import json

    from ..hubble import replay

    now = list(before) or list(inputs.paths)
    if not now:
        raise click.UsageError("name the current policies with --before PATH (or -f PATH)")
    report = replay(flows, now, list(after) or None, errors="skip" if skip_bad_lines else "raise")
    if output == "json":
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(report.summary() + "\n")
    return 1 if report.categories.get("newly_dropped") else 0
