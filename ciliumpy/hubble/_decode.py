"""Decoding recorded Hubble flows into replay's observations, as fast as CPython allows.

msgspec decodes each ``hubble observe -o json`` line against a schema of only the fields
replay reads (skipping the rest without building anything); endpoints stay raw JSON and are
decoded once per distinct endpoint and IP; observations are untracked msgspec records built
by one call; files are read into one reused buffer. What was tried and measured, including
what did not pay (a reading thread, worker processes), is in ``docs/replay.md``.
"""

# No ``from __future__ import annotations``: msgspec reads the annotations at runtime.
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Optional

import msgspec

from ..exceptions import FlowFormatError
from ._flow import short_pod_name


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
    drop_reason: int = 0  # deprecated by hubble, still written; the only one in old recordings
    IP: Optional[_IP] = None  # noqa: UP045
    l4: Optional[_L4] = None  # noqa: UP045
    source: msgspec.Raw = _NULL
    destination: msgspec.Raw = _NULL
    destination_names: tuple[str, ...] = ()
    l7: Optional[_L7] = None  # noqa: UP045
    drop_reason_desc: str = ""
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
    ``None``; ``names`` are the destination's DNS names, ``answers`` a DNS response's
    addresses and ``drop_reason`` a drop's reason (``drop_reason_desc``, or the number in
    recordings that carry only ``drop_reason``; empty when not dropped or not given).

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
    drop_reason: str = ""

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


# Known peers by IP, each with the endpoint JSON it was decoded from: comparing raw bytes
# with those of the few endpoints seen at an IP is much cheaper than hashing them.
_PEERS: dict[str, list[tuple[msgspec.Raw, Peer]]] = {}
_ENDPOINT = msgspec.json.Decoder(_Endpoint)


def _peer(raw: msgspec.Raw, ip: str, where: str) -> Peer:
    """A peer not yet among those known at ``ip`` (the caller searched them): decoded from
    the endpoint's raw JSON and remembered; ``where`` is the endpoint's JSON path."""
    known = _PEERS.get(ip)
    if known is None:
        if len(_PEERS) > 100_000:
            _PEERS.clear()
        known = _PEERS[ip] = []
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
    workload = ep.workloads[0].name if ep.workloads else (short_pod_name(pod) if pod else "")
    return (ep.namespace, pod, ep.labels, ep.identity, ip, workload)


# One object per verdict, port number and drop reason for all observations: a million records
# then hold a third less fresh memory, and first-touching fresh memory is slow here. Emptied
# between batches when a recording brings more than real ones have (decode_batch).
_SHARED: dict[Any, Any] = {}


def _observation(
    index: int,
    f: _Flow,
    where: tuple[str, str] = ("flow.source", "flow.destination"),
    share: Callable[[Any, Any], Any] = _SHARED.setdefault,
) -> Observation:
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
    verdict = share(f.verdict, f.verdict)
    dport = share(dport, dport)
    if f.drop_reason_desc or f.drop_reason:
        drop = f.drop_reason_desc or str(f.drop_reason)
        drop = share(drop, drop)
        return Observation(index, f.time, verdict, src, dst, protocol, dport, l7, names, answers, drop)
    return Observation(index, f.time, verdict, src, dst, protocol, dport, l7, names, answers)


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


def decode_batch(lines: list[Any], num: int, document: str | None, errors: str) -> list[Observation]:
    """Observations of ``lines``, the first being line ``num + 1``; blank lines are ignored.

    A malformed line raises :class:`FlowFormatError` naming ``document`` and the line, or is
    left out with ``errors="skip"``.
    """
    if len(_SHARED) > 100_000:  # a hostile recording's made-up verdicts or ports
        _SHARED.clear()
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


def decode_batches(batches: Iterable[list[Any]], document: str | None, errors: str) -> Iterator[Observation]:
    """Observations of successive batches of lines, numbered from 1."""
    num = 0
    for batch in batches:
        out = decode_batch(batch, num, document, errors)
        num += len(batch)
        del batch  # the lines may be views into the reader's buffer, which the next read refills
        yield from out
