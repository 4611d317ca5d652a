"""Datapath-level vocabulary shared by the compiler and every backend.

Map keys and entries follow Cilium 1.17+ per-endpoint policy maps (see docs/semantics.md,
"Map state"); packets and results are what a backend consumes and produces.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .exceptions import PolicyError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_ADDR_TYPES = (ipaddress.IPv4Address, ipaddress.IPv6Address)

# Reserved identities (pkg/identity/numericidentity.go).
ID_UNKNOWN = 0
ID_HOST = 1
ID_WORLD = 2
ID_UNMANAGED = 3
ID_HEALTH = 4
ID_INIT = 5
ID_REMOTE_NODE = 6
ID_KUBE_APISERVER = 7
ID_INGRESS = 8
ID_WORLD_IPV4 = 9
ID_WORLD_IPV6 = 10
LOCAL_IDENTITY_FLAG = 1 << 24
MIN_GLOBAL_IDENTITY = 256

# Precedence (pkg/policy/types/entry.go, 1.19 encoding; CNP/CCNP rules all have priority 0).
PRECEDENCE_DENY = 0xFFFFFFFF
PRECEDENCE_ALLOW = 0xFFFFFF00


class Direction(enum.IntEnum):
    """Traffic direction as stored in the policy key (bit 0: 1 = egress)."""

    INGRESS = 0
    EGRESS = 1

    @property
    def label(self) -> str:
        return self.name.capitalize()


class Protocol(enum.IntEnum):
    """IANA protocol numbers used in policy keys; ``ANY`` (0) matches every protocol."""

    ANY = 0
    ICMP = 1
    TCP = 6
    UDP = 17
    ICMPV6 = 58
    SCTP = 132

    @classmethod
    def parse(cls, value: str | int) -> Protocol:
        if isinstance(value, int):
            return cls(value)
        text = value.strip().upper()
        if text in ("ICMPV4",):
            return cls.ICMP
        return cls[text]

    @property
    def label(self) -> str:
        return {0: "ANY", 1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}[self.value]


class DropReason(enum.IntEnum):
    """Drop reasons as Cilium numbers them (bpf/lib/drop_reasons.h, positive form)."""

    POLICY_DENIED = 133
    CT_UNKNOWN_L4_PROTOCOL = 137
    IP_FRAGMENTATION_NOT_SUPPORTED = 157
    ENCAPSULATION_TRAFFIC_IS_PROHIBITED = 170
    # A redirect to a lab proxy that found no proxy socket, could not be assigned to it, or
    # is of a protocol without proxies (bpf/proxy.h; Cilium's TPROXY drops).
    PROXY_LOOKUP_FAILED = 178
    PROXY_SET_FAILED = 179
    PROXY_UNKNOWN_PROTO = 180
    POLICY_DENY = 181
    AUTH_REQUIRED = 189
    UNENCRYPTED_TRAFFIC = 195
    # Packets the datapath cannot parse are dropped (fail closed); Cilium reports these
    # as invalid packets.
    INVALID_PACKET_DROPPED = 134
    # A service frontend without a backend for new connections (bpf/lib/lb.h).
    NO_SERVICE = 158
    # The service NAT could not rewrite the packet.
    WRITE_ERROR = 141

    @property
    def text(self) -> str:
        return _DROP_TEXT[self]


_DROP_TEXT = {
    DropReason.POLICY_DENIED: "Policy denied",
    DropReason.CT_UNKNOWN_L4_PROTOCOL: "CT: Unknown L4 protocol",
    DropReason.IP_FRAGMENTATION_NOT_SUPPORTED: "IP fragmentation not supported",
    DropReason.ENCAPSULATION_TRAFFIC_IS_PROHIBITED: "Encapsulation traffic is prohibited",
    DropReason.PROXY_LOOKUP_FAILED: "Failed to find proxy socket",
    DropReason.PROXY_SET_FAILED: "Failed to assign the proxy socket",
    DropReason.PROXY_UNKNOWN_PROTO: "Unknown protocol to redirect to the proxy",
    DropReason.POLICY_DENY: "Policy denied by denylist",
    DropReason.AUTH_REQUIRED: "Authentication required",
    DropReason.UNENCRYPTED_TRAFFIC: "Traffic is unencrypted",
    DropReason.INVALID_PACKET_DROPPED: "Invalid packet",
    DropReason.NO_SERVICE: "Service backend not found",
    DropReason.WRITE_ERROR: "Failed to write into packet",
}


class MatchType(enum.IntEnum):
    """Hubble ``policy_match_type`` of the chosen entry (§4.3 step 8)."""

    NONE = 0
    L3_ONLY = 1
    L3_L4 = 2
    L4_ONLY = 3
    ALL = 4
    L3_PROTO = 5
    PROTO_ONLY = 6

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class Action(enum.IntEnum):
    """What a datapath hook did with a packet."""

    ALLOW = 0
    DROP = 1
    REDIRECT = 2


class CTState(enum.IntEnum):
    """Connection-tracking classification of a packet at a hook."""

    NEW = 0
    ESTABLISHED = 1
    REPLY = 2
    RELATED = 3


def _port_range_check(_inst: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{attribute.name} must be within 0..65535, got {value}")


@attrs.frozen(order=True)
class MapStateKey:
    """Key of a per-endpoint policy map: (identity, direction, protocol, port prefix).

    ``identity`` 0 means any identity (an "L4-only" entry). ``protocol`` 0 means every
    protocol and forces ``port`` and ``prefix_len`` to 0. ``port`` 0 with a protocol means
    every port (``prefix_len`` 0). A single port has ``prefix_len`` 16; a piece of a port
    range has a shorter prefix with the low bits of ``port`` cleared.
    """

    identity: int
    direction: Direction = attrs.field(converter=Direction)
    protocol: int = 0
    port: int = attrs.field(default=0, validator=_port_range_check)
    prefix_len: int = 0

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.identity <= 0xFFFFFFFF:
            raise ValueError(f"identity out of range: {self.identity}")
        if not 0 <= self.protocol <= 255:
            raise ValueError(f"protocol out of range: {self.protocol}")
        if not 0 <= self.prefix_len <= 16:
            raise ValueError(f"port prefix length out of range: {self.prefix_len}")
        if self.protocol == 0 and (self.port or self.prefix_len):
            raise ValueError("a key for all protocols must have port 0 and prefix 0")
        if self.port == 0 and self.prefix_len not in (0, 16) and self.protocol:
            # port 0 with a non-zero prefix is a range piece starting at 0 (e.g. 0-1023)
            pass
        mask = _port_mask(self.prefix_len)
        if self.port & ~mask & 0xFFFF:
            raise ValueError(f"port {self.port} has bits beyond its prefix length {self.prefix_len}")

    @property
    def lpm_prefix_length(self) -> int:
        """Protocol + port bits matched (0..24): 0 for all protocols, 8 + port prefix else."""
        return 0 if self.protocol == 0 else 8 + self.prefix_len

    @property
    def port_range(self) -> tuple[int, int]:
        """Inclusive (first, last) destination port this key covers."""
        if self.protocol == 0:
            return (0, 0xFFFF)
        span = 1 << (16 - self.prefix_len)
        return (self.port, self.port + span - 1)

    def covers(self, other: MapStateKey) -> bool:
        """True if this key's protocol/port part is broader than or equal to ``other``'s.

        Identity and direction are not compared here (see :meth:`covers_key`).
        """
        if self.protocol == 0:
            return True
        if self.protocol != other.protocol or self.prefix_len > other.prefix_len:
            return False
        mask = _port_mask(self.prefix_len)
        return (self.port & mask) == (other.port & mask)

    def covers_key(self, other: MapStateKey) -> bool:
        """Broader-or-equal including identity: identity 0 covers every identity."""
        return (
            self.direction == other.direction
            and (self.identity == 0 or self.identity == other.identity)
            and self.covers(other)
        )

    def matches(self, identity: int, protocol: int, port: int) -> bool:
        """Would a datapath lookup for (identity, protocol, port) hit this key?"""
        if self.identity not in (0, identity):
            return False
        if self.protocol == 0:
            return True
        if self.protocol != protocol:
            return False
        mask = _port_mask(self.prefix_len)
        return (port & mask) == self.port

    def port_proto_text(self) -> str:
        """``ANY``, ``TCP``, ``80/TCP`` or ``8080-8095/TCP`` as ``cilium-dbg bpf policy get``."""
        if self.protocol == 0:
            return "ANY"
        try:
            proto = Protocol(self.protocol).label
        except ValueError:
            proto = str(self.protocol)
        if self.prefix_len == 0:
            return proto
        lo, hi = self.port_range
        return f"{lo}/{proto}" if lo == hi else f"{lo}-{hi}/{proto}"


def _port_mask(prefix_len: int) -> int:
    return (0xFFFF << (16 - prefix_len)) & 0xFFFF


def port_range_to_prefixes(first: int, last: int) -> list[tuple[int, int]]:
    """Split an inclusive port range into the minimal (port, prefix_len) pieces.

    ``5-10`` gives ``[(5, 16), (6, 15), (8, 15), (10, 16)]``; ``0-65535`` gives ``[(0, 0)]``.
    """
    if not 0 <= first <= last <= 0xFFFF:
        raise ValueError(f"invalid port range {first}-{last}")
    out: list[tuple[int, int]] = []
    port = first
    while port <= last:
        size = port & -port if port else 1 << 16
        while port + size - 1 > last:
            size >>= 1
        out.append((port, 16 - (size.bit_length() - 1)))
        port += size
    return out


@attrs.frozen(order=True)
class RuleOrigin:
    """Where a map entry came from: the policy object and the rule inside it.

    ``kind`` is ``CiliumNetworkPolicy``, ``CiliumClusterwideNetworkPolicy``,
    ``NetworkPolicy`` or ``reserved`` for entries Cilium synthesises (``allow-any-ingress``,
    ``allow-any-egress``, ``allow-localhost-ingress``); ``rule`` names the rule inside the
    object, e.g. ``specs[1].ingress[0]``.
    """

    kind: str
    namespace: str
    name: str
    rule: str = ""

    def __str__(self) -> str:
        obj = f"{self.namespace}/{self.name}" if self.namespace else self.name
        where = f" {self.rule}" if self.rule else ""
        return f"{self.kind} {obj}{where}"

    def to_hubble(self) -> dict[str, Any]:
        """The ``{name, namespace, labels, revision, kind}`` object of Hubble's *_allowed_by."""
        labels = [f"k8s:io.cilium.k8s.policy.derived-from={self.kind}"]
        labels.append(f"k8s:io.cilium.k8s.policy.name={self.name}")
        if self.namespace:
            labels.append(f"k8s:io.cilium.k8s.policy.namespace={self.namespace}")
        out: dict[str, Any] = {"name": self.name}
        if self.namespace:
            out["namespace"] = self.namespace
        out["labels"] = sorted(labels)
        out["kind"] = self.kind
        return out


def _to_origins(items: Iterable[RuleOrigin]) -> frozenset[RuleOrigin]:
    return items if isinstance(items, frozenset) else frozenset(items)


@attrs.frozen
class PolicyEntry:
    """Value of a policy map entry plus the provenance ciliumpy keeps for explanations.

    ``listener_priority`` is the proxy listener priority (HTTP 101, Kafka 106, proxylib
    111, TLS 116, DNS 121, CRD listener 126); it only matters with a ``proxy_port``.
    Equality ignores ``origins``; use :meth:`same_value` when comparing datapath values.
    """

    deny: bool = False
    proxy_port: int = 0
    listener_priority: int = 0
    auth_type: int = 0
    explicit_auth: bool = False
    origins: frozenset[RuleOrigin] = attrs.field(default=frozenset(), converter=_to_origins, eq=False, order=False)

    @property
    def precedence(self) -> int:
        """32-bit precedence: deny > redirect (by listener priority) > plain allow."""
        if self.deny:
            return PRECEDENCE_DENY
        if self.proxy_port:
            prio = 128 - self.listener_priority if self.listener_priority else 1
            return PRECEDENCE_ALLOW | (prio & 0x7F)
        return PRECEDENCE_ALLOW

    @property
    def is_redirect(self) -> bool:
        return not self.deny and self.proxy_port != 0

    def same_value(self, other: PolicyEntry) -> bool:
        return (
            self.deny == other.deny
            and self.proxy_port == other.proxy_port
            and self.listener_priority == other.listener_priority
            and self.auth_type == other.auth_type
            and self.explicit_auth == other.explicit_auth
        )

    def with_origins(self, origins: Iterable[RuleOrigin]) -> PolicyEntry:
        return attrs.evolve(self, origins=self.origins | frozenset(origins))

    def describe(self) -> str:
        if self.deny:
            return "deny"
        if self.proxy_port:
            return f"redirect:{self.proxy_port}"
        return "allow"


MapState = Mapping[MapStateKey, PolicyEntry]


@attrs.frozen
class EndpointRecord:
    """What the datapath knows about a local endpoint (Cilium's lxc map entry)."""

    endpoint_id: int
    identity: int
    ips: tuple[IPAddress, ...]
    ifname: str = ""


class TCPFlags(enum.IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


_L4_HEADER_BYTES: dict[int, int] = {
    Protocol.TCP: 20,
    Protocol.UDP: 8,
    Protocol.SCTP: 12,
    Protocol.ICMP: 8,
    Protocol.ICMPV6: 8,
}
_PORT_PROTOCOLS = frozenset({Protocol.TCP, Protocol.UDP, Protocol.SCTP})


def _to_addr(value: str | int | IPAddress) -> IPAddress:
    return value if isinstance(value, _ADDR_TYPES) else ipaddress.ip_address(value)


_PACKET_FIELD_MAX = (
    ("protocol", 0xFF),
    ("sport", 0xFFFF),
    ("dport", 0xFFFF),
    ("icmp_type", 0xFF),
    ("icmp_code", 0xFF),
    ("tcp_flags", 0xFF),
    ("length", 0xFFFF),
)


@attrs.frozen
class Packet:
    """A packet handed to a datapath hook.

    For ICMP/ICMPv6 ``dport`` is unused: ``icmp_type``/``icmp_code`` are, and ``sport``
    carries the echo identifier used by connection tracking. ``fragment`` marks a non-first
    IPv4 fragment (no L4 header).
    """

    src: IPAddress = attrs.field(converter=_to_addr)
    dst: IPAddress = attrs.field(converter=_to_addr)
    protocol: int = Protocol.TCP
    sport: int = 40000
    dport: int = 0
    icmp_type: int = 0
    icmp_code: int = 0
    tcp_flags: int = int(TCPFlags.SYN)
    length: int = 64
    fragment: bool = False

    def __attrs_post_init__(self) -> None:
        if self.src.version != self.dst.version:
            raise PolicyError(f"mixed address families: {self.src} -> {self.dst}")
        # Backends pack these into fixed-width fields: check the widths here, once.
        for name, high in _PACKET_FIELD_MAX:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Packet.{name} is an int, not {type(value).__name__}")
            if not 0 <= value <= high:
                raise PolicyError(f"must be within 0..{high}", field=f"Packet.{name}", value=value)

    @property
    def is_icmp(self) -> bool:
        """ICMP of the packet's own family (ICMP in IPv4, ICMPv6 in IPv6).

        The other family's protocol number is just an IP protocol without ports, as in
        Cilium's conntrack.
        """
        return self.protocol == (Protocol.ICMP if self.src.version == 4 else Protocol.ICMPV6)

    @property
    def known_to_conntrack(self) -> bool:
        """Whether Cilium's conntrack handles the protocol: TCP, UDP, SCTP, the family's ICMP.

        Other protocols are dropped with ``CT_UNKNOWN_L4_PROTOCOL`` unless extended IP
        protocols are enabled (bpf/lib/conntrack.h).
        """
        return self.protocol in _PORT_PROTOCOLS or self.is_icmp

    @property
    def carries_ports(self) -> bool:
        """Whether the wire packet has an L4 header with ports or an ICMP type.

        Non-first fragments have no L4 header, and protocols other than TCP, UDP, SCTP
        and the family's ICMP have no ports: the datapath sees 0 for all of them.
        """
        return not self.fragment and self.known_to_conntrack

    @property
    def policy_port(self) -> int:
        """The port used in the policy lookup: the ICMP type for ICMP, else the destination
        port; 0 when the packet carries neither (fragments, port-less protocols)."""
        if not self.carries_ports:
            return 0
        if self.is_icmp:
            return self.icmp_type
        return self.dport

    @property
    def frame_length(self) -> int:
        """Bytes of the Ethernet frame: ``length``, or the headers when they are longer."""
        l4 = 8 if self.fragment else _L4_HEADER_BYTES.get(self.protocol, 0)
        headers = 14 + (20 if self.src.version == 4 else 40 + (8 if self.fragment else 0)) + l4
        return max(self.length, headers)

    def reply(self) -> Packet:
        """The reply packet of this packet (addresses and ports swapped)."""
        icmp_type = self.icmp_type
        if self.protocol == Protocol.ICMP and icmp_type == 8:
            icmp_type = 0
        elif self.protocol == Protocol.ICMPV6 and icmp_type == 128:
            icmp_type = 129
        flags = self.tcp_flags
        if self.protocol == Protocol.TCP and flags & TCPFlags.SYN:
            flags = int(TCPFlags.SYN | TCPFlags.ACK)
        return attrs.evolve(
            self,
            src=self.dst,
            dst=self.src,
            sport=self.dport if not self.is_icmp else self.sport,
            dport=self.sport if not self.is_icmp else self.dport,
            icmp_type=icmp_type,
            tcp_flags=flags,
        )


@attrs.frozen
class DatapathResult:
    """The outcome of one datapath hook (egress of the source or ingress of the destination).

    ``endpoint_id`` 0 means no local endpoint owns the hook's address, so no policy ran
    (``enforced`` False). ``key`` is the map key of the chosen entry (identity R or 0).
    """

    direction: Direction
    action: Action
    endpoint_id: int = 0
    remote_identity: int = 0
    drop_reason: DropReason | None = None
    proxy_port: int = 0
    key: MapStateKey | None = None
    match_type: MatchType = MatchType.NONE
    ct_state: CTState = CTState.NEW
    auth_type: int = 0
    enforced: bool = True
    # Service translation by the hook: on egress the DNAT of a new or established packet to
    # a backend (the packet continued to nat_address:nat_port), on a reply the reverse NAT
    # of its source back to the frontend. ``service_id`` is the frontend's rev-NAT index.
    service_id: int = 0
    nat_address: IPAddress | None = None
    nat_port: int = 0

    @property
    def allowed(self) -> bool:
        return self.action != Action.DROP


# --------------------------------------------------------------------------------------
# Service load balancing (Cilium's lb4/lb6 maps, bpf/lib/lb.h)
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def lb_hash(client: IPAddress, sport: int | None = None) -> int:
    """The 32-bit FNV-1a hash that picks a service backend.

    Over the client address bytes (4 or 16, network order) and, unless ``sport`` is None
    (session affinity: the client address alone decides), the source port's two bytes in
    network order. Cilium picks a random slot (or a Maglev slot from a tuple hash); a hash
    keeps the choice deterministic and identical in every backend.
    """
    data = client.packed if sport is None else client.packed + (sport & 0xFFFF).to_bytes(2, "big")
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def lb_slot(client: IPAddress, sport: int | None, count: int) -> int:
    """The backend slot (1..count) a new connection lands on; 0 when there is no backend."""
    if count <= 0:
        return 0
    return 1 + lb_hash(client, sport) % count


@attrs.frozen
class LBBackend:
    """A backend in the datapath's backend map (Cilium's ``lb4_backend``/``lb6_backend``)."""

    backend_id: int
    address: IPAddress = attrs.field(converter=_to_addr)
    port: int


@attrs.frozen
class LBService:
    """A frontend in the datapath's service map with the backends of its slots.

    ``service_id`` is the frontend's ID and rev-NAT index; slots ``1..len(backends)`` hold the
    backends new connections may use (Cilium's ``count``); ``affinity`` keeps a client on
    one backend (the source port is left out of the hash).
    """

    service_id: int
    address: IPAddress = attrs.field(converter=_to_addr)
    port: int
    protocol: int
    backends: tuple[LBBackend, ...] = ()
    affinity: bool = False
