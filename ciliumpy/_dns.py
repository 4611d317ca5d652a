"""Cilium's DNS proxy on real DNS messages: bytes in, bytes out.

:class:`DNSProxy` takes a wire-format query, applies the L7 DNS policy (an allow callable or
the proxy's allow-regex), answers allowed names from records the user registered (standing in
for the upstream server the pod asked), refuses the rest, and learns the answers into an
:class:`~ciliumpy._fqdn.FQDNCache` exactly as the agent learns from upstream responses. Because
it works on bytes the same object can later sit behind a UDP socket. Parsing and building use
``dnslib``; no exception escapes :meth:`DNSProxy.handle`.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeAlias

import attrs
from dnslib import AAAA, CNAME, QTYPE, RCODE, RR, A, DNSError, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from ciliumpy._fqdn import (
    MATCH_ALL_ANCHORED,
    FQDNCache,
    IPAddress,
    compile_re2,
    normalize_name,
)
from ciliumpy.exceptions import PolicyError

__all__ = [
    "RCODE_NAMES",
    "DNSProxy",
    "DNSProxyResult",
    "DNSRecords",
    "MessageDetails",
    "Upstream",
    "build_query",
    "check_question",
    "dns_l7_record",
    "dns_l7_records",
    "extract_msg_details",
    "presentation_name",
]

#: Hubble's wording of response codes (used in DNS Summary lines).
RCODE_NAMES: Final[Mapping[int, str]] = {
    0: "No Error",
    1: "Format Error",
    2: "Server Failure",
    3: "Non-Existent Domain",
    4: "Not Implemented",
    5: "Query Refused",
}
# A response without A/AAAA/CNAME records reports the largest TTL (the agent starts from
# MaxUint32 and lowers it per record).
_NO_TTL: Final = 0xFFFFFFFF
_HEADER_LEN: Final = 12
_OPCODE_QUERY: Final = 0
_OPCODE_NOTIFY: Final = 4


# Bytes that Go's DNS library (miekg/dns, ``isDomainNameLabelSpecial``) escapes with a
# backslash in a name's text form; bytes outside ``' '..'~'`` become ``\DDD``.
_SPECIAL = frozenset(b".\\ '@;()\"")
_MAX_NAME_WIRE = 255
_MAX_POINTERS = 126


def presentation_name(labels: Sequence[bytes]) -> str:
    r"""The text form of a name given as wire labels, as Go's DNS library writes it.

    A label holding a dot stays one label (``api\.stripe\.com.``), so it can never be
    read as the three-label name ``api.stripe.com.``.

    >>> presentation_name([b"api.stripe", b"com"])
    'api\\.stripe.com.'
    """
    out: list[str] = []
    for label in labels:
        for b in label:
            if b in _SPECIAL:
                out.append("\\" + chr(b))
            elif b < 0x20 or b > 0x7E:
                out.append(f"\\{b:03d}")
            else:
                out.append(chr(b))
        out.append(".")
    return "".join(out) or "."


class _NameError(ValueError):
    """A name in a message that Go's DNS library refuses to unpack."""


def _unpack_name(msg: bytes, off: int) -> tuple[tuple[bytes, ...], int]:
    """Wire labels of the name at ``off`` and the offset after it (``unpackDomainName``).

    Labels are at most 63 bytes (the 0x40/0x80 length bits are reserved), the name at most
    255 bytes on the wire, and at most 126 compression pointers are followed; any byte may
    appear in a label.
    """
    labels: list[bytes] = []
    budget = _MAX_NAME_WIRE
    end = -1
    pointers = 0
    while True:
        if off >= len(msg):
            raise _NameError("name runs past the end of the message")
        c = msg[off]
        off += 1
        kind = c & 0xC0
        if kind == 0x00:
            if c == 0:
                break
            if off + c > len(msg):
                raise _NameError("label runs past the end of the message")
            budget -= c + 1
            if budget <= 0:
                raise _NameError("name longer than 255 bytes")
            labels.append(msg[off : off + c])
            off += c
        elif kind == 0xC0:
            if off >= len(msg):
                raise _NameError("compression pointer runs past the end of the message")
            pointers += 1
            if pointers > _MAX_POINTERS:
                raise _NameError("too many compression pointers")
            if end < 0:
                end = off + 1
            off = ((c & 0x3F) << 8) | msg[off]
        else:
            raise _NameError(f"reserved label type 0x{kind:02x}")
    return tuple(labels), (end if end >= 0 else off)


def _to_ips(value: Sequence[str | IPAddress]) -> tuple[IPAddress, ...]:
    return tuple(
        ipaddress.ip_address(v) if isinstance(v, str) else v for v in ([value] if isinstance(value, str) else value)
    )


def _to_names(value: Sequence[str]) -> tuple[str, ...]:
    return tuple(normalize_name(v) for v in value)


@attrs.frozen
class DNSRecords:
    """What the upstream server knows about one name: addresses, TTL and a CNAME chain.

    With ``cnames`` the answer is ``name CNAME c1``, ``c1 CNAME c2``, … and the addresses
    belong to the last name of the chain.
    """

    ips: tuple[IPAddress, ...] = attrs.field(converter=_to_ips)
    ttl: int = 300
    cnames: tuple[str, ...] = attrs.field(default=(), converter=_to_names)

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.ttl <= 0x7FFFFFFF:
            raise ValueError(f"TTL out of range: {self.ttl}")


UpstreamValue: TypeAlias = DNSRecords | tuple[Sequence[str], int] | Sequence[str]
#: Records by name (``{"api.github.com": (["203.0.113.20"], 60)}``) or a function
#: ``(fqdn, qtype) -> records | None``; ``None``/missing means the name does not exist.
Upstream: TypeAlias = Mapping[str, UpstreamValue] | Callable[[str, str], "UpstreamValue | DNSRecords | None"]


def _as_records(value: object) -> DNSRecords:
    if isinstance(value, DNSRecords):
        return value
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[1], int)
        and not isinstance(value[0], str | int)
    ):
        return DNSRecords(ips=value[0], ttl=value[1])
    if isinstance(value, str | list | tuple):
        return DNSRecords(ips=value)
    raise TypeError(f"cannot use {value!r} as DNS records")


def _resolve(upstream: Upstream, qname: str, qtype: str) -> DNSRecords | None:
    if callable(upstream):
        found = upstream(qname, qtype)
        return None if found is None else _as_records(found)
    for key, value in upstream.items():
        if normalize_name(key) == qname:
            return _as_records(value)
    return None


def build_query(name: str, qtype: str = "A", *, id: int = 0x1234, rd: bool = True) -> bytes:
    """A wire-format DNS query for ``name`` (``qtype`` by name: ``A``, ``AAAA``, ``TXT``…).

    >>> len(build_query("api.github.com")) > 12
    True
    """
    code = check_question(name, qtype)
    header = DNSHeader(id=id, qr=0, rd=int(rd))
    record = DNSRecord(header=header, q=DNSQuestion(name, code))
    return bytes(record.pack())


def check_question(name: object, qtype: object) -> int:
    """Check a name and query type a pod could ask for; return the type's number.

    A name must fit the wire format: labels of 1..63 bytes (after IDNA encoding of non-ASCII
    text), at most 253 characters. Wrong types are ``TypeError``; bad values ``PolicyError``.
    """
    if not isinstance(name, str):
        raise TypeError(f"a DNS name is a str, not {type(name).__name__}")
    if not isinstance(qtype, str):
        raise TypeError(f"a DNS query type is a str such as 'A', not {type(qtype).__name__}")
    code = QTYPE.reverse.get(qtype.upper())
    if code is None:
        raise PolicyError("unknown DNS query type", field="qtype", value=qtype)
    try:
        labels = DNSLabel(name).label
    except UnicodeError as exc:
        raise PolicyError(f"not a DNS name: {exc}", field="name", value=name) from None
    if any(not 1 <= len(label) <= 63 for label in labels) or sum(len(lb) + 1 for lb in labels) > 254:
        raise PolicyError("not a DNS name: labels are 1..63 bytes, names at most 253", field="name", value=name)
    return int(code)


@attrs.frozen(kw_only=True)
class MessageDetails:
    """What the agent extracts from a DNS response (``ExtractMsgDetails``).

    Every A/AAAA address is attributed to the question name; ``ttl`` is the minimum over
    A, AAAA and CNAME records (``0xFFFFFFFF`` when there are none).
    """

    qname: str
    ips: tuple[IPAddress, ...]
    ttl: int
    cnames: tuple[str, ...]
    rcode: int
    answer_types: tuple[str, ...]
    qtypes: tuple[str, ...]


def extract_msg_details(message: DNSRecord) -> MessageDetails:
    """Parse a response the way the agent does before learning from it.

    Raises ``ValueError`` when an answer record names something other than the question
    name or the current CNAME target (the agent rejects such responses).
    """
    if not message.questions:
        raise ValueError("Invalid DNS message")
    qname = presentation_name(message.questions[0].qname.label).lower()
    rr_name = qname
    ttl = _NO_TTL
    ips: list[IPAddress] = []
    cnames: list[str] = []
    types: list[str] = []
    for rr in message.rr:
        if presentation_name(rr.rname.label).lower() != rr_name:
            raise ValueError(f"Unexpected name ({rr.rname}) in RRs for {rr_name} (query for {qname})")
        if rr.rtype in (QTYPE.A, QTYPE.AAAA):
            ips.append(ipaddress.ip_address(str(rr.rdata)))
            ttl = min(ttl, rr.ttl)
        elif rr.rtype == QTYPE.CNAME:
            ttl = min(ttl, rr.ttl)
            target = presentation_name(rr.rdata.label.label)
            rr_name = target.lower()
            cnames.append(target)
        types.append(QTYPE.get(rr.rtype))
    return MessageDetails(
        qname=qname,
        ips=tuple(ips),
        ttl=ttl,
        cnames=tuple(cnames),
        rcode=message.header.rcode,
        answer_types=tuple(types),
        qtypes=tuple(QTYPE.get(q.qtype) for q in message.questions),
    )


@attrs.frozen(kw_only=True)
class DNSProxyResult:
    """Outcome of one query through :class:`DNSProxy`.

    ``response`` is the wire-format answer (``b""`` when nothing is sent back, e.g. for a
    message too short to carry a header or a stray response). ``answers`` are the addresses
    given to the client, ``ttl`` the learned TTL (0 when nothing was answered).
    """

    response: bytes
    rcode: int
    allowed: bool
    name: str
    qtype: str
    answers: tuple[str, ...] = ()
    ttl: int = 0
    cnames: tuple[str, ...] = ()
    reason: str = ""
    id: int = 0
    answer_types: tuple[str, ...] = ()

    @property
    def rcode_name(self) -> str:
        """``NOERROR``, ``NXDOMAIN``, ``REFUSED``, …"""
        return str(RCODE.get(self.rcode))


AllowCheck: TypeAlias = Callable[[str], bool] | str


def _allow_callable(allow: AllowCheck) -> Callable[[str], bool]:
    if callable(allow):
        return allow
    regex = allow
    if regex == MATCH_ALL_ANCHORED:
        return lambda _name: True
    compiled = compile_re2(regex)
    return lambda name: compiled.search(name) is not None


@attrs.define
class DNSProxy:
    """The agent's DNS proxy for one endpoint's redirected DNS traffic.

    ``reject_rcode`` is what refused queries get: ``"REFUSED"`` (default) or ``"NXDOMAIN"``
    (``--tofqdns-dns-reject-response-code=nameError``). When ``cache`` is given, allowed
    answers are learned into it under ``endpoint`` with the response's minimum TTL.

    >>> proxy = DNSProxy()
    >>> result = proxy.handle(
    ...     build_query("api.github.com"),
    ...     allow=lambda name: name == "api.github.com.",
    ...     upstream={"api.github.com": (["203.0.113.20"], 60)},
    ... )
    >>> result.rcode_name, result.answers
    ('NOERROR', ('203.0.113.20',))
    """

    reject_rcode: str = attrs.field(default="REFUSED")
    cache: FQDNCache | None = None
    endpoint: str = ""

    @reject_rcode.validator
    def _check_reject(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if value.upper() not in ("REFUSED", "NXDOMAIN", "NAMEERROR"):
            raise ValueError(f"reject_rcode must be REFUSED or NXDOMAIN, got {value!r}")

    @property
    def _reject_code(self) -> int:
        return int(RCODE.REFUSED if self.reject_rcode.upper() == "REFUSED" else RCODE.NXDOMAIN)

    def handle(
        self,
        query: bytes,
        *,
        allow: AllowCheck,
        upstream: Upstream,
        endpoint: str | None = None,
        now: float | None = None,
    ) -> DNSProxyResult:
        """Answer one wire-format query.

        ``allow`` is a predicate on the lower-cased, fully qualified name or an allow-regex
        from :func:`~ciliumpy._fqdn.dns_allow_regex`. Refused names get ``reject_rcode``;
        allowed names are answered from ``upstream`` (A/AAAA by query type; unknown names get
        NXDOMAIN). Malformed messages get FORMERR, non-query opcodes NOTIMP.
        """
        if isinstance(query, bytearray | memoryview):
            query = bytes(query)
        if not isinstance(query, bytes):
            raise TypeError(f"a DNS query is bytes, not {type(query).__name__}")
        try:
            return self._handle(query, allow, upstream, endpoint, now)
        except Exception as exc:  # the proxy must answer, never crash on input
            msg_id = int.from_bytes(query[:2], "big") if len(query) >= 2 else 0
            return DNSProxyResult(
                response=_error_response(msg_id, 0, RCODE.SERVFAIL),
                rcode=RCODE.SERVFAIL,
                allowed=False,
                name="",
                qtype="",
                reason=f"internal error while handling the query: {str(exc)[:200]}",
                id=msg_id,
            )

    def _handle(
        self,
        query: bytes,
        allow: AllowCheck,
        upstream: Upstream,
        endpoint: str | None,
        now: float | None,
    ) -> DNSProxyResult:
        if len(query) < _HEADER_LEN:
            # Like the Go server: too short for a header, nothing can be answered.
            return DNSProxyResult(
                response=b"",
                rcode=RCODE.FORMERR,
                allowed=False,
                name="",
                qtype="",
                reason=f"message of {len(query)} bytes is shorter than a DNS header; dropped",
            )
        msg_id, flags, qdcount, ancount, nscount, arcount = struct.unpack("!6H", query[:12])
        opcode = (flags >> 11) & 0xF
        if flags & 0x8000:
            return DNSProxyResult(
                response=b"",
                rcode=0,
                allowed=False,
                name="",
                qtype="",
                reason="message is a response, not a query; ignored",
                id=msg_id,
            )
        if opcode not in (_OPCODE_QUERY, _OPCODE_NOTIFY):
            return self._error(msg_id, opcode, RCODE.NOTIMP, f"opcode {opcode} not implemented")
        if qdcount != 1 or ancount > 1 or nscount > 1 or arcount > 2:
            return self._error(msg_id, opcode, RCODE.FORMERR, f"malformed query: {qdcount} questions")
        try:
            labels, qend = _unpack_name(query, _HEADER_LEN)
            if qend + 4 > len(query):
                raise _NameError("question runs past the end of the message")
            # dnslib refuses label bytes that are not UTF-8, which Go accepts (and escapes):
            # it checks the rest of the message on a copy whose question name is spelled
            # with as many plain letters.
            request = DNSRecord.parse(_plain_question(query, labels))
        except (_NameError, DNSError, ValueError, IndexError, UnicodeError, struct.error) as exc:
            return self._error(msg_id, opcode, RCODE.FORMERR, f"malformed query: {str(exc)[:200]}")
        question = request.questions[0]
        question.qname = DNSLabel(labels)
        qname = normalize_name(presentation_name(labels))
        qtype = str(QTYPE.get(question.qtype))
        if not _allow_callable(allow)(qname):
            code = self._reject_code
            reply = _reply_to(request, code)
            return DNSProxyResult(
                response=bytes(reply.pack()),
                rcode=code,
                allowed=False,
                name=qname,
                qtype=qtype,
                reason=f"query for {qname} {qtype} refused by policy ({RCODE.get(code)})",
                id=msg_id,
            )
        records = _resolve(upstream, qname, qtype)
        if records is None:
            reply = _reply_to(request, RCODE.NXDOMAIN)
            return DNSProxyResult(
                response=bytes(reply.pack()),
                rcode=RCODE.NXDOMAIN,
                allowed=True,
                name=qname,
                qtype=qtype,
                ttl=_NO_TTL,
                reason=f"{qname} allowed by policy but unknown upstream (NXDOMAIN)",
                id=msg_id,
            )
        reply = _reply_to(request, RCODE.NOERROR)
        owner: DNSLabel | str = question.qname
        for target in records.cnames:
            reply.add_answer(RR(owner, QTYPE.CNAME, rdata=CNAME(target), ttl=records.ttl))
            owner = target
        for ip in records.ips:
            if ip.version == 4 and qtype in ("A", "ANY"):
                reply.add_answer(RR(owner, QTYPE.A, rdata=A(str(ip)), ttl=records.ttl))
            elif ip.version == 6 and qtype in ("AAAA", "ANY"):
                reply.add_answer(RR(owner, QTYPE.AAAA, rdata=AAAA(str(ip)), ttl=records.ttl))
        wire = bytes(reply.pack())
        # Learn from the response bytes, as the agent learns from the upstream's answer.
        details = extract_msg_details(DNSRecord.parse(wire))
        if self.cache is not None and details.rcode == RCODE.NOERROR and details.ips:
            self.cache.add(
                details.qname,
                details.ips,
                details.ttl,
                endpoint=self.endpoint if endpoint is None else endpoint,
                cnames=details.cnames,
                now=now,
            )
        answered = ", ".join(str(ip) for ip in details.ips) or "no addresses of that type"
        return DNSProxyResult(
            response=wire,
            rcode=RCODE.NOERROR,
            allowed=True,
            name=qname,
            qtype=qtype,
            answers=tuple(str(ip) for ip in details.ips),
            ttl=details.ttl,
            cnames=details.cnames,
            reason=f"{qname} {qtype} allowed by policy; answered {answered}",
            id=msg_id,
            answer_types=details.answer_types,
        )

    def _error(self, msg_id: int, opcode: int, rcode: int, reason: str) -> DNSProxyResult:
        return DNSProxyResult(
            response=_error_response(msg_id, opcode, rcode),
            rcode=rcode,
            allowed=False,
            name="",
            qtype="",
            reason=reason,
            id=msg_id,
        )


def _plain_question(query: bytes, labels: Sequence[bytes]) -> bytes:
    if all(label.isascii() for label in labels):
        return query
    off, out = _HEADER_LEN, bytearray(query)
    for label in labels:
        if out[off] & 0xC0:  # the rest of the name is elsewhere
            break
        out[off + 1 : off + 1 + len(label)] = b"a" * len(label)
        off += len(label) + 1
    return bytes(out)


def _reply_to(request: DNSRecord, rcode: int) -> DNSRecord:
    # SetReply semantics: same id, opcode, RD/CD and question; QR set; no AA; RA set by
    # the resolver that answered.
    header = DNSHeader(
        id=request.header.id,
        qr=1,
        opcode=request.header.opcode,
        rd=request.header.rd,
        ra=1,
        aa=0,
        rcode=rcode,
    )
    return DNSRecord(header=header, questions=list(request.questions))


def _error_response(msg_id: int, opcode: int, rcode: int) -> bytes:
    header = DNSHeader(id=msg_id, qr=1, opcode=opcode, rcode=rcode)
    return bytes(DNSRecord(header=header).pack())


def _record(result: DNSProxyResult, *, response: bool) -> dict[str, Any]:
    dns: dict[str, Any] = {"query": result.name}
    if response:
        if result.answers:
            dns["ips"] = list(result.answers)
        if result.ttl:
            dns["ttl"] = result.ttl
        if result.cnames:
            dns["cnames"] = list(result.cnames)
    dns["observation_source"] = "proxy"
    if response and result.rcode:
        dns["rcode"] = result.rcode
    if result.qtype:
        dns["qtypes"] = [result.qtype]
    if response and result.answer_types:
        dns["rrtypes"] = list(result.answer_types)
    l7 = {"type": "RESPONSE" if response else "REQUEST", "dns": dns}
    if response:
        if result.rcode:
            answer = f"RCode: {RCODE_NAMES.get(result.rcode, str(result.rcode))}"
        else:
            answer = '"' + ",".join(result.answers) + '"'
        summary = f"DNS Answer {answer} TTL: {result.ttl} (Proxy {result.name} {result.qtype})"
        verdict = "FORWARDED"
    else:
        summary = f"DNS Query {result.name} {result.qtype}"
        verdict = "FORWARDED" if result.allowed else "DROPPED"
    return {"l7": l7, "verdict": verdict, "Summary": summary}


def dns_l7_records(result: DNSProxyResult) -> list[dict[str, Any]]:
    """Hubble L7 fragments for one proxied query: the request, plus the response if answered.

    Each item is ``{"l7": {...}, "verdict": ..., "Summary": ...}`` with proto field names.
    A refused query yields only the request, with verdict ``DROPPED``; malformed messages
    yield nothing.
    """
    if not result.name:
        return []
    request = _record(result, response=False)
    if not result.allowed:
        return [request]
    return [request, _record(result, response=True)]


def dns_l7_record(result: DNSProxyResult) -> dict[str, Any]:
    """The single most telling Hubble L7 fragment: the response, or the dropped request.

    ``{}`` for messages that carried no question.
    """
    records = dns_l7_records(result)
    return records[-1] if records else {}
