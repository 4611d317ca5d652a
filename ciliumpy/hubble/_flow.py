"""Hubble's ``Flow`` message (``api/v1/flow/flow.proto``) as frozen Python objects.

Attribute names are the proto field names, which are also the keys ``hubble observe -o json``
prints (protojson with ``UseProtoNames``): ``IP``, ``l4``, ``Type``, ``node_name``,
``Summary``. Reading follows protojson: proto3 zero values may be absent, enums are names
(numbers are accepted), 64-bit integers are strings. Fields this module does not model are
kept, per message, in ``extra`` and written back at their declared position, so a record
read from a file survives ``from_dict``/``to_dict`` unchanged.
"""

# ruff: noqa: RUF009 - field metadata (the protojson kind of each field) comes from a helper

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar, cast

import attrs

from ..exceptions import FlowFormatError

__all__ = [
    "DNS",
    "HTTP",
    "ICMP",
    "IP",
    "L4",
    "CiliumEventType",
    "Endpoint",
    "Ethernet",
    "Flow",
    "HTTPHeader",
    "Kafka",
    "Layer4",
    "Layer7",
    "Policy",
    "Service",
    "TCPFlags",
    "Workload",
]

VERDICTS = ("VERDICT_UNKNOWN", "FORWARDED", "DROPPED", "ERROR", "AUDIT", "REDIRECTED", "TRACED", "TRANSLATED")
FLOW_TYPES = ("UNKNOWN_TYPE", "L3_L4", "L7", "SOCK")
TRAFFIC_DIRECTIONS = ("TRAFFIC_DIRECTION_UNKNOWN", "INGRESS", "EGRESS")
L7_TYPES = ("UNKNOWN_L7_TYPE", "REQUEST", "RESPONSE", "SAMPLE")
IP_VERSIONS = ("IP_NOT_USED", "IPv4", "IPv6")
# Trace event sub-types of the monitor (pkg/monitor/api/types.go), as hubble prints and
# filters them ("to-endpoint", ...): names by number.
TRACE_SUBTYPES: dict[int, str] = {
    0: "to-endpoint",
    1: "to-proxy",
    2: "to-host",
    3: "to-stack",
    4: "to-overlay",
    5: "from-endpoint",
    6: "from-proxy",
    7: "from-host",
    8: "from-stack",
    9: "from-overlay",
    10: "from-network",
    11: "to-network",
    12: "from-crypto",
    13: "to-crypto",
}
_POD_HASH = re.compile(r"^(.+?)(-[a-z0-9]+){1,2}$")


def short_pod_name(pod: str) -> str:
    """A pod's name without its ReplicaSet and pod hashes (``web-7d4b9c-x2k8p`` -> ``web``),
    as hubble's ``pod-short`` context option shortens it."""
    return _POD_HASH.sub(r"\1", pod)


# TraceObservationPoint enum (flow.proto): names by number.
TRACE_POINTS: dict[int, str] = {
    0: "UNKNOWN_POINT",
    101: "TO_ENDPOINT",
    2: "TO_PROXY",
    3: "TO_HOST",
    4: "TO_STACK",
    5: "TO_OVERLAY",
    6: "FROM_ENDPOINT",
    7: "FROM_PROXY",
    8: "FROM_HOST",
    9: "FROM_STACK",
    10: "FROM_OVERLAY",
    11: "FROM_NETWORK",
    12: "TO_NETWORK",
    13: "FROM_CRYPTO",
    14: "TO_CRYPTO",
}
_ENUMS: dict[str, dict[int, str]] = {
    "verdict": dict(enumerate(VERDICTS)),
    "Type": dict(enumerate(FLOW_TYPES)),
    "traffic_direction": dict(enumerate(TRAFFIC_DIRECTIONS)),
    "l7type": dict(enumerate(L7_TYPES)),
    "ipVersion": dict(enumerate(IP_VERSIONS)),
    "trace_observation_point": TRACE_POINTS,
}

M = TypeVar("M", bound="_Message")


def _field(kind: str, default: Any = "", cls: Any = None, enum: str | None = None) -> Any:
    meta = {"pb": kind, "cls": cls, "enum": enum}
    if kind in ("msgs", "strs"):
        return attrs.field(default=(), converter=tuple, metadata=meta)
    return attrs.field(default=default, metadata=meta)


def _extra() -> Any:
    return attrs.field(factory=dict, hash=False, repr=False, metadata={"pb": "extra"})


class _Message:
    """Shared protojson reading and writing, driven by each field's metadata."""

    # Every field of the proto message in declaration order (modelled or not), so that
    # fields kept in ``extra`` are written back where Hubble prints them.
    _ORDER: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_dict(cls: type[M], data: Mapping[str, Any], *, path: str = "") -> M:
        """Read the protojson form of this message; unknown fields go to ``extra``."""
        if not isinstance(data, Mapping):
            raise FlowFormatError("expected a JSON object", field=path or None, value=data)
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        fields = _fields_of(cls)
        for key, value in data.items():
            f = fields.get(key)
            if f is None:
                extra[key] = value
                continue
            kwargs[key] = _decode(f, value, f"{path}.{key}" if path else key)
        return cast(M, cast(Any, cls)(**kwargs, extra=extra))

    def to_dict(self) -> dict[str, Any]:
        """The protojson form, as ``hubble observe -o json`` prints it (zero values omitted)."""
        out: dict[str, Any] = {}
        for name, f in _fields_of(type(self)).items():
            value = getattr(self, name)
            encoded = _encode(f, value)
            if encoded is not _OMIT:
                out[name] = encoded
        extra: Mapping[str, Any] = getattr(self, "extra", {})
        if extra:
            out.update(extra)
            order = self._ORDER
            rank = {k: i for i, k in enumerate(order)}
            out = dict(sorted(out.items(), key=lambda kv: rank.get(kv[0], len(order))))
        return out


_OMIT: Any = object()
_FIELDS_CACHE: dict[type, dict[str, attrs.Attribute[Any]]] = {}


def _fields_of(cls: type) -> dict[str, attrs.Attribute[Any]]:
    found = _FIELDS_CACHE.get(cls)
    if found is None:
        found = {f.name: f for f in attrs.fields(cls) if f.metadata.get("pb") not in (None, "extra")}
        _FIELDS_CACHE[cls] = found
    return found


def _fail(path: str, what: str, value: Any) -> FlowFormatError:
    return FlowFormatError(what, field=path, value=value)


def _decode(f: attrs.Attribute[Any], value: Any, path: str) -> Any:
    kind = f.metadata["pb"]
    if kind == "str":
        if not isinstance(value, str):
            raise _fail(path, "expected a string", value)
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, "expected an integer", value)
        return value
    if kind == "int64":
        # protojson writes 64-bit integers as strings and reads either form.
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(path, "expected a 64-bit integer (a decimal string)", value)
    if kind in ("bool", "boolvalue"):
        if not isinstance(value, bool):
            raise _fail(path, "expected true or false", value)
        return value
    if kind == "enum":
        names = _ENUMS[f.metadata["enum"]]
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value in names:
            return names[value]
        raise _fail(path, f"expected one of {', '.join(n for n in names.values())}", value)
    if kind == "msg":
        return f.metadata["cls"].from_dict(value, path=path)
    if kind == "msgs":
        if not isinstance(value, list):
            raise _fail(path, "expected a list", value)
        return tuple(f.metadata["cls"].from_dict(v, path=f"{path}[{i}]") for i, v in enumerate(value))
    if kind == "strs":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _fail(path, "expected a list of strings", value)
        return tuple(value)
    raise AssertionError(kind)  # pragma: no cover - the field table is static


def _encode(f: attrs.Attribute[Any], value: Any) -> Any:
    kind = f.metadata["pb"]
    if kind == "boolvalue":
        return _OMIT if value is None else value
    if kind == "msg":
        return _OMIT if value is None else value.to_dict()
    if kind == "msgs":
        return [v.to_dict() for v in value] if value else _OMIT
    if kind == "strs":
        return list(value) if value else _OMIT
    if kind == "int64":
        return str(value) if value else _OMIT
    if kind == "enum":
        return value if value and value != _ENUMS[f.metadata["enum"]].get(0) else _OMIT
    return value if value else _OMIT


# ---------------------------------------------------------------- messages
@attrs.frozen(kw_only=True)
class Ethernet(_Message):
    """Ethernet addresses of the packet."""

    source: str = _field("str")
    destination: str = _field("str")
    extra: Mapping[str, Any] = _extra()
    _ORDER = ("source", "destination")


@attrs.frozen(kw_only=True)
class IP(_Message):
    """IP addresses of the packet; ``ipVersion`` is ``IPv4`` or ``IPv6``."""

    source: str = _field("str")
    destination: str = _field("str")
    ipVersion: str = _field("enum", enum="ipVersion")
    encrypted: bool = _field("bool", False)
    extra: Mapping[str, Any] = _extra()
    _ORDER = ("source", "source_xlated", "destination", "ipVersion", "encrypted")


@attrs.frozen(kw_only=True)
class TCPFlags(_Message):
    """TCP header flags set on the packet."""

    FIN: bool = _field("bool", False)
    SYN: bool = _field("bool", False)
    RST: bool = _field("bool", False)
    PSH: bool = _field("bool", False)
    ACK: bool = _field("bool", False)
    URG: bool = _field("bool", False)
    ECE: bool = _field("bool", False)
    CWR: bool = _field("bool", False)
    NS: bool = _field("bool", False)
    extra: Mapping[str, Any] = _extra()
    _ORDER = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")

    def names(self) -> tuple[str, ...]:
        """The set flags, in Hubble's summary order (``SYN, ACK`` …)."""
        return tuple(n for n in _SUMMARY_FLAG_ORDER if getattr(self, n))


_SUMMARY_FLAG_ORDER = ("SYN", "ACK", "FIN", "RST", "PSH", "URG", "ECE", "CWR", "NS")


@attrs.frozen(kw_only=True)
class L4(_Message):
    """Ports of a TCP, UDP or SCTP packet (``TCP`` also carries ``flags``)."""

    source_port: int = _field("int", 0)
    destination_port: int = _field("int", 0)
    flags: TCPFlags | None = _field("msg", None, TCPFlags)
    extra: Mapping[str, Any] = _extra()
    _ORDER = ("source_port", "destination_port", "flags")


@attrs.frozen(kw_only=True)
class ICMP(_Message):
    """ICMP type and code (an echo reply, type 0, prints as ``{}``)."""

    type: int = _field("int", 0)
    code: int = _field("int", 0)
    extra: Mapping[str, Any] = _extra()
    _ORDER = ("type", "code")


@attrs.frozen(kw_only=True)
class Layer4(_Message):
    """The ``l4`` oneof: exactly one of ``TCP``, ``UDP``, ``SCTP``, ``ICMPv4``, ``ICMPv6``."""

    TCP: L4 | None = _field("msg", None, L4)
    UDP: L4 | None = _field("msg", None, L4)
    ICMPv4: ICMP | None = _field("msg", None, ICMP)
    ICMPv6: ICMP | None = _field("msg", None, ICMP)
    SCTP: L4 | None = _field("msg", None, L4)
    extra: Mapping[str, Any] = _extra()
    _ORDER = ("TCP", "UDP", "ICMPv4", "ICMPv6", "SCTP", "VRRP", "IGMP")

    @property
    def protocol(self) -> str:
        """``TCP``, ``UDP``, ``SCTP``, ``ICMPv4``, ``ICMPv6`` or the unmodelled key (``VRRP``)."""
        for name in ("TCP", "UDP", "ICMPv4", "ICMPv6", "SCTP"):
            if getattr(self, name) is not None:
                return name
        return next(iter(self.extra), "")

    @property
    def ports(self) -> L4 | None:
        return self.TCP or self.UDP or self.SCTP


@attrs.frozen(kw_only=True)
class Workload(_Message):
    """The workload (Deployment, StatefulSet …) that owns a pod."""

    name: str = _field("str")
    kind: str = _field("str")
    extra: Mapping[str, Any] = _extra()
    _ORDER = ("name", "kind")


@attrs.frozen(kw_only=True)
class Endpoint(_Message):
    """One side of a flow: endpoint ``ID``, security ``identity``, pod and its labels."""

    ID: int = _field("int", 0)
    identity: int = _field("int", 0)
    cluster_name: str = _field("str")
    namespace: str = _field("str")
    labels: tuple[str, ...] = _field("strs")
    pod_name: str = _field("str")
    workloads: tuple[Workload, ...] = _field("msgs", cls=Workload)
    extra: Mapping[str, Any] = _extra()
    _ORDER = ("ID", "identity", "cluster_name", "namespace", "labels", "pod_name", "workloads")


@attrs.frozen(kw_only=True)
class HTTPHeader(_Message):
    key: str = _field("str")
    value: str = _field("str")
    extra: Mapping[str, Any] = _extra()
    _ORDER = ("key", "value")


@attrs.frozen(kw_only=True)
class HTTP(_Message):
    """An HTTP request or response seen by the proxy (``code`` on responses only)."""

    code: int = _field("int", 0)
    method: str = _field("str")
    url: str = _field("str")
    protocol: str = _field("str")
    headers: tuple[HTTPHeader, ...] = _field("msgs", cls=HTTPHeader)
    extra: Mapping[str, Any] = _extra()
    _ORDER = ("code", "method", "url", "protocol", "headers")


@attrs.frozen(kw_only=True)
class DNS(_Message):
    """A DNS query or answer seen by the DNS proxy."""

    query: str = _field("str")
    ips: tuple[str, ...] = _field("strs")
    ttl: int = _field("int", 0)
    cnames: tuple[str, ...] = _field("strs")
    observation_source: str = _field("str")
    rcode: int = _field("int", 0)
    qtypes: tuple[str, ...] = _field("strs")
    rrtypes: tuple[str, ...] = _field("strs")
    extra: Mapping[str, Any] = _extra()
    _ORDER = ("query", "ips", "ttl", "cnames", "observation_source", "rcode", "qtypes", "rrtypes")


@attrs.frozen(kw_only=True)
class Kafka(_Message):
    """A Kafka request or response seen by the proxy."""

    error_code: int = _field("int", 0)
    api_version: int = _field("int", 0)
    api_key: str = _field("str")
    correlation_id: int = _field("int", 0)
    topic: str = _field("str")
    extra: Mapping[str, Any] = _extra()
    _ORDER = ("error_code", "api_version", "api_key", "correlation_id", "topic")


@attrs.frozen(kw_only=True)
class Layer7(_Message):
    """The ``l7`` record: ``type`` REQUEST/RESPONSE, ``latency_ns`` and one of dns/http/kafka."""

    type: str = _field("enum", enum="l7type")
    latency_ns: int = _field("int64", 0)
    dns: DNS | None = _field("msg", None, DNS)
    http: HTTP | None = _field("msg", None, HTTP)
    kafka: Kafka | None = _field("msg", None, Kafka)
    extra: Mapping[str, Any] = _extra()
    _ORDER = ("type", "latency_ns", "dns", "http", "kafka")

    @property
    def protocol(self) -> str:
        """``http``, ``dns``, ``kafka`` or ``""``."""
        return "http" if self.http else "dns" if self.dns else "kafka" if self.kafka else ""


@attrs.frozen(kw_only=True)
class CiliumEventType(_Message):
    """The monitor event that produced the flow (1 drop, 4 trace, 5 policy verdict, 129 L7)."""

    type: int = _field("int", 0)
    sub_type: int = _field("int", 0)
    extra: Mapping[str, Any] = _extra()
    _ORDER = ("type", "sub_type")


@attrs.frozen(kw_only=True)
class Policy(_Message):
    """A policy that allowed or denied the flow (``*_allowed_by``/``*_denied_by``)."""

    name: str = _field("str")
    namespace: str = _field("str")
    labels: tuple[str, ...] = _field("strs")
    revision: int = _field("int64", 0)
    kind: str = _field("str")
    extra: Mapping[str, Any] = _extra()
    _ORDER = ("name", "namespace", "labels", "revision", "kind")


@attrs.frozen(kw_only=True)
class Service(_Message):
    """A Service a flow was addressed to or came from (``ServiceReference``)."""

    name: str = _field("str")
    namespace: str = _field("str")
    extra: Mapping[str, Any] = _extra()
    _ORDER = ("name", "namespace")


_IPMessage = IP

_FLOW_ORDER = (
    "time",
    "uuid",
    "emitter",
    "verdict",
    "drop_reason",
    "auth_type",
    "ethernet",
    "IP",
    "l4",
    "tunnel",
    "source",
    "destination",
    "Type",
    "node_name",
    "node_labels",
    "source_names",
    "destination_names",
    "l7",
    "reply",
    "event_type",
    "source_service",
    "destination_service",
    "traffic_direction",
    "policy_match_type",
    "trace_observation_point",
    "trace_reason",
    "file",
    "ip_trace_id",
    "drop_reason_desc",
    "is_reply",
    "debug_capture_point",
    "interface",
    "proxy_port",
    "trace_context",
    "sock_xlate_point",
    "socket_cookie",
    "cgroup_id",
    "Summary",
    "extensions",
    "egress_allowed_by",
    "ingress_allowed_by",
    "egress_denied_by",
    "ingress_denied_by",
    "policy_log",
    "aggregate",
)


@attrs.frozen(kw_only=True)
class Flow(_Message):
    """One Hubble flow, as ``hubble observe -o json`` prints it.

    ``time`` is the RFC 3339 text Hubble prints (``timestamp`` gives it in seconds).
    ``response`` holds the fields of the ``GetFlowsResponse`` line the flow was read from
    (``node_name``, ``time``), or ``None`` for a flow built here or read bare (legacy JSON).

    >>> f = Flow.from_dict({"flow": {"verdict": "DROPPED", "Type": "L3_L4"}, "node_name": "n1"})
    >>> f.verdict, f.to_dict()
    ('DROPPED', {'verdict': 'DROPPED', 'Type': 'L3_L4'})
    """

    time: str = _field("str")
    uuid: str = _field("str")
    verdict: str = _field("enum", enum="verdict")
    drop_reason: int = _field("int", 0)
    ethernet: Ethernet | None = _field("msg", None, Ethernet)
    IP: _IPMessage | None = _field("msg", None, _IPMessage)
    l4: Layer4 | None = _field("msg", None, Layer4)
    source: Endpoint | None = _field("msg", None, Endpoint)
    destination: Endpoint | None = _field("msg", None, Endpoint)
    Type: str = _field("enum", enum="Type")
    node_name: str = _field("str")
    source_names: tuple[str, ...] = _field("strs")
    destination_names: tuple[str, ...] = _field("strs")
    l7: Layer7 | None = _field("msg", None, Layer7)
    event_type: CiliumEventType | None = _field("msg", None, CiliumEventType)
    source_service: Service | None = _field("msg", None, Service)
    destination_service: Service | None = _field("msg", None, Service)
    traffic_direction: str = _field("enum", enum="traffic_direction")
    policy_match_type: int = _field("int", 0)
    trace_observation_point: str = _field("enum", enum="trace_observation_point")
    drop_reason_desc: str = _field("str")
    is_reply: bool | None = _field("boolvalue", None)
    proxy_port: int = _field("int", 0)
    Summary: str = _field("str")
    egress_allowed_by: tuple[Policy, ...] = _field("msgs", cls=Policy)
    ingress_allowed_by: tuple[Policy, ...] = _field("msgs", cls=Policy)
    egress_denied_by: tuple[Policy, ...] = _field("msgs", cls=Policy)
    ingress_denied_by: tuple[Policy, ...] = _field("msgs", cls=Policy)
    extra: Mapping[str, Any] = _extra()
    response: Mapping[str, Any] | None = attrs.field(default=None, hash=False, repr=False, eq=False)
    _ORDER = _FLOW_ORDER

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: str = "") -> Flow:
        """Read one ``hubble observe -o json``/``-o jsonpb`` record.

        Accepts the ``GetFlowsResponse`` line (``{"flow": …, "node_name": …, "time": …}``)
        and the bare flow object of older CLIs (legacy ``-o json``).
        """
        if isinstance(data, Mapping) and isinstance(data.get("flow"), Mapping):
            flow = super().from_dict(data["flow"], path="flow")
            response = {k: v for k, v in data.items() if k != "flow"}
            return attrs.evolve(flow, response=response)
        return super().from_dict(data, path=path)

    @classmethod
    def from_json(cls, line: str | bytes) -> Flow:
        """Read one JSON line (see :meth:`from_dict`)."""
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise FlowFormatError(f"not JSON: {exc}", value=_clip(line)) from exc
        return cls.from_dict(data)

    def to_response(self) -> dict[str, Any]:
        """The ``GetFlowsResponse`` object ``hubble observe -o jsonpb`` prints for this flow."""
        if self.response is not None:
            return {"flow": self.to_dict(), **self.response}
        out: dict[str, Any] = {"flow": self.to_dict()}
        if self.node_name:
            out["node_name"] = self.node_name
        if self.time:
            out["time"] = self.time
        return out

    def to_json(self) -> str:
        """One ``hubble observe -o json`` line (since hubble 0.11 the same as ``-o jsonpb``)."""
        return json.dumps(self.to_response(), separators=(",", ":"), ensure_ascii=False)

    @property
    def timestamp(self) -> float:
        """``time`` in seconds since the epoch (0.0 when the flow has no time)."""
        return parse_time(self.time) if self.time else 0.0

    @property
    def datetime(self) -> _dt.datetime | None:
        """``time`` as an aware UTC datetime (microsecond precision)."""
        return _dt.datetime.fromtimestamp(self.timestamp, tz=_dt.UTC) if self.time else None


def _clip(text: str | bytes) -> str:
    shown = text if isinstance(text, str) else text.decode("utf-8", "replace")
    return shown if len(shown) <= 80 else shown[:77] + "..."


_TIME_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|z|[+-]\d\d:\d\d)$")


def parse_time(text: str) -> float:
    """RFC 3339 text -> seconds since the epoch (nanoseconds kept as far as a float can)."""
    m = _TIME_RE.match(text)
    if m is None:
        raise FlowFormatError("expected an RFC 3339 time such as 2021-11-10T10:41:26.095357Z", field="time", value=text)
    y, mo, d, h, mi, s, frac, tz = m.groups()
    base = _dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=_dt.UTC)
    if tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        base -= sign * _dt.timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
    return base.timestamp() + (int(frac.ljust(9, "0")) / 1e9 if frac else 0.0)


def format_time(seconds: float) -> str:
    """Seconds since the epoch -> RFC 3339 as protojson prints a Timestamp.

    A float holds about a quarter of a microsecond at today's epoch, so the time is rounded
    to microseconds and printed with 0, 3 or 6 fractional digits as protojson would.
    """
    micros = round(seconds * 1e6)
    whole, frac = divmod(micros, 1_000_000)
    head = _dt.datetime.fromtimestamp(whole, tz=_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac == 0:
        return head + "Z"
    if frac % 1000 == 0:
        return f"{head}.{frac // 1000:03d}Z"
    return f"{head}.{frac:06d}Z"


def read_records(lines: Iterable[str | bytes], *, document: str | None = None) -> Iterable[Flow]:
    """Flows of ``hubble observe -o json`` lines; a bad line raises naming its number."""
    for num, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield Flow.from_json(line)
        except FlowFormatError as exc:
            raise exc.located(document=document, line=num) from None
