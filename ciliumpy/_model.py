"""The policy and cluster model: frozen attrs classes with strict manifest parsing.

Every ``from_manifest`` takes the data and the dotted field path of that data inside its
document, and raises :class:`~ciliumpy.exceptions.PolicyError` naming the exact field and
value; the loader in ``_manifests`` adds document, line and object name.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import attrs

from ._datapath import Direction, IPAddress, IPNetwork, Protocol
from ._fqdn import FQDNSelector
from ._l7 import L7Rules, validate_port_rule_l7
from ._labels import (
    SOURCE_UNSPEC,
    Label,
    LabelSet,
    normalize_annotations,
    normalize_label_mapping,
)
from ._selectors import EndpointSelector
from .exceptions import PolicyError

__all__ = [
    "CIDRRule",
    "CiliumCIDRGroup",
    "CiliumClusterwideNetworkPolicy",
    "CiliumNetworkPolicy",
    "ContainerPort",
    "Endpoint",
    "EndpointConditions",
    "EndpointSlice",
    "ICMPField",
    "ICMPRule",
    "IPBlock",
    "Namespace",
    "NetworkPolicy",
    "NetworkPolicyPeer",
    "NetworkPolicyPort",
    "NetworkPolicyRule",
    "Node",
    "PeerRule",
    "PortProtocol",
    "PortRule",
    "Rule",
    "Service",
    "ServicePort",
    "ServiceRule",
    "SliceEndpoint",
    "SlicePort",
]

T = TypeVar("T")

ENTITIES = (
    "all",
    "world",
    "cluster",
    "host",
    "init",
    "ingress",
    "unmanaged",
    "remote-node",
    "health",
    "none",
    "kube-apiserver",
)
PORT_PROTOCOLS = ("TCP", "UDP", "SCTP", "ANY")
MAX_PORTS = 40
MAX_ICMP_FIELDS = 40
AUTH_MODES = {"disabled": 0, "required": 1, "test-always-fail": 2}

ICMP_TYPES_V4 = {
    "EchoReply": 0,
    "DestinationUnreachable": 3,
    "Redirect": 5,
    "Echo": 8,
    "EchoRequest": 8,
    "RouterAdvertisement": 9,
    "RouterSelection": 10,
    "TimeExceeded": 11,
    "ParameterProblem": 12,
    "Timestamp": 13,
    "TimestampReply": 14,
    "Photuris": 40,
    "ExtendedEchoRequest": 42,
    "ExtendedEchoReply": 43,
}
ICMP_TYPES_V6 = {
    "DestinationUnreachable": 1,
    "PacketTooBig": 2,
    "TimeExceeded": 3,
    "ParameterProblem": 4,
    "EchoRequest": 128,
    "EchoReply": 129,
    "MulticastListenerQuery": 130,
    "MulticastListenerReport": 131,
    "MulticastListenerDone": 132,
    "RouterSolicitation": 133,
    "RouterAdvertisement": 134,
    "NeighborSolicitation": 135,
    "NeighborAdvertisement": 136,
    "RedirectMessage": 137,
    "RouterRenumbering": 138,
    "ICMPNodeInformationQuery": 139,
    "ICMPNodeInformationResponse": 140,
    "InverseNeighborDiscoverySolicitation": 141,
    "InverseNeighborDiscoveryAdvertisement": 142,
    "HomeAgentAddressDiscoveryRequest": 144,
    "HomeAgentAddressDiscoveryReply": 145,
    "MobilePrefixSolicitation": 146,
    "MobilePrefixAdvertisement": 147,
    "DuplicateAddressRequestCodeSuffix": 157,
    "DuplicateAddressConfirmationCodeSuffix": 158,
    "ExtendedEchoRequest": 160,
    "ExtendedEchoReply": 161,
}

_PORT_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_SVC_NAME_RE = re.compile(r"^(?!-)(?!.*--)(?!.*-$)[A-Za-z0-9-]*[A-Za-z][A-Za-z0-9-]*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# --------------------------------------------------------------------------------------
# strict-parsing helpers (messages follow the API server's CRD validation and the agent)
def check_mapping(data: Any, field: str, allowed: Iterable[str], what: str = "object") -> Mapping[str, Any]:
    """Require a mapping whose keys are all in ``allowed``; name the first unknown key.

    ``None`` (a key written without a value) reads as an empty mapping.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        reason = "must be of type object" if what == "object" else f"{what} must be of type object"
        raise PolicyError(reason, field=field or None, value=data)
    allowed_set = set(allowed)
    for key in data:
        if key not in allowed_set:
            sub = f"{field}.{key}" if field else str(key)
            raise PolicyError(f'unknown field "{key}"', field=sub, value=data[key])
    return data


def opt_list(data: Mapping[str, Any], key: str, field: str) -> list[Any] | None:
    """``None`` when absent (or null), the list when present; error for non-lists."""
    if key not in data or data[key] is None:
        return None
    value = data[key]
    if not isinstance(value, list):
        raise PolicyError("must be of type array", field=_join(field, key), value=value)
    return value


def parse_list(data: Mapping[str, Any], key: str, field: str, parse: Callable[[Any, str], T]) -> tuple[T, ...] | None:
    """Parse every item of the list ``data[key]`` with ``parse(item, path)``."""
    items = opt_list(data, key, field)
    if items is None:
        return None
    return tuple(parse(item, f"{_join(field, key)}[{i}]") for i, item in enumerate(items))


def opt_str(data: Mapping[str, Any], key: str, field: str) -> str | None:
    """The string ``data[key]``, ``None`` when absent; error for other types."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PolicyError("must be of type string", field=_join(field, key), value=value)
    return value


def opt_bool(data: Mapping[str, Any], key: str, field: str) -> bool | None:
    """The boolean ``data[key]``, ``None`` when absent; error for other types."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise PolicyError("must be of type boolean", field=_join(field, key), value=value)
    return value


def opt_int(data: Mapping[str, Any], key: str, field: str, low: int, high: int) -> int | None:
    """The integer ``data[key]`` within ``low..high``, ``None`` when absent; error otherwise."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError("must be of type integer", field=_join(field, key), value=value)
    if not low <= value <= high:
        raise PolicyError(f"must be between {low} and {high}, inclusive", field=_join(field, key), value=value)
    return value


def sub_object(data: Mapping[str, Any], key: str, field: str) -> Mapping[str, Any]:
    """The mapping ``data[key]`` (empty when absent or null); error for other types."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PolicyError("must be of type object", field=_join(field, key), value=value)
    return value


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _sorted_map(mapping: Mapping[str, str]) -> dict[str, str]:
    return dict(sorted(mapping.items()))


def _container_ports(items: Iterable[ContainerPort]) -> tuple[ContainerPort, ...]:
    return tuple(items)


def path_steps(root: Any, path: str) -> Iterator[tuple[Any, Any]]:
    """Walk a field path such as ``spec.ingress[0].fromEndpoints[0].matchLabels.app.kubernetes.io/name``
    through ``root``, yielding ``(container, key or index)`` for each step that exists.

    Mapping keys may themselves contain dots (label keys), so at each mapping the longest
    key that the rest of the path starts with wins.
    """
    node, rest = root, path
    while rest:
        if rest.startswith("["):
            close = rest.find("]")
            if close < 0 or not rest[1:close].isdigit() or not isinstance(node, list):
                return
            index = int(rest[1:close])
            if index >= len(node):
                return
            yield node, index
            node, rest = node[index], rest[close + 1 :]
        else:
            rest = rest.removeprefix(".")
            if not isinstance(node, Mapping):
                return
            keys = [
                k
                for k in node
                if isinstance(k, str) and (rest == k or rest.startswith(k + ".") or rest.startswith(k + "["))
            ]
            if not keys:
                return
            key = max(keys, key=len)
            yield node, key
            node, rest = node[key], rest[len(key) :]


def value_at(root: Any, path: str) -> tuple[bool, Any]:
    """``(True, value)`` at a field ``path`` inside ``root``, ``(False, None)`` if absent."""
    found, node, consumed = False, root, ""
    for container, key in path_steps(root, path):
        node = container[key]
        consumed += f"[{key}]" if isinstance(key, int) else f".{key}"
        found = True
    return (True, node) if found and consumed.lstrip(".") == path else (False, None)


def _no_zone(text: str, field: str) -> None:
    # Python accepts "fe80::1%eth0/64"; Go's netip.ParsePrefix and net.ParseCIDR do not.
    if "%" in text:
        raise PolicyError("unable to parse CIDR: IPv6 zones cannot be present in a prefix", field=field, value=text)


def parse_network(text: Any, field: str) -> IPNetwork:
    """A CIDR or a bare IP (treated as /32 or /128): the agent's reading of a CIDR.

    Manifests go through :func:`parse_cidr`, which also applies the CRD's ``format: cidr``.
    """
    if not isinstance(text, str) or not text:
        raise PolicyError("IP must be specified", field=field, value=text)
    _no_zone(text, field)
    try:
        if "/" not in text:
            return ipaddress.ip_network(ipaddress.ip_address(text))
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise PolicyError(f"unable to parse CIDR: {exc}", field=field, value=text) from None


def parse_cidr(text: Any, field: str) -> IPNetwork:
    """A CIDR as the CRD schema accepts it (``format: cidr``: address/prefix-length).

    The API server rejects bare addresses since Cilium 1.16 (cilium/cilium#32814), before
    the agent's more lenient parser ever sees them.
    """
    if not isinstance(text, str):
        raise PolicyError("must be of type string", field=field, value=text)
    if not text:
        raise PolicyError("IP must be specified", field=field, value=text)
    _no_zone(text, field)
    try:
        if "/" not in text:
            raise ValueError(text)
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise PolicyError(
            "must be of type cidr (an address with a prefix length, e.g. 192.0.2.1/32)",
            field=field,
            value=text,
        ) from None


_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
    "with an alphabetic character, and end with an alphanumeric character"
)


def validate_name(value: Any, field: str, *, label: bool = False, dns1035: bool = False) -> str:
    """An object name: RFC 1123 subdomain (default), RFC 1123 label or DNS-1035 label."""
    if not isinstance(value, str) or not value:
        raise PolicyError("name or generateName is required", field=field, value=value)
    if dns1035:
        ok = len(value) <= 63 and bool(_DNS1035_LABEL.match(value))
        msg = _DNS1035_MSG
    elif label:
        ok = len(value) <= 63 and bool(_DNS1123_LABEL.match(value))
        msg = _LABEL_MSG
    else:
        ok = len(value) <= 253 and bool(_DNS1123_SUBDOMAIN.match(value))
        msg = _SUBDOMAIN_MSG
    if not ok:
        raise PolicyError(f"invalid name: {msg}", field=field, value=value)
    return value


def is_service_name(text: str) -> bool:
    """An IANA service name (RFC 6335 §5.1): at most 15 alphanumerics and single inner
    dashes, at least one letter (pkg/iana/svcname.go)."""
    return 0 < len(text) <= 15 and bool(_SVC_NAME_RE.match(text))


def _go_parse_port(text: str) -> int | str:
    """``strconv.ParseUint(text, 0, 16)`` as the agent calls it: the port number, or the
    Go error text. Base 0 means a leading ``0`` is octal and ``_`` may separate digits."""
    body = text
    base = 10
    if len(body) > 1 and body[0] == "0":
        base = 8
        body = body[1:].removeprefix("_")
    if not body or not re.fullmatch(r"[0-9]+(_[0-9]+)*", body):
        return f'strconv.ParseUint: parsing "{text}": invalid syntax'
    try:
        num = int(body.replace("_", ""), base)
    except ValueError:
        return f'strconv.ParseUint: parsing "{text}": invalid syntax'
    if num > 0xFFFF:
        return f'strconv.ParseUint: parsing "{text}": value out of range'
    return num


# --------------------------------------------------------------------------------------
# L4
@attrs.frozen
class PortProtocol:
    """One ``toPorts[].ports[]`` item: ``port`` (number or name), ``endPort``, ``protocol``.

    ``port`` is kept in canonical form: a decimal number or a lower-cased service name.
    """

    port: str = "0"
    end_port: int = 0
    protocol: str = "ANY"

    @classmethod
    def from_manifest(cls, data: Any, field: str) -> PortProtocol:
        """Parse and validate as the CRD schema and ``PortProtocol.Validate`` do."""
        d = check_mapping(data, field, ("port", "endPort", "protocol"))
        pf = f"{field}.port"
        raw = d.get("port")
        if raw is None or raw == "":
            raise PolicyError("port must be specified", field=pf, value=raw)
        if not isinstance(raw, str):
            raise PolicyError('must be of type string (quote the port: "80")', field=pf, value=raw)
        if is_service_name(raw):
            text = raw.lower()
        else:
            parsed = _go_parse_port(raw)
            if isinstance(parsed, str):
                raise PolicyError(f"unable to parse port: {parsed}", field=pf, value=raw)
            text = str(parsed)
        end = d.get("endPort")
        if end is None:
            end = 0
        if isinstance(end, bool) or not isinstance(end, int):
            raise PolicyError("must be of type integer", field=f"{field}.endPort", value=end)
        if not 0 <= end <= 65535:
            raise PolicyError("endPort must be within 0..65535", field=f"{field}.endPort", value=end)
        proto = d.get("protocol")
        if proto is None:
            proto = "ANY"
        if not isinstance(proto, str):
            raise PolicyError("must be of type string", field=f"{field}.protocol", value=proto)
        if proto in ("VRRP", "IGMP"):
            raise PolicyError(
                f"protocol {proto} needs Cilium's extended IP protocols option, which ciliumpy does not model",
                field=f"{field}.protocol",
                value=proto,
            )
        if proto not in PORT_PROTOCOLS:
            raise PolicyError(
                'Unsupported value: supported values: "TCP", "UDP", "SCTP", "ANY" (ICMP goes in icmps)',
                field=f"{field}.protocol",
                value=proto,
            )
        return cls(text, end, proto)

    def to_manifest(self) -> dict[str, Any]:
        """The item as written in a manifest."""
        out: dict[str, Any] = {"port": self.port}
        if self.end_port:
            out["endPort"] = self.end_port
        out["protocol"] = self.protocol
        return out

    @property
    def is_named(self) -> bool:
        """Whether ``port`` names a container port instead of giving a number."""
        return not self.port.isdigit()

    @property
    def number(self) -> int:
        """The port number (0 for named ports)."""
        return int(self.port) if self.port.isdigit() else 0

    def protocols(self) -> tuple[Protocol, ...]:
        """``ANY`` expands to TCP, UDP and SCTP (never ICMP)."""
        if self.protocol == "ANY":
            return (Protocol.TCP, Protocol.UDP, Protocol.SCTP)
        return (Protocol[self.protocol],)

    def range(self, resolved: int | None = None) -> tuple[int, int]:
        """Inclusive port range; ``endPort`` is ignored for named ports and when <= port."""
        start = resolved if resolved is not None else self.number
        if self.is_named or self.end_port <= start:
            return (start, start)
        return (start, self.end_port)


@attrs.frozen
class TLSContext:
    """A TLS secret reference (``terminatingTLS``/``originatingTLS``); kept for round trips."""

    secret_namespace: str | None
    secret_name: str
    trusted_ca: str | None = None
    certificate: str | None = None
    private_key: str | None = None

    @classmethod
    def from_manifest(cls, data: Any, field: str) -> TLSContext:
        d = check_mapping(data, field, ("secret", "trustedCA", "certificate", "privateKey"))
        sec = check_mapping(d.get("secret"), f"{field}.secret", ("namespace", "name"))
        name = sec.get("name")
        if not isinstance(name, str) or not name:
            raise PolicyError("Secret name missing", field=f"{field}.secret.name", value=name)
        return cls(
            opt_str(sec, "namespace", f"{field}.secret"),
            name,
            opt_str(d, "trustedCA", field),
            opt_str(d, "certificate", field),
            opt_str(d, "privateKey", field),
        )

    def to_manifest(self) -> dict[str, Any]:
        secret: dict[str, Any] = {"name": self.secret_name}
        if self.secret_namespace:
            secret["namespace"] = self.secret_namespace
        out: dict[str, Any] = {"secret": secret}
        for key, val in (
            ("trustedCA", self.trusted_ca),
            ("certificate", self.certificate),
            ("privateKey", self.private_key),
        ):
            if val is not None:
                out[key] = val
        return out


@attrs.frozen
class Listener:
    """A ``listener`` reference to a CiliumEnvoyConfig (kept for validation/round trip)."""

    kind: str
    name: str
    listener_name: str
    priority: int = 0

    @classmethod
    def from_manifest(cls, data: Any, field: str) -> Listener:
        d = check_mapping(data, field, ("envoyConfig", "name", "priority"))
        env = check_mapping(d.get("envoyConfig"), f"{field}.envoyConfig", ("kind", "name"))
        kind = env.get("kind") or "CiliumEnvoyConfig"
        if kind not in ("CiliumEnvoyConfig", "CiliumClusterwideEnvoyConfig"):
            raise PolicyError("unsupported envoyConfig kind", field=f"{field}.envoyConfig.kind", value=kind)
        name = env.get("name")
        lname = d.get("name")
        if not isinstance(name, str) or not name:
            raise PolicyError("envoyConfig name must be specified", field=f"{field}.envoyConfig.name", value=name)
        if not isinstance(lname, str) or not lname:
            raise PolicyError("listener name must be specified", field=f"{field}.name", value=lname)
        prio = d.get("priority")
        if prio is None:
            prio = 0
        elif isinstance(prio, bool) or not isinstance(prio, int) or not 1 <= prio <= 100:
            raise PolicyError("priority must be within 1..100", field=f"{field}.priority", value=prio)
        return cls(str(kind), name, lname, prio)

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "envoyConfig": {"kind": self.kind, "name": self.name},
            "name": self.listener_name,
        }
        if self.priority:
            out["priority"] = self.priority
        return out


@attrs.frozen
class PortRule:
    """One ``toPorts`` item: ports plus optional L7 ``rules``, SNI, TLS and listener."""

    ports: tuple[PortProtocol, ...] = ()
    rules: L7Rules | None = None
    server_names: tuple[str, ...] = ()
    terminating_tls: TLSContext | None = None
    originating_tls: TLSContext | None = None
    listener: Listener | None = None
    deny_form: bool = attrs.field(default=False, eq=False)

    _FIELDS: ClassVar[tuple[str, ...]] = (
        "ports",
        "rules",
        "serverNames",
        "terminatingTLS",
        "originatingTLS",
        "listener",
    )

    @classmethod
    def from_manifest(cls, data: Any, field: str, *, deny: bool = False) -> PortRule:
        allowed = ("ports",) if deny else cls._FIELDS
        d = check_mapping(data, field, allowed)
        ports = parse_list(d, "ports", field, PortProtocol.from_manifest) or ()
        if len(ports) > MAX_PORTS:
            raise PolicyError(f"too many ports, the max is {MAX_PORTS}", field=f"{field}.ports", value=len(ports))
        rules = None
        if d.get("rules") is not None:
            rules = L7Rules.from_manifest(d["rules"], f"{field}.rules")
        names_raw = opt_list(d, "serverNames", field) or []
        names: list[str] = []
        for i, n in enumerate(names_raw):
            if not isinstance(n, str) or not n:
                raise PolicyError("empty server name is not allowed", field=f"{field}.serverNames[{i}]", value=n)
            names.append(n)
        term = (
            TLSContext.from_manifest(d["terminatingTLS"], f"{field}.terminatingTLS")
            if d.get("terminatingTLS")
            else None
        )
        orig = (
            TLSContext.from_manifest(d["originatingTLS"], f"{field}.originatingTLS")
            if d.get("originatingTLS")
            else None
        )
        listener = Listener.from_manifest(d["listener"], f"{field}.listener") if d.get("listener") else None
        if names and rules is not None and rules.parser is not None and term is None:
            raise PolicyError(
                "ServerNames are not allowed with L7 rules without TLS termination",
                field=f"{field}.serverNames",
                value=names_raw,
            )
        if listener is not None and rules is not None and rules.parser is not None:
            raise PolicyError(
                f"Listener is not allowed with L7 rules ({listener.listener_name})",
                field=f"{field}.listener",
                value=d["listener"],
            )
        return cls(tuple(ports), rules, tuple(names), term, orig, listener, deny)

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.ports:
            out["ports"] = [p.to_manifest() for p in self.ports]
        if self.rules is not None:
            out["rules"] = self.rules.to_manifest()
        if self.server_names:
            out["serverNames"] = list(self.server_names)
        if self.terminating_tls is not None:
            out["terminatingTLS"] = self.terminating_tls.to_manifest()
        if self.originating_tls is not None:
            out["originatingTLS"] = self.originating_tls.to_manifest()
        if self.listener is not None:
            out["listener"] = self.listener.to_manifest()
        return out

    @property
    def has_l7(self) -> bool:
        return self.rules is not None and self.rules.parser is not None


@attrs.frozen
class ICMPField:
    """One ICMP type to allow or deny: ``family`` IPv4/IPv6 and a number or CamelCase name."""

    family: str = "IPv4"
    type: int | str = 0

    @classmethod
    def from_manifest(cls, data: Any, field: str) -> ICMPField:
        """Parse ``{family, type}``: CRD enum/pattern, then the agent's family and name checks."""
        d = check_mapping(data, field, ("family", "type"))
        fam = d.get("family")
        if fam is None or fam == "":
            fam = "IPv4"
        if fam not in ("IPv4", "IPv6"):
            raise PolicyError(f"wrong family: {fam}", field=f"{field}.family", value=fam)
        raw = d.get("type")
        tf = f"{field}.type"
        if raw is None:
            raise PolicyError("Required value: ICMP type must be specified", field=tf, value=raw)
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise PolicyError("must be of type integer or string", field=tf, value=raw)
        value: int | str
        if isinstance(raw, int) or raw.isdigit():
            value = int(raw)
            if not 0 <= value <= 255 or (isinstance(raw, str) and raw != str(value)):
                raise PolicyError("ICMP type must be a number within 0..255 or a type name", field=tf, value=raw)
        else:
            table = ICMP_TYPES_V4 if fam == "IPv4" else ICMP_TYPES_V6
            if raw not in table:
                raise PolicyError(f"ICMP type {raw} not found in {fam}", field=tf, value=raw)
            value = raw
        return cls(fam, value)

    def to_manifest(self) -> dict[str, Any]:
        """The field as written in a manifest."""
        return {"family": self.family, "type": self.type}

    @property
    def number(self) -> int:
        """The ICMP type number (names resolved per family)."""
        if isinstance(self.type, int):
            return self.type
        table = ICMP_TYPES_V4 if self.family == "IPv4" else ICMP_TYPES_V6
        return table[self.type]

    @property
    def protocol(self) -> Protocol:
        """ICMP for IPv4, ICMPv6 for IPv6."""
        return Protocol.ICMP if self.family == "IPv4" else Protocol.ICMPV6


@attrs.frozen
class ICMPRule:
    """One ``icmps`` item: up to 40 ICMP ``fields``."""

    fields: tuple[ICMPField, ...] = ()

    @classmethod
    def from_manifest(cls, data: Any, field: str) -> ICMPRule:
        """Parse ``{fields: [...]}``."""
        d = check_mapping(data, field, ("fields",))
        fields = parse_list(d, "fields", field, ICMPField.from_manifest) or ()
        if len(fields) > MAX_ICMP_FIELDS:
            raise PolicyError(
                f"too many types, the max is {MAX_ICMP_FIELDS}",
                field=f"{field}.fields",
                value=len(fields),
            )
        return cls(tuple(fields))

    def to_manifest(self) -> dict[str, Any]:
        """The rule as written in a manifest."""
        return {"fields": [f.to_manifest() for f in self.fields]}


@attrs.frozen
class CIDRRule:
    """A ``CIDRSet`` item: ``cidr`` (or a CIDR group reference) with ``except`` holes."""

    cidr: str | None = None
    except_: tuple[str, ...] = ()
    cidr_group_ref: str | None = None
    cidr_group_selector: EndpointSelector | None = None

    @classmethod
    def from_manifest(cls, data: Any, field: str) -> CIDRRule:
        """Parse a CIDR set item as ``CIDRRule.Validate`` and the CRD schema do."""
        d = check_mapping(data, field, ("cidr", "except", "cidrGroupRef", "cidrGroupSelector"))
        cidr = opt_str(d, "cidr", field) or None
        ref = opt_str(d, "cidrGroupRef", field) or None
        sel = None
        if d.get("cidrGroupSelector") is not None:
            sel = EndpointSelector.from_manifest(d["cidrGroupSelector"], f"{field}.cidrGroupSelector")
        given = sum(x is not None for x in (cidr, ref, sel))
        if given == 0:
            raise PolicyError(
                "one of cidr, cidrGroupRef, or cidrGroupSelector is required",
                field=field,
                value=dict(d),
            )
        if given > 1:
            raise PolicyError(
                "more than one of cidr, cidrGroupRef, or cidrGroupSelector may not be set",
                field=field,
                value=dict(d),
            )
        if ref is not None:
            validate_name(ref, f"{field}.cidrGroupRef")
        excepts_raw = opt_list(d, "except", field) or []
        excepts = [parse_cidr(e, f"{field}.except[{i}]") for i, e in enumerate(excepts_raw)]
        if cidr is not None:
            net = parse_cidr(cidr, f"{field}.cidr")
            for i, enet in enumerate(excepts):
                # The agent (1.19, CIDRRule.sanitize) checks that the except's address lies
                # inside the allowed prefix (which also rejects a family mismatch) and that
                # the except is not broader than it (10.0.0.0/24 except 10.0.0.0/16).
                if enet.version != net.version or enet.network_address not in net or enet.prefixlen < net.prefixlen:
                    raise PolicyError(
                        f"allow CIDR prefix {cidr} does not contain exclude CIDR prefix {excepts_raw[i]}",
                        field=f"{field}.except[{i}]",
                        value=excepts_raw[i],
                    )
        return cls(cidr, tuple(excepts_raw), ref, sel)

    def to_manifest(self) -> dict[str, Any]:
        """The item as written in a manifest."""
        out: dict[str, Any] = {}
        if self.cidr is not None:
            out["cidr"] = self.cidr
        if self.cidr_group_ref is not None:
            out["cidrGroupRef"] = self.cidr_group_ref
        if self.cidr_group_selector is not None:
            out["cidrGroupSelector"] = self.cidr_group_selector.to_manifest()
        if self.except_:
            out["except"] = list(self.except_)
        return out

    @property
    def network(self) -> IPNetwork | None:
        """The allowed prefix (``None`` for CIDR group references)."""
        return parse_network(self.cidr, "cidr") if self.cidr else None

    @property
    def excepts(self) -> tuple[IPNetwork, ...]:
        """The ``except`` prefixes."""
        return tuple(parse_network(e, "except") for e in self.except_)


@attrs.frozen
class ServiceRule:
    """A ``toServices`` item: a named service or a service label selector."""

    name: str | None = None
    namespace: str | None = None
    selector: EndpointSelector | None = None

    @classmethod
    def from_manifest(cls, data: Any, field: str) -> ServiceRule:
        d = check_mapping(data, field, ("k8sService", "k8sServiceSelector"))
        if ("k8sService" in d) == ("k8sServiceSelector" in d):
            raise PolicyError(
                "exactly one of k8sService or k8sServiceSelector is required",
                field=field,
                value=dict(d),
            )
        if "k8sService" in d:
            s = check_mapping(d["k8sService"], f"{field}.k8sService", ("serviceName", "namespace"))
            name = s.get("serviceName")
            if not isinstance(name, str) or not name:
                raise PolicyError(
                    "serviceName must be specified",
                    field=f"{field}.k8sService.serviceName",
                    value=name,
                )
            return cls(name=name, namespace=opt_str(s, "namespace", f"{field}.k8sService"))
        s = check_mapping(d["k8sServiceSelector"], f"{field}.k8sServiceSelector", ("selector", "namespace"))
        sel = EndpointSelector.from_manifest(s.get("selector"), f"{field}.k8sServiceSelector.selector")
        return cls(selector=sel, namespace=opt_str(s, "namespace", f"{field}.k8sServiceSelector"))

    def to_manifest(self) -> dict[str, Any]:
        if self.selector is not None:
            inner: dict[str, Any] = {"selector": self.selector.to_manifest()}
            if self.namespace:
                inner["namespace"] = self.namespace
            return {"k8sServiceSelector": inner}
        svc: dict[str, Any] = {"serviceName": self.name}
        if self.namespace:
            svc["namespace"] = self.namespace
        return {"k8sService": svc}


# Field names of one rule element per direction: (our attribute, ingress name, egress name).
_PEER_FIELDS = (
    ("endpoints", "fromEndpoints", "toEndpoints"),
    ("cidr", "fromCIDR", "toCIDR"),
    ("cidr_set", "fromCIDRSet", "toCIDRSet"),
    ("entities", "fromEntities", "toEntities"),
    ("services", None, "toServices"),
    ("fqdns", None, "toFQDNs"),
    ("nodes", "fromNodes", "toNodes"),
    ("groups", "fromGroups", "toGroups"),
)


def _parse_cidr_str(item: Any, field: str) -> str:
    parse_cidr(item, field)
    return str(item)


def _parse_entity(item: Any, field: str) -> str:
    # The CRD enum rejects unknown entities (and the internal world-ipv4/-ipv6) first;
    # the message is the agent's, which says the same in fewer words.
    if not isinstance(item, str) or item not in ENTITIES:
        raise PolicyError(f"unsupported entity: {item}", field=field, value=item)
    return item


_AWS_GROUP_FIELDS = ("labels", "region", "securityGroupsIds", "securityGroupsNames")


def _parse_group(item: Any, field: str) -> _FrozenMap:
    d = check_mapping(item, field, ("aws",))
    if d.get("aws") is not None:
        check_mapping(d["aws"], f"{field}.aws", _AWS_GROUP_FIELDS)
    frozen: _FrozenMap = _freeze(d)
    return frozen


class _FrozenMap(tuple[tuple[str, Any], ...]):
    """A mapping frozen into sorted ``(key, value)`` pairs (hashable, thawed back exactly)."""

    __slots__ = ()


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _FrozenMap(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, _FrozenMap):
        return {k: _thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@attrs.frozen(kw_only=True)
class PeerRule:
    """One element of ``ingress``, ``ingressDeny``, ``egress`` or ``egressDeny``.

    Peer lists are ``None`` when absent and ``()`` when explicitly empty (which selects
    nothing). Only one peer kind may be given per element.
    """

    direction: Direction
    deny: bool = False
    endpoints: tuple[EndpointSelector, ...] | None = None
    cidr: tuple[str, ...] | None = None
    cidr_set: tuple[CIDRRule, ...] | None = None
    entities: tuple[str, ...] | None = None
    services: tuple[ServiceRule, ...] | None = None
    fqdns: tuple[FQDNSelector, ...] | None = None
    nodes: tuple[EndpointSelector, ...] | None = None
    groups: tuple[Any, ...] | None = None
    requires: tuple[EndpointSelector, ...] | None = None
    to_ports: tuple[PortRule, ...] | None = None
    icmps: tuple[ICMPRule, ...] | None = None
    authentication: str | None = None

    @classmethod
    def from_manifest(
        cls,
        data: Any,
        field: str,
        *,
        direction: Direction,
        deny: bool,
        host_policy: bool = False,
    ) -> PeerRule:
        """Parse one rule element and run the agent's ``Validate`` checks on it.

        ``host_policy`` is true inside a rule with a ``nodeSelector`` (host firewall),
        where L7 rules are restricted.
        """
        ingress = direction == Direction.INGRESS
        names = {attr: (i if ingress else e) for attr, i, e in _PEER_FIELDS}
        req_name = "fromRequires" if ingress else "toRequires"
        allowed = [n for n in names.values() if n]
        allowed += ["toPorts", "icmps", req_name]
        if not deny:
            allowed.append("authentication")
        else:
            allowed = [a for a in allowed if a != "toFQDNs"]
        d = check_mapping(data, field, allowed, "rule")
        kw: dict[str, Any] = {}
        parsers: dict[str, Callable[[Any, str], Any]] = {
            "endpoints": EndpointSelector.from_manifest,
            "cidr": _parse_cidr_str,
            "cidr_set": CIDRRule.from_manifest,
            "entities": _parse_entity,
            "services": ServiceRule.from_manifest,
            "fqdns": FQDNSelector.from_manifest,
            "nodes": EndpointSelector.from_manifest,
            "groups": _parse_group,
        }
        present: list[str] = []
        for attr, name in names.items():
            if name is None or name not in d:
                continue
            kw[attr] = parse_list(d, name, field, parsers[attr])
            # Only non-empty lists count as a peer kind (the agent compares lengths), so
            # an explicitly empty list may sit beside another kind.
            if kw[attr]:
                present.append(name)
        if len(present) > 1:
            first, second = present[0], present[1]
            raise PolicyError(
                f"combining {_cap(first)} and {_cap(second)} is not supported yet",
                field=f"{field}.{second}",
                value=d[second],
            )
        requires = opt_list(d, req_name, field)
        if requires:
            raise PolicyError(
                f"{req_name} was removed in Cilium 1.19; the CRD allows at most 0 items",
                field=f"{field}.{req_name}",
                value=requires,
            )
        kw["requires"] = None if requires is None else ()
        ports = opt_list(d, "toPorts", field)
        if ports is not None:
            kw["to_ports"] = tuple(
                PortRule.from_manifest(p, f"{field}.toPorts[{i}]", deny=deny) for i, p in enumerate(ports)
            )
        kw["icmps"] = parse_list(d, "icmps", field, ICMPRule.from_manifest)
        if kw["icmps"] and kw.get("to_ports"):
            raise PolicyError(
                "the ICMPs block may only be present without ToPorts. Define a separate rule to use ToPorts",
                field=f"{field}.icmps",
                value=d["icmps"],
            )
        if d.get("authentication") is not None:
            auth = check_mapping(d["authentication"], f"{field}.authentication", ("mode",))
            mode = auth.get("mode")
            if mode not in AUTH_MODES:
                raise PolicyError(
                    'Unsupported value: supported values: "disabled", "required", "test-always-fail"',
                    field=f"{field}.authentication.mode",
                    value=mode,
                )
            kw["authentication"] = mode
        rule = cls(direction=direction, deny=deny, **kw)
        try:
            rule.validate_l7(field, host_policy=host_policy)
        except PolicyError as exc:
            if exc.has_value or not exc.field or not exc.field.startswith(field + "."):
                raise
            found, value = value_at(d, exc.field[len(field) + 1 :])
            raise (_with_value(exc, value) if found else exc) from None
        return rule

    def validate_l7(self, field: str, *, host_policy: bool = False) -> None:
        """Context checks of L7 rules and listeners against their rule element.

        The element-level checks of ``IngressRule``/``EgressRule.Validate`` (L7 protocol
        allowed in this direction, listener only on egress) are made here; the checks of
        one ``toPorts`` item against its ports are ``_l7.validate_port_rule_l7``'s.
        """
        ingress = self.direction == Direction.INGRESS
        for i, pr in enumerate(self.to_ports or ()):
            pf = f"{field}.toPorts[{i}]"
            if ingress and not host_policy and pr.rules is not None and pr.rules.dns:
                raise PolicyError(
                    "L7 protocol DNS is not supported on ingress yet",
                    field=f"{pf}.rules.dns",
                    value=pr.rules.to_manifest().get("dns"),
                )
        for i, pr in enumerate(self.to_ports or ()):
            pf = f"{field}.toPorts[{i}]"
            validate_port_rule_l7(
                pr.rules,
                [pp.to_manifest() for pp in pr.ports],
                path=pf,
                ingress=ingress,
                host_policy=host_policy,
            )
            if pr.listener is not None and ingress:
                raise PolicyError(
                    f"Listener is not allowed on ingress ({pr.listener.listener_name})",
                    field=f"{pf}.listener",
                    value=pr.listener.to_manifest(),
                )

    def to_manifest(self) -> dict[str, Any]:
        ingress = self.direction == Direction.INGRESS
        out: dict[str, Any] = {}
        for attr, iname, ename in _PEER_FIELDS:
            name = iname if ingress else ename
            value = getattr(self, attr)
            if name is None or value is None:
                continue
            if attr in ("endpoints", "nodes", "cidr_set", "services", "fqdns"):
                out[name] = [s.to_manifest() for s in value]
            elif attr == "groups":
                out[name] = [_thaw(g) for g in value]
            else:
                out[name] = list(value)
        if self.requires is not None:
            out["fromRequires" if ingress else "toRequires"] = [s.to_manifest() for s in self.requires]
        if self.to_ports is not None:
            out["toPorts"] = [p.to_manifest() for p in self.to_ports]
        if self.icmps is not None:
            out["icmps"] = [i.to_manifest() for i in self.icmps]
        if self.authentication is not None:
            out["authentication"] = {"mode": self.authentication}
        return out

    @property
    def has_l3_peers(self) -> bool:
        return any(getattr(self, attr) is not None for attr, _, _ in _PEER_FIELDS)

    @property
    def auth_type(self) -> int:
        return AUTH_MODES.get(self.authentication or "disabled", 0)


def _with_value(exc: PolicyError, value: Any) -> PolicyError:
    return PolicyError(
        exc.reason,
        document=exc.document,
        line=exc.line,
        kind=exc.kind,
        namespace=exc.namespace,
        name=exc.name,
        field=exc.field,
        value=value,
    )


def _cap(name: str) -> str:
    return name[0].upper() + name[1:]


_SECTIONS = (
    ("ingress", Direction.INGRESS, False),
    ("ingressDeny", Direction.INGRESS, True),
    ("egress", Direction.EGRESS, False),
    ("egressDeny", Direction.EGRESS, True),
)


@attrs.frozen(kw_only=True)
class Rule:
    """One Cilium policy rule (a ``spec`` or one item of ``specs``)."""

    endpoint_selector: EndpointSelector | None = None
    node_selector: EndpointSelector | None = None
    ingress: tuple[PeerRule, ...] | None = None
    ingress_deny: tuple[PeerRule, ...] | None = None
    egress: tuple[PeerRule, ...] | None = None
    egress_deny: tuple[PeerRule, ...] | None = None
    labels: tuple[Label, ...] = ()
    description: str | None = None
    enable_default_deny_ingress: bool | None = None
    enable_default_deny_egress: bool | None = None
    log: str | None = None

    @classmethod
    def from_manifest(cls, data: Any, field: str, *, namespaced: bool = False) -> Rule:
        """Parse one rule and run ``Rule.Validate`` on it, in the agent's order.

        ``namespaced`` is true for the rules of a CiliumNetworkPolicy, which may not use a
        ``nodeSelector``.
        """
        d = check_mapping(
            data,
            field,
            (
                "endpointSelector",
                "nodeSelector",
                "ingress",
                "ingressDeny",
                "egress",
                "egressDeny",
                "labels",
                "description",
                "enableDefaultDeny",
                "log",
            ),
            "rule",
        )
        # The schema's types come first; then (1.18+) a rule without any non-empty section
        # is rejected before anything else.
        sections = {name: opt_list(d, name, field) for name, _, _ in _SECTIONS}
        if not any(sections.values()):
            raise PolicyError(
                "rule must have at least one of Ingress, IngressDeny, Egress, EgressDeny",
                field=field,
                value=dict(d),
            )
        has_ep = d.get("endpointSelector") is not None
        has_node = d.get("nodeSelector") is not None
        if not has_ep and not has_node:
            raise PolicyError("rule must have one of EndpointSelector or NodeSelector", field=field, value=dict(d))
        if has_ep and has_node:
            raise PolicyError(
                "rule cannot have both EndpointSelector and NodeSelector",
                field=f"{field}.nodeSelector",
                value=d["nodeSelector"],
            )
        kw: dict[str, Any] = {}
        if has_ep:
            kw["endpoint_selector"] = EndpointSelector.from_manifest(d["endpointSelector"], f"{field}.endpointSelector")
        else:
            kw["node_selector"] = EndpointSelector.from_manifest(d["nodeSelector"], f"{field}.nodeSelector")
        for name, direction, deny in _SECTIONS:
            items = sections[name]
            if items is None:
                continue
            kw[_snake(name)] = tuple(
                PeerRule.from_manifest(
                    it,
                    f"{field}.{name}[{i}]",
                    direction=direction,
                    deny=deny,
                    host_policy=has_node,
                )
                for i, it in enumerate(items)
            )
        if namespaced and has_node:
            raise PolicyError(
                "rule cannot have NodeSelector (only CiliumClusterwideNetworkPolicy may)",
                field=f"{field}.nodeSelector",
                value=d["nodeSelector"],
            )
        labels_raw = opt_list(d, "labels", field) or []
        labels: list[Label] = []
        for i, item in enumerate(labels_raw):
            lf = f"{field}.labels[{i}]"
            lbl = check_mapping(item, lf, ("key", "value", "source"))
            key = opt_str(lbl, "key", lf)
            if not key:
                raise PolicyError("Required value: label key", field=f"{lf}.key", value=key)
            source = opt_str(lbl, "source", lf) or SOURCE_UNSPEC
            labels.append(Label(source, key, opt_str(lbl, "value", lf) or ""))
        kw["labels"] = tuple(labels)
        kw["description"] = opt_str(d, "description", field)
        if d.get("enableDefaultDeny") is not None:
            ef = f"{field}.enableDefaultDeny"
            edd = check_mapping(d["enableDefaultDeny"], ef, ("ingress", "egress"))
            kw["enable_default_deny_ingress"] = opt_bool(edd, "ingress", ef)
            kw["enable_default_deny_egress"] = opt_bool(edd, "egress", ef)
        if d.get("log") is not None:
            log = check_mapping(d["log"], f"{field}.log", ("value",))
            value = opt_str(log, "value", f"{field}.log") or ""
            if len(value) > 32 or any(unicodedata.category(c)[0] == "C" for c in value):
                raise PolicyError(
                    "log value must be at most 32 printable characters",
                    field=f"{field}.log.value",
                    value=value,
                )
            kw["log"] = value
        return cls(**kw)

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.endpoint_selector is not None:
            out["endpointSelector"] = self.endpoint_selector.to_manifest()
        if self.node_selector is not None:
            out["nodeSelector"] = self.node_selector.to_manifest()
        for name, _, _ in _SECTIONS:
            value = getattr(self, _snake(name))
            if value is not None:
                out[name] = [r.to_manifest() for r in value]
        if self.enable_default_deny_ingress is not None or self.enable_default_deny_egress is not None:
            edd: dict[str, bool] = {}
            if self.enable_default_deny_ingress is not None:
                edd["ingress"] = self.enable_default_deny_ingress
            if self.enable_default_deny_egress is not None:
                edd["egress"] = self.enable_default_deny_egress
            out["enableDefaultDeny"] = edd
        if self.labels:
            out["labels"] = [{"key": lbl.key, "value": lbl.value, "source": lbl.source} for lbl in self.labels]
        if self.description is not None:
            out["description"] = self.description
        if self.log is not None:
            out["log"] = {"value": self.log}
        return out

    def rules_for(self, direction: Direction, deny: bool) -> tuple[PeerRule, ...]:
        if direction == Direction.INGRESS:
            return (self.ingress_deny if deny else self.ingress) or ()
        return (self.egress_deny if deny else self.egress) or ()

    def has_direction(self, direction: Direction) -> bool:
        return bool(self.rules_for(direction, False) or self.rules_for(direction, True))

    def default_deny(self, direction: Direction) -> bool:
        """``enableDefaultDeny`` for ``direction``; omitted: true when the rule has rules there."""
        explicit = (
            self.enable_default_deny_ingress if direction == Direction.INGRESS else self.enable_default_deny_egress
        )
        if explicit is not None:
            return explicit
        return self.has_direction(direction)


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


_OBJECT_META_FIELDS = (
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)


def _metadata(
    data: Mapping[str, Any], namespaced: bool, *, dns1035: bool = False
) -> tuple[str, str, dict[str, str], dict[str, str]]:
    """``(name, namespace, labels, annotations)`` of an object's validated ``metadata``.

    A namespaced object without a namespace lands in ``default``, as ``kubectl apply``
    without ``-n`` does.
    """
    if data.get("metadata") is None:
        raise PolicyError("Required value: metadata", field="metadata", value=None)
    meta = check_mapping(data["metadata"], "metadata", _OBJECT_META_FIELDS)
    name = validate_name(meta.get("name"), "metadata.name", dns1035=dns1035)
    ns = ""
    if namespaced:
        ns_raw = meta.get("namespace") or "default"
        ns = validate_name(ns_raw, "metadata.namespace", label=True)
    elif meta.get("namespace"):
        raise PolicyError(
            "a cluster-scoped object has no namespace",
            field="metadata.namespace",
            value=meta.get("namespace"),
        )
    labels = normalize_label_mapping(meta.get("labels"), "metadata.labels")
    annotations = normalize_annotations(meta.get("annotations"), "metadata.annotations")
    return name, ns, labels, annotations


def _metadata_out(
    name: str, namespace: str, labels: Mapping[str, str], annotations: Mapping[str, str]
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


_TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec", "specs", "status")


@attrs.frozen(kw_only=True)
class CiliumNetworkPolicy:
    """A namespaced ``CiliumNetworkPolicy`` with ``spec`` and/or ``specs``."""

    KIND: ClassVar[str] = "CiliumNetworkPolicy"
    name: str
    namespace: str = "default"
    spec: Rule | None = None
    specs: tuple[Rule, ...] | None = None
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_sorted_map, hash=False)
    annotations: Mapping[str, str] = attrs.field(factory=dict, converter=_sorted_map, hash=False)

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> CiliumNetworkPolicy:
        return cls(**_parse_cilium_policy(data, namespaced=True))

    def to_manifest(self) -> dict[str, Any]:
        return _cilium_policy_out(self, self.namespace)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(r for _, r in _rule_paths(self.spec, self.specs))

    def rule_paths(self) -> list[tuple[str, Rule]]:
        """``(path, rule)`` pairs such as ``("specs[1]", rule)``."""
        return _rule_paths(self.spec, self.specs)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.KIND, self.namespace, self.name)


@attrs.frozen(kw_only=True)
class CiliumClusterwideNetworkPolicy:
    """A cluster-scoped ``CiliumClusterwideNetworkPolicy``."""

    KIND: ClassVar[str] = "CiliumClusterwideNetworkPolicy"
    name: str
    spec: Rule | None = None
    specs: tuple[Rule, ...] | None = None
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_sorted_map, hash=False)
    annotations: Mapping[str, str] = attrs.field(factory=dict, converter=_sorted_map, hash=False)

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> CiliumClusterwideNetworkPolicy:
        kw = _parse_cilium_policy(data, namespaced=False)
        kw.pop("namespace", None)
        return cls(**kw)

    def to_manifest(self) -> dict[str, Any]:
        return _cilium_policy_out(self, "")

    @property
    def namespace(self) -> str:
        return ""

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(r for _, r in _rule_paths(self.spec, self.specs))

    def rule_paths(self) -> list[tuple[str, Rule]]:
        return _rule_paths(self.spec, self.specs)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.KIND, "", self.name)


def _rule_paths(spec: Rule | None, specs: tuple[Rule, ...] | None) -> list[tuple[str, Rule]]:
    out: list[tuple[str, Rule]] = []
    if spec is not None:
        out.append(("spec", spec))
    out.extend((f"specs[{i}]", r) for i, r in enumerate(specs or ()))
    return out


def _parse_cilium_policy(data: Mapping[str, Any], namespaced: bool) -> dict[str, Any]:
    check_mapping(data, "", _TOP_LEVEL)
    name, ns, labels, annotations = _metadata(data, namespaced)
    if data.get("spec") is None and data.get("specs") is None:
        raise PolicyError("spec or specs must be provided", field="spec", value=None)
    spec = None
    if data.get("spec") is not None:
        spec = Rule.from_manifest(data["spec"], "spec", namespaced=namespaced)
    specs_raw = opt_list(data, "specs", "")
    specs = None
    if specs_raw is not None:
        specs = tuple(Rule.from_manifest(s, f"specs[{i}]", namespaced=namespaced) for i, s in enumerate(specs_raw))
    return {
        "name": name,
        "namespace": ns,
        "spec": spec,
        "specs": specs,
        "labels": labels,
        "annotations": annotations,
    }


def _cilium_policy_out(pol: CiliumNetworkPolicy | CiliumClusterwideNetworkPolicy, ns: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": "cilium.io/v2",
        "kind": pol.KIND,
        "metadata": _metadata_out(pol.name, ns, pol.labels, pol.annotations),
    }
    if pol.spec is not None:
        out["spec"] = pol.spec.to_manifest()
    if pol.specs is not None:
        out["specs"] = [r.to_manifest() for r in pol.specs]
    return out


# --------------------------------------------------------------------------------------
# Kubernetes NetworkPolicy
_K8S_CIDR_MSG = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"


def _k8s_cidr(value: Any, field: str) -> IPNetwork:
    if not isinstance(value, str) or "/" not in value or "%" in value:
        raise PolicyError(_K8S_CIDR_MSG, field=field, value=value)
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise PolicyError(_K8S_CIDR_MSG, field=field, value=value) from None


@attrs.frozen
class IPBlock:
    """A NetworkPolicy ``ipBlock``: ``cidr`` with ``except`` holes (strict subsets)."""

    cidr: str
    except_: tuple[str, ...] = ()

    @classmethod
    def from_manifest(cls, data: Any, field: str) -> IPBlock:
        """Parse and validate as the API server does (``ValidateIPBlock``)."""
        d = check_mapping(data, field, ("cidr", "except"))
        cidr = d.get("cidr")
        if cidr is None or cidr == "":
            raise PolicyError("Required value", field=f"{field}.cidr", value=cidr)
        net = _k8s_cidr(cidr, f"{field}.cidr")
        excepts = opt_list(d, "except", field) or []
        for i, e in enumerate(excepts):
            ef = f"{field}.except[{i}]"
            enet = _k8s_cidr(e, ef)
            if enet.version != net.version or enet.network_address not in net or enet.prefixlen <= net.prefixlen:
                raise PolicyError("must be a strict subset of `cidr`", field=ef, value=e)
        return cls(cidr, tuple(excepts))

    def to_manifest(self) -> dict[str, Any]:
        """The block as written in a manifest."""
        out: dict[str, Any] = {"cidr": self.cidr}
        if self.except_:
            out["except"] = list(self.except_)
        return out


@attrs.frozen
class NetworkPolicyPeer:
    """One ``from``/``to`` peer: pod and/or namespace selector, or an ``ipBlock``."""

    pod_selector: EndpointSelector | None = None
    namespace_selector: EndpointSelector | None = None
    ip_block: IPBlock | None = None

    @classmethod
    def from_manifest(cls, data: Any, field: str) -> NetworkPolicyPeer:
        """Parse and validate as the API server does (``ValidateNetworkPolicyPeer``)."""
        d = check_mapping(data, field, ("podSelector", "namespaceSelector", "ipBlock"))
        pod = nss = ipb = None
        if d.get("podSelector") is not None:
            pod = EndpointSelector.from_manifest(d["podSelector"], f"{field}.podSelector")
        if d.get("namespaceSelector") is not None:
            nss = EndpointSelector.from_manifest(d["namespaceSelector"], f"{field}.namespaceSelector")
        if d.get("ipBlock") is not None:
            ipb = IPBlock.from_manifest(d["ipBlock"], f"{field}.ipBlock")
        if ipb is None and pod is None and nss is None:
            raise PolicyError("Required value: must specify a peer", field=field, value=dict(d))
        if ipb is not None and (pod is not None or nss is not None):
            raise PolicyError(
                "Forbidden: may not specify both ipBlock and another peer",
                field=field,
                value=dict(d),
            )
        return cls(pod, nss, ipb)

    def to_manifest(self) -> dict[str, Any]:
        """The peer as written in a manifest."""
        out: dict[str, Any] = {}
        if self.pod_selector is not None:
            out["podSelector"] = self.pod_selector.to_manifest()
        if self.namespace_selector is not None:
            out["namespaceSelector"] = self.namespace_selector.to_manifest()
        if self.ip_block is not None:
            out["ipBlock"] = self.ip_block.to_manifest()
        return out


def _k8s_port_name_error(name: str) -> str | None:
    """Why ``name`` is not a valid Kubernetes port name (``IsValidPortName``), or None."""
    if len(name) > 15:
        return "must be no more than 15 characters"
    if not re.fullmatch(r"[-a-z0-9]+", name):
        return "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
    if not re.search("[a-z]", name):
        return "must contain at least one letter (a-z)"
    if "--" in name:
        return "must not contain consecutive hyphens"
    if name.startswith("-") or name.endswith("-"):
        return "must not begin or end with a hyphen"
    return None


@attrs.frozen
class NetworkPolicyPort:
    """One ``ports`` item: protocol (default TCP), port number or name, ``endPort``."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None

    @classmethod
    def from_manifest(cls, data: Any, field: str) -> NetworkPolicyPort:
        """Parse and validate as the API server does (``ValidateNetworkPolicyPort``)."""
        d = check_mapping(data, field, ("protocol", "port", "endPort"))
        proto = d.get("protocol")
        if proto is None:
            proto = "TCP"
        if proto not in ("TCP", "UDP", "SCTP"):
            raise PolicyError(
                'Unsupported value: supported values: "SCTP", "TCP", "UDP"',
                field=f"{field}.protocol",
                value=proto,
            )
        port = d.get("port")
        pf = f"{field}.port"
        if isinstance(port, bool) or not isinstance(port, int | str | None):
            raise PolicyError("must be of type integer or string", field=pf, value=port)
        if isinstance(port, int) and not 1 <= port <= 65535:
            raise PolicyError("must be between 1 and 65535, inclusive", field=pf, value=port)
        if isinstance(port, str):
            why = _k8s_port_name_error(port)
            if why is not None:
                raise PolicyError(why, field=pf, value=port)
        end = d.get("endPort")
        ef = f"{field}.endPort"
        if end is not None:
            if isinstance(end, bool) or not isinstance(end, int):
                raise PolicyError("must be of type integer", field=ef, value=end)
            if port is None:
                raise PolicyError(
                    "Required value: must be specified when `endPort` is specified",
                    field=pf,
                    value=None,
                )
            if isinstance(port, str):
                raise PolicyError("may not be specified when `port` is non-numeric", field=ef, value=end)
            if end < port:
                raise PolicyError("must be greater than or equal to `port`", field=ef, value=end)
            if end > 65535:
                raise PolicyError("must be between 1 and 65535, inclusive", field=ef, value=end)
        return cls(proto, port, end)

    def to_manifest(self) -> dict[str, Any]:
        """The port as written in a manifest."""
        out: dict[str, Any] = {"protocol": self.protocol}
        if self.port is not None:
            out["port"] = self.port
        if self.end_port is not None:
            out["endPort"] = self.end_port
        return out


@attrs.frozen
class NetworkPolicyRule:
    """One ingress/egress item; ``peers`` None means "all peers", ``ports`` None "all ports"."""

    peers: tuple[NetworkPolicyPeer, ...] | None = None
    ports: tuple[NetworkPolicyPort, ...] | None = None

    @classmethod
    def from_manifest(cls, data: Any, field: str, direction: Direction) -> NetworkPolicyRule:
        """Parse one rule; an empty ``from``/``to`` or ``ports`` list means "all", as absent."""
        peer_key = "from" if direction == Direction.INGRESS else "to"
        d = check_mapping(data, field, (peer_key, "ports"))
        peers = parse_list(d, peer_key, field, NetworkPolicyPeer.from_manifest)
        ports = parse_list(d, "ports", field, NetworkPolicyPort.from_manifest)
        return cls(peers or None, ports or None)

    def to_manifest(self, direction: Direction) -> dict[str, Any]:
        """The rule as written in a manifest."""
        out: dict[str, Any] = {}
        if self.peers is not None:
            out["from" if direction == Direction.INGRESS else "to"] = [p.to_manifest() for p in self.peers]
        if self.ports is not None:
            out["ports"] = [p.to_manifest() for p in self.ports]
        return out


@attrs.frozen(kw_only=True)
class NetworkPolicy:
    """A Kubernetes ``networking.k8s.io/v1`` NetworkPolicy."""

    KIND: ClassVar[str] = "NetworkPolicy"
    name: str
    namespace: str = "default"
    pod_selector: EndpointSelector = attrs.field(factory=EndpointSelector)
    ingress: tuple[NetworkPolicyRule, ...] | None = None
    egress: tuple[NetworkPolicyRule, ...] | None = None
    policy_types: tuple[str, ...] | None = None
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_sorted_map, hash=False)
    annotations: Mapping[str, str] = attrs.field(factory=dict, converter=_sorted_map, hash=False)

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> NetworkPolicy:
        """Parse and validate as the API server does."""
        check_mapping(data, "", ("apiVersion", "kind", "metadata", "spec", "status"))
        name, ns, labels, annotations = _metadata(data, True)
        spec = check_mapping(data.get("spec"), "spec", ("podSelector", "ingress", "egress", "policyTypes"))
        if spec.get("podSelector") is None:
            raise PolicyError(
                "Required value: podSelector ({} selects every pod of the namespace)",
                field="spec.podSelector",
                value=None,
            )
        pod = EndpointSelector.from_manifest(spec["podSelector"], "spec.podSelector", sources=False)
        ing = opt_list(spec, "ingress", "spec")
        egr = opt_list(spec, "egress", "spec")
        ingress = None
        if ing is not None:
            ingress = tuple(
                NetworkPolicyRule.from_manifest(r, f"spec.ingress[{i}]", Direction.INGRESS) for i, r in enumerate(ing)
            )
        egress = None
        if egr is not None:
            egress = tuple(
                NetworkPolicyRule.from_manifest(r, f"spec.egress[{i}]", Direction.EGRESS) for i, r in enumerate(egr)
            )
        types = opt_list(spec, "policyTypes", "spec")
        for i, t in enumerate(types or ()):
            if t not in ("Ingress", "Egress"):
                raise PolicyError(
                    'Unsupported value: supported values: "Ingress", "Egress"',
                    field=f"spec.policyTypes[{i}]",
                    value=t,
                )
        return cls(
            name=name,
            namespace=ns,
            pod_selector=pod,
            ingress=ingress,
            egress=egress,
            policy_types=None if types is None else tuple(types),
            labels=labels,
            annotations=annotations,
        )

    def to_manifest(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"podSelector": self.pod_selector.to_manifest()}
        if self.ingress is not None:
            spec["ingress"] = [r.to_manifest(Direction.INGRESS) for r in self.ingress]
        if self.egress is not None:
            spec["egress"] = [r.to_manifest(Direction.EGRESS) for r in self.egress]
        if self.policy_types is not None:
            spec["policyTypes"] = list(self.policy_types)
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _metadata_out(self.name, self.namespace, self.labels, self.annotations),
            "spec": spec,
        }

    def effective_types(self) -> tuple[Direction, ...]:
        """Directions the policy enforces in Cilium (default deny plus its allows).

        The API server defaults an empty ``policyTypes`` to ``Ingress`` plus ``Egress``
        when ``egress`` has rules. Cilium's ``ParseNetworkPolicy`` (pkg/k8s/network_policy.go)
        then enforces every direction that has rules *and* the listed types: a direction
        with rules is enforced even when ``policyTypes`` leaves it out.
        """
        types = self.policy_types
        if not types:
            types = ("Ingress", "Egress") if self.egress else ("Ingress",)
        out = []
        if self.ingress or "Ingress" in types:
            out.append(Direction.INGRESS)
        if self.egress or "Egress" in types:
            out.append(Direction.EGRESS)
        return tuple(out)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.KIND, self.namespace, self.name)


# --------------------------------------------------------------------------------------
# cluster objects
@attrs.frozen
class Namespace:
    """A Kubernetes namespace and its labels (which pods inherit as namespace labels)."""

    KIND: ClassVar[str] = "Namespace"
    name: str
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_sorted_map, hash=False)

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> Namespace:
        check_mapping(data, "", ("apiVersion", "kind", "metadata", "spec", "status"))
        name, _, labels, _ = _metadata(data, False)
        validate_name(name, "metadata.name", label=True)
        return cls(name, labels)

    def to_manifest(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name}
        if self.labels:
            meta["labels"] = dict(self.labels)
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}

    def effective_labels(self) -> dict[str, str]:
        """Labels including ``kubernetes.io/metadata.name`` that the API server adds."""
        return {**self.labels, "kubernetes.io/metadata.name": self.name}


@attrs.frozen
class ContainerPort:
    """A container port: optional ``name``, number and protocol."""

    name: str | None
    port: int
    protocol: str = "TCP"

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise PolicyError("containerPort must be within 1..65535", value=self.port)
        if self.protocol not in ("TCP", "UDP", "SCTP"):
            raise PolicyError("protocol must be TCP, UDP or SCTP", value=self.protocol)
        if self.name is not None and (len(self.name) > 15 or not _PORT_NAME_RE.match(self.name)):
            raise PolicyError("invalid port name", value=self.name)


def _ip_tuple(values: Iterable[Any]) -> tuple[IPAddress, ...]:
    if isinstance(values, str):
        raise TypeError("addresses are a list, not a str")
    out: list[IPAddress] = []
    for i, v in enumerate(values):
        if isinstance(v, ipaddress.IPv4Address | ipaddress.IPv6Address):
            out.append(v)
        elif isinstance(v, str):
            out.append(ipaddress.ip_address(check_ip(v, f"ips[{i}]")))
        else:
            raise TypeError(f"ips[{i}] is an address str, not {type(v).__name__}")
    return tuple(out)


@attrs.frozen(kw_only=True)
class Endpoint:
    """A pod (Cilium endpoint): identity-relevant labels, addresses and named ports."""

    KIND: ClassVar[str] = "Pod"
    namespace: str
    name: str
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_sorted_map, hash=False)
    ips: tuple[IPAddress, ...] = attrs.field(default=(), converter=_ip_tuple)
    ports: tuple[ContainerPort, ...] = attrs.field(default=(), converter=_container_ports)
    service_account: str = "default"
    node: str | None = None
    host_network: bool = False
    #: The controller chain, nearest first: ``(("ReplicaSet", "web-5d9f"), ("Deployment", "web"))``.
    owners: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> Endpoint:
        """A Pod manifest, with the API server's types and ranges for the fields used."""
        check_mapping(data, "", ("apiVersion", "kind", "metadata", "spec", "status"))
        name, ns, labels, _ = _metadata(data, True)
        spec = sub_object(data, "spec", "")
        ports: list[ContainerPort] = []
        for ci, c in enumerate(opt_list(spec, "containers", "spec") or []):
            cf = f"spec.containers[{ci}]"
            if not isinstance(c, Mapping):
                raise PolicyError("must be of type object", field=cf, value=c)
            for pi, p in enumerate(opt_list(c, "ports", cf) or []):
                pf = f"{cf}.ports[{pi}]"
                if not isinstance(p, Mapping):
                    raise PolicyError("must be of type object", field=pf, value=p)
                num = opt_int(p, "containerPort", pf, 1, 65535)
                if num is None:
                    raise PolicyError("Required value: containerPort", field=f"{pf}.containerPort", value=None)
                pname = opt_str(p, "name", pf) or None
                proto = opt_str(p, "protocol", pf) or "TCP"
                try:
                    ports.append(ContainerPort(pname, num, proto))
                except PolicyError as exc:
                    sub = "name" if exc.value == pname else "protocol"
                    raise exc.located(field=f"{pf}.{sub}") from None
        status = sub_object(data, "status", "")
        ips: list[str] = []
        for i, item in enumerate(opt_list(status, "podIPs", "status") or []):
            if not isinstance(item, Mapping):
                raise PolicyError("must be of type object", field=f"status.podIPs[{i}]", value=item)
            ip = check_ip(item.get("ip"), f"status.podIPs[{i}].ip")
            if ip in ips:
                raise PolicyError("Duplicate value", field=f"status.podIPs[{i}].ip", value=ip)
            ips.append(ip)
        pod_ip = opt_str(status, "podIP", "status")
        if pod_ip:
            pod_ip = check_ip(pod_ip, "status.podIP")
            if pod_ip not in ips:
                ips.insert(0, pod_ip)
        one_address_per_family(ips, "status.podIPs")
        sa = opt_str(spec, "serviceAccountName", "spec") or opt_str(spec, "serviceAccount", "spec") or "default"
        validate_name(sa, "spec.serviceAccountName")
        node = opt_str(spec, "nodeName", "spec") or None
        return cls(
            namespace=ns,
            name=name,
            labels=labels,
            ips=tuple(ips),
            ports=tuple(ports),
            service_account=sa,
            node=node,
            host_network=bool(opt_bool(spec, "hostNetwork", "spec")),
            owners=controller_owner(data),
        )

    def to_manifest(self) -> dict[str, Any]:
        container: dict[str, Any] = {"name": "app", "image": "registry.k8s.io/pause:3.9"}
        if self.ports:
            container["ports"] = [
                {
                    **({"name": p.name} if p.name else {}),
                    "containerPort": p.port,
                    "protocol": p.protocol,
                }
                for p in self.ports
            ]
        spec: dict[str, Any] = {"containers": [container]}
        if self.service_account != "default":
            spec["serviceAccountName"] = self.service_account
        if self.node:
            spec["nodeName"] = self.node
        if self.host_network:
            spec["hostNetwork"] = True
        out: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": _metadata_out(self.name, self.namespace, self.labels, {}),
            "spec": spec,
        }
        if self.owners:
            kind, name = self.owners[0]
            out["metadata"]["ownerReferences"] = [
                {"apiVersion": OWNER_API_VERSIONS.get(kind, "v1"), "kind": kind, "name": name, "controller": True}
            ]
        if self.ips:
            out["status"] = {
                "podIP": str(self.ips[0]),
                "podIPs": [{"ip": str(ip)} for ip in self.ips],
            }
        return out

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def named_port(self, name: str, protocol: str | None = None) -> int | None:
        for p in self.ports:
            if p.name == name and (protocol is None or p.protocol == protocol):
                return p.port
        return None


OWNER_API_VERSIONS = {
    "Deployment": "apps/v1",
    "ReplicaSet": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
}


def controller_owner(data: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The object's controller from ``metadata.ownerReferences`` (``controller: true``, else the first)."""
    meta = data.get("metadata")
    refs = meta.get("ownerReferences") if isinstance(meta, Mapping) else None
    if refs is None:
        return ()
    if not isinstance(refs, list):
        raise PolicyError("must be of type array", field="metadata.ownerReferences", value=refs)
    chosen: tuple[str, str] | None = None
    for i, ref in enumerate(refs):
        kind = ref.get("kind") if isinstance(ref, Mapping) else None
        name = ref.get("name") if isinstance(ref, Mapping) else None
        if not isinstance(kind, str) or not kind or not isinstance(name, str) or not name:
            raise PolicyError(
                "an owner reference needs kind and name", field=f"metadata.ownerReferences[{i}]", value=ref
            )
        if chosen is None or ref.get("controller") is True:
            chosen = (kind, name)
            if ref.get("controller") is True:
                break
    return (chosen,) if chosen is not None else ()


def check_ip(value: Any, field: str) -> str:
    """An IP address given as a string, as the API server and Go's ``net.ParseIP`` take it:
    no integers, no IPv6 zone (``fe80::1%eth0``)."""
    if not isinstance(value, str):
        raise PolicyError("must be of type string (an IP address)", field=field, value=value)
    if "%" in value:
        raise PolicyError("must be a valid IP address (IPv6 zones are not allowed)", field=field, value=value)
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise PolicyError("must be a valid IP address", field=field, value=value) from None


def one_address_per_family(ips: Sequence[str], field: str) -> None:
    versions = [ipaddress.ip_address(ip).version for ip in ips]
    if len(versions) != len(set(versions)):
        raise PolicyError("may specify no more than one IP for each IP family", field=field, value=list(ips))


@attrs.frozen(kw_only=True)
class Node:
    """A Kubernetes node: labels and addresses (its IPs map to host or remote-node)."""

    KIND: ClassVar[str] = "Node"
    name: str
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_sorted_map, hash=False)
    ips: tuple[IPAddress, ...] = attrs.field(default=(), converter=_ip_tuple)

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> Node:
        """A Node manifest; its ``InternalIP``/``ExternalIP`` addresses are kept."""
        check_mapping(data, "", ("apiVersion", "kind", "metadata", "spec", "status"))
        name, _, labels, _ = _metadata(data, False)
        sub_object(data, "spec", "")
        status = sub_object(data, "status", "")
        ips: list[str] = []
        for i, addr in enumerate(opt_list(status, "addresses", "status") or []):
            af = f"status.addresses[{i}]"
            if not isinstance(addr, Mapping):
                raise PolicyError("must be of type object", field=af, value=addr)
            kind = opt_str(addr, "type", af)
            address = opt_str(addr, "address", af)
            if kind in ("InternalIP", "ExternalIP"):
                ip = check_ip(address, f"{af}.address")
                if ip not in ips:
                    ips.append(ip)
        return cls(name=name, labels=labels, ips=tuple(ips))

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": _metadata_out(self.name, "", self.labels, {}),
        }
        if self.ips:
            out["status"] = {"addresses": [{"type": "InternalIP", "address": str(ip)} for ip in self.ips]}
        return out


def _network_tuple(nets: Iterable[IPNetwork | str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(n) if isinstance(n, str) else n for n in nets)


@attrs.frozen(kw_only=True)
class CiliumCIDRGroup:
    """A ``CiliumCIDRGroup`` (``cilium.io/v2alpha1`` or ``v2``, cluster-scoped): a named,
    labelled list of CIDRs that ``fromCIDRSet``/``toCIDRSet`` select by ``cidrGroupRef``
    (the name) or ``cidrGroupSelector`` (the labels). Resolution is in ``_cidrgroup``."""

    KIND: ClassVar[str] = "CiliumCIDRGroup"
    name: str
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_sorted_map, hash=False)
    external_cidrs: tuple[IPNetwork, ...] = attrs.field(default=(), converter=_network_tuple)
    api_version: str = "cilium.io/v2"

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> CiliumCIDRGroup:
        """Parse a group as the CRD schema does: ``spec.externalCIDRs`` is required and holds
        CIDRs (address/prefix length); the object is cluster-scoped."""
        check_mapping(data, "", ("apiVersion", "kind", "metadata", "spec", "status"))
        name, _, labels, _ = _metadata(data, False)
        spec = data.get("spec")
        if spec is None:
            raise PolicyError("Required value", field="spec", value=None)
        spec = check_mapping(spec, "spec", ("externalCIDRs",))
        raw = opt_list(spec, "externalCIDRs", "spec")
        if raw is None:
            raise PolicyError("Required value", field="spec.externalCIDRs", value=None)
        cidrs = tuple(parse_cidr(c, f"spec.externalCIDRs[{i}]") for i, c in enumerate(raw))
        return cls(name=name, labels=labels, external_cidrs=cidrs, api_version=str(data.get("apiVersion")))

    def to_manifest(self) -> dict[str, Any]:
        """The manifest ``kubectl apply`` accepts (in the API version it was read in)."""
        return {
            "apiVersion": self.api_version,
            "kind": self.KIND,
            "metadata": _metadata_out(self.name, "", self.labels, {}),
            "spec": {"externalCIDRs": [str(c) for c in self.external_cidrs]},
        }


_SERVICE_SPEC_FIELDS = (
    "allocateLoadBalancerNodePorts",
    "clusterIP",
    "clusterIPs",
    "externalIPs",
    "externalName",
    "externalTrafficPolicy",
    "healthCheckNodePort",
    "internalTrafficPolicy",
    "ipFamilies",
    "ipFamilyPolicy",
    "loadBalancerClass",
    "loadBalancerIP",
    "loadBalancerSourceRanges",
    "ports",
    "publishNotReadyAddresses",
    "selector",
    "sessionAffinity",
    "sessionAffinityConfig",
    "trafficDistribution",
    "type",
)
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
_L4_PROTOCOLS = ("TCP", "UDP", "SCTP")


@attrs.frozen
class ServicePort:
    """One ``spec.ports[]`` item of a Service.

    ``target_port`` is a number or the name of a container port; ``None`` means "the same
    number as ``port``", as the API server defaults it.
    """

    port: int
    target_port: int | str | None = None
    protocol: str = "TCP"
    name: str | None = None

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise PolicyError("port must be within 1..65535", field="port", value=self.port)
        if self.protocol not in _L4_PROTOCOLS:
            raise PolicyError("protocol must be TCP, UDP or SCTP", field="protocol", value=self.protocol)
        tp = self.target_port
        if isinstance(tp, int) and not isinstance(tp, bool):
            if not 1 <= tp <= 65535:
                raise PolicyError("targetPort must be within 1..65535", field="targetPort", value=tp)
        elif isinstance(tp, str):
            if not is_service_name(tp):
                raise PolicyError("targetPort must be a number or an IANA_SVC_NAME", field="targetPort", value=tp)
        elif tp is not None:
            raise PolicyError("targetPort must be a number or a port name", field="targetPort", value=tp)
        if self.name is not None and (len(self.name) > 63 or not _DNS1123_LABEL.match(self.name)):
            raise PolicyError(f"invalid port name: {_LABEL_MSG}", field="name", value=self.name)

    @property
    def target(self) -> int | str:
        """The target port with the API server's default applied (``port``)."""
        return self.port if self.target_port is None else self.target_port

    @classmethod
    def from_manifest(cls, data: Any, field: str) -> ServicePort:
        """One ``spec.ports[]`` item, with the API server's types and ranges."""
        if not isinstance(data, Mapping):
            raise PolicyError("must be of type object", field=field, value=data)
        item = check_mapping(data, field, ("name", "port", "targetPort", "protocol", "nodePort", "appProtocol"))
        port = opt_int(item, "port", field, 1, 65535)
        if port is None:
            raise PolicyError("Required value: port", field=f"{field}.port", value=None)
        target: int | str | None = item.get("targetPort")
        if isinstance(target, str):
            if not is_service_name(target):
                raise PolicyError(
                    "must be a port number or an IANA service name (a letter, at most 15 characters)",
                    field=f"{field}.targetPort",
                    value=target,
                )
        else:
            target = opt_int(item, "targetPort", field, 1, 65535)
        proto = opt_str(item, "protocol", field) or "TCP"
        if proto not in _L4_PROTOCOLS:
            raise PolicyError(
                'Unsupported value: supported values: "SCTP", "TCP", "UDP"', field=f"{field}.protocol", value=proto
            )
        try:
            return cls(port, target, proto, opt_str(item, "name", field) or None)
        except PolicyError as exc:
            raise PolicyError(exc.reason, field=f"{field}.{exc.field}", value=exc.value) from None

    def to_manifest(self) -> dict[str, Any]:
        item: dict[str, Any] = {}
        if self.name:
            item["name"] = self.name
        item["port"] = self.port
        if self.target_port is not None:
            item["targetPort"] = self.target_port
        item["protocol"] = self.protocol
        return item


@attrs.frozen(kw_only=True)
class Service:
    """A Kubernetes Service: its ClusterIP frontends, ports and how backends are found.

    ``selector`` selects the backend pods (``None``: a selector-less Service whose backends
    come from EndpointSlices, or from ``backend_ips``); ``cluster_ips`` are the frontends
    (one per family; empty with ``headless``). ``session_affinity`` is ``"None"`` or
    ``"ClientIP"``; ``internal_traffic_policy`` ``"Cluster"`` or ``"Local"``.
    """

    KIND: ClassVar[str] = "Service"
    name: str
    namespace: str = "default"
    selector: Mapping[str, str] | None = attrs.field(default=None, hash=False)
    ports: tuple[ServicePort, ...] = ()
    cluster_ips: tuple[IPAddress, ...] = attrs.field(default=(), converter=_ip_tuple)
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_sorted_map, hash=False)
    backend_ips: tuple[IPAddress, ...] = attrs.field(default=(), converter=_ip_tuple)
    type: str = "ClusterIP"
    headless: bool = False
    session_affinity: str = "None"
    session_affinity_timeout: int = 10800
    internal_traffic_policy: str = "Cluster"

    def __attrs_post_init__(self) -> None:
        def fail(reason: str, field: str, value: Any) -> None:
            raise PolicyError(
                reason, kind="Service", namespace=self.namespace, name=self.name, field=field, value=value
            )

        if self.type not in _SERVICE_TYPES:
            fail("type must be ClusterIP, NodePort or LoadBalancer", "spec.type", self.type)
        if self.session_affinity not in ("None", "ClientIP"):
            fail("sessionAffinity must be None or ClientIP", "spec.sessionAffinity", self.session_affinity)
        if not 1 <= self.session_affinity_timeout <= 86400:
            fail(
                "timeoutSeconds must be within 1..86400",
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                self.session_affinity_timeout,
            )
        if self.internal_traffic_policy not in ("Cluster", "Local"):
            fail(
                "internalTrafficPolicy must be Cluster or Local",
                "spec.internalTrafficPolicy",
                self.internal_traffic_policy,
            )
        if self.headless and self.cluster_ips:
            fail('a headless Service (clusterIP "None") has no cluster IPs', "spec.clusterIPs", self.cluster_ips)
        if self.headless and self.type != "ClusterIP":
            fail('clusterIP "None" requires type ClusterIP', "spec.type", self.type)
        if len(self.cluster_ips) > 2 or len({ip.version for ip in self.cluster_ips}) != len(self.cluster_ips):
            fail(
                "at most one cluster IP per family (IPv4, IPv6)", "spec.clusterIPs", [str(i) for i in self.cluster_ips]
            )
        if len(self.ports) > 1:
            for i, p in enumerate(self.ports):
                if not p.name:
                    fail("Required value: a name when a Service has more than one port", f"spec.ports[{i}].name", None)
        seen_names: set[str] = set()
        seen_ports: set[tuple[int, str]] = set()
        for i, p in enumerate(self.ports):
            if p.name:
                if p.name in seen_names:
                    fail("Duplicate value: port name", f"spec.ports[{i}].name", p.name)
                seen_names.add(p.name)
            if (p.port, p.protocol) in seen_ports:
                fail("Duplicate value: port and protocol", f"spec.ports[{i}]", p.to_manifest())
            seen_ports.add((p.port, p.protocol))

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> Service:
        """A Service manifest, with the API server's types and ranges for the fields used."""
        check_mapping(data, "", ("apiVersion", "kind", "metadata", "spec", "status"))
        name, ns, labels, _ = _metadata(data, True, dns1035=True)
        spec = check_mapping(sub_object(data, "spec", ""), "spec", _SERVICE_SPEC_FIELDS)
        sel = spec.get("selector")
        selector = normalize_label_mapping(sel, "spec.selector") if sel is not None else None
        raw_ports = opt_list(spec, "ports", "spec") or []
        ports = [ServicePort.from_manifest(p, f"spec.ports[{i}]") for i, p in enumerate(raw_ports)]
        cluster_ip = opt_str(spec, "clusterIP", "spec")
        listed = opt_list(spec, "clusterIPs", "spec")
        ips: list[Any] = list(listed) if listed else ([cluster_ip] if cluster_ip else [])
        if cluster_ip and listed and listed[0] != cluster_ip:
            raise PolicyError("clusterIPs[0] must equal clusterIP", field="spec.clusterIPs[0]", value=listed[0])
        ips = [ip for ip in ips if ip != ""]  # "" asks the API server to allocate one
        headless = ips == ["None"]
        if headless:
            ips = []
        ips = [check_ip(ip, f"spec.clusterIPs[{i}]") for i, ip in enumerate(ips)]
        one_address_per_family(ips, "spec.clusterIPs")
        families = spec.get("ipFamilies")
        if families is not None:
            if not isinstance(families, list) or any(f not in ("IPv4", "IPv6") for f in families):
                raise PolicyError("ipFamilies must list IPv4 and/or IPv6", field="spec.ipFamilies", value=families)
            for i, ip in enumerate(ips):
                if i < len(families) and f"IPv{ipaddress.ip_address(ip).version}" != families[i]:
                    raise PolicyError(
                        f"clusterIPs[{i}] is not of family {families[i]}", field=f"spec.clusterIPs[{i}]", value=ip
                    )
        affinity_cfg = spec.get("sessionAffinityConfig") or {}
        client_ip = check_mapping(affinity_cfg, "spec.sessionAffinityConfig", ("clientIP",)).get("clientIP") or {}
        timeout = check_mapping(client_ip, "spec.sessionAffinityConfig.clientIP", ("timeoutSeconds",)).get(
            "timeoutSeconds", 10800
        )
        if isinstance(timeout, bool) or not isinstance(timeout, int):
            raise PolicyError(
                "timeoutSeconds must be an integer",
                field="spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                value=timeout,
            )
        return cls(
            name=name,
            namespace=ns,
            selector=selector,
            ports=tuple(ports),
            cluster_ips=tuple(ips),
            labels=labels,
            type=spec.get("type") or "ClusterIP",
            headless=headless,
            session_affinity=spec.get("sessionAffinity") or "None",
            session_affinity_timeout=timeout,
            internal_traffic_policy=spec.get("internalTrafficPolicy") or "Cluster",
        )

    def to_manifest(self) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if self.type != "ClusterIP":
            spec["type"] = self.type
        if self.selector is not None:
            spec["selector"] = dict(self.selector)
        if self.ports:
            spec["ports"] = [p.to_manifest() for p in self.ports]
        if self.headless:
            spec["clusterIP"] = "None"
            spec["clusterIPs"] = ["None"]
        elif self.cluster_ips:
            spec["clusterIP"] = str(self.cluster_ips[0])
            spec["clusterIPs"] = [str(ip) for ip in self.cluster_ips]
            spec["ipFamilies"] = [f"IPv{ip.version}" for ip in self.cluster_ips]
        if self.session_affinity != "None":
            spec["sessionAffinity"] = self.session_affinity
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": self.session_affinity_timeout}}
        if self.internal_traffic_policy != "Cluster":
            spec["internalTrafficPolicy"] = self.internal_traffic_policy
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata_out(self.name, self.namespace, self.labels, {}),
            "spec": spec,
        }

    @property
    def ref(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    def selector_labels(self) -> LabelSet | None:
        return None if self.selector is None else LabelSet.from_mapping(self.selector)


SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@attrs.frozen
class EndpointConditions:
    """``endpoints[].conditions`` of an EndpointSlice; ``None`` is "not set"."""

    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None

    @property
    def is_ready(self) -> bool:
        return self.ready is None or self.ready

    @property
    def is_serving(self) -> bool:
        return self.is_ready if self.serving is None else self.serving

    @property
    def is_terminating(self) -> bool:
        return bool(self.terminating)

    def to_manifest(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (("ready", self.ready), ("serving", self.serving), ("terminating", self.terminating))
            if v is not None
        }


@attrs.frozen(kw_only=True)
class SliceEndpoint:
    """One ``endpoints[]`` item of an EndpointSlice."""

    addresses: tuple[IPAddress, ...] = attrs.field(converter=_ip_tuple)
    conditions: EndpointConditions = EndpointConditions()
    node_name: str | None = None
    target_ref: tuple[str, str] | None = None  # (namespace, pod name)

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"addresses": [str(a) for a in self.addresses]}
        cond = self.conditions.to_manifest()
        if cond:
            out["conditions"] = cond
        if self.node_name:
            out["nodeName"] = self.node_name
        if self.target_ref is not None:
            out["targetRef"] = {"kind": "Pod", "namespace": self.target_ref[0], "name": self.target_ref[1]}
        return out


@attrs.frozen
class SlicePort:
    """One ``ports[]`` item of an EndpointSlice (``name`` ``""`` matches an unnamed Service port)."""

    name: str = ""
    port: int | None = None
    protocol: str = "TCP"

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        if self.port is not None:
            out["port"] = self.port
        out["protocol"] = self.protocol
        return out


_SLICE_ENDPOINT_FIELDS = (
    "addresses",
    "conditions",
    "hostname",
    "targetRef",
    "nodeName",
    "zone",
    "hints",
    "deprecatedTopology",
)


@attrs.frozen(kw_only=True)
class EndpointSlice:
    """A ``discovery.k8s.io/v1`` EndpointSlice: backends of the Service named by its
    ``kubernetes.io/service-name`` label (how selector-less Services get backends)."""

    KIND: ClassVar[str] = "EndpointSlice"
    name: str
    namespace: str = "default"
    address_type: str = "IPv4"
    endpoints: tuple[SliceEndpoint, ...] = ()
    ports: tuple[SlicePort, ...] = ()
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_sorted_map, hash=False)

    @property
    def service_name(self) -> str | None:
        """The Service this slice belongs to, or None without the service-name label."""
        return self.labels.get(SERVICE_NAME_LABEL)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> EndpointSlice:
        check_mapping(data, "", ("apiVersion", "kind", "metadata", "addressType", "endpoints", "ports"))
        name, ns, labels, _ = _metadata(data, True)
        atype = data.get("addressType")
        if atype not in ("IPv4", "IPv6", "FQDN"):
            raise PolicyError("addressType must be IPv4, IPv6 or FQDN", field="addressType", value=atype)
        raw_eps = data.get("endpoints") or []
        if not isinstance(raw_eps, list):
            raise PolicyError("must be of type array", field="endpoints", value=raw_eps)
        endpoints = []
        for i, raw in enumerate(raw_eps):
            f = f"endpoints[{i}]"
            item = check_mapping(raw, f, _SLICE_ENDPOINT_FIELDS)
            addrs = item.get("addresses")
            if not isinstance(addrs, list) or not 1 <= len(addrs) <= 100:
                raise PolicyError("addresses must list 1 to 100 addresses", field=f"{f}.addresses", value=addrs)
            if atype == "FQDN":
                continue  # Cilium load-balances only to IPv4 and IPv6 slices
            parsed = []
            for j, addr in enumerate(addrs):
                text = check_ip(addr, f"{f}.addresses[{j}]")
                if f"IPv{ipaddress.ip_address(text).version}" != atype:
                    raise PolicyError(f"address is not {atype}", field=f"{f}.addresses[{j}]", value=addr)
                parsed.append(text)
            cond_raw = check_mapping(
                item.get("conditions") or {}, f"{f}.conditions", ("ready", "serving", "terminating")
            )
            conds = {}
            for key in ("ready", "serving", "terminating"):
                val = cond_raw.get(key)
                if val is not None and not isinstance(val, bool):
                    raise PolicyError("must be a boolean", field=f"{f}.conditions.{key}", value=val)
                conds[key] = val
            ref = item.get("targetRef")
            target = None
            if isinstance(ref, Mapping) and ref.get("kind", "Pod") == "Pod" and ref.get("name"):
                target = (str(ref.get("namespace") or ns), str(ref["name"]))
            node = item.get("nodeName")
            endpoints.append(
                SliceEndpoint(
                    addresses=tuple(parsed),
                    conditions=EndpointConditions(**conds),
                    node_name=str(node) if node else None,
                    target_ref=target,
                )
            )
        raw_ports = data.get("ports") or []
        if not isinstance(raw_ports, list):
            raise PolicyError("must be of type array", field="ports", value=raw_ports)
        ports = []
        for i, raw in enumerate(raw_ports):
            f = f"ports[{i}]"
            item = check_mapping(raw, f, ("name", "port", "protocol", "appProtocol"))
            num = item.get("port")
            if num is not None and (isinstance(num, bool) or not isinstance(num, int) or not 0 <= num <= 65535):
                raise PolicyError("port must be an integer within 0..65535", field=f"{f}.port", value=num)
            proto = item.get("protocol") or "TCP"
            if proto not in _L4_PROTOCOLS:
                raise PolicyError("protocol must be TCP, UDP or SCTP", field=f"{f}.protocol", value=proto)
            pname = item.get("name") or ""
            if pname and (len(pname) > 63 or not _DNS1123_LABEL.match(pname)):
                raise PolicyError(f"invalid port name: {_LABEL_MSG}", field=f"{f}.name", value=pname)
            ports.append(SlicePort(pname, num, proto))
        return cls(
            name=name,
            namespace=ns,
            address_type=atype,
            endpoints=tuple(endpoints),
            ports=tuple(ports),
            labels=labels,
        )

    def to_manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": _metadata_out(self.name, self.namespace, self.labels, {}),
            "addressType": self.address_type,
            "endpoints": [e.to_manifest() for e in self.endpoints],
            "ports": [p.to_manifest() for p in self.ports],
        }


PolicyObject = CiliumNetworkPolicy | CiliumClusterwideNetworkPolicy | NetworkPolicy
ModelObject = PolicyObject | Namespace | Endpoint | Node | Service | EndpointSlice | CiliumCIDRGroup

KINDS: dict[str, Any] = {
    "CiliumNetworkPolicy": CiliumNetworkPolicy,
    "CiliumClusterwideNetworkPolicy": CiliumClusterwideNetworkPolicy,
    "NetworkPolicy": NetworkPolicy,
    "Namespace": Namespace,
    "Pod": Endpoint,
    "Node": Node,
    "Service": Service,
    "EndpointSlice": EndpointSlice,
    "CiliumCIDRGroup": CiliumCIDRGroup,
}
MODEL_TYPES: tuple[type[ModelObject], ...] = (
    CiliumNetworkPolicy,
    CiliumClusterwideNetworkPolicy,
    NetworkPolicy,
    Namespace,
    Endpoint,
    Node,
    Service,
    EndpointSlice,
    CiliumCIDRGroup,
)
API_VERSIONS: dict[str, tuple[str, ...]] = {
    "CiliumNetworkPolicy": ("cilium.io/v2",),
    "CiliumClusterwideNetworkPolicy": ("cilium.io/v2",),
    "NetworkPolicy": ("networking.k8s.io/v1",),
    "Namespace": ("v1",),
    "Pod": ("v1",),
    "Node": ("v1",),
    "Service": ("v1",),
    "EndpointSlice": ("discovery.k8s.io/v1",),
    "CiliumCIDRGroup": ("cilium.io/v2alpha1", "cilium.io/v2"),
}


def sequence_of(items: Sequence[Any] | None) -> tuple[Any, ...]:
    return tuple(items or ())
