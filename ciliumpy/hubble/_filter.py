"""``hubble observe`` filters: the flags, how they combine, and compiled predicates.

How Hubble combines filters (``hubble/cmd/observe/flows_filter.go`` and
``pkg/hubble/filters``), which is what this module reproduces:

* The CLI builds two ``FlowFilter`` objects, *left* and *right*, and sends them as an
  allowlist: a flow passes when it matches **either**. Flags naming "either side" (``--pod``,
  ``--namespace``, ``--label``, ``--ip``, ``--fqdn``, ``--identity``, ``--port``) put the
  source field in left and the destination field in right; every other flag (``--from-*``,
  ``--to-*``, ``--verdict``, ``--type``, ``--protocol``, ``--http-*`` …) goes into both.
  Identical left and right collapse into one.
* Inside one ``FlowFilter`` every set field must match (AND); the values of one field are
  alternatives (OR).
* ``--namespace`` is not a field: when the filters are built it becomes a pod prefix
  ``ns/`` on the source pods of left and the destination pods of right (``--from-namespace``
  and ``--to-namespace`` on both), combined with any pod names given.
* ``--not`` sends the next flag to a second tracker built the same way, the denylist; a flow
  is shown when it matches the allowlist (or there is none) and matches no denylist filter.
  Several ``--not`` flags land in the same denylist filters, so they are ANDed.

Predicates run over the store's compact records (tuples of small integers and interned
ids): each field test becomes ``r[i] in S`` where ``S`` was computed once over the store's
interned endpoints, L7 records or names, and the whole expression is compiled to one
comprehension.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ..exceptions import CiliumpyError
from ._flow import TRACE_SUBTYPES, VERDICTS

__all__ = ["FILTER_FLAGS", "FilterError", "FlowFilter", "build_filters"]


class FilterError(CiliumpyError, ValueError):
    """A ``hubble observe`` filter value Hubble would refuse (message in hubble's words)."""


# Record layout shared with the store.
R_TIME, R_VERDICT, R_TYPE, R_ETKEY, R_DIR, R_SRC, R_DST, R_SIP, R_DIP = range(9)
R_PROTO, R_SPORT, R_DPORT, R_L7, R_SNAMES, R_DNAMES, R_DROP, R_FLAGS, R_REPLY, R_NODE = range(9, 19)
R_SOURCE, R_INDEX = 19, 20

DROP_REASONS = (
    "DROP_REASON_UNKNOWN",
    "INVALID_SOURCE_MAC",
    "INVALID_DESTINATION_MAC",
    "INVALID_SOURCE_IP",
    "POLICY_DENIED",
    "INVALID_PACKET_DROPPED",
    "CT_TRUNCATED_OR_INVALID_HEADER",
    "CT_MISSING_TCP_ACK_FLAG",
    "CT_UNKNOWN_L4_PROTOCOL",
    "CT_CANNOT_CREATE_ENTRY_FROM_PACKET",
    "UNSUPPORTED_L3_PROTOCOL",
    "MISSED_TAIL_CALL",
    "ERROR_WRITING_TO_PACKET",
    "UNKNOWN_L4_PROTOCOL",
    "UNKNOWN_ICMPV4_CODE",
    "UNKNOWN_ICMPV4_TYPE",
    "UNKNOWN_ICMPV6_CODE",
    "UNKNOWN_ICMPV6_TYPE",
    "ERROR_RETRIEVING_TUNNEL_KEY",
    "ERROR_RETRIEVING_TUNNEL_OPTIONS",
    "INVALID_GENEVE_OPTION",
    "UNKNOWN_L3_TARGET_ADDRESS",
    "STALE_OR_UNROUTABLE_IP",
    "NO_MATCHING_LOCAL_CONTAINER_FOUND",
    "ERROR_WHILE_CORRECTING_L3_CHECKSUM",
    "ERROR_WHILE_CORRECTING_L4_CHECKSUM",
    "CT_MAP_INSERTION_FAILED",
    "INVALID_IPV6_EXTENSION_HEADER",
    "IP_FRAGMENTATION_NOT_SUPPORTED",
    "SERVICE_BACKEND_NOT_FOUND",
    "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT",
    "FAILED_TO_INSERT_INTO_PROXYMAP",
    "REACHED_EDT_RATE_LIMITING_DROP_HORIZON",
    "UNKNOWN_CONNECTION_TRACKING_STATE",
    "LOCAL_HOST_IS_UNREACHABLE",
    "NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION",
    "UNSUPPORTED_L2_PROTOCOL",
    "NO_MAPPING_FOR_NAT_MASQUERADE",
    "UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE",
    "FIB_LOOKUP_FAILED",
    "ENCAPSULATION_TRAFFIC_IS_PROHIBITED",
    "INVALID_IDENTITY",
    "UNKNOWN_SENDER",
    "NAT_NOT_NEEDED",
    "IS_A_CLUSTERIP",
    "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND",
    "FORBIDDEN_ICMPV6_MESSAGE",
    "DENIED_BY_LB_SRC_RANGE_CHECK",
    "SOCKET_LOOKUP_FAILED",
    "SOCKET_ASSIGN_FAILED",
    "PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL",
    "POLICY_DENY",
    "VLAN_FILTERED",
    "INVALID_VNI",
    "INVALID_TC_BUFFER",
    "NO_SID",
    "MISSING_SRV6_STATE",
    "NAT46",
    "NAT64",
    "AUTH_REQUIRED",
    "CT_NO_MAP_FOUND",
    "SNAT_NO_MAP_FOUND",
    "INVALID_CLUSTER_ID",
    "UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP",
    "NO_EGRESS_GATEWAY",
    "UNENCRYPTED_TRAFFIC",
    "TTL_EXCEEDED",
    "NO_NODE_ID",
    "DROP_RATE_LIMITED",
    "IGMP_HANDLED",
    "IGMP_SUBSCRIBED",
    "MULTICAST_HANDLED",
    "DROP_HOST_NOT_READY",
    "DROP_EP_NOT_READY",
    "DROP_NO_EGRESS_IP",
    "DROP_PUNT_PROXY",
)

# --type names (pkg/monitor/api MessageTypeNames) and trace sub-type names.
EVENT_TYPE_NAMES = {
    "drop": 1,
    "debug": 2,
    "capture": 3,
    "trace": 4,
    "policy-verdict": 5,
    "recorder": 6,
    "trace-sock": 7,
    "l7": 129,
    "agent": 130,
}
TRACE_SUBTYPE_NAMES = {name: num for num, name in TRACE_SUBTYPES.items()}
L4_PROTOCOLS = {"tcp": (6,), "udp": (17,), "icmp": (1, 58), "icmpv4": (1,), "icmpv6": (58,), "sctp": (132,)}
L7_PROTOCOLS = ("dns", "http", "kafka")
TCP_FLAG_BITS = {"FIN": 1, "SYN": 2, "RST": 4, "PSH": 8, "ACK": 16, "URG": 32, "ECE": 64, "CWR": 128, "NS": 256}


@attrs.define
class FlowFilter:
    """One of Hubble's ``FlowFilter`` messages: every non-empty field must match."""

    source_pod: list[str] = attrs.Factory(list)
    destination_pod: list[str] = attrs.Factory(list)
    source_ip: list[str] = attrs.Factory(list)
    destination_ip: list[str] = attrs.Factory(list)
    source_label: list[str] = attrs.Factory(list)
    destination_label: list[str] = attrs.Factory(list)
    source_identity: list[int] = attrs.Factory(list)
    destination_identity: list[int] = attrs.Factory(list)
    source_fqdn: list[str] = attrs.Factory(list)
    destination_fqdn: list[str] = attrs.Factory(list)
    source_port: list[str] = attrs.Factory(list)
    destination_port: list[str] = attrs.Factory(list)
    verdict: list[str] = attrs.Factory(list)
    drop_reason_desc: list[str] = attrs.Factory(list)
    event_type: list[tuple[int, int | None]] = attrs.Factory(list)
    protocol: list[str] = attrs.Factory(list)
    http_status_code: list[str] = attrs.Factory(list)
    http_method: list[str] = attrs.Factory(list)
    http_path: list[str] = attrs.Factory(list)
    http_url: list[str] = attrs.Factory(list)
    traffic_direction: list[str] = attrs.Factory(list)
    tcp_flags: list[int] = attrs.Factory(list)
    node_name: list[str] = attrs.Factory(list)

    def is_empty(self) -> bool:
        return not any(getattr(self, f.name) for f in attrs.fields(type(self)))


# filter name -> (side, FlowFilter field or fields); side "both" applies to left and right,
# "either" puts the source field in left and the destination field in right.
_FLAGS: dict[str, tuple[str, str, str]] = {
    "pod": ("either", "source_pod", "destination_pod"),
    "from_pod": ("both", "source_pod", ""),
    "to_pod": ("both", "destination_pod", ""),
    "ip": ("either", "source_ip", "destination_ip"),
    "from_ip": ("both", "source_ip", ""),
    "to_ip": ("both", "destination_ip", ""),
    "label": ("either", "source_label", "destination_label"),
    "from_label": ("both", "source_label", ""),
    "to_label": ("both", "destination_label", ""),
    "identity": ("either", "source_identity", "destination_identity"),
    "from_identity": ("both", "source_identity", ""),
    "to_identity": ("both", "destination_identity", ""),
    "fqdn": ("either", "source_fqdn", "destination_fqdn"),
    "from_fqdn": ("both", "source_fqdn", ""),
    "to_fqdn": ("both", "destination_fqdn", ""),
    "port": ("either", "source_port", "destination_port"),
    "from_port": ("both", "source_port", ""),
    "to_port": ("both", "destination_port", ""),
    "verdict": ("both", "verdict", ""),
    "drop_reason_desc": ("both", "drop_reason_desc", ""),
    "type": ("both", "event_type", ""),
    "protocol": ("both", "protocol", ""),
    "http_status": ("both", "http_status_code", ""),
    "http_method": ("both", "http_method", ""),
    "http_path": ("both", "http_path", ""),
    "http_url": ("both", "http_url", ""),
    "traffic_direction": ("both", "traffic_direction", ""),
    "tcp_flags": ("both", "tcp_flags", ""),
    "node_name": ("both", "node_name", ""),
}
_NAMESPACE_FLAGS = ("namespace", "from_namespace", "to_namespace", "all_namespaces")
FILTER_FLAGS = tuple(sorted((*_FLAGS, *_NAMESPACE_FLAGS)))

# Flags hubble refuses to combine (flows_filter.go conflicts), by our names.
_CONFLICTS = (
    ("from_fqdn", "from_ip", "ip", "fqdn", "from_namespace", "namespace", "all_namespaces"),
    ("from_fqdn", "from_ip", "ip", "fqdn", "from_pod", "pod"),
    ("to_fqdn", "to_ip", "ip", "fqdn", "to_namespace", "namespace", "all_namespaces"),
    ("to_fqdn", "to_ip", "ip", "fqdn", "to_pod", "pod"),
    ("to_pod", "namespace", "all_namespaces"),
    ("from_pod", "namespace", "all_namespaces"),
    ("label", "from_label"),
    ("label", "to_label"),
    ("port", "to_port"),
    ("port", "from_port"),
    ("identity", "to_identity"),
    ("identity", "from_identity"),
)


class _Tracker:
    """The CLI's filterTracker: left/right filters plus namespace modifiers."""

    def __init__(self) -> None:
        self.left: FlowFilter | None = None
        self.right: FlowFilter | None = None
        self.ns: list[str] = []
        self.src_ns: list[str] = []
        self.dst_ns: list[str] = []
        self.changed: list[str] = []

    def _sides(self, which: str) -> list[FlowFilter]:
        if self.left is None:
            self.left = FlowFilter()
        if self.right is None:
            self.right = FlowFilter()
        return {"left": [self.left], "right": [self.right], "both": [self.left, self.right]}[which]

    def add(self, name: str, value: Any) -> None:
        if name not in self.changed:
            self.changed.append(name)
        for group in _CONFLICTS:
            if name in group:
                for other in group:
                    if other != name and other in self.changed:
                        raise FilterError(
                            f"filters --{name.replace('_', '-')} and --{other.replace('_', '-')} cannot be combined"
                        )
        if name == "namespace":
            self.ns.append(value)
            return
        if name == "all_namespaces":
            self.ns.append("")
            return
        if name == "from_namespace":
            self.src_ns.append(value)
            return
        if name == "to_namespace":
            self.dst_ns.append(value)
            return
        side, src_field, dst_field = _FLAGS[name]
        value = _parse_value(name, value)
        if side == "either":
            getattr(self._sides("left")[0], src_field).append(value)
            getattr(self._sides("right")[0], dst_field).append(value)
        else:
            for f in self._sides("both"):
                getattr(f, src_field).append(value)

    def filters(self) -> list[FlowFilter]:
        if self.left is None and self.right is None and not (self.ns or self.src_ns or self.dst_ns):
            return []
        left = self.left if self.left is not None else FlowFilter()
        right = self.right if self.right is not None else FlowFilter()
        if self.dst_ns:
            _apply_dst(left, self.dst_ns)
            _apply_dst(right, self.dst_ns)
        if self.src_ns:
            _apply_src(left, self.src_ns)
            _apply_src(right, self.src_ns)
        if self.ns:
            _apply_src(left, self.ns)
            _apply_dst(right, self.ns)
        return [left] if left == right else [left, right]


def _with_namespaces(names: list[str], namespaces: list[str]) -> list[str]:
    if not namespaces or not names:
        return names
    out: list[str] = []
    for name in names:
        if "/" in name:
            out.append(name)
            continue
        out.extend(f"{ns}/{name}" for ns in namespaces)
    return out


def _apply_src(f: FlowFilter, namespaces: list[str]) -> None:
    if not f.source_pod:
        f.source_pod = [""]
    f.source_pod = _with_namespaces(f.source_pod, namespaces)


def _apply_dst(f: FlowFilter, namespaces: list[str]) -> None:
    if not f.destination_pod:
        f.destination_pod = [""]
    f.destination_pod = _with_namespaces(f.destination_pod, namespaces)


def _parse_value(name: str, value: Any) -> Any:
    text = str(value)
    if name == "verdict":
        if text not in VERDICTS:
            raise FilterError(f"invalid --verdict value: {text} (valid values: {', '.join(VERDICTS[1:])})")
        return text
    if name == "drop_reason_desc":
        if text not in DROP_REASONS:
            raise FilterError(f"invalid --drop-reason-desc value: {text}")
        return text
    if name in ("identity", "from_identity", "to_identity"):
        return _parse_identity(text)
    if name == "type":
        return _parse_type(text)
    if name == "protocol":
        proto = text.lower()
        if proto not in L4_PROTOCOLS and proto not in L7_PROTOCOLS:
            raise FilterError(f'invalid protocol filter: unknown protocol: "{text}"')
        return proto
    if name in ("port", "from_port", "to_port"):
        if not text.isdigit() or int(text) > 65535:
            raise FilterError(f'invalid port "{text}": expected a number within 0..65535')
        return text
    if name == "http_status":
        if not (re.fullmatch(r"[1-5][0-9]{2}", text) or re.fullmatch(r"[1-5][0-9]?\+", text)):
            raise FilterError(f'invalid http status code filter: invalid status code prefix: "{text}"')
        return text
    if name in ("http_path", "http_url"):
        try:
            re.compile(text)
        except re.error as exc:
            raise FilterError(f"invalid http path filter: {text}: {exc}") from None
        return text
    if name == "traffic_direction":
        td = text.lower()
        if td not in ("ingress", "egress"):
            raise FilterError(f"{td}: invalid traffic direction, expected ingress or egress")
        return td.upper()
    if name == "tcp_flags":
        bits = 0
        for flag in text.split(","):
            bit = TCP_FLAG_BITS.get(flag.upper())
            if bit is None:
                raise FilterError(f"unknown tcp flag: {flag}")
            bits |= bit
        return bits
    if name in ("fqdn", "from_fqdn", "to_fqdn"):
        _fqdn_regex([text])
        return text
    if name in ("label", "from_label", "to_label"):
        parse_selector(text)
        return text
    if name in ("pod", "from_pod", "to_pod") and text.count("/") > 1:
        raise FilterError(f'invalid filter, must be [namespace/][<name>], got "{text}"')
    if name in ("ip", "from_ip", "to_ip"):
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise FilterError(f'invalid IP address in filter: "{text}"') from None
        return text
    return text


_RESERVED_IDENTITIES = {
    "unknown": 0,
    "host": 1,
    "world": 2,
    "unmanaged": 3,
    "health": 4,
    "init": 5,
    "remote-node": 6,
    "kube-apiserver": 7,
    "ingress": 8,
    "world-ipv4": 9,
    "world-ipv6": 10,
}


def _parse_identity(text: str) -> int:
    if text in _RESERVED_IDENTITIES:
        return _RESERVED_IDENTITIES[text]
    if text.isdigit() and int(text) < 2**32:
        return int(text)
    raise FilterError(
        f"invalid security identity, expected one of [{' '.join(_RESERVED_IDENTITIES)}] or a numeric value"
    )


def _parse_type(text: str) -> tuple[int, int | None]:
    head, _, sub = text.partition(":")
    if head in EVENT_TYPE_NAMES:
        t = EVENT_TYPE_NAMES[head]
    elif head.isdigit():
        t = int(head)
    else:
        raise FilterError(
            f"unable to parse type '{head}', not a known type name and unable to parse as numeric value"
            f" (valid names: {', '.join(EVENT_TYPE_NAMES)})"
        )
    if not sub:
        return t, None
    if t == 4 and sub in TRACE_SUBTYPE_NAMES:
        return t, TRACE_SUBTYPE_NAMES[sub]
    if sub.isdigit():
        return t, int(sub)
    raise FilterError(
        f"unable to parse event sub-type '{sub}', not a known sub-type name and unable to parse as numeric value"
    )


def build_filters(items: Iterable[tuple[str, Any, bool]]) -> tuple[list[FlowFilter], list[FlowFilter]]:
    """(allowlist, denylist) from ``(filter name, value, negated)`` in command-line order."""
    allow, deny = _Tracker(), _Tracker()
    for name, value, negated in items:
        if name not in _FLAGS and name not in _NAMESPACE_FLAGS:
            raise FilterError(f"unknown filter {name!r} (known: {', '.join(FILTER_FLAGS)})")
        (deny if negated else allow).add(name, value)
    return allow.filters(), deny.filters()


def items_from_kwargs(filters: Mapping[str, Any]) -> list[tuple[str, Any, bool]]:
    """``observe(verdict=["DROPPED"], not_namespace="kube-system")`` -> ordered items."""
    items: list[tuple[str, Any, bool]] = []
    for key, value in filters.items():
        negated = key.startswith("not_")
        name = key[4:] if negated else key
        values = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
        for v in values:
            items.append((name, v, negated))
    return items


# ---------------------------------------------------------------- label selectors
_COLON_PREFIX = re.compile(r"([^,]\s*[a-z0-9-]+):([a-z0-9-]+)")
_REQ = re.compile(
    r"""\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./\-]+)\s*
        (?:(?P<op>==|=|!=)\s*(?P<val>[A-Za-z0-9_.\-]*)
          |\s+(?P<setop>in|notin)\s*\((?P<set>[^)]*)\))?\s*$""",
    re.X,
)

Requirement = tuple[str, str, str, frozenset[str]]  # (source, key, op, values)


def parse_selector(text: str) -> list[Requirement]:
    """Hubble's label filter: a Kubernetes label selector over Cilium labels.

    ``k8s:app=web`` selects label ``app=web`` of source ``k8s``; a key without a source
    (``app=web``) matches any source; ``reserved:world`` is an existence test.
    """
    translated = _COLON_PREFIX.sub(r"\1.\2", text)
    parts: list[str] = []
    depth = 0
    cur = ""
    for ch in translated:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    reqs: list[Requirement] = []
    for part in parts:
        m = _REQ.match(part)
        if m is None or not part.strip():
            raise FilterError(f"invalid label selector {text!r}")
        key = m["key"]
        source, _, name = key.partition(".") if "." in key else ("any", "", key)
        if m["neg"]:
            if m["op"] or m["setop"]:
                raise FilterError(f"invalid label selector {text!r}")
            reqs.append((source, name, "!", frozenset()))
        elif m["op"]:
            op = "=" if m["op"] in ("=", "==") else "!="
            reqs.append((source, name, op, frozenset([m["val"]])))
        elif m["setop"]:
            vals = frozenset(v.strip() for v in m["set"].split(",") if v.strip())
            reqs.append((source, name, m["setop"], vals))
        else:
            reqs.append((source, name, "exists", frozenset()))
    return reqs


def _split_label(label: str) -> tuple[str, str, str]:
    source, sep, rest = label.partition(":")
    if not sep:
        source, rest = "unspec", label
    key, _, value = rest.partition("=")
    return source, key, value


def selector_matches(reqs: list[Requirement], labels: Sequence[str]) -> bool:
    parsed = [_split_label(lbl) for lbl in labels]

    def get(source: str, key: str) -> str | None:
        for s, k, v in parsed:
            if k == key and (source == "any" or s == source):
                return v
        return None

    for source, key, op, values in reqs:
        value = get(source, key)
        if op == "exists":
            ok = value is not None
        elif op == "!":
            ok = value is None
        elif op == "=" or op == "in":
            ok = value is not None and value in values
        else:  # != and notin match when the label is absent too
            ok = value is None or value not in values
        if not ok:
            return False
    return True


def _fqdn_regex(patterns: Sequence[str]) -> re.Pattern[str]:
    alts = []
    for pattern in patterns:
        p = pattern.strip()
        if p.endswith("."):
            p = p[:-1]
        p = p.lower()
        if not p:
            raise FilterError("empty pattern")
        if p.endswith("."):
            raise FilterError("multiple trailing dots in pattern")
        out = []
        for ch in p:
            if ch == ".":
                out.append(r"\.")
            elif ch == "*":
                out.append("[-.0-9a-z]*")
            elif ch == "-" or ch == "_" or ch.isdigit() or "a" <= ch <= "z":
                out.append(ch)
            else:
                raise FilterError(f"{ch!r}: invalid rune in pattern")
        alts.append("".join(out))
    return re.compile(r"\A(?:" + "|".join(alts) + r")\Z")


# ---------------------------------------------------------------- compilation
class Tables:
    """The store's interned values a predicate is computed over (read only here)."""

    endpoints: list[tuple[str, str, tuple[str, ...], int]]  # (namespace, pod_name, labels, identity)
    ips: list[str]
    l7: list[tuple[str, str, str, str, int, str]]  # (proto, type, method, url, code, query)
    names: list[tuple[str, ...]]


def _pod_ids(tables: Tables, pods: list[str]) -> set[int]:
    wanted: list[tuple[str, str]] = []
    for pod in pods:
        parts = pod.split("/")
        if len(parts) == 1:
            ns, prefix = "default", parts[0]
        elif len(parts) == 2:
            ns, prefix = parts
        else:
            ns, prefix = "", ""
        if ns == "" and prefix == "":
            raise FilterError(f'invalid filter, must be [namespace/][<name>], got "{pod}"')
        wanted.append((ns, prefix))
    out = set()
    for i, (ns, name, _labels, _ident) in enumerate(tables.endpoints):
        if not ns and not name:
            continue
        if any((not prefix or name.startswith(prefix)) and ns == want_ns for want_ns, prefix in wanted):
            out.add(i)
    return out


def _label_ids(tables: Tables, selectors: list[str]) -> set[int]:
    parsed = [parse_selector(s) for s in selectors]
    return {i for i, ep in enumerate(tables.endpoints) if any(selector_matches(p, ep[2]) for p in parsed)}


def _identity_ids(tables: Tables, identities: list[int]) -> set[int]:
    want = set(identities)
    return {i for i, ep in enumerate(tables.endpoints) if ep[3] in want}


def _ip_ids(tables: Tables, specs: list[str]) -> set[int]:
    nets = [ipaddress.ip_network(s, strict=False) for s in specs]
    out = set()
    for i, ip in enumerate(tables.ips):
        if not ip:
            continue
        addr = ipaddress.ip_address(ip)
        if any(addr.version == n.version and addr in n for n in nets):
            out.add(i)
    return out


def _name_ids(tables: Tables, patterns: list[str]) -> set[int]:
    rx = _fqdn_regex(patterns)
    return {i for i, names in enumerate(tables.names) if any(rx.match(n) for n in names)}


def _http_ids(tables: Tables, f: FlowFilter) -> set[int] | None:
    """L7 ids passing every HTTP field of ``f`` (None when ``f`` has no HTTP field)."""
    tests: list[Callable[[tuple[str, str, str, str, int, str]], bool]] = []
    if f.http_status_code:
        full = {s for s in f.http_status_code if not s.endswith("+")}
        prefixes = tuple(s[:-1] for s in f.http_status_code if s.endswith("+"))
        tests.append(
            lambda e: e[0] == "http" and e[4] != 0 and (f"{e[4]:03d}" in full or f"{e[4]:03d}".startswith(prefixes))
        )
    if f.http_method:
        methods = {m.lower() for m in f.http_method}
        tests.append(lambda e: e[0] == "http" and e[2] != "" and e[2].lower() in methods)
    if f.http_path:
        rxs = [re.compile(p) for p in f.http_path]
        tests.append(lambda e: e[0] == "http" and _path_matches(e[3], rxs))
    if f.http_url:
        urxs = [re.compile(p) for p in f.http_url]
        tests.append(lambda e: e[0] == "http" and e[3] != "" and any(r.search(e[3]) for r in urxs))
    if not tests:
        return None
    return {i for i, e in enumerate(tables.l7) if all(t(e) for t in tests)}


def _status_matches(code: int, full: set[str], prefixes: tuple[str, ...]) -> bool:
    text = f"{code:03d}"
    return text in full or text.startswith(prefixes)


def _path_matches(url: str, rxs: list[re.Pattern[str]]) -> bool:
    if not url:
        return False
    try:
        path = urllib.parse.urlsplit(url).path
    except ValueError:
        return False
    return any(r.search(path) for r in rxs)


def _clauses(f: FlowFilter, tables: Tables, env: dict[str, Any]) -> list[str]:
    """Python expressions over record ``r`` that must all hold for ``f`` to match."""
    out: list[str] = []

    def bind(value: Any) -> str:
        name = f"S{len(env)}"
        env[name] = value
        return name

    if f.source_pod:
        out.append(f"r[{R_SRC}] in {bind(_pod_ids(tables, f.source_pod))}")
    if f.destination_pod:
        out.append(f"r[{R_DST}] in {bind(_pod_ids(tables, f.destination_pod))}")
    if f.source_ip:
        out.append(f"r[{R_SIP}] in {bind(_ip_ids(tables, f.source_ip))}")
    if f.destination_ip:
        out.append(f"r[{R_DIP}] in {bind(_ip_ids(tables, f.destination_ip))}")
    if f.source_label:
        out.append(f"r[{R_SRC}] in {bind(_label_ids(tables, f.source_label))}")
    if f.destination_label:
        out.append(f"r[{R_DST}] in {bind(_label_ids(tables, f.destination_label))}")
    if f.source_identity:
        out.append(f"r[{R_SRC}] in {bind(_identity_ids(tables, f.source_identity))}")
    if f.destination_identity:
        out.append(f"r[{R_DST}] in {bind(_identity_ids(tables, f.destination_identity))}")
    if f.source_fqdn:
        out.append(f"r[{R_SNAMES}] in {bind(_name_ids(tables, f.source_fqdn))}")
    if f.destination_fqdn:
        out.append(f"r[{R_DNAMES}] in {bind(_name_ids(tables, f.destination_fqdn))}")
    if f.source_port:
        out.append(f"r[{R_SPORT}] in {bind({int(p) for p in f.source_port})}")
    if f.destination_port:
        out.append(f"r[{R_DPORT}] in {bind({int(p) for p in f.destination_port})}")
    if f.verdict:
        out.append(f"r[{R_VERDICT}] in {bind({VERDICTS.index(v) for v in f.verdict})}")
    if f.drop_reason_desc:
        out.append(f"r[{R_DROP}] in {bind(set(f.drop_reason_desc))}")
    if f.event_type:
        whole = {t for t, sub in f.event_type if sub is None}
        exact = {(t << 16) | sub for t, sub in f.event_type if sub is not None}
        parts = []
        if 0 in whole:
            parts.append(f"r[{R_TYPE}] != -1")
        if whole:
            parts.append(f"r[{R_TYPE}] in {bind(whole)}")
        if exact:
            parts.append(f"r[{R_ETKEY}] in {bind(exact)}")
        out.append("(" + " or ".join(parts) + ")")
    if f.protocol:
        l4 = {n for p in f.protocol if p in L4_PROTOCOLS for n in L4_PROTOCOLS[p]}
        l7p = {p for p in f.protocol if p in L7_PROTOCOLS}
        parts = []
        if l4:
            parts.append(f"r[{R_PROTO}] in {bind(l4)}")
        if l7p:
            ids = {i for i, e in enumerate(tables.l7) if e[0] in l7p}
            parts.append(f"r[{R_L7}] in {bind(ids)}")
        out.append("(" + " or ".join(parts) + ")")
    http = _http_ids(tables, f)
    if http is not None:
        out.append(f"r[{R_L7}] in {bind(http)}")
    if f.traffic_direction:
        codes = {1 if d == "INGRESS" else 2 for d in f.traffic_direction}
        out.append(f"r[{R_DIR}] in {bind(codes)}")
    if f.tcp_flags:
        parts = [f"r[{R_FLAGS}] & {m} == {m}" for m in f.tcp_flags]
        out.append(f"r[{R_PROTO}] == 6 and (" + " or ".join(parts) + ")")
    if f.node_name:
        out.append(f"r[{R_NODE}] in {bind(set(f.node_name))}")
    return out


def _needs_l7_events(f: FlowFilter) -> None:
    http = f.http_status_code or f.http_method or f.http_path
    if http and f.event_type and all(t != 129 for t, _ in f.event_type):
        what = "status code" if f.http_status_code else "method" if f.http_method else "path"
        raise FilterError(f"filtering by http {what} requires the event type filter to only match 'l7' events")


def compile_predicate(
    allow: list[FlowFilter],
    deny: list[FlowFilter],
    tables: Tables,
    since: float | None = None,
    until: float | None = None,
) -> Callable[[Iterable[tuple[Any, ...]]], list[tuple[Any, ...]]]:
    """One function selecting the records that pass ``allow``/``deny`` and the time window."""
    env: dict[str, Any] = {}
    for f in (*allow, *deny):
        _needs_l7_events(f)

    def disjunction(filters: list[FlowFilter]) -> str:
        alts = []
        for f in filters:
            clauses = _clauses(f, tables, env)
            alts.append("(" + " and ".join(clauses) + ")" if clauses else "True")
        return " or ".join(alts)

    conds = []
    if allow:
        conds.append(f"({disjunction(allow)})")
    if deny:
        conds.append(f"not ({disjunction(deny)})")
    if since is not None:
        env["T0"] = since
        conds.append(f"r[{R_TIME}] >= T0")
    if until is not None:
        env["T1"] = until
        conds.append(f"r[{R_TIME}] <= T1")
    body = " and ".join(conds) if conds else "True"
    if body == "True":
        return list
    src = f"def select(records):\n    return [r for r in records if {body}]\n"
    code = compile(src, "<hubble-filter>", "exec")
    namespace: dict[str, Any] = dict(env)
    exec(code, namespace)
    select: Callable[[Iterable[tuple[Any, ...]]], list[tuple[Any, ...]]] = namespace["select"]
    return select
