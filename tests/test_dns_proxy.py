"""The DNS proxy on real wire-format DNS messages (built and parsed with dnslib)."""

from __future__ import annotations

import struct

import pytest
from dnslib import CNAME, QTYPE, RCODE, RR, A, DNSHeader, DNSQuestion, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from ciliumpy._dns import (
    DNSProxy,
    DNSRecords,
    build_query,
    dns_l7_record,
    dns_l7_records,
    extract_msg_details,
)
from ciliumpy._fqdn import FQDNCache, ManualClock, dns_allow_regex
from ciliumpy._l7 import DNSRule

# The seed scenario: the backend may resolve api.stripe.com and *.amazonaws.com only.
ALLOW = dns_allow_regex([DNSRule(match_name="api.stripe.com"), DNSRule(match_pattern="*.amazonaws.com")])
UPSTREAM = {
    "api.stripe.com": (["203.0.113.10", "203.0.113.11", "2001:db8::10"], 60),
    "s3.amazonaws.com": (["198.51.100.5"], 5),
    "evil-site.com": (["192.0.2.66"], 300),
    "www.example.com": DNSRecords(ips=["192.0.2.7"], ttl=30, cnames=["edge.example.net"]),
}


def parse(wire: bytes) -> DNSRecord:
    return DNSRecord.parse(wire)


def answers(record: DNSRecord) -> list[tuple[str, str, str, int]]:
    return [(str(rr.rname), QTYPE[rr.rtype], str(rr.rdata), rr.ttl) for rr in record.rr]


def test_allowed_a_query_is_answered_from_upstream() -> None:
    result = DNSProxy().handle(build_query("api.stripe.com", id=4242), allow=ALLOW, upstream=UPSTREAM)
    assert result.allowed
    assert result.rcode == RCODE.NOERROR
    assert result.answers == ("203.0.113.10", "203.0.113.11")
    assert result.ttl == 60
    reply = parse(result.response)
    assert reply.header.id == 4242
    assert reply.header.qr == 1
    assert reply.header.rd == 1
    assert str(reply.q.qname) == "api.stripe.com."
    assert answers(reply) == [
        ("api.stripe.com.", "A", "203.0.113.10", 60),
        ("api.stripe.com.", "A", "203.0.113.11", 60),
    ]


def test_aaaa_query_gets_only_ipv6_answers() -> None:
    result = DNSProxy().handle(build_query("api.stripe.com", "AAAA"), allow=ALLOW, upstream=UPSTREAM)
    assert result.qtype == "AAAA"
    assert answers(parse(result.response)) == [("api.stripe.com.", "AAAA", "2001:db8::10", 60)]


def test_denied_name_is_refused() -> None:
    result = DNSProxy().handle(build_query("evil-site.com", id=7), allow=ALLOW, upstream=UPSTREAM)
    assert not result.allowed
    assert result.rcode == RCODE.REFUSED and result.rcode_name == "REFUSED"
    assert result.answers == ()
    assert "refused by policy" in result.reason
    reply = parse(result.response)
    assert reply.header.rcode == RCODE.REFUSED
    assert reply.header.id == 7
    assert reply.rr == []
    assert str(reply.q.qname) == "evil-site.com."


def test_reject_code_may_be_nxdomain() -> None:
    proxy = DNSProxy(reject_rcode="NXDOMAIN")
    result = proxy.handle(build_query("evil-site.com"), allow=ALLOW, upstream=UPSTREAM)
    assert not result.allowed
    assert parse(result.response).header.rcode == RCODE.NXDOMAIN
    with pytest.raises(ValueError):
        DNSProxy(reject_rcode="SERVFAIL")


def test_one_label_wildcard_does_not_allow_deeper_names() -> None:
    result = DNSProxy().handle(build_query("s3.us-east-1.amazonaws.com"), allow=ALLOW, upstream=UPSTREAM)
    assert result.rcode == RCODE.REFUSED


def test_allowed_but_unknown_name_is_nxdomain() -> None:
    result = DNSProxy().handle(build_query("nope.amazonaws.com"), allow=ALLOW, upstream=UPSTREAM)
    assert result.allowed
    assert result.rcode == RCODE.NXDOMAIN
    assert result.ttl == 0xFFFFFFFF
    assert parse(result.response).header.rcode == RCODE.NXDOMAIN


def test_names_are_matched_lower_case_and_fully_qualified() -> None:
    result = DNSProxy().handle(build_query("API.Stripe.COM."), allow=ALLOW, upstream=UPSTREAM)
    assert result.allowed and result.name == "api.stripe.com."
    # The question is echoed as asked.
    assert str(parse(result.response).q.qname) == "API.Stripe.COM."


def test_other_query_types_get_an_empty_answer() -> None:
    result = DNSProxy().handle(build_query("api.stripe.com", "TXT"), allow=ALLOW, upstream=UPSTREAM)
    assert result.rcode == RCODE.NOERROR
    assert parse(result.response).rr == []


def test_cname_chains_are_answered_and_learned() -> None:
    cache = FQDNCache(ManualClock(0.0))
    proxy = DNSProxy(cache=cache, endpoint="production/backend")
    result = proxy.handle(build_query("www.example.com"), allow="(?:)", upstream=UPSTREAM)
    assert answers(parse(result.response)) == [
        ("www.example.com.", "CNAME", "edge.example.net.", 30),
        ("edge.example.net.", "A", "192.0.2.7", 30),
    ]
    assert result.cnames == ("edge.example.net.",)
    assert result.answer_types == ("CNAME", "A")
    assert cache.names_for_ip("192.0.2.7") == {"www.example.com."}
    assert cache.cnames_for("www.example.com") == ("edge.example.net.",)


def test_allowed_answers_are_learned_with_ttl_and_expire() -> None:
    clock = ManualClock(100.0)
    cache = FQDNCache(clock)
    proxy = DNSProxy(cache=cache, endpoint="production/backend")
    proxy.handle(build_query("s3.amazonaws.com"), allow=ALLOW, upstream=UPSTREAM)
    (entry,) = cache.entries()
    assert (entry.name, str(entry.ip), entry.ttl, entry.expires) == (
        "s3.amazonaws.com.",
        "198.51.100.5",
        5,
        105.0,
    )
    assert entry.endpoint == "production/backend"
    clock.advance(5)
    assert [str(e.ip) for e in cache.expire()] == ["198.51.100.5"]


def test_refused_and_nxdomain_answers_are_not_learned() -> None:
    cache = FQDNCache(ManualClock(0.0))
    proxy = DNSProxy(cache=cache)
    proxy.handle(build_query("evil-site.com"), allow=ALLOW, upstream=UPSTREAM)
    proxy.handle(build_query("nope.amazonaws.com"), allow=ALLOW, upstream=UPSTREAM)
    assert len(cache) == 0


def test_min_ttl_applies_to_learned_answers() -> None:
    clock = ManualClock(0.0)
    cache = FQDNCache(clock, min_ttl=3600)
    DNSProxy(cache=cache).handle(build_query("s3.amazonaws.com"), allow=ALLOW, upstream=UPSTREAM)
    clock.advance(600)
    assert {str(ip) for ip in cache.lookup("s3.amazonaws.com")} == {"198.51.100.5"}


def test_allow_and_upstream_may_be_callables() -> None:
    asked: list[tuple[str, str]] = []

    def upstream(name: str, qtype: str) -> DNSRecords | None:
        asked.append((name, qtype))
        return DNSRecords(ips=["192.0.2.1"], ttl=10) if name == "db.internal." else None

    proxy = DNSProxy()
    ok = proxy.handle(build_query("db.internal"), allow=lambda n: n.endswith(".internal."), upstream=upstream)
    assert ok.answers == ("192.0.2.1",)
    assert asked == [("db.internal.", "A")]
    denied = proxy.handle(build_query("db.external"), allow=lambda n: n.endswith(".internal."), upstream=upstream)
    assert denied.rcode == RCODE.REFUSED
    assert asked == [("db.internal.", "A")]  # refused queries never reach the upstream


# --- malformed and unusual messages --------------------------------------------------------------


def test_message_shorter_than_a_header_is_dropped() -> None:
    result = DNSProxy().handle(b"\x12\x34\x01", allow=ALLOW, upstream=UPSTREAM)
    assert result.response == b""
    assert result.rcode == RCODE.FORMERR
    assert not result.allowed
    assert "shorter than a DNS header" in result.reason


def test_garbage_after_the_header_gets_formerr() -> None:
    header = struct.pack("!6H", 0xBEEF, 0x0100, 1, 0, 0, 0)
    result = DNSProxy().handle(header + b"\xff\xff\xff", allow=ALLOW, upstream=UPSTREAM)
    reply = parse(result.response)
    assert reply.header.id == 0xBEEF
    assert reply.header.rcode == RCODE.FORMERR
    assert result.rcode == RCODE.FORMERR
    assert result.reason.startswith("malformed query")


def test_two_questions_get_formerr() -> None:
    record = DNSRecord(DNSHeader(id=9), questions=[DNSQuestion("a.com"), DNSQuestion("b.com")])
    result = DNSProxy().handle(bytes(record.pack()), allow=ALLOW, upstream=UPSTREAM)
    assert parse(result.response).header.rcode == RCODE.FORMERR


def test_non_query_opcode_gets_notimp() -> None:
    record = DNSRecord(DNSHeader(id=9, opcode=2), q=DNSQuestion("api.stripe.com"))
    result = DNSProxy().handle(bytes(record.pack()), allow=ALLOW, upstream=UPSTREAM)
    assert result.rcode == RCODE.NOTIMP
    assert parse(result.response).header.rcode == RCODE.NOTIMP


def test_responses_sent_to_the_proxy_are_ignored() -> None:
    record = DNSRecord(DNSHeader(id=9, qr=1), q=DNSQuestion("api.stripe.com"))
    result = DNSProxy().handle(bytes(record.pack()), allow=ALLOW, upstream=UPSTREAM)
    assert result.response == b""
    assert not result.allowed


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_no_exception_escapes_on_random_bytes(data: bytes) -> None:
    result = DNSProxy().handle(data, allow=ALLOW, upstream=UPSTREAM)
    assert isinstance(result.response, bytes)
    if result.response:
        parse(result.response)  # whatever we send back is a valid DNS message


@given(st.binary(min_size=12, max_size=40))
def test_random_bodies_behind_a_valid_header_never_crash(body: bytes) -> None:
    header = struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0)
    result = DNSProxy().handle(header + body, allow=ALLOW, upstream=UPSTREAM)
    assert result.rcode in (RCODE.NOERROR, RCODE.NXDOMAIN, RCODE.REFUSED, RCODE.FORMERR)


# --- response parsing as the agent does it -------------------------------------------------------


def test_extract_details_uses_the_minimum_ttl_and_question_name() -> None:
    reply = DNSRecord(DNSHeader(id=1, qr=1), q=DNSQuestion("www.example.com"))
    reply.add_answer(RR("www.example.com", QTYPE.CNAME, rdata=CNAME("x.net"), ttl=20))
    reply.add_answer(RR("x.net", QTYPE.A, rdata=A("192.0.2.1"), ttl=50))
    details = extract_msg_details(reply)
    assert details.qname == "www.example.com."
    assert [str(ip) for ip in details.ips] == ["192.0.2.1"]
    assert details.ttl == 20
    assert details.cnames == ("x.net.",)
    assert details.answer_types == ("CNAME", "A")


def test_extract_details_rejects_unrelated_records() -> None:
    reply = DNSRecord(DNSHeader(id=1, qr=1), q=DNSQuestion("a.com"))
    reply.add_answer(RR("b.com", QTYPE.A, rdata=A("192.0.2.1"), ttl=50))
    with pytest.raises(ValueError, match="Unexpected name"):
        extract_msg_details(reply)


# --- Hubble records ------------------------------------------------------------------------------


def test_hubble_records_for_an_answered_query() -> None:
    result = DNSProxy().handle(build_query("api.stripe.com"), allow=ALLOW, upstream=UPSTREAM)
    request, response = dns_l7_records(result)
    assert request == {
        "l7": {
            "type": "REQUEST",
            "dns": {"query": "api.stripe.com.", "observation_source": "proxy", "qtypes": ["A"]},
        },
        "verdict": "FORWARDED",
        "Summary": "DNS Query api.stripe.com. A",
    }
    assert response == {
        "l7": {
            "type": "RESPONSE",
            "dns": {
                "query": "api.stripe.com.",
                "ips": ["203.0.113.10", "203.0.113.11"],
                "ttl": 60,
                "observation_source": "proxy",
                "qtypes": ["A"],
                "rrtypes": ["A", "A"],
            },
        },
        "verdict": "FORWARDED",
        "Summary": 'DNS Answer "203.0.113.10,203.0.113.11" TTL: 60 (Proxy api.stripe.com. A)',
    }
    assert dns_l7_record(result) == response


def test_hubble_record_for_a_refused_query_is_a_dropped_request() -> None:
    result = DNSProxy().handle(build_query("evil-site.com"), allow=ALLOW, upstream=UPSTREAM)
    assert dns_l7_records(result) == [dns_l7_record(result)]
    assert dns_l7_record(result)["verdict"] == "DROPPED"
    assert dns_l7_record(result)["Summary"] == "DNS Query evil-site.com. A"


def test_hubble_record_for_nxdomain() -> None:
    result = DNSProxy().handle(build_query("nope.amazonaws.com"), allow=ALLOW, upstream=UPSTREAM)
    record = dns_l7_record(result)
    assert record["l7"]["dns"]["rcode"] == 3
    assert record["Summary"] == ("DNS Answer RCode: Non-Existent Domain TTL: 4294967295 (Proxy nope.amazonaws.com. A)")


def test_no_hubble_record_for_malformed_messages() -> None:
    result = DNSProxy().handle(b"\x00", allow=ALLOW, upstream=UPSTREAM)
    assert dns_l7_records(result) == []
    assert dns_l7_record(result) == {}


def test_build_query_rejects_unknown_types() -> None:
    with pytest.raises(ValueError):
        build_query("a.com", "NOPE")
    assert parse(build_query("a.com", "MX", id=3)).q.qtype == QTYPE.MX
