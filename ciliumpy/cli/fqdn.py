"""``ciliumpy fqdn cache list``: names the DNS proxy learned, as ``cilium-dbg fqdn cache list``."""

from __future__ import annotations

import datetime

import click

from ._inputs import Inputs, input_options, pass_inputs
from ._output import Column, emit, output_option

__all__ = ["fqdn"]

COLUMNS = [
    Column("Endpoint", "endpoint"),
    Column("Source", "source"),
    Column("FQDN", "fqdn"),
    Column("TTL", "ttl"),
    Column("ExpirationTime", "expires"),
    Column("IPs", "ips"),
]


def _parse_records(values: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in values:
        name, sep, ips = item.partition("=")
        if not sep or not name.strip() or not ips.strip():
            raise click.BadParameter(f"expected NAME=IP[,IP...], got {item!r}", param_hint="'--dns-record'")
        out.setdefault(name.strip(), []).extend(ip.strip() for ip in ips.split(",") if ip.strip())
    return out


@click.group()
def fqdn() -> None:
    """The FQDN subsystem (DNS proxy and its cache)."""


@fqdn.group()
def cache() -> None:
    """Names learned from DNS answers."""


@cache.command("list")
@click.option(
    "--lookup",
    "lookups",
    multiple=True,
    metavar="POD=NAME",
    help="Resolve NAME from POD through the DNS proxy first (repeatable).",
)
@click.option("--dns-record", "dns_records", multiple=True, metavar="NAME=IP[,IP...]", help="Upstream DNS answers.")
@output_option()
@input_options
@pass_inputs
def cache_list(inputs: Inputs, lookups: tuple[str, ...], dns_records: tuple[str, ...], output: str) -> None:
    """Every learned (endpoint, name, IP) with its TTL and expiry. A cache starts empty: learn with --lookup."""
    with inputs.cluster() as cluster:
        if dns_records:
            cluster.add_dns_records(_parse_records(dns_records))
        for item in lookups:
            pod, sep, name = item.partition("=")
            if not sep:
                raise click.BadParameter(f"expected POD=NAME, got {item!r}", param_hint="'--lookup'")
            cluster.resolve(pod.strip(), name.strip())
        by_ip: dict[tuple[str, str], dict[str, object]] = {}
        for entry in cluster.fqdn_cache.entries():
            key = (entry.endpoint, entry.name)
            rec = by_ip.setdefault(
                key,
                {
                    "endpoint": cluster.endpoint_id(entry.endpoint) if entry.endpoint in cluster.endpoints else 0,
                    "pod": entry.endpoint,
                    "source": "lookup",
                    "fqdn": entry.name,
                    "ttl": entry.ttl,
                    "expires": datetime.datetime.fromtimestamp(entry.expires, datetime.UTC).strftime(
                        "%Y-%m-%dT%H:%M:%S.000Z"
                    ),
                    "ips": [],
                },
            )
            ips = rec["ips"]
            assert isinstance(ips, list)
            ips.append(str(entry.ip))
    emit(sorted(by_ip.values(), key=lambda r: (str(r["pod"]), str(r["fqdn"]))), COLUMNS, output)
