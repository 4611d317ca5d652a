"""``ciliumpy check SRC DST PORT``: can SRC open a connection to DST? Exit 0 allowed, 1 denied."""

from __future__ import annotations

import sys
from typing import Any

import click

from .._verdict import Verdict
from ._inputs import Inputs, input_options, pass_inputs
from ._root import ExitCode

__all__ = ["check"]


def _port(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _dns_records(values: tuple[str, ...]) -> dict[str, list[str]]:
    records: dict[str, list[str]] = {}
    for item in values:
        name, sep, ips = item.partition("=")
        addresses = [ip.strip() for ip in ips.split(",") if ip.strip()]
        if not sep or not name.strip() or not addresses:
            raise click.BadParameter(f"expected NAME=IP[,IP...], got {item!r}", param_hint="'--dns-record'")
        records.setdefault(name.strip(), []).extend(addresses)
    return records


def _headers(values: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for item in values:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected NAME:VALUE, got {item!r}", param_hint="'--header'")
        out.append((name.strip(), value.strip()))
    return out


def _asked(src: str, dst: str, port: str, protocol: str, http: dict[str, Any] | None, verdict: Verdict) -> str:
    """The flow as it was asked about (workload refs and port names as typed) and its verdict."""
    request = ""
    if http is not None:
        request = f" gRPC {http['grpc']}" if "grpc" in http else f" HTTP {http['method']} {http['path']}"
    outcome = verdict.verdict
    if verdict.drop_reason is not None:
        outcome += f" ({verdict.drop_reason.value} {verdict.drop_reason.text})"
    if verdict.http_status:
        outcome += f" HTTP {verdict.http_status}"
    if verdict.failure:
        outcome += f" ({verdict.failure})"
    return f"{src} -> {dst} {protocol}/{port}{request}: {outcome}"


@click.command()
@click.argument("src")
@click.argument("dst")
@click.argument("port")
@click.option(
    "--proto",
    "--protocol",
    "protocol",
    default="TCP",
    show_default=True,
    type=click.Choice(["TCP", "UDP", "SCTP", "ICMP", "ICMPv6"], case_sensitive=False),
    help="L4 protocol.",
)
@click.option("--http-method", metavar="METHOD", help="Send this HTTP request method through the L7 proxy.")
@click.option("--http-path", metavar="PATH", help="HTTP request path (default /).")
@click.option("--header", "headers", multiple=True, metavar="K:V", help="HTTP request header (repeatable).")
@click.option("--grpc", metavar="/pkg.Svc/Method", help="Make a gRPC call (HTTP/2 POST to the method's path).")
@click.option(
    "--dns-record",
    "dns_records",
    multiple=True,
    metavar="NAME=IP[,IP...]",
    help="What upstream DNS answers for NAME (for toFQDNs; repeatable).",
)
@input_options
@pass_inputs
def check(
    inputs: Inputs,
    src: str,
    dst: str,
    port: str,
    protocol: str,
    http_method: str | None,
    http_path: str | None,
    headers: tuple[str, ...],
    grpc: str | None,
    dns_records: tuple[str, ...],
) -> int:
    """Can SRC open a new connection to DST on PORT? Prints the decision hook by hook.

    SRC and DST are NAMESPACE/POD, a workload (NAMESPACE/deployment/NAME), an IP address,
    world, host, or (as DST) a DNS name. PORT is a number or a named container port (for
    ICMP, the ICMP type). Exit status 0 when allowed, 1 when denied.
    """
    http: dict[str, Any] | None = None
    if grpc is not None:
        if http_method or http_path:
            raise click.UsageError("--grpc cannot be combined with --http-method/--http-path")
        http = {"grpc": grpc}
    elif http_method or http_path or headers:
        http = {"method": http_method or "GET", "path": http_path or "/"}
    if http is not None and headers:
        http["headers"] = _headers(headers)
    records = _dns_records(dns_records)
    with inputs.cluster() as cluster:
        if records:
            cluster.add_dns_records(records)
        verdict = cluster.check(src, dst, _port(port), protocol.upper(), http=http)
        sys.stdout.write(_asked(src, dst, port, protocol.upper(), http, verdict) + "\n")
        sys.stdout.write(verdict.explain() + "\n")
    return int(ExitCode.OK if verdict.allowed else ExitCode.NO)
