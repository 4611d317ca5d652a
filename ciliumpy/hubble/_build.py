"""The flows Hubble would show for each decision the cluster makes.

Cilium's datapath sends monitor events (policy verdicts, drops, traces) and the proxies send
access-log records; Hubble's parsers turn each into a ``Flow``. Here the events are the
cluster's decisions: a :class:`~ciliumpy.Verdict` (one packet through the egress hook of its
source and the ingress hook of its destination), a :class:`~ciliumpy.Resolution` (a DNS
lookup through the DNS proxy) and the ring-buffer events of real traffic in a lab.

Per packet and hook, as ``bpf_lxc.c`` does:

* a ``policy-verdict`` event (type 5) when the hook enforced policy on a new connection or
  dropped the packet: FORWARDED, REDIRECTED (to a proxy) or DROPPED;
* a ``drop`` event (type 1, sub-type = drop reason) when the hook dropped it;
* a ``trace`` event (type 4) for a packet that went on: ``to-proxy`` when redirected,
  ``to-endpoint`` when delivered to a local endpoint, ``to-stack`` when it left the source
  endpoint for an address no local endpoint owns.

HTTP/Kafka requests judged by the proxy give an L7 record (type 129): a REQUEST (DROPPED with
code 403 when denied) and, when forwarded, the RESPONSE; DNS lookups give a REQUEST and a
RESPONSE record from the DNS proxy.

Building a :class:`Flow` costs far more than a decision, so the store keeps the light
:class:`Spec` of each flow and builds ``Flow`` objects only for the flows a caller reads.
"""

from __future__ import annotations

import ipaddress
import time as _time
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .._datapath import Action, CTState, Direction, DropReason, Packet, Protocol, RuleOrigin
from .._verdict import HookVerdict, PeerInfo, Verdict
from ._flow import (
    DNS,
    HTTP,
    ICMP,
    IP,
    L4,
    CiliumEventType,
    Endpoint,
    Flow,
    HTTPHeader,
    Kafka,
    Layer4,
    Layer7,
    Policy,
    Service,
    format_time,
)
from ._flow import (
    TCPFlags as FlowTCPFlags,
)

if TYPE_CHECKING:
    from .._cluster import Cluster, Resolution

__all__ = ["Spec", "flows_of", "specs_of"]

NODE_NAME = "ciliumpy"

EVENT_DROP = 1
EVENT_TRACE = 4
EVENT_POLICY_VERDICT = 5
EVENT_L7 = 129

# trace sub-types (pkg/monitor/api/types.go observation points)
TRACE_TO_ENDPOINT = 0
TRACE_TO_PROXY = 1
TRACE_TO_STACK = 3
TRACE_POINT_NAMES = {TRACE_TO_ENDPOINT: "TO_ENDPOINT", TRACE_TO_PROXY: "TO_PROXY", TRACE_TO_STACK: "TO_STACK"}

# Verdict enum numbers (flow.proto)
FORWARDED, DROPPED, ERROR, AUDIT, REDIRECTED = 1, 2, 3, 4, 5
VERDICT_NAMES = {
    0: "VERDICT_UNKNOWN",
    1: "FORWARDED",
    2: "DROPPED",
    3: "ERROR",
    4: "AUDIT",
    5: "REDIRECTED",
    6: "TRACED",
    7: "TRANSLATED",
}
INGRESS, EGRESS = 1, 2
DIRECTION_NAMES = {0: "", INGRESS: "INGRESS", EGRESS: "EGRESS"}

# L7 record kinds carried by a spec
L7_HTTP_REQUEST, L7_HTTP_RESPONSE, L7_DNS_REQUEST, L7_DNS_RESPONSE, L7_KAFKA_REQUEST = 1, 2, 3, 4, 5

_FLAG_ORDER = ("SYN", "ACK", "FIN", "RST", "PSH", "URG", "ECE", "CWR")


class Spec:
    """What one flow is made of, before it becomes a :class:`Flow`.

    ``l7`` is ``(kind, request, decision_or_result)`` for proxy records, else ``None``;
    ``reply`` flows travel from ``dst`` back to ``src``.
    """

    __slots__ = (
        "dst",
        "encrypted",
        "event_type",
        "hook",
        "is_reply",
        "l7",
        "origins",
        "packet",
        "service",
        "src",
        "sub_type",
        "time",
        "traffic",
        "verdict",
    )

    def __init__(
        self,
        time: float,
        verdict: int,
        event_type: int,
        sub_type: int,
        traffic: int,
        is_reply: bool | None,
        src: PeerInfo,
        dst: PeerInfo,
        packet: Packet,
        hook: Any,
        origins: frozenset[RuleOrigin],
        l7: tuple[int, Any, Any] | None = None,
    ) -> None:
        self.time = time
        self.verdict = verdict
        self.event_type = event_type
        self.sub_type = sub_type
        self.traffic = traffic
        self.is_reply = is_reply
        self.src = src
        self.dst = dst
        self.packet = packet
        self.hook = hook  # the DatapathResult of the hook that produced the event, or None
        self.origins = origins
        self.l7 = l7
        self.service: Any = None  # the ServiceTranslation of a Verdict towards a Service
        self.encrypted = False  # the packet crossed nodes through WireGuard (Verdict.transit)


# ---------------------------------------------------------------- decisions -> specs
def specs_of(event: Any, cluster: Cluster | None = None) -> list[Spec]:
    """The flows of one cluster event (Verdict, Resolution or lab LiveResult), as specs."""
    if isinstance(event, Verdict):
        return _verdict_specs(event)
    kind = type(event).__name__
    if kind == "Resolution":
        return _resolution_specs(event)
    if kind == "LiveResult":
        if cluster is None:
            raise ValueError("flows of lab traffic need the cluster that names its endpoints")
        return _live_specs(event, cluster)
    return []


def _direction(d: Direction) -> int:
    return EGRESS if d == Direction.EGRESS else INGRESS


def _hook_specs(
    out: list[Spec],
    t: float,
    res: Any,
    origins: frozenset[RuleOrigin],
    src: PeerInfo,
    dst: PeerInfo,
    packet: Packet,
    delivered_locally: bool,
) -> None:
    """policy-verdict, drop and trace events of one hook's result (a DatapathResult)."""
    direction = _direction(res.direction)
    reply = res.ct_state == CTState.REPLY
    action = res.action
    if (
        res.enforced
        and (action == Action.DROP or res.ct_state in (CTState.NEW, CTState.RELATED))
        and not (action == Action.ALLOW and unenforced(origins))
    ):
        verdict = DROPPED if action == Action.DROP else REDIRECTED if action == Action.REDIRECT else FORWARDED
        out.append(Spec(t, verdict, EVENT_POLICY_VERDICT, 0, direction, False, src, dst, packet, res, origins))
    if action == Action.DROP:
        reason = int(res.drop_reason) if res.drop_reason is not None else 0
        out.append(Spec(t, DROPPED, EVENT_DROP, reason, direction, None, src, dst, packet, res, origins))
        return
    if action == Action.REDIRECT:
        out.append(Spec(t, FORWARDED, EVENT_TRACE, TRACE_TO_PROXY, direction, reply, src, dst, packet, res, origins))
    elif direction == INGRESS and res.enforced:
        traffic = EGRESS if reply else INGRESS
        out.append(Spec(t, FORWARDED, EVENT_TRACE, TRACE_TO_ENDPOINT, traffic, reply, src, dst, packet, res, origins))
    elif direction == EGRESS and not delivered_locally:
        traffic = INGRESS if reply else EGRESS
        out.append(Spec(t, FORWARDED, EVENT_TRACE, TRACE_TO_STACK, traffic, reply, src, dst, packet, res, origins))


_UNENFORCED: dict[frozenset[RuleOrigin], bool] = {}


def unenforced(origins: frozenset[RuleOrigin]) -> bool:
    """Whether the entry is the allow-all of a direction no policy enforces.

    Cilium sends policy-verdict events only for directions where the endpoint enforces
    policy (the agent's policy-verdict log filter); an endpoint no policy selects is let
    through by its ``allow-any-*`` entry without one.
    """
    found = _UNENFORCED.get(origins)
    if found is None:
        found = bool(origins) and all(o.kind == "reserved" and o.name.startswith("allow-any-") for o in origins)
        if len(_UNENFORCED) < 10_000:
            _UNENFORCED[origins] = found
    return found


def _hook_origins(hook: HookVerdict) -> frozenset[RuleOrigin]:
    return hook.entry.origins if hook.entry is not None else frozenset()


def _verdict_specs(v: Verdict) -> list[Spec]:
    out: list[Spec] = []
    t = v.time if v.time is not None else 0.0
    local = v.ingress is not None and v.ingress.result.enforced
    for hook in (v.egress, v.ingress):
        if hook is None:
            continue
        _hook_specs(out, t, hook.result, _hook_origins(hook), v.src, v.dst, v.packet, local)
        if hook.l7 is not None and v.request is not None:
            _proxy_specs(out, t, v, hook)
    encrypted = v.transit is not None and v.transit.encrypted
    for spec in out:
        spec.service = v.service
        spec.encrypted = encrypted
    return out


def _proxy_specs(out: list[Spec], t: float, v: Verdict, hook: HookVerdict) -> None:
    req, decision = v.request, hook.l7
    direction = _direction(hook.direction)
    origins = frozenset(getattr(decision, "matched_origins", ())) or _hook_origins(hook)
    kind = type(req).__name__
    if kind == "HTTPRequest":
        verdict = FORWARDED if decision.allowed else DROPPED
        l7 = (L7_HTTP_REQUEST, req, decision)
        out.append(Spec(t, verdict, EVENT_L7, 0, direction, False, v.src, v.dst, v.packet, hook.result, origins, l7))
        if decision.allowed:
            l7 = (L7_HTTP_RESPONSE, req, decision)
            out.append(
                Spec(t, FORWARDED, EVENT_L7, 0, direction, True, v.src, v.dst, v.packet, hook.result, origins, l7)
            )
    elif kind == "KafkaRequest":
        verdict = FORWARDED if decision.allowed else DROPPED
        l7 = (L7_KAFKA_REQUEST, req, decision)
        out.append(Spec(t, verdict, EVENT_L7, 0, direction, False, v.src, v.dst, v.packet, hook.result, origins, l7))
    # DNS queries: the Resolution that ran the query carries the DNS proxy's records.


def _resolution_specs(r: Resolution) -> list[Spec]:
    v = r.verdict
    if r.result is None or v.egress is None:
        return []
    out: list[Spec] = []
    t = v.time if v.time is not None else 0.0
    hook = v.egress if v.egress.result.action == Action.REDIRECT else (v.ingress or v.egress)
    if hook.result.action != Action.REDIRECT:
        return []  # the query was not proxied: no DNS records
    direction = _direction(hook.direction)
    origins = _hook_origins(hook)
    res = r.result
    verdict = FORWARDED if res.allowed else DROPPED
    out.append(
        Spec(
            t,
            verdict,
            EVENT_L7,
            0,
            direction,
            False,
            v.src,
            v.dst,
            v.packet,
            hook.result,
            origins,
            (L7_DNS_REQUEST, r, res),
        )
    )
    if res.allowed:
        out.append(
            Spec(
                t,
                FORWARDED,
                EVENT_L7,
                0,
                direction,
                True,
                v.src,
                v.dst,
                v.packet,
                hook.result,
                origins,
                (L7_DNS_RESPONSE, r, res),
            )
        )
    return out


def _live_specs(live: Any, cluster: Cluster) -> list[Spec]:
    """Ring-buffer events of one lab exchange, as the datapath reported them."""
    out: list[Spec] = []
    peers = _LabPeers(cluster)
    origins_of = getattr(cluster.backend, "origins_of_cookie", None)
    # Event times are bpf_ktime_get_ns(): CLOCK_MONOTONIC; flows carry wall-clock time.
    boot = _time.time() - _time.monotonic()
    for ev in live.events:
        if ev.src is None or ev.dst is None:
            continue
        packet = _event_packet(ev)
        if ev.ct_state == CTState.REPLY:
            # Peers of a reply are those of the connection: its source is the answering side.
            src, dst = peers.get(ev.dst), peers.get(ev.src)
            packet_for_flow = _swap(packet)
        else:
            src, dst = peers.get(ev.src), peers.get(ev.dst)
            packet_for_flow = packet
        origins: frozenset[RuleOrigin] = frozenset()
        if ev.enforced and ev.key is not None and origins_of is not None:
            try:
                origins = origins_of(ev.cookie)
            except (IndexError, KeyError):
                origins = frozenset()
        t = ev.timestamp_ns / 1e9 + boot
        local = peers.local(ev.dst)
        _hook_specs(out, t, ev.result(), origins, src, dst, packet_for_flow, local)
    return out


def _event_packet(ev: Any) -> Packet:
    proto = int(ev.protocol)
    if proto in (Protocol.ICMP, Protocol.ICMPV6):
        return Packet(ev.src, ev.dst, proto, sport=ev.sport, icmp_type=ev.dport, tcp_flags=0)
    # The datapath reports each TCP packet's own flags (the header's flags byte).
    return Packet(ev.src, ev.dst, proto, sport=ev.sport, dport=ev.dport, tcp_flags=ev.tcp_flags)


def _swap(p: Packet) -> Packet:
    """The packet as seen from the connection's original direction (for reply events)."""
    return Packet(
        p.dst,
        p.src,
        p.protocol,
        sport=p.dport,
        dport=p.sport,
        icmp_type=p.icmp_type,
        icmp_code=p.icmp_code,
        tcp_flags=p.tcp_flags,
    )


class _LabPeers:
    """PeerInfo of lab addresses, through the cluster's public surface."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.by_ip: dict[Any, str] = {}
        for ref, ep in cluster.endpoints.items():
            for ip in ep.ips:
                self.by_ip[ip] = ref
        self.cache: dict[Any, PeerInfo] = {}

    def local(self, ip: Any) -> bool:
        return ip in self.by_ip

    def get(self, ip: Any) -> PeerInfo:
        found = self.cache.get(ip)
        if found is None:
            found = self.cache[ip] = peer_info(self.cluster, ip, self.by_ip.get(ip))
        return found


def peer_info(cluster: Cluster, ip: Any, ref: str | None = None) -> PeerInfo:
    """How the cluster describes an address: its endpoint (pod) or its identity."""
    addr = ipaddress.ip_address(ip)
    if ref is not None:
        ep = cluster.endpoints[ref]
        ident = cluster.identity_of(ref)
        return PeerInfo(
            ip=addr,
            identity=ident.id,
            labels=tuple(ident.labels.strings()),
            namespace=ep.namespace,
            pod_name=ep.name,
            endpoint_id=cluster.endpoint_id(ref),
            identity_name=ident.name,
        )
    ident = cluster.lookup_ip(addr)
    return PeerInfo(ip=addr, identity=ident.id, labels=tuple(ident.labels.strings()), identity_name=ident.name)


# ---------------------------------------------------------------- specs -> Flow
class FlowBuilder:
    """Builds :class:`Flow` objects from specs, sharing endpoint objects between flows."""

    def __init__(self, node_name: str = NODE_NAME) -> None:
        self.node_name = node_name
        self._endpoints: dict[int, tuple[PeerInfo, Endpoint]] = {}
        self._policies: dict[frozenset[RuleOrigin], tuple[Policy, ...]] = {}
        self._ips: dict[tuple[Any, Any, bool], IP] = {}
        self._second = -1
        self._head = ""

    def endpoint(self, peer: PeerInfo) -> Endpoint:
        hit = self._endpoints.get(id(peer))
        if hit is not None and hit[0] is peer:
            return hit[1]
        ep = Endpoint(
            ID=peer.endpoint_id,
            identity=peer.identity,
            namespace=peer.namespace,
            labels=peer.labels,
            pod_name=peer.pod_name,
        )
        if len(self._endpoints) > 100_000:
            self._endpoints.clear()
        self._endpoints[id(peer)] = (peer, ep)
        return ep

    def policies(self, origins: frozenset[RuleOrigin]) -> tuple[Policy, ...]:
        found = self._policies.get(origins)
        if found is None:
            found = tuple(_policy(o) for o in sorted(origins) if o.kind != "reserved")
            self._policies[origins] = found
        return found

    def ip(self, src: Any, dst: Any, encrypted: bool = False) -> IP:
        found = self._ips.get((src, dst, encrypted))
        if found is None:
            if len(self._ips) > 100_000:
                self._ips.clear()
            found = self._ips[(src, dst, encrypted)] = IP(
                source=str(src), destination=str(dst), ipVersion=f"IPv{src.version}", encrypted=encrypted
            )
        return found

    def time(self, seconds: float) -> str:
        """``format_time`` with the date part of the last second remembered."""
        micros = round(seconds * 1e6)
        whole, frac = divmod(micros, 1_000_000)
        if whole != self._second:
            self._second, self._head = whole, format_time(whole)[:-1]
        if frac == 0:
            return self._head + "Z"
        if frac % 1000 == 0:
            return f"{self._head}.{frac // 1000:03d}Z"
        return f"{self._head}.{frac:06d}Z"

    def build(self, spec: Spec, uuid: str = "") -> Flow:
        p = spec.packet
        reply = bool(spec.is_reply)
        src, dst = (spec.dst, spec.src) if reply else (spec.src, spec.dst)
        l7 = None
        summary = ""
        flow_type = "L3_L4"
        drop_reason = 0
        drop_desc = ""
        if spec.l7 is not None:
            l7, summary = _layer7(spec)
            flow_type = "L7"
        else:
            summary = _summary(p, reply)
            if spec.verdict == DROPPED and spec.hook is not None and spec.hook.drop_reason is not None:
                drop_reason = int(spec.hook.drop_reason)
                drop_desc = DropReason(drop_reason).name
        names = _names(src.names), _names(dst.names)
        pols: dict[str, tuple[Policy, ...]] = {}
        if spec.event_type == EVENT_POLICY_VERDICT and spec.origins:
            pl = self.policies(spec.origins)
            if pl:
                side = "egress" if spec.traffic == EGRESS else "ingress"
                pols[f"{side}_{'denied' if spec.verdict == DROPPED else 'allowed'}_by"] = pl
        empty: tuple[Policy, ...] = ()
        hook = spec.hook
        svc = None if spec.service is None else Service(name=spec.service.name, namespace=spec.service.namespace)
        return Flow(
            time=self.time(spec.time),
            uuid=uuid,
            verdict=VERDICT_NAMES[spec.verdict],
            drop_reason=drop_reason,
            IP=self.ip(p.dst, p.src, spec.encrypted) if reply else self.ip(p.src, p.dst, spec.encrypted),
            l4=_layer4(p, reply, with_flags=spec.l7 is None),
            source=self.endpoint(src),
            destination=self.endpoint(dst),
            Type=flow_type,
            node_name=self.node_name,
            source_names=names[0],
            destination_names=names[1],
            l7=l7,
            event_type=CiliumEventType(type=spec.event_type, sub_type=spec.sub_type),
            source_service=svc if reply else None,
            destination_service=None if reply else svc,
            traffic_direction=DIRECTION_NAMES[spec.traffic],
            policy_match_type=int(hook.match_type) if spec.event_type == EVENT_POLICY_VERDICT and hook else 0,
            trace_observation_point=TRACE_POINT_NAMES.get(spec.sub_type, "") if spec.event_type == EVENT_TRACE else "",
            drop_reason_desc=drop_desc,
            is_reply=spec.is_reply,
            proxy_port=hook.proxy_port
            if spec.event_type == EVENT_POLICY_VERDICT and hook is not None and spec.verdict == REDIRECTED
            else 0,
            Summary=summary,
            egress_allowed_by=pols.get("egress_allowed_by", empty),
            ingress_allowed_by=pols.get("ingress_allowed_by", empty),
            egress_denied_by=pols.get("egress_denied_by", empty),
            ingress_denied_by=pols.get("ingress_denied_by", empty),
        )


def _names(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n.rstrip(".") for n in names) if names else ()


def _policy(o: RuleOrigin) -> Policy:
    return Policy.from_dict(o.to_hubble())


def _layer4(p: Packet, reply: bool, *, with_flags: bool) -> Layer4:
    sport, dport = (p.dport, p.sport) if reply else (p.sport, p.dport)
    if p.protocol == Protocol.TCP:
        flags = None
        if with_flags and p.tcp_flags:
            b = int(p.tcp_flags)
            flags = FlowTCPFlags(
                FIN=bool(b & 1),
                SYN=bool(b & 2),
                RST=bool(b & 4),
                PSH=bool(b & 8),
                ACK=bool(b & 16),
                URG=bool(b & 32),
                ECE=bool(b & 64),
                CWR=bool(b & 128),
            )
        return Layer4(TCP=L4(source_port=sport, destination_port=dport, flags=flags))
    if p.protocol == Protocol.UDP:
        return Layer4(UDP=L4(source_port=sport, destination_port=dport))
    if p.protocol == Protocol.SCTP:
        return Layer4(SCTP=L4(source_port=sport, destination_port=dport))
    icmp = ICMP(type=p.icmp_type, code=p.icmp_code)
    return Layer4(ICMPv4=icmp) if p.protocol == Protocol.ICMP else Layer4(ICMPv6=icmp)


_ICMP4 = {0: "EchoReply", 3: "DestinationUnreachable", 8: "EchoRequest", 11: "TimeExceeded"}
_ICMP6 = {1: "DestinationUnreachable", 3: "TimeExceeded", 128: "EchoRequest", 129: "EchoReply"}


_FLAG_BITS = (("SYN", 2), ("ACK", 16), ("FIN", 1), ("RST", 4), ("PSH", 8), ("URG", 32), ("ECE", 64), ("CWR", 128))


def _summary(p: Packet, reply: bool) -> str:
    proto = p.protocol
    if proto == 6:
        bits = int(p.tcp_flags)
        return "TCP Flags: " + ", ".join(n for n, b in _FLAG_BITS if bits & b)
    if proto == 17:
        return "UDP"
    if proto == 132:
        return "SCTP"
    if proto == 1:
        return f"ICMPv4 {_ICMP4.get(p.icmp_type, str(p.icmp_type))}"
    return f"ICMPv6 {_ICMP6.get(p.icmp_type, str(p.icmp_type))}"


_RCODE_TEXT = {0: "No Error", 1: "Format Error", 2: "Server Failure", 3: "Non-Existent Domain", 5: "Query Refused"}


def _layer7(spec: Spec) -> tuple[Layer7, str]:
    assert spec.l7 is not None
    kind, req, info = spec.l7
    if kind in (L7_HTTP_REQUEST, L7_HTTP_RESPONSE):
        headers = tuple(HTTPHeader(key=k, value=v) for k, v in req.headers)
        url = http_url(req, spec.packet)
        shown = urllib.parse.unquote(url)
        if kind == L7_HTTP_REQUEST:
            code = 0 if info.allowed else (info.status or 403)
            http = HTTP(code=code, method=req.method, url=url, protocol=req.protocol, headers=headers)
            return Layer7(type="REQUEST", http=http), f"{req.protocol} {req.method} {shown}"
        status = info.status or 200
        http = HTTP(code=status, method=req.method, url=url, protocol=req.protocol, headers=headers)
        return Layer7(type="RESPONSE", http=http), f"{req.protocol} {status} 0ms ({req.method} {shown})"
    if kind == L7_KAFKA_REQUEST:
        topic = req.topics[0] if req.topics else ""
        kafka = Kafka(
            error_code=0 if info.allowed else 29,  # TOPIC_AUTHORIZATION_FAILED
            api_version=req.api_version,
            api_key=_kafka_key_name(req.api_key),
            correlation_id=req.correlation_id,
            topic=topic,
        )
        return Layer7(type="REQUEST", kafka=kafka), f"Kafka request {_kafka_key_name(req.api_key)} topic {topic}"
    resolution, res = req, info
    qtype = resolution.qtype
    if kind == L7_DNS_REQUEST:
        dns = DNS(query=resolution.name, observation_source="proxy", qtypes=(qtype,))
        return Layer7(type="REQUEST", dns=dns), f"DNS Query {resolution.name} {qtype}"
    answers = tuple(res.answers)
    ttl = res.ttl if answers else 0
    dns = DNS(
        query=resolution.name,
        ips=answers,
        ttl=ttl,
        cnames=tuple(res.cnames),
        observation_source="proxy",
        rcode=res.rcode,
        qtypes=(qtype,),
        rrtypes=tuple(res.answer_types) or ((qtype,) if answers else ()),
    )
    if answers:
        summary = f'DNS Answer "{",".join(answers)}" TTL: {ttl} (Proxy {resolution.name} {qtype})'
    else:
        rcode = _RCODE_TEXT.get(res.rcode, str(res.rcode))
        summary = f"DNS Answer RCode: {rcode} TTL: {ttl} (Proxy {resolution.name} {qtype})"
    return Layer7(type="RESPONSE", dns=dns), summary


def http_url(req: Any, packet: Packet) -> str:
    """The request URL as the proxy logs it: ``http://<authority><path>``, the authority
    being the Host header, else the address the client connected to."""
    if getattr(req, "authority", None):
        return str(req.url)
    dst = packet.dst
    host = f"[{dst}]" if dst.version == 6 else str(dst)
    return f"http://{host}:{packet.dport}{req.path}"


def _kafka_key_name(key: int) -> str:
    names = {0: "produce", 1: "fetch", 2: "offsets", 3: "metadata"}
    return names.get(int(key), str(key))


def flows_of(events: Iterable[Any], cluster: Cluster | None = None, *, node_name: str = NODE_NAME) -> Iterator[Flow]:
    """The flows Hubble would show for cluster events (Verdicts, Resolutions, lab results)."""
    builder = FlowBuilder(node_name)
    for event in events:
        for spec in specs_of(event, cluster):
            yield builder.build(spec)
