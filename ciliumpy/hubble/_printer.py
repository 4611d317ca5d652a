"""Flows as the ``hubble observe`` CLI prints them (``hubble/pkg/printer/printer.go``).

* ``compact`` (default): ``Jan  1 00:20:34.567: src:port (identity) -> dst:port (identity)
  type verdict (summary)``; a reply swaps the sides and uses ``<-``, an unknown direction
  ``<>``; pods print as ``namespace/pod``, otherwise DNS names or the IP.
* ``dict``: one ``KEY: value`` block per flow, separated by ``------------``.
* ``table``: a tab-aligned table (Go's tabwriter: columns padded to the widest cell + 3).
* ``json`` / ``jsonpb``: one ``GetFlowsResponse`` JSON object per line (since hubble 0.11
  both print the same).

Times are printed in UTC in Go's ``time.StampMilli`` layout (``Jan _2 15:04:05.000``).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable

from .._datapath import DropReason
from ._flow import TRACE_SUBTYPES, Flow

__all__ = ["FORMATS", "format_flow", "format_flows"]

FORMATS = ("compact", "dict", "json", "jsonpb", "table")

_MATCH_TYPES = {0: "none", 1: "L3-Only", 2: "L3-L4", 3: "L4-Only", 4: "all", 5: "L3-Proto", 6: "Proto-Only"}
_RESERVED = {
    0: "unknown",
    1: "host",
    2: "world",
    3: "unmanaged",
    4: "health",
    5: "init",
    6: "remote-node",
    7: "kube-apiserver",
    8: "ingress",
    9: "world-ipv4",
    10: "world-ipv6",
}


def _timestamp(flow: Flow) -> str:
    if not flow.time:
        return "N/A"
    seconds = flow.timestamp
    when = _dt.datetime.fromtimestamp(int(seconds // 1), tz=_dt.UTC)
    millis = round((seconds % 1) * 1e9) // 1_000_000
    return f"{when:%b} {when.day:2d} {when:%H:%M:%S}.{millis:03d}"


def _ports(flow: Flow) -> tuple[str, str]:
    ports = flow.l4.ports if flow.l4 is not None else None
    if ports is None:
        return "", ""
    return str(ports.source_port), str(ports.destination_port)


def _hostname(ip: str, port: str, ns: str, pod: str, names: Iterable[str]) -> str:
    host = ip
    names = list(names)
    if pod:
        host = f"{ns}/{pod}" if ns else pod
    elif names:
        host = ",".join(names)
    if port and port != "0":
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return host


def hostnames(flow: Flow) -> tuple[str, str]:
    """The SOURCE and DESTINATION columns of a flow."""
    if flow.IP is None:
        if flow.ethernet is not None:
            return flow.ethernet.source, flow.ethernet.destination
        return "", ""
    sport, dport = _ports(flow)
    src, dst = flow.source, flow.destination
    s = _hostname(flow.IP.source, sport, src.namespace if src else "", src.pod_name if src else "", flow.source_names)
    d = _hostname(
        flow.IP.destination, dport, dst.namespace if dst else "", dst.pod_name if dst else "", flow.destination_names
    )
    return s, d


def _identity(num: int) -> str:
    name = _RESERVED.get(num)
    return f"({name})" if name is not None else f"(ID:{num})"


def flow_type(flow: Flow) -> str:
    """The TYPE column: ``to-endpoint``, ``Policy denied``, ``policy-verdict:L3-L4 INGRESS``,
    ``http-request`` …"""
    if flow.l7 is not None:
        kind = (flow.l7.type or "UNKNOWN_L7_TYPE").lower()
        proto = flow.l7.protocol or "l7"
        if flow.l7.dns is not None:
            kind += " " + flow.l7.dns.observation_source
        return f"{proto}-{kind}"
    et = flow.event_type
    t = et.type if et is not None else 0
    sub = et.sub_type if et is not None else 0
    if t == 4:
        return TRACE_SUBTYPES.get(sub, str(sub))
    if t == 1:
        try:
            return DropReason(sub).text
        except ValueError:
            return str(sub)
    if t == 5:
        match = _MATCH_TYPES.get(flow.policy_match_type, "unknown")
        return f"policy-verdict:{match} {flow.traffic_direction or 'TRAFFIC_DIRECTION_UNKNOWN'}"
    return "UNKNOWN"


def verdict_text(flow: Flow) -> str:
    """The VERDICT column (policy-verdict events say ALLOWED / DENIED / AUDITED)."""
    verdict = flow.verdict or "VERDICT_UNKNOWN"
    pv = flow.event_type is not None and flow.event_type.type == 5
    if pv and verdict in ("FORWARDED", "REDIRECTED"):
        return "ALLOWED"
    if pv and verdict in ("DROPPED", "ERROR"):
        return "DENIED"
    if pv and verdict == "AUDIT":
        return "AUDITED"
    return verdict


def format_flow(flow: Flow, output: str = "compact", *, node_name: bool = False) -> str:
    """One flow in ``output`` format (without the trailing newline; ``table`` needs
    :func:`format_flows` for its alignment)."""
    return format_flows([flow], output, node_name=node_name).rstrip("\n")


def format_flows(flows: Iterable[Flow], output: str = "compact", *, node_name: bool = False) -> str:
    """Flows as ``hubble observe -o OUTPUT`` prints them, one after another."""
    if output not in FORMATS:
        raise ValueError(f"invalid output format {output!r} (valid: {', '.join(FORMATS)})")
    out: list[str] = []
    if output in ("json", "jsonpb"):
        return "".join(f.to_json() + "\n" for f in flows)
    if output == "table":
        rows = [["TIMESTAMP", *(["NODE"] if node_name else []), "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"]]
        for f in flows:
            src, dst = hostnames(f)
            node_col = [f.node_name] if node_name else []
            rows.append([_timestamp(f), *node_col, src, dst, flow_type(f), verdict_text(f), f.Summary])
        if len(rows) == 1:
            return ""
        widths = [max(2, max(len(r[i]) for r in rows) + 3) for i in range(len(rows[0]) - 1)]
        for r in rows:
            out.append("".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False)) + r[-1] + "\n")
        return "".join(out)
    for i, f in enumerate(flows):
        src, dst = hostnames(f)
        if output == "dict":
            if i:
                out.append("------------\n")
            out.append(f"  TIMESTAMP: {_timestamp(f)}\n")
            if node_name:
                out.append(f"       NODE: {f.node_name}\n")
            out.append(
                f"     SOURCE: {src}\nDESTINATION: {dst}\n       TYPE: {flow_type(f)}\n"
                f"    VERDICT: {verdict_text(f)}\n    SUMMARY: {f.Summary}\n"
            )
            continue
        sid = _identity(f.source.identity if f.source else 0)
        did = _identity(f.destination.identity if f.destination else 0)
        arrow = "->"
        if f.is_reply is None:
            arrow = "<>"
        elif f.is_reply:
            src, dst, sid, did, arrow = dst, src, did, sid, "<-"
        node = f" [{f.node_name}]" if node_name else ""
        out.append(
            f"{_timestamp(f)}{node}: {src} {sid} {arrow} {dst} {did} {flow_type(f)} {verdict_text(f)} ({f.Summary})\n"
        )
    return "".join(out)
