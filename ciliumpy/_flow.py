"""Hubble flows of a verdict, in the JSON shape of ``hubble observe -o json``.

A policy decision produces, per hook that ran, a ``policy-verdict`` event (type 5); a drop
also produces a ``drop`` event (type 1, sub-type = drop reason); a request judged by the
proxy produces an L7 event (type 129). Field names and their order follow
``api/v1/flow/flow.proto`` (protobuf JSON with proto field names, zero values omitted).
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from ._datapath import Action, Direction, DropReason, Protocol, RuleOrigin, TCPFlags
from ._verdict import HookVerdict, PeerInfo, Verdict

__all__ = ["hubble_json_lines", "verdict_flows"]

EVENT_DROP = 1
EVENT_POLICY_VERDICT = 5
EVENT_L7 = 129

_FLAG_ORDER = ("SYN", "ACK", "FIN", "RST", "PSH", "URG", "ECE", "CWR")


def _rfc3339(ts: float) -> str:
    when = _dt.datetime.fromtimestamp(ts, tz=_dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def _endpoint(peer: PeerInfo) -> dict[str, Any]:
    return peer.to_hubble()


def _l4(v: Verdict) -> dict[str, Any]:
    p = v.packet
    if p.protocol == Protocol.TCP:
        flags = {name: True for name in _FLAG_ORDER if p.tcp_flags & TCPFlags[name]}
        tcp: dict[str, Any] = {"source_port": p.sport, "destination_port": p.dport}
        if flags:
            tcp["flags"] = flags
        return {"TCP": tcp}
    if p.protocol in (Protocol.UDP, Protocol.SCTP):
        return {Protocol(p.protocol).name: {"source_port": p.sport, "destination_port": p.dport}}
    key = "ICMPv4" if p.protocol == Protocol.ICMP else "ICMPv6"
    out: dict[str, Any] = {}
    if p.icmp_type:
        out["type"] = p.icmp_type
    if p.icmp_code:
        out["code"] = p.icmp_code
    return {key: out}


def _summary(v: Verdict) -> str:
    p = v.packet
    if p.protocol == Protocol.TCP:
        names = [n for n in _FLAG_ORDER if p.tcp_flags & TCPFlags[n]]
        return "TCP Flags: " + ", ".join(names)
    if p.protocol == Protocol.UDP:
        return "UDP"
    if p.protocol == Protocol.SCTP:
        return "SCTP"
    kind = {0: "EchoReply", 8: "EchoRequest", 3: "DestinationUnreachable", 11: "TimeExceeded"}
    if p.protocol == Protocol.ICMP:
        return f"ICMPv4 {kind.get(p.icmp_type, str(p.icmp_type))}"
    kind6 = {128: "EchoRequest", 129: "EchoReply"}
    return f"ICMPv6 {kind6.get(p.icmp_type, str(p.icmp_type))}"


def _policies(origins: frozenset[RuleOrigin]) -> list[dict[str, Any]]:
    return [o.to_hubble() for o in sorted(origins) if o.kind != "reserved"]


def verdict_flows(v: Verdict, *, node_name: str = "ciliumpy", time: float | None = None) -> list[dict[str, Any]]:
    """The Hubble flows a verdict produces, in event order (egress hook first)."""
    ts = time if time is not None else (v.time if v.time is not None else 0.0)
    flows: list[dict[str, Any]] = []
    for hook in (v.egress, v.ingress):
        if hook is None or not hook.result.enforced:
            continue
        res = hook.result
        direction = "EGRESS" if res.direction == Direction.EGRESS else "INGRESS"
        dropped = res.action == Action.DROP
        if res.ct_state.name == "REPLY" or (res.ct_state.name == "ESTABLISHED" and not dropped):
            # Policy-verdict events are sent for drops and new connections only (bpf_lxc.c).
            continue
        verdict = "DROPPED" if dropped else ("REDIRECTED" if res.action == Action.REDIRECT else "FORWARDED")
        pv = _assemble(v, hook, ts, node_name, verdict, EVENT_POLICY_VERDICT, 0, direction, dropped)
        flows.append(pv)
        if dropped and res.drop_reason is not None:
            flows.append(
                _assemble(v, hook, ts, node_name, "DROPPED", EVENT_DROP, int(res.drop_reason), direction, True)
            )
        if hook.l7 is not None and v.request is not None and hasattr(v.request, "method"):
            from ._l7 import http_l7_record

            rec = http_l7_record(v.request, hook.l7)
            flow = _assemble(v, hook, ts, node_name, rec["verdict"], EVENT_L7, 0, direction, not hook.l7.allowed)
            flow["Type"] = "L7"
            flow["l7"] = rec["l7"]
            flow["Summary"] = rec["Summary"]
            flow.pop("drop_reason", None)
            flow.pop("drop_reason_desc", None)
            flows.append(_order(flow))
    return flows


def _assemble(
    v: Verdict,
    hook: HookVerdict,
    ts: float,
    node: str,
    verdict: str,
    event_type: int,
    sub_type: int,
    direction: str,
    dropped: bool,
) -> dict[str, Any]:
    res = hook.result
    flow: dict[str, Any] = {"time": _rfc3339(ts), "verdict": verdict}
    reason = res.drop_reason if dropped else None
    if reason is not None:
        flow["drop_reason"] = int(reason)
    p = v.packet
    flow["IP"] = {"source": str(p.src), "destination": str(p.dst), "ipVersion": f"IPv{p.src.version}"}
    if v.transit is not None and v.transit.encrypted:
        flow["IP"]["encrypted"] = True  # flow.proto IP.encrypted: the packet went through WireGuard
    flow["l4"] = _l4(v)
    flow["source"] = _endpoint(v.src)
    flow["destination"] = _endpoint(v.dst)
    flow["Type"] = "L3_L4"
    flow["node_name"] = node
    if v.dns is not None:
        names = tuple(getattr(v.dst, "names", ())) or (v.dns.name,)
        flow["destination_names"] = list(names)
    flow["event_type"] = {"type": event_type, **({"sub_type": sub_type} if sub_type else {})}
    if v.service is not None:
        flow["destination_service"] = v.service.to_hubble()
    flow["traffic_direction"] = direction
    if event_type == EVENT_POLICY_VERDICT and res.match_type:
        flow["policy_match_type"] = int(res.match_type)
    if reason is not None:
        flow["drop_reason_desc"] = DropReason(reason).name
    if event_type != EVENT_DROP:
        flow["is_reply"] = False
    if res.action == Action.REDIRECT and event_type == EVENT_POLICY_VERDICT:
        flow["proxy_port"] = res.proxy_port
    flow["Summary"] = _summary(v)
    origins = hook.entry.origins if hook.entry is not None else frozenset()
    pols = _policies(origins)
    if pols and event_type == EVENT_POLICY_VERDICT:
        side = "egress" if direction == "EGRESS" else "ingress"
        flow[f"{side}_{'denied' if dropped else 'allowed'}_by"] = pols
    return _order(flow)


_ORDER = [
    "time",
    "uuid",
    "verdict",
    "drop_reason",
    "IP",
    "l4",
    "source",
    "destination",
    "Type",
    "node_name",
    "destination_names",
    "l7",
    "event_type",
    "destination_service",
    "traffic_direction",
    "policy_match_type",
    "drop_reason_desc",
    "is_reply",
    "proxy_port",
    "Summary",
    "egress_allowed_by",
    "ingress_allowed_by",
    "egress_denied_by",
    "ingress_denied_by",
]


def _order(flow: dict[str, Any]) -> dict[str, Any]:
    return {k: flow[k] for k in _ORDER if k in flow}


def hubble_json_lines(v: Verdict, *, node_name: str = "ciliumpy") -> list[str]:
    """One ``{"flow": …, "node_name": …, "time": …}`` line per flow, as ``hubble observe -o json``."""
    out = []
    for flow in verdict_flows(v, node_name=node_name):
        out.append(json.dumps({"flow": flow, "node_name": node_name, "time": flow["time"]}, separators=(",", ":")))
    return out
