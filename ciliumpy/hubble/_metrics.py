"""Hubble's Prometheus metrics over a cluster's flows (``pkg/hubble/metrics``).

Each enabled metric is one of Hubble's handlers, with its metric names, label names and
label values: ``flow``, ``drop``, ``tcp``, ``icmp``, ``dns``, ``http`` (``httpV2``),
``port-distribution``, ``flows-to-world`` and ``policy``. An entry of the enabled list is
written as in Cilium's Helm values, ``name`` or ``name:option=value;option=value``, e.g.
``"dns:query;ignoreAAAA"`` or ``"http:sourceContext=workload-name|pod;labelsContext=source_namespace"``.

Context options add labels as Hubble does (``pkg/hubble/metrics/api/context.go``):
``labelsContext`` adds the listed labels (``source_ip``, ``source_pod``, ...) first, in
Hubble's fixed order; ``sourceContext``/``destinationContext`` (``|``-separated fallbacks:
``identity``, ``namespace``, ``pod``, ``pod-short``, ``pod-name``, ``dns``, ``ip``,
``reserved-identity``, ``workload-name``, ``app``) add ``source``/``destination``, with
the per-direction variants ``sourceEgressContext`` etc.

Upstream quirks kept on purpose (metrics must read the same): ICMPv6 messages are counted
with ``family="IPv4"`` (``icmp/handler.go``), and a policy-verdict drop and its drop event
are both counted by ``hubble_drop_total``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import CiliumpyError
from ._flow import TRACE_SUBTYPES, Flow, short_pod_name
from ._store import store_of

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from prometheus_client import CollectorRegistry

    from .._cluster import Cluster

__all__ = ["METRICS", "Metrics", "MetricsError", "enabled_from_helm_values"]

METRICS = ("dns", "drop", "flow", "flows-to-world", "http", "httpV2", "icmp", "policy", "port-distribution", "tcp")


class MetricsError(CiliumpyError, ValueError):
    """A metric name or option Hubble does not accept."""


_CONTEXT_IDS = (
    "identity",
    "namespace",
    "pod",
    "pod-short",
    "pod-name",
    "dns",
    "ip",
    "reserved-identity",
    "workload-name",
    "app",
)
_CONTEXT_LABELS = (
    "source_ip",
    "source_pod",
    "source_namespace",
    "source_workload",
    "source_app",
    "destination_ip",
    "destination_pod",
    "destination_namespace",
    "destination_workload",
    "destination_app",
    "traffic_direction",
)
_APP_LABELS = ("k8s:app.kubernetes.io/name", "k8s:k8s-app", "k8s:app")
_RCODES = {
    0: "No Error",
    1: "Format Error",
    2: "Server Failure",
    3: "Non-Existent Domain",
    4: "Not Implemented",
    5: "Query Refused",
    6: "Name Exists when it should not",
    7: "RR Set Exists when it should not",
    8: "RR Set that should exist does not",
    9: "Not Authorized",
    10: "Name not contained in zone",
    11: "DSO-TYPE Not Implemented",
    16: "Bad OPT Version",
    17: "Key not recognized",
    18: "Signature out of time window",
    19: "Bad TKEY Mode",
    20: "Duplicate key name",
    21: "Algorithm not supported",
    22: "Bad Truncation",
    23: "Bad/missing Server Cookie",
}
# gopacket's names of ICMP types and codes (what Hubble's icmp handler prints)
_ICMP4_TYPES: dict[int, tuple[str, dict[int, str] | None]] = {
    0: ("EchoReply", None),
    3: (
        "DestinationUnreachable",
        {
            0: "Net",
            1: "Host",
            2: "Protocol",
            3: "Port",
            4: "FragmentationNeeded",
            5: "SourceRoutingFailed",
            6: "NetUnknown",
            7: "HostUnknown",
            8: "SourceIsolated",
            9: "NetAdminProhibited",
            10: "HostAdminProhibited",
            11: "NetTOS",
            12: "HostTOS",
            13: "CommAdminProhibited",
            14: "HostPrecedence",
            15: "PrecedenceCutoff",
        },
    ),
    4: ("SourceQuench", None),
    5: ("Redirect", {0: "Network", 1: "Host", 2: "TOS+Network", 3: "TOS+Host"}),
    8: ("EchoRequest", None),
    9: ("RouterAdvertisement", None),
    10: ("RouterSolicitation", None),
    11: ("TimeExceeded", {0: "TTLExceeded", 1: "FragmentReassemblyTimeExceeded"}),
    12: ("ParameterProblem", {0: "PointerIndicatesError", 1: "MissingOption", 2: "BadLength"}),
    13: ("TimestampRequest", None),
    14: ("TimestampReply", None),
    15: ("InfoRequest", None),
    16: ("InfoReply", None),
    17: ("AddressMaskRequest", None),
    18: ("AddressMaskReply", None),
}
_ICMP6_TYPES: dict[int, tuple[str, dict[int, str] | None]] = {
    1: (
        "DestinationUnreachable",
        {
            0: "NoRouteToDst",
            1: "AdminProhibited",
            2: "BeyondScopeOfSrc",
            3: "AddressUnreachable",
            4: "PortUnreachable",
            5: "SrcAddressFailedPolicy",
            6: "RejectRouteToDst",
        },
    ),
    2: ("PacketTooBig", None),
    3: ("TimeExceeded", {0: "HopLimitExceeded", 1: "FragmentReassemblyTimeExceeded"}),
    4: ("ParameterProblem", {0: "ErroneousHeaderField", 1: "UnrecognizedNextHeader", 2: "UnrecognizedIPv6Option"}),
    128: ("EchoRequest", None),
    129: ("EchoReply", None),
    130: ("MulticastListenerQuery", None),
    131: ("MulticastListenerReport", None),
    132: ("MulticastListenerDone", None),
    133: ("RouterSolicitation", None),
    134: ("RouterAdvertisement", None),
    135: ("NeighborSolicitation", None),
    136: ("NeighborAdvertisement", None),
    137: ("Redirect", None),
}


def icmp_type_name(table: Mapping[int, tuple[str, dict[int, str] | None]], t: int, c: int) -> str:
    """gopacket's ``ICMPv4TypeCode.String()`` / ``ICMPv6TypeCode.String()``."""
    info = table.get(t)
    if info is None:
        return f"{t}({c})"
    name, codes = info
    if codes is None and c == 0:
        return name
    if codes is not None and c in codes:
        return f"{name}({codes[c]})"
    return f"{name}(Code: {c})"


def flow_protocol(flow: Flow) -> str:
    """``pkg/hubble/api/v1``'s FlowProtocol: the protocol label of flow metrics."""
    et = flow.event_type.type if flow.event_type is not None else 0
    if et == 129:
        l7 = flow.l7
        if l7 is not None:
            if l7.dns is not None:
                return "DNS"
            if l7.http is not None:
                return "HTTP"
            if l7.kafka is not None:
                return "Kafka"
        return "Unknown L7"
    if et in (1, 3, 4, 5):
        l4 = flow.l4
        if l4 is not None:
            for name in ("TCP", "UDP", "ICMPv4", "ICMPv6", "SCTP"):
                if getattr(l4, name) is not None:
                    return name
        return "Unknown L4"
    return "Unknown flow"


def parse_entry(entry: str) -> tuple[str, dict[str, str]]:
    """``"dns:query;ignoreAAAA"`` -> ``("dns", {"query": "", "ignoreAAAA": ""})``."""
    name, _, rest = entry.strip().partition(":")
    options: dict[str, str] = {}
    for part in rest.split(";") if rest else ():
        if not part:
            continue
        key, _, value = part.partition("=")
        options[key] = value
    if name not in METRICS:
        raise MetricsError(f"metric '{name}' does not exist (valid: {', '.join(METRICS)})")
    return name, options


class _Context:
    """Context options of one metric: extra label names and their values per flow."""

    def __init__(self, options: Mapping[str, str]) -> None:
        self.source: list[str] = []
        self.destination: list[str] = []
        self.per_direction: dict[str, list[str]] = {}
        self.labels: list[str] = []
        for key, value in options.items():
            low = key.lower()
            if low in ("sourcecontext", "destinationcontext"):
                ids = self._ids(value)
                (self.source if low == "sourcecontext" else self.destination).extend(ids)
            elif low in (
                "sourceegresscontext",
                "sourceingresscontext",
                "destinationegresscontext",
                "destinationingresscontext",
            ):
                self.per_direction[low] = self._ids(value)
            elif low == "labelscontext":
                wanted = value.split(",")
                for label in wanted:
                    if label not in _CONTEXT_LABELS:
                        raise MetricsError(f"invalid labelsContext value: {label}")
                self.labels = [label for label in _CONTEXT_LABELS if label in wanted]

    @staticmethod
    def _ids(value: str) -> list[str]:
        out = []
        for v in value.split("|"):
            if v.lower() not in _CONTEXT_IDS:
                raise MetricsError(f"unknown context '{v}'")
            out.append(v.lower())
        return out

    def names(self) -> list[str]:
        out = list(self.labels)
        if self.source:
            out.append("source")
        if self.destination:
            out.append("destination")
        return out

    def values(self, flow: Flow, invert: bool = False) -> list[str]:
        out = [self._label(label, flow, invert) for label in self.labels]
        direction = flow.traffic_direction
        src_ids = self.source
        if direction == "INGRESS" and "sourceingresscontext" in self.per_direction:
            src_ids = self.per_direction["sourceingresscontext"]
        elif direction == "EGRESS" and "sourceegresscontext" in self.per_direction:
            src_ids = self.per_direction["sourceegresscontext"]
        dst_ids = self.destination
        if direction == "INGRESS" and "destinationingresscontext" in self.per_direction:
            dst_ids = self.per_direction["destinationingresscontext"]
        elif direction == "EGRESS" and "destinationegresscontext" in self.per_direction:
            dst_ids = self.per_direction["destinationegresscontext"]
        src = next((v for v in (_context_value(c, flow, True) for c in src_ids) if v), "")
        dst = next((v for v in (_context_value(c, flow, False) for c in dst_ids) if v), "")
        if invert:
            src, dst = dst, src
        if self.source:
            out.append(src)
        if self.destination:
            out.append(dst)
        return out

    @staticmethod
    def _label(label: str, flow: Flow, invert: bool) -> str:
        src, dst = flow.source, flow.destination
        sip = flow.IP.source if flow.IP else ""
        dip = flow.IP.destination if flow.IP else ""
        if invert:
            src, dst, sip, dip = dst, src, dip, sip
        if label == "traffic_direction":
            d = flow.traffic_direction
            return d.lower() if d and d != "TRAFFIC_DIRECTION_UNKNOWN" else "unknown"
        side, _, what = label.partition("_")
        ep = src if side == "source" else dst
        if what == "ip":
            return sip if side == "source" else dip
        if ep is None:
            return ""
        if what == "pod":
            return ep.pod_name
        if what == "namespace":
            return ep.namespace
        if what == "workload":
            return ep.workloads[0].name if ep.workloads else ""
        return _app(ep.labels)


def _app(labels: Sequence[str]) -> str:
    for label in labels:
        for app in _APP_LABELS:
            if label.startswith(app + "="):
                value = label.split("=", 1)[1]
                if value:
                    return value
    return ""


def _context_value(cid: str, flow: Flow, source: bool) -> str:
    ep = flow.source if source else flow.destination
    if cid == "namespace":
        return ep.namespace if ep else ""
    if cid == "identity":
        return ",".join(ep.labels) if ep else ""
    if cid in ("pod", "pod-short"):
        if ep is None:
            return ""
        name = short_pod_name(ep.pod_name) if cid == "pod-short" else ep.pod_name
        return f"{ep.namespace}/{name}" if ep.namespace else name
    if cid == "pod-name":
        return ep.pod_name if ep else ""
    if cid == "dns":
        return ",".join(flow.source_names if source else flow.destination_names)
    if cid == "ip":
        return (flow.IP.source if source else flow.IP.destination) if flow.IP else ""
    if cid == "reserved-identity":
        labels = ep.labels if ep else ()
        if "reserved:kube-apiserver" in labels:
            return "reserved:kube-apiserver"
        return next((lbl for lbl in labels if lbl.startswith("reserved:")), "")
    if cid == "workload-name":
        return ep.workloads[0].name if ep and ep.workloads else ""
    return _app(ep.labels) if ep else ""


class _Handler:
    """One Hubble metrics handler (a plugin with its options)."""

    def __init__(self, name: str, options: Mapping[str, str], registry: CollectorRegistry) -> None:
        from prometheus_client import Counter, Histogram

        self.name = name
        self.options = dict(options)
        self.ctx = _Context(options)
        ctx = self.ctx.names()
        lower = {k.lower() for k in options}

        def counter(metric: str, help_text: str, labels: list[str]) -> Any:
            return Counter(f"hubble_{metric}", help_text, labels, registry=registry)

        if name == "flow":
            self.m = counter(
                "flows_processed", "Total number of flows processed", ["protocol", "type", "subtype", "verdict", *ctx]
            )
        elif name == "drop":
            self.m = counter("drop", "Number of drops", [*ctx, "reason", "protocol"])
        elif name == "tcp":
            self.m = counter("tcp_flags", "TCP flag occurrences", ["flag", "family", *ctx])
        elif name == "icmp":
            self.m = counter("icmp", "Number of ICMP messages", ["family", "type", *ctx])
        elif name == "dns":
            self.query = "query" in lower
            self.ignore_aaaa = "ignoreaaaa" in lower
            common = [*ctx, "rcode", "qtypes", "ips_returned"] + (["query"] if self.query else [])
            types = [*ctx, "type", "qtypes"] + (["query"] if self.query else [])
            self.queries = counter("dns_queries", "Number of DNS queries observed", common)
            self.responses = counter("dns_responses", "Number of DNS queries observed", common)
            self.types = counter("dns_response_types", "Number of DNS queries observed", types)
        elif name in ("http", "httpV2"):
            if name == "httpV2":
                self.requests = counter(
                    "http_requests", "Count of HTTP requests", [*ctx, "method", "protocol", "status", "reporter"]
                )
            else:
                self.requests = counter(
                    "http_requests", "Count of HTTP requests", [*ctx, "method", "protocol", "reporter"]
                )
                self.responses = counter(
                    "http_responses", "Count of HTTP responses", [*ctx, "method", "protocol", "status", "reporter"]
                )
            self.duration = Histogram(
                "hubble_http_request_duration_seconds",
                "Quantiles of HTTP request duration in seconds",
                [*ctx, "method", "reporter"],
                registry=registry,
            )
        elif name == "port-distribution":
            self.m = counter(
                "port_distribution", "Numbers of packets distributed by destination port", ["protocol", "port", *ctx]
            )
        elif name == "flows-to-world":
            self.any_drop = "any-drop" in lower
            self.syn_only = "syn-only" in lower
            self.port = "port" in lower
            labels = ["protocol", "verdict", *(["port"] if self.port else []), *ctx]
            self.m = counter("flows_to_world", "Total number of flows to reserved:world", labels)
        elif name == "policy":
            self.m = counter(
                "policy_verdicts",
                "Total number of Cilium network policy verdicts",
                ["direction", "match", "action", *ctx],
            )

    def process(self, f: Flow) -> None:
        name = self.name
        et = f.event_type.type if f.event_type is not None else 0
        if name == "flow":
            sub = ""
            if et == 129:
                kind = "L7"
                if f.l7 is not None:
                    sub = "DNS" if f.l7.dns else "HTTP" if f.l7.http else "Kafka" if f.l7.kafka else ""
            elif et == 1:
                kind = "Drop"
            elif et == 3:
                kind = "Capture"
            elif et == 4:
                kind = "Trace"
                sub = TRACE_SUBTYPES.get(f.event_type.sub_type if f.event_type else 0, "")
            elif et == 5:
                kind = "PolicyVerdict"
            else:
                kind, sub = "Unknown", str(et)
            self.m.labels(flow_protocol(f), kind, sub, f.verdict or "VERDICT_UNKNOWN", *self.ctx.values(f)).inc()
        elif name == "drop":
            if f.verdict == "DROPPED":
                reason = f.drop_reason_desc or "DROP_REASON_UNKNOWN"
                self.m.labels(*self.ctx.values(f), reason, flow_protocol(f)).inc()
        elif name == "tcp":
            if f.verdict not in ("FORWARDED", "REDIRECTED") or f.l4 is None or f.IP is None:
                return
            tcp = f.l4.TCP
            if tcp is None or tcp.flags is None:
                return
            family = f.IP.ipVersion or "IP_NOT_USED"
            ctx = self.ctx.values(f)
            if tcp.flags.FIN:
                self.m.labels("FIN", family, *ctx).inc()
            if tcp.flags.SYN:
                self.m.labels("SYN-ACK" if tcp.flags.ACK else "SYN", family, *ctx).inc()
            if tcp.flags.RST:
                self.m.labels("RST", family, *ctx).inc()
        elif name == "icmp":
            if f.l4 is None:
                return
            if f.l4.ICMPv4 is not None:
                t = icmp_type_name(_ICMP4_TYPES, f.l4.ICMPv4.type, f.l4.ICMPv4.code)
                self.m.labels("IPv4", t, *self.ctx.values(f)).inc()
            if f.l4.ICMPv6 is not None:
                t = icmp_type_name(_ICMP6_TYPES, f.l4.ICMPv6.type, f.l4.ICMPv6.code)
                self.m.labels("IPv4", t, *self.ctx.values(f)).inc()  # sic: upstream labels ICMPv6 IPv4
        elif name == "dns":
            dns = f.l7.dns if f.l7 is not None else None
            if dns is None or (self.ignore_aaaa and dns.qtypes == ("AAAA",)):
                return
            ctx = self.ctx.values(f)
            qtypes = ",".join(dns.qtypes)
            ips = str(len(dns.ips))
            extra = [dns.query] if self.query else []
            if f.verdict == "DROPPED":
                self.queries.labels(*ctx, "Policy denied", qtypes, ips, *extra).inc()
            elif not f.is_reply:
                self.queries.labels(*ctx, "", qtypes, ips, *extra).inc()
            else:
                self.responses.labels(*ctx, _RCODES.get(dns.rcode, ""), qtypes, ips, *extra).inc()
                for rr in dns.rrtypes:
                    self.types.labels(*ctx, rr, qtypes, *extra).inc()
        elif name in ("http", "httpV2"):
            http = f.l7.http if f.l7 is not None else None
            if http is None or f.l7 is None:
                return
            reporter = {"EGRESS": "client", "INGRESS": "server"}.get(f.traffic_direction, "unknown")
            seconds = f.l7.latency_ns / 1e9
            if name == "httpV2":
                if f.l7.type != "RESPONSE":
                    return
                ctx = self.ctx.values(f, invert=True)
                self.requests.labels(*ctx, http.method, http.protocol, str(http.code), reporter).inc()
                self.duration.labels(*ctx, http.method, reporter).observe(seconds)
                return
            ctx = self.ctx.values(f)
            if f.l7.type == "REQUEST":
                self.requests.labels(*ctx, http.method, http.protocol, reporter).inc()
            elif f.l7.type == "RESPONSE":
                self.responses.labels(*ctx, http.method, http.protocol, str(http.code), reporter).inc()
                self.duration.labels(*ctx, http.method, reporter).observe(seconds)
        elif name == "port-distribution":
            if f.verdict not in ("FORWARDED", "REDIRECTED") or f.l4 is None or f.is_reply is None or f.is_reply:
                return
            ctx = self.ctx.values(f)
            for proto in ("TCP", "UDP", "SCTP"):
                ports = getattr(f.l4, proto)
                if ports is not None:
                    self.m.labels(proto, str(ports.destination_port), *ctx).inc()
            if f.l4.ICMPv4 is not None:
                self.m.labels("ICMPv4", "0", *ctx).inc()
            if f.l4.ICMPv6 is not None:
                self.m.labels("ICMPv6", "0", *ctx).inc()
        elif name == "flows-to-world":
            self._to_world(f)
        elif name == "policy":
            self._policy(f, et)

    def _to_world(self, f: Flow) -> None:
        l4 = f.l4
        dst = f.destination
        if dst is None or "reserved:world" not in dst.labels or f.event_type is None or l4 is None:
            return
        if f.verdict == "DROPPED" and not self.any_drop and f.drop_reason_desc != "POLICY_DENIED":
            return
        reply = bool(f.is_reply)
        if f.verdict != "DROPPED" and reply:
            return
        if self.syn_only and (not (l4.TCP and l4.TCP.flags and l4.TCP.flags.SYN) or reply):
            return
        labels = [flow_protocol(f), f.verdict or "VERDICT_UNKNOWN"]
        if self.port:
            ports = l4.TCP or l4.UDP or l4.SCTP
            labels.append(str(ports.destination_port) if ports is not None else "")
        self.m.labels(*labels, *self.ctx.values(f)).inc()

    def _policy(self, f: Flow, et: int) -> None:
        direction = (f.traffic_direction or "TRAFFIC_DIRECTION_UNKNOWN").lower()
        action = (f.verdict or "VERDICT_UNKNOWN").lower()
        if et == 5:
            if f.source is not None and f.source.identity == 1:  # the host may reach any local endpoint
                return
            match = _MATCH.get(f.policy_match_type, "unknown")
        elif et == 129:
            l7 = f.l7
            proto = ""
            if l7 is not None:
                proto = "dns" if l7.dns else "http" if l7.http else "kafka" if l7.kafka else ""
            match = f"l7/{proto}"
        else:
            return
        self.m.labels(direction, match, action, *self.ctx.values(f)).inc()


_CREATED = re.compile(r"(# (HELP|TYPE) )?hubble_\w+_created[{ ]")
_MATCH = {0: "none", 1: "l3-only", 2: "l3-l4", 3: "l4-only", 4: "all", 5: "l3-proto", 6: "proto-only"}


class Metrics:
    """Hubble's Prometheus metrics over one cluster's flows.

    ``enabled`` lists metrics as in Cilium's Helm values (``hubble.metrics.enabled``):
    ``["dns", "drop", "tcp", "flow", "icmp", "http"]`` or entries with options such as
    ``"http:sourceContext=pod;destinationContext=pod"``. Flows already in the cluster's
    flow store are counted, then every new one; with ``cluster=None`` only the flows given
    to :meth:`process` are.

    >>> from ciliumpy import Cluster
    >>> c = Cluster.from_manifests("examples/seed")
    >>> m = Metrics(c, enabled=["drop"])
    >>> _ = c.check("production/frontend", "production/database", 5432)
    >>> "hubble_drop_total" in m.text()
    True
    """

    def __init__(self, cluster: Cluster | None, enabled: Iterable[str] = ("flow",)) -> None:
        try:
            from prometheus_client import CollectorRegistry
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise CiliumpyError("Hubble metrics need prometheus-client: pip install prometheus-client") from exc
        self.cluster = cluster
        self.registry = CollectorRegistry(auto_describe=True)
        self.enabled = [parse_entry(e) for e in enabled]
        names = [n for n, _ in self.enabled]
        if "http" in names and "httpV2" in names:
            raise MetricsError("metrics http and httpV2 cannot both be enabled (they share metric names)")
        self.handlers = [_Handler(n, o, self.registry) for n, o in self.enabled]
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.store = store_of(cluster) if cluster is not None else None
        if self.store is not None:
            self.store.flush()
            for record in list(self.store.records):
                self._on_record(record)
            self.store.subscribe(self._on_record)

    @classmethod
    def from_helm_values(cls, cluster: Cluster, values: str | Path | Mapping[str, Any]) -> Metrics:
        """Metrics enabled by a Helm values file's (or mapping's) ``hubble.metrics.enabled``."""
        return cls(cluster, enabled=enabled_from_helm_values(values))

    def _on_record(self, record: tuple[Any, ...]) -> None:
        assert self.store is not None
        self.process(self.store.flow_of(record))

    def process(self, flow: Flow) -> None:
        """Count one flow in every enabled metric (flows of the cluster are counted as they
        arrive; call this for flows from elsewhere, e.g. :func:`read_flows`)."""
        with self._lock:
            for handler in self.handlers:
                handler.process(flow)

    def text(self) -> str:
        """The ``/metrics`` page (Prometheus text format) for the flows so far."""
        from prometheus_client import generate_latest

        if self.store is not None:
            self.store.flush()
        text = generate_latest(self.registry).decode()
        # Hubble's Go client prints no "_created" samples; prometheus_client adds them.
        return "".join(line for line in text.splitlines(keepends=True) if not _CREATED.match(line))

    def serve(self, port: int = 9965, addr: str = "0.0.0.0") -> ThreadingHTTPServer:
        """Serve ``/metrics`` on ``addr:port`` from a background thread, as Hubble's metrics
        server (``--hubble-metrics-server :9965``). Port 0 picks a free port
        (``server.server_address``); :meth:`close` stops it."""
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        metrics = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = metrics.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((addr, port), _Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="hubble-metrics", daemon=True)
        thread.start()
        self._server = server
        return server

    def close(self) -> None:
        """Stop the ``/metrics`` server, if one runs."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def enabled_from_helm_values(values: str | Path | Mapping[str, Any]) -> list[str]:
    """The ``hubble.metrics.enabled`` list of Cilium Helm values (a path or a mapping)."""
    from .._values import load_values
    from ..exceptions import PolicyError

    try:
        return list(load_values(values).hubble.metrics_enabled)
    except PolicyError as exc:
        raise MetricsError(f"cannot read Helm values: {exc}") from exc
