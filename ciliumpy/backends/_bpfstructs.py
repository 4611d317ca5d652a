"""ctypes mirrors of ``bpf/maps.h`` (and ``bpf/lb.h``) and the one place where byte order is converted.

Every class has the C struct's name in CamelCase and the C member names, in order, so the
BTF test in tests/backends can compare sizes and member offsets name by name. Fields the C
header marks as network order are plain ``c_uint16`` here; the ``*_to_c``/``*_from_c``
functions below are the only code that swaps them.
"""

from __future__ import annotations

import ctypes
import enum
import ipaddress
import socket
from collections.abc import Iterable

from .._datapath import (
    Action,
    CTState,
    Direction,
    DropReason,
    IPAddress,
    IPNetwork,
    LBService,
    MapStateKey,
    MatchType,
    PolicyEntry,
)

__all__ = [
    "AddressFamily",
    "AuthInfo",
    "AuthKey",
    "CilConfig",
    "CtEntry",
    "CtKey",
    "EndpointInfo",
    "EndpointKey",
    "EventFlags",
    "EventMode",
    "FlowEvent",
    "IpcacheEntry",
    "IpcacheKey",
    "LbBackend",
    "LbRevnat",
    "LbService",
    "LbServiceKey",
    "PolicyEntryValue",
    "PolicyKey",
    "PolicyStatsKey",
    "PolicyStatsValue",
]

_u8, _u16, _u32, _u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64

POLICY_STATIC_PREFIX = 40
POLICY_FULL_PREFIX = 64
IPCACHE_STATIC_PREFIX = 32
POLICY_ENTRY_DENY = 0x01
POLICY_ENTRY_LPM_SHIFT = 3
AUTH_TYPE_MASK = 0x7F
AUTH_EXPLICIT = 0x80


class EventMode(enum.IntEnum):
    """Which packets produce a flow event (``enum cil_event_mode``)."""

    ALL = 0
    DROPS = 1
    NONE = 2


class AddressFamily(enum.IntEnum):
    """Address family numbers of the endpoint, ipcache and CT keys (``enum cil_family``)."""

    IPV4 = 1
    IPV6 = 2


class EventFlags(enum.IntFlag):
    """``flow_event.flags`` (``enum cil_event_flags``)."""

    ENFORCED = 1 << 0
    FRAGMENT = 1 << 1
    HAS_ENTRY = 1 << 2


# Python enums the C enums in maps.h must equal (checked by tests/backends).
C_ENUMS: dict[str, type[enum.IntEnum] | type[enum.IntFlag]] = {
    "cil_drop_reason": DropReason,
    "cil_verdict": Action,
    "cil_ct_state": CTState,
    "cil_match_type": MatchType,
    "cil_direction": Direction,
    "cil_event_mode": EventMode,
    "cil_family": AddressFamily,
    "cil_event_flags": EventFlags,
}


# ---------------------------------------------------------------- mirrors of bpf/maps.h
class EndpointKey(ctypes.Structure):
    _fields_ = [("addr", _u8 * 16), ("family", _u8), ("pad", _u8 * 3)]


class EndpointInfo(ctypes.Structure):
    _fields_ = [
        ("identity", _u32),
        ("endpoint_id", _u16),
        ("pad", _u16),
        ("ifindex", _u32),
        ("mac", _u8 * 6),
        ("node_mac", _u8 * 6),
    ]


class IpcacheKey(ctypes.Structure):
    _fields_ = [
        ("prefixlen", _u32),
        ("cluster_id", _u16),
        ("pad", _u8),
        ("family", _u8),
        ("addr", _u8 * 16),
    ]


class IpcacheEntry(ctypes.Structure):
    _fields_ = [("sec_identity", _u32)]


class PolicyKey(ctypes.Structure):
    _fields_ = [
        ("prefixlen", _u32),
        ("sec_label", _u32),
        ("egress", _u8),
        ("protocol", _u8),
        ("dport", _u16),  # network order
    ]


class PolicyEntryValue(ctypes.Structure):
    """``struct policy_entry`` (named apart from :class:`ciliumpy.PolicyEntry`)."""

    _fields_ = [
        ("proxy_port", _u16),  # network order
        ("flags", _u8),
        ("auth", _u8),
        ("precedence", _u32),
        ("cookie", _u32),
    ]


class CtKey(ctypes.Structure):
    _fields_ = [
        ("saddr", _u8 * 16),
        ("daddr", _u8 * 16),
        ("sport", _u16),  # network order
        ("dport", _u16),  # network order
        ("endpoint_id", _u16),
        ("protocol", _u8),
        ("family", _u8),
    ]


class CtEntry(ctypes.Structure):
    _fields_ = [
        ("created_ns", _u64),
        ("direction", _u8),
        ("flags", _u8),
        ("rev_nat_index", _u16),
        ("pad", _u8 * 4),
    ]


class AuthKey(ctypes.Structure):
    _fields_ = [
        ("local_id", _u32),
        ("remote_id", _u32),
        ("remote_node_id", _u16),
        ("auth_type", _u8),
        ("pad", _u8),
    ]


class AuthInfo(ctypes.Structure):
    _fields_ = [("expiration", _u64)]


class PolicyStatsKey(ctypes.Structure):
    _fields_ = [
        ("endpoint_id", _u16),
        ("pad", _u8),
        ("prefix_len", _u8),
        ("sec_label", _u32),
        ("egress", _u8),
        ("protocol", _u8),
        ("dport", _u16),  # network order
    ]


class PolicyStatsValue(ctypes.Structure):
    _fields_ = [("packets", _u64), ("bytes", _u64)]


class CilConfig(ctypes.Structure):
    _fields_ = [("event_mode", _u32), ("extended_ip_protocols", _u32), ("proxy_redirect", _u32)]


class FlowEvent(ctypes.Structure):
    _fields_ = [
        ("ts_ns", _u64),
        ("local_identity", _u32),
        ("remote_identity", _u32),
        ("key_identity", _u32),
        ("cookie", _u32),
        ("pkt_len", _u32),
        ("endpoint_id", _u16),
        ("proxy_port", _u16),
        ("sport", _u16),
        ("dport", _u16),
        ("key_dport", _u16),
        ("verdict", _u8),
        ("drop_reason", _u8),
        ("direction", _u8),
        ("protocol", _u8),
        ("key_protocol", _u8),
        ("match_type", _u8),
        ("lpm_prefix", _u8),
        ("ct_state", _u8),
        ("auth_type", _u8),
        ("flags", _u8),
        ("family", _u8),
        ("tcp_flags", _u8),
        ("pad", _u8 * 6),
        ("saddr", _u8 * 16),
        ("daddr", _u8 * 16),
    ]


# ---- service load balancing (bpf/lb.h) ----
LB_SVC_AFFINITY = 0x01


class LbServiceKey(ctypes.Structure):
    _fields_ = [
        ("address", _u8 * 16),
        ("dport", _u16),  # network order
        ("backend_slot", _u16),
        ("proto", _u8),
        ("scope", _u8),
        ("family", _u8),
        ("pad", _u8),
    ]


class LbService(ctypes.Structure):
    _fields_ = [
        ("backend_id", _u32),
        ("count", _u16),
        ("rev_nat_index", _u16),
        ("flags", _u8),
        ("flags2", _u8),
        ("qcount", _u16),
    ]


class LbBackend(ctypes.Structure):
    _fields_ = [
        ("address", _u8 * 16),
        ("port", _u16),  # network order
        ("proto", _u8),
        ("flags", _u8),
        ("cluster_id", _u16),
        ("zone", _u8),
        ("family", _u8),
    ]


class LbRevnat(ctypes.Structure):
    _fields_ = [("address", _u8 * 16), ("port", _u16), ("family", _u8), ("pad", _u8)]  # port: network order


def lb_entries(services: Iterable[LBService]) -> tuple[dict[bytes, bytes], dict[bytes, bytes], dict[bytes, bytes]]:
    """The service, backend and rev-NAT map contents (key bytes -> value bytes) of ``services``."""
    svc_map: dict[bytes, bytes] = {}
    backend_map: dict[bytes, bytes] = {}
    revnat_map: dict[bytes, bytes] = {}
    for svc in services:
        fam = _family(svc.address.version)
        key = LbServiceKey(address=_addr16(svc.address), dport=socket.htons(svc.port), proto=svc.protocol, family=fam)
        flags = LB_SVC_AFFINITY if svc.affinity else 0
        svc_map[bytes(key)] = bytes(LbService(count=len(svc.backends), rev_nat_index=svc.service_id, flags=flags))
        for slot, be in enumerate(svc.backends, 1):
            key.backend_slot = slot
            svc_map[bytes(key)] = bytes(LbService(backend_id=be.backend_id, rev_nat_index=svc.service_id))
            backend_map[bytes(ctypes.c_uint32(be.backend_id))] = bytes(
                LbBackend(
                    address=_addr16(be.address),
                    port=socket.htons(be.port),
                    proto=svc.protocol,
                    family=_family(be.address.version),
                )
            )
        revnat_map[bytes(ctypes.c_uint16(svc.service_id))] = bytes(
            LbRevnat(address=_addr16(svc.address), port=socket.htons(svc.port), family=fam)
        )
    return svc_map, backend_map, revnat_map


# C struct name -> mirror (checked against BTF by tests/backends).
MIRRORS: dict[str, type[ctypes.Structure]] = {
    "endpoint_key": EndpointKey,
    "endpoint_info": EndpointInfo,
    "ipcache_key": IpcacheKey,
    "ipcache_entry": IpcacheEntry,
    "policy_key": PolicyKey,
    "policy_entry": PolicyEntryValue,
    "ct_key": CtKey,
    "ct_entry": CtEntry,
    "auth_key": AuthKey,
    "auth_info": AuthInfo,
    "policy_stats_key": PolicyStatsKey,
    "policy_stats_value": PolicyStatsValue,
    "cil_config": CilConfig,
    "flow_event": FlowEvent,
    "lb_service_key": LbServiceKey,
    "lb_service": LbService,
    "lb_backend": LbBackend,
    "lb_revnat": LbRevnat,
}


# ---------------------------------------------------------------- conversions
def _family(version: int) -> AddressFamily:
    return AddressFamily.IPV4 if version == 4 else AddressFamily.IPV6


def _addr16(addr: IPAddress) -> ctypes.Array[ctypes.c_uint8]:
    return (_u8 * 16).from_buffer_copy(addr.packed.ljust(16, b"\0"))


def address_from_c(raw: ctypes.Array[ctypes.c_uint8], family: int) -> IPAddress | None:
    """The address stored in a 16-byte field, or None for an unknown family."""
    data = bytes(raw)
    if family == AddressFamily.IPV4:
        return ipaddress.IPv4Address(data[:4])
    if family == AddressFamily.IPV6:
        return ipaddress.IPv6Address(data)
    return None


def endpoint_key_to_c(addr: IPAddress) -> EndpointKey:
    """The ``cil_lxc`` key of a local address."""
    return EndpointKey(addr=_addr16(addr), family=_family(addr.version))


def endpoint_info_to_c(endpoint_id: int, identity: int, device: tuple[int, bytes, bytes] | None = None) -> EndpointInfo:
    """The ``cil_lxc`` value of a local address.

    ``device`` is ``(ifindex, endpoint MAC, node-side MAC)`` of the endpoint's veth when
    packets to it are delivered by the datapath itself (local delivery); ``None`` leaves
    them to the node's IP stack.
    """
    info = EndpointInfo(identity=identity, endpoint_id=endpoint_id)
    if device is not None:
        ifindex, mac, node_mac = device
        info.ifindex = ifindex
        info.mac = (_u8 * 6)(*mac)
        info.node_mac = (_u8 * 6)(*node_mac)
    return info


def ipcache_key_to_c(net: IPNetwork) -> IpcacheKey:
    """The ``cil_ipcache`` key of a prefix: 32 static bits + the IP prefix length."""
    return IpcacheKey(
        prefixlen=IPCACHE_STATIC_PREFIX + net.prefixlen,
        family=_family(net.version),
        addr=_addr16(net.network_address),
    )


def policy_key_to_c(key: MapStateKey) -> PolicyKey:
    """The LPM key of a map-state key: prefix 40 + (protocol ? 8 + port prefix : 0)."""
    return PolicyKey(
        prefixlen=POLICY_STATIC_PREFIX + key.lpm_prefix_length,
        sec_label=key.identity,
        egress=int(key.direction),
        protocol=key.protocol,
        dport=socket.htons(key.port),
    )


def policy_key_from_c(c: PolicyKey) -> MapStateKey:
    """Inverse of :func:`policy_key_to_c`."""
    lpm = c.prefixlen - POLICY_STATIC_PREFIX
    return MapStateKey(
        identity=c.sec_label,
        direction=Direction(c.egress),
        protocol=c.protocol if lpm else 0,
        port=socket.ntohs(c.dport) if lpm > 8 else 0,
        prefix_len=lpm - 8 if lpm else 0,
    )


def policy_entry_to_c(key: MapStateKey, entry: PolicyEntry, cookie: int) -> PolicyEntryValue:
    """The trie value of ``entry`` stored at ``key`` (the value repeats the key's prefix)."""
    flags = (key.lpm_prefix_length << POLICY_ENTRY_LPM_SHIFT) & 0xF8
    if entry.deny:
        flags |= POLICY_ENTRY_DENY
    auth = entry.auth_type & AUTH_TYPE_MASK
    if entry.explicit_auth:
        auth |= AUTH_EXPLICIT
    return PolicyEntryValue(
        proxy_port=socket.htons(entry.proxy_port),
        flags=flags,
        auth=auth,
        precedence=entry.precedence,
        cookie=cookie,
    )


def stats_key_from_c(c: PolicyStatsKey) -> MapStateKey:
    """The map-state key a ``cil_policystats`` entry counts for."""
    lpm = c.prefix_len
    return MapStateKey(
        identity=c.sec_label,
        direction=Direction(c.egress),
        protocol=c.protocol if lpm else 0,
        port=socket.ntohs(c.dport) if lpm > 8 else 0,
        prefix_len=lpm - 8 if lpm else 0,
    )


def event_key(ev: FlowEvent) -> MapStateKey | None:
    """The key of the entry the datapath chose, rebuilt from a flow event."""
    if not ev.flags & EventFlags.HAS_ENTRY:
        return None
    lpm = ev.lpm_prefix
    return MapStateKey(
        identity=ev.key_identity,
        direction=Direction(ev.direction),
        protocol=ev.key_protocol if lpm else 0,
        port=ev.key_dport if lpm > 8 else 0,
        prefix_len=lpm - 8 if lpm else 0,
    )


def auth_key_to_c(local_identity: int, remote_identity: int, auth_type: int) -> AuthKey:
    """The ``cil_auth`` key of an authenticated (local identity, remote identity, type) triple."""
    return AuthKey(local_id=local_identity, remote_id=remote_identity, auth_type=auth_type)
