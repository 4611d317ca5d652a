"""A bounded flow store per cluster, like Hubble's ring buffer of flows.

The cluster appends every decision to its :class:`~ciliumpy._events.EventLog` without
waiting; the store decodes new events into flows when it is read (or when the log is about
to overwrite unread events), as Hubble's observer decodes the monitor's ring buffer. Each
flow is kept as a compact record (a tuple of numbers and interned ids, see ``_filter``) so
that filters run as one compiled comprehension; :class:`Flow` objects are built only for
the flows a caller reads.
"""

from __future__ import annotations

import threading
import time as _time
import uuid as _uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .._datapath import Action, CTState, Direction
from .._verdict import Verdict
from ._build import FlowBuilder, Spec, http_url, specs_of, unenforced
from ._filter import (
    R_INDEX,
    R_SOURCE,
    FlowFilter,
    Tables,
    build_filters,
    compile_predicate,
    items_from_kwargs,
)
from ._flow import VERDICTS, Flow

if TYPE_CHECKING:
    from .._cluster import Cluster

__all__ = ["DEFAULT_CAPACITY", "FlowStore", "store_of"]

DEFAULT_CAPACITY = 4095  # Hubble's default hubble-event-buffer-capacity

_VERDICT_CODE = {name: i for i, name in enumerate(VERDICTS)}
_DIRECTION_CODE = {"": 0, "TRAFFIC_DIRECTION_UNKNOWN": 0, "INGRESS": 1, "EGRESS": 2}
_L4_CODE = {"TCP": 6, "UDP": 17, "ICMPv4": 1, "ICMPv6": 58, "SCTP": 132}
_FLAG_BITS = {"FIN": 1, "SYN": 2, "RST": 4, "PSH": 8, "ACK": 16, "URG": 32, "ECE": 64, "CWR": 128, "NS": 256}
_DROP_NAME: dict[int, str] = {}
_L4_PROTOS = frozenset({6, 17, 132, 1, 58})
_EGRESS = Direction.EGRESS
_DROP, _REDIRECT, _ALLOW = Action.DROP, Action.REDIRECT, Action.ALLOW
_NEW, _REPLY, _RELATED = CTState.NEW, CTState.REPLY, CTState.RELATED


def _has_l7(v: Verdict) -> bool:
    return any(h is not None and h.l7 is not None for h in (v.egress, v.ingress))


def _drop_name(reason: int) -> str:
    name = _DROP_NAME.get(reason)
    if name is None:
        from .._datapath import DropReason

        try:
            name = DropReason(reason).name
        except ValueError:
            name = str(reason)
        _DROP_NAME[reason] = name
    return name


class FlowStore(Tables):
    """The flows of one cluster, newest last, at most ``capacity`` of them.

    Get it with :func:`store_of` (``Cluster.observe``/``Cluster.flows`` do). Flows read
    from files can be added with :meth:`add_flows`.
    """

    def __init__(self, cluster: Cluster | None = None, capacity: int = DEFAULT_CAPACITY, node_name: str = "") -> None:
        if capacity < 1:
            raise ValueError(f"flow store capacity must be at least 1, got {capacity}")
        self._cluster_ref = weakref.ref(cluster) if cluster is not None else None
        self.capacity = capacity
        self.records: deque[tuple[Any, ...]] = deque(maxlen=capacity)
        self.builder = FlowBuilder(node_name or "ciliumpy")
        self.lost = 0  # events overwritten in the cluster's log before they were decoded
        self.seen = 0  # flows ever added
        self._seq = cluster.events.seq if cluster is not None else 0
        self._lock = threading.RLock()
        self._uuid_prefix = _uuid.uuid4().hex[:20]
        self._subscribers: list[Callable[[tuple[Any, ...]], None]] = []
        self._specs: dict[int, tuple[Any, list[Spec]]] = {}
        # interned values (Tables)
        self.endpoints = [("", "", (), 0)]
        self._ep_ids: dict[Any, int] = {self.endpoints[0]: 0}
        self._peer_ids: dict[int, tuple[Any, int, int, int]] = {}
        self.ips = [""]
        self._ip_ids: dict[Any, int] = {"": 0}
        self.l7 = [("", "", "", "", 0, "")]
        self._l7_ids: dict[Any, int] = {self.l7[0]: 0}
        self.names = [()]
        self._name_ids: dict[tuple[str, ...], int] = {(): 0}
        if cluster is not None:
            log = cluster.events
            if log.capacity < capacity:
                log.capacity = capacity
            log.drain = self.flush

    @property
    def cluster(self) -> Cluster | None:
        return self._cluster_ref() if self._cluster_ref is not None else None

    # -- intake ----------------------------------------------------------------------------
    def flush(self) -> None:
        """Decode the cluster's events that arrived since the last read."""
        cluster = self.cluster
        if cluster is None:
            return
        with self._lock:
            events, lost, self._seq = cluster.events.since(self._seq)
            self.lost += lost
            for event in events:
                self._add_event(event, cluster)

    def add_event(self, event: Any) -> None:
        """Decode one decision (Verdict, Resolution, lab result) into flows now."""
        with self._lock:
            self._add_event(event, self.cluster)

    def _add_event(self, event: Any, cluster: Cluster | None) -> None:
        if type(event) is Verdict and not (event.request is not None and _has_l7(event)):
            self._verdict_records(event)
            return
        append = self._append
        for i, spec in enumerate(specs_of(event, cluster)):
            append(self._record_of_spec(spec, event, i))

    def add_flows(self, flows: Iterable[Flow]) -> None:
        """Add flows read from elsewhere (``hubble observe -o json`` files)."""
        with self._lock:
            append = self._append
            for i, flow in enumerate(flows):
                append(self._record_of_flow(flow, i))

    def _append(self, record: tuple[Any, ...]) -> None:
        self.records.append(record)
        self.seen += 1
        for fn in self._subscribers:
            fn(record)

    def subscribe(self, fn: Callable[[tuple[Any, ...]], None]) -> None:
        """Call ``fn`` with every record added from now on (metrics use this)."""
        self._subscribers.append(fn)

    # -- interning -------------------------------------------------------------------------
    def _peer_key(self, peer: Any) -> tuple[Any, int, int, int]:
        """``(peer, endpoint id, ip id, names id)`` of a PeerInfo (cached by identity)."""
        hit = self._peer_ids.get(id(peer))
        if hit is not None and hit[0] is peer:
            return hit
        key = (peer.namespace, peer.pod_name, tuple(peer.labels), peer.identity)
        names = self._names_id(tuple(n.rstrip(".") for n in peer.names)) if peer.names else 0
        if len(self._peer_ids) > 100_000:
            self._peer_ids.clear()
        found = self._peer_ids[id(peer)] = (peer, self._ep_id(key), self._ip_id(peer.ip), names)
        return found

    def _ep_id(self, key: tuple[str, str, tuple[str, ...], int]) -> int:
        eid = self._ep_ids.get(key)
        if eid is None:
            eid = self._ep_ids[key] = len(self.endpoints)
            self.endpoints.append(key)
        return eid

    def _ip_id(self, ip: Any) -> int:
        iid = self._ip_ids.get(ip)
        if iid is None:
            text = str(ip)
            iid = self._ip_ids.get(text)
            if iid is None:
                iid = len(self.ips)
                self.ips.append(text)
                self._ip_ids[text] = iid
            self._ip_ids[ip] = iid
        return iid

    def _l7_id(self, key: tuple[str, str, str, str, int, str]) -> int:
        lid = self._l7_ids.get(key)
        if lid is None:
            lid = self._l7_ids[key] = len(self.l7)
            self.l7.append(key)
        return lid

    def _names_id(self, names: tuple[str, ...]) -> int:
        if not names:
            return 0
        nid = self._name_ids.get(names)
        if nid is None:
            nid = self._name_ids[names] = len(self.names)
            self.names.append(names)
        return nid

    # -- records ---------------------------------------------------------------------------
    def _record_of_spec(self, s: Spec, event: Any, index: int) -> tuple[Any, ...]:
        p = s.packet
        reply = bool(s.is_reply)
        src, dst = (s.dst, s.src) if reply else (s.src, s.dst)
        proto = p.protocol
        ported = proto in (6, 17, 132)
        sport, dport = (p.dport, p.sport) if reply else (p.sport, p.dport)
        if not ported:
            sport = dport = -1
        l7 = 0
        flags = 0
        drop = ""
        if s.l7 is not None:
            l7 = self._l7_id(_l7_key(s))
        else:
            if proto == 6:
                flags = p.tcp_flags
            if s.verdict == 2 and s.hook is not None and s.hook.drop_reason is not None:
                drop = _drop_name(int(s.hook.drop_reason))
        _, sid, sip, snames = self._peer_key(src)
        _, did, dip, dnames = self._peer_key(dst)
        return (
            s.time,
            s.verdict,
            s.event_type,
            (s.event_type << 16) | s.sub_type,
            s.traffic,
            sid,
            did,
            sip,
            dip,
            proto if proto in _L4_PROTOS else 0,
            sport,
            dport,
            l7,
            snames,
            dnames,
            drop,
            flags,
            s.is_reply,
            self.builder.node_name,
            event,
            index,
        )

    def _verdict_records(self, v: Verdict) -> None:
        """The records of a Verdict without proxy records, straight from its hooks.

        This is the hot path of decoding: it must give the records ``_record_of_spec`` gives
        for ``specs_of(v)`` (a test compares them), without building the specs.
        """
        t = v.time if v.time is not None else 0.0
        p = v.packet
        proto = p.protocol
        l4 = proto if proto in _L4_PROTOS else 0
        ported = proto in (6, 17, 132)
        flags = p.tcp_flags if proto == 6 else 0
        _, sid, sip, snames = self._peer_key(v.src)
        _, did, dip, dnames = self._peer_key(v.dst)
        sport, dport = (p.sport, p.dport) if ported else (-1, -1)
        node = self.builder.node_name
        out: list[tuple[Any, ...]] = []
        append = out.append
        local = v.ingress is not None and v.ingress.result.enforced
        i = 0
        for hook in (v.egress, v.ingress):
            if hook is None:
                continue
            res = hook.result
            egress = res.direction == _EGRESS
            direction = 2 if egress else 1
            action = res.action
            ct = res.ct_state
            reply = ct == _REPLY
            if (
                res.enforced
                and (action == _DROP or ct in (_NEW, _RELATED))
                and not (action == _ALLOW and hook.entry is not None and unenforced(hook.entry.origins))
            ):
                verdict = 2 if action == _DROP else 5 if action == _REDIRECT else 1
                drop = _drop_name(int(res.drop_reason)) if verdict == 2 and res.drop_reason is not None else ""
                append((t, verdict, 5, 5 << 16, direction, sid, did, sip, dip, l4, sport, dport, 0,
                        snames, dnames, drop, flags, False, node, v, i))  # fmt: skip
                i += 1
            if action == _DROP:
                reason = int(res.drop_reason) if res.drop_reason is not None else 0
                drop = _drop_name(reason) if res.drop_reason is not None else ""
                append((t, 2, 1, (1 << 16) | reason, direction, sid, did, sip, dip, l4, sport, dport, 0,
                        snames, dnames, drop, flags, None, node, v, i))  # fmt: skip
                i += 1
                continue
            if action == _REDIRECT:
                sub, traffic = 1, direction
            elif not egress and res.enforced:
                sub, traffic = 0, (2 if reply else 1)
            elif egress and not local:
                sub, traffic = 3, (1 if reply else 2)
            else:
                continue
            if reply:
                append((t, 1, 4, (4 << 16) | sub, traffic, did, sid, dip, sip, l4, dport, sport, 0,
                        dnames, snames, "", flags, True, node, v, i))  # fmt: skip
            else:
                append((t, 1, 4, (4 << 16) | sub, traffic, sid, did, sip, dip, l4, sport, dport, 0,
                        snames, dnames, "", flags, False, node, v, i))  # fmt: skip
            i += 1
        self.records.extend(out)
        self.seen += len(out)
        for fn in self._subscribers:
            for r in out:
                fn(r)

    def _record_of_flow(self, f: Flow, index: int) -> tuple[Any, ...]:
        src = f.source
        dst = f.destination
        skey = (src.namespace, src.pod_name, src.labels, src.identity) if src else ("", "", (), 0)
        dkey = (dst.namespace, dst.pod_name, dst.labels, dst.identity) if dst else ("", "", (), 0)
        proto = 0
        sport = dport = -1
        flags = 0
        if f.l4 is not None:
            name = f.l4.protocol
            proto = _L4_CODE.get(name, 0)
            ports = f.l4.ports
            if ports is not None:
                sport, dport = ports.source_port, ports.destination_port
                if ports.flags is not None:
                    flags = sum(bit for n, bit in _FLAG_BITS.items() if getattr(ports.flags, n))
        l7 = 0
        if f.l7 is not None:
            l7 = self._l7_id(_l7_key_of_flow(f))
        et = f.event_type
        etype = et.type if et is not None else -1
        sub = et.sub_type if et is not None else 0
        return (
            f.timestamp,
            _VERDICT_CODE.get(f.verdict, 0),
            etype,
            (etype << 16) | sub if et is not None else -1,
            _DIRECTION_CODE.get(f.traffic_direction, 0),
            self._ep_id(skey),
            self._ep_id(dkey),
            self._ip_id(f.IP.source if f.IP else ""),
            self._ip_id(f.IP.destination if f.IP else ""),
            proto,
            sport,
            dport,
            l7,
            self._names_id(tuple(n.rstrip(".") for n in f.source_names)),
            self._names_id(tuple(n.rstrip(".") for n in f.destination_names)),
            f.drop_reason_desc,
            flags,
            f.is_reply,
            f.node_name,
            f,
            index,
        )

    def flow_of(self, record: tuple[Any, ...]) -> Flow:
        """The :class:`Flow` a record stands for."""
        source = record[R_SOURCE]
        if isinstance(source, Flow):
            return source
        specs = self._specs.get(id(source))
        if specs is None or specs[0] is not source:
            if len(self._specs) > 10_000:
                self._specs.clear()
            specs = self._specs[id(source)] = (source, specs_of(source, self.cluster))
        uid = f"{id(source) & 0xFFFFFFFFFFFF:012x}{record[R_INDEX]:04x}"
        text = self._uuid_prefix + uid
        uuid = f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:32]}"
        return self.builder.build(specs[1][record[R_INDEX]], uuid)

    # -- reading ---------------------------------------------------------------------------
    def select(
        self,
        allow: list[FlowFilter],
        deny: list[FlowFilter],
        *,
        since: float | None = None,
        until: float | None = None,
        first: int | None = None,
        last: int | None = None,
    ) -> list[tuple[Any, ...]]:
        """The records passing the filters, oldest first (``first``/``last`` keep N of them)."""
        self.flush()
        with self._lock:
            select = compile_predicate(allow, deny, self, since, until)
            records = self.records
            if first is not None and not allow and not deny and since is None and until is None:
                return list(records)[:first]
            if last is not None and not allow and not deny and since is None and until is None:
                return list(records)[-last:] if last else []
            found = select(records)
        if first is not None:
            return found[:first]
        if last is not None:
            return found[-last:] if last else []
        return found

    def observe(self, **filters: Any) -> list[Flow]:
        """Flows matching ``hubble observe``-style filters (see ``Cluster.observe``)."""
        since = _when(filters.pop("since", None))
        until = _when(filters.pop("until", None))
        first = filters.pop("first", None)
        last = filters.pop("last", None)
        if first is not None and last is not None:
            from ._filter import FilterError

            raise FilterError("--first and --last cannot be combined")
        allow, deny = build_filters(items_from_kwargs(filters))
        records = self.select(allow, deny, since=since, until=until, first=first, last=last)
        return [self.flow_of(r) for r in records]

    def follow(self, *, timeout: float | None = None, **filters: Any) -> Iterator[Flow]:
        """Yield stored flows matching the filters, then new ones as they arrive.

        Stops after ``timeout`` seconds without a new event (``None``: never).
        """
        cluster = self.cluster
        since = _when(filters.pop("since", None))
        allow, deny = build_filters(items_from_kwargs(filters))
        self.flush()
        seen = self.seen
        for r in self.select(allow, deny, since=since):
            yield self.flow_of(r)
        while cluster is not None:
            seq = cluster.events.seq
            if seq == self._seq and not cluster.events.wait(seq, timeout):
                return
            self.flush()
            with self._lock:
                new = self.seen - seen
                seen = self.seen
                fresh = list(self.records)[-new:] if new else []
            for r in compile_predicate(allow, deny, self)(fresh):
                yield self.flow_of(r)

    def __len__(self) -> int:
        self.flush()
        return len(self.records)

    def __iter__(self) -> Iterator[Flow]:
        self.flush()
        with self._lock:
            records = list(self.records)
        return (self.flow_of(r) for r in records)


def _l7_key(s: Spec) -> tuple[str, str, str, str, int, str]:
    from ._build import L7_DNS_REQUEST, L7_DNS_RESPONSE, L7_HTTP_REQUEST, L7_HTTP_RESPONSE

    assert s.l7 is not None
    kind, req, info = s.l7
    if kind == L7_HTTP_REQUEST:
        url = http_url(req, s.packet)
        return ("http", "REQUEST", req.method, url, 0 if info.allowed else (info.status or 403), "")
    if kind == L7_HTTP_RESPONSE:
        return ("http", "RESPONSE", req.method, http_url(req, s.packet), info.status or 200, "")
    if kind == L7_DNS_REQUEST:
        return ("dns", "REQUEST", "", "", 0, req.name)
    if kind == L7_DNS_RESPONSE:
        return ("dns", "RESPONSE", "", "", 0, req.name)
    return ("kafka", "REQUEST", "", "", 0, "")


def _l7_key_of_flow(f: Flow) -> tuple[str, str, str, str, int, str]:
    l7 = f.l7
    assert l7 is not None
    if l7.http is not None:
        return ("http", l7.type, l7.http.method, l7.http.url, l7.http.code, "")
    if l7.dns is not None:
        return ("dns", l7.type, "", "", 0, l7.dns.query)
    if l7.kafka is not None:
        return ("kafka", l7.type, "", "", 0, "")
    return ("", l7.type, "", "", 0, "")


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "ms": 0.001, "us": 1e-6, "ns": 1e-9}


def _when(value: Any) -> float | None:
    """``since``/``until``: seconds since the epoch, a datetime, RFC 3339 text or a
    duration before now as hubble accepts it (``3s``, ``4m``, ``1h43m``)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    import datetime as dt
    import re

    if isinstance(value, dt.datetime):
        return value.timestamp()
    text = str(value).strip()
    if re.fullmatch(r"(\d+(\.\d+)?(ns|us|ms|s|m|h))+", text):
        total = sum(float(n) * _UNITS[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(ns|us|ms|s|m|h)", text))
        return _time.time() - total
    from ._flow import parse_time

    try:
        return parse_time(text)
    except ValueError:
        from ._filter import FilterError

        raise FilterError(
            f"unable to parse time {text!r}: expected a duration such as 3s, 4m, 1h43m or an RFC 3339 time"
        ) from None


_STORES: weakref.WeakKeyDictionary[Any, FlowStore] = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


def store_of(cluster: Cluster, capacity: int | None = None) -> FlowStore:
    """The flow store of ``cluster``, created on first use (``capacity`` resizes it)."""
    with _STORES_LOCK:
        store = _STORES.get(cluster)
        if store is None or (capacity is not None and capacity != store.capacity):
            old = store
            store = FlowStore(cluster, capacity if capacity is not None else DEFAULT_CAPACITY)
            if old is not None:
                old.flush()
                store.records.extend(old.records)
                store._seq = old._seq
                store.endpoints, store._ep_ids, store._peer_ids = old.endpoints, old._ep_ids, old._peer_ids
                store.ips, store._ip_ids, store.l7, store._l7_ids = old.ips, old._ip_ids, old.l7, old._l7_ids
                store.names, store._name_ids = old.names, old._name_ids
                store._subscribers = old._subscribers
            else:
                # Events the cluster logged before anyone asked for flows are decoded too.
                store._seq = max(0, cluster.events.seq - len(cluster.events))
            _STORES[cluster] = store
        return store
