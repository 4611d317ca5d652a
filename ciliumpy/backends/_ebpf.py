"""The eBPF backend: ciliumpy's map state enforced by a real tc datapath in the kernel.

:class:`EBPFBackend` loads the committed object ``ciliumpy/bpf/ciliumpy.bpf.o`` (built from
``bpf/`` by ``bpf/build.py``) through the system libbpf, keeps its maps in sync with the
:class:`~ciliumpy.backends.DatapathUpdate` stream, and evaluates packets by crafting an
Ethernet frame and running the hook's program with ``BPF_PROG_TEST_RUN``; the verdict comes
back as a ring-buffer flow event.  The semantics are those of
:class:`~ciliumpy.backends._simulator.SimulatorBackend`; tests/backends checks both agree.

Needs root (CAP_BPF + CAP_NET_ADMIN), ``libbpf.so.1`` and a kernel >= 5.10.  See
docs/ebpf.md for the design.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno as errno_mod
import functools
import os
import select
import socket
import struct
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, MutableSet
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import attrs

from .._datapath import (
    ID_WORLD,
    Action,
    CTState,
    DatapathResult,
    Direction,
    DropReason,
    EndpointRecord,
    IPAddress,
    IPNetwork,
    LBService,
    MapStateKey,
    MatchType,
    Packet,
    PolicyEntry,
    Protocol,
    RuleOrigin,
)
from ..exceptions import BackendUnavailableError, BPFError, MapFullError
from . import DatapathUpdate
from . import _bpfstructs as S
from . import _libbpf as L

__all__ = ["AuthPairs", "DatapathEvent", "EBPFBackend", "EndpointDevice", "TCAttachment"]

OBJECT_PATH = Path(__file__).resolve().parent.parent / "bpf" / "ciliumpy.bpf.o"
PROGRAMS: dict[Direction, bytes] = {
    Direction.EGRESS: b"cil_from_container",
    Direction.INGRESS: b"cil_to_container",
}
MAX_ENDPOINT_ID = 0xFFFF  # endpoint ids are u16 in Cilium's maps (and in ours)
_TC_ACT_OK, _TC_ACT_SHOT = 0, 2
_CAP_NET_ADMIN, _CAP_SYS_ADMIN, _CAP_BPF = 12, 21, 39
_VERIFIER_LOG_SIZE = 1 << 20
# Flow events read while looking for a test run's own (live traffic's), kept for
# poll_events()/drain_events(); the oldest are dropped beyond this, as a full ring would.
_BACKLOG_MAX = 65536


# ---------------------------------------------------------------- events
@attrs.frozen(kw_only=True)
class DatapathEvent:
    """One flow event read from the datapath's ring buffer.

    ``key`` is the policy map key of the chosen entry (identity, direction, protocol and
    masked port as the datapath reports them); ``cookie`` is the tag the backend wrote into
    that entry (see :meth:`EBPFBackend.origins_of_cookie`).
    """

    timestamp_ns: int
    direction: Direction
    action: Action
    drop_reason: DropReason | None
    enforced: bool
    endpoint_id: int
    local_identity: int
    remote_identity: int
    src: IPAddress | None
    dst: IPAddress | None
    protocol: int
    sport: int
    dport: int
    fragment: bool
    key: MapStateKey | None
    match_type: MatchType
    ct_state: CTState
    auth_type: int
    proxy_port: int
    cookie: int
    length: int
    tcp_flags: int = 0  # the TCP header's flags byte (SYN 0x02, ACK 0x10, ...); 0 for other protocols

    @classmethod
    def from_c(cls, ev: S.FlowEvent) -> DatapathEvent:
        """Decode a ring-buffer record."""
        flags = S.EventFlags(ev.flags)
        action = Action(ev.verdict)
        return cls(
            timestamp_ns=ev.ts_ns,
            direction=Direction(ev.direction),
            action=action,
            drop_reason=DropReason(ev.drop_reason) if action == Action.DROP else None,
            enforced=bool(flags & S.EventFlags.ENFORCED),
            endpoint_id=ev.endpoint_id,
            local_identity=ev.local_identity,
            remote_identity=ev.remote_identity,
            src=S.address_from_c(ev.saddr, ev.family),
            dst=S.address_from_c(ev.daddr, ev.family),
            protocol=ev.protocol,
            sport=ev.sport,
            dport=ev.dport,
            fragment=bool(flags & S.EventFlags.FRAGMENT),
            key=S.event_key(ev),
            match_type=MatchType(ev.match_type),
            ct_state=CTState(ev.ct_state),
            auth_type=ev.auth_type,
            proxy_port=ev.proxy_port,
            cookie=ev.cookie,
            length=ev.pkt_len,
            tcp_flags=ev.tcp_flags if ev.protocol == Protocol.TCP else 0,
        )

    def result(self) -> DatapathResult:
        """The :class:`DatapathResult` this event reports."""
        if not self.enforced:
            return DatapathResult(
                direction=self.direction,
                action=self.action,
                drop_reason=self.drop_reason,
                enforced=False,
            )
        return DatapathResult(
            direction=self.direction,
            action=self.action,
            endpoint_id=self.endpoint_id,
            remote_identity=self.remote_identity,
            drop_reason=self.drop_reason,
            proxy_port=self.proxy_port,
            key=self.key,
            match_type=self.match_type,
            ct_state=self.ct_state,
            auth_type=self.auth_type,
        )


# ---------------------------------------------------------------- frames
_ETH_SRC = bytes.fromhex("020000000001")
_ETH_DST = bytes.fromhex("020000000002")


def _ipv4_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_frame(packet: Packet) -> bytes:
    """The Ethernet frame the datapath sees for ``packet``.

    Non-first fragments (``packet.fragment``) carry 8 bytes of payload and no L4 header;
    ICMP/ICMPv6 put ``sport`` in the echo-identifier field; the frame is padded with zero
    payload up to ``packet.length`` bytes when that is longer than the headers.
    """
    proto = packet.protocol
    l4 = b""
    if packet.fragment:
        l4 = bytes(8)
    elif proto == Protocol.TCP:
        offset_flags = (5 << 12) | (packet.tcp_flags & 0x1FF)
        l4 = struct.pack("!HHIIHHHH", packet.sport, packet.dport, 1, 0, offset_flags, 65535, 0, 0)
    elif proto == Protocol.UDP:
        l4 = struct.pack("!HHHH", packet.sport, packet.dport, 8, 0)
    elif proto == Protocol.SCTP:
        l4 = struct.pack("!HHII", packet.sport, packet.dport, 1, 0)
    elif proto in (Protocol.ICMP, Protocol.ICMPV6):
        l4 = struct.pack("!BBHHH", packet.icmp_type, packet.icmp_code, 0, packet.sport, 1)
    if packet.src.version == 4:
        l3_len = 20
        pad = max(0, packet.length - 14 - l3_len - len(l4))
        payload = l4 + bytes(pad)
        frag = 1 if packet.fragment else 0  # offset 1 (8 bytes): a non-first fragment
        header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            l3_len + len(payload),
            0,
            frag,
            64,
            proto,
            0,
            packet.src.packed,
            packet.dst.packed,
        )
        header = header[:10] + struct.pack("!H", _ipv4_checksum(header)) + header[12:]
        return _ETH_DST + _ETH_SRC + struct.pack("!H", 0x0800) + header + payload
    ext = b""
    nexthdr = proto
    if packet.fragment:
        ext = struct.pack("!BBHI", proto, 0, 1 << 3, 1)  # offset 1, a non-first fragment
        nexthdr = 44
    pad = max(0, packet.length - 14 - 40 - len(ext) - len(l4))
    payload = ext + l4 + bytes(pad)
    header = struct.pack("!IHBB16s16s", 6 << 28, len(payload), nexthdr, 64, packet.src.packed, packet.dst.packed)
    return _ETH_DST + _ETH_SRC + struct.pack("!H", 0x86DD) + header + payload


# ---------------------------------------------------------------- state mirror
def _mac_bytes(value: bytes | str) -> bytes:
    raw = bytes.fromhex(value.replace(":", "")) if isinstance(value, str) else bytes(value)
    if len(raw) != 6:
        raise ValueError(f"a MAC address has 6 bytes, got {value!r}")
    return raw


@attrs.frozen
class EndpointDevice:
    """Where the datapath delivers an endpoint's packets itself (Cilium's local delivery).

    ``ifindex`` is the node-side end of the endpoint's veth, in the namespace where the
    programs are attached; ``mac`` the endpoint's own MAC (``"02:00:..."`` or 6 bytes) and
    ``node_mac`` the node side's, which delivered frames carry as destination and source.
    """

    ifindex: int = attrs.field(validator=attrs.validators.and_(attrs.validators.ge(1), attrs.validators.le(0xFFFFFFFF)))
    mac: bytes = attrs.field(converter=_mac_bytes)
    node_mac: bytes = attrs.field(converter=_mac_bytes)


@attrs.define
class _State:
    """What the maps hold, in model terms; updated exactly as the simulator updates itself."""

    endpoints: dict[int, EndpointRecord] = attrs.Factory(dict)
    by_ip: dict[IPAddress, int] = attrs.Factory(dict)
    ipcache: dict[IPNetwork, int] = attrs.Factory(dict)
    # endpoint id -> {policy_key bytes: policy_entry bytes}: kept encoded so a change costs
    # O(change) in Python, not O(table)
    policy: dict[int, dict[bytes, bytes]] = attrs.Factory(dict)
    # endpoint id -> its device, for local delivery; set by whoever wires the endpoints up
    # (ciliumpy.lab), not by policy updates, so it outlives an endpoint's removal
    devices: dict[int, EndpointDevice] = attrs.Factory(dict)
    # service ID -> frontend with its slot backends (bpf/lb.h maps)
    services: dict[int, LBService] = attrs.Factory(dict)

    def applied(self, update: DatapathUpdate, encode: _Encoder) -> tuple[_State, _Touched]:
        """The state after ``update`` (same order of operations as the simulator) and what
        it may have changed.  Copy-on-write: untouched policy tables are shared."""
        new = _State(
            dict(self.endpoints), dict(self.by_ip), dict(self.ipcache), dict(self.policy), self.devices, self.services
        )
        if update.services_upsert or update.services_delete:
            new.services = {k: v for k, v in self.services.items() if k not in update.services_delete}
            new.services.update(update.services_upsert)
        touched = _Touched()
        for ep_id in update.endpoints_delete:
            rec = new.endpoints.pop(ep_id, None)
            if rec is not None:
                touched.ips.update(rec.ips)
                for ip in rec.ips:
                    if new.by_ip.get(ip) == ep_id:
                        del new.by_ip[ip]
            new.policy.pop(ep_id, None)
            touched.policy.add(ep_id)
        for ep_id, rec in update.endpoints_upsert.items():
            old = new.endpoints.get(ep_id)
            if old is not None:
                touched.ips.update(old.ips)
                for ip in old.ips:
                    if new.by_ip.get(ip) == ep_id:  # not an address another endpoint took over
                        del new.by_ip[ip]
            new.endpoints[ep_id] = rec
            touched.ips.update(rec.ips)
            for ip in rec.ips:
                new.by_ip[ip] = ep_id
        for net in update.ipcache_delete:
            new.ipcache.pop(net, None)
        new.ipcache.update(update.ipcache_upsert)
        touched.nets.update(update.ipcache_delete, update.ipcache_upsert)
        for ep_id in update.policy_replace:
            new.policy[ep_id] = {}
            touched.policy.add(ep_id)
        for ep_id, keys in update.policy_delete.items():
            table = new.policy.get(ep_id)
            if table is not None and ep_id not in touched.policy:
                table = new.policy[ep_id] = dict(table)
                touched.policy.add(ep_id)
            if table is not None:
                for key in keys:
                    table.pop(bytes(S.policy_key_to_c(key)), None)
        for ep_id, entries in update.policy_upsert.items():
            table = new.policy.get(ep_id)
            if table is None:
                table = new.policy[ep_id] = {}
            elif ep_id not in touched.policy:
                table = new.policy[ep_id] = dict(table)
            touched.policy.add(ep_id)
            table.update(encode(key, entry) for key, entry in entries.items())
        return new, touched


_Encoder = Callable[[MapStateKey, PolicyEntry], tuple[bytes, bytes]]


@attrs.define
class _Touched:
    """Keys an update may have changed: only these are diffed and written."""

    ips: set[IPAddress] = attrs.Factory(set)
    nets: set[IPNetwork] = attrs.Factory(set)
    policy: set[int] = attrs.Factory(set)


def _validate(update: DatapathUpdate) -> None:
    ids = set(update.endpoints_upsert) | set(update.policy_upsert) | set(update.policy_replace)
    for ep_id in ids:
        if not 1 <= ep_id <= MAX_ENDPOINT_ID:
            raise ValueError(f"endpoint id must be within 1..{MAX_ENDPOINT_ID}, got {ep_id}")
    for ep_id, rec in update.endpoints_upsert.items():
        if rec.endpoint_id != ep_id:
            raise ValueError(f"endpoint record {rec.endpoint_id} filed under id {ep_id}")
        if not 0 <= rec.identity <= 0xFFFFFFFF:
            raise ValueError(f"identity out of range: {rec.identity}")
    for net, ident in update.ipcache_upsert.items():
        if not 0 <= ident <= 0xFFFFFFFF:
            raise ValueError(f"identity out of range for {net}: {ident}")
    for keys in update.policy_delete.values():
        for key in keys:
            if not isinstance(key, MapStateKey):
                raise TypeError(f"policy key must be a MapStateKey, got {key!r}")
    for entries in update.policy_upsert.values():
        for key, entry in entries.items():
            if not isinstance(key, MapStateKey):
                raise TypeError(f"policy key must be a MapStateKey, got {key!r}")
            if not isinstance(entry, PolicyEntry):
                raise TypeError(f"policy entry must be a PolicyEntry, got {entry!r}")
            if not 0 <= entry.proxy_port <= 0xFFFF or not 0 <= entry.auth_type <= 0x7F:
                raise ValueError(f"policy entry out of range: {entry!r}")


# ---------------------------------------------------------------- kernel resources
class _Kernel:
    """Every kernel resource of one loaded object; ``release()`` frees them once."""

    def __init__(self) -> None:
        self.obj: Any = None  # POINTER(bpf_object)
        self.obj_buf: ctypes.Array[ctypes.c_char] | None = None
        self.log_bufs: list[ctypes.Array[ctypes.c_char]] = []
        self.rb: Any = None  # POINTER(ring_buffer)
        self.pending: list[bytes] = []
        self.attachments: list[TCAttachment] = []

        def on_sample(_ctx: int | None, data: int | None, size: int) -> int:
            if data:
                self.pending.append(ctypes.string_at(data, size))
            return 0

        # Referenced from here for as long as libbpf may call it.
        self.sample_cb = L.SAMPLE_FN(on_sample)

    @property
    def released(self) -> bool:
        return self.obj is None

    def release(self) -> None:
        for att in list(self.attachments):
            with contextlib.suppress(OSError):
                att.detach()
        self.attachments.clear()
        lib = L.library()
        if self.rb is not None:
            rb, self.rb = self.rb, None
            lib.ring_buffer__free(rb)
        if self.obj is not None:
            obj, self.obj = self.obj, None
            lib.bpf_object__close(obj)
        self.obj_buf = None
        self.log_bufs = []
        self.pending.clear()


def _release_leaked(kernel: _Kernel) -> None:
    if not kernel.released:
        warnings.warn(
            "EBPFBackend was not closed; its BPF object was released by the garbage collector",
            ResourceWarning,
            stacklevel=2,
        )
        kernel.release()


class _Journal:
    """Undo actions of a half-done apply, run newest first on failure."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def push(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def rollback(self) -> list[BaseException]:
        failures: list[BaseException] = []
        while self._undo:
            try:
                self._undo.pop()()
            except Exception as exc:  # keep undoing the rest; report at the end
                failures.append(exc)
        return failures


@contextlib.contextmanager
def _all_or_nothing(what: str, function: str) -> Iterator[_Journal]:
    """A journal for map writes: any exception inside rolls them back, then propagates.

    When the rollback itself fails the maps are in an unknown state, and the error says so.
    """
    journal = _Journal()
    try:
        yield journal
    except BaseException as exc:
        failures = journal.rollback()
        if failures:
            raise BPFError(
                errno_mod.EIO,
                f"{what} failed ({exc}) and rollback failed too ({failures[0]}); close and reload the backend",
                function=function,
            ) from exc
        raise


class _MapContents:
    """Key/value bytes of a hash or LPM map, diffed and written in batches."""

    def __init__(
        self, fd: int, key_type: type[ctypes._SimpleCData[Any] | ctypes.Structure], value_type: type[ctypes.Structure]
    ) -> None:
        self.fd = fd
        self.key_type = key_type
        self.value_type = value_type

    def _keys(self, keys: list[bytes]) -> ctypes.Array[Any]:
        arr = (self.key_type * len(keys))()
        ctypes.memmove(arr, b"".join(keys), ctypes.sizeof(arr))
        return arr

    def _values(self, values: list[bytes]) -> ctypes.Array[Any]:
        arr = (self.value_type * len(values))()
        ctypes.memmove(arr, b"".join(values), ctypes.sizeof(arr))
        return arr

    def write(self, upserts: dict[bytes, bytes], deletes: list[bytes]) -> None:
        if deletes:
            L.map_delete_batch(self.fd, self._keys(deletes))
        if upserts:
            L.map_update_batch(self.fd, self._keys(list(upserts)), self._values(list(upserts.values())))

    def sync(
        self, old: dict[bytes, bytes], new: dict[bytes, bytes], journal: _Journal, *, longest_first: bool = False
    ) -> None:
        """Make the map go from ``old`` to ``new``; the journal can put ``old`` back.

        ``longest_first`` (LPM maps with room for old and new at once): upserts before
        deletes, upserts from the longest prefix down and deletes from the shortest up, so an
        address goes from its old longest match straight to its new one and never falls
        back to a shorter prefix (or world) in between.  Otherwise deletes go first, to make
        room.
        """
        deletes = [k for k in old if k not in new]
        upserts = {k: v for k, v in new.items() if old.get(k) != v}
        if not deletes and not upserts:
            return
        touched = deletes + list(upserts)
        journal.push(self._restorer(old, touched, longest_first))
        if longest_first:
            self.write(dict(sorted(upserts.items(), key=lambda kv: -_lpm_length(kv[0]))), [])
            self.write({}, sorted(deletes, key=_lpm_length))
            return
        self.write(upserts, deletes)

    def _restorer(self, old: dict[bytes, bytes], touched: list[bytes], longest_first: bool) -> Callable[[], None]:
        def restore() -> None:
            added = [k for k in touched if k not in old]  # some may not have been written
            back = {k: old[k] for k in touched if k in old}
            if longest_first:
                # The way back in the same order as the way there, while the map has room.
                with contextlib.suppress(MapFullError):
                    self.write(dict(sorted(back.items(), key=lambda kv: -_lpm_length(kv[0]))), [])
                    self.write({}, sorted(added, key=_lpm_length))
                    return
            # Deletes first: they free the room the old entries need.
            self.write({}, added)
            self.write(back, [])

        return restore


# ---------------------------------------------------------------- auth pairs
class AuthPairs(MutableSet[tuple[int, int, int]]):
    """``(local_identity, remote_identity, auth_type)`` pairs that passed authentication.

    Keyed like Cilium's ``cilium_auth_map``: by the security identities of both sides (and
    the auth type), so one authenticated pair covers every endpoint of the local identity.

    Behaves like :attr:`SimulatorBackend.auth_pairs` (a set) and writes through to the
    ``cil_auth`` map, so code written for the simulator works unchanged.
    """

    def __init__(self, fd_of: Callable[[], int]) -> None:
        self._fd_of = fd_of
        self._pairs: set[tuple[int, int, int]] = set()

    def __contains__(self, item: object) -> bool:
        return item in self._pairs

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return iter(set(self._pairs))

    def __len__(self) -> int:
        return len(self._pairs)

    def add(self, value: tuple[int, int, int], *, expiration_ns: int = 0) -> None:
        """Record a pair; ``expiration_ns`` is a CLOCK_MONOTONIC deadline (0 = never)."""
        local, remote, auth = value
        key = S.auth_key_to_c(local, remote, auth)
        L.map_update(self._fd_of(), key, S.AuthInfo(expiration=expiration_ns))
        self._pairs.add((local, remote, auth))

    def discard(self, value: tuple[int, int, int]) -> None:
        local, remote, auth = value
        L.map_delete(self._fd_of(), S.auth_key_to_c(local, remote, auth))
        self._pairs.discard((local, remote, auth))


# ---------------------------------------------------------------- network namespaces
_T = TypeVar("_T")
_THREAD_NETNS = "/proc/thread-self/ns/net"
_CLONE_NEWNET = 0x40000000


@functools.cache
def _libc_setns() -> Callable[[int, int], int]:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.setns.restype = ctypes.c_int
    fn: Callable[[int, int], int] = libc.setns
    return fn


def _open_thread_netns() -> L.OwnedFd:
    """An fd of the calling thread's network namespace (it also keeps that namespace alive)."""
    return L.OwnedFd(os.open(_THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC), "network namespace of a tc attachment")


def _call_in_netns(netns: L.OwnedFd, fn: Callable[[], _T]) -> _T:
    """Run ``fn()`` in the network namespace ``netns`` refers to and return its result.

    Netlink (``bpf_tc_*``) acts in the calling thread's namespace, and an ifindex means
    nothing outside its namespace.  When the caller is elsewhere, a short-lived thread enters
    ``netns`` with setns(2), runs ``fn`` and exits: a namespace is per thread, so no other
    thread of the process ever changes namespace.  The caller's own namespace needs no
    setns, hence no CAP_SYS_ADMIN.
    """
    here, there = os.stat(_THREAD_NETNS), os.fstat(netns.fd)
    if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
        return fn()
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            if _libc_setns()(netns.fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into the attachment's network namespace: {os.strerror(err)}")
            outcome.append((True, fn()))
        except BaseException as exc:  # handed to the caller's thread below
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="ciliumpy-netns", daemon=True)
    try:
        thread.start()
    except RuntimeError as exc:  # interpreter shutdown: callers treat it like a netlink error
        raise OSError(errno_mod.EAGAIN, f"cannot start a thread to enter a network namespace: {exc}") from exc
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    result: _T = value
    return result


# ---------------------------------------------------------------- tc attachment
@attrs.define(eq=False)
class TCAttachment:
    """A program attached to a clsact hook of one interface (by :meth:`EBPFBackend.attach`).

    ``ifindex`` belongs to the network namespace the attach ran in.  The attachment keeps
    that namespace (an fd of it) until it is detached, and ``detach()`` -- also when
    ``close()`` of the backend runs it -- removes the filter there, from whichever thread
    and namespace it is called; another namespace's interface with the same ifindex is never
    touched.  ``detach()`` is idempotent.
    """

    ifindex: int
    hook: str
    program: Direction
    handle: int
    priority: int
    prog_id: int
    _owner: _Kernel | None = attrs.field(default=None, repr=False)
    _netns: L.OwnedFd | None = attrs.field(default=None, repr=False)

    @property
    def attached(self) -> bool:
        """False once detached (explicitly or by the backend's ``close()``)."""
        return self._owner is not None

    def detach(self) -> None:
        """Remove the tc filter (no-op when already detached)."""
        owner, self._owner = self._owner, None
        if owner is None:
            return
        netns, self._netns = self._netns, None
        with contextlib.suppress(ValueError):
            owner.attachments.remove(self)
        hook = L.opts(L.bpf_tc_hook, ifindex=self.ifindex, attach_point=_TC_HOOKS[self.hook])
        tc = L.opts(L.bpf_tc_opts, handle=self.handle, priority=self.priority)

        def tc_detach() -> None:
            L.library().bpf_tc_detach(ctypes.byref(hook), ctypes.byref(tc))

        try:
            if netns is None:  # made by hand, without a namespace: the caller's is meant
                tc_detach()
            else:
                _call_in_netns(netns, tc_detach)
        finally:
            if netns is not None:
                netns.close()

    def __enter__(self) -> TCAttachment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()


_TC_HOOKS = {"ingress": L.BPF_TC_INGRESS, "egress": L.BPF_TC_EGRESS}


# ---------------------------------------------------------------- the backend
class EBPFBackend:
    """Datapath backend running ciliumpy's tc programs in the kernel.

    >>> with EBPFBackend() as backend:                      # doctest: +SKIP
    ...     backend.apply(update)
    ...     backend.evaluate(packet, Direction.INGRESS)

    Map capacities are fixed at load time: ``policy_map_max_entries`` per endpoint (like
    Cilium's ``bpf-policy-map-max``), ``ipcache_max_entries``, ``endpoints_max_entries``
    (local addresses), ``ct_max_entries`` and ``ringbuf_size`` (a power of two >= 4096).
    ``extended_ip_protocols`` is Cilium's ``enable-extended-ip-protocols`` (off by default,
    as in Cilium: protocols other than TCP, UDP, SCTP and ICMP are dropped with 137).

    Thread-safe: map updates, test runs and ring-buffer reads take turns, and each
    :meth:`evaluate` reads its own flow event.  :meth:`apply` is atomic (a full map raises
    :class:`~ciliumpy.exceptions.MapFullError` naming it, with every map as before) and
    orders its writes so that traffic through attached programs gets, at each hook, the old
    verdict, the new one or a drop (docs/concurrency.md).
    """

    name: ClassVar[str] = "ebpf"

    def __init__(
        self,
        *,
        object_path: str | os.PathLike[str] | None = None,
        policy_map_max_entries: int = 16384,
        ipcache_max_entries: int = 512000,
        endpoints_max_entries: int = 4096,
        ct_max_entries: int = 65536,
        ringbuf_size: int = 256 * 1024,
        event_mode: S.EventMode = S.EventMode.ALL,
        extended_ip_protocols: bool = False,
    ) -> None:
        self._kernel = _Kernel()
        # One lock for map writes, test runs and ring-buffer reads: a test run's flow event is
        # read by the thread that ran it, and no answer is computed from half-written maps.
        self._lock = threading.RLock()
        self._backlog: collections.deque[DatapathEvent] = collections.deque(maxlen=_BACKLOG_MAX)
        self._finalizer = weakref.finalize(self, _release_leaked, self._kernel)
        self._state = _State()
        self._cookies: dict[frozenset[RuleOrigin], int] = {frozenset(): 0}
        self._origins: list[frozenset[RuleOrigin]] = [frozenset()]
        self._policy_max = policy_map_max_entries
        self._ncpus = L.possible_cpus()
        try:
            self._load(
                Path(object_path) if object_path is not None else OBJECT_PATH,
                {
                    b"cil_ipcache": ipcache_max_entries,
                    b"cil_lxc": endpoints_max_entries,
                    b"cil_ct": ct_max_entries,
                    b"cil_events": ringbuf_size,
                },
            )
            self._fds = {
                name: int(L.library().bpf_map__fd(self._map(name)))
                for name in (
                    b"cil_lxc",
                    b"cil_ipcache",
                    b"cil_policy",
                    b"cil_ct",
                    b"cil_auth",
                    b"cil_policystats",
                    b"cil_config",
                    b"cil_events",
                    b"cil_lb_service",
                    b"cil_lb_backend",
                    b"cil_lb_revnat",
                )
            }
            self._capacity = {
                name: int(L.library().bpf_map__max_entries(self._map(name)))
                for name in (b"cil_lxc", b"cil_ipcache", b"cil_policy")
            }
            self._prog_fds = {d: int(L.library().bpf_program__fd(self._program(n))) for d, n in PROGRAMS.items()}
            self._kernel.rb = L.library().ring_buffer__new(self._fds[b"cil_events"], self._kernel.sample_cb, None, None)
            self._event_mode = S.EventMode.ALL
            self._extended = bool(extended_ip_protocols)
            self._proxy_redirect = False
            self.event_mode = event_mode
        except BaseException:
            self.close()
            raise
        self._auth = AuthPairs(functools.partial(_map_fd_of, self._kernel, self._fds, b"cil_auth"))

    # -- probing and loading -------------------------------------------------------------
    @classmethod
    def probe(cls) -> None:
        """Raise :class:`BackendUnavailableError` saying what is missing and how to get it."""
        missing: list[str] = []
        if not _has_bpf_privileges():
            missing.append(
                "privileges: loading tc programs needs root or CAP_BPF + CAP_NET_ADMIN "
                "(run as root, or `setcap cap_bpf,cap_net_admin+ep` on the interpreter)"
            )
        release = _kernel_version()
        if release < (5, 10):
            version = ".".join(map(str, release))
            missing.append(
                f"kernel {version} is too old: the datapath needs Linux >= 5.10 "
                "(ring buffer 5.8, bpf_redirect_peer 5.10)"
            )
        if not OBJECT_PATH.exists():
            missing.append(
                f"{OBJECT_PATH} is missing: build it with `python bpf/build.py` (needs clang) or reinstall ciliumpy"
            )
        try:
            major, minor = L.version()
        except OSError as exc:
            missing.append(
                f"libbpf.so.1 cannot be loaded ({exc}); install it with "
                "`apt-get install libbpf1` (Debian/Ubuntu) or `dnf install libbpf`"
            )
        else:
            if (major, minor) < (1, 0):
                missing.append(f"libbpf {major}.{minor} is too old: >= 1.0 is needed")
            elif not missing:
                _probe_kernel_maps(missing)
        if missing:
            raise BackendUnavailableError("eBPF backend unavailable: " + "; ".join(missing))

    def _load(self, path: Path, sizes: Mapping[bytes, int]) -> None:
        lib = L.library()
        data = path.read_bytes()
        k = self._kernel
        k.obj_buf = ctypes.create_string_buffer(data, len(data))
        open_opts = L.opts(L.bpf_object_open_opts, object_name=b"ciliumpy")
        k.obj = lib.bpf_object__open_mem(k.obj_buf, len(data), ctypes.byref(open_opts))
        for name, size in sizes.items():
            lib.bpf_map__set_max_entries(self._map(name), size)
        # The inner-map template decides every endpoint trie's capacity.  libbpf 1.1 crashes
        # on bpf_map__set_max_entries() of its own template (the template has no object),
        # so we hand it a template of the right size instead; it is only needed during load.
        template = self._new_policy_trie(0)
        # A custom log buffer per program: on a verifier rejection it holds the log that
        # BPFError carries (libbpf retries with log level 1 into it).
        logs = {}
        for name in PROGRAMS.values():
            logs[name] = buf = ctypes.create_string_buffer(_VERIFIER_LOG_SIZE)
            lib.bpf_program__set_log_buf(self._program(name), buf, len(buf))
        try:
            lib.bpf_map__set_inner_map_fd(self._map(b"cil_policy"), template.fd)
            lib.bpf_object__load(k.obj)
        except BPFError as exc:
            log = "\n".join(
                f"--- {name.decode()}:\n{buf.value.decode(errors='replace')}" for name, buf in logs.items() if buf.value
            )
            raise BPFError(
                exc.errno or errno_mod.EINVAL,
                exc.strerror or "load failed",
                function="bpf_object__load",
                verifier_log=log,
            ) from exc
        finally:
            template.close()
        # libbpf keeps the log pointers (they cannot be reset after load, EBUSY): keep the
        # buffers alive as long as the object.
        k.log_bufs = list(logs.values())

    def _map(self, name: bytes) -> Any:
        return L.library().bpf_object__find_map_by_name(self._live_obj(), name)

    def _program(self, name: bytes) -> Any:
        return L.library().bpf_object__find_program_by_name(self._live_obj(), name)

    def _live_obj(self) -> Any:
        if self._kernel.obj is None:
            raise ValueError("EBPFBackend is closed")
        return self._kernel.obj

    def _fd(self, name: bytes) -> int:
        self._live_obj()
        return self._fds[name]

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Detach attached programs and release every kernel object; idempotent."""
        with self._lock:
            self._finalizer.detach()
            self._kernel.release()
            self._backlog.clear()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (or the finalizer released the object)."""
        return self._kernel.released

    def __enter__(self) -> EBPFBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def capabilities(self) -> frozenset[str]:
        """``conntrack``, ``counters``, ``events`` (ring buffer) and ``live`` (tc attach)."""
        return frozenset({"conntrack", "counters", "events", "live"})

    # -- runtime knobs ---------------------------------------------------------------------
    @property
    def event_mode(self) -> S.EventMode:
        """Which packets produce flow events: all, drops only, or none."""
        return self._event_mode

    @event_mode.setter
    def event_mode(self, mode: S.EventMode) -> None:
        mode = S.EventMode(mode)
        with self._lock:
            self._write_config(mode, self._extended)
            self._event_mode = mode

    @property
    def extended_ip_protocols(self) -> bool:
        """Cilium's ``enable-extended-ip-protocols``: whether IP protocols other than TCP,
        UDP, SCTP and the family's ICMP are judged by policy (with port 0) instead of being
        dropped with ``CT_UNKNOWN_L4_PROTOCOL`` (137), the default."""
        return self._extended

    @extended_ip_protocols.setter
    def extended_ip_protocols(self, enabled: bool) -> None:
        with self._lock:
            self._write_config(self._event_mode, bool(enabled))
            self._extended = bool(enabled)

    @property
    def proxy_redirect(self) -> bool:
        """Whether redirects go to proxy sockets in the namespace of the attached programs.

        Set by :class:`ciliumpy.lab.Lab` while its proxies run: a packet redirected by a
        policy entry with a proxy port is then assigned to the proxy's socket with
        ``bpf_sk_assign`` (or dropped with ``PROXY_LOOKUP_FAILED`` when no proxy listens
        there).  Off (the default), a redirect passes at L3/L4.  ``evaluate()`` is not
        affected: test runs never reach the proxy step (docs/ebpf.md).
        """
        return self._proxy_redirect

    @proxy_redirect.setter
    def proxy_redirect(self, enabled: bool) -> None:
        self._proxy_redirect = bool(enabled)
        self._write_config(self._event_mode, self._extended)

    def _write_config(self, mode: S.EventMode, extended: bool) -> None:
        config = S.CilConfig(
            event_mode=mode,
            extended_ip_protocols=int(extended),
            proxy_redirect=int(self._proxy_redirect),
        )
        L.map_update(self._fd(b"cil_config"), ctypes.c_uint32(0), config)

    @property
    def auth_pairs(self) -> AuthPairs:
        """Authenticated ``(local_identity, remote_identity, auth_type)`` triples (Cilium's auth map key)."""
        return self._auth

    @property
    def program_fds(self) -> Mapping[Direction, int]:
        """Program fds by policy direction (EGRESS: cil_from_container)."""
        self._live_obj()
        return dict(self._prog_fds)

    def map_fd(self, name: str) -> int:
        """The fd of one of the object's maps (``cil_lxc``, ``cil_ipcache``, ...)."""
        try:
            return self._fd(name.encode())
        except KeyError:
            raise KeyError(f"no map named {name!r}") from None

    @property
    def endpoint_devices(self) -> Mapping[int, EndpointDevice]:
        """The devices set with :meth:`set_endpoint_device`, by endpoint id."""
        return dict(self._state.devices)

    def set_endpoint_device(self, endpoint_id: int, device: EndpointDevice | None) -> None:
        """Deliver packets for ``endpoint_id`` straight to ``device`` (``None``: through the stack).

        With a device, ``cil_from_container`` of another endpoint with a device enforces this
        endpoint's ingress policy itself and hands the packet to the veth's peer with
        ``bpf_redirect_peer`` (Cilium's local delivery with BPF host routing); see
        docs/ebpf.md.  Only packets that arrive on the source endpoint's own device take
        that path, so :meth:`evaluate` and :meth:`test_run` are not affected.  The setting
        is kept across policy updates and applies when the endpoint appears.
        """
        with self._lock:
            self._set_endpoint_device(endpoint_id, device)

    def _set_endpoint_device(self, endpoint_id: int, device: EndpointDevice | None) -> None:
        self._live_obj()
        if not 1 <= endpoint_id <= MAX_ENDPOINT_ID:
            raise ValueError(f"endpoint id must be within 1..{MAX_ENDPOINT_ID}, got {endpoint_id}")
        old = self._state
        devices = dict(old.devices)
        if device is None:
            devices.pop(endpoint_id, None)
        else:
            devices[endpoint_id] = device
        if devices == old.devices:
            return
        new = attrs.evolve(old, devices=devices)
        rec = old.endpoints.get(endpoint_id)
        ips = {ip for ip in rec.ips if old.by_ip.get(ip) == endpoint_id} if rec is not None else set()
        with _all_or_nothing("setting a device", "set_endpoint_device") as journal, self._full(b"cil_lxc"):
            _MapContents(self._fd(b"cil_lxc"), S.EndpointKey, S.EndpointInfo).sync(
                _endpoint_bytes(old, ips), _endpoint_bytes(new, ips), journal
            )
        self._state = new

    def origins_of_cookie(self, cookie: int) -> frozenset[RuleOrigin]:
        """The rule origins of the policy entries tagged with ``cookie`` in flow events."""
        return self._origins[cookie]

    def _cookie(self, entry: PolicyEntry) -> int:
        cookie = self._cookies.get(entry.origins)
        if cookie is None:
            cookie = self._cookies[entry.origins] = len(self._origins)
            self._origins.append(entry.origins)
        return cookie

    # -- state -------------------------------------------------------------------------------
    def apply(self, update: DatapathUpdate) -> None:
        """Apply ``update`` atomically: on any error the maps keep their previous contents.

        Changed endpoint policies are built as fresh LPM tries first (a full trie raises
        :class:`~ciliumpy.exceptions.MapFullError` before anything changed) and swapped in
        with one update each; endpoint and ipcache writes are batched and journaled.
        """
        with self._lock:
            self._apply(update)

    def _apply(self, update: DatapathUpdate) -> None:
        self._live_obj()
        _validate(update)
        old = self._state
        new, touched = old.applied(update, self._encode_entry)
        staged: dict[int, L.OwnedFd] = {}
        previous: dict[int, L.OwnedFd | None] = {}
        try:
            with _all_or_nothing("apply", "apply") as journal:
                for ep_id in sorted(touched.policy):
                    table = new.policy.get(ep_id)
                    if table is not None and table != old.policy.get(ep_id):
                        staged[ep_id] = self._build_policy_map(ep_id, table)
                removed = [ep for ep in sorted(touched.policy) if ep in old.policy and ep not in new.policy]
                outer = self._fd(b"cil_policy")
                for ep_id in [*staged, *removed]:
                    previous[ep_id] = self._inner_map_fd(ep_id)
                ipc_old, ipc_new = _ipcache_bytes(old, touched.nets), _ipcache_bytes(new, touched.nets)
                # Endpoints whose policy changes while a remote identity it names moves in the
                # ipcache deny everything until both are done: no hook ever pairs an old policy
                # with a new identity or the reverse (docs/concurrency.md).
                locked = _lockdown(old, new, touched, [ep for ep in staged if ep in old.policy])
                for ep_id in locked:
                    previous.setdefault(ep_id, self._inner_map_fd(ep_id))
                journal.push(self._outer_restorer({ep: previous[ep] for ep in [*staged, *locked]}))
                # One batch per direction: the kernel waits an RCU grace period per syscall on
                # map-in-map writes (~5 ms measured), so per-endpoint calls would add up.
                early = [ep for ep in staged if ep not in locked]
                if early:  # new endpoints' tables come before their addresses become local
                    with self._full(b"cil_policy"):
                        L.map_update_batch(outer, _u32_array(early), _u32_array([staged[ep].fd for ep in early]))
                if locked:
                    L.map_delete_batch(outer, _u32_array(locked))
                with self._full(b"cil_ipcache"):
                    room = self._capacity[b"cil_ipcache"] - len(old.ipcache)
                    _MapContents(self._fd(b"cil_ipcache"), S.IpcacheKey, S.IpcacheEntry).sync(
                        ipc_old, ipc_new, journal, longest_first=len(ipc_new) <= room
                    )
                with self._full(b"cil_lxc"):
                    _MapContents(self._fd(b"cil_lxc"), S.EndpointKey, S.EndpointInfo).sync(
                        _endpoint_bytes(old, touched.ips), _endpoint_bytes(new, touched.ips), journal
                    )
                if new.services is not old.services:
                    self._sync_services(old.services, new.services, journal)
                if locked:
                    fds = [staged[ep].fd if ep in staged else _owned(previous[ep]).fd for ep in locked]
                    # Undone first on a later failure: locked again while the ipcache goes back.
                    journal.push(functools.partial(L.map_delete_batch, outer, _u32_array(locked)))
                    with self._full(b"cil_policy"):
                        L.map_update_batch(outer, _u32_array(locked), _u32_array(fds))
                if removed:
                    journal.push(self._outer_restorer({ep: previous[ep] for ep in removed}))
                    L.map_delete_batch(outer, _u32_array(removed))
        finally:
            for owned in [*staged.values(), *previous.values()]:
                if owned is not None:
                    owned.close()
        self._state = new
        if update.endpoints_delete:
            self._forget_endpoints(update.endpoints_delete)

    def _sync_services(self, old: dict[int, LBService], new: dict[int, LBService], journal: _Journal) -> None:
        # Reverse NAT and backends before the slots that lead to them; a packet in between
        # finds either the old or the new frontend, and a missing backend drops (fail closed).
        old_maps = S.lb_entries(old.values())
        new_maps = S.lb_entries(new.values())
        for name, key_type, value_type, idx in (
            (b"cil_lb_revnat", ctypes.c_uint16, S.LbRevnat, 2),
            (b"cil_lb_backend", ctypes.c_uint32, S.LbBackend, 1),
            (b"cil_lb_service", S.LbServiceKey, S.LbService, 0),
        ):
            _MapContents(self._fd(name), key_type, value_type).sync(old_maps[idx], new_maps[idx], journal)

    def frontend_of(self, address: IPAddress, port: int, protocol: int) -> LBService | None:
        """The service frontend at ``address:port/protocol`` in the maps, if any."""
        for svc in self._state.services.values():
            if svc.address == address and svc.port == port and svc.protocol == protocol:
                return svc
        return None

    def _encode_entry(self, key: MapStateKey, entry: PolicyEntry) -> tuple[bytes, bytes]:
        value = S.policy_entry_to_c(key, entry, self._cookie(entry))
        return bytes(S.policy_key_to_c(key)), bytes(value)

    def _new_policy_trie(self, ep_id: int) -> L.OwnedFd:
        # Flags and sizes must equal the cil_policy_inner template in bpf/ciliumpy.bpf.c.
        return L.map_create_lpm(
            f"cil_policy_{ep_id:05d}".encode(),
            ctypes.sizeof(S.PolicyKey),
            ctypes.sizeof(S.PolicyEntryValue),
            self._policy_max,
            L.BPF_F_NO_PREALLOC | L.BPF_F_RDONLY_PROG,
        )

    def _build_policy_map(self, ep_id: int, table: dict[bytes, bytes]) -> L.OwnedFd:
        fd = self._new_policy_trie(ep_id)
        try:
            with self._full(f"cil_policy_{ep_id:05d}".encode(), f"the policy map of endpoint {ep_id}"):
                _MapContents(fd.fd, S.PolicyKey, S.PolicyEntryValue).write(table, [])
        except BaseException:
            fd.close()
            raise
        return fd

    @contextlib.contextmanager
    def _full(self, name: bytes, what: str = "") -> Iterator[None]:
        """Name the map in a :class:`MapFullError` raised inside the block."""
        try:
            yield
        except MapFullError as exc:
            if exc.map_name:
                raise
            text = name.decode()
            capacity = self._capacity.get(name, self._policy_max)
            raise MapFullError(
                exc.errno or errno_mod.ENOSPC,
                f"{what or text} ({text}) is full: its {capacity} entries cannot hold the update ({exc.strerror})",
                function=exc.function,
                map_name=text,
            ) from exc

    def _inner_map_fd(self, ep_id: int) -> L.OwnedFd | None:
        """A new fd for the trie currently installed for ``ep_id`` (None if there is none)."""
        map_id = ctypes.c_uint32()
        if not L.map_lookup(self._fd(b"cil_policy"), ctypes.c_uint32(ep_id), map_id):
            return None
        return L.map_get_fd_by_id(map_id.value)

    def _outer_restorer(self, previous: Mapping[int, L.OwnedFd | None]) -> Callable[[], None]:
        """Undo for cil_policy writes: put back each endpoint's previous trie (or none)."""
        outer = self._fd(b"cil_policy")
        back = {ep: owned.fd for ep, owned in previous.items() if owned is not None}
        absent = [ep for ep, owned in previous.items() if owned is None]

        def restore() -> None:
            L.map_delete_batch(outer, _u32_array(absent))
            L.map_update_batch(outer, _u32_array(list(back)), _u32_array(list(back.values())))

        return restore

    def _forget_endpoints(self, ep_ids: frozenset[int]) -> None:
        """Drop conntrack entries and counters of deleted endpoints (as the simulator does)."""
        ct = self._fd(b"cil_ct")
        for key in [k for k in L.map_keys(ct, S.CtKey) if k.endpoint_id in ep_ids]:
            L.map_delete(ct, key)
        stats = self._fd(b"cil_policystats")
        for skey in [k for k in L.map_keys(stats, S.PolicyStatsKey) if k.endpoint_id in ep_ids]:
            L.map_delete(stats, skey)

    def reset_conntrack(self) -> None:
        """Forget every tracked connection."""
        with self._lock:
            ct = self._fd(b"cil_ct")
            for key in list(L.map_keys(ct, S.CtKey)):
                L.map_delete(ct, key)

    def policy_counters(self, endpoint_id: int) -> Mapping[MapStateKey, tuple[int, int]]:
        """Packets and bytes per chosen policy key of one endpoint, summed over CPUs."""
        with self._lock:
            return self._policy_counters(endpoint_id)

    def _policy_counters(self, endpoint_id: int) -> Mapping[MapStateKey, tuple[int, int]]:
        fd = self._fd(b"cil_policystats")
        out: dict[MapStateKey, tuple[int, int]] = {}
        values = (S.PolicyStatsValue * self._ncpus)()
        for key in list(L.map_keys(fd, S.PolicyStatsKey)):
            if key.endpoint_id != endpoint_id or not L.map_lookup(fd, key, values):
                continue
            out[S.stats_key_from_c(key)] = (
                sum(v.packets for v in values),
                sum(v.bytes for v in values),
            )
        return out

    # -- running the datapath --------------------------------------------------------------
    def test_run(self, frame: bytes, direction: Direction) -> tuple[int, list[DatapathEvent]]:
        """Run one hook's program on a raw Ethernet frame.

        Returns the tc verdict (0 = TC_ACT_OK, 2 = TC_ACT_SHOT) and the flow events read
        right after the run: its own, and those live traffic emitted meanwhile.  Events that
        were waiting before the run are kept for :meth:`drain_events`/:meth:`poll_events`.
        Conntrack, counters and events behave as for live traffic.  Test runs of several
        threads take turns, so each reads its own events.
        """
        data = ctypes.create_string_buffer(frame, len(frame))
        run = L.opts(
            L.bpf_test_run_opts,
            data_in=ctypes.cast(data, ctypes.c_void_p),
            data_size_in=len(frame),
            repeat=1,
        )
        with self._lock:
            prog_fd = self.program_fds[Direction(direction)]
            self._consume()
            self._backlog.extend(self._take_pending())
            L.library().bpf_prog_test_run_opts(prog_fd, ctypes.byref(run))
            self._consume()
            return int(run.retval), self._take_pending()

    def drain_events(self) -> list[DatapathEvent]:
        """Every flow event waiting in the ring buffer, oldest first (never blocks)."""
        with self._lock:
            self._consume()
            waiting = list(self._backlog)
            self._backlog.clear()
            return waiting + self._take_pending()

    def poll_events(self, timeout_ms: int = 100) -> list[DatapathEvent]:
        """Wait up to ``timeout_ms`` for flow events (live traffic), then return them all.

        The wait holds no lock: test runs and map updates of other threads go on meanwhile
        (their own events, read by them, do not end the wait).
        """
        deadline = time.monotonic() + max(0, timeout_ms) / 1000
        while True:
            with self._lock:
                self._live_obj()
                events = self.drain_events()
                epoll_fd = int(L.library().ring_buffer__epoll_fd(self._kernel.rb))
            left = deadline - time.monotonic()
            if events or left <= 0:
                return events
            # Only readiness is asked; the records are read under the lock above.
            poller = select.poll()
            poller.register(epoll_fd, select.POLLIN)
            poller.poll(max(1, int(left * 1000)))

    def _consume(self) -> None:
        """Move every record of the ring buffer into ``pending`` (caller holds the lock)."""
        self._live_obj()
        rc = int(L.library().ring_buffer__consume(self._kernel.rb))
        if rc < 0 and rc != -errno_mod.EINTR:
            raise BPFError(-rc, os.strerror(-rc), function="ring_buffer__consume")

    def _take_pending(self) -> list[DatapathEvent]:
        k = self._kernel
        records, k.pending = k.pending, []
        size = ctypes.sizeof(S.FlowEvent)
        return [DatapathEvent.from_c(S.FlowEvent.from_buffer_copy(r[:size])) for r in records]

    def evaluate(self, packet: Packet, direction: Direction) -> DatapathResult:
        """Run the ``direction`` hook on ``packet`` in the kernel and report its verdict.

        Thread-safe: concurrent evaluations take turns, and each finds its verdict among the
        events by the packet's addresses, ports, protocol, direction and length, so events
        of live traffic read at the same time are left for :meth:`poll_events`.
        """
        direction = Direction(direction)
        frame = build_frame(packet)
        with self._lock:
            mode = self._event_mode
            if mode != S.EventMode.ALL:  # the verdict travels in the event
                self.event_mode = S.EventMode.ALL
            try:
                retval, events = self.test_run(frame, direction)
            finally:
                if mode != S.EventMode.ALL:
                    self.event_mode = mode
            mine = [e for e in events if e.direction == direction and e.length == len(frame)]
            if len(mine) > 1:  # live traffic's events were read too: tell them apart
                mine = [e for e in mine if _is_event_of(e, packet)]
            self._backlog.extend(e for e in events if not any(e is m for m in mine))
        if len(mine) != 1:
            raise BPFError(
                errno_mod.EPROTO,
                f"expected one flow event for {packet!r}, got {len(mine)} of {len(events)}",
                function="evaluate",
            )
        result = self._with_nat(mine[0].result(), mine[0], packet)
        expected = _TC_ACT_SHOT if result.action == Action.DROP else _TC_ACT_OK
        if retval != expected:
            raise BPFError(
                errno_mod.EPROTO,
                f"program returned {retval} but reported {result.action.name}",
                function="evaluate",
            )
        return result

    def _with_nat(self, result: DatapathResult, ev: DatapathEvent, packet: Packet) -> DatapathResult:
        """Add the service translation the event shows (its addresses after the NAT)."""
        if not result.enforced or not self._state.services:
            return result
        if result.ct_state == CTState.REPLY:
            if ev.src is not None and (ev.src, ev.sport) != (packet.src, packet.sport):
                front = self.frontend_of(ev.src, ev.sport, packet.protocol)
                return attrs.evolve(
                    result, service_id=front.service_id if front else 0, nat_address=ev.src, nat_port=ev.sport
                )
            return result
        if result.direction != Direction.EGRESS:
            return result
        front = self.frontend_of(packet.dst, packet.dport, packet.protocol)
        if front is None or not packet.carries_ports or packet.is_icmp:
            return result
        if result.drop_reason == DropReason.NO_SERVICE:
            return attrs.evolve(result, service_id=front.service_id)
        return attrs.evolve(result, service_id=front.service_id, nat_address=ev.dst, nat_port=ev.dport)

    # -- live attachment -----------------------------------------------------------------
    def attach(
        self,
        interface: str | int,
        *,
        program: Direction,
        hook: str,
        priority: int = 1,
        handle: int = 1,
    ) -> TCAttachment:
        """Attach the ``program`` direction's program to ``interface``'s clsact ``hook``.

        On the host side of an endpoint's veth, Cilium's placement is ``program=EGRESS``
        (cil_from_container) on tc ``"ingress"`` and ``program=INGRESS`` on tc ``"egress"``.
        The interface is looked up and the filter attached in the calling thread's network
        namespace, which the returned attachment remembers for its ``detach()``; an existing
        clsact qdisc is reused and an existing filter with the same handle/priority replaced.
        """
        if hook not in _TC_HOOKS:
            raise ValueError(f"hook must be 'ingress' or 'egress', got {hook!r}")
        ifindex = interface if isinstance(interface, int) else socket.if_nametoindex(interface)
        lib = L.library()
        tc_hook = L.opts(L.bpf_tc_hook, ifindex=ifindex, attach_point=_TC_HOOKS[hook])
        rc = int(lib.bpf_tc_hook_create(ctypes.byref(tc_hook)))
        if rc < 0 and rc != -errno_mod.EEXIST:  # EEXIST: the clsact qdisc is already there
            raise BPFError(-rc, os.strerror(-rc), function="bpf_tc_hook_create")
        tc = L.opts(
            L.bpf_tc_opts,
            prog_fd=self.program_fds[Direction(program)],
            flags=L.BPF_TC_F_REPLACE,
            handle=handle,
            priority=priority,
        )
        # Opened before the attach: a filter must never exist without the means to remove it.
        netns = _open_thread_netns()
        try:
            lib.bpf_tc_attach(ctypes.byref(tc_hook), ctypes.byref(tc))
        except BaseException:
            netns.close()
            raise
        att = TCAttachment(
            ifindex=ifindex,
            hook=hook,
            program=Direction(program),
            handle=tc.handle,
            priority=tc.priority,
            prog_id=tc.prog_id,
            owner=self._kernel,
            netns=netns,
        )
        self._kernel.attachments.append(att)
        return att

    def detach(self, attachment: TCAttachment) -> None:
        """Detach a program attached by :meth:`attach` (no-op if already detached)."""
        attachment.detach()


# ---------------------------------------------------------------- helpers
def _map_fd_of(kernel: _Kernel, fds: Mapping[bytes, int], name: bytes) -> int:
    # Used instead of a bound method so helpers do not keep the backend alive.
    if kernel.released:
        raise ValueError("EBPFBackend is closed")
    return fds[name]


def _is_event_of(event: DatapathEvent, packet: Packet) -> bool:
    """Whether ``event`` (of the right hook and length) reports ``packet``, not other traffic."""
    if (event.src, event.dst, event.protocol) != (packet.src, packet.dst, packet.protocol):
        return False
    return not packet.carries_ports or packet.is_icmp or (event.sport, event.dport) == (packet.sport, packet.dport)


def _lpm_length(key: bytes) -> int:
    """The prefix length of an LPM trie key (its first field, a host-order u32)."""
    return int.from_bytes(key[:4], sys.byteorder)


def _owned(fd: L.OwnedFd | None) -> L.OwnedFd:
    assert fd is not None  # a locked endpoint had a table before the update
    return fd


def _covering(table: Mapping[IPNetwork, int], net: IPNetwork) -> int:
    """The identity of ``net``'s longest match in an ipcache table (world when none)."""
    for plen in range(net.prefixlen, -1, -1):
        found = table.get(net.supernet(new_prefix=plen) if plen != net.prefixlen else net)
        if found is not None:
            return found
    return ID_WORLD


def _lockdown(old: _State, new: _State, touched: _Touched, changed: list[int]) -> list[int]:
    """Endpoints whose policy changes and names an identity that addresses move from or to.

    Their table swap and the ipcache writes are two steps a hook could see apart (a new
    table judging an address by its old identity, or the reverse), so they hold no table
    (deny all) until both are done.  Other endpoints cannot be caught in between: a hook
    judges one remote address, whose identity changes in one write, by one table.
    """
    if not changed:
        return []
    moved: set[int] = set()
    for net in touched.nets:
        if old.ipcache.get(net) != new.ipcache.get(net):
            before, after = _covering(old.ipcache, net), _covering(new.ipcache, net)
            if before != after:
                moved.update((before, after))
    if not moved:
        return []

    def names_moved(table: Mapping[bytes, bytes]) -> bool:
        # sec_label, the policy key's second u32
        return any(int.from_bytes(k[4:8], sys.byteorder) in moved for k in table)

    return [ep for ep in changed if names_moved(old.policy[ep]) or names_moved(new.policy[ep])]


def _u32_array(values: list[int]) -> ctypes.Array[ctypes.c_uint32]:
    return (ctypes.c_uint32 * len(values))(*values)


def _ipcache_bytes(state: _State, nets: set[IPNetwork]) -> dict[bytes, bytes]:
    """The ipcache entries among ``nets``, as map key/value bytes."""
    return {
        bytes(S.ipcache_key_to_c(net)): bytes(S.IpcacheEntry(sec_identity=state.ipcache[net]))
        for net in nets
        if net in state.ipcache
    }


def _endpoint_bytes(state: _State, ips: set[IPAddress]) -> dict[bytes, bytes]:
    """The local-address entries among ``ips``, as map key/value bytes."""
    out = {}
    for ip in ips:
        ep_id = state.by_ip.get(ip)
        if ep_id is not None:
            dev = state.devices.get(ep_id)
            info = S.endpoint_info_to_c(
                ep_id, state.endpoints[ep_id].identity, None if dev is None else (dev.ifindex, dev.mac, dev.node_mac)
            )
            out[bytes(S.endpoint_key_to_c(ip))] = bytes(info)
    return out


def _has_bpf_privileges() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            line = next(x for x in fh if x.startswith("CapEff:"))
    except (OSError, StopIteration):
        return False
    caps = int(line.split()[1], 16)

    def has(cap: int) -> bool:
        return bool(caps >> cap & 1)

    return (has(_CAP_BPF) or has(_CAP_SYS_ADMIN)) and (has(_CAP_NET_ADMIN) or has(_CAP_SYS_ADMIN))


def _kernel_version() -> tuple[int, int]:
    parts = os.uname().release.split(".")
    try:
        return (int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0))
    except (IndexError, ValueError):
        return (0, 0)


def _probe_kernel_maps(missing: list[str]) -> None:
    """The kernel must let us create an LPM trie (the bpf() syscall may be filtered)."""
    try:
        L.map_create_lpm(b"cil_probe", 8, 4, 1, L.BPF_F_NO_PREALLOC).close()
    except OSError as exc:
        missing.append(
            f"the kernel refused to create a BPF map ({exc}); check privileges, seccomp "
            "and that the kernel has CONFIG_BPF_SYSCALL"
        )
