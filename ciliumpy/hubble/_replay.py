"""Replay recorded Hubble flows against policies: what would a change drop?

Flows recorded with ``hubble observe -o json`` are decoded into light observations (only the
fields replay needs, with msgspec's schema-directed decoder), mapped onto a cluster's
endpoints (by namespace/pod name, then IP, then labels; world and FQDN peers by address and
name) and judged by ``Cluster.check`` (HTTP flows with their request at L7, DNS flows by a
lookup through the DNS proxy). Verdicts are computed once per distinct connection, so a
million flows of a few thousand connections replay in seconds.
"""

from __future__ import annotations

import gzip
import html
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import attrs
import msgspec

from ..exceptions import FlowFormatError
from ._flow import Flow

if TYPE_CHECKING:
    from .._cluster import Cluster

__all__ = [
    "Observation",
    "ReplayReport",
    "ReplayedFlow",
    "cluster_from_flows",
    "read_observations",
    "replay",
]


# ---------------------------------------------------------------- fast decoding
class _Workload(msgspec.Struct, gc=False):
    name: str = ""
    kind: str = ""


class _Endpoint(msgspec.Struct, gc=False):
    ID: int = 0
    identity: int = 0
    namespace: str = ""
    labels: tuple[str, ...] = ()
    pod_name: str = ""
    workloads: tuple[_Workload, ...] = ()


class _IP(msgspec.Struct, gc=False):
    source: str = ""
    destination: str = ""


class _Ports(msgspec.Struct, gc=False):
    source_port: int = 0
    destination_port: int = 0


class _ICMP(msgspec.Struct, gc=False):
    type: int = 0
    code: int = 0


class _L4(msgspec.Struct, gc=False):
    TCP: Optional[_Ports] = None  # noqa: UP045 - msgspec reads the annotation at runtime
    UDP: Optional[_Ports] = None  # noqa: UP045
    SCTP: Optional[_Ports] = None  # noqa: UP045
    ICMPv4: Optional[_ICMP] = None  # noqa: UP045
    ICMPv6: Optional[_ICMP] = None  # noqa: UP045


class _HTTP(msgspec.Struct, gc=False):
    code: int = 0
    method: str = ""
    url: str = ""


class _DNS(msgspec.Struct, gc=False):
    query: str = ""
    ips: tuple[str, ...] = ()
    qtypes: tuple[str, ...] = ()


class _L7(msgspec.Struct, gc=False):
    type: str = ""
    http: Optional[_HTTP] = None  # noqa: UP045
    dns: Optional[_DNS] = None  # noqa: UP045


# Endpoints are kept as raw JSON and decoded once per distinct (endpoint, IP): most of a
# line's bytes are labels, and flows repeat their endpoints. Empty containers default to
# tuples: a list default is copied per record, and those copies are what the cyclic garbage
# collector then spends its time on. Only the fields replay reads are declared; msgspec skips
# the rest without building anything.
_NULL = msgspec.Raw(b"null")


class _Flow(msgspec.Struct, gc=False):
    time: str = ""
    verdict: str = ""
    IP: Optional[_IP] = None  # noqa: UP045
    l4: Optional[_L4] = None  # noqa: UP045
    source: msgspec.Raw = _NULL
    destination: msgspec.Raw = _NULL
    destination_names: tuple[str, ...] = ()
    l7: Optional[_L7] = None  # noqa: UP045
    is_reply: Optional[bool] = None  # noqa: UP045


class _Line(msgspec.Struct, gc=False):
    """A ``hubble observe -o json`` line: the flow under ``flow``; its other keys are skipped."""

    flow: Optional[_Flow] = None  # noqa: UP045


_DECODER = msgspec.json.Decoder(_Line)
_BARE = msgspec.json.Decoder(_Flow)  # legacy lines: the flow's own fields at the top level
_ENCODE = msgspec.json.Encoder().encode

# Peer = (namespace, pod_name, labels, identity, ip, workload)
Peer = tuple[str, str, tuple[str, ...], int, str, str]


class Observation(msgspec.Struct, frozen=True, gc=False):
    """What replay needs of one recorded flow: its connection and its recorded verdict.

    ``line`` is the line number in the recording, ``src``/``dst`` are the connection's sides
    (a reply flow is turned around), each ``(namespace, pod_name, labels, identity, ip,
    workload)``; ``l7`` is ``("http", method, path, host)``, ``("dns", query, qtype, "")`` or
    ``None``; ``names`` are the destination's DNS names and ``answers`` a DNS response's
    addresses.

    A frozen msgspec record rather than a named tuple or an attrs class: a million are built
    per replay, it is built by one C call, and it is not tracked by the cyclic garbage
    collector (it holds only strings, numbers and tuples of them), so a long decode does not
    make the collector walk every observation made so far.
    """

    line: int
    time: str
    verdict: str
    src: Peer
    dst: Peer
    protocol: str
    port: int | None
    l7: tuple[str, str, str, str] | None
    names: tuple[str, ...]
    answers: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.src, self.dst, self.protocol, self.port, self.l7, self.names)

    def describe(self) -> str:
        """``ns/pod -> ns/pod TCP/5432 (HTTP GET /x)``."""
        what = f"{self.protocol}/{self.port}" if self.port is not None else self.protocol
        if self.l7 is not None:
            kind, a, b, _ = self.l7
            what += f" ({'HTTP ' + a + ' ' + b if kind == 'http' else 'DNS ' + a})"
        return f"{_peer_text(self.src)} -> {_peer_text(self.dst, self.names)} {what}"


def _peer_text(p: Peer, names: Sequence[str] = ()) -> str:
    if p[1]:
        return f"{p[0]}/{p[1]}" if p[0] else p[1]
    if names:
        return ",".join(names)
    return p[4] or ",".join(p[2]) or "?"


_SHORT_POD = re.compile(r"^(.+?)(-[a-z0-9]+){1,2}$")


# Known peers by IP, each with the endpoint JSON it was decoded from: comparing raw bytes
# with those of the few endpoints seen at an IP is much cheaper than hashing them.
_PEERS: dict[str, list[tuple[msgspec.Raw, Peer]]] = {}
_ENDPOINT = msgspec.json.Decoder(_Endpoint)


def _peer(raw: msgspec.Raw, ip: str, where: str) -> Peer:
    """The peer an endpoint's raw JSON and IP name; ``where`` is the endpoint's JSON path."""
    known = _PEERS.get(ip)
    if known is None:
        if len(_PEERS) > 100_000:
            _PEERS.clear()
        known = _PEERS[ip] = []
    else:
        for seen, found in known:
            if seen == raw:
                return found
    data = bytes(raw)
    found = _new_peer(data, ip, where)
    if len(known) >= 16:
        del known[0]
    known.append((msgspec.Raw(data), found))
    return found


def _new_peer(raw: bytes, ip: str, where: str) -> Peer:
    if raw == b"null":
        return ("", "", (), 0, ip, "")
    try:
        ep = _ENDPOINT.decode(raw)
    except msgspec.ValidationError as exc:
        # name the field from the line's top, as decoding the whole line at once would
        raise msgspec.ValidationError(str(exc).replace("`$", f"`$.{where}", 1)) from None
    pod = ep.pod_name
    workload = ep.workloads[0].name if ep.workloads else (_SHORT_POD.sub(r"\1", pod) if pod else "")
    return (ep.namespace, pod, ep.labels, ep.identity, ip, workload)


def _observation(index: int, f: _Flow, where: tuple[str, str] = ("flow.source", "flow.destination")) -> Observation:
    ip = f.IP
    sip, dip = (ip.source, ip.destination) if ip is not None else ("", "")
    # The peer caches are searched inline: a call per side cost a tenth of the decoding time.
    raw = f.source
    for seen, src in _PEERS.get(sip, ()):  # noqa: B007 - the match is used after the loop
        if seen == raw:
            break
    else:
        src = _peer(raw, sip, where[0])
    raw = f.destination
    for seen, dst in _PEERS.get(dip, ()):  # noqa: B007
        if seen == raw:
            break
    else:
        dst = _peer(raw, dip, where[1])
    protocol, sport, dport = "", None, None
    l4 = f.l4
    if l4 is not None:
        ports = l4.TCP
        if ports is not None:
            protocol = "TCP"
        elif (ports := l4.UDP) is not None:
            protocol = "UDP"
        elif (ports := l4.SCTP) is not None:
            protocol = "SCTP"
        if ports is not None:
            sport, dport = ports.source_port, ports.destination_port
        elif l4.ICMPv4 is not None:
            protocol, dport = "ICMP", l4.ICMPv4.type
        elif l4.ICMPv6 is not None:
            protocol, dport = "ICMPv6", l4.ICMPv6.type
    l7: tuple[str, str, str, str] | None = None
    answers: tuple[str, ...] = ()
    seven = f.l7
    if seven is not None:
        if seven.http is not None:
            l7 = ("http", *_method_path_host(seven.http))
        elif seven.dns is not None:
            l7 = ("dns", seven.dns.query, seven.dns.qtypes[0] if seven.dns.qtypes else "A", "")
            answers = seven.dns.ips
    names = f.destination_names
    if names:
        names = tuple([n.rstrip(".") for n in names])
    if f.is_reply:
        # Judge the connection the reply belongs to: from its destination back to its source.
        src, dst = dst, src
        if sport is not None:
            dport = sport
        names = ()
    return Observation(index, f.time, f.verdict, src, dst, protocol, dport, l7, names, answers)


_BARE_WHERE = ("source", "destination")


def _method_path_host(h: _HTTP) -> tuple[str, str, str]:
    url = h.url
    host = ""
    path = url
    if "://" in url:
        rest = url.split("://", 1)[1]
        host, _, tail = rest.partition("/")
        path = "/" + tail
    return h.method, path, host


def read_observations(source: Any, *, errors: str = "raise") -> Iterator[Observation]:
    """Observations from a path (plain or .gz), a file object, lines, or Flow objects.

    A malformed line raises :class:`FlowFormatError` naming its number when the iteration
    reaches it; with ``errors="skip"`` it is left out. Files are read a few MiB at a time, so
    a recording of any size is decoded in bounded memory besides the observations kept.
    """
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    return _observations(source, errors)


def _observations(source: Any, errors: str) -> Iterator[Observation]:
    document: str | None = None
    if isinstance(source, str | Path):
        document = str(source)
        path = Path(source)
        with path.open("rb") as probe:
            gz = probe.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rb") if gz else path.open("rb") as fh:
            yield from _decode_batches(_read_batches(fh), document, errors)
        return
    if hasattr(source, "read"):
        yield from _decode_batches(_read_batches(source), getattr(source, "name", None), errors)
        return
    items = list(source) if not isinstance(source, list) else source
    if items and isinstance(items[0], Observation):
        yield from items
        return
    if items and isinstance(items[0], Flow):
        for i, flow in enumerate(items, 1):
            rec = _DECODER.decode(_ENCODE(flow.to_response()))
            yield _observation(i, rec.flow if rec.flow is not None else _Flow())
        return
    lines = iter(items)
    yield from _decode_batches(iter(lambda: list(itertools.islice(lines, 8192)), []), None, errors)


_CHUNK = 1 << 22


def _read_batches(fh: Any) -> Iterator[list[Any]]:
    """A file's lines, split at ``\\n`` as iterating the file would, a few MiB at a time.

    Binary lines are memoryviews into one buffer that every read refills: msgspec decodes
    them in place, which saves copying each line into a bytes object of its own, and reusing
    the buffer saves the kernel mapping fresh pages for every chunk (that alone cost as much
    as a third of the decoding time). A batch must be consumed before the next is asked for.
    """
    readinto = getattr(fh, "readinto", None)
    if readinto is None:
        yield from _read_copies(fh)
        return
    buf = bytearray(_CHUNK)
    have = 0  # the start of an unfinished line, carried at buf[:have]
    while True:
        with memoryview(buf) as view:
            n = readinto(view[have:])
        if not n:
            break
        filled = have + n
        end = buf.rfind(b"\n", 0, filled)
        if end < 0:
            have = filled
            if filled == len(buf):  # a line longer than the buffer
                buf = buf + bytes(len(buf))
            continue
        yield _views(buf, end)
        have = filled - end - 1
        buf[:have] = buf[end + 1 : filled]
    if have:
        yield [bytes(buf[:have])]


def _read_copies(fh: Any) -> Iterator[list[Any]]:
    """:func:`_read_batches` for file objects without ``readinto`` (text files among them)."""
    rest: Any = None
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            break
        if rest:
            chunk = rest + chunk
        if not isinstance(chunk, bytes | bytearray):
            lines = chunk.split("\n")
            rest = lines.pop()
            yield lines
            continue
        end = chunk.rfind(b"\n")
        rest = chunk[end + 1 :]
        yield _views(chunk, end) if end >= 0 else []
    if rest:
        yield [rest]


def _views(chunk: bytes | bytearray, end: int) -> list[memoryview]:
    """``chunk[:end].split(b"\\n")`` as views, without copying."""
    view = memoryview(chunk)
    find = chunk.find
    out: list[memoryview] = []
    append = out.append
    pos = 0
    while pos <= end:
        nl = find(b"\n", pos, end + 1)
        append(view[pos:nl])
        pos = nl + 1
    return out


def _decode_batches(batches: Iterable[list[Any]], document: str | None, errors: str) -> Iterator[Observation]:
    num = 0
    for batch in batches:
        out = _decode_batch(batch, num, document, errors)
        num += len(batch)
        del batch  # the lines may be views into the reader's buffer, which the next read refills
        yield from out


def _decode_batch(lines: list[Any], num: int, document: str | None, errors: str) -> list[Observation]:
    decode = _DECODER.decode
    observation = _observation
    out: list[Observation] = []
    append = out.append
    for line in lines:
        num += 1
        try:
            flow = decode(line).flow
            append(observation(num, flow) if flow is not None else observation(num, _BARE.decode(line), _BARE_WHERE))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # blank lines are ignored; checked only here, off the common path
            if errors == "skip" or not (bytes(line) if isinstance(line, memoryview) else line).strip():
                continue
            raise FlowFormatError(f"not a hubble flow record: {exc}", document=document, line=num) from None
    return out


# ---------------------------------------------------------------- mapping
_K8S_META = ("k8s:io.kubernetes.pod.namespace=", "k8s:io.cilium.k8s.")


def _pod_labels(labels: Sequence[str]) -> dict[str, str]:
    """A pod's own labels from its identity labels (``k8s:app=x`` -> ``app: x``)."""
    out: dict[str, str] = {}
    for label in labels:
        if not label.startswith("k8s:") or label.startswith(_K8S_META):
            continue
        key, _, value = label[4:].partition("=")
        out[key] = value
    return out


class FlowMapper:
    """Maps observed peers onto one cluster: pod name, then IP, then labels, then world/FQDN."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.by_ip: dict[str, str] = {}
        self.by_ns: dict[str, list[tuple[str, dict[str, str]]]] = {}
        for ref, ep in cluster.endpoints.items():
            for ip in ep.ips:
                self.by_ip[str(ip)] = ref
            self.by_ns.setdefault(ep.namespace, []).append((ref, dict(ep.labels)))
        self.cache: dict[tuple[Peer, tuple[str, ...]], str | None] = {}

    def target(self, p: Peer, names: tuple[str, ...] = ()) -> str | None:
        """What ``Cluster.check`` takes for this peer, or ``None`` when nothing matches."""
        key = (p, names)
        if key in self.cache:
            return self.cache[key]
        found = self._target(p, names)
        self.cache[key] = found
        return found

    def _target(self, p: Peer, names: tuple[str, ...]) -> str | None:
        ns, pod, labels, identity, ip, _ = p
        endpoints = self.cluster.endpoints
        if ns and pod and f"{ns}/{pod}" in endpoints:
            return f"{ns}/{pod}"
        if ip in self.by_ip:
            return self.by_ip[ip]
        own = _pod_labels(labels)
        if ns and own:
            matches = sorted(ref for ref, eplabels in self.by_ns.get(ns, ()) if own.items() <= eplabels.items())
            if matches:
                return matches[0]
        if names:
            return names[0]
        reserved = {lbl for lbl in labels if lbl.startswith("reserved:")}
        if "reserved:host" in reserved or identity == 1:
            return "host"
        if ("reserved:world" in reserved or identity == 2 or not labels) and ip and not pod:
            return ip
        if "reserved:world" in reserved and ip:
            return ip
        return None


# ---------------------------------------------------------------- replay
@attrs.frozen
class Judgement:
    """A connection's verdict under one cluster, with the policies and the explanation."""

    verdict: str  # FORWARDED or DROPPED
    policies: tuple[str, ...]
    explanation: str

    @property
    def allowed(self) -> bool:
        return self.verdict == "FORWARDED"


def _judge(cluster: Cluster, src: str, dst: str, o: Observation) -> Judgement:
    if o.l7 is not None and o.l7[0] == "dns":
        res = cluster.resolve(src, o.l7[1], o.l7[2] or "A")
        v = res.verdict
        allowed = res.allowed
        text = res.explain()
    else:
        http = None
        if o.l7 is not None and o.l7[0] == "http":
            http = {"method": o.l7[1], "path": o.l7[2]}
        protocol = o.protocol or "TCP"
        port = o.port
        v = cluster.check(src, dst, port, protocol, http=http)
        allowed = v.allowed
        text = v.explain()
    policies = tuple(
        sorted(
            {f"{p.kind} {p.namespace + '/' if p.namespace else ''}{p.name}" for p in v.policies if p.kind != "reserved"}
        )
    )
    return Judgement("FORWARDED" if allowed else "DROPPED", policies, text)


@attrs.frozen
class ReplayedFlow:
    """One flow of a replay: what was recorded, and its verdict before and after."""

    observation: Observation
    before: Judgement | None
    after: Judgement | None

    def explain(self) -> str:
        lines = [self.observation.describe()]
        if self.before is not None:
            lines.append(f"  before: {self.before.verdict} ({', '.join(self.before.policies) or 'no policy'})")
        else:
            lines.append(f"  recorded: {self.observation.verdict}")
        if self.after is not None:
            lines.append(f"  after:  {self.after.verdict} ({', '.join(self.after.policies) or 'no policy'})")
            lines.extend("    " + line for line in self.after.explanation.splitlines())
        return "\n".join(lines)


def _recorded(verdict: str) -> str:
    return "FORWARDED" if verdict in ("FORWARDED", "REDIRECTED", "AUDIT", "TRACED", "TRANSLATED") else "DROPPED"


@attrs.frozen(eq=False)
class ReplayReport:
    """Which recorded flows a policy change drops, allows or leaves alone.

    ``newly_dropped``, ``newly_allowed``, ``unchanged`` and ``unmapped`` hold the flows;
    ``groups`` gathers the changed ones by (policy, source workload, destination workload,
    port), each with one explained example.
    """

    observations: tuple[Observation, ...]
    judgements: Mapping[tuple[Any, ...], tuple[Judgement | None, Judgement]]
    categories: Mapping[str, tuple[int, ...]]  # category -> positions in observations
    unmapped_reasons: Mapping[int, str]

    def _flows(self, category: str) -> list[ReplayedFlow]:
        out = []
        for i in self.categories.get(category, ()):
            o = self.observations[i]
            found = self.judgements.get(o.key)
            before, after = found if found is not None else (None, None)
            out.append(ReplayedFlow(o, before, after))
        return out

    @property
    def newly_dropped(self) -> list[ReplayedFlow]:
        return self._flows("newly_dropped")

    @property
    def newly_allowed(self) -> list[ReplayedFlow]:
        return self._flows("newly_allowed")

    @property
    def unchanged(self) -> list[ReplayedFlow]:
        return self._flows("unchanged")

    @property
    def unmapped(self) -> list[ReplayedFlow]:
        return self._flows("unmapped")

    @property
    def groups(self) -> list[dict[str, Any]]:
        """Changed flows by (policy, source workload, destination workload, port)."""
        groups: dict[tuple[str, str, str, str, str], list[int]] = {}
        for category in ("newly_dropped", "newly_allowed"):
            for i in self.categories.get(category, ()):
                o = self.observations[i]
                found = self.judgements.get(o.key)
                if found is None:
                    continue
                before, after = found
                policies = after.policies or (before.policies if before is not None else ())
                policy = ", ".join(policies) or "(no policy: default deny)"
                port = f"{o.protocol}/{o.port}" if o.port is not None else o.protocol
                key = (category, policy, _workload(o.src), _workload(o.dst, o.names), port)
                groups.setdefault(key, []).append(i)
        out = []
        for (category, policy, src, dst, port), members in sorted(groups.items()):
            example = self.observations[members[0]]
            before, after = self.judgements[example.key]
            out.append(
                {
                    "change": category,
                    "policy": policy,
                    "source": src,
                    "destination": dst,
                    "port": port,
                    "flows": len(members),
                    "example": ReplayedFlow(example, before, after).explain(),
                }
            )
        return out

    def counts(self) -> dict[str, int]:
        return {c: len(self.categories.get(c, ())) for c in ("newly_dropped", "newly_allowed", "unchanged", "unmapped")}

    def to_dict(self) -> dict[str, Any]:
        """Counts, the changed groups and the unmapped flows (JSON-able)."""
        return {
            "counts": self.counts(),
            "groups": self.groups,
            "unmapped": [
                {"flow": self.observations[i].describe(), "reason": self.unmapped_reasons.get(i, "")}
                for i in self.categories.get("unmapped", ())[:100]
            ],
        }

    def summary(self) -> str:
        """A text report: counts, then each changed group with its example."""
        c = self.counts()
        lines = [
            f"{len(self.observations)} flows: {c['newly_dropped']} newly dropped, {c['newly_allowed']} newly allowed, "
            f"{c['unchanged']} unchanged, {c['unmapped']} unmapped"
        ]
        for g in self.groups:
            lines.append("")
            lines.append(
                f"{g['change'].replace('_', ' ').upper()}: {g['flows']} flows {g['source']} -> {g['destination']} "
                f"{g['port']} [{g['policy']}]"
            )
            lines.extend("  " + line for line in g["example"].splitlines())
        unmapped = self.categories.get("unmapped", ())
        if unmapped:
            lines.append("")
            reasons: dict[str, int] = {}
            for i in unmapped:
                reasons[self.unmapped_reasons.get(i, "")] = reasons.get(self.unmapped_reasons.get(i, ""), 0) + 1
            lines.append("UNMAPPED: " + "; ".join(f"{n} x {r}" for r, n in sorted(reasons.items())))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        text = html.escape(self.summary()[:20000])
        color = "#c62828" if self.categories.get("newly_dropped") else "#2e7d32"
        return f'<pre style="border-left:4px solid {color};padding-left:6px">{text}</pre>'


def _workload(p: Peer, names: Sequence[str] = ()) -> str:
    if p[5]:
        return f"{p[0]}/{p[5]}" if p[0] else p[5]
    return _peer_text(p, names)


def _as_cluster(what: Any) -> Cluster:
    from .._cluster import Cluster

    if isinstance(what, Cluster):
        return what
    sources = what if isinstance(what, list | tuple) else [what]
    return Cluster.from_manifests(*sources)


def _teach_dns(cluster: Cluster, observations: Sequence[Observation]) -> None:
    """Give the cluster the DNS answers the flows saw, so FQDN peers resolve as recorded."""
    records: dict[str, set[str]] = {}
    for o in observations:
        if o.l7 is not None and o.l7[0] == "dns" and o.answers:
            records.setdefault(o.l7[1].rstrip("."), set()).update(o.answers)
        for name in o.names:
            if o.dst[4]:
                records.setdefault(name, set()).add(o.dst[4])
    known = set(cluster.dns_records)
    new = {name: sorted(ips) for name, ips in records.items() if name not in known and name + "." not in known}
    if new:
        cluster.add_dns_records(new)


def replay(flows: Any, before: Any, after: Any = None, *, errors: str = "raise") -> ReplayReport:
    """Each recorded flow's verdict under ``before`` and ``after`` (clusters or manifest paths).

    With ``after=None``, ``before`` is the cluster now and the flows' recorded verdicts are
    the "before": the report then shows drift between the recording and the policies.
    ``flows`` is anything :func:`read_observations` takes (a path, lines, Flow objects).
    """
    observations = tuple(read_observations(flows, errors=errors))
    clusters = [_as_cluster(before)] + ([_as_cluster(after)] if after is not None else [])
    for c in clusters:
        _teach_dns(c, observations)
    mappers = [FlowMapper(c) for c in clusters]
    judgements: dict[tuple[Any, ...], tuple[Judgement | None, Judgement]] = {}
    categories: dict[str, list[int]] = {"newly_dropped": [], "newly_allowed": [], "unchanged": [], "unmapped": []}
    reasons: dict[int, str] = {}
    failed: dict[tuple[Any, ...], str] = {}
    for pos, o in enumerate(observations):
        key = o.key
        found = judgements.get(key)
        if found is None:
            why = failed.get(key)
            if why is None:
                try:
                    found = _judge_all(clusters, mappers, o)
                    judgements[key] = found
                except _Unmapped as exc:
                    why = failed[key] = str(exc)
            if why is not None:
                categories["unmapped"].append(pos)
                reasons[pos] = why
                continue
        assert found is not None
        b, a = found
        was = b.verdict if b is not None else _recorded(o.verdict)
        if was == a.verdict:
            categories["unchanged"].append(pos)
        elif a.allowed:
            categories["newly_allowed"].append(pos)
        else:
            categories["newly_dropped"].append(pos)
    return ReplayReport(
        observations=observations,
        judgements=judgements,
        categories={k: tuple(v) for k, v in categories.items()},
        unmapped_reasons=reasons,
    )


class _Unmapped(Exception):
    pass


def _judge_all(
    clusters: list[Cluster], mappers: list[FlowMapper], o: Observation
) -> tuple[Judgement | None, Judgement]:
    from ..exceptions import CiliumpyError

    out: list[Judgement] = []
    for cluster, mapper in zip(clusters, mappers, strict=True):
        src = mapper.target(o.src)
        dst = mapper.target(o.dst, o.names)
        if src is None or dst is None:
            side = "source" if src is None else "destination"
            raise _Unmapped(f"{side} {_peer_text(o.src if src is None else o.dst)} matches no endpoint")
        if o.protocol not in ("TCP", "UDP", "SCTP", "ICMP", "ICMPv6") and o.l7 is None:
            raise _Unmapped(f"no L4 protocol to replay ({o.protocol or 'none'})")
        try:
            out.append(_judge(cluster, src, dst, o))
        except CiliumpyError as exc:
            raise _Unmapped(f"cannot check {src} -> {dst}: {exc}") from None
    if len(out) == 1:
        return None, out[0]
    return out[0], out[1]


# ---------------------------------------------------------------- a cluster from flows
def cluster_from_flows(flows: Any, cls: type[Cluster] | None = None, **kwargs: Any) -> Cluster:
    """A cluster with the namespaces, endpoints (labels, addresses, ports) and external
    names the flows show, for users who have flows but no manifests."""
    from .._cluster import Cluster

    cluster = (cls or Cluster)(**kwargs)
    observations = list(read_observations(flows))
    pods: dict[str, tuple[dict[str, str], set[str], str, set[tuple[int, str]]]] = {}
    namespaces: dict[str, dict[str, str]] = {}
    for o in observations:
        for p, is_dst in ((o.src, False), (o.dst, True)):
            ns, pod, labels, _identity, ip, _ = p
            if not (ns and pod):
                continue
            if any(lbl in ("reserved:world", "reserved:host") for lbl in labels):
                continue
            entry = pods.setdefault(f"{ns}/{pod}", ({}, set(), "default", set()))
            entry[0].update(_pod_labels(labels))
            if ip:
                entry[1].add(ip)
            for lbl in labels:
                if lbl.startswith("k8s:io.cilium.k8s.policy.serviceaccount="):
                    pods[f"{ns}/{pod}"] = (entry[0], entry[1], lbl.split("=", 1)[1], entry[3])
                if lbl.startswith("k8s:io.cilium.k8s.namespace.labels."):
                    key, _, value = lbl[len("k8s:io.cilium.k8s.namespace.labels.") :].partition("=")
                    namespaces.setdefault(ns, {})[key] = value
            namespaces.setdefault(ns, {})
            if is_dst and o.port and o.protocol in ("TCP", "UDP", "SCTP"):
                pods[f"{ns}/{pod}"][3].add((o.port, o.protocol))
    for ns, ns_labels in sorted(namespaces.items()):
        cluster.add_namespace(ns, labels=ns_labels)
    taken: set[str] = set()
    for ref, (pod_labels, ips, account, ports) in sorted(pods.items()):
        free = sorted(ip for ip in ips if ip not in taken)
        taken.update(free)
        cluster.add_endpoint(
            ref,
            labels=pod_labels,
            ips=free or None,
            ports=[(None, port, proto) for port, proto in sorted(ports)],
            service_account=account,
        )
    _teach_dns(cluster, observations)
    return cluster
